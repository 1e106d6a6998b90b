//! Running one message to its end: each attempt, the retries of a failed one, and the reports of
//! each ([`crate::wire::result`]'s formats, delivered through the [`Publisher`]).
//!
//! ```text
//!  JobMessage ──► attempt 1 ──► JobResult ──► results topic
//!                   │ failed / timed_out: wait (exponential backoff, jitter), attempt 2, …
//!                   │ after --max-attempts, or rejected (retrying cannot help):
//!                   ▼
//!              DeadLetter { original message, last result } ──► DLQ topic
//!  malformed record ──► DeadLetter { topic, partition, offset, raw value, error } ──► DLQ topic
//! ```

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::executor::{BoxFuture, Handler, JobRun, Outcome};
use super::results::{deliver, Publisher, ReportConfig};
use crate::kafka::Backoff;
use crate::wire::job::MAX_JOB_NAME_BYTES;
use crate::wire::result::{
    letter_bytes, result_bytes, tail_text, DeadLetter, DeadReason, JobResult, Origin,
    OriginalDigest, Status,
};
use crate::wire::JobMessage;

/// How a record's processing ended (after every attempt and report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Final {
    /// An attempt succeeded.
    Succeeded {
        /// Which one.
        attempts: u32,
    },
    /// Ended by a newer run of the job (`"overlap": "replace"`), reported `cancelled`; not
    /// dead-lettered: the newer run is the job's answer.
    Cancelled {
        /// Attempts made (the last one cancelled).
        attempts: u32,
    },
    /// Sent to the DLQ.
    DeadLettered {
        /// Why.
        reason: DeadReason,
        /// Attempts made.
        attempts: u32,
    },
}

fn rfc3339_ms(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The report for one attempt; each tail cut to its last `max_output` bytes.
pub fn job_result(
    message: &JobMessage,
    attempt: u32,
    outcome: &Outcome,
    started: DateTime<Utc>,
    finished: DateTime<Utc>,
    worker: &str,
    max_output: usize,
) -> JobResult {
    JobResult {
        v: 1,
        dispatch_id: message.dispatch_id.clone(),
        job_name: message.job_name.clone(),
        scheduled_at: message.scheduled_at.clone(),
        attempt,
        status: outcome.status,
        exit_code: outcome.exit_code,
        started_at: rfc3339_ms(started),
        finished_at: rfc3339_ms(finished),
        duration_ms: (finished - started).num_milliseconds().max(0) as u64,
        stdout_tail: tail_text(outcome.stdout_tail.as_bytes(), max_output),
        stderr_tail: tail_text(outcome.stderr_tail.as_bytes(), max_output),
        worker: worker.to_string(),
    }
}

/// Turns a panic into a value, so a buggy in-process handler fails its attempt (retried, then
/// dead-lettered) instead of taking its record's bookkeeping down with it.
struct CatchUnwind<'a>(BoxFuture<'a, Outcome>);

impl Future for CatchUnwind<'_> {
    type Output = Result<Outcome, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.as_mut().poll(cx))) {
            Ok(Poll::Ready(outcome)) => Poll::Ready(Ok(outcome)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(panic) => Poll::Ready(Err(panic_text(panic))),
        }
    }
}

pub(crate) fn panic_text(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic".to_string())
}

/// One attempt; a panicking handler yields a `failed` outcome.
async fn run_guarded(handler: &dyn Handler, run: &JobRun, cancel: &CancellationToken) -> Outcome {
    let caught =
        match std::panic::catch_unwind(AssertUnwindSafe(|| handler.run_cancellable(run, cancel))) {
            Ok(future) => CatchUnwind(future).await,
            Err(panic) => Err(panic_text(panic)),
        };
    caught.unwrap_or_else(|panic| {
        let mut outcome = Outcome::new(Status::Failed);
        outcome.stderr_tail = format!("the handler panicked: {panic}");
        outcome
    })
}

/// How old `message` is at `now`, when it is older than `max_age`.
fn expired_by(
    message: &JobMessage,
    max_age: Option<Duration>,
    now: DateTime<Utc>,
) -> Option<Duration> {
    let max_age = max_age?;
    let scheduled = DateTime::parse_from_rfc3339(&message.scheduled_at).ok()?;
    let age = (now - scheduled.with_timezone(&Utc)).to_std().ok()?;
    (age > max_age).then_some(age)
}

