//! What a running dispatcher shows an operator over `--http`: its Prometheus metrics, its
//! readiness checks and tick-loop heartbeat, and its status page (`GET /`, `GET /status.json`).
//!
//! ```text
//!  tick loop ── minutes handed out, skips, reloads, tick lag ──┐
//!  producer pool ── acks per topic (a counter handle per partition task), errors ──┤
//!  slot ledger ── skew per settled batch, each minute's result ──┼──► Observer ──► /metrics
//!  service ── once a tick: queue, backlog, shards, cursors; once a minute: next runs ──┤      ├─► /, /status.json
//!  watchdog ── once a minute: every shard's last cursor record (the group) ──┘      └─► /readyz, /healthz
//! ```
//!
//! Nothing here costs per record: counters are resolved once per topic and added to per batch,
//! the skew histogram takes a whole batch's acks of one slot in one call, and the page reads only
//! what the loop already keeps. The next runs come from the wheels' earliest slots once a minute
//! ([`crate::dispatcher::Scheduler::upcoming`]); a request never walks the schedule.
//!
//! With `--http off` the parts report to [`Observer::disabled`], an observer that is off: each
//! report returns at once, so no part asks whether there is an observer.
//!
//! `metrics.rs` holds the metrics and their handles, `events.rs` what the parts report,
//! `status.rs` what the page and `/status.json` show, and `page.rs` the HTML.

mod clock;
mod events;
mod metrics;
mod page;
mod status;

use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use prometheus_client::registry::Registry;

use crate::clock::{Clock, SystemClock};
use crate::obs::health::{Beat, Health};
use crate::obs::http::Site;
use metrics::Metrics;
use status::PageState;

pub use clock::ClockView;
pub use events::{ShardSnapshot, TickSnapshot};
pub use metrics::{BatchHistogram, ProduceErrorKind, TopicCounter};
pub use page::render;
pub use status::{
    MinuteRow, Mode, OwnedShard, RefusedWrite, RejectedRecord, Reload, ScheduleTopicView,
    ShardTopicRow, Status, UnreadableCursor, UpcomingRun,
};

/// Runs listed on the status page.
pub const UPCOMING: usize = 50;

/// Minutes of history on the status page.
pub const HISTORY_MINUTES: i64 = 60;

/// Everything a dispatcher shows: metrics, probes and the status page's state.
pub struct Observer {
    /// False for [`Observer::disabled`]: every report returns at once.
    on: bool,
    registry: Arc<Registry>,
    health: Arc<Health>,
    metrics: Metrics,
    clock: Arc<dyn Clock>,
    mode: Mode,
    default_topic: String,
    page: Mutex<PageState>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer")
            .field("on", &self.on)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// The readiness checks of a dispatcher.
pub mod check {
    /// The schedule file was loaded.
    pub const SCHEDULE: &str = "schedule";
    /// The broker answers.
    pub const KAFKA: &str = "kafka";
    /// The group assigned this member its shards.
    pub const SHARDS: &str = "shards";
    /// The process is not shutting down.
    pub const RUNNING: &str = "running";
    /// The wall clock is trusted (no step held back) and not behind the last processed minute.
    pub const CLOCK: &str = "clock";
}

/// The silence the tick-loop heartbeat is allowed: three ticks, at least 30 seconds (a reload
/// swapped in or a minute of a million jobs queued must not look like a hang).
pub fn heartbeat_silence(tick: Duration) -> Duration {
    (tick * 3).max(Duration::from_secs(30))
}

/// The one observer that is off, shared by every part that reports to none.
static OFF: LazyLock<Arc<Observer>> =
    LazyLock::new(|| Observer::build(false, Mode::DryRun, "", Arc::new(SystemClock)));

impl Observer {
    /// An observer for a dispatcher running as `mode`, sending jobs without a topic to
    /// `default_topic`, on `clock`.
    pub fn new(mode: Mode, default_topic: &str, clock: Arc<dyn Clock>) -> Arc<Observer> {
        Observer::build(true, mode, default_topic, clock)
    }

    /// An observer that is off (`--http off`): every report returns at once and nothing is kept.
    pub fn disabled() -> Arc<Observer> {
        Arc::clone(&OFF)
    }

    /// [`Observer::disabled`], borrowed for as long as the process runs.
    pub fn off() -> &'static Observer {
        &OFF
    }

    /// Whether this observer keeps what it is told (false for [`Observer::disabled`]).
    pub fn is_on(&self) -> bool {
        self.on
    }

