//! The five-stage pipeline end to end: real nats-server, ECS on moto.

use std::sync::Arc;

use nova_actuator::sim::SimState;
use nova_e2e::{
    AuditReader, MotoServer, NatsServer, Pipeline, WAIT, control, ecs_desired, publish,
    stream_messages, within,
};
use nova_runtime::nats::{CAPACITY_BUCKET, COMMANDS_STREAM, RESULTS_STREAM, SIM_BUCKET};
use nova_shared::codec;
use nova_shared::policy::{Policy, from_yaml};
use nova_shared::subjects;
use nova_shared::wire::{
    ActionResult, AuditKind, AuditRecord, CAPACITY_VERB, CapacityAnswer, CapacityRecord, Command,
    ControlRequest, ScaleRequest, Stage,
};
use serde_json::json;

const CLUSTER: &str = "novacron-cluster";
const RUNBOOK: &str = include_str!("../../deploy/policies/runbook.yaml");

/// The runbook policy, its ECS services pointed at moto.
fn runbook_policy(endpoint: &str) -> Arc<Policy> {
    runbook_policy_with(endpoint, |yaml| yaml)
}

/// The runbook policy pointed at moto, after `edit`.
fn runbook_policy_with(endpoint: &str, edit: impl Fn(String) -> String) -> Arc<Policy> {
    let yaml = RUNBOOK
        .replace(
            "service: novacron-api }",
            &format!("service: novacron-api, endpoint_url: \"{endpoint}\" }}"),
        )
        .replace(
            "service: novacron-worker }",
            &format!("service: novacron-worker, endpoint_url: \"{endpoint}\" }}"),
        );
    let mut policy = from_yaml(&edit(yaml), "runbook.yaml").expect("runbook policy");
    // The api's gradual walk (120 s between steps, a health check of the
    // runbook's own endpoint) is tests/tests/gradual.rs's: here every
    // change is one call.
    for target in policy.targets.values_mut() {
        target.gradual = None;
    }
    Arc::new(policy)
}

struct World {
    _moto: MotoServer,
    _nats: NatsServer,
    client: async_nats::Client,
    ecs: aws_sdk_ecs::Client,
    pipeline: Pipeline,
    audit: AuditReader,
    /// Event time of the scenario's start, unix ms (a few minutes ago, so a
    /// whole rule duration fits before "now").
    t0: i64,
}

/// Both runbook services at 5 tasks on moto, the pipeline running and the
/// actuator's first capacity observation of each stored.
async fn world() -> World {
    world_with(|yaml| yaml).await
}

/// Like [`world`], with the policy text edited first.
async fn world_with(edit: impl Fn(String) -> String) -> World {
    let (nats, moto) = tokio::join!(NatsServer::start(), MotoServer::start());
    let ecs = moto.ecs_service(CLUSTER, "novacron-worker", 5).await;
    moto.ecs_service_in_cluster(CLUSTER, "novacron-api", 5)
        .await;
    let client = nats.client().await;
    let audit = AuditReader::new(&client).await;
    let pipeline = Pipeline::start(&nats, runbook_policy_with(&moto.endpoint, edit)).await;
    // The first observation stored, whatever came after it: a test's
    // fallback after 2 s of silence may already have moved the worker past
    // 5 on a loaded machine, and the watch sees only the latest record.
    for target in ["worker", "api"] {
        wait_capacity_where(
            &client,
            target,
            &format!("the first observation of {target}"),
            |r| r.observed_ms > 0,
        )
        .await;
    }
    World {
        _moto: moto,
        _nats: nats,
        client,
        ecs,
        pipeline,
        audit,
        t0: nova_runtime::now_ms() - 200_000,
    }
}

/// Waits until the actuator has recorded `desired` for `target`.
async fn wait_capacity(client: &async_nats::Client, target: &str, desired: u32) {
    wait_capacity_where(
        client,
        target,
        &format!("capacity of {target} to be {desired}"),
        |r| r.desired == desired,
    )
    .await;
}

/// Waits until the actuator has recorded a capacity of `target` that is `wanted`.
async fn wait_capacity_where(
    client: &async_nats::Client,
    target: &str,
    what: &str,
    wanted: impl Fn(&CapacityRecord) -> bool,
) -> CapacityRecord {
    use futures_util::StreamExt;
    let js = async_nats::jetstream::new(client.clone());
    let store = js
        .get_key_value(CAPACITY_BUCKET)
        .await
        .expect("capacity bucket");
    let mut watch = store.watch_with_history(target).await.expect("watch");
    within(what, WAIT, async {
        while let Some(entry) = watch.next().await {
            let entry = entry.expect("entry");
            let record: CapacityRecord =
                codec::decode(&entry.value, codec::Encoding::MsgPack).expect("capacity record");
            if wanted(&record) {
                return record;
            }
        }
        panic!("the capacity watch of {target} ended");
    })
    .await
}

/// Exactly one command and one result were issued (so one ECS
/// UpdateService), and the worker service wants 10 tasks.
async fn assert_worker_scaled_once_to_10(w: &World) {
    let commands: Vec<Command> = stream_messages(&w.client, COMMANDS_STREAM).await;
    assert_eq!(commands.len(), 1, "commands: {commands:?}");
    let results: Vec<ActionResult> = stream_messages(&w.client, RESULTS_STREAM).await;
    assert_eq!(results.len(), 1, "results: {results:?}");
    assert_eq!(ecs_desired(&w.ecs, CLUSTER, "novacron-worker").await, 10);
}

