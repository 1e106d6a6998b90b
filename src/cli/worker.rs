//! `cronq worker`: consume job messages as a consumer group and execute them, the pool sized by
//! the backlog ([`crate::worker`]), with the `--http` server beside it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::args::{
    bounded, grace_duration, hostname_pid, kafka_topic, session_duration, whole, KafkaArgs, DAY,
    HOUR, MINUTE,
};
use super::error::CliError;
use super::runtime::{block_on, OnSignal};
use crate::clock::DrillClock;
use crate::obs::http::Server;
use crate::obs::Listen;
use crate::worker::autoscale::ScaleConfig;
use crate::worker::queue::Ordering;
use crate::worker::results::ReportConfig;
use crate::worker::run_as::RunAs;
use crate::worker::{Handler, ProcessHandler, Program, StartAt, WorkerConfig};

/// `cronq worker`
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Kafka settings.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The job topic.
    #[arg(long, env = "CRONQ_TOPIC", default_value = "jobs", value_parser = kafka_topic)]
    pub topic: String,
    /// Consumer group: workers in one group share the topic's partitions.
    #[arg(long, env = "CRONQ_GROUP", default_value = "cronq-workers")]
    pub group: String,
    /// Serve /metrics, /healthz, /readyz and the status page on this address (`off`: no server;
    /// port 0: any free port, logged at start).
    #[arg(long, env = "CRONQ_HTTP", default_value = "127.0.0.1:9465")]
    pub http: Listen,
    /// Where a group with no committed offsets starts.
    #[arg(long, env = "CRONQ_START", value_enum, default_value_t = StartAt::Earliest)]
    pub start: StartAt,
    /// Directory of handler programs: a job's first word names an executable file directly inside it.
    #[arg(long, env = "CRONQ_HANDLERS", default_value = "handlers")]
    pub handlers: PathBuf,
    /// Run each job with `sh -c` instead. Anyone who can write to the topic can then run commands here.
    #[arg(long, env = "CRONQ_SHELL")]
    pub shell: bool,
    /// Longest run of one attempt; then its process group gets SIGTERM, and SIGKILL after
    /// --kill-grace (1s-1d).
    #[arg(long, env = "CRONQ_TIMEOUT", default_value = "10m", value_parser = |s: &str| bounded(s, Duration::from_secs(1), DAY))]
    pub timeout: Duration,
    /// The longest per-job `timeout` a job message may ask for; a longer one is cut to this (or to
    /// --timeout, when that is longer). Job topics are not trusted to hold executors (1s-1d).
    #[arg(long, env = "CRONQ_MAX_TIMEOUT", default_value = "1h", value_parser = |s: &str| bounded(s, Duration::from_secs(1), DAY))]
    pub max_timeout: Duration,
    /// Between SIGTERM and SIGKILL when a job times out (0s-10m).
    #[arg(long, env = "CRONQ_KILL_GRACE", default_value = "5s", value_parser = |s: &str| bounded(s, Duration::ZERO, 10 * MINUTE))]
    pub kill_grace: Duration,
    /// Topic for a JobResult per attempt.
    #[arg(long, env = "CRONQ_RESULTS_TOPIC", default_value = "jobs.results", value_parser = kafka_topic)]
    pub results_topic: String,
    /// Topic for jobs that used up their attempts, were rejected, or could not be read.
    #[arg(long, env = "CRONQ_DLQ_TOPIC", default_value = "jobs.dlq", value_parser = kafka_topic)]
    pub dlq_topic: String,
    /// Attempts per job (failed or timed out ones are retried; 1-100).
    #[arg(long, env = "CRONQ_MAX_ATTEMPTS", default_value_t = 3, value_parser = |s: &str| whole::<u32>(s, 1, 100))]
    pub max_attempts: u32,
    /// The most attempts a job message's `maxAttempts` may ask for; more is cut to this (or to
    /// --max-attempts, when that is higher). Job topics are not trusted to hold executors (1-100).
    #[arg(long, env = "CRONQ_MAX_ATTEMPTS_CAP", default_value_t = crate::worker::results::DEFAULT_MAX_ATTEMPTS_CAP, value_parser = |s: &str| whole::<u32>(s, 1, 100))]
    pub max_attempts_cap: u32,
    /// Wait before the second attempt; doubles (with jitter) for each further one, up to 30s
    /// (10ms-30s).
    #[arg(long, env = "CRONQ_RETRY_BACKOFF", default_value = "1s", value_parser = |s: &str| bounded(s, Duration::from_millis(10), Duration::from_secs(30)))]
    pub retry_backoff: Duration,
    /// Jobs held in the local queue (picked by priority) before fetching pauses (1-100000).
    #[arg(long, env = "CRONQ_PREFETCH", default_value_t = 256, value_parser = |s: &str| whole::<usize>(s, 1, 100_000))]
    pub prefetch: usize,
    /// Records waiting for their `notBefore` (at most 10 min) do not count against --prefetch while
    /// there are at most 10000 of them taking at most this many bytes; further ones do (1MiB-16GiB;
    /// `64MiB`, `1GiB`).
    #[arg(long, env = "CRONQ_MAX_HELD_BYTES", default_value = "64MiB", value_parser = held_size)]
    pub max_held_bytes: usize,
    /// `ordered`: runs of one jobName one at a time, in order; `unordered` lifts that.
    #[arg(long, env = "CRONQ_ORDERING", value_enum, default_value_t = Ordering::Ordered)]
    pub ordering: Ordering,
    /// Smallest pool of executors (1-1024).
    #[arg(long, env = "CRONQ_MIN_WORKERS", default_value_t = 1, value_parser = |s: &str| whole::<u64>(s, 1, 1024))]
    pub min_workers: u64,
    /// Largest pool of executors (1-1024).
    #[arg(long, env = "CRONQ_MAX_WORKERS", default_value_t = 16, value_parser = |s: &str| whole::<u64>(s, 1, 1024))]
    pub max_workers: u64,
    /// How often the pool size is decided (100ms-1m).
    #[arg(long, env = "CRONQ_SCALE_INTERVAL", default_value = "1s", value_parser = |s: &str| bounded(s, Duration::from_millis(100), MINUTE))]
    pub scale_interval: Duration,
    /// Grow the pool when the backlog would take longer than this at the observed rate (1s-1h).
    #[arg(long, env = "CRONQ_TARGET_DRAIN", default_value = "10s", value_parser = |s: &str| bounded(s, Duration::from_secs(1), HOUR))]
    pub target_drain: Duration,
    /// Shrink the pool (one step at a time) only after this long with spare capacity (0s-1h).
    #[arg(long, env = "CRONQ_SCALE_DOWN_DELAY", default_value = "30s", value_parser = |s: &str| bounded(s, Duration::ZERO, HOUR))]
    pub scale_down_delay: Duration,
    /// On SIGINT/SIGTERM, how long running jobs may take to finish before they are killed (0s-1h).
    #[arg(long, env = "CRONQ_SHUTDOWN_GRACE", default_value = "30s", value_parser = grace_duration)]
    pub shutdown_grace: Duration,
    /// How often finished offsets are committed (100ms-5m).
    #[arg(long, env = "CRONQ_COMMIT_INTERVAL", default_value = "1s", value_parser = |s: &str| bounded(s, Duration::from_millis(100), 5 * MINUTE))]
    pub commit_interval: Duration,
    /// Group session timeout: how long a silent worker keeps its partitions (1s-30m).
    #[arg(long, env = "CRONQ_SESSION_TIMEOUT", default_value = "45s", value_parser = session_duration)]
    pub session_timeout: Duration,
    /// How many finished dispatchIds are remembered to skip redeliveries (1-10000000).
    #[arg(long, env = "CRONQ_DEDUP_CAPACITY", default_value_t = 100_000, value_parser = |s: &str| whole::<usize>(s, 1, 10_000_000))]
    pub dedup_capacity: usize,
    /// On each partition assignment, read the results topic this far back before the partition's
    /// records run, so a dispatchId another worker (or this one before a restart) finished is not
    /// run again; `0s` turns the read off (0s-7d).
    #[arg(long, env = "CRONQ_DEDUPE_WINDOW", default_value = "1h", value_parser = |s: &str| bounded(s, Duration::ZERO, 7 * DAY))]
    pub dedupe_window: Duration,
    /// This worker's name in results (default: hostname-pid).
    #[arg(long, env = "CRONQ_WORKER_ID")]
    pub worker_id: Option<String>,
    /// Partitions of the results and DLQ topics when the worker creates them (1-10000).
    #[arg(long, env = "CRONQ_PARTITIONS", default_value_t = 3, value_parser = |s: &str| whole::<i32>(s, 1, 10_000))]
    pub partitions: i32,
    /// Replication factor of topics the worker creates (1-32).
    #[arg(long, env = "CRONQ_REPLICATION_FACTOR", default_value_t = 1, value_parser = |s: &str| whole::<i16>(s, 1, 32))]
    pub replication_factor: i16,
    /// Never create the results and DLQ topics.
    #[arg(long, env = "CRONQ_NO_CREATE_TOPICS")]
    pub no_create_topics: bool,
    /// Do not run a job whose scheduledAt is older than this when an executor takes it (e.g. `1h`,
    /// 1m-366d): report it `expired` and dead-letter it. Off by default.
    #[arg(long, env = "CRONQ_MAX_AGE", value_parser = max_age_duration)]
    pub max_age: Option<Duration>,
    /// Pass this variable of the worker's environment on to jobs (repeatable). Otherwise jobs get
    /// only PATH, HOME, LANG, TZ and their own CRONQ_* run variables.
    #[arg(long = "pass-env", env = "CRONQ_PASS_ENV", value_delimiter = ',', value_name = "NAME", value_parser = env_name)]
    pub pass_env: Vec<String>,
    /// How much of the end of each job's stdout, and of its stderr, its result keeps (1KiB-128KiB;
    /// `8KiB`, `16k`, `4096`).
    #[arg(long, env = "CRONQ_MAX_OUTPUT", default_value = "8KiB", value_parser = output_size)]
    pub max_output: usize,
    /// A drill and test aid: the clock records are admitted by (`notBefore`, slots too far ahead)
    /// runs SPEED times faster from the Unix second EPOCH (`10x@1764441000`), as the
    /// dispatchers' of the drill do.
    #[arg(long, env = "CRONQ_DRILL_CLOCK", hide = true)]
    pub drill_clock: Option<DrillClock>,
    /// Run jobs as this user and group (names or numeric ids; default group: the user's own), with
    /// no supplementary groups, so they cannot read the worker's files (--sasl-password-file,
    /// --ssl-key) or its /proc. Needs root, or CAP_SETUID, CAP_SETGID and CAP_KILL (to end them
    /// at a timeout); handlers must be executable (scripts also readable) by that user.
    #[arg(long, env = "CRONQ_RUN_AS", value_name = "USER[:GROUP]", value_parser = run_as)]
    pub run_as: Option<RunAs>,
}

