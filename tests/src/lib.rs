//! End-to-end test harness: real servers, started per test, killed on drop.
//!
//! - [`NatsServer`]: `nats-server -js -p -1` with a temp store; the port is
//!   read from the server's own log line.
//! - [`MotoServer`]: moto's AWS server on a free port, for ECS.
//! - [`Pipeline`]: the five services in this process, each on its own NATS
//!   connection and with its own shutdown, so a test can stop and restart one.
//! - [`AuditReader`]: waits for audit records on stream `NOVA_AUDIT`.
//! - [`process`]: the services' own binaries as separate processes, killed
//!   with SIGKILL on demand.
//! - [`proxy`]: a pass-through proxy in front of moto that counts the AWS
//!   calls reaching the backend, in order.
//! - [`cluster`]: three nats-servers in one cluster, killed, restarted and
//!   paused on demand, for broker fault tests.
//! - [`http`]: GETs of the services' probes and Prometheus's query API.
//! - [`corpus`]: the committed hostile inputs (`tests/corpus/hostile/`).
//! - [`control`]: one typed control request to the arbiter, answered in time.
//! - [`alertmanager`]: the real Alertmanager, alone or in a cluster, and
//!   an HTTP client for its API and for ingest's webhook bridge.
//! - [`within`]: every wait has a deadline.
//!
//! Tools are found through `NOVA_NATS_SERVER` / `NOVA_MOTO_SERVER`, then the
//! project's `.venv/bin` (made by `scripts/setup-tools.sh`), then `PATH`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use aws_credential_types::Credentials;
use futures_util::StreamExt;
use nova_runtime::reload::LivePolicy;
use nova_runtime::shutdown::{self, ShutdownTrigger};
use nova_shared::codec::{self, Encoding};
use nova_shared::evaluate::Partition;
use nova_shared::wire::{AuditRecord, Stage};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;

pub mod alertmanager;
pub mod aws_target;
pub mod cluster;
pub mod corpus;
pub mod http;
pub mod process;
pub mod proxy;

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

/// The arbiters' ack wait in tests: short, so a killed arbiter's trigger is
/// redelivered quickly.
pub const ARBITER_ACK_WAIT: Duration = Duration::from_secs(2);

/// The topology settings of a test on one server: one replica, the
/// arbiter's ack wait [`ARBITER_ACK_WAIT`], the actuator's the default (the
/// in-process actuators keep their default call timeout).
pub fn test_settings() -> nova_runtime::provision::Settings {
    nova_runtime::provision::Settings {
        arbiter_ack_wait: ARBITER_ACK_WAIT,
        ..Default::default()
    }
}

/// What the server says of durable consumer `consumer` on `stream` now.
pub async fn consumer_info(
    client: &async_nats::Client,
    stream: &str,
    consumer: &str,
) -> async_nats::jetstream::consumer::Info {
    let js = jetstream::new(client.clone());
    let stream = js.get_stream(stream).await.expect("stream");
    let mut consumer = stream
        .get_consumer::<async_nats::jetstream::consumer::pull::Config>(consumer)
        .await
        .expect("consumer");
    consumer.info().await.expect("consumer info").clone()
}

/// Provisions the topology with `settings` (what `novactl provision` does),
/// within `limit`: a fresh cluster may take a while to elect its leaders.
pub async fn provision(
    client: &async_nats::Client,
    settings: &nova_runtime::provision::Settings,
    limit: Duration,
) -> nova_runtime::provision::Report {
    let topology = nova_runtime::provision::topology(settings);
    within(
        "provisioning",
        limit,
        nova_runtime::provision::apply(&jetstream::new(client.clone()), &topology),
    )
    .await
    .unwrap_or_else(|error| panic!("provision: {error}"))
}

/// Tiny deterministic generator for fault schedules (xorshift64): the same
/// seed gives the same kills, so a failing schedule can be replayed.
pub struct Dice(pub u64);

impl Dice {
    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    /// A duration between `from` and `to` milliseconds, both included.
    pub fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to - from + 1))
    }
}

