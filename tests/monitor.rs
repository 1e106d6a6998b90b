//! `cronq monitor` against the real broker, with real dispatcher, worker and monitor processes on
//! a drill clock (a "minute" lasts 6 real seconds): a failing job is `failed` with one alert in the
//! outbox and a fix is `recovered`; a job no worker runs is `late`; lost slots are `missed` and a
//! paused job's are `skipped_by_rule`; a monitor killed mid-stream resumes without duplicates or
//! losses; `cronq history` agrees with the results topic as a client we did not write reads it
//! (kafka-python, which scripts/monitor_tools.sh installs into target/monitor-venv).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// Partitions of the topics the tests create.
const PARTITIONS: i32 = 3;

/// A `cronq monitor` child; killed when dropped.
struct Monitor {
    child: Child,
    log: PathBuf,
}

impl Monitor {
    fn start(broker: &str, topic: &str, db: &Path, drill: Drill, extra: &[&str]) -> Monitor {
        let log = db.with_extension(format!("{}.log", chrono::Utc::now().timestamp_millis()));
        let child = Command::new(CRONQ)
            .args(["monitor", "--brokers", broker, "--topic", topic])
            .args(["--results-topic", &format!("{topic}.results")])
            .args(["--dlq-topic", &format!("{topic}.dlq")])
            .args(["--group", &format!("g-{topic}"), "--http", "127.0.0.1:0"])
            .arg("--db")
            .arg(db)
            .args(["--drill-clock", &drill.setting()])
            .args(extra)
            .env("CRONQ_LOG", "info,librdkafka=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn cronq monitor");
        Monitor { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A webhook receiver: a plain HTTP/1.1 server on a free port that answers 200 to every POST and
/// keeps each request's headers (lowercase names) and body.
struct Receiver {
    url: String,
    got: std::sync::Arc<std::sync::Mutex<Vec<Request>>>,
}

/// A request's headers (lowercase names) and body.
type Request = (BTreeMap<String, String>, Vec<u8>);

impl Receiver {
    fn start() -> Receiver {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = std::sync::Arc::clone(&got);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut headers = BTreeMap::new();
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    continue;
                }
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = line.trim_end().split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                let len: usize = headers
                    .get("content-length")
                    .and_then(|l| l.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                keep.lock().unwrap().push((headers, body));
                let _ = reader.get_mut().write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            }
        });
        Receiver { url, got }
    }

    fn requests(&self) -> Vec<Request> {
        self.got.lock().unwrap().clone()
    }
}

/// One number from the monitor's database (read while it runs: WAL).
fn count(db: &Path, sql: &str) -> i64 {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return -1;
    };
    conn.busy_timeout(Duration::from_secs(5)).ok();
    conn.query_row(sql, [], |r| r.get(0)).unwrap_or(-1)
}

