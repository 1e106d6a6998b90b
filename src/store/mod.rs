//! The schedule in Kafka: a group's compacted schedule topic `<group>.schedule`, one partition per
//! shard, one record per job version ([`crate::wire::schedule`]). `cronq apply` and `export` read
//! and write it whole; a dispatcher member reads only the partitions of the shards it owns.
//!
//! ```text
//!  cronq apply FILE ──► diff against latest() ──► write() (acks=all, only the difference)
//!                                                    │
//!  <group>.schedule  partition s = murmur2(jobName) mod S                       (compacted)
//!                                                    │ read_partition (to the high watermark, then follow)
//!  dispatcher member (owner of s) ──► edits(): decode, key and partition checked, the job checked by
//!                                     the file's checker ──► Upsert / Delete / Rejected, in offset order
//! ```
//!
//! A record that does not pass is [`Edit::Rejected`]: the job's last good version stays in force.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::Client;
use rskafka::record::{Record, RecordAndOffset};
use serde_json::value::RawValue;

use crate::kafka::admin::{ensure_topic_retrying, TopicAdmin, TopicError, TopicSpec};
use crate::kafka::{describe, Backoff, Connection};
use crate::schedule::load::check_entries;
use crate::schedule::{Job, LoadOptions, ShardFilter};
use crate::wire::schedule::{key_name, Changed, ScheduleRecord};

pub mod cache;
pub mod plan;

/// The schedule topic of `group`.
pub fn topic_name(group: &str) -> String {
    format!("{group}.schedule")
}

/// Why the schedule topic could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The topic cannot be used.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The topic's partitions are not the group's shards.
    #[error("the schedule topic {topic:?} has {partitions} partitions, but the group has {shards} shards: a job's partition must be its shard (recreate the topic with {shards} partitions)")]
    Partitions {
        /// The topic.
        topic: String,
        /// Its partition count.
        partitions: i32,
        /// The group's shard count.
        shards: u32,
    },
    /// Reading or writing failed.
    #[error("{what} partition {partition} of the schedule topic {topic:?}: {reason}")]
    Io {
        /// Reading or writing.
        what: &'static str,
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// Why.
        reason: String,
    },
    /// rdkafka's admin client could not be made.
    #[error("cannot create a Kafka admin client: {0}")]
    Admin(String),
    /// The consumer that follows the schedule topic could not be made.
    #[error("cannot create the schedule topic's follower (a Kafka consumer): {0}")]
    Follower(String),
}

/// Makes sure `topic` exists (compacted, `shards` partitions), creating it when `create` gives a
/// replication factor; returns its partition count, which must be `shards`. Retries while Kafka
/// is unreachable.
pub async fn ensure_topic(
    client: &Client,
    kafka: &Connection,
    topic: &str,
    shards: u32,
    create: Option<i16>,
    retry_backoff: Duration,
) -> Result<u32, StoreError> {
    let admin = match create {
        Some(_) => Some(TopicAdmin::new(kafka).map_err(|e| StoreError::Admin(e.to_string()))?),
        None => None,
    };
    let spec = TopicSpec {
        name: topic,
        partitions: shards as i32,
        replication_factor: create.unwrap_or(1),
        configs: &[("cleanup.policy", "compact")],
    };
    let partitions = ensure_topic_retrying(
        client,
        admin.as_ref(),
        &spec,
        &mut Backoff::new(retry_backoff),
        |e, _, _| tracing::debug!(message = "schedule topic lookup failed; retrying", topic, error = %e),
    )
    .await?;
    if partitions as u32 != shards {
        return Err(StoreError::Partitions {
            topic: topic.to_string(),
            partitions,
            shards,
        });
    }
    Ok(shards)
}

/// One change a record makes to a shard's jobs.
#[derive(Debug, Clone)]
pub enum Edit {
    /// The job's new version (checked).
    Upsert {
        /// The record's offset: the job's version.
        offset: i64,
        /// The job.
        job: Job,
        /// Who changed it.
        changed: Changed,
    },
    /// A tombstone: the job is gone.
    Delete {
        /// The record's offset.
        offset: i64,
        /// The job.
        name: String,
    },
    /// A record that does not pass: the job's last good version stays in force.
    Rejected(Rejected),
}