/// Runs `future` with a deadline; a timeout fails the test naming `what`.
pub async fn within<T>(what: &str, limit: Duration, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// A client connected to `url` (within the deadline), named for the server's logs.
pub async fn connect(url: &str, name: &str) -> async_nats::Client {
    within("NATS connect", WAIT, nova_runtime::nats::connect(url, name))
        .await
        .expect("connect")
}

/// The workspace root (parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Checks documents against `schemas/<schema>` with
/// `scripts/check_schemas.py`, the repo's own validator: `Err` holds what it
/// printed (one line per error).
pub fn schema_check(schema: &str, documents: &[serde_json::Value]) -> Result<(), String> {
    let root = workspace_root();
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("documents.jsonl");
    let lines: Vec<String> = documents.iter().map(|d| d.to_string()).collect();
    std::fs::write(&file, lines.join("\n") + "\n").expect("write documents");
    let out = std::process::Command::new(tool("python", "NOVA_PYTHON"))
        .arg(root.join("scripts/check_schemas.py"))
        .arg(root.join("schemas").join(schema))
        .arg(&file)
        .output()
        .expect("check_schemas.py runs");
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Panics unless every document matches `schemas/<schema>` ([`schema_check`]).
pub fn check_against_schema(schema: &str, documents: &[serde_json::Value]) {
    if let Err(printed) = schema_check(schema, documents) {
        panic!("{schema}: {printed}");
    }
}

/// Finds an external tool: `$env_var`, then `.venv/bin/<name>`, then `PATH`.
pub fn tool(name: &str, env_var: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env_var) {
        return PathBuf::from(path);
    }
    let venv = workspace_root().join(".venv/bin").join(name);
    if venv.exists() {
        return venv;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|candidate| candidate.exists())
        })
        .unwrap_or_else(|| panic!("{name} not found: run scripts/setup-tools.sh or set {env_var}"))
}

/// Spawns `command`, reads its stderr until a line contains `marker`, and
/// returns the child plus the text after the marker on that line. The rest
/// of stderr is drained in the background so the child never blocks.
pub(crate) async fn spawn_until(
    mut command: Command,
    what: &str,
    marker: &'static str,
) -> (Child, String) {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
    let stderr = child.stderr.take().expect("stderr is piped");
    let mut lines = BufReader::new(stderr).lines();
    let found = within(what, WAIT, async {
        let mut seen = Vec::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(at) = line.find(marker) {
                return line[at + marker.len()..].trim().to_string();
            }
            seen.push(line);
        }
        panic!(
            "{what} exited before saying {marker:?}:\n{}",
            seen.join("\n")
        );
    })
    .await;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, found)
}

/// A JetStream-enabled nats-server on a free loopback port, killed on drop.
pub struct NatsServer {
    child: Option<Child>,
    store: tempfile::TempDir,
    /// `nats://127.0.0.1:<port>`.
    pub url: String,
}

impl NatsServer {
    /// Starts a server and waits until it accepts clients.
    pub async fn start() -> NatsServer {
        let store = tempfile::tempdir().expect("temp dir");
        let mut command = Command::new(tool("nats-server", "NOVA_NATS_SERVER"));
        command
            .args(["-js", "-a", "127.0.0.1", "-p", "-1", "-sd"])
            .arg(store.path());
        let (child, address) = spawn_until(
            command,
            "nats-server",
            "Listening for client connections on",
        )
        .await;
        NatsServer {
            child: Some(child),
            store,
            url: format!("nats://{address}"),
        }
    }

    /// Kills the server (SIGKILL) and waits until it is gone; its store stays.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            within("nats-server to exit", WAIT, child.wait())
                .await
                .expect("nats-server exits");
        }
    }

    /// Starts the server again on its port with its store, as it was.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "nats-server is running");
        let port = self.url.rsplit(':').next().expect("a port").to_string();
        let mut command = Command::new(tool("nats-server", "NOVA_NATS_SERVER"));
        command
            .args(["-js", "-a", "127.0.0.1", "-p", &port, "-sd"])
            .arg(self.store.path());
        let (child, _) = spawn_until(
            command,
            "nats-server",
            "Listening for client connections on",
        )
        .await;
        self.child = Some(child);
    }

    /// A connected client, with the streams, buckets and consumers
    /// provisioned with [`test_settings`].
    pub async fn client(&self) -> async_nats::Client {
        self.client_with(&test_settings()).await
    }

    /// A connected client, with the topology provisioned with `settings`.
    pub async fn client_with(
        &self,
        settings: &nova_runtime::provision::Settings,
    ) -> async_nats::Client {
        let client = connect(&self.url, "test").await;
        provision(&client, settings, WAIT).await;
        client
    }
}

