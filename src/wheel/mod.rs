//! The dispatcher's timing wheel: which jobs fire at which minute.
//!
//! cronq keeps every scheduled job in one [`Wheel`], filed under its next fire minute; jobs that
//! share a cron expression and zone share one entry (see `dispatcher::scheduler`). The dispatcher's
//! tick loop advances the wheel once per minute ([`Wheel::advance`]); what it hands out goes on to
//! be dispatched, and for each entry the next cron instant is computed and the entry is inserted
//! again ([`Wheel::insert`]). The wheel itself only knows dense ids and minutes.
//!
//! It is a hierarchical timing wheel (G. Varghese and T. Lauck, "Hashed and Hierarchical Timing
//! Wheels: Data Structures for the Efficient Implementation of a Timer Facility", SOSP 1987), laid
//! out like tokio's `runtime/time/wheel`: four levels of 64 slots, level `k` slots being 64^k
//! minutes wide (1 minute, ~1 hour, ~2.8 days, ~182 days; ~32 years in all), each level with a
//! `u64` bitmap of its non-empty slots. Minutes beyond the top level wait in an overflow list.
//!
//! Costs: insert and remove are O(1) (amortised); advancing one idle minute is O(1) (a few bitmap
//! look-ups); a due entry costs O(1) to hand out, plus at most one move per level on its way down
//! (cascading). A long jump (a year at once) costs what the entries in its path cost, not what
//! the minutes cost, and still hands entries out in time order.
//!
//! Removal is lazy: the job table holds, per job, the minute it is scheduled at and a generation
//! number; a slot entry whose (minute, generation) no longer matches is stale and is dropped when it
//! surfaces, or in a sweep once stale entries outnumber half the live ones.
//!
//! A caller that never removes or reschedules (it only inserts a job that is not scheduled: a new
//! one, or one just handed out) needs no job table at all: [`Wheel::append_only`] keeps none, so a
//! due entry costs no look-up at a random place in a table of 16 bytes per job. The dispatcher's
//! `Scheduler` is such a caller (a reload builds a new one).

mod level;

use std::collections::BTreeMap;
use std::fmt;

use crate::clock::Minute;

use level::{epoch_start, level_for, Entry, Level, LEVELS, SLOTS, WHEEL_SPAN};

/// Dense job identifier handed out by the caller (index into its job table).
///
/// The wheel keeps per-job state in a vector indexed by this number, so identifiers should be
/// small and dense (0, 1, 2, ...): the wheel allocates 16 bytes for every id up to the largest
/// one used.
///
/// ```
/// use cronq::wheel::JobId;
///
/// let jobs = ["backup", "report"];
/// let report = JobId(1);
/// assert_eq!(jobs[report.0 as usize], "report");
/// ```
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(pub u32);

/// Why [`Wheel::insert`] refused a job.
///
/// ```
/// use cronq::clock::Minute;
/// use cronq::wheel::{InsertError, JobId, Wheel};
///
/// let mut wheel = Wheel::new(Minute(100));
/// let err = wheel.insert(JobId(7), Minute(90)).unwrap_err();
/// assert_eq!(err, InsertError::NotInFuture { job: JobId(7), at: Minute(90), now: Minute(100) });
/// assert_eq!(
///     err.to_string(),
///     "job 7: minute 90 is not after the wheel's current minute 100",
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InsertError {
    /// The requested minute has already been processed, so the wheel would never hand the job out.
    /// The job is not scheduled; the caller decides whether to fire it now or skip the instant.
    NotInFuture {
        /// The job that was refused.
        job: JobId,
        /// The minute it was to fire at.
        at: Minute,
        /// The wheel's current minute ([`Wheel::now`]); `at` was at or before it.
        now: Minute,
    },
}

impl fmt::Display for InsertError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InsertError::NotInFuture { job, at, now } => write!(
                f,
                "job {}: minute {} is not after the wheel's current minute {}",
                job.0, at.0, now.0
            ),
        }
    }
}

impl std::error::Error for InsertError {}

/// Marks a job that is not scheduled. No entry can carry it: entries come from `i64` minutes.
const UNSCHEDULED: u64 = u64::MAX;

/// Stale entries are swept once they exceed this many and half the live ones: a floor so that
/// small wheels are not swept over and over. Tiny in tests so that the sweep gets exercised.
const COMPACT_MIN: usize = if cfg!(test) { 4 } else { 1024 };

/// What the wheel knows about one job (16 bytes).
#[derive(Copy, Clone, Debug)]
struct JobState {
    /// The minute the job is scheduled at, or [`UNSCHEDULED`].
    at: u64,
    /// Bumped on every scheduling, so that an entry left behind by an earlier scheduling of the
    /// same job at the same minute is told apart.
    generation: u32,
}

impl JobState {
    const NEW: JobState = JobState {
        at: UNSCHEDULED,
        generation: 0,
    };
}

/// Whether `entry` is the job's current scheduling. Checking the minute as well as the generation
/// means a wrapped-around generation can at worst let a duplicate through at the job's real minute,
/// where the first copy handed out unschedules the job and the second is then dropped.
fn is_live(jobs: &[JobState], entry: &Entry) -> bool {
    jobs.get(entry.job as usize)
        .is_some_and(|state| state.at == entry.at && state.generation == entry.generation)
}

/// Wheel ticks are `u64`; minutes before 1970 are not representable (and never needed).
fn tick(minute: Minute) -> Option<u64> {
    u64::try_from(minute.0).ok()
}

fn minute(tick: u64) -> Minute {
    // Ticks all come from non-negative `i64` minutes, so this never saturates.
    Minute(i64::try_from(tick).unwrap_or(i64::MAX))
}

/// Where the next batch of entries to process lives.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Source {
    Slot {
        level: usize,
        slot: usize,
    },
    /// The overflow entries of the earliest later epoch.
    Overflow,
}

/// The next batch of entries to process and the minute to process it at: the first minute any of
/// them can be due. Processing hands out the entries due exactly then and files the rest lower.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
struct Expiration {
    source: Source,
    deadline: u64,
}

/// A hierarchical timing wheel of jobs keyed by the minute they fire at.
///
/// See the [module documentation](self) for the layout and costs.
///
/// ```
/// use cronq::clock::Minute;
/// use cronq::wheel::{JobId, Wheel};
///
/// let mut wheel = Wheel::new(Minute(1_000));
/// wheel.insert(JobId(0), Minute(1_005)).unwrap();
/// wheel.insert(JobId(1), Minute(1_002)).unwrap();
///
/// let mut due = Vec::new();
/// wheel.advance(Minute(1_010), &mut due);
/// assert_eq!(due, [(JobId(1), Minute(1_002)), (JobId(0), Minute(1_005))]);
/// assert!(wheel.is_empty());
/// ```
#[derive(Clone)]
pub struct Wheel {
    /// The last processed minute. Invariant: every entry, live or stale, is strictly later, and an
    /// entry on level `k` agrees with `elapsed` in every base-64 digit above `k` and is ahead of it
    /// in digit `k` (so `level_for(elapsed, at) == Some(k)`); overflow entries are in later epochs.
    elapsed: u64,
    levels: [Level; LEVELS],
    /// Entries in a later epoch than `elapsed`, by minute. Rare (over 30 years out), so a map is fine.
    overflow: BTreeMap<u64, Vec<Entry>>,
    /// Per-job state, indexed by [`JobId`].
    jobs: Vec<JobState>,
    /// Scheduled jobs, i.e. live entries.
    len: usize,
    /// Entries that are no longer live but still filed somewhere.
    stale: usize,
    /// `false` for an [append-only](Wheel::append_only) wheel, whose entries are all live. Its
    /// `jobs` table is then kept in debug builds only, to check the caller keeps the contract.
    tracked: bool,
}

