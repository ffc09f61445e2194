//! The audit stream's consumers end to end: a real nats-server and the
//! five stages in this process make real decisions (a rule's scale-up from
//! a published sample, operator scales down and up again, one refused at
//! the maximum), then
//!
//! - the audit service's `nova.ctl.audit.stats` answers the runbook's
//!   section 8 figures for them, and `{error}` for a bad request; the
//!   request as encoded and every reply match `schemas/audit-stats*.json`,
//!   and the request schema refuses the bad requests it can tell;
//! - `novactl audit stats --output json` (the real binary, reading the
//!   stream itself) gives the same figures;
//! - `novactl audit query` filters by target, stage, outcome and time, as
//!   JSON, a table, and `--follow` (a new record arrives on the open reader);
//! - `novactl explain` tells the rule's chain from sample to result, and why
//!   the last decision did nothing; an unknown target or decision exits 4.

use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use nova_e2e::process::binary;
use nova_e2e::{
    AuditReader, NatsServer, Pipeline, WAIT, check_against_schema, control, publish, schema_check,
    within,
};
use nova_shared::audit_stats::{AuditStats, STATS_VERB, StatsRequest, TargetStats};
use nova_shared::codec::{self, Encoding};
use nova_shared::policy::from_yaml;
use nova_shared::subjects;
use nova_shared::wire::{AuditKind, AuditRecord, ControlRequest, ErrorReply, ScaleRequest};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::io::AsyncBufReadExt;

const POLICY: &str = r#"
targets:
  web: { rules: [q], min: 1, max: 5, backend: { sim: { initial: 2 } } }
horizontal_scaling_rules:
  q:
    scale_up: { condition: "queue_depth > 1000", action: "add 1 instance" }
"#;

fn rfc3339(ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap()
        .format(&Rfc3339)
        .unwrap()
}

