//! `cronq worker` against a real Kafka-protocol broker (tansu): each test starts its own broker,
//! writes job records (with the dispatcher's encoder, and raw from rdkafka as "another client"),
//! runs worker processes with a handlers directory of small shell scripts, and checks what ran and
//! what was reported. A broker that cannot start fails the test with the reason.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::*;
use cronq::dispatcher::Dispatch;
use cronq::schedule::JobSpec;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// A record exactly as the dispatcher encodes it.
fn encoded(name: &str, job: &str, priority: i32, slot: DateTime<Utc>, partitions: i32) -> Record {
    let d = Dispatch {
        spec: Arc::new(JobSpec {
            name: name.to_string(),
            priority,
            job: job.to_string(),
            cron_time: "* * * * *".into(),
            timezone: chrono_tz::Tz::UTC,
            topic: None,
            enabled: true,
            catchup: cronq::schedule::Catchup::All,
            catchup_window: cronq::schedule::DEFAULT_CATCHUP_WINDOW,
            shard: 0,
            timeout: None,
            max_attempts: None,
            overlap: None,
            jitter: None,
            timing: None,
            deadline: None,
        })
        .into(),
        scheduled_at: slot,
        lease: None,
    };
    let r = cronq::schedule::record::encode(&d.spec, d.scheduled_at, "unused", Utc::now());
    Record {
        partition: Some(cronq::wire::partition_for(&r.key, partitions)),
        key: r.key,
        value: r.value,
        headers: r.headers.into_iter().collect(),
    }
}

/// A JobMessage v1 written by hand, as a client other than cronq's dispatcher would.
fn raw(name: &str, job: &str, priority: i32, slot: &str) -> Record {
    let value = serde_json::json!({
        "v": 1,
        "jobName": name,
        "priority": priority,
        "job": job,
        "cronTime": "@hourly",
        "scheduledAt": slot,
        "dispatchId": format!("{name}@{slot}"),
    });
    Record {
        key: name.as_bytes().to_vec(),
        value: serde_json::to_vec(&value).unwrap(),
        partition: None,
        headers: Vec::new(),
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn counts(ids: &[String]) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for id in ids {
        *out.entry(id.clone()).or_default() += 1;
    }
    out
}

/// Records in `topic` so far (the sum of its high watermarks); None while it does not exist yet.
fn records_in(consumer: &BaseConsumer, topic: &str, partitions: i32) -> Option<i64> {
    let mut total = 0;
    for p in 0..partitions {
        total += consumer
            .fetch_watermarks(topic, p, Duration::from_secs(5))
            .ok()?
            .1;
    }
    Some(total)
}

/// Waits (bounded) until `topic` holds at least `expected` records, then reads them all with
/// `consume_all`. Returns what it read, which may be fewer on timeout (the caller's assertion says
/// what was missing).
fn wait_records(
    broker: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
    timeout: Duration,
) -> Vec<Consumed> {
    // A fresh client for every look while the topic is missing: a client that asked before the
    // worker created the topic may keep answering from its stale metadata ("unknown partition").
    let client = || -> BaseConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", broker)
            .create()
            .expect("consumer")
    };
    let mut consumer = client();
    let deadline = Instant::now() + timeout;
    let mut present = records_in(&consumer, topic, partitions);
    while present.is_none_or(|n| n < expected as i64) && Instant::now() < deadline {
        for _ in 0..5 {
            pause();
        }
        if present.is_none() {
            consumer = client();
        }
        present = records_in(&consumer, topic, partitions);
    }
    if present.is_none() {
        return Vec::new();
    }
    consume_all(broker, topic, partitions, expected, Duration::from_secs(30))
}

const RECORD: &str = r#"echo "$CRONQ_DISPATCH_ID" >> "$(dirname "$CRONQ_HANDLER")/executed""#;

#[test]
fn five_hundred_jobs_from_two_clients_each_run_once_with_a_result_each_and_offsets_committed() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("w500");
    let partitions = 3;
    create_topic(&address, &topic, partitions);
    let mut records = Vec::new();
    for i in 0..150 {
        for minute in 0..3 {
            records.push(encoded(
                &format!("job-{i:03}"),
                "record",
                i % 5,
                slot(minute),
                partitions,
            ));
        }
    }
    for i in 0..50 {
        records.push(raw(
            &format!("raw-{i:02}"),
            "record --raw",
            0,
            "2026-11-26T05:00:00Z",
        ));
    }
    assert_eq!(records.len(), 500);
    produce(&address, &topic, &records);

    let dir = handlers(&[("record", RECORD)]);
    let executed = dir.path().join("executed");
    let started = Instant::now();
    let worker = Worker::start(
        &address,
        &topic,
        "g500",
        dir.path(),
        &[
            "--max-workers",
            "8",
            "--scale-interval",
            "200ms",
            "--target-drain",
            "1s",
        ],
        dir.path().join("worker.log"),
    );
    wait_for(
        "500 executions",
        Duration::from_secs(90),
        || lines(&executed).len() >= 500,
        || worker.log(),
    );
    let ran = lines(&executed);
    let per_id = counts(&ran);
    let twice: Vec<_> = per_id.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "ran more than once: {twice:?}");
    assert_eq!(per_id.len(), 500);
    assert!(per_id.contains_key("raw-07@2026-11-26T05:00:00Z"));
    assert!(per_id.contains_key("job-149@2026-11-26T00:02:00Z"));
    // The ordering rule: the three runs of each job executed in slot order.
    for i in 0..150 {
        let runs: Vec<&String> = ran
            .iter()
            .filter(|id| id.starts_with(&format!("job-{i:03}@")))
            .collect();
        let mut sorted = runs.clone();
        sorted.sort();
        assert_eq!(runs, sorted, "job-{i:03} ran out of order");
    }
    println!("500 jobs executed in {:?}", started.elapsed());

    let results = wait_records(
        &address,
        &format!("{topic}.results"),
        3,
        500,
        Duration::from_secs(30),
    );
    assert_eq!(results.len(), 500, "one result per execution");
    let result_ids: HashSet<&str> = results
        .iter()
        .map(|r| r.value["dispatchId"].as_str().unwrap())
        .collect();
    assert_eq!(result_ids.len(), 500);
    for r in &results {
        assert_eq!(r.value["v"], 1);
        assert_eq!(r.value["status"], "succeeded", "{:?}", r.value);
        assert_eq!(r.value["attempt"], 1);
        assert_eq!(r.value["exitCode"], 0);
        assert!(r.value["worker"]
            .as_str()
            .unwrap()
            .ends_with(&format!("-{}", worker.pid())));
    }

    let log = worker.stop();
    assert!(log.contains("worker stopped"), "{log}");
    assert_eq!(
        committed(&address, "g500", &topic, partitions),
        high_watermarks(&address, &topic, partitions),
        "everything executed is committed"
    );
}

#[test]
fn a_failing_job_is_tried_max_attempts_times_then_dead_lettered_and_malformed_records_are_skipped()
{
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("wfail");
    create_topic(&address, &topic, 1);
    let mut v2 = raw("future", "record", 0, "2026-11-26T01:00:00Z");
    v2.value = br#"{"v":2,"jobName":"future","whatever":true}"#.to_vec();
    let not_json = Record {
        key: b"junk".to_vec(),
        value: b"this is not json".to_vec(),
        partition: Some(0),
        headers: Vec::new(),
    };
    produce(
        &address,
        &topic,
        &[
            not_json,
            v2,
            encoded("flaky", "fail with-arg", 0, slot(1), 1),
            encoded("fine", "record", 0, slot(1), 1),
        ],
    );
    let dir = handlers(&[
        ("record", RECORD),
        (
            "fail",
            r#"echo "$CRONQ_ATTEMPT $*" >> "$(dirname "$CRONQ_HANDLER")/attempts"; echo "boom on attempt $CRONQ_ATTEMPT" >&2; exit 4"#,
        ),
    ]);
    let worker = Worker::start(
        &address,
        &topic,
        "gfail",
        dir.path(),
        &["--max-attempts", "3"],
        dir.path().join("worker.log"),
    );
    let dlq = wait_records(
        &address,
        &format!("{topic}.dlq"),
        3,
        3,
        Duration::from_secs(60),
    );
    assert_eq!(
        dlq.len(),
        3,
        "two malformed records and one failed job; log:\n{}",
        worker.log()
    );
    let results = wait_records(
        &address,
        &format!("{topic}.results"),
        3,
        4,
        Duration::from_secs(30),
    );
    let log = worker.stop();

    assert_eq!(
        lines(&dir.path().join("attempts")),
        ["1 with-arg", "2 with-arg", "3 with-arg"]
    );
    assert_eq!(
        lines(&dir.path().join("executed")),
        ["fine@2026-11-26T00:01:00Z"],
        "the worker went on after the bad records"
    );

    let mut flaky: Vec<&serde_json::Value> = results
        .iter()
        .map(|r| &r.value)
        .filter(|v| v["jobName"] == "flaky")
        .collect();
    flaky.sort_by_key(|v| v["attempt"].as_u64());
    assert_eq!(flaky.len(), 3, "a result per attempt: {results:?}");
    for (i, v) in flaky.iter().enumerate() {
        assert_eq!(v["attempt"], i as u64 + 1);
        assert_eq!(v["status"], "failed");
        assert_eq!(v["exitCode"], 4);
    }

    let by_reason = |reason: &str| -> Vec<&serde_json::Value> {
        dlq.iter()
            .map(|c| &c.value)
            .filter(|v| v["reason"] == reason)
            .collect()
    };
    let exhausted = by_reason("attempts_exhausted");
    assert_eq!(exhausted.len(), 1, "{dlq:?}");
    let letter = exhausted[0];
    assert_eq!(
        letter["message"]["dispatchId"],
        "flaky@2026-11-26T00:01:00Z"
    );
    assert_eq!(letter["message"]["job"], "fail with-arg");
    assert_eq!(letter["lastResult"]["attempt"], 3);
    assert_eq!(letter["lastResult"]["stderrTail"], "boom on attempt 3\n");
    assert_eq!(letter["topic"], topic.as_str());
    assert_eq!(letter["offset"], 2);

    let malformed = by_reason("malformed");
    assert_eq!(malformed.len(), 2);
    let offsets: HashSet<i64> = malformed
        .iter()
        .map(|v| v["offset"].as_i64().unwrap())
        .collect();
    assert_eq!(offsets, HashSet::from([0, 1]));
    assert!(malformed.iter().any(|v| v["raw"] == "this is not json"));
    assert!(malformed
        .iter()
        .all(|v| v["partition"] == 0 && v["topic"] == topic.as_str()));
    assert!(
        log.contains("malformed record") && log.contains("offset=0"),
        "logged with its position:\n{log}"
    );
}