/// `cronq <args>` with `--db`; stdout, which must be all it printed there.
fn cronq_db(db: &Path, args: &[&str]) -> String {
    let out = Command::new(CRONQ)
        .args(args)
        .arg("--db")
        .arg(db)
        .stdin(Stdio::null())
        .output()
        .expect("run cronq");
    assert!(
        out.status.success(),
        "cronq {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

/// Every record value of `topic`, from its start to its high watermarks, as kafka-python (from
/// PyPI: a client cronq did not write; scripts/monitor_tools.sh installs it) reads them.
fn python_read(broker: &str, topic: &str) -> Vec<serde_json::Value> {
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/monitor-venv/bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/monitor_tools.sh (a virtualenv with kafka-python)",
        python.display()
    );
    const READ: &str = r#"
import json, sys, time
from kafka import KafkaConsumer, TopicPartition
broker, topic = sys.argv[1], sys.argv[2]
consumer = KafkaConsumer(bootstrap_servers=broker, enable_auto_commit=False, group_id=None)
deadline = time.time() + 60
partitions = None
while not partitions:
    assert time.time() < deadline, "no partitions for " + topic
    partitions = consumer.partitions_for_topic(topic)
parts = [TopicPartition(topic, p) for p in sorted(partitions)]
consumer.assign(parts)
consumer.seek_to_beginning(*parts)
end = consumer.end_offsets(parts)
while any(consumer.position(tp) < end[tp] for tp in parts):
    assert time.time() < deadline, "did not reach the end of " + topic
    for records in consumer.poll(timeout_ms=500).values():
        for record in records:
            print(json.dumps(json.loads(record.value)))
"#;
    let out = Command::new(python)
        .args(["-c", READ, broker, topic])
        .stdin(Stdio::null())
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "kafka-python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

fn setup_topics(broker: &str, topic: &str) {
    for t in [
        topic.to_string(),
        format!("{topic}.results"),
        format!("{topic}.dlq"),
    ] {
        create_topic(broker, &t, PARTITIONS);
    }
}

#[test]
fn a_job_failing_every_attempt_is_failed_with_one_alert_and_its_fix_is_recovered_and_history_agrees_with_the_results_topic(
) {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("mon-fail");
    setup_topics(&address, &topic);
    let dir = tempfile::tempdir().unwrap();
    let fixed = dir.path().join("fixed");
    let (_sdir, schedule) = schedule_file(&format!(
        r#"{{"jobs":[{{"jobName":"flaky","job":"flaky {}","cronTime":"* * * * *","maxAttempts":2,"deadline":"1h"}}]}}"#,
        fixed.display()
    ));
    let handlers = handlers(&[(
        "flaky",
        r#"if [ -f "$1" ]; then echo ok; exit 0; fi; echo "boom" >&2; exit 1"#,
    )]);
    let drill = Drill::new(10);
    let db = dir.path().join("monitor.db");
    let receiver = Receiver::start();
    let secret = dir.path().join("webhook.secret");
    std::fs::write(&secret, "s3cret-shared-with-the-receiver\n").unwrap();
    let mut member = Dispatcher::start(&address, &topic, &schedule, drill, "d1", dir.path(), &[]);
    // Only the failures and the fix: no slot missed before the group dispatches, none late.
    member.wait_log("taking over a shard", Duration::from_secs(90));
    let mut monitor = Monitor::start(
        &address,
        &topic,
        &db,
        drill,
        &[
            "--schedule",
            schedule.to_str().unwrap(),
            "--webhook",
            &receiver.url,
            "--webhook-events",
            "failed,recovered",
            "--webhook-secret-file",
            secret.to_str().unwrap(),
        ],
    );
    let worker = Worker::start(
        &address,
        &topic,
        &format!("w-{topic}"),
        handlers.path(),
        &["--drill-clock", &drill.setting()],
        dir.path().join("worker.log"),
    );
    wait_for(
        "a failed run",
        Duration::from_secs(120),
        || count(&db, "SELECT COUNT(*) FROM runs WHERE state = 'failed'") >= 1,
        || monitor.log(),
    );
    std::fs::write(&fixed, "").unwrap();
    wait_for(
        "a recovered alert",
        Duration::from_secs(120),
        || count(&db, "SELECT COUNT(*) FROM alerts WHERE kind = 'recovered'") == 1,
        || format!("{}\n{}", monitor.log(), worker.log()),
    );
    worker.stop();
    // Let the last reports in, then stop reading.
    let results = consume_all(
        &address,
        &format!("{topic}.results"),
        PARTITIONS,
        0,
        Duration::from_secs(30),
    );
    wait_for(
        "every result ingested",
        Duration::from_secs(60),
        || count(&db, "SELECT COUNT(*) FROM attempts") == results.len() as i64,
        || monitor.log(),
    );
    monitor.kill9();

    // One failed alert per failed run, one outbox row each (one webhook wants `failed`).
    let failed = count(&db, "SELECT COUNT(*) FROM runs WHERE state = 'failed'");
    assert!(failed >= 1);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM alerts WHERE kind = 'failed'"),
        failed
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM outbox o JOIN alerts a ON a.id = o.alert_id WHERE a.kind = 'failed'"
        ),
        failed
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM alerts WHERE kind = 'recovered'"),
        1
    );

    // The receiver got each alert once, signed: HMAC-SHA256 of "<timestamp>.<body>" with the
    // shared secret, as docs/contracts.md tells a receiver to check it.
    let alerts = count(&db, "SELECT COUNT(*) FROM alerts") as usize;
    wait_for(
        "every alert delivered",
        Duration::from_secs(60),
        || receiver.requests().len() >= alerts,
        || monitor.log(),
    );
    let requests = receiver.requests();
    let mut ids = std::collections::BTreeSet::new();
    for (headers, body) in &requests {
        use hmac::Mac;
        let ts = &headers["x-cronq-timestamp"];
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(b"s3cret-shared-with-the-receiver").unwrap();
        mac.update(format!("{ts}.").as_bytes());
        mac.update(body);
        let expected: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(headers["x-cronq-signature"], format!("v1={expected}"));
        let alert: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(alert["id"], headers["x-cronq-id"].as_str());
        assert_eq!(alert["job"], "flaky");
        assert!(
            ids.insert(headers["x-cronq-id"].clone()),
            "delivered twice: {alert}"
        );
    }
    let kinds: Vec<String> = requests
        .iter()
        .map(|(_, b)| serde_json::from_slice::<serde_json::Value>(b).unwrap()["kind"].to_string())
        .collect();
    assert_eq!(requests.len(), alerts, "{kinds:?}");
    assert!(kinds.contains(&"\"recovered\"".to_string()), "{kinds:?}");

    // `cronq history --json` against the results topic as kafka-python reads it: every
    // dispatchId with its highest attempt and its final status.
    let mut from_topic: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for r in python_read(&address, &format!("{topic}.results")) {
        let id = r["dispatchId"].as_str().unwrap().to_string();
        let attempt = r["attempt"].as_u64().unwrap();
        let status = r["status"].as_str().unwrap().to_string();
        let entry = from_topic.entry(id).or_insert((0, String::new()));
        if attempt >= entry.0 {
            *entry = (attempt, status);
        }
    }
    assert_eq!(
        from_topic.len(),
        results
            .iter()
            .map(|r| r.value["dispatchId"].as_str().unwrap())
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        "kafka-python and rdkafka read the same runs"
    );
    let history = cronq_db(&db, &["history", "flaky", "--json", "--limit", "10000"]);
    let mut from_history: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for line in history.lines() {
        let run: serde_json::Value = serde_json::from_str(line).unwrap();
        if run["attempts"].as_u64() == Some(0) {
            continue; // dispatched, not reported yet
        }
        // The handler only succeeds or fails: a run not succeeded (failed, or still running or
        // late with a retry pending when the worker stopped) last reported `failed`.
        let status = match run["state"].as_str().unwrap() {
            "succeeded" => "succeeded",
            _ => "failed",
        };
        from_history.insert(
            run["dispatchId"].as_str().unwrap().to_string(),
            (run["attempts"].as_u64().unwrap(), status.to_string()),
        );
    }
    assert_eq!(from_history, from_topic, "history:\n{history}");
}

