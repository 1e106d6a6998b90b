//! The dispatcher's wall clock, checked against a monotonic clock: a step of the wall clock is a
//! clock fault, not elapsed time.
//!
//! ```text
//!  wall clock (CLOCK_REALTIME) ──┐
//!                                ├─► GuardedClock::now ──► trusted time (tick loop, cursors, delay queue)
//!  BootTime (CLOCK_BOOTTIME) ────┘      = last trusted wall time + monotonic time elapsed since
//! ```
//!
//! The rule, for every reading of the clock:
//! - the wall clock agrees with the trusted time within [`STEP_TOLERANCE`]: it is taken as it is
//!   (so NTP's slewing is followed) and any suspected step is over;
//! - it is *behind* the trusted time by more: taken at once, logged and counted. A clock that goes
//!   back never makes a run early; the tick loop waits for it to pass the last processed minute;
//! - it is *ahead* by more (a forward step): logged as an error and counted once per step, and the
//!   trusted time stays on the monotonic clock. The new wall time is accepted once the step has held
//!   for `--clock-settle`, or sooner when another reference confirms it ([`GuardedClock::confirm`]:
//!   another member's cursor written at a time past the trusted time); the minutes in between are
//!   then caught up under each job's catch-up rule.
//!
//! The monotonic clock is `CLOCK_BOOTTIME`, which, unlike `CLOCK_MONOTONIC`, counts the time a
//! machine is suspended: after a resume both clocks have moved on together, so a suspend is elapsed
//! time (caught up under the jobs' rules), not a step.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tracing::{error, info, warn};

use super::Clock;

/// The largest disagreement between the wall clock's and the monotonic clock's progress that is
/// not a step: NTP slews at most 0.5 ms a second, so between two readings (at most a `--tick`,
/// 1 minute, apart) the clocks drift apart by 30 ms at most.
pub const STEP_TOLERANCE: chrono::Duration = chrono::Duration::seconds(2);

/// A clock that never steps: time elapsed since an arbitrary origin.
pub trait Monotonic: Send + Sync + 'static {
    /// Time elapsed since the origin.
    fn elapsed(&self) -> Duration;
}

/// `CLOCK_BOOTTIME`: monotonic, and counts the time the machine was suspended.
#[derive(Debug, Clone, Copy, Default)]
pub struct BootTime;

impl Monotonic for BootTime {
    fn elapsed(&self) -> Duration {
        match nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME) {
            Ok(t) => Duration::from(t),
            // Linux has had CLOCK_BOOTTIME since 2.6.39; without it, std's monotonic clock.
            Err(_) => FALLBACK_ORIGIN.elapsed(),
        }
    }
}

static FALLBACK_ORIGIN: std::sync::LazyLock<std::time::Instant> =
    std::sync::LazyLock::new(std::time::Instant::now);

/// A monotonic clock that moves only when told to (tests).
#[derive(Debug, Clone, Default)]
pub struct ManualMonotonic {
    nanos: Arc<std::sync::atomic::AtomicU64>,
}

impl ManualMonotonic {
    /// Moves the clock on by `by`.
    pub fn advance(&self, by: Duration) {
        self.nanos.fetch_add(
            u64::try_from(by.as_nanos()).unwrap_or(u64::MAX),
            std::sync::atomic::Ordering::SeqCst,
        );
    }
}

impl Monotonic for ManualMonotonic {
    fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(std::sync::atomic::Ordering::SeqCst))
    }
}

/// What a clock knows of its own state ([`Clock::watch`]), for the probes, metrics and page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockWatch {
    /// The wall clock now.
    pub wall: DateTime<Utc>,
    /// The time the dispatcher runs on now.
    pub trusted: DateTime<Utc>,
    /// A step forward not accepted yet.
    pub suspect: Option<SuspectStep>,
    /// Forward steps seen since the start.
    pub forward_steps: u64,
    /// Backward steps seen since the start.
    pub backward_steps: u64,
}

/// A forward step of the wall clock held back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuspectStep {
    /// How far the wall clock is ahead of the trusted time.
    pub step: chrono::Duration,
    /// When (trusted time) it was seen.
    pub since: DateTime<Utc>,
    /// When (trusted time) it is accepted if it holds and nothing confirms it sooner.
    pub accept_at: DateTime<Utc>,
}

