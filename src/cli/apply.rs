//! `cronq apply FILE`: the GitOps path into the group's schedule topic `<group>.schedule`. The file
//! is checked as `validate` checks it, compared with the newest record of each job, and only the
//! difference is written (acks=all); stdout carries the plan, stderr the progress.
//!
//! ```text
//! FILE ──► schedule::load checks (file:line:col; invalid: exit 1, nothing written)
//!      ──► connect, ensure <group>.state (as `run`) and <group>.schedule (as many partitions)
//!      ──► store::latest (progress per partition; from the apply cache's marks where the topic
//!          confirms them, store::cache) ──► store::plan::Plan ──► stdout
//!      ──► store::write (unless --dry-run or nothing to do; progress: records acked of total)
//!      ──► the cache, with what was written
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Args;
use serde_json::value::RawValue;

use super::args::{status_timeout, whole, GroupArgs, KafkaArgs, ScheduleLimitArgs};
use super::error::CliError;
use super::runtime::{block_on, Cut, OnSignal, Shutdown};
use crate::cron::tz::parse_zone;
use crate::kafka::Connection;
use crate::obs::terminal::escape_controls;
use crate::schedule::ShardFilter;
use crate::schedule::{self, LoadError, LoadOptions};
use crate::store::{self, cache, plan::Plan, StoreError};
use crate::wire::schedule::{Changed, VIA_APPLY};

/// `cronq apply`
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The schedule file (the format `cronq validate` checks).
    #[arg(value_name = "FILE", env = "CRONQ_SCHEDULE")]
    pub path: PathBuf,
    /// Print the plan and write nothing (no topic is created either).
    #[arg(long, env = "CRONQ_APPLY_DRY_RUN")]
    pub dry_run: bool,
    /// The tag every job this apply writes carries (`changed.source`), and the jobs --prune may
    /// delete; default: the file's name without its directories (1-200 characters, no control
    /// characters).
    #[arg(long, env = "CRONQ_SOURCE", value_parser = source_name)]
    pub source: Option<String>,
    /// Delete (tombstone) the jobs tagged with this source that are no longer in the file; jobs
    /// of other sources (other files, the API) are never touched.
    #[arg(long, env = "CRONQ_PRUNE")]
    pub prune: bool,
    /// Zone for jobs without a `timezone` field, when checking the file (as `validate`).
    #[arg(long, env = "CRONQ_TIMEZONE", default_value = "UTC")]
    pub timezone: String,
    /// Limits of the schedule file.
    #[command(flatten)]
    pub limits: ScheduleLimitArgs,
    /// The group: the schedule topic is `<group>.schedule`, with the state topic's partitions.
    #[command(flatten)]
    pub group: GroupArgs,
    /// Kafka settings.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Replication factor of the topics cronq creates (1-32).
    #[arg(long, env = "CRONQ_REPLICATION_FACTOR", default_value_t = 1, value_parser = |s: &str| whole::<i16>(s, 1, 32))]
    pub replication_factor: i16,
    /// Where apply keeps its copy of the schedule topic, so that the next apply from this machine
    /// reads only what was written since (checked against the topic first; one file per broker
    /// list and topic, mode 0600). Default: `$XDG_CACHE_HOME/cronq`, else `~/.cache/cronq`.
    #[arg(long, env = "CRONQ_CACHE_DIR", value_name = "DIR", value_parser = cache_dir)]
    pub cache_dir: Option<PathBuf>,
    /// Keep no copy: read the whole topic and write no cache file.
    #[arg(long, env = "CRONQ_NO_CACHE", conflicts_with = "cache_dir")]
    pub no_cache: bool,
    /// Give up when Kafka does not answer, or a read or write makes no progress, within this long
    /// (1s-10m).
    #[arg(long, env = "CRONQ_TIMEOUT", default_value = "30s", value_parser = status_timeout)]
    pub timeout: Duration,
}

/// `--cache-dir`: a path, not the empty string.
fn cache_dir(text: &str) -> Result<PathBuf, String> {
    if text.is_empty() {
        return Err("an empty path; give a directory, or --no-cache".into());
    }
    Ok(PathBuf::from(text))
}

/// `--source`: 1-200 characters, none of them a control character.
fn source_name(text: &str) -> Result<String, String> {
    let len = text.chars().count();
    if !(1..=200).contains(&len) {
        return Err(format!("{len} characters; the range is 1-200"));
    }
    if text.chars().any(char::is_control) {
        return Err("control characters (newlines, tabs) are not allowed".into());
    }
    Ok(text.to_string())
}