impl Wheel {
    /// An empty wheel whose current tick is `now`; everything at or before `now` counts as processed.
    ///
    /// `now` should not be negative (before 1970); a negative `now` is taken as minute 0.
    ///
    /// ```
    /// use cronq::clock::Minute;
    /// use cronq::wheel::Wheel;
    ///
    /// let wheel = Wheel::new(Minute(29_500_000));
    /// assert_eq!(wheel.now(), Minute(29_500_000));
    /// assert!(wheel.is_empty());
    /// ```
    pub fn new(now: Minute) -> Wheel {
        debug_assert!(now.0 >= 0, "the wheel cannot start before 1970: {now:?}");
        Wheel {
            elapsed: tick(now).unwrap_or(0),
            levels: std::array::from_fn(Level::new),
            overflow: BTreeMap::new(),
            jobs: Vec::new(),
            len: 0,
            stale: 0,
            tracked: true,
        }
    }

    /// An empty wheel for a caller that never removes or reschedules a job: it inserts only jobs
    /// that are not scheduled (new ones, or ones [`advance`](Wheel::advance) just handed out).
    ///
    /// Such a wheel never holds a stale entry, so it keeps no per-job table: inserting and handing
    /// out an entry touch only the slots (the table is a random access per due job once it outgrows
    /// the cache). The price: inserting a job that is still scheduled files a second entry, and
    /// the job is handed out twice (debug builds panic instead); [`remove`](Wheel::remove) is not
    /// available, and [`scheduled_at`](Wheel::scheduled_at) searches the entries.
    ///
    /// ```
    /// use cronq::clock::Minute;
    /// use cronq::wheel::{JobId, Wheel};
    ///
    /// let mut wheel = Wheel::append_only(Minute(0));
    /// wheel.insert(JobId(0), Minute(5)).unwrap();
    /// wheel.insert(JobId(1), Minute(3)).unwrap();
    /// assert_eq!(wheel.scheduled_at(JobId(0)), Some(Minute(5)));
    ///
    /// let mut due = Vec::new();
    /// wheel.advance(Minute(5), &mut due);
    /// assert_eq!(due, [(JobId(1), Minute(3)), (JobId(0), Minute(5))]);
    /// // Handed out, so no longer scheduled: inserting it again is allowed.
    /// wheel.insert(JobId(0), Minute(9)).unwrap();
    /// assert_eq!(wheel.len(), 1);
    /// ```
    pub fn append_only(now: Minute) -> Wheel {
        Wheel {
            tracked: false,
            ..Wheel::new(now)
        }
    }

    /// Whether the per-job table is kept: always, except on an append-only wheel in a release
    /// build.
    fn keeps_table(&self) -> bool {
        self.tracked || cfg!(debug_assertions)
    }

    /// Whether `entry` is its job's current scheduling. Every entry of an append-only wheel is.
    fn live(&self, entry: &Entry) -> bool {
        !self.tracked || is_live(&self.jobs, entry)
    }

    /// The last minute processed (entries at or before it have been handed out).
    ///
    /// ```
    /// use cronq::clock::Minute;
    /// use cronq::wheel::Wheel;
    ///
    /// let mut wheel = Wheel::new(Minute(10));
    /// wheel.advance(Minute(70), &mut Vec::new());
    /// assert_eq!(wheel.now(), Minute(70));
    /// ```
    pub fn now(&self) -> Minute {
        minute(self.elapsed)
    }

    /// Schedules `job` to fire at `at`. `at` must be strictly after `now()`; otherwise the call is
    /// refused and returns `Err(InsertError::NotInFuture { job, at, now })`, handing the job back to
    /// the caller.
    ///
    /// Inserting a job that is already scheduled replaces its previous time (the old entry becomes
    /// stale), except on an [append-only](Wheel::append_only) wheel, where it must not happen. O(1)
    /// amortised: the job table grows to cover `job`, and an occasional sweep purges stale entries.
    ///
    /// ```
    /// use cronq::clock::Minute;
    /// use cronq::wheel::{InsertError, JobId, Wheel};
    ///
    /// let mut wheel = Wheel::new(Minute(100));
    /// wheel.insert(JobId(3), Minute(160)).unwrap();
    /// wheel.insert(JobId(3), Minute(130)).unwrap(); // replaces 160
    /// assert_eq!(wheel.scheduled_at(JobId(3)), Some(Minute(130)));
    /// assert!(matches!(
    ///     wheel.insert(JobId(4), Minute(100)),
    ///     Err(InsertError::NotInFuture { job: JobId(4), .. })
    /// ));
    /// assert_eq!(wheel.len(), 1);
    /// ```
    pub fn insert(&mut self, job: JobId, at: Minute) -> Result<(), InsertError> {
        let when = match tick(at) {
            Some(when) if when > self.elapsed => when,
            _ => {
                return Err(InsertError::NotInFuture {
                    job,
                    at,
                    now: self.now(),
                })
            }
        };
        if !self.keeps_table() {
            self.len += 1;
            let entry = Entry {
                at: when,
                job: job.0,
                generation: 0,
            };
            self.file(entry, self.elapsed);
            return Ok(());
        }
        let index = job.0 as usize;
        if index >= self.jobs.len() {
            self.jobs.resize(index + 1, JobState::NEW);
        }
        let tracked = self.tracked;
        let state = &mut self.jobs[index];
        assert!(
            tracked || state.at == UNSCHEDULED,
            "append-only wheel: job {} inserted at minute {when} while scheduled at {}",
            job.0,
            state.at
        );
        if state.at == when {
            // Rescheduling at the same minute (a reload that changed nothing): keep the entry.
            return Ok(());
        }
        if state.at == UNSCHEDULED {
            self.len += 1;
        } else {
            self.stale += 1;
        }
        state.at = when;
        state.generation = state.generation.wrapping_add(1);
        let entry = Entry {
            at: when,
            job: job.0,
            generation: state.generation,
        };
        self.file(entry, self.elapsed);
        self.maybe_compact();
        Ok(())
    }

    /// Unschedules `job` (lazy: a per-job generation number makes its slot entry stale; stale
    /// entries are dropped silently when they surface). Returns the minute it was scheduled at, if
    /// it was.
    ///
    /// ```
    /// use cronq::clock::Minute;
    /// use cronq::wheel::{JobId, Wheel};
    ///
    /// let mut wheel = Wheel::new(Minute(0));
    /// wheel.insert(JobId(0), Minute(5)).unwrap();
    /// assert_eq!(wheel.remove(JobId(0)), Some(Minute(5)));
    /// assert_eq!(wheel.remove(JobId(0)), None);
    ///
    /// let mut due = Vec::new();
    /// wheel.advance(Minute(10), &mut due);
    /// assert!(due.is_empty());
    /// ```
    ///
    /// # Panics
    ///
    /// On an [append-only](Wheel::append_only) wheel, which cannot unschedule.
    pub fn remove(&mut self, job: JobId) -> Option<Minute> {
        assert!(self.tracked, "Wheel::remove on an append-only wheel");
        let state = self.jobs.get_mut(job.0 as usize)?;
        if state.at == UNSCHEDULED {
            return None;
        }
        let at = std::mem::replace(&mut state.at, UNSCHEDULED);
        self.len -= 1;
        self.stale += 1;
        self.maybe_compact();
        Some(minute(at))
    }

