//! Audit: the record keeper.
//!
//! Every stage publishes its records to `nova.audit.<stage>.<target>`;
//! stream `NOVA_AUDIT` keeps them (made by `novactl provision`). This
//! service reads the stream with an ordered consumer, checks each record
//! against the wire contract (a malformed one goes to `nova.dead.audit`),
//! counts records per stage and outcome, keeps the newest in memory, and
//! answers `nova.ctl.audit` queries (see `AuditQuery`) and
//! `nova.ctl.audit.stats` requests (the runbook's section 8 figures over the
//! records it keeps, [`nova_shared::audit_stats`]). Replicas each read the
//! whole stream and answer in a queue group. Every request gets a reply: a
//! bad one gets `{error}`.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures_util::StreamExt;
use nova_runtime::dead::DeadLetters;
use nova_runtime::nats::AUDIT_STREAM;
use nova_runtime::setup::{self, SetupError};
use nova_runtime::telemetry::names;
use nova_shared::audit_stats::{self, StatsRequest};
use nova_shared::codec;
use nova_shared::subjects;
use nova_shared::wire::ErrorReply;
use nova_shared::wire::{AuditKind, AuditQuery, AuditRecord, Outcome, ResultStatus, Stage};

/// The control subject of audit queries.
pub const QUERY_VERB: &str = "audit";

/// Audit settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Newest records kept in memory for queries.
    pub keep: usize,
    /// On start, read back this much history.
    pub replay: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            keep: 10_000,
            replay: Duration::from_secs(3600),
        }
    }
}

/// Runs until `shutdown` completes.
pub async fn run(
    config: Config,
    client: async_nats::Client,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SetupError> {
    // Instrumented, not entered: a span guard held across awaits would
    // mark whatever else its thread runs as the audit's.
    tracing::Instrument::instrument(
        serve(config, client, shutdown),
        tracing::info_span!("audit"),
    )
    .await
}

async fn serve(
    config: Config,
    client: async_nats::Client,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SetupError> {
    let js = nova_runtime::nats::jetstream(&client);
    let dead = DeadLetters::new(js.clone(), Stage::Audit);
    let stream = js
        .get_stream(AUDIT_STREAM)
        .await
        .map_err(|source| SetupError::Stream {
            stream: AUDIT_STREAM,
            source,
        })?;
    let since = time::OffsetDateTime::now_utc() - config.replay;
    let reader = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartTime { start_time: since },
            ..Default::default()
        })
        .await
        .map_err(|source| SetupError::Consumer {
            stream: AUDIT_STREAM,
            consumer: "ordered reader".into(),
            source,
        })?;
    let mut records = reader.messages().await.map_err(|source| SetupError::Pull {
        stream: AUDIT_STREAM,
        source,
    })?;
    let mut queries =
        setup::subscribe(&client, &subjects::control(QUERY_VERB), Some("nova-audit")).await?;
    let mut stats = setup::subscribe(
        &client,
        &subjects::control(audit_stats::STATS_VERB),
        Some("nova-audit"),
    )
    .await?;
    let _ping = setup::ping(&client, Stage::Audit).await?;
    let mut kept: VecDeque<AuditRecord> = VecDeque::with_capacity(config.keep.min(10_000));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            message = records.next() => match message {
                Some(Ok(message)) => {
                    match nova_runtime::decode::<AuditRecord>(&message.payload, message.headers.as_ref()) {
                        Ok(record) => {
                            metrics::counter!(names::AUDIT_RECORDS, "stage" => record.stage.label(), "outcome" => record.outcome.clone()).increment(1);
                            figures(&record);
                            if kept.len() == config.keep {
                                kept.pop_front();
                            }
                            kept.push_back(record);
                        }
                        Err(error) => dead.send(&message.subject, format!("not an audit record: {error}"), &message.payload).await,
                    }
                }
                Some(Err(error)) => tracing::warn!(%error, "audit stream hiccup"),
                None => break,
            },
            request = queries.next() => match request {
                Some(request) => respond(&client, &dead, request, "audit query", |r| query_reply(&kept, r)).await,
                None => break,
            },
            request = stats.next() => match request {
                Some(request) => respond(&client, &dead, request, "audit stats request", |r| stats_reply(&kept, r, nova_runtime::now_ms())).await,
                None => break,
            },
        }
    }
    let _ = queries.unsubscribe().await;
    let _ = stats.unsubscribe().await;
    tracing::info!("audit stopped");
    Ok(())
}

