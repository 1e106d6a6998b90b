//! What the `--http` observer costs the dispatch path: N jobs all due in one minute, from the tick
//! loop's first send until the broker acked every record, with the observer (the metrics of every
//! batch: `cronq_dispatched_total{topic}`, the skew histogram, the minute's row on the status page)
//! against the same path without it (the baseline), alternating on the same broker, in one run.
//! Both runs have the slot ledger a live dispatcher always has.
//!
//! `cargo bench --bench observe` measures 100 000 jobs on the test broker (tansu, sqlite);
//! `TANSU_MEMORY=/path/to/tansu` uses that tansu's memory engine instead, where the broker is not
//! the limit. `cargo test --benches` runs a 2 000-job smoke pass.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "common/dispatch.rs"]
mod dispatch_common;
#[path = "common/engine.rs"]
mod engine;
use dispatch_common::{noon_schedule as bench_schedule, producer_config as config, PARTITIONS};
use engine::MemoryBroker;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use common::{random_topic, Broker};
use cronq::clock::{Clock, ManualClock, Minute};
use cronq::dispatcher::observe::{Mode, Observer};
use cronq::dispatcher::producer::{self, DeliveryStats, SlotLedger};
use cronq::dispatcher::{Scheduler, TickLoop};
use cronq::schedule::{self, LoadOptions};

const JOBS: usize = 100_000;
const SMOKE_JOBS: usize = 2_000;

/// One minute of `jobs` dispatches through the tick loop and the producer pool, timed until acked.
async fn run(broker: &str, jobs: usize, observed: bool) -> Duration {
    let topic = random_topic("bench-observe");
    let sched = bench_schedule(jobs);
    let slot = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap();
    let clock = ManualClock::new(slot - chrono::Duration::minutes(1));
    let clock_dyn: Arc<dyn Clock> = Arc::new(clock.clone());
    let observer = observed.then(|| Observer::new(Mode::DryRun, &topic, Arc::clone(&clock_dyn)));
    let mut ledger = SlotLedger::new(Arc::clone(&clock_dyn));
    if let Some(o) = &observer {
        ledger = ledger.with_observer(Arc::clone(o));
    }
    let ledger = Arc::new(ledger);
    let scheduler = Scheduler::new(sched, Minute(Minute::containing(slot).0 - 1));
    let (tx, rx) = tokio::sync::mpsc::channel(10_000);
    let stats = Arc::new(DeliveryStats::default());
    let settings = config(broker, &topic);
    // Connect and create the topic before timing.
    let client = settings.kafka.connect(Duration::from_millis(50)).await;
    let admin = cronq::kafka::admin::TopicAdmin::new(&settings.kafka).expect("admin client");
    let spec = cronq::kafka::admin::TopicSpec {
        name: &topic,
        partitions: PARTITIONS,
        replication_factor: 1,
        configs: &[],
    };
    cronq::kafka::admin::ensure_topic(&client, Some(&admin), &spec)
        .await
        .expect("topic");
    let sink = tokio::spawn(producer::run(
        settings,
        rx,
        Arc::clone(&stats),
        Some(Arc::clone(&ledger)),
    ));
    let mut tick_loop =
        TickLoop::new(Arc::clone(&clock_dyn), scheduler, None, tx).with_ledger(ledger);
    if let Some(o) = &observer {
        tick_loop = tick_loop.with_observer(Arc::clone(o));
    }
    clock.set(slot);
    let start = Instant::now();
    tick_loop.tick().await.expect("tick");
    drop(tick_loop);
    sink.await.expect("producers").expect("producer pool");
    let elapsed = start.elapsed();
    assert_eq!(stats.delivered.load(Ordering::Relaxed), jobs as u64);
    if let Some(o) = &observer {
        assert_eq!(o.status().acked_total, jobs as u64, "every ack counted");
    }
    elapsed
}

