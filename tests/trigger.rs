//! `cronq trigger`: a run by hand reaches a real worker through a real broker and runs once.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn trigger(broker: &str, schedule: &Path, topic: &str, args: &[&str]) -> std::process::Output {
    Command::new(CRONQ)
        .env("CRONQ_HTTP", "127.0.0.1:0")
        .args([
            "trigger",
            "--brokers",
            broker,
            "--topic",
            topic,
            "--schedule",
        ])
        .arg(schedule)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run cronq trigger")
}

/// A child process killed when dropped, so a failing test leaves nothing running.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `cronq worker --shell` on `topic`, results on `<topic>.results`, stderr to `log`.
fn start_worker(broker: &str, topic: &str, log: &Path) -> Running {
    let child = Command::new(CRONQ)
        .env("CRONQ_HTTP", "127.0.0.1:0")
        .args(["worker", "--shell", "--brokers", broker, "--topic", topic])
        .args(["--group", &format!("{topic}-workers")])
        .args(["--results-topic", &format!("{topic}.results")])
        .args(["--commit-interval", "100ms"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    Running(child)
}

/// The JobResult of dispatch `id` on `<topic>.results`, waiting up to `within`.
fn wait_for_result(broker: &str, topic: &str, id: &str, log: &Path, within: Duration) -> Consumed {
    let results_topic = format!("{topic}.results");
    let deadline = Instant::now() + within;
    loop {
        let results = consume_all(broker, &results_topic, 3, 1, Duration::from_secs(5));
        if let Some(r) = results.into_iter().find(|r| r.value["dispatchId"] == id) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "no result for {id} within {within:?}; worker log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        pause();
    }
}

#[test]
fn a_triggered_run_reaches_a_worker_and_runs_once() {
    let broker = Broker::start();
    let topic = random_topic("trigger");
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran.txt");
    // No dispatcher runs here: the only run is the triggered one.
    let schedule = format!(
        r#"{{"jobs":[{{"jobName":"by-hand","priority":1,"job":"echo \"$CRONQ_DISPATCH_ID\" >> {}","cronTime":"0 0 1 1 *"}},
            {{"jobName":"other","priority":1,"job":"true","cronTime":"0 0 * * *"}}]}}"#,
        marker.display()
    );
    let (_sdir, path) = schedule_file(&schedule);
    let before = chrono::Utc::now().timestamp();
    let out = trigger(
        &broker.address(),
        &path,
        &topic,
        &["by-hand", "--reason", "INC-42: re-run after the fix"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    // by-hand@<instant, milliseconds>#manual, at the trigger instant.
    let at = id
        .strip_prefix("by-hand@")
        .and_then(|rest| rest.strip_suffix("#manual"))
        .unwrap_or_else(|| panic!("dispatchId {id:?}"));
    let at = chrono::DateTime::parse_from_rfc3339(at)
        .unwrap()
        .timestamp();
    assert!(
        (before..=before + 5).contains(&at),
        "{id} triggered at {before}"
    );

    // The record on the topic is the job's, with the dispatchId printed.
    let records = consume_all(&broker.address(), &topic, 3, 1, Duration::from_secs(30));
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0].key, b"by-hand");
    assert_eq!(records[0].value["dispatchId"], id.as_str());
    assert_eq!(records[0].value["scheduledAt"], id[8..id.len() - 7]);
    // Who triggered it, and why, for the audit.
    let header = |name: &str| {
        records[0]
            .headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).to_string())
    };
    let by = header("cronq-by").unwrap_or_default();
    let (user, host) = by.split_once('@').unwrap_or_default();
    assert!(!user.is_empty() && !host.is_empty(), "cronq-by: {by:?}");
    assert_eq!(
        header("cronq-reason").as_deref(),
        Some("INC-42: re-run after the fix")
    );

    // A worker runs it once and reports it.
    let log = dir.path().join("worker.log");
    let worker = start_worker(&broker.address(), &topic, &log);
    let result = wait_for_result(
        &broker.address(),
        &topic,
        &id,
        &log,
        Duration::from_secs(90),
    );
    drop(worker);
    assert_eq!(result.value["status"], "succeeded", "{}", result.value);
    let ran = std::fs::read_to_string(&marker).unwrap();
    assert_eq!(ran, format!("{id}\n"), "ran once, with its dispatchId");
}

