//! The pause table: the latest control record of every key, what it pauses, and the pauses in
//! force as `cronq status` and the status page show them.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::obs::terminal::escape_controls;
use crate::wire::control::{ControlRecord, ALL_KEY};
use crate::wire::slot_text;

/// The most jobs the table holds a record of (besides `--all`): the bound on what a writer of
/// the control topic can make every dispatcher keep in memory (a record is a few hundred bytes, so
/// a few MB). A record of a further job is ignored until a tombstone frees a place; a job already
/// in the table is always updated. An operator who needs more pauses than this pauses `--all`.
pub const MAX_PAUSED_JOBS: usize = 10_000;

/// The latest record of every key: what is, was and will be paused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PauseTable {
    jobs: BTreeMap<String, ControlRecord>,
    all: Option<ControlRecord>,
}

impl PauseTable {
    /// Applies the record at `key` (`None`: a tombstone, the key is forgotten). A later record
    /// always wins over an earlier one of the same key.
    pub fn apply(&mut self, key: &str, record: Option<ControlRecord>) {
        if key == ALL_KEY {
            self.all = record;
        } else {
            match record {
                Some(r) => {
                    self.jobs.insert(key.to_string(), r);
                }
                None => {
                    self.jobs.remove(key);
                }
            }
        }
    }

    /// [`apply`](Self::apply), unless `record` is of a job not in the table and the table holds
    /// [`MAX_PAUSED_JOBS`] jobs already: then nothing changes and the record is handed back.
    pub fn admit(
        &mut self,
        key: &str,
        record: Option<ControlRecord>,
    ) -> Result<(), Option<ControlRecord>> {
        let full = self.jobs.len() >= MAX_PAUSED_JOBS;
        if full && key != ALL_KEY && record.is_some() && !self.jobs.contains_key(key) {
            return Err(record);
        }
        self.apply(key, record);
        Ok(())
    }

    /// The latest record of `key` (a job's name or [`ALL_KEY`]).
    pub fn get(&self, key: &str) -> Option<&ControlRecord> {
        if key == ALL_KEY {
            self.all.as_ref()
        } else {
            self.jobs.get(key)
        }
    }

    /// Every record, `--all` first.
    pub fn records(&self) -> impl Iterator<Item = &ControlRecord> {
        self.all.iter().chain(self.jobs.values())
    }

    /// The record that pauses `job`'s slot at `slot`, if any (`--all` first).
    pub fn pausing(&self, job: &str, slot: DateTime<Utc>) -> Option<&ControlRecord> {
        self.all
            .as_ref()
            .filter(|r| r.covers(slot))
            .or_else(|| self.jobs.get(job).filter(|r| r.covers(slot)))
    }

    /// Some record covers some slot at `slot` or later: the minute needs looking at.
    pub fn covers_any_from(&self, slot: DateTime<Utc>) -> bool {
        self.records().any(|r| r.until.is_none_or(|u| u > slot))
    }

    /// The pause of everything in force at `now`, and the jobs' pauses in force, by name.
    pub fn in_force(&self, now: DateTime<Utc>) -> (Option<&ControlRecord>, Vec<&ControlRecord>) {
        (
            self.all.as_ref().filter(|r| r.in_force(now)),
            self.jobs.values().filter(|r| r.in_force(now)).collect(),
        )
    }
}

/// A pause in force, as `cronq status` and the status page show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PausedJob {
    /// The job (`None`: every job, `--all`).
    pub job: Option<String>,
    /// The operator's reason.
    pub reason: Option<String>,
    /// Since when (RFC 3339).
    pub since: String,
    /// Until when, if it ends by itself (RFC 3339).
    pub until: Option<String>,
    /// Who paused it.
    pub by: String,
    /// Its end sends none of the paused slots.
    pub drop_missed: bool,
}

/// The pauses in force at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PausedView {
    /// `cronq pause --all`: nothing is dispatched.
    pub all: Option<PausedJob>,
    /// Paused jobs, by name.
    pub jobs: Vec<PausedJob>,
}

impl PausedJob {
    fn of(r: &ControlRecord) -> PausedJob {
        PausedJob {
            job: r.job.clone(),
            reason: r.reason.clone(),
            since: slot_text(r.since),
            until: r.until.map(slot_text),
            by: r.by.clone(),
            drop_missed: r.drop_missed,
        }
    }
}

impl PauseTable {
    /// The pauses in force at `now`.
    pub fn view(&self, now: DateTime<Utc>) -> PausedView {
        let (all, jobs) = self.in_force(now);
        PausedView {
            all: all.map(PausedJob::of),
            jobs: jobs.into_iter().map(PausedJob::of).collect(),
        }
    }
}

/// The line of `cronq pause --all` in force, for a terminal.
pub fn all_line(all: &PausedJob) -> String {
    format!("PAUSED: ALL JOBS (cronq pause --all) {}", paused_line(all))
}

