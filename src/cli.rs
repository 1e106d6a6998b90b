//! The command line: `cronq run | worker | tail | validate | next | explain`.
//! Every flag is also an environment variable (`CRONQ_*`); durations use humantime (`90s`, `1h`).
//! stdout carries only data so it can be piped; logs and errors go to stderr.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use chrono_tz::Tz;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::clock::{Clock, DrillClock, SystemClock};
use crate::cron::{tz::parse_zone, CronError, CronExpr};
use crate::dispatcher::observe::{Mode, Observer};
use crate::dispatcher::producer::{CompressionArg, ProducerConfig};
use crate::dispatcher::service::{self, GroupConfig, ServiceConfig, ServiceError, SinkConfig};
use crate::obs::http::Site;
use crate::obs::Listen;
use crate::schedule::{self, LoadError, LoadOptions, ShardFilter};
use crate::worker::autoscale::ScaleConfig;
use crate::worker::queue::Ordering;
use crate::worker::results::ReportConfig;
use crate::worker::{Handler, ProcessHandler, Program, StartAt, WorkerConfig, WorkerError};

/// cronq: turns a schedule of cron jobs into Kafka messages.
#[derive(Debug, Parser)]
#[command(name = "cronq", version, about, long_about = None)]
pub struct Cli {
    /// Log filter (tracing's EnvFilter syntax, e.g. `info`, `cronq=debug`).
    #[arg(
        long,
        global = true,
        env = "CRONQ_LOG",
        default_value = "info,rskafka=off"
    )]
    pub log: String,
    /// Log format on stderr: `text` for people, `json` for log shippers (one object per line).
    #[arg(
        long,
        global = true,
        env = "CRONQ_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text
    )]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the dispatcher: every due job of the schedule becomes one message.
    Run(RunArgs),
    /// Check a schedule file: every problem (exit 1), or each job's next run (exit 0).
    Validate(ValidateArgs),
    /// Consume job messages as a consumer group and execute them, sizing the pool by the backlog.
    Worker(WorkerArgs),
    /// Print job messages as they arrive on a topic.
    Tail(TailArgs),
    /// Print the next instants at which a cron expression fires, one RFC 3339 instant per line.
    Next(NextArgs),
    /// Describe a cron expression in English and show its next 5 instants.
    Explain(ExplainArgs),
    /// Show the dispatcher group: members, shards, cursors, schedule MD5s (exit 1 when unhealthy).
    Status(StatusArgs),
    /// Run one job of the schedule now (or at --at), by hand; prints its dispatchId.
    Trigger(TriggerArgs),
    /// Pause a job (or every job, --all) without editing the schedule file: its slots are not
    /// dispatched until `cronq resume` or --until; prints the control record written.
    Pause(PauseArgs),
    /// End a pause. By default the job's catch-up rule (`catchup`, `catchupWindow`; default
    /// `all` within 1h) decides about the paused slots, as about slots missed in downtime:
    /// --drop-missed sends none of them. Prints the control record written.
    Resume(ResumeArgs),
}

