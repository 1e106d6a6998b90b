//! `cronq monitor` at scale (issue 22, "Scale"): ingest of N dispatch+result pairs against a bare
//! rdkafka consumer reading the same records in the same run, and the history queries on the
//! database ingest built.
//!
//! ```text
//!  N pairs over J jobs (a schedule file's jobs, slots back from now) ──► rskafka produce, once:
//!    JobMessage v1 (schedule::record::encode, the dispatcher's encoder)   ──► <run>.jobs
//!    JobResult v1  (wire::result::result_bytes, the worker's)             ──► <run>.results
//!    DeadLetter    (wire::result::letter_bytes) for each failed run       ──► <run>.dlq
//!
//!  1. ingest   bare BaseConsumer, hand-assigned, the monitor's consumer settings, writes nothing
//!              `cronq monitor` (bench binary, fresh --db): start ──► positions == every record
//!              bare again (after), so neither side has the fresher broker to itself
//!              the store path in-process: same consumer settings, batches and wire decoders,
//!              `RunStore::ingest` into a fresh SqliteStore; thread CPU split poll/decode/SQLite
//!  2. query    the store's `runs` (what `cronq history` calls) in-process, and `cronq history JOB
//!              --json` / `cronq runs --status failed --since 1h --json` as processes, beside
//!              `cronq --version` (the same binary's start and exit)
//! ```
//!
//! The end of ingest is read from the database itself: the monitor commits each batch's rows and
//! the offsets it reached in one transaction, so when the `positions` table's next offsets add up
//! to every record produced, every run and result is in. The bench polls that table (a few
//! integer rows) every 20 ms on a connection of its own, and counts the rows once after the end.
//! A monitor that has not finished within `MONITOR_LIMIT` seconds (120; 10 in the smoke pass) is
//! stopped and its rate is taken over what it committed; the queries then run on the store path's
//! database, which always holds every run (the bench checks both databases' rows when complete).
//! Beside it the bench times the watermark query the monitor's refresh makes for every partition
//! it reads, from a consumer that has read everything and from an idle client.
//!
//! `cargo bench --bench monitor` runs 1 000 000 pairs over 1 000 jobs; `cargo test --benches` a
//! 20 000-pair smoke pass. `MONITOR_PAIRS`, `MONITOR_JOBS`, `MONITOR_PARTITIONS` (12),
//! `MONITOR_QUERIES` (200) change the size. The broker: tansu's memory engine when `TANSU` names a
//! tansu built with `dynostore` (`MONITOR_ENGINE` picks another `--storage-engine`), else the test
//! broker (tansu, sqlite). `MONITOR_KEEP=DIR` keeps the databases and the monitor's log there;
//! `MONITOR_PERF=FILE` records the monitor with `perf record` into FILE.

#[path = "common/mod.rs"]
mod bench_common;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/engine.rs"]
mod engine;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench_common::{env_count, fmt_count, full_run, load_average, Rng};
use chrono::{DateTime, DurationRound, Utc};
use common::{create_topic, random_topic, CRONQ};
use cronq::monitor::model::RunState;
use cronq::monitor::store::{RunQuery, RunStore, SqliteStore};
use cronq::schedule::{Job, LoadOptions};
use cronq::wire::result::{
    letter_bytes, result_bytes, DeadLetter, DeadReason, JobResult, Origin, Status,
};
use cronq::wire::JobMessage;
use engine::BenchBroker;
use futures_util::stream::{self, StreamExt};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::record::Record;

/// Records per produce request (per partition), as the dispatcher's producer batches them.
const PRODUCE_BATCH: usize = 2_000;
/// Pairs generated and produced at a time (bounds the bench's own memory).
const CHUNK_PAIRS: usize = 50_000;
/// The worker ids results name.
const WORKERS: usize = 8;

/// Real time passing: polls of the database and of the monitor process.
#[allow(clippy::disallowed_methods)]
fn wait(d: Duration) {
    std::thread::sleep(d);
}

// ---- the records ----

const TEAMS: [&str; 10] = [
    "billing", "search", "ledger", "reports", "mailer", "etl", "backup", "auth", "catalog",
    "metrics",
];
const TASKS: [&str; 10] = [
    "sync", "rollup", "export", "cleanup", "reindex", "digest", "snapshot", "refresh", "rotate",
    "audit",
];

/// Every 50th job is flaky: one attempt (`maxAttempts: 1`), and every third of its runs fails.
fn flaky(job: usize) -> bool {
    job % 50 == 7
}

