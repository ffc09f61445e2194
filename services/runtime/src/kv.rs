//! Typed values in JetStream KV, changed only by compare-and-set on the
//! entry's revision. Two replicas racing on one key: one wins, the other
//! gets a [`KvErrorKind::Conflict`], re-reads and decides again.

use async_nats::jetstream::kv::{self, Operation, Store};
use nova_shared::codec::{self, Encoding};
use serde::{Serialize, de::DeserializeOwned};

/// A KV operation that failed; its [`kind`](crate::error::Error::kind) says
/// what to do about it.
pub type KvError = crate::error::Error<KvErrorKind>;

/// What went wrong with a KV operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KvErrorKind {
    /// Someone else wrote the key since it was read: read again and decide
    /// again. JetStream says so with 10071 (wrong last sequence) or, on a
    /// replicated bucket while another write of the key is in flight, 10164.
    Conflict,
    /// The broker did not answer in time.
    TimedOut,
    /// The broker could not take or serve the request now: no responders,
    /// a stream without a leader, a lost connection, a refusal of its own.
    Unavailable,
    /// The key is not a valid KV key.
    InvalidKey,
    /// The value is larger than the server's `max_payload`.
    TooLarge,
    /// The value could not be encoded: a bug, it would fail the same again.
    Encode,
    /// The stored value is not what this version reads: one written by
    /// another version during a rolling upgrade, readable once that is over.
    Decode,
}

impl std::fmt::Display for KvErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KvErrorKind::Conflict => "compare-and-set conflict",
            KvErrorKind::TimedOut => "timed out",
            KvErrorKind::Unavailable => "broker unavailable",
            KvErrorKind::InvalidKey => "invalid key",
            KvErrorKind::TooLarge => "value too large",
            KvErrorKind::Encode => "cannot encode",
            KvErrorKind::Decode => "cannot decode",
        })
    }
}

impl crate::error::ErrorKind for KvErrorKind {
    fn is_retryable(self) -> bool {
        match self {
            KvErrorKind::Conflict
            | KvErrorKind::TimedOut
            | KvErrorKind::Unavailable
            | KvErrorKind::Decode => true,
            KvErrorKind::InvalidKey | KvErrorKind::TooLarge | KvErrorKind::Encode => false,
        }
    }
}

/// The kind of a failed write (`update`, or `create`, which is an update
/// at revision 0), from the client's kind and, where the client says only
/// "other", from the JetStream API error it carries. async-nats 0.51 maps
/// 10071 to `WrongLastRevision` (`AlreadyExists` for a create) but leaves
/// 10164, the replicated stream's "wrong last sequence", as `Other`.
fn write_kind(error: &(dyn std::error::Error + 'static)) -> KvErrorKind {
    use async_nats::jetstream::context::{PublishError, PublishErrorKind};
    use async_nats::jetstream::{Error as ApiError, ErrorCode};
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(api) = current.downcast_ref::<ApiError>() {
            return match api.error_code() {
                ErrorCode::STREAM_WRONG_LAST_SEQUENCE
                | ErrorCode::STREAM_WRONG_LAST_SEQUENCE_CONSTANT => KvErrorKind::Conflict,
                _ => KvErrorKind::Unavailable,
            };
        }
        let decided = if let Some(e) = current.downcast_ref::<kv::UpdateError>() {
            match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => Some(KvErrorKind::Conflict),
                kv::UpdateErrorKind::InvalidKey => Some(KvErrorKind::InvalidKey),
                kv::UpdateErrorKind::TimedOut => Some(KvErrorKind::TimedOut),
                kv::UpdateErrorKind::Other => None,
            }
        } else if let Some(e) = current.downcast_ref::<kv::CreateError>() {
            match e.kind() {
                kv::CreateErrorKind::AlreadyExists => Some(KvErrorKind::Conflict),
                kv::CreateErrorKind::InvalidKey => Some(KvErrorKind::InvalidKey),
                _ => None,
            }
        } else if let Some(e) = current.downcast_ref::<kv::EntryError>() {
            Some(read_kind(e))
        } else if let Some(e) = current.downcast_ref::<PublishError>() {
            match e.kind() {
                PublishErrorKind::WrongLastSequence => Some(KvErrorKind::Conflict),
                PublishErrorKind::TimedOut => Some(KvErrorKind::TimedOut),
                PublishErrorKind::MaxPayloadExceeded => Some(KvErrorKind::TooLarge),
                _ => None,
            }
        } else {
            None
        };
        if let Some(kind) = decided {
            return kind;
        }
        cause = current.source();
    }
    KvErrorKind::Unavailable
}

