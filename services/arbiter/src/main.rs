//! `nova-arbiter`: the arbiter service on its own.

use clap::Parser;
use nova_runtime::cli::{CommonArgs, serve};

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
    serve("nova-arbiter", &args.common, |policy, client, shutdown| {
        nova_arbiter::run(nova_arbiter::Config::new(policy), client, shutdown.signal())
    })
    .await?;
    Ok(())
}
