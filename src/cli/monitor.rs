//! `cronq monitor`: did it run? Joins every dispatch to its result in a SQLite history, judges
//! late and missed runs, queues alerts for webhooks ([`crate::monitor`]), with the `--http`
//! server (metrics, probes) beside it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::args::{bounded, kafka_topic, whole, KafkaArgs, DAY, HOUR, MINUTE};
use super::error::CliError;
use super::runtime::{block_on, OnSignal};
use crate::clock::{Clock, DrillClock, SystemClock};
use crate::dispatcher::api::tokens::TokenFile;
use crate::monitor::api::{self, Access};
use crate::monitor::ingest::IngestConfig;
use crate::monitor::judge::Defaults;
use crate::monitor::model::AlertKind;
use crate::monitor::notify::{self, Format, RateLimit, Settings, Webhook};
use crate::monitor::service::{MonitorConfig, Observer, ScheduleArg};
use crate::obs::http::Server;
use crate::obs::Listen;
use crate::schedule::LoadOptions;

/// `cronq monitor`
#[derive(Debug, Args)]
pub struct MonitorArgs {
    /// Kafka settings.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// The run history (SQLite; created when missing).
    #[arg(long, env = "CRONQ_DB", default_value = "cronq-monitor.db")]
    pub db: PathBuf,
    /// How long runs, alerts and audit entries are kept (1h-3650d).
    #[arg(long, env = "CRONQ_HISTORY", default_value = "30d", value_parser = history_duration)]
    pub history: Duration,
    /// A slot with no dispatch by slot + this is `missed` (1m-1d).
    #[arg(long, env = "CRONQ_MISSED_AFTER", default_value = "3m", value_parser = missed_after_duration)]
    pub missed_after: Duration,
    /// The schedule file (reloaded when it changes; a bad version keeps the last good one).
    #[arg(long, env = "CRONQ_SCHEDULE", conflicts_with = "schedule_topic")]
    pub schedule: Option<PathBuf>,
    /// The schedule is the group's topic `<group>.schedule`.
    #[arg(long, env = "CRONQ_SCHEDULE_TOPIC")]
    pub schedule_topic: bool,
    /// The dispatcher group: its control topic `<group>.control` (pauses) is read, and its
    /// schedule topic with --schedule-topic.
    #[arg(long, env = "CRONQ_GROUP", default_value = "cronq-dispatchers")]
    pub group: String,
    /// The job topic of jobs without a `topic` of their own.
    #[arg(long, env = "CRONQ_TOPIC", default_value = "jobs", value_parser = kafka_topic)]
    pub topic: String,
    /// The workers' results topic.
    #[arg(long, env = "CRONQ_RESULTS_TOPIC", default_value = "jobs.results", value_parser = kafka_topic)]
    pub results_topic: String,
    /// The workers' dead-letter topic.
    #[arg(long, env = "CRONQ_DLQ_TOPIC", default_value = "jobs.dlq", value_parser = kafka_topic)]
    pub dlq_topic: String,
    /// A job's attempt timeout for its default deadline when neither the job nor its message
    /// sets one: the workers' --timeout (1s-1d).
    #[arg(long, env = "CRONQ_DEFAULT_TIMEOUT", default_value = "1h", value_parser = |s: &str| bounded(s, Duration::from_secs(1), DAY))]
    pub default_timeout: Duration,
    /// Likewise its attempts: the workers' --max-attempts (1-100).
    #[arg(long, env = "CRONQ_DEFAULT_MAX_ATTEMPTS", default_value_t = 3, value_parser = |s: &str| whole::<u32>(s, 1, 100))]
    pub default_max_attempts: u32,
    /// POST alerts to this URL (repeatable; the n-th --webhook-events and --webhook-secret-file
    /// go with the n-th --webhook).
    #[arg(long = "webhook", env = "CRONQ_WEBHOOK", value_name = "URL", value_parser = webhook_url)]
    pub webhooks: Vec<String>,
    /// A webhook's body: `json` (cronq's, docs/contracts.md) or `slack` (an incoming webhook's);
    /// paired with the n-th --webhook (default json).
    #[arg(long = "webhook-format", env = "CRONQ_WEBHOOK_FORMAT", value_name = "FORMAT", value_parser = |s: &str| notify::parse_format(s).map_err(|e| e.to_string()))]
    pub webhook_formats: Vec<Format>,
    /// At most N alerts of one job per WINDOW to each webhook (`5/10m`; N 1-1000, WINDOW 1s-24h):
    /// a flapping job does not flood the receiver; the rest are counted as suppressed.
    #[arg(long, env = "CRONQ_WEBHOOK_RATE_LIMIT", default_value = "5/10m", value_parser = |s: &str| notify::parse_rate_limit(s).map_err(|e| e.to_string()))]
    pub webhook_rate_limit: RateLimit,
    /// How long one webhook POST may take, connecting included (1s-2m).
    #[arg(long, env = "CRONQ_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = |s: &str| bounded(s, Duration::from_secs(1), Duration::from_secs(120)))]
    pub webhook_timeout: Duration,
    /// The monitor page's URL as receivers reach it (`https://monitor.example/`): alerts link to
    /// the run there (none: no link).
    #[arg(long, env = "CRONQ_PAGE_URL", value_parser = |s: &str| notify::parse_page_url(s).map_err(|e| e.to_string()))]
    pub page_url: Option<String>,
    /// The alert kinds a webhook gets, comma separated: failed, timed_out, dead_lettered, late,
    /// missed, recovered (default: all).
    #[arg(long = "webhook-events", env = "CRONQ_WEBHOOK_EVENTS", value_name = "KINDS", value_parser = alert_kinds)]
    pub webhook_events: Vec<Kinds>,
    /// A file holding a webhook's HMAC-SHA256 key (read at start, never logged).
    #[arg(
        long = "webhook-secret-file",
        env = "CRONQ_WEBHOOK_SECRET_FILE",
        value_name = "FILE"
    )]
    pub webhook_secret_files: Vec<PathBuf>,
    /// Serve the status page, the API (/api/v1/runs, …), /metrics, /healthz and /readyz here
    /// (`off`: no server; port 0: any free port). Without --api-tokens it must be a loopback
    /// address unless --http-public is given.
    #[arg(long, env = "CRONQ_HTTP", default_value = "127.0.0.1:9466")]
    pub http: Listen,
    /// The token file of the API and the pages (the jobs API's format: `{"tokens":[{"name",
    /// "scope","sha256"}]}`; either scope reads). Without it they are open to whoever reaches
    /// --http.
    #[arg(long, env = "CRONQ_API_TOKENS", value_name = "FILE")]
    pub api_tokens: Option<PathBuf>,
    /// Serve the page and the API without tokens on a non-loopback --http (run history and job
    /// output to anyone who can reach it).
    #[arg(long, env = "CRONQ_HTTP_PUBLIC")]
    pub http_public: bool,
    /// A drill and test aid: judge by a clock SPEED times faster from the Unix second EPOCH
    /// (`10x@1764441000`), as the dispatchers and workers of the drill do.
    #[arg(long, env = "CRONQ_DRILL_CLOCK", hide = true)]
    pub drill_clock: Option<DrillClock>,
}

