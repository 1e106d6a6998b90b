//! What a member knows for the jobs API, without holding any job's body:
//! - [`Versions`]: per owned shard, each job's name and the offset of its newest record (its
//!   version), sorted by name (the list endpoint pages through it). Fed by the schedule topic
//!   follower (every record applied, tombstones included) and by the member's own acks; only kept
//!   while the API is on.
//! - [`Directory`]: which member owns each shard and where its API is (`apiUrl` of the cursor
//!   records every owner writes each minute), for the forward.
//!
//! Cost of [`Versions`]: one B-tree entry per job (the name on the heap, an offset and a flag);
//! `versions_cost_per_job` below measures it (docs/operations.md has the figure).

use std::collections::BTreeMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::wire::cursor::Cursor;

/// A job's newest record as the member knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    offset: i64,
    /// `false`: a tombstone this member wrote that its follower has not read back yet (it hides
    /// the job's older records the follower may still apply).
    live: bool,
}

/// A job's version in a shard this member owns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The shard is not this member's.
    NotOwned,
    /// No such job.
    Absent,
    /// The job's version: its record's offset.
    At(i64),
}

/// Each owned shard's job names and versions.
#[derive(Debug, Default)]
pub struct Versions {
    shards: Mutex<BTreeMap<u32, BTreeMap<Box<str>, Version>>>,
}

impl Versions {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u32, BTreeMap<Box<str>, Version>>> {
        self.shards.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `shard` read at its takeover: its jobs in force with their versions. It is served from now.
    pub fn load(&self, shard: u32, jobs: impl IntoIterator<Item = (String, i64)>) {
        let names = jobs
            .into_iter()
            .map(|(name, offset)| (name.into_boxed_str(), Version { offset, live: true }))
            .collect();
        self.lock().insert(shard, names);
    }

    /// `shard` is not this member's any more.
    pub fn drop_shard(&self, shard: u32) {
        self.lock().remove(&shard);
    }

    /// The shards served.
    pub fn owned(&self) -> Vec<u32> {
        self.lock().keys().copied().collect()
    }

    /// The follower applied a record of `shard` at `offset`: an upsert (`live`) or a tombstone.
    /// A record older than what the member already knows (its own ack) changes nothing.
    pub fn seen(&self, shard: u32, name: &str, offset: i64, live: bool) {
        let mut shards = self.lock();
        let Some(names) = shards.get_mut(&shard) else {
            return;
        };
        if names.get(name).is_some_and(|v| v.offset > offset) {
            return;
        }
        if live {
            names.insert(name.into(), Version { offset, live });
        } else {
            names.remove(name);
        }
    }

    /// This member wrote `name`'s record at `offset` and the broker acked it.
    pub fn acked(&self, shard: u32, name: &str, offset: i64, live: bool) {
        let mut shards = self.lock();
        let Some(names) = shards.get_mut(&shard) else {
            return;
        };
        if names.get(name).is_some_and(|v| v.offset > offset) {
            return;
        }
        names.insert(name.into(), Version { offset, live });
    }

    /// `name`'s version in `shard`.
    pub fn get(&self, shard: u32, name: &str) -> Lookup {
        match self.lock().get(&shard) {
            None => Lookup::NotOwned,
            Some(names) => match names.get(name) {
                Some(v) if v.live => Lookup::At(v.offset),
                _ => Lookup::Absent,
            },
        }
    }

    /// Jobs of the owned shards whose name starts with `prefix` and sorts after `after`, by name,
    /// at most `limit`; and whether there are more.
    pub fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<(String, i64)>, bool) {
        use std::ops::Bound;
        let shards = self.lock();
        let start: Bound<&str> = match after {
            Some(a) if a >= prefix => Bound::Excluded(a),
            _ => Bound::Included(prefix),
        };
        let mut out: Vec<(String, i64)> = Vec::new();
        for names in shards.values() {
            let taken = names
                .range::<str, _>((start, Bound::Unbounded))
                .take_while(|(n, _)| n.starts_with(prefix))
                .filter(|(_, v)| v.live)
                .take(limit + 1)
                .map(|(n, v)| (n.to_string(), v.offset));
            out.extend(taken);
        }
        out.sort();
        let more = out.len() > limit;
        out.truncate(limit);
        (out, more)
    }
}

/// A shard's owner as its newest cursor record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The member's name.
    pub member: String,
    /// Its API's base URL (`--advertise-url`); `None` when its API is off.
    pub url: Option<String>,
    /// When the record was written.
    pub written_at: DateTime<Utc>,
}

