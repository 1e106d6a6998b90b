//! Ingest: one rdkafka consumer over every topic the monitor reads, its partitions assigned by
//! hand from the positions kept in the database (no consumer group: the database is the only
//! place a position lives), each batch applied in one transaction with the positions it reached.
//! The same loop runs the judge (late and missed runs) once ingest has caught up, and follows the
//! schedule (a file's MD5, or the schedule topic's records).
//!
//! ```text
//!  job topics ──┐   poll ──► decode (wire) ──► Ingested ──┐
//!  results ─────┤           malformed: counted, logged     ├─► RunStore::ingest (one transaction:
//!  dead letters ┤           with topic/partition/offset,   │   rows, alerts, outbox, positions)
//!  <g>.control ─┤           skipped                        │
//!  <g>.schedule ┘ ──► the jobs in force (and the audit) ───┴─► every second, once caught up:
//!                                                              RunStore::judge (late, missed)
//! ```
//!
//! It is a blocking loop on a thread of its own (librdkafka's poll and SQLite both block); the
//! service stops it through a cancellation token.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use rskafka::record::{Record, RecordAndOffset};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::judge::{self, Defaults};
use super::metrics::Metrics;
use super::store::{Ingested, Pass, RunStore, Source};
use crate::clock::Clock;
use crate::kafka::{Connection, KafkaContext};
use crate::obs::health::Health;
use crate::schedule::{Job, LoadOptions};
use crate::wire::control::ControlRecord;
use crate::wire::job::{JobMessage, HEADER_BY, HEADER_REASON};
use crate::wire::result::{DeadLetter, JobResult};
use crate::wire::schedule::{key_name, ScheduleRecord};

/// The most records one transaction takes.
const BATCH_RECORDS: usize = 2000;
/// How long a batch gathers records once the first has arrived.
const BATCH_WAIT: Duration = Duration::from_millis(100);
/// How often the judge runs (real time).
const JUDGE_EVERY: Duration = Duration::from_secs(1);
/// How often topics are looked up again (new partitions, topics created later) and the lag
/// measured.
const REFRESH_EVERY: Duration = Duration::from_secs(5);
/// How long a metadata or watermark request may take.
const METADATA_TIMEOUT: Duration = Duration::from_secs(5);

/// Why ingest stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The consumer could not be made.
    #[error("cannot create the monitor's Kafka consumer: {0}")]
    Consumer(String),
    /// The database refused a batch.
    #[error(transparent)]
    Store(#[from] super::store::StoreError),
}

/// Where the jobs in force come from.
#[derive(Debug)]
pub enum ScheduleSource {
    /// `--schedule FILE`: reloaded when its MD5 changes; a bad version keeps the last good one.
    File {
        /// The file.
        path: PathBuf,
        /// MD5 of the version in force.
        md5: [u8; 16],
    },
    /// `--schedule-topic`: `<group>.schedule`, read whole at start, then kept current from the
    /// ingest stream. Ingest reads the topic from its own position, so after a restart it
    /// replays versions older than those read at start; they are replayed in order up to the
    /// newest, and nothing is judged before ingest has caught up.
    Topic {
        /// The topic.
        topic: String,
        /// Its partitions (the group's shards).
        shards: u32,
    },
    /// No schedule: nothing is judged missed, and deadlines use the defaults.
    None,
}

/// What ingest reads and how it judges.
pub struct IngestConfig {
    /// Kafka.
    pub kafka: Connection,
    /// `--topic`: the job topic of jobs without their own.
    pub default_topic: String,
    /// `--results-topic`.
    pub results_topic: String,
    /// `--dlq-topic`.
    pub dlq_topic: String,
    /// `<group>.control`, when a group is given.
    pub control_topic: Option<String>,
    /// `--missed-after`.
    pub missed_after: Duration,
    /// The deadline's defaults.
    pub defaults: Defaults,
    /// The schedule's checks (zone, catch-up defaults, limits).
    pub load_options: LoadOptions,
}

/// The partitions assigned, and the high watermark each had when first assigned (ready once
/// reached).
type Reading<'a> = (
    &'a mut BTreeSet<(String, i32)>,
    &'a mut BTreeMap<(String, i32), i64>,
);

/// The ingest loop's state.
pub struct Ingest<S: RunStore> {
    config: IngestConfig,
    store: S,
    source: ScheduleSource,
    jobs: BTreeMap<String, Job>,
    /// `jobs` as the judge's list, made again only after the schedule changed (not every pass).
    listed: Option<Vec<Job>>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Jobs,
    Results,
    Dlq,
    Control,
    Schedule,
}

