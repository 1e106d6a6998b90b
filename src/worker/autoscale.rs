//! How many executors the pool should have: a PURE function of what the worker observed and the
//! current size, evaluated every `--scale-interval`. No clock, no IO: time comes in as a number.
//!
//! ```text
//!  observation { backlog, in_flight, rate, now } ──► decide(config, state) ──► new size (+ reason)
//!     backlog   = records not started yet: Σ over assigned partitions (high watermark − fetch
//!                 position) + the local queue
//!     in_flight = executions running;  rate = completions per second, recently
//! ```
//!
//! - Up, promptly: when every executor is busy and the backlog would take longer than
//!   `--target-drain` at the observed rate, jump straight to the size that drains it in time
//!   (`backlog / (rate per executor × target)`); with no completion seen yet, double. Never more
//!   executors than there are jobs to run (`in_flight + backlog`).
//! - Down, slowly: only once some executor has been idle for `--scale-down-delay` and one executor
//!   fewer would still drain the backlog in half the target (the gap between "over target" and "under
//!   half" is the hysteresis that keeps a steady load from flapping); then one step per interval.
//! - Always within `[--min-workers, --max-workers]`.
//!
//! Properties the tests pin: the result stays in bounds, it never decreases when only the backlog
//! grows, and with the observations held fixed the size moves in one direction and then stays.

use std::fmt;
use std::time::Duration;

/// The limits and timings from the command line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleConfig {
    /// `--min-workers` (at least 1).
    pub min: usize,
    /// `--max-workers` (at least `min`).
    pub max: usize,
    /// `--target-drain`: the longest the backlog should take at the observed rate.
    pub target_drain: Duration,
    /// `--scale-down-delay`: how long spare capacity must last before the pool shrinks.
    pub scale_down_delay: Duration,
}

impl ScaleConfig {
    /// Makes `min ≥ 1` and `max ≥ min`.
    pub fn normalized(self) -> ScaleConfig {
        let min = self.min.max(1);
        ScaleConfig {
            min,
            max: self.max.max(min),
            ..self
        }
    }
}

/// What the worker saw over the last interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// Records waiting to start (broker side and local queue).
    pub backlog: u64,
    /// Executions running now.
    pub in_flight: usize,
    /// Executions finished per second, recently (0 when none finished).
    pub rate: f64,
    /// Milliseconds on a monotonic clock.
    pub now_ms: u64,
}

/// The pool's size and how long it has had spare capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolState {
    /// Executors allowed to run at once.
    pub size: usize,
    /// Since when (ms) some executor has been idle with little backlog; None when not.
    pub spare_since_ms: Option<u64>,
}

impl PoolState {
    /// A pool of `size` with no spare time counted.
    pub fn new(size: usize) -> PoolState {
        PoolState {
            size,
            spare_since_ms: None,
        }
    }
}

/// Why the size changed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Reason {
    /// The size was below `--min-workers`.
    BelowMin,
    /// The size was above `--max-workers`.
    AboveMax,
    /// All executors busy and the backlog would take `drain_secs` at the observed rate.
    SlowDrain {
        /// Seconds the backlog would take at the current size.
        drain_secs: f64,
        /// `--target-drain` in seconds.
        target_secs: f64,
    },
    /// All executors busy, backlog waiting, and nothing finished yet to measure a rate by.
    BusyNoRate,
    /// Spare capacity for at least `--scale-down-delay`.
    Spare {
        /// How long, in milliseconds.
        for_ms: u64,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::BelowMin => f.write_str("below --min-workers"),
            Reason::AboveMax => f.write_str("above --max-workers"),
            Reason::SlowDrain {
                drain_secs,
                target_secs,
            } => write!(
                f,
                "backlog would take {drain_secs:.1}s at the observed rate; target {target_secs:.1}s"
            ),
            Reason::BusyNoRate => {
                f.write_str("all executors busy with a backlog and no completion to measure yet")
            }
            Reason::Spare { for_ms } => {
                write!(f, "spare capacity for {:.1}s", *for_ms as f64 / 1000.0)
            }
        }
    }
}

/// The outcome of one decision.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// The state to keep for the next decision (its `size` is the pool's new size).
    pub state: PoolState,
    /// Why the size changed; None when it did not.
    pub reason: Option<Reason>,
}

