//! `CronExpr::next_after` against its baseline, bare saffron on the translated expression, in the
//! same run.
//!
//! ```text
//! cargo bench --bench cron                                   # criterion, then the ratio table
//! cargo bench --bench cron -- --warm-up-time 1 --measurement-time 2   # a quick sample
//! ```
//!
//! Budget: in UTC the front end (translation is done once at parse; per call it adds the zone
//! check and, for some expressions, a day filter) may cost at most 20% over saffron. criterion's
//! reports are per benchmark (wall clock), so after them `cargo bench` times both sides itself,
//! interleaved, in thread CPU time, and prints `cronq / saffron` per expression. The expressions
//! include the paths saffron cannot take alone: cron(8)'s AND of a `*/n` day of month with a day
//! of week (cronq's day filter), `nW`/`LW` (nearest weekday) and `#`/`L` weekdays next to a
//! day-of-month step. Every expression is then timed in Europe/Berlin against itself in UTC, for
//! information: the zone path does real work (offsets, a DST look-around) and is not held to the
//! budget.

mod common;

use std::hint::black_box;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use criterion::{BenchmarkId, Criterion};
use cronq::cron::CronExpr;

/// Typical schedules, every minute to once every four years, then the day rules: (DOM and DOW
/// both restricted: OR, saffron alone), (`*/n` DOM with a DOW: AND, cronq's day filter),
/// (nearest weekday), (`#` with a DOM step: day filter on the day numbers).
const EXPRESSIONS: [&str; 20] = [
    "* * * * *",
    "*/5 * * * *",
    "0 * * * *",
    "0 0 * * *",
    "30 2 * * 1-5",
    "0 12 * * MON-FRI",
    "0 0 1 * *",
    "0 0 L * *",
    "0 9 * * 5#3",
    "15 10 * 1,4,7,10 *",
    "0 0 29 2 *",
    "@weekly",
    "0 0 1,15 * 1",
    "0 0 L * 5",
    "30 6 */2 * 1-5",
    "0 8 */10 * MON",
    "0 9 15W * *",
    "0 18 LW * *",
    "0 9 */3 * 5#3",
    "0 22 * * 5L",
];

/// The zone every expression is also timed in.
const ZONE: chrono_tz::Tz = chrono_tz::Europe::Berlin;

/// 64 start instants about 5.7 days apart over 2026, at odd minutes, so that calls land on every
/// weekday, in every month and at every time of day.
fn starts() -> Vec<DateTime<Utc>> {
    let first = Utc.with_ymd_and_hms(2026, 1, 1, 0, 7, 30).unwrap();
    (0..64)
        .map(|i| first + chrono::Duration::minutes(i * 8191))
        .collect()
}

struct Pair {
    expr: &'static str,
    cronq: CronExpr,
    saffron: saffron::Cron,
}

fn pairs() -> Vec<Pair> {
    EXPRESSIONS
        .iter()
        .map(|&expr| {
            let cronq = CronExpr::parse(expr, chrono_tz::UTC).expect("valid");
            let saffron = cronq
                .saffron_expression()
                .parse()
                .expect("saffron takes the translation");
            Pair {
                expr,
                cronq,
                saffron,
            }
        })
        .collect()
}

fn run_cronq(expr: &CronExpr, starts: &[DateTime<Utc>]) {
    for &t in starts {
        black_box(expr.next_after(black_box(t)));
    }
}

fn run_saffron(cron: &saffron::Cron, starts: &[DateTime<Utc>]) {
    for &t in starts {
        black_box(cron.next_after(black_box(t)));
    }
}

fn bench_next_after(c: &mut Criterion) {
    let starts = starts();
    let mut group = c.benchmark_group("next_after_utc");
    for pair in pairs() {
        group.bench_with_input(
            BenchmarkId::new("saffron", pair.expr),
            &starts,
            |b, starts| b.iter(|| run_saffron(&pair.saffron, starts)),
        );
        group.bench_with_input(
            BenchmarkId::new("cronq", pair.expr),
            &starts,
            |b, starts| b.iter(|| run_cronq(&pair.cronq, starts)),
        );
    }
    group.finish();

    let mut group = c.benchmark_group("next_after_europe_berlin");
    let berlin = CronExpr::parse("30 2 * * *", chrono_tz::Europe::Berlin).expect("valid");
    let utc = CronExpr::parse("30 2 * * *", chrono_tz::UTC).expect("valid");
    group.bench_with_input(
        BenchmarkId::new("cronq_utc", "30 2 * * *"),
        &starts,
        |b, starts| b.iter(|| run_cronq(&utc, starts)),
    );
    group.bench_with_input(
        BenchmarkId::new("cronq_europe_berlin", "30 2 * * *"),
        &starts,
        |b, starts| b.iter(|| run_cronq(&berlin, starts)),
    );
    group.finish();
}

