//! The worker as an operator sees it: its Prometheus metrics, its readiness and liveness, and what
//! its status page (`GET /`) and `/status.json` show.
//!
//! ```text
//!  consume loop ── every turn: heartbeat, in flight, queue depth ──┐
//!  scale tick ──── pool size / target, resizes ────────────────────┤
//!  lag watcher ─── lag per partition, broker reached ──────────────┤──► Observer ──► /metrics
//!  rebalances ──── group joined, partitions ───────────────────────┤   (metrics,     /readyz /healthz
//!  ObservedHandler ─ running now, each attempt's status/duration ──┤    Health,      GET /  /status.json
//!  dead letters, duplicates ───────────────────────────────────────┘    ring buffers)
//! ```
//!
//! Counters and histograms are updated through handles cached at start (one per status, reason and
//! direction), so a job costs a few atomic adds and three short locks of the ring buffers, no label
//! lookup. Memory is bounded: the last [`RESULTS`] results, [`DEAD_LETTERS`] dead letters, one pool
//! sample per [`POOL_BUCKET`] over [`POOL_WINDOW`], the jobs running now (at most the pool size), and
//! each text cut to [`MAX_TEXT`] characters. No metric has a jobName label (unbounded cardinality);
//! per-job views are on the page only.
//!
//! Liveness: the consume loop beats every turn, and turns at least every `--commit-interval` and
//! `--scale-interval` even when idle; it may stay silent for [`max_silence`] (3 such intervals, at
//! least 30 s) before `/healthz` says it is stuck. While the worker still waits for Kafka at start
//! (creating its report topics) the loop has not started and no heartbeat is counted: an
//! unreachable broker makes the worker not ready, not dead.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;

use super::executor::{BoxFuture, Handler, JobRun, Outcome, Status};
use super::WorkerConfig;
use crate::obs::health::{Beat, Health};
use crate::obs::http::Site;
use crate::obs::page::{document, escape, format_number};
use crate::wire::result::DeadReason;
use crate::wire::JobMessage;

/// Results kept for the page.
pub const RESULTS: usize = 100;
/// Dead letters kept for the page.
pub const DEAD_LETTERS: usize = 50;
/// The pool chart's span.
pub const POOL_WINDOW: Duration = Duration::from_secs(600);
/// One bar of the pool chart: the largest size, target and busy count seen in it.
pub const POOL_BUCKET: Duration = Duration::from_secs(10);
/// Job names, dispatch ids and keys longer than this are cut for the page (they come from the
/// topic, so anyone who can write to it chooses their size).
pub const MAX_TEXT: usize = 200;
/// How often the page reloads itself.
const REFRESH_SECONDS: u32 = 5;

/// Readiness checks, each with why it does not hold yet.
const CHECK_GROUP: &str = "group";
const CHECK_KAFKA: &str = "kafka";
const CHECK_CONSUMING: &str = "consuming";

/// The allowed silence of the consume loop's heartbeat: it turns at least every
/// `min(--commit-interval, --scale-interval)`; three of those, and never less than 30 s, so that a
/// busy runtime or a slow commit does not make a healthy worker look stuck.
pub fn max_silence(config: &WorkerConfig) -> Duration {
    let turn = config.commit_interval.min(config.scale_interval);
    (turn * 3).max(Duration::from_secs(30))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    topic: String,
    partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

const STATUSES: [Status; 7] = [
    Status::Succeeded,
    Status::Failed,
    Status::TimedOut,
    Status::Rejected,
    Status::Expired,
    Status::Skipped,
    Status::Cancelled,
];

const REASONS: [DeadReason; 5] = [
    DeadReason::AttemptsExhausted,
    DeadReason::Rejected,
    DeadReason::Malformed,
    DeadReason::Expired,
    DeadReason::Crashed,
];

fn status_index(status: Status) -> usize {
    match status {
        Status::Succeeded => 0,
        Status::Failed => 1,
        Status::TimedOut => 2,
        Status::Rejected => 3,
        Status::Expired => 4,
        Status::Skipped => 5,
        Status::Cancelled => 6,
    }
}

fn reason_index(reason: DeadReason) -> usize {
    match reason {
        DeadReason::AttemptsExhausted => 0,
        DeadReason::Rejected => 1,
        DeadReason::Malformed => 2,
        DeadReason::Expired => 3,
        DeadReason::Crashed => 4,
    }
}

/// The wire name of a dead letter's reason (as in the letter's `reason` field).
pub fn reason_name(reason: DeadReason) -> &'static str {
    match reason {
        DeadReason::AttemptsExhausted => "attempts_exhausted",
        DeadReason::Rejected => "rejected",
        DeadReason::Malformed => "malformed",
        DeadReason::Expired => "expired",
        DeadReason::Crashed => "crashed",
    }
}

/// The metric handles, created and registered once.
struct Metrics {
    registry: Arc<Registry>,
    lag: Family<PartitionLabels, Gauge>,
    pool_size: Gauge,
    pool_target: Gauge,
    in_flight: Gauge,
    queue_depth: Gauge,
    /// `cronq_job_runs_total`, one handle per [`STATUSES`].
    runs: [Counter; STATUSES.len()],
    duration: Histogram,
    start_delay: Histogram,
    /// `cronq_dead_letters_total`, one handle per [`REASONS`].
    dead_letters: [Counter; 5],
    duplicates: Counter,
    resizes_up: Counter,
    resizes_down: Counter,
}

