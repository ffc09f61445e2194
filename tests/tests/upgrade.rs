//! A rolling upgrade, end to end: today's arbiter beside records a newer one
//! wrote in KV `nova_arbiter`. A state it can read (unknown fields at every
//! level, an outcome it does not know) it decides on and writes back with
//! nothing lost; a state of a newer version it does not decide on and does
//! not write back: the trigger is deferred (audited, redelivered), never
//! dead-lettered, and is decided once the state is one it understands.

use std::sync::Arc;
use std::time::Duration;

use nova_e2e::{AuditReader, NatsServer, Pipeline, WAIT, stream_first, stream_messages, within};
use nova_runtime::nats::{
    ACTUATOR_CONSUMER, ARBITER_BUCKET, ARBITER_CONSUMER, CAPACITY_BUCKET, COMMANDS_STREAM,
    DEAD_STREAM, RESULTS_STREAM, TRIGGERS_STREAM,
};
use nova_runtime::publish;
use nova_shared::policy::from_yaml;
use nova_shared::subjects;
use nova_shared::wire::{
    ActionResult, AuditKind, Command, DeadLetter, Direction, Extra, RuleFiring, ScaleAction,
    Trigger, TriggerSource, Version,
};
use serde_json::json;

const POLICY: &str = r#"
targets:
  web:
    rules: [q]
    max: 50
    backend: { sim: { initial: 2 } }
  api:
    rules: [q]
    max: 50
    backend: { sim: { initial: 2 } }
horizontal_scaling_rules:
  q:
    scale_up: { condition: "queue_depth > 100", action: "add 1 instance", cooldown: 0 }
"#;

/// A target state as an arbiter of version `v` would write it: fields this
/// version does not know at every level (one of them binary), and a stored
/// verdict whose outcome it does not know.
fn newer_state(v: u16) -> rmpv::Value {
    let doc = json!({
        "v": v,
        "seq": 0,
        "recent_triggers": ["old-1"],
        "x_budget": {"monthly_usd": 1200.5, "spent": [1, 2, 3]},
        "recent_verdicts": [{
            "decision": {
                "v": v, "id": "d-old", "trigger_id": "old-1", "ts": 1, "target": "web",
                "outcome": "budget_exceeded", "direction": "up", "reason": "over budget",
                "x_cost_usd": 12.25
            },
            "command": null,
            "x_note": "kept"
        }]
    });
    let mut value = rmpv::ext::to_value(&doc).expect("a value");
    if let rmpv::Value::Map(entries) = &mut value {
        entries.push(("x_blob".into(), rmpv::Value::Binary(vec![0, 255, 7])));
    }
    value
}

fn encode(value: &rmpv::Value) -> Vec<u8> {
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, value).expect("encode");
    out
}

fn decode(bytes: &[u8]) -> rmpv::Value {
    rmpv::decode::read_value(&mut &bytes[..]).expect("a MessagePack value")
}

/// The value of `key` in a map.
fn get<'a>(map: &'a rmpv::Value, key: &str) -> &'a rmpv::Value {
    map.as_map()
        .and_then(|m| m.iter().find(|(k, _)| k.as_str() == Some(key)))
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no {key} in {map}"))
}

fn grow(target: &str, id: &str) -> Trigger {
    Trigger {
        v: Version::CURRENT,
        id: id.into(),
        ts: nova_runtime::now_ms(),
        target: target.into(),
        source: TriggerSource::Rule,
        firings: vec![RuleFiring {
            rule: "q.scale_up".into(),
            direction: Direction::Up,
            action: ScaleAction::Add(1),
            observed: Some(500.0),
            threshold: Some(100.0),
            condition: "queue_depth > 100".into(),
            held_secs: 0,
            reason: "queue_depth 500 > 100".into(),
        }],
        policy_revision: None,
        alert: None,
    }
}

