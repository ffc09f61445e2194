//! End-to-end throughput: samples per second through ingest and the
//! evaluator over a real nats-server on loopback, against raw async-nats
//! publish/subscribe of the same messages in the same run.
//!
//!     cargo bench -p nova-e2e --bench e2e_throughput [-- --samples 2000000 --targets 1000 --batch 100]
//!
//! Workload: a policy of `--targets` simulated fleets, each bound to two
//! threshold rules on `avg_cpu` that never fire (so the arbiter and the
//! actuator stay idle). `--samples` samples are published as MessagePack
//! lists of `--batch` samples on `nova.metrics.<target>.cpu`, the targets
//! interleaved; each sample has its own instance (of `--instances`) and a
//! rising event time, so the evaluator updates an instance, expires stale
//! ones, aggregates and steps both rules for every sample.
//!
//! Lossless: a sample counts when the evaluator has evaluated it, read from
//! its own counter `nova_evaluator_samples_total{effect="evaluated"}`
//! through an in-process metrics recorder (the stages run in this process,
//! as `Pipeline` starts them). The run fails if that count stops short of
//! every sample published, or if anything is rejected or dead-lettered.
//!
//! Raw: the same payloads published by the same client code to
//! `bench.raw.<target>.cpu`, one plain subscriber that counts the samples in
//! each message (from the MessagePack array header).
//!
//! Both paths use the same flow control: the publisher keeps at most
//! `--window` samples not yet counted at the far end, so a slower path is
//! measured at its sustained rate rather than overflowing a buffer.
//!
//! Last, the CPU cost of each stage's own work per sample is timed on one
//! core without NATS (decode, normalise, encode in ingest; decode and
//! evaluate in the evaluator), to say where the end-to-end time goes.

mod common;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{CpuMark, Progress, SystemMark, arg, deadline, rate, table, thousands};
use futures_util::StreamExt;
use nova_e2e::{NatsServer, Pipeline, connect};
use nova_shared::codec::{self, Encoding};
use nova_shared::evaluate::Evaluator;
use nova_shared::normalise::normalise;
use nova_shared::policy::{Policy, from_yaml};
use nova_shared::subjects;
use nova_shared::wire::{MetricSampleIn, SampleBatch, SampleValue};

const METRIC: &str = "cpu";
/// A count that stops moving for this long means samples were lost.
const STALL: Duration = Duration::from_secs(15);

#[derive(Debug, Clone)]
struct Config {
    samples: u64,
    targets: usize,
    batch: usize,
    instances: usize,
    rounds: usize,
    window: u64,
    stage_cost_samples: u64,
    /// A `perf record --control fifo:...` FIFO: profiling is enabled only
    /// while the end-to-end passes run.
    perf_ctl: String,
}

impl Config {
    fn from_args() -> Config {
        let mut config = Config {
            samples: arg("samples", 2_000_000),
            targets: arg("targets", 1000),
            batch: arg("batch", 100),
            instances: arg("instances", 25),
            rounds: arg("rounds", 5),
            window: arg("window", 200_000),
            stage_cost_samples: arg("stage-cost-samples", 500_000),
            perf_ctl: arg("perf-ctl", String::new()),
        };
        assert!(config.targets > 0 && config.batch > 0 && config.instances > 0);
        assert!(config.rounds > 0, "--rounds must be at least 1");
        // Whole messages only.
        let messages = config.samples.div_ceil(config.batch as u64).max(1);
        config.samples = messages * config.batch as u64;
        // The subscribers' buffers hold 65,536 messages: stay well inside.
        let most = 32_768 * config.batch as u64;
        config.window = config.window.clamp(config.batch as u64, most);
        config
    }

    fn messages(&self) -> usize {
        (self.samples / self.batch as u64) as usize
    }

    fn command(&self) -> String {
        format!(
            "cargo bench -p nova-e2e --bench e2e_throughput -- --samples {} --targets {} --batch {} \
             --instances {} --rounds {} --window {}",
            self.samples, self.targets, self.batch, self.instances, self.rounds, self.window
        )
    }
}

fn target_name(i: usize) -> String {
    format!("t{i:04}")
}

