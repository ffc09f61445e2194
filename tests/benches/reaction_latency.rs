//! Reaction latency: from publishing the sample that completes a rule to
//! the actuator's backend change, through the real pipeline (the five stages
//! of `Pipeline`, in process) over a real nats-server on loopback, with
//! either backend:
//!
//!     cargo bench -p nova-e2e --bench reaction_latency [-- --trials 200 --gap-ms 50]
//!     cargo bench -p nova-e2e --bench reaction_latency -- --backend ecs
//!
//! - `--backend sim` (the default): simulated fleets, whose state is KV
//!   `nova_sim`;
//! - `--backend ecs`: ECS services on a real moto server started by the
//!   bench (`NOVA_MOTO_SERVER`, as the tests find it), one service per
//!   fleet in cluster `bench`, each starting at 1 task, with the policy's
//!   default steady wait (on moto a change is steady at the first read).
//!
//! The policy has one fleet per trial and rule kind, so no trial meets
//! another's cooldown:
//! - `i<k>`: `queue_depth > 1000 messages` (fires on the first sample);
//! - `h<k>`: `queue_depth > 1000 messages for 30 seconds`: a first sample
//!   starts the hold (the bench waits until the evaluator has counted it),
//!   the timed one, 30 s of event time later, completes it.
//!
//! Trials run one at a time, the two kinds alternating, `--gap-ms` apart.
//! Each is timed from just before the publish to two ends, defined the same
//! way for both backends:
//! - the backend change: the backend has accepted the fleet's new desired
//!   capacity and this process has heard it. Sim: the write of the fleet's
//!   state arriving on a watch of KV `nova_sim`. ECS: the actuator's
//!   `UpdateService` call answered by moto (its answer carries the new
//!   `desiredCount`), the end of the AWS SDK's `ECS.UpdateService` span;
//! - the result: the actuator's `result` audit record (`succeeded`), after
//!   the capacity record and the result are written (for ECS, after the
//!   steady wait's DescribeServices too).
//!
//! Core subscriptions on the trigger, command and actuator audit subjects
//! time the stages on the way. Every timestamp is taken in this process, on
//! the same two-worker runtime as the stages, so observer delay is included
//! (it can only overstate). A tracing layer, installed for both backends so
//! that both pay for it, times every AWS SDK call (`ECS.*` spans) and the
//! actuator's `command` span it ran in: moto's response time per call.
//!
//! The actuator re-reads every fleet's capacity every 15 s (`observe_every`)
//! inside the loop that also executes commands; a trial whose command waits
//! behind such a pass is flagged (another fleet's `nova_capacity` write
//! inside the trial) and reported apart as well.

mod common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{CpuMark, SystemMark, arg, deadline, percentile, table};
use futures_util::StreamExt;
use nova_e2e::{MotoServer, NatsServer, Pipeline, WAIT, connect};
use nova_runtime::nats::SIM_BUCKET;
use nova_shared::codec::{self, Encoding};
use nova_shared::policy::from_yaml;
use nova_shared::subjects;
use nova_shared::wire::{AuditKind, AuditRecord};
use tokio::sync::Notify;
use tracing::span::{Attributes, Id};
use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

/// The ECS cluster of the `--backend ecs` services.
const CLUSTER: &str = "bench";

/// Which backend the actuator drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BackendKind {
    /// Simulated fleets, their state in KV `nova_sim`.
    Sim,
    /// ECS services on moto.
    Ecs,
}

impl std::str::FromStr for BackendKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "sim" => Ok(BackendKind::Sim),
            "ecs" => Ok(BackendKind::Ecs),
            other => Err(format!("no backend {other:?}: sim or ecs")),
        }
    }
}

impl BackendKind {
    fn as_str(self) -> &'static str {
        match self {
            BackendKind::Sim => "sim",
            BackendKind::Ecs => "ecs",
        }
    }

    /// What the backend change is, as observed.
    fn change(self) -> &'static str {
        match self {
            BackendKind::Sim => "sim fleet's KV write seen on a watch",
            BackendKind::Ecs => "moto's answer to UpdateService",
        }
    }
}

#[derive(Debug, Clone)]
struct Config {
    trials: usize,
    warmup: usize,
    gap_ms: u64,
    backend: BackendKind,
}

