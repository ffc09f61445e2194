//! The replay: one load trace, two autoscalers, two identical simulated
//! fleets, stepped together one trace interval at a time in event time.
//!
//! - **NovaCron** runs the live services' own decision code: every
//!   `sample_every` seconds the fleet reports its cpu and its total requests,
//!   averaged over those seconds (as a metrics agent pushing on an interval
//!   does), as samples which reach the evaluator after the metric delay,
//!   both in one [`Evaluator::observe_batch`] as from ingest; the triggers
//!   go through [`arbitrate::decide`] with the target's state carried between
//!   decisions as the arbiter keeps it in KV, and each command sets the
//!   fleet's desired capacity at once (the actuator's part). The evaluator
//!   learns the capacity as it does from KV `nova_capacity`: instances
//!   running, or desired while none run.
//! - **Held scale-downs**: the evaluator holds back a trigger of only
//!   scale-downs until the target's event time moves past its instant, so
//!   that an up of that instant arriving on another subject joins it and
//!   wins (`nova_shared::evaluate`, `evaluate/hold.rs`). The replay keeps
//!   the hold as the service has it: a held down is published by the next
//!   sample, or once it has waited the grace
//!   ([`nova_shared::evaluate::DEFAULT_DOWN_GRACE_MS`], 2 s). The grace is
//!   wall clock in the service, which checks it on a ticker; the replay has
//!   no wall clock, and its clock `now` (the trace's event time, at which a
//!   delayed sample is delivered) stands in for it, as it does for the
//!   evaluator's future-skew check and the fleet's warm-up. So every
//!   interval ends with [`Evaluator::flush_held`]`(now)`: with a sample
//!   every second the next sample releases a down 1 s after it fired; with
//!   `--sample-every` 5 or 15 the grace releases it after 2 s, as in the
//!   service, not only at the next sample. The trigger keeps its sample's
//!   event time, from which the arbiter counts cooldowns; only the moment
//!   the fleet shrinks moves. The last interval of the trace calls
//!   [`Evaluator::drain_held`] instead, as the service does on shutdown,
//!   and decides what it returns in that interval, so a down that fires on
//!   the last delivered sample is decided (it shows in the last interval's
//!   supply and in the actions), not lost.
//! - **HPA** is [`tracking::Hpa`], the Kubernetes controller's algorithm with
//!   its documented defaults: every `sync` seconds it reads the average cpu
//!   of the last metrics window (metrics-server's resolution) that the metric
//!   delay has delivered, the window ending at the newest reading's event
//!   time as NovaCron's do, and sets the replicas it computes.
//!
//! Both fleets serve the same load with the same capacity per instance and
//! warm-up, and gauge cpu by the same [`CpuModel`]: by default it saturates
//! at 100 % as a real gauge does, so under overload neither autoscaler sees
//! how far behind the fleet is from cpu; [`CpuModel::Unbounded`] reports the
//! offered load over the ready capacity instead, above 100 % under overload.
//! The `requests` sample is the offered load in both models, so
//! `requests_per_instance` still measures an overload. For the HPA,
//! instances still warming up count as 0 % (its rule for pods not yet ready
//! when scaling up): it reads the cpu averaged over all provisioned
//! instances.

use nova_shared::units::secs_to_ms;
use std::collections::VecDeque;

use nova_shared::arbitrate::{self, ArbiterSettings, TargetState};
use nova_shared::evaluate::{Evaluator, REQUESTS};
use nova_shared::policy::{Backend, Policy, Target};
use nova_shared::tracking;
use nova_shared::wire::{CapacityRecord, Direction, Sample, Trigger};
use thiserror::Error;

use crate::elasticity::{
    ElasticityError, ElasticityMeter, ElasticityMetrics, IntervalSample, demand_instances,
};
use crate::fleet::{CpuModel, Fleet, FleetError, MetricDelay};
use crate::trace::Trace;

/// The cpu metric both autoscalers read, in canonical units (a ratio).
pub const CPU: &str = "cpu";