/// The alert kinds of one `--webhook-events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kinds(pub Vec<AlertKind>);

fn history_duration(text: &str) -> Result<Duration, String> {
    bounded(text, HOUR, 3650 * DAY)
}

fn missed_after_duration(text: &str) -> Result<Duration, String> {
    bounded(text, MINUTE, DAY)
}

/// `--webhook`: an `http://` URL with a host (notify's rules: https needs a TLS proxy in front).
fn webhook_url(text: &str) -> Result<String, String> {
    notify::parse_url(text).map_err(|e| e.to_string())
}

/// `--webhook-events`: `failed,late,…`.
fn alert_kinds(text: &str) -> Result<Kinds, String> {
    let mut kinds = Vec::new();
    for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match AlertKind::parse(name) {
            Some(k) if !kinds.contains(&k) => kinds.push(k),
            Some(_) => {}
            None => {
                let all: Vec<&str> = AlertKind::ALL.iter().map(|k| k.as_str()).collect();
                return Err(format!("{name:?} is not one of {}", all.join(", ")));
            }
        }
    }
    if kinds.is_empty() {
        return Err("no alert kind given".into());
    }
    Ok(Kinds(kinds))
}

/// The webhooks, their kinds and their secrets, paired by position.
fn webhooks(args: &MonitorArgs) -> Result<Vec<Webhook>, CliError> {
    let n = args.webhooks.len();
    if !args.webhook_formats.is_empty() && args.webhook_formats.len() != n {
        return Err(CliError::Invalid {
            flag: "--webhook-format",
            reason: format!(
                "given {} times for {n} --webhook: give it once per --webhook, in the same order, or not at all (json)",
                args.webhook_formats.len()
            ),
        });
    }
    if !args.webhook_events.is_empty() && args.webhook_events.len() != n {
        return Err(CliError::Invalid {
            flag: "--webhook-events",
            reason: format!(
                "given {} times for {n} --webhook: give it once per --webhook, in the same order, or not at all (every kind)",
                args.webhook_events.len()
            ),
        });
    }
    if !args.webhook_secret_files.is_empty() && args.webhook_secret_files.len() != n {
        return Err(CliError::Invalid {
            flag: "--webhook-secret-file",
            reason: format!(
                "given {} times for {n} --webhook: give it once per --webhook, in the same order, or not at all",
                args.webhook_secret_files.len()
            ),
        });
    }
    args.webhooks
        .iter()
        .enumerate()
        .map(|(i, url)| {
            let secret = match args.webhook_secret_files.get(i) {
                Some(path) => {
                    let bytes = std::fs::read(path).map_err(|e| CliError::Invalid {
                        flag: "--webhook-secret-file",
                        reason: format!("{}: {e}", path.display()),
                    })?;
                    let trimmed = bytes.trim_ascii_end().to_vec();
                    if trimmed.is_empty() {
                        return Err(CliError::Invalid {
                            flag: "--webhook-secret-file",
                            reason: format!("{}: the file is empty", path.display()),
                        });
                    }
                    Some(trimmed)
                }
                None => None,
            };
            Ok(Webhook {
                url: url.clone(),
                events: args
                    .webhook_events
                    .get(i)
                    .map_or_else(|| AlertKind::ALL.to_vec(), |k| k.0.clone()),
                secret,
                format: args.webhook_formats.get(i).copied().unwrap_or_default(),
            })
        })
        .collect()
}

