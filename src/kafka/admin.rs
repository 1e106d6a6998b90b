//! Topic administration, for every topic cronq creates: job topics (dispatcher), the state topic
//! (dispatcher group, compacted), the results and DLQ topics (worker). Creation goes through
//! rdkafka's admin client (it can set topic configs); partition counts are read with rskafka.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::types::RDKafkaErrorCode;
use rskafka::client::Client;
use tracing::info;

use super::classify::{rdkafka_code_class, Classify, ErrorClass};
use super::{describe, retry, Backoff, Connection, KafkaContext};

/// A topic to create when missing.
#[derive(Debug, Clone)]
pub struct TopicSpec<'a> {
    /// Its name.
    pub name: &'a str,
    /// Partitions.
    pub partitions: i32,
    /// Replication factor (`--replication-factor`).
    pub replication_factor: i16,
    /// Topic configs, e.g. `cleanup.policy=compact`.
    pub configs: &'a [(&'a str, &'a str)],
}

/// Why a topic cannot be used (yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The topic does not exist and cronq may not create it.
    #[error("topic {topic:?} does not exist and --no-create-topics is set: create it, or let cronq create it")]
    Missing {
        /// The topic.
        topic: String,
    },
    /// The broker refused to create it (bad replication factor, policy, rights, name).
    #[error("the broker refused to create topic {topic:?}: {reason}")]
    Refused {
        /// The topic.
        topic: String,
        /// The broker's answer.
        reason: String,
    },
    /// Kafka could not be asked.
    #[error("cannot reach Kafka about topic {topic:?}: {reason}")]
    Unreachable {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
}

impl TopicError {
    /// Kafka was not reachable (as opposed to an answer about the topic).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, TopicError::Unreachable { .. })
    }
}

/// Creates topics (rdkafka admin client). The client exists only while a creation runs: an idle
/// librdkafka client keeps threads that wake several times a second (its queue poller, its broker
/// and main threads), a cost a long-running dispatcher would pay for the few topics it creates.
pub struct TopicAdmin {
    config: rdkafka::ClientConfig,
    context: KafkaContext,
}

/// An admin client, closed apart ([`close_apart`](super::close_apart)) when dropped.
struct Closing(Option<AdminClient<KafkaContext>>);

impl Drop for Closing {
    fn drop(&mut self) {
        if let Some(admin) = self.0.take() {
            super::close_apart(admin);
        }
    }
}

impl std::fmt::Debug for TopicAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicAdmin").finish_non_exhaustive()
    }
}

impl TopicAdmin {
    /// An admin on `connection`; its settings are checked now (a bad one is an error here), the
    /// client is made by each [`TopicAdmin::create`].
    pub fn new(connection: &Connection) -> Result<TopicAdmin, rdkafka::error::KafkaError> {
        let config = connection.rdkafka();
        config.create_native_config()?;
        Ok(TopicAdmin {
            config,
            context: connection.context("topic admin"),
        })
    }