/// What a replay needs besides the policy and the trace.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayConfig {
    /// The policy's target to replay (its rules, bounds and sim backend).
    pub target: String,
    /// Requests per second one instance serves (default: the sim backend's).
    pub capacity_per_instance: Option<f64>,
    /// Seconds before a new instance serves (default: the sim backend's).
    pub warmup_secs: Option<u64>,
    /// Instances at the start (default: the sim backend's `initial`).
    pub initial: Option<u32>,
    /// Seconds between a measurement and the autoscaler seeing it.
    pub metric_delay_secs: u64,
    /// Seconds between NovaCron's samples, each the average over them.
    pub sample_every_secs: u64,
    /// How both fleets gauge cpu under overload.
    pub cpu_model: CpuModel,
    /// The HPA reference's settings.
    pub hpa: HpaConfig,
}

impl ReplayConfig {
    /// Replays `target` with the sim backend's fleet, no metric delay, a
    /// sample every second, saturating cpu and the HPA's defaults.
    pub fn for_target(target: &str) -> Self {
        ReplayConfig {
            target: target.to_string(),
            capacity_per_instance: None,
            warmup_secs: None,
            initial: None,
            metric_delay_secs: 0,
            sample_every_secs: 1,
            cpu_model: CpuModel::default(),
            hpa: HpaConfig::default(),
        }
    }
}

/// The HPA reference's settings; [`HpaConfig::default`] is the documented
/// Kubernetes defaults, with the cpu target chosen from the policy.
#[derive(Debug, Clone, PartialEq)]
pub struct HpaConfig {
    /// Target average cpu utilisation, a ratio (default: see [`hpa_target_for`]).
    pub target_cpu: Option<f64>,
    /// Seconds between syncs (15).
    pub sync_secs: u64,
    /// Seconds of cpu averaged per reading (15, metrics-server's resolution).
    pub metric_window_secs: u64,
}

impl Default for HpaConfig {
    fn default() -> Self {
        HpaConfig {
            target_cpu: None,
            sync_secs: tracking::HPA_SYNC_SECS,
            metric_window_secs: 15,
        }
    }
}

/// A replay that could not run.
#[derive(Debug, Error)]
pub enum ReplayError {
    /// The target is not in the policy.
    #[error("no target {target:?} in the policy; it has: {known}")]
    UnknownTarget {
        /// The name asked for.
        target: String,
        /// The policy's targets.
        known: String,
    },
    /// The trace has no intervals.
    #[error("the trace is empty")]
    EmptyTrace,
    /// A setting is out of range.
    #[error("{0}")]
    Setting(String),
    /// The fleet could not be built.
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// The metrics could not be computed.
    #[error(transparent)]
    Elasticity(#[from] ElasticityError),
}

/// One autoscaler's run.
#[derive(Debug, Clone)]
pub struct Run {
    /// "NovaCron" or "HPA".
    pub name: String,
    /// Ready instances in each interval.
    pub supply: Vec<u32>,
    /// The elasticity metrics.
    pub metrics: ElasticityMetrics,
}

/// Both runs on one trace.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// Instances needed in each interval.
    pub demand: Vec<u32>,
    /// NovaCron's run.
    pub novacron: Run,
    /// The HPA reference's run.
    pub hpa: Run,
    /// The settings actually used, after defaults: for the report.
    pub settings: ResolvedSettings,
}

/// The settings of a replay after defaults were filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedSettings {
    /// Target replayed.
    pub target: String,
    /// Its bounds.
    pub min: u32,
    /// Its bounds.
    pub max: u32,
    /// Instances at the start.
    pub initial: u32,
    /// Requests per second per instance.
    pub capacity_per_instance: f64,
    /// Warm-up, seconds.
    pub warmup_secs: u64,
    /// Metric delay, seconds.
    pub metric_delay_secs: u64,
    /// Seconds between NovaCron's samples.
    pub sample_every_secs: u64,
    /// How the fleets gauge cpu under overload.
    pub cpu_model: CpuModel,
    /// The HPA's cpu target, a ratio, and where it came from.
    pub hpa_target_cpu: f64,
    /// Why that target.
    pub hpa_target_source: String,
    /// HPA sync period, seconds.
    pub hpa_sync_secs: u64,
    /// HPA metric window, seconds.
    pub hpa_metric_window_secs: u64,
}

