//! Test helpers shared by the integration tests (each test file has `mod common;`):
//! - [`broker`]: a tansu broker on a free port in its own temp directory, killed and restarted on
//!   the same data. A broker that cannot start fails the test with the reason — Kafka tests are
//!   never skipped silently;
//! - [`topic`]: create, produce and read back topics with rdkafka (a client we did not write);
//! - [`drill`]: the drill clock the processes of one test share;
//! - [`process`]: cronq dispatcher and worker processes, and waiting on what they log;
//! - [`proxy`]: a Kafka-aware proxy that answers one topic's (or partition's) produce requests
//!   with an error;
//! - here: random topic names, schedule files, `cronq run` backfills, the HTTP surface and a
//!   headless browser.

#![allow(dead_code)]

pub mod broker;
pub mod drill;
pub mod process;
pub mod proxy;
pub mod topic;

// Each test file uses some of these; the others are unused there.
#[allow(unused_imports)]
pub use {broker::*, drill::*, process::*, proxy::*, topic::*};

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const CRONQ: &str = env!("CARGO_BIN_EXE_cronq");

/// A short pause between two polls of something outside the test (a child process, a log file).
/// Never used to wait for time itself to pass.
#[allow(clippy::disallowed_methods)]
pub fn pause() {
    std::thread::sleep(Duration::from_millis(20));
}

/// A topic name no other test uses.
pub fn random_topic(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// A slot on the tests' fixed day, 2026-11-26: `minute` minutes after midnight UTC.
pub fn slot(minute: u32) -> chrono::DateTime<chrono::Utc> {
    format!("2026-11-26T{:02}:{:02}:00Z", minute / 60, minute % 60)
        .parse()
        .unwrap()
}

/// Writes a schedule file into a temp dir and returns (dir, path).
pub fn schedule_file(json: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("schedule.json");
    std::fs::write(&path, json).expect("write schedule");
    (dir, path)
}

/// `cronq run` for a window, against `broker`, as a child process with stderr captured to a file.
pub fn cronq_backfill(
    broker: &str,
    topic: &str,
    schedule: &PathBuf,
    from: &str,
    until: &str,
    log: &PathBuf,
    extra_args: &[&str],
) -> Child {
    Command::new(CRONQ)
        .env("CRONQ_HTTP", "127.0.0.1:0")
        .args([
            "run",
            "--brokers",
            broker,
            "--topic",
            topic,
            "--from",
            from,
            "--until",
            until,
        ])
        .args(["--retry-backoff", "50ms"])
        .args(extra_args)
        .arg("--schedule")
        .arg(schedule)
        .env("CRONQ_LOG", "info,rskafka=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("spawn cronq")
}

/// Waits (bounded) for a child to exit; panics with its log if it doesn't.
pub fn wait_exit(child: &mut Child, timeout: Duration, log: &PathBuf) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "cronq did not finish within {timeout:?}; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        pause();
    }
}

/// The address a `cronq run`/`cronq worker` started with `--http 127.0.0.1:0` serves on, from its
/// "HTTP serving" log line in `log` (a text-format stderr log), waiting up to `timeout`.
pub fn http_addr_in_log(log: &std::path::Path, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("HTTP serving")) {
            if let Some(addr) = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("addr="))
            {
                return addr.to_string();
            }
        }
        assert!(
            Instant::now() < deadline,
            "no \"HTTP serving\" line in {} within {timeout:?}:\n{text}",
            log.display()
        );
        pause();
    }
}

/// `GET url`: the status code and the body (any status; a refused connection panics).
pub fn http_get(url: &str) -> (u16, String) {
    match ureq::get(url).timeout(Duration::from_secs(10)).call() {
        Ok(resp) => {
            let code = resp.status();
            (code, resp.into_string().unwrap_or_default())
        }
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_string().unwrap_or_default()),
        Err(e) => panic!("GET {url}: {e}"),
    }
}

/// Debian's `chromium` (installed by scripts/deps.sh), or `$CHROMIUM`.
pub fn chromium() -> PathBuf {
    if let Ok(p) = std::env::var("CHROMIUM") {
        return PathBuf::from(p);
    }
    for candidate in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if std::path::Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    panic!(
        "no chromium: install Debian's `chromium` package (scripts/deps.sh does) or set CHROMIUM"
    )
}

fn headless(url: &str, extra: &[&str]) -> std::process::Output {
    let profile = tempfile::tempdir().expect("chromium profile dir");
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--virtual-time-budget=2000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed on {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The page at `url` as a real browser built it (`chromium --headless --dump-dom`).
pub fn browser_dom(url: &str) -> String {
    String::from_utf8_lossy(&headless(url, &["--dump-dom"]).stdout).into_owned()
}

/// A screenshot of the page at `url`, `width`×`height` CSS pixels, written to `path` (PNG).
pub fn browser_screenshot(url: &str, path: &std::path::Path, width: u32, height: u32) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("screenshot directory");
    }
    headless(
        url,
        &[
            &format!("--window-size={width},{height}"),
            &format!("--screenshot={}", path.display()),
        ],
    );
    let meta = std::fs::metadata(path).expect("chromium wrote no screenshot");
    assert!(meta.len() > 1000, "screenshot {} is empty", path.display());
}
