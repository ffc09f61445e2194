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

/// A backend call that failed.
#[derive(Debug, Error)]
pub enum BackendError {
    /// An ECS API call failed.
    #[error("ECS {operation} failed: {message}")]
    Ecs {
        /// The API operation.
        operation: &'static str,
        /// The SDK's full error text.
        message: String,
    },
    /// The ECS service does not exist.
    #[error("ECS service {service} not found in cluster {cluster}: {reason}")]
    EcsMissing {
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
    /// The simulated fleet's state could not be read or written.
    #[error("simulated fleet state: {0}")]
    Sim(#[from] nova_runtime::kv::KvError),
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
    /// given; returns what the backend reports after, with a one-line
    /// summary of its answer.
    pub async fn apply(
        &self,
        desired: u32,
        tier: Option<&str>,
    ) -> Result<(Observation, String), BackendError> {
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
                Backend::Ecs(EcsService::new(client, spec))
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
