//! The jobs API's throughput and latency against raw rskafka in the same run, on the same broker
//! (issue 21, "Throughput, measured in a bench against the broker in the same run").
//!
//! ```text
//!  1. batches    N jobs ──► POST /api/v1/jobs:batch, 10 000 a request, one client (API_BATCH_CLIENTS)
//!                           ──► one `cronq run --schedule-topic --api-tokens` member, every shard its own
//!     baseline   the same record values (ScheduleRecord + Changed{via:"api"}), the same partitions
//!                (murmur2(name) mod 12), batched as the API's write path (`store::write`) batches a
//!                request: per partition, 2 000 records or 900 KiB, 8 partitions at once, acks=all
//!  2. single     M PUT /api/v1/jobs/{name}, 32 threads (API_CLIENTS), a keep-alive connection each
//!     baseline   32 tasks, each producing one record at a time (acks=all), waiting for each ack
//!  3. forward    two members, each owning part of the 12 shards: one client, one PUT at a time,
//!                alternating members; a job of the member sent to vs a job of the other (forwarded)
//! ```
//!
//! The raw side's records, topics and partition clients are made before its clock starts; each raw
//! run goes once before the API's and once after (to a fresh topic), so that neither has the emptier
//! broker to itself, and its rate is the mean of the two. Everything shares this machine: the
//! broker, the members (which also read back every record written and compile it into their
//! wheels) and the bench's clients.
//!
//! `cargo bench --bench api` runs 100 000 jobs, 5 000 PUTs and 1 000 forward probes (`API_JOBS`,
//! `API_PUTS`, `API_FORWARD_PUTS`, `API_CLIENTS`, `API_BATCH_CLIENTS`); `cargo test --benches` runs a
//! 2 000-job, 200-PUT smoke pass. The broker is the test broker (tansu, sqlite) unless
//! `API_BROKER=host:port` names one started by hand, or `TANSU=` a tansu built with `dynostore`
//! (then its memory engine; `API_ENGINE` picks another `--storage-engine`). The members run with
//! `--api-rate 1000000`: the per-token rate limit (1 000/s by default) would otherwise be the
//! figure measured.

#[path = "common/mod.rs"]
mod bench_common;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/engine.rs"]
mod engine;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use bench_common::{env_count, fmt_count, full_run, load_average, Rng};
use chrono::Utc;
use common::{create_topic, http_addr_in_log, random_topic, CRONQ};
use cronq::schedule::ShardFilter;
use cronq::store::plan::compact;
use cronq::wire::schedule::{Changed, ScheduleRecord, VIA_API};
use engine::BenchBroker;
use futures_util::stream::{self, StreamExt};
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;
use serde_json::value::RawValue;
use serde_json::Value;

/// cronq's default `--shards`.
const SHARDS: u32 = 12;
/// `POST /api/v1/jobs:batch`'s most operations (`MAX_BATCH_OPS`).
const BATCH_OPS: usize = 10_000;
/// `store::write`'s batches and parallelism (private there; the apply bench copies them too).
const BATCH_RECORDS: usize = 2_000;
const BATCH_BYTES: usize = 900 << 10;
const PARALLEL: usize = 8;
/// The token the bench writes with; its name is the records' `changed.by`.
const TOKEN: &str = "bench-secret-token";
const TOKEN_NAME: &str = "bench-bot";

/// One job as a client sends it: a random `m h dom mon *` (due about once a year, so that almost
/// nothing fires during the bench), compact JSON as the API stores it.
struct Job {
    name: String,
    json: String,
}

fn jobs(prefix: &str, n: usize, seed: u64) -> Vec<Job> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let name = format!("{prefix}-{i:07}");
            let json = format!(
                r#"{{"jobName":"{name}","priority":{},"job":"run-task --id {i}","cronTime":"{} {} {} {} *"}}"#,
                rng.below(10),
                rng.below(60),
                rng.below(24),
                1 + rng.below(28),
                1 + rng.below(12),
            );
            Job { name, json }
        })
        .collect()
}

/// The record the API writes for `job`: its body compacted (it already names itself), encoded with
/// who/when/how.
fn api_record(job: &Job) -> Record {
    let spec = RawValue::from_string(compact(&job.json)).expect("job JSON");
    let changed = Changed {
        at: Utc::now(),
        by: TOKEN_NAME.into(),
        via: VIA_API.into(),
        source: None,
    };
    Record {
        key: Some(job.name.as_bytes().to_vec()),
        value: Some(ScheduleRecord::encode(&spec, &changed)),
        headers: BTreeMap::new(),
        timestamp: changed.at,
    }
}

