//! Gradual walks (`nova_shared::gradual`): the actuator performs the
//! actions of a [`Walk`] and feeds back what happened. Each step is an
//! absolute capacity applied through the backend like any command; between
//! steps the lease is renewed (so it stays as short as one call for a
//! holder that dies), the plan's progress is recorded in the capacity
//! record (`plan`), and a newer command waiting for the target
//! (`wanted_seq`) stops the walk at the step it reached.
//!
//! Gate values come from the target's normalised samples
//! (`nova.samples.<target>`), which the actuator follows for the metrics its
//! targets' gates name, keeping the latest value per instance
//! ([`nova_shared::gradual::Latest`], bounded). A gate judges only samples
//! taken after its step was applied and no older than the policy's
//! `evaluation.staleness_secs`; a gate without one does not fail the step,
//! and the `validated` audit record says it was not judged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use nova_runtime::kv;
use nova_shared::codec::{self, Encoding};
use nova_shared::gradual::{Action, End, Event, Failure, Gradual, Latest, Walk, judge};
use nova_shared::ids;
use nova_shared::policy::Policy;
use nova_shared::wire::{AuditKind, CapacityRecord, Command, PlanProgress, SampleBatch};

use crate::backend::{self, Applied, Backend, BackendError, BackendErrorKind, Observation};
use crate::{Actuator, lease_expiry, observed_record};

/// The gradual settings of every target that has them, and how old a
/// sample may be to count for a gate.
#[derive(Debug, Default)]
pub(crate) struct Plans {
    pub(crate) specs: HashMap<String, Gradual>,
    pub(crate) staleness_ms: i64,
}

impl Plans {
    pub(crate) fn from_policy(policy: &Policy) -> Plans {
        Plans {
            specs: policy
                .targets
                .values()
                .filter_map(|t| t.gradual.clone().map(|g| (t.name.clone(), g)))
                .collect(),
            staleness_ms: nova_shared::units::secs_to_ms(policy.evaluation.staleness_secs),
        }
    }

    fn watches(&self, target: &str, metric: &str) -> bool {
        self.specs
            .get(target)
            .is_some_and(|g| g.metrics().any(|m| m == metric))
    }
}

/// How a walk ended, with what the backend reported along the way.
pub(crate) struct Walked {
    pub(crate) end: End,
    /// What the backend reported before the first step.
    pub(crate) before: Option<Observation>,
    /// What it reported after the last change (a step or the rollback);
    /// none when nothing was applied (superseded before the first step).
    pub(crate) after: Option<Applied>,
    /// Steps in the walk.
    pub(crate) of: usize,
    /// The walk's start.
    pub(crate) from: u32,
    /// Whether it walked in steps (false: one call).
    pub(crate) walked: bool,
}

/// A lease lost mid-walk: the record is its new holder's.
fn lease_lost(target: &str) -> BackendError {
    BackendError::new(
        BackendErrorKind::TimedOut,
        format!("target {target}: the lease was lost during the gradual walk"),
    )
}

impl Actuator {
    /// The target's gradual settings, if it has any.
    pub(crate) fn gradual(&self, target: &str) -> Option<Gradual> {
        self.plans.read().expect("plans").specs.get(target).cloned()
    }

    /// Follows `nova.samples.*`, keeping the latest value of every metric a
    /// gate watches, until the subscription ends.
    pub(crate) async fn follow_samples(&self, mut samples: async_nats::Subscriber) {
        while let Some(message) = samples.next().await {
            let Ok(batch) = codec::decode::<SampleBatch>(&message.payload, Encoding::MsgPack)
            else {
                // The evaluator dead-letters what it cannot read; a gate
                // simply has no value from it.
                continue;
            };
            let plans = self.plans.read().expect("plans").clone();
            let mut latest = self.latest.lock().expect("latest");
            for sample in &batch.samples {
                if plans.watches(&batch.target, &sample.metric) {
                    latest.entry(batch.target.clone()).or_default().record(
                        &sample.metric,
                        sample.instance.as_deref(),
                        sample.ts,
                        sample.value,
                    );
                }
            }
        }
    }

    /// The walk for `command` if it moves the target by more than a step:
    /// taken up again where a previous attempt of this command left it
    /// (its plan in the record), else from what the backend reports now.
    pub(crate) async fn plan(
        &self,
        backend: &Backend,
        command: &Command,
        record: &CapacityRecord,
        spec: &Gradual,
    ) -> Result<Option<Walk>, BackendError> {
        if let Some(plan) = record
            .plan
            .as_ref()
            .filter(|p| p.seq == command.seq && p.desired == command.desired && p.step > 0)
        {
            let walk = Walk::new(plan.from, command.desired, spec.step, spec.delay_secs);
            return Ok(Some(walk.resume(plan.step as usize)));
        }
        let now = tokio::time::timeout(
            self.deadline,
            backend.observe_fresh(&command.target, Some(record)),
        )
        .await
        .unwrap_or_else(|_| Err(backend::deadline(&command.target, self.deadline.as_secs())))?;
        Ok(spec
            .applies(now.desired, command.desired)
            .then(|| Walk::new(now.desired, command.desired, spec.step, spec.delay_secs)))
    }

