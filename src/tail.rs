//! `cronq tail`: print job messages as they arrive, one line each — the operator's view of what is
//! being dispatched. Reads every partition of the topic with rskafka (no consumer group, no commits).

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::cli::{CliError, TailArgs};
use crate::kafka::{describe, retry_forever};
use crate::message::JobMessage;

struct Received {
    partition: i32,
    offset: i64,
    value: Vec<u8>,
}

/// One readable line for a record.
pub fn render(partition: i32, offset: i64, value: &[u8]) -> String {
    match serde_json::from_slice::<JobMessage>(value) {
        Ok(m) => format!(
            "{}  {}  priority={}  job={:?}  [partition {partition} offset {offset}]",
            m.scheduled_at, m.job_name, m.priority, m.job
        ),
        Err(_) => format!(
            "(not a JobMessage v1) {}  [partition {partition} offset {offset}]",
            String::from_utf8_lossy(value)
        ),
    }
}

/// Runs `cronq tail`.
pub fn run(args: TailArgs) -> Result<ExitCode, CliError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(tail(args))
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
            String::from_utf8_lossy(&r.value).into_owned()
        } else {
            render(r.partition, r.offset, &r.value)
        };
        writeln!(out, "{line}")?;
        out.flush()?;
        printed += 1;
    }
    Ok(ExitCode::SUCCESS)
}
