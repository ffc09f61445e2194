//! The evaluator workload both benchmarks run: targets with mixed rules
//! (avg/max/sum thresholds, with and without "for D", and a target tracking
//! rule), 4 metrics of 25 instances each per target.

use nova_shared::evaluate::Evaluator;
use nova_shared::policy::{Policy, from_yaml};
use nova_shared::wire::Sample;

/// Metrics per target, instances per metric: series = targets * METRICS * INSTANCES.
pub const METRICS: [&str; 4] = ["cpu", "memory", "p99_latency", "queue_depth"];
/// Instances reporting each metric.
pub const INSTANCES: usize = 25;
/// Rules bound to each target (see `policy`), each reading one metric:
/// seven thresholds and one target tracking rule.
pub const RULES_PER_TARGET: usize = 8;

/// A policy of `targets` targets, each bound to every rule.
pub fn policy(targets: usize) -> String {
    let mut yaml = String::from(
        "metrics: {cpu: {unit: percent}, memory: {unit: percent}, p99_latency: {unit: ms}}\n\
         evaluation: {staleness_secs: 60, refire_secs: 30, max_future_skew_secs: 300}\n\
         horizontal_scaling_rules:\n\
         \x20 cpu:\n\
         \x20   scale_up: {condition: \"avg_cpu > 70% for 2 minutes\", action: \"add 2 instances\", max_instances: 100}\n\
         \x20   scale_down: {condition: \"avg_cpu < 30% for 10 minutes\", action: \"remove 1 instance\", min_instances: 3}\n\
         \x20 memory:\n\
         \x20   scale_up: {condition: \"max_memory > 80% for 3 minutes\", action: \"add 2 instances\"}\n\
         \x20   scale_down: {condition: \"avg_memory < 40% for 15 minutes\", action: \"remove 1 instance\"}\n\
         \x20 latency:\n\
         \x20   scale_up: {condition: \"p99_latency > 500ms for 2 minutes\", action: \"add 4 instances\"}\n\
         \x20 queue:\n\
         \x20   scale_up: {condition: \"sum_queue_depth > 1000 messages\", action: \"add 5 workers\"}\n\
         \x20   scale_down: {condition: \"sum_queue_depth < 100 for 15 minutes\", action: \"remove 2 workers\"}\n\
         target_tracking_rules:\n\
         \x20 cpu_target: {metric: avg_cpu, target: 60%}\n\
         targets:\n",
    );
    for t in 0..targets {
        yaml.push_str(&format!(
            "  t{t}: {{rules: [cpu, memory, latency, queue, cpu_target], backend: {{sim: {{initial: 5}}}}}}\n"
        ));
    }
    yaml
}

/// An evaluator for about `series` series, the target names, and one sample
/// per series (event time 0) to re-stamp per round.
pub struct Workload {
    policy: Policy,
    /// The evaluator, once [`Workload::start`] has built it.
    evaluator: Option<Evaluator>,
    /// Target names.
    pub names: Vec<String>,
    /// (target index, sample), one per series.
    pub samples: Vec<(usize, Sample)>,
}

impl Workload {
    /// Builds the workload for about `series` series (a multiple of 100).
    pub fn new(series: usize) -> Workload {
        let targets = (series / (METRICS.len() * INSTANCES)).max(1);
        let policy = from_yaml(&policy(targets), "bench.yaml").expect("bench policy");
        let names: Vec<String> = (0..targets).map(|t| format!("t{t}")).collect();
        let instances: Vec<Option<String>> =
            (0..INSTANCES).map(|i| Some(format!("i-{i:04}"))).collect();
        let mut samples = Vec::with_capacity(targets * METRICS.len() * INSTANCES);
        for t in 0..targets {
            for (m, metric) in METRICS.iter().enumerate() {
                for (i, instance) in instances.iter().enumerate() {
                    let value = match m {
                        0 | 1 => 0.2 + 0.6 * ((t + i) % 10) as f64 / 10.0,
                        2 => 0.05 + (i % 7) as f64 * 0.1,
                        _ => ((t * 31 + i * 7) % 100) as f64,
                    };
                    samples.push((
                        t,
                        Sample {
                            metric: metric.to_string(),
                            value,
                            ts: 0,
                            instance: instance.clone(),
                        },
                    ));
                }
            }
        }
        Workload {
            policy,
            evaluator: None,
            names,
            samples,
        }
    }

    /// Builds the evaluator (apart from [`Workload::new`], so its memory can
    /// be measured on its own) and feeds the first round at event time 0.
    pub fn start(&mut self, firings: &mut Vec<nova_shared::wire::RuleFiring>) {
        let mut evaluator = Evaluator::new(&self.policy);
        // Tracking rules recommend from the current capacity.
        for name in &self.names {
            evaluator.set_capacity(name, 5);
        }
        self.evaluator = Some(evaluator);
        self.round(0, firings);
    }

    /// Series in the workload.
    pub fn series(&self) -> usize {
        self.samples.len()
    }

    /// Feeds one sample per series at event time `ts`; returns the firings.
    pub fn round(&mut self, ts: i64, firings: &mut Vec<nova_shared::wire::RuleFiring>) -> usize {
        let now = i64::MAX / 2;
        let mut fired = 0;
        let evaluator = self.evaluator.as_mut().expect("Workload::start ran");
        for (t, sample) in self.samples.iter_mut() {
            sample.ts = ts;
            firings.clear();
            evaluator
                .observe(&self.names[*t], sample, now, firings)
                .expect("valid sample");
            fired += firings.len();
        }
        fired
    }
}