/// Seconds, from 5 ms to an hour: jobs range from no-ops to batch runs.
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 60.0, 300.0, 3600.0,
];
/// Seconds, from 10 ms to an hour: a healthy worker starts a job well within a second of its slot;
/// a backlog or a worker that was down shows as minutes.
const DELAY_BUCKETS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0, 3600.0,
];

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let lag = Family::<PartitionLabels, Gauge>::default();
        registry.register(
            "cronq_worker_lag",
            "Records of an assigned partition not read yet (high watermark minus position)",
            lag.clone(),
        );
        let pool_size = Gauge::default();
        registry.register(
            "cronq_worker_pool_size",
            "Executors now: the target, or more while jobs above a lowered target finish",
            pool_size.clone(),
        );
        let pool_target = Gauge::default();
        registry.register(
            "cronq_worker_pool_target",
            "Executors the autoscaler decided on, within --min-workers and --max-workers",
            pool_target.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "cronq_worker_in_flight",
            "Jobs whose handler is running",
            in_flight.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "cronq_worker_queue_depth",
            "Records fetched and waiting in the local queue (jobs, and records to dead-letter)",
            queue_depth.clone(),
        );
        let runs_family = Family::<StatusLabel, Counter>::default();
        registry.register(
            "cronq_job_runs",
            "Job attempts reported, by their JobResult status",
            runs_family.clone(),
        );
        let runs =
            STATUSES.map(|s| runs_family.get_or_create_owned(&StatusLabel { status: s.as_str() }));
        let duration = Histogram::new(DURATION_BUCKETS);
        registry.register(
            "cronq_job_duration_seconds",
            "How long an attempt's handler ran",
            duration.clone(),
        );
        let start_delay = Histogram::new(DELAY_BUCKETS);
        registry.register(
            "cronq_job_start_delay_seconds",
            "From a job's scheduledAt to the start of its first attempt",
            start_delay.clone(),
        );
        let letters_family = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "cronq_dead_letters",
            "Records sent to the dead letter topic, by reason",
            letters_family.clone(),
        );
        let dead_letters = REASONS.map(|r| {
            letters_family.get_or_create_owned(&ReasonLabel {
                reason: reason_name(r),
            })
        });
        let duplicates = Counter::default();
        registry.register(
            "cronq_duplicates_skipped",
            "Records skipped because this worker recently finished their dispatchId",
            duplicates.clone(),
        );
        let resizes = Family::<DirectionLabel, Counter>::default();
        registry.register(
            "cronq_pool_resizes",
            "Pool target changes by the autoscaler, up or down",
            resizes.clone(),
        );
        let resizes_up = resizes.get_or_create_owned(&DirectionLabel { direction: "up" });
        let resizes_down = resizes.get_or_create_owned(&DirectionLabel { direction: "down" });
        Metrics {
            registry: Arc::new(registry),
            lag,
            pool_size,
            pool_target,
            in_flight,
            queue_depth,
            runs,
            duration,
            start_delay,
            dead_letters,
            duplicates,
            resizes_up,
            resizes_down,
        }
    }
}

/// A job running now, as the page shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RunningJob {
    /// Its jobName (cut to [`MAX_TEXT`]).
    pub job_name: String,
    /// Its dispatchId (cut to [`MAX_TEXT`]).
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
    /// Why (`attempts_exhausted`, `rejected`, `malformed`, `expired`, `crashed`).
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

/// One bar of the pool chart: the largest values seen in [`POOL_BUCKET`].
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
struct Recent {
    next_id: u64,
    running: HashMap<u64, RunningJob>,
    results: VecDeque<RecentResult>,
    dead_letters: VecDeque<RecentDeadLetter>,
    /// (bucket number since start, sample)
    pool: VecDeque<(u64, PoolSample)>,
    lag: Vec<PartitionLag>,
}

/// The worker's observable state: metrics, probes and the page's recent history. One per worker
/// run; cheap to update from the consume loop and the execution tasks.
pub struct Observer {
    metrics: Metrics,
    health: Arc<Health>,
    recent: Mutex<Recent>,
    started: Instant,
    started_at: DateTime<Utc>,
    worker: String,
    group: String,
    topic: String,
    brokers: String,
    min_workers: usize,
    max_workers: usize,
    max_silence: Duration,
    /// The latest values of the gauges, for the page (the gauges are i64).
    pool_size: AtomicU64,
    pool_target: AtomicU64,
    in_flight: AtomicI64,
    queue_depth: AtomicI64,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("worker", &self.worker)
            .finish_non_exhaustive()
    }
}

/// Times in `/status.json` as RFC 3339 UTC with milliseconds, as in JobResult.
fn rfc3339<S: serde::Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

