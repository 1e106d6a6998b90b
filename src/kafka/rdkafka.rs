//! The rdkafka side of a [`Connection`]: the settings of every rdkafka client cronq makes (the
//! worker's consumer, report producer and lag watcher, the dispatcher group's member, the topic
//! admin), and the context that routes librdkafka's log and errors to the connection's
//! [`Health`]. Each builder returns a `ClientConfig`; the caller creates the client with its
//! context (a consumer's context also holds its rebalance handling).
//!
//! ```text
//!  Connection ──► rdkafka(): bootstrap.servers + security ──┬─► report_producer ──► worker producer
//!                                                           ├─► job_consumer ─────► worker consumer
//!                                                           ├─► lag_watcher ──────► worker lag client
//!                                                           ├─► group_member ─────► dispatcher group
//!                                                           └─► (as is) ──────────► topic admin
//! ```

use std::sync::Arc;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::ConsumerContext;
use rdkafka::ClientConfig;
use tracing::debug;

use super::{Connection, Health};

/// What the worker's job consumer needs besides the connection.
#[derive(Debug, Clone, Copy)]
pub struct JobConsumer<'a> {
    /// `--group`
    pub group: &'a str,
    /// `--worker-id`
    pub client_id: &'a str,
    /// A group with no committed offset starts at the earliest record (else the latest).
    pub from_earliest: bool,
    /// `--session-timeout`
    pub session_timeout: Duration,
    /// `--shutdown-grace`
    pub shutdown_grace: Duration,
}

impl Connection {
    /// An rdkafka configuration with `bootstrap.servers` and the security settings; the caller
    /// adds what its client needs.
    pub fn rdkafka(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", self.brokers_text());
        self.security.apply_to_rdkafka(&mut config);
        // librdkafka's own log goes to KafkaContext::log (debug); keep it from logging connection
        // chatter we never show.
        config.set_log_level(RDKafkaLogLevel::Info);
        config
    }

    /// An rdkafka context reporting to this connection's [`Health`] as `client`.
    pub fn context(&self, client: &'static str) -> KafkaContext {
        KafkaContext {
            client,
            health: Arc::clone(self.health()),
        }
    }

    /// The worker's producer of results and dead letters, as `client_id`.
    pub fn report_producer(&self, client_id: &str) -> ClientConfig {
        let mut config = self.rdkafka();
        config
            .set("client.id", client_id)
            .set("acks", "all")
            // A finished job's executor is free at once; only its offset waits for the result's ack.
            // A few milliseconds of linger batch the results of a busy pool into few produce requests.
            .set("linger.ms", "5")
            // Reports are keyed by jobName and land on the partition the Java client and the dispatcher
            // pick (murmur2); librdkafka's default would hash with CRC32.
            .set("partitioner", "murmur2_random");
        config
    }

    /// The worker's group consumer of job records: manual commits and offset stores.
    pub fn job_consumer(&self, settings: &JobConsumer<'_>) -> ClientConfig {
        let session_ms = settings.session_timeout.as_millis().max(1000);
        let mut config = self.rdkafka();
        config
            .set("group.id", settings.group)
            .set("client.id", settings.client_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                if settings.from_earliest {
                    "earliest"
                } else {
                    "latest"
                },
            )
            .set("session.timeout.ms", session_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (session_ms / 3).min(3000).to_string(),
            )
            // How long the broker may hold a fetch when it has nothing: also the pickup delay after the
            // fetch was paused and resumed. Jobs are latency-sensitive; an idle poll 10 times a second
            // per broker is cheap.
            .set("fetch.wait.max.ms", "100")
            // A job topic created after the worker started is seen within 10 s, not librdkafka's 5 min.
            .set("topic.metadata.refresh.interval.ms", "10000")
            // The loop polls all the time except while draining at shutdown: leave room for the grace.
            .set(
                "max.poll.interval.ms",
                (settings.shutdown_grace.as_millis() + 60_000)
                    .max(300_000)
                    .to_string(),
            );
        config
    }

