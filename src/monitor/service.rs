//! `cronq monitor` as a service: the one owner of its tasks (ingest with the judge, the pruner,
//! and, once it exists, the notifier), started in one [`Tasks`] with child tokens, stopped
//! within a grace at SIGINT/SIGTERM.
//!
//! ```text
//!  open --db ─► first start (meta) ─► schedule (file, or <group>.schedule read whole)
//!      │
//!      ├─► "ingest" (a blocking thread): consume, apply, judge ─► SQLite
//!      ├─► "pruner": every minute, rows older than --history, in small chunks
//!      └─► (the notifier: drains the outbox to the webhooks)
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::ingest::{Ingest, IngestConfig, IngestError, ScheduleSource};
use super::metrics::Metrics;
use super::notify::{self, NotifyMetrics, Settings, Webhook};
use super::store::{Routes, RunStore, SqliteStore, StoreError};
use crate::clock::Clock;
use crate::lifecycle::{Exit, Tasks};
use crate::obs::health::Health;
use crate::obs::http::Site;
use crate::schedule::{Job, LoadError};

/// How long the tasks may take to stop once asked.
const TASK_GRACE: Duration = Duration::from_secs(5);
/// How often the pruner runs.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Rows per table the pruner deletes in one transaction (short, so ingest never waits long).
const PRUNE_CHUNK: usize = 1000;

/// Where the monitor's schedule comes from.
#[derive(Debug, Clone)]
pub enum ScheduleArg {
    /// `--schedule FILE`.
    File(PathBuf),
    /// `--schedule-topic`: `<group>.schedule`.
    Topic(String),
    /// Neither: nothing is judged missed.
    None,
}

/// Everything `cronq monitor` runs with.
pub struct MonitorConfig {
    /// `--db`.
    pub db: PathBuf,
    /// `--history`: rows older than this are pruned.
    pub history: Duration,
    /// What ingest reads and how it judges.
    pub ingest: IngestConfig,
    /// The schedule.
    pub schedule: ScheduleArg,
    /// The webhooks (`--webhook` and its settings, paired by position).
    pub webhooks: Vec<Webhook>,
    /// How the notifier delivers to them.
    pub notify: Settings,
    /// The clock runs are judged by (a drill clock in tests).
    pub clock: Arc<dyn Clock>,
}

