//! The local prefetch queue between the consumer and the executors: which fetched job runs next.
//! Pure, no IO.
//!
//! ```text
//!  consumer ──► push (up to --prefetch) ──► pop_ready ──► executor ──► release
//!                       highest priority first, then earliest scheduledAt, then arrival;
//!                       skipping any job whose turn has not come (ordering rule)
//! ```
//!
//! The ordering rule (`--ordering ordered`, the default): runs of one `jobName` execute one at a
//! time, in arrival order (which is offset order: the dispatcher keys records by `jobName`, so they
//! share a partition). A run is eligible only when it is the oldest queued run of its name and no run
//! of that name is executing. Priority chooses among the eligible runs only; it never lets a later
//! run of a job overtake an earlier one.
//!
//! A message's `overlap` overrides `--ordering` for its run: `queue` follows the ordering rule,
//! `allow` is unordered; `skip` and `replace` are decided when the record arrives
//! ([`super::state::WorkerState::admit`], with [`LocalQueue::busy`] and
//! [`LocalQueue::take_queued`]) and then wait like `queue`.
//!
//! Whatever the ordering, a record whose `dispatchId` is executing right now waits for it (a partition
//! re-fetched after a rebalance hands out records that are still running here); by the time it is
//! popped the first run is finished and the dedup check skips it.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::wire::Overlap;

/// `--ordering`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Ordering {
    /// Runs of one `jobName` one at a time, in order.
    #[default]
    Ordered,
    /// Any run may start whenever an executor is free.
    Unordered,
}

/// A fetched job waiting for an executor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued<T> {
    /// Higher runs first.
    pub priority: i32,
    /// The slot in milliseconds since the epoch; earlier runs first among equal priorities.
    pub scheduled_at_ms: i64,
    /// The ordering rule's key.
    pub job_name: String,
    /// The idempotency key.
    pub dispatch_id: String,
    /// The message's `overlap`; None: `--ordering` decides.
    pub overlap: Option<Overlap>,
    /// What the caller needs to run it.
    pub item: T,
}

type Key = (Reverse<i32>, i64, u64);

/// The queue and the set of runs executing (the ordering rule needs both).
#[derive(Debug)]
pub struct LocalQueue<T> {
    ordering: Ordering,
    entries: BTreeMap<Key, Queued<T>>,
    /// Queued arrival numbers per `jobName`: the first is the only one the ordering rule lets go.
    by_name: HashMap<String, BTreeSet<u64>>,
    running_names: HashMap<String, usize>,
    running_ids: HashMap<String, usize>,
    arrivals: u64,
}

impl<T> LocalQueue<T> {
    /// An empty queue.
    pub fn new(ordering: Ordering) -> LocalQueue<T> {
        LocalQueue {
            ordering,
            entries: BTreeMap::new(),
            by_name: HashMap::new(),
            running_names: HashMap::new(),
            running_ids: HashMap::new(),
            arrivals: 0,
        }
    }

    /// Jobs waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// No job waiting.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Runs popped and not yet released.
    pub fn running(&self) -> usize {
        self.running_ids.values().sum()
    }

    /// Adds a fetched job.
    pub fn push(&mut self, job: Queued<T>) {
        let seq = self.arrivals;
        self.arrivals += 1;
        self.by_name
            .entry(job.job_name.clone())
            .or_default()
            .insert(seq);
        self.entries
            .insert((Reverse(job.priority), job.scheduled_at_ms, seq), job);
    }

    fn eligible(&self, key: &Key, job: &Queued<T>) -> bool {
        if self.running_ids.contains_key(&job.dispatch_id) {
            return false;
        }
        let ordering = match job.overlap {
            None => self.ordering,
            Some(Overlap::Allow) => Ordering::Unordered,
            Some(Overlap::Queue | Overlap::Skip | Overlap::Replace) => Ordering::Ordered,
        };
        match ordering {
            Ordering::Unordered => true,
            Ordering::Ordered => {
                !self.running_names.contains_key(&job.job_name)
                    && self
                        .by_name
                        .get(&job.job_name)
                        .and_then(|s| s.first())
                        .is_some_and(|&first| first == key.2)
            }
        }
    }

    /// The best eligible job, now counted as running until [`LocalQueue::release`]. None when the
    /// queue is empty or every waiting job waits for a running one.
    pub fn pop_ready(&mut self) -> Option<Queued<T>> {
        let key = *self
            .entries
            .iter()
            .find(|(k, job)| self.eligible(k, job))
            .map(|(k, _)| k)?;
        let job = self.entries.remove(&key)?;
        self.forget_arrival(&job.job_name, key.2);
        *self.running_names.entry(job.job_name.clone()).or_default() += 1;
        *self.running_ids.entry(job.dispatch_id.clone()).or_default() += 1;
        Some(job)
    }