    /// The worker's watermark reader (a client of its own, off the group consumer's connection),
    /// as `{worker}-lag`.
    pub fn lag_watcher(&self, worker: &str) -> ClientConfig {
        let mut config = self.rdkafka();
        config.set("client.id", format!("{worker}-lag"));
        config
    }

    /// A group member's follower of `topic`, the schedule topic: its partitions are assigned by
    /// hand, from the offsets the member read to (librdkafka wants a `group.id` for that; the
    /// consumer never joins it nor commits). A compacted-away offset reads from the earliest record
    /// kept; little is queued ahead, since it follows a tail.
    pub fn schedule_follower(&self, topic: &str) -> ClientConfig {
        let mut config = self.rdkafka();
        config
            .set("group.id", format!("{topic}.follower"))
            .set("client.id", "cronq-schedule-follower")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "500")
            .set("queued.max.messages.kbytes", "8192");
        config
    }

    /// A dispatcher group member's consumer of the state topic: it only keeps membership (range
    /// assignment: shard = partition), never commits. Its `client.id` is the member's name, so the
    /// group's member list names the members as their cursor records do.
    pub fn group_member(
        &self,
        group: &str,
        member: &str,
        session_timeout: Duration,
    ) -> ClientConfig {
        let session_ms = session_timeout.as_millis().max(1) as u64;
        let mut config = self.rdkafka();
        config
            .set("group.id", group)
            .set("client.id", member)
            .set("session.timeout.ms", session_ms.to_string())
            .set("heartbeat.interval.ms", (session_ms / 3).max(1).to_string())
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "latest")
            .set("partition.assignment.strategy", "range");
        config
    }
}

/// The rdkafka context of cronq's clients: librdkafka's log lines go to debug, its errors (a
/// broker unreachable, a failed TLS handshake or login) to the connection's [`Health`], which
/// logs the state changes.
#[derive(Debug, Clone)]
pub struct KafkaContext {
    client: &'static str,
    health: Arc<Health>,
}

impl KafkaContext {
    /// The tracker this context reports to.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// Routes one librdkafka log line (for contexts of other types that wrap this one).
    pub fn log_line(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        debug!(
            message = "librdkafka",
            client = self.client,
            level = ?level,
            facility = fac,
            text = message
        );
    }

    /// Routes one librdkafka error (for contexts of other types that wrap this one).
    pub fn error_event(&self, error: &rdkafka::error::KafkaError, reason: &str) {
        self.health
            .failed(self.client, "", &format!("{error}: {reason}"));
    }
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.log_line(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.error_event(&error, reason);
    }
}

impl ConsumerContext for KafkaContext {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worker_consumer_commits_by_hand_and_leaves_the_grace_room_to_drain() {
        let kafka = Connection::plaintext(vec!["127.0.0.1:9092".into()]);
        let config = kafka.job_consumer(&JobConsumer {
            group: "workers",
            client_id: "w1",
            from_earliest: true,
            session_timeout: Duration::from_secs(45),
            shutdown_grace: Duration::from_secs(600),
        });
        for (key, value) in [
            ("group.id", "workers"),
            ("client.id", "w1"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("session.timeout.ms", "45000"),
            ("heartbeat.interval.ms", "3000"),
            ("max.poll.interval.ms", "660000"),
        ] {
            assert_eq!(config.get(key), Some(value), "{key}");
        }
    }

    #[test]
    fn the_group_member_and_the_report_producer_keep_their_own_settings() {
        let kafka = Connection::plaintext(vec!["127.0.0.1:9092".into()]);
        let member = kafka.group_member("cronq", "host-7", Duration::from_millis(6000));
        assert_eq!(member.get("heartbeat.interval.ms"), Some("2000"));
        assert_eq!(member.get("client.id"), Some("host-7"));
        assert_eq!(member.get("partition.assignment.strategy"), Some("range"));
        let producer = kafka.report_producer("w1");
        assert_eq!(producer.get("acks"), Some("all"));
        assert_eq!(producer.get("partitioner"), Some("murmur2_random"));
        assert_eq!(kafka.lag_watcher("w1").get("client.id"), Some("w1-lag"));
    }
}