fn read_kind(error: &kv::EntryError) -> KvErrorKind {
    match error.kind() {
        kv::EntryErrorKind::InvalidKey => KvErrorKind::InvalidKey,
        kv::EntryErrorKind::TimedOut => KvErrorKind::TimedOut,
        kv::EntryErrorKind::Other => KvErrorKind::Unavailable,
    }
}

/// A value with the revision it was read at (0: the key did not exist).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its revision.
    pub revision: u64,
}

/// Reads `key`; a missing or deleted key reads as `None`.
pub async fn load<T: DeserializeOwned>(
    store: &Store,
    key: &str,
) -> Result<Option<Versioned<T>>, KvError> {
    let entry = store.entry(key).await.map_err(|source| {
        KvError::with_source(
            read_kind(&source),
            format!("cannot read {key}: {source}"),
            source,
        )
    })?;
    match entry {
        Some(entry) if entry.operation == Operation::Put => {
            let value = codec::decode(&entry.value, Encoding::MsgPack).map_err(|source| {
                KvError::with_source(
                    KvErrorKind::Decode,
                    format!("cannot decode {key}: {source}"),
                    source,
                )
            })?;
            Ok(Some(Versioned {
                value,
                revision: entry.revision,
            }))
        }
        _ => Ok(None),
    }
}

/// Writes `value` if the key is still at `revision` (0: only if absent).
/// Returns the new revision.
pub async fn save<T: Serialize>(
    store: &Store,
    key: &str,
    value: &T,
    revision: u64,
) -> Result<u64, KvError> {
    let bytes = codec::encode(value).map_err(|source| {
        KvError::with_source(
            KvErrorKind::Encode,
            format!("cannot encode {key}: {source}"),
            source,
        )
    })?;
    let written = if revision == 0 {
        store
            .create(key, bytes.into())
            .await
            .map_err(|e| (write_kind(&e), crate::error::BoxError::from(e)))
    } else {
        store
            .update(key, bytes.into(), revision)
            .await
            .map_err(|e| (write_kind(&e), crate::error::BoxError::from(e)))
    };
    written.map_err(|(kind, source)| {
        let message = match kind {
            KvErrorKind::Conflict => format!("{key} changed since revision {revision}"),
            _ => format!("cannot write {key}: {source}"),
        };
        KvError::with_source(kind, message, source)
    })
}

/// How often [`modify`] reads and writes again after a conflict before it
/// gives up with one.
pub const CONFLICT_RETRIES: usize = 8;

/// The pauses between compare-and-set attempts at one key: short (from
/// 5 ms, doubling, with jitter, each under 200 ms), since each conflict is
/// another writer's progress, and [`CONFLICT_RETRIES`] of them (under 1 s in
/// all),
/// so a key that keeps changing, or a write the broker keeps answering with
/// a conflict, ends in an error rather than a loop.
pub fn conflict_backoff() -> crate::retry::Backoff {
    crate::retry::Backoff::bounded(
        std::time::Duration::from_millis(5),
        std::time::Duration::from_millis(200),
        CONFLICT_RETRIES,
    )
}

