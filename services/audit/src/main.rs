//! `nova-audit`: the audit service on its own.

use clap::Parser;
use nova_runtime::cli::{CommonArgs, start};

/// Keeps and serves the audit stream.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = start("nova-audit", &args.common).await?;
    let config = nova_audit::Config::default();
    nova_audit::run(
        config,
        started.client.clone(),
        nova_runtime::shutdown::ctrl_c_or_term(),
    )
    .await?;
    started.client.drain().await?;
    Ok(())
}