/// Runs `message` until it succeeds, is rejected, or used up its attempts; reports each attempt and,
/// when it did not succeed, dead-letters it. A message older than `--max-age` is not run: it is
/// reported `expired` and dead-lettered. Calls `executed` as soon as the last attempt is over
/// (before its reports are delivered); returns once every report was delivered or given up.
/// `oversized`: the record's digest when it is too large to copy into a dead letter.
pub async fn execute_with_retries(
    handler: &dyn Handler,
    publisher: &dyn Publisher,
    config: &ReportConfig,
    message: JobMessage,
    origin: Origin,
    oversized: Option<OriginalDigest>,
    executed: impl FnOnce(),
) -> Final {
    let never = CancellationToken::new();
    execute_cancellable(
        handler, publisher, config, message, origin, oversized, &never, executed,
    )
    .await
}

/// [`execute_with_retries`], ended when `cancel` fires (a newer run replaces this one): the attempt
/// running then is ended ([`Handler::run_cancellable`]) and reported `cancelled`, a retry waiting
/// for its backoff is not started but reported `cancelled` at once, and nothing is dead-lettered
/// ([`Final::Cancelled`]). The message's `maxAttempts`, when it has one, overrides `--max-attempts`.
#[allow(clippy::too_many_arguments)]
pub async fn execute_cancellable(
    handler: &dyn Handler,
    publisher: &dyn Publisher,
    config: &ReportConfig,
    message: JobMessage,
    origin: Origin,
    oversized: Option<OriginalDigest>,
    cancel: &CancellationToken,
    executed: impl FnOnce(),
) -> Final {
    let mut executed = Some(executed);
    let key = message.job_name.clone().into_bytes();
    let dead_letter = |reason, message: JobMessage, last_result: JobResult| DeadLetter {
        v: 1,
        reason,
        origin: origin.clone(),
        message: oversized.is_none().then_some(message),
        last_result: Some(last_result),
        raw: None,
        error: None,
        original: oversized.clone(),
        worker: config.worker.clone(),
    };
    let now = Utc::now();
    if let Some(age) = expired_by(&message, config.max_age, now) {
        if let Some(executed) = executed.take() {
            executed();
        }
        let mut outcome = Outcome::new(Status::Expired);
        outcome.stderr_tail = format!(
            "not run: scheduled {} ago, more than --max-age {}",
            humantime::format_duration(Duration::from_secs(age.as_secs())),
            humantime::format_duration(config.max_age.unwrap_or_default())
        );
        let result = job_result(
            &message,
            0,
            &outcome,
            now,
            now,
            &config.worker,
            config.max_output,
        );
        warn!(message = "job older than --max-age: not run; sent to the dead letter topic", dispatch_id = %message.dispatch_id, age_s = age.as_secs(), dlq_topic = %config.dlq_topic);
        deliver(
            publisher,
            &config.results_topic,
            &key,
            result_bytes(&result),
        )
        .await;
        let letter = dead_letter(DeadReason::Expired, message, result);
        deliver(publisher, &config.dlq_topic, &key, letter_bytes(&letter)).await;
        return Final::DeadLettered {
            reason: DeadReason::Expired,
            attempts: 0,
        };
    }
    let max_attempts = config.attempts_for(&message);
    let mut backoff = Backoff::new(config.retry_backoff);
    let mut run = JobRun {
        message,
        attempt: 1,
    };
    loop {
        let started = Utc::now();
        let clock = std::time::Instant::now();
        let mut outcome = run_guarded(handler, &run, cancel).await;
        if outcome.status == Status::Cancelled && cancel.is_cancelled() {
            outcome.stderr_tail.push_str(REPLACED);
        }
        let finished = started
            + chrono::Duration::from_std(clock.elapsed())
                .unwrap_or_else(|_| chrono::Duration::zero());
        let retry = outcome.status.is_retryable() && run.attempt < max_attempts;
        if outcome.status.is_retryable() && !retry {
            if let Some(note) = capped_attempts_note(&run.message, max_attempts) {
                outcome.stderr_tail.push_str(&note);
            }
        }
        let result = job_result(
            &run.message,
            run.attempt,
            &outcome,
            started,
            finished,
            &config.worker,
            config.max_output,
        );
        if !retry {
            // The executor is free before the reports are acked: the caller starts the next job
            // while this one's result is in flight (and batched with others).
            if let Some(executed) = executed.take() {
                executed();
            }
        }
        deliver(
            publisher,
            &config.results_topic,
            &key,
            result_bytes(&result),
        )
        .await;
        match outcome.status {
            Status::Succeeded => {
                info!(message = "job succeeded", dispatch_id = %run.message.dispatch_id, attempt = run.attempt, duration_ms = result.duration_ms);
                return Final::Succeeded {
                    attempts: run.attempt,
                };
            }
            Status::Cancelled => {
                info!(message = "job cancelled", dispatch_id = %run.message.dispatch_id, attempt = run.attempt, duration_ms = result.duration_ms);
                return Final::Cancelled {
                    attempts: run.attempt,
                };
            }
            status if retry => {
                let delay = backoff.next_delay();
                warn!(message = "job attempt failed; retrying", dispatch_id = %run.message.dispatch_id, attempt = run.attempt, max_attempts, status = status.as_str(), exit_code = ?outcome.exit_code, retry_in_ms = delay.as_millis() as u64);
                // A cancellation ends the wait: the next attempt then reports `cancelled` at once.
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.cancelled() => {}
                }
                run.attempt += 1;
            }
            status => {
                let reason = if status == Status::Rejected {
                    DeadReason::Rejected
                } else {
                    DeadReason::AttemptsExhausted
                };
                warn!(message = "job sent to the dead letter topic", dispatch_id = %run.message.dispatch_id, attempts = run.attempt, status = status.as_str(), reason = ?reason, detail = %result.stderr_tail.lines().last().unwrap_or(""), dlq_topic = %config.dlq_topic);
                let attempts = run.attempt;
                let letter = dead_letter(reason, run.message, result);
                deliver(publisher, &config.dlq_topic, &key, letter_bytes(&letter)).await;
                return Final::DeadLettered { reason, attempts };
            }
        }
    }
}

