//! What keeps one client from exhausting a member: a token bucket per API token (`--api-rate`
//! requests a second, a second's worth of burst), and the parse of `If-Match`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A token bucket per API token name.
#[derive(Debug)]
pub struct RateLimiter {
    per_second: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    level: f64,
    at: Instant,
}

impl RateLimiter {
    /// `per_second` requests a second per token, with a burst of as many.
    pub fn new(per_second: u32) -> RateLimiter {
        RateLimiter {
            per_second: f64::from(per_second.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request of `token` at `now`; `Err` with how long until the next one may go.
    pub fn take(&self, token: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = buckets.entry(token.to_string()).or_insert(Bucket {
            level: self.per_second,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.level = (bucket.level + elapsed * self.per_second).min(self.per_second);
        bucket.at = now;
        if bucket.level >= 1.0 {
            bucket.level -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.level) / self.per_second,
            ))
        }
    }
}

/// What `If-Match` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// `*`: the job must exist.
    Exists,
    /// One of these versions must be the job's current one.
    Versions(Vec<i64>),
}

impl IfMatch {
    /// Whether `current` (the job's version; `None` when it does not exist) satisfies it.
    pub fn holds(&self, current: Option<i64>) -> bool {
        match (self, current) {
            (IfMatch::Exists, c) => c.is_some(),
            (IfMatch::Versions(v), Some(c)) => v.contains(&c),
            (IfMatch::Versions(_), None) => false,
        }
    }
}

/// Reads an `If-Match` value: `*`, or versions (decimal offsets), each quoted or not, separated by
/// commas. Weak tags (`W/"…"`) are refused: a version is exact.
pub fn parse_if_match(text: &str) -> Result<IfMatch, String> {
    let text = text.trim();
    if text == "*" {
        return Ok(IfMatch::Exists);
    }
    let mut versions = Vec::new();
    for part in text.split(',') {
        let part = part.trim();
        if part.starts_with("W/") {
            return Err(format!(
                "{part}: a weak tag; a version is exact, like \"17\""
            ));
        }
        let bare = part
            .strip_prefix('"')
            .and_then(|p| p.strip_suffix('"'))
            .unwrap_or(part);
        match bare.parse::<i64>() {
            Ok(v) if v >= 0 && bare.bytes().all(|b| b.is_ascii_digit()) => versions.push(v),
            _ => {
                return Err(format!(
                "{part:?} is not a version (the decimal offset a write replied, like \"17\") or *"
            ))
            }
        }
    }
    Ok(IfMatch::Versions(versions))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_takes_quoted_or_bare_versions_lists_and_star() {
        assert_eq!(parse_if_match("\"17\""), Ok(IfMatch::Versions(vec![17])));
        assert_eq!(parse_if_match(" 17 "), Ok(IfMatch::Versions(vec![17])));
        assert_eq!(
            parse_if_match("\"3\", \"9\""),
            Ok(IfMatch::Versions(vec![3, 9]))
        );
        assert_eq!(parse_if_match("*"), Ok(IfMatch::Exists));
        assert!(parse_if_match("W/\"3\"").unwrap_err().contains("weak"));
        assert!(parse_if_match("\"-1\"").is_err());
        assert!(parse_if_match("\"+1\"").is_err());
        assert!(parse_if_match("abc").unwrap_err().contains("not a version"));
        assert!(parse_if_match("").is_err());
    }

    #[test]
    fn if_match_holds_only_on_the_current_version_and_star_only_when_it_exists() {
        let v = IfMatch::Versions(vec![5]);
        assert!(v.holds(Some(5)));
        assert!(!v.holds(Some(6)));
        assert!(!v.holds(None));
        assert!(IfMatch::Exists.holds(Some(0)));
        assert!(!IfMatch::Exists.holds(None));
    }

    #[test]
    fn a_token_gets_its_rate_with_a_seconds_burst_and_then_waits() {
        let limiter = RateLimiter::new(10);
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(limiter.take("a", t0).is_ok());
        }
        let wait = limiter.take("a", t0).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        // Another token has its own bucket.
        assert!(limiter.take("b", t0).is_ok());
        // A tenth of a second later, one more.
        let later = t0 + Duration::from_millis(100);
        assert!(limiter.take("a", later).is_ok());
        assert!(limiter.take("a", later).is_err());
    }
}
