//! The pipeline of a dispatcher, built in one place for every run mode (alone, in a group, a
//! replayed window), and the one tick-and-stop step both live modes share.
//!
//! ```text
//!  TickLoop ── queue (--queue-capacity) ──► DelayQueue (Kafka only: records waiting for their
//!                                            │            jitter's notBefore)
//!                                            ▼
//!                                           Sink: the producer pool (its acks settle the leases
//!                                                 through the SlotLedger) or the dry-run printer
//! ```
//!
//! Closing the pipeline drops the tick loop: its queue closes, the delay queue hands on what it
//! holds and ends, and the sink drains what reached it.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::config::{ServiceConfig, ServiceError, SinkConfig};
use super::delay::DelayQueue;
use super::observe::Observer;
use super::producer::{self, DeliveryStats, SlotLedger};
use super::tick_loop::TickLoop;
use super::{dry_run, Dispatch};
use crate::clock::Clock;
use crate::obs::health::Beat;

/// A running pipeline: the tick loop and what takes its dispatches away.
pub(super) struct Pipeline {
    /// The loop (its shards, its schedule source).
    pub(super) tick_loop: TickLoop,
    /// The delay queue in front of the producers (Kafka only).
    pub(super) delay: Option<DelayQueue>,
    sink: Sink,
    /// Dispatches handed to the producer pool and not settled (none for a dry run).
    backlog: Option<Arc<AtomicU64>>,
    beat: Option<Beat>,
    observer: Arc<Observer>,
    grace: Duration,
}

/// What the pipeline is built from.
struct Parts<'a> {
    sink: &'a SinkConfig,
    queue_capacity: usize,
    /// `--delay-capacity` and the clock the delay queue waits by; `None`: no delay queue.
    delay: Option<(usize, Arc<dyn Clock>)>,
    /// The clock the slot ledger measures lateness by.
    clock: Arc<dyn Clock>,
    observer: Arc<Observer>,
    tick: Duration,
    grace: Duration,
}

impl Pipeline {
    /// The pipeline of a live dispatcher; `tick_loop` makes the loop that feeds the queue.
    pub(super) fn start(
        config: &ServiceConfig,
        tick_loop: impl FnOnce(mpsc::Sender<Dispatch>) -> TickLoop,
    ) -> Pipeline {
        Pipeline::build(
            Parts {
                sink: &config.sink,
                queue_capacity: config.queue_capacity,
                delay: Some((config.delay_capacity, Arc::clone(&config.clock))),
                clock: Arc::clone(&config.clock),
                observer: Arc::clone(&config.observer),
                tick: config.tick,
                grace: config.shutdown_grace,
            },
            tick_loop,
        )
    }

    /// The pipeline of a replayed window: no delay queue, no observer.
    pub(super) fn replay(
        sink: &SinkConfig,
        queue_capacity: usize,
        tick_loop: impl FnOnce(mpsc::Sender<Dispatch>) -> TickLoop,
    ) -> Pipeline {
        Pipeline::build(
            Parts {
                sink,
                queue_capacity,
                delay: None,
                clock: Arc::new(crate::clock::SystemClock),
                observer: Observer::disabled(),
                tick: Duration::from_secs(1),
                grace: Duration::ZERO,
            },
            tick_loop,
        )
    }

    fn build(
        parts: Parts<'_>,
        tick_loop: impl FnOnce(mpsc::Sender<Dispatch>) -> TickLoop,
    ) -> Pipeline {
        let observer = parts.observer;
        let (tx, rx) = mpsc::channel(parts.queue_capacity.max(1));
        // The delay queue waits only for Kafka: a dry run prints `notBefore` and does not wait.
        let (rx, delay) = match (parts.sink, parts.delay) {
            (SinkConfig::Kafka(_), Some((capacity, clock))) => {
                let (rx, queue) = DelayQueue::start(
                    rx,
                    parts.queue_capacity.max(1),
                    capacity,
                    clock,
                    observer.delay_queue_gauge(),
                );
                (rx, Some(queue))
            }
            _ => (rx, None),
        };
        let ledger = matches!(parts.sink, SinkConfig::Kafka(_))
            .then(|| Arc::new(SlotLedger::new(parts.clock).with_observer(Arc::clone(&observer))));
        let sink = Sink::start(parts.sink, rx, ledger.clone(), Arc::clone(&observer));
        let mut tick_loop = tick_loop(tx);
        if let Some(l) = &ledger {
            tick_loop = tick_loop.with_ledger(Arc::clone(l));
        }
        let backlog = match parts.sink {
            SinkConfig::Kafka(p) => Some(Arc::clone(p.kafka.health().backlog())),
            SinkConfig::DryRun { .. } => None,
        };
        Pipeline {
            tick_loop: tick_loop.with_observer(Arc::clone(&observer)),
            delay,
            sink,
            backlog,
            beat: observer.heartbeat(parts.tick),
            observer,
            grace: parts.grace,
        }
    }