/// Decides the pool's size for the next interval.
pub fn decide(config: ScaleConfig, state: PoolState, obs: Observation) -> Decision {
    let config = config.normalized();
    if state.size < config.min {
        return changed(config.min, None, Reason::BelowMin);
    }
    if state.size > config.max {
        return changed(config.max, None, Reason::AboveMax);
    }
    let size = state.size;
    let target = config.target_drain.as_secs_f64().max(0.001);
    let rate = if obs.rate.is_finite() && obs.rate > 0.0 {
        obs.rate
    } else {
        0.0
    };
    // Completions per second of one busy executor.
    let per_executor = rate / obs.in_flight.max(1) as f64;
    let backlog = obs.backlog as f64;

    let saturated = obs.in_flight >= size;
    if saturated && obs.backlog > 0 {
        let jobs_available = obs
            .in_flight
            .saturating_add(obs.backlog.min(usize::MAX as u64) as usize);
        let ceiling = config.max.min(jobs_available);
        if rate == 0.0 {
            let want = size.saturating_mul(2).min(ceiling);
            if want > size {
                return changed(want, None, Reason::BusyNoRate);
            }
        } else {
            let drain_secs = backlog / rate;
            if drain_secs > target {
                let needed = (backlog / (per_executor * target)).ceil();
                let needed = if needed.is_finite() && needed < usize::MAX as f64 {
                    needed as usize
                } else {
                    usize::MAX
                };
                let want = needed.max(size + 1).min(ceiling);
                if want > size {
                    return changed(
                        want,
                        None,
                        Reason::SlowDrain {
                            drain_secs,
                            target_secs: target,
                        },
                    );
                }
            }
        }
        return held(size, None);
    }

    let spare = obs.in_flight < size
        && (obs.backlog == 0
            || (size > 1
                && per_executor > 0.0
                && backlog / (per_executor * (size - 1) as f64) <= target / 2.0));
    if !spare {
        return held(size, None);
    }
    let since = state.spare_since_ms.unwrap_or(obs.now_ms).min(obs.now_ms);
    let for_ms = obs.now_ms - since;
    if size > config.min && for_ms >= config.scale_down_delay.as_millis() as u64 {
        // Keep counting from the same instant: the next step needs one more interval, not another
        // full delay, so an idle pool returns to min in `delay + (size − min − 1) × interval`.
        return changed(size - 1, Some(since), Reason::Spare { for_ms });
    }
    held(size, Some(since))
}

fn changed(size: usize, spare_since_ms: Option<u64>, reason: Reason) -> Decision {
    Decision {
        state: PoolState {
            size,
            spare_since_ms,
        },
        reason: Some(reason),
    }
}