    /// Performs `walk` for `command`; see the module doc.
    pub(crate) async fn walk(
        &self,
        backend: &Backend,
        command: &Command,
        deadline: Duration,
        spec: &Gradual,
        mut walk: Walk,
    ) -> Result<Walked, BackendError> {
        let of = walk.of();
        let mut before: Option<Observation> = None;
        let mut after: Option<Applied> = None;
        // When the step being validated was applied: gates judge only
        // samples taken since.
        let mut applied_at = nova_runtime::now_ms();
        let mut action = walk.action();
        loop {
            action = match action {
                Action::Apply { capacity, step, of } => {
                    if self.newer_waiting(command).await {
                        walk.next(Event::NewerWaiting, nova_runtime::now_ms())
                    } else {
                        let applied = self.step_to(backend, command, deadline, capacity).await?;
                        applied_at = nova_runtime::now_ms();
                        if before.is_none() {
                            before = applied.before.clone();
                        }
                        let last = self.good_capacity(&walk, step);
                        self.progress(command, &walk, step, capacity, &applied)
                            .await?;
                        let reason = format!(
                            "step {step} of {of}: {last} -> {capacity} (walking {} -> {} by {}, {} s between steps)",
                            walk.from, command.desired, spec.step, spec.delay_secs
                        );
                        let mut audit = self.step_record(command, "step", step, reason);
                        audit.from = Some(last);
                        audit.to = Some(capacity);
                        audit.backend_response = Some(applied.response.clone());
                        self.auditor
                            .record(&audit)
                            .await
                            .map_err(|e| publish_failed(command, e))?;
                        after = Some(applied);
                        walk.next(Event::Applied, nova_runtime::now_ms())
                    }
                }
                Action::Wait { until_ms } => {
                    self.wait_holding(command, deadline, until_ms).await?;
                    walk.next(Event::Elapsed, nova_runtime::now_ms())
                }
                Action::Pause {
                    step,
                    until_ms,
                    failure,
                } => {
                    let secs = (until_ms - nova_runtime::now_ms()).max(0) as f64 / 1000.0;
                    let reason = format!(
                        "step {step} of {of} failed validation ({}): pausing {secs:.0} s (twice the delay) before checking again",
                        failure.text
                    );
                    let mut audit = self.step_record(command, "paused", step, reason);
                    fill_failure(&mut audit, &failure);
                    audit.to = walk.steps.get(step - 1).copied();
                    self.auditor
                        .record(&audit)
                        .await
                        .map_err(|e| publish_failed(command, e))?;
                    self.wait_holding(command, deadline, until_ms).await?;
                    walk.next(Event::Elapsed, nova_runtime::now_ms())
                }
                Action::Validate { step, capacity } => {
                    let verdict = self.validate(command, spec, applied_at).await;
                    if verdict.ok() {
                        let reason = format!(
                            "step {step} of {of} ({capacity}) passed validation: {}",
                            verdict.summary()
                        );
                        let mut audit = self.step_record(command, "validated", step, reason);
                        audit.to = Some(capacity);
                        self.auditor
                            .record(&audit)
                            .await
                            .map_err(|e| publish_failed(command, e))?;
                    }
                    walk.next(Event::Checked(verdict), nova_runtime::now_ms())
                }
                Action::RollBack {
                    failed,
                    to,
                    failure,
                } => {
                    let at = walk.steps.get(failed - 1).copied().unwrap_or(to);
                    let reason = format!(
                        "rolling back {at} -> {to}: step {failed} of {of} failed validation twice ({}); {to} is {}",
                        failure.text,
                        if failed == 1 {
                            "where the walk started".to_string()
                        } else {
                            format!("step {}, the last that passed", failed - 1)
                        }
                    );
                    let mut audit = self.step_record(command, "rollback", failed, reason);
                    fill_failure(&mut audit, &failure);
                    audit.from = Some(at);
                    audit.to = Some(to);
                    self.auditor
                        .record(&audit)
                        .await
                        .map_err(|e| publish_failed(command, e))?;
                    let applied = self.step_to(backend, command, deadline, to).await?;
                    after = Some(applied);
                    walk.next(Event::Applied, nova_runtime::now_ms())
                }
                Action::Finish(end) => {
                    return Ok(Walked {
                        end,
                        before,
                        after,
                        of,
                        from: walk.from,
                        walked: true,
                    });
                }
            };
        }
    }

    /// The capacity before step `step` (from 1): the start, or the step before.
    fn good_capacity(&self, walk: &Walk, step: usize) -> u32 {
        walk.good_before(step - 1)
    }

