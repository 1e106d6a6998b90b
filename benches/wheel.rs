//! The timing wheel against the two obvious alternatives, on one simulated day of ticks.
//!
//! ```text
//!  job set (10k, 100k, 1M; realistic mix) ──► (a) naive scan: every job, every minute, saffron `Cron::contains`
//!                                          ├─► (b) BinaryHeap by next instant: pop due, `next_after`, push
//!                                          ├─► (c) Wheel + `next_after` reinsertion, one entry per job (the data structure alone)
//!                                          └─► (d) cronq's `Scheduler::run_minute`: one wheel entry and one `next_after`
//!                                                  per distinct expression, plus dispatch records in priority/name order
//!  baseline: one bare saffron `Cron::next_after` over the same fire mix (what any scheduler must pay per fire)
//! ```
//!
//! Every number in the closing report comes from this one run: the ratios are taken against the
//! baseline and the naive scan measured minutes earlier in the same process. Criterion drives the
//! sampling (`iter_custom`) and each sample is the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`),
//! not wall time, so that a busy shared machine does not inflate it; a small recorder keeps each
//! sample so the report can be computed at the end.
//!
//! The idle-tick comparison (1k vs 1M jobs) is timed by hand: an idle minute cannot be repeated
//! (advancing the scheduler is not undoable), so the bench walks simulated days and times the runs
//! of consecutive idle minutes.
//!
//! Run: `cargo bench --bench wheel -- --warm-up-time 1 --measurement-time 3`

mod common;

use std::cell::RefCell;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hint::black_box;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use cronq::clock::Minute;
use cronq::cron::CronExpr;
use cronq::dispatcher::{Dispatch, Scheduler};
use cronq::schedule::Schedule;
use cronq::wheel::{JobId, Wheel};

use common::{day_start, fmt_count, fmt_secs, thread_cpu, verdict, Mix, DAY};

/// For the 1M sets the naive scan is timed over this many minutes spread across the day and
/// extrapolated to 1440: a whole day of it would take minutes per sample.
const NAIVE_SAMPLE_MINUTES: i64 = 10;

/// For the 1M sets one iteration of the heap, wheel and scheduler simulations is this many
/// consecutive minutes (a tenth of a day), so that criterion's minimum of ten samples covers one
/// day rather than ten: the per-day figures are ×10.
const LARGE_CHUNK: i64 = DAY / 10;

/// One timed call of a benchmark routine: `iters` iterations took `elapsed` and did `work` units
/// (fires, next_after calls, minutes).
struct Sample {
    iters: u64,
    elapsed: Duration,
    work: u64,
}

/// Keeps every sample criterion asks for, so the report can compare benchmarks of this run.
#[derive(Default, Clone)]
struct Recorder(Rc<RefCell<HashMap<String, Vec<Sample>>>>);

impl Recorder {
    fn record(&self, key: &str, iters: u64, elapsed: Duration, work: u64) {
        self.0
            .borrow_mut()
            .entry(key.to_string())
            .or_default()
            .push(Sample {
                iters,
                elapsed,
                work,
            });
    }

    fn median_of(&self, key: &str, per: impl Fn(&Sample) -> f64) -> Option<f64> {
        let map = self.0.borrow();
        let mut values: Vec<f64> = map.get(key)?.iter().map(per).collect();
        values.sort_by(f64::total_cmp);
        values.get(values.len() / 2).copied()
    }

    /// Median seconds per iteration.
    fn per_iter(&self, key: &str) -> Option<f64> {
        self.median_of(key, |s| s.elapsed.as_secs_f64() / s.iters as f64)
    }

    /// Median seconds per unit of work.
    fn per_work(&self, key: &str) -> Option<f64> {
        self.median_of(key, |s| s.elapsed.as_secs_f64() / s.work.max(1) as f64)
    }

