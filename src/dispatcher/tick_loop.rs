//! The one loop: every `--tick`, check the schedule file's fingerprint (reload on change), then, when
//! the wall-clock minute has moved on, process each new minute in order and send its due jobs to the
//! sink.
//!
//! ```text
//!  clock ──► minute M ──► for each minute P+1 ..= M, over the owned shards:
//!               shard.scheduler.run_minute_at ──► due jobs (lease.expect) ──► sink (bounded; waits when full)
//!  schedule file ──► FileWatch (MD5) ──► load + validate + compile (the owned shards' jobs), on the
//!                     blocking pool ──► swapped in per shard at the next tick, between two minutes
//! ```
//!
//! Each owned shard has its own [`Scheduler`] and so its own processed minute: a shard just taken
//! over catches up from its cursor while the others run live, and a minute's batch is merged across
//! the shards that reach it, highest priority first. Outside a dispatcher group (dry runs, backfills,
//! the library's own tests) the loop has one shard, 0, holding every job.
//!
//! Minutes handed out late (a takeover from an old cursor, a stalled process, a clock jump) follow
//! each job's catch-up rule and window ([`super::catchup`]); the skips are summed in one warning per
//! tick. A clock that goes backwards never re-fires a processed minute: the loop waits for it.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{debug, error, info, warn};

use super::catchup::Skips;
use super::control::Pauses;
use super::cursor::{Lease, LeaseRef};
use super::observe::{Observer, ShardSnapshot, TickSnapshot};
use super::producer::SlotLedger;
use super::scheduler::{Dispatch, Rebuilt, Scheduler};
use crate::clock::{Clock, Minute};
use crate::schedule::fingerprint::{Change, Digest, FileWatch};
use crate::schedule::{parse_reusing, LoadError, LoadOptions, Schedule, ShardFilter};

/// Where due jobs go: a bounded channel, so a slow consumer backpressures the loop.
pub type DispatchSink = mpsc::Sender<Dispatch>;

/// The sink's consumer went away: nothing more can be dispatched.
#[derive(Debug, thiserror::Error)]
#[error("the dispatch sink is closed")]
pub struct SinkClosed;

/// The schedule file as the loop watches it.
///
/// A check runs off the loop, on the blocking pool: the file's fingerprint, and on a change the
/// parse, validation, diff and compilation of the owned shards (seconds at a million jobs). The loop
/// keeps dispatching on the schedule in force meanwhile and swaps the result in between two
/// minutes, at the first tick after it is ready.
#[derive(Debug)]
pub struct ScheduleSource {
    path: PathBuf,
    /// `None` while a check has it.
    watch: Option<FileWatch>,
    check: Option<Check>,
    options: LoadOptions,
    vanished: bool,
    in_force: Option<Digest>,
}

/// A check of the file running on the blocking pool.
#[derive(Debug)]
struct Check {
    task: tokio::task::JoinHandle<Checked>,
    /// Each shard's schedule and processed minute when the check started: the new version is
    /// compiled against them, and only installed where they are still the ones running.
    base: BTreeMap<u32, (Arc<Schedule>, Minute)>,
}

#[derive(Debug)]
struct Checked {
    watch: FileWatch,
    outcome: Outcome,
}

#[derive(Debug)]
enum Outcome {
    Unchanged,
    Unreadable(std::io::Error),
    Rejected(Digest, LoadError),
    Built {
        digest: Digest,
        jobs: usize,
        took: Duration,
        shards: BTreeMap<u32, Rebuilt>,
    },
}

impl ScheduleSource {
    /// Watches `path`, whose current valid version (already loaded) has digest `digest`.
    pub fn new(path: PathBuf, digest: Option<Digest>, options: LoadOptions) -> ScheduleSource {
        ScheduleSource {
            watch: Some(FileWatch::new(&path, digest).with_max_bytes(options.max_file_bytes)),
            path,
            check: None,
            options,
            vanished: false,
            in_force: digest,
        }
    }

    /// MD5 of the schedule in force (the last version of the file that loaded).
    pub fn digest(&self) -> Option<Digest> {
        self.in_force
    }

    /// The file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The load options reloads use.
    pub fn options(&self) -> &LoadOptions {
        &self.options
    }

