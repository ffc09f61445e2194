//! Flags every service binary takes, and the start-up they share: logs,
//! policy, metrics recorder, NATS connection, the HTTP listener
//! (`/metrics`, `/healthz`, `/readyz`, see [`crate::http`]), the check that
//! JetStream is provisioned.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use nova_shared::policy::{self, Policy, PolicyError, Revised};
use nova_shared::wire::Stage;
use thiserror::Error;

use crate::http::{self, HttpError};

use crate::nats;
use crate::provision::{self, CheckError};
use crate::reload::{self, LivePolicy};
use crate::shutdown::{self, Shutdown};
use crate::telemetry::{self, ExporterError};

/// Common service flags (each also read from the environment).
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// NATS server URL; a cluster's servers comma-separated.
    #[arg(long, env = "NOVA_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// NATS user (with `--nats-password`); none: connect without one.
    #[arg(long, env = "NOVA_NATS_USER", requires = "nats_password")]
    pub nats_user: Option<String>,
    /// NATS password of `--nats-user` (best from the environment, e.g. a
    /// Kubernetes Secret, not the command line).
    #[arg(
        long,
        env = "NOVA_NATS_PASSWORD",
        hide_env_values = true,
        requires = "nats_user"
    )]
    pub nats_password: Option<String>,
    /// Policy file (YAML).
    #[arg(long, env = "NOVA_POLICY")]
    pub policy: PathBuf,
    /// Serve Prometheus metrics (`/metrics`) and the probes (`/healthz`,
    /// `/readyz`) on this address, e.g. 0.0.0.0:9464.
    #[arg(long, env = "NOVA_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

/// Start-up failed.
#[derive(Debug, Error)]
pub enum StartError {
    /// The policy is unusable.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// NATS could not be reached.
    #[error(transparent)]
    Connect(#[from] nats::ConnectError),
    /// Streams or buckets are not provisioned (`novactl provision`).
    #[error(transparent)]
    Unprovisioned(#[from] CheckError),
    /// The metrics recorder could not be installed.
    #[error(transparent)]
    Exporter(#[from] ExporterError),
    /// The metrics and probe listener could not be opened.
    #[error(transparent)]
    Http(#[from] HttpError),
}

/// What a service needs to run.
pub struct Started {
    /// The validated policy.
    pub policy: Arc<Policy>,
    /// A connected client.
    pub client: async_nats::Client,
}

/// The stages a process of this name runs: `nova-<stage>` runs its stage,
/// any other name (`novactl-run`) all five. `/readyz` waits for each, and
/// the counters of each are registered at zero.
pub fn stages_of(name: &str) -> Vec<Stage> {
    match name.strip_prefix("nova-").map(Stage::from_wire) {
        Some(stage) if stage.is_known() => vec![stage],
        _ => Stage::KNOWN.iter().map(|s| Stage::from_wire(s)).collect(),
    }
}

/// Logs, policy, metrics recorder, connection, HTTP listener and the
/// provisioning check, in that order, so a bad policy fails before
/// anything touches the network, and `/healthz` answers while the service
/// waits for streams. A service creates no streams or buckets: it waits a
/// while for them ([`provision::wait_for_streams`]), then fails naming what
/// to run.
pub async fn start(name: &str, args: &CommonArgs) -> Result<Started, StartError> {
    telemetry::init_tracing();
    telemetry::exit_on_panic(name);
    let policy = Arc::new(policy::load_file(&args.policy)?);
    let stages = stages_of(name);
    let recorder = match args.metrics_addr {
        Some(_) => {
            let handle = telemetry::install_prometheus()?;
            let targets: Vec<String> = policy.targets.keys().cloned().collect();
            telemetry::register(&stages, &targets);
            Some(handle)
        }
        None => None,
    };
    let user = match (&args.nats_user, &args.nats_password) {
        (Some(user), Some(password)) => Some(nats::UserPassword {
            user: user.clone(),
            password: password.clone(),
        }),
        _ => None,
    };
    let client = nats::connect_with(&args.nats_url, name, user).await?;
    if let (Some(addr), Some(handle)) = (args.metrics_addr, recorder) {
        let bound = http::serve(addr, handle, client.clone(), &stages).await?;
        tracing::info!(service = name, %bound, "serving /metrics, /healthz and /readyz");
    }
    provision::wait_for_streams(&nats::jetstream(&client), &args.nats_url).await?;
    let revision = policy::revision(&policy);
    tracing::info!(service = name, url = %args.nats_url, targets = policy.targets.len(), revision, "started");
    Ok(Started { policy, client })
}

/// A service binary stopped with an error.
#[derive(Debug, Error)]
pub enum ServeError {
    /// Start-up failed.
    #[error(transparent)]
    Start(#[from] StartError),
    /// The service itself failed.
    #[error("{name} failed: {source}")]
    Run {
        /// The service.
        name: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The connection could not be drained on the way out.
    #[error("cannot drain the NATS connection: {0}")]
    Drain(#[source] async_nats::client::DrainError),
}

/// The whole life of a service binary: [`start`], then `service(policy,
/// client, shutdown)` until Ctrl-C or SIGTERM, then drain the connection so
/// nothing published is lost on the way out. The policy is reloaded on
/// SIGHUP and when its file changes ([`reload::watch_file`]).
pub async fn serve<F, Fut, E>(name: &str, args: &CommonArgs, service: F) -> Result<(), ServeError>
where
    F: FnOnce(LivePolicy, async_nats::Client, Shutdown) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let started = start(name, args).await?;
    let client = started.client.clone();
    let shutdown = shutdown::on_ctrl_c();
    let (sender, policy) = reload::channel(Revised::new(started.policy));
    let watch = reload::watch_file(
        args.policy.clone(),
        sender,
        reload::POLL_EVERY,
        shutdown.signal(),
    );
    tokio::spawn(watch);
    service(policy, started.client, shutdown)
        .await
        .map_err(|source| ServeError::Run {
            name: name.to_string(),
            source: Box::new(source),
        })?;
    client.drain().await.map_err(ServeError::Drain)
}

/// Ends a service binary that failed: one line on stderr naming what is
/// wrong (the errors here say what to do), exit code 1; no chain of
/// wrappers, no backtrace.
pub fn fail(error: ServeError) -> std::process::ExitCode {
    eprintln!("{error}");
    std::process::ExitCode::FAILURE
}
