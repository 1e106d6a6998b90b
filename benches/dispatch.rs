//! Dispatch throughput against a baseline in the same run: N jobs all due in one minute, from the
//! tick until the broker acked the last record (cronq's full path: wheel → queue → router →
//! producer lanes → rskafka, JobMessage v1 encoding, murmur2 partitioning), versus raw rskafka
//! produce calls of the same N records, one task per partition, to the same broker. The
//! baseline's records are encoded and cut into batches of the same size before its clock starts,
//! each partition's on the task that then sends and frees them, as cronq's are: its clock sees
//! nothing but produce calls. Each run also prints the CPU time the process (the client, not the
//! broker) spent in it, steadier than throughput on a shared machine.
//!
//! Three brokers, each a tansu process on this machine: sqlite storage (the test broker; it acks
//! about 6-10k records/s, so there the broker is the limit and the ratio says little about the
//! client), the same with its database on tmpfs (`/dev/shm`: no disk under the broker), and
//! tansu's in-memory storage engine (`--storage-engine memory://`), where the broker is not the
//! limit and the ratio is the client's (skipped, and said so, when the installed tansu was built
//! without its `dynostore` feature, as tansu 0.6's release is). On each, the two runs alternate,
//! four times (`DISPATCH_ROUNDS=N` for N), every pair's ratio is printed, and the median of the
//! ratios (the mean of the middle two of an even count).
//!
//! On the memory engine, with the release profile's fat LTO, on a quiet machine: ten runs of 16
//! rounds, per-run medians 0.75-0.97 (8 of 10 at or above 0.8), the last 80 rounds pooled median
//! 0.85, client CPU 1.21× the baseline's (docs/performance.md).
//!
//! `cargo bench --bench dispatch` measures 100 000 jobs (needs the test broker: `scripts/broker.sh
//! install`); `cargo test --benches` runs a 2 000-job smoke pass. `DISPATCH_ENGINES=memory` runs one
//! engine only (`sqlite`, `shm`, `memory`). `DISPATCH_PROFILE=1` also prints the CLOCK_MONOTONIC
//! window of every timed run, for `perf record -k CLOCK_MONOTONIC` and `perf report --time`.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/dispatch.rs"]
mod dispatch_common;
#[path = "common/engine.rs"]
mod engine;
use dispatch_common::{
    noon_schedule as bench_schedule, producer_config as config, BATCH, PARTITIONS,
};
use engine::MemoryBroker;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use common::{random_topic, Broker};
use cronq::clock::{ManualClock, Minute};
use cronq::dispatcher::producer::{self, DeliveryStats};
use cronq::dispatcher::{Scheduler, TickLoop};
use cronq::schedule::record::encode;
use cronq::schedule::JobSpec;
use cronq::wire::partition_for;
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use rskafka::record::Record;

const JOBS: usize = 100_000;
const SMOKE_JOBS: usize = 2_000;

