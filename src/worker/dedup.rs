//! The `dispatchId`s this worker finished recently, so a record delivered again (a rebalance that
//! re-reads uncommitted records, a dispatcher retry after a lost ack) does not run the job twice.
//! Bounded: the oldest ids are forgotten first, so memory stays at `capacity` ids. Pure.
//!
//! This narrows duplicates, it cannot remove them: another member of the group, or this worker after
//! a restart, does not know what was finished here. Kafka delivery stays at-least-once.

use std::collections::{HashSet, VecDeque};

/// Recently finished `dispatchId`s, at most `capacity` of them.
#[derive(Debug)]
pub struct RecentlyFinished {
    capacity: usize,
    ids: HashSet<String>,
    order: VecDeque<String>,
}

impl RecentlyFinished {
    /// Remembers at most `capacity` ids (0 disables the check).
    pub fn new(capacity: usize) -> RecentlyFinished {
        RecentlyFinished {
            capacity,
            ids: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Was `dispatch_id` finished recently?
    pub fn contains(&self, dispatch_id: &str) -> bool {
        self.ids.contains(dispatch_id)
    }

    /// `dispatch_id` finished; the oldest id is forgotten when full.
    pub fn insert(&mut self, dispatch_id: &str) {
        if self.capacity == 0 || self.ids.contains(dispatch_id) {
            return;
        }
        if self.order.len() == self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.ids.remove(&oldest);
            }
        }
        self.ids.insert(dispatch_id.to_string());
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
    fn capacity_zero_remembers_nothing() {
        let mut r = RecentlyFinished::new(0);
        r.insert("a");
        assert!(!r.contains("a"));
        assert!(r.is_empty());
    }
}