/// Read-modify-write with compare-and-set, read and changed again on a
/// conflict, with [`conflict_backoff`] between attempts. After the last
/// one the error is a [`KvErrorKind::Conflict`], which callers may retry
/// later (a nak, a redelivery).
pub async fn modify<T, F>(store: &Store, key: &str, mut change: F) -> Result<T, KvError>
where
    T: Serialize + DeserializeOwned + Clone,
    F: FnMut(Option<T>) -> T,
{
    let mut backoff = conflict_backoff();
    let mut conflicts = 0;
    loop {
        let current = load::<T>(store, key).await?;
        let revision = current.as_ref().map_or(0, |v| v.revision);
        let next = change(current.map(|v| v.value));
        match save(store, key, &next, revision).await {
            Ok(_) => return Ok(next),
            Err(e) if e.kind() == KvErrorKind::Conflict => {
                metrics::counter!(crate::telemetry::names::KV_CONFLICTS, "bucket" => store.name.clone()).increment(1);
                conflicts += 1;
                if !backoff.wait().await {
                    let message = format!(
                        "{key} kept changing: {conflicts} compare-and-set conflicts in a row"
                    );
                    return Err(KvError::with_source(KvErrorKind::Conflict, message, e));
                }
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::context::{PublishError, PublishErrorKind};
    use kv::{
        CreateError, CreateErrorKind, EntryError, EntryErrorKind, UpdateError, UpdateErrorKind,
    };

    /// A JetStream API error as the server sends it.
    fn api(code: u64, description: &str) -> async_nats::jetstream::Error {
        serde_json::from_value(serde_json::json!({
            "code": 400, "err_code": code, "description": description
        }))
        .expect("an API error")
    }

    /// An update the server answered with `code`, wrapped as async-nats
    /// 0.51 wraps it (10071 has a kind of its own, others are `Other`).
    fn update_refused(code: u64, description: &str) -> UpdateError {
        let publish_kind = if code == 10071 {
            PublishErrorKind::WrongLastSequence
        } else {
            PublishErrorKind::Other
        };
        UpdateError::from(PublishError::with_source(
            publish_kind,
            api(code, description),
        ))
    }

    #[test]
    fn write_errors_are_classified_from_the_clients_kinds_and_the_api_code() {
        let cases: Vec<(&str, crate::error::BoxError, KvErrorKind)> = vec![
            (
                "10071, solo",
                update_refused(10071, "wrong last sequence: 7").into(),
                KvErrorKind::Conflict,
            ),
            (
                "10164, replicated",
                update_refused(10164, "wrong last sequence").into(),
                KvErrorKind::Conflict,
            ),
            (
                "10164 on a create the read-back did not see",
                CreateError::from(update_refused(10164, "wrong last sequence")).into(),
                KvErrorKind::Conflict,
            ),
            (
                "a create of a key that exists",
                CreateError::new(CreateErrorKind::AlreadyExists).into(),
                KvErrorKind::Conflict,
            ),
            (
                "a publish ack that never came",
                UpdateError::from(PublishError::new(PublishErrorKind::TimedOut)).into(),
                KvErrorKind::TimedOut,
            ),
            (
                "a create whose read-back timed out",
                CreateError::from(EntryError::new(EntryErrorKind::TimedOut)).into(),
                KvErrorKind::TimedOut,
            ),
            (
                "no responders: the stream has no leader",
                UpdateError::from(PublishError::new(PublishErrorKind::StreamNotFound)).into(),
                KvErrorKind::Unavailable,
            ),
            (
                "a lost connection",
                UpdateError::from(PublishError::new(PublishErrorKind::BrokenPipe)).into(),
                KvErrorKind::Unavailable,
            ),
            (
                "a refusal of the broker's own",
                update_refused(10023, "insufficient resources").into(),
                KvErrorKind::Unavailable,
            ),
            (
                "a value over max_payload",
                UpdateError::from(PublishError::new(PublishErrorKind::MaxPayloadExceeded)).into(),
                KvErrorKind::TooLarge,
            ),
            (
                "an invalid key",
                UpdateError::new(UpdateErrorKind::InvalidKey).into(),
                KvErrorKind::InvalidKey,
            ),
            (
                "an invalid key, create",
                CreateError::new(CreateErrorKind::InvalidKey).into(),
                KvErrorKind::InvalidKey,
            ),
            (
                "nothing known",
                CreateError::new(CreateErrorKind::Other).into(),
                KvErrorKind::Unavailable,
            ),
        ];
        for (case, error, expected) in cases {
            assert_eq!(write_kind(error.as_ref()), expected, "{case}: {error}");
        }
    }

    #[test]
    fn only_what_cannot_succeed_later_is_final() {
        use crate::error::ErrorKind;
        let cases = [
            (KvErrorKind::Conflict, true),
            (KvErrorKind::TimedOut, true),
            (KvErrorKind::Unavailable, true),
            (KvErrorKind::Decode, true),
            (KvErrorKind::InvalidKey, false),
            (KvErrorKind::TooLarge, false),
            (KvErrorKind::Encode, false),
        ];
        for (kind, retryable) in cases {
            assert_eq!(kind.is_retryable(), retryable, "{kind}");
        }
    }

    #[test]
    fn the_conflict_backoff_is_bounded_and_short() {
        let delays: Vec<_> = conflict_backoff().collect();
        assert_eq!(delays.len(), CONFLICT_RETRIES);
        let total: std::time::Duration = delays.iter().sum();
        assert!(total < std::time::Duration::from_secs(1), "{delays:?}");
    }
}
