//! The tick loop driven by a ManualClock: firing, ordering, catch-up, clock jumps, backpressure and
//! hot reload. No test sleeps to a minute boundary.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use cronq::clock::{ManualClock, Minute};
use cronq::dispatcher::{Dispatch, ScheduleSource, Scheduler, TickLoop};
use cronq::schedule::{self, LoadOptions, Schedule};
use tokio::sync::mpsc;

fn at(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, h, m, 0).unwrap()
}

fn schedule_from(json: &str) -> Schedule {
    schedule::parse(
        json.as_bytes(),
        Path::new("test.json"),
        LoadOptions::default(),
    )
    .unwrap()
}

fn names(ds: &[Dispatch]) -> Vec<(String, String)> {
    ds.iter()
        .map(|d| {
            (
                d.spec.name.clone(),
                d.scheduled_at.format("%H:%M").to_string(),
            )
        })
        .collect()
}

fn drain(rx: &mut mpsc::Receiver<Dispatch>) -> Vec<Dispatch> {
    let mut out = Vec::new();
    while let Ok(d) = rx.try_recv() {
        out.push(d);
    }
    out
}

struct Harness {
    clock: ManualClock,
    tick_loop: TickLoop,
    rx: mpsc::Receiver<Dispatch>,
}

fn harness(
    json: &str,
    start: DateTime<Utc>,
    max_catchup: Duration,
    file: Option<PathBuf>,
) -> Harness {
    let clock = ManualClock::new(start);
    let options = LoadOptions {
        default_catchup_window: max_catchup,
        ..LoadOptions::default()
    };
    let schedule =
        schedule::parse(json.as_bytes(), Path::new("test.json"), options.clone()).unwrap();
    let scheduler = Scheduler::new(schedule, Minute::containing(start));
    let (tx, rx) = mpsc::channel(100_000);
    let source = file.map(|p| {
        let digest = cronq::schedule::fingerprint::Digest::of(&std::fs::read(&p).unwrap());
        ScheduleSource::new(p, Some(digest), options)
    });
    let tick_loop = TickLoop::new(Arc::new(clock.clone()), scheduler, source, tx);
    Harness {
        clock,
        tick_loop,
        rx,
    }
}

const THREE_JOBS: &str = r#"{"jobs":[
  {"jobName":"every-minute","priority":1,"job":"a","cronTime":"* * * * *"},
  {"jobName":"every-5","priority":5,"job":"b","cronTime":"*/5 * * * *"},
  {"jobName":"also-every-5","priority":5,"job":"c","cronTime":"*/5 * * * *"},
  {"jobName":"off","priority":9,"job":"d","cronTime":"* * * * *","enabled":false}
]}"#;

#[tokio::test]
async fn nothing_fires_until_the_minute_changes_then_each_due_job_fires_once_by_priority_then_name()
{
    let mut h = harness(
        THREE_JOBS,
        at(12, 4) + chrono::Duration::seconds(30),
        Duration::from_secs(3600),
        None,
    );
    let r = h.tick_loop.tick().await.unwrap();
    assert_eq!(r.dispatched, 0, "the start minute itself is not dispatched");
    h.clock.set(at(12, 5) + chrono::Duration::milliseconds(10));
    h.tick_loop.tick().await.unwrap();
    // ticking again within the same minute dispatches nothing more
    h.tick_loop.tick().await.unwrap();
    assert_eq!(
        names(&drain(&mut h.rx)),
        [
            ("also-every-5".to_string(), "12:05".to_string()),
            ("every-5".to_string(), "12:05".to_string()),
            ("every-minute".to_string(), "12:05".to_string()),
        ]
    );
}

#[tokio::test]
async fn missed_minutes_are_dispatched_in_order_with_their_own_slot_times() {
    let mut h = harness(THREE_JOBS, at(12, 0), Duration::from_secs(3600), None);
    h.clock.set(at(12, 10));
    let r = h.tick_loop.tick().await.unwrap();
    assert_eq!(r.minutes, 10);
    let got = drain(&mut h.rx);
    let slots: Vec<String> = got
        .iter()
        .filter(|d| d.spec.name == "every-minute")
        .map(|d| d.scheduled_at.format("%H:%M").to_string())
        .collect();
    let expected: Vec<String> = (1..=10).map(|m| format!("12:{m:02}")).collect();
    assert_eq!(slots, expected);
    assert_eq!(got.iter().filter(|d| d.spec.name == "every-5").count(), 2);
    assert!(got
        .windows(2)
        .all(|w| w[0].scheduled_at <= w[1].scheduled_at));
}

