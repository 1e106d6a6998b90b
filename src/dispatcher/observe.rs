//! What a running dispatcher shows an operator over `--http`: its Prometheus metrics, its
//! readiness checks and tick-loop heartbeat, and its status page (`GET /`, `GET /status.json`).
//!
//! ```text
//!  tick loop ── minutes handed out, skips, reloads, tick lag ──┐
//!  producer pool ── acks per topic (a counter handle per partition task), errors ──┤
//!  slot ledger ── skew per settled batch, each minute's result ──┼──► Observer ──► /metrics
//!  service ── once a tick: queue, backlog, shards, cursors; once a minute: next runs ──┤      ├─► /, /status.json
//!  watchdog ── once a minute: every shard's last cursor record (the group) ──┘      └─► /readyz, /healthz
//! ```
//!
//! Nothing here costs per record: counters are resolved once per topic and added to per batch,
//! the skew histogram takes a whole batch's acks of one slot in one call, and the page reads only
//! what the loop already keeps. The next runs come from the wheels' earliest slots once a minute
//! ([`crate::dispatcher::Scheduler::upcoming`]); a request never walks the schedule.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};
use serde::Serialize;

use super::catchup::Skips;
use super::control::{PauseTable, PausedView};
use super::status::GroupView;
use super::tick_loop::TickLoop;
use crate::clock::{Clock, Minute};
use crate::obs::health::{Beat, Health};
use crate::obs::http::Site;
use crate::obs::page::{bar_chart, document, escape, format_number};
use crate::schedule::LoadError;

/// Runs listed on the status page.
pub const UPCOMING: usize = 50;

/// Paused jobs listed on the status page (all of them in `/status.json`).
const PAUSED_LISTED: usize = 100;

/// Minutes of history on the status page.
pub const HISTORY_MINUTES: i64 = 60;

/// Bounds of `cronq_dispatch_skew_seconds`: 1 ms to 10 minutes (a catch-up after an outage).
const SKEW_BUCKETS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// Bounds of `cronq_schedule_reload_seconds`: a small file in milliseconds, a million jobs in
/// seconds.
const RELOAD_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// How the page refreshes itself, in seconds.
const REFRESH_SECONDS: u32 = 10;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabel {
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabel {
    topic: String,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShardLabel {
    shard: u32,
}

/// Why a produce failed, as `cronq_produce_errors_total{kind}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProduceErrorKind {
    /// A produce request failed because the broker could not be reached (retried).
    Unreachable,
    /// A produce request failed with another transient error (retried).
    Retriable,
    /// A record the broker refused for good (dropped).
    Rejected,
    /// An attempt to make a topic usable failed (its dispatches wait).
    Topic,
}

impl ProduceErrorKind {
    fn label(self) -> &'static str {
        match self {
            ProduceErrorKind::Unreachable => "unreachable",
            ProduceErrorKind::Retriable => "retriable",
            ProduceErrorKind::Rejected => "rejected",
            ProduceErrorKind::Topic => "topic",
        }
    }
}

/// A histogram that takes `n` equal observations in one call: every record of a produce batch
/// for one slot is acked at the same instant, so its skew is observed once per batch, not once
/// per record. Encoded by prometheus-client like its own histograms.
#[derive(Debug, Clone)]
pub struct BatchHistogram {
    bounds: Arc<[f64]>,
    inner: Arc<Mutex<HistogramState>>,
}

#[derive(Debug)]
struct HistogramState {
    sum: f64,
    count: u64,
    /// Per bucket (not cumulative), the last one +Inf.
    buckets: Vec<u64>,
}

impl BatchHistogram {
    fn new(bounds: &[f64]) -> BatchHistogram {
        BatchHistogram {
            bounds: bounds.iter().copied().chain([f64::INFINITY]).collect(),
            inner: Arc::new(Mutex::new(HistogramState {
                sum: 0.0,
                count: 0,
                buckets: vec![0; bounds.len() + 1],
            })),
        }
    }

    /// `n` observations of `value`.
    pub fn observe_n(&self, value: f64, n: u64) {
        if n == 0 {
            return;
        }
        let bucket = self
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(self.bounds.len() - 1);
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        s.sum += value * n as f64;
        s.count += n;
        s.buckets[bucket] += n;
    }

    /// (sum, count) so far.
    pub fn totals(&self) -> (f64, u64) {
        let s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        (s.sum, s.count)
    }
}

impl TypedMetric for BatchHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for BatchHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = {
            let s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            let buckets: Vec<(f64, u64)> = self
                .bounds
                .iter()
                .copied()
                .zip(s.buckets.iter().copied())
                .collect();
            (s.sum, s.count, buckets)
        };
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// `cronq_dispatched_total` of one topic, resolved once, plus the total the page shows.
#[derive(Debug, Clone)]
pub struct TopicCounter {
    topic: Counter,
    total: Counter,
}

impl TopicCounter {
    /// `n` more dispatches delivered.
    pub fn add(&self, n: u64) {
        self.topic.inc_by(n);
        self.total.inc_by(n);
    }
}

