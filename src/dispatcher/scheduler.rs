//! The scheduling state the tick loop drives: every enabled job in the timing wheel.
//! Pure and synchronous (no IO, no tokio, no wall clock), so it is tested minute by minute.
//!
//! Jobs that share a compiled expression (the same `cronTime` in the same zone) fire in exactly the
//! same minutes, so they share ONE wheel entry and ONE cron evaluation per fire: a schedule of a
//! million jobs written by people holds a few thousand distinct expressions (every daily job at
//! 02:30 is `30 2 * * *`). The wheel files these groups; a group that comes due hands out all its
//! members. With no two jobs alike this is one entry per job, the plain design.
//!
//! ```text
//!  Schedule ──► jobs, in dispatch order (priority desc, then name): a job's index is its rank
//!            └► groups by (cronTime, zone): expression + member ranks ascending ──► Wheel (one entry per group)
//!  run_minute: Wheel::advance ──► due groups by id ──► members merged by rank ──► Dispatch records
//!                                           └──► group reinserted at its next instant
//! ```
//!
//! A [`Dispatch`] names its job by rank in the scheduler's job table ([`JobRef`]: one shared `Arc`
//! of the table, whose count lives in one hot cache line), not by its own `Arc<JobSpec>`: making a
//! minute's records then reads nothing per job (a job's settings sit at a random place among a
//! million), and the consumer that encodes the record reads the settings once.
//!
//! Invariant: every group that can still fire sits in the wheel at its expression's first instant
//! strictly after [`Scheduler::processed`], the last minute whose due jobs were handed out. The
//! whole state is therefore a function of (schedule, processed): a reload rebuilds it from the new
//! schedule at the same `processed`, which is why it can neither fire a job twice for one slot nor
//! skip one, and why a payload-only change keeps the next run while a new `cronTime` moves it.
//!
//! Per-job edits ([`Scheduler::upsert`], [`Scheduler::remove`]: a schedule topic's records) keep
//! that invariant without a rebuild. The structure `new` built stays as it is; an edit marks the
//! job's old version dead (a bit per rank, which a due group skips) and files the new version as a
//! *solo* job of its own in a second, small wheel that can unschedule (ids are reused only once the
//! wheel dropped their entry). The state is then still a function of (jobs in force, processed):
//! from any edit on, it hands out exactly what `Scheduler::new` of the jobs in force would, in the
//! same order. A scheduler that is never edited keeps no edit state at all (no name index, no
//! second wheel), so its minutes cost what they cost before.
//!
//! ```text
//!  upsert/remove ──► name index (hash of jobName ─► base job or solo, built at the first edit)
//!                     ├► old version: base rank ─► dead bit │ solo ─► unscheduled, id freed
//!                     └► new version: solo ─► solo wheel at its first instant after `processed`
//!  run_minute: base groups minus dead ranks ─┐
//!              due solos, sorted ────────────┴► merged in dispatch order ─► Dispatch records
//! ```

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault};
use std::ops::Deref;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::catchup::{admit, window_minutes, SkipReason, Skips};
use super::cursor::LeaseRef;
use crate::clock::Minute;
use crate::schedule::diff::Diff;
use crate::schedule::load::HashedAlready;
use crate::schedule::{Job, JobSpec, Schedule};
use crate::schedule::{Timing, When};
use crate::wheel::{JobId, Wheel};
use crate::FastHash;

/// A job's settings as a [`Dispatch`] holds them: the job's place in the job table of the schedule
/// version that fired it. Reads like `&JobSpec` (`dispatch.spec.name`), compares and prints as the
/// settings, and keeps that table alive (the settings of a job that a reload changed or removed
/// stay readable until its last dispatch is dropped).
///
/// Making one costs an increment of the table's reference count (the same cache line for every
/// dispatch of a minute), where an `Arc<JobSpec>` of its own cost a load of the job's pointer and
/// an increment at the job's settings: two cache misses per dispatch in a large schedule.
///
/// ```
/// use std::sync::Arc;
/// use cronq::dispatcher::JobRef;
/// # let spec = |name: &str| cronq::schedule::JobSpec {
/// #     name: name.into(), priority: 0, job: "run".into(), cron_time: "* * * * *".into(),
/// #     timezone: chrono_tz::UTC, topic: None, enabled: true,
/// #     catchup: cronq::schedule::Catchup::All,
/// #     catchup_window: cronq::schedule::DEFAULT_CATCHUP_WINDOW, shard: 0,
/// #     timeout: None, max_attempts: None, overlap: None, jitter: None, timing: None,
/// #     deadline: None,
/// # };
///
/// let table: Arc<[Arc<cronq::schedule::JobSpec>]> = Arc::new([Arc::new(spec("a")), Arc::new(spec("b"))]);
/// let b = JobRef::in_table(&table, 1).unwrap();
/// assert_eq!(b.name, "b");
/// assert!(JobRef::in_table(&table, 2).is_none());
/// // A job's own `Arc` makes a table of one.
/// assert_eq!(JobRef::from(Arc::clone(&table[1])), b);
/// ```
#[derive(Clone)]
pub struct JobRef {
    table: Arc<[Arc<JobSpec>]>,
    /// Always `< table.len()`.
    index: u32,
}

impl JobRef {
    /// The job at `index` of `table`, if there is one.
    pub fn in_table(table: &Arc<[Arc<JobSpec>]>, index: usize) -> Option<JobRef> {
        let index = u32::try_from(index)
            .ok()
            .filter(|&i| (i as usize) < table.len())?;
        Some(JobRef {
            table: Arc::clone(table),
            index,
        })
    }

    /// The job's own `Arc`, for a holder that outlives the dispatch and should not keep the whole
    /// table alive.
    pub fn arc(&self) -> &Arc<JobSpec> {
        &self.table[self.index as usize]
    }
}

impl Deref for JobRef {
    type Target = JobSpec;

    fn deref(&self) -> &JobSpec {
        self.arc()
    }
}

impl From<Arc<JobSpec>> for JobRef {
    fn from(spec: Arc<JobSpec>) -> JobRef {
        JobRef {
            table: Arc::new([spec]),
            index: 0,
        }
    }
}

impl PartialEq for JobRef {
    fn eq(&self, other: &JobRef) -> bool {
        **self == **other
    }
}

impl Eq for JobRef {}

impl fmt::Debug for JobRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// One due job for one slot: what goes to the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dispatch {
    /// The job's settings at the time it fired (`dispatch.spec.name`; `JobRef::from(arc)` makes
    /// one from an `Arc<JobSpec>`).
    pub spec: JobRef,
    /// The slot: the instant the job was due.
    pub scheduled_at: DateTime<Utc>,
    /// The shard lease the dispatch is accounted to (its ack moves the shard's cursor); `None`
    /// outside a dispatcher group (dry runs, backfills).
    pub lease: Option<LeaseRef>,
}

impl Dispatch {
    /// `jobName@scheduledAt`: unique per slot, the idempotency key consumers dedupe on.
    pub fn dispatch_id(&self) -> String {
        crate::wire::dispatch_id(&self.spec.name, &crate::wire::slot_text(self.scheduled_at))
    }
}

/// Jobs that fire together: what evaluating their expression reads, and the ranks of the jobs
/// that use it (32 bytes, in one dense vector indexed by the group's wheel id).
///
/// Most groups of a large schedule hold one job (with no two expressions alike, all do), so a lone
/// member's rank is kept in the record itself rather than behind another pointer; larger groups'
/// ranks are a range of [`Scheduler::members`].
#[derive(Debug)]
struct Group {
    /// A copy of the group's compiled expression when that alone is its evaluation
    /// ([`CronExpr::plain_utc`]: UTC, no day filter), else `None`: evaluate the full expression in
    /// [`Scheduler::exprs`]. A due group's evaluation then reads this one record, not its ~200-byte
    /// expression behind its own allocation.
    hot: Option<saffron::Cron>,
    /// With `len == 1` the member's rank; otherwise where the ranks start in `Scheduler::members`.
    first: u32,
    len: u32,
}

/// The jobs, the wheel of their groups, and how far time has been processed.
#[derive(Debug)]
pub struct Scheduler {
    /// One entry per group that can still fire, keyed by the group's index.
    wheel: Wheel,
    /// Enabled jobs in dispatch order: highest priority first, then by name. Shared with every
    /// [`Dispatch`] made from it ([`JobRef`]).
    jobs: Arc<[Arc<JobSpec>]>,
    groups: Vec<Group>,
    /// Each group's full expression, in group order: read by a due group without a
    /// [`Group::hot`] copy, and by [`skip_until`](Self::skip_until).
    exprs: Vec<Arc<When>>,
    /// The ranks of the groups of more than one job, group after group, each group's ascending
    /// (indices into `jobs`, so a group's members are in dispatch order).
    members: Vec<u32>,
    /// The schedule `new` built this state from; shared with a reload being built off the tick
    /// loop, which diffs against it. After an edit it is no longer the jobs in force (see
    /// [`Scheduler::schedule`]).
    schedule: Arc<Schedule>,
    /// The per-job edits since `new`; `None` until the first.
    edits: Option<Box<Edits>>,
    processed: Minute,
    /// Live jobs in groups that are in the wheel, plus solo jobs in the solo wheel.
    scheduled: usize,
    /// The longest `catchupWindow` of the enabled jobs `new` was given, in minutes (after an edit,
    /// [`Edits::windows`] says).
    longest_window: i64,
    due_groups: Vec<(JobId, Minute)>,
    due_jobs: Vec<u32>,
    /// `at` jobs added (by an edit or a reload) after their slot's minute was processed: their
    /// one slot is handed out late, once, if its catch-up rule allows ([`Self::take_late`]).
    late_at: Vec<(Arc<JobSpec>, Minute)>,
}

/// What [`Scheduler::upsert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edited {
    /// No job had the name: the job is new.
    Added,
    /// The job replaced a version with other settings.
    Changed,
    /// The job in force has exactly these settings: nothing moved.
    Unchanged,
}

/// Where a job in force is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loc {
    /// Index in the base schedule's `jobs` (the structure `new` built).
    Base(u32),
    /// Solo job id (in [`Edits::solos`] and the solo wheel).
    Solo(u32),
}

/// A job filed by an edit: its own entry in the solo wheel.
#[derive(Debug)]
struct Solo {
    /// The job's settings as a table of one, shared with its dispatches ([`JobRef`]).
    table: Arc<[Arc<JobSpec>]>,
    expr: Arc<When>,
    order: DispatchOrder,
}

impl Solo {
    fn spec(&self) -> &Arc<JobSpec> {
        &self.table[0]
    }
}

/// Masks the name index's hashes in tests, so that collisions (two names, one hash) are common.
const NAME_HASH_MASK: u64 = if cfg!(test) { 0x7 } else { u64::MAX };

