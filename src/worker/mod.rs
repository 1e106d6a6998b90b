//! `cronq worker`: consumes JobMessage v1 as a member of a consumer group, runs each job, reports
//! results, and commits a partition's offset only past records whose execution has finished.
//!
//! ```text
//!  Kafka topic ──► StreamConsumer (group --group, manual commits) ──► WorkerState::admit
//!     ▲   (paused after 5 s with --prefetch queued)                       │ local queue (priority,
//!     │                                                                   │ then slot; one run per
//!     │ commit every --commit-interval: lowest unfinished offset          ▼ jobName at a time)
//!     └──────────────────────────────── WorkerState ◄── finish ◄── executors (pool of N tasks)
//!                                                                   │ Handler (process or your own)
//!  every --scale-interval: autoscale::decide(lag, in flight, rate)  ▼
//!     sets N within [--min-workers, --max-workers]         results topic / DLQ topic
//! ```
//!
//! Delivery is at-least-once. A record's offset is committed only once its execution, retries and
//! reports are done; a worker that dies mid-job leaves its records uncommitted, and the member that
//! takes the partition over runs them again. A record that cannot be run (malformed, or its task
//! died) is dead-lettered through the same bounds as jobs (`--prefetch`, the report window) and its
//! offset then moves on like any other. Rebalances commit what finished before the partition
//! goes; running jobs of a revoked partition still finish and report, but their offsets are left to
//! the new owner. SIGTERM stops fetching, lets running jobs finish within `--shutdown-grace`,
//! commits, and leaves the group. Where a result proves a run, it is at-most-once: on each
//! assignment the results topic is read over `--dedupe-window` before the partition's records run
//! ([`rebuild`]), and a `dispatchId` with a terminal result there is skipped as a duplicate.
//!
//! A message's run settings override the worker's flags for its run: `timeoutMs` (`--timeout`,
//! capped at `--max-timeout`), `maxAttempts` (`--max-attempts`, capped at `--max-attempts-cap`)
//! and `overlap` (`--ordering`):
//! `skip` reports a record `skipped` without running it while a run of its job executes or waits
//! here, `replace` cancels the job's executing runs (the executor's kill path) and drops its
//! waiting ones, both reported `cancelled`. All runs of a job share its partition, so the
//! partition's owner sees them all; a revoked partition's running jobs are not cancelled.
//!
//! No record holds a job or a partition for long: a `notBefore` holds a run at most 10 minutes, a
//! `scheduledAt` more than 11 minutes ahead of the worker's clock is dead-lettered (`future_slot`),
//! held records beyond `--max-held-bytes` count against `--prefetch`, and a job that exec can never
//! start (`E2BIG`, a NUL byte) is `rejected`, not retried.
//!
//! - `service`: the one owner of the worker's lifecycle ([`run`]): the clients, the background
//!   tasks (the lag watcher) in one [`Tasks`](crate::lifecycle::Tasks), the drain at shutdown.
//! - `consumer`: the consumer loop (admission, the pool's execution tasks, commits, fetch pauses,
//!   the autoscale step); `group`: rdkafka's rebalance and commit callbacks; `lag`: the
//!   broker-side lag the pool size follows.
//! - [`executor`]: running one job (the `--handlers` rule, `--shell`, timeouts) and the [`Handler`]
//!   trait for embedding; [`run_as`]: `--run-as` and the non-dumpable worker, which keep the
//!   worker's secrets from its handlers.
//! - [`results`]: JobResult v1, retries, dead letters, `--max-age`, the integrity checks, and the
//!   bounds that keep one record from freezing its partition (report size cap, permanent errors
//!   given up).
//! - [`state`], [`offsets`], [`queue`], [`dedup`]: the pure bookkeeping.
//! - [`rebuild`]: on assignment, the dedupe state from the results topic (`--dedupe-window`).
//! - [`autoscale`]: the pure pool-size decision.
//! - [`observe`]: metrics, readiness/liveness and the status page of `--http`.

pub mod attempts;
pub mod autoscale;
mod consumer;
pub mod dedup;
pub mod executor;
mod group;
mod lag;
pub mod observe;
pub mod offsets;
pub mod queue;
pub mod rebuild;
pub mod results;
pub mod run_as;
mod service;
pub mod state;

use std::time::Duration;