    /// Creates each topic of `specs` that does not exist yet. `Ok` lists the topics created now
    /// (an existing topic is fine); the first refusal is an `Err`.
    pub async fn create(&self, specs: &[TopicSpec<'_>]) -> Result<Vec<String>, TopicError> {
        let topics: Vec<NewTopic<'_>> = specs
            .iter()
            .map(|s| {
                s.configs.iter().fold(
                    NewTopic::new(
                        s.name,
                        s.partitions,
                        TopicReplication::Fixed(i32::from(s.replication_factor)),
                    ),
                    |t, (k, v)| t.set(k, v),
                )
            })
            .collect();
        // A broker that is not there fails the request in 5 s (librdkafka's default is 60 s), so the
        // wait is reported as such rather than kept silent.
        let options = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(10)))
            .request_timeout(Some(Duration::from_secs(5)));
        let first = specs.first().map_or("", |s| s.name).to_string();
        let admin: AdminClient<KafkaContext> = self
            .config
            .create_with_context(self.context.clone())
            .map_err(|e| TopicError::Unreachable {
                topic: first.clone(),
                reason: format!("cannot make the admin client: {e}"),
            })?;
        let mut closing = Closing(None);
        let client = &*closing.0.insert(admin);
        let results =
            client
                .create_topics(&topics, &options)
                .await
                .map_err(|e| TopicError::Unreachable {
                    topic: first,
                    reason: e.to_string(),
                })?;
        let mut created = Vec::new();
        for r in results {
            match r {
                Ok(topic) => {
                    if let Some(s) = specs.iter().find(|s| s.name == topic) {
                        info!(
                            message = "created topic",
                            topic = %topic,
                            partitions = s.partitions,
                            replication_factor = s.replication_factor
                        );
                    }
                    created.push(topic);
                }
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                // A creation answer not known to be transient is the broker's "no".
                Err((topic, code)) if rdkafka_code_class(code) == Some(ErrorClass::Transient) => {
                    return Err(TopicError::Unreachable {
                        topic,
                        reason: code.to_string(),
                    })
                }
                Err((topic, code)) => {
                    return Err(TopicError::Refused {
                        topic,
                        reason: code.to_string(),
                    })
                }
            }
        }
        Ok(created)
    }
}

/// The partition count of `topic`, `None` when it does not exist (or has no partitions yet).
pub async fn partition_count(client: &Client, topic: &str) -> Result<Option<i32>, TopicError> {
    let topics = client
        .list_topics()
        .await
        .map_err(|e| TopicError::Unreachable {
            topic: topic.to_string(),
            reason: describe(&e),
        })?;
    Ok(topics
        .iter()
        .find(|t| t.name == topic && !t.partitions.is_empty())
        .map(|t| t.partitions.len() as i32))
}

/// One attempt to make `spec` usable: its partition count when it exists, else (when `admin` is
/// given, i.e. creating is allowed) create it and read the count again.
pub async fn ensure_topic(
    client: &Client,
    admin: Option<&TopicAdmin>,
    spec: &TopicSpec<'_>,
) -> Result<i32, TopicError> {
    if let Some(n) = partition_count(client, spec.name).await? {
        return Ok(n);
    }
    let Some(admin) = admin else {
        return Err(TopicError::Missing {
            topic: spec.name.to_string(),
        });
    };
    admin.create(std::slice::from_ref(spec)).await?;
    // A created topic can take a moment to show in the metadata.
    for _ in 0..20 {
        if let Some(n) = partition_count(client, spec.name).await? {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(TopicError::Unreachable {
        topic: spec.name.to_string(),
        reason: "created, but not in the metadata yet".into(),
    })
}

/// [`ensure_topic`], retried with `backoff` while Kafka cannot be reached (each failure reported
/// to `failed`, as in [`retry()`](super::retry())); a missing topic cronq may not create, or the
/// broker's refusal, is returned at once.
pub async fn ensure_topic_retrying(
    client: &Client,
    admin: Option<&TopicAdmin>,
    spec: &TopicSpec<'_>,
    backoff: &mut Backoff,
    failed: impl FnMut(&TopicError, u32, Duration),
) -> Result<i32, TopicError> {
    retry(backoff, || ensure_topic(client, admin, spec), failed).await
}

/// Topic administration: only an unreachable Kafka is worth asking again; a missing topic cronq
/// may not create, or the broker's refusal, stays until someone acts.
impl Classify for TopicError {
    fn class(&self) -> ErrorClass {
        if self.is_unreachable() {
            ErrorClass::Transient
        } else {
            ErrorClass::Permanent
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unreachable_kafka_makes_a_topic_error_transient() {
        let unreachable = TopicError::Unreachable {
            topic: "jobs".into(),
            reason: "no answer".into(),
        };
        let refused = TopicError::Refused {
            topic: "jobs".into(),
            reason: "InvalidReplicationFactor".into(),
        };
        let missing = TopicError::Missing {
            topic: "jobs".into(),
        };
        assert_eq!(unreachable.class(), ErrorClass::Transient);
        assert!(refused.is_permanent());
        assert!(missing.is_permanent());
    }
}
