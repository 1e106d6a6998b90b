//! The command line: `cronq next | explain` (and the daemon subcommands as they land).
//! Every flag is also an environment variable (`CRONQ_*`); durations use humantime (`90s`, `1h`).
//! stdout carries only data so it can be piped; logs and errors go to stderr.

use std::io::Write;
use std::process::ExitCode;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use clap::{Args, Parser, Subcommand};

use crate::cron::{tz::parse_zone, CronError, CronExpr};

/// cronq: turns a schedule of cron jobs into Kafka messages.
#[derive(Debug, Parser)]
#[command(name = "cronq", version, about, long_about = None)]
pub struct Cli {
    /// Log filter (tracing's EnvFilter syntax, e.g. `info`, `cronq=debug`).
    #[arg(long, global = true, env = "CRONQ_LOG", default_value = "info")]
    pub log: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the next instants at which a cron expression fires, one RFC 3339 instant per line.
    Next(NextArgs),
    /// Describe a cron expression in English and show its next 5 instants.
    Explain(ExplainArgs),
}

/// `cronq next`
#[derive(Debug, Args)]
pub struct NextArgs {
    /// A standard cron expression (quote it): `"*/15 9-17 * * MON-FRI"`, or a macro like `@daily`.
    pub expr: String,
    /// Print instants strictly after this RFC 3339 instant (default: now).
    #[arg(long, env = "CRONQ_AFTER")]
    pub after: Option<String>,
    /// How many instants to print.
    #[arg(short = 'n', long = "count", default_value_t = 5, env = "CRONQ_COUNT")]
    pub count: usize,
    /// The IANA time zone whose wall clock the expression is read on.
    #[arg(long, default_value = "UTC", env = "CRONQ_TZ")]
    pub tz: String,
}

/// `cronq explain`
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A standard cron expression (quote it).
    pub expr: String,
    /// The IANA time zone whose wall clock the expression is read on.
    #[arg(long, default_value = "UTC", env = "CRONQ_TZ")]
    pub tz: String,
}

/// Errors a subcommand reports to the user.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// A bad expression or zone given on the command line.
    #[error("invalid cron expression {expr:?}: {source}")]
    Expression {
        /// As given.
        expr: String,
        /// Why.
        source: CronError,
    },
    /// A bad time zone given on the command line.
    #[error("--tz: {0}")]
    Zone(CronError),
    /// `--after` is not RFC 3339.
    #[error("--after: {value:?} is not an RFC 3339 instant (e.g. 2026-11-26T12:00:00Z): {source}")]
    After {
        /// As given.
        value: String,
        /// Why.
        source: chrono::ParseError,
    },
    /// Writing to stdout failed (e.g. a closed pipe).
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// The process exit status for this error: 2 for bad input on the command line.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Expression { .. } | CliError::Zone(_) | CliError::After { .. } => 2,
            CliError::Output(_) => 1,
        }
    }
}

/// Installs the stderr log subscriber.
pub fn init_tracing(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Next(args) => next(args),
        Command::Explain(args) => explain(args),
    }
}

fn compile(expr: &str, tz: &str) -> Result<CronExpr, CliError> {
    let zone = parse_zone(tz).map_err(CliError::Zone)?;
    CronExpr::parse(expr, zone).map_err(|source| CliError::Expression {
        expr: expr.to_string(),
        source,
    })
}

/// RFC 3339 in the expression's zone: `Z` for UTC, the zone's offset otherwise.
pub fn format_instant(at: DateTime<Utc>, tz: Tz) -> String {
    if tz == Tz::UTC {
        at.to_rfc3339_opts(SecondsFormat::Secs, true)
    } else {
        at.with_timezone(&tz)
            .to_rfc3339_opts(SecondsFormat::Secs, false)
    }
}

fn upcoming(expr: &CronExpr, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
    let mut out = Vec::with_capacity(count);
    let mut cursor = after;
    while out.len() < count {
        match expr.next_after(cursor) {
            Some(t) => {
                out.push(t);
                cursor = t;
            }
            None => break,
        }
    }
    out
}

fn next(args: NextArgs) -> Result<ExitCode, CliError> {
    let expr = compile(&args.expr, &args.tz)?;
    let after = match &args.after {
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map_err(|source| CliError::After {
                value: text.clone(),
                source,
            })?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    let mut out = std::io::stdout().lock();
    for t in upcoming(&expr, after, args.count) {
        writeln!(out, "{}", format_instant(t, expr.tz()))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn explain(args: ExplainArgs) -> Result<ExitCode, CliError> {
    let expr = compile(&args.expr, &args.tz)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", expr.describe())?;
    for t in upcoming(&expr, Utc::now(), 5) {
        writeln!(out, "  {}", format_instant(t, expr.tz()))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
