//! `novactl`: the operator's command line.
//!
//! - `run`: every stage in one process (the same `run` functions the
//!   separate binaries call), plus the simulated fleets' load, printing the
//!   audit stream live; it provisions JetStream first.
//! - `provision`: create or update the streams, buckets and consumers
//!   ([`nova_runtime::provision`]), one line per object.
//! - `audit tail`: read the audit stream.
//! - `audit query`, `audit stats`, `explain`: filter it, the runbook's
//!   section 8 figures from it, one decision's chain ([`audit`]).
//! - `policy validate`: check a policy file and list every problem.
//! - `policy diff OLD NEW`: what a change of policy file will do, one line per change.
//! - `status`, `pause`, `resume`, `scale`: the arbiter's control verbs, typed
//!   requests on `nova.ctl.arbiter`.
//! - `backtest`: replay a load trace through NovaCron and the HPA reference ([`backtest`]).

mod audit;
mod backtest;
mod format;

use std::path::PathBuf;
use std::process::ExitCode;

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull},
};
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use nova_runtime::cli::{CommonArgs, start};
use nova_runtime::nats::AUDIT_STREAM;
use nova_runtime::provision::ProvisionArgs;
use nova_runtime::reload;
use nova_runtime::shutdown;
use nova_shared::codec::{self, Encoding};
use nova_shared::policy::{self, EmergencyDefaults};
use nova_shared::subjects;
use nova_shared::wire::{
    AuditRecord, ControlReply, ControlRequest, Direction, DirectionRequest, EmergencyOp,
    EmergencyRequest, PromoteRequest, ScaleRequest,
};

#[derive(Parser)]
#[command(version, about = "NovaCron autoscaler control")]
struct Cli {
    /// How to print: sentences for people, a table, or JSON for programs
    /// (one document per reply; one line per record where records stream).
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

/// How a command prints what it shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    /// Sentences and aligned columns.
    Text,
    /// A table (Markdown-style columns), where what is printed is a list.
    Table,
    /// JSON with the wire field names.
    Json,
}

/// Prints `value` as one line of JSON.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(value)?);
    Ok(())
}

