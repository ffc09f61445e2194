//! What every NovaCron service shares at run time, on top of `nova-shared`:
//! the NATS side of the wire contract.
//!
//! - [`ping`]: `nova.ctl.ping.<stage>`, answered once a service is listening; readiness; `$SRV` registration.
//! - [`nats`]: connecting; the names of streams, buckets and consumers.
//! - [`provision`]: the JetStream topology, applied by `novactl provision`, checked by services.
//! - [`setup`]: opening consumers, buckets and subscriptions; [`setup::SetupError`].
//! - [`publish`]: JetStream publishing with `Nats-Msg-Id` de-duplication, plus audit records.
//! - [`dead`]: the dead-letter path (`nova.dead.<stage>`), counted and never silent.
//! - [`kv`]: typed compare-and-set on KV entries, its errors classified.
//! - [`error`]: `Error<Kind>`, errors whose kind says whether to retry.
//! - [`retry`]: back-off between attempts.
//! - [`telemetry`]: metric names, the Prometheus recorder, tracing set-up.
//! - [`http`]: the per-service listener: `/metrics`, `/healthz`, `/readyz`.
//! - [`reload`]: the policy in force ([`reload::LivePolicy`]), reloaded on SIGHUP and on a change of its file.
//! - [`shutdown`]: a cloneable shutdown signal for `run(config, client, shutdown)`.
//! - [`cli`]: the flags every service binary takes.

pub mod cli;
pub mod dead;
pub mod error;
pub mod http;
pub mod kv;
pub mod nats;
pub mod ping;
pub mod provision;
pub mod publish;
pub mod reload;
pub mod retry;
pub mod setup;
pub mod shutdown;
pub mod telemetry;

/// Wall-clock now, unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The `Content-Type` header of a message, if any.
pub fn content_type(headers: Option<&async_nats::HeaderMap>) -> Option<&str> {
    headers
        .and_then(|h| h.get("Content-Type"))
        .map(|v| v.as_str())
}

/// Decodes a record (a map of named fields, within the codec's size and
/// depth bounds) as its `Content-Type` header says (MessagePack unless JSON).
pub fn decode<T: serde::de::DeserializeOwned>(
    payload: &[u8],
    headers: Option<&async_nats::HeaderMap>,
) -> Result<T, nova_shared::codec::CodecError> {
    let encoding = nova_shared::codec::Encoding::from_content_type(content_type(headers));
    nova_shared::codec::decode_map(payload, encoding)
}

/// Acknowledges a JetStream message. A lost ack only means a redelivery,
/// which every consumer here absorbs, so it is logged, not returned.
pub async fn ack(message: &async_nats::jetstream::Message, kind: async_nats::jetstream::AckKind) {
    if let Err(error) = message.ack_with(kind).await {
        tracing::warn!(%error, "ack failed");
    }
}

/// A random number, fresh per call (std's per-process random hasher keys
/// mixed with a counter): for jitter, not for secrets.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.finish()
}

/// An id unique across processes and replicas: `<prefix>-<process token>-<counter>`.
/// For records that are distinct events even when their content is equal.
pub fn unique_id(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static TOKEN: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // RandomState is seeded randomly per process: no extra crate for a random token.
    let token = TOKEN.get_or_init(|| {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_i64(now_ms());
        hasher.write_u32(std::process::id());
        hasher.finish()
    });
    format!(
        "{prefix}-{token:016x}-{}",
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
