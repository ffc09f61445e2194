//! The actuator on an AWS that fails the way AWS fails: moto behind the
//! counting proxy, which throttles, answers 5xx and answers late on a
//! script, while the test counts from outside what reached the backend.
//!
//! - One ECS command meets throttling, then 500s, then an UpdateService
//!   that changes the service but is answered past the call timeout. It is
//!   retried, attempt by attempt, each failed attempt audited `retrying`
//!   with the backend's answer, and the change reaches moto exactly once:
//!   the attempt after the late answer re-reads DescribeServices, finds the
//!   desired count in effect and sends no second UpdateService.
//! - A request AWS calls invalid is not retried: one call, a `failed`
//!   result at once naming the kind `not retried`, no `retrying` record.
//! - The same ladder of faults on RDS's CreateDBInstanceReadReplica (query
//!   protocol) ends with exactly the replicas asked, each id created once:
//!   the replica whose create was answered late is found by the next
//!   attempt's DescribeDBInstances, and only the missing one is created.
//!
//! Arbiter and actuator run in this process (the actuator with a short call
//! timeout and room for the ladder's attempts); decisions enter as operator
//! `scale` requests, which the arbiter decides like any rule's.
//!
//! moto's quirks this relies on: an ECS service's running count follows
//! its desired count at once, and an RDS read replica is `available` on the
//! first DescribeDBInstances after its create, so every attempt's reading
//! is final.

use std::sync::Arc;
use std::time::Duration;

use nova_e2e::aws_target::{AwsTarget, CLUSTER, PRIMARY, SERVICE};
use nova_e2e::proxy::{Call, CountingProxy};
use nova_e2e::{AuditReader, MotoServer, NatsServer, WAIT, control, stream_messages, within};
use nova_runtime::nats::{ACTUATOR_CONSUMER, AUDIT_STREAM, COMMANDS_STREAM, RESULTS_STREAM};
use nova_runtime::shutdown::{self, ShutdownTrigger};
use nova_shared::policy::from_yaml;
use nova_shared::subjects;
use nova_shared::wire::{
    ActionResult, AuditKind, AuditRecord, ControlRequest, ResultStatus, ScaleRequest, Stage,
};

/// The actuator's time limit per AWS call. Above what the SDK's own retries
/// can take inside one call (its standard strategy makes 3 tries, waiting a
/// random part of 1 s and then of 2 s between them: under 3 s), so every
/// throttled or 5xx actuator attempt is exactly 3 calls at the proxy; and
/// short, as the late answer costs one of it.
const CALL_TIMEOUT: Duration = Duration::from_secs(4);

/// How late the proxy answers a delayed call: past [`CALL_TIMEOUT`], so
/// the SDK has given up by then although moto made the change.
const LATE_BY: Duration = Duration::from_secs(5);

/// Room for the ladder's three failed attempts and the one that succeeds.
const MAX_ATTEMPTS: u32 = 5;

/// How many tries the SDK's standard retry strategy makes of one call that
/// keeps failing with throttling or a 5xx (one actuator attempt).
const SDK_TRIES: usize = 3;

/// A fault the backend call meets on one actuator attempt.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Every SDK try of the attempt refused with this status and code.
    Refused { status: u16, code: &'static str },
    /// Forwarded (the change is made) and answered after [`LATE_BY`].
    AnsweredLate,
}

/// One failed actuator attempt: the fault, and what its `retrying` audit
/// record says of it.
struct Rung {
    fault: Fault,
    /// The kind, as the reason names it: `attempt 1 of 5 failed (throttled)`.
    kind: &'static str,
    /// Part of the backend's answer, in `backend_response`.
    answer: &'static str,
}

impl Rung {
    /// Calls of the operation this attempt makes at the proxy.
    fn calls(&self) -> usize {
        match self.fault {
            Fault::Refused { .. } => SDK_TRIES,
            // The SDK's operation timeout ends the call: no retry inside it.
            Fault::AnsweredLate => 1,
        }
    }