impl Edit {
    /// The record's offset.
    pub fn offset(&self) -> i64 {
        match self {
            Edit::Upsert { offset, .. } | Edit::Delete { offset, .. } => *offset,
            Edit::Rejected(r) => r.offset,
        }
    }
}

/// A record that did not pass, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The partition.
    pub partition: i32,
    /// Its offset.
    pub offset: i64,
    /// The key, lossily decoded, quoted and escaped, shortened past 100 characters.
    pub key: String,
    /// Every problem, as `validate` words them.
    pub reason: String,
}

impl std::fmt::Display for Rejected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "partition {} offset {} key {}: {}",
            self.partition, self.offset, self.key, self.reason
        )
    }
}

/// Turns records of `partition` into edits, in offset order. Each record's key must be the UTF-8
/// name of its job, `murmur2(key) mod shards` must be `partition`, and the value must decode and
/// pass the same checks as a file's job (`options`' zone and catch-up defaults apply).
pub fn edits(
    partition: i32,
    records: &[RecordAndOffset],
    shards: u32,
    options: &LoadOptions,
) -> Vec<Edit> {
    let filter = ShardFilter::all(shards);
    let mut options = options.clone();
    options.shards = filter.clone();
    // Quoted, escaped and shortened: a key is the writer's text.
    let shown = |key: &[u8]| crate::wire::job::excerpt(&String::from_utf8_lossy(key));
    let reject = |offset: i64, key: &[u8], reason: String| {
        Edit::Rejected(Rejected {
            partition,
            offset,
            key: shown(key),
            reason,
        })
    };
    // Records whose spec goes to the checker: (index in `out`, record, the spec).
    let mut out: Vec<Option<Edit>> = Vec::with_capacity(records.len());
    let mut pending: Vec<(usize, i64, &[u8], ScheduleRecord)> = Vec::new();
    for r in records {
        let key = r.record.key.as_deref().unwrap_or_default();
        let name = match key_name(key) {
            Ok(name) if !name.is_empty() => name,
            Ok(_) => {
                out.push(Some(reject(
                    r.offset,
                    key,
                    "the record has no key (the job's name)".into(),
                )));
                continue;
            }
            Err(e) => {
                out.push(Some(reject(r.offset, key, e.to_string())));
                continue;
            }
        };
        let shard = filter.shard_of(name);
        if shard as i32 != partition {
            out.push(Some(reject(
                r.offset,
                key,
                format!("written to partition {partition}, but the job's shard is {shard} (murmur2 of its name mod {shards})"),
            )));
            continue;
        }
        match r.record.value.as_deref() {
            None => out.push(Some(Edit::Delete {
                offset: r.offset,
                name: name.to_string(),
            })),
            Some(value) => match ScheduleRecord::decode(value) {
                Ok(record) => {
                    pending.push((out.len(), r.offset, key, record));
                    out.push(None);
                }
                Err(e) => out.push(Some(reject(r.offset, key, e.to_string()))),
            },
        }
    }
    let specs: Vec<&RawValue> = pending.iter().map(|(_, _, _, r)| &*r.spec).collect();
    let checked = check_entries(&specs, &options);
    for ((at, offset, key, record), check) in pending.into_iter().zip(checked) {
        let name = key_name(key).unwrap_or_default();
        out[at] = Some(match check {
            Ok(job) if job.spec.name == name => Edit::Upsert {
                offset,
                job,
                changed: record.changed,
            },
            Ok(job) => reject(
                offset,
                key,
                format!(
                    "the key is {name:?} but the job's jobName is {:?}: the key must be the job's name",
                    job.spec.name
                ),
            ),
            Err(problems) => reject(
                offset,
                key,
                problems
                    .iter()
                    .map(|p| match &p.field {
                        Some(field) => format!("{field}: {}", p.message),
                        None => p.message.clone(),
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
        });
    }
    out.into_iter().flatten().collect()
}

/// A partition client for `topic`/`partition`.
pub async fn partition_client(
    client: &Client,
    topic: &str,
    partition: i32,
) -> Result<PartitionClient, StoreError> {
    client
        .partition_client(topic.to_string(), partition, UnknownTopicHandling::Retry)
        .await
        .map_err(|e| io_error("reading", topic, partition, &e))
}

fn io_error(
    what: &'static str,
    topic: &str,
    partition: i32,
    e: &rskafka::client::error::Error,
) -> StoreError {
    StoreError::Io {
        what,
        topic: topic.to_string(),
        partition,
        reason: describe(e),
    }
}

/// The most bytes one fetch asks for.
const FETCH_BYTES: i32 = 8 << 20;

/// Reads every partition of `topic`, one after another, from its first record up to the high
/// watermark it had when its read started, handing each fetched batch to `batch` with its
/// partition; `progress` is told each partition's records read so far.
async fn read_all(
    client: &Client,
    topic: &str,
    shards: u32,
    mut progress: impl FnMut(i32, u64),
    mut batch: impl FnMut(i32, &[RecordAndOffset]),
) -> Result<(), StoreError> {
    for partition in 0..shards as i32 {
        let pc = partition_client(client, topic, partition).await?;
        let mut reader = ToEnd::start(&pc, topic, None).await?;
        let mut read = 0u64;
        while let Some(records) = reader.next(&pc, topic).await? {
            read += records.len() as u64;
            progress(partition, read);
            batch(partition, &records);
        }
    }
    Ok(())
}

/// A read of one partition up to the high watermark it had when the read started, a fetched
/// batch at a time (for a reader that hands batches on as they come).
#[derive(Debug)]
pub struct ToEnd {
    offset: i64,
    high: i64,
}

impl ToEnd {
    /// From `from` (the partition's first record when `None`) to its high watermark now.
    pub async fn start(
        pc: &PartitionClient,
        topic: &str,
        from: Option<i64>,
    ) -> Result<ToEnd, StoreError> {
        let partition = pc.partition();
        let err = |e: rskafka::client::error::Error| io_error("reading", topic, partition, &e);
        let offset = match from {
            Some(o) => o,
            None => pc.get_offset(OffsetAt::Earliest).await.map_err(err)?,
        };
        let high = pc.get_offset(OffsetAt::Latest).await.map_err(err)?;
        Ok(ToEnd { offset, high })
    }

    /// The next batch; `None` at the end.
    pub async fn next(
        &mut self,
        pc: &PartitionClient,
        topic: &str,
    ) -> Result<Option<Vec<RecordAndOffset>>, StoreError> {
        if self.offset >= self.high {
            return Ok(None);
        }
        let partition = pc.partition();
        let (records, _) = pc
            .fetch_records(self.offset, 1..FETCH_BYTES, 0)
            .await
            .map_err(|e| io_error("reading", topic, partition, &e))?;
        let records: Vec<RecordAndOffset> = records
            .into_iter()
            .filter(|r| r.offset >= self.offset)
            .collect();
        match records.last() {
            Some(last) => {
                self.offset = last.offset + 1;
                Ok(Some(records))
            }
            None => {
                // Nothing readable left below the watermark (aborted or compacted away).
                self.offset = self.high;
                Ok(None)
            }
        }
    }

    /// The records still to read, at most (the offsets below the watermark; compaction may have
    /// removed some).
    pub fn left(&self) -> usize {
        usize::try_from(self.high - self.offset).unwrap_or(0)
    }

    /// Where a follower goes on from: after the last record read (the watermark at the end).
    pub fn offset(&self) -> i64 {
        self.offset.max(self.high)
    }
}

/// A job's newest record as the topic holds it (what `apply` diffs against and `export` writes).
#[derive(Debug, Clone)]
pub struct Latest {
    /// The record's offset: the job's version.
    pub offset: i64,
    /// The record's partition.
    pub partition: i32,
    /// The decoded record; `Err` with the reason when the newest record does not decode.
    pub record: Result<ScheduleRecord, String>,
}

/// What [`latest`] read: jobs taken from the cache, partitions read on from their mark or whole,
/// and records fetched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Jobs the cache held when the read began (0 without one).
    pub cached_jobs: usize,
    /// Partitions read on from the cache's mark.
    pub resumed: u32,
    /// Partitions read whole (no cache, or the topic did not confirm its mark).
    pub whole: u32,
    /// Records fetched.
    pub records: u64,
}

/// Every job of the topic, by name: its newest record, tombstoned jobs left out, and each
/// partition's [`cache::Mark`] at the end of the read. With `cached` (a [`cache::Snapshot`] of the
/// same topic), a partition whose mark the topic confirms (the record at the mark's offset is the
/// one the mark names) is read on from there only; any other is read whole. `progress` is told each
/// partition's records read so far.
pub async fn latest(
    client: &Client,
    topic: &str,
    shards: u32,
    cached: Option<cache::Snapshot>,
    progress: impl Fn(i32, u64),
) -> Result<(cache::Snapshot, ReadStats), StoreError> {
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    let mut stats = ReadStats::default();
    let mut snapshot = cached
        .filter(|c| c.marks.len() == shards as usize)
        .unwrap_or_default();
    stats.cached_jobs = snapshot.jobs.len();
    let mut marks = std::mem::take(&mut snapshot.marks);
    marks.resize(shards as usize, cache::Mark::default());
    let mut ends = Vec::with_capacity(marks.len());
    let progress = &progress;
    // Partitions are read 8 at a time (a resumed partition is a few round trips, which would add
    // up one after another), and their records applied in partition order.
    let reads: Vec<PartitionRead> = stream::iter(marks.iter().copied().enumerate())
        .map(|(partition, mark)| {
            read_partition_from(client, topic, partition as i32, mark, progress)
        })
        .buffered(READ_PARALLEL)
        .try_collect()
        .await?;
    for (partition, read) in reads.into_iter().enumerate() {
        let partition = partition as i32;
        if read.resumed {
            stats.resumed += 1;
        } else {
            stats.whole += 1;
            snapshot.jobs.retain(|_, l| l.partition != partition);
        }
        stats.records += read.records;
        for (name, latest) in read.jobs {
            match latest {
                Some(latest) => {
                    snapshot.jobs.insert(name, latest);
                }
                None => {
                    snapshot.jobs.remove(&name);
                }
            }
        }
        ends.push(read.mark);
    }
    snapshot.marks = ends;
    Ok((snapshot, stats))
}

/// Partitions [`latest`] reads at once.
const READ_PARALLEL: usize = 8;

/// One partition's part of [`latest`]: its records as upserts (`Some`) and deletes, in offset
/// order; whether it was read on from its mark (else whole); its new mark.
struct PartitionRead {
    jobs: Vec<(String, Option<Latest>)>,
    resumed: bool,
    records: u64,
    mark: cache::Mark,
}

async fn read_partition_from(
    client: &Client,
    topic: &str,
    partition: i32,
    mark: cache::Mark,
    progress: &impl Fn(i32, u64),
) -> Result<PartitionRead, StoreError> {
    let pc = partition_client(client, topic, partition).await?;
    let print = |r: &RecordAndOffset| {
        cache::fingerprint(
            r.record.key.as_deref().unwrap_or_default(),
            r.record.value.as_deref(),
        )
    };
    let mut resumed = None;
    if let Some((offset, hash)) = mark.last {
        let mut from_mark = ToEnd::start(&pc, topic, Some(offset)).await?;
        let first = from_mark.next(&pc, topic).await?;
        let confirmed = first
            .as_ref()
            .and_then(|b| b.first())
            .is_some_and(|r| r.offset == offset && print(r) == hash);
        if confirmed {
            let after: Vec<RecordAndOffset> = first
                .into_iter()
                .flatten()
                .filter(|r| r.offset > offset)
                .collect();
            resumed = Some((from_mark, after, mark));
        }
    }
    let was_resumed = resumed.is_some();
    let (mut reader, mut pending, mut mark) = match resumed {
        Some(r) => r,
        None => (
            ToEnd::start(&pc, topic, None).await?,
            Vec::new(),
            cache::Mark::default(),
        ),
    };
    let mut jobs = Vec::new();
    let mut read = 0u64;
    loop {
        let records = if pending.is_empty() {
            match reader.next(&pc, topic).await? {
                Some(records) => records,
                None => break,
            }
        } else {
            std::mem::take(&mut pending)
        };
        read += records.len() as u64;
        progress(partition, read);
        for r in &records {
            let Some(key) = r.record.key.as_deref() else {
                continue;
            };
            let name = String::from_utf8_lossy(key).into_owned();
            let latest = r.record.value.as_deref().map(|value| Latest {
                offset: r.offset,
                partition,
                record: ScheduleRecord::decode(value).map_err(|e| e.to_string()),
            });
            jobs.push((name, latest));
        }
        if let Some(r) = records.last() {
            mark.last = Some((r.offset, print(r)));
        }
    }
    mark.next = reader.offset().max(mark.next);
    Ok(PartitionRead {
        jobs,
        resumed: was_resumed,
        records: read,
        mark,
    })
}

/// A job in force: its last version that passes the checks.
#[derive(Debug, Clone)]
pub struct InForce {
    /// The job, checked.
    pub job: Job,
    /// The entry as the record writes it (what `export` writes back out).
    pub spec: Box<RawValue>,
    /// Who changed it.
    pub changed: Changed,
    /// The record's partition.
    pub partition: i32,
    /// The record's offset: the job's version.
    pub offset: i64,
}

/// Every job in force in the topic, by name: the last version of each that passes the checks
/// (what a dispatcher owning every shard would run), with its record; and every rejected record.
/// `progress` is told each partition's records read so far.
pub async fn in_force(
    client: &Client,
    topic: &str,
    shards: u32,
    options: &LoadOptions,
    progress: impl FnMut(i32, u64),
) -> Result<(BTreeMap<String, InForce>, Vec<Rejected>), StoreError> {
    let mut jobs = BTreeMap::new();
    let mut rejected = Vec::new();
    read_all(client, topic, shards, progress, |partition, records| {
        for edit in edits(partition, records, shards, options) {
            match edit {
                Edit::Upsert {
                    offset,
                    job,
                    changed,
                } => {
                    // The checked job came from this record: its spec decodes.
                    let spec = records
                        .binary_search_by_key(&offset, |r| r.offset)
                        .ok()
                        .and_then(|i| records[i].record.value.as_deref())
                        .and_then(|v| ScheduleRecord::decode(v).ok())
                        .map(|r| r.spec);
                    let Some(spec) = spec else { continue };
                    jobs.insert(
                        job.spec.name.clone(),
                        InForce {
                            job,
                            spec,
                            changed,
                            partition,
                            offset,
                        },
                    );
                }
                Edit::Delete { name, .. } => {
                    jobs.remove(&name);
                }
                Edit::Rejected(r) => rejected.push(r),
            }
        }
    })
    .await?;
    Ok((jobs, rejected))
}

/// One record to write: the job's name and its value (`None`: a tombstone).
#[derive(Debug, Clone)]
pub struct Write {
    /// The job's name (the key).
    pub name: String,
    /// The record value; `None` deletes the job.
    pub value: Option<Vec<u8>>,
}

impl Write {
    /// The write of `record` (`None`: a tombstone) under `name`.
    pub fn of(name: &str, record: Option<&ScheduleRecord>) -> Write {
        Write {
            name: name.to_string(),
            value: record.map(|r| ScheduleRecord::encode(&r.spec, &r.changed)),
        }
    }
}

/// Records per produce request.
const WRITE_BATCH_RECORDS: usize = 2_000;
/// Bytes per produce request (below the broker's default `message.max.bytes` of 1 MiB).
const WRITE_BATCH_BYTES: usize = 900 << 10;
/// Partitions written at once.
const WRITE_PARALLEL: usize = 8;

/// Partition clients of `topic` made afresh for each partition [`write`] writes (a metadata request
/// each); a writer that keeps its clients passes its own.
pub fn fresh_partitions<'a>(
    client: &'a Client,
    topic: &'a str,
) -> impl Fn(i32) -> futures_util::future::BoxFuture<'a, Result<Arc<PartitionClient>, StoreError>> + 'a
{
    move |partition| {
        Box::pin(async move {
            client
                .partition_client(topic.to_string(), partition, UnknownTopicHandling::Retry)
                .await
                .map(Arc::new)
                .map_err(|e| io_error("writing", topic, partition, &e))
        })
    }
}

/// One produce request of [`write`], acked.
pub struct Acked<'a> {
    /// Its partition.
    pub partition: i32,
    /// Its records' offsets, in order.
    pub offsets: &'a [i64],
    /// Records acked so far by the whole write.
    pub total: u64,
}

