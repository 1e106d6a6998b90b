//! What Kafka and the machine allow a schedule file: topic names by Kafka's rule, the size of the
//! record a job becomes (against the broker's `message.max.bytes`), the number of jobs and the size
//! of the file. The loader ([`super::load`]) checks each job against these, so a job that no broker
//! would accept fails `cronq validate` instead of being dropped at every fire.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};

use super::record::{encode, OutgoingRecord};
use super::spec::{Catchup, JobSpec, DEFAULT_CATCHUP_WINDOW};

/// `--max-message-bytes`'s default: Kafka's own default `message.max.bytes` (1 MiB).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_576;

/// `--max-jobs`'s default.
pub const DEFAULT_MAX_JOBS: usize = 10_000_000;

/// `--max-file-bytes`'s default: 2 GiB, room for `DEFAULT_MAX_JOBS` jobs of ~100-200 bytes each
/// (a 1M-job file of realistic jobs is 93-106 MB).
pub const DEFAULT_MAX_FILE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

/// Kafka's longest topic name.
const MAX_TOPIC_CHARS: usize = 249;

/// Why `name` is not a Kafka topic name (Kafka's `Topic.validate`: 1-249 characters of
/// `[a-zA-Z0-9._-]`, and not `.` or `..`), or `None` when it is one.
///
/// ```
/// use cronq::schedule::limits::topic_problem;
/// assert_eq!(topic_problem("jobs.nightly_eu-1"), None);
/// assert_eq!(topic_problem("..").unwrap(), "\"..\" is not allowed as a Kafka topic name");
/// ```
pub fn topic_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("a Kafka topic name must not be empty".into());
    }
    if name == "." || name == ".." {
        return Some(format!("{name:?} is not allowed as a Kafka topic name"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!(
            "{name:?} is not a valid Kafka topic name: {bad:?} is not one of a-z A-Z 0-9 . _ -"
        ));
    }
    if name.len() > MAX_TOPIC_CHARS {
        return Some(format!(
            "{}… is {} characters long; a Kafka topic name has at most {MAX_TOPIC_CHARS}",
            &name[..40],
            name.len()
        ));
    }
    None
}

/// Bytes of the v2 record batch header that precedes the records (base offset 8, batch length 4,
/// leader epoch 4, magic 1, CRC 4, attributes 2, last offset delta 4, first and max timestamp 8+8,
/// producer id 8, producer epoch 2, base sequence 4, record count 4). A broker compares this plus
/// the records with `message.max.bytes`.
const BATCH_HEADER_BYTES: usize = 61;

/// Length of `n` as a Kafka (zig-zag) varint.
fn varint_len(n: usize) -> usize {
    let mut zigzag = (n as u64) << 1;
    let mut len = 1;
    while zigzag >= 0x80 {
        zigzag >>= 7;
        len += 1;
    }
    len
}

/// The size of `record` alone in a v2 record batch, uncompressed: the batch header, then the
/// record's length, attributes, timestamp and offset deltas (0 in a batch of one), key, value and
/// headers, each with its varint length.
pub fn record_batch_bytes(record: &OutgoingRecord) -> usize {
    let sized = |len: usize| varint_len(len) + len;
    let headers: usize = record
        .headers
        .iter()
        .map(|(k, v)| sized(k.len()) + sized(v.len()))
        .sum();
    let body = 1 // attributes
        + varint_len(0) // timestamp delta
        + varint_len(0) // offset delta
        + sized(record.key.len())
        + sized(record.value.len())
        + varint_len(record.headers.len())
        + headers;
    BATCH_HEADER_BYTES + sized(body)
}

