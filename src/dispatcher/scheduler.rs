//! The scheduling state the tick loop drives: every enabled job in the timing wheel, keyed by a dense
//! [`JobId`]. Pure and synchronous (no IO, no tokio, no wall clock), so it is tested minute by minute.
//!
//! Invariant: every enabled job that can still fire sits in the wheel at its next instant strictly
//! after [`Scheduler::processed`], the last minute whose due jobs were handed out. Everything that
//! moves a job (a fire, a reload) computes "next after `processed`", which is why a reload can
//! neither fire a job twice for one slot nor skip one.

use std::borrow::Borrow;
use std::cmp::Reverse;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::clock::Minute;
use crate::cron::CronExpr;
use crate::schedule::diff::Diff;
use crate::schedule::{Job, JobSpec, Schedule};
use crate::wheel::{JobId, Wheel};

/// One due job for one slot: what goes to the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    /// The job's settings at the time it fired.
    pub spec: Arc<JobSpec>,
    /// The slot: the instant the job was due.
    pub scheduled_at: DateTime<Utc>,
}

impl Dispatch {
    /// `jobName@scheduledAt`: unique per slot, the idempotency key consumers dedupe on.
    pub fn dispatch_id(&self) -> String {
        crate::message::dispatch_id(
            &self.spec.name,
            &crate::message::slot_text(self.scheduled_at),
        )
    }
}

/// A job's name as a key of the name index, without a copy of the name: the settings are shared
/// anyway. Copies (and the wider map buckets they need) cost 34 MB of resident memory with a
/// million jobs (`benches/scale.rs`). Hashes and compares as the name, so the index is looked up
/// with a `&str`.
#[derive(Debug, Clone)]
struct NameKey(Arc<JobSpec>);

impl Hash for NameKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.name.as_str().hash(state);
    }
}

impl PartialEq for NameKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.name == other.0.name
    }
}

impl Eq for NameKey {}

impl Borrow<str> for NameKey {
    fn borrow(&self) -> &str {
        &self.0.name
    }
}

/// The jobs, the wheel, and how far time has been processed.
#[derive(Debug)]
pub struct Scheduler {
    wheel: Wheel,
    /// Indexed by `JobId`. A job whose expression has no further instant stays here but not in
    /// the wheel.
    entries: Vec<Option<Job>>,
    free: Vec<JobId>,
    by_name: HashMap<NameKey, JobId>,
    schedule: Schedule,
    processed: Minute,
    due: Vec<(JobId, Minute)>,
    /// Within one `run_minute`: the next minute of each compiled expression seen so far, keyed by
    /// the expression's address (see `run_minute`).
    next_by_expr: HashMap<usize, Option<Minute>>,
}

/// Where a dispatch goes in its minute's batch: highest priority first, then by name.
///
/// Comparing names means following two pointers per comparison, which for a minute with a million
/// due jobs made the sort most of the minute's cost (2 s of 2.4 s). The key carries the name's first
/// 16 bytes, zero-padded and read big-endian, so comparing keys orders names exactly as comparing
/// the names would, except that equal prefixes tie; only ties fall back to the full names.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct DispatchOrder {
    priority: Reverse<i32>,
    name_prefix: u128,
}

impl DispatchOrder {
    fn of(spec: &JobSpec) -> DispatchOrder {
        let mut prefix = [0u8; 16];
        let len = spec.name.len().min(prefix.len());
        prefix[..len].copy_from_slice(&spec.name.as_bytes()[..len]);
        DispatchOrder {
            priority: Reverse(spec.priority),
            name_prefix: u128::from_be_bytes(prefix),
        }
    }
}

/// The first minute strictly after minute `after` at which `expr` fires.
fn next_minute(expr: &CronExpr, after: Minute) -> Option<Minute> {
    // `next_after` of the minute's first second: strictly after the whole minute `after`.
    expr.next_after(after.start()?).map(minute_of)
}

