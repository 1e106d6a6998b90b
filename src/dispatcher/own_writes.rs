//! The schedule records this member's jobs API writes to its own shards, handed to the schedule
//! topic's follower as they are acked, already checked (the API checked each job before writing
//! it, with the follower's settings and compiled expressions), so that the broker does not serve
//! them back to the member that wrote them and the member does not check them twice.
//!
//! ```text
//!  API write to shard s (under the shard's write lock)
//!    begin([s]) ──► the follower's consumer pauses partition s: nothing of it is fetched meanwhile
//!    produce ──► acked: acked(s, the records' edits at their offsets)
//!    the guard dropped ──► s no longer written
//!  follower round ──► take(next): each shard's acked records that continue its partition at the
//!                     follower's offset, applied like fetched ones (same checks, same edits);
//!                     a paused shard no longer written is resumed there (a seek past them)
//! ```
//!
//! Records of another writer (`cronq apply`, another member) between two of ours leave a gap: a
//! shard with a gap is not paused, and is resumed if it was, so the gap is fetched as usual (own
//! records fetched with it are read like any others, and dropped here once read).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use tracing::warn;

use crate::kafka::KafkaContext;
use crate::store::Edit;

/// What the follower's consumer does with a partition; a trait so that the bookkeeping can be
/// tested without a broker.
pub(crate) trait Partitions: Send + Sync {
    /// Stops fetching `shard`'s partition.
    fn pause(&self, shard: u32);
    /// Fetches `shard`'s partition again: from `offset`, or from where it was paused.
    fn resume(&self, shard: u32, offset: Option<i64>);
    /// The follower has stopped: the consumer is let go.
    fn stop(&self) {}
}

/// The follower's librdkafka consumer.
pub(crate) struct Consumed {
    /// Until the follower stops.
    consumer: Mutex<Option<Arc<BaseConsumer<KafkaContext>>>>,
    topic: String,
}

impl Consumed {
    pub(crate) fn new(consumer: Arc<BaseConsumer<KafkaContext>>, topic: String) -> Consumed {
        Consumed {
            consumer: Mutex::new(Some(consumer)),
            topic,
        }
    }

    fn consumer(&self) -> Option<Arc<BaseConsumer<KafkaContext>>> {
        self.consumer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn list(&self, shard: u32) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, shard as i32);
        tpl
    }
}

impl Partitions for Consumed {
    fn pause(&self, shard: u32) {
        let Some(consumer) = self.consumer() else {
            return;
        };
        if let Err(e) = consumer.pause(&self.list(shard)) {
            // Not paused: the records are fetched back, as without this module.
            warn!(message = "cannot pause a schedule topic partition for the API's write; it is read back", topic = %self.topic, shard, error = %e);
        }
    }

    fn resume(&self, shard: u32, offset: Option<i64>) {
        // The seek is asynchronous (no wait); a paused partition fetches from it once resumed.
        let Some(consumer) = self.consumer() else {
            return;
        };
        if let Some(offset) = offset {
            self.seek(&consumer, shard, offset);
        }
        if let Err(e) = consumer.resume(&self.list(shard)) {
            warn!(message = "cannot resume a schedule topic partition", topic = %self.topic, shard, error = %e);
        }
    }

    fn stop(&self) {
        // Closed on a thread of its own, like the follower's own handle.
        if let Some(consumer) = self
            .consumer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            crate::kafka::close_apart(consumer);
        }
    }
}

impl Consumed {
    fn seek(&self, consumer: &BaseConsumer<KafkaContext>, shard: u32, offset: i64) {
        if let Err(e) = consumer.seek(
            &self.topic,
            shard as i32,
            Offset::Offset(offset),
            std::time::Duration::ZERO,
        ) {
            // Resumed where it was paused: the API's records are read back, and dropped as read.
            warn!(message = "cannot move the schedule topic follower past the API's own records; reading them back", topic = %self.topic, shard, offset, error = %e);
        }
    }
}

/// One followed shard.
#[derive(Default)]
struct Shard {
    /// API writes under way.
    writing: u32,
    /// Paused by [`OwnWrites::begin`] and not resumed since.
    paused: bool,
    /// The follower's next offset, as of its last round.
    next: i64,
    /// Acked and not yet handed to the follower: (first offset, the records' edits), in offset
    /// order.
    acked: VecDeque<(i64, Vec<Edit>)>,
}

impl Shard {
    /// Records of another writer lie between the follower's offset and ours.
    fn gap(&self) -> bool {
        self.acked
            .front()
            .is_some_and(|(first, _)| *first > self.next)
    }
}

/// The API's acked records of the followed shards, shared by the API and the follower.
pub(crate) struct OwnWrites {
    partitions: Box<dyn Partitions>,
    shards: Mutex<BTreeMap<u32, Shard>>,
}

/// An API write under way to some shards (see [`OwnWrites::begin`]).
pub(crate) struct Writing<'a> {
    own: &'a OwnWrites,
    shards: Vec<u32>,
}

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        let mut all = self.own.lock();
        for s in &self.shards {
            if let Some(shard) = all.get_mut(s) {
                shard.writing = shard.writing.saturating_sub(1);
            }
        }
    }
}

