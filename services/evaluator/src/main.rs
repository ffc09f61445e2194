//! `nova-evaluator`: the evaluator service on its own.

use clap::Parser;
use nova_runtime::cli::{CommonArgs, start};

/// Evaluates rules on `nova.samples.*` and publishes triggers.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = start("nova-evaluator", &args.common).await?;
    let config = nova_evaluator::Config {
        policy: started.policy,
    };
    nova_evaluator::run(
        config,
        started.client.clone(),
        nova_runtime::shutdown::ctrl_c_or_term(),
    )
    .await?;
    started.client.drain().await?;
    Ok(())
}