/// The wall clock `wall`, checked against the monotonic clock `mono` (see the module's doc).
pub struct GuardedClock {
    wall: Arc<dyn Clock>,
    mono: Arc<dyn Monotonic>,
    settle: Duration,
    state: Mutex<State>,
}

impl std::fmt::Debug for GuardedClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardedClock")
            .field("settle", &self.settle)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct State {
    /// The last trusted wall time, and the monotonic time it was read at.
    anchor: (DateTime<Utc>, Duration),
    suspect: Option<Suspect>,
    forward_steps: u64,
    backward_steps: u64,
}

#[derive(Debug, Clone, Copy)]
struct Suspect {
    /// Wall clock minus trusted time when the step was seen.
    step: chrono::Duration,
    /// Monotonic time it was seen at.
    seen: Duration,
}

/// What one reading found.
struct Reading {
    wall: DateTime<Utc>,
    mono: Duration,
    trusted: DateTime<Utc>,
}

impl GuardedClock {
    /// `wall` checked against `mono`; a forward step is accepted after it held for `settle`.
    pub fn new(wall: Arc<dyn Clock>, mono: Arc<dyn Monotonic>, settle: Duration) -> GuardedClock {
        let anchor = (wall.now(), mono.elapsed());
        GuardedClock {
            wall,
            mono,
            settle,
            state: Mutex::new(State {
                anchor,
                suspect: None,
                forward_steps: 0,
                backward_steps: 0,
            }),
        }
    }

    /// The system's wall clock checked against `CLOCK_BOOTTIME`.
    pub fn system(settle: Duration) -> GuardedClock {
        GuardedClock::new(Arc::new(super::SystemClock), Arc::new(BootTime), settle)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn read(&self) -> Reading {
        let mut state = self.state();
        let wall = self.wall.now();
        let mono = self.mono.elapsed();
        let trusted = self.judge(&mut state, wall, mono);
        Reading {
            wall,
            mono,
            trusted,
        }
    }

    /// The trusted time at monotonic time `mono`, had the anchor not moved.
    fn derived(state: &State, mono: Duration) -> DateTime<Utc> {
        let (wall, at) = state.anchor;
        let elapsed = chrono::Duration::from_std(mono.saturating_sub(at)).unwrap_or_default();
        wall + elapsed
    }

    fn judge(&self, state: &mut State, wall: DateTime<Utc>, mono: Duration) -> DateTime<Utc> {
        let derived = Self::derived(state, mono);
        let off = wall - derived;
        if off.abs() <= STEP_TOLERANCE {
            if let Some(s) = state.suspect.take() {
                info!(
                    message = "the wall clock is back in step with the monotonic clock: its step was undone before it was accepted; no slot was sent on it",
                    step_seconds = s.step.num_seconds(),
                    lasted_seconds = mono.saturating_sub(s.seen).as_secs(),
                    now = %wall.to_rfc3339(),
                );
            }
            state.anchor = (wall, mono);
            return wall;
        }
        if off < chrono::Duration::zero() {
            state.backward_steps += 1;
            state.suspect = None;
            warn!(
                message = "the wall clock stepped back; taken at once (a clock that goes back never makes a run early): minutes already processed are not sent again, and the dispatcher waits for the clock to pass them",
                step_seconds = off.num_seconds(),
                wall = %wall.to_rfc3339(),
                was = %derived.to_rfc3339(),
            );
            state.anchor = (wall, mono);
            return wall;
        }
        let same = state
            .suspect
            .filter(|s| (off - s.step).abs() <= STEP_TOLERANCE);
        let suspect = match same {
            Some(s) => s,
            None => {
                state.forward_steps += 1;
                let s = Suspect {
                    step: off,
                    seen: mono,
                };
                state.suspect = Some(s);
                error!(
                    message = "clock fault: the wall clock stepped forward, ahead of the monotonic clock; dispatching on monotonic time until the step holds for --clock-settle or another member's cursor confirms it",
                    step_seconds = off.num_seconds(),
                    wall = %wall.to_rfc3339(),
                    trusted = %derived.to_rfc3339(),
                    settle = %humantime::format_duration(self.settle),
                );
                s
            }
        };
        if mono.saturating_sub(suspect.seen) >= self.settle {
            self.accept(state, wall, mono, "it held for --clock-settle");
            return wall;
        }
        derived
    }

    fn accept(&self, state: &mut State, wall: DateTime<Utc>, mono: Duration, why: &str) {
        let step = state.suspect.take().map(|s| s.step).unwrap_or_default();
        warn!(
            message = "the wall clock's step forward is accepted; the minutes it skipped are caught up under each job's catch-up rule",
            why,
            step_seconds = step.num_seconds(),
            now = %wall.to_rfc3339(),
        );
        state.anchor = (wall, mono);
    }

    /// Another clock read `reference` a moment ago (`source` says which: another member's cursor,
    /// the broker's append time). A suspected forward step is accepted at once when `reference`
    /// is past the trusted time (by more than [`STEP_TOLERANCE`]) and not past the wall clock:
    /// that clock moved on as the wall clock did. Returns whether it confirmed a step.
    pub fn confirm_step(&self, reference: DateTime<Utc>, source: &str) -> bool {
        let mut state = self.state();
        let wall = self.wall.now();
        let mono = self.mono.elapsed();
        // Judge the reading first: a step undone meanwhile is no step to confirm.
        let trusted = self.judge(&mut state, wall, mono);
        if state.suspect.is_none() {
            return false;
        }
        if reference > trusted + STEP_TOLERANCE && reference <= wall + STEP_TOLERANCE {
            self.accept(&mut state, wall, mono, source);
            return true;
        }
        false
    }
}

impl Clock for GuardedClock {
    fn now(&self) -> DateTime<Utc> {
        self.read().trusted
    }

