//! A live dispatcher whose wall clock steps, against the real broker: libfaketime is preloaded into
//! the `cronq run` process and its offset changed while it runs (its monotonic clock stays true),
//! while this test and the broker keep the true time. A real-clock test of about four minutes.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Timelike, Utc};
use common::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Sets libfaketime's offset file at once: a new file renamed over it, so that the process (which
/// re-reads it at every clock reading) never reads it empty, half-written between a truncation and
/// a write, which it takes as no offset at all: a second step.
fn set_offset(path: &Path, offset: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, format!("{offset}\n")).expect("write the offset");
    std::fs::rename(&next, path).expect("set the offset");
}

/// Records as they arrived, each with the true time it arrived at.
type Arrivals = Vec<(serde_json::Value, DateTime<Utc>)>;

/// Records of `topic` as they arrive.
struct Follower {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Arrivals>>,
    thread: std::thread::JoinHandle<()>,
}

impl Follower {
    fn start(broker: &str, topic: &str) -> Follower {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", broker)
            .set("group.id", format!("follow-{topic}"))
            .set("enable.auto.commit", "false")
            .create()
            .expect("rdkafka consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .expect("partition offset");
        consumer.assign(&tpl).expect("assign");
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (stop_, seen_) = (Arc::clone(&stop), Arc::clone(&seen));
        let thread = std::thread::spawn(move || {
            while !stop_.load(Ordering::SeqCst) {
                if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                    let value = serde_json::from_slice(m.payload().unwrap_or_default())
                        .unwrap_or(serde_json::Value::Null);
                    seen_.lock().unwrap().push((value, Utc::now()));
                }
            }
        });
        Follower { stop, seen, thread }
    }

    fn finish(self) -> Arrivals {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("follower thread");
        Arc::try_unwrap(self.seen)
            .map(|m| m.into_inner().unwrap())
            .unwrap_or_default()
    }
}

/// Polls `GET url` until `pred` holds for (status, body), at most `timeout`.
fn wait_http(url: &str, timeout: Duration, pred: impl Fn(u16, &str) -> bool) -> (u16, String) {
    let deadline = Instant::now() + timeout;
    loop {
        let (code, body) = http_get(url);
        if pred(code, &body) || Instant::now() >= deadline {
            return (code, body);
        }
        pause();
    }
}

/// Waits (polling) until the true clock has passed `at`.
fn wait_until(at: DateTime<Utc>) {
    while Utc::now() < at {
        pause();
    }
}

fn minute_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(60)
}

