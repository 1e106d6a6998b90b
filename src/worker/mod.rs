//! `cronq worker`: consumes JobMessage v1 as a member of a consumer group, runs each job, reports
//! results, and commits a partition's offset only past records whose execution has finished.
//!
//! ```text
//!  Kafka topic ──► StreamConsumer (group --group, manual commits) ──► WorkerState::admit
//!     ▲   (paused after 5 s with --prefetch queued)                       │ local queue (priority,
//!     │                                                                   │ then slot; one run per
//!     │ commit every --commit-interval: lowest unfinished offset          ▼ jobName at a time)
//!     └──────────────────────────────── WorkerState ◄── finish ◄── executors (pool of N tasks)
//!                                                                   │ Handler (process or your own)
//!  every --scale-interval: autoscale::decide(lag, in flight, rate)  ▼
//!     sets N within [--min-workers, --max-workers]         results topic / DLQ topic
//! ```
//!
//! Delivery is at-least-once. A record's offset is committed only once its execution, retries and
//! reports are done; a worker that dies mid-job leaves its records uncommitted, and the member that
//! takes the partition over runs them again. A record that cannot be run (malformed, or its task
//! died) is dead-lettered through the same bounds as jobs (`--prefetch`, the report window) and its
//! offset then moves on like any other. Rebalances commit what finished before the partition
//! goes; running jobs of a revoked partition still finish and report, but their offsets are left to
//! the new owner. SIGTERM stops fetching, lets running jobs finish within `--shutdown-grace`,
//! commits, and leaves the group.
//!
//! A message's run settings override the worker's flags for its run: `timeoutMs` (`--timeout`,
//! capped at `--max-timeout`), `maxAttempts` (`--max-attempts`) and `overlap` (`--ordering`):
//! `skip` reports a record `skipped` without running it while a run of its job executes or waits
//! here, `replace` cancels the job's executing runs (the executor's kill path) and drops its
//! waiting ones, both reported `cancelled`. All runs of a job share its partition, so the
//! partition's owner sees them all; a revoked partition's running jobs are not cancelled.
//!
//! - [`executor`]: running one job (the `--handlers` rule, `--shell`, timeouts) and the [`Handler`]
//!   trait for embedding.
//! - [`results`]: JobResult v1, retries, dead letters, `--max-age`, the integrity checks, and the
//!   bounds that keep one record from freezing its partition (report size cap, permanent errors
//!   given up).
//! - [`state`], [`offsets`], [`queue`], [`dedup`]: the pure bookkeeping.
//! - [`autoscale`]: the pure pool-size decision.
//! - [`observe`]: metrics, readiness/liveness and the status page of `--http`.

pub mod attempts;
pub mod autoscale;
pub mod dedup;
pub mod executor;
pub mod observe;
pub mod offsets;
pub mod queue;
pub mod results;
pub mod state;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use attempts::{
    dead_letter_unrunnable, execute_cancellable, panic_text, report_not_run, Final, Unrunnable,
};
pub use executor::{Handler, JobRun, Outcome, ProcessHandler, Program, Status};
use results::{KafkaPublisher, Publisher, ReportConfig};
use state::{Admission, Fetched, Next, Ticket, Tp, WorkerState};

use crate::kafka::admin::{TopicAdmin, TopicError, TopicSpec};
use crate::kafka::{retry_cancellable, Backoff, Connection, JobConsumer, KafkaContext, Stopped};
use crate::obs::health::Beat;
use crate::wire::result::{DeadReason, Origin, OriginalDigest};
use crate::wire::JobMessage;
use observe::{ObservedHandler, Observer, PartitionLag};

/// `--start`: where a group with no committed offset begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StartAt {
    /// The oldest record: jobs dispatched before the first worker came up still run.
    #[default]
    Earliest,
    /// Only records produced from now on.
    Latest,
}

/// Everything the worker needs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Where Kafka is and how to talk to it.
    pub kafka: Connection,
    /// The job topic.
    pub topic: String,
    /// Consumer group.
    pub group: String,
    /// Where a group without offsets starts.
    pub start: StartAt,
    /// `--ordering`
    pub ordering: queue::Ordering,
    /// Jobs held in the local queue before fetching pauses.
    pub prefetch: usize,
    /// Results, DLQ, retries, worker id.
    pub report: ReportConfig,
    /// Pool limits and timings.
    pub scale: autoscale::ScaleConfig,
    /// How often the pool size is decided.
    pub scale_interval: Duration,
    /// How long running jobs may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// How often finished offsets are committed.
    pub commit_interval: Duration,
    /// Consumer group session timeout: how soon a dead member's partitions move.
    pub session_timeout: Duration,
    /// How many finished `dispatchId`s are remembered.
    pub dedup_capacity: usize,
    /// Create the results and DLQ topics when missing.
    pub create_topics: bool,
    /// Partitions of topics the worker creates.
    pub partitions: i32,
    /// Replication factor of topics the worker creates.
    pub replication_factor: i16,
}

