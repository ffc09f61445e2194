//! The services as separate processes, as they are deployed, with the
//! backend's calls counted from outside by a proxy in front of moto.
//!
//! - Actuator replicas (two and three, with and without SIGKILLs) apply each
//!   target's commands in decision order: the sequence of UpdateService
//!   calls per service never goes down, never overlaps, and ends at the last
//!   decision; every command has exactly one result.
//! - An actuator without AWS credentials says so in one line, and the
//!   arbiter's decision and `status` name the cause.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use nova_e2e::process::ServiceProcess;
use nova_e2e::proxy::CountingProxy;
use nova_e2e::{
    AuditReader, Dice, MotoServer, NatsServer, WAIT, control, stream_first, stream_messages,
    wait_ready,
};
use nova_runtime::nats::{COMMANDS_STREAM, RESULTS_STREAM};
use nova_runtime::publish;
use nova_shared::policy::from_yaml;
use nova_shared::subjects;
use nova_shared::wire::{
    ActionResult, AuditKind, AuditRecord, Command, ControlRequest, ResultStatus, ScaleRequest,
    Stage, Trigger,
};

const CLUSTER: &str = "replicas";

/// A policy of `targets` ECS services behind `endpoint`, each with one rule
/// that adds 1 with no cooldown, so every trigger is one step.
fn policy_file(endpoint: &str, targets: usize) -> tempfile::NamedTempFile {
    let mut yaml = String::from("targets:\n");
    for i in 0..targets {
        yaml.push_str(&format!(
            "  t{i}:\n    rules: [grow]\n    max: 1000\n    backend:\n      ecs: {{ region: us-east-1, cluster: {CLUSTER}, service: svc{i}, endpoint_url: \"{endpoint}\" }}\n"
        ));
    }
    yaml.push_str(
        "horizontal_scaling_rules:\n  grow:\n    scale_up:\n      condition: \"queue_depth > 10\"\n      action: \"add 1 instance\"\n      cooldown: 0\n      max_instances: 1000\n",
    );
    from_yaml(&yaml, "replicas.yaml").expect("test policy is valid");
    let file = tempfile::NamedTempFile::new().expect("temp policy");
    std::fs::write(file.path(), yaml).expect("write policy");
    file
}

fn grow(target: &str, round: u32, t0: i64) -> Trigger {
    nova_e2e::grow_trigger(
        target,
        format!("burst-{target}-{round}"),
        t0 + i64::from(round) * 1000,
        format!("burst round {round}"),
    )
}

const ACTUATOR_FLAGS: [&str; 2] = ["--call-timeout-secs", "2"];

/// The topology of these tests: the arbiters' ack wait 2 s (the harness's),
/// the actuators' 6 s, three times their 2 s call timeout, so a killed
/// actuator's command goes to another replica soon.
fn settings() -> nova_runtime::provision::Settings {
    nova_runtime::provision::Settings {
        actuator_ack_wait: Duration::from_secs(6),
        ..nova_e2e::test_settings()
    }
}
const MOTO_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", "us-east-1"),
];

