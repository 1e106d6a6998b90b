//! Test helpers for the real broker: start a tansu broker on a free port in its own temp directory,
//! kill and restart it on the same data, give each test a random topic, consume with rdkafka (a
//! client we did not write), run the cronq binary. A broker that cannot start fails the test with
//! the reason — Kafka tests are never skipped silently.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

pub const CRONQ: &str = env!("CARGO_BIN_EXE_cronq");

fn tansu_binary() -> PathBuf {
    if let Ok(p) = std::env::var("TANSU") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_default();
    let cargo_bin = PathBuf::from(home).join(".cargo/bin/tansu");
    if cargo_bin.exists() {
        return cargo_bin;
    }
    PathBuf::from("tansu")
}

/// A tansu broker owned by one test.
pub struct Broker {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// More `tansu broker` flags for the next `launch` (e.g. `--authentication`).
    pub extra_args: Vec<String>,
    /// Advertise this port to clients instead of `port` (a proxy in front of the broker).
    pub advertised_port: Option<u16>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free local port")
}

impl Broker {
    /// Starts a broker on a free port.
    pub fn start() -> Broker {
        let mut b = Broker::not_started();
        b.launch();
        b
    }

    /// A port where nothing listens yet; `launch` later starts the broker there.
    pub fn not_started() -> Broker {
        Broker {
            port: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            child: None,
            extra_args: Vec::new(),
            advertised_port: None,
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts (or restarts, on the same data) the broker and waits until it accepts connections.
    pub fn launch(&mut self) {
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = format!(
            "tcp://127.0.0.1:{}",
            self.advertised_port.unwrap_or(self.port)
        );
        let log = std::fs::File::create(self.dir.path().join("broker.log")).expect("broker log");
        let child = Command::new(tansu_binary())
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &advertised])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .args(&self.extra_args)
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the test broker ({}): {e}. Install it with `scripts/broker.sh install`.",
                    tansu_binary().display()
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!("the test broker exited with {status}; log:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "the test broker did not listen within 20 s; log:\n{}",
                self.log()
            );
            pause();
        }
        self.index_headers();
    }

    /// tansu 0.6's sqlite schema has no index on `header (topition, offset_id)`, so a fetch scans
    /// the whole header table once per record: reading 20 000 records with 3 headers each takes
    /// minutes and the broker stops answering. The index changes no data; scripts/broker.sh adds
    /// it too.
    fn index_headers(&self) {
        let db = self.dir.path().join("tansu.db");
        let script = "import sqlite3,sys; c=sqlite3.connect(sys.argv[1], timeout=30); \
                      c.execute('create index if not exists cronq_header_record on header (topition, offset_id)'); c.commit()";
        let status = Command::new("python3")
            .args(["-c", script])
            .arg(&db)
            .status()
            .unwrap_or_else(|e| {
                panic!("python3 is needed to index the test broker's headers: {e}")
            });
        assert!(
            status.success(),
            "indexing {} failed; broker log:\n{}",
            db.display(),
            self.log()
        );
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }

    /// SIGKILL: the broker dies without warning.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

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

/// One consumed record.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub partition: i32,
    pub key: Vec<u8>,
    pub value: serde_json::Value,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Reads every partition of `topic` from the beginning with rdkafka up to its high watermark (so
/// duplicates, if any, are all seen), giving up after `timeout`; returns what arrived. `expected`
/// only sizes the buffer.
pub fn consume_all(
    broker: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
    timeout: Duration,
) -> Vec<Consumed> {
    let mut config = ClientConfig::new();
    if let Ok(debug) = std::env::var("CRONQ_TEST_RDKAFKA_DEBUG") {
        config.set("debug", debug);
    }
    let consumer: BaseConsumer = config
        .set("bootstrap.servers", broker)
        .set("group.id", format!("verify-{topic}"))
        .set("enable.auto.commit", "false")
        .set("api.version.request", "true")
        .create()
        .expect("rdkafka consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition offset");
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    // The end of each partition: its high watermark, read once everything has been produced.
    let mut remaining: std::collections::HashMap<i32, i64> = std::collections::HashMap::new();
    for p in 0..partitions {
        let high = loop {
            match consumer.fetch_watermarks(topic, p, Duration::from_secs(5)) {
                Ok((_, high)) => break high,
                Err(e) => {
                    assert!(Instant::now() < deadline, "watermarks of {topic}/{p}: {e}");
                    pause();
                }
            }
        };
        if high > 0 {
            remaining.insert(p, high);
        }
    }
    let mut out = Vec::with_capacity(expected);
    while !remaining.is_empty() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if remaining
                    .get(&m.partition())
                    .is_some_and(|high| m.offset() + 1 >= *high)
                {
                    remaining.remove(&m.partition());
                }
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                let value = serde_json::from_slice(m.payload().unwrap_or_default())
                    .unwrap_or(serde_json::Value::Null);
                out.push(Consumed {
                    partition: m.partition(),
                    key: m.key().unwrap_or_default().to_vec(),
                    value,
                    headers,
                });
            }
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {}
        }
    }
    out
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
