//! The control topic itself: make sure it exists, append a record, read it whole into a
//! [`PauseTable`]. Transient failures are retried (the caller bounds the whole with a timeout).

use std::collections::BTreeMap;
use std::time::Duration;

use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
use rskafka::client::Client;
use rskafka::record::Record;
use tracing::{debug, warn};

use super::table::{PauseTable, MAX_PAUSED_JOBS};
use crate::kafka::admin::{ensure_topic_retrying, TopicAdmin, TopicError, TopicSpec};
use crate::kafka::{describe, produce_one, Backoff, Connection};
use crate::obs::terminal::escape_controls;
use crate::wire::control::{ControlRecord, ALL_KEY};
use crate::wire::job::excerpt;

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
    let mut ignored = Ignored::default();
    while offset < high {
        let (records, _) = pc
            .fetch_records(offset, 1..10_000_000, 100)
            .await
            .map_err(err)?;
        if records.is_empty() {
            break;
        }
        offset = apply_records(&mut table, topic, offset, &records, &mut ignored, |_, _| {});
    }
    Ok(table)
}

/// What a reader of the control topic ignored: records it could not read, records whose key is
/// not their job or not a job name, pauses longer than
/// [`MAX_PAUSE`](crate::wire::control::MAX_PAUSE), records past the table's
/// bound. The first few are logged with their offset, the rest only counted, so that a flood of
/// forged records cannot flood the log either.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// How many records were ignored.
    pub count: u64,
}

/// How many ignored records a reader logs one by one; it counts the rest.
const IGNORED_LOGGED: u64 = 10;

impl Ignored {
    fn record(&mut self, topic: &str, offset: i64, key: &str, why: &str) {
        self.count += 1;
        let key = escape_controls(&excerpt(key));
        if self.count <= IGNORED_LOGGED {
            warn!(message = "ignoring a control record", topic, offset, key = %key, reason = %escape_controls(why), records_ignored = self.count);
        }
        if self.count == IGNORED_LOGGED {
            warn!(
                message = "further ignored control records are counted, not logged",
                topic,
                records_ignored = self.count
            );
        }
    }
}

/// Applies the records at or after `offset` to `table`, calling `changed` with each applied key
/// and record; returns the offset after the last. A record that is unreadable, fails
/// [`ControlRecord::check`] or finds the table full ([`MAX_PAUSED_JOBS`]) is passed over and
/// counted in `ignored`: one bad record never stops the others.
pub(super) fn apply_records(
    table: &mut PauseTable,
    topic: &str,
    mut offset: i64,
    records: &[rskafka::record::RecordAndOffset],
    ignored: &mut Ignored,
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
        let record = match r.record.value.as_deref().map(ControlRecord::decode) {
            None => None,
            Some(Ok(record)) => match record.check(&key) {
                Ok(()) => Some(record),
                Err(why) => {
                    ignored.record(topic, r.offset, &key, &why);
                    continue;
                }
            },
            Some(Err(e)) => {
                ignored.record(topic, r.offset, &key, &format!("unreadable: {e}"));
                continue;
            }
        };
        if key != ALL_KEY && record.is_none() && table.get(&key).is_none() {
            // A tombstone of a key never held (one past the bound, say): nothing to forget.
            continue;
        }
        match table.admit(&key, record) {
            Ok(()) => changed(&key, table.get(&key)),
            Err(_) => ignored.record(
                topic,
                r.offset,
                &key,
                &format!("the pause table holds {MAX_PAUSED_JOBS} jobs already"),
            ),
        }
    }
    offset
}

#[cfg(test)]
mod tests {
    use rskafka::record::{Record, RecordAndOffset};

    use super::super::testing::{at, pause};
    use super::*;

    fn at_offset(offset: i64, key: &str, value: Option<Vec<u8>>) -> RecordAndOffset {
        RecordAndOffset {
            record: Record {
                key: Some(key.as_bytes().to_vec()),
                value,
                headers: BTreeMap::new(),
                timestamp: at(0, 0),
            },
            offset,
        }
    }

    #[test]
    fn forged_records_are_ignored_and_counted_and_the_good_ones_still_apply() {
        let good = pause(Some("nightly"), at(0, 0), None);
        let far = pause(
            Some("nightly"),
            at(0, 0),
            Some(at(0, 0) + chrono::Duration::days(400)),
        );
        let blank = pause(Some(" \t"), at(0, 0), None);
        let records = [
            at_offset(0, "nightly", Some(good.encode().into_bytes())),
            at_offset(1, "nightly", Some(far.encode().into_bytes())),
            at_offset(2, "other", Some(good.encode().into_bytes())),
            at_offset(3, " \t", Some(blank.encode().into_bytes())),
            at_offset(4, "x", Some(b"\x1b[2J not json".to_vec())),
            at_offset(5, "never-held", None),
        ];
        let mut table = PauseTable::default();
        let mut ignored = Ignored::default();
        let mut applied = Vec::new();
        let next = apply_records(
            &mut table,
            "g.control",
            0,
            &records,
            &mut ignored,
            |k, _| applied.push(k.to_string()),
        );
        assert_eq!(next, 6);
        assert_eq!(
            ignored.count, 4,
            "far until, wrong key, blank name, unreadable"
        );
        assert_eq!(applied, ["nightly"]);
        assert_eq!(
            table.get("nightly"),
            Some(&good),
            "the 400-day pause did not replace it"
        );
        assert_eq!(table.records().count(), 1);
    }
}
