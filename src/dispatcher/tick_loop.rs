//! The one loop: every `--tick`, check the schedule file's fingerprint (reload on change), then, when
//! the wall-clock minute has moved on, process each new minute in order and send its due jobs to the
//! sink.
//!
//! ```text
//!  clock ──► minute M ──► for each minute P+1 ..= M:  wheel.advance ──► due jobs ──► sink (bounded; waits when full)
//!  schedule file ──► FileWatch (MD5) ──► load + validate ──► Scheduler::apply (diff by jobName)
//! ```
//!
//! Missed minutes (a stalled process, a suspended machine, a clock jump) are processed in order, each
//! job with its own slot time, up to `max_catchup`; older slots are skipped and counted in a warning.
//! A clock that goes backwards never re-fires a processed minute: the loop waits for it to catch up.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::producer::SlotLedger;
use super::scheduler::{Dispatch, Scheduler};
use crate::clock::{Clock, Minute};
use crate::schedule::fingerprint::{Change, Digest, FileWatch};
use crate::schedule::{parse, LoadError, LoadOptions};

/// Where due jobs go: a bounded channel, so a slow consumer backpressures the loop.
pub type DispatchSink = mpsc::Sender<Dispatch>;

/// The sink's consumer went away: nothing more can be dispatched.
#[derive(Debug, thiserror::Error)]
#[error("the dispatch sink is closed")]
pub struct SinkClosed;

/// The schedule file as the loop watches it.
#[derive(Debug)]
pub struct ScheduleSource {
    watch: FileWatch,
    options: LoadOptions,
    vanished: bool,
}

impl ScheduleSource {
    /// Watches `path`, whose current valid version (already loaded) has digest `digest`.
    pub fn new(path: PathBuf, digest: Option<Digest>, options: LoadOptions) -> ScheduleSource {
        ScheduleSource {
            watch: FileWatch::new(&path, digest),
            options,
            vanished: false,
        }
    }
}

/// What one tick did (for tests and logs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// Minutes processed this tick.
    pub minutes: u64,
    /// Jobs sent to the sink.
    pub dispatched: u64,
    /// Job slots skipped because they were older than `max_catchup`.
    pub skipped: u64,
    /// The schedule was reloaded.
    pub reloaded: bool,
    /// A changed schedule file was rejected.
    pub rejected: bool,
}

/// The tick loop's state.
pub struct TickLoop {
    clock: Arc<dyn Clock>,
    scheduler: Scheduler,
    source: Option<ScheduleSource>,
    sink: DispatchSink,
    max_catchup: i64,
    clock_behind: bool,
    buf: Vec<Dispatch>,
    ledger: Option<Arc<SlotLedger>>,
    total_dispatched: u64,
}

/// A job slot skip is counted one by one up to this many per job per skip.
const SKIP_COUNT_CAP: u64 = 10_000;

impl TickLoop {
    /// A loop over `scheduler`, reading time from `clock`, sending due jobs to `sink`. With a
    /// `source`, the schedule file is checked on every tick.
    pub fn new(
        clock: Arc<dyn Clock>,
        scheduler: Scheduler,
        source: Option<ScheduleSource>,
        sink: DispatchSink,
        max_catchup: Duration,
    ) -> TickLoop {
        TickLoop {
            clock,
            scheduler,
            source,
            sink,
            max_catchup: i64::try_from(max_catchup.as_secs() / 60).unwrap_or(i64::MAX),
            clock_behind: false,
            buf: Vec::new(),
            ledger: None,
            total_dispatched: 0,
        }
    }

    /// Reports each minute's job count to `ledger` (which logs one line per settled minute).
    pub fn with_ledger(mut self, ledger: Arc<SlotLedger>) -> TickLoop {
        self.ledger = Some(ledger);
        self
    }

    /// Jobs sent to the sink since the loop started.
    pub fn total_dispatched(&self) -> u64 {
        self.total_dispatched
    }

