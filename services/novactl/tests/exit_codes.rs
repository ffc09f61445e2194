//! novactl's exit codes as a script sees them, from the real binary: a NATS
//! that cannot be reached is one line on stderr and exit code 3 for every
//! verb that talks to NATS; a bad time, stage or target is one line and
//! exit code 2 before anything is dialled; clap's own usage errors stay 2.
//! (Not found, 4, needs a stream: `tests/tests/audit_queries.rs`.)

use std::net::TcpListener;
use std::process::Command;

/// A local URL where nothing listens: a port the OS just handed out, closed.
fn dead_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("nats://127.0.0.1:{port}")
}

fn novactl(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_novactl"))
        .args(args)
        .env_remove("NOVA_NATS_URL")
        .output()
        .expect("novactl runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_unreachable_nats_is_one_line_and_exit_code_3() {
    let url = dead_url();
    let verbs: [&[&str]; 7] = [
        &["status"],
        &["audit", "tail"],
        &["audit", "query", "--target", "web"],
        &["audit", "stats"],
        &["explain", "web"],
        &["--output", "table", "status", "web"],
        &["provision"],
    ];
    for verb in verbs {
        let mut args = verb.to_vec();
        args.extend(["--nats-url", url.as_str()]);
        let (code, out, err) = novactl(&args);
        assert_eq!(code, Some(3), "{verb:?}: {err}");
        assert!(out.is_empty(), "{verb:?}: {out}");
        let lines: Vec<&str> = err.lines().collect();
        assert_eq!(lines.len(), 1, "{verb:?}: one line, not a trace: {err}");
        assert!(
            lines[0].starts_with("novactl: cannot connect to NATS at ")
                && lines[0].contains(&url)
                && lines[0].contains("NOVA_NATS_URL"),
            "{verb:?}: {err}"
        );
    }
}

#[test]
fn a_bad_time_stage_or_target_is_one_line_and_exit_code_2() {
    // The dead URL shows nothing is dialled: a connect would exit 3.
    let url = dead_url();
    let cases: [(&[&str], &str); 7] = [
        (
            &["audit", "query", "--since", "yesterday"],
            "--since \"yesterday\" is neither an RFC 3339 time",
        ),
        (
            &["audit", "query", "--until", "2026-13-01T00:00:00Z"],
            "--until \"2026-13-01T00:00:00Z\" is neither",
        ),
        (
            &["audit", "query", "--stage", "judge"],
            "--stage \"judge\" is not a stage",
        ),
        (
            &["audit", "query", "--target", "web.*"],
            "--target \"web.*\" is not a target name",
        ),
        (
            &["audit", "stats", "--since", "1h", "--until", "2h"],
            "--since is after --until",
        ),
        (
            &["audit", "stats", "--flap-window", "often"],
            "--flap-window \"often\" is not a duration",
        ),
        (&["explain", "a>b"], "--target \"a>b\" is not a target name"),
    ];
    for (args, want) in cases {
        let mut all = args.to_vec();
        all.extend(["--nats-url", url.as_str()]);
        let (code, _, err) = novactl(&all);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let (code, _, err) = novactl(&["audit", "query", "--bogus"]);
    assert_eq!(code, Some(2), "clap's usage error: {err}");
}