/// The state of a scheduler's per-job edits (built at the first; see the module documentation).
#[derive(Debug)]
struct Edits {
    /// Every job held, enabled or not, by a 64-bit hash of its name, as the loader's duplicate
    /// check keys them (a million jobs' index takes ~35 MB so, half of what a copy of every name
    /// would).
    index: HashMap<u64, Loc, BuildHasherDefault<HashedAlready>>,
    /// Names whose hash another held name has in `index`.
    collided: HashMap<String, Loc>,
    hasher: FastHash,
    /// Base jobs taken out, a bit per index in the base schedule's `jobs`.
    gone: Vec<u64>,
    /// Enabled base jobs taken out, a bit per rank: a due group skips them.
    dead: Vec<u64>,
    /// Whether a bit of `dead` is set.
    any_dead: bool,
    /// Solo jobs by id; `None`: a free id (in `free`).
    solos: Vec<Option<Solo>>,
    free: Vec<u32>,
    /// The solo jobs that can still fire. It unschedules a replaced or removed solo for real, so
    /// an id is free for reuse as soon as its job is gone.
    wheel: Wheel,
    due: Vec<(JobId, Minute)>,
    due_solos: Vec<u32>,
    /// The `catchupWindow`s (minutes) of the enabled jobs in force, counted.
    windows: BTreeMap<i64, usize>,
    /// Jobs held, enabled or not.
    held: usize,
    /// Edits that changed the jobs in force.
    count: u64,
}

fn bit(set: &[u64], i: u32) -> bool {
    set.get(i as usize / 64)
        .is_some_and(|word| word & (1 << (i % 64)) != 0)
}

fn set_bit(set: &mut [u64], i: u32) {
    if let Some(word) = set.get_mut(i as usize / 64) {
        *word |= 1 << (i % 64);
    }
}

/// The rank of `spec` in `jobs` (in dispatch order), if it is there.
fn rank_of(jobs: &[Arc<JobSpec>], spec: &JobSpec) -> Option<u32> {
    let order = DispatchOrder::of(spec);
    jobs.binary_search_by(|s| {
        DispatchOrder::of(s)
            .cmp(&order)
            .then_with(|| s.name.cmp(&spec.name))
    })
    .ok()
    .map(|rank| rank as u32)
}

/// The number of `ranks` not in `dead`.
fn live_count(ranks: &[u32], dead: &[u64]) -> usize {
    if dead.is_empty() {
        ranks.len()
    } else {
        ranks.iter().filter(|&&r| !bit(dead, r)).count()
    }
}

impl Edits {
    /// The edit state of a scheduler fresh from `new`: every job of `schedule` held where `new`
    /// put it. O(jobs), once.
    fn build(schedule: &Schedule, jobs: &[Arc<JobSpec>], processed: Minute) -> Edits {
        let mut edits = Edits {
            index: HashMap::with_capacity_and_hasher(schedule.jobs.len(), Default::default()),
            collided: HashMap::new(),
            hasher: FastHash::default(),
            gone: vec![0; schedule.jobs.len().div_ceil(64)],
            dead: vec![0; jobs.len().div_ceil(64)],
            any_dead: false,
            solos: Vec::new(),
            free: Vec::new(),
            wheel: Wheel::new(processed),
            due: Vec::new(),
            due_solos: Vec::new(),
            windows: BTreeMap::new(),
            held: schedule.jobs.len(),
            count: 0,
        };
        for (i, job) in (0u32..).zip(&schedule.jobs) {
            edits.place(schedule, &job.spec.name, Some(Loc::Base(i)));
        }
        for spec in jobs {
            *edits.windows.entry(window_minutes(spec)).or_default() += 1;
        }
        edits
    }

    fn hash(&self, name: &str) -> u64 {
        self.hasher.hash_one(name) & NAME_HASH_MASK
    }

    /// The settings of the job held at `loc`.
    fn spec<'a>(&'a self, schedule: &'a Schedule, loc: Loc) -> Option<&'a Arc<JobSpec>> {
        match loc {
            Loc::Base(i) => schedule.jobs.get(i as usize).map(|j| &j.spec),
            Loc::Solo(id) => self
                .solos
                .get(id as usize)
                .and_then(Option::as_ref)
                .map(Solo::spec),
        }
    }

    /// Where the job named `name` is held.
    fn find(&self, schedule: &Schedule, name: &str) -> Option<Loc> {
        match self.index.get(&self.hash(name)) {
            Some(&loc) if self.spec(schedule, loc).is_some_and(|s| s.name == name) => Some(loc),
            _ => self.collided.get(name).copied(),
        }
    }

    /// Holds `name` at `loc` (`None`: no longer held), wherever it was held before. Called while
    /// the job's old location still holds it (its name is read there).
    fn place(&mut self, schedule: &Schedule, name: &str, loc: Option<Loc>) {
        let hash = self.hash(name);
        let first = self.index.get(&hash).copied();
        let primary = match first {
            Some(at) => self.spec(schedule, at).is_some_and(|s| s.name == name),
            // The name may still be a collided one whose primary has gone.
            None => !self.collided.contains_key(name),
        };
        match (primary, loc) {
            (true, Some(loc)) => {
                self.index.insert(hash, loc);
            }
            (true, None) => {
                self.index.remove(&hash);
            }
            (false, Some(loc)) => {
                self.collided.insert(name.to_string(), loc);
            }
            (false, None) => {
                self.collided.remove(name);
            }
        }
    }

    fn add_window(&mut self, spec: &JobSpec) {
        *self.windows.entry(window_minutes(spec)).or_default() += 1;
    }

    fn remove_window(&mut self, spec: &JobSpec) {
        let window = window_minutes(spec);
        if let Some(n) = self.windows.get_mut(&window) {
            *n -= 1;
            if *n == 0 {
                self.windows.remove(&window);
            }
        }
    }

    /// Files `job` as a solo job from the first minute after `processed`; returns where, and
    /// whether it is in the solo wheel (so counts as scheduled).
    fn put_in(&mut self, job: Job, processed: Minute) -> (Loc, bool) {
        let id = self.free.pop().unwrap_or(self.solos.len() as u32);
        let enabled = job.spec.enabled;
        let filed = enabled
            && file_group(
                &mut self.wheel,
                JobId(id),
                next_minute(&job.expr, processed),
                processed,
            );
        if enabled {
            self.add_window(&job.spec);
        }
        let solo = Solo {
            order: DispatchOrder::of(&job.spec),
            table: Arc::new([job.spec]),
            expr: job.expr,
        };
        match self.solos.get_mut(id as usize) {
            Some(slot) => *slot = Some(solo),
            None => self.solos.push(Some(solo)),
        }
        self.held += 1;
        (Loc::Solo(id), filed)
    }

    /// Takes the job held at `loc` out (it never fires again); returns whether it was scheduled
    /// (a live member of a group in the wheel, or a solo in the solo wheel). Call `place` first.
    fn take_out(
        &mut self,
        schedule: &Schedule,
        jobs: &[Arc<JobSpec>],
        loc: Loc,
        processed: Minute,
    ) -> bool {
        match loc {
            Loc::Base(i) => {
                let Some(job) = schedule.jobs.get(i as usize) else {
                    return false;
                };
                set_bit(&mut self.gone, i);
                self.held -= 1;
                if !job.spec.enabled {
                    return false;
                }
                self.remove_window(&job.spec);
                let Some(rank) = rank_of(jobs, &job.spec) else {
                    debug_assert!(false, "enabled job {} has no rank", job.spec.name);
                    return false;
                };
                set_bit(&mut self.dead, rank);
                self.any_dead = true;
                // Its group is in the wheel exactly when the expression has an instant to come.
                next_minute(&job.expr, processed).is_some()
            }
            Loc::Solo(id) => {
                let Some(solo) = self.solos.get_mut(id as usize).and_then(Option::take) else {
                    return false;
                };
                self.free.push(id);
                self.held -= 1;
                if solo.spec().enabled {
                    self.remove_window(solo.spec());
                }
                self.wheel.remove(JobId(id)).is_some()
            }
        }
    }

    /// Hands out the due solo jobs of minute `minute` (in `self.due`) into `due_solos`, in
    /// dispatch order, and refiles them; returns how many are no longer scheduled.
    fn run_due(
        &mut self,
        minute: Minute,
        slot: DateTime<Utc>,
        mut late: Option<(Minute, &mut Skips)>,
    ) -> usize {
        self.due_solos.clear();
        let mut unscheduled = 0;
        for &(JobId(id), at) in &self.due {
            debug_assert_eq!(at, minute, "a solo job surfaced at the wrong minute");
            let Some(solo) = self.solos.get(id as usize).and_then(Option::as_ref) else {
                debug_assert!(false, "the solo wheel handed out a free id {id}");
                continue;
            };
            let next = next_minute_from(&solo.expr, slot);
            match late.as_mut() {
                None => self.due_solos.push(id),
                Some((now, skips)) => {
                    let spec = solo.spec();
                    match admit(spec.catchup, window_minutes(spec), minute, next, *now) {
                        Ok(()) => self.due_solos.push(id),
                        Err(reason) => skips.add(&spec.name, reason, 1),
                    }
                }
            }
            if !file_group(&mut self.wheel, JobId(id), next, minute) {
                unscheduled += 1;
            }
        }
        let solos = &self.solos;
        let key = |id: &u32| {
            solos[*id as usize]
                .as_ref()
                .map(|s| (s.order, s.spec().name.as_str()))
        };
        self.due_solos.sort_unstable_by(|a, b| key(a).cmp(&key(b)));
        unscheduled
    }
}

/// Where a dispatch goes in its minute's batch: highest priority first, then by name.
///
/// Sorting a million jobs by name means following two pointers per comparison. The key carries the
/// name's first 16 bytes, zero-padded and read big-endian, so comparing keys orders names exactly
/// as comparing the names would, except that equal prefixes tie; only ties fall back to the full
/// names. Jobs are ranked once per schedule (at start-up and on reload), not per minute.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct DispatchOrder {
    priority: Reverse<i32>,
    name_prefix: u128,
}

impl DispatchOrder {
    fn of(spec: &JobSpec) -> DispatchOrder {
        let mut prefix = [0u8; 16];
        let len = spec.name.len().min(prefix.len());
        prefix[..len].copy_from_slice(&spec.name.as_bytes()[..len]);
        DispatchOrder {
            priority: Reverse(spec.priority),
            name_prefix: u128::from_be_bytes(prefix),
        }
    }
}

/// The first minute strictly after minute `after` at which `expr` fires.
fn next_minute(expr: &When, after: Minute) -> Option<Minute> {
    next_minute_from(expr, after.start()?)
}

/// [`next_minute`] given the first instant of minute `after`.
fn next_minute_from(expr: &When, after_start: DateTime<Utc>) -> Option<Minute> {
    // `next_after` of the minute's first second: strictly after the whole minute `after`.
    expr.next_after(after_start).map(Minute::containing)
}