/// Why the worker could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// A Kafka client could not be configured.
    #[error("cannot create the Kafka {what} for {brokers}: {source}")]
    Client {
        /// consumer, producer, admin client
        what: &'static str,
        /// `--brokers`
        brokers: String,
        /// Why.
        source: KafkaError,
    },
    /// Subscribing failed.
    #[error("cannot subscribe to topic {topic:?}: {source}")]
    Subscribe {
        /// The topic.
        topic: String,
        /// Why.
        source: KafkaError,
    },
    /// A report topic could not be created.
    #[error("cannot create topic {topic:?}: {reason} (create it yourself, or check the broker's permissions)")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        reason: String,
    },
}

/// What a run did, logged when the worker stops.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Jobs sent to the DLQ (attempts used up, or rejected).
    pub dead_lettered: u64,
    /// Records skipped as recently finished `dispatchId`s.
    pub duplicates: u64,
    /// Records that were not JobMessage v1 (or failed its integrity checks).
    pub malformed: u64,
    /// Jobs not run because they were older than `--max-age` (also counted as dead-lettered).
    pub expired: u64,
    /// Execution tasks that died; their records were dead-lettered.
    pub crashed: u64,
    /// Reports given up on a permanent error (too large, not authorized).
    pub undeliverable: u64,
    /// Jobs still running when the shutdown grace ran out.
    pub aborted: u64,
    /// Records not run because a run of their job was running or queued (`"overlap": "skip"`).
    pub skipped: u64,
    /// Runs ended, or never started, because a newer run replaced them (`"overlap": "replace"`).
    pub cancelled: u64,
}

fn lock(state: &Mutex<WorkerState>) -> MutexGuard<'_, WorkerState> {
    // A panic while holding the lock leaves bookkeeping that is still consistent enough to commit
    // conservatively; carrying on beats taking the worker down.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn tps_of(tpl: &TopicPartitionList) -> Vec<Tp> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
}

fn tpl_of(positions: &[(Tp, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in positions {
        // Only fails for an invalid offset; ours are positions taken from fetched records.
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    tpl
}

fn describe_tps(tps: &[Tp]) -> String {
    let mut names: Vec<String> = tps.iter().map(|(t, p)| format!("{t}/{p}")).collect();
    names.sort();
    names.join(",")
}

/// Rebalance and commit callbacks, run by rdkafka on the thread polling the consumer.
struct WorkerContext {
    state: Arc<Mutex<WorkerState>>,
    /// Whether the main loop paused fetching (full local queue).
    paused: Arc<AtomicBool>,
    /// librdkafka's log and errors go the way of every Kafka client of cronq.
    kafka: KafkaContext,
    /// Told when the group assigns partitions (the worker is then a member).
    observer: Arc<Observer>,
}

impl ClientContext for WorkerContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.kafka.log_line(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.kafka.error_event(&error, reason);
    }
}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let tps = tps_of(tpl);
                let commits = lock(&self.state).revoke(&tps);
                if !commits.is_empty() {
                    if let Err(e) = consumer.commit(&tpl_of(&commits), CommitMode::Sync) {
                        warn!(message = "committing before giving partitions up failed; their finished records may run again", partitions = %describe_tps(&tps), error = %e);
                    }
                }
                info!(message = "partitions revoked", partitions = %describe_tps(&tps), committed = commits.len());
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => warn!(message = "rebalance error", error = %e),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let tps = tps_of(tpl);
            lock(&self.state).assign(tps.iter().cloned());
            self.observer.assigned(tps.len());
            // A partition paused before a rebalance may come back paused; start every assignment
            // fetching, and let the loop pause again if the queue is still full.
            if let Err(e) = consumer.resume(tpl) {
                warn!(message = "resuming newly assigned partitions failed", error = %e);
            }
            self.paused.store(false, AtomicOrdering::SeqCst);
            info!(message = "partitions assigned", partitions = %describe_tps(&tps));
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            let tps = tps_of(offsets);
            warn!(message = "commit failed; will retry", partitions = %describe_tps(&tps), error = %e);
            lock(&self.state).commit_failed(&tps);
        }
    }
}

type Consumer_ = StreamConsumer<WorkerContext>;
/// The lag watcher's watermark queries: no group, never fetches, its own broker connections.
type LagClient = BaseConsumer<crate::kafka::KafkaContext>;

enum Done {
    Job {
        ticket: Ticket,
        message: JobMessage,
        end: Final,
    },
    /// A record that was not run was dead-lettered (or its letter given up).
    DeadLettered { ticket: Ticket },
    /// A record not run because of its job's overlap policy was reported (`skipped`/`cancelled`).
    NotRun {
        ticket: Ticket,
        message: JobMessage,
        status: Status,
    },
}

