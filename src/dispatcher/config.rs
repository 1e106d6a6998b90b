//! What a `cronq run` is given ([`ServiceConfig`]: the schedule, the sink, the group) and how it
//! fails ([`ServiceError`]); shared by the service, its pipeline and its group member.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::control;
use super::group::GroupError;
use super::observe::Observer;
use super::producer::ProducerConfig;
use crate::clock::Clock;
use crate::schedule::{LoadError, LoadOptions};

/// Where dispatches go.
#[derive(Debug, Clone)]
pub enum SinkConfig {
    /// JSON lines on stdout.
    DryRun {
        /// Topic shown for jobs without their own.
        default_topic: String,
    },
    /// Kafka, through the producer pool.
    Kafka(ProducerConfig),
}

/// The dispatcher group a live, producing `cronq run` joins.
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// Consumer group of the dispatchers.
    pub group: String,
    /// The state topic (one partition per shard).
    pub state_topic: String,
    /// Shards of a state topic cronq creates.
    pub shards: u32,
    /// Replication factor of the state topic when created.
    pub replication_factor: i16,
    /// How long a silent member keeps its shards.
    pub session_timeout: Duration,
    /// This member's name in cursor records.
    pub owner: String,
    /// Topic mode (`--schedule-topic`): the schedule topic the shards' jobs come from, instead
    /// of the schedule file.
    pub schedule_topic: Option<String>,
}

/// Everything a live dispatcher needs.
#[derive(Clone)]
pub struct ServiceConfig {
    /// The schedule file.
    pub schedule: PathBuf,
    /// Zone and catch-up defaults of its jobs.
    pub load: LoadOptions,
    /// How often the loop wakes.
    pub tick: Duration,
    /// Bound on waiting for acks at handover and shutdown.
    pub shutdown_grace: Duration,
    /// Queue between the tick loop and the sink.
    pub queue_capacity: usize,
    /// Records of jobs with a `jitter` that may wait for their `notBefore` at once
    /// (`--delay-capacity`); see [`super::delay`].
    pub delay_capacity: usize,
    /// Where dispatches go.
    pub sink: SinkConfig,
    /// The group (`None` for a dry run).
    pub group: Option<GroupConfig>,
    /// Wall-clock source.
    pub clock: Arc<dyn Clock>,
    /// Metrics, probes and the status page of `--http` ([`Observer::disabled`]: `--http off`).
    pub observer: Arc<Observer>,
    /// The jobs API (`--api-tokens`, topic mode only): handed its Kafka side once the member has
    /// joined its group.
    pub api: Option<Arc<super::api::Front>>,
}

/// Errors that stop the dispatcher.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The schedule file cannot be used at start.
    #[error(transparent)]
    Schedule(#[from] LoadError),
    /// The group cannot be set up.
    #[error(transparent)]
    Group(#[from] GroupError),
    /// The group's control topic cannot be set up.
    #[error(transparent)]
    Control(#[from] control::ControlError),
    /// The schedule topic cannot be set up.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The dry-run printer failed (a closed pipe).
    #[error("writing dispatches to stdout: {0}")]
    Output(#[from] std::io::Error),
    /// A task of the dispatcher died.
    #[error("{what} ended unexpectedly: {reason}")]
    Task {
        /// Which task.
        what: &'static str,
        /// Why.
        reason: String,
    },
}
