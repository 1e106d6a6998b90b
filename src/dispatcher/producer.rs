//! The Kafka side of the dispatcher: a bounded pool of producer tasks (rskafka).
//!
//! ```text
//! tick loop ──► queue (--queue-capacity) ──► router ──► producer task i (one per partition group, bounded)
//!                                   (encode JobMessage v1,        │ batch per partition (--batch-size)
//!                                    murmur2 partition)           ▼ produce, acks = all; retry forever with backoff
//!                                                               Kafka
//! ```
//!
//! A partition is always served by the same producer task, so the records of one job (one key, one
//! partition) reach Kafka in slot order. A record counts as delivered only once the broker acked it.
//! Transient errors (broker down, leader moving) are retried with exponential backoff and jitter for
//! as long as the process runs, and the queue backpressures the tick loop meanwhile. Permanent errors
//! (record too large, authorization) are logged with the job and slot, counted, and skipped.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rskafka::client::error::{Error as KafkaError, ProtocolError};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use rskafka::BackoffConfig;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use super::cursor::LeaseRef;
use super::Dispatch;
use crate::clock::{Clock, Minute, SystemClock};
use crate::message::{encode, partition_for, OutgoingRecord};

/// `--compression`
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CompressionArg {
    /// No compression.
    #[default]
    None,
    /// gzip
    Gzip,
    /// LZ4
    Lz4,
    /// Zstandard
    Zstd,
}

impl From<CompressionArg> for Compression {
    fn from(c: CompressionArg) -> Compression {
        match c {
            CompressionArg::None => Compression::NoCompression,
            CompressionArg::Gzip => Compression::Gzip,
            CompressionArg::Lz4 => Compression::Lz4,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

/// How to reach Kafka and how to produce.
#[derive(Debug, Clone)]
pub struct ProducerConfig {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Topic for jobs without their own.
    pub default_topic: String,
    /// Partitions of topics we create.
    pub partitions: i32,
    /// Replication factor of topics we create.
    pub replication_factor: i16,
    /// Create missing topics.
    pub create_topics: bool,
    /// Producer tasks.
    pub producers: usize,
    /// Records per produce request at most.
    pub batch_size: usize,
    /// Record batch compression.
    pub compression: CompressionArg,
    /// First retry delay; doubles up to [`MAX_BACKOFF`].
    pub retry_backoff: Duration,
}

/// The longest wait between two retries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// rskafka retries internally too; cap it so a failure surfaces to our own logging retry loop.
const CLIENT_DEADLINE: Duration = Duration::from_secs(2);

/// Delivery counters shared with whoever reports on shutdown.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Acked by the broker.
    pub delivered: AtomicU64,
    /// Dropped after a permanent error.
    pub failed: AtomicU64,
}

#[derive(Debug, Default)]
struct SlotState {
    due: Option<u64>,
    acked: u64,
    failed: u64,
    max_skew_ms: i64,
    sum_skew_ms: i64,
}

/// Per-minute accounting: the tick loop says how many jobs a slot had, producers report acks, and
/// once every job of a slot is settled one `info` line reports it with its skew (ack − slot time).
pub struct SlotLedger {
    slots: Mutex<BTreeMap<Minute, SlotState>>,
    /// The dispatcher's clock: skew is measured on it (a drill clock runs faster than the wall).
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for SlotLedger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlotLedger").finish_non_exhaustive()
    }
}

impl Default for SlotLedger {
    fn default() -> Self {
        SlotLedger::new(Arc::new(SystemClock))
    }
}

impl SlotLedger {
    /// A ledger measuring skew on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> SlotLedger {
        SlotLedger {
            slots: Mutex::default(),
            clock,
        }
    }

    /// Acks of `acked` dispatches of `slot`, now.
    fn acked(&self, slot: Minute, acked: u64) {
        let skew = slot
            .start()
            .map_or(0, |s| (self.clock.now() - s).num_milliseconds());
        self.settle(slot, acked, 0, skew);
    }

    /// The tick loop dispatched `due` jobs for `slot`.
    pub fn expect(&self, slot: Minute, due: u64) {
        self.update(slot, |s| s.due = Some(due));
    }

    fn settle(&self, slot: Minute, acked: u64, failed: u64, skew_ms: i64) {
        self.update(slot, |s| {
            s.acked += acked;
            s.failed += failed;
            if acked > 0 {
                s.max_skew_ms = s.max_skew_ms.max(skew_ms);
                s.sum_skew_ms += skew_ms * acked as i64;
            }
        });
    }

