//! Gradual scaling (runbook section 2) end to end: the whole pipeline on a
//! real nats-server, the target an ECS service on moto, a health endpoint
//! served by the test. An operator's `scale` from 5 to 15 on a target with
//! `gradual: {step: 2, delay_secs: 1}` walks 7, 9, 11, 13, 15, validating
//! each step.
//!
//! - The health endpoint answers 503 while the service runs 11 or more
//!   tasks (it asks moto): step 3 fails, is checked again after twice the
//!   delay, fails again, and the walk rolls back to step 2's 9. The service
//!   ends at 9 as DescribeServices reports it, every step, validation,
//!   pause and the rollback are audited, the result is `rolled_back`
//!   naming the health check's answer, and every record passes the
//!   generated schemas.
//! - A metric gate instead (`error_rate` above 1%, fed through ingest at 3%
//!   from step 3 on): the same rollback to 9, the result and the pause and
//!   rollback records naming the gate with its value and threshold.
//! - With the health endpoint always healthy and the runbook's default
//!   gates fed below their thresholds through ingest (p99_latency never
//!   published), the walk reaches 15; each validation names the gates it
//!   passed and the one it could not judge.
//! - A newer `scale` (to 8) mid-walk supersedes it: the walk stops at the
//!   step it reached (validated), its result is `superseded`, and the newer
//!   command then takes the service to 8.
//!
//! moto's quirk this relies on: an ECS service's running count follows its
//! desired count at once, so each step is steady at its first read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nova_e2e::{
    AuditReader, MotoServer, NatsServer, Pipeline, WAIT, check_against_schema, control,
    stream_messages, within,
};
use nova_runtime::nats::{AUDIT_STREAM, CAPACITY_BUCKET, RESULTS_STREAM};
use nova_shared::policy::from_yaml;
use nova_shared::wire::{
    ActionResult, AuditKind, AuditRecord, CapacityRecord, ControlRequest, ResultStatus,
    ScaleRequest, Stage,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const CLUSTER: &str = "walks";
const SERVICE: &str = "api";
const TARGET: &str = "api";
/// The audit trail of a walk that fails at step 3 and rolls back to step 2.
const ROLLED_BACK_AT_STEP_3: [&str; 9] = [
    "executing",
    "step",
    "validated",
    "step",
    "validated",
    "step",
    "paused",
    "rollback",
    "rolled_back",
];

/// A health endpoint on a free loopback port: healthy (200) while `healthy`
/// says so, else 503; it counts the requests it answered.
struct HealthEndpoint {
    url: String,
    requests: Arc<AtomicU32>,
    task: tokio::task::JoinHandle<()>,
}

impl HealthEndpoint {
    async fn start<F, Fut>(healthy: F) -> HealthEndpoint
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/health", listener.local_addr().expect("addr"));
        let requests = Arc::new(AtomicU32::new(0));
        let counted = requests.clone();
        let healthy = Arc::new(healthy);
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (healthy, counted) = (healthy.clone(), counted.clone());
                tokio::spawn(async move {
                    // One request per connection: read its head, answer, close.
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let status = if healthy().await {
                        "200 OK"
                    } else {
                        "503 Service Unavailable"
                    };
                    counted.fetch_add(1, Ordering::SeqCst);
                    let answer = format!(
                        "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        HealthEndpoint {
            url,
            requests,
            task,
        }
    }
}

impl Drop for HealthEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct World {
    nats: NatsServer,
    _moto: MotoServer,
    ecs: aws_sdk_ecs::Client,
    pipeline: Pipeline,
    client: async_nats::Client,
    audit: AuditReader,
}

/// The policy: target `api` on ECS service `api` (5 tasks), walking by 2
/// with 1 s between steps, checking `health_url`, and `gates` if given.
fn policy_yaml(moto: &str, health_url: &str, gates: &str) -> String {
    format!(
        "targets:\n  {TARGET}:\n    rules: [grow]\n    max: 20\n    backend:\n      ecs: {{ region: us-east-1, cluster: {CLUSTER}, service: {SERVICE}, endpoint_url: \"{moto}\" }}\n    gradual: {{ step: 2, delay_secs: 1, health_check: {{ url: \"{health_url}\", timeout_secs: 2 }}{gates} }}\nhorizontal_scaling_rules:\n  grow:\n    scale_up: {{ condition: \"queue_depth > 10\", action: \"add 1 instance\", cooldown: 0 }}\n"
    )
}

/// nats, moto with the service at 5 tasks, the health endpoint `health`
/// makes, and the whole pipeline on the policy.
async fn world<H>(health: H, gates: &str) -> (World, HealthEndpoint)
where
    H: FnOnce(aws_sdk_ecs::Client) -> HealthEndpointFuture,
{
    let (nats, moto) = tokio::join!(NatsServer::start(), MotoServer::start());
    let ecs = moto.ecs_service(CLUSTER, SERVICE, 5).await;
    let endpoint = health(ecs.clone()).await;
    let yaml = policy_yaml(&moto.endpoint, &endpoint.url, gates);
    let policy = Arc::new(from_yaml(&yaml, "gradual.yaml").unwrap_or_else(|e| panic!("{e}")));
    // The client provisions the streams and buckets the stages need.
    let client = nats.client().await;
    let audit = AuditReader::new(&client).await;
    let pipeline = Pipeline::start(&nats, policy).await;
    let world = World {
        nats,
        _moto: moto,
        ecs,
        pipeline,
        client,
        audit,
    };
    (world, endpoint)
}

type HealthEndpointFuture = std::pin::Pin<Box<dyn Future<Output = HealthEndpoint> + Send>>;

impl World {
    /// Asks the arbiter to set the target to `desired`, as an operator does.
    async fn scale(&self, desired: u32, force: bool) {
        let request = ControlRequest::Scale(ScaleRequest {
            target: TARGET.into(),
            desired,
            reason: Some("gradual test".into()),
            force,
        });
        let reply = control(&self.client, request).await;
        assert!(reply.ok, "{}", reply.message);
    }

    async fn desired(&self) -> i32 {
        nova_e2e::ecs_desired(&self.ecs, CLUSTER, SERVICE).await
    }

    /// The next actuator result record.
    async fn result(&mut self, what: &str) -> AuditRecord {
        self.audit
            .wait_for(what, |r| {
                r.stage == Stage::Actuator && r.kind == AuditKind::Result
            })
            .await
    }

    /// Every actuator record of `decision`, in stream order.
    async fn records_of(&self, decision: &str) -> Vec<AuditRecord> {
        let all: Vec<AuditRecord> = stream_messages(&self.client, AUDIT_STREAM).await;
        all.into_iter()
            .filter(|r| r.stage == Stage::Actuator && r.decision_id.as_deref() == Some(decision))
            .collect()
    }

    async fn capacity(&self) -> CapacityRecord {
        within("the capacity record", WAIT, async {
            let js = async_nats::jetstream::new(self.client.clone());
            let kv = js.get_key_value(CAPACITY_BUCKET).await.expect("bucket");
            let entry = kv.get(TARGET).await.expect("read").expect("a record");
            nova_shared::codec::decode(&entry, nova_shared::codec::Encoding::MsgPack)
                .expect("capacity record")
        })
        .await
    }
}

/// (outcome, reason) of each record: what the walk did, in order.
fn trail(records: &[AuditRecord]) -> Vec<(String, String)> {
    records
        .iter()
        .map(|r| (r.outcome.clone(), r.reason.clone()))
        .collect()
}

/// Whether `record` carries the failing gate's value and threshold.
fn gate_values(record: &AuditRecord, observed: f64, threshold: f64) -> bool {
    let near = |got: Option<f64>, want: f64| got.is_some_and(|v| (v - want).abs() < 1e-9);
    near(record.observed, observed) && near(record.threshold, threshold)
}

fn json<T: serde::Serialize>(values: &[T]) -> Vec<serde_json::Value> {
    values
        .iter()
        .map(|v| serde_json::to_value(v).expect("serialises"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_step_that_stays_unhealthy_rolls_back_to_the_last_good_step() {
    // Unhealthy while 11 or more tasks are asked for: from step 3 on.
    let health = |ecs: aws_sdk_ecs::Client| -> HealthEndpointFuture {
        Box::pin(HealthEndpoint::start(move || {
            let ecs = ecs.clone();
            async move { nova_e2e::ecs_desired(&ecs, CLUSTER, SERVICE).await < 11 }
        }))
    };
    let (mut w, endpoint) = world(health, "").await;
    w.scale(15, false).await;

    // While step 3 is in flight, `novactl status` shows it.
    let step3 = w
        .audit
        .wait_for("step 3", |r| {
            r.outcome == "step" && r.reason.starts_with("step 3 of 5")
        })
        .await;
    let status = within(
        "novactl status",
        WAIT,
        tokio::process::Command::new(nova_e2e::process::binary("novactl"))
            .args(["status", TARGET, "--nats-url", &w.nats.url])
            .output(),
    )
    .await
    .expect("novactl runs");
    let line = String::from_utf8_lossy(&status.stdout).to_string();
    eprintln!("novactl status during step 3: {line}");
    assert!(line.contains("step 3 of 5 (5 -> 15, at 11)"), "{line}");

    let result = w.result("the walk's result").await;
    let decision = result.decision_id.clone().expect("decision id");
    assert_eq!(result.outcome, "rolled_back", "{}", result.reason);
    assert_eq!(step3.decision_id.as_deref(), Some(decision.as_str()));
    let response = result.backend_response.clone().unwrap_or_default();
    eprintln!("result: {}", result.reason);
    assert!(
        response.starts_with("step 3 of 5 failed validation twice (health check ")
            && response.contains("answered 503, expected 200): rolled back to 9, step 2"),
        "{response}"
    );

    // What the backend reports: step 2's capacity.
    assert_eq!(w.desired().await, 9, "DescribeServices after the rollback");
    // Validations: steps 1 and 2 once, step 3 twice (then the rollback).
    assert_eq!(endpoint.requests.load(Ordering::SeqCst), 4);

    let records = w.records_of(&decision).await;
    let got = trail(&records);
    for (outcome, reason) in &got {
        eprintln!("  {outcome:<10} {reason}");
    }
    let outcomes: Vec<&str> = got.iter().map(|(o, _)| o.as_str()).collect();
    assert_eq!(outcomes, ROLLED_BACK_AT_STEP_3);
    let moves: Vec<(Option<u32>, Option<u32>)> = records
        .iter()
        .filter(|r| r.outcome == "step" || r.outcome == "rollback")
        .map(|r| (r.from, r.to))
        .collect();
    assert_eq!(
        moves,
        [
            (Some(5), Some(7)),
            (Some(7), Some(9)),
            (Some(9), Some(11)),
            (Some(11), Some(9))
        ]
    );
    let paused = &got[6].1;
    assert!(
        paused.starts_with("step 3 of 5 failed validation (health check ")
            && paused.contains("pausing 2 s (twice the delay)"),
        "{paused}"
    );
    let record = w.capacity().await;
    assert_eq!(
        (record.desired, record.plan.clone(), record.lease.is_some()),
        (9, None, false),
        "the record after the walk: {record:?}"
    );

    // The records, the result and the capacity record as the schemas say.
    check_against_schema("audit-record.schema.json", &json(&records));
    let results: Vec<ActionResult> = stream_messages(&w.client, RESULTS_STREAM).await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].status, ResultStatus::RolledBack);
    check_against_schema("action-result.schema.json", &json(&results));
    check_against_schema("capacity-record.schema.json", &json(&[record]));
    w.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_metric_gate_that_stays_above_its_threshold_rolls_back_naming_the_gate() {
    let health = |_ecs: aws_sdk_ecs::Client| -> HealthEndpointFuture {
        Box::pin(HealthEndpoint::start(|| async { true }))
    };
    let (mut w, _endpoint) = world(health, ", gates: { error_rate: \"1%\" }").await;
    // The service's error rate through ingest, as it reads the task count
    // it runs: 0.2% below 11 tasks, 3% from step 3 (11) on.
    let feeder = {
        let (client, ecs) = (w.client.clone(), w.ecs.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(100));
            loop {
                every.tick().await;
                let desired = nova_e2e::ecs_desired(&ecs, CLUSTER, SERVICE).await;
                let value = if desired < 11 { "0.2%" } else { "3%" };
                let sample = serde_json::json!({"value": value, "instance": "a"});
                nova_e2e::publish(
                    &client,
                    nova_shared::subjects::metrics(TARGET, "error_rate"),
                    sample.to_string().into_bytes(),
                    true,
                )
                .await;
            }
        })
    };
    w.scale(15, false).await;
    let result = w.result("the walk's result").await;
    feeder.abort();
    eprintln!("result: {}", result.reason);
    assert_eq!(result.outcome, "rolled_back", "{}", result.reason);
    let response = result.backend_response.clone().unwrap_or_default();
    assert!(
        response.starts_with(
            "step 3 of 5 failed validation twice (error_rate 3% > 1%): rolled back to 9, step 2"
        ),
        "{response}"
    );
    // The failing gate's value and threshold, on the result.
    assert!(
        gate_values(&result, 0.03, 0.01),
        "observed {:?}, threshold {:?}",
        result.observed,
        result.threshold
    );
    assert_eq!(w.desired().await, 9, "DescribeServices after the rollback");

    let decision = result.decision_id.clone().expect("decision id");
    let records = w.records_of(&decision).await;
    for (outcome, reason) in trail(&records) {
        eprintln!("  {outcome:<10} {reason}");
    }
    let outcomes: Vec<&str> = records.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(outcomes, ROLLED_BACK_AT_STEP_3);
    for record in records.iter().filter(|r| r.outcome == "validated") {
        assert!(
            record.reason.contains("error_rate 0.2% <= 1%"),
            "{}",
            record.reason
        );
    }
    for record in records
        .iter()
        .filter(|r| r.outcome == "paused" || r.outcome == "rollback")
    {
        assert!(
            record.reason.contains("(error_rate 3% > 1%)"),
            "{}",
            record.reason
        );
        assert!(gate_values(record, 0.03, 0.01), "{record:?}");
    }
    check_against_schema("audit-record.schema.json", &json(&records));
    let results: Vec<ActionResult> = stream_messages(&w.client, RESULTS_STREAM).await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].status, ResultStatus::RolledBack);
    check_against_schema("action-result.schema.json", &json(&results));
    w.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_walk_that_passes_every_gate_reaches_the_target() {
    let health = |_ecs: aws_sdk_ecs::Client| -> HealthEndpointFuture {
        Box::pin(HealthEndpoint::start(|| async { true }))
    };
    let (mut w, endpoint) = world(health, ", gates: default").await;
    // The gates' metrics, well below the runbook's thresholds, through
    // ingest for the whole walk; p99_latency is never published.
    let feeder = {
        let client = w.client.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(100));
            loop {
                every.tick().await;
                for (metric, value, instance) in [
                    ("error_rate", "0.2%", "a"),
                    ("cpu", "40%", "a"),
                    ("cpu", "50%", "b"),
                ] {
                    let sample = serde_json::json!({"value": value, "instance": instance});
                    nova_e2e::publish(
                        &client,
                        nova_shared::subjects::metrics(TARGET, metric),
                        sample.to_string().into_bytes(),
                        true,
                    )
                    .await;
                }
            }
        })
    };
    w.scale(15, false).await;
    let result = w.result("the walk's result").await;
    feeder.abort();
    eprintln!("result: {}", result.reason);
    assert_eq!(result.outcome, "succeeded", "{}", result.reason);
    assert!(
        result
            .backend_response
            .as_deref()
            .unwrap_or_default()
            .starts_with("walked 5 -> 15 in 5 steps of at most 2, each validated"),
        "{result:?}"
    );
    assert_eq!(w.desired().await, 15, "DescribeServices after the walk");
    assert_eq!(
        endpoint.requests.load(Ordering::SeqCst),
        5,
        "one check per step"
    );
    let decision = result.decision_id.clone().expect("decision id");
    let records = w.records_of(&decision).await;
    let validated: Vec<&AuditRecord> = records
        .iter()
        .filter(|r| r.outcome == "validated")
        .collect();
    assert_eq!(validated.len(), 5);
    for (i, record) in validated.iter().enumerate() {
        eprintln!("  {}", record.reason);
        let step = i + 1;
        assert!(
            record.reason.starts_with(&format!("step {step} of 5 (")),
            "{}",
            record.reason
        );
        for passed in [
            "answered 200",
            "error_rate 0.2% <= 1%",
            "avg_cpu 45% <= 85%",
        ] {
            assert!(
                record.reason.contains(passed),
                "{passed}: {}",
                record.reason
            );
        }
        assert!(
            record
                .reason
                .ends_with("not judged (no recent sample): p99_latency"),
            "{}",
            record.reason
        );
    }
    let tos: Vec<Option<u32>> = records
        .iter()
        .filter(|r| r.outcome == "step")
        .map(|r| r.to)
        .collect();
    assert_eq!(tos, [Some(7), Some(9), Some(11), Some(13), Some(15)]);
    check_against_schema("audit-record.schema.json", &json(&records));
    w.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_newer_decision_supersedes_a_walk_between_steps() {
    let health = |_ecs: aws_sdk_ecs::Client| -> HealthEndpointFuture {
        Box::pin(HealthEndpoint::start(|| async { true }))
    };
    let (mut w, _endpoint) = world(health, "").await;
    w.scale(15, false).await;
    w.audit
        .wait_for("step 2", |r| {
            r.outcome == "step" && r.reason.starts_with("step 2 of 5")
        })
        .await;
    // A newer decision while the walk is between steps 2 and 3.
    w.scale(8, true).await;

    let first = w.result("the walk's result").await;
    eprintln!("first: {}", first.reason);
    assert_eq!(first.outcome, "superseded", "{}", first.reason);
    let response = first.backend_response.clone().unwrap_or_default();
    let reached: usize = response
        .split("stopped at step ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no step reached in {response:?}"));
    assert!((2..5).contains(&reached), "{response}");
    let walk = w.records_of(first.decision_id.as_deref().unwrap()).await;
    let steps = walk.iter().filter(|r| r.outcome == "step").count();
    assert_eq!(
        steps,
        reached,
        "it stopped where it says: {:?}",
        trail(&walk)
    );
    assert!(
        !walk.iter().any(|r| r.to == Some(15) && r.outcome == "step"),
        "the walk never reached 15"
    );

    let second = w.result("the newer command's result").await;
    eprintln!("second: {}", second.reason);
    assert_eq!(second.outcome, "succeeded", "{}", second.reason);
    assert_eq!(
        w.desired().await,
        8,
        "DescribeServices after the newer command"
    );
    let record = w.capacity().await;
    assert_eq!(record.wanted_seq, record.applied_seq, "{record:?}");
    assert_eq!((record.plan.clone(), record.desired), (None, 8));
    let all = within("the audit trail", WAIT, async {
        let mut records = w.records_of(first.decision_id.as_deref().unwrap()).await;
        records.extend(w.records_of(second.decision_id.as_deref().unwrap()).await);
        records
    })
    .await;
    check_against_schema("audit-record.schema.json", &json(&all));
    w.pipeline.stop().await;
}