/// How many slots of `expr` from `first` (one) up to `until` there are, counting at most `cap`.
fn slots_until(expr: &When, first: Minute, until: Minute, cap: u64) -> u64 {
    let mut cursor = first;
    let mut counted = 1;
    while counted < cap {
        match next_minute(expr, cursor) {
            Some(next) if next <= until => {
                counted += 1;
                cursor = next;
            }
            _ => break,
        }
    }
    counted
}

/// How many due groups ahead [`Scheduler::run`] asks for the memory it will need: the group
/// records (with their dense expressions) `2 * PREFETCH_AHEAD` ahead, the full expression of a
/// group without a dense copy `PREFETCH_AHEAD` ahead.
const PREFETCH_AHEAD: usize = 8;

/// Hints the CPU to start loading the cache lines of `*value` (no effect on results). The producer
/// uses it too, for the settings of the records it encodes next.
///
/// The due groups of a minute sit at random places among a million; a cron evaluation takes long
/// enough that the next group's record can be loaded meanwhile, instead of the evaluation stalling
/// on it.
#[inline(always)]
#[allow(unsafe_code)]
pub(crate) fn prefetch<T>(value: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let start = value.cast::<i8>();
        for offset in (0..std::mem::size_of::<T>().max(1)).step_by(64) {
            // SAFETY: a prefetch only hints the cache; it reads nothing the program sees and never
            // faults, whatever the address. (It is `unsafe` only for its `sse` target feature,
            // which every x86_64 CPU has.)
            unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(offset)) };
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// Files group `id` at `next`, computed by [`next_minute`] from minute `after`.
fn file_group(wheel: &mut Wheel, id: JobId, next: Option<Minute>, after: Minute) -> bool {
    let Some(at) = next else { return false };
    match wheel.insert(id, at) {
        Ok(()) => true,
        Err(e) => {
            debug_assert!(false, "cron returned a time not after {after}: {e}");
            false
        }
    }
}

/// The ranks of `group`'s jobs, ascending.
fn members_of<'a>(members: &'a [u32], group: &'a Group) -> &'a [u32] {
    if group.len == 1 {
        std::slice::from_ref(&group.first)
    } else {
        &members[group.first as usize..][..group.len as usize]
    }
}