/// The dispatcher's Prometheus metrics (see the README's table).
#[derive(Debug)]
struct Metrics {
    dispatched: Family<TopicLabel, Counter>,
    skew: BatchHistogram,
    skipped: Family<ReasonLabel, Counter>,
    undelivered: Gauge,
    produce_errors: Family<ErrorLabel, Counter>,
    queue_depth: Gauge,
    delay_queue_depth: Gauge,
    schedule_jobs: Gauge,
    reloads: Family<ResultLabel, Counter>,
    reload_seconds: Histogram,
    tick_lag: Gauge<f64, AtomicU64>,
    shards_owned: Gauge,
    shard_cursor_lag: Family<ShardLabel, Gauge<f64, AtomicU64>>,
    takeovers: Counter,
    /// Every topic's `dispatched` (not exported: the page's total).
    dispatched_all: Counter,
}

impl Metrics {
    fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            dispatched: Family::default(),
            skew: BatchHistogram::new(&SKEW_BUCKETS),
            skipped: Family::default(),
            undelivered: Gauge::default(),
            produce_errors: Family::default(),
            queue_depth: Gauge::default(),
            delay_queue_depth: Gauge::default(),
            schedule_jobs: Gauge::default(),
            reloads: Family::default(),
            reload_seconds: Histogram::new(RELOAD_BUCKETS),
            tick_lag: Gauge::default(),
            shards_owned: Gauge::default(),
            shard_cursor_lag: Family::default(),
            takeovers: Counter::default(),
            dispatched_all: Counter::default(),
        };
        registry.register(
            "cronq_dispatched",
            "Dispatches the broker acked (dry run: printed), by topic",
            m.dispatched.clone(),
        );
        registry.register_with_unit(
            "cronq_dispatch_skew",
            "Ack time minus slot time of each dispatch",
            Unit::Seconds,
            m.skew.clone(),
        );
        registry.register(
            "cronq_slots_skipped",
            "Job slots left out, by reason: catchup_window (missed, older than the job's window), catchup_rule (missed, left out by its catch-up rule) or paused (its job is paused)",
            m.skipped.clone(),
        );
        registry.register(
            "cronq_undelivered",
            "Dispatches handed to the producer pool and not yet acked or dropped",
            m.undelivered.clone(),
        );
        registry.register(
            "cronq_produce_errors",
            "Produce failures by topic and kind: unreachable and retriable (failed requests, retried), rejected (records dropped), topic (failed attempts to make a topic usable)",
            m.produce_errors.clone(),
        );
        registry.register(
            "cronq_queue_depth",
            "Dispatches waiting in the queue between the tick loop and the sink",
            m.queue_depth.clone(),
        );
        registry.register(
            "cronq_delay_queue_depth",
            "Dispatches of jobs with a jitter waiting for their notBefore in the delay queue (--delay-capacity)",
            m.delay_queue_depth.clone(),
        );
        registry.register(
            "cronq_schedule_jobs",
            "Jobs in this dispatcher's wheels (enabled jobs of its shards with a run to come)",
            m.schedule_jobs.clone(),
        );
        registry.register(
            "cronq_schedule_reloads",
            "Changes of the schedule file, by result: ok, rejected (kept the last good schedule), vanished (unreadable)",
            m.reloads.clone(),
        );
        registry.register_with_unit(
            "cronq_schedule_reload",
            "Time to read, validate and compile a changed schedule file",
            Unit::Seconds,
            m.reload_seconds.clone(),
        );
        registry.register_with_unit(
            "cronq_tick_lag",
            "How late after its minute boundary the last minute was handed out",
            Unit::Seconds,
            m.tick_lag.clone(),
        );
        registry.register(
            "cronq_shards_owned",
            "Shards this dispatcher owns",
            m.shards_owned.clone(),
        );
        registry.register_with_unit(
            "cronq_shard_cursor_lag",
            "Time since the end of the last minute whose every dispatch was acked, per owned shard",
            Unit::Seconds,
            m.shard_cursor_lag.clone(),
        );
        registry.register(
            "cronq_takeovers",
            "Shards taken over from their cursor (start-up, rebalance, a dead member)",
            m.takeovers.clone(),
        );
        m
    }
}

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

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
struct ScheduleState {
    path: String,
    md5: Option<String>,
    loaded_at: Option<String>,
    last_reload: Option<Reload>,
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

#[derive(Debug, Default)]
struct PageState {
    schedule: Option<ScheduleState>,
    minutes: BTreeMap<Minute, MinuteRow>,
    upcoming: Vec<UpcomingRun>,
    upcoming_for: Option<Minute>,
    owned: Vec<OwnedShard>,
    group: Option<GroupView>,
    total_shards: Option<u32>,
    pauses: Option<Arc<PauseTable>>,
}

/// Everything a dispatcher shows: metrics, probes and the status page's state.
pub struct Observer {
    registry: Arc<Registry>,
    health: Arc<Health>,
    metrics: Metrics,
    clock: Arc<dyn Clock>,
    mode: Mode,
    default_topic: String,
    page: Mutex<PageState>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// The readiness checks of a dispatcher.
pub mod check {
    /// The schedule file was loaded.
    pub const SCHEDULE: &str = "schedule";
    /// The broker answers.
    pub const KAFKA: &str = "kafka";
    /// The group assigned this member its shards.
    pub const SHARDS: &str = "shards";
    /// The process is not shutting down.
    pub const RUNNING: &str = "running";
}

/// The silence the tick-loop heartbeat is allowed: three ticks, at least 30 seconds (a reload
/// swapped in or a minute of a million jobs queued must not look like a hang).
pub fn heartbeat_silence(tick: Duration) -> Duration {
    (tick * 3).max(Duration::from_secs(30))
}

impl Observer {
    /// An observer for a dispatcher running as `mode`, sending jobs without a topic to
    /// `default_topic`, on `clock`.
    pub fn new(mode: Mode, default_topic: &str, clock: Arc<dyn Clock>) -> Arc<Observer> {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry);
        let checks: &[(&'static str, &str)] = match mode {
            Mode::DryRun => &[(check::SCHEDULE, "not loaded yet")],
            Mode::Group { .. } => &[
                (check::SCHEDULE, "not loaded yet"),
                (check::KAFKA, "not reached yet"),
                (check::SHARDS, "not assigned yet: joining the group"),
            ],
        };
        let health = Health::new(checks);
        health.set(check::RUNNING, true, "running");
        // Known series from the start, at 0, so that rates and alerts see them before the first
        // event.
        for result in ["ok", "rejected", "vanished"] {
            let _ = metrics.reloads.get_or_create(&ResultLabel { result });
        }
        for reason in ["catchup_window", "catchup_rule", "paused"] {
            let _ = metrics.skipped.get_or_create(&ReasonLabel { reason });
        }
        let _ = metrics.dispatched.get_or_create(&TopicLabel {
            topic: default_topic.to_string(),
        });
        for kind in [
            ProduceErrorKind::Unreachable,
            ProduceErrorKind::Retriable,
            ProduceErrorKind::Rejected,
            ProduceErrorKind::Topic,
        ] {
            let _ = metrics.produce_errors.get_or_create(&ErrorLabel {
                topic: default_topic.to_string(),
                kind: kind.label(),
            });
        }
        Arc::new(Observer {
            registry: Arc::new(registry),
            health,
            metrics,
            clock,
            mode,
            default_topic: default_topic.to_string(),
            page: Mutex::new(PageState::default()),
        })
    }

