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
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    // The ack wait of its consumer is provisioned
    // (`novactl provision --arbiter-ack-wait-secs`), not a flag here.
    serve("nova-arbiter", &args.common, |policy, client, shutdown| {
        nova_arbiter::run(nova_arbiter::Config::new(policy), client, shutdown.signal())
    })
    .await
    .map_or_else(nova_runtime::cli::fail, |()| {
        std::process::ExitCode::SUCCESS
    })
}
