//! The topic mode of a group member (`cronq run --schedule-topic`): each owned shard's jobs come
//! from that shard's partition of `<group>.schedule`, and from no other.
//!
//! ```text
//!  takeover of shard s ──► load(s): partition s read from its start to the high watermark,
//!                          records checked on the blocking pool ──► Schedule ──► Scheduler::new
//!                      └─► follow(s, from): the follower task fetches partition s on from there
//!  follower (one librdkafka consumer, every followed partition) ──► ShardEdits ──► the service loop ──► apply():
//!                          Upsert ─► Scheduler::upsert   Delete ─► Scheduler::remove
//!                          Rejected ─► logged with its offset, counted; the job's last good version stays
//!  revoke of shard s ──► unfollow(s): edits of its old epoch are dropped on arrival
//! ```
//!
//! A shard is never rebuilt after its takeover: each record changes its one job.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::DateTime;
use futures_util::future::join_all;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use rskafka::client::Client;
use rskafka::record::{Record, RecordAndOffset};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::api::book::Versions;
use super::observe::{Observer, ShardTopicRow};
use super::own_writes::{Consumed, OwnWrites};
use super::tick_loop::TickLoop;
use crate::clock::Minute;
use crate::kafka::{Connection, KafkaContext};
use crate::schedule::{Job, JobSpec, LoadOptions, Schedule, SharedExprs};
use crate::store::{self, Edit, Rejected, StoreError};
use crate::wire::cursor::TopicPosition;
use crate::FastHash;

/// How long the follower waits for a record before it looks at the shards it follows again (a
/// record ends the wait at once).
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// How long the follower waits for a record while the jobs API writes to its shards: the API's
/// acked records reach the wheel within this of their ack.
const OWN_POLL: Duration = Duration::from_millis(20);

/// The most records the follower takes in one round.
const FOLLOW_BATCH: usize = 10_000;

/// How many rejected records a member logs one by one per shard; it counts the rest.
const REJECTED_LOGGED: u64 = 10;

/// Where the follower reads one shard's partition from, and under which epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Follow {
    epoch: u64,
    from: i64,
}

/// Records of one shard, checked: what the follower hands the service loop.
#[derive(Debug)]
pub(super) struct ShardEdits {
    shard: u32,
    epoch: u64,
    edits: Vec<Edit>,
    /// The offset after the last record.
    next: i64,
    /// When the follower received them.
    fetched: Instant,
}

/// What the status page and the cursor records show of one shard's schedule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShardTopic {
    /// The next offset to apply (every record before it is applied).
    pub applied: i64,
    /// Jobs held.
    pub jobs: u64,
    /// Records rejected since the takeover.
    pub rejected: u64,
}

/// The schedule topic as a member reads it.
pub(super) struct TopicSchedule {
    client: Arc<Client>,
    topic: String,
    shards: u32,
    options: LoadOptions,
    follow: watch::Sender<BTreeMap<u32, Follow>>,
    next_epoch: u64,
    reports: BTreeMap<u32, ShardTopic>,
    observer: Arc<Observer>,
    /// Jobs whose runs come to an end (`at`, `endAt`) and are removed once their last slot is
    /// acked, by (that slot's minute, shard, name): see [`TopicSchedule::retire`].
    ending: BTreeSet<(Minute, u32, String)>,
    /// The jobs API's versions (each owned shard's job names and offsets), when the API is on.
    versions: Option<Arc<Versions>>,
    /// The API's own acked records, handed to the follower (when the API is on).
    own: Option<Arc<OwnWrites>>,
}

/// The minute after whose acknowledgement a job of the schedule topic has no run left, when it is
/// to be removed then (an `at` job, or one with an `endAt`, without `keepAfterRun`).
fn last_minute(spec: &JobSpec) -> Option<Minute> {
    let timing = spec.timing.as_deref()?;
    if timing.keep_after_run || !spec.enabled {
        return None;
    }
    let at = timing.at().map(Minute::containing);
    let end = timing
        .end_at
        .map(|e| Minute::containing(e - chrono::Duration::seconds(1)));
    match (at, end) {
        (Some(a), Some(e)) => Some(a.min(e)),
        (a, e) => a.or(e),
    }
}

