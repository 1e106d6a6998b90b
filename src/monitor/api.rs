//! The monitor's HTTP side on `--http`, beside /metrics and the probes: a read-only JSON API
//! (`/api/v1/…`, described by docs/openapi-monitor.json) and the pages ([`super::page`]).
//!
//! ```text
//!  GET /api/v1/runs?job=&status=&since=&limit=&after=   ┐
//!  GET /api/v1/jobs/{name}/runs  GET /api/v1/runs/{id}   │ token (--api-tokens) ─► parse ─► 400
//!  GET /api/v1/alerts  GET /api/v1/audit                 │            │
//!  GET /  GET /runs/{id}                                 ┘            ▼
//!                                   blocking pool: a read-only connection of its own (WAL: it
//!                                   reads while ingest writes) ─► JSON, or HTML
//! ```
//!
//! Access: with `--api-tokens FILE` (the jobs API's file and code, [`TokenFile`]) every API call
//! and page needs a token of either scope: `Authorization: Bearer <token>`, or HTTP Basic with
//! the token as the password (what a browser sends after its prompt). Without a file everything
//! is open, and the command line only allows that on a loopback address (or `--http-public`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::model::{Run, RunState};
use super::page::{self, IndexView, JOBS_PER_PAGE, STRIP_RUNS};
use super::store::{RunQuery, RunStore, SqliteStore, StoreError};
use crate::clock::Clock;
use crate::dispatcher::api::tokens::{self, TokenFile};

/// The OpenAPI document of the monitor's API.
const OPENAPI: &str = include_str!("../../docs/openapi-monitor.json");

/// The most items one call returns.
pub const MAX_LIMIT: usize = 1000;
/// Items a call returns without `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// Idle read connections kept between requests.
const IDLE_READERS: usize = 4;
/// Late and missed runs on the page: the last day's, at most this many.
const LATE_AND_MISSED_SHOWN: usize = 50;
/// Jobs under "Failing now", at most.
const FAILING_SHOWN: usize = 500;
/// Audit entries on the page.
const AUDIT_SHOWN: usize = 50;

/// A request the API refuses, or cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// A query parameter is wrong (400).
    #[error("{param}: {reason}")]
    BadParam {
        /// The parameter.
        param: String,
        /// Why.
        reason: String,
    },
    /// No such run (404).
    #[error("no run {0:?} in the monitor's history")]
    NoRun(String),
    /// The database cannot be read now (503): not created yet, or failing.
    #[error("the monitor's database cannot be read: {0}")]
    Unavailable(String),
}

impl ApiError {
    fn bad(param: &str, reason: impl Into<String>) -> ApiError {
        ApiError::BadParam {
            param: param.to_string(),
            reason: reason.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadParam { .. } => StatusCode::BAD_REQUEST,
            ApiError::NoRun(_) => StatusCode::NOT_FOUND,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.status(), &json!({ "error": self.to_string() }))
    }
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        serde_json::to_string(body).unwrap_or_default(),
    )
        .into_response()
}

// ---- query parameters (pure: unit-tested) ----

/// The query's parameters by name; a name given twice, or one `allowed` does not list, is a 400.
pub fn params(
    pairs: &[(String, String)],
    allowed: &[&str],
) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    for (name, value) in pairs {
        if !allowed.contains(&name.as_str()) {
            return Err(ApiError::bad(
                name,
                format!("unknown parameter (this call takes {})", allowed.join(", ")),
            ));
        }
        if out.insert(name.clone(), value.clone()).is_some() {
            return Err(ApiError::bad(name, "given twice"));
        }
    }
    Ok(out)
}

/// `since`: an RFC 3339 instant (`2026-12-07T10:00:00Z`), or a humantime span back from `now`
/// (`90m`, `1d`).
pub fn parse_since(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    humantime::parse_duration(text)
        .ok()
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .and_then(|d| now.checked_sub_signed(d))
        .ok_or_else(|| {
            ApiError::bad(
                "since",
                format!(
                    "{text:?} is neither an RFC 3339 instant (2026-12-07T10:00:00Z) nor a span back from now (90m, 1d)"
                ),
            )
        })
}

