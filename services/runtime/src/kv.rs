//! Typed values in JetStream KV, changed only by compare-and-set on the
//! entry's revision. Two replicas racing on one key: one wins, the other
//! gets [`KvError::Conflict`], re-reads and decides again.

use async_nats::jetstream::kv::{self, Operation, Store};
use nova_shared::codec::{self, CodecError, Encoding};
use serde::{Serialize, de::DeserializeOwned};
use thiserror::Error;

/// A KV operation that failed.
#[derive(Debug, Error)]
pub enum KvError {
    /// Reading failed.
    #[error("cannot read {key}: {source}")]
    Read {
        /// Key.
        key: String,
        /// Why.
        #[source]
        source: kv::EntryError,
    },
    /// The stored value is not what this version expects.
    #[error("cannot decode {key}: {source}")]
    Decode {
        /// Key.
        key: String,
        /// Why.
        #[source]
        source: CodecError,
    },
    /// Encoding failed.
    #[error("cannot encode {key}: {source}")]
    Encode {
        /// Key.
        key: String,
        /// Why.
        #[source]
        source: CodecError,
    },
    /// Someone else wrote the key since we read it.
    #[error("{key} changed since revision {revision}")]
    Conflict {
        /// Key.
        key: String,
        /// The revision we read.
        revision: u64,
    },
    /// Writing failed for another reason.
    #[error("cannot write {key}: {reason}")]
    Write {
        /// Key.
        key: String,
        /// Why.
        reason: String,
    },
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
    let entry = store.entry(key).await.map_err(|source| KvError::Read {
        key: key.to_string(),
        source,
    })?;
    match entry {
        Some(entry) if entry.operation == Operation::Put => {
            let value = codec::decode(&entry.value, Encoding::MsgPack).map_err(|source| {
                KvError::Decode {
                    key: key.to_string(),
                    source,
                }
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
    let bytes = codec::encode(value).map_err(|source| KvError::Encode {
        key: key.to_string(),
        source,
    })?;
    let conflict = || KvError::Conflict {
        key: key.to_string(),
        revision,
    };
    if revision == 0 {
        store
            .create(key, bytes.into())
            .await
            .map_err(|e| match e.kind() {
                kv::CreateErrorKind::AlreadyExists => conflict(),
                _ => KvError::Write {
                    key: key.to_string(),
                    reason: e.to_string(),
                },
            })
    } else {
        store
            .update(key, bytes.into(), revision)
            .await
            .map_err(|e| match e.kind() {
                kv::UpdateErrorKind::WrongLastRevision => conflict(),
                _ => KvError::Write {
                    key: key.to_string(),
                    reason: e.to_string(),
                },
            })
    }
}

/// Read-modify-write with compare-and-set, retried on conflict.
pub async fn modify<T, F>(store: &Store, key: &str, mut change: F) -> Result<T, KvError>
where
    T: Serialize + DeserializeOwned + Clone,
    F: FnMut(Option<T>) -> T,
{
    loop {
        let current = load::<T>(store, key).await?;
        let revision = current.as_ref().map_or(0, |v| v.revision);
        let next = change(current.map(|v| v.value));
        match save(store, key, &next, revision).await {
            Ok(_) => return Ok(next),
            Err(KvError::Conflict { .. }) => {
                metrics::counter!(crate::telemetry::names::KV_CONFLICTS, "bucket" => store.name.clone()).increment(1);
            }
            Err(e) => return Err(e),
        }
    }
}
