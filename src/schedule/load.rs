//! Parse and validate a schedule file into a [`Schedule`], collecting EVERY problem in one pass.
//!
//! Each [`Problem`] names the file, the `line:column` of the offending value, the job (index and
//! name) and the field: `schedule.json:14:19: jobs[2] "nightly": cronTime: minute: 61 is out of range 0-59`.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use chrono_tz::Tz;
use serde_json::value::RawValue;

use super::file::{offset_in, LineIndex, RawObject, JOB_FIELDS, TOP_FIELDS};
use super::fingerprint::Digest;
use super::kinds::{Kind, Timing, When};
use super::limits;
use super::spec::{
    Catchup, Job, JobSpec, Overlap, Schedule, ShardFilter, DEFAULT_CATCHUP_WINDOW,
    MAX_CATCHUP_WINDOW, MAX_DEADLINE, MIN_DEADLINE,
};
use crate::cron::{tz::parse_zone, CronError, CronExpr};
use crate::wire::job::{MAX_ATTEMPTS_RANGE, TIMEOUT_RANGE};
use crate::FastHash;

/// Where a problem is and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file.
    pub file: PathBuf,
    /// 1-based line and column, where known.
    pub position: Option<(usize, usize)>,
    /// Index in `jobs` and the job's name when it has a readable one.
    pub job: Option<(usize, Option<String>)>,
    /// The field (`cronTime`, …).
    pub field: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.position {
            write!(f, ":{line}:{col}")?;
        }
        f.write_str(": ")?;
        if let Some((index, name)) = &self.job {
            write!(f, "jobs[{index}]")?;
            if let Some(name) = name {
                write!(f, " {name:?}")?;
            }
            f.write_str(": ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.message)
    }
}

/// Why a schedule could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read schedule file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file was read but has problems; all of them are listed.
    #[error("{} has {} problem{}:\n{}", path.display(), problems.len(), if problems.len() == 1 { "" } else { "s" }, ProblemList(problems))]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
}

struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "  {p}")?;
        }
        Ok(())
    }
}

/// Settings the file's jobs fall back to, and which jobs to keep.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Zone for jobs without `timezone`.
    pub default_tz: Tz,
    /// `catchupWindow` of jobs without one (`--max-catchup`).
    pub default_catchup_window: Duration,
    /// Every job is validated; only the jobs of these shards are kept.
    pub shards: ShardFilter,
    /// The largest record batch a job's dispatch may become (`--max-message-bytes`, the broker's
    /// `message.max.bytes`); see [`limits::dispatch_batch_bytes`].
    pub max_message_bytes: usize,
    /// The most jobs a file may hold (`--max-jobs`).
    pub max_jobs: usize,
    /// The largest file read (`--max-file-bytes`); a larger one is refused before it is read.
    pub max_file_bytes: u64,
    /// Expressions compiled by earlier checks, shared with every check given the same options:
    /// a schedule topic's shards are checked batch by batch, and without it each batch would
    /// compile its own copy of an expression other batches already hold.
    pub expressions: Option<Arc<SharedExprs>>,
}

/// Compiled expressions by zone and text, shared across checks and threads. Held weakly: an
/// expression no job uses any more is freed, and its entry dropped at the next sweep.
#[derive(Debug, Default)]
pub struct SharedExprs {
    inner: Mutex<SharedInner>,
}

/// A compiled expression and its text (shared with the jobs that use it).
pub type CompiledText = (Arc<str>, Result<Arc<When>, CronError>);

/// The expressions of one zone, by text.
type WeakZone = (Tz, HashMap<Arc<str>, Weak<When>, FastHash>);

#[derive(Debug, Default)]
struct SharedInner {
    zones: Vec<WeakZone>,
    entries: usize,
    /// Sweep the dead entries when `entries` reaches this.
    sweep_at: usize,
}

impl SharedExprs {
    /// `text` compiled in `tz`: the expression held by another job when there is one, else a new
    /// compilation (a failed one is not kept).
    pub fn compile(&self, text: &str, tz: Tz) -> CompiledText {
        if let Some(found) = self.find(text, tz) {
            return found;
        }
        let shared: Arc<str> = Arc::from(text);
        let result = CronExpr::parse(&shared, tz).map(|e| Arc::new(When::of_cron(e)));
        let Ok(expr) = &result else {
            return (shared, result);
        };
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.entries >= inner.sweep_at {
            for (_, zone) in &mut inner.zones {
                zone.retain(|_, e| e.strong_count() > 0);
            }
            inner.entries = inner.zones.iter().map(|(_, z)| z.len()).sum();
            inner.sweep_at = (inner.entries * 2).max(1024);
        }
        let zone = match inner.zones.iter().position(|(z, _)| *z == tz) {
            Some(z) => z,
            None => {
                inner.zones.push((tz, HashMap::default()));
                inner.zones.len() - 1
            }
        };
        let in_zone = &mut inner.zones[zone].1;
        // Another thread may have compiled it meanwhile: the first one kept wins.
        if let Some((k, e)) = in_zone.get_key_value(text) {
            if let Some(e) = e.upgrade() {
                return (Arc::clone(k), Ok(e));
            }
        }
        if in_zone
            .insert(Arc::clone(&shared), Arc::downgrade(expr))
            .is_none()
        {
            inner.entries += 1;
        }
        (shared, result)
    }

    fn find(&self, text: &str, tz: Tz) -> Option<CompiledText> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (_, zone) = inner.zones.iter().find(|(z, _)| *z == tz)?;
        let (k, e) = zone.get_key_value(text)?;
        Some((Arc::clone(k), Ok(e.upgrade()?)))
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            default_tz: Tz::UTC,
            default_catchup_window: DEFAULT_CATCHUP_WINDOW,
            shards: ShardFilter::default(),
            max_message_bytes: limits::DEFAULT_MAX_MESSAGE_BYTES,
            max_jobs: limits::DEFAULT_MAX_JOBS,
            max_file_bytes: limits::DEFAULT_MAX_FILE_BYTES,
            expressions: None,
        }
    }
}

/// Reads and validates the schedule at `path`, returning it with the MD5 of the bytes it came
/// from (what the hot-reload watch compares against).
pub fn load(path: &Path, options: LoadOptions) -> Result<(Schedule, Digest), LoadError> {
    let bytes = read_limited(path, options.max_file_bytes)?;
    let schedule = parse(&bytes, path, options)?;
    Ok((schedule, Digest::of(&bytes)))
}

/// Reads the file unless it is larger than `max` bytes. The size is checked before reading, and
/// the read stops after `max + 1` bytes (a file that grows meanwhile, a pipe), so a huge file never
/// ends up in memory.
pub fn read_limited(path: &Path, max: u64) -> Result<Vec<u8>, LoadError> {
    use std::io::Read;
    let io = |source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len > max {
        return Err(too_large(path, len, max));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(too_large(path, bytes.len() as u64, max));
    }
    Ok(bytes)
}

/// The file is larger than `--max-file-bytes`.
fn too_large(path: &Path, len: u64, max: u64) -> LoadError {
    LoadError::Invalid {
        path: path.to_path_buf(),
        problems: vec![Problem {
            file: path.to_path_buf(),
            position: None,
            job: None,
            field: None,
            message: format!(
                "the file is {}{len} bytes, more than --max-file-bytes {max}; it was not read",
                if len > max.saturating_add(1) {
                    ""
                } else {
                    "at least "
                }
            ),
        }],
    }
}

/// Validates the bytes of a schedule file; `path` is used in messages only.
pub fn parse(bytes: &[u8], path: &Path, options: LoadOptions) -> Result<Schedule, LoadError> {
    parse_reusing(bytes, path, options, BTreeMap::new())
}

/// [`parse`] for a new version of a file whose previous version is `previous` (each shard's jobs,
/// in file order, as [`Schedule::into_shards`] splits them): a job that did not change keeps its
/// previous [`Job`] (settings and compiled expression) instead of a copy, so a reload of a large
/// file holds little more than one schedule. Jobs are matched in file order, allowing for jobs
/// added or removed one at a time; a job that cannot be matched is simply built anew.
pub fn parse_reusing(
    bytes: &[u8],
    path: &Path,
    options: LoadOptions,
    previous: BTreeMap<u32, Arc<Schedule>>,
) -> Result<Schedule, LoadError> {
    parse_spread(bytes, path, options, previous, Spread::of_machine())
}

/// [`parse_reusing`] with the jobs checked on the threads `spread` gives.
fn parse_spread(
    bytes: &[u8],
    path: &Path,
    options: LoadOptions,
    previous: BTreeMap<u32, Arc<Schedule>>,
    spread: Spread,
) -> Result<Schedule, LoadError> {
    if bytes.len() as u64 > options.max_file_bytes {
        return Err(too_large(path, bytes.len() as u64, options.max_file_bytes));
    }
    let previous = previous.into_iter().map(|(s, p)| (s, (p, 0))).collect();
    let mut checker = Checker::new(path, "", previous, chrono::Utc::now(), spread);
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            checker.problems.push(Problem {
                file: path.to_path_buf(),
                position: None,
                job: None,
                field: None,
                message: format!(
                    "the file is not UTF-8 (invalid byte at offset {})",
                    e.valid_up_to()
                ),
            });
            return Err(checker.into_error());
        }
    };
    checker.text = text;
    let schedule = checker.check_file(&options);
    if checker.problems.is_empty() {
        Ok(schedule)
    } else {
        Err(checker.into_error())
    }
}

/// One job entry checked on its own (a schedule topic record's `spec`): the job, or every problem
/// it has. Problems carry no file position and the job index 0; the caller says where the entry
/// came from.
pub type EntryCheck = Result<Job, Vec<Problem>>;