/// `cronq run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The schedule file (checked for changes on every tick).
    #[arg(long, env = "CRONQ_SCHEDULE", default_value = "schedule/schedule.json")]
    pub schedule: PathBuf,
    /// Limits of the schedule file.
    #[command(flatten)]
    pub limits: ScheduleLimitArgs,
    /// Zone for jobs without a `timezone` field (IANA name).
    #[arg(long, env = "CRONQ_TIMEZONE", default_value = "UTC")]
    pub timezone: String,
    /// Topic for jobs without a `topic` field.
    #[arg(long, env = "CRONQ_TOPIC", default_value = "jobs", value_parser = kafka_topic)]
    pub topic: String,
    /// How often the loop wakes up to check the clock and the schedule file (10ms-1m).
    #[arg(long, env = "CRONQ_TICK", default_value = "1s", value_parser = tick_duration)]
    pub tick: Duration,
    /// Default `catchupWindow` of jobs: missed slots (after downtime, a takeover or a stall) up to
    /// this far back are dispatched, older ones skipped (1m-366d).
    #[arg(long, env = "CRONQ_MAX_CATCHUP", default_value = "1h", value_parser = catchup_duration)]
    pub max_catchup: Duration,
    /// On SIGINT/SIGTERM or a handover, how long to wait for acks before writing the cursors (0s-1h).
    #[arg(long, env = "CRONQ_SHUTDOWN_GRACE", default_value = "10s", value_parser = grace_duration)]
    pub shutdown_grace: Duration,
    /// Capacity of the queue between the tick loop and the sink (a full queue makes the loop wait;
    /// 1-10000000).
    #[arg(long, env = "CRONQ_QUEUE_CAPACITY", default_value_t = 10_000, value_parser = |s: &str| whole::<u32>(s, 1, 10_000_000))]
    pub queue_capacity: u32,
    /// Records of jobs with a `jitter` that may wait for their offset at once, in the delay queue
    /// before the producers (a full delay queue makes the loop wait, nothing is dropped; 1-100000000).
    #[arg(long, env = "CRONQ_DELAY_CAPACITY", default_value_t = 1_000_000, value_parser = |s: &str| whole::<u32>(s, 1, 100_000_000))]
    pub delay_capacity: u32,
    /// The dispatcher group: every `cronq run` with the same group and brokers shares the schedule.
    #[arg(long, env = "CRONQ_GROUP", default_value = "cronq-dispatchers")]
    pub group: String,
    /// The group's state topic (one partition per shard, cursors in it); default `<group>.state`.
    #[arg(long, env = "CRONQ_STATE_TOPIC", value_parser = kafka_topic)]
    pub state_topic: Option<String>,
    /// Shards of a state topic cronq creates (an existing topic's partition count wins; 1-10000).
    #[arg(long, env = "CRONQ_SHARDS", default_value_t = 12, value_parser = |s: &str| whole::<u32>(s, 1, 10_000))]
    pub shards: u32,
    /// How long a silent member keeps its shards before the group moves them (1s-30m).
    #[arg(long, env = "CRONQ_SESSION_TIMEOUT", default_value = "10s", value_parser = session_duration)]
    pub session_timeout: Duration,
    /// This member's name in cursor records (default: hostname-pid).
    #[arg(long, env = "CRONQ_MEMBER_ID")]
    pub member_id: Option<String>,
    /// Drill and test aid: run the wall clock SPEED times faster from Unix second EPOCH
    /// (`10x@1764441000`). Every member of a drill must get the same value.
    #[arg(long, env = "CRONQ_DRILL_CLOCK", hide = true)]
    pub drill_clock: Option<DrillClock>,
    /// Print each dispatch as a JSON line on stdout instead of producing to Kafka.
    #[arg(long, env = "CRONQ_DRY_RUN")]
    pub dry_run: bool,
    /// Serve /metrics, /healthz, /readyz and the status page on this address (`off`: no server;
    /// port 0: any free port, logged at start).
    #[arg(long, env = "CRONQ_HTTP", default_value = "127.0.0.1:9464")]
    pub http: Listen,
    /// Kafka settings.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Partitions of topics cronq creates (1-10000).
    #[arg(long, env = "CRONQ_PARTITIONS", default_value_t = 3, value_parser = |s: &str| whole::<i32>(s, 1, 10_000))]
    pub partitions: i32,
    /// Replication factor of topics cronq creates (1-32).
    #[arg(long, env = "CRONQ_REPLICATION_FACTOR", default_value_t = 1, value_parser = |s: &str| whole::<i16>(s, 1, 32))]
    pub replication_factor: i16,
    /// Never create topics; a missing topic is an error.
    #[arg(long, env = "CRONQ_NO_CREATE_TOPICS")]
    pub no_create_topics: bool,
    /// Producer tasks (1-256).
    #[arg(long, env = "CRONQ_PRODUCERS", default_value_t = 4, value_parser = |s: &str| whole::<usize>(s, 1, 256))]
    pub producers: usize,
    /// Records per produce request at most (1-100000).
    #[arg(long, env = "CRONQ_BATCH_SIZE", default_value_t = 1000, value_parser = |s: &str| whole::<usize>(s, 1, 100_000))]
    pub batch_size: usize,
    /// Record batch compression.
    #[arg(long, env = "CRONQ_COMPRESSION", value_enum, default_value_t = CompressionArg::None)]
    pub compression: CompressionArg,
    /// First retry delay after a failed produce (doubles with jitter up to 30s; 10ms-30s).
    #[arg(long, env = "CRONQ_RETRY_BACKOFF", default_value = "100ms", value_parser = |s: &str| bounded(s, Duration::from_millis(10), Duration::from_secs(30)))]
    pub retry_backoff: Duration,
    /// Replay the window [FROM, UNTIL) as fast as possible and exit (RFC 3339 instants,
    /// 1970-01-01T00:01:00Z to 2100-01-01T00:00:00Z).
    #[arg(long, env = "CRONQ_FROM", requires = "until")]
    pub from: Option<String>,
    /// End (exclusive) of the replay window.
    #[arg(long, env = "CRONQ_UNTIL", requires = "from")]
    pub until: Option<String>,
}

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
    /// Wait before the second attempt; doubles (with jitter) for each further one, up to 30s
    /// (10ms-30s).
    #[arg(long, env = "CRONQ_RETRY_BACKOFF", default_value = "1s", value_parser = |s: &str| bounded(s, Duration::from_millis(10), Duration::from_secs(30)))]
    pub retry_backoff: Duration,
    /// Jobs held in the local queue (picked by priority) before fetching pauses (1-100000).
    #[arg(long, env = "CRONQ_PREFETCH", default_value_t = 256, value_parser = |s: &str| whole::<usize>(s, 1, 100_000))]
    pub prefetch: usize,
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
}

/// `cronq tail`
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Kafka settings.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The topic to read.
    #[arg(long, env = "CRONQ_TOPIC", default_value = "jobs", value_parser = kafka_topic)]
    pub topic: String,
    /// Start at the oldest record instead of only new ones.
    #[arg(long)]
    pub from_beginning: bool,
    /// Print each record's value as JSON (one line each) instead of a readable line.
    #[arg(long)]
    pub json: bool,
    /// Exit after this many records (1-1000000000).
    #[arg(long, value_parser = |s: &str| whole::<u64>(s, 1, 1_000_000_000))]
    pub count: Option<u64>,
    /// Exit when no record arrived for this long (e.g. `10s`; 100ms-7d).
    #[arg(long, value_parser = |s: &str| bounded(s, Duration::from_millis(100), 7 * DAY))]
    pub idle_timeout: Option<Duration>,
}

/// `cronq status`
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Kafka settings.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The dispatcher group.
    #[arg(long, env = "CRONQ_GROUP", default_value = "cronq-dispatchers")]
    pub group: String,
    /// The group's state topic; default `<group>.state`.
    #[arg(long, env = "CRONQ_STATE_TOPIC", value_parser = kafka_topic)]
    pub state_topic: Option<String>,
    /// Print the view as one JSON object.
    #[arg(long)]
    pub json: bool,
    /// Give up when Kafka does not answer within this long (1s-10m).
    #[arg(long, default_value = "10s", value_parser = status_timeout)]
    pub timeout: Duration,
    /// Drill and test aid, as for `run`.
    #[arg(long, env = "CRONQ_DRILL_CLOCK", hide = true)]
    pub drill_clock: Option<DrillClock>,
}

/// `cronq validate`
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// The schedule file.
    #[arg(default_value = "schedule/schedule.json", env = "CRONQ_SCHEDULE")]
    pub path: PathBuf,
    /// Zone for jobs without a `timezone` field.
    #[arg(long, env = "CRONQ_TIMEZONE", default_value = "UTC")]
    pub timezone: String,
    /// Limits of the schedule file.
    #[command(flatten)]
    pub limits: ScheduleLimitArgs,
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
    fn apply(&self, options: LoadOptions) -> LoadOptions {
        LoadOptions {
            max_message_bytes: self.max_message_bytes,
            max_jobs: self.max_jobs,
            max_file_bytes: self.max_file_bytes,
            ..options
        }
    }
}