/// moto's AWS server on a free loopback port, killed on drop.
pub struct MotoServer {
    _child: Child,
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
}

impl MotoServer {
    /// Starts moto and waits until it serves.
    pub async fn start() -> MotoServer {
        let mut command = Command::new(tool("moto_server", "NOVA_MOTO_SERVER"));
        command.args(["-H", "127.0.0.1", "-p", "0"]);
        let (child, endpoint) = spawn_until(command, "moto_server", "Running on ").await;
        MotoServer {
            _child: child,
            endpoint,
        }
    }

    /// Credentials moto accepts.
    pub fn credentials() -> Credentials {
        Credentials::new("testing", "testing", None, None, "moto")
    }

    /// The HTTP client the SDKs use here: rustls with ring, as the
    /// actuator's own (the SDKs' default TLS features are off).
    fn http_client() -> aws_sdk_ecs::config::SharedHttpClient {
        aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https()
    }

    /// An ECS client for this server.
    pub async fn ecs(&self) -> aws_sdk_ecs::Client {
        let config = aws_sdk_ecs::Config::builder()
            .behavior_version(aws_sdk_ecs::config::BehaviorVersion::latest())
            .region(aws_sdk_ecs::config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Self::credentials())
            .http_client(Self::http_client())
            .build();
        aws_sdk_ecs::Client::from_conf(config)
    }

    /// An RDS client for this server, as a test's own (not the actuator's).
    pub fn rds(&self) -> aws_sdk_rds::Client {
        let config = aws_sdk_rds::Config::builder()
            .behavior_version(aws_sdk_rds::config::BehaviorVersion::latest())
            .region(aws_sdk_rds::config::Region::new("us-east-1"))
            .endpoint_url(&self.endpoint)
            .credentials_provider(Self::credentials())
            .http_client(Self::http_client())
            .build();
        aws_sdk_rds::Client::from_conf(config)
    }

    /// Creates an ECS cluster; returns the client.
    pub async fn ecs_cluster(&self, cluster: &str) -> aws_sdk_ecs::Client {
        let ecs = self.ecs().await;
        ecs.create_cluster()
            .cluster_name(cluster)
            .send()
            .await
            .expect("create cluster");
        ecs
    }

    /// Creates a cluster, a task definition and a service with `desired` tasks.
    pub async fn ecs_service(
        &self,
        cluster: &str,
        service: &str,
        desired: i32,
    ) -> aws_sdk_ecs::Client {
        self.ecs_cluster(cluster).await;
        self.ecs_service_in_cluster(cluster, service, desired).await
    }

    /// Creates a task definition and a service in an existing cluster.
    pub async fn ecs_service_in_cluster(
        &self,
        cluster: &str,
        service: &str,
        desired: i32,
    ) -> aws_sdk_ecs::Client {
        let ecs = self.ecs().await;
        let container = aws_sdk_ecs::types::ContainerDefinition::builder()
            .name("app")
            .image("busybox")
            .memory(128)
            .build();
        ecs.register_task_definition()
            .family(service)
            .container_definitions(container)
            .send()
            .await
            .expect("register task definition");
        ecs.create_service()
            .cluster(cluster)
            .service_name(service)
            .task_definition(service)
            .desired_count(desired)
            .send()
            .await
            .expect("create service");
        ecs
    }
}

/// Creates an RDS primary `id` (a small PostgreSQL instance) on moto.
pub async fn rds_primary(rds: &aws_sdk_rds::Client, id: &str) {
    rds.create_db_instance()
        .db_instance_identifier(id)
        .engine("postgres")
        .db_instance_class("db.t3.micro")
        .allocated_storage(20)
        .master_username("nova")
        .master_user_password("not-a-secret-1")
        .send()
        .await
        .expect("create primary");
}

/// The read replicas of `primary` as DescribeDBInstances lists them, those
/// being deleted left out, sorted.
pub async fn rds_replicas(rds: &aws_sdk_rds::Client, primary: &str) -> Vec<String> {
    let out = rds
        .describe_db_instances()
        .send()
        .await
        .expect("describe instances");
    let mut ids: Vec<String> = out
        .db_instances()
        .iter()
        .filter(|i| i.read_replica_source_db_instance_identifier() == Some(primary))
        .filter(|i| i.db_instance_status() != Some("deleting"))
        .filter_map(|i| i.db_instance_identifier().map(str::to_string))
        .collect();
    ids.sort();
    ids
}

