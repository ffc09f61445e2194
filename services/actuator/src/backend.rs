//! Backends: where capacity actually changes. One value per target, built
//! from the policy's `backend:` block.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::kv::Store;
use aws_credential_types::Credentials;
use nova_runtime::error::ErrorKind;
use nova_runtime::kv::{KvError, KvErrorKind};
use nova_shared::policy::{Backend as BackendSpec, Policy};

use crate::ecs::EcsService;
use crate::rds::RdsReplicaSet;
use crate::rds_instance::RdsInstance;
use crate::sim::SimFleet;

/// What a backend reports about a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Desired capacity set on the backend.
    pub desired: u32,
    /// Capacity running now, when the backend knows.
    pub running: Option<u32>,
    /// Instance tier, for backends with tiers.
    pub tier: Option<String>,
    /// The backend's own fencing token, for a backend that keeps one: the
    /// sequence of the command that last changed the simulated fleet. ECS
    /// and RDS keep their state outside NATS and report none.
    pub fence: Option<u64>,
}

impl Observation {
    /// Whether this reading is older than the one `stored` holds: its
    /// fencing token is lower, so it was answered from a copy of the state
    /// that had not seen the last change (a follower, a deposed leader, or
    /// a write the broker lost). Such a reading is never stored: it would
    /// send the arbiter's base back to a capacity the target no longer has.
    pub fn predates(&self, stored: Option<&nova_shared::wire::CapacityRecord>) -> bool {
        matches!(
            (self.fence, stored.and_then(|r| r.fence)),
            (Some(read), Some(kept)) if read < kept
        )
    }
}

/// What a change did, as the backend reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// What the backend reported just before the change, when it was read.
    pub before: Option<Observation>,
    /// What the backend reports after the change.
    pub after: Observation,
    /// One line summarising the backend's answer.
    pub response: String,
}

/// A backend call that failed. Its text is one line that names the target,
/// so it can go to a log, the capacity record and an audit reason as it is;
/// its [`kind`](nova_runtime::error::Error::kind) says whether another
/// attempt may succeed.
pub type BackendError = nova_runtime::error::Error<BackendErrorKind>;

/// What went wrong with a backend call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendErrorKind {
    /// The API throttled the call (`ThrottlingException`, HTTP 429).
    Throttled,
    /// The API failed on its side (`ServerException`, HTTP 5xx).
    Unavailable,
    /// The call did not finish in time (the SDK's operation timeout, a
    /// connection timeout, the action's deadline).
    TimedOut,
    /// The endpoint could not be reached (DNS, a refused connection).
    Unreachable,
    /// Someone else is changing the resource (`UpdateInProgressException`,
    /// HTTP 409).
    Conflict,
    /// No credentials could be found by the provider chain.
    Credentials,
    /// The credentials may not do this (`AccessDeniedException`, HTTP 401/403).
    AccessDenied,
    /// The request is invalid (`ClientException`,
    /// `InvalidParameterException`, other HTTP 4xx).
    Invalid,
    /// The service, cluster or DB instance does not exist.
    NotFound,
    /// The backend cannot do what the command asks.
    Unsupported,
    /// The change was sent but the resource did not settle at it in time
    /// (an ECS deployment not steady, or failed): not sent again.
    NotSteady,
    /// The simulated fleet's state could not be read or written.
    Store(KvErrorKind),
    /// Nothing above fits (a response that could not be read, an error the
    /// SDK does not name): retried, within the command's attempts.
    Other,
}

impl std::fmt::Display for BackendErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BackendErrorKind::Throttled => f.write_str("throttled"),
            BackendErrorKind::Unavailable => f.write_str("service unavailable"),
            BackendErrorKind::TimedOut => f.write_str("timed out"),
            BackendErrorKind::Unreachable => f.write_str("unreachable"),
            BackendErrorKind::Conflict => f.write_str("conflict"),
            BackendErrorKind::Credentials => f.write_str("no credentials"),
            BackendErrorKind::AccessDenied => f.write_str("access denied"),
            BackendErrorKind::Invalid => f.write_str("invalid request"),
            BackendErrorKind::NotFound => f.write_str("not found"),
            BackendErrorKind::Unsupported => f.write_str("unsupported"),
            BackendErrorKind::NotSteady => f.write_str("not steady"),
            BackendErrorKind::Store(kind) => write!(f, "state store: {kind}"),
            BackendErrorKind::Other => f.write_str("unclassified"),
        }
    }
}

