//! What a new schedule changes, by `jobName`.
//!
//! Only enabled jobs take part: disabling a job removes it, enabling one adds it.

use std::collections::HashMap;

use super::load::{Job, Schedule};

/// How a reload changes the running schedule.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Diff {
    /// New names: scheduled from now.
    pub added: Vec<String>,
    /// `cronTime` or `timezone` changed: rescheduled from now.
    pub rescheduled: Vec<String>,
    /// Only the payload (`job`, `priority`, `topic`) changed: next run unchanged.
    pub updated: Vec<String>,
    /// Gone (or disabled): never fire again.
    pub removed: Vec<String>,
}

impl Diff {
    /// Compares the enabled jobs of `old` and `new`.
    pub fn between(old: &Schedule, new: &Schedule) -> Diff {
        let old_jobs: HashMap<&str, &Job> = old
            .jobs
            .iter()
            .filter(|j| j.spec.enabled)
            .map(|j| (j.spec.name.as_str(), j))
            .collect();
        let mut diff = Diff::default();
        let mut still_there = std::collections::HashSet::with_capacity(new.jobs.len());
        for job in new.jobs.iter().filter(|j| j.spec.enabled) {
            let name = job.spec.name.as_str();
            still_there.insert(name);
            match old_jobs.get(name) {
                None => diff.added.push(name.to_string()),
                Some(prev) => {
                    if prev.spec.cron_time != job.spec.cron_time
                        || prev.spec.timezone != job.spec.timezone
                    {
                        diff.rescheduled.push(name.to_string());
                    } else if prev.spec != job.spec {
                        diff.updated.push(name.to_string());
                    }
                }
            }
        }
        for job in old.jobs.iter().filter(|j| j.spec.enabled) {
            if !still_there.contains(job.spec.name.as_str()) {
                diff.removed.push(job.spec.name.clone());
            }
        }
        diff
    }

    /// Nothing changes.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.rescheduled.is_empty()
            && self.updated.is_empty()
            && self.removed.is_empty()
    }
}
