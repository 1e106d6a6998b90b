//! The monitor's vocabulary: a run (one dispatched slot, or a slot that should have been), its
//! state, the alerts it raises, and the outbox a notifier drains.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What became of a slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Dispatched; no worker picked it up yet.
    Dispatched,
    /// An attempt started (a non-final result arrived).
    Running,
    /// The last attempt exited 0.
    Succeeded,
    /// Attempts exhausted, the last one failed.
    Failed,
    /// Attempts exhausted, the last one timed out.
    TimedOut,
    /// Not run: `"overlap": "skip"`.
    Skipped,
    /// Replaced by a newer run (`"overlap": "replace"`).
    Cancelled,
    /// A dead letter ended it (rejected, expired, malformed, crashed, future slot).
    DeadLettered,
    /// A second dispatch of a slot that already had one (a re-send after a crash).
    Duplicate,
    /// No terminal result by its deadline.
    Late,
    /// A slot of the schedule with no dispatch by slot + `--missed-after`.
    Missed,
    /// A slot left out on purpose: its job was paused, or its catch-up rule skipped it.
    SkippedByRule,
}

impl RunState {
    /// The name used in the database, the API and `--status`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Dispatched => "dispatched",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::TimedOut => "timed_out",
            RunState::Skipped => "skipped",
            RunState::Cancelled => "cancelled",
            RunState::DeadLettered => "dead_lettered",
            RunState::Duplicate => "duplicate",
            RunState::Late => "late",
            RunState::Missed => "missed",
            RunState::SkippedByRule => "skipped_by_rule",
        }
    }

    /// Every state, in a stable order (metrics labels, `--status` parsing).
    pub const ALL: [RunState; 12] = [
        RunState::Dispatched,
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::TimedOut,
        RunState::Skipped,
        RunState::Cancelled,
        RunState::DeadLettered,
        RunState::Duplicate,
        RunState::Late,
        RunState::Missed,
        RunState::SkippedByRule,
    ];

    /// `"failed"` → `Failed`.
    pub fn parse(text: &str) -> Option<RunState> {
        RunState::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// A state no later record changes (a late run may still end: `late` is not terminal).
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            RunState::Dispatched | RunState::Running | RunState::Late
        )
    }
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Attempts exhausted, the last one failed.
    Failed,
    /// Attempts exhausted, the last one timed out.
    TimedOut,
    /// A dead letter ended the run.
    DeadLettered,
    /// No terminal result by the deadline.
    Late,
    /// No dispatch by slot + `--missed-after`.
    Missed,
    /// The first success after any of the above.
    Recovered,
}

impl AlertKind {
    /// The name in webhook bodies, `--webhook-events` and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::Failed => "failed",
            AlertKind::TimedOut => "timed_out",
            AlertKind::DeadLettered => "dead_lettered",
            AlertKind::Late => "late",
            AlertKind::Missed => "missed",
            AlertKind::Recovered => "recovered",
        }
    }

    /// Every kind.
    pub const ALL: [AlertKind; 6] = [
        AlertKind::Failed,
        AlertKind::TimedOut,
        AlertKind::DeadLettered,
        AlertKind::Late,
        AlertKind::Missed,
        AlertKind::Recovered,
    ];

    /// `"late"` → `Late`.
    pub fn parse(text: &str) -> Option<AlertKind> {
        AlertKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One alert: at most one per (job, slot, kind), whose id is its idempotency key. (The webhook
/// body is the notifier's, documented in docs/contracts.md.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// `<kind>:<dispatchId or jobName@slot>`: stable, so a restart cannot raise it twice; the
    /// webhook's idempotency key.
    pub id: String,
    /// What it is about.
    pub kind: AlertKind,
    /// The job.
    pub job: String,
    /// The slot (RFC 3339 UTC).
    pub slot: DateTime<Utc>,
    /// The dispatch, when there was one (none for `missed`).
    pub dispatch_id: Option<String>,
    /// The run's state when the alert was raised (`failed`, `late`, …, `succeeded` for recovered).
    pub outcome: RunState,
    /// Attempts made.
    pub attempts: u32,
    /// The last attempt's exit code.
    pub last_exit_code: Option<i32>,
    /// The end of the last attempt's stderr (at most 4 KiB).
    pub stderr_tail: String,
    /// When the monitor raised it.
    pub raised_at: DateTime<Utc>,
}

impl Alert {
    /// The alert as one JSON object (the HTTP API).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "kind": self.kind.as_str(),
            "job": self.job,
            "slot": self.slot,
            "dispatchId": self.dispatch_id,
            "outcome": self.outcome.as_str(),
            "attempts": self.attempts,
            "lastExitCode": self.last_exit_code,
            "stderrTail": self.stderr_tail,
            "raisedAt": self.raised_at,
        })
    }

    /// The id of the alert of `kind` for `job`'s slot `slot`.
    pub fn id_for(kind: AlertKind, job: &str, slot: DateTime<Utc>) -> String {
        format!(
            "{}:{}",
            kind.as_str(),
            crate::wire::dispatch_id(job, &crate::wire::slot_text(slot))
        )
    }
}

