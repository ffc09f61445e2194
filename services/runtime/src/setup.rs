//! Opening what a service consumes: durable consumers, KV buckets and
//! subscriptions, with one error type for every start-up step.

use std::time::Duration;

use async_nats::jetstream::stream::{ConsumerError, ConsumerErrorKind};
use async_nats::jetstream::{self, consumer::pull, kv::Store};
use futures_util::StreamExt;
use thiserror::Error;

/// A service could not set up its inputs.
#[derive(Debug, Error)]
pub enum SetupError {
    /// A stream is missing.
    #[error("cannot open stream {stream}: {source}")]
    Stream {
        /// Stream.
        stream: &'static str,
        /// Why.
        #[source]
        source: jetstream::context::GetStreamError,
    },
    /// A consumer could not be opened (it is missing, or the server did
    /// not answer).
    #[error("cannot open consumer {consumer} on {stream}: {source}")]
    Consumer {
        /// Stream.
        stream: &'static str,
        /// Consumer.
        consumer: String,
        /// Why.
        #[source]
        source: jetstream::stream::ConsumerError,
    },
    /// Messages could not be pulled.
    #[error("cannot pull from {stream}: {source}")]
    Pull {
        /// Stream.
        stream: &'static str,
        /// Why.
        #[source]
        source: jetstream::consumer::StreamError,
    },
    /// A KV bucket is missing.
    #[error("cannot open KV bucket {bucket}: {source}")]
    Bucket {
        /// Bucket.
        bucket: &'static str,
        /// Why.
        #[source]
        source: jetstream::context::KeyValueError,
    },
    /// A KV bucket could not be watched.
    #[error("cannot watch KV bucket {bucket}: {source}")]
    Watch {
        /// Bucket.
        bucket: &'static str,
        /// Why.
        #[source]
        source: jetstream::kv::WatchError,
    },
    /// The consumer was there at start and is gone now (its stream was
    /// deleted, say); the service waits for provisioning to make it again.
    #[error("consumer {consumer} on stream {stream} is gone: run `novactl provision`")]
    ConsumerGone {
        /// Stream.
        stream: &'static str,
        /// Consumer.
        consumer: String,
    },
    /// What the service needs is not provisioned (`novactl provision`).
    #[error(transparent)]
    Unprovisioned(#[from] crate::provision::CheckError),
    /// A subscription could not be made.
    #[error("cannot subscribe to {subject}: {source}")]
    Subscribe {
        /// Subject.
        subject: String,
        /// Why.
        #[source]
        source: async_nats::SubscribeError,
    },
}

/// How often the server must show a pull request is alive (idle heartbeat),
/// and how long one pull request lasts. The client library's default
/// heartbeat of 15 s noticed a pull request lost in a stream leader change
/// only after 30 s; an actuator stalled for 58 s with commands pending that
/// way. The client calls a pull dead after two missed heartbeats, so with
/// these it is noticed within about 4 s. (1 s was tried: in the 600 s chaos
/// test, results resumed after quorum no sooner, a median 2.4–2.8 s either
/// way, so the quieter setting stays.)
pub const PULL_HEARTBEAT: Duration = Duration::from_secs(2);
/// See [`PULL_HEARTBEAT`].
pub const PULL_EXPIRES: Duration = Duration::from_secs(10);

/// The messages of a durable pull consumer on `stream`, shared by every
/// replica that uses the same consumer name. When the pull breaks, it is not
/// left to recover on its own: a fresh pull is started at once, with
/// back-off while the broker is away. Nothing is lost by that:
/// unacknowledged messages are redelivered.
///
/// A fresh pull needs no JetStream API call (it is a subscription and a
/// pull request to the consumer's subject), so it works as soon as the
/// consumer has a leader again. API calls (stream info, consumer create)
/// time out while leaders are being elected; in the cluster chaos test, a
/// service that fetched its consumer again after every break stalled for
/// 30 s after quorum was back. So after a second break in a row the
/// consumer is only looked up, with [`LOOKUP_TIMEOUT`]: fetched again when
/// the server says it is missing, kept when it is there or the server does
/// not answer. A consumer that is gone is never created here: that is
/// `novactl provision`'s job, and until it is run again the service says so
/// and keeps trying.
pub struct Durable {
    js: jetstream::Context,
    stream: &'static str,
    name: String,
    ack_wait: Duration,
    consumer: Option<jetstream::consumer::PullConsumer>,
    messages: Option<pull::Stream>,
    breaks_in_a_row: u32,
}

/// How long the lookup of a consumer after a break may take, instead of the
/// connection's 10 s: JetStream answers in milliseconds, or not at all while
/// a leader is being elected.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);

/// Whether a lookup error says the consumer (or its stream) is not there.
fn is_missing(error: &ConsumerError) -> bool {
    match error.kind() {
        ConsumerErrorKind::JetStream(error) => matches!(
            error.error_code(),
            jetstream::ErrorCode::CONSUMER_NOT_FOUND | jetstream::ErrorCode::STREAM_NOT_FOUND
        ),
        _ => false,
    }
}

impl Durable {
    /// The consumer's ack wait, as provisioned: how long a message in hand
    /// may stay unacknowledged before it goes to another replica.
    pub fn ack_wait(&self) -> Duration {
        self.ack_wait
    }

