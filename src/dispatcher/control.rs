//! Pause and resume: the operator's records on the group's control topic, and what a dispatcher
//! makes of them.
//!
//! ```text
//!  cronq pause/resume ──► <group>.control (1 partition, compacted; key = jobName, " " = --all)
//!                                │ every member follows it: from the start to the high watermark
//!                                ▼ at start and before each takeover, then long-polled
//!                          ControlFollower ──► PauseTable (latest record per key) ──► TickLoop
//!     run_minute_at ──► due jobs ──► Pauses::apply_minute: paused slots out (counted `paused`),
//!                                    the paused slots a pause's end sends (the job's catch-up rule)
//! ```
//!
//! A record describes one paused interval `[since, until)` of a job (or of every job): a pause
//! writes `paused: true` with `until` absent (or its `--until`), a resume writes `paused: false`
//! with the interval it closed. A slot inside an interval is *paused*: it is not sent when its
//! minute is handed out, and the shard's cursor moves past it (it is decided, not lost). When the
//! interval ends (a resume, or `until` reached) the job's catch-up rule decides about its paused
//! slots exactly as about slots missed in downtime, counted back from the first minute after the
//! end, in which they are sent; `dropMissed` sends none.
//!
//! Whether a slot is paused is a function of the records alone, never of when a member read them,
//! so a member that takes a shard over decides the shard's slots as the previous owner did. The
//! latest record of a key wins; nothing relies on the broker compacting the topic (tansu 0.6 does
//! not), compaction only bounds its size. Resumes are explicit records, not tombstones, because the
//! catch-up needs the interval; a tombstone (from a tool that cleans up) just forgets the key.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::Client;
use rskafka::record::Record;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use super::catchup::{admit, window_minutes};
use super::scheduler::{Dispatch, Scheduler};
use crate::clock::Minute;
use crate::cron::CronExpr;
use crate::kafka::admin::{ensure_topic, TopicAdmin, TopicError, TopicSpec};
use crate::kafka::{describe, is_permanent, Backoff, Connection};
use crate::schedule::JobSpec;

/// The key of `--all` records: one space. The schedule loader refuses a `jobName` that is empty or
/// only white space, so no job can ever have this key.
pub const ALL_KEY: &str = " ";

/// Version of the record format.
pub const RECORD_VERSION: u32 = 1;

/// The control topic of dispatcher group `group`.
pub fn control_topic(group: &str) -> String {
    format!("{group}.control")
}

/// One control record: a paused interval of one job (`job`) or of every job (`job` absent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ControlRecord {
    /// Format version ([`RECORD_VERSION`]).
    pub v: u32,
    /// The job; `None` for `--all`.
    pub job: Option<String>,
    /// `true`: a pause in force (until `until`, if set); `false`: a resume, the pause is over.
    pub paused: bool,
    /// Why, as the operator said (`--reason`); a resume keeps its pause's.
    pub reason: Option<String>,
    /// Start of the paused interval (RFC 3339): slots at or after it are paused.
    #[serde(with = "instant")]
    pub since: DateTime<Utc>,
    /// End of the paused interval (exclusive): the pause's `--until`, or the resume's instant.
    #[serde(with = "instant::optional", default)]
    pub until: Option<DateTime<Utc>>,
    /// When the interval ends, send none of its paused slots, whatever the job's catch-up rule.
    #[serde(default)]
    pub drop_missed: bool,
    /// Who wrote it: `user@host`.
    pub by: String,
    /// When it was written (RFC 3339).
    #[serde(with = "instant")]
    pub at: DateTime<Utc>,
}

/// RFC 3339 (whole seconds, `Z`) on the wire.
mod instant {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Secs, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }

    pub mod optional {
        use super::*;

        pub fn serialize<S: Serializer>(
            at: &Option<DateTime<Utc>>,
            s: S,
        ) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => super::serialize(at, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Option<DateTime<Utc>>, D::Error> {
            match Option::<String>::deserialize(d)? {
                None => Ok(None),
                Some(text) => DateTime::parse_from_rfc3339(&text)
                    .map(|t| Some(t.with_timezone(&Utc)))
                    .map_err(serde::de::Error::custom),
            }
        }
    }
}

impl ControlRecord {
    /// The record's key: the job's name, or [`ALL_KEY`].
    pub fn key(&self) -> &str {
        self.job.as_deref().unwrap_or(ALL_KEY)
    }

    /// The slot at `at` is inside the paused interval.
    pub fn covers(&self, at: DateTime<Utc>) -> bool {
        self.since <= at && self.until.is_none_or(|u| at < u)
    }

    /// The pause is in force at `now`: not resumed, and `until` (if any) not reached.
    pub fn in_force(&self, now: DateTime<Utc>) -> bool {
        self.paused && self.until.is_none_or(|u| now < u)
    }

    /// The minute the interval's end is applied in: the first minute starting at or after
    /// `until` (its slot is the first one the interval no longer covers). `None` while open.
    pub fn ends_in(&self) -> Option<Minute> {
        let until = self.until?;
        let m = Minute::containing(until);
        Some(if m.start() == Some(until) {
            m
        } else {
            m.next()
        })
    }

    /// Decodes a record's value.
    pub fn decode(value: &[u8]) -> Result<ControlRecord, String> {
        let r: ControlRecord = serde_json::from_slice(value).map_err(|e| e.to_string())?;
        if r.v != RECORD_VERSION {
            return Err(format!(
                "record version {} (this cronq reads {RECORD_VERSION})",
                r.v
            ));
        }
        Ok(r)
    }

    /// The record as JSON, as written.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The latest record of every key: what is, was and will be paused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PauseTable {
    jobs: BTreeMap<String, ControlRecord>,
    all: Option<ControlRecord>,
}

