//! A rolling upgrade, the pure part: what a newer version writes is read by
//! this one without loss, and what this one cannot fully read it neither
//! acts on nor writes back (README: "Rolling upgrades: expand, then contract").

use nova_shared::arbitrate::{self, ArbiterSettings, TargetState};
use nova_shared::codec::{self, Encoding};
use nova_shared::policy::from_yaml;
use nova_shared::wire::{
    ActionResult, AuditKind, AuditRecord, CapacityRecord, Command, DeadLetter, Direction, Outcome,
    ResultStatus, ScaleAction, Stage, Trigger, TriggerSource, Version,
};
use serde_json::json;

const POLICY: &str = r#"
targets:
  w: {rules: [q], min: 2, max: 20, backend: {sim: {initial: 5}}}
horizontal_scaling_rules:
  q:
    scale_up: {condition: "queue_depth > 1000", action: "add 2 workers", cooldown: 60}
    scale_down: {condition: "queue_depth < 100", action: "remove 1 worker", cooldown: 60}
"#;

/// MessagePack of a JSON document, as a writer with named fields sends it.
fn pack(doc: &serde_json::Value) -> Vec<u8> {
    rmp_serde::to_vec_named(doc).expect("encode")
}

/// The MessagePack value of some bytes, to compare two encodings by content.
fn value(bytes: &[u8]) -> rmpv::Value {
    rmpv::decode::read_value(&mut &bytes[..]).expect("a MessagePack value")
}

/// Whether `written` holds everything of `read`, as it was: every field of
/// every map (the writer may add the defaults it writes out, nothing else).
fn keeps(written: &rmpv::Value, read: &rmpv::Value) -> Result<(), String> {
    match (written, read) {
        (rmpv::Value::Map(w), rmpv::Value::Map(r)) => r.iter().try_for_each(|(key, value)| {
            let Some((_, kept)) = w.iter().find(|(k, _)| k == key) else {
                return Err(format!("{key} dropped"));
            };
            keeps(kept, value).map_err(|e| format!("{key}: {e}"))
        }),
        (rmpv::Value::Array(w), rmpv::Value::Array(r)) if w.len() == r.len() => w
            .iter()
            .zip(r)
            .enumerate()
            .try_for_each(|(i, (w, r))| keeps(w, r).map_err(|e| format!("[{i}]: {e}"))),
        (w, r) if w == r => Ok(()),
        (w, r) => Err(format!("{r} became {w}")),
    }
}

/// A target state as an arbiter of version 1 + n would write it: every
/// record carries a field this version does not know, a verdict has an
/// outcome it does not know, and one unknown field holds binary data.
fn newer_state(v: u16, recent_direction: &str) -> serde_json::Value {
    json!({
        "v": v,
        "seq": 3,
        "desired": 7,
        "up_cooldown_until": 1_000,
        "down_cooldown_until": 0,
        "recent_triggers": ["t-1", "t-2"],
        "recent_actions": [[900, recent_direction]],
        "paused_up": false,
        "paused_down": false,
        "x_budget": {"monthly_usd": 1200.5, "spent": [1, 2, 3]},
        "recent_verdicts": [{
            "decision": {
                "v": v,
                "id": "d-1", "trigger_id": "t-2", "ts": 900, "target": "w",
                "outcome": "budget_exceeded", "direction": "up", "reason": "over budget",
                "x_cost_usd": 12.25
            },
            "command": {
                "v": v,
                "decision_id": "d-0", "seq": 3, "ts": 800, "target": "w", "from": 5,
                "desired": 7, "reason": "r", "x_priority": "high"
            },
            "x_note": "kept"
        }]
    })
}

#[test]
fn a_record_without_a_version_is_version_1() {
    let old = pack(&json!({"seq": 1, "desired": 3}));
    let state: TargetState = codec::decode(&old, Encoding::MsgPack).unwrap();
    assert_eq!(state.v, Version(1));
    let old = pack(&json!({"target": "w", "desired": 3, "observed_ms": 1, "backend": "sim"}));
    let record: CapacityRecord = codec::decode(&old, Encoding::MsgPack).unwrap();
    assert_eq!(record.v, Version(1));
    let old = pack(&json!({"id": "t", "ts": 1, "target": "w", "source": "rule", "firings": []}));
    let trigger: Trigger = codec::decode(&old, Encoding::MsgPack).unwrap();
    assert_eq!(trigger.v, Version(1));
    // And this version writes its own.
    let written = value(&codec::encode(&TargetState::default()).unwrap());
    assert_eq!(written["v"], rmpv::Value::from(Version::CURRENT.0));
}

