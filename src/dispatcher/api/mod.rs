//! The jobs API (`cronq run --schedule-topic --api-tokens FILE`): applications create, replace,
//! read, list and delete the jobs of the group's schedule topic over HTTP, on the `--http` server.
//!
//! ```text
//!  client ──► any member ──► token (401/403), rate (429), body size (413)
//!                 │ the job's shard = murmur2(jobName) mod S
//!                 ├─ owned here ──► checked as `validate` checks a file's job (422)
//!                 │                 ──► the shard's write lock ──► If-Match against Versions (412)
//!                 │                 ──► one record, acks=all ──► {"jobName","version"} + ETag
//!                 └─ another member's ──► forwarded to its apiUrl (cursor records), with
//!                                         X-Cronq-Forwarded: 1; a forwarded request for a shard
//!                                         not owned is 503 + Retry-After (never forwarded again)
//!  GET reads the job's record back from Kafka at its version (one fetch): no job body is kept.
//!  list: each owner's names (Versions), gathered from every owner, merged by name.
//! ```
//!
//! [`Front`] is what the HTTP server holds from the start (tokens, limits); [`core::Core`], the
//! Kafka side, is handed to it once the member has joined its group; until then the API answers
//! 503.

pub mod book;
pub mod core;
pub mod limits;
pub mod tokens;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chrono::Utc;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use self::book::Lookup;
use self::core::Core;
use self::limits::{parse_if_match, IfMatch, RateLimiter};
use self::tokens::{Scope, TokenFile, TokenFileError};
use crate::schedule::file::RawObject;
use crate::schedule::load::check_entries;
use crate::schedule::Problem;
use crate::store::{self, plan::compact};
use crate::wire::schedule::{Changed, ScheduleRecord, VIA_API};

/// The OpenAPI document of the API, served at `/api/v1/openapi.json`.
pub const OPENAPI: &str = include_str!("../../../docs/openapi.json");

/// The header a member adds to a request it forwards.
pub const FORWARDED: &str = "x-cronq-forwarded";

/// The most operations of one batch.
pub const MAX_BATCH_OPS: usize = 10_000;

/// Default and largest `limit` of a list.
pub const LIST_LIMIT: (usize, usize) = (100, 1000);

/// Default and largest `n` of the next runs.
pub const NEXT_COUNT: (usize, usize) = (5, 100);

/// The API's settings from the command line.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// `--api-tokens`.
    pub tokens: PathBuf,
    /// `--api-rate`: requests a second per token.
    pub rate: u32,
    /// `--api-max-body`: bytes of a single job's body.
    pub max_body: usize,
    /// `--api-max-batch-body`: bytes of a batch's body.
    pub max_batch_body: usize,
}

/// Why the API cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The token file cannot be used.
    #[error("--api-tokens: {0}")]
    Tokens(#[from] TokenFileError),
}

/// What the HTTP server holds: tokens, limits, and the Kafka side once the member runs.
pub struct Front {
    tokens: TokenFile,
    rate: RateLimiter,
    max_body: usize,
    max_batch_body: usize,
    advertise: OnceLock<String>,
    core: OnceLock<Arc<Core>>,
}

impl std::fmt::Debug for Front {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Front")
            .field("tokens", &self.tokens.path())
            .field("advertise", &self.advertise.get())
            .finish_non_exhaustive()
    }
}

impl Front {
    /// Reads the token file (an error at start when it cannot be used).
    pub fn open(settings: &ApiSettings) -> Result<Arc<Front>, ApiError> {
        Ok(Arc::new(Front {
            tokens: TokenFile::open(&settings.tokens)?,
            rate: RateLimiter::new(settings.rate),
            max_body: settings.max_body,
            max_batch_body: settings.max_batch_body,
            advertise: OnceLock::new(),
            core: OnceLock::new(),
        }))
    }

    /// The URL the other members forward to (set once, when the server has its port).
    pub fn set_advertise_url(&self, url: String) {
        let _ = self.advertise.set(url.trim_end_matches('/').to_string());
    }

    /// The URL this member advertises in its cursor records.
    pub fn advertise_url(&self) -> Option<String> {
        self.advertise.get().cloned()
    }

    /// Hands the API its Kafka side: it serves from now on.
    pub fn start(&self, core: Core) {
        if self.core.set(Arc::new(core)).is_ok() {
            tracing::info!(message = "jobs API serving", url = %self.advertise.get().map_or("", String::as_str), tokens = %self.tokens.path().display());
        }
    }

