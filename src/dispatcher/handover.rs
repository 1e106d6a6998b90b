//! Handing a shard from its previous owner to the next. A coordinator may assign a shard before
//! its previous owner has let go of it: tansu answers a join at once, before the other members
//! rejoin, and the previous owner learns of the rebalance at its next heartbeat. A takeover from
//! the cursor read then would send again the minutes the previous owner is still sending. So the
//! next owner starts a shard at once only when nobody else can be dispatching it:
//!
//! ```text
//!  last cursor record of the shard            next owner
//!  none, ours, or "released" (a final one) ─► start now
//!  written ≥ 2 minutes ago                  ─► start now (its owner is not live)
//!  otherwise                                ─► wait: read the record again every 200 ms until it
//!                                              is a final one or another owner's, at most the
//!                                              handover bound, then start from what it says
//! ```
//!
//! The bound is a third of the session timeout (the previous owner hears of the rebalance at its
//! next heartbeat) plus 3 s (its handover: acks are normally in, the final records take a few ms).
//! A previous owner slower than that (a long minute still being sent, acks held by the broker)
//! may have its last minute sent again, as after a crash. The bound is also what a takeover after
//! a crash waits: a dead owner writes no final record, and the member list that would tell it is
//! gone cannot be read from every broker (tansu 0.6 fails DescribeGroups and drops the
//! connection).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::group::LastCursor;
use super::status::STALE_AFTER;

/// How often a shard waiting for its previous owner has its last record read again.
pub(super) const HANDOVER_POLL: Duration = Duration::from_millis(200);

/// Whether a shard just assigned may start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Nobody else can be dispatching it.
    Start,
    /// This live member may still be dispatching it.
    Wait(String),
}

/// The verdict on a shard whose last record is `read`, for member `me`, at `now` (the
/// dispatcher's clock).
pub(super) fn verdict(read: &LastCursor, me: &str, now: DateTime<Utc>) -> Verdict {
    let Some(cursor) = &read.cursor else {
        return Verdict::Start;
    };
    let silent = now - cursor.written_at >= STALE_AFTER;
    if cursor.released || cursor.owner == me || silent {
        Verdict::Start
    } else {
        Verdict::Wait(cursor.owner.clone())
    }
}

/// A shard waiting for its previous owner's final record.
#[derive(Debug)]
struct Waiting {
    previous: String,
    next_read: Instant,
}

/// What became of a shard whose record was read again.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Still not handed over, still within the bound.
    Waiting,
    /// Handed over (a final record, or one of another owner since): start from the record.
    HandedOver {
        /// The owner it came from.
        previous: String,
        /// How long it waited.
        waited: Duration,
    },
    /// The bound passed: start from the record as it is.
    GaveUp {
        /// The owner that did not hand it over.
        previous: String,
        /// How long it waited.
        waited: Duration,
    },
}

/// The shards assigned to this member that wait for their previous owner.
#[derive(Debug)]
pub(super) struct Handovers {
    /// How long a shard waits at most.
    bound: Duration,
    waiting: BTreeMap<u32, Waiting>,
    /// When each shard began to wait, kept over revokes: every rebalance revokes the whole
    /// assignment (eager protocol), and the bound must not start again at each one.
    began: BTreeMap<u32, Instant>,
}

impl Handovers {
    /// None waiting; each will wait at most `bound`.
    pub(super) fn new(bound: Duration) -> Handovers {
        Handovers {
            bound,
            waiting: BTreeMap::new(),
            began: BTreeMap::new(),
        }
    }

    /// The bound.
    pub(super) fn bound(&self) -> Duration {
        self.bound
    }

    /// `shard` waits for `previous`. A shard that waited already (revoked and assigned again
    /// meanwhile) keeps its first start, so rebalances in a row do not stretch the bound.
    pub(super) fn wait(&mut self, shard: u32, previous: String, now: Instant) {
        self.began.entry(shard).or_insert(now);
        self.waiting.insert(
            shard,
            Waiting {
                previous,
                next_read: now + HANDOVER_POLL,
            },
        );
    }

    /// Shards not in a new assignment stop waiting, and forget when they began.
    pub(super) fn retain(&mut self, assigned: &[u32]) {
        self.waiting.retain(|s, _| assigned.contains(s));
        self.began.retain(|s, _| assigned.contains(s));
    }

    /// `shards` (revoked) stop waiting until assigned again; when they began is kept.
    pub(super) fn suspend(&mut self, shards: &[u32]) {
        self.waiting.retain(|s, _| !shards.contains(s));
    }

    /// Whether any shard waits.
    pub(super) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// The shards whose record is to be read again now.
    pub(super) fn due(&mut self, now: Instant) -> Vec<u32> {
        let mut due = Vec::new();
        for (shard, w) in &mut self.waiting {
            if now >= w.next_read {
                w.next_read = now + HANDOVER_POLL;
                due.push(*shard);
            }
        }
        due
    }

