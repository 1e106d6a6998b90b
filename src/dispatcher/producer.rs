//! The Kafka side of the dispatcher: the router and one sender task per partition (rskafka).
//!
//! ```text
//! tick loop ──► queue (--queue-capacity) ──► router ──► partition task (topic, p) ──► Kafka
//!                           (encode JobMessage v1,  │     batch (--batch-size), at most --producers
//!                            murmur2 partition)     │     requests in flight; acks = all; retry forever
//!                                                   └─► topic waiting room: a topic that is missing or
//!                                                       refused waits here, retried in the background
//! ```
//!
//! A partition is always served by the same task, so the records of one job (one key, one
//! partition) reach Kafka in slot order. A record counts as delivered only once the broker acked it.
//!
//! Failure stays small: a topic that cannot be used (missing with `--no-create-topics`, refused by
//! the broker) parks its dispatches and is retried in the background, reported once a minute, while
//! every other topic flows; a partition whose produce keeps failing retries on its own task while
//! the others flow. Parked and failing dispatches are not settled, so their shard's cursor stays
//! before their slot: nothing is lost, and a takeover re-sends them. Only when one topic or
//! partition has [`BACKLOG_LIMIT`] records waiting does the router wait for it (backpressure, as in a
//! full outage) rather than hold more in memory.
//!
//! Permanent errors of a record (too large, authorization) are logged with the job and slot,
//! counted, and skipped. A task that panics ends [`run`] with [`ProducerError::Task`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::Client;
use rskafka::record::Record;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use super::cursor::LeaseRef;
use super::observe::{Observer, ProduceErrorKind};
use super::Dispatch;
use crate::clock::{Clock, Minute, SystemClock};
use crate::kafka::admin::{ensure_topic, TopicAdmin, TopicError, TopicSpec};
use crate::kafka::{describe, is_connectivity, is_permanent, round_ms, Backoff, Connection};
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
    /// Where Kafka is and how to talk to it.
    pub kafka: Connection,
    /// Topic for jobs without their own.
    pub default_topic: String,
    /// Partitions of topics we create.
    pub partitions: i32,
    /// Replication factor of topics we create.
    pub replication_factor: i16,
    /// Create missing topics.
    pub create_topics: bool,
    /// Produce requests in flight at most (over all partitions).
    pub producers: usize,
    /// Records per produce request at most.
    pub batch_size: usize,
    /// Record batch compression.
    pub compression: CompressionArg,
    /// First retry delay; doubles up to [`crate::kafka::MAX_BACKOFF`].
    pub retry_backoff: Duration,
}

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
    /// Gets the skew of every ack and each settled minute (the `--http` metrics and page).
    observer: Option<Arc<Observer>>,
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
            observer: None,
        }
    }

    /// Reports skews and settled minutes to `observer`; the producer pool counts its deliveries
    /// and errors there too.
    pub fn with_observer(mut self, observer: Arc<Observer>) -> SlotLedger {
        self.observer = Some(observer);
        self
    }

    /// Acks of `acked` dispatches of `slot`, now.
    fn acked(&self, slot: Minute, acked: u64) {
        let skew = slot
            .start()
            .map_or(0, |s| (self.clock.now() - s).num_milliseconds());
        if let Some(observer) = &self.observer {
            observer.acked(Duration::from_millis(skew.max(0) as u64), acked);
        }
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
            if let Some(observer) = &self.observer {
                observer.minute_settled(slot, s.acked, s.failed, s.max_skew_ms, mean);
            }
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

/// Records one topic or one partition may have waiting before the router waits for it.
pub const BACKLOG_LIMIT: usize = 100_000;

/// How often a topic or partition that keeps failing is reported.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// The longest wait between two attempts to make an unusable topic usable.
const TOPIC_RETRY_MAX: Duration = Duration::from_secs(10);

/// Why the producer pool stopped before its input closed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProducerError {
    /// A task of the pool died. Its dispatches stay unacked, so their shards' cursors stay before
    /// them and the next owner re-sends them.
    #[error("producer task for {what} died: {reason}")]
    Task {
        /// The topic or partition the task served.
        what: String,
        /// The panic message, or how it ended.
        reason: String,
    },
    /// The topic admin client cannot be created (a bad setting).
    #[error("cannot create the Kafka topic admin client: {0}")]
    Admin(String),
}

