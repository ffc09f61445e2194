//! RDS read replicas as a target, on moto's server through the official
//! SDK: the pipeline drives a primary from 1 to 3 replicas on rule triggers
//! and back to 1, a command delivered again adds nothing, the backend
//! applied twice creates each replica once, and a drain longer than the
//! consumer's ack wait keeps its command (no redelivery mid-drain). Every assertion on capacity
//! reads DescribeDBInstances, never what the code believes.
//!
//! moto's quirks this relies on: a new replica is `available` on the first
//! read of it, and a deleted one is gone from DescribeDBInstances at once
//! (no `deleting` phase to wait through). moto also does not refuse a
//! second CreateDBInstanceReadReplica of an existing name (AWS answers
//! `DBInstanceAlreadyExists`), so the tests count replicas by name rather
//! than count calls.

use std::sync::Arc;
use std::time::Duration;

use nova_actuator::backend::BackendErrorKind;
use nova_actuator::rds::RdsReplicaSet;
use nova_e2e::{
    AuditReader, MotoServer, NatsServer, Pipeline, WAIT, control, publish, stream_first,
    stream_messages, within,
};
use nova_runtime::nats::{ACTUATOR_CONSUMER, COMMANDS_STREAM, RESULTS_STREAM};
use nova_runtime::{publish as publish_stream, shutdown};
use nova_shared::codec;
use nova_shared::policy::{Backend, Policy, from_yaml};
use nova_shared::subjects;
use nova_shared::wire::{
    ActionResult, AuditKind, AuditRecord, Command, ControlRequest, DirectionRequest, Extra,
    PromoteRequest, ResultStatus, Stage, Version,
};
use serde_json::json;

const PRIMARY: &str = "orders-db";

/// A replica made outside NovaCron.
async fn create_replica(rds: &aws_sdk_rds::Client, id: &str) {
    rds.create_db_instance_read_replica()
        .db_instance_identifier(id)
        .source_db_instance_identifier(PRIMARY)
        .send()
        .await
        .expect("create replica");
}

/// The primary and its replicas 1 to 3, named as NovaCron names them.
async fn primary_with_three_replicas(rds: &aws_sdk_rds::Client) {
    nova_e2e::rds_primary(rds, PRIMARY).await;
    for id in names(&[1, 2, 3]) {
        create_replica(rds, &id).await;
    }
}

fn policy(endpoint: &str) -> Arc<Policy> {
    // Cooldowns 0 so the scale-down follows the scale-up at once; a 1 s
    // drain so the scale-down goes through the wait.
    let yaml = format!(
        r#"
targets:
  db:
    rules: [reads]
    backend:
      rds_replicas: {{ region: us-east-1, primary: {PRIMARY}, endpoint_url: "{endpoint}", drain_secs: 1 }}
horizontal_scaling_rules:
  reads:
    scale_up:   {{ condition: "read_queue > 100", action: "add 2 replicas", cooldown: 0, max_replicas: 5 }}
    scale_down: {{ condition: "read_queue < 10", action: "remove 2 replicas", cooldown: 0, min_replicas: 1 }}
"#
    );
    Arc::new(from_yaml(&yaml, "rds.yaml").unwrap_or_else(|e| panic!("{e}")))
}

fn read_queue(value: f64, ts: i64) -> Vec<u8> {
    rmp_serde::to_vec_named(&json!({"value": value, "ts": ts})).expect("encode")
}

fn is_result(outcome: &'static str) -> impl Fn(&AuditRecord) -> bool {
    move |r| r.target == "db" && r.kind == AuditKind::Result && r.outcome == outcome
}

/// The stream sequence up to which the actuator's consumer has acked all.
async fn acked_through(client: &async_nats::Client) -> u64 {
    nova_e2e::consumer_info(client, COMMANDS_STREAM, ACTUATOR_CONSUMER)
        .await
        .ack_floor
        .stream_sequence
}