/// Is `pid` a running (not zombie) process?
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s.rsplit(')').next().unwrap_or("").trim_start();
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false)
}

#[test]
fn a_hanging_job_is_killed_at_the_timeout_with_everything_it_started() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("whang");
    create_topic(&address, &topic, 1);
    produce(&address, &topic, &[encoded("stuck", "hang", 0, slot(0), 1)]);
    // Ignores SIGTERM (so SIGKILL is needed) and starts a child that would outlive it.
    let dir = handlers(&[(
        "hang",
        r#"trap '' TERM; sleep 300 & echo "$$ $!" > "$(dirname "$CRONQ_HANDLER")/pids"; echo waiting; wait"#,
    )]);
    let worker = Worker::start(
        &address,
        &topic,
        "ghang",
        dir.path(),
        &[
            "--timeout",
            "1s",
            "--kill-grace",
            "300ms",
            "--max-attempts",
            "1",
        ],
        dir.path().join("worker.log"),
    );
    let results = wait_records(
        &address,
        &format!("{topic}.results"),
        3,
        1,
        Duration::from_secs(60),
    );
    assert_eq!(results.len(), 1, "log:\n{}", worker.log());
    let r = &results[0].value;
    assert_eq!(r["status"], "timed_out");
    assert_eq!(r["exitCode"], serde_json::Value::Null);
    assert_eq!(r["stdoutTail"], "waiting\n");
    let took = r["durationMs"].as_u64().unwrap();
    assert!(
        (1000..5000).contains(&took),
        "killed about 1.3 s in, took {took} ms"
    );
    let pids: Vec<i32> = std::fs::read_to_string(dir.path().join("pids"))
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    for pid in pids {
        wait_for(
            &format!("process {pid} to be gone"),
            Duration::from_secs(5),
            || !running(pid),
            String::new,
        );
    }
    let dlq = wait_records(
        &address,
        &format!("{topic}.dlq"),
        3,
        1,
        Duration::from_secs(30),
    );
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].value["lastResult"]["status"], "timed_out");
    worker.stop();
}

#[test]
fn a_job_outside_the_handlers_directory_is_rejected_and_nothing_runs() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("wreject");
    create_topic(&address, &topic, 1);
    let outside = tempfile::tempdir().unwrap();
    let marker = outside.path().join("pwned");
    let evil = outside.path().join("evil");
    std::fs::write(&evil, format!("#!/bin/sh\ntouch {}\n", marker.display())).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&evil, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let dir = handlers(&[("record", RECORD)]);
    let relative = format!(
        "../{}/evil",
        outside.path().file_name().unwrap().to_string_lossy()
    );
    let jobs = [
        evil.display().to_string(),
        relative,
        "..".to_string(),
        format!("touch {}", marker.display()),
        format!("record; touch {}", marker.display()),
    ];
    let records: Vec<Record> = jobs
        .iter()
        .enumerate()
        .map(|(i, job)| encoded(&format!("evil-{i}"), job, 0, slot(0), 1))
        .collect();
    produce(&address, &topic, &records);
    let worker = Worker::start(
        &address,
        &topic,
        "greject",
        dir.path(),
        &[],
        dir.path().join("worker.log"),
    );
    let results = wait_records(
        &address,
        &format!("{topic}.results"),
        3,
        jobs.len(),
        Duration::from_secs(60),
    );
    let dlq = wait_records(
        &address,
        &format!("{topic}.dlq"),
        3,
        jobs.len(),
        Duration::from_secs(30),
    );
    worker.stop();
    assert_eq!(results.len(), jobs.len());
    for r in &results {
        assert_eq!(r.value["status"], "rejected", "{:?}", r.value);
        assert_eq!(r.value["attempt"], 1, "a rejection is not retried");
    }
    assert_eq!(dlq.len(), jobs.len());
    assert!(dlq.iter().all(|c| c.value["reason"] == "rejected"));
    assert!(!marker.exists(), "something ran");
    assert!(
        !dir.path().join("executed").exists(),
        "`record; touch` is not a shell line"
    );
}

/// Records "<worker pid> <dispatchId>" after a short nap, so jobs are in flight when a worker goes.
const SLOW: &str = r#"sleep "${1:-0.1}"; echo "$PPID $CRONQ_DISPATCH_ID" >> "$(dirname "$CRONQ_HANDLER")/executed""#;

fn ids_of(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l.split_once(' ').map(|(_, id)| id.to_string()))
        .collect()
}

#[test]
fn a_worker_killed_with_jobs_in_flight_is_taken_over_and_every_job_runs_at_least_once() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("wkill");
    let partitions = 4;
    create_topic(&address, &topic, partitions);
    let records: Vec<Record> = (0..200)
        .map(|i| encoded(&format!("k-{i:03}"), "slow", 0, slot(0), partitions))
        .collect();
    produce(&address, &topic, &records);
    let expected: HashSet<String> = (0..200)
        .map(|i| format!("k-{i:03}@2026-11-26T00:00:00Z"))
        .collect();

    let dir = handlers(&[("slow", SLOW)]);
    let executed = dir.path().join("executed");
    // A small prefetch keeps fetching paused most of the time: the takeover must work from there.
    let pool = [
        "--min-workers",
        "4",
        "--max-workers",
        "4",
        "--prefetch",
        "16",
    ];
    let first = Worker::start(
        &address,
        &topic,
        "gkill",
        dir.path(),
        &pool,
        dir.path().join("first.log"),
    );
    wait_for(
        "some progress",
        Duration::from_secs(60),
        || lines(&executed).len() >= 40,
        || first.log(),
    );
    let first_pid = first.pid();
    first.kill_hard();
    let before = lines(&executed).len();

    let second = Worker::start(
        &address,
        &topic,
        "gkill",
        dir.path(),
        &pool,
        dir.path().join("second.log"),
    );
    wait_for(
        "every dispatchId to run",
        Duration::from_secs(90),
        || {
            ids_of(&lines(&executed))
                .into_iter()
                .collect::<HashSet<_>>()
                == expected
        },
        || second.log(),
    );
    second.stop();
    let all = lines(&executed);
    let per_id = counts(&ids_of(&all));
    let twice = per_id.values().filter(|&&n| n > 1).count();
    let by_second = all
        .iter()
        .filter(|l| !l.starts_with(&format!("{first_pid} ")))
        .count();
    println!(
        "SIGKILL takeover: {before} ran before the kill, {by_second} by the second worker, {} executions for {} dispatchIds, {twice} ran twice",
        all.len(),
        per_id.len()
    );
    assert_eq!(per_id.len(), 200);
    assert!(by_second > 0);
    assert!(
        per_id.values().all(|&n| n <= 2),
        "at most one re-run per job: {per_id:?}"
    );
}

/// The partitions a worker was last assigned, from its log.
fn last_assignment(log: &str) -> HashSet<String> {
    log.lines()
        .rev()
        .find_map(|l| l.split("partitions assigned partitions=").nth(1))
        .map(|p| p.trim().split(',').map(str::to_string).collect())
        .unwrap_or_default()
}

/// Waits (bounded) until the two workers share the topic's `partitions` between them.
fn wait_split(a: &Worker, b: &Worker, partitions: i32) {
    wait_for(
        "the two members to split the partitions",
        Duration::from_secs(60),
        || {
            let (on_a, on_b) = (last_assignment(&a.log()), last_assignment(&b.log()));
            !on_a.is_empty()
                && !on_b.is_empty()
                && on_a.len() + on_b.len() == partitions as usize
                && on_a.is_disjoint(&on_b)
        },
        || format!("a:\n{}\nb:\n{}", a.log(), b.log()),
    );
}

/// The lines of `executed` a worker process wrote (the SLOW handler's "<pid> <dispatchId>").
fn ids_run_by(executed: &Path, pid: u32) -> Vec<String> {
    let pid = pid.to_string();
    lines(executed)
        .into_iter()
        .filter_map(|l| {
            l.split_once(' ')
                .filter(|(p, _)| *p == pid)
                .map(|(_, id)| id.to_string())
        })
        .collect()
}

/// A JobResult v1 as a worker publishes it.
fn job_result(dispatch_id: &str, status: &str, attempt: u32, worker: &str) -> Record {
    let (name, slot) = dispatch_id.split_once('@').unwrap();
    let value = serde_json::json!({
        "v": 1, "dispatchId": dispatch_id, "jobName": name, "scheduledAt": slot,
        "attempt": attempt, "status": status, "exitCode": 0,
        "startedAt": "2026-11-26T00:00:01.000Z", "finishedAt": "2026-11-26T00:00:02.000Z",
        "durationMs": 1000, "stdoutTail": "", "stderrTail": "", "worker": worker,
    });
    Record {
        key: name.as_bytes().to_vec(),
        value: serde_json::to_vec(&value).unwrap(),
        partition: None,
        headers: Vec::new(),
    }
}