/// Who runs the command, for `changed.by`: `$USER`, else the uid's user name, else `uid-N`.
fn user_name() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .or_else(|| {
            nix::unistd::User::from_uid(nix::unistd::getuid())
                .ok()
                .flatten()
                .map(|u| u.name)
        })
        .unwrap_or_else(|| format!("uid-{}", nix::unistd::getuid()))
}

/// Reads a valid file's job entries, each compacted, in file order with their names.
fn file_jobs(
    bytes: &[u8],
    schedule: &schedule::Schedule,
) -> Result<Vec<store::plan::FileJob>, String> {
    #[derive(serde::Deserialize)]
    struct File<'a> {
        #[serde(borrow)]
        jobs: Vec<&'a RawValue>,
    }
    let file: File<'_> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if file.jobs.len() != schedule.jobs.len() {
        return Err(format!(
            "{} job entries, but the check kept {} jobs",
            file.jobs.len(),
            schedule.jobs.len()
        ));
    }
    Ok(file
        .jobs
        .iter()
        .zip(&schedule.jobs)
        .map(|(raw, job)| store::plan::FileJob {
            name: job.spec.name.clone(),
            spec: store::plan::compact_raw(raw),
        })
        .collect())
}

/// Progress of a long read or write: when it last moved, and at most one report a second.
pub(super) struct Progress {
    started: Instant,
    moved_ms: AtomicU64,
    reported: Mutex<Instant>,
}

impl Progress {
    pub(super) fn new() -> Progress {
        let now = Instant::now();
        Progress {
            started: now,
            moved_ms: AtomicU64::new(0),
            reported: Mutex::new(now),
        }
    }

    /// Something moved; `report` runs when the last report is a second old.
    pub(super) fn moved(&self, report: impl FnOnce()) {
        self.moved_ms
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        let Ok(mut last) = self.reported.lock() else {
            return;
        };
        if last.elapsed() >= Duration::from_secs(1) {
            *last = Instant::now();
            report();
        }
    }

    /// Resolves once nothing has moved for `limit`.
    async fn stalled(&self, limit: Duration) {
        loop {
            let moved = Duration::from_millis(self.moved_ms.load(Ordering::Relaxed));
            let quiet = self.started.elapsed().saturating_sub(moved);
            if quiet >= limit {
                return;
            }
            tokio::time::sleep(limit - quiet).await;
        }
    }