    /// Reloads keep only the jobs of `shards` from now on.
    pub fn set_shards(&mut self, shards: ShardFilter) {
        self.options.shards = shards;
    }

    /// A check is running.
    pub fn checking(&self) -> bool {
        self.check.is_some()
    }
}

/// Looks at the file; on a change, parses it and compiles each shard of `base` against it.
fn check_file(
    mut watch: FileWatch,
    options: LoadOptions,
    base: Vec<(u32, Arc<Schedule>, Minute)>,
) -> Checked {
    let started = Instant::now();
    let outcome = match watch.check() {
        Change::Unchanged => Outcome::Unchanged,
        Change::Unreadable(e) => Outcome::Unreadable(e),
        Change::Changed { bytes, digest } => {
            // Unchanged jobs keep their settings and compiled expression: the reload holds
            // little more than one copy of the schedule.
            let previous = base.iter().map(|(s, o, _)| (*s, Arc::clone(o))).collect();
            let parsed = parse_reusing(&bytes, watch.path(), options, previous);
            drop(bytes);
            match parsed {
                Err(e) => Outcome::Rejected(digest, e),
                Ok(schedule) => {
                    let jobs = schedule.jobs.len();
                    let mut parts = schedule.into_shards(base.iter().map(|(s, _, _)| *s));
                    let shards = base
                        .into_iter()
                        .map(|(shard, old, processed)| {
                            let part = parts.remove(&shard).unwrap_or_default();
                            (shard, Rebuilt::against(&old, part, processed))
                        })
                        .collect();
                    Outcome::Built {
                        digest,
                        jobs,
                        took: started.elapsed(),
                        shards,
                    }
                }
            }
        }
    };
    Checked { watch, outcome }
}

/// What one tick did (for tests and logs).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    /// Minutes processed this tick (a minute reached by several shards counts once).
    pub minutes: u64,
    /// Jobs sent to the sink.
    pub dispatched: u64,
    /// Missed job slots left out by their job's catch-up window or rule.
    pub skipped: u64,
    /// The schedule was reloaded.
    pub reloaded: bool,
    /// A changed schedule file was rejected.
    pub rejected: bool,
    /// Job slots held back because their job is paused.
    pub paused: u64,
    /// Paused slots sent when their pause ended (the jobs' catch-up rules).
    pub resumed: u64,
}

/// One owned shard: the scheduler of its jobs and, in a group, the lease its dispatches count on.
#[derive(Debug)]
pub struct ShardRun {
    /// The shard's jobs in their wheel.
    pub scheduler: Scheduler,
    /// Counts the shard's dispatches until acked; `None` outside a group.
    pub lease: Option<Arc<Lease>>,
}

/// The tick loop's state.
pub struct TickLoop {
    clock: Arc<dyn Clock>,
    shards: BTreeMap<u32, ShardRun>,
    source: Option<ScheduleSource>,
    sink: DispatchSink,
    clock_behind: bool,
    buf: Vec<Dispatch>,
    ledger: Option<Arc<SlotLedger>>,
    total_dispatched: u64,
    replaying: bool,
    observer: Arc<Observer>,
    pauses: Option<Pauses>,
}

/// A job slot skip is counted one by one up to this many per job per skip.
const SKIP_COUNT_CAP: u64 = 10_000;

/// How many jobs the skip warning names.
const SKIP_NAMES_LOGGED: usize = 10;

impl TickLoop {
    /// A loop over one shard holding every job of `scheduler`, reading time from `clock`, sending
    /// due jobs to `sink`. With a `source`, the schedule file is checked on every tick.
    pub fn new(
        clock: Arc<dyn Clock>,
        scheduler: Scheduler,
        source: Option<ScheduleSource>,
        sink: DispatchSink,
    ) -> TickLoop {
        let mut tick_loop = TickLoop::without_shards(clock, source, sink);
        tick_loop.shards.insert(
            0,
            ShardRun {
                scheduler,
                lease: None,
            },
        );
        tick_loop
    }