/// The desired count of an ECS service.
pub async fn ecs_desired(ecs: &aws_sdk_ecs::Client, cluster: &str, service: &str) -> i32 {
    let out = ecs
        .describe_services()
        .cluster(cluster)
        .services(service)
        .send()
        .await
        .expect("describe services");
    out.services()[0].desired_count()
}

/// The five services running in this process.
pub struct Pipeline {
    url: String,
    policy: LivePolicy,
    running: HashMap<&'static str, Vec<(ShutdownTrigger, JoinHandle<()>)>>,
    /// The partition the next evaluator started will own.
    pub evaluator_partition: Partition,
}

/// Every stage, in pipeline order.
pub const STAGES: [Stage; 5] = [
    Stage::Ingest,
    Stage::Evaluator,
    Stage::Arbiter,
    Stage::Actuator,
    Stage::Audit,
];

impl Pipeline {
    /// Starts every stage against `nats`, with a fixed policy or one fed
    /// by a [`nova_runtime::reload::PolicySender`].
    pub async fn start(nats: &NatsServer, policy: impl Into<LivePolicy>) -> Pipeline {
        let mut pipeline = Pipeline {
            url: nats.url.clone(),
            policy: policy.into(),
            running: HashMap::new(),
            evaluator_partition: Partition::default(),
        };
        for stage in STAGES {
            pipeline.start_stage(stage).await;
        }
        pipeline
    }

    /// Starts one more replica of a stage, on a connection of its own, and
    /// waits until every replica of that stage answers its ping.
    pub async fn start_stage(&mut self, stage: Stage) {
        let client = connect(&self.url, stage.as_str()).await;
        let (trigger, signal) = shutdown::channel();
        let policy = self.policy.clone();
        let partition = self.evaluator_partition;
        let signal = signal.signal();
        let handle = match stage {
            Stage::Ingest => tokio::spawn(async move {
                nova_ingest::run(nova_ingest::Config::new(policy), client, signal)
                    .await
                    .expect("ingest");
            }),
            Stage::Evaluator => tokio::spawn(async move {
                let config = nova_evaluator::Config { policy, partition };
                nova_evaluator::run(config, client, signal)
                    .await
                    .expect("evaluator");
            }),
            Stage::Arbiter => tokio::spawn(async move {
                // A killed arbiter's unacked trigger comes back after the
                // consumer's ack wait, provisioned as ARBITER_ACK_WAIT.
                let config = nova_arbiter::Config::new(policy);
                nova_arbiter::run(config, client, signal)
                    .await
                    .expect("arbiter");
            }),
            Stage::Actuator => tokio::spawn(async move {
                let mut config = nova_actuator::Config::new(policy);
                config.aws_credentials = Some(MotoServer::credentials());
                nova_actuator::run(config, client, signal)
                    .await
                    .expect("actuator");
            }),
            Stage::Audit => tokio::spawn(async move {
                nova_audit::run(nova_audit::Config::default(), client, signal)
                    .await
                    .expect("audit");
            }),
            Stage::Unknown(name) => panic!("no stage {name:?} to start"),
        };
        let replicas = self.running.entry(stage.label()).or_default();
        replicas.push((trigger, handle));
        let count = replicas.len();
        self.wait_ready(stage, count).await;
    }

    /// Waits until `replicas` distinct replicas of `stage` answer its ping,
    /// i.e. their inputs are subscribed.
    pub async fn wait_ready(&self, stage: Stage, replicas: usize) {
        wait_ready(&self.url, stage, replicas).await;
    }

    /// Kills every replica of a stage where it stands, as a crash would:
    /// no work is finished, nothing is acked, the connections just close.
    pub async fn kill_stage(&mut self, stage: Stage) {
        let replicas = self
            .running
            .remove(stage.as_str())
            .expect("stage is running");
        for (trigger, handle) in replicas {
            handle.abort();
            let _ = handle.await;
            drop(trigger);
        }
    }

    /// Stops every replica of a stage and waits for each to finish its work in hand.
    pub async fn stop_stage(&mut self, stage: Stage) {
        let replicas = self
            .running
            .remove(stage.as_str())
            .expect("stage is running");
        for (trigger, handle) in replicas {
            trigger.trigger();
            within("a stage to stop", WAIT, handle)
                .await
                .expect("stage task");
        }
    }

