//! The JetStream topology of the pipeline, in one place: its streams, the
//! KV buckets (streams `KV_<name>`) and the durable consumers, with every
//! setting the code depends on.
//!
//! - [`apply`] (run by `novactl provision`, by `novactl run` and by the
//!   tests) creates what is missing and updates what differs, and reports
//!   each object: created, updated (field old -> new) or unchanged.
//! - Services never create or change any of it. At start they check that
//!   what they use is there with the settings their code relies on
//!   ([`wait_for_streams`], [`wait_for_consumer`]), waiting up to
//!   [`PROVISION_PATIENCE`] for a provisioning step started at the same
//!   time (a Kubernetes Job beside the Deployments), and otherwise fail with
//!   one line naming the object, what is wrong and what to run.
//!
//! One provisioner sets the configuration, so replicas of two versions
//! starting together no longer overwrite each other's stream settings, and
//! a changed consumer setting (an ack wait) is applied, where creating a
//! consumer "if missing" never changed an existing one.

use std::fmt;
use std::time::Duration;

use async_nats::jetstream::{
    self, consumer,
    consumer::{AckPolicy, DeliverPolicy, ReplayPolicy},
    response::Response,
    stream,
};
use serde::Serialize;
use thiserror::Error;

use crate::nats::{
    ACTUATOR_CONSUMER, ARBITER_BUCKET, ARBITER_CONSUMER, AUDIT_STREAM, CAPACITY_BUCKET,
    COMMANDS_STREAM, DEAD_STREAM, DEDUPE_WINDOW, RESULTS_STREAM, SIM_BUCKET, TRIGGERS_STREAM,
};

/// The operator's choices in the topology; everything else is fixed by the
/// code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Replicas of every stream and bucket (3 on a cluster, 1 on one server).
    pub stream_replicas: usize,
    /// How long a trigger delivered to an arbiter may stay unacknowledged
    /// before JetStream hands it to another replica (a dead arbiter's
    /// trigger comes back after this).
    pub arbiter_ack_wait: Duration,
    /// The same for a command delivered to an actuator. An actuator needs
    /// at least three times its backend call timeout (see
    /// `nova-actuator --call-timeout-secs`), and checks it at start.
    pub actuator_ack_wait: Duration,
    /// How long stream `NOVA_AUDIT` keeps a record (30 days by default).
    pub audit_max_age: Duration,
    /// Replicas of stream `NOVA_AUDIT`; `None`: `stream_replicas`.
    pub audit_replicas: Option<usize>,
}

/// How long stream `NOVA_AUDIT` keeps records unless told otherwise.
pub const AUDIT_MAX_AGE: Duration = Duration::from_secs(30 * 86_400);

impl Default for Settings {
    fn default() -> Self {
        Settings {
            stream_replicas: 1,
            arbiter_ack_wait: Duration::from_secs(30),
            actuator_ack_wait: Duration::from_secs(60),
            audit_max_age: AUDIT_MAX_AGE,
            audit_replicas: None,
        }
    }
}

/// A duration as an operator writes it (`30d`, `12h`, `90m`, `1h 30m`):
/// humantime's grammar, the one `--since 2h` takes in novactl. One line
/// naming what is wrong otherwise.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Err(format!("{text:?} is zero: give a positive duration")),
        Ok(d) => Ok(d),
        Err(error) => Err(format!(
            "{text:?} is not a duration ({error}): write e.g. 30d, 12h or 90m"
        )),
    }
}

/// The settings as flags (each also read from the environment), for
/// `novactl provision` and `novactl run`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProvisionArgs {
    /// Replicas of each JetStream stream and bucket (3 on a NATS cluster).
    #[arg(long, env = "NOVA_STREAM_REPLICAS", default_value_t = 1)]
    pub stream_replicas: usize,
    /// Seconds a trigger delivered to an arbiter may stay unacknowledged
    /// before it is redelivered (to another replica, if that one died).
    #[arg(long, env = "NOVA_ARBITER_ACK_WAIT_SECS", default_value_t = 30)]
    pub arbiter_ack_wait_secs: u64,
    /// Seconds a command delivered to an actuator may stay unacknowledged
    /// before it is redelivered; at least 3 × the actuators'
    /// --call-timeout-secs (20 s by default).
    #[arg(long, env = "NOVA_ACTUATOR_ACK_WAIT_SECS", default_value_t = 60)]
    pub actuator_ack_wait_secs: u64,
    /// How long stream NOVA_AUDIT keeps a record (`30d`, `12h`, `90m`);
    /// an existing stream is updated to it.
    #[arg(long, env = "NOVA_AUDIT_MAX_AGE", default_value = "30d", value_parser = parse_duration)]
    pub audit_max_age: Duration,
    /// Replicas of stream NOVA_AUDIT (default: --stream-replicas); on a
    /// cluster, an existing stream is updated to it.
    #[arg(long, env = "NOVA_AUDIT_REPLICAS")]
    pub audit_replicas: Option<usize>,
}

impl ProvisionArgs {
    /// The settings these flags give.
    pub fn settings(&self) -> Settings {
        Settings {
            stream_replicas: self.stream_replicas.max(1),
            arbiter_ack_wait: Duration::from_secs(self.arbiter_ack_wait_secs.max(1)),
            actuator_ack_wait: Duration::from_secs(self.actuator_ack_wait_secs.max(1)),
            audit_max_age: self.audit_max_age,
            audit_replicas: self.audit_replicas.map(|r| r.max(1)),
        }
    }
}

