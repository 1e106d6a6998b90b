//! The operator's command: `cronq pause`/`resume` read what is paused, decide the record, write it;
//! `cronq status` reads the pauses in force.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::table::{PauseTable, PausedView};
use super::topic::{ensure_control_topic, read_table, write, ControlError};
use crate::kafka::admin::TopicError;
use crate::kafka::{describe, Connection};
use crate::wire::control::ControlRecord;

/// What an operator command wants written, decided from the table as read.
pub type Decide<'a> = Box<dyn FnOnce(&PauseTable) -> Result<ControlRecord, String> + Send + 'a>;

/// Why `cronq pause`/`resume` wrote nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// Kafka or the topic failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The table says the command makes no sense (resuming what is not paused).
    #[error("{0}")]
    Refused(String),
}

/// `cronq pause`/`resume`: reads the control topic `topic` (created when missing if `create`
/// gives the replication factor), lets `decide` make the record from what is paused, writes it.
/// Retries while Kafka is unreachable: the caller bounds the whole with a timeout.
pub async fn command(
    kafka: &Connection,
    topic: &str,
    create: Option<i16>,
    decide: Decide<'_>,
) -> Result<ControlRecord, CommandError> {
    let backoff = Duration::from_millis(100);
    let client = kafka.connect(backoff).await;
    let exists = ensure_control_topic(&client, kafka, topic, create, backoff).await?;
    let table = if exists {
        read_table(&client, topic).await?
    } else {
        PauseTable::default()
    };
    let record = decide(&table).map_err(CommandError::Refused)?;
    if !exists {
        return Err(ControlError::Topic(TopicError::Missing {
            topic: topic.to_string(),
        })
        .into());
    }
    write(&client, topic, &record, backoff).await?;
    Ok(record)
}

/// The pauses in force at `now` in group topic `topic`; `None` when the topic does not exist.
pub async fn read_paused(
    kafka: &Connection,
    topic: &str,
    now: DateTime<Utc>,
) -> Result<Option<PausedView>, String> {
    let client = kafka.connect_once().await.map_err(|e| {
        format!(
            "cannot reach Kafka at {}: {}",
            kafka.brokers_text(),
            describe(&e)
        )
    })?;
    match crate::kafka::admin::partition_count(&client, topic).await {
        Ok(Some(_)) => {}
        Ok(None) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let table = read_table(&client, topic)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(table.view(now)))
}
