//! The dispatcher group: membership through Kafka's own group coordinator, and the shards' cursors
//! in the group's state topic.
//!
//! ```text
//!              <group>.state  (S partitions = S shards, cleanup.policy=compact)
//!   member A ── rdkafka consumer, group.id = --group, subscribed to the state topic
//!                 assigned partitions = owned shards ──► GroupEvent::Assigned / Revoked ──► service
//!   service  ── rskafka: read a shard's last cursor at takeover; append every owned shard's cursor
//!               once a minute (also the owner's liveness report); read every shard's last record
//!               once a minute (orphan watchdog, one-schedule check)
//! ```
//!
//! The rebalance callbacks run on the membership thread, which polls the consumer. A revoke waits
//! there until the service has finished the minute in progress, waited for its acks and written the
//! cursors of the shards it gives up: the coordinator hands a shard on only after that, so a clean
//! rebalance neither loses nor repeats a slot. A lost assignment (session expired) is reported as
//! such and the service drops those shards at once, without writing.
//!
//! A coordinator may hand a shard on before its previous owner has let go (tansu answers a join at
//! once, without waiting for the other members to rejoin): the next owner then waits for the
//! previous owner's final cursor record (`handover.rs`).

use std::sync::mpsc as std_mpsc;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::TopicPartitionList;
use rskafka::client::error::Error as RsError;
use rskafka::client::partition::{Compression, OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::Client;
use rskafka::record::Record;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::kafka::admin::{ensure_topic, TopicAdmin, TopicError, TopicSpec};
use crate::kafka::{
    describe, retry, Backoff, Classify, Connection, ErrorClass, Health, KafkaContext,
};
use crate::wire::cursor::{Cursor, CURSOR_KEY};

/// Errors of the group layer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// An rdkafka client could not be created (a bad setting).
    #[error("cannot create the Kafka {what} for brokers {brokers}: {source}")]
    Client {
        /// Which client.
        what: &'static str,
        /// Bootstrap brokers.
        brokers: String,
        /// Why.
        source: rdkafka::error::KafkaError,
    },
    /// The state topic cannot be created.
    #[error("cannot create the state topic {topic}: {reason}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        reason: String,
    },
    /// The membership thread could not be started.
    #[error("cannot start the group membership thread: {0}")]
    Thread(String),
    /// Reading or writing the state topic failed.
    #[error("state topic {topic} partition {shard}: {reason}")]
    State {
        /// The topic.
        topic: String,
        /// The partition.
        shard: u32,
        /// What went wrong.
        reason: String,
    },
}

/// Reading or writing the state topic is worth another attempt (the caller bounds each with a
/// timeout); a client that cannot be made, a refused topic or a thread that did not start is not.
impl Classify for GroupError {
    fn class(&self) -> ErrorClass {
        match self {
            GroupError::State { .. } => ErrorClass::Transient,
            GroupError::Client { .. } | GroupError::CreateTopic { .. } | GroupError::Thread(_) => {
                ErrorClass::Permanent
            }
        }
    }
}

/// A member's view of membership changes, sent by the membership thread.
#[derive(Debug)]
pub enum GroupEvent {
    /// These shards are now this member's (the whole assignment).
    Assigned(Vec<u32>),
    /// These shards are taken away. `lost`: the session expired and another member may own them
    /// already. The membership thread waits for `done` (bounded) before the coordinator moves on.
    Revoked {
        /// The shards.
        shards: Vec<u32>,
        /// The assignment was lost rather than handed back.
        lost: bool,
        /// Dropped or sent when the shards are released.
        done: std_mpsc::SyncSender<()>,
    },
}

/// What the membership needs.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// Where Kafka is and how to talk to it.
    pub kafka: Connection,
    /// The consumer group.
    pub group: String,
    /// This member's name (its cursor records' `owner`).
    pub member: String,
    /// The state topic.
    pub state_topic: String,
    /// How long a silent member keeps its shards.
    pub session_timeout: Duration,
    /// How long a revoke may wait for the handover.
    pub handover_timeout: Duration,
}

enum Command {
    /// Leave and join again with a fresh consumer (a fresh member id).
    Rejoin,
    /// Leave the group and end the thread.
    Leave,
}

/// See [`Membership::rejoiner`].
#[derive(Clone)]
pub struct Rejoiner(std_mpsc::Sender<Command>);

impl Rejoiner {
    /// Rejoin with a fresh member id.
    pub fn rejoin(&self) {
        let _ = self.0.send(Command::Rejoin);
    }
}

