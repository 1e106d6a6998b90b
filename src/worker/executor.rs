//! Runs one job: the step between the worker's queue and its results.
//!
//! ```text
//!  JobMessage.job ──► Handler::run ──► Outcome { status, exit code, the end of stdout/stderr }
//!                      ├─ ProcessHandler, --handlers DIR (default): split like a shell, no expansion;
//!                      │    the first word names an executable file directly inside DIR; open it,
//!                      │    check the open file, run that same file, no shell; anything else is
//!                      │    `rejected` and nothing runs
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
//!
//! Least privilege: a child's environment is [`ChildEnv`] (`PATH`, `HOME`, `LANG`, `TZ`, the names
//! given with `--pass-env`) plus its per-run `CRONQ_*` variables, never the rest of the worker's
//! (Kafka credentials, the worker's own `CRONQ_*` settings). The handlers directory and its files
//! must be owned by the worker's user or root and not writable by group or other, like sshd's
//! StrictModes ([`check_handlers_dir`] at start, and again on each file as it is opened); a handler
//! is opened, checked through that open file (`fstat`) and executed through it
//! (`/proc/self/fd/N`), so it cannot be swapped between the check and the exec. A script handler
//! therefore sees `/proc/self/fd/N` as its `$0`; `CRONQ_HANDLER` holds its path. Under `--run-as`
//! ([`RunAs`]) a child runs as that user and group with no supplementary groups, so it cannot read
//! the worker's files either.

use std::ffi::OsString;
use std::fs::File;
use std::future::Future;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

use super::run_as::RunAs;
pub use crate::wire::result::{tail_text, Status};
use crate::wire::JobMessage;

/// `--max-output`'s default: how much of stdout and of stderr a result keeps, the last 8 KiB.
pub const DEFAULT_MAX_OUTPUT: usize = 8 * 1024;

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

/// What a handler reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// How it ended.
    pub status: Status,
    /// The process's exit code, when it exited normally.
    pub exit_code: Option<i32>,
    /// The end of stdout (lossy UTF-8); reports keep the last `--max-output` bytes.
    pub stdout_tail: String,
    /// The end of stderr (lossy UTF-8), or a rejection's reason; reports keep the last
    /// `--max-output` bytes.
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

    /// [`Handler::run`], ended early when `cancel` fires (a newer run of the job replaces this one,
    /// `"overlap": "replace"`), with an outcome of status [`Status::Cancelled`]. The default drops
    /// the [`Handler::run`] future when `cancel` fires (and never starts it when `cancel` fired
    /// already); [`ProcessHandler`] instead ends its child like a timeout: SIGTERM to the group,
    /// SIGKILL after the kill grace.
    fn run_cancellable<'a>(
        &'a self,
        run: &'a JobRun,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Outcome> {
        if cancel.is_cancelled() {
            return Box::pin(std::future::ready(Outcome::new(Status::Cancelled)));
        }
        Box::pin(UntilCancelled {
            cancelled: Box::pin(cancel.cancelled()),
            inner: self.run(run),
        })
    }
}

/// A handler's future that ends with [`Status::Cancelled`] when its token fires. The handler's
/// future is kept until this one is dropped, where the caller would have dropped it: a panic while
/// dropping it surfaces in the same place as without the wrapper.
struct UntilCancelled<'a> {
    cancelled: Pin<Box<tokio_util::sync::WaitForCancellationFuture<'a>>>,
    inner: BoxFuture<'a, Outcome>,
}

impl Future for UntilCancelled<'_> {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Outcome> {
        if self.cancelled.as_mut().poll(cx).is_ready() {
            return std::task::Poll::Ready(Outcome::new(Status::Cancelled));
        }
        self.inner.as_mut().poll(cx)
    }
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
    /// It, or the directory, is writable by others or owned by someone else.
    #[error(transparent)]
    Unsafe(#[from] UnsafeHandler),
}

/// A handlers directory or handler that others could change: refused like sshd's StrictModes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnsafeHandler {
    /// Group or other may write it.
    #[error("{path} is writable by {who} (mode {mode:04o}): anyone who can change it can run commands as this worker; fix it with `chmod go-w {path}`")]
    Writable {
        /// The file or directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// `group`, `other` or `group and other`.
        who: &'static str,
    },
    /// Owned by another user than the worker's or root.
    #[error("{path} is owned by uid {owner} (mode {mode:04o}), neither this worker's user (uid {uid}) nor root: that user could change what jobs run")]
    Owner {
        /// The file or directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Its permission bits.
        mode: u32,
        /// The worker's effective uid.
        uid: u32,
    },
}