/// Checks each of `entries` (a job's JSON object each) exactly as a file's job is checked, but each
/// on its own: there is no duplicate-name check across them (a topic holds each name once per
/// version), and one bad entry does not reject the others. Entries that share an expression share
/// its compilation. `options.shards` says how many shards there are; an entry of a shard it does
/// not own comes back as a problem.
pub fn check_entries(entries: &[&RawValue], options: &LoadOptions) -> Vec<EntryCheck> {
    let path = Path::new("");
    let mut checker = Checker::new(path, "", BTreeMap::new(), chrono::Utc::now(), Spread::ONE);
    let mut compiled: Compiled = Vec::new();
    entries
        .iter()
        .map(|raw| {
            checker.problems.clear();
            let mut names = Names::new(vec![*raw]);
            let names = NameCheck::Now(&mut names);
            let checked = checker.check_job(0, raw, options, names, &mut compiled);
            if !checker.problems.is_empty() {
                return Err(std::mem::take(&mut checker.problems));
            }
            match checked {
                Some(job) => Ok(job),
                None => {
                    let name = serde_json::from_str::<RawObject>(raw.get())
                        .ok()
                        .and_then(|o| o.get("jobName"))
                        .and_then(|v| serde_json::from_str::<String>(v.get()).ok());
                    let shard = name.as_deref().map(|n| options.shards.shard_of(n));
                    Err(vec![Problem {
                        file: PathBuf::new(),
                        position: None,
                        job: Some((0, name)),
                        field: Some("jobName".into()),
                        message: format!(
                            "its shard {} is not one of the shards this reader keeps",
                            shard.map_or_else(|| "?".to_string(), |s| s.to_string())
                        ),
                    }])
                }
            }
        })
        .collect()
}

/// Expressions compiled so far, by zone and text: jobs with the same pair share one [`CronExpr`].
/// A schedule uses a handful of zones, so they are searched in a list (no hashing per job).
type Compiled = Vec<(
    Tz,
    HashMap<Arc<str>, Result<Arc<When>, CronError>, FastHash>,
)>;

/// A job field's index in [`JOB_FIELDS`].
fn job_field(key: &str) -> Option<usize> {
    Some(match key {
        "jobName" => JOB_NAME,
        "priority" => PRIORITY,
        "job" => PAYLOAD,
        "cronTime" => CRON_TIME,
        "timezone" => TIMEZONE,
        "topic" => TOPIC,
        "enabled" => ENABLED,
        "catchup" => CATCHUP,
        "catchupWindow" => CATCHUP_WINDOW,
        "timeout" => TIMEOUT,
        "maxAttempts" => MAX_ATTEMPTS,
        "overlap" => OVERLAP,
        "jitter" => JITTER,
        "at" => AT,
        "every" => EVERY,
        "startAt" => START_AT,
        "endAt" => END_AT,
        "keepAfterRun" => KEEP_AFTER_RUN,
        "deadline" => DEADLINE,
        _ => return None,
    })
}

const JOB_NAME: usize = 0;
const PRIORITY: usize = 1;
const PAYLOAD: usize = 2;
const CRON_TIME: usize = 3;
const TIMEZONE: usize = 4;
const TOPIC: usize = 5;
const ENABLED: usize = 6;
const CATCHUP: usize = 7;
const CATCHUP_WINDOW: usize = 8;
const TIMEOUT: usize = 9;
const MAX_ATTEMPTS: usize = 10;
const OVERLAP: usize = 11;
const JITTER: usize = 12;
const AT: usize = 13;
const EVERY: usize = 14;
const START_AT: usize = 15;
const END_AT: usize = 16;
const KEEP_AFTER_RUN: usize = 17;
const DEADLINE: usize = 18;

/// The names of the jobs checked so far, for the duplicate check: a 64-bit hash of each name to the
/// index of the first job using it. Keyed by hash rather than by the name, the index of a
/// million-job file takes 35 MB instead of 70, and during a reload it is held while the running
/// schedule is still alive. Two names with one hash are told apart by their text, read back from
/// the file.
struct Names<'a> {
    /// The file's jobs, unparsed.
    entries: Vec<&'a RawValue>,
    by_hash: HashMap<u64, u32, BuildHasherDefault<HashedAlready>>,
    /// Names whose hash another name had first.
    collided: HashMap<Cow<'a, str>, usize>,
    hasher: FastHash,
}

/// The identity "hash" of a key that is a hash already (also the scheduler's name index's).
#[derive(Default)]
pub(crate) struct HashedAlready(u64);

impl Hasher for HashedAlready {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl<'a> Names<'a> {
    fn new(entries: Vec<&'a RawValue>) -> Names<'a> {
        Names {
            by_hash: HashMap::with_capacity_and_hasher(entries.len(), Default::default()),
            entries,
            collided: HashMap::new(),
            hasher: Default::default(),
        }
    }

    /// Records that job `i` uses `name`; returns the index of an earlier job using it.
    fn first_use(&mut self, name: Cow<'a, str>, i: usize) -> Option<usize> {
        let hash = self.hasher.hash_one(name.as_ref());
        let first = match self.by_hash.entry(hash) {
            Entry::Vacant(slot) => {
                slot.insert(i as u32);
                return None;
            }
            Entry::Occupied(slot) => *slot.get() as usize,
        };
        if self.name_at(first).as_deref() == Some(name.as_ref()) {
            return Some(first);
        }
        match self.collided.entry(name) {
            Entry::Occupied(slot) => Some(*slot.get()),
            Entry::Vacant(slot) => {
                slot.insert(i);
                None
            }
        }
    }

    /// The decoded `jobName` of job `i`.
    fn name_at(&self, i: usize) -> Option<String> {
        let job: RawObject = serde_json::from_str(self.entries.get(i)?.get()).ok()?;
        serde_json::from_str(job.get("jobName")?.get()).ok()
    }
}

/// How [`Checker::check_job`] checks a job's name against the others': at once, or (a file checked
/// on several threads) by noting it for the pass in file order that follows.
enum NameCheck<'a, 'n> {
    Now(&'n mut Names<'a>),
    Later(&'n mut Vec<(usize, Cow<'a, str>, &'a RawValue)>),
}

/// How a file's jobs are spread over threads: at most `max` threads, each with at least
/// `min_jobs` jobs (below that, spawning costs more than it saves).
#[derive(Debug, Clone, Copy)]
struct Spread {
    max: usize,
    min_jobs: usize,
}

impl Spread {
    /// One thread per core, each with at least 20 000 jobs.
    fn of_machine() -> Spread {
        Spread {
            max: crate::cores::count(),
            min_jobs: 20_000,
        }
    }

    /// One thread.
    const ONE: Spread = Spread {
        max: 1,
        min_jobs: usize::MAX,
    };

    /// The threads that check `jobs` jobs.
    fn threads(self, jobs: usize) -> usize {
        self.max.min(jobs / self.min_jobs).max(1)
    }
}

struct Checker<'a> {
    path: &'a Path,
    text: &'a str,
    index: Option<LineIndex>,
    problems: Vec<Problem>,
    /// The previous version per shard, and how far into it the file has been matched.
    previous: BTreeMap<u32, (Arc<Schedule>, usize)>,
    /// Checked `jitter` values by (compiled expression, text, catchupWindow): jobs that share an
    /// expression search its slots for the smallest interval once.
    jitters: HashMap<JitterKey, Result<Duration, String>>,
    /// Where that search starts: the load.
    gaps_from: chrono::DateTime<chrono::Utc>,
    /// The threads a file's jobs are checked on.
    spread: Spread,
}

/// What a `jitter` check depends on: the compiled expression (by address), the text, the window.
type JitterKey = (usize, String, Option<Duration>);

/// A JSON value's type, for "expected a string, found a number" messages.
fn json_kind(raw: &RawValue) -> &'static str {
    match raw.get().as_bytes().first() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

fn suggestion(unknown: &str, known: &[&str]) -> String {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(unknown, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min()
        .map(|(_, k)| format!(" (did you mean {k:?}?)"))
        .unwrap_or_default()
}

impl<'a> Checker<'a> {
    fn new(
        path: &'a Path,
        text: &'a str,
        previous: BTreeMap<u32, (Arc<Schedule>, usize)>,
        gaps_from: chrono::DateTime<chrono::Utc>,
        spread: Spread,
    ) -> Checker<'a> {
        Checker {
            path,
            text,
            index: None,
            problems: Vec::new(),
            previous,
            jitters: HashMap::new(),
            gaps_from,
            spread,
        }
    }

    fn into_error(mut self) -> LoadError {
        // File order reads best; problems without a position go last.
        self.problems
            .sort_by_key(|p| (p.position.is_none(), p.position));
        LoadError::Invalid {
            path: self.path.to_path_buf(),
            problems: self.problems,
        }
    }

    fn position_of(&mut self, raw: Option<&str>) -> Option<(usize, usize)> {
        let offset = offset_in(self.text, raw?)?;
        let text = self.text;
        let index = self.index.get_or_insert_with(|| LineIndex::new(text));
        Some(index.position(text, offset))
    }

    fn report(
        &mut self,
        at: Option<&str>,
        job: Option<(usize, Option<&str>)>,
        field: Option<&str>,
        message: String,
    ) {
        let position = self.position_of(at);
        self.problems.push(Problem {
            file: self.path.to_path_buf(),
            position,
            job: job.map(|(i, n)| (i, n.map(str::to_string))),
            field: field.map(str::to_string),
            message,
        });
    }

    fn check_file(&mut self, options: &LoadOptions) -> Schedule {
        let top: RawObject<'a> = match serde_json::from_str(self.text) {
            Ok(top) => top,
            Err(e) => {
                let message = if e.is_data() {
                    format!("expected an object like {{\"jobs\": [...]}}: {e}")
                } else {
                    format!("invalid JSON: {e}")
                };
                // serde_json's own message ends with "at line L column C"; keep ours uniform.
                let message = match message.rfind(" at line ") {
                    Some(i) => message[..i].to_string(),
                    None => message,
                };
                self.problems.push(Problem {
                    file: self.path.to_path_buf(),
                    position: (e.line() > 0).then_some((e.line(), e.column())),
                    job: None,
                    field: None,
                    message,
                });
                return Schedule::default();
            }
        };
        for (key, value) in &top.members {
            if !TOP_FIELDS.contains(&key.as_ref()) {
                let hint = suggestion(key, TOP_FIELDS);
                self.report(
                    Some(value.get()),
                    None,
                    None,
                    format!("unknown field {key:?}{hint}; the file holds {{\"jobs\": [...]}}"),
                );
            }
        }
        let Some(jobs_raw) = top.get("jobs") else {
            self.report(
                None,
                None,
                None,
                "missing field \"jobs\" (the list of jobs)".into(),
            );
            return Schedule::default();
        };
        let entries: Vec<&'a RawValue> = match serde_json::from_str(jobs_raw.get()) {
            Ok(v) => v,
            Err(_) => {
                let found = json_kind(jobs_raw);
                self.report(
                    Some(jobs_raw.get()),
                    None,
                    Some("jobs"),
                    format!("expected an array of jobs, found {found}"),
                );
                return Schedule::default();
            }
        };