/// `limit`: 1-[`MAX_LIMIT`]; [`DEFAULT_LIMIT`] when not given.
pub fn parse_limit(text: Option<&str>) -> Result<usize, ApiError> {
    let Some(text) = text else {
        return Ok(DEFAULT_LIMIT);
    };
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::bad(
            "limit",
            format!("{text:?} is not a whole number in 1-{MAX_LIMIT}"),
        )),
    }
}

/// `status`: a run state.
pub fn parse_status(text: &str) -> Result<RunState, ApiError> {
    RunState::parse(text).ok_or_else(|| {
        let all: Vec<&str> = RunState::ALL.iter().map(|s| s.as_str()).collect();
        ApiError::bad(
            "status",
            format!("{text:?} is not one of {}", all.join(", ")),
        )
    })
}

/// `after`: the `next` of the page before (`<slot ms>:<dispatchId>`).
pub fn parse_after(text: &str) -> Result<String, ApiError> {
    match text.split_once(':') {
        Some((ms, id)) if ms.parse::<i64>().is_ok() && !id.is_empty() => Ok(text.to_string()),
        _ => Err(ApiError::bad(
            "after",
            format!("{text:?} is not a cursor: pass the `next` of the page before"),
        )),
    }
}

/// The query of `GET /api/v1/runs` (or, with `job` from the path, `GET /api/v1/jobs/{name}/runs`).
pub fn runs_query(
    pairs: &[(String, String)],
    job: Option<&str>,
    now: DateTime<Utc>,
) -> Result<RunQuery, ApiError> {
    let allowed: &[&str] = if job.is_some() {
        &["status", "since", "limit", "after"]
    } else {
        &["job", "status", "since", "limit", "after"]
    };
    let p = params(pairs, allowed)?;
    let job = match job {
        Some(job) => Some(job.to_string()),
        None => match p.get("job") {
            Some(j) if j.is_empty() => return Err(ApiError::bad("job", "empty")),
            other => other.cloned(),
        },
    };
    Ok(RunQuery {
        job,
        status: p.get("status").map(|s| parse_status(s)).transpose()?,
        since: p.get("since").map(|s| parse_since(s, now)).transpose()?,
        limit: parse_limit(p.get("limit").map(String::as_str))?,
        after: p.get("after").map(|a| parse_after(a)).transpose()?,
    })
}

// ---- access ----

/// Who may read: everyone, or the holders of a token of the file.
pub enum Access {
    /// No `--api-tokens`.
    Open,
    /// `--api-tokens FILE`: either scope reads.
    Tokens(TokenFile),
}

/// The token a request presents: `Bearer <token>`, or Basic with the token as the password.
fn presented(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = String::from_utf8(base64_decode(rest.trim())?).ok()?;
        return decoded.split_once(':').map(|(_, token)| token.to_string());
    }
    None
}

/// Standard base64 (with or without padding); `None` when it is not.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|&c| c != b'=') {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

impl Access {
    /// `Ok` when the request may read; otherwise the 401 (`page`: with a Basic challenge, so a
    /// browser asks for the token).
    #[allow(clippy::result_large_err)]
    fn check(&self, headers: &HeaderMap, page: bool) -> Result<(), Response> {
        let Access::Tokens(file) = self else {
            return Ok(());
        };
        let challenge = if page {
            "Basic realm=\"cronq monitor\", charset=\"UTF-8\""
        } else {
            "Bearer"
        };
        let refuse = |message: &str| {
            let mut r = json_response(StatusCode::UNAUTHORIZED, &json!({ "error": message }));
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
            r
        };
        let Some(token) = presented(headers) else {
            return Err(refuse(
                "no token: send Authorization: Bearer <token> (a read or write token of --api-tokens)",
            ));
        };
        // Either scope reads: the monitor has no writes.
        match tokens::find(&file.tokens(), &token) {
            Some(_) => Ok(()),
            None => Err(refuse("unknown token")),
        }
    }
}

