//! `nova-evaluator`: the evaluator service on its own.

use clap::Parser;
use nova_runtime::cli::{CommonArgs, serve};

/// Evaluates rules on `nova.samples.*` and publishes triggers.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Evaluate only partition K of N of the targets (e.g. 0/3); all by default.
    #[arg(long, env = "NOVA_EVALUATOR_PARTITION", default_value = "0/1")]
    partition: nova_shared::evaluate::Partition,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let partition = args.partition;
    serve(
        "nova-evaluator",
        &args.common,
        |policy, client, shutdown| {
            let config = nova_evaluator::Config { policy, partition };
            nova_evaluator::run(config, client, shutdown.signal())
        },
    )
    .await?;
    Ok(())
}