impl PauseTable {
    /// Applies the record at `key` (`None`: a tombstone, the key is forgotten). A later record
    /// always wins over an earlier one of the same key.
    pub fn apply(&mut self, key: &str, record: Option<ControlRecord>) {
        if key == ALL_KEY {
            self.all = record;
        } else {
            match record {
                Some(r) => {
                    self.jobs.insert(key.to_string(), r);
                }
                None => {
                    self.jobs.remove(key);
                }
            }
        }
    }

    /// The latest record of `key` (a job's name or [`ALL_KEY`]).
    pub fn get(&self, key: &str) -> Option<&ControlRecord> {
        if key == ALL_KEY {
            self.all.as_ref()
        } else {
            self.jobs.get(key)
        }
    }

    /// Every record, `--all` first.
    pub fn records(&self) -> impl Iterator<Item = &ControlRecord> {
        self.all.iter().chain(self.jobs.values())
    }

    /// The record that pauses `job`'s slot at `slot`, if any (`--all` first).
    pub fn pausing(&self, job: &str, slot: DateTime<Utc>) -> Option<&ControlRecord> {
        self.all
            .as_ref()
            .filter(|r| r.covers(slot))
            .or_else(|| self.jobs.get(job).filter(|r| r.covers(slot)))
    }

    /// Some record covers some slot at `slot` or later: the minute needs looking at.
    pub fn covers_any_from(&self, slot: DateTime<Utc>) -> bool {
        self.records().any(|r| r.until.is_none_or(|u| u > slot))
    }

    /// The pause of everything in force at `now`, and the jobs' pauses in force, by name.
    pub fn in_force(&self, now: DateTime<Utc>) -> (Option<&ControlRecord>, Vec<&ControlRecord>) {
        (
            self.all.as_ref().filter(|r| r.in_force(now)),
            self.jobs.values().filter(|r| r.in_force(now)).collect(),
        )
    }
}

/// The paused slots of `spec` (compiled as `expr`) that the end of `record`'s interval sends,
/// handed out at minute `now`: every slot `s` of the job with `record.since <= s < end`, where
/// [`admit`] says so (the job's catch-up rule and window, as for slots missed in downtime), in
/// time order. None with `dropMissed`.
pub fn paused_slots_sent(
    spec: &JobSpec,
    expr: &CronExpr,
    record: &ControlRecord,
    end: DateTime<Utc>,
    now: Minute,
) -> Vec<DateTime<Utc>> {
    if record.drop_missed {
        return Vec::new();
    }
    let window = window_minutes(spec);
    // No slot older than the window is sent: start the walk there.
    let oldest = Minute(now.0.saturating_sub(window))
        .start()
        .unwrap_or(record.since)
        .max(record.since);
    let mut slots = Vec::new();
    let mut next = expr.next_after(oldest - chrono::Duration::seconds(1));
    while let Some(slot) = next.filter(|s| *s < end) {
        let after = expr.next_after(slot);
        if admit(
            spec.catchup,
            window,
            Minute::containing(slot),
            after.map(Minute::containing),
            now,
        )
        .is_ok()
        {
            slots.push(slot);
        }
        next = after;
    }
    slots
}

/// Why the control topic could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The topic cannot be used.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The broker refused the record for good.
    #[error("the broker refused the control record for {key:?} on topic {topic:?}: {reason}")]
    Refused {
        /// The key.
        key: String,
        /// The topic.
        topic: String,
        /// The broker's answer.
        reason: String,
    },
    /// Reading the topic failed.
    #[error("cannot read the control topic {topic:?}: {reason}")]
    Read {
        /// The topic.
        topic: String,
        /// Why.
        reason: String,
    },
    /// rdkafka's admin client could not be made.
    #[error("cannot create a Kafka admin client: {0}")]
    Admin(String),
}