    fn update(&self, slot: Minute, f: impl FnOnce(&mut SlotState)) {
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        let state = slots.entry(slot).or_default();
        f(state);
        if state.due == Some(state.acked + state.failed) {
            let s = slots.remove(&slot).unwrap_or_default();
            let mean = if s.acked > 0 {
                s.sum_skew_ms / s.acked as i64
            } else {
                0
            };
            if s.acked + s.failed == 0 {
                // An idle minute is not news.
                debug!(message = "slot dispatched", slot = %slot, jobs = 0);
                return;
            }
            info!(
                message = "slot dispatched",
                slot = %slot,
                jobs = s.acked,
                failed = s.failed,
                skew_max_ms = s.max_skew_ms,
                skew_mean_ms = mean,
            );
        }
    }
}

/// Is this error worth retrying?
fn is_permanent(e: &KafkaError) -> bool {
    matches!(
        e,
        KafkaError::ServerError {
            protocol_error: ProtocolError::MessageTooLarge
                | ProtocolError::RecordListTooLarge
                | ProtocolError::InvalidRecord
                | ProtocolError::TopicAuthorizationFailed
                | ProtocolError::ClusterAuthorizationFailed
                | ProtocolError::InvalidTopicException
                | ProtocolError::UnsupportedForMessageFormat,
            ..
        }
    )
}