/// Latencies, ms, sorted.
struct Latencies(Vec<f64>);

impl Latencies {
    fn new(mut ms: Vec<f64>) -> Latencies {
        ms.sort_by(f64::total_cmp);
        Latencies(ms)
    }

    fn q(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        self.0[((self.0.len() as f64 - 1.0) * p).round() as usize]
    }
}

// ---- the broker and the members ----

/// A `cronq run --schedule-topic --api-tokens` member (the bench-profile binary); killed when
/// dropped.
struct Member {
    name: String,
    child: Child,
    log: PathBuf,
    url: String,
}

impl Member {
    fn start(broker: &str, group: &str, name: &str, tokens: &Path, dir: &Path) -> Member {
        let log = dir.join(format!("{group}-{name}.log"));
        let child = Command::new(CRONQ)
            .args(["run", "--schedule-topic", "--brokers", broker])
            .args(["--group", group, "--member-id", name])
            .args(["--topic", &format!("{group}.jobs")])
            .args(["--shards", &SHARDS.to_string(), "--http", "127.0.0.1:0"])
            .arg("--api-tokens")
            .arg(tokens)
            .args(["--api-rate", "1000000", "--session-timeout", "10s"])
            .env("CRONQ_LOG", "info,rskafka=warn,librdkafka=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("cronq run");
        let url = format!("http://{}", http_addr_in_log(&log, Duration::from_secs(60)));
        Member {
            name: name.to_string(),
            child,
            log,
            url,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The shards it owns now, if its API serves and it is ready.
    fn owned(&self) -> Option<BTreeSet<u32>> {
        if !self.log().contains("jobs API serving") {
            return None;
        }
        let body = ureq::get(&format!("{}/status.json", self.url))
            .timeout(Duration::from_secs(5))
            .call()
            .ok()?
            .into_string()
            .ok()?;
        let status: Value = serde_json::from_str(&body).ok()?;
        if status["readiness"]["ready"] != true {
            return None;
        }
        status["scheduleTopic"]["shards"]
            .as_array()?
            .iter()
            .map(|s| s["shard"].as_u64().map(|s| s as u32))
            .collect()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until every shard is owned exactly once and every member owns some; each member's shards.
fn settled(members: &[Member]) -> Vec<BTreeSet<u32>> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let owned: Option<Vec<BTreeSet<u32>>> = members.iter().map(Member::owned).collect();
        if let Some(owned) = owned {
            let total: usize = owned.iter().map(BTreeSet::len).sum();
            let union: BTreeSet<u32> = owned.iter().flatten().copied().collect();
            if total == SHARDS as usize
                && union.len() == SHARDS as usize
                && owned.iter().all(|o| !o.is_empty())
            {
                return owned;
            }
        }
        if Instant::now() > deadline {
            for m in members {
                eprintln!("===== {} =====\n{}", m.name, m.log());
            }
            panic!("the members did not settle within 180 s");
        }
        wait(Duration::from_millis(200));
    }
}

/// Real time passing: polls of the members' pages.
#[allow(clippy::disallowed_methods)]
fn wait(d: Duration) {
    std::thread::sleep(d);
}

// ---- HTTP ----

/// One request with the bench's token; (status, body, ms).
fn send(agent: &ureq::Agent, method: &str, url: &str, body: Option<&str>) -> (u16, String, f64) {
    let started = Instant::now();
    let req = agent
        .request(method, url)
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .timeout(Duration::from_secs(120));
    let result = match body {
        Some(b) => req.set("Content-Type", "application/json").send_string(b),
        None => req.call(),
    };
    let (status, text) = match result {
        Ok(r) => (r.status(), r.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("{method} {url}: {e}"),
    };
    (status, text, started.elapsed().as_secs_f64() * 1e3)
}

/// PUT of `job` through `base`, asserting it was written; its latency, ms.
fn put(agent: &ureq::Agent, base: &str, job: &Job) -> f64 {
    let (status, body, ms) = send(
        agent,
        "PUT",
        &format!("{base}/api/v1/jobs/{}", job.name),
        Some(&job.json),
    );
    assert!(
        status == 201 || status == 200,
        "PUT {}: {status} {body}",
        job.name
    );
    ms
}

/// PUT again while the answer is 503 (a shard's owner not known yet): a warm-up, not measured.
fn put_until_written(agent: &ureq::Agent, base: &str, job: &Job) {
    // A member's URL reaches the others in its cursor records, written once a minute.
    let deadline = Instant::now() + Duration::from_secs(150);
    loop {
        let url = format!("{base}/api/v1/jobs/{}", job.name);
        let (status, body, _) = send(agent, "PUT", &url, Some(&job.json));
        if status == 200 || status == 201 {
            return;
        }
        assert!(
            status == 503 && Instant::now() < deadline,
            "PUT {}: {status} {body}",
            job.name
        );
        wait(Duration::from_millis(200));
    }
}

// ---- raw rskafka ----

async fn raw_client(broker: &str) -> Arc<Client> {
    Arc::new(
        ClientBuilder::new(vec![broker.to_string()])
            .build()
            .await
            .expect("rskafka client"),
    )
}

/// A fresh topic of 12 partitions, compacted like the schedule topic (`store::ensure_topic`, as
/// the members make theirs), and a client of each partition.
async fn raw_topic(client: &Client, broker: &str, prefix: &str) -> Vec<Arc<PartitionClient>> {
    let topic = random_topic(prefix);
    cronq::store::ensure_topic(
        client,
        &cronq::kafka::Connection::plaintext(vec![broker.to_string()]),
        &topic,
        SHARDS,
        Some(1),
        Duration::from_millis(100),
    )
    .await
    .expect("create topic");
    let mut partitions = Vec::new();
    for p in 0..SHARDS as i32 {
        partitions.push(Arc::new(
            client
                .partition_client(topic.clone(), p, UnknownTopicHandling::Retry)
                .await
                .expect("partition client"),
        ));
    }
    partitions
}

/// One API request's worth of records, as `store::write` produces it: per partition, batches of
/// 2 000 records or 900 KiB.
type RequestBatches = Vec<(usize, Vec<Vec<Record>>)>;

fn request_batches(chunk: &[Job]) -> RequestBatches {
    let shards = ShardFilter::all(SHARDS);
    let mut by_partition: BTreeMap<usize, Vec<Vec<Record>>> = BTreeMap::new();
    let mut bytes: BTreeMap<usize, usize> = BTreeMap::new();
    for job in chunk {
        let partition = shards.shard_of(&job.name) as usize;
        let record = api_record(job);
        let size = job.name.len() + record.value.as_ref().map_or(0, Vec::len) + 64;
        let batches = by_partition.entry(partition).or_default();
        let open = bytes.entry(partition).or_default();
        if batches
            .last()
            .is_none_or(|b| b.len() >= BATCH_RECORDS || *open >= BATCH_BYTES)
        {
            batches.push(Vec::new());
            *open = 0;
        }
        *open += size;
        if let Some(b) = batches.last_mut() {
            b.push(record);
        }
    }
    by_partition.into_iter().collect()
}

/// The batch baseline: `requests` produced `clients` at a time, each request's partitions 8 at once.
async fn raw_batches(
    partitions: &[Arc<PartitionClient>],
    requests: Vec<RequestBatches>,
    clients: usize,
) -> Duration {
    let started = Instant::now();
    stream::iter(requests)
        .map(|request| async move {
            stream::iter(request)
                .map(|(partition, batches)| async move {
                    for batch in batches {
                        partitions[partition]
                            .produce(batch, Compression::NoCompression)
                            .await
                            .expect("produce");
                    }
                })
                .buffer_unordered(PARALLEL)
                .collect::<Vec<()>>()
                .await
        })
        .buffer_unordered(clients)
        .collect::<Vec<_>>()
        .await;
    started.elapsed()
}

/// The single-record baseline: `clients` tasks, each producing its share one record at a time;
/// (wall time, each produce's latency in ms).
async fn raw_singles(
    partitions: &[Arc<PartitionClient>],
    jobs: &[Job],
    clients: usize,
) -> (Duration, Vec<f64>) {
    let shards = ShardFilter::all(SHARDS);
    let mut shares: Vec<Vec<(Arc<PartitionClient>, Record)>> = vec![Vec::new(); clients];
    for (i, job) in jobs.iter().enumerate() {
        let pc = Arc::clone(&partitions[shards.shard_of(&job.name) as usize]);
        shares[i % clients].push((pc, api_record(job)));
    }
    let started = Instant::now();
    let tasks: Vec<_> = shares
        .into_iter()
        .map(|share| {
            tokio::spawn(async move {
                let mut ms = Vec::with_capacity(share.len());
                for (pc, record) in share {
                    let t = Instant::now();
                    pc.produce(vec![record], Compression::NoCompression)
                        .await
                        .expect("produce");
                    ms.push(t.elapsed().as_secs_f64() * 1e3);
                }
                ms
            })
        })
        .collect();
    let mut all = Vec::with_capacity(jobs.len());
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    (started.elapsed(), all)
}

// ---- the API side ----

/// `bodies` POSTed `clients` at a time (one connection each); the wall time. Each reply is read
/// in full within it, and checked (every job has a version) after it, as the raw side's acks are
/// not looked at within its time either.
fn api_batches(base: &str, bodies: &[String], clients: usize) -> Duration {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let replies = std::sync::Mutex::new(Vec::with_capacity(bodies.len()));
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| {
                let agent = ureq::AgentBuilder::new().build();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { break };
                    let url = format!("{base}/api/v1/jobs:batch");
                    let (status, reply, _) = send(&agent, "POST", &url, Some(body));
                    assert_eq!(status, 200, "batch {i}: {reply}");
                    replies.lock().expect("replies").push((i, reply));
                }
            });
        }
    });
    let took = started.elapsed();
    for (i, reply) in replies.into_inner().expect("replies") {
        let reply: Value = serde_json::from_str(&reply).expect("JSON reply");
        let results = reply["results"].as_array().expect("results");
        assert!(
            results.len() == n_ops(&bodies[i]) && results.iter().all(|r| r["version"].is_string()),
            "batch {i}: a job without a version"
        );
    }
    took
}