fn names(ns: &[u32]) -> Vec<String> {
    ns.iter()
        .map(|n| format!("{PRIMARY}-replica-{n}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_triggers_take_a_replica_set_from_1_to_3_and_back_and_a_redelivery_adds_none() {
    let (nats, moto) = tokio::join!(NatsServer::start(), MotoServer::start());
    let rds = moto.rds();
    nova_e2e::rds_primary(&rds, PRIMARY).await;
    create_replica(&rds, &format!("{PRIMARY}-replica-1")).await;
    let client = nats.client().await;
    let mut audit = AuditReader::new(&client).await;
    let pipeline = Pipeline::start(&nats, policy(&moto.endpoint)).await;
    let t0 = nova_runtime::now_ms() - 120_000;

    publish(
        &client,
        subjects::metrics("db", "read_queue"),
        read_queue(500.0, t0),
        false,
    )
    .await;
    let up = audit
        .wait_for("the scale-up's result", is_result("succeeded"))
        .await;
    assert_eq!((up.from, up.to), (Some(1), Some(3)), "{up:?}");
    assert_eq!(
        nova_e2e::rds_replicas(&rds, PRIMARY).await,
        names(&[1, 2, 3])
    );
    let response = up.backend_response.as_deref().unwrap_or_default();
    assert!(
        response.contains("read replicas 1 -> 3")
            && response.contains("created orders-db-replica-2, orders-db-replica-3"),
        "{response}"
    );

    // The same command delivered again (published anew, as a redelivery
    // after a lost ack is): the actuator finds it applied and acks it; its
    // result and audit record share the first's ids, so JetStream keeps
    // only the first. RDS keeps three replicas.
    let commands: Vec<Command> = stream_messages(&client, COMMANDS_STREAM).await;
    assert_eq!(commands.len(), 1, "{commands:?}");
    let js = async_nats::jetstream::new(client.clone());
    let again = codec::encode(&commands[0]).expect("encode");
    let stored = js
        .publish(subjects::commands("db"), again.into())
        .await
        .expect("publish")
        .await
        .expect("stored");
    within("the actuator to ack the redelivered command", WAIT, async {
        while acked_through(&client).await < stored.sequence {
            // A broker-side counter; there is no event for it.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(
        nova_e2e::rds_replicas(&rds, PRIMARY).await,
        names(&[1, 2, 3])
    );

    publish(
        &client,
        subjects::metrics("db", "read_queue"),
        // Past the arbiter's hold on scale-downs after a scale-up firing
        // (twice max(D, refire_secs) = 60 s of event time).
        read_queue(1.0, t0 + 61_000),
        false,
    )
    .await;
    let down = audit
        .wait_for("the scale-down's result", |r| {
            is_result("succeeded")(r) && r.decision_id != up.decision_id
        })
        .await;
    assert_eq!((down.from, down.to), (Some(3), Some(1)), "{down:?}");
    // The newest (highest-numbered) go first.
    assert_eq!(nova_e2e::rds_replicas(&rds, PRIMARY).await, names(&[1]));
    let response = down.backend_response.as_deref().unwrap_or_default();
    assert!(
        response.contains("read replicas 3 -> 1")
            && response
                .contains("deleted orders-db-replica-3, orders-db-replica-2 after a 1 s drain"),
        "{response}"
    );

    // One result per decision, each from the rds backend.
    let results: Vec<ActionResult> = stream_messages(&client, RESULTS_STREAM).await;
    let statuses: Vec<(ResultStatus, u32)> = results
        .iter()
        .map(|r| (r.status.clone(), r.desired))
        .collect();
    assert_eq!(
        statuses,
        [(ResultStatus::Succeeded, 3), (ResultStatus::Succeeded, 1)]
    );
    assert!(
        results.iter().all(|r| r.backend == "rds_replicas"),
        "{results:?}"
    );
    pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_applied_twice_creates_each_replica_once_and_removes_only_its_own() {
    let moto = MotoServer::start().await;
    let rds = moto.rds();
    let yaml = format!(
        "targets:\n  db:\n    rules: [g]\n    max: 5\n    backend:\n      rds_replicas: {{region: us-east-1, primary: {PRIMARY}, endpoint_url: \"{}\", drain_secs: 0}}\nhorizontal_scaling_rules:\n  g:\n    scale_up: {{condition: \"read_queue > 100\", action: \"add 1 replica\"}}\n",
        moto.endpoint
    );
    let policy = from_yaml(&yaml, "rds.yaml").unwrap_or_else(|e| panic!("{e}"));
    let Backend::RdsReplicas(spec) = &policy.targets["db"].backend else {
        panic!("an rds_replicas backend");
    };
    let client = nova_actuator::rds::client(
        "us-east-1",
        Some(&moto.endpoint),
        Duration::from_secs(10),
        Some(&MotoServer::credentials()),
    )
    .await;
    let set = RdsReplicaSet::new(client, "db", spec);

    // No primary yet: one line that says what to do.
    let missing = set.observe().await.expect_err("no primary");
    assert_eq!(missing.kind(), BackendErrorKind::NotFound);
    assert_eq!(
        missing.to_string(),
        "target db: RDS DB instance orders-db not found in us-east-1; create it, or name an \
         existing instance as the backend's primary"
    );

    nova_e2e::rds_primary(&rds, PRIMARY).await;
    // A reader made by hand counts as capacity, and is never removed.
    create_replica(&rds, "orders-db-reader").await;
    let first = set.set_desired(3).await.expect("first apply");
    assert_eq!(
        (first.before.map(|b| b.desired), first.after.desired),
        (Some(1), 3)
    );
    let mut want = vec!["orders-db-reader".to_string()];
    want.extend(names(&[1, 2]));
    assert_eq!(nova_e2e::rds_replicas(&rds, PRIMARY).await, want);
    // Applied again, as after a redelivery whose first delivery's outcome
    // was never recorded: nothing more is created.
    let second = set.set_desired(3).await.expect("second apply");
    assert_eq!(second.after.desired, 3);
    assert!(
        second.response.ends_with("nothing to change"),
        "{}",
        second.response
    );
    assert_eq!(nova_e2e::rds_replicas(&rds, PRIMARY).await, want);

    let down = set.set_desired(0).await.expect("down");
    assert_eq!(
        nova_e2e::rds_replicas(&rds, PRIMARY).await,
        ["orders-db-reader"]
    );
    assert_eq!(
        down.response,
        "RDS orders-db read replicas 3 -> 1 (available 1): deleted orders-db-replica-2, \
         orders-db-replica-1 after a 0 s drain; 1 replica(s) not named orders-db-replica-<n> \
         were kept: NovaCron removes only replicas it names"
    );
    // The lowest free numbers are taken again.
    set.set_desired(2).await.expect("up again");
    assert_eq!(
        nova_e2e::rds_replicas(&rds, PRIMARY).await,
        ["orders-db-reader", "orders-db-replica-1"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_longer_than_the_ack_wait_keeps_its_command() {
    let (nats, moto) = tokio::join!(NatsServer::start(), MotoServer::start());
    let rds = moto.rds();
    nova_e2e::rds_primary(&rds, PRIMARY).await;
    for n in 1..=3 {
        create_replica(&rds, &format!("{PRIMARY}-replica-{n}")).await;
    }
    // The actuator consumer's ack wait, 3 s, is shorter than the 4 s drain:
    // without progress acks the command would be handed out again mid-drain.
    let client = nats
        .client_with(&nova_runtime::provision::Settings {
            actuator_ack_wait: Duration::from_secs(3),
            ..nova_e2e::test_settings()
        })
        .await;
    let yaml = format!(
        "targets:\n  db:\n    rules: [g]\n    max: 5\n    backend:\n      rds_replicas: {{region: us-east-1, primary: {PRIMARY}, endpoint_url: \"{}\", drain_secs: 4}}\nhorizontal_scaling_rules:\n  g:\n    scale_up: {{condition: \"read_queue > 100\", action: \"add 1 replica\"}}\n",
        moto.endpoint
    );
    let policy = Arc::new(from_yaml(&yaml, "rds.yaml").unwrap_or_else(|e| panic!("{e}")));
    // A 1 s call timeout: the actuator needs an ack wait of three times it.
    let mut config = nova_actuator::Config::new(policy);
    config.call_timeout = Duration::from_secs(1);
    config.aws_credentials = Some(MotoServer::credentials());
    let (stop, signal) = shutdown::channel();
    // Connected only: provisioning again would put the default ack wait back.
    let actuator_client = nova_e2e::connect(&nats.url, "actuator").await;
    let actuator = tokio::spawn(async move {
        nova_actuator::run(config, actuator_client, signal.signal())
            .await
            .expect("actuator");
    });
    nova_e2e::wait_ready(&nats.url, Stage::Actuator, 1).await;
    let js = async_nats::jetstream::new(client.clone());
    let command = Command {
        v: Version::CURRENT,
        decision_id: "d-db-1".into(),
        seq: 1,
        ts: nova_runtime::now_ms(),
        target: "db".into(),
        from: 3,
        desired: 1,
        tier: None,
        promote: None,
        rule: None,
        reason: "test: drain past the ack wait".into(),
        extra: Extra::new(),
    };
    publish_stream::publish_once(
        &js,
        subjects::commands("db"),
        &command.decision_id,
        &command,
    )
    .await
    .expect("publish command");
    let results: Vec<ActionResult> = stream_first(&client, RESULTS_STREAM, 1, WAIT).await;
    assert_eq!(results[0].status, ResultStatus::Succeeded, "{results:?}");
    assert!(
        results[0].response.contains("after a 4 s drain"),
        "{}",
        results[0].response
    );
    assert_eq!(nova_e2e::rds_replicas(&rds, PRIMARY).await, names(&[1]));
    let info = nova_e2e::consumer_info(&client, COMMANDS_STREAM, ACTUATOR_CONSUMER).await;
    assert_eq!(info.config.ack_wait, Duration::from_secs(3), "the premise");
    assert_eq!(
        (info.delivered.consumer_sequence, info.num_redelivered),
        (1, 0),
        "delivered once, never again: {info:?}"
    );
    stop.trigger();
    within("the actuator to stop", WAIT, actuator)
        .await
        .expect("actuator task");
}

/// The backup retention DescribeDBInstances reports for `id`.
async fn backup_days(rds: &aws_sdk_rds::Client, id: &str) -> Option<i32> {
    rds.describe_db_instances()
        .db_instance_identifier(id)
        .send()
        .await
        .expect("describe instance")
        .db_instances()
        .first()
        .and_then(|i| i.backup_retention_period())
}

/// `novactl promote` as it asks: PromoteReadReplica reaches RDS once, with
/// the runbook's 7 days of backups, as a forced operator decision (past a
/// pause) whose command names the replica; a replica the primary does not
/// have fails at once, not retried; a target that is not a replica set is
/// refused by the arbiter in one line.
///
/// moto's quirk: PromoteReadReplica does not detach the replica (AWS
/// removes its ReadReplicaSourceDBInstanceIdentifier, so the set has one
/// fewer), so on moto the promoted replica is still listed as one. What the
/// call did is read back from DescribeDBInstances: the backup retention it
/// set, on that replica only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_promotes_one_replica_once_and_a_wrong_name_fails_at_once() {
    let (nats, moto) = tokio::join!(NatsServer::start(), MotoServer::start());
    let rds = moto.rds();
    primary_with_three_replicas(&rds).await;
    let yaml = format!(
        r#"
targets:
  db:
    rules: [reads]
    backend:
      rds_replicas: {{ region: us-east-1, primary: {PRIMARY}, endpoint_url: "{}", drain_secs: 0 }}
  web: {{ rules: [reads], backend: {{ sim: {{ initial: 2 }} }} }}
horizontal_scaling_rules:
  reads:
    scale_up:   {{ condition: "read_queue > 100", action: "add 1 replica", cooldown: 0, max_replicas: 5 }}
"#,
        moto.endpoint
    );
    let policy = Arc::new(from_yaml(&yaml, "rds.yaml").unwrap_or_else(|e| panic!("{e}")));
    let client = nats.client().await;
    let mut audit = AuditReader::new(&client).await;
    let pipeline = Pipeline::start(&nats, policy).await;
    let promote = |target: &str, replica: &str| {
        ControlRequest::Promote(PromoteRequest {
            target: target.into(),
            replica: replica.into(),
            reason: Some("failover drill, on call".into()),
        })
    };

    // A pause does not stop an operator's promote.
    let paused = control(
        &client,
        ControlRequest::Pause(DirectionRequest {
            target: "db".into(),
            direction: None,
            reason: None,
        }),
    )
    .await;
    assert!(paused.ok, "{}", paused.message);
    let reply = control(&client, promote("db", "orders-db-replica-2")).await;
    assert!(reply.ok, "{}", reply.message);
    let promoted = audit
        .wait_for("the promote's result", is_result("succeeded"))
        .await;
    let response = promoted.backend_response.as_deref().unwrap_or_default();
    assert!(
        response.contains("promoted orders-db-replica-2 to a standalone instance"),
        "{response}"
    );
    let decision = audit
        .find_or_wait("the promote's decision", |r| {
            r.kind == AuditKind::Decision && r.decision_id == promoted.decision_id
        })
        .await;
    assert!(
        decision
            .reason
            .contains("operator asked to promote orders-db-replica-2 of db")
            && decision.reason.contains("failover drill"),
        "{}",
        decision.reason
    );
    let commands: Vec<Command> = stream_messages(&client, COMMANDS_STREAM).await;
    assert_eq!(
        commands
            .iter()
            .map(|c| (c.promote.as_deref(), c.from, c.desired))
            .collect::<Vec<_>>(),
        [(Some("orders-db-replica-2"), 3, 2)]
    );
    // Only the named replica was promoted (moto copies the primary's
    // retention, 1 day, into each replica).
    let days = [
        backup_days(&rds, "orders-db-replica-1").await,
        backup_days(&rds, "orders-db-replica-2").await,
        backup_days(&rds, "orders-db-replica-3").await,
    ];
    assert_eq!(days, [Some(1), Some(7), Some(1)]);

    // A replica the primary does not have: one failed result, at once.
    let reply = control(&client, promote("db", "orders-db-replica-9")).await;
    assert!(reply.ok, "{}", reply.message);
    let failed = audit
        .wait_for("the wrong promote's result", is_result("failed"))
        .await;
    let said = format!(
        "{} / {}",
        failed.reason,
        failed.backend_response.as_deref().unwrap_or_default()
    );
    assert!(
        said.contains("orders-db-replica-9 is not a read replica of orders-db (its replicas: orders-db-replica-1, orders-db-replica-2, orders-db-replica-3)"),
        "{said}"
    );
    assert!(
        audit
            .seen
            .iter()
            .all(|r| !(r.decision_id == failed.decision_id && r.outcome == "retrying")),
        "a not-found is not retried"
    );

    // Only a replica set has replicas to promote.
    let refused = control(&client, promote("web", "web-1")).await;
    assert!(!refused.ok);
    assert_eq!(
        refused.error.as_deref(),
        Some(
            "promote of web refused: its backend is sim, and only an rds_replicas target has read replicas to promote"
        )
    );
    pipeline.stop().await;
}

fn replica_lag(ms: f64, ts: i64) -> Vec<u8> {
    rmp_serde::to_vec_named(&json!({"value": ms, "ts": ts})).expect("encode")
}

/// `max_replica_lag`: replication lag above the limit, published as
/// `replica_lag` samples (bare numbers in the limit's unit, ms), gives an
/// audited `replica_lag` decision and holds every removal while it lasts;
/// once the lag is back under the limit for the hold (twice the refire
/// interval of event time), the held scale-down goes through. Replicas are
/// counted with DescribeDBInstances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_lag_above_the_limit_holds_removals_until_it_subsides() {
    let (nats, moto) = tokio::join!(NatsServer::start(), MotoServer::start());
    let rds = moto.rds();
    primary_with_three_replicas(&rds).await;
    let yaml = format!(
        r#"
targets:
  db:
    rules: [reads]
    backend:
      rds_replicas: {{ region: us-east-1, primary: {PRIMARY}, endpoint_url: "{}", drain_secs: 0, max_replica_lag: 1000ms }}
horizontal_scaling_rules:
  reads:
    scale_up:   {{ condition: "read_queue > 100", action: "add 2 replicas", cooldown: 0, max_replicas: 5 }}
    scale_down: {{ condition: "read_queue < 10", action: "remove 2 replicas", cooldown: 0, min_replicas: 1 }}
"#,
        moto.endpoint
    );
    let policy = Arc::new(from_yaml(&yaml, "rds.yaml").unwrap_or_else(|e| panic!("{e}")));
    let client = nats.client().await;
    let mut audit = AuditReader::new(&client).await;
    let pipeline = Pipeline::start(&nats, policy).await;
    let t0 = nova_runtime::now_ms() - 600_000;
    let send = |metric: &'static str, payload: Vec<u8>| {
        let client = client.clone();
        async move { publish(&client, subjects::metrics("db", metric), payload, false).await }
    };
    let decision = |outcome: &'static str, rule: &'static str| {
        move |r: &AuditRecord| {
            r.target == "db"
                && r.kind == AuditKind::Decision
                && r.outcome == outcome
                && r.rule.as_deref() == Some(rule)
        }
    };

    send("replica_lag", replica_lag(2500.0, t0)).await;
    let alert = audit
        .wait_for(
            "the replica_lag alert",
            decision("replica_lag", "rds.max_replica_lag"),
        )
        .await;
    assert!(
        alert.reason.contains("max_replica_lag 2.5s > 1s")
            && alert
                .reason
                .contains("no replica is removed while it lasts"),
        "{}",
        alert.reason
    );

    // A removal while the lag lasts (the next sample releases the
    // scale-down the evaluator holds back for a later instant).
    send("read_queue", read_queue(1.0, t0 + 1_000)).await;
    send("replica_lag", replica_lag(2400.0, t0 + 2_000)).await;
    let held = audit
        .wait_for(
            "the held scale-down",
            decision("replica_lag", "reads.scale_down"),
        )
        .await;
    assert!(
        held.reason
            .contains("remove 2 suppressed: replication lag of db is above its limit"),
        "{}",
        held.reason
    );
    assert_eq!(
        nova_e2e::rds_replicas(&rds, PRIMARY).await,
        names(&[1, 2, 3])
    );

    // The lag back under the limit, past the hold: the removal goes through.
    send("replica_lag", replica_lag(100.0, t0 + 70_000)).await;
    send("read_queue", read_queue(1.0, t0 + 71_000)).await;
    send("replica_lag", replica_lag(100.0, t0 + 72_000)).await;
    let removed = audit
        .wait_for("the scale-down's result", is_result("succeeded"))
        .await;
    assert_eq!(
        (removed.from, removed.to),
        (Some(3), Some(1)),
        "{removed:?}"
    );
    assert_eq!(nova_e2e::rds_replicas(&rds, PRIMARY).await, names(&[1]));
    // The lag alert was audited once: the later firing only refreshed it.
    let alerts = audit
        .seen
        .iter()
        .filter(|r| decision("replica_lag", "rds.max_replica_lag")(r))
        .count();
    assert_eq!(alerts, 1);
    pipeline.stop().await;
}