/// The membership thread: one rdkafka consumer at a time in the group.
pub struct Membership {
    commands: std_mpsc::Sender<Command>,
    /// Closed when the membership thread ends.
    ended: std_mpsc::Receiver<()>,
}

/// How long leaving may take: closing a consumer whose coordinator is unreachable can block for
/// long; the process exits anyway and the group notices through the session timeout.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the membership thread waits in the consumer's poll: rebalance events end the wait at
/// once, so this bounds how soon it sees a command (leave, rejoin). A handover waits for it, so
/// it stays short (ten wakeups a second, about 0.01 % of a core).
const MEMBER_POLL: Duration = Duration::from_millis(100);

struct MemberContext {
    events: mpsc::Sender<GroupEvent>,
    handover_timeout: Duration,
    /// librdkafka's log and errors go the way of every Kafka client of cronq.
    kafka: KafkaContext,
}

fn shards_of(tpl: &TopicPartitionList) -> Vec<u32> {
    let mut shards: Vec<u32> = tpl
        .elements()
        .iter()
        .filter_map(|e| u32::try_from(e.partition()).ok())
        .collect();
    shards.sort_unstable();
    shards
}

impl ClientContext for MemberContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.kafka.log_line(level, fac, log_message);
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        self.kafka.error_event(&error, reason);
    }
}

impl ConsumerContext for MemberContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let shards = shards_of(tpl);
                if shards.is_empty() {
                    return;
                }
                let lost = consumer.assignment_lost();
                let (done, wait) = std_mpsc::sync_channel(1);
                if self
                    .events
                    .blocking_send(GroupEvent::Revoked {
                        shards: shards.clone(),
                        lost,
                        done,
                    })
                    .is_err()
                {
                    return;
                }
                // Hold the rebalance until the cursors are written (or the service is gone).
                if let Err(std_mpsc::RecvTimeoutError::Timeout) =
                    wait.recv_timeout(self.handover_timeout)
                {
                    warn!(message = "handover took longer than allowed; releasing the shards anyway", shards = ?shards);
                }
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => warn!(message = "dispatcher group rebalance error", error = %e),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            // Membership only: the state topic is read with rskafka, so the consumer fetches
            // nothing (an idle member would otherwise long-poll every assigned partition).
            if let Err(e) = consumer.pause(tpl) {
                debug!(message = "cannot pause the group consumer's fetches", error = %e);
            }
            let _ = self
                .events
                .blocking_send(GroupEvent::Assigned(shards_of(tpl)));
        }
    }
}

impl Membership {
    /// Joins the group on a thread of its own; events arrive on `events`.
    pub fn start(
        config: MembershipConfig,
        events: mpsc::Sender<GroupEvent>,
    ) -> Result<Membership, GroupError> {
        // Fail on bad settings now, not on the thread.
        let first = consumer(&config, events.clone())?;
        let (commands, inbox) = std_mpsc::channel();
        let (ended_tx, ended) = std_mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("cronq-group".into())
            .spawn(move || {
                membership_thread(config, events, first, inbox);
                drop(ended_tx);
            })
            .map_err(|e| GroupError::Thread(e.to_string()))?;
        Ok(Membership { commands, ended })
    }

    /// A handle that makes the member leave and join again with a fresh consumer: on a
    /// coordinator that left a dead member's shards unassigned, a new member id forces a complete
    /// assignment.
    pub fn rejoiner(&self) -> Rejoiner {
        Rejoiner(self.commands.clone())
    }

    /// Leaves the group (the remaining members take the shards over at once) and waits for the
    /// thread. Release the shards (write their cursors) before: the final revoke is not waited for.
    pub fn leave(self) {
        let _ = self.commands.send(Command::Leave);
        let left = tokio::task::block_in_place(|| self.ended.recv_timeout(LEAVE_TIMEOUT));
        if let Err(std_mpsc::RecvTimeoutError::Timeout) = left {
            warn!(message = "leaving the dispatcher group did not finish in time (coordinator unreachable?); the group will notice through the session timeout", waited = ?LEAVE_TIMEOUT);
        }
    }
}

fn consumer(
    config: &MembershipConfig,
    events: mpsc::Sender<GroupEvent>,
) -> Result<BaseConsumer<MemberContext>, GroupError> {
    let consumer: BaseConsumer<MemberContext> = config
        .kafka
        .group_member(&config.group, &config.member, config.session_timeout)
        .create_with_context(MemberContext {
            events,
            handover_timeout: config.handover_timeout,
            kafka: config.kafka.context("dispatcher group"),
        })
        .map_err(|source| GroupError::Client {
            what: "group consumer",
            brokers: config.kafka.brokers_text(),
            source,
        })?;
    consumer
        .subscribe(&[&config.state_topic])
        .map_err(|source| GroupError::Client {
            what: "group subscription",
            brokers: config.kafka.brokers_text(),
            source,
        })?;
    Ok(consumer)
}

