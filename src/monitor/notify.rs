//! The notifier: drains the monitor's outbox into webhooks, one signed POST per (alert, webhook),
//! retried with backoff for 24 h.
//!
//! ```text
//!  judge ─► Outbox (the database) ──due(now)──► run: admit ──► POST (≤ concurrency at once, each
//!              ▲                                  │ rate limit     within --webhook-timeout)
//!              │                                  │ per job             │
//!              │     abandoned("rate limited") ◄──┘                     ▼
//!              ├──── delivered ◄─────────────────────────────────── 2xx
//!              ├──── failed(retry_at = now + 1 s … 10 min, jitter) ◄ 5xx, 408, timeout, refused
//!              │        (429 / 503: Retry-After)                     (abandoned once past 24 h)
//!              └──── abandoned ◄──────────────────────────────────── other 4xx, 3xx
//! ```
//!
//! What a receiver gets (the body, the headers and how to verify the signature) is a contract:
//! docs/contracts.md, "Alert webhooks". Every outbox call is the outbox's own transaction, so a
//! crash loses nothing: a POST whose outcome was not recorded is sent again after a restart, with
//! the same `X-Cronq-Id` for the receiver to drop.
//!
//! The pure parts (flag parsing, the backoff, the verdict on a reply, the bodies, the signature,
//! the rate limiter) are free functions and small types tested without a socket; [`run`] is the
//! loop around them. Its time is an injected [`Clock`]: retry times, the 24 h limit and the rate
//! limit's window are all read from it, so tests move it by hours without sleeping.
//!
//! The project's HTTP client ([`HttpClient`]) speaks plain `http://` only: an `https://` webhook
//! is refused when the flag is parsed. Put a TLS-terminating proxy in front of an https receiver
//! (Slack's incoming webhooks are https only).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use bytes::Bytes;
use chrono::{DateTime, TimeDelta, Utc};
use hmac::{Hmac, Mac};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde_json::json;
use sha2::Sha256;
use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;

use super::model::{Alert, AlertKind, Delivery, Outbox};
use crate::clock::Clock;
use crate::obs::client::{ClientError, HttpClient};

/// The header carrying the alert's id: the receiver's idempotency key.
pub const HEADER_ID: &str = "x-cronq-id";
/// The header carrying the signing time, Unix seconds.
pub const HEADER_TIMESTAMP: &str = "x-cronq-timestamp";
/// The header carrying `v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>` (with a secret only).
pub const HEADER_SIGNATURE: &str = "x-cronq-signature";

/// The first retry's delay (before jitter); each further failure doubles it.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest delay between two attempts (before jitter).
pub const MAX_RETRY: Duration = Duration::from_secs(10 * 60);
/// How long after it was queued a delivery is given up.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// The longest `Retry-After` honoured; a longer one waits this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// The most bytes of a receiver's reply read (the body is only logged, never parsed).
const MAX_REPLY_BODY: usize = 16 * 1024;
/// The most bytes of a reply quoted in an outbox error.
const QUOTED_REPLY: usize = 200;

// ---------------------------------------------------------------------------------------------
// The flags: `--webhook`, `--webhook-events`, `--webhook-secret-file`, `--webhook-format`,
// `--webhook-rate-limit`

/// Why a webhook flag's value cannot be used. Never holds a secret's bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookFlagError {
    /// `--webhook URL`.
    #[error("--webhook {url:?}: {reason}")]
    Url {
        /// As given.
        url: String,
        /// Why, and what to write instead.
        reason: String,
    },
    /// `--page-url URL`.
    #[error("--page-url {url:?}: {reason}")]
    PageUrl {
        /// As given.
        url: String,
        /// Why, and what to write instead.
        reason: String,
    },
    /// `--webhook-events`.
    #[error("--webhook-events {text:?}: {reason}")]
    Events {
        /// As given.
        text: String,
        /// Why.
        reason: String,
    },
    /// `--webhook-secret-file`.
    #[error("--webhook-secret-file {}: {reason}", path.display())]
    SecretFile {
        /// The file.
        path: PathBuf,
        /// Why (never its content).
        reason: String,
    },
    /// `--webhook-format`.
    #[error("--webhook-format {text:?}: expected json or slack")]
    Format {
        /// As given.
        text: String,
    },
    /// `--webhook-rate-limit`.
    #[error("--webhook-rate-limit {text:?}: {reason}")]
    RateLimit {
        /// As given.
        text: String,
        /// Why.
        reason: String,
    },
}

/// The body a webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// cronq's own JSON body (docs/contracts.md, "Alert webhooks").
    #[default]
    Json,
    /// A Slack incoming-webhook message: `text` and Block Kit `blocks`.
    Slack,
}

impl Format {
    /// The flag's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Slack => "slack",
        }
    }
}

impl FromStr for Format {
    type Err = WebhookFlagError;

    fn from_str(text: &str) -> Result<Format, WebhookFlagError> {
        parse_format(text)
    }
}

/// `--webhook-format json|slack`.
pub fn parse_format(text: &str) -> Result<Format, WebhookFlagError> {
    match text.trim().to_ascii_lowercase().as_str() {
        "json" => Ok(Format::Json),
        "slack" => Ok(Format::Slack),
        _ => Err(WebhookFlagError::Format {
            text: text.to_string(),
        }),
    }
}

/// `--webhook URL`: an `http://host[:port]/path` URL, kept as given. `https://` is refused: the
/// project's HTTP client has no TLS.
pub fn parse_url(text: &str) -> Result<String, WebhookFlagError> {
    check_http_url(text).map_err(|reason| WebhookFlagError::Url {
        url: text.to_string(),
        reason,
    })?;
    Ok(text.to_string())
}

/// The monitor page's base URL for the body's `link` (`http://` or `https://`: it is only
/// written, never fetched), without a trailing slash.
pub fn parse_page_url(text: &str) -> Result<String, WebhookFlagError> {
    let bad = |reason: &str| WebhookFlagError::PageUrl {
        url: text.to_string(),
        reason: reason.to_string(),
    };
    let uri: axum::http::Uri = text
        .parse()
        .map_err(|_| bad("not a URL like http://monitor.example:9466"))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err(bad("not a URL like http://monitor.example:9466"));
    }
    if uri.query().is_some() {
        return Err(bad("a page URL has no query (?…)"));
    }
    Ok(text.trim_end_matches('/').to_string())
}

fn check_http_url(text: &str) -> Result<(), String> {
    let uri: axum::http::Uri = text
        .parse()
        .map_err(|e| format!("not a URL ({e}); write http://host:port/path"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(
                "https:// is not supported: cronq's HTTP client speaks plain HTTP; \
                 put a TLS-terminating proxy in front of the receiver and give its http:// URL"
                    .into(),
            )
        }
        Some(other) => return Err(format!("scheme {other}:// is not http://")),
        None => return Err("no scheme: write http://host:port/path".into()),
    }
    match uri.host() {
        Some(host) if !host.is_empty() => Ok(()),
        _ => Err("no host: write http://host:port/path".into()),
    }
}

/// `--webhook-events failed,late,…`: alert kinds, comma-separated, or `all`. Kinds keep the
/// order given; a repeated kind is an error (a typo, most likely).
pub fn parse_events(text: &str) -> Result<Vec<AlertKind>, WebhookFlagError> {
    let bad = |reason: String| WebhookFlagError::Events {
        text: text.to_string(),
        reason,
    };
    if text.trim().eq_ignore_ascii_case("all") {
        return Ok(AlertKind::ALL.to_vec());
    }
    let mut kinds = Vec::new();
    for word in text.split(',').map(str::trim) {
        if word.is_empty() {
            return Err(bad("an empty kind (write failed,late or all)".into()));
        }
        let Some(kind) = AlertKind::parse(&word.to_ascii_lowercase()) else {
            let known: Vec<&str> = AlertKind::ALL.iter().map(|k| k.as_str()).collect();
            return Err(bad(format!(
                "{word:?} is not an alert kind; the kinds are {} (or all)",
                known.join(", ")
            )));
        };
        if kinds.contains(&kind) {
            return Err(bad(format!("{} is given twice", kind.as_str())));
        }
        kinds.push(kind);
    }
    Ok(kinds)
}

/// `--webhook-secret-file F`: the HMAC key, the file's bytes less trailing whitespace (a final
/// newline). At least 16 bytes; the error never quotes the file.
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, WebhookFlagError> {
    let bad = |reason: String| WebhookFlagError::SecretFile {
        path: path.to_path_buf(),
        reason,
    };
    let mut bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    while bytes.last().is_some_and(u8::is_ascii_whitespace) {
        bytes.pop();
    }
    if bytes.is_empty() {
        return Err(bad(
            "empty (write a random secret: openssl rand -hex 32)".into()
        ));
    }
    if bytes.len() < 16 {
        return Err(bad(format!(
            "{} bytes is too short a secret: use at least 16 (openssl rand -hex 32)",
            bytes.len()
        )));
    }
    Ok(bytes)
}

/// At most `max` alerts of one job to one webhook per `window`: a flapping job does not flood its
/// receivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Alerts let through per window (1..=1000).
    pub max: u32,
    /// The sliding window (1 s..=24 h).
    pub window: Duration,
}

impl Default for RateLimit {
    /// 5 per 10 minutes.
    fn default() -> RateLimit {
        RateLimit {
            max: 5,
            window: Duration::from_secs(600),
        }
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.max,
            humantime::format_duration(self.window)
        )
    }
}

impl FromStr for RateLimit {
    type Err = WebhookFlagError;

    fn from_str(text: &str) -> Result<RateLimit, WebhookFlagError> {
        parse_rate_limit(text)
    }
}

