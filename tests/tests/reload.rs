//! Policy changes without a restart, end to end: the pipeline runs with a
//! policy fed by the file watcher (`nova_runtime::reload::watch_file`, as
//! every service binary runs it); the file is rewritten under it. And a
//! service binary reloads on SIGHUP, refusing a bad file line by line.
//!
//! Each wait is on an observable effect, inside a deadline: the watcher's
//! new revision, audit records naming a revision, the refusal counter.

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use nova_e2e::process::ServiceProcess;
use nova_e2e::{
    AuditReader, NatsServer, Pipeline, WAIT, publish, stream_messages, wait_ready, within,
};
use nova_runtime::nats::DEAD_STREAM;
use nova_runtime::reload;
use nova_runtime::shutdown;
use nova_runtime::telemetry::names;
use nova_shared::policy::{self, Revised};
use nova_shared::subjects;
use nova_shared::wire::{
    AuditKind, AuditRecord, DeadLetter, Direction, RuleFiring, ScaleAction, Stage, Trigger,
    TriggerSource, Version,
};
use serde_json::json;

const V1: &str = r#"
targets:
  web: { rules: [q], max: 50, backend: { sim: { initial: 2 } } }
horizontal_scaling_rules:
  q:
    scale_up: { condition: "queue_depth > 1000", action: "add 1 instance", cooldown: 0 }
"#;

/// V1 with a lower threshold and a new rule.
fn v2() -> String {
    V1.replace("queue_depth > 1000", "queue_depth > 100")
        .replace("rules: [q]", "rules: [q, hot]")
        + "  hot:\n    scale_up: { condition: \"avg_cpu > 90%\", action: \"add 2 instances\", cooldown: 0 }\n"
}

/// Replaces the file whole (a new file renamed over it), as an editor or a
/// deployment does: the watcher never reads half of it.
fn write_policy(path: &std::path::Path, text: &str) {
    let next = path.with_extension("yaml.new");
    std::fs::write(&next, text).expect("write policy");
    std::fs::rename(&next, path).expect("rename policy");
}

fn sample(value: f64, ts: i64) -> Vec<u8> {
    rmp_serde::to_vec_named(&json!({"value": value, "ts": ts})).expect("encode")
}

fn decision_of(rule: &'static str) -> impl Fn(&AuditRecord) -> bool {
    move |r| r.kind == AuditKind::Decision && r.rule.as_deref() == Some(rule)
}

/// The trigger record of the decision's trigger.
fn trigger_record<'a>(audit: &'a AuditReader, decision: &AuditRecord) -> &'a AuditRecord {
    audit
        .seen
        .iter()
        .find(|r| r.kind == AuditKind::Trigger && r.trigger_id == decision.trigger_id)
        .expect("the trigger's record comes before its decision")
}

fn refusals(snapshotter: &Snapshotter) -> u64 {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| {
            let key = key.key();
            key.name() == names::POLICY_RELOADS
                && key
                    .labels()
                    .any(|l| l.key() == "outcome" && l.value() == "refused")
        })
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => n,
            _ => 0,
        })
        .sum()
}

