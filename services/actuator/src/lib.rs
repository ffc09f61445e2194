//! Actuator: changes real capacity.
//!
//! - [`backend`]: the backend of each target (ECS or simulated).
//! - [`ecs`]: AWS ECS through DescribeServices / UpdateService.
//! - [`sim`]: the simulated fleet and its load generator.
//!
//! On start, and every `observe_every`, the actuator reads each target's
//! capacity from its backend into KV `nova_capacity`, which the arbiter uses
//! as the base for relative actions. It consumes stream `NOVA_COMMANDS`
//! through the durable consumer `actuator` and, per command:
//! 1. skips it if the target's `applied_seq` already covers it (a
//!    redelivery, or an older command overtaken by a newer one);
//! 2. audits `executing`, calls the backend, records the new capacity and
//!    `applied_seq` by compare-and-set;
//! 3. publishes the result to `NOVA_RESULTS` and audits it;
//! 4. only then acks the command. A failed backend call is retried with
//!    back-off; after the last attempt the result is `failed`.

pub mod backend;
pub mod ecs;
pub mod sim;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, kv::Store};
use futures_util::StreamExt;
use nova_runtime::dead::DeadLetters;
use nova_runtime::kv::{self, KvError};
use nova_runtime::nats::{ACTUATOR_CONSUMER, CAPACITY_BUCKET, COMMANDS_STREAM, SIM_BUCKET};
use nova_runtime::publish::{self, Auditor, PublishError};
use nova_runtime::setup::{self, SetupError};
use nova_runtime::telemetry::names;
use nova_shared::codec;
use nova_shared::ids;
use nova_shared::policy::Policy;
use nova_shared::subjects;
use nova_shared::wire::{
    ActionResult, AuditKind, AuditRecord, CAPACITY_VERB, CapacityAnswer, CapacityRecord, Command,
    ResultStatus, Stage,
};
use thiserror::Error;

use crate::backend::{Backend, Observation};

/// Actuator settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The policy (targets and their backends).
    pub policy: Arc<Policy>,
    /// Durable consumer name shared by the replicas.
    pub consumer: String,
    /// How often to re-read every target's capacity from its backend.
    pub observe_every: Duration,
    /// Deliveries of one command before its failure is final.
    pub max_attempts: i64,
    /// Time limit of one backend API call.
    pub call_timeout: Duration,
    /// AWS credentials to use instead of the standard chain (environment,
    /// profile, instance role); for embedding and tests.
    pub aws_credentials: Option<aws_credential_types::Credentials>,
}

impl Config {
    /// Defaults for `policy`.
    pub fn new(policy: Arc<Policy>) -> Self {
        Config {
            policy,
            consumer: ACTUATOR_CONSUMER.into(),
            observe_every: Duration::from_secs(15),
            max_attempts: 3,
            call_timeout: Duration::from_secs(20),
            aws_credentials: None,
        }
    }
}

#[derive(Debug, Error)]
enum StepError {
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

struct Actuator {
    js: jetstream::Context,
    backends: HashMap<String, Backend>,
    capacities: Store,
    dead: DeadLetters,
    auditor: Auditor,
    max_attempts: i64,
}

/// Runs until `shutdown` completes; the command in hand is finished first.
pub async fn run(
    config: Config,
    client: async_nats::Client,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SetupError> {
    let span = tracing::info_span!("actuator");
    let _enter = span.enter();
    let js = jetstream::new(client.clone());
    let capacities = setup::bucket(&js, CAPACITY_BUCKET).await?;
    let sim_states = setup::bucket(&js, SIM_BUCKET).await?;
    let mut messages = setup::durable_messages(
        &js,
        COMMANDS_STREAM,
        &config.consumer,
        config.call_timeout * 3,
    )
    .await?;
    let actuator = Arc::new(Actuator {
        backends: backend::build_all(
            &config.policy,
            &sim_states,
            config.call_timeout,
            config.aws_credentials.as_ref(),
        )
        .await,
        capacities,
        dead: DeadLetters::new(js.clone(), Stage::Actuator),
        auditor: Auditor::new(js.clone(), Stage::Actuator),
        js,
        max_attempts: config.max_attempts,
    });
    // Capacity first: the arbiter needs it before it can decide anything.
    actuator.observe_all().await;
    let mut capacity_requests = setup::subscribe(
        &client,
        &subjects::control(CAPACITY_VERB),
        Some("nova-actuator"),
    )
    .await?;
    let _ping = setup::ping(&client, Stage::Actuator).await?;
    // The first observation ran above; the next is one period away.
    let first = tokio::time::Instant::now() + config.observe_every;
    let mut observe = tokio::time::interval_at(first, config.observe_every);
    // The periodic pass runs beside the command loop, so a command never
    // waits for hundreds of backend reads; one pass at a time.
    let mut observing: Option<tokio::task::JoinHandle<()>> = None;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = observe.tick() => {
                if observing.as_ref().is_none_or(|pass| pass.is_finished()) {
                    let actuator = actuator.clone();
                    observing = Some(tokio::spawn(async move { actuator.observe_all().await }));
                }
            }
            request = capacity_requests.next() => match request {
                Some(request) => actuator.answer_capacity(&client, request).await,
                None => break,
            },
            message = messages.next() => match message {
                Some(Ok(message)) => actuator.handle(message).await,
                Some(Err(error)) => tracing::warn!(%error, "command stream hiccup"),
                None => break,
            },
        }
    }
    if let Some(pass) = observing {
        // Observations are idempotent: one cut short is simply redone later.
        pass.abort();
    }
    tracing::info!("actuator stopped");
    Ok(())
}

