//! cronq processes a test runs: `cronq run` members of a dispatcher group on a drill clock,
//! `cronq worker` members with a handlers directory of shell scripts, and waiting on what they
//! log. Each process is killed when its handle is dropped, so a failed test leaves none behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;

use super::{pause, wait_exit, Drill, CRONQ};

/// A `cronq run` member of the group `g-{topic}`, on a drill clock; killed when dropped.
pub struct Dispatcher {
    pub child: Child,
    pub log: PathBuf,
    pub name: String,
}

impl Dispatcher {
    /// Starts member `name` (100 ms ticks, 50 ms retry backoff, a 6 s session timeout unless
    /// `extra` sets one), its log in `dir`.
    pub fn start(
        broker: &str,
        topic: &str,
        schedule: &Path,
        drill: Drill,
        name: &str,
        dir: &Path,
        extra: &[&str],
    ) -> Dispatcher {
        Dispatcher::spawn(broker, topic, schedule, Some(drill), name, dir, extra, &[])
    }

    /// [`Dispatcher::start`] on the real clock (no drill clock), with `env` added to its
    /// environment (libfaketime's settings, say).
    pub fn start_on_real_clock(
        broker: &str,
        topic: &str,
        schedule: &Path,
        name: &str,
        dir: &Path,
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Dispatcher {
        Dispatcher::spawn(broker, topic, schedule, None, name, dir, extra, env)
    }

    #[allow(clippy::too_many_arguments)]
    fn spawn(
        broker: &str,
        topic: &str,
        schedule: &Path,
        drill: Option<Drill>,
        name: &str,
        dir: &Path,
        extra: &[&str],
        env: &[(&str, &std::ffi::OsStr)],
    ) -> Dispatcher {
        let log = dir.join(format!("{name}-{}.log", Utc::now().timestamp_millis()));
        let drill = drill.map(|d| d.setting());
        let child = Command::new(CRONQ)
            .env("CRONQ_HTTP", "127.0.0.1:0")
            .envs(env.iter().copied())
            .args(["run", "--brokers", broker, "--topic", topic])
            .args(["--group", &format!("g-{topic}"), "--member-id", name])
            .args(["--tick", "100ms", "--retry-backoff", "50ms"])
            .args(drill.iter().flat_map(|d| ["--drill-clock", d.as_str()]))
            .args(extra)
            .args(if extra.contains(&"--session-timeout") {
                &[][..]
            } else {
                &["--session-timeout", "6s"][..]
            })
            // The topic mode reads no file.
            .args(if extra.contains(&"--schedule-topic") {
                vec![]
            } else {
                vec![std::ffi::OsStr::new("--schedule"), schedule.as_os_str()]
            })
            .env("CRONQ_LOG", "info,rskafka=warn,librdkafka=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn cronq run");
        Dispatcher {
            child,
            log,
            name: name.to_string(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log shows `needle`.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before {needle:?}; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {needle:?} within {timeout:?}; log:\n{}",
                self.name,
                self.log()
            );
            pause();
        }
    }

    /// SIGKILL: the member dies without warning.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Freezes (SIGSTOP) or thaws (SIGCONT) the process: a member that neither ticks nor
    /// heartbeats for a while.
    pub fn freeze(&self, frozen: bool) {
        let signal = if frozen { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: signalling our own child process.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, signal);
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) {
        // SAFETY: signalling our own child process.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let status = wait_exit(&mut self.child, Duration::from_secs(60), &self.log);
        assert!(
            status.success(),
            "{} exited with {status}; log:\n{}",
            self.name,
            self.log()
        );
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `check`; if it panics, prints the members' logs first.
/// With `CRONQ_TEST_LOGS=1` in the environment the logs are printed after a pass too.
pub fn with_logs<T>(logs: &[&Dispatcher], check: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)) {
        Ok(v) => {
            if std::env::var_os("CRONQ_TEST_LOGS").is_some_and(|v| v == "1") {
                for d in logs {
                    eprintln!("===== {} =====\n{}", d.name, d.log());
                }
            }
            v
        }
        Err(e) => {
            for d in logs {
                eprintln!("===== {} =====\n{}", d.name, d.log());
            }
            std::panic::resume_unwind(e)
        }
    }
}

/// `cronq status --json` of the group `g-{topic}` on the drill clock: whether it exited 0 (the
/// group is healthy) and the view it printed (null if none).
pub fn group_status(broker: &str, topic: &str, drill: Drill) -> (bool, serde_json::Value) {
    let out = Command::new(CRONQ)
        .env("CRONQ_HTTP", "127.0.0.1:0")
        .args([
            "status",
            "--brokers",
            broker,
            "--group",
            &format!("g-{topic}"),
            "--json",
        ])
        .args(["--drill-clock", &drill.setting()])
        .output()
        .expect("cronq status");
    let view = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.success(), view)
}

