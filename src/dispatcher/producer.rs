//! The Kafka side of the dispatcher: the router and one sender task per partition (rskafka).
//!
//! ```text
//! tick loop ──► queue (--queue-capacity) ──► router ──► partition task (topic, p) ──► Kafka
//!                            (topic, murmur2     │       batch (--batch-size), encode JobMessage v1,
//!                             partition)         │       at most --producers requests in flight;
//!                                                │       acks = all; retry forever
//!                                                └─► topic waiting room: a topic that is missing or
//!                                                    refused waits here, retried in the background
//! ```
//!
//! The router only picks the lane: what travels is the dispatch itself (the job's shared spec,
//! its slot, its lease). A partition task encodes its batch at each produce attempt, so a record
//! is made, sent and freed on one thread, and a retry needs no copy kept aside.
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
//! The broker's authorization refusals (TOPIC_ or CLUSTER_AUTHORIZATION_FAILED) are an outage of
//! the partition, not a verdict on its records: rights are configuration, and an ACL being fixed or
//! an authorizer still loading after a broker restart must not lose runs. The partition's
//! dispatches wait and are retried like any other failure; the refusal is logged when it starts
//! and when it ends, counted (`kind="unauthorized"`) and listed on the status page.
//!
//! Permanent errors of a record (too large, invalid) are logged with the job and slot, counted,
//! and skipped. A task that panics ends [`run`] with [`ProducerError::Task`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rskafka::client::error::Error as RsError;
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::Client;
use rskafka::record::Record;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, error, info, warn};

use super::cursor::LeaseRef;
use super::observe::{Observer, ProduceErrorKind};
use super::scheduler::prefetch;
use super::Dispatch;
use crate::clock::{Clock, Minute, SystemClock};
use crate::kafka::admin::{ensure_topic, TopicAdmin, TopicError, TopicSpec};
use crate::kafka::{
    describe, is_authorization, is_connectivity, retry, retry_forever, round_ms, Backoff, Classify,
    Connection, ErrorClass,
};
use crate::schedule::record::{topic_of, JobRecord};
use crate::wire::{partition_for, SlotTexts};

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
    observer: Arc<Observer>,
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
            observer: Observer::disabled(),
        }
    }

    /// Reports skews and settled minutes to `observer`; the producer pool counts its deliveries
    /// and errors there too.
    pub fn with_observer(mut self, observer: Arc<Observer>) -> SlotLedger {
        self.observer = observer;
        self
    }

    /// Acks of `acked` dispatches of `slot`, now.
    fn acked(&self, slot: Minute, acked: u64) {
        let skew = slot
            .start()
            .map_or(0, |s| (self.clock.now() - s).num_milliseconds());
        self.observer
            .acked(Duration::from_millis(skew.max(0) as u64), acked);
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
            self.observer
                .minute_settled(slot, s.acked, s.failed, s.max_skew_ms, mean);
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
    fn observer(&self) -> &Observer {
        self.ledger
            .as_ref()
            .map_or(Observer::off(), |l| &l.observer)
    }

    /// The broker acked these records.
    fn delivered(&self, batch: &[Dispatch]) {
        self.stats
            .delivered
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        self.backlog
            .fetch_sub(batch.len() as u64, Ordering::Relaxed);
        self.settle(batch, true);
    }

    /// The broker refused this record for good: it is dropped, and its shard's cursor may pass.
    fn refused(&self, topic: &str, dispatch: &Dispatch) {
        self.observer()
            .produce_error(topic, ProduceErrorKind::Rejected, 1);
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        self.backlog.fetch_sub(1, Ordering::Relaxed);
        self.settle(std::slice::from_ref(dispatch), false);
    }

    /// Settles `batch` (acked, or dropped for good) with the leases of its shards and the slot
    /// ledger: one call per lease and minute of the batch, not one per dispatch.
    fn settle(&self, batch: &[Dispatch], acked: bool) {
        // A batch holds few distinct leases and minutes: the shards and minutes it spans.
        let mut counts: Vec<(Option<&LeaseRef>, Minute, u64)> = Vec::new();
        for d in batch {
            let (lease, minute) = (d.lease.as_ref(), Minute::containing(d.scheduled_at));
            match counts
                .iter_mut()
                .find(|(l, m, _)| *m == minute && *l == lease)
            {
                Some((_, _, n)) => *n += 1,
                None => counts.push((lease, minute, 1)),
            }
        }
        let mut per_slot: Vec<(Minute, u64)> = Vec::new();
        for &(lease, minute, n) in &counts {
            if let Some(lease) = lease {
                lease.0.settle(minute, n);
            }
            match per_slot.iter_mut().find(|(m, _)| *m == minute) {
                Some((_, total)) => *total += n,
                None => per_slot.push((minute, n)),
            }
        }
        if let Some(ledger) = &self.ledger {
            for (slot, n) in per_slot {
                if acked {
                    ledger.acked(slot, n);
                } else {
                    ledger.settle(slot, 0, n, 0);
                }
            }
        }
    }
}