#[derive(Subcommand)]
enum Command {
    /// Run ingest, evaluator, arbiter, actuator and audit in this process.
    Run {
        #[command(flatten)]
        common: CommonArgs,
        #[command(flatten)]
        provision: ProvisionArgs,
        /// Do not publish the simulated fleets' load.
        #[arg(long)]
        no_sim_load: bool,
        /// Do not print audit records.
        #[arg(long)]
        quiet: bool,
    },
    /// Create or update the JetStream streams, KV buckets and durable
    /// consumers the services need; prints what was created, updated
    /// (field old -> new) or unchanged. Services only check them.
    Provision {
        /// NATS server URL; a cluster's servers comma-separated.
        #[arg(long, env = "NOVA_NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        #[command(flatten)]
        settings: ProvisionArgs,
    },
    /// Read the audit stream.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Work with policy files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Show each target's capacity, bounds, pauses, cooldowns and last decision.
    Status {
        #[command(flatten)]
        control: ControlArgs,
        /// Only this target.
        target: Option<String>,
    },
    /// Stop a target from scaling (both directions unless --direction); decisions are still audited.
    Pause(PauseArgs),
    /// Ask for a capacity; it is decided like any trigger (bounds, cooldowns, audit).
    Scale {
        #[command(flatten)]
        control: ControlArgs,
        /// The target.
        target: String,
        /// The capacity to set.
        desired: u32,
        /// Why, for the audit record.
        #[arg(long)]
        reason: Option<String>,
        /// Go past the target's pause, cooldowns and warm-up (never its
        /// bounds or dry-run mode).
        #[arg(long)]
        force: bool,
    },
    /// Let a paused target scale again.
    Resume(PauseArgs),
    /// The runbook's emergency operations, each an audited decision per
    /// target: `up` doubles (or --by N, --to N) past cooldowns but not max,
    /// and holds scale-downs; `down` drains, then goes to the floor (or
    /// --to N), refused while the load is high; `reset` goes back to the
    /// policy's baseline. TARGET is a target, a group of the policy, or all.
    Emergency {
        #[command(flatten)]
        control: ControlArgs,
        /// up, down or reset.
        #[arg(value_parser = parse_emergency_op)]
        op: EmergencyOp,
        /// A target, a group of the policy's `groups`, or `all`.
        target: String,
        /// up: add this many instead of doubling; down: remove this many
        /// (not below the floor) instead of going to the floor.
        #[arg(long, conflicts_with = "to")]
        by: Option<u32>,
        /// up: go to this capacity; down: go to this capacity instead of the floor.
        #[arg(long)]
        to: Option<u32>,
        /// Who asks and why, for the audit record.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Promote a read replica of an RDS replica set (`rds_replicas`) to a
    /// standalone instance (PromoteReadReplica): an audited decision that
    /// goes past pauses and cooldowns, not below the target's min.
    Promote {
        #[command(flatten)]
        control: ControlArgs,
        /// The target: an RDS replica set.
        target: String,
        /// The replica's DB instance identifier (`orders-db-replica-2`).
        replica: String,
        /// Who asks and why, for the audit record.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Explain a decision (the newest about TARGET, or --decision ID) from
    /// the audit stream: the chain from samples to trigger, decision,
    /// command and result, or why nothing was done, as sentences.
    Explain {
        /// NATS server URL.
        #[arg(long, env = "NOVA_NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// The target.
        target: String,
        /// The decision's id (`decision_id` of its records), or an audit record's id.
        #[arg(long)]
        decision: Option<String>,
        /// How far back to look: RFC 3339 or a duration back from now.
        #[arg(long, default_value = "1d")]
        since: String,
    },
    /// Print a completion script for SHELL (bash, zsh, fish, elvish,
    /// powershell): e.g. `novactl completions bash > /etc/bash_completion.d/novactl`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Replay a load trace through NovaCron's decision code and the HPA
    /// algorithm against simulated fleets; print the elasticity metrics.
    Backtest(Box<backtest::BacktestArgs>),
}

/// What `pause` and `resume` take.
#[derive(clap::Args)]
struct PauseArgs {
    #[command(flatten)]
    control: ControlArgs,
    /// The target.
    target: String,
    /// Only `up` or `down`.
    #[arg(long, value_parser = parse_direction)]
    direction: Option<Direction>,
    /// Why, for the audit record.
    #[arg(long)]
    reason: Option<String>,
}

impl PauseArgs {
    /// Where to send it, and the request's fields.
    fn request(self) -> (String, DirectionRequest) {
        let request = DirectionRequest {
            target: self.target,
            direction: self.direction,
            reason: self.reason,
        };
        (self.control.nats_url, request)
    }
}

impl Command {
    /// A control verb's NATS URL and typed request; `None` for the others.
    fn control_request(self) -> Option<(String, ControlRequest)> {
        Some(match self {
            Command::Status { control, target } => {
                (control.nats_url, ControlRequest::status(target))
            }
            Command::Pause(args) => {
                let (url, request) = args.request();
                (url, ControlRequest::Pause(request))
            }
            Command::Resume(args) => {
                let (url, request) = args.request();
                (url, ControlRequest::Resume(request))
            }
            Command::Scale {
                control,
                target,
                desired,
                reason,
                force,
            } => (
                control.nats_url,
                ControlRequest::Scale(ScaleRequest {
                    target,
                    desired,
                    reason,
                    force,
                }),
            ),
            Command::Emergency {
                control,
                op,
                target,
                by,
                to,
                reason,
            } => (
                control.nats_url,
                ControlRequest::Emergency(EmergencyRequest {
                    op,
                    target,
                    by,
                    to,
                    reason,
                }),
            ),
            Command::Promote {
                control,
                target,
                replica,
                reason,
            } => (
                control.nats_url,
                ControlRequest::Promote(PromoteRequest {
                    target,
                    replica,
                    reason,
                }),
            ),
            _ => return None,
        })
    }
}

fn parse_emergency_op(text: &str) -> Result<EmergencyOp, String> {
    match text {
        "up" => Ok(EmergencyOp::Up),
        "down" => Ok(EmergencyOp::Down),
        "reset" => Ok(EmergencyOp::Reset),
        other => Err(format!("expected up, down or reset, found {other:?}")),
    }
}

/// Where the arbiter listens.
#[derive(clap::Args)]
struct ControlArgs {
    /// NATS server URL.
    #[arg(long, env = "NOVA_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
}

fn parse_direction(text: &str) -> Result<Direction, String> {
    match text {
        "up" => Ok(Direction::Up),
        "down" => Ok(Direction::Down),
        other => Err(format!("expected up or down, found {other:?}")),
    }
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Print the newest records, then (with --follow) new ones as they come.
    Tail {
        /// NATS server URL.
        #[arg(long, env = "NOVA_NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// Only records about this target.
        #[arg(long)]
        target: Option<String>,
        /// How many past records to print first.
        #[arg(long, short = 'n', default_value_t = 20)]
        last: u64,
        /// Keep printing new records until Ctrl-C.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Print each record as one JSON line (the same as `--output json`).
        #[arg(long)]
        json: bool,
    },
    /// The records matching every filter given, oldest first.
    Query {
        /// NATS server URL.
        #[arg(long, env = "NOVA_NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// Only records about this target.
        #[arg(long)]
        target: Option<String>,
        /// Only records of this stage (ingest, evaluator, arbiter, actuator, audit).
        #[arg(long)]
        stage: Option<String>,
        /// Only records with this outcome (`scale`, `cooldown`, `succeeded`, ...).
        #[arg(long)]
        outcome: Option<String>,
        /// From this time: RFC 3339 (2026-12-01T10:00:00Z) or a duration
        /// back from now (2h, 30m, 1d). Default: the whole stream.
        #[arg(long)]
        since: Option<String>,
        /// Up to this time, the same forms (default: now, or on with --follow).
        #[arg(long)]
        until: Option<String>,
        /// At most this many of the newest matching records.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Then keep printing new matching records until Ctrl-C.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Per target: actions, success rate, failures, flapping episodes, time
    /// at max and scaling velocity (the runbook's section 8 figures).
    Stats {
        /// NATS server URL.
        #[arg(long, env = "NOVA_NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// Only this target.
        #[arg(long)]
        target: Option<String>,
        /// Start of the range: RFC 3339 or a duration back from now.
        #[arg(long, default_value = "1h")]
        since: String,
        /// End of the range, the same forms.
        #[arg(long, default_value = "now")]
        until: String,
        /// Two actions in opposite directions closer than this are a
        /// reversal (the policy default of `flapping.window_secs`).
        #[arg(long, default_value = "30m")]
        flap_window: String,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Check a policy file; prints every problem with its path and exits 1 if any.
    Validate {
        /// The policy file.
        file: PathBuf,
    },
    /// What changing policy file OLD for NEW will do, one line per change
    /// (both validated first). Exits 0 if nothing changes, 1 if something
    /// does, 2 if either file is unreadable or invalid, as diff(1) does.
    Diff {
        /// The policy in force.
        old: PathBuf,
        /// The policy to put in force.
        new: PathBuf,
    },
}

/// Exit codes (README, "Exit codes"): 0 done; 1 failed (a refused request,
/// an invalid policy, any other error); 2 bad command line or argument
/// value (clap's usage errors exit 2, and `policy diff` a bad file);
/// 3 NATS cannot be reached; 4 not found (no such target or decision in
/// the audit stream).
const EXIT_BAD_INPUT: u8 = 2;
const EXIT_UNREACHABLE: u8 = 3;
const EXIT_NOT_FOUND: u8 = 4;

/// The exit code of an error.
fn exit_code(error: &anyhow::Error) -> ExitCode {
    use nova_runtime::nats::ConnectError;
    if let Some(failure) = error.downcast_ref::<audit::Failure>() {
        return ExitCode::from(match failure {
            audit::Failure::BadInput(_) => EXIT_BAD_INPUT,
            audit::Failure::NotFound(_) => EXIT_NOT_FOUND,
        });
    }
    match error.downcast_ref::<ConnectError>() {
        Some(ConnectError::Url { .. }) => ExitCode::from(EXIT_BAD_INPUT),
        Some(_) => ExitCode::from(EXIT_UNREACHABLE),
        None => ExitCode::FAILURE,
    }
}

/// One line for an error, and its exit code: an operator's terminal gets
/// what is wrong and what to do, not a chain of wrappers.
#[tokio::main]
async fn main() -> ExitCode {
    match run_cli().await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("novactl: {error}");
            exit_code(&error)
        }
    }
}

/// Connects for a command that reads, without waiting (one line and exit
/// code 3 when NATS cannot be reached).
async fn connect(url: &str, name: &str) -> anyhow::Result<async_nats::Client> {
    nova_runtime::telemetry::init_tracing_at("warn");
    Ok(nova_runtime::nats::connect_now(url, name).await?)
}

async fn run_cli() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let output = cli.output;
    match cli.command {
        Command::Run {
            common,
            provision,
            no_sim_load,
            quiet,
        } => run_all(common, &provision, no_sim_load, quiet, output).await?,
        Command::Provision { nats_url, settings } => {
            provision(&nats_url, &settings, output).await?
        }
        Command::Audit {
            command:
                AuditCommand::Tail {
                    nats_url,
                    target,
                    last,
                    follow,
                    json,
                },
        } => {
            let json = json || output == Output::Json;
            audit::check_target(target.as_deref())?;
            tail(&nats_url, target.as_deref(), last, follow, json).await?
        }
        Command::Audit {
            command:
                AuditCommand::Query {
                    nats_url,
                    target,
                    stage,
                    outcome,
                    since,
                    until,
                    limit,
                    follow,
                },
        } => {
            audit::check_target(target.as_deref())?;
            let stage = stage.as_deref().map(audit::parse_stage).transpose()?;
            let now = time::OffsetDateTime::now_utc();
            let range = audit::Range::parse(since.as_deref(), until.as_deref(), now)?;
            let filter = audit::Filter {
                target,
                stage,
                outcome,
                since: range.since,
                until: range.until,
            };
            let client = connect(&nats_url, "novactl-audit-query").await?;
            audit::query(&client, filter, Some(limit), follow, output).await?;
        }
        Command::Audit {
            command:
                AuditCommand::Stats {
                    nats_url,
                    target,
                    since,
                    until,
                    flap_window,
                },
        } => {
            audit::check_target(target.as_deref())?;
            let now = time::OffsetDateTime::now_utc();
            let (since, until) =
                audit::Range::parse(Some(since.as_str()), Some(until.as_str()), now)?
                    .closed(now)?;
            let flap = nova_runtime::provision::parse_duration(&flap_window)
                .map_err(|why| audit::Failure::BadInput(format!("--flap-window {why}")))?;
            let client = connect(&nats_url, "novactl-audit-stats").await?;
            audit::stats(&client, target, since, until, flap.as_secs(), output).await?;
        }
        Command::Explain {
            nats_url,
            target,
            decision,
            since,
        } => {
            audit::check_target(Some(&target))?;
            let since = audit::parse_time("--since", &since, time::OffsetDateTime::now_utc())?;
            let client = connect(&nats_url, "novactl-explain").await?;
            audit::explain(&client, &target, decision.as_deref(), since, output).await?;
        }
        Command::Policy {
            command: PolicyCommand::Validate { file },
        } => return validate(&file, output),
        Command::Policy {
            command: PolicyCommand::Diff { old, new },
        } => return policy_diff(&old, &new, output),
        Command::Backtest(args) => return backtest::run(*args, output == Output::Json),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "novactl",
                &mut std::io::stdout(),
            );
        }
        control @ (Command::Status { .. }
        | Command::Pause(_)
        | Command::Resume(_)
        | Command::Scale { .. }
        | Command::Emergency { .. }
        | Command::Promote { .. }) => {
            let (url, request) = control.control_request().expect("a control verb");
            return control_command(&url, request, output).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Sends a control request to the arbiter (`nova.ctl.arbiter`, the verb in
/// the request) and prints its answer. The arbiter answers every request
/// within its control deadline, shorter than this wait.
async fn control_command(
    url: &str,
    request: ControlRequest,
    output: Output,
) -> anyhow::Result<ExitCode> {
    nova_runtime::telemetry::init_tracing_at("warn");
    let client = nova_runtime::nats::connect_now(url, "novactl").await?;
    let verb = request.verb();
    let payload = codec::encode(&request)?;
    let subject = subjects::ARBITER_CONTROL;
    // An emergency down waits for its drain (at most 300 s, the policy's
    // limit) before the arbiter answers.
    let wait = match &request {
        ControlRequest::Emergency(e) if e.op == EmergencyOp::Down => {
            std::time::Duration::from_secs(10 + EmergencyDefaults::MAX_DRAIN_TIMEOUT_SECS)
        }
        _ => std::time::Duration::from_secs(10),
    };
    let answer = tokio::time::timeout(wait, client.request(subject, payload.into()))
        .await
        .map_err(|_| anyhow::anyhow!("no arbiter answered {verb} on {subject} within {wait:?}"))?
        .map_err(|e| anyhow::anyhow!("{verb} on {subject}: {e} (is an arbiter running?)"))?;
    let reply: ControlReply = codec::decode(&answer.payload, Encoding::MsgPack)?;
    if output == Output::Json {
        print_json(&reply)?;
    } else if output == Output::Table && !reply.targets.is_empty() {
        if verb != "status" || !reply.ok {
            println!("{}", reply.message);
        }
        println!(
            "{}",
            format::status_table(&reply.targets, nova_runtime::now_ms())
        );
    } else {
        if verb != "status" || !reply.ok {
            println!("{}", reply.message);
        }
        let now = nova_runtime::now_ms();
        for status in &reply.targets {
            println!("{}", format::status(status, now));
        }
    }
    Ok(if reply.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `policy diff --output json`: both revisions and every change, for programs.
#[derive(serde::Serialize)]
struct PolicyDiff {
    old: PolicyFile,
    new: PolicyFile,
    /// One line per change, as the text output prints them.
    changes: Vec<String>,
}

#[derive(serde::Serialize)]
struct PolicyFile {
    file: String,
    revision: String,
}

/// `policy diff OLD NEW`: exit 0 without changes, 1 with, 2 for a bad file.
fn policy_diff(
    old: &std::path::Path,
    new: &std::path::Path,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let (before, after) = match (policy::load_file(old), policy::load_file(new)) {
        (Ok(before), Ok(after)) => (before, after),
        (before, after) => {
            // Every problem of both files, so one run shows all there is to fix.
            for error in [before.err(), after.err()].into_iter().flatten() {
                eprintln!("{error}");
            }
            eprintln!("novactl: fix the file(s) above, then diff again");
            return Ok(ExitCode::from(2));
        }
    };
    let changes: Vec<String> = policy::diff::diff(&before, &after)
        .iter()
        .map(ToString::to_string)
        .collect();
    let file = |path: &std::path::Path, policy: &policy::Policy| PolicyFile {
        file: path.display().to_string(),
        revision: policy::revision(policy),
    };
    let (old_file, new_file) = (file(old, &before), file(new, &after));
    let code = if changes.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    if output == Output::Json {
        print_json(&PolicyDiff {
            old: old_file,
            new: new_file,
            changes,
        })?;
        return Ok(code);
    }
    if changes.is_empty() {
        println!(
            "no changes: {} and {} mean the same policy (revision {})",
            old_file.file, new_file.file, new_file.revision
        );
    } else {
        println!(
            "{} (revision {}) -> {} (revision {}): {} change(s)",
            old_file.file,
            old_file.revision,
            new_file.file,
            new_file.revision,
            changes.len()
        );
        for line in &changes {
            println!("  {line}");
        }
    }
    Ok(code)
}

/// `policy validate --output json`: the verdict and every problem, for programs.
#[derive(serde::Serialize)]
struct Validation<'a> {
    file: String,
    ok: bool,
    /// Targets and their rules, when valid.
    targets: Vec<ValidTarget<'a>>,
    /// Every problem, with its path in the file, when invalid.
    problems: Vec<ValidationProblem>,
}

#[derive(serde::Serialize)]
struct ValidTarget<'a> {
    name: &'a str,
    backend: &'static str,
    min: u32,
    max: u32,
    rules: Vec<&'a str>,
}

#[derive(serde::Serialize)]
struct ValidationProblem {
    path: String,
    message: String,
}

fn validate(file: &std::path::Path, output: Output) -> anyhow::Result<ExitCode> {
    let loaded = policy::load_file(file);
    let code = if loaded.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    };
    if output == Output::Json {
        let mut report = Validation {
            file: file.display().to_string(),
            ok: loaded.is_ok(),
            targets: vec![],
            problems: vec![],
        };
        match &loaded {
            Ok(policy) => {
                report.targets = policy
                    .targets
                    .values()
                    .map(|t| ValidTarget {
                        name: &t.name,
                        backend: t.backend.kind(),
                        min: t.min,
                        max: t.max,
                        rules: rule_names(t),
                    })
                    .collect();
            }
            Err(error @ policy::PolicyError::Read { .. }) => {
                report.problems.push(ValidationProblem {
                    path: String::new(),
                    message: error.to_string(),
                });
            }
            Err(error) => {
                report.problems = error
                    .problems()
                    .iter()
                    .map(|p| ValidationProblem {
                        path: p.path.clone(),
                        message: p.message.clone(),
                    })
                    .collect();
            }
        }
        print_json(&report)?;
        return Ok(code);
    }
    if output == Output::Table
        && let Ok(policy) = &loaded
    {
        println!(
            "{}: ok (revision {})",
            file.display(),
            policy::revision(policy)
        );
        let rows: Vec<format::TargetRow<'_>> = policy
            .targets
            .values()
            .map(|t| format::TargetRow {
                name: &t.name,
                backend: t.backend.kind(),
                min: t.min,
                max: t.max,
                rules: rule_names(t),
            })
            .collect();
        println!("{}", format::targets_table(&rows));
        return Ok(code);
    }
    Ok(validate_text(file, loaded))
}

/// A target's threshold and tracking rules, by name, in the policy's order.
fn rule_names(target: &policy::Target) -> Vec<&str> {
    target
        .rules
        .iter()
        .map(|r| r.name.as_str())
        .chain(target.tracking.iter().map(|r| r.name.as_str()))
        .collect()
}

fn validate_text(
    file: &std::path::Path,
    loaded: Result<policy::Policy, policy::PolicyError>,
) -> ExitCode {
    match loaded {
        Ok(policy) => {
            println!(
                "{}: ok (revision {})",
                file.display(),
                policy::revision(&policy)
            );
            for target in policy.targets.values() {
                println!(
                    "  target {} ({}, min {}, max {}): {} rule(s)",
                    target.name,
                    target.backend.kind(),
                    target.min,
                    target.max,
                    target.rules.len() + target.tracking.len()
                );
                for rule in &target.rules {
                    let ladder = target
                        .ladders
                        .get(&rule.name)
                        .map_or(String::new(), |steps| {
                            let steps: Vec<String> = steps
                                .iter()
                                .map(|s| format!("{} -> {}", s.from, s.to))
                                .collect();
                            format!(" ({})", steps.join(", "))
                        });
                    println!(
                        "    {}: \"{}\" -> {}{ladder}, cooldown {}s",
                        rule.name,
                        rule.condition.text,
                        rule.action.describe(),
                        rule.cooldown_secs
                    );
                }
                for rule in &target.tracking {
                    let up = &rule.behavior.scale_up;
                    let down = &rule.behavior.scale_down;
                    println!(
                        "    {}: track {} (tolerance {}, every {}s), up window {}s select {}, down window {}s select {}",
                        rule.name,
                        rule.text,
                        rule.tolerance,
                        rule.interval_secs,
                        up.stabilization_window_secs,
                        up.select.as_str(),
                        down.stabilization_window_secs,
                        down.select.as_str(),
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// `novactl provision`: applies the topology and prints the report, one
/// line per object (or one JSON document). Connects once, without waiting,
/// so an unreachable NATS is one line and exit code 3.
async fn provision(url: &str, args: &ProvisionArgs, output: Output) -> anyhow::Result<()> {
    nova_runtime::telemetry::init_tracing_at("warn");
    let client = nova_runtime::nats::connect_now(url, "novactl-provision").await?;
    let topology = nova_runtime::provision::topology(&args.settings());
    let report =
        nova_runtime::provision::apply(&nova_runtime::nats::jetstream(&client), &topology).await?;
    if output == Output::Json {
        print_json(&report)?;
    } else {
        print!("{report}");
    }
    client.drain().await?;
    Ok(())
}

/// Provisions JetStream for the stack in this process, as `novactl
/// provision` would, and logs what it did: a local stack needs no separate
/// step.
async fn provision_for_run(url: &str, args: &ProvisionArgs) -> anyhow::Result<()> {
    let client = nova_runtime::nats::connect(url, "novactl-run-provision").await?;
    let topology = nova_runtime::provision::topology(&args.settings());
    let report =
        nova_runtime::provision::apply(&nova_runtime::nats::jetstream(&client), &topology).await?;
    for applied in &report.objects {
        tracing::info!("provisioned {applied}");
    }
    client.drain().await?;
    Ok(())
}

async fn run_all(
    common: CommonArgs,
    provision: &ProvisionArgs,
    no_sim_load: bool,
    quiet: bool,
    output: Output,
) -> anyhow::Result<()> {
    // Logs first, so provisioning's retries on a fresh cluster are seen
    // (`start` keeps the subscriber installed here); a bad policy fails
    // before anything touches the network, as in `start`.
    nova_runtime::telemetry::init_tracing();
    policy::load_file(&common.policy)?;
    provision_for_run(&common.nats_url, provision).await?;
    let started = start("novactl-run", &common).await?;
    let (policy, client) = (started.policy, started.client);
    let signal = shutdown::on_ctrl_c();
    // The stages follow the policy file, as the separate binaries do.
    let (sender, live) = reload::channel(policy::Revised::new(policy.clone()));
    let watch = reload::watch_file(
        common.policy.clone(),
        sender,
        reload::POLL_EVERY,
        signal.signal(),
    );
    tokio::spawn(watch);
    if !quiet {
        let mut audit = client.subscribe(subjects::AUDIT_ALL).await?;
        let stop = signal.signal();
        tokio::spawn(async move {
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    message = audit.next() => match message {
                        Some(message) => match codec::decode::<AuditRecord>(&message.payload, Encoding::MsgPack) {
                            Ok(record) if output == Output::Json => {
                                println!("{}", serde_json::to_string(&record).unwrap_or_default());
                            }
                            Ok(record) => println!("{}", format::line(&record)),
                            Err(error) => eprintln!("unreadable audit record on {}: {error}", message.subject),
                        },
                        None => break,
                    },
                }
            }
        });
    }
    let load = (!no_sim_load).then(|| {
        tokio::spawn(nova_actuator::sim::run_load(
            policy.clone(),
            client.clone(),
            signal.signal(),
        ))
    });
    eprintln!(
        "novactl: running {} target(s) from {}; Ctrl-C stops",
        policy.targets.len(),
        common.policy.display()
    );
    let (ingest, evaluator, arbiter, actuator, audit) = tokio::join!(
        tokio::spawn(nova_ingest::run(
            nova_ingest::Config::new(live.clone()),
            client.clone(),
            signal.signal()
        )),
        tokio::spawn(nova_evaluator::run(
            nova_evaluator::Config::new(live.clone()),
            client.clone(),
            signal.signal()
        )),
        tokio::spawn(nova_arbiter::run(
            nova_arbiter::Config::new(live.clone()),
            client.clone(),
            signal.signal()
        )),
        tokio::spawn(nova_actuator::run(
            nova_actuator::Config::new(live.clone()),
            client.clone(),
            signal.signal()
        )),
        tokio::spawn(nova_audit::run(
            nova_audit::Config::default(),
            client.clone(),
            signal.signal()
        )),
    );
    ingest??;
    evaluator??;
    arbiter??;
    actuator??;
    audit??;
    if let Some(load) = load {
        load.await??;
    }
    client.drain().await?;
    eprintln!("novactl: stopped");
    Ok(())
}

async fn tail(
    url: &str,
    target: Option<&str>,
    last: u64,
    follow: bool,
    json: bool,
) -> anyhow::Result<()> {
    nova_runtime::telemetry::init_tracing_at("warn");
    let client = nova_runtime::nats::connect_now(url, "novactl-audit-tail").await?;
    let js = jetstream::new(client.clone());
    let mut stream = js.get_stream(AUDIT_STREAM).await?;
    let filter = target.map_or_else(
        || subjects::AUDIT_ALL.to_string(),
        |t| subjects::audit("*", t),
    );
    let info = stream.info().await?.clone();
    // Start `last` messages back; with a target filter that is an upper
    // bound on how far back to look, then we keep only the newest `last`.
    let first = info
        .state
        .last_sequence
        .saturating_sub(if target.is_some() {
            last.max(1) * 64
        } else {
            last
        })
        + 1;
    let reader = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter,
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: first.max(1),
            },
            ..Default::default()
        })
        .await?;
    let mut messages = reader.messages().await?;
    let mut backlog: std::collections::VecDeque<AuditRecord> = Default::default();
    let print = |record: &AuditRecord| {
        if json {
            println!("{}", serde_json::to_string(record).unwrap_or_default());
        } else {
            println!("{}", format::line(record));
        }
    };
    let mut caught_up = info.state.messages == 0;
    let stop = shutdown::ctrl_c_or_term();
    tokio::pin!(stop);
    loop {
        if caught_up && !follow {
            break;
        }
        let message = tokio::select! {
            _ = &mut stop => break,
            message = messages.next() => message,
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)), if !caught_up => {
                // Nothing more arrived: the filtered history is exhausted.
                caught_up = true;
                backlog.drain(..).for_each(|r| print(&r));
                continue;
            }
        };
        let Some(message) = message else { break };
        let message = message?;
        let record: AuditRecord = match codec::decode(&message.payload, Encoding::MsgPack) {
            Ok(record) => record,
            Err(error) => {
                eprintln!("unreadable audit record on {}: {error}", message.subject);
                continue;
            }
        };
        let pending = message.info().map_or(0, |i| i.pending);
        if caught_up {
            print(&record);
        } else {
            backlog.push_back(record);
            if backlog.len() as u64 > last {
                backlog.pop_front();
            }
            if pending == 0 {
                caught_up = true;
                backlog.drain(..).for_each(|r| print(&r));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each control verb's command line, and the request it sends on
    /// `nova.ctl.arbiter`, as JSON.
    #[test]
    fn control_verbs_send_typed_requests() {
        let cases = [
            ("status", r#"{"verb":"status"}"#),
            ("status web", r#"{"verb":"status","target":"web"}"#),
            (
                "pause web --direction up --reason maintenance",
                r#"{"verb":"pause","target":"web","direction":"up","reason":"maintenance"}"#,
            ),
            ("resume web", r#"{"verb":"resume","target":"web"}"#),
            (
                "scale web 12",
                r#"{"verb":"scale","target":"web","desired":12}"#,
            ),
            (
                "scale web 12 --force --reason drill",
                r#"{"verb":"scale","target":"web","desired":12,"reason":"drill","force":true}"#,
            ),
        ];
        for (line, want) in cases {
            let args = std::iter::once("novactl").chain(line.split(' '));
            let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{line}: {e}"));
            let (_url, request) = cli.command.control_request().expect("a control verb");
            assert_eq!(serde_json::to_string(&request).unwrap(), want, "{line}");
        }
        let cli = Cli::try_parse_from(["novactl", "policy", "validate", "p.yaml"]).unwrap();
        assert!(cli.command.control_request().is_none());
    }
}
