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
//! `emergency down` asks, on `nova.ctl.load.<target>`, whether the target's
//! load is below its scale-down thresholds: the replicas that own the target
//! answer with each scale-down condition read against the latest samples.
//!
//! Triggers leave through [`outbox`]: one queue per target, published in
//! order and retried while the broker is away, so the loop never waits for
//! JetStream and a computed trigger is not lost to a leader election.
//!
//! Replicas: every replica may see every sample (plain subscription); they
//! compute the same triggers with the same ids, and JetStream keeps one.
//! To spread the work, run replicas with `--partition K/N`: each evaluates
//! only the targets it owns (`Partition`), so no two partitions fire for one
//! target; run two replicas of each partition for availability.
//!
//! Every trigger carries the revision of the policy it was evaluated with
//! (`policy_revision`). A reloaded policy is taken up between two messages
//! (`Evaluator::reload`): triggers held back under the old one are
//! published first, with the old revision; unchanged rules keep their holds,
//! new and changed ones start afresh.

use std::time::Duration;

use futures_util::StreamExt;
use nova_runtime::dead::DeadLetters;
use nova_runtime::nats::CAPACITY_BUCKET;
use nova_runtime::publish::Auditor;
use nova_runtime::reload::LivePolicy;
use nova_runtime::setup::{self, SetupError};
use nova_runtime::telemetry::names;
use nova_shared::codec::{self, Encoding};
use nova_shared::evaluate::{DEFAULT_DOWN_GRACE_MS, Evaluator, Partition};
use nova_shared::fallback::SilenceWatch;
use nova_shared::policy::{Policy, Revised};
use nova_shared::subjects;
use nova_shared::wire::{CapacityRecord, SampleBatch, Stage, Trigger};
use tokio::time::MissedTickBehavior;

pub mod outbox;

/// Answers a load request for `target` with its scale-down conditions read
/// now ([`Evaluator::scale_down_readings`]); a target not in the policy is
/// an empty answer with no readings (the asker says which).
async fn answer_load(
    client: &async_nats::Client,
    evaluator: &Evaluator,
    target: &str,
    reply: Option<async_nats::Subject>,
) {
    let Some(reply) = reply else {
        return;
    };
    let answer = nova_shared::wire::LoadReply {
        target: target.to_string(),
        readings: evaluator.scale_down_readings(target).unwrap_or_default(),
    };
    match codec::encode(&answer) {
        Ok(payload) => {
            if let Err(error) = client.publish(reply, payload.into()).await {
                tracing::warn!(%error, target, "cannot answer a load request");
            }
        }
        Err(error) => tracing::error!(%error, "cannot encode a load answer"),
    }
}

pub use outbox::{Outbox, TRIGGER_RELEVANCE};

/// Evaluator settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The policy, and the ones that replace it.
    pub policy: LivePolicy,
    /// The targets this replica evaluates (all, by default).
    pub partition: Partition,
}

impl Config {
    /// Every target of `policy`.
    pub fn new(policy: impl Into<LivePolicy>) -> Self {
        Config {
            policy: policy.into(),
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
    // Instrumented, not entered: a span guard held across awaits would
    // mark whatever else its thread runs as the evaluator's.
    tracing::Instrument::instrument(
        serve(config, hold, client, shutdown),
        tracing::info_span!("evaluator"),
    )
    .await
}

async fn serve(
    config: Config,
    hold: HoldBack,
    client: async_nats::Client,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SetupError> {
    let mut subscription = setup::subscribe(&client, subjects::SAMPLES_ALL, None).await?;
    // Every replica hears load requests; those that own the target answer
    // (the same answer, from the same samples), the others stay silent.
    let mut load_requests = setup::subscribe(&client, subjects::LOAD_ALL, None).await?;
    let js = nova_runtime::nats::jetstream(&client);
    let stage = Stage::Evaluator;
    let dead = DeadLetters::new(js.clone(), stage.clone());
    let auditor = Auditor::new(js.clone(), stage.clone());
    let grace_ms = u64::try_from(hold.grace.as_millis()).unwrap_or(u64::MAX);
    let mut live = config.policy;
    let Revised {
        policy,
        mut revision,
    } = live.current();
    let mut evaluator = Evaluator::new(&policy).with_down_grace_ms(grace_ms);
    let mut outbox = Outbox::new(js.clone(), auditor);
    let partition = config.partition;
    let mut silence = SilenceWatch::new(&policy, nova_runtime::now_ms());
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
    let mut silence_check = tokio::time::interval(fallback_check_period(&policy));
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
            next = live.changed() => {
                // Held under the old rules: out first, under the old revision.
                for trigger in evaluator.reload(&next.policy) {
                    outbox.send(stamped(trigger, &revision)).await;
                }
                silence.reload(&next.policy, nova_runtime::now_ms());
                silence.retain(|target| partition.owns(target));
                silence_check = tokio::time::interval(fallback_check_period(&next.policy));
                tracing::info!(from = revision, to = next.revision, "evaluating with the reloaded policy");
                revision = next.revision;
                continue;
            }
            _ = silence_check.tick() => {
                for trigger in silence.due(nova_runtime::now_ms()) {
                    outbox.send(stamped(trigger, &revision)).await;
                }
                continue;
            }
            Some(request) = load_requests.next() => {
                let target = subjects::last_token(&request.subject).to_string();
                if partition.owns(&target) {
                    answer_load(&client, &evaluator, &target, request.reply).await;
                }
                continue;
            }
            _ = hold_check.tick() => {
                for trigger in evaluator.flush_held(nova_runtime::now_ms()) {
                    outbox.send(stamped(trigger, &revision)).await;
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
            outbox.send(stamped(trigger, &revision)).await;
        }
    }
    let _ = subscription.unsubscribe().await;
    for trigger in evaluator.drain_held() {
        outbox.send(stamped(trigger, &revision)).await;
    }
    // Triggers still unstored get a last moment, then are counted.
    let left = outbox.close(Duration::from_secs(5)).await;
    if left > 0 {
        tracing::error!(left, "stopping with triggers still unstored");
    }
    let _ = client.flush().await;
    tracing::info!("evaluator stopped");
    Ok(())
}

/// `trigger`, naming the revision of the policy it was evaluated with.
fn stamped(mut trigger: Trigger, revision: &str) -> Trigger {
    trigger.policy_revision = Some(revision.to_string());
    trigger
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
