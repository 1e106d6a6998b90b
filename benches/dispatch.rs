//! Dispatch throughput against a baseline in the same run: N jobs all due in one minute, from the
//! tick loop's first send until the broker acked every record (cronq's full path: wheel → queue →
//! router → producer lanes → rskafka, JobMessage v1 encoding, murmur2 partitioning), versus raw
//! rskafka produce calls of the same N pre-encoded records in batches of the same size, one task per
//! partition, to the same broker.
//!
//! `cargo bench --bench dispatch` measures 100 000 jobs (needs the test broker: `scripts/broker.sh
//! install`); `cargo test --benches` runs a 2 000-job smoke pass. Prints both rates and the ratio.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use common::{random_topic, Broker};
use cronq::clock::{ManualClock, Minute};
use cronq::dispatcher::producer::{self, CompressionArg, DeliveryStats, ProducerConfig};
use cronq::dispatcher::{Scheduler, TickLoop};
use cronq::message::{encode, partition_for};
use cronq::schedule::{self, LoadOptions};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use rskafka::record::Record;

const JOBS: usize = 100_000;
const SMOKE_JOBS: usize = 2_000;
const PARTITIONS: i32 = 3;
const BATCH: usize = 1_000;

fn schedule_json(jobs: usize) -> String {
    let entries: Vec<String> = (0..jobs)
        .map(|i| {
            format!(
                r#"{{"jobName":"bench-{i:06}","priority":{},"job":"run report --id {i}","cronTime":"0 12 * * *"}}"#,
                i % 10
            )
        })
        .collect();
    format!(r#"{{"jobs":[{}]}}"#, entries.join(","))
}

fn bench_schedule(jobs: usize) -> schedule::Schedule {
    schedule::parse(
        schedule_json(jobs).as_bytes(),
        Path::new("bench.json"),
        LoadOptions::default(),
    )
    .expect("schedule")
}

fn config(broker: &str, topic: &str) -> ProducerConfig {
    ProducerConfig {
        kafka: cronq::kafka::Connection::plaintext(vec![broker.to_string()]),
        default_topic: topic.to_string(),
        partitions: PARTITIONS,
        replication_factor: 1,
        create_topics: true,
        producers: 4,
        batch_size: BATCH,
        compression: CompressionArg::None,
        retry_backoff: Duration::from_millis(50),
    }
}

/// cronq: tick loop → producers, timed from the tick until every record is acked.
async fn cronq_run(broker: &str, jobs: usize) -> Duration {
    let topic = random_topic("bench-cronq");
    let sched = bench_schedule(jobs);
    let slot = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap();
    let clock = ManualClock::new(slot - chrono::Duration::minutes(1));
    let scheduler = Scheduler::new(sched, Minute(Minute::containing(slot).0 - 1));
    let (tx, rx) = tokio::sync::mpsc::channel(10_000);
    let stats = Arc::new(DeliveryStats::default());
    // Connect and create the topic before timing, as the raw baseline does.
    let settings = config(broker, &topic);
    let client = settings.kafka.connect(Duration::from_millis(50)).await;
    let admin = cronq::kafka::admin::TopicAdmin::new(&settings.kafka).expect("admin client");
    let spec = cronq::kafka::admin::TopicSpec {
        name: &topic,
        partitions: PARTITIONS,
        replication_factor: 1,
        configs: &[],
    };
    cronq::kafka::admin::ensure_topic(&client, Some(&admin), &spec)
        .await
        .expect("topic");
    let sink = tokio::spawn(producer::run(
        config(broker, &topic),
        rx,
        Arc::clone(&stats),
        None,
    ));
    let mut tick_loop = TickLoop::new(Arc::new(clock.clone()), scheduler, None, tx);
    clock.set(slot);
    let start = Instant::now();
    tick_loop.tick().await.expect("tick");
    drop(tick_loop);
    sink.await.expect("producers").expect("producer pool");
    let elapsed = start.elapsed();
    assert_eq!(
        stats.delivered.load(Ordering::Relaxed),
        jobs as u64,
        "every job acked"
    );
    elapsed
}

/// Baseline: the same records, pre-encoded, produced with bare rskafka, one task per partition.
async fn raw_run(broker: &str, jobs: usize) -> Duration {
    let topic = random_topic("bench-raw");
    let client = ClientBuilder::new(vec![broker.to_string()])
        .build()
        .await
        .expect("client");
    client
        .controller_client()
        .expect("controller")
        .create_topic(&topic, PARTITIONS, 1, 5_000)
        .await
        .expect("create topic");
    let sched = bench_schedule(jobs);
    let slot = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap();
    let mut per_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    for job in &sched.jobs {
        let d = cronq::dispatcher::Dispatch {
            spec: Arc::clone(&job.spec),
            scheduled_at: slot,
            lease: None,
        };
        let r = encode(&d.spec, d.scheduled_at, &topic, Utc::now());
        per_partition
            .entry(partition_for(&r.key, PARTITIONS))
            .or_default()
            .push(Record {
                key: Some(r.key),
                value: Some(r.value),
                headers: r.headers,
                timestamp: r.timestamp,
            });
    }
    let mut clients = Vec::new();
    for p in per_partition.keys() {
        clients.push(
            client
                .partition_client(topic.clone(), *p, UnknownTopicHandling::Retry)
                .await
                .expect("partition client"),
        );
    }
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (pc, records) in clients.into_iter().zip(per_partition.into_values()) {
        tasks.push(tokio::spawn(async move {
            let mut records = records;
            while !records.is_empty() {
                let rest = records.split_off(records.len().min(BATCH));
                pc.produce(records, Compression::NoCompression)
                    .await
                    .expect("produce");
                records = rest;
            }
        }));
    }
    for t in tasks {
        t.await.expect("raw task");
    }
    start.elapsed()
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let jobs = if measuring { JOBS } else { SMOKE_JOBS };
    let broker = Broker::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Alternate the two, twice, and keep each one's best: the broker warms up, the machine is shared.
    let mut cronq_best = Duration::MAX;
    let mut raw_best = Duration::MAX;
    for _ in 0..2 {
        raw_best = raw_best.min(rt.block_on(raw_run(&broker.address(), jobs)));
        cronq_best = cronq_best.min(rt.block_on(cronq_run(&broker.address(), jobs)));
    }
    let rate = |d: Duration| jobs as f64 / d.as_secs_f64();
    println!("dispatch: {jobs} jobs due in one minute, until acked by the broker (tansu, sqlite), best of 2");
    println!(
        "  raw rskafka batches of {BATCH}: {:>8.0} records/s ({:.2} s)",
        rate(raw_best),
        raw_best.as_secs_f64()
    );
    println!(
        "  cronq tick → ack:             {:>8.0} records/s ({:.2} s)",
        rate(cronq_best),
        cronq_best.as_secs_f64()
    );
    println!(
        "  ratio cronq / raw: {:.2} (target ≥ 0.80)",
        rate(cronq_best) / rate(raw_best)
    );
}