/// How long a member waits for the broker to ack the tombstones of finished jobs before it tries
/// again at the next tick (the service loop waits meanwhile).
const RETIRE_WAIT: Duration = Duration::from_secs(5);

/// The follower's half: one librdkafka consumer without a group, its partitions assigned by hand,
/// so that every followed partition is read by one fetch request per broker (an idle member makes
/// a few requests a second, however many shards it owns).
pub(super) struct Follower {
    consumer: Arc<BaseConsumer<KafkaContext>>,
    topic: String,
    shards: u32,
    options: LoadOptions,
    follow: watch::Receiver<BTreeMap<u32, Follow>>,
    out: mpsc::Sender<ShardEdits>,
    /// The jobs API's own acked records (when the API is on).
    own: Option<Arc<OwnWrites>>,
}

impl TopicSchedule {
    /// The member's view of `topic`, its follower (a task for the service to run) and the
    /// receiver of the follower's edits.
    pub(super) fn new(
        client: Arc<Client>,
        kafka: &Connection,
        topic: String,
        shards: u32,
        options: LoadOptions,
        observer: Arc<Observer>,
        versions: Option<Arc<Versions>>,
    ) -> Result<(TopicSchedule, Follower, mpsc::Receiver<ShardEdits>), StoreError> {
        // Every shard's batches, read and followed, share one set of compiled expressions.
        let mut options = options;
        options
            .expressions
            .get_or_insert_with(|| Arc::new(SharedExprs::default()));
        let (follow_tx, follow_rx) = watch::channel(BTreeMap::new());
        let (out, edits) = mpsc::channel(64);
        let consumer = kafka
            .schedule_follower(&topic)
            .create_with_context(kafka.context("schedule topic follower"))
            .map_err(|e| StoreError::Follower(e.to_string()))?;
        let consumer = Arc::new(consumer);
        let own = versions.as_ref().map(|_| {
            Arc::new(OwnWrites::new(Box::new(Consumed::new(
                Arc::clone(&consumer),
                topic.clone(),
            ))))
        });
        let follower = Follower {
            own: own.clone(),
            consumer,
            topic: topic.clone(),
            shards,
            options: options.clone(),
            follow: follow_rx,
            out,
        };
        Ok((
            TopicSchedule {
                client,
                topic,
                shards,
                options,
                follow: follow_tx,
                next_epoch: 0,
                reports: BTreeMap::new(),
                observer,
                ending: BTreeSet::new(),
                versions,
                own,
            },
            follower,
            edits,
        ))
    }

    /// Whether the jobs API is on (it keeps each owned shard's versions).
    pub(super) fn api_on(&self) -> bool {
        self.versions.is_some()
    }

    /// The API's own writes, for the API's write path (when the API is on).
    pub(super) fn own_writes(&self) -> Option<Arc<OwnWrites>> {
        self.own.clone()
    }

    /// The checker's settings of every shard, with their shared compiled expressions: the API
    /// checks with them, so that the jobs it hands to the follower are those the follower would
    /// have made.
    pub(super) fn load_options(&self) -> &LoadOptions {
        &self.options
    }

    /// The topic.
    pub(super) fn name(&self) -> &str {
        &self.topic
    }

