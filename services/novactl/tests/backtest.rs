//! `novactl backtest` as a user runs it: the real binary on the shipped
//! policies and synthetic traces.

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn backtest(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_novactl"))
        .current_dir(root())
        .arg("backtest")
        .args(args)
        .output()
        .expect("novactl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The tracking policy on the step trace, charted to `chart`, plus `extra`.
fn step_trace(chart: &std::path::Path, extra: &[&str]) -> (bool, String, String) {
    let mut args = vec![
        "--policy",
        "deploy/policies/tracking.yaml",
        "--trace",
        "services/backtest/data/step.txt",
        "--chart",
        chart.to_str().expect("utf-8 path"),
        "--quiet",
    ];
    args.extend_from_slice(extra);
    backtest(&args)
}

#[test]
fn a_step_trace_prints_both_runs_and_writes_a_chart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chart = dir.path().join("step.svg");
    let (ok, stdout, stderr) = step_trace(&chart, &[]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("| metric | unit | NovaCron | HPA |"),
        "{stdout}"
    );
    assert!(
        stdout.contains("HPA: cpu target 50% (the target of tracking rule cpu_target)"),
        "{stdout}"
    );
    // Same algorithm; NovaCron sees the step at once, the HPA at its next
    // sync, and then reads saturated cpu (warming instances at 0 %), so it
    // climbs in smaller steps than doubling.
    assert!(
        stdout.contains(
            "| time to cover the largest demand step | s, until ready ≥ demand | 40 | 63 |"
        ),
        "{stdout}"
    );
    let svg = std::fs::read_to_string(&chart).expect("chart written");
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(80)]);
    assert!(svg.contains("NovaCron") && svg.contains("HPA"));
}

#[test]
fn bad_input_is_named() {
    let (ok, _, stderr) = backtest(&[
        "--policy",
        "deploy/policies/tracking.yaml",
        "--trace",
        "no/such/trace.txt",
        "--quiet",
    ]);
    assert!(!ok);
    assert!(stderr.contains("no/such/trace.txt"), "{stderr}");
    let (ok, _, stderr) = backtest(&[
        "--policy",
        "deploy/policies/runbook.yaml",
        "--trace",
        "services/backtest/data/step.txt",
        "--quiet",
    ]);
    assert!(!ok);
    assert!(stderr.contains("several targets"), "{stderr}");
    assert!(stderr.contains("--target"), "{stderr}");
}

#[test]
fn output_json_is_one_document_with_the_same_figures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let chart = dir.path().join("step.svg");
    let (ok, stdout, stderr) = step_trace(&chart, &["--output", "json"]);
    assert!(ok, "{stderr}");
    let document: serde_json::Value =
        serde_json::from_str(stdout.trim()).expect("one JSON document");
    assert_eq!(document["novacron"]["time_to_cover_secs"], 40.0);
    assert_eq!(document["hpa"]["time_to_cover_secs"], 63.0);
    assert_eq!(document["novacron"]["metrics"]["slo_violation_secs"], 40.0);
    assert_eq!(document["target"], "web");
}
