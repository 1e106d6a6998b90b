//! Runs one job: the step between the worker's queue and its results.
//!
//! ```text
//!  JobMessage.job ──► Handler::run ──► Outcome { status, exit code, last 4 KiB of stdout/stderr }
//!                      ├─ ProcessHandler, --handlers DIR (default): split like a shell, no expansion;
//!                      │    the first word names an executable file directly inside DIR; run it,
//!                      │    no shell; anything else is `rejected` and nothing runs
//!                      ├─ ProcessHandler, --shell (opt-in): `sh -c job` — whoever can write to the
//!                      │    topic can run commands on this machine
//!                      └─ your own: implement [`Handler`] and embed the worker
//! ```
//!
//! A child runs in its own process group, so `--timeout` can end it together with whatever it
//! started: SIGTERM to the group, then SIGKILL after the kill grace. When the child exits on its own,
//! anything it left running in its group is killed too, so no job leaves processes behind and the
//! output pipes close. A child process escaping its group (`setsid`) is beyond this reach; reading its
//! output stops shortly after the child exits.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::message::JobMessage;

/// How much of stdout and of stderr a result keeps: the last 4 KiB.
pub const TAIL_BYTES: usize = 4096;

/// After the child exits, how long its output may still be read (a grandchild outside its process
/// group can hold the pipes open forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);

/// A boxed, sendable future: what [`Handler::run`] returns, so handlers can be trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a handler is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRun {
    /// The message as received.
    pub message: JobMessage,
    /// 1 for the first attempt.
    pub attempt: u32,
}

/// How an execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Exit status 0.
    Succeeded,
    /// Non-zero exit, killed by a signal, or could not be started.
    Failed,
    /// Ran longer than `--timeout` and was killed.
    TimedOut,
    /// Not allowed to run (nothing was started); never retried.
    Rejected,
}

impl Status {
    /// The wire name (`timed_out`).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::TimedOut => "timed_out",
            Status::Rejected => "rejected",
        }
    }

    /// Would another attempt make sense?
    pub fn is_retryable(self) -> bool {
        matches!(self, Status::Failed | Status::TimedOut)
    }
}

/// What a handler reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// How it ended.
    pub status: Status,
    /// The process's exit code, when it exited normally.
    pub exit_code: Option<i32>,
    /// The last [`TAIL_BYTES`] of stdout (lossy UTF-8).
    pub stdout_tail: String,
    /// The last [`TAIL_BYTES`] of stderr (lossy UTF-8); a rejection's reason.
    pub stderr_tail: String,
}

impl Outcome {
    /// An outcome with no output.
    pub fn new(status: Status) -> Outcome {
        Outcome {
            status,
            exit_code: None,
            stdout_tail: String::new(),
            stderr_tail: String::new(),
        }
    }
}

/// Executes jobs. Implement it to embed the worker with an in-process handler; the worker measures
/// time, retries, reports and commits around it.
pub trait Handler: Send + Sync + 'static {
    /// Runs one attempt of one job.
    fn run<'a>(&'a self, run: &'a JobRun) -> BoxFuture<'a, Outcome>;
}

/// Why a job was not run under `--handlers DIR`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Rejection {
    /// Unbalanced quotes or a trailing backslash.
    #[error("job {job:?} cannot be split into words: {reason}")]
    Unsplittable {
        /// The job.
        job: String,
        /// The splitter's complaint.
        reason: String,
    },
    /// Nothing to run.
    #[error("job is empty")]
    Empty,
    /// The first word is a path, not a bare name.
    #[error("{word:?} is not a bare handler name (no '/' and no '..' allowed): only files directly inside the handlers directory run")]
    NotABareName {
        /// The first word.
        word: String,
    },
    /// No such file in the handlers directory.
    #[error("no handler {name:?} in {dir}")]
    NotFound {
        /// The first word.
        name: String,
        /// The handlers directory.
        dir: PathBuf,
    },
    /// It exists but is not an executable regular file.
    #[error("{path} is not an executable file")]
    NotExecutable {
        /// Where it is.
        path: PathBuf,
    },
}

/// Splits `job` like a shell (quotes and backslashes, no expansion of any kind) and checks that the
/// first word is a bare file name. Pure: the file system is checked by [`resolve`].
pub fn split_job(job: &str) -> Result<(String, Vec<String>), Rejection> {
    let mut words = shell_words::split(job).map_err(|e| Rejection::Unsplittable {
        job: job.to_string(),
        reason: e.to_string(),
    })?;
    if words.is_empty() {
        return Err(Rejection::Empty);
    }
    let name = words.remove(0);
    if name.is_empty()
        || name == "."
        || name.contains('/')
        || name.contains("..")
        || name.contains('\0')
    {
        return Err(Rejection::NotABareName { word: name });
    }
    Ok((name, words))
}