    /// The routes of the API, for the `--http` server.
    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/api/v1/openapi.json", get(openapi))
            .route("/api/v1/jobs", get(list_jobs))
            .route("/api/v1/jobs:batch", axum::routing::post(batch))
            .route(
                "/api/v1/jobs/{name}",
                get(get_job).put(put_job).delete(delete_job),
            )
            .route("/api/v1/jobs/{name}/next", get(next_runs))
            .with_state(Arc::clone(self))
    }

    /// The token's name, or the refusal: 401 without a known token, 403 for a read token on a
    /// write, 429 past the token's rate.
    #[allow(clippy::result_large_err)]
    fn authorize(&self, headers: &HeaderMap, write: bool) -> Result<String, Response> {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(presented) = presented else {
            return Err(unauthorized(
                "Bearer",
                "no token: send Authorization: Bearer <token>",
            ));
        };
        let tokens = self.tokens.tokens();
        let Some(token) = tokens::find(&tokens, presented) else {
            return Err(unauthorized(
                "Bearer error=\"invalid_token\"",
                "unknown token",
            ));
        };
        if write && token.scope == Scope::Read {
            return Err(error(
                StatusCode::FORBIDDEN,
                &format!(
                    "token {:?} has the read scope: writes need a write token",
                    token.name
                ),
            ));
        }
        if let Err(wait) = self.rate.take(&token.name, Instant::now()) {
            let mut r = error(
                StatusCode::TOO_MANY_REQUESTS,
                &format!(
                    "token {:?} is over its rate (--api-rate requests a second)",
                    token.name
                ),
            );
            let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return Err(r);
        }
        Ok(token.name.clone())
    }

    #[allow(clippy::result_large_err)]
    fn core(&self) -> Result<Arc<Core>, Response> {
        self.core.get().cloned().ok_or_else(|| {
            unavailable("the member has not joined its group yet: try again in a moment")
        })
    }
}

// ---- responses ----

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::to_string(body).unwrap_or_default(),
    )
        .into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
}

fn unauthorized(challenge: &'static str, message: &str) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, message);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    r
}

fn unavailable(message: &str) -> Response {
    let mut r = error(StatusCode::SERVICE_UNAVAILABLE, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

fn with_etag(mut r: Response, version: i64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

fn invalid(problems: Vec<Value>) -> Response {
    json_response(
        StatusCode::UNPROCESSABLE_ENTITY,
        &json!({ "error": "invalid job", "problems": problems }),
    )
}

fn problem(path: &str, message: &str) -> Value {
    json!({ "path": path, "message": message })
}

/// A checker problem as the API words it: the field path and `validate`'s message.
fn problem_of(p: &Problem, prefix: &str) -> Value {
    let field = p.field.as_deref().unwrap_or("");
    let path = match (prefix.is_empty(), field.is_empty()) {
        (true, _) => field.to_string(),
        (false, true) => prefix.to_string(),
        (false, false) => format!("{prefix}.{field}"),
    };
    problem(&path, &p.message)
}

fn kafka_failed(e: impl std::fmt::Display) -> Response {
    tracing::warn!(message = "jobs API request failed on Kafka", error = %e);
    unavailable(&format!("the schedule topic cannot be used right now: {e}"))
}

// ---- bodies ----

#[allow(clippy::result_large_err)]
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    flag: &str,
) -> Result<Bytes, Response> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the body is larger than {limit} bytes ({flag})"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Far over the limit: refused unread. Just over: read to the limit first, so that a client
    // that writes its whole body before reading gets the 413 rather than a broken pipe.
    if declared.is_some_and(|n| n > 2 * limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large())
}

/// A job body as the record's `spec`: compacted, with the URL's `name` as its `jobName` (filled
/// in when absent; a different one is a problem).
fn prepare_spec(name: &str, body: &[u8], prefix: &str) -> Result<Box<RawValue>, Vec<Value>> {
    let at = |field: &str| {
        if prefix.is_empty() {
            field.to_string()
        } else if field.is_empty() {
            prefix.to_string()
        } else {
            format!("{prefix}.{field}")
        }
    };
    let text =
        std::str::from_utf8(body).map_err(|_| vec![problem(&at(""), "the body is not UTF-8")])?;
    let fields: RawObject<'_> = serde_json::from_str(text).map_err(|e| {
        vec![problem(
            &at(""),
            &format!("the body must be one job object, as a schedule file's jobs entry: {e}"),
        )]
    })?;
    let compacted = compact(text);
    let spec = match fields.get("jobName") {
        Some(raw) => match serde_json::from_str::<String>(raw.get()) {
            Ok(given) if given != name => {
                return Err(vec![problem(
                    &at("jobName"),
                    &format!("{given:?} is not the job of the URL, {name:?}"),
                )])
            }
            _ => compacted,
        },
        None => {
            let name_json = serde_json::to_string(name).unwrap_or_default();
            let rest = compacted.trim_start_matches('{');
            if rest.trim_start().starts_with('}') {
                format!("{{\"jobName\":{name_json}}}")
            } else {
                format!("{{\"jobName\":{name_json},{rest}")
            }
        }
    };
    RawValue::from_string(spec).map_err(|e| vec![problem(&at(""), &e.to_string())])
}