    /// Reads `shards`' partitions from their start to their high watermarks (all at once): each
    /// shard's jobs in force and the offset to follow it from.
    pub(super) async fn load(
        &mut self,
        shards: &[u32],
    ) -> Result<BTreeMap<u32, (Schedule, i64)>, StoreError> {
        let loads = shards.iter().map(|&shard| {
            let client = Arc::clone(&self.client);
            let topic = self.topic.clone();
            let options = self.options.clone();
            let count = self.shards;
            let keep_versions = self.versions.is_some();
            async move { load_shard(&client, &topic, shard, count, options, keep_versions).await }
        });
        let mut out = BTreeMap::new();
        for (shard, loaded) in shards.iter().zip(join_all(loads).await) {
            let (jobs, next, rejected, offsets) = loaded?;
            if let (Some(versions), Some(offsets)) = (&self.versions, offsets) {
                versions.load(*shard, offsets);
            }
            self.reports.insert(
                *shard,
                ShardTopic {
                    applied: next,
                    jobs: jobs.len() as u64,
                    rejected,
                },
            );
            for ByName(job) in &jobs {
                if let Some(last) = last_minute(&job.spec) {
                    self.ending.insert((last, *shard, job.spec.name.clone()));
                }
            }
            out.insert(
                *shard,
                (
                    Schedule {
                        jobs: jobs.into_iter().map(|ByName(job)| job).collect(),
                    },
                    next,
                ),
            );
        }
        self.publish();
        Ok(out)
    }

    /// The follower reads `shard` on from `from`, under a new epoch.
    pub(super) fn follow(&mut self, shard: u32, from: i64) {
        self.next_epoch += 1;
        let epoch = self.next_epoch;
        self.follow.send_modify(|f| {
            f.insert(shard, Follow { epoch, from });
        });
    }

    /// A shard handed back and given back unchanged (kept compiled): followed again from
    /// `applied`, the offset it had applied.
    pub(super) fn resume(&mut self, shard: u32, applied: i64, jobs: u64) {
        self.reports.insert(
            shard,
            ShardTopic {
                applied,
                jobs,
                rejected: 0,
            },
        );
        self.follow(shard, applied);
        self.publish();
        info!(message = "shard kept from before the rebalance; following its partition on", topic = %self.topic, shard, offset = applied, jobs);
    }

    /// The follower stops reading `shard`; its edits still on the way are dropped.
    pub(super) fn unfollow(&mut self, shard: u32) {
        self.follow.send_modify(|f| {
            f.remove(&shard);
        });
        self.reports.remove(&shard);
        if let Some(versions) = &self.versions {
            versions.drop_shard(shard);
        }
        self.publish();
    }

    /// Applies `batch` to its shard's scheduler, if the shard is still followed under the batch's
    /// epoch. Returns how long the records took from fetch to wheel.
    pub(super) fn apply(
        &mut self,
        batch: ShardEdits,
        tick_loop: &mut TickLoop,
    ) -> Option<Duration> {
        let current = self.follow.borrow().get(&batch.shard).copied();
        if current.map(|f| f.epoch) != Some(batch.epoch) {
            return None;
        }
        let run = tick_loop.shard_mut(batch.shard)?;
        let report = self.reports.entry(batch.shard).or_default();
        let (mut upserts, mut deletes) = (0u64, 0u64);
        for edit in batch.edits {
            match edit {
                Edit::Upsert { job, offset, .. } => {
                    let name = job.spec.name.clone();
                    if let Some(last) = last_minute(&job.spec) {
                        self.ending.insert((last, batch.shard, name.clone()));
                    }
                    if let Some(versions) = &self.versions {
                        versions.seen(batch.shard, &name, offset, true);
                    }
                    let edited = run.scheduler.upsert(job);
                    upserts += 1;
                    tracing::debug!(message = "schedule record applied", shard = batch.shard, offset, job = %name, edited = ?edited);
                }
                Edit::Delete { name, offset } => {
                    if let Some(versions) = &self.versions {
                        versions.seen(batch.shard, &name, offset, false);
                    }
                    if run.scheduler.remove(&name) {
                        deletes += 1;
                        tracing::debug!(message = "job deleted by a tombstone", shard = batch.shard, offset, job = %name);
                    }
                }
                Edit::Rejected(r) => {
                    report.rejected += 1;
                    rejected(&self.topic, &r, report.rejected);
                    self.observer.schedule_record_rejected(&r);
                }
            }
        }
        report.applied = batch.next;
        report.jobs = run.scheduler.len() as u64;
        if upserts + deletes > 0 {
            info!(
                message = "schedule changes applied",
                shard = batch.shard,
                upserts,
                deletes,
                jobs = report.jobs,
                offset = batch.next
            );
        }
        self.publish();
        let took = batch.fetched.elapsed();
        self.observer.schedule_topic_applied(took);
        Some(took)
    }

