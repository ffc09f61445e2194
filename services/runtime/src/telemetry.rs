//! Metrics and logs. Metric names live in [`names`] only; labels are bounded
//! (stage, outcome, and target names from the policy).

use metrics_exporter_prometheus::{Matcher, PrometheusHandle};
use nova_shared::wire::{Outcome, ResultStatus, Stage};
use thiserror::Error;

/// Every metric name, `nova_<name>_<unit>[_total]`.
pub mod names {
    /// Pull consumers started again after a break, by `stream`.
    pub const PULL_RESTARTS: &str = "nova_pull_restarts_total";
    /// Messages given up after retrying a broker error for as long as they
    /// were relevant, by `stage`.
    pub const GIVEN_UP: &str = "nova_given_up_total";
    /// Requests to ingest's Alertmanager webhook, by `outcome` (accepted,
    /// unauthorized, too_large, bad_payload, unavailable).
    pub const WEBHOOK_REQUESTS: &str = "nova_webhook_requests_total";
    /// Alerts the webhook received, by `outcome` (matched, unmatched).
    pub const WEBHOOK_ALERTS: &str = "nova_webhook_alerts_total";
    /// Samples ingest accepted or rejected, by `outcome`.
    pub const INGEST_SAMPLES: &str = "nova_ingest_samples_total";
    /// Messages sent to a dead-letter subject, by `stage`.
    pub const DEAD_LETTERS: &str = "nova_dead_letters_total";
    /// Dead letters that could not even be published, by `stage`.
    pub const DEAD_LETTER_FAILURES: &str = "nova_dead_letter_failures_total";
    /// Samples the evaluator saw, by `effect` (evaluated, rejected).
    pub const EVALUATOR_SAMPLES: &str = "nova_evaluator_samples_total";
    /// Triggers published, by `target`.
    pub const TRIGGERS: &str = "nova_triggers_total";
    /// Arbiter decisions, by `outcome`.
    pub const DECISIONS: &str = "nova_decisions_total";
    /// Commands executed, by `status`.
    pub const COMMANDS: &str = "nova_commands_total";
    /// Backend call duration, by `backend`.
    pub const BACKEND_CALL_SECONDS: &str = "nova_backend_call_seconds";
    /// Audit records published, by `stage`.
    pub const AUDIT_PUBLISHED: &str = "nova_audit_published_total";
    /// Audit records seen by the audit service, by `stage` and `outcome`.
    pub const AUDIT_RECORDS: &str = "nova_audit_records_total";
    /// KV compare-and-set conflicts, by `bucket`.
    pub const KV_CONFLICTS: &str = "nova_kv_conflicts_total";
    /// Backend readings older than the one already stored (the simulated
    /// fleet's fencing token went back), not stored; by `backend`.
    pub const STALE_READS: &str = "nova_backend_stale_reads_total";
    /// Messages whose handling failed and will be retried, by `stage`.
    pub const RETRIES: &str = "nova_retries_total";
    /// Messages left for a newer version of their stage (a record of a
    /// newer version, or a value this version does not know where it must
    /// act on it), delayed and redelivered, never dead-lettered; by `stage`.
    pub const DEFERRED: &str = "nova_deferred_total";
    /// Policy reloads (SIGHUP or a change of the file), by `outcome`:
    /// applied, unchanged, refused (an unreadable or invalid file; the
    /// running policy stays).
    pub const POLICY_RELOADS: &str = "nova_policy_reloads_total";
    /// Time from a decision to the actuator's result for it (the whole
    /// action, queueing included), seconds, by `status`.
    pub const ACTION_SECONDS: &str = "nova_action_duration_seconds";
    /// JetStream consumer lag (pending plus ack-pending messages) that
    /// ingest last read for a target's `queue_depth` block, by `target`,
    /// `stream` and `consumer` (all named in the policy).
    pub const CONSUMER_LAG: &str = "nova_consumer_lag_messages";
    /// Consumer-lag reads by ingest, by `outcome` (read, failed).
    pub const LAG_POLLS: &str = "nova_lag_polls_total";
    /// Audit records seen by the audit service, by `target`.
    pub const AUDIT_TARGET_RECORDS: &str = "nova_audit_target_records_total";
    /// The capacity the newest succeeded result of a target reported, by
    /// `target` (audit service).
    pub const AUDIT_TARGET_CAPACITY: &str = "nova_audit_target_capacity";
    /// Unix time of the newest decision that scaled a target, seconds, by
    /// `target` (audit service).
    pub const AUDIT_TARGET_LAST_SCALE: &str = "nova_audit_target_last_scale_timestamp_seconds";
}