/// A stream, or the stream behind a KV bucket.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// How it is named to people: `stream NOVA_TRIGGERS`, `KV bucket nova_arbiter`.
    pub object: String,
    /// Its configuration.
    pub config: stream::Config,
    /// Whether it is a KV bucket (read through the KV API).
    pub bucket: bool,
}

/// A durable pull consumer.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    /// The stream it reads.
    pub stream: &'static str,
    /// Its durable name.
    pub name: &'static str,
    /// Its configuration.
    pub config: consumer::Config,
    /// The `novactl provision` flag that sets its ack wait.
    pub ack_wait_flag: &'static str,
}

impl ConsumerSpec {
    /// How it is named to people.
    pub fn object(&self) -> String {
        consumer_object(self.name, self.stream)
    }
}

fn consumer_object(name: &str, stream: &str) -> String {
    format!("consumer {name} on stream {stream}")
}

/// Everything the pipeline needs in JetStream.
#[derive(Debug, Clone)]
pub struct Topology {
    /// Streams and buckets, in the order they are provisioned.
    pub streams: Vec<StreamSpec>,
    /// Durable consumers, provisioned after their streams.
    pub consumers: Vec<ConsumerSpec>,
}

/// The topology with these settings.
pub fn topology(settings: &Settings) -> Topology {
    use nova_shared::subjects as s;
    let day = Duration::from_secs(86_400);
    let replicas = settings.stream_replicas;
    let mut streams: Vec<StreamSpec> = [
        (TRIGGERS_STREAM, s::TRIGGERS_ALL, day),
        (COMMANDS_STREAM, s::COMMANDS_ALL, 7 * day),
        (RESULTS_STREAM, s::RESULTS_ALL, 7 * day),
        (AUDIT_STREAM, s::AUDIT_ALL, AUDIT_MAX_AGE),
        (DEAD_STREAM, s::DEAD_ALL, 7 * day),
    ]
    .into_iter()
    .map(|(name, subjects, max_age)| {
        // The audit stream's retention and replicas are the operator's.
        let (max_age, replicas) = if name == AUDIT_STREAM {
            (
                settings.audit_max_age,
                settings.audit_replicas.unwrap_or(replicas),
            )
        } else {
            (max_age, replicas)
        };
        StreamSpec {
            object: format!("stream {name}"),
            config: stream_config(name, subjects, max_age, replicas),
            bucket: false,
        }
    })
    .collect();
    streams.extend(
        [(ARBITER_BUCKET, 5), (CAPACITY_BUCKET, 5), (SIM_BUCKET, 1)]
            .into_iter()
            .map(|(name, history)| StreamSpec {
                object: format!("KV bucket {name}"),
                config: bucket_config(name, history, replicas),
                bucket: true,
            }),
    );
    let consumers = vec![
        ConsumerSpec {
            stream: TRIGGERS_STREAM,
            name: ARBITER_CONSUMER,
            config: consumer_config(ARBITER_CONSUMER, settings.arbiter_ack_wait),
            ack_wait_flag: "--arbiter-ack-wait-secs",
        },
        ConsumerSpec {
            stream: COMMANDS_STREAM,
            name: ACTUATOR_CONSUMER,
            config: consumer_config(ACTUATOR_CONSUMER, settings.actuator_ack_wait),
            ack_wait_flag: "--actuator-ack-wait-secs",
        },
    ];
    Topology { streams, consumers }
}

fn stream_config(name: &str, subjects: &str, max_age: Duration, replicas: usize) -> stream::Config {
    stream::Config {
        name: name.to_string(),
        subjects: vec![subjects.to_string()],
        max_age,
        duplicate_window: DEDUPE_WINDOW,
        num_replicas: replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

/// The stream behind KV bucket `name`, as async-nats's `create_key_value`
/// makes it (`KV_<name>` on `$KV.<name>.>`, one value per key kept
/// `history` deep, rollups allowed, deletes only through the KV API), with
/// one difference: `allow_direct` is off.
///
/// With direct gets allowed, every replica of an R3 bucket answers a read,
/// and a follower that has not yet applied the leader's last write answers
/// with the value before it: the actuator's observation of a simulated
/// fleet could then store a desired capacity from before the last command,
/// and the arbiter would take it as its base (the cluster chaos test saw a
/// base go back; BENCHMARKS.md, "Broker failover"). Without direct gets,
/// `Store::get` asks the stream leader (`STREAM.MSG.GET`), which has every
/// write it acknowledged. Compare-and-set writes were always checked by the
/// leader; this makes reads as strong as JetStream offers.
fn bucket_config(name: &str, history: i64, replicas: usize) -> stream::Config {
    stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: history,
        num_replicas: replicas,
        storage: stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        deny_purge: false,
        allow_direct: false,
        discard: stream::DiscardPolicy::New,
        max_bytes: -1,
        max_messages: -1,
        max_message_size: -1,
        ..Default::default()
    }
}

/// A durable pull consumer of every message of its stream, acknowledged one
/// by one, redelivered without limit: the arbiter and the actuator nak what
/// they cannot do yet and give up on their own clock
/// (`trigger_relevance`, `max_attempts`), so a server-side limit would drop
/// messages without an audit record.
fn consumer_config(name: &str, ack_wait: Duration) -> consumer::Config {
    consumer::Config {
        durable_name: Some(name.to_string()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait,
        max_deliver: -1,
        replay_policy: ReplayPolicy::Instant,
        ..Default::default()
    }
}

// ---------------------------------------------------------------- compare

/// One setting that differs between what the code wants and what the
/// server has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    /// The field, as NATS names it.
    pub field: &'static str,
    /// What the server has.
    pub old: String,
    /// What the code wants.
    pub new: String,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.field, self.old, self.new)
    }
}