#[test]
fn a_wall_clock_stepped_two_hours_ahead_for_three_minutes_sends_nothing_early_and_loses_no_slot() {
    assert!(
        Path::new(LIBFAKETIME).exists(),
        "{LIBFAKETIME} is missing: scripts/deps.sh test installs faketime"
    );
    let broker = Broker::start();
    let addr = broker.address();
    let topic = random_topic("clock-step");
    create_topic(&addr, &topic, 1);
    let (dir, schedule) = schedule_file(
        r#"{"jobs":[{"jobName":"every-minute","job":"true","cronTime":"* * * * *","catchup":"all"}]}"#,
    );
    let offset = dir.path().join("faketime-offset");
    std::fs::write(&offset, "+0\n").expect("offset file");
    let env: [(&str, &OsStr); 4] = [
        ("LD_PRELOAD", OsStr::new(LIBFAKETIME)),
        ("FAKETIME_TIMESTAMP_FILE", offset.as_os_str()),
        ("FAKETIME_NO_CACHE", OsStr::new("1")),
        ("FAKETIME_DONT_FAKE_MONOTONIC", OsStr::new("1")),
    ];
    let follower = Follower::start(&addr, &topic);
    let mut member = Dispatcher::start_on_real_clock(
        &addr,
        &topic,
        &schedule,
        "a",
        dir.path(),
        &["--shards", "1", "--partitions", "1"],
        &env,
    );
    member.wait_log("taking over a shard", Duration::from_secs(60));
    let http = http_addr_in_log(&member.log, Duration::from_secs(10));
    let ready = format!("http://{http}/readyz");
    let (code, body) = wait_http(&ready, Duration::from_secs(30), |c, _| c == 200);
    assert_eq!(code, 200, "ready before the step: {body}");
    // Every slot from the next minute on is the member's to send.
    let live = Utc::now();

    // The step: two hours ahead, for three minutes.
    set_offset(&offset, "+2h");
    let stepped_at = Instant::now();
    let during = wait_http(&ready, Duration::from_secs(10), |c, b| {
        c == 503 && b.contains("clock fault")
    });
    while stepped_at.elapsed() < Duration::from_secs(180) {
        pause();
    }
    let late_during = http_get(&ready);
    // The correction.
    set_offset(&offset, "+0");
    let after = wait_http(&ready, Duration::from_secs(10), |c, _| c == 200);
    // A minute boundary after the correction: the member still serves its shard.
    let next = Utc::now()
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .expect("minute")
        + chrono::Duration::seconds(63);
    wait_until(next);
    let metrics = http_get(&format!("http://{http}/metrics")).1;
    let last = minute_of(Utc::now() - chrono::Duration::seconds(3));
    // Each slot is acked within milliseconds of its minute; what was acked is read.
    let deadline = Instant::now() + Duration::from_secs(10);
    while (follower.seen.lock().unwrap().len() as i64) < last - minute_of(live)
        && Instant::now() < deadline
    {
        pause();
    }
    let seen = follower.seen.lock().unwrap().clone();

    with_logs(&[&member], || {
        // No record before its time.
        for (record, arrived) in &seen {
            let at: DateTime<Utc> = record["scheduledAt"]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no scheduledAt: {record}"));
            assert!(
                at - *arrived <= chrono::Duration::minutes(1),
                "{record} arrived at {arrived}: {} s before its slot",
                (at - *arrived).num_seconds()
            );
        }
        // No slot of the true minutes lost, none sent twice.
        let mut slots: BTreeMap<i64, usize> = BTreeMap::new();
        for (record, _) in &seen {
            let at: DateTime<Utc> = record["scheduledAt"].as_str().unwrap().parse().unwrap();
            *slots.entry(minute_of(at)).or_default() += 1;
        }
        for m in minute_of(live) + 1..=last {
            assert_eq!(
                slots.get(&m).copied().unwrap_or(0),
                1,
                "slot {m} (minute {} of the test) sent once; slots: {slots:?}",
                m - minute_of(live)
            );
        }
        // Not ready while the step was held, with the reason; ready again after the correction.
        assert_eq!(during.0, 503, "not ready after the step: {}", during.1);
        assert_eq!(
            late_during.0, 503,
            "still not ready 3 minutes on: {}",
            late_during.1
        );
        assert_eq!(after.0, 200, "ready after the correction: {}", after.1);
        // At least one: a reading of the offset file as it is replaced may see a step twice.
        let forward: u64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("cronq_clock_steps_total{direction=\"forward\"} "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        assert!(forward >= 1, "the step was not counted: {metrics}");
        let log = member.log();
        assert!(
            log.contains("ERROR") && log.contains("clock fault"),
            "logged as an error"
        );
        eprintln!(
            "{} records, slots {}..={}",
            seen.len(),
            minute_of(live) + 1,
            last
        );
    });
    // Stops on SIGTERM within its grace (10 s) after the clock went back two hours.
    let stopping = Instant::now();
    member.terminate();
    let stop_took = stopping.elapsed();
    eprintln!("stopped in {stop_took:?}");
    with_logs(&[&member], || {
        assert!(
            stop_took < Duration::from_secs(15),
            "stopped in {stop_took:?}"
        )
    });
    follower.finish();
}
