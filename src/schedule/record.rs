//! What a job's slot becomes on the wire: the JobMessage v1 record ([`crate::wire::job`]'s
//! contract) built from the job's settings, for the producers, the dry run, `cronq trigger` and the
//! loader's size check ([`super::limits`]).
//!
//! Two encoders agree byte for byte (a test holds them together): [`JobMessage::for_slot`], the
//! owned message serde writes, and [`JobRecord::encode`], the producer's hot path that writes the
//! value straight into one buffer.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::spec::JobSpec;
use crate::wire::ids::{not_before_of, not_before_text};
use crate::wire::job::{
    HEADER_DISPATCH_ID, HEADER_NOT_BEFORE, HEADER_PRIORITY, HEADER_SCHEDULED_AT,
};
use crate::wire::{dispatch_id, slot_text, JobMessage};

impl JobMessage {
    /// The message of `spec`'s slot at `scheduled_at`.
    pub fn for_slot(spec: &JobSpec, scheduled_at: DateTime<Utc>) -> JobMessage {
        let scheduled_at = slot_text(scheduled_at);
        JobMessage {
            v: 1,
            job_name: spec.name.clone(),
            priority: spec.priority,
            job: spec.job.clone(),
            cron_time: spec.cron_time.to_string(),
            dispatch_id: dispatch_id(&spec.name, &scheduled_at),
            not_before: not_before_for(spec, &scheduled_at),
            scheduled_at,
            timeout_ms: timeout_ms(spec),
            max_attempts: spec.max_attempts,
            overlap: spec.overlap,
        }
    }
}

/// `notBefore` of `spec`'s slot written `scheduled_at` (as [`slot_text`] writes it), for a job with
/// a `jitter` (the slot plus its offset) or an `at` job (its instant, to the second); `None`
/// otherwise (or for a slot text that is not an instant, which [`slot_text`] never writes).
pub fn not_before_for(spec: &JobSpec, scheduled_at: &str) -> Option<String> {
    if let Some(at) = spec.at() {
        return Some(not_before_text(at));
    }
    spec.jitter?;
    not_before_with_id(spec, &dispatch_id(&spec.name, scheduled_at), scheduled_at)
}

/// [`not_before_for`] given the slot's `dispatchId` already written.
fn not_before_with_id(spec: &JobSpec, dispatch_id: &str, scheduled_at: &str) -> Option<String> {
    if let Some(at) = spec.at() {
        return Some(not_before_text(at));
    }
    let jitter = spec.jitter?;
    let slot = DateTime::parse_from_rfc3339(scheduled_at)
        .ok()?
        .with_timezone(&Utc);
    Some(not_before_text(not_before_of(dispatch_id, slot, jitter)))
}

/// A record ready for a producer: where it goes and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRecord {
    /// Topic.
    pub topic: String,
    /// Key (`jobName`).
    pub key: Vec<u8>,
    /// JSON value.
    pub value: Vec<u8>,
    /// The three `cronq-*` headers.
    pub headers: BTreeMap<String, Vec<u8>>,
    /// Dispatch time.
    pub timestamp: DateTime<Utc>,
}

/// Encodes `spec`'s slot at `scheduled_at` as JobMessage v1 for `default_topic` (unless the job
/// has its own), stamped `now`.
pub fn encode(
    spec: &JobSpec,
    scheduled_at: DateTime<Utc>,
    default_topic: &str,
    now: DateTime<Utc>,
) -> OutgoingRecord {
    let JobRecord {
        key,
        value,
        headers,
        timestamp,
    } = JobRecord::encode(spec, &slot_text(scheduled_at), now);
    OutgoingRecord {
        topic: topic_of(spec, default_topic).to_string(),
        key,
        value,
        headers,
        timestamp,
    }
}

/// The topic of `spec`'s records: its own, else `default_topic`.
pub fn topic_of<'a>(spec: &'a JobSpec, default_topic: &'a str) -> &'a str {
    spec.topic.as_deref().unwrap_or(default_topic)
}

/// A job's record without its destination (the producer picks topic and partition): the form
/// the producer encodes on its hot path, once per record and produce attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// Key (`jobName`).
    pub key: Vec<u8>,
    /// JSON value.
    pub value: Vec<u8>,
    /// The three `cronq-*` headers.
    pub headers: BTreeMap<String, Vec<u8>>,
    /// Dispatch time.
    pub timestamp: DateTime<Utc>,
}

