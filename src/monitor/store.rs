//! The monitor's history: runs, attempts, alerts and their outbox, the audit log and the ingest
//! positions, behind one small trait ([`RunStore`]) so that a server database can stand in for
//! SQLite later. [`SqliteStore`] is the embedded one (`--db`, WAL mode).
//!
//! ```text
//!  ingest batch ──► RunStore::ingest ─┐ ONE transaction: the rows, the alerts + outbox rows,
//!  judge pass   ──► RunStore::judge  ─┘ and the topic positions reached (ingest)
//!                                        │
//!  runs ◄── attempts          alerts ──► outbox (one row per webhook that wants the kind)
//!  audit    positions         meta (first start, how far missed slots were judged)
//! ```
//!
//! A killed monitor resumes from the positions of its last committed batch: every row of that
//! batch is in, none of the next one is, so a re-read adds no duplicate row and no second alert
//! (an alert's id is its (kind, job, slot), inserted or ignored).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OpenFlags, OptionalExtension, Transaction};

use super::judge::{self, Event, LaterDispatch};
use super::model::{Alert, AlertKind, Attempt, AuditEntry, Delivery, Outbox, Run, RunState};
use crate::schedule::Job;
use crate::wire::control::{ControlRecord, ALL_KEY};
use crate::wire::job::JobMessage;
use crate::wire::result::{DeadLetter, JobResult};
use crate::wire::schedule::Changed;

/// What went wrong with the database.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLite refused an operation.
    #[error("monitor database {path}: {source}")]
    Sqlite {
        /// The database file.
        path: String,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The database does not exist (the query commands never create one).
    #[error("monitor database {0}: no such file (start `cronq monitor --db {0}` first)")]
    Missing(String),
}

/// `Result` with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Where a record was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
}

/// One decoded record of an ingest batch.
#[derive(Debug, Clone)]
pub enum Ingested {
    /// A JobMessage, written at `at`; `by` and `reason` are its `cronq-by` and `cronq-reason`
    /// headers (a manual trigger's who and why).
    Dispatched {
        /// The message.
        message: JobMessage,
        /// The record's timestamp.
        at: DateTime<Utc>,
        /// The `cronq-by` header.
        by: Option<String>,
        /// The `cronq-reason` header.
        reason: Option<String>,
        /// Where it was read.
        source: Source,
    },
    /// A JobResult.
    Reported(JobResult),
    /// A dead letter (boxed: it is the largest record by far).
    DeadLettered(Box<DeadLetter>),
    /// A pause or resume.
    Control {
        /// The record.
        record: ControlRecord,
        /// Where it was read.
        source: Source,
    },
    /// A schedule topic record: a job written (`changed` set) or deleted (a tombstone).
    Schedule {
        /// The job.
        job: String,
        /// Who changed it; `None` for a tombstone.
        changed: Option<Changed>,
        /// The record's timestamp.
        at: DateTime<Utc>,
        /// Where it was read.
        source: Source,
    },
}

/// A new run's deadline from its job, slot and message ([`judge::deadline`] with the schedule in
/// force).
pub type DeadlineOf<'a> = dyn Fn(&str, DateTime<Utc>, Option<&JobMessage>) -> DateTime<Utc> + 'a;

/// What one ingest batch or judge pass did, for the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// Runs that entered each state, indexed as [`RunState::ALL`].
    pub entered: [u64; 12],
    /// Second JobMessages of a slot.
    pub duplicates: u64,
    /// Records that named no run (a dead letter of an unreadable record) or no instant.
    pub unjoinable: u64,
    /// Alerts raised (new ones only).
    pub alerts: u64,
}

impl Applied {
    fn entered(&mut self, state: RunState) {
        if let Some(i) = RunState::ALL.iter().position(|s| *s == state) {
            self.entered[i] += 1;
        }
    }

    /// Runs that entered `state`.
    pub fn count(&self, state: RunState) -> u64 {
        RunState::ALL
            .iter()
            .position(|s| *s == state)
            .map_or(0, |i| self.entered[i])
    }
}

/// A judge pass: what the passing of time decides.
pub struct Pass<'a> {
    /// The monitor's clock.
    pub now: DateTime<Utc>,
    /// `--missed-after`.
    pub missed_after: Duration,
    /// The jobs in force.
    pub jobs: &'a [Job],
}

/// Which runs a query asks for; newest slot first.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    /// One job's.
    pub job: Option<String>,
    /// In this state only.
    pub status: Option<RunState>,
    /// Slots at or after this.
    pub since: Option<DateTime<Utc>>,
    /// At most this many (1-10000; 0 is 100).
    pub limit: usize,
    /// The page after this cursor ([`RunStore::cursor`] of the last run of the page before).
    pub after: Option<String>,
}

/// The history, as the rest of the monitor uses it.
pub trait RunStore: Send {
    /// The next offset of every partition ingest read, as last committed.
    fn positions(&mut self) -> Result<BTreeMap<(String, i32), i64>>;

    /// Applies one batch of records and the positions it reached, in ONE transaction. `deadline`
    /// gives a new run's deadline.
    fn ingest(
        &mut self,
        batch: &[Ingested],
        positions: &BTreeMap<(String, i32), i64>,
        now: DateTime<Utc>,
        deadline: &DeadlineOf<'_>,
    ) -> Result<Applied>;