#[test]
fn a_job_no_worker_runs_is_late_after_its_deadline() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("mon-late");
    setup_topics(&address, &topic);
    let dir = tempfile::tempdir().unwrap();
    let (_sdir, schedule) = schedule_file(
        r#"{"jobs":[{"jobName":"nobody","job":"x","cronTime":"* * * * *","deadline":"2m"}]}"#,
    );
    let drill = Drill::new(10);
    let db = dir.path().join("monitor.db");
    let monitor = Monitor::start(
        &address,
        &topic,
        &db,
        drill,
        &["--schedule", schedule.to_str().unwrap()],
    );
    let _member = Dispatcher::start(&address, &topic, &schedule, drill, "d1", dir.path(), &[]);
    wait_for(
        "a late run",
        Duration::from_secs(120),
        || count(&db, "SELECT COUNT(*) FROM runs WHERE state = 'late'") >= 1,
        || monitor.log(),
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let (slot, deadline): (i64, i64) = conn
        .query_row(
            "SELECT slot, deadline FROM runs WHERE state = 'late' ORDER BY slot LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(deadline - slot, 120_000, "the job's own deadline");
    assert!(drill.now().timestamp_millis() >= deadline);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM alerts WHERE kind = 'late'"),
        count(&db, "SELECT COUNT(*) FROM runs WHERE state = 'late'")
    );
}