/// `--webhook-rate-limit N/WINDOW`, e.g. `5/10m` (the default).
pub fn parse_rate_limit(text: &str) -> Result<RateLimit, WebhookFlagError> {
    let bad = |reason: String| WebhookFlagError::RateLimit {
        text: text.to_string(),
        reason,
    };
    let (max, window) = text
        .split_once('/')
        .ok_or_else(|| bad("expected N/WINDOW, e.g. 5/10m".into()))?;
    let max: u32 = max
        .trim()
        .parse()
        .map_err(|_| bad(format!("{max:?} is not a whole number")))?;
    if !(1..=1000).contains(&max) {
        return Err(bad(format!("{max} is out of range 1-1000")));
    }
    let window = humantime::parse_duration(window.trim())
        .map_err(|e| bad(format!("window {window:?}: {e}")))?;
    if window < Duration::from_secs(1) || window > Duration::from_secs(24 * 3600) {
        return Err(bad(format!(
            "window {} is out of range 1s-24h",
            humantime::format_duration(window)
        )));
    }
    Ok(RateLimit { max, window })
}

/// One `--webhook` and its settings.
#[derive(Clone, PartialEq, Eq)]
pub struct Webhook {
    /// Where to POST: `http://…` (see [`parse_url`]).
    pub url: String,
    /// The alert kinds it receives.
    pub events: Vec<AlertKind>,
    /// The HMAC-SHA256 key; without one, no `X-Cronq-Signature` is sent.
    pub secret: Option<Vec<u8>>,
    /// The body.
    pub format: Format,
}

impl Webhook {
    /// A webhook from its flags' values: `events` defaults to every kind, `format` to json.
    pub fn from_flags(
        url: &str,
        events: Option<&str>,
        secret_file: Option<&Path>,
        format: Option<&str>,
    ) -> Result<Webhook, WebhookFlagError> {
        Ok(Webhook {
            url: parse_url(url)?,
            events: events.map_or_else(|| Ok(AlertKind::ALL.to_vec()), parse_events)?,
            secret: secret_file.map(read_secret_file).transpose()?,
            format: format.map_or(Ok(Format::Json), parse_format)?,
        })
    }

    /// Whether it receives alerts of `kind` (the outbox's writer asks, and queues only those).
    pub fn wants(&self, kind: AlertKind) -> bool {
        self.events.contains(&kind)
    }

    /// The URL's scheme, host and port, for logs: the path of a webhook URL is often its
    /// password (Slack's, for one), so it is never logged.
    pub fn target(&self) -> String {
        match self.url.parse::<axum::http::Uri>() {
            Ok(uri) => match (uri.scheme_str(), uri.authority()) {
                (Some(scheme), Some(authority)) => {
                    let host = authority.as_str().rsplit('@').next().unwrap_or("");
                    format!("{scheme}://{host}/…")
                }
                _ => "(a webhook)".into(),
            },
            Err(_) => "(a webhook)".into(),
        }
    }
}

/// The webhooks of `kind`, by their index: what the outbox's writer queues a delivery for.
pub fn subscribers(webhooks: &[Webhook], kind: AlertKind) -> impl Iterator<Item = usize> + '_ {
    webhooks
        .iter()
        .enumerate()
        .filter(move |(_, w)| w.wants(kind))
        .map(|(i, _)| i)
}

/// Redacted: neither the secret nor the URL's path.
impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.target())
            .field("events", &self.events)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("format", &self.format)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------------
// The delivery policy: backoff and the verdict on a reply

/// The delay after a delivery's `failures`-th failed attempt (1 for the first): [`FIRST_RETRY`]
/// doubled per failure up to [`MAX_RETRY`], then jittered into `[d/2, d]` by `jitter` (in
/// `[0, 1)`), the full-jitter rule of [`crate::kafka::retry::Backoff`]. A function of the stored
/// attempt count rather than a `Backoff` kept in memory: a restarted monitor goes on where the
/// outbox says it was.
pub fn retry_delay(failures: u32, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    let full = FIRST_RETRY.saturating_mul(1 << doublings).min(MAX_RETRY);
    full.mul_f64(0.5 + jitter.clamp(0.0, 1.0) / 2.0)
}

/// What a POST came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: the receiver has it.
    Delivered,
    /// Worth another attempt (5xx, 408, 429, no answer); `after`: the receiver's `Retry-After`.
    Retry {
        /// What happened, for the outbox and the log.
        error: String,
        /// The receiver's `Retry-After`, capped at [`MAX_RETRY_AFTER`].
        after: Option<Duration>,
    },
    /// The receiver will never take it (another 4xx, a redirect): given up at once.
    Abandon {
        /// What happened.
        error: String,
    },
}

/// The verdict on a reply of `status` with `headers` and `body` (quoted in the error), at `now`
/// (for a `Retry-After` date).
pub fn judge_reply(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Verdict {
    if status.is_success() {
        return Verdict::Delivered;
    }
    let error = format!("HTTP {status}{}", quote(body));
    match status.as_u16() {
        408 | 500..=599 => Verdict::Retry {
            after: matches!(status.as_u16(), 503)
                .then(|| retry_after(headers, now))
                .flatten(),
            error,
        },
        429 => Verdict::Retry {
            after: retry_after(headers, now),
            error,
        },
        300..=399 => Verdict::Abandon {
            error: format!("{error}: a redirect is not followed; give the final URL"),
        },
        _ => Verdict::Abandon { error },
    }
}

/// `: <first bytes of the body>` when there is one.
fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(QUOTED_REPLY)]);
    let text: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let text = text.trim();
    if text.is_empty() {
        String::new()
    } else {
        format!(": {text}")
    }
}