/// A duration as people write it: `600ms`, `30s`, `10m`, `2h`, `7d`.
fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() != 0 || secs == 0 {
        return format!("{}ms", d.as_millis());
    }
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if secs.is_multiple_of(size) {
            return format!("{}{unit}", secs / size);
        }
    }
    format!("{secs}s")
}

/// A limit where zero or less means none (the server answers -1 for a 0
/// it was sent).
fn limit(value: i64) -> String {
    if value <= 0 {
        "unlimited".into()
    } else {
        value.to_string()
    }
}

/// An enum as NATS spells it on the wire (`explicit`, `file`, `new`).
fn wire<T: Serialize + fmt::Debug>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        // The deliver policy is flattened into the consumer config, with
        // its start sequence or time beside it.
        Ok(serde_json::Value::Object(fields)) => fields
            .iter()
            .map(|(key, value)| match value {
                serde_json::Value::String(text) if key == "deliver_policy" => text.clone(),
                other => format!("{key} {other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        Ok(other) => other.to_string(),
        Err(_) => format!("{value:?}"),
    }
}

fn push(changes: &mut Vec<Change>, field: &'static str, old: String, new: String) {
    if old != new {
        changes.push(Change { field, old, new });
    }
}

/// What differs between the stream `want` and the server's `have`, over
/// the fields this code sets. A zero duplicate window means the server's
/// default (2 minutes), so it is compared only when set.
pub fn stream_changes(want: &stream::Config, have: &stream::Config) -> Vec<Change> {
    let mut changes = Vec::new();
    let subjects = |config: &stream::Config| {
        let mut subjects = config.subjects.clone();
        subjects.sort();
        subjects.join(",")
    };
    push(&mut changes, "subjects", subjects(have), subjects(want));
    push(
        &mut changes,
        "num_replicas",
        have.num_replicas.max(1).to_string(),
        want.num_replicas.max(1).to_string(),
    );
    push(
        &mut changes,
        "storage",
        wire(&have.storage),
        wire(&want.storage),
    );
    push(
        &mut changes,
        "retention",
        wire(&have.retention),
        wire(&want.retention),
    );
    push(
        &mut changes,
        "discard",
        wire(&have.discard),
        wire(&want.discard),
    );
    push(
        &mut changes,
        "max_age",
        duration(have.max_age),
        duration(want.max_age),
    );
    if !want.duplicate_window.is_zero() {
        push(
            &mut changes,
            "duplicate_window",
            duration(have.duplicate_window),
            duration(want.duplicate_window),
        );
    }
    push(
        &mut changes,
        "max_msgs_per_subject",
        limit(have.max_messages_per_subject),
        limit(want.max_messages_per_subject),
    );
    push(
        &mut changes,
        "max_msgs",
        limit(have.max_messages),
        limit(want.max_messages),
    );
    push(
        &mut changes,
        "max_bytes",
        limit(have.max_bytes),
        limit(want.max_bytes),
    );
    push(
        &mut changes,
        "max_msg_size",
        limit(have.max_message_size.into()),
        limit(want.max_message_size.into()),
    );
    for (field, have, want) in [
        ("allow_rollup_hdrs", have.allow_rollup, want.allow_rollup),
        ("deny_delete", have.deny_delete, want.deny_delete),
        ("deny_purge", have.deny_purge, want.deny_purge),
        ("allow_direct", have.allow_direct, want.allow_direct),
    ] {
        push(&mut changes, field, have.to_string(), want.to_string());
    }
    changes
}

/// What differs between the consumer `want` and the server's `have`, over
/// the fields this code sets.
pub fn consumer_changes(want: &consumer::Config, have: &consumer::Config) -> Vec<Change> {
    let mut changes = Vec::new();
    push(
        &mut changes,
        "ack_policy",
        wire(&have.ack_policy),
        wire(&want.ack_policy),
    );
    push(
        &mut changes,
        "ack_wait",
        duration(have.ack_wait),
        duration(want.ack_wait),
    );
    push(
        &mut changes,
        "max_deliver",
        limit(have.max_deliver),
        limit(want.max_deliver),
    );
    push(
        &mut changes,
        "deliver_policy",
        wire(&have.deliver_policy),
        wire(&want.deliver_policy),
    );
    push(
        &mut changes,
        "replay_policy",
        wire(&have.replay_policy),
        wire(&want.replay_policy),
    );
    push(
        &mut changes,
        "filter_subject",
        have.filter_subject.clone(),
        want.filter_subject.clone(),
    );
    changes
}

/// What is wrong, for a service, with the stream (or bucket) `have`: the
/// settings its code relies on, not the operator's choices (replicas,
/// limits). `None` if it will do.
pub fn stream_problem(want: &StreamSpec, have: &stream::Config) -> Option<String> {
    if let Some(missing) = want
        .config
        .subjects
        .iter()
        .find(|subject| !have.subjects.contains(subject))
    {
        return Some(format!("does not take subject {missing}"));
    }
    if !want.bucket && have.duplicate_window < want.config.duplicate_window {
        return Some(format!(
            "keeps message ids for {}, less than the {} de-duplication needs",
            duration(have.duplicate_window),
            duration(want.config.duplicate_window)
        ));
    }
    if want.bucket && have.allow_direct != want.config.allow_direct {
        return Some(
            "has allow_direct on, so a read could come from a follower that has not seen \
             the last write"
                .into(),
        );
    }
    None
}

/// The ack wait a service needs at least, and why (for its error line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinAckWait {
    /// The shortest ack wait that will do.
    pub at_least: Duration,
    /// Why: `three times --call-timeout-secs 20`.
    pub why: String,
}

