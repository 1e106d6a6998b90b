//! The consumer loop: admits fetched records, starts ready jobs on the pool's executors, joins
//! their tasks, commits, pauses fetch when the local queue stays full, and sizes the pool.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::CommitMode;
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::attempts::{
    dead_letter_unrunnable, execute_cancellable, panic_text, report_not_run, Final, Unrunnable,
};
use super::dedup::Proof;
use super::group::{commit, lock, pause_or_resume, Consumer_};
use super::observe::Observer;
use super::rebuild::rebuild;
use super::results::{KafkaPublisher, Publisher};
use super::state::{Admission, Fetched, Next, Ticket, Tp, WorkerState};
use super::{autoscale, Handler, Status, Summary, WorkerConfig};
use crate::clock::{Clock, SystemClock};
use crate::obs::health::Beat;
use crate::wire::result::{DeadReason, Origin, OriginalDigest};
use crate::wire::JobMessage;

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
pub(super) struct Worker {
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
    /// Since when the local queue is full (fetching pauses after [`PAUSE_AFTER_FULL`]).
    full_since: Option<tokio::time::Instant>,
    /// The clock records are admitted and released by (`notBefore`, future slots): the system's,
    /// or a drill's.
    clock: Arc<dyn Clock>,
    /// Rebuilds of the dedupe state for new assignments (`--dedupe-window`): the assignments
    /// (partition, epoch) each one opens, and what the results topic proves.
    rebuilds: JoinSet<Vec<(String, Proof)>>,
    /// The assignments each rebuild task opens, by task.
    rebuilding: HashMap<tokio::task::Id, Vec<(Tp, u64)>>,
}

impl Worker {
    /// A loop over `consumer` (subscribed already) whose reports go to `publisher`.
    pub(super) fn new(
        config: WorkerConfig,
        handler: Arc<dyn Handler>,
        publisher: Arc<KafkaPublisher>,
        state: Arc<Mutex<WorkerState>>,
        paused: Arc<AtomicBool>,
        consumer: Arc<Consumer_>,
        observer: Arc<Observer>,
    ) -> Worker {
        let (executed_tx, executed_rx) = mpsc::unbounded_channel();
        let clock: Arc<dyn Clock> = match config.drill_clock {
            Some(drill) => Arc::new(drill),
            None => Arc::new(SystemClock),
        };
        Worker {
            clock,
            pool: autoscale::PoolState::new(config.scale.normalized().min),
            config,
            handler,
            publisher: Arc::clone(&publisher) as Arc<dyn Publisher>,
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
            kafka_publisher: publisher,
            summary: Summary::default(),
            completions: 0,
            observer,
            beat: None,
            full_since: None,
            rebuilds: JoinSet::new(),
            rebuilding: HashMap::new(),
        }
    }

    /// After [`Worker::drain`]: what the run did, and the consumer, to close.
    pub(super) fn finish(self) -> (Summary, Arc<Consumer_>) {
        let mut summary = self.summary;
        summary.undeliverable = self
            .kafka_publisher
            .undeliverable
            .load(AtomicOrdering::Relaxed);
        (summary, self.consumer)
    }

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
                    info!(message = "skipping a dispatchId that is done already (run here, or its result is in the results topic)", dispatch_id = %message.dispatch_id, topic = %ticket.topic, partition = ticket.partition, offset = ticket.offset);
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
        let now_ms = self.clock.now().timestamp_millis();
        let admission = lock(&self.state).admit_at(record, now_ms);
        match admission {
            Admission::Queued | Admission::Gated => {}
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
            Admission::FutureSlot {
                ticket,
                message,
                oversized,
                error,
            } => {
                warn!(message = "record for a slot too far in the future: not run; sending it to the DLQ and skipping it", dispatch_id = %message.dispatch_id, scheduled_at = %message.scheduled_at, topic = %topic, partition, offset, error = %error);
                self.summary.dead_lettered += 1;
                self.summary.future_slots += 1;
                self.observer.dead_letter(
                    DeadReason::FutureSlot,
                    &message.job_name,
                    &topic,
                    partition,
                    offset,
                );
                let record = Unrunnable {
                    reason: DeadReason::FutureSlot,
                    origin: Origin {
                        topic: topic.to_string(),
                        partition,
                        offset,
                    },
                    key: message.job_name.clone().into_bytes(),
                    raw: None,
                    original: oversized.clone(),
                    message: oversized.is_none().then_some(message),
                    error,
                };
                self.unrunnable.push_back((ticket, record));
            }
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

    /// Consumes until `shutdown` is cancelled.
    pub(super) async fn run(
        &mut self,
        shutdown: &CancellationToken,
        lag: watch::Receiver<Option<u64>>,
    ) {
        let mut commit_tick = every(self.config.commit_interval);
        let mut scale_tick = every(self.config.scale_interval);
        let mut throughput = Throughput::new();
        let consumer = Arc::clone(&self.consumer);
        self.beat = Some(self.observer.consuming());
        loop {
            let turn = self.prepare_turn();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(turn.pause_at), if turn.full && !turn.paused => self.pause_fetching(turn.queued),
                received = consumer.recv(), if !turn.full || turn.paused => self.received(received),
                Some(id) = self.executed_rx.recv() => self.executed(id),
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => self.joined(joined),
                Some(rebuilt) = self.rebuilds.join_next_with_id(), if !self.rebuilds.is_empty() => self.rebuilt(rebuilt),
                _ = tokio::time::sleep(turn.held_wait.unwrap_or_default()), if turn.held_wait.is_some() => {}
                _ = commit_tick.tick() => commit(&consumer, &self.state, CommitMode::Async),
                _ = scale_tick.tick() => self.autoscale(&mut throughput, *lag.borrow()),
            }
        }
    }