/// Writes `writes` to their partitions (`murmur2(name) mod shards`) through the clients
/// `partition` gives ([`fresh_partitions`], or clients the writer keeps), each acked by all
/// in-sync replicas (rskafka produces with acks=all), in order within a partition. `on_ack` is
/// told of each produce request acked. Returns each job's new offset. Transient failures are retried
/// with `retry_backoff` up to 5 times per request; anything else stops the write (what was acked
/// stays written: a second run writes only what is still missing).
pub async fn write<F, Fut>(
    partition: F,
    topic: &str,
    shards: u32,
    writes: Vec<Write>,
    at: DateTime<Utc>,
    retry_backoff: Duration,
    on_ack: impl Fn(Acked<'_>) + Send + Sync,
) -> Result<HashMap<String, i64>, StoreError>
where
    F: Fn(i32) -> Fut,
    Fut: std::future::Future<Output = Result<Arc<PartitionClient>, StoreError>>,
{
    use futures_util::stream::{self, StreamExt, TryStreamExt};
    let filter = ShardFilter::all(shards);
    let mut by_partition: BTreeMap<i32, Vec<Write>> = BTreeMap::new();
    for w in writes {
        by_partition
            .entry(filter.shard_of(&w.name) as i32)
            .or_default()
            .push(w);
    }
    let acked = std::sync::atomic::AtomicU64::new(0);
    let partition_of = &partition;
    let on_ack = &on_ack;
    let acked = &acked;
    let results: Vec<Vec<(String, i64)>> = stream::iter(by_partition)
        .map(|(partition, writes)| async move {
            let pc = partition_of(partition).await?;
            let mut offsets = Vec::with_capacity(writes.len());
            let mut batch: Vec<Record> = Vec::new();
            let mut names: Vec<String> = Vec::new();
            let mut bytes = 0;
            let mut rest = writes.into_iter().peekable();
            while let Some(w) = rest.next() {
                bytes += w.name.len() + w.value.as_ref().map_or(0, Vec::len) + 64;
                batch.push(Record {
                    key: Some(w.name.as_bytes().to_vec()),
                    value: w.value,
                    headers: BTreeMap::new(),
                    timestamp: at,
                });
                names.push(w.name);
                let full = batch.len() >= WRITE_BATCH_RECORDS || bytes >= WRITE_BATCH_BYTES;
                if full || rest.peek().is_none() {
                    let records = std::mem::take(&mut batch);
                    let produced = crate::kafka::retry(
                        &mut Backoff::new(retry_backoff).with_max(Duration::from_secs(5)),
                        || pc.produce(records.clone(), Compression::NoCompression),
                        |e, attempt, delay| tracing::warn!(message = "schedule records not written; retrying", topic, partition, attempt, error = %describe(e), retry_in_ms = delay.as_millis() as u64),
                    )
                    .await
                    .map_err(|e| io_error("writing", topic, partition, &e))?;
                    bytes = 0;
                    let n = acked.fetch_add(records.len() as u64, std::sync::atomic::Ordering::Relaxed)
                        + records.len() as u64;
                    on_ack(Acked {
                        partition,
                        offsets: &produced,
                        total: n,
                    });
                    offsets.extend(names.drain(..).zip(produced));
                }
            }
            Ok::<_, StoreError>(offsets)
        })
        .buffer_unordered(WRITE_PARALLEL)
        .try_collect()
        .await?;
    Ok(results.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::schedule::VIA_APPLY;

    fn record(offset: i64, key: &str, value: Option<String>) -> RecordAndOffset {
        RecordAndOffset {
            record: Record {
                key: Some(key.as_bytes().to_vec()),
                value: value.map(String::into_bytes),
                headers: BTreeMap::new(),
                timestamp: Utc::now(),
            },
            offset,
        }
    }

    fn value(spec: &str) -> Option<String> {
        let changed = Changed {
            at: Utc::now(),
            by: "t".into(),
            via: VIA_APPLY.into(),
            source: None,
        };
        let spec = RawValue::from_string(spec.into()).unwrap();
        Some(String::from_utf8(ScheduleRecord::encode(&spec, &changed)).unwrap())
    }

    /// A name whose shard of `shards` is `shard` (found by murmur2, the partitioner's hash).
    fn name_in(shard: u32, shards: u32, prefix: &str) -> String {
        let filter = ShardFilter::all(shards);
        (0..)
            .map(|i| format!("{prefix}-{i}"))
            .find(|n| filter.shard_of(n) == shard)
            .unwrap()
    }

    #[test]
    fn each_record_becomes_its_own_edit_and_a_bad_one_is_rejected_with_the_checkers_words() {
        let shards = 4;
        let a = name_in(1, shards, "a");
        let b = name_in(1, shards, "b");
        let other = name_in(2, shards, "c");
        let job = |name: &str, cron: &str| {
            value(&format!(
                r#"{{"jobName":"{name}","job":"x","cronTime":"{cron}"}}"#
            ))
        };
        let records = [
            record(10, &a, job(&a, "*/5 * * * *")),
            record(11, &b, job(&b, "61 * * * *")),
            record(12, &a, None),
            record(13, &other, job(&other, "* * * * *")),
            record(14, &b, job(&a, "* * * * *")),
            record(15, &b, Some("{not json".into())),
            record(
                16,
                &b,
                value(r#"{"jobName":"x","job":"y","cronTme":"* * * * *"}"#),
            ),
        ];
        let out = edits(1, &records, shards, &LoadOptions::default());
        assert_eq!(out.len(), records.len(), "one edit per record");
        assert!(
            matches!(&out[0], Edit::Upsert { offset: 10, job, .. } if job.spec.name == a && &*job.spec.cron_time == "*/5 * * * *")
        );
        let reason = |e: &Edit| match e {
            Edit::Rejected(r) => r.reason.clone(),
            other => panic!("expected a rejection, got {other:?}"),
        };
        assert!(
            reason(&out[1]).contains("cronTime: minute: 61 is out of range 0-59"),
            "{}",
            reason(&out[1])
        );
        assert!(matches!(&out[2], Edit::Delete { offset: 12, name } if *name == a));
        assert!(reason(&out[3]).contains("written to partition 1, but the job's shard is 2"));
        assert!(reason(&out[4]).contains("the key must be the job's name"));
        assert!(reason(&out[5]).starts_with("not a schedule record"));
        let typo = reason(&out[6]);
        assert!(typo.contains("unknown field \"cronTme\""), "{typo}");
        assert!(typo.contains("did you mean \"cronTime\""), "{typo}");
        assert!(typo.contains("cronTime: missing (required)"), "{typo}");
    }
}
