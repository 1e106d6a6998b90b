//! `cronq run` as one service: where a dispatcher's lifecycle lives. `cli.rs` only configures it.
//!
//! ```text
//!  start ──► validate the schedule ──► connect ──► state topic (S shards) ──► join the group
//!    │
//!    ├─ Assigned(shards) ─► takeover: read each shard's cursor, compile the shard's jobs, catch up
//!    ├─ tick             ─► TickLoop::tick (every owned shard) ─► cursors due ─► watchdog (once a minute)
//!    ├─ Revoked(shards)  ─► handover: wait for acks (≤ --shutdown-grace), write cursors, release
//!    └─ SIGTERM          ─► no new minute; the minute in progress is sent whole; acks (≤ grace);
//!                           cursors; leave the group; undelivered counted in the log
//!  (handover and SIGTERM first send the records waiting for their jitter offset: see `delay`)
//! ```
//!
//! Outside a group (`--dry-run`, `--from/--until`) the loop runs one shard holding every job and
//! writes no cursor.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::control::{self, ControlFollower, Pauses};
use super::cursor::Lease;
use super::delay::DelayQueue;
use super::group::{self, GroupError, GroupEvent, Membership, MembershipConfig, StateTopic};
use super::observe::Observer;
use super::producer::{self, DeliveryStats, ProducerConfig, SlotLedger};
use super::tick_loop::{ScheduleSource, ShardRun, TickLoop};
use super::watchdog::MemberView;
use super::{dry_run, Dispatch, Scheduler};
use crate::clock::{until_next_wake, Clock, ManualClock, Minute};
use crate::obs::health::Beat;
use crate::schedule::{self, LoadError, LoadOptions, ShardFilter};
use crate::wire::cursor::Cursor;

/// Where dispatches go.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    /// JSON lines on stdout.
    DryRun {
        /// Topic shown for jobs without their own.
        default_topic: String,
    },
    /// Kafka, through the producer pool.
    Kafka(ProducerConfig),
}

/// The dispatcher group a live, producing `cronq run` joins.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// Consumer group of the dispatchers.
    pub group: String,
    /// The state topic (one partition per shard).
    pub state_topic: String,
    /// Shards of a state topic cronq creates.
    pub shards: u32,
    /// Replication factor of the state topic when created.
    pub replication_factor: i16,
    /// How long a silent member keeps its shards.
    pub session_timeout: Duration,
    /// This member's name in cursor records.
    pub owner: String,
}

/// Everything a live dispatcher needs.
#[derive(Clone)]
pub struct ServiceConfig {
    /// The schedule file.
    pub schedule: PathBuf,
    /// Zone and catch-up defaults of its jobs.
    pub load: LoadOptions,
    /// How often the loop wakes.
    pub tick: Duration,
    /// Bound on waiting for acks at handover and shutdown.
    pub shutdown_grace: Duration,
    /// Queue between the tick loop and the sink.
    pub queue_capacity: usize,
    /// Records of jobs with a `jitter` that may wait for their `notBefore` at once
    /// (`--delay-capacity`); see [`super::delay`].
    pub delay_capacity: usize,
    /// Where dispatches go.
    pub sink: SinkConfig,
    /// The group (`None` for a dry run).
    pub group: Option<GroupConfig>,
    /// Wall-clock source.
    pub clock: Arc<dyn Clock>,
    /// Metrics, probes and the status page of `--http` ([`Observer::disabled`]: `--http off`).
    pub observer: Arc<Observer>,
}

