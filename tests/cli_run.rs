//! The real `cronq` binary: `run --dry-run` hot reload while running, the replay window against
//! `cronq next`, and `validate`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

const BIN: &str = env!("CARGO_BIN_EXE_cronq");

fn write(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Waits (bounded) for a stderr line containing every one of `needles`; returns it.
fn wait_for(lines: &mpsc::Receiver<String>, seen: &mut Vec<String>, needles: &[&str]) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if needles.iter().all(|n| line.contains(n)) {
                    return line;
                }
            }
            Err(_) => panic!(
                "no log line with {needles:?} within 20 s; saw:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// The child's stderr, line by line, read on a thread of its own.
fn stderr_lines(child: &mut std::process::Child) -> mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Kills the child if the test fails before it is stopped, so no `cronq run` outlives the test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn run_dry_run_hot_reloads_reports_an_invalid_file_and_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schedule.json");
    write(
        &path,
        r#"{"jobs":[{"jobName":"a","job":"x","cronTime":"0 * * * *"}]}"#,
    );
    let mut guard = KillOnDrop(
        Command::new(BIN)
            .env("CRONQ_HTTP", "127.0.0.1:0")
            .args(["run", "--dry-run", "--tick", "20ms", "--schedule"])
            .arg(&path)
            .env("CRONQ_LOG", "info,rskafka=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut guard.0;
    let rx = stderr_lines(child);
    let mut seen = Vec::new();
    wait_for(&rx, &mut seen, &["dispatcher started", "jobs=1"]);

    write(
        &path,
        r#"{"jobs":[{"jobName":"a","job":"x","cronTime":"0 * * * *"},
                    {"jobName":"b","job":"y","cronTime":"*/5 * * * *"}]}"#,
    );
    wait_for(
        &rx,
        &mut seen,
        &["schedule reloaded", "added=1", "removed=0"],
    );

    write(
        &path,
        r#"{"jobs":[{"jobName":"a","job":"x","cronTime":"0 * * * *"},
                    {"jobName":"b","job":"y","cronTme":"*/5 * * * *"}]}"#,
    );
    let problem = wait_for(&rx, &mut seen, &["schedule problem", "cronTme"]);
    assert!(
        problem
            .contains(r#"jobs[1] \"b\": unknown field \"cronTme\" (did you mean \"cronTime\"?)"#)
            || problem
                .contains(r#"jobs[1] "b": unknown field "cronTme" (did you mean "cronTime"?)"#),
        "{problem}"
    );
    wait_for(&rx, &mut seen, &["schedule file rejected", "problems=2"]);
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running after a bad file"
    );

    write(
        &path,
        r#"{"jobs":[{"jobName":"b","job":"y","cronTime":"*/5 * * * *"}]}"#,
    );
    wait_for(
        &rx,
        &mut seen,
        &["schedule reloaded", "added=0", "removed=1"],
    );
    assert!(
        !seen
            .iter()
            .any(|l| l.contains("added=1") && l.contains("removed=1")),
        "the rejected file must not have been applied"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "cronq did not exit after SIGTERM"
        );
        std::thread::yield_now();
    };
    assert!(exit.success(), "exit status after SIGTERM: {exit}");
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text:?}: {e}"))
        .with_timezone(&Utc)
}

#[test]
fn a_replayed_window_equals_cronq_next_slot_for_slot_for_every_job() {
    // The shipped schedule, over a window with Berlin's spring-forward (2026-03-29), a month end (L)
    // and a quarter start.
    let schedule = Path::new(env!("CARGO_MANIFEST_DIR")).join("schedule/schedule.json");
    let (from, until) = ("2026-03-28T00:00:00Z", "2026-04-01T12:00:00Z");
    let out = Command::new(BIN)
        .env("CRONQ_HTTP", "127.0.0.1:0")
        .args([
            "run",
            "--dry-run",
            "--from",
            from,
            "--until",
            until,
            "--schedule",
        ])
        .arg(&schedule)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut replayed: BTreeMap<String, Vec<DateTime<Utc>>> = BTreeMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        replayed
            .entry(v["jobName"].as_str().unwrap().to_string())
            .or_default()
            .push(utc(v["scheduledAt"].as_str().unwrap()));
    }

    let file: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&schedule).unwrap()).unwrap();
    let mut compared = 0;
    for job in file["jobs"].as_array().unwrap() {
        let name = job["jobName"].as_str().unwrap();
        let enabled = job["enabled"].as_bool().unwrap_or(true);
        let tz = job["timezone"].as_str().unwrap_or("UTC");
        let after = (utc(from) - chrono::Duration::seconds(1)).to_rfc3339();
        let next = Command::new(BIN)
            .env("CRONQ_HTTP", "127.0.0.1:0")
            .args([
                "next",
                job["cronTime"].as_str().unwrap(),
                "--tz",
                tz,
                "--after",
                &after,
                "-n",
                "10000",
            ])
            .output()
            .unwrap();
        assert!(next.status.success());
        let expected: Vec<DateTime<Utc>> = String::from_utf8(next.stdout)
            .unwrap()
            .lines()
            .map(utc)
            .filter(|t| *t < utc(until))
            .collect();
        let got = replayed.remove(name).unwrap_or_default();
        if enabled {
            assert_eq!(got, expected, "job {name}");
            compared += got.len();
        } else {
            assert!(got.is_empty(), "disabled job {name} was dispatched");
        }
    }
    assert!(
        replayed.is_empty(),
        "unknown jobs dispatched: {:?}",
        replayed.keys()
    );
    assert!(
        compared > 6000,
        "the window should hold thousands of slots, got {compared}"
    );
}