impl Config {
    fn from_args() -> Config {
        let config = Config {
            trials: arg("trials", 200),
            warmup: arg("warmup", 10),
            gap_ms: arg("gap-ms", 50),
            backend: arg("backend", BackendKind::Sim),
        };
        assert!(config.trials > 0, "--trials must be at least 1");
        config
    }

    fn fleets(&self) -> usize {
        self.trials + self.warmup
    }

    fn command(&self) -> String {
        format!(
            "cargo bench -p nova-e2e --bench reaction_latency -- --trials {} --warmup {} --gap-ms {} --backend {}",
            self.trials,
            self.warmup,
            self.gap_ms,
            self.backend.as_str()
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Fires on the first sample over the threshold.
    Instant,
    /// Fires on the sample that completes "for 30 seconds".
    Held,
}

impl Kind {
    fn target(self, k: usize) -> String {
        match self {
            Kind::Instant => format!("i{k:04}"),
            Kind::Held => format!("h{k:04}"),
        }
    }

    fn label(self) -> &'static str {
        match self {
            Kind::Instant => "queue_depth > 1000 messages (fires at once)",
            Kind::Held => "queue_depth > 1000 messages for 30 seconds (completing sample)",
        }
    }
}

/// Every fleet's target name, both kinds.
fn targets(fleets: usize) -> impl Iterator<Item = (Kind, String)> {
    (0..fleets).flat_map(|k| [Kind::Instant, Kind::Held].map(|kind| (kind, kind.target(k))))
}

/// The policy: one fleet per trial and rule kind, every fleet at 1 to
/// begin with. `moto` is the endpoint of the ECS backend's moto server,
/// none for the simulated one.
fn policy_yaml(fleets: usize, moto: Option<&str>) -> String {
    let mut yaml = String::from("targets:\n");
    for (kind, target) in targets(fleets) {
        let rules = match kind {
            Kind::Instant => "instant",
            Kind::Held => "held",
        };
        let backend = match moto {
            None => "sim: { initial: 1, warmup_secs: 0 }".to_string(),
            Some(endpoint) => format!(
                "ecs: {{ region: us-east-1, cluster: {CLUSTER}, service: {target}, endpoint_url: \"{endpoint}\" }}"
            ),
        };
        let _ = writeln!(
            yaml,
            "  {target}: {{ rules: [{rules}], backend: {{ {backend} }} }}"
        );
    }
    yaml.push_str(
        "horizontal_scaling_rules:\n  \
         instant:\n    scale_up: { condition: \"queue_depth > 1000 messages\", action: \"add 1 instance\", cooldown: 300, max_instances: 10 }\n  \
         held:\n    scale_up: { condition: \"queue_depth > 1000 messages for 30 seconds\", action: \"add 1 instance\", cooldown: 300, max_instances: 10 }\n",
    );
    yaml
}

/// When each step of one target's reaction was seen.
#[derive(Debug, Default, Clone)]
struct Marks {
    trigger: Option<Instant>,
    command: Option<Instant>,
    executing: Option<Instant>,
    backend: Option<Instant>,
    result: Option<Instant>,
    outcome: Option<String>,
}

#[derive(Default)]
struct Seen {
    marks: Mutex<HashMap<String, Marks>>,
    /// Every `nova_capacity` write: when, and for which target.
    capacity_writes: Mutex<Vec<(Instant, String)>>,
    /// Every AWS SDK call the actuator made, in the order they ended.
    aws_calls: Mutex<Vec<AwsCall>>,
    changed: Notify,
}

/// One AWS SDK call, as its `ECS.<Operation>` span saw it.
#[derive(Debug, Clone)]
struct AwsCall {
    /// `DescribeServices`, `UpdateService`.
    operation: String,
    /// The target of the actuator's `command` span it ran in; none for the
    /// actuator's observation of every target (start, every 15 s).
    target: Option<String>,
    started: Instant,
    ended: Instant,
}

impl AwsCall {
    fn ms(&self) -> f64 {
        self.ended.duration_since(self.started).as_secs_f64() * 1e3
    }
}

/// The target of an actuator `command` span, kept in its extensions.
struct CommandTarget(String);

/// A tracing layer that sees only the actuator's `command` spans and the
/// AWS SDK's operation spans (`ECS.UpdateService`), every other callsite
/// disabled, and records each SDK call with its command's target. The end
/// of an `UpdateService` call in a command is that target's backend change.
struct AwsCalls {
    seen: Arc<Seen>,
}

impl AwsCalls {
    fn wanted(meta: &Metadata<'_>) -> bool {
        meta.is_span()
            && ((meta.name() == "command" && meta.target().starts_with("nova_actuator"))
                || meta.name().starts_with("ECS."))
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for AwsCalls {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if Self::wanted(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        Self::wanted(meta)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        if span.name() == "command" {
            struct Target(Option<String>);
            impl tracing::field::Visit for Target {
                fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                    if field.name() == "target" {
                        self.0 = Some(value.to_string());
                    }
                }
                fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
            }
            let mut target = Target(None);
            attrs.record(&mut target);
            if let Some(target) = target.0 {
                span.extensions_mut().insert(CommandTarget(target));
            }
            return;
        }
        let target = span.scope().skip(1).find_map(|parent| {
            parent
                .extensions()
                .get::<CommandTarget>()
                .map(|t| t.0.clone())
        });
        let operation = span.name().trim_start_matches("ECS.").to_string();
        span.extensions_mut().insert(AwsCall {
            operation,
            target,
            started: Instant::now(),
            ended: Instant::now(),
        });
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let ended = Instant::now();
        let Some(span) = ctx.span(&id) else { return };
        let Some(mut call) = span.extensions_mut().remove::<AwsCall>() else {
            return;
        };
        call.ended = ended;
        if call.operation == "UpdateService"
            && let Some(target) = &call.target
        {
            self.seen.mark(target, ended, |k, at| {
                k.backend.get_or_insert(at);
            });
        }
        self.seen.aws_calls.lock().expect("lock").push(call);
    }
}

impl Seen {
    fn mark(&self, target: &str, at: Instant, set: impl FnOnce(&mut Marks, Instant)) {
        let mut marks = self.marks.lock().expect("lock");
        set(marks.entry(target.to_string()).or_default(), at);
        drop(marks);
        self.changed.notify_waiters();
    }