    fn watch(&self) -> Option<ClockWatch> {
        let r = self.read();
        let state = self.state();
        let settle = chrono::Duration::from_std(self.settle).unwrap_or(chrono::Duration::MAX);
        let suspect = state.suspect.map(|s| {
            let ago = chrono::Duration::from_std(r.mono.saturating_sub(s.seen)).unwrap_or_default();
            let since = r.trusted - ago;
            SuspectStep {
                step: s.step,
                since,
                accept_at: since.checked_add_signed(settle).unwrap_or(since),
            }
        });
        Some(ClockWatch {
            wall: r.wall,
            trusted: r.trusted,
            suspect,
            forward_steps: state.forward_steps,
            backward_steps: state.backward_steps,
        })
    }

    fn confirm(&self, reference: DateTime<Utc>, source: &str) -> bool {
        self.confirm_step(reference, source)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::clock::ManualClock;

    const SETTLE: Duration = Duration::from_secs(600);

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap()
    }

    /// A guarded clock over a manual wall clock and a manual monotonic clock.
    fn guarded() -> (GuardedClock, ManualClock, ManualMonotonic) {
        let wall = ManualClock::new(t0());
        let mono = ManualMonotonic::default();
        let clock = GuardedClock::new(Arc::new(wall.clone()), Arc::new(mono.clone()), SETTLE);
        (clock, wall, mono)
    }

    /// Both clocks move on together by `by` (time passing).
    fn pass(wall: &ManualClock, mono: &ManualMonotonic, by: Duration) {
        wall.advance(chrono::Duration::from_std(by).unwrap());
        mono.advance(by);
    }

    #[test]
    fn a_wall_clock_in_step_with_the_monotonic_one_is_taken_as_it_is() {
        let (clock, wall, mono) = guarded();
        for _ in 0..120 {
            pass(&wall, &mono, Duration::from_secs(1));
            assert_eq!(clock.now(), wall.now());
        }
        // NTP slewing: the wall clock runs 0.05 % fast for an hour, read once a second.
        for _ in 0..3600 {
            wall.advance(chrono::Duration::microseconds(1_000_500));
            mono.advance(Duration::from_secs(1));
            assert_eq!(clock.now(), wall.now());
        }
        let w = clock.watch().unwrap();
        assert_eq!((w.forward_steps, w.backward_steps, w.suspect), (0, 0, None));
    }

    #[test]
    fn a_forward_step_keeps_monotonic_time_and_is_undone_without_a_trace() {
        let (clock, wall, mono) = guarded();
        pass(&wall, &mono, Duration::from_secs(30));
        wall.advance(chrono::Duration::hours(2));
        let true_now = t0() + chrono::Duration::seconds(30);
        assert_eq!(clock.now(), true_now, "the step is not elapsed time");
        let w = clock.watch().unwrap();
        assert_eq!(w.forward_steps, 1);
        let s = w.suspect.expect("a suspect step");
        assert_eq!(s.step, chrono::Duration::hours(2));
        assert_eq!(s.accept_at, true_now + chrono::Duration::minutes(10));
        // Three minutes on the stepped clock: trusted time follows the monotonic clock.
        for _ in 0..180 {
            pass(&wall, &mono, Duration::from_secs(1));
        }
        let true_now = true_now + chrono::Duration::minutes(3);
        assert_eq!(clock.now(), true_now);
        assert_eq!(
            clock.watch().unwrap().forward_steps,
            1,
            "one step, counted once"
        );
        // The correction: the wall clock is right again.
        wall.set(true_now);
        assert_eq!(clock.now(), true_now);
        let w = clock.watch().unwrap();
        assert_eq!((w.suspect, w.forward_steps, w.backward_steps), (None, 1, 0));
    }