    /// Marks the runs past their deadline `late` and the undispatched slots `missed` (or
    /// `skipped_by_rule`), with their alerts, in one transaction.
    fn judge(&mut self, pass: &Pass<'_>) -> Result<Applied>;

    /// Deletes up to `chunk` rows of each table older than `before`; how many went.
    fn prune(&mut self, before: DateTime<Utc>, chunk: usize) -> Result<u64>;

    /// The monitor's first start (set to `now` the first time): no slot before it is judged.
    fn first_start(&mut self, now: DateTime<Utc>) -> Result<DateTime<Utc>>;

    /// Runs, newest slot first.
    fn runs(&mut self, query: &RunQuery) -> Result<Vec<Run>>;

    /// The attempts of one run, in order.
    fn attempts(&mut self, dispatch_id: &str) -> Result<Vec<Attempt>>;

    /// Alerts raised since `since`, newest first.
    fn alerts(&mut self, since: Option<DateTime<Utc>>, limit: usize) -> Result<Vec<Alert>>;

    /// Audit entries since `since` (of `job`, when given), newest first.
    fn audit(
        &mut self,
        since: Option<DateTime<Utc>>,
        job: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>>;

    /// The database's size in bytes.
    fn size_bytes(&mut self) -> Result<u64>;

    /// One run, by its `dispatchId`.
    fn run(&mut self, dispatch_id: &str) -> Result<Option<Run>>;

    /// Up to `limit` job names with runs, in name order, after `after` (keyset paging: the
    /// status page lists jobs a page at a time, so many jobs cost no more than a few).
    fn jobs(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<String>>;

    /// Failing now: for each job whose latest run with an outcome (succeeded, failed, timed_out,
    /// dead_lettered) did not succeed, that run; newest slot first. Only the jobs that raised an
    /// alert since their last success are looked at, so this stays cheap with many jobs. At most
    /// `limit`.
    fn failing(&mut self, limit: usize) -> Result<Vec<Run>>;

    /// The cursor that pages past `run` ([`RunQuery::after`]).
    fn cursor(run: &Run) -> String
    where
        Self: Sized,
    {
        format!("{}:{}", run.slot.timestamp_millis(), run.dispatch_id)
    }
}

/// Which alert kinds each `--webhook` (by index) wants: the outbox gets one row per match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routes(pub Vec<Vec<AlertKind>>);

/// The SQLite history (`--db`).
pub struct SqliteStore {
    conn: Connection,
    path: String,
    routes: Routes,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    dispatch_id TEXT PRIMARY KEY NOT NULL,
    job TEXT NOT NULL,
    slot INTEGER NOT NULL,
    state TEXT NOT NULL,
    dispatched_at INTEGER,
    started_at INTEGER,
    finished_at INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_exit_code INTEGER,
    stderr_tail TEXT NOT NULL DEFAULT '',
    worker TEXT,
    deadline INTEGER,
    manual INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_by_job_slot ON runs (job, slot DESC);
CREATE INDEX IF NOT EXISTS runs_by_state_slot ON runs (state, slot);
CREATE INDEX IF NOT EXISTS runs_by_slot ON runs (slot);
CREATE TABLE IF NOT EXISTS attempts (
    dispatch_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    started_at INTEGER,
    finished_at INTEGER,
    duration_ms INTEGER NOT NULL,
    stdout_tail TEXT NOT NULL,
    stderr_tail TEXT NOT NULL,
    worker TEXT NOT NULL,
    slot INTEGER NOT NULL,
    UNIQUE (dispatch_id, attempt, status)
);
CREATE INDEX IF NOT EXISTS attempts_by_slot ON attempts (slot);
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY NOT NULL,
    kind TEXT NOT NULL,
    job TEXT NOT NULL,
    slot INTEGER NOT NULL,
    dispatch_id TEXT,
    outcome TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_exit_code INTEGER,
    stderr_tail TEXT NOT NULL,
    raised_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS alerts_by_raised ON alerts (raised_at);
CREATE TABLE IF NOT EXISTS outbox (
    alert_id TEXT NOT NULL,
    webhook INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try INTEGER NOT NULL,
    last_error TEXT,
    state TEXT NOT NULL DEFAULT 'pending',
    queued_at INTEGER NOT NULL,
    done_at INTEGER,
    PRIMARY KEY (alert_id, webhook)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_try);
CREATE TABLE IF NOT EXISTS positions (
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, partition)
);
CREATE TABLE IF NOT EXISTS audit (
    at INTEGER NOT NULL,
    who TEXT NOT NULL,
    what TEXT NOT NULL,
    job TEXT,
    reason TEXT,
    detail TEXT NOT NULL,
    topic TEXT NOT NULL,
    partition INTEGER NOT NULL,
    offset INTEGER NOT NULL,
    UNIQUE (topic, partition, offset)
);
CREATE INDEX IF NOT EXISTS audit_by_at ON audit (at);
CREATE TABLE IF NOT EXISTS pauses (
    key TEXT PRIMARY KEY NOT NULL,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS troubled_jobs (
    job TEXT PRIMARY KEY NOT NULL,
    since INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY NOT NULL,
    value TEXT NOT NULL
);
";

/// meta: the monitor's first start (ms).
const META_FIRST_START: &str = "first_start_ms";
/// meta: slots up to this instant (ms) were judged for `missed`.
const META_JUDGED_UNTIL: &str = "missed_judged_until_ms";

fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

fn time(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}

fn opt_time(ms: Option<i64>) -> Option<DateTime<Utc>> {
    ms.map(time)
}

/// A connection to the database at `path`, which must exist (it is never created here).
fn connect_existing(path: &Path, mode: OpenFlags) -> Result<Connection> {
    if !path.exists() {
        return Err(StoreError::Missing(path.display().to_string()));
    }
    Connection::open_with_flags(path, mode | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|source| sqlite_error(path, source))
}

impl SqliteStore {
    /// Opens (creating when missing) the database at `path`: WAL mode, the schema.
    pub fn open(path: &Path, routes: Routes) -> Result<SqliteStore> {
        let conn = Connection::open(path).map_err(|source| sqlite_error(path, source))?;
        let store = SqliteStore {
            conn,
            path: path.display().to_string(),
            routes,
        };
        store.prepare()?;
        Ok(store)
    }

    /// Opens an existing database for the query commands; never creates one.
    pub fn open_existing(path: &Path) -> Result<SqliteStore> {
        let conn = connect_existing(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
        let store = SqliteStore {
            conn,
            path: path.display().to_string(),
            routes: Routes::default(),
        };
        store.prepare()?;
        Ok(store)
    }

    /// Opens an existing database read-only, for the monitor's HTTP readers: never creates it,
    /// never writes (WAL lets it read while ingest writes on its own connection).
    pub fn open_read_only(path: &Path) -> Result<SqliteStore> {
        let conn = connect_existing(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|source| sqlite_error(path, source))?;
        Ok(SqliteStore {
            conn,
            path: path.display().to_string(),
            routes: Routes::default(),
        })
    }

    /// An in-memory database (tests).
    pub fn in_memory(routes: Routes) -> Result<SqliteStore> {
        let conn =
            Connection::open_in_memory().map_err(|source| sqlite_error(":memory:", source))?;
        let store = SqliteStore {
            conn,
            path: ":memory:".into(),
            routes,
        };
        store.prepare()?;
        Ok(store)
    }

    fn prepare(&self) -> Result<()> {
        // WAL: queries (the CLI, the pruner's own connection) read while ingest writes. NORMAL
        // sync: a power loss may lose the last batches, never consistency; they are read again.
        self.conn
            .pragma_update(None, "journal_mode", "WAL")
            .and_then(|()| self.conn.pragma_update(None, "synchronous", "NORMAL"))
            // 32 MiB of page cache (the default is 2 MiB): the indexes' hot pages of a large
            // history stay in it instead of being copied in from the page cache at every batch.
            .and_then(|()| self.conn.pragma_update(None, "cache_size", -32_768))
            .and_then(|()| self.conn.busy_timeout(Duration::from_secs(10)))
            .and_then(|()| self.conn.execute_batch(SCHEMA))
            .map_err(|e| self.error(e))
    }

    fn error(&self, source: rusqlite::Error) -> StoreError {
        sqlite_error(&self.path, source)
    }

    /// A transaction, with errors naming the database.
    fn tx(&mut self) -> Result<(Transaction<'_>, &Routes, &str)> {
        let tx = self
            .conn
            .transaction()
            .map_err(|source| sqlite_error(&self.path, source))?;
        Ok((tx, &self.routes, &self.path))
    }
}

fn sqlite_error(path: impl AsRef<Path>, source: rusqlite::Error) -> StoreError {
    StoreError::Sqlite {
        path: path.as_ref().display().to_string(),
        source,
    }
}

const RUN_COLUMNS: &str = "dispatch_id, job, slot, state, dispatched_at, started_at, finished_at, attempts, last_exit_code, stderr_tail, worker, deadline, manual";

fn run_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Run> {
    let state: String = row.get(3)?;
    Ok(Run {
        dispatch_id: row.get(0)?,
        job: row.get(1)?,
        slot: time(row.get(2)?),
        // A state this build does not know (a later version's): read as dispatched.
        state: RunState::parse(&state).unwrap_or(RunState::Dispatched),
        dispatched_at: opt_time(row.get(4)?),
        started_at: opt_time(row.get(5)?),
        finished_at: opt_time(row.get(6)?),
        attempts: row.get(7)?,
        last_exit_code: row.get(8)?,
        stderr_tail: row.get(9)?,
        worker: row.get(10)?,
        deadline: opt_time(row.get(11)?),
        manual: row.get(12)?,
    })
}

fn read_run(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<Option<Run>> {
    tx.prepare_cached(&format!(
        "SELECT {RUN_COLUMNS} FROM runs WHERE dispatch_id = ?1"
    ))?
    .query_row([id], run_from_row)
    .optional()
}

fn write_run(tx: &Transaction<'_>, run: &Run) -> rusqlite::Result<()> {
    tx.prepare_cached(&format!(
        "INSERT INTO runs ({RUN_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)
         ON CONFLICT (dispatch_id) DO UPDATE SET state = excluded.state,
           dispatched_at = excluded.dispatched_at, started_at = excluded.started_at,
           finished_at = excluded.finished_at, attempts = excluded.attempts,
           last_exit_code = excluded.last_exit_code, stderr_tail = excluded.stderr_tail,
           worker = excluded.worker, deadline = excluded.deadline"
    ))?
    .execute(params![
        run.dispatch_id,
        run.job,
        ms(run.slot),
        run.state.as_str(),
        run.dispatched_at.map(ms),
        run.started_at.map(ms),
        run.finished_at.map(ms),
        run.attempts,
        run.last_exit_code,
        run.stderr_tail,
        run.worker,
        run.deadline.map(ms),
        run.manual,
    ])?;
    Ok(())
}

fn write_attempt(tx: &Transaction<'_>, slot: DateTime<Utc>, r: &JobResult) -> rusqlite::Result<()> {
    let parse = |t: &str| {
        DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|t| t.timestamp_millis())
    };
    tx.prepare_cached(
        "INSERT OR IGNORE INTO attempts (dispatch_id, attempt, status, exit_code, started_at,
           finished_at, duration_ms, stdout_tail, stderr_tail, worker, slot)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )?
    .execute(params![
        r.dispatch_id,
        r.attempt,
        r.status.as_str(),
        r.exit_code,
        parse(&r.started_at),
        parse(&r.finished_at),
        r.duration_ms as i64,
        r.stdout_tail,
        r.stderr_tail,
        r.worker,
        ms(slot),
    ])?;
    Ok(())
}

/// Raises `kind` for `run` (once: an alert id is inserted or ignored), with its outbox rows, and
/// keeps the job's trouble state for `recovered`. Returns whether it was new.
fn raise(
    tx: &Transaction<'_>,
    routes: &Routes,
    kind: AlertKind,
    run: &Run,
    now: DateTime<Utc>,
) -> rusqlite::Result<bool> {
    let id = Alert::id_for(kind, &run.job, run.slot);
    let dispatch_id =
        (run.dispatched_at.is_some() || run.attempts > 0).then(|| run.dispatch_id.clone());
    let inserted = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO alerts (id, kind, job, slot, dispatch_id, outcome, attempts,
               last_exit_code, stderr_tail, raised_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?
        .execute(params![
            id,
            kind.as_str(),
            run.job,
            ms(run.slot),
            dispatch_id,
            run.state.as_str(),
            run.attempts,
            run.last_exit_code,
            run.stderr_tail,
            ms(now),
        ])?;
    if inserted == 0 {
        return Ok(false);
    }
    for (webhook, kinds) in routes.0.iter().enumerate() {
        if kinds.contains(&kind) {
            tx.prepare_cached(
                "INSERT OR IGNORE INTO outbox (alert_id, webhook, next_try, queued_at)
                 VALUES (?1, ?2, ?3, ?3)",
            )?
            .execute(params![id, webhook as i64, ms(now)])?;
        }
    }
    if judge::is_trouble(kind) {
        tx.prepare_cached("INSERT OR IGNORE INTO troubled_jobs (job, since) VALUES (?1, ?2)")?
            .execute(params![run.job, ms(run.slot)])?;
    }
    Ok(true)
}

/// A run that entered `state`: its alert, and `recovered` when it succeeded while its job was in
/// trouble.
fn on_entered(
    tx: &Transaction<'_>,
    routes: &Routes,
    run: &Run,
    state: RunState,
    now: DateTime<Utc>,
    applied: &mut Applied,
) -> rusqlite::Result<()> {
    applied.entered(state);
    if let Some(kind) = judge::alert_on_entering(state) {
        applied.alerts += u64::from(raise(tx, routes, kind, run, now)?);
    }
    if state == RunState::Succeeded && !run.manual {
        let troubled = tx
            .prepare_cached("DELETE FROM troubled_jobs WHERE job = ?1")?
            .execute([&run.job])?;
        if troubled > 0 {
            applied.alerts += u64::from(raise(tx, routes, AlertKind::Recovered, run, now)?);
        }
    }
    Ok(())
}

fn write_audit(tx: &Transaction<'_>, entry: &AuditEntry) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO audit (at, who, what, job, reason, detail, topic, partition, offset)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        ms(entry.at),
        entry.who,
        entry.what,
        entry.job,
        entry.reason,
        entry.detail.to_string(),
        entry.topic,
        entry.partition,
        entry.offset,
    ])?;
    Ok(())
}

fn apply_one(
    tx: &Transaction<'_>,
    routes: &Routes,
    record: &Ingested,
    now: DateTime<Utc>,
    deadline: &DeadlineOf<'_>,
    applied: &mut Applied,
) -> rusqlite::Result<()> {
    let event = match record {
        Ingested::Dispatched { message, at, .. } => Event::Dispatched { message, at: *at },
        Ingested::Reported(result) => Event::Reported(result),
        Ingested::DeadLettered(letter) => Event::DeadLettered {
            reason: letter.reason,
            message: letter.message.as_ref(),
            last: letter.last_result.as_ref(),
        },
        Ingested::Control { record, source } => {
            tx.prepare_cached(
                "INSERT INTO pauses (key, record) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET record = excluded.record",
            )?
            .execute(params![record.key(), record.encode()])?;
            let detail = serde_json::from_str(&record.encode()).unwrap_or_default();
            return write_audit(
                tx,
                &AuditEntry {
                    at: record.at,
                    who: record.by.clone(),
                    what: if record.paused { "pause" } else { "resume" }.into(),
                    job: record.job.clone(),
                    reason: record.reason.clone(),
                    detail,
                    topic: source.topic.clone(),
                    partition: source.partition,
                    offset: source.offset,
                },
            );
        }
        Ingested::Schedule {
            job,
            changed,
            at,
            source,
        } => {
            let (what, who, when, detail) = match changed {
                Some(c) => (
                    "schedule_put",
                    c.by.clone(),
                    c.at,
                    serde_json::json!({"via": c.via, "source": c.source}),
                ),
                None => (
                    "schedule_delete",
                    "unknown".to_string(),
                    *at,
                    serde_json::json!({}),
                ),
            };
            return write_audit(
                tx,
                &AuditEntry {
                    at: when,
                    who,
                    what: what.into(),
                    job: Some(job.clone()),
                    reason: None,
                    detail,
                    topic: source.topic.clone(),
                    partition: source.partition,
                    offset: source.offset,
                },
            );
        }
    };
    let Some((id, _, _)) = event.names() else {
        applied.unjoinable += 1;
        return Ok(());
    };
    let current = read_run(tx, id)?;
    let Some(step) = judge::step(current, &event, deadline) else {
        applied.unjoinable += 1;
        return Ok(());
    };
    if step.duplicate {
        applied.duplicates += 1;
        return Ok(());
    }
    match record {
        Ingested::Reported(result) => write_attempt(tx, step.run.slot, result)?,
        Ingested::DeadLettered(letter) if letter.last_result.is_some() => {
            if let Some(last) = &letter.last_result {
                write_attempt(tx, step.run.slot, last)?;
            }
        }
        Ingested::Dispatched {
            message,
            at,
            by,
            reason,
            source,
        } if step.run.manual => write_audit(
            tx,
            &AuditEntry {
                at: *at,
                who: by.clone().unwrap_or_else(|| "unknown".into()),
                what: "trigger".into(),
                job: Some(message.job_name.clone()),
                reason: reason.clone(),
                detail: serde_json::json!({"dispatchId": message.dispatch_id}),
                topic: source.topic.clone(),
                partition: source.partition,
                offset: source.offset,
            },
        )?,
        _ => {}
    }
    write_run(tx, &step.run)?;
    if let Some(state) = step.entered {
        on_entered(tx, routes, &step.run, state, now, applied)?;
    }
    Ok(())
}

fn meta_ms(tx: &Transaction<'_>, key: &str) -> rusqlite::Result<Option<i64>> {
    tx.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| {
        r.get::<_, String>(0)
    })
    .optional()
    .map(|v| v.and_then(|v| v.parse().ok()))
}

fn set_meta(tx: &Transaction<'_>, key: &str, value: i64) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        params![key, value.to_string()],
    )?;
    Ok(())
}

fn judge_pass(
    tx: &Transaction<'_>,
    routes: &Routes,
    pass: &Pass<'_>,
    applied: &mut Applied,
) -> rusqlite::Result<()> {
    // Late: unfinished runs past their deadline.
    let late: Vec<Run> = tx
        .prepare_cached(&format!(
            "SELECT {RUN_COLUMNS} FROM runs WHERE state IN ('dispatched', 'running')
               AND deadline IS NOT NULL AND deadline <= ?1"
        ))?
        .query_map([ms(pass.now)], run_from_row)?
        .collect::<rusqlite::Result<_>>()?;
    for mut run in late {
        if judge::is_late(run.state, run.deadline, pass.now) {
            run.state = RunState::Late;
            write_run(tx, &run)?;
            on_entered(tx, routes, &run, RunState::Late, pass.now, applied)?;
        }
    }

    // Missed: slots after the last judged instant (at first, the monitor's first start) up to
    // now - --missed-after with no run.
    let Some(until) = chrono::Duration::from_std(pass.missed_after)
        .ok()
        .and_then(|d| pass.now.checked_sub_signed(d))
    else {
        return Ok(());
    };
    let from = match meta_ms(tx, META_JUDGED_UNTIL)? {
        Some(t) => time(t),
        None => match meta_ms(tx, META_FIRST_START)? {
            Some(t) => time(t),
            None => return Ok(()),
        },
    };
    // Slots are whole minutes (an `at` job's too): none lies in (from, until] unless a minute
    // starts there, so the jobs are walked once a minute, not at every pass.
    let first_slot = crate::clock::Minute::containing(from).next().start();
    if until <= from || first_slot.is_none_or(|m| m > until) {
        return Ok(());
    }
    let pauses: HashMap<String, ControlRecord> = tx
        .prepare_cached("SELECT key, record FROM pauses")?
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .filter_map(|r| r.ok())
        .filter_map(|(k, v)| ControlRecord::decode(v.as_bytes()).ok().map(|c| (k, c)))
        .collect();
    let all = pauses.get(ALL_KEY);
    let mut exists = tx.prepare_cached("SELECT 1 FROM runs WHERE dispatch_id = ?1")?;
    let mut later_of = tx.prepare_cached(
        "SELECT slot, dispatched_at FROM runs WHERE job = ?1 AND slot > ?2
           AND dispatched_at IS NOT NULL AND manual = 0 ORDER BY slot DESC LIMIT 1",
    )?;
    for job in pass.jobs {
        let name = &job.spec.name;
        for slot in judge::slots_between(job, from, until) {
            let id = crate::wire::dispatch_id(name, &crate::wire::slot_text(slot));
            if exists.exists([&id])? {
                continue;
            }
            let paused = judge::paused_at(pauses.get(name.as_str()).into_iter().chain(all), slot);
            let later: Option<LaterDispatch> = later_of
                .query_row(params![name, ms(slot)], |r| {
                    Ok((time(r.get(0)?), time(r.get(1)?)))
                })
                .optional()?;
            let state = judge::missing_slot(job, slot, paused, later);
            let run = Run::new(id, name.clone(), slot, state);
            write_run(tx, &run)?;
            on_entered(tx, routes, &run, state, pass.now, applied)?;
        }
    }
    set_meta(tx, META_JUDGED_UNTIL, ms(until))
}

fn alert_from_row(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Alert> {
    let kind: String = row.get(at + 1)?;
    let outcome: String = row.get(at + 5)?;
    Ok(Alert {
        id: row.get(at)?,
        kind: AlertKind::parse(&kind).unwrap_or(AlertKind::Failed),
        job: row.get(at + 2)?,
        slot: time(row.get(at + 3)?),
        dispatch_id: row.get(at + 4)?,
        outcome: RunState::parse(&outcome).unwrap_or(RunState::Dispatched),
        attempts: row.get(at + 6)?,
        last_exit_code: row.get(at + 7)?,
        stderr_tail: row.get(at + 8)?,
        raised_at: time(row.get(at + 9)?),
    })
}

const ALERT_COLUMNS: &str =
    "a.id, a.kind, a.job, a.slot, a.dispatch_id, a.outcome, a.attempts, a.last_exit_code, a.stderr_tail, a.raised_at";

fn clamp_limit(limit: usize) -> i64 {
    match limit {
        0 => 100,
        n => n.min(10_000) as i64,
    }
}

impl RunStore for SqliteStore {
    fn positions(&mut self) -> Result<BTreeMap<(String, i32), i64>> {
        let mut stmt = self
            .conn
            .prepare("SELECT topic, partition, next_offset FROM positions")
            .map_err(|e| sqlite_error(&self.path, e))?;
        let rows = stmt
            .query_map([], |r| Ok(((r.get(0)?, r.get(1)?), r.get(2)?)))
            .and_then(|rows| rows.collect::<rusqlite::Result<BTreeMap<_, _>>>())
            .map_err(|e| sqlite_error(&self.path, e))?;
        Ok(rows)
    }

    fn ingest(
        &mut self,
        batch: &[Ingested],
        positions: &BTreeMap<(String, i32), i64>,
        now: DateTime<Utc>,
        deadline: &DeadlineOf<'_>,
    ) -> Result<Applied> {
        let (tx, routes, path) = self.tx()?;
        let mut applied = Applied::default();
        let done = (|| {
            for record in batch {
                apply_one(&tx, routes, record, now, deadline, &mut applied)?;
            }
            let mut stmt = tx.prepare_cached(
                "INSERT INTO positions (topic, partition, next_offset) VALUES (?1, ?2, ?3)
                 ON CONFLICT (topic, partition) DO UPDATE SET next_offset = excluded.next_offset",
            )?;
            for ((topic, partition), next) in positions {
                stmt.execute(params![topic, partition, next])?;
            }
            Ok(())
        })();
        let path = path.to_string();
        done.and_then(|()| tx.commit())
            .map_err(|e| sqlite_error(&path, e))?;
        Ok(applied)
    }

    fn judge(&mut self, pass: &Pass<'_>) -> Result<Applied> {
        let (tx, routes, path) = self.tx()?;
        let path = path.to_string();
        let mut applied = Applied::default();
        judge_pass(&tx, routes, pass, &mut applied)
            .and_then(|()| tx.commit())
            .map_err(|e| sqlite_error(&path, e))?;
        Ok(applied)
    }

    fn prune(&mut self, before: DateTime<Utc>, chunk: usize) -> Result<u64> {
        let cut = ms(before);
        let chunk = chunk.max(1) as i64;
        let statements = [
            "DELETE FROM runs WHERE rowid IN (SELECT rowid FROM runs WHERE slot < ?1 LIMIT ?2)",
            "DELETE FROM attempts WHERE rowid IN (SELECT rowid FROM attempts WHERE slot < ?1 LIMIT ?2)",
            // Alerts still waiting for a webhook stay (the notifier gives up after 24 h).
            "DELETE FROM outbox WHERE rowid IN (SELECT rowid FROM outbox WHERE state != 'pending' AND queued_at < ?1 LIMIT ?2)",
            "DELETE FROM alerts WHERE rowid IN (SELECT rowid FROM alerts WHERE raised_at < ?1
               AND id NOT IN (SELECT alert_id FROM outbox) LIMIT ?2)",
            "DELETE FROM audit WHERE rowid IN (SELECT rowid FROM audit WHERE at < ?1 LIMIT ?2)",
        ];
        let mut deleted = 0u64;
        for sql in statements {
            deleted += self
                .conn
                .execute(sql, params![cut, chunk])
                .map_err(|e| sqlite_error(&self.path, e))? as u64;
        }
        Ok(deleted)
    }

    fn first_start(&mut self, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
        let (tx, _, path) = self.tx()?;
        let path = path.to_string();
        let at = (|| {
            let at = match meta_ms(&tx, META_FIRST_START)? {
                Some(t) => t,
                None => {
                    set_meta(&tx, META_FIRST_START, ms(now))?;
                    ms(now)
                }
            };
            tx.commit()?;
            Ok(at)
        })()
        .map_err(|e| sqlite_error(&path, e))?;
        Ok(time(at))
    }

    fn runs(&mut self, query: &RunQuery) -> Result<Vec<Run>> {
        let mut sql = format!("SELECT {RUN_COLUMNS} FROM runs WHERE 1 = 1");
        let mut args: Vec<Value> = Vec::new();
        if let Some(job) = &query.job {
            args.push(Value::Text(job.clone()));
            sql += &format!(" AND job = ?{}", args.len());
        }
        if let Some(status) = query.status {
            args.push(Value::Text(status.as_str().into()));
            sql += &format!(" AND state = ?{}", args.len());
        }
        if let Some(since) = query.since {
            args.push(Value::Integer(ms(since)));
            sql += &format!(" AND slot >= ?{}", args.len());
        }
        if let Some((slot, id)) = query
            .after
            .as_deref()
            .and_then(|c| c.split_once(':'))
            .and_then(|(s, id)| Some((s.parse::<i64>().ok()?, id)))
        {
            args.push(Value::Integer(slot));
            let s = args.len();
            args.push(Value::Text(id.into()));
            sql += &format!(
                " AND (slot < ?{s} OR (slot = ?{s} AND dispatch_id < ?{}))",
                args.len()
            );
        }
        args.push(Value::Integer(clamp_limit(query.limit)));
        sql += &format!(
            " ORDER BY slot DESC, dispatch_id DESC LIMIT ?{}",
            args.len()
        );
        let mut stmt = self
            .conn
            .prepare(&sql)
            .map_err(|e| sqlite_error(&self.path, e))?;
        let rows = stmt
            .query_map(params_from_iter(args), run_from_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| sqlite_error(&self.path, e))?;
        Ok(rows)
    }

    fn attempts(&mut self, dispatch_id: &str) -> Result<Vec<Attempt>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT dispatch_id, attempt, status, exit_code, started_at, finished_at,
                   duration_ms, stdout_tail, stderr_tail, worker
                 FROM attempts WHERE dispatch_id = ?1 ORDER BY attempt, rowid",
            )
            .map_err(|e| sqlite_error(&self.path, e))?;
        let rows = stmt
            .query_map([dispatch_id], |r| {
                Ok(Attempt {
                    dispatch_id: r.get(0)?,
                    attempt: r.get(1)?,
                    status: r.get(2)?,
                    exit_code: r.get(3)?,
                    started_at: opt_time(r.get(4)?),
                    finished_at: opt_time(r.get(5)?),
                    duration_ms: r.get::<_, i64>(6)?.max(0) as u64,
                    stdout_tail: r.get(7)?,
                    stderr_tail: r.get(8)?,
                    worker: r.get(9)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| sqlite_error(&self.path, e))?;
        Ok(rows)
    }

    fn alerts(&mut self, since: Option<DateTime<Utc>>, limit: usize) -> Result<Vec<Alert>> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT {ALERT_COLUMNS} FROM alerts a WHERE a.raised_at >= ?1
                 ORDER BY a.raised_at DESC, a.id LIMIT ?2"
            ))
            .map_err(|e| sqlite_error(&self.path, e))?;
        let rows = stmt
            .query_map(
                params![since.map_or(i64::MIN, ms), clamp_limit(limit)],
                |r| alert_from_row(r, 0),
            )
            .and_then(|rows| rows.collect())
            .map_err(|e| sqlite_error(&self.path, e))?;
        Ok(rows)
    }

    fn audit(
        &mut self,
        since: Option<DateTime<Utc>>,
        job: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEntry>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT at, who, what, job, reason, detail, topic, partition, offset FROM audit
                 WHERE at >= ?1 AND (?2 IS NULL OR job = ?2)
                 ORDER BY at DESC, rowid DESC LIMIT ?3",
            )
            .map_err(|e| sqlite_error(&self.path, e))?;
        let rows = stmt
            .query_map(
                params![since.map_or(i64::MIN, ms), job, clamp_limit(limit)],
                |r| {
                    let detail: String = r.get(5)?;
                    Ok(AuditEntry {
                        at: time(r.get(0)?),
                        who: r.get(1)?,
                        what: r.get(2)?,
                        job: r.get(3)?,
                        reason: r.get(4)?,
                        detail: serde_json::from_str(&detail).unwrap_or_default(),
                        topic: r.get(6)?,
                        partition: r.get(7)?,
                        offset: r.get(8)?,
                    })
                },
            )
            .and_then(|rows| rows.collect())
            .map_err(|e| sqlite_error(&self.path, e))?;
        Ok(rows)
    }

    fn size_bytes(&mut self) -> Result<u64> {
        let pages: i64 = self
            .conn
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .map_err(|e| sqlite_error(&self.path, e))?;
        let size: i64 = self
            .conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(|e| sqlite_error(&self.path, e))?;
        Ok((pages.max(0) * size.max(0)) as u64)
    }

    fn run(&mut self, dispatch_id: &str) -> Result<Option<Run>> {
        self.conn
            .prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE dispatch_id = ?1"
            ))
            .and_then(|mut stmt| stmt.query_row([dispatch_id], run_from_row).optional())
            .map_err(|e| sqlite_error(&self.path, e))
    }

    fn jobs(&mut self, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        // One index seek per job (runs_by_job_slot), not a scan of every run.
        let mut stmt = self
            .conn
            .prepare_cached(
                "WITH RECURSIVE names(job) AS (
                   SELECT (SELECT MIN(job) FROM runs WHERE job > ?1)
                   UNION ALL
                   SELECT (SELECT MIN(job) FROM runs WHERE job > names.job) FROM names
                   WHERE names.job IS NOT NULL
                 )
                 SELECT job FROM names WHERE job IS NOT NULL LIMIT ?2",
            )
            .map_err(|e| sqlite_error(&self.path, e))?;
        let rows = stmt
            .query_map(params![after.unwrap_or(""), clamp_limit(limit)], |r| {
                r.get(0)
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| sqlite_error(&self.path, e))?;
        Ok(rows)
    }

    fn failing(&mut self, limit: usize) -> Result<Vec<Run>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM runs r WHERE r.dispatch_id IN (
                   SELECT (SELECT dispatch_id FROM runs
                           WHERE job = t.job
                             AND state IN ('succeeded', 'failed', 'timed_out', 'dead_lettered')
                           ORDER BY slot DESC LIMIT 1)
                   FROM troubled_jobs t)
                 AND r.state != 'succeeded'
                 ORDER BY r.slot DESC, r.dispatch_id DESC LIMIT ?1"
            ))
            .map_err(|e| sqlite_error(&self.path, e))?;
        let rows = stmt
            .query_map([clamp_limit(limit)], run_from_row)
            .and_then(|rows| rows.collect())
            .map_err(|e| sqlite_error(&self.path, e))?;
        Ok(rows)
    }
}