impl ErrorKind for BackendErrorKind {
    /// Throttling, AWS-side faults, timeouts, connection failures and
    /// conflicts may succeed on another attempt; missing credentials, a
    /// refused or invalid request, a missing service or an impossible
    /// change fail at once.
    fn is_retryable(self) -> bool {
        match self {
            BackendErrorKind::Throttled
            | BackendErrorKind::Unavailable
            | BackendErrorKind::TimedOut
            | BackendErrorKind::Unreachable
            | BackendErrorKind::Conflict
            | BackendErrorKind::Other => true,
            BackendErrorKind::Credentials
            | BackendErrorKind::AccessDenied
            | BackendErrorKind::Invalid
            | BackendErrorKind::NotFound
            | BackendErrorKind::Unsupported
            | BackendErrorKind::NotSteady => false,
            BackendErrorKind::Store(kind) => kind.is_retryable(),
        }
    }
}

/// The command asks for something the backend cannot do.
pub(crate) fn unsupported(backend: &str, what: &str) -> BackendError {
    BackendError::new(
        BackendErrorKind::Unsupported,
        format!("the {backend} backend cannot {what}"),
    )
}

/// The action did not finish within its deadline.
pub(crate) fn deadline(target: &str, secs: u64) -> BackendError {
    BackendError::new(
        BackendErrorKind::TimedOut,
        format!("target {target}: the backend did not answer within {secs} s"),
    )
}

/// How long readings older than the stored one are refused before they are
/// taken as the backend's state. A copy that has not seen the last write
/// catches up within a leader election (seconds); one still behind after
/// this has lost the write (an acknowledged write lost in a crash, as
/// Jepsen found for NATS), and refusing it for longer would hold the
/// target's commands forever on a state that will never come.
pub const STALE_PATIENCE_MS: i64 = 30_000;

/// `observation`, unless it predates the reading `stored` holds
/// ([`Observation::predates`]) and that reading is less than
/// [`STALE_PATIENCE_MS`] old at `now_ms`: then an error the actuator treats
/// as the broker's outage, so the command waits and reads again without
/// using up an attempt. Counted either way it goes wrong; a stale reading
/// taken after the patience is logged as the lost write it is.
fn fresh(
    target: &str,
    kind: &'static str,
    observation: Observation,
    stored: Option<&nova_shared::wire::CapacityRecord>,
    now_ms: i64,
) -> Result<Observation, BackendError> {
    if !observation.predates(stored) {
        return Ok(observation);
    }
    metrics::counter!(nova_runtime::telemetry::names::STALE_READS, "backend" => kind).increment(1);
    let read = observation.fence.unwrap_or_default();
    let kept = stored.and_then(|r| r.fence).unwrap_or_default();
    let kept_for = stored.map_or(0, |r| now_ms.saturating_sub(r.observed_ms));
    if kept_for >= STALE_PATIENCE_MS {
        tracing::warn!(
            target,
            "the backend's state is still the one set by command {read}, {} s after command \
             {kept} was read back: the broker lost that write, so the state is taken as it is",
            kept_for / 1000
        );
        return Ok(observation);
    }
    Err(BackendError::new(
        BackendErrorKind::Store(KvErrorKind::Unavailable),
        format!(
            "target {target}: the backend's state was read from a stale copy (it was last set by \
             command {read}, older than command {kept} already seen); read again"
        ),
    ))
}

/// The simulated fleet's state could not be read or written.
pub(crate) fn store(error: KvError) -> BackendError {
    BackendError::with_source(
        BackendErrorKind::Store(error.kind()),
        format!("simulated fleet state: {error}"),
        error,
    )
}

/// A target's backend.
pub enum Backend {
    /// An ECS service.
    Ecs(EcsService),
    /// A simulated fleet.
    Sim(Box<SimFleet>),
    /// The read replicas of an RDS primary.
    RdsReplicas(RdsReplicaSet),
    /// One RDS DB instance's class.
    RdsInstance(RdsInstance),
}

