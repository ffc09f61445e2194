//! Connecting to NATS and provisioning what the pipeline needs. Every
//! service provisions on start (idempotently), so any replica may come up
//! first; `replicas` is 3 on a cluster, 1 on a single server.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use thiserror::Error;

/// Stream of triggers (`nova.triggers.*`), consumed by the arbiter.
pub const TRIGGERS_STREAM: &str = "NOVA_TRIGGERS";
/// Stream of commands (`nova.commands.*`), consumed by the actuator.
pub const COMMANDS_STREAM: &str = "NOVA_COMMANDS";
/// Stream of actuation results (`nova.results.*`).
pub const RESULTS_STREAM: &str = "NOVA_RESULTS";
/// Stream of audit records (`nova.audit.>`).
pub const AUDIT_STREAM: &str = "NOVA_AUDIT";
/// Stream of dead letters (`nova.dead.*`).
pub const DEAD_STREAM: &str = "NOVA_DEAD";
/// KV bucket of arbiter state per target.
pub const ARBITER_BUCKET: &str = "nova_arbiter";
/// KV bucket of observed capacity per target (written by the actuator).
pub const CAPACITY_BUCKET: &str = "nova_capacity";
/// KV bucket of simulated fleets (the `sim` backend's state).
pub const SIM_BUCKET: &str = "nova_sim";
/// Durable consumer of the arbiter replicas.
pub const ARBITER_CONSUMER: &str = "arbiter";
/// Durable consumer of the actuator replicas.
pub const ACTUATOR_CONSUMER: &str = "actuator";

/// How long JetStream remembers a `Nats-Msg-Id` to drop duplicates.
pub const DEDUPE_WINDOW: Duration = Duration::from_secs(600);

/// Provisioning failed.
#[derive(Debug, Error)]
pub enum ProvisionError {
    /// A stream could not be created or updated.
    #[error("cannot provision stream {name}: {source}")]
    Stream {
        /// The stream.
        name: &'static str,
        /// Why.
        #[source]
        source: jetstream::context::CreateStreamError,
    },
    /// A KV bucket could not be created.
    #[error("cannot provision KV bucket {name}: {source}")]
    Bucket {
        /// The bucket.
        name: &'static str,
        /// Why.
        #[source]
        source: jetstream::context::CreateStreamError,
    },
}

/// Connects with a client name, retrying while the server comes up. `url`
/// may list several servers of a cluster, comma-separated; the client picks
/// one and fails over to the others.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, ConnectError> {
    let servers = servers(url)?;
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .ping_interval(PING_INTERVAL)
        .connect(servers)
        .await
        .map_err(|source| ConnectError::Connect {
            url: url.to_string(),
            source,
        })?;
    // The client connects in the background; a service waits for its broker
    // (start order is not guaranteed) and says so plainly while it waits.
    let started = tokio::time::Instant::now();
    let mut next_word = Duration::from_secs(5);
    while client.connection_state() != async_nats::connection::State::Connected {
        let waited = started.elapsed();
        if waited >= CONNECT_PATIENCE {
            return Err(ConnectError::Unreachable {
                url: url.to_string(),
                secs: CONNECT_PATIENCE.as_secs(),
            });
        }
        if waited >= next_word {
            tracing::warn!(
                "cannot reach NATS at {url} after {} s, still trying: start nats-server \
                 there, or point --nats-url (NOVA_NATS_URL) at one",
                waited.as_secs()
            );
            next_word += Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(client)
}

/// The servers of a comma-separated URL list.
fn servers(url: &str) -> Result<Vec<async_nats::ServerAddr>, ConnectError> {
    url.split(',')
        .map(|one| one.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| ConnectError::Url {
            url: url.to_string(),
            source,
        })
}

/// How long a service's JetStream call (a KV read or write, a publish ack,
/// an API request) waits before its caller retries, instead of the
/// library's 5 s for acks and the connection's 10 s for requests.
/// JetStream answers in milliseconds, or not at all while a leader is being
/// elected; in the cluster chaos test, arbiters sat out such waits for up to
/// 10 s after quorum was back. Every retried call is idempotent (ids,
/// compare-and-set).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);

/// A service's JetStream context: [`OPERATION_TIMEOUT`] on every call.
pub fn jetstream(client: &async_nats::Client) -> jetstream::Context {
    let mut js = jetstream::new(client.clone());
    js.set_timeout(OPERATION_TIMEOUT);
    js
}

/// How often a service pings its server. A hung server (a paused process,
/// a host gone without a TCP reset) is noticed only when three pings go
/// unanswered; with the library's 60 s that took three minutes, with this
/// about 15 s, after which the client moves to another server.
pub const PING_INTERVAL: Duration = Duration::from_secs(5);

/// How long a service waits for NATS at start before it gives up.
pub const CONNECT_PATIENCE: Duration = Duration::from_secs(30);

/// Connects once, without waiting for a server to come up: for the command
/// line, where an unreachable NATS is one line and a non-zero exit.
pub async fn connect_now(url: &str, name: &str) -> Result<async_nats::Client, ConnectError> {
    let servers = servers(url)?;
    async_nats::ConnectOptions::new()
        .name(name)
        .connection_timeout(Duration::from_secs(5))
        .connect(servers)
        .await
        .map_err(|source| ConnectError::Connect {
            url: url.to_string(),
            source,
        })
}

/// Connecting failed.
#[derive(Debug, Error)]
pub enum ConnectError {
    /// No server answered in time.
    #[error(
        "cannot reach NATS at {url} within {secs} s: start nats-server there, or point \
         --nats-url (NOVA_NATS_URL) at one"
    )]
    Unreachable {
        /// The URL as given.
        url: String,
        /// How long it waited.
        secs: u64,
    },
    /// The URL (list) does not parse.
    #[error("invalid NATS URL {url:?}: {source}")]
    Url {
        /// The URL as given.
        url: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No server could be reached.
    #[error(
        "cannot connect to NATS at {url}: {source}; is nats-server running there? \
         (set --nats-url or NOVA_NATS_URL)"
    )]
    Connect {
        /// The URL as given.
        url: String,
        /// Why.
        #[source]
        source: async_nats::ConnectError,
    },
}