    fn get(&self, target: &str) -> Marks {
        self.marks
            .lock()
            .expect("lock")
            .get(target)
            .cloned()
            .unwrap_or_default()
    }

    /// Waits until `target`'s marks satisfy `done`.
    async fn wait(&self, target: &str, what: &str, done: impl Fn(&Marks) -> bool) -> Marks {
        deadline(&format!("{what} of {target}"), WAIT, async {
            loop {
                let changed = self.changed.notified();
                let marks = self.get(target);
                if done(&marks) {
                    return marks;
                }
                // A notification between `get` and here is not lost: `changed`
                // was registered first. The timeout is a safety net only.
                let _ = tokio::time::timeout(Duration::from_millis(100), changed).await;
            }
        })
        .await
    }
}

/// Subscribes the observers; returns once every subscription is in place.
/// The ECS backend's change is marked by [`AwsCalls`] instead of a watch.
async fn observe(client: &async_nats::Client, seen: &Arc<Seen>, backend: BackendKind) {
    let subscribe = |subject: String| {
        let client = client.clone();
        async move { client.subscribe(subject).await.expect("subscribe") }
    };
    let mut triggers = subscribe("nova.triggers.*".into()).await;
    let mut commands = subscribe("nova.commands.*".into()).await;
    let mut audits = subscribe(subjects::audit("actuator", "*")).await;
    let mut capacity = subscribe("$KV.nova_capacity.>".into()).await;
    let js = async_nats::jetstream::new(client.clone());
    let mut sim_watch = None;
    if backend == BackendKind::Sim {
        let sims = deadline("the sim bucket", WAIT, js.get_key_value(SIM_BUCKET))
            .await
            .expect("sim bucket");
        // Only changes from now on: the fleets' first states are already written.
        let watch = deadline("the sim watch", WAIT, sims.watch_all())
            .await
            .expect("watch sim");
        sim_watch = Some(watch);
    }
    deadline("the observers' subscriptions", WAIT, client.flush())
        .await
        .expect("flush");

    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(m) = triggers.next().await {
            s.mark(subjects::last_token(&m.subject), Instant::now(), |k, at| {
                k.trigger.get_or_insert(at);
            });
        }
    });
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(m) = commands.next().await {
            s.mark(subjects::last_token(&m.subject), Instant::now(), |k, at| {
                k.command.get_or_insert(at);
            });
        }
    });
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(m) = audits.next().await {
            let at = Instant::now();
            let Ok(record) = codec::decode::<AuditRecord>(&m.payload, Encoding::MsgPack) else {
                continue;
            };
            s.mark(&record.target, at, |k, at| match record.kind {
                AuditKind::Command if record.outcome == "executing" => {
                    k.executing.get_or_insert(at);
                }
                AuditKind::Result => {
                    k.result.get_or_insert(at);
                    k.outcome.get_or_insert(record.outcome.clone());
                }
                _ => {}
            });
        }
    });
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(m) = capacity.next().await {
            let at = Instant::now();
            let target = subjects::last_token(&m.subject).to_string();
            s.capacity_writes.lock().expect("lock").push((at, target));
        }
    });
    if let Some(mut watch) = sim_watch {
        let s = seen.clone();
        tokio::spawn(async move {
            while let Some(Ok(entry)) = watch.next().await {
                s.mark(&entry.key, Instant::now(), |k, at| {
                    k.backend.get_or_insert(at);
                });
            }
        });
    }
}

