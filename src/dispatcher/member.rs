//! A member of the dispatcher group: the shards it owns and what it knows of the others. The
//! service ([`super::service`]) hands it the group's events; it takes shards over (cursor,
//! compile, catch up), releases them (acks, final cursor), and reports its cursors and its view.
//!
//! ```text
//!  Assigned(shards) ─► take_over: pauses synced, each new shard's cursor read, its jobs compiled
//!                      (a shard a live previous owner still holds waits for its final record:
//!                      handover.rs)
//!  tick             ─► start_waiting (shards handed over since, shards whose file did not
//!                      load), publish
//!  (the periodic cursor records are the cursor writer's, a task of its own: `cursor_writer.rs`)
//!  Revoked(shards)  ─► revoke: delayed records sent, acks awaited (≤ grace), final cursors, parked
//!  shutdown         ─► release_all: the same for every owned shard
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::control::ControlFollower;
use super::cursor::Lease;
use super::cursor_writer::{self, CursorWriter, SharedBook};
use super::delay::DelayQueue;
use super::group::{GroupError, LastCursor, StateTopic};
use super::handover::{self, Handovers, Outcome, Verdict};
use super::observe::Observer;
use super::pipeline::flush_delayed;
use super::schedule_topic::{ShardEdits, TopicSchedule};
use super::tick_loop::{ShardRun, TickLoop};
use super::watchdog::MemberView;
use super::Scheduler;
use crate::clock::{Clock, Minute};
use crate::obs::health::Beat;
use crate::schedule::{self, ShardFilter};
use crate::wire::cursor::Cursor;