/// A usable topic: one lane (channel and task) per partition, started at its first record.
struct Lanes {
    topic: Arc<str>,
    senders: Vec<Option<mpsc::Sender<Dispatch>>>,
}

enum TopicEntry {
    Ready(Lanes),
    /// Not usable yet: its dispatches wait here while a background task retries the topic.
    Waiting {
        parked: VecDeque<Dispatch>,
        /// `parked.len()`, for the background task's reports.
        count: Arc<AtomicU64>,
    },
}

/// The router's state.
struct Router {
    shared: Arc<Shared>,
    admin: Option<Arc<TopicAdmin>>,
    topics: HashMap<Arc<str>, TopicEntry>,
    tasks: JoinSet<()>,
    /// What each task serves, for the error when one dies.
    task_names: HashMap<tokio::task::Id, String>,
    resolvers: HashMap<Arc<str>, tokio::task::AbortHandle>,
    ready_tx: mpsc::UnboundedSender<(Arc<str>, i32)>,
}

/// Dispatches the router takes from its queue in one go before it looks at its other inputs
/// (topics that became usable, tasks that ended).
const ROUTE_CHUNK: usize = 1024;

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
        tasks: JoinSet::new(),
        task_names: HashMap::new(),
        resolvers: HashMap::new(),
        ready_tx,
    };
    // The default topic up front: a missing permission or a bad name shows at start-up, and
    // consumers (`cronq tail`, workers) can attach before the first job is due.
    let default_topic = Arc::from(router.shared.config.default_topic.as_str());
    router.wait_for_topic(default_topic);
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
                Some(d) => {
                    router.route(d, &mut ready_rx).await?;
                    // A minute's dispatches come in a burst: take what is queued without a
                    // select per dispatch.
                    for _ in 1..ROUTE_CHUNK {
                        let Ok(d) = rx.try_recv() else { break };
                        router.route(d, &mut ready_rx).await?;
                    }
                }
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
    // Closes every lane: each partition task sends what it holds, then ends.
    router.topics.clear();
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
    fn wait_for_topic(&mut self, topic: Arc<str>) {
        let count = Arc::new(AtomicU64::new(0));
        self.topics.insert(
            Arc::clone(&topic),
            TopicEntry::Waiting {
                parked: VecDeque::new(),
                count: Arc::clone(&count),
            },
        );
        let handle = self.tasks.spawn(resolve_topic(
            Arc::clone(&self.shared),
            self.admin.clone(),
            Arc::clone(&topic),
            count,
            self.ready_tx.clone(),
        ));
        self.task_names
            .insert(handle.id(), format!("topic {topic}"));
        self.resolvers.insert(topic, handle);
    }

    /// Sends `dispatch` to its partition's lane, or parks it while its topic is not usable.
    async fn route(
        &mut self,
        dispatch: Dispatch,
        ready_rx: &mut mpsc::UnboundedReceiver<(Arc<str>, i32)>,
    ) -> Result<(), ProducerError> {
        self.shared.backlog.fetch_add(1, Ordering::Relaxed);
        let Some(dispatch) = self.send(dispatch).await? else {
            return Ok(());
        };
        // A topic seen for the first time, or one that is not usable yet.
        let topic = topic_of(&dispatch.spec, &self.shared.config.default_topic);
        let topic: Arc<str> = match self.topics.get_key_value(topic) {
            Some((known, _)) => Arc::clone(known),
            None => {
                let topic = Arc::from(topic);
                self.wait_for_topic(Arc::clone(&topic));
                topic
            }
        };
        let Some(TopicEntry::Waiting { parked, count }) = self.topics.get_mut(&topic) else {
            return Ok(());
        };
        parked.push_back(dispatch);
        count.store(parked.len() as u64, Ordering::Relaxed);
        if parked.len() >= BACKLOG_LIMIT {
            self.wait_until_ready(&topic, ready_rx).await?;
        }
        Ok(())
    }

    /// Backpressure: the topic's waiting room is full, so nothing moves until it is usable.
    async fn wait_until_ready(
        &mut self,
        topic: &str,
        ready_rx: &mut mpsc::UnboundedReceiver<(Arc<str>, i32)>,
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

    async fn topic_ready(&mut self, topic: Arc<str>, count: i32) -> Result<(), ProducerError> {
        self.resolvers.remove(&topic);
        let lanes = Lanes {
            topic: Arc::clone(&topic),
            senders: vec![None; count.max(1) as usize],
        };
        let previous = self.topics.insert(topic, TopicEntry::Ready(lanes));
        if let Some(TopicEntry::Waiting { parked, .. }) = previous {
            for dispatch in parked {
                let back = self.send(dispatch).await?;
                debug_assert!(back.is_none(), "the topic is usable now");
            }
        }
        Ok(())
    }

    /// Hands `dispatch`, of a usable topic, to its partition's lane (murmur2 of the job's name),
    /// starting the lane at its first record. Waits only when the lane is full. A dispatch of a
    /// topic that is not usable (yet) comes back: one look-up of the topic per dispatch.
    async fn send(&mut self, dispatch: Dispatch) -> Result<Option<Dispatch>, ProducerError> {
        let topic = topic_of(&dispatch.spec, &self.shared.config.default_topic);
        let Some(TopicEntry::Ready(lanes)) = self.topics.get_mut(topic) else {
            return Ok(Some(dispatch));
        };
        let partitions = lanes.senders.len() as i32;
        let partition = partition_for(dispatch.spec.name.as_bytes(), partitions);
        let tx = match &mut lanes.senders[partition as usize] {
            Some(tx) => tx,
            empty => {
                let (tx, rx) = mpsc::channel(BACKLOG_LIMIT);
                let handle = self.tasks.spawn(partition_task(
                    Arc::clone(&self.shared),
                    Arc::clone(&lanes.topic),
                    partition,
                    rx,
                ));
                self.task_names.insert(
                    handle.id(),
                    format!("partition {}/{}", lanes.topic, partition),
                );
                empty.insert(tx)
            }
        };
        let dispatch = match tx.try_send(dispatch) {
            Ok(()) => return Ok(None),
            Err(mpsc::error::TrySendError::Full(dispatch)) => {
                warn!(message = "a partition that keeps failing has too many dispatches waiting; holding every dispatch until it drains", topic = %lanes.topic, partition, waiting = BACKLOG_LIMIT);
                dispatch
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                return Err(died(&lanes.topic, partition));
            }
        };
        let tx = tx.clone();
        let topic = Arc::clone(&lanes.topic);
        if tx.send(dispatch).await.is_err() {
            return Err(died(&topic, partition));
        }
        Ok(None)
    }
}