/// The HPA's cpu target for a target's rules, when none is given: a tracking
/// rule's own target on cpu; else the middle of the cpu scale-up and
/// scale-down thresholds (the band a threshold policy keeps cpu in); else
/// 60 %.
pub fn hpa_target_for(target: &Target) -> (f64, String) {
    if let Some(rule) = target.tracking.iter().find(|r| r.metric == CPU) {
        return (
            rule.target,
            format!("the target of tracking rule {}", rule.name),
        );
    }
    let threshold = |direction| {
        target
            .rules
            .iter()
            .find(|r| r.direction == direction && r.condition.metric == CPU)
            .map(|r| r.condition.threshold)
    };
    match (threshold(Direction::Up), threshold(Direction::Down)) {
        (Some(up), Some(down)) => (
            (up + down) / 2.0,
            format!(
                "the middle of the cpu thresholds {:.0}% and {:.0}%",
                down * 100.0,
                up * 100.0
            ),
        ),
        _ => (0.6, "60%, no cpu rule to take it from".to_string()),
    }
}

/// Replays `trace` for `config.target` through NovaCron and the HPA
/// reference; `progress` is told how many intervals are done now and then.
pub fn replay(
    policy: &Policy,
    trace: &Trace,
    config: &ReplayConfig,
    mut progress: impl FnMut(u64),
) -> Result<Comparison, ReplayError> {
    let target = policy
        .targets
        .get(&config.target)
        .ok_or_else(|| ReplayError::UnknownTarget {
            target: config.target.clone(),
            known: policy
                .targets
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
        })?;
    if trace.rps.is_empty() {
        return Err(ReplayError::EmptyTrace);
    }
    let settings = resolve(target, config)?;
    let interval_ms = (trace.interval_secs * 1000.0).round() as i64;
    if interval_ms < 1 {
        return Err(ReplayError::Setting(format!(
            "the trace's interval of {} s is shorter than a millisecond",
            trace.interval_secs
        )));
    }
    let mut novacron = NovaRun::new(policy, target, &settings, interval_ms)?;
    let mut hpa = HpaRun::new(&settings, interval_ms)?;
    let cap = settings.capacity_per_instance;
    let mut meters = [
        ElasticityMeter::new(trace.interval_secs, cap)?,
        ElasticityMeter::new(trace.interval_secs, cap)?,
    ];
    let mut demand = Vec::with_capacity(trace.rps.len());
    let mut supplies = [
        Vec::with_capacity(trace.rps.len()),
        Vec::with_capacity(trace.rps.len()),
    ];
    for (i, &load) in trace.rps.iter().enumerate() {
        let now = i as i64 * interval_ms;
        demand.push(demand_instances(load, cap));
        let end_of_trace = i + 1 == trace.rps.len();
        let observations = [novacron.step(now, load, end_of_trace), hpa.step(now, load)];
        for ((meter, supply), (ready, provisioned)) in
            meters.iter_mut().zip(&mut supplies).zip(observations)
        {
            meter.record(IntervalSample {
                load_rps: load,
                ready,
                provisioned,
            })?;
            supply.push(ready);
        }
        if i % 65_536 == 0 {
            progress(i as u64);
        }
    }
    progress(trace.rps.len() as u64);
    let [nova_supply, hpa_supply] = supplies;
    Ok(Comparison {
        demand,
        novacron: Run {
            name: "NovaCron".into(),
            supply: nova_supply,
            metrics: meters[0].finish(Some(novacron.actions))?,
        },
        hpa: Run {
            name: "HPA".into(),
            supply: hpa_supply,
            metrics: meters[1].finish(Some(hpa.actions))?,
        },
        settings,
    })
}

