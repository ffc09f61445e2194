//! `nova-actuator`: the actuator service on its own.

use clap::Parser;
use nova_runtime::cli::{CommonArgs, serve};

/// Executes capacity commands against ECS or simulated fleets.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Also publish the simulated fleets' load samples.
    #[arg(long)]
    sim_load: bool,
    /// Time limit of one backend API call, in seconds. A command's action
    /// gets twice this and its lease that plus 2 s; the consumer's ack wait
    /// (`novactl provision --actuator-ack-wait-secs`, 60 s by default) must
    /// be at least three times this, which is checked at start.
    #[arg(long, env = "NOVA_CALL_TIMEOUT_SECS", default_value_t = 20)]
    call_timeout_secs: u64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let sim_load = args.sim_load;
    let call_timeout = std::time::Duration::from_secs(args.call_timeout_secs.max(1));
    serve(
        "nova-actuator",
        &args.common,
        |policy, client, shutdown| async move {
            let load = sim_load.then(|| {
                // The simulated load follows the policy it started with.
                tokio::spawn(nova_actuator::sim::run_load(
                    policy.current().policy,
                    client.clone(),
                    shutdown.signal(),
                ))
            });
            let mut config = nova_actuator::Config::new(policy);
            config.call_timeout = call_timeout;
            nova_actuator::run(config, client, shutdown.signal()).await?;
            if let Some(load) = load {
                // The load generator only stops on the same shutdown; a panic there is a bug.
                load.await.expect("simulated load task")?;
            }
            Ok::<(), ActuatorMainError>(())
        },
    )
    .await
    .map_or_else(nova_runtime::cli::fail, |()| {
        std::process::ExitCode::SUCCESS
    })
}

/// What can end the actuator binary's service closure.
#[derive(Debug, thiserror::Error)]
enum ActuatorMainError {
    #[error(transparent)]
    Setup(#[from] nova_runtime::setup::SetupError),
    #[error(transparent)]
    SimState(#[from] nova_runtime::kv::KvError),
}
