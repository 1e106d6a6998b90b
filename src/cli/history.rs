//! `cronq history JOB` and `cronq runs`: the monitor's run history, read from its database
//! (`--db`) directly. One line per run on stdout (or one JSON object per line with `--json`);
//! nothing else goes to stdout.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::Args;

use super::args::{bounded, whole, DAY, MINUTE};
use super::error::CliError;
use crate::monitor::model::{Run, RunState};
use crate::monitor::store::{RunQuery, RunStore, SqliteStore};
use crate::obs::terminal::escape_controls;

/// `cronq history JOB`
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The job.
    pub job: String,
    /// What to show.
    #[command(flatten)]
    pub filter: RunFilter,
}

/// `cronq runs`
#[derive(Debug, Args)]
pub struct RunsArgs {
    /// What to show.
    #[command(flatten)]
    pub filter: RunFilter,
}

/// What `history` and `runs` share.
#[derive(Debug, Args)]
pub struct RunFilter {
    /// The monitor's database.
    #[arg(long, env = "CRONQ_DB", default_value = "cronq-monitor.db")]
    pub db: PathBuf,
    /// Only runs whose slot is at most this long ago (1m-3650d).
    #[arg(long, value_parser = since_duration)]
    pub since: Option<Duration>,
    /// Only runs in this state (succeeded, failed, timed_out, late, missed, …).
    #[arg(long, value_parser = run_state)]
    pub status: Option<RunState>,
    /// At most this many runs, newest first (1-10000).
    #[arg(long, default_value_t = 100, value_parser = |s: &str| whole::<usize>(s, 1, 10_000))]
    pub limit: usize,
    /// One JSON object per line instead of a readable line.
    #[arg(long)]
    pub json: bool,
}

pub(super) fn since_duration(text: &str) -> Result<Duration, String> {
    bounded(text, MINUTE, 3650 * DAY)
}

fn run_state(text: &str) -> Result<RunState, String> {
    RunState::parse(text).ok_or_else(|| {
        let all: Vec<&str> = RunState::ALL.iter().map(|s| s.as_str()).collect();
        format!("{text:?} is not one of {}", all.join(", "))
    })
}

fn instant(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| t.to_rfc3339_opts(SecondsFormat::Millis, true),
    )
}

/// One readable line: slot, started, duration, attempts, outcome, worker (and the job, for runs
/// across jobs). Text from topics is escaped.
pub fn line(run: &Run, with_job: bool) -> String {
    let duration = run.duration().map_or_else(
        || "-".into(),
        |d| format!("{:.3}s", d.num_milliseconds() as f64 / 1000.0),
    );
    let job = if with_job {
        format!("{}  ", run.job)
    } else {
        String::new()
    };
    escape_controls(&format!(
        "{job}{}  started={}  duration={duration}  attempts={}  {}{}  worker={}",
        run.slot.to_rfc3339_opts(SecondsFormat::Secs, true),
        instant(run.started_at),
        run.attempts,
        run.state.as_str(),
        if run.manual { " (manual)" } else { "" },
        run.worker.as_deref().unwrap_or("-"),
    ))
}

/// A run as one JSON object: its fields, and `durationMs` ([`Run::to_json`]).
pub fn json(run: &Run) -> serde_json::Value {
    run.to_json()
}

fn show(filter: &RunFilter, job: Option<String>) -> Result<ExitCode, CliError> {
    let mut store = SqliteStore::open_existing(&filter.db)?;
    let since = filter
        .since
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .map(|d| Utc::now() - d);
    let with_job = job.is_none();
    let runs = store.runs(&RunQuery {
        job,
        status: filter.status,
        since,
        limit: filter.limit,
        after: None,
    })?;
    let mut out = std::io::stdout().lock();
    for run in &runs {
        if filter.json {
            writeln!(out, "{}", json(run))?;
        } else {
            writeln!(out, "{}", line(run, with_job))?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// `cronq history JOB`.
pub(super) fn history(args: HistoryArgs) -> Result<ExitCode, CliError> {
    show(&args.filter, Some(args.job))
}

/// `cronq runs`.
pub(super) fn runs(args: RunsArgs) -> Result<ExitCode, CliError> {
    show(&args.filter, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_is_one_line_with_its_slot_start_duration_attempts_outcome_and_worker() {
        let mut run = Run::new(
            "a@2026-12-07T10:00:00Z".into(),
            "a".into(),
            "2026-12-07T10:00:00Z".parse().unwrap(),
            RunState::Failed,
        );
        run.started_at = Some("2026-12-07T10:00:00.100Z".parse().unwrap());
        run.finished_at = Some("2026-12-07T10:00:01.600Z".parse().unwrap());
        run.attempts = 2;
        run.worker = Some("w1\u{1b}[2J".into());
        assert_eq!(
            line(&run, false),
            "2026-12-07T10:00:00Z  started=2026-12-07T10:00:00.100Z  duration=1.500s  attempts=2  failed  worker=w1\\u001b[2J"
        );
        let j = json(&run);
        assert_eq!(j["durationMs"], 1500);
        assert_eq!(j["state"], "failed");
        assert_eq!(j["dispatchId"], "a@2026-12-07T10:00:00Z");
    }

    #[test]
    fn status_and_since_are_checked_at_parse_time() {
        assert!(run_state("timed_out").is_ok());
        assert!(run_state("boom")
            .unwrap_err()
            .contains("is not one of dispatched"));
        assert!(since_duration("30s")
            .unwrap_err()
            .contains("out of range 1m-3650d"));
    }
}
