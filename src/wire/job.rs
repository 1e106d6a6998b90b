//! JobMessage v1: the wire contract between the dispatcher, the workers and any other consumer.
//! Change it only with a version bump.
//!
//! - topic: the job's `topic`, else the global `--topic`; key: `jobName` (UTF-8)
//! - partition: Kafka's default murmur2 partitioner over the key (the Java client's choice)
//! - value: `{"v":1,"jobName","priority","job","cronTime","scheduledAt","dispatchId"}`, where
//!   `scheduledAt` is the slot (RFC 3339, UTC) and `dispatchId` = `jobName@scheduledAt`
//! - optional, present only when the job sets them (an additive change of v1): `timeoutMs`,
//!   `maxAttempts`, `overlap` (`queue` | `skip` | `allow` | `replace`)
//! - headers: `cronq-dispatch-id`, `cronq-priority`, `cronq-scheduled-at`
//! - record timestamp: the time of dispatch
//! - jobs with a `jitter` only: the value's last field `"notBefore"` and the header
//!   `cronq-not-before` (the slot plus the job's offset, RFC 3339 UTC with milliseconds); a job
//!   without one encodes exactly as before

use std::time::Duration;

use chrono::DateTime;
use serde::{Deserialize, Serialize};

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
    /// The job's `timeout` in milliseconds: the longest attempt (absent: the worker's `--timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// The job's `maxAttempts` (absent: the worker's `--max-attempts`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// The job's `overlap` policy (absent: the worker's `--ordering`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlap: Option<Overlap>,
    /// Jobs with a `jitter` only: the slot plus the job's offset for it (RFC 3339 UTC, milliseconds,
    /// see [`super::ids::not_before`]); no run starts before it. Absent: run at once, as before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
}

impl JobMessage {
    /// The attempts a worker gives this message: its `maxAttempts` when it has one, else
    /// `default` (`--max-attempts`). A topic writer is not trusted, so the message's value is
    /// capped at `cap` (`--max-attempts-cap`), or at `default` when that is higher: the worker's
    /// own default is always allowed. At least 1.
    pub fn attempts(&self, default: u32, cap: u32) -> u32 {
        match self.max_attempts {
            Some(n) => n.min(cap.max(default)),
            None => default,
        }
        .max(1)
    }
}

/// Header names.
pub const HEADER_DISPATCH_ID: &str = "cronq-dispatch-id";
/// Header names.
pub const HEADER_PRIORITY: &str = "cronq-priority";
/// Header names.
pub const HEADER_SCHEDULED_AT: &str = "cronq-scheduled-at";
/// Header names: `notBefore`, on records of jobs with a `jitter` only.
pub const HEADER_NOT_BEFORE: &str = "cronq-not-before";
/// Header names: who triggered a run by hand (`user@host`), on `cronq trigger`'s records only.
pub const HEADER_BY: &str = "cronq-by";
/// Header names: the `--reason` of a run triggered by hand, when given.
pub const HEADER_REASON: &str = "cronq-reason";

/// The range of a job's `timeout`: the worker's `--timeout` range.
pub const TIMEOUT_RANGE: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(24 * 3600));

/// The range of a job's `maxAttempts`: the worker's `--max-attempts` range.
pub const MAX_ATTEMPTS_RANGE: (u32, u32) = (1, 100);

/// The longest jitter a job may have. The shard's cursor passes a minute only once every record
/// of it is acked, delayed ones included, so the cursor trails live time by up to the longest
/// jitter of the shard's jobs: a takeover after a crash re-sends up to that much, and `cronq
/// status` may report the shard that far behind. Ten minutes keeps both small; wider spreads are
/// what `H` is for.
pub const MAX_JITTER: Duration = Duration::from_secs(600);

/// What a job may do while an earlier run of it is still running or queued on the worker that
/// owns its partition (the job's `overlap`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Overlap {
    /// Wait for it: runs of the job execute one at a time, in order.
    Queue,
    /// Do not run: report the run `skipped`.
    Skip,
    /// Run now, next to it (bounded by the pool).
    Allow,
    /// Terminate it (reported `cancelled`) and run the new one.
    Replace,
}

impl Overlap {
    /// Every policy, as written in the schedule file and the message.
    pub const NAMES: [&'static str; 4] = ["queue", "skip", "allow", "replace"];

    /// The policy named `text`.
    pub fn parse(text: &str) -> Option<Overlap> {
        Some(match text {
            "queue" => Overlap::Queue,
            "skip" => Overlap::Skip,
            "allow" => Overlap::Allow,
            "replace" => Overlap::Replace,
            _ => return None,
        })
    }

    /// The name used in the schedule file and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Overlap::Queue => "queue",
            Overlap::Skip => "skip",
            Overlap::Allow => "allow",
            Overlap::Replace => "replace",
        }
    }
}

