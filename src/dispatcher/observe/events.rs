//! What the parts of a running dispatcher report to its [`Observer`]: the schedule file and its
//! reloads, each minute handed out and settled, acks and produce errors, the group's assignments,
//! and once a tick a [`TickSnapshot`] of the tick loop.
//!
//! Every report of an observer that is off ([`Observer::disabled`]) returns at once; the ones on
//! the produce path (per batch) are inlined, so that with `--http off` they cost one branch.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;

use super::clock::rfc3339;
use super::metrics::{ErrorLabel, ReasonLabel, ResultLabel, ShardLabel, TopicCounter};
use super::status::{
    OwnedShard, RefusedWrite, Reload, ScheduleState, UnreadableCursor, UpcomingRun,
};
use super::{check, Mode, Observer, ProduceErrorKind, UPCOMING};
use crate::clock::Minute;
use crate::dispatcher::catchup::Skips;
use crate::dispatcher::control::PauseTable;
use crate::dispatcher::status::GroupView;
use crate::dispatcher::Scheduler;
use crate::schedule::LoadError;

/// What [`Observer::after_tick`] reads of the tick loop, handed over once a tick.
#[derive(Debug)]
pub struct TickSnapshot<'a> {
    /// Dispatches waiting in the queue to the sink.
    pub queue_depth: usize,
    /// Every owned shard, by shard number.
    pub shards: Vec<ShardSnapshot<'a>>,
}

/// One owned shard in a [`TickSnapshot`].
#[derive(Debug)]
pub struct ShardSnapshot<'a> {
    /// The shard.
    pub shard: u32,
    /// Its jobs in their wheel (the next runs are read from it once a minute).
    pub scheduler: &'a Scheduler,
    /// In a group: its lease's cursor (the last minute whose every dispatch was acked) and its
    /// dispatches not acked yet.
    pub lease: Option<(Minute, u64)>,
}

impl Observer {
    /// The schedule file at `path` (MD5 `md5`) was loaded at start.
    pub fn schedule_loaded(&self, path: &std::path::Path, md5: &str) {
        if !self.on {
            return;
        }
        self.health.set(
            check::SCHEDULE,
            true,
            format!("{} loaded (md5 {md5})", path.display()),
        );
        self.page().schedule = Some(ScheduleState {
            path: path.display().to_string(),
            md5: Some(md5.to_string()),
            loaded_at: Some(self.now_text()),
            last_reload: None,
        });
    }

    /// Topic mode: the schedule is the topic `topic`; `ok`: every owned shard's partition is read
    /// (`detail` says what, or why not).
    pub fn schedule_topic_read(&self, ok: bool, detail: impl Into<String>) {
        if self.on {
            self.health.set(check::SCHEDULE, ok, detail);
        }
    }

    /// A changed schedule file was loaded and swapped in.
    pub fn reload_ok(&self, md5: &str, took: Duration) {
        if !self.on {
            return;
        }
        self.metrics
            .reloads
            .get_or_create(&ResultLabel { result: "ok" })
            .inc();
        self.metrics.reload_seconds.observe(took.as_secs_f64());
        self.set_reload(Reload {
            at: self.now_text(),
            result: "ok",
            md5: Some(md5.to_string()),
            took_ms: Some(took.as_millis() as u64),
            problems: Vec::new(),
        });
    }

    /// A changed schedule file was rejected; the last good one stays in force.
    pub fn reload_rejected(&self, md5: &str, error: &LoadError) {
        if !self.on {
            return;
        }
        self.metrics
            .reloads
            .get_or_create(&ResultLabel { result: "rejected" })
            .inc();
        let problems = match error {
            LoadError::Invalid { problems, .. } => problems.iter().map(|p| p.to_string()).collect(),
            other => vec![other.to_string()],
        };
        self.set_reload(Reload {
            at: self.now_text(),
            result: "rejected",
            md5: Some(md5.to_string()),
            took_ms: None,
            problems,
        });
    }

    /// The schedule file became unreadable; the last good one stays in force.
    pub fn reload_vanished(&self, error: &std::io::Error) {
        if !self.on {
            return;
        }
        self.metrics
            .reloads
            .get_or_create(&ResultLabel { result: "vanished" })
            .inc();
        self.set_reload(Reload {
            at: self.now_text(),
            result: "vanished",
            md5: None,
            took_ms: None,
            problems: vec![format!("cannot read the file: {error}")],
        });
    }

    fn set_reload(&self, reload: Reload) {
        let mut page = self.page();
        if let Some(s) = page.schedule.as_mut() {
            if reload.result == "ok" {
                s.md5 = reload.md5.clone();
            }
            s.last_reload = Some(reload);
        }
    }

