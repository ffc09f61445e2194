//! Evaluator throughput and memory, in process, one core.
//!
//!     cargo bench -p nova-shared --bench evaluator [-- SERIES...]
//!
//! For each series count (default 100000 and 1000000): builds a policy of
//! targets with mixed rules (avg/max/sum aggregations, with and without
//! "for D"), feeds every series a first sample to build the state, then
//! times further rounds of one sample per series at increasing event time.
//! Memory is the growth of the process's resident set while the state is
//! built, divided by the series (and by the series-rule pairs). It includes
//! allocator overhead, which is what a deployment pays.

use std::hint::black_box;
use std::time::Instant;

use nova_shared::evaluate::Evaluator;
use nova_shared::policy::from_yaml;
use nova_shared::wire::Sample;

/// Metrics per target, instances per metric: series = targets * METRICS * INSTANCES.
const METRICS: [&str; 4] = ["cpu", "memory", "p99_latency", "queue_depth"];
const INSTANCES: usize = 25;
/// Rules bound to each target (see `policy`), each reading one metric.
const RULES_PER_TARGET: usize = 7;

fn policy(targets: usize) -> String {
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
         targets:\n",
    );
    for t in 0..targets {
        yaml.push_str(&format!(
            "  t{t}: {{rules: [cpu, memory, latency, queue], backend: {{sim: {{initial: 5}}}}}}\n"
        ));
    }
    yaml
}

/// Resident set size of this process, bytes (Linux).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn run(series: usize) {
    let targets = (series / (METRICS.len() * INSTANCES)).max(1);
    let series = targets * METRICS.len() * INSTANCES;
    let policy = from_yaml(&policy(targets), "bench.yaml").expect("bench policy");
    let names: Vec<String> = (0..targets).map(|t| format!("t{t}")).collect();
    let instances: Vec<Option<String>> =
        (0..INSTANCES).map(|i| Some(format!("i-{i:04}"))).collect();
    // Samples are built once and re-stamped per round, so the timed loop
    // measures the evaluator, not sample construction.
    let mut samples: Vec<(usize, Sample)> = Vec::with_capacity(series);
    for (t, _) in names.iter().enumerate() {
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
    let before = rss_bytes();
    let mut evaluator = Evaluator::new(&policy);
    let mut firings = Vec::new();
    let now = i64::MAX / 2;
    for (t, sample) in &samples {
        evaluator
            .observe(&names[*t], sample, now, &mut firings)
            .expect("valid sample");
    }
    let grown = rss_bytes().saturating_sub(before);
    let rounds = (20_000_000 / series).clamp(3, 50);
    let started = Instant::now();
    let mut fired = 0usize;
    for round in 1..=rounds {
        let ts = round as i64 * 10_000;
        for (t, sample) in samples.iter_mut() {
            sample.ts = ts;
            firings.clear();
            evaluator
                .observe(&names[*t], sample, now, &mut firings)
                .expect("valid sample");
            fired += firings.len();
        }
    }
    let elapsed = started.elapsed();
    let evaluated = (rounds * series) as f64;
    black_box(fired);
    let series_rules = targets * RULES_PER_TARGET * INSTANCES;
    println!(
        "series={series} targets={targets} rules/target={RULES_PER_TARGET} samples={evaluated:.0} \
         time={:.3}s rate={:.2}M samples/s/core memory={:.0} B/series {:.0} B/series-rule firings={fired}",
        elapsed.as_secs_f64(),
        evaluated / elapsed.as_secs_f64() / 1e6,
        grown as f64 / series as f64,
        grown as f64 / series_rules as f64,
    );
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if args.is_empty() {
        vec![100_000, 1_000_000]
    } else {
        args
    };
    for series in sizes {
        run(series);
    }
}
