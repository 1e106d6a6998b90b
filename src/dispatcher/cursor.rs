//! A shard's progress: the [`Lease`] that counts its dispatches until the broker acks them; the
//! cursor record that carries that progress in Kafka is [`crate::wire::cursor`]'s.
//!
//! ```text
//!  tick loop ── expect(minute, n) ──► Lease (one per owned shard) ◄── settle(minute, k) ── producers (on ack)
//!                                        │ cursor(): the last minute whose every dispatch is settled
//!                                        ▼
//!            <group>.state, partition = shard, key "cursor":
//!            {"v":1,"shard","minute","writtenAt","owner","generation","scheduleMd5"}
//! ```
//!
//! A lease lives exactly as long as one ownership of the shard: a shard taken over again gets a new
//! lease, so a late ack from an earlier ownership can never move the new owner's cursor.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::clock::Minute;

/// One ownership of one shard: what was handed out and what is still waiting for an ack.
#[derive(Debug)]
pub struct Lease {
    shard: u32,
    state: Mutex<LeaseState>,
    /// The ownership ended: no periodic cursor of it may be written any more.
    closed: AtomicBool,
    /// Woken when nothing is outstanding any more ([`drained`](Self::drained)).
    idle: Notify,
}

#[derive(Debug)]
struct LeaseState {
    /// The last minute handed out (or the cursor the ownership started from).
    handed_out: Minute,
    /// Minutes with dispatches not settled yet, and how many.
    outstanding: BTreeMap<Minute, u64>,
}

impl Lease {
    /// A lease on `shard` whose minutes up to `cursor` are done.
    pub fn new(shard: u32, cursor: Minute) -> Arc<Lease> {
        Arc::new(Lease {
            shard,
            state: Mutex::new(LeaseState {
                handed_out: cursor,
                outstanding: BTreeMap::new(),
            }),
            closed: AtomicBool::new(false),
            idle: Notify::new(),
        })
    }

    /// The shard.
    pub fn shard(&self) -> u32 {
        self.shard
    }

    /// Ends the ownership: periodic cursor writes of this lease still queued are dropped, so the
    /// final cursor written at release is the shard's last record.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn with<T>(&self, f: impl FnOnce(&mut LeaseState) -> T) -> T {
        // A poisoned lock only means a panic elsewhere mid-update; the counts are still usable.
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut state)
    }

    /// `minute` is handed out with `dispatches` records (0 is fine: the minute is then done).
    /// Called before the records are queued, so an ack can never arrive first.
    pub fn expect(&self, minute: Minute, dispatches: u64) {
        self.with(|s| {
            debug_assert!(minute > s.handed_out, "minutes are handed out in order");
            s.handed_out = s.handed_out.max(minute);
            if dispatches > 0 {
                *s.outstanding.entry(minute).or_default() += dispatches;
            }
        });
    }

    /// `dispatches` records of the earlier minute `slot` are handed out again, late (the paused
    /// slots a pause's end sends, [`super::control`]). Producers settle a record by its slot, so
    /// they are counted there: until they are settled the cursor stays before `slot`, and a crash
    /// meanwhile makes the next owner hand them out again (duplicates, never a loss).
    pub fn expect_late(&self, slot: Minute, dispatches: u64) {
        if dispatches == 0 {
            return;
        }
        self.with(|s| {
            debug_assert!(slot <= s.handed_out, "a late slot is one handed out before");
            *s.outstanding.entry(slot).or_default() += dispatches;
        });
    }

    /// `count` dispatches of `minute` are settled (acked, or dropped after a permanent error).
    pub fn settle(&self, minute: Minute, count: u64) {
        let drained = self.with(|s| {
            if let Some(n) = s.outstanding.get_mut(&minute) {
                *n = n.saturating_sub(count);
                if *n == 0 {
                    s.outstanding.remove(&minute);
                }
            }
            s.outstanding.is_empty()
        });
        if drained {
            self.idle.notify_waiters();
        }
    }

    /// Resolves once no dispatch is outstanding (at once when none is).
    pub async fn drained(&self) {
        loop {
            let woken = self.idle.notified();
            let mut woken = std::pin::pin!(woken);
            // Registered before the count is read: a settle in between still wakes us.
            woken.as_mut().enable();
            if self.outstanding() == 0 {
                return;
            }
            woken.await;
        }
    }

    /// The last minute whose every dispatch is settled (with every minute before it).
    pub fn cursor(&self) -> Minute {
        self.with(|s| match s.outstanding.keys().next() {
            Some(first) => Minute(first.0 - 1),
            None => s.handed_out,
        })
    }

    /// The last minute handed out.
    pub fn handed_out(&self) -> Minute {
        self.with(|s| s.handed_out)
    }

    /// Dispatches handed out and not settled.
    pub fn outstanding(&self) -> u64 {
        self.with(|s| s.outstanding.values().sum())
    }
}

/// A [`Lease`] carried by a dispatch; equal when it is the same lease.
#[derive(Debug, Clone)]
pub struct LeaseRef(pub Arc<Lease>);

impl PartialEq for LeaseRef {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for LeaseRef {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_is_the_last_minute_with_nothing_outstanding() {
        let lease = Lease::new(3, Minute(100));
        assert_eq!(lease.cursor(), Minute(100));
        lease.expect(Minute(101), 2);
        lease.expect(Minute(102), 0);
        lease.expect(Minute(103), 1);
        assert_eq!((lease.cursor(), lease.outstanding()), (Minute(100), 3));
        // 103 acked before 101: the cursor still waits for 101.
        lease.settle(Minute(103), 1);
        assert_eq!(lease.cursor(), Minute(100));
        lease.settle(Minute(101), 1);
        assert_eq!(lease.cursor(), Minute(100));
        lease.settle(Minute(101), 1);
        assert_eq!((lease.cursor(), lease.outstanding()), (Minute(103), 0));
        assert_eq!(lease.handed_out(), Minute(103));
    }

    #[tokio::test(start_paused = true)]
    async fn drained_wakes_when_the_last_dispatch_is_settled() {
        let lease = Lease::new(1, Minute(10));
        lease.drained().await;
        lease.expect(Minute(11), 2);
        let waiter = tokio::spawn({
            let lease = Arc::clone(&lease);
            async move { lease.drained().await }
        });
        lease.settle(Minute(11), 1);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        lease.settle(Minute(11), 1);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
            .await
            .expect("woken")
            .expect("joined");
    }

    #[test]
    fn a_settle_for_a_minute_the_lease_never_handed_out_changes_nothing() {
        let lease = Lease::new(0, Minute(10));
        lease.expect(Minute(11), 1);
        lease.settle(Minute(9), 5);
        assert_eq!((lease.cursor(), lease.outstanding()), (Minute(10), 1));
    }
}