/// `jobs` jobs as a schedule file writes them (`billing-rollup-07`, …): 60 % every minute, 30 %
/// every 5 minutes, 10 % every 15, so that each job's slots reach back at most 15 × (N / J)
/// minutes (10 days at 1M pairs over 1 000 jobs: inside the default `--history 30d`).
fn schedule_json(jobs: usize) -> String {
    let mut out = String::from("{\"jobs\":[\n");
    for i in 0..jobs {
        let (team, task) = (TEAMS[i % 10], TASKS[(i / 10) % 10]);
        let cron = match i % 10 {
            0..6 => "* * * * *",
            6..9 => "*/5 * * * *",
            _ => "*/15 * * * *",
        };
        let extra = if flaky(i) {
            r#","maxAttempts":1,"timeout":"10m""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r#"{{"jobName":"{}","priority":{},"job":"/opt/jobs/{team}/{task}.sh --shard {}","cronTime":"{cron}"{extra}}}{}"#,
            name_of(i),
            i % 5,
            i / 100,
            if i + 1 == jobs { "" } else { "," }
        );
    }
    out.push_str("]}\n");
    out
}

fn name_of(i: usize) -> String {
    format!("{}-{}-{:02}", TEAMS[i % 10], TASKS[(i / 10) % 10], i / 100)
}

/// The minutes between slots of job `i` (its `cronTime` above).
fn every_minutes(i: usize) -> i64 {
    match i % 10 {
        0..6 => 1,
        6..9 => 5,
        _ => 15,
    }
}

/// What one chunk of pairs becomes: records per (topic kind, partition).
#[derive(Default)]
struct Chunk {
    jobs: BTreeMap<i32, Vec<Record>>,
    results: BTreeMap<i32, Vec<Record>>,
    letters: BTreeMap<i32, Vec<Record>>,
}

/// The topics of a run.
struct Topics {
    jobs: String,
    results: String,
    dlq: String,
    control: String,
    partitions: i32,
}

/// Pair `p` of the run: job `p % J`, its `p / J`-th slot back from `last` (so every job has its
/// newest slots in the last hour). Returns whether the run failed.
fn pair(
    p: usize,
    jobs: &[Job],
    last: DateTime<Utc>,
    topics: &Topics,
    rng: &mut Rng,
    chunk: &mut Chunk,
) -> bool {
    let j = p % jobs.len();
    let back = (p / jobs.len()) as i64;
    let spec = &jobs[j].spec;
    let slot = last - chrono::Duration::minutes(back * every_minutes(j));
    let dispatched = slot + chrono::Duration::milliseconds(3 + rng.below(40) as i64);
    let record = cronq::schedule::record::encode(spec, slot, &topics.jobs, dispatched);
    let partition = cronq::wire::partition_for(&record.key, topics.partitions);
    chunk.jobs.entry(partition).or_default().push(Record {
        key: Some(record.key.clone()),
        value: Some(record.value),
        headers: record.headers,
        timestamp: record.timestamp,
    });
    let failed = flaky(j) && back % 3 == 0;
    let started = dispatched + chrono::Duration::milliseconds(20 + rng.below(200) as i64);
    let took = 50 + rng.below(if failed { 600_000 } else { 30_000 });
    let finished = started + chrono::Duration::milliseconds(took as i64);
    let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let message = JobMessage::for_slot(spec, slot);
    let result = JobResult {
        v: 1,
        dispatch_id: message.dispatch_id.clone(),
        job_name: spec.name.clone(),
        scheduled_at: message.scheduled_at.clone(),
        attempt: 1,
        status: if failed {
            Status::Failed
        } else {
            Status::Succeeded
        },
        exit_code: Some(if failed { 2 } else { 0 }),
        started_at: stamp(started),
        finished_at: stamp(finished),
        duration_ms: took,
        stdout_tail: format!("{} rows processed\n", rng.below(100_000)),
        stderr_tail: if failed {
            "error: upstream returned 503 Service Unavailable\n".into()
        } else {
            String::new()
        },
        worker: format!("worker-{}", rng.below(WORKERS as u64)),
    };
    let key = spec.name.as_bytes().to_vec();
    chunk.results.entry(partition).or_default().push(Record {
        key: Some(key.clone()),
        value: Some(result_bytes(&result)),
        headers: BTreeMap::new(),
        timestamp: finished,
    });
    if failed {
        let letter = DeadLetter {
            v: 1,
            reason: DeadReason::AttemptsExhausted,
            origin: Origin {
                topic: topics.jobs.clone(),
                partition,
                // Not the real offset (the bench does not wait for it); nothing reads it here.
                offset: 0,
            },
            worker: result.worker.clone(),
            message: Some(message),
            last_result: Some(result),
            raw: None,
            error: None,
            original: None,
        };
        chunk.letters.entry(partition).or_default().push(Record {
            key: Some(key),
            value: Some(letter_bytes(&letter)),
            headers: BTreeMap::new(),
            timestamp: finished,
        });
    }
    failed
}

