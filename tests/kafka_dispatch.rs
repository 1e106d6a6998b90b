//! `cronq run` against a real Kafka-protocol broker (tansu), consumed with rdkafka.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use common::*;
use cronq::cron::CronExpr;

/// cronq's default `--partitions`.
const PARTITIONS: i32 = 3;

/// The slots of each job in [from, until), straight from the cron module (the oracle for what the
/// wheel, tick loop and producers must deliver).
fn expected_slots(jobs: &[(&str, &str, &str)], from: &str, until: &str) -> HashSet<String> {
    let from: DateTime<Utc> = from.parse().unwrap();
    let until: DateTime<Utc> = until.parse().unwrap();
    let mut out = HashSet::new();
    for (name, cron, tz) in jobs {
        let expr = CronExpr::parse_in(cron, tz).unwrap();
        let mut t = from - chrono::Duration::seconds(1);
        while let Some(next) = expr.next_after(t) {
            if next >= until {
                break;
            }
            out.insert(format!(
                "{name}@{}",
                next.to_rfc3339_opts(SecondsFormat::Secs, true)
            ));
            t = next;
        }
    }
    out
}

fn schedule_json(jobs: &[(&str, &str, &str)]) -> String {
    let entries: Vec<String> = jobs
        .iter()
        .enumerate()
        .map(|(i, (name, cron, tz))| {
            format!(r#"{{"jobName":"{name}","priority":{},"job":"run {name}","cronTime":"{cron}","timezone":"{tz}"}}"#, i % 10)
        })
        .collect();
    format!(r#"{{"jobs":[{}]}}"#, entries.join(","))
}

fn header<'a>(c: &'a Consumed, name: &str) -> &'a [u8] {
    c.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_slice())
        .unwrap_or_else(|| panic!("header {name} missing"))
}

#[test]
fn a_day_of_a_realistic_schedule_arrives_exactly_once_with_key_headers_and_murmur2_partition() {
    let broker = Broker::start();
    let topic = random_topic("day");
    let jobs = [
        ("heartbeat", "* * * * *", "UTC"),
        ("metrics", "*/5 * * * *", "UTC"),
        ("rollup", "@hourly", "UTC"),
        ("backup", "30 2 * * *", "Europe/Berlin"),
        ("report", "0 12 * * MON-FRI", "America/New_York"),
        ("sunday-only", "0 12 * * 0", "UTC"),
    ];
    let (dir, schedule) = schedule_file(&schedule_json(&jobs));
    let log = dir.path().join("cronq.log");
    let (from, until) = ("2026-11-26T00:00:00Z", "2026-11-27T00:00:00Z");
    let mut child = cronq_backfill(&broker.address(), &topic, &schedule, from, until, &log, &[]);
    let status = wait_exit(&mut child, Duration::from_secs(120), &log);
    assert!(
        status.success(),
        "cronq failed: {}",
        std::fs::read_to_string(&log).unwrap()
    );

    let expected = expected_slots(&jobs, from, until);
    assert_eq!(
        expected.len(),
        1440 + 288 + 24 + 1 + 1,
        "sanity of the oracle (Thursday)"
    );
    let got = consume_all(
        &broker.address(),
        &topic,
        PARTITIONS,
        expected.len(),
        Duration::from_secs(60),
    );
    let mut ids = HashSet::new();
    for c in &got {
        let v = &c.value;
        assert_eq!(v["v"], 1);
        let name = v["jobName"].as_str().unwrap();
        assert_eq!(c.key, name.as_bytes(), "key is jobName");
        let id = v["dispatchId"].as_str().unwrap();
        assert_eq!(id, format!("{name}@{}", v["scheduledAt"].as_str().unwrap()));
        assert_eq!(v["job"], format!("run {name}"));
        let (_, cron, _) = jobs.iter().find(|j| j.0 == name).unwrap();
        assert_eq!(v["cronTime"], *cron);
        assert_eq!(header(c, "cronq-dispatch-id"), id.as_bytes());
        assert_eq!(
            header(c, "cronq-scheduled-at"),
            v["scheduledAt"].as_str().unwrap().as_bytes()
        );
        assert_eq!(
            header(c, "cronq-priority"),
            v["priority"].to_string().as_bytes()
        );
        assert_eq!(
            c.partition,
            cronq::wire::partition_for(name.as_bytes(), PARTITIONS),
            "murmur2 partition of {name}"
        );
        assert!(ids.insert(id.to_string()), "duplicate dispatch {id}");
    }
    assert_eq!(ids, expected, "every expected slot exactly once");
}

