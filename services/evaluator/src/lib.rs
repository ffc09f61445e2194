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
//! Up beats down across subjects: a trigger of only scale-downs at a
//! target's newest event time is held in the evaluator until a later sample
//! of that target arrives, and an up of the same instant joins it (see
//! `nova_shared::evaluate`). A held trigger whose target falls silent is
//! published once it has waited [`HoldBack::grace`] (2 s by default,
//! `--down-grace-ms`): a ticker passes the wall clock in every quarter of
//! the grace (between 50 and 500 ms), so it leaves at most one tick after
//! its grace. On shutdown, held triggers are published before the
//! connection drains: their instant is over as far as this replica knows.
//! Ups are never held. The grace is the one wall-clock path: an up of the
//! instant arriving more than the grace after its down finds the down
//! already published, and two replicas whose ticks fall either side of that
//! moment may publish differently composed triggers (different ids).
//!
//! Replicas: every replica may see every sample (plain subscription); they
//! compute the same triggers with the same ids, and JetStream keeps one.
//! To spread the work, run replicas with `--partition K/N`: each evaluates
//! only the targets it owns (`Partition`), so no two partitions fire for one
//! target; run two replicas of each partition for availability.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use nova_runtime::dead::DeadLetters;
use nova_runtime::nats::CAPACITY_BUCKET;
use nova_runtime::publish::{self, Auditor, PublishError};
use nova_runtime::setup::{self, SetupError};
use nova_runtime::telemetry::names;
use nova_shared::codec::{self, Encoding};
use nova_shared::evaluate::{DEFAULT_DOWN_GRACE_MS, Evaluator, Partition};
use nova_shared::fallback::SilenceWatch;
use nova_shared::ids;
use nova_shared::policy::Policy;
use nova_shared::subjects;
use nova_shared::wire::{AuditKind, AuditRecord, CapacityRecord, SampleBatch, Stage, Trigger};
use tokio::time::MissedTickBehavior;

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

/// How long scale-downs wait for the rest of their instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldBack {
    /// Wall-clock wait of a held scale-down whose target sends no later
    /// sample, before it is published anyway (default 2 s).
    pub grace: Duration,
}

impl Default for HoldBack {
    fn default() -> Self {
        HoldBack {
            grace: Duration::from_millis(DEFAULT_DOWN_GRACE_MS),
        }
    }
}

impl HoldBack {
    /// How often held triggers are checked: a quarter of the grace,
    /// between 50 and 500 ms.
    fn check_period(self) -> Duration {
        (self.grace / 4).clamp(Duration::from_millis(50), Duration::from_millis(500))
    }
}

/// Runs until `shutdown` completes, with the default [`HoldBack`].
pub async fn run(
    config: Config,
    client: async_nats::Client,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SetupError> {
    run_with(config, HoldBack::default(), client, shutdown).await
}

/// Runs until `shutdown` completes, holding scale-downs back as `hold` says.
pub async fn run_with(
    config: Config,
    hold: HoldBack,
    client: async_nats::Client,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SetupError> {
    let span = tracing::info_span!("evaluator");
    let _enter = span.enter();
    let mut subscription = setup::subscribe(&client, subjects::SAMPLES_ALL, None).await?;
    let js = async_nats::jetstream::new(client.clone());
    let stage = Stage::Evaluator;
    let dead = DeadLetters::new(js.clone(), stage.clone());
    let auditor = Auditor::new(js.clone(), stage.clone());
    let grace_ms = u64::try_from(hold.grace.as_millis()).unwrap_or(u64::MAX);
    let mut evaluator = Evaluator::new(&config.policy).with_down_grace_ms(grace_ms);
    let mut retries = tokio::task::JoinSet::new();
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
    let mut hold_check = tokio::time::interval(hold.check_period());
    hold_check.set_missed_tick_behavior(MissedTickBehavior::Delay);
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
                    publish_trigger(&js, &auditor, &trigger, &mut retries).await;
                }
                continue;
            }
            _ = hold_check.tick() => {
                for trigger in evaluator.flush_held(nova_runtime::now_ms()) {
                    publish_trigger(&js, &auditor, &trigger, &mut retries).await;
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
            publish_trigger(&js, &auditor, &trigger, &mut retries).await;
        }
    }
    let _ = subscription.unsubscribe().await;
    for trigger in evaluator.drain_held() {
        publish_trigger(&js, &auditor, &trigger, &mut retries).await;
    }
    // Triggers still being retried get a last moment, then are counted.
    let waited = tokio::time::timeout(Duration::from_secs(5), async {
        while retries.join_next().await.is_some() {}
    })
    .await;
    if waited.is_err() {
        let left = retries.len();
        metrics::counter!(names::GIVEN_UP, "stage" => "evaluator").increment(left as u64);
        tracing::error!(left, "stopping with triggers still unstored");
    }
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

/// How long a computed trigger is worth publishing while the broker keeps
/// refusing it (a stream without a leader, a timeout): after that a newer
/// evaluation of the same condition has long taken its place.
pub const TRIGGER_RELEVANCE: Duration = Duration::from_secs(600);

/// Triggers being retried at most at once; beyond, new ones wait inline.
const MAX_RETRYING: usize = 1024;

/// Publishes a trigger and its audit records. A computed trigger is never
/// dropped for a broker error: it is retried in the background with
/// back-off for [`TRIGGER_RELEVANCE`], so sample evaluation goes on
/// meanwhile (the ids make every retry harmless), and what is given up at
/// the end is counted (`nova_given_up_total{stage="evaluator"}`) and logged.
async fn publish_trigger(
    js: &async_nats::jetstream::Context,
    auditor: &Auditor,
    trigger: &Trigger,
    retries: &mut tokio::task::JoinSet<()>,
) {
    let Err(error) = emit(js, auditor, trigger).await else {
        return;
    };
    metrics::counter!(names::RETRIES, "stage" => "evaluator").increment(1);
    tracing::warn!(trigger = trigger.id, "not stored yet, will retry: {error}");
    while retries.try_join_next().is_some() {}
    while retries.len() >= MAX_RETRYING {
        retries.join_next().await;
    }
    let (js, auditor, trigger) = (js.clone(), auditor.clone(), trigger.clone());
    let retry = async move {
        let started = tokio::time::Instant::now();
        let mut backoff =
            nova_runtime::retry::Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
        loop {
            backoff.wait().await;
            match emit(&js, &auditor, &trigger).await {
                Ok(()) => return,
                Err(error) if started.elapsed() >= TRIGGER_RELEVANCE => {
                    metrics::counter!(names::GIVEN_UP, "stage" => "evaluator").increment(1);
                    tracing::error!(
                        trigger = trigger.id,
                        "given up after {} s: {error}",
                        started.elapsed().as_secs()
                    );
                    return;
                }
                Err(error) => {
                    metrics::counter!(names::RETRIES, "stage" => "evaluator").increment(1);
                    tracing::warn!(
                        trigger = trigger.id,
                        "still not stored, will retry: {error}"
                    );
                }
            }
        }
    };
    retries.spawn(tracing::Instrument::instrument(
        retry,
        tracing::Span::current(),
    ));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_triggers_are_checked_four_times_per_grace_within_bounds() {
        let ms = Duration::from_millis;
        assert_eq!(HoldBack::default().grace, ms(2_000));
        for (grace, period) in [(2_000, 500), (1_000, 250), (0, 50), (60_000, 500)] {
            let hold = HoldBack { grace: ms(grace) };
            assert_eq!(hold.check_period(), ms(period), "grace {grace} ms");
        }
    }
}