fn membership_thread(
    config: MembershipConfig,
    events: mpsc::Sender<GroupEvent>,
    first: BaseConsumer<MemberContext>,
    inbox: std_mpsc::Receiver<Command>,
) {
    let mut current = Some(first);
    loop {
        let Some(member) = current.as_ref() else {
            match consumer(&config, events.clone()) {
                Ok(c) => current = Some(c),
                Err(e) => {
                    warn!(message = "cannot rejoin the dispatcher group; retrying", error = %e);
                    if let Ok(Command::Leave) | Err(std_mpsc::RecvTimeoutError::Disconnected) =
                        inbox.recv_timeout(Duration::from_secs(1))
                    {
                        return;
                    }
                }
            }
            continue;
        };
        // The state topic's records are read with rskafka; the consumer only keeps membership
        // (its assigned partitions are paused: it fetches nothing).
        if let Some(Err(e)) = member.poll(MEMBER_POLL) {
            debug!(message = "group consumer", error = %e);
        }
        match inbox.try_recv() {
            Ok(Command::Rejoin) => {
                info!(message = "rejoining the dispatcher group with a fresh member id");
                current = None; // dropping closes the consumer: its revoke runs the handover
            }
            Ok(Command::Leave) | Err(std_mpsc::TryRecvError::Disconnected) => {
                drop(current.take());
                return;
            }
            Err(std_mpsc::TryRecvError::Empty) => {}
        }
    }
}

/// Makes sure the state topic exists (created with `wanted` partitions and
/// `cleanup.policy=compact` when missing) and returns its partition count, which wins over
/// `wanted`. Waits, with logs, while Kafka cannot be reached.
pub async fn ensure_state_topic(
    client: &Client,
    kafka: &Connection,
    topic: &str,
    wanted: u32,
    replication_factor: i16,
) -> Result<u32, GroupError> {
    let admin = TopicAdmin::new(kafka).map_err(|source| GroupError::Client {
        what: "admin client",
        brokers: kafka.brokers_text(),
        source,
    })?;
    let spec = TopicSpec {
        name: topic,
        partitions: i32::try_from(wanted).unwrap_or(i32::MAX),
        replication_factor,
        configs: &[("cleanup.policy", "compact")],
    };
    let mut backoff = Backoff::new(Duration::from_millis(200));
    let found = retry(
        &mut backoff,
        || ensure_topic(client, Some(&admin), &spec),
        |e, _, _| {
            kafka
                .health()
                .failed("dispatcher group", "", &e.to_string());
        },
    )
    .await
    .map_err(|e| match e {
        TopicError::Refused { topic, reason } => GroupError::CreateTopic { topic, reason },
        // With an admin client a missing topic is created: only a refusal is permanent.
        other => GroupError::CreateTopic {
            topic: topic.to_string(),
            reason: other.to_string(),
        },
    })?;
    kafka.health().succeeded();
    let found = found as u32;
    if found != wanted {
        warn!(
            message = "the state topic exists with another shard count; it wins over --shards",
            topic,
            shards = found,
            wanted
        );
    }
    Ok(found)
}

/// The longest a read or write of the state topic may take (the client retries inside it): the
/// tick loop waits for these, and an unreachable broker must not stall it.
const STATE_IO_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest reading a shard's last cursor back through unreadable records may take.
const READ_BACK_TIMEOUT: Duration = Duration::from_secs(60);

/// Records read back at first from the end of a shard's partition; each further step back reads
/// twice as many, up to [`READ_BACK_MAX`].
const READ_BACK_FIRST: i64 = 16;
/// The wait of a read-back fetch asked again after an empty answer.
const READ_BACK_WAIT_MS: i32 = 1_000;
const READ_BACK_MAX: i64 = 4096;

/// Undecodable records remembered as logged (beyond that, each is logged at every read).
const REPORTED_MAX: usize = 10_000;

/// One request to the state topic, bounded by [`STATE_IO_TIMEOUT`] (`Err(None)`: no answer).
async fn io<T>(
    request: impl std::future::Future<Output = Result<T, RsError>>,
) -> Result<T, Option<RsError>> {
    match tokio::time::timeout(STATE_IO_TIMEOUT, request).await {
        Ok(r) => r.map_err(Some),
        Err(_) => Err(None),
    }
}

