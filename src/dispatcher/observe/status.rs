//! What the page and `/status.json` show: the state the observer keeps for them (the schedule
//! file, the last hour, the next runs, the owned shards, the group, the pauses) and [`Status`],
//! its snapshot at one instant.

use std::collections::BTreeMap;
use std::sync::{Arc, MutexGuard, PoisonError};

use serde::Serialize;

use super::clock::rfc3339;
use super::{Observer, HISTORY_MINUTES};
use crate::clock::Minute;
use crate::dispatcher::control::{PauseTable, PausedView};
use crate::dispatcher::status::GroupView;

/// How the dispatcher runs, for the page's heading.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase", tag = "mode")]
pub enum Mode {
    /// `--dry-run`: printed, no group.
    DryRun,
    /// A member of a dispatcher group.
    Group {
        /// The consumer group.
        group: String,
        /// This member's name.
        member: String,
        /// The state topic.
        state_topic: String,
    },
}

/// The last change of the schedule file the loop looked at.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reload {
    /// When (RFC 3339).
    pub at: String,
    /// `ok`, `rejected` or `vanished`.
    pub result: &'static str,
    /// MD5 of the file version looked at, if it was read.
    pub md5: Option<String>,
    /// Milliseconds to read, validate and compile it.
    pub took_ms: Option<u64>,
    /// Why it was rejected or unreadable: every problem, each naming file, line, job and field.
    pub problems: Vec<String>,
}

/// The schedule file as the page shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ScheduleState {
    pub(super) path: String,
    pub(super) md5: Option<String>,
    pub(super) loaded_at: Option<String>,
    pub(super) last_reload: Option<Reload>,
}

/// One minute of the last hour.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MinuteRow {
    /// The slot (RFC 3339).
    pub minute: String,
    /// Jobs handed out for it.
    pub dispatched: u64,
    /// Of those, acked by the broker (dry run: 0).
    pub acked: u64,
    /// Of those, refused for good.
    pub failed: u64,
    /// Largest skew (ack − slot) in milliseconds, once every dispatch of the slot settled.
    pub skew_max_ms: Option<i64>,
    /// Mean skew in milliseconds.
    pub skew_mean_ms: Option<i64>,
}

/// One run to come.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpcomingRun {
    /// The job.
    pub job_name: String,
    /// Its slot (RFC 3339).
    pub at: String,
    /// The topic it goes to.
    pub topic: String,
}

/// An owned shard as this member's lease sees it (live, every tick).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnedShard {
    /// The shard.
    pub shard: u32,
    /// The last minute whose every dispatch was acked (RFC 3339).
    pub cursor: Option<String>,
    /// Dispatches of the shard not acked yet.
    pub outstanding: u64,
    /// Jobs of the shard in its wheel.
    pub jobs: usize,
}

/// A topic partition whose writes the broker refuses for want of rights: its dispatches wait and
/// are retried, and their shards' cursors stay before them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefusedWrite {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// Since when (RFC 3339).
    pub since: String,
    /// The broker's answer.
    pub error: String,
}

/// A shard taken over whose newest cursor records did not decode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UnreadableCursor {
    /// The shard.
    pub shard: u32,
    /// When it was taken over (RFC 3339).
    pub at: String,
    /// Offsets of the records that did not decode, newest first.
    pub offsets: Vec<i64>,
    /// No cursor record decoded at all: the shard started from now minus the longest catch-up
    /// window of its jobs.
    pub nothing_decoded: bool,
    /// The minute the shard started after (RFC 3339).
    pub started_from: String,
}

/// What the observer keeps for the page beyond its metrics.
#[derive(Debug, Default)]
pub(super) struct PageState {
    pub(super) schedule: Option<ScheduleState>,
    /// The minutes handed out and settled, at most `2 × HISTORY_MINUTES` of them.
    pub(super) minutes: BTreeMap<Minute, MinuteRow>,
    pub(super) upcoming: Vec<UpcomingRun>,
    /// The minute the next runs were read at.
    pub(super) upcoming_for: Option<Minute>,
    pub(super) owned: Vec<OwnedShard>,
    pub(super) group: Option<GroupView>,
    pub(super) total_shards: Option<u32>,
    pub(super) pauses: Option<Arc<PauseTable>>,
    /// The clock at the last tick.
    pub(super) clock: Option<super::ClockView>,
    /// Clock steps counted into the metrics so far.
    pub(super) clock_steps: super::clock::StepsCounted,
    /// Partitions whose writes the broker refuses now, by topic and partition.
    pub(super) refused: BTreeMap<(String, i32), RefusedWrite>,
    /// Shards taken over whose newest cursor records did not decode.
    pub(super) unreadable: BTreeMap<u32, UnreadableCursor>,
    pub(super) schedule_topic: Option<ScheduleTopicView>,
}

