//! `nova-actuator`: the actuator service on its own.

use clap::Parser;
use nova_runtime::cli::{CommonArgs, start};
use nova_runtime::shutdown;

/// Executes capacity commands against ECS or simulated fleets.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Also publish the simulated fleets' load samples.
    #[arg(long)]
    sim_load: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = start("nova-actuator", &args.common).await?;
    let signal = shutdown::on_ctrl_c();
    let load = args.sim_load.then(|| {
        tokio::spawn(nova_actuator::sim::run_load(
            started.policy.clone(),
            started.client.clone(),
            signal.signal(),
        ))
    });
    let config = nova_actuator::Config::new(started.policy);
    nova_actuator::run(config, started.client.clone(), signal.signal()).await?;
    if let Some(load) = load {
        load.await??;
    }
    started.client.drain().await?;
    Ok(())
}
