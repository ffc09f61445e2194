//! Evaluator: turns normalised samples into triggers.
//!
//! Subscribes to `nova.samples.*`, runs `nova_shared::evaluate::Evaluator`
//! (event-time "condition for duration"), and publishes each trigger to
//! stream `NOVA_TRIGGERS` with its deterministic id as `Nats-Msg-Id`, plus
//! one `trigger` audit record per rule that fired. Rejected samples (from
//! the future, unknown target) go to `nova.dead.evaluator`.
//!
//! A target with a `fallback` that hears no sample for its `after_secs`
//! (checked on a ticker, see `nova_shared::fallback`) gets a trigger asking
//! for the fallback capacity.
//!
//! Replicas: every replica may see every sample (plain subscription); they
//! compute the same triggers with the same ids, and JetStream keeps one.
//! To spread the work, run replicas with `--partition K/N`: each evaluates
//! only the targets it owns (`Partition`), so no two partitions fire for one
//! target; run two replicas of each partition for availability.

use std::sync::Arc;

use futures_util::StreamExt;
use nova_runtime::dead::DeadLetters;
use nova_runtime::nats::CAPACITY_BUCKET;
use nova_runtime::publish::{self, Auditor, PublishError};
use nova_runtime::setup::{self, SetupError};
use nova_runtime::telemetry::names;
use nova_shared::codec::{self, Encoding};
use nova_shared::evaluate::{Evaluator, Partition};
use nova_shared::fallback::SilenceWatch;
use nova_shared::ids;
use nova_shared::policy::Policy;
use nova_shared::subjects;
use nova_shared::wire::{AuditKind, AuditRecord, CapacityRecord, SampleBatch, Stage, Trigger};

/// Evaluator settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The policy.
    pub policy: Arc<Policy>,
    /// The targets this replica evaluates (all, by default).
    pub partition: Partition,
}

impl Config {
    /// Every target of `policy`.
    pub fn new(policy: Arc<Policy>) -> Self {
        Config {
            policy,
            partition: Partition::default(),
        }
    }
}

