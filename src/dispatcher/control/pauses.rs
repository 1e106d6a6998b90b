//! Pause application: the tick loop's side of the pauses. A minute's paused slots are held back,
//! and when a pause ends its paused slots are sent as the job's catch-up rule says.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::follower::ControlFollower;
use super::table::PauseTable;
use crate::clock::Minute;
use crate::dispatcher::catchup::{admit, window_minutes};
use crate::dispatcher::scheduler::{Dispatch, Scheduler};
use crate::obs::terminal::escape_controls;
use crate::schedule::JobSpec;
use crate::schedule::When;
use crate::wire::control::ControlRecord;
use crate::wire::{partition_for, slot_text};

/// The paused slots of `spec` (compiled as `expr`) that the end of `record`'s interval sends,
/// handed out at minute `now`: every slot `s` of the job with `record.since <= s < end`, where
/// [`admit`] says so (the job's catch-up rule and window, as for slots missed in downtime), in
/// time order. None with `dropMissed`.
pub fn paused_slots_sent(
    spec: &JobSpec,
    expr: &When,
    record: &ControlRecord,
    end: DateTime<Utc>,
    now: Minute,
) -> Vec<DateTime<Utc>> {
    if record.drop_missed {
        return Vec::new();
    }
    let window = window_minutes(spec);
    // No slot older than the window is sent: start the walk there.
    let oldest = Minute(now.0.saturating_sub(window))
        .start()
        .unwrap_or(record.since)
        .max(record.since);
    let mut slots = Vec::new();
    let mut next = expr.next_after(oldest - chrono::Duration::seconds(1));
    while let Some(slot) = next.filter(|s| *s < end) {
        let after = expr.next_after(slot);
        if admit(
            spec.catchup,
            window,
            Minute::containing(slot),
            after.map(Minute::containing),
            now,
        )
        .is_ok()
        {
            slots.push(slot);
        }
        next = after;
    }
    slots
}

/// The tick loop's side of the pauses: the table as of the last tick, and catch-ups owed for
/// interval ends it learnt of only after handing out their minute.
#[derive(Debug)]
pub struct Pauses {
    follower: ControlFollower,
    version: u64,
    table: Arc<PauseTable>,
    /// (shard, record, end of the walk): sent with the shard's next minute.
    late: Vec<(u32, ControlRecord, DateTime<Utc>)>,
    /// Records of names that are no job of the schedule: see [`Pauses::with_shard_count`].
    strangers: Strangers,
}

/// The records whose key is no job of the schedule, found by the owner of the key's shard (only it
/// knows that shard's jobs; the key's shard is `murmur2(key) mod shards`, as a job's). Such a record
/// pauses nothing (only jobs of the schedule are looked up); it is logged once per record and
/// counted, so a typo (or a forged record) is seen by exactly one member.
#[derive(Debug, Default)]
struct Strangers {
    /// The state topic's partition count; `None`: not in a group, no check.
    shards: Option<u32>,
    /// Per shard: the table version and jobs last checked (the scheduler's schedule and its
    /// edit count: an upsert or remove changes the jobs under the same schedule).
    checked: BTreeMap<u32, (u64, (usize, u64))>,
    /// (key, at) of the records logged, of the table in use.
    logged: BTreeSet<(String, DateTime<Utc>)>,
    /// How many were found.
    count: u64,
}

/// What [`Pauses::apply_minute`] did to one shard's minute.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PauseEffect {
    /// Slots held back as paused.
    pub paused: u64,
    /// Paused slots sent at the end of their interval (appended to the minute's dispatches).
    pub resumed: u64,
    /// Those, per slot: producers settle a record by its slot, so the lease and the slot ledger
    /// count them there, not in the minute handed out.
    pub late_slots: Vec<(Minute, u64)>,
}

impl Pauses {
    /// The pauses `follower` reads, taken at the first [`refresh`](Self::refresh).
    pub fn new(follower: ControlFollower) -> Pauses {
        Pauses {
            follower,
            // No table has this version: the first refresh takes the follower's.
            version: u64::MAX,
            table: Arc::new(PauseTable::default()),
            late: Vec::new(),
            strangers: Strangers::default(),
        }
    }

