//! Where the worker's reports go: the [`Publisher`] that delivers each JobResult and dead letter
//! (the formats are [`crate::wire::result`]'s), over Kafka in production ([`KafkaPublisher`]) and
//! into memory in tests ([`Recorder`]).
//!
//! A record counts as finished (its offset may be committed) only once its last report was acked by
//! Kafka: publishing retries until it succeeds, so a broker outage delays commits instead of losing
//! reports. A report the broker can never take (too large, not authorized) is logged, counted and
//! given up, so that one record cannot freeze its partition's commits.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use tracing::{error, info, warn};

use super::executor::BoxFuture;
use crate::kafka::{retry, Backoff, KafkaContext};
use crate::wire::job::excerpt;
use crate::wire::JobMessage;

/// A report the broker can never take; it was logged and given up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("report to {topic:?} ({bytes} bytes) given up: {reason}")]
pub struct Undeliverable {
    /// The report's topic.
    pub topic: String,
    /// The report's size.
    pub bytes: usize,
    /// The broker's or the client's answer.
    pub reason: String,
}

/// Delivers reports. Kafka in production; a recorder in tests.
pub trait Publisher: Send + Sync + 'static {
    /// Delivers `value` to `topic` under `key`, retrying until the broker acks it, unless the error
    /// is permanent ([`Undeliverable`]: too large, not authorized), which no retry can fix.
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        key: &'a [u8],
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), Undeliverable>>;
}

/// [`Publisher`] over an rdkafka producer (acks from all in-sync replicas).
pub struct KafkaPublisher {
    /// The producer.
    pub producer: FutureProducer<KafkaContext>,
    /// The connection's reachability tracker, told when a report is acked.
    pub health: std::sync::Arc<crate::kafka::Health>,
    /// First retry delay.
    pub retry_backoff: Duration,
    /// Reports given up on a permanent error.
    pub undeliverable: std::sync::atomic::AtomicU64,
}

impl Publisher for KafkaPublisher {
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        key: &'a [u8],
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), Undeliverable>> {
        Box::pin(async move {
            let mut attempts = 0u32;
            let sent = retry(
                &mut Backoff::new(self.retry_backoff),
                || async {
                    let record = FutureRecord::to(topic).key(key).payload(&value);
                    self.producer
                        .send(record, Duration::from_secs(10))
                        .await
                        .map_err(|(e, _)| e)
                },
                |e, attempt, delay| {
                    attempts = attempt;
                    warn!(message = "delivering a report failed; retrying", topic, error = %e, attempt, retry_in_ms = delay.as_millis() as u64);
                },
            )
            .await;
            match sent {
                Ok(_) => {
                    // librdkafka says when a broker is lost, not when it is back: an ack is.
                    self.health.succeeded();
                    if attempts > 0 {
                        info!(message = "report delivered after retrying", topic, attempts);
                    }
                    Ok(())
                }
                // Permanent ([`Classify`](crate::kafka::Classify)): too large, not authorized.
                Err(e) => {
                    self.undeliverable
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    error!(message = "a report cannot be delivered and is given up; its record's offset moves on", topic, key = %excerpt(&String::from_utf8_lossy(key)), bytes = value.len(), error = %e);
                    Err(Undeliverable {
                        topic: topic.to_string(),
                        bytes: value.len(),
                        reason: e.to_string(),
                    })
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
    /// `--max-attempts-cap`: the most attempts a message's `maxAttempts` may ask for (or
    /// `max_attempts`, when that is higher).
    pub max_attempts_cap: u32,
    /// `--retry-backoff`: the first wait between attempts; doubles with jitter.
    pub retry_backoff: Duration,
    /// `--worker-id`
    pub worker: String,
    /// `--max-output`: the most of each captured stream a report keeps, in bytes.
    pub max_output: usize,
    /// `--max-age`: a job whose scheduledAt is older than this when an executor takes it is not
    /// run, but reported `expired` and dead-lettered.
    pub max_age: Option<Duration>,
}

/// `--max-attempts-cap`'s default: a message may ask for up to 10 attempts.
pub const DEFAULT_MAX_ATTEMPTS_CAP: u32 = 10;

impl ReportConfig {
    /// The attempts of `message`: its `maxAttempts` when it has one, else `--max-attempts`. A topic
    /// writer is not trusted, so a message's value is capped at `--max-attempts-cap` (or at
    /// `--max-attempts` when that is higher: the worker's own default is always allowed), like its
    /// `timeoutMs` at `--max-timeout`.
    pub fn attempts_for(&self, message: &JobMessage) -> u32 {
        message.attempts(self.max_attempts, self.max_attempts_cap)
    }
}

/// Delivers one report and moves on: one the broker can never take was logged and counted by the
/// publisher, and the record is done.
pub(super) async fn deliver(publisher: &dyn Publisher, topic: &str, key: &[u8], value: Vec<u8>) {
    let _ = publisher.publish(topic, key, value).await;
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
    fn publish<'a>(
        &'a self,
        topic: &'a str,
        key: &'a [u8],
        value: Vec<u8>,
    ) -> BoxFuture<'a, Result<(), Undeliverable>> {
        Box::pin(async move {
            if let Ok(mut r) = self.records.lock() {
                r.push((topic.to_string(), key.to_vec(), value));
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[tokio::test]
    async fn a_report_the_client_can_never_send_is_given_up_and_counted() {
        // librdkafka refuses a record over its message.max.bytes before any broker is involved.
        let kafka = crate::kafka::Connection::plaintext(vec!["127.0.0.1:9".into()]);
        let producer: FutureProducer<KafkaContext> = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:9")
            .set("message.max.bytes", "10000")
            .create_with_context(kafka.context("test producer"))
            .unwrap();
        let publisher = KafkaPublisher {
            producer,
            health: std::sync::Arc::clone(kafka.health()),
            retry_backoff: Duration::from_millis(1),
            undeliverable: Default::default(),
        };
        let given_up = tokio::time::timeout(
            Duration::from_secs(10),
            publisher.publish("jobs.dlq", b"k", vec![b'x'; 20_000]),
        )
        .await
        .expect("not retried forever");
        let err = given_up.unwrap_err();
        assert_eq!((err.topic.as_str(), err.bytes), ("jobs.dlq", 20_000));
        assert_eq!(publisher.undeliverable.load(Ordering::SeqCst), 1);
    }
}