    /// The next message. Waits through broker outages; a service stops
    /// waiting through its shutdown signal.
    pub async fn next(&mut self) -> jetstream::Message {
        let mut backoff =
            crate::retry::Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        loop {
            let messages = match &mut self.messages {
                Some(messages) => messages,
                None => match self.open().await {
                    Ok(messages) => self.messages.insert(messages),
                    Err(error) => {
                        tracing::warn!(stream = self.stream, "cannot pull, will retry: {error}");
                        backoff.wait().await;
                        continue;
                    }
                },
            };
            match messages.next().await {
                Some(Ok(message)) => {
                    self.breaks_in_a_row = 0;
                    return message;
                }
                Some(Err(error)) => {
                    metrics::counter!(crate::telemetry::names::PULL_RESTARTS, "stream" => self.stream)
                        .increment(1);
                    self.breaks_in_a_row += 1;
                    if error.kind() == pull::MessagesErrorKind::ConsumerDeleted {
                        self.consumer = None;
                    } else if self.breaks_in_a_row >= 2 && self.consumer.is_some() {
                        // "No responders" and missed heartbeats come both
                        // while the consumer has no leader and when it is
                        // gone; a quick lookup tells them apart.
                        match self.lookup().await {
                            Ok(consumer) => self.consumer = Some(consumer),
                            Err(error) if is_missing(&error) => self.consumer = None,
                            Err(_) => {}
                        }
                    }
                    tracing::warn!(
                        stream = self.stream,
                        refetch = self.consumer.is_none(),
                        "pull broke, starting a new one: {error}"
                    );
                    self.messages = None;
                    backoff.wait().await;
                }
                // The pull ended (a closed connection, a deleted consumer):
                // start another; a service stops through its shutdown.
                None => {
                    self.consumer = None;
                    self.messages = None;
                }
            }
        }
    }

    async fn open(&mut self) -> Result<pull::Stream, SetupError> {
        let consumer = match &self.consumer {
            Some(consumer) => consumer,
            None => {
                let consumer = self.fetch().await?;
                self.consumer.insert(consumer)
            }
        };
        consumer
            .stream()
            .heartbeat(PULL_HEARTBEAT)
            .expires(PULL_EXPIRES)
            .messages()
            .await
            .map_err(|source| SetupError::Pull {
                stream: self.stream,
                source,
            })
    }

