//! `cronq run`: the dispatcher. Every due job of the schedule becomes one message, produced to
//! Kafka (or printed, `--dry-run`) by [`crate::dispatcher::service`], with the `--http` server
//! beside it; `--from`/`--until` replay a window as fast as possible and exit.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;

use super::args::{
    bounded, grace_duration, hostname_pid, kafka_topic, parse_instant, session_duration, whole,
    GroupArgs, KafkaArgs, ScheduleLimitArgs,
};
use super::error::CliError;
use super::runtime::{block_on, OnSignal};
use crate::clock::{Clock, DrillClock, GuardedClock};
use crate::cron::tz::parse_zone;
use crate::dispatcher::observe::{Mode, Observer};
use crate::dispatcher::producer::{CompressionArg, ProducerConfig};
use crate::dispatcher::service::{self, GroupConfig, ServiceConfig, SinkConfig};
use crate::obs::http::{Server, Site};
use crate::obs::Listen;
use crate::schedule::{self, LoadOptions, ShardFilter};

/// `cronq run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The schedule file (checked for changes on every tick).
    #[arg(long, env = "CRONQ_SCHEDULE", default_value = "schedule/schedule.json")]
    pub schedule: PathBuf,
    /// Read the schedule from the group's schedule topic `<group>.schedule` (written by `cronq
    /// apply`) instead of a file: each member reads only its shards' partitions and follows them.
    #[arg(long, env = "CRONQ_SCHEDULE_TOPIC", conflicts_with_all = ["schedule", "dry_run", "from"])]
    pub schedule_topic: bool,
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
    /// The dispatcher group, its state topic and shards.
    #[command(flatten)]
    pub group: GroupArgs,
    /// How long a silent member keeps its shards before the group moves them (1s-30m).
    #[arg(long, env = "CRONQ_SESSION_TIMEOUT", default_value = "10s", value_parser = session_duration)]
    pub session_timeout: Duration,
    /// This member's name in cursor records (default: hostname-pid).
    #[arg(long, env = "CRONQ_MEMBER_ID")]
    pub member_id: Option<String>,
    /// How long a forward step of the wall clock (ahead of the monotonic clock) must hold before
    /// the dispatcher accepts it; until then it dispatches on monotonic time and is not ready.
    /// Another member's cursor written at the new time accepts it sooner (0s-1d; 0s: at once).
    #[arg(long, env = "CRONQ_CLOCK_SETTLE", default_value = "10m", value_parser = clock_settle_duration)]
    pub clock_settle: Duration,
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
    /// Turn the jobs API on, on the `--http` server (needs --schedule-topic): the token file, JSON
    /// `{"tokens":[{"name","scope":"read"|"write","sha256"}]}` (`cronq jobs hash-token` prints a
    /// token's hash); looked at again at most once a second.
    #[arg(long, env = "CRONQ_API_TOKENS", requires = "schedule_topic")]
    pub api_tokens: Option<PathBuf>,
    /// The base URL of this member's jobs API, where the other members forward the requests for
    /// its shards (default: `http://<--http address>`, the host name when it listens on every
    /// interface).
    #[arg(long, env = "CRONQ_ADVERTISE_URL", value_parser = advertise_url)]
    pub advertise_url: Option<String>,
    /// Jobs API requests a second per token, with a second's worth of burst; past it 429 (1-1000000).
    #[arg(long, env = "CRONQ_API_RATE", default_value_t = 1000, value_parser = |s: &str| whole::<u32>(s, 1, 1_000_000))]
    pub api_rate: u32,
    /// The largest body of a single jobs API request, in bytes; larger is 413 (1024-16777216).
    #[arg(long, env = "CRONQ_API_MAX_BODY", default_value_t = 1 << 20, value_parser = |s: &str| whole::<usize>(s, 1024, 16 << 20))]
    pub api_max_body: usize,
    /// The largest body of a `jobs:batch` request, in bytes; larger is 413 (1024-268435456).
    #[arg(long, env = "CRONQ_API_MAX_BATCH_BODY", default_value_t = 16 << 20, value_parser = |s: &str| whole::<usize>(s, 1024, 256 << 20))]
    pub api_max_batch_body: usize,
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