/// What is wrong, for a service, with the consumer `have`. `min_ack_wait`:
/// the ack wait the service needs at least, if it needs one.
pub fn consumer_problem(
    have: &consumer::Config,
    min_ack_wait: Option<&MinAckWait>,
) -> Option<String> {
    if have.ack_policy != AckPolicy::Explicit {
        return Some(format!(
            "has ack_policy {}; the service acknowledges each message (explicit)",
            wire(&have.ack_policy)
        ));
    }
    if have.max_deliver > 0 {
        return Some(format!(
            "has max_deliver {}, so a message retried that often would be dropped unaudited",
            have.max_deliver
        ));
    }
    if have.deliver_policy != DeliverPolicy::All {
        return Some(format!(
            "has deliver_policy {}, so stored messages would be skipped",
            wire(&have.deliver_policy)
        ));
    }
    if !have.filter_subject.is_empty() || !have.filter_subjects.is_empty() {
        return Some("filters its stream's subjects; it must take them all".into());
    }
    match min_ack_wait {
        Some(min) if have.ack_wait < min.at_least => Some(format!(
            "has ack_wait {}, shorter than the {} this service needs ({})",
            duration(have.ack_wait),
            duration(min.at_least),
            min.why
        )),
        _ => None,
    }
}

// ------------------------------------------------------------------ apply

/// What provisioning did to one object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "changes")]
pub enum Outcome {
    /// It was missing.
    Created,
    /// It differed; these settings were changed.
    Updated(Vec<Change>),
    /// It was as wanted.
    Unchanged,
}

/// One object and what was done to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Applied {
    /// `stream NOVA_TRIGGERS`, `KV bucket nova_arbiter`, `consumer arbiter on stream NOVA_TRIGGERS`.
    pub object: String,
    /// What was done.
    #[serde(flatten)]
    pub outcome: Outcome,
}

impl fmt::Display for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Created => write!(f, "{}: created", self.object),
            Outcome::Unchanged => write!(f, "{}: unchanged", self.object),
            Outcome::Updated(changes) => {
                let changes: Vec<String> = changes.iter().map(Change::to_string).collect();
                write!(f, "{}: updated: {}", self.object, changes.join(", "))
            }
        }
    }
}

/// What [`apply`] did, one entry per object, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Every object of the topology.
    pub objects: Vec<Applied>,
}

impl Report {
    /// Whether nothing had to be created or changed.
    pub fn unchanged(&self) -> bool {
        self.objects
            .iter()
            .all(|applied| applied.outcome == Outcome::Unchanged)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for applied in &self.objects {
            writeln!(f, "{applied}")?;
        }
        Ok(())
    }
}

/// Provisioning failed.
#[derive(Debug, Error)]
#[error("cannot {action} {object}{changes}: {reason}")]
pub struct ProvisionError {
    /// What was being done: `create`, `update`, `read`.
    pub action: &'static str,
    /// The object.
    pub object: String,
    /// For an update, what it was to change: ` (ack_wait 30s -> 2s)`.
    pub changes: String,
    /// Why, in one line.
    pub reason: String,
}

/// One JetStream API request that failed.
#[derive(Debug)]
struct ApiFailure {
    /// Whether another attempt may succeed.
    transient: bool,
    reason: String,
}

