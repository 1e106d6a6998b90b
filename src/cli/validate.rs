//! `cronq validate`: check a schedule file as the dispatcher would load it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Args;

use super::args::{format_instant, ScheduleLimitArgs};
use super::error::CliError;
use crate::cron::tz::parse_zone;
use crate::schedule::{self, LoadError, LoadOptions};
use crate::schedule::{Job, When};

/// `cronq validate`
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The schedule file.
    #[arg(default_value = "schedule/schedule.json", env = "CRONQ_SCHEDULE")]
    pub path: PathBuf,
    /// Zone for jobs without a `timezone` field.
    #[arg(long, env = "CRONQ_TIMEZONE", default_value = "UTC")]
    pub timezone: String,
    /// Limits of the schedule file.
    #[command(flatten)]
    pub limits: ScheduleLimitArgs,
}

/// `cronq validate`'s column for a job with a `jitter`: the jitter and the next slot's `notBefore`
/// (empty without one).
fn jitter_column(spec: &crate::schedule::JobSpec, expr: &When, now: DateTime<Utc>) -> String {
    let Some(jitter) = spec.jitter else {
        return String::new();
    };
    let not_before = expr
        .next_after(now)
        .filter(|_| spec.enabled)
        .and_then(|t| crate::schedule::record::not_before_for(spec, &crate::wire::slot_text(t)));
    match not_before {
        Some(nb) => format!(
            "\tjitter {} (not before {nb})",
            humantime::format_duration(jitter)
        ),
        None => format!("\tjitter {}", humantime::format_duration(jitter)),
    }
}

/// One line per job: name, expression, zone, next run (and the jitter column).
fn job_lines(jobs: &[Job], now: DateTime<Utc>) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(jobs.len() * 64);
    for job in jobs {
        let next = if job.spec.enabled {
            // An `at` job's run is its own second (its slot is the minute containing it).
            job.expr
                .next_after(now)
                .map(|slot| job.spec.at().unwrap_or(slot))
                .map_or_else(|| "never".to_string(), |t| format_instant(t, job.expr.tz()))
        } else {
            "disabled".to_string()
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{}\t{}\t{}\tnext {}{}",
            job.spec.name,
            job.spec.cron_time,
            job.spec.timezone.name(),
            next,
            jitter_column(&job.spec, &job.expr, now)
        );
    }
    out
}

/// Runs `cronq validate`: every problem of the file (exit 1), or each job's next run (exit 0).
pub(super) fn run(args: ValidateArgs) -> Result<ExitCode, CliError> {
    let default_tz = parse_zone(&args.timezone).map_err(CliError::Zone)?;
    let options = args.limits.apply(LoadOptions {
        default_tz,
        ..LoadOptions::default()
    });
    // The file's digest (what `load` adds) is of no use here.
    let loaded = schedule::read_limited(&args.path, options.max_file_bytes)
        .and_then(|bytes| schedule::parse(&bytes, &args.path, options));
    let schedule = match loaded {
        Ok(s) => s,
        Err(LoadError::Invalid { path, problems }) => {
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!(
                "{}: {} problem{}; nothing was changed",
                path.display(),
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            );
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    let now = Utc::now();
    let enabled = schedule.jobs.iter().filter(|j| j.spec.enabled).count();
    // Block-buffered: stdout is line-buffered, a write per job.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    writeln!(
        out,
        "{}: OK, {} jobs ({} enabled)",
        args.path.display(),
        schedule.jobs.len(),
        enabled
    )?;
    // The lines are made on every core (a next-run search and a date each), then written in order.
    let parts = crate::cores::map_runs(&schedule.jobs, crate::cores::count(), 10_000, |_, jobs| {
        job_lines(jobs, now)
    });
    for part in parts {
        out.write_all(part.as_bytes())?;
    }
    out.flush()?;
    // A million jobs take a while to free, and the process is about to exit.
    std::mem::forget(schedule);
    Ok(ExitCode::SUCCESS)
}