// ---- reading the database ----

/// Read-only connections to the database, opened on first use and kept for the next request.
pub struct Readers {
    db: PathBuf,
    idle: Mutex<Vec<SqliteStore>>,
}

impl Readers {
    /// Readers of `db` (nothing is opened yet: the monitor may not have created it).
    pub fn new(db: PathBuf) -> Readers {
        Readers {
            db,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `read` on the blocking pool with a connection of its own.
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&mut SqliteStore) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let readers = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let idle = readers.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let mut store = match idle {
                Some(store) => store,
                None => SqliteStore::open_read_only(&readers.db).map_err(unavailable)?,
            };
            let result = read(&mut store);
            // A connection that failed is dropped, not kept.
            if !matches!(result, Err(ApiError::Unavailable(_))) {
                let mut idle = readers.idle.lock().unwrap_or_else(|e| e.into_inner());
                if idle.len() < IDLE_READERS {
                    idle.push(store);
                }
            }
            result
        })
        .await
        .map_err(|e| ApiError::Unavailable(format!("the reader stopped: {e}")))?
    }
}

fn unavailable(e: StoreError) -> ApiError {
    ApiError::Unavailable(e.to_string())
}

/// One page of runs and the cursor of the next: asks for one more than `limit`.
fn runs_page(store: &mut SqliteStore, mut query: RunQuery) -> Result<Value, ApiError> {
    let limit = query.limit;
    query.limit = limit + 1;
    let mut runs = store.runs(&query).map_err(unavailable)?;
    let next = if runs.len() > limit {
        runs.truncate(limit);
        runs.last().map(SqliteStore::cursor)
    } else {
        None
    };
    Ok(json!({
        "runs": runs.iter().map(Run::to_json).collect::<Vec<_>>(),
        "next": next,
    }))
}

/// What the status page shows, read in one go.
fn index_view(
    store: &mut SqliteStore,
    from: Option<String>,
    now: DateTime<Utc>,
) -> Result<IndexView, StoreError> {
    let day = now - chrono::Duration::days(1);
    let mut late_and_missed = Vec::new();
    for status in [RunState::Late, RunState::Missed] {
        late_and_missed.extend(store.runs(&RunQuery {
            status: Some(status),
            since: Some(day),
            limit: LATE_AND_MISSED_SHOWN,
            ..RunQuery::default()
        })?);
    }
    late_and_missed.sort_by(|a, b| (b.slot, &b.dispatch_id).cmp(&(a.slot, &a.dispatch_id)));
    late_and_missed.truncate(LATE_AND_MISSED_SHOWN);
    let mut names = store.jobs(from.as_deref(), JOBS_PER_PAGE + 1)?;
    let next_from = if names.len() > JOBS_PER_PAGE {
        names.truncate(JOBS_PER_PAGE);
        names.last().cloned()
    } else {
        None
    };
    let mut jobs = Vec::with_capacity(names.len());
    for job in names {
        let runs = store.runs(&RunQuery {
            job: Some(job.clone()),
            limit: STRIP_RUNS,
            ..RunQuery::default()
        })?;
        jobs.push((job, runs));
    }
    Ok(IndexView {
        now,
        failing: store.failing(FAILING_SHOWN)?,
        late_and_missed,
        jobs,
        from,
        next_from,
        audit: store.audit(None, None, AUDIT_SHOWN)?,
    })
}

// ---- routes ----

/// What the handlers share.
struct Shared {
    access: Access,
    readers: Arc<Readers>,
    clock: Arc<dyn Clock>,
}

type AppState = State<Arc<Shared>>;

