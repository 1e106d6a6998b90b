//! The schedule's domain: a job's settings ([`JobSpec`]) and the rules they name ([`Catchup`],
//! [`Overlap`]), a validated job and schedule ([`Job`], [`Schedule`]), and which shards' jobs a
//! dispatcher keeps ([`ShardFilter`]). The loader ([`mod@super::load`]) makes them from a file; the
//! record a job's slot becomes is [`super::record`]'s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;

pub use super::kinds::{Kind, Timing, When};
pub use crate::wire::job::Overlap;

/// One job's settings, shared (behind an `Arc`) by the scheduler and every dispatch of the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// Unique name; the Kafka key.
    pub name: String,
    /// Higher runs first within a minute.
    pub priority: i32,
    /// The payload: what a worker executes.
    pub job: String,
    /// The cron expression as written, with `H` (Jenkins' hash) resolved for this job's name.
    /// Shared by every job with the same text (one allocation per distinct expression). For an
    /// `at` or `every` job, its schedule as one line (`@at <instant>`, `@every <period>`: see
    /// [`When::source`]), which is what its records' `cronTime` carries.
    pub cron_time: Arc<str>,
    /// The zone `cron_time` is read in.
    pub timezone: Tz,
    /// Overrides the global topic.
    pub topic: Option<String>,
    /// Disabled jobs are validated but never scheduled.
    pub enabled: bool,
    /// What happens to slots the job missed.
    pub catchup: Catchup,
    /// Missed slots older than this are never sent.
    pub catchup_window: Duration,
    /// The dispatcher shard the job belongs to: `murmur2(jobName) mod S`, as Kafka's partitioner.
    pub shard: u32,
    /// `timeout`: the longest attempt, overriding the worker's `--timeout` (None: the worker's).
    pub timeout: Option<Duration>,
    /// `maxAttempts`: overrides the worker's `--max-attempts` (None: the worker's).
    pub max_attempts: Option<u32>,
    /// `overlap`: what a run does while an earlier one still runs (None: the worker's `--ordering`).
    pub overlap: Option<Overlap>,
    /// Records leave at the slot plus a stable offset in `[0, jitter)` (see [`super::jitter`]);
    /// `None`: at the slot, with no `notBefore`.
    pub jitter: Option<Duration>,
    /// The schedule's kind and bounds when it is not a plain, unbounded `cronTime` (`at`,
    /// `every`, `startAt`, `endAt`, `keepAfterRun`); `None` for the common case, which so keeps
    /// no allocation.
    pub timing: Option<Box<Timing>>,
    /// `deadline`: how long after its slot a run may take to reach a final state before the
    /// monitor calls it `late` (None: the monitor's default, from the timeout and attempts). The
    /// dispatcher and the worker ignore it.
    pub deadline: Option<Duration>,
}

impl JobSpec {
    /// The instant of an `at` job.
    pub fn at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        self.timing.as_ref().and_then(|t| t.at())
    }
}

/// What a job does with slots that were not dispatched in their own minute (no dispatcher owned
/// the job's shard then, or the process stalled). The `catchupWindow` bounds all three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Catchup {
    /// Every missed slot inside the window, in order, each with its own `scheduledAt`.
    #[default]
    All,
    /// Only the most recent missed slot inside the window.
    Latest,
    /// No missed slot.
    None,
}

impl Catchup {
    /// The name used in the schedule file.
    pub fn as_str(self) -> &'static str {
        match self {
            Catchup::All => "all",
            Catchup::Latest => "latest",
            Catchup::None => "none",
        }
    }
}

/// Which jobs a dispatcher keeps: those of the shards it owns, out of `count`.
#[derive(Debug, Clone)]
pub struct ShardFilter {
    count: u32,
    /// `None`: every shard.
    owned: Option<Arc<[bool]>>,
}

impl Default for ShardFilter {
    fn default() -> Self {
        ShardFilter::all(1)
    }
}

impl ShardFilter {
    /// Every shard of `count` (at least 1).
    pub fn all(count: u32) -> ShardFilter {
        ShardFilter {
            count: count.max(1),
            owned: None,
        }
    }

    /// Only `owned` out of `count`.
    pub fn only(count: u32, owned: impl IntoIterator<Item = u32>) -> ShardFilter {
        let count = count.max(1);
        let mut set = vec![false; count as usize];
        for s in owned {
            if let Some(slot) = set.get_mut(s as usize) {
                *slot = true;
            }
        }
        ShardFilter {
            count,
            owned: Some(set.into()),
        }
    }

    /// The number of shards.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether jobs of `shard` are kept.
    pub fn owns(&self, shard: u32) -> bool {
        self.owned
            .as_ref()
            .is_none_or(|o| o.get(shard as usize).copied().unwrap_or(false))
    }

    /// The shard of a job: Kafka's default partitioner over the name (`toPositive(murmur2) mod S`).
    pub fn shard_of(&self, job_name: &str) -> u32 {
        crate::wire::partition_for(job_name.as_bytes(), self.count as i32) as u32
    }
}

/// A validated job: its settings and its compiled schedule.
#[derive(Debug, Clone)]
pub struct Job {
    /// Settings.
    pub spec: Arc<JobSpec>,
    /// Its compiled schedule: `cron_time` in `timezone` (shared between unbounded cron jobs with
    /// the same expression and zone), or its `at`/`every` and bounds.
    pub expr: Arc<When>,
}

/// A whole valid schedule, jobs in file order.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    /// Every job, enabled or not.
    pub jobs: Vec<Job>,
}

impl Schedule {
    /// The jobs of each shard (as [`JobSpec::shard`] says), file order kept; `shards` lists the
    /// shards that must appear even when they hold no job.
    pub fn into_shards(self, shards: impl IntoIterator<Item = u32>) -> BTreeMap<u32, Schedule> {
        let mut out: BTreeMap<u32, Schedule> = shards
            .into_iter()
            .map(|s| (s, Schedule::default()))
            .collect();
        for job in self.jobs {
            out.entry(job.spec.shard).or_default().jobs.push(job);
        }
        out
    }
}

/// The shortest `deadline` a job may have.
pub const MIN_DEADLINE: Duration = Duration::from_secs(60);

/// The longest `deadline` a job may have.
pub const MAX_DEADLINE: Duration = Duration::from_secs(366 * 24 * 3600);

/// `--max-catchup`'s default.
pub const DEFAULT_CATCHUP_WINDOW: Duration = Duration::from_secs(3600);

/// The longest `catchupWindow` a job may have.
pub const MAX_CATCHUP_WINDOW: Duration = Duration::from_secs(366 * 24 * 3600);