    /// Stops every stage.
    pub async fn stop(mut self) {
        for stage in STAGES {
            self.stop_stage(stage).await;
        }
    }
}

/// Waits until `replicas` distinct replicas of `stage` (in this process or
/// not) answer its ping on the server at `url`, i.e. their inputs are
/// subscribed.
pub async fn wait_ready(url: &str, stage: Stage, replicas: usize) {
    let client = connect(url, "ping").await;
    let subject = nova_runtime::ping::subject(stage.clone());
    within(
        &format!("{replicas} {} replica(s) to answer", stage.as_str()),
        WAIT,
        async {
            let inbox = client.new_inbox();
            let mut replies = client.subscribe(inbox.clone()).await.expect("subscribe");
            let mut seen = std::collections::HashSet::new();
            while seen.len() < replicas {
                client
                    .publish_with_reply(subject.clone(), inbox.clone(), "".into())
                    .await
                    .expect("ping");
                // Collect what answers within a moment, then ask again: a
                // replica that is still starting answers a later round.
                let round = tokio::time::sleep(Duration::from_millis(50));
                tokio::pin!(round);
                loop {
                    tokio::select! {
                        _ = &mut round => break,
                        reply = replies.next() => match reply {
                            // A status message (503 "no responders")
                            // means nobody answered yet: not a replica.
                            Some(reply) if reply.status.is_some() => {}
                            Some(reply) => { seen.insert(reply.payload); }
                            None => break,
                        },
                    }
                }
            }
        },
    )
    .await;
}

/// Reads the audit stream from its start, in order.
pub struct AuditReader {
    messages: jetstream::consumer::pull::Ordered,
    /// Every record read so far.
    pub seen: Vec<AuditRecord>,
}

impl AuditReader {
    /// A reader of every record of the stream.
    pub async fn new(client: &async_nats::Client) -> AuditReader {
        let js = jetstream::new(client.clone());
        let stream = js
            .get_stream(nova_runtime::nats::AUDIT_STREAM)
            .await
            .expect("audit stream");
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .expect("audit reader");
        AuditReader {
            messages: consumer.messages().await.expect("audit messages"),
            seen: Vec::new(),
        }
    }

    /// A record matching `wanted` already read, or else the next one to
    /// arrive: for records of independent flows whose order is not the point.
    pub async fn find_or_wait(
        &mut self,
        what: &str,
        wanted: impl Fn(&AuditRecord) -> bool,
    ) -> AuditRecord {
        match self.seen.iter().find(|r| wanted(r)) {
            Some(record) => record.clone(),
            None => self.wait_for(what, wanted).await,
        }
    }

    /// Waits for the next record matching `wanted` (all records read on the
    /// way are kept in `seen`).
    pub async fn wait_for(
        &mut self,
        what: &str,
        wanted: impl Fn(&AuditRecord) -> bool,
    ) -> AuditRecord {
        let seen = &mut self.seen;
        let messages = &mut self.messages;
        let found = tokio::time::timeout(WAIT, async {
            loop {
                let message = messages
                    .next()
                    .await
                    .expect("audit stream open")
                    .expect("audit message");
                let record: AuditRecord = codec::decode(&message.payload, Encoding::MsgPack)
                    .expect("audit record decodes");
                seen.push(record.clone());
                if wanted(&record) {
                    return record;
                }
            }
        })
        .await;
        match found {
            Ok(record) => record,
            Err(_) => {
                let trail: Vec<String> = self
                    .seen
                    .iter()
                    .map(|r| {
                        format!(
                            "  {} {} {:?} {}: {}",
                            r.ts,
                            r.stage.as_str(),
                            r.kind,
                            r.outcome,
                            r.reason
                        )
                    })
                    .collect();
                panic!(
                    "timed out after {WAIT:?} waiting for {what}; audit so far:\n{}",
                    trail.join("\n")
                );
            }
        }
    }
}

/// Publishes a payload, MessagePack or JSON (with the `Content-Type` header).
pub async fn publish(client: &async_nats::Client, subject: String, payload: Vec<u8>, json: bool) {
    let mut headers = async_nats::HeaderMap::new();
    if json {
        headers.insert("Content-Type", codec::CONTENT_TYPE_JSON);
    }
    client
        .publish_with_headers(subject, headers, payload.into())
        .await
        .expect("publish");
    client.flush().await.expect("flush");
}

