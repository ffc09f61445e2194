//! The runbook policy's database block (`deploy/policies/runbook.yaml`,
//! section 5 of the runbook) as written, driving moto's RDS through the
//! whole pipeline:
//! - target `database`: the primary's read replicas go 1 -> 2 -> 3 on the
//!   connection-usage rule and back 3 -> 2 -> 1, each replica created in the
//!   runbook's class (db.r5.xlarge) under its deterministic name, the newest
//!   removed first;
//! - target `database_primary`: the primary's class goes db.r5.large ->
//!   db.r5.xlarge -> db.r5.2xlarge, and stops at the top of the ladder.
//!
//! Only the endpoint (moto's) and the replicas' drain (1 s instead of the
//! runbook's 30 s) are changed from the file, and the other targets are
//! left out (they are ECS services and simulated fleets, tested elsewhere).
//! The triggers are published as the evaluator would send them, with event
//! times spaced past the rules' cooldowns, so the test does not wait for
//! them. Every assertion reads DescribeDBInstances.
//!
//! moto's quirks this relies on: a new replica is `available` at once, a
//! deleted one is gone at once, and ModifyDBInstance applies the class at
//! once (AWS keeps it pending while the instance is `modifying`).

use std::sync::Arc;

use aws_sdk_rds::types::{ApplyMethod, Parameter};
use nova_e2e::{AuditReader, MotoServer, NatsServer, Pipeline};
use nova_runtime::publish;
use nova_shared::policy::{Backend, Policy, load_file};
use nova_shared::subjects;
use nova_shared::wire::{
    AuditKind, AuditRecord, Direction, RuleFiring, ScaleAction, Trigger, TriggerSource, Version,
};

const PRIMARY: &str = "novacron-primary";

/// The runbook policy, pointed at moto, with its two database targets.
fn runbook(endpoint: &str) -> Arc<Policy> {
    let path = nova_e2e::workspace_root().join("deploy/policies/runbook.yaml");
    let mut policy = load_file(&path).unwrap_or_else(|e| panic!("{e}"));
    policy
        .targets
        .retain(|name, _| name == "database" || name == "database_primary");
    for target in policy.targets.values_mut() {
        match &mut target.backend {
            Backend::RdsReplicas(rds) => {
                assert_eq!(rds.primary, PRIMARY);
                assert_eq!(rds.instance_class.as_deref(), Some("db.r5.xlarge"));
                assert_eq!(rds.drain_secs, 30, "the runbook's drain");
                rds.endpoint_url = Some(endpoint.to_string());
                rds.drain_secs = 1;
            }
            Backend::RdsInstance(rds) => {
                assert_eq!(rds.instance, PRIMARY);
                rds.endpoint_url = Some(endpoint.to_string());
            }
            other => panic!("a database target with a {} backend", other.kind()),
        }
    }
    Arc::new(policy)
}

async fn create_primary(rds: &aws_sdk_rds::Client) {
    rds.create_db_instance()
        .db_instance_identifier(PRIMARY)
        .engine("postgres")
        .db_instance_class("db.r5.large")
        .allocated_storage(100)
        .master_username("novacron")
        .master_user_password("not-a-secret-1")
        .send()
        .await
        .expect("create primary");
    rds.create_db_instance_read_replica()
        .db_instance_identifier(format!("{PRIMARY}-replica-1"))
        .source_db_instance_identifier(PRIMARY)
        .db_instance_class("db.r5.xlarge")
        .send()
        .await
        .expect("create the first replica");
    create_parameter_group(rds).await;
}

/// The primary's class, and its replicas with their classes, sorted.
async fn described(rds: &aws_sdk_rds::Client) -> (String, Vec<(String, String)>) {
    let out = rds
        .describe_db_instances()
        .send()
        .await
        .expect("describe instances");
    let mut primary = String::new();
    let mut replicas = Vec::new();
    for db in out.db_instances() {
        let id = db.db_instance_identifier().unwrap_or_default().to_string();
        let class = db.db_instance_class().unwrap_or_default().to_string();
        if id == PRIMARY {
            primary = class;
        } else if db.read_replica_source_db_instance_identifier() == Some(PRIMARY) {
            replicas.push((id, class));
        }
    }
    replicas.sort();
    (primary, replicas)
}