fn held(size: usize, spare_since_ms: Option<u64>) -> Decision {
    Decision {
        state: PoolState {
            size,
            spare_since_ms,
        },
        reason: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn config(min: usize, max: usize) -> ScaleConfig {
        ScaleConfig {
            min,
            max,
            target_drain: Duration::from_secs(10),
            scale_down_delay: Duration::from_secs(30),
        }
    }

    fn obs(backlog: u64, in_flight: usize, rate: f64, now_s: u64) -> Observation {
        Observation {
            backlog,
            in_flight,
            rate,
            now_ms: now_s * 1000,
        }
    }

    /// min, max, size, spare since (s), backlog, in flight, rate (/s), now (s) => new size, why
    type Row = (
        usize,
        usize,
        usize,
        Option<u64>,
        u64,
        usize,
        f64,
        u64,
        usize,
        &'static str,
    );

    #[test]
    fn decision_table() {
        // min, max, size, spare since (s), backlog, in flight, rate (/s), now (s) => new size
        #[rustfmt::skip]
        let table: &[Row] = &[
            (1, 16, 1, None,     0,      0, 0.0, 0,   1,  "idle at min stays"),
            (1, 16, 1, None,     0,      1, 5.0, 0,   1,  "busy, no backlog: stays"),
            (1, 16, 1, None,     40,     1, 5.0, 0,   1,  "40 jobs at 5/s = 8s, within the 10s target"),
            (1, 16, 1, None,     300,    1, 5.0, 0,   6,  "300 at 5/s = 60s: ceil(300 / (5 x 10)) = 6 at once"),
            (1, 16, 4, None,     300,    4, 4.0, 0,   16, "1/s per executor needs 30: capped at max"),
            (1, 16, 2, None,     10_000, 2, 1.0, 0,   16, "huge backlog: max"),
            (1, 16, 2, None,     3,      2, 0.0, 0,   4,  "busy, nothing finished yet: double"),
            (1, 16, 2, None,     1,      2, 0.0, 0,   3,  "never more executors than jobs"),
            (1, 16, 2, None,     50,     1, 0.5, 0,   2,  "an executor is idle: more would not help"),
            (1, 16, 4, None,     0,      0, 0.0, 100, 4,  "idle: the delay starts counting"),
            (1, 16, 4, Some(80), 0,      0, 0.0, 100, 4,  "idle 20s of 30s: stays"),
            (1, 16, 4, Some(70), 0,      0, 0.0, 100, 3,  "idle 30s: one step down"),
            (2, 16, 2, Some(0),  0,      0, 0.0, 100, 2,  "never below min"),
            (1, 16, 4, Some(0),  20,     2, 2.0, 100, 4,  "3 executors would need 6.7s, over half the target: stays"),
            (1, 16, 4, Some(0),  8,      2, 2.0, 100, 3,  "3 executors would need 2.7s: one step down"),
            (1, 16, 0, None,     0,      0, 0.0, 0,   1,  "below min"),
            (1, 4,  9, None,     0,      0, 0.0, 0,   4,  "above max"),
        ];
        for (row, &(min, max, size, since, backlog, in_flight, rate, now, want, what)) in
            table.iter().enumerate()
        {
            let got = decide(
                config(min, max),
                PoolState {
                    size,
                    spare_since_ms: since.map(|s| s * 1000),
                },
                obs(backlog, in_flight, rate, now),
            );
            assert_eq!(got.state.size, want, "row {row}: {what}: {got:?}");
        }
    }

    #[test]
    fn an_idle_pool_steps_down_one_per_interval_after_the_delay() {
        let cfg = config(1, 16);
        let mut state = PoolState::new(5);
        let mut sizes = Vec::new();
        for second in 0..40 {
            state = decide(cfg, state, obs(0, 0, 0.0, second)).state;
            sizes.push(state.size);
        }
        assert_eq!(
            &sizes[..30],
            &[5; 30],
            "no change before 30s of spare capacity"
        );
        assert_eq!(&sizes[30..35], &[4, 3, 2, 1, 1]);
    }

    #[test]
    fn load_returning_resets_the_spare_timer() {
        let cfg = config(1, 16);
        let mut state = PoolState::new(4);
        for second in 0..20 {
            state = decide(cfg, state, obs(0, 0, 0.0, second)).state;
        }
        state = decide(cfg, state, obs(500, 4, 4.0, 20)).state;
        assert!(state.size > 4, "scaled up: {state:?}");
        assert_eq!(state.spare_since_ms, None);
        let size = state.size;
        for second in 21..50 {
            state = decide(cfg, state, obs(0, 0, 0.0, second)).state;
        }
        assert_eq!(state.size, size, "29s idle is not 30");
    }

    #[test]
    fn every_change_has_a_reason_and_a_hold_has_none() {
        let d = decide(config(1, 16), PoolState::new(1), obs(300, 1, 5.0, 0));
        assert!(matches!(d.reason, Some(Reason::SlowDrain { .. })), "{d:?}");
        assert!(d.reason.unwrap().to_string().contains("60.0s"));
        let d = decide(config(1, 16), PoolState::new(1), obs(0, 1, 5.0, 0));
        assert_eq!(d.reason, None);
    }

    fn arb_obs() -> impl Strategy<Value = (u64, usize, f64)> {
        (
            0u64..5_000,
            0usize..40,
            prop_oneof![Just(0.0), 0.01f64..200.0],
        )
    }

    proptest! {
        #[test]
        fn the_size_is_always_within_min_and_max(
            min in 1usize..8, extra in 0usize..24, size in 0usize..64, since in proptest::option::of(0u64..100_000),
            (backlog, in_flight, rate) in arb_obs(), now in 0u64..200_000,
        ) {
            let cfg = ScaleConfig { min, max: min + extra, target_drain: Duration::from_secs(10), scale_down_delay: Duration::from_secs(30) };
            let d = decide(cfg, PoolState { size, spare_since_ms: since }, Observation { backlog, in_flight, rate, now_ms: now });
            prop_assert!(d.state.size >= min && d.state.size <= min + extra, "{:?}", d);
            prop_assert_eq!(d.reason.is_some(), d.state.size != size);
        }

        #[test]
        fn more_backlog_never_means_fewer_executors(
            size in 1usize..16, since in proptest::option::of(0u64..100_000),
            (backlog, in_flight, rate) in arb_obs(), more in 0u64..5_000, now in 0u64..200_000,
            target_s in 1u64..60,
        ) {
            let cfg = ScaleConfig { min: 1, max: 16, target_drain: Duration::from_secs(target_s), scale_down_delay: Duration::from_secs(30) };
            let state = PoolState { size, spare_since_ms: since };
            let low = decide(cfg, state, Observation { backlog, in_flight, rate, now_ms: now });
            let high = decide(cfg, state, Observation { backlog: backlog + more, in_flight, rate, now_ms: now });
            prop_assert!(low.state.size <= high.state.size, "backlog {} -> {:?}, {} -> {:?}", backlog, low, backlog + more, high);
        }

        /// Steady load: the same observations every interval. The size may move (in one direction)
        /// and then stays; it never goes up and down.
        #[test]
        fn steady_load_settles_without_oscillating(
            min in 1usize..4, size in 1usize..16, (backlog, in_flight, rate) in arb_obs(),
        ) {
            let cfg = ScaleConfig { min, max: 16, target_drain: Duration::from_secs(10), scale_down_delay: Duration::from_secs(3) };
            let mut state = PoolState::new(size.max(min));
            let mut sizes = vec![state.size];
            for step in 0..60u64 {
                state = decide(cfg, state, Observation { backlog, in_flight, rate, now_ms: step * 1000 }).state;
                sizes.push(state.size);
            }
            let ups = sizes.windows(2).any(|w| w[1] > w[0]);
            let downs = sizes.windows(2).any(|w| w[1] < w[0]);
            prop_assert!(!(ups && downs), "oscillated: {:?}", sizes);
            let tail = &sizes[40..];
            prop_assert!(tail.iter().all(|&s| s == tail[0]), "not settled: {:?}", sizes);
        }
    }
}