    /// A loop that owns no shard yet: a group member before its first assignment.
    pub fn without_shards(
        clock: Arc<dyn Clock>,
        source: Option<ScheduleSource>,
        sink: DispatchSink,
    ) -> TickLoop {
        TickLoop {
            clock,
            shards: BTreeMap::new(),
            source,
            sink,
            clock_behind: false,
            buf: Vec::new(),
            ledger: None,
            total_dispatched: 0,
            replaying: false,
            observer: Observer::disabled(),
            pauses: None,
        }
    }

    /// A replay (`--from/--until`): every slot up to the clock is sent, none counts as missed.
    pub fn replaying(mut self) -> TickLoop {
        self.replaying = true;
        self
    }

    /// Reports each minute's job count to `ledger` (which logs one line per settled minute).
    pub fn with_ledger(mut self, ledger: Arc<SlotLedger>) -> TickLoop {
        self.ledger = Some(ledger);
        self
    }

    /// Reports minutes, skips and reloads to `observer` (the `--http` metrics and page).
    pub fn with_observer(mut self, observer: Arc<Observer>) -> TickLoop {
        self.observer = observer;
        self
    }

    /// Holds back the slots of paused jobs and sends their paused slots when a pause ends
    /// ([`super::control`]).
    pub fn with_pauses(mut self, pauses: Pauses) -> TickLoop {
        self.pauses = Some(pauses);
        self
    }

    /// The pauses in use, if the loop follows a control topic.
    pub fn pauses(&self) -> Option<&Pauses> {
        self.pauses.as_ref()
    }

    /// Takes the latest pauses now (before a takeover starts a shard, so the shard's first minute
    /// sees them); returns whether they changed.
    pub fn sync_pauses(&mut self) -> bool {
        let Some(pauses) = self.pauses.as_mut() else {
            return false;
        };
        let changed = pauses.refresh(
            self.shards
                .iter()
                .map(|(s, r)| (*s, r.scheduler.processed())),
        );
        if changed {
            self.observer.pauses_changed(pauses.table());
        }
        changed
    }

    /// Dispatches waiting in the queue to the sink.
    pub fn queue_depth(&self) -> usize {
        self.sink.max_capacity() - self.sink.capacity()
    }

