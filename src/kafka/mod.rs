//! The one Kafka layer of cronq, for both clients: where the connection flags become client
//! settings, how a client connects and retries, how topics are created, and how an outage is
//! reported.
//!
//! ```text
//!  --brokers, --security-protocol, --sasl-*, --ssl-*  (cli::KafkaArgs)
//!        │ Connection::resolve (files read, combinations checked: errors at start)
//!        ▼
//!    Connection ──► rskafka ClientBuilder (TLS: rustls, SASL) ──► dispatcher producers, state topic, tail, status
//!        │      └─► rdkafka ClientConfig (security.protocol, sasl.*, ssl.*) + KafkaContext
//!        │                                      ──► group membership, worker consumer/producer, topic admin
//!        └─ Health: one reachability tracker shared by every client of the connection (health.rs)
//! ```
//!
//! - [`retry`](mod@retry): the one [`Backoff`] and the one retry loop ([`retry()`], [`retry_cancellable`],
//!   [`retry_forever`]).
//! - [`classify`]: which errors are worth another attempt, per client ([`Classify`]).
//! - [`rdkafka`](mod@rdkafka): the rdkafka client settings and [`KafkaContext`].
//! - [`admin`]: topic creation and partition counts.
//! - [`security`]: the security flags.

pub mod admin;
pub mod classify;
pub mod health;
pub mod rdkafka;
pub mod retry;
pub mod security;

use std::sync::Arc;
use std::time::Duration;

use rskafka::client::error::Error as RsError;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use rskafka::BackoffConfig;
use tracing::{debug, info};

pub use self::rdkafka::{JobConsumer, KafkaContext};
pub use classify::{is_authorization, is_connectivity, rdkafka_code_class, Classify, ErrorClass};
pub use health::Health;
pub use retry::{retry, retry_cancellable, retry_forever, round_ms, Backoff, Stopped, MAX_BACKOFF};
pub use security::{Security, SecurityArgs, SecurityError};

/// rskafka retries internally too; cap it so a failure surfaces to our own retry loop (and to
/// the [`Health`] tracker) within seconds.
const CLIENT_DEADLINE: Duration = Duration::from_secs(2);

/// Where Kafka is and how to talk to it, checked; cheap to clone (the clones share one
/// [`Health`]).
#[derive(Debug, Clone)]
pub struct Connection {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// TLS and SASL (shared: it holds certificates and keys).
    pub security: Arc<Security>,
    health: Arc<Health>,
}

impl Connection {
    /// A connection to `brokers` with `security`.
    pub fn new(brokers: Vec<String>, security: Security) -> Connection {
        let health = Arc::new(Health::new(brokers.join(",")));
        Connection {
            brokers,
            security: Arc::new(security),
            health,
        }
    }

    /// Plain TCP, no authentication (tests, benches).
    pub fn plaintext(brokers: Vec<String>) -> Connection {
        Connection::new(brokers, Security::default())
    }

    /// Checks the security flags and reads their files.
    pub fn resolve(brokers: Vec<String>, args: &SecurityArgs) -> Result<Connection, SecurityError> {
        Ok(Connection::new(brokers, Security::resolve(args)?))
    }

    /// `host:port,host:port`
    pub fn brokers_text(&self) -> String {
        self.brokers.join(",")
    }

    /// The reachability tracker every client of this connection reports to.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// An rskafka client builder with these settings.
    pub fn rskafka(&self) -> ClientBuilder {
        let mut builder = ClientBuilder::new(self.brokers.clone()).backoff_config(BackoffConfig {
            deadline: Some(CLIENT_DEADLINE),
            max_backoff: Duration::from_secs(1),
            ..BackoffConfig::default()
        });
        // Checked in `Security::resolve`: an error here cannot happen for a resolved connection.
        if let Ok(Some(tls)) = self.security.rustls_config() {
            builder = builder.tls_config(tls);
        }
        if let Some(sasl) = self.security.rskafka_sasl() {
            builder = builder.sasl_config(sasl);
        }
        builder
    }

    /// Connects with rskafka once.
    pub async fn connect_once(&self) -> Result<Client, RsError> {
        self.rskafka().build().await
    }

    /// Connects with rskafka, retrying (reported through [`Health`]) until the cluster answers.
    pub async fn connect(&self, retry_backoff: Duration) -> Client {
        let client = retry_forever(
            retry_backoff,
            || self.connect_once(),
            |e, attempt, delay| {
                self.health.failed("connect", "", &describe(e));
                debug!(message = "cannot reach Kafka; retrying", brokers = %self.brokers_text(), attempt, retry_in = %humantime::format_duration(round_ms(delay)));
            },
        )
        .await;
        self.health.succeeded();
        info!(message = "connected to Kafka", brokers = %self.brokers_text(), security_protocol = self.security.protocol.as_str());
        client
    }
}

/// Drops an rdkafka client on a thread of its own. Closing a client joins its threads, and
/// librdkafka's threads wait on deadlines of the real-time clock: one waiting when the wall clock
/// steps back waits that much longer (confluentinc/librdkafka#2145; two hours for a step of two
/// hours), and neither a tokio thread nor the process's exit may wait for that. Should the thread
/// not start, the client is closed here after all.
pub fn close_apart<T: Send + 'static>(client: T) {
    let _ = std::thread::Builder::new()
        .name("cronq-kafka-close".into())
        .spawn(move || drop(client));
}

/// Short, human form of an rskafka error (its `Display` includes whole request dumps).
pub fn describe(e: &RsError) -> String {
    match e {
        RsError::ServerError {
            protocol_error,
            error_message,
            ..
        } => match error_message {
            Some(m) => format!("broker error {protocol_error}: {m}"),
            None => format!("broker error {protocol_error}"),
        },
        other => other.to_string(),
    }
}

/// Appends one `record` (uncompressed) to `topic`/`partition`, retrying transient failures with
/// `backoff` (each reported to `failed`, as in [`retry()`]); a permanent failure is returned.
pub async fn produce_one(
    client: &Client,
    topic: &str,
    partition: i32,
    record: &Record,
    backoff: &mut Backoff,
    failed: impl FnMut(&RsError, u32, Duration),
) -> Result<(), RsError> {
    let attempt = || async {
        let pc = client
            .partition_client(topic.to_string(), partition, UnknownTopicHandling::Retry)
            .await?;
        pc.produce(vec![record.clone()], Compression::NoCompression)
            .await
            .map(|_offsets| ())
    };
    retry(backoff, attempt, failed).await
}