/// How many operations a batch body holds.
fn n_ops(body: &str) -> usize {
    body.matches(r#"{"op":"#).count()
}

/// `jobs` PUT by `clients` threads, each on its own keep-alive connection (opened before the
/// clock); (wall time, each PUT's latency in ms).
fn api_singles(base: &str, jobs: &[Job], clients: usize) -> (Duration, Vec<f64>) {
    let start = Barrier::new(clients + 1);
    let mut started = Instant::now();
    let mut all = Vec::with_capacity(jobs.len());
    std::thread::scope(|s| {
        let threads: Vec<_> = (0..clients)
            .map(|k| {
                let start = &start;
                s.spawn(move || {
                    let agent = ureq::AgentBuilder::new().build();
                    // Opens the connection: a GET of a job nobody wrote (404, no Kafka).
                    let (status, _, _) =
                        send(&agent, "GET", &format!("{base}/api/v1/jobs/warm-{k}"), None);
                    assert_eq!(status, 404);
                    start.wait();
                    jobs.iter()
                        .skip(k)
                        .step_by(clients)
                        .map(|job| put(&agent, base, job))
                        .collect::<Vec<f64>>()
                })
            })
            .collect();
        start.wait();
        started = Instant::now();
        for t in threads {
            all.extend(t.join().expect("client thread"));
        }
    });
    (started.elapsed(), all)
}

// ---- the run ----

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

fn mark(pass: bool) -> &'static str {
    if pass {
        "✓"
    } else {
        "✗"
    }
}