/// A value's bytes besides the job's strings and the slot: field names, quotes, separators,
/// `"v":1` and the `@` of `dispatchId` (89), and the longest priority (`-2147483648`, 11).
const VALUE_OVERHEAD: usize = 100;

/// Appends `s` to `out` as a JSON string. A string with nothing to escape (the usual job name,
/// payload and expression), found in one pass over its bytes, is copied between quotes;
/// anything else goes through serde_json, which escapes exactly these bytes: `"`, `\\` and the
/// control characters below U+0020.
fn push_json_str(out: &mut Vec<u8>, s: &str) {
    let plain = s.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Into a Vec: cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

impl JobRecord {
    /// `spec`'s record for the slot written `scheduled_at` (as [`slot_text`] writes it), stamped
    /// `now`. The value is [`JobMessage`]'s JSON, byte for byte (a test holds the two together),
    /// written straight into a buffer sized up front: one allocation per field of the record,
    /// and no growth unless the job's strings need escapes.
    pub fn encode(spec: &JobSpec, scheduled_at: &str, now: DateTime<Utc>) -> JobRecord {
        let name = spec.name.as_str();
        let mut dispatch_id = String::with_capacity(name.len() + 1 + scheduled_at.len());
        dispatch_id.push_str(name);
        dispatch_id.push('@');
        dispatch_id.push_str(scheduled_at);
        let mut value = Vec::with_capacity(
            VALUE_OVERHEAD
                + 2 * name.len()
                + spec.job.len()
                + spec.cron_time.len()
                + 2 * scheduled_at.len(),
        );
        value.extend_from_slice(br#"{"v":1,"jobName":"#);
        push_json_str(&mut value, name);
        value.extend_from_slice(br#","priority":"#);
        let priority_at = value.len();
        // An integer into a Vec: cannot fail.
        let _ = serde_json::to_writer(&mut value, &spec.priority);
        // The header's text is the value's: written once, without `fmt`.
        let priority = value[priority_at..].to_vec();
        value.extend_from_slice(br#","job":"#);
        push_json_str(&mut value, &spec.job);
        value.extend_from_slice(br#","cronTime":"#);
        push_json_str(&mut value, &spec.cron_time);
        value.extend_from_slice(br#","scheduledAt":"#);
        push_json_str(&mut value, scheduled_at);
        value.extend_from_slice(br#","dispatchId":"#);
        push_json_str(&mut value, &dispatch_id);
        push_run_settings(&mut value, spec);
        let not_before = not_before_with_id(spec, &dispatch_id, scheduled_at);
        if let Some(not_before) = &not_before {
            value.extend_from_slice(br#","notBefore":"#);
            push_json_str(&mut value, not_before);
        }
        value.push(b'}');
        // In key order: each insert lands at the end of the one leaf.
        let mut headers = BTreeMap::new();
        headers.insert(HEADER_DISPATCH_ID.to_string(), dispatch_id.into_bytes());
        headers.insert(HEADER_PRIORITY.to_string(), priority);
        headers.insert(
            HEADER_SCHEDULED_AT.to_string(),
            scheduled_at.as_bytes().to_vec(),
        );
        if let Some(not_before) = not_before {
            headers.insert(HEADER_NOT_BEFORE.to_string(), not_before.into_bytes());
        }
        JobRecord {
            key: name.as_bytes().to_vec(),
            value,
            headers,
            timestamp: now,
        }
    }
}

/// `spec`'s `timeout` as the message carries it: whole milliseconds.
fn timeout_ms(spec: &JobSpec) -> Option<u64> {
    spec.timeout
        .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
}

/// Appends the job's run settings (`timeoutMs`, `maxAttempts`, `overlap`) that it sets, in
/// [`JobMessage`]'s field order; a job that sets none gets no bytes, so its record is exactly the
/// one of a job from before these fields existed.
fn push_run_settings(out: &mut Vec<u8>, spec: &JobSpec) {
    if let Some(ms) = timeout_ms(spec) {
        out.extend_from_slice(br#","timeoutMs":"#);
        // An integer into a Vec: cannot fail.
        let _ = serde_json::to_writer(&mut *out, &ms);
    }
    if let Some(attempts) = spec.max_attempts {
        out.extend_from_slice(br#","maxAttempts":"#);
        let _ = serde_json::to_writer(&mut *out, &attempts);
    }
    if let Some(overlap) = spec.overlap {
        out.extend_from_slice(br#","overlap":"#);
        push_json_str(out, overlap.as_str());
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::SecondsFormat;
    use serde::Deserialize;

    use super::*;
    use crate::schedule::{Catchup, DEFAULT_CATCHUP_WINDOW};
    use crate::wire::job::Overlap;

    fn spec(name: &str, priority: i32, job: &str, cron_time: &str) -> JobSpec {
        JobSpec {
            name: name.to_string(),
            priority,
            job: job.to_string(),
            cron_time: std::sync::Arc::from(cron_time),
            timezone: chrono_tz::UTC,
            topic: None,
            enabled: true,
            catchup: Catchup::All,
            catchup_window: DEFAULT_CATCHUP_WINDOW,
            shard: 0,
            timeout: None,
            max_attempts: None,
            overlap: None,
            jitter: None,
            timing: None,
            deadline: None,
        }
    }

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    /// Names and payloads that need JSON escapes, non-ASCII text and the extreme priorities.
    fn awkward_specs() -> Vec<JobSpec> {
        vec![
            spec("nightly-report", 0, "run report --all", "0 2 * * *"),
            spec(
                "quote\"and\\back",
                i32::MIN,
                "echo \"hi\"\n\t\u{1}",
                "@hourly",
            ),
            spec(
                "zeitplan-ä-日本",
                i32::MAX,
                "printf '%s' \u{7f}\u{2028}",
                "*/5 * * * 1-5",
            ),
            spec("", -1, "", "0 0 1 1 *"),
        ]
    }

    #[test]
    fn a_record_is_the_job_message_of_its_slot_with_the_three_headers() {
        let now = at(1_800_000_123);
        for spec in awkward_specs() {
            let slot = at(1_798_761_600);
            let record = JobRecord::encode(&spec, &slot_text(slot), now);
            // The owned message, serialized the plain way, is the oracle for the bytes.
            let expected = JobMessage::for_slot(&spec, slot);
            assert_eq!(
                record.value,
                serde_json::to_vec(&expected).unwrap(),
                "{}",
                spec.name
            );
            // And a message written by hand, as another producer would, for the content.
            let id = format!("{}@2027-01-01T00:00:00Z", spec.name);
            assert_eq!(
                serde_json::from_slice::<serde_json::Value>(&record.value).unwrap(),
                serde_json::json!({
                    "v": 1,
                    "jobName": spec.name,
                    "priority": spec.priority,
                    "job": spec.job,
                    "cronTime": &*spec.cron_time,
                    "scheduledAt": "2027-01-01T00:00:00Z",
                    "dispatchId": id,
                })
            );
            assert_eq!(record.key, spec.name.as_bytes());
            assert_eq!(
                record.headers,
                BTreeMap::from([
                    ("cronq-dispatch-id".to_string(), id.clone().into_bytes()),
                    (
                        "cronq-priority".to_string(),
                        spec.priority.to_string().into_bytes()
                    ),
                    (
                        "cronq-scheduled-at".to_string(),
                        b"2027-01-01T00:00:00Z".to_vec()
                    ),
                ])
            );
            assert_eq!(record.timestamp, now);
            let full = encode(&spec, slot, "jobs", now);
            assert_eq!(
                (full.topic.as_str(), full.key, full.value, full.headers),
                ("jobs", record.key, record.value, record.headers)
            );
        }
    }

    /// A job with a jitter: the same record plus `notBefore` (last in the value) and its header,
    /// both the slot plus the documented offset; the message read back has it too.
    #[test]
    fn a_jittered_record_adds_not_before_to_the_value_and_the_headers_only() {
        let slot = at(1_798_761_600);
        let now = at(1_798_761_605);
        for plain in awkward_specs() {
            let mut spec = plain.clone();
            spec.jitter = Some(std::time::Duration::from_secs(30));
            let record = JobRecord::encode(&spec, &slot_text(slot), now);
            let expected = JobMessage::for_slot(&spec, slot);
            assert_eq!(record.value, serde_json::to_vec(&expected).unwrap());
            // By hand, from the documented hash: murmur2 of the dispatchId, mod 30 000 ms.
            let id = format!("{}@2027-01-01T00:00:00Z", spec.name);
            let h = murmur2::murmur2(id.as_bytes(), 0x9747_b28c);
            let offset = chrono::Duration::milliseconds(i64::from(h % 30_000));
            let nb = (slot + offset).to_rfc3339_opts(SecondsFormat::Millis, true);
            assert_eq!(expected.not_before.as_deref(), Some(nb.as_str()));
            // The plain record's value with the field appended, nothing else changed.
            let base = JobRecord::encode(&plain, &slot_text(slot), now);
            let mut value = base.value[..base.value.len() - 1].to_vec();
            value.extend_from_slice(format!(r#","notBefore":"{nb}"}}"#).as_bytes());
            assert_eq!(record.value, value, "{}", spec.name);
            let mut headers = base.headers.clone();
            headers.insert("cronq-not-before".into(), nb.clone().into_bytes());
            assert_eq!(record.headers, headers);
            assert_eq!((record.key, record.timestamp), (base.key, base.timestamp));
            // A reader of today keeps it; the old reader's view (no field) still parses.
            let back: JobMessage = serde_json::from_slice(&record.value).unwrap();
            assert_eq!(back, expected);
            let old: JobMessage = serde_json::from_slice(&base.value).unwrap();
            assert_eq!(old.not_before, None);
        }
    }

    proptest::proptest! {
        /// Any strings, escapes and all: the value is what serde_json makes of [`JobMessage`].
        #[test]
        fn any_job_encodes_as_serde_json_writes_its_job_message(
            name in ".{0,24}",
            job in proptest::string::string_regex("(.|[\\x00-\\x1f\"\\\\])*").unwrap(),
            cron in ".{0,12}",
            priority in proptest::num::i32::ANY,
            secs in 0i64..4_102_444_800,
            jitter_ms in proptest::option::of(1u64..=600_000),
        ) {
            let mut spec = spec(&name, priority, &job, &cron);
            spec.jitter = jitter_ms.map(std::time::Duration::from_millis);
            let slot = at(secs - secs % 60);
            let record = JobRecord::encode(&spec, &slot_text(slot), at(secs));
            proptest::prop_assert_eq!(
                record.value,
                serde_json::to_vec(&JobMessage::for_slot(&spec, slot)).unwrap()
            );
        }
    }

    #[test]
    fn a_value_without_escapes_fits_the_buffer_it_was_sized_for() {
        for priority in [i32::MIN, 0, i32::MAX] {
            let spec = spec("job-1", priority, "run it", "* * * * *");
            let slot = slot_text(at(0));
            let record = JobRecord::encode(&spec, &slot, at(0));
            let sized = VALUE_OVERHEAD
                + 2 * spec.name.len()
                + spec.job.len()
                + spec.cron_time.len()
                + 2 * slot.len();
            assert!(
                record.value.len() <= sized,
                "{} > {sized}",
                record.value.len()
            );
            if priority == i32::MIN {
                assert_eq!(record.value.len(), sized, "the longest priority fills it");
            }
        }
    }

    fn with_settings(
        mut spec: JobSpec,
        timeout: Option<std::time::Duration>,
        max_attempts: Option<u32>,
        overlap: Option<Overlap>,
    ) -> JobSpec {
        spec.timeout = timeout;
        spec.max_attempts = max_attempts;
        spec.overlap = overlap;
        spec
    }

    /// The bytes of `tests/fixtures/job_message_v1.json` are a record's value as the dispatcher
    /// wrote it before run settings existed; a job without them still encodes to exactly these.
    #[test]
    fn a_job_without_run_settings_encodes_byte_identically_to_before() {
        let fixture = include_bytes!("../../tests/fixtures/job_message_v1.json");
        let spec = spec("legacy", 3, "nap 3", "*/5 * * * *");
        let slot = "2026-11-26T00:05:00Z";
        assert_eq!(
            String::from_utf8_lossy(&JobRecord::encode(&spec, slot, at(0)).value),
            String::from_utf8_lossy(fixture)
        );
    }

    #[test]
    fn run_settings_travel_only_when_the_job_sets_them() {
        let slot = at(1_798_761_600);
        let base = spec("sync", 0, "sync", "* * * * *");
        let cases = [
            (None, None, None, ""),
            (
                Some(std::time::Duration::from_secs(90)),
                None,
                None,
                r#","timeoutMs":90000"#,
            ),
            (None, Some(5), None, r#","maxAttempts":5"#),
            (
                None,
                None,
                Some(Overlap::Replace),
                r#","overlap":"replace""#,
            ),
            (
                Some(std::time::Duration::from_millis(1500)),
                Some(1),
                Some(Overlap::Skip),
                r#","timeoutMs":1500,"maxAttempts":1,"overlap":"skip""#,
            ),
        ];
        for (timeout, attempts, overlap, tail) in cases {
            let spec = with_settings(base.clone(), timeout, attempts, overlap);
            let value = JobRecord::encode(&spec, &slot_text(slot), slot).value;
            let expected = format!(
                r#"{{"v":1,"jobName":"sync","priority":0,"job":"sync","cronTime":"* * * * *","scheduledAt":"2027-01-01T00:00:00Z","dispatchId":"sync@2027-01-01T00:00:00Z"{tail}}}"#
            );
            assert_eq!(String::from_utf8_lossy(&value), expected);
            assert_eq!(
                value,
                serde_json::to_vec(&JobMessage::for_slot(&spec, slot)).unwrap()
            );
            let read: JobMessage = serde_json::from_slice(&value).unwrap();
            assert_eq!(
                (read.timeout_ms, read.max_attempts, read.overlap),
                (timeout.map(|t| t.as_millis() as u64), attempts, overlap)
            );
        }
    }

    /// JobMessage exactly as it was before run settings were added (frozen; do not edit): the
    /// reader of a worker or consumer of that time.
    #[derive(Debug, PartialEq, Eq, Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct JobMessageBeforeRunSettings {
        v: u32,
        job_name: String,
        priority: i32,
        job: String,
        cron_time: String,
        scheduled_at: String,
        dispatch_id: String,
    }

    #[test]
    fn a_reader_from_before_run_settings_reads_a_message_with_them() {
        let slot = at(1_798_761_600);
        let spec = with_settings(
            spec("sync", 4, "sync --all", "*/5 * * * *"),
            Some(std::time::Duration::from_secs(3600)),
            Some(7),
            Some(Overlap::Allow),
        );
        let value = JobRecord::encode(&spec, &slot_text(slot), slot).value;
        let old: JobMessageBeforeRunSettings = serde_json::from_slice(&value).unwrap();
        assert_eq!(
            old,
            JobMessageBeforeRunSettings {
                v: 1,
                job_name: "sync".into(),
                priority: 4,
                job: "sync --all".into(),
                cron_time: "*/5 * * * *".into(),
                scheduled_at: "2027-01-01T00:00:00Z".into(),
                dispatch_id: "sync@2027-01-01T00:00:00Z".into(),
            }
        );
        // And the new reader reads an old message as one without run settings.
        let fixture = include_bytes!("../../tests/fixtures/job_message_v1.json");
        let new: JobMessage = serde_json::from_slice(fixture).unwrap();
        assert_eq!(
            (new.timeout_ms, new.max_attempts, new.overlap),
            (None, None, None)
        );
    }

    proptest::proptest! {
        /// Any strings and any run settings: the value is what serde_json makes of [`JobMessage`].
        #[test]
        fn any_job_with_run_settings_encodes_as_serde_json_writes_its_job_message(
            name in ".{0,12}",
            job in proptest::string::string_regex("(.|[\\x00-\\x1f\"\\\\])*").unwrap(),
            priority in proptest::num::i32::ANY,
            timeout_ms in proptest::option::of(1_000u64..=86_400_000),
            attempts in proptest::option::of(1u32..=100),
            overlap in proptest::option::of(proptest::sample::select(vec![Overlap::Queue, Overlap::Skip, Overlap::Allow, Overlap::Replace])),
            secs in 0i64..4_102_444_800,
        ) {
            let spec = with_settings(
                spec(&name, priority, &job, "* * * * *"),
                timeout_ms.map(std::time::Duration::from_millis),
                attempts,
                overlap,
            );
            let slot = at(secs - secs % 60);
            let record = JobRecord::encode(&spec, &slot_text(slot), at(secs));
            proptest::prop_assert_eq!(
                record.value,
                serde_json::to_vec(&JobMessage::for_slot(&spec, slot)).unwrap()
            );
        }
    }
}
