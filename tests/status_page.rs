//! The dispatcher's HTTP surface on a real broker (tansu) and a real `cronq run`: readiness before
//! and after the broker is reached, metrics against what a consumer reads back, a rejected reload
//! on the page and in the metrics, and the status page as headless chromium builds it (the
//! screenshots are kept under `target/screenshots/`). Time runs on a drill clock, so a "minute"
//! lasts a few real seconds.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// cronq's default `--partitions` of the job topic.
const PARTITIONS: i32 = 3;

/// Drill speed: a drill minute lasts 3 real seconds.
const SPEED: i64 = 20;

/// A job name that is markup: the page must show it as text.
const HOSTILE: &str = "<img src=x onerror=alert(1)>";

/// The value of one series in Prometheus text (`name` with its labels as printed), if present.
fn series(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let value = line.strip_prefix(name)?.strip_prefix(' ')?;
        value.trim().parse().ok()
    })
}

/// Polls `url` until `done(status, body)`; panics with the last answer and the log after `timeout`.
fn wait_for(
    url: &str,
    timeout: Duration,
    run: &Dispatcher,
    what: &str,
    done: impl Fn(u16, &str) -> bool,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let (code, body) = http_get(url);
        if done(code, &body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}; last answer {code}:\n{body}\nlog:\n{}",
            run.log()
        );
        pause();
    }
}