    /// `n` slots held back because their job is paused.
    pub fn paused_skipped(&self, n: u64) {
        if !self.on {
            return;
        }
        self.metrics
            .skipped
            .get_or_create(&ReasonLabel { reason: "paused" })
            .inc_by(n);
    }

    /// The control topic's records changed: the page lists the pauses in force from `table`.
    pub fn pauses_changed(&self, table: &Arc<PauseTable>) {
        if !self.on {
            return;
        }
        self.page().pauses = Some(Arc::clone(table));
    }

    /// Slots the catch-up rules left out this tick.
    pub fn skipped(&self, skips: &Skips) {
        if !self.on {
            return;
        }
        if skips.window > 0 {
            self.metrics
                .skipped
                .get_or_create(&ReasonLabel {
                    reason: "catchup_window",
                })
                .inc_by(skips.window);
        }
        if skips.rule > 0 {
            self.metrics
                .skipped
                .get_or_create(&ReasonLabel {
                    reason: "catchup_rule",
                })
                .inc_by(skips.rule);
        }
    }

    /// The loop handed out `minute` (due at `minute`'s start) `lag` after its boundary, with
    /// `dispatched` jobs.
    pub fn minute_handed_out(&self, minute: Minute, dispatched: u64, lag: Option<Duration>) {
        if !self.on {
            return;
        }
        if let Some(lag) = lag {
            self.metrics.tick_lag.set(lag.as_secs_f64());
        }
        let mut page = self.page();
        let row = page.minutes.entry(minute).or_default();
        row.dispatched += dispatched;
        while page.minutes.len() > 2 * super::HISTORY_MINUTES as usize {
            page.minutes.pop_first();
        }
    }

    /// Every dispatch of `minute` settled: `acked`, `failed`, skew max and mean in ms.
    pub fn minute_settled(
        &self,
        minute: Minute,
        acked: u64,
        failed: u64,
        max_ms: i64,
        mean_ms: i64,
    ) {
        if !self.on {
            return;
        }
        let mut page = self.page();
        if page
            .minutes
            .first_key_value()
            .is_some_and(|(first, _)| minute < *first)
            && page.minutes.len() >= 2 * super::HISTORY_MINUTES as usize
        {
            return;
        }
        let row = page.minutes.entry(minute).or_default();
        row.acked += acked;
        row.failed += failed;
        if acked > 0 {
            row.skew_max_ms = Some(row.skew_max_ms.unwrap_or(0).max(max_ms));
            row.skew_mean_ms = Some(mean_ms);
        }
    }

    /// `n` dispatches of one slot were acked `skew` after the slot's start.
    #[inline]
    pub fn acked(&self, skew: Duration, n: u64) {
        if self.on {
            self.metrics.skew.observe_n(skew.as_secs_f64(), n);
        }
    }

    /// The counter of dispatches delivered to `topic`: resolve once (per partition task), add
    /// per batch.
    #[inline]
    pub fn dispatched_to(&self, topic: &str) -> TopicCounter {
        if self.on {
            self.metrics.dispatched_to(topic)
        } else {
            TopicCounter::OFF
        }
    }

    /// A produce to `topic` failed as `kind` (`n` records or requests).
    #[inline]
    pub fn produce_error(&self, topic: &str, kind: ProduceErrorKind, n: u64) {
        if self.on {
            self.count_produce_error(topic, kind, n);
        }
    }

    fn count_produce_error(&self, topic: &str, kind: ProduceErrorKind, n: u64) {
        self.metrics
            .produce_errors
            .get_or_create(&ErrorLabel {
                topic: topic.to_string(),
                kind: kind.label(),
            })
            .inc_by(n);
    }

    /// The broker refuses writes to `topic`/`partition` for want of rights (`refusal`: its
    /// answer), or accepts them again (`None`). Called at each change, not at each attempt.
    pub fn write_refused(&self, topic: &str, partition: i32, refusal: Option<&str>) {
        if !self.on {
            return;
        }
        let key = (topic.to_string(), partition);
        let mut page = self.page();
        match refusal {
            Some(error) => {
                page.refused.entry(key).or_insert_with(|| RefusedWrite {
                    topic: topic.to_string(),
                    partition,
                    since: rfc3339(self.clock.now()),
                    error: error.to_string(),
                });
            }
            None => {
                page.refused.remove(&key);
            }
        }
    }

