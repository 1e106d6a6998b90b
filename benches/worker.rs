//! Worker throughput against a baseline in the same run: records from a pre-filled topic to committed
//! offsets with an in-process no-op handler, versus a bare rdkafka consumer (same broker, same topic,
//! its own group) that reads every record and commits once at the end.
//!
//! The worker runs with `cronq worker`'s defaults, read from the command line parser itself (pool
//! 1-16 sized by the backlog, `--prefetch 256`, `--commit-interval 1s`, three attempts, dedup on,
//! `--max-output 8KiB`): only the handler is in-process, so that the bench measures the worker and
//! not process spawning. Baseline and worker runs alternate (bare, worker, bare, worker, …), each
//! with a fresh group, so a broker that slows down over the run weighs on both alike.
//!
//! `cargo bench --bench worker` measures 20 000 records in 4 rounds (needs the test broker:
//! `scripts/broker.sh install`); `cargo test --benches` runs a 300-record smoke pass of one round.
//! `CRONQ_BENCH_RECORDS`, `CRONQ_BENCH_ROUNDS` change the size, `CRONQ_BENCH_LOG=info` shows the
//! worker's log, and `CRONQ_*` variables change its flags as they do for `cronq worker`.
//! Prints records/s for each run and the ratio to the bare run of its round. Every worker run also
//! produces one JobResult per record and waits for its ack before committing, which the bare
//! consumer does not. The worker's time runs from `worker::run` (creating its clients and joining the
//! group included) until the group's committed offsets cover every record.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use common::{random_topic, Broker};
use cronq::cli::{Cli, Command, WorkerArgs};
use cronq::worker::executor::BoxFuture;
use cronq::worker::{Handler, JobRun, Outcome, Status, WorkerConfig};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// Records per run under `cargo bench`; `cargo test --benches` runs a small smoke pass instead.
const RECORDS: usize = 20_000;
const SMOKE_RECORDS: usize = 300;
/// Bare/worker pairs under `cargo bench`.
const ROUNDS: usize = 4;
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
            let partition = cronq::wire::partition_for(name.as_bytes(), PARTITIONS);
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

fn bare(broker: &str, topic: &str, group: &str, records: usize) -> Duration {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", group)
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

/// `cronq worker`'s defaults for this broker, topic and group, as its command line parses them.
fn default_args(broker: &str, topic: &str, group: &str) -> WorkerArgs {
    let cli = Cli::try_parse_from(["cronq", "worker", "--brokers", broker, "--topic", topic])
        .expect("default worker flags parse");
    let Command::Worker(mut args) = cli.command else {
        unreachable!("parsed a worker command line")
    };
    args.group = group.to_string();
    args.results_topic = format!("{topic}.results");
    args.dlq_topic = format!("{topic}.dlq");
    args
}

/// The configuration `cronq worker` builds from `args`, named "bench" in its reports.
fn config_of(args: &WorkerArgs) -> WorkerConfig {
    let mut config = cronq::cli::worker_config(args).expect("default worker flags configure");
    config.report.worker = "bench".into();
    config
}

/// Records in `topic` (the sum of its high watermarks).
fn records_in(consumer: &BaseConsumer, topic: &str) -> i64 {
    (0..PARTITIONS)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(5))
                .map_or(0, |(_, high)| high)
        })
        .sum()
}

/// One worker run: (every result acked, every offset committed), both from `worker::run`.
fn worker(
    rt: &tokio::runtime::Runtime,
    broker: &str,
    topic: &str,
    group: &str,
    records: usize,
) -> (Duration, Duration) {
    let config = config_of(&default_args(broker, topic, group));
    let results_topic = config.report.results_topic.clone();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let reader = offsets_reader(broker, group);
    let results_before = records_in(&reader, &results_topic);
    let started = Instant::now();
    let task = rt.spawn(cronq::worker::run(config, Arc::new(NoOp), shutdown.clone()));
    let mut reported = None;
    loop {
        if reported.is_none()
            && records_in(&reader, &results_topic) - results_before >= records as i64
        {
            reported = Some(started.elapsed());
        }
        if reported.is_some() && committed_total(&reader, topic) >= records as i64 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "worker stalled"
        );
        common::pause();
    }
    let took = started.elapsed();
    shutdown.cancel();
    let _ = rt.block_on(task);
    (reported.unwrap_or(took), took)
}

fn main() {
    // Like criterion: only `cargo bench` (which passes `--bench`) measures; `cargo test` runs a
    // small pass so the bench keeps working, and `--list` only lists.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let measuring = args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test");
    let (records, rounds) = if measuring {
        (RECORDS, ROUNDS)
    } else {
        (SMOKE_RECORDS, 1)
    };
    // For exploring: other sizes and round counts (the worker's flags follow CRONQ_* variables).
    let from_env = |name: &str, default: usize| {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let records = from_env("CRONQ_BENCH_RECORDS", records);
    let rounds = from_env("CRONQ_BENCH_ROUNDS", rounds).max(1);
    if let Ok(filter) = std::env::var("CRONQ_BENCH_LOG") {
        cronq::cli::init_tracing(&filter, cronq::cli::LogFormat::Text);
    }
    let broker = Broker::start();
    let address = broker.address();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let topic = random_topic("bench-worker");
    fill(&rt, &address, &topic, records);
    let rate = |d: Duration| records as f64 / d.as_secs_f64();
    let mut ratios = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let baseline = bare(&address, &topic, &format!("bench-bare-{round}"), records);
        let (reported, took) = worker(
            &rt,
            &address,
            &topic,
            &format!("bench-worker-{round}"),
            records,
        );
        let ratio = baseline.as_secs_f64() / took.as_secs_f64();
        let reported_ratio = baseline.as_secs_f64() / reported.as_secs_f64();
        ratios.push((ratio, reported_ratio));
        println!(
            "round {round}: bare rdkafka consumer {records} records in {baseline:.2?} ({:.0}/s); worker (default flags): every result acked after {reported:.2?} ({:.0}/s, {reported_ratio:.2}x), every offset committed after {took:.2?} ({:.0}/s, {ratio:.2}x the bare consumer)",
            rate(baseline),
            rate(reported),
            rate(took),
        );
    }
    let range = |pick: fn(&(f64, f64)) -> f64| {
        let mut v: Vec<f64> = ratios.iter().map(pick).collect();
        v.sort_by(f64::total_cmp);
        (v[0], v[v.len() - 1])
    };
    let (low, high) = range(|r| r.0);
    let (rlow, rhigh) = range(|r| r.1);
    println!(
        "worker vs bare consumer over {rounds} alternating rounds: to committed offsets {low:.2}x-{high:.2}x (target >= 0.7x: {}); to every result acked {rlow:.2}x-{rhigh:.2}x",
        if low >= 0.7 { "PASS" } else { "MISS" }
    );
}