impl Scheduler {
    /// Schedules every enabled job of `schedule` at its next instant after minute `processed`.
    pub fn new(schedule: Schedule, processed: Minute) -> Scheduler {
        let mut enabled: Vec<(DispatchOrder, &Arc<JobSpec>, &Arc<When>)> = schedule
            .jobs
            .iter()
            .filter(|j| j.spec.enabled)
            .map(|j| (DispatchOrder::of(&j.spec), &j.spec, &j.expr))
            .collect();
        enabled.sort_unstable_by(|(a_order, a, _), (b_order, b, _)| {
            a_order.cmp(b_order).then_with(|| a.name.cmp(&b.name))
        });

        // Groups are only ever reinserted after the wheel handed them out: no job table needed.
        let mut wheel = Wheel::append_only(processed);
        let mut jobs = Vec::with_capacity(enabled.len());
        // Groups are numbered in the order of their first member's rank.
        // The same expression in the same zone with the same kind and bounds (an `every` job's
        // anchor is its startAt) fires in the same minutes.
        // Unbounded cron jobs with one expression share its compilation, so they are grouped by
        // it (a pointer: no text hashed or compared); the rest by text, zone and timing. Jobs
        // that fire together but land in two groups are still handed out in rank order.
        #[derive(PartialEq, Eq, Hash)]
        enum GroupKey<'a> {
            Shared(*const When),
            Own(&'a str, Tz, &'a Timing),
        }
        let mut group_of: HashMap<GroupKey<'_>, u32, FastHash> =
            HashMap::with_capacity_and_hasher(enabled.len() / 2, FastHash::default());
        let mut group_ranks: Vec<(&Arc<When>, Vec<u32>)> = Vec::new();
        for (rank, (_, spec, expr)) in (0u32..).zip(&enabled) {
            let key = match spec.timing.as_deref() {
                None => GroupKey::Shared(Arc::as_ptr(expr)),
                Some(timing) => GroupKey::Own(&spec.cron_time, spec.timezone, timing),
            };
            let group = *group_of.entry(key).or_insert_with(|| {
                group_ranks.push((expr, Vec::new()));
                (group_ranks.len() - 1) as u32
            });
            group_ranks[group as usize].1.push(rank);
            jobs.push(Arc::clone(spec));
        }
        drop(group_of);
        let mut groups = Vec::with_capacity(group_ranks.len());
        let mut exprs = Vec::with_capacity(group_ranks.len());
        let mut members = Vec::new();
        for (expr, ranks) in group_ranks {
            let (first, len) = match ranks[..] {
                [rank] => (rank, 1),
                _ => {
                    let first = members.len() as u32;
                    members.extend_from_slice(&ranks);
                    (first, ranks.len() as u32)
                }
            };
            exprs.push(Arc::clone(expr));
            groups.push(Group {
                hot: expr.plain_utc().cloned(),
                first,
                len,
            });
        }
        let mut scheduled = 0;
        for (id, (group, expr)) in (0u32..).zip(groups.iter().zip(&exprs)) {
            if file_group(
                &mut wheel,
                JobId(id),
                next_minute(expr, processed),
                processed,
            ) {
                scheduled += group.len as usize;
            }
        }
        let longest_window = jobs.iter().map(|s| window_minutes(s)).max().unwrap_or(0);
        drop(enabled);
        Scheduler {
            wheel,
            jobs: jobs.into(),
            groups,
            exprs,
            members,
            schedule: Arc::new(schedule),
            edits: None,
            processed,
            scheduled,
            longest_window,
            due_groups: Vec::new(),
            due_jobs: Vec::new(),
            late_at: Vec::new(),
        }
    }

    /// The last minute whose due jobs were handed out.
    pub fn processed(&self) -> Minute {
        self.processed
    }

    /// Number of jobs in the wheel (enabled jobs whose expression has an instant still to come).
    pub fn scheduled(&self) -> usize {
        self.scheduled
    }

    /// When `name` fires next, if it is scheduled. A scan of the jobs: for inspection and tests,
    /// not for the tick path.
    pub fn next_run(&self, name: &str) -> Option<Minute> {
        let rank = match &self.edits {
            None => self.jobs.iter().position(|spec| spec.name == name)? as u32,
            Some(edits) => match edits.find(&self.schedule, name)? {
                Loc::Solo(id) => return edits.wheel.scheduled_at(JobId(id)),
                Loc::Base(i) => {
                    let spec = &self.schedule.jobs.get(i as usize)?.spec;
                    if !spec.enabled {
                        return None;
                    }
                    rank_of(&self.jobs, spec)?
                }
            },
        };
        let group = self
            .groups
            .iter()
            .position(|g| members_of(&self.members, g).binary_search(&rank).is_ok())?;
        self.wheel.scheduled_at(JobId(group as u32))
    }

    /// The next `limit` runs after [`processed`](Self::processed), in time order (within a
    /// minute, dispatch order). Read from the wheel's earliest slots
    /// ([`Wheel::visit_in_order`]), so it costs the jobs of those slots, not the schedule's: the
    /// status page asks once a minute.
    pub fn upcoming(&self, limit: usize) -> Vec<(Minute, Arc<JobSpec>)> {
        let dead: &[u64] = match &self.edits {
            Some(edits) if edits.any_dead => &edits.dead,
            _ => &[],
        };
        let mut runs: Vec<(Minute, u32)> = Vec::new();
        self.wheel.visit_in_order(|batch| {
            for &(id, at) in batch {
                // A group's members are in rank order: beyond its first `limit` none can make it.
                let group = &self.groups[id.0 as usize];
                runs.extend(
                    members_of(&self.members, group)
                        .iter()
                        .filter(|&&r| !bit(dead, r))
                        .take(limit)
                        .map(|&r| (at, r)),
                );
            }
            // Later batches are later in time: once `limit` runs are found, they are the first.
            runs.len() < limit
        });
        runs.sort_unstable();
        runs.truncate(limit);
        let mut upcoming: Vec<(Minute, Arc<JobSpec>)> = runs
            .into_iter()
            .map(|(at, rank)| (at, Arc::clone(&self.jobs[rank as usize])))
            .collect();
        let Some(edits) = &self.edits else {
            return upcoming;
        };
        let before = upcoming.len();
        edits.wheel.visit_in_order(|batch| {
            upcoming.extend(batch.iter().filter_map(|&(id, at)| {
                let solo = edits.solos.get(id.0 as usize)?.as_ref()?;
                Some((at, Arc::clone(solo.spec())))
            }));
            upcoming.len() - before < limit
        });
        upcoming.sort_unstable_by(|(a_at, a), (b_at, b)| {
            (a_at, DispatchOrder::of(a), &a.name).cmp(&(b_at, DispatchOrder::of(b), &b.name))
        });
        upcoming.truncate(limit);
        upcoming
    }

    /// The earliest minute at which something may be due: a lower bound, never later than the
    /// first minute with a due job. (A group whose every job an edit took out still has its
    /// entry, so after edits it may name a minute at which nothing is due.)
    pub fn next_due(&self) -> Option<Minute> {
        let solos = self.edits.as_ref().and_then(|e| e.wheel.next_due());
        match (self.wheel.next_due(), solos) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Puts `job` in force from the first minute after [`processed`](Self::processed), in place of
    /// the job of the same `jobName` if there is one: a changed `cronTime`/`timezone` reschedules
    /// it, a payload-only change keeps its next run, the same settings change nothing. A disabled
    /// job is held (see [`job`](Self::job)) but never fires. No rebuild: O(1) plus one cron
    /// evaluation, after a first edit that indexes the jobs by name (O(jobs), once).
    ///
    /// Afterwards the scheduler hands out exactly what `Scheduler::new` of the jobs in force at
    /// the same `processed` would.
    pub fn upsert(&mut self, job: Job) -> Edited {
        let processed = self.processed;
        let edits = self
            .edits
            .get_or_insert_with(|| Box::new(Edits::build(&self.schedule, &self.jobs, processed)));
        let old = edits.find(&self.schedule, &job.spec.name);
        if let Some(loc) = old {
            if edits
                .spec(&self.schedule, loc)
                .is_some_and(|spec| **spec == *job.spec)
            {
                return Edited::Unchanged;
            }
        }
        let name = job.spec.name.clone();
        // An `at` job whose minute has passed: its slot was never handed out if the job is new or
        // its instant moved; the catch-up rule decides at the next minute.
        if let Some(at) = job.spec.at().filter(|_| job.spec.enabled) {
            let slot = Minute::containing(at);
            let old_at = old
                .and_then(|loc| edits.spec(&self.schedule, loc))
                .and_then(|spec| spec.at());
            if slot <= processed
                && old_at != Some(at)
                && job
                    .expr
                    .next_after(slot.start().unwrap_or(at) - chrono::Duration::seconds(1))
                    .is_some()
            {
                self.late_at.push((Arc::clone(&job.spec), slot));
            }
        }
        let (loc, filed) = edits.put_in(job, processed);
        edits.place(&self.schedule, &name, Some(loc));
        self.scheduled += usize::from(filed);
        edits.count += 1;
        match old {
            Some(old) => {
                if edits.take_out(&self.schedule, &self.jobs, old, processed) {
                    self.scheduled -= 1;
                }
                Edited::Changed
            }
            None => Edited::Added,
        }
    }

    /// Takes the job named `name` out: it never fires again. Returns whether there was one.
    pub fn remove(&mut self, name: &str) -> bool {
        let processed = self.processed;
        let edits = self
            .edits
            .get_or_insert_with(|| Box::new(Edits::build(&self.schedule, &self.jobs, processed)));
        let Some(loc) = edits.find(&self.schedule, name) else {
            return false;
        };
        edits.place(&self.schedule, name, None);
        if edits.take_out(&self.schedule, &self.jobs, loc, processed) {
            self.scheduled -= 1;
        }
        edits.count += 1;
        true
    }

    /// The settings in force of the job named `name`, enabled or not. A scan of the jobs until the
    /// first edit, a look-up in the name index after it.
    pub fn job(&self, name: &str) -> Option<&Arc<JobSpec>> {
        match &self.edits {
            None => self
                .schedule
                .jobs
                .iter()
                .find(|j| j.spec.name == name)
                .map(|j| &j.spec),
            Some(edits) => edits.spec(&self.schedule, edits.find(&self.schedule, name)?),
        }
    }

    /// Number of jobs held, enabled or not.
    pub fn len(&self) -> usize {
        self.edits
            .as_ref()
            .map_or(self.schedule.jobs.len(), |e| e.held)
    }

    /// Whether no job is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every job in force, enabled or not, with its compiled expression, in no particular order:
    /// the schedule's jobs until the first edit, then the schedule's jobs no edit took out, then
    /// the jobs edits put in.
    pub fn jobs(&self) -> impl Iterator<Item = (&Arc<JobSpec>, &Arc<When>)> + '_ {
        let edits = self.edits.as_deref();
        let base = (0u32..)
            .zip(&self.schedule.jobs)
            .filter(move |(i, _)| edits.is_none_or(|e| !bit(&e.gone, *i)))
            .map(|(_, j)| (&j.spec, &j.expr));
        let solos = edits
            .into_iter()
            .flat_map(|e| e.solos.iter().flatten())
            .map(|s| (s.spec(), &s.expr));
        base.chain(solos)
    }

    /// The jobs in force as a schedule (what a reload diffs against).
    fn in_force(&self) -> Schedule {
        Schedule {
            jobs: self
                .jobs()
                .map(|(spec, expr)| Job {
                    spec: Arc::clone(spec),
                    expr: Arc::clone(expr),
                })
                .collect(),
        }
    }

    /// How many edits ([`upsert`](Self::upsert) and [`remove`](Self::remove)) changed the jobs in
    /// force since this state was built: with the [`schedule`](Self::schedule) pointer, it tells
    /// a reader whether the jobs it looked at are still the ones in force.
    pub fn edit_count(&self) -> u64 {
        self.edits.as_ref().map_or(0, |e| e.count)
    }

    /// Replaces the running schedule with `new`: added jobs are scheduled after
    /// [`processed`](Self::processed), removed ones never fire again, a changed
    /// `cronTime`/`timezone` reschedules, a payload-only change keeps the next run. Returns the
    /// difference by `jobName`, for the log.
    ///
    /// Every job's next run is its expression's first instant after `processed`, so rebuilding the
    /// state from `new` at the same `processed` applies exactly that difference.
    pub fn apply(&mut self, new: Schedule) -> Diff {
        let rebuilt = match &self.edits {
            None => Rebuilt::against(&self.schedule, new, self.processed),
            Some(_) => Rebuilt::against(&self.in_force(), new, self.processed),
        };
        let diff = rebuilt.diff.clone();
        rebuilt.install(self);
        diff
    }

    /// The schedule this state was built from. After an edit (a non-zero
    /// [`edit_count`](Self::edit_count)) it is no longer the jobs in force: read those with [`jobs`](Self::jobs) and
    /// [`job`](Self::job). A reload ([`Rebuilt::against`]) must be compiled against the jobs in
    /// force, so only a scheduler that is never edited (the file mode's) may compile one against
    /// this schedule; [`apply`](Self::apply) does it right either way.
    pub fn schedule(&self) -> &Arc<Schedule> {
        &self.schedule
    }

    /// Processes minute `minute` (which must be `processed + 1`): appends its due jobs to `out`,
    /// highest priority first, then by name, and reinserts each due group at its next instant.
    pub fn run_minute(&mut self, minute: Minute, out: &mut Vec<Dispatch>) {
        self.run(minute, None, out);
    }

    /// [`run_minute`](Self::run_minute) for a minute handed out at `now`: when `minute` is before
    /// `now` its slots are missed, and each job's catch-up rule and window decide (see
    /// [`catchup`](super::catchup)); what they leave out is counted in `skips`.
    pub fn run_minute_at(
        &mut self,
        minute: Minute,
        now: Minute,
        out: &mut Vec<Dispatch>,
        skips: &mut Skips,
    ) {
        if minute >= now {
            self.run(minute, None, out);
        } else {
            self.run(minute, Some((now, skips)), out);
        }
    }

    fn run(&mut self, minute: Minute, late: Option<(Minute, &mut Skips)>, out: &mut Vec<Dispatch>) {
        debug_assert_eq!(
            minute,
            self.processed.next(),
            "minutes are processed in order"
        );
        self.due_groups.clear();
        self.wheel.advance(minute, &mut self.due_groups);
        if let Some(edits) = self.edits.as_deref_mut() {
            edits.due.clear();
            edits.wheel.advance(minute, &mut edits.due);
        }
        self.processed = minute;
        let Some(slot) = minute.start() else { return };
        // By id, which is the order of each group's first rank: groups of one job (all of them,
        // with no two expressions alike) then yield their ranks in order, and the records are
        // read in address order.
        self.due_groups.sort_unstable_by_key(|&(id, _)| id);
        self.due_jobs.clear();
        let mut late = late;
        let due_groups = &self.due_groups;
        // Ranks an edit took out: handed out by their group, but not dispatched.
        let dead: &[u64] = match self.edits.as_deref() {
            Some(edits) if edits.any_dead => &edits.dead,
            _ => &[],
        };
        // The first groups' records and dense expressions (the loop below asks ahead for the
        // rest; a small minute is all head). What a record leads to is asked for only in the
        // loop, once the record has arrived: reading it here would wait for it.
        let (groups, exprs) = (&self.groups, &self.exprs);
        let fetch_records = |id: JobId| prefetch(&groups[id.0 as usize]);
        let fetch_behind = |id: JobId| {
            // Only a group without a dense copy reads its full expression.
            if groups[id.0 as usize].hot.is_none() {
                prefetch(Arc::as_ptr(&exprs[id.0 as usize]));
            }
        };
        for &(id, _) in due_groups.iter().take(2 * PREFETCH_AHEAD) {
            fetch_records(id);
        }
        // Whether a group of several jobs was due: only then are the ranks not in order already.
        let mut shared = false;
        for (i, &(id, at)) in due_groups.iter().enumerate() {
            debug_assert_eq!(at, minute, "a group surfaced at the wrong minute");
            if let Some(&(ahead, _)) = due_groups.get(i + 2 * PREFETCH_AHEAD) {
                fetch_records(ahead);
            }
            if let Some(&(ahead, _)) = due_groups.get(i + PREFETCH_AHEAD) {
                fetch_behind(ahead);
            }
            let group = &groups[id.0 as usize];
            let members = members_of(&self.members, group);
            shared |= group.len > 1;
            let next = match &group.hot {
                Some(cron) => cron.next_after(slot).map(Minute::containing),
                None => next_minute_from(&exprs[id.0 as usize], slot),
            };
            match late.as_mut() {
                None => self.due_jobs.extend_from_slice(members),
                Some((now, skips)) => {
                    for &rank in members {
                        if bit(dead, rank) {
                            continue;
                        }
                        let spec = &self.jobs[rank as usize];
                        match admit(spec.catchup, window_minutes(spec), minute, next, *now) {
                            Ok(()) => self.due_jobs.push(rank),
                            Err(reason) => skips.add(&spec.name, reason, 1),
                        }
                    }
                }
            }
            if !file_group(&mut self.wheel, id, next, minute) {
                self.scheduled -= live_count(members, dead);
            }
        }
        if shared && self.due_groups.len() > 1 {
            // Each group's members are ascending runs; merge them. (Groups of one job, taken in
            // id order, hand out their ranks in order.) Ranks are distinct: stability is moot.
            self.due_jobs.sort_unstable();
        }
        if !dead.is_empty() {
            self.due_jobs.retain(|&rank| !bit(dead, rank));
        }
        debug_assert!(self.due_jobs.is_sorted(), "ranks out of dispatch order");
        let jobs = &self.jobs;
        let base = |rank: u32| Dispatch {
            // Ranks index `jobs` (see `Scheduler::new`).
            spec: JobRef {
                table: Arc::clone(jobs),
                index: rank,
            },
            scheduled_at: slot,
            lease: None,
        };
        let edits = match self.edits.as_deref_mut() {
            Some(edits) if !edits.due.is_empty() => edits,
            _ => {
                out.extend(self.due_jobs.iter().map(|&rank| base(rank)));
                return;
            }
        };
        self.scheduled -= edits.run_due(minute, slot, late);
        // Merge the due solo jobs (in dispatch order) into the ranks.
        let solo = |id: u32| edits.solos[id as usize].as_ref();
        let mut solos = edits.due_solos.iter().filter_map(|&id| solo(id)).peekable();
        for &rank in &self.due_jobs {
            let spec = &jobs[rank as usize];
            let key = (DispatchOrder::of(spec), spec.name.as_str());
            while let Some(s) = solos.next_if(|s| (s.order, s.spec().name.as_str()) < key) {
                out.push(Dispatch {
                    spec: JobRef {
                        table: Arc::clone(&s.table),
                        index: 0,
                    },
                    scheduled_at: slot,
                    lease: None,
                });
            }
            out.push(base(rank));
        }
        out.extend(solos.map(|s| Dispatch {
            spec: JobRef {
                table: Arc::clone(&s.table),
                index: 0,
            },
            scheduled_at: slot,
            lease: None,
        }));
    }

    /// The longest `catchupWindow` of the scheduled jobs, in minutes: slots older than this are
    /// skipped by every job's rule, so [`skip_until`](Self::skip_until) may jump over them.
    pub fn longest_window(&self) -> i64 {
        match &self.edits {
            None => self.longest_window,
            Some(edits) => edits.windows.keys().next_back().copied().unwrap_or(0),
        }
    }

    /// Hands out the late slots of `at` jobs added after their minute (see `late_at`), each once,
    /// with its own `scheduledAt`, if the job is still in force with those settings and its
    /// catch-up rule admits the slot at `now`; what the rule leaves out is counted in `skips`.
    /// Returns how many were appended to `out`, by slot, for the lease's late count.
    pub fn take_late(
        &mut self,
        now: Minute,
        out: &mut Vec<Dispatch>,
        skips: &mut Skips,
    ) -> Vec<(Minute, u64)> {
        let mut slots = Vec::new();
        for (spec, slot) in std::mem::take(&mut self.late_at) {
            let in_force = self.job(&spec.name).is_some_and(|s| Arc::ptr_eq(s, &spec));
            let Some(start) = slot.start().filter(|_| in_force) else {
                continue;
            };
            match admit(spec.catchup, window_minutes(&spec), slot, None, now) {
                Ok(()) => {
                    out.push(Dispatch {
                        spec: JobRef::from(spec),
                        scheduled_at: start,
                        lease: None,
                    });
                    slots.push((slot, 1));
                }
                Err(reason) => skips.add(&spec.name, reason, 1),
            }
        }
        slots
    }

    /// Skips every slot up to and including `until` without dispatching, counting them per job in
    /// `skips` as outside the window (counting stops at `cap` slots per job, so a month-long
    /// suspension of an every-minute job doesn't cost 43 200 cron evaluations just to count them).
    pub fn skip_until(&mut self, until: Minute, cap: u64, skips: &mut Skips) {
        if until <= self.processed {
            return;
        }
        self.due_groups.clear();
        self.wheel.advance(until, &mut self.due_groups);
        self.processed = until;
        let dead: &[u64] = match self.edits.as_deref() {
            Some(edits) if edits.any_dead => &edits.dead,
            _ => &[],
        };
        for &(id, at) in &self.due_groups {
            let group = &self.groups[id.0 as usize];
            let expr = &self.exprs[id.0 as usize];
            let counted = slots_until(expr, at, until, cap);
            let members = members_of(&self.members, group);
            for &rank in members.iter().filter(|&&r| !bit(dead, r)) {
                skips.add(&self.jobs[rank as usize].name, SkipReason::Window, counted);
            }
            let next = next_minute(expr, until);
            if !file_group(&mut self.wheel, id, next, until) {
                self.scheduled -= live_count(members, dead);
            }
        }
        let Some(edits) = self.edits.as_deref_mut() else {
            return;
        };
        edits.due.clear();
        edits.wheel.advance(until, &mut edits.due);
        for &(JobId(id), at) in &edits.due {
            let Some(solo) = edits.solos.get(id as usize).and_then(Option::as_ref) else {
                continue;
            };
            let counted = slots_until(&solo.expr, at, until, cap);
            skips.add(&solo.spec().name, SkipReason::Window, counted);
            let next = next_minute(&solo.expr, until);
            if !file_group(&mut edits.wheel, JobId(id), next, until) {
                self.scheduled -= 1;
            }
        }
    }
}