/// One timed trial.
#[derive(Debug, Clone)]
struct Trial {
    kind: Kind,
    warmup: bool,
    target: String,
    published: Instant,
    marks: Marks,
}

impl Trial {
    fn ms(&self, from: Option<Instant>, to: Option<Instant>) -> Option<f64> {
        Some(to?.checked_duration_since(from?)?.as_secs_f64() * 1e3)
    }

    /// Publish to backend change.
    fn latency_ms(&self) -> f64 {
        self.ms(Some(self.published), self.marks.backend)
            .expect("every trial reached the backend")
    }

    /// Publish to the `result` audit record.
    fn result_ms(&self) -> f64 {
        self.ms(Some(self.published), self.marks.result)
            .expect("every trial has a result")
    }

    /// This trial's AWS calls: those of its target's command, started after
    /// the publish, in order.
    fn calls<'a>(&self, calls: &'a [AwsCall]) -> Vec<&'a AwsCall> {
        let mut mine: Vec<&AwsCall> = calls
            .iter()
            .filter(|c| c.target.as_deref() == Some(&self.target) && c.started >= self.published)
            .collect();
        mine.sort_by_key(|c| c.started);
        mine
    }
}

fn sample(value: f64, ts: i64) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Sample {
        value: f64,
        ts: i64,
    }
    codec::encode(&Sample { value, ts }).expect("encode")
}

async fn publish(client: &async_nats::Client, target: &str, payload: Vec<u8>) -> Instant {
    let subject = subjects::metrics(target, "queue_depth");
    let at = Instant::now();
    deadline("a publish", WAIT, client.publish(subject, payload.into()))
        .await
        .expect("publish");
    deadline("the publisher's flush", WAIT, client.flush())
        .await
        .expect("flush");
    at
}

async fn trial(
    client: &async_nats::Client,
    seen: &Seen,
    evaluated: &common::Progress,
    kind: Kind,
    k: usize,
    warmup: bool,
) -> Trial {
    let target = kind.target(k);
    let now = nova_runtime::now_ms();
    let ts = match kind {
        Kind::Instant => now,
        Kind::Held => {
            // Start the hold and wait until the evaluator has counted it.
            let before = evaluated.get();
            publish(client, &target, sample(1500.0, now - 60_000)).await;
            evaluated.set_goal(before + 1);
            evaluated.wait_goal("the evaluator", WAIT).await;
            now - 30_000
        }
    };
    let published = publish(client, &target, sample(1500.0, ts)).await;
    let marks = seen
        .wait(&target, "the backend call and the result", |m| {
            m.backend.is_some() && m.result.is_some()
        })
        .await;
    assert_eq!(
        marks.outcome.as_deref(),
        Some("succeeded"),
        "{target}: the command did not succeed"
    );
    Trial {
        kind,
        warmup,
        target,
        published,
        marks,
    }
}

/// True when another fleet's capacity was written, or (ECS) an AWS call
/// outside any command was made, while the trial ran: the actuator was in
/// one of its periodic passes over every fleet.
fn during_capacity_pass(trial: &Trial, writes: &[(Instant, String)], calls: &[AwsCall]) -> bool {
    let end = trial.marks.backend.expect("backend");
    writes
        .iter()
        .any(|(at, target)| *at >= trial.published && *at <= end && *target != trial.target)
        || calls
            .iter()
            .any(|c| c.target.is_none() && c.ended >= trial.published && c.started <= end)
}