    fn script(&self, proxy: &CountingProxy, operation: &str) {
        match self.fault {
            Fault::Refused { status, code } => {
                proxy.refuse_with_status(operation, status, code, self.calls());
            }
            Fault::AnsweredLate => proxy.delay(operation, LATE_BY, 1),
        }
    }
}

/// Throttling, then an AWS-side fault, then a change made but answered too
/// late: three failed attempts before the fourth succeeds.
fn ladder(throttled: &'static str, fault: (u16, &'static str)) -> [Rung; 3] {
    [
        Rung {
            fault: Fault::Refused {
                status: 400,
                code: throttled,
            },
            kind: "throttled",
            answer: throttled,
        },
        Rung {
            fault: Fault::Refused {
                status: fault.0,
                code: fault.1,
            },
            kind: "service unavailable",
            answer: fault.1,
        },
        Rung {
            fault: Fault::AnsweredLate,
            kind: "timed out",
            answer: "failed: timed out",
        },
    ]
}

struct World {
    _nats: NatsServer,
    moto: MotoServer,
    client: async_nats::Client,
    proxy: CountingProxy,
    audit: AuditReader,
    /// The arbiter and the actuator, in this process.
    stages: Vec<(ShutdownTrigger, tokio::task::JoinHandle<()>)>,
}

/// `backend` on moto behind the proxy, and an arbiter and an actuator
/// (call timeout [`CALL_TIMEOUT`], [`MAX_ATTEMPTS`] attempts) for it.
async fn world(backend: AwsTarget) -> World {
    world_with(backend, |yaml| yaml).await
}

/// [`world`] with its policy's text edited by `edit`.
async fn world_with(backend: AwsTarget, edit: impl Fn(String) -> String) -> World {
    let (nats, moto) = tokio::join!(NatsServer::start(), MotoServer::start());
    backend.create(&moto).await;
    let proxy = CountingProxy::start(&moto.endpoint).await;
    let yaml = edit(backend.policy_yaml(&proxy.endpoint));
    let policy = Arc::new(from_yaml(&yaml, "faults.yaml").unwrap_or_else(|e| panic!("{e}")));
    // The default actuator ack wait (60 s) is far above three call
    // timeouts, so no command is handed out again while in hand.
    let client = nats.client().await;
    let audit = AuditReader::new(&client).await;
    let arbiter = {
        let config = nova_arbiter::Config::new(policy.clone());
        let client = nova_e2e::connect(&nats.url, "arbiter").await;
        let (stop, signal) = shutdown::channel();
        let task = tokio::spawn(async move {
            nova_arbiter::run(config, client, signal.signal())
                .await
                .expect("arbiter");
        });
        (stop, task)
    };
    let actuator = {
        let mut config = nova_actuator::Config::new(policy);
        config.call_timeout = CALL_TIMEOUT;
        config.max_attempts = MAX_ATTEMPTS;
        config.aws_credentials = Some(MotoServer::credentials());
        let client = nova_e2e::connect(&nats.url, "actuator").await;
        let (stop, signal) = shutdown::channel();
        let task = tokio::spawn(async move {
            nova_actuator::run(config, client, signal.signal())
                .await
                .expect("actuator");
        });
        (stop, task)
    };
    nova_e2e::wait_ready(&nats.url, Stage::Arbiter, 1).await;
    nova_e2e::wait_ready(&nats.url, Stage::Actuator, 1).await;
    World {
        _nats: nats,
        moto,
        client,
        proxy,
        audit,
        stages: vec![arbiter, actuator],
    }
}

impl World {
    /// Asks the arbiter to set `target` to `desired`, as an operator does.
    async fn scale(&self, target: &str, desired: u32) {
        let request = ControlRequest::Scale(ScaleRequest {
            target: target.into(),
            desired,
            reason: Some("fault test".into()),
            force: false,
        });
        let reply = control(&self.client, request).await;
        assert!(reply.ok, "{}", reply.message);
    }

