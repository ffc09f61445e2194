//! What both end-to-end benchmarks share: arguments, a tokio runtime, an
//! in-process metrics recorder that turns the services' own counters into
//! lossless progress signals, CPU accounting, percentiles and tables.

// Each bench binary compiles this module and uses part of it.
#![allow(dead_code)]

use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// `--name value` or `--name=value` from the command line (after `--`),
/// else `default`. `cargo bench` adds `--bench`, which is ignored.
pub fn arg<T: FromStr>(name: &str, default: T) -> T {
    let flag = format!("--{name}");
    let args: Vec<String> = std::env::args().skip(1).collect();
    for (i, a) in args.iter().enumerate() {
        let value = if a == &flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&format!("{flag}=")).map(str::to_string)
        };
        if let Some(value) = value {
            // `2_000_000` reads as a number too.
            return value
                .parse()
                .or_else(|_| value.replace('_', "").parse())
                .unwrap_or_else(|_| panic!("--{name}: cannot read {value:?}"));
        }
    }
    default
}

/// True when `--help` or `-h` was given.
pub fn wants_help() -> bool {
    std::env::args().any(|a| a == "--help" || a == "-h")
}

/// The multi-threaded runtime the end-to-end tests use: two workers, as the
/// machine has two cores.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Runs `future` with a deadline; a timeout aborts the benchmark naming `what`.
pub async fn deadline<T>(what: &str, limit: Duration, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}

/// A counter fed by a service's `metrics::counter!` calls: exact, in
/// process, and able to say when it crossed a goal.
#[derive(Default)]
pub struct Progress {
    count: AtomicU64,
    goal: AtomicU64,
    reached_at: Mutex<Option<Instant>>,
    reached: Notify,
}

impl Progress {
    /// The count so far.
    pub fn get(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Adds `n` (the raw subscriber counts through this too).
    pub fn add(&self, n: u64) {
        let before = self.count.fetch_add(n, Ordering::AcqRel);
        let goal = self.goal.load(Ordering::Acquire);
        if goal > 0 && before < goal && before + n >= goal {
            *self.reached_at.lock().expect("lock") = Some(Instant::now());
            self.reached.notify_one();
        }
    }

    /// Sets the next goal (an absolute count) and forgets the last crossing.
    pub fn set_goal(&self, goal: u64) {
        *self.reached_at.lock().expect("lock") = None;
        self.goal.store(goal, Ordering::Release);
        if self.get() >= goal {
            *self.reached_at.lock().expect("lock") = Some(Instant::now());
        }
    }

    /// Waits until the goal is reached and returns when it was. Fails if the
    /// count stops moving for `stall` (lost messages never arrive).
    pub async fn wait_goal(&self, what: &str, stall: Duration) -> Instant {
        let goal = self.goal.load(Ordering::Acquire);
        let mut last = self.get();
        let mut moved = Instant::now();
        loop {
            if let Some(at) = *self.reached_at.lock().expect("lock") {
                return at;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), self.reached.notified()).await;
            let now = self.get();
            if now != last {
                last = now;
                moved = Instant::now();
            } else if moved.elapsed() > stall {
                panic!(
                    "{what}: stuck at {now} of {goal} for {stall:?}: {} lost or rejected",
                    goal.saturating_sub(now)
                );
            }
        }
    }

    /// Waits until at most `window` of `sent` are still outstanding. Fails
    /// if the count stops moving for `stall`.
    pub async fn wait_window(&self, what: &str, sent: u64, window: u64, stall: Duration) {
        let mut last = self.get();
        let mut moved = Instant::now();
        while sent.saturating_sub(self.get()) > window {
            tokio::time::sleep(Duration::from_millis(1)).await;
            let now = self.get();
            if now != last {
                last = now;
                moved = Instant::now();
            } else if moved.elapsed() > stall {
                panic!("{what}: stuck at {now} with {sent} sent for {stall:?}");
            }
        }
    }
}

impl metrics::CounterFn for Progress {
    fn increment(&self, value: u64) {
        self.add(value);
    }

    fn absolute(&self, value: u64) {
        self.count.store(value, Ordering::Release);
    }
}

/// Which counter (name and one label) a [`Progress`] follows.
struct Watched {
    name: &'static str,
    label: Option<(&'static str, &'static str)>,
    progress: Arc<Progress>,
}

/// A recorder that feeds the watched counters and drops everything else.
struct Recorder {
    watched: Vec<Watched>,
}

impl metrics::Recorder for Recorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }

    fn register_counter(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        for w in &self.watched {
            if key.name() != w.name {
                continue;
            }
            let matches = match w.label {
                None => true,
                Some((k, v)) => key.labels().any(|l| l.key() == k && l.value() == v),
            };
            if matches {
                return metrics::Counter::from_arc(w.progress.clone());
            }
        }
        metrics::Counter::noop()
    }

    fn register_gauge(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        metrics::Gauge::noop()
    }

    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

/// The services' counters a benchmark follows.
pub struct Counters {
    /// `nova_evaluator_samples_total{effect="evaluated"}`.
    pub evaluated: Arc<Progress>,
    /// `nova_ingest_samples_total{outcome="accepted"}`.
    pub accepted: Arc<Progress>,
    /// Every sample rejected by ingest or the evaluator, and every dead letter.
    pub refused: Arc<Progress>,
}

