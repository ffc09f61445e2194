//! Dead letters: a message a stage cannot use goes to `nova.dead.<stage>`
//! (kept in stream `NOVA_DEAD`) with the reason, is counted and logged, and
//! the stage's loop carries on.

use async_nats::jetstream;
use nova_shared::subjects;
use nova_shared::wire::{DEAD_PAYLOAD_MAX, DeadLetter, Stage, Version};

use crate::publish::publish_once;
use crate::telemetry::names;

/// A stage's dead-letter outlet.
#[derive(Clone)]
pub struct DeadLetters {
    js: jetstream::Context,
    stage: Stage,
}

impl DeadLetters {
    /// The outlet for `stage`.
    pub fn new(js: jetstream::Context, stage: Stage) -> Self {
        DeadLetters { js, stage }
    }

    /// Sends `payload`, received on `subject`, to the dead-letter stream with
    /// `reason`. Never fails: if even that publish fails, the failure is
    /// logged and counted separately so it cannot vanish.
    pub async fn send(&self, subject: &str, reason: impl Into<String>, payload: &[u8]) {
        let stage = self.stage.label();
        let reason = reason.into();
        metrics::counter!(names::DEAD_LETTERS, "stage" => stage).increment(1);
        tracing::warn!(stage, subject, %reason, "dead letter");
        let kept = payload.len().min(DEAD_PAYLOAD_MAX);
        let letter = DeadLetter {
            v: Version::CURRENT,
            stage: self.stage.clone(),
            // A subject is outside text too: the server bounds it, this
            // keeps the letter small whatever the server allows.
            subject: nova_shared::codec::excerpt(subject, 256),
            reason: nova_shared::codec::excerpt(&reason, 1024),
            ts: crate::now_ms(),
            payload: payload[..kept].to_vec(),
            payload_size: payload.len() as u64,
            payload_fnv64: format!("{:016x}", nova_shared::ids::fnv64(&[payload])),
            truncated: kept < payload.len(),
        };
        // Each rejection is its own record: a random id keeps two identical
        // bad payloads from being merged by de-duplication.
        let id = crate::unique_id("dead");
        if let Err(error) = publish_once(&self.js, subjects::dead(stage), &id, &letter).await {
            metrics::counter!(names::DEAD_LETTER_FAILURES, "stage" => stage).increment(1);
            tracing::error!(stage, %error, "could not publish dead letter");
        }
    }

    /// Dead-letters a JetStream message and terminates it, so it is not redelivered.
    pub async fn reject(&self, message: &jetstream::Message, reason: impl Into<String>) {
        self.send(&message.subject, reason, &message.payload).await;
        crate::ack(message, jetstream::AckKind::Term).await;
    }
}