    /// The scheduler (for inspection).
    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    /// One tick: reload check, then every minute up to the clock's.
    pub async fn tick(&mut self) -> Result<TickReport, SinkClosed> {
        let mut report = TickReport::default();
        self.check_reload(&mut report).await;

        let now = Minute::containing(self.clock.now());
        let processed = self.scheduler.processed();
        if now < processed {
            if !self.clock_behind {
                warn!(
                    message = "the clock went backwards; waiting for it to pass the last processed minute",
                    now = %now,
                    processed = %processed,
                );
                self.clock_behind = true;
            }
            return Ok(report);
        }
        self.clock_behind = false;

        let oldest_allowed = Minute(now.0.saturating_sub(self.max_catchup));
        if oldest_allowed > processed.next() {
            let until = Minute(oldest_allowed.0 - 1);
            let skipped = self.scheduler.skip_until(until, SKIP_COUNT_CAP);
            report.skipped = skipped;
            warn!(
                message = "missed minutes older than --max-catchup were skipped",
                from = %processed.next(),
                until = %until,
                minutes = until.0 - processed.0,
                skipped_dispatches = skipped,
            );
        }

        while self.scheduler.processed() < now {
            let minute = self.scheduler.processed().next();
            self.buf.clear();
            self.scheduler.run_minute(minute, &mut self.buf);
            report.minutes += 1;
            let due = self.buf.len() as u64;
            if due > 0 {
                debug!(message = "minute due", slot = %minute, jobs = due);
            }
            // Reserve queue slots a chunk at a time rather than one send (one semaphore
            // acquisition and one await) per job; a full queue still makes the loop wait.
            let chunk = (self.sink.max_capacity() / 4).max(1);
            let mut dispatches = self.buf.drain(..);
            loop {
                let want = dispatches.len().min(chunk);
                if want == 0 {
                    break;
                }
                let permits = self.sink.reserve_many(want).await.map_err(|_| SinkClosed)?;
                for (permit, dispatch) in permits.zip(dispatches.by_ref()) {
                    permit.send(dispatch);
                }
                report.dispatched += want as u64;
                self.total_dispatched += want as u64;
            }
            if let Some(ledger) = &self.ledger {
                ledger.expect(minute, due);
            }
        }
        Ok(report)
    }

    async fn check_reload(&mut self, report: &mut TickReport) {
        let Some(source) = self.source.as_mut() else {
            return;
        };
        match source.watch.check() {
            Change::Unchanged => {
                source.vanished = false;
            }
            Change::Unreadable(e) => {
                if !source.vanished {
                    warn!(
                        message = "schedule file is unreadable; keeping the current schedule until it is back",
                        file = %source.watch.path().display(),
                        error = %e,
                    );
                    source.vanished = true;
                }
            }
            Change::Changed { bytes, digest } => {
                source.vanished = false;
                let path = source.watch.path().to_path_buf();
                let started = std::time::Instant::now();
                // Parsing a large file takes seconds of CPU (2 s for a million jobs): on the
                // blocking pool, not on a runtime thread the producers share. The loop itself
                // waits for it; minutes that pass meanwhile are caught up after.
                let parsed = {
                    let path = path.clone();
                    let options = source.options;
                    tokio::task::spawn_blocking(move || parse(&bytes, &path, options)).await
                };
                let parsed = match parsed {
                    Ok(parsed) => parsed,
                    Err(e) => {
                        report.rejected = true;
                        error!(message = "reading the schedule failed; keeping the current schedule", file = %path.display(), error = %e);
                        return;
                    }
                };
                match parsed {
                    Ok(schedule) => {
                        let jobs = schedule.jobs.len();
                        let diff = self.scheduler.apply(schedule);
                        report.reloaded = true;
                        info!(
                            message = "schedule reloaded",
                            file = %path.display(),
                            md5 = %digest,
                            jobs,
                            added = diff.added.len(),
                            rescheduled = diff.rescheduled.len(),
                            updated = diff.updated.len(),
                            removed = diff.removed.len(),
                            took_ms = started.elapsed().as_millis() as u64,
                        );
                    }
                    Err(LoadError::Invalid { problems, .. }) => {
                        report.rejected = true;
                        for p in &problems {
                            error!(message = "schedule problem", problem = %p);
                        }
                        error!(
                            message = "schedule file rejected; keeping the last good schedule until the file changes again",
                            file = %path.display(),
                            md5 = %digest,
                            problems = problems.len(),
                        );
                    }
                    Err(e) => {
                        report.rejected = true;
                        error!(message = "schedule file rejected", error = %e);
                    }
                }
            }
        }
    }

    /// Ticks every `tick` until `shutdown` is cancelled or the sink closes. Dropping the loop drops
    /// its sender, which lets the sink's consumer drain and finish.
    pub async fn run(mut self, tick: Duration, shutdown: CancellationToken) -> u64 {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = interval.tick() => {}
            }
            let result = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.tick() => r,
            };
            if let Err(e) = result {
                error!(message = "stopping the tick loop", error = %e);
                break;
            }
        }
        info!(
            message = "tick loop stopped",
            processed = %self.scheduler.processed(),
            dispatched = self.total_dispatched,
        );
        self.total_dispatched
    }
}