/// Sends one JetStream API request: `Ok(None)` when the server says the
/// object is not there.
async fn api<T: serde::de::DeserializeOwned>(
    js: &jetstream::Context,
    subject: String,
    payload: &impl Serialize,
) -> Result<Option<T>, ApiFailure> {
    match js.request::<_, _, Response<T>>(subject, payload).await {
        Ok(Response::Ok(answer)) => Ok(Some(answer)),
        Ok(Response::Err { error }) => {
            let code = error.error_code();
            if code == jetstream::ErrorCode::STREAM_NOT_FOUND
                || code == jetstream::ErrorCode::CONSUMER_NOT_FOUND
            {
                return Ok(None);
            }
            // A 4xx answer is the server refusing this configuration: the
            // same request would be refused again. An "already exists" is
            // another provisioner's create winning: the next attempt reads
            // it. Anything else (503 no leader, 500) passes.
            let raced = code == jetstream::ErrorCode::STREAM_NAME_EXIST
                || code == jetstream::ErrorCode::CONSUMER_ALREADY_EXISTS
                || code == jetstream::ErrorCode::CONSUMER_NAME_EXIST;
            // Refusals the server answers with a 500 that no retry changes.
            let refused = [
                jetstream::ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED,
                jetstream::ErrorCode::STREAM_REPLICAS_NOT_UPDATABLE,
                jetstream::ErrorCode::STREAM_INVALID_CONFIG,
                jetstream::ErrorCode::STREAM_SUBJECT_OVERLAP,
                jetstream::ErrorCode::JETSTREAM_NOT_ENABLED,
                jetstream::ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT,
            ]
            .contains(&code);
            let hint = if code == jetstream::ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED {
                "; a single server takes --stream-replicas 1 (and --audit-replicas 1)"
            } else {
                ""
            };
            Err(ApiFailure {
                transient: raced || !(refused || (400..500).contains(&error.code())),
                reason: format!("{error}{hint}"),
            })
        }
        Err(error) => Err(ApiFailure {
            transient: true,
            reason: match error.kind() {
                jetstream::context::RequestErrorKind::TimedOut => {
                    "JetStream did not answer in time (is a leader being elected?)".into()
                }
                jetstream::context::RequestErrorKind::NoResponders => {
                    "no JetStream answered: is nats-server running with JetStream (-js)?".into()
                }
                _ => format!("request failed: {error}"),
            },
        }),
    }
}

/// Attempts of one object's provisioning, with back-off between them.
const PROVISION_ATTEMPTS: u32 = 6;

/// Runs one object's provisioning until it succeeds, fails for good, or
/// the attempts run out. On a fresh cluster the meta leader answers some
/// requests with a timeout or "no leader" for a few seconds; the next
/// attempt reads the object again, so a create that did happen is seen.
async fn retrying<T, F: Future<Output = Result<T, Failed>>>(
    object: &str,
    mut attempt: impl FnMut() -> F,
) -> Result<T, ProvisionError> {
    let mut delay = Duration::from_millis(500);
    for n in 1.. {
        match attempt().await {
            Ok(done) => return Ok(done),
            Err(Failed {
                action, failure, ..
            }) if failure.transient && n < PROVISION_ATTEMPTS => {
                tracing::warn!(
                    object,
                    attempt = n,
                    "cannot {action} yet, trying again: {}",
                    failure.reason
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(4));
            }
            Err(Failed {
                action,
                changes,
                failure,
            }) => {
                return Err(ProvisionError {
                    action,
                    object: object.to_string(),
                    changes,
                    reason: failure.reason,
                });
            }
        }
    }
    unreachable!("the loop returns on the last attempt")
}

/// One attempt at an object that failed: in which step, and why.
struct Failed {
    action: &'static str,
    /// For an update: ` (field old -> new, ...)`.
    changes: String,
    failure: ApiFailure,
}

fn failed(action: &'static str) -> impl FnOnce(ApiFailure) -> Failed {
    move |failure| Failed {
        action,
        changes: String::new(),
        failure,
    }
}

fn update_failed(changes: &[Change]) -> impl FnOnce(ApiFailure) -> Failed + '_ {
    move |failure| {
        let changes: Vec<String> = changes.iter().map(Change::to_string).collect();
        Failed {
            action: "update",
            changes: format!(" ({})", changes.join(", ")),
            failure,
        }
    }
}

async fn apply_stream(
    js: &jetstream::Context,
    spec: &StreamSpec,
) -> Result<Outcome, ProvisionError> {
    let name = &spec.config.name;
    retrying(&spec.object, || async move {
        let have: Option<stream::Info> =
            api(js, format!("STREAM.INFO.{name}"), &serde_json::json!({}))
                .await
                .map_err(failed("read"))?;
        match have {
            None => {
                api::<stream::Info>(js, format!("STREAM.CREATE.{name}"), &spec.config)
                    .await
                    .map_err(failed("create"))?;
                Ok(Outcome::Created)
            }
            Some(info) => {
                let changes = stream_changes(&spec.config, &info.config);
                if changes.is_empty() {
                    return Ok(Outcome::Unchanged);
                }
                api::<stream::Info>(js, format!("STREAM.UPDATE.{name}"), &spec.config)
                    .await
                    .map_err(update_failed(&changes))?;
                Ok(Outcome::Updated(changes))
            }
        }
    })
    .await
}

async fn apply_consumer(
    js: &jetstream::Context,
    spec: &ConsumerSpec,
) -> Result<Outcome, ProvisionError> {
    let (stream, name) = (spec.stream, spec.name);
    retrying(&spec.object(), || async move {
        let have: Option<consumer::Info> = api(
            js,
            format!("CONSUMER.INFO.{stream}.{name}"),
            &serde_json::json!({}),
        )
        .await
        .map_err(failed("read"))?;
        // "create" fails if another provisioner made it meanwhile, "update"
        // if it is gone: never a silent overwrite of what was just read.
        let request = |action: &str| {
            serde_json::json!({"stream_name": stream, "config": spec.config, "action": action})
        };
        let subject = format!("CONSUMER.CREATE.{stream}.{name}");
        match have {
            None => {
                api::<consumer::Info>(js, subject, &request("create"))
                    .await
                    .map_err(failed("create"))?;
                Ok(Outcome::Created)
            }
            Some(info) => {
                let changes = consumer_changes(&spec.config, &info.config);
                if changes.is_empty() {
                    return Ok(Outcome::Unchanged);
                }
                api::<consumer::Info>(js, subject, &request("update"))
                    .await
                    .map_err(update_failed(&changes))?;
                Ok(Outcome::Updated(changes))
            }
        }
    })
    .await
}