    fn forget_arrival(&mut self, job_name: &str, seq: u64) {
        if let Some(seqs) = self.by_name.get_mut(job_name) {
            seqs.remove(&seq);
            if seqs.is_empty() {
                self.by_name.remove(job_name);
            }
        }
    }

    /// A run popped earlier finished: the next run of its name may go.
    pub fn release(&mut self, job_name: &str, dispatch_id: &str) {
        fn decrement(map: &mut HashMap<String, usize>, key: &str) {
            if let Some(n) = map.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
        decrement(&mut self.running_names, job_name);
        decrement(&mut self.running_ids, dispatch_id);
    }

    /// Whether a run of `job_name` is executing or waiting here.
    pub fn busy(&self, job_name: &str) -> bool {
        self.running_names.contains_key(job_name) || self.by_name.contains_key(job_name)
    }

    /// Whether a run is executing or waiting with `dispatch_id` (the same record again).
    pub fn holds(&self, dispatch_id: &str) -> bool {
        self.running_ids.contains_key(dispatch_id)
            || self.entries.values().any(|j| j.dispatch_id == dispatch_id)
    }

    /// Removes every waiting run of `job_name`, in arrival order (a newer run replaces them).
    pub fn take_queued(&mut self, job_name: &str) -> Vec<Queued<T>> {
        let Some(seqs) = self.by_name.remove(job_name) else {
            return Vec::new();
        };
        let mut keys: Vec<Key> = self
            .entries
            .keys()
            .filter(|key| seqs.contains(&key.2))
            .copied()
            .collect();
        keys.sort_by_key(|key| key.2);
        keys.iter()
            .filter_map(|key| self.entries.remove(key))
            .collect()
    }

    /// Drops the waiting jobs `keep` says no to (the partitions were revoked, or shutdown); returns
    /// how many were dropped.
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) -> usize {
        let drop: Vec<Key> = self
            .entries
            .iter()
            .filter(|(_, job)| !keep(&job.item))
            .map(|(k, _)| *k)
            .collect();
        for key in &drop {
            if let Some(job) = self.entries.remove(key) {
                self.forget_arrival(&job.job_name, key.2);
            }
        }
        drop.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn job(name: &str, priority: i32, at: i64, tag: u32) -> Queued<u32> {
        Queued {
            priority,
            scheduled_at_ms: at,
            job_name: name.to_string(),
            dispatch_id: format!("{name}@{at}"),
            overlap: None,
            item: tag,
        }
    }

    fn drain(q: &mut LocalQueue<u32>) -> Vec<u32> {
        let mut out = Vec::new();
        while let Some(j) = q.pop_ready() {
            q.release(&j.job_name, &j.dispatch_id);
            out.push(j.item);
        }
        out
    }

    #[test]
    fn highest_priority_first_then_earliest_slot_then_arrival() {
        let mut q = LocalQueue::new(Ordering::Ordered);
        q.push(job("a", 1, 100, 1));
        q.push(job("b", 5, 300, 2));
        q.push(job("c", 5, 200, 3));
        q.push(job("d", 0, 0, 4));
        q.push(job("e", 5, 200, 5));
        assert_eq!(drain(&mut q), vec![3, 5, 2, 1, 4]);
    }

    #[test]
    fn a_second_run_of_a_job_waits_for_the_first_to_finish() {
        let mut q = LocalQueue::new(Ordering::Ordered);
        q.push(job("nightly", 0, 100, 1));
        q.push(job("nightly", 0, 200, 2));
        q.push(job("other", 0, 300, 3));
        let first = q.pop_ready().unwrap();
        assert_eq!(first.item, 1);
        let next = q.pop_ready().unwrap();
        assert_eq!(next.item, 3, "nightly@200 must wait; other may run");
        assert!(q.pop_ready().is_none(), "nightly@200 still waits");
        q.release(&first.job_name, &first.dispatch_id);
        assert_eq!(q.pop_ready().unwrap().item, 2);
    }

    #[test]
    fn priority_never_lets_a_later_run_of_the_same_job_overtake() {
        let mut q = LocalQueue::new(Ordering::Ordered);
        q.push(job("report", 0, 100, 1));
        q.push(job("report", 9, 200, 2)); // priority raised by a schedule change in between
        assert_eq!(drain(&mut q), vec![1, 2]);
    }

    #[test]
    fn unordered_runs_several_of_one_job_at_once_by_priority() {
        let mut q = LocalQueue::new(Ordering::Unordered);
        q.push(job("report", 0, 100, 1));
        q.push(job("report", 9, 200, 2));
        assert_eq!(q.pop_ready().unwrap().item, 2);
        assert_eq!(q.pop_ready().unwrap().item, 1);
        assert_eq!(q.running(), 2);
    }

    #[test]
    fn a_record_whose_dispatch_id_is_running_waits_even_when_unordered() {
        let mut q = LocalQueue::new(Ordering::Unordered);
        q.push(job("x", 0, 100, 1));
        let running = q.pop_ready().unwrap();
        q.push(job("x", 0, 100, 2)); // the same record again, re-fetched after a rebalance
        assert!(q.pop_ready().is_none());
        q.release(&running.job_name, &running.dispatch_id);
        assert_eq!(q.pop_ready().unwrap().item, 2);
    }

    #[test]
    fn retain_drops_waiting_jobs_and_unblocks_their_names() {
        let mut q = LocalQueue::new(Ordering::Ordered);
        q.push(job("a", 0, 100, 1));
        q.push(job("a", 0, 200, 2));
        q.push(job("b", 0, 100, 3));
        assert_eq!(q.retain(|&tag| tag != 1), 1);
        assert_eq!(q.len(), 2);
        assert_eq!(
            drain(&mut q),
            vec![3, 2],
            "b@100 before a@200, and a@200 no longer waits"
        );
        assert!(q.is_empty());
    }

    proptest! {
        /// Against the definition: whatever is popped is eligible and no eligible job has a better
        /// (priority, slot, arrival); nothing is lost or duplicated; runs of a name come out in order.
        #[test]
        fn pops_the_best_eligible_and_keeps_each_jobs_runs_in_order(
            jobs in proptest::collection::vec((0usize..4, -2i32..3, 0i64..5), 1..40),
            finish_order in proptest::collection::vec(0usize..8, 0..80),
            unordered in any::<bool>(),
        ) {
            let ordering = if unordered { Ordering::Unordered } else { Ordering::Ordered };
            let mut q = LocalQueue::new(ordering);
            let mut model: Vec<(usize, Queued<u32>)> = Vec::new();
            for (i, (name, priority, at)) in jobs.iter().enumerate() {
                let mut j = job(&format!("job{name}"), *priority, *at, i as u32);
                j.dispatch_id = format!("id{i}");
                model.push((i, j.clone()));
                q.push(j);
            }
            let mut running: Vec<Queued<u32>> = Vec::new();
            let mut popped: Vec<u32> = Vec::new();
            let mut finishes = finish_order.into_iter();
            loop {
                let eligible: Vec<&(usize, Queued<u32>)> = model
                    .iter()
                    .filter(|(seq, j)| match ordering {
                        Ordering::Unordered => true,
                        Ordering::Ordered => {
                            !running.iter().any(|r| r.job_name == j.job_name)
                                && !model.iter().any(|(s, o)| o.job_name == j.job_name && s < seq)
                        }
                    })
                    .collect();
                let best = eligible
                    .iter()
                    .min_by_key(|(seq, j)| (Reverse(j.priority), j.scheduled_at_ms, *seq))
                    .map(|(_, j)| j.item);
                let progressed = match q.pop_ready() {
                    Some(j) => {
                        prop_assert_eq!(Some(j.item), best);
                        model.retain(|(_, m)| m.item != j.item);
                        popped.push(j.item);
                        running.push(j);
                        true
                    }
                    None => {
                        prop_assert_eq!(best, None);
                        false
                    }
                };
                // Finish a running job now and then (always when nothing else can move), in an
                // arbitrary order.
                let finish_now = !progressed || q.is_empty() || finishes.next().is_some_and(|k| k % 2 == 0);
                if !running.is_empty() && finish_now {
                    let k = finishes.next().unwrap_or(0) % running.len();
                    let r = running.remove(k);
                    q.release(&r.job_name, &r.dispatch_id);
                }
                if q.is_empty() && running.is_empty() {
                    break;
                }
            }
            prop_assert_eq!(popped.len(), jobs.len());
            if ordering == Ordering::Ordered {
                for name in 0..4 {
                    let runs: Vec<u32> = popped
                        .iter()
                        .copied()
                        .filter(|&i| jobs[i as usize].0 == name)
                        .collect();
                    let mut sorted = runs.clone();
                    sorted.sort_unstable();
                    prop_assert_eq!(runs, sorted, "job{} out of order", name);
                }
            }
        }
    }

    fn with_overlap(mut j: Queued<u32>, overlap: Option<Overlap>) -> Queued<u32> {
        j.overlap = overlap;
        j
    }

    #[test]
    fn a_message_overlap_overrides_the_workers_ordering_for_its_run() {
        // allow on an ordered worker: the second run starts next to the first.
        let mut q = LocalQueue::new(Ordering::Ordered);
        q.push(with_overlap(job("sync", 0, 100, 1), Some(Overlap::Allow)));
        q.push(with_overlap(job("sync", 0, 200, 2), Some(Overlap::Allow)));
        assert_eq!(q.pop_ready().unwrap().item, 1);
        assert_eq!(q.pop_ready().unwrap().item, 2);
        assert_eq!(q.running(), 2);
        // queue on an unordered worker: the second run waits for the first.
        let mut q = LocalQueue::new(Ordering::Unordered);
        q.push(with_overlap(job("sync", 0, 100, 1), Some(Overlap::Queue)));
        q.push(with_overlap(job("sync", 9, 200, 2), Some(Overlap::Queue)));
        let first = q.pop_ready().unwrap();
        assert_eq!(
            first.item, 1,
            "priority does not let the later run overtake"
        );
        assert!(q.pop_ready().is_none());
        q.release(&first.job_name, &first.dispatch_id);
        assert_eq!(q.pop_ready().unwrap().item, 2);
    }

    #[test]
    fn busy_take_queued_and_holds_see_runs_waiting_and_executing() {
        let mut q = LocalQueue::new(Ordering::Ordered);
        assert!(!q.busy("a"));
        q.push(job("a", 0, 100, 1));
        q.push(job("b", 0, 100, 2));
        q.push(job("a", 5, 300, 3));
        q.push(job("a", 0, 200, 4));
        assert!(q.busy("a") && q.holds("a@200") && !q.holds("a@400"));
        let running = q.pop_ready().unwrap();
        assert_eq!(running.item, 1);
        let taken: Vec<u32> = q.take_queued("a").into_iter().map(|j| j.item).collect();
        assert_eq!(
            taken,
            vec![3, 4],
            "in arrival order, whatever their priority"
        );
        assert!(q.busy("a"), "a@100 still executes");
        assert!(q.holds("a@100") && !q.holds("a@300"));
        q.release(&running.job_name, &running.dispatch_id);
        assert!(!q.busy("a"));
        assert_eq!(drain(&mut q), vec![2]);
    }

    proptest! {
        /// Mixed policies against the definition: a run is eligible when its dispatchId is not
        /// executing and, unless it is `allow` (or unset on an unordered worker), no run of its
        /// name executes and none arrived before it; the best eligible one is popped; a run that
        /// is not `allow` never starts while another run of its name executes.
        #[test]
        fn with_mixed_overlap_policies_pops_the_best_eligible_and_queue_runs_never_overlap(
            jobs in proptest::collection::vec((0usize..3, -2i32..3, 0i64..5, 0u8..3), 1..40),
            finish_order in proptest::collection::vec(0usize..8, 0..80),
            unordered in any::<bool>(),
        ) {
            let ordering = if unordered { Ordering::Unordered } else { Ordering::Ordered };
            let policy = |p: u8| match p {
                0 => None,
                1 => Some(Overlap::Queue),
                _ => Some(Overlap::Allow),
            };
            let ordered = |o: Option<Overlap>| match o {
                None => ordering == Ordering::Ordered,
                Some(o) => o != Overlap::Allow,
            };
            let mut q = LocalQueue::new(ordering);
            let mut model: Vec<(usize, Queued<u32>)> = Vec::new();
            for (i, (name, priority, at, p)) in jobs.iter().enumerate() {
                let mut j = with_overlap(job(&format!("job{name}"), *priority, *at, i as u32), policy(*p));
                j.dispatch_id = format!("id{i}");
                model.push((i, j.clone()));
                q.push(j);
            }
            let mut running: Vec<Queued<u32>> = Vec::new();
            let mut finishes = finish_order.into_iter();
            let mut popped = 0;
            loop {
                let best = model
                    .iter()
                    .filter(|(seq, j)| {
                        !ordered(j.overlap)
                            || (!running.iter().any(|r| r.job_name == j.job_name)
                                && !model.iter().any(|(s, o)| o.job_name == j.job_name && s < seq))
                    })
                    .min_by_key(|(seq, j)| (Reverse(j.priority), j.scheduled_at_ms, *seq))
                    .map(|(_, j)| j.item);
                let progressed = match q.pop_ready() {
                    Some(j) => {
                        prop_assert_eq!(Some(j.item), best);
                        if ordered(j.overlap) {
                            prop_assert!(!running.iter().any(|r| r.job_name == j.job_name));
                        }
                        model.retain(|(_, m)| m.item != j.item);
                        running.push(j);
                        popped += 1;
                        true
                    }
                    None => {
                        prop_assert_eq!(best, None);
                        false
                    }
                };
                let finish_now = !progressed || q.is_empty() || finishes.next().is_some_and(|k| k % 2 == 0);
                if !running.is_empty() && finish_now {
                    let k = finishes.next().unwrap_or(0) % running.len();
                    let r = running.remove(k);
                    q.release(&r.job_name, &r.dispatch_id);
                }
                if q.is_empty() && running.is_empty() {
                    break;
                }
            }
            prop_assert_eq!(popped, jobs.len());
        }
    }
}