/// `Retry-After`: delay-seconds or an HTTP date, capped at [`MAX_RETRY_AFTER`].
fn retry_after(headers: &HeaderMap, now: DateTime<Utc>) -> Option<Duration> {
    let value = headers.get("retry-after")?.to_str().ok()?.trim();
    let wait = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = DateTime::parse_from_rfc2822(value)
                .ok()?
                .with_timezone(&Utc);
            (at - now).to_std().unwrap_or_default()
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// `at + d`, saturating.
fn later(at: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d)
        .ok()
        .and_then(|d| at.checked_add_signed(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

// ---------------------------------------------------------------------------------------------
// Bodies and the signature

/// The link to the run on the monitor's page: `<page_url>/runs/<dispatchId or job@slot>`, the id
/// percent-encoded as one path segment.
pub fn run_link(page_url: &str, alert: &Alert) -> String {
    let id = alert.dispatch_id.clone().unwrap_or_else(|| {
        crate::wire::dispatch_id(&alert.job, &crate::wire::slot_text(alert.slot))
    });
    format!(
        "{}/runs/{}",
        page_url.trim_end_matches('/'),
        path_segment(&id)
    )
}

/// `text` as one URL path segment (or query value): RFC 3986 `pchar`s kept (unreserved, `@`,
/// `:`), every other byte `%XX`. The monitor's pages link to runs with it too.
pub fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@' | b':') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The JSON body, version 1 (docs/contracts.md, "Alert webhooks").
pub fn json_body(alert: &Alert, page_url: Option<&str>) -> serde_json::Value {
    json!({
        "v": 1,
        "id": alert.id,
        "kind": alert.kind.as_str(),
        "job": alert.job,
        "slot": crate::wire::slot_text(alert.slot),
        "dispatchId": alert.dispatch_id,
        "outcome": alert.outcome.as_str(),
        "attempts": alert.attempts,
        "lastExitCode": alert.last_exit_code,
        "stderrTail": alert.stderr_tail,
        "raisedAt": crate::wire::slot_text(alert.raised_at),
        "link": page_url.map(|p| run_link(p, alert)),
    })
}

/// The most characters of stderr a Slack message quotes (a section's text is at most 3000).
const SLACK_STDERR: usize = 1500;

/// A Slack incoming-webhook message: a one-line `text` (the notification) and `blocks`: a
/// section with the facts as fields, and one with the stderr tail when there is one.
pub fn slack_body(alert: &Alert, page_url: Option<&str>) -> serde_json::Value {
    let what = match alert.kind {
        AlertKind::Failed => "failed",
        AlertKind::TimedOut => "timed out",
        AlertKind::DeadLettered => "was dead-lettered",
        AlertKind::Late => "is late",
        AlertKind::Missed => "was missed",
        AlertKind::Recovered => "recovered",
    };
    let slot = crate::wire::slot_text(alert.slot);
    let job = one_line(&alert.job);
    let text = format!("cronq: job {job} {what} (slot {slot})");
    let link = page_url.map(|p| run_link(p, alert));
    let headline = match &link {
        Some(link) => format!("*<{link}|{}>* {what}", slack_escape(&job)),
        None => format!("*{}* {what}", slack_escape(&job)),
    };
    let mut fields = vec![
        field("Slot", &slot),
        field("Outcome", alert.outcome.as_str()),
        field("Attempts", &alert.attempts.to_string()),
        field(
            "Last exit code",
            &alert
                .last_exit_code
                .map_or_else(|| "none".to_string(), |c| c.to_string()),
        ),
        field("Raised", &crate::wire::slot_text(alert.raised_at)),
    ];
    if let Some(id) = &alert.dispatch_id {
        fields.push(field("Dispatch", id));
    }
    let mut blocks = vec![json!({
        "type": "section",
        "text": {"type": "mrkdwn", "text": headline},
        "fields": fields,
    })];
    let tail = alert.stderr_tail.trim_end();
    if !tail.is_empty() {
        let skip = tail.chars().count().saturating_sub(SLACK_STDERR);
        let tail: String = tail.chars().skip(skip).collect();
        blocks.push(json!({
            "type": "section",
            "text": {
                "type": "mrkdwn",
                "text": format!("*stderr (tail)*\n```{}```", slack_escape(&tail).replace("```", "'''")),
            },
        }));
    }
    json!({ "text": text, "blocks": blocks })
}

fn field(name: &str, value: &str) -> serde_json::Value {
    json!({"type": "mrkdwn", "text": format!("*{name}*\n{}", slack_escape(&one_line(value)))})
}

/// Slack's mrkdwn escapes: `&`, `<`, `>`.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The bytes POSTed for `alert` in `format`.
pub fn body(alert: &Alert, format: Format, page_url: Option<&str>) -> Bytes {
    let value = match format {
        Format::Json => json_body(alert, page_url),
        Format::Slack => slack_body(alert, page_url),
    };
    Bytes::from(value.to_string())
}

/// `v1=<lowercase hex HMAC-SHA256(secret, "<timestamp>.<body>")>`: the `X-Cronq-Signature`.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    // HMAC takes a key of any length (a long one is hashed first): this cannot fail.
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret).expect("HMAC-SHA256 takes a key of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(3 + digest.len() * 2);
    out.push_str("v1=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The per-job rate limit

/// Remembers when each (webhook, job) was last let through, within the window. In memory: a
/// restarted monitor starts every window afresh (at most `max` more alerts per job).
#[derive(Debug)]
struct RateLimiter {
    limit: RateLimit,
    sent: HashMap<(usize, String), VecDeque<DateTime<Utc>>>,
    /// Entries at the last sweep: the map is swept of idle jobs when it doubles.
    swept_at: usize,
}

impl RateLimiter {
    fn new(limit: RateLimit) -> RateLimiter {
        RateLimiter {
            limit,
            sent: HashMap::new(),
            swept_at: 0,
        }
    }

    /// Whether a first attempt for `job` to `webhook` may go at `now`; counts it if so.
    fn admit(&mut self, webhook: usize, job: &str, now: DateTime<Utc>) -> bool {
        let start = now - TimeDelta::from_std(self.limit.window).unwrap_or(TimeDelta::MAX);
        if self.sent.len() > 2 * self.swept_at.max(512) {
            self.sent
                .retain(|_, times| times.back().is_some_and(|t| *t > start));
            self.swept_at = self.sent.len();
        }
        let times = self.sent.entry((webhook, job.to_string())).or_default();
        while times.front().is_some_and(|t| *t <= start) {
            times.pop_front();
        }
        if times.len() >= self.limit.max as usize {
            return false;
        }
        times.push_back(now);
        true
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

/// The notifier's metrics (no per-job label).
#[derive(Clone, Debug)]
pub struct NotifyMetrics {
    sent: Family<KindLabel, Counter>,
    failed: Family<KindLabel, Counter>,
    attempts_failed: Counter,
    pending: Gauge,
    suppressed: Counter,
}

impl NotifyMetrics {
    /// Registers the metrics into `registry`, every `kind` series at 0.
    pub fn register(registry: &mut Registry) -> NotifyMetrics {
        let metrics = NotifyMetrics {
            sent: Family::default(),
            failed: Family::default(),
            attempts_failed: Counter::default(),
            pending: Gauge::default(),
            suppressed: Counter::default(),
        };
        registry.register(
            "cronq_monitor_alerts_sent",
            "Alert deliveries a webhook accepted (2xx), by alert kind",
            metrics.sent.clone(),
        );
        registry.register(
            "cronq_monitor_alerts_failed",
            "Alert deliveries given up (24 h of failures, or a 4xx the receiver will not take), by alert kind",
            metrics.failed.clone(),
        );
        registry.register(
            "cronq_monitor_alert_attempts_failed",
            "Delivery attempts that failed (retried or not)",
            metrics.attempts_failed.clone(),
        );
        registry.register(
            "cronq_monitor_alerts_pending",
            "Alert deliveries waiting in the outbox",
            metrics.pending.clone(),
        );
        registry.register(
            "cronq_monitor_alerts_suppressed",
            "Alert deliveries left out by the per-job rate limit (--webhook-rate-limit)",
            metrics.suppressed.clone(),
        );
        for kind in AlertKind::ALL {
            let label = KindLabel {
                kind: kind.as_str(),
            };
            drop(metrics.sent.get_or_create(&label));
            drop(metrics.failed.get_or_create(&label));
        }
        metrics
    }

    fn sent(&self, kind: AlertKind) {
        self.sent
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .inc();
    }

    fn failed(&self, kind: AlertKind) {
        self.failed
            .get_or_create(&KindLabel {
                kind: kind.as_str(),
            })
            .inc();
    }
}

// ---------------------------------------------------------------------------------------------
// The loop

/// How the notifier runs (every field has a flag's default).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The monitor page's base URL for the body's `link` ([`parse_page_url`]); none: `link` is
    /// null.
    pub page_url: Option<String>,
    /// The per-job rate limit.
    pub rate_limit: RateLimit,
    /// POSTs in flight at once (at least 1).
    pub concurrency: usize,
    /// How long one POST may take, connecting included.
    pub request_timeout: Duration,
    /// How often the outbox is asked for due deliveries when nothing else happens.
    pub poll: Duration,
    /// How long after it was queued a delivery is given up ([`GIVE_UP_AFTER`]).
    pub give_up_after: Duration,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            page_url: None,
            rate_limit: RateLimit::default(),
            concurrency: 8,
            request_timeout: Duration::from_secs(10),
            poll: Duration::from_secs(1),
            give_up_after: GIVE_UP_AFTER,
        }
    }
}

/// Why the notifier stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The outbox failed: the database is the monitor's, whose owner decides what next. The
    /// delivery it was about stays in the outbox and is sent again (same id) after a restart.
    #[error("the alert outbox: {operation}: {source}")]
    Outbox {
        /// The call (`due`, `delivered`, …).
        operation: &'static str,
        /// The store's error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn outbox_error<E: std::error::Error + Send + Sync + 'static>(
    operation: &'static str,
) -> impl FnOnce(E) -> NotifyError {
    move |e| NotifyError::Outbox {
        operation,
        source: Box::new(e),
    }
}

/// One POST on its way: what is needed to settle it.
struct Sending {
    delivery: Delivery,
}

/// Drains `outbox` into `webhooks` until `cancel`: every delivery due at `clock`'s now is POSTed
/// (at most `settings.concurrency` at once), and its outcome recorded:
/// - 2xx: `delivered`;
/// - 5xx, 408, 429, a timeout or no connection: `failed`, retried after [`retry_delay`] (429 and
///   503: after `Retry-After`), until `give_up_after` past its `queued_at`: then `abandoned`;
/// - any other 4xx, or a 3xx: `abandoned` at once;
/// - a first attempt past the job's rate limit: `abandoned` with reason `rate limited`, counted in
///   `cronq_monitor_alerts_suppressed_total` (not in `…_failed_total`);
/// - a delivery for a webhook that does not want its kind, or for an index with no `--webhook`
///   now (the command line changed): `abandoned`, uncounted.
///
/// `outbox` is owned by the loop, which is the only one to call it: give it a handle of its own
/// (a second connection to the monitor's database, or a wrapper around a shared one). Its calls
/// are synchronous and short (one small transaction each); they run on the loop's task.
///
/// On `cancel` no POST starts; those in flight end within `request_timeout` and are recorded.
/// Ends with an error only when the outbox fails.
pub async fn run<O: Outbox>(
    mut outbox: O,
    webhooks: Vec<Webhook>,
    settings: Settings,
    clock: Arc<dyn Clock>,
    metrics: NotifyMetrics,
    cancel: CancellationToken,
) -> Result<(), NotifyError> {
    let client = HttpClient::new(settings.request_timeout, MAX_REPLY_BODY);
    let concurrency = settings.concurrency.max(1);
    let mut limiter = RateLimiter::new(settings.rate_limit);
    let mut jitter = Jitter::seeded();
    let mut in_flight: JoinSet<Verdict> = JoinSet::new();
    let mut sending: HashMap<Id, Sending> = HashMap::new();
    let mut busy: HashSet<(String, usize)> = HashSet::new();
    tracing::info!(
        message = "alert notifier started",
        webhooks = webhooks.len(),
        rate_limit = %settings.rate_limit,
        concurrency,
    );
    loop {
        if cancel.is_cancelled() {
            break;
        }
        let room = concurrency.saturating_sub(in_flight.len());
        if room > 0 {
            let now = clock.now();
            // Ask past the deliveries in flight (still due in the outbox) for `room` new ones.
            let due = outbox
                .due(now, room + busy.len())
                .map_err(outbox_error("due"))?;
            let fresh: Vec<Delivery> = due
                .into_iter()
                .filter(|d| !busy.contains(&(d.alert.id.clone(), d.webhook)))
                .take(room)
                .collect();
            for delivery in fresh {
                let Some(webhook) = webhooks.get(delivery.webhook) else {
                    let reason = format!(
                        "no --webhook number {} is configured now",
                        delivery.webhook + 1
                    );
                    drop_delivery(&mut outbox, &delivery, &reason)?;
                    continue;
                };
                if !webhook.wants(delivery.alert.kind) {
                    let reason = format!(
                        "not subscribed: this webhook's events exclude {}",
                        delivery.alert.kind.as_str()
                    );
                    drop_delivery(&mut outbox, &delivery, &reason)?;
                    continue;
                }
                let deadline = later(delivery.queued_at, settings.give_up_after);
                if now >= deadline {
                    let reason = format!(
                        "expired: not delivered within {} of being queued",
                        humantime::format_duration(settings.give_up_after)
                    );
                    give_up(&mut outbox, &metrics, &delivery, webhook, &reason)?;
                    continue;
                }
                if delivery.attempts == 0
                    && !limiter.admit(delivery.webhook, &delivery.alert.job, now)
                {
                    let reason = format!(
                        "rate limited: job {} had {} alerts within {}",
                        delivery.alert.job, settings.rate_limit.max, settings.rate_limit
                    );
                    tracing::info!(
                        message = "alert suppressed by the rate limit",
                        alert = %delivery.alert.id,
                        webhook = delivery.webhook + 1,
                        rate_limit = %settings.rate_limit,
                    );
                    metrics.suppressed.inc();
                    outbox
                        .abandoned(&delivery.alert.id, delivery.webhook, &reason)
                        .map_err(outbox_error("abandoned"))?;
                    continue;
                }
                let post = prepare(
                    &delivery,
                    webhook,
                    settings.page_url.as_deref(),
                    now.timestamp(),
                );
                busy.insert((delivery.alert.id.clone(), delivery.webhook));
                let handle = in_flight.spawn(send(client.clone(), post, clock.clone()));
                sending.insert(handle.id(), Sending { delivery });
            }
        }
        metrics.pending.set(
            i64::try_from(outbox.pending().map_err(outbox_error("pending"))?).unwrap_or(i64::MAX),
        );
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            Some(joined) = in_flight.join_next_with_id() => {
                settle(joined, &mut sending, &mut busy, &mut outbox, &webhooks, &settings, &clock, &metrics, &mut jitter)?;
            }
            () = tokio::time::sleep(settings.poll) => {}
        }
    }
    // No POST starts now; those in flight end within the request timeout.
    while let Some(joined) = in_flight.join_next_with_id().await {
        settle(
            joined,
            &mut sending,
            &mut busy,
            &mut outbox,
            &webhooks,
            &settings,
            &clock,
            &metrics,
            &mut jitter,
        )?;
    }
    tracing::info!(message = "alert notifier stopped");
    Ok(())
}

/// Leaves out a delivery no webhook should get, uncounted.
fn drop_delivery<O: Outbox>(
    outbox: &mut O,
    delivery: &Delivery,
    reason: &str,
) -> Result<(), NotifyError> {
    tracing::warn!(
        message = "alert delivery dropped",
        alert = %delivery.alert.id,
        webhook = delivery.webhook + 1,
        reason,
    );
    outbox
        .abandoned(&delivery.alert.id, delivery.webhook, reason)
        .map_err(outbox_error("abandoned"))
}

/// Gives a delivery up, counted as failed.
fn give_up<O: Outbox>(
    outbox: &mut O,
    metrics: &NotifyMetrics,
    delivery: &Delivery,
    webhook: &Webhook,
    reason: &str,
) -> Result<(), NotifyError> {
    tracing::warn!(
        message = "alert delivery abandoned",
        alert = %delivery.alert.id,
        webhook = delivery.webhook + 1,
        target = %webhook.target(),
        reason,
    );
    metrics.failed(delivery.alert.kind);
    outbox
        .abandoned(&delivery.alert.id, delivery.webhook, reason)
        .map_err(outbox_error("abandoned"))
}

/// Records how a POST ended.
#[allow(clippy::too_many_arguments)]
fn settle<O: Outbox>(
    joined: Result<(Id, Verdict), tokio::task::JoinError>,
    sending: &mut HashMap<Id, Sending>,
    busy: &mut HashSet<(String, usize)>,
    outbox: &mut O,
    webhooks: &[Webhook],
    settings: &Settings,
    clock: &Arc<dyn Clock>,
    metrics: &NotifyMetrics,
    jitter: &mut Jitter,
) -> Result<(), NotifyError> {
    let (id, verdict) = match joined {
        Ok((id, verdict)) => (id, verdict),
        // A POST cannot panic short of a bug; its delivery is retried like a failed one.
        Err(e) => (
            e.id(),
            Verdict::Retry {
                error: format!("the POST task failed: {e}"),
                after: None,
            },
        ),
    };
    let Some(Sending { delivery }) = sending.remove(&id) else {
        return Ok(());
    };
    busy.remove(&(delivery.alert.id.clone(), delivery.webhook));
    let Some(webhook) = webhooks.get(delivery.webhook) else {
        return Ok(());
    };
    let now = clock.now();
    let attempt = delivery.attempts + 1;
    match verdict {
        Verdict::Delivered => {
            tracing::info!(
                message = "alert delivered",
                alert = %delivery.alert.id,
                webhook = delivery.webhook + 1,
                target = %webhook.target(),
                attempt,
            );
            metrics.sent(delivery.alert.kind);
            outbox
                .delivered(&delivery.alert.id, delivery.webhook, now)
                .map_err(outbox_error("delivered"))
        }
        Verdict::Retry { error, after } => {
            metrics.attempts_failed.inc();
            let wait = after.unwrap_or_else(|| retry_delay(attempt, jitter.next()));
            let retry_at = later(now, wait);
            if retry_at > later(delivery.queued_at, settings.give_up_after) {
                let reason = format!(
                    "gave up after {attempt} attempts within {}: {error}",
                    humantime::format_duration(settings.give_up_after)
                );
                return give_up(outbox, metrics, &delivery, webhook, &reason);
            }
            tracing::warn!(
                message = "alert delivery failed, will retry",
                alert = %delivery.alert.id,
                webhook = delivery.webhook + 1,
                target = %webhook.target(),
                attempt,
                error = %error,
                retry_in = %humantime::format_duration(crate::kafka::retry::round_ms(wait)),
            );
            outbox
                .failed(&delivery.alert.id, delivery.webhook, &error, retry_at)
                .map_err(outbox_error("failed"))
        }
        Verdict::Abandon { error } => {
            metrics.attempts_failed.inc();
            give_up(outbox, metrics, &delivery, webhook, &error)
        }
    }
}

/// A POST ready to go.
struct Post {
    url: String,
    headers: HeaderMap,
    body: Bytes,
}

/// The request for `delivery` to `webhook`, signed at `timestamp` (Unix seconds).
fn prepare(
    delivery: &Delivery,
    webhook: &Webhook,
    page_url: Option<&str>,
    timestamp: i64,
) -> Result<Post, String> {
    let body = body(&delivery.alert, webhook.format, page_url);
    let mut headers = HeaderMap::new();
    let value = |text: &str| {
        HeaderValue::from_str(text).map_err(|_| format!("{text:?} is not a valid header value"))
    };
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert(
        "user-agent",
        HeaderValue::from_static(concat!("cronq/", env!("CARGO_PKG_VERSION"))),
    );
    headers.insert(HEADER_ID, value(&delivery.alert.id)?);
    headers.insert(HEADER_TIMESTAMP, value(&timestamp.to_string())?);
    if let Some(secret) = &webhook.secret {
        headers.insert(
            HEADER_SIGNATURE,
            value(&signature(secret, timestamp, &body))?,
        );
    }
    Ok(Post {
        url: webhook.url.clone(),
        headers,
        body,
    })
}

/// POSTs and judges the reply. A request that cannot be built is abandoned.
async fn send(client: HttpClient, post: Result<Post, String>, clock: Arc<dyn Clock>) -> Verdict {
    let post = match post {
        Ok(post) => post,
        Err(error) => return Verdict::Abandon { error },
    };
    match client
        .send(Method::POST, &post.url, &post.headers, post.body)
        .await
    {
        Ok(reply) => judge_reply(reply.status, &reply.headers, &reply.body, clock.now()),
        // The error's own text names the URL, whose path may be a secret: only its reason.
        Err(ClientError::Request { reason, .. }) => Verdict::Retry {
            error: reason,
            after: None,
        },
        Err(ClientError::Url { reason, .. }) => Verdict::Abandon { error: reason },
    }
}

/// The jitter's randomness: xorshift, as in [`crate::kafka::retry::Backoff`] (no cryptographic
/// randomness needed).
#[derive(Debug)]
struct Jitter(u64);

impl Jitter {
    fn seeded() -> Jitter {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(1)
            | 1;
        Jitter(seed)
    }

    /// In `[0, 1)`.
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 1000) as f64 / 1000.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::monitor::model::RunState;
    use chrono::TimeZone;
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper_util::rt::TokioIo;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use tokio::net::TcpListener;

    // -----------------------------------------------------------------------------------------
    // An outbox in memory

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum State {
        Pending,
        Delivered,
        Abandoned(String),
    }

    #[derive(Debug, Clone)]
    struct Entry {
        delivery: Delivery,
        retry_at: DateTime<Utc>,
        errors: Vec<String>,
        state: State,
    }

    /// Deliveries in the order queued; shared with the test, which looks inside.
    #[derive(Debug, Clone, Default)]
    struct MemOutbox(Arc<Mutex<Vec<Entry>>>);

    #[derive(Debug, thiserror::Error)]
    #[error("no delivery of {0} to webhook {1}")]
    struct Unknown(String, usize);

    impl MemOutbox {
        fn queue(&self, alert: &Alert, webhook: usize, at: DateTime<Utc>) {
            self.0.lock().unwrap().push(Entry {
                delivery: Delivery {
                    alert: alert.clone(),
                    webhook,
                    attempts: 0,
                    queued_at: at,
                },
                retry_at: at,
                errors: Vec::new(),
                state: State::Pending,
            });
        }

        fn entry(&self, alert: &Alert, webhook: usize) -> Entry {
            self.0
                .lock()
                .unwrap()
                .iter()
                .find(|e| e.delivery.alert.id == alert.id && e.delivery.webhook == webhook)
                .cloned()
                .expect("queued")
        }

        fn update(
            &self,
            alert: &str,
            webhook: usize,
            f: impl FnOnce(&mut Entry),
        ) -> Result<(), Unknown> {
            let mut entries = self.0.lock().unwrap();
            let entry = entries
                .iter_mut()
                .find(|e| e.delivery.alert.id == alert && e.delivery.webhook == webhook)
                .ok_or_else(|| Unknown(alert.to_string(), webhook))?;
            assert_eq!(entry.state, State::Pending, "{alert} settled twice");
            f(entry);
            Ok(())
        }
    }

    impl Outbox for MemOutbox {
        type Error = Unknown;

        fn due(&mut self, now: DateTime<Utc>, limit: usize) -> Result<Vec<Delivery>, Unknown> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|e| e.state == State::Pending && e.retry_at <= now)
                .take(limit)
                .map(|e| e.delivery.clone())
                .collect())
        }

        fn delivered(
            &mut self,
            alert: &str,
            webhook: usize,
            _: DateTime<Utc>,
        ) -> Result<(), Unknown> {
            self.update(alert, webhook, |e| {
                e.delivery.attempts += 1;
                e.state = State::Delivered;
            })
        }

        fn failed(
            &mut self,
            alert: &str,
            webhook: usize,
            error: &str,
            retry_at: DateTime<Utc>,
        ) -> Result<(), Unknown> {
            self.update(alert, webhook, |e| {
                e.delivery.attempts += 1;
                e.errors.push(error.to_string());
                e.retry_at = retry_at;
            })
        }

        fn abandoned(&mut self, alert: &str, webhook: usize, error: &str) -> Result<(), Unknown> {
            self.update(alert, webhook, |e| {
                e.state = State::Abandoned(error.to_string())
            })
        }

        fn pending(&mut self) -> Result<u64, Unknown> {
            Ok(self
                .0
                .lock()
                .unwrap()
                .iter()
                .filter(|e| e.state == State::Pending)
                .count() as u64)
        }
    }

    // -----------------------------------------------------------------------------------------
    // A receiver: a real HTTP server on 127.0.0.1 that records requests and answers as told

    #[derive(Debug, Clone)]
    enum Answer {
        Status(u16),
        RetryAfter(u16, &'static str),
        Hang,
    }

    #[derive(Debug, Clone)]
    struct Received {
        path: String,
        headers: HeaderMap,
        body: Bytes,
    }

    #[derive(Default)]
    struct Script {
        next: VecDeque<Answer>,
        otherwise: Option<Answer>,
        received: Vec<Received>,
    }

    struct Receiver {
        addr: SocketAddr,
        script: Arc<Mutex<Script>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl Receiver {
        /// Answers 200 unless told otherwise.
        async fn start() -> Receiver {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let script = Arc::new(Mutex::new(Script::default()));
            let shared = Arc::clone(&script);
            let task = tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        return;
                    };
                    let script = Arc::clone(&shared);
                    tokio::spawn(async move {
                        let service =
                            hyper::service::service_fn(move |req| answer(req, Arc::clone(&script)));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
            Receiver { addr, script, task }
        }

        /// A path that, like Slack's, is a secret: it must never reach a log or an error.
        fn url(&self) -> String {
            format!("http://{}/hooks/T0/s3cr3t-path", self.addr)
        }

        fn then(&self, answers: impl IntoIterator<Item = Answer>) {
            self.script.lock().unwrap().next.extend(answers);
        }

        fn always(&self, answer: Answer) {
            self.script.lock().unwrap().otherwise = Some(answer);
        }

        fn received(&self) -> Vec<Received> {
            self.script.lock().unwrap().received.clone()
        }

        fn count(&self) -> usize {
            self.script.lock().unwrap().received.len()
        }

        fn ids(&self) -> Vec<String> {
            self.received()
                .iter()
                .map(|r| r.headers[HEADER_ID].to_str().unwrap().to_string())
                .collect()
        }
    }

    impl Drop for Receiver {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    async fn answer(
        req: hyper::Request<Incoming>,
        script: Arc<Mutex<Script>>,
    ) -> Result<hyper::Response<Full<Bytes>>, Infallible> {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let answer = {
            let mut script = script.lock().unwrap();
            script.received.push(Received {
                path: parts.uri.path().to_string(),
                headers: parts.headers,
                body,
            });
            let otherwise = script.otherwise.clone();
            script
                .next
                .pop_front()
                .or(otherwise)
                .unwrap_or(Answer::Status(200))
        };
        let reply = |code: u16| {
            hyper::Response::builder()
                .status(code)
                .body(Full::new(Bytes::from_static(b"receiver says so")))
                .unwrap()
        };
        Ok(match answer {
            Answer::Status(code) => reply(code),
            Answer::RetryAfter(code, after) => {
                let mut r = reply(code);
                r.headers_mut()
                    .insert("retry-after", HeaderValue::from_static(after));
                r
            }
            Answer::Hang => std::future::pending().await,
        })
    }

    // -----------------------------------------------------------------------------------------
    // The notifier under test

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 10, 30, 0).unwrap()
    }

    /// An alert of `kind` for `job`'s slot at 10:`minute`.
    fn alert(kind: AlertKind, job: &str, minute: u32) -> Alert {
        let slot = Utc.with_ymd_and_hms(2026, 11, 30, 10, minute, 0).unwrap();
        let outcome = match kind {
            AlertKind::Failed => RunState::Failed,
            AlertKind::TimedOut => RunState::TimedOut,
            AlertKind::DeadLettered => RunState::DeadLettered,
            AlertKind::Late => RunState::Late,
            AlertKind::Missed => RunState::Missed,
            AlertKind::Recovered => RunState::Succeeded,
        };
        Alert {
            id: Alert::id_for(kind, job, slot),
            kind,
            job: job.to_string(),
            slot,
            dispatch_id: (kind != AlertKind::Missed)
                .then(|| crate::wire::dispatch_id(job, &crate::wire::slot_text(slot))),
            outcome,
            attempts: 3,
            last_exit_code: Some(3),
            stderr_tail: "line one\n<b>boom</b> & done\n".into(),
            raised_at: slot + TimeDelta::minutes(5),
        }
    }

    fn webhook(receiver: &Receiver) -> Webhook {
        Webhook {
            url: receiver.url(),
            events: AlertKind::ALL.to_vec(),
            secret: Some(b"a-secret-of-32-bytes-for-testing".to_vec()),
            format: Format::Json,
        }
    }

    fn quick() -> Settings {
        Settings {
            page_url: Some("http://monitor.example:9466".into()),
            poll: Duration::from_millis(5),
            request_timeout: Duration::from_millis(300),
            ..Settings::default()
        }
    }

    struct Notifier {
        outbox: MemOutbox,
        clock: ManualClock,
        registry: Registry,
        cancel: CancellationToken,
        task: tokio::task::JoinHandle<Result<(), NotifyError>>,
    }

    impl Notifier {
        fn start(webhooks: Vec<Webhook>, settings: Settings, outbox: MemOutbox) -> Notifier {
            let clock = ManualClock::new(t0());
            let mut registry = Registry::default();
            let metrics = NotifyMetrics::register(&mut registry);
            let cancel = CancellationToken::new();
            let task = tokio::spawn(run(
                outbox.clone(),
                webhooks,
                settings,
                Arc::new(clock.clone()),
                metrics,
                cancel.clone(),
            ));
            Notifier {
                outbox,
                clock,
                registry,
                cancel,
                task,
            }
        }

        /// Moves the clock just past `at` (the clock keeps milliseconds).
        fn set_clock(&self, at: DateTime<Utc>) {
            self.clock.set(at + TimeDelta::milliseconds(1));
        }

        async fn stop(self) -> String {
            self.cancel.cancel();
            tokio::time::timeout(Duration::from_secs(5), self.task)
                .await
                .expect("the notifier stops within the request timeout")
                .expect("joined")
                .expect("no outbox error");
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, &self.registry).unwrap();
            text
        }
    }

    /// Waits (real time, at most 10 s) until `done` holds.
    async fn wait_for(what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no {what} within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Lets the notifier run a few polls: for asserting that nothing more happens.
    async fn settle_a_while() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    fn has_line(metrics: &str, line: &str) -> bool {
        metrics.lines().any(|l| l == line)
    }

    // -----------------------------------------------------------------------------------------
    // Delivery

    #[tokio::test]
    async fn each_alert_reaches_each_webhook_once_signed_with_its_id_as_the_key() {
        let (one, two) = (Receiver::start().await, Receiver::start().await);
        let outbox = MemOutbox::default();
        let alerts = [
            alert(AlertKind::Failed, "nightly", 0),
            alert(AlertKind::Late, "hourly", 1),
            alert(AlertKind::Missed, "backup", 2),
        ];
        for a in &alerts {
            outbox.queue(a, 0, t0());
            outbox.queue(a, 1, t0());
        }
        let n = Notifier::start(vec![webhook(&one), webhook(&two)], quick(), outbox);
        wait_for("six deliveries", || {
            n.outbox
                .0
                .lock()
                .unwrap()
                .iter()
                .all(|e| e.state == State::Delivered)
        })
        .await;
        settle_a_while().await;
        let want: Vec<String> = alerts.iter().map(|a| a.id.clone()).collect();
        for r in [&one, &two] {
            let mut ids = r.ids();
            ids.sort();
            let mut want = want.clone();
            want.sort();
            assert_eq!(ids, want, "one request per alert");
            for got in r.received() {
                assert_eq!(got.path, "/hooks/T0/s3cr3t-path");
                assert_eq!(got.headers["content-type"], "application/json");
                assert_eq!(got.headers[HEADER_TIMESTAMP], t0().timestamp().to_string());
                assert!(got.headers[HEADER_SIGNATURE]
                    .to_str()
                    .unwrap()
                    .starts_with("v1="));
            }
        }
        let metrics = n.stop().await;
        assert!(
            has_line(
                &metrics,
                r#"cronq_monitor_alerts_sent_total{kind="failed"} 2"#
            ),
            "{metrics}"
        );
        assert!(
            has_line(
                &metrics,
                r#"cronq_monitor_alerts_sent_total{kind="missed"} 2"#
            ),
            "{metrics}"
        );
        assert!(
            has_line(
                &metrics,
                r#"cronq_monitor_alerts_failed_total{kind="failed"} 0"#
            ),
            "{metrics}"
        );
        assert!(
            has_line(&metrics, "cronq_monitor_alerts_pending 0"),
            "{metrics}"
        );
        assert!(
            has_line(&metrics, "cronq_monitor_alert_attempts_failed_total 0"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn a_500_then_a_200_is_one_delivery_of_two_attempts_a_second_apart() {
        let receiver = Receiver::start().await;
        receiver.then([Answer::Status(500)]);
        let outbox = MemOutbox::default();
        let a = alert(AlertKind::Failed, "nightly", 0);
        outbox.queue(&a, 0, t0());
        let n = Notifier::start(vec![webhook(&receiver)], quick(), outbox);
        wait_for("the failed attempt", || {
            n.outbox.entry(&a, 0).delivery.attempts == 1
        })
        .await;
        let entry = n.outbox.entry(&a, 0);
        assert_eq!(entry.state, State::Pending);
        assert!(
            entry.errors[0].starts_with("HTTP 500 Internal Server Error: receiver says so"),
            "{:?}",
            entry.errors
        );
        let wait = entry.retry_at - t0();
        assert!(
            wait >= TimeDelta::milliseconds(500) && wait <= TimeDelta::seconds(1),
            "the first retry within [0.5 s, 1 s]: {wait}"
        );
        settle_a_while().await;
        assert_eq!(receiver.count(), 1, "not before its retry time");
        n.set_clock(entry.retry_at);
        wait_for("the delivery", || {
            n.outbox.entry(&a, 0).state == State::Delivered
        })
        .await;
        assert_eq!(n.outbox.entry(&a, 0).delivery.attempts, 2);
        assert_eq!(
            receiver.ids(),
            [a.id.clone(), a.id.clone()],
            "the same key twice"
        );
        let metrics = n.stop().await;
        assert!(
            has_line(
                &metrics,
                r#"cronq_monitor_alerts_sent_total{kind="failed"} 1"#
            ),
            "{metrics}"
        );
        assert!(
            has_line(&metrics, "cronq_monitor_alert_attempts_failed_total 1"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn a_receiver_failing_for_24_hours_has_the_delivery_abandoned_after_backoff_to_10_minutes(
    ) {
        let receiver = Receiver::start().await;
        receiver.always(Answer::Status(503));
        let outbox = MemOutbox::default();
        let a = alert(AlertKind::Late, "hourly", 0);
        outbox.queue(&a, 0, t0());
        let n = Notifier::start(vec![webhook(&receiver)], quick(), outbox);
        let mut waits = Vec::new();
        loop {
            let attempts = receiver.count();
            wait_for("an attempt settled", || {
                let e = n.outbox.entry(&a, 0);
                e.state != State::Pending || e.delivery.attempts as usize == attempts.max(1)
            })
            .await;
            let e = n.outbox.entry(&a, 0);
            if e.state != State::Pending {
                break;
            }
            if e.delivery.attempts as usize == attempts
                && attempts > 0
                && e.retry_at > n.clock.now()
            {
                waits.push((e.retry_at - n.clock.now()).to_std().unwrap());
                n.set_clock(e.retry_at);
                wait_for("the next attempt", || {
                    receiver.count() > attempts || n.outbox.entry(&a, 0).state != State::Pending
                })
                .await;
            }
        }
        let e = n.outbox.entry(&a, 0);
        let State::Abandoned(reason) = &e.state else {
            unreachable!()
        };
        assert!(
            reason.starts_with(&format!(
                "gave up after {} attempts within 1day: HTTP 503",
                receiver.count()
            )),
            "{reason}"
        );
        assert!(
            n.clock.now() <= t0() + TimeDelta::hours(24),
            "no attempt after 24 h: {}",
            n.clock.now()
        );
        assert!(
            n.clock.now() >= t0() + TimeDelta::hours(23),
            "retried for about 24 h: {}",
            n.clock.now()
        );
        // 1 s doubling, jittered into [d/2, d], up to 10 min.
        for (i, w) in waits.iter().enumerate() {
            let full = FIRST_RETRY.saturating_mul(1 << i.min(20)).min(MAX_RETRY);
            assert!(
                *w >= full / 2 && *w <= full + Duration::from_millis(1),
                "wait {i}: {w:?} for {full:?}"
            );
        }
        assert!(
            (144..=300).contains(&receiver.count()),
            "{} attempts",
            receiver.count()
        );
        let metrics = n.stop().await;
        assert!(
            has_line(
                &metrics,
                r#"cronq_monitor_alerts_failed_total{kind="late"} 1"#
            ),
            "{metrics}"
        );
        assert!(
            has_line(
                &metrics,
                &format!(
                    "cronq_monitor_alert_attempts_failed_total {}",
                    receiver.count()
                )
            ),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn a_410_is_abandoned_at_once_and_a_429_waits_for_its_retry_after() {
        let gone = Receiver::start().await;
        gone.always(Answer::Status(410));
        let busy = Receiver::start().await;
        busy.then([Answer::RetryAfter(429, "120")]);
        let outbox = MemOutbox::default();
        let a = alert(AlertKind::Failed, "nightly", 0);
        outbox.queue(&a, 0, t0());
        outbox.queue(&a, 1, t0());
        let n = Notifier::start(vec![webhook(&gone), webhook(&busy)], quick(), outbox);
        wait_for("the 410 abandoned", || {
            n.outbox.entry(&a, 0).state != State::Pending
        })
        .await;
        assert_eq!(
            n.outbox.entry(&a, 0).state,
            State::Abandoned("HTTP 410 Gone: receiver says so".into())
        );
        wait_for("the 429 recorded", || {
            n.outbox.entry(&a, 1).delivery.attempts == 1
        })
        .await;
        assert_eq!(
            n.outbox.entry(&a, 1).retry_at,
            t0() + TimeDelta::seconds(120)
        );
        n.clock.set(t0() + TimeDelta::seconds(119));
        settle_a_while().await;
        assert_eq!(
            (gone.count(), busy.count()),
            (1, 1),
            "no retry of a 410; the 429 waits"
        );
        n.set_clock(t0() + TimeDelta::seconds(120));
        wait_for("the delivery", || {
            n.outbox.entry(&a, 1).state == State::Delivered
        })
        .await;
        let metrics = n.stop().await;
        assert!(
            has_line(
                &metrics,
                r#"cronq_monitor_alerts_failed_total{kind="failed"} 1"#
            ),
            "{metrics}"
        );
        assert!(
            has_line(
                &metrics,
                r#"cronq_monitor_alerts_sent_total{kind="failed"} 1"#
            ),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn a_receiver_that_hangs_times_out_and_is_retried() {
        let receiver = Receiver::start().await;
        receiver.then([Answer::Hang]);
        let outbox = MemOutbox::default();
        let a = alert(AlertKind::TimedOut, "slow", 0);
        outbox.queue(&a, 0, t0());
        let n = Notifier::start(vec![webhook(&receiver)], quick(), outbox);
        wait_for("the timeout", || {
            n.outbox.entry(&a, 0).delivery.attempts == 1
        })
        .await;
        let e = n.outbox.entry(&a, 0);
        assert_eq!(e.errors, ["no answer within 300ms"]);
        n.set_clock(e.retry_at);
        wait_for("the delivery", || {
            n.outbox.entry(&a, 0).state == State::Delivered
        })
        .await;
        n.stop().await;
    }

    #[tokio::test]
    async fn no_more_posts_than_the_concurrency_are_in_flight() {
        let receiver = Receiver::start().await;
        receiver.always(Answer::Hang);
        let outbox = MemOutbox::default();
        for minute in 0..5 {
            outbox.queue(&alert(AlertKind::Failed, "nightly", minute), 0, t0());
        }
        let settings = Settings {
            concurrency: 2,
            request_timeout: Duration::from_millis(200),
            ..quick()
        };
        let n = Notifier::start(vec![webhook(&receiver)], settings, outbox);
        wait_for("two requests", || receiver.count() == 2).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(receiver.count(), 2, "the other three wait for a slot");
        wait_for("every alert tried", || receiver.count() >= 5).await;
        n.stop().await;
    }

    #[tokio::test]
    async fn a_delivery_queued_more_than_24_hours_ago_is_abandoned_unsent() {
        let receiver = Receiver::start().await;
        let outbox = MemOutbox::default();
        let a = alert(AlertKind::Missed, "backup", 0);
        outbox.queue(&a, 0, t0() - TimeDelta::hours(25));
        let n = Notifier::start(vec![webhook(&receiver)], quick(), outbox);
        wait_for("the expiry", || {
            n.outbox.entry(&a, 0).state != State::Pending
        })
        .await;
        assert_eq!(
            n.outbox.entry(&a, 0).state,
            State::Abandoned("expired: not delivered within 1day of being queued".into())
        );
        assert_eq!(receiver.count(), 0);
        n.stop().await;
    }

    #[tokio::test]
    async fn a_flapping_job_is_rate_limited_per_job_and_the_excess_counted() {
        let receiver = Receiver::start().await;
        let outbox = MemOutbox::default();
        let flapping: Vec<Alert> = (0..4)
            .map(|m| alert(AlertKind::Failed, "flappy", m))
            .collect();
        let steady = alert(AlertKind::Failed, "steady", 0);
        for a in &flapping {
            outbox.queue(a, 0, t0());
        }
        outbox.queue(&steady, 0, t0());
        let settings = Settings {
            rate_limit: RateLimit {
                max: 2,
                window: Duration::from_secs(600),
            },
            ..quick()
        };
        let n = Notifier::start(vec![webhook(&receiver)], settings, outbox);
        wait_for("every delivery settled", || {
            n.outbox
                .0
                .lock()
                .unwrap()
                .iter()
                .all(|e| e.state != State::Pending)
        })
        .await;
        let mut ids = receiver.ids();
        ids.sort();
        let mut want = vec![
            flapping[0].id.clone(),
            flapping[1].id.clone(),
            steady.id.clone(),
        ];
        want.sort();
        assert_eq!(ids, want);
        for a in &flapping[2..] {
            assert_eq!(
                n.outbox.entry(a, 0).state,
                State::Abandoned("rate limited: job flappy had 2 alerts within 2/10m".into())
            );
        }
        // The window slides: ten minutes on, the job's next alert goes out.
        let later_one = alert(AlertKind::Recovered, "flappy", 20);
        n.clock
            .set(t0() + TimeDelta::minutes(10) + TimeDelta::seconds(1));
        n.outbox.queue(&later_one, 0, n.clock.now());
        wait_for("the next alert", || {
            n.outbox.entry(&later_one, 0).state == State::Delivered
        })
        .await;
        let metrics = n.stop().await;
        assert!(
            has_line(&metrics, "cronq_monitor_alerts_suppressed_total 2"),
            "{metrics}"
        );
        assert!(
            has_line(
                &metrics,
                r#"cronq_monitor_alerts_failed_total{kind="failed"} 0"#
            ),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn a_webhook_gets_only_the_kinds_of_its_events() {
        let (only_failed, everything) = (Receiver::start().await, Receiver::start().await);
        let webhooks = vec![
            Webhook {
                events: vec![AlertKind::Failed],
                ..webhook(&only_failed)
            },
            webhook(&everything),
        ];
        assert_eq!(
            subscribers(&webhooks, AlertKind::Late).collect::<Vec<_>>(),
            [1]
        );
        assert_eq!(
            subscribers(&webhooks, AlertKind::Failed).collect::<Vec<_>>(),
            [0, 1]
        );
        let outbox = MemOutbox::default();
        let (failed, late) = (
            alert(AlertKind::Failed, "nightly", 0),
            alert(AlertKind::Late, "nightly", 1),
        );
        // A writer that queued for every webhook, and one for a webhook no longer configured.
        for a in [&failed, &late] {
            outbox.queue(a, 0, t0());
            outbox.queue(a, 1, t0());
        }
        outbox.queue(&failed, 2, t0());
        let n = Notifier::start(webhooks, quick(), outbox);
        wait_for("every delivery settled", || {
            n.outbox
                .0
                .lock()
                .unwrap()
                .iter()
                .all(|e| e.state != State::Pending)
        })
        .await;
        assert_eq!(only_failed.ids(), std::slice::from_ref(&failed.id));
        assert_eq!(everything.ids().len(), 2);
        assert_eq!(
            n.outbox.entry(&late, 0).state,
            State::Abandoned("not subscribed: this webhook's events exclude late".into())
        );
        assert_eq!(
            n.outbox.entry(&failed, 2).state,
            State::Abandoned("no --webhook number 3 is configured now".into())
        );
        let metrics = n.stop().await;
        assert!(
            has_line(
                &metrics,
                r#"cronq_monitor_alerts_failed_total{kind="late"} 0"#
            ),
            "{metrics}"
        );
    }

    // -----------------------------------------------------------------------------------------
    // The body and the signature, as a receiver sees them

    /// The Python snippet of docs/contracts.md ("Verifying a signature").
    fn documented_python() -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/contracts.md");
        let doc = std::fs::read_to_string(&path).unwrap();
        let section = doc
            .split_once("### Verifying a signature")
            .expect("docs/contracts.md has ### Verifying a signature")
            .1;
        let code = section
            .split_once("```python\n")
            .expect("a python block")
            .1
            .split_once("\n```")
            .expect("its end")
            .0;
        code.to_string()
    }

    #[tokio::test]
    async fn the_signature_verifies_in_rust_and_with_the_documented_python() {
        let receiver = Receiver::start().await;
        let outbox = MemOutbox::default();
        let a = alert(AlertKind::DeadLettered, "nightly", 0);
        outbox.queue(&a, 0, t0());
        let hook = webhook(&receiver);
        let secret = hook.secret.clone().unwrap();
        let n = Notifier::start(vec![hook], quick(), outbox);
        wait_for("the delivery", || receiver.count() == 1).await;
        n.stop().await;
        let got = &receiver.received()[0];
        let timestamp = got.headers[HEADER_TIMESTAMP].to_str().unwrap().to_string();
        let sent = got.headers[HEADER_SIGNATURE].to_str().unwrap().to_string();
        // In Rust, from the parts.
        let mut mac = Hmac::<Sha256>::new_from_slice(&secret).unwrap();
        mac.update(format!("{timestamp}.").as_bytes());
        mac.update(&got.body);
        let hex = sent.strip_prefix("v1=").unwrap();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        mac.verify_slice(&bytes).expect("the signature verifies");
        assert_eq!(hex, hex.to_lowercase());

        // With the documented Python, against the captured request.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("body"), &got.body).unwrap();
        let headers: serde_json::Map<String, serde_json::Value> = got
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), json!(v.to_str().unwrap())))
            .collect();
        let harness = r#"
import json, os, sys
class Headers(dict):
    def get(self, name, default=None):
        return super().get(name.lower(), default)
headers = Headers(json.loads(os.environ["HEADERS"]))
body = open(os.environ["BODY"], "rb").read()
secret = os.environ["SECRET"].encode()
ts = int(headers.get("X-Cronq-Timestamp"))
print(verify(secret, headers, body, now=ts + 10),
      verify(secret, headers, body.replace(b"nightly", b"nightlz"), now=ts + 10),
      verify(b"another-secret-of-32-bytes-here!", headers, body, now=ts + 10),
      verify(secret, headers, body, now=ts + 301))
"#;
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(format!("{}\n{harness}", documented_python()))
            .env("HEADERS", serde_json::Value::Object(headers).to_string())
            .env("BODY", dir.path().join("body"))
            .env("SECRET", String::from_utf8(secret).unwrap())
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "True False False False",
            "genuine, tampered body, wrong secret, outside the replay window"
        );
    }

    #[test]
    fn the_json_body_has_every_documented_field() {
        let a = alert(AlertKind::Failed, "nightly", 0);
        let v = json_body(&a, Some("http://monitor.example:9466/"));
        assert_eq!(
            v,
            json!({
                "v": 1,
                "id": "failed:nightly@2026-11-30T10:00:00Z",
                "kind": "failed",
                "job": "nightly",
                "slot": "2026-11-30T10:00:00Z",
                "dispatchId": "nightly@2026-11-30T10:00:00Z",
                "outcome": "failed",
                "attempts": 3,
                "lastExitCode": 3,
                "stderrTail": "line one\n<b>boom</b> & done\n",
                "raisedAt": "2026-11-30T10:05:00Z",
                "link": "http://monitor.example:9466/runs/nightly@2026-11-30T10:00:00Z",
            })
        );
        let missed = Alert {
            last_exit_code: None,
            attempts: 0,
            stderr_tail: String::new(),
            ..alert(AlertKind::Missed, "a job.x", 7)
        };
        let v = json_body(&missed, None);
        assert_eq!(v["dispatchId"], serde_json::Value::Null);
        assert_eq!(v["lastExitCode"], serde_json::Value::Null);
        assert_eq!(v["link"], serde_json::Value::Null);
        assert_eq!(
            run_link("http://m:9466", &missed),
            "http://m:9466/runs/a%20job.x@2026-11-30T10:07:00Z",
            "a missed slot links by job@slot, escaped"
        );
    }

    #[test]
    fn the_slack_body_is_one_line_of_text_and_a_section_of_facts() {
        let a = alert(AlertKind::TimedOut, "nightly", 0);
        let v = slack_body(&a, Some("http://monitor.example:9466"));
        assert_eq!(
            v["text"],
            "cronq: job nightly timed out (slot 2026-11-30T10:00:00Z)"
        );
        let blocks = v["blocks"].as_array().unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0]["type"], "section");
        assert_eq!(blocks[0]["text"]["type"], "mrkdwn");
        assert_eq!(
            blocks[0]["text"]["text"],
            "*<http://monitor.example:9466/runs/nightly@2026-11-30T10:00:00Z|nightly>* timed out"
        );
        let fields: Vec<&str> = blocks[0]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| {
                assert_eq!(f["type"], "mrkdwn");
                f["text"].as_str().unwrap()
            })
            .collect();
        assert_eq!(
            fields,
            [
                "*Slot*\n2026-11-30T10:00:00Z",
                "*Outcome*\ntimed_out",
                "*Attempts*\n3",
                "*Last exit code*\n3",
                "*Raised*\n2026-11-30T10:05:00Z",
                "*Dispatch*\nnightly@2026-11-30T10:00:00Z",
            ]
        );
        assert!(fields.len() <= 10, "Slack takes at most 10 fields");
        assert_eq!(
            blocks[1]["text"]["text"],
            "*stderr (tail)*\n```line one\n&lt;b&gt;boom&lt;/b&gt; &amp; done```"
        );
        // A long stderr is cut to its end, within a section's 3000 characters.
        let long = Alert {
            stderr_tail: format!("{}END", "x".repeat(4000)),
            ..a
        };
        let text = slack_body(&long, None)["blocks"][1]["text"]["text"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(
            text.len() < 3000 && text.ends_with("END```"),
            "{}",
            text.len()
        );
    }

    #[tokio::test]
    async fn a_slack_webhook_receives_the_slack_body() {
        let receiver = Receiver::start().await;
        let outbox = MemOutbox::default();
        let a = alert(AlertKind::Recovered, "nightly", 0);
        outbox.queue(&a, 0, t0());
        let hook = Webhook {
            format: Format::Slack,
            secret: None,
            ..webhook(&receiver)
        };
        let n = Notifier::start(vec![hook], quick(), outbox);
        wait_for("the delivery", || receiver.count() == 1).await;
        n.stop().await;
        let got = &receiver.received()[0];
        let v: serde_json::Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(v, slack_body(&a, quick().page_url.as_deref()));
        assert!(
            got.headers.get(HEADER_SIGNATURE).is_none(),
            "no secret, no signature"
        );
        assert_eq!(got.headers[HEADER_ID], a.id.as_str());
    }

    // -----------------------------------------------------------------------------------------
    // The pure parts

    #[test]
    fn retry_delays_double_from_a_second_to_ten_minutes_within_their_jitter() {
        for failures in 1..=40u32 {
            let full = FIRST_RETRY
                .saturating_mul(1 << (failures - 1).min(20))
                .min(MAX_RETRY);
            assert_eq!(retry_delay(failures, 0.0), full / 2, "{failures}");
            assert_eq!(retry_delay(failures, 1.0), full, "{failures}");
            let mid = retry_delay(failures, 0.5);
            assert!(mid > full / 2 && mid < full);
        }
        assert_eq!(
            retry_delay(1, 0.999),
            Duration::from_millis(999) + Duration::from_micros(500)
        );
        assert_eq!(retry_delay(11, 1.0), MAX_RETRY, "2^10 s is past 10 min");
        assert_eq!(retry_delay(0, 1.0), FIRST_RETRY);
    }

    #[test]
    fn replies_are_judged_delivered_retried_or_abandoned() {
        let now = t0();
        let none = HeaderMap::new();
        let judge = |code: u16| judge_reply(StatusCode::from_u16(code).unwrap(), &none, b"", now);
        for code in [200, 201, 202, 204] {
            assert_eq!(judge(code), Verdict::Delivered, "{code}");
        }
        for code in [408, 429, 500, 502, 503, 504] {
            assert!(
                matches!(judge(code), Verdict::Retry { after: None, .. }),
                "{code}"
            );
        }
        for code in [301, 302, 400, 401, 403, 404, 405, 410, 413, 422] {
            assert!(matches!(judge(code), Verdict::Abandon { .. }), "{code}");
        }
        let with = |value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("retry-after", HeaderValue::from_static(value));
            h
        };
        let after = |code: u16, value| match judge_reply(
            StatusCode::from_u16(code).unwrap(),
            &with(value),
            b"",
            now,
        ) {
            Verdict::Retry { after, .. } => after,
            other => panic!("{other:?}"),
        };
        assert_eq!(after(429, "30"), Some(Duration::from_secs(30)));
        assert_eq!(after(503, "30"), Some(Duration::from_secs(30)));
        assert_eq!(after(500, "30"), None, "only 429 and 503 say when");
        assert_eq!(
            after(429, "Mon, 30 Nov 2026 10:31:00 GMT"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            after(429, "Mon, 30 Nov 2026 10:00:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(after(429, "86400"), Some(MAX_RETRY_AFTER));
        assert_eq!(after(429, "soon"), None);
        assert_eq!(
            judge_reply(StatusCode::BAD_REQUEST, &none, b"bad\nfield", now),
            Verdict::Abandon {
                error: "HTTP 400 Bad Request: bad field".into()
            }
        );
    }

    #[test]
    fn the_rate_limit_slides_per_webhook_and_job() {
        let mut limiter = RateLimiter::new(RateLimit {
            max: 2,
            window: Duration::from_secs(600),
        });
        let at = |secs: i64| t0() + TimeDelta::seconds(secs);
        assert!(limiter.admit(0, "a", at(0)));
        assert!(limiter.admit(0, "a", at(100)));
        assert!(!limiter.admit(0, "a", at(200)));
        assert!(limiter.admit(0, "b", at(200)), "another job");
        assert!(limiter.admit(1, "a", at(200)), "another webhook");
        assert!(
            !limiter.admit(0, "a", at(599)),
            "the window is (now - 10 min, now]"
        );
        assert!(limiter.admit(0, "a", at(600)), "the first left the window");
        assert!(!limiter.admit(0, "a", at(650)));
        assert!(limiter.admit(0, "a", at(701)));
    }

    #[test]
    fn the_flags_are_checked_when_parsed() {
        assert_eq!(
            parse_url("http://hooks.internal:8080/cronq").unwrap(),
            "http://hooks.internal:8080/cronq"
        );
        let err = parse_url("https://hooks.slack.com/services/T/B/X").unwrap_err();
        assert!(
            err.to_string().contains("https:// is not supported"),
            "{err}"
        );
        assert!(err.to_string().contains("TLS-terminating proxy"), "{err}");
        for bad in ["ftp://x/y", "hooks.internal/cronq", "http://", "not a url"] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_page_url("https://monitor.example/").unwrap(),
            "https://monitor.example"
        );
        assert!(parse_page_url("monitor.example").is_err());

        assert_eq!(parse_events("all").unwrap(), AlertKind::ALL);
        assert_eq!(
            parse_events("failed, late,MISSED").unwrap(),
            [AlertKind::Failed, AlertKind::Late, AlertKind::Missed]
        );
        let err = parse_events("failed,lat").unwrap_err().to_string();
        assert_eq!(
            err,
            "--webhook-events \"failed,lat\": \"lat\" is not an alert kind; the kinds are failed, \
             timed_out, dead_lettered, late, missed, recovered (or all)"
        );
        assert!(parse_events("").is_err());
        assert!(parse_events("failed,,late").is_err());
        assert!(parse_events("late,late")
            .unwrap_err()
            .to_string()
            .contains("late is given twice"));

        assert_eq!(parse_format("json").unwrap(), Format::Json);
        assert_eq!("Slack".parse::<Format>().unwrap(), Format::Slack);
        assert_eq!(
            parse_format("xml").unwrap_err().to_string(),
            "--webhook-format \"xml\": expected json or slack"
        );

        assert_eq!(parse_rate_limit("5/10m").unwrap(), RateLimit::default());
        assert_eq!(RateLimit::default().to_string(), "5/10m");
        assert_eq!(
            parse_rate_limit("100/1h").unwrap(),
            RateLimit {
                max: 100,
                window: Duration::from_secs(3600)
            }
        );
        for bad in [
            "5", "0/10m", "1001/10m", "5/0s", "5/2days", "x/10m", "5/soon",
        ] {
            assert!(parse_rate_limit(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_secret_file_is_read_trimmed_and_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("secret");
        std::fs::write(&good, "0123456789abcdef0123456789abcdef\n").unwrap();
        assert_eq!(
            read_secret_file(&good).unwrap(),
            b"0123456789abcdef0123456789abcdef"
        );
        let short = dir.path().join("short");
        std::fs::write(&short, "hunter2\n").unwrap();
        let err = read_secret_file(&short).unwrap_err().to_string();
        assert!(
            err.contains("7 bytes is too short") && !err.contains("hunter2"),
            "{err}"
        );
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        assert!(read_secret_file(&empty)
            .unwrap_err()
            .to_string()
            .contains("empty"));
        let missing = dir.path().join("missing");
        assert!(read_secret_file(&missing)
            .unwrap_err()
            .to_string()
            .contains("missing"));

        let hook = Webhook::from_flags(
            "http://hooks.internal:8080/services/s3cr3t",
            Some("failed"),
            Some(&good),
            Some("slack"),
        )
        .unwrap();
        assert_eq!(hook.events, [AlertKind::Failed]);
        assert_eq!(hook.format, Format::Slack);
        let shown = format!("{hook:?}");
        assert!(
            !shown.contains("0123456789abcdef") && !shown.contains("s3cr3t"),
            "{shown}"
        );
        assert_eq!(hook.target(), "http://hooks.internal:8080/…");
        let default = Webhook::from_flags("http://h/x", None, None, None).unwrap();
        assert_eq!(
            (default.events, default.secret, default.format),
            (AlertKind::ALL.to_vec(), None, Format::Json)
        );
    }

    #[test]
    fn the_metrics_are_registered_with_every_kind_at_zero() {
        let mut registry = Registry::default();
        let _ = NotifyMetrics::register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for kind in AlertKind::ALL {
            for family in ["sent", "failed"] {
                let line = format!(
                    "cronq_monitor_alerts_{family}_total{{kind=\"{}\"}} 0",
                    kind.as_str()
                );
                assert!(has_line(&text, &line), "{line}\n{text}");
            }
        }
        for line in [
            "cronq_monitor_alert_attempts_failed_total 0",
            "cronq_monitor_alerts_pending 0",
            "cronq_monitor_alerts_suppressed_total 0",
        ] {
            assert!(has_line(&text, line), "{line}\n{text}");
        }
    }
}