    /// Judges `shard`'s record read again at `now`; a shard handed over or given up stops waiting.
    pub(super) fn judge(&mut self, shard: u32, read: &LastCursor, now: Instant) -> Outcome {
        let (Some(w), Some(began)) = (self.waiting.get(&shard), self.began.get(&shard)) else {
            return Outcome::Waiting;
        };
        let waited = now.saturating_duration_since(*began);
        let handed = match &read.cursor {
            None => true,
            Some(c) => c.released || c.owner != w.previous,
        };
        let outcome = if handed {
            Outcome::HandedOver {
                previous: w.previous.clone(),
                waited,
            }
        } else if waited >= self.bound {
            Outcome::GaveUp {
                previous: w.previous.clone(),
                waited,
            }
        } else {
            return Outcome::Waiting;
        };
        self.waiting.remove(&shard);
        self.began.remove(&shard);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::clock::Minute;
    use crate::wire::cursor::Cursor;

    fn t(h: u32, m: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, h, m, s).unwrap()
    }

    fn record(owner: &str, written_at: DateTime<Utc>, released: bool) -> LastCursor {
        LastCursor {
            cursor: Some(Cursor {
                shard: 3,
                minute: Minute::containing(written_at),
                written_at,
                owner: owner.into(),
                generation: 1,
                schedule_md5: String::new(),
                schedule_topic: None,
                api_url: None,
                released,
            }),
            unreadable: Vec::new(),
        }
    }

    #[test]
    fn only_a_live_previous_owner_that_has_not_released_the_shard_is_waited_for() {
        let now = t(12, 0, 30);
        // A periodic record of a live member: it may still be sending the shard's minutes.
        assert_eq!(
            verdict(&record("a", t(12, 0, 5), false), "b", now),
            Verdict::Wait("a".into())
        );
        assert_eq!(
            verdict(&record("a", t(11, 58, 31), false), "b", now),
            Verdict::Wait("a".into())
        );
        // Its final record; our own record; a member silent for 2 minutes; no record at all.
        assert_eq!(
            verdict(&record("a", t(12, 0, 5), true), "b", now),
            Verdict::Start
        );
        assert_eq!(
            verdict(&record("b", t(12, 0, 5), false), "b", now),
            Verdict::Start
        );
        assert_eq!(
            verdict(&record("a", t(11, 58, 30), false), "b", now),
            Verdict::Start
        );
        assert_eq!(verdict(&LastCursor::default(), "b", now), Verdict::Start);
    }

    #[test]
    fn a_waiting_shard_starts_at_the_final_record_or_when_the_bound_passes() {
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut handovers = Handovers::new(Duration::from_secs(10));
        handovers.wait(3, "a".into(), start);
        handovers.wait(4, "a".into(), start);
        assert!(
            handovers.due(at(100)).is_empty(),
            "read again only every poll"
        );
        assert_eq!(handovers.due(at(200)), vec![3, 4]);
        assert!(handovers.due(at(300)).is_empty());
        let periodic = record("a", t(12, 0, 5), false);
        assert_eq!(handovers.judge(3, &periodic, at(200)), Outcome::Waiting);
        assert_eq!(
            handovers.judge(3, &record("a", t(12, 0, 6), true), at(1_500)),
            Outcome::HandedOver {
                previous: "a".into(),
                waited: Duration::from_millis(1_500)
            }
        );
        assert_eq!(handovers.due(at(10_000)), vec![4], "3 no longer waits");
        // Revoked and assigned again while waiting: the bound runs from the first wait.
        handovers.suspend(&[4]);
        assert!(
            handovers.due(at(9_000)).is_empty(),
            "a revoked shard is not read"
        );
        handovers.wait(4, "a".into(), at(9_000));
        assert_eq!(handovers.judge(4, &periodic, at(9_999)), Outcome::Waiting);
        assert_eq!(
            handovers.judge(4, &periodic, at(10_000)),
            Outcome::GaveUp {
                previous: "a".into(),
                waited: Duration::from_secs(10)
            }
        );
        assert!(handovers.is_empty());
    }

    #[test]
    fn a_record_of_another_owner_since_is_a_handover_and_unassigned_shards_stop_waiting() {
        let start = Instant::now();
        let mut handovers = Handovers::new(Duration::from_secs(10));
        handovers.wait(1, "a".into(), start);
        handovers.wait(2, "a".into(), start);
        assert_eq!(
            handovers.judge(1, &record("c", t(12, 0, 6), false), start),
            Outcome::HandedOver {
                previous: "a".into(),
                waited: Duration::ZERO
            }
        );
        handovers.wait(5, "a".into(), start);
        handovers.suspend(&[5]);
        assert_eq!(
            handovers.due(start + HANDOVER_POLL),
            vec![2],
            "1 was handed over"
        );
        handovers.retain(&[1, 3]);
        assert!(handovers.is_empty());
        assert_eq!(
            handovers.judge(2, &record("a", t(12, 0, 6), true), start),
            Outcome::Waiting,
            "a shard not waiting has nothing to judge"
        );
        // Assigned anew after a retain that dropped it: its bound starts again.
        handovers.wait(2, "a".into(), start + Duration::from_secs(20));
        assert_eq!(
            handovers.judge(
                2,
                &record("a", t(12, 0, 6), false),
                start + Duration::from_secs(29)
            ),
            Outcome::Waiting
        );
    }
}
