//! A tansu broker with a chosen storage engine, for the benches that compare engines.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A tansu broker started by the bench with a given storage engine, on a free port, in its own
/// directory; killed on drop.
pub struct MemoryBroker {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl MemoryBroker {
    /// `None` (with the reason on stderr) when this tansu cannot serve from memory: release builds
    /// of tansu 0.6 leave out the `dynostore` feature its memory engine needs.
    /// The tansu is `TANSU`, else `~/.cargo/bin/tansu`.
    #[allow(dead_code)] // not every bench that includes this file uses it
    pub fn start(engine: &str, dir: tempfile::TempDir) -> Option<MemoryBroker> {
        let tansu = std::env::var("TANSU").unwrap_or_else(|_| {
            format!(
                "{}/.cargo/bin/tansu",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        Self::start_at(&tansu, engine, dir)
    }

    /// [`MemoryBroker::start`] with the tansu at `tansu`.
    pub fn start_at(tansu: &str, engine: &str, dir: tempfile::TempDir) -> Option<MemoryBroker> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let url = format!("tcp://127.0.0.1:{port}");
        let mut child = Command::new(tansu)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", engine])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {tansu}: {e}"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                let mut log = String::new();
                if let Some(mut err) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut err, &mut log);
                }
                let last = log.lines().last().unwrap_or("").to_string();
                eprintln!("tansu --storage-engine {engine} exited ({status}): {last}");
                return None;
            }
            assert!(
                Instant::now() < deadline,
                "tansu ({engine}) did not listen within 20 s"
            );
            super::common::pause();
        }
        Some(MemoryBroker {
            port,
            child,
            _dir: dir,
        })
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for MemoryBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The broker a bench runs against: one started by hand (its address in `by_hand`'s variable),
/// else tansu with the storage engine in `engine_var` (the memory engine when only `TANSU` is
/// set), else the test broker.
#[allow(dead_code)] // not every bench that includes this file uses it
pub enum BenchBroker {
    Test(crate::common::Broker),
    Engine(MemoryBroker, String),
    ByHand(String),
}

#[allow(dead_code)]
impl BenchBroker {
    pub fn start(by_hand: Option<&str>, engine_var: &str) -> BenchBroker {
        if let Some(address) = by_hand.and_then(|v| std::env::var(v).ok()) {
            return BenchBroker::ByHand(address);
        }
        let engine = std::env::var(engine_var).ok().or_else(|| {
            std::env::var("TANSU")
                .is_ok()
                .then(|| "memory://tansu/".to_string())
        });
        if let Some(engine) = engine {
            let dir = tempfile::tempdir_in("/dev/shm")
                .unwrap_or_else(|_| tempfile::tempdir().expect("temp dir"));
            if let Some(b) = MemoryBroker::start(&engine, dir) {
                return BenchBroker::Engine(b, engine);
            }
            eprintln!("falling back to the test broker");
        }
        BenchBroker::Test(crate::common::Broker::start())
    }

    pub fn address(&self) -> String {
        match self {
            BenchBroker::Test(b) => b.address(),
            BenchBroker::Engine(b, _) => b.address(),
            BenchBroker::ByHand(a) => a.clone(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            BenchBroker::Test(_) => "the test broker (tansu, sqlite)".into(),
            BenchBroker::Engine(_, engine) => format!("tansu --storage-engine {engine}"),
            BenchBroker::ByHand(a) => format!("the broker at {a}"),
        }
    }
}

/// A `VmRSS:`-style field of `/proc/<pid>/status`, in bytes (0 when the process is gone).
#[allow(dead_code)]
pub fn status_bytes(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|r| r.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// User + system CPU of process `pid` so far (its threads that ended included); zero when it is gone.
#[allow(dead_code)]
pub fn cpu_time(pid: u32) -> std::time::Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name's closing parenthesis: state is field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<u64> = rest
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    std::time::Duration::from_secs_f64(ticks as f64 / hz)
}

/// CPU seconds used so far by the local tansu serving `address`, found by its command line; None
/// when no such process runs on this machine.
#[allow(dead_code)]
pub fn broker_cpu_s(address: &str) -> Option<f64> {
    let port = address.rsplit(':').next()?;
    let pid = std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        (cmd.contains("tansu") && cmd.contains(&format!(":{port}"))).then_some(pid)
    })?;
    Some(cpu_time(pid).as_secs_f64())
}