/// The actuator's passes over every fleet, from the `nova_capacity` writes:
/// runs of writes less than 20 ms apart (a trial writes once, `--gap-ms`
/// after the last) touching most fleets. Each is (start, duration in ms,
/// fleets written).
fn capacity_passes(writes: &[(Instant, String)], fleets: usize) -> Vec<(Instant, f64, usize)> {
    let mut passes = Vec::new();
    let mut i = 0;
    while i < writes.len() {
        let mut j = i;
        while j + 1 < writes.len()
            && writes[j + 1].0.duration_since(writes[j].0) < Duration::from_millis(20)
        {
            j += 1;
        }
        let distinct: std::collections::HashSet<&str> =
            writes[i..=j].iter().map(|(_, t)| t.as_str()).collect();
        if distinct.len() * 2 > fleets {
            let ms = writes[j].0.duration_since(writes[i].0).as_secs_f64() * 1e3;
            passes.push((writes[i].0, ms, distinct.len()));
        }
        i = j + 1;
    }
    passes
}

fn stats(values: &mut [f64]) -> Vec<String> {
    values.sort_by(f64::total_cmp);
    let mean = values.iter().sum::<f64>() / values.len().max(1) as f64;
    vec![
        values.len().to_string(),
        format!("{:.2}", percentile(values, 50.0)),
        format!("{:.2}", percentile(values, 90.0)),
        format!("{:.2}", percentile(values, 99.0)),
        format!("{:.2}", values.last().copied().unwrap_or(f64::NAN)),
        format!("{mean:.2}"),
    ]
}

const STAT_HEADER: [&str; 7] = [
    "", "trials", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms",
];

/// What else ran while the trials did.
struct Background {
    seconds: f64,
    cpu: CpuMark,
    others: (f64, f64),
}

/// A table row: `name`, then the stats of `values` (or dashes for none).
fn row(name: &str, mut values: Vec<f64>) -> Vec<String> {
    let mut row = vec![name.to_string()];
    if values.is_empty() {
        row.extend(["0", "-", "-", "-", "-", "-"].map(String::from));
    } else {
        row.extend(stats(&mut values));
    }
    row
}

/// Per kind and for both, the stats of `f` over the timed trials.
fn by_kind(timed: &[&Trial], f: fn(&Trial) -> f64) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for kind in [Kind::Instant, Kind::Held] {
        let v = timed
            .iter()
            .filter(|t| t.kind == kind)
            .map(|t| f(t))
            .collect();
        rows.push(row(kind.label(), v));
    }
    rows.push(row("both", timed.iter().map(|t| f(t)).collect()));
    rows
}