/// Produces `by_partition` to `topic`, [`PRODUCE_BATCH`] records a request, 8 partitions at once.
async fn produce(
    client: &Arc<rskafka::client::Client>,
    topic: &str,
    by_partition: BTreeMap<i32, Vec<Record>>,
) {
    stream::iter(by_partition)
        .map(|(partition, records)| async move {
            let pc = client
                .partition_client(topic.to_string(), partition, UnknownTopicHandling::Retry)
                .await
                .expect("partition client");
            let mut records = records.into_iter().peekable();
            while records.peek().is_some() {
                let batch: Vec<Record> = records.by_ref().take(PRODUCE_BATCH).collect();
                pc.produce(batch, Compression::NoCompression)
                    .await
                    .expect("produce");
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<()>>()
        .await;
}

// ---- the broker ----

// ---- 1. ingest ----

/// CPU time of this process so far (user + system), for the bare consumer's cost.
fn process_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the struct we pass; the clock id is valid.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_PROCESS_CPUTIME_ID) failed");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// A bare rdkafka consumer with the monitor's ingest settings (`monitor::ingest::Ingest::run`:
/// a group id it never joins, no commits, no offset store, earliest, `fetch.wait.max.ms` 200,
/// librdkafka's log at info), every partition of `topics` assigned by hand from the beginning. It
/// polls until it has seen `total` records, touching each payload's length and nothing else.
/// (wall time, this process's CPU time over it).
fn bare(broker: &str, topics: &[&str], partitions: i32, total: u64) -> (Duration, Duration) {
    let (took, cpu, _) = bare_probed(broker, topics, partitions, total, false);
    (took, cpu)
}

/// The monitor's consumer settings (`monitor::ingest::Ingest::run`) under the name `client`.
fn ingest_config(broker: &str, client: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker)
        .set("group.id", client)
        .set("client.id", client)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "200")
        .set_log_level(RDKafkaLogLevel::Info);
    config
}

/// A consumer with [`ingest_config`], every partition of `topics` assigned from the beginning.
fn assigned(broker: &str, client: &str, topics: &[&str], partitions: i32) -> BaseConsumer {
    let consumer: BaseConsumer = ingest_config(broker, client).create().expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("partition");
        }
    }
    consumer.assign(&tpl).expect("assign");
    consumer
}

/// Median ms of one `fetch_watermarks` call (what the monitor's refresh makes for each partition
/// it reads, every 5 s), over every partition of `topics`.
fn watermark_ms(consumer: &BaseConsumer, topics: &[&str], partitions: i32) -> f64 {
    let mut ms = Vec::new();
    for topic in topics {
        for p in 0..partitions {
            let t = Instant::now();
            let _ = consumer.fetch_watermarks(topic, p, Duration::from_secs(5));
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Latencies::new(ms).q(0.5)
}

/// [`bare`], and with `probe` the median watermark query of the consumer once it has read
/// everything (its fetches then wait on the broker) and of an idle client beside it.
fn bare_probed(
    broker: &str,
    topics: &[&str],
    partitions: i32,
    total: u64,
    probe: bool,
) -> (Duration, Duration, Option<(f64, f64)>) {
    let cpu = process_cpu();
    let started = Instant::now();
    let consumer = assigned(broker, "cronq-monitor-bench-bare", topics, partitions);
    let (mut seen, mut bytes) = (0u64, 0usize);
    while seen < total {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                seen += 1;
                bytes += m.payload().map_or(0, <[u8]>::len);
            }
            Some(Err(e)) => eprintln!("  bare consumer: {e}"),
            None => {}
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "bare consumer stalled at {seen}/{total}"
        );
    }
    let took = started.elapsed();
    let cpu = process_cpu() - cpu;
    std::hint::black_box(bytes);
    let probed = probe.then(|| {
        let idle: BaseConsumer = ingest_config(broker, "cronq-monitor-bench-idle")
            .create()
            .expect("consumer");
        (
            watermark_ms(&consumer, topics, partitions),
            watermark_ms(&idle, topics, partitions),
        )
    });
    drop(consumer);
    (took, cpu, probed)
}

/// The monitor process, killed when dropped (its perf recorder stopped first).
struct Monitor {
    child: Child,
    log: PathBuf,
    perf: Option<Child>,
}