impl Backend {
    /// `ecs`, `sim`, `rds_replicas` or `rds_instance`.
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Ecs(_) => "ecs",
            Backend::Sim(_) => "sim",
            Backend::RdsReplicas(_) => "rds_replicas",
            Backend::RdsInstance(_) => "rds_instance",
        }
    }

    /// How long a scale-down may wait inside its action before it removes
    /// capacity (an RDS replica's drain); the action's deadline and lease
    /// are this much longer.
    pub fn drain(&self) -> Duration {
        match self {
            Backend::RdsReplicas(rds) => rds.drain(),
            Backend::Ecs(_) | Backend::Sim(_) | Backend::RdsInstance(_) => Duration::ZERO,
        }
    }

    /// Whether an action on this backend may wait inside it (a drain, a
    /// steady wait), so its command must be kept in hand with progress acks.
    pub fn waits(&self) -> bool {
        !self.drain().is_zero() || !self.steady_timeout().is_zero()
    }

    /// How long a change may wait, after its call, for the backend to settle
    /// at it (an ECS deployment becoming steady); the lease is renewed
    /// meanwhile.
    pub fn steady_timeout(&self) -> Duration {
        match self {
            Backend::Ecs(ecs) => ecs.steady_timeout(),
            Backend::RdsReplicas(_) | Backend::Sim(_) | Backend::RdsInstance(_) => Duration::ZERO,
        }
    }

    /// Waits for the backend to settle at what `applied` asked, within
    /// [`steady_timeout`](Self::steady_timeout); returns `applied` with what
    /// was seen at the end.
    pub async fn settle(&self, applied: Applied) -> Result<Applied, BackendError> {
        match self {
            Backend::Ecs(ecs) if !ecs.steady_timeout().is_zero() => ecs.wait_steady(applied).await,
            Backend::Ecs(_)
            | Backend::RdsReplicas(_)
            | Backend::Sim(_)
            | Backend::RdsInstance(_) => Ok(applied),
        }
    }

    /// Reads the current capacity.
    pub async fn observe(&self) -> Result<Observation, BackendError> {
        match self {
            Backend::Ecs(ecs) => ecs.observe().await,
            Backend::Sim(sim) => sim.observe(nova_runtime::now_ms()).await,
            Backend::RdsReplicas(rds) => rds.observe().await,
            Backend::RdsInstance(rds) => rds.observe().await,
        }
    }

    /// [`Backend::observe`], unless the reading predates the one `stored`
    /// holds (see [`fresh`]).
    pub async fn observe_fresh(
        &self,
        target: &str,
        stored: Option<&nova_shared::wire::CapacityRecord>,
    ) -> Result<Observation, BackendError> {
        let observation = self.observe().await?;
        fresh(
            target,
            self.kind(),
            observation,
            stored,
            nova_runtime::now_ms(),
        )
    }

    /// Sets the desired capacity, and the instance tier when `tier` is
    /// given, or promotes the replica `promote` (a replica set only), for
    /// command `seq` (the simulated fleet's fencing token); returns what
    /// the backend reports before and after.
    pub async fn apply(
        &self,
        desired: u32,
        tier: Option<&str>,
        promote: Option<&str>,
        seq: u64,
    ) -> Result<Applied, BackendError> {
        let started = std::time::Instant::now();
        let result = match (self, tier, promote) {
            (Backend::RdsReplicas(rds), None, Some(replica)) => rds.promote(replica).await,
            (_, _, Some(replica)) => Err(unsupported(
                self.kind(),
                &format!("promote read replicas (asked to promote {replica})"),
            )),
            (Backend::Ecs(ecs), tier, None) => ecs.apply(desired, tier).await,
            (Backend::Sim(sim), tier, None) => {
                sim.apply(desired, tier, seq, nova_runtime::now_ms()).await
            }
            (Backend::RdsReplicas(rds), Some(value), None) => rds.set_pool(value).await,
            (Backend::RdsReplicas(rds), None, None) => rds.set_desired(desired).await,
            (Backend::RdsInstance(rds), class, None) => rds.apply(desired, class).await,
        };
        metrics::histogram!(nova_runtime::telemetry::names::BACKEND_CALL_SECONDS, "backend" => self.kind())
            .record(started.elapsed().as_secs_f64());
        result
    }
}