    /// When `job` is scheduled, if at all. O(1); O(entries) on an [append-only](Wheel::append_only)
    /// wheel, which searches its entries.
    ///
    /// ```
    /// use cronq::clock::Minute;
    /// use cronq::wheel::{JobId, Wheel};
    ///
    /// let mut wheel = Wheel::new(Minute(0));
    /// assert_eq!(wheel.scheduled_at(JobId(9)), None);
    /// wheel.insert(JobId(9), Minute(42)).unwrap();
    /// assert_eq!(wheel.scheduled_at(JobId(9)), Some(Minute(42)));
    /// ```
    pub fn scheduled_at(&self, job: JobId) -> Option<Minute> {
        if !self.tracked {
            let mut filed = self
                .levels
                .iter()
                .flat_map(|level| (0..SLOTS).flat_map(move |slot| level.slot(slot).iter()));
            return filed
                .find(|entry| entry.job == job.0)
                .or_else(|| self.overflow.values().flatten().find(|e| e.job == job.0))
                .map(|entry| minute(entry.at));
        }
        self.jobs
            .get(job.0 as usize)
            .filter(|state| state.at != UNSCHEDULED)
            .map(|state| minute(state.at))
    }

    /// Advances the current tick to `to`, appending every live entry whose time is <= `to` to `due`
    /// as `(job, at)`, in non-decreasing `at` order (ties in any order). A job handed out is no
    /// longer scheduled (the caller reinserts it at its next time). `to` <= `now()` is a no-op.
    ///
    /// Only minutes holding entries are visited: idle stretches, however long, are skipped through
    /// the occupancy bitmaps.
    ///
    /// ```
    /// use cronq::clock::Minute;
    /// use cronq::wheel::{JobId, Wheel};
    ///
    /// let mut wheel = Wheel::new(Minute(0));
    /// wheel.insert(JobId(0), Minute(525_600)).unwrap(); // a year out
    /// wheel.insert(JobId(1), Minute(61)).unwrap();
    ///
    /// let mut due = Vec::new();
    /// wheel.advance(Minute(60), &mut due);
    /// assert!(due.is_empty());
    /// wheel.advance(Minute(600_000), &mut due);
    /// assert_eq!(due, [(JobId(1), Minute(61)), (JobId(0), Minute(525_600))]);
    /// assert_eq!(wheel.now(), Minute(600_000));
    /// ```
    pub fn advance(&mut self, to: Minute, due: &mut Vec<(JobId, Minute)>) {
        let Some(to) = tick(to) else { return };
        if to <= self.elapsed {
            return;
        }
        let first_new = due.len();
        while let Some(expiration) = self.next_expiration() {
            if expiration.deadline > to {
                break;
            }
            self.process(expiration, due);
        }
        self.elapsed = to;
        debug_assert!(
            due[first_new..]
                .windows(2)
                .all(|pair| pair[0].1 <= pair[1].1),
            "entries handed out out of order: {:?}; wheel: {self:?}",
            &due[first_new..],
        );
    }

    /// The earliest minute at which a live-or-stale entry may be due (a lower bound that is exact
    /// for level 0), or `None` when the wheel is empty. Lets a caller skip idle minutes quickly.
    ///
    /// For an entry on a higher level this is the start of its slot; advancing to it moves the
    /// entry down, after which `next_due` is more precise. It is always after [`Wheel::now`].
    ///
    /// ```
    /// use cronq::clock::Minute;
    /// use cronq::wheel::{JobId, Wheel};
    ///
    /// let mut wheel = Wheel::new(Minute(0));
    /// assert_eq!(wheel.next_due(), None);
    /// wheel.insert(JobId(0), Minute(40)).unwrap();
    /// assert_eq!(wheel.next_due(), Some(Minute(40)));
    ///
    /// // Skip idle minutes: jump straight to the next candidate until something is due.
    /// let mut due = Vec::new();
    /// wheel.insert(JobId(1), Minute(1_000)).unwrap();
    /// while due.len() < 2 {
    ///     let next = wheel.next_due().unwrap();
    ///     wheel.advance(next, &mut due);
    /// }
    /// assert_eq!(due, [(JobId(0), Minute(40)), (JobId(1), Minute(1_000))]);
    /// ```
    pub fn next_due(&self) -> Option<Minute> {
        if self.len == 0 {
            return None;
        }
        let in_wheel = self
            .levels
            .iter()
            .find_map(|level| level.next_expiration(self.elapsed))
            .map(|(_, deadline)| deadline);
        // Beyond the levels the exact minute is at hand, so report that rather than the epoch start.
        in_wheel
            .or_else(|| self.overflow.keys().next().copied())
            .map(minute)
    }

    /// Number of live scheduled jobs.
    ///
    /// ```
    /// use cronq::clock::Minute;
    /// use cronq::wheel::{JobId, Wheel};
    ///
    /// let mut wheel = Wheel::new(Minute(0));
    /// wheel.insert(JobId(0), Minute(1)).unwrap();
    /// wheel.insert(JobId(0), Minute(2)).unwrap(); // a replacement, not a second job
    /// assert_eq!(wheel.len(), 1);
    /// ```
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no job is scheduled.
    ///
    /// ```
    /// use cronq::clock::Minute;
    /// use cronq::wheel::{JobId, Wheel};
    ///
    /// let mut wheel = Wheel::new(Minute(0));
    /// assert!(wheel.is_empty());
    /// wheel.insert(JobId(0), Minute(1)).unwrap();
    /// assert!(!wheel.is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Visits the live entries in time order, one slot (or overflow minute) at a time, earliest
    /// first: `visit` gets each batch sorted by minute and says whether to go on. It reads only the
    /// slots it visits, so a caller that stops early (a status page's next few runs) costs those
    /// slots' entries, not the wheel's. Slots on one level are in time order from the current
    /// minute on, and every level's entries come before the next level's (see
    /// [`Wheel::next_expiration`]).
    ///
    /// ```
    /// use cronq::clock::Minute;
    /// use cronq::wheel::{JobId, Wheel};
    ///
    /// let mut wheel = Wheel::new(Minute(0));
    /// wheel.insert(JobId(0), Minute(5_000)).unwrap();
    /// wheel.insert(JobId(1), Minute(70)).unwrap();
    /// wheel.insert(JobId(2), Minute(3)).unwrap();
    /// let mut seen = Vec::new();
    /// wheel.visit_in_order(|batch| {
    ///     seen.extend_from_slice(batch);
    ///     seen.len() < 2
    /// });
    /// assert_eq!(seen, [(JobId(2), Minute(3)), (JobId(1), Minute(70))]);
    /// ```
    pub fn visit_in_order(&self, mut visit: impl FnMut(&[(JobId, Minute)]) -> bool) {
        let mut batch = Vec::new();
        let slots = self.levels.iter().flat_map(|level| {
            let mut occupied = level.occupied();
            std::iter::from_fn(move || {
                let slot = level::next_occupied(occupied, 0)?;
                occupied &= !(1 << slot);
                Some(level.slot(slot))
            })
        });
        for entries in slots.chain(self.overflow.values().map(Vec::as_slice)) {
            batch.clear();
            batch.extend(
                entries
                    .iter()
                    .filter(|entry| self.live(entry))
                    .map(|entry| (JobId(entry.job), minute(entry.at))),
            );
            if batch.is_empty() {
                continue;
            }
            batch.sort_unstable_by_key(|&(job, at)| (at, job));
            if !visit(&batch) {
                return;
            }
        }
    }