#[test]
fn trigger_refuses_an_unknown_job_and_a_past_instant_naming_them() {
    let (_dir, path) = schedule_file(
        r#"{"jobs":[{"jobName":"nightly-backup","priority":1,"job":"true","cronTime":"0 2 * * *"}]}"#,
    );
    // No broker is needed to refuse these: nothing is sent.
    let out = Command::new(CRONQ)
        .args([
            "trigger",
            "nightly-backpu",
            "--brokers",
            "127.0.0.1:9",
            "--schedule",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no job \"nightly-backpu\" in")
            && stderr.contains("did you mean \"nightly-backup\"?"),
        "{stderr}"
    );
    let out = Command::new(CRONQ)
        .args([
            "trigger",
            "nightly-backup",
            "--brokers",
            "127.0.0.1:9",
            "--at",
            "2020-01-01T00:00:00Z",
            "--schedule",
        ])
        .arg(&path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--at: 2020-01-01T00:00:00Z is in the past"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn trigger_at_a_later_instant_waits_for_it_and_stamps_the_run_with_it() {
    let broker = Broker::start();
    let topic = random_topic("trigger-at");
    let (_dir, path) = schedule_file(
        r#"{"jobs":[{"jobName":"later","priority":1,"job":"true","cronTime":"0 2 * * *"}]}"#,
    );
    let at = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() + 3, 0).unwrap();
    let at_text = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    // The record writes the instant in milliseconds.
    let at_ms = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let out = trigger(
        &broker.address(),
        &path,
        &topic,
        &["later", "--at", &at_text],
    );
    let done = chrono::Utc::now();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap();
    assert_eq!(id, format!("later@{at_ms}#manual\n"));
    assert!(done >= at, "returned at {done}, before {at}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("waiting to trigger"),
        "says what it waits for: {stderr}"
    );
    let records = consume_all(&broker.address(), &topic, 3, 1, Duration::from_secs(30));
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value["scheduledAt"], at_ms.as_str());
}

/// Two `cronq trigger X` within one second are two runs: with a whole-seconds dispatchId the
/// worker took the second for a duplicate of the first and ran it not at all.
#[test]
fn two_triggers_in_the_same_second_are_two_runs() {
    let broker = Broker::start();
    let topic = random_topic("trigger-twice");
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran.txt");
    let (_sdir, path) = schedule_file(&format!(
        r#"{{"jobs":[{{"jobName":"twice","priority":1,"job":"echo \"$CRONQ_DISPATCH_ID\" >> {}","cronTime":"0 0 1 1 *"}}]}}"#,
        marker.display()
    ));
    let second = |id: &str| {
        let at = id
            .strip_prefix("twice@")
            .and_then(|rest| rest.strip_suffix("#manual"))
            .unwrap_or_else(|| panic!("dispatchId {id:?}"));
        chrono::DateTime::parse_from_rfc3339(at)
            .unwrap()
            .timestamp()
    };
    // Two triggers one after the other (each well under a second); a pair that straddles a
    // second boundary proves nothing, so try again (up to 10 pairs).
    let mut ids = Vec::new();
    let mut in_one_second = false;
    for _ in 0..10 {
        let pair: Vec<String> = (0..2)
            .map(|_| {
                let out = trigger(&broker.address(), &path, &topic, &["twice"]);
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                String::from_utf8(out.stdout).unwrap().trim().to_string()
            })
            .collect();
        let same = second(&pair[0]) == second(&pair[1]);
        ids.extend(pair.iter().cloned());
        if same {
            assert_ne!(
                pair[0], pair[1],
                "two triggers in one second got one dispatchId"
            );
            in_one_second = true;
            break;
        }
    }
    assert!(
        in_one_second,
        "no two triggers landed in one second: {ids:?}"
    );
    let log = dir.path().join("worker.log");
    let worker = start_worker(&broker.address(), &topic, &log);
    for id in &ids {
        let result = wait_for_result(&broker.address(), &topic, id, &log, Duration::from_secs(90));
        assert_eq!(result.value["status"], "succeeded", "{}", result.value);
    }
    drop(worker);
    let ran = std::fs::read_to_string(&marker).unwrap();
    let mut ran: Vec<&str> = ran.lines().collect();
    ran.sort();
    let mut expected: Vec<&str> = ids.iter().map(String::as_str).collect();
    expected.sort();
    assert_eq!(ran, expected, "every trigger ran once");
}

/// A worker started before its job topic exists picks the topic up within seconds once a trigger
/// creates it (librdkafka alone re-reads topic metadata only every 5 minutes).
#[test]
fn a_worker_started_before_its_topic_exists_runs_the_first_trigger_within_seconds() {
    let broker = Broker::start();
    let topic = random_topic("trigger-late-topic");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("worker.log");
    let worker = start_worker(&broker.address(), &topic, &log);
    // The worker has joined (its status line) before the topic exists.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("worker started")
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        pause();
    }
    let (_sdir, path) = schedule_file(
        r#"{"jobs":[{"jobName":"first","priority":1,"job":"true","cronTime":"0 2 * * *"}]}"#,
    );
    let out = trigger(&broker.address(), &path, &topic, &["first"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let result = wait_for_result(
        &broker.address(),
        &topic,
        &id,
        &log,
        Duration::from_secs(60),
    );
    drop(worker);
    assert_eq!(result.value["status"], "succeeded", "{}", result.value);
}
