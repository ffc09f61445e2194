//! The real NASA-HTTP 1995 trace (see `data/README.md`) read with the
//! project's reader: the figures the README documents hold, so the README
//! cannot drift from the data.

use std::path::PathBuf;

use nova_backtest::elasticity::demand_instances;
use nova_backtest::trace::{Trace, TraceOptions, read_trace};

/// Requests per second one simulated instance serves, as in the README.
const CAPACITY_PER_INSTANCE: f64 = 100.0;

fn read_nasa(options: &TraceOptions) -> Trace {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/nasa-http-1995-rps.txt.gz");
    read_trace(&path, options).unwrap_or_else(|error| panic!("{error}"))
}

fn assert_close(name: &str, got: f64, want: f64, tolerance: f64) {
    assert!(
        (got - want).abs() <= tolerance,
        "{name}: {got}, expected {want}"
    );
}

#[test]
fn nasa_trace_has_its_documented_figures() {
    // How fast it reads is measured by the backtest benchmark, not here.
    let trace = read_nasa(&TraceOptions::default());

    assert_eq!(trace.rps.len(), 5_059_950);
    assert_eq!(trace.interval_secs, 1.0);
    assert_close("mean", trace.mean_rps(), 0.684, 0.001);
    assert_eq!(trace.peak_rps(), 20.0);

    // The Hurricane Erin outage: the longest run of zeros, 1-based lines.
    let (mut longest, mut longest_start, mut run) = (0, 0, 0);
    for (index, rps) in trace.rps.iter().enumerate() {
        run = if *rps == 0.0 { run + 1 } else { 0 };
        if run > longest {
            (longest, longest_start) = (run, index + 2 - run);
        }
    }
    assert_eq!((longest_start, longest), (2_435_066, 135_851));
}

#[test]
fn recommended_transformation_gives_the_documented_load() {
    let trace = read_nasa(&TraceOptions {
        compress: 10,
        scale: 100.0,
        ..TraceOptions::default()
    });
    assert_eq!(trace.rps.len(), 505_995);
    assert_eq!(trace.interval_secs, 1.0);
    assert_close("mean", trace.mean_rps(), 684.1, 0.05);
    assert_eq!(trace.peak_rps(), 8300.0);

    let mut demand: Vec<u32> = trace
        .rps
        .iter()
        .map(|rps| demand_instances(*rps, CAPACITY_PER_INSTANCE))
        .collect();
    let mean = demand.iter().map(|d| f64::from(*d)).sum::<f64>() / demand.len() as f64;
    assert_close("mean instances", mean, 6.9, 0.05);
    demand.sort_unstable();
    assert_eq!(demand.first(), Some(&1));
    assert_eq!(demand.last(), Some(&83));
}