    /// Mean work per iteration over all samples.
    fn work_per_iter(&self, key: &str) -> Option<f64> {
        let map = self.0.borrow();
        let samples = map.get(key)?;
        let iters: u64 = samples.iter().map(|s| s.iters).sum();
        let work: u64 = samples.iter().map(|s| s.work).sum();
        Some(work as f64 / iters.max(1) as f64)
    }
}

fn start_of(m: Minute) -> DateTime<Utc> {
    m.start().expect("minute in range")
}

/// The minute a cron instant falls in (cron instants are whole minutes).
fn minute_of(at: DateTime<Utc>) -> Minute {
    Minute::containing(at)
}

/// A job set and the per-job saffron values the naive scan walks.
struct JobSet {
    label: String,
    schedule: Schedule,
    /// One compiled saffron expression per job, inline in job order: the naive scan's best case.
    saffron: Vec<saffron::Cron>,
}

impl JobSet {
    fn new(n: usize, mix: Mix, seed: u64) -> JobSet {
        let schedule = common::schedule(n, mix, seed);
        let mut distinct: HashMap<&str, saffron::Cron> = HashMap::new();
        let saffron = schedule
            .jobs
            .iter()
            .map(|job| {
                let text = job.expr.saffron_expression();
                distinct
                    .entry(text)
                    .or_insert_with(|| text.parse().expect("saffron accepts the translation"))
                    .clone()
            })
            .collect();
        let label = match mix {
            Mix::Daily => format!("{} daily", fmt_count(n)),
            _ => fmt_count(n),
        };
        JobSet {
            label,
            schedule,
            saffron,
        }
    }

    fn exprs(&self) -> Vec<Arc<CronExpr>> {
        self.schedule
            .jobs
            .iter()
            .map(|j| Arc::clone(&j.expr))
            .collect()
    }
}

/// (a) Every job checked every minute.
fn naive_minute(saffron: &[saffron::Cron], minute: Minute, due: &mut Vec<u32>) -> u64 {
    let at = start_of(minute);
    due.clear();
    for (job, cron) in (0u32..).zip(saffron) {
        if cron.contains(at) {
            due.push(job);
        }
    }
    black_box(&due);
    due.len() as u64
}

/// (b) A min-heap of (next minute, job).
struct HeapSim {
    heap: BinaryHeap<Reverse<(i64, u32)>>,
    exprs: Vec<Arc<CronExpr>>,
    now: Minute,
    due: Vec<u32>,
}

impl HeapSim {
    fn new(set: &JobSet, now: Minute) -> HeapSim {
        let exprs = set.exprs();
        let heap = (0u32..)
            .zip(&exprs)
            .filter_map(|(job, e)| Some(Reverse((minute_of(e.next_after(start_of(now))?).0, job))))
            .collect();
        HeapSim {
            heap,
            exprs,
            now,
            due: Vec::new(),
        }
    }

    fn run_minute(&mut self) -> u64 {
        let minute = self.now.next();
        let at = start_of(minute);
        self.due.clear();
        while let Some(&Reverse((when, job))) = self.heap.peek() {
            if when > minute.0 {
                break;
            }
            self.heap.pop();
            self.due.push(job);
            if let Some(next) = self.exprs[job as usize].next_after(at) {
                self.heap.push(Reverse((minute_of(next).0, job)));
            }
        }
        self.now = minute;
        black_box(&self.due);
        self.due.len() as u64
    }
}

/// (c) The wheel alone: advance, then reinsert each due job at its next instant.
struct WheelSim {
    wheel: Wheel,
    exprs: Vec<Arc<CronExpr>>,
    due: Vec<(JobId, Minute)>,
}

impl WheelSim {
    fn new(set: &JobSet, now: Minute) -> WheelSim {
        let exprs = set.exprs();
        let mut wheel = Wheel::new(now);
        for (job, e) in (0u32..).zip(&exprs) {
            if let Some(next) = e.next_after(start_of(now)) {
                wheel.insert(JobId(job), minute_of(next)).expect("future");
            }
        }
        WheelSim {
            wheel,
            exprs,
            due: Vec::new(),
        }
    }