/// Errors that stop the dispatcher.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The schedule file cannot be used at start.
    #[error(transparent)]
    Schedule(#[from] LoadError),
    /// The group cannot be set up.
    #[error(transparent)]
    Group(#[from] GroupError),
    /// The group's control topic cannot be set up.
    #[error(transparent)]
    Control(#[from] control::ControlError),
    /// The dry-run printer failed (a closed pipe).
    #[error("writing dispatches to stdout: {0}")]
    Output(#[from] std::io::Error),
    /// A task of the dispatcher died.
    #[error("{what} ended unexpectedly: {reason}")]
    Task {
        /// Which task.
        what: &'static str,
        /// Why.
        reason: String,
    },
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

/// The delay queue in front of the producers (Kafka only: a dry run prints `notBefore` and does not
/// wait). Returns the producers' input.
fn start_delay(
    config: &ServiceConfig,
    rx: mpsc::Receiver<Dispatch>,
    observer: &Observer,
) -> (mpsc::Receiver<Dispatch>, Option<DelayQueue>) {
    match &config.sink {
        SinkConfig::Kafka(_) => {
            let (rx, queue) = DelayQueue::start(
                rx,
                config.queue_capacity.max(1),
                config.delay_capacity,
                Arc::clone(&config.clock),
                observer.delay_queue_gauge(),
            );
            (rx, Some(queue))
        }
        SinkConfig::DryRun { .. } => (rx, None),
    }
}

/// Sends the records of `shards` (every record with `None`) waiting for their `notBefore` now,
/// before their cursors are written: at most `grace`. Logged when there were any.
async fn flush_delayed(delay: Option<&DelayQueue>, shards: Option<Vec<u32>>, grace: Duration) {
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

fn ledger_for(
    sink: &SinkConfig,
    clock: &Arc<dyn Clock>,
    observer: &Arc<Observer>,
) -> Option<Arc<SlotLedger>> {
    matches!(sink, SinkConfig::Kafka(_))
        .then(|| Arc::new(SlotLedger::new(Arc::clone(clock)).with_observer(Arc::clone(observer))))
}

/// Dispatches handed to the producer pool and not settled (0 for a dry run).
fn backlog_of(sink: &SinkConfig) -> Option<Arc<std::sync::atomic::AtomicU64>> {
    match sink {
        SinkConfig::Kafka(p) => Some(Arc::clone(p.kafka.health().backlog())),
        SinkConfig::DryRun { .. } => None,
    }
}

/// After a tick: the observer's gauges, the next runs, and the heartbeat.
fn observe_tick(
    config: &ServiceConfig,
    tick_loop: &TickLoop,
    backlog: Option<&Arc<std::sync::atomic::AtomicU64>>,
    beat: Option<&Beat>,
) {
    if let Some(beat) = beat {
        beat.beat();
    }
    let undelivered = backlog.map_or(0, |b| b.load(std::sync::atomic::Ordering::Relaxed));
    config
        .observer
        .after_tick(&tick_loop.snapshot(), undelivered);
}

/// Replays the window `[from, until)` as fast as possible into the sink and waits for every
/// dispatch to settle. Never joins a group, writes no cursor.
pub async fn replay(
    schedule: schedule::Schedule,
    sink_config: SinkConfig,
    queue_capacity: usize,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Result<u64, ServiceError> {
    let (tx, rx) = mpsc::channel(queue_capacity.max(1));
    let observer = Observer::disabled();
    let ledger = ledger_for(
        &sink_config,
        &(Arc::new(crate::clock::SystemClock) as Arc<dyn Clock>),
        &observer,
    );
    let sink = Sink::start(&sink_config, rx, ledger.clone(), observer);
    // [from, until): the first slot is the first whole minute at or after `from`.
    let first = Minute::containing(from - chrono::Duration::nanoseconds(1)).next();
    let last = Minute::containing(until - chrono::Duration::nanoseconds(1));
    let clock = ManualClock::new(last.start().unwrap_or(until));
    let scheduler = Scheduler::new(schedule, Minute(first.0 - 1));
    info!(message = "replaying window", from = %first, until = %last, jobs = scheduler.scheduled());
    let mut tick_loop = TickLoop::new(Arc::new(clock), scheduler, None, tx).replaying();
    if let Some(l) = &ledger {
        tick_loop = tick_loop.with_ledger(Arc::clone(l));
    }
    let report = tick_loop.tick().await;
    let dispatched = tick_loop.total_dispatched();
    drop(tick_loop);
    if report.is_err() {
        let mut sink = sink;
        let e = sink.closed().await;
        error!(message = "replay stopped early", dispatched, error = %e);
        return Err(e);
    }
    info!(message = "window replayed", dispatched);
    sink.finish(dispatched, None).await?;
    Ok(dispatched)
}

/// Runs a live dispatcher until `shutdown` is cancelled.
pub async fn run(config: ServiceConfig, shutdown: CancellationToken) -> Result<(), ServiceError> {
    match config.group.clone() {
        None => run_alone(config, shutdown).await,
        Some(group) => run_in_group(config, group, shutdown).await,
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

async fn run_alone(config: ServiceConfig, shutdown: CancellationToken) -> Result<(), ServiceError> {
    let (schedule, digest) = schedule::load(&config.schedule, config.load.clone())?;
    let observer = config.observer.clone();
    observer.schedule_loaded(&config.schedule, &digest.to_string());
    let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
    let (rx, _delay) = start_delay(&config, rx, &observer);
    let ledger = ledger_for(&config.sink, &config.clock, &observer);
    let sink = Sink::start(&config.sink, rx, ledger.clone(), observer.clone());
    let backlog = backlog_of(&config.sink);
    let beat = observer.heartbeat(config.tick);
    let scheduler = Scheduler::new(schedule, Minute::containing(config.clock.now()));
    info!(message = "cronq dispatcher started", schedule = %config.schedule.display(), jobs = scheduler.scheduled(), md5 = %digest, group = "none (dry run)");
    let source = ScheduleSource::new(config.schedule.clone(), Some(digest), config.load.clone());
    let mut tick_loop = TickLoop::new(Arc::clone(&config.clock), scheduler, Some(source), tx);
    if let Some(l) = &ledger {
        tick_loop = tick_loop.with_ledger(Arc::clone(l));
    }
    tick_loop = tick_loop.with_observer(Arc::clone(&observer));
    observe_tick(&config, &tick_loop, backlog.as_ref(), beat.as_ref());
    let mut sink = sink;
    let mut died = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(until_next_wake(&*config.clock, config.tick)) => {}
            e = sink.ended() => {
                died = Some(e);
                break;
            }
        }
        if !tick_once(
            &mut tick_loop,
            &shutdown,
            config.shutdown_grace,
            beat.as_ref(),
        )
        .await
        {
            if !shutdown.is_cancelled() {
                died = Some(sink.closed().await);
            }
            break;
        }
        observe_tick(&config, &tick_loop, backlog.as_ref(), beat.as_ref());
    }
    observer.stopping();
    let dispatched = tick_loop.total_dispatched();
    drop(tick_loop);
    if let Some(e) = died {
        error!(message = "the dispatcher cannot go on; stopping", dispatched, error = %e);
        return Err(e);
    }
    let undelivered = sink.finish(dispatched, Some(config.shutdown_grace)).await?;
    info!(message = "dispatcher stopped", dispatched, undelivered);
    Ok(())
}

/// MD5 of the schedule in force, as cursor records carry it.
fn schedule_md5(tick_loop: &mut TickLoop) -> String {
    tick_loop
        .source_mut()
        .and_then(|s| s.digest())
        .map(|d| d.to_string())
        .unwrap_or_default()
}

/// Hands memory freed by dropped shards back to the OS. glibc keeps freed heap pages otherwise,
/// and a member that briefly owned every shard (the first one up) would keep the single
/// dispatcher's footprint after the group spread the shards out.
#[allow(unsafe_code)]
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A member of the dispatcher group: the shards it owns and what it knows of the others.
struct Member {
    config: GroupConfig,
    state: Arc<StateTopic>,
    shards: u32,
    clock: Arc<dyn Clock>,
    /// Grows by one at every assignment.
    generation: u64,
    /// The minute each owned shard's cursor record was last handed to the writer in.
    written: Arc<std::sync::Mutex<HashMap<u32, Minute>>>,
    /// Periodic cursor batches to the background writer.
    batches: mpsc::Sender<Vec<(Cursor, Arc<Lease>)>>,
    /// What the watchdog knows of this member.
    view: Arc<std::sync::Mutex<MemberView>>,
    /// Leases of shards lost with the session: their unacked dispatches count as undelivered.
    dropped: Vec<Arc<Lease>>,
    /// Shards handed back cleanly, kept compiled (with the MD5 of their schedule) in case the
    /// rebalance gives them back.
    parked: BTreeMap<u32, (ShardRun, String)>,
    /// The last reason assigned shards could not start, logged once.
    waiting_error: Option<String>,
    /// Shards assigned whose jobs could not be loaded yet (the file is rejected right now).
    waiting: Vec<(u32, Option<Cursor>)>,
    grace: Duration,
    /// The `--http` metrics and page.
    observer: Arc<Observer>,
    /// The tick loop's heartbeat, beaten while a takeover waits for the broker too.
    beat: Option<Beat>,
    /// The group's control topic (pauses), read up to date before each takeover.
    control: ControlFollower,
}

impl Member {
    fn cursor(&self, shard: u32, minute: Minute, md5: &str) -> Cursor {
        Cursor {
            shard,
            minute,
            written_at: self.clock.now(),
            owner: self.config.owner.clone(),
            generation: self.generation,
            schedule_md5: md5.to_string(),
        }
    }

    /// Waits until the leases have nothing outstanding, at most the grace.
    async fn settle(&self, leases: &[Arc<Lease>]) {
        let deadline = tokio::time::Instant::now() + self.grace;
        while leases.iter().any(|l| l.outstanding() > 0) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Writes each released shard's final cursor; returns the undelivered dispatches.
    async fn release(&mut self, runs: &[(u32, &ShardRun)], md5: &str, why: &str) -> u64 {
        let leases: Vec<Arc<Lease>> = runs.iter().filter_map(|(_, r)| r.lease.clone()).collect();
        for lease in &leases {
            lease.close();
        }
        self.settle(&leases).await;
        let cursors: Vec<Cursor> = leases
            .iter()
            .map(|l| self.cursor(l.shard(), l.cursor(), md5))
            .collect();
        let undelivered: u64 = leases.iter().map(|l| l.outstanding()).sum();
        for (shard, e) in self.state.write(&cursors).await {
            error!(message = "cannot write a released shard's cursor; its next owner re-sends from the previous one", shard, error = %e);
        }
        for (shard, _) in runs {
            self.forget_written(*shard);
        }
        let shards: Vec<u32> = runs.iter().map(|(s, _)| *s).collect();
        let cursor_of = cursors
            .iter()
            .map(|c| format!("{}:{}", c.shard, c.minute))
            .collect::<Vec<_>>()
            .join(" ");
        if undelivered > 0 {
            warn!(message = "shards released with dispatches not acked; the next owner re-sends them from the cursor", why, shards = ?shards, cursors = %cursor_of, undelivered);
        } else {
            info!(message = "shards released", why, shards = ?shards, cursors = %cursor_of);
        }
        undelivered
    }

    /// Takes over `assigned`: reads each new shard's cursor, compiles its jobs, and lets the tick
    /// loop catch it up from there.
    async fn take_over(
        &mut self,
        tick_loop: &mut TickLoop,
        assigned: Vec<u32>,
        shutdown: &CancellationToken,
    ) {
        self.generation += 1;
        // The pauses as of now, before any new shard's first minute: a pause written by an
        // operator just before the takeover holds on the new owner too.
        let control = self.control.clone();
        let synced = control.synced();
        tokio::pin!(synced);
        let mut warned = false;
        loop {
            tokio::select! {
                synced = &mut synced => {
                    if !synced {
                        error!(message = "the control topic follower is gone; taking over with the pauses known so far");
                    }
                    break;
                }
                _ = tokio::time::sleep(Duration::from_secs(1)) => {
                    if let Some(beat) = &self.beat {
                        // Waiting for the broker, not stuck.
                        beat.beat();
                    }
                    if !warned {
                        warn!(message = "waiting for the control topic (pauses) before taking shards over");
                        warned = true;
                    }
                }
                _ = shutdown.cancelled() => return,
            }
        }
        tick_loop.sync_pauses();
        let owned: Vec<u32> = tick_loop.shards().keys().copied().collect();
        for shard in owned.iter().filter(|s| !assigned.contains(s)) {
            tick_loop.remove_shard(*shard);
            self.forget_written(*shard);
        }
        let new: Vec<u32> = assigned
            .iter()
            .copied()
            .filter(|s| !owned.contains(s))
            .collect();
        let mut cursors = Vec::with_capacity(new.len());
        for &shard in &new {
            let Some(cursor) = self.read_cursor(shard, shutdown).await else {
                // Stopping: the new shards are not started, so their cursors stay as they are.
                return;
            };
            cursors.push((shard, cursor));
        }
        let mut parked = std::mem::take(&mut self.parked);
        let md5 = schedule_md5(tick_loop);
        // When this member gives shards up for good (another member joined), its kept shards are
        // compiled again from the file too: their jobs sit interleaved with the freed ones on the
        // heap, and only a fresh load lets the memory of the given-up shards go back to the OS.
        let shrinking = parked.keys().any(|s| !assigned.contains(s));
        if shrinking {
            parked.clear();
            return_freed_memory();
        }
        let mut fresh = Vec::new();
        for (shard, cursor) in cursors {
            // Handed back and given back with nothing in between (same schedule, our cursor, every
            // dispatch acked): keep the compiled shard.
            let reusable = parked
                .remove(&shard)
                .filter(|(_, parked_md5)| *parked_md5 == md5);
            let reusable = reusable.map(|(run, _)| run).filter(|run| {
                run.lease.as_ref().is_some_and(|l| {
                    l.outstanding() == 0
                        && cursor
                            .as_ref()
                            .is_some_and(|c| c.owner == self.config.owner && c.minute == l.cursor())
                })
            });
            match reusable {
                Some(mut run) => {
                    let at = run.scheduler.processed();
                    run.lease = Some(Lease::new(shard, at));
                    tick_loop.insert_shard(shard, run);
                }
                None => fresh.push((shard, cursor)),
            }
        }
        self.waiting = fresh;
        self.start_waiting(tick_loop).await;
        let owned: Vec<u32> = tick_loop.shards().keys().copied().collect();
        if let Some(source) = tick_loop.source_mut() {
            source.set_shards(ShardFilter::only(self.shards, owned.iter().copied()));
        }
        self.observer.assigned(&owned, self.shards);
        info!(message = "shards assigned", generation = self.generation, shards = ?assigned, new = ?new);
    }

    /// Compiles and starts the assigned shards still waiting for their jobs.
    async fn start_waiting(&mut self, tick_loop: &mut TickLoop) {
        if self.waiting.is_empty() {
            return;
        }
        let Some(source) = tick_loop.source_mut() else {
            return;
        };
        let path = source.path().to_path_buf();
        let mut options = source.options().clone();
        let shards: Vec<u32> = self.waiting.iter().map(|(s, _)| *s).collect();
        options.shards = ShardFilter::only(self.shards, shards.iter().copied());
        let started = std::time::Instant::now();
        let loaded = tokio::task::spawn_blocking(move || schedule::load(&path, options)).await;
        let problem = match loaded {
            Ok(Ok((schedule, _))) => Ok(schedule),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let schedule = match problem {
            Ok(schedule) => {
                self.waiting_error = None;
                schedule
            }
            Err(reason) => {
                // Once per distinct problem, not once per tick.
                if self.waiting_error.as_deref() != Some(reason.as_str()) {
                    error!(message = "cannot start the assigned shards: the schedule file does not load; retrying every tick until it does", shards = ?shards, error = %reason);
                    self.waiting_error = Some(reason);
                }
                return;
            }
        };
        let now = Minute::containing(self.clock.now());
        let waiting = std::mem::take(&mut self.waiting);
        let mut parts = schedule.into_shards(shards.iter().copied());
        for (shard, cursor) in waiting {
            let part = parts.remove(&shard).unwrap_or_default();
            // A shard that never had a cursor starts at the next minute.
            let start = cursor.as_ref().map_or(now, |c| c.minute.min(now));
            let behind = now.0 - start.0;
            let scheduler = Scheduler::new(part, start);
            self.observer.took_over();
            info!(
                message = "taking over a shard",
                shard,
                jobs = scheduler.scheduled(),
                cursor = %start,
                behind_minutes = behind,
                previous_owner = cursor.as_ref().map_or("", |c| c.owner.as_str()),
                took_ms = started.elapsed().as_millis() as u64,
            );
            tick_loop.insert_shard(
                shard,
                ShardRun {
                    scheduler,
                    lease: Some(Lease::new(shard, start)),
                },
            );
        }
    }

    /// A shard's last cursor (`Some(None)`: the shard never had one), retrying while the broker
    /// cannot be read: starting without it could skip slots. `None` when `shutdown` came first.
    async fn read_cursor(
        &self,
        shard: u32,
        shutdown: &CancellationToken,
    ) -> Option<Option<Cursor>> {
        let mut backoff = crate::kafka::Backoff::new(Duration::from_millis(100));
        let failed = |e: &GroupError, _, delay: Duration| {
            if let Some(beat) = &self.beat {
                // Waiting for the broker, not stuck.
                beat.beat();
            }
            warn!(message = "cannot read a shard's cursor; retrying", shard, error = %e, retry_in_ms = delay.as_millis() as u64);
        };
        // A state topic read fails only transiently (GroupError's Classify): only `shutdown` ends
        // this without a cursor.
        crate::kafka::retry_cancellable(&mut backoff, shutdown, || self.state.last(shard), failed)
            .await
            .ok()
    }

    fn forget_written(&self, shard: u32) {
        self.written
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&shard);
    }

    /// Once a minute per shard: the cursor as soon as the minute is acked, or at second 30 with
    /// the cursor where it is (the liveness report). Handed to the background writer; skipped
    /// while a batch is still in flight.
    fn write_cursors(&mut self, tick_loop: &TickLoop, md5: &str) {
        let now = self.clock.now();
        let minute = Minute::containing(now);
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        let batch: Vec<(Cursor, Arc<Lease>)> = tick_loop
            .shards()
            .iter()
            .filter(|(shard, _)| written.get(shard) != Some(&minute))
            .filter_map(|(shard, run)| {
                let lease = run.lease.as_ref()?;
                let cursor = lease.cursor();
                (cursor >= run.scheduler.processed() || now.second() >= 30)
                    .then(|| (self.cursor(*shard, cursor, md5), Arc::clone(lease)))
            })
            .collect();
        if batch.is_empty() {
            return;
        }
        let shards: Vec<u32> = batch.iter().map(|(c, _)| c.shard).collect();
        if self.batches.try_send(batch).is_ok() {
            for shard in shards {
                written.insert(shard, minute);
            }
        }
    }

    /// Tells the watchdog what this member owns and runs.
    fn publish(&self, tick_loop: &TickLoop, md5: &str) {
        let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        view.owned = tick_loop.shards().keys().copied().collect();
        if view.md5 != md5 {
            view.md5 = md5.to_string();
        }
    }
}

async fn run_in_group(
    config: ServiceConfig,
    group: GroupConfig,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    // Validate the whole file now (a bad file at start is an error); keep no job yet.
    let mut options = config.load.clone();
    options.shards = ShardFilter::only(1, []);
    let (_, digest) = schedule::load(&config.schedule, options)?;
    let SinkConfig::Kafka(producer_config) = &config.sink else {
        return run_alone(config, shutdown).await;
    };
    let observer = config.observer.clone();
    observer.schedule_loaded(&config.schedule, &digest.to_string());
    // Connecting retries for as long as the broker is away: a signal meanwhile stops the process.
    let start = async {
        let client = Arc::new(
            producer_config
                .kafka
                .connect(producer_config.retry_backoff)
                .await,
        );
        let shards = group::ensure_state_topic(
            &client,
            &producer_config.kafka,
            &group.state_topic,
            group.shards,
            group.replication_factor,
        )
        .await?;
        // Pauses are followed from before the first takeover: a paused job's slot is never sent
        // because this member did not know of its pause yet.
        let control_topic = control::control_topic(&group.group);
        control::ensure_control_topic(
            &client,
            &producer_config.kafka,
            &control_topic,
            Some(group.replication_factor),
            producer_config.retry_backoff,
        )
        .await?;
        let (follower, follower_task) = ControlFollower::start(Arc::clone(&client), control_topic);
        follower.synced().await;
        Ok::<_, ServiceError>((client, shards, follower, follower_task))
    };
    let (client, shards, follower, mut follower_task) = tokio::select! {
        started = start => started?,
        _ = shutdown.cancelled() => {
            info!(message = "stopped before the dispatcher started: Kafka was not reached");
            return Ok(());
        }
    };
    let state = Arc::new(
        StateTopic::new(client, group.state_topic.clone(), shards)
            .with_health(Arc::clone(producer_config.kafka.health())),
    );
    // Only an observer that is on shows the broker's reachability: otherwise nothing to update.
    let kafka_watch = observer.is_on().then(|| {
        tokio::spawn(watch_kafka(
            Arc::clone(&observer),
            Arc::clone(producer_config.kafka.health()),
            producer_config.kafka.brokers_text(),
        ))
    });
    let beat = observer.heartbeat(config.tick);
    let backlog = backlog_of(&config.sink);
    let mut load = config.load.clone();
    load.shards = ShardFilter::only(shards, []);
    let source = ScheduleSource::new(config.schedule.clone(), Some(digest), load);

    let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
    let (rx, delay) = start_delay(&config, rx, &observer);
    let ledger = ledger_for(&config.sink, &config.clock, &observer);
    let sink = Sink::start(&config.sink, rx, ledger.clone(), observer.clone());
    let mut tick_loop = TickLoop::without_shards(Arc::clone(&config.clock), Some(source), tx);
    if let Some(l) = &ledger {
        tick_loop = tick_loop.with_ledger(Arc::clone(l));
    }
    tick_loop = tick_loop.with_observer(Arc::clone(&observer));
    let mut tick_loop = tick_loop.with_pauses(Pauses::new(follower.clone()));
    tick_loop.sync_pauses();
    let (events_tx, mut events) = mpsc::channel(16);
    let membership = Membership::start(
        MembershipConfig {
            kafka: producer_config.kafka.clone(),
            group: group.group.clone(),
            state_topic: group.state_topic.clone(),
            session_timeout: group.session_timeout,
            handover_timeout: config.shutdown_grace + Duration::from_secs(5),
        },
        events_tx,
    )?;
    info!(message = "cronq dispatcher started", schedule = %config.schedule.display(), md5 = %digest, group = %group.group, state_topic = %group.state_topic, shards, member = %group.owner);
    let written = Arc::new(std::sync::Mutex::new(HashMap::new()));
    let (batches, batches_rx) = mpsc::channel(1);
    let mut writer = tokio::spawn(group::write_cursors(
        Arc::clone(&state),
        batches_rx,
        Arc::clone(&written),
    ));
    let view = Arc::new(std::sync::Mutex::new(MemberView::default()));
    let watchdog_stop = CancellationToken::new();
    let mut watchdog = tokio::spawn(
        super::watchdog::Watchdog {
            state: Arc::clone(&state),
            shards,
            owner: group.owner.clone(),
            clock: Arc::clone(&config.clock),
            view: Arc::clone(&view),
            rejoiner: membership.rejoiner(),
            poll: config.tick,
            observer: observer.clone(),
        }
        .run(watchdog_stop.clone()),
    );
    let mut member = Member {
        config: group,
        state,
        shards,
        clock: Arc::clone(&config.clock),
        generation: 0,
        written,
        batches,
        view,
        parked: BTreeMap::new(),
        waiting_error: None,
        waiting: Vec::new(),
        dropped: Vec::new(),
        grace: config.shutdown_grace,
        observer: observer.clone(),
        beat: beat.clone(),
        control: follower,
    };
    let mut sink = sink;
    let mut died: Option<ServiceError> = None;
    loop {
        enum Next {
            Tick,
            Event(GroupEvent),
            Stop,
            Died(ServiceError),
        }
        let next = tokio::select! {
            biased;
            _ = shutdown.cancelled() => Next::Stop,
            event = events.recv() => event.map_or_else(|| Next::Died(ServiceError::Task {
                what: "the group membership",
                reason: "its thread ended".into(),
            }), Next::Event),
            _ = tokio::time::sleep(until_next_wake(&*config.clock, config.tick)) => Next::Tick,
            e = sink.ended() => Next::Died(e),
        };
        match next {
            Next::Stop => break,
            Next::Died(e) => {
                died = Some(e);
                break;
            }
            Next::Event(GroupEvent::Assigned(shards)) => {
                member.take_over(&mut tick_loop, shards, &shutdown).await;
            }
            Next::Event(GroupEvent::Revoked { shards, lost, done }) => {
                let runs: Vec<(u32, ShardRun)> = shards
                    .iter()
                    .filter_map(|s| tick_loop.remove_shard(*s).map(|r| (*s, r)))
                    .collect();
                if lost {
                    observer.session_lost();
                    let mut unacked = 0;
                    for (s, run) in &runs {
                        if let Some(lease) = &run.lease {
                            lease.close();
                            unacked += lease.outstanding();
                            member.dropped.push(Arc::clone(lease));
                        }
                        member.forget_written(*s);
                    }
                    warn!(message = "the group session expired: these shards may have another owner already; stopped dispatching them (dispatches not acked yet are re-sent by the next owner from the cursor)", shards = ?shards, unacked);
                    drop(runs);
                    return_freed_memory();
                } else {
                    let md5 = schedule_md5(&mut tick_loop);
                    let refs: Vec<(u32, &ShardRun)> = runs.iter().map(|(s, r)| (*s, r)).collect();
                    flush_delayed(delay.as_ref(), Some(shards.clone()), config.shutdown_grace)
                        .await;
                    member.release(&refs, &md5, "rebalance").await;
                    member
                        .parked
                        .extend(runs.into_iter().map(|(s, run)| (s, (run, md5.clone()))));
                }
                member.waiting.retain(|(s, _)| !shards.contains(s));
                let _ = done.send(());
            }
            Next::Tick => {
                member.start_waiting(&mut tick_loop).await;
                if !tick_once(
                    &mut tick_loop,
                    &shutdown,
                    config.shutdown_grace,
                    beat.as_ref(),
                )
                .await
                {
                    if !shutdown.is_cancelled() {
                        died = Some(sink.closed().await);
                    }
                    break;
                }
                observe_tick(&config, &tick_loop, backlog.as_ref(), beat.as_ref());
                let md5 = schedule_md5(&mut tick_loop);
                member.write_cursors(&tick_loop, &md5);
                member.publish(&tick_loop, &md5);
                if writer.is_finished() {
                    died = Some(task_end("the cursor writer", &mut writer).await);
                    break;
                }
                if watchdog.is_finished() {
                    died = Some(task_end("the orphan watchdog", &mut watchdog).await);
                    break;
                }
                if follower_task.is_finished() {
                    died = Some(task_end("the control topic follower", &mut follower_task).await);
                    break;
                }
            }
        }
    }

    observer.stopping();
    if let Some(watch) = kafka_watch {
        watch.abort();
    }
    follower_task.abort();
    info!(message = "shutting down", grace = %humantime::format_duration(config.shutdown_grace));
    let md5 = schedule_md5(&mut tick_loop);
    let owned: Vec<u32> = tick_loop.shards().keys().copied().collect();
    let runs: Vec<(u32, ShardRun)> = owned
        .iter()
        .filter_map(|s| tick_loop.remove_shard(*s).map(|r| (*s, r)))
        .collect();
    let refs: Vec<(u32, &ShardRun)> = runs.iter().map(|(s, r)| (*s, r)).collect();
    flush_delayed(delay.as_ref(), None, config.shutdown_grace).await;
    let undelivered = member.release(&refs, &md5, "shutdown").await
        + member.dropped.iter().map(|l| l.outstanding()).sum::<u64>();
    watchdog_stop.cancel();
    // Nothing is owned any more: the revoke that leaving triggers must not wait for an answer.
    drop(events);
    membership.leave();
    let dispatched = tick_loop.total_dispatched();
    drop(tick_loop);
    if let Some(e) = died {
        error!(message = "the dispatcher cannot go on; stopped after writing the cursors of its shards", dispatched, undelivered, error = %e);
        return Err(e);
    }
    sink.finish(dispatched, Some(Duration::from_millis(200)))
        .await?;
    if undelivered > 0 {
        warn!(message = "dispatcher stopped; dispatches left undelivered will be re-sent by the next owner from the cursor", dispatched, undelivered);
    } else {
        info!(
            message = "dispatcher stopped; every dispatch was acked",
            dispatched
        );
    }
    Ok(())
}

/// Keeps the readiness check `kafka` in step with the connection's reachability, once a second
/// (off the tick loop: a loop waiting for a full queue must not leave it stale).
async fn watch_kafka(observer: Arc<Observer>, health: Arc<crate::kafka::Health>, brokers: String) {
    observer.kafka_reachable(true, format!("reached {brokers}"));
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut down = false;
    loop {
        every.tick().await;
        let now_down = health.is_down();
        if now_down != down {
            down = now_down;
            if down {
                observer.kafka_reachable(
                    false,
                    format!("cannot reach Kafka at {brokers}; dispatches wait and are retried"),
                );
            } else {
                observer.kafka_reachable(true, format!("reached {brokers}"));
            }
        }
    }
}

/// Why a background task that must run for the life of the process ended.
async fn task_end<T>(what: &'static str, task: &mut JoinHandle<T>) -> ServiceError {
    ServiceError::Task {
        what,
        reason: match task.await {
            Ok(_) => "it stopped".into(),
            Err(e) => e.to_string(),
        },
    }
}
