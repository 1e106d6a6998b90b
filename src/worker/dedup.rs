//! The `dispatchId`s known to be done, so a record delivered again (a rebalance that re-reads
//! uncommitted records, a dispatcher retry after a lost ack, a worker killed before it committed)
//! does not run the job twice. Two sources fill it: this worker's own finished runs, and, on each
//! assignment, the results topic over `--dedupe-window` (see `worker::rebuild`), so what another
//! member (or this worker before a restart) finished is known too. Bounded: the oldest ids are
//! forgotten first, so memory stays at `capacity` ids. Pure.
//!
//! A failed or timed-out attempt proves a run but not the end of its retries: it is kept as the
//! number of attempts made, and the record runs again unless that number reached its attempts.

use std::collections::{HashMap, VecDeque};

/// What is known of a `dispatchId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// It has a terminal result (succeeded, rejected, expired, skipped, cancelled, or this worker
    /// finished it): never run again.
    Finished,
    /// Its attempts up to this one failed or timed out; more may follow.
    Attempted(u32),
}

/// Recently finished `dispatchId`s, at most `capacity` of them.
#[derive(Debug)]
pub struct RecentlyFinished {
    capacity: usize,
    ids: HashMap<String, Proof>,
    order: VecDeque<String>,
}

impl RecentlyFinished {
    /// Remembers at most `capacity` ids (0 disables the check).
    pub fn new(capacity: usize) -> RecentlyFinished {
        RecentlyFinished {
            capacity,
            ids: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Was `dispatch_id` finished (has it a terminal result)?
    pub fn contains(&self, dispatch_id: &str) -> bool {
        self.ids.get(dispatch_id) == Some(&Proof::Finished)
    }

    /// Attempts of `dispatch_id` known to have failed, when it is not finished.
    pub fn attempts(&self, dispatch_id: &str) -> Option<u32> {
        match self.ids.get(dispatch_id) {
            Some(Proof::Attempted(n)) => Some(*n),
            _ => None,
        }
    }

    /// `dispatch_id` finished; the oldest id is forgotten when full.
    pub fn insert(&mut self, dispatch_id: &str) {
        self.prove(dispatch_id, Proof::Finished);
    }

    /// Records what is known of `dispatch_id`; a proof never goes back (finished stays finished,
    /// the attempt count only grows). The oldest id is forgotten when full.
    pub fn prove(&mut self, dispatch_id: &str, proof: Proof) {
        if self.capacity == 0 {
            return;
        }
        if let Some(known) = self.ids.get_mut(dispatch_id) {
            *known = match (*known, proof) {
                (Proof::Finished, _) | (_, Proof::Finished) => Proof::Finished,
                (Proof::Attempted(a), Proof::Attempted(b)) => Proof::Attempted(a.max(b)),
            };
            return;
        }
        if self.order.len() == self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        self.ids.insert(dispatch_id.to_string(), proof);
        self.order.push_back(dispatch_id.to_string());
    }

    /// Ids remembered.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Nothing remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_finished_ids() {
        let mut r = RecentlyFinished::new(10);
        assert!(!r.contains("a@1"));
        r.insert("a@1");
        assert!(r.contains("a@1"));
        r.insert("a@1");
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn forgets_the_oldest_when_full_and_never_grows_past_capacity() {
        let mut r = RecentlyFinished::new(3);
        for i in 0..10 {
            r.insert(&format!("job@{i}"));
            assert!(r.len() <= 3);
        }
        assert!(!r.contains("job@6"));
        for i in 7..10 {
            assert!(r.contains(&format!("job@{i}")));
        }
    }

    #[test]
    fn a_proof_never_goes_back() {
        let mut r = RecentlyFinished::new(10);
        r.prove("a@1", Proof::Attempted(2));
        assert!(!r.contains("a@1"));
        assert_eq!(r.attempts("a@1"), Some(2));
        r.prove("a@1", Proof::Attempted(1));
        assert_eq!(
            r.attempts("a@1"),
            Some(2),
            "an older attempt does not lower the count"
        );
        r.prove("a@1", Proof::Finished);
        r.prove("a@1", Proof::Attempted(3));
        assert!(r.contains("a@1"), "finished stays finished");
        assert_eq!(r.attempts("a@1"), None);
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn capacity_zero_remembers_nothing() {
        let mut r = RecentlyFinished::new(0);
        r.insert("a");
        assert!(!r.contains("a"));
        assert!(r.is_empty());
    }
}