    pub(super) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Runs `work` unless a signal comes, or it makes no progress (`progress.moved`) for `limit`.
pub(super) async fn with_progress<T>(
    shutdown: &Shutdown,
    progress: &Progress,
    limit: Duration,
    work: impl Future<Output = T>,
) -> Result<T, Cut> {
    shutdown
        .within(None, async {
            tokio::select! {
                done = work => Ok(done),
                _ = progress.stalled(limit) => Err(Cut::TimedOut),
            }
        })
        .await?
}

/// The words for a step cut short.
pub(super) fn cut_error(cut: Cut, what: &str, kafka: &Connection, limit: Duration) -> CliError {
    match cut {
        Cut::TimedOut => CliError::Kafka(format!(
            "{what}: Kafka at {} made no progress within {} (--timeout)",
            kafka.brokers_text(),
            humantime::format_duration(limit)
        )),
        Cut::Signal => CliError::Kafka(format!("stopped while {what}")),
    }
}

/// Connects, bounded by `limit`.
pub(super) async fn connect(
    shutdown: &Shutdown,
    kafka: &Connection,
    limit: Duration,
) -> Result<rskafka::client::Client, CliError> {
    shutdown
        .within(Some(limit), kafka.connect(Duration::from_millis(200)))
        .await
        .map_err(|cut| cut_error(cut, "connecting", kafka, limit))
}

/// The schedule topic's partition count, as `run` and the topic want it: the state topic is
/// ensured as `run` ensures it (its count is the group's shards), then the schedule topic with as
/// many partitions. A dry run creates nothing: a missing state topic means `--shards`, a missing
/// schedule topic an empty schedule (`None`).
async fn shards(
    client: &rskafka::client::Client,
    kafka: &Connection,
    args: &ApplyArgs,
    topic: &str,
) -> Result<(u32, bool), CliError> {
    let state_topic = args.group.state_topic();
    if args.dry_run {
        let count = |t: &str| {
            let t = t.to_string();
            async move {
                crate::kafka::admin::partition_count(client, &t)
                    .await
                    .map_err(|e| CliError::Kafka(e.to_string()))
            }
        };
        let shards = count(&state_topic)
            .await?
            .map_or(args.group.shards, |n| n as u32);
        return match count(topic).await? {
            None => Ok((shards, false)),
            Some(n) if n as u32 == shards => Ok((shards, true)),
            Some(n) => Err(CliError::Kafka(
                StoreError::Partitions {
                    topic: topic.to_string(),
                    partitions: n,
                    shards,
                }
                .to_string(),
            )),
        };
    }
    let shards = crate::dispatcher::group::ensure_state_topic(
        client,
        kafka,
        &state_topic,
        args.group.shards,
        args.replication_factor,
    )
    .await
    .map_err(|e| CliError::Kafka(e.to_string()))?;
    store::ensure_topic(
        client,
        kafka,
        topic,
        shards,
        Some(args.replication_factor),
        Duration::from_millis(200),
    )
    .await
    .map_err(|e| CliError::Kafka(e.to_string()))?;
    Ok((shards, true))
}

/// The cache file of this apply: `None` with `--no-cache`, or when no directory is known.
fn cache_path(args: &ApplyArgs) -> Option<PathBuf> {
    if args.no_cache {
        return None;
    }
    let dir = args.cache_dir.clone().or_else(cache::default_dir)?;
    let topic = store::topic_name(&args.group.group);
    Some(cache::path_for(&dir, &args.kafka.brokers.join(","), &topic))
}

/// Runs `cronq apply`: the plan on stdout, then the writes (unless `--dry-run`).
pub(super) fn run(args: ApplyArgs) -> Result<ExitCode, CliError> {
    let default_tz = parse_zone(&args.timezone).map_err(CliError::Zone)?;
    let options = args.limits.apply(LoadOptions {
        default_tz,
        ..LoadOptions::default()
    });
    // The cache (if any) loads on its own thread while the file is checked on this one.
    let cache_path = cache_path(&args);
    let loading = std::thread::spawn({
        let path = cache_path.clone();
        move || {
            path.as_deref()
                .and_then(|path| match cache::Snapshot::load(path) {
                    Ok(cached) => cached,
                    Err(e) => {
                        tracing::warn!(message = "the apply cache is unreadable; reading the whole topic", error = %e);
                        None
                    }
                })
        }
    });
    let checked = schedule::load::read_limited(&args.path, options.max_file_bytes)
        .and_then(|bytes| Ok((schedule::parse(&bytes, &args.path, options)?, bytes)));
    let (schedule, bytes) = match checked {
        Ok(checked) => checked,
        Err(LoadError::Invalid { path, problems }) => {
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!(
                "{}: {} problem{}; nothing was written",
                path.display(),
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            );
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    let jobs = file_jobs(&bytes, &schedule).map_err(|reason| CliError::Invalid {
        flag: "FILE",
        reason: format!("{}: {reason}", args.path.display()),
    })?;
    drop((schedule, bytes));
    let source = match &args.source {
        Some(s) => s.clone(),
        None => args
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| source_name(n).is_ok())
            .ok_or_else(|| CliError::Invalid {
                flag: "--source",
                reason: format!(
                    "{} has no usable file name to tag its jobs with; give --source",
                    args.path.display()
                ),
            })?,
    };
    let kafka = args.kafka.connection()?;
    let topic = store::topic_name(&args.group.group);
    let limit = args.timeout;
    let cached = loading.join().ok().flatten();
    let (kafka, topic, args, source) = (&kafka, &topic, &args, &source);
    block_on(OnSignal::Stop, |shutdown| async move {
        let client = Arc::new(connect(&shutdown, kafka, limit).await?);
        let (shards, exists) = shutdown
            .within(Some(limit), shards(&client, kafka, args, topic))
            .await
            .map_err(|cut| cut_error(cut, "looking up the topics", kafka, limit))??;
        let reading = Progress::new();
        let (mut snapshot, stats) = if exists {
            let read = store::latest(&client, topic, shards, cached, |partition, records| {
                reading.moved(|| tracing::info!(message = "reading the schedule topic", topic = %topic, partition, partitions = shards, records));
            });
            with_progress(&shutdown, &reading, limit, read)
                .await
                .map_err(|cut| cut_error(cut, "reading the schedule topic", kafka, limit))?
                .map_err(|e| CliError::Kafka(e.to_string()))?
        } else {
            (
                cache::Snapshot {
                    marks: vec![cache::Mark::default(); shards as usize],
                    ..Default::default()
                },
                Default::default(),
            )
        };
        tracing::info!(message = "read the schedule topic", topic = %topic, partitions = shards, jobs = snapshot.jobs.len(), cached_jobs = stats.cached_jobs, partitions_resumed = stats.resumed, partitions_read_whole = stats.whole, records_read = stats.records, elapsed_ms = reading.elapsed().as_millis() as u64);
        let save = |snapshot: &cache::Snapshot| {
            if let Some(path) = &cache_path {
                let saving = Instant::now();
                match snapshot.save(path) {
                    Ok(()) => {
                        tracing::info!(message = "apply cache written", path = %path.display(), jobs = snapshot.jobs.len(), elapsed_ms = saving.elapsed().as_millis() as u64)
                    }
                    Err(e) => {
                        tracing::warn!(message = "the apply cache could not be written; the next apply reads the whole topic", error = %e)
                    }
                }
            }
        };
        let plan = Plan::new(jobs, &snapshot.jobs, source, args.prune);
        // Buffered: stdout is line-buffered, and a plan may have a million lines.
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for line in plan.to_string().lines() {
            writeln!(out, "{}", escape_controls(line))?;
        }
        out.flush()?;
        drop(out);
        let read_anything = stats.records > 0 || stats.whole > 0;
        if args.dry_run {
            tracing::info!(message = "dry run: nothing was written", topic = %topic);
            if exists && read_anything {
                save(&snapshot);
            }
            return Ok(());
        }
        if plan.is_empty() {
            tracing::info!(message = "the topic holds the file: nothing to write", topic = %topic);
            if read_anything {
                save(&snapshot);
            }
            return Ok(());
        }
        let changed = Changed {
            at: Utc::now(),
            by: user_name(),
            via: VIA_APPLY.to_string(),
            source: Some(source.clone()),
        };
        let records = plan.records(&changed);
        drop(plan);
        let writes: Vec<store::Write> = records
            .iter()
            .map(|(name, record)| store::Write::of(name, record.as_ref()))
            .collect();
        let total = writes.len() as u64;
        let filter = ShardFilter::all(shards);
        let partition_of = |name: &str| filter.shard_of(name) as i32;
        // For the cache: the records written, and the print of each partition's last one.
        let mut last_prints = BTreeMap::new();
        let written = if cache_path.is_some() {
            for w in writes.iter().rev() {
                last_prints
                    .entry(partition_of(&w.name))
                    .or_insert_with(|| cache::fingerprint(w.name.as_bytes(), w.value.as_deref()));
            }
            records
        } else {
            Vec::new()
        };
        let writing = Progress::new();
        let write = store::write(
            store::fresh_partitions(&client, topic),
            topic,
            shards,
            writes,
            changed.at,
            Duration::from_millis(200),
            |a| {
                let acked = a.total;
                writing.moved(|| tracing::info!(message = "writing the schedule topic", topic = %topic, acked, total))
            },
        );
        let offsets = with_progress(&shutdown, &writing, limit, write)
            .await
            .map_err(|cut| {
                cut_error(
                    cut,
                    "writing the schedule topic (what was acked stays written; apply again to write the rest)",
                    kafka,
                    limit,
                )
            })?
            .map_err(|e| CliError::Kafka(format!("{e} (what was acked stays written; apply again to write the rest)")))?;
        tracing::info!(message = "applied", topic = %topic, records = total, elapsed_ms = writing.elapsed().as_millis() as u64);
        snapshot.add_writes(written, partition_of, &offsets, &last_prints);
        save(&snapshot);
        Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_tag_is_one_line_of_1_to_200_characters() {
        assert_eq!(source_name("prod.json").unwrap(), "prod.json");
        assert!(source_name("").unwrap_err().contains("range is 1-200"));
        assert!(source_name(&"x".repeat(201))
            .unwrap_err()
            .contains("range is 1-200"));
        assert!(source_name("a\nb").unwrap_err().contains("control"));
    }

    #[test]
    fn an_empty_cache_dir_is_refused_and_a_path_is_kept() {
        assert!(cache_dir("").unwrap_err().contains("--no-cache"));
        assert_eq!(
            cache_dir("/var/cache/cronq").unwrap(),
            PathBuf::from("/var/cache/cronq")
        );
    }
}