fn paused_line(p: &PausedJob) -> String {
    format!(
        "since {}{}  by {}{}{}",
        p.since,
        p.until
            .as_ref()
            .map_or(String::new(), |u| format!(" until {u}")),
        escape_controls(&p.by),
        p.reason.as_ref().map_or(String::new(), |r| format!(
            "  reason: {}",
            escape_controls(r)
        )),
        if p.drop_missed { "  (drop missed)" } else { "" },
    )
}

/// The pauses as text for a terminal: `--all` first and loud, then one line per job. The text
/// of the records (job, by, reason) is escaped ([`escape_controls`]): whoever writes the control
/// topic chooses it.
pub fn render(view: &PausedView) -> String {
    let mut out = String::new();
    if let Some(all) = &view.all {
        out.push_str(&all_line(all));
        out.push('\n');
    }
    if view.jobs.is_empty() {
        out.push_str("paused jobs: none\n");
    } else {
        out.push_str(&format!("paused jobs: {}\n", view.jobs.len()));
        for p in &view.jobs {
            out.push_str(&format!(
                "  {}  {}\n",
                escape_controls(p.job.as_deref().unwrap_or("--all")),
                paused_line(p)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::testing::{at, pause, resume};
    use super::*;
    use crate::schedule::{parse, LoadOptions};

    #[test]
    fn the_latest_record_of_a_key_wins_and_a_tombstone_forgets_it() {
        let mut table = PauseTable::default();
        let first = pause(Some("a"), at(1, 0), None);
        table.apply("a", Some(first.clone()));
        let resumed = resume(&first, at(5, 0), false);
        table.apply("a", Some(resumed.clone()));
        assert_eq!(table.get("a"), Some(&resumed));
        assert!(!table.get("a").unwrap().in_force(at(6, 0)));
        // Paused again later: the new record wins over the resume.
        let again = pause(Some("a"), at(9, 0), None);
        table.apply("a", Some(again.clone()));
        assert_eq!(table.get("a"), Some(&again));
        assert_eq!(
            table.pausing("a", at(3, 0)),
            None,
            "the old interval is forgotten"
        );
        assert_eq!(table.pausing("a", at(9, 0)), Some(&again));
        table.apply("a", None);
        assert_eq!(table.get("a"), None);
        assert_eq!(table.records().count(), 0);
    }

    #[test]
    fn all_pauses_every_job_and_a_jobs_own_resume_does_not_end_it() {
        let mut table = PauseTable::default();
        let everything = pause(None, at(1, 0), None);
        assert_eq!(everything.key(), ALL_KEY);
        table.apply(ALL_KEY, Some(everything.clone()));
        let own = pause(Some("a"), at(0, 0), None);
        table.apply("a", Some(resume(&own, at(2, 0), true)));
        for job in ["a", "b", "any-other"] {
            assert_eq!(table.pausing(job, at(3, 0)), Some(&everything), "{job}");
        }
        assert_eq!(table.pausing("b", at(0, 30)), None, "before the pause");
        // "a" had its own interval then: still paused (its resume decides about it).
        assert!(table.pausing("a", at(0, 30)).is_some());
        let (all, jobs) = table.in_force(at(3, 0));
        assert_eq!((all, jobs.len()), (Some(&everything), 0));
        let view = table.view(at(3, 0));
        assert!(view.all.is_some());
        assert!(
            render(&view).starts_with("PAUSED: ALL JOBS"),
            "{}",
            render(&view)
        );
    }

    #[test]
    fn the_table_holds_at_most_max_paused_jobs_and_still_updates_those_it_holds() {
        let mut table = PauseTable::default();
        for i in 0..MAX_PAUSED_JOBS {
            let name = format!("job-{i}");
            let r = pause(Some(&name), at(0, 0), None);
            assert_eq!(table.admit(&name, Some(r)), Ok(()));
        }
        let extra = pause(Some("one-more"), at(0, 0), None);
        assert_eq!(
            table.admit("one-more", Some(extra.clone())),
            Err(Some(extra.clone()))
        );
        assert_eq!(table.get("one-more"), None);
        // A job it holds is updated, --all is always taken, a tombstone frees a place.
        let resumed = resume(&pause(Some("job-7"), at(0, 0), None), at(3, 0), false);
        assert_eq!(table.admit("job-7", Some(resumed.clone())), Ok(()));
        assert_eq!(table.get("job-7"), Some(&resumed));
        assert_eq!(
            table.admit(ALL_KEY, Some(pause(None, at(0, 0), None))),
            Ok(())
        );
        assert_eq!(table.admit("job-8", None), Ok(()));
        assert_eq!(table.admit("one-more", Some(extra.clone())), Ok(()));
        assert_eq!(table.get("one-more"), Some(&extra));
    }

    #[test]
    fn the_all_key_can_never_be_a_job_name() {
        let json =
            format!(r#"{{"jobs":[{{"jobName":"{ALL_KEY}","job":"x","cronTime":"* * * * *"}}]}}"#);
        let err = parse(json.as_bytes(), Path::new("s.json"), LoadOptions::default())
            .expect_err("a blank jobName must be refused");
        assert!(err.to_string().contains("jobName"), "{err}");
    }
}