/// At-most-once where a result proves a run: a fresh worker (no memory of its own) reads the
/// results topic before it runs a partition, so a record whose dispatchId already has a terminal
/// result is skipped as a duplicate; a failed attempt with attempts left, and a record with no
/// result, still run.
#[test]
fn a_record_whose_dispatch_id_already_has_a_result_is_a_duplicate_for_a_fresh_worker() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("wproven");
    let partitions = 2;
    create_topic(&address, &topic, partitions);
    create_topic(&address, &format!("{topic}.results"), 3);
    let done = "done@2026-11-26T00:00:00Z";
    let retried = "retried@2026-11-26T00:00:00Z";
    let fresh = "fresh@2026-11-26T00:00:00Z";
    produce(
        &address,
        &format!("{topic}.results"),
        &[
            job_result(done, "succeeded", 1, "gone-worker"),
            job_result(retried, "failed", 1, "gone-worker"),
        ],
    );
    let records: Vec<Record> = ["done", "retried", "fresh"]
        .iter()
        .map(|name| encoded(name, "record", 0, slot(0), partitions))
        .collect();
    produce(&address, &topic, &records);

    let dir = handlers(&[("record", RECORD)]);
    let executed = dir.path().join("executed");
    let worker = Worker::start(
        &address,
        &topic,
        "gproven",
        dir.path(),
        &[],
        dir.path().join("worker.log"),
    );
    wait_for(
        "every record to be committed",
        Duration::from_secs(60),
        || {
            committed(&address, "gproven", &topic, partitions)
                == high_watermarks(&address, &topic, partitions)
        },
        || worker.log(),
    );
    let log = worker.stop();
    let ran = lines(&executed);
    assert!(
        !ran.iter().any(|id| id == done),
        "{done} has a succeeded result and ran again: {ran:?}\n{log}"
    );
    assert!(
        ran.iter().any(|id| id == retried),
        "attempts were left: {ran:?}"
    );
    assert!(ran.iter().any(|id| id == fresh), "no result: {ran:?}");
    assert!(log.contains("dedupe state rebuilt"), "{log}");
    assert!(log.contains("duplicates_skipped=1"), "{log}");
}

/// A results topic that cannot be read holds the new assignment's records back (with a warning)
/// rather than running them unchecked; once it can be read, they run.
#[test]
fn records_wait_unrun_while_the_results_topic_cannot_be_read_then_run() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("wgate");
    create_topic(&address, &topic, 1);
    produce(
        &address,
        &topic,
        &[encoded("gated", "record", 0, slot(0), 1)],
    );
    let dir = handlers(&[("record", RECORD)]);
    let executed = dir.path().join("executed");
    let log = dir.path().join("worker.log");
    let worker = Worker::start(
        &address,
        &topic,
        "ggate",
        dir.path(),
        &["--no-create-topics"],
        log.clone(),
    );
    wait_for_line(
        &log,
        "cannot rebuild the dedupe state from the results topic",
        Duration::from_secs(30),
        "a warning that the results topic cannot be read",
    );
    assert!(
        lines(&executed).is_empty(),
        "ran before the results topic was read:\n{}",
        worker.log()
    );
    create_topic(&address, &format!("{topic}.results"), 3);
    wait_for(
        "the record to run once the results topic exists",
        Duration::from_secs(60),
        || lines(&executed) == ["gated@2026-11-26T00:00:00Z"],
        || worker.log(),
    );
    worker.stop();
}

/// The target of issue 19: with 200 jobs on two workers, a kill -9 of one of them re-runs none of
/// the jobs it had published a result for; jobs it had in flight without a result may run again,
/// and are counted.
#[test]
fn after_a_kill_9_of_one_of_two_workers_no_run_with_a_published_result_runs_again() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("wdup");
    let partitions = 4;
    create_topic(&address, &topic, partitions);
    let records: Vec<Record> = (0..200)
        .map(|i| encoded(&format!("d-{i:03}"), "slow 0.2", 0, slot(0), partitions))
        .collect();
    let expected: HashSet<String> = (0..200)
        .map(|i| format!("d-{i:03}@2026-11-26T00:00:00Z"))
        .collect();
    let dir = handlers(&[("slow", SLOW)]);
    let executed = dir.path().join("executed");
    let pool = |id: &'static str| {
        [
            "--min-workers",
            "4",
            "--max-workers",
            "4",
            "--prefetch",
            "16",
            "--worker-id",
            id,
        ]
    };
    let a = Worker::start(
        &address,
        &topic,
        "gdup",
        dir.path(),
        &pool("a"),
        dir.path().join("a.log"),
    );
    let b = Worker::start(
        &address,
        &topic,
        "gdup",
        dir.path(),
        &pool("b"),
        dir.path().join("b.log"),
    );
    wait_split(&a, &b, partitions);
    produce(&address, &topic, &records);
    let a_pid = a.pid();
    wait_for(
        "a to run some jobs",
        Duration::from_secs(60),
        || ids_run_by(&executed, a_pid).len() >= 30,
        || a.log(),
    );
    a.kill_hard();
    // tansu 0.6's coordinator may leave a dead member's partitions unassigned after its session
    // times out, even when another member joins (the survivors get their own share back only). So
    // b leaves (gracefully) and a fresh worker, with no memory of its own, joins; should it too be
    // handed a share only (about half the runs), it leaves and the next fresh one joins.
    let b_log = b.stop();
    let all_ran = || {
        ids_of(&lines(&executed))
            .into_iter()
            .collect::<HashSet<_>>()
            == expected
    };
    let mut logs = vec![b_log];
    for (joined, id) in ["c", "d", "e", "f", "g", "h", "i", "j"]
        .into_iter()
        .enumerate()
    {
        let fresh = Worker::start(
            &address,
            &topic,
            "gdup",
            dir.path(),
            &pool(id),
            dir.path().join(format!("{id}.log")),
        );
        let deadline = Instant::now() + Duration::from_secs(40);
        while !all_ran() && Instant::now() < deadline {
            pause();
        }
        logs.push(fresh.stop());
        if all_ran() {
            println!("taken over by the fresh worker number {}", joined + 1);
            break;
        }
    }
    let others_log = logs.join("\n----\n");
    assert!(
        all_ran(),
        "not every dispatchId ran after the takeover:\n{others_log}"
    );
    let results = consume_all(
        &address,
        &format!("{topic}.results"),
        3,
        300,
        Duration::from_secs(30),
    );
    let proven_by_a: HashSet<String> = results
        .iter()
        .filter(|r| r.value["worker"] == "a" && r.value["status"] == "succeeded")
        .map(|r| r.value["dispatchId"].as_str().unwrap().to_string())
        .collect();
    let by_a: HashSet<String> = ids_run_by(&executed, a_pid).into_iter().collect();
    let a_prefix = format!("{a_pid} ");
    let by_others: HashSet<String> = ids_of(
        &lines(&executed)
            .into_iter()
            .filter(|l| !l.starts_with(&a_prefix))
            .collect::<Vec<_>>(),
    )
    .into_iter()
    .collect();
    let proven_again: Vec<&String> = proven_by_a.intersection(&by_others).collect();
    let in_flight_again = by_a
        .iter()
        .filter(|id| !proven_by_a.contains(*id) && by_others.contains(*id))
        .count();
    println!(
        "kill -9 of one of two workers: a ran {}, {} with a published result; the others ran {}; \
         re-run with a result: {}; re-run in flight without a result: {in_flight_again}",
        by_a.len(),
        proven_by_a.len(),
        by_others.len(),
        proven_again.len()
    );
    assert!(
        !proven_by_a.is_empty(),
        "a published results before the kill"
    );
    assert!(
        by_others.iter().any(|id| !by_a.contains(id)) || in_flight_again > 0,
        "a's partitions were taken over"
    );
    assert!(
        proven_again.is_empty(),
        "ran again although a's result was published: {proven_again:?}\n{others_log}"
    );
}

#[test]
fn two_members_split_the_partitions_and_one_leaving_gracefully_loses_nothing() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("wsplit");
    let partitions = 4;
    create_topic(&address, &topic, partitions);
    let records: Vec<Record> = (0..240)
        .map(|i| encoded(&format!("s-{i:03}"), "slow 0.05", 0, slot(0), partitions))
        .collect();
    let expected: HashSet<String> = (0..240)
        .map(|i| format!("s-{i:03}@2026-11-26T00:00:00Z"))
        .collect();

    let dir = handlers(&[("slow", SLOW)]);
    let executed = dir.path().join("executed");
    // A small prefetch: members are paused when the rebalances happen.
    let pool = [
        "--min-workers",
        "2",
        "--max-workers",
        "2",
        "--prefetch",
        "16",
    ];
    let a = Worker::start(
        &address,
        &topic,
        "gsplit",
        dir.path(),
        &pool,
        dir.path().join("a.log"),
    );
    let b = Worker::start(
        &address,
        &topic,
        "gsplit",
        dir.path(),
        &pool,
        dir.path().join("b.log"),
    );
    // The records come once the two members share the partitions: the rebalance when the second one
    // joins would otherwise move partitions with jobs running (which then run again, at least once
    // being the rule there), and this test is about the leave.
    wait_split(&a, &b, partitions);
    produce(&address, &topic, &records);
    let (a_pid, b_pid) = (a.pid().to_string(), b.pid().to_string());
    let ran_by = |pid: &str| {
        lines(&executed)
            .iter()
            .filter(|l| l.split(' ').next() == Some(pid))
            .count()
    };
    wait_for(
        "both members to run jobs",
        Duration::from_secs(60),
        || ran_by(&a_pid) >= 5 && ran_by(&b_pid) >= 5,
        || format!("a:\n{}\nb:\n{}", a.log(), b.log()),
    );
    let a_log = a.stop();
    assert!(
        a_log.contains("partitions assigned") && a_log.contains("worker stopped"),
        "{a_log}"
    );
    let by_a = ran_by(&a_pid);
    wait_for(
        "every dispatchId to run",
        Duration::from_secs(90),
        || {
            ids_of(&lines(&executed))
                .into_iter()
                .collect::<HashSet<_>>()
                == expected
        },
        || b.log(),
    );
    let b_log = b.stop();
    let per_id = counts(&ids_of(&lines(&executed)));
    let twice = per_id.values().filter(|&&n| n > 1).count();
    println!(
        "graceful leave: member a ran {by_a}, member b ran {}, {twice} ran twice",
        ran_by(&b_pid)
    );
    assert_eq!(per_id.len(), 240, "nothing lost");
    // a finished its running jobs and committed them before it left, so b started after them.
    let again: Vec<_> = per_id.iter().filter(|(_, &n)| n > 1).collect();
    assert_eq!(twice, 0, "nothing ran twice: {again:?}");
    assert!(ran_by(&a_pid) == by_a, "a ran nothing after it stopped");
    assert!(
        b_log.matches("partitions assigned").count() >= 2,
        "b took a's partitions over:\n{b_log}"
    );
}