        if entries.len() > options.max_jobs {
            // Nothing else is checked: compiling millions of jobs only to refuse them is the cost
            // the limit is there to bound.
            let first_over = entries[options.max_jobs];
            let name = serde_json::from_str::<RawObject>(first_over.get())
                .ok()
                .and_then(|o| o.get("jobName"))
                .and_then(|v| serde_json::from_str::<String>(v.get()).ok());
            self.report(
                Some(first_over.get()),
                Some((options.max_jobs, name.as_deref())),
                None,
                format!(
                    "the file holds {} jobs, more than --max-jobs {}; this is the first one over",
                    entries.len(),
                    options.max_jobs
                ),
            );
            return Schedule::default();
        }
        let threads = self.spread.threads(entries.len());
        if threads < 2 || !self.previous.is_empty() {
            // A reload matches jobs against the previous version in file order: one pass.
            let mut jobs = Vec::with_capacity(entries.len());
            let mut first_seen = Names::new(entries);
            let mut compiled: Compiled = Vec::new();
            for i in 0..first_seen.entries.len() {
                let raw = first_seen.entries[i];
                let names = NameCheck::Now(&mut first_seen);
                if let Some(job) = self.check_job(i, raw, options, names, &mut compiled) {
                    jobs.push(job);
                }
            }
            return Schedule { jobs };
        }
        self.check_in_parallel(&entries, options)
    }