fn cut(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

impl Observer {
    /// An observer for a worker run with `config`: not ready until it joined its group, reached its
    /// broker and started consuming.
    pub fn new(config: &WorkerConfig) -> Arc<Observer> {
        let health = Health::new(&[
            (CHECK_GROUP, "not joined the consumer group yet"),
            (CHECK_KAFKA, "broker not reached yet"),
            (CHECK_CONSUMING, "starting"),
        ]);
        let scale = config.scale.normalized();
        let metrics = Metrics::new();
        // The pool starts at its minimum; the first scale tick confirms or changes it.
        metrics.pool_size.set(scale.min as i64);
        metrics.pool_target.set(scale.min as i64);
        Arc::new(Observer {
            metrics,
            health,
            recent: Mutex::new(Recent::default()),
            started: Instant::now(),
            started_at: Utc::now(),
            worker: config.report.worker.clone(),
            group: config.group.clone(),
            topic: config.topic.clone(),
            brokers: config.kafka.brokers_text(),
            min_workers: scale.min,
            max_workers: scale.max,
            max_silence: max_silence(config),
            pool_size: AtomicU64::new(scale.min as u64),
            pool_target: AtomicU64::new(scale.min as u64),
            in_flight: AtomicI64::new(0),
            queue_depth: AtomicI64::new(0),
        })
    }

    fn recent(&self) -> MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The metrics registry (for `/metrics`).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.metrics.registry
    }

    /// The probes (for `/readyz` and `/healthz`).
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// What `--http` serves for this worker.
    pub fn site(self: &Arc<Self>) -> Site {
        let page = Arc::clone(self);
        let status = Arc::clone(self);
        Site {
            metrics: Arc::clone(&self.metrics.registry),
            health: Arc::clone(&self.health),
            page: Arc::new(move || page.page()),
            status: Arc::new(move || {
                serde_json::to_value(status.snapshot()).unwrap_or(serde_json::Value::Null)
            }),
        }
    }

    // ---- what the worker reports ----

    /// The consume loop starts: ready to consume, and its heartbeat counts from now.
    pub fn consuming(&self) -> Beat {
        self.health
            .set(CHECK_CONSUMING, true, "consuming and running jobs");
        self.health.heartbeat("consume_loop", self.max_silence)
    }

    /// Shutdown began: not ready (no new jobs start) while running jobs finish.
    pub fn stopping(&self) {
        self.health.set(
            CHECK_CONSUMING,
            false,
            "shutting down: no new jobs start, running ones finish",
        );
    }

    /// The group assigned these partitions (possibly none): the worker is a member.
    pub fn assigned(&self, partitions: usize) {
        let detail = if partitions == 0 {
            format!(
                "joined group {:?} with no partitions (more members than partitions)",
                self.group
            )
        } else {
            format!(
                "joined group {:?}; {partitions} partition(s) assigned",
                self.group
            )
        };
        self.health.set(CHECK_GROUP, true, detail);
    }

    /// The lag watcher's latest view: each assigned partition, and whether the broker answered.
    pub fn lag(&self, partitions: Vec<PartitionLag>, reached: Result<(), String>) {
        match reached {
            Ok(()) => self
                .health
                .set(CHECK_KAFKA, true, format!("reached {}", self.brokers)),
            Err(why) => self.health.set(
                CHECK_KAFKA,
                false,
                format!("cannot reach {}: {why}", self.brokers),
            ),
        }
        let mut recent = self.recent();
        for old in &recent.lag {
            if !partitions
                .iter()
                .any(|p| p.topic == old.topic && p.partition == old.partition)
            {
                self.metrics.lag.remove(&PartitionLabels {
                    topic: old.topic.clone(),
                    partition: old.partition,
                });
            }
        }
        for p in &partitions {
            self.metrics
                .lag
                .get_or_create(&PartitionLabels {
                    topic: p.topic.clone(),
                    partition: p.partition,
                })
                .set(p.lag as i64);
        }
        recent.lag = partitions;
    }

    /// The loop's view now: jobs running and records queued. Called every turn of the loop.
    pub fn load(&self, in_flight: usize, queued: usize) {
        self.metrics.in_flight.set(in_flight as i64);
        self.metrics.queue_depth.set(queued as i64);
        self.in_flight.store(in_flight as i64, Ordering::Relaxed);
        self.queue_depth.store(queued as i64, Ordering::Relaxed);
    }

    /// The autoscaler decided: the pool's `target`, from `previous`; `busy` executors run jobs.
    pub fn pool(&self, previous: usize, target: usize, busy: usize) {
        self.pool_at(self.started.elapsed(), previous, target, busy);
    }

    /// [`Observer::pool`] at `elapsed` since the observer started.
    fn pool_at(&self, elapsed: Duration, previous: usize, target: usize, busy: usize) {
        if target > previous {
            self.metrics.resizes_up.inc();
        } else if target < previous {
            self.metrics.resizes_down.inc();
        }
        let size = target.max(busy);
        self.metrics.pool_size.set(size as i64);
        self.metrics.pool_target.set(target as i64);
        self.pool_size.store(size as u64, Ordering::Relaxed);
        self.pool_target.store(target as u64, Ordering::Relaxed);
        let bucket = elapsed.as_secs() / POOL_BUCKET.as_secs();
        let at =
            self.started_at + chrono::Duration::seconds((bucket * POOL_BUCKET.as_secs()) as i64);
        let sample = PoolSample {
            at,
            size,
            target,
            busy,
        };
        let mut recent = self.recent();
        match recent.pool.back_mut() {
            Some((b, s)) if *b == bucket => {
                s.size = s.size.max(size);
                s.target = s.target.max(target);
                s.busy = s.busy.max(busy);
            }
            _ => recent.pool.push_back((bucket, sample)),
        }
        let buckets = POOL_WINDOW.as_secs() / POOL_BUCKET.as_secs();
        while recent
            .pool
            .front()
            .is_some_and(|(b, _)| b + buckets <= bucket)
        {
            recent.pool.pop_front();
        }
    }

    /// A record was skipped as a recently finished dispatchId.
    pub fn duplicate(&self) {
        self.metrics.duplicates.inc();
    }

    /// A record is being sent to the dead letter topic.
    pub fn dead_letter(
        &self,
        reason: DeadReason,
        job_name: &str,
        topic: &str,
        partition: i32,
        offset: i64,
    ) {
        self.metrics.dead_letters[reason_index(reason)].inc();
        let letter = RecentDeadLetter {
            reason: reason_name(reason),
            job_name: cut(job_name),
            topic: cut(topic),
            partition,
            offset,
            at: Utc::now(),
        };
        let mut recent = self.recent();
        if recent.dead_letters.len() == DEAD_LETTERS {
            recent.dead_letters.pop_front();
        }
        recent.dead_letters.push_back(letter);
    }

    /// A job was not run because it was older than `--max-age` (its JobResult says `expired`).
    pub fn expired(&self, message: &JobMessage) {
        self.result(
            cut(&message.job_name),
            cut(&message.dispatch_id),
            0,
            Status::Expired,
            Duration::ZERO,
        );
    }

    /// A record was not run because of its job's overlap policy: `skipped`, or `cancelled` (a
    /// queued run a newer one replaced). Counted like an attempt, with attempt 0 and no duration.
    pub fn not_run(&self, message: &JobMessage, status: Status) {
        self.result(
            cut(&message.job_name),
            cut(&message.dispatch_id),
            0,
            status,
            Duration::ZERO,
        );
    }

    /// An attempt ended (`job_name` and `dispatch_id` already cut).
    fn result(
        &self,
        job_name: String,
        dispatch_id: String,
        attempt: u32,
        status: Status,
        took: Duration,
    ) {
        self.metrics.runs[status_index(status)].inc();
        // Records that were not run (expired, skipped, a queued run replaced) have no duration.
        if !took.is_zero() {
            self.metrics.duration.observe(took.as_secs_f64());
        }
        let result = RecentResult {
            job_name,
            dispatch_id,
            status: status.as_str(),
            attempt,
            duration_seconds: took.as_secs_f64(),
            finished_at: Utc::now(),
        };
        let mut recent = self.recent();
        if recent.results.len() == RESULTS {
            recent.results.pop_front();
        }
        recent.results.push_back(result);
    }

    /// An attempt starts: it shows as running until the returned guard is finished or dropped.
    fn attempt_started(&self, run: &JobRun) -> Attempt<'_> {
        let since = Utc::now();
        if run.attempt == 1 {
            if let Ok(scheduled) = DateTime::parse_from_rfc3339(&run.message.scheduled_at) {
                let delay = (since - scheduled.with_timezone(&Utc))
                    .to_std()
                    .unwrap_or_default();
                self.metrics.start_delay.observe(delay.as_secs_f64());
            }
        }
        let mut recent = self.recent();
        let id = recent.next_id;
        recent.next_id += 1;
        recent.running.insert(
            id,
            RunningJob {
                job_name: cut(&run.message.job_name),
                dispatch_id: cut(&run.message.dispatch_id),
                attempt: run.attempt,
                since,
                running_seconds: 0.0,
            },
        );
        Attempt {
            observer: self,
            id,
            clock: Instant::now(),
            ended: false,
        }
    }

    // ---- what the page and /status.json show ----

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

    /// The status page.
    pub fn page(&self) -> String {
        render(&self.snapshot())
    }
}