/// The AWS calls: moto's response time per operation as the SDK timed it,
/// in the trials' commands and in the observation passes, then per trial
/// the calls in the order a command makes them.
fn report_aws(timed: &[&Trial], calls: &[AwsCall], window: (Instant, Instant)) {
    let during: Vec<&AwsCall> = calls
        .iter()
        .filter(|c| c.started >= window.0 && c.ended <= window.1)
        .collect();
    let mut operations: Vec<&str> = during.iter().map(|c| c.operation.as_str()).collect();
    operations.sort_unstable();
    operations.dedup();
    let mut rows = Vec::new();
    for operation in operations {
        for (place, in_command) in [("in a command", true), ("observation pass", false)] {
            let v: Vec<f64> = during
                .iter()
                .filter(|c| c.operation == operation && c.target.is_some() == in_command)
                .map(|c| c.ms())
                .collect();
            if !v.is_empty() {
                rows.push(row(&format!("{operation}, {place}"), v));
            }
        }
    }
    println!("## AWS SDK calls to moto while the trials ran (each call's span)\n");
    println!("{}\n", table(&CALL_HEADER, &rows));
    // The observation passes: runs of calls outside commands, split where
    // moto saw none for a second.
    let mut passes: Vec<(Instant, Instant, usize)> = Vec::new();
    let mut observing: Vec<&&AwsCall> = during.iter().filter(|c| c.target.is_none()).collect();
    observing.sort_by_key(|c| c.started);
    for c in observing {
        match passes.last_mut() {
            Some((_, end, n))
                if c.started.saturating_duration_since(*end) < Duration::from_secs(1) =>
            {
                *end = (*end).max(c.ended);
                *n += 1;
            }
            _ => passes.push((c.started, c.ended, 1)),
        }
    }
    let described: Vec<String> = passes
        .iter()
        .map(|(start, end, n)| {
            format!(
                "at {:.1} s: {n} DescribeServices in {:.0} ms",
                start.saturating_duration_since(window.0).as_secs_f64(),
                end.duration_since(*start).as_secs_f64() * 1e3
            )
        })
        .collect();
    println!(
        "observation passes on moto while the trials ran: {} ({})\n",
        passes.len(),
        if described.is_empty() {
            "none".to_string()
        } else {
            described.join("; ")
        }
    );

    // Each command: DescribeServices (before), UpdateService, then the
    // steady wait's DescribeServices.
    let mut before = Vec::new();
    let mut update = Vec::new();
    let mut steady = Vec::new();
    let mut to_first = Vec::new();
    let mut between = Vec::new();
    let mut after_steady = Vec::new();
    let mut shapes: HashMap<String, usize> = HashMap::new();
    for t in timed {
        let mine = t.calls(calls);
        let shape: Vec<&str> = mine.iter().map(|c| c.operation.as_str()).collect();
        *shapes.entry(shape.join(", ")).or_default() += 1;
        let Some(u) = mine.iter().position(|c| c.operation == "UpdateService") else {
            continue;
        };
        update.push(mine[u].ms());
        if let Some(d) = mine[..u]
            .iter()
            .rev()
            .find(|c| c.operation == "DescribeServices")
        {
            before.push(d.ms());
            between.push(mine[u].started.duration_since(d.ended).as_secs_f64() * 1e3);
        }
        if let (Some(first), Some(executing)) = (mine.first(), t.marks.executing) {
            to_first.push(
                first
                    .started
                    .saturating_duration_since(executing)
                    .as_secs_f64()
                    * 1e3,
            );
        }
        if let Some(d) = mine[u + 1..]
            .iter()
            .find(|c| c.operation == "DescribeServices")
        {
            steady.push(d.ms());
            if let Some(result) = t.marks.result {
                after_steady.push(result.saturating_duration_since(d.ended).as_secs_f64() * 1e3);
            }
        }
    }
    let rows = vec![
        row("audit `executing` -> first call sent", to_first),
        row("DescribeServices (the state before)", before),
        row("between it and UpdateService", between),
        row("UpdateService (the change)", update),
        row("DescribeServices (steady wait, first read)", steady),
        row("steady read -> audit `result`", after_steady),
    ];
    println!("## A command's calls, per trial\n");
    println!("{}\n", table(&STAT_HEADER, &rows));
    let mut shapes: Vec<(String, usize)> = shapes.into_iter().collect();
    shapes.sort_by_key(|s| std::cmp::Reverse(s.1));
    let shapes: Vec<String> = shapes
        .iter()
        .map(|(shape, n)| format!("{n} × [{shape}]"))
        .collect();
    println!("calls per command: {}\n", shapes.join("; "));
}

const CALL_HEADER: [&str; 7] = [
    "", "calls", "p50 ms", "p90 ms", "p99 ms", "max ms", "mean ms",
];

