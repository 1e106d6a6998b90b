//! The follower: a background task that reads the control topic from its first record, then
//! long-polls it, and publishes the [`PauseTable`] each member's tick loop takes.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use rskafka::client::partition::{OffsetAt, PartitionClient, UnknownTopicHandling};
use rskafka::client::Client;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

use super::table::PauseTable;
use super::topic::{apply_records, Ignored};
use crate::kafka::{describe, Backoff};
use crate::obs::terminal::escape_controls;
use crate::wire::control::{ControlRecord, ALL_KEY};
use crate::wire::slot_text;

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

/// How long one fetch waits for a new record when the follower is caught up (and, with a broker
/// that answers an empty fetch at once, the pause before the next one): a pause or resume is
/// seen within about that, and an idle member makes about one request a second for it.
const FOLLOW_WAIT: Duration = Duration::from_millis(500);

impl ControlFollower {
    /// A follower of `topic` (one partition) through `client`, and the task that follows it (for
    /// the service to run: the handle is stale, and [`synced`](Self::synced) waits, until it does).
    pub fn new(
        client: Arc<Client>,
        topic: String,
    ) -> (ControlFollower, impl Future<Output = ()> + Send + 'static) {
        let shared = Arc::new(Shared::default());
        let (sync, requests) = mpsc::channel(16);
        let task = follow(client, topic, Arc::clone(&shared), requests);
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

    pub(super) fn version(&self) -> u64 {
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
    // Over the follower's life (a re-read counts a record again).
    let mut ignored = Ignored::default();
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
                let next = apply_records(
                    &mut table,
                    &topic,
                    from,
                    &records,
                    &mut ignored,
                    |key, record| {
                        if complete {
                            log_change(key, record);
                        }
                    },
                );
                offset = Some(next);
                let caught_up = next >= high;
                if (complete && table != before) || (!complete && caught_up) {
                    shared.publish(table.clone());
                }
                if caught_up {
                    complete = true;
                    if !announced {
                        let (all, jobs) = table.in_force(Utc::now());
                        info!(message = "control topic read", topic = %topic, records_kept = table.records().count(), records_ignored = ignored.count, all_paused = all.is_some(), jobs_paused = jobs.len());
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

/// The one log line of a pause's change of state. The record's text is escaped: the text log
/// format escapes ESC and C1 controls but not a newline, which could forge a log line.
fn log_change(key: &str, record: Option<&ControlRecord>) {
    let job = escape_controls(if key == ALL_KEY { "--all" } else { key });
    let job = job.as_str();
    match record {
        None => info!(message = "control record removed", job),
        Some(r) if r.paused => info!(
            message = "job paused",
            job,
            reason = escape_controls(r.reason.as_deref().unwrap_or("")).as_str(),
            since = %slot_text(r.since),
            until = %r.until.map(slot_text).unwrap_or_default(),
            by = %escape_controls(&r.by),
        ),
        Some(r) => info!(
            message = "job resumed",
            job,
            paused_since = %slot_text(r.since),
            drop_missed = r.drop_missed,
            by = %escape_controls(&r.by),
        ),
    }
}