/// One attempt in progress; dropped without [`Attempt::ended`] (its handler panicked or its task
/// was aborted), it still leaves the running list, counted as `failed`.
struct Attempt<'a> {
    observer: &'a Observer,
    id: u64,
    clock: Instant,
    ended: bool,
}

impl Attempt<'_> {
    fn end(mut self, status: Status) {
        self.ended = true;
        self.finish(status);
    }

    fn finish(&self, status: Status) {
        let job = self.observer.recent().running.remove(&self.id);
        if let Some(job) = job {
            self.observer.result(
                job.job_name,
                job.dispatch_id,
                job.attempt,
                status,
                self.clock.elapsed(),
            );
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.finish(Status::Failed);
        }
    }
}

/// A [`Handler`] that reports each attempt to the [`Observer`] around the real handler.
pub struct ObservedHandler {
    /// The handler that runs jobs.
    pub inner: Arc<dyn Handler>,
    /// Where attempts are reported.
    pub observer: Arc<Observer>,
}

impl Handler for ObservedHandler {
    fn run<'a>(&'a self, run: &'a JobRun) -> BoxFuture<'a, Outcome> {
        let attempt = self.observer.attempt_started(run);
        Box::pin(Observed {
            attempt: Some(attempt),
            inner: self.inner.run(run),
        })
    }

    fn run_cancellable<'a>(
        &'a self,
        run: &'a JobRun,
        cancel: &'a tokio_util::sync::CancellationToken,
    ) -> BoxFuture<'a, Outcome> {
        let attempt = self.observer.attempt_started(run);
        Box::pin(Observed {
            attempt: Some(attempt),
            inner: self.inner.run_cancellable(run, cancel),
        })
    }
}

/// The handler's future, and the attempt it ends. The inner future is kept until this one is
/// dropped, where the caller would have dropped it: wrapping changes nothing of where a panic of the
/// handler (while it runs, or when its future is dropped) surfaces.
struct Observed<'a> {
    attempt: Option<Attempt<'a>>,
    inner: BoxFuture<'a, Outcome>,
}

impl std::future::Future for Observed<'_> {
    type Output = Outcome;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Outcome> {
        let polled = self.inner.as_mut().poll(cx);
        if let std::task::Poll::Ready(outcome) = &polled {
            if let Some(attempt) = self.attempt.take() {
                attempt.end(outcome.status);
            }
        }
        polled
    }
}

// ---- the page ----

fn time_of_day(t: DateTime<Utc>) -> String {
    t.format("%H:%M:%S").to_string()
}

fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

fn status_class(status: &str) -> &'static str {
    match status {
        "succeeded" => "ok",
        "failed" | "timed_out" => "bad",
        _ => "warn",
    }
}