    /// Shard `shard` was taken over with cursor records that do not decode (`offsets`, newest
    /// first); `nothing_decoded`: none did, and it started after `start` (now minus the longest
    /// catch-up window of its jobs), else after its last readable cursor `start`.
    pub fn cursor_unreadable(
        &self,
        shard: u32,
        offsets: &[i64],
        nothing_decoded: bool,
        start: Minute,
    ) {
        if !self.on {
            return;
        }
        let entry = UnreadableCursor {
            shard,
            at: rfc3339(self.clock.now()),
            offsets: offsets.to_vec(),
            nothing_decoded,
            started_from: start.start().map(rfc3339).unwrap_or_default(),
        };
        self.page().unreadable.insert(shard, entry);
    }

    /// Each owned shard's place in the schedule topic `topic` (topic mode).
    pub fn schedule_topic(&self, topic: &str, shards: Vec<super::ShardTopicRow>) {
        if !self.on {
            return;
        }
        let mut page = self.page();
        let view = page.schedule_topic.get_or_insert_with(Default::default);
        view.topic = topic.to_string();
        view.shards = shards;
    }

    /// A schedule topic record failed the checks.
    pub fn schedule_record_rejected(&self, r: &crate::store::Rejected) {
        if !self.on {
            return;
        }
        self.metrics.schedule_rejected.inc();
        let at = rfc3339(self.clock.now());
        let mut page = self.page();
        let view = page.schedule_topic.get_or_insert_with(Default::default);
        if view.rejected.len() >= 20 {
            view.rejected.remove(0);
        }
        view.rejected.push(super::RejectedRecord {
            at,
            partition: r.partition,
            offset: r.offset,
            key: r.key.clone(),
            reason: r.reason.clone(),
        });
    }

    /// Schedule topic records reached the wheel `took` after their fetch.
    pub fn schedule_topic_applied(&self, took: Duration) {
        if self.on {
            self.metrics
                .schedule_topic_seconds
                .observe(took.as_secs_f64());
        }
    }

    /// The broker was reached (or not, with why).
    pub fn kafka_reachable(&self, ok: bool, detail: impl Into<String>) {
        if self.on {
            self.health.set(check::KAFKA, ok, detail);
        }
    }

    /// The group assigned `shards` of `total`.
    pub fn assigned(&self, shards: &[u32], total: u32) {
        if !self.on {
            return;
        }
        let detail = if shards.is_empty() {
            format!("assigned no shard of {total} (a standby while the others own them all)")
        } else {
            format!("owns shards {shards:?} of {total}")
        };
        self.health.set(check::SHARDS, true, detail);
        self.page().total_shards = Some(total);
    }

    /// The group session was lost: the shards may belong to another member now.
    pub fn session_lost(&self) {
        if !self.on {
            return;
        }
        self.health.set(
            check::SHARDS,
            false,
            "the group session expired; rejoining for a new assignment",
        );
    }

    /// A shard was taken over from its cursor.
    pub fn took_over(&self) {
        if self.on {
            self.metrics.takeovers.inc();
        }
    }

    /// The watchdog's read of the whole group.
    pub fn group_read(&self, view: GroupView) {
        if self.on {
            self.page().group = Some(view);
        }
    }

    /// Shutting down: not ready any more.
    pub fn stopping(&self) {
        if !self.on {
            return;
        }
        self.health.set(
            check::RUNNING,
            false,
            "shutting down: finishing the minute in progress and handing shards over",
        );
    }

    /// The delay queue's depth gauge (`cronq_delay_queue_depth`), which the delay task sets;
    /// `None` when the observer is off.
    pub fn delay_queue_gauge(&self) -> Option<Gauge> {
        self.on.then(|| self.metrics.delay_queue_depth.clone())
    }

    /// Once a tick, after it ran: the queue, the backlog (`undelivered`), the owned shards and
    /// their cursors, and once a minute the next runs.
    pub fn after_tick(&self, tick: &TickSnapshot<'_>, undelivered: u64) {
        if !self.on {
            return;
        }
        let m = &self.metrics;
        m.queue_depth.set(tick.queue_depth as i64);
        m.undelivered.set(undelivered as i64);
        let now = self.clock.now();
        let mut owned = Vec::with_capacity(tick.shards.len());
        let mut jobs = 0;
        let mut previous: BTreeSet<u32> = {
            let page = self.page();
            page.owned.iter().map(|s| s.shard).collect()
        };
        for run in &tick.shards {
            let shard = run.shard;
            jobs += run.scheduler.scheduled();
            previous.remove(&shard);
            if let Some((cursor, _)) = run.lease {
                let lag = cursor.next().start().map_or(0.0, |end| {
                    (now - end).num_milliseconds().max(0) as f64 / 1000.0
                });
                m.shard_cursor_lag
                    .get_or_create(&ShardLabel { shard })
                    .set(lag);
            }
            owned.push(OwnedShard {
                shard,
                cursor: run.lease.and_then(|(c, _)| c.start()).map(rfc3339),
                outstanding: run.lease.map_or(0, |(_, o)| o),
                jobs: run.scheduler.scheduled(),
            });
        }
        for gone in previous {
            m.shard_cursor_lag.remove(&ShardLabel { shard: gone });
        }
        if matches!(self.mode, Mode::Group { .. }) {
            m.shards_owned.set(owned.len() as i64);
        }
        m.schedule_jobs.set(jobs as i64);
        let processed = tick.shards.iter().map(|r| r.scheduler.processed()).max();
        let refresh = self.page().upcoming_for != processed;
        // Once a minute, off the request path: the first runs of each shard's wheel, merged.
        let upcoming = refresh.then(|| self.upcoming(tick));
        let mut page = self.page();
        page.owned = owned;
        if let Some(upcoming) = upcoming {
            page.upcoming = upcoming;
            page.upcoming_for = processed;
        }
    }