/// The longest `jobName` a worker accepts: reports carry it (twice) and key by it.
pub const MAX_JOB_NAME_BYTES: usize = 1024;

/// The longest `scheduledAt` accepted (an RFC 3339 instant with nanoseconds and an offset is 35).
const MAX_INSTANT_BYTES: usize = 64;

/// At most 100 characters of `text`, quoted, for an error message about a record.
pub fn excerpt(text: &str) -> String {
    match text.char_indices().nth(100) {
        Some((cut, _)) => format!("{:?}… ({} bytes)", &text[..cut], text.len()),
        None => format!("{text:?}"),
    }
}

fn is_instant(text: &str) -> bool {
    text.len() <= MAX_INSTANT_BYTES && DateTime::parse_from_rfc3339(text).is_ok()
}

/// Reads a record as JobMessage v1 and checks that it is what it says it is: its key is its
/// `jobName`, its `scheduledAt` an RFC 3339 instant, and its `dispatchId` exactly
/// `jobName@scheduledAt` or, for a run triggered by hand, `jobName@<instant>#manual`. Without that
/// check, a record with the dispatchId of a future slot would make the real run of that slot look
/// like a duplicate.
pub fn parse_message(key: &[u8], value: &[u8]) -> Result<JobMessage, String> {
    let message: JobMessage = serde_json::from_slice(value).map_err(|e| e.to_string())?;
    if message.v != 1 {
        return Err(format!(
            "unsupported message version v={} (this worker reads v=1)",
            message.v
        ));
    }
    let name = &message.job_name;
    if name.is_empty() || name.len() > MAX_JOB_NAME_BYTES {
        return Err(format!(
            "jobName {} must be 1-{MAX_JOB_NAME_BYTES} bytes",
            excerpt(name)
        ));
    }
    if key != name.as_bytes() {
        return Err(format!(
            "the record's key {} is not its jobName {}",
            excerpt(&String::from_utf8_lossy(key)),
            excerpt(name)
        ));
    }
    if !is_instant(&message.scheduled_at) {
        return Err(format!(
            "scheduledAt {} is not an RFC 3339 instant",
            excerpt(&message.scheduled_at)
        ));
    }
    let id = &message.dispatch_id;
    let expected = format!("{name}@{}", message.scheduled_at);
    // A run by hand: milliseconds now, whole seconds as earlier versions wrote; both read.
    let manual = super::ids::manual_instant(id, name).is_some_and(is_instant);
    if *id != expected && !manual {
        return Err(format!(
            "dispatchId {} is neither jobName@scheduledAt ({}) nor jobName@<instant>#manual",
            excerpt(id),
            excerpt(&expected)
        ));
    }
    check_run_settings(&message)?;
    Ok(message)
}

/// A message's run settings are within the ranges the schedule file allows (a topic writer is not
/// trusted): `timeoutMs` 1 s to 1 d, `maxAttempts` 1 to 100. (`overlap` is one of its four values,
/// or the message did not parse.)
pub fn check_run_settings(message: &JobMessage) -> Result<(), String> {
    let (min, max) = TIMEOUT_RANGE;
    if let Some(ms) = message.timeout_ms {
        let (min_ms, max_ms) = (min.as_millis() as u64, max.as_millis() as u64);
        if !(min_ms..=max_ms).contains(&ms) {
            return Err(format!(
                "timeoutMs {ms} is out of range {min_ms}-{max_ms} (1s-1d)"
            ));
        }
    }
    let (min, max) = MAX_ATTEMPTS_RANGE;
    if let Some(n) = message.max_attempts {
        if !(min..=max).contains(&n) {
            return Err(format!("maxAttempts {n} is out of range {min}-{max}"));
        }
    }
    Ok(())
}

/// A plain JobMessage for the tests of its readers (here and in the worker).
#[cfg(test)]
pub(crate) mod testing {
    use super::JobMessage;