/// `--run-as`: looked up in the user and group databases at parse time.
fn run_as(text: &str) -> Result<RunAs, String> {
    RunAs::parse(text).map_err(|e| e.to_string())
}

fn max_age_duration(text: &str) -> Result<Duration, String> {
    bounded(
        text,
        Duration::from_secs(60),
        Duration::from_secs(366 * 86_400),
    )
}

/// `--max-output`: a byte count, optionally with a binary unit, 1KiB-128KiB.
fn output_size(text: &str) -> Result<usize, String> {
    byte_size(text, 1024, 128 * 1024, "1KiB-128KiB")
}

/// `--max-held-bytes`: a byte count, optionally with a binary unit, 1MiB-16GiB.
fn held_size(text: &str) -> Result<usize, String> {
    byte_size(text, 1 << 20, 16 << 30, "1MiB-16GiB")
}

/// A byte count, optionally with a binary unit (`B`, `K`/`KiB`, `M`/`MiB`, `G`/`GiB`), within
/// `min..=max` (`range` says it for the error).
fn byte_size(text: &str, min: u64, max: u64, range: &str) -> Result<usize, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        "g" | "gb" | "gib" => 1024 * 1024 * 1024,
        _ => {
            return Err(format!(
                "{text:?}: not a size (a number of bytes, or with B, KiB, MiB or GiB, e.g. 8KiB)"
            ))
        }
    };
    let out_of_range = || format!("{text:?} is out of range {range}");
    if digits.is_empty() {
        return Err(format!(
            "{text:?}: not a size (a number of bytes, e.g. 8KiB or 8192)"
        ));
    }
    // Only digits here: a parse error is an overflow.
    let n: u64 = digits.parse().map_err(|_| out_of_range())?;
    match n.checked_mul(multiplier) {
        Some(bytes) if (min..=max).contains(&bytes) => {
            usize::try_from(bytes).map_err(|_| out_of_range())
        }
        _ => Err(out_of_range()),
    }
}

