//! `nova-audit`: the audit service on its own.

use clap::Parser;
use nova_runtime::cli::{CommonArgs, serve};

/// Keeps, checks and serves the audit stream.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    serve("nova-audit", &args.common, |_policy, client, shutdown| {
        nova_audit::run(nova_audit::Config::default(), client, shutdown.signal())
    })
    .await
    .map_or_else(nova_runtime::cli::fail, |()| {
        std::process::ExitCode::SUCCESS
    })
}
