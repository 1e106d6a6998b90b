//! `cronq next` and `cronq explain`: what a cron expression (or an `--at` / `--every` schedule,
//! bounded by `--start-at` / `--end-at`) does, without a schedule file.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use clap::Args;

use super::args::{bounded, format_instant, parse_instant, whole};
use super::error::CliError;
use crate::cron::{tz::parse_zone, CronExpr};
use crate::schedule::kinds::{self, parse_every, Kind, Timing, When};

/// `cronq next`
#[derive(Debug, Args)]
pub struct NextArgs {
    /// A standard cron expression (quote it): `"*/15 9-17 * * MON-FRI"`, or a macro like `@daily`.
    #[arg(required_unless_present_any = ["at", "every"])]
    pub expr: Option<String>,
    /// `--at`, `--every`, `--start-at`, `--end-at`.
    #[command(flatten)]
    pub kinds: KindArgs,

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

/// The schedules other than an expression, shared by `next` and `explain`.
#[derive(Debug, Args)]
pub struct KindArgs {
    /// Instead of an expression, one run at this RFC 3339 instant (a job's `"at"`).
    #[arg(long, env = "CRONQ_AT", conflicts_with_all = ["expr", "every"], value_parser = instant)]
    pub at: Option<DateTime<Utc>>,
    /// Instead of an expression, a run every this many whole minutes, UTC, anchored at
    /// `--start-at` or the Unix epoch (a job's `"every"`: 1m-366d).
    #[arg(long, env = "CRONQ_EVERY", conflicts_with = "expr", value_parser = every)]
    pub every: Option<u32>,
    /// No run before this RFC 3339 instant (a job's `"startAt"`).
    #[arg(long, env = "CRONQ_START_AT", value_parser = instant)]
    pub start_at: Option<DateTime<Utc>>,
    /// No run at or after this RFC 3339 instant (a job's `"endAt"`).
    #[arg(long, env = "CRONQ_END_AT", value_parser = instant)]
    pub end_at: Option<DateTime<Utc>>,
}

/// `cronq explain`
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A standard cron expression (quote it).
    #[arg(required_unless_present_any = ["at", "every"])]
    pub expr: Option<String>,
    /// `--at`, `--every`, `--start-at`, `--end-at`.
    #[command(flatten)]
    pub kinds: KindArgs,

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

fn instant(text: &str) -> Result<DateTime<Utc>, String> {
    kinds::parse_instant(text)
}

fn every(text: &str) -> Result<u32, String> {
    parse_every(text)
}

/// What the command is asked about: an expression, `--at` or `--every`, and the bounds.
struct Asked<'a> {
    expr: Option<&'a str>,
    at: Option<DateTime<Utc>>,
    every: Option<u32>,
    start_at: Option<DateTime<Utc>>,
    end_at: Option<DateTime<Utc>>,
    tz: &'a str,
    job: Option<&'a str>,
}

/// The schedule asked about, checked as the loader checks a job's.
fn compile(asked: &Asked<'_>) -> Result<When, CliError> {
    let zone = parse_zone(asked.tz).map_err(CliError::Zone)?;
    if let (Some(start), Some(end)) = (asked.start_at, asked.end_at) {
        if end <= start {
            return Err(CliError::Invalid {
                flag: "--end-at",
                reason: "must be after --start-at: the schedule would have no run".into(),
            });
        }
    }
    let (kind, expr) = match (asked.expr, asked.at, asked.every) {
        (_, Some(at), _) => (Kind::At(at), None),
        (_, None, Some(minutes)) => (Kind::Every(minutes), None),
        (Some(text), None, None) => {
            let expr = CronExpr::parse_for_job(text, zone, asked.job).map_err(|source| {
                CliError::Expression {
                    expr: text.to_string(),
                    source,
                }
            })?;
            if asked.start_at.is_none() && asked.end_at.is_none() {
                return Ok(When::of_cron(expr));
            }
            (Kind::Cron, Some(expr))
        }
        (None, None, None) => {
            return Err(CliError::Invalid {
                flag: "EXPR",
                reason: "give a cron expression, --at or --every".into(),
            })
        }
    };
    let timing = Timing {
        kind,
        start_at: asked.start_at,
        end_at: asked.end_at,
        keep_after_run: false,
    };
    When::of(&timing, expr, zone).ok_or(CliError::Invalid {
        flag: "EXPR",
        reason: "no schedule".into(),
    })
}

fn upcoming(expr: &When, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
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
    let expr = compile(&Asked {
        expr: args.expr.as_deref(),
        at: args.kinds.at,
        every: args.kinds.every,
        start_at: args.kinds.start_at,
        end_at: args.kinds.end_at,
        tz: &args.tz,
        job: args.job.as_deref(),
    })?;
    if args.kinds.at.is_some() && args.jitter.is_some() {
        return Err(CliError::Invalid {
            flag: "--jitter",
            reason: "an --at schedule runs at its own second: jitter does not apply to it".into(),
        });
    }
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
        match (jitter, args.kinds.at) {
            (_, Some(at)) => writeln!(
                out,
                "{}\tnot before {}",
                format_instant(t, expr.tz()),
                crate::wire::ids::not_before_text(at)
            )?,
            (Some((jitter, job)), None) => {
                let slot = crate::wire::slot_text(t);
                let at = crate::wire::ids::not_before(job, t, &slot, jitter);
                writeln!(
                    out,
                    "{}\tnot before {}",
                    format_instant(t, expr.tz()),
                    crate::wire::ids::not_before_text(at)
                )?;
            }
            (None, None) => writeln!(out, "{}", format_instant(t, expr.tz()))?,
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `cronq explain`: the expression in English and its next 5 instants.
pub(super) fn explain(args: ExplainArgs) -> Result<ExitCode, CliError> {
    let expr = compile(&Asked {
        expr: args.expr.as_deref(),
        at: args.kinds.at,
        every: args.kinds.every,
        start_at: args.kinds.start_at,
        end_at: args.kinds.end_at,
        tz: &args.tz,
        job: args.job.as_deref(),
    })?;
    let mut out = std::io::stdout().lock();
    let hashed = args
        .expr
        .as_deref()
        .is_some_and(crate::cron::hash::uses_hash);
    if let (true, Some(job)) = (hashed, &args.job) {
        writeln!(out, "{} (H resolved for job {job:?})", expr.source())?;
    }
    writeln!(out, "{}", expr.describe())?;
    for t in upcoming(&expr, Utc::now(), 5) {
        writeln!(out, "  {}", format_instant(t, expr.tz()))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