async fn novactl(url: &str, args: &[&str]) -> Output {
    within(
        &format!("novactl {args:?}"),
        WAIT,
        tokio::process::Command::new(binary("novactl"))
            .args(args)
            .args(["--nats-url", url])
            .output(),
    )
    .await
    .expect("novactl runs")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn scale(client: &async_nats::Client, desired: u32) {
    let reply = control(
        client,
        ControlRequest::Scale(ScaleRequest {
            target: "web".into(),
            desired,
            reason: Some("audit test".into()),
            force: true,
        }),
    )
    .await;
    assert!(reply.ok, "{}", reply.message);
}

fn succeeded_to(to: u32) -> impl Fn(&AuditRecord) -> bool {
    move |r| r.kind == AuditKind::Result && r.outcome == "succeeded" && r.to == Some(to)
}

/// The figures of `web`, as the audit service answers them, and the reply
/// as sent (the decoded MessagePack map).
async fn service_stats(
    client: &async_nats::Client,
    request: &StatsRequest,
) -> (AuditStats, serde_json::Value) {
    let payload = codec::encode(request).expect("encode");
    let reply = within(
        "an answer on nova.ctl.audit.stats",
        WAIT,
        client.request(subjects::control(STATS_VERB), payload.into()),
    )
    .await
    .expect("answered");
    (
        codec::decode(&reply.payload, Encoding::MsgPack).expect("audit stats"),
        codec::decode(&reply.payload, Encoding::MsgPack).expect("a map"),
    )
}

fn assert_figures(s: &TargetStats) {
    // 2 -> 3 (the rule), 3 -> 2, 2 -> 5 (operator), then 6 refused at max 5.
    assert_eq!((s.actions, s.successes, s.failures), (3, 3, 0), "{s:?}");
    assert_eq!(s.success_rate, 1.0);
    assert_eq!((s.scale_ups, s.scale_downs, s.capacity_moved), (2, 1, 5));
    assert_eq!((s.flapping_episodes, s.reversals), (1, 2), "{s:?}");
    assert_eq!(s.max, Some(5));
    assert_eq!(s.not_taken.get("at_max"), Some(&1), "{s:?}");
    assert!(s.time_at_max_secs >= 0.0 && s.scaling_velocity_per_hour > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_stats_query_and_explain_read_real_decisions() {
    let nats = NatsServer::start().await;
    let client = nats.client().await;
    let mut audit = AuditReader::new(&client).await;
    let policy = Arc::new(from_yaml(POLICY, "p.yaml").expect("policy"));
    let pipeline = Pipeline::start(&nats, policy).await;
    let t0 = nova_runtime::now_ms() - 1_000;

    // The rule: one sample over the threshold adds one.
    let sample = serde_json::json!({"value": 2000, "ts": nova_runtime::now_ms()});
    publish(
        &client,
        subjects::metrics("web", "queue_depth"),
        serde_json::to_vec(&sample).unwrap(),
        true,
    )
    .await;
    audit.wait_for("web at 3 (the rule)", succeeded_to(3)).await;
    scale(&client, 2).await;
    let down = audit.wait_for("web at 2", succeeded_to(2)).await;
    scale(&client, 5).await;
    audit.wait_for("web at 5", succeeded_to(5)).await;
    scale(&client, 6).await;
    audit
        .wait_for("the refusal at max", |r| r.outcome == "at_max")
        .await;
    let t1 = nova_runtime::now_ms() + 1_000;

    // The service, once it has read the at_max record (it reads the stream
    // on its own consumer): the same span as novactl's below.
    let request = StatsRequest {
        target: Some("web".into()),
        since_ms: Some(t0),
        until_ms: Some(t1),
        flap_window_secs: None,
    };
    let (served, sent) = within("the service to count the at_max record", WAIT, async {
        loop {
            let (stats, sent) = service_stats(&client, &request).await;
            if stats
                .targets
                .first()
                .is_some_and(|t| t.not_taken.contains_key("at_max"))
            {
                return (stats, sent);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(served.targets.len(), 1);
    assert_figures(&served.targets[0]);
    // The exchange as it went over the wire, against its schemas: the
    // request as this code encodes it, and the service's reply.
    let asked: serde_json::Value =
        codec::decode(&codec::encode(&request).unwrap(), Encoding::MsgPack).unwrap();
    check_against_schema("audit-stats-request.schema.json", &[asked]);
    let mut replies = vec![sent];
    // A bad request gets `{error}`, never silence; the request schema
    // refuses each of them too.
    for bad in [
        r#"{"since_ms": "yesterday"}"#,
        r#"{"bogus": 1}"#,
        r#"{"since_ms": 5, "until_ms": 1}"#,
        r#"{"since_ms": -1}"#,
    ] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Content-Type", codec::CONTENT_TYPE_JSON);
        let reply = within(
            "an error reply",
            WAIT,
            client.request_with_headers(subjects::control(STATS_VERB), headers, bad.into()),
        )
        .await
        .expect("answered");
        let error: ErrorReply = codec::decode(&reply.payload, Encoding::MsgPack).expect("{error}");
        assert!(
            error.error.contains("not an audit stats request"),
            "{bad}: {}",
            error.error
        );
        replies.push(codec::decode(&reply.payload, Encoding::MsgPack).expect("a map"));
        // The one the schema cannot refuse: a start after the end.
        if !bad.contains("until_ms") {
            let asked: serde_json::Value = serde_json::from_str(bad).unwrap();
            assert!(
                schema_check("audit-stats-request.schema.json", &[asked]).is_err(),
                "the request schema accepted {bad}, which the service refused"
            );
        }
    }
    check_against_schema("audit-stats.schema.json", &replies);

    // novactl audit stats: the same figures from its own read of the stream.
    let (since, until) = (rfc3339(t0), rfc3339(t1));
    let out = novactl(
        &nats.url,
        &[
            "--output", "json", "audit", "stats", "--target", "web", "--since", &since, "--until",
            &until,
        ],
    )
    .await;
    let printed: AuditStats = serde_json::from_str(&stdout(&out)).expect("one JSON document");
    assert_figures(&printed.targets[0]);
    let (a, b) = (&printed.targets[0], &served.targets[0]);
    assert_eq!(
        (a.actions, a.reversals, a.max, &a.not_taken),
        (b.actions, b.reversals, b.max, &b.not_taken)
    );
    assert!((a.time_at_max_secs - b.time_at_max_secs).abs() < 0.01);
    let table = stdout(
        &novactl(
            &nats.url,
            &["audit", "stats", "--target", "web", "--since", &since],
        )
        .await,
    );
    assert!(
        table.contains("| target") && table.contains("| web"),
        "{table}"
    );
    let missing = novactl(&nats.url, &["audit", "stats", "--target", "nosuch"]).await;
    assert_eq!(missing.status.code(), Some(4));

    // audit query: target + outcome, as one JSON document.
    let out = novactl(
        &nats.url,
        &[
            "--output",
            "json",
            "audit",
            "query",
            "--target",
            "web",
            "--outcome",
            "succeeded",
        ],
    )
    .await;
    let records: Vec<AuditRecord> = serde_json::from_str(&stdout(&out)).expect("a JSON array");
    let tos: Vec<Option<u32>> = records.iter().map(|r| r.to).collect();
    assert_eq!(tos, [Some(3), Some(2), Some(5)]);
    // By stage (the subject filter) and time.
    let out = novactl(
        &nats.url,
        &[
            "--output",
            "json",
            "audit",
            "query",
            "--stage",
            "evaluator",
            "--since",
            &since,
        ],
    )
    .await;
    let records: Vec<AuditRecord> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(records.len(), 1, "the rule's one trigger: {records:?}");
    assert_eq!(records[0].rule.as_deref(), Some("q.scale_up"));
    let later = rfc3339(t1 + 60_000);
    let out = novactl(
        &nats.url,
        &["--output", "json", "audit", "query", "--since", &later],
    )
    .await;
    assert_eq!(stdout(&out).trim(), "[]");
    let out = novactl(
        &nats.url,
        &["--output", "table", "audit", "query", "--outcome", "at_max"],
    )
    .await;
    let table = stdout(&out);
    assert!(
        table.contains("| time") && table.contains("at_max"),
        "{table}"
    );
    assert_eq!(table.lines().count(), 3, "header, rule, one row: {table}");

    // explain: the newest decision did nothing, and says why.
    let text = stdout(&novactl(&nats.url, &["explain", "web"]).await);
    assert!(
        text.contains("the arbiter did not act (at_max: the target is already at its maximum"),
        "{text}"
    );
    // The rule's decision: sample -> trigger -> decision -> result.
    let rule_decision = audit
        .seen
        .iter()
        .find(|r| {
            r.kind == AuditKind::Decision
                && r.outcome == "scale"
                && r.rule.as_deref() == Some("q.scale_up")
        })
        .and_then(|r| r.decision_id.clone())
        .expect("the rule's decision");
    let text = stdout(&novactl(&nats.url, &["explain", "web", "--decision", &rule_decision]).await);
    for want in [
        "the evaluator saw",
        "(rule q.scale_up) -> trigger ",
        "the arbiter decided scale 2 -> 3",
        "the actuator applied it in ",
        "(result succeeded)",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    let down_id = down.decision_id.clone().expect("decision id");
    let out = novactl(
        &nats.url,
        &["--output", "json", "explain", "web", "--decision", &down_id],
    )
    .await;
    let chain: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    assert_eq!(chain["decision"]["outcome"], "scale");
    assert_eq!(chain["result"]["to"], 2);
    assert!(
        chain["sentences"][0]
            .as_str()
            .unwrap()
            .contains("has no evaluator record")
    );
    for args in [
        &["explain", "nosuch"][..],
        &["explain", "web", "--decision", "d-none"],
    ] {
        let out = novactl(&nats.url, args).await;
        assert_eq!(out.status.code(), Some(4), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("no decision"), "{err}");
    }

    // --follow: the history, then a record that arrives later.
    let mut follow = tokio::process::Command::new(binary("novactl"))
        .args([
            "--output",
            "json",
            "audit",
            "query",
            "--target",
            "web",
            "--outcome",
            "succeeded",
            "--follow",
        ])
        .args(["--nats-url", &nats.url])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("novactl --follow");
    let mut lines = tokio::io::BufReader::new(follow.stdout.take().unwrap()).lines();
    let mut next = async || -> AuditRecord {
        let line = within("a followed record", WAIT, lines.next_line())
            .await
            .expect("read")
            .expect("a line");
        serde_json::from_str(&line).expect("one JSON record per line")
    };
    for to in [3, 2, 5] {
        assert_eq!(next().await.to, Some(to));
    }
    scale(&client, 4).await;
    assert_eq!(next().await.to, Some(4), "the new result, while following");
    follow.kill().await.expect("stop following");
    pipeline.stop().await;
}
