//! The HTTP surface and the log format of real `cronq` processes.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{http_addr_in_log, http_get, pause, schedule_file, CRONQ};

const SCHEDULE: &str =
    r#"{"jobs":[{"jobName":"every-minute","priority":1,"job":"true","cronTime":"* * * * *"}]}"#;

/// A `cronq run --dry-run` serving HTTP on a free port; killed on drop.
struct DryRun {
    child: std::process::Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl DryRun {
    fn start(extra: &[&str]) -> DryRun {
        let (dir, path) = schedule_file(SCHEDULE);
        let log = dir.path().join("stderr.log");
        let child = Command::new(CRONQ)
            .args(["run", "--dry-run", "--http", "127.0.0.1:0", "--schedule"])
            .arg(&path)
            .args(extra)
            .env_remove("CRONQ_HTTP")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start cronq run");
        DryRun {
            child,
            log,
            _dir: dir,
        }
    }
}

impl Drop for DryRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn probes_and_metrics_answer_over_http() {
    let run = DryRun::start(&[]);
    let addr = http_addr_in_log(&run.log, Duration::from_secs(30));
    let (code, body) = http_get(&format!("http://{addr}/healthz"));
    assert_eq!(code, 200, "{body}");
    let live: serde_json::Value = serde_json::from_str(&body).expect("healthz is JSON");
    assert_eq!(live["alive"], true, "{body}");
    let (code, body) = http_get(&format!("http://{addr}/readyz"));
    let ready: serde_json::Value = serde_json::from_str(&body).expect("readyz is JSON");
    assert_eq!(code == 200, ready["ready"] == true, "{code} {body}");
    let (code, body) = http_get(&format!("http://{addr}/metrics"));
    assert_eq!(code, 200);
    assert!(
        body.trim_end().ends_with("# EOF"),
        "not OpenMetrics text: {body}"
    );
    let (code, body) = http_get(&format!("http://{addr}/"));
    assert_eq!(code, 200);
    assert!(body.starts_with("<!doctype html>"), "{body}");
    let (code, _) = http_get(&format!("http://{addr}/nope"));
    assert_eq!(code, 404);
}

#[test]
fn a_busy_http_port_is_an_error_at_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let (_dir, path) = schedule_file(SCHEDULE);
    let out = Command::new(CRONQ)
        .args(["run", "--dry-run", "--http", &addr, "--schedule"])
        .arg(&path)
        .env_remove("CRONQ_HTTP")
        .stdin(Stdio::null())
        .output()
        .expect("run cronq");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr} (--http)")),
        "{stderr}"
    );
}

#[test]
fn json_logs_are_one_object_per_line_with_stable_fields() {
    let run = DryRun::start(&["--log-format", "json"]);
    // Wait for the start line, then read what was logged.
    let mut text = String::new();
    for _ in 0..1500 {
        text = std::fs::read_to_string(&run.log).unwrap_or_default();
        if text.contains("cronq dispatcher started") {
            break;
        }
        pause();
    }
    assert!(text.contains("cronq dispatcher started"), "{text}");
    let mut started = None;
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(v.get(field).is_some(), "no {field}: {line}");
        }
        if v["message"] == "cronq dispatcher started" {
            started = Some(v);
        }
    }
    let started = started.expect("start line");
    assert_eq!(started["level"], "INFO");
    assert_eq!(started["jobs"], 1, "{started}");
    assert!(started["schedule"]
        .as_str()
        .is_some_and(|s| s.ends_with(".json")));
}