/// Every target bound to two threshold rules that the workload never meets.
fn policy_yaml(targets: usize) -> String {
    let mut yaml = String::from("metrics:\n  cpu: { unit: percent }\ntargets:\n");
    for i in 0..targets {
        let _ = writeln!(
            yaml,
            "  {}: {{ rules: [quiet], backend: {{ sim: {{ initial: 2 }} }} }}",
            target_name(i)
        );
    }
    yaml.push_str(
        "horizontal_scaling_rules:\n  quiet:\n    \
         scale_up: { condition: \"avg_cpu > 95% for 2 minutes\", action: \"add 1 instance\", cooldown: 300, max_instances: 10 }\n    \
         scale_down: { condition: \"avg_cpu < 5% for 10 minutes\", action: \"remove 1 instance\", cooldown: 600, min_instances: 1 }\n",
    );
    yaml
}

/// One message: which target, its bytes, how many samples it holds.
struct Payload {
    target: usize,
    bytes: Bytes,
    samples: u64,
}

/// The messages of one round: targets interleaved, each target's samples in
/// event-time order from `base_ms`, one millisecond apart.
fn payloads(config: &Config, base_ms: i64) -> Vec<Payload> {
    (0..config.messages())
        .map(|m| {
            let target = m % config.targets;
            let first = (m / config.targets) * config.batch;
            let samples: Vec<MetricSampleIn> = (first..first + config.batch)
                .map(|s| MetricSampleIn {
                    metric: None,
                    value: SampleValue::Number(30.0 + (s % 40) as f64),
                    ts: Some(base_ms + s as i64),
                    instance: Some(format!("i-{:03}", s % config.instances)),
                    labels: Default::default(),
                })
                .collect();
            Payload {
                target,
                bytes: codec::encode(&samples).expect("encode").into(),
                samples: config.batch as u64,
            }
        })
        .collect()
}

/// Samples in a message: the length of a MessagePack array, else one.
fn samples_in(payload: &[u8]) -> u64 {
    match payload {
        [b @ 0x90..=0x9f, ..] => u64::from(b & 0x0f),
        [0xdc, a, b, ..] => u64::from(u16::from_be_bytes([*a, *b])),
        [0xdd, a, b, c, d, ..] => u64::from(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => 1,
    }
}

/// Publishes every payload, keeping at most `window` samples outstanding
/// at the far end (`counted`); returns when the last one is flushed.
async fn publish_all(
    client: &async_nats::Client,
    subjects: &[async_nats::Subject],
    payloads: &[Payload],
    counted: &Progress,
    window: u64,
    what: &str,
) {
    let start = counted.get();
    let mut sent = start;
    for payload in payloads {
        if sent - counted.get() > window {
            counted.wait_window(what, sent, window, STALL).await;
        }
        client
            .publish(subjects[payload.target].clone(), payload.bytes.clone())
            .await
            .expect("publish");
        sent += payload.samples;
    }
    deadline("the publisher's flush", STALL, client.flush())
        .await
        .expect("flush");
}

/// One timed pass of one path.
struct Pass {
    seconds: f64,
    /// End-to-end only: when ingest had accepted everything.
    ingest_seconds: Option<f64>,
    cpu: CpuMark,
    /// Cores busy with other processes, and stolen by the hypervisor.
    others: (f64, f64),
}

impl Pass {
    fn rate(&self, samples: u64) -> f64 {
        samples as f64 / self.seconds
    }
}

/// Tells a waiting `perf record --control fifo:FIFO -D -1` when to sample.
struct PerfControl(Option<std::fs::File>);

impl PerfControl {
    fn open(path: &str) -> PerfControl {
        if path.is_empty() {
            return PerfControl(None);
        }
        let fifo = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("--perf-ctl {path}: {e}"));
        PerfControl(Some(fifo))
    }

    fn send(&mut self, command: &str) {
        use std::io::Write as _;
        if let Some(fifo) = &mut self.0 {
            let _ = fifo.write_all(format!("{command}\n").as_bytes());
            let _ = fifo.flush();
        }
    }
}

struct Paths {
    publisher: async_nats::Client,
    raw_subjects: Vec<async_nats::Subject>,
    nova_subjects: Vec<async_nats::Subject>,
    raw_counted: Arc<Progress>,
    counters: common::Counters,
    server_pid: Option<u32>,
}