    /// Removes, with a tombstone in its partition, each job whose runs have come to an end: an
    /// `at` job whose slot, or a job whose last slot before `endAt`, is acked (its shard's cursor
    /// is at or past it), unless it keeps `keepAfterRun`. The tombstone comes back through the
    /// follower like any record. A job replaced meanwhile by a version that still runs is kept;
    /// a write that fails is tried again at the next tick.
    pub(super) async fn retire(&mut self, tick_loop: &TickLoop) {
        let mut due = Vec::new();
        let mut later = BTreeSet::new();
        // Only entries up to the furthest cursor can be due: the rest wait untouched.
        let furthest = tick_loop
            .shards()
            .values()
            .map(|run| {
                run.lease
                    .as_ref()
                    .map_or(run.scheduler.processed(), |l| l.cursor())
            })
            .max();
        let Some(furthest) = furthest else {
            return;
        };
        let waiting = self.ending.split_off(&(furthest.next(), 0, String::new()));
        for (last, shard, name) in std::mem::replace(&mut self.ending, waiting) {
            let Some(run) = tick_loop.shards().get(&shard) else {
                continue; // not owned any more: its new owner retires it
            };
            let acked = run
                .lease
                .as_ref()
                .map_or(run.scheduler.processed(), |l| l.cursor());
            let still = run
                .scheduler
                .job(&name)
                .and_then(|spec| last_minute(spec))
                .is_some_and(|l| l == last);
            match (still, last <= acked) {
                (false, _) => {}
                (true, true) => due.push((last, shard, name)),
                (true, false) => {
                    later.insert((last, shard, name));
                }
            }
        }
        self.ending.extend(later);
        if due.is_empty() {
            return;
        }
        let writes = due
            .iter()
            .map(|(_, _, name)| store::Write {
                name: name.clone(),
                value: None,
            })
            .collect();
        let written = tokio::time::timeout(
            RETIRE_WAIT,
            store::write(
                store::fresh_partitions(&self.client, &self.topic),
                &self.topic,
                self.shards,
                writes,
                chrono::Utc::now(),
                Duration::from_millis(200),
                |_| {},
            ),
        )
        .await;
        match written {
            Ok(Ok(_)) => {
                let jobs: Vec<&str> = due.iter().map(|(_, _, n)| n.as_str()).collect();
                info!(message = "jobs whose runs came to an end removed from the schedule topic (a tombstone each)", topic = %self.topic, count = jobs.len(), jobs = ?jobs);
            }
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no ack within {}", humantime::format_duration(RETIRE_WAIT)),
                };
                warn!(message = "cannot remove finished jobs from the schedule topic yet; trying again at the next tick", topic = %self.topic, count = due.len(), error = %error);
                self.ending.extend(due);
            }
        }
    }

    /// Each owned shard's schedule topic position.
    pub(super) fn reports(&self) -> &BTreeMap<u32, ShardTopic> {
        &self.reports
    }

    /// `shard`'s position, as its cursor records carry it.
    pub(super) fn position(&self, shard: u32) -> Option<TopicPosition> {
        self.reports.get(&shard).map(|r| TopicPosition {
            offset: r.applied,
            jobs: r.jobs,
            rejected: r.rejected,
        })
    }

    /// Every owned shard's position.
    pub(super) fn positions(&self) -> BTreeMap<u32, TopicPosition> {
        self.reports
            .keys()
            .filter_map(|&s| Some((s, self.position(s)?)))
            .collect()
    }

    fn publish(&self) {
        let rows = self
            .reports
            .iter()
            .map(|(&shard, t)| ShardTopicRow {
                shard,
                applied: t.applied,
                jobs: t.jobs,
                rejected: t.rejected,
            })
            .collect();
        self.observer.schedule_topic(&self.topic, rows);
    }
}

