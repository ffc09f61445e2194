//! One clock per decision input, end to end: a publisher whose event time
//! lags the wall clock by ten minutes, its rule firings mixed with an
//! operator's scale requests. Rules keep their cooldowns on their samples'
//! clock, operators meet every action's cooldown on the wall clock, and an
//! operator's scale-up holds the rules' scale-downs for its warm-up of wall
//! clock, not for the lag.

use std::sync::Arc;

use futures_util::StreamExt;
use nova_e2e::{AuditReader, NatsServer, Pipeline, WAIT, control, publish, within};
use nova_runtime::nats::CAPACITY_BUCKET;
use nova_shared::codec::{self, Encoding};
use nova_shared::policy::from_yaml;
use nova_shared::subjects;
use nova_shared::wire::{AuditKind, AuditRecord, CapacityRecord, ControlRequest, ScaleRequest};
use serde_json::json;

const POLICY: &str = r#"
targets:
  web:
    rules: [q]
    min: 1
    max: 50
    warmup_secs: 60
    backend: { sim: { initial: 4, warmup_secs: 0 } }
horizontal_scaling_rules:
  q:
    scale_up: { condition: "queue_depth > 1000", action: "add 2 instances", cooldown: 120 }
    scale_down: { condition: "queue_depth < 100", action: "remove 1 instance", cooldown: 120 }
"#;

/// How far the publisher's clock is behind the wall, ms.
const LAG_MS: i64 = 600_000;

async fn wait_capacity(client: &async_nats::Client, desired: u32) {
    let js = async_nats::jetstream::new(client.clone());
    let store = js.get_key_value(CAPACITY_BUCKET).await.expect("bucket");
    let mut watch = store.watch_with_history("web").await.expect("watch");
    within(&format!("web's capacity to be {desired}"), WAIT, async {
        while let Some(entry) = watch.next().await {
            let entry = entry.expect("entry");
            let record: CapacityRecord =
                codec::decode(&entry.value, Encoding::MsgPack).expect("record");
            if record.desired == desired {
                return;
            }
        }
        panic!("the capacity watch ended");
    })
    .await;
}

async fn queue_depth(client: &async_nats::Client, value: f64, ts: i64) {
    let sample = rmp_serde::to_vec_named(&json!({"value": value, "ts": ts})).expect("encode");
    publish(
        client,
        subjects::metrics("web", "queue_depth"),
        sample,
        false,
    )
    .await;
}

fn scale(desired: u32, force: bool) -> ControlRequest {
    ControlRequest::Scale(ScaleRequest {
        target: "web".into(),
        desired,
        reason: Some("clock test".into()),
        force,
    })
}

/// The next decision, and the result of its command when it has one.
async fn decision(audit: &mut AuditReader, what: &str) -> AuditRecord {
    audit
        .wait_for(what, |r| r.kind == AuditKind::Decision)
        .await
}

async fn result(audit: &mut AuditReader, to: u32) {
    let result = audit
        .wait_for(&format!("the result to {to}"), |r| {
            r.kind == AuditKind::Result && r.to == Some(to)
        })
        .await;
    assert_eq!(result.outcome, "succeeded", "{}", result.reason);
}

