//! The cursor record: a shard's progress in Kafka, and its owner's liveness report.
//!
//! ```text
//!  <group>.state, partition = shard, key "cursor":
//!  {"v":1,"shard","minute","writtenAt","owner","generation","scheduleMd5"[,"scheduleTopic"][,"apiUrl"]
//!   [,"released":true]}
//! ```
//!
//! `scheduleTopic` (optional, topic mode only): `{"offset","jobs","rejected"}`, where the owner is in
//! the shard's partition of the schedule topic. `apiUrl` (optional, only when the owner's jobs API
//! is on): the base URL the other members forward this shard's API requests to. `released`
//! (optional, `true` only): the owner's final record of the shard: it dispatches nothing of it
//! any more, and a next owner may start at once.
//!
//! `minute` is the last minute whose every dispatch was acked (RFC 3339, whole seconds);
//! `writtenAt` has milliseconds. Unknown fields are ignored, so later versions may add some.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::clock::Minute;

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
    /// Topic mode: where the owner is in the shard's partition of the schedule topic.
    pub schedule_topic: Option<TopicPosition>,
    /// The owner's jobs API (`--advertise-url`), when its API is on: where the other members
    /// forward requests for this shard's jobs.
    pub api_url: Option<String>,
    /// The owner's final record of the shard (a clean release): it dispatches nothing of the
    /// shard any more.
    pub released: bool,
}

/// Where a shard's owner is in its partition of the schedule topic (topic mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicPosition {
    /// The next offset to apply: every record before it is applied.
    pub offset: i64,
    /// Jobs held.
    pub jobs: u64,
    /// Records rejected since the owner took the shard over.
    pub rejected: u64,
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    schedule_topic: Option<TopicPosition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    api_url: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    released: bool,
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
            schedule_topic: self.schedule_topic,
            api_url: self.api_url.clone(),
            released: self.released,
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
            schedule_topic: wire.schedule_topic,
            api_url: wire.api_url,
            released: wire.released,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

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
            schedule_topic: None,
            api_url: None,
            released: false,
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
    fn a_topic_mode_cursor_carries_its_schedule_topic_position_and_old_readers_skip_it() {
        let text = r#"{"v":1,"shard":2,"minute":"2026-11-29T18:05:00Z","writtenAt":"2026-11-29T18:06:01.250Z","owner":"m","generation":1,"scheduleMd5":"","scheduleTopic":{"offset":41,"jobs":7,"rejected":1}}"#;
        let read = Cursor::decode(text.as_bytes()).unwrap();
        assert_eq!(
            read.schedule_topic,
            Some(TopicPosition {
                offset: 41,
                jobs: 7,
                rejected: 1
            })
        );
        let again: serde_json::Value = serde_json::from_slice(&read.encode()).unwrap();
        assert_eq!(
            again,
            serde_json::from_str::<serde_json::Value>(text).unwrap()
        );
        // A reader from before the field: the same struct without it, unknown fields ignored.
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "camelCase")]
        #[allow(dead_code)]
        struct Before {
            v: u32,
            shard: u32,
            minute: String,
            schedule_md5: String,
        }
        let before: Before = serde_json::from_str(text).unwrap();
        assert_eq!(before.shard, 2);
    }

    #[test]
    fn a_member_with_the_jobs_api_on_carries_its_url_and_others_write_none() {
        let text = r#"{"v":1,"shard":1,"minute":"2026-11-29T18:05:00Z","writtenAt":"2026-11-29T18:06:01.250Z","owner":"m","generation":1,"scheduleMd5":"","apiUrl":"http://10.0.0.5:9464"}"#;
        let read = Cursor::decode(text.as_bytes()).unwrap();
        assert_eq!(read.api_url.as_deref(), Some("http://10.0.0.5:9464"));
        let again: serde_json::Value = serde_json::from_slice(&read.encode()).unwrap();
        assert_eq!(
            again,
            serde_json::from_str::<serde_json::Value>(text).unwrap()
        );
        let without = Cursor {
            api_url: None,
            ..read
        };
        let bytes = String::from_utf8(without.encode()).unwrap();
        assert!(!bytes.contains("apiUrl"), "no API, no field: {bytes}");
    }

    #[test]
    fn a_final_record_says_released_and_a_periodic_one_says_nothing() {
        let text = r#"{"v":1,"shard":1,"minute":"2026-11-29T18:05:00Z","writtenAt":"2026-11-29T18:06:01.250Z","owner":"m","generation":1,"scheduleMd5":"","released":true}"#;
        let read = Cursor::decode(text.as_bytes()).unwrap();
        assert!(read.released);
        let again: serde_json::Value = serde_json::from_slice(&read.encode()).unwrap();
        assert_eq!(
            again,
            serde_json::from_str::<serde_json::Value>(text).unwrap()
        );
        let periodic = Cursor {
            released: false,
            ..read
        };
        let bytes = String::from_utf8(periodic.encode()).unwrap();
        assert!(!bytes.contains("released"), "{bytes}");
        assert!(!Cursor::decode(bytes.as_bytes()).unwrap().released);
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