    #[test]
    fn a_forward_step_that_holds_for_the_settle_time_is_accepted() {
        let (clock, wall, mono) = guarded();
        wall.advance(chrono::Duration::hours(1));
        assert_eq!(clock.now(), t0());
        pass(&wall, &mono, SETTLE - Duration::from_secs(1));
        assert_eq!(
            clock.now(),
            t0() + chrono::Duration::from_std(SETTLE).unwrap() - chrono::Duration::seconds(1)
        );
        pass(&wall, &mono, Duration::from_secs(1));
        assert_eq!(clock.now(), wall.now(), "held for --clock-settle: accepted");
        assert_eq!(clock.watch().unwrap().suspect, None);
        // And from then on the wall clock is followed again.
        pass(&wall, &mono, Duration::from_secs(5));
        assert_eq!(clock.now(), wall.now());
    }

    #[test]
    fn a_second_step_while_one_is_held_starts_the_settle_time_again() {
        let (clock, wall, mono) = guarded();
        wall.advance(chrono::Duration::hours(1));
        clock.now();
        pass(&wall, &mono, Duration::from_secs(300));
        wall.advance(chrono::Duration::hours(1));
        clock.now();
        pass(&wall, &mono, Duration::from_secs(300));
        assert_eq!(
            clock.now(),
            t0() + chrono::Duration::minutes(10),
            "the second step has held 5 minutes only"
        );
        assert_eq!(clock.watch().unwrap().forward_steps, 2);
        pass(&wall, &mono, Duration::from_secs(300));
        assert_eq!(clock.now(), wall.now());
    }

    #[test]
    fn a_backward_step_is_taken_at_once_and_counted() {
        let (clock, wall, mono) = guarded();
        pass(&wall, &mono, Duration::from_secs(60));
        wall.advance(chrono::Duration::minutes(-5));
        assert_eq!(clock.now(), wall.now());
        let w = clock.watch().unwrap();
        assert_eq!((w.forward_steps, w.backward_steps), (0, 1));
    }

    #[test]
    fn a_step_is_confirmed_only_by_a_reference_that_moved_on_with_the_wall_clock() {
        let (clock, wall, mono) = guarded();
        pass(&wall, &mono, Duration::from_secs(10));
        let true_now = clock.now();
        wall.advance(chrono::Duration::hours(2));
        clock.now();
        // Another member's cursor written 40 s ago by a right clock: no confirmation.
        assert!(!clock.confirm(true_now - chrono::Duration::seconds(40), "member b"));
        // A reference beyond even the stepped wall clock confirms nothing either.
        assert!(!clock.confirm(wall.now() + chrono::Duration::minutes(5), "member b"));
        assert_eq!(clock.now(), true_now);
        // A cursor written 30 s ago on a clock that agrees with the new wall time.
        assert!(clock.confirm(wall.now() - chrono::Duration::seconds(30), "member b"));
        assert_eq!(clock.now(), wall.now());
        assert_eq!(clock.watch().unwrap().suspect, None);
        // Without a suspect step there is nothing to confirm.
        assert!(!clock.confirm(wall.now(), "member b"));
    }

    #[test]
    fn a_settle_time_of_zero_takes_a_forward_step_at_once_and_still_counts_it() {
        let wall = ManualClock::new(t0());
        let mono = ManualMonotonic::default();
        let clock = GuardedClock::new(
            Arc::new(wall.clone()),
            Arc::new(mono.clone()),
            Duration::ZERO,
        );
        wall.advance(chrono::Duration::hours(2));
        assert_eq!(clock.now(), wall.now());
        assert_eq!(clock.watch().unwrap().forward_steps, 1);
    }

    #[test]
    fn boot_time_moves_on() {
        let a = BootTime.elapsed();
        let b = BootTime.elapsed();
        assert!(b >= a && a > Duration::ZERO);
    }
}
