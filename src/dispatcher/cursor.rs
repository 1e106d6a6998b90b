//! A shard's progress: the [`Lease`] that counts its dispatches until the broker acks them, and the
//! cursor record that carries that progress in Kafka.
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

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::Minute;

/// One ownership of one shard: what was handed out and what is still waiting for an ack.
#[derive(Debug)]
pub struct Lease {
    shard: u32,
    state: Mutex<LeaseState>,
    /// The ownership ended: no periodic cursor of it may be written any more.
    closed: AtomicBool,
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
        self.with(|s| {
            if let Some(n) = s.outstanding.get_mut(&minute) {
                *n = n.saturating_sub(count);
                if *n == 0 {
                    s.outstanding.remove(&minute);
                }
            }
        });
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

/// The key of cursor records.
pub const CURSOR_KEY: &[u8] = b"cursor";

/// A shard's cursor as written to its partition of the state topic. Written at least once a minute
/// by the owner, also when it did not advance: the record doubles as the owner's liveness report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// The shard (= partition).
    pub shard: u32,
    /// Every due job of this shard's minutes up to and including this one was acked.
    pub minute: Minute,
    /// When the owner wrote it.
    pub written_at: DateTime<Utc>,
    /// The member that wrote it (`host-pid`).
    pub owner: String,
    /// The owner's assignment count: it grows by one at every assignment the member receives.
    pub generation: u64,
    /// MD5 of the owner's schedule file.
    pub schedule_md5: String,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Wire {
    v: u32,
    shard: u32,
    minute: String,
    written_at: String,
    owner: String,
    generation: u64,
    schedule_md5: String,
}

/// Why a state-topic record is not a cursor.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CursorError {
    /// Not the JSON of a cursor.
    #[error("not a cursor record: {0}")]
    Json(String),
    /// A version this build does not read.
    #[error("cursor version {0} is not supported (this build reads v1)")]
    Version(u32),
    /// A time field is not RFC 3339.
    #[error("cursor field {field}: {value:?} is not an RFC 3339 instant")]
    Instant {
        /// Which field.
        field: &'static str,
        /// As written.
        value: String,
    },
}

impl Cursor {
    /// The record value.
    pub fn encode(&self) -> Vec<u8> {
        let wire = Wire {
            v: 1,
            shard: self.shard,
            minute: self
                .minute
                .start()
                .map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true))
                .unwrap_or_default(),
            written_at: self.written_at.to_rfc3339_opts(SecondsFormat::Millis, true),
            owner: self.owner.clone(),
            generation: self.generation,
            schedule_md5: self.schedule_md5.clone(),
        };
        // Strings and integers always serialize.
        serde_json::to_vec(&wire).unwrap_or_default()
    }

    /// Reads a record value. Unknown fields are ignored (later versions may add some).
    pub fn decode(value: &[u8]) -> Result<Cursor, CursorError> {
        let wire: Wire =
            serde_json::from_slice(value).map_err(|e| CursorError::Json(e.to_string()))?;
        if wire.v != 1 {
            return Err(CursorError::Version(wire.v));
        }
        let instant = |field: &'static str, value: &str| {
            DateTime::parse_from_rfc3339(value)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| CursorError::Instant {
                    field,
                    value: value.to_string(),
                })
        };
        Ok(Cursor {
            shard: wire.shard,
            minute: Minute::containing(instant("minute", &wire.minute)?),
            written_at: instant("writtenAt", &wire.written_at)?,
            owner: wire.owner,
            generation: wire.generation,
            schedule_md5: wire.schedule_md5,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

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

    #[test]
    fn a_settle_for_a_minute_the_lease_never_handed_out_changes_nothing() {
        let lease = Lease::new(0, Minute(10));
        lease.expect(Minute(11), 1);
        lease.settle(Minute(9), 5);
        assert_eq!((lease.cursor(), lease.outstanding()), (Minute(10), 1));
    }

    #[test]
    fn a_cursor_round_trips_and_reads_as_documented() {
        let cursor = Cursor {
            shard: 7,
            minute: Minute::containing(Utc.with_ymd_and_hms(2026, 11, 29, 18, 5, 0).unwrap()),
            written_at: Utc.with_ymd_and_hms(2026, 11, 29, 18, 6, 1).unwrap()
                + chrono::Duration::milliseconds(250),
            owner: "host-42".into(),
            generation: 3,
            schedule_md5: "0123456789abcdef0123456789abcdef".into(),
        };
        let bytes = cursor.encode();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"v":1,"shard":7,"minute":"2026-11-29T18:05:00Z",
                "writtenAt":"2026-11-29T18:06:01.250Z","owner":"host-42","generation":3,
                "scheduleMd5":"0123456789abcdef0123456789abcdef"})
        );
        assert_eq!(Cursor::decode(&bytes), Ok(cursor));
    }

    #[test]
    fn a_later_version_or_garbage_is_refused_with_the_reason() {
        assert_eq!(
            Cursor::decode(br#"{"v":2,"shard":0,"minute":"x","writtenAt":"y","owner":"","generation":0,"scheduleMd5":""}"#),
            Err(CursorError::Version(2))
        );
        assert!(matches!(Cursor::decode(b"nope"), Err(CursorError::Json(_))));
        assert_eq!(
            Cursor::decode(br#"{"v":1,"shard":0,"minute":"noon","writtenAt":"2026-11-29T18:06:01Z","owner":"","generation":0,"scheduleMd5":"","extra":true}"#),
            Err(CursorError::Instant { field: "minute", value: "noon".into() })
        );
    }
}