    fn run_minute(&mut self) -> u64 {
        let minute = self.wheel.now().next();
        let at = start_of(minute);
        self.due.clear();
        self.wheel.advance(minute, &mut self.due);
        for &(job, _) in &self.due {
            if let Some(next) = self.exprs[job.0 as usize].next_after(at) {
                self.wheel.insert(job, minute_of(next)).expect("future");
            }
        }
        black_box(&self.due);
        self.due.len() as u64
    }
}

/// (d) cronq's scheduler, as the tick loop drives it.
struct SchedulerSim {
    scheduler: Scheduler,
    out: Vec<Dispatch>,
}

impl SchedulerSim {
    fn new(set: &JobSet, now: Minute) -> SchedulerSim {
        SchedulerSim {
            scheduler: Scheduler::new(set.schedule.clone(), now),
            out: Vec::new(),
        }
    }

    fn run_minute(&mut self) -> u64 {
        let minute = self.scheduler.processed().next();
        self.out.clear();
        self.scheduler.run_minute(minute, &mut self.out);
        black_box(&self.out);
        self.out.len() as u64
    }
}

/// Before timing anything: the four ways must agree on who fires when.
fn check_agreement(set: &JobSet, start: Minute) {
    let mut heap = HeapSim::new(set, start);
    let mut wheel = WheelSim::new(set, start);
    let mut scheduler = SchedulerSim::new(set, start);
    let mut due = Vec::new();
    for m in start.0 + 1..=start.0 + DAY {
        let naive = naive_minute(&set.saffron, Minute(m), &mut due);
        let counts = [
            naive,
            heap.run_minute(),
            wheel.run_minute(),
            scheduler.run_minute(),
        ];
        assert!(
            counts.iter().all(|&c| c == naive),
            "minute {m}: naive, heap, wheel, scheduler fired {counts:?}"
        );
    }
}

/// The fire mix of a day as (expression, slot) pairs: every fire of a stride sample of the jobs.
fn fire_mix(
    set: &JobSet,
    start: Minute,
    stride: usize,
) -> (Vec<saffron::Cron>, Vec<(u32, DateTime<Utc>)>) {
    let mut index: HashMap<&str, u32> = HashMap::new();
    let mut crons = Vec::new();
    let mut fires = Vec::new();
    let end = start_of(Minute(start.0 + DAY));
    for (job, cron) in set.schedule.jobs.iter().zip(&set.saffron).step_by(stride) {
        let text = job.expr.saffron_expression();
        let idx = *index.entry(text).or_insert_with(|| {
            crons.push(cron.clone());
            (crons.len() - 1) as u32
        });
        let mut at = start_of(start);
        while let Some(next) = job.expr.next_after(at) {
            if next > end {
                break;
            }
            fires.push((idx, next));
            at = next;
        }
    }
    (crons, fires)
}

fn bench_baseline(c: &mut Criterion, rec: &Recorder, set: &JobSet, start: Minute) {
    let (crons, fires) = fire_mix(set, start, 10);
    let mut group = c.benchmark_group("baseline");
    group.throughput(Throughput::Elements(1));
    let r = rec.clone();
    let mut cursor = 0usize;
    group.bench_function("saffron_next_after", |b| {
        b.iter_custom(|iters| {
            let t0 = thread_cpu();
            for _ in 0..iters {
                let (idx, at) = fires[cursor];
                black_box(crons[idx as usize].next_after(black_box(at)));
                cursor = (cursor + 1) % fires.len();
            }
            let elapsed = thread_cpu() - t0;
            r.record("baseline", iters, elapsed, iters);
            elapsed
        })
    });
    group.finish();
}