/// Logs a rejected record (the first few of a shard one by one).
fn rejected(topic: &str, r: &Rejected, count: u64) {
    if count <= REJECTED_LOGGED {
        warn!(message = "schedule record rejected; the job's last good version stays in force", topic, partition = r.partition, offset = r.offset, key = %r.key, reason = %r.reason, rejected = count);
    }
    if count == REJECTED_LOGGED {
        warn!(
            message = "further rejected schedule records of this shard are counted, not logged",
            topic,
            partition = r.partition
        );
    }
}

/// One shard as read to its end: its jobs, the offset after, the records rejected, and (with the
/// jobs API on) each job's version.
type LoadedShard = (
    HashSet<ByName, FastHash>,
    i64,
    u64,
    Option<HashMap<String, i64>>,
);

/// A job in a set keyed by its own name: a shard read holds no second copy of every name.
struct ByName(Job);

impl Borrow<str> for ByName {
    fn borrow(&self) -> &str {
        &self.0.spec.name
    }
}

impl Hash for ByName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes: lookups by `&str` find it.
        self.0.spec.name.as_str().hash(state);
    }
}

impl PartialEq for ByName {
    fn eq(&self, other: &Self) -> bool {
        self.0.spec.name == other.0.spec.name
    }
}

impl Eq for ByName {}

/// Reads one shard's partition to its end: its jobs, the offset after, the records rejected, and
/// with `keep_versions` each job's newest offset (its version, for the jobs API).
async fn load_shard(
    client: &Client,
    topic: &str,
    shard: u32,
    shards: u32,
    options: LoadOptions,
    keep_versions: bool,
) -> Result<LoadedShard, StoreError> {
    let started = Instant::now();
    let pc = store::partition_client(client, topic, shard as i32).await?;
    let mut reader = store::ToEnd::start(&pc, topic, None).await?;
    // Each batch is checked on the blocking pool (CPU work) while the next one is fetched; at most
    // two batches wait, so a large partition is never held whole as raw records.
    let (batches, mut to_check) = mpsc::channel::<Vec<RecordAndOffset>>(2);
    // Sized for every record once (a compacted partition holds about one per job), so the set is
    // not rebuilt as it grows; capped, so a long uncompacted history does not reserve too much.
    let expected = reader.left().min(4 << 20);
    let topic_name = topic.to_string();
    let folding = tokio::task::spawn_blocking(move || {
        let mut jobs: HashSet<ByName, FastHash> =
            HashSet::with_capacity_and_hasher(expected, FastHash::default());
        let mut versions: Option<HashMap<String, i64>> = keep_versions.then(HashMap::new);
        let mut rejected = 0u64;
        let mut records = 0usize;
        while let Some(batch) = to_check.blocking_recv() {
            records += batch.len();
            for edit in store::edits(shard as i32, &batch, shards, &options) {
                match edit {
                    Edit::Upsert { job, offset, .. } => {
                        if let Some(v) = versions.as_mut() {
                            v.insert(job.spec.name.clone(), offset);
                        }
                        jobs.replace(ByName(job));
                    }
                    Edit::Delete { name, .. } => {
                        if let Some(v) = versions.as_mut() {
                            v.remove(&name);
                        }
                        jobs.remove(name.as_str());
                    }
                    Edit::Rejected(r) => {
                        rejected += 1;
                        self::rejected(&topic_name, &r, rejected);
                    }
                }
            }
        }
        (jobs, rejected, records, versions)
    });
    let read = async {
        while let Some(batch) = reader.next(&pc, topic).await? {
            if batches.send(batch).await.is_err() {
                break;
            }
        }
        drop(batches);
        Ok::<_, StoreError>(reader.offset())
    };
    let next = read.await;
    let folded = folding.await;
    let next = next?;
    let (jobs, rejected, records, versions) = folded.map_err(|e| StoreError::Io {
        what: "checking",
        topic: topic.to_string(),
        partition: shard as i32,
        reason: e.to_string(),
    })?;
    info!(
        message = "shard's schedule read from the topic",
        topic,
        shard,
        records,
        jobs = jobs.len(),
        rejected,
        offset = next,
        took_ms = started.elapsed().as_millis() as u64
    );
    Ok((jobs, next, rejected, versions))
}