/// A JobMessage v1 of `job`'s slot `minute` as the dispatcher writes it.
fn message(job: &str, minute: u32) -> (String, Vec<u8>) {
    let slot = common::slot(minute)
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let id = format!("{job}@{slot}");
    let value = serde_json::json!({"v":1,"jobName":job,"priority":0,"job":"x","cronTime":"* * * * *","scheduledAt":slot,"dispatchId":id});
    (id, value.to_string().into_bytes())
}

#[test]
fn a_monitor_killed_mid_stream_resumes_without_duplicate_rows_or_alerts_and_loses_no_run() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("mon-kill");
    setup_topics(&address, &topic);
    // 40 jobs × 60 slots: every run dispatched (plus a re-send of each first slot), every third
    // one dead-lettered after failing.
    let mut jobs_records = Vec::new();
    let mut dlq_records = Vec::new();
    let mut dead = 0;
    for j in 0..40 {
        let job = format!("job-{j:02}");
        for minute in 0..60 {
            let (id, value) = message(&job, minute);
            let record = |value: Vec<u8>| Record {
                key: job.as_bytes().to_vec(),
                value,
                partition: Some(cronq::wire::partition_for(job.as_bytes(), PARTITIONS)),
                headers: vec![],
            };
            jobs_records.push(record(value.clone()));
            if minute == 0 {
                jobs_records.push(record(value.clone()));
            }
            if (j + minute) % 3 == 0 {
                dead += 1;
                let message: serde_json::Value = serde_json::from_slice(&value).unwrap();
                let last = serde_json::json!({"v":1,"dispatchId":id,"jobName":job,"scheduledAt":message["scheduledAt"],
                    "attempt":3,"status":"failed","exitCode":1,"startedAt":"2026-11-26T00:00:01.000Z",
                    "finishedAt":"2026-11-26T00:00:02.000Z","durationMs":1000,"stdoutTail":"","stderrTail":"boom","worker":"w"});
                let letter = serde_json::json!({"v":1,"reason":"attempts_exhausted","topic":topic,"partition":0,"offset":0,
                    "message":message,"lastResult":last,"raw":null,"error":null,"worker":"w"});
                dlq_records.push(record(letter.to_string().into_bytes()));
            }
        }
    }
    // A record that is not a JobMessage: counted and skipped.
    jobs_records.push(Record {
        key: b"junk".to_vec(),
        value: b"{not json".to_vec(),
        partition: Some(0),
        headers: vec![],
    });
    produce(&address, &topic, &jobs_records);
    produce(&address, &format!("{topic}.dlq"), &dlq_records);

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("monitor.db");
    let drill = Drill::new(1);
    let mut first = Monitor::start(&address, &topic, &db, drill, &[]);
    wait_for(
        "some runs ingested",
        Duration::from_secs(60),
        || count(&db, "SELECT COUNT(*) FROM runs") > 0,
        || first.log(),
    );
    first.kill9();
    let at_kill = count(&db, "SELECT COUNT(*) FROM runs");
    eprintln!(
        "runs in the database when the monitor was killed: {at_kill} of {}",
        40 * 60
    );
    let second = Monitor::start(&address, &topic, &db, drill, &[]);
    wait_for(
        "every run and dead letter ingested",
        Duration::from_secs(90),
        || {
            count(&db, "SELECT COUNT(*) FROM runs") == 40 * 60
                && count(&db, "SELECT COUNT(*) FROM runs WHERE state = 'failed'") == dead
        },
        || second.log(),
    );
    assert!(at_kill <= 40 * 60);
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM alerts WHERE kind = 'failed'"),
        dead
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM (SELECT dispatch_id FROM attempts GROUP BY dispatch_id, attempt, status HAVING COUNT(*) > 1)"
        ),
        0
    );
    // Every partition's position is its high watermark.
    for (t, partitions) in [
        (topic.clone(), PARTITIONS),
        (format!("{topic}.dlq"), PARTITIONS),
    ] {
        let high = high_watermarks(&address, &t, partitions);
        for (p, h) in high {
            let pos = count(
                &db,
                &format!("SELECT COALESCE(MAX(next_offset), 0) FROM positions WHERE topic = '{t}' AND partition = {p}"),
            );
            assert_eq!(pos, h, "{t}/{p}");
        }
    }
    let runs = cronq_db(&db, &["runs", "--status", "failed", "--limit", "10000"]);
    assert_eq!(runs.lines().count() as i64, dead);
    let logs = format!("{}{}", first.log(), second.log());
    assert!(logs.contains("does not decode"), "{logs}");
}