/// The first `count` messages of a stream, decoded, waiting (within
/// `limit`) for those not there yet.
pub async fn stream_first<T: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    stream: &str,
    count: usize,
    limit: Duration,
) -> Vec<T> {
    let js = jetstream::new(client.clone());
    let stream_handle = js.get_stream(stream).await.expect("stream");
    let consumer = stream_handle
        .create_consumer(pull::OrderedConfig::default())
        .await
        .expect("reader");
    let mut messages = consumer.messages().await.expect("messages");
    let mut out = Vec::with_capacity(count);
    within(&format!("{count} messages in {stream}"), limit, async {
        while out.len() < count {
            let message = messages.next().await.expect("open").expect("message");
            out.push(codec::decode(&message.payload, Encoding::MsgPack).expect("decodes"));
        }
    })
    .await;
    out
}

/// The trigger the tests' `grow` rule sends (`grow.scale_up`: `queue_depth
/// > 10`, add 1), as an evaluator would, for `target` at event time `ts`.
pub fn grow_trigger(
    target: &str,
    id: String,
    ts: i64,
    reason: String,
) -> nova_shared::wire::Trigger {
    use nova_shared::wire::{Direction, RuleFiring, ScaleAction, Trigger, TriggerSource, Version};
    Trigger {
        v: Version::CURRENT,
        id,
        ts,
        target: target.to_string(),
        source: TriggerSource::Rule,
        firings: vec![RuleFiring {
            rule: "grow.scale_up".into(),
            direction: Direction::Up,
            action: ScaleAction::Add(1),
            observed: Some(20.0),
            threshold: Some(10.0),
            condition: "queue_depth > 10".into(),
            held_secs: 0,
            reason,
        }],
        policy_revision: None,
        alert: None,
    }
}

/// Sends `request` on `nova.ctl.arbiter` (the verb in the request) and
/// returns the arbiter's reply.
pub async fn control(
    client: &async_nats::Client,
    request: nova_shared::wire::ControlRequest,
) -> nova_shared::wire::ControlReply {
    let payload = codec::encode(&request).expect("encode control request");
    let reply = within(
        &format!("{} on nova.ctl.arbiter", request.verb()),
        WAIT,
        client.request(nova_shared::subjects::ARBITER_CONTROL, payload.into()),
    )
    .await
    .expect("arbiter answers");
    codec::decode(&reply.payload, Encoding::MsgPack).expect("control reply")
}

/// Every message currently in a stream, decoded.
pub async fn stream_messages<T: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    stream: &str,
) -> Vec<T> {
    let js = jetstream::new(client.clone());
    let mut stream = js.get_stream(stream).await.expect("stream");
    let count = stream.info().await.expect("stream info").state.messages;
    if count == 0 {
        return Vec::new();
    }
    let consumer = stream
        .create_consumer(pull::OrderedConfig::default())
        .await
        .expect("reader");
    let mut messages = consumer.messages().await.expect("messages");
    let mut out = Vec::new();
    within("stream contents", WAIT, async {
        while (out.len() as u64) < count {
            let message = messages.next().await.expect("open").expect("message");
            out.push(codec::decode(&message.payload, Encoding::MsgPack).expect("decodes"));
        }
    })
    .await;
    out
}

impl NatsServer {
    /// The server's process id (for benchmarks that account its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }
}

impl MotoServer {
    /// The server's process id (for benchmarks that account its CPU time).
    pub fn pid(&self) -> Option<u32> {
        self._child.id()
    }
}

/// Stream `JOBS` (subjects `jobs.>`) with its durable pull consumer
/// `workers` (explicit acks): the backlog a target's `queue_depth:` block
/// names in the consumer-lag tests.
pub async fn jobs_stream(
    js: &jetstream::Context,
) -> (
    jetstream::stream::Stream,
    jetstream::consumer::Consumer<pull::Config>,
) {
    let stream = js
        .create_stream(jetstream::stream::Config {
            name: "JOBS".into(),
            subjects: vec!["jobs.>".into()],
            ..Default::default()
        })
        .await
        .expect("stream JOBS");
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some("workers".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .expect("durable consumer workers");
    (stream, consumer)
}