/// Why the monitor stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MonitorError {
    /// The database cannot be used.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The schedule file cannot be loaded at start.
    #[error(transparent)]
    Schedule(#[from] LoadError),
    /// The schedule topic cannot be read at start.
    #[error(transparent)]
    ScheduleTopic(#[from] crate::store::StoreError),
    /// Ingest stopped.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// A task ended before shutdown.
    #[error("the monitor's {task} stopped: {reason}")]
    TaskEnded {
        /// The task.
        task: &'static str,
        /// Why.
        reason: String,
    },
}

/// What the monitor shows on `--http`.
pub struct Observer {
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    /// The notifier's metrics.
    pub notify: NotifyMetrics,
    registry: Arc<Registry>,
    /// Its probes.
    pub health: Arc<Health>,
}

impl Observer {
    /// Metrics registered, not ready until ingest caught up.
    pub fn new() -> Arc<Observer> {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let notify = NotifyMetrics::register(&mut registry);
        Arc::new(Observer {
            metrics,
            notify,
            registry: Arc::new(registry),
            health: Health::new(&[(
                "caught up",
                "reading the topics up to the high watermarks seen at start",
            )]),
        })
    }

    /// The `--http` site.
    pub fn site(&self) -> Site {
        let mut site = Site::blank("cronq monitor");
        site.metrics = Arc::clone(&self.registry);
        site.health = Arc::clone(&self.health);
        site
    }
}

/// The jobs in force at start, and where later versions come from.
async fn initial_schedule(
    config: &MonitorConfig,
    shutdown: &CancellationToken,
) -> Result<Option<(ScheduleSource, Vec<Job>)>, MonitorError> {
    let options = config.ingest.load_options.clone();
    match &config.schedule {
        ScheduleArg::None => Ok(Some((ScheduleSource::None, Vec::new()))),
        ScheduleArg::File(path) => {
            let bytes = crate::schedule::load::read_limited(path, options.max_file_bytes)?;
            let schedule = crate::schedule::parse(&bytes, path, options)?;
            info!(message = "monitor: schedule loaded", path = %path.display(), jobs = schedule.jobs.len());
            Ok(Some((
                ScheduleSource::File {
                    path: path.clone(),
                    md5: md5::compute(&bytes).0,
                },
                schedule.jobs,
            )))
        }
        ScheduleArg::Topic(topic) => {
            let kafka = &config.ingest.kafka;
            let read = async {
                let client = kafka.connect(Duration::from_millis(200)).await;
                let shards = loop {
                    match client.list_topics().await {
                        Ok(topics) => {
                            if let Some(t) = topics.iter().find(|t| t.name == *topic) {
                                break t.partitions.len() as u32;
                            }
                            warn!(message = "monitor: the schedule topic does not exist yet; waiting for it", topic = %topic);
                        }
                        Err(e) => {
                            warn!(message = "monitor: cannot list topics; retrying", error = %crate::kafka::describe(&e))
                        }
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                };
                let (jobs, rejected) =
                    crate::store::in_force(&client, topic, shards, &options, |_, _| {}).await?;
                for r in rejected {
                    warn!(message = "monitor: a schedule record does not pass the checks; the job's last good version stays in force", rejected = %r);
                }
                info!(message = "monitor: schedule read from its topic", topic = %topic, jobs = jobs.len());
                Ok::<_, MonitorError>((
                    ScheduleSource::Topic {
                        topic: topic.clone(),
                        shards,
                    },
                    jobs.into_values().map(|f| f.job).collect(),
                ))
            };
            tokio::select! {
                read = read => read.map(Some),
                () = shutdown.cancelled() => Ok(None),
            }
        }
    }
}

/// Runs the monitor until `shutdown` is cancelled.
pub async fn run(
    config: MonitorConfig,
    observer: Arc<Observer>,
    shutdown: CancellationToken,
) -> Result<(), MonitorError> {
    let routes = Routes(config.webhooks.iter().map(|w| w.events.clone()).collect());
    let mut store = SqliteStore::open(&config.db, routes.clone())?;
    let first = store.first_start(config.clock.now())?;
    let Some((source, jobs)) = initial_schedule(&config, &shutdown).await? else {
        return Ok(());
    };
    info!(
        message = "monitor started",
        db = %config.db.display(),
        first_start = %first,
        webhooks = config.webhooks.len(),
        jobs = jobs.len(),
    );
    let mut tasks: Tasks<MonitorError> = Tasks::new(&shutdown);

    let ingest = Ingest::new(
        config.ingest,
        store,
        source,
        jobs,
        Arc::clone(&config.clock),
        Arc::clone(&observer.metrics),
        Arc::clone(&observer.health),
    );
    tasks.spawn("ingest", |token| async move {
        match tokio::task::spawn_blocking(move || ingest.run(&token)).await {
            Ok(done) => done.map_err(MonitorError::from),
            Err(e) => Err(MonitorError::TaskEnded {
                task: "ingest",
                reason: e.to_string(),
            }),
        }
    });

    let db = config.db.clone();
    let history = config.history;
    let clock = Arc::clone(&config.clock);
    let metrics = Arc::clone(&observer.metrics);
    tasks.spawn("pruner", move |token| async move {
        // A connection of its own: WAL lets it delete while ingest writes.
        let mut pruner = SqliteStore::open(&db, Routes::default())?;
        loop {
            let before =
                clock.now() - chrono::Duration::from_std(history).unwrap_or(chrono::Duration::MAX);
            loop {
                let (back, deleted) = tokio::task::spawn_blocking(move || {
                    let deleted = pruner.prune(before, PRUNE_CHUNK);
                    (pruner, deleted)
                })
                .await
                .map_err(|e| MonitorError::TaskEnded {
                    task: "pruner",
                    reason: e.to_string(),
                })?;
                pruner = back;
                match deleted {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        warn!(message = "monitor: pruning failed; trying again later", error = %e);
                        break;
                    }
                }
                if token.is_cancelled() {
                    return Ok(());
                }
            }
            if let Ok(bytes) = pruner.size_bytes() {
                metrics.db_bytes.set(bytes as i64);
            }
            if token
                .run_until_cancelled(tokio::time::sleep(PRUNE_EVERY))
                .await
                .is_none()
            {
                return Ok(());
            }
        }
    });

    // The notifier drains the outbox that ingest and the judge fill (one row per alert and
    // webhook that wants its kind), on a connection of its own.
    if !config.webhooks.is_empty() {
        let outbox = SqliteStore::open(&config.db, routes)?;
        let (webhooks, settings) = (config.webhooks, config.notify);
        let (clock, metrics) = (Arc::clone(&config.clock), observer.notify.clone());
        tasks.spawn("notifier", move |token| async move {
            notify::run(outbox, webhooks, settings, clock, metrics, token)
                .await
                .map_err(|e| MonitorError::TaskEnded {
                    task: "notifier",
                    reason: e.to_string(),
                })
        });
    }

    let ended_early = tokio::select! {
        // A stop first: the tasks end on the same token, and one of them ending then is the stop.
        biased;
        () = shutdown.cancelled() => None,
        ended = tasks.ended() => (!shutdown.is_cancelled()).then_some(ended),
    };
    if let Some(ended) = &ended_early {
        error!(message = "a monitor task stopped unexpectedly; stopping the monitor", task = ended.name, error = %ended.reason());
    }
    for ended in tasks.shutdown(TASK_GRACE).await {
        if !matches!(ended.exit, Exit::Done) {
            error!(message = "a monitor task did not stop cleanly", task = ended.name, error = %ended.reason());
        }
    }
    info!(message = "monitor stopped");
    match ended_early {
        Some(ended) => Err(MonitorError::TaskEnded {
            task: ended.name,
            reason: ended.reason(),
        }),
        None => Ok(()),
    }
}