fn resolve(target: &Target, config: &ReplayConfig) -> Result<ResolvedSettings, ReplayError> {
    let sim = match &target.backend {
        Backend::Sim(sim) => Some(sim),
        Backend::Ecs(_) | Backend::RdsReplicas(_) | Backend::RdsInstance(_) => None,
    };
    let capacity_per_instance = config
        .capacity_per_instance
        .or(sim.map(|s| s.capacity_per_instance))
        .unwrap_or(100.0);
    let warmup_secs = config
        .warmup_secs
        .or(sim.map(|s| s.warmup_secs))
        .unwrap_or(0);
    let initial = config
        .initial
        .or(sim.map(|s| s.initial))
        .unwrap_or(target.min)
        .clamp(target.min, target.max);
    let (hpa_target_cpu, hpa_target_source) = match config.hpa.target_cpu {
        Some(t) => (t, "given".to_string()),
        None => hpa_target_for(target),
    };
    if !(hpa_target_cpu.is_finite() && hpa_target_cpu > 0.0) {
        return Err(ReplayError::Setting(format!(
            "the HPA's cpu target must be above 0, not {hpa_target_cpu}"
        )));
    }
    if config.sample_every_secs == 0 {
        return Err(ReplayError::Setting(
            "samples must be at least 1 second apart".into(),
        ));
    }
    if config.hpa.sync_secs == 0 || config.hpa.metric_window_secs == 0 {
        return Err(ReplayError::Setting(
            "the HPA's sync period and metric window must be at least 1 second".into(),
        ));
    }
    Ok(ResolvedSettings {
        target: target.name.clone(),
        min: target.min,
        max: target.max,
        initial,
        capacity_per_instance,
        warmup_secs,
        metric_delay_secs: config.metric_delay_secs,
        sample_every_secs: config.sample_every_secs,
        cpu_model: config.cpu_model,
        hpa_target_cpu,
        hpa_target_source,
        hpa_sync_secs: config.hpa.sync_secs,
        hpa_metric_window_secs: config.hpa.metric_window_secs,
    })
}

/// A reading the fleet takes each interval: cpu (ratio) and total requests/s.
#[derive(Debug, Clone, Copy, Default)]
struct Reading {
    cpu: f64,
    requests: f64,
}

/// NovaCron's side: fleet, delayed samples, evaluator, arbiter state.
struct NovaRun<'p> {
    target: &'p Target,
    settings: ArbiterSettings,
    fleet: Fleet,
    delay: MetricDelay<Reading>,
    evaluator: Evaluator,
    state: TargetState,
    /// The cpu and requests samples, re-stamped for every reading.
    samples: [Sample; 2],
    actions: u64,
    /// Readings summed since the last sample, and how many.
    pending: (Reading, u32),
    /// Intervals per sample.
    intervals_per_sample: u32,
}

impl<'p> NovaRun<'p> {
    fn new(
        policy: &Policy,
        target: &'p Target,
        s: &ResolvedSettings,
        interval_ms: i64,
    ) -> Result<Self, ReplayError> {
        let every_ms = secs_to_ms(s.sample_every_secs);
        let intervals_per_sample =
            u32::try_from((every_ms / interval_ms).max(1)).unwrap_or(u32::MAX);
        let sample = |metric: &str| Sample {
            metric: metric.to_string(),
            value: 0.0,
            ts: 0,
            instance: None,
        };
        Ok(NovaRun {
            target,
            settings: ArbiterSettings::for_target(target, policy.evaluation.refire_secs),
            fleet: Fleet::new(
                s.initial,
                s.capacity_per_instance,
                s.warmup_secs,
                s.cpu_model,
            )?,
            delay: MetricDelay::new(s.metric_delay_secs),
            evaluator: Evaluator::new(policy),
            state: TargetState::default(),
            samples: [sample(CPU), sample(REQUESTS)],
            actions: 0,
            pending: (Reading::default(), 0),
            intervals_per_sample,
        })
    }

    /// One interval at `now`: serve, report, evaluate what has arrived,
    /// decide and act; at the `end_of_trace`, decide every held trigger too.
    /// Returns (ready, provisioned) for the interval.
    fn step(&mut self, now: i64, load: f64, end_of_trace: bool) -> (u32, u32) {
        let observation = self.fleet.step(now, load);
        let (sum, count) = &mut self.pending;
        sum.cpu += observation.cpu;
        sum.requests += load;
        *count += 1;
        if *count == self.intervals_per_sample {
            let n = f64::from(*count);
            let average = Reading {
                cpu: sum.cpu / n,
                requests: sum.requests / n,
            };
            self.pending = (Reading::default(), 0);
            self.delay.push(now, average);
        }
        let name = &self.target.name;
        let serving = match observation.ready {
            0 => observation.provisioned,
            ready => ready,
        };
        self.evaluator.set_capacity(name, serving);
        while let Some(due) = self.delay.pop_due(now) {
            let [cpu, requests] = &mut self.samples;
            (cpu.value, cpu.ts) = (due.value.cpu, due.taken_ms);
            (requests.value, requests.ts) = (due.value.requests, due.taken_ms);
            // The evaluator service's own grouping into triggers. Samples of
            // a valid trace are finite and never from the future, so none
            // is rejected.
            let (triggers, _rejected) = self.evaluator.observe_batch(name, &self.samples, now);
            for trigger in triggers {
                self.decide(&trigger, now);
            }
        }
        // Held scale-downs (see the module docs): the replay clock stands in
        // for the service's wall-clock grace, and the trace's end for its
        // shutdown.
        let held = if end_of_trace {
            self.evaluator.drain_held()
        } else {
            self.evaluator.flush_held(now)
        };
        for trigger in held {
            self.decide(&trigger, now);
        }
        let after = self.fleet.step(now, load);
        (after.ready, after.provisioned)
    }