/// Checks `spec` as `validate` checks a file's job.
fn check(core: &Core, spec: &RawValue, prefix: &str) -> Result<crate::schedule::Job, Vec<Value>> {
    match check_entries(&[spec], &core.options).pop() {
        Some(Ok(job)) => Ok(job),
        Some(Err(problems)) => Err(problems.iter().map(|p| problem_of(p, prefix)).collect()),
        None => Err(vec![problem(prefix, "not checked")]),
    }
}

/// `If-Match`, if any; a malformed one is a 400.
#[allow(clippy::result_large_err)]
fn if_match(headers: &HeaderMap) -> Result<Option<IfMatch>, Response> {
    match headers.get(header::IF_MATCH) {
        None => Ok(None),
        Some(v) => {
            let text = v.to_str().unwrap_or("");
            parse_if_match(text)
                .map(Some)
                .map_err(|e| error(StatusCode::BAD_REQUEST, &format!("If-Match: {e}")))
        }
    }
}

fn precondition_failed(current: Option<i64>) -> Response {
    let r = json_response(
        StatusCode::PRECONDITION_FAILED,
        &json!({
            "error": "the job's version is not the one If-Match names",
            "version": current.map(|v| v.to_string()),
        }),
    );
    match current {
        Some(v) => with_etag(r, v),
        None => r,
    }
}

// ---- routing between members ----

enum Route {
    Local,
    Forward(String),
}

fn forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED)
}

/// Where a request for `shard` is served.
#[allow(clippy::result_large_err)]
async fn route(
    front: &Front,
    core: &Core,
    shard: u32,
    headers: &HeaderMap,
) -> Result<Route, Response> {
    if core.versions.owned().contains(&shard) {
        return Ok(Route::Local);
    }
    if forwarded(headers) {
        return Err(unavailable(&format!(
            "shard {shard} is not this member's (any more): a forwarded request is not forwarded again"
        )));
    }
    match core.owner_url(shard).await {
        Some(url) if Some(&url) != front.advertise.get() => Ok(Route::Forward(url)),
        _ => Err(unavailable(&format!(
            "shard {shard} has no owner with the API on right now (a rebalance?)"
        ))),
    }
}

/// Sends the request on to `base` (the owner's API), the client's token with it.
async fn forward(
    core: &Core,
    base: &str,
    method: Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Response {
    let mut out = HeaderMap::new();
    for name in [
        header::AUTHORIZATION,
        header::IF_MATCH,
        header::CONTENT_TYPE,
    ] {
        if let Some(v) = headers.get(&name) {
            out.insert(name, v.clone());
        }
    }
    out.insert(FORWARDED, HeaderValue::from_static("1"));
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let url = format!("{base}{path}");
    let started = Instant::now();
    match core.http.send(method, &url, &out, body).await {
        Ok(reply) => {
            tracing::debug!(message = "jobs API request forwarded", url = %url, status = reply.status.as_u16(), took_ms = started.elapsed().as_millis() as u64);
            let mut r = (reply.status, reply.body).into_response();
            for name in [
                header::CONTENT_TYPE,
                header::ETAG,
                header::RETRY_AFTER,
                header::WWW_AUTHENTICATE,
            ] {
                if let Some(v) = reply.headers.get(&name) {
                    r.headers_mut().insert(name, v.clone());
                }
            }
            r
        }
        Err(e) => {
            tracing::warn!(message = "cannot forward a jobs API request to the shard's owner", url = %url, error = %e);
            unavailable(&format!(
                "the shard's owner at {base} cannot be reached: {e}"
            ))
        }
    }
}

// ---- handlers ----

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(r) => return r,
        }
    };
}