struct Item {
    /// The encoded record until its first produce attempt takes it (no copy); a retry encodes the
    /// job again from `spec`.
    record: OutgoingRecord,
    spec: Arc<crate::schedule::JobSpec>,
    slot: DateTime<Utc>,
    job_name: Arc<str>,
    lease: Option<LeaseRef>,
}

/// What every task of the pool shares.
struct Shared {
    client: Arc<Client>,
    config: ProducerConfig,
    stats: Arc<DeliveryStats>,
    ledger: Option<Arc<SlotLedger>>,
    /// `--producers`: produce requests in flight at once.
    in_flight: Semaphore,
    /// Dispatches accepted and not settled (shown in the outage reports).
    backlog: Arc<AtomicU64>,
}

impl Shared {
    fn observer(&self) -> Option<&Arc<Observer>> {
        self.ledger.as_ref()?.observer.as_ref()
    }

    /// The broker acked these records.
    fn delivered(&self, items: &[Item]) {
        self.stats
            .delivered
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        self.backlog
            .fetch_sub(items.len() as u64, Ordering::Relaxed);
        let mut per_slot: BTreeMap<Minute, u64> = BTreeMap::new();
        for item in items {
            let minute = Minute::containing(item.slot);
            if let Some(lease) = &item.lease {
                lease.0.settle(minute, 1);
            }
            *per_slot.entry(minute).or_default() += 1;
        }
        if let Some(ledger) = &self.ledger {
            for (slot, n) in per_slot {
                ledger.acked(slot, n);
            }
        }
    }

    /// The broker refused this record for good: it is dropped, and its shard's cursor may pass.
    fn refused(&self, item: &Item) {
        if let Some(observer) = self.observer() {
            observer.produce_error(&item.record.topic, ProduceErrorKind::Rejected, 1);
        }
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        self.backlog.fetch_sub(1, Ordering::Relaxed);
        let minute = Minute::containing(item.slot);
        if let Some(lease) = &item.lease {
            lease.0.settle(minute, 1);
        }
        if let Some(ledger) = &self.ledger {
            ledger.settle(minute, 0, 1, 0);
        }
    }
}

enum TopicEntry {
    Ready(i32),
    /// Not usable yet: its dispatches wait here while a background task retries the topic.
    Waiting {
        parked: VecDeque<Item>,
        /// `parked.len()`, for the background task's reports.
        count: Arc<AtomicU64>,
    },
}

/// The router's state.
struct Router {
    shared: Arc<Shared>,
    admin: Option<Arc<TopicAdmin>>,
    topics: HashMap<String, TopicEntry>,
    partitions: HashMap<(String, i32), mpsc::Sender<Item>>,
    tasks: JoinSet<()>,
    /// What each task serves, for the error when one dies.
    task_names: HashMap<tokio::task::Id, String>,
    resolvers: HashMap<String, tokio::task::AbortHandle>,
    ready_tx: mpsc::UnboundedSender<(String, i32)>,
}