/// Creates the results and DLQ topics when they are missing (tansu and many clusters do not
/// auto-create), retrying while the cluster is unreachable.
async fn ensure_report_topics(
    config: &WorkerConfig,
    shutdown: &CancellationToken,
) -> Result<(), WorkerError> {
    if !config.create_topics {
        return Ok(());
    }
    let admin = TopicAdmin::new(&config.kafka).map_err(|source| WorkerError::Client {
        what: "admin client",
        brokers: config.kafka.brokers_text(),
        source,
    })?;
    let specs: Vec<TopicSpec<'_>> = [&config.report.results_topic, &config.report.dlq_topic]
        .into_iter()
        .map(|name| TopicSpec {
            name,
            partitions: config.partitions,
            replication_factor: config.replication_factor,
            configs: &[],
        })
        .collect();
    let mut backoff = Backoff::new(Duration::from_millis(200));
    let created = retry_cancellable(
        &mut backoff,
        shutdown,
        || admin.create(&specs),
        |e, _, _| {
            config.kafka.health().failed("worker", "", &e.to_string());
        },
    )
    .await;
    match created {
        Ok(_) | Err(Stopped::Cancelled) => Ok(()),
        Err(Stopped::Permanent(TopicError::Refused { topic, reason })) => {
            Err(WorkerError::CreateTopic { topic, reason })
        }
        // `create` answers a refusal or an unreachable Kafka, nothing else.
        Err(Stopped::Permanent(other)) => Err(WorkerError::CreateTopic {
            topic: config.report.results_topic.clone(),
            reason: other.to_string(),
        }),
    }
}