    fn build(on: bool, mode: Mode, default_topic: &str, clock: Arc<dyn Clock>) -> Arc<Observer> {
        let mut registry = Registry::default();
        let metrics = Metrics::new(&mut registry, default_topic);
        let checks: &[(&'static str, &str)] = match mode {
            Mode::DryRun => &[(check::SCHEDULE, "not loaded yet")],
            Mode::Group { .. } => &[
                (check::SCHEDULE, "not loaded yet"),
                (check::KAFKA, "not reached yet"),
                (check::SHARDS, "not assigned yet: joining the group"),
            ],
        };
        let health = Health::new(checks);
        health.set(check::RUNNING, true, "running");
        health.set(check::CLOCK, true, "not checked yet");
        Arc::new(Observer {
            on,
            registry: Arc::new(registry),
            health,
            metrics,
            clock,
            mode,
            default_topic: default_topic.to_string(),
            page: Mutex::new(PageState::default()),
        })
    }

    /// The site `--http` serves for this dispatcher.
    pub fn site(self: &Arc<Self>) -> Site {
        let page = Arc::clone(self);
        let status = Arc::clone(self);
        Site {
            metrics: Arc::clone(&self.registry),
            health: Arc::clone(&self.health),
            page: Arc::new(move || page.render()),
            status: Arc::new(move || {
                serde_json::to_value(status.status()).unwrap_or(serde_json::Value::Null)
            }),
        }
    }

    /// The probes.
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// The tick loop's heartbeat for a loop waking every `tick`; `None` when the observer is off.
    pub fn heartbeat(&self, tick: Duration) -> Option<Beat> {
        self.on
            .then(|| self.health.heartbeat("tick_loop", heartbeat_silence(tick)))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::path::Path;

    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::clock::ManualClock;

    pub(super) fn observer(mode: Mode) -> (Arc<Observer>, ManualClock) {
        let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 30).unwrap());
        (Observer::new(mode, "jobs", Arc::new(clock.clone())), clock)
    }

    pub(super) fn metrics_text(o: &Observer) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &o.registry).expect("encode");
        text
    }

    #[test]
    fn readiness_follows_the_schedule_the_broker_the_shards_and_shutdown() {
        let (o, _) = observer(Mode::Group {
            group: "g".into(),
            member: "m".into(),
            state_topic: "g.state".into(),
        });
        let r = o.health().readiness();
        assert!(!r.ready);
        assert_eq!(r.checks[check::KAFKA].detail, "not reached yet");
        o.schedule_loaded(Path::new("s.json"), "abc");
        o.kafka_reachable(true, "reached b:9092");
        assert!(!o.health().readiness().ready, "no shards yet");
        o.assigned(&[0, 2], 4);
        let r = o.health().readiness();
        assert!(r.ready, "{r:?}");
        assert_eq!(r.checks[check::SHARDS].detail, "owns shards [0, 2] of 4");
        o.kafka_reachable(false, "cannot reach Kafka at b:9092");
        assert!(!o.health().readiness().ready);
        o.kafka_reachable(true, "reached b:9092");
        o.stopping();
        let r = o.health().readiness();
        assert!(!r.ready);
        assert!(r.checks[check::RUNNING].detail.starts_with("shutting down"));
    }

    #[test]
    fn the_heartbeat_allows_three_ticks_and_at_least_half_a_minute() {
        assert_eq!(
            heartbeat_silence(Duration::from_secs(1)),
            Duration::from_secs(30)
        );
        assert_eq!(
            heartbeat_silence(Duration::from_secs(20)),
            Duration::from_secs(60)
        );
    }

    #[test]
    fn an_observer_that_is_off_keeps_nothing_it_is_told() {
        let o = Observer::disabled();
        assert!(!o.is_on());
        assert!(
            std::ptr::eq(&*o, Observer::off()),
            "one observer that is off"
        );
        o.schedule_loaded(Path::new("s.json"), "abc");
        o.minute_handed_out(crate::clock::Minute(1), 5, Some(Duration::from_secs(1)));
        o.acked(Duration::from_millis(3), 10);
        o.dispatched_to("jobs").add(5);
        o.produce_error("jobs", ProduceErrorKind::Unreachable, 1);
        o.took_over();
        assert!(o.heartbeat(Duration::from_secs(1)).is_none());
        assert!(o.delay_queue_gauge().is_none());
        let s = o.status();
        assert_eq!(
            (
                s.acked_total,
                s.minutes.iter().map(|m| m.dispatched).sum::<u64>()
            ),
            (0, 0)
        );
        assert!(s.schedule.is_none());
        let text = metrics_text(&o);
        assert!(text.contains("cronq_takeovers_total 0"), "{text}");
        assert!(
            text.contains("cronq_dispatch_skew_seconds_count 0"),
            "{text}"
        );
    }
}
