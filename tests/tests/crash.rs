//! An actuator killed between "the AWS call took effect" and "the command
//! was acked": the actuator and arbiter binaries as processes, moto behind
//! the counting proxy, which holds the one call that changes capacity
//! (forwarded, moto's answer never sent). Once moto has answered it the
//! actuator gets SIGKILL, and a new actuator process takes the command's
//! redelivery over.
//!
//! What the redelivery finds is the case the actuator's design names
//! "between 1 and 3": the killed actuator held the target's lease and had
//! recorded nothing, so its lease expires and the redelivery re-applies the
//! same absolute capacity, which the backend shows is already there:
//! - ECS: DescribeServices reports the new desired count, so no second
//!   UpdateService is sent; the one result is `succeeded`, its response
//!   saying the call was not sent.
//! - RDS: DescribeDBInstances lists the replica the held create made, so
//!   only the missing one is created (the deterministic ids mean the same
//!   name on every attempt); the one result is `succeeded`.
//!
//! Timing: the actuators' call timeout is 2 s, so a command's action has
//! 4 s and its lease 6 s (with the 2 s margin); the consumer's ack wait is
//! 8 s, past the lease with room for a slow claim, so the one redelivery
//! finds the lease expired and takes it (no lease-poll naks in between):
//! two deliveries in all.
//!
//! moto's quirks this relies on: an ECS service's running count follows
//! its desired count at once, and an RDS read replica is `available` on the
//! first DescribeDBInstances after its create.

use std::time::Duration;

use nova_e2e::aws_target::{AwsTarget, CLUSTER, PRIMARY, SERVICE};
use nova_e2e::process::ServiceProcess;
use nova_e2e::proxy::{Call, CountingProxy};
use nova_e2e::{
    MotoServer, NatsServer, WAIT, control, stream_first, stream_messages, wait_ready, within,
};
use nova_runtime::nats::{ACTUATOR_CONSUMER, AUDIT_STREAM, COMMANDS_STREAM, RESULTS_STREAM};
use nova_shared::policy::from_yaml;
use nova_shared::wire::{
    ActionResult, AuditKind, AuditRecord, ControlRequest, ResultStatus, ScaleRequest, Stage,
};

/// A 2 s call timeout: the killed actuator's SDK would give up on the held
/// call after that, so the kill comes well within it.
const ACTUATOR_FLAGS: [&str; 2] = ["--call-timeout-secs", "2"];

/// The actuators' ack wait: at least three call timeouts (checked at
/// start), and past the lease of a command in hand (2 × 2 s + 2 s), with
/// 2 s to spare: the lease runs from the claim, the ack wait from the
/// delivery before it.
const ACTUATOR_ACK_WAIT: Duration = Duration::from_secs(8);

const MOTO_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_REGION", "us-east-1"),
];

/// The call that changes `backend`'s capacity: the one held.
fn change(backend: AwsTarget) -> &'static str {
    match backend {
        AwsTarget::Ecs => "UpdateService",
        AwsTarget::Rds => "CreateDBInstanceReadReplica",
    }
}

/// The capacity each test scales `backend` to.
fn desired(backend: AwsTarget) -> u32 {
    match backend {
        AwsTarget::Ecs => 5,
        AwsTarget::Rds => 2,
    }
}

/// The servers, moto behind the proxy, the policy file for `backend` and an
/// arbiter process; the test starts (and kills) the actuators.
struct Stack {
    nats: NatsServer,
    moto: MotoServer,
    proxy: CountingProxy,
    client: async_nats::Client,
    policy: tempfile::NamedTempFile,
    backend: AwsTarget,
    _arbiter: ServiceProcess,
}

impl Stack {
    async fn start(backend: AwsTarget) -> Stack {
        let (nats, moto) = tokio::join!(NatsServer::start(), MotoServer::start());
        backend.create(&moto).await;
        let proxy = CountingProxy::start(&moto.endpoint).await;
        let yaml = backend.policy_yaml(&proxy.endpoint);
        from_yaml(&yaml, "crash.yaml").unwrap_or_else(|e| panic!("{e}"));
        let policy = tempfile::NamedTempFile::new().expect("temp policy");
        std::fs::write(policy.path(), yaml).expect("write policy");
        let settings = nova_runtime::provision::Settings {
            actuator_ack_wait: ACTUATOR_ACK_WAIT,
            ..nova_e2e::test_settings()
        };
        let client = nats.client_with(&settings).await;
        let arbiter = ServiceProcess::stage(Stage::Arbiter, &nats.url, policy.path(), &[], &[]);
        wait_ready(&nats.url, Stage::Arbiter, 1).await;
        Stack {
            nats,
            moto,
            proxy,
            client,
            policy,
            backend,
            _arbiter: arbiter,
        }
    }