fn queue_depth(value: f64, ts: i64) -> Vec<u8> {
    let sample = json!({"value": value, "ts": ts});
    rmp_serde::to_vec_named(&sample).expect("encode")
}

fn kinds(records: &[AuditRecord], target: &str) -> Vec<(AuditKind, String)> {
    records
        .iter()
        .filter(|r| r.target == target)
        .map(|r| (r.kind.clone(), r.outcome.clone()))
        .collect()
}

fn is_result(target: &'static str) -> impl Fn(&AuditRecord) -> bool {
    move |r| r.target == target && r.kind == AuditKind::Result
}

fn is_decision(target: &'static str, outcome: &'static str) -> impl Fn(&AuditRecord) -> bool {
    move |r| r.target == target && r.kind == AuditKind::Decision && r.outcome == outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_depth_in_msgpack_scales_an_ecs_service_from_5_to_10_with_an_audit_trail() {
    let mut w = world().await;
    publish(
        &w.client,
        subjects::metrics("worker", "queue_depth"),
        queue_depth(1500.0, w.t0),
        false,
    )
    .await;
    let result = w
        .audit
        .wait_for("the worker's result", is_result("worker"))
        .await;
    assert_eq!(result.outcome, "succeeded", "{}", result.reason);
    assert_eq!(ecs_desired(&w.ecs, CLUSTER, "novacron-worker").await, 10);
    assert_eq!(
        kinds(&w.audit.seen, "worker"),
        [
            (AuditKind::Trigger, "fired".to_string()),
            (AuditKind::Decision, "scale".to_string()),
            (AuditKind::Command, "executing".to_string()),
            (AuditKind::Result, "succeeded".to_string()),
        ]
    );
    let decision = w
        .audit
        .seen
        .iter()
        .find(|r| r.kind == AuditKind::Decision)
        .expect("decision");
    assert_eq!(
        decision.reason,
        "max_queue_depth 1500 > 1000 (rule queue_depth.scale_up: \"queue_depth > 1000 messages\"); \
         scaling worker from 5 to 10 (add 5), cooldown 2m"
    );
    assert_eq!(
        (decision.from, decision.to, decision.observed),
        (Some(5), Some(10), Some(1500.0))
    );
    assert!(
        result
            .backend_response
            .as_deref()
            .unwrap_or("")
            .contains("desiredCount 5 -> 10"),
        "{result:?}"
    );
    // The ids tie the records together: trigger -> decision -> command -> result.
    let trigger = &w.audit.seen[0];
    assert_eq!(decision.trigger_id, trigger.trigger_id);
    assert_eq!(result.decision_id, decision.decision_id);
    w.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_samples_in_json_held_for_two_minutes_scale_the_same_way() {
    let mut w = world().await;
    // Two instances at 85% and 75% (avg 80% > 70%) every 10 s of event time
    // for 2 minutes, published in one burst: event time, not arrival, decides.
    for step in 0..=12 {
        let ts = w.t0 + step * 10_000;
        let batch = json!([
            {"value": 85, "ts": ts, "instance": "i-a"},
            {"value": "75%", "ts": ts, "instance": "i-b"},
        ]);
        publish(
            &w.client,
            subjects::metrics("api", "cpu"),
            serde_json::to_vec(&batch).unwrap(),
            true,
        )
        .await;
    }
    let result = w.audit.wait_for("the api's result", is_result("api")).await;
    assert_eq!(result.outcome, "succeeded", "{}", result.reason);
    assert_eq!(ecs_desired(&w.ecs, CLUSTER, "novacron-api").await, 7);
    let trigger = w
        .audit
        .seen
        .iter()
        .find(|r| r.kind == AuditKind::Trigger)
        .expect("trigger");
    assert_eq!(
        trigger.ts,
        w.t0 + 120_000,
        "fires when the 2 minutes are complete"
    );
    assert!(
        trigger.reason.starts_with("avg_cpu 80% > 70% for 2m"),
        "{}",
        trigger.reason
    );
    assert_eq!(kinds(&w.audit.seen, "api").len(), 4);
    w.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_trigger_inside_the_cooldown_is_audited_and_not_executed() {
    let mut w = world().await;
    let subject = subjects::metrics("worker", "queue_depth");
    publish(&w.client, subject.clone(), queue_depth(1500.0, w.t0), false).await;
    w.audit
        .wait_for("the first result", is_result("worker"))
        .await;
    // 30 s later (event time) the rule fires again; its cooldown is 120 s.
    publish(
        &w.client,
        subject,
        queue_depth(1800.0, w.t0 + 30_000),
        false,
    )
    .await;
    let suppressed = w
        .audit
        .wait_for("a cooldown decision", is_decision("worker", "cooldown"))
        .await;
    assert!(
        suppressed
            .reason
            .ends_with("add 5 suppressed: scale-up is cooling down for another 1m30s"),
        "{}",
        suppressed.reason
    );
    assert_eq!((suppressed.from, suppressed.to), (Some(10), Some(10)));
    assert_worker_scaled_once_to_10(&w).await;
    w.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_payloads_are_dead_lettered_with_a_reason_and_the_pipeline_keeps_working() {
    use futures_util::StreamExt;
    let mut w = world().await;
    let mut dead = w
        .client
        .subscribe(subjects::dead("ingest"))
        .await
        .expect("subscribe");
    w.client.flush().await.expect("flush");
    let subject = subjects::metrics("worker", "queue_depth");
    publish(
        &w.client,
        subject.clone(),
        b"\xc1 not msgpack".to_vec(),
        false,
    )
    .await;
    publish(&w.client, subject.clone(), br#"{"ts": 5}"#.to_vec(), true).await;
    publish(
        &w.client,
        subject.clone(),
        br#"[{"value": "lots"}, {"value": 1}]"#.to_vec(),
        true,
    )
    .await;
    publish(
        &w.client,
        subjects::metrics("nope", "queue_depth"),
        queue_depth(1.0, w.t0),
        false,
    )
    .await;
    // Event time outside the accepted window, either side, is refused at
    // the edge too.
    let now = nova_runtime::now_ms();
    publish(
        &w.client,
        subject.clone(),
        queue_depth(1.0, now + 3_600_000),
        false,
    )
    .await;
    publish(
        &w.client,
        subject.clone(),
        queue_depth(1.0, now - 7_200_000),
        false,
    )
    .await;
    let mut reasons = Vec::new();
    within("six dead letters", WAIT, async {
        while reasons.len() < 6 {
            let message = dead.next().await.expect("dead letter");
            let letter: nova_shared::wire::DeadLetter =
                codec::decode(&message.payload, codec::Encoding::MsgPack)
                    .expect("dead letter decodes");
            assert_eq!(letter.stage, Stage::Ingest);
            reasons.push((letter.subject, letter.reason, letter.payload));
        }
    })
    .await;
    let want = [
        (
            "nova.metrics.worker.queue_depth",
            "unreadable payload: malformed at byte 0: 0xc1 is never used in MessagePack",
        ),
        ("nova.metrics.worker.queue_depth", "missing field `value`"),
        (
            "nova.metrics.worker.queue_depth",
            "metric queue_depth: expected a number with an optional unit",
        ),
        (
            "nova.metrics.nope.queue_depth",
            "no target \"nope\" in the policy",
        ),
        (
            "nova.metrics.worker.queue_depth",
            "s ahead of the receiver's clock (at most 300 s ahead",
        ),
        (
            "nova.metrics.worker.queue_depth",
            "s behind the receiver's clock (at most 3600 s behind",
        ),
    ];
    for ((subject, reason, _), (want_subject, want_reason)) in reasons.iter().zip(want) {
        assert_eq!(subject, want_subject);
        assert!(
            reason.contains(want_reason),
            "{reason:?} should contain {want_reason:?}"
        );
    }
    assert_eq!(
        reasons[0].2, b"\xc1 not msgpack",
        "the original bytes are kept"
    );
    // The good sample beside the bad one was accepted (stamped with its
    // receive time), and the loop goes on: a later sample scales. It comes
    // from another instance: one from the same instance stamped in the same
    // millisecond would rightly count as a duplicate.
    let later = json!({"value": 1500, "ts": nova_runtime::now_ms(), "instance": "queue-2"});
    publish(
        &w.client,
        subject,
        rmp_serde::to_vec_named(&later).unwrap(),
        false,
    )
    .await;
    let result = w
        .audit
        .wait_for("a result after the bad input", is_result("worker"))
        .await;
    assert_eq!(result.outcome, "succeeded");
    assert_eq!(ecs_desired(&w.ecs, CLUSTER, "novacron-worker").await, 10);
    w.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_arbiter_restarted_mid_cooldown_still_honours_it() {
    let mut w = world().await;
    let subject = subjects::metrics("worker", "queue_depth");
    publish(&w.client, subject.clone(), queue_depth(1500.0, w.t0), false).await;
    w.audit
        .wait_for("the first result", is_result("worker"))
        .await;
    w.pipeline.stop_stage(Stage::Arbiter).await;
    // The trigger arrives while no arbiter runs; the stream keeps it.
    publish(
        &w.client,
        subject,
        queue_depth(1500.0, w.t0 + 60_000),
        false,
    )
    .await;
    w.audit
        .wait_for("the second trigger", |r| {
            r.kind == AuditKind::Trigger && r.ts == w.t0 + 60_000
        })
        .await;
    w.pipeline.start_stage(Stage::Arbiter).await;
    let suppressed = w
        .audit
        .wait_for("a cooldown decision", is_decision("worker", "cooldown"))
        .await;
    assert!(
        suppressed.reason.contains("cooling down for another 1m"),
        "{}",
        suppressed.reason
    );
    assert_worker_scaled_once_to_10(&w).await;
    w.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_of_every_stage_act_once() {
    use nova_shared::wire::Trigger;
    let mut w = world().await;
    for stage in nova_e2e::STAGES {
        w.pipeline.start_stage(stage).await;
    }
    w.pipeline.start_stage(Stage::Arbiter).await;
    // Both evaluators see the sample and publish the same trigger id; three
    // arbiters and two actuators compete for the streams.
    publish(
        &w.client,
        subjects::metrics("worker", "queue_depth"),
        queue_depth(1500.0, w.t0),
        false,
    )
    .await;
    let result = w
        .audit
        .wait_for("the worker's result", is_result("worker"))
        .await;
    assert_eq!(result.outcome, "succeeded", "{}", result.reason);
    let triggers: Vec<Trigger> =
        stream_messages(&w.client, nova_runtime::nats::TRIGGERS_STREAM).await;
    assert_eq!(
        triggers.len(),
        1,
        "the second evaluator's copy is de-duplicated"
    );
    assert_worker_scaled_once_to_10(&w).await;
    w.pipeline.stop().await;
    let records: Vec<AuditRecord> =
        stream_messages(&w.client, nova_runtime::nats::AUDIT_STREAM).await;
    assert_eq!(
        kinds(&records, "worker").len(),
        4,
        "one record per stage, not per replica"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_created_after_start_is_read_on_demand() {
    let (nats, moto) = tokio::join!(NatsServer::start(), MotoServer::start());
    let client = nats.client().await;
    let mut audit = AuditReader::new(&client).await;
    // The pipeline starts first: the actuator's first look finds no service.
    let pipeline = Pipeline::start(&nats, runbook_policy(&moto.endpoint)).await;
    let ecs = moto.ecs_service(CLUSTER, "novacron-worker", 5).await;
    // Long before the actuator's next periodic look, the arbiter asks it.
    let now = nova_runtime::now_ms();
    publish(
        &client,
        subjects::metrics("worker", "queue_depth"),
        queue_depth(1500.0, now),
        false,
    )
    .await;
    let decision = audit
        .wait_for("a decision", |r| r.kind == AuditKind::Decision)
        .await;
    assert_eq!(decision.outcome, "scale", "{}", decision.reason);
    let result = audit.wait_for("the result", is_result("worker")).await;
    assert_eq!(result.outcome, "succeeded", "{}", result.reason);
    assert_eq!(ecs_desired(&ecs, CLUSTER, "novacron-worker").await, 10);
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_pause_holds_scale_ups_until_resumed() {
    use nova_shared::wire::{ControlRequest, Direction, DirectionRequest};
    let mut w = world().await;
    let request = |direction| DirectionRequest {
        target: "worker".into(),
        direction,
        reason: Some("maintenance window".into()),
    };
    let paused = control(
        &w.client,
        ControlRequest::Pause(request(Some(Direction::Up))),
    )
    .await;
    assert!(paused.ok, "{}", paused.message);
    assert_eq!(
        paused.message,
        "scale-up of worker paused by an operator: maintenance window"
    );
    assert!(paused.targets[0].paused_up && !paused.targets[0].paused_down);
    let record = w
        .audit
        .wait_for("the pause record", |r| r.kind == AuditKind::Control)
        .await;
    assert_eq!(
        (record.outcome.as_str(), record.target.as_str()),
        ("paused", "worker")
    );

    let subject = subjects::metrics("worker", "queue_depth");
    publish(&w.client, subject.clone(), queue_depth(1500.0, w.t0), false).await;
    let held = w
        .audit
        .wait_for("a paused decision", is_decision("worker", "paused"))
        .await;
    assert!(
        held.reason
            .ends_with("add 5 suppressed: scale-up of worker is paused by an operator"),
        "{}",
        held.reason
    );

    let resumed = control(&w.client, ControlRequest::Resume(request(None))).await;
    assert!(
        resumed.ok && !resumed.targets[0].paused_up,
        "{}",
        resumed.message
    );
    publish(
        &w.client,
        subject,
        queue_depth(1500.0, w.t0 + 30_000),
        false,
    )
    .await;
    let result = w
        .audit
        .wait_for("the result after resume", is_result("worker"))
        .await;
    assert_eq!(result.outcome, "succeeded", "{}", result.reason);
    assert_worker_scaled_once_to_10(&w).await;

    let status = control(&w.client, ControlRequest::status(None)).await;
    let worker = status
        .targets
        .iter()
        .find(|t| t.target == "worker")
        .expect("worker status");
    assert_eq!(
        (worker.desired, worker.capacity.as_ref().map(|c| c.desired)),
        (Some(10), Some(10))
    );
    assert!(
        worker
            .last_decision
            .as_deref()
            .unwrap_or("")
            .contains("scaling worker from 5 to 10")
    );
    let unknown = control(
        &w.client,
        ControlRequest::Pause(DirectionRequest {
            target: "nope".into(),
            direction: None,
            reason: None,
        }),
    )
    .await;
    assert_eq!(
        (unknown.ok, unknown.message.as_str()),
        (false, "no target \"nope\" in the policy")
    );
    w.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_arbiter_killed_mid_stream_loses_and_repeats_nothing() {
    let mut w = world().await;
    let subject = subjects::metrics("worker", "queue_depth");
    // Four breaches, each after the 120 s cooldown: 5 -> 10 -> 15 -> 20 -> 25.
    let at = |n: i64| w.t0 - 400_000 + n * 130_000;
    for n in 0..2 {
        publish(
            &w.client,
            subject.clone(),
            queue_depth(1500.0, at(n)),
            false,
        )
        .await;
        w.audit.wait_for("a result", is_result("worker")).await;
    }
    // The third trigger is in flight when the arbiter dies: depending on
    // timing the kill lands before the decision is stored, between storing
    // it and publishing the command, or after; every case must end the same.
    publish(
        &w.client,
        subject.clone(),
        queue_depth(1500.0, at(2)),
        false,
    )
    .await;
    w.audit
        .wait_for("the third trigger", |r| {
            r.kind == AuditKind::Trigger && r.ts == at(2)
        })
        .await;
    w.pipeline.kill_stage(Stage::Arbiter).await;
    w.pipeline.start_stage(Stage::Arbiter).await;
    w.audit
        .find_or_wait("the third result", |r| {
            r.kind == AuditKind::Result && r.to == Some(20)
        })
        .await;
    publish(&w.client, subject, queue_depth(1500.0, at(3)), false).await;
    w.audit
        .find_or_wait("the fourth result", |r| {
            r.kind == AuditKind::Result && r.to == Some(25)
        })
        .await;

    let commands: Vec<Command> = stream_messages(&w.client, COMMANDS_STREAM).await;
    let steps: Vec<(u64, u32, u32)> = commands
        .iter()
        .map(|c| (c.seq, c.from, c.desired))
        .collect();
    assert_eq!(steps, [(1, 5, 10), (2, 10, 15), (3, 15, 20), (4, 20, 25)]);
    let results: Vec<ActionResult> = stream_messages(&w.client, RESULTS_STREAM).await;
    assert_eq!(results.len(), 4);
    assert_eq!(ecs_desired(&w.ecs, CLUSTER, "novacron-worker").await, 25);
    // If the kill landed between publishing the third command and its audit
    // record, the record comes with the redelivery, one ack wait later.
    for to in [10, 15, 20, 25] {
        let decided = move |r: &AuditRecord| r.kind == AuditKind::Decision && r.to == Some(to);
        w.audit
            .find_or_wait("every decision's record", decided)
            .await;
    }
    let records: Vec<AuditRecord> =
        stream_messages(&w.client, nova_runtime::nats::AUDIT_STREAM).await;
    let decisions = records
        .iter()
        .filter(|r| r.kind == AuditKind::Decision)
        .count();
    assert_eq!(decisions, 4, "each trigger decided once");
    w.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_scale_is_decided_like_a_rule() {
    use nova_shared::wire::{ControlRequest, ScaleRequest};
    let mut w = world().await;
    let ask = |desired| {
        ControlRequest::Scale(ScaleRequest {
            target: "worker".into(),
            desired,
            reason: Some("load test".into()),
            force: false,
        })
    };
    let reply = control(&w.client, ask(12)).await;
    assert!(reply.ok, "{}", reply.message);
    assert!(
        reply.message.starts_with(
            "operator asked to set worker to 12 (load test): submitted as trigger op-"
        ),
        "{}",
        reply.message
    );
    let result = w
        .audit
        .wait_for("the operator's result", is_result("worker"))
        .await;
    assert_eq!(
        (result.outcome.as_str(), result.to),
        ("succeeded", Some(12)),
        "{}",
        result.reason
    );
    assert_eq!(ecs_desired(&w.ecs, CLUSTER, "novacron-worker").await, 12);
    // Beyond the policy's max of 200 it is clamped, like any rule.
    let reply = control(&w.client, ask(500)).await;
    assert!(reply.ok);
    let decision = w
        .audit
        .wait_for("the clamped decision", |r| {
            r.kind == AuditKind::Decision && r.to == Some(200)
        })
        .await;
    assert!(
        decision.reason.ends_with(
            "scaling worker from 12 to 200 (set to 500, clamped at max 200), cooldown 0s"
        ),
        "{}",
        decision.reason
    );
    // A scale without its capacity is no scale request: refused by name.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", codec::CONTENT_TYPE_JSON);
    let payload = br#"{"verb": "scale", "target": "worker"}"#.to_vec();
    let asked = w.client.request_with_headers(
        subjects::ARBITER_CONTROL.to_string(),
        headers,
        payload.into(),
    );
    let answer = within("the refusal", WAIT, asked).await.expect("answered");
    let missing: nova_shared::wire::ControlReply =
        codec::decode(&answer.payload, codec::Encoding::MsgPack).expect("control reply");
    assert_eq!(
        (missing.ok, missing.message.as_str()),
        (false, "not a control request: missing field `desired`")
    );
    w.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_metric_source_falls_back_to_the_set_capacity() {
    let mut w = world_with(|yaml| {
        yaml.replace(
            "rules: [queue_depth]",
            "rules: [queue_depth]\n    fallback: { after_secs: 2, capacity: 12 }",
        )
    })
    .await;
    // No sample ever arrives for the worker.
    let trigger = w
        .audit
        .wait_for("the fallback trigger", |r| r.kind == AuditKind::Trigger)
        .await;
    assert_eq!(trigger.rule.as_deref(), Some("fallback"));
    assert!(
        trigger.reason.starts_with("no samples for worker for "),
        "{}",
        trigger.reason
    );
    assert!(
        trigger
            .reason
            .ends_with("(fallback after 2s): falling back to 12"),
        "{}",
        trigger.reason
    );
    let result = w
        .audit
        .find_or_wait("the fallback result", is_result("worker"))
        .await;
    assert_eq!(
        (result.outcome.as_str(), result.to),
        ("succeeded", Some(12)),
        "{}",
        result.reason
    );
    assert_eq!(ecs_desired(&w.ecs, CLUSTER, "novacron-worker").await, 12);
    // The api target has no fallback: its silence changes nothing.
    assert!(w.audit.seen.iter().all(|r| r.target == "worker"));
    w.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_per_instance_divides_total_requests_by_capacity() {
    let mut w = world().await;
    // The runbook's "requests_per_instance > 1000 for 1 minute": the load
    // balancer reports 6000 requests/s in total; the api runs 5 instances.
    for step in 0..=6 {
        let sample = json!({"value": 6000, "ts": w.t0 + step * 10_000, "instance": "lb"});
        publish(
            &w.client,
            subjects::metrics("api", "requests"),
            rmp_serde::to_vec_named(&sample).unwrap(),
            false,
        )
        .await;
    }
    let trigger = w
        .audit
        .wait_for("the request rule", |r| r.kind == AuditKind::Trigger)
        .await;
    assert_eq!(trigger.rule.as_deref(), Some("request_based.scale_up"));
    assert_eq!(trigger.observed, Some(1200.0), "6000 / 5");
    let result = w
        .audit
        .find_or_wait("the api's result", is_result("api"))
        .await;
    assert_eq!(
        (result.outcome.as_str(), result.to),
        ("succeeded", Some(8)),
        "{}",
        result.reason
    );
    assert_eq!(ecs_desired(&w.ecs, CLUSTER, "novacron-api").await, 8);
    w.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_evaluators_cover_every_target_between_them() {
    use nova_shared::evaluate::Partition;
    let mut w = world().await;
    // The smallest partition count that puts the two targets apart.
    let owner = |target: &str, n: u64| (0..n).find(|&k| Partition::new(k, n).unwrap().owns(target));
    let n = (2..16)
        .find(|&n| owner("worker", n) != owner("api", n))
        .expect("some N separates them");
    w.pipeline.stop_stage(Stage::Evaluator).await;
    for k in 0..n {
        w.pipeline.evaluator_partition = Partition::new(k, n).unwrap();
        w.pipeline.start_stage(Stage::Evaluator).await;
    }
    publish(
        &w.client,
        subjects::metrics("worker", "queue_depth"),
        queue_depth(1500.0, w.t0),
        false,
    )
    .await;
    for step in 0..=12 {
        let batch = json!([{"value": 90, "ts": w.t0 + step * 10_000, "instance": "i-a"}]);
        publish(
            &w.client,
            subjects::metrics("api", "cpu"),
            serde_json::to_vec(&batch).unwrap(),
            true,
        )
        .await;
    }
    // The two results may come in either order.
    for target in ["worker", "api"] {
        w.audit
            .find_or_wait("both results", is_result(target))
            .await;
    }
    assert_eq!(ecs_desired(&w.ecs, CLUSTER, "novacron-worker").await, 10);
    assert_eq!(ecs_desired(&w.ecs, CLUSTER, "novacron-api").await, 7);
    w.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vertical_rule_climbs_the_tier_ladder_and_stops_at_the_top() {
    // The runbook's cpu_intensive rule as written, with a short cooldown so
    // the second firing (300 s of event time later) is decided on its tier.
    let mut w = world_with(|yaml| {
        yaml.replace("tier: t3.medium", "tier: c5.xlarge").replace(
            "action: \"upgrade to next CPU-optimized tier\"",
            "action: \"upgrade to next CPU-optimized tier\"\n      cooldown: 60",
        )
    })
    .await;
    let base = nova_runtime::now_ms() - 700_000;
    for step in 0..=20 {
        let sample = json!({"value": 12, "ts": base + step * 30_000});
        publish(
            &w.client,
            subjects::metrics("compute", "cpu_credits"),
            rmp_serde::to_vec_named(&sample).unwrap(),
            false,
        )
        .await;
    }
    let resized = w
        .audit
        .find_or_wait("the resize decision", is_decision("compute", "scale"))
        .await;
    assert_eq!(
        resized.rule.as_deref(),
        Some("instance_resize.cpu_intensive")
    );
    assert!(
        resized
            .reason
            .contains("resizing compute from c5.xlarge to c5.2xlarge (4 instances)"),
        "{}",
        resized.reason
    );
    assert!(
        resized.reason.starts_with("max_cpu_credits 12 < 20 for 5m"),
        "{}",
        resized.reason
    );
    let result = w
        .audit
        .find_or_wait("the resize result", is_result("compute"))
        .await;
    assert_eq!(result.outcome, "succeeded", "{}", result.reason);
    assert!(
        result.reason.contains("tier c5.xlarge -> c5.2xlarge"),
        "{}",
        result.reason
    );
    let record = wait_capacity_where(&w.client, "compute", "compute on c5.2xlarge", |r| {
        r.tier.as_deref() == Some("c5.2xlarge")
    })
    .await;
    assert_eq!(record.desired, 4, "a resize keeps the count");
    let top = w
        .audit
        .find_or_wait(
            "the at-top-tier decision",
            is_decision("compute", "at_top_tier"),
        )
        .await;
    assert!(
        top.reason
            .contains("c5.2xlarge is the top tier of the ladder of instance_resize.cpu_intensive"),
        "{}",
        top.reason
    );
    let commands: Vec<Command> = stream_messages(&w.client, COMMANDS_STREAM).await;
    let tiers: Vec<Option<&str>> = commands.iter().map(|c| c.tier.as_deref()).collect();
    assert_eq!(tiers, vec![Some("c5.2xlarge")], "one resize command");
    w.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tracking_rule_scales_within_its_rate_limit() {
    let policy = r#"
targets:
  web: {rules: [cpu_target], max: 20, backend: {sim: {initial: 4, warmup_secs: 0}}}
target_tracking_rules:
  cpu_target:
    metric: avg_cpu
    target: 50%
    behavior:
      scale_up: {policies: [{type: pods, value: 2, period: 60}]}
"#;
    let policy = Arc::new(from_yaml(policy, "tracking.yaml").expect("policy"));
    let nats = NatsServer::start().await;
    let client = nats.client().await;
    let mut audit = AuditReader::new(&client).await;
    let pipeline = Pipeline::start(&nats, policy).await;
    wait_capacity(&client, "web", 4).await;
    // Every instance at 100 %: twice the target, so 8 instances are asked
    // for, two at a time per minute of event time.
    let base = nova_runtime::now_ms() - 200_000;
    for step in 0..=8 {
        for instance in ["a", "b"] {
            let sample = json!({"value": "100%", "ts": base + step * 15_000, "instance": instance});
            publish(
                &client,
                subjects::metrics("web", "cpu"),
                serde_json::to_vec(&sample).unwrap(),
                true,
            )
            .await;
        }
    }
    let first = audit
        .find_or_wait("the first scale-up", is_decision("web", "scale"))
        .await;
    assert_eq!(
        (first.from, first.to),
        (Some(4), Some(6)),
        "{}",
        first.reason
    );
    assert!(
        first
            .reason
            .contains("avg_cpu 100% against a target of 50%: 4 -> 8 instances"),
        "{}",
        first.reason
    );
    assert!(
        first
            .reason
            .contains("scale-up limited to 6 by policy 2 pods per 60s"),
        "{}",
        first.reason
    );
    let limited = audit
        .find_or_wait(
            "a rate-limited decision",
            is_decision("web", "rate_limited"),
        )
        .await;
    assert!(
        limited
            .reason
            .contains("limited to 6 by policy 2 pods per 60s"),
        "{}",
        limited.reason
    );
    // A minute later the budget is back: 6 -> 8.
    let second = audit
        .wait_for("the second scale-up", is_decision("web", "scale"))
        .await;
    assert_eq!(
        (second.from, second.to),
        (Some(6), Some(8)),
        "{}",
        second.reason
    );
    wait_capacity(&client, "web", 8).await;
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_beats_down_when_they_arrive_on_separate_subjects_at_one_instant() {
    // Issue 8: a cpu down sample, then a queue_depth up sample on its own
    // subject with the same ts, used to act twice (4 -> 3, then 3 -> 5).
    let policy = r#"
metrics: {cpu: {unit: percent}}
targets:
  web: {rules: [cpu, queue], min: 1, max: 20, backend: {sim: {initial: 4, warmup_secs: 0}}}
horizontal_scaling_rules:
  cpu:
    scale_up: {condition: "avg_cpu > 70%", action: "add 2 instances"}
    scale_down: {condition: "avg_cpu < 30%", action: "remove 1 instance", cooldown: 0}
  queue:
    scale_up: {condition: "queue_depth > 1000", action: "add 2 instances", cooldown: 60}
"#;
    let policy = Arc::new(from_yaml(policy, "updown.yaml").expect("policy"));
    let nats = NatsServer::start().await;
    let client = nats.client().await;
    let mut audit = AuditReader::new(&client).await;
    let pipeline = Pipeline::start(&nats, policy).await;
    wait_capacity(&client, "web", 4).await;
    let ts = nova_runtime::now_ms() - 60_000;
    let sample = |value: f64, ts: i64| rmp_serde::to_vec_named(&json!({"value": value, "ts": ts}));
    publish(
        &client,
        subjects::metrics("web", "cpu"),
        sample(10.0, ts).unwrap(),
        false,
    )
    .await;
    publish(
        &client,
        subjects::metrics("web", "queue_depth"),
        sample(1500.0, ts).unwrap(),
        false,
    )
    .await;
    // A marker: 30 s later (event time) the queue rule fires again, into its
    // cooldown. The evaluator publishes in event-time order and the arbiter
    // decides in stream order, so whatever the first instant produced is
    // decided before the marker.
    publish(
        &client,
        subjects::metrics("web", "queue_depth"),
        sample(1500.0, ts + 30_000).unwrap(),
        false,
    )
    .await;
    audit
        .wait_for("the marker's decision", |r| {
            r.kind == AuditKind::Decision && r.ts == ts + 30_000
        })
        .await;
    let decisions: Vec<(&str, Option<u32>, Option<u32>, Option<&str>)> = audit
        .seen
        .iter()
        .filter(|r| r.kind == AuditKind::Decision)
        .map(|r| (r.outcome.as_str(), r.from, r.to, r.rule.as_deref()))
        .collect();
    assert_eq!(
        decisions,
        [
            ("scale", Some(4), Some(6), Some("queue.scale_up")),
            ("cooldown", Some(6), Some(6), Some("queue.scale_up")),
        ],
        "one decision for the instant, up winning: {:#?}",
        audit.seen
    );
    // The down did fire, and reached the arbiter in the up's trigger.
    let fired = |rule: &str| {
        audit
            .seen
            .iter()
            .find(|r| r.kind == AuditKind::Trigger && r.ts == ts && r.rule.as_deref() == Some(rule))
            .unwrap_or_else(|| panic!("{rule} fired: {:#?}", audit.seen))
            .trigger_id
            .clone()
    };
    let decision = audit
        .seen
        .iter()
        .find(|r| r.kind == AuditKind::Decision)
        .expect("decision");
    assert_eq!(fired("cpu.scale_down"), decision.trigger_id);
    assert_eq!(fired("queue.scale_up"), decision.trigger_id);
    let commands: Vec<Command> = stream_messages(&client, COMMANDS_STREAM).await;
    let steps: Vec<(u32, u32)> = commands.iter().map(|c| (c.from, c.desired)).collect();
    assert_eq!(steps, [(4, 6)], "one command");
    wait_capacity(&client, "web", 6).await;
    pipeline.stop().await;
}

/// Asks an actuator for `target`'s capacity (`nova.ctl.capacity`), as the
/// arbiter does for a target it has never seen.
async fn ask_capacity(client: &async_nats::Client, target: &str) -> CapacityAnswer {
    let reply = within(
        "an actuator's capacity answer",
        WAIT,
        client.request(
            subjects::control(CAPACITY_VERB),
            target.to_string().into_bytes().into(),
        ),
    )
    .await
    .expect("an actuator answers");
    codec::decode(&reply.payload, codec::Encoding::MsgPack).expect("capacity answer")
}

/// Writes the simulated fleet's state of `target` as the next reader sees it.
async fn put_sim_state(client: &async_nats::Client, target: &str, state: &SimState) {
    let js = async_nats::jetstream::new(client.clone());
    let store = js.get_key_value(SIM_BUCKET).await.expect("sim bucket");
    let payload = codec::encode(state).expect("encode sim state");
    within(
        "the sim state written",
        WAIT,
        store.put(target, payload.into()),
    )
    .await
    .expect("put sim state");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_reading_older_than_the_last_change_is_not_stored() {
    // Issue 10's long chaos runs: after a two-node outage, an observation
    // read the simulated fleet's state as it was five commands before, and
    // stored it over the record of the last change; the arbiter's base went
    // back and those five steps were asked again. The fleet's state now
    // carries the sequence of the command that set it (a fencing token),
    // and a reading with an older token than the one stored is refused.
    let policy = r#"
targets:
  web: {rules: [cpu], max: 20, backend: {sim: {initial: 2, warmup_secs: 0}}}
horizontal_scaling_rules:
  cpu:
    scale_up: {condition: "avg_cpu > 70%", action: "add 2 instances"}
"#;
    let policy = Arc::new(from_yaml(policy, "fence.yaml").expect("policy"));
    let nats = NatsServer::start().await;
    let client = nats.client().await;
    let pipeline = Pipeline::start(&nats, policy).await;
    wait_capacity(&client, "web", 2).await;
    let request = ControlRequest::Scale(ScaleRequest {
        target: "web".into(),
        desired: 6,
        reason: Some("fencing test".into()),
        force: false,
    });
    let reply = control(&client, request).await;
    assert!(reply.ok, "{}", reply.message);
    let changed = wait_capacity_where(&client, "web", "web at 6 with its fence", |r| {
        r.desired == 6 && r.applied_seq > 0
    })
    .await;
    assert_eq!(changed.fence, Some(changed.applied_seq), "{changed:?}");

    // A copy of the state that has not seen the change: what a follower, a
    // deposed leader or a lost write answers.
    let before_the_change = SimState {
        desired: 2,
        previous: 2,
        changed_ms: nova_runtime::now_ms(),
        tier: None,
        seq: 0,
    };
    put_sim_state(&client, "web", &before_the_change).await;
    match ask_capacity(&client, "web").await {
        CapacityAnswer::Error(error) => assert!(
            error.contains(
                "read from a stale copy (it was last set by command 0, older than command"
            ),
            "{error}"
        ),
        CapacityAnswer::Capacity(record) => panic!("a stale reading was stored: {record:?}"),
    }
    let kept = wait_capacity_where(&client, "web", "the record kept", |_| true).await;
    assert_eq!((kept.desired, kept.fence), (6, changed.fence), "{kept:?}");

    // A change made outside the autoscaler keeps the token: it is read.
    let outside = SimState {
        desired: 7,
        seq: changed.applied_seq,
        ..before_the_change
    };
    put_sim_state(&client, "web", &outside).await;
    match ask_capacity(&client, "web").await {
        CapacityAnswer::Capacity(record) => assert_eq!(record.desired, 7, "{record:?}"),
        CapacityAnswer::Error(error) => panic!("a current reading was refused: {error}"),
    }
    wait_capacity(&client, "web", 7).await;
    pipeline.stop().await;
}