    /// Checks each record's key against the jobs of the shards this member owns, the group having
    /// `shards` shards: a record of a name that is no job of the schedule is logged once as
    /// `control record of a job not in the schedule` and counted ([`Pauses::strangers`]). It is
    /// kept (`cronq pause --force` writes one before the job is added) but pauses nothing.
    pub fn with_shard_count(mut self, shards: u32) -> Pauses {
        self.strangers.shards = Some(shards.max(1));
        self
    }

    /// How many records of names that are no job of the schedule were found.
    pub fn strangers(&self) -> u64 {
        self.strangers.count
    }

    /// [`with_shard_count`](Self::with_shard_count)'s check of `shard`, when the table or the
    /// shard's schedule changed since the last one.
    fn check_keys(&mut self, shard: u32, scheduler: &Scheduler) {
        let Some(shards) = self.strangers.shards else {
            return;
        };
        let schedule = (
            Arc::as_ptr(scheduler.schedule()) as usize,
            scheduler.edit_count(),
        );
        if self.strangers.checked.get(&shard) == Some(&(self.version, schedule)) {
            return;
        }
        self.strangers
            .checked
            .insert(shard, (self.version, schedule));
        let table = &self.table;
        self.strangers
            .logged
            .retain(|(key, at)| table.get(key).is_some_and(|r| r.at == *at));
        let mut names: Option<BTreeSet<&str>> = None;
        for record in table.records() {
            let Some(job) = record.job.as_deref() else {
                continue;
            };
            if partition_for(job.as_bytes(), shards as i32) as u32 != shard {
                continue;
            }
            let names = names.get_or_insert_with(|| {
                scheduler
                    .jobs()
                    .map(|(spec, _)| spec.name.as_str())
                    .collect()
            });
            if names.contains(job) || !self.strangers.logged.insert((job.to_string(), record.at)) {
                continue;
            }
            self.strangers.count += 1;
            warn!(
                message = "control record of a job not in the schedule: it pauses nothing",
                job = escape_controls(job).as_str(),
                shard,
                paused = record.paused,
                by = %escape_controls(&record.by),
                at = %slot_text(record.at),
                strangers = self.strangers.count,
            );
        }
    }

    /// The table in use.
    pub fn table(&self) -> &Arc<PauseTable> {
        &self.table
    }

    /// Takes the follower's latest table, if it changed. An interval end learnt of after its minute
    /// was handed out (a resume written just before a minute boundary, say) is owed by the shards
    /// past it: their next minute sends its paused slots, up to the end of the minute they
    /// processed. Returns whether the table changed.
    pub fn refresh(&mut self, processed: impl Iterator<Item = (u32, Minute)>) -> bool {
        if self.follower.version() == self.version {
            return false;
        }
        let (version, table) = self.follower.table();
        let processed: Vec<(u32, Minute)> = processed.collect();
        // Owed by shards given up since: their next owner decides from the records.
        self.late
            .retain(|(shard, _, _)| processed.iter().any(|(s, _)| s == shard));
        let changed: Vec<&ControlRecord> = table
            .records()
            .filter(|r| self.table.get(r.key()) != Some(*r))
            .filter(|r| r.ends_in().is_some())
            .collect();
        for &(shard, done) in &processed {
            for r in &changed {
                if r.ends_in().is_some_and(|end| end <= done) {
                    let walk_end = done.next().start().unwrap_or(r.since);
                    self.late.push((shard, (*r).clone(), walk_end));
                }
            }
        }
        self.version = version;
        self.table = table;
        true
    }