/// The minute a cron instant falls in. Cron instants are whole minutes, so this is exact.
fn minute_of(at: DateTime<Utc>) -> Minute {
    Minute::containing(at)
}

impl Scheduler {
    /// Schedules every enabled job of `schedule` at its next instant after minute `processed`.
    pub fn new(schedule: Schedule, processed: Minute) -> Scheduler {
        let mut s = Scheduler {
            wheel: Wheel::new(processed),
            entries: Vec::with_capacity(schedule.jobs.len()),
            free: Vec::new(),
            by_name: HashMap::with_capacity(schedule.jobs.len()),
            schedule: Schedule::default(),
            processed,
            due: Vec::new(),
            next_by_expr: HashMap::new(),
        };
        for job in schedule.jobs.iter().filter(|j| j.spec.enabled) {
            s.add(job.clone());
        }
        s.schedule = schedule;
        s
    }

    /// The last minute whose due jobs were handed out.
    pub fn processed(&self) -> Minute {
        self.processed
    }

    /// The schedule in force.
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Number of jobs in the wheel.
    pub fn scheduled(&self) -> usize {
        self.wheel.len()
    }

    /// When `name` fires next, if it is scheduled.
    pub fn next_run(&self, name: &str) -> Option<Minute> {
        let id = self.by_name.get(name)?;
        self.wheel.scheduled_at(*id)
    }

    /// The earliest minute at which something may be due.
    pub fn next_due(&self) -> Option<Minute> {
        self.wheel.next_due()
    }