    /// A new actuator process, once it answers pings: its start-up read of
    /// the backend is done by then, so the next backend call is a command's.
    async fn actuator(&self) -> ServiceProcess {
        let actuator = ServiceProcess::stage(
            Stage::Actuator,
            &self.nats.url,
            self.policy.path(),
            &ACTUATOR_FLAGS,
            &MOTO_ENV,
        );
        wait_ready(&self.nats.url, Stage::Actuator, 1).await;
        actuator
    }

    /// Asks the arbiter to set the target to the backend's desired capacity.
    async fn scale(&self) {
        let request = ControlRequest::Scale(ScaleRequest {
            target: self.backend.target().into(),
            desired: desired(self.backend),
            reason: Some("crash test".into()),
            force: false,
        });
        let reply = control(&self.client, request).await;
        assert!(reply.ok, "{}", reply.message);
    }

    /// Waits for the first result, then for the command to be acked.
    async fn settled(&self) -> Settled {
        stream_first::<ActionResult>(&self.client, RESULTS_STREAM, 1, WAIT).await;
        let deliveries = settled_deliveries(&self.client).await;
        Settled {
            deliveries,
            // Read once the command is acked: nothing may follow.
            results: stream_messages(&self.client, RESULTS_STREAM).await,
            records: stream_messages(&self.client, AUDIT_STREAM).await,
        }
    }
}

/// What the actuators left, once the command is acked.
struct Settled {
    /// Deliveries of the command by the actuators' consumer.
    deliveries: u64,
    /// The decision's results.
    results: Vec<ActionResult>,
    /// Every audit record.
    records: Vec<AuditRecord>,
}

impl Settled {
    /// The one result, and the one result record of the audit stream.
    fn the_result(&self) -> (&ActionResult, &AuditRecord) {
        assert_eq!(self.results.len(), 1, "{:?}", self.results);
        let audited: Vec<&AuditRecord> = self
            .records
            .iter()
            .filter(|r| r.kind == AuditKind::Result)
            .collect();
        assert_eq!(audited.len(), 1, "{audited:#?}");
        assert_eq!(
            audited[0].decision_id.as_deref(),
            Some(self.results[0].decision_id.as_str())
        );
        (&self.results[0], audited[0])
    }
}

/// What a crash run leaves for the test to check.
struct Crashed {
    stack: Stack,
    /// The call the killed actuator made, moto answered and it never heard of.
    held: Call,
    settled: Settled,
    /// From the kill to the new actuator's result.
    took_over_in: Duration,
    _actuator: ServiceProcess,
}

/// Scales `backend`'s target through the arbiter process, holds the
/// actuator's capacity-changing call at the proxy, SIGKILLs the actuator
/// once moto answered it, starts a new actuator and waits for the result.
async fn kill_the_actuator_after_its_call(backend: AwsTarget) -> Crashed {
    let stack = Stack::start(backend).await;
    let operation = change(backend);
    stack.proxy.hold(operation);
    let mut first = stack.actuator().await;
    stack.scale().await;
    let held = stack.proxy.held(operation).await;
    first.kill().await;
    let killed = std::time::Instant::now();

    // The premises: the killed actuator neither finished the command nor
    // gave up on the call (its SDK timeout would have audited `retrying`).
    let results: Vec<ActionResult> = stream_messages(&stack.client, RESULTS_STREAM).await;
    assert!(results.is_empty(), "no result before the kill: {results:?}");
    let records: Vec<AuditRecord> = stream_messages(&stack.client, AUDIT_STREAM).await;
    assert!(
        records.iter().all(|r| r.outcome != "retrying"),
        "killed before its call timed out: {records:#?}"
    );

    let second = stack.actuator().await;
    let settled = stack.settled().await;
    Crashed {
        took_over_in: killed.elapsed(),
        held,
        settled,
        stack,
        _actuator: second,
    }
}

