//! What the worker reports: a JobResult v1 for every attempt on `--results-topic`, and a dead letter
//! on `--dlq-topic` for a job that used up `--max-attempts`, was rejected, or could not be read.
//!
//! ```text
//!  JobMessage ──► attempt 1 ──► JobResult ──► results topic
//!                   │ failed / timed_out: wait (exponential backoff, jitter), attempt 2, …
//!                   │ after --max-attempts, or rejected (retrying cannot help):
//!                   ▼
//!              DeadLetter { original message, last result } ──► DLQ topic
//!  malformed record ──► DeadLetter { topic, partition, offset, raw value, error } ──► DLQ topic
//! ```
//!
//! A record counts as finished (its offset may be committed) only once its last report was acked by
//! Kafka: publishing retries until it succeeds, so a broker outage delays commits instead of losing
//! reports.
//!
//! JobResult v1 (JSON, key `jobName`): `v, dispatchId, jobName, scheduledAt, attempt, status
//! (succeeded|failed|timed_out|rejected), exitCode, startedAt, finishedAt, durationMs, stdoutTail,
//! stderrTail, worker`.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::executor::{BoxFuture, Handler, JobRun, Outcome, Status};
use crate::kafka::{Backoff, KafkaContext};
use crate::message::JobMessage;

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
    /// Last 4 KiB of stdout.
    pub stdout_tail: String,
    /// Last 4 KiB of stderr.
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
    /// The record is not a JobMessage v1.
    Malformed,
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
    /// A malformed record's value, as text (lossy UTF-8).
    pub raw: Option<String>,
    /// Why a malformed record could not be read.
    pub error: Option<String>,
    /// The worker's id.
    pub worker: String,
}

/// Delivers reports. Kafka in production; a recorder in tests.
pub trait Publisher: Send + Sync + 'static {
    /// Delivers `value` to `topic`, retrying until the broker acks it.
    fn publish<'a>(&'a self, topic: &'a str, key: &'a [u8], value: Vec<u8>) -> BoxFuture<'a, ()>;
}

/// [`Publisher`] over an rdkafka producer (acks from all in-sync replicas).
pub struct KafkaPublisher {
    /// The producer.
    pub producer: FutureProducer<KafkaContext>,
    /// The connection's reachability tracker, told when a report is acked.
    pub health: std::sync::Arc<crate::kafka::Health>,
    /// First retry delay.
    pub retry_backoff: Duration,
}

impl Publisher for KafkaPublisher {
    fn publish<'a>(&'a self, topic: &'a str, key: &'a [u8], value: Vec<u8>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let mut backoff = Backoff::new(self.retry_backoff);
            let mut attempts = 0u32;
            loop {
                let record = FutureRecord::to(topic).key(key).payload(&value);
                match self.producer.send(record, Duration::from_secs(10)).await {
                    Ok(_) => {
                        // librdkafka says when a broker is lost, not when it is back: an ack is.
                        self.health.succeeded();
                        if attempts > 0 {
                            info!(message = "report delivered after retrying", topic, attempts);
                        }
                        return;
                    }
                    Err((e, _)) => {
                        attempts += 1;
                        let delay = backoff.next_delay();
                        warn!(message = "delivering a report failed; retrying", topic, error = %e, attempt = attempts, retry_in_ms = delay.as_millis() as u64);
                        tokio::time::sleep(delay).await;
                    }
                }
            }
        })
    }
}

/// Retry policy and report destinations.
#[derive(Debug, Clone)]
pub struct ReportConfig {
    /// `--results-topic`
    pub results_topic: String,
    /// `--dlq-topic`
    pub dlq_topic: String,
    /// `--max-attempts` (at least 1).
    pub max_attempts: u32,
    /// `--retry-backoff`: the first wait between attempts; doubles with jitter.
    pub retry_backoff: Duration,
    /// `--worker-id`
    pub worker: String,
}

/// How a record's processing ended (after every attempt and report).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Final {
    /// An attempt succeeded.
    Succeeded {
        /// Which one.
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

/// The report for one attempt.
pub fn job_result(
    message: &JobMessage,
    attempt: u32,
    outcome: &Outcome,
    started: DateTime<Utc>,
    finished: DateTime<Utc>,
    worker: &str,
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
        stdout_tail: outcome.stdout_tail.clone(),
        stderr_tail: outcome.stderr_tail.clone(),
        worker: worker.to_string(),
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    // Strings, integers and enums only: serialization cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
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

fn panic_text(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic".to_string())
}

/// One attempt; a panicking handler yields a `failed` outcome.
async fn run_guarded(handler: &dyn Handler, run: &JobRun) -> Outcome {
    let caught = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.run(run))) {
        Ok(future) => CatchUnwind(future).await,
        Err(panic) => Err(panic_text(panic)),
    };
    caught.unwrap_or_else(|panic| {
        let mut outcome = Outcome::new(Status::Failed);
        outcome.stderr_tail = format!("the handler panicked: {panic}");
        outcome
    })
}

