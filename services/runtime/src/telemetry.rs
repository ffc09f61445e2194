//! Metrics and logs. Metric names live in [`names`] only; labels are bounded
//! (stage, outcome, and target names from the policy).

use std::net::SocketAddr;

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
}

/// The metrics exporter could not start.
#[derive(Debug, Error)]
#[error("cannot start the Prometheus exporter on {addr}: {reason}")]
pub struct ExporterError {
    addr: SocketAddr,
    reason: String,
}

/// Serves `/metrics` on `addr`. Call once per process, inside a tokio runtime.
pub fn install_prometheus(addr: SocketAddr) -> Result<(), ExporterError> {
    // Buckets make backend call times a histogram that replicas can sum,
    // not per-process quantiles.
    let backend_buckets = [
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ];
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Full(names::BACKEND_CALL_SECONDS.to_string()),
            &backend_buckets,
        )
        .map_err(|e| ExporterError {
            addr,
            reason: e.to_string(),
        })?
        .with_http_listener(addr)
        .install()
        .map_err(|e| ExporterError {
            addr,
            reason: e.to_string(),
        })
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
