//! `nova-arbiter`: the arbiter service on its own.

use clap::Parser;
use nova_runtime::cli::{CommonArgs, start};

/// Decides triggers into absolute capacity commands, with cooldowns and bounds.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = start("nova-arbiter", &args.common).await?;
    let config = nova_arbiter::Config::new(started.policy);
    nova_arbiter::run(
        config,
        started.client.clone(),
        nova_runtime::shutdown::ctrl_c_or_term(),
    )
    .await?;
    started.client.drain().await?;
    Ok(())
}