impl<S: RunStore> Ingest<S> {
    /// Ingest into `store`, the schedule `jobs` (from `source`) in force.
    pub fn new(
        config: IngestConfig,
        store: S,
        source: ScheduleSource,
        jobs: Vec<Job>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        health: Arc<Health>,
    ) -> Ingest<S> {
        Ingest {
            config,
            store,
            source,
            jobs: jobs.into_iter().map(|j| (j.spec.name.clone(), j)).collect(),
            listed: None,
            clock,
            metrics,
            health,
        }
    }

    /// The topics to read, and what each holds.
    fn topics(&self) -> BTreeMap<String, Kind> {
        let mut topics: BTreeMap<String, Kind> = BTreeMap::new();
        topics.insert(self.config.default_topic.clone(), Kind::Jobs);
        for job in self.jobs.values() {
            if let Some(t) = &job.spec.topic {
                topics.insert(t.clone(), Kind::Jobs);
            }
        }
        topics.insert(self.config.results_topic.clone(), Kind::Results);
        topics.insert(self.config.dlq_topic.clone(), Kind::Dlq);
        if let Some(c) = &self.config.control_topic {
            topics.insert(c.clone(), Kind::Control);
        }
        if let ScheduleSource::Topic { topic, .. } = &self.source {
            topics.insert(topic.clone(), Kind::Schedule);
        }
        topics
    }

    /// Runs until `token` is cancelled; an error of the database stops it.
    pub fn run(mut self, token: &CancellationToken) -> Result<(), IngestError> {
        let consumer: BaseConsumer<KafkaContext> = self
            .config
            .kafka
            .rdkafka()
            // librdkafka wants a group id for assign(); the consumer never joins it nor commits.
            .set("group.id", "cronq-monitor")
            .set("client.id", "cronq-monitor")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("fetch.wait.max.ms", "200")
            .create_with_context(self.config.kafka.context("monitor"))
            .map_err(|e| IngestError::Consumer(e.to_string()))?;
        // Topic look-ups and watermarks go through a client of their own: asked of the reading
        // consumer, each waits behind its fetch, which the broker holds for fetch.wait.max.ms
        // when nothing is new (~200 ms a partition, measured), and ingest stalled behind them.
        let probe: BaseConsumer<KafkaContext> = self
            .config
            .kafka
            .rdkafka()
            .set("group.id", "cronq-monitor")
            .set("client.id", "cronq-monitor-probe")
            .set("enable.auto.commit", "false")
            .create_with_context(self.config.kafka.context("monitor probe"))
            .map_err(|e| IngestError::Consumer(e.to_string()))?;
        let mut positions = self.store.positions()?;
        let mut assigned: BTreeSet<(String, i32)> = BTreeSet::new();
        // The high watermarks when each partition was first assigned: ready once reached.
        let mut start_marks: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut ready = false;
        let mut last_refresh: Option<Instant> = None;
        let mut last_judge = Instant::now();
        let mut kinds = self.topics();
        let beat = self.health.heartbeat("ingest", Duration::from_secs(60));
        while !token.is_cancelled() {
            beat.beat();
            if last_refresh.is_none_or(|t| t.elapsed() >= REFRESH_EVERY) {
                last_refresh = Some(Instant::now());
                self.reload_file();
                kinds = self.topics();
                self.refresh(
                    &consumer,
                    &probe,
                    &kinds,
                    &positions,
                    (&mut assigned, &mut start_marks),
                    token,
                );
                if !ready {
                    ready = !start_marks.is_empty()
                        && start_marks
                            .iter()
                            .all(|(tp, &hw)| positions.get(tp).copied().unwrap_or(0) >= hw);
                    self.health.set(
                        "caught up",
                        ready,
                        if ready {
                            "ingest reached the high watermarks seen at start".to_string()
                        } else {
                            "reading the topics up to the high watermarks seen at start".to_string()
                        },
                    );
                    if ready {
                        info!(message = "monitor caught up", partitions = assigned.len());
                    }
                }
            }
            let mut batch: Vec<Ingested> = Vec::new();
            let mut moved: BTreeMap<(String, i32), i64> = BTreeMap::new();
            let started = Instant::now();
            let mut wait = Duration::from_millis(200);
            while batch.len() < BATCH_RECORDS && started.elapsed() < BATCH_WAIT + wait {
                match consumer.poll(wait) {
                    None => break,
                    Some(Ok(m)) => {
                        let tp = (m.topic().to_string(), m.partition());
                        if positions.get(&tp).is_some_and(|&n| m.offset() < n) {
                            continue; // read already
                        }
                        if let Some(&kind) = kinds.get(m.topic()) {
                            self.decode(kind, &m, &mut batch);
                        }
                        moved.insert(tp.clone(), m.offset() + 1);
                        positions.insert(tp, m.offset() + 1);
                    }
                    Some(Err(e)) => {
                        warn!(message = "monitor: reading Kafka failed; retrying", error = %e);
                        break;
                    }
                }
                wait = Duration::ZERO;
            }
            if !moved.is_empty() {
                let now = self.clock.now();
                let jobs = &self.jobs;
                let defaults = self.config.defaults;
                let deadline = |job: &str, slot: DateTime<Utc>, message: Option<&JobMessage>| {
                    judge::deadline(slot, jobs.get(job), message, &defaults)
                };
                let applied = self.store.ingest(&batch, &moved, now, &deadline)?;
                self.metrics.applied(&applied);
            }
            if ready && last_judge.elapsed() >= JUDGE_EVERY {
                last_judge = Instant::now();
                let all = &self.jobs;
                let jobs = self
                    .listed
                    .get_or_insert_with(|| all.values().cloned().collect());
                let applied = self.store.judge(&Pass {
                    now: self.clock.now(),
                    missed_after: self.config.missed_after,
                    jobs,
                })?;
                self.metrics.applied(&applied);
            }
        }
        crate::kafka::close_apart(consumer);
        crate::kafka::close_apart(probe);
        Ok(())
    }