impl Outbox for SqliteStore {
    type Error = StoreError;

    fn due(&mut self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Delivery>> {
        let mut stmt = self
            .conn
            .prepare(&format!(
                "SELECT o.webhook, o.attempts, o.queued_at, {ALERT_COLUMNS}
                 FROM outbox o JOIN alerts a ON a.id = o.alert_id
                 WHERE o.state = 'pending' AND o.next_try <= ?1
                 ORDER BY o.queued_at, o.alert_id, o.webhook LIMIT ?2"
            ))
            .map_err(|e| sqlite_error(&self.path, e))?;
        let rows = stmt
            .query_map(params![ms(now), clamp_limit(limit)], |r| {
                Ok(Delivery {
                    webhook: r.get::<_, i64>(0)?.max(0) as usize,
                    attempts: r.get(1)?,
                    queued_at: time(r.get(2)?),
                    alert: alert_from_row(r, 3)?,
                })
            })
            .and_then(|rows| rows.collect())
            .map_err(|e| sqlite_error(&self.path, e))?;
        Ok(rows)
    }

    fn delivered(&mut self, alert: &str, webhook: usize, at: DateTime<Utc>) -> Result<()> {
        self.conn
            .execute(
                "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, done_at = ?3,
                   last_error = NULL WHERE alert_id = ?1 AND webhook = ?2",
                params![alert, webhook as i64, ms(at)],
            )
            .map_err(|e| sqlite_error(&self.path, e))?;
        Ok(())
    }

    fn failed(
        &mut self,
        alert: &str,
        webhook: usize,
        error: &str,
        retry_at: DateTime<Utc>,
    ) -> Result<()> {
        self.conn
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, next_try = ?3, last_error = ?4
                 WHERE alert_id = ?1 AND webhook = ?2 AND state = 'pending'",
                params![alert, webhook as i64, ms(retry_at), error],
            )
            .map_err(|e| sqlite_error(&self.path, e))?;
        Ok(())
    }