#[test]
fn under_a_backlog_high_priority_jobs_start_before_low_ones() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("wprio");
    create_topic(&address, &topic, 1);
    let mut records: Vec<Record> = (0..20)
        .map(|i| encoded(&format!("low-{i:02}"), "slow 0.02", 0, slot(0), 1))
        .collect();
    records.extend((0..20).map(|i| encoded(&format!("high-{i:02}"), "slow 0.02", 9, slot(1), 1)));
    produce(&address, &topic, &records);
    let dir = handlers(&[("slow", SLOW)]);
    let executed = dir.path().join("executed");
    let worker = Worker::start(
        &address,
        &topic,
        "gprio",
        dir.path(),
        &["--min-workers", "1", "--max-workers", "1"],
        dir.path().join("worker.log"),
    );
    wait_for(
        "40 executions",
        Duration::from_secs(60),
        || lines(&executed).len() >= 40,
        || worker.log(),
    );
    worker.stop();
    let order = ids_of(&lines(&executed));
    let last_high = order.iter().rposition(|id| id.starts_with("high")).unwrap();
    let lows_before = order[..last_high]
        .iter()
        .filter(|id| id.starts_with("low"))
        .count();
    // The very first record may start before the rest have been fetched; after that, priority rules.
    assert!(
        lows_before <= 1,
        "{lows_before} low jobs ran before the last high one: {order:?}"
    );
}

#[test]
fn a_burst_grows_the_pool_drains_many_times_faster_than_one_executor_and_the_pool_returns_to_min() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("wburst");
    let partitions = 4;
    create_topic(&address, &topic, partitions);
    let dir = handlers(&[("slow", SLOW)]);
    let executed = dir.path().join("executed");
    let worker = Worker::start(
        &address,
        &topic,
        "gburst",
        dir.path(),
        &[
            "--min-workers",
            "1",
            "--max-workers",
            "16",
            "--scale-interval",
            "250ms",
            "--target-drain",
            "2s",
            "--scale-down-delay",
            "2s",
            "--prefetch",
            "32",
        ],
        dir.path().join("worker.log"),
    );
    // Wait for the group to settle, so the clock below measures draining, not joining.
    wait_for(
        "partitions assigned",
        Duration::from_secs(30),
        || worker.log().contains("partitions assigned"),
        || worker.log(),
    );
    let records: Vec<Record> = (0..300)
        .map(|i| encoded(&format!("b-{i:03}"), "slow 0.2", 0, slot(0), partitions))
        .collect();
    let started = Instant::now();
    produce(&address, &topic, &records);
    wait_for(
        "300 executions",
        Duration::from_secs(60),
        || lines(&executed).len() >= 300,
        || worker.log(),
    );
    let drained = started.elapsed();
    // Not measured: a lower bound, since one executor runs the 300 sleeps of 200 ms one after another.
    let at_size_one = Duration::from_millis(300 * 200);
    wait_for(
        "the pool to return to min",
        Duration::from_secs(30),
        || {
            worker
                .log()
                .lines()
                .rev()
                .find(|l| l.contains("pool resized"))
                .is_some_and(|l| l.contains("to=1 "))
        },
        || worker.log(),
    );
    let log = worker.stop();
    let sizes: Vec<usize> = log
        .lines()
        .filter(|l| l.contains("pool resized"))
        .filter_map(|l| l.split("to=").nth(1)?.split(' ').next()?.parse().ok())
        .collect();
    let peak = sizes.iter().copied().max().unwrap_or(1);
    println!(
        "burst: 300 x 200 ms drained in {drained:?} (one executor needs at least {at_size_one:?}); pool sizes {sizes:?}"
    );
    assert!(peak >= 8, "the pool grew: {sizes:?}");
    assert!(
        drained * 4 < at_size_one,
        "drained in {drained:?}, not many times faster than {at_size_one:?}"
    );
    assert!(
        log.contains("reason=\"spare capacity") || log.contains("reason=spare capacity"),
        "{log}"
    );
    assert_eq!(counts(&ids_of(&lines(&executed))).len(), 300);
}

/// An in-process handler: what a program embedding the worker writes.
struct Counting {
    seen: std::sync::Mutex<Vec<String>>,
}

impl cronq::worker::Handler for Counting {
    fn run<'a>(
        &'a self,
        run: &'a cronq::worker::JobRun,
    ) -> cronq::worker::executor::BoxFuture<'a, cronq::worker::Outcome> {
        Box::pin(async move {
            self.seen
                .lock()
                .unwrap()
                .push(run.message.dispatch_id.clone());
            let mut outcome = cronq::worker::Outcome::new(cronq::worker::Status::Succeeded);
            outcome.stdout_tail = format!("handled {}", run.message.job);
            outcome
        })
    }
}

#[test]
fn a_program_can_embed_the_worker_with_its_own_in_process_handler() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("wembed");
    create_topic(&address, &topic, 2);
    let records: Vec<Record> = (0..100)
        .map(|i| {
            encoded(
                &format!("e-{i:03}"),
                "anything at all; rm -rf /",
                0,
                slot(0),
                2,
            )
        })
        .collect();
    produce(&address, &topic, &records);
    let handler = Arc::new(Counting {
        seen: std::sync::Mutex::new(Vec::new()),
    });
    let config = embedded_config(&address, &topic, "gembed", 3, 4);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = rt.spawn(cronq::worker::run(
        config,
        handler.clone(),
        shutdown.clone(),
    ));
    let results = wait_records(
        &address,
        &format!("{topic}.results"),
        3,
        100,
        Duration::from_secs(60),
    );
    shutdown.cancel();
    let summary = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), task).await })
        .expect("the worker stops when cancelled")
        .expect("worker task")
        .expect("worker run");
    assert_eq!(summary.succeeded, 100);
    assert_eq!(results.len(), 100);
    assert!(results
        .iter()
        .all(|r| r.value["stdoutTail"] == "handled anything at all; rm -rf /"));
    assert_eq!(handler.seen.lock().unwrap().len(), 100);
}

#[test]
fn a_new_group_with_start_latest_skips_what_was_dispatched_before_it_joined() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("wlatest");
    create_topic(&address, &topic, 2);
    let old: Vec<Record> = (0..5)
        .map(|i| encoded(&format!("old-{i}"), "record", 0, slot(0), 2))
        .collect();
    produce(&address, &topic, &old);
    let dir = handlers(&[("record", RECORD)]);
    let executed = dir.path().join("executed");
    let worker = Worker::start(
        &address,
        &topic,
        "glatest",
        dir.path(),
        &["--start", "latest"],
        dir.path().join("worker.log"),
    );
    wait_for(
        "partitions assigned",
        Duration::from_secs(30),
        || worker.log().contains("partitions assigned"),
        || worker.log(),
    );
    // "latest" is resolved when the fetcher starts, a moment after the assignment; a record produced
    // before that is (correctly) skipped too. So produce a fresh record every half second until one
    // runs, instead of guessing how long that moment is.
    let mut sent = 0usize;
    let mut last_sent: Option<Instant> = None;
    wait_for(
        "a record produced after the worker joined to run",
        Duration::from_secs(30),
        || {
            if last_sent.is_none_or(|t| t.elapsed() > Duration::from_millis(500)) {
                produce(
                    &address,
                    &topic,
                    &[encoded(&format!("new-{sent}"), "record", 0, slot(1), 2)],
                );
                sent += 1;
                last_sent = Some(Instant::now());
            }
            !lines(&executed).is_empty()
        },
        || worker.log(),
    );
    let results = wait_records(
        &address,
        &format!("{topic}.results"),
        3,
        1,
        Duration::from_secs(30),
    );
    worker.stop();
    let ran = lines(&executed);
    assert!(
        ran.iter().all(|id| id.starts_with("new-")),
        "old records ran: {ran:?}"
    );
    assert_eq!(results.len(), 1);
}