/// `cronq trigger`
#[derive(Debug, Args)]
pub struct TriggerArgs {
    /// The job's `jobName` in the schedule.
    pub job: String,
    /// The schedule file the job is read from.
    #[arg(long, env = "CRONQ_SCHEDULE", default_value = "schedule/schedule.json")]
    pub schedule: PathBuf,
    /// Limits of the schedule file.
    #[command(flatten)]
    pub limits: ScheduleLimitArgs,
    /// Run at this RFC 3339 instant (now or later; the command waits until then) instead of now.
    #[arg(long, env = "CRONQ_AT")]
    pub at: Option<String>,
    /// Topic for jobs without a `topic` field.
    #[arg(long, env = "CRONQ_TOPIC", default_value = "jobs", value_parser = kafka_topic)]
    pub topic: String,
    /// Kafka settings.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Partitions of a topic cronq creates (1-10000).
    #[arg(long, env = "CRONQ_PARTITIONS", default_value_t = 3, value_parser = |s: &str| whole::<i32>(s, 1, 10_000))]
    pub partitions: i32,
    /// Replication factor of a topic cronq creates (1-32).
    #[arg(long, env = "CRONQ_REPLICATION_FACTOR", default_value_t = 1, value_parser = |s: &str| whole::<i16>(s, 1, 32))]
    pub replication_factor: i16,
    /// Never create topics; a missing topic is an error.
    #[arg(long, env = "CRONQ_NO_CREATE_TOPICS")]
    pub no_create_topics: bool,
    /// Give up when Kafka has not taken the run within this long (1s-10m).
    #[arg(long, env = "CRONQ_TIMEOUT", default_value = "30s", value_parser = status_timeout)]
    pub timeout: Duration,
}

/// Where the control records of `pause`/`resume` go: the dispatcher group's `<group>.control`.
#[derive(Debug, Args)]
pub struct ControlArgs {
    /// The dispatcher group (as `cronq run --group`); its control topic is `<group>.control`.
    #[arg(long, env = "CRONQ_GROUP", default_value = "cronq-dispatchers")]
    pub group: String,
    /// Kafka settings.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Give up when Kafka has not taken the record within this long (1s-10m).
    #[arg(long, env = "CRONQ_TIMEOUT", default_value = "30s", value_parser = status_timeout)]
    pub timeout: Duration,
    /// Drill and test aid, as for `run`.
    #[arg(long, env = "CRONQ_DRILL_CLOCK", hide = true)]
    pub drill_clock: Option<DrillClock>,
}

/// `cronq pause`
#[derive(Debug, Args)]
pub struct PauseArgs {
    /// The job's `jobName`.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub job: Option<String>,
    /// Pause every job: the incident switch (nothing is dispatched until `cronq resume --all`).
    #[arg(long)]
    pub all: bool,
    /// End the pause by itself at this RFC 3339 instant, or after this long (`90m`, `2h`; up to
    /// 366d ahead). Its end then sends paused slots as a resume does.
    #[arg(long, env = "CRONQ_PAUSE_UNTIL", value_parser = until_arg)]
    pub until: Option<UntilArg>,
    /// Why (shown by `cronq status` and the status page; 1-500 characters).
    #[arg(long, env = "CRONQ_REASON", value_parser = reason_text)]
    pub reason: Option<String>,
    /// When --until ends the pause, send none of the paused slots, whatever the job's catch-up
    /// rule.
    #[arg(long, requires = "until")]
    pub drop_missed: bool,
    /// Pause a job that is not in the schedule file (one about to be added, say).
    #[arg(long, conflicts_with = "all")]
    pub force: bool,
    /// The schedule file the job is looked up in.
    #[arg(long, env = "CRONQ_SCHEDULE", default_value = "schedule/schedule.json")]
    pub schedule: PathBuf,
    /// Limits of the schedule file.
    #[command(flatten)]
    pub limits: ScheduleLimitArgs,
    /// Replication factor of the control topic when cronq creates it (1-32).
    #[arg(long, env = "CRONQ_REPLICATION_FACTOR", default_value_t = 1, value_parser = |s: &str| whole::<i16>(s, 1, 32))]
    pub replication_factor: i16,
    /// Never create the control topic; a missing one is an error.
    #[arg(long, env = "CRONQ_NO_CREATE_TOPICS")]
    pub no_create_topics: bool,
    /// Group, Kafka, timeout.
    #[command(flatten)]
    pub control: ControlArgs,
}

/// `cronq resume`
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// The job's `jobName`.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    pub job: Option<String>,
    /// End `cronq pause --all`.
    #[arg(long)]
    pub all: bool,
    /// Send none of the paused slots, whatever the job's catch-up rule (after an incident, the
    /// usual wish). Without it the rule decides: `all` (the default) sends those within the
    /// job's `catchupWindow` (default 1h), `latest` the most recent, `none` none.
    #[arg(long)]
    pub drop_missed: bool,
    /// Group, Kafka, timeout.
    #[command(flatten)]
    pub control: ControlArgs,
}

/// `--until`: an instant, or a span from now.
#[derive(Debug, Clone)]
pub enum UntilArg {
    /// RFC 3339.
    At(DateTime<Utc>),
    /// From now.
    After(Duration),
}

/// The longest pause `--until` may ask for.
const MAX_PAUSE: Duration = Duration::from_secs(366 * 86_400);

fn until_arg(text: &str) -> Result<UntilArg, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(UntilArg::At(at.with_timezone(&Utc)));
    }
    match humantime::parse_duration(text) {
        Ok(d) if d >= Duration::from_secs(1) && d <= MAX_PAUSE => Ok(UntilArg::After(d)),
        Ok(_) => Err(format!("{text:?} is out of range 1s-366d")),
        Err(_) => Err(format!(
            "{text:?} is neither an RFC 3339 instant (2026-11-30T06:00:00Z) nor a duration (90m, 2h; 1s-366d)"
        )),
    }
}

fn reason_text(text: &str) -> Result<String, String> {
    let len = text.chars().count();
    if !(1..=500).contains(&len) {
        return Err(format!("{len} characters; the range is 1-500"));
    }
    if text.chars().any(char::is_control) {
        return Err("control characters (newlines, tabs) are not allowed".into());
    }
    Ok(text.to_string())
}

