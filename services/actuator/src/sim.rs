//! The simulated fleet: a backend with no cloud account.
//!
//! Its state lives in KV `nova_sim` (one key per target), so any actuator
//! replica can act on it and the load generator can read it. New instances
//! count as running only after `warmup_secs`; removed ones stop at once.
//! A fleet with a `tier` can be resized: the tier changes at once and the
//! count stays (a rolling replacement).
//! [`run_load`] publishes the fleet's own cpu, queue depth and requests per
//! instance from the policy's load curve, so the loop closes: more capacity
//! means lower cpu.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::kv::Store;
use nova_runtime::kv::{self, KvError};
use nova_runtime::nats::SIM_BUCKET;
use nova_shared::codec;
use nova_shared::policy::{Backend as BackendSpec, LoadCurve, Policy, SimBackend};
use nova_shared::subjects;
use nova_shared::wire::{MetricSampleIn, SampleValue};
use serde::{Deserialize, Serialize};

use crate::backend::{self, Applied, BackendError, Observation};

/// A simulated fleet's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimState {
    /// Desired capacity.
    pub desired: u32,
    /// Capacity running before the last change.
    pub previous: u32,
    /// When the last change was made, unix ms.
    pub changed_ms: i64,
    /// Instance tier, for fleets with tiers.
    #[serde(default)]
    pub tier: Option<String>,
    /// Sequence of the command that last set this state (0: none yet), a
    /// fencing token: the state lives in a replicated KV bucket, and a read
    /// answered from a copy that missed the last change shows an older one
    /// (see [`Observation::fence`]).
    #[serde(default)]
    pub seq: u64,
}

impl SimState {
    /// Capacity running at `now_ms`: added instances count after the warm-up.
    pub fn running(&self, now_ms: i64, warmup_secs: u64) -> u32 {
        let warm_at = self
            .changed_ms
            .saturating_add(i64::try_from(warmup_secs * 1000).unwrap_or(i64::MAX));
        if self.desired > self.previous && now_ms < warm_at {
            self.previous
        } else {
            self.desired
        }
    }
}

/// One simulated fleet.
pub struct SimFleet {
    states: Store,
    target: String,
    spec: SimBackend,
}

impl SimFleet {
    /// The fleet of `target`.
    pub fn new(states: Store, target: &str, spec: SimBackend) -> Self {
        SimFleet {
            states,
            target: target.to_string(),
            spec,
        }
    }

    fn fresh(&self, now_ms: i64) -> SimState {
        SimState {
            desired: self.spec.initial,
            previous: self.spec.initial,
            changed_ms: now_ms,
            tier: self.spec.tier.clone(),
            seq: 0,
        }
    }

    /// The fleet's capacity; a fleet seen for the first time starts at `initial`.
    pub async fn observe(&self, now_ms: i64) -> Result<Observation, BackendError> {
        let stored = kv::load::<SimState>(&self.states, &self.target)
            .await
            .map_err(backend::store)?;
        let state = match stored {
            Some(v) => v.value,
            None => kv::modify(&self.states, &self.target, |s: Option<SimState>| {
                s.unwrap_or_else(|| self.fresh(now_ms))
            })
            .await
            .map_err(backend::store)?,
        };
        Ok(Observation {
            desired: state.desired,
            running: Some(state.running(now_ms, self.spec.warmup_secs)),
            tier: state.tier,
            fence: Some(state.seq),
        })
    }

    /// Sets the desired capacity, and the tier when one is given, for
    /// command `seq`, which becomes the state's fencing token.
    pub async fn apply(
        &self,
        desired: u32,
        tier: Option<&str>,
        seq: u64,
        now_ms: i64,
    ) -> Result<Applied, BackendError> {
        if let Some(tier) = tier
            && self.spec.tier.is_none()
        {
            return Err(backend::unsupported(
                "sim",
                &format!("resize {} to {tier}: the fleet has no tier", self.target),
            ));
        }
        let warmup = self.spec.warmup_secs;
        let mut before = Observation {
            desired: 0,
            running: None,
            tier: None,
            fence: None,
        };
        let state = kv::modify(&self.states, &self.target, |s: Option<SimState>| {
            let s = s.unwrap_or_else(|| self.fresh(now_ms));
            before = Observation {
                desired: s.desired,
                running: Some(s.running(now_ms, warmup)),
                tier: s.tier.clone(),
                fence: Some(s.seq),
            };
            SimState {
                desired,
                previous: s.running(now_ms, warmup),
                changed_ms: now_ms,
                tier: tier.map(str::to_string).or(s.tier),
                seq,
            }
        })
        .await
        .map_err(backend::store)?;
        let running = state.running(now_ms, warmup);
        let resized = match (&before.tier, &state.tier) {
            (Some(old), Some(new)) if old != new => format!(", tier {old} -> {new}"),
            _ => String::new(),
        };
        let response = format!(
            "sim {}: desired {} -> {desired}{resized} (running {running}, new instances warm up in {warmup}s)",
            self.target, before.desired
        );
        Ok(Applied {
            before: Some(before),
            after: Observation {
                desired,
                running: Some(running),
                tier: state.tier,
                fence: Some(seq),
            },
            response,
        })
    }
}