/// Short, human form of an rskafka error (its `Display` includes whole request dumps).
pub(crate) fn describe(e: &KafkaError) -> String {
    match e {
        KafkaError::ServerError {
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

/// Exponential backoff with full jitter: `[d/2, d]` where `d` doubles from `base` up to the cap.
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    attempt: u32,
    seed: u64,
}

impl Backoff {
    /// Starts at `base`.
    pub fn new(base: Duration) -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(1)
            | 1;
        Backoff {
            base: base.max(Duration::from_millis(1)),
            attempt: 0,
            seed,
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let full = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(MAX_BACKOFF);
        self.attempt += 1;
        // xorshift: jitter needs no cryptographic randomness
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let frac = (self.seed % 1000) as f64 / 1000.0;
        full.mul_f64(0.5 + frac / 2.0)
    }

    /// Back to `base` after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Connects to the cluster, retrying (with logs) until it answers.
pub async fn connect(brokers: &[String], retry_backoff: Duration) -> Client {
    let mut backoff = Backoff::new(retry_backoff);
    loop {
        let built = ClientBuilder::new(brokers.to_vec())
            .backoff_config(BackoffConfig {
                deadline: Some(CLIENT_DEADLINE),
                max_backoff: Duration::from_secs(1),
                ..BackoffConfig::default()
            })
            .build()
            .await;
        match built {
            Ok(client) => {
                info!(message = "connected to Kafka", brokers = %brokers.join(","));
                return client;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                warn!(
                    message = "cannot reach Kafka; retrying",
                    brokers = %brokers.join(","),
                    error = %describe(&e),
                    retry_in = %humantime::format_duration(round_ms(delay)),
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

/// Makes sure `topic` exists (creating it when allowed) and returns its partition count, retrying
/// transient failures with logs.
pub async fn ensure_topic(client: &Client, config: &ProducerConfig, topic: &str) -> Option<i32> {
    let mut backoff = Backoff::new(config.retry_backoff);
    loop {
        let listed = client.list_topics().await;
        match listed {
            Ok(topics) => {
                if let Some(t) = topics.iter().find(|t| t.name == topic) {
                    if !t.partitions.is_empty() {
                        return Some(t.partitions.len() as i32);
                    }
                } else if !config.create_topics {
                    error!(
                        message = "topic does not exist and --no-create-topics is set; its jobs cannot be delivered until it is created",
                        topic,
                    );
                } else {
                    let created = match client.controller_client() {
                        Ok(c) => {
                            c.create_topic(
                                topic,
                                config.partitions,
                                config.replication_factor,
                                5_000,
                            )
                            .await
                        }
                        Err(e) => Err(e),
                    };
                    match created {
                        Ok(()) => {
                            info!(
                                message = "created topic",
                                topic,
                                partitions = config.partitions,
                                replication_factor = config.replication_factor
                            );
                            continue;
                        }
                        Err(KafkaError::ServerError {
                            protocol_error: ProtocolError::TopicAlreadyExists,
                            ..
                        }) => continue,
                        Err(e) if is_permanent(&e) => {
                            error!(message = "cannot create topic", topic, error = %describe(&e));
                            return None;
                        }
                        Err(e) => {
                            warn!(message = "creating topic failed; retrying", topic, error = %describe(&e));
                        }
                    }
                }
            }
            Err(e) => {
                warn!(message = "reading topic metadata failed; retrying", topic, error = %describe(&e));
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

struct Item {
    record: OutgoingRecord,
    partition: i32,
    slot: DateTime<Utc>,
    job_name: Arc<str>,
    lease: Option<LeaseRef>,
}

impl Item {
    /// The broker acked the record or refused it for good: either way its shard's cursor may pass.
    fn settle(&self) {
        if let Some(lease) = &self.lease {
            lease.0.settle(Minute::containing(self.slot), 1);
        }
    }
}

/// Runs the router and the producer pool until `rx` closes and everything queued is settled.
pub async fn run(
    config: ProducerConfig,
    mut rx: mpsc::Receiver<Dispatch>,
    stats: Arc<DeliveryStats>,
    ledger: Option<Arc<SlotLedger>>,
) {
    let client = Arc::new(connect(&config.brokers, config.retry_backoff).await);
    let producers = config.producers.max(1);
    let per_task = config.batch_size.max(1) * 2;
    let mut lanes = Vec::with_capacity(producers);
    let mut tasks = JoinSet::new();
    for lane in 0..producers {
        let (tx, lane_rx) = mpsc::channel::<Item>(per_task);
        lanes.push(tx);
        tasks.spawn(produce_lane(
            lane,
            Arc::clone(&client),
            config.clone(),
            lane_rx,
            Arc::clone(&stats),
            ledger.clone(),
        ));
    }

    let mut partitions: HashMap<String, Option<i32>> = HashMap::new();
    // The default topic up front: a missing permission or a bad name shows at start-up, and
    // consumers (`cronq tail`, workers) can attach before the first job is due.
    let default_partitions = ensure_topic(&client, &config, &config.default_topic).await;
    partitions.insert(config.default_topic.clone(), default_partitions);
    while let Some(dispatch) = rx.recv().await {
        let record = encode(&dispatch, &config.default_topic, Utc::now());
        let count = match partitions.get(&record.topic) {
            Some(c) => *c,
            None => {
                let c = ensure_topic(&client, &config, &record.topic).await;
                partitions.insert(record.topic.clone(), c);
                c
            }
        };
        let slot = dispatch.scheduled_at;
        let Some(count) = count else {
            error!(message = "dropping dispatch: its topic is unusable", topic = %record.topic, job = %dispatch.spec.name, slot = %slot);
            stats.failed.fetch_add(1, Ordering::Relaxed);
            if let Some(l) = &ledger {
                l.settle(Minute::containing(slot), 0, 1, 0);
            }
            if let Some(lease) = &dispatch.lease {
                lease.0.settle(Minute::containing(slot), 1);
            }
            continue;
        };
        let partition = partition_for(&record.key, count);
        let lane = lane_of(&record.topic, partition, producers);
        let item = Item {
            record,
            partition,
            slot,
            job_name: Arc::from(dispatch.spec.name.as_str()),
            lease: dispatch.lease,
        };
        if lanes[lane].send(item).await.is_err() {
            error!(message = "producer task ended unexpectedly", lane);
            break;
        }
    }
    drop(lanes);
    while tasks.join_next().await.is_some() {}
}

fn lane_of(topic: &str, partition: i32, lanes: usize) -> usize {
    let h = crate::message::murmur2(topic.as_bytes()) as u32 as usize;
    (h.wrapping_add(partition as usize)) % lanes
}

async fn produce_lane(
    lane: usize,
    client: Arc<Client>,
    config: ProducerConfig,
    mut rx: mpsc::Receiver<Item>,
    stats: Arc<DeliveryStats>,
    ledger: Option<Arc<SlotLedger>>,
) {
    let mut clients: HashMap<(String, i32), Arc<PartitionClient>> = HashMap::new();
    let mut batch: Vec<Item> = Vec::with_capacity(config.batch_size);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < config.batch_size.max(1) {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        // Group by partition, keeping each partition's order.
        let mut groups: BTreeMap<(String, i32), Vec<Item>> = BTreeMap::new();
        for item in batch.drain(..) {
            groups
                .entry((item.record.topic.clone(), item.partition))
                .or_default()
                .push(item);
        }
        for (key, items) in groups {
            send_group(
                lane,
                &client,
                &mut clients,
                &config,
                key,
                items,
                &stats,
                ledger.as_deref(),
            )
            .await;
        }
    }
}

fn to_record(item: &Item) -> Record {
    Record {
        key: Some(item.record.key.clone()),
        value: Some(item.record.value.clone()),
        headers: item.record.headers.clone(),
        timestamp: item.record.timestamp,
    }
}

#[allow(clippy::too_many_arguments)]
async fn send_group(
    lane: usize,
    client: &Client,
    clients: &mut HashMap<(String, i32), Arc<PartitionClient>>,
    config: &ProducerConfig,
    key: (String, i32),
    items: Vec<Item>,
    stats: &DeliveryStats,
    ledger: Option<&SlotLedger>,
) {
    let mut backoff = Backoff::new(config.retry_backoff);
    let mut pending = items;
    let mut attempts = 0u64;
    while !pending.is_empty() {
        let pc = match clients.get(&key) {
            Some(pc) => Arc::clone(pc),
            None => match client
                .partition_client(key.0.clone(), key.1, UnknownTopicHandling::Retry)
                .await
            {
                Ok(pc) => {
                    let pc = Arc::new(pc);
                    clients.insert(key.clone(), Arc::clone(&pc));
                    pc
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    attempts += 1;
                    warn!(message = "no leader for partition; retrying", lane, topic = %key.0, partition = key.1, brokers = %config.brokers.join(","), error = %describe(&e), pending = pending.len(), attempt = attempts, retry_in = %humantime::format_duration(round_ms(delay)));
                    tokio::time::sleep(delay).await;
                    continue;
                }
            },
        };
        let records: Vec<Record> = pending.iter().map(to_record).collect();
        match pc.produce(records, config.compression.into()).await {
            Ok(_offsets) => {
                stats
                    .delivered
                    .fetch_add(pending.len() as u64, Ordering::Relaxed);
                for item in &pending {
                    item.settle();
                }
                if attempts > 0 {
                    info!(message = "delivered after retrying", lane, topic = %key.0, partition = key.1, records = pending.len(), attempts);
                }
                if let Some(ledger) = ledger {
                    let mut per_slot: BTreeMap<Minute, u64> = BTreeMap::new();
                    for item in &pending {
                        *per_slot.entry(Minute::containing(item.slot)).or_default() += 1;
                    }
                    for (slot, n) in per_slot {
                        ledger.acked(slot, n);
                    }
                }
                pending.clear();
            }
            Err(e) if is_permanent(&e) => {
                if pending.len() > 1 {
                    // One bad record must not sink its neighbours: send them one by one.
                    let rest = std::mem::take(&mut pending);
                    for item in rest {
                        Box::pin(send_group(
                            lane,
                            client,
                            clients,
                            config,
                            key.clone(),
                            vec![item],
                            stats,
                            ledger,
                        ))
                        .await;
                    }
                    return;
                }
                for item in pending.drain(..) {
                    error!(message = "dispatch dropped: the broker rejected it permanently", job = %item.job_name, slot = %item.slot.to_rfc3339(), topic = %key.0, partition = key.1, error = %describe(&e));
                    stats.failed.fetch_add(1, Ordering::Relaxed);
                    item.settle();
                    if let Some(ledger) = ledger {
                        ledger.settle(Minute::containing(item.slot), 0, 1, 0);
                    }
                }
            }
            Err(e) => {
                // The partition's leader may have moved or the connection died: forget the client.
                clients.remove(&key);
                let delay = backoff.next_delay();
                attempts += 1;
                warn!(message = "produce failed; retrying", lane, topic = %key.0, partition = key.1, brokers = %config.brokers.join(","), error = %describe(&e), pending = pending.len(), attempt = attempts, retry_in = %humantime::format_duration(round_ms(delay)));
                tokio::time::sleep(delay).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100));
        let mut previous_full = Duration::ZERO;
        for attempt in 0..12u32 {
            let d = b.next_delay();
            let full = Duration::from_millis(100)
                .saturating_mul(1 << attempt)
                .min(MAX_BACKOFF);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} not in [{:?}, {full:?}]",
                full / 2
            );
            assert!(full >= previous_full);
            previous_full = full;
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
