//! Actuator: changes real capacity.
//!
//! - [`backend`]: the backend of each target (ECS, RDS read replicas with
//!   their primary's connection pool, an RDS instance's class, or
//!   simulated), with its errors classified as retryable or not.
//! - [`ecs`]: AWS ECS through DescribeServices / UpdateService, its tiers
//!   through DescribeTaskDefinition / RegisterTaskDefinition, and the
//!   steady wait after a change.
//! - [`rds_instance`]: one RDS DB instance's class through
//!   DescribeDBInstances / ModifyDBInstance.
//! - [`rds`]: an RDS primary's read replicas through DescribeDBInstances /
//!   CreateDBInstanceReadReplica / DeleteDBInstance / PromoteReadReplica.
//! - [`connection_pool`]: a replica set's primary's connection pool, one
//!   parameter of its DB parameter group (`max_connections`), through
//!   DescribeDBParameters / ModifyDBParameterGroup.
//! - [`sim`]: the simulated fleet and its load generator.
//! - `walk`: a gradual walk's steps, validations and rollback, through the
//!   backend; [`health`]: its HTTP health check.
//!
//! On start, and every `observe_every`, the actuator reads each target's
//! capacity from its backend into KV `nova_capacity`, which the arbiter uses
//! as the base for relative actions; a read that fails stores the backend's
//! one-line error in the record (and logs it). A reading older than the
//! record's ([`backend::Observation::predates`]: the simulated fleet's
//! fencing token went back, a stale copy of its state in KV answered) is
//! not stored until it has stayed older for `backend::STALE_PATIENCE_MS`
//! (then the cluster lost the write, and the reading is the truth), so the
//! arbiter's base does not go back. It consumes stream
//! `NOVA_COMMANDS` through the durable consumer `actuator`, shared by every
//! replica, and per command:
//! 1. claims the target's lease in its capacity record by compare-and-set
//!    (`nova_shared::lease`): a command older than one applied or being
//!    applied is `superseded`; one behind a live lease waits (nak with a
//!    short delay, not counted as an attempt); a command applied already is
//!    answered again (`skipped`, de-duplicated with its first result);
//! 2. audits `executing` and calls the backend within the action deadline
//!    (twice the call timeout: a read and a write), holding the lease;
//! 3. records what the backend reported after the call, `applied_seq`, and
//!    releases the lease, by compare-and-set, only while it still holds it;
//! 4. publishes the result to `NOVA_RESULTS` and audits it; the ids of the
//!    result and its audit record derive from the decision id, so each
//!    decision has exactly one;
//! 5. only then acks the command.
//!
//! A retryable backend failure (its kind says so: throttling, a 5xx, a
//! timeout, a connection failure, a conflict) releases the lease but keeps
//! the claim, and naks with back-off; after `max_attempts` backend attempts,
//! or at once for an error that cannot succeed (no credentials, access
//! denied, an invalid request, a missing service), the result is `failed`,
//! its response naming the kind in one line, and the record holds what the
//! backend really has. A KV or publish step that can never succeed (an
//! invalid key, an encoding failure) dead-letters the command; other step
//! failures are the broker's, and nak it for later.
//!
//! Crashes: before 1, or with the claim lost, nothing happened. Between 1
//! and 3 the lease expires and the command's redelivery takes it over (an
//! older command never does: the claim is a high-water mark), re-applying
//! the same absolute capacity: the backend is read first, so a change that
//! took effect is not sent again. A command whose `max_attempts` attempts
//! all ended that way is settled from what the backend reports: `succeeded`
//! if it has the change, else `failed`. Between 3 and 5 the redelivery finds the
//! command applied and re-publishes its result under the same ids.
//!
//! Across a rolling upgrade: a command of a newer version, or a capacity
//! record of a newer version, is left to a newer actuator. The command is
//! delayed ([`DEFER_DELAY`]) and counted (`nova_deferred_total`), never
//! dead-lettered, and the record is neither leased nor observed over; a
//! record it can read keeps the fields it does not know.
//!
//! Gradual walks ([`walk`], `nova_shared::gradual`): a command that moves a
//! target with a `gradual:` block by more than its `step` walks there in
//! absolute steps of at most `step` instances, each applied through the backend like a
//! whole command, waited on (`delay_secs`) and validated (the health check,
//! the metric gates on the target's latest samples). A failed validation
//! pauses twice the delay and checks again; a second failure sets the
//! capacity back to the last step that passed and the result is
//! `rolled_back`, naming the check and its value. Every step, validation,
//! pause and rollback is an audit record (kind `command`, ids from the
//! decision id and the step, so a resumed walk does not repeat them). The
//! command is held with progress acks and the lease is renewed between and
//! during steps; the record's `plan` says how far the walk is. A crash
//! mid-walk leaves the plan and the lease in the record: the redelivery of
//! the command takes the lease over when it expires and resumes at the step
//! reached (applied again: it is absolute), so no step is skipped and none
//! is taken twice to a different capacity. A newer command for the target,
//! finding the lease held by an older one, records its seq as `wanted_seq`
//! by compare-and-set and waits as any command does; the walk sees it
//! before its next step, stops at the step it reached (validated), and is
//! `superseded`, releasing the lease to it. Commands of targets with
//! gradual settings run beside the command loop, so the loop goes on
//! taking commands (that newer one, other targets') during a walk; two
//! commands for one target in one replica are kept in order by the lease,
//! as they are across replicas.
//!
//! A reloaded policy replaces the backends between two commands: every
//! target's backend is built again from it (a simulated fleet's state is in
//! KV, an ECS client holds no state), and a command or observation in hand
//! finishes on the backend it started with.