#[test]
fn validate_lists_jobs_for_a_good_file_and_every_problem_for_a_bad_one() {
    let good = Command::new(BIN)
        .env("CRONQ_HTTP", "127.0.0.1:0")
        .args(["validate"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("schedule/schedule.json"))
        .output()
        .unwrap();
    assert!(good.status.success());
    let stdout = String::from_utf8(good.stdout).unwrap();
    assert!(
        stdout
            .lines()
            .next()
            .unwrap()
            .contains("OK, 12 jobs (11 enabled)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("legacy-export\t0 4 * * *\tUTC\tnext disabled"),
        "{stdout}"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        "{\"jobs\": [\n  {\"jobName\": \"nightly\", \"job\": \"x\", \"cronTime\": \"61 2 * * *\"},\n  {\"jobName\": \"nightly\", \"job\": \"y\", \"cronTime\": \"@daily\", \"timezone\": \"Europe/Berln\"}\n]}\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .env("CRONQ_HTTP", "127.0.0.1:0")
        .args(["validate"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let file = bad.display().to_string();
    let expected = [
        format!("{file}:2:50: jobs[0] \"nightly\": cronTime: minute: 61 is out of range 0-59"),
        format!("{file}:3:15: jobs[1] \"nightly\": jobName: duplicate: jobs[0] already uses this name"),
        format!("{file}:3:72: jobs[1] \"nightly\": timezone: unknown time zone \"Europe/Berln\": expected an IANA name such as \"UTC\" or \"Europe/Berlin\""),
        format!("{file}: 3 problems; nothing was changed"),
    ];
    assert_eq!(stderr.lines().collect::<Vec<_>>(), expected);
}

/// `cronq run --dry-run | head -n 1`: once the reader is gone the dispatcher cannot go on; it says
/// why and exits non-zero instead of living on doing nothing.
#[test]
fn a_closed_stdout_stops_the_dry_run_with_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schedule.json");
    write(
        &path,
        r#"{"jobs":[{"jobName":"a","job":"x","cronTime":"* * * * *"}]}"#,
    );
    // A drill clock 60 times faster: a minute (and a line on stdout) every real second.
    let drill = format!("60x@{}", Utc::now().timestamp());
    let mut guard = KillOnDrop(
        Command::new(BIN)
            .env("CRONQ_HTTP", "127.0.0.1:0")
            .args(["run", "--dry-run", "--drill-clock", &drill, "--schedule"])
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut guard.0;
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    assert!(first.contains(r#""jobName":"a""#), "{first}");
    drop(stdout);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running with stdout closed"
        );
        poll_pause();
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "exit status {status}; stderr:\n{stderr}");
    assert!(
        stderr.contains("writing dispatches to stdout") && stderr.contains("Broken pipe"),
        "{stderr}"
    );
}

/// A short pause between two polls of a child process; never a wait for time itself to pass.
#[allow(clippy::disallowed_methods)]
fn poll_pause() {
    std::thread::sleep(Duration::from_millis(50));
}

/// A dispatcher waiting for a broker that is not there says so, and a SIGTERM still stops it.
#[test]
fn sigterm_stops_a_dispatcher_still_waiting_for_its_broker() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("schedule.json");
    write(
        &path,
        r#"{"jobs":[{"jobName":"a","job":"x","cronTime":"* * * * *"}]}"#,
    );
    // A port where nothing listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut guard = KillOnDrop(
        Command::new(BIN)
            .env("CRONQ_HTTP", "127.0.0.1:0")
            .args([
                "run",
                "--brokers",
                &format!("127.0.0.1:{port}"),
                "--schedule",
            ])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let child = &mut guard.0;
    let rx = stderr_lines(child);
    let mut seen = Vec::new();
    wait_for(
        &rx,
        &mut seen,
        &["cannot reach Kafka", &format!("127.0.0.1:{port}")],
    );
    // SAFETY: signalling our own child process.
    #[allow(unsafe_code)]
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "still running 10 s after SIGTERM"
        );
        poll_pause();
    };
    assert!(status.success(), "exit status {status}");
}