    /// The tick loop's heartbeat (`None` when `--http` is off).
    pub(super) fn beat(&self) -> Option<&Beat> {
        self.beat.as_ref()
    }

    /// One tick, then the observer's gauges and the heartbeat. A tick cut by `shutdown` still
    /// finishes its minute, within the grace. `Err` when the loop must stop: with the reason when
    /// the sink is gone, `None` when `shutdown` came (or the grace ran out mid-minute).
    pub(super) async fn tick(
        &mut self,
        shutdown: &CancellationToken,
    ) -> Result<(), Option<ServiceError>> {
        if !tick_once(
            &mut self.tick_loop,
            shutdown,
            self.grace,
            self.beat.as_ref(),
        )
        .await
        {
            if shutdown.is_cancelled() {
                return Err(None);
            }
            return Err(Some(self.sink.closed().await));
        }
        self.observe();
        Ok(())
    }

    /// The observer's gauges, the next runs, and the heartbeat.
    pub(super) fn observe(&self) {
        if let Some(beat) = &self.beat {
            beat.beat();
        }
        let undelivered = self
            .backlog
            .as_ref()
            .map_or(0, |b| b.load(Ordering::Relaxed));
        self.observer
            .after_tick(&self.tick_loop.snapshot(), undelivered);
    }

    /// Resolves when the sink has ended, which it must not do while the loop feeds it (a closed
    /// stdout, a panicked producer); says why. Not to be awaited again after it resolved.
    pub(super) async fn sink_ended(&mut self) -> ServiceError {
        self.sink.ended().await
    }

    /// Stops the tick loop (its queue closes); returns how many dispatches it made and what
    /// still drains.
    pub(super) fn close(self) -> (u64, Draining) {
        let dispatched = self.tick_loop.total_dispatched();
        drop(self.tick_loop);
        (
            dispatched,
            Draining {
                sink: self.sink,
                delay: self.delay,
            },
        )
    }
}

/// A closed pipeline: the delay queue and the sink deliver what they hold.
pub(super) struct Draining {
    sink: Sink,
    /// Joined once the sink is done: the queue hands on what it holds once its input closes.
    delay: Option<DelayQueue>,
}

impl Draining {
    /// Waits for the sink to finish, at most `grace` (None: as long as it takes, with progress
    /// logs). Returns how many dispatches were not delivered.
    pub(super) async fn finish(
        self,
        dispatched: u64,
        grace: Option<Duration>,
    ) -> Result<u64, ServiceError> {
        let finished = self.sink.finish(dispatched, grace).await;
        join_delay(self.delay).await;
        finished
    }

    /// Why the loop found the sink closed: the sink's own reason, if it says within a second.
    pub(super) async fn closed(mut self) -> ServiceError {
        let why = self.sink.closed().await;
        join_delay(self.delay).await;
        why
    }
}

/// The sink has ended, so the delay queue's output is closed and its task ends at once.
async fn join_delay(delay: Option<DelayQueue>) {
    if let Some(delay) = delay {
        delay.join(Duration::from_secs(1)).await;
    }
}

/// The sink a run feeds: the dry-run printer or the Kafka producer pool.
enum Sink {
    Print(JoinHandle<std::io::Result<u64>>),
    Kafka(
        JoinHandle<Result<(), producer::ProducerError>>,
        Arc<DeliveryStats>,
    ),
}

impl Sink {
    fn start(
        config: &SinkConfig,
        rx: mpsc::Receiver<Dispatch>,
        ledger: Option<Arc<SlotLedger>>,
        observer: Arc<Observer>,
    ) -> Sink {
        match config {
            SinkConfig::DryRun { default_topic } => Sink::Print(tokio::spawn(
                dry_run::print_lines(rx, default_topic.clone(), observer),
            )),
            SinkConfig::Kafka(config) => {
                let stats = Arc::new(DeliveryStats::default());
                Sink::Kafka(
                    tokio::spawn(producer::run(
                        config.clone(),
                        rx,
                        Arc::clone(&stats),
                        ledger,
                    )),
                    stats,
                )
            }
        }
    }

