//! `nova-ingest`: the ingest service on its own.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use nova_ingest::webhook::{self, Auth, TlsFiles, WebhookConfig};
use nova_runtime::cli::{CommonArgs, serve};

/// Validates and normalises metric samples from `nova.metrics.>`; with
/// `--webhook-addr`, also takes Alertmanager's webhook on POST /alertmanager.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    #[command(flatten)]
    webhook: WebhookArgs,
}

/// The Alertmanager webhook's flags.
#[derive(clap::Args)]
struct WebhookArgs {
    /// Serve the Alertmanager webhook (POST /alertmanager) on this address, e.g. 0.0.0.0:9095.
    #[arg(long, env = "NOVA_WEBHOOK_ADDR")]
    webhook_addr: Option<SocketAddr>,
    /// Require `Authorization: Bearer <token>` of the webhook's clients.
    #[arg(
        long,
        env = "NOVA_WEBHOOK_TOKEN",
        hide_env_values = true,
        conflicts_with = "webhook_user"
    )]
    webhook_token: Option<String>,
    /// Require basic auth with this user name (and --webhook-password).
    #[arg(long, env = "NOVA_WEBHOOK_USER", requires = "webhook_password")]
    webhook_user: Option<String>,
    /// The basic auth password.
    #[arg(
        long,
        env = "NOVA_WEBHOOK_PASSWORD",
        hide_env_values = true,
        requires = "webhook_user"
    )]
    webhook_password: Option<String>,
    /// Serve the webhook over TLS with this PEM certificate chain (and --webhook-tls-key).
    #[arg(long, env = "NOVA_WEBHOOK_TLS_CERT", requires = "webhook_tls_key")]
    webhook_tls_cert: Option<PathBuf>,
    /// The PEM private key of --webhook-tls-cert.
    #[arg(long, env = "NOVA_WEBHOOK_TLS_KEY", requires = "webhook_tls_cert")]
    webhook_tls_key: Option<PathBuf>,
    /// Largest webhook body taken, bytes; a larger one is answered 413.
    #[arg(long, env = "NOVA_WEBHOOK_BODY_LIMIT", default_value_t = webhook::DEFAULT_BODY_LIMIT)]
    webhook_body_limit: usize,
}

impl WebhookArgs {
    /// The webhook's settings; `None` without `--webhook-addr`.
    fn config(&self) -> Option<WebhookConfig> {
        let addr = self.webhook_addr?;
        let auth = match (
            &self.webhook_token,
            &self.webhook_user,
            &self.webhook_password,
        ) {
            (Some(token), _, _) => Auth::Bearer(token.clone()),
            (None, Some(user), Some(password)) => Auth::Basic {
                user: user.clone(),
                password: password.clone(),
            },
            _ => Auth::None,
        };
        let tls = match (&self.webhook_tls_cert, &self.webhook_tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        };
        Some(WebhookConfig {
            addr,
            auth,
            tls,
            body_limit_bytes: self.webhook_body_limit,
        })
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let webhook = args.webhook.config();
    serve("nova-ingest", &args.common, |policy, client, shutdown| {
        let mut config = nova_ingest::Config::new(policy);
        config.webhook = webhook;
        nova_ingest::run(config, client, shutdown.signal())
    })
    .await
    .map_or_else(nova_runtime::cli::fail, |()| {
        std::process::ExitCode::SUCCESS
    })
}