/// `--advertise-url`: an `http://host[:port]` base URL (no path, query or trailing slash needed).
fn advertise_url(text: &str) -> Result<String, String> {
    let uri: axum::http::Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not a URL like http://10.0.0.5:9464 ({e})"))?;
    if uri.scheme_str() != Some("http") || uri.host().is_none() {
        return Err(format!(
            "{text:?}: an http:// URL with a host, like http://10.0.0.5:9464 (members forward over plain HTTP)"
        ));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(format!(
            "{text:?}: the base URL only, without a path or query"
        ));
    }
    Ok(text.trim_end_matches('/').to_string())
}

/// The default `--advertise-url`: the address `--http` listens on; the host name when that is
/// every interface (0.0.0.0 or ::).
fn default_advertise(addr: std::net::SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        let host = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".to_string());
        format!("http://{host}:{}", addr.port())
    } else {
        format!("http://{addr}")
    }
}

fn tick_duration(text: &str) -> Result<Duration, String> {
    bounded(text, Duration::from_millis(10), Duration::from_secs(60))
}

fn clock_settle_duration(text: &str) -> Result<Duration, String> {
    bounded(text, Duration::ZERO, super::args::DAY)
}

fn catchup_duration(text: &str) -> Result<Duration, String> {
    bounded(
        text,
        Duration::from_secs(60),
        schedule::spec::MAX_CATCHUP_WINDOW,
    )
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

/// Runs `cronq run`: the dispatcher service, or a replay of [--from, --until).
pub(super) fn run(args: RunArgs) -> Result<ExitCode, CliError> {
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
    let api = match &args.api_tokens {
        None => None,
        Some(tokens) => {
            if args.http == Listen::Off {
                return Err(CliError::Invalid {
                    flag: "--api-tokens",
                    reason: "the jobs API is served on the --http server: give --http an address, not off".into(),
                });
            }
            let settings = crate::dispatcher::api::ApiSettings {
                tokens: tokens.clone(),
                rate: args.api_rate,
                max_body: args.api_max_body,
                max_batch_body: args.api_max_batch_body,
            };
            Some(
                crate::dispatcher::api::Front::open(&settings).map_err(|e| CliError::Invalid {
                    flag: "--api-tokens",
                    reason: e.to_string(),
                })?,
            )
        }
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
    if let Some((from, until)) = window {
        let (schedule, _) = schedule::load(&args.schedule, load)?;
        let queue_capacity = args.queue_capacity as usize;
        block_on(OnSignal::Exit, |_| async move {
            service::replay(schedule, sink, queue_capacity, from, until)
                .await
                .map_err(CliError::from)
        })?;
        return Ok(ExitCode::SUCCESS);
    }
    let clock: Arc<dyn Clock> = match args.drill_clock {
        Some(drill) => {
            tracing::warn!(message = "drill clock: time runs faster than the wall clock (a drill and test aid)", clock = ?drill);
            Arc::new(drill)
        }
        // A drill clock runs faster than the monotonic one on purpose: it is not guarded.
        None => Arc::new(GuardedClock::system(args.clock_settle)),
    };
    // Dry runs print what would be sent and never join the group.
    let group = (!args.dry_run).then(|| GroupConfig {
        state_topic: args.group.state_topic(),
        group: args.group.group.clone(),
        shards: args.group.shards,
        replication_factor: args.replication_factor,
        session_timeout: args.session_timeout,
        owner: args.member_id.clone().unwrap_or_else(hostname_pid),
        schedule_topic: args
            .schedule_topic
            .then(|| crate::store::topic_name(&args.group.group)),
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
        .map_or_else(|| Site::blank("cronq dispatcher"), Observer::site);
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
        observer: observer.unwrap_or_else(Observer::disabled),
        api: api.clone(),
    };
    let advertise = args.advertise_url.clone();
    block_on(OnSignal::Stop, |shutdown| async move {
        let routes = api.as_ref().map(crate::dispatcher::api::Front::router);
        let http = Server::start_with_routes(args.http, site, routes).await?;
        if let (Some(api), Some(addr)) = (&api, http.local_addr()) {
            api.set_advertise_url(advertise.unwrap_or_else(|| default_advertise(addr)));
        }
        let result = service::run(config, shutdown.token()).await;
        http.stop().await;
        result.map_err(CliError::from)
    })?;
    Ok(ExitCode::SUCCESS)
}