/// Benches the four strategies on `set` over simulated days. With `large`, the naive scan is timed on
/// `NAIVE_SAMPLE_MINUTES` minutes spread over the day instead of all 1440, and one iteration of
/// the others is a tenth of a day (`LARGE_CHUNK` consecutive minutes; the simulation carries on
/// where the last iteration stopped, so ten samples cover a whole day).
fn bench_day(c: &mut Criterion, rec: &Recorder, set: &JobSet, start: Minute, large: bool) {
    let naive_sampled = large;
    let chunk = if large { LARGE_CHUNK } else { DAY };
    let label = &set.label;
    let mut group = c.benchmark_group(format!("day/{label}"));
    group.sampling_mode(SamplingMode::Flat);

    {
        let r = rec.clone();
        let key = format!("{label}/naive");
        let mut due = Vec::new();
        let mut offset = 0i64;
        let minutes = if naive_sampled {
            NAIVE_SAMPLE_MINUTES
        } else {
            DAY
        };
        let id = if naive_sampled {
            format!("naive_scan_{minutes}_minutes")
        } else {
            "naive_scan".to_string()
        };
        group.bench_function(BenchmarkId::new(id, label), |b| {
            b.iter_custom(|iters| {
                let t0 = thread_cpu();
                let mut fires = 0;
                for _ in 0..iters {
                    for k in 0..minutes {
                        // Spread over the day; shift by a minute per iteration.
                        let m = start.0 + 1 + (k * (DAY / minutes) + offset) % DAY;
                        fires += naive_minute(&set.saffron, Minute(m), &mut due);
                    }
                    offset += 1;
                }
                let elapsed = thread_cpu() - t0;
                r.record(&key, iters, elapsed, iters * minutes as u64);
                let _ = fires;
                elapsed
            })
        });
    }

    macro_rules! day_bench {
        ($name:literal, $key:literal, $sim:expr) => {{
            let r = rec.clone();
            let key = format!("{label}/{}", $key);
            let mut sim = $sim;
            group.bench_function(BenchmarkId::new($name, label), |b| {
                b.iter_custom(|iters| {
                    let mut fires = 0;
                    let t0 = thread_cpu();
                    for _ in 0..iters {
                        for _ in 0..chunk {
                            fires += sim.run_minute();
                        }
                    }
                    let elapsed = thread_cpu() - t0;
                    r.record(&key, iters, elapsed, fires);
                    elapsed
                })
            });
        }};
    }
    day_bench!("binary_heap", "heap", HeapSim::new(set, start));
    day_bench!("wheel_direct", "wheel", WheelSim::new(set, start));
    day_bench!("scheduler", "scheduler", SchedulerSim::new(set, start));
    group.finish();
}

/// Idle-tick statistics for one job set: seconds per idle minute, net of the timer.
struct Idle {
    jobs: usize,
    /// An idle minute whose data is in cache (the 3rd to 9th of a run of idle minutes).
    warm: Stats,
    /// An idle minute after the CPU caches were flushed: the state after a minute of sleep.
    cold: Stats,
    /// The first idle minute after a busy one (whose work evicted part of the cache).
    after_busy: Stats,
    /// Runs of idle minutes that crossed a 64-minute wheel boundary, where a level-1 slot cascades
    /// into level 0 (the cascade is the due jobs' amortised cost, paid on whatever minute it falls).
    cascade: Stats,
    /// Every idle minute of the runs without a cache flush, cascades included: (seconds, minutes).
    all: (f64, usize),
}

#[derive(Default)]
struct Stats {
    samples: Vec<f64>,
}

impl Stats {
    fn push(&mut self, secs: f64) {
        self.samples.push(secs);
    }

    fn median(&self) -> f64 {
        let mut v = self.samples.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    }
}