#[test]
fn a_dispatcher_stopped_for_four_minutes_gives_missed_slots_and_a_paused_job_gives_none() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("mon-miss");
    setup_topics(&address, &topic);
    let dir = tempfile::tempdir().unwrap();
    let (_sdir, schedule) = schedule_file(
        r#"{"jobs":[
          {"jobName":"lost","job":"x","cronTime":"* * * * *","catchup":"none"},
          {"jobName":"held","job":"x","cronTime":"* * * * *","catchup":"none"}
        ]}"#,
    );
    let drill = Drill::new(10);
    let db = dir.path().join("monitor.db");
    let mut member = Dispatcher::start(&address, &topic, &schedule, drill, "d1", dir.path(), &[]);
    // The monitor judges the slots after its first start: from when the group dispatches.
    member.wait_log("taking over a shard", Duration::from_secs(90));
    let monitor = Monitor::start(
        &address,
        &topic,
        &db,
        drill,
        &[
            "--schedule",
            schedule.to_str().unwrap(),
            "--missed-after",
            "1m",
        ],
    );
    wait_for(
        "a dispatch of lost",
        Duration::from_secs(120),
        || {
            count(
                &db,
                "SELECT COUNT(*) FROM runs WHERE job = 'lost' AND dispatched_at IS NOT NULL",
            ) >= 1
        },
        || format!("{}\n{}", monitor.log(), member.log()),
    );
    let paused = Command::new(CRONQ)
        .args(["pause", "held", "--reason", "INC-7: maintenance"])
        .args(["--brokers", &address, "--group", &format!("g-{topic}")])
        .args(["--drill-clock", &drill.setting()])
        .arg("--schedule")
        .arg(&schedule)
        .output()
        .expect("cronq pause");
    assert!(
        paused.status.success(),
        "{}",
        String::from_utf8_lossy(&paused.stderr)
    );
    member.kill9();
    let stopped = drill.minute();
    drill.wait_minutes(4, 0);
    let mut member = Dispatcher::start(&address, &topic, &schedule, drill, "d1", dir.path(), &[]);
    member.wait_log("taking over a shard", Duration::from_secs(90));
    let back = drill.minute();
    // Judged once slot + --missed-after has passed for every lost slot.
    drill.wait_minutes(2, 30);
    wait_for(
        "missed slots of lost",
        Duration::from_secs(60),
        || {
            count(
                &db,
                "SELECT COUNT(*) FROM runs WHERE job = 'lost' AND state = 'missed'",
            ) >= 3
        },
        || monitor.log(),
    );
    let conn = rusqlite::Connection::open(&db).unwrap();
    let missed: Vec<i64> = conn
        .prepare(
            "SELECT slot / 60000 FROM runs WHERE job = 'lost' AND state = 'missed' ORDER BY slot",
        )
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    // Every missed slot lies in the outage, and none of them reached the job topic.
    assert!(
        missed.iter().all(|&m| m > stopped - 1 && m <= back),
        "missed {missed:?}, stopped {stopped}, back {back}"
    );
    let dispatched: Vec<String> =
        consume_all(&address, &topic, PARTITIONS, 0, Duration::from_secs(30))
            .iter()
            .map(|r| r.value["dispatchId"].as_str().unwrap().to_string())
            .collect();
    for m in &missed {
        let id = format!(
            "lost@{}",
            chrono::DateTime::from_timestamp(m * 60, 0)
                .unwrap()
                .format("%Y-%m-%dT%H:%M:%SZ")
        );
        assert!(!dispatched.contains(&id), "{id} was dispatched");
    }
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM alerts WHERE kind = 'missed' AND job = 'lost'"
        ),
        missed.len() as i64
    );
    // The paused job: nothing missed, its paused slots skipped by rule, the pause audited.
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM runs WHERE job = 'held' AND state = 'missed'"
        ),
        0
    );
    assert!(
        count(
            &db,
            "SELECT COUNT(*) FROM runs WHERE job = 'held' AND state = 'skipped_by_rule'"
        ) >= 3
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM audit WHERE job = 'held' AND what = 'pause' AND reason = 'INC-7: maintenance'"),
        1
    );
}