async fn put_job(
    State(front): State<Arc<Front>>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let by = tri!(front.authorize(&headers, true));
    let bytes = tri!(read_body(&headers, body, front.max_body, "--api-max-body").await);
    let core = tri!(front.core());
    let shard = core.shard_of(&name);
    match tri!(route(&front, &core, shard, &headers).await) {
        Route::Forward(base) => return forward(&core, &base, method, &uri, &headers, bytes).await,
        Route::Local => {}
    }
    let spec = tri!(prepare_spec(&name, &bytes, "").map_err(invalid));
    let job = tri!(check(&core, &spec, "").map_err(invalid));
    let wanted = tri!(if_match(&headers));
    let _writing = core.lock_shard(shard).await;
    let current = match core.versions.get(shard, &name) {
        Lookup::At(v) => Some(v),
        Lookup::Absent => None,
        Lookup::NotOwned => {
            return unavailable(&format!("shard {shard} was just handed over: try again"))
        }
    };
    if let Some(wanted) = &wanted {
        if !wanted.holds(current) {
            return precondition_failed(current);
        }
    }
    let changed = Changed {
        at: Utc::now(),
        by,
        via: VIA_API.to_string(),
        source: None,
    };
    let value = ScheduleRecord::encode(&spec, &changed);
    match core
        .write_one(&name, Some(value), Some((job, changed.clone())))
        .await
    {
        Ok(version) => {
            core.versions.acked(shard, &name, version, true);
            let status = if current.is_some() {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            tracing::info!(message = "job written through the API", job = %name, shard, version, by = %changed.by, created = current.is_none());
            with_etag(
                json_response(
                    status,
                    &json!({ "jobName": name, "version": version.to_string() }),
                ),
                version,
            )
        }
        Err(e) => kafka_failed(e),
    }
}

async fn delete_job(
    State(front): State<Arc<Front>>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let by = tri!(front.authorize(&headers, true));
    let core = tri!(front.core());
    let shard = core.shard_of(&name);
    match tri!(route(&front, &core, shard, &headers).await) {
        Route::Forward(base) => {
            return forward(&core, &base, method, &uri, &headers, Bytes::new()).await
        }
        Route::Local => {}
    }
    let wanted = tri!(if_match(&headers));
    let _writing = core.lock_shard(shard).await;
    let current = match core.versions.get(shard, &name) {
        Lookup::At(v) => v,
        Lookup::Absent => return error(StatusCode::NOT_FOUND, &format!("no job {name:?}")),
        Lookup::NotOwned => {
            return unavailable(&format!("shard {shard} was just handed over: try again"))
        }
    };
    if let Some(wanted) = &wanted {
        if !wanted.holds(Some(current)) {
            return precondition_failed(Some(current));
        }
    }
    match core.write_one(&name, None, None).await {
        Ok(version) => {
            core.versions.acked(shard, &name, version, false);
            tracing::info!(message = "job deleted through the API", job = %name, shard, version, by = %by);
            with_etag(
                json_response(
                    StatusCode::OK,
                    &json!({ "jobName": name, "version": version.to_string() }),
                ),
                version,
            )
        }
        Err(e) => kafka_failed(e),
    }
}

/// The job's record at its version, read back from Kafka; or the response that says why not.
#[allow(clippy::result_large_err)]
async fn read_job(core: &Core, shard: u32, name: &str) -> Result<(i64, ScheduleRecord), Response> {
    let version = match core.versions.get(shard, name) {
        Lookup::At(v) => v,
        Lookup::Absent => return Err(error(StatusCode::NOT_FOUND, &format!("no job {name:?}"))),
        Lookup::NotOwned => {
            return Err(unavailable(&format!(
                "shard {shard} was just handed over: try again"
            )))
        }
    };
    match core.read_one(name, version).await {
        Ok(record) => Ok((version, record)),
        Err(e) => Err(kafka_failed(e)),
    }
}

async fn get_job(
    State(front): State<Arc<Front>>,
    Path(name): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    tri!(front.authorize(&headers, false));
    let core = tri!(front.core());
    let shard = core.shard_of(&name);
    match tri!(route(&front, &core, shard, &headers).await) {
        Route::Forward(base) => {
            return forward(&core, &base, method, &uri, &headers, Bytes::new()).await
        }
        Route::Local => {}
    }
    let (version, record) = tri!(read_job(&core, shard, &name).await);
    let job: Value = serde_json::from_str(record.spec.get()).unwrap_or(Value::Null);
    with_etag(
        json_response(
            StatusCode::OK,
            &json!({
                "jobName": name,
                "version": version.to_string(),
                "job": job,
                "changed": record.changed,
            }),
        ),
        version,
    )
}

#[derive(Debug, Deserialize)]
struct NextQuery {
    n: Option<String>,
}

/// A count parameter (`n`, `limit`): `(default, max)` when absent; 400 unless a whole number in
/// 1-max.
#[allow(clippy::result_large_err)]
fn count_param(
    name: &str,
    value: Option<&str>,
    (default, max): (usize, usize),
) -> Result<usize, Response> {
    match value.map(str::parse::<usize>) {
        None => Ok(default),
        Some(Ok(n)) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("{name}: a whole number in 1-{max}"),
        )),
    }
}