impl Follower {
    /// Follows the partitions the member asks for until `token` is cancelled, on a thread of its
    /// own (librdkafka's consumer is polled in a blocking call).
    pub(super) async fn run(self, token: CancellationToken) {
        let topic = self.topic.clone();
        let ended = tokio::task::spawn_blocking(move || self.follow(&token)).await;
        if let Err(e) = ended {
            error!(message = "the schedule topic follower failed", topic = %topic, error = %e);
        }
    }

    fn follow(mut self, token: &CancellationToken) {
        follow_partitions(&mut self, token);
        if let Some(own) = &self.own {
            own.stop();
        }
        crate::kafka::close_apart(self.consumer);
    }
}

/// The follower's loop, until `token` is cancelled or the member is gone.
fn follow_partitions(follower: &mut Follower, token: &CancellationToken) {
    let consumer: &BaseConsumer<KafkaContext> = &follower.consumer;
    let topic = follower.topic.as_str();
    let shards = follower.shards;
    let options = &follower.options;
    let follow = &mut follower.follow;
    let out = &follower.out;
    let own = follower.own.as_deref();
    let mut assigned: BTreeMap<u32, Follow> = BTreeMap::new();
    // The offset each followed shard expects next: a record below it is one already applied.
    let mut next: BTreeMap<u32, i64> = BTreeMap::new();
    let mut failing = false;
    while !token.is_cancelled() {
        match follow.has_changed() {
            Ok(true) => {
                let wanted = follow.borrow_and_update().clone();
                if wanted != assigned {
                    // A partition followed on under the same epoch goes on from where it is.
                    let from: BTreeMap<u32, i64> = wanted
                        .iter()
                        .map(|(&s, f)| {
                            let at = match (assigned.get(&s), next.get(&s)) {
                                (Some(old), Some(&n)) if old == f => n,
                                _ => f.from,
                            };
                            (s, at)
                        })
                        .collect();
                    let assigned_now = match own {
                        Some(own) => own.assign(&from, || assign(consumer, topic, &from)),
                        None => assign(consumer, topic, &from),
                    };
                    match assigned_now {
                        Ok(()) => {
                            next = from;
                            assigned = wanted;
                        }
                        Err(e) => {
                            warn!(message = "cannot assign the schedule topic's partitions to its follower; retrying", topic = %topic, error = %e);
                            // Tried again after the poll below.
                            follow.mark_changed();
                        }
                    }
                }
            }
            Ok(false) => {}
            Err(_) => return, // the member is gone
        }
        // The API's own acked records first: they continue their partitions where the follower
        // is, and are not fetched back. While the API writes, the follower looks every
        // OWN_POLL; otherwise the first record waits up to FOLLOW_POLL, and those already fetched
        // are taken at once.
        let mut own_edits = own.map(|o| o.take(&mut next)).unwrap_or_default();
        let taken: usize = own_edits.values().map(Vec::len).sum();
        let mut batches: BTreeMap<u32, Vec<RecordAndOffset>> = BTreeMap::new();
        let mut read_again = 0usize;
        let mut wait = match own {
            Some(o) if o.busy() => OWN_POLL,
            _ => FOLLOW_POLL,
        };
        for _ in 0..FOLLOW_BATCH {
            match consumer.poll(wait) {
                None => break,
                Some(Ok(m)) => {
                    if failing {
                        info!(message = "reading the schedule topic again", topic = %topic);
                        failing = false;
                    }
                    let Ok(shard) = u32::try_from(m.partition()) else {
                        continue;
                    };
                    if m.topic() != topic || next.get(&shard).is_none_or(|&n| m.offset() < n) {
                        read_again += 1;
                        continue; // not followed (any more), or applied already
                    }
                    let timestamp = m
                        .timestamp()
                        .to_millis()
                        .and_then(DateTime::from_timestamp_millis)
                        .unwrap_or_default();
                    batches.entry(shard).or_default().push(RecordAndOffset {
                        record: Record {
                            key: m.key().map(<[u8]>::to_vec),
                            value: m.payload().map(<[u8]>::to_vec),
                            headers: BTreeMap::new(),
                            timestamp,
                        },
                        offset: m.offset(),
                    });
                }
                Some(Err(e)) => {
                    if !failing {
                        warn!(message = "cannot read the schedule topic; the shards keep their jobs and the reads are retried", topic = %topic, error = %e);
                        failing = true;
                    }
                    break;
                }
            }
            wait = Duration::ZERO;
        }
        let fetched = Instant::now();
        if taken > 0 || read_again > 0 {
            tracing::debug!(message = "schedule topic follower round", topic = %topic, own_records = taken, records_dropped = read_again);
        }
        let touched: BTreeSet<u32> = own_edits.keys().chain(batches.keys()).copied().collect();
        for shard in touched {
            let Some(followed) = assigned.get(&shard) else {
                continue;
            };
            // The API's own records (checked by the API) come first: the fetched ones follow them.
            let mut edits = own_edits.remove(&shard).unwrap_or_default();
            if let Some(records) = batches.remove(&shard) {
                if let Some(last) = records.last() {
                    next.insert(shard, last.offset + 1);
                }
                edits.extend(store::edits(shard as i32, &records, shards, options));
            }
            let Some(&after) = next.get(&shard).filter(|_| !edits.is_empty()) else {
                continue;
            };
            let batch = ShardEdits {
                shard,
                epoch: followed.epoch,
                edits,
                next: after,
                fetched,
            };
            if out.blocking_send(batch).is_err() {
                return;
            }
        }
    }
}

