//! Opening what a service consumes: durable consumers, KV buckets and
//! subscriptions, with one error type for every start-up step.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, kv::Store};
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

/// Messages of a durable pull consumer on `stream`, created if missing and
/// shared by every replica that uses the same `consumer` name.
pub async fn durable_messages(
    js: &jetstream::Context,
    stream: &'static str,
    consumer: &str,
    ack_wait: Duration,
) -> Result<pull::Stream, SetupError> {
    let handle = js
        .get_stream(stream)
        .await
        .map_err(|source| SetupError::Stream { stream, source })?;
    let consumer = handle
        .get_or_create_consumer(
            consumer,
            pull::Config {
                durable_name: Some(consumer.to_string()),
                ack_wait,
                ..Default::default()
            },
        )
        .await
        .map_err(|source| SetupError::Consumer {
            stream,
            consumer: consumer.to_string(),
            source,
        })?;
    consumer
        .messages()
        .await
        .map_err(|source| SetupError::Pull { stream, source })
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
    crate::ping::respond(client, stage)
        .await
        .map_err(|source| SetupError::Subscribe {
            subject: crate::ping::subject(stage),
            source,
        })
}