#[test]
fn with_the_schedule_topic_a_job_nobody_dispatches_is_missed_and_its_apply_is_audited() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("mon-topic");
    setup_topics(&address, &topic);
    let group = format!("g-{topic}");
    let (_sdir, schedule) = schedule_file(
        r#"{"jobs":[{"jobName":"orphan","job":"x","cronTime":"* * * * *","deadline":"5m"}]}"#,
    );
    let applied = Command::new(CRONQ)
        .arg("apply")
        .arg(&schedule)
        .args(["--shards", "2", "--brokers", &address, "--group", &group])
        .args(["--timeout", "20s"])
        .stdin(Stdio::null())
        .output()
        .expect("cronq apply");
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("monitor.db");
    let drill = Drill::new(10);
    let monitor = Monitor::start(
        &address,
        &topic,
        &db,
        drill,
        &["--schedule-topic", "--missed-after", "1m"],
    );
    wait_for(
        "a missed slot of orphan",
        Duration::from_secs(90),
        || {
            count(
                &db,
                "SELECT COUNT(*) FROM runs WHERE job = 'orphan' AND state = 'missed'",
            ) >= 1
        },
        || monitor.log(),
    );
    assert_eq!(
        count(
            &db,
            "SELECT COUNT(*) FROM audit WHERE job = 'orphan' AND what = 'schedule_put' AND json_extract(detail, '$.via') = 'apply'"
        ),
        1,
        "{}",
        monitor.log()
    );
}