/// The time left in a reason's `for another <time>`, in seconds.
fn another_secs(reason: &str) -> u64 {
    let rest = reason
        .split("for another ")
        .nth(1)
        .unwrap_or_else(|| panic!("no time left in {reason:?}"));
    let time = rest.split(' ').next().unwrap_or_default();
    let (minutes, seconds) = match time.split_once('m') {
        Some((m, s)) => (m.parse::<u64>().unwrap_or(0), s),
        None => (0, time),
    };
    minutes * 60 + seconds.trim_end_matches('s').parse::<u64>().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_ten_minutes_behind_and_an_operator_each_get_their_own_clock() {
    let nats = NatsServer::start().await;
    let client = nats.client().await;
    let mut audit = AuditReader::new(&client).await;
    let policy = Arc::new(from_yaml(POLICY, "clock.yaml").expect("policy"));
    let pipeline = Pipeline::start(&nats, policy).await;
    wait_capacity(&client, 4).await;
    let e1 = nova_runtime::now_ms() - LAG_MS;

    // A rule scales up on a sample ten minutes old: its two-minute
    // cooldown runs on event time for rules, and from now on the wall.
    queue_depth(&client, 1500.0, e1).await;
    let up = decision(&mut audit, "the rule's scale-up").await;
    assert_eq!(
        (up.outcome.as_str(), up.to),
        ("scale", Some(6)),
        "{}",
        up.reason
    );
    result(&mut audit, 6).await;
    let status = control(&client, ControlRequest::status(Some("web".into()))).await;
    let web = &status.targets[0];
    let now = nova_runtime::now_ms();
    assert_eq!(web.up_cooldown_until, e1 + 120_000, "event time, for rules");
    assert!(
        web.wall_up_cooldown_until > now + 60_000 && web.wall_up_cooldown_until <= now + 120_000,
        "wall clock, for operators: {} s from now",
        (web.wall_up_cooldown_until - now) / 1000
    );

    // The operator, seconds later on the wall, meets that cooldown (the
    // mixed clocks read a rule's cooldown ending 8 minutes ago: none).
    let reply = control(&client, scale(9, false)).await;
    assert!(reply.ok, "{}", reply.message);
    let held = decision(&mut audit, "the operator's held scale").await;
    assert_eq!(held.outcome, "cooldown", "{}", held.reason);
    assert!(
        held.reason.contains("scale-up is cooling down for another")
            && held.reason.ends_with("(novactl scale --force overrides)"),
        "{}",
        held.reason
    );
    let left = another_secs(&held.reason);
    assert!((60..=120).contains(&left), "{left} s left: {}", held.reason);

    // --force goes past it.
    let reply = control(&client, scale(9, true)).await;
    assert!(reply.ok, "{}", reply.message);
    let forced = decision(&mut audit, "the forced scale").await;
    assert_eq!(
        (forced.outcome.as_str(), forced.to),
        ("scale", Some(9)),
        "{}",
        forced.reason
    );
    assert!(
        forced
            .reason
            .contains("with --force (clock test); scaling web from 6 to 9 (set to 9), cooldown 0s, forced past: scale-up is cooling down"),
        "{}",
        forced.reason
    );
    result(&mut audit, 9).await;

    // The publisher's next breach, 150 s after its first on its own clock
    // (still 7.5 minutes behind the wall): past the rule's cooldown, and
    // the operator's action holds it for nothing (the mixed clocks read
    // the operator's wall-clock stamp against the lagging event time: a
    // cooldown of about 7.5 minutes more).
    let e2 = e1 + 150_000;
    queue_depth(&client, 1500.0, e2).await;
    let again = decision(&mut audit, "the rule's second scale-up").await;
    assert_eq!(
        (again.outcome.as_str(), again.from, again.to),
        ("scale", Some(9), Some(11)),
        "{}",
        again.reason
    );
    result(&mut audit, 11).await;

    // A scale-down 130 s later on the publisher's clock: past the rule's
    // cooldown and warm-up on event time, but the operator's scale-up
    // seconds ago on the wall is still warming up: for what is left of its
    // 60 s of wall clock, not for the lag.
    let e3 = e2 + 130_000;
    queue_depth(&client, 50.0, e3).await;
    let down = decision(&mut audit, "the rule's scale-down").await;
    assert_eq!(down.outcome, "warming_up", "{}", down.reason);
    assert!(
        down.reason
            .ends_with("after an operator or fallback action (wall clock)"),
        "{}",
        down.reason
    );
    let left = another_secs(&down.reason);
    assert!(left <= 60, "{left} s of warm-up left: {}", down.reason);

    let decisions: Vec<(i64, &str, Option<&str>)> = audit
        .seen
        .iter()
        .filter(|r| r.kind == AuditKind::Decision)
        .map(|r| (r.ts, r.outcome.as_str(), r.rule.as_deref()))
        .collect();
    assert_eq!(decisions.len(), 5, "{decisions:?}");
    assert_eq!(
        [decisions[0].0, decisions[3].0, decisions[4].0],
        [e1, e2, e3],
        "rule decisions carry their event time"
    );
    eprintln!(
        "lag {} s: the operator's scale met {} s left of the rule's 120 s cooldown, the \
         rule's second breach scaled 9 -> 11, its scale-down met {left} s left of the \
         operator's 60 s warm-up",
        LAG_MS / 1000,
        another_secs(&held.reason),
    );
    pipeline.stop().await;
}