/// Produces `records` with a producer whose size limit lets ~1 MB records through.
fn produce_large(broker: &str, topic: &str, records: &[Record]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("acks", "all")
        .set("message.max.bytes", "4000000")
        .create()
        .expect("producer");
    runtime().block_on(async {
        for r in records {
            let mut record = FutureRecord::to(topic).key(&r.key).payload(&r.value);
            if let Some(p) = r.partition {
                record = record.partition(p);
            }
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
                .expect("produce a large record");
        }
    });
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn one_megabyte_records_are_dead_lettered_by_digest_and_their_partition_keeps_committing() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("wbig");
    create_topic(&address, &topic, 1);
    // Not a message at all, and a message whose job is rejected (no such handler): each ~1 MB, so a
    // dead letter copying either would pass librdkafka's 1 000 000-byte limit.
    let garbage = Record {
        key: b"garbage".to_vec(),
        value: vec![b'#'; 1_000_000],
        partition: Some(0),
        headers: Vec::new(),
    };
    let mut huge_job = raw(
        "huge",
        &format!("missing {}", "x".repeat(1_000_000)),
        0,
        "2026-11-26T00:00:00Z",
    );
    huge_job.partition = Some(0);
    let mut records = vec![garbage, huge_job];
    records.extend((0..5).map(|i| encoded(&format!("after-{i}"), "record", 0, slot(0), 1)));
    produce_large(&address, &topic, &records);
    let digests = [sha256_hex(&records[0].value), sha256_hex(&records[1].value)];

    let dir = handlers(&[("record", RECORD)]);
    let executed = dir.path().join("executed");
    let worker = Worker::start(
        &address,
        &topic,
        "gbig",
        dir.path(),
        &[],
        dir.path().join("worker.log"),
    );
    wait_for(
        "the records after the large ones to run",
        Duration::from_secs(60),
        || lines(&executed).len() >= 5,
        || worker.log(),
    );
    wait_for(
        "the partition to be committed to its end",
        Duration::from_secs(30),
        || committed(&address, "gbig", &topic, 1) == high_watermarks(&address, &topic, 1),
        || worker.log(),
    );
    let letters = wait_records(
        &address,
        &format!("{topic}.dlq"),
        3,
        2,
        Duration::from_secs(30),
    );
    let log = worker.stop();
    assert_eq!(letters.len(), 2, "{log}");
    let mut by_offset: Vec<&Consumed> = letters.iter().collect();
    by_offset.sort_by_key(|l| l.value["offset"].as_i64());
    for (letter, (offset, reason, digest)) in by_offset
        .iter()
        .zip([(0, "malformed", &digests[0]), (1, "rejected", &digests[1])])
    {
        let v = &letter.value;
        assert_eq!(v["offset"], offset, "{v}");
        assert_eq!(v["topic"], topic.as_str());
        assert_eq!(v["reason"], reason);
        assert_eq!(v["original"]["sha256"], digest.as_str(), "{v}");
        assert!(v["original"]["bytes"].as_u64().unwrap() >= 1_000_000);
        assert_eq!(v["raw"], serde_json::Value::Null);
        assert_eq!(v["message"], serde_json::Value::Null);
        assert!(v.to_string().len() < 64 * 1024, "the letter is small");
    }
    assert!(!log.contains("retrying"), "no report was retried:\n{log}");
}

#[test]
fn results_and_dead_letters_land_on_the_partition_murmur2_picks_for_their_job_name() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("wmurmur");
    create_topic(&address, &topic, 2);
    // 30 names that run and 10 that are rejected; written by another client, partitioned by it.
    let mut records: Vec<Record> = (0..30)
        .map(|i| raw(&format!("job-{i}"), "record", 0, "2026-11-26T00:00:00Z"))
        .collect();
    records.extend((0..10).map(|i| raw(&format!("bad-{i}"), "nope", 0, "2026-11-26T00:00:00Z")));
    produce(&address, &topic, &records);
    let dir = handlers(&[("record", RECORD)]);
    // The worker creates its report topics with 3 partitions (--partitions).
    let worker = Worker::start(
        &address,
        &topic,
        "gmurmur",
        dir.path(),
        &["--partitions", "3", "--max-attempts", "1"],
        dir.path().join("worker.log"),
    );
    let results = wait_records(
        &address,
        &format!("{topic}.results"),
        3,
        40,
        Duration::from_secs(60),
    );
    let letters = wait_records(
        &address,
        &format!("{topic}.dlq"),
        3,
        10,
        Duration::from_secs(30),
    );
    worker.stop();
    assert_eq!((results.len(), letters.len()), (40, 10));
    let mut used = HashSet::new();
    for r in results.iter().chain(&letters) {
        let name = r.value["jobName"]
            .as_str()
            .or(r.value["message"]["jobName"].as_str())
            .unwrap_or_default();
        assert_eq!(r.key, name.as_bytes(), "keyed by jobName: {}", r.value);
        assert_eq!(
            r.partition,
            cronq::wire::partition_for(name.as_bytes(), 3),
            "{name}"
        );
        used.insert(r.partition);
    }
    assert_eq!(used.len(), 3, "40 names spread over all 3 partitions");
}

