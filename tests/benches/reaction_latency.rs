//! Reaction latency: from publishing the sample that completes a rule to
//! the actuator's backend call, through the real pipeline (the five stages
//! of `Pipeline`, in process) over a real nats-server on loopback.
//!
//!     cargo bench -p nova-e2e --bench reaction_latency [-- --trials 200 --gap-ms 50]
//!
//! The policy has one simulated fleet per trial and rule kind, so no trial
//! meets another's cooldown:
//! - `i<k>`: `queue_depth > 1000 messages` (fires on the first sample);
//! - `h<k>`: `queue_depth > 1000 messages for 30 seconds`: a first sample
//!   starts the hold (the bench waits until the evaluator has counted it),
//!   the timed one, 30 s of event time later, completes it.
//!
//! Trials run one at a time, the two kinds alternating, `--gap-ms` apart.
//! Each is timed from just before the publish to the moment the sim
//! backend's write of the fleet's new desired capacity arrives on a watch
//! of KV `nova_sim` (the backend call). Core subscriptions on the trigger,
//! command and actuator audit subjects time the stages on the way, and the
//! `result` audit record closes the trial. Every timestamp is taken in this
//! process when the message is received, on the same two-worker runtime as
//! the stages, so observer delay is included (it can only overstate).
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
use nova_e2e::{NatsServer, Pipeline, WAIT, connect};
use nova_runtime::nats::SIM_BUCKET;
use nova_shared::codec::{self, Encoding};
use nova_shared::policy::from_yaml;
use nova_shared::subjects;
use nova_shared::wire::{AuditKind, AuditRecord};
use tokio::sync::Notify;

#[derive(Debug, Clone)]
struct Config {
    trials: usize,
    warmup: usize,
    gap_ms: u64,
}

impl Config {
    fn from_args() -> Config {
        let config = Config {
            trials: arg("trials", 200),
            warmup: arg("warmup", 10),
            gap_ms: arg("gap-ms", 50),
        };
        assert!(config.trials > 0, "--trials must be at least 1");
        config
    }

    fn fleets(&self) -> usize {
        self.trials + self.warmup
    }