/// Backends read at once by the periodic observation pass.
const OBSERVE_CONCURRENCY: usize = 8;

fn capacity_record(target: &str, kind: &str, obs: Observation, applied_seq: u64) -> CapacityRecord {
    CapacityRecord {
        target: target.to_string(),
        desired: obs.desired,
        running: obs.running,
        applied_seq,
        tier: obs.tier,
        observed_ms: nova_runtime::now_ms(),
        backend: kind.to_string(),
    }
}

impl Actuator {
    /// Reads every backend's capacity into KV, a few targets at a time.
    async fn observe_all(&self) {
        futures_util::stream::iter(self.backends.keys())
            .for_each_concurrent(OBSERVE_CONCURRENCY, |target| async move {
                if let Err(error) = self.observe(target).await {
                    tracing::warn!(%error, target, "cannot observe capacity");
                }
            })
            .await;
    }

    /// Reads one target's capacity from its backend into KV, keeping
    /// `applied_seq`. The record is written only if nothing else wrote it
    /// while the backend was read: a command applied meanwhile (here or in
    /// another replica) is newer than this observation, and wins.
    async fn observe(&self, target: &str) -> Result<CapacityRecord, String> {
        let backend = self
            .backends
            .get(target)
            .ok_or_else(|| format!("no target {target:?} in the policy"))?;
        let before = kv::load::<CapacityRecord>(&self.capacities, target)
            .await
            .map_err(|e| e.to_string())?;
        let obs = backend.observe().await.map_err(|e| e.to_string())?;
        let (revision, previous_seq) = before
            .as_ref()
            .map_or((0, 0), |v| (v.revision, v.value.applied_seq));
        let record = capacity_record(target, backend.kind(), obs, previous_seq);
        match kv::save(&self.capacities, target, &record, revision).await {
            Ok(_) => Ok(record),
            Err(KvError::Conflict { .. }) => {
                metrics::counter!(names::KV_CONFLICTS, "bucket" => CAPACITY_BUCKET).increment(1);
                let newer = kv::load::<CapacityRecord>(&self.capacities, target)
                    .await
                    .map_err(|e| e.to_string())?;
                newer
                    .map(|v| v.value)
                    .ok_or_else(|| format!("capacity of {target} vanished while observed"))
            }
            Err(error) => Err(error.to_string()),
        }
    }

    /// Answers `nova.ctl.capacity` (payload: a target name) with a fresh
    /// [`CapacityRecord`], or an error text; the arbiter asks when it has
    /// never seen a target's capacity.
    async fn answer_capacity(&self, client: &async_nats::Client, request: async_nats::Message) {
        let Some(reply) = request.reply.clone() else {
            return self
                .dead
                .send(
                    &request.subject,
                    "capacity request without a reply subject",
                    &request.payload,
                )
                .await;
        };
        let target = String::from_utf8_lossy(&request.payload).trim().to_string();
        let answer = match self.observe(&target).await {
            Ok(record) => codec::encode(&CapacityAnswer::Capacity(record)),
            Err(error) => codec::encode(&CapacityAnswer::Error(error)),
        };
        match answer {
            Ok(payload) => {
                if let Err(error) = client.publish(reply, payload.into()).await {
                    tracing::warn!(%error, "cannot answer capacity request");
                }
            }
            Err(error) => tracing::error!(%error, "cannot encode capacity answer"),
        }
    }

    async fn record_capacity(
        &self,
        target: &str,
        kind: &str,
        obs: Observation,
        applied: Option<u64>,
    ) -> Result<CapacityRecord, KvError> {
        kv::modify(&self.capacities, target, |old: Option<CapacityRecord>| {
            let previous_seq = old.map_or(0, |r| r.applied_seq);
            let applied_seq = applied.map_or(previous_seq, |seq| seq.max(previous_seq));
            capacity_record(target, kind, obs.clone(), applied_seq)
        })
        .await
    }