/// `cronq next`
#[derive(Debug, Args)]
pub struct NextArgs {
    /// A standard cron expression (quote it): `"*/15 9-17 * * MON-FRI"`, or a macro like `@daily`.
    pub expr: String,
    /// Print instants strictly after this RFC 3339 instant (default: now).
    #[arg(long, env = "CRONQ_AFTER")]
    pub after: Option<String>,
    /// How many instants to print (0-100000).
    #[arg(short = 'n', long = "count", default_value_t = 5, env = "CRONQ_COUNT", value_parser = |s: &str| whole::<usize>(s, 0, 100_000))]
    pub count: usize,
    /// The IANA time zone whose wall clock the expression is read on.
    #[arg(long, default_value = "UTC", env = "CRONQ_TZ")]
    pub tz: String,
    /// The job whose name resolves `H` (Jenkins' hash) in the expression.
    #[arg(long, env = "CRONQ_JOB")]
    pub job: Option<String>,
    /// The job's `jitter` (1ms-10m; needs `--job`): each instant is followed by its `notBefore`.
    #[arg(long, env = "CRONQ_JITTER", value_parser = jitter_duration)]
    pub jitter: Option<Duration>,
}

/// `cronq explain`
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// A standard cron expression (quote it).
    pub expr: String,
    /// The IANA time zone whose wall clock the expression is read on.
    #[arg(long, default_value = "UTC", env = "CRONQ_TZ")]
    pub tz: String,
    /// The job whose name resolves `H` (Jenkins' hash) in the expression.
    #[arg(long, env = "CRONQ_JOB")]
    pub job: Option<String>,
}

