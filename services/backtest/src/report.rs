//! The side-by-side table of a [`Comparison`], as `novactl backtest` prints
//! it and the README quotes it: one row per metric, lower is better except
//! where the row says otherwise.

use std::fmt::Write;

use crate::elasticity::ElasticityMetrics;
use crate::replay::Comparison;

/// One row: name, how to read it, and how to take it from the metrics.
type Row = (&'static str, &'static str, fn(&ElasticityMetrics) -> String);

const ROWS: &[Row] = &[
    (
        "under-provisioning accuracy θ_U",
        "%, lower is better",
        |m| format!("{:.2}", m.under_provisioning_accuracy_pct),
    ),
    (
        "over-provisioning accuracy θ_O",
        "%, lower is better",
        |m| format!("{:.2}", m.over_provisioning_accuracy_pct),
    ),
    (
        "under-provisioning timeshare τ_U",
        "%, lower is better",
        |m| format!("{:.2}", m.under_provisioning_timeshare_pct),
    ),
    (
        "over-provisioning timeshare τ_O",
        "%, lower is better",
        |m| format!("{:.2}", m.over_provisioning_timeshare_pct),
    ),
    ("instability υ", "%, lower is better", |m| {
        format!("{:.2}", m.instability_pct)
    }),
    ("jitter j", "adaptations/h, best at 0", |m| {
        format!("{:+.2}", m.jitter_per_hour)
    }),
    ("SLO-violation time", "s, load above ready capacity", |m| {
        format!("{:.0}", m.slo_violation_secs)
    }),
    ("instance-seconds", "provisioned, what is paid", |m| {
        format!("{:.0}", m.instance_secs)
    }),
    ("actions", "scaling changes", |m| m.actions.to_string()),
];

/// The settings line and the metric table, as Markdown.
pub fn markdown(comparison: &Comparison) -> String {
    let s = &comparison.settings;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "target {} (min {}, max {}, start {}), {} rps per instance, warm-up {} s, metric delay {} s, \
         NovaCron samples every {} s, cpu {}; HPA: cpu target {:.0}% ({}), sync {} s, metric window {} s, tolerance 0.1, default behavior",
        s.target,
        s.min,
        s.max,
        s.initial,
        s.capacity_per_instance,
        s.warmup_secs,
        s.metric_delay_secs,
        s.sample_every_secs,
        s.cpu_model,
        s.hpa_target_cpu * 100.0,
        s.hpa_target_source,
        s.hpa_sync_secs,
        s.hpa_metric_window_secs,
    );
    let _ = writeln!(out);
    let (nova, hpa) = (&comparison.novacron, &comparison.hpa);
    let _ = writeln!(out, "| metric | unit | {} | {} |", nova.name, hpa.name);
    let _ = writeln!(out, "|---|---|---:|---:|");
    for (name, unit, value) in ROWS {
        let _ = writeln!(
            out,
            "| {name} | {unit} | {} | {} |",
            value(&nova.metrics),
            value(&hpa.metrics)
        );
    }
    let cover = |supply: &[u32]| match cover_secs(comparison, supply) {
        Some(secs) => format!("{secs:.0}"),
        None => "never".to_string(),
    };
    let _ = writeln!(
        out,
        "| time to cover the largest demand step | s, until ready ≥ demand | {} | {} |",
        cover(&nova.supply),
        cover(&hpa.supply)
    );
    let m = &nova.metrics;
    let _ = writeln!(
        out,
        "\n{} intervals, {:.1} h of trace; demand changed {} times.",
        m.intervals,
        m.duration_secs / 3600.0,
        m.demand_changes
    );
    out
}

/// Seconds from the largest rise of demand until `supply` covers it, on
/// the comparison's own interval; `None` if it never does.
pub fn cover_secs(comparison: &Comparison, supply: &[u32]) -> Option<f64> {
    let metrics = &comparison.novacron.metrics;
    let interval = metrics.duration_secs / metrics.intervals.max(1) as f64;
    time_to_cover(&comparison.demand, supply).map(|intervals| intervals as f64 * interval)
}