    /// Looks the topics up again (through `probe`): assigns `consumer` the partitions not yet read
    /// (from their position, else the beginning) and measures the lag.
    fn refresh(
        &self,
        consumer: &BaseConsumer<KafkaContext>,
        probe: &BaseConsumer<KafkaContext>,
        kinds: &BTreeMap<String, Kind>,
        positions: &BTreeMap<(String, i32), i64>,
        (assigned, start_marks): Reading<'_>,
        token: &CancellationToken,
    ) {
        let mut wanted = assigned.clone();
        for topic in kinds.keys() {
            // With the broker away each look-up waits its timeout: a stop must not wait for all.
            if token.is_cancelled() {
                return;
            }
            match probe.fetch_metadata(Some(topic), METADATA_TIMEOUT) {
                Ok(meta) => {
                    for t in meta.topics().iter().filter(|t| t.error().is_none()) {
                        for p in t.partitions() {
                            wanted.insert((t.name().to_string(), p.id()));
                        }
                    }
                }
                Err(e) => {
                    warn!(message = "monitor: cannot look up a topic; retrying", topic = %topic, error = %e)
                }
            }
        }
        if wanted != *assigned {
            let mut tpl = TopicPartitionList::new();
            let mut ok = true;
            for (topic, partition) in &wanted {
                let at = match positions.get(&(topic.clone(), *partition)) {
                    Some(&n) => Offset::Offset(n),
                    None => Offset::Beginning,
                };
                ok &= tpl.add_partition_offset(topic, *partition, at).is_ok();
            }
            match consumer.assign(&tpl) {
                Ok(()) if ok => {
                    info!(message = "monitor reads", partitions = wanted.len());
                    *assigned = wanted;
                }
                Ok(()) => {}
                Err(e) => {
                    warn!(message = "monitor: cannot assign partitions; retrying", error = %e)
                }
            }
        }
        let mut lag = 0i64;
        for tp in assigned.iter() {
            if let Ok((_, high)) = probe.fetch_watermarks(&tp.0, tp.1, METADATA_TIMEOUT) {
                start_marks.entry(tp.clone()).or_insert(high);
                lag += (high - positions.get(tp).copied().unwrap_or(0)).max(0);
            }
        }
        self.metrics.ingest_lag.set(lag);
    }

    /// Reloads the schedule file when its MD5 changed; a bad version keeps the last good one.
    fn reload_file(&mut self) {
        let ScheduleSource::File { path, md5 } = &mut self.source else {
            return;
        };
        let Ok(bytes) = std::fs::read(&*path) else {
            warn!(message = "monitor: cannot read the schedule file; keeping the last good version", path = %path.display());
            return;
        };
        let digest = md5::compute(&bytes).0;
        if digest == *md5 {
            return;
        }
        *md5 = digest;
        match crate::schedule::parse(&bytes, path, self.config.load_options.clone()) {
            Ok(schedule) => {
                info!(message = "monitor: schedule reloaded", path = %path.display(), jobs = schedule.jobs.len());
                self.listed = None;
                self.jobs = schedule
                    .jobs
                    .into_iter()
                    .map(|j| (j.spec.name.clone(), j))
                    .collect();
            }
            Err(e) => {
                warn!(message = "monitor: the new schedule file is not valid; keeping the last good version", error = %e)
            }
        }
    }

