//! Property tests of a job's jitter offset: within `[0, jitter)`, stable per (job, slot), the
//! documented hash (checked against an independent murmur2 written here from Kafka's Java
//! `Utils.murmur2`), and uniform over the window (χ² goodness of fit, as the tests of `H` do).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cronq::schedule::record::JobRecord;
use cronq::schedule::{Catchup, JobSpec, DEFAULT_CATCHUP_WINDOW};
use cronq::wire::{slot_text, JobMessage};
use proptest::prelude::*;

/// Kafka's murmur2 (`org.apache.kafka.common.utils.Utils.murmur2`), written out from the Java
/// source's algorithm: the oracle for the offset, independent of the crate cronq uses.
fn oracle_murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut h: u32 = SEED ^ (length as u32);
    let quads = length / 4;
    for i in 0..quads {
        let i4 = i * 4;
        let mut k: u32 = u32::from(data[i4])
            | (u32::from(data[i4 + 1]) << 8)
            | (u32::from(data[i4 + 2]) << 16)
            | (u32::from(data[i4 + 3]) << 24);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = quads * 4;
    match length % 4 {
        3 => {
            h ^= u32::from(data[tail + 2]) << 16;
            h ^= u32::from(data[tail + 1]) << 8;
            h ^= u32::from(data[tail]);
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= u32::from(data[tail + 1]) << 8;
            h ^= u32::from(data[tail]);
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= u32::from(data[tail]);
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

fn spec(name: &str, jitter: Duration) -> JobSpec {
    JobSpec {
        name: name.to_string(),
        priority: 0,
        job: "run".into(),
        cron_time: Arc::from("* * * * *"),
        timezone: chrono_tz::UTC,
        topic: None,
        enabled: true,
        catchup: Catchup::All,
        catchup_window: DEFAULT_CATCHUP_WINDOW,
        shard: 0,
        timeout: None,
        max_attempts: None,
        overlap: None,
        jitter: Some(jitter),
        timing: None,
        deadline: None,
    }
}

/// The offset of `name`'s slot at `slot` as the message states it: `notBefore − scheduledAt`.
fn message_offset_ms(name: &str, slot: DateTime<Utc>, jitter: Duration) -> i64 {
    let message = JobMessage::for_slot(&spec(name, jitter), slot);
    let not_before: DateTime<Utc> = message
        .not_before
        .as_deref()
        .expect("a job with a jitter has notBefore")
        .parse()
        .expect("notBefore is RFC 3339");
    (not_before - slot).num_milliseconds()
}

fn minute(index: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(index * 60, 0).expect("in range")
}

/// The χ² critical value at a 0.1 % significance level for `df` degrees of freedom
/// (Wilson-Hilferty).
fn critical(df: f64) -> f64 {
    let z = 3.090_232;
    let a = 2.0 / (9.0 * df);
    df * (1.0 - a + z * a.sqrt()).powi(3)
}

fn chi2(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    let expected = total as f64 / counts.len() as f64;
    counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum()
}

proptest! {
    /// Any job name, slot and jitter from 1 ms to the 10-minute cap: the offset is in
    /// `[0, jitter)`, is `oracle_murmur2(dispatchId) mod jitter`, and is the same every time,
    /// in the message, the record's value and its header alike.
    #[test]
    fn the_offset_is_within_the_window_stable_and_the_documented_hash(
        name in "[a-zA-Z0-9._/-]{1,40}|.{1,20}",
        minute_index in 0i64..70_000_000,
        jitter_ms in 1u64..=600_000,
    ) {
        let slot = minute(minute_index);
        let jitter = Duration::from_millis(jitter_ms);
        let offset = message_offset_ms(&name, slot, jitter);
        prop_assert!((0..jitter_ms as i64).contains(&offset), "{offset} not in [0, {jitter_ms})");
        let id = format!("{name}@{}", slot_text(slot));
        prop_assert_eq!(offset as u64, u64::from(oracle_murmur2(id.as_bytes())) % jitter_ms);
        prop_assert_eq!(message_offset_ms(&name, slot, jitter), offset);
        let record = JobRecord::encode(&spec(&name, jitter), &slot_text(slot), Utc::now());
        let message: JobMessage = serde_json::from_slice(&record.value).unwrap();
        prop_assert_eq!(&message, &JobMessage::for_slot(&spec(&name, jitter), slot));
        let header = record.headers.get("cronq-not-before").expect("header");
        prop_assert_eq!(message.not_before.as_deref().map(str::as_bytes), Some(header.as_slice()));
        // scheduledAt and dispatchId stay the slot's.
        prop_assert_eq!(&message.scheduled_at, &slot_text(slot));
        prop_assert_eq!(&message.dispatch_id, &id);
    }
}

/// One job's consecutive slots (100 000 minutes, about 70 days) spread uniformly over a 60 s
/// window: χ² over 60 one-second bins.
#[test]
fn one_jobs_slots_spread_uniformly_over_the_window() {
    let jitter = Duration::from_secs(60);
    let mut counts = vec![0u64; 60];
    for i in 0..100_000 {
        let offset = message_offset_ms("nightly-backup", minute(29_500_000 + i), jitter);
        counts[(offset / 1000) as usize] += 1;
    }
    let (value, limit) = (chi2(&counts), critical(59.0));
    assert!(value < limit, "chi2 {value:.1} >= {limit:.1}: {counts:?}");
}

/// 100 000 job names in one slot spread uniformly over a 7.5 s window (50 bins of 150 ms), and
/// the milliseconds themselves are uniform (10 bins of the last digit): the resolution is real.
#[test]
fn many_jobs_in_one_slot_spread_uniformly_at_millisecond_resolution() {
    let jitter = Duration::from_millis(7_500);
    let slot = minute(29_500_000);
    let mut bins = vec![0u64; 50];
    let mut last_digit = vec![0u64; 10];
    for i in 0..100_000 {
        let name = format!("team-{}/job-{i}", i % 37);
        let offset = message_offset_ms(&name, slot, jitter);
        bins[(offset / 150) as usize] += 1;
        last_digit[(offset % 10) as usize] += 1;
    }
    for (what, counts) in [("150 ms bins", &bins), ("last digit", &last_digit)] {
        let df = (counts.len() - 1) as f64;
        let (value, limit) = (chi2(counts), critical(df));
        assert!(
            value < limit,
            "{what}: chi2 {value:.1} >= {limit:.1}: {counts:?}"
        );
    }
}

/// The oracle is Kafka's murmur2: the Java client's published test vectors.
#[test]
fn the_oracle_matches_kafkas_murmur2_test_vectors() {
    for (key, expected) in [
        ("21", -973_932_308),
        ("foobar", -790_332_482),
        ("a-little-bit-long-string", -985_981_536),
        ("a-little-bit-longer-string", -1_486_304_829),
        ("abc", 479_470_107),
    ] {
        assert_eq!(oracle_murmur2(key.as_bytes()) as i32, expected, "{key}");
    }
}
