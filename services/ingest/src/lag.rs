//! JetStream consumer lag as queue depth, as KEDA's NATS JetStream scaler
//! reads it: for every consumer a target's `queue_depth:` block names,
//! ingest reads the consumer's info every `poll_every` seconds and
//! publishes `num_pending + num_ack_pending` as a `queue_depth` sample of
//! the target on `nova.metrics.<target>.queue_depth`, the normal front
//! door, so the sample is validated, normalised and counted like any
//! other and ordinary rules (`avg_queue_depth > 100 for 30 seconds`)
//! scale on it. The reading is also the gauge `nova_consumer_lag_messages`.
//!
//! Several ingest replicas each poll. That is harmless: every sample of
//! one consumer carries the same `instance`, `<stream>/<consumer>`
//! ([`QueueDepthSource::instance`]), and the evaluator keeps one latest
//! value per instance, so replicas' readings replace each other in one
//! slot instead of adding up; they only make readings more frequent.
//! Several consumers of one target are several instances, aggregated by
//! the rule (`sum_queue_depth`, `max_queue_depth`).
//!
//! A consumer on another server or account (`server_url`, with the user
//! and password in it when it needs them, `nats://user:pass@host:4222`;
//! the user decides the account) gets a connection of its own that
//! reconnects by itself. A failed read is logged and counted
//! (`nova_lag_polls_total{outcome="failed"}`), and the next period tries
//! again; no sample is made up. A reloaded policy restarts the pollers
//! only when the set of consumers changed.

use std::time::Duration;

use async_nats::jetstream;
use nova_runtime::reload::LivePolicy;
use nova_runtime::telemetry::names;
use nova_shared::policy::{Policy, QueueDepthSource};
use nova_shared::subjects;
use nova_shared::wire::{MetricSampleIn, SampleValue};
use tokio::task::JoinSet;

/// The metric the samples are published as.
pub const METRIC: &str = "queue_depth";

/// Polls until dropped.
pub struct LagPollers(tokio::task::JoinHandle<()>);

impl Drop for LagPollers {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts polling the consumers of `policy`'s targets, following reloads.
pub fn spawn(policy: LivePolicy, client: async_nats::Client) -> LagPollers {
    LagPollers(tokio::spawn(follow(policy, client)))
}

/// Every (target, consumer) a policy names.
fn sources(policy: &Policy) -> Vec<(String, QueueDepthSource)> {
    policy
        .targets
        .values()
        .flat_map(|t| t.queue_depth.iter().map(|s| (t.name.clone(), s.clone())))
        .collect()
}

async fn follow(mut live: LivePolicy, client: async_nats::Client) {
    let mut running = sources(&live.current().policy);
    let mut pollers = start(&running, &client);
    loop {
        let next = sources(&live.changed().await.policy);
        if next != running {
            pollers.abort_all();
            running = next;
            pollers = start(&running, &client);
        }
    }
}

fn start(sources: &[(String, QueueDepthSource)], client: &async_nats::Client) -> JoinSet<()> {
    let mut set = JoinSet::new();
    for (target, source) in sources {
        tracing::info!(
            target = target.as_str(),
            stream = source.stream.as_str(),
            consumer = source.consumer.as_str(),
            every_secs = source.poll_every_secs,
            "polling consumer lag"
        );
        set.spawn(poll(target.clone(), source.clone(), client.clone()));
    }
    set
}

/// The connection a source is read on: the services' own, or one of its
/// own to another server, which connects (and reconnects) in the
/// background so a server that is down now only fails reads.
async fn reader(source: &QueueDepthSource, own: &async_nats::Client) -> Option<async_nats::Client> {
    let Some(url) = &source.server_url else {
        return Some(own.clone());
    };
    let options = async_nats::ConnectOptions::new();
    match options
        .name("nova-ingest-lag")
        .retry_on_initial_connect()
        .connect(url.as_str())
        .await
    {
        Ok(client) => Some(client),
        Err(error) => {
            tracing::error!(%error, url = url.as_str(), "cannot connect for consumer lag");
            None
        }
    }
}

async fn poll(target: String, source: QueueDepthSource, client: async_nats::Client) {
    let every = Duration::from_secs(source.poll_every_secs.max(1));
    let Some(reader) = reader(&source, &client).await else {
        metrics::counter!(names::LAG_POLLS, "outcome" => "failed").increment(1);
        return;
    };
    // Every call under the services' operation timeout.
    let js = nova_runtime::nats::jetstream(&reader);
    let subject = subjects::metrics(&target, METRIC);
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match read_lag(&js, &source).await {
            Ok(lag) => {
                metrics::counter!(names::LAG_POLLS, "outcome" => "read").increment(1);
                #[allow(clippy::cast_precision_loss)] // a message count well below 2^53
                let value = lag as f64;
                metrics::gauge!(names::CONSUMER_LAG, "target" => target.clone(), "stream" => source.stream.clone(), "consumer" => source.consumer.clone()).set(value);
                let sample = MetricSampleIn {
                    metric: None,
                    value: SampleValue::Number(value),
                    ts: Some(nova_runtime::now_ms()),
                    instance: Some(source.instance()),
                    labels: [
                        ("stream".to_string(), source.stream.clone()),
                        ("consumer".to_string(), source.consumer.clone()),
                    ]
                    .into(),
                };
                match nova_shared::codec::encode(&sample) {
                    Ok(payload) => {
                        if let Err(error) = client.publish(subject.clone(), payload.into()).await {
                            tracing::warn!(%error, target = target.as_str(), "cannot publish a queue_depth sample");
                        }
                    }
                    Err(error) => tracing::error!(%error, "cannot encode a queue_depth sample"),
                }
            }
            Err(error) => {
                metrics::counter!(names::LAG_POLLS, "outcome" => "failed").increment(1);
                tracing::warn!(
                    target = target.as_str(),
                    stream = source.stream.as_str(),
                    consumer = source.consumer.as_str(),
                    "cannot read consumer lag: {error}"
                );
            }
        }
    }
}

/// Pending plus ack-pending: messages not yet delivered and delivered but
/// not yet acknowledged, KEDA's measure of a JetStream backlog.
async fn read_lag(js: &jetstream::Context, source: &QueueDepthSource) -> Result<u64, String> {
    let stream = js
        .get_stream_no_info(&source.stream)
        .await
        .map_err(|e| format!("stream {}: {e}", source.stream))?;
    let info = stream
        .consumer_info(&source.consumer)
        .await
        .map_err(|e| format!("consumer {}: {e}", source.instance()))?;
    Ok(info.num_pending + info.num_ack_pending as u64)
}