/// A slot to encode sample dispatches with: every slot from year 1000 to 9999 is written with the
/// same width (`2026-01-01T00:00:00Z`), so the size does not depend on which one.
fn sample_slot() -> DateTime<Utc> {
    Utc.timestamp_opt(1_767_225_600, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// The size of the record batch every dispatch of a job with these fields becomes (see
/// [`record_batch_bytes`]): the record is encoded exactly as the producer encodes it. The other
/// fields of a job (zone, topic, catch-up) are not in the record.
pub fn dispatch_batch_bytes(name: &str, priority: i32, job: &str, cron_time: &str) -> usize {
    let slot = sample_slot();
    let spec = JobSpec {
        name: name.to_string(),
        priority,
        job: job.to_string(),
        cron_time: Arc::from(cron_time),
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
    };
    record_batch_bytes(&encode(&spec, slot, "", slot))
}

/// What a `jitter` adds to [`dispatch_batch_bytes`] at most: `,"notBefore":"…"` in the value (39
/// bytes), the `cronq-not-before` header (16 + 24 bytes and their two varints), and a byte more for
/// each of the value's and the record's varint lengths.
pub const NOT_BEFORE_BYTES: usize = 39 + 42 + 2;

/// What the run settings add to [`dispatch_batch_bytes`] at most: `,"timeoutMs":86400000` (22
/// bytes), `,"maxAttempts":100` (18) and `,"overlap":"replace"` (20) in the value, and a byte more
/// for each of the value's and the record's varint lengths.
pub const RUN_SETTINGS_BYTES: usize = 22 + 18 + 20 + 2;

/// An upper bound of [`dispatch_batch_bytes`] from the lengths of the job's strings alone, cheap
/// enough for every job of a million-job file: JSON escapes a byte into at most 6 (`\u001f`), the
/// name appears in the key, in `jobName`, in `dispatchId` (value and header); everything else
/// (field names, the slot, the priority, the headers' names, varints, the batch header) stays
/// under 512 bytes.
pub fn dispatch_batch_bytes_bound(name: &str, job: &str, cron_time: &str) -> usize {
    512 + 6 * (2 * name.len() + job.len() + cron_time.len()) + 2 * name.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn varints_grow_every_seven_bits_of_the_zigzag_value() {
        // zig-zag doubles a non-negative n: 63 → 126 (7 bits, 1 byte), 64 → 128 (8 bits, 2 bytes),
        // 8192 → 2^14 (15 bits, 3 bytes), 2^20 → 2^21 (22 bits, 4 bytes).
        let table = [(0, 1), (63, 1), (64, 2), (8191, 2), (8192, 3), (1 << 20, 4)];
        for (n, len) in table {
            assert_eq!(varint_len(n), len, "{n}");
        }
    }

    /// A record worked out by hand: key "k" (1+1), value 10 bytes (1+10), one header "h" = "v"
    /// (1+1+1+1), attributes 1, two zero deltas 1+1, header count 1: body 21, its length 1.
    #[test]
    fn a_small_record_batch_is_its_header_plus_the_record_by_hand() {
        let record = OutgoingRecord {
            topic: "t".into(),
            key: b"k".to_vec(),
            value: b"0123456789".to_vec(),
            headers: BTreeMap::from([("h".to_string(), b"v".to_vec())]),
            timestamp: sample_slot(),
        };
        assert_eq!(record_batch_bytes(&record), 61 + 1 + 21);
    }

    #[test]
    fn the_bound_is_never_below_the_exact_size() {
        let long = "x".repeat(300_000);
        let controls = "\u{1}\u{1f}\"\\".repeat(10_000);
        let cases = [
            ("n", "j", "* * * * *", 0),
            (
                "a-very-long-job-name",
                long.as_str(),
                "*/5 1-3 * * MON-FRI",
                i32::MIN,
            ),
            (controls.as_str(), controls.as_str(), "@daily", i32::MAX),
            ("näme ✓", "jöb ✓ \u{7f}", "0 0 L * *", -1),
        ];
        for (name, job, cron, priority) in cases {
            let exact = dispatch_batch_bytes(name, priority, job, cron);
            let bound = dispatch_batch_bytes_bound(name, job, cron);
            assert!(exact <= bound, "{name:.20}: exact {exact} > bound {bound}");
            // The payload itself is in there (escaped at least once).
            assert!(exact > job.len() + 2 * name.len());
        }
    }

    /// A job with a jitter becomes a larger record (`notBefore` and its header), by at most
    /// [`NOT_BEFORE_BYTES`], and with run settings by at most [`RUN_SETTINGS_BYTES`] more, and
    /// still within the bound.
    #[test]
    fn a_jitter_and_run_settings_add_at_most_their_bytes() {
        for (name, job) in [
            ("n", "j"),
            ("a-long-name".repeat(20).as_str(), "x".repeat(200).as_str()),
        ] {
            let mut spec = JobSpec {
                name: name.to_string(),
                priority: i32::MIN,
                job: job.to_string(),
                cron_time: Arc::from("* * * * *"),
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
            };
            let plain = record_batch_bytes(&encode(&spec, sample_slot(), "", sample_slot()));
            spec.jitter = Some(std::time::Duration::from_secs(600));
            let jittered = record_batch_bytes(&encode(&spec, sample_slot(), "", sample_slot()));
            assert!(jittered > plain + 70, "{jittered} vs {plain}");
            assert!(
                jittered <= plain + NOT_BEFORE_BYTES,
                "{jittered} vs {plain}"
            );
            assert!(jittered <= dispatch_batch_bytes_bound(name, job, "* * * * *"));
            // The run settings at their longest on top.
            spec.timeout = Some(std::time::Duration::from_secs(86_400));
            spec.max_attempts = Some(100);
            spec.overlap = Some(crate::wire::Overlap::Replace);
            let all = record_batch_bytes(&encode(&spec, sample_slot(), "", sample_slot()));
            assert!(all > jittered + 55, "{all} vs {jittered}");
            assert!(all <= jittered + RUN_SETTINGS_BYTES, "{all} vs {jittered}");
            assert!(all <= dispatch_batch_bytes_bound(name, job, "* * * * *"));
        }
    }

    #[test]
    fn topic_names_follow_kafkas_rule() {
        for ok in ["jobs", "a", "A.b_c-9", ".hidden", "...", &"t".repeat(249)] {
            assert_eq!(topic_problem(ok), None, "{ok}");
        }
        assert!(topic_problem("").unwrap().contains("must not be empty"));
        assert!(topic_problem(".").unwrap().contains("not allowed"));
        assert!(topic_problem("..").unwrap().contains("not allowed"));
        assert!(topic_problem("jobs/eu")
            .unwrap()
            .contains("'/' is not one of a-z A-Z 0-9 . _ -"));
        assert!(topic_problem("jöbs").unwrap().contains("'ö'"));
        assert!(topic_problem("a b").unwrap().contains("' '"));
        assert!(topic_problem(&"t".repeat(250))
            .unwrap()
            .contains("is 250 characters long; a Kafka topic name has at most 249"));
    }
}