    fn upcoming(&self, tick: &TickSnapshot<'_>) -> Vec<UpcomingRun> {
        let mut runs: Vec<_> = tick
            .shards
            .iter()
            .flat_map(|run| run.scheduler.upcoming(UPCOMING))
            .collect();
        runs.sort_by(|(a_at, a), (b_at, b)| {
            (a_at, std::cmp::Reverse(a.priority), &a.name).cmp(&(
                b_at,
                std::cmp::Reverse(b.priority),
                &b.name,
            ))
        });
        runs.truncate(UPCOMING);
        runs.into_iter()
            .map(|(at, spec)| UpcomingRun {
                job_name: spec.name.clone(),
                at: at.start().map(rfc3339).unwrap_or_default(),
                topic: spec
                    .topic
                    .clone()
                    .unwrap_or_else(|| self.default_topic.clone()),
            })
            .collect()
    }

    fn now_text(&self) -> String {
        rfc3339(self.clock.now())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use chrono::{DateTime, TimeZone, Utc};

    use super::*;
    use crate::schedule::{parse, LoadOptions};

    fn scheduler(json: &str, at: DateTime<Utc>) -> Scheduler {
        let schedule =
            parse(json.as_bytes(), Path::new("s.json"), LoadOptions::default()).expect("schedule");
        Scheduler::new(schedule, Minute::containing(at))
    }

    /// A schedule whose jobs share some expressions (groups) and spread over minutes, hours, days
    /// and months (every level of the wheel).
    fn mixed_jobs(n: usize) -> String {
        let crons = [
            "* * * * *",
            "*/7 * * * *",
            "13 * * * *",
            "45 3 * * *",
            "0 0 1 * *",
            "30 12 * * 1",
            "0 0 29 2 *",
            "59 23 31 12 *",
        ];
        let jobs: Vec<String> = (0..n)
            .map(|i| {
                let cron = if i % 3 == 0 {
                    format!("{} {} * * *", (i * 7) % 60, (i * 5) % 24)
                } else {
                    crons[i % crons.len()].to_string()
                };
                format!(
                    r#"{{"jobName":"job-{i:04}","priority":{},"job":"x","cronTime":"{cron}"}}"#,
                    i % 4
                )
            })
            .collect();
        format!(r#"{{"jobs":[{}]}}"#, jobs.join(","))
    }

    #[test]
    fn upcoming_runs_are_the_earliest_of_every_job_in_dispatch_order() {
        let start = Utc.with_ymd_and_hms(2026, 11, 29, 12, 34, 0).unwrap();
        for n in [0, 1, 7, 60, 400] {
            let mut s = scheduler(&mixed_jobs(n), start);
            // Move on a while, so that entries have cascaded and been reinserted.
            let mut out = Vec::new();
            for m in 1..=90 {
                s.run_minute(Minute(Minute::containing(start).0 + m), &mut out);
            }
            // The oracle: every job's own next run (a scan), sorted the way dispatch orders them.
            let mut expected: Vec<(Minute, i32, String)> = s
                .jobs()
                .filter_map(|(spec, _)| {
                    s.next_run(&spec.name)
                        .map(|at| (at, -spec.priority, spec.name.clone()))
                })
                .collect();
            expected.sort();
            for limit in [1, 5, UPCOMING] {
                let got: Vec<(Minute, String)> = s
                    .upcoming(limit)
                    .into_iter()
                    .map(|(at, spec)| (at, spec.name.clone()))
                    .collect();
                let want: Vec<(Minute, String)> = expected
                    .iter()
                    .take(limit)
                    .map(|(at, _, name)| (*at, name.clone()))
                    .collect();
                assert_eq!(got, want, "{n} jobs, limit {limit}");
            }
        }
    }
}