/// Cost of `Instant::now()` twice plus `elapsed`, the bias to take off every timed minute.
fn timer_overhead() -> f64 {
    let mut v: Vec<f64> = (0..10_000)
        .map(|_| {
            let t0 = Instant::now();
            black_box(&t0);
            t0.elapsed().as_secs_f64()
        })
        .collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Writes every cache line of a buffer larger than any last-level cache.
fn flush_caches(buffer: &mut [u8]) {
    for i in (0..buffer.len()).step_by(64) {
        buffer[i] = buffer[i].wrapping_add(1);
    }
    black_box(&buffer);
}

/// Walks `days` simulated days of a round-minute set (jobs fire only at minutes divisible by 10):
/// runs each busy minute untimed, then times the nine idle minutes after it: the first on its own
/// (after busy), the second on its own after a cache flush in every other run (cold), and the
/// third to ninth together in the other runs (warm; seven minutes per timing keeps the timer's
/// granularity out of the result).
fn idle_ticks(n: usize, days: i64, seed: u64) -> Idle {
    const COLD_SAMPLES: i64 = 100;
    const RUN: i64 = 10;
    let set = JobSet::new(n, Mix::RoundMinutes, seed);
    let start = day_start();
    let mut sim = SchedulerSim::new(&set, Minute(start.0 - 1));
    drop(set);
    let overhead = timer_overhead();
    let mut flush = vec![0u8; 64 << 20];
    let mut idle = Idle {
        jobs: n,
        warm: Stats::default(),
        cold: Stats::default(),
        after_busy: Stats::default(),
        cascade: Stats::default(),
        all: (0.0, 0),
    };
    let blocks = days * DAY / RUN;
    let cold_every = (blocks / COLD_SAMPLES).max(2);
    let timed = |sim: &mut SchedulerSim, minutes: i64| {
        let t0 = Instant::now();
        let mut fired = 0;
        for _ in 0..minutes {
            fired += sim.run_minute();
        }
        let secs = (t0.elapsed().as_secs_f64() - overhead).max(0.0);
        assert_eq!(fired, 0, "minutes that were to be idle dispatched");
        secs
    };
    for block in 0..blocks {
        let m = start.0 + RUN * block;
        sim.run_minute();
        // Dropping the busy minute's dispatch records belongs to the busy minute.
        sim.out.clear();
        let cascades = (m + 1..m + RUN).any(|k| k % 64 == 0);
        let flushed = block % cold_every == 0;
        let after_busy = timed(&mut sim, 1);
        if flushed {
            flush_caches(&mut flush);
        }
        let second = timed(&mut sim, 1);
        let rest = timed(&mut sim, RUN - 3);
        if !flushed {
            idle.all.0 += after_busy + second + rest;
            idle.all.1 += (RUN - 1) as usize;
        }
        if cascades {
            idle.cascade.push(after_busy + second + rest);
            continue;
        }
        idle.after_busy.push(after_busy);
        if flushed {
            idle.cold.push(second);
        } else {
            idle.warm.push(rest / (RUN - 3) as f64);
        }
    }
    idle
}

fn main() {
    let full = common::full_run();
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    let rec = Recorder::default();
    let start = Minute(day_start().0 - 1);
    let seed = 2026;

    // Sizes: the issue's 10k, 100k, 1M (and 1M all-daily); smoke sizes under `cargo test`.
    let sets: Vec<(usize, Mix)> = if full {
        vec![
            (10_000, Mix::Realistic),
            (100_000, Mix::Realistic),
            (1_000_000, Mix::Realistic),
            (1_000_000, Mix::Daily),
        ]
    } else {
        vec![(1_000, Mix::Realistic), (2_000, Mix::Daily)]
    };
    let sampled_from = if full { 1_000_000 } else { 2_000 };

    let mut labels = Vec::new();
    for (i, &(n, mix)) in sets.iter().enumerate() {
        let t0 = Instant::now();
        let set = JobSet::new(n, mix, seed);
        eprintln!("generated {} jobs in {:.2?}", set.label, t0.elapsed());
        if i == 0 {
            check_agreement(&set, start);
            bench_baseline(&mut c, &rec, &set, start);
        }
        bench_day(&mut c, &rec, &set, start, n >= sampled_from);
        labels.push((set.label.clone(), n >= sampled_from));
    }

    let (small, large) = if full {
        (1_000, 1_000_000)
    } else {
        (100, 2_000)
    };
    let idle_days = if full { 2 } else { 1 };
    let idle_small = idle_ticks(small, 20, seed);
    let idle_large = idle_ticks(large, idle_days, seed);
    c.final_summary();

    if !full {
        println!("\n(smoke test under cargo test: small sizes, single iterations; run `cargo bench --bench wheel` for numbers)");
    }
    report(&rec, &labels, &idle_small, &idle_large);
}

fn opt_secs(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_string(), fmt_secs)
}