    /// The next `retrying` record.
    async fn next_retrying(&mut self, what: &str) -> AuditRecord {
        self.audit
            .wait_for(what, |r| {
                r.kind == AuditKind::Command && r.outcome == "retrying"
            })
            .await
    }

    /// The next result record.
    async fn result(&mut self) -> AuditRecord {
        self.audit
            .wait_for("the result", |r| r.kind == AuditKind::Result)
            .await
    }

    /// How many deliveries the actuator's consumer made, once it holds
    /// nothing unacknowledged (one command here: the actuator's attempts).
    async fn settled_deliveries(&self) -> u64 {
        within("the command to be acked", WAIT, async {
            loop {
                let info =
                    nova_e2e::consumer_info(&self.client, COMMANDS_STREAM, ACTUATOR_CONSUMER).await;
                if info.num_ack_pending == 0 && info.num_pending == 0 {
                    return info.delivered.consumer_sequence;
                }
                // Polling a broker-side counter; there is no event for it.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
    }

    /// Every audit record of the stream now, and every result.
    async fn records(&self) -> (Vec<AuditRecord>, Vec<ActionResult>) {
        (
            stream_messages(&self.client, AUDIT_STREAM).await,
            stream_messages(&self.client, RESULTS_STREAM).await,
        )
    }

    async fn stop(self) {
        for (stop, task) in self.stages.into_iter().rev() {
            stop.trigger();
            within("a stage to stop", WAIT, task)
                .await
                .expect("stage task");
        }
    }
}

/// Waits for the `retrying` record of each rung in turn (each within
/// [`WAIT`]: the ladder as a whole takes longer) and checks what it says.
async fn expect_retrying_per_rung(w: &mut World, rungs: &[Rung]) {
    for (i, rung) in rungs.iter().enumerate() {
        let attempt = i + 1;
        let record = w
            .next_retrying(&format!("the retrying record of attempt {attempt}"))
            .await;
        let heading = format!("attempt {attempt} of {MAX_ATTEMPTS} failed ({})", rung.kind);
        assert!(
            record.reason.starts_with(&heading),
            "{heading:?}: {}",
            record.reason
        );
        eprintln!("retrying: {}", record.reason);
        let answer = record.backend_response.as_deref().unwrap_or_default();
        assert!(
            answer.contains(rung.answer) && record.reason.ends_with(answer),
            "attempt {attempt}: the backend's answer {:?} in {answer:?} and the reason {:?}",
            rung.answer,
            record.reason
        );
    }
}

fn retrying(records: &[AuditRecord]) -> Vec<&AuditRecord> {
    records
        .iter()
        .filter(|r| r.kind == AuditKind::Command && r.outcome == "retrying")
        .collect()
}

fn refused(calls: &[Call]) -> usize {
    calls.iter().filter(|c| c.refused.is_some()).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ecs_change_through_throttling_5xx_and_a_late_answer_reaches_the_backend_once() {
    let mut w = world(AwsTarget::Ecs).await;
    let rungs = ladder("ThrottlingException", (500, "InternalFailure"));
    for rung in &rungs {
        rung.script(&w.proxy, "UpdateService");
    }
    w.scale("api", 5).await;
    expect_retrying_per_rung(&mut w, &rungs).await;
    let result = w.result().await;
    assert_eq!(result.outcome, "succeeded", "{}", result.reason);
    let response = result.backend_response.as_deref().unwrap_or_default();
    assert!(
        response.contains(&format!(
            "UpdateService {CLUSTER}/{SERVICE} not sent: desiredCount already 5 -> 5"
        )),
        "the fourth attempt found the late call's change made: {response}"
    );

    // The arithmetic: 3 SDK tries throttled (attempt 1) + 3 answered 500
    // (attempt 2) + 1 forwarded and answered late (attempt 3, the SDK's
    // timeout ends the call untried again) = 7 UpdateService calls, 6
    // refused; attempt 4 sends none. One call reached moto, with 5.
    let calls = w.proxy.calls("UpdateService");
    let expected: usize = rungs.iter().map(Rung::calls).sum();
    assert_eq!((calls.len(), refused(&calls)), (expected, 6), "{calls:?}");
    let changes: Vec<&Call> = calls.iter().filter(|c| c.forwarded()).collect();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].body["desiredCount"], 5);
    assert_eq!(changes[0].delayed, Some(LATE_BY));
    let reread = w.proxy.calls("DescribeServices");
    assert!(
        reread.iter().any(|c| c.at > changes[0].at),
        "the attempt after the late answer read the service again: {reread:?}"
    );
    let ecs = w.moto.ecs().await;
    assert_eq!(nova_e2e::ecs_desired(&ecs, CLUSTER, SERVICE).await, 5);

    // Three failed attempts and the one that succeeded: four deliveries,
    // three retrying records, one result.
    assert_eq!(w.settled_deliveries().await, 4);
    let (records, results) = w.records().await;
    assert_eq!(retrying(&records).len(), rungs.len(), "{records:#?}");
    assert!(
        retrying(&records)
            .iter()
            .all(|r| r.decision_id == result.decision_id),
        "every retrying record is of the one decision: {records:#?}"
    );
    let statuses: Vec<(ResultStatus, u32)> = results
        .iter()
        .map(|r| (r.status.clone(), r.desired))
        .collect();
    assert_eq!(statuses, [(ResultStatus::Succeeded, 5)]);
    let result_records = records.iter().filter(|r| r.kind == AuditKind::Result);
    assert_eq!(result_records.count(), 1);
    eprintln!(
        "ECS ladder: {} UpdateService calls ({} refused, 1 answered late), {} retrying records, 1 result",
        calls.len(),
        refused(&calls),
        retrying(&records).len()
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_ecs_request_fails_at_once_without_a_retry() {
    // (the code the proxy answers UpdateService with, the kind the result names)
    let cases = [
        ("ClientException", "invalid request"),
        ("ValidationException", "invalid request"),
        ("InvalidParameterException", "invalid request"),
    ];
    for (code, kind) in cases {
        let mut w = world(AwsTarget::Ecs).await;
        // As many as the actuator would ever ask: a retry would show up as a
        // second refused call.
        w.proxy.refuse("UpdateService", code, usize::MAX);
        w.scale("api", 5).await;
        let result = w.result().await;
        assert_eq!(result.outcome, "failed", "{code}: {}", result.reason);
        let response = result.backend_response.as_deref().unwrap_or_default();
        let said =
            format!("failed ({kind}, not retried): target api: ECS UpdateService failed: {code}");
        assert!(response.starts_with(&said), "{code}: {response}");
        assert_eq!(w.settled_deliveries().await, 1, "{code}: acked at once");
        assert_eq!(w.proxy.calls("UpdateService").len(), 1, "{code}: one call");
        let (records, results) = w.records().await;
        assert!(retrying(&records).is_empty(), "{code}: {records:#?}");
        assert_eq!(results.len(), 1, "{code}: {results:?}");
        let ecs = w.moto.ecs().await;
        assert_eq!(
            nova_e2e::ecs_desired(&ecs, CLUSTER, SERVICE).await,
            2,
            "{code}"
        );
        w.stop().await;
    }
}

/// A rule trigger of `api`'s scale-up at event time `ts`, as the evaluator
/// sends it.
async fn grow_api(client: &async_nats::Client, ts: i64) {
    let trigger = nova_e2e::grow_trigger(
        "api",
        format!("grow-{ts}"),
        ts,
        "queue_depth 20 > 10".into(),
    );
    let js = async_nats::jetstream::new(client.clone());
    nova_runtime::publish::publish_once(&js, subjects::triggers("api"), &trigger.id, &trigger)
        .await
        .expect("publish trigger");
}

/// A failed action starts no cooldown: a rule's scale-up refused by ECS
/// (not retried) leaves the rule's 300 s cooldown unstarted, so the rule's
/// next firing, 10 s later, acts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_action_starts_no_cooldown() {
    let mut w = world_with(AwsTarget::Ecs, |yaml| {
        yaml.replace("cooldown: 0", "cooldown: 300")
    })
    .await;
    w.proxy.refuse("UpdateService", "ClientException", 1);
    let t0 = nova_runtime::now_ms() - 60_000;
    grow_api(&w.client, t0).await;
    let failed = w.result().await;
    assert_eq!(failed.outcome, "failed", "{}", failed.reason);

    grow_api(&w.client, t0 + 10_000).await;
    let decision = w
        .audit
        .wait_for("the second decision", |r| {
            r.kind == AuditKind::Decision && r.decision_id != failed.decision_id
        })
        .await;
    assert_eq!(decision.outcome, "scale", "{}", decision.reason);
    let applied = w.result().await;
    assert_eq!(
        (applied.outcome.as_str(), applied.to),
        ("succeeded", Some(3))
    );
    let ecs = w.moto.ecs().await;
    assert_eq!(nova_e2e::ecs_desired(&ecs, CLUSTER, SERVICE).await, 3);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rds_replica_set_through_throttling_5xx_and_a_late_answer_gets_each_replica_once() {
    let mut w = world(AwsTarget::Rds).await;
    let rungs = ladder("Throttling", (503, "ServiceUnavailable"));
    for rung in &rungs {
        rung.script(&w.proxy, "CreateDBInstanceReadReplica");
    }
    w.scale("db", 2).await;
    expect_retrying_per_rung(&mut w, &rungs).await;
    let result = w.result().await;
    assert_eq!(result.outcome, "succeeded", "{}", result.reason);
    let response = result.backend_response.as_deref().unwrap_or_default();
    assert!(
        response.contains("read replicas 1 -> 2 (available 2): created orders-db-replica-2"),
        "the fourth attempt found replica 1, made by the late call: {response}"
    );
    let want = [
        format!("{PRIMARY}-replica-1"),
        format!("{PRIMARY}-replica-2"),
    ];
    assert_eq!(nova_e2e::rds_replicas(&w.moto.rds(), PRIMARY).await, want);

    // 3 throttled + 3 answered 503 (attempts 1 and 2, replica-1 each time,
    // never made) + replica-1 forwarded and answered late (attempt 3) +
    // replica-2 (attempt 4) = 8 calls, 6 refused; each id forwarded once.
    let calls = w.proxy.calls("CreateDBInstanceReadReplica");
    assert_eq!((calls.len(), refused(&calls)), (8, 6), "{calls:?}");
    let created: Vec<&str> = calls
        .iter()
        .filter(|c| c.forwarded())
        .filter_map(Call::resource)
        .collect();
    assert_eq!(created, want, "{calls:?}");
    assert!(
        calls
            .iter()
            .all(|c| c.body["SourceDBInstanceIdentifier"] == PRIMARY),
        "{calls:?}"
    );

    assert_eq!(w.settled_deliveries().await, 4);
    let (records, results) = w.records().await;
    assert_eq!(retrying(&records).len(), rungs.len(), "{records:#?}");
    assert!(
        retrying(&records)
            .iter()
            .all(|r| r.decision_id == result.decision_id),
        "every retrying record is of the one decision: {records:#?}"
    );
    let statuses: Vec<(ResultStatus, u32)> = results
        .iter()
        .map(|r| (r.status.clone(), r.desired))
        .collect();
    assert_eq!(statuses, [(ResultStatus::Succeeded, 2)]);
    eprintln!(
        "RDS ladder: {} CreateDBInstanceReadReplica calls ({} refused, 1 answered late), {} retrying records, 1 result",
        calls.len(),
        refused(&calls),
        retrying(&records).len()
    );
    w.stop().await;
}
