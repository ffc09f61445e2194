//! Connecting to NATS, and the names of what the pipeline keeps in
//! JetStream (their configuration is in [`crate::provision`]).

use std::time::Duration;

use async_nats::jetstream;
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

/// Connects with a client name, retrying while the server comes up. `url`
/// may list several servers of a cluster, comma-separated; the client picks
/// one and fails over to the others.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, ConnectError> {
    connect_with(url, name, None).await
}

/// A NATS user and password, e.g. from a Kubernetes Secret.
#[derive(Debug, Clone)]
pub struct UserPassword {
    /// The user.
    pub user: String,
    /// The password.
    pub password: String,
}

/// [`connect`] as `user`, when given.
pub async fn connect_with(
    url: &str,
    name: &str,
    user: Option<UserPassword>,
) -> Result<async_nats::Client, ConnectError> {
    let servers = servers(url)?;
    let options = match user {
        Some(UserPassword { user, password }) => {
            async_nats::ConnectOptions::with_user_and_password(user, password)
        }
        None => async_nats::ConnectOptions::new(),
    };
    let client = options
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
