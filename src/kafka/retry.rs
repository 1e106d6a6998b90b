//! Retry with backoff: the one policy and the one loop every Kafka call of cronq retries under
//! (connecting, topic metadata and creation, produce, reports, cursor reads).
//!
//! ```text
//!   attempt() ──Ok(v)─────────────────────────────────────────────► Ok(v)
//!      │ Err(e)
//!      ├─ e permanent (Classify) ─────────────────────────────────► Err(e) | Stopped::Permanent(e)
//!      └─ e transient: failed(&e, attempt, delay); sleep(delay) ──► attempt() again
//!   token cancelled (during an attempt or a sleep) ───────────────► Stopped::Cancelled
//! ```
//!
//! Three entry points over one loop:
//! - [`retry`]: until a success or a permanent error ([`Classify`]);
//! - [`retry_cancellable`]: the same, or until a [`CancellationToken`] is cancelled;
//! - [`retry_forever`]: every error is worth another attempt (connecting; a topic the producer
//!   waits for; `cronq tail` waiting for its topic).
//!
//! The caller owns the [`Backoff`]: one kept across calls (a partition's lane, a triggered run's
//! topic lookup and produce) goes on doubling until the caller [resets](Backoff::reset) it.
//!
//! We keep our own ~50 lines rather than a crate such as `backon`: the delays are this module's
//! [`Backoff`] (full jitter in `[d/2, d]`, per-caller caps, reset by the caller), the hook hears
//! the attempt number every log line carries, and cancellation is a [`CancellationToken`]; a
//! crate would need a custom backoff, a custom sleeper and a counter to say the same.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::classify::Classify;

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

/// A [`Backoff`] from `base`.
impl From<Duration> for Backoff {
    fn from(base: Duration) -> Backoff {
        Backoff::new(base)
    }
}

/// Why [`retry_cancellable`] ended without a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped<E> {
    /// The attempt failed with an error no retry can fix.
    Permanent(E),
    /// The token was cancelled (the attempt in flight, if any, was dropped).
    Cancelled,
}

/// Runs `attempt` until it succeeds, sleeping `backoff`'s next delay after each transient
/// failure. `failed` hears of each transient failure (its attempt number, counted from the
/// backoff's last reset, and the wait before the next) and decides how loudly to report it. The
/// first permanent error ([`Classify`]) is returned at once, unreported.
pub async fn retry<T, E: Classify, Fut: Future<Output = Result<T, E>>>(
    backoff: &mut Backoff,
    attempt: impl FnMut() -> Fut,
    failed: impl FnMut(&E, u32, Duration),
) -> Result<T, E> {
    let never = std::future::pending::<Infallible>();
    match run(backoff, never, permanent_stops, attempt, failed).await {
        Ok(result) => result,
        Err(never) => match never {},
    }
}

/// [`retry`] that also ends, with [`Stopped::Cancelled`], as soon as `cancel` is cancelled:
/// during a backoff's sleep or an attempt (which is dropped), and before the first attempt when
/// the token is cancelled already.
pub async fn retry_cancellable<T, E: Classify, Fut: Future<Output = Result<T, E>>>(
    backoff: &mut Backoff,
    cancel: &CancellationToken,
    attempt: impl FnMut() -> Fut,
    failed: impl FnMut(&E, u32, Duration),
) -> Result<T, Stopped<E>> {
    match run(
        backoff,
        cancel.cancelled(),
        permanent_stops,
        attempt,
        failed,
    )
    .await
    {
        Ok(result) => result.map_err(Stopped::Permanent),
        Err(()) => Err(Stopped::Cancelled),
    }
}

/// Runs `attempt` until it succeeds, whatever its errors: for a caller to whom a failure only
/// means "not yet". `backoff`: a [`Backoff`], or the `base` of one. `failed` as in [`retry`].
pub async fn retry_forever<T, E, Fut: Future<Output = Result<T, E>>>(
    backoff: impl Into<Backoff>,
    attempt: impl FnMut() -> Fut,
    failed: impl FnMut(&E, u32, Duration),
) -> T {
    let never = std::future::pending::<Infallible>();
    let mut backoff = backoff.into();
    match run(&mut backoff, never, Ok::<E, Infallible>, attempt, failed).await {
        Ok(Ok(value)) => value,
        Ok(Err(never)) | Err(never) => match never {},
    }
}