    async fn handle(&self, message: jetstream::Message) {
        let subject = message.subject.to_string();
        let command: Command =
            match nova_runtime::decode(&message.payload, message.headers.as_ref()) {
                Ok(command) => command,
                Err(error) => {
                    return self
                        .dead
                        .reject(&message, format!("not a command: {error}"))
                        .await;
                }
            };
        if command.target != subjects::last_token(&subject) {
            let reason = format!(
                "command for target {:?} arrived on {subject}",
                command.target
            );
            return self.dead.reject(&message, reason).await;
        }
        let Some(backend) = self.backends.get(&command.target) else {
            let reason = format!("no target {:?} in the policy", command.target);
            return self.dead.reject(&message, reason).await;
        };
        let attempt = message.info().map_or(1, |info| info.delivered);
        match self.execute(backend, &command, attempt).await {
            Ok(true) => nova_runtime::ack(&message, AckKind::Ack).await,
            Ok(false) => {
                let delay = Duration::from_millis(500 * 2u64.pow(attempt.clamp(1, 8) as u32));
                nova_runtime::ack(&message, AckKind::Nak(Some(delay))).await;
            }
            Err(error) => {
                metrics::counter!(names::RETRIES, "stage" => "actuator").increment(1);
                tracing::warn!(%error, decision = command.decision_id, "will retry command");
                nova_runtime::ack(&message, AckKind::Nak(Some(Duration::from_secs(1)))).await;
            }
        }
    }

    /// Executes one command. `Ok(true)`: done, ack. `Ok(false)`: the backend
    /// failed and another attempt is due.
    async fn execute(
        &self,
        backend: &Backend,
        command: &Command,
        attempt: i64,
    ) -> Result<bool, StepError> {
        let kind = backend.kind();
        let known = kv::load::<CapacityRecord>(&self.capacities, &command.target).await?;
        if let Some(applied) = known
            .as_ref()
            .map(|v| v.value.applied_seq)
            .filter(|seq| *seq >= command.seq)
        {
            let response = format!(
                "skipped: command {} is not newer than the applied command {applied}",
                command.seq
            );
            self.finish(command, kind, ResultStatus::Skipped, None, response)
                .await?;
            return Ok(true);
        }
        let mut record = self.record(
            command,
            AuditKind::Command,
            "executing",
            command.reason.clone(),
        );
        record.from = Some(command.from);
        record.to = Some(command.desired);
        self.auditor.record(&record).await?;
        match backend
            .apply(command.desired, command.tier.as_deref())
            .await
        {
            Ok((obs, response)) => {
                let from = known.map(|v| v.value.desired);
                self.record_capacity(&command.target, kind, obs, Some(command.seq))
                    .await?;
                self.finish(command, kind, ResultStatus::Succeeded, from, response)
                    .await?;
                Ok(true)
            }
            Err(error) if attempt < self.max_attempts => {
                metrics::counter!(names::RETRIES, "stage" => "actuator").increment(1);
                tracing::warn!(%error, attempt, decision = command.decision_id, "backend call failed, will retry");
                Ok(false)
            }
            Err(error) => {
                // Record what the backend really has, and mark the command
                // as settled, so the arbiter's next base is the truth and not
                // the capacity that never came.
                if let Ok(obs) = backend.observe().await {
                    self.record_capacity(&command.target, kind, obs, Some(command.seq))
                        .await?;
                }
                let response = format!("failed after {attempt} attempts: {error}");
                self.finish(command, kind, ResultStatus::Failed, None, response)
                    .await?;
                Ok(true)
            }
        }
    }

    fn record(
        &self,
        command: &Command,
        kind: AuditKind,
        outcome: &str,
        reason: String,
    ) -> AuditRecord {
        let mut record = AuditRecord::new(
            ids::derive("a", &[command.decision_id.as_bytes(), outcome.as_bytes()]),
            nova_runtime::now_ms(),
            Stage::Actuator,
            &command.target,
            kind,
            outcome,
            reason,
        );
        record.rule = command.rule.clone();
        record.decision_id = Some(command.decision_id.clone());
        record
    }

    async fn finish(
        &self,
        command: &Command,
        kind: &str,
        status: ResultStatus,
        from: Option<u32>,
        response: String,
    ) -> Result<(), PublishError> {
        let result = ActionResult {
            decision_id: command.decision_id.clone(),
            seq: command.seq,
            target: command.target.clone(),
            ts: nova_runtime::now_ms(),
            status,
            backend: kind.to_string(),
            from,
            desired: command.desired,
            tier: command.tier.clone(),
            response: response.clone(),
        };
        let id = ids::derive("r", &[command.decision_id.as_bytes()]);
        publish::publish_once(&self.js, subjects::results(&command.target), &id, &result).await?;
        let reason = match status {
            ResultStatus::Succeeded => format!(
                "{} now at desired {}{}: {response}",
                command.target,
                command.desired,
                command
                    .tier
                    .as_ref()
                    .map_or(String::new(), |tier| format!(" on tier {tier}")),
            ),
            ResultStatus::Skipped => format!("{} left alone: {response}", command.target),
            ResultStatus::Failed => format!("{} not changed: {response}", command.target),
        };
        let mut record = self.record(command, AuditKind::Result, status.as_str(), reason);
        record.from = from;
        record.to = Some(command.desired);
        record.backend_response = Some(response);
        self.auditor.record(&record).await?;
        metrics::counter!(names::COMMANDS, "status" => status.as_str()).increment(1);
        tracing::info!(
            target = command.target,
            status = status.as_str(),
            desired = command.desired,
            "command done"
        );
        Ok(())
    }
}
