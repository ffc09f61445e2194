//! Publishing to JetStream with a `Nats-Msg-Id`, so a message published twice
//! (by a redelivery, a restarted service or a second replica) is stored once.

use async_nats::jetstream::{self, context::PublishAckFuture};
use nova_shared::codec::{self, CodecError};
use nova_shared::subjects;
use nova_shared::wire::{AuditRecord, Stage};
use serde::Serialize;
use thiserror::Error;

use crate::telemetry::names;

/// A JetStream publish that failed.
#[derive(Debug, Error)]
pub enum PublishError {
    /// The message could not be encoded.
    #[error("cannot encode message for {subject}: {source}")]
    Encode {
        /// Subject.
        subject: String,
        /// Why.
        #[source]
        source: CodecError,
    },
    /// The server did not take it.
    #[error("cannot publish to {subject}: {source}")]
    Send {
        /// Subject.
        subject: String,
        /// Why.
        #[source]
        source: jetstream::context::PublishError,
    },
    /// The stream did not acknowledge it in time (it may have stored it).
    #[error("no ack from the stream for {subject} within {secs} s")]
    NoAck {
        /// Subject.
        subject: String,
        /// The wait.
        secs: u64,
    },
}

/// How long a publish waits for the stream's ack before the caller retries
/// (the library waits 5 s). A message sent while its stream elects a leader
/// may never be acked; in the cluster chaos test the evaluator sat out such
/// waits for 4 s after quorum was back. A retry repeats nothing: the
/// `Nats-Msg-Id` de-duplicates it.
pub const ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Publishes `value` as MessagePack with `Nats-Msg-Id: msg_id` and waits for the stream's ack.
/// Returns true when the stream already had a message with that id.
pub async fn publish_once<T: Serialize>(
    js: &jetstream::Context,
    subject: String,
    msg_id: &str,
    value: &T,
) -> Result<bool, PublishError> {
    let ack = send_once(js, subject.clone(), msg_id, value).await?;
    let Ok(acked) = tokio::time::timeout(ACK_WAIT, ack).await else {
        return Err(PublishError::NoAck {
            subject,
            secs: ACK_WAIT.as_secs(),
        });
    };
    match acked {
        Ok(ack) => Ok(ack.duplicate),
        // On a cluster, a second publisher of the same id while the first is
        // still being stored gets this conflict: the message is stored once,
        // which is what a de-duplicated publish wants.
        Err(error) if is_duplicate_in_process(&error) => Ok(true),
        Err(source) => Err(PublishError::Send { subject, source }),
    }
}

fn is_duplicate_in_process(error: &jetstream::context::PublishError) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<jetstream::Error>())
        .is_some_and(|e| e.error_code() == jetstream::ErrorCode::STREAM_DUPLICATE_MESSAGE_CONFLICT)
}

/// Like [`publish_once`], but returns the pending ack so several publishes
/// can be in flight at once.
pub async fn send_once<T: Serialize>(
    js: &jetstream::Context,
    subject: String,
    msg_id: &str,
    value: &T,
) -> Result<PublishAckFuture, PublishError> {
    let payload = codec::encode(value).map_err(|source| PublishError::Encode {
        subject: subject.clone(),
        source,
    })?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", msg_id);
    headers.insert("Content-Type", codec::CONTENT_TYPE_MSGPACK);
    js.publish_with_headers(subject.clone(), headers, payload.into())
        .await
        .map_err(|source| PublishError::Send { subject, source })
}

/// Writes a stage's audit records to `nova.audit.<stage>.<target>`.
#[derive(Clone)]
pub struct Auditor {
    js: jetstream::Context,
    stage: Stage,
}

impl Auditor {
    /// An auditor for `stage`.
    pub fn new(js: jetstream::Context, stage: Stage) -> Self {
        Auditor { js, stage }
    }

    /// Publishes one record (its id is the `Nats-Msg-Id`).
    pub async fn record(&self, record: &AuditRecord) -> Result<(), PublishError> {
        let subject = subjects::audit(self.stage.as_str(), &record.target);
        publish_once(&self.js, subject, &record.id, record).await?;
        metrics::counter!(names::AUDIT_PUBLISHED, "stage" => self.stage.label()).increment(1);
        Ok(())
    }
}
