//! Ingest: the front door. Subscribes to `nova.metrics.>` in a queue group
//! (ingest is stateless, so replicas simply share the load), validates and
//! normalises each sample (see `nova_shared::normalise`), and publishes the
//! accepted samples of each message as one batch on `nova.samples.<target>`.
//! Every rejected sample goes to `nova.dead.ingest` with its reason; its
//! neighbours in the same message are still accepted.
//!
//! Aggregation across instances happens in the evaluator, on event time,
//! rather than here: that keeps ingest stateless.
//!
//! A reloaded policy (new targets, metric units, sample age limits) applies
//! from the next message.
//!
//! [`lag`] polls the JetStream consumers that targets' `queue_depth:`
//! blocks name and publishes their lag as `queue_depth` samples.
//!
//! With [`Config::webhook`] set, ingest also serves the Alertmanager webhook
//! bridge ([`webhook`]): alerts in, triggers of source `alert` out, on a
//! listener of its own.

pub mod lag;
pub mod webhook;

use futures_util::StreamExt;
use nova_runtime::dead::DeadLetters;
use nova_runtime::reload::LivePolicy;
use nova_runtime::setup::{self, SetupError};
use nova_runtime::telemetry::names;
use nova_shared::codec::{self, Encoding};
use nova_shared::normalise::normalise;
use nova_shared::policy::Policy;
use nova_shared::subjects;
use nova_shared::wire::Stage;

/// Ingest could not run.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// Its subscription or dead-letter outlet could not be set up.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// The webhook listener could not start or failed.
    #[error(transparent)]
    Webhook(#[from] webhook::WebhookError),
}

/// Ingest settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The policy (targets and metric units), and the ones that replace it.
    pub policy: LivePolicy,
    /// Queue group shared by ingest replicas.
    pub queue_group: String,
    /// The Alertmanager webhook listener; none: no webhook.
    pub webhook: Option<webhook::WebhookConfig>,
}

impl Config {
    /// Defaults for `policy`.
    pub fn new(policy: impl Into<LivePolicy>) -> Self {
        Config {
            policy: policy.into(),
            queue_group: "nova-ingest".into(),
            webhook: None,
        }
    }
}

/// Runs until `shutdown` completes: stop taking messages, finish the one in
/// hand, flush.
pub async fn run(
    config: Config,
    client: async_nats::Client,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), IngestError> {
    // Instrumented, not entered: a span guard held across awaits would
    // mark whatever else its thread runs as the ingest's.
    tracing::Instrument::instrument(
        serve(config, client, shutdown),
        tracing::info_span!("ingest"),
    )
    .await
}

async fn serve(
    config: Config,
    client: async_nats::Client,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), IngestError> {
    // The webhook binds first: a taken port fails the start, not later.
    let bridge = match config.webhook.clone() {
        Some(webhook) => Some(webhook::Bridge::bind(webhook).await?),
        None => None,
    };
    let mut subscription =
        setup::subscribe(&client, subjects::METRICS_ALL, Some(&config.queue_group)).await?;
    let js = nova_runtime::nats::jetstream(&client);
    let dead = DeadLetters::new(js, Stage::Ingest);
    let _ping = setup::ping(&client, Stage::Ingest).await?;
    let _lag = lag::spawn(config.policy.clone(), client.clone());
    let (stop_webhook, webhook_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut served = bridge.map(|bridge| {
        let stopped = async move {
            let _ = webhook_stopped.await;
        };
        tokio::spawn(bridge.serve(config.policy.clone(), client.clone(), stopped))
    });
    let mut live = config.policy;
    let mut policy = live.current().policy;
    tokio::pin!(shutdown);
    let mut failed = None;
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            ended = async { served.as_mut().expect("guarded").await }, if served.is_some() => {
                served = None;
                failed = Some(match ended {
                    Ok(Err(error)) => error,
                    Ok(Ok(())) => webhook::WebhookError::Serve(std::io::Error::other("the webhook server stopped")),
                    Err(join) => webhook::WebhookError::Serve(std::io::Error::other(join.to_string())),
                });
                break;
            }
            next = live.changed() => policy = next.policy,
            message = subscription.next() => match message {
                Some(message) => handle(&policy, &client, &dead, message).await,
                None => break,
            },
        }
    }
    let _ = subscription.unsubscribe().await;
    // The webhook finishes its requests in hand: each answers once its
    // publishes are acked or given up.
    let _ = stop_webhook.send(());
    if let Some(served) = served
        && let Ok(Err(error)) = served.await
    {
        failed.get_or_insert(error);
    }
    let _ = client.flush().await;
    tracing::info!("ingest stopped");
    match failed {
        Some(error) => Err(error.into()),
        None => Ok(()),
    }
}

async fn handle(
    policy: &Policy,
    client: &async_nats::Client,
    dead: &DeadLetters,
    message: async_nats::Message,
) {
    let subject = message.subject.as_str();
    let Some(parsed) = subjects::parse_metrics(subject) else {
        dead.send(
            subject,
            "expected subject nova.metrics.<target>.<metric>",
            &message.payload,
        )
        .await;
        return;
    };
    let encoding =
        Encoding::from_content_type(nova_runtime::content_type(message.headers.as_ref()));
    let decoded = match codec::decode_samples(&message.payload, encoding) {
        Ok(decoded) => decoded,
        Err(error) => {
            metrics::counter!(names::INGEST_SAMPLES, "outcome" => "rejected").increment(1);
            dead.send(
                subject,
                format!("not a sample or an array of samples: {error}"),
                &message.payload,
            )
            .await;
            return;
        }
    };
    let receive_ms = nova_runtime::now_ms();
    let mut samples = Vec::with_capacity(decoded.len());
    for element in decoded {
        let (reason, raw) = match element {
            Ok(input) => {
                match normalise(policy, parsed.target, parsed.metric, &input, receive_ms) {
                    Ok(sample) => {
                        samples.push(sample);
                        continue;
                    }
                    // The element is re-encoded on its own, so the dead letter
                    // holds exactly the sample that was refused.
                    Err(error) => (error.to_string(), codec::encode(&input).unwrap_or_default()),
                }
            }
            Err((error, raw)) => (format!("not a valid sample: {error}"), raw),
        };
        metrics::counter!(names::INGEST_SAMPLES, "outcome" => "rejected").increment(1);
        dead.send(subject, reason, &raw).await;
    }
    if samples.is_empty() {
        return;
    }
    metrics::counter!(names::INGEST_SAMPLES, "outcome" => "accepted")
        .increment(samples.len() as u64);
    let max_payload = client.server_info().max_payload;
    let (batches, unfit) = codec::encode_batches(parsed.target, samples, max_payload);
    for sample in unfit {
        // Cannot happen for a sample that arrived in a message; counted and
        // dead-lettered all the same, never dropped in silence.
        metrics::counter!(names::INGEST_SAMPLES, "outcome" => "lost").increment(1);
        let bytes = codec::encode(&sample).unwrap_or_default();
        dead.send(subject, "sample too large to forward", &bytes)
            .await;
    }
    for payload in batches {
        if let Err(error) = client
            .publish(subjects::samples(parsed.target), payload.into())
            .await
        {
            // Core NATS: the client buffers while reconnecting; this is a
            // closed connection, the one way a batch can still be lost.
            metrics::counter!(names::INGEST_SAMPLES, "outcome" => "lost").increment(1);
            tracing::error!(%error, target = parsed.target, "cannot forward samples");
        }
    }
}