/// Makes `consumer` read exactly `from`'s partitions (shards) of `topic`, each from its offset.
fn assign(
    consumer: &BaseConsumer<KafkaContext>,
    topic: &str,
    from: &BTreeMap<u32, i64>,
) -> Result<(), rdkafka::error::KafkaError> {
    let mut tpl = TopicPartitionList::new();
    for (&shard, &offset) in from {
        tpl.add_partition_offset(topic, shard as i32, Offset::Offset(offset))?;
    }
    consumer.assign(&tpl)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::schedule::parse;

    /// The minute after which the owner deletes a topic-sourced job: an `at` job's slot, the
    /// minute of the last second before `endAt` (the earlier of the two when both are set), and
    /// never for a job that keeps `keepAfterRun`, a disabled one or an unbounded one.
    #[test]
    fn a_job_ends_after_its_at_slot_or_its_last_minute_before_end_at() {
        let json = r#"{"jobs":[
            {"jobName":"at","job":"x","at":"2027-03-01T13:05:30Z"},
            {"jobName":"until","job":"x","cronTime":"*/7 * * * *","endAt":"2027-03-01T14:00:00Z"},
            {"jobName":"both","job":"x","at":"2027-03-01T13:05:30Z","endAt":"2027-03-01T13:00:01Z"},
            {"jobName":"kept","job":"x","at":"2027-03-01T13:05:30Z","keepAfterRun":true},
            {"jobName":"off","job":"x","every":"5m","endAt":"2027-03-01T14:00:00Z","enabled":false},
            {"jobName":"plain","job":"x","every":"5m","startAt":"2027-03-01T14:00:00Z"}
        ]}"#;
        let s = parse(json.as_bytes(), Path::new("s.json"), LoadOptions::default()).unwrap();
        let minute = |h: i64, m: i64| Minute(30_064_320 + h * 60 + m);
        let got: Vec<Option<Minute>> = s.jobs.iter().map(|j| last_minute(&j.spec)).collect();
        assert_eq!(
            got,
            [
                Some(minute(13, 5)),
                Some(minute(13, 59)),
                Some(minute(13, 0)),
                None,
                None,
                None
            ]
        );
    }
}
