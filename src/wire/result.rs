//! What a worker reports, as every consumer of the reports reads it: a JobResult v1 for every
//! attempt on `--results-topic`, and a dead letter on `--dlq-topic` for a job that used up
//! `--max-attempts`, was rejected, or could not be read.
//!
//! JobResult v1 (JSON, key `jobName`): `v, dispatchId, jobName, scheduledAt, attempt, status
//! (succeeded|failed|timed_out|rejected|expired|skipped|cancelled), exitCode, startedAt, finishedAt, durationMs,
//! stdoutTail, stderrTail, worker`.
//!
//! Every report fits in [`MAX_REPORT_BYTES`]: each output tail is at most `--max-output`, a record
//! larger than [`MAX_ORIGINAL_BYTES`] is not copied into its dead letter (its size and SHA-256 stand
//! in for it, next to its topic/partition/offset), and tails are cut further when escaping makes a
//! report too long ([`result_bytes`], [`letter_bytes`]).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::job::JobMessage;

/// How an execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Exit status 0.
    Succeeded,
    /// Non-zero exit, killed by a signal, or could not be started.
    Failed,
    /// Ran longer than `--timeout` and was killed.
    TimedOut,
    /// Not allowed to run (nothing was started); never retried.
    Rejected,
    /// Older than `--max-age` when an executor took it: not run; never retried.
    Expired,
    /// Not run: an earlier run of the job was still running or queued (`"overlap": "skip"`).
    Skipped,
    /// Terminated (or, still queued, never started) because a newer run of the job arrived
    /// (`"overlap": "replace"`); never retried.
    Cancelled,
}

impl Status {
    /// The wire name (`timed_out`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::TimedOut => "timed_out",
            Status::Rejected => "rejected",
            Status::Expired => "expired",
            Status::Skipped => "skipped",
            Status::Cancelled => "cancelled",
        }
    }

    /// Would another attempt make sense?
    pub fn is_retryable(self) -> bool {
        matches!(self, Status::Failed | Status::TimedOut)
    }
}

/// The last `max` bytes of `bytes` (or fewer) as text, starting on a character boundary.
pub fn tail_text(bytes: &[u8], max: usize) -> String {
    let mut start = bytes.len().saturating_sub(max);
    // Skip UTF-8 continuation bytes so the tail does not start mid-character.
    while start < bytes.len() && start > 0 && bytes[start] & 0b1100_0000 == 0b1000_0000 {
        start += 1;
    }
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// One attempt's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobResult {
    /// Always 1.
    pub v: u32,
    /// The message's idempotency key.
    pub dispatch_id: String,
    /// The job.
    pub job_name: String,
    /// The slot.
    pub scheduled_at: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// How it ended.
    pub status: Status,
    /// The exit code when the process exited normally.
    pub exit_code: Option<i32>,
    /// RFC 3339, milliseconds.
    pub started_at: String,
    /// RFC 3339, milliseconds.
    pub finished_at: String,
    /// Wall time of the attempt.
    pub duration_ms: u64,
    /// The end of stdout (at most `--max-output`).
    pub stdout_tail: String,
    /// The end of stderr (at most `--max-output`).
    pub stderr_tail: String,
    /// The worker's id (`--worker-id`).
    pub worker: String,
}

/// Where a record came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Origin {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Why a record went to the DLQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadReason {
    /// Every attempt failed or timed out.
    AttemptsExhausted,
    /// The job was not allowed to run.
    Rejected,
    /// The record is not a JobMessage v1, or its key or dispatchId do not match its jobName and
    /// scheduledAt (see `WorkerState::admit`).
    Malformed,
    /// Its scheduledAt was older than `--max-age` when an executor took it: not run.
    Expired,
    /// The task executing it died (a bug in the worker or in an embedded handler): whether it ran is
    /// unknown.
    Crashed,
    /// Its scheduledAt was further ahead of the worker's clock than a run may be held (10 min) plus
    /// a minute of clock skew: not run (see `WorkerState::admit_at`).
    FutureSlot,
}

/// The largest report (JobResult or dead letter) the worker produces: half of librdkafka's default
/// `message.max.bytes` (1 000 000), so it also fits a broker whose `message.max.bytes` was lowered
/// a long way from Kafka's 1 048 588.
pub const MAX_REPORT_BYTES: usize = 512 * 1024;