    /// After `scheduler` (shard `shard`) appended minute `minute`'s due jobs to `out[start..]`:
    /// takes the paused ones out, and appends the paused slots whose interval ends with this
    /// minute (or ended unnoticed), as the jobs' catch-up rules say at `now` (the minute against
    /// which slots count as missed). Keeps `out[start..]` in dispatch order.
    pub fn apply_minute(
        &mut self,
        shard: u32,
        minute: Minute,
        now: Minute,
        scheduler: &Scheduler,
        out: &mut Vec<Dispatch>,
        start: usize,
    ) -> PauseEffect {
        let mut effect = PauseEffect::default();
        self.check_keys(shard, scheduler);
        let Some(slot) = minute.start() else {
            return effect;
        };
        let table = &self.table;
        if table.covers_any_from(slot) {
            // Only the shard's part: what is before `start` is other shards', decided already.
            let mut kept = start;
            for i in start..out.len() {
                if table
                    .pausing(&out[i].spec.name, out[i].scheduled_at)
                    .is_none()
                {
                    out.swap(kept, i);
                    kept += 1;
                }
            }
            effect.paused = (out.len() - kept) as u64;
            out.truncate(kept);
        }
        let mut ends: Vec<(ControlRecord, DateTime<Utc>)> = table
            .records()
            .filter(|r| r.ends_in() == Some(minute))
            .filter_map(|r| r.until.map(|u| (r.clone(), u)))
            .collect();
        let mut i = 0;
        while i < self.late.len() {
            if self.late[i].0 == shard {
                let (_, r, end) = self.late.swap_remove(i);
                ends.push((r, end));
            } else {
                i += 1;
            }
        }
        if ends.is_empty() {
            return effect;
        }
        let at = now.max(minute);
        let appended = out.len();
        for (record, end) in &ends {
            let mut sent = 0;
            for (spec, expr) in scheduler.jobs() {
                if !spec.enabled || record.job.as_ref().is_some_and(|j| *j != spec.name) {
                    continue;
                }
                // Still paused by another record: that one's end decides.
                if table.pausing(&spec.name, slot).is_some() {
                    continue;
                }
                for scheduled_at in paused_slots_sent(spec, expr, record, *end, at) {
                    out.push(Dispatch {
                        spec: Arc::clone(spec).into(),
                        scheduled_at,
                        lease: None,
                    });
                    sent += 1;
                }
            }
            let reached = record
                .job
                .as_ref()
                .is_none_or(|job| scheduler.job(job).is_some());
            if reached {
                info!(
                    message = if record.paused { "pause ended (--until reached)" } else { "pause ended (resumed)" },
                    job = record.job.as_deref().unwrap_or("--all"),
                    shard,
                    paused_since = %slot_text(record.since),
                    drop_missed = record.drop_missed,
                    paused_slots_sent = sent,
                );
            }
            effect.resumed += sent;
        }
        for d in &out[appended..] {
            let slot = Minute::containing(d.scheduled_at);
            match effect.late_slots.iter_mut().find(|(m, _)| *m == slot) {
                Some((_, n)) => *n += 1,
                None => effect.late_slots.push((slot, 1)),
            }
        }
        if out.len() > appended {
            // The shard's part in dispatch order, a job's paused slots before its live one.
            out[start..].sort_by(|a, b| {
                (
                    std::cmp::Reverse(a.spec.priority),
                    &a.spec.name,
                    a.scheduled_at,
                )
                    .cmp(&(
                        std::cmp::Reverse(b.spec.priority),
                        &b.spec.name,
                        b.scheduled_at,
                    ))
            });
        }
        effect
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::super::testing::{at, pause, resume, schedule};
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::dispatcher::tick_loop::TickLoop;
    use crate::schedule::Schedule;
    use crate::wire::control::ALL_KEY;

    /// A record of a name that is no job of the schedule is logged once (by the owner of its
    /// shard), counted, and pauses nothing; a job of the schedule is no stranger.
    #[test]
    fn a_record_of_a_job_not_in_the_schedule_is_counted_once_by_its_shards_owner() {
        let scheduler = Scheduler::new(
            schedule(r#"{"jobs":[{"jobName":"a","job":"x","cronTime":"* * * * *"}]}"#),
            Minute::containing(at(0, 0)),
        );
        let follower = ControlFollower::manual();
        let mut table = PauseTable::default();
        table.apply("a", Some(pause(Some("a"), at(0, 0), None)));
        table.apply("typo", Some(pause(Some("typo"), at(0, 0), None)));
        follower.publish(table.clone());
        let mut pauses = Pauses::new(follower.clone()).with_shard_count(2);
        pauses.refresh(std::iter::empty());
        let typo_shard = partition_for(b"typo", 2) as u32;
        let mut out = Vec::new();
        for m in 1..=3 {
            for shard in 0..2 {
                let minute = Minute::containing(at(m, 0));
                pauses.apply_minute(shard, minute, minute, &scheduler, &mut out, 0);
            }
        }
        assert_eq!(pauses.strangers(), 1, "one record, logged once");
        // A new record of the same name is another one; the other shard never counts it.
        table.apply("typo", Some(pause(Some("typo"), at(5, 0), None)));
        follower.publish(table);
        pauses.refresh(std::iter::empty());
        let minute = Minute::containing(at(6, 0));
        pauses.apply_minute(1 - typo_shard, minute, minute, &scheduler, &mut out, 0);
        assert_eq!(pauses.strangers(), 1);
        pauses.apply_minute(typo_shard, minute, minute, &scheduler, &mut out, 0);
        assert_eq!(pauses.strangers(), 2);
        // Without a shard count (no group) nothing is checked.
        let mut alone = Pauses::new(follower);
        alone.refresh(std::iter::empty());
        alone.apply_minute(0, minute, minute, &scheduler, &mut out, 0);
        assert_eq!(alone.strangers(), 0);
    }

    /// Pauses see the jobs in force, not the schedule the scheduler was built from: a job an edit
    /// took out is a stranger from the next minute, and a job an edit put in is no stranger and
    /// gets its paused slots when its pause ends.
    #[test]
    fn pauses_see_the_jobs_that_edits_put_in_and_take_out() {
        let mut scheduler = Scheduler::new(
            schedule(r#"{"jobs":[{"jobName":"a","job":"x","cronTime":"* * * * *"}]}"#),
            Minute::containing(at(0, 0)),
        );
        let follower = ControlFollower::manual();
        let mut table = PauseTable::default();
        table.apply("a", Some(pause(Some("a"), at(0, 0), None)));
        let p = pause(Some("new"), at(0, 30), None);
        table.apply("new", Some(p.clone()));
        follower.publish(table.clone());
        let mut pauses = Pauses::new(follower.clone()).with_shard_count(1);
        pauses.refresh(std::iter::empty());
        let mut out = Vec::new();
        let minute = Minute::containing(at(1, 0));
        pauses.apply_minute(0, minute, minute, &scheduler, &mut out, 0);
        assert_eq!(pauses.strangers(), 1, "`new` is no job yet");
        let new = schedule(r#"{"jobs":[{"jobName":"new","job":"y","cronTime":"* * * * *"}]}"#)
            .jobs
            .remove(0);
        scheduler.upsert(new);
        assert!(scheduler.remove("a"));
        let minute = Minute::containing(at(2, 0));
        pauses.apply_minute(0, minute, minute, &scheduler, &mut out, 0);
        assert_eq!(pauses.strangers(), 2, "`a` is no job any more");
        let r = resume(&p, at(3, 20), false);
        table.apply("new", Some(r.clone()));
        follower.publish(table);
        pauses.refresh(std::iter::empty());
        let minute = r.ends_in().unwrap();
        out.clear();
        let effect = pauses.apply_minute(0, minute, minute, &scheduler, &mut out, 0);
        assert_eq!(effect.resumed, 3, "the paused slots 10:01, 10:02, 10:03");
        assert!(out
            .iter()
            .all(|d| d.spec.name == "new" && d.spec.job == "y"));
        assert_eq!(pauses.strangers(), 2);
    }

    /// The slots a pause's end sends, against a walk written out by hand: every-5-minutes job,
    /// paused from 10:02:30 to 10:41:00, handed out at 10:41.
    #[test]
    fn a_pauses_end_sends_what_the_jobs_catch_up_rule_says() {
        let job = |rule: &str, window: &str| {
            schedule(&format!(
                r#"{{"jobs":[{{"jobName":"j","job":"x","cronTime":"*/5 * * * *","catchup":"{rule}","catchupWindow":"{window}"}}]}}"#
            ))
        };
        let p = pause(Some("j"), at(2, 30), None);
        let r = resume(&p, at(41, 0), false);
        let end = r.until.unwrap();
        let now = r.ends_in().unwrap();
        let sent = |s: &Schedule, record: &ControlRecord| -> Vec<i64> {
            let j = &s.jobs[0];
            paused_slots_sent(&j.spec, &j.expr, record, end, now)
                .into_iter()
                .map(|t| (t - at(0, 0)).num_minutes())
                .collect()
        };
        assert_eq!(sent(&job("all", "1h"), &r), [5, 10, 15, 20, 25, 30, 35, 40]);
        // A 15-minute window counts back from 10:41: 10:26 and later.
        assert_eq!(sent(&job("all", "15m"), &r), [30, 35, 40]);
        assert_eq!(sent(&job("latest", "1h"), &r), [40]);
        assert_eq!(sent(&job("none", "1h"), &r), Vec::<i64>::new());
        let dropped = resume(&p, at(41, 0), true);
        assert_eq!(sent(&job("all", "1h"), &dropped), Vec::<i64>::new());
    }

    /// One tick loop on a manual clock, minute by minute: a paused job's slots are held back (the
    /// other job's are not), its pause's end sends the paused slots under its rule, `--all` stops
    /// everything, and `--until` ends a pause by itself.
    #[tokio::test]
    async fn a_tick_loop_holds_back_paused_slots_and_sends_them_when_the_pause_ends() {
        let s = schedule(
            r#"{"jobs":[
              {"jobName":"keep","job":"x","cronTime":"* * * * *"},
              {"jobName":"late","job":"x","cronTime":"* * * * *"},
              {"jobName":"drop","job":"x","cronTime":"* * * * *","catchup":"none"}
            ]}"#,
        );
        let clock = Arc::new(ManualClock::new(at(0, 1)));
        let scheduler = Scheduler::new(s, Minute::containing(at(0, 0)));
        let (tx, mut rx) = mpsc::channel(1000);
        let follower = ControlFollower::manual();
        let mut tick_loop = TickLoop::new(clock.clone() as Arc<dyn Clock>, scheduler, None, tx)
            .with_pauses(Pauses::new(follower.clone()));
        let mut table = PauseTable::default();
        let mut sent: Vec<(String, i64)> = Vec::new();
        let mut paused = 0;
        let run_to = |clock: &ManualClock, m: i64, s: i64| {
            clock.set(at(m, s));
            async {}
        };
        // What the loop sent so far: (job, minute after 10:00).
        let step = |_: &mut TickLoop, rx: &mut mpsc::Receiver<Dispatch>| {
            let mut got = Vec::new();
            while let Ok(d) = rx.try_recv() {
                got.push((
                    d.spec.name.clone(),
                    (d.scheduled_at - at(0, 0)).num_minutes(),
                ));
            }
            got
        };
        for m in 1..=2 {
            run_to(&clock, m, 1).await;
            paused += tick_loop.tick().await.unwrap().paused;
        }
        // 10:02:30: "late" and "drop" paused.
        let late = pause(Some("late"), at(2, 30), None);
        let drop = pause(Some("drop"), at(2, 30), None);
        table.apply("late", Some(late.clone()));
        table.apply("drop", Some(drop.clone()));
        follower.publish(table.clone());
        for m in 3..=5 {
            run_to(&clock, m, 1).await;
            paused += tick_loop.tick().await.unwrap().paused;
        }
        // 10:05:20: both resumed; minute 6 sends "late"'s paused 3, 4, 5 (rule all), none of
        // "drop"'s (rule none).
        table.apply("late", Some(resume(&late, at(5, 20), false)));
        table.apply("drop", Some(resume(&drop, at(5, 20), false)));
        follower.publish(table.clone());
        run_to(&clock, 6, 1).await;
        let report = tick_loop.tick().await.unwrap();
        assert_eq!(report.resumed, 3);
        sent.extend(step(&mut tick_loop, &mut rx));
        assert_eq!(paused, 6, "two jobs, minutes 3, 4, 5");
        let of = |sent: &[(String, i64)], job: &str| -> Vec<i64> {
            sent.iter()
                .filter(|(j, _)| j == job)
                .map(|(_, m)| *m)
                .collect()
        };
        assert_eq!(of(&sent, "keep"), [1, 2, 3, 4, 5, 6]);
        assert_eq!(of(&sent, "late"), [1, 2, 3, 4, 5, 6]);
        assert_eq!(of(&sent, "drop"), [1, 2, 6]);

        // 10:06:40: --all until 10:09:00; minutes 7, 8 held back for every job, 9 runs, and
        // the expiry sends the paused slots of the jobs whose rule says so.
        sent.clear();
        let mut all = pause(None, at(6, 40), Some(at(9, 0)));
        all.drop_missed = false;
        table.apply(ALL_KEY, Some(all));
        follower.publish(table.clone());
        let mut held = 0;
        for m in 7..=9 {
            run_to(&clock, m, 1).await;
            held += tick_loop.tick().await.unwrap().paused;
        }
        sent.extend(step(&mut tick_loop, &mut rx));
        assert_eq!(held, 6, "three jobs, minutes 7 and 8");
        assert_eq!(of(&sent, "keep"), [7, 8, 9]);
        assert_eq!(of(&sent, "late"), [7, 8, 9]);
        assert_eq!(of(&sent, "drop"), [9]);
    }

    /// The paused slots a pause's end sends are counted at their own slot, where producers settle
    /// them: the shard's cursor stays before them until they are acked, then moves on to the
    /// minute handed out.
    #[tokio::test]
    async fn the_cursor_waits_for_the_paused_slots_sent_late_then_moves_on() {
        use crate::dispatcher::cursor::Lease;
        use crate::dispatcher::tick_loop::ShardRun;
        let s = schedule(r#"{"jobs":[{"jobName":"a","job":"x","cronTime":"* * * * *"}]}"#);
        let clock = Arc::new(ManualClock::new(at(0, 1)));
        let start = Minute::containing(at(0, 0));
        let (tx, mut rx) = mpsc::channel(1000);
        let follower = ControlFollower::manual();
        let mut tick_loop = TickLoop::without_shards(clock.clone() as Arc<dyn Clock>, None, tx)
            .with_pauses(Pauses::new(follower.clone()));
        let lease = Lease::new(0, start);
        tick_loop.insert_shard(
            0,
            ShardRun {
                scheduler: Scheduler::new(s, start),
                lease: Some(Arc::clone(&lease)),
            },
        );
        // The producer's side: settle every record by its slot.
        let settle = |rx: &mut mpsc::Receiver<Dispatch>| {
            let mut slots = Vec::new();
            while let Ok(d) = rx.try_recv() {
                slots.push(Minute::containing(d.scheduled_at));
            }
            slots
        };
        let p = pause(Some("a"), at(1, 30), None);
        let mut table = PauseTable::default();
        table.apply("a", Some(p.clone()));
        follower.publish(table.clone());
        for m in 1..=3 {
            clock.set(at(m, 1));
            tick_loop.tick().await.unwrap();
        }
        for slot in settle(&mut rx) {
            lease.settle(slot, 1);
        }
        assert_eq!(lease.cursor(), Minute::containing(at(3, 0)));
        table.apply("a", Some(resume(&p, at(3, 30), false)));
        follower.publish(table);
        clock.set(at(4, 1));
        tick_loop.tick().await.unwrap();
        let sent = settle(&mut rx);
        assert_eq!(sent.len(), 3, "paused 2 and 3, live 4: {sent:?}");
        assert_eq!(lease.outstanding(), 3);
        assert_eq!(
            lease.cursor(),
            Minute::containing(at(1, 0)),
            "before the late slot 2"
        );
        for slot in sent {
            lease.settle(slot, 1);
        }
        assert_eq!(lease.outstanding(), 0);
        assert_eq!(lease.cursor(), Minute::containing(at(4, 0)));
    }

    /// A resume read only after the minute of its end was handed out (written just before the
    /// boundary): the slots that minute held back are sent with the next one.
    #[tokio::test]
    async fn a_resume_learnt_late_still_sends_the_paused_slots() {
        let s = schedule(r#"{"jobs":[{"jobName":"a","job":"x","cronTime":"* * * * *"}]}"#);
        let clock = Arc::new(ManualClock::new(at(0, 1)));
        let scheduler = Scheduler::new(s, Minute::containing(at(0, 0)));
        let (tx, mut rx) = mpsc::channel(1000);
        let follower = ControlFollower::manual();
        let mut tick_loop = TickLoop::new(clock.clone() as Arc<dyn Clock>, scheduler, None, tx)
            .with_pauses(Pauses::new(follower.clone()));
        let p = pause(Some("a"), at(0, 30), None);
        let mut table = PauseTable::default();
        table.apply("a", Some(p.clone()));
        follower.publish(table.clone());
        for m in 1..=4 {
            clock.set(at(m, 1));
            tick_loop.tick().await.unwrap();
        }
        // Resumed at 10:03:59.9 (the record says so) but read at 10:04:01, after minute 4 went.
        table.apply(
            "a",
            Some(resume(
                &p,
                at(3, 59) + chrono::Duration::milliseconds(900),
                false,
            )),
        );
        follower.publish(table);
        clock.set(at(5, 1));
        tick_loop.tick().await.unwrap();
        let mut got: Vec<i64> = Vec::new();
        while let Ok(d) = rx.try_recv() {
            got.push((d.scheduled_at - at(0, 0)).num_minutes());
        }
        got.sort();
        // 1-3 paused, 4 held back before the resume was read, 5 live.
        assert_eq!(got, [1, 2, 3, 4, 5]);
    }
}
