//! Time as the scheduler sees it.
//!
//! Cron has minute resolution, so inside the scheduler time is a bare [`Minute`]: whole minutes since
//! the Unix epoch, UTC. This module is the ONE place that converts between wall-clock instants and
//! ticks; everything downstream (the wheel, the tick loop) counts minutes.
//!
//! The [`Clock`] trait is injected into the tick loop so tests drive time with [`ManualClock`] instead
//! of sleeping to a minute boundary. A live dispatcher runs on a [`GuardedClock`]: the wall clock
//! checked against the monotonic clock, so that a step of the wall clock is a fault, not time.

mod guard;

pub use guard::{
    BootTime, ClockWatch, GuardedClock, ManualMonotonic, Monotonic, SuspectStep, STEP_TOLERANCE,
};

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};

/// Whole minutes since 1970-01-01T00:00Z.
///
/// Conversion from an instant rounds DOWN (floor) to the minute that contains it, so the instant
/// `12:00:59.999` belongs to minute `12:00`; conversion back yields the minute's first second.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Minute(pub i64);

impl Minute {
    /// The minute containing `at` (floor).
    pub fn containing(at: DateTime<Utc>) -> Minute {
        Minute(at.timestamp().div_euclid(60))
    }

    /// The first instant of this minute. `None` only for minutes beyond chrono's range.
    pub fn start(self) -> Option<DateTime<Utc>> {
        self.0
            .checked_mul(60)
            .and_then(|secs| Utc.timestamp_opt(secs, 0).single())
    }

    /// The minute after this one.
    pub fn next(self) -> Minute {
        Minute(self.0 + 1)
    }
}

impl fmt::Display for Minute {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.start() {
            Some(t) => write!(f, "{}", t.format("%Y-%m-%dT%H:%MZ")),
            None => write!(f, "minute {}", self.0),
        }
    }
}

/// Where the tick loop reads the current time from.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;

    /// Real time until this clock reads `at` (zero if it already does).
    fn real_until(&self, at: DateTime<Utc>) -> std::time::Duration {
        (at - self.now()).to_std().unwrap_or_default()
    }

    /// What a clock that checks itself ([`GuardedClock`]) knows of its state; `None` for the
    /// others.
    fn watch(&self) -> Option<ClockWatch> {
        None
    }

    /// Another clock (`source`) read `reference` a moment ago; a clock that holds back a step of
    /// the wall clock may take it as confirmation ([`GuardedClock::confirm_step`]). Returns
    /// whether it did.
    fn confirm(&self, reference: DateTime<Utc>, source: &str) -> bool {
        let _ = (reference, source);
        false
    }
}

/// How long a loop woken by the clock sleeps: until the clock's next minute boundary, or `poll`,
/// whichever comes first. Waking at the boundary, not on a `poll` grid of the start time's phase,
/// is what lets a minute's jobs leave within milliseconds of their slot.
pub fn until_next_wake(clock: &dyn Clock, poll: std::time::Duration) -> std::time::Duration {
    Minute::containing(clock.now())
        .next()
        .start()
        .map_or(poll, |boundary| clock.real_until(boundary).min(poll))
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A drill and test aid (`--drill-clock SPEEDx@EPOCH`): wall-clock time that runs `speed` times
/// faster from the real instant `epoch` on, so a test or a rehearsal sees a crash, a 10-minute outage
/// or a rolling restart of many minutes in seconds. Every process given the same setting reads the
/// same time. Timeouts measured by Kafka (the group session) still run in real time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrillClock {
    epoch_ms: i64,
    speed: u32,
}

/// Why a `--drill-clock` value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not SPEEDx@EPOCH (e.g. 10x@1764441000: 10 times faster from that Unix second), SPEED 1-3600")]
pub struct DrillClockError(String);

impl std::str::FromStr for DrillClock {
    type Err = DrillClockError;

    fn from_str(text: &str) -> Result<DrillClock, DrillClockError> {
        let bad = || DrillClockError(text.to_string());
        let (speed, epoch) = text.split_once("x@").ok_or_else(bad)?;
        let speed: u32 = speed.parse().map_err(|_| bad())?;
        let epoch: i64 = epoch.parse().map_err(|_| bad())?;
        if !(1..=3600).contains(&speed) || !(0..=4_102_444_800).contains(&epoch) {
            return Err(bad());
        }
        Ok(DrillClock {
            epoch_ms: epoch * 1000,
            speed,
        })
    }
}

