//! `cronq export`: the group's schedule topic written back out as a schedule file: the jobs in
//! force (each job's last version that passes the checks, what the dispatchers run), one per line,
//! sorted by name, in the format `cronq validate` and `cronq apply` read.
//!
//! ```text
//! <group>.schedule ──► store::in_force (rejected records: stderr, partition/offset) ──► {"jobs":[…]}
//!                                                                                  stdout or --output
//! ```

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::apply::{connect, cut_error, with_progress, Progress};
use super::args::{status_timeout, KafkaArgs, ScheduleLimitArgs};
use super::error::CliError;
use super::runtime::{block_on, OnSignal};
use crate::cron::tz::parse_zone;
use crate::obs::terminal::escape_controls;
use crate::schedule::LoadOptions;
use crate::store::{self, plan::compact};

/// `cronq export`
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write the file here (replaced whole, through a temporary file beside it) instead of stdout.
    #[arg(long, short = 'o', env = "CRONQ_EXPORT_OUTPUT")]
    pub output: Option<PathBuf>,
    /// The dispatcher group; its schedule topic is `<group>.schedule`.
    #[arg(long, env = "CRONQ_GROUP", default_value = "cronq-dispatchers")]
    pub group: String,
    /// Zone for jobs without a `timezone` field, when checking the records (as `validate`).
    #[arg(long, env = "CRONQ_TIMEZONE", default_value = "UTC")]
    pub timezone: String,
    /// Limits the records are checked against (as a file's jobs).
    #[command(flatten)]
    pub limits: ScheduleLimitArgs,
    /// Kafka settings.
    #[command(flatten)]
    pub kafka: KafkaArgs,
    /// Give up when Kafka does not answer, or the read makes no progress, within this long
    /// (1s-10m).
    #[arg(long, env = "CRONQ_TIMEOUT", default_value = "30s", value_parser = status_timeout)]
    pub timeout: Duration,
}

/// The schedule file of `specs` (compact job entries, in the order given): one job per line.
fn schedule_text<'a>(specs: impl Iterator<Item = &'a str>) -> String {
    let mut text = String::from("{\"jobs\":[");
    for (i, spec) in specs.enumerate() {
        text.push_str(if i == 0 { "\n" } else { ",\n" });
        text.push_str(&compact(spec));
    }
    text.push_str("\n]}\n");
    text
}

/// Writes `text` to `path` whole: a temporary file beside it, then a rename.
fn write_file(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(text.as_bytes())?;
        f.sync_all()
    });
    match written.and_then(|()| std::fs::rename(&tmp, path)) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Runs `cronq export`.
pub(super) fn run(args: ExportArgs) -> Result<ExitCode, CliError> {
    let default_tz = parse_zone(&args.timezone).map_err(CliError::Zone)?;
    let options = args.limits.apply(LoadOptions {
        default_tz,
        ..LoadOptions::default()
    });
    let kafka = args.kafka.connection()?;
    let topic = store::topic_name(&args.group);
    let limit = args.timeout;
    let (kafka, topic, options) = (&kafka, &topic, &options);
    let (jobs, rejected) = block_on(OnSignal::Stop, |shutdown| async move {
        let client = connect(&shutdown, kafka, limit).await?;
        let partitions = shutdown
            .within(
                Some(limit),
                crate::kafka::admin::partition_count(&client, topic),
            )
            .await
            .map_err(|cut| cut_error(cut, "looking up the schedule topic", kafka, limit))?
            .map_err(|e| CliError::Kafka(e.to_string()))?
            .ok_or_else(|| {
                CliError::Kafka(format!(
                    "no schedule topic {topic:?} at {}: nothing was ever applied to this group (`cronq apply FILE --group …`)",
                    kafka.brokers_text()
                ))
            })?;
        let shards = partitions as u32;
        let reading = Progress::new();
        let read = store::in_force(&client, topic, shards, options, |partition, records| {
            reading.moved(|| tracing::info!(message = "reading the schedule topic", topic = %topic, partition, partitions = shards, records));
        });
        with_progress(&shutdown, &reading, limit, read)
            .await
            .map_err(|cut| cut_error(cut, "reading the schedule topic", kafka, limit))?
            .map_err(|e| CliError::Kafka(e.to_string()))
    })?;
    for r in &rejected {
        tracing::warn!(message = "record rejected; the job's last good version is exported", topic = %topic, partition = r.partition, offset = r.offset, key = %r.key, reason = %r.reason);
    }
    let text = schedule_text(jobs.values().map(|j| j.spec.get()));
    match &args.output {
        Some(path) => write_file(path, &text)?,
        None => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            for line in text.lines() {
                writeln!(out, "{}", escape_controls(line))?;
            }
            out.flush()?;
        }
    }
    tracing::info!(message = "exported", topic = %topic, jobs = jobs.len(), rejected = rejected.len(), output = %args.output.as_deref().map_or("stdout".into(), |p| p.display().to_string()));
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_has_one_job_per_line_and_reads_back_as_json() {
        let text = schedule_text(["{ \"jobName\": \"a\" }", "{\"jobName\":\"b\"}"].into_iter());
        assert_eq!(
            text,
            "{\"jobs\":[\n{\"jobName\":\"a\"},\n{\"jobName\":\"b\"}\n]}\n"
        );
        let empty = schedule_text(std::iter::empty());
        let v: serde_json::Value = serde_json::from_str(&empty).unwrap();
        assert_eq!(v, serde_json::json!({"jobs": []}));
    }
}