/// The API and the pages, for the `--http` server ([`crate::obs::http::Server::start_with_page`]).
pub fn router(db: PathBuf, access: Access, clock: Arc<dyn Clock>) -> Router {
    let shared = Arc::new(Shared {
        access,
        readers: Arc::new(Readers::new(db)),
        clock,
    });
    Router::new()
        .route("/", get(index))
        .route("/runs/{id}", get(run_page))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/runs", get(runs))
        .route("/api/v1/runs/{id}", get(run_detail))
        .route("/api/v1/jobs/{name}/runs", get(job_runs))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/audit", get(audit))
        .with_state(shared)
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return e.into_response(),
        }
    };
}

type Pairs = Query<Vec<(String, String)>>;

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

async fn runs(State(s): AppState, headers: HeaderMap, Query(pairs): Pairs) -> Response {
    tri!(s.access.check(&headers, false));
    let query = tri!(runs_query(&pairs, None, s.clock.now()));
    let page = tri!(s.readers.read(move |store| runs_page(store, query)).await);
    json_response(StatusCode::OK, &page)
}

async fn job_runs(
    State(s): AppState,
    headers: HeaderMap,
    Path(name): Path<String>,
    Query(pairs): Pairs,
) -> Response {
    tri!(s.access.check(&headers, false));
    let query = tri!(runs_query(&pairs, Some(&name), s.clock.now()));
    let page = tri!(s.readers.read(move |store| runs_page(store, query)).await);
    json_response(StatusCode::OK, &page)
}

async fn run_detail(State(s): AppState, headers: HeaderMap, Path(id): Path<String>) -> Response {
    tri!(s.access.check(&headers, false));
    let body = tri!(
        s.readers
            .read(move |store| {
                let run = store
                    .run(&id)
                    .map_err(unavailable)?
                    .ok_or_else(|| ApiError::NoRun(id.clone()))?;
                let attempts = store.attempts(&id).map_err(unavailable)?;
                let mut body = run.to_json();
                if let Some(object) = body.as_object_mut() {
                    object.insert("attempts".into(), json!(attempts));
                }
                Ok(body)
            })
            .await
    );
    json_response(StatusCode::OK, &body)
}

async fn alerts(State(s): AppState, headers: HeaderMap, Query(pairs): Pairs) -> Response {
    tri!(s.access.check(&headers, false));
    let p = tri!(params(&pairs, &["since", "limit"]));
    let since = tri!(p
        .get("since")
        .map(|t| parse_since(t, s.clock.now()))
        .transpose());
    let limit = tri!(parse_limit(p.get("limit").map(String::as_str)));
    let alerts = tri!(
        s.readers
            .read(move |store| store.alerts(since, limit).map_err(unavailable))
            .await
    );
    let alerts: Vec<Value> = alerts.iter().map(|a| a.to_json()).collect();
    json_response(StatusCode::OK, &json!({ "alerts": alerts }))
}

async fn audit(State(s): AppState, headers: HeaderMap, Query(pairs): Pairs) -> Response {
    tri!(s.access.check(&headers, false));
    let p = tri!(params(&pairs, &["since", "job", "limit"]));
    let since = tri!(p
        .get("since")
        .map(|t| parse_since(t, s.clock.now()))
        .transpose());
    let limit = tri!(parse_limit(p.get("limit").map(String::as_str)));
    let job = p.get("job").cloned();
    let entries = tri!(
        s.readers
            .read(move |store| store
                .audit(since, job.as_deref(), limit)
                .map_err(unavailable))
            .await
    );
    json_response(StatusCode::OK, &json!({ "audit": entries }))
}

fn html(status: StatusCode, body: String) -> Response {
    (status, [(header::CACHE_CONTROL, "no-store")], Html(body)).into_response()
}

async fn index(State(s): AppState, headers: HeaderMap, Query(pairs): Pairs) -> Response {
    tri!(s.access.check(&headers, true));
    let p = tri!(params(&pairs, &["from"]));
    let from = p.get("from").cloned().filter(|f| !f.is_empty());
    let now = s.clock.now();
    let view = tri!(
        s.readers
            .read(move |store| index_view(store, from, now).map_err(unavailable))
            .await
    );
    html(StatusCode::OK, page::index(&view))
}