/// [`Classify`] as [`run`]'s `transient`: a permanent error stops the loop.
fn permanent_stops<E: Classify>(e: E) -> Result<E, E> {
    if e.is_permanent() {
        Err(e)
    } else {
        Ok(e)
    }
}

/// The one loop. `transient` gives an error back when it is worth another attempt, else what
/// the loop ends with (`Ok(Err(_))`); `cancelled` ending first ends the loop with its output
/// (`Err(_)`). A cancellation wins a tie: no attempt starts once it has come.
async fn run<T, E, P, C, Fut: Future<Output = Result<T, E>>>(
    backoff: &mut Backoff,
    cancelled: impl Future<Output = C>,
    transient: impl Fn(E) -> Result<E, P>,
    mut attempt: impl FnMut() -> Fut,
    mut failed: impl FnMut(&E, u32, Duration),
) -> Result<Result<T, P>, C> {
    let mut cancelled = pin!(cancelled);
    loop {
        let result = tokio::select! {
            biased;
            c = &mut cancelled => return Err(c),
            // Called only when polled: a cancelled token wins before the attempt is made.
            result = async { attempt().await } => result,
        };
        let error = match result.map_err(&transient) {
            Ok(value) => return Ok(Ok(value)),
            Err(Ok(error)) => error,
            Err(Err(stop)) => return Ok(Err(stop)),
        };
        let delay = backoff.next_delay();
        failed(&error, backoff.attempts(), delay);
        tokio::select! {
            biased;
            c = &mut cancelled => return Err(c),
            () = tokio::time::sleep(delay) => {}
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
    use crate::kafka::classify::ErrorClass;
    use std::cell::Cell;
    use std::rc::Rc;
    use tokio::time::Instant;

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

    /// A broker that is busy (worth another attempt) or that says no (not).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Answer {
        Busy,
        No,
    }

    impl Classify for Answer {
        fn class(&self) -> ErrorClass {
            match self {
                Answer::Busy => ErrorClass::Transient,
                Answer::No => ErrorClass::Permanent,
            }
        }
    }

    /// An attempt that gives `answers` in turn, then succeeds with the number of calls.
    fn answering(
        answers: &[Answer],
    ) -> (
        impl FnMut() -> std::future::Ready<Result<usize, Answer>> + '_,
        Rc<Cell<usize>>,
    ) {
        let calls = Rc::new(Cell::new(0));
        let counted = Rc::clone(&calls);
        let attempt = move || {
            let n = counted.get();
            counted.set(n + 1);
            std::future::ready(match answers.get(n) {
                Some(answer) => Err(*answer),
                None => Ok(n + 1),
            })
        };
        (attempt, calls)
    }

    #[tokio::test(start_paused = true)]
    async fn transient_errors_are_retried_after_each_backoff_delay() {
        let started = Instant::now();
        let (attempt, calls) = answering(&[Answer::Busy, Answer::Busy]);
        let mut waits = Vec::new();
        let got = retry(
            &mut Backoff::new(Duration::from_secs(1)),
            attempt,
            |e, attempt, delay| waits.push((*e, attempt, delay)),
        )
        .await;
        assert_eq!(got, Ok(3));
        assert_eq!(calls.get(), 3);
        assert_eq!(
            waits.iter().map(|w| (w.0, w.1)).collect::<Vec<_>>(),
            [(Answer::Busy, 1), (Answer::Busy, 2)]
        );
        // The first wait within [0.5 s, 1 s], the second within [1 s, 2 s]; slept, not skipped.
        assert!(waits[0].2 >= Duration::from_millis(500) && waits[0].2 <= Duration::from_secs(1));
        assert!(waits[1].2 >= Duration::from_secs(1) && waits[1].2 <= Duration::from_secs(2));
        // tokio's timer wakes on whole milliseconds: each sleep may end up to 1 ms late.
        let slept = waits[0].2 + waits[1].2;
        let elapsed = started.elapsed();
        assert!(
            elapsed >= slept && elapsed <= slept + Duration::from_millis(2),
            "{elapsed:?} for sleeps of {slept:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_error_ends_the_retry_at_once_unreported() {
        let started = Instant::now();
        let (attempt, calls) = answering(&[Answer::Busy, Answer::No, Answer::Busy]);
        let mut reported = 0;
        let got = retry(
            &mut Backoff::new(Duration::from_secs(1)),
            attempt,
            |_, _, _| reported += 1,
        )
        .await;
        assert_eq!(got, Err(Answer::No));
        assert_eq!((calls.get(), reported), (2, 1));
        assert!(started.elapsed() <= Duration::from_secs(1));

        let (attempt, calls) = answering(&[Answer::No]);
        let token = CancellationToken::new();
        let got = retry_cancellable(
            &mut Backoff::new(Duration::from_secs(1)),
            &token,
            attempt,
            |_, _, _| panic!("a permanent error is not retried"),
        )
        .await;
        assert_eq!(got, Err(Stopped::Permanent(Answer::No)));
        assert_eq!(calls.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancellation_during_a_backoff_ends_the_retry_at_once() {
        let token = CancellationToken::new();
        let canceller = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            canceller.cancel();
        });
        let started = Instant::now();
        let (attempt, calls) = answering(&[Answer::Busy; 100]);
        // The first wait is at least 30 s: the cancellation comes 1 s into it.
        let got = retry_cancellable(
            &mut Backoff::new(Duration::from_secs(60)),
            &token,
            attempt,
            |_, _, _| {},
        )
        .await;
        assert_eq!(got, Err(Stopped::Cancelled));
        assert_eq!(calls.get(), 1);
        assert_eq!(started.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancellation_drops_the_attempt_in_flight_and_none_starts_after_it() {
        let token = CancellationToken::new();
        let canceller = token.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            canceller.cancel();
        });
        let started = Instant::now();
        let got: Result<(), Stopped<Answer>> = retry_cancellable(
            &mut Backoff::new(Duration::from_secs(1)),
            &token,
            std::future::pending,
            |_, _, _| {},
        )
        .await;
        assert_eq!(got, Err(Stopped::Cancelled));
        assert_eq!(started.elapsed(), Duration::from_secs(3));

        let (attempt, calls) = answering(&[]);
        let got = retry_cancellable(
            &mut Backoff::new(Duration::from_secs(1)),
            &token,
            attempt,
            |_, _, _| {},
        )
        .await;
        assert_eq!(got, Err(Stopped::Cancelled));
        assert_eq!(calls.get(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_forever_retries_even_what_is_classified_permanent() {
        let (attempt, calls) = answering(&[Answer::No, Answer::Busy, Answer::No]);
        let got = retry_forever(
            Backoff::new(Duration::from_secs(1)).with_max(Duration::from_secs(1)),
            attempt,
            |_: &Answer, _, delay| {
                assert!(delay <= Duration::from_secs(1), "capped by with_max");
            },
        )
        .await;
        assert_eq!((got, calls.get()), (4, 4));
    }

    #[test]
    fn a_kept_backoff_goes_on_doubling_until_reset() {
        let mut backoff = Backoff::from(Duration::from_secs(1));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let (attempt, _) = answering(&[Answer::Busy, Answer::Busy]);
            retry(&mut backoff, attempt, |_, _, _| {}).await.unwrap();
            let (attempt, _) = answering(&[Answer::Busy]);
            let mut attempts = Vec::new();
            retry(&mut backoff, attempt, |_, attempt, _| {
                attempts.push(attempt)
            })
            .await
            .unwrap();
            assert_eq!(attempts, [3]);
        });
        backoff.reset();
        assert_eq!(backoff.attempts(), 0);
    }
}
