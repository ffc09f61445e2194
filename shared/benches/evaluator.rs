//! Evaluator throughput and memory, in process, one core: the bench binary
//! for memory and for 1M series, which Criterion's repeated sampling makes
//! too slow (`evaluator_criterion` times 100k series statistically).
//!
//!     cargo bench -p nova-shared --bench evaluator [-- SERIES...]
//!
//! For each series count (default 100000 and 1000000): builds the workload
//! (see `workload`), feeds every series a first sample to build the state,
//! then times further rounds of one sample per series at increasing event
//! time. Memory is the growth of the process's resident set while the state
//! is built, divided by the series (and by the series-rule pairs). It
//! includes allocator overhead, which is what a deployment pays.

mod workload;

use std::hint::black_box;
use std::time::Instant;

use workload::{INSTANCES, METRICS, RULES_PER_TARGET, Workload};

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
    let mut workload = Workload::new(series);
    let series = workload.series();
    let targets = series / (METRICS.len() * INSTANCES);
    let mut firings = Vec::new();
    let before = rss_bytes();
    workload.start(&mut firings);
    let grown = rss_bytes().saturating_sub(before);
    let rounds = (20_000_000 / series).clamp(3, 50);
    let started = Instant::now();
    let mut fired = 0usize;
    for round in 1..=rounds {
        fired += workload.round(round as i64 * 10_000, &mut firings);
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
