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
    let msg = JobMessage::for_slot(spec, scheduled_at);
    let mut headers = BTreeMap::new();
    headers.insert(
        HEADER_DISPATCH_ID.to_string(),
        msg.dispatch_id.clone().into_bytes(),
    );
    headers.insert(
        HEADER_PRIORITY.to_string(),
        msg.priority.to_string().into_bytes(),
    );
    headers.insert(
        HEADER_SCHEDULED_AT.to_string(),
        msg.scheduled_at.clone().into_bytes(),
    );
    OutgoingRecord {
        topic: spec
            .topic
            .clone()
            .unwrap_or_else(|| default_topic.to_string()),
        key: spec.name.clone().into_bytes(),
        // A struct of strings and integers always serializes.
        value: serde_json::to_vec(&msg).unwrap_or_default(),
        headers,
        timestamp: now,
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