    /// The next batch to process: the first occupied slot on the lowest non-empty level, else the
    /// overflow's earliest epoch.
    ///
    /// Lower levels always come first: level-`k` entries agree with `elapsed` above digit `k`, while
    /// entries on higher levels are ahead of it in a higher digit, hence later. Overflow entries
    /// are in a later epoch than anything on the levels. The overflow is processed at its epoch's
    /// start (not its earliest minute) so that the current minute never enters an epoch while
    /// entries of that epoch are still waiting in the overflow.
    fn next_expiration(&self) -> Option<Expiration> {
        for (level, slots) in self.levels.iter().enumerate() {
            if let Some((slot, deadline)) = slots.next_expiration(self.elapsed) {
                debug_assert!(
                    self.levels[level + 1..].iter().all(|higher| higher
                        .next_expiration(self.elapsed)
                        .is_none_or(|(_, later)| later > deadline)),
                    "a higher level expires before level {level} slot {slot}: {self:?}"
                );
                return Some(Expiration {
                    source: Source::Slot { level, slot },
                    deadline,
                });
            }
        }
        let (&first, _) = self.overflow.first_key_value()?;
        Some(Expiration {
            source: Source::Overflow,
            deadline: epoch_start(first),
        })
    }

    /// Moves the current minute to `expiration.deadline`, handing out the batch's entries due then
    /// and filing the others on lower levels relative to the new current minute.
    fn process(&mut self, expiration: Expiration, due: &mut Vec<(JobId, Minute)>) {
        let deadline = expiration.deadline;
        debug_assert!(
            deadline > self.elapsed,
            "processing {expiration:?} at or before the current minute: {self:?}"
        );
        match expiration.source {
            Source::Slot { level, slot } => {
                let mut entries = self.levels[level].take_slot(slot);
                for entry in entries.drain(..) {
                    debug_assert!(
                        level > 0 || entry.at == deadline,
                        "level-0 slot {slot} processed at {deadline} holds {entry:?}: {self:?}"
                    );
                    self.settle(entry, deadline, level, due);
                }
                self.levels[level].restore_slot(slot, entries);
            }
            Source::Overflow => {
                let later = self.overflow.split_off(&(deadline + WHEEL_SPAN));
                let epoch = std::mem::replace(&mut self.overflow, later);
                for entry in epoch.into_values().flatten() {
                    self.settle(entry, deadline, LEVELS, due);
                }
            }
        }
        self.elapsed = deadline;
    }

    /// Hands out, refiles or drops one entry from a batch processed at `deadline`.
    ///
    /// With no stale entry filed anywhere, every entry is its job's current scheduling, so the job
    /// table is not read: an entry cascading down a level then costs no look-up at a random place in
    /// a table of 16 bytes per job (a cache miss per move once the table outgrows the cache), and a
    /// due entry costs one write to it. A scheduler that only reinserts what it was handed out
    /// never leaves stale entries.
    fn settle(&mut self, entry: Entry, deadline: u64, from: usize, due: &mut Vec<(JobId, Minute)>) {
        debug_assert!(
            self.stale > 0 || is_live(&self.jobs, &entry),
            "{entry:?} is stale but none is counted: {self:?}"
        );
        if self.stale > 0 && !is_live(&self.jobs, &entry) {
            // Saturating: only a wrapped generation (see `is_live`) could drop an uncounted entry.
            self.stale = self.stale.saturating_sub(1);
            return;
        }
        if entry.at == deadline {
            if self.keeps_table() {
                self.jobs[entry.job as usize].at = UNSCHEDULED;
            }
            self.len -= 1;
            due.push((JobId(entry.job), minute(entry.at)));
        } else {
            debug_assert!(
                entry.at > deadline && level_for(deadline, entry.at).is_some_and(|to| to < from),
                "{entry:?} from level {from} does not move down at {deadline}: {self:?}"
            );
            self.file(entry, deadline);
        }
    }

    /// Files `entry` where it belongs when the current minute is `elapsed`.
    fn file(&mut self, entry: Entry, elapsed: u64) {
        match level_for(elapsed, entry.at) {
            Some(level) => self.levels[level].push(entry),
            None => self.overflow.entry(entry.at).or_default().push(entry),
        }
    }

    /// Sweeps stale entries once they outnumber half the live ones, which bounds the memory that
    /// remove/reschedule churn can pin while keeping the sweep's cost amortised O(1) per call.
    fn maybe_compact(&mut self) {
        if self.stale > COMPACT_MIN.max(self.len / 2) {
            self.compact();
        }
    }

    fn compact(&mut self) {
        let jobs = &self.jobs;
        let mut dropped = 0;
        for level in &mut self.levels {
            dropped += level.retain(|entry| is_live(jobs, entry));
        }
        self.overflow.retain(|_, entries| {
            let before = entries.len();
            entries.retain(|entry| is_live(jobs, entry));
            dropped += before - entries.len();
            !entries.is_empty()
        });
        debug_assert_eq!(dropped, self.stale, "stale count out of step: {self:?}");
        self.stale = 0;
    }

    /// Entries filed anywhere, live or stale.
    fn entries(&self) -> usize {
        let on_levels: usize = self.levels.iter().map(Level::entries).sum();
        on_levels + self.overflow.values().map(Vec::len).sum::<usize>()
    }

    /// Bytes of heap the wheel holds (vector capacities; the overflow map's nodes are not counted).
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        let levels: usize = self.levels.iter().map(Level::heap_bytes).sum();
        let overflow: usize = self
            .overflow
            .values()
            .map(|entries| entries.capacity() * std::mem::size_of::<Entry>())
            .sum();
        levels + overflow + self.jobs.capacity() * std::mem::size_of::<JobState>()
    }

    /// Checks every invariant in full (O(entries)); panics with the wheel's state on a violation.
    #[cfg(test)]
    fn check_invariants(&self) {
        let ids = self
            .levels
            .iter()
            .flat_map(|level| (0..SLOTS).flat_map(move |slot| level.slot(slot)))
            .chain(self.overflow.values().flatten())
            .map(|entry| entry.job as usize + 1)
            .max()
            .unwrap_or(0)
            .max(self.jobs.len());
        let mut live = vec![false; ids];
        let table = self.keeps_table();
        let mut mark_live = |entry: &Entry| {
            if !table || is_live(&self.jobs, entry) {
                let seen = &mut live[entry.job as usize];
                assert!(!*seen, "second live entry {entry:?}: {self:?}");
                *seen = true;
            }
        };
        for (level, slots) in self.levels.iter().enumerate() {
            for slot in 0..SLOTS {
                let entries = slots.slot(slot);
                assert_eq!(
                    slots.occupied() & (1 << slot) != 0,
                    !entries.is_empty(),
                    "level {level} slot {slot}: bitmap out of step: {self:?}"
                );
                for entry in entries {
                    assert!(
                        entry.at > self.elapsed
                            && level::slot_for(entry.at, level) == slot
                            && level_for(self.elapsed, entry.at) == Some(level),
                        "level {level} slot {slot}: misfiled {entry:?}: {self:?}"
                    );
                    mark_live(entry);
                }
            }
        }
        for (&at, entries) in &self.overflow {
            assert!(!entries.is_empty(), "empty overflow minute {at}: {self:?}");
            for entry in entries {
                assert!(
                    entry.at == at && level_for(self.elapsed, at).is_none(),
                    "overflow: misfiled {entry:?} under {at}: {self:?}"
                );
                mark_live(entry);
            }
        }
        for (job, state) in self.jobs.iter().enumerate().filter(|_| table) {
            let scheduled = state.at != UNSCHEDULED;
            assert_eq!(
                scheduled, live[job],
                "job {job} {state:?} vs its entries: {self:?}"
            );
            assert!(
                !scheduled || state.at > self.elapsed,
                "job {job} {state:?} is overdue: {self:?}"
            );
        }
        assert_eq!(
            live.iter().filter(|&&l| l).count(),
            self.len,
            "len: {self:?}"
        );
        assert_eq!(
            self.entries(),
            self.len + self.stale,
            "stale count: {self:?}"
        );
    }
}

