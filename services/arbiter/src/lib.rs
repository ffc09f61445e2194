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
//!
//! A broker error at any step (no leader, a timeout, no responders) is not
//! the trigger's fault: it is naked with back-off and retried for as long as
//! it is relevant (`Config::trigger_relevance` after JetStream stored it),
//! never dead-lettered for it. At start, a recovery pass publishes any
//! stored decision whose command never reached `NOVA_COMMANDS`.
//!
//! During a rolling upgrade an arbiter may meet what a newer one wrote: a
//! trigger, a stored state or a capacity record of a newer version, or a
//! value it does not know where the decision depends on it (see
//! `nova_shared::arbitrate::beyond_this_version`). It neither decides nor
//! writes back such a state: it defers the trigger (a nak with
//! [`DEFER_DELAY`], so that a newer replica takes it), audits that once per
//! dedupe window (outcome `deferred`) and counts it (`nova_deferred_total`),
//! and never dead-letters it. What it can read but does not know (unknown
//! fields, an unknown trigger source) it keeps and writes back as it was.

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
use nova_shared::arbitrate::{self, ArbiterSettings, LastVerdict, Observed, TargetState};
use nova_shared::codec;
use nova_shared::ids;
use nova_shared::policy::{Policy, Target};
use nova_shared::subjects;
use nova_shared::wire::{
    AuditKind, AuditRecord, CAPACITY_VERB, CapacityAnswer, CapacityRecord, Command, ControlReply,
    ControlRequest, Direction, Outcome, RuleFiring, ScaleAction, Stage, TargetStatus, Trigger,
    TriggerSource, Version, VersionProbe,
};
use thiserror::Error;

/// Arbiter settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The policy.
    pub policy: Arc<Policy>,
    /// Durable consumer name shared by the replicas.
    pub consumer: String,
    /// How long after JetStream stored it a trigger is still worth
    /// deciding while the broker keeps failing; then it is given up
    /// (dead-lettered and counted as `nova_given_up_total`).
    pub trigger_relevance: Duration,
    /// How long a delivered trigger may stay unacked before redelivery.
    pub ack_wait: Duration,
}

impl Config {
    /// Defaults for `policy`.
    pub fn new(policy: Arc<Policy>) -> Self {
        Config {
            policy,
            consumer: ARBITER_CONSUMER.into(),
            trigger_relevance: Duration::from_secs(600),
            ack_wait: Duration::from_secs(30),
        }
    }
}

/// Deciding one trigger failed.
#[derive(Debug, Error)]
enum DecideError {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// A record of a newer version, or a value this arbiter does not know
    /// where the decision depends on it: left to a newer arbiter.
    #[error("left for a newer arbiter: {0}")]
    BeyondThisVersion(String),
}

impl DecideError {
    /// Whether another attempt may succeed: everything the broker says
    /// (a read, a write, a publish that failed or timed out, a stored state
    /// this version cannot read yet) but an encoding failure, which is a bug
    /// and would fail the same way again.
    fn is_transient(&self) -> bool {
        !matches!(
            self,
            DecideError::Kv(KvError::Encode { .. })
                | DecideError::Publish(PublishError::Encode { .. })
        )
    }
}

/// Longest pause between two attempts at a trigger.
const RETRY_CAP: Duration = Duration::from_secs(5);

/// How long a trigger this arbiter leaves to a newer one waits before it is
/// delivered again (to any replica: a newer one decides it).
pub const DEFER_DELAY: Duration = Duration::from_secs(5);

