//! Arbiter: the only place that decides.
//!
//! Consumes stream `NOVA_TRIGGERS` through the durable consumer `arbiter`
//! (replicas share it, so each trigger goes to one of them), and for each
//! trigger:
//! 1. reads the target's [`TargetState`] from KV `nova_arbiter` and its
//!    observed capacity from KV `nova_capacity`;
//! 2. decides with `nova_shared::arbitrate::decide_at` (cooldowns, bounds,
//!    up-beats-down): a rule trigger on its event time, an operator or
//!    fallback trigger on this process's wall clock;
//! 3. stores the new state by compare-and-set on the revision it read; on
//!    a conflict (another replica decided meanwhile) it starts again at 1,
//!    up to 16 times, then naks the trigger for a later delivery;
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
//! Control requests (`nova.ctl.arbiter`, and `nova.ctl.<verb>` for the
//! verbs of [`CONTROL_VERBS`]) are answered on a task of their own, up to
//! 32 at once, so a `status` never waits behind a trigger in hand; each is
//! answered within [`CONTROL_DEADLINE`], with an error reply if its work
//! did not finish in time.
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
//!
//! The policy may be reloaded while it runs: each trigger and control
//! request is decided with the policy in force when it is taken, and each
//! decision names that policy's revision (`policy_revision`). A rule
//! trigger naming a target or rule this policy lacks is never decided with
//! defaults (`nova_shared::arbitrate::check_known`): made with another
//! revision, it is deferred like a newer version's (a replica mid-rollout
//! leaves it to one that has the rule), until it is no longer relevant;
//! made with this revision, or with none, it is dead-lettered.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, kv::Store};
use futures_util::StreamExt;
use nova_runtime::dead::DeadLetters;
use nova_runtime::kv::{self, KvError, KvErrorKind};
use nova_runtime::nats::{ARBITER_BUCKET, ARBITER_CONSUMER, CAPACITY_BUCKET, TRIGGERS_STREAM};
use nova_runtime::publish::{self, Auditor, PublishError};
use nova_runtime::reload::LivePolicy;
use nova_runtime::setup::{self, SetupError};
use nova_runtime::telemetry::names;
use nova_shared::arbitrate::{self, ArbiterSettings, LastVerdict, Observed, TargetState, Unknown};
use nova_shared::codec;
use nova_shared::emergency;
use nova_shared::ids;
use nova_shared::policy::{Backend, Policy, Revised, Target};
use nova_shared::subjects;
use nova_shared::wire::{
    AuditKind, AuditRecord, CAPACITY_VERB, CapacityAnswer, CapacityRecord, Command, ControlReply,
    ControlRequest, Direction, DirectionRequest, DrainRequest, EmergencyOp, EmergencyRequest,
    LoadReading, LoadReply, Outcome, PromoteRequest, RuleFiring, ScaleAction, ScaleRequest, Stage,
    TargetStatus, Trigger, TriggerSource, Version, VersionProbe,
};
use thiserror::Error;
use tracing::Instrument;

/// Arbiter settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The policy, and the ones that replace it.
    pub policy: LivePolicy,
    /// Durable consumer name shared by the replicas.
    pub consumer: String,
    /// How long after JetStream stored it a trigger is still worth
    /// deciding while the broker keeps failing; then it is given up
    /// (dead-lettered and counted as `nova_given_up_total`).
    pub trigger_relevance: Duration,
}

impl Config {
    /// Defaults for `policy`.
    pub fn new(policy: impl Into<LivePolicy>) -> Self {
        Config {
            policy: policy.into(),
            consumer: ARBITER_CONSUMER.into(),
            trigger_relevance: Duration::from_secs(600),
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
    /// Every compare-and-set of the target's state lost to another writer,
    /// [`MAX_CONFLICTS`] times in a row.
    #[error(
        "the state of {target} changed under this arbiter {MAX_CONFLICTS} times in a row \
         (other replicas deciding it); trying again after a pause"
    )]
    Contended {
        /// The target.
        target: String,
    },
}