impl Paths {
    async fn raw(&self, config: &Config, payloads: &[Payload]) -> Pass {
        let goal = self.raw_counted.get() + config.samples;
        self.raw_counted.set_goal(goal);
        let system = SystemMark::now();
        let cpu = CpuMark::now(self.server_pid);
        let started = Instant::now();
        publish_all(
            &self.publisher,
            &self.raw_subjects,
            payloads,
            &self.raw_counted,
            config.window,
            "raw subscriber",
        )
        .await;
        let done = self.raw_counted.wait_goal("raw subscriber", STALL).await;
        let cpu = CpuMark::now(self.server_pid).since(cpu);
        Pass {
            seconds: done.duration_since(started).as_secs_f64(),
            ingest_seconds: None,
            cpu,
            others: SystemMark::now().others_since(system, cpu),
        }
    }

    async fn pipeline(&self, config: &Config, payloads: &[Payload]) -> Pass {
        let c = &self.counters;
        let refused = c.refused.get();
        c.accepted.set_goal(c.accepted.get() + config.samples);
        c.evaluated.set_goal(c.evaluated.get() + config.samples);
        let system = SystemMark::now();
        let cpu = CpuMark::now(self.server_pid);
        let started = Instant::now();
        publish_all(
            &self.publisher,
            &self.nova_subjects,
            payloads,
            &c.evaluated,
            config.window,
            "evaluator",
        )
        .await;
        let ingested = c.accepted.wait_goal("ingest", STALL).await;
        let done = c.evaluated.wait_goal("evaluator", STALL).await;
        let cpu = CpuMark::now(self.server_pid).since(cpu);
        assert_eq!(
            c.refused.get(),
            refused,
            "samples were rejected or dead-lettered"
        );
        Pass {
            seconds: done.duration_since(started).as_secs_f64(),
            ingest_seconds: Some(ingested.duration_since(started).as_secs_f64()),
            cpu,
            others: SystemMark::now().others_since(system, cpu),
        }
    }
}

/// Per-sample CPU cost of each stage's own work, one core, no NATS:
/// exactly what `nova_ingest::handle` and the evaluator's loop do with a
/// message, minus the publish and the metrics.
struct StageCost {
    samples: u64,
    ingest_ns: f64,
    evaluator_ns: f64,
    decode_in_ns: f64,
    decode_batch_ns: f64,
    /// What-if: the same bytes decoded with borrowed strings.
    borrowed_in_ns: f64,
    borrowed_batch_ns: f64,
}

/// What-if shapes: a published sample with a plain number value and the
/// instance borrowed from the message (no allocation, no untagged enum).
#[derive(serde::Deserialize)]
struct BorrowedIn<'a> {
    value: f64,
    ts: i64,
    #[serde(borrow)]
    instance: Option<&'a str>,
}

/// What-if: a sample batch whose strings borrow from the message.
#[derive(serde::Deserialize)]
struct BorrowedBatch<'a> {
    #[serde(borrow)]
    target: &'a str,
    #[serde(borrow)]
    samples: Vec<BorrowedSample<'a>>,
}

#[derive(serde::Deserialize)]
struct BorrowedSample<'a> {
    #[serde(borrow)]
    metric: &'a str,
    value: f64,
    ts: i64,
    #[serde(borrow)]
    instance: Option<&'a str>,
}

