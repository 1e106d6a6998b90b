//! Is Kafka reachable? One tracker per connection turns the stream of failed and successful calls of
//! both clients into a few state changes an operator can read during an outage:
//!
//! ```text
//!   up ── a call fails ──► WARN "cannot reach Kafka" (broker, error) ──► down
//!   down ── a minute passes, still failing ──► WARN "still cannot reach Kafka" (down_for, backlog)
//!   down ── a call succeeds ──► INFO "Kafka reachable again" (down_for) ──► up
//! ```
//!
//! Every single failure is still logged, at debug. Time is injected (`*_at`), so the rules are
//! tested without waiting.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

/// How often a continuing outage is reported.
pub const REPORT_EVERY: Duration = Duration::from_secs(60);

/// A failure this soon after recovery is taken for a late report of the outage that just ended
/// (librdkafka reports connection failures from its own retry schedule), not a new outage.
const LATE_REPORT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
enum State {
    Up { since: Option<Instant> },
    Down { since: Instant, reported: Instant },
}

/// What a tracker decided about one event (returned for tests; the tracker logs it itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing to report above debug.
    None,
    /// Just went down.
    WentDown,
    /// Still down, a report is due.
    StillDown,
    /// Came back after being down this long.
    CameBack(Duration),
}

/// The reachability of one Kafka cluster as this process sees it; shared by every client of a
/// [`Connection`](super::Connection).
#[derive(Debug)]
pub struct Health {
    brokers: String,
    state: Mutex<State>,
    /// Dispatches (or records) waiting for Kafka, shown in the "still unreachable" report.
    backlog: Arc<AtomicU64>,
}

impl Health {
    /// A tracker for the cluster at `brokers`, assumed reachable.
    pub fn new(brokers: String) -> Health {
        Health {
            brokers,
            state: Mutex::new(State::Up { since: None }),
            backlog: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The counter of records waiting for Kafka that the reports show.
    pub fn backlog(&self) -> &Arc<AtomicU64> {
        &self.backlog
    }

    /// A call to `broker` (or the cluster, when the client does not say) failed with `error`.
    pub fn failed(&self, client: &str, broker: &str, error: &str) -> Change {
        self.failed_at(Instant::now(), client, broker, error)
    }

    /// A call succeeded.
    pub fn succeeded(&self) -> Change {
        self.succeeded_at(Instant::now())
    }

    /// Whether the last event was a failure.
    pub fn is_down(&self) -> bool {
        matches!(*self.lock(), State::Down { .. })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`failed`](Self::failed) at `now`.
    pub fn failed_at(&self, now: Instant, client: &str, broker: &str, error: &str) -> Change {
        let broker = if broker.is_empty() {
            self.brokers.as_str()
        } else {
            broker
        };
        let change = {
            let mut state = self.lock();
            match *state {
                State::Up { since } => {
                    if since.is_some_and(|s| now.saturating_duration_since(s) < LATE_REPORT) {
                        Change::None
                    } else {
                        *state = State::Down {
                            since: now,
                            reported: now,
                        };
                        Change::WentDown
                    }
                }
                State::Down {
                    ref mut reported, ..
                } => {
                    if now.saturating_duration_since(*reported) >= REPORT_EVERY {
                        *reported = now;
                        Change::StillDown
                    } else {
                        Change::None
                    }
                }
            }
        };
        let down_for = match *self.lock() {
            State::Down { since, .. } => now.saturating_duration_since(since),
            State::Up { .. } => Duration::ZERO,
        };
        let backlog = self.backlog.load(Ordering::Relaxed);
        match change {
            Change::WentDown => warn!(
                message = "cannot reach Kafka; retrying in the background (details at debug)",
                client, broker, error, backlog
            ),
            Change::StillDown => warn!(
                message = "still cannot reach Kafka",
                client,
                broker,
                error,
                down_for = %humantime::format_duration(Duration::from_secs(down_for.as_secs())),
                backlog
            ),
            _ => debug!(
                message = "Kafka call failed",
                client, broker, error, backlog
            ),
        }
        change
    }

    /// [`succeeded`](Self::succeeded) at `now`.
    pub fn succeeded_at(&self, now: Instant) -> Change {
        let change = {
            let mut state = self.lock();
            match *state {
                State::Down { since, .. } => {
                    *state = State::Up { since: Some(now) };
                    Change::CameBack(now.saturating_duration_since(since))
                }
                State::Up { .. } => Change::None,
            }
        };
        if let Change::CameBack(down_for) = change {
            info!(
                message = "Kafka reachable again",
                brokers = %self.brokers,
                down_for = %humantime::format_duration(Duration::from_millis(down_for.as_millis() as u64)),
                backlog = self.backlog.load(Ordering::Relaxed),
            );
        }
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_one_down_one_report_a_minute_and_one_up() {
        let h = Health::new("b:9092".into());
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(h.succeeded_at(at(0)), Change::None);
        assert_eq!(
            h.failed_at(at(1), "producer", "", "refused"),
            Change::WentDown
        );
        assert!(h.is_down());
        // failures every half second for 150 s: two reports, at 61 s and 121 s
        let mut changes = Vec::new();
        for half in 3..300 {
            let c = h.failed_at(
                t0 + Duration::from_millis(half * 500),
                "producer",
                "",
                "refused",
            );
            if c != Change::None {
                changes.push((half * 500, c));
            }
        }
        assert_eq!(
            changes,
            [(61_000, Change::StillDown), (121_000, Change::StillDown)]
        );
        assert_eq!(
            h.succeeded_at(at(151)),
            Change::CameBack(Duration::from_secs(150))
        );
        assert_eq!(h.succeeded_at(at(152)), Change::None);
    }

    #[test]
    fn a_late_failure_right_after_recovery_is_not_a_new_outage_but_a_later_one_is() {
        let h = Health::new("b:9092".into());
        let t0 = Instant::now();
        h.failed_at(t0, "group", "", "refused");
        assert!(matches!(
            h.succeeded_at(t0 + Duration::from_secs(10)),
            Change::CameBack(_)
        ));
        assert_eq!(
            h.failed_at(t0 + Duration::from_secs(12), "group", "", "late"),
            Change::None
        );
        assert!(!h.is_down());
        assert_eq!(
            h.failed_at(t0 + Duration::from_secs(30), "group", "", "refused"),
            Change::WentDown
        );
    }
}