    /// Decodes one record into `batch`; a record that does not decode is counted and logged.
    fn decode(&mut self, kind: Kind, m: &BorrowedMessage<'_>, batch: &mut Vec<Ingested>) {
        let source = Source {
            topic: m.topic().to_string(),
            partition: m.partition(),
            offset: m.offset(),
        };
        let key = m.key().unwrap_or_default();
        let at = m
            .timestamp()
            .to_millis()
            .and_then(DateTime::from_timestamp_millis)
            .unwrap_or_else(|| self.clock.now());
        let decoded: Result<Option<Ingested>, String> = match (kind, m.payload()) {
            (Kind::Schedule, value) => self.schedule_record(key, value, at, source.clone()),
            (_, None) => Ok(None), // a tombstone of another writer: nothing to record
            (Kind::Jobs, Some(value)) => {
                crate::wire::job::parse_message(key, value).map(|message| {
                    let header = |name: &str| {
                        m.headers().and_then(|h| {
                            h.iter()
                                .find(|h| h.key == name)
                                .and_then(|h| h.value)
                                .map(|v| String::from_utf8_lossy(v).into_owned())
                        })
                    };
                    Some(Ingested::Dispatched {
                        message,
                        at,
                        by: header(HEADER_BY),
                        reason: header(HEADER_REASON),
                        source: source.clone(),
                    })
                })
            }
            (Kind::Results, Some(value)) => serde_json::from_slice::<JobResult>(value)
                .map(|r| Some(Ingested::Reported(r)))
                .map_err(|e| e.to_string()),
            (Kind::Dlq, Some(value)) => serde_json::from_slice::<DeadLetter>(value)
                .map(|l| Some(Ingested::DeadLettered(Box::new(l))))
                .map_err(|e| e.to_string()),
            (Kind::Control, Some(value)) => ControlRecord::decode(value).and_then(|record| {
                record.check(&String::from_utf8_lossy(key)).map(|()| {
                    Some(Ingested::Control {
                        record,
                        source: source.clone(),
                    })
                })
            }),
        };
        match decoded {
            Ok(Some(ingested)) => batch.push(ingested),
            Ok(None) => {}
            Err(reason) => {
                self.metrics.rejected(&source.topic);
                warn!(
                    message = "monitor: a record does not decode; skipped",
                    topic = %source.topic,
                    partition = source.partition,
                    offset = source.offset,
                    error = %reason,
                );
            }
        }
    }

    /// A schedule topic record: the audit entry, and (past what was read whole at start) the job's
    /// new version in force.
    fn schedule_record(
        &mut self,
        key: &[u8],
        value: Option<&[u8]>,
        at: DateTime<Utc>,
        source: Source,
    ) -> Result<Option<Ingested>, String> {
        let ScheduleSource::Topic { shards, .. } = &self.source else {
            return Ok(None);
        };
        let name = key_name(key).map_err(|e| e.to_string())?.to_string();
        let changed = match value {
            Some(v) => Some(
                ScheduleRecord::decode(v)
                    .map_err(|e| e.to_string())?
                    .changed,
            ),
            None => None,
        };
        {
            let record = RecordAndOffset {
                record: Record {
                    key: Some(key.to_vec()),
                    value: value.map(<[u8]>::to_vec),
                    headers: BTreeMap::new(),
                    timestamp: at,
                },
                offset: source.offset,
            };
            for edit in crate::store::edits(
                source.partition,
                &[record],
                *shards,
                &self.config.load_options,
            ) {
                match edit {
                    crate::store::Edit::Upsert { job, .. } => {
                        self.listed = None;
                        self.jobs.insert(job.spec.name.clone(), job);
                    }
                    crate::store::Edit::Delete { name, .. } => {
                        self.listed = None;
                        self.jobs.remove(&name);
                    }
                    crate::store::Edit::Rejected(r) => {
                        warn!(message = "monitor: a schedule record does not pass the checks; the job's last good version stays in force", rejected = %r)
                    }
                }
            }
        }
        Ok(Some(Ingested::Schedule {
            job: name,
            changed,
            at,
            source,
        }))
    }
}
