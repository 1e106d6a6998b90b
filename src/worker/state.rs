//! The worker's bookkeeping between Kafka and the executors, in one place so the consumer loop, the
//! rebalance callback and the completions agree: which partitions are ours, which offsets are owed an
//! execution, what waits in the local queue, and which `dispatchId`s finished recently. Pure and
//! synchronous (no Kafka, no tokio), so every rule is unit-tested here.
//!
//! ```text
//!  fetched record ──► admit ──► queue ──► next_ready ──► (execute, report) ──► finish ──► to_commit
//!                       │ not JobMessage v1 ──► Malformed (DLQ, then finish)
//!                       │ scheduledAt beyond now + 11 min ──► FutureSlot (DLQ, then finish)
//!                       │ notBefore later than now ──► held (at most 10 min) ──► release_held ──► queue
//!  rebalance: assign (new epoch) / revoke (commit what is done, drop its queued records)
//!  with --dedupe-window: assign ──► gated (records wait, unrun) ──► rebuilt (proofs from the
//!                                   results topic known) ──► the waiting records are admitted
//! ```
//!
//! Each assignment of a partition gets a new epoch. An execution that finishes after its partition
//! was revoked (and maybe assigned back) carries the old epoch and does not move the new offsets: the
//! record was re-fetched and is accounted for again under the new epoch (and then skipped as a
//! recently finished `dispatchId`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::DateTime;

use super::dedup::{Proof, RecentlyFinished};
use super::offsets::PartitionOffsets;
use super::queue::{LocalQueue, Ordering, Queued};
use crate::wire::job::parse_message;
use crate::wire::result::OriginalDigest;
use crate::wire::{JobMessage, Overlap};

/// A topic-partition.
pub type Tp = (Arc<str>, i32);

/// Identifies one fetched record under one assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// The assignment it was fetched under.
    pub epoch: u64,
}

/// A record as the consumer handed it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Vec<u8>,
    /// Value.
    pub value: Vec<u8>,
}

/// What became of a fetched record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Waiting in the local queue.
    Queued,
    /// Not a JobMessage v1: dead-letter it, then [`WorkerState::finish_unrunnable`].
    Malformed {
        /// Its ticket.
        ticket: Ticket,
        /// Why it cannot be read.
        error: String,
        /// The record's key, for the dead letter.
        key: Vec<u8>,
        /// The record's value, for the dead letter.
        value: Vec<u8>,
    },
    /// Its `scheduledAt` is later than this worker's clock + [`MAX_FUTURE_SLOT_MS`]: no
    /// dispatcher sends a slot that early, and holding it would hold its job's later runs and its
    /// partition's commits. Dead-letter it (reason `future_slot`), then
    /// [`WorkerState::finish_unrunnable`]. Its `dispatchId` is not remembered: the real run of that
    /// slot, when it comes, runs.
    FutureSlot {
        /// Its ticket.
        ticket: Ticket,
        /// The message.
        message: JobMessage,
        /// The record's digest when it is too large to copy into a dead letter.
        oversized: Option<OriginalDigest>,
        /// Why, for the dead letter's `error`.
        error: String,
    },
    /// The partition is not (or no longer) assigned here; the record is ignored.
    NotAssigned,
    /// `"overlap": "skip"` and a run of the job is running or queued here: not run. Report it
    /// `skipped`, then [`WorkerState::decided`].
    Skipped {
        /// Its ticket.
        ticket: Ticket,
        /// The message.
        message: JobMessage,
    },
    /// `"overlap": "replace"`: the record is queued (it waits until no run of its job executes);
    /// cancel the runs of `job_name` executing now, and report each of `superseded` (its queued
    /// runs, taken out of the queue) `cancelled`, then [`WorkerState::decided`].
    Replacing {
        /// The job whose executing runs are to be cancelled.
        job_name: String,
        /// Whether a run of it is executing (something to cancel).
        running: bool,
        /// Its runs that were waiting, now never started.
        superseded: Vec<(Ticket, JobMessage)>,
    },
    /// The partition's dedupe state is being rebuilt from the results topic: the record waits,
    /// unrun, and is handed back by [`WorkerState::rebuilt`].
    Gated,
}

/// What an executor should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Run it, then [`WorkerState::finish`]. The digest is there when the record is too large to
    /// copy into a dead letter.
    Run(Ticket, JobMessage, Option<OriginalDigest>),
    /// Finished here recently: skip it, then [`WorkerState::finish`] with `ran = false`.
    Duplicate(Ticket, JobMessage),
}

#[derive(Debug)]
struct Assigned {
    epoch: u64,
    offsets: PartitionOffsets,
}

#[derive(Debug, Clone)]
struct Pending {
    ticket: Ticket,
    message: JobMessage,
    oversized: Option<OriginalDigest>,
    /// The record's key and value in bytes.
    size: usize,
}

/// A message's `notBefore` in milliseconds (`None` without one), at most
/// [`MAX_NOT_BEFORE_WAIT_MS`] after its slot and after `now_ms`; an error naming the value when it
/// is not an instant.
fn not_before_ms(
    message: &JobMessage,
    scheduled_at_ms: i64,
    now_ms: i64,
) -> Result<Option<i64>, String> {
    let Some(text) = &message.not_before else {
        return Ok(None);
    };
    let at = DateTime::parse_from_rfc3339(text)
        .map_err(|e| format!("notBefore {text:?} is not an RFC 3339 instant: {e}"))?
        .timestamp_millis();
    Ok(Some(
        at.min(scheduled_at_ms.saturating_add(MAX_NOT_BEFORE_WAIT_MS))
            .min(now_ms.saturating_add(MAX_NOT_BEFORE_WAIT_MS)),
    ))
}