    /// [`Checker::check_file`]'s jobs checked on the threads of `spread`, each a contiguous run of the
    /// file's jobs with a checker of its own; they share compiled expressions (one copy of each),
    /// and the duplicate-name check runs after them in file order, so the jobs, problems and
    /// messages are exactly those of one pass.
    fn check_in_parallel(&mut self, entries: &[&'a RawValue], options: &LoadOptions) -> Schedule {
        let mut shared = options.clone();
        if shared.expressions.is_none() {
            shared.expressions = Some(Arc::new(SharedExprs::default()));
        }
        let shared = &shared;
        let (path, text, gaps_from) = (self.path, self.text, self.gaps_from);
        let parts = crate::cores::map_runs(
            entries,
            self.spread.max,
            self.spread.min_jobs,
            |first, run| {
                let mut checker = Checker::new(path, text, BTreeMap::new(), gaps_from, Spread::ONE);
                let mut jobs = Vec::with_capacity(run.len());
                let mut names = Vec::with_capacity(run.len());
                let mut compiled: Compiled = Vec::new();
                for (k, raw) in run.iter().enumerate() {
                    let later = NameCheck::Later(&mut names);
                    if let Some(job) =
                        checker.check_job(first + k, raw, shared, later, &mut compiled)
                    {
                        jobs.push(job);
                    }
                }
                (jobs, checker.problems, names)
            },
        );
        let mut first_seen = Names::new(entries.to_vec());
        let mut jobs = Vec::with_capacity(entries.len());
        for (part_jobs, problems, names) in parts {
            jobs.extend(part_jobs);
            self.problems.extend(problems);
            for (i, key, v) in names {
                if let Some(first) = first_seen.first_use(key, i) {
                    let name = serde_json::from_str::<String>(v.get()).ok();
                    self.report(
                        Some(v.get()),
                        Some((i, name.as_deref())),
                        Some("jobName"),
                        format!("duplicate: jobs[{first}] already uses this name"),
                    );
                }
            }
        }
        Schedule { jobs }
    }

    /// The text of a JSON string written without escapes, borrowed from the file; `None` for
    /// anything else (then [`Checker::string_field`] decodes or reports it).
    fn plain_str(raw: &'a RawValue) -> Option<&'a str> {
        let text = raw.get().strip_prefix('"')?.strip_suffix('"')?;
        (!text.contains('\\')).then_some(text)
    }

    fn string_field(
        &mut self,
        raw: &'a RawValue,
        job: (usize, Option<&str>),
        field: &str,
    ) -> Option<String> {
        match serde_json::from_str::<String>(raw.get()) {
            Ok(s) => Some(s),
            Err(_) => {
                let found = json_kind(raw);
                self.report(
                    Some(raw.get()),
                    Some(job),
                    Some(field),
                    format!("expected a string, found {found}"),
                );
                None
            }
        }
    }

    /// The previous version's job when `spec` is exactly it: the same name at the same place in
    /// its shard's file order (or one place on, after a removed job), with the same settings.
    fn unchanged(&mut self, spec: &JobSpec) -> Option<Job> {
        let (previous, at) = self.previous.get_mut(&spec.shard)?;
        for skip in 0..2 {
            let job = previous.jobs.get(*at + skip)?;
            if job.spec.name == spec.name {
                *at += skip + 1;
                return (*job.spec == *spec).then(|| job.clone());
            }
        }
        None
    }

    /// The `jitter` field: `Some(None)` without one; `None` (reported) when it is invalid. Checked
    /// against the job's expression (its smallest interval) when that compiled, else on its own.
    fn jitter_field(
        &mut self,
        raw: Option<&'a RawValue>,
        job_ref: (usize, Option<&str>),
        cron: Option<&(Arc<str>, Arc<When>)>,
        catchup_window: Option<Duration>,
    ) -> Option<Duration> {
        let v = raw?;
        let text = self.string_field(v, job_ref, "jitter")?;
        let expr = cron.map(|(_, e)| Arc::clone(e));
        let key = (
            expr.as_ref().map_or(0, |e| Arc::as_ptr(e) as usize),
            text.clone(),
            catchup_window,
        );
        let result = match self.jitters.get(&key) {
            Some(r) => r.clone(),
            None => {
                let r =
                    super::jitter::check(&text, expr.as_deref(), catchup_window, self.gaps_from);
                self.jitters.insert(key, r.clone());
                r
            }
        };
        match result {
            Ok(d) => Some(d),
            Err(message) => {
                self.report(Some(v.get()), Some(job_ref), Some("jitter"), message);
                None
            }
        }
    }

    fn check_job(
        &mut self,
        i: usize,
        raw: &'a RawValue,
        options: &LoadOptions,
        first_seen: NameCheck<'a, '_>,
        compiled: &mut Compiled,
    ) -> Option<Job> {
        let obj: RawObject<'a> = match serde_json::from_str(raw.get()) {
            Ok(o) => o,
            Err(_) => {
                let found = json_kind(raw);
                self.report(
                    Some(raw.get()),
                    Some((i, None)),
                    None,
                    format!("expected a job object, found {found}"),
                );
                return None;
            }
        };
        let before = self.problems.len();

        // Each known field's (first) value, by its index in `JOB_FIELDS`: one pass over the keys,
        // then array reads. Unknown or repeated keys are rare; they are reported below.
        let mut field: [Option<&'a RawValue>; JOB_FIELDS.len()] = [None; JOB_FIELDS.len()];
        let mut irregular = false;
        for (key, value) in &obj.members {
            match job_field(key) {
                Some(k) if field[k].is_none() => field[k] = Some(*value),
                _ => irregular = true,
            }
        }

        // The name first, so every later problem can name the job.
        let name = match field[JOB_NAME] {
            Some(v) => self.string_field(v, (i, None), "jobName"),
            None => None,
        };
        let name_ref = name.as_deref().filter(|n| !n.trim().is_empty());
        let job_ref = (i, name_ref);

        // Bit `k` set: `JOB_FIELDS[k]` seen in this job.
        let mut seen_fields = 0u32;
        for (key, value) in obj.members.iter().filter(|_| irregular) {
            match job_field(key) {
                None => {
                    let hint = suggestion(key, JOB_FIELDS);
                    self.report(
                        Some(value.get()),
                        Some(job_ref),
                        None,
                        format!("unknown field {key:?}{hint}"),
                    );
                }
                Some(k) if seen_fields & (1 << k) != 0 => {
                    self.report(
                        Some(value.get()),
                        Some(job_ref),
                        Some(key),
                        "appears more than once".into(),
                    );
                }
                Some(k) => seen_fields |= 1 << k,
            }
        }

        let job_start = Some(raw.get());
        for required in [JOB_NAME, PAYLOAD] {
            if field[required].is_none() {
                self.report(
                    job_start,
                    Some(job_ref),
                    Some(JOB_FIELDS[required]),
                    "missing (required)".into(),
                );
            }
        }

        if let (Some(n), Some(v)) = (&name, field[JOB_NAME]) {
            if n.trim().is_empty() {
                self.report(
                    Some(v.get()),
                    Some(job_ref),
                    Some("jobName"),
                    "must not be empty".into(),
                );
            } else {
                // One hash and probe per job, keyed by the name's text in the file when it has
                // no escapes (almost always): a million-job file spends much of its load here.
                let key = match Self::plain_str(v) {
                    Some(text) => Cow::Borrowed(text),
                    None => Cow::Owned(n.clone()),
                };
                match first_seen {
                    NameCheck::Now(names) => {
                        if let Some(first) = names.first_use(key, i) {
                            self.report(
                                Some(v.get()),
                                Some(job_ref),
                                Some("jobName"),
                                format!("duplicate: jobs[{first}] already uses this name"),
                            );
                        }
                    }
                    NameCheck::Later(names) => names.push((i, key, v)),
                }
            }
        }

        let priority = match field[PRIORITY] {
            None => Some(0),
            Some(v) => match serde_json::from_str::<i64>(v.get()) {
                Ok(p) if i32::try_from(p).is_ok() => Some(p as i32),
                Ok(p) => {
                    self.report(
                        Some(v.get()),
                        Some(job_ref),
                        Some("priority"),
                        format!("{p} is out of range {}..{}", i32::MIN, i32::MAX),
                    );
                    None
                }
                Err(_) => {
                    let found = json_kind(v);
                    let found = if found == "a number" {
                        format!("{} (not an integer)", v.get())
                    } else {
                        found.to_string()
                    };
                    self.report(
                        Some(v.get()),
                        Some(job_ref),
                        Some("priority"),
                        format!("expected an integer, found {found}"),
                    );
                    None
                }
            },
        };

        let payload = match field[PAYLOAD] {
            Some(v) => {
                let s = self.string_field(v, job_ref, "job");
                if s.as_deref().is_some_and(|s| s.trim().is_empty()) {
                    self.report(
                        Some(v.get()),
                        Some(job_ref),
                        Some("job"),
                        "must not be empty".into(),
                    );
                }
                s
            }
            None => None,
        };

        let timezone = match field[TIMEZONE] {
            None => Some(options.default_tz),
            Some(v) => match self.string_field(v, job_ref, "timezone") {
                Some(zone) => match parse_zone(&zone) {
                    Ok(tz) => Some(tz),
                    Err(e) => {
                        self.report(
                            Some(v.get()),
                            Some(job_ref),
                            Some("timezone"),
                            e.to_string(),
                        );
                        None
                    }
                },
                None => None,
            },
        };

        let topic = match field[TOPIC] {
            None => Some(None),
            Some(v) => match self.string_field(v, job_ref, "topic") {
                Some(t) => match limits::topic_problem(&t) {
                    None => Some(Some(t)),
                    Some(problem) => {
                        self.report(Some(v.get()), Some(job_ref), Some("topic"), problem);
                        None
                    }
                },
                None => None,
            },
        };

        let enabled = self.bool_field(field[ENABLED], job_ref, "enabled", true);

        let catchup = match field[CATCHUP] {
            None => Some(Catchup::All),
            Some(v) => match self.string_field(v, job_ref, "catchup") {
                Some(text) => match text.as_str() {
                    "all" => Some(Catchup::All),
                    "latest" => Some(Catchup::Latest),
                    "none" => Some(Catchup::None),
                    other => {
                        self.report(
                            Some(v.get()),
                            Some(job_ref),
                            Some("catchup"),
                            format!("{other:?} is not one of \"all\", \"latest\", \"none\""),
                        );
                        None
                    }
                },
                None => None,
            },
        };

        let catchup_window = match field[CATCHUP_WINDOW] {
            None => Some(options.default_catchup_window),
            Some(v) => {
                match self.string_field(v, job_ref, "catchupWindow") {
                    Some(text) => match humantime::parse_duration(&text) {
                        Ok(d) if d >= Duration::from_secs(60) && d <= MAX_CATCHUP_WINDOW => Some(d),
                        Ok(_) => {
                            self.report(
                            Some(v.get()),
                            Some(job_ref),
                            Some("catchupWindow"),
                            format!("{text:?} is out of range 1m-366d (for no catch-up at all, use \"catchup\": \"none\")"),
                        );
                            None
                        }
                        Err(e) => {
                            self.report(
                            Some(v.get()),
                            Some(job_ref),
                            Some("catchupWindow"),
                            format!("{text:?} is not a duration like \"90s\", \"15m\" or \"2h\": {e}"),
                        );
                            None
                        }
                    },
                    None => None,
                }
            }
        };

        let timeout = self.timeout_field(field[TIMEOUT], job_ref);
        let max_attempts = self.max_attempts_field(field[MAX_ATTEMPTS], job_ref);
        let overlap = self.overlap_field(field[OVERLAP], job_ref);
        use super::kinds::{parse_every, parse_instant};
        let at = self.parsed_field(field[AT], job_ref, "at", parse_instant);
        let every = self.parsed_field(field[EVERY], job_ref, "every", parse_every);
        let start_at = self.parsed_field(field[START_AT], job_ref, "startAt", parse_instant);
        let end_at = self.parsed_field(field[END_AT], job_ref, "endAt", parse_instant);
        let keep_after_run = self.bool_field(field[KEEP_AFTER_RUN], job_ref, "keepAfterRun", false);
        let deadline = self.deadline_field(field[DEADLINE], job_ref);
        // Exactly one kind of schedule.
        let kinds: Vec<usize> = [CRON_TIME, AT, EVERY]
            .into_iter()
            .filter(|&k| field[k].is_some())
            .collect();
        match kinds.as_slice() {
            [] => self.report(
                job_start,
                Some(job_ref),
                Some("cronTime"),
                "missing (required): a job needs one of \"cronTime\", \"at\" or \"every\"".into(),
            ),
            [_] => {}
            [first, rest @ ..] => {
                for &k in rest {
                    self.report(
                        field[k].map(|v| v.get()),
                        Some(job_ref),
                        Some(JOB_FIELDS[k]),
                        format!(
                            "a job has one of \"cronTime\", \"at\" and \"every\", and this one also has {:?}",
                            JOB_FIELDS[*first]
                        ),
                    );
                }
            }
        }
        if let (Some(Some(start)), Some(Some(end)), Some(v)) = (start_at, end_at, field[END_AT]) {
            if end <= start {
                self.report(
                    Some(v.get()),
                    Some(job_ref),
                    Some("endAt"),
                    format!(
                        "must be after startAt ({}): the job would have no slot",
                        start.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                    ),
                );
            }
        }
        if let (Some(true), Some(v)) = (keep_after_run, field[KEEP_AFTER_RUN]) {
            if field[AT].is_none() && field[END_AT].is_none() {
                self.report(
                    Some(v.get()),
                    Some(job_ref),
                    Some("keepAfterRun"),
                    "applies only to a job with \"at\" or \"endAt\" (a job whose runs come to an end)".into(),
                );
            }
        }
        if let (Some(_), Some(v)) = (field[AT], field[JITTER]) {
            self.report(
                Some(v.get()),
                Some(job_ref),
                Some("jitter"),
                "an \"at\" job runs at its own second: jitter does not apply to it".into(),
            );
        }

        let cron = match field[CRON_TIME] {
            Some(v) => {
                // Borrowed from the file when it can be: most jobs share an expression compiled
                // already, and decoding the text into a fresh String cost an allocation per job.
                let text: Option<Cow<'a, str>> = match Self::plain_str(v) {
                    Some(text) => Some(Cow::Borrowed(text)),
                    None => self.string_field(v, job_ref, "cronTime").map(Cow::Owned),
                };
                // Jenkins' `H`: resolved from the job's name into plain numbers first, so that
                // jobs share a compiled expression only when they fire at the same times.
                let text = match text {
                    Some(t) if crate::cron::hash::uses_hash(&t) => {
                        match crate::cron::hash::resolve(&t, name_ref) {
                            Ok(resolved) => Some(Cow::Owned(resolved.into_owned())),
                            Err(e) => {
                                self.report(
                                    Some(v.get()),
                                    Some(job_ref),
                                    Some("cronTime"),
                                    e.to_string(),
                                );
                                None
                            }
                        }
                    }
                    other => other,
                };
                // With an invalid zone the expression is still checked (in UTC), so that its own
                // problems are reported in the same pass; the job is rejected either way.
                match (text, timezone.unwrap_or(chrono_tz::UTC)) {
                    (Some(text), tz) => {
                        let zone = match compiled.iter().position(|(zone, _)| *zone == tz) {
                            Some(z) => z,
                            None => {
                                compiled.push((tz, HashMap::default()));
                                compiled.len() - 1
                            }
                        };
                        let in_zone = &mut compiled[zone].1;
                        let (shared, result) = match in_zone.get_key_value(text.as_ref()) {
                            Some((shared, result)) => (Arc::clone(shared), result.clone()),
                            None => {
                                let (shared, result) = match &options.expressions {
                                    Some(kept) => kept.compile(&text, tz),
                                    None => {
                                        let shared: Arc<str> = Arc::from(text.as_ref());
                                        let result = CronExpr::parse(&shared, tz)
                                            .map(|e| Arc::new(When::of_cron(e)));
                                        (shared, result)
                                    }
                                };
                                in_zone.insert(Arc::clone(&shared), result.clone());
                                (shared, result)
                            }
                        };
                        match result {
                            Ok(expr) => Some((shared, expr)),
                            Err(e) => {
                                self.report(
                                    Some(v.get()),
                                    Some(job_ref),
                                    Some("cronTime"),
                                    e.to_string(),
                                );
                                None
                            }
                        }
                    }
                    _ => None,
                }
            }
            None => None,
        };

        // The job's compiled schedule and its text: an unbounded cron job shares its expression;
        // bounds, `at` and `every` make one of the job's own.
        let tz = timezone.unwrap_or(chrono_tz::UTC);
        let timing = match (at, every, start_at, end_at, keep_after_run) {
            (Some(at), Some(every), Some(start_at), Some(end_at), Some(keep_after_run)) => {
                let kind = match (at, every) {
                    (Some(at), _) => Kind::At(at),
                    (None, Some(minutes)) => Kind::Every(minutes),
                    (None, None) => Kind::Cron,
                };
                Some(
                    (kind != Kind::Cron
                        || start_at.is_some()
                        || end_at.is_some()
                        || keep_after_run)
                        .then(|| {
                            Box::new(Timing {
                                kind,
                                start_at,
                                end_at,
                                keep_after_run,
                            })
                        }),
                )
            }
            _ => None,
        };
        let schedule: Option<(Arc<str>, Arc<When>)> = match (&timing, &cron) {
            (Some(None), Some(shared)) => Some(shared.clone()),
            (Some(Some(t)), cron) if t.kind == Kind::Cron => cron.as_ref().and_then(|(text, e)| {
                let own = When::of(t, e.cron().cloned(), tz)?;
                Some((Arc::clone(text), Arc::new(own)))
            }),
            (Some(Some(t)), _) if kinds.len() == 1 => {
                When::of(t, None, tz).map(|w| (Arc::from(w.source()), Arc::new(w)))
            }
            _ => None,
        };
        let cron = schedule;

        // The record a dispatch becomes depends on the name, payload, expression and priority only,
        // so its size is checked even when another field failed: every problem in one pass.
        let raw_text = field[CRON_TIME].or(field[AT]).or(field[EVERY]);
        if let (Some(n), Some(j), Some(at), Some(raw_cron)) =
            (&name, &payload, field[PAYLOAD], raw_text)
        {
            let cron_text: Cow<'_, str> = match &cron {
                Some((text, _)) => Cow::Borrowed(text.as_ref()),
                None => Cow::Owned(serde_json::from_str(raw_cron.get()).unwrap_or_default()),
            };
            let max = options.max_message_bytes;
            // The optional fields' share, at most: what the job sets of them.
            let optional = if field[JITTER].is_some() || field[AT].is_some() {
                limits::NOT_BEFORE_BYTES
            } else {
                0
            } + if [TIMEOUT, MAX_ATTEMPTS, OVERLAP]
                .iter()
                .any(|&f| field[f].is_some())
            {
                limits::RUN_SETTINGS_BYTES
            } else {
                0
            };
            if limits::dispatch_batch_bytes_bound(n, j, &cron_text) + optional > max {
                let bytes = limits::dispatch_batch_bytes(n, priority.unwrap_or(0), j, &cron_text)
                    + optional;
                if bytes > max {
                    self.report(
                        Some(at.get()),
                        Some(job_ref),
                        Some("job"),
                        format!(
                            "each dispatch would be a {bytes}-byte Kafka record batch (JobMessage with key and headers), more than --max-message-bytes {max}; the payload is {} bytes",
                            j.len()
                        ),
                    );
                }
            }
        }

        let jitter = match field[AT] {
            Some(_) => None,
            None => self.jitter_field(field[JITTER], job_ref, cron.as_ref(), catchup_window),
        };

        if self.problems.len() > before {
            return None;
        }
        let (
            Some(name),
            Some(priority),
            Some(job),
            Some(timezone),
            Some(topic),
            Some(enabled),
            Some((cron_time, expr)),
            Some(catchup),
            Some(catchup_window),
        ) = (
            name,
            priority,
            payload,
            timezone,
            topic,
            enabled,
            cron,
            catchup,
            catchup_window,
        )
        else {
            return None;
        };
        let (Some(timeout), Some(max_attempts), Some(overlap), Some(timing), Some(deadline)) =
            (timeout, max_attempts, overlap, timing, deadline)
        else {
            return None;
        };
        // Validated whoever owns it; kept only by the owner of its shard.
        let shard = options.shards.shard_of(&name);
        if !options.shards.owns(shard) {
            return None;
        }
        let spec = JobSpec {
            name,
            priority,
            job,
            cron_time,
            timezone,
            topic,
            enabled,
            catchup,
            catchup_window,
            shard,
            timeout,
            max_attempts,
            overlap,
            jitter,
            timing,
            deadline,
        };
        if let Some(unchanged) = self.unchanged(&spec) {
            return Some(unchanged);
        }
        Some(Job {
            spec: Arc::new(spec),
            expr,
        })
    }
}