    /// A turn's bookkeeping before the loop waits: records whose notBefore came join the queue,
    /// ready jobs start, the heartbeat and the load are reported, and fetching resumes once the
    /// queue has room again. Says what the turn waits for.
    fn prepare_turn(&mut self) -> Turn {
        self.start_rebuilds();
        let held_until = lock(&self.state).release_held(self.clock.now().timestamp_millis());
        let held_wait = held_until.map(|at| {
            let real = chrono::DateTime::from_timestamp_millis(at)
                .map_or(Duration::ZERO, |at| self.clock.real_until(at));
            real.clamp(Duration::from_millis(1), Duration::from_secs(1))
        });
        self.start_ready();
        let queued = self.queued();
        if let Some(beat) = &self.beat {
            beat.beat();
        }
        self.observer.load(self.running, queued);
        let prefetch = self.config.prefetch.max(1);
        let paused = self.paused.load(AtomicOrdering::SeqCst);
        if paused && queued <= prefetch / 2 {
            pause_or_resume(&self.consumer, false);
            self.paused.store(false, AtomicOrdering::SeqCst);
        }
        // A full queue first only stops taking records (librdkafka keeps what it fetched); if
        // it stays full, fetching pauses. Pausing drops librdkafka's fetched records and costs a
        // refetch on resume, too much to pay every time quick jobs fill the queue for a moment.
        let full = queued >= prefetch;
        self.full_since = if full {
            self.full_since
                .or_else(|| Some(tokio::time::Instant::now()))
        } else {
            None
        };
        Turn {
            queued,
            paused,
            full,
            // Only waited on while the queue is full.
            pause_at: self.full_since.unwrap_or_else(tokio::time::Instant::now) + PAUSE_AFTER_FULL,
            held_wait,
        }
    }

    /// Starts one rebuild of the dedupe state for the partitions assigned since the last turn.
    fn start_rebuilds(&mut self) {
        let assignments = lock(&self.state).take_rebuilds();
        if assignments.is_empty() {
            return;
        }
        let mut names: Vec<String> = assignments
            .iter()
            .map(|((t, p), _)| format!("{t}/{p}"))
            .collect();
        names.sort();
        let partitions = names.join(",");
        info!(message = "rebuilding the dedupe state from the results topic before the newly assigned partitions run", partitions = %partitions, window = %humantime::format_duration(self.config.dedupe_window));
        let kafka = self.config.kafka.clone();
        let topic = self.config.report.results_topic.clone();
        let window = self.config.dedupe_window;
        let handle = self
            .rebuilds
            .spawn(async move { rebuild(&kafka, &topic, window, &partitions).await });
        self.rebuilding.insert(handle.id(), assignments);
    }

