//! Arbiter: the only place that decides.
//!
//! Consumes stream `NOVA_TRIGGERS` through the durable consumer `arbiter`
//! (replicas share it, so each trigger goes to one of them), and for each
//! trigger:
//! 1. reads the target's [`TargetState`] from KV `nova_arbiter` and its
//!    observed capacity from KV `nova_capacity`;
//! 2. decides with `nova_shared::arbitrate::decide` (cooldowns, bounds,
//!    up-beats-down, on the trigger's event time);
//! 3. stores the new state by compare-and-set on the revision it read; on
//!    a conflict (another replica decided meanwhile) it starts again at 1;
//! 4. publishes the command (if any) to `NOVA_COMMANDS` with the decision id
//!    as `Nats-Msg-Id`, and the decision to the audit stream;
//! 5. acks the trigger.
//!
//! A crash between 3 and 5 redelivers the trigger; the stored state knows it
//! was decided and re-publishes the same decision and command, which
//! JetStream de-duplicates. Nothing is decided twice, nothing is lost.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, kv::Store};
use futures_util::StreamExt;
use nova_runtime::dead::DeadLetters;
use nova_runtime::kv::{self, KvError};
use nova_runtime::nats::{ARBITER_BUCKET, ARBITER_CONSUMER, CAPACITY_BUCKET, TRIGGERS_STREAM};
use nova_runtime::publish::{self, Auditor, PublishError};
use nova_runtime::setup::{self, SetupError};
use nova_runtime::telemetry::names;
use nova_shared::arbitrate::{self, ArbiterSettings, TargetState};
use nova_shared::ids;
use nova_shared::policy::{Policy, Target};
use nova_shared::subjects;
use nova_shared::wire::{
    AuditKind, AuditRecord, CAPACITY_VERB, CapacityAnswer, CapacityRecord, Command, Decision,
    Outcome, Stage, Trigger,
};
use thiserror::Error;

/// Arbiter settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The policy.
    pub policy: Arc<Policy>,
    /// Durable consumer name shared by the replicas.
    pub consumer: String,
    /// Deliveries of one trigger before it is dead-lettered.
    pub max_attempts: i64,
    /// How long a delivered trigger may stay unacked before redelivery.
    pub ack_wait: Duration,
}

impl Config {
    /// Defaults for `policy`.
    pub fn new(policy: Arc<Policy>) -> Self {
        Config {
            policy,
            consumer: ARBITER_CONSUMER.into(),
            max_attempts: 5,
            ack_wait: Duration::from_secs(30),
        }
    }
}

