//! The orphan watchdog and the one-schedule check: once a minute a member reads every shard's last
//! cursor record ([`super::status::assess`]). A shard nobody has written for 2 minutes is orphaned
//! and the member rejoins the group with a fresh consumer (which forces a complete assignment on a
//! coordinator that left a dead member's shards unassigned); a member publishing another schedule
//! MD5 for more than 2 minutes is logged as an error. The newest record another member wrote is
//! also a reference for this member's clock: it confirms a step of the wall clock held back
//! ([`crate::clock::GuardedClock::confirm_step`]). A task of its own: a slow or unreachable
//! broker never stalls the tick loop.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Timelike, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::group::{Rejoiner, StateTopic};
use super::observe::Observer;
use super::status::STALE_AFTER;
use crate::clock::{Clock, Minute};

/// What the member tells its watchdog: the shards it owns now and the MD5 of its schedule.
#[derive(Debug, Default, Clone)]
pub struct MemberView {
    /// Owned shards (not orphaned, whatever their records say).
    pub owned: BTreeSet<u32>,
    /// MD5 of the schedule in force.
    pub md5: String,
}

/// One member's watchdog.
pub struct Watchdog {
    /// The group's state topic.
    pub state: Arc<StateTopic>,
    /// Its shard count.
    pub shards: u32,
    /// This member's name.
    pub owner: String,
    /// The dispatcher's clock.
    pub clock: Arc<dyn Clock>,
    /// Updated by the member.
    pub view: Arc<Mutex<MemberView>>,
    /// Makes the member rejoin.
    pub rejoiner: Rejoiner,
    /// How often the clock is looked at.
    pub poll: Duration,
    /// Shows the group on the status page.
    pub observer: Arc<Observer>,
    /// The jobs API's directory of shard owners, when the API is on: fed from the same read.
    pub directory: Option<Arc<super::api::book::Directory>>,
}

impl Watchdog {
    /// Runs until `shutdown`, looking once a minute (from second 40 of the minute, when every
    /// live owner has written this minute's record).
    pub async fn run(self, shutdown: CancellationToken) {
        let Watchdog {
            state,
            shards,
            owner,
            clock,
            view,
            rejoiner,
            poll,
            observer,
            directory,
        } = self;
        let mut joined_at = clock.now();
        let mut watched: Option<Minute> = None;
        let mut md5_differs_since: HashMap<String, DateTime<Utc>> = HashMap::new();
        let mut interval = tokio::time::interval(poll);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = interval.tick() => {}
            }
            let now = clock.now();
            let minute = Minute::containing(now);
            if watched == Some(minute) || now.second() < 40 {
                continue;
            }
            watched = Some(minute);
            let reads = state.all(shards).await;
            let cursors: Vec<_> = reads.iter().map(|r| r.cursor.clone()).collect();
            confirm_clock(&*clock, &cursors, &owner);
            if let Some(directory) = &directory {
                directory.update(cursors.iter().flatten());
            }
            let group = super::status::assess_reads(&reads, now, shards);
            observer.group_read(group.clone());
            let ours = view.lock().unwrap_or_else(|e| e.into_inner()).clone();
            for (other, their_md5) in &group.md5_by_owner {
                if *other == owner || *their_md5 == ours.md5 {
                    md5_differs_since.remove(other);
                    continue;
                }
                let since = *md5_differs_since.entry(other.clone()).or_insert(now);
                if now - since > STALE_AFTER {
                    error!(message = "another member of the group runs a different schedule; every member must run the same file", member = %other, their_md5 = %their_md5, our_md5 = %ours.md5, since = %since.to_rfc3339());
                }
            }
            let orphaned: Vec<u32> = group
                .orphaned
                .iter()
                .copied()
                .filter(|s| !ours.owned.contains(s))
                .collect();
            // A member that just joined lets its first assignment settle before judging.
            if !orphaned.is_empty() && now - joined_at > STALE_AFTER {
                warn!(message = "shards have no live owner (no cursor record for 2 minutes); rejoining the group to force a complete assignment", shards = ?orphaned);
                joined_at = now;
                rejoiner.rejoin();
            }
        }
    }
}

/// Offers the newest cursor record another member wrote to `clock` as a reference: a member
/// whose clock moved on with this member's stepped wall clock confirms the step.
fn confirm_clock(clock: &dyn Clock, cursors: &[Option<crate::wire::cursor::Cursor>], owner: &str) {
    let newest = cursors
        .iter()
        .flatten()
        .filter(|c| c.owner != owner)
        .max_by_key(|c| c.written_at);
    if let Some(c) = newest {
        clock.confirm(
            c.written_at,
            &format!(
                "member {}'s cursor of shard {} confirms it",
                c.owner, c.shard
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::TimeZone;

    use super::*;
    use crate::clock::{GuardedClock, ManualClock, ManualMonotonic};
    use crate::wire::cursor::Cursor;

    fn cursor(owner: &str, written_at: DateTime<Utc>) -> Option<Cursor> {
        Some(Cursor {
            shard: 0,
            minute: Minute::containing(written_at),
            written_at,
            owner: owner.into(),
            generation: 1,
            schedule_md5: "m".into(),
            schedule_topic: None,
            api_url: None,
            released: false,
        })
    }

    #[test]
    fn only_another_members_cursor_at_the_new_time_confirms_a_held_step() {
        let t0 = Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap();
        let wall = ManualClock::new(t0);
        let clock = GuardedClock::new(
            Arc::new(wall.clone()),
            Arc::new(ManualMonotonic::default()),
            Duration::from_secs(600),
        );
        wall.advance(chrono::Duration::hours(2));
        assert_eq!(clock.now(), t0, "held back");
        let stepped = wall.now() - chrono::Duration::seconds(20);
        // Our own record at the new time is no reference; another member's at the old time
        // neither.
        confirm_clock(&clock, &[cursor("me", stepped), cursor("b", t0)], "me");
        assert_eq!(clock.now(), t0);
        confirm_clock(
            &clock,
            &[cursor("me", t0), cursor("b", stepped), None],
            "me",
        );
        assert_eq!(clock.now(), wall.now(), "confirmed by member b");
    }
}