/// How many deliveries the actuators' consumer made, once it holds nothing
/// unacknowledged.
async fn settled_deliveries(client: &async_nats::Client) -> u64 {
    within("the command to be acked", WAIT, async {
        loop {
            let info = nova_e2e::consumer_info(client, COMMANDS_STREAM, ACTUATOR_CONSUMER).await;
            if info.num_ack_pending == 0 && info.num_pending == 0 {
                return info.delivered.consumer_sequence;
            }
            // Polling a broker-side counter; there is no event for it.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ecs_change_made_before_the_actuator_died_is_not_sent_again() {
    let crashed = kill_the_actuator_after_its_call(AwsTarget::Ecs).await;
    assert_eq!(crashed.held.body["desiredCount"], 5, "{:?}", crashed.held);
    let calls = crashed.stack.proxy.calls("UpdateService");
    assert_eq!(calls.len(), 1, "one UpdateService reached moto: {calls:?}");
    assert!(calls[0].withheld && calls[0].forwarded());
    let ecs = crashed.stack.moto.ecs().await;
    assert_eq!(nova_e2e::ecs_desired(&ecs, CLUSTER, SERVICE).await, 5);

    // Succeeded, not skipped: the killed actuator recorded nothing after
    // the call (no applied_seq), so the redelivery executes the command
    // again, and the backend's own re-read shows the change made.
    let (result, _) = crashed.settled.the_result();
    assert_eq!(result.status, ResultStatus::Succeeded, "{result:?}");
    assert!(
        result.response.starts_with(&format!(
            "UpdateService {CLUSTER}/{SERVICE} not sent: desiredCount already 5 -> 5"
        )),
        "{}",
        result.response
    );
    assert_eq!(
        crashed.settled.deliveries, 2,
        "the killed one's and the redelivery"
    );
    eprintln!(
        "ECS crash: {} UpdateService call, {} deliveries, result {} after {:?}: {}",
        calls.len(),
        crashed.settled.deliveries,
        result.status.as_str(),
        crashed.took_over_in,
        result.response
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rds_replica_made_before_the_actuator_died_is_not_made_again() {
    let crashed = kill_the_actuator_after_its_call(AwsTarget::Rds).await;
    let want = [
        format!("{PRIMARY}-replica-1"),
        format!("{PRIMARY}-replica-2"),
    ];
    assert_eq!(crashed.held.resource(), Some(want[0].as_str()));
    assert_eq!(
        nova_e2e::rds_replicas(&crashed.stack.moto.rds(), PRIMARY).await,
        want
    );
    let calls = crashed.stack.proxy.calls("CreateDBInstanceReadReplica");
    let created: Vec<&str> = calls.iter().filter_map(Call::resource).collect();
    assert_eq!(created, want, "each id forwarded once: {calls:?}");
    assert!(calls.iter().all(Call::forwarded));

    // Succeeded, as for ECS: the redelivery's DescribeDBInstances lists
    // replica 1 (moto made it on the held call), so it creates replica 2.
    let (result, record) = crashed.settled.the_result();
    assert_eq!(result.status, ResultStatus::Succeeded, "{result:?}");
    assert!(
        result
            .response
            .ends_with("read replicas 1 -> 2 (available 2): created orders-db-replica-2"),
        "{}",
        result.response
    );
    // The result's `from` is what the redelivery found, not the decision's.
    assert_eq!((record.from, record.to), (Some(1), Some(2)));
    assert_eq!(
        crashed.settled.deliveries, 2,
        "the killed one's and the redelivery"
    );
    eprintln!(
        "RDS crash: creates {created:?}, {} deliveries, result {} after {:?}: {}",
        crashed.settled.deliveries,
        result.status.as_str(),
        crashed.took_over_in,
        result.response
    );
}

/// An ECS command whose every attempt is cut short by a SIGKILL: the first
/// after its UpdateService took effect, the next two in the DescribeServices
/// with which the redelivery re-reads the service. The fourth delivery is
/// past the command's attempts (3: the binary has no flag for them) and
/// settles it from what the backend reports: DescribeServices has the
/// change, so the result is `succeeded` and says so.
///
/// Before the actuator read the backend there, this settled as `failed`
/// (`failed after 3 attempts`, audited `api not changed`) while ECS was at
/// desiredCount 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_whose_every_attempt_was_killed_reports_what_the_backend_has() {
    let stack = Stack::start(AwsTarget::Ecs).await;
    stack.proxy.hold("UpdateService");
    let mut actuator = stack.actuator().await;
    stack.scale().await;
    stack.proxy.held("UpdateService").await;
    actuator.kill().await;
    for _ in 2..=3 {
        // Scripted once the new actuator's start-up read is done: the held
        // DescribeServices is the redelivered command's.
        actuator = stack.actuator().await;
        stack.proxy.hold("DescribeServices");
        stack.proxy.held("DescribeServices").await;
        actuator.kill().await;
    }
    let _last = stack.actuator().await;
    let settled = stack.settled().await;
    let (result, record) = settled.the_result();
    let ecs = stack.moto.ecs().await;
    assert_eq!(nova_e2e::ecs_desired(&ecs, CLUSTER, SERVICE).await, 5);
    assert_eq!(stack.proxy.calls("UpdateService").len(), 1);
    assert_eq!(settled.deliveries, 4, "three killed attempts and the last");
    assert_eq!(
        result.status.as_str(),
        "succeeded",
        "DescribeServices reports desiredCount 5, set by the first attempt: {:?}",
        result.response
    );
    assert!(
        result
            .response
            .contains("3 attempts ended without an outcome")
            && result
                .response
                .contains("the backend reports desired 5, as asked")
            && !record.reason.contains("not changed"),
        "the result says what the backend has: {:?} / {:?}",
        result.response,
        record.reason
    );
}
