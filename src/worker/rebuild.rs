//! Rebuilding the dedupe state on assignment: before the records of a newly assigned partition
//! run, the results topic is read over `--dedupe-window`, so a record whose `dispatchId` already
//! has a terminal result (the run of a member that died before committing, or of this worker
//! before a restart) is reported a duplicate instead of running again.
//!
//! ```text
//!  assign (rebalance callback) ──► WorkerState gates the partitions (their records wait, unrun)
//!     consumer loop ──► rebuild task: every results partition, from the offset at now - window
//!                       (ListOffsets by timestamp) to its high watermark ──► proofs, oldest first
//!     ◄── WorkerState::rebuilt: proofs known, the waiting records admitted (duplicates skipped)
//! ```
//!
//! Each attempt is bounded by [`ATTEMPT_TIMEOUT`]. A results topic that cannot be read (down,
//! missing, not authorized) is retried for as long as it takes, with a warning: the records wait
//! (they count against `--prefetch`, so fetching pauses) rather than run without the check.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
use rskafka::client::Client;
use serde::Deserialize;
use tracing::{info, warn};

use super::dedup::Proof;
use crate::kafka::admin::partition_count;
use crate::kafka::{describe, retry_forever, round_ms, Connection};
use crate::wire::result::Status;

/// The longest one attempt to read the results topic may take before it is given up and tried
/// again.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

/// The first wait after a failed attempt; it doubles up to the backoff's cap.
const RETRY_BASE: Duration = Duration::from_millis(500);

/// How long a fetch waits for records when a partition has none yet past the offset.
const FETCH_WAIT_MS: i32 = 500;

/// The most bytes one fetch returns.
const FETCH_MAX_BYTES: i32 = 4_000_000;

/// Why the results topic could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RebuildError {
    /// Kafka refused or did not answer.
    #[error("cannot read results topic {topic:?}: {reason}")]
    Read {
        /// `--results-topic`
        topic: String,
        /// Why.
        reason: String,
    },
    /// The topic does not exist (yet).
    #[error("results topic {topic:?} does not exist")]
    Missing {
        /// `--results-topic`
        topic: String,
    },
    /// The attempt took longer than [`ATTEMPT_TIMEOUT`].
    #[error("reading results topic {topic:?} took longer than {}", humantime::format_duration(*timeout))]
    TimedOut {
        /// `--results-topic`
        topic: String,
        /// The bound.
        timeout: Duration,
    },
}

/// The fields of a JobResult v1 the dedupe state needs. Unknown fields are ignored, so a result
/// with fields added later still counts.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Reported {
    dispatch_id: String,
    attempt: u32,
    status: Status,
}

/// What a results-topic record proves about its `dispatchId`; None for a record that is not a
/// JobResult v1 (it proves nothing, and the run is not skipped on its account).
pub fn proof_of(value: &[u8]) -> Option<(String, Proof)> {
    let r: Reported = serde_json::from_slice(value).ok()?;
    let proof = if r.status.is_retryable() {
        Proof::Attempted(r.attempt)
    } else {
        Proof::Finished
    };
    Some((r.dispatch_id, proof))
}

/// Where reading a partition starts for a window beginning at `since`: the offset Kafka answers
/// for the timestamp, kept within `[earliest, high]`. A negative answer (Apache Kafka: no record
/// that late) starts at the high watermark.
pub fn start_offset(at_timestamp: i64, earliest: i64, high: i64) -> i64 {
    if at_timestamp < 0 {
        high
    } else {
        at_timestamp.clamp(earliest.min(high), high)
    }
}