/// `--pass-env`: an environment variable's name.
fn env_name(text: &str) -> Result<String, String> {
    let mut chars = text.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(text.to_string())
    } else {
        Err(format!(
            "{text:?} is not an environment variable name (letters, digits and _, not starting with a digit)"
        ))
    }
}

/// The worker's configuration from its command line.
pub fn worker_config(args: &WorkerArgs) -> Result<WorkerConfig, CliError> {
    Ok(WorkerConfig {
        kafka: args.kafka.connection()?,
        topic: args.topic.clone(),
        group: args.group.clone(),
        start: args.start,
        ordering: args.ordering,
        prefetch: args.prefetch,
        max_held_bytes: args.max_held_bytes,
        drill_clock: args.drill_clock,
        report: ReportConfig {
            results_topic: args.results_topic.clone(),
            dlq_topic: args.dlq_topic.clone(),
            max_attempts: args.max_attempts,
            max_attempts_cap: args.max_attempts_cap,
            retry_backoff: args.retry_backoff,
            worker: args.worker_id.clone().unwrap_or_else(hostname_pid),
            max_output: args.max_output,
            max_age: args.max_age,
        },
        scale: ScaleConfig {
            min: args.min_workers as usize,
            max: args.max_workers as usize,
            target_drain: args.target_drain,
            scale_down_delay: args.scale_down_delay,
        },
        scale_interval: args.scale_interval,
        shutdown_grace: args.shutdown_grace,
        commit_interval: args.commit_interval,
        session_timeout: args.session_timeout,
        dedup_capacity: args.dedup_capacity,
        dedupe_window: args.dedupe_window,
        create_topics: !args.no_create_topics,
        partitions: args.partitions,
        replication_factor: args.replication_factor,
    })
}