#[tokio::test]
async fn slots_older_than_max_catchup_are_skipped_and_counted() {
    let mut h = harness(THREE_JOBS, at(12, 0), Duration::from_secs(5 * 60), None);
    // suspended for 20 minutes: 12:01..=12:20 missed; slots at most 5 minutes old (12:15..=12:20)
    // are dispatched, older ones skipped
    h.clock.set(at(12, 20));
    let r = h.tick_loop.tick().await.unwrap();
    let got = drain(&mut h.rx);
    let minute_slots: Vec<String> = got
        .iter()
        .filter(|d| d.spec.name == "every-minute")
        .map(|d| d.scheduled_at.format("%H:%M").to_string())
        .collect();
    assert_eq!(
        minute_slots,
        ["12:15", "12:16", "12:17", "12:18", "12:19", "12:20"]
    );
    // skipped: every-minute 12:01..=12:14 (14) + two every-5 jobs at 12:05 and 12:10 (4)
    assert_eq!(r.skipped, 18);
    assert_eq!(
        got.iter().filter(|d| d.spec.name == "every-5").count(),
        2,
        "12:15 and 12:20"
    );
}

#[tokio::test]
async fn a_clock_going_backwards_never_refires_a_processed_minute() {
    let mut h = harness(THREE_JOBS, at(12, 0), Duration::from_secs(3600), None);
    h.clock.set(at(12, 3));
    h.tick_loop.tick().await.unwrap();
    assert_eq!(
        drain(&mut h.rx).len(),
        3,
        "12:01, 12:02, 12:03 of every-minute"
    );
    h.clock.set(at(11, 50));
    h.tick_loop.tick().await.unwrap();
    h.clock.set(at(12, 2));
    h.tick_loop.tick().await.unwrap();
    assert!(drain(&mut h.rx).is_empty());
    h.clock.set(at(12, 4));
    h.tick_loop.tick().await.unwrap();
    assert_eq!(
        names(&drain(&mut h.rx)),
        [("every-minute".to_string(), "12:04".to_string())]
    );
}

#[tokio::test]
async fn a_full_sink_makes_the_loop_wait_and_nothing_is_dropped() {
    let json = {
        let jobs: Vec<String> = (0..500)
            .map(|i| format!(r#"{{"jobName":"j{i:03}","job":"x","cronTime":"* * * * *"}}"#))
            .collect();
        format!(r#"{{"jobs":[{}]}}"#, jobs.join(","))
    };
    let clock = ManualClock::new(at(12, 0));
    let scheduler = Scheduler::new(schedule_from(&json), Minute::containing(at(12, 0)));
    let (tx, mut rx) = mpsc::channel(1);
    let mut tick_loop = TickLoop::new(Arc::new(clock.clone()), scheduler, None, tx);
    clock.set(at(12, 3));
    let consumer = tokio::spawn(async move {
        let mut got = Vec::new();
        while let Some(d) = rx.recv().await {
            tokio::task::yield_now().await;
            got.push(d);
        }
        got
    });
    let report = tick_loop.tick().await.unwrap();
    drop(tick_loop);
    let got = consumer.await.unwrap();
    assert_eq!(report.dispatched, 1500);
    assert_eq!(got.len(), 1500);
    let mut ids: Vec<String> = got.iter().map(Dispatch::dispatch_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1500, "every dispatch id is unique");
}

fn write(path: &Path, text: &str) {
    // Write-then-rename, like an editor's save: the path briefly points at a new inode.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test]
async fn hot_reload_applies_a_diff_keeps_the_last_good_schedule_on_error_and_survives_vanishing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schedule.json");
    let v1 = r#"{"jobs":[
      {"jobName":"keep","priority":1,"job":"a","cronTime":"*/10 * * * *"},
      {"jobName":"payload","priority":1,"job":"old","cronTime":"*/10 * * * *"},
      {"jobName":"resched","priority":1,"job":"r","cronTime":"0 * * * *"},
      {"jobName":"gone","priority":1,"job":"g","cronTime":"* * * * *"}
    ]}"#;
    write(&path, v1);
    let mut h = harness(v1, at(12, 0), Duration::from_secs(3600), Some(path.clone()));
    let r = h.tick_loop.check_now().await;
    assert!(!r.reloaded, "the file in use is not reloaded");

    h.clock.set(at(12, 1));
    h.tick_loop.tick().await.unwrap();
    assert_eq!(
        names(&drain(&mut h.rx)),
        [("gone".to_string(), "12:01".to_string())]
    );

    let v2 = r#"{"jobs":[
      {"jobName":"keep","priority":1,"job":"a","cronTime":"*/10 * * * *"},
      {"jobName":"payload","priority":7,"job":"new","cronTime":"*/10 * * * *"},
      {"jobName":"resched","priority":1,"job":"r","cronTime":"5 * * * *"},
      {"jobName":"added","priority":1,"job":"n","cronTime":"2 12 * * *"}
    ]}"#;
    write(&path, v2);
    // The check runs off the loop: a tick starts it, the next one after it is ready swaps it in.
    let r = h.tick_loop.tick().await.unwrap();
    assert!(!r.reloaded && h.tick_loop.source_mut().unwrap().checking());
    let r = h.tick_loop.settle_check().await;
    assert!(r.reloaded);
    let s = h.tick_loop.scheduler().unwrap();
    assert_eq!(
        s.next_run("payload"),
        Some(Minute::containing(at(12, 10))),
        "payload-only change keeps the next run"
    );
    assert_eq!(s.next_run("resched"), Some(Minute::containing(at(12, 5))));
    assert_eq!(s.next_run("added"), Some(Minute::containing(at(12, 2))));
    assert_eq!(s.next_run("gone"), None);

    // an invalid version changes nothing
    write(
        &path,
        r#"{"jobs":[{"jobName":"keep","job":"a","cronTime":"61 * * * *"}]}"#,
    );
    let r = h.tick_loop.check_now().await;
    assert!(r.rejected && !r.reloaded);
    assert_eq!(
        h.tick_loop.scheduler().unwrap().next_run("added"),
        Some(Minute::containing(at(12, 2)))
    );
    // ...and is not retried until it changes again
    let r = h.tick_loop.check_now().await;
    assert!(!r.rejected);

    // the file vanishes for a moment: the schedule keeps running
    std::fs::remove_file(&path).unwrap();
    h.clock.set(at(12, 10));
    h.tick_loop.tick().await.unwrap();
    let got = names(&drain(&mut h.rx));
    assert_eq!(
        got,
        [
            ("added".to_string(), "12:02".to_string()),
            ("resched".to_string(), "12:05".to_string()),
            ("payload".to_string(), "12:10".to_string()),
            ("keep".to_string(), "12:10".to_string()),
        ]
    );
    let payload = drain(&mut h.rx);
    assert!(payload.is_empty());

    // it comes back fixed: picked up
    write(
        &path,
        r#"{"jobs":[{"jobName":"keep","job":"a","cronTime":"*/10 * * * *"}]}"#,
    );
    let r = h.tick_loop.check_now().await;
    assert!(r.reloaded);
    assert_eq!(h.tick_loop.scheduler().unwrap().scheduled(), 1);
}