/// What the status page costs at `jobs` jobs spread over 40 320 distinct expressions: the next 50
/// runs read from the wheel (once a minute), against a scan of every job's next run (what the page
/// must never do per request).
fn page_cost(jobs: usize) {
    let entries: Vec<String> = (0..jobs)
        .map(|i| {
            format!(
                r#"{{"jobName":"page-{i:07}","job":"x","cronTime":"{} {} {} * *"}}"#,
                i % 60,
                (i / 60) % 24,
                (i / 1440) % 28 + 1
            )
        })
        .collect();
    let json = format!(r#"{{"jobs":[{}]}}"#, entries.join(","));
    let sched = schedule::parse(
        json.as_bytes(),
        Path::new("page.json"),
        LoadOptions::default(),
    )
    .expect("schedule");
    let now = Utc.with_ymd_and_hms(2026, 11, 26, 12, 7, 0).unwrap();
    let scheduler = Scheduler::new(sched, Minute::containing(now));
    let time = |f: &mut dyn FnMut()| {
        let mut runs: Vec<Duration> = (0..9)
            .map(|_| {
                let start = Instant::now();
                f();
                start.elapsed()
            })
            .collect();
        runs.sort();
        runs[runs.len() / 2]
    };
    let upcoming = time(&mut || assert_eq!(scheduler.upcoming(50).len(), 50));
    // The baseline: every job's next instant, evaluated, the 50 earliest kept.
    let scan = time(&mut || {
        let mut next: Vec<_> = scheduler
            .schedule()
            .jobs
            .iter()
            .filter_map(|j| j.expr.next_after(now))
            .collect();
        next.select_nth_unstable(49);
    });
    println!(
        "status page at {jobs} jobs: next 50 runs from the wheel {:.3} ms; from every job's next run {:.1} ms (medians of 9)",
        upcoming.as_secs_f64() * 1e3,
        scan.as_secs_f64() * 1e3,
    );
}

fn main() {
    let measuring = std::env::args().any(|a| a == "--bench");
    let jobs = if measuring { JOBS } else { SMOKE_JOBS };
    let rounds = if measuring { 4 } else { 1 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (_sqlite, _memory, broker, engine);
    match std::env::var("TANSU_MEMORY") {
        Ok(tansu) => {
            let dir = tempfile::tempdir().expect("temp dir");
            let b = MemoryBroker::start_at(&tansu, "memory://tansu/", dir)
                .unwrap_or_else(|| panic!("{tansu} cannot serve from memory"));
            broker = b.address();
            _memory = Some(b);
            _sqlite = None;
            engine = "memory";
        }
        Err(_) => {
            let b = Broker::start();
            broker = b.address();
            _sqlite = Some(b);
            _memory = None;
            engine = "sqlite";
        }
    }
    page_cost(if measuring { 1_000_000 } else { SMOKE_JOBS });
    // One warm-up pass each, untimed: topic metadata, connections, allocator.
    rt.block_on(run(&broker, SMOKE_JOBS, false));
    rt.block_on(run(&broker, SMOKE_JOBS, true));
    println!("observer cost on tansu ({engine}): {jobs} jobs due in one minute, until acked; with and without the observer, alternating");
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let (plain, observed) = if round % 2 == 0 {
            let plain = rt.block_on(run(&broker, jobs, false));
            (plain, rt.block_on(run(&broker, jobs, true)))
        } else {
            let observed = rt.block_on(run(&broker, jobs, true));
            (rt.block_on(run(&broker, jobs, false)), observed)
        };
        let ratio = plain.as_secs_f64() / observed.as_secs_f64();
        ratios.push(ratio);
        println!(
            "  round {round}: without {:>8.0} records/s ({:.3} s), with {:>8.0} records/s ({:.3} s), with/without {ratio:.3}",
            jobs as f64 / plain.as_secs_f64(),
            plain.as_secs_f64(),
            jobs as f64 / observed.as_secs_f64(),
            observed.as_secs_f64(),
        );
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "  {engine}: throughput with/without the observer: median {:.3}, range {:.3}-{:.3} over {rounds} rounds",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1]
    );
}