/// Runs `cronq worker` until SIGINT or SIGTERM, with the `--http` server beside it.
pub(super) fn run(args: WorkerArgs) -> Result<ExitCode, CliError> {
    // First, before any secret is read: a child of the same user cannot read this process's
    // /proc files (environ, mem) from here on.
    crate::worker::run_as::set_non_dumpable()?;
    if args.min_workers > args.max_workers {
        return Err(CliError::Invalid {
            flag: "--min-workers",
            reason: format!(
                "{} is more than --max-workers {}",
                args.min_workers, args.max_workers
            ),
        });
    }
    let program = if args.shell {
        tracing::warn!(
            message = "--shell: jobs run with sh -c; anyone who can write to the topic can run commands on this machine",
            topic = %args.topic,
        );
        Program::Shell
    } else {
        crate::worker::executor::check_handlers_dir(&args.handlers).map_err(|e| {
            CliError::Invalid {
                flag: "--handlers",
                reason: e.to_string(),
            }
        })?;
        Program::Handlers(args.handlers.clone())
    };
    match &args.run_as {
        Some(run_as) => {
            let invalid = |e: crate::worker::run_as::RunAsError| CliError::Invalid {
                flag: "--run-as",
                reason: e.to_string(),
            };
            run_as.check_can_switch().map_err(invalid)?;
            if !args.shell {
                run_as.check_handlers(&args.handlers).map_err(invalid)?;
            }
            tracing::info!(message = "jobs run as another user", run_as = %run_as);
        }
        None if nix::unistd::geteuid().is_root() => tracing::warn!(
            message = "the worker runs as root without --run-as: its jobs run as root and can read its secrets (Kafka credentials, key files); name an unprivileged user with --run-as",
            uid = 0,
        ),
        None => {}
    }
    let handler: Arc<dyn Handler> = Arc::new(ProcessHandler {
        program,
        timeout: args.timeout,
        max_timeout: args.max_timeout,
        kill_grace: args.kill_grace,
        max_output: args.max_output,
        env: crate::worker::executor::ChildEnv::from_worker(&args.pass_env),
        run_as: args.run_as.clone(),
    });
    if let Some(drill) = args.drill_clock {
        tracing::warn!(message = "drill clock: time runs faster than the wall clock (a drill and test aid)", clock = ?drill);
    }
    let config = worker_config(&args)?;
    let observer = crate::worker::observe::Observer::new(&config);
    let site = observer.site();
    block_on(OnSignal::Stop, |shutdown| async move {
        let http = Server::start(args.http, site).await?;
        let result = crate::worker::run_observed(config, handler, shutdown.token(), observer).await;
        http.stop().await;
        result.map_err(CliError::from)
    })?;
    Ok(ExitCode::SUCCESS)
}
