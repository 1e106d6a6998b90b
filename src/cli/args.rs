//! What the subcommands share on the command line: the Kafka and schedule-limit flags, the value
//! parsers that range-check a flag at parse time (a refusal names the range; clap adds the flag),
//! and instants as the command line reads and prints them.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;
use clap::Args;

use super::error::CliError;
use crate::schedule::{self, LoadOptions, Schedule};

/// Where Kafka is.
#[derive(Debug, Args, Clone)]
pub struct KafkaArgs {
    /// Bootstrap brokers, comma separated `host:port`.
    #[arg(
        long,
        env = "CRONQ_BROKERS",
        default_value = "localhost:9092",
        value_delimiter = ','
    )]
    pub brokers: Vec<String>,
    /// TLS and SASL.
    #[command(flatten)]
    pub security: crate::kafka::SecurityArgs,
}

impl KafkaArgs {
    /// The checked connection settings (security files read): a bad combination is an error
    /// naming the flag and the file.
    pub fn connection(&self) -> Result<crate::kafka::Connection, CliError> {
        crate::kafka::Connection::resolve(self.brokers.clone(), &self.security).map_err(|e| match e
        {
            crate::kafka::SecurityError::File { flag, path, reason } => CliError::Invalid {
                flag,
                reason: format!("{}: {reason}", path.display()),
            },
            crate::kafka::SecurityError::Flag { flag, reason } => {
                CliError::Invalid { flag, reason }
            }
        })
    }
}

/// The dispatcher group and its state topic (`run`, `apply`): the state topic's partitions are the
/// group's shards, and the schedule topic `<group>.schedule` has as many.
#[derive(Debug, Args, Clone)]
pub struct GroupArgs {
    /// The dispatcher group: every `cronq run` with the same group and brokers shares the schedule.
    #[arg(long, env = "CRONQ_GROUP", default_value = "cronq-dispatchers")]
    pub group: String,
    /// The group's state topic (one partition per shard, cursors in it); default `<group>.state`.
    #[arg(long, env = "CRONQ_STATE_TOPIC", value_parser = kafka_topic)]
    pub state_topic: Option<String>,
    /// Shards of a state topic cronq creates (an existing topic's partition count wins; 1-10000).
    #[arg(long, env = "CRONQ_SHARDS", default_value_t = 12, value_parser = |s: &str| whole::<u32>(s, 1, 10_000))]
    pub shards: u32,
}

impl GroupArgs {
    /// `--state-topic`, or `<group>.state`.
    pub fn state_topic(&self) -> String {
        self.state_topic
            .clone()
            .unwrap_or_else(|| format!("{}.state", self.group))
    }
}

/// What a schedule file may hold (`run` and `validate`): a file over a limit is refused with the
/// file, job and field named.
#[derive(Debug, Args, Clone)]
pub struct ScheduleLimitArgs {
    /// The largest Kafka record batch one dispatch may become (the JobMessage with its key and
    /// headers), as the broker's `message.max.bytes` (1 MiB by default there too); a job over it
    /// fails validation (1024-104857600).
    #[arg(long, env = "CRONQ_MAX_MESSAGE_BYTES", default_value_t = schedule::limits::DEFAULT_MAX_MESSAGE_BYTES, value_parser = |s: &str| whole::<usize>(s, 1024, 100 << 20))]
    pub max_message_bytes: usize,
    /// The most jobs a schedule file may hold (1-100000000).
    #[arg(long, env = "CRONQ_MAX_JOBS", default_value_t = schedule::limits::DEFAULT_MAX_JOBS, value_parser = |s: &str| whole::<usize>(s, 1, 100_000_000))]
    pub max_jobs: usize,
    /// The largest schedule file, in bytes; a larger one is refused without being read (default
    /// 2 GiB; 1024-17179869184).
    #[arg(long, env = "CRONQ_MAX_FILE_BYTES", default_value_t = schedule::limits::DEFAULT_MAX_FILE_BYTES, value_parser = |s: &str| whole::<u64>(s, 1024, 16 << 30))]
    pub max_file_bytes: u64,
}

impl ScheduleLimitArgs {
    /// `options` with these limits.
    pub(super) fn apply(&self, options: LoadOptions) -> LoadOptions {
        LoadOptions {
            max_message_bytes: self.max_message_bytes,
            max_jobs: self.max_jobs,
            max_file_bytes: self.max_file_bytes,
            ..options
        }
    }
}