fn opt_ratio(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_string(), |r| format!("{r:.2}×"))
}

fn report(rec: &Recorder, labels: &[(String, bool)], idle_small: &Idle, idle_large: &Idle) {
    let baseline = rec.per_iter("baseline");
    println!();
    println!("=== cronq wheel bench: one simulated day (1440 one-minute ticks), UTC jobs; thread CPU time; load average {} ===", common::load_average());
    println!(
        "baseline: one bare saffron Cron::next_after over the fire mix = {}",
        opt_secs(baseline)
    );
    println!();
    println!(
        "{:<10} {:>10} {:>11} {:>11} {:>11} {:>11} {:>12} {:>11}",
        "jobs",
        "fires/day",
        "naive/day",
        "heap/day",
        "wheel/day",
        "sched/day",
        "naive÷sched",
        "heap÷sched"
    );
    let mut notes = Vec::new();
    for (label, sampled) in labels {
        let naive_minute = rec.per_work(&format!("{label}/naive"));
        let naive_day = naive_minute.map(|s| s * DAY as f64);
        let per_day = |v: Option<f64>| {
            let chunks = if *sampled {
                (DAY / LARGE_CHUNK) as f64
            } else {
                1.0
            };
            v.map(|v| v * chunks)
        };
        let heap = per_day(rec.per_iter(&format!("{label}/heap")));
        let wheel = per_day(rec.per_iter(&format!("{label}/wheel")));
        let sched = per_day(rec.per_iter(&format!("{label}/scheduler")));
        let fires = per_day(rec.work_per_iter(&format!("{label}/scheduler")));
        let mark = if *sampled { "*" } else { "" };
        println!(
            "{:<10} {:>10} {:>11} {:>11} {:>11} {:>11} {:>12} {:>11}",
            label,
            fires.map_or("—".into(), |f| format!("{f:.0}")),
            format!("{}{mark}", opt_secs(naive_day)),
            opt_secs(heap),
            opt_secs(wheel),
            opt_secs(sched),
            opt_ratio(naive_day.zip(sched).map(|(n, s)| n / s)),
            opt_ratio(heap.zip(sched).map(|(h, s)| h / s)),
        );
        if *sampled {
            notes.push(format!(
                "* {label}: naive scan timed on {NAIVE_SAMPLE_MINUTES} minutes spread over the day, extrapolated ×{}; heap/wheel/sched timed in {LARGE_CHUNK}-minute chunks, ×{} per day",
                DAY / NAIVE_SAMPLE_MINUTES,
                DAY / LARGE_CHUNK
            ));
        }
    }
    for note in notes {
        println!("{note}");
    }
    println!("wheel = Wheel::advance + CronExpr::next_after + Wheel::insert, one entry per job; sched = Scheduler::run_minute (one entry and one next_after per distinct expression, Dispatch records in priority/name order)");

    println!();
    println!(
        "{:<10} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12}",
        "per fire", "heap", "wheel", "sched", "heap÷base", "wheel÷base", "sched÷base"
    );
    let mut fire_ratios = Vec::new();
    for (label, _) in labels {
        let heap = rec.per_work(&format!("{label}/heap"));
        let wheel = rec.per_work(&format!("{label}/wheel"));
        let sched = rec.per_work(&format!("{label}/scheduler"));
        let r = |v: Option<f64>| v.zip(baseline).map(|(v, b)| v / b);
        println!(
            "{:<10} {:>12} {:>12} {:>12} {:>12} {:>12} {:>12}",
            label,
            opt_secs(heap),
            opt_secs(wheel),
            opt_secs(sched),
            opt_ratio(r(heap)),
            opt_ratio(r(wheel)),
            opt_ratio(r(sched)),
        );
        fire_ratios.push((label.clone(), r(wheel), r(sched)));
    }

    println!();
    println!(
        "{:<12} {:>12} {:>12} {:>16} {:>30}",
        "idle tick", "warm", "cold", "after busy", "64-min boundary (cascade)"
    );
    for idle in [idle_small, idle_large] {
        println!(
            "{:<12} {:>12} {:>12} {:>16} {:>30}",
            format!("{} jobs", fmt_count(idle.jobs)),
            fmt_secs(idle.warm.median()),
            fmt_secs(idle.cold.median()),
            fmt_secs(idle.after_busy.median()),
            format!(
                "{} runs, median {} / 9 min",
                idle.cascade.samples.len(),
                fmt_secs(idle.cascade.median())
            ),
        );
    }
    println!("idle tick = Scheduler::run_minute for a minute with nothing due (round-minute job set: jobs fire only at :00, :10, …), medians net of the timer;");
    println!("warm = 3rd-9th idle minute in a row; cold = after writing 64 MiB (a minute's sleep); after busy = right after a minute that dispatched.");
    println!(
        "mean over all idle minutes incl. cascades: {} jobs {}, {} jobs {}",
        fmt_count(idle_small.jobs),
        fmt_secs(idle_small.all.0 / idle_small.all.1 as f64),
        fmt_count(idle_large.jobs),
        fmt_secs(idle_large.all.0 / idle_large.all.1 as f64),
    );

    println!();
    println!(
        "{:<58} {:>12} {:>10} {:>6}",
        "target", "measured", "target", ""
    );
    for (label, wheel, sched) in &fire_ratios {
        if let Some(s) = sched {
            println!(
                "{:<58} {:>12} {:>10} {:>6}",
                format!("{label}: cost per fire (Scheduler) ÷ bare next_after"),
                format!("{s:.2}×"),
                "≤ 1.5×",
                verdict(*s <= 1.5)
            );
        }
        if let Some(w) = wheel {
            // Not cronq's path: the per-job wheel is what cronq would cost if no two jobs shared an
            // expression. Printed for comparison, without a verdict.
            println!(
                "{:<58} {:>12} {:>10} {:>6}",
                format!("{label}: per fire, one wheel entry per job ÷ next_after"),
                format!("{w:.2}×"),
                "(info)",
                ""
            );
        }
    }
    for (what, stats) in [
        ("cold", (|i: &Idle| i.cold.median()) as fn(&Idle) -> f64),
        ("warm", |i: &Idle| i.warm.median()),
    ] {
        let ratio = stats(idle_large) / stats(idle_small);
        println!(
            "{:<58} {:>12} {:>10} {:>6}",
            format!(
                "idle tick {} ÷ idle tick {} ({what})",
                fmt_count(idle_large.jobs),
                fmt_count(idle_small.jobs)
            ),
            format!("{ratio:.2}×"),
            "≤ 2×",
            verdict(ratio <= 2.0)
        );
    }
    for (label, _) in labels.iter().filter(|(_, sampled)| *sampled) {
        let naive = rec
            .per_work(&format!("{label}/naive"))
            .map(|s| s * DAY as f64);
        let sched = rec
            .per_iter(&format!("{label}/scheduler"))
            .map(|s| s * (DAY / LARGE_CHUNK) as f64);
        if let Some(r) = naive.zip(sched).map(|(n, s)| n / s) {
            // The issue sets the target for a million daily jobs; the realistic mix, with its hourly
            // and every-N-minutes jobs, fires 4× as often and is printed for comparison.
            let daily = label.ends_with("daily");
            println!(
                "{:<58} {:>12} {:>10} {:>6}",
                format!("{label}: naive scan CPU/day ÷ Scheduler CPU/day"),
                format!("{r:.0}×"),
                if daily { "≥ 100×" } else { "(info)" },
                if daily { verdict(r >= 100.0) } else { "" }
            );
        }
    }
}