/// Refuses a file or directory that someone other than the worker's user or root could change.
pub fn check_owner_and_mode(path: &Path, meta: &std::fs::Metadata) -> Result<(), UnsafeHandler> {
    let mode = meta.mode() & 0o7777;
    let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => Some("group and other"),
        (true, false) => Some("group"),
        (false, true) => Some("other"),
        (false, false) => None,
    };
    if let Some(who) = who {
        return Err(UnsafeHandler::Writable {
            path: path.to_path_buf(),
            mode,
            who,
        });
    }
    let uid = nix::unistd::geteuid().as_raw();
    if meta.uid() != uid && meta.uid() != 0 {
        return Err(UnsafeHandler::Owner {
            path: path.to_path_buf(),
            owner: meta.uid(),
            mode,
            uid,
        });
    }
    Ok(())
}

/// Why `--handlers DIR` cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandlersDirError {
    /// It cannot be read.
    #[error("{path}: {source}")]
    Unreadable {
        /// The directory or entry.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not a directory.
    #[error("{path} is not a directory (create it and put one executable per job name in it, or use --shell)")]
    NotADirectory {
        /// The path given.
        path: PathBuf,
    },
    /// It or a file in it could be changed by someone else.
    #[error(transparent)]
    Unsafe(#[from] UnsafeHandler),
    /// Handlers are executed through `/proc/self/fd`.
    #[error("/proc/self/fd is not available ({0}): the worker executes handlers through it; mount /proc")]
    NoProc(std::io::Error),
}

/// The start-up check of `--handlers DIR`: the directory and every file directly inside it (links
/// followed) are owned by the worker's user or root and not writable by group or other.
pub fn check_handlers_dir(dir: &Path) -> Result<(), HandlersDirError> {
    let unreadable = |path: &Path| {
        let path = path.to_path_buf();
        move |source| HandlersDirError::Unreadable { path, source }
    };
    std::fs::read_dir("/proc/self/fd").map_err(HandlersDirError::NoProc)?;
    let meta = std::fs::metadata(dir).map_err(unreadable(dir))?;
    if !meta.is_dir() {
        return Err(HandlersDirError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    check_owner_and_mode(dir, &meta)?;
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(unreadable(dir))?
        .map(|e| e.map(|e| e.path()).map_err(unreadable(dir)))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for path in entries {
        // A dangling link or a subdirectory can never run; only files are handlers.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_file() {
            check_owner_and_mode(&path, &meta)?;
        }
    }
    Ok(())
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

/// A handler opened for one run: execute `file` itself, through `/proc/self/fd`.
#[derive(Debug)]
pub struct OpenHandler {
    /// Where it was opened.
    pub path: PathBuf,
    /// The open file that was checked and will be executed.
    pub file: File,
    /// The job's remaining words.
    pub args: Vec<String>,
}

/// Opens the handler `job` names under `--handlers dir` and checks the open file (an executable
/// regular file, owned by the worker's user or root, not writable by group or other) and the
/// directory; or says why it may not run.
///
/// A symbolic link inside `dir` is followed: putting it there is the operator's decision; the file it
/// leads to is checked.
pub fn resolve(dir: &Path, job: &str) -> Result<OpenHandler, Rejection> {
    let (name, args) = split_job(job)?;
    let path = dir.join(&name);
    let not_found = || Rejection::NotFound {
        name: name.clone(),
        dir: dir.to_path_buf(),
    };
    let dir_meta = std::fs::metadata(dir).map_err(|_| not_found())?;
    check_owner_and_mode(dir, &dir_meta)?;
    let file = File::open(&path).map_err(|_| not_found())?;
    let meta = file.metadata().map_err(|_| not_found())?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(Rejection::NotExecutable { path });
    }
    check_owner_and_mode(&path, &meta)?;
    Ok(OpenHandler { path, file, args })
}

/// The variables a child may inherit from the worker, read once at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChildEnv {
    vars: Vec<(OsString, OsString)>,
}

impl ChildEnv {
    /// Always passed on when the worker has them.
    pub const BASE: [&'static str; 4] = ["PATH", "HOME", "LANG", "TZ"];

    /// [`ChildEnv::BASE`] plus the `--pass-env` names, with their values in the worker's
    /// environment (names the worker does not have are left out).
    pub fn from_worker(pass: &[String]) -> ChildEnv {
        let names = Self::BASE
            .iter()
            .copied()
            .chain(pass.iter().map(String::as_str));
        let mut vars: Vec<(OsString, OsString)> = Vec::new();
        for name in names {
            if vars.iter().any(|(n, _)| n == name) {
                continue;
            }
            if let Some(value) = std::env::var_os(name) {
                vars.push((name.into(), value));
            }
        }
        ChildEnv { vars }
    }

    /// The variables, in order.
    pub fn vars(&self) -> &[(OsString, OsString)] {
        &self.vars
    }
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
    /// `--max-timeout`: the longest `timeoutMs` a message may set (see [`ProcessHandler::timeout_for`]).
    pub max_timeout: Duration,
    /// Between SIGTERM and SIGKILL after a timeout.
    pub kill_grace: Duration,
    /// `--max-output`: how much of the end of stdout and of stderr is kept.
    pub max_output: usize,
    /// What of the worker's environment children get.
    pub env: ChildEnv,
    /// `--run-as`: the user and group children run as (default: the worker's).
    pub run_as: Option<RunAs>,
}

impl Handler for ProcessHandler {
    fn run<'a>(&'a self, run: &'a JobRun) -> BoxFuture<'a, Outcome> {
        Box::pin(self.execute(run, None))
    }

    fn run_cancellable<'a>(
        &'a self,
        run: &'a JobRun,
        cancel: &'a CancellationToken,
    ) -> BoxFuture<'a, Outcome> {
        Box::pin(self.execute(run, Some(cancel)))
    }
}

