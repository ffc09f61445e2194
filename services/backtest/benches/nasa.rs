//! Backtest speed on the whole NASA-HTTP trace: 5,059,950 one-second
//! intervals (58.6 days), read from gzip and replayed through NovaCron and
//! the HPA reference, for each shipped policy that has a sim target.
//!
//!     cargo bench -p nova-backtest --bench nasa [-- RUNS]
//!
//! Prints, per policy, the best and the median of RUNS runs (default 3) of
//! reading and of replaying, and intervals replayed per second.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use nova_backtest::replay::{ReplayConfig, replay};
use nova_backtest::trace::{TraceOptions, read_trace};
use nova_shared::policy::load_file;

fn median(mut times: Vec<Duration>) -> (Duration, Duration) {
    times.sort();
    (times[0], times[times.len() / 2])
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(3)
        .max(1);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let trace_path = root.join("data/nasa-http-1995-rps.txt.gz");
    // Scaled so the two-month trace keeps a fleet busy (mean 68 rps, peak 2000).
    let options = TraceOptions {
        scale: 100.0,
        ..TraceOptions::default()
    };
    let mut reads = Vec::new();
    let mut trace = None;
    for _ in 0..runs {
        let started = Instant::now();
        trace = Some(read_trace(&trace_path, &options).expect("NASA trace"));
        reads.push(started.elapsed());
    }
    let trace = trace.expect("at least one run");
    let (best, med) = median(reads);
    println!(
        "read: {} intervals from gzip, best {:.3} s, median {:.3} s",
        trace.rps.len(),
        best.as_secs_f64(),
        med.as_secs_f64()
    );
    for policy_file in ["demo.yaml", "tracking.yaml"] {
        let path = root.join("../../deploy/policies").join(policy_file);
        let policy = load_file(&path).expect("shipped policy");
        let config = ReplayConfig::for_target("web");
        let mut times = Vec::new();
        let mut actions = (0, 0);
        for _ in 0..runs {
            let started = Instant::now();
            let result = replay(&policy, &trace, &config, |_| {}).expect("replay");
            times.push(started.elapsed());
            actions = (result.novacron.metrics.actions, result.hpa.metrics.actions);
        }
        let (best, med) = median(times);
        println!(
            "replay {policy_file}: best {:.3} s, median {:.3} s, {:.1} M intervals/s (both autoscalers), actions NovaCron {} HPA {}",
            best.as_secs_f64(),
            med.as_secs_f64(),
            trace.rps.len() as f64 / med.as_secs_f64() / 1e6,
            actions.0,
            actions.1,
        );
    }
}