    /// A rebuild is done: its proofs are known, and the records its partitions held back are
    /// admitted (a proven `dispatchId` is then skipped as a duplicate).
    fn rebuilt(
        &mut self,
        joined: Result<(tokio::task::Id, Vec<(String, Proof)>), tokio::task::JoinError>,
    ) {
        match joined {
            Ok((id, proofs)) => {
                let assignments = self.rebuilding.remove(&id).unwrap_or_default();
                let waiting = lock(&self.state).rebuilt(&assignments, proofs);
                for record in waiting {
                    self.admit(record);
                }
            }
            // Reading a topic cannot panic short of a bug; its partitions stay held back (nothing
            // runs unchecked) and the rebuild starts again.
            Err(e) => {
                tracing::error!(message = "a dedupe rebuild task died; starting it again", error = %e);
                if let Some(assignments) = self.rebuilding.remove(&e.id()) {
                    lock(&self.state).rebuild_again(assignments);
                }
            }
        }
    }

    /// The local queue stayed full for [`PAUSE_AFTER_FULL`]: keep polling (group membership,
    /// rebalances) but fetch no more.
    fn pause_fetching(&mut self, queued: usize) {
        pause_or_resume(&self.consumer, true);
        self.paused.store(true, AtomicOrdering::SeqCst);
        debug!(
            message = "local queue full: fetching paused",
            queued,
            to_dead_letter = self.unrunnable.len(),
            reports_in_flight = self.in_flight_reports()
        );
    }

    /// A fetched record joins the local bookkeeping; a consumer error is logged (librdkafka
    /// recovers by itself).
    fn received(&mut self, received: KafkaResult<BorrowedMessage<'_>>) {
        match received {
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
        }
    }

    /// Every `--scale-interval`: sizes the pool ([`autoscale::decide`]) from the backlog (the
    /// broker's lag plus the local queue), the busy executors and the completion rate.
    fn autoscale(&mut self, throughput: &mut Throughput, broker_lag: Option<u64>) {
        let rate = throughput.rate(self.completions);
        let backlog = broker_lag.unwrap_or(0) + self.queued() as u64;
        let obs = autoscale::Observation {
            backlog,
            in_flight: self.running,
            rate,
            now_ms: throughput.started.elapsed().as_millis() as u64,
        };
        let decision = autoscale::decide(self.config.scale, self.pool, obs);
        if let Some(reason) = decision.reason {
            info!(
                message = "pool resized",
                from = self.pool.size,
                to = decision.state.size,
                lag = backlog,
                in_flight = self.running,
                rate = format!("{rate:.2}/s"),
                reason = %reason,
            );
        }
        self.observer
            .pool(self.pool.size, decision.state.size, self.running);
        self.pool = decision.state;
    }

    /// At shutdown (or when a background task ended early): stop fetching, let running jobs
    /// finish within the grace, commit.
    pub(super) async fn drain(&mut self) {
        self.observer.stopping();
        let dropped = lock(&self.state).drop_queue() + self.unrunnable.len() + self.not_run.len();
        self.unrunnable.clear();
        self.not_run.clear();
        // A rebuild still reading only held records back, and those were dropped above.
        self.rebuilds.abort_all();
        while self.rebuilds.join_next().await.is_some() {}
        self.rebuilding.clear();
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

/// What one turn of the consumer loop waits for, decided before it waits.
struct Turn {
    /// Local work waiting ([`Worker::queued`]).
    queued: usize,
    /// Fetching was paused when the turn began.
    paused: bool,
    /// The local queue is full: no record is taken, and fetching pauses at `pause_at`.
    full: bool,
    pause_at: tokio::time::Instant,
    /// How long until a held record's notBefore comes.
    held_wait: Option<Duration>,
}

/// The pool's completion rate between two scale steps, smoothed, and the time since the loop
/// began (the clock of the autoscaler's delays).
struct Throughput {
    started: Instant,
    last: Instant,
    last_completions: u64,
    rate: Option<f64>,
}

impl Throughput {
    fn new() -> Throughput {
        let now = Instant::now();
        Throughput {
            started: now,
            last: now,
            last_completions: 0,
            rate: None,
        }
    }

    /// Completions per second since the last call, smoothed so that one lucky interval does not
    /// set the size.
    fn rate(&mut self, completions: u64) -> f64 {
        let elapsed = self.last.elapsed().as_secs_f64().max(0.001);
        let now_rate = (completions - self.last_completions) as f64 / elapsed;
        self.last = Instant::now();
        self.last_completions = completions;
        let smoothed = self.rate.map_or(now_rate, |r| 0.5 * r + 0.5 * now_rate);
        self.rate = Some(smoothed);
        smoothed
    }
}

/// A ticker for `period` (at least 10 ms) that delays, not bursts, after a slow turn.
fn every(period: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(period.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}