fn stage_cost(policy: &Policy, payloads: &[Payload], config: &Config, most: u64) -> StageCost {
    let subjects: Vec<String> = (0..config.targets)
        .map(|t| subjects::metrics(&target_name(t), METRIC))
        .collect();
    let take = ((most / config.batch as u64) as usize).clamp(1, payloads.len());
    let payloads = &payloads[..take];
    let samples = take as u64 * config.batch as u64;
    let now = nova_runtime::now_ms();

    // Decoding alone, for the breakdown.
    let started = Instant::now();
    let mut decoded = 0usize;
    for p in payloads {
        decoded += codec::decode_samples(&p.bytes, Encoding::MsgPack)
            .expect("decodes")
            .len();
    }
    let decode_in_ns = started.elapsed().as_nanos() as f64 / samples as f64;
    assert_eq!(decoded as u64, samples);

    // Ingest: parse the subject, decode, normalise each sample, encode the batch.
    let started = Instant::now();
    let mut batches = Vec::with_capacity(payloads.len());
    for p in payloads {
        let parsed = subjects::parse_metrics(&subjects[p.target]).expect("subject");
        let decoded = codec::decode_samples(&p.bytes, Encoding::MsgPack).expect("decodes");
        let mut out = Vec::with_capacity(decoded.len());
        for element in decoded {
            let input = element.expect("valid sample");
            out.push(
                normalise(policy, parsed.target, parsed.metric, &input, now).expect("normalises"),
            );
        }
        let batch = SampleBatch {
            target: parsed.target.to_string(),
            samples: out,
        };
        batches.push(Bytes::from(codec::encode(&batch).expect("encodes")));
    }
    let ingest_ns = started.elapsed().as_nanos() as f64 / samples as f64;

    let started = Instant::now();
    let mut count = 0usize;
    for b in &batches {
        let batch: SampleBatch = codec::decode(b, Encoding::MsgPack).expect("batch");
        count += batch.samples.len();
    }
    let decode_batch_ns = started.elapsed().as_nanos() as f64 / samples as f64;
    assert_eq!(count as u64, samples);

    // What-if decodes of the same bytes, borrowing the strings.
    let started = Instant::now();
    let mut check = 0usize;
    for p in payloads {
        let v: Vec<BorrowedIn<'_>> = rmp_serde::from_slice(&p.bytes).expect("borrowed in");
        check += v
            .iter()
            .filter(|s| s.instance.is_some() && s.ts > 0 && s.value >= 0.0)
            .count();
    }
    let borrowed_in_ns = started.elapsed().as_nanos() as f64 / samples as f64;
    assert_eq!(check as u64, samples);
    let started = Instant::now();
    let mut check = 0usize;
    for b in &batches {
        let v: BorrowedBatch<'_> = rmp_serde::from_slice(b).expect("borrowed batch");
        check += v
            .samples
            .iter()
            .filter(|s| {
                !v.target.is_empty()
                    && !s.metric.is_empty()
                    && s.instance.is_some()
                    && s.ts > 0
                    && s.value >= 0.0
            })
            .count();
    }
    let borrowed_batch_ns = started.elapsed().as_nanos() as f64 / samples as f64;
    assert_eq!(check as u64, samples);

    // Evaluator: decode the batch, evaluate every sample.
    let mut evaluator = Evaluator::new(policy);
    let started = Instant::now();
    let mut fired = 0usize;
    for b in &batches {
        let batch: SampleBatch = codec::decode(b, Encoding::MsgPack).expect("batch");
        let (triggers, rejected) = evaluator.observe_batch(&batch.target, &batch.samples, now);
        assert!(rejected.is_empty());
        fired += triggers.len();
    }
    let evaluator_ns = started.elapsed().as_nanos() as f64 / samples as f64;
    assert_eq!(fired, 0, "the benchmark's rules must not fire");
    StageCost {
        samples,
        ingest_ns,
        evaluator_ns,
        decode_in_ns,
        decode_batch_ns,
        borrowed_in_ns,
        borrowed_batch_ns,
    }
}

