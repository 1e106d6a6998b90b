//! What a new schedule changes, by `jobName`.
//!
//! Only enabled jobs take part: disabling a job removes it, enabling one adds it.

use std::collections::HashMap;

use super::spec::{Job, Schedule};

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

/// `jobs[i]` if it exists and is enabled.
fn enabled_at(jobs: &[Job], i: usize) -> Option<&Job> {
    jobs.get(i).filter(|j| j.spec.enabled)
}

impl Diff {
    /// Compares the enabled jobs of `old` and `new`. Each list comes out in `new`'s file order
    /// (`removed` in `old`'s).
    pub fn between(old: &Schedule, new: &Schedule) -> Diff {
        // An edited file keeps most jobs where they were: pair jobs by position first (a scan),
        // and hash only the names that moved (a million-job reload spent most of its time in hash
        // tables). Which old jobs were paired is kept by position, so the removed ones are a scan.
        let mut matched = vec![false; old.jobs.len()];
        let mut in_place = vec![false; new.jobs.len()];
        let mut moved = false;
        for (i, job) in new.jobs.iter().enumerate().filter(|(_, j)| j.spec.enabled) {
            match enabled_at(&old.jobs, i) {
                Some(prev) if prev.spec.name == job.spec.name => {
                    matched[i] = true;
                    in_place[i] = true;
                }
                _ => moved = true,
            }
        }
        let old_moved: HashMap<&str, usize> = if moved {
            (0..old.jobs.len())
                .filter(|&i| !matched[i])
                .filter_map(|i| enabled_at(&old.jobs, i).map(|j| (j.spec.name.as_str(), i)))
                .collect()
        } else {
            HashMap::new()
        };

        let mut diff = Diff::default();
        for (i, job) in new.jobs.iter().enumerate().filter(|(_, j)| j.spec.enabled) {
            let name = job.spec.name.as_str();
            let prev = if in_place[i] {
                Some(&old.jobs[i])
            } else {
                old_moved.get(name).map(|&k| {
                    matched[k] = true;
                    &old.jobs[k]
                })
            };
            match prev {
                None => diff.added.push(name.to_string()),
                Some(prev) => {
                    let prev = &prev.spec;
                    if prev.cron_time != job.spec.cron_time
                        || prev.timezone != job.spec.timezone
                        || prev.timing != job.spec.timing
                    {
                        diff.rescheduled.push(name.to_string());
                    } else if **prev != *job.spec {
                        diff.updated.push(name.to_string());
                    }
                }
            }
        }
        for (job, _) in old
            .jobs
            .iter()
            .zip(&matched)
            .filter(|(job, matched)| job.spec.enabled && !**matched)
        {
            diff.removed.push(job.spec.name.clone());
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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;
    use crate::schedule::{parse, LoadOptions};

    fn schedule(jobs: &[(&str, &str, &str, bool)]) -> Schedule {
        let entries: Vec<String> = jobs
            .iter()
            .map(|(name, payload, cron, enabled)| {
                format!(r#"{{"jobName":"{name}","job":"{payload}","cronTime":"{cron}","enabled":{enabled}}}"#)
            })
            .collect();
        let json = format!(r#"{{"jobs":[{}]}}"#, entries.join(","));
        parse(json.as_bytes(), Path::new("s.json"), LoadOptions::default()).unwrap()
    }

    #[test]
    fn each_kind_of_change_is_named_once() {
        let old = schedule(&[
            ("same", "run", "0 * * * *", true),
            ("payload", "run", "0 * * * *", true),
            ("cron", "run", "0 * * * *", true),
            ("was-disabled", "run", "0 * * * *", false),
            ("gone", "run", "0 * * * *", true),
            ("now-disabled", "run", "0 * * * *", true),
            ("stays-disabled", "run", "0 * * * *", false),
        ]);
        let new = schedule(&[
            ("new", "run", "5 * * * *", true),
            ("cron", "run", "*/5 * * * *", true),
            ("same", "run", "0 * * * *", true),
            ("payload", "run --v2", "0 * * * *", true),
            ("was-disabled", "run", "0 * * * *", true),
            ("now-disabled", "run", "0 * * * *", false),
            ("stays-disabled", "run --v2", "0 * * * *", false),
        ]);
        let diff = Diff::between(&old, &new);
        assert_eq!(diff.added, ["new", "was-disabled"]);
        assert_eq!(diff.rescheduled, ["cron"]);
        assert_eq!(diff.updated, ["payload"]);
        assert_eq!(diff.removed, ["gone", "now-disabled"]);
        assert!(Diff::between(&new, &new).is_empty());
    }

    /// One job of a generated schedule: (name, payload, cron, enabled).
    type Row = (String, u8, u8, bool);

    fn rows(jobs: &[Row]) -> Schedule {
        const CRONS: [&str; 3] = ["0 * * * *", "*/5 * * * *", "7 3 * * *"];
        let owned: Vec<(String, String, &str, bool)> = jobs
            .iter()
            .map(|(n, p, c, e)| (n.clone(), format!("run {p}"), CRONS[*c as usize], *e))
            .collect();
        let borrowed: Vec<(&str, &str, &str, bool)> = owned
            .iter()
            .map(|(n, p, c, e)| (n.as_str(), p.as_str(), *c, *e))
            .collect();
        schedule(&borrowed)
    }

    /// Old and new schedules: the new one keeps, edits, reorders, drops and adds jobs.
    fn old_and_new() -> impl Strategy<Value = (Vec<Row>, Vec<Row>)> {
        let job = || (0u8..3, 0u8..3, prop::bool::weighted(0.8));
        (
            prop::collection::btree_map("[a-f]{1,2}", job(), 0..20),
            prop::collection::btree_map("[a-h]{1,2}", job(), 0..20),
            any::<prop::sample::Index>(),
            0usize..4,
        )
            .prop_map(|(old, extra, rotate, shuffles)| {
                let old: Vec<Row> = old.into_iter().map(|(n, (p, c, e))| (n, p, c, e)).collect();
                // Keep most old jobs (some edited), in a rotated order, plus new names.
                let mut new: Vec<Row> = old
                    .iter()
                    .filter(|(_, p, _, _)| *p != 2)
                    .map(|(n, p, c, e)| (n.clone(), (p + shuffles as u8) % 3, *c, *e))
                    .collect();
                if !new.is_empty() && shuffles % 2 == 1 {
                    let k = rotate.index(new.len());
                    new.rotate_left(k);
                }
                for (n, (p, c, e)) in extra {
                    if !new.iter().any(|r| r.0 == n) {
                        new.push((n, p, c, e));
                    }
                }
                (old, new)
            })
    }

    proptest::proptest! {
        /// Against an oracle that looks every name up by a linear search.
        #[test]
        fn diff_matches_a_lookup_by_name((old, new) in old_and_new()) {
            let find = |rows: &[Row], name: &str| rows.iter().find(|r| r.0 == name && r.3).cloned();
            let mut expected = Diff::default();
            for (name, payload, cron, enabled) in &new {
                if !enabled {
                    continue;
                }
                match find(&old, name) {
                    None => expected.added.push(name.clone()),
                    Some((_, _, c, _)) if c != *cron => expected.rescheduled.push(name.clone()),
                    Some((_, p, _, _)) if p != *payload => expected.updated.push(name.clone()),
                    Some(_) => {}
                }
            }
            for (name, _, _, enabled) in &old {
                if *enabled && find(&new, name).is_none() {
                    expected.removed.push(name.clone());
                }
            }
            proptest::prop_assert_eq!(Diff::between(&rows(&old), &rows(&new)), expected);
        }
    }

    /// Jobs that swapped places are paired by name, not by position.
    #[test]
    fn moved_jobs_are_paired_by_name() {
        let old = schedule(&[
            ("x", "run x", "0 * * * *", true),
            ("y", "run y", "5 * * * *", true),
            ("z", "run z", "9 * * * *", true),
        ]);
        let new = schedule(&[
            ("y", "run y", "5 * * * *", true),
            ("x", "run x", "0 * * * *", true),
            ("z", "run z --v2", "9 * * * *", true),
        ]);
        let diff = Diff::between(&old, &new);
        assert_eq!(diff.updated, ["z"]);
        assert!(diff.added.is_empty() && diff.rescheduled.is_empty() && diff.removed.is_empty());
    }
}
