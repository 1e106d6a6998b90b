//! Deterministic job sets shared by the `wheel` and `scale` benches.
//!
//! The realistic mix is what a large installation looks like: most jobs run once a day or once a
//! week at a fixed time, some every hour, a few every N minutes. Every set is generated from a seed
//! with an inline SplitMix64, so two runs (and two machines) bench the same jobs.

// Each bench binary uses a different part of this module.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use cronq::clock::Minute;
use cronq::cron::CronExpr;
use cronq::schedule::When;
use cronq::schedule::{Job, JobSpec, Schedule};

/// A bench setting from the environment (`1_000_000` may be written with underscores), else
/// `default`.
pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .map(|v| v.replace('_', "").parse().expect("a number"))
        .unwrap_or(default)
}

/// SplitMix64 (Steele, Lea and Flood 2014): tiny, fast, good enough to spread cron fields.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (the modulo bias is irrelevant for n ≤ 1440).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Which kinds of expressions a set holds.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Mix {
    /// 75 % daily `M H * * *`, 15 % weekly `M H * * D`, 9 % hourly `M * * * *`, 1 % `*/N * * * *`
    /// (N in 5, 10, 15, 30); M, H, D uniform.
    Realistic,
    /// The realistic mix with every minute a multiple of 10 (as people tend to write cron) and
    /// steps of 10, 20 or 30: nine minutes in ten have nothing due, which is what the idle-tick
    /// measurement needs.
    RoundMinutes,
    /// Only daily `M H * * *` jobs.
    Daily,
    /// Every job is `0 12 * * *`: a million jobs due in the same minute.
    AllAtNoon,
    /// No two jobs share an expression: `M H1,H2 * * DAYS`, twice a day on a set of weekdays
    /// (minute, hour pair and weekday set drawn at random, duplicates drawn again; 2.1M
    /// combinations). Nothing is shared, so a scheduler pays one evaluation per fire.
    Unique,
    /// No two jobs share an expression and all are due at noon: `0 12,HOURS * * *`, where HOURS
    /// is a distinct set of the other 23 hours for each job (the job's index in binary).
    AllAtNoonDistinct,
}

/// The step values of the every-N-minutes jobs.
const STEPS: [u64; 4] = [5, 10, 15, 30];

/// The step values of [`Mix::RoundMinutes`].
const ROUND_STEPS: [u64; 3] = [10, 20, 30];

/// The `cronTime` of every job of a set of `n`, in job order.
pub fn cron_times(n: usize, mix: Mix, seed: u64) -> Vec<String> {
    let mut rng = Rng(seed);
    if mix == Mix::Unique {
        return unique_cron_times(n, &mut rng);
    }
    if mix == Mix::AllAtNoonDistinct {
        return (0..n).map(noon_and_other_hours).collect();
    }
    let minute = |rng: &mut Rng| match mix {
        Mix::RoundMinutes => 10 * rng.below(6),
        _ => rng.below(60),
    };
    (0..n)
        .map(|_| {
            if mix == Mix::AllAtNoon {
                return "0 12 * * *".to_string();
            }
            let kind = if mix == Mix::Daily { 0 } else { rng.below(100) };
            let m = minute(&mut rng);
            let h = rng.below(24);
            match kind {
                0..75 => format!("{m} {h} * * *"),
                75..90 => format!("{m} {h} * * {}", rng.below(7)),
                90..99 => format!("{m} * * * *"),
                _ if mix == Mix::RoundMinutes => {
                    format!("*/{} * * * *", ROUND_STEPS[rng.below(3) as usize])
                }
                _ => format!("*/{} * * * *", STEPS[rng.below(4) as usize]),
            }
        })
        .collect()
}

/// [`Mix::Unique`]: `n` distinct `M H1,H2 * * DAYS`.
fn unique_cron_times(n: usize, rng: &mut Rng) -> Vec<String> {
    assert!(n <= 1_500_000, "Mix::Unique draws from 2.1M expressions");
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let m = rng.below(60);
        let h1 = rng.below(24);
        let h2 = (h1 + 1 + rng.below(23)) % 24;
        let (h1, h2) = (h1.min(h2), h1.max(h2));
        let days = 1 + rng.below(127);
        if seen.insert((m, h1, h2, days)) {
            let list: Vec<String> = (0..7)
                .filter(|d| days & (1 << d) != 0)
                .map(|d| d.to_string())
                .collect();
            out.push(format!("{m} {h1},{h2} * * {}", list.join(",")));
        }
    }
    out
}

