//! `cronq status`: the dispatcher group as its cursor records tell it. Also the view the members'
//! watchdog acts on ([`assess`]), so the operator and the members judge a shard the same way.
//!
//! Every owner appends a cursor record for each of its shards at least once a minute, so the last
//! record of each shard says who owns it, how far it has dispatched, and which schedule it runs.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::group::LastCursor;
use crate::clock::Minute;
use crate::obs::terminal::escape_controls;
use crate::wire::cursor::{Cursor, TopicPosition};

/// A shard with no cursor record written for this long is orphaned; a member whose schedule MD5
/// differs for this long is reported.
pub const STALE_AFTER: chrono::Duration = chrono::Duration::minutes(2);

/// A cursor further ahead of the reader's clock than this is in the future. A live cursor is the
/// minute in progress at most; the second minute allows for the reader's clock being a little
/// behind the writer's.
pub const FUTURE_AFTER: i64 = 1;

/// One shard as its last record tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ShardView {
    /// The shard.
    pub shard: u32,
    /// Its owner, if the last record is fresh.
    pub owner: Option<String>,
    /// The last minute dispatched whole (RFC 3339), if ever.
    pub cursor: Option<String>,
    /// Minutes between the cursor and now.
    pub behind_minutes: Option<i64>,
    /// Seconds since the last record was written.
    pub record_age_seconds: Option<i64>,
    /// No fresh record: nobody is dispatching this shard.
    pub orphaned: bool,
    /// The cursor is more than [`FUTURE_AFTER`] ahead of the reader's clock: the writer's clock
    /// is ahead, or the reader's is behind.
    pub future: bool,
    /// The record was written at a time before its own cursor: the writer's clock was behind the
    /// cursor (it went back, and the writer waits for it to pass the cursor).
    pub clock_behind: bool,
    /// Offsets of the cursor records after the last readable one that do not decode, newest
    /// first (every cursor record of the shard when none decodes).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable_offsets: Vec<i64>,
    /// Topic mode: where the owner is in the shard's partition of the schedule topic (the next
    /// offset to apply, jobs held, records rejected), as its last record says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schedule_topic: Option<TopicPosition>,
}

/// The whole group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupView {
    /// When it was read.
    pub at: String,
    /// Every shard.
    pub shards: Vec<ShardView>,
    /// Members (owners of fresh records) and their shards.
    pub members: BTreeMap<String, Vec<u32>>,
    /// Each member's schedule MD5.
    pub md5_by_owner: BTreeMap<String, String>,
    /// More than one MD5 among the members.
    pub md5_disagree: bool,
    /// Shards with no live owner.
    pub orphaned: Vec<u32>,
    /// Shards whose cursor is more than 2 minutes behind.
    pub lagging: Vec<u32>,
    /// Shards whose cursor is in the future (more than a minute ahead of the reader's clock).
    pub future: Vec<u32>,
    /// Shards whose last record was written by a clock behind its cursor.
    pub clock_behind: Vec<u32>,
    /// Shards whose newest cursor records do not decode (the shard resumes from the last one
    /// that does).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<u32>,
    /// Shards with cursor records of which none decodes: their next owner starts from now minus
    /// the longest catch-up window of their jobs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub no_readable_cursor: Vec<u32>,
}

impl GroupView {
    /// Healthy: every shard owned, no cursor more than 2 minutes behind or in the future, no
    /// writer's clock behind its cursor, one schedule.
    pub fn healthy(&self) -> bool {
        self.orphaned.is_empty()
            && self.lagging.is_empty()
            && self.future.is_empty()
            && self.clock_behind.is_empty()
            && !self.md5_disagree
            && self.unreadable.is_empty()
            && self.no_readable_cursor.is_empty()
    }

