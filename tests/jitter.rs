//! A job's `jitter` end to end, on a real broker (tansu) with real `cronq run` and `cronq worker`
//! processes. The dispatcher runs on a drill clock (`--drill-clock`, 10× faster), so a minute
//! lasts six real seconds; record timestamps (real time, stamped at produce) are mapped back to
//! drill time to compare them with `notBefore`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use common::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

/// cronq's default `--partitions` of the job topic.
const PARTITIONS: i32 = 3;

/// Drill speed: a drill minute is 6 real seconds.
const SPEED: i64 = 10;

/// The jittered jobs' `"jitter"`, in ms.
const JITTER_MS: i64 = 30_000;

const JITTERED: usize = 40;

#[derive(Clone, Copy)]
struct Drill {
    epoch: i64,
}

impl Drill {
    fn new() -> Drill {
        Drill {
            epoch: Utc::now().timestamp(),
        }
    }

    fn setting(&self) -> String {
        format!("{SPEED}x@{}", self.epoch)
    }

    /// Drill time at real instant `real_ms`.
    fn at(&self, real_ms: i64) -> DateTime<Utc> {
        let ms = self.epoch * 1000 + (real_ms - self.epoch * 1000) * SPEED;
        Utc.timestamp_millis_opt(ms).unwrap()
    }

    fn now(&self) -> DateTime<Utc> {
        self.at(Utc::now().timestamp_millis())
    }

    fn minute(&self) -> i64 {
        self.now().timestamp().div_euclid(60)
    }

    /// Polls until drill time reaches `second` of drill minute `minute`.
    fn wait_until(&self, minute: i64, second: i64) {
        let target = minute * 60 + second;
        let deadline = Instant::now() + Duration::from_secs(300);
        while self.now().timestamp() < target {
            assert!(Instant::now() < deadline, "drill clock stuck");
            pause();
        }
    }
}