fn jobs_json(jobs: &[(&str, &str, Option<&str>, bool)]) -> String {
    let jobs: Vec<String> = jobs
        .iter()
        .map(|(name, cron, topic, enabled)| {
            let topic = topic.map_or(String::new(), |t| format!(r#","topic":"{t}""#));
            format!(
                r#"{{"jobName":{},"job":"run","cronTime":"{cron}","enabled":{enabled}{topic}}}"#,
                serde_json::to_string(name).expect("name")
            )
        })
        .collect();
    format!(r#"{{"jobs":[{}]}}"#, jobs.join(","))
}

/// Replaces the schedule file the way an editor or a ConfigMap does: a new file renamed over it.
fn replace(path: &Path, json: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, json).expect("write schedule");
    std::fs::rename(&tmp, path).expect("rename schedule");
}

#[test]
fn the_dispatcher_reports_what_it_sent_and_shows_it_on_its_page() {
    let mut broker = Broker::not_started();
    let topic = random_topic("obs");
    let other = format!("{topic}-reports");
    let schedule = |enabled: bool| {
        jobs_json(&[
            ("billing-sync", "* * * * *", None, enabled),
            ("cache-warm", "* * * * *", None, enabled),
            (HOSTILE, "* * * * *", None, enabled),
            ("report-hourly", "* * * * *", Some(&other), enabled),
            ("nightly-backup", "30 2 * * *", None, enabled),
        ])
    };
    let (dir, path) = schedule_file(&schedule(true));
    // `--http` on a free port.
    let run = Dispatcher::start(
        &broker.address(),
        &topic,
        &path,
        Drill::new(SPEED),
        "member-1",
        dir.path(),
        &["--shards", "2", "--http", "127.0.0.1:0"],
    );
    let addr = http_addr_in_log(&run.log, Duration::from_secs(30));
    let url = |p: &str| format!("http://{addr}{p}");

    // Before the broker is up: alive, not ready, and /readyz says why.
    let (code, body) = http_get(&url("/readyz"));
    assert_eq!(code, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).expect("readyz JSON");
    assert_eq!(ready["ready"], false);
    assert_eq!(ready["checks"]["schedule"]["ok"], true, "{body}");
    assert_eq!(ready["checks"]["kafka"]["ok"], false, "{body}");
    assert_eq!(
        ready["checks"]["kafka"]["detail"], "not reached yet",
        "{body}"
    );
    let (code, body) = http_get(&url("/healthz"));
    assert_eq!(code, 200, "{body}");

    broker.launch();
    let body = wait_for(
        &url("/readyz"),
        Duration::from_secs(90),
        &run,
        "ready once the broker is reached and the shards are assigned",
        |code, _| code == 200,
    );
    assert!(body.contains("owns shards [0, 1] of 2"), "{body}");

    // A few drill minutes of dispatches.
    wait_for(
        &url("/metrics"),
        Duration::from_secs(90),
        &run,
        "dispatches acked",
        |_, m| {
            series(m, &format!("cronq_dispatched_total{{topic=\"{other}\"}}")).unwrap_or(0.0) >= 3.0
        },
    );

    // A broken file is rejected, counted, and shown with its problem; dispatching goes on.
    let mut broken = schedule(true);
    broken = broken.replacen("\"30 2 * * *\"", "\"61 2 * * *\"", 1);
    replace(&path, &broken);
    let metrics = wait_for(
        &url("/metrics"),
        Duration::from_secs(30),
        &run,
        "rejected reload counted",
        |_, m| series(m, "cronq_schedule_reloads_total{result=\"rejected\"}") == Some(1.0),
    );
    assert_eq!(
        series(&metrics, "cronq_schedule_reloads_total{result=\"ok\"}"),
        Some(0.0)
    );
    assert_eq!(series(&metrics, "cronq_schedule_jobs"), Some(5.0));
    assert_eq!(series(&metrics, "cronq_shards_owned"), Some(2.0));
    let page = http_get(&url("/")).1;
    assert!(page.contains(">rejected</b>"), "{page}");
    assert!(page.contains("61 is out of range"), "{page}");

    // The group shows once the watchdog has read the cursor records (second 40 of a minute).
    wait_for(
        &url("/status.json"),
        Duration::from_secs(30),
        &run,
        "the group read",
        |_, s| s.contains("\"members\":{\"member-1\""),
    );

    // The page as a real browser builds it.
    let dom = browser_dom(&url("/"));
    assert!(dom.contains("cronq dispatcher · member-1"), "{dom}");
    assert!(
        dom.contains("billing-sync") && dom.contains("report-hourly"),
        "{dom}"
    );
    assert!(dom.contains("Next 5 runs"), "upcoming runs: {dom}");
    assert!(dom.contains("nightly-backup"), "upcoming runs: {dom}");
    assert!(dom.contains("<svg class=\"chart\""), "charts: {dom}");
    assert!(dom.contains("<rect"), "bars: {dom}");
    assert!(dom.contains(">member-1<"), "group members: {dom}");
    assert!(dom.contains("every shard owned"), "group verdict: {dom}");
    // The hostile name is text, never an element.
    assert!(dom.contains("&lt;img src=x onerror=alert(1)&gt;"), "{dom}");
    assert!(!dom.contains("<img"), "{dom}");
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
    browser_screenshot(&url("/"), &shots.join("dispatcher-1280.png"), 1280, 1700);
    browser_screenshot(&url("/"), &shots.join("dispatcher-390.png"), 390, 2400);
    if std::env::var_os("CRONQ_UPDATE_SCREENSHOTS").is_some() {
        let committed = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/screenshots");
        std::fs::create_dir_all(&committed).expect("tests/screenshots");
        std::fs::copy(
            shots.join("dispatcher-1280.png"),
            committed.join("dispatcher.png"),
        )
        .expect("copy screenshot");
    }

    // Stop dispatching (every job disabled), let everything settle, and compare the metrics with
    // what a consumer reads back.
    replace(&path, &schedule(false));
    wait_for(
        &url("/metrics"),
        Duration::from_secs(30),
        &run,
        "the disabling reload",
        |_, m| series(m, "cronq_schedule_reloads_total{result=\"ok\"}") == Some(1.0),
    );
    let metrics = wait_for(
        &url("/metrics"),
        Duration::from_secs(30),
        &run,
        "every dispatch settled",
        |_, m| {
            series(m, "cronq_undelivered") == Some(0.0)
                && series(m, "cronq_queue_depth") == Some(0.0)
                && series(m, "cronq_schedule_jobs") == Some(0.0)
        },
    );
    let sent_main = series(
        &metrics,
        &format!("cronq_dispatched_total{{topic=\"{topic}\"}}"),
    )
    .expect("main topic counted") as usize;
    let sent_other = series(
        &metrics,
        &format!("cronq_dispatched_total{{topic=\"{other}\"}}"),
    )
    .expect("other topic counted") as usize;
    let main = consume_all(
        &broker.address(),
        &topic,
        PARTITIONS,
        sent_main,
        Duration::from_secs(60),
    );
    let reports = consume_all(
        &broker.address(),
        &other,
        PARTITIONS,
        sent_other,
        Duration::from_secs(60),
    );
    assert_eq!(
        main.len(),
        sent_main,
        "records on {topic} vs cronq_dispatched_total"
    );
    assert_eq!(
        reports.len(),
        sent_other,
        "records on {other} vs cronq_dispatched_total"
    );
    // Three every-minute jobs on the main topic, one on the other: the same minutes.
    assert_eq!(sent_main, 3 * sent_other, "{metrics}");
    assert_eq!(
        series(&metrics, "cronq_dispatch_skew_seconds_count"),
        Some((sent_main + sent_other) as f64),
        "one skew per acked record"
    );
    assert!(
        series(&metrics, "cronq_dispatch_skew_seconds_bucket{le=\"+Inf\"}")
            == Some((sent_main + sent_other) as f64)
    );
    assert_eq!(
        series(&metrics, "cronq_takeovers_total"),
        Some(2.0),
        "{metrics}"
    );
    assert!(
        series(&metrics, "cronq_tick_lag_seconds").is_some_and(|lag| lag < 60.0),
        "{metrics}"
    );
    for shard in 0..2 {
        assert!(
            series(
                &metrics,
                &format!("cronq_shard_cursor_lag_seconds{{shard=\"{shard}\"}}")
            )
            .is_some(),
            "{metrics}"
        );
    }
    assert!(!metrics.contains("job_name") && !metrics.contains("jobName"));
    let status: serde_json::Value =
        serde_json::from_str(&http_get(&url("/status.json")).1).expect("status JSON");
    let minutes = status["minutes"].as_array().expect("minutes");
    assert_eq!(minutes.len(), 60);
    let charted: u64 = minutes
        .iter()
        .map(|m| m["dispatched"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(charted as usize, sent_main + sent_other, "{status}");

    // The broker goes away: not ready, and /readyz says why; alive all the same (restarting the
    // dispatcher would not bring the broker back). It comes back: ready again.
    broker.kill();
    let body = wait_for(
        &url("/readyz"),
        Duration::from_secs(60),
        &run,
        "not ready while the broker is unreachable",
        |code, _| code == 503,
    );
    assert!(body.contains("cannot reach Kafka at"), "{body}");
    let (code, body) = http_get(&url("/healthz"));
    assert_eq!(code, 200, "{body}");
    broker.launch();
    wait_for(
        &url("/readyz"),
        Duration::from_secs(60),
        &run,
        "ready again once the broker is back",
        |code, _| code == 200,
    );
}