    /// Flags the shards whose partition holds cursor records that do not decode (`reads`: each
    /// shard's read, by shard number).
    pub fn flag_unreadable(&mut self, reads: &[LastCursor]) {
        for (shard, read) in self.shards.iter_mut().zip(reads) {
            if read.unreadable.is_empty() {
                continue;
            }
            shard.unreadable_offsets = read.unreadable.clone();
            if read.nothing_decodes() {
                self.no_readable_cursor.push(shard.shard);
            } else {
                self.unreadable.push(shard.shard);
            }
        }
    }
}

/// Judges the group from each shard's read of its partition at `now`: [`assess`], with the
/// shards whose records do not decode flagged.
pub fn assess_reads(reads: &[LastCursor], now: DateTime<Utc>, shards: u32) -> GroupView {
    let cursors: Vec<Option<Cursor>> = reads.iter().map(|r| r.cursor.clone()).collect();
    let mut view = assess(&cursors, now, shards);
    view.flag_unreadable(reads);
    view
}

/// Judges the group from each shard's last cursor record at `now`.
pub fn assess(cursors: &[Option<Cursor>], now: DateTime<Utc>, shards: u32) -> GroupView {
    let now_minute = Minute::containing(now);
    let stale_minutes = STALE_AFTER.num_minutes();
    let mut view = GroupView {
        at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        shards: Vec::new(),
        members: BTreeMap::new(),
        md5_by_owner: BTreeMap::new(),
        md5_disagree: false,
        orphaned: Vec::new(),
        lagging: Vec::new(),
        future: Vec::new(),
        clock_behind: Vec::new(),
        unreadable: Vec::new(),
        no_readable_cursor: Vec::new(),
    };
    for shard in 0..shards {
        let cursor = cursors.get(shard as usize).and_then(Option::as_ref);
        let fresh = cursor.filter(|c| now - c.written_at <= STALE_AFTER);
        let behind = cursor.map(|c| now_minute.0 - c.minute.0);
        if let Some(c) = fresh {
            view.members.entry(c.owner.clone()).or_default().push(shard);
            view.md5_by_owner
                .insert(c.owner.clone(), c.schedule_md5.clone());
        } else {
            view.orphaned.push(shard);
        }
        if behind.is_none_or(|b| b > stale_minutes) {
            view.lagging.push(shard);
        }
        let future = behind.is_some_and(|b| -b > FUTURE_AFTER);
        if future {
            view.future.push(shard);
        }
        let clock_behind =
            fresh.is_some_and(|c| c.written_at < c.minute.start().unwrap_or(c.written_at));
        if clock_behind {
            view.clock_behind.push(shard);
        }
        view.shards.push(ShardView {
            shard,
            owner: fresh.map(|c| c.owner.clone()),
            cursor: cursor
                .and_then(|c| c.minute.start())
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            behind_minutes: behind,
            record_age_seconds: cursor.map(|c| (now - c.written_at).num_seconds()),
            orphaned: fresh.is_none(),
            future,
            clock_behind,
            unreadable_offsets: Vec::new(),
            schedule_topic: fresh.and_then(|c| c.schedule_topic),
        });
    }
    let mut md5s: Vec<&String> = view.md5_by_owner.values().collect();
    md5s.sort();
    md5s.dedup();
    view.md5_disagree = md5s.len() > 1;
    view
}