#[test]
fn a_forged_dispatch_id_is_dead_lettered_and_the_real_run_of_that_slot_still_happens() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("wforge");
    create_topic(&address, &topic, 1);
    let real_slot = "2026-11-26T05:00:00Z";
    // A topic writer sends, before the slot, a record claiming that slot's dispatchId.
    let mut forged = raw("payroll", "record", 0, "2026-11-26T00:00:00Z");
    let mut value: serde_json::Value = serde_json::from_slice(&forged.value).unwrap();
    value["dispatchId"] = format!("payroll@{real_slot}").into();
    forged.value = serde_json::to_vec(&value).unwrap();
    // And one keyed by another name than its jobName.
    let mut wrong_key = raw("payroll", "record", 0, "2026-11-26T01:00:00Z");
    wrong_key.key = b"reports".to_vec();
    let real = raw("payroll", "record", 0, real_slot);
    let manual = {
        let mut r = raw("payroll", "record", 0, "2026-11-26T02:00:00Z");
        let mut v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        v["dispatchId"] = "payroll@2026-11-26T02:00:07Z#manual".into();
        r.value = serde_json::to_vec(&v).unwrap();
        r
    };
    produce(&address, &topic, &[forged, wrong_key, manual, real]);
    let dir = handlers(&[("record", RECORD)]);
    let executed = dir.path().join("executed");
    let worker = Worker::start(
        &address,
        &topic,
        "gforge",
        dir.path(),
        &[],
        dir.path().join("worker.log"),
    );
    let letters = wait_records(
        &address,
        &format!("{topic}.dlq"),
        3,
        2,
        Duration::from_secs(60),
    );
    wait_for(
        "two runs",
        Duration::from_secs(30),
        || lines(&executed).len() >= 2,
        || worker.log(),
    );
    wait_for(
        "everything committed",
        Duration::from_secs(30),
        || committed(&address, "gforge", &topic, 1) == high_watermarks(&address, &topic, 1),
        || worker.log(),
    );
    let log = worker.stop();
    assert_eq!(
        lines(&executed),
        [
            "payroll@2026-11-26T02:00:07Z#manual".to_string(),
            format!("payroll@{real_slot}")
        ],
        "{log}"
    );
    assert!(!log.contains("skipping a dispatchId"), "{log}");
    let mut errors: Vec<String> = letters
        .iter()
        .map(|l| {
            assert_eq!(l.value["reason"], "malformed");
            l.value["error"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    errors.sort();
    assert_eq!(
        errors,
        [
            format!("dispatchId \"payroll@{real_slot}\" is neither jobName@scheduledAt (\"payroll@2026-11-26T00:00:00Z\") nor jobName@<instant>#manual"),
            "the record's key \"reports\" is not its jobName \"payroll\"".to_string(),
        ]
    );
}

#[test]
fn a_record_for_a_far_future_slot_is_dead_lettered_and_later_runs_of_its_job_still_run() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("wfuture");
    create_topic(&address, &topic, 1);
    let now = Utc::now();
    let slot = format!("{}", now.format("%Y-%m-%dT%H:%M:00Z"));
    // A topic writer's records for a slot in 9999, one with a notBefore, one of an `overlap: skip`
    // job; then the jobs' real runs of this minute.
    let far = |name: &str, overlap: Option<&str>| {
        let mut r = raw(name, "record", 0, "9999-12-31T23:50:00Z");
        let mut v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        v["notBefore"] = "9999-12-31T23:59:00Z".into();
        if let Some(o) = overlap {
            v["overlap"] = o.into();
        }
        r.value = serde_json::to_vec(&v).unwrap();
        r
    };
    let skip = |mut r: Record| {
        let mut v: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        v["overlap"] = "skip".into();
        r.value = serde_json::to_vec(&v).unwrap();
        r
    };
    produce(
        &address,
        &topic,
        &[
            far("say-hello", None),
            far("skipper", Some("skip")),
            raw("say-hello", "record", 0, &slot),
            skip(raw("skipper", "record", 0, &slot)),
        ],
    );
    let dir = handlers(&[("record", RECORD)]);
    let executed = dir.path().join("executed");
    let worker = Worker::start(
        &address,
        &topic,
        "gfuture",
        dir.path(),
        &[],
        dir.path().join("worker.log"),
    );
    let letters = wait_records(
        &address,
        &format!("{topic}.dlq"),
        3,
        2,
        Duration::from_secs(60),
    );
    let results = wait_records(
        &address,
        &format!("{topic}.results"),
        3,
        2,
        Duration::from_secs(30),
    );
    wait_for(
        "everything committed",
        Duration::from_secs(30),
        || committed(&address, "gfuture", &topic, 1) == high_watermarks(&address, &topic, 1),
        || worker.log(),
    );
    let log = worker.stop();
    let mut ran = lines(&executed);
    ran.sort();
    assert_eq!(
        ran,
        [format!("say-hello@{slot}"), format!("skipper@{slot}")],
        "{log}"
    );
    let mut reported: Vec<(String, String)> = results
        .iter()
        .map(|r| {
            (
                r.value["dispatchId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                r.value["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    reported.sort();
    assert_eq!(
        reported,
        [
            (format!("say-hello@{slot}"), "succeeded".to_string()),
            (format!("skipper@{slot}"), "succeeded".to_string()),
        ],
        "{log}"
    );
    let mut dead: Vec<(String, String)> = letters
        .iter()
        .map(|l| {
            let error = l.value["error"].as_str().unwrap_or_default();
            assert!(
                error.starts_with("scheduledAt 9999-12-31T23:50:00Z is ")
                    && error.contains("ahead of this worker's clock"),
                "{error}"
            );
            assert_eq!(l.value["lastResult"], serde_json::Value::Null);
            (
                l.value["reason"].as_str().unwrap_or_default().to_string(),
                l.value["message"]["dispatchId"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    dead.sort();
    assert!(log.contains("future_slots=2"), "{log}");
    assert_eq!(
        dead,
        [
            (
                "future_slot".to_string(),
                "say-hello@9999-12-31T23:50:00Z".to_string()
            ),
            (
                "future_slot".to_string(),
                "skipper@9999-12-31T23:50:00Z".to_string()
            ),
        ]
    );
}

#[test]
fn a_job_older_than_max_age_is_reported_expired_and_dead_lettered_without_running() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("wage");
    create_topic(&address, &topic, 1);
    let now = Utc::now();
    let fresh = format!("{}", now.format("%Y-%m-%dT%H:%M:00Z"));
    let week_old = format!(
        "{}",
        (now - chrono::Duration::days(7)).format("%Y-%m-%dT%H:%M:00Z")
    );
    produce(
        &address,
        &topic,
        &[
            raw("stale", "record", 0, &week_old),
            raw("fresh", "record", 0, &fresh),
        ],
    );
    let dir = handlers(&[("record", RECORD)]);
    let executed = dir.path().join("executed");
    let worker = Worker::start(
        &address,
        &topic,
        "gage",
        dir.path(),
        &["--max-age", "1h"],
        dir.path().join("worker.log"),
    );
    let results = wait_records(
        &address,
        &format!("{topic}.results"),
        3,
        2,
        Duration::from_secs(60),
    );
    let letters = wait_records(
        &address,
        &format!("{topic}.dlq"),
        3,
        1,
        Duration::from_secs(30),
    );
    let log = worker.stop();
    assert_eq!(lines(&executed), [format!("fresh@{fresh}")], "{log}");
    let status = |name: &str| {
        results
            .iter()
            .find(|r| r.value["jobName"] == name)
            .map(|r| r.value["status"].clone())
    };
    assert_eq!(status("stale"), Some("expired".into()));
    assert_eq!(status("fresh"), Some("succeeded".into()));
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].value["reason"], "expired");
    assert_eq!(letters[0].value["message"]["jobName"], "stale");
    assert!(log.contains("expired=1"), "{log}");
}

#[test]
fn jobs_see_none_of_the_workers_environment_but_what_is_passed_on() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("wenv");
    create_topic(&address, &topic, 1);
    produce(
        &address,
        &topic,
        &[encoded("show-env", "env", 0, slot(0), 1)],
    );
    let dir = handlers(&[("env", r#"env > "$(dirname "$CRONQ_HANDLER")/env.out""#)]);
    let out = dir.path().join("env.out");
    let worker = Worker::start_with_env(
        &address,
        &topic,
        "genv",
        dir.path(),
        &["--pass-env", "ALLOWED_ONE", "--pass-env", "ALLOWED_TWO"],
        &[
            ("KAFKA_SASL_PASSWORD", "hunter2"),
            ("CRONQ_SASL_PASSWORD", "hunter3"),
            ("CRONQ_GROUP", "genv"),
            ("ALLOWED_ONE", "one"),
            ("ALLOWED_TWO", "two"),
            ("TZ", "Europe/Berlin"),
        ],
        dir.path().join("worker.log"),
    );
    wait_for(
        "the job to run",
        Duration::from_secs(60),
        || lines(&out).iter().any(|l| l.starts_with("CRONQ_ATTEMPT=")),
        || worker.log(),
    );
    worker.stop();
    let env = lines(&out);
    assert!(
        !env.iter().any(|l| l.contains("hunter")),
        "a secret leaked: {env:?}"
    );
    let mut names: Vec<&str> = env
        .iter()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .filter(|k| !matches!(*k, "PWD" | "SHLVL" | "_" | "OLDPWD"))
        .collect();
    names.sort_unstable();
    let mut expected = vec![
        "ALLOWED_ONE",
        "ALLOWED_TWO",
        "CRONQ_ATTEMPT",
        "CRONQ_DISPATCH_ID",
        "CRONQ_HANDLER",
        "CRONQ_JOB_NAME",
        "CRONQ_PRIORITY",
        "CRONQ_SCHEDULED_AT",
        "TZ",
    ];
    // The test's own PATH/HOME/LANG pass when it has them.
    for base in ["PATH", "HOME", "LANG"] {
        if std::env::var_os(base).is_some() {
            expected.push(base);
        }
    }
    expected.sort_unstable();
    assert_eq!(names, expected, "{env:?}");
    assert!(env.contains(&"ALLOWED_TWO=two".to_string()));
    assert!(env.contains(&"TZ=Europe/Berlin".to_string()));
}

/// `(uid, gid)` of `user` as `id` reports them (not through cronq's own lookup).
fn ids_of_user(user: &str) -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, user]).output().ok()?;
        String::from_utf8(out.stdout).ok()?.trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

/// A handler that tries every way to the worker's secrets (its own environment, the worker's
/// `/proc/PID/environ`, and the file named by its argument) and prints what it got.
const PEEK: &str = r#"echo "ppid=$PPID uid=$(id -u) groups=$(id -G)"
env
tr '\0' '\n' < /proc/$PPID/environ
cat "$1"
exit 0"#;

/// The one result of the `peek` job, and the worker's log: (stdout, stderr, log).
fn peek_result(address: &str, topic: &str, worker: Worker) -> (String, String, String) {
    let results = wait_records(
        address,
        &format!("{topic}.results"),
        3,
        1,
        Duration::from_secs(60),
    );
    let log = worker.stop();
    assert_eq!(results.len(), 1, "{log}");
    let field = |name: &str| {
        results[0].value[name]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        field("status"),
        "succeeded",
        "{:?}\n{log}",
        results[0].value
    );
    (field("stdoutTail"), field("stderrTail"), log)
}

#[test]
fn a_handler_of_the_workers_own_user_cannot_read_its_environment_through_proc() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("wproc");
    create_topic(&address, &topic, 1);
    produce(
        &address,
        &topic,
        &[encoded("peek", "peek /nonexistent", 0, slot(0), 1)],
    );
    let dir = handlers(&[("peek", PEEK)]);
    // The worker and its handler share an unprivileged user: nobody when the test runs as root
    // (root's children may read any process's /proc; that is what --run-as is for), else the
    // test's own.
    let user = nix::unistd::geteuid()
        .is_root()
        .then(|| ids_of_user("nobody").expect("the user nobody"));
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let secret = random_topic("wsec-env-secret");
    let worker = Worker::start_as(
        &address,
        &topic,
        "gproc",
        dir.path(),
        &[],
        &[("KAFKA_SASL_PASSWORD", &secret)],
        user,
        dir.path().join("worker.log"),
    );
    let pid = worker.pid();
    let (stdout, stderr, _) = peek_result(&address, &topic, worker);
    assert!(
        stdout.starts_with(&format!("ppid={pid} ")),
        "the handler's parent is the worker: {stdout}"
    );
    assert!(!stdout.contains(&secret), "the secret leaked: {stdout}");
    assert!(
        stderr.contains(&format!("/proc/{pid}/environ: Permission denied")),
        "{stderr}"
    );
}

#[test]
fn a_handler_under_run_as_sees_none_of_the_workers_secrets_in_its_environment_proc_or_files() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: --run-as needs a worker that can switch users (root); the test runs as uid {}", nix::unistd::geteuid());
        return;
    }
    let (uid, gid) = ids_of_user("nobody").expect("the user nobody");
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("wrunas");
    create_topic(&address, &topic, 1);
    // The worker's key file: its user's only, in a directory anyone may enter.
    let files = tempfile::tempdir().unwrap();
    let key = files.path().join("sasl-password");
    let file_secret = random_topic("wsec-file-secret");
    std::fs::write(&key, &file_secret).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(files.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    produce(
        &address,
        &topic,
        &[encoded(
            "peek",
            &format!("peek {}", key.display()),
            0,
            slot(0),
            1,
        )],
    );
    let dir = handlers(&[("peek", PEEK)]);
    let env_secret = random_topic("wsec-env-secret");
    let worker = Worker::start_with_env(
        &address,
        &topic,
        "grunas",
        dir.path(),
        &["--run-as", "nobody"],
        &[("KAFKA_SASL_PASSWORD", &env_secret)],
        dir.path().join("worker.log"),
    );
    let pid = worker.pid();
    let (stdout, stderr, log) = peek_result(&address, &topic, worker);
    assert!(
        stdout.starts_with(&format!("ppid={pid} uid={uid} groups={gid}\n")),
        "the worker's child, as nobody with only nobody's group: {stdout}"
    );
    for secret in [&env_secret, &file_secret] {
        assert!(
            !stdout.contains(secret.as_str()),
            "a secret leaked: {stdout}"
        );
    }
    assert!(
        stderr.contains(&format!("/proc/{pid}/environ: Permission denied")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("cat: {}: Permission denied", key.display())),
        "{stderr}"
    );
    assert!(log.contains("jobs run as another user"), "{log}");
    assert!(!log.contains("without --run-as"), "{log}");
}

/// Runs a worker `command` that should refuse to start: (exit code, stderr). Bounded: a worker
/// that starts after all is killed and the test fails with its log.
fn refused_start(command: &mut Command) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    let mut child = command
        .env("CRONQ_HTTP", "127.0.0.1:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn cronq worker");
    let status = wait_exit(&mut child, Duration::from_secs(20), &log);
    (
        status.code(),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

#[test]
fn a_worker_refuses_a_run_as_user_it_cannot_switch_to_or_does_not_know() {
    // As an unprivileged user: nobody when the test runs as root, else the test's own.
    let root = nix::unistd::geteuid().is_root();
    let nobody = ids_of_user("nobody").expect("the user nobody");
    let daemon = ids_of_user("daemon").expect("the user daemon");
    let me = if root {
        nobody
    } else {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    };
    let (_binary, cronq) = cronq_open_to_all();
    let run = |run_as: &str| {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(&cronq);
        if root {
            command.uid(me.0).gid(me.1);
        }
        refused_start(
            command
                .args(["worker", "--brokers", "127.0.0.1:9", "--shell"])
                .args(["--run-as", run_as]),
        )
    };
    let (code, stderr) = run("daemon");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--run-as: handlers cannot run as daemon:daemon (uid {}, gid {}): this worker (uid {}) cannot switch users; run it as root or give it CAP_SETUID, CAP_SETGID and CAP_KILL (missing: CAP_SETUID, CAP_SETGID, CAP_KILL)",
            daemon.0, daemon.1, me.0
        )),
        "{stderr}"
    );
    let own = format!("{}:{}", me.0, me.1);
    let (code, stderr) = run(&own);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("(uid {}) is this worker's own user", me.0)),
        "{stderr}"
    );
    if root {
        // Root whose capabilities were cut could switch users but not end a handler at its
        // timeout (signalling another user's process needs CAP_KILL).
        let (code, stderr) = refused_start(
            Command::new("setpriv")
                .args(["--bounding-set=-kill", "--", CRONQ])
                .args(["worker", "--brokers", "127.0.0.1:9", "--shell"])
                .args(["--run-as", "nobody"]),
        );
        assert_eq!(code, Some(2), "{stderr}");
        assert!(
            stderr.contains("this worker (uid 0) cannot switch users; run it as root or give it CAP_SETUID, CAP_SETGID and CAP_KILL (missing: CAP_KILL)"),
            "{stderr}"
        );
    }
    let (code, stderr) = run("no-such-user-wsec");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("--run-as")
            && stderr.contains(
                r#"unknown user "no-such-user-wsec": the user database has no such user"#
            ),
        "{stderr}"
    );
}