/// A shard's last cursor as its partition holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastCursor {
    /// The newest record that decodes as a cursor.
    pub cursor: Option<Cursor>,
    /// Offsets of the cursor records after it that do not decode, newest first (every cursor
    /// record of the partition when none decodes).
    pub unreadable: Vec<i64>,
}

impl LastCursor {
    /// Cursor records exist and none decodes: not the same as a shard that never had a cursor.
    pub fn nothing_decodes(&self) -> bool {
        self.cursor.is_none() && !self.unreadable.is_empty()
    }
}

/// Reads and appends cursor records (rskafka).
pub struct StateTopic {
    client: Arc<Client>,
    topic: String,
    /// Where failed writes are reported (else logged as warnings).
    health: Option<Arc<Health>>,
    partitions: tokio::sync::Mutex<Vec<Option<Arc<PartitionClient>>>>,
    /// Writes one batch at a time, so a release's final cursors land after any periodic batch
    /// already in flight.
    writing: tokio::sync::Mutex<()>,
    /// Undecodable records logged already, by shard and offset.
    reported: std::sync::Mutex<std::collections::HashSet<(u32, i64)>>,
}

impl StateTopic {
    /// The state topic `topic` with `shards` partitions.
    pub fn new(client: Arc<Client>, topic: String, shards: u32) -> StateTopic {
        StateTopic {
            client,
            topic,
            health: None,
            partitions: tokio::sync::Mutex::new(vec![None; shards as usize]),
            writing: tokio::sync::Mutex::new(()),
            reported: Default::default(),
        }
    }

    /// Report failed writes to `health` (one state change per outage) instead of a warning each.
    pub fn with_health(mut self, health: Arc<Health>) -> StateTopic {
        self.health = Some(health);
        self
    }

    /// Where failed writes are reported, if anywhere.
    pub fn health(&self) -> Option<&Arc<Health>> {
        self.health.as_ref()
    }

    fn error(&self, shard: u32, reason: String) -> GroupError {
        GroupError::State {
            topic: self.topic.clone(),
            shard,
            reason,
        }
    }

