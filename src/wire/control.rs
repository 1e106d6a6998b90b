//! The control record: one paused interval of a job, or of every job, on the dispatcher group's
//! control topic (`<group>.control`, one partition, compacted; key = `jobName`, [`ALL_KEY`] for
//! `--all`). `cronq pause`/`resume` write it; every member of the group reads it
//! ([`crate::dispatcher::control`]).
//!
//! A pause writes `paused: true` with `until` absent (or its `--until`), a resume writes
//! `paused: false` with the interval it closed. Instants are RFC 3339, whole seconds, `Z`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::Minute;

/// The key of `--all` records: one space. The schedule loader refuses a `jobName` that is empty or
/// only white space, so no job can ever have this key.
pub const ALL_KEY: &str = " ";

/// The longest paused interval a record may name: `until` at most this long after the record's
/// `at` (what `cronq pause --until` allows). A record asking more is ignored by its readers.
pub const MAX_PAUSE: std::time::Duration = std::time::Duration::from_secs(366 * 86_400);

/// Version of the record format.
pub const RECORD_VERSION: u32 = 1;

/// The control topic of dispatcher group `group`.
pub fn control_topic(group: &str) -> String {
    format!("{group}.control")
}

/// One control record: a paused interval of one job (`job`) or of every job (`job` absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlRecord {
    /// Format version ([`RECORD_VERSION`]).
    pub v: u32,
    /// The job; `None` for `--all`.
    pub job: Option<String>,
    /// `true`: a pause in force (until `until`, if set); `false`: a resume, the pause is over.
    pub paused: bool,
    /// Why, as the operator said (`--reason`); a resume keeps its pause's.
    pub reason: Option<String>,
    /// Start of the paused interval (RFC 3339): slots at or after it are paused.
    #[serde(with = "instant")]
    pub since: DateTime<Utc>,
    /// End of the paused interval (exclusive): the pause's `--until`, or the resume's instant.
    #[serde(with = "instant::optional", default)]
    pub until: Option<DateTime<Utc>>,
    /// When the interval ends, send none of its paused slots, whatever the job's catch-up rule.
    #[serde(default)]
    pub drop_missed: bool,
    /// Who wrote it: `user@host`.
    pub by: String,
    /// When it was written (RFC 3339).
    #[serde(with = "instant")]
    pub at: DateTime<Utc>,
}

/// RFC 3339 (whole seconds, `Z`) on the wire.
mod instant {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Secs, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }

    pub mod optional {
        use super::*;

        pub fn serialize<S: Serializer>(
            at: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => super::serialize(at, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            match Option::<String>::deserialize(d)? {
                None => Ok(None),
                Some(text) => DateTime::parse_from_rfc3339(&text)
                    .map(|t| Some(t.with_timezone(&Utc)))
                    .map_err(serde::de::Error::custom),
            }
        }
    }
}

impl ControlRecord {
    /// The record's key: the job's name, or [`ALL_KEY`].
    pub fn key(&self) -> &str {
        self.job.as_deref().unwrap_or(ALL_KEY)
    }

    /// The slot at `at` is inside the paused interval.
    pub fn covers(&self, at: DateTime<Utc>) -> bool {
        self.since <= at && self.until.is_none_or(|u| at < u)
    }

    /// The pause is in force at `now`: not resumed, and `until` (if any) not reached.
    pub fn in_force(&self, now: DateTime<Utc>) -> bool {
        self.paused && self.until.is_none_or(|u| now < u)
    }

    /// The minute the interval's end is applied in: the first minute starting at or after
    /// `until` (its slot is the first one the interval no longer covers). `None` while open.
    pub fn ends_in(&self) -> Option<Minute> {
        let until = self.until?;
        let m = Minute::containing(until);
        Some(if m.start() == Some(until) {
            m
        } else {
            m.next()
        })
    }

    /// Decodes a record's value.
    pub fn decode(value: &[u8]) -> Result<ControlRecord, String> {
        let r: ControlRecord = serde_json::from_slice(value).map_err(|e| e.to_string())?;
        if r.v != RECORD_VERSION {
            return Err(format!(
                "record version {} (this cronq reads {RECORD_VERSION})",
                r.v
            ));
        }
        Ok(r)
    }