fn schedule_json() -> String {
    let mut jobs: Vec<String> = (0..JITTERED)
        .map(|i| {
            format!(r#"{{"jobName":"spread-{i:02}","job":"run {i}","cronTime":"* * * * *","jitter":"30s"}}"#)
        })
        .collect();
    jobs.push(r#"{"jobName":"plain","job":"run","cronTime":"* * * * *"}"#.to_string());
    format!(r#"{{"jobs":[{}]}}"#, jobs.join(","))
}

struct Dispatcher {
    child: Child,
    log: PathBuf,
}

impl Dispatcher {
    fn start(
        broker: &str,
        topic: &str,
        schedule: &Path,
        drill: Drill,
        name: &str,
        dir: &Path,
    ) -> Dispatcher {
        let log = dir.join(format!("{name}.log"));
        let child = Command::new(CRONQ)
            .env("CRONQ_HTTP", "127.0.0.1:0")
            .args(["run", "--brokers", broker, "--topic", topic])
            .args(["--group", &format!("g-{topic}"), "--member-id", name])
            .args([
                "--tick",
                "100ms",
                "--retry-backoff",
                "50ms",
                "--session-timeout",
                "6s",
            ])
            .args(["--drill-clock", &drill.setting()])
            .arg("--schedule")
            .arg(schedule)
            .env("CRONQ_LOG", "info,rskafka=warn,librdkafka=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn cronq run");
        Dispatcher { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn wait_log(&mut self, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !self.log().contains(needle) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "cronq run exited ({status}) before {needle:?}:\n{}",
                    self.log()
                );
            }
            assert!(Instant::now() < deadline, "no {needle:?}:\n{}", self.log());
            pause();
        }
    }

    fn terminate(&mut self) {
        // SAFETY: signalling our own child process.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let status = wait_exit(&mut self.child, Duration::from_secs(60), &self.log);
        assert!(
            status.success(),
            "cronq run exited with {status}:\n{}",
            self.log()
        );
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// One record as read back, with its record timestamp (stamped by the producer, real time).
struct Arrived {
    value: serde_json::Value,
    headers: HashMap<String, String>,
    timestamp_ms: i64,
}

impl Arrived {
    fn text(&self, field: &str) -> &str {
        self.value[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} in {}", self.value))
    }

    fn slot(&self) -> DateTime<Utc> {
        self.text("scheduledAt").parse().expect("scheduledAt")
    }

    fn minute(&self) -> i64 {
        self.slot().timestamp().div_euclid(60)
    }

    fn not_before(&self) -> Option<DateTime<Utc>> {
        self.value["notBefore"]
            .as_str()
            .map(|t| t.parse().expect("notBefore"))
    }
}

/// Every record of `topic` up to the high watermarks, with timestamps.
fn read_all(broker: &str, topic: &str) -> Vec<Arrived> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", format!("verify-{topic}"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("rdkafka consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut remaining = HashMap::new();
    for p in 0..PARTITIONS {
        let (_, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .expect("watermarks");
        if high > 0 {
            remaining.insert(p, high);
        }
    }
    let mut out = Vec::new();
    while !remaining.is_empty() {
        assert!(
            Instant::now() < deadline,
            "records still missing: {remaining:?}"
        );
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        if remaining
            .get(&m.partition())
            .is_some_and(|high| m.offset() + 1 >= *high)
        {
            remaining.remove(&m.partition());
        }
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        let v = String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned();
                        (h.key.to_string(), v)
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Arrived {
            value: serde_json::from_slice(m.payload().unwrap_or_default()).expect("JSON"),
            headers,
            timestamp_ms: m.timestamp().to_millis().expect("a record timestamp"),
        });
    }
    out
}

/// The offset the README documents: Kafka's murmur2 of the dispatchId, mod the jitter in ms.
fn documented_offset_ms(dispatch_id: &str) -> i64 {
    i64::from(murmur2::murmur2(
        dispatch_id.as_bytes(),
        murmur2::KAFKA_SEED,
    )) % JITTER_MS
}

/// Each record is its slot's: `scheduledAt` and `dispatchId` name the slot, and a jittered job's
/// `notBefore` (value and header alike) is the slot plus the documented offset; the plain job has
/// neither.
fn assert_slot_and_not_before(r: &Arrived) {
    let name = r.text("jobName");
    let slot = r.slot();
    assert_eq!(slot.timestamp() % 60, 0, "{}", r.value);
    assert_eq!(
        r.text("dispatchId"),
        format!("{name}@{}", r.text("scheduledAt"))
    );
    if name == "plain" {
        assert!(r.value.get("notBefore").is_none(), "{}", r.value);
        assert!(!r.headers.contains_key("cronq-not-before"));
        return;
    }
    let nb = r
        .not_before()
        .expect("a jittered job's record has notBefore");
    let offset = documented_offset_ms(r.text("dispatchId"));
    assert_eq!(
        nb,
        slot + chrono::Duration::milliseconds(offset),
        "{}",
        r.value
    );
    assert_eq!(
        r.headers.get("cronq-not-before").map(String::as_str),
        r.value["notBefore"].as_str()
    );
}

/// Three minutes of 40 jobs with a 30 s jitter and one without, then SIGTERM 8 s into a minute:
/// the jittered records leave at their notBefore (never before), spread over the window, while
/// `scheduledAt` stays the slot; the records still waiting at SIGTERM are sent at once (early,
/// carrying their notBefore), and every shard's final cursor covers that minute.
#[test]
fn jittered_records_spread_over_the_window_and_leave_at_their_not_before() {
    let broker = Broker::start();
    let topic = random_topic("jitter");
    let (dir, schedule) = schedule_file(&schedule_json());
    let drill = Drill::new();
    let mut a = Dispatcher::start(&broker.address(), &topic, &schedule, drill, "a", dir.path());
    a.wait_log("taking over a shard");
    let m0 = drill.minute();
    drill.wait_until(m0 + 3, 8);
    let stopped = drill.now();
    a.terminate();
    let log = a.log();
    assert!(
        log.contains("records waiting for their jitter offset sent early"),
        "{log}"
    );

    let records = read_all(&broker.address(), &topic);
    let mut copies: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for r in &records {
        assert_slot_and_not_before(r);
        *copies
            .entry((r.text("jobName").to_string(), r.minute()))
            .or_default() += 1;
    }
    // Every job, every minute from the first whole one to the one cut by SIGTERM, exactly once.
    for minute in m0 + 1..=m0 + 3 {
        for name in (0..JITTERED)
            .map(|i| format!("spread-{i:02}"))
            .chain(["plain".to_string()])
        {
            assert_eq!(
                copies.get(&(name.clone(), minute)),
                Some(&1),
                "{name} at minute {minute}"
            );
        }
    }

    let mut flushed = 0;
    let mut spread: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    for r in records
        .iter()
        .filter(|r| (m0 + 1..=m0 + 3).contains(&r.minute()))
    {
        let produced = drill.at(r.timestamp_ms);
        let after_slot = (produced - r.slot()).num_milliseconds();
        let Some(nb) = r.not_before() else {
            assert!(
                after_slot < 5_000,
                "plain left {after_slot} ms after its slot"
            );
            continue;
        };
        if nb > stopped {
            // Still waiting at SIGTERM: sent then, before its time.
            assert!(
                produced < nb,
                "{}: produced {produced}, notBefore {nb}",
                r.value
            );
            flushed += 1;
            continue;
        }
        // Drill time is real time ×10: a record's millisecond timestamp is 10 ms coarse in it.
        let early = (nb - produced).num_milliseconds();
        assert!(
            early <= 20,
            "{} left {early} ms before its notBefore",
            r.value
        );
        assert!(
            -early < 10_000,
            "{} left {} ms after its notBefore",
            r.value,
            -early
        );
        spread.entry(r.minute()).or_default().push(after_slot);
    }
    assert!(flushed > 0, "some records waited at SIGTERM");
    // The whole minute m0 + 2 was live: its 40 produce times cover the 30 s window.
    let whole = &spread[&(m0 + 2)];
    assert_eq!(whole.len(), JITTERED);
    let (first, last) = (whole.iter().min().unwrap(), whole.iter().max().unwrap());
    assert!(
        last - first >= 15_000,
        "produce times spread over {} ms only: {whole:?}",
        last - first
    );
    let buckets: std::collections::BTreeSet<i64> = whole.iter().map(|ms| ms / 5_000).collect();
    assert!(
        buckets.len() >= 5,
        "40 records in only {} of the 6 five-second buckets",
        buckets.len()
    );

    // The minute cut by SIGTERM was settled with its flushed records: every cursor is there.
    let out = Command::new(CRONQ)
        .env("CRONQ_HTTP", "127.0.0.1:0")
        .args([
            "status",
            "--brokers",
            &broker.address(),
            "--group",
            &format!("g-{topic}"),
            "--json",
        ])
        .args(["--drill-clock", &drill.setting()])
        .output()
        .expect("cronq status");
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let shards = view["shards"].as_array().expect("shards");
    assert!(!shards.is_empty());
    for s in shards {
        let cursor: DateTime<Utc> = s["cursor"].as_str().expect("cursor").parse().unwrap();
        assert_eq!(cursor.timestamp().div_euclid(60), m0 + 3, "{s}");
    }
}

/// kill -9 of the dispatcher 8 s into a jittered minute: the records of that minute still waiting
/// are lost with it, but the minute was not settled, so the next member re-sends it from the
/// cursor. Every slot arrives; the copies of a slot are the same record (dispatchId, notBefore).
#[test]
fn a_crash_in_a_jittered_minute_is_re_sent_from_the_cursor_with_the_same_ids() {
    let broker = Broker::start();
    let topic = random_topic("jitter-crash");
    let (dir, schedule) = schedule_file(&schedule_json());
    let drill = Drill::new();
    let mut a = Dispatcher::start(&broker.address(), &topic, &schedule, drill, "a", dir.path());
    a.wait_log("taking over a shard");
    let m0 = drill.minute();
    drill.wait_until(m0 + 2, 8);
    a.kill9();
    let mut b = Dispatcher::start(&broker.address(), &topic, &schedule, drill, "b", dir.path());
    b.wait_log("taking over a shard");
    let resumed = drill.minute();
    drill.wait_until(resumed + 1, 40);
    b.terminate();

    let records = read_all(&broker.address(), &topic);
    let mut copies: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    for r in &records {
        assert_slot_and_not_before(r);
        copies
            .entry(r.text("dispatchId").to_string())
            .or_default()
            .push(r.value["notBefore"].as_str().map(str::to_string));
    }
    for minute in m0 + 1..=resumed {
        let slot = Utc.timestamp_opt(minute * 60, 0).unwrap();
        for name in (0..JITTERED)
            .map(|i| format!("spread-{i:02}"))
            .chain(["plain".to_string()])
        {
            let id = format!("{name}@{}", cronq::wire::slot_text(slot));
            let got = copies
                .get(&id)
                .unwrap_or_else(|| panic!("{id} never arrived"));
            assert!(
                got.windows(2).all(|w| w[0] == w[1]),
                "{id}: copies differ: {got:?}"
            );
        }
    }
    // The crash minute's early records were sent by a, then again by b from the cursor.
    let crash_slot = cronq::wire::slot_text(Utc.timestamp_opt((m0 + 2) * 60, 0).unwrap());
    let resent = copies
        .iter()
        .filter(|(id, c)| id.ends_with(&crash_slot) && c.len() > 1)
        .count();
    assert!(
        resent > 0,
        "no record of the crash minute arrived twice:\n{}",
        b.log()
    );
}

/// Creates `topic` (tansu does not auto-create).
fn create_topic(broker: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .expect("admin client");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let results = runtime
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .expect("create topic");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating {t}: {e}"));
    }
}

/// Produces `(key, value)` records to partition 0 of `topic`, in order.
fn produce(broker: &str, topic: &str, records: &[(String, serde_json::Value)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("acks", "all")
        .create()
        .expect("producer");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        for (key, value) in records {
            let payload = serde_json::to_vec(value).unwrap();
            producer
                .send(
                    FutureRecord::to(topic)
                        .key(key)
                        .payload(&payload)
                        .partition(0),
                    Duration::from_secs(10),
                )
                .await
                .map_err(|(e, _)| e)
                .expect("produce");
        }
    });
}

/// A run whose notBefore is 3 s away waits for it, and a job behind it in the same partition runs
/// meanwhile; a message without notBefore (an old dispatcher's) runs at once.
#[test]
fn a_worker_does_not_start_a_run_before_its_not_before_and_runs_others_meanwhile() {
    use std::os::unix::fs::PermissionsExt;
    let broker = Broker::start();
    let topic = random_topic("jitter-worker");
    create_topic(&broker.address(), &topic, 1);
    let handlers = tempfile::tempdir().unwrap();
    let ran = handlers.path().join("ran.txt");
    let stamp = handlers.path().join("stamp");
    std::fs::write(
        &stamp,
        "#!/bin/sh\necho \"$CRONQ_DISPATCH_ID $(date +%s%3N)\" >> \"$1\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&stamp, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(handlers.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = handlers.path().join("worker.log");
    let mut worker = Command::new(CRONQ)
        .env("CRONQ_HTTP", "127.0.0.1:0")
        .args([
            "worker",
            "--brokers",
            &broker.address(),
            "--topic",
            &topic,
            "--group",
            &format!("w-{topic}"),
        ])
        .arg("--handlers")
        .arg(handlers.path())
        .args([
            "--results-topic",
            &format!("{topic}.results"),
            "--dlq-topic",
            &format!("{topic}.dlq"),
        ])
        .args([
            "--commit-interval",
            "100ms",
            "--session-timeout",
            "6s",
            "--shutdown-grace",
            "5s",
        ])
        .env("CRONQ_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn cronq worker");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("partitions assigned")
    {
        assert!(Instant::now() < deadline, "worker never got its partition");
        pause();
    }

    let now = Utc::now();
    let slot = Utc
        .timestamp_opt(now.timestamp() - now.timestamp() % 60, 0)
        .unwrap();
    let slot_text = cronq::wire::slot_text(slot);
    let not_before = now + chrono::Duration::seconds(3);
    let message = |name: &str, not_before: Option<DateTime<Utc>>| {
        let mut v = serde_json::json!({
            "v": 1, "jobName": name, "priority": 0,
            "job": format!("stamp {}", ran.display()), "cronTime": "* * * * *",
            "scheduledAt": slot_text, "dispatchId": format!("{name}@{slot_text}"),
        });
        if let Some(nb) = not_before {
            v["notBefore"] = cronq::wire::ids::not_before_text(nb).into();
        }
        (name.to_string(), v)
    };
    produce(
        &broker.address(),
        &topic,
        &[message("later", Some(not_before)), message("now", None)],
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let runs = loop {
        let lines: Vec<String> = std::fs::read_to_string(&ran)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect();
        if lines.len() >= 2 {
            break lines;
        }
        assert!(
            Instant::now() < deadline,
            "runs: {lines:?}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        pause();
    };
    let at: HashMap<&str, i64> = runs
        .iter()
        .map(|l| {
            let (id, ms) = l.split_once(' ').unwrap();
            (id.split('@').next().unwrap(), ms.parse().unwrap())
        })
        .collect();
    let nb_ms = not_before.timestamp_millis();
    assert!(
        at["later"] >= nb_ms,
        "later started {} ms before its notBefore",
        nb_ms - at["later"]
    );
    assert!(at["now"] < nb_ms, "now waited behind later's notBefore");
    assert_eq!(runs.len(), 2, "{runs:?}");
    // SAFETY: signalling our own child process.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(worker.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = wait_exit(&mut worker, Duration::from_secs(30), &log);
    assert!(
        status.success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// `cronq next --job NAME --jitter J` prints each slot with its notBefore, the documented offset
/// after it; without `--job` the flag is a usage error that says why.
#[test]
fn next_prints_each_slots_not_before_for_a_job_and_jitter() {
    let out = Command::new(CRONQ)
        .args([
            "next",
            "*/5 * * * *",
            "--job",
            "sync-eu-17",
            "--jitter",
            "90s",
        ])
        .args(["--after", "2026-11-30T12:00:00Z", "-n", "2"])
        .output()
        .expect("cronq next");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: Vec<String> = ["2026-11-30T12:05:00Z", "2026-11-30T12:10:00Z"]
        .iter()
        .map(|slot| {
            let id = format!("sync-eu-17@{slot}");
            let h = murmur2::murmur2(id.as_bytes(), murmur2::KAFKA_SEED);
            let at: DateTime<Utc> = slot.parse().unwrap();
            let nb = at + chrono::Duration::milliseconds(i64::from(h % 90_000));
            format!(
                "{slot}\tnot before {}",
                nb.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            )
        })
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .collect::<Vec<_>>(),
        expected
    );
    // The README's example of this job's 12:05 slot.
    assert!(
        expected[0].ends_with("2026-11-30T12:06:04.880Z"),
        "{}",
        expected[0]
    );

    let out = Command::new(CRONQ)
        .args(["next", "*/5 * * * *", "--jitter", "90s"])
        .output()
        .expect("cronq next");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--jitter") && err.contains("needs --job"),
        "{err}"
    );
}