pub mod backend;
pub mod connection_pool;
pub mod ecs;
pub mod health;
pub mod rds;
pub mod rds_instance;
pub mod sim;
mod walk;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, kv::Store};
use futures_util::StreamExt;
use nova_runtime::dead::DeadLetters;
use nova_runtime::kv::{self, KvError, KvErrorKind};
use nova_runtime::nats::{ACTUATOR_CONSUMER, CAPACITY_BUCKET, COMMANDS_STREAM, SIM_BUCKET};
use nova_runtime::publish::{self, Auditor, PublishError};
use nova_runtime::reload::LivePolicy;
use nova_runtime::setup::{self, SetupError};
use nova_runtime::telemetry::names;
use nova_shared::codec;
use nova_shared::ids;
use nova_shared::lease::{self, Claim};
use nova_shared::policy::Policy;
use nova_shared::subjects;
use nova_shared::wire::{
    ActionResult, AuditKind, AuditRecord, BackendFault, CAPACITY_VERB, CapacityAnswer,
    CapacityRecord, Command, ResultStatus, Stage, Version, VersionProbe,
};
use thiserror::Error;
use tracing::Instrument;

use crate::backend::{Applied, Backend, BackendError, BackendErrorKind, Observation};
use crate::walk::{Plans, Walked};
use nova_shared::gradual::{End, Latest};

/// Actuator settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The policy (targets and their backends), and the ones that replace it.
    pub policy: LivePolicy,
    /// Durable consumer name shared by the replicas.
    pub consumer: String,
    /// How often to re-read every target's capacity from its backend.
    pub observe_every: Duration,
    /// Backend attempts for one command before its failure is final.
    pub max_attempts: u32,
    /// Time limit of one backend API call; a command's action (a read and
    /// a write) has twice this plus the backend's drain delay, and its
    /// lease that plus a margin.
    pub call_timeout: Duration,
    /// AWS credentials to use instead of the standard chain (environment,
    /// profile, instance role); for embedding and tests.
    pub aws_credentials: Option<aws_credential_types::Credentials>,
}