/// cronq: tick loop → producers, timed from the tick until every record is acked.
async fn cronq_run(broker: &str, jobs: usize) -> Timed {
    let topic = random_topic("bench-cronq");
    let sched = bench_schedule(jobs);
    let slot = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap();
    let clock = ManualClock::new(slot - chrono::Duration::minutes(1));
    // Warm-up dispatches of the minute before, so the pool has looked the topic up and made its
    // partition clients before timing, as the raw baseline does before its clock starts.
    let warm_up: Vec<cronq::dispatcher::Dispatch> = sched
        .jobs
        .iter()
        .take(WARM_UP)
        .map(|job| cronq::dispatcher::Dispatch {
            spec: Arc::clone(&job.spec).into(),
            scheduled_at: slot - chrono::Duration::minutes(1),
            lease: None,
        })
        .collect();
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
    let warmed = warm_up.len() as u64;
    for d in warm_up {
        tx.send(d).await.expect("producer pool");
    }
    while stats.delivered.load(Ordering::Relaxed) < warmed {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut tick_loop = TickLoop::new(Arc::new(clock.clone()), scheduler, None, tx);
    clock.set(slot);
    let acked = jobs as u64 + warmed;
    let start = Timer::start();
    tick_loop.tick().await.expect("tick");
    // The clock stops at the last ack (polled every millisecond, so it may read up to about a
    // millisecond late), not when the pool has shut down: closing its Kafka clients is not
    // dispatching, and the baseline's clock does not wait for its clients to close either.
    while stats.delivered.load(Ordering::Relaxed) < acked {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = start.stop();
    drop(tick_loop);
    sink.await.expect("producers").expect("producer pool");
    assert_eq!(
        stats.delivered.load(Ordering::Relaxed),
        acked,
        "every job acked"
    );
    elapsed
}

/// Dispatches sent and acked before timing (enough to reach every partition).
const WARM_UP: usize = 64;

/// Baseline: the same records, pre-encoded, produced with bare rskafka, one task per partition.
async fn raw_run(broker: &str, jobs: usize) -> Timed {
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
    let mut per_partition: BTreeMap<i32, Vec<Arc<JobSpec>>> = BTreeMap::new();
    for job in &sched.jobs {
        per_partition
            .entry(partition_for(job.spec.name.as_bytes(), PARTITIONS))
            .or_default()
            .push(Arc::clone(&job.spec));
    }
    // Every task encodes its partition's records and cuts them into batches, then waits here
    // until all have; only then does the clock start. Encoded on the task that sends and frees
    // them, as cronq's are, and batched beforehand, so the baseline's clock sees nothing but
    // produce calls.
    let ready = Arc::new(tokio::sync::Barrier::new(per_partition.len() + 1));
    let mut tasks = Vec::new();
    for (partition, specs) in per_partition {
        let pc = client
            .partition_client(topic.clone(), partition, UnknownTopicHandling::Retry)
            .await
            .expect("partition client");
        let (ready, topic) = (Arc::clone(&ready), topic.clone());
        tasks.push(tokio::spawn(async move {
            let mut records = specs.iter().map(|spec| {
                let r = encode(spec, slot, &topic, Utc::now());
                Record {
                    key: Some(r.key),
                    value: Some(r.value),
                    headers: r.headers,
                    timestamp: r.timestamp,
                }
            });
            let batches: Vec<Vec<Record>> = std::iter::from_fn(|| {
                let batch: Vec<Record> = records.by_ref().take(BATCH).collect();
                (!batch.is_empty()).then_some(batch)
            })
            .collect();
            ready.wait().await;
            for batch in batches {
                pc.produce(batch, Compression::NoCompression)
                    .await
                    .expect("produce");
            }
        }));
    }
    ready.wait().await;
    let start = Timer::start();
    for t in tasks {
        t.await.expect("raw task");
    }
    start.stop()
}

/// A run's wall time and the CPU time this process (the client, not the broker) spent in it.
#[derive(Debug, Clone, Copy)]
struct Timed {
    wall: Duration,
    cpu: Duration,
    /// CLOCK_MONOTONIC at start and stop, seconds: the window for `perf report --time`.
    window: (f64, f64),
}

struct Timer {
    wall: Instant,
    cpu: Duration,
    monotonic: f64,
}

impl Timer {
    fn start() -> Timer {
        Timer {
            wall: Instant::now(),
            cpu: process_cpu(),
            monotonic: monotonic(),
        }
    }

    fn stop(self) -> Timed {
        Timed {
            wall: self.wall.elapsed(),
            cpu: process_cpu().saturating_sub(self.cpu),
            window: (self.monotonic, monotonic()),
        }
    }
}

/// CLOCK_MONOTONIC in seconds, the clock of `perf record -k CLOCK_MONOTONIC`.
fn monotonic() -> f64 {
    // SAFETY: clock_gettime only writes the struct it is given.
    let mut t: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
}

/// The median of sorted `xs` (the mean of the middle two of an even count).
fn median(xs: &[f64]) -> f64 {
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// User and system CPU time of every thread of this process so far.
fn process_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a rusage struct.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// Alternates raw and cronq `rounds` times on `broker` (raw first in even rounds, cronq first in
/// odd ones) and prints every run and each round's ratio.
fn compare(rt: &tokio::runtime::Runtime, engine: &str, broker: &str, jobs: usize, rounds: usize) {
    let rate = |t: Timed| jobs as f64 / t.wall.as_secs_f64();
    println!("dispatch on tansu ({engine}): {jobs} jobs due in one minute, until acked; raw rskafka in batches of {BATCH}, same broker, alternating");
    let mut ratios = Vec::new();
    let mut cpu_ratios = Vec::new();
    let mut windows = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let (raw, cronq) = if round % 2 == 0 {
            let raw = rt.block_on(raw_run(broker, jobs));
            (raw, rt.block_on(cronq_run(broker, jobs)))
        } else {
            let cronq = rt.block_on(cronq_run(broker, jobs));
            (rt.block_on(raw_run(broker, jobs)), cronq)
        };
        let ratio = rate(cronq) / rate(raw);
        ratios.push(ratio);
        let window = |t: Timed| format!("{:.6},{:.6}", t.window.0, t.window.1);
        windows.0.push(window(raw));
        windows.1.push(window(cronq));
        let cpu_ratio = cronq.cpu.as_secs_f64() / raw.cpu.as_secs_f64();
        cpu_ratios.push(cpu_ratio);
        println!(
            "  round {round}: raw {:>8.0} records/s ({:.3} s, client CPU {:.3} s), cronq {:>8.0} records/s ({:.3} s, client CPU {:.3} s), cronq/raw {ratio:.2} (client CPU {cpu_ratio:.2}×)",
            rate(raw),
            raw.wall.as_secs_f64(),
            raw.cpu.as_secs_f64(),
            rate(cronq),
            cronq.wall.as_secs_f64(),
            cronq.cpu.as_secs_f64(),
        );
    }
    ratios.sort_by(f64::total_cmp);
    cpu_ratios.sort_by(f64::total_cmp);
    println!(
        "  {engine}: cronq/raw median {:.2}, range {:.2}-{:.2} over {rounds} rounds (target ≥ 0.80{}); client CPU cronq/raw median {:.2}×, range {:.2}-{:.2}",
        median(&ratios),
        ratios[0],
        ratios[ratios.len() - 1],
        if engine == "sqlite" {
            "; the broker is the limit here"
        } else {
            ""
        },
        median(&cpu_ratios),
        cpu_ratios[0],
        cpu_ratios[cpu_ratios.len() - 1],
    );
    if std::env::var_os("DISPATCH_PROFILE").is_some() {
        // For `perf record -k CLOCK_MONOTONIC` of this run: `perf report --time <windows>`.
        println!("  raw windows: {}", windows.0.join(","));
        println!("  cronq windows: {}", windows.1.join(","));
    }
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let jobs = if measuring { JOBS } else { SMOKE_JOBS };
    let rounds = match std::env::var("DISPATCH_ROUNDS") {
        Ok(n) => n.parse().expect("DISPATCH_ROUNDS: a number of rounds"),
        Err(_) if measuring => 4,
        Err(_) => 1,
    };
    let engines = std::env::var("DISPATCH_ENGINES").unwrap_or_else(|_| "sqlite,shm,memory".into());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!("load average {}", load_average());
    if engines.contains("sqlite") {
        let broker = Broker::start();
        compare(&rt, "sqlite", &broker.address(), jobs, rounds);
    }
    if engines.contains("shm") {
        // sqlite as in the test broker, but its file on tmpfs: no disk under the broker.
        let dir = tempfile::tempdir_in("/dev/shm").expect("a directory in /dev/shm");
        let broker = MemoryBroker::start("sqlite://tansu.db", dir).expect("tansu on sqlite");
        compare(&rt, "sqlite on tmpfs", &broker.address(), jobs, rounds);
    }
    if engines.contains("memory") {
        let dir = tempfile::tempdir().expect("temp dir");
        match MemoryBroker::start("memory://tansu/", dir) {
            Some(broker) => compare(&rt, "memory", &broker.address(), jobs, rounds),
            None => println!("dispatch on tansu (memory): NOT MEASURED, this tansu has no memory engine (build tansu with its `dynostore` feature)"),
        }
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}