/// The view as text for a terminal.
pub fn render(view: &GroupView, group: &str, topic: &str) -> String {
    let mut out = format!(
        "group {group} (state topic {topic}, {} shards) at {}\n\nmembers:\n",
        view.shards.len(),
        view.at
    );
    if view.members.is_empty() {
        out.push_str("  (none alive)\n");
    }
    for (owner, shards) in &view.members {
        let md5 = escape_controls(view.md5_by_owner.get(owner).map_or("?", String::as_str));
        // Owners and MD5s are what the cursor records say: whoever writes the state topic
        // chooses them.
        let owner = escape_controls(owner);
        let flag = if view.md5_disagree {
            "  <- schedules differ"
        } else {
            ""
        };
        out.push_str(&format!(
            "  {owner}  shards {shards:?}  schedule md5 {md5}{flag}\n"
        ));
    }
    // Topic mode: each shard's place in the schedule topic, as its owner reports it.
    let topic = view.shards.iter().any(|s| s.schedule_topic.is_some());
    out.push_str(
        "\nshard  owner                           cursor                behind  record age",
    );
    out.push_str(if topic {
        "  topic offset  jobs  rejected\n"
    } else {
        "\n"
    });
    for s in &view.shards {
        let age = s
            .record_age_seconds
            .map_or("-".to_string(), |a| format!("{a}s"));
        out.push_str(&format!(
            "{:>5}  {:<30}  {:<20}  {:>6}  ",
            s.shard,
            escape_controls(s.owner.as_deref().unwrap_or("-- NO OWNER --")),
            escape_controls(s.cursor.as_deref().unwrap_or("never")),
            s.behind_minutes
                .map_or("-".to_string(), |b| format!("{b}m")),
        ));
        match (topic, s.schedule_topic) {
            (false, _) => out.push_str(&age),
            (true, None) => out.push_str(&format!("{age:<10}  {:>12}", "-")),
            (true, Some(t)) => out.push_str(&format!(
                "{age:<10}  {:>12}  {:>4}  {:>8}",
                t.offset, t.jobs, t.rejected
            )),
        }
        out.push('\n');
    }
    out.push('\n');
    if view.healthy() {
        out.push_str("OK: every shard owned, every cursor within 2 minutes, one schedule\n");
    } else {
        if !view.orphaned.is_empty() {
            out.push_str(&format!(
                "PROBLEM: shards with no owner: {:?}\n",
                view.orphaned
            ));
        }
        if !view.lagging.is_empty() {
            out.push_str(&format!(
                "PROBLEM: cursors more than 2 minutes behind: {:?}\n",
                view.lagging
            ));
        }
        if !view.future.is_empty() {
            out.push_str(&format!(
                "PROBLEM: cursors in the future (more than {FUTURE_AFTER} minute ahead of this clock): {:?}: the writer's clock is ahead, or this machine's is behind\n",
                view.future
            ));
        }
        if !view.clock_behind.is_empty() {
            out.push_str(&format!(
                "PROBLEM: clock behind the cursor: shards {:?} were last written by a member whose clock read earlier than its own cursor; it waits for its clock to pass the cursor\n",
                view.clock_behind
            ));
        }
        if view.md5_disagree {
            out.push_str("PROBLEM: members run different schedule files\n");
        }
        for s in &view.shards {
            if s.unreadable_offsets.is_empty() {
                continue;
            }
            let offsets = s
                .unreadable_offsets
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            if view.no_readable_cursor.contains(&s.shard) {
                out.push_str(&format!(
                    "PROBLEM: shard {}: no cursor record decodes (offsets {offsets}); its next owner starts from now minus the longest catch-up window of its jobs\n",
                    s.shard
                ));
            } else {
                out.push_str(&format!(
                    "PROBLEM: shard {}: unreadable cursor records after its cursor (offsets {offsets}); it resumes from the last readable one\n",
                    s.shard
                ));
            }
        }
    }
    out
}

