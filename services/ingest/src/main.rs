//! `nova-ingest`: the ingest service on its own.

use clap::Parser;
use nova_runtime::cli::{CommonArgs, serve};

/// Validates and normalises metric samples from `nova.metrics.>`.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    serve("nova-ingest", &args.common, |policy, client, shutdown| {
        nova_ingest::run(nova_ingest::Config::new(policy), client, shutdown.signal())
    })
    .await
    .map_or_else(nova_runtime::cli::fail, |()| {
        std::process::ExitCode::SUCCESS
    })
}