/// A humantime duration within `min..=max` (`range` says it in the error).
fn duration_in(text: &str, min: Duration, max: Duration, range: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if (min..=max).contains(&d) => Ok(d),
        Ok(_) => Err(format!("{text:?} is out of range {range}")),
        Err(e) => Err(format!(
            "{text:?} is not a duration like \"90s\", \"15m\" or \"2h\": {e}"
        )),
    }
}

/// The per-job run settings (`timeout`, `maxAttempts`, `overlap`): each returns `Some(None)` when
/// the field is absent, `None` after reporting a problem.
impl<'a> Checker<'a> {
    /// A string field read by `parse` (whose error is the problem reported): `Some(None)` when
    /// the field is absent, `None` after reporting a problem. `at`, `startAt`, `endAt` and
    /// `every` are read so ([`super::kinds::parse_instant`], [`super::kinds::parse_every`]).
    fn parsed_field<T>(
        &mut self,
        raw: Option<&'a RawValue>,
        job: (usize, Option<&str>),
        name: &str,
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Option<Option<T>> {
        let Some(v) = raw else {
            return Some(None);
        };
        let text = self.string_field(v, job, name)?;
        match parse(&text) {
            Ok(t) => Some(Some(t)),
            Err(problem) => {
                self.report(Some(v.get()), Some(job), Some(name), problem);
                None
            }
        }
    }

    /// A `true`/`false` field (`enabled`, `keepAfterRun`): `default` when absent, `None` after
    /// reporting a problem.
    fn bool_field(
        &mut self,
        raw: Option<&'a RawValue>,
        job: (usize, Option<&str>),
        name: &str,
        default: bool,
    ) -> Option<bool> {
        let Some(v) = raw else {
            return Some(default);
        };
        match serde_json::from_str::<bool>(v.get()) {
            Ok(b) => Some(b),
            Err(_) => {
                let found = json_kind(v);
                self.report(
                    Some(v.get()),
                    Some(job),
                    Some(name),
                    format!("expected true or false, found {found}"),
                );
                None
            }
        }
    }

    fn timeout_field(
        &mut self,
        raw: Option<&'a RawValue>,
        job: (usize, Option<&str>),
    ) -> Option<Option<Duration>> {
        let (min, max) = TIMEOUT_RANGE;
        self.parsed_field(raw, job, "timeout", |text| {
            duration_in(
                text,
                min,
                max,
                "1s-1d (the range of the worker's --timeout)",
            )
        })
    }

    fn deadline_field(
        &mut self,
        raw: Option<&'a RawValue>,
        job: (usize, Option<&str>),
    ) -> Option<Option<Duration>> {
        self.parsed_field(raw, job, "deadline", |text| {
            duration_in(text, MIN_DEADLINE, MAX_DEADLINE, "1m-366d")
        })
    }

    fn max_attempts_field(
        &mut self,
        raw: Option<&'a RawValue>,
        job: (usize, Option<&str>),
    ) -> Option<Option<u32>> {
        let Some(v) = raw else {
            return Some(None);
        };
        let (min, max) = MAX_ATTEMPTS_RANGE;
        let problem = match serde_json::from_str::<i64>(v.get()) {
            Ok(n) if n >= i64::from(min) && n <= i64::from(max) => return Some(Some(n as u32)),
            Ok(n) => format!(
                "{n} is out of range {min}-{max} (the range of the worker's --max-attempts)"
            ),
            Err(_) => {
                let found = json_kind(v);
                let found = if found == "a number" {
                    format!("{} (not an integer)", v.get())
                } else {
                    found.to_string()
                };
                format!("expected an integer, found {found}")
            }
        };
        self.report(Some(v.get()), Some(job), Some("maxAttempts"), problem);
        None
    }

    fn overlap_field(
        &mut self,
        raw: Option<&'a RawValue>,
        job: (usize, Option<&str>),
    ) -> Option<Option<Overlap>> {
        let Some(v) = raw else {
            return Some(None);
        };
        let text = self.string_field(v, job, "overlap")?;
        if let Some(overlap) = Overlap::parse(&text) {
            return Some(Some(overlap));
        }
        let names: Vec<String> = Overlap::NAMES.iter().map(|n| format!("{n:?}")).collect();
        let hint = suggestion(&text, &Overlap::NAMES);
        self.report(
            Some(v.get()),
            Some(job),
            Some("overlap"),
            format!("{text:?} is not one of {}{hint}", names.join(", ")),
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};

    #[test]
    fn every_job_field_has_its_index() {
        for (k, name) in JOB_FIELDS.iter().enumerate() {
            assert_eq!(job_field(name), Some(k), "{name}");
        }
        assert_eq!(job_field("cronTme"), None);
    }

    /// Entries checked in separate calls (a topic's batches) share one compiled expression per
    /// zone and text when the options carry a `SharedExprs`, and only then; an expression no job
    /// holds any more is compiled anew.
    #[test]
    fn checks_given_shared_expressions_share_one_compilation() {
        let one =
            RawValue::from_string(r#"{"jobName":"a","job":"x","cronTime":"5 4 * * *"}"#.into())
                .unwrap();
        let two =
            RawValue::from_string(r#"{"jobName":"b","job":"y","cronTime":"5 4 * * *"}"#.into())
                .unwrap();
        let other_zone = RawValue::from_string(
            r#"{"jobName":"c","job":"y","cronTime":"5 4 * * *","timezone":"Europe/Paris"}"#.into(),
        )
        .unwrap();
        let expr = |checked: Vec<EntryCheck>| match checked.into_iter().next() {
            Some(Ok(job)) => job.expr,
            other => panic!("not a job: {other:?}"),
        };

        let alone = LoadOptions::default();
        let (a, b) = (
            expr(check_entries(&[&one], &alone)),
            expr(check_entries(&[&two], &alone)),
        );
        assert!(
            !Arc::ptr_eq(&a, &b),
            "without SharedExprs each call compiles"
        );

        let shared = LoadOptions {
            expressions: Some(Arc::new(SharedExprs::default())),
            ..LoadOptions::default()
        };
        let a = expr(check_entries(&[&one], &shared));
        let b = expr(check_entries(&[&two], &shared));
        assert!(
            Arc::ptr_eq(&a, &b),
            "the second call reuses the first one's"
        );
        let c = expr(check_entries(&[&other_zone], &shared));
        assert!(!Arc::ptr_eq(&a, &c), "another zone is another expression");
        assert_eq!(c.tz(), chrono_tz::Europe::Paris);

        drop((a, b));
        let again = expr(check_entries(&[&one], &shared));
        assert_eq!(
            Arc::strong_count(&again),
            1,
            "held by this job only: the shared set holds expressions weakly"
        );
        let d = expr(check_entries(&[&two], &shared));
        assert!(Arc::ptr_eq(&again, &d));
    }

    /// A file checked on several threads gives exactly what one pass gives: the same problems
    /// (duplicates within a thread's run and across runs included, each naming the first use),
    /// and for a valid file the same jobs in file order, sharing one compiled expression per text
    /// whichever thread compiled it.
    #[test]
    fn a_file_checked_on_several_threads_is_checked_as_in_one_pass() {
        let spread = Spread {
            max: 4,
            min_jobs: 100,
        };
        let file = |bad: bool| {
            let jobs: Vec<String> = (0..600)
                .map(|i| {
                    let name = match i {
                        450 if bad => "job-5".to_string(),
                        460 if bad => "job-455".to_string(),
                        _ => format!("job-{i}"),
                    };
                    let cron = match i {
                        300 if bad => "61 * * * *".to_string(),
                        _ => format!("{} {} * * *", i % 7, i % 5),
                    };
                    let extra = if bad && i == 590 {
                        r#","cronTme":"x""#
                    } else {
                        ""
                    };
                    format!(r#"{{"jobName":"{name}","job":"run {i}","cronTime":"{cron}"{extra}}}"#)
                })
                .collect();
            format!("{{\"jobs\": [\n{}\n]}}", jobs.join(",\n"))
        };
        let path = Path::new("s.json");
        let check = |text: &str, spread| {
            parse_spread(
                text.as_bytes(),
                path,
                LoadOptions::default(),
                BTreeMap::new(),
                spread,
            )
        };

        let bad = file(true);
        let problems = |r: Result<Schedule, LoadError>| match r {
            Err(LoadError::Invalid { problems, .. }) => problems,
            other => panic!("expected problems, got {other:?}"),
        };
        let one = problems(check(&bad, Spread::ONE));
        let many = problems(check(&bad, spread));
        assert_eq!(many, one);
        let messages: Vec<String> = one.iter().map(ToString::to_string).collect();
        for expected in [
            "jobs[450] \"job-5\": jobName: duplicate: jobs[5] already uses this name",
            "jobs[460] \"job-455\": jobName: duplicate: jobs[455] already uses this name",
            "jobs[300] \"job-300\": cronTime: minute: 61 is out of range 0-59",
            "jobs[590] \"job-590\": unknown field \"cronTme\"",
        ] {
            assert!(
                messages.iter().any(|m| m.contains(expected)),
                "{expected:?} not in {messages:#?}"
            );
        }

        let good = file(false);
        let one = check(&good, Spread::ONE).expect("valid");
        let many = check(&good, spread).expect("valid");
        assert_eq!(many.jobs.len(), 600);
        for (a, b) in one.jobs.iter().zip(&many.jobs) {
            assert_eq!(a.spec, b.spec);
        }
        let mut by_text: HashMap<&str, &Arc<When>> = HashMap::new();
        for job in &many.jobs {
            let first = by_text.entry(&job.spec.cron_time).or_insert(&job.expr);
            assert!(
                Arc::ptr_eq(first, &job.expr),
                "{} compiled twice",
                job.spec.cron_time
            );
        }
        assert_eq!(by_text.len(), 35);
    }

    /// Two names with one hash are still told apart, and a later copy of either is a duplicate
    /// of the right job.
    #[test]
    fn names_that_share_a_hash_are_told_apart_by_their_text() {
        let text = r#"[{"jobName":"a"},{"jobName":"b"},{"jobName":"b"},{"jobName":"a"}]"#;
        let entries: Vec<&RawValue> = serde_json::from_str(text).unwrap();
        let mut names = Names::new(entries);
        assert_eq!(names.first_use("a".into(), 0), None);
        // Make "b" collide with "a": its hash now points at job 0.
        let hash_b = names.hasher.hash_one("b");
        names.by_hash.insert(hash_b, 0);
        assert_eq!(names.first_use("b".into(), 1), None, "not a duplicate of a");
        assert_eq!(names.first_use("b".into(), 2), Some(1));
        assert_eq!(names.first_use("a".into(), 3), Some(0));
    }

    /// A reload keeps the previous `Job` of every unchanged job (the same allocation), and builds
    /// the changed, added and moved ones anew.
    #[test]
    fn a_reparse_reuses_the_unchanged_jobs_of_the_previous_version() {
        let v1 = r#"{"jobs":[{"jobName":"a","job":"x","cronTime":"* * * * *"},
            {"jobName":"b","job":"x","cronTime":"* * * * *"},
            {"jobName":"c","job":"x","cronTime":"* * * * *"},
            {"jobName":"d","job":"x","cronTime":"* * * * *"}]}"#;
        // b removed, c's payload changed, e added before d.
        let v2 = r#"{"jobs":[{"jobName":"a","job":"x","cronTime":"* * * * *"},
            {"jobName":"c","job":"y","cronTime":"* * * * *"},
            {"jobName":"e","job":"x","cronTime":"* * * * *"},
            {"jobName":"d","job":"x","cronTime":"* * * * *"}]}"#;
        let old =
            Arc::new(parse(v1.as_bytes(), Path::new("s.json"), LoadOptions::default()).unwrap());
        let previous = BTreeMap::from([(0, Arc::clone(&old))]);
        let new = parse_reusing(
            v2.as_bytes(),
            Path::new("s.json"),
            LoadOptions::default(),
            previous,
        )
        .unwrap();
        let shared: Vec<(&str, bool)> = new
            .jobs
            .iter()
            .map(|j| {
                let same = old.jobs.iter().any(|o| Arc::ptr_eq(&o.spec, &j.spec));
                (j.spec.name.as_str(), same)
            })
            .collect();
        assert_eq!(
            shared,
            [("a", true), ("c", false), ("e", false), ("d", true)]
        );
        assert_eq!(new.jobs[1].spec.job, "y");
        // The same file parsed without a previous version has equal settings everywhere.
        let fresh = parse(v2.as_bytes(), Path::new("s.json"), LoadOptions::default()).unwrap();
        let specs = |s: &Schedule| s.jobs.iter().map(|j| (*j.spec).clone()).collect::<Vec<_>>();
        assert_eq!(specs(&new), specs(&fresh));
    }

    /// `H` resolves per job name before expressions are shared: two jobs share a compiled
    /// expression only when they resolve alike.
    #[test]
    fn h_resolves_per_job_before_expressions_are_shared() {
        let json = r#"{"jobs":[{"jobName":"nightly-backup","job":"x","cronTime":"H H * * *"},
            {"jobName":"report-7","job":"x","cronTime":"H H * * *"},
            {"jobName":"other","job":"x","cronTime":"9 5 * * *"}]}"#;
        let s = parse(json.as_bytes(), Path::new("s.json"), LoadOptions::default()).unwrap();
        let text = |i: usize| s.jobs[i].spec.cron_time.to_string();
        // nightly-backup: minute 1593384549 mod 60 = 9, hour 943983893 mod 24 = 5 (see cron::hash).
        assert_eq!(text(0), "9 5 * * *");
        assert_ne!(text(1), text(0));
        assert!(Arc::ptr_eq(&s.jobs[0].expr, &s.jobs[2].expr));
        assert!(!Arc::ptr_eq(&s.jobs[0].expr, &s.jobs[1].expr));
        let got = problems(r#"{"jobs":[{"jobName":"a","job":"x","cronTime":"H(50-10) * * * *"}]}"#);
        assert_eq!(
            got,
            [
                r#"s.json:1:46: jobs[0] "a": cronTime: minute: range "H(50-10)" is reversed: the start must not be after the end"#
            ]
        );
    }