fn report(config: &Config, trials: &[Trial], seen: &Seen, background: &Background) {
    let writes = seen.capacity_writes.lock().expect("lock").clone();
    let writes = &writes;
    let calls = seen.aws_calls.lock().expect("lock").clone();
    let timed: Vec<&Trial> = trials.iter().filter(|t| !t.warmup).collect();
    let backend = config.backend;
    println!(
        "## Publish to backend change ({}: {}), per trial\n",
        backend.as_str(),
        backend.change()
    );
    println!(
        "{}\n",
        table(&STAT_HEADER, &by_kind(&timed, Trial::latency_ms))
    );
    println!("## Publish to the actuator's `result` audit record, per trial\n");
    println!(
        "{}\n",
        table(&STAT_HEADER, &by_kind(&timed, Trial::result_ms))
    );
    let mut all: Vec<f64> = timed.iter().map(|t| t.latency_ms()).collect();
    all.sort_by(f64::total_cmp);

    let segments: [(&str, fn(&Trial) -> Option<f64>); 7] = [
        ("publish -> trigger published (ingest, evaluator)", |t| {
            t.ms(Some(t.published), t.marks.trigger)
        }),
        ("trigger -> command published (arbiter)", |t| {
            t.ms(t.marks.trigger, t.marks.command)
        }),
        (
            "command -> audit `executing` (actuator: delivery, KV read, audit)",
            |t| t.ms(t.marks.command, t.marks.executing),
        ),
        (
            "executing -> backend change (sim: KV write; ecs: DescribeServices, UpdateService)",
            |t| t.ms(t.marks.executing, t.marks.backend),
        ),
        ("publish -> backend change (total)", |t| {
            t.ms(Some(t.published), t.marks.backend)
        }),
        (
            "backend change -> audit `result` (ecs: steady read; capacity, result, audit)",
            |t| t.ms(t.marks.backend, t.marks.result),
        ),
        ("publish -> audit `result` (total)", |t| {
            t.ms(Some(t.published), t.marks.result)
        }),
    ];
    let rows: Vec<Vec<String>> = segments
        .into_iter()
        .map(|(name, f)| row(name, timed.iter().filter_map(|t| f(t)).collect()))
        .collect();
    println!("## Where the time goes (both kinds)\n");
    println!("{}\n", table(&STAT_HEADER, &rows));

    let (passed, clear): (Vec<&Trial>, Vec<&Trial>) = timed
        .iter()
        .partition(|t| during_capacity_pass(t, writes, &calls));
    let rows: Vec<Vec<String>> = [
        ("trials clear of an actuator capacity pass", &clear),
        ("trials during an actuator capacity pass", &passed),
    ]
    .into_iter()
    .map(|(name, set)| row(name, set.iter().map(|t| t.latency_ms()).collect()))
    .collect();
    println!(
        "## The actuator's periodic capacity pass ({} fleets, every 15 s)\n",
        config.fleets() * 2
    );
    println!("{}\n", table(&STAT_HEADER, &rows));
    let passes = capacity_passes(writes, config.fleets() * 2);
    let first = trials.first().map(|t| t.published);
    let described: Vec<String> = passes
        .iter()
        .map(|(at, ms, n)| {
            let since = first.map_or(0.0, |f| at.saturating_duration_since(f).as_secs_f64());
            format!("at {since:.1} s: {n} fleets in {ms:.0} ms")
        })
        .collect();
    println!(
        "capacity passes seen while the trials ran: {} ({})\n",
        passes.len(),
        if described.is_empty() {
            "none".to_string()
        } else {
            described.join("; ")
        }
    );
    if backend == BackendKind::Ecs {
        let first = trials.first().map_or(Instant::now(), |t| t.published);
        let last = trials
            .iter()
            .filter_map(|t| t.marks.result)
            .max()
            .unwrap_or(first);
        report_aws(&timed, &calls, (first, last));
    }
    println!(
        "during the trials ({:.1} s): bench process {:.2} cores, nats-server {:.2} cores, \
         moto {:.2} cores ({:.2} ms of moto CPU per trial), \
         other processes {:.2} cores, stolen by the hypervisor {:.2} cores\n",
        background.seconds,
        background.cpu.bench / background.seconds,
        background.cpu.server / background.seconds,
        background.cpu.backend / background.seconds,
        background.cpu.backend * 1e3 / trials.len().max(1) as f64,
        background.others.0,
        background.others.1
    );

    let mut slowest: Vec<&&Trial> = timed.iter().collect();
    slowest.sort_by(|a, b| b.latency_ms().total_cmp(&a.latency_ms()));
    println!("slowest trials:");
    for t in slowest.iter().take(5) {
        let seg = |from, to| t.ms(from, to).map_or("-".into(), |v| format!("{v:.2}"));
        println!(
            "  {} at +{:.1} s: {:.2} ms (to trigger {}, arbiter {}, to executing {}, backend {}){}",
            t.target,
            first.map_or(0.0, |f| t
                .published
                .saturating_duration_since(f)
                .as_secs_f64()),
            t.latency_ms(),
            seg(Some(t.published), t.marks.trigger),
            seg(t.marks.trigger, t.marks.command),
            seg(t.marks.command, t.marks.executing),
            seg(t.marks.executing, t.marks.backend),
            if during_capacity_pass(t, writes, &calls) {
                " during a capacity pass"
            } else {
                ""
            }
        );
    }
    let p99 = percentile(&all, 99.0);
    println!(
        "\naim: p99 < 10 ms: {} (p99 {p99:.2} ms over {} trials)",
        if p99 < 10.0 { "met" } else { "NOT met" },
        all.len()
    );
}

