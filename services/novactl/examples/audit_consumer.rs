//! Read NovaCron's audit stream from a point in time, in Rust: an ordered
//! JetStream consumer on stream `NOVA_AUDIT` from a start time
//! (`DeliverPolicy::ByStartTime`), records decoded with the wire types of
//! `nova-shared`. Stops when it has caught up with the stream.
//!
//! ```sh
//! cargo run -p novactl --example audit_consumer -- nats://127.0.0.1:4222 2026-12-01T10:00:00Z [TARGET]
//! ```

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use futures_util::StreamExt;
use nova_shared::codec::{self, Encoding};
use nova_shared::wire::AuditRecord;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let since = match args.next() {
        Some(text) => OffsetDateTime::parse(&text, &Rfc3339)?,
        None => OffsetDateTime::now_utc() - time::Duration::hours(1),
    };
    let target = args.next().unwrap_or_else(|| "*".into());

    let client = async_nats::connect(url).await?;
    let stream = jetstream::new(client).get_stream("NOVA_AUDIT").await?;
    let mut consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: format!("nova.audit.*.{target}"),
            deliver_policy: DeliverPolicy::ByStartTime { start_time: since },
            ..Default::default()
        })
        .await?;
    if consumer.info().await?.num_pending == 0 {
        return Ok(());
    }
    let mut messages = consumer.messages().await?;
    while let Some(message) = messages.next().await {
        let message = message?;
        let record: AuditRecord = codec::decode(&message.payload, Encoding::MsgPack)?;
        println!(
            "{} {} {} {:?} {}: {}",
            record.ts, record.stage, record.target, record.kind, record.outcome, record.reason
        );
        if message.info().map_or(true, |i| i.pending == 0) {
            break;
        }
    }
    Ok(())
}