    fn problems(json: &str) -> Vec<String> {
        match parse(json.as_bytes(), Path::new("s.json"), LoadOptions::default()) {
            Ok(_) => Vec::new(),
            Err(LoadError::Invalid { problems, .. }) => {
                problems.iter().map(ToString::to_string).collect()
            }
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn at_every_and_bounds_are_read_into_the_jobs_timing() {
        let json = r#"{"jobs": [
  {"jobName": "once", "job": "x", "at": "2027-03-01T14:05:30+01:00", "keepAfterRun": true},
  {"jobName": "ninety", "job": "x", "every": "90m", "startAt": "2027-01-01T00:00:00Z"},
  {"jobName": "spring", "job": "x", "cronTime": "0 3 * * *", "endAt": "2027-06-01T00:00:00Z"},
  {"jobName": "plain", "job": "x", "cronTime": "0 3 * * *"}
]}"#;
        let s = parse(json.as_bytes(), Path::new("s.json"), LoadOptions::default()).unwrap();
        let utc = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .unwrap()
                .with_timezone(&Utc)
        };
        let timing = |i: usize| s.jobs[i].spec.timing.as_deref().cloned();
        assert_eq!(
            timing(0),
            Some(Timing {
                kind: Kind::At(utc("2027-03-01T13:05:30Z")),
                start_at: None,
                end_at: None,
                keep_after_run: true
            })
        );
        assert_eq!(&*s.jobs[0].spec.cron_time, "@at 2027-03-01T13:05:30Z");
        assert_eq!(
            timing(1).map(|t| (t.kind, t.start_at)),
            Some((Kind::Every(90), Some(utc("2027-01-01T00:00:00Z"))))
        );
        assert_eq!(&*s.jobs[1].spec.cron_time, "@every 1h 30m");
        assert_eq!(
            timing(2).map(|t| (t.kind, t.end_at)),
            Some((Kind::Cron, Some(utc("2027-06-01T00:00:00Z"))))
        );
        assert_eq!(&*s.jobs[2].spec.cron_time, "0 3 * * *");
        // A plain cron job keeps no timing, and shares nothing with the bounded one.
        assert_eq!(timing(3), None);
        assert!(!Arc::ptr_eq(&s.jobs[2].expr, &s.jobs[3].expr));
    }

    #[test]
    fn at_every_and_bounds_are_checked_with_precise_errors() {
        let got = problems(
            r#"{"jobs": [
  {"jobName": "a", "job": "x", "at": "tomorrow"},
  {"jobName": "b", "job": "x", "every": "90s"},
  {"jobName": "c", "job": "x", "every": "400d"},
  {"jobName": "d", "job": "x", "cronTime": "* * * * *", "at": "2027-03-01T14:05:30Z"},
  {"jobName": "e", "job": "x"},
  {"jobName": "f", "job": "x", "every": "1h", "startAt": "2027-03-01T00:00:00Z", "endAt": "2027-02-01T00:00:00Z"},
  {"jobName": "g", "job": "x", "at": "2027-03-01T14:05:30Z", "jitter": "10s"},
  {"jobName": "h", "job": "x", "cronTime": "* * * * *", "keepAfterRun": true},
  {"jobName": "i", "job": "x", "at": "2027-03-01T14:05:30.5Z"},
  {"jobName": "j", "job": "x", "every": 90}
]}"#,
        );
        assert_eq!(
            got,
            [
                r#"s.json:2:38: jobs[0] "a": at: "tomorrow" is not an RFC 3339 instant with its offset, like "2027-03-01T14:05:30+01:00" or "2027-03-01T13:05:30Z": premature end of input"#,
                r#"s.json:3:41: jobs[1] "b": every: "90s" is not a whole number of minutes (slots are whole minutes)"#,
                r#"s.json:4:41: jobs[2] "c": every: "400d" is out of range 1m-366d"#,
                r#"s.json:5:63: jobs[3] "d": at: a job has one of "cronTime", "at" and "every", and this one also has "cronTime""#,
                r#"s.json:6:3: jobs[4] "e": cronTime: missing (required): a job needs one of "cronTime", "at" or "every""#,
                r#"s.json:7:91: jobs[5] "f": endAt: must be after startAt (2027-03-01T00:00:00Z): the job would have no slot"#,
                r#"s.json:8:72: jobs[6] "g": jitter: an "at" job runs at its own second: jitter does not apply to it"#,
                r#"s.json:9:73: jobs[7] "h": keepAfterRun: applies only to a job with "at" or "endAt" (a job whose runs come to an end)"#,
                r#"s.json:10:38: jobs[8] "i": at: "2027-03-01T14:05:30.5Z" is not a whole second"#,
                r#"s.json:11:41: jobs[9] "j": every: expected a string, found a number"#,
            ]
        );
    }

    #[test]
    fn a_name_written_with_an_escape_is_still_a_duplicate() {
        let got = problems(
            r#"{"jobs": [
  {"jobName": "nightly", "job": "a", "cronTime": "0 2 * * *"},
  {"jobName": "night\u006cy", "job": "b", "cronTime": "0 3 * * *"}
]}"#,
        );
        assert_eq!(
            got,
            [
                r#"s.json:3:15: jobs[1] "nightly": jobName: duplicate: jobs[0] already uses this name"#
            ]
        );
    }

    /// A bad zone does not hide a bad expression in the same job, and an escaped expression is
    /// read like the plain one.
    #[test]
    fn a_bad_zone_and_a_bad_cron_in_one_job_are_both_reported() {
        let got = problems(
            r#"{"jobs": [
  {"jobName": "d", "job": "x", "cronTime": "61 * * * *", "timezone": "Mars/Base"},
  {"jobName": "e", "job": "x", "cronTime": "0 \u0032 * * *"}
]}"#,
        );
        assert_eq!(
            got,
            [
                r#"s.json:2:44: jobs[0] "d": cronTime: minute: 61 is out of range 0-59"#,
                r#"s.json:2:70: jobs[0] "d": timezone: unknown time zone "Mars/Base": expected an IANA name such as "UTC" or "Europe/Berlin""#,
            ]
        );
    }

    #[test]
    fn catch_up_fields_are_read_and_checked_with_precise_errors() {
        let schedule = parse(
            br#"{"jobs": [
  {"jobName": "a", "job": "x", "cronTime": "* * * * *", "catchup": "latest", "catchupWindow": "15m"},
  {"jobName": "b", "job": "x", "cronTime": "* * * * *"}
]}"#,
            Path::new("s.json"),
            LoadOptions {
                default_catchup_window: Duration::from_secs(7200),
                ..LoadOptions::default()
            },
        )
        .unwrap();
        let (a, b) = (&schedule.jobs[0].spec, &schedule.jobs[1].spec);
        assert_eq!(
            (a.catchup, a.catchup_window),
            (Catchup::Latest, Duration::from_secs(900))
        );
        assert_eq!(
            (b.catchup, b.catchup_window),
            (Catchup::All, Duration::from_secs(7200))
        );
        let got = problems(
            r#"{"jobs": [
  {"jobName": "c", "job": "x", "cronTime": "* * * * *", "catchup": "some"},
  {"jobName": "d", "job": "x", "cronTime": "* * * * *", "catchupWindow": "30s"},
  {"jobName": "e", "job": "x", "cronTime": "* * * * *", "catchupWindow": "soon"},
  {"jobName": "f", "job": "x", "cronTime": "* * * * *", "catchup": 1, "catchupWindw": "1h"}
]}"#,
        );
        assert_eq!(
            got,
            [
                r#"s.json:2:68: jobs[0] "c": catchup: "some" is not one of "all", "latest", "none""#,
                r#"s.json:3:74: jobs[1] "d": catchupWindow: "30s" is out of range 1m-366d (for no catch-up at all, use "catchup": "none")"#,
                r#"s.json:4:74: jobs[2] "e": catchupWindow: "soon" is not a duration like "90s", "15m" or "2h": expected number at 0"#,
                r#"s.json:5:68: jobs[3] "f": catchup: expected a string, found a number"#,
                r#"s.json:5:87: jobs[3] "f": unknown field "catchupWindw" (did you mean "catchupWindow"?)"#,
            ]
        );
    }

    #[test]
    fn jitter_is_read_and_checked_with_precise_errors() {
        let schedule = parse(
            br#"{"jobs": [
  {"jobName": "a", "job": "x", "cronTime": "0 * * * *", "jitter": "30s"},
  {"jobName": "b", "job": "x", "cronTime": "0 * * * *"}
]}"#,
            Path::new("s.json"),
            LoadOptions::default(),
        )
        .unwrap();
        assert_eq!(schedule.jobs[0].spec.jitter, Some(Duration::from_secs(30)));
        assert_eq!(schedule.jobs[1].spec.jitter, None);
        let got = problems(
            r#"{"jobs": [
  {"jobName": "c", "job": "x", "cronTime": "* * * * *", "jitter": "0s"},
  {"jobName": "d", "job": "x", "cronTime": "*/3 * * * *", "jitter": "5m"},
  {"jobName": "e", "job": "x", "cronTime": "0 * * * *", "jitter": "2m", "catchupWindow": "1m"},
  {"jobName": "f", "job": "x", "cronTime": "0 * * * *", "jitter": 30},
  {"jobName": "g", "job": "x", "cronTime": "61 * * * *", "jiter": "1s"}
]}"#,
        );
        assert_eq!(got.len(), 6, "{got:#?}");
        assert_eq!(
            got[0],
            r#"s.json:2:67: jobs[0] "c": jitter: "0s" is out of range 1ms-10m (for more spread, use H in cronTime)"#
        );
        assert!(
            got[1].starts_with(r#"s.json:3:69: jobs[1] "d": jitter: "5m" is longer than the job's smallest interval between two slots, 3m ("#),
            "{}",
            got[1]
        );
        assert_eq!(
            got[2],
            r#"s.json:4:67: jobs[2] "e": jitter: "2m" is longer than the job's catchupWindow 1m: a slot still waiting for its offset when a dispatcher crashes would be re-sent outside its window and skipped"#
        );
        assert_eq!(
            got[3],
            r#"s.json:5:67: jobs[3] "f": jitter: expected a string, found a number"#
        );
        assert_eq!(
            &got[4..],
            [
                r#"s.json:6:44: jobs[4] "g": cronTime: minute: 61 is out of range 0-59"#,
                r#"s.json:6:67: jobs[4] "g": unknown field "jiter" (did you mean "jitter"?)"#,
            ]
        );
    }

    /// A member validates every job but keeps only its shards' jobs, each tagged with its shard.
    #[test]
    fn a_shard_filter_keeps_only_the_owned_shards_jobs_and_still_checks_the_rest() {
        let json = br#"{"jobs": [
  {"jobName": "21", "job": "x", "cronTime": "* * * * *"},
  {"jobName": "foobar", "job": "x", "cronTime": "* * * * *"},
  {"jobName": "abc", "job": "x", "cronTime": "* * * * *"}
]}"#;
        // Kafka's partitioner over 3 partitions (the Java client's test vectors, see message.rs).
        let shard = |name: &str| crate::wire::partition_for(name.as_bytes(), 3) as u32;
        let owned = shard("abc");
        let kept = parse(
            json,
            Path::new("s.json"),
            LoadOptions {
                shards: ShardFilter::only(3, [owned]),
                ..LoadOptions::default()
            },
        )
        .unwrap();
        let names: Vec<(&str, u32)> = kept
            .jobs
            .iter()
            .map(|j| (j.spec.name.as_str(), j.spec.shard))
            .collect();
        let expected: Vec<(&str, u32)> = ["21", "foobar", "abc"]
            .into_iter()
            .filter(|n| shard(n) == owned)
            .map(|n| (n, owned))
            .collect();
        assert_eq!(names, expected);
        let bad =
            br#"{"jobs": [{"jobName": "zzz-not-ours", "job": "x", "cronTime": "61 * * * *"}]}"#;
        let nobody = LoadOptions {
            shards: ShardFilter::only(3, []),
            ..LoadOptions::default()
        };
        assert!(
            parse(bad, Path::new("s.json"), nobody).is_err(),
            "a job of another shard is still validated"
        );
    }

    #[test]
    fn a_field_given_twice_is_reported_once_per_repeat() {
        let got = problems(
            r#"{"jobs": [{"jobName": "a", "job": "x", "cronTime": "* * * * *", "job": "y", "job": "z"}]}"#,
        );
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got
            .iter()
            .all(|p| p.ends_with(r#"jobs[0] "a": job: appears more than once"#)));
    }

    #[test]
    fn jobs_with_the_same_expression_and_zone_share_one_compiled_expression() {
        let schedule = parse(
            br#"{"jobs": [
  {"jobName": "a", "job": "x", "cronTime": "0 2 * * *"},
  {"jobName": "b", "job": "x", "cronTime": "0 2 * * *"},
  {"jobName": "c", "job": "x", "cronTime": "0 2 * * *", "timezone": "Europe/Berlin"}
]}"#,
            Path::new("s.json"),
            LoadOptions::default(),
        )
        .unwrap();
        let [a, b, c] = &schedule.jobs[..] else {
            panic!("three jobs expected")
        };
        assert!(Arc::ptr_eq(&a.expr, &b.expr));
        assert!(!Arc::ptr_eq(&a.expr, &c.expr));
        assert_eq!(c.expr.tz(), chrono_tz::Europe::Berlin);
    }

    #[test]
    fn run_settings_are_read_and_left_unset_when_absent() {
        let schedule = parse(
            br#"{"jobs": [
  {"jobName": "a", "job": "x", "cronTime": "* * * * *", "timeout": "90s", "maxAttempts": 5, "overlap": "replace"},
  {"jobName": "b", "job": "x", "cronTime": "* * * * *", "timeout": "1d", "maxAttempts": 1, "overlap": "queue"},
  {"jobName": "c", "job": "x", "cronTime": "* * * * *"}
]}"#,
            Path::new("s.json"),
            LoadOptions::default(),
        )
        .unwrap();
        let settings: Vec<_> = schedule
            .jobs
            .iter()
            .map(|j| (j.spec.timeout, j.spec.max_attempts, j.spec.overlap))
            .collect();
        assert_eq!(
            settings,
            [
                (
                    Some(Duration::from_secs(90)),
                    Some(5),
                    Some(Overlap::Replace)
                ),
                (
                    Some(Duration::from_secs(86_400)),
                    Some(1),
                    Some(Overlap::Queue)
                ),
                (None, None, None),
            ]
        );
    }

    #[test]
    fn a_deadline_is_read_and_checked_with_precise_errors() {
        let got = problems(
            r#"{"jobs": [
  {"jobName": "a", "job": "x", "cronTime": "* * * * *", "deadline": "30s"},
  {"jobName": "b", "job": "x", "cronTime": "* * * * *", "deadline": "400d"},
  {"jobName": "c", "job": "x", "cronTime": "* * * * *", "deadline": "soon"},
  {"jobName": "d", "job": "x", "cronTime": "* * * * *", "deadline": 120}
]}"#,
        );
        assert_eq!(
            got,
            [
                r#"s.json:2:69: jobs[0] "a": deadline: "30s" is out of range 1m-366d"#,
                r#"s.json:3:69: jobs[1] "b": deadline: "400d" is out of range 1m-366d"#,
                r#"s.json:4:69: jobs[2] "c": deadline: "soon" is not a duration like "90s", "15m" or "2h": expected number at 0"#,
                r#"s.json:5:69: jobs[3] "d": deadline: expected a string, found a number"#,
            ]
        );
        let ok = parse(
            br#"{"jobs": [{"jobName": "a", "job": "x", "every": "1h", "deadline": "2h 30m"},
                          {"jobName": "b", "job": "x", "cronTime": "* * * * *"}]}"#,
            Path::new("s.json"),
            LoadOptions::default(),
        )
        .unwrap();
        assert_eq!(ok.jobs[0].spec.deadline, Some(Duration::from_secs(9000)));
        assert_eq!(ok.jobs[1].spec.deadline, None);
    }

    #[test]
    fn run_settings_are_checked_with_precise_errors() {
        let got = problems(
            r#"{"jobs": [
  {"jobName": "a", "job": "x", "cronTime": "* * * * *", "timeout": "500ms"},
  {"jobName": "b", "job": "x", "cronTime": "* * * * *", "timeout": "2d"},
  {"jobName": "c", "job": "x", "cronTime": "* * * * *", "timeout": "soon"},
  {"jobName": "d", "job": "x", "cronTime": "* * * * *", "timeout": 30},
  {"jobName": "e", "job": "x", "cronTime": "* * * * *", "maxAttempts": 0},
  {"jobName": "f", "job": "x", "cronTime": "* * * * *", "maxAttempts": 101},
  {"jobName": "g", "job": "x", "cronTime": "* * * * *", "maxAttempts": 2.5},
  {"jobName": "h", "job": "x", "cronTime": "* * * * *", "maxAttempts": "3"},
  {"jobName": "i", "job": "x", "cronTime": "* * * * *", "overlap": "skipp"},
  {"jobName": "j", "job": "x", "cronTime": "* * * * *", "overlap": "never"},
  {"jobName": "k", "job": "x", "cronTime": "* * * * *", "overlap": true, "overlapp": "skip"}
]}"#,
        );
        assert_eq!(
            got,
            [
                r#"s.json:2:68: jobs[0] "a": timeout: "500ms" is out of range 1s-1d (the range of the worker's --timeout)"#,
                r#"s.json:3:68: jobs[1] "b": timeout: "2d" is out of range 1s-1d (the range of the worker's --timeout)"#,
                r#"s.json:4:68: jobs[2] "c": timeout: "soon" is not a duration like "90s", "15m" or "2h": expected number at 0"#,
                r#"s.json:5:68: jobs[3] "d": timeout: expected a string, found a number"#,
                r#"s.json:6:72: jobs[4] "e": maxAttempts: 0 is out of range 1-100 (the range of the worker's --max-attempts)"#,
                r#"s.json:7:72: jobs[5] "f": maxAttempts: 101 is out of range 1-100 (the range of the worker's --max-attempts)"#,
                r#"s.json:8:72: jobs[6] "g": maxAttempts: expected an integer, found 2.5 (not an integer)"#,
                r#"s.json:9:72: jobs[7] "h": maxAttempts: expected an integer, found a string"#,
                r#"s.json:10:68: jobs[8] "i": overlap: "skipp" is not one of "queue", "skip", "allow", "replace" (did you mean "skip"?)"#,
                r#"s.json:11:68: jobs[9] "j": overlap: "never" is not one of "queue", "skip", "allow", "replace""#,
                r#"s.json:12:68: jobs[10] "k": overlap: expected a string, found a boolean"#,
                r#"s.json:12:86: jobs[10] "k": unknown field "overlapp" (did you mean "overlap"?)"#,
            ]
        );
    }
}