struct Arbiter {
    policy: Arc<Policy>,
    client: async_nats::Client,
    js: jetstream::Context,
    states: Store,
    capacities: Store,
    dead: DeadLetters,
    auditor: Auditor,
    relevance: Duration,
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
        relevance: config.trigger_relevance,
    };
    arbiter.recover_commands().await;
    let mut controls = Vec::new();
    for verb in CONTROL_VERBS {
        controls
            .push(setup::subscribe(&client, &subjects::control(verb), Some("nova-arbiter")).await?);
    }
    let mut controls = futures_util::stream::select_all(controls);
    let _ping = setup::ping(&client, Stage::Arbiter).await?;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            message = messages.next() => arbiter.handle(message).await,
            Some(request) = controls.next() => arbiter.control(request).await,
        }
    }
    tracing::info!("arbiter stopped");
    Ok(())
}

/// How long a decision waits for an actuator to read a never-seen capacity.
const CAPACITY_ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a status request waits for the same, per target without a record.
const STATUS_ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// Control verbs the arbiter answers: `nova.ctl.<verb>`.
pub const CONTROL_VERBS: [&str; 4] = ["status", "pause", "resume", "scale"];

impl Arbiter {
    /// Answers `nova.ctl.status`, `nova.ctl.pause`, `nova.ctl.resume` and `nova.ctl.scale`.
    async fn control(&self, request: async_nats::Message) {
        let verb = subjects::last_token(&request.subject).to_string();
        let Some(reply_to) = request.reply.clone() else {
            let reason = format!("{verb} request without a reply subject");
            return self
                .dead
                .send(&request.subject, reason, &request.payload)
                .await;
        };
        let parsed: Result<ControlRequest, _> = if request.payload.is_empty() {
            Ok(ControlRequest::default())
        } else {
            nova_runtime::decode(&request.payload, request.headers.as_ref())
        };
        let reply = match parsed {
            Err(error) => {
                let message = format!(
                    "not a control request: {}",
                    codec::excerpt(&error.to_string(), 300)
                );
                self.dead
                    .send(&request.subject, message.clone(), &request.payload)
                    .await;
                ControlReply {
                    ok: false,
                    message,
                    targets: vec![],
                }
            }
            Ok(parsed) => self.control_reply(&verb, parsed).await,
        };
        match codec::encode(&reply) {
            Ok(payload) => {
                if let Err(error) = self.client.publish(reply_to, payload.into()).await {
                    tracing::warn!(%error, "cannot answer a control request");
                }
            }
            Err(error) => tracing::error!(%error, "cannot encode a control reply"),
        }
    }

    async fn control_reply(&self, verb: &str, request: ControlRequest) -> ControlReply {
        let failed = |message: String| ControlReply {
            ok: false,
            message,
            targets: vec![],
        };
        let targets: Vec<&Target> = match &request.target {
            Some(name) => match self.policy.targets.get(name) {
                Some(target) => vec![target],
                None => {
                    let name = codec::excerpt(name, 64);
                    return failed(format!("no target {name:?} in the policy"));
                }
            },
            None if verb == "status" => self.policy.targets.values().collect(),
            None => return failed(format!("{verb} needs a target")),
        };
        let mut message = String::from("ok");
        if verb == "scale" {
            match self.operator_scale(targets[0], &request).await {
                Ok(submitted) => message = submitted,
                Err(error) => return failed(error),
            }
        } else if verb != "status" {
            let target = targets[0];
            let pause = verb == "pause";
            let (up, down) = match request.direction {
                Some(Direction::Up) => (true, false),
                Some(Direction::Down) => (false, true),
                _ => (true, true),
            };
            // A newer arbiter's state is not written back by this one.
            if let Some(why) = self.newer_state(&target.name).await {
                return failed(format!("{verb} of {} refused: {why}", target.name));
            }
            let changed = kv::modify(&self.states, &target.name, |state: Option<TargetState>| {
                let mut state = state.unwrap_or_default();
                if up {
                    state.paused_up = pause;
                }
                if down {
                    state.paused_down = pause;
                }
                state
            })
            .await;
            if let Err(error) = changed {
                return failed(format!("cannot change {}: {error}", target.name));
            }
            let what = match (up, down) {
                (true, true) => "scaling",
                (true, false) => "scale-up",
                _ => "scale-down",
            };
            let outcome = if pause { "paused" } else { "resumed" };
            message = format!(
                "{what} of {} {outcome} by an operator{}",
                target.name,
                request
                    .reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            );
            let record = AuditRecord::new(
                nova_runtime::unique_id("a-control"),
                nova_runtime::now_ms(),
                Stage::Arbiter,
                &target.name,
                AuditKind::Control,
                outcome,
                message.clone(),
            );
            if let Err(error) = self.auditor.record(&record).await {
                tracing::warn!(%error, "cannot audit a control action");
            }
        }
        let mut statuses = Vec::with_capacity(targets.len());
        for target in targets {
            match self.status(target).await {
                Ok(status) => statuses.push(status),
                Err(error) => return failed(format!("cannot read {}: {error}", target.name)),
            }
        }
        ControlReply {
            ok: true,
            message,
            targets: statuses,
        }
    }

