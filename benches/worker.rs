//! Worker throughput against a baseline in the same run: records from a pre-filled topic to committed
//! offsets with an in-process no-op handler, pool 1 and pool 16, versus a bare rdkafka consumer
//! (same broker, same topic, its own group) that reads every record and commits once at the end.
//!
//! `cargo bench --bench worker` measures 5 000 records (needs the test broker: `scripts/broker.sh
//! install`); `cargo test --benches` runs a 300-record smoke pass. Prints records/s for each and the
//! ratio to the bare consumer. Every worker run also produces one
//! JobResult per record and waits for its ack before committing, which the bare consumer does not.
//! The worker's time runs from `worker::run` (creating its clients and joining the group included)
//! until the group's committed offsets cover every record.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{random_topic, Broker};
use cronq::worker::autoscale::ScaleConfig;
use cronq::worker::executor::BoxFuture;
use cronq::worker::queue::Ordering;
use cronq::worker::results::ReportConfig;
use cronq::worker::{Handler, JobRun, Outcome, StartAt, Status, WorkerConfig};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// Records per run under `cargo bench`; `cargo test --benches` runs a small smoke pass instead.
const RECORDS: usize = 5_000;
const SMOKE_RECORDS: usize = 300;
const PARTITIONS: i32 = 4;

struct NoOp;

impl Handler for NoOp {
    fn run<'a>(&'a self, _run: &'a JobRun) -> BoxFuture<'a, Outcome> {
        Box::pin(async { Outcome::new(Status::Succeeded) })
    }
}

fn fill(rt: &tokio::runtime::Runtime, broker: &str, topic: &str, records: usize) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .expect("admin");
    // The report topics too, as an operator would before starting workers: otherwise the first
    // measured run alone would pay for creating them.
    let results = format!("{topic}.results");
    let dlq = format!("{topic}.dlq");
    let topics: Vec<NewTopic<'_>> = [topic, results.as_str(), dlq.as_str()]
        .into_iter()
        .map(|name| NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1)))
        .collect();
    for created in rt
        .block_on(admin.create_topics(&topics, &AdminOptions::new()))
        .expect("create topics")
    {
        created.expect("create topic");
    }
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    rt.block_on(async {
        let mut pending = Vec::with_capacity(records);
        for i in 0..records {
            let name = format!("bench-{i:05}");
            let value = serde_json::json!({
                "v": 1, "jobName": name, "priority": 0, "job": "noop", "cronTime": "* * * * *",
                "scheduledAt": "2026-11-26T00:00:00Z", "dispatchId": format!("{name}@2026-11-26T00:00:00Z"),
            })
            .to_string();
            let partition = cronq::message::partition_for(name.as_bytes(), PARTITIONS);
            let record = FutureRecord::to(topic)
                .key(name.as_bytes())
                .payload(value.as_bytes())
                .partition(partition);
            pending.push(producer.send_result(record).expect("queue record"));
        }
        for p in pending {
            p.await.expect("delivery").expect("produce");
        }
    });
}

fn bare(broker: &str, topic: &str, records: usize) -> Duration {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", "bench-bare")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let started = Instant::now();
    let mut seen = 0;
    while seen < records {
        if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
            seen += 1;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "bare consumer stalled at {seen}"
        );
    }
    consumer
        .commit_consumer_state(CommitMode::Sync)
        .expect("commit");
    started.elapsed()
}

/// A client that reads `group`'s committed offsets (made once per run, outside the polling loop,
/// so that watching the worker costs it as little CPU as possible).
fn offsets_reader(broker: &str, group: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", group)
        .create()
        .expect("consumer")
}

fn committed_total(consumer: &BaseConsumer, topic: &str) -> i64 {
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    consumer
        .committed_offsets(tpl, Duration::from_secs(5))
        .map(|t| {
            t.elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

fn worker(
    rt: &tokio::runtime::Runtime,
    broker: &str,
    topic: &str,
    pool: usize,
    prefetch: usize,
    records: usize,
) -> Duration {
    let group = format!("bench-worker-{pool}-{prefetch}");
    let config = WorkerConfig {
        kafka: cronq::kafka::Connection::plaintext(vec![broker.to_string()]),
        topic: topic.to_string(),
        group: group.clone(),
        start: StartAt::Earliest,
        ordering: Ordering::Ordered,
        prefetch,
        report: ReportConfig {
            results_topic: format!("{topic}.results"),
            dlq_topic: format!("{topic}.dlq"),
            max_attempts: 1,
            retry_backoff: Duration::from_millis(50),
            worker: "bench".into(),
        },
        scale: ScaleConfig {
            min: pool,
            max: pool,
            target_drain: Duration::from_secs(10),
            scale_down_delay: Duration::from_secs(30),
        },
        scale_interval: Duration::from_secs(1),
        shutdown_grace: Duration::from_secs(10),
        commit_interval: Duration::from_millis(20),
        session_timeout: Duration::from_secs(10),
        dedup_capacity: 0,
        create_topics: true,
        partitions: PARTITIONS,
        replication_factor: 1,
    };
    let shutdown = tokio_util::sync::CancellationToken::new();
    let reader = offsets_reader(broker, &group);
    let started = Instant::now();
    let task = rt.spawn(cronq::worker::run(config, Arc::new(NoOp), shutdown.clone()));
    while committed_total(&reader, topic) < records as i64 {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "pool {pool} stalled"
        );
        common::pause();
    }
    let took = started.elapsed();
    shutdown.cancel();
    let _ = rt.block_on(task);
    took
}

fn main() {
    // Like criterion: only `cargo bench` (which passes `--bench`) measures; `cargo test` runs a
    // small pass so the bench keeps working, and `--list` only lists.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let measuring = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
    let records = if measuring { RECORDS } else { SMOKE_RECORDS };
    let broker = Broker::start();
    let address = broker.address();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let topic = random_topic("bench-worker");
    fill(&rt, &address, &topic, records);
    let baseline = bare(&address, &topic, records);
    let rate = |d: Duration| records as f64 / d.as_secs_f64();
    println!(
        "bare rdkafka consumer: {records} records in {baseline:?} ({:.0}/s)",
        rate(baseline)
    );
    // 256 is the default --prefetch; a queue that never fills shows what pausing the fetch costs.
    for (pool, prefetch) in [(1, 256), (16, 256), (16, records)] {
        let took = worker(&rt, &address, &topic, pool, prefetch, records);
        let ratio = baseline.as_secs_f64() / took.as_secs_f64();
        println!(
            "worker, pool {pool:>2}, prefetch {prefetch:>4}: {records} records to committed offsets in {took:?} ({:.0}/s, {ratio:.2}x the bare consumer; target >= 0.7x: {})",
            rate(took),
            if ratio >= 0.7 { "PASS" } else { "MISS" }
        );
    }
}