async fn next_runs(
    State(front): State<Arc<Front>>,
    Path(name): Path<String>,
    Query(query): Query<NextQuery>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    tri!(front.authorize(&headers, false));
    let n = tri!(count_param("n", query.n.as_deref(), NEXT_COUNT));
    let core = tri!(front.core());
    let shard = core.shard_of(&name);
    match tri!(route(&front, &core, shard, &headers).await) {
        Route::Forward(base) => {
            return forward(&core, &base, method, &uri, &headers, Bytes::new()).await
        }
        Route::Local => {}
    }
    let (version, record) = tri!(read_job(&core, shard, &name).await);
    let job = match check(&core, &record.spec, "") {
        Ok(job) => job,
        Err(problems) => {
            return json_response(
                StatusCode::CONFLICT,
                &json!({"error": "the job's newest record does not pass the checks (its last good version is in force)", "problems": problems}),
            )
        }
    };
    let next = next_instants(&job, Utc::now(), n);
    with_etag(
        json_response(
            StatusCode::OK,
            &json!({
                "jobName": name,
                "version": version.to_string(),
                "enabled": job.spec.enabled,
                "next": next,
            }),
        ),
        version,
    )
}

/// The next `n` runs of `job` after `now`, as `cronq validate` computes a job's next run (its
/// compiled schedule's next instant), in RFC 3339 in the job's zone (`Z` for UTC).
fn next_instants(job: &crate::schedule::Job, now: chrono::DateTime<Utc>, n: usize) -> Vec<String> {
    use chrono::{Datelike, SecondsFormat};
    if !job.spec.enabled {
        return Vec::new();
    }
    let tz = job.expr.tz();
    let mut out = Vec::with_capacity(n);
    let mut after = now;
    while out.len() < n {
        match job.expr.next_after(after) {
            Some(t) if t.with_timezone(&tz).year() <= 9999 => {
                // An `at` job's run is its own second (its slot is the minute containing it).
                let run = job.spec.at().unwrap_or(t);
                out.push(if tz == chrono_tz::Tz::UTC {
                    run.to_rfc3339_opts(SecondsFormat::Secs, true)
                } else {
                    run.with_timezone(&tz)
                        .to_rfc3339_opts(SecondsFormat::Secs, false)
                });
                after = t;
            }
            _ => break,
        }
    }
    out
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    prefix: Option<String>,
    after: Option<String>,
    limit: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ListReply {
    jobs: Vec<ListEntry>,
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ListEntry {
    #[serde(rename = "jobName")]
    job_name: String,
    version: String,
}

async fn list_jobs(
    State(front): State<Arc<Front>>,
    Query(query): Query<ListQuery>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    tri!(front.authorize(&headers, false));
    let limit = tri!(count_param("limit", query.limit.as_deref(), LIST_LIMIT));
    let core = tri!(front.core());
    let prefix = query.prefix.unwrap_or_default();
    let after = query.after.filter(|a| !a.is_empty());
    let (mut jobs, mut more) = core.versions.list(&prefix, after.as_deref(), limit);
    if !forwarded(&headers) {
        // Every other shard's owner lists its own; a shard without one makes the list incomplete.
        let owned = core.versions.owned();
        let mut owners: Vec<String> = Vec::new();
        for shard in (0..core.shards).filter(|s| !owned.contains(s)) {
            match core.owner_url(shard).await {
                Some(url) if Some(&url) != front.advertise.get() => {
                    if !owners.contains(&url) {
                        owners.push(url);
                    }
                }
                _ => {
                    return unavailable(&format!(
                        "shard {shard} has no owner with the API on right now: the list would be incomplete"
                    ))
                }
            }
        }
        let asked = owners
            .iter()
            .map(|base| forward(&core, base, Method::GET, &uri, &headers, Bytes::new()));
        for reply in futures_util::future::join_all(asked).await {
            if reply.status() != StatusCode::OK {
                return reply;
            }
            let body = match axum::body::to_bytes(reply.into_body(), 64 << 20).await {
                Ok(b) => b,
                Err(e) => return unavailable(&format!("reading another member's list: {e}")),
            };
            let Ok(theirs) = serde_json::from_slice::<ListReply>(&body) else {
                return unavailable("another member's list does not read");
            };
            more |= theirs.next.is_some();
            jobs.extend(
                theirs
                    .jobs
                    .into_iter()
                    .filter_map(|j| Some((j.job_name, j.version.parse().ok()?))),
            );
        }
        jobs.sort();
        jobs.dedup_by(|a, b| a.0 == b.0);
        if jobs.len() > limit {
            more = true;
            jobs.truncate(limit);
        }
    }
    let next = if more {
        jobs.last().map(|(n, _)| n.clone())
    } else {
        None
    };
    let jobs: Vec<Value> = jobs
        .into_iter()
        .map(|(name, version)| json!({"jobName": name, "version": version.to_string()}))
        .collect();
    json_response(StatusCode::OK, &json!({ "jobs": jobs, "next": next }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody<'a> {
    #[serde(borrow)]
    ops: Vec<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchOp<'a> {
    op: String,
    #[serde(borrow, default)]
    job: Option<&'a RawValue>,
    #[serde(rename = "jobName", default)]
    job_name: Option<String>,
}

/// One checked operation of a batch: the job's name and its record value (`None`: delete).
struct Checked {
    name: String,
    value: Option<Box<RawValue>>,
}

async fn batch(
    State(front): State<Arc<Front>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let by = tri!(front.authorize(&headers, true));
    let received = std::time::Instant::now();
    let bytes = tri!(read_body(&headers, body, front.max_batch_body, "--api-max-batch-body").await);
    let read = received.elapsed();
    let core = tri!(front.core());
    let parsed: BatchBody<'_> = match serde_json::from_slice(&bytes) {
        Ok(b) => b,
        Err(e) => {
            return invalid(vec![problem(
                "",
                &format!("the body must be {{\"ops\":[…]}}: {e}"),
            )])
        }
    };
    if parsed.ops.len() > MAX_BATCH_OPS {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "{} operations; a batch has at most {MAX_BATCH_OPS}",
                parsed.ops.len()
            ),
        );
    }
    // Every operation is checked before anything is written: first its shape, then every job at
    // once with the schedule checker (on the blocking pool: a full batch is CPU work).
    let mut problems = Vec::new();
    let mut checked: Vec<Checked> = Vec::with_capacity(parsed.ops.len());
    // The operations whose job the checker still has to see: (index in `checked`, op index).
    let mut to_check: Vec<(usize, usize)> = Vec::with_capacity(parsed.ops.len());
    for (i, raw) in parsed.ops.iter().enumerate() {
        let at = || format!("ops[{i}]");
        let with_op = |mut p: Value| {
            p["op"] = json!(i);
            p
        };
        let op: BatchOp<'_> = match serde_json::from_str(raw.get()) {
            Ok(op) => op,
            Err(e) => {
                problems.push(with_op(problem(&at(), &format!("{{\"op\":\"put\",\"job\":{{…}}}} or {{\"op\":\"delete\",\"jobName\":…}}: {e}"))));
                continue;
            }
        };
        match (op.op.as_str(), op.job, op.job_name) {
            ("put", Some(job), name) => {
                let name = name.or_else(|| {
                    serde_json::from_str::<RawObject<'_>>(job.get())
                        .ok()
                        .and_then(|m| m.get("jobName"))
                        .and_then(|v| serde_json::from_str::<String>(v.get()).ok())
                });
                let Some(name) = name else {
                    problems.push(with_op(problem(
                        &format!("{}.job.jobName", at()),
                        "missing (required)",
                    )));
                    continue;
                };
                let spec = match prepare_spec(&name, job.get().as_bytes(), &format!("{}.job", at()))
                {
                    Ok(spec) => spec,
                    Err(ps) => {
                        problems.extend(ps.into_iter().map(with_op));
                        continue;
                    }
                };
                to_check.push((checked.len(), i));
                checked.push(Checked {
                    name,
                    value: Some(spec),
                });
            }
            ("delete", None, Some(name)) if !name.is_empty() => {
                checked.push(Checked { name, value: None })
            }
            ("delete", _, _) => problems.push(with_op(problem(
                &format!("{}.jobName", at()),
                "a delete names its job: {\"op\":\"delete\",\"jobName\":…} (and no job)",
            ))),
            ("put", None, _) => problems.push(with_op(problem(
                &format!("{}.job", at()),
                "missing (required)",
            ))),
            (other, _, _) => problems.push(with_op(problem(
                &format!("{}.op", at()),
                &format!("{other:?} is not \"put\" or \"delete\""),
            ))),
        }
    }
    // Each checked operation's job, by its index in `checked` (None for a delete).
    let mut jobs: Vec<Option<crate::schedule::Job>> = Vec::new();
    if !to_check.is_empty() {
        jobs.resize_with(checked.len(), || None);
        let specs: Vec<Box<RawValue>> = to_check
            .iter()
            .filter_map(|&(c, _)| checked[c].value.clone())
            .collect();
        let options = core.options.clone();
        let checks = tokio::task::spawn_blocking(move || {
            let refs: Vec<&RawValue> = specs.iter().map(AsRef::as_ref).collect();
            // On every core: the broker waits for this request's records meanwhile.
            crate::cores::map_runs(&refs, crate::cores::count(), 1_000, |_, part| {
                check_entries(part, &options)
            })
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
        })
        .await;
        let Ok(checks) = checks else {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the check of the batch failed",
            );
        };
        for (&(c, i), check) in to_check.iter().zip(checks) {
            match check {
                Ok(job) => jobs[c] = Some(job),
                Err(ps) => {
                    let prefix = format!("ops[{i}].job");
                    problems.extend(ps.iter().map(|p| {
                        let mut p = problem_of(p, &prefix);
                        p["op"] = json!(i);
                        p
                    }));
                }
            }
        }
        // Problems in op order, whichever check found them.
        problems.sort_by_key(|p| p["op"].as_u64());
    }
    if !problems.is_empty() {
        return invalid(problems);
    }
    let checked_at = received.elapsed();
    // Each operation's shard: this member's, or another owner's (its share forwarded).
    let owned = core.versions.owned();
    let mut local: Vec<usize> = Vec::new();
    let mut remote: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, c) in checked.iter().enumerate() {
        let shard = core.shard_of(&c.name);
        if owned.contains(&shard) {
            local.push(i);
        } else if forwarded(&headers) {
            return unavailable(&format!("shard {shard} is not this member's (any more): a forwarded request is not forwarded again"));
        } else {
            match core.owner_url(shard).await {
                Some(url) if Some(&url) != front.advertise.get() => {
                    remote.entry(url).or_default().push(i)
                }
                _ => {
                    return unavailable(&format!(
                        "shard {shard} has no owner with the API on right now: nothing was written"
                    ))
                }
            }
        }
    }
    let mut versions: Vec<Option<i64>> = vec![None; checked.len()];
    // Other owners' shares, at the same time as this member's own.
    let remote_writes = remote.iter().map(|(base, indices)| {
        let ops: Vec<Value> = indices
            .iter()
            .map(|&i| match &checked[i].value {
                Some(spec) => json!({"op": "put", "job": serde_json::from_str::<Value>(spec.get()).unwrap_or(Value::Null)}),
                None => json!({"op": "delete", "jobName": checked[i].name}),
            })
            .collect();
        let body = Bytes::from(serde_json::to_vec(&json!({ "ops": ops })).unwrap_or_default());
        let mut h = headers.clone();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let core = &core;
        let uri = &uri;
        let method = method.clone();
        async move { (indices, forward(core, base, method, uri, &h, body).await) }
    });
    let local_write = async {
        let mut shards: Vec<u32> = local
            .iter()
            .map(|&i| core.shard_of(&checked[i].name))
            .collect();
        shards.sort_unstable();
        shards.dedup();
        // Locked in shard order: two batches never wait on each other in a circle.
        let mut guards = Vec::with_capacity(shards.len());
        for &s in &shards {
            guards.push(core.lock_shard(s).await);
        }
        let changed = Changed {
            at: Utc::now(),
            by: by.clone(),
            via: VIA_API.to_string(),
            source: None,
        };
        let writes: Vec<store::Write> = local
            .iter()
            .map(|&i| store::Write {
                name: checked[i].name.clone(),
                value: checked[i]
                    .value
                    .as_ref()
                    .map(|spec| ScheduleRecord::encode(spec, &changed)),
            })
            .collect();
        let local_jobs = local
            .iter()
            .map(|&i| jobs.get_mut(i).and_then(Option::take))
            .collect();
        let written = core.write_batch(writes, local_jobs, &changed).await;
        if let Ok(offsets) = &written {
            for &i in &local {
                if let Some(&o) = offsets.get(&checked[i].name) {
                    core.versions.acked(
                        core.shard_of(&checked[i].name),
                        &checked[i].name,
                        o,
                        checked[i].value.is_some(),
                    );
                }
            }
        }
        drop(guards);
        written
    };
    let (local_result, remote_results) =
        futures_util::future::join(local_write, futures_util::future::join_all(remote_writes))
            .await;
    let mut failures: Vec<String> = Vec::new();
    match local_result {
        Ok(offsets) => {
            for &i in &local {
                versions[i] = offsets.get(&checked[i].name).copied();
            }
        }
        Err(e) => failures.push(e.to_string()),
    }
    for (indices, reply) in remote_results {
        let status = reply.status();
        let body = axum::body::to_bytes(reply.into_body(), 64 << 20)
            .await
            .unwrap_or_default();
        let results = serde_json::from_slice::<Value>(&body)
            .ok()
            .filter(|_| status == StatusCode::OK);
        match results.as_ref().and_then(|v| v["results"].as_array()) {
            Some(results) if results.len() == indices.len() => {
                for (&i, r) in indices.iter().zip(results) {
                    versions[i] = r["version"].as_str().and_then(|v| v.parse().ok());
                }
            }
            _ => failures.push(format!(
                "another member answered {status}: {}",
                String::from_utf8_lossy(&body)
            )),
        }
    }
    if !failures.is_empty() {
        tracing::warn!(message = "jobs API batch partly written", failures = %failures.join("; "));
        return unavailable(&format!(
            "the batch was not written whole (what was acked stays written; send it again): {}",
            failures.join("; ")
        ));
    }
    let ms = |d: std::time::Duration| d.as_millis() as u64;
    tracing::info!(
        message = "batch written through the API",
        ops = checked.len(),
        by = %by,
        read_ms = ms(read),
        checked_ms = ms(checked_at - read),
        written_ms = ms(received.elapsed() - checked_at),
    );
    // Serialised straight from the results (a reply of 10 000 built as JSON values first took
    // about as long as the batch's check).
    #[derive(serde::Serialize)]
    struct Written<'a> {
        #[serde(rename = "jobName")]
        job_name: &'a str,
        version: Option<String>,
    }
    #[derive(serde::Serialize)]
    struct Reply<'a> {
        results: Vec<Written<'a>>,
    }
    let reply = Reply {
        results: checked
            .iter()
            .zip(&versions)
            .map(|(c, v)| Written {
                job_name: &c.name,
                version: v.map(|v| v.to_string()),
            })
            .collect(),
    };
    json_response(StatusCode::OK, &reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_without_jobname_gets_the_urls_and_a_different_one_is_a_problem() {
        let spec = prepare_spec("a", br#"{ "job": "x", "cronTime": "* * * * *" }"#, "").unwrap();
        assert_eq!(
            spec.get(),
            r#"{"jobName":"a","job":"x","cronTime":"* * * * *"}"#
        );
        let same = prepare_spec("a", br#"{"jobName":"a","job":"x"}"#, "").unwrap();
        assert_eq!(same.get(), r#"{"jobName":"a","job":"x"}"#);
        let other = prepare_spec("a", br#"{"jobName":"b"}"#, "ops[2].job").unwrap_err();
        assert_eq!(other[0]["path"], "ops[2].job.jobName");
        assert!(prepare_spec("a", b"[1]", "").is_err());
        assert_eq!(
            prepare_spec("a", b"{}", "").unwrap().get(),
            r#"{"jobName":"a"}"#
        );
    }
}