    /// An operator's "set to N" enters as a trigger like any rule's, so it
    /// gets the same bounds, cooldowns and audit.
    async fn operator_scale(
        &self,
        target: &Target,
        request: &ControlRequest,
    ) -> Result<String, String> {
        let desired = request.desired.ok_or("scale needs a desired capacity")?;
        let reason = format!(
            "operator asked to set {} to {desired}{}",
            target.name,
            request
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
        let trigger = Trigger {
            v: Version::CURRENT,
            id: nova_runtime::unique_id("op"),
            ts: nova_runtime::now_ms(),
            target: target.name.clone(),
            source: TriggerSource::Operator,
            firings: vec![RuleFiring {
                rule: "operator".into(),
                direction: Direction::None,
                action: ScaleAction::Set(desired),
                observed: None,
                threshold: None,
                condition: String::new(),
                held_secs: 0,
                reason: reason.clone(),
            }],
        };
        publish::publish_once(
            &self.js,
            subjects::triggers(&target.name),
            &trigger.id,
            &trigger,
        )
        .await
        .map_err(|e| format!("cannot submit: {e}"))?;
        Ok(format!(
            "{reason}: submitted as trigger {}; the decision follows in the audit stream",
            trigger.id
        ))
    }

    async fn status(&self, target: &Target) -> Result<TargetStatus, KvError> {
        let state = kv::load::<TargetState>(&self.states, &target.name)
            .await?
            .map(|v| v.value)
            .unwrap_or_default();
        let capacity = kv::load::<CapacityRecord>(&self.capacities, &target.name)
            .await?
            .map(|v| v.value);
        // The record keeps the backend's last error; a target never read
        // has no record, so ask an actuator why.
        let backend_error = match &capacity {
            Some(record) => record.error.as_ref().map(|e| e.message.clone()),
            None => self
                .ask_capacity(&target.name, STATUS_ASK_TIMEOUT)
                .await
                .err(),
        };
        Ok(TargetStatus {
            backend_error,
            target: target.name.clone(),
            min: target.min,
            max: target.max,
            capacity,
            desired: state.desired,
            paused_up: state.paused_up,
            paused_down: state.paused_down,
            dry_run: target.dry_run,
            up_cooldown_until: state.up_cooldown_until,
            down_cooldown_until: state.down_cooldown_until,
            last_decision: state.last().map(|l| l.decision.reason.clone()),
        })
    }

    async fn handle(&self, message: jetstream::Message) {
        let subject = message.subject.to_string();
        let trigger: Trigger =
            match nova_runtime::decode(&message.payload, message.headers.as_ref()) {
                Ok(trigger) => trigger,
                Err(error) => {
                    // A newer version's trigger that this one cannot decode
                    // waits for a newer arbiter; anything else is bad input.
                    if let Ok(VersionProbe { v }) =
                        nova_runtime::decode(&message.payload, message.headers.as_ref())
                        && !v.is_understood()
                    {
                        let id = message
                            .headers
                            .as_ref()
                            .and_then(|h| h.get("Nats-Msg-Id"))
                            .map_or_else(|| "unknown".to_string(), |id| id.to_string());
                        let why = format!(
                            "the trigger is of version {v}, newer than this arbiter's {}, \
                             and cannot be read by it: {error}",
                            Version::CURRENT
                        );
                        let target = subjects::last_token(&subject).to_string();
                        let now = nova_runtime::now_ms();
                        return self.defer(&message, &target, &id, now, &why).await;
                    }
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
            Err(error) => self.retry_or_give_up(&message, &trigger, error).await,
        }
    }

    /// A trigger that could not be decided. A broker error (no leader, a
    /// timeout, no responders) is no fault of the trigger: it is retried
    /// with back-off for as long as the trigger is relevant, measured from
    /// when JetStream stored it, and only then given up (dead-lettered and
    /// counted). An error that can never succeed is dead-lettered at once.
    async fn retry_or_give_up(
        &self,
        message: &jetstream::Message,
        trigger: &Trigger,
        error: DecideError,
    ) {
        if let DecideError::BeyondThisVersion(why) = &error {
            let (target, id) = (&trigger.target, &trigger.id);
            return self.defer(message, target, id, trigger.ts, why).await;
        }
        let info = message.info().ok();
        let attempts = info.as_ref().map_or(1, |info| info.delivered);
        metrics::counter!(names::RETRIES, "stage" => "arbiter").increment(1);
        if !error.is_transient() {
            let reason = format!("cannot be decided: {error}");
            return self.dead.reject(message, reason).await;
        }
        let stored_ms = info.map_or(nova_runtime::now_ms(), |info| {
            i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
        });
        let age_ms = nova_runtime::now_ms().saturating_sub(stored_ms);
        if age_ms > nova_shared::units::secs_to_ms(self.relevance.as_secs()) {
            metrics::counter!(names::GIVEN_UP, "stage" => "arbiter").increment(1);
            let reason = format!(
                "given up after {attempts} attempts over {} s, no longer relevant \
                 (trigger_relevance {} s): {error}",
                age_ms / 1000,
                self.relevance.as_secs()
            );
            return self.dead.reject(message, reason).await;
        }
        tracing::warn!(
            trigger = trigger.id,
            attempts,
            "broker error, will retry trigger: {error}"
        );
        let delay = Duration::from_millis(100 * 2u64.pow(attempts.clamp(1, 6) as u32));
        nova_runtime::ack(message, AckKind::Nak(Some(delay.min(RETRY_CAP)))).await;
    }

    /// Leaves a trigger to a newer arbiter: audited (once per dedupe window:
    /// the record's id is the trigger's), counted, and delivered again after
    /// [`DEFER_DELAY`]; never dead-lettered, however long it waits.
    async fn defer(
        &self,
        message: &jetstream::Message,
        target: &str,
        trigger_id: &str,
        ts: i64,
        why: &str,
    ) {
        metrics::counter!(names::DEFERRED, "stage" => "arbiter").increment(1);
        tracing::warn!(
            trigger = trigger_id,
            target,
            "trigger deferred to a newer arbiter: {why}"
        );
        let mut record = AuditRecord::new(
            ids::derive("a", &[trigger_id.as_bytes(), b"deferred"]),
            ts,
            Stage::Arbiter,
            target,
            AuditKind::Decision,
            Outcome::Deferred.as_str(),
            format!(
                "trigger {trigger_id} not decided by this arbiter ({}): {why}; \
                 it is delivered again until an arbiter that understands it decides it",
                Version::CURRENT
            ),
        );
        record.trigger_id = Some(trigger_id.to_string());
        if let Err(error) = self.auditor.record(&record).await {
            tracing::warn!(%error, "cannot audit a deferred trigger");
        }
        nova_runtime::ack(message, AckKind::Nak(Some(DEFER_DELAY))).await;
    }

    /// Why the stored state of `target` must be left alone, when it is of a
    /// newer version (read as its version only, so that a state this build
    /// cannot decode at all is told apart from a corrupt one).
    async fn newer_state(&self, target: &str) -> Option<String> {
        match kv::load::<VersionProbe>(&self.states, target).await {
            Ok(Some(stored)) if !stored.value.v.is_understood() => Some(format!(
                "the stored state of {target} is of version {}, newer than this arbiter's {}",
                stored.value.v,
                Version::CURRENT
            )),
            _ => None,
        }
    }

    /// Read, decide, compare-and-set, publish; again from the top on a conflict.
    async fn decide(&self, target: &Target, trigger: &Trigger) -> Result<(), DecideError> {
        let settings = ArbiterSettings::for_target(target, self.policy.evaluation.refire_secs);
        loop {
            let stored = match kv::load::<TargetState>(&self.states, &target.name).await {
                Ok(stored) => stored,
                Err(error @ KvError::Decode { .. }) => {
                    return Err(match self.newer_state(&target.name).await {
                        Some(why) => DecideError::BeyondThisVersion(why),
                        None => error.into(),
                    });
                }
                Err(error) => return Err(error.into()),
            };
            let capacity_stored = kv::load::<CapacityRecord>(&self.capacities, &target.name)
                .await?
                .map(|v| v.value);
            // Never decide on, nor write back, what this build cannot fully read.
            if let Some(why) = arbitrate::beyond_this_version(
                stored.as_ref().map(|s| &s.value),
                capacity_stored.as_ref(),
                trigger,
            ) {
                return Err(DecideError::BeyondThisVersion(why));
            }
            let (state, revision) =
                stored.map_or((TargetState::default(), 0), |v| (v.value, v.revision));
            let mut capacity = capacity_stored;
            let mut unreadable = None;
            if capacity.is_none() && state.desired.is_none() {
                match self.ask_capacity(&target.name, CAPACITY_ASK_TIMEOUT).await {
                    Ok(record) => capacity = Some(record),
                    Err(error) => unreadable = Some(error),
                }
            }
            let observed = Observed {
                record: capacity.as_ref(),
                unreadable: unreadable.as_deref(),
            };
            let verdict = arbitrate::decide(target, settings, &state, observed, trigger);
            let Some(next) = verdict.state else {
                metrics::counter!(names::DECISIONS, "outcome" => Outcome::Duplicate.as_str())
                    .increment(1);
                if let Some(last) = state.replay(&verdict.decision.id) {
                    tracing::info!(
                        decision = last.decision.id,
                        "re-publishing a decision after redelivery"
                    );
                    self.publish(trigger, last).await?;
                }
                return Ok(());
            };
            match kv::save(&self.states, &target.name, &next, revision).await {
                Ok(_) => {
                    // The stored state holds this verdict: publish exactly
                    // what a redelivery would re-publish.
                    let stored = next.last().expect("decide stores its verdict");
                    return Ok(self.publish(trigger, stored).await?);
                }
                Err(KvError::Conflict { .. }) => {
                    metrics::counter!(names::KV_CONFLICTS, "bucket" => ARBITER_BUCKET).increment(1);
                }
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// Publishes every stored decision whose command never reached
    /// `NOVA_COMMANDS` (the arbiter stored it, then the stream refused the
    /// command and the trigger's redelivery never came): a recovery pass at
    /// start, beside the redelivery path that repairs the same while the
    /// trigger is still in the stream. The command's id is its decision id,
    /// so a command published meanwhile is not doubled.
    async fn recover_commands(&self) {
        let Ok(commands) = self
            .js
            .get_stream(nova_runtime::nats::COMMANDS_STREAM)
            .await
        else {
            tracing::warn!("no command stream to check at start; redeliveries will repair");
            return;
        };
        for target in self.policy.targets.values() {
            let state = match kv::load::<TargetState>(&self.states, &target.name).await {
                Ok(Some(stored)) => stored.value,
                Ok(None) => continue,
                Err(error) => {
                    tracing::warn!(
                        target = target.name,
                        "cannot check for unsent commands: {error}"
                    );
                    continue;
                }
            };
            if !state.v.is_understood() {
                // A newer arbiter's state: a newer arbiter recovers it.
                continue;
            }
            let Some(decided) = state.last_command() else {
                continue;
            };
            let subject = subjects::commands(&target.name);
            let sent_seq = match commands.get_last_raw_message_by_subject(&subject).await {
                Ok(message) => codec::decode::<Command>(&message.payload, codec::Encoding::MsgPack)
                    .map_or(0, |c| c.seq),
                Err(error)
                    if error.kind()
                        == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
                {
                    0
                }
                Err(error) => {
                    tracing::warn!(target = target.name, "cannot check for unsent commands: {error}");
                    continue;
                }
            };
            if sent_seq >= decided.seq {
                continue;
            }
            tracing::warn!(
                target = target.name,
                seq = decided.seq,
                "a decided command never reached the command stream; publishing it now"
            );
            if let Err(error) =
                publish::publish_once(&self.js, subject, &decided.decision_id, decided).await
            {
                tracing::warn!(
                    target = target.name,
                    "cannot publish the unsent command: {error}"
                );
            }
        }
    }

    /// Asks an actuator to read a target's capacity now (`nova.ctl.capacity`);
    /// the error says why there is none: no actuator answered in time, or
    /// the backend cannot be read (the actuator's one-line reason).
    async fn ask_capacity(&self, target: &str, limit: Duration) -> Result<CapacityRecord, String> {
        let subject = subjects::control(CAPACITY_VERB);
        let request = self.client.request(subject, target.to_string().into());
        let reply = match tokio::time::timeout(limit, request).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(error)) => {
                tracing::warn!(%error, target, "no actuator answered a capacity request");
                return Err(format!("no actuator answered: {error}"));
            }
            Err(_) => {
                tracing::warn!(target, "capacity request timed out");
                return Err(format!("no actuator answered within {} s", limit.as_secs()));
            }
        };
        match nova_shared::codec::decode(&reply.payload, nova_shared::codec::Encoding::MsgPack) {
            Ok(CapacityAnswer::Capacity(record)) => Ok(record),
            Ok(CapacityAnswer::Error(error)) => {
                tracing::warn!(target, "actuator cannot read capacity: {error}");
                Err(error)
            }
            Err(error) => {
                tracing::warn!(target, %error, "unreadable capacity answer");
                Err(format!("unreadable answer from the actuator: {error}"))
            }
        }
    }

    async fn publish(&self, trigger: &Trigger, verdict: &LastVerdict) -> Result<(), PublishError> {
        let decision = &verdict.decision;
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
        if let Some(flapping) = &verdict.flapping {
            let mut note = AuditRecord::new(
                ids::derive("a", &[decision.id.as_bytes(), b"flapping"]),
                decision.ts,
                Stage::Arbiter,
                &decision.target,
                AuditKind::Decision,
                "flapping",
                flapping.clone(),
            );
            note.rule = decision.rule.clone();
            note.decision_id = Some(decision.id.clone());
            self.auditor.record(&note).await?;
        }
        // The command goes out after its decision is on record, so the audit
        // stream always reads decision, executing, result. A crash in between
        // is repaired on redelivery from the stored verdict (both are
        // de-duplicated by id).
        if let Some(command) = &verdict.command {
            publish::publish_once(
                &self.js,
                subjects::commands(&command.target),
                &command.decision_id,
                command,
            )
            .await?;
        }
        metrics::counter!(names::DECISIONS, "outcome" => decision.outcome.label()).increment(1);
        tracing::info!(
            target = decision.target,
            outcome = decision.outcome.as_str(),
            reason = decision.reason,
            "decision"
        );
        Ok(())
    }
}
