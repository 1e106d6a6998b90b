//! A tansu broker owned by one test: a free port, its own temp directory, killed and restarted on
//! the same data. A broker that cannot start fails the test with the reason.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::pause;

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
