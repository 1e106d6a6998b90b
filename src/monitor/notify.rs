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
    /// `--webhook URL` (or the page URL).
    #[error("--webhook {url:?}: {reason}")]
    Url {
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
    let bad = |reason: &str| WebhookFlagError::Url {
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

/// RFC 3986 `pchar`s kept (unreserved, `@`, `:`), every other byte `%XX`.
fn path_segment(text: &str) -> String {
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
    #[allow(clippy::expect_used)]
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
