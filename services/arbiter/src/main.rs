//! `nova-arbiter`: the arbiter service on its own.

use clap::Parser;
use nova_runtime::cli::{CommonArgs, serve};

/// Decides triggers into absolute capacity commands, with cooldowns and bounds.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Seconds a delivered trigger may stay unacknowledged before it is
    /// redelivered (to another replica, if this one died).
    #[arg(long, env = "NOVA_ARBITER_ACK_WAIT_SECS", default_value_t = 30)]
    ack_wait_secs: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let ack_wait = std::time::Duration::from_secs(args.ack_wait_secs.max(1));
    serve("nova-arbiter", &args.common, |policy, client, shutdown| {
        let mut config = nova_arbiter::Config::new(policy);
        config.ack_wait = ack_wait;
        nova_arbiter::run(config, client, shutdown.signal())
    })
    .await
    .map_or_else(nova_runtime::cli::fail, |()| {
        std::process::ExitCode::SUCCESS
    })
}
