//! Per-job run settings end to end: `overlap` (`skip`, `replace`, `allow`, `queue`) with two
//! `cronq worker` processes in one group, a job's `timeout` and `maxAttempts` against the worker's
//! flags, and JobMessage compatibility in both directions (a message with the new fields read by a
//! reader from before them, and a record exactly as the dispatcher wrote it before them run by
//! today's worker). Each test starts its own tansu broker and produces the job records directly
//! (the dispatcher's encoder), so nothing waits for a minute boundary.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::*;
use cronq::schedule::JobSpec;
use cronq::wire::{partition_for, Overlap};

/// The settings a job of the schedule file may have, as the loader leaves them in a JobSpec.
#[derive(Clone, Copy, Default)]
struct Settings {
    timeout: Option<Duration>,
    max_attempts: Option<u32>,
    overlap: Option<Overlap>,
}

fn overlap(o: Overlap) -> Settings {
    Settings {
        overlap: Some(o),
        ..Settings::default()
    }
}

/// A record exactly as the dispatcher encodes it for a job with `settings`.
fn encoded(
    name: &str,
    job: &str,
    at: DateTime<Utc>,
    settings: Settings,
    partitions: i32,
) -> Record {
    let spec = JobSpec {
        name: name.to_string(),
        priority: 0,
        job: job.to_string(),
        cron_time: Arc::from("* * * * *"),
        timezone: chrono_tz::Tz::UTC,
        topic: None,
        enabled: true,
        catchup: cronq::schedule::Catchup::All,
        catchup_window: cronq::schedule::DEFAULT_CATCHUP_WINDOW,
        shard: 0,
        timeout: settings.timeout,
        max_attempts: settings.max_attempts,
        overlap: settings.overlap,
        jitter: None,
        timing: None,
        deadline: None,
    };
    let r = cronq::schedule::record::encode(&spec, at, "unused", Utc::now());
    Record {
        partition: Some(partition_for(&r.key, partitions)),
        key: r.key,
        value: r.value,
        headers: Vec::new(),
    }
}

/// A handlers directory: `nap SECONDS` sleeps (and notes when it started, for the tests that
/// must wait for a run to be going), `stubborn SECONDS` sleeps ignoring SIGTERM, `fail` exits 4.
fn overlap_handlers() -> tempfile::TempDir {
    let started = r#"echo "$CRONQ_DISPATCH_ID" >> "$(dirname "$CRONQ_HANDLER")/started""#;
    handlers(&[
        ("nap", &format!("{started}\nsleep \"$1\"")),
        (
            "stubborn",
            // An ignored signal stays ignored in the children: only SIGKILL ends the sleep.
            &format!("trap '' TERM\n{started}\nsleep \"$1\""),
        ),
        ("fail", "exit 4"),
    ])
}

/// A `cronq worker` with a 1 s kill grace, its log `dir/log`.
fn start_worker(
    broker: &str,
    topic: &str,
    group: &str,
    dir: &Path,
    extra: &[&str],
    log: &str,
) -> Worker {
    let args: Vec<&str> = ["--kill-grace", "1s"]
        .iter()
        .chain(extra)
        .copied()
        .collect();
    Worker::start(broker, topic, group, dir, &args, dir.join(log))
}

/// The partitions a worker's log says it was assigned last.
fn last_assignment(log: &str) -> HashSet<String> {
    log.lines()
        .rev()
        .find_map(|l| l.split("partitions assigned partitions=").nth(1))
        .map(|p| p.trim().split(',').map(str::to_string).collect())
        .unwrap_or_default()
}

/// Two workers in `group`, started and waited for until they split the topic's partitions, so
/// that no rebalance moves a partition while the test's runs go on.
fn two_workers(
    broker: &str,
    topic: &str,
    group: &str,
    dir: &Path,
    extra: &[&str],
    partitions: usize,
) -> (Worker, Worker) {
    let a = start_worker(broker, topic, group, dir, extra, "a.log");
    let b = start_worker(broker, topic, group, dir, extra, "b.log");
    wait_for(
        "the two workers to split the partitions",
        Duration::from_secs(60),
        || {
            let (on_a, on_b) = (last_assignment(&a.log()), last_assignment(&b.log()));
            !on_a.is_empty()
                && !on_b.is_empty()
                && on_a.len() + on_b.len() == partitions
                && on_a.is_disjoint(&on_b)
        },
        || format!("a:\n{}\nb:\n{}", a.log(), b.log()),
    );
    (a, b)
}