    /// Whether a record read at `key` may be applied: its key is its job's (or [`ALL_KEY`] for
    /// `--all`), the job's name is one a schedule can have (not blank, at most
    /// [`MAX_JOB_NAME_BYTES`](crate::wire::job::MAX_JOB_NAME_BYTES) bytes), and its `until` is at
    /// most [`MAX_PAUSE`] after its `at`. Only the record is looked at, never the reader's clock
    /// or schedule, so every reader decides alike.
    pub fn check(&self, key: &str) -> Result<(), String> {
        if self.key() != key {
            return Err("the record's key is not its job".into());
        }
        if key != ALL_KEY
            && (key.trim().is_empty() || key.len() > crate::wire::job::MAX_JOB_NAME_BYTES)
        {
            return Err(format!(
                "the key is not a job name (blank, or over {} bytes)",
                crate::wire::job::MAX_JOB_NAME_BYTES
            ));
        }
        let max = chrono::Duration::from_std(MAX_PAUSE).unwrap_or(chrono::Duration::MAX);
        if let Some(until) = self.until {
            // Past the end of chrono's time, nothing can be later.
            if self
                .at
                .checked_add_signed(max)
                .is_some_and(|last| until > last)
            {
                return Err("its until is more than 366 days after its at".into());
            }
        }
        Ok(())
    }

    /// The record as JSON, as written.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Instants and records the tests of the control records share (here and in the dispatcher).
#[cfg(test)]
pub(crate) mod testing {
    use chrono::{DateTime, TimeZone, Utc};

    use super::{ControlRecord, RECORD_VERSION};

    /// 2026-11-30 10:00:00 UTC plus `minutes` and `seconds`.
    pub fn at(minutes: i64, seconds: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 0).unwrap()
            + chrono::Duration::seconds(minutes * 60 + seconds)
    }

    pub fn pause(
        job: Option<&str>,
        since: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    ) -> ControlRecord {
        ControlRecord {
            v: RECORD_VERSION,
            job: job.map(str::to_string),
            paused: true,
            reason: Some("incident 42".into()),
            since,
            until,
            drop_missed: false,
            by: "ops@host".into(),
            at: since,
        }
    }

    pub fn resume(paused: &ControlRecord, at: DateTime<Utc>, drop_missed: bool) -> ControlRecord {
        ControlRecord {
            paused: false,
            until: Some(at),
            drop_missed,
            at,
            ..paused.clone()
        }
    }
}

#[cfg(test)]
mod tests {

    use super::*;

    use super::testing::{at, pause, resume};

    #[test]
    fn a_pause_covers_its_slots_from_since_and_until_ends_it_by_itself() {
        let p = pause(Some("a"), at(2, 30), Some(at(6, 0)));
        // The slot of minute 2 is before the pause; 3, 4, 5 are in it; 6 is its end.
        let covered: Vec<i64> = (0..10).filter(|m| p.covers(at(*m, 0))).collect();
        assert_eq!(covered, [3, 4, 5]);
        assert!(p.in_force(at(5, 59)));
        assert!(!p.in_force(at(6, 0)), "--until reached: no longer in force");
        assert_eq!(p.ends_in(), Some(Minute::containing(at(6, 0))));
        // An end inside a minute is applied in the next one (its slot is the first not covered).
        let r = resume(&p, at(6, 10), false);
        assert_eq!(r.ends_in(), Some(Minute::containing(at(7, 0))));
        assert_eq!(pause(None, at(0, 0), None).ends_in(), None);
    }

    #[test]
    fn a_record_is_checked_for_its_key_and_a_pause_of_at_most_366_days() {
        let p = pause(Some("nightly"), at(0, 0), None);
        assert_eq!(p.check("nightly"), Ok(()));
        assert!(p.check("other").is_err(), "the key is not its job");
        let all = pause(None, at(0, 0), None);
        assert_eq!(all.check(ALL_KEY), Ok(()));
        for name in ["  ", "\t", &"x".repeat(1025)] {
            let r = pause(Some(name), at(0, 0), None);
            assert!(r.check(name).is_err(), "{name:?}");
        }
        let days = |d: i64| Some(at(0, 0) + chrono::Duration::days(d));
        assert_eq!(pause(Some("a"), at(0, 0), days(366)).check("a"), Ok(()));
        let far = pause(Some("a"), at(0, 0), days(367));
        assert!(far.check("a").unwrap_err().contains("366 days"));
        let forever = ControlRecord {
            until: Some(DateTime::<Utc>::MAX_UTC),
            at: DateTime::<Utc>::MAX_UTC - chrono::Duration::days(1),
            ..far
        };
        assert_eq!(
            forever.check("a"),
            Ok(()),
            "no overflow near the end of time"
        );
    }

    #[test]
    fn a_record_round_trips_and_another_version_is_refused() {
        let p = pause(Some("nightly"), at(0, 0), Some(at(90, 0)));
        let text = p.encode();
        assert_eq!(
            text,
            r#"{"v":1,"job":"nightly","paused":true,"reason":"incident 42","since":"2026-11-30T10:00:00Z","until":"2026-11-30T11:30:00Z","dropMissed":false,"by":"ops@host","at":"2026-11-30T10:00:00Z"}"#
        );
        assert_eq!(ControlRecord::decode(text.as_bytes()), Ok(p));
        let v2 = text.replace(r#""v":1"#, r#""v":2"#);
        assert!(ControlRecord::decode(v2.as_bytes())
            .unwrap_err()
            .contains("version 2"));
    }
}
