//! Which offset a partition may commit: never past a record whose execution (retries and DLQ
//! included) has not finished. Pure bookkeeping, no Kafka.
//!
//! ```text
//!  fetched:   10 11 12 13 14 15          (records of one partition, in offset order)
//!  finished:  ✓  ✓     ✓  ✓              12 and 15 still running or queued
//!  commit:          ▲ 12                 the lowest unfinished offset; 13 and 14 wait for 12
//! ```
//!
//! Executions from one partition finish out of order (the pool can be larger than the partition
//! count, and priority reorders the local queue), so a partition tracks the set of offsets it has
//! handed out and not yet seen finish. The position to commit is the lowest of them, or one past the
//! highest offset seen when none is open. Kafka's committed offset means "the next record to read",
//! which is exactly that.

use std::collections::BTreeSet;

/// One partition's open offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// Offsets handed out (queued or running) and not finished yet.
    open: BTreeSet<i64>,
    /// One past the highest offset ever started here: the position when nothing is open.
    next: Option<i64>,
    /// The position last reported as committed (None: nothing committed by us yet).
    committed: Option<i64>,
}

impl PartitionOffsets {
    /// A partition we have not read from yet.
    pub fn new() -> PartitionOffsets {
        PartitionOffsets::default()
    }

    /// A record at `offset` was fetched and is now owed an execution.
    ///
    /// Offsets arrive in increasing order from one fetch session; a re-fetch after a seek may
    /// repeat one (then it is simply open again until finished).
    pub fn start(&mut self, offset: i64) {
        debug_assert!(offset >= 0, "negative offset {offset}");
        self.open.insert(offset);
        self.next = Some(self.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// The record at `offset` is done (succeeded, dead-lettered, skipped as a duplicate or as
    /// malformed). Finishing an offset that is not open is a no-op.
    pub fn finish(&mut self, offset: i64) {
        self.open.remove(&offset);
    }

    /// The position that may be committed now: the lowest open offset, else one past the highest
    /// started. None before the first record.
    pub fn position(&self) -> Option<i64> {
        match self.open.first() {
            Some(&lowest) => Some(lowest),
            None => self.next,
        }
    }

    /// The position to commit if it moved past what was last committed.
    pub fn to_commit(&self) -> Option<i64> {
        let position = self.position()?;
        match self.committed {
            Some(c) if c >= position => None,
            _ => Some(position),
        }
    }

    /// `position` was committed.
    pub fn committed(&mut self, position: i64) {
        self.committed = Some(self.committed.map_or(position, |c| c.max(position)));
    }

    /// The last commit may not have landed: report the position again.
    pub fn commit_failed(&mut self) {
        self.committed = None;
    }

    /// One past the highest offset started: where the next fetch continues (None before the first).
    pub fn fetched_up_to(&self) -> Option<i64> {
        self.next
    }

    /// Records started and not finished.
    pub fn open(&self) -> usize {
        self.open.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn nothing_to_commit_before_the_first_record() {
        let p = PartitionOffsets::new();
        assert_eq!(p.position(), None);
        assert_eq!(p.to_commit(), None);
    }

    #[test]
    fn an_unfinished_record_holds_the_commit_at_its_offset() {
        let mut p = PartitionOffsets::new();
        for o in 10..16 {
            p.start(o);
        }
        for o in [10, 11, 13, 14] {
            p.finish(o);
        }
        assert_eq!(p.position(), Some(12));
        p.finish(12);
        assert_eq!(
            p.position(),
            Some(15),
            "13 and 14 were done; 15 is still open"
        );
        p.finish(15);
        assert_eq!(p.position(), Some(16), "all done: one past the last record");
    }

    #[test]
    fn commit_is_reported_only_when_the_position_moved() {
        let mut p = PartitionOffsets::new();
        p.start(0);
        p.start(1);
        assert_eq!(p.to_commit(), Some(0));
        p.committed(0);
        assert_eq!(p.to_commit(), None);
        p.finish(1);
        assert_eq!(p.to_commit(), None, "0 still open");
        p.finish(0);
        assert_eq!(p.to_commit(), Some(2));
        p.committed(2);
        assert_eq!(p.to_commit(), None);
    }

    #[test]
    fn gaps_in_offsets_from_compaction_or_control_records_do_not_block() {
        let mut p = PartitionOffsets::new();
        p.start(5);
        p.start(9);
        p.finish(5);
        assert_eq!(p.position(), Some(9));
        p.finish(9);
        assert_eq!(p.position(), Some(10));
    }

    #[test]
    fn finishing_twice_or_an_unknown_offset_is_harmless() {
        let mut p = PartitionOffsets::new();
        p.start(3);
        p.finish(3);
        p.finish(3);
        p.finish(99);
        assert_eq!(p.position(), Some(4));
        assert_eq!(p.open(), 0);
    }

    /// Every order of finishing the records 0..n, checked at every step against the definition.
    #[test]
    fn every_finishing_order_of_six_records_commits_exactly_the_lowest_unfinished() {
        fn permutations(items: Vec<i64>) -> Vec<Vec<i64>> {
            if items.len() <= 1 {
                return vec![items];
            }
            let mut out = Vec::new();
            for i in 0..items.len() {
                let mut rest = items.clone();
                let head = rest.remove(i);
                for mut tail in permutations(rest) {
                    tail.insert(0, head);
                    out.push(tail);
                }
            }
            out
        }
        let n = 6;
        let orders = permutations((0..n).collect());
        assert_eq!(orders.len(), 720);
        for order in orders {
            let mut p = PartitionOffsets::new();
            for o in 0..n {
                p.start(o);
            }
            let mut done = [false; 6];
            for &o in &order {
                p.finish(o);
                done[o as usize] = true;
                let expected = done.iter().position(|d| !d).map_or(n, |i| i as i64);
                assert_eq!(p.position(), Some(expected), "order {order:?}, after {o}");
            }
        }
    }

    proptest! {
        /// Interleaved starts and finishes: the position never passes an unfinished offset and never
        /// goes backwards while records keep arriving in order.
        #[test]
        fn position_never_passes_an_unfinished_record(ops in proptest::collection::vec((any::<bool>(), 0usize..8), 1..200)) {
            let mut p = PartitionOffsets::new();
            let mut next = 0i64;
            let mut open: Vec<i64> = Vec::new();
            let mut last = None;
            for (start, pick) in ops {
                if start || open.is_empty() {
                    p.start(next);
                    open.push(next);
                    next += 1;
                } else {
                    let o = open.remove(pick % open.len());
                    p.finish(o);
                }
                let pos = p.position().unwrap();
                if let Some(&lowest) = open.iter().min() {
                    prop_assert_eq!(pos, lowest);
                } else {
                    prop_assert_eq!(pos, next);
                }
                prop_assert!(last.is_none_or(|l| pos >= l), "went back from {:?} to {}", last, pos);
                last = Some(pos);
            }
        }
    }
}
