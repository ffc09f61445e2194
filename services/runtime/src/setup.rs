//! Opening what a service consumes: durable consumers, KV buckets and
//! subscriptions, with one error type for every start-up step.

use std::time::Duration;

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
    /// A consumer could not be created.
    #[error("cannot create consumer {consumer} on {stream}: {source}")]
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
/// way. With these, a dead pull is noticed within about 4 s.
pub const PULL_HEARTBEAT: Duration = Duration::from_secs(2);
/// See [`PULL_HEARTBEAT`].
pub const PULL_EXPIRES: Duration = Duration::from_secs(10);

/// The messages of a durable pull consumer on `stream`, shared by every
/// replica that uses the same consumer name. When the pull breaks (a missed
/// heartbeat, no responders while the stream has no leader, the consumer
/// gone), it is not left to recover on its own: the consumer is fetched or
/// created again and a fresh pull started, with back-off while the broker
/// is away. Nothing is lost by that: unacknowledged messages are redelivered.
pub struct Durable {
    js: jetstream::Context,
    stream: &'static str,
    config: pull::Config,
    messages: Option<pull::Stream>,
}

impl Durable {
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
                Some(Ok(message)) => return message,
                Some(Err(error)) => {
                    metrics::counter!(crate::telemetry::names::PULL_RESTARTS, "stream" => self.stream)
                        .increment(1);
                    tracing::warn!(
                        stream = self.stream,
                        "pull broke, starting a new one: {error}"
                    );
                    self.messages = None;
                    backoff.wait().await;
                }
                // The pull ended (a closed connection, a deleted consumer):
                // start another; a service stops through its shutdown.
                None => self.messages = None,
            }
        }
    }

    async fn open(&self) -> Result<pull::Stream, SetupError> {
        let handle =
            self.js
                .get_stream(self.stream)
                .await
                .map_err(|source| SetupError::Stream {
                    stream: self.stream,
                    source,
                })?;
        let name = self.config.durable_name.clone().unwrap_or_default();
        let consumer = handle
            .get_or_create_consumer(&name, self.config.clone())
            .await
            .map_err(|source| SetupError::Consumer {
                stream: self.stream,
                consumer: name.clone(),
                source,
            })?;
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
}

/// A [`Durable`] consumer on `stream`, created if missing; the first pull is
/// started here, so a missing stream fails start-up with one clear line.
pub async fn durable_messages(
    js: &jetstream::Context,
    stream: &'static str,
    consumer: &str,
    ack_wait: Duration,
) -> Result<Durable, SetupError> {
    let mut durable = Durable {
        js: js.clone(),
        stream,
        config: pull::Config {
            durable_name: Some(consumer.to_string()),
            ack_wait,
            ..Default::default()
        },
        messages: None,
    };
    durable.messages = Some(durable.open().await?);
    Ok(durable)
}

/// Opens a KV bucket.
pub async fn bucket(js: &jetstream::Context, bucket: &'static str) -> Result<Store, SetupError> {
    js.get_key_value(bucket)
        .await
        .map_err(|source| SetupError::Bucket { bucket, source })
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