/// How a job that could not be started ends. `rejected` (not retried, dead-lettered at once) when
/// the message itself cannot be passed to exec, so no retry can ever start it: its arguments or
/// variables are too long (`E2BIG`, `ENAMETOOLONG`) or hold a NUL byte (refused before any system
/// call, as `InvalidInput`), or the handler is no program the kernel can run (`ENOEXEC`).
/// Everything else stays `failed`, and is retried: `EAGAIN` (the process limit), `ENOMEM`,
/// `EMFILE`/`ENFILE`, `ETXTBSY` (a handler being replaced), `EACCES`/`ENOENT` (a handler or its
/// interpreter being installed or mounted), and any error not named here.
pub fn spawn_error_status(error: &std::io::Error) -> Status {
    if error.kind() == std::io::ErrorKind::InvalidInput {
        return Status::Rejected;
    }
    match error.raw_os_error() {
        Some(libc::E2BIG | libc::ENAMETOOLONG | libc::ENOEXEC) => Status::Rejected,
        _ => Status::Failed,
    }
}

/// Pends until `cancel` fires; forever without one.
async fn cancelled(cancel: Option<&CancellationToken>) {
    match cancel {
        Some(cancel) => cancel.cancelled().await,
        None => std::future::pending().await,
    }
}

/// The last bytes written to a pipe.
#[derive(Debug)]
struct Tail {
    bytes: Vec<u8>,
    max: usize,
}

impl Tail {
    fn new(max: usize) -> Tail {
        Tail {
            bytes: Vec::new(),
            max,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > 2 * self.max {
            let cut = self.bytes.len() - self.max;
            self.bytes.drain(..cut);
        }
    }

    fn text(&self) -> String {
        tail_text(&self.bytes, self.max)
    }
}

/// Lets the child keep `fd` across its exec (the parent's copy stays close-on-exec, so jobs started
/// at the same time do not inherit it): a script handler's interpreter reopens its script through
/// `/proc/self/fd/N`.
#[allow(unsafe_code)]
fn keep_across_exec(cmd: &mut tokio::process::Command, fd: RawFd) {
    // SAFETY: the hook runs in the child between fork and exec; it only calls fcntl, which is
    // async-signal-safe, on a descriptor number it owns a copy of, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
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
    /// The command for `run`, and the handler file it executes (to keep open until it started).
    fn command(&self, run: &JobRun) -> Result<(tokio::process::Command, Option<File>), Rejection> {
        let (mut cmd, handler) = match &self.program {
            Program::Handlers(dir) => {
                let handler = resolve(dir, &run.message.job)?;
                let fd = handler.file.as_raw_fd();
                let mut cmd = tokio::process::Command::new(format!("/proc/self/fd/{fd}"));
                keep_across_exec(&mut cmd, fd);
                let name = handler.path.file_name().unwrap_or_default().to_os_string();
                cmd.arg0(name)
                    .args(&handler.args)
                    .env_clear()
                    .envs(self.env.vars().iter().map(|(k, v)| (k, v)))
                    .env("CRONQ_HANDLER", &handler.path);
                (cmd, Some(handler.file))
            }
            Program::Shell => {
                let mut cmd = tokio::process::Command::new("sh");
                cmd.arg("-c")
                    .arg(&run.message.job)
                    .env_clear()
                    .envs(self.env.vars().iter().map(|(k, v)| (k, v)));
                (cmd, None)
            }
        };
        let m = &run.message;
        // Set after the passed-on variables: a run's own values cannot be overridden.
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
        if let Some(run_as) = &self.run_as {
            run_as.apply(&mut cmd);
        }
        Ok((cmd, handler))
    }

    /// The timeout of one attempt of `message`: its `timeoutMs` when it has one, else `--timeout`.
    /// A topic writer is not trusted, so a message's value is capped at `--max-timeout` (or at
    /// `--timeout` when that is longer: the worker's own default is always allowed).
    pub fn timeout_for(&self, message: &JobMessage) -> Duration {
        match message.timeout_ms {
            Some(ms) => Duration::from_millis(ms).min(self.max_timeout.max(self.timeout)),
            None => self.timeout,
        }
    }

    async fn execute(&self, run: &JobRun, cancel: Option<&CancellationToken>) -> Outcome {
        if cancel.is_some_and(CancellationToken::is_cancelled) {
            return Outcome::new(Status::Cancelled);
        }
        let timeout = self.timeout_for(&run.message);
        let (mut cmd, handler) = match self.command(run) {
            Ok(cmd) => cmd,
            Err(rejection) => {
                let mut outcome = Outcome::new(Status::Rejected);
                outcome.stderr_tail = tail_text(rejection.to_string().as_bytes(), self.max_output);
                return outcome;
            }
        };
        let spawned = cmd.spawn();
        // The child has its own descriptor (or failed to start).
        drop(handler);
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let mut outcome = Outcome::new(spawn_error_status(&e));
                outcome.stderr_tail = format!("cannot start the job: {e}");
                return outcome;
            }
        };
        let guard = GroupGuard {
            pgid: child.id().map(|id| Pid::from_raw(id as i32)),
        };
        let stdout = Arc::new(Mutex::new(Tail::new(self.max_output)));
        let stderr = Arc::new(Mutex::new(Tail::new(self.max_output)));
        let mut readers = tokio::task::JoinSet::new();
        if let Some(pipe) = child.stdout.take() {
            readers.spawn(read_into(pipe, Arc::clone(&stdout)));
        }
        if let Some(pipe) = child.stderr.take() {
            readers.spawn(read_into(pipe, Arc::clone(&stderr)));
        }