/// A summary (not a dump: the wheel may hold a million entries) for invariant failures and logs.
impl fmt::Debug for Wheel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        /// Entries listed in full only up to this many.
        const LIST_MAX: usize = 64;
        let occupied: Vec<String> = self
            .levels
            .iter()
            .map(|level| format!("{:#018x}", level.occupied()))
            .collect();
        let mut out = f.debug_struct("Wheel");
        out.field("now", &self.elapsed)
            .field("len", &self.len)
            .field("stale", &self.stale)
            .field("occupied", &occupied)
            .field("overflow_minutes", &self.overflow.len());
        if self.entries() <= LIST_MAX {
            let describe = |place: String, entry: &Entry| {
                let stale = if self.live(entry) { "" } else { " (stale)" };
                format!(
                    "{place}: job {} at {} gen {}{stale}",
                    entry.job, entry.at, entry.generation
                )
            };
            let mut entries = Vec::new();
            for (level, slots) in self.levels.iter().enumerate() {
                for slot in 0..SLOTS {
                    for entry in slots.slot(slot) {
                        entries.push(describe(format!("L{level}/{slot}"), entry));
                    }
                }
            }
            for entry in self.overflow.values().flatten() {
                entries.push(describe("overflow".to_owned(), entry));
            }
            out.field("entries", &entries);
        }
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::level::slot_width;
    use super::*;

    const YEAR: i64 = 525_600;
    /// 2026-01-01T00:00Z: real minutes have digits set above the wheel's 24 bits.
    const NOW_2026: i64 = 29_453_760;
    const SPAN: i64 = WHEEL_SPAN as i64;

    type Due = Vec<(JobId, Minute)>;

    fn advance(wheel: &mut Wheel, to: i64) -> Due {
        let mut due = Vec::new();
        wheel.advance(Minute(to), &mut due);
        wheel.check_invariants();
        due
    }

    fn insert(wheel: &mut Wheel, job: u32, at: i64) {
        assert_eq!(
            wheel.insert(JobId(job), Minute(at)),
            Ok(()),
            "job {job} at {at}"
        );
        wheel.check_invariants();
    }

    fn sorted(mut due: Due) -> Due {
        due.sort_by_key(|&(job, at)| (at, job));
        due
    }

    /// The hand-outs due at minute `t` when job `i` is scheduled at `ats[i]`.
    fn fired_at(ats: &[i64], t: i64) -> Due {
        let fired = (0..).zip(ats).filter(|&(_, &at)| at == t);
        fired.map(|(job, &at)| (JobId(job), Minute(at))).collect()
    }

    fn assert_in_time_order(due: &[(JobId, Minute)]) {
        for pair in due.windows(2) {
            assert!(pair[0].1 <= pair[1].1, "out of order: {pair:?}");
        }
    }

    /// Deterministic pseudo-random numbers (splitmix64), to keep the scenarios reproducible.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, bound: u64) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) % bound
        }
    }

    #[test]
    fn new_wheel_is_empty() {
        let wheel = Wheel::new(Minute(NOW_2026));
        wheel.check_invariants();
        assert_eq!(wheel.now(), Minute(NOW_2026));
        assert_eq!(wheel.len(), 0);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_due(), None);
        assert_eq!(wheel.scheduled_at(JobId(0)), None);
        assert!(format!("{wheel:?}").contains("now: 29453760"));
    }

    #[test]
    fn insert_at_or_before_now_is_refused_and_handed_back() {
        let mut wheel = Wheel::new(Minute(100));
        for at in [100, 99, 0, -1, i64::MIN] {
            let refused = InsertError::NotInFuture {
                job: JobId(7),
                at: Minute(at),
                now: Minute(100),
            };
            assert_eq!(wheel.insert(JobId(7), Minute(at)), Err(refused));
        }
        wheel.check_invariants();
        assert!(wheel.is_empty());
        assert_eq!(wheel.scheduled_at(JobId(7)), None);

        // A refused reschedule leaves the current one alone.
        insert(&mut wheel, 7, 150);
        assert!(wheel.insert(JobId(7), Minute(100)).is_err());
        assert_eq!(wheel.scheduled_at(JobId(7)), Some(Minute(150)));

        // Advancing moves the horizon.
        assert!(advance(&mut wheel, 120).is_empty());
        let err = wheel.insert(JobId(8), Minute(120)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "job 8: minute 120 is not after the wheel's current minute 120"
        );
        let _: &dyn std::error::Error = &err;
        insert(&mut wheel, 8, 121);
        assert_eq!(wheel.len(), 2);
    }

    #[test]
    fn fires_at_its_minute_then_is_unscheduled() {
        let mut wheel = Wheel::new(Minute(1_000));
        insert(&mut wheel, 0, 1_005);
        for t in 1_001..1_005 {
            assert!(advance(&mut wheel, t).is_empty(), "minute {t}");
        }
        assert_eq!(advance(&mut wheel, 1_005), [(JobId(0), Minute(1_005))]);
        assert_eq!(wheel.scheduled_at(JobId(0)), None);
        assert!(wheel.is_empty());
        assert!(advance(&mut wheel, 100_000).is_empty());
    }

    #[test]
    fn advancing_backwards_or_in_place_is_a_no_op() {
        let mut wheel = Wheel::new(Minute(500));
        insert(&mut wheel, 0, 501);
        for to in [500, 499, 0, -5, i64::MIN] {
            assert!(advance(&mut wheel, to).is_empty());
            assert_eq!(wheel.now(), Minute(500));
        }
        assert_eq!(advance(&mut wheel, 501), [(JobId(0), Minute(501))]);
    }

    #[test]
    fn removed_job_is_not_due() {
        let mut wheel = Wheel::new(Minute(0));
        insert(&mut wheel, 1, 10);
        insert(&mut wheel, 2, 10);
        assert_eq!(wheel.remove(JobId(1)), Some(Minute(10)));
        assert_eq!(wheel.remove(JobId(1)), None);
        assert_eq!(wheel.remove(JobId(99)), None, "never seen");
        assert_eq!(wheel.len(), 1);
        wheel.check_invariants();
        assert_eq!(advance(&mut wheel, 100), [(JobId(2), Minute(10))]);
        assert_eq!(
            wheel.stale, 0,
            "the stale entry was dropped when it surfaced"
        );

        // Removed and re-added at the same minute: fires once.
        insert(&mut wheel, 1, 200);
        assert_eq!(wheel.remove(JobId(1)), Some(Minute(200)));
        insert(&mut wheel, 1, 200);
        assert_eq!(advance(&mut wheel, 300), [(JobId(1), Minute(200))]);

        // Removed on a high level, then everything it would have passed through is still quiet.
        insert(&mut wheel, 3, 300 + 5 * YEAR);
        assert_eq!(wheel.remove(JobId(3)), Some(Minute(300 + 5 * YEAR)));
        assert!(advance(&mut wheel, 300 + 6 * YEAR).is_empty());
    }

    #[test]
    fn reinsert_replaces_previous_time() {
        let mut wheel = Wheel::new(Minute(0));
        insert(&mut wheel, 0, 5_000);
        insert(&mut wheel, 0, 70);
        assert_eq!(wheel.scheduled_at(JobId(0)), Some(Minute(70)));
        assert_eq!(wheel.len(), 1);
        assert_eq!(advance(&mut wheel, 10_000), [(JobId(0), Minute(70))]);

        // Replaced by a later time: the earlier entry must not fire.
        insert(&mut wheel, 0, 10_100);
        insert(&mut wheel, 0, 20_000);
        assert!(advance(&mut wheel, 19_999).is_empty());
        assert_eq!(advance(&mut wheel, 20_000), [(JobId(0), Minute(20_000))]);

        // The same minute again changes nothing and leaves nothing stale.
        insert(&mut wheel, 0, 20_010);
        insert(&mut wheel, 0, 20_010);
        assert_eq!(wheel.stale, 0);
        assert_eq!(wheel.entries(), 1);
    }

    /// The dispatcher's loop: advance a minute, reinsert each due job at its next instant.
    #[test]
    fn tick_loop_with_periodic_jobs() {
        let periods = [1, 5, 60, 1_440, 7 * 1_440];
        let start = NOW_2026;
        let mut wheel = Wheel::new(Minute(start));
        for (job, period) in (0..).zip(periods) {
            insert(&mut wheel, job, start + period);
        }
        let mut counts = [0; 5];
        for t in start + 1..=start + 3 * 1_440 {
            let mut due = Vec::new();
            wheel.advance(Minute(t), &mut due);
            for (job, at) in due {
                assert_eq!(at, Minute(t));
                counts[job.0 as usize] += 1;
                insert(&mut wheel, job.0, t + periods[job.0 as usize]);
            }
        }
        assert_eq!(counts, [4_320, 864, 72, 3, 0]);
        assert_eq!(wheel.len(), 5);
    }

    #[test]
    fn far_future_goes_through_overflow_and_fires_on_time() {
        let start = NOW_2026;
        let (in_33_years, in_40_years) = (start + 33 * YEAR, start + 40 * YEAR);
        let mut wheel = Wheel::new(Minute(start));
        insert(&mut wheel, 0, in_40_years);
        insert(&mut wheel, 1, in_33_years);
        assert_eq!(wheel.overflow.len(), 2, "both are beyond the levels");
        assert_eq!(wheel.next_due(), Some(Minute(in_33_years)));

        assert!(advance(&mut wheel, in_33_years - 1).is_empty());
        assert_eq!(
            advance(&mut wheel, in_33_years),
            [(JobId(1), Minute(in_33_years))]
        );
        for t in in_40_years - 3..in_40_years {
            assert!(advance(&mut wheel, t).is_empty());
        }
        assert_eq!(
            advance(&mut wheel, in_40_years),
            [(JobId(0), Minute(in_40_years))]
        );
        assert!(wheel.overflow.is_empty());

        // The same in one jump, with a nearby job to keep the levels busy.
        let mut wheel = Wheel::new(Minute(start));
        insert(&mut wheel, 0, in_40_years);
        insert(&mut wheel, 1, in_33_years);
        insert(&mut wheel, 2, start + 1);
        let due = advance(&mut wheel, start + 100 * YEAR);
        assert_eq!(
            due,
            [
                (JobId(2), Minute(start + 1)),
                (JobId(1), Minute(in_33_years)),
                (JobId(0), Minute(in_40_years)),
            ]
        );
    }

    /// Minutes since 1970 cross an epoch boundary (64^4-aligned) in October 2033.
    #[test]
    fn epoch_boundary_entries_fire_on_their_minute() {
        let boundary = 2 * SPAN;
        assert!(boundary > NOW_2026 && boundary < NOW_2026 + 8 * YEAR);
        for start in [
            boundary - 3,
            boundary - 100,
            boundary - 5_000,
            boundary - YEAR,
            NOW_2026,
        ] {
            let mut wheel = Wheel::new(Minute(start));
            let ats = [-1, 0, 1, 63, 64, 65, 4_096, SPAN - 1, SPAN, SPAN + 1].map(|d| boundary + d);
            for (job, at) in (0..).zip(ats) {
                insert(&mut wheel, job, at);
            }
            // Jump close (cascading everything down on the way), then tick across the boundary.
            let close = start.max(boundary - 200);
            assert!(advance(&mut wheel, close).is_empty());
            for t in close + 1..=boundary + 70 {
                let due = advance(&mut wheel, t);
                let expected = fired_at(&ats, t);
                assert_eq!(due, expected, "start {start} minute {t}");
            }
            let rest = advance(&mut wheel, boundary + 3 * SPAN);
            assert_eq!(
                rest,
                [6, 7, 8, 9].map(|job| (JobId(job), Minute(ats[job as usize])))
            );
        }
    }

    /// Entries exactly on, and either side of, the 64 / 4 096 / 262 144 / 16 777 216 boundaries,
    /// each of which makes some entry cascade: it must fire on its own minute, not its slot's.
    #[test]
    fn cascading_boundaries_fire_exactly() {
        for start in [0, 1, 37, 4_095, 262_143, NOW_2026, NOW_2026 + 12_345] {
            let mut ats = Vec::new();
            for power in 1..=LEVELS {
                let width = slot_width(power) as i64;
                for ahead in [1, 2, 63, 64, 65] {
                    let boundary = (start / width + ahead) * width;
                    ats.extend(
                        [boundary - 1, boundary, boundary + 1]
                            .into_iter()
                            .filter(|&at| at > start),
                    );
                }
            }
            let expected: Due = sorted(
                (0..)
                    .zip(&ats)
                    .map(|(job, &at)| (JobId(job), Minute(at)))
                    .collect(),
            );

            // Stop one minute before and then on each of them.
            let mut wheel = Wheel::new(Minute(start));
            for (job, &at) in (0..).zip(&ats) {
                insert(&mut wheel, job, at);
            }
            let mut seen = Vec::new();
            let mut minutes: Vec<i64> = ats.clone();
            minutes.sort_unstable();
            minutes.dedup();
            for at in minutes {
                assert!(
                    advance(&mut wheel, at - 1).is_empty(),
                    "start {start}: early at {}",
                    at - 1
                );
                let due = advance(&mut wheel, at);
                assert!(
                    !due.is_empty() && due.iter().all(|&(_, m)| m == Minute(at)),
                    "start {start} minute {at}: {due:?}"
                );
                seen.extend(due);
            }
            assert_eq!(sorted(seen), expected);

            // One jump over all of them.
            let mut wheel = Wheel::new(Minute(start));
            for (job, &at) in (0..).zip(&ats) {
                insert(&mut wheel, job, at);
            }
            let due = advance(&mut wheel, start + 200 * SPAN);
            assert_in_time_order(&due);
            assert_eq!(sorted(due), expected);
        }
    }

    /// Minute by minute across the first level-1 and level-2 boundaries.
    #[test]
    fn minute_by_minute_through_low_boundaries() {
        let ats = [
            1, 62, 63, 64, 65, 127, 128, 4_095, 4_096, 4_097, 4_160, 8_191, 8_192,
        ];
        let mut wheel = Wheel::new(Minute(0));
        for (job, at) in (0..).zip(ats) {
            insert(&mut wheel, job, at);
        }
        for t in 1..=8_300 {
            let due = advance(&mut wheel, t);
            let expected = fired_at(&ats, t);
            assert_eq!(due, expected, "minute {t}");
        }
        assert!(wheel.is_empty());
    }

    #[test]
    fn big_jumps_hand_out_in_time_order() {
        let mut rng = Rng(7);
        let start = NOW_2026 + 17;
        let mut wheel = Wheel::new(Minute(start));
        let mut expected = Vec::new();
        for job in 0..20_000 {
            // Clustered minutes give ties; the spread covers every level and the overflow.
            let at = start
                + 1
                + match job % 4 {
                    0 => rng.below(50) as i64,
                    1 => rng.below(5_000) as i64,
                    2 => rng.below(5 * YEAR as u64) as i64,
                    _ => rng.below(40 * YEAR as u64) as i64,
                };
            assert_eq!(wheel.insert(JobId(job), Minute(at)), Ok(()));
            expected.push((JobId(job), Minute(at)));
        }
        wheel.check_invariants();
        let expected = sorted(expected);
        let mut all = Vec::new();
        let mut to = start;
        while !wheel.is_empty() {
            to += YEAR;
            let due = advance(&mut wheel, to);
            assert_in_time_order(&due);
            assert!(due.iter().all(|&(_, at)| at.0 > to - YEAR && at.0 <= to));
            all.extend(due);
        }
        assert_in_time_order(&all);
        assert_eq!(sorted(all), expected);
    }

    #[test]
    fn next_due_is_a_lower_bound_exact_on_level_0() {
        let mut wheel = Wheel::new(Minute(0));
        insert(&mut wheel, 0, 30);
        assert_eq!(wheel.next_due(), Some(Minute(30)));
        insert(&mut wheel, 1, 10);
        assert_eq!(wheel.next_due(), Some(Minute(10)));
        wheel.remove(JobId(1));
        let bound = wheel.next_due().unwrap();
        assert!(
            bound > Minute(0) && bound <= Minute(30),
            "stale entries may lower it: {bound:?}"
        );
        wheel.remove(JobId(0));
        assert_eq!(wheel.next_due(), None, "nothing live");

        // 5 000 = 4 096 + 14 × 64 + 8: level 1 from 0, then each stop refines the bound.
        let mut wheel = Wheel::new(Minute(0));
        insert(&mut wheel, 0, 5_000);
        assert_eq!(wheel.next_due(), Some(Minute(4_096)));
        assert!(advance(&mut wheel, 4_096).is_empty());
        assert_eq!(wheel.next_due(), Some(Minute(4_992)));
        assert!(advance(&mut wheel, 4_992).is_empty());
        assert_eq!(wheel.next_due(), Some(Minute(5_000)));

        // Beyond the levels the exact minute is reported.
        let mut wheel = Wheel::new(Minute(0));
        insert(&mut wheel, 0, SPAN + 77);
        assert_eq!(wheel.next_due(), Some(Minute(SPAN + 77)));
        assert!(advance(&mut wheel, SPAN + 76).is_empty());
        assert_eq!(
            advance(&mut wheel, SPAN + 77),
            [(JobId(0), Minute(SPAN + 77))]
        );
    }

    /// Skipping idle minutes through `next_due` gives the same hand-outs as ticking every minute.
    #[test]
    fn skipping_with_next_due_matches_minute_by_minute() {
        let mut rng = Rng(11);
        let start = NOW_2026 + 5;
        let end = start + 3 * 1_440;
        let periods: Vec<i64> = (0..300).map(|_| 1 + rng.below(2_000) as i64).collect();
        let fresh = || {
            let mut wheel = Wheel::new(Minute(start));
            for (job, &period) in (0..).zip(&periods) {
                insert(&mut wheel, job, start + period);
            }
            wheel
        };
        let reinsert = |wheel: &mut Wheel, due: &Due| {
            for &(job, at) in due {
                insert(wheel, job.0, at.0 + periods[job.0 as usize]);
            }
        };
        let (mut ticking, mut skipping) = (fresh(), fresh());
        let mut ticked = Vec::new();
        for t in start + 1..=end {
            let due = advance(&mut ticking, t);
            reinsert(&mut ticking, &due);
            ticked.extend(due);
        }
        let mut skipped = Vec::new();
        let mut stops = 0;
        while skipping.now() < Minute(end) {
            let next = skipping.next_due().map_or(end, |m| m.0.min(end));
            let due = advance(&mut skipping, next);
            reinsert(&mut skipping, &due);
            skipped.extend(due);
            stops += 1;
        }
        assert_eq!(skipped, ticked);
        assert!(stops < 3 * 1_440, "skipping should skip: {stops} stops");
    }

    #[test]
    fn extreme_minutes() {
        let mut wheel = Wheel::new(Minute(0));
        insert(&mut wheel, 0, i64::MAX);
        insert(&mut wheel, 1, i64::MAX - 1);
        assert_eq!(wheel.next_due(), Some(Minute(i64::MAX - 1)));
        let due = advance(&mut wheel, i64::MAX);
        assert_eq!(
            due,
            [
                (JobId(1), Minute(i64::MAX - 1)),
                (JobId(0), Minute(i64::MAX))
            ]
        );
        assert_eq!(wheel.now(), Minute(i64::MAX));
        assert!(wheel.insert(JobId(0), Minute(i64::MAX)).is_err());
    }

    #[test]
    fn sparse_job_ids_grow_the_table() {
        let mut wheel = Wheel::new(Minute(0));
        insert(&mut wheel, 1_000, 5);
        assert_eq!(wheel.jobs.len(), 1_001);
        assert_eq!(wheel.scheduled_at(JobId(999)), None);
        assert_eq!(wheel.scheduled_at(JobId(1_000)), Some(Minute(5)));
        assert_eq!(wheel.scheduled_at(JobId(u32::MAX)), None);
        assert_eq!(wheel.remove(JobId(u32::MAX)), None);
    }

    /// Reschedule and remove churn must not pile up stale entries.
    #[test]
    fn churn_is_swept() {
        let mut rng = Rng(3);
        let mut wheel = Wheel::new(Minute(NOW_2026));
        let mut latest = BTreeMap::new();
        for round in 0..2_000 {
            let job = rng.below(100) as u32;
            if round % 7 == 0 {
                assert_eq!(wheel.remove(JobId(job)), latest.remove(&job).map(Minute));
            } else {
                let at = NOW_2026 + 1 + rng.below(40 * YEAR as u64) as i64;
                insert(&mut wheel, job, at);
                latest.insert(job, at);
            }
            assert!(
                wheel.entries() <= wheel.len() + COMPACT_MIN.max(wheel.len() / 2),
                "{wheel:?}"
            );
        }
        let due = advance(&mut wheel, NOW_2026 + 41 * YEAR);
        assert_in_time_order(&due);
        let expected: Due = latest
            .into_iter()
            .map(|(job, at)| (JobId(job), Minute(at)))
            .collect();
        assert_eq!(sorted(due), sorted(expected));
        assert_eq!(wheel.entries(), 0);
    }

    /// The benchmark's scale: a million jobs spread over a year.
    #[test]
    fn a_million_jobs_fit_and_come_out_in_order() {
        const JOBS: u32 = 1_000_000;
        let mut rng = Rng(1);
        let start = NOW_2026;
        let mut wheel = Wheel::new(Minute(start));
        for job in 0..JOBS {
            let at = start + 1 + rng.below(YEAR as u64) as i64;
            assert!(wheel.insert(JobId(job), Minute(at)).is_ok());
        }
        assert_eq!(wheel.len(), JOBS as usize);
        let bytes = wheel.heap_bytes();
        // About 35 MB: a 16 MB job table and 16-byte entries with some vector slack.
        assert!(bytes < 48 << 20, "{bytes} bytes for a million jobs");

        let mut due = Vec::with_capacity(JOBS as usize);
        wheel.advance(Minute(start + YEAR), &mut due);
        assert_eq!(due.len(), JOBS as usize);
        assert_in_time_order(&due);
        let mut seen = vec![false; JOBS as usize];
        for (job, _) in due {
            assert!(!std::mem::replace(&mut seen[job.0 as usize], true));
        }
        assert!(wheel.is_empty());
        wheel.check_invariants();
    }

    /// Where a minute to insert at or advance to lies, relative to the wheel's current minute.
    #[derive(Clone, Debug)]
    enum Target {
        /// `now + d`; non-positive `d` makes an insert be refused or an advance do nothing.
        After(i64),
        /// `offset` minutes from the `ahead`-th 64^`power` boundary after `now`: the cascades.
        Boundary {
            power: usize,
            ahead: i64,
            offset: i64,
        },
    }

    impl Target {
        fn resolve(&self, now: i64) -> i64 {
            match *self {
                Target::After(d) => now + d,
                Target::Boundary {
                    power,
                    ahead,
                    offset,
                } => {
                    let width = slot_width(power) as i64;
                    (now / width + ahead) * width + offset
                }
            }
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u32, Target),
        Remove(u32),
        Advance(Target),
        AdvanceToNextDue,
    }

    const MODEL_JOBS: u32 = 24;

    fn target() -> impl Strategy<Value = Target> {
        prop_oneof![
            3 => (-3i64..=3).prop_map(Target::After),
            3 => (1i64..=130).prop_map(Target::After),
            2 => (1i64..=10_000).prop_map(Target::After),
            2 => (1i64..=1 << 20).prop_map(Target::After),
            2 => (1i64..=1 << 26).prop_map(Target::After),
            1 => (1i64..=1 << 34).prop_map(Target::After),
            3 => (1..=LEVELS, 1i64..=3, -2i64..=2)
                .prop_map(|(power, ahead, offset)| Target::Boundary { power, ahead, offset }),
        ]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..MODEL_JOBS, target()).prop_map(|(job, at)| Op::Insert(job, at)),
            1 => (0..MODEL_JOBS).prop_map(Op::Remove),
            3 => target().prop_map(Op::Advance),
            1 => Just(Op::AdvanceToNextDue),
        ]
    }

    fn start() -> impl Strategy<Value = i64> {
        prop_oneof![
            0i64..200,
            Just(NOW_2026),
            2 * SPAN - 300..2 * SPAN,
            0i64..1 << 40,
        ]
    }

    /// Runs `ops` against the wheel and a map from job to minute, which must agree throughout.
    /// With `append_only`, on a [`Wheel::append_only`] wheel: the ops its contract rules out
    /// (inserting a job that is scheduled, removing) are skipped.
    fn agrees_with_model(start: i64, ops: &[Op], append_only: bool) -> Result<(), TestCaseError> {
        let mut wheel = if append_only {
            Wheel::append_only(Minute(start))
        } else {
            Wheel::new(Minute(start))
        };
        let mut model: BTreeMap<u32, i64> = BTreeMap::new();
        let mut now = start;
        for op in ops {
            let to = match op {
                Op::Insert(job, _) | Op::Remove(job) if append_only && model.contains_key(job) => {
                    None
                }
                Op::Remove(_) if append_only => None,
                Op::Insert(job, target) => {
                    let at = target.resolve(now);
                    let got = wheel.insert(JobId(*job), Minute(at));
                    if at > now {
                        prop_assert_eq!(got, Ok(()));
                        model.insert(*job, at);
                    } else {
                        let refused = InsertError::NotInFuture {
                            job: JobId(*job),
                            at: Minute(at),
                            now: Minute(now),
                        };
                        prop_assert_eq!(got, Err(refused));
                    }
                    None
                }
                Op::Remove(job) => {
                    prop_assert_eq!(wheel.remove(JobId(*job)), model.remove(job).map(Minute));
                    None
                }
                Op::Advance(target) => Some(target.resolve(now)),
                Op::AdvanceToNextDue => wheel.next_due().map(|m| m.0),
            };
            if let Some(to) = to {
                let mut due = Vec::new();
                wheel.advance(Minute(to), &mut due);
                for pair in due.windows(2) {
                    prop_assert!(pair[0].1 <= pair[1].1, "out of order: {:?}", due);
                }
                let mut expected = Vec::new();
                if to > now {
                    model.retain(|&job, &mut at| {
                        let fires = at <= to;
                        if fires {
                            expected.push((JobId(job), Minute(at)));
                        }
                        !fires
                    });
                    now = to;
                }
                prop_assert_eq!(sorted(due), sorted(expected), "advancing to {}", to);
            }
            wheel.check_invariants();
            prop_assert_eq!(wheel.now(), Minute(now));
            prop_assert_eq!(wheel.len(), model.len());
            prop_assert_eq!(wheel.is_empty(), model.is_empty());
            for job in 0..=MODEL_JOBS {
                prop_assert_eq!(
                    wheel.scheduled_at(JobId(job)),
                    model.get(&job).copied().map(Minute)
                );
            }
            let earliest = model.values().min().copied();
            match (wheel.next_due(), earliest) {
                (None, None) => {}
                (Some(bound), Some(earliest)) => {
                    prop_assert!(
                        bound.0 > now && bound.0 <= earliest,
                        "{:?} vs {}",
                        bound,
                        earliest
                    );
                }
                (bound, earliest) => prop_assert!(false, "next_due {:?} vs {:?}", bound, earliest),
            }
            let mut visited = Vec::new();
            wheel.visit_in_order(|batch| {
                visited.extend_from_slice(batch);
                true
            });
            let mut expected: Due = model
                .iter()
                .map(|(&j, &at)| (JobId(j), Minute(at)))
                .collect();
            expected.sort_by_key(|&(job, at)| (at, job));
            prop_assert_eq!(visited, expected);
        }
        Ok(())
    }

    /// An append-only wheel with a job inserted twice: debug builds refuse it (release builds
    /// would file it twice, which is why the caller must not).
    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "append-only wheel: job 3 inserted at minute 20 while scheduled")]
    fn append_only_wheel_refuses_a_scheduled_job_in_debug_builds() {
        let mut wheel = Wheel::append_only(Minute(0));
        insert(&mut wheel, 3, 10);
        let _ = wheel.insert(JobId(3), Minute(20));
    }

    #[test]
    #[should_panic(expected = "Wheel::remove on an append-only wheel")]
    fn append_only_wheel_cannot_remove() {
        let mut wheel = Wheel::append_only(Minute(0));
        insert(&mut wheel, 3, 10);
        wheel.remove(JobId(3));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn matches_a_simple_model(start in start(), ops in prop::collection::vec(op(), 1..200)) {
            agrees_with_model(start, &ops, false)?;
        }

        /// The same model, on an append-only wheel: every job inserted only while unscheduled.
        #[test]
        fn append_only_matches_a_simple_model(
            start in start(),
            ops in prop::collection::vec(op(), 1..200),
        ) {
            agrees_with_model(start, &ops, true)?;
        }
    }
}
