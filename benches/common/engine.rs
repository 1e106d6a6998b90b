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