/// MD5 of the schedule in force, as cursor records carry it.
pub(super) fn schedule_md5(tick_loop: &mut TickLoop) -> String {
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

/// What a member is made of, given once by the service.
pub(super) struct MemberSetup {
    /// This member's name in cursor records.
    pub(super) owner: String,
    /// The group's state topic (the cursors).
    pub(super) state: Arc<StateTopic>,
    /// Its shard count.
    pub(super) shards: u32,
    /// The dispatcher's clock.
    pub(super) clock: Arc<dyn Clock>,
    /// Bound on waiting for acks at a release.
    pub(super) grace: Duration,
    /// Bound on waiting for a previous owner's final cursor record at a takeover.
    pub(super) handover_bound: Duration,
    /// The `--http` metrics and page.
    pub(super) observer: Arc<Observer>,
    /// The tick loop's heartbeat.
    pub(super) beat: Option<Beat>,
    /// The group's control topic (pauses).
    pub(super) control: ControlFollower,
    /// How often the cursor writer looks at the owned shards (`--tick`).
    pub(super) poll: Duration,
    /// Topic mode: the shards' jobs come from the schedule topic, not the file.
    pub(super) topic: Option<TopicSchedule>,
    /// The jobs API's URL (`--advertise-url`) when the API is on: carried by the cursor records.
    pub(super) api_url: Option<String>,
}

/// A member of the dispatcher group: the shards it owns and what it knows of the others.
pub(super) struct Member {
    /// This member's name in cursor records.
    owner: String,
    state: Arc<StateTopic>,
    shards: u32,
    clock: Arc<dyn Clock>,
    /// Grows by one at every assignment.
    generation: u64,
    /// The owned shards' leases, read by the cursor writer.
    book: SharedBook,
    /// What the watchdog knows of this member.
    view: Arc<Mutex<MemberView>>,
    /// Leases of shards lost with the session: their unacked dispatches count as undelivered.
    dropped: Vec<Arc<Lease>>,
    /// Shards handed back cleanly, kept compiled (with the MD5 of their schedule) in case the
    /// rebalance gives them back.
    parked: BTreeMap<u32, (ShardRun, String, Option<i64>)>,
    /// The last reason assigned shards could not start, logged once.
    waiting_error: Option<String>,
    /// Shards assigned whose jobs could not be loaded yet (the file is rejected right now).
    waiting: Vec<(u32, LastCursor)>,
    /// Shards assigned that a live previous owner has not released yet.
    handovers: Handovers,
    grace: Duration,
    /// The `--http` metrics and page.
    observer: Arc<Observer>,
    /// The tick loop's heartbeat, beaten while a takeover waits for the broker too.
    beat: Option<Beat>,
    /// The group's control topic (pauses), read up to date before each takeover.
    control: ControlFollower,
    /// Topic mode: the shards' jobs come from the schedule topic, not the file.
    topic: Option<TopicSchedule>,
    /// The jobs API's URL, when the API is on.
    api_url: Option<String>,
}

impl Member {
    /// A member that owns nothing yet, and its cursor writer (for the service to run as a task:
    /// the periodic cursor records are its).
    pub(super) fn new(setup: MemberSetup) -> (Member, CursorWriter) {
        let book = SharedBook::default();
        cursor_writer::lock(&book).set_api_url(setup.api_url.clone());
        let writer = CursorWriter {
            state: Arc::clone(&setup.state),
            book: Arc::clone(&book),
            owner: setup.owner.clone(),
            clock: Arc::clone(&setup.clock),
            poll: setup.poll,
        };
        let member = Member {
            owner: setup.owner,
            state: setup.state,
            shards: setup.shards,
            clock: setup.clock,
            generation: 0,
            book,
            view: Arc::new(Mutex::new(MemberView::default())),
            dropped: Vec::new(),
            parked: BTreeMap::new(),
            waiting_error: None,
            waiting: Vec::new(),
            handovers: Handovers::new(setup.handover_bound),
            grace: setup.grace,
            observer: setup.observer,
            beat: setup.beat,
            control: setup.control,
            topic: setup.topic,
            api_url: setup.api_url,
        };
        (member, writer)
    }

    /// What the member tells its orphan watchdog (updated by [`publish`](Self::publish)).
    pub(super) fn view(&self) -> Arc<Mutex<MemberView>> {
        Arc::clone(&self.view)
    }

    /// A released shard's final cursor record.
    fn final_cursor(&self, shard: u32, minute: Minute, md5: &str) -> Cursor {
        Cursor {
            shard,
            minute,
            written_at: self.clock.now(),
            owner: self.owner.clone(),
            generation: self.generation,
            schedule_md5: md5.to_string(),
            schedule_topic: self.topic.as_ref().and_then(|t| t.position(shard)),
            api_url: self.api_url.clone(),
            released: true,
        }
    }

    /// Waits until the leases have nothing outstanding, at most the grace.
    async fn settle(&self, leases: &[Arc<Lease>]) {
        let drained = async {
            for lease in leases {
                lease.drained().await;
            }
        };
        let _ = tokio::time::timeout(self.grace, drained).await;
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
            .map(|l| self.final_cursor(l.shard(), l.cursor(), md5))
            .collect();
        let undelivered: u64 = leases.iter().map(|l| l.outstanding()).sum();
        for (shard, e) in self.state.write(&cursors).await {
            error!(message = "cannot write a released shard's cursor; its next owner re-sends from the previous one", shard, error = %e);
        }
        for (shard, _) in runs {
            self.unown(*shard);
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

    /// Hands `shards` back (the group took them away). Lost with the session: they stop at once,
    /// their unacked dispatches are the next owner's. Revoked cleanly: the records waiting for
    /// their jitter offset go first, then the final cursors, and the compiled shards are parked.
    pub(super) async fn revoke(
        &mut self,
        tick_loop: &mut TickLoop,
        delay: Option<&DelayQueue>,
        shards: &[u32],
        lost: bool,
    ) {
        let runs: Vec<(u32, ShardRun)> = shards
            .iter()
            .filter_map(|s| tick_loop.remove_shard(*s).map(|r| (*s, r)))
            .collect();
        if lost {
            self.observer.session_lost();
            let mut unacked = 0;
            for (s, run) in &runs {
                if let Some(lease) = &run.lease {
                    lease.close();
                    unacked += lease.outstanding();
                    self.dropped.push(Arc::clone(lease));
                }
                self.unown(*s);
            }
            warn!(message = "the group session expired: these shards may have another owner already; stopped dispatching them (dispatches not acked yet are re-sent by the next owner from the cursor)", shards = ?shards, unacked);
            drop(runs);
            return_freed_memory();
        } else {
            let md5 = schedule_md5(tick_loop);
            let refs: Vec<(u32, &ShardRun)> = runs.iter().map(|(s, r)| (*s, r)).collect();
            flush_delayed(delay, Some(shards.to_vec()), self.grace).await;
            // Topic mode: a parked shard given back resumes following its partition from the
            // offset it had applied.
            let applied: BTreeMap<u32, i64> = self.topic.as_ref().map_or_else(BTreeMap::new, |t| {
                t.reports()
                    .iter()
                    .filter(|(s, _)| shards.contains(s))
                    .map(|(s, r)| (*s, r.applied))
                    .collect()
            });
            self.release(&refs, &md5, "rebalance").await;
            let parked = runs.into_iter().filter_map(|(s, run)| {
                let applied = match &self.topic {
                    Some(_) => Some(*applied.get(&s)?),
                    None => None,
                };
                Some((s, (run, md5.clone(), applied)))
            });
            self.parked.extend(parked);
        }
        self.waiting.retain(|(s, _)| !shards.contains(s));
        self.handovers.suspend(shards);
    }

    /// Shutdown: the records waiting for their jitter offset go, then every owned shard is
    /// released with its final cursor. Returns the dispatches left undelivered (with those of
    /// shards lost with a session).
    pub(super) async fn release_all(
        &mut self,
        tick_loop: &mut TickLoop,
        delay: Option<&DelayQueue>,
    ) -> u64 {
        let md5 = schedule_md5(tick_loop);
        let owned: Vec<u32> = tick_loop.shards().keys().copied().collect();
        let runs: Vec<(u32, ShardRun)> = owned
            .iter()
            .filter_map(|s| tick_loop.remove_shard(*s).map(|r| (*s, r)))
            .collect();
        let refs: Vec<(u32, &ShardRun)> = runs.iter().map(|(s, r)| (*s, r)).collect();
        flush_delayed(delay, None, self.grace).await;
        self.release(&refs, &md5, "shutdown").await
            + self.dropped.iter().map(|l| l.outstanding()).sum::<u64>()
    }

    /// Takes over `assigned`: reads each new shard's cursor, compiles its jobs, and lets the tick
    /// loop catch it up from there.
    pub(super) async fn take_over(
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
            self.unown(*shard);
        }
        let new: Vec<u32> = assigned
            .iter()
            .copied()
            .filter(|s| !owned.contains(s))
            .collect();
        // All at once: a takeover of many shards waits for the slowest read, not for their sum.
        let reads = join_all(new.iter().map(|&shard| self.read_cursor(shard, shutdown))).await;
        let mut cursors: Vec<(u32, LastCursor)> = Vec::with_capacity(new.len());
        for (&shard, cursor) in new.iter().zip(reads) {
            let Some(cursor) = cursor else {
                // Stopping: the new shards are not started, so their cursors stay as they are.
                return;
            };
            cursors.push((shard, cursor));
        }
        // A shard a live previous owner has not released yet waits for its final record.
        self.handovers.retain(&assigned);
        let now = self.clock.now();
        let started = std::time::Instant::now();
        cursors.retain(|(shard, read)| {
            match handover::verdict(read, &self.owner, now) {
                Verdict::Start => true,
                Verdict::Wait(previous) => {
                    info!(message = "waiting for the previous owner to hand the shard over", shard, previous_owner = %previous, cursor = %read.cursor.as_ref().map(|c| c.minute.to_string()).unwrap_or_default(), at_most_ms = self.handovers.bound().as_millis() as u64);
                    self.handovers.wait(*shard, previous, started);
                    false
                }
            }
        });
        let mut parked = std::mem::take(&mut self.parked);
        let md5 = schedule_md5(tick_loop);
        // When this member gives shards up for good (another member joined), its kept shards are
        // compiled again from the file too: their jobs sit interleaved with the freed ones on the
        // heap, and only a fresh load lets the memory of the given-up shards go back to the OS.
        // In the topic mode the kept shards are not read again: a takeover reads only the
        // partitions of the shards new to this member.
        let shrinking = self.topic.is_none() && parked.keys().any(|s| !assigned.contains(s));
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
                .filter(|(_, parked_md5, _)| *parked_md5 == md5);
            // With the jobs API on, a shard is read afresh: its versions were dropped at the
            // release, and the API must not answer from versions that missed the writes since.
            let api_on = self.topic.as_ref().is_some_and(TopicSchedule::api_on);
            let reusable = reusable.filter(|_| !api_on);
            let reusable = reusable.filter(|(run, _, _)| {
                run.lease.as_ref().is_some_and(|l| {
                    l.outstanding() == 0
                        && cursor
                            .cursor
                            .as_ref()
                            .is_some_and(|c| c.owner == self.owner && c.minute == l.cursor())
                })
            });
            match reusable {
                Some((mut run, _, applied)) => {
                    let at = run.scheduler.processed();
                    run.lease = Some(Lease::new(shard, at));
                    if let (Some(topic), Some(applied)) = (self.topic.as_mut(), applied) {
                        topic.resume(shard, applied, run.scheduler.len() as u64);
                    }
                    tick_loop.insert_shard(shard, run);
                }
                None => fresh.push((shard, cursor)),
            }
        }
        // Shards given up for good (the topic mode keeps the others compiled) are dropped off the
        // loop, and their memory goes back to the OS then, not when the heap happens to shrink.
        if !parked.is_empty() {
            tokio::task::spawn_blocking(move || {
                drop(parked);
                return_freed_memory();
            });
        }
        self.waiting = fresh;
        self.start_waiting(tick_loop).await;
        let owned: Vec<u32> = tick_loop.shards().keys().copied().collect();
        if let Some(source) = tick_loop.source_mut() {
            source.set_shards(ShardFilter::only(self.shards, owned.iter().copied()));
        }
        self.sync_book(tick_loop);
        cursor_writer::lock(&self.book).set_md5(&md5);
        self.observer.assigned(&owned, self.shards);
        info!(message = "shards assigned", generation = self.generation, shards = ?assigned, new = ?new);
    }

    /// Compiles and starts the assigned shards still waiting for their jobs: from the schedule
    /// file, or in the topic mode from their partitions of the schedule topic (each then followed
    /// from where its read ended).
    pub(super) async fn start_waiting(&mut self, tick_loop: &mut TickLoop) {
        self.poll_handovers().await;
        if self.waiting.is_empty() {
            return;
        }
        let shards: Vec<u32> = self.waiting.iter().map(|(s, _)| *s).collect();
        let started = std::time::Instant::now();
        let (loaded, what) = match self.topic.as_mut() {
            Some(topic) => (
                topic
                    .load(&shards)
                    .await
                    .map(|parts| {
                        let offsets = parts.iter().map(|(s, (_, next))| (*s, *next)).collect();
                        let parts = parts.into_iter().map(|(s, (part, _))| (s, part)).collect();
                        (parts, offsets)
                    })
                    .map_err(|e| e.to_string()),
                "the schedule topic cannot be read",
            ),
            None => {
                let Some(source) = tick_loop.source_mut() else {
                    return;
                };
                let path = source.path().to_path_buf();
                let mut options = source.options().clone();
                options.shards = ShardFilter::only(self.shards, shards.iter().copied());
                let loaded =
                    tokio::task::spawn_blocking(move || schedule::load(&path, options)).await;
                let loaded = match loaded {
                    Ok(Ok((schedule, _))) => Ok((
                        schedule.into_shards(shards.iter().copied()),
                        BTreeMap::new(),
                    )),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                (loaded, "the schedule file does not load")
            }
        };
        let (mut parts, offsets): (BTreeMap<u32, schedule::Schedule>, BTreeMap<u32, i64>) =
            match loaded {
                Ok(loaded) => {
                    self.waiting_error = None;
                    if let Some(topic) = &self.topic {
                        self.observer.schedule_topic_read(
                            true,
                            format!("{}: every owned shard read", topic.name()),
                        );
                    }
                    loaded
                }
                Err(reason) => {
                    if let Some(topic) = &self.topic {
                        self.observer.schedule_topic_read(
                            false,
                            format!(
                                "{}: shards {shards:?} cannot be read: {reason}",
                                topic.name()
                            ),
                        );
                    }
                    // Once per distinct problem, not once per tick.
                    if self.waiting_error.as_deref() != Some(reason.as_str()) {
                        error!(message = "cannot start the assigned shards; retrying every tick", why = what, shards = ?shards, error = %reason);
                        self.waiting_error = Some(reason);
                    }
                    return;
                }
            };
        let now = Minute::containing(self.clock.now());
        let waiting = std::mem::take(&mut self.waiting);
        // Each shard's Scheduler is built on the blocking pool, as many at once as there are
        // cores, off the service loop.
        let builds: Vec<_> = waiting
            .into_iter()
            .map(|(shard, read)| {
                let part = parts.remove(&shard).unwrap_or_default();
                let start = self.start_of(shard, &read, &part, now);
                (shard, read, start, part)
            })
            .collect();
        let cores = crate::cores::count();
        let built: Vec<_> = futures_util::stream::iter(builds)
            .map(|(shard, read, start, part)| async move {
                let built = tokio::task::spawn_blocking(move || Scheduler::new(part, start)).await;
                (shard, read, start, built)
            })
            .buffered(cores)
            .collect()
            .await;
        for (shard, read, start, built) in built {
            let scheduler = match built {
                Ok(scheduler) => scheduler,
                Err(e) => {
                    error!(message = "building a shard's scheduler failed; trying again at the next tick", shard, error = %e);
                    self.waiting.push((shard, read));
                    continue;
                }
            };
            let cursor = read.cursor;
            let behind = now.0 - start.0;
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
            if let (Some(topic), Some(next)) = (self.topic.as_mut(), offsets.get(&shard)) {
                topic.follow(shard, *next);
            }
        }
        // Reading and checking the shards freed as much again as they keep (records, batches,
        // check tables): without this, glibc holds it for good.
        let _ = tokio::task::spawn_blocking(return_freed_memory).await;
        self.sync_book(tick_loop);
    }

    /// Reads again the last record of each shard due that waits for its previous owner; a shard
    /// handed over (or whose wait reached its bound) joins the shards to start.
    async fn poll_handovers(&mut self) {
        if self.handovers.is_empty() {
            return;
        }
        let now = std::time::Instant::now();
        let due = self.handovers.due(now);
        let reads = join_all(due.iter().map(|&shard| self.state.last(shard))).await;
        for (shard, read) in due.into_iter().zip(reads) {
            // Not readable right now: read again at the next poll.
            let Ok(read) = read else { continue };
            match self
                .handovers
                .judge(shard, &read, std::time::Instant::now())
            {
                Outcome::Waiting => continue,
                Outcome::HandedOver { previous, waited } => {
                    info!(message = "the previous owner handed the shard over", shard, previous_owner = %previous, waited_ms = waited.as_millis() as u64);
                }
                Outcome::GaveUp { previous, waited } => {
                    warn!(message = "the previous owner did not release the shard in time; taking it over from its last cursor (minutes it sent after that cursor are sent again)", shard, previous_owner = %previous, waited_ms = waited.as_millis() as u64);
                }
            }
            self.waiting.push((shard, read));
        }
    }

    /// Where a shard taken over starts (its first minute handed out is the next one): its last
    /// readable cursor; the next minute when it never had a cursor; and when it has cursor records
    /// of which none decodes, `now` minus the longest catch-up window of its jobs, so that each
    /// job's own rule decides what of that span is sent (an unreadable cursor must not skip it).
    fn start_of(
        &self,
        shard: u32,
        read: &LastCursor,
        part: &schedule::Schedule,
        now: Minute,
    ) -> Minute {
        let offsets = || {
            read.unreadable
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        match &read.cursor {
            Some(c) => {
                if !read.unreadable.is_empty() {
                    warn!(message = "the shard's newest cursor records do not decode; resuming from the last one that does", shard, cursor = %c.minute, unreadable_offsets = %offsets());
                    self.observer
                        .cursor_unreadable(shard, &read.unreadable, false, c.minute);
                }
                c.minute.min(now)
            }
            None if read.unreadable.is_empty() => now,
            None => {
                let window = part
                    .jobs
                    .iter()
                    .map(|j| super::catchup::window_minutes(&j.spec))
                    .max()
                    .unwrap_or(0);
                let start = Minute(now.0.saturating_sub(window));
                error!(message = "no cursor record of the shard decodes; starting from now minus the longest catch-up window of its jobs (each job's catch-up rule applies)", shard, unreadable_offsets = %offsets(), window_minutes = window, start = %start);
                self.observer
                    .cursor_unreadable(shard, &read.unreadable, true, start);
                start
            }
        }
    }

    /// A shard's last cursor as its partition holds it, retrying while the broker cannot be
    /// read: starting without it could skip slots. `None` when `shutdown` came first.
    async fn read_cursor(&self, shard: u32, shutdown: &CancellationToken) -> Option<LastCursor> {
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

    /// `shard` is not this member's any more: the cursor writer leaves it alone, and in the topic
    /// mode its partition is no longer followed.
    fn unown(&mut self, shard: u32) {
        cursor_writer::lock(&self.book).drop_shard(shard);
        if let Some(topic) = self.topic.as_mut() {
            topic.unfollow(shard);
        }
    }

    /// Removes the topic-sourced jobs whose runs have come to an end (topic mode).
    pub(super) async fn retire_finished(&mut self, tick_loop: &TickLoop) {
        if let Some(topic) = self.topic.as_mut() {
            topic.retire(tick_loop).await;
        }
    }

    /// Applies schedule topic records to their shard's jobs (topic mode).
    pub(super) fn apply_edits(&mut self, tick_loop: &mut TickLoop, batch: ShardEdits) {
        if let Some(topic) = self.topic.as_mut() {
            topic.apply(batch, tick_loop);
        }
    }

    /// Tells the cursor writer which shards the tick loop runs now, under which leases.
    fn sync_book(&self, tick_loop: &TickLoop) {
        let leases = tick_loop
            .shards()
            .iter()
            .filter_map(|(shard, run)| run.lease.as_ref().map(|l| (*shard, Arc::clone(l))))
            .collect();
        let mut book = cursor_writer::lock(&self.book);
        book.own(leases, self.generation);
        if let Some(topic) = &self.topic {
            book.set_topic(topic.positions());
        }
    }

    /// Tells the watchdog and the cursor writer what this member owns and runs.
    pub(super) fn publish(&self, tick_loop: &TickLoop, md5: &str) {
        self.sync_book(tick_loop);
        cursor_writer::lock(&self.book).set_md5(md5);
        let mut view = self.view.lock().unwrap_or_else(|e| e.into_inner());
        view.owned = tick_loop.shards().keys().copied().collect();
        if view.md5 != md5 {
            view.md5 = md5.to_string();
        }
    }
}