/// Runs the router and the partition tasks until `rx` closes and everything queued is settled.
/// Returns an error as soon as one of its tasks dies; dropping `rx` then tells the tick loop.
pub async fn run(
    config: ProducerConfig,
    mut rx: mpsc::Receiver<Dispatch>,
    stats: Arc<DeliveryStats>,
    ledger: Option<Arc<SlotLedger>>,
) -> Result<(), ProducerError> {
    let client = Arc::new(config.kafka.connect(config.retry_backoff).await);
    let admin = if config.create_topics {
        Some(Arc::new(
            TopicAdmin::new(&config.kafka).map_err(|e| ProducerError::Admin(e.to_string()))?,
        ))
    } else {
        None
    };
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let backlog = Arc::clone(config.kafka.health().backlog());
    let mut router = Router {
        shared: Arc::new(Shared {
            client,
            in_flight: Semaphore::new(config.producers.max(1)),
            config,
            stats,
            ledger,
            backlog,
        }),
        admin,
        topics: HashMap::new(),
        partitions: HashMap::new(),
        tasks: JoinSet::new(),
        task_names: HashMap::new(),
        resolvers: HashMap::new(),
        ready_tx,
    };
    // The default topic up front: a missing permission or a bad name shows at start-up, and
    // consumers (`cronq tail`, workers) can attach before the first job is due.
    let default_topic = router.shared.config.default_topic.clone();
    router.wait_for_topic(&default_topic);
    let mut open = true;
    loop {
        let parked = router
            .topics
            .values()
            .any(|t| matches!(t, TopicEntry::Waiting { parked, .. } if !parked.is_empty()));
        if !open && !parked {
            break;
        }
        tokio::select! {
            dispatch = rx.recv(), if open => match dispatch {
                Some(d) => router.route(d, &mut ready_rx).await?,
                None => open = false,
            },
            Some((topic, count)) = ready_rx.recv() => router.topic_ready(topic, count).await?,
            Some(joined) = router.tasks.join_next_with_id(), if !router.tasks.is_empty() => {
                router.check(joined)?;
            }
        }
    }
    drop(rx);
    for (_, resolver) in router.resolvers.drain() {
        resolver.abort();
    }
    router.partitions.clear();
    while let Some(joined) = router.tasks.join_next_with_id().await {
        router.check(joined)?;
    }
    Ok(())
}

fn panic_text(e: tokio::task::JoinError) -> String {
    match e.try_into_panic() {
        Ok(p) => p
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panicked".into()),
        Err(e) => e.to_string(),
    }
}

/// A task of the pool ended: fine when it returned or was cancelled, [`ProducerError::Task`] with
/// what it served and its panic message when it panicked.
fn task_ended(
    names: &mut HashMap<tokio::task::Id, String>,
    joined: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
) -> Result<(), ProducerError> {
    match joined {
        Ok((id, ())) => {
            names.remove(&id);
            Ok(())
        }
        Err(e) if e.is_cancelled() => Ok(()),
        Err(e) => {
            let what = names
                .remove(&e.id())
                .unwrap_or_else(|| "a producer task".into());
            let reason = panic_text(e);
            error!(message = "a producer task died; stopping the producer pool", task = %what, reason = %reason);
            Err(ProducerError::Task { what, reason })
        }
    }
}

impl Router {
    /// A task ended: fine for a topic task that found its topic, an error for a panic.
    fn check(
        &mut self,
        joined: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
    ) -> Result<(), ProducerError> {
        task_ended(&mut self.task_names, joined)
    }

    /// Starts the background task that makes `topic` usable; its dispatches wait meanwhile.
    fn wait_for_topic(&mut self, topic: &str) {
        let count = Arc::new(AtomicU64::new(0));
        self.topics.insert(
            topic.to_string(),
            TopicEntry::Waiting {
                parked: VecDeque::new(),
                count: Arc::clone(&count),
            },
        );
        let handle = self.tasks.spawn(resolve_topic(
            Arc::clone(&self.shared),
            self.admin.clone(),
            topic.to_string(),
            count,
            self.ready_tx.clone(),
        ));
        self.task_names
            .insert(handle.id(), format!("topic {topic}"));
        self.resolvers.insert(topic.to_string(), handle);
    }