/// A partition's lane closed while dispatches were waiting for it.
fn died(topic: &str, partition: i32) -> ProducerError {
    ProducerError::Task {
        what: format!("partition {topic}/{partition}"),
        reason: "it ended while dispatches were waiting for it".into(),
    }
}

/// Makes `topic` usable: its partition count, creating it when allowed. Retries in the background
/// for as long as it takes, reporting what is wrong once a minute; the router's other topics flow
/// meanwhile.
async fn resolve_topic(
    shared: Arc<Shared>,
    admin: Option<Arc<TopicAdmin>>,
    topic: Arc<str>,
    waiting: Arc<AtomicU64>,
    ready: mpsc::UnboundedSender<(Arc<str>, i32)>,
) {
    let config = &shared.config;
    let spec = TopicSpec {
        name: &topic,
        partitions: config.partitions,
        replication_factor: config.replication_factor,
        configs: &[],
    };
    let backoff = Backoff::new(config.retry_backoff).with_max(TOPIC_RETRY_MAX);
    let mut failing_since: Option<Instant> = None;
    let mut reported: Option<Instant> = None;
    // Every error is retried, a refusal too: someone may fix the topic or the rights meanwhile.
    let count = retry_forever(
        backoff,
        || ensure_topic(&shared.client, admin.as_deref(), &spec),
        |e: &TopicError, _, _| {
            shared
                .observer()
                .produce_error(&topic, ProduceErrorKind::Topic, 1);
            let now = Instant::now();
            let since = *failing_since.get_or_insert(now);
            if let TopicError::Unreachable { reason, .. } = e {
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
        },
    )
    .await;
    shared.config.kafka.health().succeeded();
    if let Some(since) = failing_since {
        info!(message = "topic usable again; sending its waiting dispatches", topic = %topic, partitions = count, waiting = waiting.load(Ordering::Relaxed), unusable_for = %humantime::format_duration(round_ms(since.elapsed())));
    }
    let _ = ready.send((topic, count));
}

/// The Kafka record of `dispatch` for a produce attempt at `now`, its slot written as `slot`.
fn record(dispatch: &Dispatch, slot: &str, now: DateTime<Utc>) -> Record {
    let r = JobRecord::encode(&dispatch.spec, slot, now);
    Record {
        key: Some(r.key),
        value: Some(r.value),
        headers: r.headers,
        timestamp: r.timestamp,
    }
}

/// A produce error as the pool classifies it: an authorization refusal is retried (the partition
/// waits for its rights), every other error as [`Classify`] has it.
struct ProduceFailure(RsError);

impl Classify for ProduceFailure {
    fn class(&self) -> ErrorClass {
        if is_authorization(&self.0) {
            ErrorClass::Transient
        } else {
            self.0.class()
        }
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
    topic: Arc<str>,
    partition: i32,
    mut rx: mpsc::Receiver<Dispatch>,
) {
    let batch_size = shared.config.batch_size.max(1);
    let lane = Mutex::new(Lane::default());
    let mut backoff = Backoff::new(shared.config.retry_backoff);
    let mut failing: Option<Failing> = None;
    // Since when the broker refuses this partition's writes for want of rights.
    let mut refused: Option<Instant> = None;
    let mut batch: Vec<Dispatch> = Vec::with_capacity(batch_size);
    // Resolved once: the hot path adds per batch, never looks a label up per record.
    let dispatched = shared.observer().dispatched_to(&topic);
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < batch_size {
            match rx.try_recv() {
                Ok(dispatch) => batch.push(dispatch),
                Err(_) => break,
            }
        }
        let attempt = || async {
            // Never closed: the pool holds the semaphore for its whole life.
            let _permit = shared.in_flight.acquire().await;
            produce(&shared, &topic, partition, &lane, &batch)
                .await
                .map_err(ProduceFailure)
        };
        let failed = |e: &ProduceFailure, _, delay: Duration| {
            let e = &e.0;
            let waiting = batch.len() + rx.len();
            if is_authorization(e) {
                shared
                    .observer()
                    .produce_error(&topic, ProduceErrorKind::Unauthorized, 1);
                if refused.is_none() {
                    refused = Some(Instant::now());
                    shared
                        .observer()
                        .write_refused(&topic, partition, Some(&describe(e)));
                    error!(message = "writes refused: not authorized to write this topic partition; its dispatches wait and are retried until the rights are back (other topics and partitions are not affected)", topic = %topic, partition, error = %describe(e), waiting);
                } else {
                    debug!(message = "writes still refused; retrying", topic = %topic, partition, error = %describe(e), waiting, retry_in = %humantime::format_duration(round_ms(delay)));
                }
                return;
            }
            if let Some(since) = refused.take() {
                shared.observer().write_refused(&topic, partition, None);
                info!(message = "writes no longer refused", topic = %topic, partition, error = %describe(e), refused_for = %humantime::format_duration(round_ms(since.elapsed())));
            }
            let kind = if is_connectivity(e) {
                ProduceErrorKind::Unreachable
            } else {
                ProduceErrorKind::Retriable
            };
            shared.observer().produce_error(&topic, kind, 1);
            let now = Instant::now();
            let f = failing.get_or_insert(Failing {
                since: now,
                reported: None,
                attempts: 0,
            });
            f.attempts += 1;
            if is_connectivity(e) {
                shared
                    .config
                    .kafka
                    .health()
                    .failed("producer", "", &describe(e));
                debug!(message = "produce failed; retrying", topic = %topic, partition, error = %describe(e), waiting, attempt = f.attempts, retry_in = %humantime::format_duration(round_ms(delay)));
            } else if f
                .reported
                .is_none_or(|r| now.duration_since(r) >= REPORT_EVERY)
            {
                f.reported = Some(now);
                warn!(message = "partition failing; retrying in the background (other partitions are not affected)", topic = %topic, partition, error = %describe(e), waiting, attempts = f.attempts, failing_for = %humantime::format_duration(Duration::from_secs(f.since.elapsed().as_secs())));
            } else {
                debug!(message = "produce failed; retrying", topic = %topic, partition, error = %describe(e), waiting, attempt = f.attempts);
            }
        };
        match retry(&mut backoff, attempt, failed).await {
            Ok(()) => {
                shared.config.kafka.health().succeeded();
                shared.delivered(&batch);
                dispatched.add(batch.len() as u64);
                batch.clear();
                backoff.reset();
                if let Some(since) = refused.take() {
                    shared.observer().write_refused(&topic, partition, None);
                    info!(message = "writes accepted again; the waiting dispatches are delivered", topic = %topic, partition, refused_for = %humantime::format_duration(round_ms(since.elapsed())));
                }
                if let Some(f) = failing.take() {
                    if f.reported.is_some() {
                        info!(message = "partition delivering again", topic = %topic, partition, attempts = f.attempts, failing_for = %humantime::format_duration(round_ms(f.since.elapsed())));
                    }
                }
            }
            Err(ProduceFailure(e)) => {
                if batch.len() > 1 {
                    // One bad record must not sink its neighbours: send them one by one.
                    for dispatch in batch.drain(..) {
                        send_alone(&shared, &topic, partition, &lane, dispatch).await;
                    }
                } else {
                    for dispatch in batch.drain(..) {
                        error!(message = "dispatch dropped: the broker rejected it permanently", job = %dispatch.spec.name, slot = %dispatch.scheduled_at.to_rfc3339(), topic = %topic, partition, error = %describe(&e));
                        shared.refused(&topic, &dispatch);
                    }
                }
            }
        }
    }
}

/// What a partition's lane keeps between produce requests.
#[derive(Default)]
struct Lane {
    /// Forgotten after a transient failure: the leader may have moved or the connection died.
    client: Option<Arc<PartitionClient>>,
    slots: SlotTexts,
}

/// The lane's state; locked only between awaits, never across one.
fn lock(lane: &Mutex<Lane>) -> std::sync::MutexGuard<'_, Lane> {
    lane.lock().unwrap_or_else(|e| e.into_inner())
}