/// Why a record's slot is too far ahead of `now_ms` to be taken in (see [`Admission::FutureSlot`]).
fn future_slot(message: &JobMessage, scheduled_at_ms: i64, now_ms: i64) -> Option<String> {
    let ahead_ms = scheduled_at_ms.saturating_sub(now_ms);
    (ahead_ms > MAX_FUTURE_SLOT_MS).then(|| {
        let now = DateTime::from_timestamp_millis(now_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_else(|| now_ms.to_string());
        format!(
            "scheduledAt {} is {} ahead of this worker's clock ({now}), more than the 10 min a run may be held plus {} of clock skew: not run",
            message.scheduled_at,
            humantime::format_duration(std::time::Duration::from_secs(
                u64::try_from(ahead_ms / 1000).unwrap_or(u64::MAX)
            )),
            humantime::format_duration(std::time::Duration::from_millis(FUTURE_SKEW_MS as u64)),
        )
    })
}

/// A record held for its `notBefore`.
#[derive(Debug)]
struct Held {
    job: Queued<Pending>,
    /// Within the allowance that does not count against `--prefetch` (it was held while fewer
    /// than [`MAX_HELD`] records, of fewer than `--max-held-bytes` with it, were).
    free: bool,
}

/// The worker's state.
#[derive(Debug)]
pub struct WorkerState {
    partitions: HashMap<Tp, Assigned>,
    queue: LocalQueue<Pending>,
    recent: RecentlyFinished,
    epochs: u64,
    /// Records whose `notBefore` has not come, by (`notBefore` in ms, arrival): not in the queue,
    /// so they hold no executor and block no other job; their offsets stay unfinished.
    held: BTreeMap<(i64, u64), Held>,
    /// Per `jobName` with held records: how many, and the latest `notBefore` among them (a later
    /// record of the name waits at least that long, so runs of one job keep their order).
    held_names: HashMap<String, (usize, i64)>,
    held_arrivals: u64,
    /// Held records that do not count against `--prefetch`, and their bytes.
    held_free: (usize, usize),
    /// `--max-held-bytes`.
    max_held_bytes: usize,
    /// Whether each assignment waits for the dedupe state to be rebuilt from the results topic
    /// ([`WorkerState::rebuild_on_assign`]).
    rebuild_on_assign: bool,
    /// Assigned partitions whose rebuild is not done: their fetched records, in fetch order.
    gated: HashMap<Tp, Vec<Fetched>>,
    /// Assignments (partition, epoch) whose rebuild is still to be started.
    to_rebuild: Vec<(Tp, u64)>,
    /// `--max-attempts` and `--max-attempts-cap`: a record whose failed attempts in the results
    /// topic reached its attempts ([`JobMessage::attempts`]) is done.
    max_attempts: (u32, u32),
}

/// Held records (waiting for their `notBefore`) that do not count against `--prefetch`.
pub const MAX_HELD: usize = 10_000;

/// `--max-held-bytes`' default: the bytes (keys and values) of held records that do not count
/// against `--prefetch`.
pub const DEFAULT_MAX_HELD_BYTES: usize = 64 * 1024 * 1024;

/// The clock skew between a dispatcher and a worker that a record's `scheduledAt` is allowed.
pub const FUTURE_SKEW_MS: i64 = 60_000;

/// How far a record's `scheduledAt` may be ahead of the worker's clock: the longest a `notBefore`
/// may hold a run ([`MAX_NOT_BEFORE_WAIT_MS`]) plus [`FUTURE_SKEW_MS`]. A dispatcher sends a slot
/// at its time or later (an `at` job's within its minute), so a record further ahead was forged or
/// written under a wrong clock; one within the bound is held no longer than a jittered run is.
pub const MAX_FUTURE_SLOT_MS: i64 = MAX_NOT_BEFORE_WAIT_MS + FUTURE_SKEW_MS;

/// The latest a record's `notBefore` may be after its `scheduledAt`: the schedule's cap on
/// `jitter`. A later one (no cronq dispatcher writes it) is read as this, so a record cannot hold
/// its partition's commits for longer.
pub const MAX_NOT_BEFORE_WAIT_MS: i64 = crate::wire::job::MAX_JITTER.as_millis() as i64;

impl WorkerState {
    /// Empty state.
    pub fn new(ordering: Ordering, dedup_capacity: usize) -> WorkerState {
        WorkerState {
            partitions: HashMap::new(),
            queue: LocalQueue::new(ordering),
            recent: RecentlyFinished::new(dedup_capacity),
            epochs: 0,
            held: BTreeMap::new(),
            held_names: HashMap::new(),
            held_arrivals: 0,
            held_free: (0, 0),
            max_held_bytes: DEFAULT_MAX_HELD_BYTES,
            rebuild_on_assign: false,
            gated: HashMap::new(),
            to_rebuild: Vec::new(),
            max_attempts: (u32::MAX, u32::MAX),
        }
    }

    /// From now on, the records of each assigned partition wait until the dedupe state was
    /// rebuilt from the results topic ([`WorkerState::take_rebuilds`], [`WorkerState::rebuilt`]).
    /// `max_attempts` and `cap`: `--max-attempts` and `--max-attempts-cap`
    /// ([`JobMessage::attempts`]).
    pub fn rebuild_on_assign(&mut self, max_attempts: u32, cap: u32) {
        self.rebuild_on_assign = true;
        self.max_attempts = (max_attempts, cap);
    }

    /// The assignments (partition, epoch) whose rebuild is to be started now.
    pub fn take_rebuilds(&mut self) -> Vec<(Tp, u64)> {
        std::mem::take(&mut self.to_rebuild)
    }

    /// A rebuild of these assignments did not finish: it is to be started again.
    pub fn rebuild_again(&mut self, assignments: Vec<(Tp, u64)>) {
        self.to_rebuild.extend(assignments);
    }

    /// Records what the results topic proves (oldest first: when more than `--dedup-capacity`
    /// ids come, the oldest are forgotten), then opens `assignments` whose epoch is still current:
    /// returns their waiting records, in fetch order, to be admitted again.
    pub fn rebuilt(
        &mut self,
        assignments: &[(Tp, u64)],
        proofs: impl IntoIterator<Item = (String, Proof)>,
    ) -> Vec<Fetched> {
        for (dispatch_id, proof) in proofs {
            self.recent.prove(&dispatch_id, proof);
        }
        let mut waiting = Vec::new();
        for (tp, epoch) in assignments {
            if self.partitions.get(tp).is_some_and(|a| a.epoch == *epoch) {
                waiting.extend(self.gated.remove(tp).unwrap_or_default());
            }
        }
        waiting
    }

    /// Assigned partitions whose rebuild is not done.
    pub fn rebuilding(&self) -> usize {
        self.gated.len()
    }

    /// With `--max-held-bytes`: held records beyond these bytes count against `--prefetch`.
    pub fn with_max_held_bytes(mut self, bytes: usize) -> WorkerState {
        self.max_held_bytes = bytes;
        self
    }

    /// Partitions were assigned to this member (added to any it has).
    pub fn assign(&mut self, tps: impl IntoIterator<Item = Tp>) {
        for tp in tps {
            self.epochs += 1;
            if self.rebuild_on_assign {
                self.gated.insert(tp.clone(), Vec::new());
                self.to_rebuild.push((tp.clone(), self.epochs));
            }
            self.partitions.insert(
                tp,
                Assigned {
                    epoch: self.epochs,
                    offsets: PartitionOffsets::new(),
                },
            );
        }
    }

    /// Partitions were taken away: returns the positions to commit for them now (what finished),
    /// and drops their queued records (the next owner reads them again).
    pub fn revoke(&mut self, tps: &[Tp]) -> Vec<(Tp, i64)> {
        let mut commits = Vec::new();
        for tp in tps {
            self.gated.remove(tp);
            if let Some(a) = self.partitions.remove(tp) {
                if let Some(position) = a.offsets.to_commit() {
                    commits.push((tp.clone(), position));
                }
            }
        }
        self.queue.retain(|p| {
            !tps.iter()
                .any(|(t, part)| *t == p.ticket.topic && *part == p.ticket.partition)
        });
        self.drop_held(|p| {
            tps.iter()
                .any(|(t, part)| *t == p.ticket.topic && *part == p.ticket.partition)
        });
        commits
    }

    /// The partitions assigned here.
    pub fn assigned(&self) -> Vec<Tp> {
        self.partitions.keys().cloned().collect()
    }

    /// Takes in a fetched record, as [`WorkerState::admit_at`] with no `notBefore` waited for.
    pub fn admit(&mut self, record: Fetched) -> Admission {
        self.admit_at(record, i64::MAX)
    }

    /// Takes in a fetched record at `now_ms` (milliseconds since the epoch): a record whose
    /// `notBefore` is later waits, held aside, until [`WorkerState::release_held`] at that time
    /// puts it in the queue; it waits at most 10 minutes past its slot and past `now_ms`. A
    /// `notBefore` that is not an RFC 3339 instant makes the record malformed; a `scheduledAt`
    /// beyond `now_ms` + [`MAX_FUTURE_SLOT_MS`] is [`Admission::FutureSlot`].
    pub fn admit_at(&mut self, record: Fetched, now_ms: i64) -> Admission {
        let tp: Tp = (record.topic.clone(), record.partition);
        let Some(assigned) = self.partitions.get_mut(&tp) else {
            return Admission::NotAssigned;
        };
        if let Some(waiting) = self.gated.get_mut(&tp) {
            waiting.push(record);
            return Admission::Gated;
        }
        assigned.offsets.start(record.offset);
        let ticket = Ticket {
            topic: record.topic,
            partition: record.partition,
            offset: record.offset,
            epoch: assigned.epoch,
        };
        let size = record.key.len() + record.value.len();
        match parse_message(&record.key, &record.value) {
            Ok(message) => {
                // parse_message checked that it is an instant.
                let scheduled_at_ms = DateTime::parse_from_rfc3339(&message.scheduled_at)
                    .map(|t| t.timestamp_millis())
                    .unwrap_or(i64::MAX);
                if let Some(error) = future_slot(&message, scheduled_at_ms, now_ms) {
                    return Admission::FutureSlot {
                        ticket,
                        message,
                        oversized: OriginalDigest::if_oversized(&record.value),
                        error,
                    };
                }
                if self.skips(&message) {
                    return Admission::Skipped { ticket, message };
                }
                let not_before_ms = match not_before_ms(&message, scheduled_at_ms, now_ms) {
                    Ok(at) => at,
                    Err(error) => {
                        return Admission::Malformed {
                            ticket,
                            error,
                            key: record.key,
                            value: record.value,
                        }
                    }
                };
                let job = Queued {
                    priority: message.priority,
                    scheduled_at_ms,
                    job_name: message.job_name.clone(),
                    dispatch_id: message.dispatch_id.clone(),
                    overlap: message.overlap,
                    item: Pending {
                        ticket,
                        message,
                        oversized: OriginalDigest::if_oversized(&record.value),
                        size,
                    },
                };
                // Only a record that will be taken in replaces: a malformed one returned above.
                let replacing = self.replaces(&job.item.message);
                self.queue_or_hold(job, not_before_ms, now_ms);
                replacing.unwrap_or(Admission::Queued)
            }
            Err(error) => Admission::Malformed {
                ticket,
                error,
                key: record.key,
                value: record.value,
            },
        }
    }

    /// A record of a job with `"overlap": "skip"` is not run while a run of the job executes or
    /// waits here, unless it is that same record again (a re-fetch after a rebalance, or a
    /// duplicate): that one takes the usual way, and is skipped as a duplicate.
    fn skips(&self, message: &JobMessage) -> bool {
        message.overlap == Some(Overlap::Skip)
            && self.busy(&message.job_name)
            && !self.is_known(&message.dispatch_id)
    }

    /// For a record of a job with `"overlap": "replace"` (and not a copy of a record held or
    /// finished here): takes the job's waiting runs out of the queue and says whether one
    /// executes. None when there is nothing to replace.
    fn replaces(&mut self, message: &JobMessage) -> Option<Admission> {
        if message.overlap != Some(Overlap::Replace)
            || !self.busy(&message.job_name)
            || self.is_known(&message.dispatch_id)
        {
            return None;
        }
        let mut superseded: Vec<(Ticket, JobMessage)> = self
            .queue
            .take_queued(&message.job_name)
            .into_iter()
            .map(|q| (q.item.ticket, q.item.message))
            .collect();
        // Runs held for their notBefore wait too: they are replaced as well.
        superseded.extend(
            self.take_held(&message.job_name)
                .into_iter()
                .map(|p| (p.ticket, p.message)),
        );
        Some(Admission::Replacing {
            job_name: message.job_name.clone(),
            running: self.queue.busy(&message.job_name),
            superseded,
        })
    }

    fn is_known(&self, dispatch_id: &str) -> bool {
        self.queue.holds(dispatch_id)
            || self.recent.contains(dispatch_id)
            || (!self.held.is_empty()
                && self.held.values().any(|h| h.job.dispatch_id == dispatch_id))
    }

    /// A run of `job_name` executes, waits in the queue, or is held for its notBefore.
    fn busy(&self, job_name: &str) -> bool {
        self.queue.busy(job_name) || self.held_names.contains_key(job_name)
    }

    /// Takes the runs of `job_name` held for their notBefore out, earliest first.
    fn take_held(&mut self, job_name: &str) -> Vec<Pending> {
        if !self.held_names.contains_key(job_name) {
            return Vec::new();
        }
        let keys: Vec<(i64, u64)> = self
            .held
            .iter()
            .filter(|(_, h)| h.job.job_name == job_name)
            .map(|(k, _)| *k)
            .collect();
        keys.into_iter()
            .filter_map(|k| self.remove_held(&k))
            .map(|job| job.item)
            .collect()
    }

    /// A record not run because of its job's overlap policy (skipped, or a waiting run replaced)
    /// was reported: its `dispatchId` counts as done (a copy of it is a duplicate), and its offset
    /// may be committed past.
    pub fn decided(&mut self, ticket: &Ticket, dispatch_id: &str) {
        self.recent.insert(dispatch_id);
        self.finish_offset(ticket);
    }

    /// Queues `job` unless its `notBefore` (or that of a held earlier run of its name) is later
    /// than `now_ms`.
    fn queue_or_hold(&mut self, job: Queued<Pending>, not_before_ms: Option<i64>, now_ms: i64) {
        let after_held = self.held_names.get(&job.job_name).map(|(_, at)| *at);
        let at = match (not_before_ms, after_held) {
            (None, None) => None,
            (a, b) => a.max(b),
        };
        match at {
            Some(at) if at > now_ms => {
                let entry = self
                    .held_names
                    .entry(job.job_name.clone())
                    .or_insert((0, at));
                entry.0 += 1;
                entry.1 = entry.1.max(at);
                self.held_arrivals += 1;
                let (free_count, free_bytes) = self.held_free;
                let size = job.item.size;
                let free =
                    free_count < MAX_HELD && free_bytes.saturating_add(size) <= self.max_held_bytes;
                if free {
                    self.held_free = (free_count + 1, free_bytes + size);
                }
                self.held
                    .insert((at, self.held_arrivals), Held { job, free });
            }
            _ => self.queue.push(job),
        }
    }

    /// Takes one held record out, keeping the per-name and the free-allowance accounts.
    fn remove_held(&mut self, key: &(i64, u64)) -> Option<Queued<Pending>> {
        let Held { job, free } = self.held.remove(key)?;
        if free {
            let (count, bytes) = self.held_free;
            self.held_free = (count - 1, bytes - job.item.size);
        }
        if let Some(entry) = self.held_names.get_mut(&job.job_name) {
            entry.0 -= 1;
            if entry.0 == 0 {
                self.held_names.remove(&job.job_name);
            }
        }
        Some(job)
    }

    /// Moves the held records whose `notBefore` is at or before `now_ms` into the queue (earliest
    /// first); returns the next `notBefore` still held.
    pub fn release_held(&mut self, now_ms: i64) -> Option<i64> {
        while let Some(&key) = self.held.keys().next() {
            if key.0 > now_ms {
                return Some(key.0);
            }
            if let Some(job) = self.remove_held(&key) {
                self.queue.push(job);
            }
        }
        None
    }

    /// Records held for their `notBefore`.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// Drops the held records `drop` says yes to; returns how many.
    fn drop_held(&mut self, mut drop: impl FnMut(&Pending) -> bool) -> usize {
        let keys: Vec<(i64, u64)> = self
            .held
            .iter()
            .filter(|(_, h)| drop(&h.job.item))
            .map(|(k, _)| *k)
            .collect();
        for key in &keys {
            self.remove_held(key);
        }
        keys.len()
    }

    /// The next job for a free executor, if any may start.
    pub fn next_ready(&mut self) -> Option<Next> {
        let job = self.queue.pop_ready()?;
        let Pending {
            ticket,
            message,
            oversized,
            ..
        } = job.item;
        if self.is_done(&message) {
            Some(Next::Duplicate(ticket, message))
        } else {
            Some(Next::Run(ticket, message, oversized))
        }
    }

    /// `message` has a terminal result, or the results topic shows its attempts used up.
    fn is_done(&self, message: &JobMessage) -> bool {
        let id = &message.dispatch_id;
        self.recent.contains(id)
            || self.recent.attempts(id).is_some_and(|failed| {
                failed >= message.attempts(self.max_attempts.0, self.max_attempts.1)
            })
    }

    /// A job handed out by [`WorkerState::next_ready`] is done (`ran`: it was executed, not skipped):
    /// [`WorkerState::executed`] and [`WorkerState::reported`] at once.
    pub fn finish(&mut self, ticket: &Ticket, message: &JobMessage, ran: bool) {
        self.executed(message, ran);
        self.reported(ticket);
    }

    /// A job's last attempt is over, though its reports may still be on their way: the next run of
    /// its name may start, and its `dispatchId` counts as done. Its offset stays unfinished until
    /// [`WorkerState::reported`].
    pub fn executed(&mut self, message: &JobMessage, ran: bool) {
        self.queue.release(&message.job_name, &message.dispatch_id);
        if ran {
            self.recent.insert(&message.dispatch_id);
        }
    }

    /// A job's result (and dead letter, if any) is acked: its offset may be committed past.
    pub fn reported(&mut self, ticket: &Ticket) {
        self.finish_offset(ticket);
    }

    /// A job handed out never finished because its task died (a bug in the worker or an embedded
    /// handler, not a failed job): the ordering rule lets the next run of its name go. Its offset
    /// stays unfinished until it is dead-lettered ([`WorkerState::finish_unrunnable`]).
    pub fn abandon(&mut self, message: &JobMessage) {
        self.queue.release(&message.job_name, &message.dispatch_id);
    }

    /// A record that was not run (malformed, or its task died) was dead-lettered, or its dead
    /// letter was given up: its offset may be committed past.
    pub fn finish_unrunnable(&mut self, ticket: &Ticket) {
        self.finish_offset(ticket);
    }

    fn finish_offset(&mut self, ticket: &Ticket) {
        let tp: Tp = (ticket.topic.clone(), ticket.partition);
        if let Some(a) = self.partitions.get_mut(&tp) {
            if a.epoch == ticket.epoch {
                a.offsets.finish(ticket.offset);
            }
        }
    }

    /// Positions that moved since the last commit.
    pub fn to_commit(&self) -> Vec<(Tp, i64)> {
        self.partitions
            .iter()
            .filter_map(|(tp, a)| a.offsets.to_commit().map(|p| (tp.clone(), p)))
            .collect()
    }

    /// These positions were committed (or a commit is on its way).
    pub fn committed(&mut self, positions: &[(Tp, i64)]) {
        for (tp, position) in positions {
            if let Some(a) = self.partitions.get_mut(tp) {
                a.offsets.committed(*position);
            }
        }
    }

    /// A commit of these partitions failed: report their positions again next time.
    pub fn commit_failed(&mut self, tps: &[Tp]) {
        for tp in tps {
            if let Some(a) = self.partitions.get_mut(tp) {
                a.offsets.commit_failed();
            }
        }
    }

    /// Jobs waiting in the local queue, and the held ones (waiting for their `notBefore`) beyond
    /// the allowance: what counts against `--prefetch`. A record held while fewer than
    /// [`MAX_HELD`] records are held and their bytes (keys and values, its own included) stay
    /// within `--max-held-bytes` does not count, so records that arrived early (a dispatcher's
    /// shutdown sends its waiting ones at once) do not stop the fetching of the partition's other
    /// jobs; one held beyond either bound counts until it is released, which bounds the memory
    /// they take. Records waiting for their partition's rebuild count too.
    pub fn queued(&self) -> usize {
        self.queue.len()
            + (self.held.len() - self.held_free.0)
            + self.gated.values().map(Vec::len).sum::<usize>()
    }

    /// Drops every waiting job (shutdown: nothing new starts; uncommitted records are read again by
    /// the next owner). Returns how many.
    pub fn drop_queue(&mut self) -> usize {
        let gated: usize = self
            .gated
            .values_mut()
            .map(|w| std::mem::take(w).len())
            .sum();
        self.queue.retain(|_| false) + self.drop_held(|_| true) + gated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> Tp {
        (Arc::from("jobs"), p)
    }

    fn record(partition: i32, offset: i64, name: &str, priority: i32, minute: u32) -> Fetched {
        let at = format!("2026-11-26T03:{minute:02}:00Z");
        let m = JobMessage {
            v: 1,
            job_name: name.into(),
            priority,
            job: name.into(),
            cron_time: "* * * * *".into(),
            dispatch_id: format!("{name}@{at}"),
            not_before: None,
            scheduled_at: at,
            timeout_ms: None,
            max_attempts: None,
            overlap: None,
        };
        Fetched {
            topic: Arc::from("jobs"),
            partition,
            offset,
            key: name.as_bytes().to_vec(),
            value: serde_json::to_vec(&m).unwrap(),
        }
    }

    fn run_next(s: &mut WorkerState) -> (Ticket, JobMessage) {
        match s.next_ready() {
            Some(Next::Run(t, m, _)) => (t, m),
            other => panic!("expected a job to run, got {other:?}"),
        }
    }

    #[test]
    fn commits_follow_the_lowest_unfinished_offset_across_priorities() {
        let mut s = WorkerState::new(Ordering::Ordered, 100);
        s.assign([tp(0)]);
        s.admit(record(0, 0, "low", 0, 0));
        s.admit(record(0, 1, "high", 9, 0));
        let (t1, m1) = run_next(&mut s);
        assert_eq!(m1.job_name, "high");
        let (t0, m0) = run_next(&mut s);
        assert_eq!(s.to_commit(), vec![(tp(0), 0)]);
        s.finish(&t1, &m1, true);
        assert_eq!(s.to_commit(), vec![(tp(0), 0)], "offset 0 is still running");
        s.finish(&t0, &m0, true);
        assert_eq!(s.to_commit(), vec![(tp(0), 2)]);
        s.committed(&[(tp(0), 2)]);
        assert!(s.to_commit().is_empty());
    }

    /// Once a run is over, the next run of its name may start and its dispatchId is remembered,
    /// but the commit waits until its reports are acked.
    #[test]
    fn an_executed_job_frees_its_name_but_holds_the_commit_until_reported() {
        let mut s = WorkerState::new(Ordering::Ordered, 100);
        s.assign([tp(0)]);
        s.admit(record(0, 0, "a", 0, 0));
        s.admit(record(0, 1, "a", 0, 1));
        s.admit(record(0, 2, "a", 0, 0)); // slot 03:00 again
        let (t0, m0) = run_next(&mut s);
        assert!(s.next_ready().is_none(), "one run of a name at a time");
        s.executed(&m0, true);
        assert_eq!(
            s.to_commit(),
            vec![(tp(0), 0)],
            "its report is not acked yet"
        );
        let (t1, m1) = run_next(&mut s);
        assert_eq!(m1.scheduled_at, "2026-11-26T03:01:00Z");
        s.finish(&t1, &m1, true);
        assert_eq!(s.to_commit(), vec![(tp(0), 0)], "offset 0 still holds it");
        match s.next_ready() {
            Some(Next::Duplicate(t, m)) => s.finish(&t, &m, false),
            other => panic!("the executed dispatchId is a duplicate, got {other:?}"),
        }
        s.reported(&t0);
        assert_eq!(s.to_commit(), vec![(tp(0), 3)]);
    }

    #[test]
    fn a_malformed_record_holds_the_commit_until_dead_lettered() {
        let mut s = WorkerState::new(Ordering::Ordered, 100);
        s.assign([tp(0)]);
        let mut bad = record(0, 0, "x", 0, 0);
        bad.value = b"{not json".to_vec();
        let Admission::Malformed {
            ticket,
            error,
            value,
            ..
        } = s.admit(bad)
        else {
            panic!("not malformed")
        };
        assert!(!error.is_empty());
        assert_eq!(value, b"{not json");
        assert_eq!(s.to_commit(), vec![(tp(0), 0)]);
        s.finish_unrunnable(&ticket);
        assert_eq!(s.to_commit(), vec![(tp(0), 1)]);
        assert_eq!(s.queued(), 0);
    }

    #[test]
    fn a_recently_finished_dispatch_id_is_skipped_and_still_committed() {
        let mut s = WorkerState::new(Ordering::Ordered, 100);
        s.assign([tp(0)]);
        s.admit(record(0, 0, "a", 0, 0));
        let (t, m) = run_next(&mut s);
        s.finish(&t, &m, true);
        s.admit(record(0, 1, "a", 0, 0)); // the same slot delivered twice
        match s.next_ready() {
            Some(Next::Duplicate(t, m)) => s.finish(&t, &m, false),
            other => panic!("expected a duplicate, got {other:?}"),
        }
        assert_eq!(s.to_commit(), vec![(tp(0), 2)]);
    }

    /// With --dedupe-window, an assigned partition's records wait unrun (and uncommitted) until
    /// the results topic was read; a dispatchId it proves finished is then a duplicate.
    #[test]
    fn records_of_a_new_assignment_wait_for_the_rebuild_and_proven_ones_are_duplicates() {
        let mut s = WorkerState::new(Ordering::Ordered, 100);
        s.rebuild_on_assign(3, 10);
        s.assign([tp(0)]);
        let rebuilds = s.take_rebuilds();
        assert_eq!(rebuilds.len(), 1);
        assert!(s.take_rebuilds().is_empty(), "handed out once");
        assert_eq!(s.admit(record(0, 0, "a", 0, 0)), Admission::Gated);
        assert_eq!(s.admit(record(0, 1, "b", 0, 0)), Admission::Gated);
        assert_eq!(s.queued(), 2, "waiting records count against --prefetch");
        assert!(s.next_ready().is_none(), "nothing runs before the rebuild");
        assert!(s.to_commit().is_empty(), "nothing is committed past them");

        let proven = [("a@2026-11-26T03:00:00Z".to_string(), Proof::Finished)];
        let waiting = s.rebuilt(&rebuilds, proven);
        assert_eq!(waiting.iter().map(|r| r.offset).collect::<Vec<_>>(), [0, 1]);
        assert_eq!(s.rebuilding(), 0);
        for r in waiting {
            assert_eq!(s.admit(r), Admission::Queued);
        }
        match s.next_ready() {
            Some(Next::Duplicate(t, m)) => {
                assert_eq!(m.job_name, "a");
                s.finish(&t, &m, false);
            }
            other => panic!("a's result is in the results topic: a duplicate, got {other:?}"),
        }
        let (t, m) = run_next(&mut s);
        assert_eq!(m.job_name, "b");
        s.finish(&t, &m, true);
        assert_eq!(s.to_commit(), vec![(tp(0), 2)]);
    }

    /// A rebuild that ends after its partition was revoked and assigned again opens nothing: the
    /// new assignment waits for its own rebuild.
    #[test]
    fn a_rebuild_of_an_earlier_assignment_does_not_open_the_current_one() {
        let mut s = WorkerState::new(Ordering::Ordered, 100);
        s.rebuild_on_assign(3, 10);
        s.assign([tp(0)]);
        let first = s.take_rebuilds();
        assert_eq!(s.admit(record(0, 0, "a", 0, 0)), Admission::Gated);
        assert!(s.revoke(&[tp(0)]).is_empty());
        assert_eq!(
            s.queued(),
            0,
            "a revoked partition's waiting records are dropped"
        );
        s.assign([tp(0)]);
        let second = s.take_rebuilds();
        assert_eq!(s.admit(record(0, 0, "a", 0, 0)), Admission::Gated);
        assert!(s.rebuilt(&first, []).is_empty());
        assert_eq!(s.rebuilding(), 1);
        assert_eq!(s.rebuilt(&second, []).len(), 1);
    }

    /// Failed attempts in the results topic end a record only when they reach its attempts (its
    /// own maxAttempts, else --max-attempts); fewer, and it runs again.
    #[test]
    fn failed_attempts_in_the_results_topic_end_a_record_only_when_its_attempts_are_used_up() {
        let mut s = WorkerState::new(Ordering::Ordered, 100);
        s.rebuild_on_assign(3, 10);
        s.assign([tp(0)]);
        let rebuilds = s.take_rebuilds();
        let proven = [
            ("a@2026-11-26T03:00:00Z".to_string(), Proof::Attempted(3)),
            ("b@2026-11-26T03:00:00Z".to_string(), Proof::Attempted(2)),
        ];
        s.admit(record(0, 0, "a", 0, 0));
        s.admit(record(0, 1, "b", 0, 0));
        for r in s.rebuilt(&rebuilds, proven) {
            s.admit(r);
        }
        match s.next_ready() {
            Some(Next::Duplicate(_, m)) => assert_eq!(m.job_name, "a"),
            other => panic!("a used its 3 attempts: a duplicate, got {other:?}"),
        }
        let (_, m) = run_next(&mut s);
        assert_eq!(m.job_name, "b", "b had 2 of 3 attempts: it runs");
    }

    #[test]
    fn revoking_commits_what_finished_and_drops_queued_records_of_that_partition() {
        let mut s = WorkerState::new(Ordering::Ordered, 100);
        s.assign([tp(0), tp(1)]);
        s.admit(record(0, 0, "a", 0, 0));
        s.admit(record(0, 1, "b", 0, 0));
        s.admit(record(1, 0, "c", 0, 0));
        let (t, m) = run_next(&mut s); // a
        s.finish(&t, &m, true);
        let commits = s.revoke(&[tp(0)]);
        assert_eq!(
            commits,
            vec![(tp(0), 1)],
            "b was never run: the next owner gets it"
        );
        assert_eq!(s.queued(), 1);
        let (_, m) = run_next(&mut s);
        assert_eq!(m.job_name, "c");
        assert_eq!(
            s.admit(record(0, 2, "z", 0, 0)),
            Admission::NotAssigned,
            "records of a revoked partition still in flight are ignored"
        );
    }

    #[test]
    fn a_run_finishing_after_its_partition_came_back_does_not_move_the_new_offsets() {
        let mut s = WorkerState::new(Ordering::Ordered, 100);
        s.assign([tp(0)]);
        s.admit(record(0, 5, "slow", 0, 0));
        let (old, m) = run_next(&mut s);
        s.revoke(&[tp(0)]);
        s.assign([tp(0)]);
        // The partition restarts from the committed offset: 5 is fetched again.
        s.admit(record(0, 5, "slow", 0, 0));
        assert!(s.next_ready().is_none(), "waits for the running copy");
        s.finish(&old, &m, true);
        assert_eq!(
            s.to_commit(),
            vec![(tp(0), 5)],
            "old epoch: the re-fetched 5 is still owed"
        );
        match s.next_ready() {
            Some(Next::Duplicate(t, m)) => s.finish(&t, &m, false),
            other => panic!("expected the re-fetched copy to be skipped, got {other:?}"),
        }
        assert_eq!(s.to_commit(), vec![(tp(0), 6)]);
    }

    #[test]
    fn a_failed_commit_is_reported_again() {
        let mut s = WorkerState::new(Ordering::Ordered, 100);
        s.assign([tp(0)]);
        s.admit(record(0, 0, "a", 0, 0));
        let (t, m) = run_next(&mut s);
        s.finish(&t, &m, true);
        s.committed(&s.to_commit());
        assert!(s.to_commit().is_empty());
        s.commit_failed(&[tp(0)]);
        assert_eq!(s.to_commit(), vec![(tp(0), 1)]);
    }

    fn with_overlap(mut r: Fetched, overlap: &str) -> Fetched {
        let mut v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        v["overlap"] = overlap.into();
        r.value = serde_json::to_vec(&v).unwrap();
        r
    }

    #[test]
    fn skip_does_not_run_a_record_while_a_run_of_its_job_executes_or_waits() {
        let mut s = WorkerState::new(Ordering::Ordered, 100);
        s.assign([tp(0)]);
        assert_eq!(
            s.admit(with_overlap(record(0, 0, "a", 0, 0), "skip")),
            Admission::Queued,
            "nothing of a here: it runs"
        );
        let (t0, m0) = run_next(&mut s);
        let Admission::Skipped { ticket, message } =
            s.admit(with_overlap(record(0, 1, "a", 0, 1), "skip"))
        else {
            panic!("a@03:00 executes: a@03:01 is skipped")
        };
        assert_eq!(message.scheduled_at, "2026-11-26T03:01:00Z");
        // Another job is not affected, and a copy of the executing record is not "skipped": it
        // waits and is then dropped as a duplicate.
        assert_eq!(
            s.admit(with_overlap(record(0, 2, "b", 0, 1), "skip")),
            Admission::Queued
        );
        assert_eq!(
            s.admit(with_overlap(record(0, 3, "a", 0, 0), "skip")),
            Admission::Queued
        );
        // Waiting counts as busy too: b is queued, so a later b is skipped.
        assert!(matches!(
            s.admit(with_overlap(record(0, 4, "b", 0, 2), "skip")),
            Admission::Skipped { .. }
        ));
        s.decided(&ticket, &message.dispatch_id);
        s.finish(&t0, &m0, true);
        match s.next_ready() {
            Some(Next::Duplicate(t, m)) => s.finish(&t, &m, false),
            other => panic!("the copy of a@03:00 is a duplicate, got {other:?}"),
        }
        let (t2, m2) = run_next(&mut s);
        assert_eq!(m2.job_name, "b");
        s.finish(&t2, &m2, true);
        assert_eq!(
            s.to_commit(),
            vec![(tp(0), 4)],
            "offset 4 (skipped b) not reported yet"
        );
        // A skipped dispatchId delivered again is a duplicate, not a run.
        assert_eq!(
            s.admit(with_overlap(record(0, 5, "a", 0, 1), "skip")),
            Admission::Queued
        );
        assert!(matches!(s.next_ready(), Some(Next::Duplicate(..))));
    }

    #[test]
    fn replace_takes_the_waiting_runs_out_and_the_new_run_waits_for_the_executing_one() {
        let mut s = WorkerState::new(Ordering::Ordered, 100);
        s.assign([tp(0)]);
        s.admit(with_overlap(record(0, 0, "a", 0, 0), "replace"));
        let (t0, m0) = run_next(&mut s);
        // With a run executing, a queued-behind one (an old worker's record without overlap).
        assert_eq!(s.admit(record(0, 1, "a", 0, 1)), Admission::Queued);
        let Admission::Replacing {
            job_name,
            running,
            superseded,
        } = s.admit(with_overlap(record(0, 2, "a", 0, 2), "replace"))
        else {
            panic!("a newer replace run replaces")
        };
        assert_eq!((job_name.as_str(), running), ("a", true));
        let superseded: Vec<(i64, String)> = superseded
            .into_iter()
            .map(|(t, m)| (t.offset, m.scheduled_at))
            .collect();
        assert_eq!(superseded, vec![(1, "2026-11-26T03:01:00Z".to_string())]);
        assert!(
            s.next_ready().is_none(),
            "the new run waits for the cancelled one to end"
        );
        s.finish(&t0, &m0, true);
        let (_, m2) = run_next(&mut s);
        assert_eq!(m2.scheduled_at, "2026-11-26T03:02:00Z");
        // Nothing of b here: a replace run is simply queued.
        assert_eq!(
            s.admit(with_overlap(record(0, 3, "b", 0, 0), "replace")),
            Admission::Queued
        );
    }

    #[test]
    fn a_record_with_out_of_range_run_settings_is_malformed_with_the_reason() {
        let mut s = WorkerState::new(Ordering::Ordered, 100);
        s.assign([tp(0)]);
        for (field, value, reason) in [
            (
                "timeoutMs",
                serde_json::json!(999),
                "timeoutMs 999 is out of range 1000-86400000 (1s-1d)",
            ),
            (
                "timeoutMs",
                serde_json::json!(86_400_001u64),
                "timeoutMs 86400001 is out of range 1000-86400000 (1s-1d)",
            ),
            (
                "maxAttempts",
                serde_json::json!(0),
                "maxAttempts 0 is out of range 1-100",
            ),
            (
                "maxAttempts",
                serde_json::json!(101),
                "maxAttempts 101 is out of range 1-100",
            ),
        ] {
            let mut r = record(0, 0, "a", 0, 0);
            let mut v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
            v[field] = value;
            r.value = serde_json::to_vec(&v).unwrap();
            match s.admit(r) {
                Admission::Malformed { error, .. } => assert_eq!(error, reason),
                other => panic!("{field}: {other:?}"),
            }
        }
        let mut r = record(0, 0, "a", 0, 0);
        r.value = with_overlap(r.clone(), "sometimes").value;
        match s.admit(r) {
            Admission::Malformed { error, .. } => assert!(
                error.contains("unknown variant `sometimes`, expected one of `queue`, `skip`, `allow`, `replace`"),
                "{error}"
            ),
            other => panic!("{other:?}"),
        }
    }

    fn jittered(partition: i32, offset: i64, name: &str, minute: u32, not_before: &str) -> Fetched {
        let mut r = record(partition, offset, name, 0, minute);
        let mut m: JobMessage = serde_json::from_slice(&r.value).unwrap();
        m.not_before = Some(not_before.into());
        r.value = serde_json::to_vec(&m).unwrap();
        r
    }

    fn ms(text: &str) -> i64 {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    /// A record whose notBefore has not come waits aside: the others run meanwhile, its offset
    /// holds the commit, and it runs once the time comes; a later run of the same job waits
    /// behind it even without a notBefore of its own.
    #[test]
    fn a_run_does_not_start_before_its_not_before_and_blocks_no_other_job() {
        let mut s = WorkerState::new(Ordering::Ordered, 100);
        s.assign([tp(0)]);
        let now = ms("2026-11-26T03:00:05Z");
        s.admit_at(jittered(0, 0, "spread", 0, "2026-11-26T03:00:20.250Z"), now);
        s.admit_at(record(0, 1, "plain", 0, 0), now);
        s.admit_at(record(0, 2, "spread", 0, 1), now);
        assert_eq!(
            (s.queued(), s.held()),
            (1, 2),
            "held records do not fill the prefetch"
        );
        assert_eq!(s.release_held(now), Some(ms("2026-11-26T03:00:20.250Z")));
        let (t, m) = run_next(&mut s);
        assert_eq!(m.job_name, "plain");
        assert!(s.next_ready().is_none(), "spread waits for its notBefore");
        s.finish(&t, &m, true);
        assert_eq!(
            s.to_commit(),
            vec![(tp(0), 0)],
            "commits stop before the held offset 0"
        );
        assert_eq!(
            s.release_held(ms("2026-11-26T03:00:20.249Z")),
            Some(ms("2026-11-26T03:00:20.250Z"))
        );
        assert!(s.next_ready().is_none());
        assert_eq!(s.release_held(ms("2026-11-26T03:00:20.250Z")), None);
        let (t0, m0) = run_next(&mut s);
        assert_eq!(m0.dispatch_id, "spread@2026-11-26T03:00:00Z");
        s.finish(&t0, &m0, true);
        let (t2, m2) = run_next(&mut s);
        assert_eq!(m2.dispatch_id, "spread@2026-11-26T03:01:00Z");
        s.finish(&t2, &m2, true);
        assert_eq!(s.to_commit(), vec![(tp(0), 3)]);
    }

    /// Old messages (no notBefore) and passed ones run at once; a notBefore too far after its slot
    /// waits only the cap; an unreadable one is malformed; revoking drops held records.
    #[test]
    fn not_before_is_bounded_checked_and_dropped_with_its_partition() {
        let mut s = WorkerState::new(Ordering::Ordered, 100);
        s.assign([tp(0), tp(1)]);
        let now = ms("2026-11-26T03:00:30Z");
        s.admit_at(jittered(0, 0, "past", 0, "2026-11-26T03:00:10Z"), now);
        s.admit_at(record(0, 1, "old", 0, 0), now);
        assert_eq!(s.held(), 0);
        s.admit_at(jittered(1, 0, "far", 0, "2026-11-27T00:00:00Z"), now);
        assert_eq!(s.release_held(now), Some(ms("2026-11-26T03:10:00Z")));
        let bad = jittered(0, 2, "bad", 0, "soon");
        match s.admit_at(bad, now) {
            Admission::Malformed { error, .. } => assert!(
                error.starts_with(r#"notBefore "soon" is not an RFC 3339 instant"#),
                "{error}"
            ),
            other => panic!("{other:?}"),
        }
        s.revoke(&[tp(1)]);
        assert_eq!((s.held(), s.release_held(i64::MAX)), (0, None));
        assert_eq!(s.drop_queue(), 2);
    }

    /// A run held for its notBefore is a waiting run to the overlap policies: `skip` skips a
    /// newer run behind it, `replace` takes it out (reported as superseded) with the queued ones.
    #[test]
    fn held_runs_count_as_waiting_for_skip_and_replace() {
        let mut s = WorkerState::new(Ordering::Ordered, 100);
        s.assign([tp(0)]);
        let now = ms("2026-11-26T03:00:05Z");
        let held = with_overlap(jittered(0, 0, "a", 0, "2026-11-26T03:00:40Z"), "skip");
        assert_eq!(s.admit_at(held, now), Admission::Queued);
        assert_eq!(s.held(), 1);
        assert!(matches!(
            s.admit_at(with_overlap(record(0, 1, "a", 0, 1), "skip"), now),
            Admission::Skipped { .. }
        ));
        // A copy of the held record is not "skipped": it is the same run.
        let copy = with_overlap(jittered(0, 2, "a", 0, "2026-11-26T03:00:40Z"), "skip");
        assert_eq!(s.admit_at(copy, now), Admission::Queued);

        let mut s = WorkerState::new(Ordering::Ordered, 100);
        s.assign([tp(0)]);
        let held = with_overlap(jittered(0, 0, "b", 0, "2026-11-26T03:00:40Z"), "replace");
        assert_eq!(s.admit_at(held, now), Admission::Queued);
        let Admission::Replacing {
            running,
            superseded,
            ..
        } = s.admit_at(with_overlap(record(0, 1, "b", 0, 1), "replace"), now)
        else {
            panic!("a newer replace run replaces the held one")
        };
        assert!(!running);
        let offsets: Vec<i64> = superseded.iter().map(|(t, _)| t.offset).collect();
        assert_eq!(offsets, vec![0]);
        assert_eq!(s.held(), 0, "the replaced run is no longer held");
        let (_, m) = run_next(&mut s);
        assert_eq!(m.scheduled_at, "2026-11-26T03:01:00Z");
    }

    fn at_slot(
        partition: i32,
        offset: i64,
        name: &str,
        slot: &str,
        not_before: Option<&str>,
    ) -> Fetched {
        let mut r = record(partition, offset, name, 0, 0);
        let mut m: JobMessage = serde_json::from_slice(&r.value).unwrap();
        m.scheduled_at = slot.into();
        m.dispatch_id = format!("{name}@{slot}");
        m.not_before = not_before.map(str::to_string);
        r.value = serde_json::to_vec(&m).unwrap();
        r
    }

    /// A forged record for a slot in 9999 does not hold its job or its partition: it is a
    /// future slot (to dead-letter), the job's next run runs at once, and the offsets move past
    /// both. Its dispatchId is not remembered: the real run of that slot would run.
    #[test]
    fn a_slot_far_ahead_of_the_clock_is_dead_lettered_and_holds_neither_its_job_nor_its_partition()
    {
        let mut s = WorkerState::new(Ordering::Ordered, 100);
        s.assign([tp(0)]);
        let now = ms("2026-11-26T03:00:00Z");
        let forged = with_overlap(
            at_slot(
                0,
                0,
                "say-hello",
                "9999-12-31T23:50:00Z",
                Some("9999-12-31T23:59:00Z"),
            ),
            "skip",
        );
        let Admission::FutureSlot {
            ticket,
            message,
            error,
            ..
        } = s.admit_at(forged, now)
        else {
            panic!("not a future slot")
        };
        assert_eq!(message.dispatch_id, "say-hello@9999-12-31T23:50:00Z");
        assert!(
            error.starts_with("scheduledAt 9999-12-31T23:50:00Z is ")
                && error.ends_with("ahead of this worker's clock (2026-11-26T03:00:00.000Z), more than the 10 min a run may be held plus 1m of clock skew: not run"),
            "{error}"
        );
        assert_eq!((s.held(), s.queued()), (0, 0));
        // The job's next run is neither held behind it nor skipped because of it.
        let next = with_overlap(record(0, 1, "say-hello", 0, 0), "skip");
        assert_eq!(s.admit_at(next, now), Admission::Queued);
        let (t, m) = run_next(&mut s);
        assert_eq!(m.dispatch_id, "say-hello@2026-11-26T03:00:00Z");
        s.finish(&t, &m, true);
        assert_eq!(s.to_commit(), vec![(tp(0), 0)], "until it is dead-lettered");
        s.finish_unrunnable(&ticket);
        assert_eq!(s.to_commit(), vec![(tp(0), 2)]);
        let again = at_slot(0, 2, "say-hello", "9999-12-31T23:50:00Z", None);
        assert!(matches!(
            s.admit_at(again, ms("9999-12-31T23:50:00Z")),
            Admission::Queued
        ));
        assert!(
            matches!(s.next_ready(), Some(Next::Run(..))),
            "at its time the slot runs"
        );
    }

    /// The bound is the clock + 10 min + 1 min of skew, to the millisecond; a jittered record of a
    /// slot just inside it waits at most 10 min from now, whatever its notBefore says.
    #[test]
    fn a_slot_up_to_eleven_minutes_ahead_is_taken_in_and_waits_at_most_ten_minutes_from_now() {
        let mut s = WorkerState::new(Ordering::Ordered, 100);
        s.assign([tp(0)]);
        let now = ms("2026-11-26T03:00:00Z");
        assert_eq!(MAX_FUTURE_SLOT_MS, 11 * 60_000);
        let inside = at_slot(
            0,
            0,
            "a",
            "2026-11-26T03:11:00Z",
            Some("2026-11-26T04:00:00Z"),
        );
        assert_eq!(s.admit_at(inside, now), Admission::Queued);
        assert_eq!(
            s.release_held(now),
            Some(ms("2026-11-26T03:10:00Z")),
            "capped at now + 10 min, not at its slot + 10 min (03:21)"
        );
        let beyond = at_slot(0, 1, "b", "2026-11-26T03:11:00.001Z", None);
        assert!(matches!(
            s.admit_at(beyond, now),
            Admission::FutureSlot { .. }
        ));
        let late_clock = at_slot(0, 2, "c", "2026-11-26T03:11:00.001Z", None);
        assert_eq!(s.admit_at(late_clock, now + 1), Admission::Queued);
    }

    /// Held records beyond --max-held-bytes count against the prefetch, though far fewer than
    /// MAX_HELD; once released, the allowance is free again.
    #[test]
    fn held_records_beyond_the_byte_bound_count_against_the_prefetch() {
        let now = ms("2026-11-26T03:00:00Z");
        let held = |offset: i64, payload: usize| {
            let mut r = jittered(0, offset, &format!("j{offset}"), 0, "2026-11-26T03:05:00Z");
            let mut m: JobMessage = serde_json::from_slice(&r.value).unwrap();
            m.job = format!("j {}", "x".repeat(payload));
            r.value = serde_json::to_vec(&m).unwrap();
            r
        };
        let size = {
            let r = held(0, 100_000);
            r.key.len() + r.value.len()
        };
        let mut s = WorkerState::new(Ordering::Ordered, 100).with_max_held_bytes(3 * size + 1000);
        s.assign([tp(0)]);
        for offset in 0..5 {
            assert_eq!(s.admit_at(held(offset, 100_000), now), Admission::Queued);
        }
        assert_eq!(
            (s.held(), s.queued()),
            (5, 2),
            "three fit in the bytes, two count"
        );
        // A small one still fits in what is left.
        assert_eq!(s.admit_at(held(5, 0), now), Admission::Queued);
        assert_eq!((s.held(), s.queued()), (6, 2));
        assert_eq!(s.release_held(ms("2026-11-26T03:05:00Z")), None);
        assert_eq!((s.held(), s.queued()), (0, 6));
        while let Some(Next::Run(t, m, _)) = s.next_ready() {
            s.finish(&t, &m, true);
        }
        let later = ms("2026-11-26T03:04:00Z");
        for offset in 6..9 {
            let mut r = held(offset, 100_000);
            r.offset = offset;
            assert_eq!(s.admit_at(r, later), Admission::Queued);
        }
        assert_eq!(
            (s.held(), s.queued()),
            (3, 0),
            "the allowance is free again"
        );
    }

    /// Held records beyond MAX_HELD count against the prefetch (bounded memory); fewer do not.
    #[test]
    fn held_records_beyond_the_allowance_count_against_the_prefetch() {
        let mut s = WorkerState::new(Ordering::Ordered, 100);
        s.assign([tp(0)]);
        let now = ms("2026-11-26T03:00:00Z");
        for i in 0..MAX_HELD + 5 {
            let r = jittered(0, i as i64, &format!("j{i}"), 0, "2026-11-26T03:05:00Z");
            assert_eq!(s.admit_at(r, now), Admission::Queued);
        }
        assert_eq!((s.held(), s.queued()), (MAX_HELD + 5, 5));
        assert_eq!(s.release_held(ms("2026-11-26T03:05:00Z")), None);
        assert_eq!((s.held(), s.queued()), (0, MAX_HELD + 5));
    }
}