async fn run(config: Config) {
    let counters = common::install_counters();
    let policy = Arc::new(from_yaml(&policy_yaml(config.targets), "bench.yaml").expect("policy"));
    println!("# e2e_throughput\n");
    println!("command: {}", config.command());
    println!(
        "machine: {}; load average {}",
        common::machine(),
        common::load_average()
    );
    println!(
        "workload: {} samples per round in {} messages of {} samples, {} targets x {} instances, \
         2 threshold rules per target (never fire), window {} samples, {} round(s)\n",
        thousands(config.samples),
        thousands(config.messages() as u64),
        config.batch,
        config.targets,
        config.instances,
        thousands(config.window),
        config.rounds
    );
    let nats = NatsServer::start().await;
    let _provisioned = nats.client().await;
    let started = Instant::now();
    let pipeline = Pipeline::start(&nats, policy.clone()).await;
    eprintln!(
        "pipeline ready in {:.1}s (the actuator reads {} fleets first)",
        started.elapsed().as_secs_f64(),
        config.targets
    );

    let publisher = connect(&nats.url, "bench-publisher").await;
    let subscriber = connect(&nats.url, "bench-raw-subscriber").await;
    let raw_counted = Arc::new(Progress::default());
    let mut raw = subscriber
        .subscribe("bench.raw.>")
        .await
        .expect("raw subscribe");
    deadline("the raw subscription", STALL, subscriber.flush())
        .await
        .expect("flush");
    let counting = raw_counted.clone();
    let counter = tokio::spawn(async move {
        while let Some(message) = raw.next().await {
            counting.add(samples_in(&message.payload));
        }
    });
    let paths = Paths {
        publisher,
        raw_subjects: (0..config.targets)
            .map(|t| format!("bench.raw.{}.{METRIC}", target_name(t)).into())
            .collect(),
        nova_subjects: (0..config.targets)
            .map(|t| subjects::metrics(&target_name(t), METRIC).into())
            .collect(),
        raw_counted,
        counters,
        server_pid: nats.pid(),
    };

    // Event time: well in the past (never "from the future"), rising round
    // after round so every sample is newer than its instance's last.
    let per_target = config.samples.div_ceil(config.targets as u64) as i64 + config.batch as i64;
    let base = nova_runtime::now_ms() - 3_600_000;
    let mut passes = Vec::new();
    let mut bytes = 0usize;
    let mut perf = PerfControl::open(&config.perf_ctl);
    for round in 0..config.rounds {
        let payloads = payloads(&config, base + round as i64 * per_target);
        bytes = payloads.iter().map(|p| p.bytes.len()).sum();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let raw = paths.raw(&config, &payloads).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        perf.send("enable");
        let e2e = paths.pipeline(&config, &payloads).await;
        perf.send("disable");
        eprintln!(
            "round {}: raw {}/s, end to end {}/s",
            round + 1,
            rate(raw.rate(config.samples)),
            rate(e2e.rate(config.samples))
        );
        passes.push((raw, e2e));
    }
    counter.abort();
    deadline(
        "the pipeline to stop",
        Duration::from_secs(60),
        pipeline.stop(),
    )
    .await;

    let stage_payloads = payloads(&config, base);
    let cost = stage_cost(&policy, &stage_payloads, &config, config.stage_cost_samples);

    report(&config, &passes, bytes, &cost);
}

