//! The drill clock all processes of one test share (`--drill-clock SPEEDx@EPOCH`): drill time
//! starts at the real `epoch` and runs `speed` times as fast, so a test sees many minutes in a
//! few real seconds.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};

use super::pause;

#[derive(Clone, Copy)]
pub struct Drill {
    pub epoch: i64,
    pub speed: i64,
}

impl Drill {
    /// A drill clock that starts now and runs `speed` times as fast as real time.
    pub fn new(speed: i64) -> Drill {
        Drill {
            epoch: Utc::now().timestamp(),
            speed,
        }
    }

    /// The `--drill-clock` value.
    pub fn setting(&self) -> String {
        format!("{}x@{}", self.speed, self.epoch)
    }

    /// Drill time at real instant `real_ms` (ms since the Unix epoch).
    pub fn at(&self, real_ms: i64) -> DateTime<Utc> {
        let ms = self.epoch * 1000 + (real_ms - self.epoch * 1000) * self.speed;
        Utc.timestamp_millis_opt(ms).unwrap()
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.at(Utc::now().timestamp_millis())
    }

    /// Drill minutes since the Unix epoch.
    pub fn minute(&self) -> i64 {
        self.now().timestamp().div_euclid(60)
    }

    /// Waits (polling) until drill time reaches `second` of the minute `minutes` from now; returns
    /// that minute.
    pub fn wait_minutes(&self, minutes: i64, second: u32) -> i64 {
        let target = self.minute() + minutes;
        let deadline = Instant::now() + Duration::from_secs(600);
        while self.minute() < target || (self.now().timestamp() % 60) < i64::from(second) {
            assert!(Instant::now() < deadline, "drill clock stuck");
            pause();
        }
        target
    }

    /// Waits (polling) until drill time reaches `second` of drill minute `minute`.
    pub fn wait_until(&self, minute: i64, second: i64) {
        let target = minute * 60 + second;
        let deadline = Instant::now() + Duration::from_secs(300);
        while self.now().timestamp() < target {
            assert!(Instant::now() < deadline, "drill clock stuck");
            pause();
        }
    }
}
