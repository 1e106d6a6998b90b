//! JobMessage v1: the wire contract between the dispatcher, the workers and any other consumer.
//! Change it only with a version bump.
//!
//! - topic: the job's `topic`, else the global `--topic`; key: `jobName` (UTF-8)
//! - partition: Kafka's default murmur2 partitioner over the key (the Java client's choice)
//! - value: `{"v":1,"jobName","priority","job","cronTime","scheduledAt","dispatchId"}`, where
//!   `scheduledAt` is the slot (RFC 3339, UTC) and `dispatchId` = `jobName@scheduledAt`
//! - headers: `cronq-dispatch-id`, `cronq-priority`, `cronq-scheduled-at`
//! - record timestamp: the time of dispatch

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

use crate::schedule::JobSpec;

/// The value of a job record.
///
/// Unknown fields are ignored, not refused: v1 may gain optional fields (an additive change, see
/// DESIGN.md "Changing the contract"), and a worker of today must keep reading the messages of a
/// newer dispatcher.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobMessage {
    /// Always 1.
    pub v: u32,
    /// The job's unique name (also the record key).
    pub job_name: String,
    /// Higher runs first.
    pub priority: i32,
    /// The payload a worker executes.
    pub job: String,
    /// The job's cron expression.
    pub cron_time: String,
    /// The slot, RFC 3339 UTC.
    pub scheduled_at: String,
    /// `jobName@scheduledAt`: unique per slot; consumers dedupe on it.
    pub dispatch_id: String,
}

/// Header names.
pub const HEADER_DISPATCH_ID: &str = "cronq-dispatch-id";
/// Header names.
pub const HEADER_PRIORITY: &str = "cronq-priority";
/// Header names.
pub const HEADER_SCHEDULED_AT: &str = "cronq-scheduled-at";

/// A slot as it appears on the wire: RFC 3339, UTC, whole seconds (`2026-11-27T01:30:00Z`).
pub fn slot_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `jobName@scheduledAt`, with `scheduled_at` as [`slot_text`] writes it.
pub fn dispatch_id(job_name: &str, scheduled_at: &str) -> String {
    format!("{job_name}@{scheduled_at}")
}

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
            scheduled_at,
        }
    }
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
        value.push(b'}');
        // In key order: each insert lands at the end of the one leaf.
        let mut headers = BTreeMap::new();
        headers.insert(HEADER_DISPATCH_ID.to_string(), dispatch_id.into_bytes());
        headers.insert(HEADER_PRIORITY.to_string(), priority);
        headers.insert(
            HEADER_SCHEDULED_AT.to_string(),
            scheduled_at.as_bytes().to_vec(),
        );
        JobRecord {
            key: name.as_bytes().to_vec(),
            value,
            headers,
            timestamp: now,
        }
    }
}

/// [`slot_text`] of the last slot asked for: the records of a minute share one slot, so a producer
/// formats it once per minute rather than once per record.
#[derive(Debug, Default)]
pub struct SlotTexts {
    last: Option<(DateTime<Utc>, String)>,
}

impl SlotTexts {
    /// The wire text of `at`.
    pub fn get(&mut self, at: DateTime<Utc>) -> &str {
        if self.last.as_ref().is_none_or(|(last, _)| *last != at) {
            self.last = Some((at, slot_text(at)));
        }
        self.last.as_ref().map_or("", |(_, text)| text)
    }
}

/// Kafka's murmur2 of `key`, as the Java client's `Utils.murmur2` computes it (signed).
pub fn murmur2(key: &[u8]) -> i32 {
    murmur2::murmur2(key, murmur2::KAFKA_SEED) as i32
}

/// The partition the Java client's default partitioner picks for a keyed record:
/// `toPositive(murmur2(key)) % partitions`.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    debug_assert!(partitions > 0);
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, priority: i32, job: &str, cron_time: &str) -> JobSpec {
        JobSpec {
            name: name.to_string(),
            priority,
            job: job.to_string(),
            cron_time: std::sync::Arc::from(cron_time),
            timezone: chrono_tz::UTC,
            topic: None,
            enabled: true,
            catchup: crate::schedule::Catchup::All,
            catchup_window: crate::schedule::DEFAULT_CATCHUP_WINDOW,
            shard: 0,
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

    proptest::proptest! {
        /// Any strings, escapes and all: the value is what serde_json makes of [`JobMessage`].
        #[test]
        fn any_job_encodes_as_serde_json_writes_its_job_message(
            name in ".{0,24}",
            job in proptest::string::string_regex("(.|[\\x00-\\x1f\"\\\\])*").unwrap(),
            cron in ".{0,12}",
            priority in proptest::num::i32::ANY,
            secs in 0i64..4_102_444_800,
        ) {
            let spec = spec(&name, priority, &job, &cron);
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

    #[test]
    fn slot_texts_are_the_slot_text_of_each_slot_asked_for() {
        let mut texts = SlotTexts::default();
        for secs in [0, 0, 60, 60, 0, 4_102_444_800, 59] {
            assert_eq!(texts.get(at(secs)), slot_text(at(secs)), "{secs}");
        }
    }

    #[test]
    fn murmur2_matches_the_java_clients_published_test_vectors() {
        // org.apache.kafka.common.utils.UtilsTest#testMurmur2
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key), expected, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn partition_is_the_positive_hash_modulo_the_partition_count() {
        // murmur2("21") = -973932308; & 0x7fffffff = 1173551340
        assert_eq!(partition_for(b"21", 3), 1_173_551_340 % 3);
        assert_eq!(partition_for(b"abc", 7), 479_470_107 % 7);
        for p in 1..50 {
            assert!((0..p).contains(&partition_for(b"foobar", p)));
        }
    }
}