#[tokio::test]
async fn a_reload_in_the_minute_a_job_fired_neither_refires_nor_skips_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schedule.json");
    let v1 = r#"{"jobs":[{"jobName":"j","job":"a","cronTime":"*/2 * * * *"}]}"#;
    write(&path, v1);
    let mut h = harness(v1, at(12, 0), Duration::from_secs(3600), Some(path.clone()));
    h.clock.set(at(12, 2));
    h.tick_loop.tick().await.unwrap();
    // reschedule to every minute while 12:02 is already processed: next is 12:03, not 12:02 again
    write(
        &path,
        r#"{"jobs":[{"jobName":"j","job":"a","cronTime":"* * * * *"}]}"#,
    );
    assert!(h.tick_loop.check_now().await.reloaded);
    h.clock.set(at(12, 3));
    h.tick_loop.tick().await.unwrap();
    assert_eq!(
        names(&drain(&mut h.rx)),
        [
            ("j".to_string(), "12:02".to_string()),
            ("j".to_string(), "12:03".to_string())
        ]
    );
}

#[tokio::test]
async fn a_reload_compiled_against_a_shard_replaced_meanwhile_is_not_installed_but_checked_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schedule.json");
    let v1 = r#"{"jobs":[{"jobName":"j","job":"a","cronTime":"*/2 * * * *"}]}"#;
    let v2 = r#"{"jobs":[{"jobName":"j","job":"a","cronTime":"* * * * *"}]}"#;
    write(&path, v1);
    let mut h = harness(v1, at(12, 0), Duration::from_secs(3600), Some(path.clone()));
    write(&path, v2);
    h.tick_loop.tick().await.unwrap();
    assert!(h.tick_loop.source_mut().unwrap().checking());
    // A takeover replaces the shard while the check compiles against the old one.
    let old = h.tick_loop.remove_shard(0).unwrap();
    h.tick_loop.insert_shard(
        0,
        cronq::dispatcher::ShardRun {
            scheduler: Scheduler::new(schedule_from(v1), old.scheduler.processed()),
            lease: None,
        },
    );
    let r = h.tick_loop.settle_check().await;
    assert!(!r.reloaded, "compiled against a state that is gone");
    assert_eq!(
        h.tick_loop.scheduler().unwrap().next_run("j"),
        Some(Minute::containing(at(12, 2)))
    );
    let r = h.tick_loop.check_now().await;
    assert!(r.reloaded, "the file is looked at again");
    assert_eq!(
        h.tick_loop.scheduler().unwrap().next_run("j"),
        Some(Minute::containing(at(12, 1)))
    );
}