/// Runs `message` until it succeeds, is rejected, or used up its attempts; reports each attempt and,
/// when it did not succeed, dead-letters it. Calls `executed` as soon as the last attempt is over
/// (before its reports are delivered); returns once every report was delivered.
pub async fn execute_with_retries(
    handler: &dyn Handler,
    publisher: &dyn Publisher,
    config: &ReportConfig,
    message: JobMessage,
    origin: Origin,
    executed: impl FnOnce(),
) -> Final {
    let mut executed = Some(executed);
    let max_attempts = config.max_attempts.max(1);
    let mut backoff = Backoff::new(config.retry_backoff);
    let mut run = JobRun {
        message,
        attempt: 1,
    };
    loop {
        let started = Utc::now();
        let clock = std::time::Instant::now();
        let outcome = run_guarded(handler, &run).await;
        let finished = started
            + chrono::Duration::from_std(clock.elapsed())
                .unwrap_or_else(|_| chrono::Duration::zero());
        let result = job_result(
            &run.message,
            run.attempt,
            &outcome,
            started,
            finished,
            &config.worker,
        );
        let retry = outcome.status.is_retryable() && run.attempt < max_attempts;
        if !retry {
            // The executor is free before the reports are acked: the caller starts the next job
            // while this one's result is in flight (and batched with others).
            if let Some(executed) = executed.take() {
                executed();
            }
        }
        let key = run.message.job_name.clone().into_bytes();
        publisher
            .publish(&config.results_topic, &key, to_json(&result))
            .await;
        match outcome.status {
            Status::Succeeded => {
                info!(message = "job succeeded", dispatch_id = %run.message.dispatch_id, attempt = run.attempt, duration_ms = result.duration_ms);
                return Final::Succeeded {
                    attempts: run.attempt,
                };
            }
            status if retry => {
                let delay = backoff.next_delay();
                warn!(message = "job attempt failed; retrying", dispatch_id = %run.message.dispatch_id, attempt = run.attempt, max_attempts, status = status.as_str(), exit_code = ?outcome.exit_code, retry_in_ms = delay.as_millis() as u64);
                tokio::time::sleep(delay).await;
                run.attempt += 1;
            }
            status => {
                let reason = if status == Status::Rejected {
                    DeadReason::Rejected
                } else {
                    DeadReason::AttemptsExhausted
                };
                warn!(message = "job sent to the dead letter topic", dispatch_id = %run.message.dispatch_id, attempts = run.attempt, status = status.as_str(), reason = ?reason, detail = %outcome.stderr_tail.lines().last().unwrap_or(""), dlq_topic = %config.dlq_topic);
                let attempts = run.attempt;
                let letter = DeadLetter {
                    v: 1,
                    reason,
                    origin,
                    message: Some(run.message),
                    last_result: Some(result),
                    raw: None,
                    error: None,
                    worker: config.worker.clone(),
                };
                publisher
                    .publish(&config.dlq_topic, &key, to_json(&letter))
                    .await;
                return Final::DeadLettered { reason, attempts };
            }
        }
    }
}

/// Dead-letters a record that is not a JobMessage v1.
pub async fn dead_letter_malformed(
    publisher: &dyn Publisher,
    config: &ReportConfig,
    origin: Origin,
    key: &[u8],
    raw: &[u8],
    error: String,
) {
    let letter = DeadLetter {
        v: 1,
        reason: DeadReason::Malformed,
        origin,
        message: None,
        last_result: None,
        raw: Some(String::from_utf8_lossy(raw).into_owned()),
        error: Some(error),
        worker: config.worker.clone(),
    };
    publisher
        .publish(&config.dlq_topic, key, to_json(&letter))
        .await;
}

/// Reads a record's value as JobMessage v1.
pub fn parse_message(value: &[u8]) -> Result<JobMessage, String> {
    let message: JobMessage = serde_json::from_slice(value).map_err(|e| e.to_string())?;
    if message.v != 1 {
        return Err(format!(
            "unsupported message version v={} (this worker reads v=1)",
            message.v
        ));
    }
    Ok(message)
}

/// One delivered report: `(topic, key, value)`.
pub type Published = (String, Vec<u8>, Vec<u8>);

/// A [`Publisher`] that keeps what it was given (tests, dry runs).
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    /// `(topic, key, value)` in delivery order.
    pub records: Arc<std::sync::Mutex<Vec<Published>>>,
}

impl Publisher for Recorder {
    fn publish<'a>(&'a self, topic: &'a str, key: &'a [u8], value: Vec<u8>) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            if let Ok(mut r) = self.records.lock() {
                r.push((topic.to_string(), key.to_vec(), value));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn message() -> JobMessage {
        JobMessage {
            v: 1,
            job_name: "sync".into(),
            priority: 0,
            job: "sync".into(),
            cron_time: "* * * * *".into(),
            scheduled_at: "2026-11-26T03:00:00Z".into(),
            dispatch_id: "sync@2026-11-26T03:00:00Z".into(),
        }
    }

    fn config(max_attempts: u32) -> ReportConfig {
        ReportConfig {
            results_topic: "r".into(),
            dlq_topic: "d".into(),
            max_attempts,
            retry_backoff: Duration::from_millis(1),
            worker: "w1".into(),
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
        let end = execute_with_retries(&h, &r, &config(3), message(), origin(), || {
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
        let end = execute_with_retries(&h, &r, &config(5), message(), origin(), || {}).await;
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
        let end = execute_with_retries(&h, &r, &config(3), message(), origin(), || {}).await;
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
            execute_with_retries(&Panicking, &r, &config(2), message(), origin(), || {}).await;
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
        let r = job_result(&message(), 2, &o, started, finished, "host-1");
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

    #[test]
    fn records_that_are_not_job_message_v1_are_named_malformed() {
        assert!(parse_message(b"not json").is_err());
        assert!(parse_message(br#"{"v":1,"jobName":"a"}"#)
            .unwrap_err()
            .contains("missing field"));
        let v2 = serde_json::to_vec(&JobMessage { v: 2, ..message() }).unwrap();
        assert!(parse_message(&v2).unwrap_err().contains("v=2"));
        let ok = serde_json::to_vec(&message()).unwrap();
        assert_eq!(parse_message(&ok).unwrap(), message());
    }
}