/// One produce request for `batch`, encoded for this attempt (JobMessage v1, stamped now): the
/// records are made, sent and freed here, on the partition's task, so nothing is held between
/// attempts but the dispatches themselves.
async fn produce(
    shared: &Shared,
    topic: &str,
    partition: i32,
    lane: &Mutex<Lane>,
    batch: &[Dispatch],
) -> Result<(), RsError> {
    let cached = lock(lane).client.clone();
    let pc = match cached {
        Some(pc) => pc,
        None => {
            let pc = Arc::new(
                shared
                    .client
                    .partition_client(topic.to_string(), partition, UnknownTopicHandling::Retry)
                    .await?,
            );
            lock(lane).client = Some(Arc::clone(&pc));
            pc
        }
    };
    let now = Utc::now();
    // A batch's jobs sit at random places among all the schedule's: each record would stall on
    // loading its job's settings, then its name and payload. Asked for ahead, they arrive while
    // the records before are encoded.
    for d in batch.iter().take(2 * PREFETCH_AHEAD) {
        prefetch(Arc::as_ptr(d.spec.arc()));
    }
    let records: Vec<Record> = {
        let slots = &mut lock(lane).slots;
        batch
            .iter()
            .enumerate()
            .map(|(i, d)| {
                if let Some(ahead) = batch.get(i + 2 * PREFETCH_AHEAD) {
                    prefetch(Arc::as_ptr(ahead.spec.arc()));
                }
                if let Some(ahead) = batch.get(i + PREFETCH_AHEAD) {
                    prefetch(ahead.spec.name.as_ptr());
                    prefetch(ahead.spec.job.as_ptr());
                }
                record(d, slots.get(d.scheduled_at), now)
            })
            .collect()
    };
    let result = pc
        .produce(records, shared.config.compression.into())
        .await
        .map(|_offsets| ());
    if result.as_ref().is_err_and(|e| !e.is_permanent()) {
        lock(lane).client = None;
    }
    result
}