/// Makes sure the control topic exists (one partition, `cleanup.policy=compact`) when `create`
/// gives the replication factor; returns whether it exists. Retries while Kafka is unreachable.
pub async fn ensure_control_topic(
    client: &Client,
    kafka: &Connection,
    topic: &str,
    create: Option<i16>,
    retry_backoff: Duration,
) -> Result<bool, ControlError> {
    let admin = match create {
        Some(_) => Some(TopicAdmin::new(kafka).map_err(|e| ControlError::Admin(e.to_string()))?),
        None => None,
    };
    let spec = TopicSpec {
        name: topic,
        partitions: 1,
        replication_factor: create.unwrap_or(1),
        configs: &[("cleanup.policy", "compact")],
    };
    let mut backoff = Backoff::new(retry_backoff);
    loop {
        match ensure_topic(client, admin.as_ref(), &spec).await {
            Ok(_) => return Ok(true),
            Err(TopicError::Missing { .. }) => return Ok(false),
            Err(e) if e.is_unreachable() => {
                debug!(message = "control topic lookup failed; retrying", topic, error = %e);
                tokio::time::sleep(backoff.next_delay()).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Appends `record` to the control topic; transient failures are retried (the caller bounds the
/// whole with a timeout).
pub async fn write(
    client: &Client,
    topic: &str,
    record: &ControlRecord,
    retry_backoff: Duration,
) -> Result<(), ControlError> {
    let rec = Record {
        key: Some(record.key().as_bytes().to_vec()),
        value: Some(record.encode().into_bytes()),
        headers: BTreeMap::new(),
        timestamp: record.at,
    };
    let mut backoff = Backoff::new(retry_backoff);
    loop {
        let attempt = async {
            let pc = client
                .partition_client(topic.to_string(), 0, UnknownTopicHandling::Retry)
                .await?;
            pc.produce(vec![rec.clone()], Compression::NoCompression)
                .await
        };
        match attempt.await {
            Ok(_) => return Ok(()),
            Err(e) if is_permanent(&e) => {
                return Err(ControlError::Refused {
                    key: record.key().to_string(),
                    topic: topic.to_string(),
                    reason: describe(&e),
                })
            }
            Err(e) => {
                debug!(message = "control record not written; retrying", topic, error = %describe(&e));
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// Reads the control topic from its first record to its high watermark into a table.
pub async fn read_table(client: &Client, topic: &str) -> Result<PauseTable, ControlError> {
    let err = |e: rskafka::client::error::Error| ControlError::Read {
        topic: topic.to_string(),
        reason: describe(&e),
    };
    let pc = client
        .partition_client(topic.to_string(), 0, UnknownTopicHandling::Error)
        .await
        .map_err(err)?;
    let mut offset = pc.get_offset(OffsetAt::Earliest).await.map_err(err)?;
    let high = pc.get_offset(OffsetAt::Latest).await.map_err(err)?;
    let mut table = PauseTable::default();
    while offset < high {
        let (records, _) = pc
            .fetch_records(offset, 1..10_000_000, 100)
            .await
            .map_err(err)?;
        if records.is_empty() {
            break;
        }
        offset = apply_records(&mut table, topic, offset, &records, |_, _| {});
    }
    Ok(table)
}

/// Applies the records at or after `offset` to `table` (an unreadable value is logged and passed
/// over: one bad record never stops the others), calling `changed` with each applied key and
/// record; returns the offset after the last.
fn apply_records(
    table: &mut PauseTable,
    topic: &str,
    mut offset: i64,
    records: &[rskafka::record::RecordAndOffset],
    mut changed: impl FnMut(&str, Option<&ControlRecord>),
) -> i64 {
    for r in records {
        if r.offset < offset {
            continue;
        }
        offset = r.offset + 1;
        let Some(key) = r.record.key.as_deref() else {
            continue;
        };
        let key = String::from_utf8_lossy(key);
        match r.record.value.as_deref().map(ControlRecord::decode) {
            None => {
                table.apply(&key, None);
                changed(&key, None);
            }
            Some(Ok(record)) if record.key() == key => {
                table.apply(&key, Some(record));
                changed(&key, table.get(&key));
            }
            Some(Ok(_)) => {
                warn!(message = "skipping a control record whose key is not its job", topic, offset = r.offset, key = %key);
            }
            Some(Err(e)) => {
                warn!(message = "skipping an unreadable control record", topic, offset = r.offset, key = %key, error = %e);
            }
        }
    }
    offset
}

/// What the follower publishes: the table and a version that grows with each change.
#[derive(Debug, Default)]
struct Shared {
    version: AtomicU64,
    table: Mutex<Arc<PauseTable>>,
}

impl Shared {
    fn publish(&self, table: PauseTable) {
        *self.table.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(table);
        self.version.fetch_add(1, Ordering::AcqRel);
    }
}

/// Follows the control topic in a background task; a member's handle on the latest table.
#[derive(Debug, Clone)]
pub struct ControlFollower {
    shared: Arc<Shared>,
    sync: mpsc::Sender<oneshot::Sender<()>>,
}

/// How long one fetch waits for a new record when the follower is caught up.
const FOLLOW_WAIT: Duration = Duration::from_millis(200);

impl ControlFollower {
    /// Starts following `topic` (one partition) through `client`.
    pub fn start(
        client: Arc<Client>,
        topic: String,
    ) -> (ControlFollower, tokio::task::JoinHandle<()>) {
        let shared = Arc::new(Shared::default());
        let (sync, requests) = mpsc::channel(16);
        let task = tokio::spawn(follow(client, topic, Arc::clone(&shared), requests));
        (ControlFollower { shared, sync }, task)
    }

    /// Waits until the follower has read everything written before this call (up to the high
    /// watermark it reads after). `false` when the follower is gone.
    pub async fn synced(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.sync.send(tx).await.is_err() {
            return false;
        }
        rx.await.is_ok()
    }

    /// The table's version and the table.
    pub fn table(&self) -> (u64, Arc<PauseTable>) {
        let table = self.shared.table.lock().unwrap_or_else(|e| e.into_inner());
        (
            self.shared.version.load(Ordering::Acquire),
            Arc::clone(&table),
        )
    }

    /// A follower of no topic whose table is set by [`publish`](Self::publish): for tests and
    /// tools that drive the pauses themselves.
    pub fn manual() -> ControlFollower {
        let (sync, _) = mpsc::channel(1);
        ControlFollower {
            shared: Arc::new(Shared::default()),
            sync,
        }
    }

    /// Replaces the table (what the task does on each change).
    pub fn publish(&self, table: PauseTable) {
        self.shared.publish(table);
    }

    fn version(&self) -> u64 {
        self.shared.version.load(Ordering::Acquire)
    }
}

/// The follower's task: read from the first record on, then long-poll; answer sync requests once
/// caught up with a high watermark read after they came in.
async fn follow(
    client: Arc<Client>,
    topic: String,
    shared: Arc<Shared>,
    mut requests: mpsc::Receiver<oneshot::Sender<()>>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100));
    let mut failing = false;
    let mut table = PauseTable::default();
    let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
    let mut partition: Option<PartitionClient> = None;
    let mut offset: Option<i64> = None;
    // The table holds every record up to a high watermark read: only then is it published (a
    // partial read would unpause jobs for a moment). False at the start and after a re-read.
    let mut complete = false;
    let mut announced = false;
    loop {
        while let Ok(w) = requests.try_recv() {
            waiting.push(w);
        }
        let step = async {
            let pc = match partition.take() {
                Some(pc) => pc,
                None => {
                    client
                        .partition_client(topic.clone(), 0, UnknownTopicHandling::Retry)
                        .await?
                }
            };
            let from = match offset {
                Some(o) => o,
                None => pc.get_offset(OffsetAt::Earliest).await?,
            };
            let wait = if waiting.is_empty() {
                FOLLOW_WAIT
            } else {
                Duration::ZERO
            };
            let fetched = pc
                .fetch_records(from, 1..10_000_000, wait.as_millis() as i32)
                .await;
            partition = Some(pc);
            fetched.map(|(records, high)| (from, records, high))
        };
        match step.await {
            Ok((from, records, high)) => {
                if failing {
                    info!(message = "reading the control topic again", topic = %topic);
                    failing = false;
                }
                backoff = Backoff::new(Duration::from_millis(100));
                let before = table.clone();
                let next = apply_records(&mut table, &topic, from, &records, |key, record| {
                    if complete {
                        log_change(key, record);
                    }
                });
                offset = Some(next);
                let caught_up = next >= high;
                if (complete && table != before) || (!complete && caught_up) {
                    shared.publish(table.clone());
                }
                if caught_up {
                    complete = true;
                    if !announced {
                        let (all, jobs) = table.in_force(Utc::now());
                        info!(message = "control topic read", topic = %topic, records_kept = table.records().count(), all_paused = all.is_some(), jobs_paused = jobs.len());
                        announced = true;
                    }
                    for w in waiting.drain(..) {
                        let _ = w.send(());
                    }
                    if records.is_empty() {
                        // A broker that answers an empty fetch at once must not make this spin.
                        tokio::select! {
                            request = requests.recv() => match request {
                                Some(w) => waiting.push(w),
                                None => return,
                            },
                            _ = tokio::time::sleep(FOLLOW_WAIT) => {}
                        }
                    }
                }
            }
            Err(e) => {
                partition = None;
                if matches!(
                    e,
                    rskafka::client::error::Error::ServerError {
                        protocol_error: rskafka::client::error::ProtocolError::OffsetOutOfRange,
                        ..
                    }
                ) {
                    // Compacted or deleted below us: read again from the first record kept; the
                    // table in force stays published until the new one is whole.
                    warn!(message = "the control topic's records moved; reading it again from its first record", topic = %topic);
                    offset = None;
                    table = PauseTable::default();
                    complete = false;
                    continue;
                }
                if !failing {
                    warn!(message = "cannot read the control topic; keeping the pauses known so far and retrying", topic = %topic, error = %describe(&e));
                    failing = true;
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    }
}

/// The one log line of a pause's change of state.
fn log_change(key: &str, record: Option<&ControlRecord>) {
    let job = if key == ALL_KEY { "--all" } else { key };
    match record {
        None => info!(message = "control record removed", job),
        Some(r) if r.paused => info!(
            message = "job paused",
            job,
            reason = r.reason.as_deref().unwrap_or(""),
            since = %crate::message::slot_text(r.since),
            until = %r.until.map(crate::message::slot_text).unwrap_or_default(),
            by = %r.by,
        ),
        Some(r) => info!(
            message = "job resumed",
            job,
            paused_since = %crate::message::slot_text(r.since),
            drop_missed = r.drop_missed,
            by = %r.by,
        ),
    }
}

/// The tick loop's side of the pauses: the table as of the last tick, and catch-ups owed for
/// interval ends it learnt of only after handing out their minute.
#[derive(Debug)]
pub struct Pauses {
    follower: ControlFollower,
    version: u64,
    table: Arc<PauseTable>,
    /// (shard, record, end of the walk): sent with the shard's next minute.
    late: Vec<(u32, ControlRecord, DateTime<Utc>)>,
}

/// What [`Pauses::apply_minute`] did to one shard's minute.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PauseEffect {
    /// Slots held back as paused.
    pub paused: u64,
    /// Paused slots sent at the end of their interval (appended to the minute's dispatches).
    pub resumed: u64,
    /// Those, per slot: producers settle a record by its slot, so the lease and the slot ledger
    /// count them there, not in the minute handed out.
    pub late_slots: Vec<(Minute, u64)>,
}

impl Pauses {
    /// The pauses `follower` reads, taken at the first [`refresh`](Self::refresh).
    pub fn new(follower: ControlFollower) -> Pauses {
        Pauses {
            follower,
            // No table has this version: the first refresh takes the follower's.
            version: u64::MAX,
            table: Arc::new(PauseTable::default()),
            late: Vec::new(),
        }
    }

    /// The table in use.
    pub fn table(&self) -> &Arc<PauseTable> {
        &self.table
    }

    /// Takes the follower's latest table, if it changed. An interval end learnt of after its minute
    /// was handed out (a resume written just before a minute boundary, say) is owed by the shards
    /// past it: their next minute sends its paused slots, up to the end of the minute they
    /// processed. Returns whether the table changed.
    pub fn refresh(&mut self, processed: impl Iterator<Item = (u32, Minute)>) -> bool {
        if self.follower.version() == self.version {
            return false;
        }
        let (version, table) = self.follower.table();
        let processed: Vec<(u32, Minute)> = processed.collect();
        // Owed by shards given up since: their next owner decides from the records.
        self.late
            .retain(|(shard, _, _)| processed.iter().any(|(s, _)| s == shard));
        let changed: Vec<&ControlRecord> = table
            .records()
            .filter(|r| self.table.get(r.key()) != Some(*r))
            .filter(|r| r.ends_in().is_some())
            .collect();
        for &(shard, done) in &processed {
            for r in &changed {
                if r.ends_in().is_some_and(|end| end <= done) {
                    let walk_end = done.next().start().unwrap_or(r.since);
                    self.late.push((shard, (*r).clone(), walk_end));
                }
            }
        }
        self.version = version;
        self.table = table;
        true
    }

    /// After `scheduler` (shard `shard`) appended minute `minute`'s due jobs to `out[start..]`:
    /// takes the paused ones out, and appends the paused slots whose interval ends with this
    /// minute (or ended unnoticed), as the jobs' catch-up rules say at `now` (the minute against
    /// which slots count as missed). Keeps `out[start..]` in dispatch order.
    pub fn apply_minute(
        &mut self,
        shard: u32,
        minute: Minute,
        now: Minute,
        scheduler: &Scheduler,
        out: &mut Vec<Dispatch>,
        start: usize,
    ) -> PauseEffect {
        let mut effect = PauseEffect::default();
        let Some(slot) = minute.start() else {
            return effect;
        };
        let table = &self.table;
        if table.covers_any_from(slot) {
            // Only the shard's part: what is before `start` is other shards', decided already.
            let mut kept = start;
            for i in start..out.len() {
                if table
                    .pausing(&out[i].spec.name, out[i].scheduled_at)
                    .is_none()
                {
                    out.swap(kept, i);
                    kept += 1;
                }
            }
            effect.paused = (out.len() - kept) as u64;
            out.truncate(kept);
        }
        let mut ends: Vec<(ControlRecord, DateTime<Utc>)> = table
            .records()
            .filter(|r| r.ends_in() == Some(minute))
            .filter_map(|r| r.until.map(|u| (r.clone(), u)))
            .collect();
        let mut i = 0;
        while i < self.late.len() {
            if self.late[i].0 == shard {
                let (_, r, end) = self.late.swap_remove(i);
                ends.push((r, end));
            } else {
                i += 1;
            }
        }
        if ends.is_empty() {
            return effect;
        }
        let at = now.max(minute);
        let appended = out.len();
        for (record, end) in &ends {
            let mut sent = 0;
            for job in &scheduler.schedule().jobs {
                if !job.spec.enabled || record.job.as_ref().is_some_and(|j| *j != job.spec.name) {
                    continue;
                }
                // Still paused by another record: that one's end decides.
                if table.pausing(&job.spec.name, slot).is_some() {
                    continue;
                }
                for scheduled_at in paused_slots_sent(&job.spec, &job.expr, record, *end, at) {
                    out.push(Dispatch {
                        spec: Arc::clone(&job.spec).into(),
                        scheduled_at,
                        lease: None,
                    });
                    sent += 1;
                }
            }
            let reached = record.job.is_none()
                || scheduler
                    .schedule()
                    .jobs
                    .iter()
                    .any(|j| Some(&j.spec.name) == record.job.as_ref());
            if reached {
                info!(
                    message = if record.paused { "pause ended (--until reached)" } else { "pause ended (resumed)" },
                    job = record.job.as_deref().unwrap_or("--all"),
                    shard,
                    paused_since = %crate::message::slot_text(record.since),
                    drop_missed = record.drop_missed,
                    paused_slots_sent = sent,
                );
            }
            effect.resumed += sent;
        }
        for d in &out[appended..] {
            let slot = Minute::containing(d.scheduled_at);
            match effect.late_slots.iter_mut().find(|(m, _)| *m == slot) {
                Some((_, n)) => *n += 1,
                None => effect.late_slots.push((slot, 1)),
            }
        }
        if out.len() > appended {
            // The shard's part in dispatch order, a job's paused slots before its live one.
            out[start..].sort_by(|a, b| {
                (
                    std::cmp::Reverse(a.spec.priority),
                    &a.spec.name,
                    a.scheduled_at,
                )
                    .cmp(&(
                        std::cmp::Reverse(b.spec.priority),
                        &b.spec.name,
                        b.scheduled_at,
                    ))
            });
        }
        effect
    }
}

/// A pause in force, as `cronq status` and the status page show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PausedJob {
    /// The job (`None`: every job, `--all`).
    pub job: Option<String>,
    /// The operator's reason.
    pub reason: Option<String>,
    /// Since when (RFC 3339).
    pub since: String,
    /// Until when, if it ends by itself (RFC 3339).
    pub until: Option<String>,
    /// Who paused it.
    pub by: String,
    /// Its end sends none of the paused slots.
    pub drop_missed: bool,
}

/// The pauses in force at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PausedView {
    /// `cronq pause --all`: nothing is dispatched.
    pub all: Option<PausedJob>,
    /// Paused jobs, by name.
    pub jobs: Vec<PausedJob>,
}

impl PausedJob {
    fn of(r: &ControlRecord) -> PausedJob {
        PausedJob {
            job: r.job.clone(),
            reason: r.reason.clone(),
            since: crate::message::slot_text(r.since),
            until: r.until.map(crate::message::slot_text),
            by: r.by.clone(),
            drop_missed: r.drop_missed,
        }
    }
}

impl PauseTable {
    /// The pauses in force at `now`.
    pub fn view(&self, now: DateTime<Utc>) -> PausedView {
        let (all, jobs) = self.in_force(now);
        PausedView {
            all: all.map(PausedJob::of),
            jobs: jobs.into_iter().map(PausedJob::of).collect(),
        }
    }
}

/// The line of `cronq pause --all` in force, for a terminal.
pub fn all_line(all: &PausedJob) -> String {
    format!("PAUSED: ALL JOBS (cronq pause --all) {}", paused_line(all))
}

fn paused_line(p: &PausedJob) -> String {
    format!(
        "since {}{}  by {}{}{}",
        p.since,
        p.until
            .as_ref()
            .map_or(String::new(), |u| format!(" until {u}")),
        p.by,
        p.reason
            .as_ref()
            .map_or(String::new(), |r| format!("  reason: {r}")),
        if p.drop_missed { "  (drop missed)" } else { "" },
    )
}

/// The pauses as text for a terminal: `--all` first and loud, then one line per job.
pub fn render(view: &PausedView) -> String {
    let mut out = String::new();
    if let Some(all) = &view.all {
        out.push_str(&all_line(all));
        out.push('\n');
    }
    if view.jobs.is_empty() {
        out.push_str("paused jobs: none\n");
    } else {
        out.push_str(&format!("paused jobs: {}\n", view.jobs.len()));
        for p in &view.jobs {
            out.push_str(&format!(
                "  {}  {}\n",
                p.job.as_deref().unwrap_or("--all"),
                paused_line(p)
            ));
        }
    }
    out
}

/// What an operator command wants written, decided from the table as read.
pub type Decide<'a> = Box<dyn FnOnce(&PauseTable) -> Result<ControlRecord, String> + Send + 'a>;

/// Why `cronq pause`/`resume` wrote nothing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// Kafka or the topic failed.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// The table says the command makes no sense (resuming what is not paused).
    #[error("{0}")]
    Refused(String),
}

/// `cronq pause`/`resume`: reads the control topic `topic` (created when missing if `create`
/// gives the replication factor), lets `decide` make the record from what is paused, writes it.
/// Retries while Kafka is unreachable: the caller bounds the whole with a timeout.
pub async fn command(
    kafka: &Connection,
    topic: &str,
    create: Option<i16>,
    decide: Decide<'_>,
) -> Result<ControlRecord, CommandError> {
    let backoff = Duration::from_millis(100);
    let client = kafka.connect(backoff).await;
    let exists = ensure_control_topic(&client, kafka, topic, create, backoff).await?;
    let table = if exists {
        read_table(&client, topic).await?
    } else {
        PauseTable::default()
    };
    let record = decide(&table).map_err(CommandError::Refused)?;
    if !exists {
        return Err(ControlError::Topic(TopicError::Missing {
            topic: topic.to_string(),
        })
        .into());
    }
    write(&client, topic, &record, backoff).await?;
    Ok(record)
}

/// The pauses in force at `now` in group topic `topic`; `None` when the topic does not exist.
pub async fn read_paused(
    kafka: &Connection,
    topic: &str,
    now: DateTime<Utc>,
) -> Result<Option<PausedView>, String> {
    let client = kafka.connect_once().await.map_err(|e| {
        format!(
            "cannot reach Kafka at {}: {}",
            kafka.brokers_text(),
            describe(&e)
        )
    })?;
    match crate::kafka::admin::partition_count(&client, topic).await {
        Ok(Some(_)) => {}
        Ok(None) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    }
    let table = read_table(&client, topic)
        .await
        .map_err(|e| e.to_string())?;
    Ok(Some(table.view(now)))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use chrono::TimeZone;

    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::dispatcher::tick_loop::TickLoop;
    use crate::schedule::{parse, LoadOptions, Schedule};

    /// 2026-11-30 10:00:00 UTC plus `minutes` and `seconds`.
    fn at(minutes: i64, seconds: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 0).unwrap()
            + chrono::Duration::seconds(minutes * 60 + seconds)
    }

    fn pause(
        job: Option<&str>,
        since: DateTime<Utc>,
        until: Option<DateTime<Utc>>,
    ) -> ControlRecord {
        ControlRecord {
            v: RECORD_VERSION,
            job: job.map(str::to_string),
            paused: true,
            reason: Some("incident 42".into()),
            since,
            until,
            drop_missed: false,
            by: "ops@host".into(),
            at: since,
        }
    }

    fn resume(paused: &ControlRecord, at: DateTime<Utc>, drop_missed: bool) -> ControlRecord {
        ControlRecord {
            paused: false,
            until: Some(at),
            drop_missed,
            at,
            ..paused.clone()
        }
    }

    fn schedule(json: &str) -> Schedule {
        parse(json.as_bytes(), Path::new("s.json"), LoadOptions::default()).unwrap()
    }

    #[test]
    fn the_latest_record_of_a_key_wins_and_a_tombstone_forgets_it() {
        let mut table = PauseTable::default();
        let first = pause(Some("a"), at(1, 0), None);
        table.apply("a", Some(first.clone()));
        let resumed = resume(&first, at(5, 0), false);
        table.apply("a", Some(resumed.clone()));
        assert_eq!(table.get("a"), Some(&resumed));
        assert!(!table.get("a").unwrap().in_force(at(6, 0)));
        // Paused again later: the new record wins over the resume.
        let again = pause(Some("a"), at(9, 0), None);
        table.apply("a", Some(again.clone()));
        assert_eq!(table.get("a"), Some(&again));
        assert_eq!(
            table.pausing("a", at(3, 0)),
            None,
            "the old interval is forgotten"
        );
        assert_eq!(table.pausing("a", at(9, 0)), Some(&again));
        table.apply("a", None);
        assert_eq!(table.get("a"), None);
        assert_eq!(table.records().count(), 0);
    }

    #[test]
    fn a_pause_covers_its_slots_from_since_and_until_ends_it_by_itself() {
        let p = pause(Some("a"), at(2, 30), Some(at(6, 0)));
        // The slot of minute 2 is before the pause; 3, 4, 5 are in it; 6 is its end.
        let covered: Vec<i64> = (0..10).filter(|m| p.covers(at(*m, 0))).collect();
        assert_eq!(covered, [3, 4, 5]);
        assert!(p.in_force(at(5, 59)));
        assert!(!p.in_force(at(6, 0)), "--until reached: no longer in force");
        assert_eq!(p.ends_in(), Some(Minute::containing(at(6, 0))));
        // An end inside a minute is applied in the next one (its slot is the first not covered).
        let r = resume(&p, at(6, 10), false);
        assert_eq!(r.ends_in(), Some(Minute::containing(at(7, 0))));
        assert_eq!(pause(None, at(0, 0), None).ends_in(), None);
    }

    #[test]
    fn all_pauses_every_job_and_a_jobs_own_resume_does_not_end_it() {
        let mut table = PauseTable::default();
        let everything = pause(None, at(1, 0), None);
        assert_eq!(everything.key(), ALL_KEY);
        table.apply(ALL_KEY, Some(everything.clone()));
        let own = pause(Some("a"), at(0, 0), None);
        table.apply("a", Some(resume(&own, at(2, 0), true)));
        for job in ["a", "b", "any-other"] {
            assert_eq!(table.pausing(job, at(3, 0)), Some(&everything), "{job}");
        }
        assert_eq!(table.pausing("b", at(0, 30)), None, "before the pause");
        // "a" had its own interval then: still paused (its resume decides about it).
        assert!(table.pausing("a", at(0, 30)).is_some());
        let (all, jobs) = table.in_force(at(3, 0));
        assert_eq!((all, jobs.len()), (Some(&everything), 0));
        let view = table.view(at(3, 0));
        assert!(view.all.is_some());
        assert!(
            render(&view).starts_with("PAUSED: ALL JOBS"),
            "{}",
            render(&view)
        );
    }

    #[test]
    fn the_all_key_can_never_be_a_job_name() {
        let json =
            format!(r#"{{"jobs":[{{"jobName":"{ALL_KEY}","job":"x","cronTime":"* * * * *"}}]}}"#);
        let err = parse(json.as_bytes(), Path::new("s.json"), LoadOptions::default())
            .expect_err("a blank jobName must be refused");
        assert!(err.to_string().contains("jobName"), "{err}");
    }

    #[test]
    fn a_record_round_trips_and_another_version_is_refused() {
        let p = pause(Some("nightly"), at(0, 0), Some(at(90, 0)));
        let text = p.encode();
        assert_eq!(
            text,
            r#"{"v":1,"job":"nightly","paused":true,"reason":"incident 42","since":"2026-11-30T10:00:00Z","until":"2026-11-30T11:30:00Z","dropMissed":false,"by":"ops@host","at":"2026-11-30T10:00:00Z"}"#
        );
        assert_eq!(ControlRecord::decode(text.as_bytes()), Ok(p));
        let v2 = text.replace(r#""v":1"#, r#""v":2"#);
        assert!(ControlRecord::decode(v2.as_bytes())
            .unwrap_err()
            .contains("version 2"));
    }

    /// The slots a pause's end sends, against a walk written out by hand: every-5-minutes job,
    /// paused from 10:02:30 to 10:41:00, handed out at 10:41.
    #[test]
    fn a_pauses_end_sends_what_the_jobs_catch_up_rule_says() {
        let job = |rule: &str, window: &str| {
            schedule(&format!(
                r#"{{"jobs":[{{"jobName":"j","job":"x","cronTime":"*/5 * * * *","catchup":"{rule}","catchupWindow":"{window}"}}]}}"#
            ))
        };
        let p = pause(Some("j"), at(2, 30), None);
        let r = resume(&p, at(41, 0), false);
        let end = r.until.unwrap();
        let now = r.ends_in().unwrap();
        let sent = |s: &Schedule, record: &ControlRecord| -> Vec<i64> {
            let j = &s.jobs[0];
            paused_slots_sent(&j.spec, &j.expr, record, end, now)
                .into_iter()
                .map(|t| (t - at(0, 0)).num_minutes())
                .collect()
        };
        assert_eq!(sent(&job("all", "1h"), &r), [5, 10, 15, 20, 25, 30, 35, 40]);
        // A 15-minute window counts back from 10:41: 10:26 and later.
        assert_eq!(sent(&job("all", "15m"), &r), [30, 35, 40]);
        assert_eq!(sent(&job("latest", "1h"), &r), [40]);
        assert_eq!(sent(&job("none", "1h"), &r), Vec::<i64>::new());
        let dropped = resume(&p, at(41, 0), true);
        assert_eq!(sent(&job("all", "1h"), &dropped), Vec::<i64>::new());
    }

    /// One tick loop on a manual clock, minute by minute: a paused job's slots are held back (the
    /// other job's are not), its pause's end sends the paused slots under its rule, `--all` stops
    /// everything, and `--until` ends a pause by itself.
    #[tokio::test]
    async fn a_tick_loop_holds_back_paused_slots_and_sends_them_when_the_pause_ends() {
        let s = schedule(
            r#"{"jobs":[
              {"jobName":"keep","job":"x","cronTime":"* * * * *"},
              {"jobName":"late","job":"x","cronTime":"* * * * *"},
              {"jobName":"drop","job":"x","cronTime":"* * * * *","catchup":"none"}
            ]}"#,
        );
        let clock = Arc::new(ManualClock::new(at(0, 1)));
        let scheduler = Scheduler::new(s, Minute::containing(at(0, 0)));
        let (tx, mut rx) = mpsc::channel(1000);
        let follower = ControlFollower::manual();
        let mut tick_loop = TickLoop::new(clock.clone() as Arc<dyn Clock>, scheduler, None, tx)
            .with_pauses(Pauses::new(follower.clone()));
        let mut table = PauseTable::default();
        let mut sent: Vec<(String, i64)> = Vec::new();
        let mut paused = 0;
        let run_to = |clock: &ManualClock, m: i64, s: i64| {
            clock.set(at(m, s));
            async {}
        };
        // What the loop sent so far: (job, minute after 10:00).
        let step = |_: &mut TickLoop, rx: &mut mpsc::Receiver<Dispatch>| {
            let mut got = Vec::new();
            while let Ok(d) = rx.try_recv() {
                got.push((
                    d.spec.name.clone(),
                    (d.scheduled_at - at(0, 0)).num_minutes(),
                ));
            }
            got
        };
        for m in 1..=2 {
            run_to(&clock, m, 1).await;
            paused += tick_loop.tick().await.unwrap().paused;
        }
        // 10:02:30: "late" and "drop" paused.
        let late = pause(Some("late"), at(2, 30), None);
        let drop = pause(Some("drop"), at(2, 30), None);
        table.apply("late", Some(late.clone()));
        table.apply("drop", Some(drop.clone()));
        follower.publish(table.clone());
        for m in 3..=5 {
            run_to(&clock, m, 1).await;
            paused += tick_loop.tick().await.unwrap().paused;
        }
        // 10:05:20: both resumed; minute 6 sends "late"'s paused 3, 4, 5 (rule all), none of
        // "drop"'s (rule none).
        table.apply("late", Some(resume(&late, at(5, 20), false)));
        table.apply("drop", Some(resume(&drop, at(5, 20), false)));
        follower.publish(table.clone());
        run_to(&clock, 6, 1).await;
        let report = tick_loop.tick().await.unwrap();
        assert_eq!(report.resumed, 3);
        sent.extend(step(&mut tick_loop, &mut rx));
        assert_eq!(paused, 6, "two jobs, minutes 3, 4, 5");
        let of = |sent: &[(String, i64)], job: &str| -> Vec<i64> {
            sent.iter()
                .filter(|(j, _)| j == job)
                .map(|(_, m)| *m)
                .collect()
        };
        assert_eq!(of(&sent, "keep"), [1, 2, 3, 4, 5, 6]);
        assert_eq!(of(&sent, "late"), [1, 2, 3, 4, 5, 6]);
        assert_eq!(of(&sent, "drop"), [1, 2, 6]);

        // 10:06:40: --all until 10:09:00; minutes 7, 8 held back for every job, 9 runs, and
        // the expiry sends the paused slots of the jobs whose rule says so.
        sent.clear();
        let mut all = pause(None, at(6, 40), Some(at(9, 0)));
        all.drop_missed = false;
        table.apply(ALL_KEY, Some(all));
        follower.publish(table.clone());
        let mut held = 0;
        for m in 7..=9 {
            run_to(&clock, m, 1).await;
            held += tick_loop.tick().await.unwrap().paused;
        }
        sent.extend(step(&mut tick_loop, &mut rx));
        assert_eq!(held, 6, "three jobs, minutes 7 and 8");
        assert_eq!(of(&sent, "keep"), [7, 8, 9]);
        assert_eq!(of(&sent, "late"), [7, 8, 9]);
        assert_eq!(of(&sent, "drop"), [9]);
    }

    /// The paused slots a pause's end sends are counted at their own slot, where producers settle
    /// them: the shard's cursor stays before them until they are acked, then moves on to the
    /// minute handed out.
    #[tokio::test]
    async fn the_cursor_waits_for_the_paused_slots_sent_late_then_moves_on() {
        use crate::dispatcher::cursor::Lease;
        use crate::dispatcher::tick_loop::ShardRun;
        let s = schedule(r#"{"jobs":[{"jobName":"a","job":"x","cronTime":"* * * * *"}]}"#);
        let clock = Arc::new(ManualClock::new(at(0, 1)));
        let start = Minute::containing(at(0, 0));
        let (tx, mut rx) = mpsc::channel(1000);
        let follower = ControlFollower::manual();
        let mut tick_loop = TickLoop::without_shards(clock.clone() as Arc<dyn Clock>, None, tx)
            .with_pauses(Pauses::new(follower.clone()));
        let lease = Lease::new(0, start);
        tick_loop.insert_shard(
            0,
            ShardRun {
                scheduler: Scheduler::new(s, start),
                lease: Some(Arc::clone(&lease)),
            },
        );
        // The producer's side: settle every record by its slot.
        let settle = |rx: &mut mpsc::Receiver<Dispatch>| {
            let mut slots = Vec::new();
            while let Ok(d) = rx.try_recv() {
                slots.push(Minute::containing(d.scheduled_at));
            }
            slots
        };
        let p = pause(Some("a"), at(1, 30), None);
        let mut table = PauseTable::default();
        table.apply("a", Some(p.clone()));
        follower.publish(table.clone());
        for m in 1..=3 {
            clock.set(at(m, 1));
            tick_loop.tick().await.unwrap();
        }
        for slot in settle(&mut rx) {
            lease.settle(slot, 1);
        }
        assert_eq!(lease.cursor(), Minute::containing(at(3, 0)));
        table.apply("a", Some(resume(&p, at(3, 30), false)));
        follower.publish(table);
        clock.set(at(4, 1));
        tick_loop.tick().await.unwrap();
        let sent = settle(&mut rx);
        assert_eq!(sent.len(), 3, "paused 2 and 3, live 4: {sent:?}");
        assert_eq!(lease.outstanding(), 3);
        assert_eq!(
            lease.cursor(),
            Minute::containing(at(1, 0)),
            "before the late slot 2"
        );
        for slot in sent {
            lease.settle(slot, 1);
        }
        assert_eq!(lease.outstanding(), 0);
        assert_eq!(lease.cursor(), Minute::containing(at(4, 0)));
    }

    /// A resume read only after the minute of its end was handed out (written just before the
    /// boundary): the slots that minute held back are sent with the next one.
    #[tokio::test]
    async fn a_resume_learnt_late_still_sends_the_paused_slots() {
        let s = schedule(r#"{"jobs":[{"jobName":"a","job":"x","cronTime":"* * * * *"}]}"#);
        let clock = Arc::new(ManualClock::new(at(0, 1)));
        let scheduler = Scheduler::new(s, Minute::containing(at(0, 0)));
        let (tx, mut rx) = mpsc::channel(1000);
        let follower = ControlFollower::manual();
        let mut tick_loop = TickLoop::new(clock.clone() as Arc<dyn Clock>, scheduler, None, tx)
            .with_pauses(Pauses::new(follower.clone()));
        let p = pause(Some("a"), at(0, 30), None);
        let mut table = PauseTable::default();
        table.apply("a", Some(p.clone()));
        follower.publish(table.clone());
        for m in 1..=4 {
            clock.set(at(m, 1));
            tick_loop.tick().await.unwrap();
        }
        // Resumed at 10:03:59.9 (the record says so) but read at 10:04:01, after minute 4 went.
        table.apply(
            "a",
            Some(resume(
                &p,
                at(3, 59) + chrono::Duration::milliseconds(900),
                false,
            )),
        );
        follower.publish(table);
        clock.set(at(5, 1));
        tick_loop.tick().await.unwrap();
        let mut got: Vec<i64> = Vec::new();
        while let Ok(d) = rx.try_recv() {
            got.push((d.scheduled_at - at(0, 0)).num_minutes());
        }
        got.sort();
        // 1-3 paused, 4 held back before the resume was read, 5 live.
        assert_eq!(got, [1, 2, 3, 4, 5]);
    }
}