/// Nanoseconds of thread CPU time per `next_after` call of `f` (one call = one start instant),
/// over `batches`.
fn time_per_call(starts: &[DateTime<Utc>], batches: u32, mut f: impl FnMut()) -> f64 {
    let begin = common::thread_cpu();
    for _ in 0..batches {
        f();
    }
    (common::thread_cpu() - begin).as_nanos() as f64 / (f64::from(batches) * starts.len() as f64)
}

/// The fastest round: on a shared machine other processes only ever add time, so the minimum
/// over many short interleaved rounds is the steadiest estimate of the code's own cost.
fn fastest(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::INFINITY, f64::min)
}

/// How many batches take about `target`.
fn calibrate(target: Duration, mut f: impl FnMut()) -> u32 {
    let mut batches = 1u32;
    loop {
        let begin = common::thread_cpu();
        for _ in 0..batches {
            f();
        }
        let spent = common::thread_cpu() - begin;
        if spent >= target / 4 || batches >= 1 << 20 {
            let per_batch = spent.as_secs_f64() / f64::from(batches);
            return ((target.as_secs_f64() / per_batch) as u32).max(1);
        }
        batches *= 2;
    }
}

/// Interleaved rounds (alternating which side goes first), the fastest round per side.
fn measure(starts: &[DateTime<Utc>], a: &dyn Fn(), b: &dyn Fn()) -> (f64, f64) {
    const ROUNDS: usize = 31;
    let batches_a = calibrate(Duration::from_millis(5), a);
    let batches_b = calibrate(Duration::from_millis(5), b);
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        if round % 2 == 0 {
            ta.push(time_per_call(starts, batches_a, a));
            tb.push(time_per_call(starts, batches_b, b));
        } else {
            tb.push(time_per_call(starts, batches_b, b));
            ta.push(time_per_call(starts, batches_a, a));
        }
    }
    (fastest(&ta), fastest(&tb))
}

fn print_ratios() {
    const BUDGET: f64 = 1.20;
    let starts = starts();
    println!();
    println!(
        "next_after in UTC, ns of thread CPU time per call (fastest of 31 interleaved rounds; load average {})",
        common::load_average()
    );
    println!(
        "{:<22} {:>10} {:>10} {:>8}",
        "expression", "saffron", "cronq", "ratio"
    );
    let mut worst: f64 = 0.0;
    for pair in pairs() {
        let (cronq, saffron) = measure(&starts, &|| run_cronq(&pair.cronq, &starts), &|| {
            run_saffron(&pair.saffron, &starts)
        });
        let ratio = cronq / saffron;
        // With a day filter or `nW`, saffron's translated expression selects more days than the
        // cron expression does, and cronq walks them until one passes: the baseline answers an
        // easier question, so the ratio is reported but not held to the budget.
        let translation = cronq::cron::dialect::translate(pair.expr).expect("valid");
        let filtered = translation.day_filter.is_some() || translation.nearest_weekday.is_some();
        let note = if filtered {
            "  (day filter: not held to the budget)"
        } else if ratio > BUDGET {
            "  OVER BUDGET"
        } else {
            ""
        };
        if !filtered {
            worst = worst.max(ratio);
        }
        println!(
            "{:<22} {:>10.1} {:>10.1} {:>8.3}{note}",
            pair.expr, saffron, cronq, ratio
        );
    }
    println!("worst ratio without a day filter {worst:.3} (budget {BUDGET:.2})");

    println!();
    println!("for information: each expression in {ZONE} vs the same in UTC (cronq both sides)");
    println!(
        "{:<22} {:>10} {:>10} {:>8}",
        "expression", "UTC", "zone", "ratio"
    );
    for pair in pairs() {
        let zoned = CronExpr::parse(pair.expr, ZONE).expect("valid");
        let (zone, plain) = measure(&starts, &|| run_cronq(&zoned, &starts), &|| {
            run_cronq(&pair.cronq, &starts)
        });
        println!(
            "{:<22} {:>10.1} {:>10.1} {:>8.2}",
            pair.expr,
            plain,
            zone,
            zone / plain
        );
    }
}

fn main() {
    // Like criterion: only `cargo bench` (which passes `--bench`) measures; `cargo test` runs each
    // benchmark once as a test, and `--list` only lists.
    let args: Vec<String> = std::env::args().collect();
    let timing =
        args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--test" || a == "--list");
    let mut criterion = Criterion::default().configure_from_args();
    bench_next_after(&mut criterion);
    criterion.final_summary();
    if timing {
        print_ratios();
    }
}