/// A new version of a schedule compiled against the running one, off the tick loop: the diff, and
/// a new [`Scheduler`] unless only disabled jobs or the formatting changed. Installing it is cheap,
/// so the loop swaps it in between two minutes.
#[derive(Debug)]
pub struct Rebuilt {
    /// What changed, by `jobName`.
    pub diff: Diff,
    /// The new schedule, compiled at `processed`; `None` when the diff is empty.
    scheduler: Option<Scheduler>,
    schedule: Arc<Schedule>,
}

impl Rebuilt {
    /// Compiles `new` at minute `processed`, as a successor of `old`.
    pub fn against(old: &Schedule, new: Schedule, processed: Minute) -> Rebuilt {
        let diff = Diff::between(old, &new);
        if diff.is_empty() {
            Rebuilt {
                diff,
                scheduler: None,
                schedule: Arc::new(new),
            }
        } else {
            let scheduler = Scheduler::new(new, processed);
            Rebuilt {
                diff,
                schedule: Arc::clone(&scheduler.schedule),
                scheduler: Some(scheduler),
            }
        }
    }

    /// Replaces `running`'s state with this one and returns the state replaced (to be dropped off
    /// the loop: freeing a million jobs takes a while). `running` may have processed minutes since
    /// this was compiled: they are skipped here, as they were handed out by `running` already.
    pub fn install(self, running: &mut Scheduler) -> Option<Scheduler> {
        match self.scheduler {
            None if running.edits.is_some() => {
                // The jobs in force, which the diff was taken against, are the new schedule
                // already; the edited state holds them (its base is another schedule).
                None
            }
            None => {
                running.schedule = self.schedule;
                None
            }
            Some(mut next) => {
                if next.processed < running.processed {
                    next.skip_until(running.processed, 1, &mut Skips::default());
                }
                // `at` jobs the reload adds (or moves) after their minute: handed out late.
                let processed = next.processed;
                let late: Vec<(Arc<JobSpec>, Minute)> = self
                    .diff
                    .added
                    .iter()
                    .chain(&self.diff.rescheduled)
                    .filter_map(|name| {
                        let spec = next.job(name)?;
                        let slot = Minute::containing(spec.at()?);
                        (spec.enabled && slot <= processed).then(|| (Arc::clone(spec), slot))
                    })
                    .collect();
                next.late_at.extend(late);
                next.late_at.append(&mut running.late_at);
                Some(std::mem::replace(running, next))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;
    use crate::schedule::{parse, LoadOptions};

    fn spec(priority: i32, name: &str) -> JobSpec {
        JobSpec {
            name: name.to_string(),
            priority,
            job: "run".into(),
            cron_time: "* * * * *".into(),
            timezone: chrono_tz::UTC,
            topic: None,
            enabled: true,
            catchup: crate::schedule::Catchup::All,
            catchup_window: crate::schedule::DEFAULT_CATCHUP_WINDOW,
            shard: 0,
            timeout: None,
            max_attempts: None,
            overlap: None,
            jitter: None,
            timing: None,
            deadline: None,
        }
    }

    /// Names longer than the key's 16-byte prefix, sharing it, and names that are prefixes of others:
    /// the batch still comes out by priority, then by the full name.
    #[test]
    fn a_group_record_with_its_dense_expression_is_32_bytes() {
        // What a due group's evaluation reads; the module's layout notes and docs/performance.md assume it.
        assert_eq!(std::mem::size_of::<saffron::Cron>(), 24);
        assert_eq!(std::mem::size_of::<Group>(), 32);
    }

    #[test]
    fn a_minute_is_dispatched_by_priority_then_full_name() {
        let json = r#"{"jobs": [
          {"jobName":"report-region-eu-west-2","priority":1,"job":"a","cronTime":"0 12 * * *"},
          {"jobName":"report-region-eu-west-10","priority":1,"job":"b","cronTime":"0 12 * * *"},
          {"jobName":"report-region-eu","priority":1,"job":"c","cronTime":"0 12 * * *"},
          {"jobName":"report-region-eu-west","priority":1,"job":"d","cronTime":"0 12 * * *"},
          {"jobName":"zz-urgent","priority":7,"job":"e","cronTime":"0 12 * * *"},
          {"jobName":"report-region-eu-west-1","priority":1,"job":"f","cronTime":"0 12 * * *"}
        ]}"#;
        let schedule = parse(json.as_bytes(), Path::new("s.json"), LoadOptions::default()).unwrap();
        let noon = Minute::containing(
            chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 3, 2, 12, 0, 0).unwrap(),
        );
        let mut scheduler = Scheduler::new(schedule, Minute(noon.0 - 1));
        let mut out = Vec::new();
        scheduler.run_minute(noon, &mut out);
        let names: Vec<&str> = out.iter().map(|d| d.spec.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "zz-urgent",
                "report-region-eu",
                "report-region-eu-west",
                "report-region-eu-west-1",
                "report-region-eu-west-10",
                "report-region-eu-west-2",
            ]
        );
    }

    /// A reload compiled off the loop at minute P and installed after the running state handed out
    /// P+1..P+3: those minutes are not handed out again, and the new version runs from P+4 on.
    #[test]
    fn a_reload_installed_minutes_after_it_was_compiled_neither_refires_nor_skips() {
        let v1 = r#"{"jobs":[{"jobName":"a","job":"x","cronTime":"* * * * *"}]}"#;
        let v2 = r#"{"jobs":[{"jobName":"a","job":"x","cronTime":"* * * * *"},
                            {"jobName":"b","job":"y","cronTime":"*/2 * * * *"}]}"#;
        let load = |json: &str| {
            parse(json.as_bytes(), Path::new("s.json"), LoadOptions::default()).unwrap()
        };
        let start = Minute(29_000_000); // even: `b` fires on even minutes
        let mut running = Scheduler::new(load(v1), start);
        let rebuilt = Rebuilt::against(running.schedule(), load(v2), start);
        assert_eq!(rebuilt.diff.added.len(), 1);
        let mut out = Vec::new();
        for m in 1..=3 {
            running.run_minute(Minute(start.0 + m), &mut out);
        }
        assert!(
            rebuilt.install(&mut running).is_some(),
            "the old state is handed back"
        );
        assert_eq!(running.processed(), Minute(start.0 + 3));
        out.clear();
        for m in 4..=6 {
            running.run_minute(Minute(start.0 + m), &mut out);
        }
        let got: Vec<(String, i64)> = out
            .iter()
            .map(|d| {
                (
                    d.spec.name.clone(),
                    Minute::containing(d.scheduled_at).0 - start.0,
                )
            })
            .collect();
        let want: Vec<(String, i64)> = [("a", 4), ("b", 4), ("a", 5), ("a", 6), ("b", 6)]
            .iter()
            .map(|(n, m)| (n.to_string(), *m))
            .collect();
        assert_eq!(got, want);

        // An unchanged version swaps only the schedule and keeps the state.
        let same = Rebuilt::against(running.schedule(), load(v2), running.processed());
        assert!(same.diff.is_empty());
        assert!(same.install(&mut running).is_none());
        assert_eq!(running.next_run("b"), Some(Minute(start.0 + 8)));
    }

    /// A dispatch names its job in the job table of the version that fired it: after a reload
    /// that changed the job, it still reads (and keeps alive) the settings it fired with.
    #[test]
    fn a_dispatch_reads_the_settings_it_fired_with_after_a_reload() {
        let version = |payload: &str| {
            let json = format!(
                r#"{{"jobs": [{{"jobName":"a","job":"{payload}","cronTime":"* * * * *"}}]}}"#
            );
            parse(json.as_bytes(), Path::new("s.json"), LoadOptions::default()).unwrap()
        };
        let start = Minute(29_000_000);
        let mut scheduler = Scheduler::new(version("v1"), start);
        let mut before = Vec::new();
        scheduler.run_minute(Minute(start.0 + 1), &mut before);
        scheduler.apply(version("v2"));
        let mut after = Vec::new();
        scheduler.run_minute(Minute(start.0 + 2), &mut after);
        let fired = |out: &[Dispatch]| {
            out.iter()
                .map(|d| (d.spec.name.clone(), d.spec.job.clone(), d.dispatch_id()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            fired(&before),
            [("a".into(), "v1".into(), "a@2025-02-19T21:21:00Z".into())]
        );
        assert_eq!(
            fired(&after),
            [("a".into(), "v2".into(), "a@2025-02-19T21:22:00Z".into())]
        );
        assert_ne!(before[0].spec, after[0].spec, "compared as settings");
        assert_eq!(
            before[0].spec,
            JobRef::from(Arc::clone(before[0].spec.arc()))
        );
    }

    /// The name index is re-keyed on reload, so replaced settings are freed, not pinned by it.
    #[test]
    fn a_reload_does_not_keep_replaced_settings_alive() {
        let version = |payload: &str, cron: &str| {
            let json =
                format!(r#"{{"jobs": [{{"jobName":"a","job":"{payload}","cronTime":"{cron}"}}]}}"#);
            parse(json.as_bytes(), Path::new("s.json"), LoadOptions::default()).unwrap()
        };
        let first = version("v1", "*/5 * * * *");
        let v1 = Arc::clone(&first.jobs[0].spec);
        let mut scheduler = Scheduler::new(first, Minute(29_000_000));
        let second = version("v2", "*/5 * * * *");
        let v2 = Arc::clone(&second.jobs[0].spec);
        scheduler.apply(second);
        assert_eq!(
            Arc::strong_count(&v1),
            1,
            "payload change: v1 still referenced"
        );
        scheduler.apply(version("v2", "*/7 * * * *"));
        assert_eq!(Arc::strong_count(&v2), 1, "reschedule: v2 still referenced");
        assert!(scheduler.next_run("a").is_some());
    }

    /// One job of a generated schedule: (name, priority, cron pool index, zone index, enabled).
    type JobRow = (String, i32, usize, usize, bool);

    /// The expressions and zones a [`JobRow`] indexes.
    const CRONS: [&str; 8] = [
        "* * * * *",
        "*/7 * * * *",
        "0 * * * *",
        "30 * * * *",
        "*/15 * * * *",
        "5,10 * * * *",
        "0 13 * * *",
        "59 23 31 12 *",
    ];
    const ZONES: [&str; 2] = ["UTC", "Asia/Kolkata"];

    /// A schedule file with these jobs.
    fn schedule_of(jobs: &[JobRow]) -> Schedule {
        let entries: Vec<String> = jobs
            .iter()
            .map(|(name, priority, cron, zone, enabled)| {
                format!(
                    r#"{{"jobName":"{name}","priority":{priority},"job":"run {name}","cronTime":"{}","timezone":"{}","enabled":{enabled}}}"#,
                    CRONS[*cron], ZONES[*zone]
                )
            })
            .collect();
        let json = format!(r#"{{"jobs":[{}]}}"#, entries.join(","));
        parse(json.as_bytes(), Path::new("s.json"), LoadOptions::default()).unwrap()
    }

    /// The oracle: every enabled job on its own, its instants walked with `next_after` from `after`;
    /// each minute's jobs sorted by (priority descending, name). No groups, no wheel, no ranks.
    fn expected_minutes(
        schedule: &Schedule,
        after: Minute,
        until: Minute,
    ) -> HashMap<i64, Vec<(i32, String)>> {
        let mut minutes: HashMap<i64, Vec<(i32, String)>> = HashMap::new();
        for job in schedule.jobs.iter().filter(|j| j.spec.enabled) {
            let mut cursor = after.start().unwrap();
            while let Some(next) = job.expr.next_after(cursor) {
                if Minute::containing(next) > until {
                    break;
                }
                minutes
                    .entry(Minute::containing(next).0)
                    .or_default()
                    .push((job.spec.priority, job.spec.name.clone()));
                cursor = next;
            }
        }
        for jobs in minutes.values_mut() {
            jobs.sort_by(|a, b| (Reverse(a.0), &a.1).cmp(&(Reverse(b.0), &b.1)));
        }
        minutes
    }

    #[derive(Debug, Clone, Copy)]
    enum KindRow {
        /// Seconds after the test's start.
        At(i64),
        /// Minutes.
        Every(u32),
        /// Index in `CRONS`.
        Cron(usize),
    }

    /// A job of any kind with optional bounds (seconds after the test's start, `end` after
    /// `start`).
    #[derive(Debug, Clone, Copy)]
    struct KindJob {
        kind: KindRow,
        start: Option<i64>,
        end: Option<i64>,
    }

    fn kind_row() -> impl Strategy<Value = KindJob> {
        let kind = prop_oneof![
            (-600i64..15_000).prop_map(KindRow::At),
            (1u32..120).prop_map(KindRow::Every),
            (0usize..CRONS.len()).prop_map(KindRow::Cron),
        ];
        (
            kind,
            proptest::option::of(-3_000i64..14_000),
            proptest::option::of(1i64..14_000),
        )
            .prop_map(|(kind, start, len)| KindJob {
                kind,
                start,
                end: len.map(|l| start.unwrap_or(0) + l),
            })
    }

    fn job_list() -> impl Strategy<Value = Vec<JobRow>> {
        prop::collection::btree_map(
            "[ab]{1,3}|report-region-eu-west-[0-9]{1,2}",
            (-1i32..2, 0usize..8, 0usize..2, prop::bool::weighted(0.9)),
            0..24,
        )
        .prop_map(|jobs| {
            jobs.into_iter()
                .map(|(name, (priority, cron, zone, enabled))| {
                    (name, priority, cron, zone, enabled)
                })
                .collect()
        })
    }

    /// Two schedules sharing some names (kept, changed, or gone) and adding others.
    fn reload_pair() -> impl Strategy<Value = (Vec<JobRow>, Vec<JobRow>)> {
        (
            job_list(),
            job_list(),
            prop::collection::vec((0u8..4, -1i32..2, 0usize..8), 24),
        )
            .prop_map(|(first, extra, edits)| {
                let mut second: Vec<_> = Vec::new();
                for (job, (edit, priority, cron)) in first.iter().zip(edits) {
                    match edit {
                        0 => second.push(job.clone()),
                        1 => second.push((job.0.clone(), priority, job.2, job.3, job.4)),
                        2 => second.push((job.0.clone(), job.1, cron, job.3, job.4)),
                        _ => {}
                    }
                }
                for job in extra {
                    if !second.iter().any(|j| j.0 == job.0) {
                        second.push(job);
                    }
                }
                (first, second)
            })
    }

    /// A job of the edit tests: a generated row, then its payload version, catch-up rule and
    /// window (indices).
    type EditRow = (JobRow, u8, u8, u8);

    /// A schedule with these jobs.
    fn edit_schedule<'a>(rows: impl IntoIterator<Item = &'a EditRow>) -> Schedule {
        const RULES: [&str; 3] = ["all", "latest", "none"];
        const WINDOWS: [&str; 3] = ["5m", "1h", "3h"];
        let entries: Vec<String> = rows
            .into_iter()
            .map(|((name, priority, cron, zone, enabled), payload, rule, window)| {
                format!(
                    r#"{{"jobName":"{name}","priority":{priority},"job":"run {name} v{payload}","cronTime":"{}","timezone":"{}","enabled":{enabled},"catchup":"{}","catchupWindow":"{}"}}"#,
                    CRONS[*cron], ZONES[*zone], RULES[*rule as usize], WINDOWS[*window as usize]
                )
            })
            .collect();
        let json = format!(r#"{{"jobs":[{}]}}"#, entries.join(","));
        parse(json.as_bytes(), Path::new("s.json"), LoadOptions::default()).unwrap()
    }

    /// The one job of `row`.
    fn jobs_of(entries: &str) -> Vec<Job> {
        let json = format!(r#"{{"jobs":[{entries}]}}"#);
        parse(json.as_bytes(), Path::new("s.json"), LoadOptions::default())
            .unwrap()
            .jobs
    }

    /// An `at` job added after its minute was processed is handed out once, late, with its own
    /// slot, when its catch-up rule admits it; not when the rule refuses, nor once it is removed,
    /// nor again when the same job is upserted unchanged.
    #[test]
    fn an_at_job_added_after_its_minute_is_handed_out_late_once_under_its_catch_up_rule() {
        // 2027-03-01T13:05Z processed; the jobs' instant 13:05:30 lies in that minute.
        let processed = Minute(30_064_320 + 13 * 60 + 5);
        let now = processed.next();
        let mut scheduler = Scheduler::new(Schedule::default(), processed);
        let mut jobs = jobs_of(
            r#"{"jobName":"late","job":"x","at":"2027-03-01T13:05:30Z"},
               {"jobName":"never","job":"x","at":"2027-03-01T13:05:30Z","catchup":"none"},
               {"jobName":"gone","job":"x","at":"2027-03-01T13:05:30Z"},
               {"jobName":"future","job":"x","at":"2027-03-01T13:07:00Z"}"#,
        )
        .into_iter();
        let late = jobs.next().unwrap();
        assert_eq!(scheduler.upsert(late.clone()), Edited::Added);
        assert_eq!(scheduler.upsert(late), Edited::Unchanged);
        for job in jobs {
            scheduler.upsert(job);
        }
        assert!(scheduler.remove("gone"));
        let (mut out, mut skips) = (Vec::new(), Skips::default());
        let slots = scheduler.take_late(now, &mut out, &mut skips);
        let sent: Vec<(String, DateTime<Utc>)> = out
            .iter()
            .map(|d| (d.spec.name.clone(), d.scheduled_at))
            .collect();
        assert_eq!(sent, [("late".to_string(), processed.start().unwrap())]);
        assert_eq!(slots, [(processed, 1)]);
        assert_eq!((skips.rule, skips.window), (1, 0));
        // Handed out once; the future one fires in its own minute like any slot.
        out.clear();
        assert!(scheduler.take_late(now, &mut out, &mut skips).is_empty());
        scheduler.run_minute(now, &mut out);
        scheduler.run_minute(now.next(), &mut out);
        let names: Vec<&str> = out.iter().map(|d| d.spec.name.as_str()).collect();
        assert_eq!(names, ["future"]);
    }

    /// A reload that adds an `at` job after its minute hands its slot out late, like an edit.
    #[test]
    fn a_reload_adding_an_at_job_after_its_minute_hands_it_out_late() {
        let processed = Minute(30_064_320 + 13 * 60 + 5);
        let mut scheduler = Scheduler::new(
            Schedule {
                jobs: jobs_of(r#"{"jobName":"a","job":"x","cronTime":"0 0 1 1 *"}"#),
            },
            processed,
        );
        scheduler.apply(Schedule {
            jobs: jobs_of(
                r#"{"jobName":"a","job":"x","cronTime":"0 0 1 1 *"},
                   {"jobName":"b","job":"x","at":"2027-03-01T13:04:10Z"}"#,
            ),
        });
        let (mut out, mut skips) = (Vec::new(), Skips::default());
        let slots = scheduler.take_late(processed.next(), &mut out, &mut skips);
        assert_eq!(slots, [(Minute(processed.0 - 1), 1)]);
        assert_eq!(out[0].spec.name, "b");
        assert_eq!(
            out[0].scheduled_at,
            Minute(processed.0 - 1).start().unwrap()
        );
    }

    fn edit_job(row: &EditRow) -> Job {
        edit_schedule([row]).jobs.remove(0)
    }

    fn row(name: &str, priority: i32, cron: usize, enabled: bool, payload: u8) -> EditRow {
        (
            (name.to_string(), priority, cron, 0, enabled),
            payload,
            0,
            1,
        )
    }

    /// (minute offset from `start`, name, payload) of each dispatch.
    fn fired(out: &[Dispatch], start: Minute) -> Vec<(i64, String, String)> {
        out.iter()
            .map(|d| {
                let minute = Minute::containing(d.scheduled_at).0 - start.0;
                (minute, d.spec.name.clone(), d.spec.job.clone())
            })
            .collect()
    }

    fn run_for(scheduler: &mut Scheduler, minutes: i64) -> Vec<Dispatch> {
        let mut out = Vec::new();
        for _ in 0..minutes {
            let next = scheduler.processed().next();
            scheduler.run_minute(next, &mut out);
        }
        out
    }

    /// An added job fires from the first minute after `processed`, in dispatch order among the
    /// base jobs of its minute; a removed one never fires again; a payload change keeps the
    /// next run and a new `cronTime` moves it.
    #[test]
    fn edits_take_effect_from_the_next_minute_in_dispatch_order() {
        let start = Minute(29_000_040); // a whole hour
        let mut s = Scheduler::new(
            edit_schedule(&[row("b", 0, 0, true, 0), row("d", 0, 0, true, 0)]),
            start,
        );
        assert_eq!(s.edit_count(), 0);
        assert_eq!(s.upsert(edit_job(&row("c", 0, 0, true, 0))), Edited::Added);
        assert_eq!(s.upsert(edit_job(&row("a", 1, 0, true, 0))), Edited::Added);
        let out = run_for(&mut s, 1);
        let names: Vec<_> = fired(&out, start).into_iter().map(|f| f.1).collect();
        assert_eq!(names, ["a", "b", "c", "d"], "priority, then name");
        assert!(s.remove("b"));
        assert!(!s.remove("b"), "removed already");
        assert_eq!(
            s.upsert(edit_job(&row("c", 0, 0, true, 1))),
            Edited::Changed
        );
        // `d` every minute -> every 15 minutes: its next run moves to minute 15.
        assert_eq!(
            s.upsert(edit_job(&row("d", 0, 4, true, 0))),
            Edited::Changed
        );
        assert_eq!(s.next_run("d"), Some(Minute(start.0 + 15)));
        assert_eq!(s.next_run("c"), Some(Minute(start.0 + 2)));
        assert_eq!(s.next_run("b"), None);
        assert_eq!(s.edit_count(), 5);
        let out = run_for(&mut s, 1);
        assert_eq!(
            fired(&out, start),
            [
                (2, "a".to_string(), "run a v0".to_string()),
                (2, "c".to_string(), "run c v1".to_string()),
            ]
        );
        assert_eq!((s.len(), s.scheduled()), (3, 3));
    }

    /// The same settings again change nothing; a disabled job is held but never fires, and
    /// enabling it schedules it.
    #[test]
    fn an_unchanged_upsert_moves_nothing_and_a_disabled_job_is_held_but_never_fires() {
        let start = Minute(29_000_000);
        let mut s = Scheduler::new(edit_schedule(&[row("a", 0, 0, true, 0)]), start);
        let before = Arc::clone(s.job("a").unwrap());
        assert_eq!(
            s.upsert(edit_job(&row("a", 0, 0, true, 0))),
            Edited::Unchanged
        );
        assert!(Arc::ptr_eq(s.job("a").unwrap(), &before), "kept as it was");
        assert_eq!(s.edit_count(), 0, "nothing changed");
        assert_eq!(
            s.upsert(edit_job(&row("a", 0, 0, false, 0))),
            Edited::Changed
        );
        assert_eq!(s.upsert(edit_job(&row("z", 0, 0, false, 0))), Edited::Added);
        assert_eq!((s.len(), s.scheduled()), (2, 0));
        assert!(!s.job("z").unwrap().enabled);
        assert!(run_for(&mut s, 3).is_empty(), "disabled jobs never fire");
        assert_eq!(s.next_run("a"), None);
        assert_eq!(
            s.upsert(edit_job(&row("z", 0, 0, true, 0))),
            Edited::Changed
        );
        let out = run_for(&mut s, 1);
        assert_eq!(
            fired(&out, start),
            [(4, "z".to_string(), "run z v0".to_string())]
        );
        let mut names: Vec<_> = s.jobs().map(|(spec, _)| spec.name.clone()).collect();
        names.sort();
        assert_eq!(names, ["a", "z"]);
    }

    /// A replaced or removed solo job's settings are freed (only the dispatches made from it
    /// keep them), and its id is reused without the old entry firing.
    #[test]
    fn a_replaced_solo_job_is_freed_and_its_id_reused_without_firing() {
        let start = Minute(29_000_000);
        let mut s = Scheduler::new(Schedule::default(), start);
        let v1 = edit_job(&row("a", 0, 4, true, 0)); // every 15 minutes
        let held = Arc::clone(&v1.spec);
        s.upsert(v1);
        s.upsert(edit_job(&row("a", 0, 2, true, 1))); // hourly
        assert_eq!(Arc::strong_count(&held), 1, "v1 still referenced");
        assert!(s.remove("a"));
        s.upsert(edit_job(&row("b", 0, 0, true, 0)));
        s.upsert(edit_job(&row("b", 0, 0, true, 1)));
        let out = run_for(&mut s, 16);
        assert!(fired(&out, start)
            .iter()
            .all(|(_, name, job)| name == "b" && job == "run b v1"));
        assert_eq!(out.len(), 16);
    }

    /// A reload of an edited scheduler is diffed against the jobs in force, not against the
    /// schedule the scheduler was first built from.
    #[test]
    fn a_reload_after_edits_is_diffed_against_the_jobs_in_force() {
        let start = Minute(29_000_040);
        let a = row("a", 0, 0, true, 0);
        let b = row("b", 0, 0, true, 0);
        let c = row("c", 0, 4, true, 0);
        let mut s = Scheduler::new(edit_schedule(&[a.clone(), b.clone()]), start);
        s.upsert(edit_job(&c));
        s.remove("b");
        let diff = s.apply(edit_schedule(&[a.clone(), c.clone()]));
        assert!(diff.is_empty(), "{diff:?}");
        assert_eq!(s.next_run("c"), Some(Minute(start.0 + 15)));
        let diff = s.apply(edit_schedule(&[a.clone(), b.clone()]));
        assert_eq!(
            (diff.added, diff.removed),
            (vec!["b".to_string()], vec!["c".to_string()])
        );
        assert_eq!(s.edit_count(), 0, "rebuilt");
        let out = run_for(&mut s, 1);
        let names: Vec<_> = fired(&out, start).into_iter().map(|f| f.1).collect();
        assert_eq!(names, ["a", "b"]);
    }

    fn edit_row() -> impl Strategy<Value = EditRow> {
        (
            "[ab]{1,2}|report-region-eu-west-[0-9]",
            -1i32..2,
            0usize..8,
            0usize..2,
            prop::bool::weighted(0.8),
            0u8..2,
            0u8..3,
            0u8..3,
        )
            .prop_map(
                |(name, priority, cron, zone, enabled, payload, rule, window)| {
                    ((name, priority, cron, zone, enabled), payload, rule, window)
                },
            )
    }

    /// How time moves between edits.
    #[derive(Debug, Clone)]
    enum Step {
        /// `run_minute`, each minute in its own minute.
        OnTime(i64),
        /// `run_minute_at` for the next minutes, handed out `lag` minutes after the last.
        Late(i64, i64),
        /// `skip_until` that many minutes on, counting at most `cap` slots per job.
        Skip(i64, u64),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (1i64..40).prop_map(Step::OnTime),
            (1i64..10, 0i64..240).prop_map(|(n, lag)| Step::Late(n, lag)),
            (1i64..400, 1u64..4).prop_map(|(n, cap)| Step::Skip(n, cap)),
        ]
    }

    /// Everything a reader can ask a scheduler, which must be the same for an edited one and
    /// one built fresh from its jobs in force.
    fn check_same_state(
        edited: &Scheduler,
        fresh: &Scheduler,
        names: &BTreeMap<String, EditRow>,
    ) -> Result<(), TestCaseError> {
        prop_assert_eq!(edited.processed(), fresh.processed());
        prop_assert_eq!(edited.len(), names.len());
        prop_assert_eq!(fresh.len(), names.len());
        prop_assert_eq!(edited.scheduled(), fresh.scheduled());
        prop_assert_eq!(edited.longest_window(), fresh.longest_window());
        let mut held: Vec<JobSpec> = edited.jobs().map(|(s, _)| (**s).clone()).collect();
        let mut want: Vec<JobSpec> = fresh.jobs().map(|(s, _)| (**s).clone()).collect();
        held.sort_by(|a, b| a.name.cmp(&b.name));
        want.sort_by(|a, b| a.name.cmp(&b.name));
        prop_assert_eq!(held, want);
        for name in names
            .keys()
            .map(String::as_str)
            .chain(["nope", "report-region-eu-west-"])
        {
            prop_assert_eq!(edited.job(name), fresh.job(name), "job {}", name);
            prop_assert_eq!(
                edited.next_run(name),
                fresh.next_run(name),
                "next run of {}",
                name
            );
        }
        for limit in [1, 3, 50] {
            let runs = |s: &Scheduler| {
                s.upcoming(limit)
                    .into_iter()
                    .map(|(at, spec)| (at, (*spec).clone()))
                    .collect::<Vec<_>>()
            };
            prop_assert_eq!(runs(edited), runs(fresh), "upcoming({})", limit);
        }
        // A lower bound of the first due minute, never before the next minute.
        let due = edited.next_due();
        prop_assert!(due.is_none_or(|d| d > edited.processed()));
        if let Some(first) = fresh.next_due() {
            prop_assert!(
                due.is_some_and(|d| d <= first),
                "next_due {:?} > {:?}",
                due,
                first
            );
        }
        Ok(())
    }

    proptest! {
        /// After any edits at any minutes, the edited scheduler hands out exactly what a scheduler
        /// built fresh from the jobs in force at the same minute hands out (in time, in catch-up
        /// with each job's rule and window, and through `skip_until`), in the same order, and
        /// answers every question the same way; on time, that is also the per-job oracle's.
        #[test]
        fn an_edited_scheduler_behaves_as_one_built_from_its_jobs(
            initial in prop::collection::btree_map(
                "[ab]{1,2}|report-region-eu-west-[0-9]",
                edit_row(),
                0..12,
            ),
            plan in prop::collection::vec(
                (prop::collection::vec((0u8..6, edit_row()), 0..4), step()),
                1..12,
            ),
            start_offset in 0i64..1_440,
        ) {
            let mut names: BTreeMap<String, EditRow> = initial
                .into_iter()
                .map(|(name, mut row)| {
                    row.0 .0 = name.clone();
                    (name, row)
                })
                .collect();
            // 2026-12-31 00:00 UTC plus an offset: the yearly job's minute is reachable.
            let start = Minute(29_977_920 + start_offset);
            let mut edited = Scheduler::new(edit_schedule(names.values()), start);
            for (ops, step) in plan {
                for (kind, new) in ops {
                    let name = new.0 .0.clone();
                    let current = names.get(&name).cloned();
                    let row = match (kind, &current) {
                        (3, _) => {
                            prop_assert_eq!(edited.remove(&name), current.is_some());
                            names.remove(&name);
                            continue;
                        }
                        // The same settings again.
                        (4, Some(current)) => current.clone(),
                        // Only the payload changes.
                        (5, Some(current)) => {
                            let mut row = current.clone();
                            row.1 = 1 - row.1;
                            row
                        }
                        _ => new,
                    };
                    let want = match &current {
                        None => Edited::Added,
                        Some(old) if *old == row => Edited::Unchanged,
                        Some(_) => Edited::Changed,
                    };
                    prop_assert_eq!(edited.upsert(edit_job(&row)), want, "upsert of {:?}", row);
                    names.insert(name, row);
                }
                let schedule = edit_schedule(names.values());
                let mut fresh = Scheduler::new(schedule.clone(), edited.processed());
                check_same_state(&edited, &fresh, &names)?;
                let from = edited.processed();
                let (mut got, mut want) = (Vec::new(), Vec::new());
                let (mut got_skips, mut want_skips) = (Skips::default(), Skips::default());
                match step {
                    Step::OnTime(minutes) => {
                        let naive = expected_minutes(&schedule, from, Minute(from.0 + minutes));
                        for m in from.0 + 1..=from.0 + minutes {
                            got.clear();
                            want.clear();
                            edited.run_minute(Minute(m), &mut got);
                            fresh.run_minute(Minute(m), &mut want);
                            prop_assert_eq!(&got, &want, "minute {}", m);
                            let names: Vec<(i32, String)> = got
                                .iter()
                                .map(|d| (d.spec.priority, d.spec.name.clone()))
                                .collect();
                            prop_assert_eq!(names, naive.get(&m).cloned().unwrap_or_default());
                        }
                    }
                    Step::Late(minutes, lag) => {
                        let now = Minute(from.0 + minutes + lag);
                        for m in from.0 + 1..=from.0 + minutes {
                            edited.run_minute_at(Minute(m), now, &mut got, &mut got_skips);
                            fresh.run_minute_at(Minute(m), now, &mut want, &mut want_skips);
                        }
                    }
                    Step::Skip(minutes, cap) => {
                        edited.skip_until(Minute(from.0 + minutes), cap, &mut got_skips);
                        fresh.skip_until(Minute(from.0 + minutes), cap, &mut want_skips);
                    }
                }
                prop_assert_eq!(got, want);
                prop_assert_eq!(got_skips, want_skips);
                check_same_state(&edited, &fresh, &names)?;
            }
        }

        /// The key plus the tie-break orders exactly like (priority descending, name).
        #[test]
        fn dispatch_order_sorts_like_priority_then_name(
            jobs in prop::collection::vec((-1i32..2, "[ab\u{0}é]{0,20}"), 0..40)
        ) {
            let specs: Vec<JobSpec> = jobs.iter().map(|(p, n)| spec(*p, n)).collect();
            let mut by_key: Vec<&JobSpec> = specs.iter().collect();
            by_key.sort_by(|a, b| {
                DispatchOrder::of(a)
                    .cmp(&DispatchOrder::of(b))
                    .then_with(|| a.name.cmp(&b.name))
            });
            let mut expected: Vec<&JobSpec> = specs.iter().collect();
            expected.sort_by(|a, b| {
                (Reverse(a.priority), &a.name).cmp(&(Reverse(b.priority), &b.name))
            });
            let key = |v: Vec<&JobSpec>| v.iter().map(|s| (s.priority, s.name.clone())).collect::<Vec<_>>();
            prop_assert_eq!(key(by_key), key(expected));
        }

        /// `at`, `every` and bounded cron jobs, minute by minute over four hours, with the
        /// scheduler rebuilt from the cursor at a random minute (a takeover): each minute hands
        /// out exactly the jobs whose slots an independent model lists for it (the kinds'
        /// definitions walked minute by minute; a bounded cron job's slots are its unbounded
        /// expression's, filtered by the bounds), each once.
        #[test]
        fn every_kind_fires_on_its_model_slots_across_a_takeover(
            kinds in prop::collection::vec(kind_row(), 1..12),
            takeover_after in 1i64..240,
        ) {
            const SPAN: i64 = 240;
            // 2027-03-01T00:00Z.
            let start = Minute(30_064_320);
            let instant = |offset: i64| {
                Utc.timestamp_opt(start.0 * 60 + offset, 0).unwrap().to_rfc3339()
            };
            let mut entries = Vec::new();
            let mut expected: BTreeMap<i64, Vec<String>> = BTreeMap::new();
            for (i, row) in kinds.iter().enumerate() {
                let name = format!("k{i:02}");
                let mut fields = format!(r#""jobName":"{name}","job":"x""#);
                if let Some(s) = row.start {
                    fields.push_str(&format!(r#","startAt":"{}""#, instant(s)));
                }
                if let Some(e) = row.end {
                    fields.push_str(&format!(r#","endAt":"{}""#, instant(e)));
                }
                let at = |o: i64| Utc.timestamp_opt(start.0 * 60 + o, 0).unwrap();
                let timing = crate::schedule::Timing {
                    kind: crate::schedule::Kind::Cron,
                    start_at: row.start.map(at),
                    end_at: row.end.map(at),
                    keep_after_run: false,
                };
                let (from, to) = ((start.0 + 1) * 60, (start.0 + SPAN + 1) * 60);
                let slots = match row.kind {
                    KindRow::At(offset) => {
                        fields.push_str(&format!(r#","at":"{}""#, instant(offset)));
                        let t = crate::schedule::Timing { kind: crate::schedule::Kind::At(at(offset)), ..timing };
                        crate::schedule::kinds::tests::model_slots(&t, from, to)
                    }
                    KindRow::Every(period) => {
                        fields.push_str(&format!(r#","every":"{period}m""#));
                        let t = crate::schedule::Timing { kind: crate::schedule::Kind::Every(period), ..timing };
                        crate::schedule::kinds::tests::model_slots(&t, from, to)
                    }
                    KindRow::Cron(cron) => {
                        fields.push_str(&format!(r#","cronTime":"{}""#, CRONS[cron]));
                        let expr = crate::cron::CronExpr::parse(CRONS[cron], chrono_tz::UTC).unwrap();
                        let mut out = Vec::new();
                        let mut cursor = Utc.timestamp_opt(from - 1, 0).unwrap();
                        while let Some(next) = expr.next_after(cursor) {
                            if next.timestamp() >= to {
                                break;
                            }
                            let t = next.timestamp();
                            if row.start.is_none_or(|s| t >= start.0 * 60 + s)
                                && row.end.is_none_or(|e| t < start.0 * 60 + e)
                            {
                                out.push(t);
                            }
                            cursor = next;
                        }
                        out
                    }
                };
                for slot in slots {
                    expected.entry(slot / 60).or_default().push(name.clone());
                }
                entries.push(format!("{{{fields}}}"));
            }
            let json = format!(r#"{{"jobs":[{}]}}"#, entries.join(","));
            let schedule = parse(json.as_bytes(), Path::new("s.json"), LoadOptions::default()).unwrap();
            let takeover = Minute(start.0 + takeover_after);
            let mut scheduler = Scheduler::new(schedule.clone(), start);
            let mut out = Vec::new();
            for m in start.0 + 1..=start.0 + SPAN {
                out.clear();
                scheduler.run_minute(Minute(m), &mut out);
                let got: Vec<String> = out.iter().map(|d| d.spec.name.clone()).collect();
                let want = expected.get(&m).cloned().unwrap_or_default();
                prop_assert_eq!(got, want, "minute {} (takeover after {})", m, takeover.0);
                if Minute(m) == takeover {
                    // A new owner builds from the cursor: the minutes after it, as if nothing moved.
                    scheduler = Scheduler::new(schedule.clone(), takeover);
                }
            }
        }

        /// Minute by minute over four hours, with a reload after a random minute, the scheduler
        /// dispatches exactly what the per-job oracle says, in its order: nothing twice, nothing
        /// skipped, the old schedule up to the reload and the new one after it.
        #[test]
        fn scheduler_matches_per_job_oracle_across_a_reload(
            (first, second) in reload_pair(),
            start_offset in 0i64..1_440,
            reload_after in 1i64..240,
        ) {
            const SPAN: i64 = 240;
            // 2026-12-31 00:00 UTC plus an offset: the yearly job's minute is reachable.
            let start = Minute(29_977_920 + start_offset);
            let reload_at = Minute(start.0 + reload_after);
            let end = Minute(start.0 + SPAN);
            let old = schedule_of(&first);
            let new = schedule_of(&second);
            let before = expected_minutes(&old, start, reload_at);
            let after = expected_minutes(&new, reload_at, end);
            let mut scheduler = Scheduler::new(old, start);
            let mut out = Vec::new();
            for m in start.0 + 1..=end.0 {
                out.clear();
                scheduler.run_minute(Minute(m), &mut out);
                let got: Vec<(i32, String)> = out
                    .iter()
                    .map(|d| {
                        prop_assert_eq!(d.scheduled_at, Minute(m).start().unwrap());
                        Ok((d.spec.priority, d.spec.name.clone()))
                    })
                    .collect::<Result<_, TestCaseError>>()?;
                let expected = if m <= reload_at.0 { &before } else { &after };
                let want = expected.get(&m).cloned().unwrap_or_default();
                prop_assert_eq!(got, want, "minute {} (reload after {})", m, reload_at.0);
                if Minute(m) == reload_at {
                    scheduler.apply(new.clone());
                }
            }
        }
    }
}
