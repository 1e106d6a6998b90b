//! The cursor writer: a task of its own, under the service's [`crate::lifecycle::Tasks`], that
//! writes each owned shard's cursor record once a minute, whatever the tick loop is doing.
//!
//! ```text
//!  member ── owned shards' leases, schedule MD5, generation ──► CursorBook (shared)
//!                                                                    │ every --tick
//!  cursor writer: per owned shard, once a minute ───────────────────┴──► <group>.state
//!     the cursor as soon as the shard's minute is acked, or at second 30 where it is (liveness)
//! ```
//!
//! Why a task of its own: a tick waits while the producers' backlog is full (a partition that
//! keeps failing holds its dispatches, and past its limit every dispatch). Written after each
//! tick, no shard's record would be written meanwhile, and the other members' watchdogs would see
//! every shard of this member orphaned and take them over. Here each shard's cursor moves as far
//! as its own acks allow, and every owned shard's record stays fresh.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Timelike;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::cursor::Lease;
use super::group::StateTopic;
use crate::clock::{Clock, Minute};
use crate::wire::cursor::{Cursor, TopicPosition};

/// What the writer reads: the owned shards' leases, and what their records carry.
#[derive(Debug, Default)]
pub(super) struct CursorBook {
    leases: BTreeMap<u32, Arc<Lease>>,
    md5: String,
    generation: u64,
    /// Topic mode: each owned shard's position in the schedule topic.
    topic: BTreeMap<u32, TopicPosition>,
    /// The minute each shard's record was last written in.
    written: HashMap<u32, Minute>,
    /// The member's jobs API URL (`--advertise-url`), when the API is on.
    api_url: Option<String>,
}

/// The book the member keeps and the writer reads.
pub(super) type SharedBook = Arc<Mutex<CursorBook>>;

/// The book, also after a panic elsewhere mid-update (its state stays usable).
pub(super) fn lock(book: &Mutex<CursorBook>) -> MutexGuard<'_, CursorBook> {
    book.lock().unwrap_or_else(|e| e.into_inner())
}

impl CursorBook {
    /// The shards owned now, each with its lease, and the member's generation. A shard dropped, or
    /// owned again under a new lease, is written afresh.
    pub(super) fn own(&mut self, leases: BTreeMap<u32, Arc<Lease>>, generation: u64) {
        self.written.retain(|shard, _| {
            matches!((self.leases.get(shard), leases.get(shard)), (Some(old), Some(new)) if Arc::ptr_eq(old, new))
        });
        self.leases = leases;
        self.generation = generation;
    }

    /// `shard` is not owned any more.
    pub(super) fn drop_shard(&mut self, shard: u32) {
        self.leases.remove(&shard);
        self.written.remove(&shard);
    }

    /// Topic mode: each owned shard's position in the schedule topic, for its next record.
    pub(super) fn set_topic(&mut self, positions: BTreeMap<u32, TopicPosition>) {
        self.topic = positions;
    }

    /// The member's jobs API URL, carried by every record (`apiUrl`).
    pub(super) fn set_api_url(&mut self, url: Option<String>) {
        self.api_url = url;
    }

    /// The MD5 of the schedule in force.
    pub(super) fn set_md5(&mut self, md5: &str) {
        if self.md5 != md5 {
            self.md5 = md5.to_string();
        }
    }

    /// The records due at `now`: per owned shard once a minute, as soon as every dispatch it handed
    /// out is acked, or from second 30 with the cursor where it is (the liveness report).
    fn due(&self, owner: &str, now: chrono::DateTime<chrono::Utc>) -> Vec<(Cursor, Arc<Lease>)> {
        let minute = Minute::containing(now);
        self.leases
            .iter()
            .filter(|(shard, lease)| self.written.get(shard) != Some(&minute) && !lease.is_closed())
            .filter_map(|(&shard, lease)| {
                let cursor = lease.cursor();
                (cursor >= lease.handed_out() || now.second() >= 30).then(|| {
                    let record = Cursor {
                        shard,
                        minute: cursor,
                        written_at: now,
                        owner: owner.to_string(),
                        generation: self.generation,
                        schedule_md5: self.md5.clone(),
                        schedule_topic: self.topic.get(&shard).copied(),
                        api_url: self.api_url.clone(),
                        released: false,
                    };
                    (record, Arc::clone(lease))
                })
            })
            .collect()
    }
}