    /// The consumer as the server has it now, asked with [`LOOKUP_TIMEOUT`]:
    /// an answer shows whether it is there, a timeout shows nothing.
    async fn lookup(&self) -> Result<jetstream::consumer::PullConsumer, ConsumerError> {
        let mut js = self.js.clone();
        js.set_timeout(LOOKUP_TIMEOUT);
        js.get_consumer_from_stream(&self.name, self.stream).await
    }

    /// The consumer as provisioned (a JetStream API call).
    async fn fetch(&self) -> Result<jetstream::consumer::PullConsumer, SetupError> {
        self.js
            .get_consumer_from_stream(&self.name, self.stream)
            .await
            .map_err(|source| {
                if is_missing(&source) {
                    SetupError::ConsumerGone {
                        stream: self.stream,
                        consumer: self.name.clone(),
                    }
                } else {
                    SetupError::Consumer {
                        stream: self.stream,
                        consumer: self.name.clone(),
                        source,
                    }
                }
            })
    }
}

/// The provisioned [`Durable`] consumer `consumer` on `stream`. It is
/// checked first ([`crate::provision::wait_for_consumer`]): there, with an
/// explicit ack for each message, no delivery limit, and at least
/// `min_ack_wait` when the service needs one; otherwise start-up fails
/// with one line naming what to run. The first pull is started here.
pub async fn durable_messages(
    js: &jetstream::Context,
    stream: &'static str,
    consumer: &str,
    min_ack_wait: Option<&crate::provision::MinAckWait>,
) -> Result<Durable, SetupError> {
    let info = crate::provision::wait_for_consumer(js, stream, consumer, min_ack_wait).await?;
    let mut durable = Durable {
        js: js.clone(),
        stream,
        name: consumer.to_string(),
        ack_wait: info.config.ack_wait,
        consumer: None,
        messages: None,
        breaks_in_a_row: 0,
    };
    let mut backoff = start_backoff();
    loop {
        match durable.open().await {
            Ok(messages) => {
                durable.messages = Some(messages);
                return Ok(durable);
            }
            Err(error) => {
                tracing::warn!(stream, "cannot pull yet, trying again: {error}");
                if !backoff.wait().await {
                    return Err(error);
                }
            }
        }
    }
}

/// Retries of a start-up lookup: about 15 s, for a cluster still electing
/// its leaders (a service's calls wait at most 2 s each).
fn start_backoff() -> crate::retry::Backoff {
    crate::retry::Backoff::bounded(Duration::from_millis(250), Duration::from_secs(4), 6)
}

/// Opens a KV bucket, retrying for a while as [`durable_messages`] does.
pub async fn bucket(js: &jetstream::Context, bucket: &'static str) -> Result<Store, SetupError> {
    let mut backoff = start_backoff();
    loop {
        match js.get_key_value(bucket).await {
            Ok(store) => return Ok(store),
            Err(source) => {
                tracing::warn!(bucket, "cannot open bucket yet, trying again: {source}");
                if !backoff.wait().await {
                    return Err(SetupError::Bucket { bucket, source });
                }
            }
        }
    }
}

/// Subscribes, optionally in a queue group.
pub async fn subscribe(
    client: &async_nats::Client,
    subject: &str,
    queue_group: Option<&str>,
) -> Result<async_nats::Subscriber, SetupError> {
    let result = match queue_group {
        Some(group) => {
            client
                .queue_subscribe(subject.to_string(), group.to_string())
                .await
        }
        None => client.subscribe(subject.to_string()).await,
    };
    result.map_err(|source| SetupError::Subscribe {
        subject: subject.to_string(),
        source,
    })
}

/// Starts answering `nova.ctl.ping.<stage>` (see [`crate::ping`]).
pub async fn ping(
    client: &async_nats::Client,
    stage: nova_shared::wire::Stage,
) -> Result<crate::ping::PingResponder, SetupError> {
    crate::ping::respond(client, stage.clone())
        .await
        .map_err(|source| SetupError::Subscribe {
            subject: crate::ping::subject(stage),
            source,
        })
}