/// The first name `prefix-N` that Kafka's partitioner puts on each partition: jobs spread over
/// every partition, so both workers own some.
fn one_job_per_partition(prefix: &str, partitions: i32) -> Vec<String> {
    let mut names: BTreeMap<i32, String> = BTreeMap::new();
    for i in 0.. {
        let name = format!("{prefix}-{i}");
        names
            .entry(partition_for(name.as_bytes(), partitions))
            .or_insert(name);
        if names.len() == partitions as usize {
            break;
        }
    }
    names.into_values().collect()
}

/// Waits until `topic` holds at least `n` records, then reads them all.
fn records(
    broker: &str,
    topic: &str,
    n: usize,
    timeout: Duration,
    context: impl Fn() -> String,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + timeout;
    loop {
        let got: Vec<serde_json::Value> = consume_all(broker, topic, 3, n, Duration::from_secs(10))
            .into_iter()
            .map(|c| c.value)
            .collect();
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: {} of {n} records after {timeout:?}: {got:#?}\n{}",
            got.len(),
            context()
        );
        for _ in 0..10 {
            pause();
        }
    }
}

/// A result's `(startedAt, finishedAt)`.
fn span(result: &serde_json::Value) -> (DateTime<Utc>, DateTime<Utc>) {
    let at = |field: &str| {
        result[field]
            .as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{field} of {result}"))
    };
    (at("startedAt"), at("finishedAt"))
}

fn overlaps(a: (DateTime<Utc>, DateTime<Utc>), b: (DateTime<Utc>, DateTime<Utc>)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// The results of `job`, by slot (`scheduledAt`), attempts in order.
fn of_job<'a>(
    results: &'a [serde_json::Value],
    job: &str,
) -> BTreeMap<String, Vec<&'a serde_json::Value>> {
    let mut out: BTreeMap<String, Vec<&serde_json::Value>> = BTreeMap::new();
    for r in results.iter().filter(|r| r["jobName"] == job) {
        out.entry(r["scheduledAt"].as_str().unwrap().to_string())
            .or_default()
            .push(r);
    }
    for attempts in out.values_mut() {
        attempts.sort_by_key(|r| r["attempt"].as_u64());
    }
    out
}