/// The program and arguments `job` runs under `--handlers dir`, or why it may not run.
///
/// A symbolic link inside `dir` is followed: putting it there is the operator's decision.
pub fn resolve(dir: &Path, job: &str) -> Result<(PathBuf, Vec<String>), Rejection> {
    use std::os::unix::fs::PermissionsExt;
    let (name, args) = split_job(job)?;
    let path = dir.join(&name);
    let meta = std::fs::metadata(&path).map_err(|_| Rejection::NotFound {
        name: name.clone(),
        dir: dir.to_path_buf(),
    })?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(Rejection::NotExecutable { path });
    }
    Ok((path, args))
}

/// How [`ProcessHandler`] turns a job into a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// `--handlers DIR`
    Handlers(PathBuf),
    /// `--shell`
    Shell,
}

/// Runs jobs as child processes.
#[derive(Debug, Clone)]
pub struct ProcessHandler {
    /// Handlers directory or shell.
    pub program: Program,
    /// `--timeout`
    pub timeout: Duration,
    /// Between SIGTERM and SIGKILL after a timeout.
    pub kill_grace: Duration,
}

impl Handler for ProcessHandler {
    fn run<'a>(&'a self, run: &'a JobRun) -> BoxFuture<'a, Outcome> {
        Box::pin(self.execute(run))
    }
}

/// The last bytes written to a pipe.
#[derive(Debug, Default)]
struct Tail {
    bytes: Vec<u8>,
}

impl Tail {
    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > 2 * TAIL_BYTES {
            let cut = self.bytes.len() - TAIL_BYTES;
            self.bytes.drain(..cut);
        }
    }

    fn text(&self) -> String {
        tail_text(&self.bytes)
    }
}

/// The last [`TAIL_BYTES`] of `bytes` as text, starting on a character boundary.
pub fn tail_text(bytes: &[u8]) -> String {
    let mut start = bytes.len().saturating_sub(TAIL_BYTES);
    // Skip UTF-8 continuation bytes so the tail does not start mid-character.
    while start < bytes.len() && start > 0 && bytes[start] & 0b1100_0000 == 0b1000_0000 {
        start += 1;
    }
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

async fn read_into(mut pipe: impl AsyncRead + Unpin, tail: Arc<Mutex<Tail>>) {
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if let Ok(mut t) = tail.lock() {
                    t.push(&buf[..n]);
                }
            }
        }
    }
}

/// Kills the child's whole process group when dropped before being disarmed (a worker shutting
/// down past its grace aborts running executions; their processes must not outlive them).
struct GroupGuard {
    pgid: Option<Pid>,
}