/// Cluster [`CLUSTER`] on moto with one service per fleet, each running
/// one task of one task definition.
async fn ecs_services(moto: &MotoServer, fleets: usize) {
    let ecs = moto.ecs_cluster(CLUSTER).await;
    let container = aws_sdk_ecs::types::ContainerDefinition::builder()
        .name("app")
        .image("busybox")
        .memory(128)
        .build();
    ecs.register_task_definition()
        .family("app")
        .container_definitions(container)
        .send()
        .await
        .expect("register task definition");
    for (_, target) in targets(fleets) {
        ecs.create_service()
            .cluster(CLUSTER)
            .service_name(&target)
            .task_definition("app")
            .desired_count(1)
            .send()
            .await
            .expect("create service");
    }
}

async fn run(config: Config) {
    let counters = common::install_counters();
    let seen = Arc::new(Seen::default());
    let layer = AwsCalls { seen: seen.clone() };
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
        .expect("no other tracing subscriber");
    println!("# reaction_latency\n");
    println!("command: {}", config.command());
    println!(
        "machine: {}; load average {}",
        common::machine(),
        common::load_average()
    );
    let what = match config.backend {
        BackendKind::Sim => "simulated fleets",
        BackendKind::Ecs => "ECS services on moto",
    };
    println!(
        "workload: {} timed trials per rule kind after {} warm-up ones, one at a time, {} ms apart; \
         {} {what}\n",
        config.trials,
        config.warmup,
        config.gap_ms,
        config.fleets() * 2
    );
    let (nats, moto) = match config.backend {
        BackendKind::Sim => (NatsServer::start().await, None),
        BackendKind::Ecs => {
            let (nats, moto) = tokio::join!(NatsServer::start(), MotoServer::start());
            ecs_services(&moto, config.fleets()).await;
            (nats, Some(moto))
        }
    };
    let endpoint = moto.as_ref().map(|m| m.endpoint.as_str());
    let policy =
        Arc::new(from_yaml(&policy_yaml(config.fleets(), endpoint), "bench.yaml").expect("policy"));
    let moto_pid = moto.as_ref().and_then(MotoServer::pid);
    let _provisioned = nats.client().await;
    let pipeline = Pipeline::start(&nats, policy).await;
    let observer = connect(&nats.url, "bench-observer").await;
    observe(&observer, &seen, config.backend).await;
    let publisher = connect(&nats.url, "bench-publisher").await;

    let mut trials = Vec::new();
    let started = Instant::now();
    let system = SystemMark::now();
    let cpu = CpuMark::with_backend(nats.pid(), moto_pid);
    for k in 0..config.fleets() {
        for kind in [Kind::Instant, Kind::Held] {
            let t = trial(
                &publisher,
                &seen,
                &counters.evaluated,
                kind,
                k,
                k < config.warmup,
            )
            .await;
            trials.push(t);
            tokio::time::sleep(Duration::from_millis(config.gap_ms)).await;
        }
    }
    let cpu = CpuMark::with_backend(nats.pid(), moto_pid).since(cpu);
    let background = Background {
        seconds: started.elapsed().as_secs_f64(),
        cpu,
        others: SystemMark::now().others_since(system, cpu),
    };
    eprintln!("{} trials in {:.1}s", trials.len(), background.seconds);
    deadline(
        "the pipeline to stop",
        Duration::from_secs(60),
        pipeline.stop(),
    )
    .await;
    report(&config, &trials, &seen, &background);
}

fn main() {
    if common::wants_help() {
        println!(
            "cargo bench -p nova-e2e --bench reaction_latency -- [--trials N] [--warmup W] [--gap-ms MS] [--backend sim|ecs]"
        );
        return;
    }
    let config = Config::from_args();
    let limit = Duration::from_secs(120 + config.fleets() as u64 * 2 * (WAIT.as_secs() + 1));
    common::runtime().block_on(deadline("the benchmark", limit, run(config)));
}