#[test]
fn a_worker_refuses_run_as_when_a_handler_is_closed_to_that_user() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "skipped: --run-as needs a worker that can switch users (root); the test runs as uid {}",
            nix::unistd::geteuid()
        );
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = handlers(&[("peek", PEEK)]);
    let handler = dir.path().join("peek");
    std::fs::set_permissions(&handler, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (code, stderr) = refused_start(
        Command::new(CRONQ)
            .args(["worker", "--brokers", "127.0.0.1:9", "--run-as", "nobody"])
            .arg("--handlers")
            .arg(dir.path()),
    );
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--run-as: {} (mode 0700, owner uid 0, group gid 0) cannot be run by nobody: it needs read and execute permission for that user",
            handler.display()
        )),
        "{stderr}"
    );
}

#[test]
fn a_root_worker_without_run_as_warns_at_start() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "skipped: the warning is for a worker running as root; the test runs as uid {}",
            nix::unistd::geteuid()
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    let mut child = Command::new(CRONQ)
        .env("CRONQ_HTTP", "127.0.0.1:0")
        .args(["worker", "--brokers", "127.0.0.1:9", "--shell"])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn cronq worker");
    let warning = "the worker runs as root without --run-as";
    let seen = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(warning)
        && Instant::now() < seen
    {
        pause();
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let line = text.lines().find(|l| l.contains(warning));
    assert!(line.is_some_and(|l| l.contains("WARN")), "{text}");
}

#[test]
fn a_worker_refuses_to_start_with_a_handlers_directory_others_can_write() {
    use std::os::unix::fs::PermissionsExt;
    let dir = handlers(&[("record", RECORD)]);
    let run = |handlers: &Path| {
        let out = Command::new(CRONQ)
            .env("CRONQ_HTTP", "127.0.0.1:0")
            .args(["worker", "--brokers", "127.0.0.1:9"])
            .arg("--handlers")
            .arg(handlers)
            .output()
            .expect("run cronq worker");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (code, stderr) = run(dir.path());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "--handlers: {} is writable by group and other (mode 0777)",
            dir.path().display()
        )),
        "{stderr}"
    );
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let handler = dir.path().join("record");
    std::fs::set_permissions(&handler, std::fs::Permissions::from_mode(0o722)).unwrap();
    let (code, stderr) = run(dir.path());
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} is writable by group and other (mode 0722)",
            handler.display()
        )),
        "{stderr}"
    );
}

/// A handler whose future panics when it is dropped: the execution task itself dies (a panic
/// while polling would be caught and reported as a failed attempt).
struct Crashing;

struct DropBomb;

impl std::future::Future for DropBomb {
    type Output = cronq::worker::Outcome;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::task::Poll::Ready(cronq::worker::Outcome::new(
            cronq::worker::Status::Succeeded,
        ))
    }
}

impl Drop for DropBomb {
    fn drop(&mut self) {
        panic!("a bug in the handler's future");
    }
}

impl cronq::worker::Handler for Crashing {
    fn run<'a>(
        &'a self,
        run: &'a cronq::worker::JobRun,
    ) -> cronq::worker::executor::BoxFuture<'a, cronq::worker::Outcome> {
        if run.message.job == "crash" {
            Box::pin(DropBomb)
        } else {
            Box::pin(async { cronq::worker::Outcome::new(cronq::worker::Status::Succeeded) })
        }
    }
}

#[test]
fn a_panicked_execution_task_is_dead_lettered_and_commits_go_on() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("wcrash");
    create_topic(&address, &topic, 1);
    let mut records = vec![encoded("boom", "crash", 0, slot(0), 1)];
    records.extend((0..5).map(|i| encoded(&format!("fine-{i}"), "fine", 0, slot(0), 1)));
    produce(&address, &topic, &records);
    let config = embedded_config(&address, &topic, "gcrash", 1, 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let task = rt.spawn(cronq::worker::run(
        config,
        Arc::new(Crashing),
        shutdown.clone(),
    ));
    let letters = wait_records(
        &address,
        &format!("{topic}.dlq"),
        3,
        1,
        Duration::from_secs(60),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while committed(&address, "gcrash", &topic, 1) != high_watermarks(&address, &topic, 1) {
        assert!(
            Instant::now() < deadline,
            "commits stopped at {:?}",
            committed(&address, "gcrash", &topic, 1)
        );
        pause();
    }
    shutdown.cancel();
    let summary = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(30), task).await })
        .expect("the worker stops when cancelled")
        .expect("worker task")
        .expect("worker run");
    assert_eq!((summary.crashed, summary.succeeded), (1, 5));
    assert_eq!(letters.len(), 1);
    let letter = &letters[0].value;
    assert_eq!(letter["reason"], "crashed");
    assert_eq!(letter["message"]["dispatchId"], "boom@2026-11-26T00:00:00Z");
    assert_eq!(letter["offset"], 0);
    assert_eq!(
        letter["error"],
        "the execution task panicked: a bug in the handler's future"
    );
}

#[test]
fn malformed_records_count_against_the_same_bounds_as_jobs() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("wflood");
    create_topic(&address, &topic, 1);
    // The DLQ topic does not exist and may not be created: every dead letter stays in flight
    // (retried), as with a DLQ that is down. More garbage than the 10 000 reports allowed in flight.
    let garbage: Vec<Record> = (0..10_200)
        .map(|i| Record {
            key: format!("g{i}").into_bytes(),
            value: b"not a message".to_vec(),
            partition: Some(0),
            headers: Vec::new(),
        })
        .collect();
    produce(&address, &topic, &garbage);
    create_topic(&address, &format!("{topic}.results"), 1);
    let dir = handlers(&[("record", RECORD)]);
    // A long session: the flood's dead letters, retried against a DLQ topic that does not exist,
    // load the broker, and on a loaded machine (CI) it stalled past the tests' usual 6 s session:
    // the group dropped the worker, and the worker sat with no partition for the rest of the wait.
    let worker = Worker::start_with_env(
        &address,
        &topic,
        "gflood",
        dir.path(),
        &[
            "--no-create-topics",
            "--prefetch",
            "64",
            "--session-timeout",
            "30s",
        ],
        &[("CRONQ_LOG", "info,cronq::worker=debug")],
        dir.path().join("worker.log"),
    );
    wait_for(
        "fetching to pause",
        Duration::from_secs(90),
        || worker.log().contains("local queue full: fetching paused"),
        || {
            // The group's story (assignments, warnings), then the last lines.
            let log = worker.log();
            let story = log
                .lines()
                .filter(|l| l.contains("partitions ") || l.contains(" WARN "));
            let last: Vec<&str> = log.lines().rev().take(20).collect();
            story
                .chain(["..."])
                .chain(last.into_iter().rev())
                .collect::<Vec<_>>()
                .join("\n")
        },
    );
    let log = worker.stop();
    let pause = log
        .lines()
        .find(|l| l.contains("local queue full: fetching paused"))
        .unwrap();
    let field = |name: &str| -> usize {
        pause
            .split(&format!("{name}="))
            .nth(1)
            .and_then(|v| v.split(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {pause}"))
    };
    assert_eq!(field("reports_in_flight"), 10_000, "{pause}");
    assert!(field("to_dead_letter") >= 64, "{pause}");
    assert!(field("queued") >= 64, "{pause}");
}

/// A worker embedded in the test process (an in-process handler), on `topic` as group `group`.
fn embedded_config(
    address: &str,
    topic: &str,
    group: &str,
    max_attempts: u32,
    max_workers: usize,
) -> cronq::worker::WorkerConfig {
    use cronq::worker::{
        autoscale::ScaleConfig, queue::Ordering, results::ReportConfig, StartAt, WorkerConfig,
    };
    WorkerConfig {
        kafka: cronq::kafka::Connection::plaintext(vec![address.to_string()]),
        topic: topic.to_string(),
        group: group.into(),
        start: StartAt::Earliest,
        ordering: Ordering::Ordered,
        prefetch: 64,
        max_held_bytes: 64 * 1024 * 1024,
        drill_clock: None,
        report: ReportConfig {
            results_topic: format!("{topic}.results"),
            dlq_topic: format!("{topic}.dlq"),
            max_attempts,
            retry_backoff: Duration::from_millis(50),
            worker: "embedded".into(),
            max_output: 8192,
            max_age: None,
            max_attempts_cap: 10,
        },
        scale: ScaleConfig {
            min: 1,
            max: max_workers,
            target_drain: Duration::from_secs(1),
            scale_down_delay: Duration::from_secs(5),
        },
        scale_interval: Duration::from_millis(200),
        shutdown_grace: Duration::from_secs(5),
        commit_interval: Duration::from_millis(100),
        session_timeout: Duration::from_secs(6),
        dedup_capacity: 1000,
        dedupe_window: Duration::from_secs(3600),
        create_topics: true,
        partitions: 3,
        replication_factor: 1,
    }
}

// ---- The worker's HTTP surface: metrics, probes, status page ----

/// The value of the sample `series` (name and labels exactly as exported) in Prometheus text.
fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        line.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    })
}