/// Why a job was given up after fewer attempts than its own `maxAttempts` asked: the worker's
/// ceiling.
fn capped_attempts_note(message: &JobMessage, max_attempts: u32) -> Option<String> {
    let asked = message.max_attempts?;
    (asked > max_attempts).then(|| {
        format!(
            "\ngave up after {max_attempts} attempts: the job's maxAttempts {asked} is above this worker's ceiling (--max-attempts-cap, or --max-attempts when higher)"
        )
    })
}

/// A record to dead-letter without running it: not a JobMessage v1 (or failing the integrity
/// checks), or its execution task died.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unrunnable {
    /// Why.
    pub reason: DeadReason,
    /// Where it was read.
    pub origin: Origin,
    /// The record's key (the dead letter's key).
    pub key: Vec<u8>,
    /// The parsed message, when there is one.
    pub message: Option<JobMessage>,
    /// The record's value as text, when it is not a message and small enough to copy.
    pub raw: Option<String>,
    /// Its digest, when it is too large to copy.
    pub original: Option<OriginalDigest>,
    /// What is wrong with it.
    pub error: String,
}

impl Unrunnable {
    /// A record that could not be read as a JobMessage v1 (`error` says why). Its dead letter is
    /// keyed by the record's key, or by `sha256:<hex>` of a key longer than a jobName may be.
    pub fn malformed(origin: Origin, key: Vec<u8>, value: &[u8], error: String) -> Unrunnable {
        let original = OriginalDigest::if_oversized(value);
        let key = if key.len() > MAX_JOB_NAME_BYTES {
            format!("sha256:{}", OriginalDigest::of(&key).sha256).into_bytes()
        } else {
            key
        };
        Unrunnable {
            reason: DeadReason::Malformed,
            origin,
            key,
            message: None,
            raw: original
                .is_none()
                .then(|| String::from_utf8_lossy(value).into_owned()),
            original,
            error,
        }
    }
}

