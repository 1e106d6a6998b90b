//! `cronq next` and `cronq explain`: what a cron expression does, without a schedule file.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use clap::Args;

use super::args::{bounded, format_instant, parse_instant, whole};
use super::error::CliError;
use crate::cron::{tz::parse_zone, CronExpr};

/// `cronq next`
#[derive(Debug, Args)]
pub struct NextArgs {
    /// A standard cron expression (quote it): `"*/15 9-17 * * MON-FRI"`, or a macro like `@daily`.
    pub expr: String,
    /// Print instants strictly after this RFC 3339 instant (default: now).
    #[arg(long, env = "CRONQ_AFTER")]
    pub after: Option<String>,
    /// How many instants to print (0-100000).
    #[arg(short = 'n', long = "count", default_value_t = 5, env = "CRONQ_COUNT", value_parser = |s: &str| whole::<usize>(s, 0, 100_000))]
    pub count: usize,
    /// The IANA time zone whose wall clock the expression is read on.
    #[arg(long, default_value = "UTC", env = "CRONQ_TZ")]
    pub tz: String,
    /// The job whose name resolves `H` (Jenkins' hash) in the expression.
    #[arg(long, env = "CRONQ_JOB")]
    pub job: Option<String>,
    /// The job's `jitter` (1ms-10m; needs `--job`): each instant is followed by its `notBefore`.
    #[arg(long, env = "CRONQ_JITTER", value_parser = jitter_duration)]
    pub jitter: Option<Duration>,
}

/// `cronq explain`
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A standard cron expression (quote it).
    pub expr: String,
    /// The IANA time zone whose wall clock the expression is read on.
    #[arg(long, default_value = "UTC", env = "CRONQ_TZ")]
    pub tz: String,
    /// The job whose name resolves `H` (Jenkins' hash) in the expression.
    #[arg(long, env = "CRONQ_JOB")]
    pub job: Option<String>,
}

fn jitter_duration(text: &str) -> Result<Duration, String> {
    bounded(text, Duration::from_millis(1), crate::wire::job::MAX_JITTER)
}

fn compile(expr: &str, tz: &str, job: Option<&str>) -> Result<CronExpr, CliError> {
    let zone = parse_zone(tz).map_err(CliError::Zone)?;
    CronExpr::parse_for_job(expr, zone, job).map_err(|source| CliError::Expression {
        expr: expr.to_string(),
        source,
    })
}

fn upcoming(expr: &CronExpr, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
    let mut out = Vec::with_capacity(count);
    let mut cursor = after;
    while out.len() < count {
        match expr.next_after(cursor) {
            // RFC 3339 has four-digit years: the list ends with year 9999.
            Some(t) if t.with_timezone(&expr.tz()).year() <= 9999 => {
                out.push(t);
                cursor = t;
            }
            _ => break,
        }
    }
    out
}

/// Runs `cronq next`: the next instants of an expression, one a line.
pub(super) fn next(args: NextArgs) -> Result<ExitCode, CliError> {
    let expr = compile(&args.expr, &args.tz, args.job.as_deref())?;
    let after = match &args.after {
        Some(text) => parse_instant("--after", text)?,
        None => Utc::now(),
    };
    let jitter = match (args.jitter, args.job.as_deref()) {
        (Some(_), None) => {
            return Err(CliError::Invalid {
                flag: "--jitter",
                reason: "needs --job: the offset is a hash of the job's name and its slot".into(),
            })
        }
        (jitter, job) => jitter.zip(job),
    };
    let mut out = std::io::stdout().lock();
    for t in upcoming(&expr, after, args.count) {
        match jitter {
            Some((jitter, job)) => {
                let slot = crate::wire::slot_text(t);
                let at = crate::wire::ids::not_before(job, t, &slot, jitter);
                writeln!(
                    out,
                    "{}\tnot before {}",
                    format_instant(t, expr.tz()),
                    crate::wire::ids::not_before_text(at)
                )?;
            }
            None => writeln!(out, "{}", format_instant(t, expr.tz()))?,
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `cronq explain`: the expression in English and its next 5 instants.
pub(super) fn explain(args: ExplainArgs) -> Result<ExitCode, CliError> {
    let expr = compile(&args.expr, &args.tz, args.job.as_deref())?;
    let mut out = std::io::stdout().lock();
    if let (true, Some(job)) = (crate::cron::hash::uses_hash(&args.expr), &args.job) {
        writeln!(out, "{} (H resolved for job {job:?})", expr.source())?;
    }
    writeln!(out, "{}", expr.describe())?;
    for t in upcoming(&expr, Utc::now(), 5) {
        writeln!(out, "  {}", format_instant(t, expr.tz()))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
