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
//!
//! `metrics.rs` holds the metrics and their handles, `events.rs` what the worker reports,
//! `status.rs` what the page and `/status.json` show, and `page.rs` the HTML.

mod events;
mod metrics;
mod page;
mod status;

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use prometheus_client::registry::Registry;

use crate::obs::health::Health;
use crate::obs::http::Site;
use crate::worker::WorkerConfig;
use metrics::Metrics;
use status::Recent;

pub use events::ObservedHandler;
pub use metrics::reason_name;
pub use page::render;
pub use status::{
    PartitionLag, PoolSample, RecentDeadLetter, RecentResult, RunningJob, StatusView,
};

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
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::wire::JobMessage;
    use crate::worker::autoscale::ScaleConfig;
    use crate::worker::executor::JobRun;
    use crate::worker::queue::Ordering as QueueOrdering;
    use crate::worker::results::ReportConfig;
    use crate::worker::StartAt;

    pub(super) fn config() -> WorkerConfig {
        WorkerConfig {
            kafka: crate::kafka::Connection::plaintext(vec!["127.0.0.1:9".into()]),
            topic: "jobs".into(),
            group: "workers".into(),
            start: StartAt::Earliest,
            ordering: QueueOrdering::Ordered,
            prefetch: 16,
            max_held_bytes: 64 * 1024 * 1024,
            drill_clock: None,
            report: ReportConfig {
                results_topic: "jobs.results".into(),
                dlq_topic: "jobs.dlq".into(),
                max_attempts: 3,
                retry_backoff: Duration::from_millis(50),
                worker: "w-1".into(),
                max_output: 8192,
                max_age: None,
                max_attempts_cap: 10,
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
            dedupe_window: Duration::ZERO,
            create_topics: false,
            partitions: 1,
            replication_factor: 1,
        }
    }

    pub(super) fn message(name: &str, scheduled_at: &str) -> JobMessage {
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

    pub(super) fn run(name: &str, attempt: u32) -> JobRun {
        JobRun {
            message: message(name, "2026-11-26T00:01:00Z"),
            attempt,
        }
    }

    pub(super) fn exported(observer: &Observer) -> String {
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
}