fn main() {
    let full = full_run();
    let n_jobs = env_count("API_JOBS", if full { 100_000 } else { 2_000 });
    let n_puts = env_count("API_PUTS", if full { 5_000 } else { 200 });
    let n_probes = env_count("API_FORWARD_PUTS", if full { 1_000 } else { 100 });
    let clients = env_count("API_CLIENTS", 32).max(1);
    let batch_clients = env_count("API_BATCH_CLIENTS", 1).max(1);
    let broker = BenchBroker::start(Some("API_BROKER"), "API_ENGINE");
    let address = broker.address();
    let dir = tempfile::tempdir().expect("temp dir");
    let tokens = dir.path().join("tokens.json");
    let entry = serde_json::json!({"name": TOKEN_NAME, "scope": "write", "sha256": cronq::dispatcher::api::tokens::hash_hex(TOKEN)});
    std::fs::write(
        &tokens,
        serde_json::json!({ "tokens": [entry] }).to_string(),
    )
    .expect("token file");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = rt.block_on(raw_client(&address));
    println!(
        "api on {}: {} jobs in batches of {} ({batch_clients} client{}), {} PUTs by {clients} clients, {} forward probes, {SHARDS} shards, load {}",
        broker.describe(),
        fmt_count(n_jobs),
        fmt_count(BATCH_OPS),
        if batch_clients == 1 { "" } else { "s" },
        fmt_count(n_puts),
        fmt_count(n_probes),
        load_average()
    );

    // The forward's group of two members, started first: a member learns the other's URL from its
    // cursor records, written once a minute, so they get to it while the batches and PUTs run.
    // Settled (idle) before the single member starts.
    let starting = Instant::now();
    let group2 = random_topic("bench-api-fwd");
    create_topic(&address, &format!("{group2}.jobs"), SHARDS as i32);
    let pair = [
        Member::start(&address, &group2, "m1", &tokens, dir.path()),
        Member::start(&address, &group2, "m2", &tokens, dir.path()),
    ];
    let owned = settled(&pair);
    eprintln!(
        "  two members own {:?} and {:?}, {:.1} s after their start",
        owned[0],
        owned[1],
        starting.elapsed().as_secs_f64()
    );

    // One member owning every shard.
    let group = random_topic("bench-api");
    create_topic(&address, &format!("{group}.jobs"), SHARDS as i32);
    let started_one = Instant::now();
    let member = Member::start(&address, &group, "m0", &tokens, dir.path());
    settled(std::slice::from_ref(&member));
    eprintln!(
        "  one member owns every shard {:.1} s after its start",
        started_one.elapsed().as_secs_f64()
    );
    let agent = ureq::AgentBuilder::new().build();
    put_until_written(&agent, &member.url, &jobs("warm", 1, 1)[0]);

    // 1. Batches.
    let batch_jobs = jobs("b", n_jobs, 2026);
    let bodies: Vec<String> = batch_jobs
        .chunks(BATCH_OPS)
        .map(|chunk| {
            let ops: Vec<String> = chunk
                .iter()
                .map(|j| format!(r#"{{"op":"put","job":{}}}"#, j.json))
                .collect();
            format!(r#"{{"ops":[{}]}}"#, ops.join(","))
        })
        .collect();
    let raw_batch_run = || {
        let requests: Vec<RequestBatches> =
            batch_jobs.chunks(BATCH_OPS).map(request_batches).collect();
        rt.block_on(async {
            let partitions = raw_topic(&client, &address, "bench-api-raw").await;
            raw_batches(&partitions, requests, batch_clients).await
        })
    };
    // The broker's CPU seconds over each run: what a record costs it, written raw or by the API.
    let cpu = || engine::broker_cpu_s(&address).unwrap_or(f64::NAN);
    let c0 = cpu();
    let raw_before = raw_batch_run();
    let c1 = cpu();
    let api = api_batches(&member.url, &bodies, batch_clients);
    let c2 = cpu();
    let raw_after = raw_batch_run();
    let c3 = cpu();
    let per_record = |cpu_s: f64| cpu_s * 1e6 / n_jobs as f64;
    println!(
        "  broker CPU per record written: raw {:.1} µs before, {:.1} µs after; API {:.1} µs",
        per_record(c1 - c0),
        per_record(c3 - c2),
        per_record(c2 - c1)
    );
    let raw_rate = (rate(n_jobs, raw_before) + rate(n_jobs, raw_after)) / 2.0;
    let api_rate = rate(n_jobs, api);
    let batch_ratio = api_rate / raw_rate;
    println!(
        "  batches: API {:.0} records/s ({:.2} s); raw {:.0} records/s ({:.2} s before, {:.2} s after)",
        api_rate,
        api.as_secs_f64(),
        raw_rate,
        raw_before.as_secs_f64(),
        raw_after.as_secs_f64()
    );

    // 2. Single PUTs, `clients` at once.
    let single_jobs = jobs("p", n_puts, 7);
    let raw_single_run = || {
        rt.block_on(async {
            let partitions = raw_topic(&client, &address, "bench-api-raw1").await;
            raw_singles(&partitions, &single_jobs, clients).await
        })
    };
    let (raw1_before, mut raw1_ms) = raw_single_run();
    let (api1, api1_ms) = api_singles(&member.url, &single_jobs, clients);
    let (raw1_after, raw1_ms_after) = raw_single_run();
    raw1_ms.extend(raw1_ms_after);
    let raw1_rate = (rate(n_puts, raw1_before) + rate(n_puts, raw1_after)) / 2.0;
    let api1_rate = rate(n_puts, api1);
    let (raw1, api1_lat) = (Latencies::new(raw1_ms), Latencies::new(api1_ms));
    println!(
        "  single: API {:.0} PUTs/s ({:.2} s); raw {:.0} records/s ({:.2} s before, {:.2} s after)",
        api1_rate,
        api1.as_secs_f64(),
        raw1_rate,
        raw1_before.as_secs_f64(),
        raw1_after.as_secs_f64()
    );
    // Killed: its group is not used again, and a clean stop would finish its minute first.
    drop(member);

    // 3. Forward, on the pair started first.
    let shards = ShardFilter::all(SHARDS);
    // Each member's directory learns the other's URL: a write each way, retried on 503.
    let warm = jobs("fwarm", 64, 3);
    let agents = [
        ureq::AgentBuilder::new().build(),
        ureq::AgentBuilder::new().build(),
    ];
    for (via, other) in [(0, 1), (1, 0)] {
        let theirs = warm
            .iter()
            .find(|j| owned[other].contains(&shards.shard_of(&j.name)))
            .expect("a job of the other member");
        put_until_written(&agents[via], &pair[via].url, theirs);
    }
    eprintln!(
        "  each member forwards to the other {:.1} s after their start",
        starting.elapsed().as_secs_f64()
    );
    let probes = jobs("f", n_probes, 11);
    let (mut local, mut forwarded) = (Vec::new(), Vec::new());
    for (i, job) in probes.iter().enumerate() {
        let via = i % 2;
        let ms = put(&agents[via], &pair[via].url, job);
        if owned[via].contains(&shards.shard_of(&job.name)) {
            local.push(ms);
        } else {
            forwarded.push(ms);
        }
    }
    // The forwards happened: each member logged the writes of every probe of its own shards,
    // whichever member the client sent it to.
    for (m, member) in pair.iter().enumerate() {
        let mine = probes
            .iter()
            .filter(|j| owned[m].contains(&shards.shard_of(&j.name)))
            .count();
        let log = member.log();
        let written = log
            .lines()
            .filter(|l| l.contains("job written through the API") && l.contains(" job=f-"))
            .count();
        assert_eq!(
            written, mine,
            "{}: probes of its shards written",
            member.name
        );
    }
    let after = settled(&pair);
    if after != owned {
        println!("  (the shards moved during the forward probes: {owned:?} → {after:?})");
    }
    let (local, forwarded) = (Latencies::new(local), Latencies::new(forwarded));
    let (n_local, n_fwd) = (local.0.len(), forwarded.0.len());

    println!();
    println!(
        "| jobs API on {} | cronq API | baseline | API ÷ baseline | target |",
        broker.describe()
    );
    println!("|---|---|---|---|---|");
    println!(
        "| batches: {} jobs, {} a request, {batch_clients} client{} (records/s) | {:.0} | raw rskafka, same records and batches: {:.0} | {:.2} | ≥ 0.8 {} |",
        fmt_count(n_jobs),
        fmt_count(BATCH_OPS),
        if batch_clients == 1 { "" } else { "s" },
        api_rate,
        raw_rate,
        batch_ratio,
        mark(batch_ratio >= 0.8)
    );
    println!(
        "| single PUTs: {} jobs, {clients} clients (records/s) | {:.0} | raw single-record produce, {clients} tasks: {:.0} | {:.2} | (reported) |",
        fmt_count(n_puts),
        api1_rate,
        raw1_rate,
        api1_rate / raw1_rate
    );
    println!(
        "| single PUTs: latency p50 | {:.1} ms | {:.1} ms | {:+.1} ms | (reported) |",
        api1_lat.q(0.5),
        raw1.q(0.5),
        api1_lat.q(0.5) - raw1.q(0.5)
    );
    let p99_gap = api1_lat.q(0.99) - raw1.q(0.99);
    println!(
        "| single PUTs: latency p99 | {:.1} ms | {:.1} ms | {:+.1} ms | ≤ +50 ms {} |",
        api1_lat.q(0.99),
        raw1.q(0.99),
        p99_gap,
        mark(p99_gap <= 50.0)
    );
    println!(
        "| forward: PUT latency p50, one client ({n_fwd} forwarded, {n_local} local) | {:.1} ms | the member's own shard: {:.1} ms | {:+.1} ms | (reported) |",
        forwarded.q(0.5),
        local.q(0.5),
        forwarded.q(0.5) - local.q(0.5)
    );
    println!(
        "| forward: PUT latency p99 | {:.1} ms | {:.1} ms | {:+.1} ms | (reported) |",
        forwarded.q(0.99),
        local.q(0.99),
        forwarded.q(0.99) - local.q(0.99)
    );
    println!("load after the run: {}", load_average());
    drop(pair);
}