/// The number after `field=` on the "worker stopped" line of a log.
fn stopped_count(log: &str, field: &str) -> u64 {
    log.lines()
        .find(|l| l.contains("worker stopped"))
        .and_then(|l| l.split(&format!(" {field}=")).nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {field}= in the stop line of:\n{log}"))
}

const PARTITIONS: i32 = 4;

#[test]
fn skip_with_two_workers_runs_one_at_a_time_and_reports_the_others_skipped() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("oskip");
    create_topic(&address, &topic, PARTITIONS);
    let dir = overlap_handlers();
    let (a, b) = two_workers(
        &address,
        &topic,
        "gskip",
        dir.path(),
        &["--min-workers", "4", "--max-workers", "4"],
        PARTITIONS as usize,
    );
    let jobs = one_job_per_partition("skip", PARTITIONS);
    // Four runs of each job at once (a catch-up burst): the first runs 2 s, the rest arrive while
    // it is queued or running.
    let burst: Vec<Record> = jobs
        .iter()
        .flat_map(|job| {
            (0..4).map(move |m| encoded(job, "nap 2", slot(m), overlap(Overlap::Skip), PARTITIONS))
        })
        .collect();
    produce(&address, &topic, &burst);
    let context = || format!("a:\n{}\nb:\n{}", a.log(), b.log());
    let results_topic = format!("{topic}.results");
    records(
        &address,
        &results_topic,
        16,
        Duration::from_secs(60),
        context,
    );
    // Once they are done, a fifth run finds nothing of its job going: it runs.
    produce(
        &address,
        &topic,
        &jobs
            .iter()
            .map(|job| encoded(job, "nap 0", slot(4), overlap(Overlap::Skip), PARTITIONS))
            .collect::<Vec<_>>(),
    );
    let results = records(
        &address,
        &results_topic,
        20,
        Duration::from_secs(60),
        context,
    );
    assert_eq!(results.len(), 20, "one result per record: {results:#?}");
    let mut workers = HashSet::new();
    for job in &jobs {
        let runs = of_job(&results, job);
        let statuses: Vec<(String, &str, u64)> = runs
            .iter()
            .map(|(at, r)| {
                (
                    at[11..16].to_string(),
                    r[0]["status"].as_str().unwrap(),
                    r[0]["attempt"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            statuses,
            [
                ("00:00".to_string(), "succeeded", 1),
                ("00:01".to_string(), "skipped", 0),
                ("00:02".to_string(), "skipped", 0),
                ("00:03".to_string(), "skipped", 0),
                ("00:04".to_string(), "succeeded", 1),
            ],
            "{job}"
        );
        let first = span(runs["2026-11-26T00:00:00Z"][0]);
        assert!(
            first.1 - first.0 >= chrono::Duration::milliseconds(1900),
            "{first:?}"
        );
        for skipped in [
            "2026-11-26T00:01:00Z",
            "2026-11-26T00:02:00Z",
            "2026-11-26T00:03:00Z",
        ] {
            let r = runs[skipped][0];
            assert_eq!(r["exitCode"], serde_json::Value::Null);
            assert!(
                r["stderrTail"]
                    .as_str()
                    .unwrap()
                    .contains("overlap \"skip\""),
                "{r}"
            );
            // Decided while the first run was still going.
            assert!(
                span(r).1 < first.1,
                "{job} {skipped} reported after the first run ended"
            );
            // By the worker that owns the job's partition, the one running the first run.
            assert_eq!(r["worker"], runs["2026-11-26T00:00:00Z"][0]["worker"]);
        }
        assert!(
            !overlaps(first, span(runs["2026-11-26T00:04:00Z"][0])),
            "{job}: skip never overlaps"
        );
        workers.insert(
            runs["2026-11-26T00:00:00Z"][0]["worker"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(workers.len(), 2, "both workers ran jobs: {workers:?}");
    let started: Vec<String> = std::fs::read_to_string(dir.path().join("started"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        started.len(),
        8,
        "only the first and the fifth run of each job ran: {started:?}"
    );
    let (log_a, log_b) = (a.stop(), b.stop());
    assert_eq!(
        stopped_count(&log_a, "skipped") + stopped_count(&log_b, "skipped"),
        12
    );
    assert_eq!(
        committed(&address, "gskip", &topic, PARTITIONS),
        high_watermarks(&address, &topic, PARTITIONS),
        "the skipped records' offsets are committed"
    );
}

#[test]
fn replace_with_two_workers_terminates_the_running_run_and_runs_the_newest() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("orepl");
    create_topic(&address, &topic, PARTITIONS);
    let dir = overlap_handlers();
    let (a, b) = two_workers(
        &address,
        &topic,
        "grepl",
        dir.path(),
        &["--min-workers", "4", "--max-workers", "4"],
        PARTITIONS as usize,
    );
    let jobs = one_job_per_partition("repl", PARTITIONS);
    let replace = overlap(Overlap::Replace);
    // A long run of each job, which ignores SIGTERM: only the kill after the grace ends it.
    produce(
        &address,
        &topic,
        &jobs
            .iter()
            .map(|job| encoded(job, "stubborn 60", slot(0), replace, PARTITIONS))
            .collect::<Vec<_>>(),
    );
    let started = dir.path().join("started");
    let context = || format!("a:\n{}\nb:\n{}", a.log(), b.log());
    wait_for(
        "every job's first run to start",
        Duration::from_secs(60),
        || {
            std::fs::read_to_string(&started)
                .unwrap_or_default()
                .lines()
                .count()
                == jobs.len()
        },
        context,
    );
    // Two newer runs of each job at once: the first of them replaces the running one and waits
    // for it to end; the second replaces the first before it started.
    produce(
        &address,
        &topic,
        &jobs
            .iter()
            .flat_map(|job| {
                [
                    encoded(job, "nap 0", slot(1), replace, PARTITIONS),
                    encoded(job, "nap 1", slot(2), replace, PARTITIONS),
                ]
            })
            .collect::<Vec<_>>(),
    );
    let results = records(
        &address,
        &format!("{topic}.results"),
        12,
        Duration::from_secs(60),
        context,
    );
    assert_eq!(results.len(), 12, "{results:#?}");
    let mut workers = HashSet::new();
    for job in &jobs {
        let runs = of_job(&results, job);
        let one = |at: &str| runs[&format!("2026-11-26T00:0{at}:00Z")].as_slice();
        let (old, queued, newest) = (one("0"), one("1"), one("2"));
        assert_eq!(
            (old.len(), queued.len(), newest.len()),
            (1, 1, 1),
            "{job}: {runs:#?}"
        );
        let (old, queued, newest) = (old[0], queued[0], newest[0]);
        assert_eq!(
            (&old["status"], &old["attempt"]),
            (&"cancelled".into(), &1.into()),
            "{old}"
        );
        assert_eq!(
            old["exitCode"],
            serde_json::Value::Null,
            "killed by a signal"
        );
        assert!(
            old["stderrTail"]
                .as_str()
                .unwrap()
                .contains("a newer run of this job arrived"),
            "{old}"
        );
        let old_span = span(old);
        // Ended by the kill path: SIGTERM ignored, SIGKILL after the 1 s grace, not the 60 s nap.
        let ran = old_span.1 - old_span.0;
        assert!(
            ran < chrono::Duration::seconds(30),
            "{job}: the old run went on for {ran}"
        );
        assert_eq!(
            (&queued["status"], &queued["attempt"]),
            (&"cancelled".into(), &0.into()),
            "{queued}"
        );
        assert!(
            queued["stderrTail"]
                .as_str()
                .unwrap()
                .contains("before it started"),
            "{queued}"
        );
        assert_eq!(
            (&newest["status"], &newest["attempt"]),
            (&"succeeded".into(), &1.into()),
            "{newest}"
        );
        let new_span = span(newest);
        assert!(
            new_span.0 >= old_span.1,
            "{job}: the newest run started before the old one ended ({old_span:?}, {new_span:?})"
        );
        println!(
            "{job}: cancelled run lasted {} ms, newest started {} ms after it ended",
            ran.num_milliseconds(),
            (new_span.0 - old_span.1).num_milliseconds()
        );
        assert!(
            new_span.0 - old_span.1 < chrono::Duration::seconds(5),
            "{job}: started late"
        );
        // The cancelled run's SIGTERM came at least a grace before it ended.
        assert!(new_span.0 - old_span.0 >= chrono::Duration::milliseconds(900));
        workers.insert(old["worker"].as_str().unwrap().to_string());
    }
    assert_eq!(workers.len(), 2, "both workers replaced runs: {workers:?}");
    let started_ids: Vec<String> = std::fs::read_to_string(&started)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        started_ids.len(),
        2 * jobs.len(),
        "the queued-then-replaced runs never started: {started_ids:?}"
    );
    let (log_a, log_b) = (a.stop(), b.stop());
    assert_eq!(
        stopped_count(&log_a, "cancelled") + stopped_count(&log_b, "cancelled"),
        8
    );
    let dlq = consume_all(
        &address,
        &format!("{topic}.dlq"),
        3,
        0,
        Duration::from_secs(5),
    );
    assert!(
        dlq.is_empty(),
        "a cancelled run is not a dead letter: {dlq:?}"
    );
    assert_eq!(
        committed(&address, "grepl", &topic, PARTITIONS),
        high_watermarks(&address, &topic, PARTITIONS)
    );
}

#[test]
fn allow_with_two_workers_overlaps_runs_of_one_job_and_queue_does_not() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("oallow");
    create_topic(&address, &topic, PARTITIONS);
    let dir = overlap_handlers();
    let (a, b) = two_workers(
        &address,
        &topic,
        "gallow",
        dir.path(),
        &["--min-workers", "16", "--max-workers", "16"],
        PARTITIONS as usize,
    );
    let allowed = one_job_per_partition("allow", PARTITIONS);
    let queued = one_job_per_partition("queue", PARTITIONS);
    let mut records_ = Vec::new();
    for m in 0..3 {
        for job in &allowed {
            records_.push(encoded(
                job,
                "nap 2",
                slot(m),
                overlap(Overlap::Allow),
                PARTITIONS,
            ));
        }
        for job in &queued {
            records_.push(encoded(
                job,
                "nap 0.3",
                slot(m),
                overlap(Overlap::Queue),
                PARTITIONS,
            ));
        }
    }
    produce(&address, &topic, &records_);
    let context = || format!("a:\n{}\nb:\n{}", a.log(), b.log());
    let results = records(
        &address,
        &format!("{topic}.results"),
        24,
        Duration::from_secs(90),
        context,
    );
    assert_eq!(results.len(), 24);
    assert!(
        results.iter().all(|r| r["status"] == "succeeded"),
        "{results:#?}"
    );
    let mut workers = HashSet::new();
    for job in &allowed {
        let spans: Vec<_> = of_job(&results, job).values().map(|r| span(r[0])).collect();
        assert_eq!(spans.len(), 3);
        // Sixteen executors per worker, more than its runs however the partitions are split: all
        // three runs of the job start together.
        let latest_start = spans.iter().map(|s| s.0).max().unwrap();
        let earliest_end = spans.iter().map(|s| s.1).min().unwrap();
        println!(
            "{job}: three runs overlapped for {} ms",
            (earliest_end - latest_start).num_milliseconds()
        );
        assert!(
            latest_start < earliest_end,
            "{job}: runs did not all overlap: {spans:?}"
        );
        workers.extend(
            of_job(&results, job)
                .values()
                .map(|r| r[0]["worker"].to_string()),
        );
    }
    for job in &queued {
        let spans: Vec<_> = of_job(&results, job).values().map(|r| span(r[0])).collect();
        assert_eq!(spans.len(), 3);
        for pair in spans.windows(2) {
            assert!(
                pair[0].1 <= pair[1].0,
                "{job}: queue runs overlap or ran out of slot order: {spans:?}"
            );
        }
    }
    assert_eq!(workers.len(), 2, "{workers:?}");
    a.stop();
    b.stop();
}

#[test]
fn a_jobs_timeout_and_max_attempts_override_the_workers_flags_within_the_ceiling() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("oset");
    create_topic(&address, &topic, 1);
    let dir = overlap_handlers();
    let secs = |s| Some(Duration::from_secs(s));
    let records_ = [
        encoded(
            "longer",
            "nap 4",
            slot(0),
            Settings {
                timeout: secs(5),
                ..Settings::default()
            },
            1,
        ),
        encoded(
            "shorter",
            "nap 5",
            slot(0),
            Settings {
                timeout: secs(1),
                max_attempts: Some(1),
                overlap: None,
            },
            1,
        ),
        encoded(
            "capped",
            "nap 10",
            slot(0),
            Settings {
                timeout: secs(3600),
                max_attempts: Some(1),
                overlap: None,
            },
            1,
        ),
        encoded(
            "twice",
            "fail",
            slot(0),
            Settings {
                max_attempts: Some(2),
                ..Settings::default()
            },
            1,
        ),
        encoded("default", "fail", slot(0), Settings::default(), 1),
    ];
    produce(&address, &topic, &records_);
    // --timeout 3s, --max-timeout 6s (the ceiling of a job's timeout), --max-attempts 3.
    let worker = start_worker(
        &address,
        &topic,
        "gset",
        dir.path(),
        &[
            "--timeout",
            "3s",
            "--max-timeout",
            "6s",
            "--max-attempts",
            "3",
            "--min-workers",
            "5",
            "--max-workers",
            "5",
        ],
        "worker.log",
    );
    // longer 1 + shorter 1 + capped 1 + twice 2 + default 3.
    let results = records(
        &address,
        &format!("{topic}.results"),
        8,
        Duration::from_secs(60),
        || worker.log(),
    );
    let summary = |job: &str| -> Vec<(String, u64)> {
        of_job(&results, job)
            .values()
            .flatten()
            .map(|r| {
                (
                    r["status"].as_str().unwrap().to_string(),
                    r["attempt"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let took = |job: &str| {
        let r = of_job(&results, job).values().next().unwrap()[0];
        let (start, end) = span(r);
        (end - start).to_std().unwrap()
    };
    // A job timeout (5 s) longer than the worker's 3 s: the 4 s nap finishes.
    assert_eq!(summary("longer"), [("succeeded".to_string(), 1)]);
    assert!(took("longer") >= Duration::from_secs(4));
    // Shorter than the worker's: the 5 s nap is ended at 1 s.
    assert_eq!(summary("shorter"), [("timed_out".to_string(), 1)]);
    assert!(
        took("shorter") < Duration::from_millis(2500),
        "{:?}",
        took("shorter")
    );
    // 1 h asked for, cut to --max-timeout 6 s.
    assert_eq!(summary("capped"), [("timed_out".to_string(), 1)]);
    let capped = of_job(&results, "capped").values().next().unwrap()[0];
    assert!(
        capped["stderrTail"].as_str().unwrap().ends_with(
            "timed out after 6s: the job's timeout 1h is above this worker's ceiling (--max-timeout, or --timeout when longer)"
        ),
        "{capped}"
    );
    assert!(
        (Duration::from_millis(5900)..Duration::from_millis(9000)).contains(&took("capped")),
        "{:?}",
        took("capped")
    );
    // maxAttempts 2 against --max-attempts 3, and the default.
    assert_eq!(
        summary("twice"),
        [("failed".to_string(), 1), ("failed".to_string(), 2)]
    );
    assert_eq!(
        summary("default"),
        [
            ("failed".to_string(), 1),
            ("failed".to_string(), 2),
            ("failed".to_string(), 3)
        ]
    );
    let dlq = records(
        &address,
        &format!("{topic}.dlq"),
        4,
        Duration::from_secs(30),
        || worker.log(),
    );
    let letter = |job: &str| {
        dlq.iter()
            .find(|l| l["message"]["jobName"] == job)
            .unwrap_or_else(|| panic!("{job}: {dlq:#?}"))
    };
    assert_eq!(letter("twice")["lastResult"]["attempt"], 2);
    assert_eq!(
        letter("twice")["message"]["maxAttempts"],
        2,
        "the letter keeps the message as sent"
    );
    assert_eq!(letter("shorter")["message"]["timeoutMs"], 1000);
    worker.stop();
}

#[test]
fn a_record_with_an_out_of_range_setting_is_dead_lettered_with_the_reason() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("orange");
    create_topic(&address, &topic, 1);
    let dir = overlap_handlers();
    let mut forged = encoded("forever", "nap 0", slot(0), Settings::default(), 1);
    let mut v: serde_json::Value = serde_json::from_slice(&forged.value).unwrap();
    v["timeoutMs"] = serde_json::json!(u64::MAX);
    forged.value = serde_json::to_vec(&v).unwrap();
    let mut typo = encoded("typo", "nap 0", slot(0), Settings::default(), 1);
    let mut v: serde_json::Value = serde_json::from_slice(&typo.value).unwrap();
    v["overlap"] = "sometimes".into();
    typo.value = serde_json::to_vec(&v).unwrap();
    produce(
        &address,
        &topic,
        &[
            forged,
            typo,
            encoded("fine", "nap 0", slot(0), overlap(Overlap::Skip), 1),
        ],
    );
    let worker = start_worker(&address, &topic, "grange", dir.path(), &[], "worker.log");
    let dlq = records(
        &address,
        &format!("{topic}.dlq"),
        2,
        Duration::from_secs(60),
        || worker.log(),
    );
    let results = records(
        &address,
        &format!("{topic}.results"),
        1,
        Duration::from_secs(60),
        || worker.log(),
    );
    worker.stop();
    let error = |offset: i64| {
        dlq.iter().find(|l| l["offset"] == offset).map(|l| {
            (
                l["reason"].clone(),
                l["error"].as_str().unwrap_or("").to_string(),
            )
        })
    };
    let (reason, text) = error(0).expect("offset 0 dead-lettered");
    assert_eq!(reason, "malformed");
    assert_eq!(
        text,
        "timeoutMs 18446744073709551615 is out of range 1000-86400000 (1s-1d)"
    );
    let (reason, text) = error(1).expect("offset 1 dead-lettered");
    assert_eq!(reason, "malformed");
    assert!(
        text.contains(
            "unknown variant `sometimes`, expected one of `queue`, `skip`, `allow`, `replace`"
        ),
        "{text}"
    );
    assert_eq!(results.len(), 1);
    assert_eq!(
        (&results[0]["jobName"], &results[0]["status"]),
        (&"fine".into(), &"succeeded".into())
    );
}

/// JobMessage exactly as it was before run settings existed (frozen; do not edit): how a consumer
/// written then reads the job topic.
#[derive(Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct JobMessageV1BeforeRunSettings {
    v: u32,
    job_name: String,
    priority: i32,
    job: String,
    cron_time: String,
    scheduled_at: String,
    dispatch_id: String,
}

#[test]
fn a_message_with_run_settings_is_read_by_older_readers_and_an_old_record_runs_with_the_workers_defaults(
) {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("ocompat");
    create_topic(&address, &topic, 1);
    // New message, old readers: the frozen struct and a plain JSON consumer in Python.
    let settings = Settings {
        timeout: Some(Duration::from_secs(90)),
        max_attempts: Some(2),
        overlap: Some(Overlap::Replace),
    };
    produce(
        &address,
        &topic,
        &[encoded("modern", "nap 0", slot(7), settings, 1)],
    );
    let read = consume_all(&address, &topic, 1, 1, Duration::from_secs(30));
    assert_eq!(read.len(), 1);
    let value = serde_json::to_vec(&read[0].value).unwrap();
    assert_eq!(
        read[0].value["overlap"], "replace",
        "the record carries the settings"
    );
    let old: JobMessageV1BeforeRunSettings =
        serde_json::from_slice(&value).expect("an old reader reads it");
    assert_eq!(
        old,
        JobMessageV1BeforeRunSettings {
            v: 1,
            job_name: "modern".into(),
            priority: 0,
            job: "nap 0".into(),
            cron_time: "* * * * *".into(),
            scheduled_at: "2026-11-26T00:07:00Z".into(),
            dispatch_id: "modern@2026-11-26T00:07:00Z".into(),
        }
    );
    let python = Command::new("python3")
        .args(["-c", "import json,sys; m=json.load(sys.stdin); assert m['v']==1; print(m['jobName'], m['scheduledAt'], m['dispatchId'], m['priority'], m['job'])"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (the test broker's tooling needs it too)");
    let output = {
        use std::io::Write;
        let mut python = python;
        python.stdin.take().unwrap().write_all(&value).unwrap();
        python.wait_with_output().unwrap()
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "modern 2026-11-26T00:07:00Z modern@2026-11-26T00:07:00Z 0 nap 0\n"
    );

    // Old record, new worker: the bytes the dispatcher wrote before run settings existed run with
    // the worker's --timeout (1 s against a 3 s nap) and --max-attempts (2).
    let fixture = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/job_message_v1.json"),
    )
    .unwrap();
    let topic2 = random_topic("ocompat-old");
    create_topic(&address, &topic2, 1);
    produce(
        &address,
        &topic2,
        &[Record {
            key: b"legacy".to_vec(),
            value: fixture,
            partition: Some(0),
            headers: Vec::new(),
        }],
    );
    let dir = overlap_handlers();
    let worker = start_worker(
        &address,
        &topic2,
        "gcompat",
        dir.path(),
        &["--timeout", "1s", "--max-attempts", "2"],
        "worker.log",
    );
    let results = records(
        &address,
        &format!("{topic2}.results"),
        2,
        Duration::from_secs(60),
        || worker.log(),
    );
    let dlq = records(
        &address,
        &format!("{topic2}.dlq"),
        1,
        Duration::from_secs(30),
        || worker.log(),
    );
    worker.stop();
    let attempts: Vec<(&str, u64)> = of_job(&results, "legacy")
        .values()
        .flatten()
        .map(|r| {
            (
                r["status"].as_str().unwrap(),
                r["attempt"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(attempts, [("timed_out", 1), ("timed_out", 2)]);
    for r in &results {
        let (start, end) = span(r);
        assert!(
            end - start < chrono::Duration::milliseconds(2500),
            "the 1 s --timeout applies: {r}"
        );
        assert_eq!(r["dispatchId"], "legacy@2026-11-26T00:05:00Z");
    }
    assert_eq!(dlq[0]["reason"], "attempts_exhausted");
}