impl DrillClock {
    /// The drill time at real instant `real`.
    pub fn at(&self, real: DateTime<Utc>) -> DateTime<Utc> {
        let elapsed = real.timestamp_millis() - self.epoch_ms;
        let ms = self
            .epoch_ms
            .saturating_add(elapsed.saturating_mul(i64::from(self.speed)));
        Utc.timestamp_millis_opt(ms).single().unwrap_or(real)
    }
}

impl Clock for DrillClock {
    fn now(&self) -> DateTime<Utc> {
        self.at(Utc::now())
    }

    fn real_until(&self, at: DateTime<Utc>) -> std::time::Duration {
        let drill = (at - self.now()).to_std().unwrap_or_default();
        drill / self.speed
    }
}

/// A clock that moves only when told to: tests set it, jump it forward (a stalled process, a
/// suspended machine) or backwards (an NTP step) and watch what the tick loop does.
#[derive(Debug, Clone)]
pub struct ManualClock {
    millis: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock standing at `at`.
    pub fn new(at: DateTime<Utc>) -> ManualClock {
        ManualClock {
            millis: Arc::new(AtomicI64::new(at.timestamp_millis())),
        }
    }

    /// Moves the clock to `at` (forwards or backwards).
    pub fn set(&self, at: DateTime<Utc>) {
        self.millis.store(at.timestamp_millis(), Ordering::SeqCst);
    }

    /// Moves the clock by `delta` (may be negative).
    pub fn advance(&self, delta: chrono::Duration) {
        self.millis
            .fetch_add(delta.num_milliseconds(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        let ms = self.millis.load(Ordering::SeqCst);
        Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minute_floors_instants_and_round_trips() {
        let t = Utc.with_ymd_and_hms(2026, 11, 26, 12, 34, 59).unwrap();
        let m = Minute::containing(t);
        assert_eq!(
            m.start(),
            Some(Utc.with_ymd_and_hms(2026, 11, 26, 12, 34, 0).unwrap())
        );
        assert_eq!(
            m.next().start(),
            Some(Utc.with_ymd_and_hms(2026, 11, 26, 12, 35, 0).unwrap())
        );
        assert_eq!(m.to_string(), "2026-11-26T12:34Z");
    }

    #[test]
    fn the_loop_wakes_at_the_next_minute_boundary_or_the_poll_whichever_is_first() {
        let poll = std::time::Duration::from_secs(1);
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 26, 12, 34, 59).unwrap());
        assert_eq!(until_next_wake(&clock, poll), poll);
        clock.set(
            Utc.with_ymd_and_hms(2026, 11, 26, 12, 34, 59).unwrap()
                + chrono::Duration::milliseconds(250),
        );
        assert_eq!(
            until_next_wake(&clock, poll),
            std::time::Duration::from_millis(750)
        );
        // Exactly on a boundary: the next one is a whole minute away.
        clock.set(Utc.with_ymd_and_hms(2026, 11, 26, 12, 35, 0).unwrap());
        assert_eq!(
            until_next_wake(&clock, std::time::Duration::from_secs(600)),
            std::time::Duration::from_secs(60)
        );
        // A drill clock 60 times faster: a drill minute is a real second.
        let now = Utc::now().timestamp();
        let drill: DrillClock = format!("60x@{now}").parse().unwrap();
        let wait = until_next_wake(&drill, std::time::Duration::from_secs(10));
        assert!(wait <= std::time::Duration::from_secs(1), "{wait:?}");
    }

    #[test]
    fn minute_before_epoch_floors_towards_minus_infinity() {
        let t = Utc.timestamp_opt(-1, 0).unwrap();
        assert_eq!(Minute::containing(t), Minute(-1));
    }

    #[test]
    fn drill_clock_runs_faster_from_its_epoch_and_refuses_bad_settings() {
        let clock: DrillClock = "10x@1764441000".parse().unwrap();
        let epoch = Utc.timestamp_opt(1_764_441_000, 0).unwrap();
        assert_eq!(clock.at(epoch), epoch);
        assert_eq!(
            clock.at(epoch + chrono::Duration::seconds(6)),
            epoch + chrono::Duration::minutes(1)
        );
        for bad in [
            "0x@1764441000",
            "10@1764441000",
            "x@1",
            "10x@-5",
            "99999x@1",
            "",
        ] {
            assert!(bad.parse::<DrillClock>().is_err(), "{bad}");
        }
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let clock = ManualClock::new(t0);
        assert_eq!(clock.now(), t0);
        clock.advance(chrono::Duration::minutes(90));
        assert_eq!(clock.now(), t0 + chrono::Duration::minutes(90));
        clock.set(t0);
        assert_eq!(clock.now(), t0);
    }
}