    /// What the observer reads once a tick: the queue and every owned shard.
    pub fn snapshot(&self) -> TickSnapshot<'_> {
        TickSnapshot {
            queue_depth: self.queue_depth(),
            shards: self
                .shards
                .iter()
                .map(|(&shard, run)| ShardSnapshot {
                    shard,
                    scheduler: &run.scheduler,
                    lease: run.lease.as_ref().map(|l| (l.cursor(), l.outstanding())),
                })
                .collect(),
        }
    }

    /// Jobs sent to the sink since the loop started.
    pub fn total_dispatched(&self) -> u64 {
        self.total_dispatched
    }

    /// The scheduler of the lowest owned shard (the only one outside a group), for inspection.
    pub fn scheduler(&self) -> Option<&Scheduler> {
        self.shards.values().next().map(|run| &run.scheduler)
    }

    /// The owned shards.
    pub fn shards(&self) -> &BTreeMap<u32, ShardRun> {
        &self.shards
    }

    /// Starts running `shard`.
    pub fn insert_shard(&mut self, shard: u32, run: ShardRun) {
        self.shards.insert(shard, run);
    }

    /// A running shard, to change its jobs.
    pub fn shard_mut(&mut self, shard: u32) -> Option<&mut ShardRun> {
        self.shards.get_mut(&shard)
    }

    /// Stops running `shard` at once; returns its state.
    pub fn remove_shard(&mut self, shard: u32) -> Option<ShardRun> {
        self.shards.remove(&shard)
    }

    /// The watched schedule file.
    pub fn source_mut(&mut self) -> Option<&mut ScheduleSource> {
        self.source.as_mut()
    }

    /// Hands out at once the slots of `at` jobs that an edit (a schedule topic record) added
    /// after their minute's tick: waiting for the next tick would send them up to a minute after
    /// their second. Each job's catch-up rule decides, as for any missed slot. Returns how many
    /// were sent.
    pub async fn send_late(&mut self) -> Result<u64, SinkClosed> {
        let now = Minute::containing(self.clock.now());
        let mut skips = Skips::default();
        let mut late = Vec::new();
        for run in self.shards.values_mut() {
            let start = late.len();
            for (slot, n) in run.scheduler.take_late(now, &mut late, &mut skips) {
                if let Some(lease) = &run.lease {
                    lease.expect_late(slot, n);
                }
            }
            if let Some(lease) = &run.lease {
                for d in &mut late[start..] {
                    d.lease = Some(LeaseRef(Arc::clone(lease)));
                }
            }
        }
        if skips.total() > 0 {
            self.observer.skipped(&skips);
        }
        let sent = late.len() as u64;
        for dispatch in late {
            info!(message = "an at job added after its minute is sent late", job = %dispatch.spec.name, slot = %crate::wire::slot_text(dispatch.scheduled_at));
            self.sink.send(dispatch).await.map_err(|_| SinkClosed)?;
        }
        self.total_dispatched += sent;
        Ok(sent)
    }

    /// One tick: reload check, then every minute up to the clock's, for every owned shard.
    pub async fn tick(&mut self) -> Result<TickReport, SinkClosed> {
        let mut report = TickReport::default();
        self.finish_check(&mut report).await;
        self.sync_pauses();

        let woke = self.clock.now();
        let now = Minute::containing(woke);
        let watch = self.clock.watch();
        let Some(lowest) = self.shards.values().map(|r| r.scheduler.processed()).min() else {
            self.observer.clock_checked(watch.as_ref(), None);
            self.start_check();
            return Ok(report);
        };
        let highest = self
            .shards
            .values()
            .map(|r| r.scheduler.processed())
            .max()
            .unwrap_or(lowest);
        if now < highest {
            if !self.clock_behind {
                warn!(
                    message = "clock behind the cursor: the clock went backwards; waiting for it to pass the last processed minute (not ready meanwhile)",
                    now = %now,
                    processed = %highest,
                );
                self.clock_behind = true;
            }
        } else {
            if self.clock_behind {
                info!(message = "the clock passed the last processed minute again", now = %now);
            }
            self.clock_behind = false;
        }
        self.observer
            .clock_checked(watch.as_ref(), self.clock_behind.then_some((now, highest)));

        // Slots older than every job's window are skipped in one jump, not minute by minute.
        let mut skips = Skips::default();
        // The minute against which slots count as missed (none do in a replay).
        let rules_now = if self.replaying {
            Minute(i64::MIN)
        } else {
            now
        };
        for run in self.shards.values_mut().filter(|_| !self.replaying) {
            let processed = run.scheduler.processed();
            let oldest_allowed = Minute(now.0.saturating_sub(run.scheduler.longest_window()));
            if oldest_allowed > processed.next() {
                let until = Minute(oldest_allowed.0 - 1);
                run.scheduler.skip_until(until, SKIP_COUNT_CAP, &mut skips);
                if let Some(lease) = &run.lease {
                    lease.expect(until, 0);
                }
            }
        }

        let mut minute = lowest.next();
        while minute <= now {
            self.buf.clear();
            let mut contributing = 0;
            // Paused slots sent late this minute, counted at their own slot.
            let mut late_slots: Vec<(Minute, u64)> = Vec::new();
            for (shard, run) in self.shards.iter_mut() {
                if run.scheduler.processed().next() != minute {
                    continue;
                }
                let start = self.buf.len();
                run.scheduler
                    .run_minute_at(minute, rules_now, &mut self.buf, &mut skips);
                let mut shard_late = 0;
                if let Some(pauses) = self.pauses.as_mut() {
                    let effect = pauses.apply_minute(
                        *shard,
                        minute,
                        rules_now,
                        &run.scheduler,
                        &mut self.buf,
                        start,
                    );
                    report.paused += effect.paused;
                    report.resumed += effect.resumed;
                    shard_late = effect.resumed;
                    if let Some(lease) = &run.lease {
                        for &(slot, n) in &effect.late_slots {
                            lease.expect_late(slot, n);
                        }
                    }
                    late_slots.extend(effect.late_slots);
                }
                // `at` jobs added after their minute: their slot, late, under its catch-up rule.
                let late_at = run
                    .scheduler
                    .take_late(rules_now, &mut self.buf, &mut skips);
                for &(slot, n) in &late_at {
                    shard_late += n;
                    if let Some(lease) = &run.lease {
                        lease.expect_late(slot, n);
                    }
                }
                late_slots.extend(late_at);
                let due = (self.buf.len() - start) as u64;
                if let Some(lease) = &run.lease {
                    // Before the records are queued: an ack must find its minute expected.
                    lease.expect(minute, due - shard_late);
                    for d in &mut self.buf[start..] {
                        d.lease = Some(LeaseRef(Arc::clone(lease)));
                    }
                }
                if due > 0 {
                    contributing += 1;
                }
            }
            if contributing > 1 {
                // Each shard's part is in order already; the stable sort merges the runs.
                self.buf.sort_by(|a, b| {
                    (Reverse(a.spec.priority), &a.spec.name)
                        .cmp(&(Reverse(b.spec.priority), &b.spec.name))
                });
            }
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
                let mut late = 0;
                late_slots.sort_unstable();
                for chunk in late_slots.chunk_by(|a, b| a.0 == b.0) {
                    let n: u64 = chunk.iter().map(|(_, n)| n).sum();
                    ledger.expect(chunk[0].0, n);
                    late += n;
                }
                ledger.expect(minute, due - late.min(due));
            }
            // Lag is the live minute's: how long after its boundary the loop handed it out.
            let lag = (minute == now && !self.replaying)
                .then(|| minute.start().and_then(|s| (woke - s).to_std().ok()))
                .flatten();
            self.observer.minute_handed_out(minute, due, lag);
            minute = minute.next();
        }

        if report.paused > 0 {
            self.observer.paused_skipped(report.paused);
        }
        if skips.total() > 0 {
            report.skipped = skips.total();
            self.observer.skipped(&skips);
            warn!(
                message = "missed slots were skipped by their jobs' catch-up rules",
                until = %now,
                skipped = skips.total(),
                outside_window = skips.window,
                by_rule = skips.rule,
                jobs = skips.jobs(),
                most = %skips.top(SKIP_NAMES_LOGGED),
            );
        }
        // After the minutes: a tick woken at a minute boundary sends first.
        self.start_check();
        Ok(report)
    }

    /// Starts a check of the schedule file unless one is running.
    fn start_check(&mut self) {
        let Some(source) = self.source.as_mut() else {
            return;
        };
        if source.check.is_some() {
            return;
        }
        let Some(watch) = source.watch.take() else {
            return;
        };
        let base: Vec<(u32, Arc<Schedule>, Minute)> = self
            .shards
            .iter()
            .map(|(shard, run)| {
                // The file mode never edits a scheduler job by job, so its schedule is the jobs in
                // force and a reload may be compiled against it (see `Scheduler::schedule`).
                debug_assert_eq!(
                    run.scheduler.edit_count(),
                    0,
                    "shard {shard}: a file reload against an edited scheduler"
                );
                (
                    *shard,
                    Arc::clone(run.scheduler.schedule()),
                    run.scheduler.processed(),
                )
            })
            .collect();
        let options = source.options.clone();
        let at = base
            .iter()
            .map(|(s, o, p)| (*s, (Arc::clone(o), *p)))
            .collect();
        let task = tokio::task::spawn_blocking(move || check_file(watch, options, base));
        source.check = Some(Check { task, base: at });
    }

    /// Waits for the running check of the schedule file, if any, and applies what it found. The
    /// loop itself never waits for a check; this is for tests and tools that need the reload now.
    pub async fn settle_check(&mut self) -> TickReport {
        let mut report = TickReport::default();
        if let Some(check) = self.source.as_mut().and_then(|s| s.check.as_mut()) {
            // Wait without taking it, so a cancelled caller leaves it in place.
            while !check.task.is_finished() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        self.finish_check(&mut report).await;
        report
    }

    /// Checks the file now (off the loop's thread) and applies what the check found.
    pub async fn check_now(&mut self) -> TickReport {
        let mut report = self.settle_check().await;
        self.start_check();
        let second = self.settle_check().await;
        report.reloaded |= second.reloaded;
        report.rejected |= second.rejected;
        report
    }

    /// Applies a finished check.
    async fn finish_check(&mut self, report: &mut TickReport) {
        let Some(source) = self.source.as_mut() else {
            return;
        };
        if !source.check.as_ref().is_some_and(|c| c.task.is_finished()) {
            return;
        }
        let Some(check) = source.check.take() else {
            return;
        };
        let checked = match check.task.await {
            Ok(checked) => checked,
            Err(e) => {
                // The watch went with the task: start over from the schedule in force, so the
                // file is looked at again.
                error!(message = "checking the schedule file failed; keeping the current schedule", file = %source.path.display(), error = %e);
                report.rejected = true;
                source.watch = Some(
                    FileWatch::new(&source.path, source.in_force)
                        .with_max_bytes(source.options.max_file_bytes),
                );
                return;
            }
        };
        source.watch = Some(checked.watch);
        let path = source.path.display().to_string();
        match checked.outcome {
            Outcome::Unchanged => source.vanished = false,
            Outcome::Unreadable(e) => {
                if !source.vanished {
                    self.observer.reload_vanished(&e);
                    warn!(
                        message = "schedule file is unreadable; keeping the current schedule until it is back",
                        file = %path,
                        error = %e,
                    );
                    source.vanished = true;
                }
            }
            Outcome::Rejected(digest, e @ LoadError::Invalid { .. }) => {
                source.vanished = false;
                report.rejected = true;
                self.observer.reload_rejected(&digest.to_string(), &e);
                let LoadError::Invalid { problems, .. } = e else {
                    return;
                };
                for p in &problems {
                    error!(message = "schedule problem", problem = %p);
                }
                error!(
                    message = "schedule file rejected; keeping the last good schedule until the file changes again",
                    file = %path,
                    md5 = %digest,
                    problems = problems.len(),
                );
            }
            Outcome::Rejected(digest, e) => {
                source.vanished = false;
                report.rejected = true;
                self.observer.reload_rejected(&digest.to_string(), &e);
                error!(message = "schedule file rejected; keeping the last good schedule until the file changes again", file = %path, md5 = %digest, error = %e);
            }
            Outcome::Built {
                digest,
                jobs,
                took,
                shards,
            } => {
                source.vanished = false;
                let swap_started = Instant::now();
                let (mut added, mut rescheduled, mut updated, mut removed) = (0, 0, 0, 0);
                let mut stale = Vec::new();
                let mut replaced = Vec::new();
                for (shard, rebuilt) in shards {
                    let Some(run) = self.shards.get_mut(&shard) else {
                        continue; // given up since the check started
                    };
                    let current = check.base.get(&shard).is_some_and(|(schedule, processed)| {
                        Arc::ptr_eq(schedule, run.scheduler.schedule())
                            && *processed <= run.scheduler.processed()
                    });
                    if !current {
                        // Taken over again meanwhile: compiled from another state.
                        stale.push(shard);
                        continue;
                    }
                    added += rebuilt.diff.added.len();
                    rescheduled += rebuilt.diff.rescheduled.len();
                    updated += rebuilt.diff.updated.len();
                    removed += rebuilt.diff.removed.len();
                    replaced.extend(rebuilt.install(&mut run.scheduler));
                }
                if !replaced.is_empty() {
                    // Freeing a million jobs takes a while: not on the loop.
                    tokio::task::spawn_blocking(move || drop(replaced));
                }
                if stale.is_empty() {
                    source.in_force = Some(digest);
                } else {
                    // Look at the file again from the schedule in force: the next check
                    // compiles the stale shards anew (the others come out unchanged), and the
                    // reload is reported then.
                    debug!(message = "shards changed during the reload; checking again", shards = ?stale);
                    source.watch = Some(
                        FileWatch::new(&source.path, source.in_force)
                            .with_max_bytes(source.options.max_file_bytes),
                    );
                    return;
                }
                if !stale.is_empty() {
                    return;
                }
                report.reloaded = true;
                self.observer.reload_ok(&digest.to_string(), took);
                info!(
                    message = "schedule reloaded",
                    file = %path,
                    md5 = %digest,
                    jobs,
                    added,
                    rescheduled,
                    updated,
                    removed,
                    took_ms = took.as_millis() as u64,
                    swap_ms = swap_started.elapsed().as_millis() as u64,
                );
            }
        }
    }
}