#[test]
fn every_open_enum_keeps_a_value_it_does_not_know() {
    let cases: Vec<(String, String)> = vec![
        (
            serde_json::to_string(&serde_json::from_str::<Direction>(r#""sideways""#).unwrap())
                .unwrap(),
            r#""sideways""#.into(),
        ),
        (
            serde_json::to_string(&serde_json::from_str::<Outcome>(r#""budget""#).unwrap())
                .unwrap(),
            r#""budget""#.into(),
        ),
        (
            serde_json::to_string(&serde_json::from_str::<TriggerSource>(r#""forecast""#).unwrap())
                .unwrap(),
            r#""forecast""#.into(),
        ),
        (
            serde_json::to_string(&serde_json::from_str::<ResultStatus>(r#""partial""#).unwrap())
                .unwrap(),
            r#""partial""#.into(),
        ),
        (
            serde_json::to_string(&serde_json::from_str::<Stage>(r#""planner""#).unwrap()).unwrap(),
            r#""planner""#.into(),
        ),
        (
            serde_json::to_string(&serde_json::from_str::<AuditKind>(r#""plan""#).unwrap())
                .unwrap(),
            r#""plan""#.into(),
        ),
    ];
    for (got, want) in cases {
        assert_eq!(got, want);
    }
    assert_eq!(
        serde_json::from_str::<Stage>(r#""planner""#).unwrap(),
        Stage::Unknown("planner".into())
    );
    assert_eq!(Stage::Unknown("planner".into()).label(), "unknown");
    assert_eq!(Outcome::Scale.label(), "scale");
    // Known values still decode as themselves, in both encodings.
    assert_eq!(
        codec::decode::<Outcome>(&pack(&json!("at_max")), Encoding::MsgPack).unwrap(),
        Outcome::AtMax
    );
    assert!(
        serde_json::from_str::<Outcome>("3").is_err(),
        "a name is a string"
    );
}

#[test]
fn actions_of_a_newer_version_decode_as_unknown_and_bad_ones_are_still_errors() {
    let read =
        |doc: serde_json::Value| codec::decode::<ScaleAction>(&pack(&doc), Encoding::MsgPack);
    assert_eq!(read(json!({"add": 2})).unwrap(), ScaleAction::Add(2));
    assert_eq!(read(json!({"remove": 1})).unwrap(), ScaleAction::Remove(1));
    assert_eq!(read(json!({"set": 10})).unwrap(), ScaleAction::Set(10));
    assert_eq!(read(json!("next_tier")).unwrap(), ScaleAction::NextTier);
    // An alert rule's emergency up; an older reader takes it as unknown.
    for (doc, by, to) in [
        (json!({"emergency_up": {}}), None, None),
        (json!({"emergency_up": {"by": 3}}), Some(3), None),
        (json!({"emergency_up": {"to": 12}}), None, Some(12)),
    ] {
        let action = ScaleAction::EmergencyUp { by, to };
        assert_eq!(read(doc.clone()).unwrap(), action, "{doc}");
        assert_eq!(codec::encode(&action).unwrap(), pack(&doc), "{doc}");
    }
    assert_eq!(
        read(json!({"scale_by_percent": 50})).unwrap(),
        ScaleAction::Unknown("scale_by_percent".into())
    );
    assert_eq!(
        read(json!("previous_tier")).unwrap(),
        ScaleAction::Unknown("previous_tier".into())
    );
    for bad in [
        json!({"add": 2, "set": 3}),
        json!({"add": -1}),
        json!({"add": "two"}),
        json!("add"),
        json!({}),
        json!(3),
        json!({"emergency_up": {"by": 2, "x": 1}}),
        json!({"emergency_up": 2}),
    ] {
        assert!(read(bad.clone()).is_err(), "{bad}");
    }
    // The encoding of the known ones is what serde derives.
    assert_eq!(
        codec::encode(&ScaleAction::Add(2)).unwrap(),
        pack(&json!({"add": 2}))
    );
    assert_eq!(
        codec::encode(&ScaleAction::NextTier).unwrap(),
        pack(&json!("next_tier"))
    );
}

#[test]
fn a_newer_state_read_and_written_back_loses_nothing() {
    let mut newer = newer_state(1, "up");
    // Binary data in an unknown field survives as binary.
    let bytes = {
        let mut doc = value(&pack(&newer));
        if let rmpv::Value::Map(entries) = &mut doc {
            entries.push(("x_blob".into(), rmpv::Value::Binary(vec![0, 255, 7])));
        }
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, &doc).unwrap();
        out
    };
    let state: TargetState = codec::decode(&bytes, Encoding::MsgPack).unwrap();
    assert_eq!(state.seq, 3);
    assert!(state.extra.contains_key("x_budget") && state.extra.contains_key("x_blob"));
    let verdict = state.last().unwrap();
    assert_eq!(
        verdict.decision.outcome,
        Outcome::Unknown("budget_exceeded".into())
    );
    assert!(verdict.decision.extra.contains_key("x_cost_usd"));
    assert!(verdict.extra.contains_key("x_note"));
    assert!(
        verdict
            .command
            .as_ref()
            .unwrap()
            .extra
            .contains_key("x_priority")
    );
    let written = codec::encode(&state).unwrap();
    keeps(&value(&written), &value(&bytes)).expect("written back, nothing read is lost");
    // The same in JSON, for a reader that sends JSON.
    newer["recent_actions"] = json!([[900, "down"]]);
    let json_bytes = serde_json::to_vec(&newer).unwrap();
    let state: TargetState = codec::decode(&json_bytes, Encoding::Json).unwrap();
    let back = serde_json::to_vec(&state).unwrap();
    let back: serde_json::Value = serde_json::from_slice(&back).unwrap();
    keeps(&value(&pack(&back)), &value(&pack(&newer))).expect("JSON keeps it all too");
}

#[test]
fn the_arbiter_decides_on_a_newer_state_it_can_read_and_keeps_what_it_does_not_know() {
    let policy = from_yaml(POLICY, "p.yaml").unwrap();
    let target = &policy.targets["w"];
    let bytes = pack(&newer_state(1, "up"));
    let state: TargetState = codec::decode(&bytes, Encoding::MsgPack).unwrap();
    let trigger: Trigger = codec::decode(
        &pack(&json!({
            "id": "t-3", "ts": 120_000, "target": "w", "source": "forecast",
            "firings": [{"rule": "q.scale_up", "direction": "up", "action": {"add": 2}}],
            "x_confidence": 0.9
        })),
        Encoding::MsgPack,
    )
    .unwrap();
    assert_eq!(trigger.source, TriggerSource::Unknown("forecast".into()));
    // An unknown source, an unknown outcome in the history and unknown
    // fields change no decision: this arbiter decides.
    assert_eq!(
        arbitrate::beyond_this_version(Some(&state), None, &trigger),
        None
    );
    let settings = ArbiterSettings::for_target(target, 30);
    let verdict = arbitrate::decide(target, settings, &state, None, &trigger);
    assert_eq!(verdict.decision.outcome, Outcome::Scale);
    assert_eq!(verdict.command.as_ref().unwrap().desired, 9);
    let next = verdict.state.expect("a new state");
    assert_eq!(next.extra, state.extra, "unknown fields written back");
    assert_eq!(next.recent_verdicts[0], state.recent_verdicts[0]);
    let written = value(&codec::encode(&next).unwrap());
    assert_eq!(written["x_budget"]["monthly_usd"], rmpv::Value::F64(1200.5));
    assert_eq!(
        written["recent_verdicts"][0]["decision"]["outcome"].as_str(),
        Some("budget_exceeded")
    );
}

#[test]
fn what_this_version_cannot_fully_read_is_left_to_a_newer_one() {
    let trigger = |doc: serde_json::Value| -> Trigger {
        codec::decode(&pack(&doc), Encoding::MsgPack).unwrap()
    };
    let plain = trigger(json!({
        "id": "t", "ts": 1, "target": "w", "source": "rule",
        "firings": [{"rule": "q.scale_up", "direction": "up", "action": {"add": 2}}]
    }));
    let state = |v: u16, direction: &str| -> TargetState {
        codec::decode(&pack(&newer_state(v, direction)), Encoding::MsgPack).unwrap()
    };
    let why = |state: Option<&TargetState>, capacity: Option<&CapacityRecord>, t: &Trigger| {
        arbitrate::beyond_this_version(state, capacity, t).unwrap_or_default()
    };
    assert!(why(Some(&state(2, "up")), None, &plain).contains("version v2"));
    assert!(why(Some(&state(1, "sideways")), None, &plain).contains("\"sideways\""));
    let capacity = CapacityRecord {
        v: Version(9),
        ..Default::default()
    };
    assert!(why(None, Some(&capacity), &plain).contains("capacity record"));
    let newer_trigger = Trigger {
        v: Version(2),
        ..plain.clone()
    };
    assert!(why(None, None, &newer_trigger).contains("the trigger is of version v2"));
    let odd_direction = trigger(json!({
        "id": "t", "ts": 1, "target": "w", "source": "rule",
        "firings": [{"rule": "q.scale_up", "direction": "sideways", "action": {"add": 2}}]
    }));
    assert!(why(None, None, &odd_direction).contains("direction"));
    let odd_action = trigger(json!({
        "id": "t", "ts": 1, "target": "w", "source": "rule",
        "firings": [{"rule": "q.scale_up", "direction": "up", "action": {"scale_by": 3}}]
    }));
    assert!(why(None, None, &odd_action).contains("\"scale_by\""));
    assert_eq!(arbitrate::beyond_this_version(None, None, &plain), None);
}

#[test]
fn other_stored_records_keep_what_they_do_not_know() {
    let record = pack(&json!({
        "v": 1, "target": "w", "desired": 3, "observed_ms": 1, "backend": "sim",
        "lease": {"decision_id": "d", "owner": "a", "expires_ms": 5, "x_host": "h1"},
        "error": {"at_ms": 1, "message": "m", "x_code": 7},
        "x_zone": "eu-1"
    }));
    let read: CapacityRecord = codec::decode(&record, Encoding::MsgPack).unwrap();
    keeps(&value(&codec::encode(&read).unwrap()), &value(&record)).unwrap();
    let audit = pack(&json!({
        "id": "a", "ts": 1, "stage": "planner", "target": "w", "kind": "plan",
        "outcome": "planned", "reason": "r", "x_plan": {"steps": 3}
    }));
    let read: AuditRecord = codec::decode(&audit, Encoding::MsgPack).unwrap();
    assert_eq!(read.stage, Stage::Unknown("planner".into()));
    keeps(&value(&codec::encode(&read).unwrap()), &value(&audit)).unwrap();
    // Messages only read decode whatever a newer writer adds.
    let result = pack(&json!({
        "v": 2, "decision_id": "d", "seq": 1, "target": "w", "ts": 1, "status": "partial",
        "backend": "sim", "desired": 2, "response": "ok", "x_new": true
    }));
    let read: ActionResult = codec::decode(&result, Encoding::MsgPack).unwrap();
    assert_eq!(read.status, ResultStatus::Unknown("partial".into()));
    let dead = pack(&json!({
        "v": 2, "stage": "planner", "subject": "s", "reason": "r", "ts": 1, "payload": [1]
    }));
    let read: DeadLetter = codec::decode(&dead, Encoding::MsgPack).unwrap();
    assert_eq!(read.stage, Stage::Unknown("planner".into()));
    let command = pack(&json!({
        "v": 2, "decision_id": "d", "seq": 1, "ts": 1, "target": "w", "from": 1,
        "desired": 2, "reason": "r", "x_drain": true
    }));
    let read: Command = codec::decode(&command, Encoding::MsgPack).unwrap();
    assert_eq!(read.v, Version(2));
    assert!(read.extra.contains_key("x_drain"));
}