/// Errors a subcommand reports to the user.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// A bad expression or zone given on the command line.
    #[error("invalid cron expression {expr:?}: {source}")]
    Expression {
        /// As given.
        expr: String,
        /// Why.
        source: CronError,
    },
    /// A bad time zone given on the command line.
    #[error("--tz: {0}")]
    Zone(CronError),
    /// A time argument is not RFC 3339.
    #[error("{flag}: {value:?} is not an RFC 3339 instant (e.g. 2026-11-26T12:00:00Z): {source}")]
    Instant {
        /// Which flag.
        flag: &'static str,
        /// As given.
        value: String,
        /// Why.
        source: chrono::ParseError,
    },
    /// `--from` is not before `--until`.
    #[error("--from must be before --until")]
    EmptyWindow,
    /// The schedule can't be loaded.
    #[error(transparent)]
    Schedule(#[from] LoadError),

    /// A flag's value cannot be used.
    #[error("{flag}: {reason}")]
    Invalid {
        /// Which flag.
        flag: &'static str,
        /// Why.
        reason: String,
    },
    /// The worker could not run.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// The dispatcher stopped on an error.
    #[error(transparent)]
    Dispatcher(#[from] ServiceError),
    /// Kafka could not be read.
    #[error("{0}")]
    Kafka(String),
    /// A pause or resume that makes no sense as things stand (resuming what is not paused).
    #[error("{0}")]
    Control(String),
    /// The HTTP server of `--http` could not start.
    #[error(transparent)]
    Http(#[from] crate::obs::http::HttpError),

    /// Writing to stdout failed (e.g. a closed pipe).
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// The process exit status for this error: 2 for bad input on the command line.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Expression { .. }
            | CliError::Zone(_)
            | CliError::Instant { .. }
            | CliError::EmptyWindow
            | CliError::Invalid { .. } => 2,
            CliError::Output(_)
            | CliError::Schedule(_)
            | CliError::Worker(_)
            | CliError::Dispatcher(_)
            | CliError::Http(_)
            | CliError::Control(_)
            | CliError::Kafka(_) => 1,
        }
    }
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message` and the event's own
    /// fields (`slot`, `job`, `shard`, …) at the top level.
    Json,
}

/// Installs the stderr log subscriber.
pub fn init_tracing(filter: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .with_target(true)
            .init(),
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<ExitCode, CliError> {
    match cli.command {
        Command::Run(args) => run_dispatcher(args),
        Command::Validate(args) => validate(args),
        Command::Worker(args) => run_worker(args),
        Command::Tail(args) => crate::tail::run(args),
        Command::Next(args) => next(args),
        Command::Explain(args) => explain(args),
        Command::Status(args) => status(args),
        Command::Trigger(args) => trigger(args),
        Command::Pause(args) => pause(args),
        Command::Resume(args) => resume(args),
    }
}

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// A duration flag in `min..=max`; every refusal names the range (clap adds the flag).
fn bounded(text: &str, min: Duration, max: Duration) -> Result<Duration, String> {
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
fn whole<T: TryFrom<i128>>(text: &str, min: i128, max: i128) -> Result<T, String> {
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
fn kafka_topic(text: &str) -> Result<String, String> {
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

fn status_timeout(text: &str) -> Result<Duration, String> {
    bounded(text, Duration::from_secs(1), Duration::from_secs(600))
}

fn tick_duration(text: &str) -> Result<Duration, String> {
    bounded(text, Duration::from_millis(10), Duration::from_secs(60))
}

fn catchup_duration(text: &str) -> Result<Duration, String> {
    bounded(
        text,
        Duration::from_secs(60),
        schedule::spec::MAX_CATCHUP_WINDOW,
    )
}

fn jitter_duration(text: &str) -> Result<Duration, String> {
    bounded(text, Duration::from_millis(1), crate::wire::job::MAX_JITTER)
}

fn grace_duration(text: &str) -> Result<Duration, String> {
    bounded(text, Duration::ZERO, Duration::from_secs(3600))
}

fn session_duration(text: &str) -> Result<Duration, String> {
    bounded(text, Duration::from_secs(1), Duration::from_secs(1800))
}

fn max_age_duration(text: &str) -> Result<Duration, String> {
    bounded(
        text,
        Duration::from_secs(60),
        Duration::from_secs(366 * 86_400),
    )
}

/// `--max-output`: a byte count, optionally with a binary unit (`B`, `K`/`KiB`, `M`/`MiB`).
fn output_size(text: &str) -> Result<usize, String> {
    const MIN: u64 = 1024;
    const MAX: u64 = 128 * 1024;
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (digits, unit) = trimmed.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1024,
        "m" | "mb" | "mib" => 1024 * 1024,
        _ => {
            return Err(format!(
                "{text:?}: not a size (a number of bytes, or with B, KiB or MiB, e.g. 8KiB)"
            ))
        }
    };
    let out_of_range = || format!("{text:?} is out of range 1KiB-128KiB");
    if digits.is_empty() {
        return Err(format!(
            "{text:?}: not a size (a number of bytes, e.g. 8KiB or 8192)"
        ));
    }
    // Only digits here: a parse error is an overflow.
    let n: u64 = digits.parse().map_err(|_| out_of_range())?;
    match n.checked_mul(multiplier) {
        Some(bytes) if (MIN..=MAX).contains(&bytes) => Ok(bytes as usize),
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

fn status(args: StatusArgs) -> Result<ExitCode, CliError> {
    let topic = args
        .state_topic
        .clone()
        .unwrap_or_else(|| format!("{}.state", args.group));
    let clock: Arc<dyn Clock> = match args.drill_clock {
        Some(c) => Arc::new(c),
        None => Arc::new(SystemClock),
    };
    let kafka = args.kafka.connection()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let view = runtime
        .block_on(async {
            tokio::time::timeout(
                args.timeout,
                crate::dispatcher::status::read(&kafka, &topic, clock.now()),
            )
            .await
        })
        .map_err(|_| {
            CliError::Kafka(format!(
                "Kafka at {} did not answer within {}",
                args.kafka.brokers.join(","),
                humantime::format_duration(args.timeout)
            ))
        })?
        .map_err(CliError::Kafka)?;
    let Some(view) = view else {
        eprintln!(
            "no state topic {topic:?}: no dispatcher of group {:?} has run against {}",
            args.group,
            args.kafka.brokers.join(",")
        );
        return Ok(ExitCode::from(1));
    };
    let control_topic = crate::dispatcher::control::control_topic(&args.group);
    let paused = runtime
        .block_on(async {
            tokio::time::timeout(
                args.timeout,
                crate::dispatcher::control::read_paused(&kafka, &control_topic, clock.now()),
            )
            .await
        })
        .map_err(|_| {
            CliError::Kafka(format!(
                "Kafka at {} did not answer about {control_topic:?} within {}",
                args.kafka.brokers.join(","),
                humantime::format_duration(args.timeout)
            ))
        })?
        .map_err(CliError::Kafka)?
        .unwrap_or_default();
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut json = serde_json::to_value(&view).unwrap_or_default();
        if let Some(object) = json.as_object_mut() {
            object.insert(
                "paused".into(),
                serde_json::to_value(&paused).unwrap_or_default(),
            );
        }
        writeln!(out, "{json}")?;
    } else {
        if let Some(all) = &paused.all {
            // The incident switch is the first thing to see.
            writeln!(out, "{}", crate::dispatcher::control::all_line(all))?;
        }
        write!(
            out,
            "{}",
            crate::dispatcher::status::render(&view, &args.group, &topic)
        )?;
        write!(out, "\n{}", crate::dispatcher::control::render(&paused))?;
    }
    out.flush()?;
    Ok(if view.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn trigger(args: TriggerArgs) -> Result<ExitCode, CliError> {
    let now = Utc::now();
    let at = match &args.at {
        None => now,
        Some(text) => {
            let at = parse_instant("--at", text)?;
            // Whole seconds: an instant within the current second is "now".
            if at.timestamp() < now.timestamp() {
                return Err(CliError::Invalid {
                    flag: "--at",
                    reason: format!("{text} is in the past; a trigger runs now or later"),
                });
            }
            at
        }
    };
    let at = DateTime::<Utc>::from_timestamp(at.timestamp(), 0).unwrap_or(at);
    let (schedule, _) = schedule::load(&args.schedule, args.limits.apply(LoadOptions::default()))?;
    let Some(job) = schedule.jobs.iter().find(|j| j.spec.name == args.job) else {
        let closest = schedule
            .jobs
            .iter()
            .map(|j| (strsim::jaro_winkler(&j.spec.name, &args.job), &j.spec.name))
            .filter(|(score, _)| *score > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let hint = closest.map_or(String::new(), |(_, name)| {
            format!(" (did you mean {name:?}?)")
        });
        return Err(CliError::Invalid {
            flag: "JOB",
            reason: format!("no job {:?} in {}{hint}", args.job, args.schedule.display()),
        });
    };
    if !job.spec.enabled {
        tracing::warn!(message = "the job is disabled in the schedule file; triggering it anyway", job = %job.spec.name);
    }
    let config = crate::trigger::TriggerConfig {
        kafka: args.kafka.connection()?,
        topic: job.spec.topic.clone().unwrap_or_else(|| args.topic.clone()),
        create: (!args.no_create_topics).then_some((args.partitions, args.replication_factor)),
        retry_backoff: Duration::from_millis(100),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let spec = std::sync::Arc::clone(&job.spec);
    let id = runtime.block_on(async {
        let shutdown = cancel_on_signal();
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        if !wait.is_zero() {
            tracing::info!(message = "waiting to trigger", job = %spec.name, at = %crate::wire::slot_text(at), wait = %humantime::format_duration(Duration::from_secs(wait.as_secs())));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.cancelled() => {
                    return Err(CliError::Kafka(format!("stopped before triggering {:?}: nothing was sent", spec.name)));
                }
            }
        }
        let sent = tokio::time::timeout(args.timeout, crate::trigger::trigger(&config, &spec, at));
        tokio::select! {
            sent = sent => match sent {
                Ok(Ok(id)) => Ok(id),
                Ok(Err(e)) => Err(CliError::Kafka(e.to_string())),
                Err(_) => Err(CliError::Kafka(format!(
                    "Kafka at {} did not take the run of {:?} on topic {:?} within {}; it may or may not have been sent",
                    config.kafka.brokers_text(),
                    spec.name,
                    config.topic,
                    humantime::format_duration(args.timeout)
                ))),
            },
            _ = shutdown.cancelled() => Err(CliError::Kafka(format!(
                "stopped while sending the run of {:?}: it may or may not have been sent",
                spec.name
            ))),
        }
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{id}")?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn compile(expr: &str, tz: &str, job: Option<&str>) -> Result<CronExpr, CliError> {
    let zone = parse_zone(tz).map_err(CliError::Zone)?;
    CronExpr::parse_for_job(expr, zone, job).map_err(|source| CliError::Expression {
        expr: expr.to_string(),
        source,
    })
}

/// RFC 3339 in the expression's zone: `Z` for UTC, the zone's offset otherwise.
pub fn format_instant(at: DateTime<Utc>, tz: Tz) -> String {
    if tz == Tz::UTC {
        at.to_rfc3339_opts(SecondsFormat::Secs, true)
    } else {
        at.with_timezone(&tz)
            .to_rfc3339_opts(SecondsFormat::Secs, false)
    }
}

fn upcoming(expr: &CronExpr, after: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
    let mut out = Vec::with_capacity(count);
    let mut cursor = after;
    while out.len() < count {
        match expr.next_after(cursor) {
            // RFC 3339 has four-digit years: the list ends with year 9999.
            Some(t) if t.with_timezone(&expr.tz()).year() <= 9999 => {
                out.push(t);
                cursor = t;
            }
            _ => break,
        }
    }
    out
}

fn next(args: NextArgs) -> Result<ExitCode, CliError> {
    let expr = compile(&args.expr, &args.tz, args.job.as_deref())?;
    let after = match &args.after {
        Some(text) => parse_instant("--after", text)?,
        None => Utc::now(),
    };
    let jitter = match (args.jitter, args.job.as_deref()) {
        (Some(_), None) => {
            return Err(CliError::Invalid {
                flag: "--jitter",
                reason: "needs --job: the offset is a hash of the job's name and its slot".into(),
            })
        }
        (jitter, job) => jitter.zip(job),
    };
    let mut out = std::io::stdout().lock();
    for t in upcoming(&expr, after, args.count) {
        match jitter {
            Some((jitter, job)) => {
                let slot = crate::wire::slot_text(t);
                let at = crate::wire::ids::not_before(job, t, &slot, jitter);
                writeln!(
                    out,
                    "{}\tnot before {}",
                    format_instant(t, expr.tz()),
                    crate::wire::ids::not_before_text(at)
                )?;
            }
            None => writeln!(out, "{}", format_instant(t, expr.tz()))?,
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn explain(args: ExplainArgs) -> Result<ExitCode, CliError> {
    let expr = compile(&args.expr, &args.tz, args.job.as_deref())?;
    let mut out = std::io::stdout().lock();
    if let (true, Some(job)) = (crate::cron::hash::uses_hash(&args.expr), &args.job) {
        writeln!(out, "{} (H resolved for job {job:?})", expr.source())?;
    }
    writeln!(out, "{}", expr.describe())?;
    for t in upcoming(&expr, Utc::now(), 5) {
        writeln!(out, "  {}", format_instant(t, expr.tz()))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn parse_instant(flag: &'static str, text: &str) -> Result<DateTime<Utc>, CliError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|source| CliError::Instant {
            flag,
            value: text.to_string(),
            source,
        })
}

/// The span a replay may cover: the wheel counts minutes from the Unix epoch and starts one minute
/// before the first slot (so minute 0 cannot be a slot), and nobody replays a schedule for the
/// next century.
const REPLAY_SPAN: (&str, &str) = ("1970-01-01T00:01:00Z", "2100-01-01T00:00:00Z");

/// `--from`/`--until`: an RFC 3339 instant inside [`REPLAY_SPAN`].
fn replay_instant(flag: &'static str, text: &str) -> Result<DateTime<Utc>, CliError> {
    let at = parse_instant(flag, text)?;
    let (first, last) = REPLAY_SPAN;
    let inside = parse_instant(flag, first).is_ok_and(|f| at >= f)
        && parse_instant(flag, last).is_ok_and(|l| at <= l);
    if inside {
        Ok(at)
    } else {
        Err(CliError::Invalid {
            flag,
            reason: format!("{text} is outside the replayable span {first} to {last}"),
        })
    }
}

/// `cronq validate`'s column for a job with a `jitter`: the jitter and the next slot's `notBefore`
/// (empty without one).
fn jitter_column(spec: &crate::schedule::JobSpec, expr: &CronExpr, now: DateTime<Utc>) -> String {
    let Some(jitter) = spec.jitter else {
        return String::new();
    };
    let not_before = expr
        .next_after(now)
        .filter(|_| spec.enabled)
        .and_then(|t| crate::schedule::record::not_before_for(spec, &crate::wire::slot_text(t)));
    match not_before {
        Some(nb) => format!(
            "\tjitter {} (not before {nb})",
            humantime::format_duration(jitter)
        ),
        None => format!("\tjitter {}", humantime::format_duration(jitter)),
    }
}

fn validate(args: ValidateArgs) -> Result<ExitCode, CliError> {
    let default_tz = parse_zone(&args.timezone).map_err(CliError::Zone)?;
    let options = args.limits.apply(LoadOptions {
        default_tz,
        ..LoadOptions::default()
    });
    let schedule = match schedule::load(&args.path, options) {
        Ok((s, _)) => s,
        Err(LoadError::Invalid { path, problems }) => {
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!(
                "{}: {} problem{}; nothing was changed",
                path.display(),
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            );
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    let now = Utc::now();
    let enabled = schedule.jobs.iter().filter(|j| j.spec.enabled).count();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: OK, {} jobs ({} enabled)",
        args.path.display(),
        schedule.jobs.len(),
        enabled
    )?;
    for job in &schedule.jobs {
        let next = if job.spec.enabled {
            job.expr
                .next_after(now)
                .map_or_else(|| "never".to_string(), |t| format_instant(t, job.expr.tz()))
        } else {
            "disabled".to_string()
        };
        write!(
            out,
            "{}\t{}\t{}\tnext {}",
            job.spec.name,
            job.spec.cron_time,
            job.spec.timezone.name(),
            next
        )?;
        writeln!(out, "{}", jitter_column(&job.spec, &job.expr, now))?;
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn run_dispatcher(args: RunArgs) -> Result<ExitCode, CliError> {
    let default_tz = parse_zone(&args.timezone).map_err(CliError::Zone)?;
    let load = args.limits.apply(LoadOptions {
        default_tz,
        default_catchup_window: args.max_catchup,
        shards: ShardFilter::default(),
        ..LoadOptions::default()
    });
    let window = match (&args.from, &args.until) {
        (Some(f), Some(u)) => {
            let from = replay_instant("--from", f)?;
            let until = replay_instant("--until", u)?;
            if from >= until {
                return Err(CliError::EmptyWindow);
            }
            Some((from, until))
        }
        _ => None,
    };
    let kafka = args.kafka.connection()?;
    let sink = if args.dry_run {
        SinkConfig::DryRun {
            default_topic: args.topic.clone(),
        }
    } else {
        SinkConfig::Kafka(ProducerConfig {
            kafka,
            default_topic: args.topic.clone(),
            partitions: args.partitions,
            replication_factor: args.replication_factor,
            create_topics: !args.no_create_topics,
            producers: args.producers,
            batch_size: args.batch_size,
            compression: args.compression,
            retry_backoff: args.retry_backoff,
        })
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if let Some((from, until)) = window {
        let (schedule, _) = schedule::load(&args.schedule, load)?;
        runtime.block_on(service::replay(
            schedule,
            sink,
            args.queue_capacity as usize,
            from,
            until,
        ))?;
        return Ok(ExitCode::SUCCESS);
    }
    let clock: Arc<dyn Clock> = match args.drill_clock {
        Some(drill) => {
            tracing::warn!(message = "drill clock: time runs faster than the wall clock (a drill and test aid)", clock = ?drill);
            Arc::new(drill)
        }
        None => Arc::new(SystemClock),
    };
    // Dry runs print what would be sent and never join the group.
    let group = (!args.dry_run).then(|| GroupConfig {
        state_topic: args
            .state_topic
            .clone()
            .unwrap_or_else(|| format!("{}.state", args.group)),
        group: args.group.clone(),
        shards: args.shards,
        replication_factor: args.replication_factor,
        session_timeout: args.session_timeout,
        owner: args.member_id.clone().unwrap_or_else(default_worker_id),
    });
    let observer = (args.http != Listen::Off).then(|| {
        let mode = match &group {
            None => Mode::DryRun,
            Some(g) => Mode::Group {
                group: g.group.clone(),
                member: g.owner.clone(),
                state_topic: g.state_topic.clone(),
            },
        };
        Observer::new(mode, &args.topic, Arc::clone(&clock))
    });
    let site = observer
        .as_ref()
        .map_or_else(|| placeholder_site("cronq dispatcher"), Observer::site);
    let config = ServiceConfig {
        schedule: args.schedule.clone(),
        load,
        tick: args.tick,
        shutdown_grace: args.shutdown_grace,
        queue_capacity: args.queue_capacity as usize,
        delay_capacity: args.delay_capacity as usize,
        sink,
        group,
        clock,
        observer,
    };
    runtime.block_on(async move {
        let http = Http::start(args.http, site).await?;
        let result = service::run(config, cancel_on_signal()).await;
        http.stop().await;
        result.map_err(CliError::from)
    })?;
    Ok(ExitCode::SUCCESS)
}

/// The HTTP server of `--http` while the process runs.
struct Http {
    stop: tokio_util::sync::CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Http {
    /// Binds `listen` (a busy port is an error now) and serves `site`, or nothing for `off`.
    async fn start(listen: Listen, site: Site) -> Result<Http, CliError> {
        let stop = tokio_util::sync::CancellationToken::new();
        let task = match listen {
            Listen::Off => None,
            Listen::At(addr) => {
                let listener = crate::obs::http::bind(addr).await?;
                Some(crate::obs::http::serve(listener, site, stop.clone()))
            }
        };
        Ok(Http { stop, task })
    }

    /// Stops serving once the process's work is done.
    async fn stop(self) {
        self.stop.cancel();
        if let Some(task) = self.task {
            if let Err(e) = task.await {
                tracing::error!(message = "HTTP server task failed", error = %e);
            }
        }
    }
}

/// A site with no metrics and an empty page, until the dispatcher and the worker bring theirs.
fn placeholder_site(title: &'static str) -> Site {
    Site {
        metrics: Arc::new(prometheus_client::registry::Registry::default()),
        health: crate::obs::health::Health::new(&[]),
        page: Arc::new(move || crate::obs::page::document(title, 10, &format!("<h1>{title}</h1>"))),
        status: Arc::new(|| serde_json::json!({})),
    }
}

fn default_worker_id() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "worker".to_string());
    format!("{host}-{}", std::process::id())
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
        report: ReportConfig {
            results_topic: args.results_topic.clone(),
            dlq_topic: args.dlq_topic.clone(),
            max_attempts: args.max_attempts,
            retry_backoff: args.retry_backoff,
            worker: args.worker_id.clone().unwrap_or_else(default_worker_id),
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
        create_topics: !args.no_create_topics,
        partitions: args.partitions,
        replication_factor: args.replication_factor,
    })
}

fn run_worker(args: WorkerArgs) -> Result<ExitCode, CliError> {
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
    let handler: Arc<dyn Handler> = Arc::new(ProcessHandler {
        program,
        timeout: args.timeout,
        max_timeout: args.max_timeout,
        kill_grace: args.kill_grace,
        max_output: args.max_output,
        env: crate::worker::executor::ChildEnv::from_worker(&args.pass_env),
    });
    let config = worker_config(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let observer = crate::worker::observe::Observer::new(&config);
    let site = observer.site();
    runtime.block_on(async move {
        let http = Http::start(args.http, site).await?;
        let result =
            crate::worker::run_observed(config, handler, cancel_on_signal(), observer).await;
        http.stop().await;
        result.map_err(CliError::from)
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A token cancelled on SIGINT or SIGTERM (call inside the runtime).
fn cancel_on_signal() -> tokio_util::sync::CancellationToken {
    let shutdown = tokio_util::sync::CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signal.cancel();
    });
    shutdown
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `user@host` of whoever runs the command, for the control record.
fn operator() -> String {
    let user = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| format!("uid-{}", nix::unistd::getuid()));
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".to_string());
    format!("{user}@{host}")
}

fn control_clock(args: &ControlArgs) -> Arc<dyn Clock> {
    match args.drill_clock {
        Some(c) => Arc::new(c),
        None => Arc::new(SystemClock),
    }
}

/// Runs a pause or resume against the group's control topic and prints the record written.
fn write_control(
    args: &ControlArgs,
    create: Option<i16>,
    what: String,
    decide: crate::dispatcher::control::Decide<'_>,
) -> Result<ExitCode, CliError> {
    use crate::dispatcher::control::{self, CommandError};
    let kafka = args.kafka.connection()?;
    let topic = control::control_topic(&args.group);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let record = runtime.block_on(async {
        let shutdown = cancel_on_signal();
        let sent = tokio::time::timeout(args.timeout, control::command(&kafka, &topic, create, decide));
        tokio::select! {
            sent = sent => match sent {
                Ok(Ok(record)) => Ok(record),
                Ok(Err(CommandError::Refused(why))) => Err(CliError::Control(why)),
                Ok(Err(e)) => Err(CliError::Kafka(e.to_string())),
                Err(_) => Err(CliError::Kafka(format!(
                    "Kafka at {} did not take the {what} on topic {topic:?} within {}; it may or may not have been written (`cronq status` shows what is paused)",
                    kafka.brokers_text(),
                    humantime::format_duration(args.timeout)
                ))),
            },
            _ = shutdown.cancelled() => Err(CliError::Kafka(format!(
                "stopped while writing the {what}: it may or may not have been written"
            ))),
        }
    })?;
    tracing::info!(message = "control record written", topic = %topic, job = record.job.as_deref().unwrap_or("--all"), paused = record.paused);
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", record.encode())?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn pause(args: PauseArgs) -> Result<ExitCode, CliError> {
    use crate::dispatcher::control::{ControlRecord, RECORD_VERSION};
    let now = control_clock(&args.control).now();
    let now = DateTime::<Utc>::from_timestamp(now.timestamp(), 0).unwrap_or(now);
    let until = match &args.until {
        None => None,
        Some(UntilArg::At(at)) if *at <= now => {
            return Err(CliError::Invalid {
                flag: "--until",
                reason: format!(
                    "{} is not in the future (now is {}); a pause ends later than it starts",
                    crate::wire::slot_text(*at),
                    crate::wire::slot_text(now)
                ),
            })
        }
        Some(UntilArg::At(at)) if (*at - now).to_std().is_ok_and(|d| d > MAX_PAUSE) => {
            return Err(CliError::Invalid {
                flag: "--until",
                reason: format!("{} is more than 366d ahead", crate::wire::slot_text(*at)),
            })
        }
        Some(UntilArg::At(at)) => Some(*at),
        Some(UntilArg::After(d)) => {
            Some(now + chrono::Duration::from_std(*d).unwrap_or(chrono::Duration::zero()))
        }
    };
    // Records carry whole seconds: a fraction rounds up, so the pause never ends early.
    let until = until.map(|u| {
        let whole = DateTime::<Utc>::from_timestamp(u.timestamp(), 0).unwrap_or(u);
        if whole < u {
            whole + chrono::Duration::seconds(1)
        } else {
            whole
        }
    });
    if let (Some(job), false) = (&args.job, args.force) {
        let (schedule, _) =
            schedule::load(&args.schedule, args.limits.apply(LoadOptions::default()))?;
        if !schedule.jobs.iter().any(|j| j.spec.name == *job) {
            let closest = schedule
                .jobs
                .iter()
                .map(|j| (strsim::jaro_winkler(&j.spec.name, job), &j.spec.name))
                .filter(|(score, _)| *score > 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0));
            let hint = closest.map_or(String::new(), |(_, name)| {
                format!(" (did you mean {name:?}?)")
            });
            return Err(CliError::Invalid {
                flag: "JOB",
                reason: format!(
                    "no job {job:?} in {}{hint}; --force pauses it anyway",
                    args.schedule.display()
                ),
            });
        }
    }
    let job = args.job.clone();
    let key = job
        .clone()
        .unwrap_or_else(|| crate::dispatcher::control::ALL_KEY.to_string());
    let what = format!("pause of {}", job.as_deref().unwrap_or("every job"));
    let by = operator();
    let (reason, drop_missed) = (args.reason.clone(), args.drop_missed);
    let decide = Box::new(move |table: &crate::dispatcher::control::PauseTable| {
        // Pausing what is paused already extends the pause: it keeps its start, so its
        // interval stays whole.
        let since = table
            .get(&key)
            .filter(|r| r.in_force(now))
            .map_or(now, |r| r.since);
        Ok(ControlRecord {
            v: RECORD_VERSION,
            job,
            paused: true,
            reason,
            since,
            until,
            drop_missed,
            by,
            at: now,
        })
    });
    let create = (!args.no_create_topics).then_some(args.replication_factor);
    write_control(&args.control, create, what, decide)
}

fn resume(args: ResumeArgs) -> Result<ExitCode, CliError> {
    use crate::dispatcher::control::{ControlRecord, ALL_KEY, RECORD_VERSION};
    let now = control_clock(&args.control).now();
    let now = DateTime::<Utc>::from_timestamp(now.timestamp(), 0).unwrap_or(now);
    let job = args.job.clone();
    let key = job.clone().unwrap_or_else(|| ALL_KEY.to_string());
    let name = job.clone().unwrap_or_else(|| "--all".to_string());
    let what = format!("resume of {}", job.as_deref().unwrap_or("every job"));
    let by = operator();
    let drop_missed = args.drop_missed;
    let group = args.control.group.clone();
    let decide = Box::new(move |table: &crate::dispatcher::control::PauseTable| {
        let Some(pause) = table.get(&key).filter(|r| r.in_force(now)) else {
            let why = match table.get(&key) {
                None => "it was never paused".to_string(),
                Some(r) if r.paused => format!(
                    "its pause ended by itself at {}",
                    r.until.map(crate::wire::slot_text).unwrap_or_default()
                ),
                Some(r) => format!(
                    "it was resumed by {} at {}",
                    r.by,
                    crate::wire::slot_text(r.at)
                ),
            };
            return Err(format!(
                "{name} is not paused in group {group:?} ({why}); nothing was written"
            ));
        };
        if key != ALL_KEY && table.get(ALL_KEY).is_some_and(|r| r.in_force(now)) {
            tracing::warn!(message = "every job is still paused by `cronq pause --all`; this job runs again only after `cronq resume --all`", job = %name);
        }
        Ok(ControlRecord {
            v: RECORD_VERSION,
            job,
            paused: false,
            reason: pause.reason.clone(),
            since: pause.since,
            until: Some(now),
            drop_missed,
            by,
            at: now,
        })
    });
    write_control(&args.control, None, what, decide)
}
