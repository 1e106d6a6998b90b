//! The schedule record: one job of a group's schedule topic, the store `cronq apply` (and the jobs
//! API) write and the dispatchers of the group read.
//!
//! ```text
//!  <group>.schedule (compacted), partition = murmur2(jobName) mod S = the job's shard
//!  key:   jobName (UTF-8)
//!  value: {"v":1,"spec":{…the job exactly as a schedule file's job entry writes it…},
//!          "changed":{"at":"2026-12-07T10:00:00.123Z","by":"ops","via":"apply","source":"prod.json"}}
//!  a tombstone (no value) deletes the job
//! ```
//!
//! The record's offset is its version. `spec` is checked by the same checker as a file's job (a
//! reader must not trust it); `changed` says who wrote it (`by`), when (`at`) and through what
//! (`via`: `apply`, `api`; `source`: the name `cronq apply --source` tags its jobs with, which
//! `--prune` keys on). Additive only: a reader ignores fields it does not know, and a later
//! version adds optional fields; anything else is a `v` of 2.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The largest schedule record value a reader decodes; a larger one is refused unread (a job entry
/// is bounded by the dispatch it becomes, far below this).
pub const MAX_SCHEDULE_RECORD_BYTES: usize = 1 << 20;

/// Who changed a job, when and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changed {
    /// When the writer wrote it (milliseconds).
    #[serde(with = "millis")]
    pub at: DateTime<Utc>,
    /// Who: the user `cronq apply` ran as, or the API token's name.
    pub by: String,
    /// Through what: `apply` or `api` (later writers may add names).
    pub via: String,
    /// The source tag `cronq apply --source` wrote (default: the file's name); `--prune` deletes
    /// only jobs carrying the tag it is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// What `via` is for `cronq apply`.
pub const VIA_APPLY: &str = "apply";
/// What `via` is for the jobs API.
pub const VIA_API: &str = "api";

/// A decoded schedule record: the job's entry, unchecked, and who changed it.
#[derive(Debug, Clone)]
pub struct ScheduleRecord {
    /// The job as a file's job entry writes it (checked by the reader, not here).
    pub spec: Box<RawValue>,
    /// Who changed it.
    pub changed: Changed,
}

#[derive(Serialize)]
struct WireOut<'a> {
    v: u32,
    spec: &'a RawValue,
    changed: &'a Changed,
}

#[derive(Deserialize)]
struct WireIn {
    v: u32,
    spec: Box<RawValue>,
    changed: Changed,
}

/// Why a schedule topic record is not a schedule record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ScheduleRecordError {
    /// Larger than [`MAX_SCHEDULE_RECORD_BYTES`].
    #[error("the record is {0} bytes, more than the {MAX_SCHEDULE_RECORD_BYTES} a schedule record may have")]
    TooLarge(usize),
    /// Not the JSON of a schedule record.
    #[error("not a schedule record: {0}")]
    Json(String),
    /// A version this build does not read.
    #[error("schedule record version {0} is not supported (this build reads v1)")]
    Version(u32),
    /// The key is not UTF-8.
    #[error("the record key is not UTF-8")]
    Key,
}

impl ScheduleRecord {
    /// The record value.
    pub fn encode(spec: &RawValue, changed: &Changed) -> Vec<u8> {
        // A raw value, strings and an instant always serialize.
        serde_json::to_vec(&WireOut {
            v: 1,
            spec,
            changed,
        })
        .unwrap_or_default()
    }

    /// Reads a record value. Unknown fields are ignored (later versions may add some).
    pub fn decode(value: &[u8]) -> Result<ScheduleRecord, ScheduleRecordError> {
        if value.len() > MAX_SCHEDULE_RECORD_BYTES {
            return Err(ScheduleRecordError::TooLarge(value.len()));
        }
        let wire: WireIn =
            serde_json::from_slice(value).map_err(|e| ScheduleRecordError::Json(e.to_string()))?;
        if wire.v != 1 {
            return Err(ScheduleRecordError::Version(wire.v));
        }
        Ok(ScheduleRecord {
            spec: wire.spec,
            changed: wire.changed,
        })
    }
}

/// A record key as the job name it must be.
pub fn key_name(key: &[u8]) -> Result<&str, ScheduleRecordError> {
    std::str::from_utf8(key).map_err(|_| ScheduleRecordError::Key)
}

mod millis {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not an RFC 3339 instant")))
    }
}

/// `at` as the record writes it.
pub fn changed_at_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn changed() -> Changed {
        Changed {
            at: Utc.with_ymd_and_hms(2026, 12, 7, 10, 0, 0).unwrap(),
            by: "ops".into(),
            via: VIA_APPLY.into(),
            source: Some("prod.json".into()),
        }
    }

    #[test]
    fn a_record_reads_back_as_written_with_the_spec_byte_for_byte() {
        let spec =
            RawValue::from_string(r#"{"jobName":"a","job":"x","cronTime":"*/5 * * * *"}"#.into())
                .unwrap();
        let value = ScheduleRecord::encode(&spec, &changed());
        let text = String::from_utf8(value.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"v":1,"spec":{"jobName":"a""#),
            "{text}"
        );
        assert!(
            text.contains(r#""at":"2026-12-07T10:00:00.000Z""#),
            "{text}"
        );
        let back = ScheduleRecord::decode(&value).unwrap();
        assert_eq!(back.spec.get(), spec.get());
        assert_eq!(back.changed, changed());
    }

    #[test]
    fn a_reader_ignores_fields_a_later_writer_adds_and_refuses_other_versions() {
        let later = br#"{"v":1,"spec":{"jobName":"a"},"etag":"x",
            "changed":{"at":"2026-12-07T10:00:00Z","by":"svc","via":"api","tenant":"t1"}}"#;
        let read = ScheduleRecord::decode(later).unwrap();
        assert_eq!(read.changed.via, "api");
        assert_eq!(read.changed.source, None);
        let v2 = br#"{"v":2,"spec":{},"changed":{"at":"2026-12-07T10:00:00Z","by":"","via":""}}"#;
        assert_eq!(
            ScheduleRecord::decode(v2).unwrap_err(),
            ScheduleRecordError::Version(2)
        );
        assert!(matches!(
            ScheduleRecord::decode(b"{\"v\":1}"),
            Err(ScheduleRecordError::Json(_))
        ));
        let bad_at = br#"{"v":1,"spec":{},"changed":{"at":"yesterday","by":"","via":""}}"#;
        let err = ScheduleRecord::decode(bad_at).unwrap_err().to_string();
        assert!(
            err.contains("\"yesterday\" is not an RFC 3339 instant"),
            "{err}"
        );
    }

    #[test]
    fn an_oversized_record_is_refused_unread() {
        let huge = vec![b' '; MAX_SCHEDULE_RECORD_BYTES + 1];
        assert_eq!(
            ScheduleRecord::decode(&huge).unwrap_err(),
            ScheduleRecordError::TooLarge(MAX_SCHEDULE_RECORD_BYTES + 1)
        );
        assert_eq!(key_name(&[0xff]).unwrap_err(), ScheduleRecordError::Key);
    }
}
