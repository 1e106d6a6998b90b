//! `cronq audit`: the operator actions the monitor read from the topics (pause, resume, trigger,
//! schedule changes), from its database (`--db`) directly, like `cronq history`. One line per
//! entry on stdout (or one JSON object per line with `--json`); nothing else goes to stdout.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use clap::Args;

use super::args::whole;
use super::error::CliError;
use super::history::since_duration;
use crate::monitor::model::AuditEntry;
use crate::monitor::store::{RunStore, SqliteStore};
use crate::obs::terminal::escape_controls;

/// `cronq audit`
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The monitor's database.
    #[arg(long, env = "CRONQ_DB", default_value = "cronq-monitor.db")]
    pub db: PathBuf,
    /// Only entries at most this long ago (1m-3650d).
    #[arg(long, value_parser = since_duration)]
    pub since: Option<Duration>,
    /// Only the entries of this job (an action on every job, `--all`, has none).
    #[arg(long)]
    pub job: Option<String>,
    /// At most this many entries, newest first (1-10000).
    #[arg(long, default_value_t = 100, value_parser = |s: &str| whole::<usize>(s, 1, 10_000))]
    pub limit: usize,
    /// One JSON object per line instead of a readable line.
    #[arg(long)]
    pub json: bool,
}

/// One readable line: when, who, what, job, reason. Text from topics is escaped.
pub fn line(entry: &AuditEntry) -> String {
    escape_controls(&format!(
        "{}  {}  {}  {}  reason={}",
        entry.at.to_rfc3339_opts(SecondsFormat::Millis, true),
        entry.who,
        entry.what,
        entry.job.as_deref().unwrap_or("(all jobs)"),
        entry.reason.as_deref().unwrap_or("-"),
    ))
}

/// `cronq audit`.
pub(super) fn run(args: AuditArgs) -> Result<ExitCode, CliError> {
    let mut store = SqliteStore::open_existing(&args.db)?;
    let since = args
        .since
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .map(|d| Utc::now() - d);
    let entries = store.audit(since, args.job.as_deref(), args.limit)?;
    let mut out = std::io::stdout().lock();
    for entry in &entries {
        if args.json {
            writeln!(out, "{}", serde_json::to_value(entry).unwrap_or_default())?;
        } else {
            writeln!(out, "{}", line(entry))?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_one_line_with_when_who_what_job_and_reason() {
        let entry = AuditEntry {
            at: "2026-12-07T10:00:30Z".parse().unwrap(),
            who: "alice@ops".into(),
            what: "pause".into(),
            job: Some("held".into()),
            reason: Some("INC-7\u{1b}[2J".into()),
            detail: serde_json::Value::Null,
            topic: "g.control".into(),
            partition: 0,
            offset: 4,
        };
        assert_eq!(
            line(&entry),
            "2026-12-07T10:00:30.000Z  alice@ops  pause  held  reason=INC-7\\u001b[2J"
        );
    }
}