/// Installs the process-wide recorder (once, before the stages run).
pub fn install_counters() -> Counters {
    use nova_runtime::telemetry::names;
    let counters = Counters {
        evaluated: Arc::default(),
        accepted: Arc::default(),
        refused: Arc::default(),
    };
    let watch = |name, label, progress: &Arc<Progress>| Watched {
        name,
        label,
        progress: progress.clone(),
    };
    let recorder = Recorder {
        watched: vec![
            watch(
                names::EVALUATOR_SAMPLES,
                Some(("effect", "evaluated")),
                &counters.evaluated,
            ),
            watch(
                names::INGEST_SAMPLES,
                Some(("outcome", "accepted")),
                &counters.accepted,
            ),
            watch(
                names::INGEST_SAMPLES,
                Some(("outcome", "rejected")),
                &counters.refused,
            ),
            watch(
                names::EVALUATOR_SAMPLES,
                Some(("effect", "rejected")),
                &counters.refused,
            ),
            watch(names::DEAD_LETTERS, None, &counters.refused),
        ],
    };
    metrics::set_global_recorder(recorder).expect("no other metrics recorder");
    counters
}

/// CPU seconds (user + system) a process has used so far (Linux).
pub fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // USER_HZ is 100 on every Linux this runs on.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// CPU seconds of this process, of the nats-server and of a backend's
/// server (moto), read together.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    /// This process (publisher, the five stages, observers).
    pub bench: f64,
    /// The nats-server.
    pub server: f64,
    /// The backend's own server process (0 without one).
    pub backend: f64,
}

impl CpuMark {
    /// Now, for this process and `server_pid`.
    pub fn now(server_pid: Option<u32>) -> CpuMark {
        CpuMark::with_backend(server_pid, None)
    }

    /// Now, for this process, `server_pid` and `backend_pid`.
    pub fn with_backend(server_pid: Option<u32>, backend_pid: Option<u32>) -> CpuMark {
        CpuMark {
            bench: cpu_secs(std::process::id()),
            server: server_pid.map_or(0.0, cpu_secs),
            backend: backend_pid.map_or(0.0, cpu_secs),
        }
    }

    /// CPU used since `earlier`.
    pub fn since(self, earlier: CpuMark) -> CpuMark {
        CpuMark {
            bench: self.bench - earlier.bench,
            server: self.server - earlier.server,
            backend: self.backend - earlier.backend,
        }
    }
}

/// Nearest-rank percentile of sorted values (`p` in 0..=100).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of unsorted values.
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return f64::NAN;
    }
    let mid = sorted.len() / 2;
    if !sorted.len().is_multiple_of(2) {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate in samples per second, as `1.23 M` or `456 k`.
pub fn rate(per_sec: f64) -> String {
    if per_sec >= 1e6 {
        format!("{:.2} M", per_sec / 1e6)
    } else {
        format!("{:.0} k", per_sec / 1e3)
    }
}

/// A Markdown table with right-aligned columns after the first.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.len());
        }
    }
    let line = |cells: Vec<String>| {
        let mut s = String::from("|");
        for (i, cell) in cells.iter().enumerate() {
            if i == 0 {
                let _ = write!(s, " {cell:<w$} |", w = widths[i]);
            } else {
                let _ = write!(s, " {cell:>w$} |", w = widths[i]);
            }
        }
        s
    };
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    out.push('\n');
    let rule: Vec<String> = widths
        .iter()
        .enumerate()
        .map(|(i, w)| {
            if i == 0 {
                "-".repeat(*w)
            } else {
                format!("{}:", "-".repeat(w.saturating_sub(1)))
            }
        })
        .collect();
    out.push_str(&line(rule));
    for row in rows {
        out.push('\n');
        out.push_str(&line(row.clone()));
    }
    out
}

/// One line naming the machine: logical CPUs and the CPU model.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} logical CPUs ({model}), shared by the bench process and nats-server")
}

/// Whole-machine CPU ticks from `/proc/stat`: busy (everything but idle and
/// iowait) and stolen by the hypervisor.
#[derive(Debug, Clone, Copy)]
pub struct SystemMark {
    busy: u64,
    steal: u64,
    at: Instant,
}

impl SystemMark {
    /// Now.
    pub fn now() -> SystemMark {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let ticks: Vec<u64> = stat
            .lines()
            .next()
            .unwrap_or_default()
            .split_whitespace()
            .skip(1)
            .filter_map(|t| t.parse().ok())
            .collect();
        let at = |i: usize| ticks.get(i).copied().unwrap_or(0);
        // user nice system idle iowait irq softirq steal
        SystemMark {
            busy: at(0) + at(1) + at(2) + at(5) + at(6),
            steal: at(7),
            at: Instant::now(),
        }
    }

    /// Cores busy with anything but this process, the nats-server and the
    /// backend's server since `earlier`, and cores stolen by the hypervisor.
    pub fn others_since(self, earlier: SystemMark, ours: CpuMark) -> (f64, f64) {
        let secs = self.at.duration_since(earlier.at).as_secs_f64().max(1e-9);
        let busy = self.busy.saturating_sub(earlier.busy) as f64 / 100.0;
        let steal = self.steal.saturating_sub(earlier.steal) as f64 / 100.0;
        (
            ((busy - ours.bench - ours.server - ours.backend) / secs).max(0.0),
            steal / secs,
        )
    }
}

/// The 1-minute load average.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .next()
        .unwrap_or("?")
        .to_string()
}