/// Builds a backend per target. ECS and RDS clients are shared per
/// (region, endpoint).
pub async fn build_all(
    policy: &Policy,
    sim_states: &Store,
    call_timeout: Duration,
    credentials: Option<&Credentials>,
) -> HashMap<String, Backend> {
    let mut ecs_clients: HashMap<(String, Option<String>), aws_sdk_ecs::Client> = HashMap::new();
    let mut rds_clients: HashMap<(String, Option<String>), aws_sdk_rds::Client> = HashMap::new();
    let mut backends = HashMap::new();
    // One RDS client per (region, endpoint), for replica sets and
    // instances alike.
    let rds_client =
        async |clients: &mut HashMap<(String, Option<String>), aws_sdk_rds::Client>,
               region: &str,
               endpoint: Option<&str>| {
            let key = (region.to_string(), endpoint.map(str::to_string));
            if let Some(client) = clients.get(&key) {
                return client.clone();
            }
            let client = crate::rds::client(region, endpoint, call_timeout, credentials).await;
            clients.insert(key, client.clone());
            client
        };
    for target in policy.targets.values() {
        let backend = match &target.backend {
            BackendSpec::Ecs(spec) => {
                let key = (spec.region.clone(), spec.endpoint_url.clone());
                let client = match ecs_clients.get(&key) {
                    Some(client) => client.clone(),
                    None => {
                        let client = crate::ecs::client(
                            &spec.region,
                            spec.endpoint_url.as_deref(),
                            call_timeout,
                            credentials,
                        )
                        .await;
                        ecs_clients.insert(key, client.clone());
                        client
                    }
                };
                Backend::Ecs(EcsService::new(client, &target.name, spec))
            }
            BackendSpec::RdsReplicas(spec) => {
                let client =
                    rds_client(&mut rds_clients, &spec.region, spec.endpoint_url.as_deref()).await;
                Backend::RdsReplicas(RdsReplicaSet::new(client, &target.name, spec))
            }
            BackendSpec::RdsInstance(spec) => {
                let client =
                    rds_client(&mut rds_clients, &spec.region, spec.endpoint_url.as_deref()).await;
                Backend::RdsInstance(RdsInstance::new(client, &target.name, spec))
            }
            BackendSpec::Sim(spec) => Backend::Sim(Box::new(SimFleet::new(
                sim_states.clone(),
                &target.name,
                spec.clone(),
            ))),
        };
        backends.insert(target.name.clone(), backend);
    }
    backends
}

#[cfg(test)]
mod tests {
    use super::*;
    use nova_shared::wire::CapacityRecord;

    #[test]
    fn a_reading_predates_the_stored_one_only_when_both_have_tokens_and_its_is_lower() {
        let reading = |fence| Observation {
            desired: 3,
            running: Some(3),
            tier: None,
            fence,
        };
        let stored = |fence| CapacityRecord {
            fence,
            ..CapacityRecord::default()
        };
        let cases = [
            // (reading's token, stored token, predates)
            (Some(4), Some(5), true),
            (Some(0), Some(1), true),
            (Some(5), Some(5), false),
            (Some(6), Some(5), false),
            // ECS and RDS keep no token: never refused.
            (None, None, false),
            (None, Some(5), false),
            // A record written before tokens: the first reading sets one.
            (Some(0), None, false),
        ];
        for (read, kept, predates) in cases {
            assert_eq!(
                reading(read).predates(Some(&stored(kept))),
                predates,
                "reading {read:?}, stored {kept:?}"
            );
        }
        assert!(!reading(Some(0)).predates(None), "no record yet");
    }

    /// A wall-clock time for the stale-reading tables, unix ms.
    const NOW: i64 = 1_800_000_000_000;

    /// A record of a reading set by command 148, made `age_ms` before NOW.
    fn stored_148(age_ms: i64) -> CapacityRecord {
        CapacityRecord {
            fence: Some(148),
            observed_ms: NOW - age_ms,
            ..CapacityRecord::default()
        }
    }

    /// A reading of the state command 143 set.
    fn read_143() -> Observation {
        Observation {
            desired: 145,
            running: Some(145),
            tier: None,
            fence: Some(143),
        }
    }

    #[test]
    fn a_stale_reading_is_the_brokers_error_naming_both_commands() {
        let stored = stored_148(1_000);
        let reading = read_143();
        let error = fresh("t06", "sim", reading.clone(), Some(&stored), NOW).unwrap_err();
        assert_eq!(
            error.kind(),
            BackendErrorKind::Store(KvErrorKind::Unavailable)
        );
        assert!(
            error
                .to_string()
                .contains("last set by command 143, older than command 148"),
            "{error}"
        );
        let current = Observation {
            fence: Some(148),
            ..reading
        };
        assert_eq!(
            fresh("t06", "sim", current.clone(), Some(&stored), NOW).unwrap(),
            current
        );
    }

    #[test]
    fn a_reading_stale_for_longer_than_the_patience_is_taken_as_a_lost_write() {
        // (stored reading's age, whether the older reading is taken)
        let cases = [
            (0, false),
            (STALE_PATIENCE_MS - 1, false),
            (STALE_PATIENCE_MS, true),
            (10 * STALE_PATIENCE_MS, true),
            // A stored reading from the future (clocks apart) is young.
            (-5_000, false),
        ];
        for (age_ms, taken) in cases {
            let reading = read_143();
            let got = fresh(
                "t06",
                "sim",
                reading.clone(),
                Some(&stored_148(age_ms)),
                NOW,
            );
            assert_eq!(got.is_ok(), taken, "stored {age_ms} ms ago: {got:?}");
            if taken {
                assert_eq!(got.unwrap(), reading);
            }
        }
    }
}
