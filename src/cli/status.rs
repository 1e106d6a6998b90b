//! `cronq status`: the dispatcher group as its state and control topics show it: members,
//! shards, cursors, schedule MD5s, pauses (exit 1 when unhealthy).

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use super::args::{kafka_topic, status_timeout, KafkaArgs};
use super::error::CliError;
use super::runtime::{block_on, OnSignal};
use crate::clock::{Clock, DrillClock, SystemClock};
use crate::dispatcher::{control, status};
use crate::obs::terminal::escape_controls;

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

/// Runs `cronq status`: reads the group's state and control topics and prints the view; exit 1
/// when the group is unhealthy or has never run.
pub(super) fn run(args: StatusArgs) -> Result<ExitCode, CliError> {
    let topic = args
        .state_topic
        .clone()
        .unwrap_or_else(|| format!("{}.state", args.group));
    let clock: Arc<dyn Clock> = match args.drill_clock {
        Some(c) => Arc::new(c),
        None => Arc::new(SystemClock),
    };
    let kafka = args.kafka.connection()?;
    let control_topic = control::control_topic(&args.group);
    let (args, topic, control_topic) = (&args, &topic, &control_topic);
    // A read has nothing to finish: SIGINT and SIGTERM end the process as they always did, so a
    // step is only ever cut by the timeout.
    let read = block_on(OnSignal::Exit, |shutdown| async move {
        let brokers = args.kafka.brokers.join(",");
        let timeout = humantime::format_duration(args.timeout);
        let view = shutdown
            .within(Some(args.timeout), status::read(&kafka, topic, clock.now()))
            .await
            .map_err(|_| {
                CliError::Kafka(format!(
                    "Kafka at {brokers} did not answer within {timeout}"
                ))
            })?
            .map_err(CliError::Kafka)?;
        let Some(view) = view else {
            return Ok(None);
        };
        let paused = shutdown
            .within(
                Some(args.timeout),
                control::read_paused(&kafka, control_topic, clock.now()),
            )
            .await
            .map_err(|_| {
                CliError::Kafka(format!(
                    "Kafka at {brokers} did not answer about {control_topic:?} within {timeout}"
                ))
            })?
            .map_err(CliError::Kafka)?
            .unwrap_or_default();
        Ok(Some((view, paused)))
    })?;
    let Some((view, paused)) = read else {
        eprintln!(
            "no state topic {topic:?}: no dispatcher of group {:?} has run against {}",
            args.group,
            args.kafka.brokers.join(",")
        );
        return Ok(ExitCode::from(1));
    };
    let mut out = std::io::stdout().lock();
    if args.json {
        let mut json = serde_json::to_value(&view).unwrap_or_default();
        if let Some(object) = json.as_object_mut() {
            object.insert(
                "paused".into(),
                serde_json::to_value(&paused).unwrap_or_default(),
            );
        }
        // serde_json escapes C0 controls but writes C1 controls and bidi overrides raw.
        writeln!(out, "{}", escape_controls(&json.to_string()))?;
    } else {
        if let Some(all) = &paused.all {
            // The incident switch is the first thing to see.
            writeln!(out, "{}", control::all_line(all))?;
        }
        write!(out, "{}", status::render(&view, &args.group, topic))?;
        write!(out, "\n{}", control::render(&paused))?;
    }
    out.flush()?;
    Ok(if view.healthy() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
