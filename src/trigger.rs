//! `cronq trigger JOB`: one run of a job of the schedule, by hand, now (or at a later instant).
//!
//! The record is a JobMessage v1 like the dispatcher's, with `scheduledAt` the trigger instant
//! (milliseconds, not a minute slot) and `dispatchId` = `jobName@scheduledAt#manual`, which
//! workers accept as a triggered run and never confuse with a scheduled slot. Milliseconds make
//! two triggers within one second two runs (whole seconds, as earlier versions wrote, made the
//! second a duplicate of the first); a trigger `--at` one instant twice is one run. It goes to the
//! job's topic and the partition Kafka's default partitioner picks for its key, as every run of
//! the job does, so a worker sees it in order with the job's scheduled runs.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rskafka::record::Record;

use crate::kafka::admin::{ensure_topic_retrying, TopicAdmin, TopicError, TopicSpec};
use crate::kafka::{describe, produce_one, Backoff, Connection};
use crate::schedule::JobSpec;
use crate::wire::{self as message, JobMessage};

/// Why a trigger did not produce its record.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TriggerError {
    /// The topic cannot be used.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The broker refused the record for good.
    #[error("the broker refused the run of {job:?} on topic {topic:?}: {reason}")]
    Refused {
        /// The job.
        job: String,
        /// The topic.
        topic: String,
        /// The broker's answer.
        reason: String,
    },
    /// rdkafka's admin client could not be made.
    #[error("cannot create a Kafka admin client: {0}")]
    Admin(String),
}

/// Where and how a triggered run is produced.
#[derive(Debug, Clone)]
pub struct TriggerConfig {
    /// Kafka.
    pub kafka: Connection,
    /// The job's topic (its own, else the global one).
    pub topic: String,
    /// Create the topic when missing, with these partitions and replication factor.
    pub create: Option<(i32, i16)>,
    /// First retry delay of a failed attempt.
    pub retry_backoff: Duration,
    /// Who triggers the run (`user@host`): the record's `cronq-by` header, for the audit.
    pub by: String,
    /// Why, when given: the `cronq-reason` header.
    pub reason: Option<String>,
}

/// The message of a run of `spec` triggered at `at`: the slot's message with `scheduledAt` = `at`
/// (milliseconds, [`message::manual_text`]) and `#manual` after its dispatchId.
pub fn manual_message(spec: &JobSpec, at: DateTime<Utc>) -> JobMessage {
    let mut msg = JobMessage::for_slot(spec, at);
    msg.scheduled_at = message::manual_text(at);
    msg.dispatch_id = message::manual_dispatch_id(&spec.name, &msg.scheduled_at);
    // A run by hand runs now: a job's `jitter` spreads its scheduled slots only.
    msg.not_before = None;
    msg
}

/// Produces one triggered run of `spec` at `at`; returns its dispatchId. Transient failures are
/// retried (the caller bounds the whole with a timeout); a permanent refusal is an error.
pub async fn trigger(
    config: &TriggerConfig,
    spec: &JobSpec,
    at: DateTime<Utc>,
) -> Result<String, TriggerError> {
    let msg = manual_message(spec, at);
    let client = config.kafka.connect(config.retry_backoff).await;
    let admin = match config.create {
        Some(_) => {
            Some(TopicAdmin::new(&config.kafka).map_err(|e| TriggerError::Admin(e.to_string()))?)
        }
        None => None,
    };
    let (partitions, replication_factor) = config.create.unwrap_or((1, 1));
    let topic_spec = TopicSpec {
        name: &config.topic,
        partitions,
        replication_factor,
        configs: &[],
    };
    let mut backoff = Backoff::new(config.retry_backoff);
    let partition_count = ensure_topic_retrying(
        &client,
        admin.as_ref(),
        &topic_spec,
        &mut backoff,
        |e, _, _| tracing::debug!(message = "topic lookup failed; retrying", topic = %config.topic, error = %e),
    )
    .await?;
    let key = spec.name.as_bytes();
    let partition = message::partition_for(key, partition_count);
    let value = serde_json::to_vec(&msg).unwrap_or_default();
    let headers = [
        (message::HEADER_DISPATCH_ID, msg.dispatch_id.clone()),
        (message::HEADER_PRIORITY, msg.priority.to_string()),
        (message::HEADER_SCHEDULED_AT, msg.scheduled_at.clone()),
        (message::HEADER_BY, config.by.clone()),
    ]
    .into_iter()
    .chain(config.reason.clone().map(|r| (message::HEADER_REASON, r)))
    .map(|(k, v)| (k.to_string(), v.into_bytes()))
    .collect();
    let record = Record {
        key: Some(key.to_vec()),
        value: Some(value),
        headers,
        timestamp: Utc::now(),
    };
    // The same backoff: the lookup's failures count towards the produce's waits.
    produce_one(&client, &config.topic, partition, &record, &mut backoff, |e, _, _| {
        tracing::debug!(message = "produce failed; retrying", topic = %config.topic, partition, error = %describe(e));
    })
    .await
    .map_err(|e| TriggerError::Refused {
        job: spec.name.clone(),
        topic: config.topic.clone(),
        reason: describe(&e),
    })?;
    Ok(msg.dispatch_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_triggered_run_keeps_its_milliseconds_and_ends_its_dispatch_id_in_manual() {
        let spec = JobSpec {
            name: "sync".into(),
            priority: 3,
            job: "run sync".into(),
            cron_time: "0 * * * *".into(),
            timezone: chrono_tz::UTC,
            topic: None,
            enabled: true,
            catchup: Default::default(),
            catchup_window: Duration::from_secs(3600),
            shard: 0,
            timeout: None,
            max_attempts: None,
            overlap: None,
            jitter: None,
            timing: None,
            deadline: None,
        };
        let at = Utc.with_ymd_and_hms(2026, 11, 29, 21, 14, 5).unwrap()
            + chrono::Duration::milliseconds(123);
        let m = manual_message(&spec, at);
        assert_eq!(m.scheduled_at, "2026-11-29T21:14:05.123Z");
        assert_eq!(m.dispatch_id, "sync@2026-11-29T21:14:05.123Z#manual");
        // A second trigger 1 ms later, in the same second, is another run.
        let next = manual_message(&spec, at + chrono::Duration::milliseconds(1));
        assert_ne!(next.dispatch_id, m.dispatch_id);
        assert_eq!((m.priority, m.job.as_str()), (3, "run sync"));
        // The worker's integrity check accepts it as a triggered run.
        let value = serde_json::to_vec(&m).unwrap();
        let back = crate::wire::job::parse_message(b"sync", &value).unwrap();
        assert_eq!(back, m);
    }
}