/// Runs until `shutdown` completes.
pub async fn run(
    config: Config,
    client: async_nats::Client,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SetupError> {
    let span = tracing::info_span!("evaluator");
    let _enter = span.enter();
    let mut subscription = setup::subscribe(&client, subjects::SAMPLES_ALL, None).await?;
    let js = async_nats::jetstream::new(client.clone());
    let stage = Stage::Evaluator;
    let dead = DeadLetters::new(js.clone(), stage);
    let auditor = Auditor::new(js.clone(), stage);
    let mut evaluator = Evaluator::new(&config.policy);
    let partition = config.partition;
    let mut silence = SilenceWatch::new(&config.policy, nova_runtime::now_ms());
    silence.retain(|target| partition.owns(target));
    // Capacity turns `requests` into `requests_per_instance`; the watch
    // delivers every target's latest record first, then each change.
    let mut capacities = setup::bucket(&js, CAPACITY_BUCKET)
        .await?
        .watch_with_history(">")
        .await
        .map_err(|source| SetupError::Watch {
            bucket: CAPACITY_BUCKET,
            source,
        })?;
    let mut silence_check = tokio::time::interval(fallback_check_period(&config.policy));
    let _ping = setup::ping(&client, stage).await?;
    tokio::pin!(shutdown);
    loop {
        let message = tokio::select! {
            // In this order: a capacity change is applied before the samples
            // that arrive after it are evaluated.
            biased;
            _ = &mut shutdown => break,
            Some(Ok(entry)) = capacities.next() => {
                // Deletions and unreadable records carry no capacity: skip them.
                if let Ok(record) = codec::decode::<CapacityRecord>(&entry.value, Encoding::MsgPack) {
                    // Instances that are running serve requests; a backend
                    // that reports none running yet counts the desired ones.
                    let serving = record.running.filter(|r| *r > 0).unwrap_or(record.desired);
                    evaluator.set_capacity(&record.target, serving);
                }
                continue;
            }
            _ = silence_check.tick() => {
                for trigger in silence.due(nova_runtime::now_ms()) {
                    publish_trigger(&js, &auditor, &trigger).await;
                }
                continue;
            }
            message = subscription.next() => match message {
                Some(message) => message,
                None => break,
            },
        };
        let subject = message.subject.as_str();
        let batch: SampleBatch =
            match nova_runtime::decode(&message.payload, message.headers.as_ref()) {
                Ok(batch) => batch,
                Err(error) => {
                    dead.send(
                        subject,
                        format!("not a sample batch: {error}"),
                        &message.payload,
                    )
                    .await;
                    continue;
                }
            };
        if batch.target != subjects::last_token(subject) {
            let reason = format!("batch for target {:?} arrived on {subject}", batch.target);
            dead.send(subject, reason, &message.payload).await;
            continue;
        }
        if !partition.owns(&batch.target) {
            metrics::counter!(names::EVALUATOR_SAMPLES, "effect" => "other_partition")
                .increment(batch.samples.len() as u64);
            continue;
        }
        let now = nova_runtime::now_ms();
        let (triggers, rejected) = evaluator.observe_batch(&batch.target, &batch.samples, now);
        if let Some(newest) = batch.samples.iter().map(|s| s.ts).max() {
            silence.heard(&batch.target, newest, now);
        }
        let evaluated = batch.samples.len() - rejected.len();
        metrics::counter!(names::EVALUATOR_SAMPLES, "effect" => "evaluated")
            .increment(evaluated as u64);
        for (index, error) in rejected {
            metrics::counter!(names::EVALUATOR_SAMPLES, "effect" => "rejected").increment(1);
            let raw = codec::encode(&batch.samples[index]).unwrap_or_default();
            dead.send(subject, error.to_string(), &raw).await;
        }
        for trigger in triggers {
            publish_trigger(&js, &auditor, &trigger).await;
        }
    }
    let _ = subscription.unsubscribe().await;
    let _ = client.flush().await;
    tracing::info!("evaluator stopped");
    Ok(())
}

/// How often to look for silent targets: a quarter of the shortest
/// fallback delay, between 1 and 15 seconds.
fn fallback_check_period(policy: &Policy) -> std::time::Duration {
    let shortest = policy
        .targets
        .values()
        .filter_map(|t| t.fallback)
        .map(|f| f.after_secs)
        .min();
    std::time::Duration::from_secs(shortest.map_or(15, |secs| (secs / 4).clamp(1, 15)))
}

/// Publishes a trigger and its audit records; a failure is logged and
/// counted, as the trigger is lost to this replica only (another replica,
/// or the condition's next firing, raises it again).
async fn publish_trigger(
    js: &async_nats::jetstream::Context,
    auditor: &Auditor,
    trigger: &Trigger,
) {
    if let Err(error) = emit(js, auditor, trigger).await {
        metrics::counter!(names::RETRIES, "stage" => "evaluator").increment(1);
        tracing::error!(%error, trigger = trigger.id, "cannot publish trigger");
    }
}

/// Publishes a trigger and its audit records.
async fn emit(
    js: &async_nats::jetstream::Context,
    auditor: &Auditor,
    trigger: &Trigger,
) -> Result<(), PublishError> {
    publish::publish_once(
        js,
        subjects::triggers(&trigger.target),
        &trigger.id,
        trigger,
    )
    .await?;
    metrics::counter!(names::TRIGGERS, "target" => trigger.target.clone()).increment(1);
    for firing in &trigger.firings {
        let id = ids::derive("a", &[trigger.id.as_bytes(), firing.rule.as_bytes()]);
        let mut record = AuditRecord::new(
            id,
            trigger.ts,
            Stage::Evaluator,
            &trigger.target,
            AuditKind::Trigger,
            "fired",
            firing.reason.clone(),
        );
        record.rule = Some(firing.rule.clone());
        record.observed = firing.observed;
        record.threshold = firing.threshold;
        record.trigger_id = Some(trigger.id.clone());
        auditor.record(&record).await?;
    }
    Ok(())
}
