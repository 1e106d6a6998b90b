//! Dispatch skew of a small minute: how long after its slot a minute's jobs are acked, for the real
//! `cronq run` process (a dispatcher group of one, the release binary), against the broker's own ack
//! time measured in the same run with bare rskafka (one record, same broker, same host).
//!
//! The dispatcher runs on a drill clock (`--drill-clock 20x@…`), so a minute boundary comes every
//! 3 real seconds; its log reports each minute's skew on that clock, which is divided by the speed
//! here to get real milliseconds. Target: skew ≤ 20 ms plus the broker's ack time.
//!
//! `cargo bench --bench skew` measures 20 minutes (needs the test broker: `scripts/broker.sh
//! install`); `cargo test --benches` runs a 3-minute smoke pass.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{pause, random_topic, schedule_file, Broker, CRONQ};
use rskafka::client::partition::{Compression, UnknownTopicHandling};
use rskafka::client::ClientBuilder;
use rskafka::record::Record;

const SPEED: i64 = 20;

/// A `key=value` field of a log line, as a number.
fn field(line: &str, key: &str) -> Option<f64> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split_whitespace().next()?.parse().ok()
}

/// Real skews (ms) of `minutes` consecutive minutes of two every-minute jobs.
fn cronq_skews(broker: &str, minutes: usize) -> Vec<(f64, f64)> {
    let (dir, schedule) = schedule_file(
        r#"{"jobs":[{"jobName":"a","job":"x","cronTime":"* * * * *"},
                    {"jobName":"b","job":"y","cronTime":"* * * * *"}]}"#,
    );
    let topic = random_topic("bench-skew");
    let log = dir.path().join("run.log");
    let mut child = Command::new(CRONQ)
        .env("CRONQ_HTTP", "127.0.0.1:0")
        .args(["run", "--brokers", broker, "--topic", &topic])
        .args(["--group", &format!("g-{topic}")])
        .args([
            "--drill-clock",
            &format!("{SPEED}x@{}", Utc::now().timestamp()),
        ])
        .arg("--schedule")
        .arg(&schedule)
        .env("CRONQ_LOG", "info,rskafka=warn,librdkafka=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("cronq run");
    let deadline = Instant::now() + Duration::from_secs(120 + 4 * minutes as u64);
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<String> = text
            .lines()
            .filter(|l| l.contains("slot dispatched") && l.contains("jobs=2"))
            .map(String::from)
            .collect();
        // The first minute may have been taken over mid-minute: not counted.
        if lines.len() > minutes {
            break lines;
        }
        assert!(Instant::now() < deadline, "too few minutes; log:\n{text}");
        (0..10).for_each(|_| pause());
    };
    let _ = child.kill();
    let _ = child.wait();
    lines[1..=minutes]
        .iter()
        .map(|l| {
            let max = field(l, "skew_max_ms").expect("skew_max_ms");
            let mean = field(l, "skew_mean_ms").expect("skew_mean_ms");
            (max / SPEED as f64, mean / SPEED as f64)
        })
        .collect()
}

/// Ack times (ms) of single records produced with bare rskafka.
async fn raw_acks(broker: &str, samples: usize) -> Vec<f64> {
    let topic = random_topic("bench-ack");
    let client = ClientBuilder::new(vec![broker.to_string()])
        .build()
        .await
        .expect("client");
    client
        .controller_client()
        .expect("controller")
        .create_topic(&topic, 1, 1, 5_000)
        .await
        .expect("create topic");
    let pc = client
        .partition_client(topic, 0, UnknownTopicHandling::Retry)
        .await
        .expect("partition client");
    let mut acks = Vec::new();
    for i in 0..samples {
        let record = Record {
            key: Some(format!("k{i}").into_bytes()),
            value: Some(vec![b'x'; 200]),
            headers: Default::default(),
            timestamp: Utc::now(),
        };
        let start = Instant::now();
        pc.produce(vec![record], Compression::NoCompression)
            .await
            .expect("produce");
        acks.push(start.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    acks
}

fn stats(v: &[f64]) -> (f64, f64, f64) {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let median = s[s.len() / 2];
    (s[0], median, s[s.len() - 1])
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let minutes = if measuring { 20 } else { 3 };
    let broker = Broker::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let acks = rt.block_on(raw_acks(&broker.address(), 20));
    let skews = cronq_skews(&broker.address(), minutes);
    let after = rt.block_on(raw_acks(&broker.address(), 20));
    let acks: Vec<f64> = acks.into_iter().chain(after).collect();
    let (ack_min, ack_median, ack_max) = stats(&acks);
    let max: Vec<f64> = skews.iter().map(|s| s.0).collect();
    let (skew_min, skew_median, skew_max) = stats(&max);
    println!("skew: a minute of 2 jobs, `cronq run` (group of one) on tansu (sqlite), {minutes} minutes at drill speed {SPEED}x");
    println!("  broker ack, bare rskafka, 1 record:  min {ack_min:.1} ms, median {ack_median:.1} ms, max {ack_max:.1} ms ({} samples)", acks.len());
    println!("  cronq slot → last ack, per minute:   min {skew_min:.1} ms, median {skew_median:.1} ms, max {skew_max:.1} ms");
    println!(
        "  median skew − median ack: {:.1} ms (target ≤ 20 ms); worst minute − max ack: {:.1} ms",
        skew_median - ack_median,
        skew_max - ack_max
    );
}
