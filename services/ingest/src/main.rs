//! `nova-ingest`: the ingest service on its own.

use clap::Parser;
use nova_runtime::cli::{CommonArgs, start};

/// Validates and normalises metric samples from `nova.metrics.>`.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = start("nova-ingest", &args.common).await?;
    let config = nova_ingest::Config::new(started.policy);
    nova_ingest::run(
        config,
        started.client.clone(),
        nova_runtime::shutdown::ctrl_c_or_term(),
    )
    .await?;
    started.client.drain().await?;
    Ok(())
}