pub(super) const MINUTE: Duration = Duration::from_secs(60);
pub(super) const HOUR: Duration = Duration::from_secs(3600);
pub(super) const DAY: Duration = Duration::from_secs(86_400);

/// A duration flag in `min..=max`; every refusal names the range (clap adds the flag).
pub(super) fn bounded(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
    let d = humantime::parse_duration(text).map_err(|e| {
        format!(
            "{text:?} is not a duration like \"90s\", \"15m\" or \"2h\" ({e}); the range is {}-{}",
            whole_unit(min),
            whole_unit(max)
        )
    })?;
    if d < min || d > max {
        return Err(format!(
            "{text:?} is out of range {}-{}",
            whole_unit(min),
            whole_unit(max)
        ));
    }
    Ok(d)
}

/// An integer flag in `min..=max`; every refusal (negative, too large for any type, not a number)
/// names the range, so `-n 18446744073709551615` is a usage error rather than an allocation.
pub(super) fn whole<T: TryFrom<i128>>(text: &str, min: i128, max: i128) -> Result<T, String> {
    let trimmed = text.trim();
    let digits = trimmed.strip_prefix(['-', '+']).unwrap_or(trimmed);
    let n = match trimmed.parse::<i128>() {
        Ok(n) => n,
        // Only digits but beyond i128: out of range like any other huge number.
        Err(_) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(format!("{text:?} is out of range {min}-{max}"))
        }
        Err(_) => {
            return Err(format!(
                "{text:?} is not a whole number; the range is {min}-{max}"
            ))
        }
    };
    if n < min || n > max {
        return Err(format!("{text:?} is out of range {min}-{max}"));
    }
    T::try_from(n).map_err(|_| format!("{text:?} is out of range {min}-{max}"))
}

/// A topic flag: Kafka's rule for topic names (1-249 characters of `a-z A-Z 0-9 . _ -`, not `.`
/// or `..`).
pub(super) fn kafka_topic(text: &str) -> Result<String, String> {
    match schedule::limits::topic_problem(text) {
        None => Ok(text.to_string()),
        Some(problem) => Err(problem),
    }
}

/// A bound as people write it: `366d`, `30m`, `10ms` (humantime would say `1year 18h`).
fn whole_unit(d: Duration) -> String {
    let s = d.as_secs();
    match (s, d.subsec_millis()) {
        (0, 0) => "0s".into(),
        (0, ms) => format!("{ms}ms"),
        (s, _) if s % 86_400 == 0 => format!("{}d", s / 86_400),
        (s, _) if s % 3600 == 0 => format!("{}h", s / 3600),
        (s, _) if s % 60 == 0 => format!("{}m", s / 60),
        (s, _) => format!("{s}s"),
    }
}

pub(super) fn status_timeout(text: &str) -> Result<Duration, String> {
    bounded(text, Duration::from_secs(1), Duration::from_secs(600))
}

pub(super) fn grace_duration(text: &str) -> Result<Duration, String> {
    bounded(text, Duration::ZERO, Duration::from_secs(3600))
}

pub(super) fn session_duration(text: &str) -> Result<Duration, String> {
    bounded(text, Duration::from_secs(1), Duration::from_secs(1800))
}

pub(super) fn parse_instant(flag: &'static str, text: &str) -> Result<DateTime<Utc>, CliError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|source| CliError::Instant {
            flag,
            value: text.to_string(),
            source,
        })
}

/// RFC 3339 in the expression's zone: `Z` for UTC, the zone's offset otherwise.
pub(super) fn format_instant(at: DateTime<Utc>, tz: Tz) -> String {
    if tz == Tz::UTC {
        at.to_rfc3339_opts(SecondsFormat::Secs, true)
    } else {
        at.with_timezone(&tz)
            .to_rfc3339_opts(SecondsFormat::Secs, false)
    }
}

/// `hostname-pid`: the default name of a dispatcher member (`--member-id`) and of a worker
/// (`--worker-id`).
pub(super) fn hostname_pid() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "worker".to_string());
    format!("{host}-{}", std::process::id())
}

/// ` (did you mean "nightly"?)` when the schedule has a job named much like `job`, else nothing.
pub(super) fn did_you_mean(schedule: &Schedule, job: &str) -> String {
    let closest = schedule
        .jobs
        .iter()
        .map(|j| (strsim::jaro_winkler(&j.spec.name, job), &j.spec.name))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    closest.map_or(String::new(), |(_, name)| {
        format!(" (did you mean {name:?}?)")
    })
}