/// Records between the one being encoded and the one whose job's strings are asked for; twice
/// that for the job's settings, which lead to the strings.
const PREFETCH_AHEAD: usize = 8;

/// A record of a batch the broker refused for good, sent on its own: delivered, or dropped when it
/// is the bad one; transient failures are retried.
async fn send_alone(
    shared: &Shared,
    topic: &str,
    partition: i32,
    lane: &Mutex<Lane>,
    dispatch: Dispatch,
) {
    let one = [dispatch];
    let attempt = || async {
        let _permit = shared.in_flight.acquire().await;
        produce(shared, topic, partition, lane, &one)
            .await
            .map_err(ProduceFailure)
    };
    let failed = |e: &ProduceFailure, _, _| {
        debug!(message = "produce failed; retrying", topic, partition, error = %describe(&e.0));
    };
    match retry(
        &mut Backoff::new(shared.config.retry_backoff),
        attempt,
        failed,
    )
    .await
    {
        Ok(()) => {
            shared.delivered(&one);
            shared.observer().dispatched_to(topic).add(1);
        }
        Err(ProduceFailure(e)) => {
            let dispatch = &one[0];
            error!(message = "dispatch dropped: the broker rejected it permanently", job = %dispatch.spec.name, slot = %dispatch.scheduled_at.to_rfc3339(), topic, partition, error = %describe(&e));
            shared.refused(topic, dispatch);
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