async fn run_page(State(s): AppState, headers: HeaderMap, Path(id): Path<String>) -> Response {
    tri!(s.access.check(&headers, true));
    let found = tri!(
        s.readers
            .read(move |store| {
                let run = store.run(&id).map_err(unavailable)?;
                match run {
                    Some(run) => {
                        let attempts = store.attempts(&id).map_err(unavailable)?;
                        Ok(Ok((run, attempts)))
                    }
                    None => Ok(Err(id)),
                }
            })
            .await
    );
    match found {
        Ok((run, attempts)) => html(StatusCode::OK, page::run(&run, &attempts)),
        Err(id) => html(StatusCode::NOT_FOUND, page::no_run(&id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn now() -> DateTime<Utc> {
        "2026-12-07T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn runs_parameters_parse_into_a_query() {
        let q = runs_query(
            &pairs(&[
                ("job", "nightly"),
                ("status", "timed_out"),
                ("since", "90m"),
                ("limit", "1000"),
                ("after", "1765108800000:nightly@2026-12-07T12:00:00Z"),
            ]),
            None,
            now(),
        )
        .unwrap();
        assert_eq!(q.job.as_deref(), Some("nightly"));
        assert_eq!(q.status, Some(RunState::TimedOut));
        assert_eq!(q.since, Some("2026-12-07T10:30:00Z".parse().unwrap()));
        assert_eq!(q.limit, 1000);
        assert!(q.after.is_some());
        let q = runs_query(
            &pairs(&[("since", "2026-12-01T00:00:00+01:00")]),
            None,
            now(),
        )
        .unwrap();
        assert_eq!(q.since, Some("2026-11-30T23:00:00Z".parse().unwrap()));
        assert_eq!(q.limit, DEFAULT_LIMIT);
    }

    #[test]
    fn bad_parameters_are_400_with_a_message_naming_the_parameter() {
        for (list, says) in [
            (
                vec![("limit", "0")],
                "limit: \"0\" is not a whole number in 1-1000",
            ),
            (
                vec![("limit", "1001")],
                "limit: \"1001\" is not a whole number in 1-1000",
            ),
            (
                vec![("status", "boom")],
                "status: \"boom\" is not one of dispatched",
            ),
            (
                vec![("since", "yesterday")],
                "since: \"yesterday\" is neither an RFC 3339",
            ),
            (vec![("after", "nope")], "after: \"nope\" is not a cursor"),
            (vec![("limit", "1"), ("limit", "2")], "limit: given twice"),
            (
                vec![("jobs", "a")],
                "jobs: unknown parameter (this call takes job, status",
            ),
        ] {
            let err = runs_query(&pairs(&list), None, now()).unwrap_err();
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
            assert!(err.to_string().starts_with(says), "{list:?}: {err}");
        }
        // The job of /jobs/{name}/runs comes from the path only.
        let err = runs_query(&pairs(&[("job", "b")]), Some("a"), now()).unwrap_err();
        assert!(
            err.to_string().starts_with("job: unknown parameter"),
            "{err}"
        );
    }

    #[test]
    fn a_token_is_read_from_bearer_or_from_basics_password() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer t-1"),
        );
        assert_eq!(presented(&headers).as_deref(), Some("t-1"));
        // "ops:s3cret:x" in base64.
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic b3BzOnMzY3JldDp4"),
        );
        assert_eq!(presented(&headers).as_deref(), Some("s3cret:x"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!"));
        assert_eq!(presented(&headers), None);
        assert_eq!(base64_decode("YWI=").as_deref(), Some(&b"ab"[..]));
        assert_eq!(base64_decode("YWJj").as_deref(), Some(&b"abc"[..]));
    }

    #[test]
    fn the_openapi_document_lists_every_route() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        for path in [
            "/api/v1/runs",
            "/api/v1/jobs/{name}/runs",
            "/api/v1/runs/{dispatchId}",
            "/api/v1/alerts",
            "/api/v1/audit",
        ] {
            assert!(doc["paths"][path]["get"].is_object(), "{path}");
        }
    }
}