/// Deciding one trigger failed; it will be retried.
#[derive(Debug, Error)]
enum DecideError {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

struct Arbiter {
    policy: Arc<Policy>,
    client: async_nats::Client,
    js: jetstream::Context,
    states: Store,
    capacities: Store,
    dead: DeadLetters,
    auditor: Auditor,
    max_attempts: i64,
}

/// Runs until `shutdown` completes; the trigger in hand is finished first.
pub async fn run(
    config: Config,
    client: async_nats::Client,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SetupError> {
    let span = tracing::info_span!("arbiter");
    let _enter = span.enter();
    let js = jetstream::new(client.clone());
    let mut messages =
        setup::durable_messages(&js, TRIGGERS_STREAM, &config.consumer, config.ack_wait).await?;
    let arbiter = Arbiter {
        policy: config.policy.clone(),
        client: client.clone(),
        states: setup::bucket(&js, ARBITER_BUCKET).await?,
        capacities: setup::bucket(&js, CAPACITY_BUCKET).await?,
        dead: DeadLetters::new(js.clone(), Stage::Arbiter),
        auditor: Auditor::new(js.clone(), Stage::Arbiter),
        js,
        max_attempts: config.max_attempts,
    };
    let _ping = setup::ping(&client, Stage::Arbiter).await?;
    tokio::pin!(shutdown);
    loop {
        let message = tokio::select! {
            _ = &mut shutdown => break,
            message = messages.next() => message,
        };
        match message {
            Some(Ok(message)) => arbiter.handle(message).await,
            Some(Err(error)) => tracing::warn!(%error, "trigger stream hiccup"),
            None => break,
        }
    }
    tracing::info!("arbiter stopped");
    Ok(())
}

impl Arbiter {
    async fn handle(&self, message: jetstream::Message) {
        let subject = message.subject.to_string();
        let trigger: Trigger =
            match nova_runtime::decode(&message.payload, message.headers.as_ref()) {
                Ok(trigger) => trigger,
                Err(error) => {
                    self.dead
                        .reject(&message, format!("not a trigger: {error}"))
                        .await;
                    return;
                }
            };
        if trigger.target != subjects::last_token(&subject) {
            let reason = format!(
                "trigger for target {:?} arrived on {subject}",
                trigger.target
            );
            self.dead.reject(&message, reason).await;
            return;
        }
        let Some(target) = self.policy.targets.get(&trigger.target) else {
            let reason = format!("no target {:?} in the policy", trigger.target);
            self.dead.reject(&message, reason).await;
            return;
        };
        match self.decide(target, &trigger).await {
            Ok(()) => nova_runtime::ack(&message, AckKind::Ack).await,
            Err(error) => {
                let attempts = message.info().map_or(1, |info| info.delivered);
                metrics::counter!(names::RETRIES, "stage" => "arbiter").increment(1);
                if attempts >= self.max_attempts {
                    let reason = format!("gave up after {attempts} attempts: {error}");
                    self.dead.reject(&message, reason).await;
                } else {
                    tracing::warn!(%error, trigger = trigger.id, attempts, "will retry trigger");
                    let delay = Duration::from_millis(200 * 2u64.pow(attempts.clamp(1, 8) as u32));
                    nova_runtime::ack(&message, AckKind::Nak(Some(delay))).await;
                }
            }
        }
    }

    /// Read, decide, compare-and-set, publish; again from the top on a conflict.
    async fn decide(&self, target: &Target, trigger: &Trigger) -> Result<(), DecideError> {
        let settings = ArbiterSettings::for_target(target, self.policy.evaluation.refire_secs);
        loop {
            let stored = kv::load::<TargetState>(&self.states, &target.name).await?;
            let (state, revision) =
                stored.map_or((TargetState::default(), 0), |v| (v.value, v.revision));
            let mut capacity = kv::load::<CapacityRecord>(&self.capacities, &target.name)
                .await?
                .map(|v| v.value);
            if capacity.is_none() && state.desired.is_none() {
                capacity = self.ask_capacity(&target.name).await;
            }
            let verdict = arbitrate::decide(target, settings, &state, capacity.as_ref(), trigger);
            let Some(next) = verdict.state else {
                metrics::counter!(names::DECISIONS, "outcome" => Outcome::Duplicate.as_str())
                    .increment(1);
                if let Some(last) = state.replay(&verdict.decision.id) {
                    tracing::info!(
                        decision = last.decision.id,
                        "re-publishing a decision after redelivery"
                    );
                    self.publish(trigger, &last.decision, last.command.as_ref())
                        .await?;
                }
                return Ok(());
            };
            match kv::save(&self.states, &target.name, &next, revision).await {
                Ok(_) => {
                    return Ok(self
                        .publish(trigger, &verdict.decision, verdict.command.as_ref())
                        .await?);
                }
                Err(KvError::Conflict { .. }) => {
                    metrics::counter!(names::KV_CONFLICTS, "bucket" => ARBITER_BUCKET).increment(1);
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Asks an actuator to read a target's capacity now (`nova.ctl.capacity`);
    /// `None` if none answers in time or the backend cannot say.
    async fn ask_capacity(&self, target: &str) -> Option<CapacityRecord> {
        let subject = subjects::control(CAPACITY_VERB);
        let request = self.client.request(subject, target.to_string().into());
        let reply = match tokio::time::timeout(Duration::from_secs(10), request).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => {
                tracing::warn!(%error, target, "no actuator answered a capacity request");
                return None;
            }
            Err(_) => {
                tracing::warn!(target, "capacity request timed out");
                return None;
            }
        };
        match nova_shared::codec::decode(&reply.payload, nova_shared::codec::Encoding::MsgPack) {
            Ok(CapacityAnswer::Capacity(record)) => Some(record),
            Ok(CapacityAnswer::Error(error)) => {
                tracing::warn!(target, %error, "actuator cannot read capacity");
                None
            }
            Err(error) => {
                tracing::warn!(target, %error, "unreadable capacity answer");
                None
            }
        }
    }

    async fn publish(
        &self,
        trigger: &Trigger,
        decision: &Decision,
        command: Option<&Command>,
    ) -> Result<(), PublishError> {
        if let Some(command) = command {
            publish::publish_once(
                &self.js,
                subjects::commands(&command.target),
                &command.decision_id,
                command,
            )
            .await?;
        }
        let mut record = AuditRecord::new(
            ids::derive("a", &[decision.id.as_bytes()]),
            decision.ts,
            Stage::Arbiter,
            &decision.target,
            AuditKind::Decision,
            decision.outcome.as_str(),
            decision.reason.clone(),
        );
        let firing = trigger
            .firings
            .iter()
            .find(|f| Some(&f.rule) == decision.rule.as_ref());
        record.rule = decision.rule.clone();
        record.observed = firing.and_then(|f| f.observed);
        record.threshold = firing.and_then(|f| f.threshold);
        record.from = decision.from;
        record.to = decision.to;
        record.trigger_id = Some(decision.trigger_id.clone());
        record.decision_id = Some(decision.id.clone());
        self.auditor.record(&record).await?;
        metrics::counter!(names::DECISIONS, "outcome" => decision.outcome.as_str()).increment(1);
        tracing::info!(
            target = decision.target,
            outcome = decision.outcome.as_str(),
            reason = decision.reason,
            "decision"
        );
        Ok(())
    }
}
