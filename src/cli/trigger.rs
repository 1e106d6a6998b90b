//! `cronq trigger JOB`: one run of a job of the schedule, by hand, now or at `--at`; prints its
//! dispatchId. The record and its produce are [`crate::trigger`]'s; this is the command around it.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Args;

use super::args::{
    did_you_mean, kafka_topic, parse_instant, status_timeout, whole, KafkaArgs, ScheduleLimitArgs,
};
use super::error::CliError;
use super::runtime::{block_on, Cut, OnSignal};
use crate::obs::terminal::escape_controls;
use crate::schedule::{self, LoadOptions};
use crate::trigger::{trigger, TriggerConfig};

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
    /// Why (1-500 characters): carried in the record's `cronq-reason` header, for the audit.
    #[arg(long, env = "CRONQ_REASON", value_parser = super::pause::reason_text)]
    pub reason: Option<String>,
    /// Give up when Kafka has not taken the run within this long (1s-10m).
    #[arg(long, env = "CRONQ_TIMEOUT", default_value = "30s", value_parser = status_timeout)]
    pub timeout: Duration,
}

/// Runs `cronq trigger`: finds the job, waits for `--at`, produces its run, prints its dispatchId.
pub(super) fn run(args: TriggerArgs) -> Result<ExitCode, CliError> {
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
    // Milliseconds, as the record writes them: two triggers within one second are two runs.
    let at = DateTime::<Utc>::from_timestamp_millis(at.timestamp_millis()).unwrap_or(at);
    let (schedule, _) = schedule::load(&args.schedule, args.limits.apply(LoadOptions::default()))?;
    let Some(job) = schedule.jobs.iter().find(|j| j.spec.name == args.job) else {
        let hint = did_you_mean(&schedule, &args.job);
        return Err(CliError::Invalid {
            flag: "JOB",
            reason: format!("no job {:?} in {}{hint}", args.job, args.schedule.display()),
        });
    };
    if !job.spec.enabled {
        tracing::warn!(message = "the job is disabled in the schedule file; triggering it anyway", job = %job.spec.name);
    }
    let config = TriggerConfig {
        kafka: args.kafka.connection()?,
        topic: job.spec.topic.clone().unwrap_or_else(|| args.topic.clone()),
        create: (!args.no_create_topics).then_some((args.partitions, args.replication_factor)),
        retry_backoff: Duration::from_millis(100),
        by: super::pause::operator(),
        reason: args.reason.clone(),
    };
    let spec = Arc::clone(&job.spec);
    let (config, timeout) = (&config, args.timeout);
    let id = block_on(OnSignal::Stop, |shutdown| async move {
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        if !wait.is_zero() {
            tracing::info!(message = "waiting to trigger", job = %spec.name, at = %crate::wire::slot_text(at), wait = %humantime::format_duration(Duration::from_secs(wait.as_secs())));
            if shutdown
                .within(None, tokio::time::sleep(wait))
                .await
                .is_err()
            {
                return Err(CliError::Kafka(format!(
                    "stopped before triggering {:?}: nothing was sent",
                    spec.name
                )));
            }
        }
        match shutdown.within(Some(timeout), trigger(config, &spec, at)).await {
            Ok(Ok(id)) => Ok(id),
            Ok(Err(e)) => Err(CliError::Kafka(e.to_string())),
            Err(Cut::TimedOut) => Err(CliError::Kafka(format!(
                "Kafka at {} did not take the run of {:?} on topic {:?} within {}; it may or may not have been sent",
                config.kafka.brokers_text(),
                spec.name,
                config.topic,
                humantime::format_duration(timeout)
            ))),
            Err(Cut::Signal) => Err(CliError::Kafka(format!(
                "stopped while sending the run of {:?}: it may or may not have been sent",
                spec.name
            ))),
        }
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", escape_controls(&id))?;
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}