    /// Resolves when the sink's task has ended, which it must not do while the loop feeds it: a
    /// closed stdout, a panicked producer. Says why. Not to be awaited again after it resolved.
    async fn ended(&mut self) -> ServiceError {
        match self {
            Sink::Print(task) => match task.await {
                Ok(Err(e)) => ServiceError::Output(e),
                Ok(Ok(_)) => ServiceError::Task {
                    what: "the dry-run printer",
                    reason: "it stopped".into(),
                },
                Err(e) => ServiceError::Task {
                    what: "the dry-run printer",
                    reason: e.to_string(),
                },
            },
            Sink::Kafka(task, _) => ServiceError::Task {
                what: "the producer pool",
                reason: match task.await {
                    Ok(Ok(())) => "it stopped".into(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                },
            },
        }
    }

    /// Why the loop found the sink closed: the sink's own reason, if it says within a second.
    async fn closed(&mut self) -> ServiceError {
        tokio::time::timeout(Duration::from_secs(1), self.ended())
            .await
            .unwrap_or(ServiceError::Task {
                what: "the tick loop",
                reason: "its sink closed".into(),
            })
    }

    /// Waits for the sink to finish, at most `grace` (None: as long as it takes, with progress
    /// logs). Returns how many dispatches were not delivered.
    async fn finish(self, dispatched: u64, grace: Option<Duration>) -> Result<u64, ServiceError> {
        match self {
            Sink::Print(task) => {
                task.await.map_err(|e| ServiceError::Task {
                    what: "the dry-run printer",
                    reason: e.to_string(),
                })??;
                Ok(0)
            }
            Sink::Kafka(mut task, stats) => {
                let settled = |s: &DeliveryStats| {
                    (
                        s.delivered.load(std::sync::atomic::Ordering::Relaxed),
                        s.failed.load(std::sync::atomic::Ordering::Relaxed),
                    )
                };
                let deadline = grace.map(|g| tokio::time::Instant::now() + g);
                let mut progress = tokio::time::interval(Duration::from_secs(2));
                progress.tick().await;
                loop {
                    let sleep_until = deadline
                        .unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
                    tokio::select! {
                        r = &mut task => {
                            r.map_err(|e| ServiceError::Task { what: "the producer pool", reason: e.to_string() })?
                                .map_err(|e| ServiceError::Task { what: "the producer pool", reason: e.to_string() })?;
                            let (delivered, failed) = settled(&stats);
                            info!(message = "all dispatches settled", dispatched, delivered, failed);
                            return Ok(0);
                        }
                        _ = progress.tick() => {
                            let (delivered, failed) = settled(&stats);
                            info!(message = "delivering", dispatched, delivered, failed, remaining = dispatched.saturating_sub(delivered + failed));
                        }
                        _ = tokio::time::sleep_until(sleep_until), if deadline.is_some() => {
                            task.abort();
                            let (delivered, failed) = settled(&stats);
                            return Ok(dispatched.saturating_sub(delivered + failed));
                        }
                    }
                }
            }
        }
    }
}

/// Sends the records of `shards` (every record with `None`) waiting for their `notBefore` now,
/// before their cursors are written: at most `grace`. Logged when there were any.
pub(super) async fn flush_delayed(
    delay: Option<&DelayQueue>,
    shards: Option<Vec<u32>>,
    grace: Duration,
) {
    let Some(delay) = delay else { return };
    let what = shards.clone();
    match tokio::time::timeout(grace, delay.flush(shards)).await {
        Ok(0) => {}
        Ok(sent) => {
            info!(message = "records waiting for their jitter offset sent early (they carry notBefore; workers wait for it)", sent, shards = ?what)
        }
        Err(_) => {
            warn!(message = "records waiting for their jitter offset could not all be handed to the producers within --shutdown-grace", shards = ?what)
        }
    }
}

/// Ticks until `shutdown`; a tick cut by the signal still finishes its minute, within `grace`.
/// Returns false when the loop must stop (the sink is gone or the grace ran out mid-minute).
///
/// While the tick waits for room in a full queue (backpressure from a slow or unreachable
/// broker), `beat` beats every second: the loop is waiting, not stuck. A tick that never yields
/// (a hang in the loop's own code) leaves it silent, and `/healthz` reports the loop dead.
async fn tick_once(
    tick_loop: &mut TickLoop,
    shutdown: &CancellationToken,
    grace: Duration,
    beat: Option<&Beat>,
) -> bool {
    let mut tick = pin!(tick_loop.tick());
    let result = loop {
        tokio::select! {
            r = &mut tick => break Some(r),
            _ = shutdown.cancelled() => break tokio::time::timeout(grace, &mut tick).await.ok(),
            _ = tokio::time::sleep(Duration::from_secs(1)), if beat.is_some() => {
                if let Some(beat) = beat {
                    beat.beat();
                }
            }
        }
    };
    match result {
        Some(Ok(_)) => true,
        Some(Err(e)) => {
            error!(message = "stopping the tick loop", error = %e);
            false
        }
        None => {
            warn!(
                message =
                    "the minute in progress could not be queued whole within --shutdown-grace"
            );
            false
        }
    }
}