        // A timeout and a cancellation end the child alike; only the status differs.
        let waited = tokio::select! {
            waited = tokio::time::timeout(timeout, child.wait()) => waited.map_err(|_| Status::TimedOut),
            _ = cancelled(cancel) => Err(Status::Cancelled),
        };
        let (status, stopped) = match waited {
            Ok(status) => (status, None),
            Err(stopped) => {
                guard.signal(Signal::SIGTERM);
                let status = match tokio::time::timeout(self.kill_grace, child.wait()).await {
                    Ok(status) => status,
                    Err(_) => {
                        guard.signal(Signal::SIGKILL);
                        child.wait().await
                    }
                };
                (status, Some(stopped))
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
                outcome.status = if let Some(stopped) = stopped {
                    stopped
                } else if s.success() {
                    Status::Succeeded
                } else {
                    Status::Failed
                };
            }
            Err(e) => {
                outcome.status = stopped.unwrap_or(Status::Failed);
                outcome
                    .stderr_tail
                    .push_str(&format!("\nwaiting for the job failed: {e}"));
            }
        }
        if outcome.status == Status::TimedOut {
            if let Some(note) = self.capped_note(&run.message, timeout) {
                outcome.stderr_tail.push_str(&note);
            }
        }
        outcome
    }

    /// Why a job timed out earlier than its own `timeout` asked: the worker's ceiling.
    fn capped_note(&self, message: &JobMessage, timeout: Duration) -> Option<String> {
        let asked = Duration::from_millis(message.timeout_ms?);
        (asked > timeout).then(|| {
            format!(
                "\ntimed out after {}: the job's timeout {} is above this worker's ceiling (--max-timeout, or --timeout when longer)",
                humantime::format_duration(timeout),
                humantime::format_duration(asked),
            )
        })
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
            timeout_ms: None,
            max_attempts: None,
            overlap: None,
            not_before: None,
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
            max_timeout: Duration::from_secs(3600),
            kill_grace: Duration::from_millis(300),
            max_output: DEFAULT_MAX_OUTPUT,
            env: ChildEnv::from_worker(&[]),
            run_as: None,
        }
    }

    fn shell(max_output: usize) -> ProcessHandler {
        ProcessHandler {
            program: Program::Shell,
            timeout: Duration::from_secs(10),
            max_timeout: Duration::from_secs(3600),
            kill_grace: Duration::from_millis(300),
            max_output,
            env: ChildEnv::from_worker(&[]),
            run_as: None,
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
        let ok = resolve(dir.path(), "ok a b").unwrap();
        assert_eq!(ok.path, dir.path().join("ok"));
        assert_eq!(ok.args, ["a", "b"]);
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

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_private_handlers_directory_passes_the_start_up_check() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "ok", "exit 0");
        std::fs::write(dir.path().join("README"), "notes").unwrap();
        chmod(&dir.path().join("README"), 0o644);
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        chmod(dir.path(), 0o755);
        check_handlers_dir(dir.path()).unwrap();
    }

    #[test]
    fn a_handlers_directory_writable_by_group_or_other_is_refused_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "ok", "exit 0");
        for (mode, who) in [
            (0o775, "group"),
            (0o757, "other"),
            (0o777, "group and other"),
        ] {
            chmod(dir.path(), mode);
            let err = check_handlers_dir(dir.path()).unwrap_err().to_string();
            assert_eq!(
                err,
                format!(
                    "{} is writable by {who} (mode {mode:04o}): anyone who can change it can run commands as this worker; fix it with `chmod go-w {}`",
                    dir.path().display(),
                    dir.path().display()
                )
            );
        }
        chmod(dir.path(), 0o1777);
        assert!(check_handlers_dir(dir.path())
            .unwrap_err()
            .to_string()
            .contains("mode 1777"));
    }

    #[test]
    fn a_handler_writable_by_group_or_other_is_refused_at_start_and_at_run_time() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "ok", "exit 0");
        script(dir.path(), "loose", "exit 0");
        chmod(&dir.path().join("loose"), 0o775);
        let err = check_handlers_dir(dir.path()).unwrap_err().to_string();
        let loose = dir.path().join("loose");
        assert!(
            err.starts_with(&format!(
                "{} is writable by group (mode 0775)",
                loose.display()
            )),
            "{err}"
        );
        // A handler loosened after the start is refused when a job asks for it.
        assert!(matches!(
            resolve(dir.path(), "loose"),
            Err(Rejection::Unsafe(UnsafeHandler::Writable {
                mode: 0o775,
                ..
            }))
        ));
        assert!(resolve(dir.path(), "ok").is_ok());
        // A link to a loose file is judged by the file.
        std::os::unix::fs::symlink(&loose, dir.path().join("link")).unwrap();
        chmod(&loose, 0o755);
        check_handlers_dir(dir.path()).unwrap();
        chmod(&loose, 0o757);
        assert!(matches!(
            resolve(dir.path(), "link"),
            Err(Rejection::Unsafe(UnsafeHandler::Writable {
                who: "other",
                ..
            }))
        ));
    }

    #[test]
    fn a_handler_or_directory_owned_by_another_user_is_refused() {
        let me = nix::unistd::geteuid();
        if !me.is_root() {
            // Giving a file away needs root; the check itself is the same code as below.
            eprintln!("skipped: chown needs root");
            return;
        }
        let nobody = nix::unistd::Uid::from_raw(65534);
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "theirs", "exit 0");
        let theirs = dir.path().join("theirs");
        std::os::unix::fs::chown(&theirs, Some(nobody.as_raw()), None).unwrap();
        let err = check_handlers_dir(dir.path()).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{} is owned by uid 65534 (mode 0755), neither this worker's user (uid 0) nor root: that user could change what jobs run",
                theirs.display()
            )
        );
        assert!(matches!(
            resolve(dir.path(), "theirs"),
            Err(Rejection::Unsafe(UnsafeHandler::Owner { owner: 65534, .. }))
        ));
        std::os::unix::fs::chown(&theirs, Some(0), None).unwrap();
        std::os::unix::fs::chown(dir.path(), Some(nobody.as_raw()), None).unwrap();
        assert!(check_handlers_dir(dir.path())
            .unwrap_err()
            .to_string()
            .starts_with(&format!("{} is owned by uid 65534", dir.path().display())));
    }

    #[tokio::test]
    async fn the_checked_file_is_the_one_executed_even_if_swapped_before_the_exec() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "job", "echo original");
        let h = handler(dir.path(), Duration::from_secs(10));
        let run = JobRun {
            message: message("job"),
            attempt: 1,
        };
        let (mut cmd, opened) = h.command(&run).unwrap();
        // Between the check and the exec, the file at the path is replaced (rename is atomic).
        script(dir.path(), "swap", "echo swapped");
        std::fs::rename(dir.path().join("swap"), dir.path().join("job")).unwrap();
        let out = cmd.output().await.unwrap();
        drop(opened);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "original\n");
        // The next run opens (and checks) the new file.
        assert_eq!(run_job(&h, "job").await.stdout_tail, "swapped\n");
    }

    async fn run_job(h: &ProcessHandler, job: &str) -> Outcome {
        run(h, job).await
    }

    #[tokio::test]
    async fn a_child_gets_only_the_base_variables_what_is_passed_and_its_run_variables() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "env", "env");
        let mut h = handler(dir.path(), Duration::from_secs(10));
        h.env = ChildEnv {
            vars: vec![
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("ALLOWED".into(), "yes".into()),
                // A passed-on variable cannot override a run's own.
                ("CRONQ_JOB_NAME".into(), "forged".into()),
            ],
        };
        let out = run(&h, "env").await;
        let mut names: Vec<&str> = out
            .stdout_tail
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, _)| k))
            // Set by the shell itself.
            .filter(|k| !matches!(*k, "PWD" | "SHLVL" | "_" | "OLDPWD"))
            .collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "ALLOWED",
                "CRONQ_ATTEMPT",
                "CRONQ_DISPATCH_ID",
                "CRONQ_HANDLER",
                "CRONQ_JOB_NAME",
                "CRONQ_PRIORITY",
                "CRONQ_SCHEDULED_AT",
                "PATH"
            ],
            "{}",
            out.stdout_tail
        );
        assert!(out.stdout_tail.contains("CRONQ_JOB_NAME=nightly\n"));
        assert!(out.stdout_tail.contains(&format!(
            "CRONQ_HANDLER={}\n",
            dir.path().join("env").display()
        )));
    }

    /// Runs `job` under `--shell` as `run_as` with the test process's supplementary groups set to
    /// `extra_group` meanwhile (each nextest test is a process of its own; root only).
    async fn run_as_with_a_group(
        run_as: Option<RunAs>,
        extra_group: nix::unistd::Gid,
        job: &str,
    ) -> Outcome {
        let before = nix::unistd::getgroups().unwrap();
        nix::unistd::setgroups(&[extra_group]).unwrap();
        let mut h = shell(DEFAULT_MAX_OUTPUT);
        h.run_as = run_as;
        let out = run(&h, job).await;
        nix::unistd::setgroups(&before).unwrap();
        out
    }

    #[tokio::test]
    async fn a_child_run_as_another_user_has_its_ids_no_other_group_and_cannot_read_the_workers_file(
    ) {
        if !nix::unistd::geteuid().is_root() {
            eprintln!(
                "skipped: switching a child's user needs root (or CAP_SETUID, CAP_SETGID and CAP_KILL)"
            );
            return;
        }
        let run_as = RunAs::parse("nobody").unwrap();
        // A secret only the worker's user may read, in a directory anyone may enter.
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let secret = dir.path().join("sasl-password");
        std::fs::write(&secret, "wsec-file-secret\n").unwrap();
        chmod(&secret, 0o600);
        let job = format!(
            "echo \"uid=$(id -u) gid=$(id -g) groups=$(id -G) home=$HOME\"; cat {} /proc/$PPID/environ",
            secret.display()
        );
        // A supplementary group of the worker's that the child must not keep (adm, 4).
        let adm = nix::unistd::Gid::from_raw(4);

        // The same job as the worker's own user reads the file: the check below can fail.
        let own = run_as_with_a_group(None, adm, &job).await;
        assert!(own.stdout_tail.contains("wsec-file-secret"), "{own:?}");
        assert!(own.stdout_tail.contains("groups=0 4"), "{own:?}");

        let out = run_as_with_a_group(Some(run_as.clone()), adm, &job).await;
        assert_eq!(out.status, Status::Failed, "{out:?}");
        assert_eq!(
            out.stdout_tail.lines().next(),
            Some(
                format!(
                    "uid={} gid={} groups={} home={}",
                    run_as.uid,
                    run_as.gid,
                    run_as.gid,
                    run_as.home.as_ref().unwrap().display()
                )
                .as_str()
            ),
            "{out:?}"
        );
        assert!(!out.stdout_tail.contains("wsec-file-secret"), "{out:?}");
        assert!(
            !out.stdout_tail.contains("PATH="),
            "/proc/$PPID/environ: {out:?}"
        );
        assert_eq!(
            out.stderr_tail.matches("Permission denied").count(),
            2,
            "{out:?}"
        );
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_group_of_a_child_run_as_another_user() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: switching a child's user needs root (or CAP_SETUID, CAP_SETGID and CAP_KILL)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // The child (nobody) writes its pids here.
        chmod(dir.path(), 0o777);
        let pids = dir.path().join("pids");
        let mut h = shell(DEFAULT_MAX_OUTPUT);
        h.timeout = Duration::from_millis(500);
        h.run_as = Some(RunAs::parse("nobody").unwrap());
        let job = format!(
            "trap '' TERM; sleep 300 & echo $$ $! > {}; echo started; wait",
            pids.display()
        );
        let started = std::time::Instant::now();
        let out = run(&h, &job).await;
        assert_eq!(out.status, Status::TimedOut, "{out:?}");
        assert_eq!(out.stdout_tail, "started\n");
        assert!(started.elapsed() < Duration::from_secs(5));
        let text = std::fs::read_to_string(&pids).unwrap();
        for pid in text.split_whitespace() {
            let pid: i32 = pid.parse().unwrap();
            assert!(dies_soon(pid).await, "process {pid} survived the timeout");
        }
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

    /// A job that can never be started (arguments too long for exec, a NUL byte) is `rejected` at
    /// once with the reason, not `failed` and retried; the same handler runs a normal job.
    #[tokio::test]
    async fn a_job_that_exec_can_never_start_is_rejected_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        script(
            dir.path(),
            "record",
            &format!("echo x >> {}", marker.display()),
        );
        let h = handler(dir.path(), Duration::from_secs(10));
        let several_mb = format!("record {}", "x".repeat(4 << 20));
        let many_args = format!("record {}", "ab ".repeat(1 << 20));
        for (job, reason) in [
            (several_mb.as_str(), "Argument list too long"),
            (many_args.as_str(), "Argument list too long"),
            ("record a\u{0}b", "nul byte"),
            ("record 'a\u{0}b'", "nul byte"),
        ] {
            let out = run(&h, job).await;
            assert_eq!(out.status, Status::Rejected, "{:.40}: {out:?}", job);
            assert!(
                out.stderr_tail.starts_with("cannot start the job: ")
                    && out.stderr_tail.contains(reason),
                "{:.40}: {}",
                job,
                out.stderr_tail
            );
        }
        for job in [several_mb.as_str(), "echo 'a\u{0}b'"] {
            let out = run(&shell(DEFAULT_MAX_OUTPUT), job).await;
            assert_eq!(out.status, Status::Rejected, "sh -c {:.40}: {out:?}", job);
        }
        assert!(!marker.exists(), "nothing ran");
        assert_eq!(run(&h, "record ok").await.status, Status::Succeeded);
        assert!(marker.exists());
    }

    /// Errors a retry may get past stay `failed` (retried); those no retry can are `rejected`.
    #[test]
    fn transient_spawn_errors_are_retried_and_permanent_ones_rejected() {
        use std::io::{Error, ErrorKind};
        for errno in [
            libc::EAGAIN,
            libc::ENOMEM,
            libc::EMFILE,
            libc::ENFILE,
            libc::ETXTBSY,
            libc::EACCES,
            libc::ENOENT,
            libc::EINTR,
        ] {
            assert_eq!(
                spawn_error_status(&Error::from_raw_os_error(errno)),
                Status::Failed,
                "{}",
                Error::from_raw_os_error(errno)
            );
        }
        for errno in [libc::E2BIG, libc::ENAMETOOLONG, libc::ENOEXEC] {
            assert_eq!(
                spawn_error_status(&Error::from_raw_os_error(errno)),
                Status::Rejected,
                "{}",
                Error::from_raw_os_error(errno)
            );
        }
        let nul = Error::new(ErrorKind::InvalidInput, "nul byte found in provided data");
        assert_eq!(spawn_error_status(&nul), Status::Rejected);
    }

    #[tokio::test]
    async fn shell_mode_runs_the_job_with_sh() {
        let out = run(
            &shell(DEFAULT_MAX_OUTPUT),
            "echo $CRONQ_JOB_NAME | tr a-z A-Z",
        )
        .await;
        assert_eq!(out.status, Status::Succeeded);
        assert_eq!(out.exit_code, Some(0));
        assert_eq!(out.stdout_tail, "NIGHTLY\n");
    }

    #[tokio::test]
    async fn only_the_last_max_output_bytes_of_each_stream_are_kept() {
        for max in [1024, DEFAULT_MAX_OUTPUT] {
            let out = run(
                &shell(max),
                "i=0; while [ $i -lt 3000 ]; do echo line-$i; echo err-$i >&2; i=$((i+1)); done",
            )
            .await;
            assert_eq!(out.status, Status::Succeeded);
            for (tail, last) in [
                (&out.stdout_tail, "line-2999\n"),
                (&out.stderr_tail, "err-2999\n"),
            ] {
                assert!(
                    tail.len() <= max && tail.len() > max - 20,
                    "{max}: {}",
                    tail.len()
                );
                assert!(tail.ends_with(last));
            }
        }
    }

    #[tokio::test]
    async fn a_rejections_reason_is_cut_to_max_output_too() {
        let dir = tempfile::tempdir().unwrap();
        let mut h = handler(dir.path(), Duration::from_secs(10));
        h.max_output = 1024;
        let job = format!("/{}", "x".repeat(10_000));
        let out = run(&h, &job).await;
        assert_eq!(out.status, Status::Rejected);
        assert!(out.stderr_tail.len() <= 1024, "{}", out.stderr_tail.len());
        assert!(out.stderr_tail.contains("not a bare handler name"));
    }

    #[test]
    fn a_tail_never_starts_in_the_middle_of_a_character() {
        let mut bytes = vec![b'x'; 10];
        bytes.extend("é".repeat(4096).as_bytes());
        let t = tail_text(&bytes, 4096);
        assert!(t.chars().all(|c| c == 'é'), "no replacement character");
        assert!(t.len() <= 4096);
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

    fn with_timeout_ms(ms: Option<u64>) -> JobMessage {
        JobMessage {
            timeout_ms: ms,
            ..message("job")
        }
    }

    #[test]
    fn a_messages_timeout_overrides_the_workers_up_to_the_ceiling() {
        let mut h = shell(DEFAULT_MAX_OUTPUT);
        h.timeout = Duration::from_secs(600);
        h.max_timeout = Duration::from_secs(3600);
        let of = |ms| h.timeout_for(&with_timeout_ms(ms));
        assert_eq!(of(None), Duration::from_secs(600), "absent: --timeout");
        assert_eq!(
            of(Some(2_000)),
            Duration::from_secs(2),
            "shorter than --timeout"
        );
        assert_eq!(
            of(Some(1_800_000)),
            Duration::from_secs(1800),
            "longer, under the ceiling"
        );
        assert_eq!(
            of(Some(86_400_000)),
            Duration::from_secs(3600),
            "capped at --max-timeout"
        );
        // A worker whose own --timeout is above --max-timeout allows messages up to its own.
        h.timeout = Duration::from_secs(7200);
        assert_eq!(
            h.timeout_for(&with_timeout_ms(Some(86_400_000))),
            Duration::from_secs(7200)
        );
    }

    #[tokio::test]
    async fn a_message_timeout_shorter_than_the_workers_times_the_job_out() {
        let dir = tempfile::tempdir().unwrap();
        script(dir.path(), "nap", "sleep 5");
        let h = handler(dir.path(), Duration::from_secs(60));
        let started = std::time::Instant::now();
        let out = h
            .run(&JobRun {
                message: JobMessage {
                    timeout_ms: Some(300),
                    ..message("nap")
                },
                attempt: 1,
            })
            .await;
        assert_eq!(out.status, Status::TimedOut);
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_cancelled_run_is_ended_like_a_timeout_and_reported_cancelled() {
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
        let h = handler(dir.path(), Duration::from_secs(60));
        let run = JobRun {
            message: message("hang"),
            attempt: 1,
        };
        let cancel = CancellationToken::new();
        let started = std::time::Instant::now();
        let (out, ()) = tokio::join!(h.run_cancellable(&run, &cancel), async {
            while !pids.exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            cancel.cancel();
        });
        assert_eq!(out.status, Status::Cancelled);
        assert_eq!(out.exit_code, None, "killed by a signal");
        assert_eq!(out.stdout_tail, "started\n");
        // SIGTERM is ignored: SIGKILL after the kill grace (300 ms), far before the 60 s timeout.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let text = std::fs::read_to_string(&pids).unwrap();
        for pid in text.split_whitespace() {
            let pid: i32 = pid.parse().unwrap();
            assert!(
                dies_soon(pid).await,
                "process {pid} survived the cancellation"
            );
        }
        // Cancelled before it starts: nothing runs.
        let marker = dir.path().join("ran");
        script(dir.path(), "mark", &format!("touch {}", marker.display()));
        let out = h
            .run_cancellable(
                &JobRun {
                    message: message("mark"),
                    attempt: 2,
                },
                &cancel,
            )
            .await;
        assert_eq!(out.status, Status::Cancelled);
        assert!(!marker.exists());
    }

    /// A handler of its own (no process): the default `run_cancellable` stops waiting for it.
    struct Forever(Arc<std::sync::atomic::AtomicBool>);

    struct Flagged(Arc<std::sync::atomic::AtomicBool>);

    impl Drop for Flagged {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    impl Handler for Forever {
        fn run<'a>(&'a self, _run: &'a JobRun) -> BoxFuture<'a, Outcome> {
            let flag = Flagged(Arc::clone(&self.0));
            Box::pin(async move {
                let _flag = flag;
                std::future::pending().await
            })
        }
    }

    #[tokio::test]
    async fn an_embedded_handlers_run_is_cancelled_by_dropping_its_future_where_the_caller_drops() {
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let h = Forever(Arc::clone(&dropped));
        let run = JobRun {
            message: message("anything"),
            attempt: 1,
        };
        let cancel = CancellationToken::new();
        let mut future = h.run_cancellable(&run, &cancel);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut future)
                .await
                .is_err(),
            "runs until cancelled"
        );
        cancel.cancel();
        assert_eq!(future.as_mut().await.status, Status::Cancelled);
        assert!(
            !dropped.load(std::sync::atomic::Ordering::SeqCst),
            "the handler's future lives until the caller drops the run"
        );
        drop(future);
        assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
    }
}