    fn add(&mut self, job: Job) {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.entries.push(None);
                JobId((self.entries.len() - 1) as u32)
            }
        };
        self.by_name.insert(NameKey(Arc::clone(&job.spec)), id);
        Self::schedule_next(&mut self.wheel, id, &job, self.processed);
        self.entries[id.0 as usize] = Some(job);
    }

    /// Installs a new version of the job `id` (same name), re-keying the name index so that it does
    /// not keep the old settings alive.
    fn replace_entry(&mut self, id: JobId, job: Job) {
        self.by_name.remove(job.spec.name.as_str());
        self.by_name.insert(NameKey(Arc::clone(&job.spec)), id);
        self.entries[id.0 as usize] = Some(job);
    }

    /// Puts `id` in the wheel at its first instant after minute `after`.
    ///
    /// Takes the wheel rather than `self` so that callers can pass a job borrowed from
    /// `self.entries` instead of cloning it (two reference-count round trips per fire).
    fn schedule_next(wheel: &mut Wheel, id: JobId, job: &Job, after: Minute) {
        Self::schedule_at(wheel, id, next_minute(&job.expr, after), after);
    }

    /// Puts `id` in the wheel at `next`, computed by [`next_minute`] from minute `after`.
    fn schedule_at(wheel: &mut Wheel, id: JobId, next: Option<Minute>, after: Minute) {
        if let Some(at) = next {
            if let Err(e) = wheel.insert(id, at) {
                debug_assert!(false, "cron returned a time not after {after}: {e}");
            }
        }
    }

    /// Replaces the running schedule with `new`, applying the difference by `jobName`: added jobs
    /// are scheduled after [`processed`](Self::processed), removed ones leave the wheel, a changed
    /// `cronTime`/`timezone` reschedules, a payload-only change keeps the next run.
    pub fn apply(&mut self, new: Schedule) -> Diff {
        let diff = Diff::between(&self.schedule, &new);
        let by_new_name: HashMap<&str, &Job> = new
            .jobs
            .iter()
            .filter(|j| j.spec.enabled)
            .map(|j| (j.spec.name.as_str(), j))
            .collect();
        for name in &diff.removed {
            if let Some(id) = self.by_name.remove(name.as_str()) {
                self.wheel.remove(id);
                self.entries[id.0 as usize] = None;
                self.free.push(id);
            }
        }
        for name in &diff.rescheduled {
            if let (Some(&id), Some(job)) = (
                self.by_name.get(name.as_str()),
                by_new_name.get(name.as_str()),
            ) {
                self.wheel.remove(id);
                let job = (*job).clone();
                Self::schedule_next(&mut self.wheel, id, &job, self.processed);
                self.replace_entry(id, job);
            }
        }
        for name in &diff.updated {
            if let (Some(&id), Some(job)) = (
                self.by_name.get(name.as_str()),
                by_new_name.get(name.as_str()),
            ) {
                self.replace_entry(id, (*job).clone());
            }
        }
        for name in &diff.added {
            if let Some(job) = by_new_name.get(name.as_str()) {
                self.add((*job).clone());
            }
        }
        self.schedule = new;
        diff
    }

    /// Processes minute `minute` (which must be `processed + 1`): appends its due jobs to `out`,
    /// highest priority first, then by name, and reinserts each at its next instant.
    pub fn run_minute(&mut self, minute: Minute, out: &mut Vec<Dispatch>) {
        debug_assert_eq!(
            minute,
            self.processed.next(),
            "minutes are processed in order"
        );
        self.due.clear();
        self.wheel.advance(minute, &mut self.due);
        self.processed = minute;
        let Some(slot) = minute.start() else { return };
        let mut batch = Vec::with_capacity(self.due.len());
        // Jobs sharing a compiled expression (the loader compiles each distinct cronTime and zone
        // once) fire in the same minutes, so their next minute is the same: evaluate it once per
        // expression per minute. A minute's due jobs hold a handful of distinct expressions (all
        // the daily jobs due at 02:30 are `30 2 * * *`), so this removes most cron evaluations.
        // The entries keep every expression alive for the whole minute, so addresses are unique.
        self.next_by_expr.clear();
        for &(id, at) in &self.due {
            debug_assert_eq!(at, minute, "a job surfaced at the wrong minute");
            let Some(job) = self.entries.get(id.0 as usize).and_then(Option::as_ref) else {
                continue;
            };
            batch.push((
                DispatchOrder::of(&job.spec),
                Dispatch {
                    spec: Arc::clone(&job.spec),
                    scheduled_at: slot,
                },
            ));
            let expr = &job.expr;
            let next = *self
                .next_by_expr
                .entry(Arc::as_ptr(expr).addr())
                .or_insert_with(|| next_minute(expr, minute));
            Self::schedule_at(&mut self.wheel, id, next, minute);
        }
        batch.sort_unstable_by(|(a_order, a), (b_order, b)| {
            a_order
                .cmp(b_order)
                .then_with(|| a.spec.name.cmp(&b.spec.name))
        });
        out.extend(batch.into_iter().map(|(_, dispatch)| dispatch));
    }

    /// Skips every slot up to and including `until` without dispatching; returns how many job
    /// slots were skipped (counting stops at `cap` per job, so a month-long suspension of an
    /// every-minute job doesn't cost 43 200 cron evaluations just to count them).
    pub fn skip_until(&mut self, until: Minute, cap: u64) -> u64 {
        if until <= self.processed {
            return 0;
        }
        self.due.clear();
        self.wheel.advance(until, &mut self.due);
        self.processed = until;
        let mut skipped = 0;
        for &(id, at) in &self.due {
            let Some(job) = self.entries.get(id.0 as usize).and_then(Option::as_ref) else {
                continue;
            };
            skipped += 1;
            let mut cursor = at;
            let mut counted = 1;
            while counted < cap {
                match next_minute(&job.expr, cursor) {
                    Some(next) if next <= until => {
                        skipped += 1;
                        counted += 1;
                        cursor = next;
                    }
                    _ => break,
                }
            }
            Self::schedule_next(&mut self.wheel, id, job, until);
        }
        skipped
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use proptest::prelude::*;

    use super::*;
    use crate::schedule::{parse, LoadOptions};

    fn spec(priority: i32, name: &str) -> JobSpec {
        JobSpec {
            name: name.to_string(),
            priority,
            job: "run".into(),
            cron_time: "* * * * *".into(),
            timezone: chrono_tz::UTC,
            topic: None,
            enabled: true,
        }
    }

    /// Names longer than the key's 16-byte prefix, sharing it, and names that are prefixes of others:
    /// the batch still comes out by priority, then by the full name.
    #[test]
    fn a_minute_is_dispatched_by_priority_then_full_name() {
        let json = r#"{"jobs": [
          {"jobName":"report-region-eu-west-2","priority":1,"job":"a","cronTime":"0 12 * * *"},
          {"jobName":"report-region-eu-west-10","priority":1,"job":"b","cronTime":"0 12 * * *"},
          {"jobName":"report-region-eu","priority":1,"job":"c","cronTime":"0 12 * * *"},
          {"jobName":"report-region-eu-west","priority":1,"job":"d","cronTime":"0 12 * * *"},
          {"jobName":"zz-urgent","priority":7,"job":"e","cronTime":"0 12 * * *"},
          {"jobName":"report-region-eu-west-1","priority":1,"job":"f","cronTime":"0 12 * * *"}
        ]}"#;
        let schedule = parse(json.as_bytes(), Path::new("s.json"), LoadOptions::default()).unwrap();
        let noon = Minute::containing(
            chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 3, 2, 12, 0, 0).unwrap(),
        );
        let mut scheduler = Scheduler::new(schedule, Minute(noon.0 - 1));
        let mut out = Vec::new();
        scheduler.run_minute(noon, &mut out);
        let names: Vec<&str> = out.iter().map(|d| d.spec.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "zz-urgent",
                "report-region-eu",
                "report-region-eu-west",
                "report-region-eu-west-1",
                "report-region-eu-west-10",
                "report-region-eu-west-2",
            ]
        );
    }

    /// The name index is re-keyed on reload, so replaced settings are freed, not pinned by it.
    #[test]
    fn a_reload_does_not_keep_replaced_settings_alive() {
        let version = |payload: &str, cron: &str| {
            let json =
                format!(r#"{{"jobs": [{{"jobName":"a","job":"{payload}","cronTime":"{cron}"}}]}}"#);
            parse(json.as_bytes(), Path::new("s.json"), LoadOptions::default()).unwrap()
        };
        let first = version("v1", "*/5 * * * *");
        let v1 = Arc::clone(&first.jobs[0].spec);
        let mut scheduler = Scheduler::new(first, Minute(29_000_000));
        let second = version("v2", "*/5 * * * *");
        let v2 = Arc::clone(&second.jobs[0].spec);
        scheduler.apply(second);
        assert_eq!(
            Arc::strong_count(&v1),
            1,
            "payload change: v1 still referenced"
        );
        scheduler.apply(version("v2", "*/7 * * * *"));
        assert_eq!(Arc::strong_count(&v2), 1, "reschedule: v2 still referenced");
        assert!(scheduler.next_run("a").is_some());
    }

    proptest! {
        /// The key plus the tie-break orders exactly like (priority descending, name).
        #[test]
        fn dispatch_order_sorts_like_priority_then_name(
            jobs in prop::collection::vec((-1i32..2, "[ab\u{0}é]{0,20}"), 0..40)
        ) {
            let specs: Vec<JobSpec> = jobs.iter().map(|(p, n)| spec(*p, n)).collect();
            let mut by_key: Vec<&JobSpec> = specs.iter().collect();
            by_key.sort_by(|a, b| {
                DispatchOrder::of(a)
                    .cmp(&DispatchOrder::of(b))
                    .then_with(|| a.name.cmp(&b.name))
            });
            let mut expected: Vec<&JobSpec> = specs.iter().collect();
            expected.sort_by(|a, b| {
                (Reverse(a.priority), &a.name).cmp(&(Reverse(b.priority), &b.name))
            });
            let key = |v: Vec<&JobSpec>| v.iter().map(|s| (s.priority, s.name.clone())).collect::<Vec<_>>();
            prop_assert_eq!(key(by_key), key(expected));
        }
    }
}