    fn page(&self) -> std::sync::MutexGuard<'_, PageState> {
        self.page.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The site `--http` serves for this dispatcher.
    pub fn site(self: &Arc<Self>) -> Site {
        let page = Arc::clone(self);
        let status = Arc::clone(self);
        Site {
            metrics: Arc::clone(&self.registry),
            health: Arc::clone(&self.health),
            page: Arc::new(move || page.render()),
            status: Arc::new(move || {
                serde_json::to_value(status.status()).unwrap_or(serde_json::Value::Null)
            }),
        }
    }

    /// The probes.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// The tick loop's heartbeat for a loop waking every `tick`.
    pub fn heartbeat(&self, tick: Duration) -> Beat {
        self.health.heartbeat("tick_loop", heartbeat_silence(tick))
    }

    // ---- what the parts report ----

    /// The schedule file at `path` (MD5 `md5`) was loaded at start.
    pub fn schedule_loaded(&self, path: &std::path::Path, md5: &str) {
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

    /// A changed schedule file was loaded and swapped in.
    pub fn reload_ok(&self, md5: &str, took: Duration) {
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
        self.metrics
            .skipped
            .get_or_create(&ReasonLabel { reason: "paused" })
            .inc_by(n);
    }

    /// The control topic's records changed: the page lists the pauses in force from `table`.
    pub fn pauses_changed(&self, table: &Arc<PauseTable>) {
        self.page().pauses = Some(Arc::clone(table));
    }

    /// Slots the catch-up rules left out this tick.
    pub fn skipped(&self, skips: &Skips) {
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
        if let Some(lag) = lag {
            self.metrics.tick_lag.set(lag.as_secs_f64());
        }
        let mut page = self.page();
        let row = page.minutes.entry(minute).or_default();
        row.dispatched += dispatched;
        while page.minutes.len() > 2 * HISTORY_MINUTES as usize {
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
        let mut page = self.page();
        if page
            .minutes
            .first_key_value()
            .is_some_and(|(first, _)| minute < *first)
            && page.minutes.len() >= 2 * HISTORY_MINUTES as usize
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
    pub fn acked(&self, skew: Duration, n: u64) {
        self.metrics.skew.observe_n(skew.as_secs_f64(), n);
    }

    /// The counter of dispatches delivered to `topic`: resolve once (per partition task), add
    /// per batch.
    pub fn dispatched_to(&self, topic: &str) -> TopicCounter {
        TopicCounter {
            topic: self.metrics.dispatched.get_or_create_owned(&TopicLabel {
                topic: topic.to_string(),
            }),
            total: self.metrics.dispatched_all.clone(),
        }
    }

    /// A produce to `topic` failed as `kind` (`n` records or requests).
    pub fn produce_error(&self, topic: &str, kind: ProduceErrorKind, n: u64) {
        self.metrics
            .produce_errors
            .get_or_create(&ErrorLabel {
                topic: topic.to_string(),
                kind: kind.label(),
            })
            .inc_by(n);
    }

    /// The broker was reached (or not, with why).
    pub fn kafka_reachable(&self, ok: bool, detail: impl Into<String>) {
        self.health.set(check::KAFKA, ok, detail);
    }

    /// The group assigned `shards` of `total` (generation `generation`).
    pub fn assigned(&self, shards: &[u32], total: u32) {
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
        self.health.set(
            check::SHARDS,
            false,
            "the group session expired; rejoining for a new assignment",
        );
    }

    /// A shard was taken over from its cursor.
    pub fn took_over(&self) {
        self.metrics.takeovers.inc();
    }

    /// The watchdog's read of the whole group.
    pub fn group_read(&self, view: GroupView) {
        self.page().group = Some(view);
    }

    /// Shutting down: not ready any more.
    pub fn stopping(&self) {
        self.health.set(
            check::RUNNING,
            false,
            "shutting down: finishing the minute in progress and handing shards over",
        );
    }

    /// The delay queue's depth gauge (`cronq_delay_queue_depth`), which the delay task sets.
    pub fn delay_queue_gauge(&self) -> Gauge {
        self.metrics.delay_queue_depth.clone()
    }

    /// Once a tick, after it ran: the queue, the backlog, the owned shards and their cursors, and
    /// once a minute the next runs.
    pub fn after_tick(&self, tick_loop: &TickLoop, undelivered: u64) {
        let m = &self.metrics;
        m.queue_depth.set(tick_loop.queue_depth() as i64);
        m.undelivered.set(undelivered as i64);
        let now = self.clock.now();
        let mut owned = Vec::with_capacity(tick_loop.shards().len());
        let mut jobs = 0;
        let mut previous: BTreeSet<u32> = {
            let page = self.page();
            page.owned.iter().map(|s| s.shard).collect()
        };
        for (&shard, run) in tick_loop.shards() {
            jobs += run.scheduler.scheduled();
            previous.remove(&shard);
            let cursor = run.lease.as_ref().map(|l| (l.cursor(), l.outstanding()));
            if let Some((cursor, _)) = cursor {
                let lag = cursor.next().start().map_or(0.0, |end| {
                    (now - end).num_milliseconds().max(0) as f64 / 1000.0
                });
                m.shard_cursor_lag
                    .get_or_create(&ShardLabel { shard })
                    .set(lag);
            }
            owned.push(OwnedShard {
                shard,
                cursor: cursor.and_then(|(c, _)| c.start()).map(rfc3339),
                outstanding: cursor.map_or(0, |(_, o)| o),
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
        let processed = tick_loop
            .shards()
            .values()
            .map(|r| r.scheduler.processed())
            .max();
        let refresh = self.page().upcoming_for != processed;
        // Once a minute, off the request path: the first runs of each shard's wheel, merged.
        let upcoming = refresh.then(|| self.upcoming(tick_loop));
        let mut page = self.page();
        page.owned = owned;
        if let Some(upcoming) = upcoming {
            page.upcoming = upcoming;
            page.upcoming_for = processed;
        }
    }

    fn upcoming(&self, tick_loop: &TickLoop) -> Vec<UpcomingRun> {
        let mut runs: Vec<_> = tick_loop
            .shards()
            .values()
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

    // ---- what the page and /status.json show ----

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
            paused: page
                .pauses
                .as_ref()
                .map(|t| t.view(now))
                .unwrap_or_default(),
        }
    }

    /// The status page.
    pub fn render(&self) -> String {
        render(&self.status())
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
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
    schedule: Option<ScheduleState>,
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
}

/// `12:34` of an RFC 3339 instant.
fn hhmm(rfc: &str) -> &str {
    rfc.get(11..16).unwrap_or(rfc)
}

/// "in 3 min", "in 2 h 5 min" from `now` to `at`.
fn in_how_long(now: &str, at: &str) -> String {
    let (Ok(now), Ok(at)) = (
        DateTime::parse_from_rfc3339(now),
        DateTime::parse_from_rfc3339(at),
    ) else {
        return String::new();
    };
    let minutes = ((at - now).num_seconds().max(0) + 59) / 60;
    match minutes {
        0 => "now".into(),
        m if m < 60 => format!("in {m} min"),
        m if m < 48 * 60 => format!("in {} h {} min", m / 60, m % 60),
        m => format!("in {} d", m / (24 * 60)),
    }
}

fn stat(out: &mut String, value: &str, label: &str, class: &str) {
    let _ = write!(
        out,
        "<div class=\"stat\"><b class=\"{class}\">{}</b><span>{}</span></div>",
        escape(value),
        escape(label)
    );
}

/// The status page of `s` (every value from the data escaped).
pub fn render(s: &Status) -> String {
    let mut body = String::new();
    let (title, subtitle) = match &s.mode {
        Mode::DryRun => (
            "cronq dispatcher".to_string(),
            "dry run: dispatches are printed, not sent".to_string(),
        ),
        Mode::Group {
            group,
            member,
            state_topic,
        } => (
            format!("cronq dispatcher · {member}"),
            format!("group {group} · state topic {state_topic}"),
        ),
    };
    let (state, class) = if !s.liveness.alive {
        ("stuck", "bad")
    } else if s.readiness.ready {
        ("ready", "ok")
    } else {
        ("not ready", "warn")
    };
    let _ = write!(
        body,
        "<h1>{} <span class=\"{class}\">● {state}</span></h1><p class=\"muted\">{} · {} UTC · refreshes every {REFRESH_SECONDS} s</p>",
        escape(&title),
        escape(&subtitle),
        escape(s.at.get(..19).unwrap_or(&s.at)).replace('T', " "),
    );
    let not_ready: Vec<String> = s
        .readiness
        .checks
        .iter()
        .filter(|(_, c)| !c.ok)
        .map(|(name, c)| format!("{name}: {}", c.detail))
        .collect();
    if !not_ready.is_empty() {
        let _ = write!(
            body,
            "<section><h2 class=\"warn\">Not ready</h2><ul>{}</ul></section>",
            not_ready
                .iter()
                .map(|l| format!("<li>{}</li>", escape(l)))
                .collect::<String>()
        );
    }

    // A pause stops dispatches: it is the first thing an operator must see.
    if let Some(all) = &s.paused.all {
        let _ = write!(
            body,
            "<section><h2 class=\"bad\">ALL JOBS PAUSED</h2><p>Nothing is dispatched: <code>cronq pause --all</code> since {}{} by {}{}. <code>cronq resume --all</code> ends it.</p></section>",
            escape(&all.since),
            all.until.as_ref().map_or(String::new(), |u| format!(" until {}", escape(u))),
            escape(&all.by),
            all.reason.as_ref().map_or(String::new(), |r| format!(": {}", escape(r))),
        );
    }
    if !s.paused.jobs.is_empty() {
        let _ = write!(
            body,
            "<section><h2 class=\"warn\">Paused jobs ({})</h2><table><tr><th>job</th><th>since</th><th>until</th><th>by</th><th>reason</th></tr>",
            s.paused.jobs.len()
        );
        for p in s.paused.jobs.iter().take(PAUSED_LISTED) {
            let _ = write!(
                body,
                "<tr><td class=\"wrap\">{}</td><td>{}</td><td>{}</td><td class=\"wrap\">{}</td><td class=\"wrap\">{}</td></tr>",
                escape(p.job.as_deref().unwrap_or("")),
                escape(&p.since),
                escape(p.until.as_deref().unwrap_or("until resumed")),
                escape(&p.by),
                escape(p.reason.as_deref().unwrap_or("")),
            );
        }
        body.push_str("</table>");
        if s.paused.jobs.len() > PAUSED_LISTED {
            let _ = write!(
                body,
                "<p class=\"muted\">and {} more (all in /status.json)</p>",
                s.paused.jobs.len() - PAUSED_LISTED
            );
        }
        body.push_str("</section>");
    }

    // The numbers that matter first.
    let last_hour: u64 = s.minutes.iter().map(|m| m.dispatched).sum();
    let last_skew = s.minutes.iter().rev().find_map(|m| m.skew_max_ms);
    body.push_str("<section><div class=\"grid\">");
    stat(
        &mut body,
        &format_number(s.jobs as f64),
        "jobs scheduled here",
        "",
    );
    stat(
        &mut body,
        &format_number(last_hour as f64),
        "dispatched, last 60 min",
        "",
    );
    stat(
        &mut body,
        &last_skew.map_or("–".into(), |ms| {
            format!("{} s", format_number(ms as f64 / 1000.0))
        }),
        "skew, last settled minute (max)",
        if last_skew.is_some_and(|ms| ms > 60_000) {
            "warn"
        } else {
            ""
        },
    );
    stat(
        &mut body,
        &format_number(s.undelivered as f64),
        "undelivered",
        if s.undelivered > 0 { "warn" } else { "" },
    );
    stat(
        &mut body,
        &format_number(s.queue_depth as f64),
        "queued",
        "",
    );
    if let Some(total) = s.total_shards {
        stat(
            &mut body,
            &format!("{} / {total}", s.owned_shards.len()),
            "shards owned",
            "",
        );
    }
    body.push_str("</div></section>");

    // The schedule.
    body.push_str("<section><h2>Schedule</h2>");
    match &s.schedule {
        None => body.push_str("<p class=\"warn\">not loaded yet</p>"),
        Some(sched) => {
            let _ = write!(
                body,
                "<table><tr><th>file</th><td class=\"wrap\">{}</td></tr><tr><th>md5</th><td class=\"wrap\">{}</td></tr><tr><th>loaded</th><td class=\"wrap\">{}</td></tr>",
                escape(&sched.path),
                escape(sched.md5.as_deref().unwrap_or("–")),
                escape(sched.loaded_at.as_deref().unwrap_or("–")),
            );
            match &sched.last_reload {
                None => body.push_str("<tr><th>last reload</th><td class=\"muted\">none since start</td></tr></table>"),
                Some(r) => {
                    let class = if r.result == "ok" { "ok" } else { "bad" };
                    let took = r.took_ms.map(|ms| format!(" in {ms} ms")).unwrap_or_default();
                    let _ = write!(
                        body,
                        "<tr><th>last reload</th><td class=\"wrap\">{} <b class=\"{class}\">{}</b>{}</td></tr></table>",
                        escape(&r.at),
                        escape(r.result),
                        escape(&took)
                    );
                    if !r.problems.is_empty() {
                        let _ = write!(
                            body,
                            "<p class=\"bad\">The last version of the file was not used; the schedule above stays in force until the file changes again.</p><pre class=\"problems\">{}</pre>",
                            escape(&r.problems.join("\n"))
                        );
                    }
                }
            }
        }
    }
    body.push_str("</section>");

    // The last hour.
    let labels: Vec<String> = s
        .minutes
        .iter()
        .map(|m| {
            let skew = m
                .skew_max_ms
                .map(|ms| format!(", skew max {} s", format_number(ms as f64 / 1000.0)))
                .unwrap_or_default();
            format!("{} · {} jobs{skew}", hhmm(&m.minute), m.dispatched)
        })
        .collect();
    let dispatched: Vec<f64> = s.minutes.iter().map(|m| m.dispatched as f64).collect();
    let skew: Vec<f64> = s
        .minutes
        .iter()
        .map(|m| m.skew_max_ms.unwrap_or(0) as f64 / 1000.0)
        .collect();
    let first = s.minutes.first().map_or("", |m| hhmm(&m.minute));
    let last = s.minutes.last().map_or("", |m| hhmm(&m.minute));
    let skew_chart = match s.mode {
        // Nothing is acked in a dry run: no skew to show.
        Mode::DryRun => String::new(),
        Mode::Group { .. } => format!(
            "<p><b>skew</b> <span class=\"muted\">(largest, seconds from slot to ack)</span></p>{}",
            bar_chart("dispatch skew per minute, seconds", &skew, &labels)
        ),
    };
    let _ = write!(
        body,
        "<section><h2>Last 60 minutes</h2><p class=\"muted\">{first} – {last} UTC, one bar a minute; \
hover a bar for its numbers</p><p><b>jobs dispatched</b></p>{}{skew_chart}</section>",
        bar_chart("jobs dispatched per minute", &dispatched, &labels),
    );

    // What comes next.
    let _ = write!(body, "<section><h2>Next {} runs</h2>", s.upcoming.len());
    if s.upcoming.is_empty() {
        body.push_str("<p class=\"muted\">nothing scheduled</p>");
    } else {
        // Two columns, so that a phone has room for long names: the topic goes under the job.
        body.push_str("<table class=\"upcoming\"><tr><th>job <span class=\"muted\">→ topic</span></th><th>when (UTC)</th></tr>");
        for r in &s.upcoming {
            let day = if r.at.get(..10) == s.at.get(..10) {
                String::new()
            } else {
                format!("{} ", r.at.get(..10).unwrap_or(""))
            };
            let _ = write!(
                body,
                "<tr><td class=\"wrap\">{}<br><span class=\"muted\">→ {}</span></td><td>{}{}<br><span class=\"muted\">{}</span></td></tr>",
                escape(&r.job_name),
                escape(&r.topic),
                escape(&day),
                escape(hhmm(&r.at)),
                escape(&in_how_long(&s.at, &r.at)),
            );
        }
        body.push_str("</table>");
    }
    body.push_str("</section>");

    // The group.
    if let Mode::Group { .. } = &s.mode {
        body.push_str("<section><h2>Group</h2>");
        if !s.owned_shards.is_empty() {
            body.push_str("<p><b>shards of this member</b></p><table><tr><th>shard</th><th>cursor (UTC)</th><th>jobs</th><th>not acked</th></tr>");
            for o in &s.owned_shards {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    o.shard,
                    escape(o.cursor.as_deref().map_or("–", hhmm)),
                    o.jobs,
                    o.outstanding
                );
            }
            body.push_str("</table>");
        }
        match &s.group {
            None => body.push_str("<p class=\"muted\">the group's cursor records are read once a minute; not read yet</p>"),
            Some(g) => {
                let verdict = if g.healthy() {
                    "<p class=\"ok\">every shard owned, every cursor within 2 minutes, one schedule</p>".to_string()
                } else {
                    let mut v = String::new();
                    if !g.orphaned.is_empty() {
                        let _ = write!(v, "<p class=\"bad\">shards with no owner: {:?}</p>", g.orphaned);
                    }
                    if !g.lagging.is_empty() {
                        let _ = write!(v, "<p class=\"warn\">cursors more than 2 minutes behind: {:?}</p>", g.lagging);
                    }
                    if g.md5_disagree {
                        v.push_str("<p class=\"bad\">members run different schedule files</p>");
                    }
                    v
                };
                let _ = write!(body, "<p><b>members</b> <span class=\"muted\">(cursor records read {} UTC)</span></p>{verdict}<table><tr><th>member</th><th>shards</th><th>schedule md5</th></tr>", escape(hhmm(&g.at)));
                for (member, shards) in &g.members {
                    let md5 = g.md5_by_owner.get(member).map_or("?", String::as_str);
                    let _ = write!(
                        body,
                        "<tr><td class=\"wrap\">{}</td><td>{}</td><td>{}</td></tr>",
                        escape(member),
                        escape(&format!("{shards:?}")),
                        escape(md5.get(..12).unwrap_or(md5))
                    );
                }
                body.push_str("</table><p><b>shards</b></p><table><tr><th>shard</th><th>owner</th><th>cursor (UTC)</th><th>behind</th><th>record age</th></tr>");
                for sh in &g.shards {
                    let owner = match &sh.owner {
                        Some(o) => escape(o),
                        None => "<b class=\"bad\">no owner</b>".into(),
                    };
                    let _ = write!(
                        body,
                        "<tr><td>{}</td><td class=\"wrap\">{owner}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        sh.shard,
                        escape(sh.cursor.as_deref().map_or("never", hhmm)),
                        sh.behind_minutes.map_or("–".into(), |b| format!("{b} min")),
                        sh.record_age_seconds.map_or("–".into(), |a| format!("{a} s")),
                    );
                }
                body.push_str("</table>");
            }
        }
        body.push_str("</section>");
    }
    body.push_str(
        "<p class=\"muted\">Also: <a href=\"/metrics\">/metrics</a> · <a href=\"/status.json\">/status.json</a> · <a href=\"/healthz\">/healthz</a> · <a href=\"/readyz\">/readyz</a></p>",
    );
    document(&title, REFRESH_SECONDS, &body)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use chrono::TimeZone;

    use super::*;
    use crate::clock::ManualClock;
    use crate::dispatcher::Scheduler;
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
                .schedule()
                .jobs
                .iter()
                .filter_map(|j| {
                    s.next_run(&j.spec.name)
                        .map(|at| (at, -j.spec.priority, j.spec.name.clone()))
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

    fn observer(mode: Mode) -> (Arc<Observer>, ManualClock) {
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 30).unwrap());
        (Observer::new(mode, "jobs", Arc::new(clock.clone())), clock)
    }

    fn metrics_text(o: &Observer) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &o.registry).expect("encode");
        text
    }

    #[test]
    fn skew_of_a_batch_is_counted_once_per_record_in_its_bucket() {
        let (o, _) = observer(Mode::DryRun);
        o.acked(Duration::from_millis(3), 10);
        o.acked(Duration::from_secs(90), 2);
        o.acked(Duration::from_secs(3600), 1);
        let text = metrics_text(&o);
        for line in [
            "cronq_dispatch_skew_seconds_count 13",
            "cronq_dispatch_skew_seconds_bucket{le=\"0.0025\"} 0",
            "cronq_dispatch_skew_seconds_bucket{le=\"0.005\"} 10",
            "cronq_dispatch_skew_seconds_bucket{le=\"60.0\"} 10",
            "cronq_dispatch_skew_seconds_bucket{le=\"120.0\"} 12",
            "cronq_dispatch_skew_seconds_bucket{le=\"600.0\"} 12",
            "cronq_dispatch_skew_seconds_bucket{le=\"+Inf\"} 13",
            "cronq_dispatch_skew_seconds_sum 3780.03",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn counters_take_their_labels_and_no_job_name() {
        let (o, _) = observer(Mode::DryRun);
        let jobs = o.dispatched_to("jobs");
        jobs.add(5);
        jobs.add(2);
        o.dispatched_to("reports").add(1);
        o.produce_error("reports", ProduceErrorKind::Unreachable, 1);
        let text = metrics_text(&o);
        for line in [
            "cronq_dispatched_total{topic=\"jobs\"} 7",
            "cronq_dispatched_total{topic=\"reports\"} 1",
            "cronq_produce_errors_total{topic=\"reports\",kind=\"unreachable\"} 1",
            "cronq_schedule_reloads_total{result=\"rejected\"} 0",
            "cronq_slots_skipped_total{reason=\"catchup_rule\"} 0",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        assert_eq!(o.status().acked_total, 8);
    }

    #[test]
    fn pauses_are_on_the_page_escaped_the_all_switch_first_and_counted() {
        use crate::dispatcher::control::{ControlRecord, PauseTable, ALL_KEY};
        let (o, clock) = observer(Mode::DryRun);
        assert!(metrics_text(&o).contains("cronq_slots_skipped_total{reason=\"paused\"} 0"));
        let now = clock.now();
        let record = |job: Option<&str>, reason: &str, until: Option<i64>| ControlRecord {
            v: 1,
            job: job.map(str::to_string),
            paused: true,
            reason: Some(reason.into()),
            since: now - chrono::Duration::minutes(5),
            until: until.map(|m| now + chrono::Duration::minutes(m)),
            drop_missed: false,
            by: "ops@host".into(),
            at: now,
        };
        let mut table = PauseTable::default();
        table.apply(
            "<b>job</b>",
            Some(record(Some("<b>job</b>"), "<script>x</script>", Some(30))),
        );
        // Ended by its --until a minute ago: not listed.
        table.apply("over", Some(record(Some("over"), "done", Some(-1))));
        o.pauses_changed(&Arc::new(table.clone()));
        let page = o.render();
        assert!(page.contains("Paused jobs (1)"), "{page}");
        assert!(
            page.contains("&lt;b&gt;job&lt;/b&gt;") && !page.contains("<b>job</b>"),
            "{page}"
        );
        assert!(
            page.contains("&lt;script&gt;") && !page.contains(">over<"),
            "{page}"
        );
        assert!(!page.contains("ALL JOBS PAUSED"));
        table.apply(ALL_KEY, Some(record(None, "incident", None)));
        o.pauses_changed(&Arc::new(table));
        let page = o.render();
        let all = page.find("ALL JOBS PAUSED").expect("the --all banner");
        assert!(all < page.find("Paused jobs").unwrap(), "--all first");
        assert!(
            all < page.find("jobs scheduled here").unwrap(),
            "before the numbers"
        );
        let json = serde_json::to_value(o.status()).unwrap();
        assert_eq!(json["paused"]["all"]["reason"], "incident", "{json}");
        assert_eq!(json["paused"]["jobs"][0]["job"], "<b>job</b>");
        o.paused_skipped(7);
        assert!(metrics_text(&o).contains("cronq_slots_skipped_total{reason=\"paused\"} 7"));
    }

    #[test]
    fn a_hostile_job_name_and_a_rejected_file_are_escaped_on_the_page() {
        let (o, _) = observer(Mode::Group {
            group: "g<b>".into(),
            member: "m\"1".into(),
            state_topic: "g.state".into(),
        });
        o.schedule_loaded(Path::new("/etc/cronq/<s>.json"), "abc");
        let bad = parse(
            br#"{"jobs":[{"jobName":"<img src=x onerror=alert(1)>","job":"x","cronTime":"61 * * * *"}]}"#,
            Path::new("s.json"),
            LoadOptions::default(),
        )
        .expect_err("minute 61");
        o.reload_rejected("def", &bad);
        o.page().upcoming = vec![UpcomingRun {
            job_name: "<script>alert('x')</script>".into(),
            at: "2026-11-29T12:01:00Z".into(),
            topic: "jobs".into(),
        }];
        let html = o.render();
        assert!(
            !html.contains("<script") && !html.contains("<img"),
            "{html}"
        );
        assert!(
            html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"),
            "{html}"
        );
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{html}"
        );
        assert!(html.contains("61"), "the problem is shown: {html}");
        assert!(
            html.contains("g&lt;b&gt;") && html.contains("m&quot;1"),
            "{html}"
        );
        assert!(html.contains("<b class=\"bad\">rejected</b>"), "{html}");
        let text = metrics_text(&o);
        assert!(
            text.contains("cronq_schedule_reloads_total{result=\"rejected\"} 1"),
            "{text}"
        );
    }

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

    #[test]
    fn readiness_follows_the_schedule_the_broker_the_shards_and_shutdown() {
        let (o, _) = observer(Mode::Group {
            group: "g".into(),
            member: "m".into(),
            state_topic: "g.state".into(),
        });
        let r = o.health().readiness();
        assert!(!r.ready);
        assert_eq!(r.checks[check::KAFKA].detail, "not reached yet");
        o.schedule_loaded(Path::new("s.json"), "abc");
        o.kafka_reachable(true, "reached b:9092");
        assert!(!o.health().readiness().ready, "no shards yet");
        o.assigned(&[0, 2], 4);
        let r = o.health().readiness();
        assert!(r.ready, "{r:?}");
        assert_eq!(r.checks[check::SHARDS].detail, "owns shards [0, 2] of 4");
        o.kafka_reachable(false, "cannot reach Kafka at b:9092");
        assert!(!o.health().readiness().ready);
        o.kafka_reachable(true, "reached b:9092");
        o.stopping();
        let r = o.health().readiness();
        assert!(!r.ready);
        assert!(r.checks[check::RUNNING].detail.starts_with("shutting down"));
    }

    #[test]
    fn the_heartbeat_allows_three_ticks_and_at_least_half_a_minute() {
        assert_eq!(
            heartbeat_silence(Duration::from_secs(1)),
            Duration::from_secs(30)
        );
        assert_eq!(
            heartbeat_silence(Duration::from_secs(20)),
            Duration::from_secs(60)
        );
    }
}