    /// Decides a trigger as the arbiter does, the actuator applying its
    /// command at once.
    fn decide(&mut self, trigger: &Trigger, now: i64) {
        let observed = CapacityRecord {
            target: self.target.name.clone(),
            desired: self.fleet.provisioned(),
            running: None,
            applied_seq: self.state.seq,
            tier: self.state.tier.clone(),
            observed_ms: now,
            backend: "sim".into(),
            ..Default::default()
        };
        let verdict = arbitrate::decide(
            self.target,
            self.settings,
            &self.state,
            Some(&observed),
            trigger,
        );
        if let Some(command) = &verdict.command
            && command.desired != self.fleet.provisioned()
        {
            self.fleet.set_desired(now, command.desired);
            self.actions += 1;
        }
        if let Some(mut state) = verdict.state {
            // The replay never redelivers; the replay buffer only costs time.
            state.recent_verdicts.clear();
            self.state = state;
        }
    }
}

/// The HPA reference's side: fleet, delayed cpu window, controller.
struct HpaRun {
    fleet: Fleet,
    delay: MetricDelay<f64>,
    /// Delivered utilisation readings inside the metric window: (taken, cpu).
    window: VecDeque<(i64, f64)>,
    window_ms: i64,
    sync_ms: i64,
    next_sync: i64,
    hpa: tracking::Hpa,
    actions: u64,
}

impl HpaRun {
    fn new(s: &ResolvedSettings, interval_ms: i64) -> Result<Self, ReplayError> {
        let sync_ms = secs_to_ms(s.hpa_sync_secs);
        Ok(HpaRun {
            fleet: Fleet::new(
                s.initial,
                s.capacity_per_instance,
                s.warmup_secs,
                s.cpu_model,
            )?,
            delay: MetricDelay::new(s.metric_delay_secs),
            window: VecDeque::new(),
            window_ms: secs_to_ms(s.hpa_metric_window_secs),
            sync_ms: sync_ms.max(interval_ms),
            next_sync: sync_ms,
            hpa: tracking::Hpa::new(s.hpa_target_cpu, s.min, s.max),
            actions: 0,
        })
    }