    pub fn message() -> JobMessage {
        JobMessage {
            v: 1,
            job_name: "sync".into(),
            priority: 0,
            job: "sync".into(),
            cron_time: "* * * * *".into(),
            scheduled_at: "2026-11-26T03:00:00Z".into(),
            dispatch_id: "sync@2026-11-26T03:00:00Z".into(),
            timeout_ms: None,
            max_attempts: None,
            overlap: None,
            not_before: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_names_parse_and_serde_agree() {
        for name in Overlap::NAMES {
            let overlap = Overlap::parse(name).unwrap();
            assert_eq!(overlap.as_str(), name);
            assert_eq!(
                serde_json::to_string(&overlap).unwrap(),
                format!("{name:?}")
            );
            assert_eq!(
                serde_json::from_str::<Overlap>(&format!("{name:?}")).unwrap(),
                overlap
            );
        }
        assert_eq!(Overlap::parse("Skip"), None);
    }

    use super::testing::message;

    #[test]
    fn records_that_are_not_job_message_v1_are_named_malformed() {
        assert!(parse_message(b"a", b"not json").is_err());
        assert!(parse_message(b"a", br#"{"v":1,"jobName":"a"}"#)
            .unwrap_err()
            .contains("missing field"));
        let v2 = serde_json::to_vec(&JobMessage { v: 2, ..message() }).unwrap();
        assert!(parse_message(b"sync", &v2).unwrap_err().contains("v=2"));
        let ok = serde_json::to_vec(&message()).unwrap();
        assert_eq!(parse_message(b"sync", &ok).unwrap(), message());
    }

    fn check(key: &str, m: &JobMessage) -> Result<JobMessage, String> {
        parse_message(key.as_bytes(), &serde_json::to_vec(m).unwrap())
    }

    #[test]
    fn a_message_must_be_keyed_by_its_job_name() {
        let err = check("other", &message()).unwrap_err();
        assert_eq!(err, r#"the record's key "other" is not its jobName "sync""#);
        assert!(check("", &message()).is_err());
    }

    #[test]
    fn a_dispatch_id_must_be_exactly_job_name_at_scheduled_at() {
        // A forged id for a future slot: the real run of that slot must not look like a duplicate.
        let forged = JobMessage {
            dispatch_id: "sync@2027-01-01T00:00:00Z".into(),
            not_before: None,
            ..message()
        };
        let err = check("sync", &forged).unwrap_err();
        assert!(err.starts_with(r#"dispatchId "sync@2027-01-01T00:00:00Z" is neither jobName@scheduledAt ("sync@2026-11-26T03:00:00Z")"#), "{err}");
        for bad in [
            "other@2026-11-26T03:00:00Z",
            "sync@2026-11-26T03:00:00Z ",
            "sync@2026-11-26T03:00:00Z#other",
            "sync@2026-11-26T03:00:00Z#manual#manual",
            "sync@yesterday#manual",
            "sync#manual",
            "syn@c2026-11-26T03:00:00Z",
            "",
        ] {
            let m = JobMessage {
                dispatch_id: bad.into(),
                not_before: None,
                ..message()
            };
            assert!(check("sync", &m).is_err(), "{bad:?} accepted");
        }
    }

    /// The additive-change rule of JobMessage v1: a field this worker does not know (as a newer
    /// dispatcher may add) is ignored, and the message is read as before.
    #[test]
    fn a_message_with_a_field_this_worker_does_not_know_is_read_as_before() {
        let value =
            br#"{"v":1,"jobName":"sync","priority":1,"job":"run sync","cronTime":"0 3 * * *",
            "scheduledAt":"2026-11-26T03:00:00Z","dispatchId":"sync@2026-11-26T03:00:00Z",
            "notBefore":"2026-11-26T03:00:12Z","someFutureField":{"nested":[1,2]}}"#;
        let m = parse_message(b"sync", value).unwrap();
        assert_eq!(m.dispatch_id, "sync@2026-11-26T03:00:00Z");
        assert_eq!(m.job, "run sync");
    }

    #[test]
    fn a_triggered_run_may_end_its_dispatch_id_in_manual() {
        for id in [
            "sync@2026-11-26T03:00:00Z#manual",
            "sync@2026-11-29T21:14:05.123Z#manual",
        ] {
            let m = JobMessage {
                dispatch_id: id.into(),
                not_before: None,
                ..message()
            };
            assert_eq!(check("sync", &m).unwrap().dispatch_id, id);
        }
    }

    #[test]
    fn scheduled_at_must_be_an_instant_and_job_names_are_bounded() {
        let m = JobMessage {
            scheduled_at: "soon".into(),
            dispatch_id: "sync@soon".into(),
            not_before: None,
            ..message()
        };
        assert_eq!(
            check("sync", &m).unwrap_err(),
            r#"scheduledAt "soon" is not an RFC 3339 instant"#
        );
        let long = "n".repeat(MAX_JOB_NAME_BYTES + 1);
        let m = JobMessage {
            job_name: long.clone(),
            dispatch_id: format!("{long}@2026-11-26T03:00:00Z"),
            not_before: None,
            ..message()
        };
        let err = check(&long, &m).unwrap_err();
        assert!(
            err.contains("must be 1-1024 bytes") && err.len() < 300,
            "{err}"
        );
        let at_limit = "n".repeat(MAX_JOB_NAME_BYTES);
        let m = JobMessage {
            job_name: at_limit.clone(),
            dispatch_id: format!("{at_limit}@2026-11-26T03:00:00Z"),
            not_before: None,
            ..message()
        };
        assert!(check(&at_limit, &m).is_ok());
    }
}