async fn start() -> (NatsServer, async_nats::Client, Pipeline) {
    let nats = NatsServer::start().await;
    let client = nats.client().await;
    let policy = Arc::new(from_yaml(POLICY, "upgrade.yaml").expect("policy"));
    let pipeline = Pipeline::start(&nats, policy).await;
    (nats, client, pipeline)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newer_arbiters_state_is_decided_on_and_written_back_whole() {
    let (_nats, client, pipeline) = start().await;
    let js = async_nats::jetstream::new(client.clone());
    let states = js.get_key_value(ARBITER_BUCKET).await.expect("bucket");
    let written = newer_state(1);
    states
        .put("web", encode(&written).into())
        .await
        .expect("put state");
    let mut audit = AuditReader::new(&client).await;
    let trigger = grow("web", "grow-web-1");
    publish::publish_once(&js, subjects::triggers("web"), &trigger.id, &trigger)
        .await
        .expect("publish trigger");
    let decision = audit
        .find_or_wait("the decision", |r| r.kind == AuditKind::Decision)
        .await;
    assert_eq!(decision.outcome, "scale", "{}", decision.reason);

    let stored = states.get("web").await.expect("read").expect("a state");
    let stored = decode(&stored);
    assert_eq!(get(&stored, "seq").as_u64(), Some(1), "decided: {stored}");
    assert_eq!(get(&stored, "v").as_u64(), Some(1));
    assert_eq!(get(&stored, "x_budget"), get(&written, "x_budget"));
    assert_eq!(
        get(&stored, "x_blob"),
        &rmpv::Value::Binary(vec![0, 255, 7])
    );
    let verdicts = get(&stored, "recent_verdicts")
        .as_array()
        .expect("verdicts");
    assert!(
        verdicts.len() >= 2,
        "the old verdict kept, the new one added"
    );
    let newest = get(verdicts.last().unwrap(), "decision");
    assert_eq!(get(newest, "trigger_id").as_str(), Some("grow-web-1"));
    let old = &get(&written, "recent_verdicts").as_array().unwrap()[0];
    assert_eq!(get(&verdicts[0], "x_note"), get(old, "x_note"));
    let (kept, was) = (get(&verdicts[0], "decision"), get(old, "decision"));
    for key in ["outcome", "x_cost_usd", "id", "reason"] {
        assert_eq!(get(kept, key), get(was, key), "{key}");
    }
    let dead: Vec<DeadLetter> = stream_messages(&client, DEAD_STREAM).await;
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");
    pipeline.stop().await;
}

/// Deliveries a durable consumer has made so far.
async fn delivered_by(client: &async_nats::Client, stream: &str, consumer: &str) -> u64 {
    nova_e2e::consumer_info(client, stream, consumer)
        .await
        .delivered
        .consumer_sequence
}

/// Deliveries the arbiter's consumer has made so far.
async fn delivered(client: &async_nats::Client) -> u64 {
    delivered_by(client, TRIGGERS_STREAM, ARBITER_CONSUMER).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_of_a_newer_version_is_left_alone_and_its_trigger_waits() {
    let (_nats, client, pipeline) = start().await;
    let js = async_nats::jetstream::new(client.clone());
    let states = js.get_key_value(ARBITER_BUCKET).await.expect("bucket");
    // web: version 2, readable by this version's types; api: version 2 with
    // a field whose type changed, which this version cannot decode at all.
    let web = encode(&newer_state(2));
    let mut api = newer_state(2);
    if let rmpv::Value::Map(entries) = &mut api {
        for (key, value) in entries.iter_mut() {
            if key.as_str() == Some("seq") {
                *value = rmpv::Value::from("three");
            }
        }
    }
    let api = encode(&api);
    let web_revision = states.put("web", web.clone().into()).await.expect("put");
    let api_revision = states.put("api", api.clone().into()).await.expect("put");
    let mut audit = AuditReader::new(&client).await;
    for target in ["web", "api"] {
        let trigger = grow(target, &format!("grow-{target}-1"));
        publish::publish_once(&js, subjects::triggers(target), &trigger.id, &trigger)
            .await
            .expect("publish trigger");
    }
    for target in ["web", "api"] {
        let deferred = audit
            .find_or_wait(&format!("{target} deferred"), |r| {
                r.target == target && r.outcome == "deferred"
            })
            .await;
        assert_eq!(deferred.kind, AuditKind::Decision);
        assert!(
            deferred.reason.contains("version v2"),
            "{}",
            deferred.reason
        );
    }
    // Both triggers come back, again and again (DEFER_DELAY apart), and are
    // still not decided: more deliveries than the two first ones.
    within("the deferred triggers to come back", WAIT * 2, async {
        while delivered(&client).await < 4 {
            // A broker-side counter; there is no event for it.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    for (key, bytes, revision) in [("web", &web, web_revision), ("api", &api, api_revision)] {
        let entry = states.entry(key).await.expect("read").expect("entry");
        assert_eq!(entry.revision, revision, "{key} not written back");
        assert_eq!(&entry.value[..], &bytes[..], "{key} unchanged");
    }
    assert!(
        !audit.seen.iter().any(|r| r.outcome == "scale"),
        "nothing decided on a state this version does not understand"
    );
    let dead: Vec<DeadLetter> = stream_messages(&client, DEAD_STREAM).await;
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");

    // An arbiter that understands web's state takes over (here: the state
    // becomes one of this version): the same trigger, still waiting, is
    // decided.
    states
        .put("web", encode(&newer_state(1)).into())
        .await
        .expect("put");
    let decision = audit
        .wait_for("web decided", |r| r.target == "web" && r.outcome == "scale")
        .await;
    assert_eq!(decision.trigger_id.as_deref(), Some("grow-web-1"));
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capacity_record_of_a_newer_version_is_not_written_back_by_the_actuator() {
    let (_nats, client, pipeline) = start().await;
    let js = async_nats::jetstream::new(client.clone());
    let capacities = js.get_key_value(CAPACITY_BUCKET).await.expect("bucket");
    let record = |v: u16| {
        encode(
            &rmpv::ext::to_value(json!({
                "v": v, "target": "api", "desired": 2, "observed_ms": 1, "backend": "sim",
                "x_zone": "eu-1"
            }))
            .expect("a value"),
        )
    };
    let newer = record(2);
    let revision = capacities
        .put("api", newer.clone().into())
        .await
        .expect("put");
    let command = Command {
        v: Version::CURRENT,
        decision_id: "d-api-1".into(),
        seq: 1,
        ts: nova_runtime::now_ms(),
        target: "api".into(),
        from: 2,
        desired: 3,
        tier: None,
        promote: None,
        rule: Some("q.scale_up".into()),
        reason: "test".into(),
        extra: Extra::new(),
    };
    publish::publish_once(
        &js,
        subjects::commands("api"),
        &command.decision_id,
        &command,
    )
    .await
    .expect("publish command");
    within("the command to come back", WAIT * 2, async {
        while delivered_by(&client, COMMANDS_STREAM, ACTUATOR_CONSUMER).await < 2 {
            // A broker-side counter; there is no event for it.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    let entry = capacities.entry("api").await.expect("read").expect("entry");
    assert_eq!(entry.revision, revision, "not written back");
    assert_eq!(&entry.value[..], &newer[..], "unchanged");
    let results: Vec<ActionResult> = stream_messages(&client, RESULTS_STREAM).await;
    assert!(results.is_empty(), "not applied: {results:?}");
    let dead: Vec<DeadLetter> = stream_messages(&client, DEAD_STREAM).await;
    assert!(dead.is_empty(), "nothing dead-lettered: {dead:?}");
    // A record of this version: the same command, still waiting, is applied
    // and the field this version does not know is kept.
    capacities.put("api", record(1).into()).await.expect("put");
    let results: Vec<ActionResult> = stream_first(&client, RESULTS_STREAM, 1, WAIT).await;
    assert_eq!(results[0].decision_id, "d-api-1");
    let stored = capacities
        .get("api")
        .await
        .expect("read")
        .expect("a record");
    let stored = decode(&stored);
    assert_eq!(get(&stored, "applied_seq").as_u64(), Some(1));
    assert_eq!(
        get(&stored, "x_zone").as_str(),
        Some("eu-1"),
        "kept: {stored}"
    );
    pipeline.stop().await;
}
