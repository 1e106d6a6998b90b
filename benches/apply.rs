//! `cronq apply` throughput against a baseline in the same run, on the same broker: the binary
//! applying N jobs to an empty schedule topic (a fresh group: validate, connect, create the state
//! and schedule topics, read, plan, write with acks=all), versus bare rskafka producing the same
//! records (the same specs, the same `{"v":1,"spec",…,"changed"}` values, the same murmur2
//! partitions of 12 shards, the same batches: 2 000 records or 900 KiB, 8 partitions at once) to a
//! fresh topic, encoded and batched before its clock starts. Then a re-apply of the file with 1 %
//! of its jobs changed, against the first apply's time, and a re-apply with nothing to do, both with
//! the apply cache the first apply left (`--cache-dir` in the bench's temporary directory); then a
//! re-apply with 1 % changed and `--no-cache` (a runner without a kept cache reads the whole topic).
//!
//! The apply figure is the whole command (process start to exit); its write phase alone (the
//! `applied` event's `elapsed_ms`) is printed beside it. The broker is the test broker (tansu,
//! sqlite storage, in `$TMPDIR`; `TMPDIR=/dev/shm` puts its database in memory), which acks a few
//! thousand records a second: it, not the client, is the limit of both runs.
//!
//! `cargo bench --bench apply` measures 100 000 jobs, 3 rounds (`APPLY_JOBS`, `APPLY_ROUNDS`);
//! `APPLY_BROKER=host:port` runs against a broker started by hand instead (e.g. `tansu broker
//! --storage-engine memory://tansu/` from a tansu built with `dynostore`, see docs/performance.md);
//! `cargo test --benches` runs a 2 000-job smoke pass.

#[path = "common/mod.rs"]
mod bench_common;
#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bench_common::{fmt_count, fmt_secs, full_run, load_average, schedule_json, verdict, Mix};
use chrono::Utc;
use common::{random_topic, Broker, CRONQ};
use cronq::schedule::ShardFilter;
use cronq::store::plan::compact_raw;
use cronq::wire::schedule::{Changed, ScheduleRecord, VIA_APPLY};
use futures_util::stream::{self, StreamExt};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use rskafka::record::Record;
use serde_json::value::RawValue;

/// cronq's default `--shards`.
const SHARDS: u32 = 12;
/// `store::write`'s batches and parallelism.
const BATCH_RECORDS: usize = 2_000;
const BATCH_BYTES: usize = 900 << 10;
const PARALLEL: usize = 8;
const SEED: u64 = 2026;

/// One `cronq apply`: its wall time, and the write phase as it logged it.
struct Applied {
    wall: Duration,
    write: Option<Duration>,
    plan: String,
}

fn apply(broker: &str, group: &str, file: &Path, extra: &[&str]) -> Applied {
    let start = Instant::now();
    let out = Command::new(CRONQ)
        .args(["apply", file.to_str().expect("UTF-8 path")])
        .args(extra)
        .args([
            "--brokers",
            broker,
            "--group",
            group,
            "--log-format",
            "json",
        ])
        .output()
        .expect("run cronq apply");
    let wall = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cronq apply: {}\n{stderr}",
        out.status
    );
    let write = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["message"] == "applied")
        .and_then(|v| v["elapsed_ms"].as_u64())
        .map(Duration::from_millis);
    let stdout = String::from_utf8_lossy(&out.stdout);
    Applied {
        wall,
        write,
        plan: stdout.lines().last().unwrap_or_default().to_string(),
    }
}

/// The baseline: the file's jobs as the records apply writes, produced with bare rskafka.
async fn raw_produce(broker: &str, text: &str) -> Duration {
    #[derive(serde::Deserialize)]
    struct File<'a> {
        #[serde(borrow)]
        jobs: Vec<&'a RawValue>,
    }
    let file: File<'_> = serde_json::from_str(text).expect("schedule JSON");
    let changed = Changed {
        at: Utc::now(),
        by: "bench".into(),
        via: VIA_APPLY.into(),
        source: Some("all.json".into()),
    };
    let shards = ShardFilter::all(SHARDS);
    let mut per_partition: BTreeMap<i32, Vec<Vec<Record>>> = BTreeMap::new();
    let mut open: BTreeMap<i32, (Vec<Record>, usize)> = BTreeMap::new();
    for raw in &file.jobs {
        #[derive(serde::Deserialize)]
        struct Name {
            #[serde(rename = "jobName")]
            name: String,
        }
        let name = serde_json::from_str::<Name>(raw.get())
            .expect("jobName")
            .name;
        let spec = compact_raw(raw);
        let value = ScheduleRecord::encode(&spec, &changed);
        let partition = shards.shard_of(&name) as i32;
        let (batch, bytes) = open.entry(partition).or_default();
        *bytes += name.len() + value.len() + 64;
        batch.push(Record {
            key: Some(name.into_bytes()),
            value: Some(value),
            headers: BTreeMap::new(),
            timestamp: changed.at,
        });
        if batch.len() >= BATCH_RECORDS || *bytes >= BATCH_BYTES {
            per_partition
                .entry(partition)
                .or_default()
                .push(std::mem::take(batch));
            *bytes = 0;
        }
    }
    for (partition, (batch, _)) in open {
        if !batch.is_empty() {
            per_partition.entry(partition).or_default().push(batch);
        }
    }
    let client = ClientBuilder::new(vec![broker.to_string()])
        .build()
        .await
        .expect("client");
    let topic = random_topic("bench-raw");
    client
        .controller_client()
        .expect("controller")
        .create_topic(&topic, SHARDS as i32, 1, 5_000)
        .await
        .expect("create topic");
    let mut work = Vec::new();
    for (partition, batches) in per_partition {
        let pc = client
            .partition_client(topic.clone(), partition, UnknownTopicHandling::Retry)
            .await
            .expect("partition client");
        work.push((pc, batches));
    }
    let start = Instant::now();
    stream::iter(work)
        .map(|(pc, batches)| async move {
            for batch in batches {
                pc.produce(batch, Compression::NoCompression)
                    .await
                    .expect("produce");
            }
        })
        .buffer_unordered(PARALLEL)
        .collect::<Vec<()>>()
        .await;
    start.elapsed()
}