/// The metrics recorder could not be installed.
#[derive(Debug, Error)]
#[error("cannot install the Prometheus metrics recorder: {reason}")]
pub struct ExporterError {
    reason: String,
}

/// Histogram buckets, seconds: backend calls and whole actions, so that
/// replicas can be summed (no per-process quantiles).
const SECONDS_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Installs the process's Prometheus recorder and returns the handle that
/// renders it (served by [`crate::http`]); spawns its upkeep. Call once
/// per process, inside a tokio runtime.
pub fn install_prometheus() -> Result<PrometheusHandle, ExporterError> {
    let error = |e: metrics_exporter_prometheus::BuildError| ExporterError {
        reason: e.to_string(),
    };
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(names::BACKEND_CALL_SECONDS.to_string()),
            &SECONDS_BUCKETS,
        )
        .map_err(error)?
        .set_buckets_for_metric(
            Matcher::Full(names::ACTION_SECONDS.to_string()),
            &SECONDS_BUCKETS,
        )
        .map_err(error)?
        .install_recorder()
        .map_err(error)?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(handle)
}

/// Which label values each metric is registered with at start.
enum Labels {
    /// No label is known before the first event (a bucket's or stream's
    /// name, a backend): described only.
    Later,
    /// One label with these values.
    One(&'static str, Vec<String>),
}

/// Describes every metric a process with `stages` exports and registers its
/// counters at zero with the label values known at start (stages, outcomes,
/// statuses, the policy's targets), so a scrape right after start shows
/// them and `rate()`/`increase()` see the first event.
pub fn register(stages: &[Stage], targets: &[String]) {
    use metrics::Unit;
    let has = |stage: Stage| stages.contains(&stage);
    let stage_labels: Vec<String> = stages.iter().map(|s| s.label().to_string()).collect();
    let strings = |values: &[&str]| values.iter().map(|v| (*v).to_string()).collect::<Vec<_>>();
    // (name, help, the stage that exports it or None for all, labels)
    let counters: Vec<(&'static str, &'static str, Option<Stage>, Labels)> = vec![
        (
            names::PULL_RESTARTS,
            "Pull consumers started again after a break",
            None,
            Labels::Later,
        ),
        (
            names::GIVEN_UP,
            "Messages given up after retrying a broker error",
            None,
            Labels::One("stage", stage_labels.clone()),
        ),
        (
            names::INGEST_SAMPLES,
            "Samples ingest accepted, rejected or lost",
            Some(Stage::Ingest),
            Labels::One("outcome", strings(&["accepted", "rejected", "lost"])),
        ),
        (
            names::DEAD_LETTERS,
            "Messages sent to a dead-letter subject",
            None,
            Labels::One("stage", stage_labels.clone()),
        ),
        (
            names::DEAD_LETTER_FAILURES,
            "Dead letters that could not be published",
            None,
            Labels::One("stage", stage_labels.clone()),
        ),
        (
            names::EVALUATOR_SAMPLES,
            "Samples the evaluator saw, by effect",
            Some(Stage::Evaluator),
            Labels::One(
                "effect",
                strings(&["evaluated", "rejected", "other_partition"]),
            ),
        ),
        (
            names::TRIGGERS,
            "Triggers published",
            Some(Stage::Evaluator),
            Labels::One("target", targets.to_vec()),
        ),
        (
            names::DECISIONS,
            "Arbiter decisions, by outcome",
            Some(Stage::Arbiter),
            Labels::One("outcome", strings(Outcome::KNOWN)),
        ),
        (
            names::COMMANDS,
            "Commands executed, by result status",
            Some(Stage::Actuator),
            Labels::One("status", strings(ResultStatus::KNOWN)),
        ),
        (
            names::AUDIT_PUBLISHED,
            "Audit records published",
            None,
            Labels::One("stage", stage_labels.clone()),
        ),
        (
            names::AUDIT_RECORDS,
            "Audit records seen by the audit service",
            Some(Stage::Audit),
            Labels::Later,
        ),
        (
            names::AUDIT_TARGET_RECORDS,
            "Audit records seen by the audit service, by target",
            Some(Stage::Audit),
            Labels::One("target", targets.to_vec()),
        ),
        (
            names::KV_CONFLICTS,
            "KV compare-and-set conflicts",
            None,
            Labels::Later,
        ),
        (
            names::STALE_READS,
            "Backend readings older than the one stored, not stored",
            Some(Stage::Actuator),
            Labels::One("backend", strings(&["sim"])),
        ),
        (
            names::RETRIES,
            "Messages whose handling failed and will be retried",
            None,
            Labels::One("stage", stage_labels.clone()),
        ),
        (
            names::DEFERRED,
            "Messages left for a newer version of their stage",
            None,
            Labels::One("stage", stage_labels.clone()),
        ),
        (
            names::POLICY_RELOADS,
            "Policy reloads, by outcome",
            None,
            Labels::One("outcome", strings(&["applied", "unchanged", "refused"])),
        ),
        (
            names::LAG_POLLS,
            "Consumer-lag reads by ingest",
            Some(Stage::Ingest),
            Labels::One("outcome", strings(&["read", "failed"])),
        ),
    ];
    for (name, help, owner, labels) in counters {
        if owner.is_some_and(|owner| !has(owner)) {
            continue;
        }
        metrics::describe_counter!(name, Unit::Count, help);
        if let Labels::One(key, values) = labels {
            for value in values {
                metrics::counter!(name, key => value).increment(0);
            }
        }
    }
    metrics::describe_histogram!(
        names::BACKEND_CALL_SECONDS,
        Unit::Seconds,
        "Backend call duration"
    );
    if has(Stage::Actuator) {
        metrics::describe_histogram!(
            names::ACTION_SECONDS,
            Unit::Seconds,
            "Time from a decision to its result"
        );
    }
    if has(Stage::Ingest) {
        metrics::describe_gauge!(
            names::CONSUMER_LAG,
            Unit::Count,
            "JetStream consumer lag (pending plus ack-pending)"
        );
    }
    if has(Stage::Audit) {
        metrics::describe_gauge!(
            names::AUDIT_TARGET_CAPACITY,
            Unit::Count,
            "Capacity of the newest succeeded result"
        );
        metrics::describe_gauge!(
            names::AUDIT_TARGET_LAST_SCALE,
            Unit::Seconds,
            "Unix time of the newest scaling decision"
        );
    }
}

/// Logs to stderr, filtered by `RUST_LOG` (default `info`). Safe to call twice.
pub fn init_tracing() {
    init_tracing_at("info");
}

/// Like [`init_tracing`] with another default level (`warn` for a CLI).
pub fn init_tracing_at(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // The NATS client's own reconnect events are terse; the services
        // say what is wrong in their own lines.
        .unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("{default_level},async_nats=warn"))
        });
    // Colours only on a terminal: a log file or collector gets plain lines.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// Makes a panic anywhere in the process end the process, after one log
/// line naming the service and where it panicked. A stage task that
/// panicked would otherwise leave the process half alive: answering pings
/// and holding its consumer while it no longer works. Ending it lets the
/// supervisor (systemd, Kubernetes, `run-local.sh`) restart it, and
/// JetStream redelivers what it had in hand. Exit code 70 (EX_SOFTWARE).
pub fn exit_on_panic(service: &str) {
    let service = service.to_string();
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!(service, "panic, the process ends: {info}");
        default(info);
        std::process::exit(70);
    }));
}