impl DecideError {
    /// Whether another attempt may succeed: everything the broker says
    /// (a read, a write, a publish that failed or timed out, a stored state
    /// this version cannot read yet), as the KV error's kind tells, but an
    /// encoding failure, which is a bug and would fail the same way again.
    fn is_transient(&self) -> bool {
        match self {
            DecideError::Kv(error) => error.is_retryable(),
            DecideError::Publish(PublishError::Encode { .. }) => false,
            DecideError::Publish(_) => true,
            // Handled before (deferred, never dead-lettered); a newer
            // arbiter will decide it.
            DecideError::BeyondThisVersion(_) => true,
            // Other replicas made progress; this trigger's turn comes.
            DecideError::Contended { .. } => true,
        }
    }
}

/// The pause before a trigger that met a broker error is delivered again.
/// Short, because a broker error lasts as long as a leader election
/// (seconds), and results must resume within 5 s of quorum returning: with
/// back-off up to 5 s the cluster chaos test saw them resume after 5.6 s.
/// The same for every attempt, so that redeliveries come back in the order
/// the triggers failed: with a growing back-off the oldest triggers, which
/// had failed most often, came back last and were `superseded` by newer
/// ones. An attempt costs one KV read.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Lost compare-and-sets of one target's state in one attempt before the
/// trigger is nakked and delivered again later. Each loss means another
/// replica stored a decision, so the loop always makes progress; the bound
/// keeps one trigger from holding this replica's loop while many replicas
/// decide a hot target.
const MAX_CONFLICTS: u32 = 16;

/// How long a trigger this arbiter leaves to a newer one waits before it is
/// delivered again (to any replica: a newer one decides it).
pub const DEFER_DELAY: Duration = Duration::from_secs(5);

struct Arbiter {
    policy: LivePolicy,
    client: async_nats::Client,
    js: jetstream::Context,
    states: Store,
    capacities: Store,
    dead: DeadLetters,
    auditor: Auditor,
    relevance: Duration,
    /// Per target, the latest verdict this process published.
    sent: std::sync::Mutex<std::collections::HashMap<String, String>>,
}

/// Runs until `shutdown` completes; the trigger in hand is finished first.
pub async fn run(
    config: Config,
    client: async_nats::Client,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SetupError> {
    // Instrumented, not entered: a span guard held across awaits would
    // mark whatever else its thread runs as the arbiter's.
    tracing::Instrument::instrument(
        serve(config, client, shutdown),
        tracing::info_span!("arbiter"),
    )
    .await
}

async fn serve(
    config: Config,
    client: async_nats::Client,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SetupError> {
    let js = nova_runtime::nats::jetstream(&client);
    // The consumer's ack wait (how soon a dead replica's trigger goes to
    // another) is set by `novactl provision --arbiter-ack-wait-secs`; this
    // arbiter's logic works with any.
    let messages = setup::durable_messages(&js, TRIGGERS_STREAM, &config.consumer, None).await?;
    tracing::info!(
        consumer = %config.consumer,
        ack_wait_secs = messages.ack_wait().as_secs_f64(),
        "consuming triggers"
    );
    let mut messages = messages;
    let arbiter = Arc::new(Arbiter {
        policy: config.policy.clone(),
        client: client.clone(),
        states: setup::bucket(&js, ARBITER_BUCKET).await?,
        capacities: setup::bucket(&js, CAPACITY_BUCKET).await?,
        dead: DeadLetters::new(js.clone(), Stage::Arbiter),
        auditor: Auditor::new(js.clone(), Stage::Arbiter),
        js,
        relevance: config.trigger_relevance,
        sent: Default::default(),
    });
    arbiter.recover_commands().await;
    let mut controls = Vec::new();
    let legacy = CONTROL_VERBS.iter().map(|verb| subjects::control(verb));
    for subject in std::iter::once(subjects::ARBITER_CONTROL.to_string()).chain(legacy) {
        controls.push(setup::subscribe(&client, &subject, Some("nova-arbiter")).await?);
    }
    let controls = futures_util::stream::select_all(controls);
    // Control requests on a task of their own: a status never waits
    // behind a trigger in hand (a capacity read may take 10 s).
    let (stop_controls, stopped) = tokio::sync::watch::channel(false);
    let control_task = tokio::spawn(
        serve_control(arbiter.clone(), controls, stopped)
            .instrument(tracing::info_span!("arbiter-control")),
    );
    let _ping = setup::ping(&client, Stage::Arbiter).await?;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            // A stop goes first: with a redelivered trigger always ready, a
            // fair choice could take another one (a capacity read of up to
            // 10 s) before it, again and again.
            biased;
            _ = &mut shutdown => break,
            message = messages.next() => arbiter.handle(message).await,
        }
    }
    let _ = stop_controls.send(true);
    if let Err(error) = control_task.await {
        tracing::error!(%error, "the control task failed");
    }
    tracing::info!("arbiter stopped");
    Ok(())
}