/// A rule trigger of `web` naming `rule`, made with `revision`.
fn foreign_trigger(id: &str, rule: &str, revision: &str) -> Trigger {
    Trigger {
        v: Version::CURRENT,
        id: id.into(),
        ts: nova_runtime::now_ms(),
        target: "web".into(),
        source: TriggerSource::Rule,
        firings: vec![RuleFiring {
            rule: rule.into(),
            direction: Direction::Up,
            action: ScaleAction::Add(1),
            observed: Some(1.0),
            threshold: Some(0.5),
            condition: "ghost > 0.5".into(),
            held_secs: 0,
            reason: "a rule of another policy".into(),
        }],
        policy_revision: Some(revision.into()),
        alert: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rewritten_policy_is_taken_up_without_a_restart_and_a_bad_one_refused() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this test binary");

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("policy.yaml");
    write_policy(&path, V1);
    let first = Revised::from(policy::load_file(&path).expect("v1 is valid"));
    let (sender, live) = reload::channel(first.clone());
    let mut watching = sender.subscribe();
    let (stop_watch, watch_stopped) = shutdown::channel();
    let poll = Duration::from_millis(100);
    let watcher = tokio::spawn(reload::watch_file(
        path.clone(),
        sender,
        poll,
        watch_stopped.signal(),
    ));

    let nats = NatsServer::start().await;
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let mut audit = AuditReader::new(&client).await;
    let pipeline = Pipeline::start(&nats, live).await;
    let t0 = nova_runtime::now_ms() - 200_000;
    let queue = subjects::metrics("web", "queue_depth");

    // v1: 1500 > 1000 scales, and both records name v1's revision.
    publish(&client, queue.clone(), sample(1500.0, t0), false).await;
    let decided = audit
        .wait_for("v1's decision", decision_of("q.scale_up"))
        .await;
    assert_eq!(decided.outcome, "scale", "{}", decided.reason);
    assert_eq!(decided.policy_revision.as_ref(), Some(&first.revision));
    let fired = trigger_record(&audit, &decided);
    assert_eq!(fired.policy_revision.as_ref(), Some(&first.revision));

    // v2: the watcher notices the rewrite; the services take it up.
    write_policy(&path, &v2());
    let second = within("the watcher to load v2", WAIT, watching.changed()).await;
    assert_ne!(second.revision, first.revision);
    // 500 fires under v2's threshold of 100 (under v1's it would not).
    publish(&client, queue.clone(), sample(500.0, t0 + 1_000), false).await;
    let decided = audit
        .wait_for("v2's decision", decision_of("q.scale_up"))
        .await;
    assert_eq!(decided.outcome, "scale", "{}", decided.reason);
    assert_eq!(decided.policy_revision.as_ref(), Some(&second.revision));
    let fired = trigger_record(&audit, &decided);
    assert_eq!(fired.policy_revision.as_ref(), Some(&second.revision));
    assert_eq!(fired.threshold, Some(100.0));
    // The new rule acts.
    let cpu = subjects::metrics("web", "cpu");
    publish(&client, cpu, sample(95.0, t0 + 2_000), false).await;
    let decided = audit
        .wait_for("the new rule's decision", decision_of("hot.scale_up"))
        .await;
    assert_eq!(decided.outcome, "scale", "{}", decided.reason);
    assert_eq!(decided.policy_revision.as_ref(), Some(&second.revision));

    // A rule of another revision is deferred, naming both; a rule unknown to
    // the revision the trigger names is dead-lettered.
    let ghost = foreign_trigger("t-ghost-other", "ghost.scale_up", "0000other000");
    nova_runtime::publish::publish_once(&js, subjects::triggers("web"), &ghost.id, &ghost)
        .await
        .expect("publish");
    let deferred = audit
        .wait_for("the deferral", |r| {
            r.trigger_id.as_deref() == Some("t-ghost-other") && r.outcome == "deferred"
        })
        .await;
    for named in ["ghost.scale_up", "0000other000", second.revision.as_str()] {
        assert!(
            deferred.reason.contains(named),
            "{named}: {}",
            deferred.reason
        );
    }
    let bad = foreign_trigger("t-ghost-same", "ghost.scale_up", &second.revision);
    nova_runtime::publish::publish_once(&js, subjects::triggers("web"), &bad.id, &bad)
        .await
        .expect("publish");
    let dead = within("the dead letter", WAIT, async {
        loop {
            let dead: Vec<DeadLetter> = stream_messages(&client, DEAD_STREAM).await;
            if let Some(letter) = dead
                .into_iter()
                .find(|d| d.reason.contains("ghost.scale_up"))
            {
                return letter;
            }
            tokio::time::sleep(poll).await;
        }
    })
    .await;
    assert!(dead.reason.contains(&second.revision), "{}", dead.reason);

    // A bad rewrite is refused (counted), and v2 goes on deciding.
    let broken = v2()
        .replace("max: 50", "max: lots")
        .replace("add 2", "add two");
    write_policy(&path, &broken);
    within("the refusal to be counted", WAIT, async {
        while refusals(&snapshotter) == 0 {
            tokio::time::sleep(poll).await;
        }
    })
    .await;
    // Past the 30 s refire of the condition that has held since t0 + 1 s.
    let later = t0 + 60_000;
    publish(&client, queue, sample(600.0, later), false).await;
    let decided = audit
        .wait_for("a decision after the refusal", |r| {
            decision_of("q.scale_up")(r) && r.ts == later
        })
        .await;
    assert_eq!(decided.policy_revision.as_ref(), Some(&second.revision));
    let fired = trigger_record(&audit, &decided);
    assert_eq!(fired.policy_revision.as_ref(), Some(&second.revision));

    pipeline.stop().await;
    stop_watch.trigger();
    within("the watcher to stop", WAIT, watcher)
        .await
        .expect("watcher");
}

/// The binary as an operator runs it: a bad file on SIGHUP is refused with
/// one line per problem and the revision that stays; a good one is put in
/// force. Each wait is for the line saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_binary_reloads_on_sighup_and_refuses_a_bad_file_line_by_line() {
    let nats = NatsServer::start().await;
    // Provisioned, as `novactl provision` would: services only check.
    let _client = nats.client().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("policy.yaml");
    write_policy(&path, V1);
    let first = policy::revision(&policy::load_file(&path).expect("v1"));
    let evaluator = ServiceProcess::stage(Stage::Evaluator, &nats.url, &path, &[], &[]);
    // Ready: the SIGHUP handler is installed before the service listens.
    wait_ready(&nats.url, Stage::Evaluator, 1).await;

    let broken = V1
        .replace("max: 50", "max: lots")
        .replace("add 1", "add one");
    write_policy(&path, &broken);
    evaluator.hang_up();
    evaluator.wait_line("SIGHUP: reloading the policy").await;
    let refused = format!("policy reload refused, revision {first} stays");
    evaluator.wait_line("targets.web.max").await;
    evaluator
        .wait_line("horizontal_scaling_rules.q.scale_up.action")
        .await;
    let lines = evaluator.lines_with(&refused);
    assert!(lines.len() >= 2, "one line per problem: {lines:?}");

    write_policy(&path, &v2());
    let second = policy::revision(&policy::load_file(&path).expect("v2"));
    evaluator.hang_up();
    let applied = format!("policy reloaded: revision {first} -> {second}");
    evaluator.wait_line(&applied).await;
    evaluator
        .wait_line("evaluating with the reloaded policy")
        .await;
}