/// A tick loop on a guarded clock (a manual wall clock checked against a manual monotonic one),
/// reporting to an observer.
fn guarded_harness(
    start: DateTime<Utc>,
) -> (
    Harness,
    cronq::clock::ManualMonotonic,
    Arc<cronq::dispatcher::observe::Observer>,
) {
    use cronq::clock::{Clock, GuardedClock, ManualMonotonic};
    use cronq::dispatcher::observe::{Mode, Observer};
    let mut h = harness(THREE_JOBS, start, Duration::from_secs(3600), None);
    let mono = ManualMonotonic::default();
    let clock: Arc<dyn Clock> = Arc::new(GuardedClock::new(
        Arc::new(h.clock.clone()),
        Arc::new(mono.clone()),
        Duration::from_secs(600),
    ));
    let observer = Observer::new(Mode::DryRun, "jobs", Arc::clone(&clock));
    observer.schedule_loaded(Path::new("test.json"), "md5");
    let (tx, rx) = mpsc::channel(100_000);
    let scheduler = Scheduler::new(schedule_from(THREE_JOBS), Minute::containing(start));
    h.tick_loop = TickLoop::new(clock, scheduler, None, tx).with_observer(Arc::clone(&observer));
    h.rx = rx;
    (h, mono, observer)
}

#[tokio::test]
async fn a_wall_clock_stepped_forward_sends_nothing_early_and_every_true_minute_once() {
    let (mut h, mono, observer) = guarded_harness(at(12, 0));
    h.tick_loop.tick().await.unwrap();
    assert!(observer.health().readiness().ready);
    // The wall clock jumps two hours ahead 30 s into 12:00.
    mono.advance(Duration::from_secs(30));
    h.clock.set(at(14, 0) + chrono::Duration::seconds(30));
    h.tick_loop.tick().await.unwrap();
    assert!(drain(&mut h.rx).is_empty(), "nothing of 12:01 to 14:00");
    let r = observer.health().readiness();
    assert!(
        !r.ready && r.checks["clock"].detail.contains("clock fault"),
        "{r:?}"
    );
    // Three true minutes pass on the stepped clock: each is sent once, in its own minute.
    let mut sent = Vec::new();
    for _ in 0..6 {
        mono.advance(Duration::from_secs(30));
        h.clock.advance(chrono::Duration::seconds(30));
        h.tick_loop.tick().await.unwrap();
        sent.extend(names(&drain(&mut h.rx)));
    }
    let every_minute: Vec<&str> = sent
        .iter()
        .filter(|(n, _)| n == "every-minute")
        .map(|(_, t)| t.as_str())
        .collect();
    assert_eq!(every_minute, ["12:01", "12:02", "12:03"]);
    // Corrected: ready again, and the loop goes on from 12:04.
    mono.advance(Duration::from_secs(30));
    h.clock.set(at(12, 4));
    h.tick_loop.tick().await.unwrap();
    assert!(observer.health().readiness().ready);
    assert_eq!(
        names(&drain(&mut h.rx)),
        [("every-minute".to_string(), "12:04".to_string())]
    );
}

#[tokio::test]
async fn a_clock_behind_the_last_processed_minute_is_not_ready_until_it_passes_it() {
    let (mut h, mono, observer) = guarded_harness(at(12, 0));
    mono.advance(Duration::from_secs(180));
    h.clock.set(at(12, 3));
    h.tick_loop.tick().await.unwrap();
    assert_eq!(drain(&mut h.rx).len(), 3);
    h.clock.set(at(11, 50));
    h.tick_loop.tick().await.unwrap();
    let r = observer.health().readiness();
    assert!(!r.ready, "{r:?}");
    assert!(
        r.checks["clock"]
            .detail
            .starts_with("clock behind the cursor"),
        "{r:?}"
    );
    assert!(drain(&mut h.rx).is_empty());
    mono.advance(Duration::from_secs(14 * 60));
    h.clock.set(at(12, 4));
    h.tick_loop.tick().await.unwrap();
    assert!(observer.health().readiness().ready);
    assert_eq!(
        names(&drain(&mut h.rx)),
        [("every-minute".to_string(), "12:04".to_string())]
    );
}