/// Each shard's owner, from the cursor records.
#[derive(Debug, Default)]
pub struct Directory {
    owners: Mutex<BTreeMap<u32, Owner>>,
}

impl Directory {
    /// Takes in the newest cursor of each shard (the watchdog's minute read, or a refresh).
    pub fn update<'a>(&self, cursors: impl IntoIterator<Item = &'a Cursor>) {
        let mut owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        for c in cursors {
            let newer = owners
                .get(&c.shard)
                .is_none_or(|o| o.written_at <= c.written_at);
            if newer {
                owners.insert(
                    c.shard,
                    Owner {
                        member: c.owner.clone(),
                        url: c.api_url.clone(),
                        written_at: c.written_at,
                    },
                );
            }
        }
    }

    /// `shard`'s owner if its record is fresher than `stale_after` at `now`.
    pub fn owner(
        &self,
        shard: u32,
        now: DateTime<Utc>,
        stale_after: chrono::Duration,
    ) -> Option<Owner> {
        let owners = self.owners.lock().unwrap_or_else(|e| e.into_inner());
        owners
            .get(&shard)
            .filter(|o| now - o.written_at <= stale_after)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_acks_hide_older_records_the_follower_applies_later() {
        let v = Versions::default();
        v.load(0, [("a".to_string(), 3)]);
        assert_eq!(v.get(0, "a"), Lookup::At(3));
        assert_eq!(v.get(1, "a"), Lookup::NotOwned);
        v.acked(0, "a", 10, true);
        v.seen(0, "a", 5, true);
        assert_eq!(
            v.get(0, "a"),
            Lookup::At(10),
            "an older record changes nothing"
        );
        v.acked(0, "a", 11, false);
        v.seen(0, "a", 10, true);
        assert_eq!(v.get(0, "a"), Lookup::Absent, "deleted by this member");
        v.seen(0, "a", 11, false);
        assert_eq!(v.get(0, "a"), Lookup::Absent);
        v.seen(0, "a", 12, true);
        assert_eq!(
            v.get(0, "a"),
            Lookup::At(12),
            "another writer's newer record"
        );
        v.drop_shard(0);
        assert_eq!(v.get(0, "a"), Lookup::NotOwned);
    }

    #[test]
    fn the_list_pages_by_name_across_shards() {
        let v = Versions::default();
        v.load(
            0,
            [
                ("b".to_string(), 1),
                ("d".to_string(), 2),
                ("x-1".to_string(), 3),
            ],
        );
        v.load(
            1,
            [
                ("a".to_string(), 1),
                ("c".to_string(), 2),
                ("x-2".to_string(), 4),
            ],
        );
        let names = |r: (Vec<(String, i64)>, bool)| {
            (r.0.into_iter().map(|(n, _)| n).collect::<Vec<_>>(), r.1)
        };
        assert_eq!(
            names(v.list("", None, 3)),
            (vec!["a".into(), "b".into(), "c".into()], true)
        );
        assert_eq!(
            names(v.list("", Some("c"), 3)),
            (vec!["d".into(), "x-1".into(), "x-2".into()], false)
        );
        assert_eq!(
            names(v.list("x-", None, 10)),
            (vec!["x-1".into(), "x-2".into()], false)
        );
        assert_eq!(
            names(v.list("x-", Some("a"), 10)),
            (vec!["x-1".into(), "x-2".into()], false)
        );
        assert_eq!(
            names(v.list("x-", Some("x-1"), 10)),
            (vec!["x-2".into()], false)
        );
    }

    fn rss_kib() -> Option<u64> {
        std::fs::read_to_string("/proc/self/status")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches(" kB")
            .parse()
            .ok()
    }

    /// The memory the versions map costs per job (names of 20 characters): run with
    /// `cargo test --release --lib versions_cost_per_job -- --ignored --nocapture`.
    #[test]
    #[ignore = "a measurement: run alone (RSS of the whole test process)"]
    fn versions_cost_per_job() {
        const JOBS: usize = 1_000_000;
        let v = Versions::default();
        let before = rss_kib().unwrap_or(0);
        for shard in 0..12u32 {
            v.load(
                shard,
                (0..JOBS / 12).map(|i| (format!("job-{shard:02}-{i:012}"), i as i64)),
            );
        }
        let after = rss_kib().unwrap_or(0);
        let per_job = (after.saturating_sub(before) * 1024) as f64 / JOBS as f64;
        eprintln!("versions map: {per_job:.0} bytes per job ({JOBS} jobs, 20-character names)");
        assert!(v.owned().len() == 12);
    }
}