    fn abandoned(&mut self, alert: &str, webhook: usize, error: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE outbox SET state = 'abandoned', attempts = attempts + 1, last_error = ?3,
                   done_at = next_try WHERE alert_id = ?1 AND webhook = ?2",
                params![alert, webhook as i64, error],
            )
            .map_err(|e| sqlite_error(&self.path, e))?;
        Ok(())
    }

    fn pending(&mut self) -> Result<u64> {
        let n: i64 = self
            .conn
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE state = 'pending'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| sqlite_error(&self.path, e))?;
        Ok(n.max(0) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::judge::tests::{at, jobs, message, result};
    use crate::wire::result::{DeadReason, Origin, Status};

    fn store() -> SqliteStore {
        SqliteStore::in_memory(Routes(vec![
            vec![AlertKind::Failed, AlertKind::Recovered],
            AlertKind::ALL.to_vec(),
        ]))
        .unwrap()
    }

    fn two_minutes(_: &str, slot: DateTime<Utc>, _: Option<&JobMessage>) -> DateTime<Utc> {
        slot + chrono::Duration::minutes(2)
    }

    fn source(offset: i64) -> Source {
        Source {
            topic: "jobs".into(),
            partition: 0,
            offset,
        }
    }

    fn failing_batch(slot: &str) -> Vec<Ingested> {
        let m = message("a", slot);
        let r1 = result("a", slot, 1, Status::Failed);
        let r2 = result("a", slot, 2, Status::Failed);
        vec![
            Ingested::Dispatched {
                message: m.clone(),
                at: at(slot),
                by: None,
                reason: None,
                source: source(0),
            },
            Ingested::Reported(r1),
            Ingested::Reported(r2.clone()),
            Ingested::DeadLettered(Box::new(DeadLetter {
                v: 1,
                reason: DeadReason::AttemptsExhausted,
                origin: Origin {
                    topic: "jobs".into(),
                    partition: 0,
                    offset: 0,
                },
                message: Some(m),
                last_result: Some(r2),
                raw: None,
                error: None,
                original: None,
                worker: "w1".into(),
            })),
        ]
    }

    fn count(store: &SqliteStore, sql: &str) -> i64 {
        store.conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn a_batch_applied_twice_adds_nothing_the_second_time_and_its_positions_commit_with_it() {
        let mut store = store();
        let slot = "2026-12-07T10:00:00Z";
        let positions = BTreeMap::from([(("jobs".to_string(), 0), 1), (("jobs.dlq".into(), 0), 1)]);
        let now = at("2026-12-07T10:00:30Z");
        let first = store
            .ingest(&failing_batch(slot), &positions, now, &two_minutes)
            .unwrap();
        assert_eq!(first.count(RunState::Failed), 1);
        assert_eq!(first.alerts, 1);
        let again = store
            .ingest(&failing_batch(slot), &positions, now, &two_minutes)
            .unwrap();
        assert_eq!(again.alerts, 0);
        assert_eq!(again.duplicates, 1);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM runs"), 1);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM attempts"), 2);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM alerts"), 1);
        // Both webhooks want `failed`.
        assert_eq!(count(&store, "SELECT COUNT(*) FROM outbox"), 2);
        assert_eq!(store.positions().unwrap(), positions);
        let run = &store
            .runs(&RunQuery {
                job: Some("a".into()),
                ..RunQuery::default()
            })
            .unwrap()[0];
        assert_eq!((run.state, run.attempts), (RunState::Failed, 2));
        assert_eq!(store.attempts(&run.dispatch_id).unwrap().len(), 2);
    }

    #[test]
    fn a_failed_batch_leaves_neither_its_rows_nor_its_positions() {
        let mut store = store();
        store
            .conn
            .execute_batch(
                "CREATE TRIGGER refuse BEFORE INSERT ON attempts BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
            )
            .unwrap();
        let positions = BTreeMap::from([(("jobs".to_string(), 0), 4)]);
        let slot = "2026-12-07T10:00:00Z";
        let err = store.ingest(
            &failing_batch(slot),
            &positions,
            at("2026-12-07T10:00:30Z"),
            &two_minutes,
        );
        assert!(err.is_err());
        assert_eq!(count(&store, "SELECT COUNT(*) FROM runs"), 0);
        assert!(store.positions().unwrap().is_empty());
    }

    #[test]
    fn late_missed_skipped_by_rule_and_recovered_come_from_the_judge_pass() {
        let mut store = store();
        let jobs = jobs(
            r#"{"jobs":[
              {"jobName":"a","job":"x","cronTime":"* * * * *"},
              {"jobName":"p","job":"x","cronTime":"* * * * *"}
            ]}"#,
        );
        let start = at("2026-12-07T10:00:00Z");
        assert_eq!(store.first_start(start).unwrap(), start);
        assert_eq!(
            store.first_start(at("2027-01-01T00:00:00Z")).unwrap(),
            start
        );
        let none = BTreeMap::new();
        // a@10:01 dispatched and never reported; p paused over 10:01-10:03.
        let pause = ControlRecord {
            v: 1,
            job: Some("p".into()),
            paused: true,
            reason: Some("INC-1".into()),
            since: at("2026-12-07T10:00:30Z"),
            until: None,
            drop_missed: false,
            by: "alice@ops".into(),
            at: at("2026-12-07T10:00:30Z"),
        };
        let batch = vec![
            Ingested::Dispatched {
                message: message("a", "2026-12-07T10:01:00Z"),
                at: at("2026-12-07T10:01:00Z"),
                by: None,
                reason: None,
                source: source(0),
            },
            Ingested::Control {
                record: pause,
                source: source(1),
            },
        ];
        store
            .ingest(&batch, &none, at("2026-12-07T10:01:01Z"), &two_minutes)
            .unwrap();
        let applied = store
            .judge(&Pass {
                now: at("2026-12-07T10:05:00Z"),
                missed_after: Duration::from_secs(180),
                jobs: &jobs,
            })
            .unwrap();
        // Judged up to 10:02: a@10:02 missed, a@10:01 late; p@10:01, 10:02 skipped by rule.
        assert_eq!(applied.count(RunState::Late), 1);
        assert_eq!(applied.count(RunState::Missed), 1);
        assert_eq!(applied.count(RunState::SkippedByRule), 2);
        let state_of = |store: &mut SqliteStore, job: &str| {
            store
                .runs(&RunQuery {
                    job: Some(job.into()),
                    ..RunQuery::default()
                })
                .unwrap()
                .iter()
                .map(|r| (r.slot.format("%M").to_string(), r.state))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            state_of(&mut store, "a"),
            [
                ("02".into(), RunState::Missed),
                ("01".into(), RunState::Late)
            ]
        );
        assert_eq!(
            state_of(&mut store, "p"),
            [
                ("02".into(), RunState::SkippedByRule),
                ("01".into(), RunState::SkippedByRule)
            ]
        );
        // A second pass at the same instant judges nothing again.
        let again = store
            .judge(&Pass {
                now: at("2026-12-07T10:05:00Z"),
                missed_after: Duration::from_secs(180),
                jobs: &jobs,
            })
            .unwrap();
        assert_eq!(again, Applied::default());
        // The late run ends in success: recovered, once.
        let ok = vec![Ingested::Reported(result(
            "a",
            "2026-12-07T10:01:00Z",
            1,
            Status::Succeeded,
        ))];
        let applied = store
            .ingest(&ok, &none, at("2026-12-07T10:06:00Z"), &two_minutes)
            .unwrap();
        assert_eq!(applied.alerts, 1);
        let kinds: Vec<AlertKind> = store
            .alerts(None, 100)
            .unwrap()
            .iter()
            .map(|a| a.kind)
            .collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == AlertKind::Recovered).count(),
            1
        );
        assert_eq!(kinds.len(), 3, "late, missed, recovered: {kinds:?}");
        let audit = store.audit(None, Some("p"), 10).unwrap();
        assert_eq!(audit.len(), 1);
        assert_eq!(
            (audit[0].what.as_str(), audit[0].who.as_str()),
            ("pause", "alice@ops")
        );
    }

    #[test]
    fn a_run_by_hand_is_marked_manual_and_audited_with_who_and_why() {
        let mut store = store();
        let mut m = message("a", "2026-12-07T10:00:07.123Z");
        m.dispatch_id = "a@2026-12-07T10:00:07.123Z#manual".into();
        let batch = [
            Ingested::Dispatched {
                message: m.clone(),
                at: at("2026-12-07T10:00:07.200Z"),
                by: Some("bob@ops-2".into()),
                reason: Some("INC-9 rerun".into()),
                source: source(7),
            },
            Ingested::Dispatched {
                message: m,
                at: at("2026-12-07T10:00:07.200Z"),
                by: None,
                reason: None,
                source: source(8),
            },
        ];
        store
            .ingest(
                &batch,
                &BTreeMap::new(),
                at("2026-12-07T10:00:08Z"),
                &two_minutes,
            )
            .unwrap();
        let runs = store.runs(&RunQuery::default()).unwrap();
        assert!(runs[0].manual);
        let audit = store.audit(None, Some("a"), 10).unwrap();
        assert_eq!(audit.len(), 1, "the re-sent record is no second trigger");
        assert_eq!(
            (
                audit[0].what.as_str(),
                audit[0].who.as_str(),
                audit[0].reason.as_deref()
            ),
            ("trigger", "bob@ops-2", Some("INC-9 rerun"))
        );
        assert_eq!(audit[0].offset, 7);
    }

    #[test]
    fn pruning_deletes_old_rows_in_chunks_and_keeps_pending_deliveries() {
        let mut store = store();
        let none = BTreeMap::new();
        for minute in 0..5 {
            let slot = format!("2026-12-07T10:0{minute}:00Z");
            store
                .ingest(&failing_batch(&slot), &none, at(&slot), &two_minutes)
                .unwrap();
        }
        let before = at("2026-12-07T10:03:00Z");
        assert_eq!(count(&store, "SELECT COUNT(*) FROM runs"), 5);
        // Chunks of 2: runs 10:00-10:02 go in two rounds.
        while store.prune(before, 2).unwrap() > 0 {}
        assert_eq!(count(&store, "SELECT COUNT(*) FROM runs"), 2);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM attempts"), 4);
        // Their alerts wait in the outbox: kept until delivered.
        assert_eq!(count(&store, "SELECT COUNT(*) FROM alerts"), 5);
        let due = store.due(at("2026-12-07T11:00:00Z"), 100).unwrap();
        assert_eq!(due.len(), 10);
        for d in &due {
            store
                .delivered(&d.alert.id, d.webhook, at("2026-12-07T11:00:00Z"))
                .unwrap();
        }
        assert_eq!(store.pending().unwrap(), 0);
        while store.prune(before, 2).unwrap() > 0 {}
        assert_eq!(count(&store, "SELECT COUNT(*) FROM alerts"), 2);
    }

    #[test]
    fn the_outbox_retries_failed_deliveries_when_their_time_comes() {
        let mut store = store();
        store
            .ingest(
                &failing_batch("2026-12-07T10:00:00Z"),
                &BTreeMap::new(),
                at("2026-12-07T10:00:00Z"),
                &two_minutes,
            )
            .unwrap();
        let now = at("2026-12-07T10:00:01Z");
        let due = store.due(now, 10).unwrap();
        assert_eq!(due.len(), 2);
        assert_eq!(due[0].alert.id, "failed:a@2026-12-07T10:00:00Z");
        store
            .failed(&due[0].alert.id, 0, "503", at("2026-12-07T10:01:00Z"))
            .unwrap();
        store.abandoned(&due[1].alert.id, 1, "410 Gone").unwrap();
        assert!(store.due(now, 10).unwrap().is_empty());
        let retry = store.due(at("2026-12-07T10:01:00Z"), 10).unwrap();
        assert_eq!((retry.len(), retry[0].attempts), (1, 1));
        assert_eq!(store.pending().unwrap(), 1);
    }

    #[test]
    fn failing_now_is_each_troubled_jobs_latest_outcome_unless_it_succeeded() {
        let mut store = store();
        let none = BTreeMap::new();
        let slot = "2026-12-07T10:00:00Z";
        store
            .ingest(&failing_batch(slot), &none, at(slot), &two_minutes)
            .unwrap();
        let failing = store.failing(10).unwrap();
        assert_eq!(failing.len(), 1);
        assert_eq!(
            (failing[0].job.as_str(), failing[0].state),
            ("a", RunState::Failed)
        );
        // A later success: recovered, no longer failing.
        let ok = "2026-12-07T10:01:00Z";
        let batch = [
            Ingested::Dispatched {
                message: message("a", ok),
                at: at(ok),
                by: None,
                reason: None,
                source: source(9),
            },
            Ingested::Reported(result("a", ok, 1, Status::Succeeded)),
        ];
        store.ingest(&batch, &none, at(ok), &two_minutes).unwrap();
        assert!(store.failing(10).unwrap().is_empty());
        assert_eq!(
            store
                .run("a@2026-12-07T10:01:00Z")
                .unwrap()
                .map(|r| r.state),
            Some(RunState::Succeeded)
        );
        assert_eq!(store.run("a@2026-12-07T09:00:00Z").unwrap(), None);
    }

    #[test]
    fn jobs_page_by_name() {
        let mut store = store();
        for job in ["c", "a", "b", "a"] {
            let slot = "2026-12-07T10:00:00Z";
            let batch = [Ingested::Dispatched {
                message: message(job, slot),
                at: at(slot),
                by: None,
                reason: None,
                source: source(0),
            }];
            store
                .ingest(&batch, &BTreeMap::new(), at(slot), &two_minutes)
                .unwrap();
        }
        assert_eq!(store.jobs(None, 2).unwrap(), ["a", "b"]);
        assert_eq!(store.jobs(Some("b"), 2).unwrap(), ["c"]);
        assert!(store.jobs(Some("c"), 2).unwrap().is_empty());
    }

    #[test]
    fn a_read_only_store_reads_what_another_connection_wrote_and_never_creates_a_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        assert!(matches!(
            SqliteStore::open_read_only(&path),
            Err(StoreError::Missing(_))
        ));
        let mut writer = SqliteStore::open(&path, Routes::default()).unwrap();
        let slot = "2026-12-07T10:00:00Z";
        writer
            .ingest(
                &failing_batch(slot),
                &BTreeMap::new(),
                at(slot),
                &two_minutes,
            )
            .unwrap();
        let mut reader = SqliteStore::open_read_only(&path).unwrap();
        assert_eq!(reader.runs(&RunQuery::default()).unwrap().len(), 1);
        assert!(
            reader.prune(at("2027-01-01T00:00:00Z"), 10).is_err(),
            "read-only"
        );
    }

    #[test]
    fn runs_page_by_cursor_newest_first() {
        let mut store = store();
        for minute in 0..5 {
            let slot = format!("2026-12-07T10:0{minute}:00Z");
            store
                .ingest(
                    &failing_batch(&slot),
                    &BTreeMap::new(),
                    at(&slot),
                    &two_minutes,
                )
                .unwrap();
        }
        let mut query = RunQuery {
            limit: 2,
            ..RunQuery::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = store.runs(&query).unwrap();
            let Some(last) = page.last() else { break };
            query.after = Some(SqliteStore::cursor(last));
            seen.extend(page.iter().map(|r| r.slot.format("%M").to_string()));
        }
        assert_eq!(seen, ["04", "03", "02", "01", "00"]);
        let since = store
            .runs(&RunQuery {
                since: Some(at("2026-12-07T10:03:00Z")),
                status: Some(RunState::Failed),
                ..RunQuery::default()
            })
            .unwrap();
        assert_eq!(since.len(), 2);
    }
}