    /// Applies one absolute capacity within the deadline, waiting for the
    /// backend to settle at it (renewing the lease meanwhile).
    async fn step_to(
        &self,
        backend: &Backend,
        command: &Command,
        deadline: Duration,
        capacity: u32,
    ) -> Result<Applied, BackendError> {
        // The lease covers one call from here.
        if !self
            .renew(command, deadline)
            .await
            .map_err(backend::store)?
        {
            return Err(lease_lost(&command.target));
        }
        let applied =
            tokio::time::timeout(deadline, backend.apply(capacity, None, None, command.seq))
                .await
                .unwrap_or_else(|_| Err(backend::deadline(&command.target, deadline.as_secs())))?;
        self.settle(backend, command, deadline, applied).await
    }

    /// Records step `step` of `walk` in the capacity record, with what the
    /// backend reports, and lengthens the lease.
    async fn progress(
        &self,
        command: &Command,
        walk: &Walk,
        step: usize,
        capacity: u32,
        applied: &Applied,
    ) -> Result<(), BackendError> {
        let plan = PlanProgress {
            seq: command.seq,
            step: u32::try_from(step).unwrap_or(u32::MAX),
            of: u32::try_from(walk.of()).unwrap_or(u32::MAX),
            to: capacity,
            from: walk.from,
            desired: command.desired,
            extra: Default::default(),
        };
        let expires = lease_expiry(nova_runtime::now_ms(), self.deadline);
        let kind = self
            .backends()
            .get(&command.target)
            .map_or("", |b| b.kind());
        let held = self
            .change_held(command, |r| {
                let observed =
                    observed_record(Some(r), &command.target, kind, applied.after.clone());
                CapacityRecord {
                    plan: Some(plan.clone()),
                    ..nova_shared::lease::extend(&observed, expires)
                }
            })
            .await
            .map_err(backend::store)?;
        if held {
            Ok(())
        } else {
            Err(lease_lost(&command.target))
        }
    }

    /// Waits until `until_ms` (wall clock), renewing the lease every third
    /// of the deadline.
    async fn wait_holding(
        &self,
        command: &Command,
        deadline: Duration,
        until_ms: i64,
    ) -> Result<(), BackendError> {
        let chunk = i64::try_from((deadline / 3).as_millis())
            .unwrap_or(i64::MAX)
            .max(200);
        loop {
            let left = until_ms - nova_runtime::now_ms();
            if left <= 0 {
                return Ok(());
            }
            let nap = u64::try_from(left.min(chunk)).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(nap)).await;
            match self.renew(command, deadline).await {
                Ok(true) => {}
                Ok(false) => return Err(lease_lost(&command.target)),
                Err(error) => {
                    tracing::warn!(%error, target = command.target, "cannot renew the lease; trying again");
                }
            }
        }
    }

    /// Whether a newer command for the target waits for this one's lease.
    async fn newer_waiting(&self, command: &Command) -> bool {
        match kv::load::<CapacityRecord>(&self.capacities, &command.target).await {
            Ok(Some(record)) => record.value.wanted_seq > command.seq,
            Ok(None) => false,
            Err(error) => {
                // Not knowing is not a reason to stop: the next step checks again.
                tracing::warn!(%error, target = command.target, "cannot read the capacity record");
                false
            }
        }
    }

    /// Runs the step's checks: the health check, then the gates on the
    /// samples taken since `applied_at`.
    async fn validate(
        &self,
        command: &Command,
        spec: &Gradual,
        applied_at: i64,
    ) -> nova_shared::gradual::Verdict {
        let health = match &spec.health_check {
            Some(check) => Some(self.health.check(check).await),
            None => None,
        };
        let staleness = self.plans.read().expect("plans").staleness_ms;
        let since = applied_at.max(nova_runtime::now_ms().saturating_sub(staleness));
        let latest = self
            .latest
            .lock()
            .expect("latest")
            .get(&command.target)
            .cloned()
            .unwrap_or_else(Latest::default);
        judge(&spec.gates, &latest, since, health)
    }

    /// A record of the walk of `command`, one per (`outcome`, step), so a
    /// resumed walk does not audit a step twice.
    fn step_record(
        &self,
        command: &Command,
        outcome: &str,
        step: usize,
        reason: String,
    ) -> nova_shared::wire::AuditRecord {
        let mut audit = self.record(command, AuditKind::Command, outcome, reason);
        let step = u64::try_from(step).unwrap_or(u64::MAX).to_be_bytes();
        audit.id = ids::derive(
            "a",
            &[command.decision_id.as_bytes(), outcome.as_bytes(), &step],
        );
        audit
    }
}

fn fill_failure(audit: &mut nova_shared::wire::AuditRecord, failure: &Failure) {
    audit.observed = failure.observed;
    audit.threshold = failure.threshold;
}

/// An audit record that cannot be published mid-walk: retried like a
/// broker outage (the walk is taken up again where it stood).
fn publish_failed(command: &Command, error: nova_runtime::publish::PublishError) -> BackendError {
    BackendError::new(
        BackendErrorKind::Store(nova_runtime::kv::KvErrorKind::Unavailable),
        format!(
            "target {}: cannot audit the gradual walk: {error}",
            command.target
        ),
    )
}

/// The plans of a policy, shared with the sample follower.
pub(crate) fn plans_of(policy: &Policy) -> Arc<Plans> {
    Arc::new(Plans::from_policy(policy))
}