/// The task that writes the periodic cursor records.
pub(super) struct CursorWriter {
    /// The group's state topic.
    pub(super) state: Arc<StateTopic>,
    /// Kept by the member.
    pub(super) book: SharedBook,
    /// This member's name in the records.
    pub(super) owner: String,
    /// The dispatcher's clock.
    pub(super) clock: Arc<dyn Clock>,
    /// How often the book is looked at (`--tick`).
    pub(super) poll: Duration,
}

impl CursorWriter {
    /// Runs until `shutdown`. A write that fails is reported (once per outage, through the
    /// connection's health) and tried again at the next look.
    pub(super) async fn run(self, shutdown: CancellationToken) {
        let mut every = tokio::time::interval(self.poll);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {}
            }
            let now = self.clock.now();
            let due = lock(&self.book).due(&self.owner, now);
            if due.is_empty() {
                continue;
            }
            let (cursors, leases): (Vec<Cursor>, Vec<Arc<Lease>>) = due.into_iter().unzip();
            // A lease closed since (its shard released) is passed over: the release writes the
            // shard's final record, which must stay its last.
            let open = |c: &Cursor| {
                leases
                    .iter()
                    .any(|l| l.shard() == c.shard && !l.is_closed())
            };
            let failed = self.state.write_where(&cursors, open).await;
            let minute = Minute::containing(now);
            {
                let mut book = lock(&self.book);
                for c in &cursors {
                    if !failed.iter().any(|(shard, _)| *shard == c.shard) {
                        book.written.insert(c.shard, minute);
                    }
                }
            }
            match (failed.first(), self.state.health()) {
                (None, Some(health)) => {
                    health.succeeded();
                }
                (None, None) => {}
                (Some((shard, e)), Some(health)) => {
                    health.failed("cursor writer", "", &e.to_string());
                    debug!(message = "cannot write cursor records; retrying", shards = failed.len(), first = shard, error = %e);
                }
                (Some((shard, e)), None) => {
                    warn!(message = "cannot write cursor records; retrying", shards = failed.len(), first = shard, error = %e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    fn book_of(leases: &[(u32, &Arc<Lease>)]) -> CursorBook {
        let mut book = CursorBook::default();
        book.own(leases.iter().map(|(s, l)| (*s, Arc::clone(l))).collect(), 3);
        book.set_md5("m");
        book
    }

    #[test]
    fn a_shard_with_dispatches_waiting_does_not_hold_back_the_records_of_the_others() {
        let at = |second| Utc.with_ymd_and_hms(2026, 11, 29, 12, 5, second).unwrap();
        let minute = Minute::containing(at(0));
        let (stalled, flowing) = (
            Lease::new(0, Minute(minute.0 - 1)),
            Lease::new(1, Minute(minute.0 - 1)),
        );
        stalled.expect(minute, 5);
        flowing.expect(minute, 2);
        flowing.settle(minute, 2);
        let mut book = book_of(&[(0, &stalled), (1, &flowing)]);
        // Second 5: the acked shard's cursor is due at once; the stalled one is not yet.
        let due = book.due("me", at(5));
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].0.shard, due[0].0.minute), (1, minute));
        assert_eq!(
            (due[0].0.generation, due[0].0.schedule_md5.as_str()),
            (3, "m")
        );
        book.written.insert(1, minute);
        // Second 30: the stalled shard's record goes out where its cursor is (liveness); the other
        // was written this minute already.
        let due = book.due("me", at(30));
        assert_eq!(due.len(), 1);
        assert_eq!((due[0].0.shard, due[0].0.minute), (0, Minute(minute.0 - 1)));
    }

    #[test]
    fn a_closed_lease_or_a_shard_owned_again_under_a_new_lease() {
        let now = Utc.with_ymd_and_hms(2026, 11, 29, 12, 5, 40).unwrap();
        let minute = Minute::containing(now);
        let old = Lease::new(0, minute);
        let mut book = book_of(&[(0, &old)]);
        book.written.insert(0, minute);
        assert!(book.due("me", now).is_empty(), "written this minute");
        let new = Lease::new(0, minute);
        book.own([(0, Arc::clone(&new))].into(), 4);
        assert_eq!(
            book.due("me", now).len(),
            1,
            "a new ownership is written afresh"
        );
        new.close();
        assert!(
            book.due("me", now).is_empty(),
            "a released shard's final cursor is the release's"
        );
    }
}