/// One rule firing for `target` at event time `ts`, as the evaluator sends.
async fn fire(client: &async_nats::Client, target: &str, rule: &str, action: ScaleAction, ts: i64) {
    let direction = match action {
        ScaleAction::Remove(_) => Direction::Down,
        _ => Direction::Up,
    };
    let trigger = Trigger {
        v: Version::CURRENT,
        id: format!("{target}-{rule}-{ts}"),
        ts,
        target: target.into(),
        source: TriggerSource::Rule,
        firings: vec![RuleFiring {
            rule: rule.into(),
            direction,
            action,
            observed: None,
            threshold: None,
            condition: rule.into(),
            held_secs: 0,
            reason: format!("{rule} fired"),
        }],
        policy_revision: None,
        alert: None,
    };
    let js = async_nats::jetstream::new(client.clone());
    publish::publish_once(&js, subjects::triggers(target), &trigger.id, &trigger)
        .await
        .expect("publish trigger");
}

fn replica_set(classes: &[u32]) -> Vec<(String, String)> {
    classes
        .iter()
        .map(|n| (format!("{PRIMARY}-replica-{n}"), "db.r5.xlarge".to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runbook_database_block_scales_replicas_1_to_3_and_back_and_steps_the_primary_class() {
    let (nats, moto) = tokio::join!(NatsServer::start(), MotoServer::start());
    let rds = moto.rds();
    create_primary(&rds).await;
    let client = nats.client().await;
    let mut audit = AuditReader::new(&client).await;
    let pipeline = Pipeline::start(&nats, runbook(&moto.endpoint)).await;
    // Event times well in the past, spaced past each rule's cooldown (300 s
    // up, 900 s down) and the arbiter's hold on scale-downs after a
    // scale-up.
    let t0 = nova_runtime::now_ms() - 4 * 3_600_000;
    let steps = [
        (ScaleAction::Add(1), 0, vec![1, 2]),
        (ScaleAction::Add(1), 301_000, vec![1, 2, 3]),
        (ScaleAction::Remove(1), 2_000_000, vec![1, 2]),
        (ScaleAction::Remove(1), 2_901_000, vec![1]),
    ];
    for (action, at, want) in steps {
        let rule = match action {
            ScaleAction::Remove(_) => "db_connections.scale_down",
            _ => "db_connections.scale_up",
        };
        fire(&client, "database", rule, action, t0 + at).await;
        let result = audit
            .wait_for("the replica set's result", |r| {
                r.target == "database" && r.kind == AuditKind::Result
            })
            .await;
        assert_eq!(result.outcome, "succeeded", "{result:?}");
        assert_eq!(
            described(&rds).await.1,
            replica_set(&want),
            "after {rule} at +{at} ms"
        );
    }

    for (at, class) in [(0, "db.r5.xlarge"), (1_801_000, "db.r5.2xlarge")] {
        fire(
            &client,
            "database_primary",
            "database.db_instance_resize",
            ScaleAction::NextTier,
            t0 + at,
        )
        .await;
        let result = audit
            .wait_for("the primary's result", |r| {
                r.target == "database_primary" && r.kind == AuditKind::Result
            })
            .await;
        assert_eq!(result.outcome, "succeeded", "{result:?}");
        let response = result.backend_response.unwrap_or_default();
        assert!(
            response.contains(&format!("ModifyDBInstance {PRIMARY}: class "))
                && response.contains(&format!("-> {class}")),
            "{response}"
        );
        assert_eq!(described(&rds).await.0, class);
    }
    fire(
        &client,
        "database_primary",
        "database.db_instance_resize",
        ScaleAction::NextTier,
        t0 + 3_602_000,
    )
    .await;
    audit
        .wait_for("the decision at the top class", |r| {
            r.target == "database_primary"
                && r.kind == AuditKind::Decision
                && r.outcome == "at_top_tier"
        })
        .await;
    assert_eq!(
        described(&rds).await,
        ("db.r5.2xlarge".to_string(), replica_set(&[1]))
    );
    pipeline.stop().await;
}

/// The runbook's parameter group, with PostgreSQL's default
/// max_connections set explicitly (RDS's default group gives a formula,
/// which no ladder names).
async fn create_parameter_group(rds: &aws_sdk_rds::Client) {
    rds.create_db_parameter_group()
        .db_parameter_group_name(PARAMETER_GROUP)
        .db_parameter_group_family("postgres16")
        .description("novacron primary")
        .send()
        .await
        .expect("create parameter group");
    rds.modify_db_parameter_group()
        .db_parameter_group_name(PARAMETER_GROUP)
        .parameters(
            Parameter::builder()
                .parameter_name("max_connections")
                .parameter_value("100")
                .apply_method(ApplyMethod::Immediate)
                .build(),
        )
        .send()
        .await
        .expect("set max_connections");
}

const PARAMETER_GROUP: &str = "novacron-params";

/// max_connections as DescribeDBParameters reports it.
async fn max_connections(rds: &aws_sdk_rds::Client) -> Option<String> {
    rds.describe_db_parameters()
        .db_parameter_group_name(PARAMETER_GROUP)
        .send()
        .await
        .expect("describe parameters")
        .parameters()
        .iter()
        .find(|p| p.parameter_name() == Some("max_connections"))
        .and_then(|p| p.parameter_value().map(str::to_string))
}

/// Connection-usage samples of `database` every 30 s of event time from
/// `from` to `to` (inclusive), through ingest and the evaluator.
async fn connection_usage(client: &async_nats::Client, percent: f64, from: i64, to: i64) {
    let mut ts = from;
    while ts <= to {
        let sample = serde_json::json!({"value": percent, "ts": ts});
        nova_e2e::publish(
            client,
            subjects::metrics("database", "db_connection_usage"),
            rmp_serde::to_vec_named(&sample).expect("encode"),
            false,
        )
        .await;
        ts += 30_000;
    }
}

/// The runbook's connection-pool rules on the replica set, from samples
/// through the whole pipeline: usage above 80% for 2 minutes raises
/// max_connections in the primary's parameter group 100 -> 500 and adds no
/// replica; above 90% it raises it to the maximum, 1000, and also adds a
/// replica; at the maximum the rule is `at_top_tier`. Every assertion reads
/// DescribeDBParameters and DescribeDBInstances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runbook_connection_pool_raises_max_connections_then_adds_a_replica() {
    let (nats, moto) = tokio::join!(NatsServer::start(), MotoServer::start());
    let rds = moto.rds();
    create_primary(&rds).await;
    let client = nats.client().await;
    let mut audit = AuditReader::new(&client).await;
    let mut policy = Arc::unwrap_or_clone(runbook(&moto.endpoint));
    policy.targets.retain(|name, _| name == "database");
    let Backend::RdsReplicas(spec) = &policy.targets["database"].backend else {
        panic!("the database target is a replica set");
    };
    assert_eq!(
        spec.connection_pool
            .as_ref()
            .map(|p| p.parameter_group.as_str()),
        Some(PARAMETER_GROUP)
    );
    let pipeline = Pipeline::start(&nats, Arc::new(policy)).await;
    let is_pool_result = |r: &AuditRecord| {
        r.target == "database"
            && r.kind == AuditKind::Result
            && r.backend_response
                .as_deref()
                .is_some_and(|b| b.contains("ModifyDBParameterGroup"))
    };
    let t0 = nova_runtime::now_ms() - 1_800_000;

    // 85 % for 2 minutes: the pool is raised once; no replica.
    connection_usage(&client, 85.0, t0, t0 + 150_000).await;
    let raised = audit.wait_for("the first raise", is_pool_result).await;
    assert_eq!(raised.outcome, "succeeded", "{raised:?}");
    assert!(
        raised
            .backend_response
            .as_deref()
            .is_some_and(|b| b.contains("max_connections 100 -> 500 (immediate)")),
        "{raised:?}"
    );
    assert_eq!(max_connections(&rds).await.as_deref(), Some("500"));
    assert_eq!(described(&rds).await.1, replica_set(&[1]));

    // 95 % for 2 minutes, past the rules' cooldowns: both rules act.
    connection_usage(&client, 95.0, t0 + 600_000, t0 + 780_000).await;
    let raised = audit.wait_for("the second raise", is_pool_result).await;
    assert!(
        raised
            .backend_response
            .as_deref()
            .is_some_and(|b| b.contains("max_connections 500 -> 1000")),
        "{raised:?}"
    );
    let added = audit
        .find_or_wait("the replica added", |r| {
            r.target == "database" && r.kind == AuditKind::Result && r.to == Some(2)
        })
        .await;
    assert_eq!(added.outcome, "succeeded", "{added:?}");
    assert_eq!(max_connections(&rds).await.as_deref(), Some("1000"));
    assert_eq!(described(&rds).await.1, replica_set(&[1, 2]));

    // Past the cooldown again, at 1000: the top of the ladder.
    connection_usage(&client, 95.0, t0 + 1_200_000, t0 + 1_380_000).await;
    audit
        .find_or_wait("the pool at its maximum", |r| {
            r.target == "database" && r.kind == AuditKind::Decision && r.outcome == "at_top_tier"
        })
        .await;
    assert_eq!(max_connections(&rds).await.as_deref(), Some("1000"));
    pipeline.stop().await;
}