/// Every control request is answered within this: with its reply, or with
/// an error reply saying it was not carried out in time (a `pause`,
/// `resume` or `scale` cut short may still have taken effect).
pub const CONTROL_DEADLINE: Duration = Duration::from_secs(5);

/// Control requests in hand at once; more wait in the subscription.
const CONTROL_CONCURRENCY: usize = 32;

/// Answers control requests until `stop` turns true (or its sender is
/// gone), then finishes those in hand, each within [`CONTROL_DEADLINE`].
async fn serve_control(
    arbiter: Arc<Arbiter>,
    mut requests: impl futures_util::Stream<Item = async_nats::Message> + Unpin,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut in_flight = futures_util::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => break,
            Some(()) = in_flight.next(), if !in_flight.is_empty() => {}
            request = requests.next(), if in_flight.len() < CONTROL_CONCURRENCY => match request {
                Some(request) => in_flight.push(arbiter.control(request)),
                None => break,
            },
        }
    }
    while in_flight.next().await.is_some() {}
}

/// `work`'s reply, or after `deadline` an error reply naming `verb`.
async fn answer_within(
    deadline: Duration,
    verb: &str,
    work: impl Future<Output = ControlReply>,
) -> ControlReply {
    match tokio::time::timeout(deadline, work).await {
        Ok(reply) => reply,
        Err(_) => {
            tracing::warn!(verb, "a control request was not answered in time");
            ControlReply::failed(format!(
                "{verb} not answered within {deadline:?} (the broker or an actuator is slow); \
                 a pause, resume or scale may still take effect: check status"
            ))
        }
    }
}

/// How long a decision waits for an actuator to read a never-seen capacity.
const CAPACITY_ASK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `emergency down` waits for an evaluator's load readings.
const LOAD_ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a status request waits for the same, per target without a record.
const STATUS_ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// Control verbs the arbiter answers, each also on its own subject
/// `nova.ctl.<verb>` (the verb may then be left out of the request).
pub use nova_shared::wire::CONTROL_VERBS;

impl Arbiter {
    /// Answers a control request on `nova.ctl.arbiter` or `nova.ctl.<verb>`:
    /// every request with a reply subject gets a reply.
    async fn control(&self, request: async_nats::Message) {
        let subject_verb = (request.subject.as_str() != subjects::ARBITER_CONTROL)
            .then(|| subjects::last_token(&request.subject).to_string());
        let Some(reply_to) = request.reply.clone() else {
            let reason = format!(
                "control request on {} without a reply subject",
                request.subject
            );
            return self
                .dead
                .send(&request.subject, reason, &request.payload)
                .await;
        };
        let encoding = codec::Encoding::from_content_type(nova_runtime::content_type(
            request.headers.as_ref(),
        ));
        let parsed = ControlRequest::decode(&request.payload, encoding, subject_verb.as_deref());
        let verb = parsed.as_ref().map_or("control request", |r| r.verb());
        // An emergency down waits for its drain acknowledgements and a load
        // reading, on top of the usual work.
        let deadline = match &parsed {
            Ok(ControlRequest::Emergency(e)) if e.op == EmergencyOp::Down => {
                let drain = self
                    .policy
                    .current()
                    .policy
                    .targets
                    .values()
                    .map(|t| t.emergency.drain_timeout_secs)
                    .max()
                    .unwrap_or(0);
                CONTROL_DEADLINE + LOAD_ASK_TIMEOUT + Duration::from_secs(drain)
            }
            _ => CONTROL_DEADLINE,
        };
        let reply = answer_within(deadline, verb, async {
            match parsed {
                Err(error) => {
                    let message = format!(
                        "not a control request: {}",
                        codec::excerpt(&error.to_string(), 300)
                    );
                    self.dead
                        .send(&request.subject, message.clone(), &request.payload)
                        .await;
                    ControlReply::failed(message)
                }
                Ok(parsed) => self.control_reply(parsed).await,
            }
        })
        .await;
        match codec::encode(&reply) {
            Ok(payload) => {
                if let Err(error) = self.client.publish(reply_to, payload.into()).await {
                    tracing::warn!(%error, "cannot answer a control request");
                }
            }
            Err(error) => tracing::error!(%error, "cannot encode a control reply"),
        }
    }