fn stat(out: &mut String, value: &str, label: &str) {
    let _ = write!(
        out,
        "<div class=\"stat\"><b>{}</b><span>{}</span></div>",
        escape(value),
        escape(label)
    );
}

/// The pool chart: one column per [`POOL_BUCKET`] over [`POOL_WINDOW`]; the pale bar is the pool's
/// size, the solid bar the executors running a job, the line the autoscaler's target.
fn pool_chart(view: &StatusView) -> String {
    const HEIGHT: f64 = 100.0;
    let columns = (POOL_WINDOW.as_secs() / POOL_BUCKET.as_secs()) as i64;
    let step = POOL_BUCKET.as_secs() as i64;
    let width = columns as f64 * 10.0;
    let top = view
        .pool_history
        .iter()
        .map(|s| s.size.max(s.target))
        .max()
        .unwrap_or(0)
        .max(view.max_workers.min(view.pool_size.max(1) * 2))
        .max(1) as f64;
    let last = view.pool_history.last().map(|s| s.at).unwrap_or(view.now);
    let column_of = |at: DateTime<Utc>| columns - 1 - (last - at).num_seconds() / step;
    let y = |v: usize| HEIGHT - v as f64 / top * HEIGHT;
    let mut svg = format!(
        "<svg class=\"chart pool\" viewBox=\"0 0 {width} {HEIGHT}\" preserveAspectRatio=\"none\" \
style=\"height:140px;max-height:none\" role=\"img\" aria-label=\"pool size and target, last 10 minutes\">\
<line x1=\"0\" y1=\"{HEIGHT}\" x2=\"{width}\" y2=\"{HEIGHT}\" style=\"stroke:var(--line)\"/>"
    );
    let mut target_line = Vec::new();
    for s in &view.pool_history {
        let col = column_of(s.at);
        if !(0..columns).contains(&col) {
            continue;
        }
        let x = col as f64 * 10.0;
        let tip = format!(
            "{}: size {}, target {}, busy {}",
            time_of_day(s.at),
            s.size,
            s.target,
            s.busy
        );
        let _ = write!(
            svg,
            "<g><title>{}</title><rect x=\"{}\" y=\"{:.2}\" width=\"8\" height=\"{:.2}\" \
style=\"fill:var(--accent);opacity:.3\"/><rect x=\"{}\" y=\"{:.2}\" width=\"8\" height=\"{:.2}\" \
style=\"fill:var(--accent)\"/></g>",
            escape(&tip),
            x + 1.0,
            y(s.size),
            HEIGHT - y(s.size),
            x + 1.0,
            y(s.busy),
            HEIGHT - y(s.busy),
        );
        target_line.push(format!(
            "{:.1},{:.2} {:.1},{:.2}",
            x,
            y(s.target),
            x + 10.0,
            y(s.target)
        ));
    }
    if !target_line.is_empty() {
        let _ = write!(
            svg,
            "<polyline points=\"{}\" style=\"fill:none;stroke:var(--warn);stroke-width:2;\
vector-effect:non-scaling-stroke\"/>",
            target_line.join(" ")
        );
    }
    svg.push_str("</svg>");
    format!(
        "{svg}<div class=\"muted\" style=\"display:flex;justify-content:space-between;font-size:.8rem\">\
<span>10 min ago</span><span>scale 0–{}</span><span>now</span></div>\
<p class=\"muted\" style=\"font-size:.85rem;margin:.4rem 0 0\">\
<span style=\"color:var(--accent);opacity:.45\">■</span> pool size &nbsp;\
<span style=\"color:var(--accent)\">■</span> running a job &nbsp;\
<span style=\"color:var(--warn)\">━</span> target</p>",
        format_number(top)
    )
}