    async fn partition(&self, shard: u32) -> Result<Arc<PartitionClient>, GroupError> {
        let mut partitions = self.partitions.lock().await;
        let slot = partitions
            .get_mut(shard as usize)
            .ok_or_else(|| self.error(shard, "no such shard".into()))?;
        if let Some(pc) = slot {
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
            .map_err(|e| self.error(shard, describe(&e)))?;
        let pc = Arc::new(pc);
        *slot = Some(Arc::clone(&pc));
        Ok(pc)
    }

    async fn forget(&self, shard: u32) {
        if let Some(slot) = self.partitions.lock().await.get_mut(shard as usize) {
            *slot = None;
        }
    }

    /// The last cursor record of `shard` that decodes, and the cursor records after it that do
    /// not ([`LastCursor`]).
    pub async fn last(&self, shard: u32) -> Result<LastCursor, GroupError> {
        let result = tokio::time::timeout(READ_BACK_TIMEOUT, self.read_last(shard))
            .await
            .unwrap_or_else(|_| Err(self.error(shard, "no answer in time".into())));
        if result.is_err() {
            self.forget(shard).await;
        }
        result
    }

    /// Reads back from the end of the partition, a growing window at a time, until a cursor
    /// record decodes or the partition's start is reached. The topic is compacted, so what is
    /// read back is bounded by the keys written, not by the history.
    async fn read_last(&self, shard: u32) -> Result<LastCursor, GroupError> {
        // Bounded on its own: the partition clients' lock is held meanwhile, and a write (the
        // release's final cursors) waits for it.
        let pc = tokio::time::timeout(STATE_IO_TIMEOUT, self.partition(shard))
            .await
            .unwrap_or_else(|_| Err(self.error(shard, "no answer in time".into())))?;
        let fail = |e: RsError| self.error(shard, describe(&e));
        let high = io(pc.get_offset(OffsetAt::Latest))
            .await
            .map_err(|e| e.map_or_else(|| self.error(shard, "no answer in time".into()), fail))?;
        let low = io(pc.get_offset(OffsetAt::Earliest))
            .await
            .map_err(|e| e.map_or_else(|| self.error(shard, "no answer in time".into()), fail))?;
        let mut found = LastCursor::default();
        let (mut end, mut window) = (high, READ_BACK_FIRST);
        while end > low {
            let from = (end - window).max(low);
            let mut records = Vec::new();
            let mut at = from;
            while at < end {
                // No wait first: the records asked for are below the high watermark already, and
                // a broker may hold a fetch for part of its wait even with data there (tansu
                // does). An empty answer is asked again with a wait before it counts as the end:
                // a cursor missed here would make the next owner re-send minutes.
                let mut batch = Vec::new();
                for wait_ms in [0, READ_BACK_WAIT_MS] {
                    batch = io(pc.fetch_records(at, 1..1_000_000, wait_ms))
                        .await
                        .map_err(|e| {
                            e.map_or_else(|| self.error(shard, "no answer in time".into()), fail)
                        })?
                        .0;
                    if !batch.is_empty() {
                        break;
                    }
                }
                let Some(last) = batch.last().map(|r| r.offset) else {
                    break;
                };
                records.extend(batch.into_iter().filter(|r| r.offset < end));
                at = last + 1;
            }
            for r in records.iter().rev() {
                if r.record.key.as_deref() != Some(CURSOR_KEY) {
                    // Not a cursor (a key of a later version, say): passed over.
                    continue;
                }
                match r.record.value.as_deref().map(Cursor::decode) {
                    Some(Ok(c)) => {
                        found.cursor = Some(c);
                        return Ok(found);
                    }
                    Some(Err(e)) => {
                        self.unreadable(shard, r.offset, &e.to_string());
                        found.unreadable.push(r.offset);
                    }
                    None => {
                        self.unreadable(shard, r.offset, "no value");
                        found.unreadable.push(r.offset);
                    }
                }
            }
            end = from;
            window = (window * 2).min(READ_BACK_MAX);
        }
        Ok(found)
    }

    /// Logs an undecodable cursor record, once per shard and offset for the life of the process
    /// (the watchdog reads every shard once a minute).
    fn unreadable(&self, shard: u32, offset: i64, error: &str) {
        let mut reported = self.reported.lock().unwrap_or_else(|e| e.into_inner());
        if reported.contains(&(shard, offset)) {
            return;
        }
        if reported.len() < REPORTED_MAX {
            reported.insert((shard, offset));
        }
        warn!(message = "unreadable cursor record in the state topic; reading further back", topic = %self.topic, shard, offset, error);
    }

    /// The last cursor record of every shard that decodes (`None`: none, or unreadable now), and
    /// the cursor records after it that do not.
    pub async fn all(&self, shards: u32) -> Vec<LastCursor> {
        join_all((0..shards).map(|s| async move {
            match self.last(s).await {
                Ok(c) => c,
                Err(e) => {
                    debug!(message = "cannot read a shard's cursor", error = %e);
                    LastCursor::default()
                }
            }
        }))
        .await
    }

    /// Appends `cursors`, one record to each one's partition, all at once. Returns the shards
    /// whose record could not be written.
    pub async fn write(&self, cursors: &[Cursor]) -> Vec<(u32, GroupError)> {
        self.write_where(cursors, |_| true).await
    }

    /// [`write`](Self::write) of the `cursors` that `keep` still wants once this batch's turn has
    /// come (batches are written one at a time): a periodic cursor of a shard released meanwhile
    /// must not land after the release's final one.
    pub async fn write_where(
        &self,
        cursors: &[Cursor],
        keep: impl Fn(&Cursor) -> bool,
    ) -> Vec<(u32, GroupError)> {
        let _one_batch_at_a_time = self.writing.lock().await;
        let cursors: Vec<&Cursor> = cursors.iter().filter(|c| keep(c)).collect();
        let results = join_all(cursors.iter().map(|&c| async move {
            let record = Record {
                key: Some(CURSOR_KEY.to_vec()),
                value: Some(c.encode()),
                headers: Default::default(),
                timestamp: c.written_at,
            };
            let write = async {
                let pc = self.partition(c.shard).await?;
                pc.produce(vec![record], Compression::NoCompression)
                    .await
                    .map(|_| ())
                    .map_err(|e| self.error(c.shard, describe(&e)))
            };
            tokio::time::timeout(STATE_IO_TIMEOUT, write)
                .await
                .unwrap_or_else(|_| Err(self.error(c.shard, "no answer in time".into())))
        }))
        .await;
        let mut failed = Vec::new();
        for (c, r) in cursors.iter().zip(results) {
            if let Err(e) = r {
                self.forget(c.shard).await;
                failed.push((c.shard, e));
            }
        }
        failed
    }
}
