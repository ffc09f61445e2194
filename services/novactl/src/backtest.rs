//! `novactl backtest`: replays a load trace through NovaCron's decision code
//! and the HPA reference (see `nova_backtest`), prints the elasticity
//! metrics side by side and writes a chart.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use nova_backtest::chart::{self, ChartLayout, SupplyChart, SupplyRun};
use nova_backtest::fleet::CpuModel;
use nova_backtest::progress;
use nova_backtest::replay::{self, HpaConfig, ReplayConfig};
use nova_backtest::report;
use nova_backtest::trace::{self, TraceOptions};
use nova_shared::policy;

/// What `backtest` takes.
#[derive(clap::Args)]
pub struct BacktestArgs {
    /// The policy file.
    #[arg(long)]
    policy: PathBuf,
    /// The load trace: one number per line (requests per interval) or CSV
    /// with a timestamp column; gzip is read directly.
    #[arg(long)]
    trace: PathBuf,
    /// The policy's target to replay (default: its only target).
    #[arg(long)]
    target: Option<String>,
    /// Seconds each line of a one-number-per-line trace covers.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// The CSV column holding requests (default: the first that is not the timestamp).
    #[arg(long)]
    value_column: Option<String>,
    /// Multiply every interval's requests by this.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// Time compression: sum each K intervals into one.
    #[arg(long, default_value_t = 1)]
    compress: u32,
    /// Replay only the first N intervals (after compression).
    #[arg(long)]
    limit: Option<usize>,
    /// Requests per second one instance serves (default: the sim backend's).
    #[arg(long)]
    capacity_per_instance: Option<f64>,
    /// Seconds before a new instance serves (default: the sim backend's).
    #[arg(long)]
    warmup: Option<u64>,
    /// Instances at the start (default: the sim backend's initial).
    #[arg(long)]
    initial: Option<u32>,
    /// Seconds between a measurement and either autoscaler seeing it.
    #[arg(long, default_value_t = 0)]
    metric_delay: u64,
    /// Seconds between NovaCron's samples, each the average over them (a
    /// metrics agent's push interval).
    #[arg(long, default_value_t = 1)]
    sample_every: u64,
    /// How an instance's cpu answers an overload: `saturating` (at most
    /// 100 %, as a real gauge) or `unbounded` (load over ready capacity,
    /// above 100 %, the model before saturation was the default). The
    /// request rate is never capped.
    #[arg(long, default_value_t = CpuModel::Saturating)]
    cpu_model: CpuModel,
    /// The HPA's target cpu, e.g. 0.5 (default: from the policy's cpu rules).
    #[arg(long)]
    hpa_target: Option<f64>,
    /// The HPA's sync period, seconds.
    #[arg(long, default_value_t = 15)]
    hpa_sync: u64,
    /// Seconds of cpu the HPA averages per reading.
    #[arg(long, default_value_t = 15)]
    hpa_metric_window: u64,
    /// Where to write the SVG chart of demand and supply.
    #[arg(long, default_value = "backtest.svg")]
    chart: PathBuf,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// Runs the backtest and prints its report.
pub fn run(args: BacktestArgs, json: bool) -> anyhow::Result<ExitCode> {
    let policy = match policy::load_file(&args.policy) {
        Ok(policy) => policy,
        Err(error) => {
            eprintln!("{error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let target = match args.target {
        Some(target) => target,
        None if policy.targets.len() == 1 => {
            policy.targets.keys().next().cloned().unwrap_or_default()
        }
        None => anyhow::bail!(
            "the policy has several targets ({}); choose one with --target",
            policy
                .targets
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let started = Instant::now();
    let options = TraceOptions {
        interval_secs: args.interval,
        value_column: args.value_column,
        scale: args.scale,
        compress: args.compress,
        limit: args.limit,
    };
    let load = trace::read_trace(&args.trace, &options)?;
    let read_secs = started.elapsed().as_secs_f64();
    let config = ReplayConfig {
        target,
        capacity_per_instance: args.capacity_per_instance,
        warmup_secs: args.warmup,
        initial: args.initial,
        metric_delay_secs: args.metric_delay,
        sample_every_secs: args.sample_every,
        cpu_model: args.cpu_model,
        hpa: HpaConfig {
            target_cpu: args.hpa_target,
            sync_secs: args.hpa_sync,
            metric_window_secs: args.hpa_metric_window,
        },
    };
    let bar = progress::bar("replaying", load.rps.len() as u64, args.quiet);
    let comparison = replay::replay(&policy, &load, &config, |done| bar.set_position(done))?;
    bar.finish();
    let replay_secs = started.elapsed().as_secs_f64() - read_secs;
    if !json {
        print!("{}", report::markdown(&comparison));
        println!(
            "trace {}: mean {:.1} rps, peak {:.1} rps; read in {read_secs:.2} s, replayed in {replay_secs:.2} s",
            args.trace.display(),
            load.mean_rps(),
            load.peak_rps(),
        );
    }
    let title = format!(
        "{} on {} (scale x{}, compress {})",
        comparison.settings.target,
        args.trace.file_name().map_or_else(
            || args.trace.display().to_string(),
            |n| n.to_string_lossy().into_owned()
        ),
        args.scale,
        args.compress
    );
    let runs = [
        SupplyRun {
            name: &comparison.novacron.name,
            supply: &comparison.novacron.supply,
        },
        SupplyRun {
            name: &comparison.hpa.name,
            supply: &comparison.hpa.supply,
        },
    ];
    chart::write_svg(
        &args.chart,
        &SupplyChart {
            title: &title,
            interval_secs: load.interval_secs,
            demand: &comparison.demand,
            runs: &runs,
            layout: ChartLayout::Stacked,
        },
    )
    .with_context(|| format!("writing the chart {}", args.chart.display()))?;
    if json {
        // One document for programs: the same figures as the table, under
        // the metrics' field names, time to cover in seconds (null: never).
        let run = |run: &nova_backtest::replay::Run| {
            serde_json::json!({
                "metrics": run.metrics,
                "time_to_cover_secs": report::cover_secs(&comparison, &run.supply),
            })
        };
        let document = serde_json::json!({
            "target": comparison.settings.target,
            "trace": args.trace.display().to_string(),
            "mean_rps": load.mean_rps(),
            "peak_rps": load.peak_rps(),
            "novacron": run(&comparison.novacron),
            "hpa": run(&comparison.hpa),
            "chart": args.chart.display().to_string(),
        });
        println!("{document}");
    } else {
        println!("chart: {}", args.chart.display());
    }
    Ok(ExitCode::SUCCESS)
}