use rdkafka::error::KafkaError;

pub use executor::{Handler, JobRun, Outcome, ProcessHandler, Program, Status};
use results::ReportConfig;
pub use service::{run, run_observed};

use crate::kafka::Connection;

/// `--start`: where a group with no committed offset begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum StartAt {
    /// The oldest record: jobs dispatched before the first worker came up still run.
    #[default]
    Earliest,
    /// Only records produced from now on.
    Latest,
}

/// Everything the worker needs.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Where Kafka is and how to talk to it.
    pub kafka: Connection,
    /// The job topic.
    pub topic: String,
    /// Consumer group.
    pub group: String,
    /// Where a group without offsets starts.
    pub start: StartAt,
    /// `--ordering`
    pub ordering: queue::Ordering,
    /// Jobs held in the local queue before fetching pauses.
    pub prefetch: usize,
    /// `--max-held-bytes`: records held for their `notBefore` beyond these bytes count against
    /// `prefetch`.
    pub max_held_bytes: usize,
    /// `--drill-clock`: the clock records are admitted by runs faster (a drill and test aid);
    /// None: the system's.
    pub drill_clock: Option<crate::clock::DrillClock>,
    /// Results, DLQ, retries, worker id.
    pub report: ReportConfig,
    /// Pool limits and timings.
    pub scale: autoscale::ScaleConfig,
    /// How often the pool size is decided.
    pub scale_interval: Duration,
    /// How long running jobs may take to finish after SIGTERM.
    pub shutdown_grace: Duration,
    /// How often finished offsets are committed.
    pub commit_interval: Duration,
    /// Consumer group session timeout: how soon a dead member's partitions move.
    pub session_timeout: Duration,
    /// How many finished `dispatchId`s are remembered.
    pub dedup_capacity: usize,
    /// `--dedupe-window`: how far back the results topic is read on each assignment, before the
    /// partition's records run (zero: not read; only this worker's own runs are known).
    pub dedupe_window: Duration,
    /// Create the results and DLQ topics when missing.
    pub create_topics: bool,
    /// Partitions of topics the worker creates.
    pub partitions: i32,
    /// Replication factor of topics the worker creates.
    pub replication_factor: i16,
}

/// Why the worker could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// A Kafka client could not be configured.
    #[error("cannot create the Kafka {what} for {brokers}: {source}")]
    Client {
        /// consumer, producer, admin client
        what: &'static str,
        /// `--brokers`
        brokers: String,
        /// Why.
        source: KafkaError,
    },
    /// Subscribing failed.
    #[error("cannot subscribe to topic {topic:?}: {source}")]
    Subscribe {
        /// The topic.
        topic: String,
        /// Why.
        source: KafkaError,
    },
    /// A report topic could not be created.
    #[error("cannot create topic {topic:?}: {reason} (create it yourself, or check the broker's permissions)")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// The broker's answer.
        reason: String,
    },
    /// A background task of the worker (the lag watcher) ended while the worker ran: a bug.
    #[error("the worker's {task} stopped unexpectedly: {reason}")]
    TaskEnded {
        /// The task.
        task: &'static str,
        /// How it ended.
        reason: String,
    },
}

/// What a run did, logged when the worker stops.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Jobs that succeeded.
    pub succeeded: u64,
    /// Jobs sent to the DLQ (attempts used up, or rejected).
    pub dead_lettered: u64,
    /// Records skipped as recently finished `dispatchId`s.
    pub duplicates: u64,
    /// Records that were not JobMessage v1 (or failed its integrity checks).
    pub malformed: u64,
    /// Jobs not run because they were older than `--max-age` (also counted as dead-lettered).
    pub expired: u64,
    /// Records not run because their slot was too far ahead of the clock (also counted as
    /// dead-lettered).
    pub future_slots: u64,
    /// Execution tasks that died; their records were dead-lettered.
    pub crashed: u64,
    /// Reports given up on a permanent error (too large, not authorized).
    pub undeliverable: u64,
    /// Jobs still running when the shutdown grace ran out.
    pub aborted: u64,
    /// Records not run because a run of their job was running or queued (`"overlap": "skip"`).
    pub skipped: u64,
    /// Runs ended, or never started, because a newer run replaced them (`"overlap": "replace"`).
    pub cancelled: u64,
}