/// Reads every partition of `topic` from the offset at `since` to its high watermark (as it was
/// when the read began): the proofs of the records stamped at or after `since`, oldest first.
pub async fn read_window(
    client: &Client,
    topic: &str,
    since: DateTime<Utc>,
) -> Result<Vec<(String, Proof)>, RebuildError> {
    let read = |e: rskafka::client::error::Error| RebuildError::Read {
        topic: topic.to_string(),
        reason: describe(&e),
    };
    let partitions = partition_count(client, topic)
        .await
        .map_err(|e| RebuildError::Read {
            topic: topic.to_string(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| RebuildError::Missing {
            topic: topic.to_string(),
        })?;
    let mut stamped: Vec<(i64, String, Proof)> = Vec::new();
    for partition in 0..partitions {
        let pc = client
            .partition_client(topic.to_string(), partition, UnknownTopicHandling::Error)
            .await
            .map_err(read)?;
        let high = pc.get_offset(OffsetAt::Latest).await.map_err(read)?;
        let earliest = pc.get_offset(OffsetAt::Earliest).await.map_err(read)?;
        let at = pc
            .get_offset(OffsetAt::Timestamp(since))
            .await
            .map_err(read)?;
        let mut offset = start_offset(at, earliest, high);
        while offset < high {
            let (records, _) = pc
                .fetch_records(offset, 1..FETCH_MAX_BYTES, FETCH_WAIT_MS)
                .await
                .map_err(read)?;
            if records.is_empty() {
                break;
            }
            for r in records {
                offset = offset.max(r.offset + 1);
                // A broker may answer a timestamp query with an earlier offset (tansu answers 0
                // when no record is that late): records before the window are passed over.
                if r.record.timestamp < since {
                    continue;
                }
                if let Some((id, proof)) = r.record.value.as_deref().and_then(proof_of) {
                    stamped.push((r.record.timestamp.timestamp_millis(), id, proof));
                }
            }
        }
    }
    stamped.sort_by_key(|(at, _, _)| *at);
    Ok(stamped.into_iter().map(|(_, id, p)| (id, p)).collect())
}

/// Reads the results topic over `window` back from now, retrying (each attempt bounded by
/// [`ATTEMPT_TIMEOUT`], each failure a warning) until it succeeds: the records it gates never run
/// unchecked. `partitions` names what waits, for the logs.
pub async fn rebuild(
    kafka: &Connection,
    topic: &str,
    window: Duration,
    partitions: &str,
) -> Vec<(String, Proof)> {
    let started = std::time::Instant::now();
    let proofs = retry_forever(
        RETRY_BASE,
        || async {
            let since = Utc::now() - window;
            let attempt = async {
                let client = kafka.connect_once().await.map_err(|e| RebuildError::Read {
                    topic: topic.to_string(),
                    reason: describe(&e),
                })?;
                read_window(&client, topic, since).await
            };
            match tokio::time::timeout(ATTEMPT_TIMEOUT, attempt).await {
                Ok(result) => result,
                Err(_) => Err(RebuildError::TimedOut {
                    topic: topic.to_string(),
                    timeout: ATTEMPT_TIMEOUT,
                }),
            }
        },
        |e, attempt, delay| {
            if !matches!(e, RebuildError::Missing { .. }) {
                kafka.health().failed("worker", "", &e.to_string());
            }
            warn!(message = "cannot rebuild the dedupe state from the results topic; the records of the newly assigned partitions wait (not run) until it is read", partitions, error = %e, attempt, retry_in = %humantime::format_duration(round_ms(delay)));
        },
    )
    .await;
    info!(
        message = "dedupe state rebuilt from the results topic",
        partitions,
        results_topic = topic,
        window = %humantime::format_duration(window),
        dispatch_ids = proofs.len(),
        took_ms = started.elapsed().as_millis() as u64,
    );
    proofs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(status: &str, attempt: u32) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "v": 1, "dispatchId": "a@2026-11-26T00:00:00Z", "jobName": "a",
            "scheduledAt": "2026-11-26T00:00:00Z", "attempt": attempt, "status": status,
            "exitCode": null, "startedAt": "", "finishedAt": "", "durationMs": 0,
            "stdoutTail": "", "stderrTail": "", "worker": "w", "addedLater": true
        }))
        .unwrap()
    }

    #[test]
    fn terminal_statuses_finish_and_failed_attempts_are_counted() {
        for status in ["succeeded", "rejected", "expired", "skipped", "cancelled"] {
            assert_eq!(
                proof_of(&result(status, 1)).map(|(_, p)| p),
                Some(Proof::Finished),
                "{status}"
            );
        }
        for status in ["failed", "timed_out"] {
            assert_eq!(
                proof_of(&result(status, 2)),
                Some(("a@2026-11-26T00:00:00Z".into(), Proof::Attempted(2))),
                "{status}"
            );
        }
    }

    #[test]
    fn a_record_that_is_not_a_result_proves_nothing() {
        assert_eq!(proof_of(b"not json"), None);
        assert_eq!(proof_of(&result("exploded", 1)), None, "unknown status");
        assert_eq!(proof_of(br#"{"dispatchId":"a@1"}"#), None);
    }

    #[test]
    fn the_start_offset_stays_within_the_partition() {
        assert_eq!(start_offset(5, 0, 10), 5);
        assert_eq!(start_offset(-1, 0, 10), 10, "no record that late");
        assert_eq!(start_offset(0, 4, 10), 4, "before the retention's start");
        assert_eq!(start_offset(12, 0, 10), 10);
        assert_eq!(start_offset(0, 0, 0), 0, "empty partition");
    }
}