impl GroupGuard {
    fn signal(&self, signal: Signal) {
        if let Some(pgid) = self.pgid {
            // ESRCH: the group is already empty.
            let _ = killpg(pgid, signal);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

impl ProcessHandler {
    fn command(&self, run: &JobRun) -> Result<tokio::process::Command, Rejection> {
        let mut cmd = match &self.program {
            Program::Handlers(dir) => {
                let (path, args) = resolve(dir, &run.message.job)?;
                let mut cmd = tokio::process::Command::new(path);
                cmd.args(args);
                cmd
            }
            Program::Shell => {
                let mut cmd = tokio::process::Command::new("sh");
                cmd.arg("-c").arg(&run.message.job);
                cmd
            }
        };
        let m = &run.message;
        cmd.env("CRONQ_JOB_NAME", &m.job_name)
            .env("CRONQ_DISPATCH_ID", &m.dispatch_id)
            .env("CRONQ_SCHEDULED_AT", &m.scheduled_at)
            .env("CRONQ_PRIORITY", m.priority.to_string())
            .env("CRONQ_ATTEMPT", run.attempt.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        Ok(cmd)
    }

    async fn execute(&self, run: &JobRun) -> Outcome {
        let mut cmd = match self.command(run) {
            Ok(cmd) => cmd,
            Err(rejection) => {
                let mut outcome = Outcome::new(Status::Rejected);
                outcome.stderr_tail = rejection.to_string();
                return outcome;
            }
        };
        let mut child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                let mut outcome = Outcome::new(Status::Failed);
                outcome.stderr_tail = format!("cannot start the job: {e}");
                return outcome;
            }
        };
        let guard = GroupGuard {
            pgid: child.id().map(|id| Pid::from_raw(id as i32)),
        };
        let stdout = Arc::new(Mutex::new(Tail::default()));
        let stderr = Arc::new(Mutex::new(Tail::default()));
        let mut readers = tokio::task::JoinSet::new();
        if let Some(pipe) = child.stdout.take() {
            readers.spawn(read_into(pipe, Arc::clone(&stdout)));
        }
        if let Some(pipe) = child.stderr.take() {
            readers.spawn(read_into(pipe, Arc::clone(&stderr)));
        }

        let (status, timed_out) = match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(status) => (status, false),
            Err(_) => {
                guard.signal(Signal::SIGTERM);
                let status = match tokio::time::timeout(self.kill_grace, child.wait()).await {
                    Ok(status) => status,
                    Err(_) => {
                        guard.signal(Signal::SIGKILL);
                        child.wait().await
                    }
                };
                (status, true)
            }
        };
        // Whatever the job left running in its group goes with it (this also closes the pipes).
        guard.signal(Signal::SIGKILL);
        let drained = tokio::time::timeout(DRAIN_AFTER_EXIT, async {
            while readers.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            readers.abort_all();
        }
        drop(guard);

        let text = |t: &Arc<Mutex<Tail>>| t.lock().map(|t| t.text()).unwrap_or_default();
        let mut outcome = Outcome {
            status: Status::Failed,
            exit_code: None,
            stdout_tail: text(&stdout),
            stderr_tail: text(&stderr),
        };
        match status {
            Ok(s) => {
                outcome.exit_code = s.code();
                outcome.status = if timed_out {
                    Status::TimedOut
                } else if s.success() {
                    Status::Succeeded
                } else {
                    Status::Failed
                };
            }
            Err(e) => {
                outcome.status = if timed_out {
                    Status::TimedOut
                } else {
                    Status::Failed
                };
                outcome
                    .stderr_tail
                    .push_str(&format!("\nwaiting for the job failed: {e}"));
            }
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn message(job: &str) -> JobMessage {
        JobMessage {
            v: 1,
            job_name: "nightly".into(),
            priority: 7,
            job: job.into(),
            cron_time: "0 3 * * *".into(),
            scheduled_at: "2026-11-26T03:00:00Z".into(),
            dispatch_id: "nightly@2026-11-26T03:00:00Z".into(),
        }
    }

    fn script(dir: &Path, name: &str, body: &str) {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn handler(dir: &Path, timeout: Duration) -> ProcessHandler {
        ProcessHandler {
            program: Program::Handlers(dir.to_path_buf()),
            timeout,
            kill_grace: Duration::from_millis(300),
        }
    }

    async fn run(h: &ProcessHandler, job: &str) -> Outcome {
        h.run(&JobRun {
            message: message(job),
            attempt: 2,
        })
        .await
    }

    #[test]
    fn splitting_follows_shell_quoting_without_expansion() {
        assert_eq!(
            split_job(r#"backup --to "/mnt/my disk" $HOME '*.txt'"#).unwrap(),
            (
                "backup".to_string(),
                vec![
                    "--to".to_string(),
                    "/mnt/my disk".to_string(),
                    "$HOME".to_string(),
                    "*.txt".to_string()
                ]
            )
        );
    }

    #[test]
    fn paths_dotdot_empty_and_broken_quotes_are_rejected() {
        for job in [
            "/bin/sh -c id",
            "../outside",
            "sub/dir",
            "..",
            ".",
            "a..b",
            "./local",
        ] {
            assert!(
                matches!(split_job(job), Err(Rejection::NotABareName { .. })),
                "{job:?}: {:?}",
                split_job(job)
            );
        }
        assert_eq!(split_job("   "), Err(Rejection::Empty));
        assert!(matches!(
            split_job("echo 'unbalanced"),
            Err(Rejection::Unsplittable { .. })
        ));
    }

    #[test]
    fn only_executable_files_directly_inside_the_directory_resolve() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "ok", "exit 0");
        std::fs::write(dir.path().join("plain"), "not executable").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        assert_eq!(
            resolve(dir.path(), "ok a b").unwrap(),
            (
                dir.path().join("ok"),
                vec!["a".to_string(), "b".to_string()]
            )
        );
        assert!(matches!(
            resolve(dir.path(), "plain"),
            Err(Rejection::NotExecutable { .. })
        ));
        assert!(matches!(
            resolve(dir.path(), "sub"),
            Err(Rejection::NotExecutable { .. })
        ));
        assert!(matches!(
            resolve(dir.path(), "missing"),
            Err(Rejection::NotFound { .. })
        ));
    }

    #[tokio::test]
    async fn a_handler_gets_its_arguments_and_the_cronq_environment() {
        let dir = tempfile::tempdir().unwrap();
        script(
            dir.path(),
            "show",
            r#"echo "args=$*|$CRONQ_JOB_NAME|$CRONQ_DISPATCH_ID|$CRONQ_SCHEDULED_AT|$CRONQ_PRIORITY|$CRONQ_ATTEMPT"; echo oops >&2; exit 3"#,
        );
        let out = run(
            &handler(dir.path(), Duration::from_secs(10)),
            "show 'one two' $HOME",
        )
        .await;
        assert_eq!(out.status, Status::Failed);
        assert_eq!(out.exit_code, Some(3));
        assert_eq!(
            out.stdout_tail,
            "args=one two $HOME|nightly|nightly@2026-11-26T03:00:00Z|2026-11-26T03:00:00Z|7|2\n"
        );
        assert_eq!(out.stderr_tail, "oops\n");
    }

    #[tokio::test]
    async fn a_rejected_job_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let job = format!("../../bin/touch {}", marker.display());
        let out = run(&handler(dir.path(), Duration::from_secs(10)), &job).await;
        assert_eq!(out.status, Status::Rejected);
        assert!(
            out.stderr_tail.contains("not a bare handler name"),
            "{out:?}"
        );
        assert!(!marker.exists());
    }

    #[tokio::test]
    async fn shell_mode_runs_the_job_with_sh() {
        let h = ProcessHandler {
            program: Program::Shell,
            timeout: Duration::from_secs(10),
            kill_grace: Duration::from_millis(300),
        };
        let out = run(&h, "echo $CRONQ_JOB_NAME | tr a-z A-Z").await;
        assert_eq!(out.status, Status::Succeeded);
        assert_eq!(out.exit_code, Some(0));
        assert_eq!(out.stdout_tail, "NIGHTLY\n");
    }

    #[tokio::test]
    async fn only_the_last_4_kib_of_output_are_kept() {
        let h = ProcessHandler {
            program: Program::Shell,
            timeout: Duration::from_secs(10),
            kill_grace: Duration::from_millis(300),
        };
        let out = run(
            &h,
            "i=0; while [ $i -lt 2000 ]; do echo line-$i; i=$((i+1)); done",
        )
        .await;
        assert_eq!(out.status, Status::Succeeded);
        assert!(out.stdout_tail.len() <= TAIL_BYTES);
        assert!(out.stdout_tail.len() > TAIL_BYTES - 20);
        assert!(out.stdout_tail.ends_with("line-1999\n"));
    }

    #[test]
    fn a_tail_never_starts_in_the_middle_of_a_character() {
        let mut bytes = vec![b'x'; 10];
        bytes.extend("é".repeat(TAIL_BYTES).as_bytes());
        let t = tail_text(&bytes);
        assert!(t.chars().all(|c| c == 'é'), "no replacement character");
        assert!(t.len() <= TAIL_BYTES);
    }

    fn alive(pid: i32) -> bool {
        // A zombie waiting for its (new) parent to reap it no longer runs anything.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                let state = s.rsplit(')').next().unwrap_or("").trim_start();
                !state.starts_with('Z') && !state.starts_with('X')
            })
            .unwrap_or(false)
    }

    /// A SIGKILLed process takes a moment to finish exiting: wait for it, boundedly.
    async fn dies_soon(pid: i32) -> bool {
        for _ in 0..200 {
            if !alive(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_group_even_when_it_ignores_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        script(
            dir.path(),
            "hang",
            &format!(
                "trap '' TERM\nsleep 300 &\necho $$ $! > {}\necho started\nwait",
                pids.display()
            ),
        );
        let started = std::time::Instant::now();
        let out = run(&handler(dir.path(), Duration::from_millis(500)), "hang").await;
        assert_eq!(out.status, Status::TimedOut);
        assert_eq!(out.exit_code, None, "killed by a signal");
        assert_eq!(out.stdout_tail, "started\n");
        assert!(started.elapsed() < Duration::from_secs(5));
        let text = std::fs::read_to_string(&pids).unwrap();
        for pid in text.split_whitespace() {
            let pid: i32 = pid.parse().unwrap();
            assert!(dies_soon(pid).await, "process {pid} survived the timeout");
        }
    }

    #[tokio::test]
    async fn a_job_that_exits_leaving_a_background_process_does_not_leave_it_running() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        script(
            dir.path(),
            "fork",
            &format!("sleep 300 &\necho $! > {}\nexit 0", pids.display()),
        );
        let out = run(&handler(dir.path(), Duration::from_secs(10)), "fork").await;
        assert_eq!(out.status, Status::Succeeded);
        let pid: i32 = std::fs::read_to_string(&pids)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            dies_soon(pid).await,
            "background process {pid} left running: {:?}",
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
        );
    }
}