    /// Carries out one request; each verb has its own arm, so a new verb
    /// cannot fall into another's.
    async fn control_reply(&self, request: ControlRequest) -> ControlReply {
        // The policy in force when the request is taken, for all of it.
        let current = self.policy.current();
        let policy = &current.policy;
        match request {
            ControlRequest::Status(status) => {
                let targets: Vec<&Target> = match &status.target {
                    Some(name) => match target_in(policy, name) {
                        Ok(target) => vec![target],
                        Err(reply) => return reply,
                    },
                    None => policy.targets.values().collect(),
                };
                self.reply_with_status("ok".into(), &targets).await
            }
            ControlRequest::Pause(request) => self.pause(policy, request, true).await,
            ControlRequest::Resume(request) => self.pause(policy, request, false).await,
            ControlRequest::Emergency(request) => {
                self.emergency(policy, &current.revision, request).await
            }
            ControlRequest::Promote(request) => {
                let target = match target_in(policy, &request.target) {
                    Ok(target) => target,
                    Err(reply) => return reply,
                };
                match self.promote(target, &current.revision, &request).await {
                    Ok(submitted) => self.reply_with_status(submitted, &[target]).await,
                    Err(error) => ControlReply::failed(error),
                }
            }
            ControlRequest::Scale(request) => {
                let target = match target_in(policy, &request.target) {
                    Ok(target) => target,
                    Err(reply) => return reply,
                };
                match self
                    .operator_scale(target, &current.revision, &request)
                    .await
                {
                    Ok(submitted) => self.reply_with_status(submitted, &[target]).await,
                    Err(error) => ControlReply::failed(error),
                }
            }
        }
    }

    /// `message` and the state of `targets`, read side by side (a target
    /// without a capacity record asks an actuator for up to 2 s).
    async fn reply_with_status(&self, message: String, targets: &[&Target]) -> ControlReply {
        let read = futures_util::future::join_all(targets.iter().map(|t| self.status(t))).await;
        let mut statuses = Vec::with_capacity(targets.len());
        for (target, status) in targets.iter().zip(read) {
            match status {
                Ok(status) => statuses.push(status),
                Err(error) => {
                    return ControlReply::failed(format!("cannot read {}: {error}", target.name));
                }
            }
        }
        ControlReply::done(message, statuses)
    }

