//! The control topic itself: make sure it exists, append a record, read it whole into a
//! [`PauseTable`]. Transient failures are retried (the caller bounds the whole with a timeout).

use std::collections::BTreeMap;
use std::time::Duration;

use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
use rskafka::client::Client;
use rskafka::record::Record;
use tracing::{debug, warn};

use super::table::PauseTable;
use crate::kafka::admin::{ensure_topic_retrying, TopicAdmin, TopicError, TopicSpec};
use crate::kafka::{describe, produce_one, Backoff, Connection};
use crate::wire::control::ControlRecord;

/// Why the control topic could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The topic cannot be used.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The broker refused the record for good.
    #[error("the broker refused the control record for {key:?} on topic {topic:?}: {reason}")]
    Refused {
        /// The key.
        key: String,
        /// The topic.
        topic: String,
        /// The broker's answer.
        reason: String,
    },
    /// Reading the topic failed.
    #[error("cannot read the control topic {topic:?}: {reason}")]
    Read {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// rdkafka's admin client could not be made.
    #[error("cannot create a Kafka admin client: {0}")]
    Admin(String),
}

/// Makes sure the control topic exists (one partition, `cleanup.policy=compact`) when `create`
/// gives the replication factor; returns whether it exists. Retries while Kafka is unreachable.
pub async fn ensure_control_topic(
    client: &Client,
    kafka: &Connection,
    topic: &str,
    create: Option<i16>,
    retry_backoff: Duration,
) -> Result<bool, ControlError> {
    let admin = match create {
        Some(_) => Some(TopicAdmin::new(kafka).map_err(|e| ControlError::Admin(e.to_string()))?),
        None => None,
    };
    let spec = TopicSpec {
        name: topic,
        partitions: 1,
        replication_factor: create.unwrap_or(1),
        configs: &[("cleanup.policy", "compact")],
    };
    let retried = ensure_topic_retrying(
        client,
        admin.as_ref(),
        &spec,
        &mut Backoff::new(retry_backoff),
        |e, _, _| debug!(message = "control topic lookup failed; retrying", topic, error = %e),
    )
    .await;
    match retried {
        Ok(_) => Ok(true),
        Err(TopicError::Missing { .. }) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Appends `record` to the control topic; transient failures are retried (the caller bounds the
/// whole with a timeout).
pub async fn write(
    client: &Client,
    topic: &str,
    record: &ControlRecord,
    retry_backoff: Duration,
) -> Result<(), ControlError> {
    let rec = Record {
        key: Some(record.key().as_bytes().to_vec()),
        value: Some(record.encode().into_bytes()),
        headers: BTreeMap::new(),
        timestamp: record.at,
    };
    produce_one(
        client,
        topic,
        0,
        &rec,
        &mut Backoff::new(retry_backoff),
        |e, _, _| debug!(message = "control record not written; retrying", topic, error = %describe(e)),
    )
    .await
    .map_err(|e| ControlError::Refused {
        key: record.key().to_string(),
        topic: topic.to_string(),
        reason: describe(&e),
    })
}

/// Reads the control topic from its first record to its high watermark into a table.
pub async fn read_table(client: &Client, topic: &str) -> Result<PauseTable, ControlError> {
    let err = |e: rskafka::client::error::Error| ControlError::Read {
        topic: topic.to_string(),
        reason: describe(&e),
    };
    let pc = client
        .partition_client(topic.to_string(), 0, UnknownTopicHandling::Error)
        .await
        .map_err(err)?;
    let mut offset = pc.get_offset(OffsetAt::Earliest).await.map_err(err)?;
    let high = pc.get_offset(OffsetAt::Latest).await.map_err(err)?;
    let mut table = PauseTable::default();
    while offset < high {
        let (records, _) = pc
            .fetch_records(offset, 1..10_000_000, 100)
            .await
            .map_err(err)?;
        if records.is_empty() {
            break;
        }
        offset = apply_records(&mut table, topic, offset, &records, |_, _| {});
    }
    Ok(table)
}

/// Applies the records at or after `offset` to `table` (an unreadable value is logged and passed
/// over: one bad record never stops the others), calling `changed` with each applied key and
/// record; returns the offset after the last.
pub(super) fn apply_records(
    table: &mut PauseTable,
    topic: &str,
    mut offset: i64,
    records: &[rskafka::record::RecordAndOffset],
    mut changed: impl FnMut(&str, Option<&ControlRecord>),
) -> i64 {
    for r in records {
        if r.offset < offset {
            continue;
        }
        offset = r.offset + 1;
        let Some(key) = r.record.key.as_deref() else {
            continue;
        };
        let key = String::from_utf8_lossy(key);
        match r.record.value.as_deref().map(ControlRecord::decode) {
            None => {
                table.apply(&key, None);
                changed(&key, None);
            }
            Some(Ok(record)) if record.key() == key => {
                table.apply(&key, Some(record));
                changed(&key, table.get(&key));
            }
            Some(Ok(_)) => {
                warn!(message = "skipping a control record whose key is not its job", topic, offset = r.offset, key = %key);
            }
            Some(Err(e)) => {
                warn!(message = "skipping an unreadable control record", topic, offset = r.offset, key = %key, error = %e);
            }
        }
    }
    offset
}