/// Intervals from the largest rise of demand between two intervals until
/// the supply first covers the demand; `None` if it never does (or demand
/// never rises). Measures reaction on step and spike traces.
pub fn time_to_cover(demand: &[u32], supply: &[u32]) -> Option<usize> {
    let (step, _) = demand
        .windows(2)
        .enumerate()
        .map(|(i, w)| (i + 1, i64::from(w[1]) - i64::from(w[0])))
        .filter(|(_, rise)| *rise > 0)
        .max_by_key(|(i, rise)| (*rise, std::cmp::Reverse(*i)))?;
    demand[step..]
        .iter()
        .zip(&supply[step..])
        .position(|(d, s)| s >= d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::CpuModel;
    use crate::replay::{Comparison, ResolvedSettings, Run};

    fn metrics(actions: u64) -> ElasticityMetrics {
        ElasticityMetrics {
            intervals: 3600,
            duration_secs: 3600.0,
            under_provisioning_accuracy_pct: 1.234,
            over_provisioning_accuracy_pct: 50.0,
            under_provisioning_timeshare_pct: 2.0,
            over_provisioning_timeshare_pct: 90.0,
            instability_pct: 3.0,
            jitter_per_hour: -4.5,
            supply_adaptations: 10,
            demand_changes: 14,
            slo_violation_secs: 12.0,
            instance_secs: 36000.0,
            actions,
        }
    }

    #[test]
    fn time_to_cover_counts_from_the_largest_rise() {
        // (demand, supply, expected)
        let cases: [(&[u32], &[u32], Option<usize>); 5] = [
            (&[1, 1, 5, 5, 5, 5], &[1, 1, 1, 1, 5, 5], Some(2)),
            (&[1, 3, 3, 9, 9], &[1, 1, 3, 3, 9], Some(1)), // the rise to 9, not to 3
            (&[1, 5, 5], &[5, 5, 5], Some(0)),
            (&[1, 5, 5], &[1, 1, 1], None),
            (&[5, 5, 1], &[5, 5, 5], None),
        ];
        for (demand, supply, expected) in cases {
            assert_eq!(
                time_to_cover(demand, supply),
                expected,
                "{demand:?} {supply:?}"
            );
        }
    }

    #[test]
    fn the_table_has_one_row_per_metric_and_both_runs() {
        let run = |name: &str, actions| Run {
            name: name.into(),
            supply: vec![1, 1, 4],
            metrics: metrics(actions),
        };
        let comparison = Comparison {
            demand: vec![1, 4, 4],
            novacron: run("NovaCron", 7),
            hpa: run("HPA", 9),
            settings: ResolvedSettings {
                target: "web".into(),
                min: 2,
                max: 20,
                initial: 2,
                capacity_per_instance: 100.0,
                warmup_secs: 10,
                metric_delay_secs: 0,
                sample_every_secs: 1,
                cpu_model: CpuModel::Saturating,
                hpa_target_cpu: 0.5,
                hpa_target_source: "given".into(),
                hpa_sync_secs: 15,
                hpa_metric_window_secs: 15,
            },
        };
        let table = markdown(&comparison);
        assert!(
            table.contains("| metric | unit | NovaCron | HPA |"),
            "{table}"
        );
        assert!(
            table
                .contains("| under-provisioning accuracy θ_U | %, lower is better | 1.23 | 1.23 |"),
            "{table}"
        );
        assert!(table.contains("| jitter j | adaptations/h, best at 0 | -4.50 | -4.50 |"));
        assert!(table.contains("| actions | scaling changes | 7 | 9 |"));
        assert!(table.contains("samples every 1 s, cpu saturating; HPA: cpu target 50% (given)"));
        assert!(
            table.contains(
                "| time to cover the largest demand step | s, until ready ≥ demand | 1 | 1 |"
            ),
            "{table}"
        );
        assert_eq!(table.matches("\n|").count(), ROWS.len() + 3);
    }
}