/// A record larger than this is not copied into its dead letter: [`OriginalDigest`] stands in.
pub const MAX_ORIGINAL_BYTES: usize = 64 * 1024;

/// What stands in a dead letter for a record too large to copy ([`MAX_ORIGINAL_BYTES`]); read the
/// record itself at the letter's topic/partition/offset and compare.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OriginalDigest {
    /// The record value's size in bytes.
    pub bytes: u64,
    /// The record value's SHA-256, lowercase hex.
    pub sha256: String,
}

impl OriginalDigest {
    /// The digest of a record value.
    pub fn of(value: &[u8]) -> OriginalDigest {
        let hash = Sha256::digest(value);
        OriginalDigest {
            bytes: value.len() as u64,
            sha256: hash.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// The digest when `value` is too large to copy into a dead letter.
    pub fn if_oversized(value: &[u8]) -> Option<OriginalDigest> {
        (value.len() > MAX_ORIGINAL_BYTES).then(|| OriginalDigest::of(value))
    }
}

/// A DLQ record (JSON, key: the original record's key).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// Always 1.
    pub v: u32,
    /// Why.
    pub reason: DeadReason,
    /// Where the record was read.
    #[serde(flatten)]
    pub origin: Origin,
    /// The original message (absent for a malformed record).
    pub message: Option<JobMessage>,
    /// The last attempt's result (absent for a malformed record).
    pub last_result: Option<JobResult>,
    /// A malformed record's value, as text (lossy UTF-8); absent when it was larger than
    /// [`MAX_ORIGINAL_BYTES`] (see `original`).
    pub raw: Option<String>,
    /// Why a malformed record could not be read, why the task died.
    pub error: Option<String>,
    /// Instead of `message` or `raw`, for a record too large to copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original: Option<OriginalDigest>,
    /// The worker's id.
    pub worker: String,
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Strings, integers and enums only: serialization cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Halves the longer of two tails (keeping its end); false when both are empty.
fn shrink_tails(a: &mut String, b: &mut String) -> bool {
    let longer = if a.len() >= b.len() { a } else { b };
    if longer.is_empty() {
        return false;
    }
    *longer = tail_text(longer.as_bytes(), longer.len() / 2);
    true
}

/// A JobResult as sent: tails cut until it fits in [`MAX_REPORT_BYTES`] (escaping can make a tail's
/// JSON up to six times its bytes).
pub fn result_bytes(result: &JobResult) -> Vec<u8> {
    let mut bytes = to_json(result);
    let mut result = result.clone();
    while bytes.len() > MAX_REPORT_BYTES
        && shrink_tails(&mut result.stdout_tail, &mut result.stderr_tail)
    {
        bytes = to_json(&result);
    }
    bytes
}

/// A dead letter as sent, fitted into [`MAX_REPORT_BYTES`]: the last result's tails are cut, then
/// the error text. (A copy of the original is at most [`MAX_ORIGINAL_BYTES`], six times that once
/// escaped: larger originals come as an [`OriginalDigest`] already.)
pub fn letter_bytes(letter: &DeadLetter) -> Vec<u8> {
    let mut bytes = to_json(letter);
    let mut letter = letter.clone();
    loop {
        if bytes.len() <= MAX_REPORT_BYTES {
            return bytes;
        }
        let shrunk = match &mut letter.last_result {
            Some(r) => shrink_tails(&mut r.stdout_tail, &mut r.stderr_tail),
            None => false,
        };
        if !shrunk {
            match &mut letter.error {
                Some(e) if !e.is_empty() => *e = tail_text(e.as_bytes(), e.len() / 2),
                // Nothing left to cut: the bounded fields (names checked at admission) are all
                // that is left; the publisher gives up if the broker still refuses it.
                _ => return bytes,
            }
        }
        bytes = to_json(&letter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_sha256_of_the_record_value() {
        // FIPS 180-2's test vector for "abc".
        let d = OriginalDigest::of(b"abc");
        assert_eq!(d.bytes, 3);
        assert_eq!(
            d.sha256,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            OriginalDigest::if_oversized(&[b'x'; MAX_ORIGINAL_BYTES]),
            None
        );
        assert!(OriginalDigest::if_oversized(&[b'x'; MAX_ORIGINAL_BYTES + 1]).is_some());
    }
}
