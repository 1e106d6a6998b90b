//! Liveness and readiness, as Kubernetes probes ask for them.
//!
//! *Ready* (`/readyz`) means every named check holds: e.g. the schedule is loaded, the broker was
//! reached, shards are assigned. Each check carries the reason it does not hold yet.
//! *Alive* (`/healthz`) means every heartbeat (e.g. the tick loop) beat within its allowed silence:
//! a process whose loop is stuck is not alive, and a probe restarts it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

/// The probes' state, shared between the parts that report and the HTTP server.
#[derive(Debug)]
pub struct Health {
    started: Instant,
    checks: Mutex<BTreeMap<&'static str, Check>>,
    beats: Mutex<Vec<Arc<BeatState>>>,
}

/// One readiness condition as `/readyz` shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Check {
    /// Whether it holds.
    pub ok: bool,
    /// What it is, or why it does not hold yet.
    pub detail: String,
}

#[derive(Debug)]
struct BeatState {
    name: &'static str,
    max_silence: Duration,
    /// Milliseconds since `started` of the last beat.
    last_ms: AtomicU64,
}

/// A heartbeat: call [`Beat::beat`] each time the watched loop makes progress.
#[derive(Debug, Clone)]
pub struct Beat {
    started: Instant,
    state: Arc<BeatState>,
}

impl Beat {
    /// The watched loop made progress now.
    pub fn beat(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.state.last_ms.store(ms, Ordering::Relaxed);
    }
}

/// What `/readyz` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// All checks hold.
    pub ready: bool,
    /// Each check by name.
    pub checks: BTreeMap<&'static str, Check>,
}

/// What `/healthz` answers.
#[derive(Debug, Clone, Serialize)]
pub struct Liveness {
    /// Every heartbeat is recent.
    pub alive: bool,
    /// Seconds since the process started.
    pub uptime_seconds: u64,
    /// Each heartbeat: seconds since it last beat, and the silence allowed.
    pub heartbeats: BTreeMap<&'static str, HeartbeatView>,
}

/// One heartbeat in `/healthz`.
#[derive(Debug, Clone, Serialize)]
pub struct HeartbeatView {
    /// Seconds since the last beat.
    pub silent_seconds: f64,
    /// Seconds of silence allowed.
    pub max_silence_seconds: f64,
    /// Whether the silence is within bounds.
    pub ok: bool,
}

impl Health {
    /// A health state whose readiness requires `checks`, each `(name, why it is not ready yet)`.
    pub fn new(checks: &[(&'static str, &str)]) -> Arc<Self> {
        let checks = checks
            .iter()
            .map(|&(name, detail)| {
                (
                    name,
                    Check {
                        ok: false,
                        detail: detail.to_string(),
                    },
                )
            })
            .collect();
        Arc::new(Health {
            started: Instant::now(),
            checks: Mutex::new(checks),
            beats: Mutex::new(Vec::new()),
        })
    }

    /// Sets check `name` (adding it if new).
    pub fn set(&self, name: &'static str, ok: bool, detail: impl Into<String>) {
        let mut checks = self.checks.lock().unwrap_or_else(PoisonError::into_inner);
        checks.insert(
            name,
            Check {
                ok,
                detail: detail.into(),
            },
        );
    }

    /// A heartbeat that must beat at least every `max_silence`, starting now.
    pub fn heartbeat(&self, name: &'static str, max_silence: Duration) -> Beat {
        let state = Arc::new(BeatState {
            name,
            max_silence,
            last_ms: AtomicU64::new(self.started.elapsed().as_millis() as u64),
        });
        self.beats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(state.clone());
        Beat {
            started: self.started,
            state,
        }
    }

    /// The readiness checks now.
    pub fn readiness(&self) -> Readiness {
        let checks = self
            .checks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Readiness {
            ready: checks.values().all(|c| c.ok),
            checks,
        }
    }

    /// The liveness now.
    pub fn liveness(&self) -> Liveness {
        let now_ms = self.started.elapsed().as_millis() as u64;
        let beats = self.beats.lock().unwrap_or_else(PoisonError::into_inner);
        let heartbeats: BTreeMap<_, _> = beats
            .iter()
            .map(|b| {
                let silent =
                    Duration::from_millis(now_ms.saturating_sub(b.last_ms.load(Ordering::Relaxed)));
                (
                    b.name,
                    HeartbeatView {
                        silent_seconds: silent.as_secs_f64(),
                        max_silence_seconds: b.max_silence.as_secs_f64(),
                        ok: silent <= b.max_silence,
                    },
                )
            })
            .collect();
        Liveness {
            alive: heartbeats.values().all(|h| h.ok),
            uptime_seconds: self.started.elapsed().as_secs(),
            heartbeats,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_check_holds() {
        let health = Health::new(&[("schedule", "not loaded yet"), ("kafka", "not reached yet")]);
        let r = health.readiness();
        assert!(!r.ready);
        assert_eq!(r.checks["kafka"].detail, "not reached yet");
        health.set("schedule", true, "12 jobs");
        assert!(!health.readiness().ready);
        health.set("kafka", true, "reached");
        assert!(health.readiness().ready);
        health.set("kafka", false, "cannot reach localhost:9092");
        let r = health.readiness();
        assert!(!r.ready);
        assert_eq!(r.checks["kafka"].detail, "cannot reach localhost:9092");
    }

    #[test]
    fn a_silent_heartbeat_is_not_alive() {
        let health = Health::new(&[]);
        let fresh = health.heartbeat("fresh", Duration::from_secs(3600));
        fresh.beat();
        assert!(health.liveness().alive);
        let _stuck = health.heartbeat("stuck", Duration::ZERO);
        // Any elapsed millisecond exceeds a zero allowance; wait for the clock to move one.
        let start = Instant::now();
        while start.elapsed() < Duration::from_millis(2) {
            std::hint::spin_loop();
        }
        let l = health.liveness();
        assert!(!l.alive);
        assert!(l.heartbeats["fresh"].ok);
        assert!(!l.heartbeats["stuck"].ok);
    }
}
