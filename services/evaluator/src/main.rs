//! `nova-evaluator`: the evaluator service on its own.

use clap::Parser;
use nova_runtime::cli::{CommonArgs, serve};

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
    serve(
        "nova-evaluator",
        &args.common,
        |policy, client, shutdown| {
            nova_evaluator::run(nova_evaluator::Config { policy }, client, shutdown.signal())
        },
    )
    .await?;
    Ok(())
}
