//! The Kafka side of the jobs API on one member: the shards it owns (their writes serialised, one
//! async mutex per shard), one record written with acks=all or read back at its offset, a batch
//! written as `store::write` writes, and the directory of the other shards' owners.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::Client;
use rskafka::record::Record;

use super::book::{Directory, Versions};
use crate::clock::Clock;
use crate::dispatcher::group::StateTopic;
use crate::dispatcher::own_writes::OwnWrites;
use crate::dispatcher::status::STALE_AFTER;
use crate::kafka::{describe, Backoff};
use crate::obs::client::HttpClient;
use crate::schedule::Job;
use crate::schedule::{LoadOptions, ShardFilter};
use crate::store::{self, Edit, StoreError};
use crate::wire::schedule::Changed;
use crate::wire::schedule::{ScheduleRecord, MAX_SCHEDULE_RECORD_BYTES};

/// How long one write or read of the schedule topic may take before the request fails (503).
pub const KAFKA_TIMEOUT: Duration = Duration::from_secs(30);

/// How often, at most, the directory is read afresh from the cursor records when a request needs
/// a shard whose owner is not known.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// What the service gives the API once it has joined the group (topic mode).
pub struct CoreSetup {
    /// The Kafka client.
    pub client: Arc<Client>,
    /// `<group>.schedule`.
    pub topic: String,
    /// The group's shard count.
    pub shards: u32,
    /// The checker's settings (zone, catch-up and size defaults of the member).
    pub options: LoadOptions,
    /// Fed by the schedule topic follower.
    pub versions: Arc<Versions>,
    /// Fed by the orphan watchdog.
    pub directory: Arc<Directory>,
    /// The state topic (the directory's refresh).
    pub state: Arc<StateTopic>,
    /// The dispatcher's clock (a cursor's age).
    pub clock: Arc<dyn Clock>,
    /// First retry delay of a failed write.
    pub retry_backoff: Duration,
    /// The follower's intake of the API's own acked records.
    pub(crate) own_writes: Option<Arc<OwnWrites>>,
}

/// The follower's edit of a record the API wrote of `name` at `offset`: its job as the API
/// checked it, or, for a record without a value, its deletion; None when the job is not known
/// here (the follower then reads the record back).
fn own_edit(offset: i64, name: &str, value: bool, job: Option<(Job, Changed)>) -> Option<Edit> {
    match (value, job) {
        (true, Some((job, changed))) => Some(Edit::Upsert {
            offset,
            job,
            changed,
        }),
        (false, _) => Some(Edit::Delete {
            offset,
            name: name.to_string(),
        }),
        (true, None) => None,
    }
}

/// The API's Kafka side.
pub struct Core {
    pub(super) client: Arc<Client>,
    pub(super) topic: String,
    pub(super) shards: u32,
    pub(super) options: LoadOptions,
    pub(super) versions: Arc<Versions>,
    pub(super) directory: Arc<Directory>,
    state: Arc<StateTopic>,
    clock: Arc<dyn Clock>,
    retry_backoff: Duration,
    own_writes: Option<Arc<OwnWrites>>,
    writers: Vec<tokio::sync::Mutex<()>>,
    partitions: tokio::sync::Mutex<Vec<Option<Arc<PartitionClient>>>>,
    refreshed: Mutex<Option<Instant>>,
    pub(super) http: HttpClient,
}

/// Why a record could not be read back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// Kafka failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No record at the offset (compacted away since: the job changed meanwhile).
    #[error(
        "no record of {name:?} at offset {offset} of partition {partition} (changed meanwhile?)"
    )]
    Gone {
        /// The job.
        name: String,
        /// The partition.
        partition: i32,
        /// The offset.
        offset: i64,
    },
    /// The record does not decode.
    #[error("partition {partition} offset {offset}: {reason}")]
    Undecodable {
        /// The partition.
        partition: i32,
        /// The offset.
        offset: i64,
        /// Why.
        reason: String,
    },
    /// No answer within [`KAFKA_TIMEOUT`].
    #[error("Kafka gave no answer within {0:?}")]
    TimedOut(Duration),
}