/// Dead-letters a record that is not run (see [`Unrunnable`]).
pub async fn dead_letter_unrunnable(
    publisher: &dyn Publisher,
    config: &ReportConfig,
    record: Unrunnable,
) {
    let letter = DeadLetter {
        v: 1,
        reason: record.reason,
        origin: record.origin,
        message: record.message,
        last_result: None,
        raw: record.raw,
        error: Some(record.error),
        original: record.original,
        worker: config.worker.clone(),
    };
    deliver(
        publisher,
        &config.dlq_topic,
        &record.key,
        letter_bytes(&letter),
    )
    .await;
}

/// What the stderr tail of a run ended by a newer one says.
const REPLACED: &str =
    "\ncancelled by the worker: a newer run of this job arrived (overlap \"replace\")";

/// Reports a record that is not run because of its job's overlap policy: a JobResult with
/// `status` (`skipped`, or `cancelled` for a queued run a newer one replaced), attempt 0, no
/// output but `why`. Returns once the result is delivered (or given up).
pub async fn report_not_run(
    publisher: &dyn Publisher,
    config: &ReportConfig,
    message: &JobMessage,
    status: Status,
    why: &str,
) {
    let now = Utc::now();
    let mut outcome = Outcome::new(status);
    outcome.stderr_tail = why.to_string();
    let result = job_result(
        message,
        0,
        &outcome,
        now,
        now,
        &config.worker,
        config.max_output,
    );
    info!(message = "job not run", dispatch_id = %message.dispatch_id, status = status.as_str(), why);
    deliver(
        publisher,
        &config.results_topic,
        message.job_name.as_bytes(),
        result_bytes(&result),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::result::MAX_REPORT_BYTES;
    use crate::worker::results::{Recorder, Undeliverable};
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Scripted {
        statuses: Vec<Status>,
        calls: AtomicU32,
    }

    impl Handler for Scripted {
        fn run<'a>(&'a self, run: &'a JobRun) -> BoxFuture<'a, Outcome> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) as usize;
            assert_eq!(run.attempt as usize, n + 1, "attempts are numbered from 1");
            let status = self.statuses[n.min(self.statuses.len() - 1)];
            Box::pin(async move {
                let mut o = Outcome::new(status);
                o.exit_code = (status == Status::Failed).then_some(1);
                o
            })
        }
    }

    use crate::wire::job::testing::message;
    use crate::worker::results::DEFAULT_MAX_ATTEMPTS_CAP;

    fn config(max_attempts: u32) -> ReportConfig {
        ReportConfig {
            results_topic: "r".into(),
            dlq_topic: "d".into(),
            max_attempts,
            retry_backoff: Duration::from_millis(1),
            worker: "w1".into(),
            max_output: 8192,
            max_age: None,
            max_attempts_cap: DEFAULT_MAX_ATTEMPTS_CAP,
        }
    }

    fn origin() -> Origin {
        Origin {
            topic: "jobs".into(),
            partition: 2,
            offset: 41,
        }
    }

    fn records(r: &Recorder) -> Vec<(String, serde_json::Value)> {
        r.records
            .lock()
            .unwrap()
            .iter()
            .map(|(t, _, v)| (t.clone(), serde_json::from_slice(v).unwrap()))
            .collect()
    }

    #[tokio::test]
    async fn a_job_failing_every_time_is_tried_max_attempts_times_then_dead_lettered() {
        let h = Scripted {
            statuses: vec![Status::Failed, Status::TimedOut, Status::Failed],
            calls: AtomicU32::new(0),
        };
        let r = Recorder::default();
        // (handler calls, reports published) when the executor was let go.
        let freed = std::cell::Cell::new(None);
        let end = execute_with_retries(&h, &r, &config(3), message(), origin(), None, || {
            freed.set(Some((h.calls.load(Ordering::SeqCst), records(&r).len())))
        })
        .await;
        assert_eq!(
            end,
            Final::DeadLettered {
                reason: DeadReason::AttemptsExhausted,
                attempts: 3
            }
        );
        assert_eq!(
            freed.get(),
            Some((3, 2)),
            "the executor is freed after the last attempt, before its result and dead letter"
        );
        let got = records(&r);
        assert_eq!(got.len(), 4);
        for (i, (topic, result)) in got[..3].iter().enumerate() {
            assert_eq!(topic, "r");
            assert_eq!(result["attempt"], i as u64 + 1);
        }
        assert_eq!(got[1].1["status"], "timed_out");
        let (topic, letter) = &got[3];
        assert_eq!(topic, "d");
        assert_eq!(letter["reason"], "attempts_exhausted");
        assert_eq!(letter["message"]["dispatchId"], "sync@2026-11-26T03:00:00Z");
        assert_eq!(letter["lastResult"]["attempt"], 3);
        assert_eq!(letter["lastResult"]["status"], "failed");
        assert_eq!(letter["partition"], 2);
        assert_eq!(letter["offset"], 41);
    }

    #[tokio::test]
    async fn a_retry_that_succeeds_stops_there() {
        let h = Scripted {
            statuses: vec![Status::Failed, Status::Succeeded],
            calls: AtomicU32::new(0),
        };
        let r = Recorder::default();
        let end = execute_with_retries(&h, &r, &config(5), message(), origin(), None, || {}).await;
        assert_eq!(end, Final::Succeeded { attempts: 2 });
        let got = records(&r);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].1["status"], "succeeded");
    }

    #[tokio::test]
    async fn a_rejected_job_is_not_retried_and_goes_to_the_dlq() {
        let h = Scripted {
            statuses: vec![Status::Rejected],
            calls: AtomicU32::new(0),
        };
        let r = Recorder::default();
        let end = execute_with_retries(&h, &r, &config(3), message(), origin(), None, || {}).await;
        assert_eq!(
            end,
            Final::DeadLettered {
                reason: DeadReason::Rejected,
                attempts: 1
            }
        );
        assert_eq!(h.calls.load(Ordering::SeqCst), 1);
        assert_eq!(records(&r).len(), 2);
    }

    struct Panicking;

    impl Handler for Panicking {
        fn run<'a>(&'a self, run: &'a JobRun) -> BoxFuture<'a, Outcome> {
            if run.attempt == 1 {
                panic!("bug before the future");
            }
            Box::pin(async { panic!("bug inside the future") })
        }
    }

    #[tokio::test]
    async fn a_panicking_handler_fails_its_attempts_and_is_dead_lettered() {
        let r = Recorder::default();
        let end =
            execute_with_retries(&Panicking, &r, &config(2), message(), origin(), None, || {})
                .await;
        assert_eq!(
            end,
            Final::DeadLettered {
                reason: DeadReason::AttemptsExhausted,
                attempts: 2
            }
        );
        let got = records(&r);
        assert_eq!(
            got[0].1["stderrTail"],
            "the handler panicked: bug before the future"
        );
        assert_eq!(
            got[1].1["stderrTail"],
            "the handler panicked: bug inside the future"
        );
        assert_eq!(got[2].0, "d");
    }

    #[test]
    fn a_job_result_has_exactly_the_v1_fields() {
        let started: DateTime<Utc> = "2026-11-26T03:00:01.250Z".parse().unwrap();
        let finished: DateTime<Utc> = "2026-11-26T03:00:03.500Z".parse().unwrap();
        let mut o = Outcome::new(Status::TimedOut);
        o.stdout_tail = "out".into();
        let r = job_result(&message(), 2, &o, started, finished, "host-1", 8192);
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        let mut keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(|k| k.as_str())
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "attempt",
                "dispatchId",
                "durationMs",
                "exitCode",
                "finishedAt",
                "jobName",
                "scheduledAt",
                "startedAt",
                "status",
                "stderrTail",
                "stdoutTail",
                "v",
                "worker"
            ]
        );
        assert_eq!(json["status"], "timed_out");
        assert_eq!(json["durationMs"], 2250);
        assert_eq!(json["startedAt"], "2026-11-26T03:00:01.250Z");
        assert_eq!(json["exitCode"], serde_json::Value::Null);
    }

    #[tokio::test]
    async fn a_job_older_than_max_age_is_not_run_but_reported_expired_and_dead_lettered() {
        let h = Scripted {
            statuses: vec![Status::Succeeded],
            calls: AtomicU32::new(0),
        };
        let r = Recorder::default();
        let mut c = config(3);
        c.max_age = Some(Duration::from_secs(3600));
        let old = JobMessage {
            scheduled_at: rfc3339_ms(Utc::now() - chrono::Duration::minutes(61)),
            ..message()
        };
        let freed = std::cell::Cell::new(false);
        let end =
            execute_with_retries(&h, &r, &c, old.clone(), origin(), None, || freed.set(true)).await;
        assert_eq!(
            end,
            Final::DeadLettered {
                reason: DeadReason::Expired,
                attempts: 0
            }
        );
        assert!(freed.get());
        assert_eq!(h.calls.load(Ordering::SeqCst), 0, "not run");
        let got = records(&r);
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[0].0.as_str(), &got[0].1["status"]),
            ("r", &serde_json::json!("expired"))
        );
        assert!(
            got[0].1["stderrTail"]
                .as_str()
                .unwrap()
                .contains("--max-age 1h"),
            "{}",
            got[0].1
        );
        assert_eq!(
            (got[1].0.as_str(), &got[1].1["reason"]),
            ("d", &serde_json::json!("expired"))
        );
        assert_eq!(
            got[1].1["message"]["scheduledAt"],
            old.scheduled_at.as_str()
        );

        // Younger than --max-age, or no --max-age at all: it runs.
        let young = JobMessage {
            scheduled_at: rfc3339_ms(Utc::now() - chrono::Duration::minutes(59)),
            ..message()
        };
        let fresh = || Scripted {
            statuses: vec![Status::Succeeded],
            calls: AtomicU32::new(0),
        };
        let end = execute_with_retries(&fresh(), &r, &c, young, origin(), None, || {}).await;
        assert_eq!(end, Final::Succeeded { attempts: 1 });
        let end = execute_with_retries(&fresh(), &r, &config(3), old, origin(), None, || {}).await;
        assert_eq!(end, Final::Succeeded { attempts: 1 });
    }

    /// Output a terminal-hostile job might print: every byte escapes to six in JSON.
    struct Noisy;

    impl Handler for Noisy {
        fn run<'a>(&'a self, _run: &'a JobRun) -> BoxFuture<'a, Outcome> {
            Box::pin(async {
                let mut o = Outcome::new(Status::Failed);
                o.stdout_tail = "\u{1}".repeat(1 << 20);
                o.stderr_tail = "\u{2}".repeat(1 << 20) + "the end";
                o
            })
        }
    }

    #[tokio::test]
    async fn every_report_fits_the_cap_however_much_a_job_prints() {
        let r = Recorder::default();
        let mut c = config(1);
        c.max_output = 128 * 1024;
        execute_with_retries(&Noisy, &r, &c, message(), origin(), None, || {}).await;
        let published = r.records.lock().unwrap().clone();
        assert_eq!(published.len(), 2);
        for (topic, _, value) in &published {
            assert!(
                value.len() <= MAX_REPORT_BYTES,
                "{topic}: {} bytes",
                value.len()
            );
        }
        let result: serde_json::Value = serde_json::from_slice(&published[0].2).unwrap();
        let stderr = result["stderrTail"].as_str().unwrap();
        assert!(
            stderr.ends_with("the end") && stderr.len() <= 128 * 1024,
            "{}",
            stderr.len()
        );
        let letter: serde_json::Value = serde_json::from_slice(&published[1].2).unwrap();
        assert!(letter["lastResult"]["stderrTail"]
            .as_str()
            .unwrap()
            .ends_with("the end"));
        assert_eq!(letter["message"]["dispatchId"], "sync@2026-11-26T03:00:00Z");
    }

    #[tokio::test]
    async fn an_oversized_original_is_replaced_by_its_digest_in_the_dead_letter() {
        let h = Scripted {
            statuses: vec![Status::Rejected],
            calls: AtomicU32::new(0),
        };
        let r = Recorder::default();
        let big = JobMessage {
            job: "x".repeat(1 << 20),
            ..message()
        };
        let value = serde_json::to_vec(&big).unwrap();
        let digest = OriginalDigest::if_oversized(&value);
        execute_with_retries(&h, &r, &config(1), big, origin(), digest, || {}).await;
        let got = records(&r);
        let letter = &got[1].1;
        assert_eq!(letter["message"], serde_json::Value::Null);
        assert_eq!(letter["original"]["bytes"], value.len() as u64);
        assert_eq!(
            letter["original"]["sha256"],
            OriginalDigest::of(&value).sha256
        );
        assert_eq!(
            (letter["topic"].as_str(), letter["offset"].as_i64()),
            (Some("jobs"), Some(41))
        );

        // The same for a malformed record.
        let raw = vec![0xffu8; 1 << 20];
        let long_key = vec![b'k'; 1 << 20];
        let unrunnable = Unrunnable::malformed(origin(), long_key.clone(), &raw, "not JSON".into());
        dead_letter_unrunnable(&r, &config(1), unrunnable).await;
        let published = r.records.lock().unwrap().last().cloned().unwrap();
        assert!(published.2.len() < 1024);
        assert_eq!(
            published.1,
            format!("sha256:{}", OriginalDigest::of(&long_key).sha256).into_bytes()
        );
        let letter: serde_json::Value = serde_json::from_slice(&published.2).unwrap();
        assert_eq!(letter["reason"], "malformed");
        assert_eq!(letter["raw"], serde_json::Value::Null);
        assert_eq!(
            letter["original"]["sha256"],
            OriginalDigest::of(&raw).sha256
        );
    }

    /// A broker that refuses every report for good.
    struct Refusing;

    impl Publisher for Refusing {
        fn publish<'a>(
            &'a self,
            topic: &'a str,
            _key: &'a [u8],
            value: Vec<u8>,
        ) -> BoxFuture<'a, Result<(), Undeliverable>> {
            Box::pin(async move {
                Err(Undeliverable {
                    topic: topic.to_string(),
                    bytes: value.len(),
                    reason: "Broker: Topic authorization failed".into(),
                })
            })
        }
    }

    #[tokio::test]
    async fn a_job_whose_reports_are_refused_for_good_still_finishes() {
        let h = Scripted {
            statuses: vec![Status::Failed],
            calls: AtomicU32::new(0),
        };
        let c = config(2);
        let end = execute_with_retries(&h, &Refusing, &c, message(), origin(), None, || {});
        let end = tokio::time::timeout(Duration::from_secs(10), end)
            .await
            .expect("finishes, so its offset can be committed past");
        assert_eq!(
            end,
            Final::DeadLettered {
                reason: DeadReason::AttemptsExhausted,
                attempts: 2
            }
        );
    }

    #[tokio::test]
    async fn a_messages_max_attempts_overrides_the_workers() {
        for (from_message, worker, attempts) in [(Some(2), 5, 2), (Some(4), 1, 4), (None, 3, 3)] {
            let h = Scripted {
                statuses: vec![Status::Failed],
                calls: AtomicU32::new(0),
            };
            let r = Recorder::default();
            let m = JobMessage {
                max_attempts: from_message,
                ..message()
            };
            let end = execute_with_retries(&h, &r, &config(worker), m, origin(), None, || {}).await;
            assert_eq!(
                end,
                Final::DeadLettered {
                    reason: DeadReason::AttemptsExhausted,
                    attempts
                },
                "message {from_message:?}, --max-attempts {worker}"
            );
            assert_eq!(h.calls.load(Ordering::SeqCst), attempts);
        }
    }

    /// A topic writer's `maxAttempts` 100 does not hold an executor for 100 attempts: it is cut to
    /// `--max-attempts-cap` (or to `--max-attempts`, when that is higher), and the last result
    /// says so.
    #[tokio::test]
    async fn a_messages_max_attempts_is_capped_at_the_workers_ceiling() {
        // (message's maxAttempts, --max-attempts, --max-attempts-cap, attempts made, capped)
        for (asked, worker, cap, attempts, capped) in [
            (100, 3, 5, 5, true),
            (100, 8, 5, 8, true),
            (4, 3, 5, 4, false),
            (5, 3, 5, 5, false),
        ] {
            let h = Scripted {
                statuses: vec![Status::Failed],
                calls: AtomicU32::new(0),
            };
            let r = Recorder::default();
            let m = JobMessage {
                max_attempts: Some(asked),
                ..message()
            };
            let config = ReportConfig {
                max_attempts_cap: cap,
                ..config(worker)
            };
            let end = execute_with_retries(&h, &r, &config, m, origin(), None, || {}).await;
            let case = format!("maxAttempts {asked}, --max-attempts {worker}, cap {cap}");
            assert_eq!(
                end,
                Final::DeadLettered {
                    reason: DeadReason::AttemptsExhausted,
                    attempts
                },
                "{case}"
            );
            assert_eq!(h.calls.load(Ordering::SeqCst), attempts, "{case}");
            let got = records(&r);
            let last = got[got.len() - 2].1["stderrTail"]
                .as_str()
                .unwrap()
                .to_string();
            let note = format!("gave up after {attempts} attempts: the job's maxAttempts {asked} is above this worker's ceiling (--max-attempts-cap, or --max-attempts when higher)");
            assert_eq!(last.ends_with(&note), capped, "{case}: {last:?}");
            // Only the last attempt's result carries it.
            assert!(!got[0].1["stderrTail"].as_str().unwrap().contains("gave up"));
        }
    }

    /// Fails its first attempt; any later one waits until it is cancelled.
    struct FailsThenHangs;

    impl Handler for FailsThenHangs {
        fn run<'a>(&'a self, run: &'a JobRun) -> BoxFuture<'a, Outcome> {
            Box::pin(async move {
                if run.attempt == 1 {
                    return Outcome::new(Status::Failed);
                }
                std::future::pending().await
            })
        }
    }

    #[tokio::test]
    async fn a_cancelled_run_is_reported_cancelled_and_not_dead_lettered() {
        // Cancelled while its second attempt runs.
        let r = Recorder::default();
        let cancel = CancellationToken::new();
        let mut c = config(3);
        c.retry_backoff = Duration::from_millis(10);
        let (end, ()) = tokio::join!(
            execute_cancellable(
                &FailsThenHangs,
                &r,
                &c,
                message(),
                origin(),
                None,
                &cancel,
                || {}
            ),
            async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                cancel.cancel();
            }
        );
        assert_eq!(end, Final::Cancelled { attempts: 2 });
        let got = records(&r);
        let statuses: Vec<(&str, &serde_json::Value)> = got
            .iter()
            .map(|(t, v)| (t.as_str(), &v["status"]))
            .collect();
        assert_eq!(
            statuses,
            [("r", &"failed".into()), ("r", &"cancelled".into())]
        );
        assert!(
            got[1].1["stderrTail"]
                .as_str()
                .unwrap()
                .ends_with("a newer run of this job arrived (overlap \"replace\")"),
            "{:?}",
            got[1].1
        );
        // Cancelled during the backoff before attempt 2: attempt 2 is reported cancelled at once,
        // long before the 30 s backoff would have ended.
        let r = Recorder::default();
        let cancel = CancellationToken::new();
        c.retry_backoff = Duration::from_secs(30);
        let started = std::time::Instant::now();
        let (end, ()) = tokio::join!(
            execute_cancellable(
                &FailsThenHangs,
                &r,
                &c,
                message(),
                origin(),
                None,
                &cancel,
                || {}
            ),
            async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                cancel.cancel();
            }
        );
        assert_eq!(end, Final::Cancelled { attempts: 2 });
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(records(&r).len(), 2, "two results, no dead letter");
    }

    #[tokio::test]
    async fn a_record_not_run_is_reported_with_attempt_0_and_its_reason() {
        let r = Recorder::default();
        report_not_run(&r, &config(3), &message(), Status::Skipped, "not run: busy").await;
        let got = records(&r);
        assert_eq!(got.len(), 1);
        let (topic, v) = &got[0];
        assert_eq!(topic, "r");
        assert_eq!(
            (
                &v["status"],
                &v["attempt"],
                &v["stderrTail"],
                &v["durationMs"]
            ),
            (
                &"skipped".into(),
                &0.into(),
                &"not run: busy".into(),
                &0.into()
            )
        );
        // A reader of JobResult (deny_unknown_fields) reads it: no new field, a new status value.
        let read: JobResult = serde_json::from_value(v.clone()).unwrap();
        assert_eq!(read.status, Status::Skipped);
    }
}