/// An alert waiting in the outbox for one webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The alert.
    pub alert: Alert,
    /// Which `--webhook` (its index on the command line) it goes to.
    pub webhook: usize,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the alert entered the outbox (deliveries stop 24 h after it).
    pub queued_at: DateTime<Utc>,
}

/// Where alerts wait until a webhook has them: the monitor's database in production, a map in
/// the notifier's tests. Every call is one transaction: a crash between two never loses or repeats
/// a delivery beyond the webhook's idempotency key.
pub trait Outbox: Send {
    /// The error of the backing store.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Up to `limit` deliveries due at `now` (never tried, or whose retry time has come), oldest
    /// first.
    fn due(&mut self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Delivery>, Self::Error>;

    /// The webhook accepted it: it leaves the outbox.
    fn delivered(
        &mut self,
        alert: &str,
        webhook: usize,
        at: DateTime<Utc>,
    ) -> Result<(), Self::Error>;

    /// The attempt failed (`error` says how); try again at `retry_at`.
    fn failed(
        &mut self,
        alert: &str,
        webhook: usize,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<(), Self::Error>;

    /// Given up (24 h of retries, or a 4xx the receiver will never accept): it leaves the outbox,
    /// recorded as failed.
    fn abandoned(&mut self, alert: &str, webhook: usize, error: &str) -> Result<(), Self::Error>;

    /// Deliveries waiting (the `alerts pending` gauge).
    fn pending(&mut self) -> Result<u64, Self::Error>;
}

/// One run as the history keeps it: a dispatched slot (or one that should have been), joined to
/// its attempts and outcome by `dispatchId`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    /// `jobName@scheduledAt` (a manual run's ends in `#manual`; a missed slot's is the id its
    /// dispatch would have had).
    pub dispatch_id: String,
    /// The job.
    pub job: String,
    /// The slot (a manual run's: the trigger instant).
    pub slot: DateTime<Utc>,
    /// What became of it so far.
    pub state: RunState,
    /// When the JobMessage was written (its record timestamp); none when only a report was seen.
    pub dispatched_at: Option<DateTime<Utc>>,
    /// When its first attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When its last attempt finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Attempts reported so far (the highest `attempt` seen).
    pub attempts: u32,
    /// The last attempt's exit code.
    pub last_exit_code: Option<i32>,
    /// The end of the last attempt's stderr (at most [`STDERR_TAIL_BYTES`]).
    pub stderr_tail: String,
    /// The worker of the last attempt.
    pub worker: Option<String>,
    /// When it becomes `late` without a final state.
    pub deadline: Option<DateTime<Utc>>,
    /// Triggered by hand (`cronq trigger`).
    pub manual: bool,
}

/// How much of an attempt's stderr a run keeps.
pub const STDERR_TAIL_BYTES: usize = 4096;

impl Run {
    /// A run of `job`'s `slot` with nothing known yet but its state.
    pub fn new(dispatch_id: String, job: String, slot: DateTime<Utc>, state: RunState) -> Run {
        let manual = dispatch_id.ends_with(crate::wire::MANUAL_SUFFIX);
        Run {
            dispatch_id,
            job,
            slot,
            state,
            dispatched_at: None,
            started_at: None,
            finished_at: None,
            attempts: 0,
            last_exit_code: None,
            stderr_tail: String::new(),
            worker: None,
            deadline: None,
            manual,
        }
    }

    /// How long it ran: from its first start to its last finish.
    pub fn duration(&self) -> Option<chrono::Duration> {
        Some(self.finished_at? - self.started_at?)
    }

    /// The run as one JSON object (`cronq history --json`, the HTTP API): its fields, and
    /// `durationMs`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(object) = value.as_object_mut() {
            object.insert(
                "durationMs".into(),
                self.duration()
                    .map_or(serde_json::Value::Null, |d| d.num_milliseconds().into()),
            );
        }
        value
    }
}

/// One attempt of a run, as its JobResult reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// The run.
    pub dispatch_id: String,
    /// 1 for the first (0: not run).
    pub attempt: u32,
    /// The result's `status`.
    pub status: String,
    /// Its exit code.
    pub exit_code: Option<i32>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Its wall time.
    pub duration_ms: u64,
    /// The end of its stdout.
    pub stdout_tail: String,
    /// The end of its stderr.
    pub stderr_tail: String,
    /// The worker that ran it.
    pub worker: String,
}

/// One operator action read from a topic: a pause, a resume, a trigger, a schedule change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// When the writer says it happened.
    pub at: DateTime<Utc>,
    /// Who the writer claims to be (an OS user, a token's name; `unknown` when not said).
    pub who: String,
    /// `pause`, `resume`, `trigger`, `schedule_put`, `schedule_delete`.
    pub what: String,
    /// The job (`None`: every job, `--all`).
    pub job: Option<String>,
    /// The operator's reason, if any.
    pub reason: Option<String>,
    /// The record's own fields, as JSON.
    pub detail: serde_json::Value,
    /// Where it was read: topic, partition, offset (unique: a re-read adds nothing).
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
}