fn report(config: &Config, passes: &[(Pass, Pass)], bytes: usize, cost: &StageCost) {
    let n = config.samples;
    let cores = |p: &Pass| (p.cpu.bench / p.seconds, p.cpu.server / p.seconds);
    let mut rows = Vec::new();
    for (i, (raw, e2e)) in passes.iter().enumerate() {
        for (name, p) in [("raw NATS", raw), ("ingest + evaluator", e2e)] {
            let (bench, server) = cores(p);
            rows.push(vec![
                format!("{} {name}", i + 1),
                format!("{:.3}", p.seconds),
                rate(p.rate(n)),
                format!("{:.0} k", p.rate(n) / config.batch as f64 / 1e3),
                format!("{:.0}", p.rate(n) * bytes as f64 / n as f64 / 1e6),
                p.ingest_seconds.map_or("-".into(), |s| rate(n as f64 / s)),
                format!("{bench:.2}"),
                format!("{server:.2}"),
                format!("{:.2}", (p.cpu.bench + p.cpu.server) / n as f64 * 1e6),
                format!("{:.2} / {:.2}", p.others.0, p.others.1),
            ]);
        }
    }
    println!("## Passes\n");
    println!(
        "{}\n",
        table(
            &[
                "round path",
                "seconds",
                "samples/s",
                "msgs/s",
                "MB/s",
                "ingest done at",
                "bench process cores",
                "nats-server cores",
                "CPU us/sample",
                "other / stolen cores",
            ],
            &rows,
        )
    );
    println!(
        "(`ingest done at`: samples/s counting to the moment ingest had accepted the last sample; \
         cores = CPU seconds / wall seconds at 10 ms resolution; the bench process holds the publisher, \
         the subscriber and all five stages; other / stolen: cores busy with other processes on the \
         machine, and taken by the hypervisor)\n"
    );

    let raw: Vec<f64> = passes.iter().map(|(r, _)| r.rate(n)).collect();
    let e2e: Vec<f64> = passes.iter().map(|(_, e)| e.rate(n)).collect();
    let ratios: Vec<f64> = passes.iter().map(|(r, e)| e.rate(n) / r.rate(n)).collect();
    let best = |v: &[f64]| v.iter().copied().fold(f64::MIN, f64::max);
    let (raw_med, e2e_med, ratio_med) = (
        common::median(&raw),
        common::median(&e2e),
        common::median(&ratios),
    );
    println!("## Result ({} round(s), median and best)\n", config.rounds);
    println!(
        "{}\n",
        table(
            &["path", "samples/s median", "samples/s best"],
            &[
                vec![
                    "raw async-nats pub/sub".into(),
                    rate(raw_med),
                    rate(best(&raw))
                ],
                vec![
                    "end to end (ingest + evaluator)".into(),
                    rate(e2e_med),
                    rate(best(&e2e)),
                ],
                vec![
                    "ratio end to end / raw".into(),
                    format!("{ratio_med:.3}"),
                    format!("{:.3}", best(&ratios)),
                ],
            ],
        )
    );
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "aims: >= 1 M samples/s end to end: {} ({}); >= half of raw NATS: {} ({:.3})\n",
        verdict(e2e_med >= 1e6),
        rate(e2e_med),
        verdict(ratio_med >= 0.5),
        ratio_med
    );

    println!(
        "## Stage CPU cost per sample (one core, no NATS, {} samples)\n",
        thousands(cost.samples)
    );
    let per_core = |ns: f64| rate(1e9 / ns);
    println!(
        "{}\n",
        table(
            &["work", "ns/sample", "samples/s on one core"],
            &[
                vec![
                    "ingest: decode + normalise + encode batch".into(),
                    format!("{:.0}", cost.ingest_ns),
                    per_core(cost.ingest_ns),
                ],
                vec![
                    "  of which decode_samples (MetricSampleIn)".into(),
                    format!("{:.0}", cost.decode_in_ns),
                    per_core(cost.decode_in_ns),
                ],
                vec![
                    "evaluator: decode batch + observe_batch".into(),
                    format!("{:.0}", cost.evaluator_ns),
                    per_core(cost.evaluator_ns),
                ],
                vec![
                    "  of which decode SampleBatch".into(),
                    format!("{:.0}", cost.decode_batch_ns),
                    per_core(cost.decode_batch_ns),
                ],
                vec![
                    "both stages".into(),
                    format!("{:.0}", cost.ingest_ns + cost.evaluator_ns),
                    per_core(cost.ingest_ns + cost.evaluator_ns),
                ],
                vec![
                    "what-if: decode published samples, strings borrowed".into(),
                    format!("{:.0}", cost.borrowed_in_ns),
                    per_core(cost.borrowed_in_ns),
                ],
                vec![
                    "what-if: decode SampleBatch, strings borrowed".into(),
                    format!("{:.0}", cost.borrowed_batch_ns),
                    per_core(cost.borrowed_batch_ns),
                ],
            ],
        )
    );
}

fn main() {
    if common::wants_help() {
        println!(
            "cargo bench -p nova-e2e --bench e2e_throughput -- [--samples N] [--targets T] [--batch B] \
             [--instances I] [--rounds R] [--window W] [--stage-cost-samples S] [--perf-ctl FIFO]\n\n\
             Profile only the end-to-end passes:\n  \
             mkfifo /tmp/perf.ctl && perf record -g --call-graph dwarf -D -1 --control fifo:/tmp/perf.ctl \\\n    \
             target/release/deps/e2e_throughput-<hash> --perf-ctl /tmp/perf.ctl"
        );
        return;
    }
    let config = Config::from_args();
    // Generous: at 100k samples/s a round of 2M takes 20 s per path.
    let limit = Duration::from_secs(120 + config.rounds as u64 * (config.samples / 20_000).max(60));
    common::runtime().block_on(deadline("the benchmark", limit, run(config)));
}