/// Who may read the page and the API: the token file, or everyone, which is only allowed on a
/// loopback `--http` or with `--http-public`.
fn access(args: &MonitorArgs) -> Result<Access, CliError> {
    if let Some(path) = &args.api_tokens {
        let file = TokenFile::open(path).map_err(|e| CliError::Invalid {
            flag: "--api-tokens",
            reason: e.to_string(),
        })?;
        return Ok(Access::Tokens(file));
    }
    match args.http {
        Listen::At(addr) if !addr.ip().is_loopback() && !args.http_public => {
            Err(CliError::Invalid {
                flag: "--http",
                reason: format!(
                    "{addr} is not a loopback address, and without --api-tokens the page and the API (run history, job output) would be open to anyone who reaches it: give --api-tokens FILE, bind 127.0.0.1, or pass --http-public if that is what you want"
                ),
            })
        }
        _ => Ok(Access::Open),
    }
}

/// Runs `cronq monitor` until SIGINT or SIGTERM.
pub(super) fn run(args: MonitorArgs) -> Result<ExitCode, CliError> {
    let webhooks = webhooks(&args)?;
    let access = access(&args)?;
    let clock: Arc<dyn Clock> = match args.drill_clock {
        Some(drill) => {
            tracing::warn!(message = "drill clock: time runs faster than the wall clock (a drill and test aid)", clock = ?drill);
            Arc::new(drill)
        }
        None => Arc::new(SystemClock),
    };
    let schedule = match (&args.schedule, args.schedule_topic) {
        (Some(path), _) => ScheduleArg::File(path.clone()),
        (None, true) => ScheduleArg::Topic(crate::store::topic_name(&args.group)),
        (None, false) => {
            tracing::warn!(message = "no --schedule or --schedule-topic: no slot is judged missed, and deadlines use the defaults");
            ScheduleArg::None
        }
    };
    let config = MonitorConfig {
        db: args.db.clone(),
        history: args.history,
        ingest: IngestConfig {
            kafka: args.kafka.connection()?,
            default_topic: args.topic.clone(),
            results_topic: args.results_topic.clone(),
            dlq_topic: args.dlq_topic.clone(),
            control_topic: Some(crate::wire::control::control_topic(&args.group)),
            missed_after: args.missed_after,
            defaults: Defaults {
                timeout: args.default_timeout,
                max_attempts: args.default_max_attempts,
            },
            load_options: LoadOptions::default(),
        },
        schedule,
        webhooks,
        notify: Settings {
            page_url: args.page_url.clone(),
            rate_limit: args.webhook_rate_limit,
            request_timeout: args.webhook_timeout,
            ..Settings::default()
        },
        clock,
    };
    let observer = Observer::new();
    let site = observer.site();
    let routes = api::router(args.db.clone(), access, Arc::clone(&config.clock));
    block_on(OnSignal::Stop, |shutdown| async move {
        let http = Server::start_with_page(args.http, site, routes).await?;
        let result = crate::monitor::service::run(config, observer, shutdown.token()).await;
        http.stop().await;
        result.map_err(CliError::from)
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: MonitorArgs,
    }

    fn parse(args: &[&str]) -> Result<MonitorArgs, String> {
        Cli::try_parse_from(std::iter::once("monitor").chain(args.iter().copied()))
            .map(|c| c.args)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_defaults_are_the_documented_ones() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.history, 30 * DAY);
        assert_eq!(args.missed_after, 3 * MINUTE);
        assert_eq!(args.db, PathBuf::from("cronq-monitor.db"));
        assert_eq!(args.default_timeout, HOUR);
        assert_eq!(args.default_max_attempts, 3);
        assert_eq!(args.http.to_string(), "127.0.0.1:9466");
    }

    #[test]
    fn durations_and_counts_are_range_checked_at_parse_time() {
        for (flag, value, range) in [
            ("--history", "30m", "1h-3650d"),
            ("--history", "3651d", "1h-3650d"),
            ("--missed-after", "30s", "1m-1d"),
            ("--missed-after", "2d", "1m-1d"),
            ("--default-timeout", "2d", "1s-1d"),
            ("--default-max-attempts", "0", "1-100"),
        ] {
            let err = parse(&[flag, value]).unwrap_err();
            assert!(
                err.contains(&format!("is out of range {range}")),
                "{flag} {value}: {err}"
            );
        }
        assert!(parse(&["--missed-after", "1m", "--history", "1h"]).is_ok());
    }

    #[test]
    fn an_open_api_needs_a_loopback_http_or_http_public() {
        let err = access(&parse(&["--http", "0.0.0.0:9466"]).unwrap())
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("--http: 0.0.0.0:9466 is not a loopback address"),
            "{err}"
        );
        assert!(matches!(
            access(&parse(&["--http", "0.0.0.0:9466", "--http-public"]).unwrap()),
            Ok(Access::Open)
        ));
        assert!(matches!(access(&parse(&[]).unwrap()), Ok(Access::Open)));
        assert!(matches!(
            access(&parse(&["--http", "[::1]:0"]).unwrap()),
            Ok(Access::Open)
        ));
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens.json");
        std::fs::write(&tokens, r#"{"tokens":[]}"#).unwrap();
        let args = parse(&[
            "--http",
            "0.0.0.0:9466",
            "--api-tokens",
            tokens.to_str().unwrap(),
        ]);
        assert!(matches!(access(&args.unwrap()), Ok(Access::Tokens(_))));
        let missing = parse(&["--api-tokens", "/nonexistent/tokens.json"]).unwrap();
        assert!(access(&missing)
            .err()
            .unwrap()
            .to_string()
            .starts_with("--api-tokens: /nonexistent/tokens.json: cannot read"));
    }

    #[test]
    fn webhooks_pair_with_their_events_and_secrets_by_position() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("s");
        std::fs::write(&secret, "k3y\n").unwrap();
        let args = parse(&[
            "--webhook",
            "http://a.example/hook",
            "--webhook-events",
            "failed,late",
            "--webhook-secret-file",
            secret.to_str().unwrap(),
        ])
        .unwrap();
        let hooks = webhooks(&args).unwrap();
        assert_eq!(hooks[0].events, [AlertKind::Failed, AlertKind::Late]);
        assert_eq!(hooks[0].secret.as_deref(), Some(&b"k3y"[..]));
        assert!(
            !format!("{hooks:?}").contains("k3y"),
            "the secret is never printed"
        );
        let err = parse(&["--webhook-events", "failed,lat"]).unwrap_err();
        assert!(
            err.contains("\"lat\" is not one of failed, timed_out"),
            "{err}"
        );
        assert!(parse(&["--webhook", "ftp://x"]).is_err());
        let https = parse(&["--webhook", "https://a.example/hook"]).unwrap_err();
        assert!(https.contains("TLS-terminating proxy"), "{https}");
        let two = parse(&[
            "--webhook",
            "http://a",
            "--webhook",
            "http://b",
            "--webhook-events",
            "missed",
        ])
        .unwrap();
        assert!(webhooks(&two).is_err());
    }
}