/// Creates what is missing of `topology` and updates what differs, streams
/// and buckets first, then the consumers; stops at the first object that
/// cannot be provisioned. Safe to run again at any time, and from several
/// places at once.
pub async fn apply(js: &jetstream::Context, topology: &Topology) -> Result<Report, ProvisionError> {
    let mut report = Report::default();
    for spec in &topology.streams {
        let outcome = apply_stream(js, spec).await?;
        report.objects.push(Applied {
            object: spec.object.clone(),
            outcome,
        });
    }
    for spec in &topology.consumers {
        let outcome = apply_consumer(js, spec).await?;
        report.objects.push(Applied {
            object: spec.object(),
            outcome,
        });
    }
    Ok(report)
}

// ------------------------------------------------------------------ check

/// How long a service waits at start for what it needs to be provisioned
/// (missing, or with a setting it cannot work with) before it fails: a
/// provisioning Job started beside it has that long, and Kubernetes
/// restarts a service that gave up. A fresh three-node cluster elects its
/// first leaders within about that time, too.
pub const PROVISION_PATIENCE: Duration = Duration::from_secs(15);

/// A service found what it needs missing or different, and waited
/// [`PROVISION_PATIENCE`] in vain.
#[derive(Debug, Error)]
#[error("{object} {problem}: run `{fix}` (waited {waited_secs} s)")]
pub struct CheckError {
    /// The object.
    pub object: String,
    /// What is wrong with it.
    pub problem: String,
    /// The command that puts it right.
    pub fix: String,
    /// How long the service waited.
    pub waited_secs: u64,
}

/// The command to print in a [`CheckError`] for the NATS at `url`
/// (`None`: a library call that does not know its service's URL, which
/// is then written `URL`).
pub fn fix_command(url: Option<&str>, extra: &str) -> String {
    match url {
        Some(url) => format!("novactl provision --nats-url {url}{extra}"),
        None => format!("novactl provision --nats-url URL{extra}"),
    }
}