/// The per-target figures (gauges by `target`; targets are policy names,
/// so the label is bounded): records seen, the capacity of the newest
/// succeeded result, the time of the newest scaling decision.
fn figures(record: &AuditRecord) {
    let target = record.target.clone();
    metrics::counter!(names::AUDIT_TARGET_RECORDS, "target" => target.clone()).increment(1);
    match record.kind {
        AuditKind::Result if record.outcome == ResultStatus::Succeeded.as_str() => {
            if let Some(to) = record.to {
                metrics::gauge!(names::AUDIT_TARGET_CAPACITY, "target" => target)
                    .set(f64::from(to));
            }
        }
        AuditKind::Decision if record.outcome == Outcome::Scale.as_str() => {
            #[allow(clippy::cast_precision_loss)] // unix ms fit f64 exactly until year 287396
            let seconds = record.ts as f64 / 1000.0;
            metrics::gauge!(names::AUDIT_TARGET_LAST_SCALE, "target" => target).set(seconds);
        }
        _ => {}
    }
}

/// Answers one control request with what `compute` makes of it, or with
/// `{error}` (the request also dead-lettered) when it cannot be read, so
/// every request gets an answer; one without a reply subject is
/// dead-lettered. `what` names the request in logs and dead letters.
async fn respond<T: serde::Serialize>(
    client: &async_nats::Client,
    dead: &DeadLetters,
    request: async_nats::Message,
    what: &str,
    compute: impl FnOnce(&async_nats::Message) -> Result<T, String>,
) {
    let Some(reply) = request.reply.clone() else {
        dead.send(
            &request.subject,
            format!("{what} without a reply subject"),
            &request.payload,
        )
        .await;
        return;
    };
    let payload = match compute(&request) {
        Ok(answer) => codec::encode(&answer),
        Err(reason) => {
            dead.send(&request.subject, reason.clone(), &request.payload)
                .await;
            codec::encode(&ErrorReply { error: reason })
        }
    };
    match payload {
        Ok(payload) => {
            if let Err(error) = client.publish(reply, payload.into()).await {
                tracing::warn!(%error, "cannot answer an {what}");
            }
        }
        Err(error) => tracing::error!(%error, "cannot encode the answer to an {what}"),
    }
}

/// The kept records an `nova.ctl.audit` query selects, or why it cannot be read.
fn query_reply(
    kept: &VecDeque<AuditRecord>,
    request: &async_nats::Message,
) -> Result<Vec<AuditRecord>, String> {
    let query: AuditQuery = if request.payload.is_empty() {
        AuditQuery::default()
    } else {
        nova_runtime::decode(&request.payload, request.headers.as_ref()).map_err(|error| {
            format!(
                "not an audit query: {}",
                codec::excerpt(&error.to_string(), 300)
            )
        })?
    };
    Ok(select(kept, &query))
}

/// The figures a stats request asks for, at `now_ms`, or why it cannot be read.
pub fn stats_reply(
    kept: &VecDeque<AuditRecord>,
    request: &async_nats::Message,
    now_ms: i64,
) -> Result<audit_stats::AuditStats, String> {
    let asked: StatsRequest = if request.payload.is_empty() {
        StatsRequest::default()
    } else {
        nova_runtime::decode(&request.payload, request.headers.as_ref()).map_err(|error| {
            format!(
                "not an audit stats request: {}",
                codec::excerpt(&error.to_string(), 300)
            )
        })?
    };
    let span = audit_stats::resolve(&asked, now_ms)
        .map_err(|why| format!("not an audit stats request: {why}"))?;
    let records: Vec<AuditRecord> = kept.iter().cloned().collect();
    Ok(audit_stats::compute(
        &records,
        span,
        asked.target.as_deref(),
        asked
            .flap_window_secs
            .unwrap_or(audit_stats::DEFAULT_FLAP_WINDOW_SECS),
    ))
}

/// The newest `limit` records matching the query, oldest first.
pub fn select(kept: &VecDeque<AuditRecord>, query: &AuditQuery) -> Vec<AuditRecord> {
    let limit = query.limit.unwrap_or(50);
    let mut newest: Vec<AuditRecord> = kept
        .iter()
        .rev()
        .filter(|r| query.target.as_ref().is_none_or(|t| *t == r.target))
        .take(limit)
        .cloned()
        .collect();
    newest.reverse();
    newest
}

#[cfg(test)]
mod tests {
    use super::*;
    use nova_shared::wire::AuditKind;

    #[test]
    fn select_takes_the_newest_matching_records_in_order() {
        let kept: VecDeque<AuditRecord> = (0..10)
            .map(|i| {
                AuditRecord::new(
                    format!("a{i}"),
                    i,
                    Stage::Arbiter,
                    if i % 2 == 0 { "web" } else { "db" },
                    AuditKind::Decision,
                    "scale",
                    String::new(),
                )
            })
            .collect();
        let ids = |q: AuditQuery| {
            select(&kept, &q)
                .into_iter()
                .map(|r| r.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(AuditQuery {
                target: Some("web".into()),
                limit: Some(2)
            }),
            ["a6", "a8"]
        );
        assert_eq!(
            ids(AuditQuery {
                target: None,
                limit: Some(3)
            }),
            ["a7", "a8", "a9"]
        );
        assert_eq!(ids(AuditQuery::default()).len(), 10);
    }
}
