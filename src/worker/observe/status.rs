//! What `/status.json` answers and the page shows: [`StatusView`], the ring buffers behind it,
//! and its snapshot at one instant.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::metrics::{reason_index, reason_name, status_index, REASONS, STATUSES};
use super::Observer;

/// A job running now, as the page shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunningJob {
    /// Its jobName (cut to [`MAX_TEXT`](super::MAX_TEXT)).
    pub job_name: String,
    /// Its dispatchId (cut to [`MAX_TEXT`](super::MAX_TEXT)).
    pub dispatch_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// When this attempt started.
    #[serde(serialize_with = "rfc3339")]
    pub since: DateTime<Utc>,
    /// Seconds it has run so far.
    pub running_seconds: f64,
}

/// One attempt's end.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecentResult {
    /// Its jobName (cut).
    pub job_name: String,
    /// Its dispatchId (cut).
    pub dispatch_id: String,
    /// The JobResult status (`succeeded`, `failed`, `timed_out`, `rejected`, `expired`, `skipped`,
    /// `cancelled`).
    pub status: &'static str,
    /// 1 for the first attempt (0: not run).
    pub attempt: u32,
    /// How long the handler ran.
    pub duration_seconds: f64,
    /// When it ended.
    #[serde(serialize_with = "rfc3339")]
    pub finished_at: DateTime<Utc>,
}

/// One record sent to the dead letter topic.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RecentDeadLetter {
    /// Why (`attempts_exhausted`, `rejected`, `malformed`, `expired`, `crashed`, `future_slot`).
    pub reason: &'static str,
    /// Its jobName, or for a malformed record its key (lossy UTF-8, cut).
    pub job_name: String,
    /// The record's topic.
    pub topic: String,
    /// Its partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// When the worker decided to dead-letter it.
    #[serde(serialize_with = "rfc3339")]
    pub at: DateTime<Utc>,
}

/// One bar of the pool chart: the largest values seen in [`POOL_BUCKET`](super::POOL_BUCKET).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PoolSample {
    /// The bucket's start.
    #[serde(serialize_with = "rfc3339")]
    pub at: DateTime<Utc>,
    /// Executors.
    pub size: usize,
    /// The autoscaler's target.
    pub target: usize,
    /// Executors running a job.
    pub busy: usize,
}

/// One assigned partition's lag.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The consumer's position; None until a record of it was read.
    pub position: Option<i64>,
    /// The high watermark; None when it could not be fetched.
    pub end: Option<i64>,
    /// Records not read yet (0 while either is unknown).
    pub lag: u64,
}

/// What `/status.json` answers and the page shows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    /// `--worker-id`.
    pub worker: String,
    /// `--group`.
    pub group: String,
    /// `--topic`.
    pub topic: String,
    /// `--brokers`.
    pub brokers: String,
    /// Now.
    #[serde(serialize_with = "rfc3339")]
    pub now: DateTime<Utc>,
    /// Seconds since the worker started.
    pub uptime_seconds: u64,
    /// Whether `/readyz` says ready, and each check.
    pub ready: bool,
    /// The readiness checks: name → (ok, detail).
    pub checks: BTreeMap<&'static str, crate::obs::health::Check>,
    /// Executors now.
    pub pool_size: usize,
    /// The autoscaler's target.
    pub pool_target: usize,
    /// `--min-workers`.
    pub min_workers: usize,
    /// `--max-workers`.
    pub max_workers: usize,
    /// Jobs running now (count).
    pub in_flight: usize,
    /// Local queue depth.
    pub queue_depth: usize,
    /// Attempts by status since start.
    pub runs: BTreeMap<&'static str, u64>,
    /// Dead letters by reason since start.
    pub dead_letters: BTreeMap<&'static str, u64>,
    /// Duplicates skipped since start.
    pub duplicates_skipped: u64,
    /// The pool over the last 10 minutes, oldest first, one sample per 10 s (gaps left out).
    pub pool_history: Vec<PoolSample>,
    /// Lag per assigned partition.
    pub lag: Vec<PartitionLag>,
    /// The jobs running now, longest running first.
    pub running: Vec<RunningJob>,
    /// The last results, newest first.
    pub results: Vec<RecentResult>,
    /// Recent dead letters, newest first.
    pub recent_dead_letters: Vec<RecentDeadLetter>,
}

/// The ring buffers behind the page.
#[derive(Debug, Default)]
pub(super) struct Recent {
    pub(super) next_id: u64,
    pub(super) running: HashMap<u64, RunningJob>,
    pub(super) results: VecDeque<RecentResult>,
    pub(super) dead_letters: VecDeque<RecentDeadLetter>,
    /// (bucket number since start, sample)
    pub(super) pool: VecDeque<(u64, PoolSample)>,
    pub(super) lag: Vec<PartitionLag>,
}

/// Times in `/status.json` as RFC 3339 UTC with milliseconds, as in JobResult.
pub(super) fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

impl Observer {
    /// Everything the page shows, now.
    pub fn snapshot(&self) -> StatusView {
        let now = Utc::now();
        let readiness = self.health.readiness();
        let recent = self.recent();
        let mut running: Vec<RunningJob> = recent
            .running
            .values()
            .map(|r| RunningJob {
                running_seconds: (now - r.since).to_std().unwrap_or_default().as_secs_f64(),
                ..r.clone()
            })
            .collect();
        running.sort_by(|a, b| a.since.cmp(&b.since).then(a.job_name.cmp(&b.job_name)));
        StatusView {
            worker: self.worker.clone(),
            group: self.group.clone(),
            topic: self.topic.clone(),
            brokers: self.brokers.clone(),
            now,
            uptime_seconds: self.started.elapsed().as_secs(),
            ready: readiness.ready,
            checks: readiness.checks,
            pool_size: self.pool_size.load(Ordering::Relaxed) as usize,
            pool_target: self.pool_target.load(Ordering::Relaxed) as usize,
            min_workers: self.min_workers,
            max_workers: self.max_workers,
            in_flight: self.in_flight.load(Ordering::Relaxed).max(0) as usize,
            queue_depth: self.queue_depth.load(Ordering::Relaxed).max(0) as usize,
            runs: STATUSES
                .iter()
                .map(|&s| (s.as_str(), self.metrics.runs[status_index(s)].get()))
                .collect(),
            dead_letters: REASONS
                .iter()
                .map(|&r| {
                    (
                        reason_name(r),
                        self.metrics.dead_letters[reason_index(r)].get(),
                    )
                })
                .collect(),
            duplicates_skipped: self.metrics.duplicates.get(),
            pool_history: recent.pool.iter().map(|(_, s)| *s).collect(),
            lag: recent.lag.clone(),
            running,
            results: recent.results.iter().rev().cloned().collect(),
            recent_dead_letters: recent.dead_letters.iter().rev().cloned().collect(),
        }
    }
}