/// Reads the group's state topic through `kafka` and judges it. `None` when the state topic does
/// not exist (no dispatcher of this group ever ran).
pub async fn read(
    kafka: &crate::kafka::Connection,
    state_topic: &str,
    now: DateTime<Utc>,
) -> Result<Option<GroupView>, String> {
    let client = kafka.connect_once().await.map_err(|e| {
        format!(
            "cannot reach Kafka at {}: {}",
            kafka.brokers_text(),
            crate::kafka::describe(&e)
        )
    })?;
    let topics = client
        .list_topics()
        .await
        .map_err(|e| format!("cannot list topics: {}", crate::kafka::describe(&e)))?;
    let Some(topic) = topics.iter().find(|t| t.name == state_topic) else {
        return Ok(None);
    };
    let shards = topic.partitions.len() as u32;
    let state =
        super::group::StateTopic::new(std::sync::Arc::new(client), state_topic.to_string(), shards);
    let reads = state.all(shards).await;
    Ok(Some(assess_reads(&reads, now, shards)))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn cursor(shard: u32, owner: &str, minute_ago: i64, written_ago_s: i64, md5: &str) -> Cursor {
        let now = Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 30).unwrap();
        Cursor {
            shard,
            minute: Minute(Minute::containing(now).0 - minute_ago),
            written_at: now - chrono::Duration::seconds(written_ago_s),
            owner: owner.into(),
            generation: 1,
            schedule_md5: md5.into(),
            schedule_topic: None,
            api_url: None,
            released: false,
        }
    }

    #[test]
    fn a_healthy_group_and_each_kind_of_problem() {
        let now = Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 30).unwrap();
        let healthy = [
            Some(cursor(0, "a", 0, 5, "m1")),
            Some(cursor(1, "b", 1, 40, "m1")),
        ];
        let view = assess(&healthy, now, 2);
        assert!(view.healthy(), "{view:?}");
        assert_eq!(view.members.get("a"), Some(&vec![0]));

        // shard 1's owner went silent 3 minutes ago; shard 2 never had a cursor; shard 3 is owned
        // but 5 minutes behind; b runs another file.
        let sick = [
            Some(cursor(0, "a", 0, 5, "m1")),
            Some(cursor(1, "c", 3, 180, "m1")),
            None,
            Some(cursor(3, "b", 5, 10, "m2")),
        ];
        let view = assess(&sick, now, 4);
        assert!(!view.healthy());
        assert_eq!(view.orphaned, [1, 2]);
        assert_eq!(view.lagging, [1, 2, 3]);
        assert!(view.md5_disagree);
        assert!(!view.members.contains_key("c"));
        let text = render(&view, "g", "g.state");
        assert!(text.contains("shards with no owner: [1, 2]"), "{text}");
        assert!(text.contains("-- NO OWNER --"), "{text}");
        assert!(view.future.is_empty() && view.clock_behind.is_empty());
    }

    #[test]
    fn a_cursor_in_the_future_and_a_writer_behind_its_cursor_are_problems() {
        let now = Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 30).unwrap();
        // Shard 0: written 5 s ago for the minute in progress (healthy). Shard 1: a writer two
        // hours ahead (its record looks written in the future, its cursor too). Shard 2: a
        // writer whose clock went back 10 minutes behind its cursor.
        let ahead = Cursor {
            minute: Minute(Minute::containing(now).0 + 120),
            written_at: now + chrono::Duration::hours(2),
            ..cursor(1, "b", 0, 0, "m1")
        };
        let behind = Cursor {
            minute: Minute::containing(now),
            written_at: now - chrono::Duration::minutes(1),
            ..cursor(2, "c", 0, 0, "m1")
        };
        let view = assess(
            &[Some(cursor(0, "a", 0, 5, "m1")), Some(ahead), Some(behind)],
            now,
            3,
        );
        assert!(!view.healthy());
        assert_eq!(
            (view.future.clone(), view.clock_behind.clone()),
            (vec![1], vec![2])
        );
        assert!(
            view.orphaned.is_empty() && view.lagging.is_empty(),
            "{view:?}"
        );
        let text = render(&view, "g", "g.state");
        assert!(text.contains("cursors in the future"), "{text}");
        assert!(
            text.contains("clock behind the cursor: shards [2]"),
            "{text}"
        );
        // One minute ahead is a reader a little behind the writer: not a problem.
        let minute = Minute(Minute::containing(now).0 + 1);
        let near = Cursor {
            minute,
            written_at: minute.start().unwrap() + chrono::Duration::seconds(2),
            ..cursor(0, "a", 0, 5, "m1")
        };
        assert!(assess(&[Some(near)], now, 1).healthy());
    }
}