impl Config {
    /// Defaults for `policy`.
    pub fn new(policy: impl Into<LivePolicy>) -> Self {
        Config {
            policy: policy.into(),
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

impl StepError {
    /// Whether another attempt may succeed: everything the broker says
    /// (as the kind of a KV error tells) but an encoding failure or an
    /// invalid key, which would fail the same way again.
    fn is_retryable(&self) -> bool {
        match self {
            StepError::Kv(error) => error.is_retryable(),
            StepError::Publish(PublishError::Encode { .. }) => false,
            StepError::Publish(_) => true,
        }
    }
}

struct Actuator {
    js: jetstream::Context,
    /// Per target, replaced whole when the policy is reloaded.
    backends: std::sync::RwLock<Arc<HashMap<String, Backend>>>,
    capacities: Store,
    dead: DeadLetters,
    auditor: Auditor,
    max_attempts: u32,
    /// Time limit of one command's backend action.
    deadline: Duration,
    /// This process's name on the leases it takes.
    owner: String,
    /// Every target's gradual settings, replaced whole on a reload.
    plans: std::sync::RwLock<Arc<Plans>>,
    /// The latest sample values of the metrics gates watch, per target.
    latest: std::sync::Mutex<HashMap<String, Latest>>,
    /// The client of gradual walks' health checks.
    health: health::HealthClient,
    /// Commands of targets with gradual settings, run beside the command
    /// loop: a walk takes minutes, and a newer command for its target must
    /// be seen meanwhile to supersede it.
    walks: std::sync::Mutex<tokio::task::JoinSet<()>>,
}

/// Runs until `shutdown` completes; the command in hand is finished first.
pub async fn run(
    config: Config,
    client: async_nats::Client,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SetupError> {
    // Instrumented, not entered: a span guard held across awaits would
    // mark whatever else its thread runs as the actuator's.
    serve(config, client, shutdown)
        .instrument(tracing::info_span!("actuator"))
        .await
}

async fn serve(
    config: Config,
    client: async_nats::Client,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), SetupError> {
    let js = nova_runtime::nats::jetstream(&client);
    let capacities = setup::bucket(&js, CAPACITY_BUCKET).await?;
    let sim_states = setup::bucket(&js, SIM_BUCKET).await?;
    // A command may be in hand for its action (twice the call timeout)
    // and the KV and publish steps after it; the consumer's ack wait, set
    // by `novactl provision --actuator-ack-wait-secs`, must leave room for
    // that, or commands are handed to another replica mid-call.
    let min_ack_wait = nova_runtime::provision::MinAckWait {
        at_least: config.call_timeout * 3,
        why: format!(
            "three times --call-timeout-secs {}",
            config.call_timeout.as_secs_f64()
        ),
    };
    let mut messages =
        setup::durable_messages(&js, COMMANDS_STREAM, &config.consumer, Some(&min_ack_wait))
            .await?;
    let mut live = config.policy;
    let build = |policy: Arc<Policy>| {
        let (sim_states, credentials) = (sim_states.clone(), config.aws_credentials.clone());
        async move {
            let built = backend::build_all(
                &policy,
                &sim_states,
                config.call_timeout,
                credentials.as_ref(),
            );
            Arc::new(built.await)
        }
    };
    let first_policy = live.current().policy;
    let actuator = Arc::new(Actuator {
        plans: std::sync::RwLock::new(walk::plans_of(&first_policy)),
        latest: std::sync::Mutex::new(HashMap::new()),
        health: health::HealthClient::new(),
        walks: std::sync::Mutex::new(tokio::task::JoinSet::new()),
        backends: std::sync::RwLock::new(build(first_policy).await),
        capacities,
        dead: DeadLetters::new(js.clone(), Stage::Actuator),
        auditor: Auditor::new(js.clone(), Stage::Actuator),
        js,
        max_attempts: config.max_attempts,
        deadline: config.call_timeout * 2,
        owner: nova_runtime::unique_id("actuator"),
    });
    // Capacity first: the arbiter needs it before it can decide anything.
    actuator.observe_all().await;
    let mut capacity_requests = setup::subscribe(
        &client,
        &subjects::control(CAPACITY_VERB),
        Some("nova-actuator"),
    )
    .await?;
    // Gates judge the targets' latest samples: every replica follows them
    // (no queue group), keeping only the metrics some gate names.
    let samples = setup::subscribe(&client, subjects::SAMPLES_ALL, None).await?;
    let follower = {
        let actuator = actuator.clone();
        tokio::spawn(async move { actuator.follow_samples(samples).await }.in_current_span())
    };
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
            next = live.changed() => {
                *actuator.plans.write().expect("plans") = walk::plans_of(&next.policy);
                let backends = build(next.policy).await;
                *actuator.backends.write().expect("backends") = backends;
                tracing::info!(revision = next.revision, "backends rebuilt from the reloaded policy");
            }
            _ = observe.tick() => {
                if observing.as_ref().is_none_or(|pass| pass.is_finished()) {
                    let actuator = actuator.clone();
                    let pass = async move { actuator.observe_all().await };
                    observing = Some(tokio::spawn(pass.in_current_span()));
                }
            }
            request = capacity_requests.next() => match request {
                Some(request) => actuator.answer_capacity(&client, request).await,
                None => break,
            },
            message = messages.next() => actuator.handle(message).await,
        }
    }
    if let Some(pass) = observing {
        // Observations are idempotent: one cut short is simply redone later.
        pass.abort();
    }
    // Walks in hand finish, as any command in hand does.
    let walks = std::mem::take(&mut *actuator.walks.lock().expect("walks"));
    walks.join_all().await;
    follower.abort();
    tracing::info!("actuator stopped");
    Ok(())
}

/// Backends read at once by the periodic observation pass.
const OBSERVE_CONCURRENCY: usize = 8;

/// Longest wait before a command behind another's lease is tried again.
const LEASE_POLL: Duration = Duration::from_millis(250);

/// `previous` (or a fresh record) with what the backend reports now; the
/// actuation fields (applied and claimed commands, lease) are kept.
fn observed_record(
    previous: Option<&CapacityRecord>,
    target: &str,
    kind: &str,
    obs: Observation,
) -> CapacityRecord {
    CapacityRecord {
        target: target.to_string(),
        desired: obs.desired,
        running: obs.running,
        tier: obs.tier,
        observed_ms: nova_runtime::now_ms(),
        backend: kind.to_string(),
        error: None,
        fence: obs.fence,
        ..previous.cloned().unwrap_or_default()
    }
}

/// How long a command this actuator leaves to a newer one waits before it
/// is delivered again (to any replica: a newer one applies it).
pub const DEFER_DELAY: Duration = Duration::from_secs(5);

/// Deliveries of a command for a target this actuator's policy lacks before
/// it is dead-lettered: [`DEFER_DELAY`] apart, about a minute, far longer
/// than a policy reload takes to reach every replica (2 s).
const UNKNOWN_TARGET_DELIVERIES: i64 = 12;

/// Why a capacity record is left alone: a newer version wrote it.
fn beyond_this_version(target: &str, v: Version) -> String {
    format!(
        "the capacity record of {target} is of version {v}, newer than this actuator's {}: \
         left to a newer actuator",
        Version::CURRENT
    )
}

fn fault(error: &BackendError) -> BackendFault {
    BackendFault {
        at_ms: nova_runtime::now_ms(),
        message: error.to_string(),
        extra: Default::default(),
    }
}

/// What became of a command, for its result.
struct Outcome {
    status: ResultStatus,
    from: Option<u32>,
    response: String,
    /// The failing gate's value and threshold, for a rollback.
    observed: Option<f64>,
    threshold: Option<f64>,
}

impl Actuator {
    /// The backends of the policy in force.
    fn backends(&self) -> Arc<HashMap<String, Backend>> {
        self.backends.read().expect("backends").clone()
    }

    /// Reads every backend's capacity into KV, a few targets at a time.
    async fn observe_all(&self) {
        let backends = self.backends();
        futures_util::stream::iter(backends.keys())
            .for_each_concurrent(OBSERVE_CONCURRENCY, |target| async move {
                if let Err(error) = self.observe(target).await {
                    tracing::warn!(target, "cannot observe capacity: {error}");
                }
            })
            .await;
    }

    /// Reads one target's capacity from its backend into KV. The record is
    /// written only if nothing else wrote it while the backend was read: a
    /// command applied meanwhile (here or in another replica) is newer than
    /// this observation, and wins. A failed read is stored as the record's
    /// `error` (when there is a record to keep it in) and returned as one line.
    async fn observe(&self, target: &str) -> Result<CapacityRecord, String> {
        let backends = self.backends();
        let backend = backends
            .get(target)
            .ok_or_else(|| format!("no target {target:?} in the policy"))?;
        let before = kv::load::<CapacityRecord>(&self.capacities, target)
            .await
            .map_err(|e| e.to_string())?;
        let (revision, previous) = before
            .as_ref()
            .map_or((0, None), |v| (v.revision, Some(&v.value)));
        if let Some(newer) = previous.filter(|p| !p.v.is_understood()) {
            // Never written back by a version that cannot fully read it.
            return Err(beyond_this_version(target, newer.v));
        }
        let read = backend.observe_fresh(target, previous).await;
        let (record, failure) = match read {
            Ok(obs) => (
                Some(observed_record(previous, target, backend.kind(), obs)),
                None,
            ),
            // The fleet's state in NATS unreachable, or read from a stale
            // copy: not the backend's error, and the record (of a later
            // reading or change) stays as it is.
            Err(error) if is_broker_outage(&error) => return Err(error.to_string()),
            Err(error) => {
                let failed = previous.map(|p| CapacityRecord {
                    error: Some(fault(&error)),
                    ..p.clone()
                });
                (failed, Some(error.to_string()))
            }
        };
        let Some(record) = record else {
            return Err(failure.unwrap_or_default());
        };
        let stored = match kv::save(&self.capacities, target, &record, revision).await {
            Ok(_) => record,
            Err(error) if error.kind() == KvErrorKind::Conflict => {
                metrics::counter!(names::KV_CONFLICTS, "bucket" => CAPACITY_BUCKET).increment(1);
                let newer = kv::load::<CapacityRecord>(&self.capacities, target)
                    .await
                    .map_err(|e| e.to_string())?;
                newer
                    .map(|v| v.value)
                    .ok_or_else(|| format!("capacity of {target} vanished while observed"))?
            }
            Err(error) => return Err(error.to_string()),
        };
        match failure {
            Some(error) => Err(error),
            None => Ok(stored),
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

    async fn handle(self: &Arc<Self>, message: jetstream::Message) {
        let subject = message.subject.to_string();
        let command: Command =
            match nova_runtime::decode(&message.payload, message.headers.as_ref()) {
                Ok(command) => command,
                Err(error) => {
                    // A newer version's command this one cannot read waits
                    // for a newer actuator; anything else is bad input.
                    if let Ok(VersionProbe { v }) =
                        nova_runtime::decode(&message.payload, message.headers.as_ref())
                        && !v.is_understood()
                    {
                        return self.defer(&message, &subject, v).await;
                    }
                    return self
                        .dead
                        .reject(&message, format!("not a command: {error}"))
                        .await;
                }
            };
        if !command.v.is_understood() {
            return self.defer(&message, &subject, command.v).await;
        }
        if command.target != subjects::last_token(&subject) {
            let reason = format!(
                "command for target {:?} arrived on {subject}",
                command.target
            );
            return self.dead.reject(&message, reason).await;
        }
        let backends = self.backends();
        let Some(backend) = backends.get(&command.target) else {
            // The arbiter that decided it had the target: this actuator may
            // not have reloaded that policy yet. Deferred for a minute, then
            // a bad message.
            let delivered = message.info().map_or(1, |info| info.delivered);
            if delivered < UNKNOWN_TARGET_DELIVERIES {
                metrics::counter!(names::DEFERRED, "stage" => "actuator").increment(1);
                tracing::warn!(
                    target = command.target,
                    delivered,
                    "command for a target this actuator's policy lacks; delivered again in {DEFER_DELAY:?}, \
                     in case its policy is being reloaded"
                );
                return nova_runtime::ack(&message, AckKind::Nak(Some(DEFER_DELAY))).await;
            }
            let reason = format!(
                "no target {:?} in the policy, after {delivered} deliveries over about a minute",
                command.target
            );
            return self.dead.reject(&message, reason).await;
        };
        if command.tier.is_none() && self.gradual(&command.target).is_some() {
            // It may walk for minutes: run it beside the loop, which keeps
            // taking commands (a newer one for this target supersedes it).
            let actuator = self.clone();
            let work = async move {
                let backends = actuator.backends();
                if let Some(backend) = backends.get(&command.target) {
                    actuator
                        .run_command(&message, &command, backend, true)
                        .await;
                }
            };
            let mut walks = self.walks.lock().expect("walks");
            // Finished ones are reaped here, so the set holds only those in hand.
            while walks.try_join_next().is_some() {}
            walks.spawn(work.in_current_span());
            return;
        }
        self.run_command(&message, &command, backend, false).await;
    }

    /// Executes `command` and acks, naks or dead-letters its message.
    async fn run_command(
        &self,
        message: &jetstream::Message,
        command: &Command,
        backend: &Backend,
        may_walk: bool,
    ) {
        let span = tracing::info_span!(
            "command",
            target = command.target,
            seq = command.seq,
            decision = command.decision_id
        );
        let work = self.execute(backend, command).instrument(span);
        // A backend that drains before removing capacity, or waits for a
        // deployment to be steady, holds the command past the consumer's
        // ack wait: tell JetStream it is in hand, or it hands it to another
        // replica mid-wait.
        let step = if !backend.waits() && !may_walk {
            work.await
        } else {
            keep_alive(
                message,
                (self.deadline / 2).max(Duration::from_secs(1)),
                work,
            )
            .await
        };
        match step {
            Ok(Step::Done) => nova_runtime::ack(message, AckKind::Ack).await,
            Ok(Step::Wait(delay)) => nova_runtime::ack(message, AckKind::Nak(Some(delay))).await,
            Ok(Step::Retry(delay)) => {
                nova_runtime::ack(message, AckKind::Nak(Some(delay))).await;
            }
            Err(error) if !error.is_retryable() => {
                let reason = format!("cannot be executed: {error}");
                self.dead.reject(message, reason).await;
            }
            Err(error) => {
                metrics::counter!(names::RETRIES, "stage" => "actuator").increment(1);
                tracing::warn!(%error, decision = command.decision_id, "will retry command");
                nova_runtime::ack(message, AckKind::Nak(Some(Duration::from_secs(1)))).await;
            }
        }
    }

    /// Leaves a command of a newer version to a newer actuator: counted and
    /// delivered again after [`DEFER_DELAY`], never dead-lettered.
    async fn defer(&self, message: &jetstream::Message, subject: &str, v: Version) {
        metrics::counter!(names::DEFERRED, "stage" => "actuator").increment(1);
        tracing::warn!(
            subject,
            "command of version {v}, newer than this actuator's {}, left to a newer actuator",
            Version::CURRENT
        );
        nova_runtime::ack(message, AckKind::Nak(Some(DEFER_DELAY))).await;
    }

    /// Claims the target's lease for `command`, by compare-and-set.
    async fn claim(
        &self,
        command: &Command,
        deadline: Duration,
    ) -> Result<(Claim, CapacityRecord), KvError> {
        let mut backoff = kv::conflict_backoff();
        loop {
            let stored = kv::load::<CapacityRecord>(&self.capacities, &command.target).await?;
            let (revision, record) = stored.map_or_else(
                || {
                    // Never observed (the backend could not be read at
                    // start): the lease needs a record; the capacity is
                    // the arbiter's belief until the call reports the truth.
                    let fresh = CapacityRecord {
                        target: command.target.clone(),
                        desired: command.from,
                        ..Default::default()
                    };
                    (0, fresh)
                },
                |v| (v.revision, v.value),
            );
            let now = nova_runtime::now_ms();
            if !record.v.is_understood() {
                // A newer actuator's record is not written back by this one:
                // the command waits and comes back, for a newer replica.
                metrics::counter!(names::DEFERRED, "stage" => "actuator").increment(1);
                tracing::warn!(
                    target = command.target,
                    "{}",
                    beyond_this_version(&command.target, record.v)
                );
                let until_ms =
                    now.saturating_add(i64::try_from(DEFER_DELAY.as_millis()).unwrap_or(i64::MAX));
                let holder = record.claimed_seq;
                return Ok((Claim::Wait { holder, until_ms }, record));
            }
            let claim = lease::claim(Some(&record), command.seq, now);
            let Claim::Take { attempt } = claim else {
                return Ok((claim, record));
            };
            let expires = lease_expiry(now, deadline);
            let taken = lease::take(
                &record,
                command.seq,
                &command.decision_id,
                &self.owner,
                expires,
                attempt,
            );
            match kv::save(&self.capacities, &command.target, &taken, revision).await {
                Ok(_) => return Ok((claim, taken)),
                // Another replica or the observation pass wrote the record:
                // read it again (it may hold a newer claim now). A record
                // that keeps changing is a conflict for the redelivery.
                Err(error) if error.kind() == KvErrorKind::Conflict => {
                    metrics::counter!(names::KV_CONFLICTS, "bucket" => CAPACITY_BUCKET)
                        .increment(1);
                    if !backoff.wait().await {
                        return Err(error);
                    }
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Applies `command` in one call within `deadline` and waits for the
    /// backend to settle at it.
    async fn apply_once(
        &self,
        backend: &Backend,
        command: &Command,
        deadline: Duration,
    ) -> Result<Walked, BackendError> {
        let applied = tokio::time::timeout(
            deadline,
            backend.apply(
                command.desired,
                command.tier.as_deref(),
                command.promote.as_deref(),
                command.seq,
            ),
        )
        .await
        .unwrap_or_else(|_| Err(backend::deadline(&command.target, deadline.as_secs())))?;
        let applied = self.settle(backend, command, deadline, applied).await?;
        Ok(Walked {
            end: End::Completed,
            before: applied.before.clone(),
            from: applied.before.as_ref().map_or(command.from, |b| b.desired),
            after: Some(applied),
            of: 1,
            walked: false,
        })
    }

    /// Records in the target's record that `command` waits for an older
    /// command's lease (`wanted_seq`, a high-water mark), by compare-and-set.
    async fn want(&self, command: &Command) -> Result<(), KvError> {
        kv::modify(
            &self.capacities,
            &command.target,
            |old: Option<CapacityRecord>| {
                let mut record = old.unwrap_or_default();
                if record.claimed_seq < command.seq {
                    record.wanted_seq = record.wanted_seq.max(command.seq);
                }
                record
            },
        )
        .await?;
        Ok(())
    }

    /// Writes the end of this actuator's hold on `command`, if it still
    /// holds the lease: `change` gets the record and returns the new one.
    /// Returns false when the lease was lost (expired and taken over).
    async fn release(
        &self,
        command: &Command,
        change: impl Fn(&CapacityRecord) -> CapacityRecord,
    ) -> Result<bool, KvError> {
        let held = self
            .change_held(command, |old| CapacityRecord {
                lease: None,
                ..change(old)
            })
            .await?;
        if !held {
            tracing::warn!(
                target = command.target,
                seq = command.seq,
                "lease lost during the backend call; the record is left to its new holder"
            );
        }
        Ok(held)
    }

    /// Waits for the backend to settle at `applied` (an ECS deployment
    /// steady), renewing the lease meanwhile so that it can stay as short
    /// as the calls for a holder that dies. A lease lost all the same (the
    /// broker unreachable past its expiry) ends the wait: the record is
    /// then its new holder's.
    async fn settle(
        &self,
        backend: &Backend,
        command: &Command,
        deadline: Duration,
        applied: Applied,
    ) -> Result<Applied, BackendError> {
        if backend.steady_timeout().is_zero() {
            return Ok(applied);
        }
        let fallback = applied.clone();
        let renewals = async {
            let mut ticks = tokio::time::interval((deadline / 3).max(Duration::from_millis(200)));
            ticks.tick().await;
            loop {
                ticks.tick().await;
                match self.renew(command, deadline).await {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(error) => {
                        tracing::warn!(%error, target = command.target, "cannot renew the lease; trying again")
                    }
                }
            }
        };
        tokio::select! {
            settled = backend.settle(applied) => settled,
            () = renewals => {
                tracing::warn!(target = command.target, seq = command.seq, "lease lost while waiting for the backend to settle");
                let mut applied = fallback;
                applied.response.push_str("; stopped waiting for it to be steady: the lease was lost");
                Ok(applied)
            }
        }
    }

    /// Lengthens this actuator's lease on `command` to `deadline` from now,
    /// if it still holds it; false when it was lost.
    async fn renew(&self, command: &Command, deadline: Duration) -> Result<bool, KvError> {
        let expires = lease_expiry(nova_runtime::now_ms(), deadline);
        self.change_held(command, |old| lease::extend(old, expires))
            .await
    }

    /// Rewrites the target's record with `change`, by compare-and-set, only
    /// while this actuator holds the lease on `command`; false when it was
    /// lost (expired and taken over), leaving the record to its new holder.
    async fn change_held(
        &self,
        command: &Command,
        change: impl Fn(&CapacityRecord) -> CapacityRecord,
    ) -> Result<bool, KvError> {
        let mut held = true;
        kv::modify(
            &self.capacities,
            &command.target,
            |old: Option<CapacityRecord>| {
                let old = old.unwrap_or_default();
                held = lease::holds(&old, command.seq, &self.owner);
                if held { change(&old) } else { old }
            },
        )
        .await?;
        Ok(held)
    }

    /// Gives the attempt back and has the command delivered again after
    /// [`BROKER_RETRY`]: the broker's outage (or a stale copy of the fleet's
    /// state) is not the backend failing, so it uses up none of the
    /// command's attempts.
    async fn wait_out_the_broker(
        &self,
        command: &Command,
        what: &str,
        error: &BackendError,
    ) -> Result<Step, StepError> {
        metrics::counter!(names::RETRIES, "stage" => "actuator").increment(1);
        tracing::warn!(decision = command.decision_id, "{what}: {error}");
        self.release(command, |r| CapacityRecord {
            attempts: r.attempts.saturating_sub(1),
            ..r.clone()
        })
        .await?;
        Ok(Step::Wait(BROKER_RETRY))
    }

    /// Settles a command whose every attempt ended without an outcome
    /// (its actuator died, or lost the lease, before recording one). One
    /// of them may have reached the backend, so what the backend has now
    /// decides the result: the change in effect is `succeeded`, anything
    /// else `failed`, and the record takes what was read.
    async fn settle_unfinished(
        &self,
        backend: &Backend,
        command: &Command,
        record: &CapacityRecord,
    ) -> Result<Step, StepError> {
        let kind = backend.kind();
        let attempts = self.max_attempts;
        let observed = tokio::time::timeout(
            self.deadline,
            backend.observe_fresh(&command.target, Some(record)),
        )
        .await
        .unwrap_or_else(|_| Err(backend::deadline(&command.target, self.deadline.as_secs())));
        if let Err(error) = &observed
            && is_broker_outage(error)
        {
            // What the fleet has cannot be known now (its state in NATS
            // unreachable, or read from a stale copy): settle it later, on
            // a reading that can be trusted, without using up an attempt.
            return self
                .wait_out_the_broker(command, "cannot settle yet, will read again", error)
                .await;
        }
        let (status, response) = match &observed {
            Ok(obs)
                if obs.desired == command.desired
                    && command
                        .tier
                        .as_ref()
                        .is_none_or(|t| obs.tier.as_ref() == Some(t)) =>
            {
                (
                    ResultStatus::Succeeded,
                    format!(
                        "in effect: {attempts} attempts ended without an outcome (their actuator \
                         died or lost its lease), and the backend reports desired {}{}, as asked",
                        obs.desired,
                        obs.tier
                            .as_ref()
                            .map_or(String::new(), |t| format!(" on tier {t}"))
                    ),
                )
            }
            Ok(obs) => (
                ResultStatus::Failed,
                format!(
                    "failed: {attempts} attempts ended without an outcome (their actuator died or \
                     lost its lease), and the backend reports desired {}, not {}",
                    obs.desired, command.desired
                ),
            ),
            Err(error) => (
                ResultStatus::Failed,
                format!(
                    "failed: {attempts} attempts ended without an outcome (their actuator died or \
                     lost its lease), and the backend cannot be read: {error}"
                ),
            ),
        };
        let failed = status == ResultStatus::Failed;
        self.release(command, |r| {
            let base = match &observed {
                Ok(obs) => observed_record(Some(r), &command.target, kind, obs.clone()),
                Err(_) => r.clone(),
            };
            CapacityRecord {
                applied_seq: r.applied_seq.max(command.seq),
                failed_seq: if failed {
                    r.failed_seq.max(command.seq)
                } else {
                    r.failed_seq
                },
                plan: None,
                ..base
            }
        })
        .await?;
        self.finish(command, kind, outcome(status, None, response))
            .await?;
        Ok(Step::Done)
    }

    /// Executes one command; see the module doc for the steps.
    async fn execute(&self, backend: &Backend, command: &Command) -> Result<Step, StepError> {
        let kind = backend.kind();
        // A drain is waited out inside the action, so it lengthens both.
        let deadline = self.deadline + backend.drain();
        let (claim, record) = self.claim(command, deadline).await?;
        let attempt = match claim {
            Claim::Superseded { by } => {
                let response = format!(
                    "superseded: command {} is older than command {by}, applied or being applied",
                    command.seq
                );
                self.finish(
                    command,
                    kind,
                    outcome(ResultStatus::Superseded, None, response),
                )
                .await?;
                return Ok(Step::Done);
            }
            Claim::AlreadyApplied => {
                let response = format!(
                    "already applied (a redelivery): the backend last reported desired {}",
                    record.desired
                );
                self.finish(
                    command,
                    kind,
                    outcome(ResultStatus::Skipped, None, response),
                )
                .await?;
                return Ok(Step::Done);
            }
            Claim::Wait { holder, until_ms } => {
                // A newer version's record is not written back by this one.
                if holder < command.seq
                    && record.wanted_seq < command.seq
                    && record.v.is_understood()
                {
                    // An older command holds the target (a gradual walk,
                    // perhaps): say that this one waits, so the walk stops
                    // at its next step instead of running to its end.
                    self.want(command).await?;
                }
                let left = u64::try_from(until_ms - nova_runtime::now_ms()).unwrap_or(0);
                tracing::debug!(
                    target = command.target,
                    seq = command.seq,
                    holder,
                    "waiting for the command in flight"
                );
                return Ok(Step::Wait(
                    Duration::from_millis(left.max(20)).min(LEASE_POLL),
                ));
            }
            Claim::Take { attempt } => attempt,
        };
        if attempt > self.max_attempts {
            return self.settle_unfinished(backend, command, &record).await;
        }
        let mut audit = self.record(
            command,
            AuditKind::Command,
            "executing",
            command.reason.clone(),
        );
        audit.from = Some(command.from);
        audit.to = Some(command.desired);
        if let Err(error) = self.auditor.record(&audit).await {
            // Nothing was called: give the lease back, so the redelivery
            // need not wait for it to expire.
            self.release(command, |r| r.clone()).await?;
            return Err(error.into());
        }
        // A move larger than the target's gradual step walks there in
        // validated steps; anything else (a tier, a promote) is one call.
        let spec = (command.tier.is_none() && command.promote.is_none())
            .then(|| self.gradual(&command.target))
            .flatten();
        let applied: Result<Walked, BackendError> = match &spec {
            Some(spec) => match self.plan(backend, command, &record, spec).await {
                Ok(Some(walk)) => self.walk(backend, command, deadline, spec, walk).await,
                Ok(None) => self.apply_once(backend, command, deadline).await,
                Err(error) => Err(error),
            },
            None => self.apply_once(backend, command, deadline).await,
        };
        match applied {
            Ok(walked) => {
                let after = walked.after.as_ref().map(|a| a.after.clone());
                self.release(command, |r| {
                    let base = match &after {
                        Some(obs) => observed_record(Some(r), &command.target, kind, obs.clone()),
                        None => r.clone(),
                    };
                    CapacityRecord {
                        applied_seq: r.applied_seq.max(command.seq),
                        plan: None,
                        ..base
                    }
                })
                .await?;
                let outcome = walk_outcome(command, spec.as_ref(), walked);
                self.finish(command, kind, outcome).await?;
                Ok(Step::Done)
            }
            Err(error) if is_broker_outage(&error) => {
                // A simulated fleet keeps its state in NATS: a stream without
                // a leader is the broker's outage, not the backend failing,
                // so it does not use up one of the command's attempts (the
                // cluster chaos test saw commands fail "after 3 attempts"
                // that way). The call is absolute, so repeating it is safe.
                self.wait_out_the_broker(command, "backend state unreachable, will retry", &error)
                    .await
            }
            Err(error) if error.is_retryable() && attempt < self.max_attempts => {
                metrics::counter!(names::RETRIES, "stage" => "actuator").increment(1);
                tracing::warn!(
                    attempt,
                    decision = command.decision_id,
                    kind = %error.kind(),
                    "backend call failed, will retry: {error}"
                );
                let stored = fault(&error);
                self.release(command, |r| CapacityRecord {
                    error: Some(stored.clone()),
                    ..r.clone()
                })
                .await?;
                let delay = retry_delay(attempt);
                // Each failed attempt is audited with what the backend
                // answered, so the chain shows every retry, not only the
                // last word.
                let reason = format!(
                    "attempt {attempt} of {} failed ({}), next in {:.1} s: {error}",
                    self.max_attempts,
                    error.kind(),
                    delay.as_secs_f64()
                );
                let mut audit = self.record(command, AuditKind::Command, "retrying", reason);
                audit.id = ids::derive(
                    "a",
                    &[
                        command.decision_id.as_bytes(),
                        b"retry",
                        &attempt.to_be_bytes(),
                    ],
                );
                audit.from = Some(command.from);
                audit.to = Some(command.desired);
                audit.backend_response = Some(error.to_string());
                self.auditor.record(&audit).await?;
                Ok(Step::Retry(delay))
            }
            Err(error) => {
                tracing::warn!(decision = command.decision_id, "command failed: {error}");
                // Record what the backend really has, and mark the command
                // as settled, so the arbiter's next base is the truth and not
                // the capacity that never came.
                let observed = backend
                    .observe_fresh(&command.target, Some(&record))
                    .await
                    .ok();
                let stored = fault(&error);
                self.release(command, |r| {
                    let base = match &observed {
                        Some(obs) => observed_record(Some(r), &command.target, kind, obs.clone()),
                        None => r.clone(),
                    };
                    CapacityRecord {
                        applied_seq: r.applied_seq.max(command.seq),
                        failed_seq: r.failed_seq.max(command.seq),
                        error: Some(stored.clone()),
                        plan: None,
                        ..base
                    }
                })
                .await?;
                // One line that names the kind: why it was not (or no
                // longer) retried.
                let class = error.kind();
                let response = if !error.is_retryable() && attempt == 1 {
                    format!("failed ({class}, not retried): {error}")
                } else if !error.is_retryable() {
                    format!("failed on attempt {attempt} ({class}, not retried): {error}")
                } else {
                    format!("failed after {attempt} attempts ({class}): {error}")
                };
                self.finish(command, kind, outcome(ResultStatus::Failed, None, response))
                    .await?;
                Ok(Step::Done)
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
        // One command record and one result record per decision, whatever
        // the outcome and however often a command is redelivered.
        let role: &[u8] = match kind {
            AuditKind::Result => b"result",
            _ => b"command",
        };
        let mut record = AuditRecord::new(
            ids::derive("a", &[command.decision_id.as_bytes(), role]),
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
        outcome: Outcome,
    ) -> Result<(), PublishError> {
        let Outcome {
            status,
            from,
            response,
            observed,
            threshold,
        } = outcome;
        let result = ActionResult {
            v: Version::CURRENT,
            decision_id: command.decision_id.clone(),
            seq: command.seq,
            target: command.target.clone(),
            ts: nova_runtime::now_ms(),
            status: status.clone(),
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
            ResultStatus::Skipped | ResultStatus::Superseded => {
                format!("{} left alone: {response}", command.target)
            }
            ResultStatus::RolledBack => format!(
                "{} not at desired {}: {response}",
                command.target, command.desired
            ),
            // The actuator writes only statuses it knows.
            ResultStatus::Failed | ResultStatus::Unknown(_) => {
                format!("{} not changed: {response}", command.target)
            }
        };
        let mut record = self.record(command, AuditKind::Result, status.as_str(), reason);
        record.from = from;
        record.to = Some(command.desired);
        record.backend_response = Some(response);
        record.observed = observed;
        record.threshold = threshold;
        self.auditor.record(&record).await?;
        metrics::counter!(names::COMMANDS, "status" => status.label()).increment(1);
        // From the decision's time to now: what an operator waits for.
        #[allow(clippy::cast_precision_loss)] // a latency in ms fits f64 exactly
        let seconds = (nova_runtime::now_ms() - command.ts).max(0) as f64 / 1000.0;
        metrics::histogram!(names::ACTION_SECONDS, "status" => status.label()).record(seconds);
        tracing::info!(
            target = command.target,
            seq = command.seq,
            status = status.as_str(),
            desired = command.desired,
            "command done"
        );
        Ok(())
    }
}

fn outcome(status: ResultStatus, from: Option<u32>, response: String) -> Outcome {
    Outcome {
        status,
        from,
        response,
        observed: None,
        threshold: None,
    }
}

/// The result of a command applied in one call or walked in steps.
fn walk_outcome(
    command: &Command,
    spec: Option<&nova_shared::gradual::Gradual>,
    walked: Walked,
) -> Outcome {
    let from = walked.before.as_ref().map(|b| b.desired);
    let last = walked
        .after
        .as_ref()
        .map_or_else(String::new, |a| a.response.clone());
    let step = spec.map_or(0, |s| s.step);
    match walked.end {
        End::Completed if !walked.walked => outcome(ResultStatus::Succeeded, from, last),
        End::Completed => outcome(
            ResultStatus::Succeeded,
            Some(walked.from),
            format!(
                "walked {} -> {} in {} steps of at most {step}, each validated; last step: {last}",
                walked.from, command.desired, walked.of
            ),
        ),
        End::RolledBack {
            failed,
            to,
            failure,
        } => Outcome {
            status: ResultStatus::RolledBack,
            from: Some(walked.from),
            response: format!(
                "step {failed} of {} failed validation twice ({}): rolled back to {to}, {}; rollback: {last}",
                walked.of,
                failure.text,
                if failed == 1 {
                    "where the walk started".to_string()
                } else {
                    format!("step {}, the last that passed", failed - 1)
                }
            ),
            observed: failure.observed,
            threshold: failure.threshold,
        },
        End::Superseded { steps, reached } => outcome(
            ResultStatus::Superseded,
            Some(walked.from),
            format!(
                "superseded between steps: a newer command for the target is waiting; stopped at step {steps} of {} ({reached}, validated)",
                walked.of
            ),
        ),
    }
}

/// Runs `work`, telling JetStream every `every` that `message` is still
/// being worked on (a progress ack restarts its ack wait).
async fn keep_alive<T>(
    message: &jetstream::Message,
    every: Duration,
    work: impl Future<Output = T>,
) -> T {
    tokio::pin!(work);
    let mut ticks = tokio::time::interval(every);
    // The first tick is at once; the message was just delivered.
    ticks.tick().await;
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = ticks.tick() => nova_runtime::ack(message, AckKind::Progress).await,
        }
    }
}

/// When a command whose backend state was unreachable (a broker outage) is
/// tried again.
const BROKER_RETRY: Duration = Duration::from_secs(1);

/// Whether a backend error is the broker's (the simulated fleet's state in
/// NATS KV unreachable for now) rather than the backend's own.
fn is_broker_outage(error: &BackendError) -> bool {
    use nova_runtime::error::ErrorKind;
    matches!(error.kind(), BackendErrorKind::Store(kind) if kind.is_retryable())
}

/// What to do with a command message after a step.
enum Step {
    /// Settled: ack.
    Done,
    /// Behind another command's lease: nak, to come back after this.
    Wait(Duration),
    /// The backend failed on this attempt: nak, to come back after this.
    Retry(Duration),
}

/// When a lease taken or renewed at `now_ms` for an action of `deadline`
/// ends: the deadline plus the margin for replicas' clocks.
fn lease_expiry(now_ms: i64, deadline: Duration) -> i64 {
    now_ms
        .saturating_add(i64::try_from(deadline.as_millis()).unwrap_or(i64::MAX))
        .saturating_add(lease::LEASE_MARGIN_MS)
}

/// The wait before attempt `attempt + 1` of a command whose backend call
/// failed: exponential from 1 s with jitter, below 30 s, so actuators that
/// failed together (a throttled API) do not come back together.
fn retry_delay(attempt: u32) -> Duration {
    let nth = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
    nova_runtime::retry::Backoff::new(Duration::from_secs(1), Duration::from_secs(30))
        .nth(nth)
        .unwrap_or(Duration::from_secs(30))
}
