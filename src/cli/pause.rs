//! `cronq pause` and `cronq resume`: an operator's control record on the dispatcher group's
//! `<group>.control` topic. The record, its checks against the pauses in force, and the write are
//! [`crate::dispatcher::control`]'s; this is the command around them.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;

use super::args::{did_you_mean, status_timeout, whole, KafkaArgs, ScheduleLimitArgs};
use super::error::CliError;
use super::runtime::{block_on, Cut, OnSignal};
use crate::clock::{Clock, DrillClock, SystemClock};
use crate::obs::terminal::escape_controls;
use crate::schedule::{self, LoadOptions};

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

// The longest pause `--until` may ask for: what the dispatchers accept.
use crate::wire::control::MAX_PAUSE;

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

pub(super) fn reason_text(text: &str) -> Result<String, String> {
    let len = text.chars().count();
    if !(1..=500).contains(&len) {
        return Err(format!("{len} characters; the range is 1-500"));
    }
    if text.chars().any(char::is_control) {
        return Err("control characters (newlines, tabs) are not allowed".into());
    }
    Ok(text.to_string())
}

/// `user@host` of whoever runs the command, for the control record.
pub(super) fn operator() -> String {
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
    let (kafka, topic, what, timeout) = (&kafka, &topic, &what, args.timeout);
    let record = block_on(OnSignal::Stop, |shutdown| async move {
        match shutdown
            .within(Some(timeout), control::command(kafka, topic, create, decide))
            .await
        {
            Ok(Ok(record)) => Ok(record),
            Ok(Err(CommandError::Refused(why))) => Err(CliError::Control(why)),
            Ok(Err(e)) => Err(CliError::Kafka(e.to_string())),
            Err(Cut::TimedOut) => Err(CliError::Kafka(format!(
                "Kafka at {} did not take the {what} on topic {topic:?} within {}; it may or may not have been written (`cronq status` shows what is paused)",
                kafka.brokers_text(),
                humantime::format_duration(timeout)
            ))),
            Err(Cut::Signal) => Err(CliError::Kafka(format!(
                "stopped while writing the {what}: it may or may not have been written"
            ))),
        }
    })?;
    tracing::info!(message = "control record written", topic = %topic, job = record.job.as_deref().unwrap_or("--all"), paused = record.paused);
    let mut out = std::io::stdout().lock();
    // A resume carries its pause's reason, as the topic had it.
    writeln!(out, "{}", escape_controls(&record.encode()))?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// Runs `cronq pause`: writes a pause of the job (or of every job) to the control topic.
pub(super) fn pause(args: PauseArgs) -> Result<ExitCode, CliError> {
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
            let hint = did_you_mean(&schedule, job);
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

/// Runs `cronq resume`: writes the end of a pause in force to the control topic.
pub(super) fn resume(args: ResumeArgs) -> Result<ExitCode, CliError> {
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
                    escape_controls(&r.by),
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