    /// `pause` (`pause` true) or `resume`: changes the target's state at
    /// once, outside the trigger stream, and audits it.
    async fn pause(&self, policy: &Policy, request: DirectionRequest, pause: bool) -> ControlReply {
        let target = match target_in(policy, &request.target) {
            Ok(target) => target,
            Err(reply) => return reply,
        };
        let (up, down) = match request.direction {
            Some(Direction::Up) => (true, false),
            Some(Direction::Down) => (false, true),
            _ => (true, true),
        };
        let verb = if pause { "pause" } else { "resume" };
        // A newer arbiter's state is not written back by this one.
        if let Some(why) = self.newer_state(&target.name).await {
            return ControlReply::failed(format!("{verb} of {} refused: {why}", target.name));
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
            return ControlReply::failed(format!("cannot change {}: {error}", target.name));
        }
        let what = match (up, down) {
            (true, true) => "scaling",
            (true, false) => "scale-up",
            _ => "scale-down",
        };
        let outcome = if pause { "paused" } else { "resumed" };
        let message = format!(
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
        self.reply_with_status(message, &[target]).await
    }

    /// An operator's "set to N" enters as a trigger like any rule's, so it
    /// gets the same bounds, cooldowns and audit; `force` names its firing
    /// [`arbitrate::OPERATOR_FORCE_RULE`], which goes past the pause,
    /// cooldowns and warm-up.
    async fn operator_scale(
        &self,
        target: &Target,
        revision: &str,
        request: &ScaleRequest,
    ) -> Result<String, String> {
        let desired = request.desired;
        let reason = format!(
            "operator asked to set {} to {desired}{}{}",
            target.name,
            if request.force { " with --force" } else { "" },
            request
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
        let rule = if request.force {
            arbitrate::OPERATOR_FORCE_RULE
        } else {
            arbitrate::OPERATOR_RULE
        };
        self.submit_operator(target, revision, rule, ScaleAction::Set(desired), reason)
            .await
    }

    /// `promote`: PromoteReadReplica of `request.replica`, submitted as a
    /// forced operator trigger ([`arbitrate::PROMOTE_RULE`]); only an RDS
    /// replica set has replicas to promote. Whether the replica is one of
    /// the primary's is the actuator's to find out, from RDS.
    async fn promote(
        &self,
        target: &Target,
        revision: &str,
        request: &PromoteRequest,
    ) -> Result<String, String> {
        if !matches!(target.backend, Backend::RdsReplicas(_)) {
            return Err(format!(
                "promote of {} refused: its backend is {}, and only an rds_replicas target has read replicas to promote",
                target.name,
                target.backend.kind()
            ));
        }
        if request.replica.trim().is_empty() {
            return Err(format!(
                "promote of {} refused: name the replica to promote",
                target.name
            ));
        }
        if let Some(why) = self.newer_state(&target.name).await {
            return Err(format!("promote of {} refused: {why}", target.name));
        }
        let reason = format!(
            "operator asked to promote {} of {} to a standalone instance{}",
            request.replica,
            target.name,
            request
                .reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
        self.submit_operator(
            target,
            revision,
            arbitrate::PROMOTE_RULE,
            ScaleAction::Promote(request.replica.clone()),
            reason,
        )
        .await
    }

    /// Submits an operator's request, `action` (a "set to" or a promote),
    /// as a trigger of rule `rule`, decided like any other; returns the
    /// line the reply says.
    async fn submit_operator(
        &self,
        target: &Target,
        revision: &str,
        rule: &str,
        action: ScaleAction,
        reason: String,
    ) -> Result<String, String> {
        // A promote takes one replica out of the set: a scale-down.
        let direction = match action {
            ScaleAction::Promote(_) => Direction::Down,
            _ => Direction::None,
        };
        let trigger = Trigger {
            v: Version::CURRENT,
            id: nova_runtime::unique_id("op"),
            ts: nova_runtime::now_ms(),
            target: target.name.clone(),
            source: TriggerSource::Operator,
            firings: vec![RuleFiring::plain(rule, direction, action, reason.clone())],
            // Another replica, on another revision, may take it: it defers
            // a target its policy lacks instead of refusing it.
            policy_revision: Some(revision.to_string()),
            alert: None,
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

    /// `emergency`: per target of the request's scope, the capacity the
    /// operation asks for ([`emergency::ask`]), submitted as a forced
    /// operator trigger, so each is one audited decision. `down` first
    /// reads the target's load from the evaluator and drains it. The reply
    /// has one line per target; it is not ok when any was refused (the
    /// others are submitted all the same: in an emergency, what can be done
    /// is done).
    async fn emergency(
        &self,
        policy: &Policy,
        revision: &str,
        request: EmergencyRequest,
    ) -> ControlReply {
        let targets = match scope_in(policy, &request.target) {
            Ok(targets) => targets,
            Err(reply) => return reply,
        };
        let outcomes = futures_util::future::join_all(
            targets
                .iter()
                .map(|target| self.emergency_one(target, revision, &request)),
        )
        .await;
        let mut refused = 0;
        let lines: Vec<String> = targets
            .iter()
            .zip(outcomes)
            .map(|(target, outcome)| match outcome {
                Ok(line) => line,
                Err(why) => {
                    refused += 1;
                    format!(
                        "emergency {} of {} refused: {why}",
                        request.op.as_str(),
                        target.name
                    )
                }
            })
            .collect();
        let reply = self.reply_with_status(lines.join("\n"), &targets).await;
        if refused == 0 || !reply.ok {
            return reply;
        }
        ControlReply {
            ok: false,
            error: Some(reply.message.clone()),
            ..reply
        }
    }

    async fn emergency_one(
        &self,
        target: &Target,
        revision: &str,
        request: &EmergencyRequest,
    ) -> Result<String, String> {
        let name = &target.name;
        if let Some(why) = self.newer_state(name).await {
            return Err(why);
        }
        let state = kv::load::<TargetState>(&self.states, name)
            .await
            .map_err(|e| format!("cannot read its state: {e}"))?
            .map(|v| v.value)
            .unwrap_or_default();
        let capacity = kv::load::<CapacityRecord>(&self.capacities, name)
            .await
            .map_err(|e| format!("cannot read its capacity: {e}"))?
            .map(|v| v.value);
        let base = arbitrate::base_capacity(&state, capacity.as_ref());
        let load = match request.op {
            EmergencyOp::Down => Some(self.read_load(name).await?),
            EmergencyOp::Up | EmergencyOp::Reset => None,
        };
        let ask = emergency::ask(
            request.op,
            target,
            &state,
            base,
            request.by,
            request.to,
            load.as_deref(),
        )?;
        let why = request
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        let mut reason = format!(
            "operator emergency {} of {name}: {}{why}",
            request.op.as_str(),
            ask.how
        );
        if request.op == EmergencyOp::Down {
            let from = base.unwrap_or(ask.desired);
            let drained = self.drain(target, from, ask.desired, &reason).await?;
            reason.push_str(&format!("; {drained}"));
        }
        let rule = match request.op {
            EmergencyOp::Up => arbitrate::EMERGENCY_UP_RULE,
            EmergencyOp::Down => arbitrate::EMERGENCY_DOWN_RULE,
            EmergencyOp::Reset => arbitrate::EMERGENCY_RESET_RULE,
        };
        self.submit_operator(
            target,
            revision,
            rule,
            ScaleAction::Set(ask.desired),
            reason,
        )
        .await
    }

    /// The target's scale-down conditions read now, from an evaluator that
    /// owns it (`nova.ctl.load.<target>`).
    async fn read_load(&self, target: &str) -> Result<Vec<LoadReading>, String> {
        let subject = subjects::load(target);
        let answer = tokio::time::timeout(LOAD_ASK_TIMEOUT, self.client.request(subject.clone(), Vec::new().into()))
            .await
            .map_err(|_| format!("no evaluator answered on {subject} within {LOAD_ASK_TIMEOUT:?}, so its load is unknown"))?
            .map_err(|e| format!("cannot read its load on {subject}: {e} (an evaluator that owns {target} must be running)"))?;
        let reply: LoadReply = codec::decode(&answer.payload, codec::Encoding::MsgPack)
            .map_err(|e| format!("unreadable load answer on {subject}: {e}"))?;
        Ok(reply.readings)
    }

    /// Asks the target's workers to drain on `nova.drain.<target>` and
    /// waits for one acknowledgement per instance to go, or the target's
    /// drain timeout; says how many came.
    async fn drain(
        &self,
        target: &Target,
        from: u32,
        to: u32,
        reason: &str,
    ) -> Result<String, String> {
        let expected = from.saturating_sub(to);
        let timeout = Duration::from_secs(target.emergency.drain_timeout_secs);
        let subject = subjects::drain(&target.name);
        let inbox = self.client.new_inbox();
        let mut acks = self
            .client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| format!("cannot wait for drain acknowledgements: {e}"))?;
        let request = DrainRequest {
            target: target.name.clone(),
            from,
            to,
            expected,
            reason: reason.to_string(),
        };
        let payload =
            codec::encode(&request).map_err(|e| format!("cannot encode the drain request: {e}"))?;
        self.client
            .publish_with_reply(subject.clone(), inbox, payload.into())
            .await
            .map_err(|e| format!("cannot publish the drain request on {subject}: {e}"))?;
        let started = std::time::Instant::now();
        let mut acked = 0u32;
        let _ = tokio::time::timeout(timeout, async {
            while acked < expected && acks.next().await.is_some() {
                acked += 1;
            }
        })
        .await;
        let _ = acks.unsubscribe().await;
        Ok(if acked >= expected {
            format!(
                "drained: {acked} of {expected} acknowledged on {subject} in {:.1} s",
                started.elapsed().as_secs_f64()
            )
        } else {
            format!(
                "drain: {acked} of {expected} acknowledged on {subject} within {} s, going on",
                timeout.as_secs()
            )
        })
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
            wall_up_cooldown_until: state.wall_holds.up_cooldown_until,
            wall_down_cooldown_until: state.wall_holds.down_cooldown_until,
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
        let current = self.policy.current();
        let target = match arbitrate::check_known(&current.policy, &current.revision, &trigger) {
            Ok(target) => target,
            Err(Unknown::Reject(why)) => return self.dead.reject(&message, why).await,
            Err(Unknown::Defer(why)) => {
                if let Some(gone) = self.past_relevance(&message) {
                    metrics::counter!(names::GIVEN_UP, "stage" => "arbiter").increment(1);
                    let reason = format!("given up: {why}; {gone}");
                    return self.dead.reject(&message, reason).await;
                }
                let (target, id) = (&trigger.target, &trigger.id);
                return self.defer(&message, target, id, trigger.ts, &why).await;
            }
        };
        match self.decide(target, &current, &trigger).await {
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
        metrics::counter!(names::RETRIES, "stage" => "arbiter").increment(1);
        if !error.is_transient() {
            let reason = format!("cannot be decided: {error}");
            return self.dead.reject(message, reason).await;
        }
        if let Some(gone) = self.past_relevance(message) {
            metrics::counter!(names::GIVEN_UP, "stage" => "arbiter").increment(1);
            return self
                .dead
                .reject(message, format!("given up {gone}: {error}"))
                .await;
        }
        let attempts = message.info().map_or(1, |info| info.delivered);
        tracing::warn!(
            trigger = trigger.id,
            attempts,
            "cannot decide yet, will retry trigger: {error}"
        );
        nova_runtime::ack(message, AckKind::Nak(Some(RETRY_DELAY))).await;
    }

    /// How long past `trigger_relevance` the trigger has been in the stream,
    /// as the end of the dead letter's reason; `None` while it is relevant.
    fn past_relevance(&self, message: &jetstream::Message) -> Option<String> {
        let info = message.info().ok();
        let attempts = info.as_ref().map_or(1, |info| info.delivered);
        let stored_ms = info.map_or(nova_runtime::now_ms(), |info| {
            i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
        });
        let age_ms = nova_runtime::now_ms().saturating_sub(stored_ms);
        (age_ms > nova_shared::units::secs_to_ms(self.relevance.as_secs())).then(|| {
            format!(
                "after {attempts} attempts over {} s, no longer relevant (trigger_relevance {} s)",
                age_ms / 1000,
                self.relevance.as_secs()
            )
        })
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
        record.policy_revision = Some(self.policy.current().revision);
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

    /// Read, decide, compare-and-set, publish; again from the top on a
    /// conflict, at most [`MAX_CONFLICTS`] times.
    async fn decide(
        &self,
        target: &Target,
        current: &Revised,
        trigger: &Trigger,
    ) -> Result<(), DecideError> {
        let settings = ArbiterSettings::for_target(target, current.policy.evaluation.refire_secs);
        for _ in 0..MAX_CONFLICTS {
            let stored = match kv::load::<TargetState>(&self.states, &target.name).await {
                Ok(stored) => stored,
                Err(error) if error.kind() == nova_runtime::kv::KvErrorKind::Decode => {
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
            let mut state = state;
            if let Some(unsent) = state.unsent() {
                // The last verdict first, whatever became of its trigger
                // (see `TargetState::unsent`); a broker error here naks this
                // trigger, and nothing newer is decided meanwhile.
                if !self.sent_here(&target.name, &unsent.decision.id) {
                    tracing::info!(
                        decision = unsent.decision.id,
                        "publishing the last decision before the next one"
                    );
                    self.publish(unsent, Publishing::Again).await?;
                }
                state.mark_sent();
            }
            let observed = Observed {
                record: capacity.as_ref(),
                unreadable: unreadable.as_deref(),
            };
            // Rule triggers are decided on their event time, operator and
            // fallback triggers on this clock (`arbitrate::Clock`).
            let now = nova_runtime::now_ms();
            let verdict = arbitrate::decide_at(target, settings, &state, observed, trigger, now)
                .with_policy_revision(&current.revision);
            let Some(next) = verdict.state else {
                metrics::counter!(names::DECISIONS, "outcome" => Outcome::Duplicate.as_str())
                    .increment(1);
                if let Some(last) = state.replay(&verdict.decision.id) {
                    tracing::info!(
                        decision = last.decision.id,
                        "re-publishing a decision after redelivery"
                    );
                    self.publish(last, Publishing::Again).await?;
                }
                return Ok(());
            };
            match kv::save(&self.states, &target.name, &next, revision).await {
                Ok(_) => {
                    // The stored state holds this verdict: publish exactly
                    // what a redelivery would re-publish.
                    let stored = next.last().expect("decide stores its verdict");
                    return Ok(self.publish(stored, Publishing::First).await?);
                }
                Err(error) if error.kind() == KvErrorKind::Conflict => {
                    metrics::counter!(names::KV_CONFLICTS, "bucket" => ARBITER_BUCKET).increment(1);
                }
                Err(error) => return Err(error.into()),
            }
        }
        Err(DecideError::Contended {
            target: target.name.clone(),
        })
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
        let current = self.policy.current();
        for target in current.policy.targets.values() {
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
        // Its own deadline (below), not the connection's 10 s: the
        // request's is set past it, so the error says which deadline passed.
        let request = self.client.send_request(
            subject,
            async_nats::Request::new()
                .payload(target.to_string().into())
                .timeout(Some(limit + Duration::from_secs(1))),
        );
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

    /// Whether this process published `decision_id`, the latest verdict of
    /// `target` it published: then it need not be published again.
    fn sent_here(&self, target: &str, decision_id: &str) -> bool {
        self.sent
            .lock()
            .expect("sent verdicts")
            .get(target)
            .is_some_and(|id| id == decision_id)
    }

    /// Publishes a stored verdict: its decision record, flapping note and
    /// command, each de-duplicated by an id derived from the decision.
    async fn publish(&self, verdict: &LastVerdict, when: Publishing) -> Result<(), PublishError> {
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
        record.rule = decision.rule.clone();
        record.observed = verdict.observed;
        record.threshold = verdict.threshold;
        record.from = decision.from;
        record.to = decision.to;
        record.trigger_id = Some(decision.trigger_id.clone());
        record.decision_id = Some(decision.id.clone());
        record.policy_revision = decision.policy_revision.clone();
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
        self.sent
            .lock()
            .expect("sent verdicts")
            .insert(decision.target.clone(), decision.id.clone());
        if when == Publishing::First {
            metrics::counter!(names::DECISIONS, "outcome" => decision.outcome.label()).increment(1);
            tracing::info!(
                target = decision.target,
                outcome = decision.outcome.as_str(),
                reason = decision.reason,
                "decision"
            );
        }
        Ok(())
    }
}

/// `policy`'s target `name`, or the reply refusing it.
/// The targets an emergency names: `all`, a group of the policy, or one
/// target.
fn scope_in<'p>(policy: &'p Policy, name: &str) -> Result<Vec<&'p Target>, ControlReply> {
    if name == "all" {
        return Ok(policy.targets.values().collect());
    }
    if let Some(members) = policy.groups.get(name) {
        return Ok(members
            .iter()
            .filter_map(|m| policy.targets.get(m))
            .collect());
    }
    match policy.targets.get(name) {
        Some(target) => Ok(vec![target]),
        None => {
            let name = codec::excerpt(name, 64);
            let groups: Vec<&str> = policy.groups.keys().map(String::as_str).collect();
            Err(ControlReply::failed(format!(
                "no target or group {name:?} in the policy (groups: {}; or all)",
                if groups.is_empty() {
                    "none".to_string()
                } else {
                    groups.join(", ")
                }
            )))
        }
    }
}

fn target_in<'p>(policy: &'p Policy, name: &str) -> Result<&'p Target, ControlReply> {
    policy.targets.get(name).ok_or_else(|| {
        let name = codec::excerpt(name, 64);
        ControlReply::failed(format!("no target {name:?} in the policy"))
    })
}

/// Whether a verdict is published for the first time (counted and logged)
/// or again (after a failure, a crash or a redelivery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Publishing {
    First,
    Again,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_control_request_is_answered_within_the_deadline_or_refused() {
        let quick = answer_within(Duration::from_millis(200), "status", async {
            ControlReply::done("ok".into(), vec![])
        })
        .await;
        assert!(quick.ok);
        let started = std::time::Instant::now();
        let slow = answer_within(
            Duration::from_millis(50),
            "pause",
            std::future::pending::<ControlReply>(),
        )
        .await;
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(!slow.ok);
        assert!(
            slow.message.starts_with("pause not answered within 50ms")
                && slow.error.as_deref() == Some(slow.message.as_str()),
            "{slow:?}"
        );
    }
}