    async fn route(
        &mut self,
        dispatch: Dispatch,
        ready_rx: &mut mpsc::UnboundedReceiver<(String, i32)>,
    ) -> Result<(), ProducerError> {
        let shared = &self.shared;
        let record = encode(
            &dispatch.spec,
            dispatch.scheduled_at,
            &shared.config.default_topic,
            Utc::now(),
        );
        shared.backlog.fetch_add(1, Ordering::Relaxed);
        let item = Item {
            slot: dispatch.scheduled_at,
            job_name: Arc::from(dispatch.spec.name.as_str()),
            lease: dispatch.lease,
            record,
            spec: dispatch.spec,
        };
        let topic = item.record.topic.clone();
        if !self.topics.contains_key(&topic) {
            self.wait_for_topic(&topic);
        }
        match self.topics.get_mut(&topic) {
            Some(TopicEntry::Ready(count)) => {
                let count = *count;
                self.send(item, count).await
            }
            Some(TopicEntry::Waiting { parked, count }) => {
                parked.push_back(item);
                count.store(parked.len() as u64, Ordering::Relaxed);
                if parked.len() >= BACKLOG_LIMIT {
                    self.wait_until_ready(&topic, ready_rx).await?;
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Backpressure: the topic's waiting room is full, so nothing moves until it is usable.
    async fn wait_until_ready(
        &mut self,
        topic: &str,
        ready_rx: &mut mpsc::UnboundedReceiver<(String, i32)>,
    ) -> Result<(), ProducerError> {
        warn!(message = "a topic that cannot be used has too many dispatches waiting; holding every dispatch until it can be used", topic, waiting = BACKLOG_LIMIT);
        while matches!(self.topics.get(topic), Some(TopicEntry::Waiting { .. })) {
            tokio::select! {
                Some((t, count)) = ready_rx.recv() => self.topic_ready(t, count).await?,
                Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => self.check(joined)?,
            }
        }
        Ok(())
    }

    async fn topic_ready(&mut self, topic: String, count: i32) -> Result<(), ProducerError> {
        self.resolvers.remove(&topic);
        let previous = self.topics.insert(topic, TopicEntry::Ready(count));
        if let Some(TopicEntry::Waiting { parked, .. }) = previous {
            for item in parked {
                self.send(item, count).await?;
            }
        }
        Ok(())
    }

    async fn send(&mut self, item: Item, partitions: i32) -> Result<(), ProducerError> {
        let partition = partition_for(&item.record.key, partitions);
        let key = (item.record.topic.clone(), partition);
        let tx = match self.partitions.get(&key) {
            Some(tx) => tx.clone(),
            None => {
                let (tx, rx) = mpsc::channel(BACKLOG_LIMIT);
                let handle = self.tasks.spawn(partition_task(
                    Arc::clone(&self.shared),
                    key.0.clone(),
                    partition,
                    rx,
                ));
                self.task_names
                    .insert(handle.id(), format!("partition {}/{}", key.0, partition));
                self.partitions.insert(key.clone(), tx.clone());
                tx
            }
        };
        let item = match tx.try_send(item) {
            Ok(()) => return Ok(()),
            Err(mpsc::error::TrySendError::Full(item)) => {
                warn!(message = "a partition that keeps failing has too many dispatches waiting; holding every dispatch until it drains", topic = %key.0, partition, waiting = BACKLOG_LIMIT);
                item
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(self.died(&key));
            }
        };
        if tx.send(item).await.is_err() {
            return Err(self.died(&key));
        }
        Ok(())
    }

    fn died(&self, key: &(String, i32)) -> ProducerError {
        ProducerError::Task {
            what: format!("partition {}/{}", key.0, key.1),
            reason: "it ended while dispatches were waiting for it".into(),
        }
    }
}

/// Makes `topic` usable: its partition count, creating it when allowed. Retries in the background
/// for as long as it takes, reporting what is wrong once a minute; the router's other topics flow
/// meanwhile.
async fn resolve_topic(
    shared: Arc<Shared>,
    admin: Option<Arc<TopicAdmin>>,
    topic: String,
    waiting: Arc<AtomicU64>,
    ready: mpsc::UnboundedSender<(String, i32)>,
) {
    let config = &shared.config;
    let spec = TopicSpec {
        name: &topic,
        partitions: config.partitions,
        replication_factor: config.replication_factor,
        configs: &[],
    };
    let mut backoff = Backoff::new(config.retry_backoff).with_max(TOPIC_RETRY_MAX);
    let mut failing_since: Option<Instant> = None;
    let mut reported: Option<Instant> = None;
    loop {
        match ensure_topic(&shared.client, admin.as_deref(), &spec).await {
            Ok(count) => {
                shared.config.kafka.health().succeeded();
                if let Some(since) = failing_since {
                    info!(message = "topic usable again; sending its waiting dispatches", topic = %topic, partitions = count, waiting = waiting.load(Ordering::Relaxed), unusable_for = %humantime::format_duration(round_ms(since.elapsed())));
                }
                let _ = ready.send((topic, count));
                return;
            }
            Err(e) => {
                if let Some(observer) = shared.observer() {
                    observer.produce_error(&topic, ProduceErrorKind::Topic, 1);
                }
                let now = Instant::now();
                let since = *failing_since.get_or_insert(now);
                if let TopicError::Unreachable { reason, .. } = &e {
                    // The broker's reachability is reported once for every client (Health).
                    shared.config.kafka.health().failed("producer", "", reason);
                } else if reported.is_none_or(|r| now.duration_since(r) >= REPORT_EVERY) {
                    reported = Some(now);
                    error!(
                        message = "topic cannot be used; its jobs wait and it is retried in the background (other topics are not affected)",
                        topic = %topic,
                        error = %e,
                        waiting = waiting.load(Ordering::Relaxed),
                        unusable_for = %humantime::format_duration(Duration::from_secs(now.duration_since(since).as_secs())),
                    );
                } else {
                    debug!(message = "topic still cannot be used", topic = %topic, error = %e);
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// The record of `item` for a produce attempt: the one encoded by the router, moved out on the
/// first attempt (copying every record of every batch cost as much as encoding it), or the job
/// encoded again for a retry.
fn take_record(item: &mut Item, default_topic: &str) -> Record {
    let r = if item.record.value.is_empty() {
        encode(&item.spec, item.slot, default_topic, Utc::now())
    } else {
        OutgoingRecord {
            topic: String::new(),
            key: std::mem::take(&mut item.record.key),
            value: std::mem::take(&mut item.record.value),
            headers: std::mem::take(&mut item.record.headers),
            timestamp: item.record.timestamp,
        }
    };
    Record {
        key: Some(r.key),
        value: Some(r.value),
        headers: r.headers,
        timestamp: r.timestamp,
    }
}

/// A partition's failures in a row, for its once-a-minute report.
struct Failing {
    since: Instant,
    reported: Option<Instant>,
    attempts: u64,
}

/// Sends the records of one partition, in order, until its channel closes.
async fn partition_task(
    shared: Arc<Shared>,
    topic: String,
    partition: i32,
    mut rx: mpsc::Receiver<Item>,
) {
    let batch_size = shared.config.batch_size.max(1);
    let mut client: Option<Arc<PartitionClient>> = None;
    let mut backoff = Backoff::new(shared.config.retry_backoff);
    let mut failing: Option<Failing> = None;
    let mut batch: Vec<Item> = Vec::with_capacity(batch_size);
    // Resolved once: the hot path adds per batch, never looks a label up per record.
    let dispatched = shared.observer().map(|o| o.dispatched_to(&topic));
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < batch_size {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        while !batch.is_empty() {
            let result = {
                // Never closed: the pool holds the semaphore for its whole life.
                let _permit = shared.in_flight.acquire().await;
                produce(&shared, &topic, partition, &mut client, &mut batch).await
            };
            match result {
                Ok(()) => {
                    shared.config.kafka.health().succeeded();
                    shared.delivered(&batch);
                    if let Some(counter) = &dispatched {
                        counter.add(batch.len() as u64);
                    }
                    batch.clear();
                    backoff.reset();
                    if let Some(f) = failing.take() {
                        if f.reported.is_some() {
                            info!(message = "partition delivering again", topic = %topic, partition, attempts = f.attempts, failing_for = %humantime::format_duration(round_ms(f.since.elapsed())));
                        }
                    }
                }
                Err(e) if is_permanent(&e) => {
                    if batch.len() > 1 {
                        // One bad record must not sink its neighbours: send them one by one.
                        let rest = std::mem::take(&mut batch);
                        for item in rest {
                            send_alone(&shared, &topic, partition, &mut client, item).await;
                        }
                    } else {
                        for item in batch.drain(..) {
                            error!(message = "dispatch dropped: the broker rejected it permanently", job = %item.job_name, slot = %item.slot.to_rfc3339(), topic = %topic, partition, error = %describe(&e));
                            shared.refused(&item);
                        }
                    }
                }
                Err(e) => {
                    // The leader may have moved or the connection died: forget the client.
                    client = None;
                    if let Some(observer) = shared.observer() {
                        let kind = if is_connectivity(&e) {
                            ProduceErrorKind::Unreachable
                        } else {
                            ProduceErrorKind::Retriable
                        };
                        observer.produce_error(&topic, kind, 1);
                    }
                    let now = Instant::now();
                    let f = failing.get_or_insert(Failing {
                        since: now,
                        reported: None,
                        attempts: 0,
                    });
                    f.attempts += 1;
                    let delay = backoff.next_delay();
                    let waiting = batch.len() + rx.len();
                    if is_connectivity(&e) {
                        shared
                            .config
                            .kafka
                            .health()
                            .failed("producer", "", &describe(&e));
                        debug!(message = "produce failed; retrying", topic = %topic, partition, error = %describe(&e), waiting, attempt = f.attempts, retry_in = %humantime::format_duration(round_ms(delay)));
                    } else if f
                        .reported
                        .is_none_or(|r| now.duration_since(r) >= REPORT_EVERY)
                    {
                        f.reported = Some(now);
                        warn!(message = "partition failing; retrying in the background (other partitions are not affected)", topic = %topic, partition, error = %describe(&e), waiting, attempts = f.attempts, failing_for = %humantime::format_duration(Duration::from_secs(f.since.elapsed().as_secs())));
                    } else {
                        debug!(message = "produce failed; retrying", topic = %topic, partition, error = %describe(&e), waiting, attempt = f.attempts);
                    }
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

/// One produce request for `batch`.
async fn produce(
    shared: &Shared,
    topic: &str,
    partition: i32,
    client: &mut Option<Arc<PartitionClient>>,
    batch: &mut [Item],
) -> Result<(), rskafka::client::error::Error> {
    let pc = match client {
        Some(pc) => Arc::clone(pc),
        None => {
            let pc = Arc::new(
                shared
                    .client
                    .partition_client(topic.to_string(), partition, UnknownTopicHandling::Retry)
                    .await?,
            );
            *client = Some(Arc::clone(&pc));
            pc
        }
    };
    let default_topic = &shared.config.default_topic;
    let records: Vec<Record> = batch
        .iter_mut()
        .map(|item| take_record(item, default_topic))
        .collect();
    pc.produce(records, shared.config.compression.into())
        .await
        .map(|_offsets| ())
}

/// A record of a batch the broker refused for good, sent on its own: delivered, or dropped when it
/// is the bad one; transient failures are retried.
async fn send_alone(
    shared: &Shared,
    topic: &str,
    partition: i32,
    client: &mut Option<Arc<PartitionClient>>,
    item: Item,
) {
    let mut backoff = Backoff::new(shared.config.retry_backoff);
    let mut one = [item];
    loop {
        let result = {
            let _permit = shared.in_flight.acquire().await;
            produce(shared, topic, partition, client, &mut one).await
        };
        match result {
            Ok(()) => {
                shared.delivered(&one);
                if let Some(observer) = shared.observer() {
                    observer.dispatched_to(topic).add(1);
                }
                return;
            }
            Err(e) if is_permanent(&e) => {
                let item = &one[0];
                error!(message = "dispatch dropped: the broker rejected it permanently", job = %item.job_name, slot = %item.slot.to_rfc3339(), topic, partition, error = %describe(&e));
                shared.refused(item);
                return;
            }
            Err(e) => {
                *client = None;
                debug!(message = "produce failed; retrying", topic, partition, error = %describe(&e));
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicked_task_is_an_error_naming_what_it_served_and_why() {
        let mut tasks: JoinSet<()> = JoinSet::new();
        let mut names = HashMap::new();
        let fine = tasks.spawn(async {});
        names.insert(fine.id(), "topic jobs".to_string());
        let dies = tasks.spawn(async { panic!("lane broke") });
        names.insert(dies.id(), "partition jobs/2".to_string());
        let cancelled = tasks.spawn(std::future::pending());
        cancelled.abort();
        let mut errors = Vec::new();
        while let Some(joined) = tasks.join_next_with_id().await {
            if let Err(e) = task_ended(&mut names, joined) {
                errors.push(e.to_string());
            }
        }
        assert_eq!(
            errors,
            ["producer task for partition jobs/2 died: lane broke"]
        );
        assert!(names.is_empty());
    }
}