/// Publishes every sim target's load samples until `shutdown` completes.
pub async fn run_load(
    policy: Arc<Policy>,
    client: async_nats::Client,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), KvError> {
    let js = nova_runtime::nats::jetstream(&client);
    let Ok(states) = js.get_key_value(SIM_BUCKET).await else {
        tracing::error!("KV bucket {SIM_BUCKET} is missing; no simulated load");
        return Ok(());
    };
    let fleets: Vec<(String, SimBackend, LoadCurve)> = policy
        .targets
        .values()
        .filter_map(|t| match &t.backend {
            BackendSpec::Sim(spec) => spec
                .load
                .clone()
                .map(|load| (t.name.clone(), spec.clone(), load)),
            BackendSpec::Ecs(_) | BackendSpec::RdsReplicas(_) | BackendSpec::RdsInstance(_) => None,
        })
        .collect();
    if fleets.is_empty() {
        return Ok(());
    }
    let tick = fleets
        .iter()
        .map(|(_, _, l)| l.sample_every_secs)
        .min()
        .unwrap_or(5);
    let mut interval = tokio::time::interval(Duration::from_secs(tick));
    let started = tokio::time::Instant::now();
    let mut backlog = vec![0.0f64; fleets.len()];
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = interval.tick() => {}
        }
        let elapsed = started.elapsed().as_secs_f64();
        let now = nova_runtime::now_ms();
        for (i, (target, spec, load)) in fleets.iter().enumerate() {
            let fleet = SimFleet::new(states.clone(), target, spec.clone());
            let running = match fleet.observe(now).await {
                Ok(obs) => obs.running.unwrap_or(obs.desired),
                Err(error) => {
                    tracing::warn!(%error, target, "cannot read simulated fleet");
                    continue;
                }
            };
            let rps = load.rps_at(elapsed);
            let served = f64::from(running) * spec.capacity_per_instance;
            backlog[i] = (backlog[i] + (rps - served) * tick as f64).max(0.0);
            let samples = fleet_samples(running, rps, served, backlog[i], now);
            for (metric, batch) in samples {
                let Ok(payload) = codec::encode(&batch) else {
                    continue;
                };
                if let Err(error) = client
                    .publish(subjects::metrics(target, metric), payload.into())
                    .await
                {
                    tracing::warn!(%error, target, "cannot publish simulated samples");
                }
            }
        }
    }
    Ok(())
}

/// The samples a fleet reports at one instant: cpu per instance, queue depth,
/// requests per instance.
pub fn fleet_samples(
    running: u32,
    rps: f64,
    served: f64,
    backlog: f64,
    now_ms: i64,
) -> Vec<(&'static str, Vec<MetricSampleIn>)> {
    let sample = |value: SampleValue, instance: Option<String>| MetricSampleIn {
        metric: None,
        value,
        ts: Some(now_ms),
        instance,
        labels: Default::default(),
    };
    let utilisation = if served > 0.0 {
        (rps / served).min(1.0)
    } else {
        1.0
    };
    let cpu = (0..running)
        .map(|i| {
            sample(
                SampleValue::Text(format!("{:.1}%", utilisation * 100.0)),
                Some(format!("sim-{i}")),
            )
        })
        .collect();
    let per_instance = if running > 0 {
        rps / f64::from(running)
    } else {
        rps
    };
    vec![
        ("cpu", cpu),
        (
            "queue_depth",
            vec![sample(SampleValue::Number(backlog.round()), None)],
        ),
        (
            "requests_per_instance",
            vec![sample(SampleValue::Number(per_instance.round()), None)],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn added_instances_run_after_warm_up_removed_ones_stop_at_once() {
        let up = SimState {
            desired: 5,
            previous: 2,
            changed_ms: 1_000,
            tier: None,
            seq: 0,
        };
        assert_eq!(up.running(1_000, 10), 2);
        assert_eq!(up.running(10_999, 10), 2);
        assert_eq!(up.running(11_000, 10), 5);
        let down = SimState {
            desired: 2,
            previous: 5,
            changed_ms: 1_000,
            tier: None,
            seq: 0,
        };
        assert_eq!(down.running(1_000, 10), 2);
    }

    #[test]
    fn fleet_samples_follow_load_and_capacity() {
        let samples = fleet_samples(4, 300.0, 400.0, 0.0, 7);
        let cpu = &samples[0].1;
        assert_eq!(cpu.len(), 4);
        assert_eq!(cpu[0].value, SampleValue::Text("75.0%".into()));
        assert_eq!(cpu[3].instance.as_deref(), Some("sim-3"));
        assert_eq!(samples[2].1[0].value, SampleValue::Number(75.0));
        let overloaded = fleet_samples(1, 500.0, 100.0, 1200.0, 7);
        assert_eq!(overloaded[0].1[0].value, SampleValue::Text("100.0%".into()));
        assert_eq!(overloaded[1].1[0].value, SampleValue::Number(1200.0));
    }
}