/// The status page of `view`. Every text from the topic or the configuration is escaped.
pub fn render(view: &StatusView) -> String {
    // The shared stylesheet plus this page's own: names get room and the table scrolls sideways
    // instead of breaking a name into one letter per line; on a phone, secondary columns go.
    let mut b = String::from(
        "<style>td.name{min-width:11em}@media (max-width:640px){.wide{display:none}}</style>",
    );
    let _ = write!(
        b,
        "<h1>cronq worker <span class=\"muted\">{}</span></h1>",
        escape(&view.worker)
    );
    let (class, word) = if view.ready {
        ("ok", "Ready")
    } else {
        ("warn", "Not ready")
    };
    let _ = write!(
        b,
        "<p id=\"readiness\"><b class=\"{class}\">{word}</b> <span class=\"muted\">· group {} · topic {} · \
brokers {} · up {} · {}</span></p>",
        escape(&view.group),
        escape(&view.topic),
        escape(&view.brokers),
        escape(&seconds(view.uptime_seconds as f64)),
        escape(&view.now.to_rfc3339_opts(SecondsFormat::Secs, true)),
    );
    if !view.ready {
        b.push_str("<ul>");
        for (name, check) in view.checks.iter().filter(|(_, c)| !c.ok) {
            let _ = write!(
                b,
                "<li><b>{}</b>: {}</li>",
                escape(name),
                escape(&check.detail)
            );
        }
        b.push_str("</ul>");
    }

    // At a glance.
    let total_lag: u64 = view.lag.iter().map(|p| p.lag).sum();
    let failed = view.runs.get("failed").copied().unwrap_or(0)
        + view.runs.get("timed_out").copied().unwrap_or(0);
    let letters: u64 = view.dead_letters.values().sum();
    b.push_str("<section><div class=\"grid\">");
    stat(
        &mut b,
        &format!("{} / {}", view.pool_size, view.pool_target),
        &format!(
            "pool size / target ({}–{})",
            view.min_workers, view.max_workers
        ),
    );
    stat(&mut b, &view.in_flight.to_string(), "running now");
    stat(&mut b, &view.queue_depth.to_string(), "queued here");
    stat(&mut b, &total_lag.to_string(), "lag (records)");
    stat(
        &mut b,
        &view.runs.get("succeeded").copied().unwrap_or(0).to_string(),
        "succeeded",
    );
    stat(&mut b, &failed.to_string(), "failed or timed out");
    stat(&mut b, &letters.to_string(), "dead letters");
    stat(
        &mut b,
        &view.duplicates_skipped.to_string(),
        "duplicates skipped",
    );
    b.push_str("</div></section>");

    // The pool.
    b.push_str("<section id=\"pool\"><h2>Pool, last 10 minutes</h2>");
    b.push_str(&pool_chart(view));
    b.push_str("</section>");

    // Running now.
    let _ = write!(
        b,
        "<section id=\"running\"><h2>Running now <span class=\"muted\">({})</span></h2>",
        view.running.len()
    );
    if view.running.is_empty() {
        b.push_str("<p class=\"muted\">No job is running.</p>");
    } else {
        b.push_str(
            "<table><tr><th>job</th><th class=\"wide\">dispatchId</th><th>attempt</th><th class=\"wide\">since</th><th>for</th></tr>",
        );
        for r in &view.running {
            let _ = write!(
                b,
                "<tr><td class=\"wrap name\">{}</td><td class=\"wrap muted wide\">{}</td><td>{}</td><td class=\"wide\">{}</td><td>{}</td></tr>",
                escape(&r.job_name),
                escape(&r.dispatch_id),
                r.attempt,
                time_of_day(r.since),
                escape(&seconds(r.running_seconds)),
            );
        }
        b.push_str("</table>");
    }
    b.push_str("</section>");

    // Lag.
    let _ = write!(
        b,
        "<section id=\"lag\"><h2>Lag per partition <span class=\"muted\">of {}</span></h2>",
        escape(&view.topic)
    );
    if view.lag.is_empty() {
        b.push_str("<p class=\"muted\">No partition assigned (yet).</p>");
    } else {
        b.push_str("<table><tr><th>partition</th><th>position</th><th>end</th><th>lag</th></tr>");
        let opt = |v: Option<i64>| v.map_or_else(|| "–".to_string(), |v| v.to_string());
        for p in &view.lag {
            let class = if p.lag == 0 { "" } else { " class=\"warn\"" };
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td{class}>{}</td></tr>",
                p.partition,
                opt(p.position),
                opt(p.end),
                p.lag
            );
        }
        b.push_str("</table>");
    }
    b.push_str("</section>");

    // Results.
    let _ = write!(
        b,
        "<section id=\"results\"><h2>Last results <span class=\"muted\">({} of at most {RESULTS})</span></h2>",
        view.results.len()
    );
    if view.results.is_empty() {
        b.push_str("<p class=\"muted\">No job has finished yet.</p>");
    } else {
        b.push_str(
            "<table><tr><th class=\"wide\">finished</th><th>job</th><th>status</th><th class=\"wide\">attempt</th><th>took</th></tr>",
        );
        for r in &view.results {
            let _ = write!(
                b,
                "<tr><td class=\"wide\">{}</td><td class=\"wrap name\" title=\"{}\">{}</td><td class=\"{}\">{}</td><td class=\"wide\">{}</td><td>{}</td></tr>",
                time_of_day(r.finished_at),
                escape(&r.dispatch_id),
                escape(&r.job_name),
                status_class(r.status),
                escape(r.status),
                r.attempt,
                escape(&seconds(r.duration_seconds)),
            );
        }
        b.push_str("</table>");
    }
    b.push_str("</section>");

    // Dead letters.
    let _ = write!(
        b,
        "<section id=\"dead-letters\"><h2>Recent dead letters <span class=\"muted\">({} of at most {DEAD_LETTERS})</span></h2>",
        view.recent_dead_letters.len()
    );
    if view.recent_dead_letters.is_empty() {
        b.push_str("<p class=\"muted\">None.</p>");
    } else {
        b.push_str(
            "<table><tr><th class=\"wide\">at</th><th>reason</th><th>job</th><th>partition</th><th>offset</th></tr>",
        );
        for d in &view.recent_dead_letters {
            let _ = write!(
                b,
                "<tr><td class=\"wide\">{}</td><td class=\"bad\">{}</td><td class=\"wrap name\">{}</td><td title=\"{}\">{}</td><td>{}</td></tr>",
                time_of_day(d.at),
                escape(d.reason),
                escape(&d.job_name),
                escape(&d.topic),
                d.partition,
                d.offset,
            );
        }
        b.push_str("</table>");
    }
    b.push_str("</section>");
    document(
        &format!("cronq worker {}", view.worker),
        REFRESH_SECONDS,
        &b,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::autoscale::ScaleConfig;
    use crate::worker::queue::Ordering as QueueOrdering;
    use crate::worker::results::ReportConfig;
    use crate::worker::StartAt;

    fn config() -> WorkerConfig {
        WorkerConfig {
            kafka: crate::kafka::Connection::plaintext(vec!["127.0.0.1:9".into()]),
            topic: "jobs".into(),
            group: "workers".into(),
            start: StartAt::Earliest,
            ordering: QueueOrdering::Ordered,
            prefetch: 16,
            report: ReportConfig {
                results_topic: "jobs.results".into(),
                dlq_topic: "jobs.dlq".into(),
                max_attempts: 3,
                retry_backoff: Duration::from_millis(50),
                worker: "w-1".into(),
                max_output: 8192,
                max_age: None,
            },
            scale: ScaleConfig {
                min: 1,
                max: 8,
                target_drain: Duration::from_secs(10),
                scale_down_delay: Duration::from_secs(30),
            },
            scale_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(5),
            commit_interval: Duration::from_secs(1),
            session_timeout: Duration::from_secs(45),
            dedup_capacity: 100,
            create_topics: false,
            partitions: 1,
            replication_factor: 1,
        }
    }

    fn message(name: &str, scheduled_at: &str) -> JobMessage {
        JobMessage {
            v: 1,
            job_name: name.into(),
            priority: 0,
            job: "true".into(),
            cron_time: "* * * * *".into(),
            scheduled_at: scheduled_at.into(),
            dispatch_id: format!("{name}@{scheduled_at}"),
            timeout_ms: None,
            max_attempts: None,
            overlap: None,
            not_before: None,
        }
    }

    fn run(name: &str, attempt: u32) -> JobRun {
        JobRun {
            message: message(name, "2026-11-26T00:01:00Z"),
            attempt,
        }
    }

    fn exported(observer: &Observer) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, observer.registry()).unwrap();
        text
    }

    #[test]
    fn the_heartbeat_may_be_silent_three_turns_and_never_less_than_30_s() {
        let mut c = config();
        assert_eq!(max_silence(&c), Duration::from_secs(30));
        c.commit_interval = Duration::from_secs(60);
        c.scale_interval = Duration::from_secs(20);
        assert_eq!(max_silence(&c), Duration::from_secs(60));
    }

    #[test]
    fn attempts_are_counted_by_status_and_timed_without_a_job_label() {
        let observer = Observer::new(&config());
        observer
            .attempt_started(&run("a", 1))
            .end(Status::Succeeded);
        observer.attempt_started(&run("b", 1)).end(Status::Failed);
        observer.attempt_started(&run("b", 2)).end(Status::TimedOut);
        observer.expired(&message("c", "2026-11-26T00:01:00Z"));
        observer.dead_letter(DeadReason::AttemptsExhausted, "b", "jobs", 0, 7);
        observer.duplicate();
        let text = exported(&observer);
        for line in [
            "cronq_job_runs_total{status=\"succeeded\"} 1",
            "cronq_job_runs_total{status=\"failed\"} 1",
            "cronq_job_runs_total{status=\"timed_out\"} 1",
            "cronq_job_runs_total{status=\"expired\"} 1",
            "cronq_job_runs_total{status=\"rejected\"} 0",
            // Expired jobs did not run: not timed.
            "cronq_job_duration_seconds_count 3",
            // First attempts only; the expired one never started.
            "cronq_job_start_delay_seconds_count 2",
            "cronq_dead_letters_total{reason=\"attempts_exhausted\"} 1",
            "cronq_dead_letters_total{reason=\"malformed\"} 0",
            "cronq_duplicates_skipped_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(
            !text.contains("job_name") && !text.contains("\"a\""),
            "{text}"
        );
    }

    #[test]
    fn skipped_and_cancelled_runs_are_counted_and_only_runs_that_ran_are_timed() {
        let observer = Observer::new(&config());
        let before = exported(&observer);
        for line in [
            "cronq_job_runs_total{status=\"skipped\"} 0",
            "cronq_job_runs_total{status=\"cancelled\"} 0",
        ] {
            assert!(
                before.lines().any(|l| l == line),
                "no {line:?} before any run"
            );
        }
        observer.not_run(&message("s", "2026-11-26T00:01:00Z"), Status::Skipped);
        observer.not_run(&message("s", "2026-11-26T00:02:00Z"), Status::Skipped);
        // A queued run replaced before it started, and a running one ended by the replacement.
        observer.not_run(&message("r", "2026-11-26T00:01:00Z"), Status::Cancelled);
        observer
            .attempt_started(&run("r", 1))
            .end(Status::Cancelled);
        let text = exported(&observer);
        for line in [
            "cronq_job_runs_total{status=\"skipped\"} 2",
            "cronq_job_runs_total{status=\"cancelled\"} 2",
            "cronq_job_duration_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        let view = observer.snapshot();
        assert_eq!((view.runs["skipped"], view.runs["cancelled"]), (2, 2));
        assert_eq!(view.results.len(), 4);
        assert!(view
            .results
            .iter()
            .any(|r| r.status == "skipped" && r.attempt == 0));
    }

    #[test]
    fn an_attempt_whose_handler_dies_leaves_the_running_list_as_failed() {
        let observer = Observer::new(&config());
        let attempt = observer.attempt_started(&run("doomed", 1));
        assert_eq!(observer.snapshot().running.len(), 1);
        assert_eq!(observer.snapshot().running[0].job_name, "doomed");
        drop(attempt);
        let view = observer.snapshot();
        assert!(view.running.is_empty());
        assert_eq!(view.results[0].job_name, "doomed");
        assert_eq!(view.results[0].status, "failed");
        assert_eq!(view.runs["failed"], 1);
    }

    #[test]
    fn only_the_latest_results_and_dead_letters_are_kept_newest_first() {
        let observer = Observer::new(&config());
        for i in 0..RESULTS + 30 {
            observer
                .attempt_started(&run(&format!("job-{i}"), 2))
                .end(Status::Succeeded);
            observer.dead_letter(
                DeadReason::Malformed,
                &format!("job-{i}"),
                "jobs",
                0,
                i as i64,
            );
        }
        let view = observer.snapshot();
        assert_eq!(view.results.len(), RESULTS);
        assert_eq!(view.results[0].job_name, format!("job-{}", RESULTS + 29));
        assert_eq!(view.results[RESULTS - 1].job_name, "job-30");
        assert_eq!(view.recent_dead_letters.len(), DEAD_LETTERS);
        assert_eq!(view.recent_dead_letters[0].offset, (RESULTS + 29) as i64);
        assert_eq!(
            view.runs["succeeded"],
            (RESULTS + 30) as u64,
            "counters count all"
        );
    }

    #[test]
    fn long_names_are_cut_for_the_page() {
        let observer = Observer::new(&config());
        let long = "x".repeat(10_000);
        observer.dead_letter(DeadReason::Malformed, &long, "jobs", 0, 1);
        let kept = &observer.snapshot().recent_dead_letters[0].job_name;
        assert_eq!(kept.chars().count(), MAX_TEXT + 1);
        assert!(kept.ends_with('…'));
    }

    #[test]
    fn the_pool_history_keeps_ten_minutes_of_ten_second_buckets_with_their_largest_values() {
        let observer = Observer::new(&config());
        let s = Duration::from_secs;
        observer.pool_at(s(0), 1, 1, 0);
        observer.pool_at(s(3), 1, 4, 2);
        observer.pool_at(s(7), 4, 2, 1);
        let view = observer.snapshot();
        assert_eq!(view.pool_history.len(), 1);
        let first = view.pool_history[0];
        assert_eq!((first.size, first.target, first.busy), (4, 4, 2));
        // A pool lowered below its busy executors still has them until their jobs end.
        observer.pool_at(s(15), 2, 1, 3);
        let second = *observer.snapshot().pool_history.last().unwrap();
        assert_eq!((second.size, second.target, second.busy), (3, 1, 3));
        assert_eq!((second.at - first.at).num_seconds(), 10);
        let text = exported(&observer);
        assert!(
            text.contains("cronq_pool_resizes_total{direction=\"up\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("cronq_pool_resizes_total{direction=\"down\"} 2"),
            "{text}"
        );
        assert!(text.contains("cronq_worker_pool_size 3"), "{text}");
        assert!(text.contains("cronq_worker_pool_target 1"), "{text}");
        // Ten minutes later the first bucket is gone.
        observer.pool_at(s(600), 1, 1, 0);
        let history = observer.snapshot().pool_history;
        assert_eq!(history.len(), 2);
        assert_eq!(history[0].at, second.at);
        assert!(history.len() <= (POOL_WINDOW.as_secs() / POOL_BUCKET.as_secs()) as usize);
    }

    #[test]
    fn lag_of_partitions_no_longer_assigned_is_no_longer_exported() {
        let observer = Observer::new(&config());
        let lag = |partition, lag| PartitionLag {
            topic: "jobs".into(),
            partition,
            position: Some(10),
            end: Some(10 + lag as i64),
            lag,
        };
        observer.lag(vec![lag(0, 5), lag(1, 0)], Ok(()));
        let text = exported(&observer);
        assert!(
            text.contains("cronq_worker_lag{topic=\"jobs\",partition=\"0\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("cronq_worker_lag{topic=\"jobs\",partition=\"1\"} 0"),
            "{text}"
        );
        observer.lag(vec![lag(1, 2)], Err("timed out".into()));
        let text = exported(&observer);
        assert!(!text.contains("partition=\"0\""), "{text}");
        assert!(
            text.contains("cronq_worker_lag{topic=\"jobs\",partition=\"1\"} 2"),
            "{text}"
        );
        let kafka = &observer.health().readiness().checks["kafka"];
        assert!(!kafka.ok && kafka.detail.contains("timed out"), "{kafka:?}");
    }

    #[test]
    fn ready_once_joined_reached_and_consuming_and_not_while_stopping() {
        let observer = Observer::new(&config());
        let r = observer.health().readiness();
        assert!(!r.ready);
        assert!(r.checks["group"].detail.contains("not joined"));
        let _beat = observer.consuming();
        observer.lag(Vec::new(), Ok(()));
        assert!(!observer.health().readiness().ready, "not a member yet");
        observer.assigned(0);
        let r = observer.health().readiness();
        assert!(r.ready, "{r:?}");
        assert!(r.checks["group"].detail.contains("no partitions"));
        observer.stopping();
        let r = observer.health().readiness();
        assert!(!r.ready);
        assert!(r.checks["consuming"].detail.contains("shutting down"));
    }

    #[test]
    fn names_from_the_topic_are_text_on_the_page_never_markup() {
        let hostile = "<script>alert(1)</script>\"'&<img src=x onerror=y>";
        let mut c = config();
        c.report.worker = hostile.into();
        c.topic = hostile.into();
        let observer = Observer::new(&c);
        let _running = observer.attempt_started(&JobRun {
            message: message(hostile, hostile),
            attempt: 1,
        });
        observer
            .attempt_started(&run(hostile, 1))
            .end(Status::Failed);
        observer.dead_letter(DeadReason::Malformed, hostile, hostile, 0, 1);
        observer.lag(
            vec![PartitionLag {
                topic: hostile.into(),
                partition: 0,
                position: None,
                end: None,
                lag: 0,
            }],
            Err(hostile.into()),
        );
        let html = observer.page();
        assert!(
            !html.contains("<script") && !html.contains("<img"),
            "{html}"
        );
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;&lt;img"));
        // Every place a name appears: worker, topic, running, results, dead letters, readiness.
        assert!(
            html.matches("&lt;img src=x onerror=y&gt;").count() >= 6,
            "{html}"
        );
    }
}
