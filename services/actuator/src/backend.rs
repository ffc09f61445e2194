//! Backends: where capacity actually changes. One value per target, built
//! from the policy's `backend:` block.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::kv::Store;
use aws_credential_types::Credentials;
use nova_shared::policy::{Backend as BackendSpec, Policy};
use thiserror::Error;

use crate::ecs::EcsService;
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

/// A backend call that failed. Every message is one line that names the
/// target, so it can go to a log, the capacity record and an audit reason
/// as it is.
#[derive(Debug, Error)]
pub enum BackendError {
    /// No AWS credentials could be found by the provider chain.
    #[error(
        "target {target}: no AWS credentials (tried {providers}: {detail}); set AWS_ACCESS_KEY_ID \
         and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or run with an IAM role"
    )]
    Credentials {
        /// Target.
        target: String,
        /// The providers tried, in order.
        providers: &'static str,
        /// What the last provider said.
        detail: String,
    },
    /// An ECS API call failed.
    #[error("target {target}: ECS {operation} failed: {message}")]
    Ecs {
        /// Target.
        target: String,
        /// The API operation.
        operation: &'static str,
        /// What went wrong, on one line (the service's code and message, or
        /// the connection's innermost error).
        message: String,
        /// Whether another attempt may succeed (throttling, 5xx, timeouts,
        /// connection failures).
        retryable: bool,
    },
    /// The ECS service does not exist.
    #[error("target {target}: ECS service {service} not found in cluster {cluster}: {reason}")]
    EcsMissing {
        /// Target.
        target: String,
        /// Cluster.
        cluster: String,
        /// Service.
        service: String,
        /// What ECS said.
        reason: String,
    },
    /// The command asks for something this backend cannot do.
    #[error("the {backend} backend cannot {what}")]
    Unsupported {
        /// Backend kind.
        backend: &'static str,
        /// What was asked.
        what: String,
    },
    /// The call did not finish within the action's deadline.
    #[error("target {target}: the backend did not answer within {secs} s")]
    Deadline {
        /// Target.
        target: String,
        /// The deadline.
        secs: u64,
    },
    /// The simulated fleet's state could not be read or written.
    #[error("simulated fleet state: {0}")]
    Sim(#[from] nova_runtime::kv::KvError),
}

impl BackendError {
    /// Whether another attempt may succeed. Missing credentials, a missing
    /// service, a refused request or an impossible change fail at once.
    pub fn is_retryable(&self) -> bool {
        match self {
            BackendError::Ecs { retryable, .. } => *retryable,
            BackendError::Deadline { .. } | BackendError::Sim(_) => true,
            BackendError::Credentials { .. }
            | BackendError::EcsMissing { .. }
            | BackendError::Unsupported { .. } => false,
        }
    }
}

/// A target's backend.
pub enum Backend {
    /// An ECS service.
    Ecs(EcsService),
    /// A simulated fleet.
    Sim(Box<SimFleet>),
}

impl Backend {
    /// `ecs` or `sim`.
    pub fn kind(&self) -> &'static str {
        match self {
            Backend::Ecs(_) => "ecs",
            Backend::Sim(_) => "sim",
        }
    }

    /// Reads the current capacity.
    pub async fn observe(&self) -> Result<Observation, BackendError> {
        match self {
            Backend::Ecs(ecs) => ecs.observe().await,
            Backend::Sim(sim) => sim.observe(nova_runtime::now_ms()).await,
        }
    }

    /// Sets the desired capacity, and the instance tier when `tier` is
    /// given; returns what the backend reports before and after.
    pub async fn apply(&self, desired: u32, tier: Option<&str>) -> Result<Applied, BackendError> {
        let started = std::time::Instant::now();
        let result = match (self, tier) {
            (Backend::Ecs(_), Some(tier)) => Err(BackendError::Unsupported {
                backend: "ecs",
                what: format!("change instance tiers (asked for {tier})"),
            }),
            (Backend::Ecs(ecs), None) => ecs.set_desired(desired).await,
            (Backend::Sim(sim), tier) => sim.apply(desired, tier, nova_runtime::now_ms()).await,
        };
        metrics::histogram!(nova_runtime::telemetry::names::BACKEND_CALL_SECONDS, "backend" => self.kind())
            .record(started.elapsed().as_secs_f64());
        result
    }
}

/// Builds a backend per target. ECS clients are shared per (region, endpoint).
pub async fn build_all(
    policy: &Policy,
    sim_states: &Store,
    call_timeout: Duration,
    credentials: Option<&Credentials>,
) -> HashMap<String, Backend> {
    let mut ecs_clients: HashMap<(String, Option<String>), aws_sdk_ecs::Client> = HashMap::new();
    let mut backends = HashMap::new();
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
