//! How `H` spreads a herd: 100 000 jobs through cronq's own loader and Scheduler, counted per
//! minute, against the same jobs written with a fixed minute. Not a timing bench: it measures the
//! shape of the load the workers see.
//!
//! - `0 * * * *` against `H * * * *` over one hour (60 buckets),
//! - `H H * * *` over one day (1 440 buckets),
//! - `H/15 * * * *` over a quarter hour (each job once; the next quarters repeat it).
//!
//! For each: jobs per minute (mean, min, max, max ÷ mean, standard deviation against the binomial
//! one of a uniform choice) and Pearson's χ² against the uniform distribution with its 99.9 %
//! critical value. `cargo bench --bench spread`; `SPREAD_JOBS=N` changes the job count.

use std::path::Path;

use chrono::{TimeZone, Utc};
use cronq::clock::Minute;
use cronq::dispatcher::Scheduler;
use cronq::schedule::{self, LoadOptions};

/// `jobs` jobs written `cron`, named as a real fleet's might be.
fn schedule_of(jobs: usize, cron: &str) -> schedule::Schedule {
    let entries: Vec<String> = (0..jobs)
        .map(|i| {
            format!(
                r#"{{"jobName":"team-{}/report-{i}","priority":0,"job":"run","cronTime":"{cron}"}}"#,
                i % 97
            )
        })
        .collect();
    let json = format!(r#"{{"jobs":[{}]}}"#, entries.join(","));
    schedule::parse(
        json.as_bytes(),
        Path::new("spread.json"),
        LoadOptions::default(),
    )
    .expect("schedule")
}

/// Dispatches per minute of `minutes` minutes from midnight of 2026-11-30 UTC.
fn per_minute(schedule: schedule::Schedule, minutes: usize) -> Vec<u64> {
    let start = Minute::containing(Utc.with_ymd_and_hms(2026, 11, 30, 0, 0, 0).unwrap());
    let mut scheduler = Scheduler::new(schedule, Minute(start.0 - 1));
    let mut out = Vec::new();
    (0..minutes)
        .map(|m| {
            out.clear();
            scheduler.run_minute(Minute(start.0 + m as i64), &mut out);
            out.len() as u64
        })
        .collect()
}

/// The χ² value that a uniform distribution exceeds with probability 0.001 (Wilson-Hilferty).
fn chi2_critical_999(df: f64) -> f64 {
    let z = 3.090_232; // the standard normal's 99.9th percentile
    let a = 2.0 / (9.0 * df);
    df * (1.0 - a + z * a.sqrt()).powi(3)
}

fn report(label: &str, counts: &[u64]) {
    let n = counts.len() as f64;
    let total: u64 = counts.iter().sum();
    let mean = total as f64 / n;
    let min = counts.iter().copied().min().unwrap_or(0);
    let max = counts.iter().copied().max().unwrap_or(0);
    let var = counts
        .iter()
        .map(|&c| (c as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let binomial_sd = (mean * (1.0 - 1.0 / n)).sqrt();
    let chi2: f64 = counts
        .iter()
        .map(|&c| (c as f64 - mean).powi(2) / mean)
        .sum();
    let critical = chi2_critical_999(n - 1.0);
    println!(
        "{label:<28} {total:>7} runs in {:>4} min: mean {mean:>8.1}, min {min:>6}, max {max:>6}, \
         max/mean {:>6.3}, sd {:>7.1} (uniform {binomial_sd:.1}), chi2 {chi2:>9.1} (99.9% critical {critical:.1}: {})",
        counts.len(),
        max as f64 / mean,
        var.sqrt(),
        if chi2 <= critical { "uniform" } else { "NOT uniform" },
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: both just run.
    let jobs: usize = std::env::var("SPREAD_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    println!("spread of {jobs} jobs, per minute (cronq's loader resolves H, its Scheduler fires)");
    report(
        "0 * * * *  (one hour)",
        &per_minute(schedule_of(jobs, "0 * * * *"), 60),
    );
    report(
        "H * * * *  (one hour)",
        &per_minute(schedule_of(jobs, "H * * * *"), 60),
    );
    // Every 15 minutes: the first quarter hour holds each job once, and repeats.
    report(
        "H/15 * * * *  (15 min)",
        &per_minute(schedule_of(jobs, "H/15 * * * *"), 15),
    );
    report(
        "H H * * *  (one day)",
        &per_minute(schedule_of(jobs, "H H * * *"), 1_440),
    );
}