impl Monitor {
    fn start(broker: &str, topics: &Topics, group: &str, db: &Path, log: PathBuf) -> Monitor {
        let child = Command::new(CRONQ)
            .args(["monitor", "--brokers", broker, "--db"])
            .arg(db)
            .args(["--topic", &topics.jobs, "--results-topic", &topics.results])
            .args(["--dlq-topic", &topics.dlq, "--group", group])
            .args(["--http", "127.0.0.1:0"])
            .env("CRONQ_LOG", "info,librdkafka=warn,rskafka=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("cronq monitor");
        let perf = std::env::var("MONITOR_PERF").ok().map(|out| {
            Command::new("perf")
                .args(["record", "-F", "499", "--per-thread", "-o", &out, "-p"])
                .arg(child.id().to_string())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("perf record")
        });
        Monitor { child, log, perf }
    }

    fn status(&self, field: &str) -> u64 {
        engine::status_bytes(self.child.id(), field)
    }

    /// User + system CPU of the whole process (threads that ended included).
    fn cpu(&self) -> Duration {
        engine::cpu_time(self.child.id())
    }

    /// CPU time by thread kind (the thread's name without a trailing number), ms, of the threads
    /// alive now.
    fn cpu_by_thread(&self) -> BTreeMap<String, f64> {
        let mut by = BTreeMap::new();
        let tasks = format!("/proc/{}/task", self.child.id());
        for t in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
            let name = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
            let ns = std::fs::read_to_string(t.path().join("schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
                .unwrap_or(0);
            let kind = name
                .trim()
                .trim_end_matches(|c: char| c.is_ascii_digit() || c == '-')
                .to_string();
            *by.entry(kind).or_insert(0.0) += ns as f64 / 1e6;
        }
        by
    }
}

impl Monitor {
    /// Stops perf (it writes its file on SIGINT), then kills the monitor.
    fn stop(&mut self) {
        if let Some(mut perf) = self.perf.take() {
            // SAFETY: signalling our own child process: perf writes its file on SIGINT.
            unsafe {
                libc::kill(perf.id() as libc::pid_t, libc::SIGINT);
            }
            let _ = perf.wait();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The next offsets the monitor committed, summed over `topics` (0 before its database exists).
fn committed(db: &Path, conn: &mut Option<rusqlite::Connection>, topics: &[&str]) -> i64 {
    if conn.is_none() && db.exists() {
        *conn = rusqlite::Connection::open_with_flags(
            db,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .ok();
    }
    let Some(c) = conn else { return 0 };
    let sql = format!(
        "SELECT COALESCE(SUM(next_offset), 0) FROM positions WHERE topic IN ({})",
        topics
            .iter()
            .map(|t| format!("'{t}'"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    c.prepare_cached(&sql)
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .unwrap_or(0)
}

fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).expect(sql)
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// What the store path took: wall time, and this thread's CPU in each phase.
struct StorePath {
    took: Duration,
    poll: Duration,
    decode: Duration,
    store: Duration,
    process: Duration,
    batches: usize,
}

/// The monitor's ingest loop without its refresh, in-process: a consumer with the monitor's
/// settings, batches gathered as `Ingest::run` gathers them (up to 2 000 records, the first poll
/// waiting 200 ms, then until the queue is empty), each record decoded with the wire decoders
/// `Ingest::decode` uses, each batch applied with `RunStore::ingest` on a fresh `SqliteStore` with
/// the positions it reached. Thread CPU is split into polling, decoding and the store.
fn store_path(broker: &str, topics: &Topics, total: u64, db: &Path) -> StorePath {
    use cronq::monitor::judge::{self, Defaults};
    use cronq::monitor::store::{Ingested, Source};
    use rdkafka::message::Headers;
    let read = [
        topics.jobs.as_str(),
        topics.results.as_str(),
        topics.dlq.as_str(),
    ];
    let mut store = SqliteStore::open(db, Default::default()).expect("store");
    let defaults = Defaults::default();
    let deadline = |_: &str, slot: DateTime<Utc>, message: Option<&JobMessage>| {
        judge::deadline(slot, None, message, &defaults)
    };
    let process = process_cpu();
    let started = Instant::now();
    let consumer = assigned(
        broker,
        "cronq-monitor-bench-store",
        &read,
        topics.partitions,
    );
    let (mut poll, mut decode, mut apply) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let (mut seen, mut batches) = (0u64, 0usize);
    while seen < total {
        let mut batch: Vec<Ingested> = Vec::with_capacity(2_000);
        let mut moved: BTreeMap<(String, i32), i64> = BTreeMap::new();
        let mut wait = Duration::from_millis(200);
        let gathering = Instant::now();
        while batch.len() < 2_000 && gathering.elapsed() < Duration::from_millis(100) + wait {
            let t = bench_common::thread_cpu();
            let polled = consumer.poll(wait);
            poll += bench_common::thread_cpu() - t;
            let m = match polled {
                None => break,
                Some(Err(e)) => panic!("store path: {e}"),
                Some(Ok(m)) => m,
            };
            let t = bench_common::thread_cpu();
            let source = Source {
                topic: m.topic().to_string(),
                partition: m.partition(),
                offset: m.offset(),
            };
            let value = m.payload().unwrap_or_default();
            let at = m
                .timestamp()
                .to_millis()
                .and_then(DateTime::from_timestamp_millis)
                .unwrap_or_else(Utc::now);
            let ingested = if source.topic == topics.jobs {
                let message = cronq::wire::job::parse_message(m.key().unwrap_or_default(), value)
                    .expect("a JobMessage");
                let header = |name: &str| {
                    m.headers().and_then(|h| {
                        h.iter()
                            .find(|h| h.key == name)
                            .and_then(|h| h.value)
                            .map(|v| String::from_utf8_lossy(v).into_owned())
                    })
                };
                Ingested::Dispatched {
                    message,
                    at,
                    by: header(cronq::wire::HEADER_BY),
                    reason: header(cronq::wire::HEADER_REASON),
                    source: source.clone(),
                }
            } else if source.topic == topics.results {
                Ingested::Reported(serde_json::from_slice::<JobResult>(value).expect("a JobResult"))
            } else {
                Ingested::DeadLettered(Box::new(
                    serde_json::from_slice::<DeadLetter>(value).expect("a DeadLetter"),
                ))
            };
            batch.push(ingested);
            moved.insert((source.topic, source.partition), source.offset + 1);
            decode += bench_common::thread_cpu() - t;
            seen += 1;
            wait = Duration::ZERO;
        }
        if !moved.is_empty() {
            let t = bench_common::thread_cpu();
            store
                .ingest(&batch, &moved, Utc::now(), &deadline)
                .expect("RunStore::ingest");
            apply += bench_common::thread_cpu() - t;
            batches += 1;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3600),
            "the store path stalled at {seen}/{total}"
        );
    }
    let took = started.elapsed();
    drop(consumer);
    StorePath {
        took,
        poll,
        decode,
        store: apply,
        process: process_cpu() - process,
        batches,
    }
}

// ---- 2. queries ----

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

/// One run of the bench binary's `cronq` with `args`: (wall ms, lines on stdout).
fn cli(args: &[&str]) -> (f64, usize) {
    let started = Instant::now();
    let out = Command::new(CRONQ)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .expect("cronq");
    let ms = started.elapsed().as_secs_f64() * 1e3;
    assert!(out.status.success(), "cronq {args:?}: {}", out.status);
    (
        ms,
        out.stdout
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
    )
}

fn mark(pass: bool) -> &'static str {
    if pass {
        "✓"
    } else {
        "✗"
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let full = full_run();
    let n_pairs = env_count("MONITOR_PAIRS", if full { 1_000_000 } else { 20_000 });
    let n_jobs = env_count("MONITOR_JOBS", 1_000).clamp(1, 1_000);
    let partitions = env_count("MONITOR_PARTITIONS", 12) as i32;
    let n_queries = env_count("MONITOR_QUERIES", if full { 200 } else { 20 }).max(1);
    let broker = BenchBroker::start(None, "MONITOR_ENGINE");
    let address = broker.address();
    let dir = tempfile::tempdir().expect("temp dir");
    println!(
        "monitor on {}: {} dispatch+result pairs over {n_jobs} jobs, {partitions} partitions a topic, load {}",
        broker.describe(),
        fmt_count(n_pairs),
        load_average()
    );

    // The records.
    let run = random_topic("bench-monitor");
    let topics = Topics {
        jobs: format!("{run}.jobs"),
        results: format!("{run}.results"),
        dlq: format!("{run}.dlq"),
        control: cronq::wire::control::control_topic(&run),
        partitions,
    };
    for t in [&topics.jobs, &topics.results, &topics.dlq] {
        create_topic(&address, t, partitions);
    }
    create_topic(&address, &topics.control, 1);
    let schedule = cronq::schedule::parse(
        schedule_json(n_jobs).as_bytes(),
        Path::new("bench.json"),
        LoadOptions::default(),
    )
    .expect("the bench's schedule");
    let jobs = schedule.jobs;
    // The newest slot: the last whole quarter hour, so every job (1, 5, 15 minutes) has a slot there.
    let last = Utc::now()
        .duration_trunc(chrono::Duration::minutes(15))
        .expect("a quarter hour");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = Arc::new(
        rt.block_on(
            cronq::kafka::Connection::plaintext(vec![address.clone()])
                .connect(Duration::from_millis(50)),
        ),
    );
    let mut rng = Rng(2026);
    let (mut failed, mut letters) = (0u64, 0u64);
    let produced = Instant::now();
    for from in (0..n_pairs).step_by(CHUNK_PAIRS) {
        let mut chunk = Chunk::default();
        for p in from..(from + CHUNK_PAIRS).min(n_pairs) {
            failed += u64::from(pair(p, &jobs, last, &topics, &mut rng, &mut chunk));
        }
        letters += chunk.letters.values().map(|v| v.len() as u64).sum::<u64>();
        rt.block_on(async {
            produce(&client, &topics.jobs, chunk.jobs).await;
            produce(&client, &topics.results, chunk.results).await;
            produce(&client, &topics.dlq, chunk.letters).await;
        });
    }
    let total = 2 * n_pairs as u64 + letters;
    println!(
        "  produced {} records ({} JobMessages, {} JobResults, {letters} dead letters of the {failed} failed runs) in {:.1} s",
        total,
        n_pairs,
        n_pairs,
        produced.elapsed().as_secs_f64()
    );
    let read_topics = [
        topics.jobs.as_str(),
        topics.results.as_str(),
        topics.dlq.as_str(),
    ];

    // 1. Ingest: bare, monitor, bare, then the store path in-process.
    let (bare_before, bare_cpu_before, probed) =
        bare_probed(&address, &read_topics, partitions, total, true);
    let (wm_consuming, wm_idle) = probed.unwrap_or_default();
    eprintln!("  bare consumer: {:.2} s", bare_before.as_secs_f64());
    let limit = Duration::from_secs(env_count("MONITOR_LIMIT", if full { 120 } else { 10 }) as u64);
    let db = dir.path().join("monitor.db");
    let mut monitor = Monitor::start(&address, &topics, &run, &db, dir.path().join("monitor.log"));
    let started = Instant::now();
    let mut conn = None;
    let mut last_print = Instant::now();
    let ingested = loop {
        let at = committed(&db, &mut conn, &read_topics);
        if at >= total as i64 || started.elapsed() >= limit {
            break at as u64;
        }
        if let Ok(Some(status)) = monitor.child.try_wait() {
            panic!(
                "cronq monitor exited ({status}):\n{}",
                std::fs::read_to_string(&monitor.log).unwrap_or_default()
            );
        }
        if last_print.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  monitor: {at}/{total} after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            last_print = Instant::now();
        }
        wait(Duration::from_millis(20));
    };
    let took = started.elapsed();
    let finished = ingested >= total;
    let cpu = monitor.cpu();
    let threads = monitor.cpu_by_thread();
    let peak = monitor.status("VmHWM:");
    drop(conn);
    if !finished {
        // Stopped here: the queries run on the store path's database instead.
        monitor.stop();
    }
    let (bare_after, bare_cpu_after) = bare(&address, &read_topics, partitions, total);
    eprintln!("  bare consumer again: {:.2} s", bare_after.as_secs_f64());
    let store_db = dir.path().join("store-path.db");
    let path = store_path(&address, &topics, total, &store_db);
    eprintln!("  store path: {:.2} s", path.took.as_secs_f64());

    // What the databases hold.
    let verify = |db: &Path| {
        let check = rusqlite::Connection::open(db).expect("db");
        let runs = count(&check, "SELECT COUNT(*) FROM runs");
        let attempts = count(&check, "SELECT COUNT(*) FROM attempts");
        let succeeded = count(
            &check,
            "SELECT COUNT(*) FROM runs WHERE state = 'succeeded'",
        );
        let failed_rows = count(&check, "SELECT COUNT(*) FROM runs WHERE state = 'failed'");
        let alerts = count(&check, "SELECT COUNT(*) FROM alerts");
        let pages = count(&check, "PRAGMA page_count") * count(&check, "PRAGMA page_size");
        assert_eq!(runs, n_pairs as i64, "one run per dispatch");
        assert_eq!(attempts, n_pairs as i64, "one attempt per result");
        assert_eq!(
            (succeeded, failed_rows),
            (n_pairs as i64 - failed as i64, failed as i64),
            "every run ended as its result says"
        );
        let wal = PathBuf::from(format!("{}-wal", db.display()));
        println!(
            "  {}: {runs} runs ({succeeded} succeeded, {failed_rows} failed), {attempts} attempts, {alerts} alerts; {:.0} MB file + {:.0} MB WAL ({:.0} MB of pages, {:.0} bytes a run)",
            db.file_name().unwrap_or_default().to_string_lossy(),
            file_size(db) as f64 / 1e6,
            file_size(&wal) as f64 / 1e6,
            pages as f64 / 1e6,
            pages as f64 / n_pairs as f64
        );
    };
    verify(&store_db);
    if finished {
        verify(&db);
    }
    let query_db = if finished {
        db.clone()
    } else {
        store_db.clone()
    };

    // 2. Queries, on the monitor's database while it keeps running (its judge passes), or on the
    // store path's when the monitor did not finish.
    let names: Vec<String> = (0..n_jobs).map(name_of).collect();
    let picks: Vec<&str> = {
        let mut rng = Rng(22);
        (0..n_queries)
            .map(|_| names[rng.below(n_jobs as u64) as usize].as_str())
            .collect()
    };
    let mut store = SqliteStore::open_existing(&query_db).expect("the database");
    let history = |job: &str| RunQuery {
        job: Some(job.to_string()),
        ..RunQuery::default()
    };
    // One warm-up query: the pages of the index and the table come into the page cache.
    let _ = store.runs(&history(picks[0])).expect("runs");
    let mut in_process = Vec::with_capacity(n_queries);
    let mut rows = 0;
    for job in &picks {
        let q = history(job);
        let t = Instant::now();
        let got = store.runs(&q).expect("runs");
        in_process.push(t.elapsed().as_secs_f64() * 1e3);
        rows += got.len();
    }
    let per_history = rows / n_queries;
    let since = RunQuery {
        status: Some(RunState::Failed),
        since: Some(Utc::now() - chrono::Duration::hours(1)),
        ..RunQuery::default()
    };
    let mut failed_in_process = Vec::with_capacity(n_queries);
    let mut failed_rows_seen = 0;
    for _ in 0..n_queries {
        let t = Instant::now();
        failed_rows_seen = store.runs(&since).expect("runs").len();
        failed_in_process.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let plan = |sql: &str| -> String {
        let conn = rusqlite::Connection::open(&query_db).expect("db");
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .expect("plan");
        let details: Vec<String> = stmt
            .query_map([], |r| r.get::<_, String>(3))
            .expect("plan")
            .filter_map(Result::ok)
            .collect();
        details.join("; ")
    };
    let history_plan =
        plan("SELECT * FROM runs WHERE job = 'x' ORDER BY slot DESC, dispatch_id DESC LIMIT 100");
    let failed_plan = plan(
        "SELECT * FROM runs WHERE state = 'failed' AND slot >= 0 ORDER BY slot DESC, dispatch_id DESC LIMIT 100",
    );
    drop(store);

    let db_arg = query_db.display().to_string();
    let mut spawn_only = Vec::with_capacity(n_queries);
    let mut history_cli = Vec::with_capacity(n_queries);
    let mut runs_cli = Vec::with_capacity(n_queries);
    let mut cli_rows = 0;
    for job in &picks {
        // Interleaved, so that a neighbour's load weighs on the three alike.
        spawn_only.push(cli(&["--version"]).0);
        let (ms, lines) = cli(&["history", job, "--json", "--db", &db_arg]);
        history_cli.push(ms);
        cli_rows += lines;
        runs_cli.push(
            cli(&[
                "runs", "--status", "failed", "--since", "1h", "--json", "--db", &db_arg,
            ])
            .0,
        );
    }
    assert_eq!(cli_rows, rows, "the command prints what the store returns");
    let cpu_after_queries = monitor.cpu();
    drop(monitor);
    if let Ok(keep) = std::env::var("MONITOR_KEEP") {
        let _ = std::fs::create_dir_all(&keep);
        for f in [
            "monitor.db",
            "monitor.db-wal",
            "monitor.log",
            "store-path.db",
            "store-path.db-wal",
        ] {
            let _ = std::fs::copy(dir.path().join(f), Path::new(&keep).join(f));
        }
    }

    // The figures.
    let rate = |n: u64, d: Duration| n as f64 / d.as_secs_f64();
    let bare_rate = (rate(total, bare_before) + rate(total, bare_after)) / 2.0;
    let monitor_rate = rate(ingested, took);
    let ratio = monitor_rate / bare_rate;
    let path_rate = rate(total, path.took);
    let bare_cpu = (bare_cpu_before + bare_cpu_after).as_secs_f64() / 2.0;
    println!();
    println!(
        "| ingest on {}, {} pairs ({total} records) | cronq monitor | bare rdkafka consumer (before / after) | ÷ bare | target |",
        broker.describe(),
        fmt_count(n_pairs)
    );
    println!("|---|---|---|---|---|");
    println!(
        "| records/s, the process's start to the last record's run in its database | {:.0} ({}) | {:.0} ({:.2} s / {:.2} s) | {ratio:.3} | ≥ 0.8 {} |",
        monitor_rate,
        if finished {
            format!("{:.1} s", took.as_secs_f64())
        } else {
            format!(
                "did not finish: {ingested} of {total} records in the {:.0} s limit",
                took.as_secs_f64()
            )
        },
        bare_rate,
        bare_before.as_secs_f64(),
        bare_after.as_secs_f64(),
        mark(ratio >= 0.8)
    );
    println!(
        "| CPU time | {:.1} s ({:.0} µs a record) | {:.2} s ({:.1} µs a record; the bench process) | {:.1}× a record | (reported) |",
        cpu.as_secs_f64(),
        cpu.as_secs_f64() * 1e6 / ingested.max(1) as f64,
        bare_cpu,
        bare_cpu * 1e6 / total as f64,
        (cpu.as_secs_f64() / ingested.max(1) as f64) / (bare_cpu / total as f64)
    );
    println!(
        "| peak RSS (VmHWM) | {:.0} MB | | | (reported) |",
        peak as f64 / 1e6
    );
    println!(
        "| the store path in-process (the monitor's consumer settings, batches and decoders, `RunStore::ingest`; no refresh) | {:.0} records/s ({:.1} s, {} batches) | | {:.3} | (breakdown) |",
        path_rate,
        path.took.as_secs_f64(),
        path.batches,
        path_rate / bare_rate
    );
    println!(
        "  store path CPU: {:.1} s in all; its thread: poll {:.1} s, decode {:.1} s, RunStore::ingest (SQLite) {:.1} s ({:.1} µs a record)",
        path.process.as_secs_f64(),
        path.poll.as_secs_f64(),
        path.decode.as_secs_f64(),
        path.store.as_secs_f64(),
        path.store.as_secs_f64() * 1e6 / total as f64
    );
    println!(
        "  watermark query (the monitor's refresh makes one per partition read, {} here, every 5 s), median: {wm_consuming:.1} ms from a consumer that has read everything, {wm_idle:.1} ms from an idle client",
        read_topics.len() as i32 * partitions + 1
    );
    let by: Vec<String> = threads
        .iter()
        .filter(|(_, ms)| **ms >= 1.0)
        .map(|(k, ms)| format!("{k} {:.1} s", ms / 1e3))
        .collect();
    println!(
        "  monitor CPU by thread (threads alive at the end): {}; the end read from its positions table, polled every 20 ms",
        by.join(", ")
    );
    println!(
        "  queries on {}",
        if finished {
            "the monitor's database"
        } else {
            "the store path's database (the monitor did not finish)"
        }
    );
    println!();
    let (h, hc, s, r, f) = (
        Latencies::new(in_process),
        Latencies::new(history_cli),
        Latencies::new(spawn_only),
        Latencies::new(runs_cli),
        Latencies::new(failed_in_process),
    );
    println!(
        "| query, {} runs, {n_queries} queries each | p50 | p99 | target |",
        fmt_count(n_pairs)
    );
    println!("|---|---|---|---|");
    println!(
        "| history of one job ({per_history} runs returned, {} distinct jobs), the store's `runs` in-process | {:.2} ms | {:.2} ms | p99 ≤ 10 ms {} |",
        {
            let mut p = picks.clone();
            p.sort_unstable();
            p.dedup();
            p.len()
        },
        h.q(0.5),
        h.q(0.99),
        mark(h.q(0.99) <= 10.0)
    );
    println!(
        "| `cronq history JOB --json`, the process end to end | {:.1} ms | {:.1} ms | (reported) |",
        hc.q(0.5),
        hc.q(0.99)
    );
    println!(
        "| baseline: `cronq --version`, the same binary's start and exit | {:.1} ms | {:.1} ms | |",
        s.q(0.5),
        s.q(0.99)
    );
    println!(
        "| `runs --status failed --since 1h` ({failed_rows_seen} runs returned), in-process | {:.2} ms | {:.2} ms | p99 ≤ 10 ms {} |",
        f.q(0.5),
        f.q(0.99),
        mark(f.q(0.99) <= 10.0)
    );
    println!(
        "| `cronq runs --status failed --since 1h --json`, end to end | {:.1} ms | {:.1} ms | (reported) |",
        r.q(0.5),
        r.q(0.99)
    );
    println!("  plans: history: {history_plan}; failed since: {failed_plan}");
    println!(
        "  monitor CPU during the queries (its judge passes): {:.1} s; load after the run: {}",
        cpu_after_queries.saturating_sub(cpu).as_secs_f64(),
        load_average()
    );
    judge_pass(full, dir.path());
}

/// The missed-slot pass over a large schedule (`MONITOR_SCHEDULE_JOBS`, 1M; 20 000 in the smoke
/// pass): the realistic mix of benches/common, no dispatch at all, so every slot of a judged minute
/// is written as `missed` with its alert (the worst case). One pass judges one minute; ten minutes
/// are judged one after another on a fresh database, timed in the thread's CPU.
fn judge_pass(full: bool, dir: &Path) {
    use cronq::monitor::store::{Pass, Routes};
    let n = env_count(
        "MONITOR_SCHEDULE_JOBS",
        if full { 1_000_000 } else { 20_000 },
    );
    let schedule = bench_common::schedule(n, bench_common::Mix::Realistic, 2026);
    let db = dir.join("judge.db");
    let mut store = SqliteStore::open(
        &db,
        Routes(vec![cronq::monitor::model::AlertKind::ALL.to_vec()]),
    )
    .expect("open the judge database");
    let start = DateTime::<Utc>::from_timestamp(1_804_000_000 / 60 * 60, 0).expect("instant");
    store.first_start(start).expect("first start");
    let missed_after = Duration::from_secs(180);
    let mut passes = Vec::new();
    let mut written = 0u64;
    for minute in 1..=10 {
        let now = start + chrono::Duration::minutes(minute) + chrono::Duration::seconds(180);
        let cpu = bench_common::thread_cpu();
        store
            .judge(&Pass {
                now,
                missed_after,
                jobs: &schedule.jobs,
            })
            .expect("judge pass");
        passes.push((bench_common::thread_cpu() - cpu).as_secs_f64() * 1000.0);
        written = count_missed(&db);
    }
    passes.sort_by(f64::total_cmp);
    println!(
        "| the missed-slot pass, one minute judged over {} jobs, every slot missed | CPU {:.0} ms median, {:.0} ms max of 10 minutes | {} missed runs written in all | (reported) |",
        fmt_count(n),
        passes[passes.len() / 2],
        passes[passes.len() - 1],
        written
    );
}

fn count_missed(db: &Path) -> u64 {
    let conn = rusqlite::Connection::open(db).expect("open");
    count(&conn, "SELECT COUNT(*) FROM runs WHERE state = 'missed'") as u64
}
