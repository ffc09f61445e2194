//! Golden fixtures: messages and state records as each version wrote them,
//! under `tests/golden/<version>/` (listed in `tests/golden/README.md`).
//! Every later version must decode every one of them: this test runs in CI.
//!
//! The committed files are the contract. `write_golden_fixtures` (ignored)
//! writes the current version's files that are missing and never touches a
//! file that exists: an old version's files are never regenerated.
//!
//! ```sh
//! cargo test -p nova-shared --test golden -- --ignored write_golden_fixtures
//! ```

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use nova_shared::arbitrate::{LastVerdict, TargetState};
use nova_shared::codec::{self, Encoding};
use nova_shared::tracking::ScaleEvent;
use nova_shared::wire::{
    ActionResult, AuditKind, AuditRecord, BackendFault, CapacityRecord, Command, DeadLetter,
    Decision, Direction, Extra, Lease, Outcome, ResultStatus, RuleFiring, ScaleAction, Stage,
    Trigger, TriggerSource, Version,
};

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden")
}

fn read(dir: &str, name: &str) -> Vec<u8> {
    let path = golden().join(dir).join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn decode<T: serde::de::DeserializeOwned>(dir: &str, name: &str) -> T {
    codec::decode_map(&read(dir, name), Encoding::MsgPack)
        .unwrap_or_else(|e| panic!("{dir}/{name} does not decode: {e}"))
}

/// Whether `written` holds every field of `read` as it was.
fn keeps(written: &rmpv::Value, read: &rmpv::Value) -> bool {
    match (written, read) {
        (rmpv::Value::Map(w), rmpv::Value::Map(r)) => r.iter().all(|(key, value)| {
            w.iter()
                .find(|(k, _)| k == key)
                .is_some_and(|(_, kept)| keeps(kept, value))
        }),
        (rmpv::Value::Array(w), rmpv::Value::Array(r)) => {
            w.len() == r.len() && w.iter().zip(r).all(|(w, r)| keeps(w, r))
        }
        (w, r) => w == r,
    }
}

fn value(bytes: &[u8]) -> rmpv::Value {
    rmpv::decode::read_value(&mut &bytes[..]).expect("MessagePack")
}

/// A record read and written back by this version loses nothing of it.
fn round_trips<T: serde::de::DeserializeOwned + serde::Serialize>(dir: &str, name: &str) {
    let bytes = read(dir, name);
    let record: T = decode(dir, name);
    let written = codec::encode(&record).unwrap();
    assert!(
        keeps(&value(&written), &value(&bytes)),
        "{dir}/{name}: written back, a field was lost or changed"
    );
}

/// Every fixture file is listed in the README, and every listed one exists.
#[test]
fn every_fixture_is_listed_and_there() {
    let readme = std::fs::read_to_string(golden().join("README.md")).expect("README");
    let mut files = Vec::new();
    for dir in std::fs::read_dir(golden()).unwrap() {
        let dir = dir.unwrap().path();
        if dir.is_dir() {
            for file in std::fs::read_dir(&dir).unwrap() {
                let file = file.unwrap().path();
                let name = format!(
                    "{}/{}",
                    dir.file_name().unwrap().to_string_lossy(),
                    file.file_name().unwrap().to_string_lossy()
                );
                assert!(
                    readme.contains(&format!("`{name}`")),
                    "{name} not in README"
                );
                files.push(name);
            }
        }
    }
    for listed in readme.split('`').skip(1).step_by(2) {
        if listed.ends_with(".msgpack") {
            assert!(
                files.iter().any(|f| f == listed),
                "{listed} listed, not there"
            );
        }
    }
    assert!(files.len() >= 12, "{files:?}");
}

#[test]
fn version_1_fixtures_decode() {
    let d = "v1";
    let t: Trigger = decode(d, "trigger.msgpack");
    assert_eq!(
        (t.v, t.id.as_str(), t.target.as_str()),
        (Version(1), "t-1", "web")
    );
    assert_eq!(t.source, TriggerSource::Rule);
    assert_eq!(t.firings[0].direction, Direction::Up);
    assert_eq!(t.firings[0].action, ScaleAction::Add(2));
    assert_eq!(t.firings[1].action, ScaleAction::Set(10));
    assert_eq!(t.firings[0].observed, Some(0.84));

    let t: Trigger = decode(d, "trigger-vertical.msgpack");
    assert_eq!(t.firings[0].action, ScaleAction::NextTier);

    let t: Trigger = decode(d, "trigger-fallback.msgpack");
    assert_eq!(t.source, TriggerSource::Fallback);
    assert_eq!(t.firings[0].direction, Direction::None);

    let c: Command = decode(d, "command.msgpack");
    assert_eq!((c.v, c.seq, c.from, c.desired), (Version(1), 4, 4, 6));
    assert_eq!(c.decision_id, "d-1");
    let c: Command = decode(d, "command-vertical.msgpack");
    assert_eq!(c.tier.as_deref(), Some("c5.large"));

    let r: ActionResult = decode(d, "action-result.msgpack");
    assert_eq!(
        (r.status, r.from, r.desired),
        (ResultStatus::Succeeded, Some(4), 6)
    );
    let r: ActionResult = decode(d, "action-result-superseded.msgpack");
    assert_eq!(r.status, ResultStatus::Superseded);

    let a: AuditRecord = decode(d, "audit-record.msgpack");
    assert_eq!((a.stage, a.kind), (Stage::Arbiter, AuditKind::Decision));
    assert_eq!(
        (a.outcome.as_str(), a.from, a.to),
        ("scale", Some(4), Some(6))
    );
    assert_eq!(a.decision_id.as_deref(), Some("d-1"));

    let x: DeadLetter = decode(d, "dead-letter.msgpack");
    assert_eq!(
        (x.stage, x.payload.as_slice()),
        (Stage::Ingest, &[0xc1, 0x00, 0xff][..])
    );
    assert_eq!((x.payload_size, x.truncated), (3, false));

    let s: TargetState = decode(d, "target-state.msgpack");
    assert_eq!((s.v, s.seq, s.desired), (Version(1), 4, Some(6)));
    assert_eq!(s.up_cooldown_until, 1_764_370_300_000);
    assert!(s.paused_down && !s.paused_up);
    assert_eq!(s.recent_actions[1].1, Direction::Up);
    let last = s.last().expect("a verdict");
    assert_eq!(last.decision.outcome, Outcome::Scale);
    assert_eq!(last.command.as_ref().map(|c| c.desired), Some(6));
    assert_eq!(s.scale_events[0].change, 2);
    round_trips::<TargetState>(d, "target-state.msgpack");

    let c: CapacityRecord = decode(d, "capacity-record.msgpack");
    assert_eq!(
        (c.v, c.desired, c.running, c.applied_seq),
        (Version(1), 6, Some(5), 3)
    );
    assert_eq!(
        c.lease.as_ref().map(|l| l.expires_ms),
        Some(1_764_370_042_000)
    );
    assert_eq!(c.claimed_seq, 4);
    assert!(c.error.as_ref().unwrap().message.contains("throttled"));
    round_trips::<CapacityRecord>(d, "capacity-record.msgpack");
}

/// Records as they were written before records had a version (the same
/// shape without `v`): they read as version 1.
#[test]
fn unversioned_fixtures_decode_as_version_1() {
    let d = "unversioned";
    let s: TargetState = decode(d, "target-state.msgpack");
    assert_eq!((s.v, s.seq), (Version(1), 4));
    assert_eq!(s.last().unwrap().decision.v, Version(1));
    round_trips::<TargetState>(d, "target-state.msgpack");
    let c: CapacityRecord = decode(d, "capacity-record.msgpack");
    assert_eq!((c.v, c.desired), (Version(1), 6));
    let t: Trigger = decode(d, "trigger.msgpack");
    assert_eq!((t.v, t.firings.len()), (Version(1), 2));
    let a: AuditRecord = decode(d, "audit-record.msgpack");
    assert_eq!((a.v, a.outcome.as_str()), (Version(1), "scale"));
}

// ------------------------------------------------------------- generator

const TS: i64 = 1_764_370_000_000;

fn firing(rule: &str, direction: Direction, action: ScaleAction) -> RuleFiring {
    RuleFiring {
        rule: rule.into(),
        direction,
        action,
        observed: Some(0.84),
        threshold: Some(0.7),
        condition: "avg_cpu > 70% for 2 minutes".into(),
        held_secs: 120,
        reason: "avg_cpu 84% > 70% for 2m".into(),
    }
}

fn trigger(id: &str, source: TriggerSource, firings: Vec<RuleFiring>) -> Trigger {
    Trigger {
        v: Version::CURRENT,
        id: id.into(),
        ts: TS,
        target: "web".into(),
        source,
        firings,
        policy_revision: None,
        alert: None,
    }
}

fn command(tier: Option<&str>) -> Command {
    Command {
        v: Version::CURRENT,
        decision_id: "d-1".into(),
        seq: 4,
        ts: TS,
        target: "web".into(),
        from: 4,
        desired: if tier.is_some() { 4 } else { 6 },
        tier: tier.map(str::to_string),
        promote: None,
        rule: Some("cpu_based.scale_up".into()),
        reason: "scaling web from 4 to 6 (add 2), cooldown 5m".into(),
        extra: Extra::new(),
    }
}

fn result(status: ResultStatus) -> ActionResult {
    ActionResult {
        v: Version::CURRENT,
        decision_id: "d-1".into(),
        seq: 4,
        target: "web".into(),
        ts: TS + 1_500,
        status,
        backend: "sim".into(),
        from: Some(4),
        desired: 6,
        tier: None,
        response: "desired 4 -> 6".into(),
    }
}

fn audit() -> AuditRecord {
    let mut a = AuditRecord::new(
        "a-1".into(),
        TS,
        Stage::Arbiter,
        "web",
        AuditKind::Decision,
        "scale",
        "avg_cpu 84% > 70% for 2m; scaling web from 4 to 6 (add 2), cooldown 5m".into(),
    );
    a.rule = Some("cpu_based.scale_up".into());
    a.observed = Some(0.84);
    a.threshold = Some(0.7);
    a.from = Some(4);
    a.to = Some(6);
    a.trigger_id = Some("t-1".into());
    a.decision_id = Some("d-1".into());
    a
}

fn state() -> TargetState {
    TargetState {
        seq: 4,
        desired: Some(6),
        up_cooldown_until: TS + 300_000,
        down_cooldown_until: TS - 1_000,
        last_up_signal: Some(TS),
        last_up_rule: Some("cpu_based.scale_up".into()),
        recent_triggers: VecDeque::from(["t-0".to_string(), "t-1".to_string()]),
        warming_until: TS + 60_000,
        paused_up: false,
        paused_down: true,
        recent_actions: VecDeque::from([(TS - 600_000, Direction::Down), (TS, Direction::Up)]),
        recent_verdicts: VecDeque::from([LastVerdict {
            decision: Decision {
                v: Version::CURRENT,
                id: "d-1".into(),
                trigger_id: "t-1".into(),
                ts: TS,
                target: "web".into(),
                outcome: Outcome::Scale,
                direction: Direction::Up,
                rule: Some("cpu_based.scale_up".into()),
                from: Some(4),
                to: Some(6),
                from_tier: None,
                to_tier: None,
                reason: "scaling web from 4 to 6 (add 2), cooldown 5m".into(),
                extra: Extra::new(),
                policy_revision: None,
            },
            command: Some(command(None)),
            flapping: None,
            observed: None,
            threshold: None,
            extra: Extra::new(),
        }]),
        tier: None,
        resize_cooldown_until: 0,
        scale_events: VecDeque::from([ScaleEvent { ts: TS, change: 2 }]),
        ..TargetState::default()
    }
}

fn capacity() -> CapacityRecord {
    CapacityRecord {
        target: "web".into(),
        desired: 6,
        running: Some(5),
        applied_seq: 3,
        tier: Some("t3.medium".into()),
        observed_ms: TS + 2_000,
        backend: "sim".into(),
        claimed_seq: 4,
        lease: Some(Lease {
            decision_id: "d-1".into(),
            owner: "actuator-1".into(),
            expires_ms: TS + 42_000,
            extra: Extra::new(),
        }),
        attempts: 1,
        error: Some(BackendFault {
            at_ms: TS + 1_000,
            message: "ECS throttled the call; retrying".into(),
            extra: Extra::new(),
        }),
        ..CapacityRecord::default()
    }
}

/// The current version's fixtures, by file name.
fn current() -> Vec<(&'static str, Vec<u8>)> {
    let e = |bytes: Result<Vec<u8>, codec::CodecError>| bytes.expect("encode");
    let up = firing("cpu_based.scale_up", Direction::Up, ScaleAction::Add(2));
    let set = firing("cpu_target", Direction::Up, ScaleAction::Set(10));
    let tier = firing(
        "instance_resize.cpu_intensive",
        Direction::Up,
        ScaleAction::NextTier,
    );
    let fallback = firing("fallback", Direction::None, ScaleAction::Set(12));
    vec![
        (
            "trigger.msgpack",
            e(codec::encode(&trigger(
                "t-1",
                TriggerSource::Rule,
                vec![up, set],
            ))),
        ),
        (
            "trigger-vertical.msgpack",
            e(codec::encode(&trigger(
                "t-2",
                TriggerSource::Rule,
                vec![tier],
            ))),
        ),
        (
            "trigger-fallback.msgpack",
            e(codec::encode(&trigger(
                "t-3",
                TriggerSource::Fallback,
                vec![fallback],
            ))),
        ),
        ("command.msgpack", e(codec::encode(&command(None)))),
        (
            "command-vertical.msgpack",
            e(codec::encode(&command(Some("c5.large")))),
        ),
        (
            "action-result.msgpack",
            e(codec::encode(&result(ResultStatus::Succeeded))),
        ),
        (
            "action-result-superseded.msgpack",
            e(codec::encode(&result(ResultStatus::Superseded))),
        ),
        ("audit-record.msgpack", e(codec::encode(&audit()))),
        (
            "dead-letter.msgpack",
            e(codec::encode(&DeadLetter {
                v: Version::CURRENT,
                stage: Stage::Ingest,
                subject: "nova.metrics.web.cpu".into(),
                reason: "invalid MessagePack: reserved byte 0xc1".into(),
                ts: TS,
                payload: vec![0xc1, 0x00, 0xff],
                payload_size: 3,
                payload_fnv64: format!(
                    "{:016x}",
                    nova_shared::ids::fnv64(&[&[0xc1, 0x00, 0xff][..]])
                ),
                truncated: false,
            })),
        ),
        ("target-state.msgpack", e(codec::encode(&state()))),
        ("capacity-record.msgpack", e(codec::encode(&capacity()))),
    ]
}

/// `bytes` (a map) with every `v` key removed, at any depth: a record as it
/// was written before records had a version.
fn unversioned(bytes: &[u8]) -> Vec<u8> {
    fn strip(value: rmpv::Value) -> rmpv::Value {
        match value {
            rmpv::Value::Map(entries) => rmpv::Value::Map(
                entries
                    .into_iter()
                    .filter(|(k, _)| k.as_str() != Some("v"))
                    .map(|(k, v)| (k, strip(v)))
                    .collect(),
            ),
            rmpv::Value::Array(items) => rmpv::Value::Array(items.into_iter().map(strip).collect()),
            other => other,
        }
    }
    let mut out = Vec::new();
    rmpv::encode::write_value(&mut out, &strip(value(bytes))).unwrap();
    out
}

#[test]
#[ignore = "writes the current version's missing fixtures; run by hand"]
fn write_golden_fixtures() {
    let current = current();
    let dir = format!("v{}", Version::CURRENT.0);
    let mut files: Vec<(String, &str, Vec<u8>)> = current
        .iter()
        .map(|(name, bytes)| (dir.clone(), *name, bytes.clone()))
        .collect();
    if Version::CURRENT == Version(1) {
        for name in [
            "target-state.msgpack",
            "capacity-record.msgpack",
            "trigger.msgpack",
            "audit-record.msgpack",
        ] {
            let (_, bytes) = current.iter().find(|(n, _)| *n == name).unwrap();
            files.push(("unversioned".into(), name, unversioned(bytes)));
        }
    }
    for (dir, name, bytes) in files {
        let path = golden().join(&dir).join(name);
        if path.exists() {
            println!("kept {dir}/{name} (committed files are never regenerated)");
            continue;
        }
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
        println!("wrote {dir}/{name}");
    }
}