fn stream_config(name: &str, subjects: &str, max_age: Duration, replicas: usize) -> stream::Config {
    stream::Config {
        name: name.to_string(),
        subjects: vec![subjects.to_string()],
        max_age,
        duplicate_window: DEDUPE_WINDOW,
        num_replicas: replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

/// The stream behind KV bucket `name`, as async-nats's `create_key_value`
/// makes it (`KV_<name>` on `$KV.<name>.>`, one value per key kept
/// `history` deep, rollups allowed, deletes only through the KV API), with
/// one difference: `allow_direct` is off.
///
/// With direct gets allowed, every replica of an R3 bucket answers a read,
/// and a follower that has not yet applied the leader's last write answers
/// with the value before it. The chaos test saw exactly that: the
/// actuator's periodic observation read a simulated fleet's state from a
/// lagging follower and stored a desired capacity two steps old, which the
/// arbiter then took as its base. Without direct gets, `Store::get` asks
/// the stream leader (`STREAM.MSG.GET`), which has every acknowledged
/// write: a read after a write sees it. Compare-and-set writes were always
/// checked by the leader; this makes reads as strong.
fn bucket_config(name: &str, history: i64, replicas: usize) -> stream::Config {
    stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: history,
        num_replicas: replicas,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: false,
        discard: stream::DiscardPolicy::New,
        max_bytes: -1,
        max_messages: -1,
        max_message_size: -1,
        ..Default::default()
    }
}

/// Creates (or updates) every stream and bucket. Safe to call from many
/// services and replicas at once.
pub async fn provision(js: &jetstream::Context, replicas: usize) -> Result<(), ProvisionError> {
    use nova_shared::subjects as s;
    let day = Duration::from_secs(86_400);
    let streams: [(&'static str, &str, Duration); 5] = [
        (TRIGGERS_STREAM, s::TRIGGERS_ALL, day),
        (COMMANDS_STREAM, s::COMMANDS_ALL, 7 * day),
        (RESULTS_STREAM, s::RESULTS_ALL, 7 * day),
        (AUDIT_STREAM, s::AUDIT_ALL, 30 * day),
        (DEAD_STREAM, s::DEAD_ALL, 7 * day),
    ];
    for (name, subjects, max_age) in streams {
        let config = stream_config(name, subjects, max_age, replicas);
        // create_or_update keeps replicas and limits in step with this code.
        retrying(name, || js.create_or_update_stream(config.clone()))
            .await
            .map_err(|source| ProvisionError::Stream { name, source })?;
    }
    for (name, history) in [(ARBITER_BUCKET, 5), (CAPACITY_BUCKET, 5), (SIM_BUCKET, 1)] {
        let config = bucket_config(name, history, replicas);
        retrying(name, || js.create_or_update_stream(config.clone()))
            .await
            .map_err(|source| ProvisionError::Bucket { name, source })?;
    }
    Ok(())
}

/// Attempts of one provisioning request, with back-off between them.
const PROVISION_ATTEMPTS: u32 = 6;

/// Runs a provisioning request until it succeeds or the attempts run out.
/// On a fresh cluster, services starting at once race to create the same
/// streams and the meta leader answers some of them with a timeout; the
/// next attempt finds the stream made and succeeds (about 15 s at most).
async fn retrying<T, E: std::fmt::Display, F: Future<Output = Result<T, E>>>(
    what: &str,
    mut request: impl FnMut() -> F,
) -> Result<T, E> {
    let mut delay = Duration::from_millis(500);
    for attempt in 1.. {
        match request().await {
            Ok(done) => return Ok(done),
            Err(error) if attempt < PROVISION_ATTEMPTS => {
                tracing::warn!(%error, what, attempt, "provisioning failed, trying again");
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
            Err(error) => return Err(error),
        }
    }
    unreachable!("the loop returns on the last attempt")
}
