//! Retry with backoff: the one policy every Kafka call of cronq retries under (connecting, topic
//! metadata and creation, produce, reports, cursor reads).

use std::future::Future;
use std::time::Duration;

/// The longest wait between two retries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Exponential backoff with full jitter: `[d/2, d]` where `d` doubles from `base` up to
/// [`MAX_BACKOFF`].
#[derive(Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    seed: u64,
}

impl Backoff {
    /// Starts at `base` (at least 1 ms).
    pub fn new(base: Duration) -> Backoff {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos() as u64)
            .unwrap_or(1)
            | 1;
        Backoff {
            base: base.max(Duration::from_millis(1)),
            max: MAX_BACKOFF,
            attempt: 0,
            seed,
        }
    }

    /// The same, doubling up to `max` instead of [`MAX_BACKOFF`].
    pub fn with_max(self, max: Duration) -> Backoff {
        Backoff {
            max: max.max(self.base),
            ..self
        }
    }

    /// The next delay.
    pub fn next_delay(&mut self) -> Duration {
        let full = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt += 1;
        // xorshift: jitter needs no cryptographic randomness
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let frac = (self.seed % 1000) as f64 / 1000.0;
        full.mul_f64(0.5 + frac / 2.0)
    }

    /// Failures since the last [`reset`](Self::reset).
    pub fn attempts(&self) -> u32 {
        self.attempt
    }

    /// Back to `base` after a success.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// Runs `attempt` until it succeeds, sleeping a [`Backoff`] from `base` between failures.
/// `failed` hears of each failure (its attempt number, counted from 1, and the wait before the
/// next) and decides how loudly to report it.
pub async fn retry_forever<T, E, Fut>(
    base: Duration,
    mut attempt: impl FnMut() -> Fut,
    mut failed: impl FnMut(&E, u32, Duration),
) -> T
where
    Fut: Future<Output = Result<T, E>>,
{
    let mut backoff = Backoff::new(base);
    loop {
        match attempt().await {
            Ok(v) => return v,
            Err(e) => {
                let delay = backoff.next_delay();
                failed(&e, backoff.attempts(), delay);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// A delay rounded to milliseconds, for logs.
pub fn round_ms(d: Duration) -> Duration {
    Duration::from_millis(d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_the_cap() {
        let mut b = Backoff::new(Duration::from_millis(100));
        let mut previous_full = Duration::ZERO;
        for attempt in 0..12u32 {
            let d = b.next_delay();
            let full = Duration::from_millis(100)
                .saturating_mul(1 << attempt)
                .min(MAX_BACKOFF);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} not in [{:?}, {full:?}]",
                full / 2
            );
            assert!(full >= previous_full);
            previous_full = full;
        }
        assert_eq!(b.attempts(), 12);
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn retry_forever_reports_each_failure_and_returns_the_first_success() {
        let mut calls = 0u32;
        let mut reported = Vec::new();
        let got: u32 = retry_forever(
            Duration::from_millis(1),
            || {
                calls += 1;
                let n = calls;
                async move {
                    if n < 4 {
                        Err(format!("failure {n}"))
                    } else {
                        Ok(n)
                    }
                }
            },
            |e: &String, attempt, _| reported.push((e.clone(), attempt)),
        )
        .await;
        assert_eq!(got, 4);
        assert_eq!(
            reported,
            [
                ("failure 1".to_string(), 1),
                ("failure 2".to_string(), 2),
                ("failure 3".to_string(), 3)
            ]
        );
    }
}