/// A handlers directory with the given `(name, body)` shell scripts.
pub fn handlers(scripts: &[(&str, &str)]) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, body) in scripts {
        let path = dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    dir
}

/// A `cronq worker` child process; killed if the test ends first.
pub struct Worker {
    pub child: Child,
    pub log: PathBuf,
    /// The copy of the binary a worker of another user runs ([`cronq_open_to_all`]).
    _binary: Option<tempfile::TempDir>,
}

/// The cronq binary, in a directory every user may enter: for a process started under another
/// user, since the build's own path may pass through directories only its owner may enter (a
/// clone in a 0700 `mktemp -d`, a home directory). A hard link when the file system allows, a
/// copy otherwise; removed with the directory.
pub fn cronq_open_to_all() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("cronq-bin")
        .tempdir()
        .expect("a directory for the binary");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("open the directory");
    let binary = dir.path().join("cronq");
    if std::fs::hard_link(CRONQ, &binary).is_err() {
        std::fs::copy(CRONQ, &binary).expect("copy the binary");
    }
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755))
        .expect("open the binary");
    (dir, binary)
}

impl Worker {
    /// A worker of `group` on `topic`, reporting to `{topic}.results` and `{topic}.dlq` (100 ms
    /// commits, a 6 s session timeout, 50 ms retry backoff, 10 s shutdown grace), its log at `log`.
    pub fn start(
        broker: &str,
        topic: &str,
        group: &str,
        handlers: &Path,
        extra: &[&str],
        log: PathBuf,
    ) -> Worker {
        Worker::start_with_env(broker, topic, group, handlers, extra, &[], log)
    }

    /// [`Worker::start`] with extra environment variables on the worker process.
    pub fn start_with_env(
        broker: &str,
        topic: &str,
        group: &str,
        handlers: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        log: PathBuf,
    ) -> Worker {
        Worker::start_as(broker, topic, group, handlers, extra, env, None, log)
    }

    /// [`Worker::start_with_env`], the worker process running as `(uid, gid)` when given (the
    /// test must be root then).
    #[allow(clippy::too_many_arguments)]
    pub fn start_as(
        broker: &str,
        topic: &str,
        group: &str,
        handlers: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        user: Option<(u32, u32)>,
        log: PathBuf,
    ) -> Worker {
        let binary = user.map(|_| cronq_open_to_all());
        let mut command = Command::new(binary.as_ref().map_or(Path::new(CRONQ), |(_, b)| b));
        if let Some((uid, gid)) = user {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(gid);
        }
        let child = command
            .env("CRONQ_HTTP", "127.0.0.1:0")
            .args([
                "worker",
                "--brokers",
                broker,
                "--topic",
                topic,
                "--group",
                group,
            ])
            .arg("--handlers")
            .arg(handlers)
            .args(["--results-topic", &format!("{topic}.results")])
            .args(["--dlq-topic", &format!("{topic}.dlq")])
            .args(["--commit-interval", "100ms"])
            .args(["--retry-backoff", "50ms", "--shutdown-grace", "10s"])
            .args(extra)
            .args(if extra.contains(&"--session-timeout") {
                &[][..]
            } else {
                &["--session-timeout", "6s"][..]
            })
            .env("CRONQ_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn cronq worker");
        Worker {
            child,
            log,
            _binary: binary.map(|(dir, _)| dir),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), signal)
            .expect("signal the worker");
    }

    /// SIGTERM, then waits for a clean exit; returns the log.
    pub fn stop(mut self) -> String {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = wait_exit(&mut self.child, Duration::from_secs(30), &self.log);
        let log = self.log();
        assert!(status.success(), "worker exited with {status}; log:\n{log}");
        log
    }

    /// SIGKILL: the worker dies without warning, jobs in flight.
    pub fn kill_hard(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `done` until it holds or `timeout` passes; panics with `what` and `context()` otherwise.
pub fn wait_for(
    what: &str,
    timeout: Duration,
    mut done: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}\n{}",
            context()
        );
        pause();
    }
}

/// Waits (bounded) until the file at `log` contains `needle`; panics with `what` otherwise.
pub fn wait_for_line(log: &Path, needle: &str, timeout: Duration, what: &str) {
    let deadline = Instant::now() + timeout;
    while !std::fs::read_to_string(log)
        .unwrap_or_default()
        .contains(needle)
    {
        assert!(Instant::now() < deadline, "{what}");
        pause();
    }
}