#[test]
fn a_burst_of_20k_jobs_due_in_the_same_minute_all_arrive() {
    let broker = Broker::start();
    let topic = random_topic("burst");
    let names: Vec<String> = (0..20_000).map(|i| format!("burst-{i:05}")).collect();
    let jobs: Vec<(&str, &str, &str)> = names
        .iter()
        .map(|n| (n.as_str(), "0 12 * * *", "UTC"))
        .collect();
    let (dir, schedule) = schedule_file(&schedule_json(&jobs));
    let log = dir.path().join("cronq.log");
    let mut child = cronq_backfill(
        &broker.address(),
        &topic,
        &schedule,
        "2026-11-26T12:00:00Z",
        "2026-11-26T12:01:00Z",
        &log,
        &[],
    );
    assert!(wait_exit(&mut child, Duration::from_secs(180), &log).success());
    let got = consume_all(
        &broker.address(),
        &topic,
        PARTITIONS,
        20_000,
        Duration::from_secs(120),
    );
    let ids: HashSet<&str> = got
        .iter()
        .map(|c| c.value["dispatchId"].as_str().unwrap())
        .collect();
    assert_eq!(got.len(), 20_000);
    assert_eq!(ids.len(), 20_000);
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        log_text.contains("slot dispatched") && log_text.contains("jobs=20000"),
        "per-minute line:\n{log_text}"
    );
}

#[test]
fn a_broker_killed_mid_dispatch_and_restarted_loses_nothing_and_duplicates_keep_their_dispatch_id()
{
    let mut broker = Broker::start();
    let topic = random_topic("kill");
    let names: Vec<String> = (0..1_000).map(|i| format!("k-{i:04}")).collect();
    let jobs: Vec<(&str, &str, &str)> = names
        .iter()
        .map(|n| (n.as_str(), "*/2 * * * *", "UTC"))
        .collect();
    let (dir, schedule) = schedule_file(&schedule_json(&jobs));
    let log = dir.path().join("cronq.log");
    let (from, until) = ("2026-11-26T00:00:00Z", "2026-11-26T01:00:00Z");
    let mut child = cronq_backfill(
        &broker.address(),
        &topic,
        &schedule,
        from,
        until,
        &log,
        // small produce requests, so the hour takes long enough to be interrupted
        &[
            "--batch-size",
            "20",
            "--producers",
            "2",
            "--queue-capacity",
            "100",
        ],
    );
    // Let some records through, then kill the broker without warning.
    wait_for_line(
        &log,
        "slot dispatched",
        Duration::from_secs(60),
        "no progress before the kill",
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "cronq finished before the kill; the window is too small to test an outage"
    );
    broker.kill();
    let down_at = Instant::now();
    while down_at.elapsed() < Duration::from_secs(3) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "cronq must wait for the broker, not exit"
        );
        pause();
    }
    broker.launch();
    assert!(wait_exit(&mut child, Duration::from_secs(300), &log).success());

    let expected = expected_slots(&jobs, from, until);
    assert_eq!(expected.len(), 30_000);
    let got = consume_all(
        &broker.address(),
        &topic,
        PARTITIONS,
        expected.len(),
        Duration::from_secs(120),
    );
    let mut counts: HashMap<String, usize> = HashMap::new();
    for c in &got {
        *counts
            .entry(c.value["dispatchId"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    let delivered: HashSet<String> = counts.keys().cloned().collect();
    let missing: Vec<&String> = expected.difference(&delivered).take(5).collect();
    assert!(
        missing.is_empty(),
        "{} slots missing, e.g. {missing:?}",
        expected.len() - delivered.len()
    );
    let duplicates: usize = counts.values().map(|n| n - 1).sum();
    println!(
        "broker kill: {} records, {} distinct slots, {duplicates} duplicates (same dispatchId)",
        got.len(),
        delivered.len()
    );
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(
        // ours ("produce failed; retrying") once rskafka's own short retry deadline has passed,
        // or rskafka's "Failed to connect to broker" for shorter outages; both name the broker
        (log_text.contains("retrying") || log_text.contains("Failed to connect to broker"))
            && log_text.contains(&broker.address()),
        "the outage was reported with the broker's address:\n{log_text}"
    );
}

#[test]
fn a_broker_that_is_down_at_start_up_is_waited_for_and_then_gets_everything() {
    let mut broker = Broker::not_started();
    let topic = random_topic("late");
    let jobs = [
        ("late-a", "* * * * *", "UTC"),
        ("late-b", "*/10 * * * *", "UTC"),
    ];
    let (dir, schedule) = schedule_file(&schedule_json(&jobs));
    let log = dir.path().join("cronq.log");
    let (from, until) = ("2026-11-26T10:00:00Z", "2026-11-26T11:00:00Z");
    let mut child = cronq_backfill(&broker.address(), &topic, &schedule, from, until, &log, &[]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("cannot reach Kafka") {
            assert!(
                text.contains(&broker.address()),
                "the message names the broker:\n{text}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no 'cannot reach Kafka' log:\n{text}"
        );
        pause();
    }
    assert!(child.try_wait().unwrap().is_none(), "cronq keeps waiting");
    broker.launch();
    assert!(wait_exit(&mut child, Duration::from_secs(120), &log).success());
    let expected = expected_slots(&jobs, from, until);
    let got = consume_all(
        &broker.address(),
        &topic,
        PARTITIONS,
        expected.len(),
        Duration::from_secs(60),
    );
    let ids: BTreeMap<String, ()> = got
        .iter()
        .map(|c| (c.value["dispatchId"].as_str().unwrap().to_string(), ()))
        .collect();
    assert_eq!(ids.len(), expected.len());
    assert_eq!(got.len(), expected.len());
}