impl Core {
    /// The API's Kafka side.
    pub fn new(setup: CoreSetup) -> Core {
        let mut options = setup.options;
        options.shards = ShardFilter::all(setup.shards);
        Core {
            writers: (0..setup.shards)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            partitions: tokio::sync::Mutex::new(vec![None; setup.shards as usize]),
            client: setup.client,
            topic: setup.topic,
            shards: setup.shards,
            options,
            versions: setup.versions,
            directory: setup.directory,
            state: setup.state,
            clock: setup.clock,
            retry_backoff: setup.retry_backoff,
            own_writes: setup.own_writes,
            refreshed: Mutex::new(None),
            http: HttpClient::new(Duration::from_secs(30), 64 << 20),
        }
    }

    /// `name`'s shard.
    pub fn shard_of(&self, name: &str) -> u32 {
        ShardFilter::all(self.shards).shard_of(name)
    }

    /// The write lock of `shard`: API writes of one shard go one at a time.
    pub async fn lock_shard(&self, shard: u32) -> tokio::sync::MutexGuard<'_, ()> {
        self.writers[shard as usize % self.writers.len()]
            .lock()
            .await
    }

    async fn partition(&self, shard: u32) -> Result<Arc<PartitionClient>, StoreError> {
        let mut parts = self.partitions.lock().await;
        if let Some(pc) = &parts[shard as usize] {
            return Ok(Arc::clone(pc));
        }
        let pc = self
            .client
            .partition_client(
                self.topic.clone(),
                shard as i32,
                UnknownTopicHandling::Retry,
            )
            .await
            .map_err(|e| StoreError::Io {
                what: "writing",
                topic: self.topic.clone(),
                partition: shard as i32,
                reason: describe(&e),
            })?;
        let pc = Arc::new(pc);
        parts[shard as usize] = Some(Arc::clone(&pc));
        Ok(pc)
    }

    async fn forget(&self, shard: u32) {
        self.partitions.lock().await[shard as usize] = None;
    }

    /// Writes one record (`None`: a tombstone) of `name` and waits for acks=all; its offset.
    /// `job` is the record's job as the API checked it (with who changed it): the follower takes
    /// it from here, not from the broker.
    pub async fn write_one(
        &self,
        name: &str,
        value: Option<Vec<u8>>,
        job: Option<(Job, Changed)>,
    ) -> Result<i64, StoreError> {
        let shard = self.shard_of(name);
        let record = Record {
            key: Some(name.as_bytes().to_vec()),
            value,
            headers: BTreeMap::new(),
            timestamp: Utc::now(),
        };
        let io = |reason: String| StoreError::Io {
            what: "writing",
            topic: self.topic.clone(),
            partition: shard as i32,
            reason,
        };
        let pc = self.partition(shard).await?;
        let topic = &self.topic;
        let _writing = self.own_writes.as_ref().map(|o| o.begin([shard]));
        let produced = tokio::time::timeout(
            KAFKA_TIMEOUT,
            crate::kafka::retry(
                &mut Backoff::new(self.retry_backoff).with_max(Duration::from_secs(5)),
                || pc.produce(vec![record.clone()], Compression::NoCompression),
                |e, attempt, delay| tracing::warn!(message = "API write not acked; retrying", topic = %topic, partition = shard, attempt, error = %describe(e), retry_in_ms = delay.as_millis() as u64),
            ),
        )
        .await;
        match produced {
            Ok(Ok(offsets)) => {
                if let (Some(own), Some(&offset)) = (&self.own_writes, offsets.first()) {
                    let edit = own_edit(offset, name, record.value.is_some(), job);
                    own.acked(shard, edit.into_iter().collect());
                }
                offsets
                    .first()
                    .copied()
                    .ok_or_else(|| io("the broker acked no offset".into()))
            }
            Ok(Err(e)) => {
                self.forget(shard).await;
                Err(io(describe(&e)))
            }
            Err(_) => {
                self.forget(shard).await;
                Err(io(format!("no ack within {KAFKA_TIMEOUT:?}")))
            }
        }
    }

    /// Writes a batch of the shards this member owns (`store::write`: batched per partition,
    /// acks=all); each job's new offset. `jobs` are the writes' jobs as the API checked them (None
    /// for a delete), all `changed` alike: the follower takes them from here.
    pub async fn write_batch(
        &self,
        writes: Vec<store::Write>,
        jobs: Vec<Option<Job>>,
        changed: &Changed,
    ) -> Result<std::collections::HashMap<String, i64>, StoreError> {
        // Each partition's writes in the order `store::write` produces them, as (name, a value
        // written, the checked job), for the follower; the partitions paused meanwhile.
        type Pending = (String, bool, Option<Job>);
        let mut pending: BTreeMap<u32, VecDeque<Pending>> = BTreeMap::new();
        if self.own_writes.is_some() {
            for (w, job) in writes.iter().zip(jobs) {
                pending
                    .entry(self.shard_of(&w.name))
                    .or_default()
                    .push_back((w.name.clone(), w.value.is_some(), job));
            }
        }
        let _writing = self
            .own_writes
            .as_ref()
            .map(|o| o.begin(pending.keys().copied()));
        let pending = Mutex::new(pending);
        // Through this member's partition clients: no metadata request per batch.
        let written = store::write(
            |p| self.partition(p as u32),
            &self.topic,
            self.shards,
            writes,
            Utc::now(),
            self.retry_backoff,
            |a| {
                let Some(own) = &self.own_writes else {
                    return;
                };
                let shard = a.partition as u32;
                let mut all = pending.lock().unwrap_or_else(|e| e.into_inner());
                let Some(queue) = all.get_mut(&shard) else {
                    return;
                };
                let n = a.offsets.len().min(queue.len());
                let edits: Option<Vec<Edit>> = queue
                    .drain(..n)
                    .zip(a.offsets)
                    .map(|((name, value, job), &offset)| {
                        own_edit(offset, &name, value, job.map(|j| (j, changed.clone())))
                    })
                    .collect();
                // A request with a record not known here is read back whole.
                if let Some(edits) = edits.filter(|e| e.len() == a.offsets.len()) {
                    own.acked(shard, edits);
                }
            },
        )
        .await;
        if written.is_err() {
            // A client that failed may point at a leader that moved: made afresh next time.
            for shard in 0..self.shards {
                self.forget(shard).await;
            }
        }
        written
    }

    /// The record of `name` at `offset` of its partition, read back from Kafka (one fetch).
    pub async fn read_one(&self, name: &str, offset: i64) -> Result<ScheduleRecord, ReadError> {
        let shard = self.shard_of(name);
        let partition = shard as i32;
        let pc = self.partition(shard).await?;
        let fetched = tokio::time::timeout(
            KAFKA_TIMEOUT,
            pc.fetch_records(
                offset,
                1..(MAX_SCHEDULE_RECORD_BYTES as i32 + (64 << 10)),
                100,
            ),
        )
        .await;
        let records = match fetched {
            Err(_) => return Err(ReadError::TimedOut(KAFKA_TIMEOUT)),
            Ok(Err(e)) => {
                self.forget(shard).await;
                return Err(StoreError::Io {
                    what: "reading",
                    topic: self.topic.clone(),
                    partition,
                    reason: describe(&e),
                }
                .into());
            }
            Ok(Ok((records, _))) => records,
        };
        let gone = || ReadError::Gone {
            name: name.to_string(),
            partition,
            offset,
        };
        let record = records
            .into_iter()
            .find(|r| r.offset == offset)
            .ok_or_else(gone)?;
        if record.record.key.as_deref() != Some(name.as_bytes()) {
            return Err(gone());
        }
        let value = record.record.value.ok_or_else(gone)?;
        ScheduleRecord::decode(&value).map_err(|e| ReadError::Undecodable {
            partition,
            offset,
            reason: e.to_string(),
        })
    }

    /// The API URL of `shard`'s owner, if its record is fresh; the directory is read afresh (at
    /// most once a second) when it does not know.
    pub async fn owner_url(&self, shard: u32) -> Option<String> {
        if let Some(url) = self.known_url(shard) {
            return Some(url);
        }
        self.refresh().await;
        self.known_url(shard)
    }

    fn known_url(&self, shard: u32) -> Option<String> {
        self.directory
            .owner(shard, self.clock.now(), STALE_AFTER)
            .and_then(|o| o.url)
    }

    /// Reads every shard's newest cursor into the directory, unless that was done within the last
    /// second.
    pub async fn refresh(&self) {
        {
            let mut at = self.refreshed.lock().unwrap_or_else(|e| e.into_inner());
            if at.is_some_and(|t| t.elapsed() < REFRESH_EVERY) {
                return;
            }
            *at = Some(Instant::now());
        }
        let reads = self.state.all(self.shards).await;
        self.directory
            .update(reads.iter().filter_map(|r| r.cursor.as_ref()));
    }
}