impl OwnWrites {
    pub(crate) fn new(partitions: Box<dyn Partitions>) -> OwnWrites {
        OwnWrites {
            partitions,
            shards: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u32, Shard>> {
        self.shards.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The API is about to write to `shards`: those followed, and caught up to our records, stop
    /// being fetched until the follower has taken what the write gets acked.
    pub(crate) fn begin(&self, shards: impl IntoIterator<Item = u32>) -> Writing<'_> {
        let mut all = self.lock();
        let mut writing = Vec::new();
        for s in shards {
            let Some(shard) = all.get_mut(&s) else {
                continue;
            };
            shard.writing += 1;
            writing.push(s);
            if !shard.paused && !shard.gap() {
                self.partitions.pause(s);
                shard.paused = true;
            }
        }
        Writing {
            own: self,
            shards: writing,
        }
    }

    /// The edits of records of `shard` acked together, each at its offset (consecutive).
    pub(crate) fn acked(&self, shard: u32, edits: Vec<Edit>) {
        let (Some(first), Some(last)) = (edits.first(), edits.last()) else {
            return;
        };
        let (first, last) = (first.offset(), last.offset());
        let consecutive = edits
            .iter()
            .enumerate()
            .all(|(i, e)| e.offset() == first + i as i64);
        if !consecutive {
            return; // the follower reads them back
        }
        let mut all = self.lock();
        if let Some(shard) = all.get_mut(&shard) {
            if last >= shard.next {
                shard.acked.push_back((first, edits));
            }
        }
    }

    /// The follower's consumer is made to read exactly `from`'s shards, each from its offset, by
    /// `assign` (with the API's writes held off meanwhile). librdkafka keeps a partition's pause
    /// through an assignment, even one that drops the partition and a later one that adds it
    /// back, so every paused partition is resumed first, while still assigned: the new assignment
    /// reads everything from its offset. Writes under way stay counted.
    pub(crate) fn assign<E>(
        &self,
        from: &BTreeMap<u32, i64>,
        assign: impl FnOnce() -> Result<(), E>,
    ) -> Result<(), E> {
        let mut all = self.lock();
        for (&s, shard) in all.iter_mut() {
            if shard.paused {
                self.partitions.resume(s, None);
                shard.paused = false;
            }
        }
        assign()?;
        let mut kept = BTreeMap::new();
        for (&s, &offset) in from {
            let writing = all.get(&s).map_or(0, |shard| shard.writing);
            kept.insert(
                s,
                Shard {
                    writing,
                    next: offset,
                    ..Shard::default()
                },
            );
        }
        *all = kept;
        Ok(())
    }

    /// The follower has stopped.
    pub(crate) fn stop(&self) {
        self.partitions.stop();
    }

    /// Whether the follower should look again soon: a write is under way or acked records wait.
    pub(crate) fn busy(&self) -> bool {
        self.lock()
            .values()
            .any(|s| s.writing > 0 || s.paused || !s.acked.is_empty())
    }

    /// The follower's round: each shard's acked records that continue it at `next` (which moves
    /// past them), in offset order; paused shards no longer written, or with a gap, resumed.
    pub(crate) fn take(&self, next: &mut BTreeMap<u32, i64>) -> BTreeMap<u32, Vec<Edit>> {
        let mut out: BTreeMap<u32, Vec<Edit>> = BTreeMap::new();
        let mut all = self.lock();
        for (&s, shard) in all.iter_mut() {
            let Some(at) = next.get_mut(&s) else {
                continue;
            };
            shard.next = *at;
            while let Some((first, edits)) = shard.acked.pop_front() {
                let end = first + edits.len() as i64;
                if end <= shard.next {
                    continue; // read already
                }
                if first > shard.next {
                    shard.acked.push_front((first, edits));
                    break; // a gap: another writer's records come first
                }
                let next = shard.next;
                out.entry(s)
                    .or_default()
                    .extend(edits.into_iter().filter(|e| e.offset() >= next));
                shard.next = end;
            }
            *at = shard.next;
            if shard.paused && (shard.writing == 0 || shard.gap()) {
                self.partitions.resume(s, Some(shard.next));
                shard.paused = false;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the consumer was told, in order.
    #[derive(Default)]
    struct Told(Mutex<Vec<String>>);

    impl Partitions for Arc<Told> {
        fn pause(&self, shard: u32) {
            self.0.lock().unwrap().push(format!("pause {shard}"));
        }
        fn resume(&self, shard: u32, offset: Option<i64>) {
            self.0
                .lock()
                .unwrap()
                .push(format!("resume {shard} at {offset:?}"));
        }
    }

    fn assign(own: &OwnWrites, from: &[(u32, i64)]) {
        let from: BTreeMap<u32, i64> = from.iter().copied().collect();
        own.assign(&from, || Ok::<(), ()>(())).unwrap();
    }

    /// Edits at consecutive offsets from `first`, one per name.
    fn records(names: &[&str], first: i64) -> Vec<Edit> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| Edit::Delete {
                offset: first + i as i64,
                name: n.to_string(),
            })
            .collect()
    }

    fn taken(out: &BTreeMap<u32, Vec<Edit>>, shard: u32) -> Vec<(i64, String)> {
        out.get(&shard)
            .map(|es| {
                es.iter()
                    .map(|e| match e {
                        Edit::Delete { offset, name } => (*offset, name.clone()),
                        other => panic!("{other:?}"),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn acked_records_continue_the_partition_and_the_shard_resumes_past_them() {
        let told = Arc::new(Told::default());
        let own = OwnWrites::new(Box::new(Arc::clone(&told)));
        assign(&own, &[(1, 10), (2, 0)]);
        let mut next = BTreeMap::from([(1, 10), (2, 0)]);
        {
            let _w = own.begin([1, 7]); // 7 is not followed
            own.acked(1, records(&["a", "b"], 10));
            own.acked(1, records(&["c"], 12));
            // Still written: taken, but the shard stays paused.
            let out = own.take(&mut next);
            assert_eq!(
                taken(&out, 1),
                [(10, "a".into()), (11, "b".into()), (12, "c".into())]
            );
            assert_eq!(next[&1], 13);
            assert!(own.busy());
        }
        let out = own.take(&mut next);
        assert!(out.is_empty());
        assert_eq!(*told.0.lock().unwrap(), ["pause 1", "resume 1 at Some(13)"]);
        assert!(!own.busy());
        assert_eq!(next, BTreeMap::from([(1, 13), (2, 0)]));
    }

    #[test]
    fn another_writers_records_first_are_fetched_and_ours_dropped_once_read() {
        let told = Arc::new(Told::default());
        let own = OwnWrites::new(Box::new(Arc::clone(&told)));
        assign(&own, &[(0, 5)]);
        let mut next = BTreeMap::from([(0, 5)]);
        {
            let _w = own.begin([0]);
            // Offsets 5 and 6 are someone else's.
            own.acked(0, records(&["x", "y"], 7));
            assert!(own.take(&mut next).is_empty());
        }
        // Resumed at 5 at once (the gap), though the write was under way.
        assert_eq!(*told.0.lock().unwrap(), ["pause 0", "resume 0 at Some(5)"]);
        assert_eq!(next[&0], 5);
        // A shard with a gap is not paused again by the next write.
        drop(own.begin([0]));
        assert_eq!(told.0.lock().unwrap().len(), 2);
        // The follower fetched 5..=7; only 8 is handed over.
        next.insert(0, 8);
        let out = own.take(&mut next);
        assert_eq!(taken(&out, 0), [(8, "y".into())]);
        assert_eq!(next[&0], 9);
        // Edits whose offsets do not follow one another are not taken: they are read back.
        let mut odd = records(&["p", "q"], 9);
        if let Some(Edit::Delete { offset, .. }) = odd.last_mut() {
            *offset = 11;
        }
        own.acked(0, odd);
        assert!(!own.busy());
        // Fetched past everything: nothing left.
        next.insert(0, 20);
        own.acked(0, records(&["z"], 15));
        assert!(own.take(&mut next).is_empty());
        assert!(!own.busy());
    }

    #[test]
    fn a_new_assignment_forgets_the_acked_records_and_keeps_the_writes_under_way() {
        let told = Arc::new(Told::default());
        let own = OwnWrites::new(Box::new(Arc::clone(&told)));
        assign(&own, &[(3, 0)]);
        let w = own.begin([3]);
        own.acked(3, records(&["a"], 0));
        assign(&own, &[(3, 0), (4, 0)]);
        // The paused partition is resumed where it was: the new assignment reads from 0.
        assert_eq!(*told.0.lock().unwrap(), ["pause 3", "resume 3 at None"]);
        let mut next = BTreeMap::from([(3, 0), (4, 0)]);
        // The assignment fetches from 0 again: the acked record is read back, not handed over.
        assert!(own.take(&mut next).is_empty());
        assert!(own.busy(), "the write is still under way");
        drop(w);
        assert!(!own.busy());
        // Records acked for a shard not followed are not kept.
        own.acked(9, records(&["q"], 0));
        assert!(!own.busy());
        // A paused shard the next assignment drops is resumed too: librdkafka would keep the
        // pause for a later assignment that adds it back.
        let w = own.begin([4]);
        assign(&own, &[(3, 0)]);
        drop(w);
        assert_eq!(
            *told.0.lock().unwrap(),
            ["pause 3", "resume 3 at None", "pause 4", "resume 4 at None"]
        );
        assign(&own, &[(3, 0), (4, 2)]);
        let mut next = BTreeMap::from([(3, 0), (4, 2)]);
        assert!(own.take(&mut next).is_empty());
        assert_eq!(
            told.0.lock().unwrap().len(),
            4,
            "nothing paused, nothing resumed"
        );
    }
}