/// Records not started yet on the broker side: Σ (high watermark − position) over the assigned
/// partitions, with each partition's share, and whether the broker answered. Blocking (one
/// watermark request per partition, or one metadata request when none is assigned). The positions
/// are the group consumer's (local state, no request); the watermarks come from `lag_client`, a
/// client of its own: on the group consumer's connection a ListOffsets request waits behind the fetch
/// the broker is holding, times out, and librdkafka's timeout handling then costs the fetch itself.
fn broker_lag(
    consumer: &Consumer_,
    lag_client: &LagClient,
    topic: &str,
) -> Option<(u64, Vec<PartitionLag>, Result<(), String>)> {
    let positions = consumer.position().ok()?;
    let mut total = 0u64;
    let mut partitions = Vec::with_capacity(positions.count());
    let mut reached: Option<Result<(), String>> = None;
    for e in positions.elements() {
        // A partition nothing was read from since it was assigned is either caught up or about to
        // deliver; counting its whole history would be wrong, so it counts as 0 until then.
        let position = match e.offset() {
            Offset::Offset(position) => Some(position),
            _ => None,
        };
        let end = match lag_client.fetch_watermarks(
            e.topic(),
            e.partition(),
            Duration::from_secs(1),
        ) {
            Ok((_low, high)) => {
                reached = Some(Ok(()));
                Some(high)
            }
            Err(err) => {
                debug!(message = "watermarks unavailable", topic = e.topic(), partition = e.partition(), error = %err);
                reached.get_or_insert(Err(err.to_string()));
                None
            }
        };
        let lag = match (position, end) {
            (Some(position), Some(end)) => (end - position).max(0) as u64,
            _ => 0,
        };
        total += lag;
        partitions.push(PartitionLag {
            topic: e.topic().to_string(),
            partition: e.partition(),
            position,
            end,
            lag,
        });
    }
    let reached = reached.unwrap_or_else(|| {
        lag_client
            .fetch_metadata(Some(topic), Duration::from_secs(1))
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    Some((total, partitions, reached))
}

async fn watch_lag(
    consumer: Arc<Consumer_>,
    lag_client: Arc<LagClient>,
    every: Duration,
    tx: watch::Sender<Option<u64>>,
    observer: Arc<Observer>,
    topic: String,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let c = Arc::clone(&consumer);
        let l = Arc::clone(&lag_client);
        let t = topic.clone();
        let seen = tokio::task::spawn_blocking(move || broker_lag(&c, &l, &t))
            .await
            .ok()
            .flatten();
        let lag = seen.map(|(total, partitions, reached)| {
            observer.lag(partitions, reached);
            total
        });
        if tx.send(lag).is_err() {
            return;
        }
    }
}

fn pause_or_resume(consumer: &Consumer_, pause: bool) {
    let Ok(assignment) = consumer.assignment() else {
        return;
    };
    if assignment.count() == 0 {
        return;
    }
    let r = if pause {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    };
    if let Err(e) = r {
        warn!(message = if pause { "pausing fetch failed" } else { "resuming fetch failed" }, error = %e);
    }
}

fn commit(consumer: &Consumer_, state: &Mutex<WorkerState>, mode: CommitMode) {
    let positions = lock(state).to_commit();
    if positions.is_empty() {
        return;
    }
    match consumer.commit(&tpl_of(&positions), mode) {
        Ok(()) => {
            lock(state).committed(&positions);
            debug!(message = "committed", positions = ?positions);
        }
        Err(e) => warn!(message = "commit failed; will retry", error = %e),
    }
}

/// Executions whose reports may be in flight at once. A job's executor is free as soon as its last
/// attempt is over, so quick jobs can finish far faster than the results topic acks their reports;
/// beyond this many unacked reports (a slow or unreachable results topic) no new job starts, the
/// local queue fills, and fetching pauses. Each waiting report holds its message and result (a few
/// KiB at most), so this bounds that memory to tens of MiB.
const REPORT_WINDOW: usize = 10_000;

/// How long the local queue may stay full before fetching is paused (see `Worker::run`). Until
/// then the loop only stops taking records and librdkafka keeps what it prefetched (bounded by its
/// `queued.max.messages.kbytes`). Pausing is only needed so that the loop keeps polling (group
/// membership, rebalances, `max.poll.interval.ms` of 5 min or more) through a long full spell, and it
/// is costly: it drops librdkafka's prefetched records, and against tansu the fetch after a resume
/// was held for up to a minute (the 100 000-record stall in the README). Quick jobs behind a slow
/// results topic fill the queue for seconds at a time; they must not pause.
const PAUSE_AFTER_FULL: Duration = Duration::from_secs(5);

/// An execution task's job.
struct Spawned {
    ticket: Ticket,
    message: JobMessage,
    oversized: Option<OriginalDigest>,
    /// Its last attempt is over: it holds no executor, only its reports are outstanding.
    executed: bool,
    /// Fired when a newer run of its job replaces it (`"overlap": "replace"`).
    cancel: CancellationToken,
}

/// The consumer loop with everything around it.
struct Worker {
    config: WorkerConfig,
    handler: Arc<dyn Handler>,
    publisher: Arc<dyn Publisher>,
    state: Arc<Mutex<WorkerState>>,
    paused: Arc<AtomicBool>,
    consumer: Arc<Consumer_>,
    tasks: JoinSet<Done>,
    /// The job each execution task runs (and whether its last attempt is over), to free its
    /// executor when it says so and to clean up after a task that died.
    spawned: HashMap<tokio::task::Id, Spawned>,
    /// Execution tasks tell the loop here when their last attempt is over (their reports may still
    /// be in flight): their executor is free from then on.
    executed_tx: mpsc::UnboundedSender<tokio::task::Id>,
    executed_rx: mpsc::UnboundedReceiver<tokio::task::Id>,
    /// Executions whose handler is running (the pool's busy executors).
    running: usize,
    /// Executions over whose reports are not acked yet (their offsets are not finished).
    reporting: usize,
    /// Records that are not run (malformed, their task died) waiting to be dead-lettered. They count
    /// against `--prefetch` like queued jobs, so a topic full of garbage pauses fetching too.
    unrunnable: VecDeque<(Ticket, Unrunnable)>,
    /// Dead-letter tasks in flight, by task; they count against [`REPORT_WINDOW`] with `reporting`.
    dead_lettering: HashMap<tokio::task::Id, Ticket>,
    /// Records not run because of their job's overlap policy, waiting to be reported with this
    /// status and reason; they count against `--prefetch` like `unrunnable`.
    not_run: VecDeque<(Ticket, JobMessage, Status, String)>,
    /// Tasks reporting them, by task; they count against [`REPORT_WINDOW`] too.
    reporting_not_run: HashMap<tokio::task::Id, Ticket>,
    /// The publisher, for its count of reports given up.
    kafka_publisher: Arc<KafkaPublisher>,
    pool: autoscale::PoolState,
    summary: Summary,
    completions: u64,
    /// Metrics, probes, the status page.
    observer: Arc<Observer>,
    /// The consume loop's heartbeat (from its first turn).
    beat: Option<Beat>,
}

impl Worker {
    /// Reports in flight: executions waiting for their acks and dead letters being sent.
    fn in_flight_reports(&self) -> usize {
        self.reporting + self.dead_lettering.len() + self.reporting_not_run.len()
    }

    /// Local work waiting: queued jobs and records waiting to be dead-lettered.
    fn queued(&self) -> usize {
        lock(&self.state).queued() + self.unrunnable.len() + self.not_run.len()
    }

    /// Starts dead letters for unrunnable records, then as many ready jobs as the pool has free
    /// executors, as long as fewer than [`REPORT_WINDOW`] reports are in flight.
    fn start_ready(&mut self) {
        while self.in_flight_reports() < REPORT_WINDOW {
            let Some((ticket, record)) = self.unrunnable.pop_front() else {
                break;
            };
            let publisher = Arc::clone(&self.publisher);
            let report = self.config.report.clone();
            let id_ticket = ticket.clone();
            let handle = self.tasks.spawn(async move {
                dead_letter_unrunnable(&*publisher, &report, record).await;
                Done::DeadLettered { ticket }
            });
            self.dead_lettering.insert(handle.id(), id_ticket);
        }
        self.start_not_run_reports();
        while self.running < self.pool.size && self.in_flight_reports() < REPORT_WINDOW {
            let next = lock(&self.state).next_ready();
            match next {
                None => return,
                Some(Next::Duplicate(ticket, message)) => {
                    info!(message = "skipping a dispatchId this worker finished recently", dispatch_id = %message.dispatch_id, topic = %ticket.topic, partition = ticket.partition, offset = ticket.offset);
                    lock(&self.state).finish(&ticket, &message, false);
                    self.summary.duplicates += 1;
                    self.observer.duplicate();
                }
                Some(Next::Run(ticket, message, oversized)) => {
                    self.running += 1;
                    let handler = Arc::clone(&self.handler);
                    let publisher = Arc::clone(&self.publisher);
                    let report = self.config.report.clone();
                    let cancel = CancellationToken::new();
                    let job = Spawned {
                        ticket: ticket.clone(),
                        message: message.clone(),
                        oversized: oversized.clone(),
                        executed: false,
                        cancel: cancel.clone(),
                    };
                    let executed_tx = self.executed_tx.clone();
                    let handle = self.tasks.spawn(async move {
                        let origin = Origin {
                            topic: ticket.topic.to_string(),
                            partition: ticket.partition,
                            offset: ticket.offset,
                        };
                        let end = execute_cancellable(
                            &*handler,
                            &*publisher,
                            &report,
                            message.clone(),
                            origin,
                            oversized,
                            &cancel,
                            // The loop outlives its tasks; a send after it stopped is moot.
                            move || {
                                let _ = executed_tx.send(tokio::task::id());
                            },
                        )
                        .await;
                        Done::Job {
                            ticket,
                            message,
                            end,
                        }
                    });
                    self.spawned.insert(handle.id(), job);
                }
            }
        }
    }

    fn admit(&mut self, record: Fetched) {
        let (topic, partition, offset) = (record.topic.clone(), record.partition, record.offset);
        let admission = lock(&self.state).admit_at(record, chrono::Utc::now().timestamp_millis());
        match admission {
            Admission::Queued => {}
            Admission::Skipped { ticket, message } => {
                let why = "not run: a run of this job is still running or queued on this worker (overlap \"skip\")".to_string();
                self.not_run
                    .push_back((ticket, message, Status::Skipped, why));
            }
            Admission::Replacing {
                job_name,
                running,
                superseded,
            } => self.replace(&job_name, running, superseded),
            Admission::NotAssigned => {
                debug!(message = "record of a partition no longer assigned; ignored", topic = %topic, partition, offset)
            }
            Admission::Malformed {
                ticket,
                error,
                key,
                value: raw,
            } => {
                warn!(message = "malformed record: not a valid JobMessage v1; sending it to the DLQ and skipping it", topic = %topic, partition, offset, error = %error);
                self.summary.malformed += 1;
                self.observer.dead_letter(
                    DeadReason::Malformed,
                    &String::from_utf8_lossy(&key),
                    &topic,
                    partition,
                    offset,
                );
                let origin = Origin {
                    topic: topic.to_string(),
                    partition,
                    offset,
                };
                self.unrunnable
                    .push_back((ticket, Unrunnable::malformed(origin, key, &raw, error)));
            }
        }
    }

    /// A newer run of `job_name` arrived (`"overlap": "replace"`): its executing runs are
    /// cancelled (ended like a timeout, reported `cancelled`), its waiting runs reported
    /// `cancelled` without starting. The newer run starts once the cancelled ones have ended.
    fn replace(&mut self, job_name: &str, running: bool, superseded: Vec<(Ticket, JobMessage)>) {
        let mut cancelled = 0;
        for job in self.spawned.values() {
            if !job.executed && job.message.job_name == job_name && !job.cancel.is_cancelled() {
                job.cancel.cancel();
                cancelled += 1;
            }
        }
        info!(
            message = "a newer run replaces the runs of its job",
            job_name,
            cancelled,
            superseded = superseded.len(),
            running
        );
        for (ticket, message) in superseded {
            let why = "not run: replaced by a newer run of this job before it started (overlap \"replace\")".to_string();
            self.not_run
                .push_back((ticket, message, Status::Cancelled, why));
        }
    }

    /// Starts the reports of records not run because of their job's overlap policy, within
    /// [`REPORT_WINDOW`].
    fn start_not_run_reports(&mut self) {
        while self.in_flight_reports() < REPORT_WINDOW {
            let Some((ticket, message, status, why)) = self.not_run.pop_front() else {
                break;
            };
            let publisher = Arc::clone(&self.publisher);
            let report = self.config.report.clone();
            let id_ticket = ticket.clone();
            let handle = self.tasks.spawn(async move {
                report_not_run(&*publisher, &report, &message, status, &why).await;
                Done::NotRun {
                    ticket,
                    message,
                    status,
                }
            });
            self.reporting_not_run.insert(handle.id(), id_ticket);
        }
    }

    /// An execution task's last attempt is over: free its executor and let the next run of its
    /// name start; its offset waits for its reports ([`Worker::done`]).
    fn executed(&mut self, id: tokio::task::Id) {
        // Absent when the task finished (and was joined) before this message was read.
        let Some(job) = self.spawned.get_mut(&id) else {
            return;
        };
        if !job.executed {
            job.executed = true;
            self.running = self.running.saturating_sub(1);
            self.reporting += 1;
            lock(&self.state).executed(&job.message, true);
        }
    }

    fn joined(&mut self, joined: Result<(tokio::task::Id, Done), tokio::task::JoinError>) {
        match joined {
            Ok((id, done)) => {
                self.dead_lettering.remove(&id);
                self.reporting_not_run.remove(&id);
                let executed = self.spawned.remove(&id).is_some_and(|job| job.executed);
                self.done(done, executed);
            }
            Err(e) => {
                let id = e.id();
                let why = if e.is_panic() {
                    format!(
                        "the execution task panicked: {}",
                        panic_text(e.into_panic())
                    )
                } else {
                    "the execution task was cancelled".to_string()
                };
                if let Some(Spawned {
                    ticket,
                    message,
                    oversized,
                    executed,
                    ..
                }) = self.spawned.remove(&id)
                {
                    if executed {
                        self.reporting = self.reporting.saturating_sub(1);
                    } else {
                        self.running = self.running.saturating_sub(1);
                    }
                    lock(&self.state).abandon(&message);
                    self.summary.crashed += 1;
                    self.observer.dead_letter(
                        DeadReason::Crashed,
                        &message.job_name,
                        &ticket.topic,
                        ticket.partition,
                        ticket.offset,
                    );
                    tracing::error!(message = "an execution task died; dead-lettering its record (whether it ran is unknown) so that commits of its partition go on", dispatch_id = %message.dispatch_id, topic = %ticket.topic, partition = ticket.partition, offset = ticket.offset, error = %why);
                    let record = Unrunnable {
                        reason: DeadReason::Crashed,
                        origin: Origin {
                            topic: ticket.topic.to_string(),
                            partition: ticket.partition,
                            offset: ticket.offset,
                        },
                        key: message.job_name.clone().into_bytes(),
                        message: oversized.is_none().then_some(message),
                        raw: None,
                        original: oversized,
                        error: why,
                    };
                    self.unrunnable.push_back((ticket, record));
                } else if let Some(ticket) = self.dead_lettering.remove(&id) {
                    // Sending a dead letter cannot panic short of a bug; the record is given up
                    // rather than left to hold its partition's commits forever.
                    tracing::error!(message = "a dead-letter task died; its record is given up", topic = %ticket.topic, partition = ticket.partition, offset = ticket.offset, error = %why);
                    lock(&self.state).finish_unrunnable(&ticket);
                } else if let Some(ticket) = self.reporting_not_run.remove(&id) {
                    tracing::error!(message = "a task reporting a run that was not run died; its record is given up", topic = %ticket.topic, partition = ticket.partition, offset = ticket.offset, error = %why);
                    lock(&self.state).finish_unrunnable(&ticket);
                }
            }
        }
    }

    /// An execution task finished: its reports are acked. `executed`: the loop already freed its
    /// executor ([`Worker::executed`]).
    fn done(&mut self, done: Done, executed: bool) {
        match done {
            Done::Job {
                ticket,
                message,
                end,
            } => {
                self.completions += 1;
                match end {
                    Final::Succeeded { .. } => self.summary.succeeded += 1,
                    Final::Cancelled { .. } => self.summary.cancelled += 1,
                    Final::DeadLettered { reason, .. } => {
                        self.summary.dead_lettered += 1;
                        if reason == DeadReason::Expired {
                            self.summary.expired += 1;
                            self.observer.expired(&message);
                        }
                        self.observer.dead_letter(
                            reason,
                            &message.job_name,
                            &ticket.topic,
                            ticket.partition,
                            ticket.offset,
                        );
                    }
                }
                let mut state = lock(&self.state);
                if executed {
                    self.reporting = self.reporting.saturating_sub(1);
                    state.reported(&ticket);
                } else {
                    self.running = self.running.saturating_sub(1);
                    state.finish(&ticket, &message, true);
                }
            }
            Done::DeadLettered { ticket } => {
                lock(&self.state).finish_unrunnable(&ticket);
            }
            Done::NotRun {
                ticket,
                message,
                status,
            } => {
                match status {
                    Status::Skipped => self.summary.skipped += 1,
                    _ => self.summary.cancelled += 1,
                }
                self.observer.not_run(&message, status);
                lock(&self.state).decided(&ticket, &message.dispatch_id);
            }
        }
    }

    async fn run(&mut self, shutdown: CancellationToken, lag: watch::Receiver<Option<u64>>) {
        let mut commit_tick =
            tokio::time::interval(self.config.commit_interval.max(Duration::from_millis(10)));
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut scale_tick =
            tokio::time::interval(self.config.scale_interval.max(Duration::from_millis(10)));
        scale_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let started = Instant::now();
        let mut last_scale = Instant::now();
        let mut last_completions = 0u64;
        let mut rate: Option<f64> = None;
        let prefetch = self.config.prefetch.max(1);
        let paused = Arc::clone(&self.paused);
        let consumer = Arc::clone(&self.consumer);
        let mut full_since: Option<tokio::time::Instant> = None;
        let beat = self.observer.consuming();
        self.beat = Some(beat.clone());
        loop {
            // Records whose notBefore came join the queue; the loop wakes for the next one.
            let held_until = lock(&self.state).release_held(chrono::Utc::now().timestamp_millis());
            let held_wait = held_until.map(|at| {
                Duration::from_millis(
                    at.saturating_sub(chrono::Utc::now().timestamp_millis())
                        .clamp(1, 1000) as u64,
                )
            });
            self.start_ready();
            let queued = self.queued();
            beat.beat();
            self.observer.load(self.running, queued);
            let is_paused = paused.load(AtomicOrdering::SeqCst);
            if is_paused && queued <= prefetch / 2 {
                pause_or_resume(&consumer, false);
                paused.store(false, AtomicOrdering::SeqCst);
            }
            // A full queue first only stops taking records (librdkafka keeps what it fetched); if
            // it stays full, fetching pauses. Pausing drops librdkafka's fetched records and costs a
            // refetch on resume, too much to pay every time quick jobs fill the queue for a moment.
            let full = queued >= prefetch;
            full_since = if full {
                full_since.or_else(|| Some(tokio::time::Instant::now()))
            } else {
                None
            };
            // Only waited on while the queue is full.
            let pause_at = full_since.unwrap_or_else(tokio::time::Instant::now) + PAUSE_AFTER_FULL;
            tokio::select! {
                _ = shutdown.cancelled() => {
                    self.observer.stopping();
                    return;
                }
                _ = tokio::time::sleep_until(pause_at), if full && !is_paused => {
                    // Keep polling (group membership, rebalances) but fetch no more.
                    pause_or_resume(&consumer, true);
                    paused.store(true, AtomicOrdering::SeqCst);
                    debug!(message = "local queue full: fetching paused", queued, to_dead_letter = self.unrunnable.len(), reports_in_flight = self.in_flight_reports());
                }
                received = consumer.recv(), if !full || is_paused => match received {
                    Ok(m) => {
                        let record = Fetched {
                            topic: Arc::from(m.topic()),
                            partition: m.partition(),
                            offset: m.offset(),
                            key: m.key().unwrap_or_default().to_vec(),
                            value: m.payload().unwrap_or_default().to_vec(),
                        };
                        drop(m);
                        self.admit(record);
                    }
                    Err(e) => warn!(message = "consumer error", error = %e),
                },
                Some(id) = self.executed_rx.recv() => self.executed(id),
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => self.joined(joined),
                _ = tokio::time::sleep(held_wait.unwrap_or_default()), if held_wait.is_some() => {}
                _ = commit_tick.tick() => commit(&consumer, &self.state, CommitMode::Async),
                _ = scale_tick.tick() => {
                    let elapsed = last_scale.elapsed().as_secs_f64().max(0.001);
                    let now_rate = (self.completions - last_completions) as f64 / elapsed;
                    last_scale = Instant::now();
                    last_completions = self.completions;
                    // Smoothed so one lucky interval does not set the size.
                    let smoothed = rate.map_or(now_rate, |r| 0.5 * r + 0.5 * now_rate);
                    rate = Some(smoothed);
                    let broker = (*lag.borrow()).unwrap_or(0);
                    let backlog = broker + self.queued() as u64;
                    let obs = autoscale::Observation {
                        backlog,
                        in_flight: self.running,
                        rate: smoothed,
                        now_ms: started.elapsed().as_millis() as u64,
                    };
                    let decision = autoscale::decide(self.config.scale, self.pool, obs);
                    if let Some(reason) = decision.reason {
                        info!(
                            message = "pool resized",
                            from = self.pool.size,
                            to = decision.state.size,
                            lag = backlog,
                            in_flight = self.running,
                            rate = format!("{smoothed:.2}/s"),
                            reason = %reason,
                        );
                    }
                    self.observer.pool(self.pool.size, decision.state.size, self.running);
                    self.pool = decision.state;
                }
            }
        }
    }

    /// Stop fetching, let running jobs finish within the grace, commit.
    async fn drain(&mut self) {
        let dropped = lock(&self.state).drop_queue() + self.unrunnable.len() + self.not_run.len();
        self.unrunnable.clear();
        self.not_run.clear();
        pause_or_resume(&self.consumer, true);
        info!(
            message = "shutting down: no new jobs start; waiting for running ones",
            running = self.running,
            reporting = self.reporting,
            queued_dropped = dropped,
            grace = %humantime::format_duration(self.config.shutdown_grace),
        );
        let deadline = tokio::time::Instant::now() + self.config.shutdown_grace;
        // Draining is progress too: the heartbeat goes on while running jobs finish.
        let mut beat_tick = tokio::time::interval(Duration::from_secs(1));
        while !self.tasks.is_empty() {
            self.observer.load(self.running, 0);
            tokio::select! {
                _ = beat_tick.tick() => {
                    if let Some(beat) = &self.beat {
                        beat.beat();
                    }
                }
                Some(id) = self.executed_rx.recv() => self.executed(id),
                Some(joined) = self.tasks.join_next_with_id() => self.joined(joined),
                _ = tokio::time::sleep_until(deadline) => {
                    // Jobs whose reports were still in flight are as unfinished as running ones.
                    self.summary.aborted = (self.running + self.reporting) as u64;
                    warn!(message = "shutdown grace expired; killing running jobs (their records stay uncommitted and run again elsewhere)", running = self.running, reporting = self.reporting);
                    self.tasks.abort_all();
                    while self.tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
        let consumer = Arc::clone(&self.consumer);
        let state = Arc::clone(&self.state);
        let _ =
            tokio::task::spawn_blocking(move || commit(&consumer, &state, CommitMode::Sync)).await;
    }
}

/// Runs the worker until `shutdown` is cancelled, then drains and leaves the group.
pub async fn run(
    config: WorkerConfig,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
) -> Result<Summary, WorkerError> {
    let observer = Observer::new(&config);
    run_observed(config, handler, shutdown, observer).await
}

/// [`run`], reporting to `observer` (made with [`Observer::new`] from the same config), whose
/// [`Observer::site`] an HTTP server serves.
pub async fn run_observed(
    config: WorkerConfig,
    handler: Arc<dyn Handler>,
    shutdown: CancellationToken,
    observer: Arc<Observer>,
) -> Result<Summary, WorkerError> {
    let handler: Arc<dyn Handler> = Arc::new(ObservedHandler {
        inner: handler,
        observer: Arc::clone(&observer),
    });
    let brokers = config.kafka.brokers_text();
    ensure_report_topics(&config, &shutdown).await?;
    if shutdown.is_cancelled() {
        info!(message = "stopped before the worker started: Kafka was not reached");
        return Ok(Summary::default());
    }
    let producer: FutureProducer<KafkaContext> = config
        .kafka
        .report_producer(&config.report.worker)
        .create_with_context(config.kafka.context("worker producer"))
        .map_err(|source| WorkerError::Client {
            what: "producer",
            brokers: brokers.clone(),
            source,
        })?;
    let kafka_publisher = Arc::new(KafkaPublisher {
        producer,
        health: Arc::clone(config.kafka.health()),
        retry_backoff: Duration::from_millis(200),
        undeliverable: Default::default(),
    });
    let publisher: Arc<dyn Publisher> = Arc::clone(&kafka_publisher) as Arc<dyn Publisher>;

    let state = Arc::new(Mutex::new(WorkerState::new(
        config.ordering,
        config.dedup_capacity,
    )));
    let paused = Arc::new(AtomicBool::new(false));
    let consumer: Consumer_ = config
        .kafka
        .job_consumer(&JobConsumer {
            group: &config.group,
            client_id: &config.report.worker,
            from_earliest: config.start == StartAt::Earliest,
            session_timeout: config.session_timeout,
            shutdown_grace: config.shutdown_grace,
        })
        .create_with_context(WorkerContext {
            state: Arc::clone(&state),
            paused: Arc::clone(&paused),
            kafka: config.kafka.context("worker"),
            observer: Arc::clone(&observer),
        })
        .map_err(|source| WorkerError::Client {
            what: "consumer",
            brokers: brokers.clone(),
            source,
        })?;
    consumer
        .subscribe(&[&config.topic])
        .map_err(|source| WorkerError::Subscribe {
            topic: config.topic.clone(),
            source,
        })?;
    let consumer = Arc::new(consumer);
    info!(
        message = "worker started",
        brokers = %brokers,
        topic = %config.topic,
        group = %config.group,
        worker = %config.report.worker,
        min_workers = config.scale.min,
        max_workers = config.scale.max,
        ordering = ?config.ordering,
    );

    let lag_client: LagClient = config
        .kafka
        .lag_watcher(&config.report.worker)
        .create_with_context(config.kafka.context("worker"))
        .map_err(|source| WorkerError::Client {
            what: "lag watcher",
            brokers: brokers.clone(),
            source,
        })?;
    let (lag_tx, lag_rx) = watch::channel(None);
    let lag_task = tokio::spawn(watch_lag(
        Arc::clone(&consumer),
        Arc::new(lag_client),
        config.scale_interval.max(Duration::from_millis(100)),
        lag_tx,
        Arc::clone(&observer),
        config.topic.clone(),
    ));
    let (executed_tx, executed_rx) = mpsc::unbounded_channel();
    let mut worker = Worker {
        pool: autoscale::PoolState::new(config.scale.normalized().min),
        config,
        handler,
        publisher,
        state,
        paused,
        consumer,
        tasks: JoinSet::new(),
        spawned: HashMap::new(),
        executed_tx,
        executed_rx,
        running: 0,
        reporting: 0,
        unrunnable: VecDeque::new(),
        dead_lettering: HashMap::new(),
        not_run: VecDeque::new(),
        reporting_not_run: HashMap::new(),
        kafka_publisher,
        summary: Summary::default(),
        completions: 0,
        observer,
        beat: None,
    };
    worker.run(shutdown, lag_rx).await;
    worker.drain().await;
    lag_task.abort();
    let _ = lag_task.await;
    let mut summary = worker.summary;
    summary.undeliverable = worker
        .kafka_publisher
        .undeliverable
        .load(AtomicOrdering::Relaxed);
    let consumer = worker.consumer;
    drop(worker.tasks);
    // Closing leaves the group (the revoke callback commits once more); it blocks, so off the runtime.
    let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
    info!(
        message = "worker stopped",
        succeeded = summary.succeeded,
        dead_lettered = summary.dead_lettered,
        duplicates_skipped = summary.duplicates,
        malformed = summary.malformed,
        expired = summary.expired,
        crashed = summary.crashed,
        undeliverable_reports = summary.undeliverable,
        aborted = summary.aborted,
        skipped = summary.skipped,
        cancelled = summary.cancelled,
    );
    Ok(summary)
}