/// The file with every hundredth job's command changed.
fn one_percent_changed(text: &str) -> String {
    let mut job = 0usize;
    text.lines()
        .map(|line| {
            if !line.contains("\"jobName\"") {
                return line.to_string();
            }
            job += 1;
            if job % 100 == 1 {
                line.replacen("\"run-task --id ", "\"run-task --v2 --id ", 1)
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let full = full_run();
    let jobs = env_count("APPLY_JOBS", if full { 100_000 } else { 2_000 });
    let rounds = env_count("APPLY_ROUNDS", if full { 3 } else { 1 }).max(1);
    // A broker of the caller's (`APPLY_BROKER=host:port`, e.g. a tansu on its memory engine), or
    // the test broker.
    let (_broker, address) = match std::env::var("APPLY_BROKER") {
        Ok(address) => (None, address),
        Err(_) => {
            let broker = Broker::start();
            let address = broker.address();
            (Some(broker), address)
        }
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let text = schedule_json(jobs, Mix::Realistic, SEED);
    let file = dir.path().join("all.json");
    std::fs::write(&file, &text).expect("write schedule");
    // The next version of the same file (the same name: the same source tag).
    std::fs::create_dir(dir.path().join("v2")).expect("v2 dir");
    let changed = dir.path().join("v2").join("all.json");
    let changed_text = one_percent_changed(&text);
    std::fs::write(&changed, &changed_text).expect("write schedule");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "apply on {}: {} jobs, {SHARDS} shards, {rounds} rounds, load {}",
        if _broker.is_some() {
            "the test broker (tansu, sqlite)".to_string()
        } else {
            address.clone()
        },
        fmt_count(jobs),
        load_average()
    );
    let (mut rate_ratios, mut write_ratios, mut reapply_ratios) = (vec![], vec![], vec![]);
    let cache_dir = dir.path().join("cache");
    let cached = ["--cache-dir", cache_dir.to_str().expect("UTF-8 path")];
    for round in 1..=rounds {
        let group = random_topic("bench-apply");
        let first = apply(&address, &group, &file, &cached);
        assert!(
            first.plan.contains(&format!("{jobs} to add")),
            "{}",
            first.plan
        );
        let raw = runtime.block_on(raw_produce(&address, &text));
        let again = apply(&address, &group, &changed, &cached);
        let wanted = format!("{} to change", jobs.div_ceil(100));
        assert!(again.plan.contains(&wanted), "{}", again.plan);
        let idle = apply(&address, &group, &changed, &cached);
        assert!(
            idle.plan.contains("0 to add, 0 to change, 0 to remove"),
            "{}",
            idle.plan
        );
        // Back to the first file (1 % changed again), reading the whole topic.
        let uncached = apply(&address, &group, &file, &["--no-cache"]);
        assert!(uncached.plan.contains(&wanted), "{}", uncached.plan);
        let rate = raw.as_secs_f64() / first.wall.as_secs_f64();
        let write = first.write.unwrap_or(first.wall);
        let write_rate = raw.as_secs_f64() / write.as_secs_f64();
        let reapply = again.wall.as_secs_f64() / first.wall.as_secs_f64();
        println!(
            "  round {round}: apply {} ({:.0} jobs/s; write phase {}), raw rskafka {} ({:.0} records/s): apply/raw rate {rate:.2}x (write phase {write_rate:.2}x); re-apply 1% {} = {:.1}% of the first; nothing to do {}; re-apply 1% without the cache {} = {:.1}%",
            fmt_secs(first.wall.as_secs_f64()),
            jobs as f64 / first.wall.as_secs_f64(),
            fmt_secs(write.as_secs_f64()),
            fmt_secs(raw.as_secs_f64()),
            jobs as f64 / raw.as_secs_f64(),
            fmt_secs(again.wall.as_secs_f64()),
            reapply * 100.0,
            fmt_secs(idle.wall.as_secs_f64()),
            fmt_secs(uncached.wall.as_secs_f64()),
            uncached.wall.as_secs_f64() / first.wall.as_secs_f64() * 100.0,
        );
        rate_ratios.push(rate);
        write_ratios.push(write_rate);
        reapply_ratios.push(reapply);
    }
    let rate = median(rate_ratios);
    let reapply = median(reapply_ratios);
    println!(
        "apply of {} to an empty topic: {rate:.2}x the raw produce rate (median; write phase {:.2}x; target >= 0.8x: {})",
        fmt_count(jobs),
        median(write_ratios),
        verdict(rate >= 0.8)
    );
    println!(
        "re-apply with 1% changed: {:.1}% of the first apply's time (median; target <= 10%: {})",
        reapply * 100.0,
        verdict(reapply <= 0.10)
    );
}