/// Checks until `check` finds nothing wrong, for at most
/// [`PROVISION_PATIENCE`], with back-off (250 ms doubling to under 2 s), a
/// last check at the end. `check` answers what it found, or the object and
/// its problem (missing, different, or unreadable for now: all waited for).
async fn patiently<T, F: Future<Output = Result<T, (String, String)>>>(
    fix: String,
    mut check: impl FnMut() -> F,
) -> Result<T, CheckError> {
    let started = tokio::time::Instant::now();
    let mut backoff =
        crate::retry::Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
    loop {
        match check().await {
            Ok(found) => return Ok(found),
            Err((object, problem)) => {
                let waited = started.elapsed();
                if waited >= PROVISION_PATIENCE {
                    return Err(CheckError {
                        object,
                        problem,
                        fix,
                        waited_secs: waited.as_secs_f64().round() as u64,
                    });
                }
                // The last check comes at the end of the patience.
                let delay = backoff
                    .next()
                    .unwrap_or(PROVISION_PATIENCE)
                    .min(PROVISION_PATIENCE - waited);
                tracing::warn!("waiting for provisioning: {object} {problem}; run `{fix}`");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Waits until every stream and bucket of the topology is there with the
/// settings the services rely on ([`stream_problem`]). Every service
/// writes audit records and dead letters, and each reads or writes most of
/// the rest, so each checks them all.
pub async fn wait_for_streams(js: &jetstream::Context, url: &str) -> Result<(), CheckError> {
    let topology = topology(&Settings::default());
    let fix = fix_command(Some(url), "");
    patiently(fix, || async {
        for spec in &topology.streams {
            let name = &spec.config.name;
            let have: Option<stream::Info> =
                api(js, format!("STREAM.INFO.{name}"), &serde_json::json!({}))
                    .await
                    .map_err(|failure| {
                        (
                            spec.object.clone(),
                            format!("cannot be read: {}", failure.reason),
                        )
                    })?;
            let Some(have) = have else {
                return Err((spec.object.clone(), "is missing".to_string()));
            };
            if let Some(problem) = stream_problem(spec, &have.config) {
                return Err((spec.object.clone(), problem));
            }
        }
        Ok(())
    })
    .await
}

/// Waits until the durable consumer `name` on `stream` is there with the
/// settings its service relies on ([`consumer_problem`]), and returns what
/// the server has (its ack wait, say).
pub async fn wait_for_consumer(
    js: &jetstream::Context,
    stream: &str,
    name: &str,
    min_ack_wait: Option<&MinAckWait>,
) -> Result<consumer::Info, CheckError> {
    let flag = topology(&Settings::default())
        .consumers
        .iter()
        .find(|spec| spec.name == name)
        .map_or("--arbiter-ack-wait-secs", |spec| spec.ack_wait_flag);
    let extra = min_ack_wait.map_or(String::new(), |min| {
        format!(" {flag} {}", min.at_least.as_secs_f64().ceil())
    });
    let object = consumer_object(name, stream);
    patiently(fix_command(None, &extra), || async {
        let have: Option<consumer::Info> = api(
            js,
            format!("CONSUMER.INFO.{stream}.{name}"),
            &serde_json::json!({}),
        )
        .await
        .map_err(|failure| {
            (
                object.clone(),
                format!("cannot be read: {}", failure.reason),
            )
        })?;
        let Some(have) = have else {
            return Err((object.clone(), "is missing".to_string()));
        };
        match consumer_problem(&have.config, min_ack_wait) {
            Some(problem) => Err((object.clone(), problem)),
            None => Ok(have),
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(object: &str) -> StreamSpec {
        topology(&Settings::default())
            .streams
            .into_iter()
            .find(|spec| spec.object == object)
            .expect("in the topology")
    }

    fn consumer(name: &str, settings: &Settings) -> ConsumerSpec {
        topology(settings)
            .consumers
            .into_iter()
            .find(|spec| spec.name == name)
            .expect("in the topology")
    }

    /// What the server answers for a config it was sent: unlimited limits
    /// as -1, its default duplicate window, the consumer defaults it fills.
    fn as_server_has_it(mut config: stream::Config) -> stream::Config {
        for limit in [
            &mut config.max_messages,
            &mut config.max_bytes,
            &mut config.max_messages_per_subject,
        ] {
            if *limit == 0 {
                *limit = -1;
            }
        }
        if config.max_message_size == 0 {
            config.max_message_size = -1;
        }
        if config.duplicate_window.is_zero() {
            config.duplicate_window = Duration::from_secs(120);
        }
        config.max_consumers = -1;
        config
    }

    fn change(field: &'static str, old: &str, new: &str) -> Change {
        Change {
            field,
            old: old.into(),
            new: new.into(),
        }
    }

    #[test]
    fn stream_changes_name_what_differs_and_nothing_else() {
        let triggers = spec("stream NOVA_TRIGGERS").config;
        let bucket = spec("KV bucket nova_arbiter").config;
        let cases: Vec<(&str, stream::Config, stream::Config, Vec<Change>)> = vec![
            (
                "as created, with the server's defaults filled in",
                triggers.clone(),
                as_server_has_it(triggers.clone()),
                vec![],
            ),
            (
                "a bucket as created: its duplicate window is the server's",
                bucket.clone(),
                as_server_has_it(bucket.clone()),
                vec![],
            ),
            (
                "replicas raised for a cluster",
                stream::Config {
                    num_replicas: 3,
                    ..triggers.clone()
                },
                as_server_has_it(triggers.clone()),
                vec![change("num_replicas", "1", "3")],
            ),
            (
                "a bucket made by create_key_value, with direct gets",
                bucket.clone(),
                as_server_has_it(stream::Config {
                    allow_direct: true,
                    ..bucket.clone()
                }),
                vec![change("allow_direct", "true", "false")],
            ),
            (
                "an older version's shorter dedupe window and retention",
                triggers.clone(),
                as_server_has_it(stream::Config {
                    duplicate_window: Duration::from_secs(120),
                    max_age: Duration::from_secs(3600),
                    ..triggers.clone()
                }),
                vec![
                    change("max_age", "1h", "1d"),
                    change("duplicate_window", "2m", "10m"),
                ],
            ),
            (
                "subjects compared as a set",
                stream::Config {
                    subjects: vec!["b".into(), "a".into()],
                    ..triggers.clone()
                },
                as_server_has_it(stream::Config {
                    subjects: vec!["a".into(), "b".into()],
                    ..triggers.clone()
                }),
                vec![],
            ),
            (
                "memory storage and a message limit",
                triggers.clone(),
                as_server_has_it(stream::Config {
                    storage: stream::StorageType::Memory,
                    max_messages: 1000,
                    ..triggers.clone()
                }),
                vec![
                    change("storage", "memory", "file"),
                    change("max_msgs", "1000", "unlimited"),
                ],
            ),
        ];
        for (name, want, have, expected) in cases {
            assert_eq!(stream_changes(&want, &have), expected, "{name}");
        }
    }

    #[test]
    fn consumer_changes_name_what_differs() {
        let settings = Settings {
            arbiter_ack_wait: Duration::from_secs(2),
            ..Settings::default()
        };
        let want = consumer(ARBITER_CONSUMER, &settings).config;
        // What the server fills in that this code does not set.
        let served = consumer::Config {
            max_ack_pending: 1000,
            max_waiting: 512,
            ..want.clone()
        };
        let cases: Vec<(&str, consumer::Config, Vec<Change>)> = vec![
            ("as created", served.clone(), vec![]),
            (
                "made with the 30 s default, provisioned now with 2 s",
                consumer::Config {
                    ack_wait: Duration::from_secs(30),
                    ..served.clone()
                },
                vec![change("ack_wait", "30s", "2s")],
            ),
            (
                "a delivery limit, no acks, new messages only",
                consumer::Config {
                    max_deliver: 5,
                    ack_policy: AckPolicy::None,
                    deliver_policy: DeliverPolicy::New,
                    ..served.clone()
                },
                vec![
                    change("ack_policy", "none", "explicit"),
                    change("max_deliver", "5", "unlimited"),
                    change("deliver_policy", "new", "all"),
                ],
            ),
        ];
        for (name, have, expected) in cases {
            assert_eq!(consumer_changes(&want, &have), expected, "{name}");
        }
    }

    #[test]
    fn services_check_only_what_their_code_relies_on() {
        let triggers = spec("stream NOVA_TRIGGERS");
        let bucket = spec("KV bucket nova_capacity");
        let stream_cases: Vec<(&str, &StreamSpec, stream::Config, Option<&str>)> = vec![
            ("as provisioned", &triggers, triggers.config.clone(), None),
            (
                "other replicas and limits are the operator's",
                &triggers,
                stream::Config {
                    num_replicas: 3,
                    max_age: Duration::from_secs(60),
                    ..triggers.config.clone()
                },
                None,
            ),
            (
                "a subject missing",
                &triggers,
                stream::Config {
                    subjects: vec!["other.>".into()],
                    ..triggers.config.clone()
                },
                Some("does not take subject nova.triggers.*"),
            ),
            (
                "a dedupe window too short for trigger ids",
                &triggers,
                stream::Config {
                    duplicate_window: Duration::from_secs(120),
                    ..triggers.config.clone()
                },
                Some("keeps message ids for 2m, less than the 10m de-duplication needs"),
            ),
            (
                "a bucket as provisioned",
                &bucket,
                bucket.config.clone(),
                None,
            ),
            (
                "a bucket with direct gets",
                &bucket,
                stream::Config {
                    allow_direct: true,
                    ..bucket.config.clone()
                },
                Some("has allow_direct on"),
            ),
        ];
        for (name, spec, have, expected) in stream_cases {
            let problem = stream_problem(spec, &have);
            match expected {
                None => assert_eq!(problem, None, "{name}"),
                Some(text) => assert!(
                    problem.as_deref().is_some_and(|p| p.starts_with(text)),
                    "{name}: {problem:?}"
                ),
            }
        }

        let provisioned = consumer(ACTUATOR_CONSUMER, &Settings::default()).config;
        let sixty = MinAckWait {
            at_least: Duration::from_secs(60),
            why: "three times --call-timeout-secs 20".into(),
        };
        let sixty = Some(&sixty);
        let consumer_cases: Vec<(&str, consumer::Config, Option<&MinAckWait>, Option<&str>)> = vec![
            ("as provisioned", provisioned.clone(), sixty, None),
            (
                "any ack wait for a service that needs none",
                consumer::Config {
                    ack_wait: Duration::from_secs(1),
                    ..provisioned.clone()
                },
                None,
                None,
            ),
            (
                "an ack wait shorter than the service needs",
                consumer::Config {
                    ack_wait: Duration::from_secs(30),
                    ..provisioned.clone()
                },
                sixty,
                Some(
                    "has ack_wait 30s, shorter than the 1m this service needs \
                     (three times --call-timeout-secs 20)",
                ),
            ),
            (
                "acks not explicit",
                consumer::Config {
                    ack_policy: AckPolicy::All,
                    ..provisioned.clone()
                },
                None,
                Some("has ack_policy all"),
            ),
            (
                "a delivery limit",
                consumer::Config {
                    max_deliver: 3,
                    ..provisioned.clone()
                },
                None,
                Some("has max_deliver 3"),
            ),
            (
                "new messages only",
                consumer::Config {
                    deliver_policy: DeliverPolicy::New,
                    ..provisioned.clone()
                },
                None,
                Some("has deliver_policy new"),
            ),
        ];
        for (name, have, min, expected) in consumer_cases {
            let problem = consumer_problem(&have, min);
            match expected {
                None => assert_eq!(problem, None, "{name}"),
                Some(text) => assert!(
                    problem.as_deref().is_some_and(|p| p.starts_with(text)),
                    "{name}: {problem:?}"
                ),
            }
        }
    }

    #[test]
    fn a_report_is_one_line_per_object() {
        let report = Report {
            objects: vec![
                Applied {
                    object: "stream NOVA_TRIGGERS".into(),
                    outcome: Outcome::Created,
                },
                Applied {
                    object: "consumer arbiter on stream NOVA_TRIGGERS".into(),
                    outcome: Outcome::Updated(vec![
                        change("ack_wait", "30s", "2s"),
                        change("max_deliver", "5", "unlimited"),
                    ]),
                },
                Applied {
                    object: "KV bucket nova_sim".into(),
                    outcome: Outcome::Unchanged,
                },
            ],
        };
        assert_eq!(
            report.to_string(),
            "stream NOVA_TRIGGERS: created\n\
             consumer arbiter on stream NOVA_TRIGGERS: updated: ack_wait 30s -> 2s, max_deliver 5 -> unlimited\n\
             KV bucket nova_sim: unchanged\n"
        );
        assert!(!report.unchanged());
        let json = serde_json::to_value(&report.objects[1]).expect("json");
        assert_eq!(json["outcome"], "updated");
        assert_eq!(json["changes"][0]["field"], "ack_wait");
    }

    #[test]
    fn durations_read_as_people_write_them() {
        for (d, text) in [
            (Duration::from_millis(600), "600ms"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(600), "10m"),
            (Duration::from_secs(7200), "2h"),
            (Duration::from_secs(7 * 86_400), "7d"),
            (Duration::from_secs(90), "90s"),
            (Duration::ZERO, "0ms"),
        ] {
            assert_eq!(duration(d), text);
        }
    }
}
