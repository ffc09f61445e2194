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
    /// How long (ms, wall clock) a scale-down waits for a later sample of
    /// its target, so that an up of the same instant on another subject can
    /// join it, before it is published anyway.
    #[arg(long, env = "NOVA_EVALUATOR_DOWN_GRACE_MS", default_value_t = nova_shared::evaluate::DEFAULT_DOWN_GRACE_MS)]
    down_grace_ms: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let partition = args.partition;
    let hold = nova_evaluator::HoldBack {
        grace: std::time::Duration::from_millis(args.down_grace_ms),
    };
    serve(
        "nova-evaluator",
        &args.common,
        |policy, client, shutdown| {
            let config = nova_evaluator::Config { policy, partition };
            nova_evaluator::run_with(config, hold, client, shutdown.signal())
        },
    )
    .await
    .map_or_else(nova_runtime::cli::fail, |()| {
        std::process::ExitCode::SUCCESS
    })
}