fn get_json(url: &str) -> (u16, serde_json::Value) {
    let (code, body) = http_get(url);
    let value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {body}"));
    (code, value)
}

/// A job name that would run a script if the page did not escape it.
const HOSTILE: &str = "<img src=x onerror=alert(1)><script>alert('pwned')</script>";

#[test]
fn a_worker_serves_metrics_probes_and_a_status_page_of_what_it_ran() {
    // The topic exists, then the broker goes away: the worker starts without it, so readiness is
    // seen false first, for the reason that it has not joined its group.
    let mut broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("whttp");
    create_topic(&address, &topic, 2);
    broker.kill();

    let dir = handlers(&[
        ("ok", "echo fine"),
        ("fail", "echo 'no luck' >&2; exit 3"),
        (
            "hold",
            r#"d="$(dirname "$CRONQ_HANDLER")"; touch "$d/holding"; while [ ! -f "$d/release" ]; do sleep 0.05; done"#,
        ),
    ]);
    let log = dir.path().join("worker.log");
    let worker = Worker::start(
        &address,
        &topic,
        "ghttp",
        dir.path(),
        &[
            "--max-attempts",
            "2",
            "--min-workers",
            "2",
            "--max-workers",
            "4",
        ],
        log.clone(),
    );
    let addr = http_addr_in_log(&log, Duration::from_secs(30));
    let base = format!("http://{addr}");

    let (code, ready) = get_json(&format!("{base}/readyz"));
    assert_eq!(code, 503, "{ready}");
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["checks"]["group"]["ok"], false, "{ready}");
    assert!(
        ready["checks"]["group"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("not joined")),
        "{ready}"
    );
    let (code, live) = get_json(&format!("{base}/healthz"));
    assert_eq!(code, 200, "waiting for Kafka is not being stuck: {live}");

    broker.launch();
    wait_for(
        "the worker to be ready",
        Duration::from_secs(60),
        || http_get(&format!("{base}/readyz")).0 == 200,
        || {
            format!(
                "{}\n{}",
                http_get(&format!("{base}/readyz")).1,
                worker.log()
            )
        },
    );
    let (_, ready) = get_json(&format!("{base}/readyz"));
    assert!(
        ready["checks"]["group"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("joined group \"ghttp\"")),
        "{ready}"
    );
    assert_eq!(ready["checks"]["kafka"]["ok"], true, "{ready}");
    let (code, live) = get_json(&format!("{base}/healthz"));
    assert_eq!(code, 200, "{live}");
    assert!(live["heartbeats"]["consume_loop"]["ok"] == true, "{live}");

    // 5 jobs succeed, one of them under a hostile name; 2 fail twice each and are dead-lettered;
    // one record is not JSON; one job holds its executor until the test releases it.
    let mut records: Vec<Record> = (0..4)
        .map(|i| encoded(&format!("report-{i}"), "ok", 0, slot(i), 2))
        .collect();
    records.push(raw(HOSTILE, "ok", 0, "2026-11-26T00:10:00Z"));
    records.push(encoded("flaky-a", "fail", 0, slot(20), 2));
    records.push(encoded("flaky-b", "fail", 0, slot(21), 2));
    records.push(Record {
        key: b"junk".to_vec(),
        value: b"this is not json".to_vec(),
        partition: Some(1),
        headers: Vec::new(),
    });
    records.push(encoded("long-haul", "hold", 0, slot(30), 2));
    produce(&address, &topic, &records);

    let metrics_url = format!("{base}/metrics");
    wait_for(
        "every job but the held one to end",
        Duration::from_secs(60),
        || {
            let m = http_get(&metrics_url).1;
            sample(&m, r#"cronq_job_runs_total{status="succeeded"}"#) == Some(5.0)
                && sample(&m, r#"cronq_job_runs_total{status="failed"}"#) == Some(4.0)
                && sample(&m, r#"cronq_dead_letters_total{reason="malformed"}"#) == Some(1.0)
                && sample(
                    &m,
                    r#"cronq_dead_letters_total{reason="attempts_exhausted"}"#,
                ) == Some(2.0)
                && dir.path().join("holding").exists()
        },
        || format!("{}\n{}", http_get(&metrics_url).1, worker.log()),
    );
    let m = http_get(&metrics_url).1;
    assert_eq!(
        sample(&m, r#"cronq_dead_letters_total{reason="crashed"}"#),
        Some(0.0),
        "{m}"
    );
    // 5 successes and 4 failed attempts ended; the held job has not.
    assert_eq!(
        sample(&m, "cronq_job_duration_seconds_count"),
        Some(9.0),
        "{m}"
    );
    // First attempts only: 5 + 2 + the held one.
    assert_eq!(
        sample(&m, "cronq_job_start_delay_seconds_count"),
        Some(8.0),
        "{m}"
    );
    assert_eq!(sample(&m, "cronq_worker_in_flight"), Some(1.0), "{m}");
    assert_eq!(
        sample(&m, "cronq_duplicates_skipped_total"),
        Some(0.0),
        "{m}"
    );
    for p in 0..2 {
        let series = format!("cronq_worker_lag{{topic=\"{topic}\",partition=\"{p}\"}}");
        wait_for(
            "the lag of each partition",
            Duration::from_secs(10),
            || sample(&http_get(&metrics_url).1, &series).is_some(),
            || http_get(&metrics_url).1,
        );
    }
    assert!(
        sample(&m, "cronq_worker_pool_target").is_some_and(|t| (1.0..=4.0).contains(&t)),
        "{m}"
    );
    assert!(m.contains("# TYPE cronq_pool_resizes counter"), "{m}");
    assert!(
        m.contains("# TYPE cronq_job_duration_seconds histogram"),
        "{m}"
    );
    assert!(
        !m.contains("report-") && !m.contains("onerror") && !m.contains("job_name"),
        "no metric carries a job name: {m}"
    );

    // The same in /status.json.
    let (code, status) = get_json(&format!("{base}/status.json"));
    assert_eq!(code, 200);
    assert_eq!(
        status["running"].as_array().map(Vec::len),
        Some(1),
        "{status}"
    );
    assert_eq!(status["running"][0]["jobName"], "long-haul", "{status}");
    assert_eq!(
        status["running"][0]["dispatchId"], "long-haul@2026-11-26T00:30:00Z",
        "{status}"
    );
    let results = status["results"].as_array().expect("results");
    assert_eq!(results.len(), 9, "{status}");
    let names: HashSet<&str> = results
        .iter()
        .filter_map(|r| r["jobName"].as_str())
        .collect();
    assert!(
        names.contains(HOSTILE) && names.contains("flaky-b"),
        "{status}"
    );
    let letters = status["recentDeadLetters"]
        .as_array()
        .expect("dead letters");
    let mut reasons: Vec<&str> = letters
        .iter()
        .filter_map(|l| l["reason"].as_str())
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        ["attempts_exhausted", "attempts_exhausted", "malformed"],
        "{status}"
    );
    assert_eq!(status["lag"].as_array().map(Vec::len), Some(2), "{status}");
    assert!(
        !status["poolHistory"].as_array().expect("pool").is_empty(),
        "{status}"
    );

    // The page, as a browser builds it.
    let page = browser_dom(&format!("{base}/"));
    let section = |id: &str| -> String {
        let start = page
            .find(&format!("<section id=\"{id}\""))
            .unwrap_or_else(|| panic!("no section {id}:\n{page}"));
        let end = page[start..].find("</section>").expect("section end") + start;
        page[start..end].to_string()
    };
    let running = section("running");
    assert!(
        running.contains("long-haul@2026-11-26T00:30:00Z"),
        "{running}"
    );
    let results = section("results");
    for name in ["report-0", "report-3", "flaky-a", "flaky-b"] {
        assert!(results.contains(name), "{name} missing: {results}");
    }
    assert!(
        results.contains("succeeded") && results.contains("failed"),
        "{results}"
    );
    let dead = section("dead-letters");
    assert!(
        dead.contains("attempts_exhausted")
            && dead.contains("malformed")
            && dead.contains("flaky-a"),
        "{dead}"
    );
    let lag = section("lag");
    assert!(lag.contains(&topic), "{lag}");
    assert!(
        lag.contains("<tr><td>0</td>") && lag.contains("<tr><td>1</td>"),
        "{lag}"
    );
    let pool = section("pool");
    assert!(pool.contains("<svg") && pool.contains("<rect"), "{pool}");
    // The hostile name is text, not markup: the browser built no img or script element from it.
    assert!(
        page.contains("&lt;img src=x onerror=alert(1)&gt;"),
        "{page}"
    );
    assert!(
        !page.contains("<img") && !page.contains("<script"),
        "{page}"
    );

    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    browser_screenshot(&format!("{base}/"), &shots.join("worker.png"), 1280, 1500);
    browser_screenshot(
        &format!("{base}/"),
        &shots.join("worker-390.png"),
        390,
        1800,
    );
    if std::env::var_os("CRONQ_UPDATE_SCREENSHOTS").is_some() {
        let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/screenshots/worker.png");
        std::fs::create_dir_all(kept.parent().unwrap()).unwrap();
        std::fs::copy(shots.join("worker.png"), kept).expect("keep the screenshot");
    }

    // Shutting down: not ready while the held job still runs.
    worker.signal(nix::sys::signal::Signal::SIGTERM);
    wait_for(
        "readiness to drop during shutdown",
        Duration::from_secs(10),
        || http_get(&format!("{base}/readyz")).0 == 503,
        || worker.log(),
    );
    let (_, ready) = get_json(&format!("{base}/readyz"));
    assert!(
        ready["checks"]["consuming"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("shutting down")),
        "{ready}"
    );
    std::fs::write(dir.path().join("release"), b"").unwrap();
    let mut worker = worker;
    let status = wait_exit(&mut worker.child, Duration::from_secs(30), &log);
    assert!(status.success(), "{status}: {}", worker.log());
}