impl Observer {
    pub(super) fn page(&self) -> MutexGuard<'_, PageState> {
        self.page.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The data of the page, as `/status.json` answers it.
    pub fn status(&self) -> Status {
        let now = self.clock.now();
        let current = Minute::containing(now);
        let page = self.page();
        let minutes = (current.0 - HISTORY_MINUTES + 1..=current.0)
            .map(|m| {
                let minute = Minute(m);
                let mut row = page.minutes.get(&minute).cloned().unwrap_or_default();
                row.minute = minute.start().map(rfc3339).unwrap_or_default();
                row
            })
            .collect();
        let (skew_sum, skew_count) = self.metrics.skew.totals();
        Status {
            at: rfc3339(now),
            mode: self.mode.clone(),
            readiness: self.health.readiness(),
            liveness: self.health.liveness(),
            schedule: page.schedule.clone(),
            jobs: self.metrics.schedule_jobs.get() as u64,
            queue_depth: self.metrics.queue_depth.get() as u64,
            undelivered: self.metrics.undelivered.get() as u64,
            acked_total: self.metrics.dispatched_all.get(),
            skew_mean_seconds: (skew_count > 0).then(|| skew_sum / skew_count as f64),
            minutes,
            upcoming: page.upcoming.clone(),
            owned_shards: page.owned.clone(),
            total_shards: page.total_shards,
            group: page.group.clone(),
            clock: page.clock.clone(),
            paused: page
                .pauses
                .as_ref()
                .map(|t| t.view(now))
                .unwrap_or_default(),
            refused_writes: page.refused.values().cloned().collect(),
            unreadable_cursors: page.unreadable.values().cloned().collect(),
            schedule_topic: page.schedule_topic.clone(),
        }
    }
}

/// Everything the page shows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// When (RFC 3339).
    pub at: String,
    /// Dry run or group member.
    pub mode: Mode,
    /// `/readyz`.
    pub readiness: crate::obs::health::Readiness,
    /// `/healthz`.
    pub liveness: crate::obs::health::Liveness,
    pub(super) schedule: Option<ScheduleState>,
    /// Jobs in this dispatcher's wheels.
    pub jobs: u64,
    /// Dispatches in the queue to the sink.
    pub queue_depth: u64,
    /// Dispatches not acked yet.
    pub undelivered: u64,
    /// Dispatches acked (dry run: printed) since start.
    pub acked_total: u64,
    /// Mean skew since start.
    pub skew_mean_seconds: Option<f64>,
    /// The last 60 minutes, oldest first.
    pub minutes: Vec<MinuteRow>,
    /// The next runs.
    pub upcoming: Vec<UpcomingRun>,
    /// The shards this member owns.
    pub owned_shards: Vec<OwnedShard>,
    /// Shards of the group.
    pub total_shards: Option<u32>,
    /// The group as its cursor records told it at the last watchdog read (once a minute).
    pub group: Option<GroupView>,
    /// The pauses in force (`cronq pause`), as this member read the control topic.
    pub paused: PausedView,
    /// The clock at the last tick (a step held back, behind the cursor); `None` before the first.
    pub clock: Option<super::ClockView>,
    /// Topic partitions whose writes the broker refuses for want of rights (their dispatches
    /// wait and are retried).
    pub refused_writes: Vec<RefusedWrite>,
    /// Shards this member took over whose newest cursor records did not decode.
    pub unreadable_cursors: Vec<UnreadableCursor>,
    /// In the topic mode: each owned shard's place in the schedule topic, and the last records
    /// rejected.
    pub schedule_topic: Option<ScheduleTopicView>,
}

/// The schedule topic as this member applies it (`cronq run --schedule-topic`).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleTopicView {
    /// The topic.
    pub topic: String,
    /// Each owned shard: the offset applied (every record before it), jobs, records rejected.
    pub shards: Vec<ShardTopicRow>,
    /// The last records rejected (newest last, at most 20).
    pub rejected: Vec<RejectedRecord>,
}

/// One owned shard's place in the schedule topic.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardTopicRow {
    /// The shard (= partition).
    pub shard: u32,
    /// The next offset to apply: every record before it is applied.
    pub applied: i64,
    /// Jobs held.
    pub jobs: u64,
    /// Records rejected since the shard was taken over.
    pub rejected: u64,
}

/// A schedule record that failed the checks.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RejectedRecord {
    /// When this member rejected it.
    pub at: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// The key, quoted and escaped.
    pub key: String,
    /// Why.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::clock::Clock;
    use crate::dispatcher::observe::tests::{metrics_text, observer};
    use crate::dispatcher::observe::HISTORY_MINUTES;

    #[test]
    fn the_last_hour_has_one_row_a_minute_with_what_was_dispatched_and_its_skew() {
        let (o, clock) = observer(Mode::DryRun);
        let now = Minute::containing(clock.now());
        o.minute_handed_out(Minute(now.0 - 2), 4, None);
        o.minute_settled(Minute(now.0 - 2), 4, 0, 1500, 700);
        o.minute_handed_out(now, 3, Some(Duration::from_millis(250)));
        // Older than the hour: not on the page.
        o.minute_handed_out(Minute(now.0 - 61), 9, None);
        let s = o.status();
        assert_eq!(s.minutes.len(), HISTORY_MINUTES as usize);
        let last = &s.minutes[59];
        assert_eq!((last.dispatched, last.skew_max_ms), (3, None));
        let two_ago = &s.minutes[57];
        assert_eq!(
            (two_ago.dispatched, two_ago.acked, two_ago.skew_max_ms),
            (4, 4, Some(1500))
        );
        assert_eq!(s.minutes.iter().map(|m| m.dispatched).sum::<u64>(), 7);
        assert!(metrics_text(&o).contains("cronq_tick_lag_seconds 0.25"));
    }
}