    fn step(&mut self, now: i64, load: f64) -> (u32, u32) {
        let observation = self.fleet.step(now, load);
        self.delay.push(now, observation.provisioned_cpu);
        while let Some(due) = self.delay.pop_due(now) {
            self.window.push_back((due.taken_ms, due.value));
        }
        // The window ends at the newest delivered reading, in event time, as
        // metrics-server's value is the average over the window ending at
        // its own timestamp. Ending it at `now` would keep only the readings
        // taken in the last (window − delay) seconds, and none at all once
        // the delay reaches the window: the HPA would never act.
        if let Some(&(newest, _)) = self.window.back() {
            while self
                .window
                .front()
                .is_some_and(|(taken, _)| *taken <= newest - self.window_ms)
            {
                self.window.pop_front();
            }
        }
        if now >= self.next_sync {
            self.next_sync += self.sync_ms;
            if !self.window.is_empty() {
                let cpu =
                    self.window.iter().map(|(_, c)| c).sum::<f64>() / self.window.len() as f64;
                let current = self.fleet.provisioned();
                let desired = self.hpa.sync(now, current, cpu);
                if desired != current {
                    self.fleet.set_desired(now, desired);
                    self.actions += 1;
                }
            }
        }
        let after = self.fleet.step(now, load);
        (after.ready, after.provisioned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nova_shared::policy::from_yaml;

    const POLICY: &str = r#"
metrics: {cpu: {unit: percent}}
evaluation: {staleness_secs: 30, refire_secs: 10}
targets:
  web:
    rules: [cpu_based]
    min: 2
    max: 40
    backend: {sim: {initial: 2, warmup_secs: 10, capacity_per_instance: 100}}
horizontal_scaling_rules:
  cpu_based:
    scale_up: {condition: "avg_cpu > 70% for 15 seconds", action: "add 3 instances", cooldown: 20}
    scale_down: {condition: "avg_cpu < 30% for 30 seconds", action: "remove 1 instance", cooldown: 15}
"#;

    fn config() -> ReplayConfig {
        ReplayConfig::for_target("web")
    }

    /// 607 s at 100 rps (50 % of the two instances), then 10 minutes at
    /// 1500 rps; the step falls between two HPA syncs (600 and 615 s).
    fn step_trace() -> Trace {
        let mut rps = vec![100.0; 607];
        rps.extend(vec![1500.0; 600]);
        Trace {
            interval_secs: 1.0,
            rps,
        }
    }

    #[test]
    fn both_autoscalers_follow_a_step_each_at_its_own_pace() {
        let policy = from_yaml(POLICY, "p.yaml").unwrap();
        let result = replay(&policy, &step_trace(), &config(), |_| {}).unwrap();
        assert_eq!(result.settings.hpa_target_cpu, 0.5);
        let first_up = |supply: &[u32]| supply.iter().skip(607).position(|s| *s > 2);
        let nova = first_up(&result.novacron.supply).expect("NovaCron scales up");
        let hpa = first_up(&result.hpa.supply).expect("HPA scales up");
        // NovaCron: the rule's 15 s hold, then 10 s of warm-up. The HPA: its
        // next sync 8 s later (the window already averages above target),
        // then the same warm-up.
        assert_eq!((nova, hpa), (25, 18), "ready after the step");
        // Both end up serving the load: demand 15, cpu within their bands.
        let last = |supply: &[u32]| supply[supply.len() - 1];
        assert!(
            last(&result.novacron.supply) >= 15,
            "{:?}",
            &result.novacron.supply[1150..]
        );
        assert_eq!(
            last(&result.hpa.supply),
            30,
            "1500 rps at 50 % of 100 rps each"
        );
        assert!(result.novacron.metrics.actions > 0 && result.hpa.metrics.actions > 0);
        assert_eq!(result.demand[700], 15);
    }

    #[test]
    fn the_hpa_sizes_an_overload_by_the_cpu_it_can_see() {
        // At 1500 rps on 2 instances of 100 rps, a saturating gauge reads
        // 100 %, so the HPA's first step is ⌈2 · 1.0 / 0.5⌉ = 4, and while
        // the new ones warm up at 0 % it reads less; it climbs 2, 4, 6, 10,
        // 16, 24, 30. An unbounded one reads 750 %, asking for 30 at once,
        // held to the scale-up limit of max(double, +4): 2, 6, 12, 24, 30.
        let policy = from_yaml(POLICY, "p.yaml").unwrap();
        for (model, first_step, covers_after) in
            [(CpuModel::Saturating, 4, 63), (CpuModel::Unbounded, 6, 48)]
        {
            let config = ReplayConfig {
                cpu_model: model,
                ..config()
            };
            let result = replay(&policy, &step_trace(), &config, |_| {}).unwrap();
            let supply = &result.hpa.supply;
            let first_up = supply[607..].iter().find(|s| **s > 2).copied();
            assert_eq!(first_up, Some(first_step), "{model}");
            assert_eq!(
                crate::report::time_to_cover(&result.demand, supply),
                Some(covers_after),
                "{model}"
            );
            assert_eq!(supply[supply.len() - 1], 30, "{model}");
        }
    }

    #[test]
    fn the_request_rate_is_never_capped() {
        // 150 requests per instance is more than an instance serves (100):
        // only the offered load, not the served one, can exceed it. The rule
        // fires the same way whatever the cpu model.
        let policy = POLICY.replace(
            "avg_cpu > 70% for 15 seconds",
            "requests_per_instance > 150 for 15 seconds",
        );
        let policy = from_yaml(&policy, "p.yaml").unwrap();
        let runs = [CpuModel::Saturating, CpuModel::Unbounded].map(|cpu_model| {
            let config = ReplayConfig {
                cpu_model,
                ..config()
            };
            replay(&policy, &step_trace(), &config, |_| {}).unwrap()
        });
        for run in &runs {
            assert!(
                run.novacron.supply[607..].iter().any(|s| *s > 2),
                "requests_per_instance fires on {} / 2 instances",
                run.demand[700]
            );
        }
        assert_eq!(runs[0].novacron.supply, runs[1].novacron.supply);
    }

    #[test]
    fn a_held_scale_down_leaves_with_the_next_sample_the_grace_or_the_end_of_the_trace() {
        // 100 rps on 4 instances is 25 % cpu from the first sample on, so the
        // rule's "below 30 % for 30 seconds" fires on the sample taken 30 s
        // after the first one. The evaluator holds that down back; the
        // interval in which the fleet drops to 3 shows who released it.
        let policy = from_yaml(POLICY, "p.yaml").unwrap();
        // (seconds between samples, trace length in s, interval of the drop)
        let cases = [
            // Samples at 0, 1, …: fires at 30 and the sample at 31 releases it.
            (1, 45, 31, "the next sample"),
            // Fires on the trace's last sample: decided by the drain.
            (1, 31, 30, "the end of the trace"),
            // Samples at 4, 9, …, 34, 39: fires at 34, and the grace (2 s of
            // replay clock) releases it at 36, before the sample at 39.
            (5, 45, 36, "the grace"),
            // Fires at 34, the trace ends before the grace runs out.
            (5, 35, 34, "the end of the trace, at the firing"),
            (5, 36, 35, "the end of the trace, within the grace"),
        ];
        for (every, length, drop_at, why) in cases {
            let config = ReplayConfig {
                initial: Some(4),
                sample_every_secs: every,
                ..config()
            };
            let trace = Trace {
                interval_secs: 1.0,
                rps: vec![100.0; length],
            };
            let result = replay(&policy, &trace, &config, |_| {}).unwrap();
            let supply = &result.novacron.supply;
            assert_eq!(
                supply.iter().position(|s| *s < 4),
                Some(drop_at),
                "every {every} s, {length} s: released by {why}: {supply:?}"
            );
            assert_eq!(supply[supply.len() - 1], 3, "{why}");
            assert_eq!(result.novacron.metrics.actions, 1, "{why}");
        }
    }

    #[test]
    fn the_hpa_target_comes_from_the_policy() {
        let policy = from_yaml(POLICY, "p.yaml").unwrap();
        let (target, why) = hpa_target_for(&policy.targets["web"]);
        assert_eq!(target, 0.5);
        assert_eq!(why, "the middle of the cpu thresholds 30% and 70%");
        let tracking = POLICY.replace("rules: [cpu_based]", "rules: [track]")
            + "target_tracking_rules:\n  track: {metric: avg_cpu, target: 65%}\n";
        let policy = from_yaml(&tracking, "p.yaml").unwrap();
        let (target, why) = hpa_target_for(&policy.targets["web"]);
        assert_eq!(
            (target, why.as_str()),
            (0.65, "the target of tracking rule track")
        );
    }

    #[test]
    fn bad_settings_are_named() {
        let policy = from_yaml(POLICY, "p.yaml").unwrap();
        let mut bad = config();
        bad.target = "api".into();
        let error = replay(&policy, &step_trace(), &bad, |_| {}).unwrap_err();
        assert_eq!(
            error.to_string(),
            "no target \"api\" in the policy; it has: web"
        );
        let empty = Trace {
            interval_secs: 1.0,
            rps: vec![],
        };
        assert!(matches!(
            replay(&policy, &empty, &config(), |_| {}),
            Err(ReplayError::EmptyTrace)
        ));
        let mut bad = config();
        bad.hpa.target_cpu = Some(0.0);
        assert!(
            replay(&policy, &step_trace(), &bad, |_| {})
                .unwrap_err()
                .to_string()
                .contains("cpu target must be above 0")
        );
    }
}
