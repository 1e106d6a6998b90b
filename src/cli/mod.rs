//! The command line: `cronq run | worker | tail | validate | next | explain | status | trigger |
//! pause | resume | apply | export | jobs | monitor | history | runs | audit`. Every flag is also
//! an environment variable (`CRONQ_*`); durations use humantime (`90s`, `1h`). stdout carries only data so it can be piped; logs and errors go to stderr.
//!
//! ```text
//! main ─► Cli::parse ─► init_tracing ─► run ─► one file per command: run, worker, tail, status,
//!                                              trigger, pause (and resume), next (and explain),
//!                                              validate, apply, export
//!                                                │ flags they share, value parsers: args
//!                                                │ the runtime and the signal token: runtime
//!                                                ▼ what goes wrong, and its exit status: error
//! ```

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

mod apply;
mod args;
mod audit;
mod error;
mod export;
mod history;
mod jobs;
mod monitor;
mod next;
mod pause;
mod run;
mod runtime;
mod status;
mod tail;
mod trigger;
mod validate;
mod worker;

pub use apply::ApplyArgs;
pub use args::{GroupArgs, KafkaArgs, ScheduleLimitArgs};
pub use audit::AuditArgs;
pub use error::CliError;
pub use export::ExportArgs;
pub use history::{HistoryArgs, RunFilter, RunsArgs};
pub use jobs::{ClientArgs, JobsArgs, JobsCommand};
pub use monitor::{Kinds, MonitorArgs};
pub use next::{ExplainArgs, NextArgs};
pub use pause::{ControlArgs, PauseArgs, ResumeArgs, UntilArg};
pub use run::RunArgs;
pub use status::StatusArgs;
pub use tail::TailArgs;
pub use trigger::TriggerArgs;
pub use validate::ValidateArgs;
pub use worker::{worker_config, WorkerArgs};

/// cronq: turns a schedule of cron jobs into Kafka messages.
#[derive(Debug, Parser)]
#[command(name = "cronq", version, about, long_about = None)]
pub struct Cli {
    /// Log filter (tracing's EnvFilter syntax, e.g. `info`, `cronq=debug`).
    #[arg(
        long,
        global = true,
        env = "CRONQ_LOG",
        default_value = "info,rskafka=off"
    )]
    pub log: String,
    /// Log format on stderr: `text` for people, `json` for log shippers (one object per line).
    #[arg(
        long,
        global = true,
        env = "CRONQ_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the dispatcher: every due job of the schedule becomes one message.
    Run(RunArgs),
    /// Check a schedule file: every problem (exit 1), or each job's next run (exit 0).
    Validate(ValidateArgs),
    /// Consume job messages as a consumer group and execute them, sizing the pool by the backlog.
    Worker(WorkerArgs),
    /// Print job messages as they arrive on a topic.
    Tail(TailArgs),
    /// Print the next instants at which a cron expression fires, one RFC 3339 instant per line.
    Next(NextArgs),
    /// Describe a cron expression in English and show its next 5 instants.
    Explain(ExplainArgs),
    /// Show the dispatcher group: members, shards, cursors, schedule MD5s (exit 1 when unhealthy).
    Status(StatusArgs),
    /// Run one job of the schedule now (or at --at), by hand; prints its dispatchId.
    Trigger(TriggerArgs),
    /// Pause a job (or every job, --all) without editing the schedule file: its slots are not
    /// dispatched until `cronq resume` or --until; prints the control record written.
    Pause(PauseArgs),
    /// End a pause. By default the job's catch-up rule (`catchup`, `catchupWindow`; default
    /// `all` within 1h) decides about the paused slots, as about slots missed in downtime:
    /// --drop-missed sends none of them. Prints the control record written.
    Resume(ResumeArgs),
    /// Write a schedule file into the group's schedule topic `<group>.schedule`: check it, print
    /// the plan (added, changed field by field, removed), write only the difference (acks=all).
    Apply(ApplyArgs),
    /// Write the group's schedule topic out as a schedule file: the jobs in force, one per line,
    /// sorted by name.
    Export(ExportArgs),
    /// The jobs API's client (`cronq run --schedule-topic --api-tokens FILE`): get, put, delete,
    /// list jobs and their next runs; `hash-token` for the token file.
    Jobs(JobsArgs),
    /// Watch that every slot ran: join dispatches to results in a SQLite history (--db), judge
    /// late and missed runs, queue alerts for webhooks.
    Monitor(MonitorArgs),
    /// One job's runs from the monitor's database, newest first: slot, start, duration,
    /// attempts, outcome, worker.
    History(HistoryArgs),
    /// Runs across jobs from the monitor's database (`--status failed --since 1h`).
    Runs(RunsArgs),
    /// Operator actions from the monitor's database, newest first: when, who (as the writer
    /// claimed), what, job, reason.
    Audit(AuditArgs),
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the event's own
    /// fields (`slot`, `job`, `shard`, …) at the top level.
    Json,
}

/// Installs the stderr log subscriber.
pub fn init_tracing(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(true)
            .init(),
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Validate(args) => validate::run(args),
        Command::Worker(args) => worker::run(args),
        Command::Tail(args) => tail::run(args),
        Command::Next(args) => next::next(args),
        Command::Explain(args) => next::explain(args),
        Command::Status(args) => status::run(args),
        Command::Trigger(args) => trigger::run(args),
        Command::Pause(args) => pause::pause(args),
        Command::Resume(args) => pause::resume(args),
        Command::Apply(args) => apply::run(args),
        Command::Export(args) => export::run(args),
        Command::Jobs(args) => jobs::run(args),
        Command::Monitor(args) => monitor::run(args),
        Command::History(args) => history::history(args),
        Command::Runs(args) => history::runs(args),
        Command::Audit(args) => audit::run(args),
    }
}
