//! A job's `jitter` end to end, on a real broker (tansu) with real `cronq run` and `cronq worker`
//! processes. The dispatcher runs on a drill clock (`--drill-clock`, 10× faster), so a minute
//! lasts six real seconds; record timestamps (real time, stamped at produce) are mapped back to
//! drill time to compare them with `notBefore`.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use common::*;

/// cronq's default `--partitions` of the job topic.
const PARTITIONS: i32 = 3;

/// Drill speed: a drill minute is 6 real seconds.
const SPEED: i64 = 10;

/// The jittered jobs' `"jitter"`, in ms.
const JITTER_MS: i64 = 30_000;

const JITTERED: usize = 40;

fn schedule_json() -> String {
    let mut jobs: Vec<String> = (0..JITTERED)
        .map(|i| {
            format!(r#"{{"jobName":"spread-{i:02}","job":"run {i}","cronTime":"* * * * *","jitter":"30s"}}"#)
        })
        .collect();
    jobs.push(r#"{"jobName":"plain","job":"run","cronTime":"* * * * *"}"#.to_string());
    format!(r#"{{"jobs":[{}]}}"#, jobs.join(","))
}

/// Member `name` of the group, started and waited for until it runs shards.
fn member(
    broker: &str,
    topic: &str,
    schedule: &Path,
    drill: Drill,
    name: &str,
    dir: &Path,
) -> Dispatcher {
    let mut member = Dispatcher::start(broker, topic, schedule, drill, name, dir, &[]);
    member.wait_log("taking over a shard", Duration::from_secs(90));
    member
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
    let records = consume_all(broker, topic, PARTITIONS, 0, Duration::from_secs(60));
    let high = high_watermarks(broker, topic, PARTITIONS);
    assert_eq!(
        records.len() as i64,
        high.values().sum::<i64>(),
        "records still missing: {high:?}"
    );
    records
        .into_iter()
        .map(|c| Arrived {
            headers: c
                .headers
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect(),
            timestamp_ms: c.timestamp_ms.expect("a record timestamp"),
            value: c.value,
        })
        .collect()
}

/// The offset docs/schedule.md documents: Kafka's murmur2 of the dispatchId, mod the jitter in ms.
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
    let drill = Drill::new(SPEED);
    let mut a = member(&broker.address(), &topic, &schedule, drill, "a", dir.path());
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
        if nb > stopped && produced < nb {
            // Still waiting at SIGTERM: sent then, before its time.
            flushed += 1;
            continue;
        }
        // `stopped` is read just before the signal is sent, and the process takes it in a moment
        // later (longer on a loaded machine): a record due within that moment may leave at its
        // own time. One due later must have been sent at SIGTERM.
        assert!(
            nb <= stopped + chrono::Duration::seconds(5),
            "{}: produced {produced}, notBefore {nb}: still waiting at SIGTERM, not sent then",
            r.value
        );
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
    let (_, view) = group_status(&broker.address(), &topic, drill);
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
    let drill = Drill::new(SPEED);
    let mut a = member(&broker.address(), &topic, &schedule, drill, "a", dir.path());
    let m0 = drill.minute();
    drill.wait_until(m0 + 2, 8);
    a.kill9();
    let mut b = member(&broker.address(), &topic, &schedule, drill, "b", dir.path());
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
    wait_for_line(
        &log,
        "partitions assigned",
        Duration::from_secs(60),
        "worker never got its partition",
    );

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
        Record {
            key: name.as_bytes().to_vec(),
            value: serde_json::to_vec(&v).unwrap(),
            partition: Some(0),
            headers: Vec::new(),
        }
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
    // docs/schedule.md's example of this job's 12:05 slot.
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
