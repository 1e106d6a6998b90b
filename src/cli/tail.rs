//! `cronq tail`: print job messages as they arrive, one line each — the operator's view of what is
//! being dispatched. Reads every partition of the topic with rskafka (no consumer group, no commits).
//!
//! Whatever a record holds, the output is one line of printable text per record: control characters
//! (escape sequences, carriage returns, newlines) and bidirectional overrides are written as `\uXXXX`
//! ([`escape_controls`], shared by every command that prints text from a topic), so a record
//! cannot drive or spoof the operator's terminal.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::args::{bounded, kafka_topic, whole, KafkaArgs, DAY};
use super::error::CliError;
use super::runtime::{block_on, OnSignal};
use crate::kafka::{describe, retry_forever};
use crate::obs::terminal::escape_controls;
use crate::wire::JobMessage;

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

struct Received {
    partition: i32,
    offset: i64,
    value: Vec<u8>,
}

/// One readable line for a record, safe to print on a terminal.
pub fn render(partition: i32, offset: i64, value: &[u8]) -> String {
    let line = match serde_json::from_slice::<JobMessage>(value) {
        Ok(m) => format!(
            "{}  {}  priority={}  job={:?}  [partition {partition} offset {offset}]",
            m.scheduled_at, m.job_name, m.priority, m.job
        ),
        Err(_) => format!(
            "(not a JobMessage v1) {}  [partition {partition} offset {offset}]",
            String::from_utf8_lossy(value)
        ),
    };
    escape_controls(&line)
}

/// Runs `cronq tail` until `--count` or `--idle-timeout`; SIGINT and SIGTERM end it at once.
pub(super) fn run(args: TailArgs) -> Result<ExitCode, CliError> {
    block_on(OnSignal::Exit, |_| tail(args))
}

async fn tail(args: TailArgs) -> Result<ExitCode, CliError> {
    let kafka = args.kafka.connection()?;
    let client = kafka.connect(Duration::from_millis(200)).await;
    let partitions = retry_forever(
        Duration::from_millis(200),
        || async {
            match client.list_topics().await {
                Ok(topics) => match topics.into_iter().find(|t| t.name == args.topic) {
                    Some(t) => Ok(t.partitions),
                    None => Err(format!(
                        "topic {:?} does not exist yet; waiting for it",
                        args.topic
                    )),
                },
                Err(e) => Err(format!("reading topic metadata failed: {}", describe(&e))),
            }
        },
        |e, attempt, _| {
            if attempt == 1 {
                warn!(message = "cannot tail yet; retrying", error = %e);
            }
        },
    )
    .await;
    info!(message = "tailing", topic = %args.topic, partitions = partitions.len(), from_beginning = args.from_beginning);
    let (tx, mut rx) = mpsc::channel::<Received>(1024);
    for partition in partitions {
        let pc = client
            .partition_client(args.topic.clone(), partition, UnknownTopicHandling::Retry)
            .await;
        let pc = match pc {
            Ok(pc) => pc,
            Err(e) => {
                warn!(message = "cannot read partition", partition, error = %e);
                continue;
            }
        };
        let tx = tx.clone();
        let health = std::sync::Arc::clone(kafka.health());
        let from_beginning = args.from_beginning;
        tokio::spawn(async move {
            let at = if from_beginning {
                OffsetAt::Earliest
            } else {
                OffsetAt::Latest
            };
            let mut offset = loop {
                match pc.get_offset(at).await {
                    Ok(o) => break o,
                    Err(e) => {
                        health.failed("tail", "", &describe(&e));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            };
            loop {
                match pc.fetch_records(offset, 1..4_000_000, 500).await {
                    Ok((records, _high_watermark)) => {
                        health.succeeded();
                        for r in records {
                            offset = offset.max(r.offset + 1);
                            let value = r.record.value.unwrap_or_default();
                            if tx
                                .send(Received {
                                    partition,
                                    offset: r.offset,
                                    value,
                                })
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        // One report per outage for all partitions (Health), details at debug.
                        health.failed("tail", "", &describe(&e));
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }
    drop(tx);
    let mut printed = 0u64;
    let mut out = std::io::stdout();
    loop {
        if args.count.is_some_and(|c| printed >= c) {
            break;
        }
        let next = match args.idle_timeout {
            Some(t) => match tokio::time::timeout(t, rx.recv()).await {
                Ok(r) => r,
                Err(_) => break,
            },
            None => rx.recv().await,
        };
        let Some(r) = next else { break };
        let line = if args.json {
            escape_controls(&String::from_utf8_lossy(&r.value))
        } else {
            render(r.partition, r.offset, &r.value)
        };
        writeln!(out, "{line}")?;
        out.flush()?;
        printed += 1;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obs::terminal::is_terminal_control;

    fn message(name: &str, job: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "v": 1, "jobName": name, "priority": 0, "job": job, "cronTime": "* * * * *",
            "scheduledAt": "2026-11-26T03:00:00Z", "dispatchId": format!("{name}@2026-11-26T03:00:00Z"),
        }))
        .unwrap()
    }

    /// No byte a terminal acts on: ESC, BEL, CR, LF, backspace, DEL, C1 (CSI), bidi overrides.
    fn printable(line: &str) -> bool {
        !line.chars().any(is_terminal_control)
    }

    #[test]
    fn a_record_cannot_send_escape_sequences_to_the_terminal() {
        let name = "evil\u{1b}]0;owned\u{7}\u{1b}[2J\rname\u{9b}31m\u{202e}txt.exe";
        let line = render(0, 7, &message(name, "job\u{1b}[1A\u{8}\u{7f}"));
        assert!(printable(&line), "{line:?}");
        assert!(
            line.contains(
                "evil\\u001b]0;owned\\u0007\\u001b[2J\\u000dname\\u009b31m\\u202etxt.exe"
            ),
            "{line}"
        );
        assert!(!line.contains('\n'));

        let raw = b"not json \x1b[31mred\x1b[0m\nsecond line \x07";
        let line = render(1, 8, raw);
        assert!(printable(&line), "{line:?}");
        assert!(
            line.starts_with(
                "(not a JobMessage v1) not json \\u001b[31mred\\u001b[0m\\u000asecond line \\u0007"
            ),
            "{line}"
        );
    }

    #[test]
    fn a_message_with_run_settings_or_fields_tail_does_not_know_renders_as_before() {
        let mut with: serde_json::Value =
            serde_json::from_slice(&message("sync", "sync --all")).unwrap();
        with["timeoutMs"] = 90_000.into();
        with["maxAttempts"] = 2.into();
        with["overlap"] = "skip".into();
        with["someFutureField"] = serde_json::json!({"x": 1});
        assert_eq!(
            render(0, 3, &serde_json::to_vec(&with).unwrap()),
            render(0, 3, &message("sync", "sync --all"))
        );
        assert!(render(0, 3, &serde_json::to_vec(&with).unwrap())
            .starts_with("2026-11-26T03:00:00Z  sync"));
    }
}