/// `GET url` with `Authorization: Bearer <token>`: the status and the body.
fn get_with_token(url: &str, token: Option<&str>) -> (u16, String) {
    let mut request = ureq::get(url).timeout(Duration::from_secs(10));
    if let Some(token) = token {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    match request.call() {
        Ok(resp) => (resp.status(), resp.into_string().unwrap_or_default()),
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// A dispatch id as one URL path segment.
fn segment(id: &str) -> String {
    id.replace('@', "%40")
        .replace(':', "%3A")
        .replace('#', "%23")
}

#[test]
fn the_page_shows_a_failing_job_its_strip_and_a_pause_with_who_and_why_and_the_api_pages_runs_behind_a_token(
) {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("mon-page");
    setup_topics(&address, &topic);
    let dir = tempfile::tempdir().unwrap();
    let (_sdir, schedule) = schedule_file(
        r#"{"jobs":[
          {"jobName":"broken","job":"broken","cronTime":"* * * * *","maxAttempts":1,"deadline":"1h"},
          {"jobName":"held","job":"held","cronTime":"* * * * *","deadline":"1h"}
        ]}"#,
    );
    let handlers = handlers(&[
        (
            "broken",
            r#"echo "step 1 done"; echo "boom <script>alert(1)</script>" >&2; exit 3"#,
        ),
        ("held", "echo fine"),
    ]);
    let drill = Drill::new(10);
    let db = dir.path().join("monitor.db");
    let mut member = Dispatcher::start(&address, &topic, &schedule, drill, "d1", dir.path(), &[]);
    member.wait_log("taking over a shard", Duration::from_secs(90));
    let schedule_arg = ["--schedule", schedule.to_str().unwrap()];
    let mut monitor = Monitor::start(&address, &topic, &db, drill, &schedule_arg);
    let _worker = Worker::start(
        &address,
        &topic,
        &format!("w-{topic}"),
        handlers.path(),
        &["--drill-clock", &drill.setting()],
        dir.path().join("worker.log"),
    );
    let paused = Command::new(CRONQ)
        .args(["pause", "held", "--reason", "INC-7: <maintenance>"])
        .args(["--brokers", &address, "--group", &format!("g-{topic}")])
        .args(["--drill-clock", &drill.setting()])
        .arg("--schedule")
        .arg(&schedule)
        .output()
        .expect("cronq pause");
    assert!(
        paused.status.success(),
        "{}",
        String::from_utf8_lossy(&paused.stderr)
    );
    wait_for(
        "two failed runs of broken and the pause of held",
        Duration::from_secs(120),
        || {
            count(
                &db,
                "SELECT COUNT(*) FROM runs WHERE job = 'broken' AND state = 'failed'",
            ) >= 2
                && count(&db, "SELECT COUNT(*) FROM audit WHERE what = 'pause'") == 1
        },
        || format!("{}\n{}", monitor.log(), member.log()),
    );
    let (who, failed_id): (String, String) = {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let who = conn
            .query_row("SELECT who FROM audit WHERE what = 'pause'", [], |r| {
                r.get(0)
            })
            .unwrap();
        let id = conn
            .query_row(
                "SELECT dispatch_id FROM runs WHERE job = 'broken' AND state = 'failed' ORDER BY slot DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        (who, id)
    };
    let http = http_addr_in_log(&monitor.log, Duration::from_secs(10));
    let base = format!("http://{http}");

    // The page, as a browser builds it.
    let dom = browser_dom(&format!("{base}/"));
    let section = |id: &str| {
        let start = dom
            .find(&format!("<section id=\"{id}\">"))
            .unwrap_or_else(|| panic!("no section {id}: {dom}"));
        let end = dom[start..].find("</section>").unwrap() + start;
        dom[start..end].to_string()
    };
    let failing = section("failing");
    assert!(failing.contains("Failing now"), "{failing}");
    assert!(failing.contains("<td>broken</td>"), "{failing}");
    assert!(failing.contains("boom &lt;script&gt;"), "{failing}");
    assert!(!failing.contains("<td>held</td>"), "{failing}");
    let jobs = section("jobs");
    let broken_row = jobs
        .split("<tr")
        .find(|row| row.contains("data-job=\"broken\""))
        .unwrap_or_else(|| panic!("no row of broken: {jobs}"));
    assert!(
        broken_row
            .matches("<a class=\"bad\" href=\"runs/broken")
            .count()
            >= 2,
        "{broken_row}"
    );
    assert!(broken_row.contains(" failed\"></a>"), "{broken_row}");
    let audit = section("audit");
    assert!(
        audit.contains(&format!(
            "<td>{who}</td><td>pause</td><td>held</td><td class=\"wrap\">INC-7: &lt;maintenance&gt;</td>"
        )),
        "{audit}"
    );
    assert!(
        !dom.contains("<script"),
        "nothing from a topic becomes markup"
    );

    // The run's page: its attempt's exit code and output, escaped.
    let run_dom = browser_dom(&format!("{base}/runs/{}", segment(&failed_id)));
    assert!(run_dom.contains("exit code 3"), "{run_dom}");
    assert!(run_dom.contains("step 1 done"), "{run_dom}");
    assert!(
        run_dom.contains("boom &lt;script&gt;alert(1)&lt;/script&gt;"),
        "{run_dom}"
    );
    assert!(!run_dom.contains("<script"), "{run_dom}");

    // The API, open on loopback: paged, one run at a time.
    let (code, body) = http_get(&format!(
        "{base}/api/v1/runs?job=broken&status=failed&limit=1"
    ));
    assert_eq!(code, 200, "{body}");
    let first: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(first["runs"].as_array().unwrap().len(), 1, "{first}");
    let next = first["next"].as_str().expect("a next page").to_string();
    let (code, body) = http_get(&format!(
        "{base}/api/v1/jobs/broken/runs?status=failed&limit=1&after={}",
        segment(&next)
    ));
    assert_eq!(code, 200, "{body}");
    let second: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(second["runs"].as_array().unwrap().len(), 1, "{second}");
    assert!(
        second["runs"][0]["slot"].as_str() < first["runs"][0]["slot"].as_str(),
        "{first} then {second}"
    );
    let (code, body) = http_get(&format!("{base}/api/v1/runs/{}", segment(&failed_id)));
    assert_eq!(code, 200, "{body}");
    let run: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(run["state"], "failed");
    assert_eq!(run["attempts"][0]["exitCode"], 3, "{run}");
    assert!(run["attempts"][0]["stderrTail"]
        .as_str()
        .unwrap()
        .contains("boom <script>"));
    let (code, body) = http_get(&format!("{base}/api/v1/runs?limit=0"));
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("limit"), "{body}");
    let (code, body) = http_get(&format!("{base}/api/v1/audit?job=held"));
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("INC-7: <maintenance>"), "{body}");

    // `cronq audit --json` lists the pause.
    let listed = cronq_db(&db, &["audit", "--json"]);
    let pause: serde_json::Value = listed
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["what"] == "pause")
        .unwrap_or_else(|| panic!("no pause in {listed}"));
    assert_eq!(
        (&pause["job"], &pause["who"], &pause["reason"]),
        (
            &serde_json::json!("held"),
            &serde_json::json!(who),
            &serde_json::json!("INC-7: <maintenance>")
        )
    );

    // With --api-tokens: 401 without a token, 200 with a read token (the jobs API's file).
    monitor.kill9();
    let tokens = dir.path().join("tokens.json");
    let hash: String = {
        use sha2::Digest;
        sha2::Sha256::digest(b"t-read-1")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    std::fs::write(
        &tokens,
        format!(
            r#"{{"tokens":[{{"name":"dash","scope":"read","sha256":"{}"}}]}}"#,
            hash.trim()
        ),
    )
    .unwrap();
    let monitor = Monitor::start(
        &address,
        &topic,
        &db,
        drill,
        &[
            schedule_arg[0],
            schedule_arg[1],
            "--api-tokens",
            tokens.to_str().unwrap(),
        ],
    );
    let http = http_addr_in_log(&monitor.log, Duration::from_secs(10));
    let url = format!("http://{http}/api/v1/runs?job=broken&limit=1");
    let (code, body) = get_with_token(&url, None);
    assert_eq!(code, 401, "{body}");
    let (code, _) = get_with_token(&url, Some("t-wrong"));
    assert_eq!(code, 401);
    let (code, body) = get_with_token(&url, Some("t-read-1"));
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["runs"][0]["job"],
        "broken"
    );
    let (code, _) = get_with_token(&format!("http://{http}/"), None);
    assert_eq!(code, 401, "the page needs a token too");
}