/// [`Mix::AllAtNoonDistinct`]: hour 12 plus the hours that job `i`'s bits pick among the other 23.
fn noon_and_other_hours(i: usize) -> String {
    assert!(i < 1 << 23, "only 2^23 distinct hour sets");
    let mut hours = vec![12];
    let others = (0..24).filter(|&h| h != 12);
    hours.extend(
        others
            .enumerate()
            .filter(|(bit, _)| i & (1 << bit) != 0)
            .map(|(_, h)| h),
    );
    hours.sort_unstable();
    let list: Vec<String> = hours.iter().map(u32::to_string).collect();
    format!("0 {} * * *", list.join(","))
}

/// The set as an in-memory [`Schedule`] (UTC), jobs with equal expressions sharing one compiled
/// [`CronExpr`] as the loader does.
pub fn schedule(n: usize, mix: Mix, seed: u64) -> Schedule {
    let mut compiled: HashMap<String, (Arc<str>, Arc<When>)> = HashMap::new();
    let mut rng = Rng(seed ^ 0x5EED);
    let jobs = cron_times(n, mix, seed)
        .into_iter()
        .enumerate()
        .map(|(i, cron_time)| {
            let (cron_time, expr) = compiled
                .entry(cron_time.clone())
                .or_insert_with(|| {
                    let expr = CronExpr::parse(&cron_time, chrono_tz::UTC).expect("valid cron");
                    (Arc::from(cron_time.as_str()), Arc::new(When::of_cron(expr)))
                })
                .clone();
            Job {
                spec: Arc::new(JobSpec {
                    name: job_name(i),
                    priority: rng.below(10) as i32,
                    job: format!("run-task --id {i}"),
                    cron_time,
                    timezone: chrono_tz::UTC,
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
                }),
                expr,
            }
        })
        .collect();
    Schedule { jobs }
}

pub fn job_name(i: usize) -> String {
    format!("job-{i:07}")
}

/// The set as the text of a `schedule.json` file (one job per line, as people format them).
pub fn schedule_json(n: usize, mix: Mix, seed: u64) -> String {
    let mut rng = Rng(seed ^ 0x5EED);
    let mut out = String::with_capacity(n * 110 + 16);
    out.push_str("{\n  \"jobs\": [\n");
    for (i, cron_time) in cron_times(n, mix, seed).into_iter().enumerate() {
        let priority = rng.below(10);
        let sep = if i + 1 == n { "" } else { "," };
        let _ = writeln!(
            out,
            "    {{ \"jobName\": \"{}\", \"priority\": {priority}, \"job\": \"run-task --id {i}\", \"cronTime\": \"{cron_time}\" }}{sep}",
            job_name(i),
        );
    }
    out.push_str("  ]\n}\n");
    out
}

/// The first minute of the simulated day: Monday 2026-03-02 00:00 UTC.
pub fn day_start() -> Minute {
    Minute::containing(Utc.with_ymd_and_hms(2026, 3, 2, 0, 0, 0).unwrap())
}

/// Minutes in a day.
pub const DAY: i64 = 1_440;

/// `--bench` is on the command line only under `cargo bench`; `cargo test --all-targets` runs the
/// bench binaries without it, and then they only smoke-test at small sizes.
pub fn full_run() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// CPU time consumed so far by the calling thread.
///
/// The benches report CPU time rather than wall time: the machines they run on are shared, and a
/// neighbour's compile job stretches wall time without changing what cronq costs.
pub fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the struct we pass; the clock id is valid.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The 1-minute load average, printed with the results so a reader can judge the contention.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// "12.3 ms", "456 ns", "1.23 s".
pub fn fmt_secs(secs: f64) -> String {
    let (value, unit) = if secs >= 1.0 {
        (secs, "s")
    } else if secs >= 1e-3 {
        (secs * 1e3, "ms")
    } else if secs >= 1e-6 {
        (secs * 1e6, "µs")
    } else {
        (secs * 1e9, "ns")
    };
    if value >= 100.0 {
        format!("{value:.0} {unit}")
    } else if value >= 10.0 {
        format!("{value:.1} {unit}")
    } else {
        format!("{value:.2} {unit}")
    }
}

/// "1_000_000" → "1M", "100k", "10k", "1k".
pub fn fmt_count(n: usize) -> String {
    if n >= 1_000_000 && n % 1_000_000 == 0 {
        format!("{}M", n / 1_000_000)
    } else if n >= 1_000 && n % 1_000 == 0 {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

pub fn verdict(pass: bool) -> &'static str {
    if pass {
        "PASS"
    } else {
        "MISS"
    }
}