    fn command(&self) -> String {
        format!(
            "cargo bench -p nova-e2e --bench reaction_latency -- --trials {} --warmup {} --gap-ms {}",
            self.trials, self.warmup, self.gap_ms
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

fn policy_yaml(fleets: usize) -> String {
    let mut yaml = String::from("targets:\n");
    for k in 0..fleets {
        for (kind, rules) in [(Kind::Instant, "instant"), (Kind::Held, "held")] {
            let _ = writeln!(
                yaml,
                "  {}: {{ rules: [{rules}], backend: {{ sim: {{ initial: 1, warmup_secs: 0 }} }} }}",
                kind.target(k)
            );
        }
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
    changed: Notify,
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
async fn observe(client: &async_nats::Client, seen: &Arc<Seen>) {
    let subscribe = |subject: String| {
        let client = client.clone();
        async move { client.subscribe(subject).await.expect("subscribe") }
    };
    let mut triggers = subscribe("nova.triggers.*".into()).await;
    let mut commands = subscribe("nova.commands.*".into()).await;
    let mut audits = subscribe(subjects::audit("actuator", "*")).await;
    let mut capacity = subscribe("$KV.nova_capacity.>".into()).await;
    let js = async_nats::jetstream::new(client.clone());
    let sims = deadline("the sim bucket", WAIT, js.get_key_value(SIM_BUCKET))
        .await
        .expect("sim bucket");
    // Only changes from now on: the fleets' first states are already written.
    let mut backend = deadline("the sim watch", WAIT, sims.watch_all())
        .await
        .expect("watch sim");
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
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(Ok(entry)) = backend.next().await {
            s.mark(&entry.key, Instant::now(), |k, at| {
                k.backend.get_or_insert(at);
            });
        }
    });
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

    /// Publish to backend call.
    fn latency_ms(&self) -> f64 {
        self.ms(Some(self.published), self.marks.backend)
            .expect("every trial reached the backend")
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

/// True when another fleet's capacity was written while the trial ran:
/// the actuator was in one of its periodic passes over every fleet.
fn during_capacity_pass(trial: &Trial, writes: &[(Instant, String)]) -> bool {
    let end = trial.marks.backend.expect("backend");
    writes
        .iter()
        .any(|(at, target)| *at >= trial.published && *at <= end && *target != trial.target)
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

fn report(
    config: &Config,
    trials: &[Trial],
    writes: &[(Instant, String)],
    background: &Background,
) {
    let timed: Vec<&Trial> = trials.iter().filter(|t| !t.warmup).collect();
    let mut rows = Vec::new();
    for kind in [Kind::Instant, Kind::Held] {
        let mut v: Vec<f64> = timed
            .iter()
            .filter(|t| t.kind == kind)
            .map(|t| t.latency_ms())
            .collect();
        let mut row = vec![kind.label().to_string()];
        row.extend(stats(&mut v));
        rows.push(row);
    }
    let mut all: Vec<f64> = timed.iter().map(|t| t.latency_ms()).collect();
    let mut row = vec!["both".to_string()];
    row.extend(stats(&mut all));
    rows.push(row);
    println!("## Publish to backend call (sim fleet written), per trial\n");
    println!("{}\n", table(&STAT_HEADER, &rows));

    let segments: [(&str, fn(&Trial) -> Option<f64>); 6] = [
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
        ("executing -> sim KV written (the backend call)", |t| {
            t.ms(t.marks.executing, t.marks.backend)
        }),
        ("publish -> backend call (total)", |t| {
            t.ms(Some(t.published), t.marks.backend)
        }),
        (
            "backend call -> audit `result` (capacity, result, audit)",
            |t| t.ms(t.marks.backend, t.marks.result),
        ),
    ];
    let mut rows = Vec::new();
    for (name, f) in segments {
        let mut v: Vec<f64> = timed.iter().filter_map(|t| f(t)).collect();
        let mut row = vec![name.to_string()];
        row.extend(stats(&mut v));
        rows.push(row);
    }
    println!("## Where the time goes (both kinds)\n");
    println!("{}\n", table(&STAT_HEADER, &rows));

    let (passed, clear): (Vec<&Trial>, Vec<&Trial>) =
        timed.iter().partition(|t| during_capacity_pass(t, writes));
    let mut rows = Vec::new();
    for (name, set) in [
        ("trials clear of an actuator capacity pass", &clear),
        ("trials during an actuator capacity pass", &passed),
    ] {
        let mut v: Vec<f64> = set.iter().map(|t| t.latency_ms()).collect();
        let mut row = vec![name.to_string()];
        if v.is_empty() {
            row.extend(["0", "-", "-", "-", "-", "-"].map(String::from));
        } else {
            row.extend(stats(&mut v));
        }
        rows.push(row);
    }
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
    println!(
        "during the trials ({:.1} s): bench process {:.2} cores, nats-server {:.2} cores, \
         other processes {:.2} cores, stolen by the hypervisor {:.2} cores\n",
        background.seconds,
        background.cpu.bench / background.seconds,
        background.cpu.server / background.seconds,
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
            if during_capacity_pass(t, writes) {
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

async fn run(config: Config) {
    let counters = common::install_counters();
    println!("# reaction_latency\n");
    println!("command: {}", config.command());
    println!(
        "machine: {}; load average {}",
        common::machine(),
        common::load_average()
    );
    println!(
        "workload: {} timed trials per rule kind after {} warm-up ones, one at a time, {} ms apart; \
         {} simulated fleets\n",
        config.trials,
        config.warmup,
        config.gap_ms,
        config.fleets() * 2
    );
    let policy = Arc::new(from_yaml(&policy_yaml(config.fleets()), "bench.yaml").expect("policy"));
    let nats = NatsServer::start().await;
    let _provisioned = nats.client().await;
    let pipeline = Pipeline::start(&nats, policy).await;
    let observer = connect(&nats.url, "bench-observer").await;
    let seen = Arc::new(Seen::default());
    observe(&observer, &seen).await;
    let publisher = connect(&nats.url, "bench-publisher").await;

    let mut trials = Vec::new();
    let started = Instant::now();
    let system = SystemMark::now();
    let cpu = CpuMark::now(nats.pid());
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
    let cpu = CpuMark::now(nats.pid()).since(cpu);
    let background = Background {
        seconds: started.elapsed().as_secs_f64(),
        cpu,
        others: SystemMark::now().others_since(system, cpu),
    };
    eprintln!("{} trials in {:.1}s", trials.len(), background.seconds);
    let writes = seen.capacity_writes.lock().expect("lock").clone();
    deadline(
        "the pipeline to stop",
        Duration::from_secs(60),
        pipeline.stop(),
    )
    .await;
    report(&config, &trials, &writes, &background);
}

fn main() {
    if common::wants_help() {
        println!(
            "cargo bench -p nova-e2e --bench reaction_latency -- [--trials N] [--warmup W] [--gap-ms MS]"
        );
        return;
    }
    let config = Config::from_args();
    let limit = Duration::from_secs(120 + config.fleets() as u64 * 2 * (WAIT.as_secs() + 1));
    common::runtime().block_on(deadline("the benchmark", limit, run(config)));
}