/// Bursts of one-step triggers for `targets` targets, decided by two
/// arbiter processes and applied by `actuators` actuator processes, with
/// `kills` SIGKILLs of random actuators (each restarted at once).
async fn replicas_apply_in_decision_order(actuators: usize, kills: u32, seed: u64) {
    const TARGETS: usize = 5;
    const ROUNDS: u32 = 24;
    const START: i32 = 1;
    let (nats, moto) = tokio::join!(NatsServer::start(), MotoServer::start());
    let proxy = CountingProxy::start(&moto.endpoint).await;
    let ecs = moto.ecs_service(CLUSTER, "svc0", START).await;
    for i in 1..TARGETS {
        moto.ecs_service_in_cluster(CLUSTER, &format!("svc{i}"), START)
            .await;
    }
    let client = nats.client_with(&settings()).await;
    let mut audit = AuditReader::new(&client).await;
    let policy = policy_file(&proxy.endpoint, TARGETS);
    let start_actuator = || {
        ServiceProcess::stage(
            Stage::Actuator,
            &nats.url,
            policy.path(),
            &ACTUATOR_FLAGS,
            &MOTO_ENV,
        )
    };
    let mut running: Vec<ServiceProcess> = (0..actuators).map(|_| start_actuator()).collect();
    let _arbiters: Vec<ServiceProcess> = (0..2)
        .map(|_| ServiceProcess::stage(Stage::Arbiter, &nats.url, policy.path(), &[], &[]))
        .collect();
    wait_ready(&nats.url, Stage::Actuator, actuators).await;
    wait_ready(&nats.url, Stage::Arbiter, 2).await;

    let js = async_nats::jetstream::new(client.clone());
    let t0 = nova_runtime::now_ms() - 60_000;
    for round in 0..ROUNDS {
        for i in 0..TARGETS {
            let trigger = grow(&format!("t{i}"), round, t0);
            publish::publish_once(
                &js,
                subjects::triggers(&trigger.target),
                &trigger.id,
                &trigger,
            )
            .await
            .expect("publish trigger");
        }
    }

    // Crashes while the commands flow: a random actuator is killed where it
    // stands and a fresh one started in its place.
    let mut dice = Dice(seed);
    for _ in 0..kills {
        let pause = Duration::from_millis(150 + dice.below(450));
        // Pacing of the fault injection, not a wait for any result.
        tokio::time::sleep(pause).await;
        let victim = usize::try_from(dice.below(actuators as u64)).expect("index");
        running[victim].kill().await;
        running[victim] = start_actuator();
    }

    // Every trigger decided, and every command answered by one result.
    let expected = TARGETS * ROUNDS as usize;
    let mut decided = 0;
    while decided < expected {
        audit
            .wait_for("every trigger's decision", |r| {
                r.kind == AuditKind::Decision
            })
            .await;
        decided += 1;
    }
    // Two arbiters may decide a target's triggers out of event-time order;
    // one older than the last action is then `superseded`, so count the
    // steps actually decided.
    let decisions: Vec<AuditRecord> = audit
        .seen
        .iter()
        .filter(|r| r.kind == AuditKind::Decision)
        .cloned()
        .collect();
    assert!(
        decisions
            .iter()
            .all(|d| d.outcome == "scale" || d.outcome == "superseded"),
        "every one-step trigger scales, or is older than the last step: {:?}",
        decisions
            .iter()
            .map(|d| (&d.target, &d.outcome, &d.reason))
            .collect::<Vec<_>>()
    );
    let scaled = |target: &str| {
        decisions
            .iter()
            .filter(|d| d.target == target && d.outcome == "scale")
            .count()
    };
    let scales: usize = (0..TARGETS).map(|i| scaled(&format!("t{i}"))).sum();
    let limit = WAIT * 3;
    let commands: Vec<Command> = stream_first(&client, COMMANDS_STREAM, scales, limit).await;
    let results: Vec<ActionResult> = stream_first(&client, RESULTS_STREAM, scales, limit).await;
    // And no more than that: one command and one result per decision.
    assert_eq!(
        stream_messages::<Command>(&client, COMMANDS_STREAM)
            .await
            .len(),
        scales
    );
    assert_eq!(
        stream_messages::<ActionResult>(&client, RESULTS_STREAM)
            .await
            .len(),
        scales
    );
    let audited = |audit: &AuditReader| {
        audit
            .seen
            .iter()
            .filter(|r| r.kind == AuditKind::Result)
            .count()
    };
    while audited(&audit) < results.len() {
        audit
            .wait_for("every result's audit record", |r| {
                r.kind == AuditKind::Result
            })
            .await;
    }
    assert_eq!(
        audited(&audit),
        results.len(),
        "one audited result per command"
    );
    let mut result_of: HashMap<&str, &ActionResult> = HashMap::new();
    for result in &results {
        assert!(
            result_of.insert(&result.decision_id, result).is_none(),
            "two results for decision {}",
            result.decision_id
        );
    }

    let calls = proxy.calls("UpdateService");
    for i in 0..TARGETS {
        let (target, service) = (format!("t{i}"), format!("svc{i}"));
        let mut by_seq: BTreeMap<u64, &Command> = BTreeMap::new();
        for command in commands.iter().filter(|c| c.target == target) {
            by_seq.insert(command.seq, command);
        }
        let desired: Vec<u32> = by_seq.values().map(|c| c.desired).collect();
        let steps = u32::try_from(scaled(&target)).expect("steps");
        assert!(steps > 0, "{target}: no step decided");
        let want: Vec<u32> = (1..=steps).map(|n| START as u32 + n).collect();
        assert_eq!(
            desired, want,
            "{target}: each decision one step up, none lost or doubled"
        );
        let last = i64::from(START) + i64::from(steps);
        let backend: Vec<(i64, usize)> = calls
            .iter()
            .filter(|c| c.resource() == Some(service.as_str()))
            .map(|c| (c.body["desiredCount"].as_i64().unwrap_or(-1), c.concurrent))
            .collect();
        let counts: Vec<i64> = backend.iter().map(|(n, _)| *n).collect();
        assert!(
            counts.windows(2).all(|w| w[0] <= w[1]),
            "{target}: the backend saw a command after a newer one: {counts:?}"
        );
        assert!(
            backend.iter().all(|(_, overlap)| *overlap == 1),
            "{target}: two UpdateService calls overlapped: {backend:?}"
        );
        assert_eq!(
            counts.last().copied(),
            Some(last),
            "{target}: the last change is the last decision: {counts:?}"
        );
        let service = service.as_str();
        let now = nova_e2e::ecs_desired(&ecs, CLUSTER, service).await;
        assert_eq!(
            i64::from(now),
            last,
            "{target}: ECS ends at the last decision"
        );
        let succeeded: Vec<&ActionResult> = results
            .iter()
            .filter(|r| r.target == target && r.status == ResultStatus::Succeeded)
            .collect();
        for result in &succeeded {
            assert!(
                result.response.contains(&format!("-> {}", result.desired)),
                "{target}: a result states what the backend reported: {result:?}"
            );
        }
        if kills == 0 {
            assert!(
                counts.windows(2).all(|w| w[0] < w[1]),
                "{target}: without crashes no change is sent twice: {counts:?}"
            );
            assert_eq!(
                counts.len(),
                succeeded.len(),
                "{target}: one call per success"
            );
        }
        for result in results.iter().filter(|r| r.target == target) {
            assert!(
                matches!(
                    result.status,
                    ResultStatus::Succeeded | ResultStatus::Superseded | ResultStatus::Skipped
                ),
                "{target}: {result:?}"
            );
        }
    }
    let count = |status| results.iter().filter(|r| r.status == status).count();
    eprintln!(
        "{actuators} actuators, {kills} kills: {} commands, {} UpdateService calls, {} succeeded, {} superseded, {} skipped",
        commands.len(),
        calls.len(),
        count(ResultStatus::Succeeded),
        count(ResultStatus::Superseded),
        count(ResultStatus::Skipped),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_actuator_processes_apply_each_targets_commands_in_decision_order() {
    replicas_apply_in_decision_order(2, 0, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_actuator_processes_keep_decision_order_across_sigkills() {
    replicas_apply_in_decision_order(3, 6, 0x9e37_79b9_7f4a_7c15).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_actuator_processes_keep_decision_order_across_sigkills() {
    replicas_apply_in_decision_order(2, 4, 0x2545_f491_4f6c_dd1d).await;
}

/// An actuator without AWS credentials: one line naming the target, the
/// providers tried and what to set; the arbiter's decision and `status`
/// say the backend cannot be read and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_aws_credentials_are_one_clear_line_and_named_in_the_decision() {
    let (nats, moto) = tokio::join!(NatsServer::start(), MotoServer::start());
    moto.ecs_service(CLUSTER, "svc0", 2).await;
    let client = nats.client_with(&settings()).await;
    let mut audit = AuditReader::new(&client).await;
    let policy = policy_file(&moto.endpoint, 1);
    let actuator = ServiceProcess::stage(
        Stage::Actuator,
        &nats.url,
        policy.path(),
        &ACTUATOR_FLAGS,
        &[],
    );
    let _arbiter = ServiceProcess::stage(Stage::Arbiter, &nats.url, policy.path(), &[], &[]);
    wait_ready(&nats.url, Stage::Actuator, 1).await;
    wait_ready(&nats.url, Stage::Arbiter, 1).await;

    let line = actuator.wait_line("no AWS credentials").await;
    for needed in [
        "target t0",
        "environment variables",
        "AWS_ACCESS_KEY_ID",
        "AWS_PROFILE",
    ] {
        assert!(line.contains(needed), "{needed:?} missing from {line:?}");
    }
    let longest = actuator
        .stderr
        .lock()
        .expect("stderr")
        .iter()
        .max_by_key(|l| l.len())
        .cloned()
        .unwrap_or_default();
    assert!(
        longest.len() < 600,
        "no wall of SDK text: the longest log line is {longest:?}"
    );

    let request = ControlRequest::Scale(ScaleRequest {
        target: "t0".into(),
        desired: 4,
        reason: None,
        force: false,
    });
    let reply = control(&client, request).await;
    assert!(reply.ok, "{}", reply.message);
    let decision = audit
        .wait_for("the decision on t0", |r| r.kind == AuditKind::Decision)
        .await;
    assert_eq!(decision.outcome, "unknown_capacity");
    assert!(
        decision.reason.contains("its backend cannot be read")
            && decision.reason.contains("no AWS credentials"),
        "{}",
        decision.reason
    );
    assert!(
        !decision.reason.contains("has not reported"),
        "{}",
        decision.reason
    );

    let reply = control(&client, ControlRequest::status(Some("t0".into()))).await;
    let error = reply.targets[0]
        .backend_error
        .as_deref()
        .unwrap_or_default();
    assert!(error.contains("no AWS credentials"), "status: {reply:?}");

    // The same through the operator's command line, as a program reads it.
    let out = tokio::process::Command::new(nova_e2e::process::binary("novactl"))
        .args(["status", "t0", "--output", "json", "--nats-url", &nats.url])
        .output()
        .await
        .expect("novactl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    let error = json["targets"][0]["backend_error"]
        .as_str()
        .unwrap_or_default();
    assert!(error.contains("no AWS credentials"), "{json}");
}
