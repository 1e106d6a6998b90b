//! The worker's side of the consumer group: rdkafka's rebalance and commit callbacks, committing
//! finished offsets, pausing and resuming fetch.

use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use super::observe::Observer;
use super::state::{Tp, WorkerState};
use crate::kafka::KafkaContext;

/// The worker's bookkeeping, shared by the consumer loop and rdkafka's callbacks.
pub(super) fn lock(state: &Mutex<WorkerState>) -> MutexGuard<'_, WorkerState> {
    // A panic while holding the lock leaves bookkeeping that is still consistent enough to commit
    // conservatively; carrying on beats taking the worker down.
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn tps_of(tpl: &TopicPartitionList) -> Vec<Tp> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
}

fn tpl_of(positions: &[(Tp, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in positions {
        // Only fails for an invalid offset; ours are positions taken from fetched records.
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    tpl
}

fn describe_tps(tps: &[Tp]) -> String {
    let mut names: Vec<String> = tps.iter().map(|(t, p)| format!("{t}/{p}")).collect();
    names.sort();
    names.join(",")
}

/// Rebalance and commit callbacks, run by rdkafka on the thread polling the consumer.
pub(super) struct WorkerContext {
    pub(super) state: Arc<Mutex<WorkerState>>,
    /// Whether the main loop paused fetching (full local queue).
    pub(super) paused: Arc<AtomicBool>,
    /// librdkafka's log and errors go the way of every Kafka client of cronq.
    pub(super) kafka: KafkaContext,
    /// Told when the group assigns partitions (the worker is then a member).
    pub(super) observer: Arc<Observer>,
}

impl ClientContext for WorkerContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.kafka.log_line(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.kafka.error_event(&error, reason);
    }
}

impl ConsumerContext for WorkerContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let tps = tps_of(tpl);
                let commits = lock(&self.state).revoke(&tps);
                if !commits.is_empty() {
                    if let Err(e) = consumer.commit(&tpl_of(&commits), CommitMode::Sync) {
                        warn!(message = "committing before giving partitions up failed; their finished records may run again", partitions = %describe_tps(&tps), error = %e);
                    }
                }
                info!(message = "partitions revoked", partitions = %describe_tps(&tps), committed = commits.len());
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => warn!(message = "rebalance error", error = %e),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let tps = tps_of(tpl);
            lock(&self.state).assign(tps.iter().cloned());
            self.observer.assigned(tps.len());
            // A partition paused before a rebalance may come back paused; start every assignment
            // fetching, and let the loop pause again if the queue is still full.
            if let Err(e) = consumer.resume(tpl) {
                warn!(message = "resuming newly assigned partitions failed", error = %e);
            }
            self.paused.store(false, AtomicOrdering::SeqCst);
            info!(message = "partitions assigned", partitions = %describe_tps(&tps));
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            let tps = tps_of(offsets);
            warn!(message = "commit failed; will retry", partitions = %describe_tps(&tps), error = %e);
            lock(&self.state).commit_failed(&tps);
        }
    }
}

pub(super) type Consumer_ = StreamConsumer<WorkerContext>;

pub(super) fn pause_or_resume(consumer: &Consumer_, pause: bool) {
    let Ok(assignment) = consumer.assignment() else {
        return;
    };
    if assignment.count() == 0 {
        return;
    }
    let r = if pause {
        consumer.pause(&assignment)
    } else {
        consumer.resume(&assignment)
    };
    if let Err(e) = r {
        warn!(message = if pause { "pausing fetch failed" } else { "resuming fetch failed" }, error = %e);
    }
}

pub(super) fn commit(consumer: &Consumer_, state: &Mutex<WorkerState>, mode: CommitMode) {
    let positions = lock(state).to_commit();
    if positions.is_empty() {
        return;
    }
    match consumer.commit(&tpl_of(&positions), mode) {
        Ok(()) => {
            lock(state).committed(&positions);
            debug!(message = "committed", positions = ?positions);
        }
        Err(e) => warn!(message = "commit failed; will retry", error = %e),
    }
}
