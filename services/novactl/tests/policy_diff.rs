//! `novactl policy diff OLD NEW` as an operator runs it: the real binary,
//! its lines and its exit code (0 no change, 1 changes, 2 a bad file).

use std::process::Command;

const OLD: &str = r#"
targets:
  web: { rules: [cpu_based], max: 100, backend: { sim: { initial: 2 } } }
horizontal_scaling_rules:
  cpu_based:
    scale_up: { condition: "avg_cpu > 70% for 2 minutes", action: "add 2 instances", cooldown: 300 }
"#;

fn diff(old: &str, new: &str, json: bool) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("old.yaml"), dir.path().join("new.yaml"));
    std::fs::write(&a, old).unwrap();
    std::fs::write(&b, new).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_novactl"));
    if json {
        command.args(["--output", "json"]);
    }
    let out = command
        .args(["policy", "diff"])
        .args([&a, &b])
        .output()
        .expect("novactl runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn policy_diff_prints_each_change_and_exits_as_diff_does() {
    let (code, out, _) = diff(OLD, &format!("# reworded\n{OLD}"), false);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("no changes: "), "{out}");

    let new = OLD
        .replace("avg_cpu > 70%", "avg_cpu > 60%")
        .replace("max: 100", "max: 120");
    let (code, out, _) = diff(OLD, &new, false);
    assert_eq!(code, Some(1), "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].ends_with(": 2 change(s)"), "{out}");
    assert_eq!(lines[1], "  ~ target web: max: 100 -> 120");
    assert_eq!(
        lines[2],
        r#"  ~ target web, rule cpu_based.scale_up: condition: "avg_cpu > 70% for 2 minutes" -> "avg_cpu > 60% for 2 minutes""#
    );

    let (code, out, _) = diff(OLD, &new, true);
    assert_eq!(code, Some(1));
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["changes"].as_array().map(Vec::len), Some(2), "{out}");
    assert_ne!(report["old"]["revision"], report["new"]["revision"]);

    let bad = OLD
        .replace("max: 100", "max: lots")
        .replace("add 2", "add two");
    let (code, out, err) = diff(OLD, &bad, false);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("2 problem(s)") && err.contains("max"), "{err}");
}
