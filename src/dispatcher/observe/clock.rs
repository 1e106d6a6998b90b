//! The dispatcher's clock as the probes, metrics and page show it: a forward step of the wall
//! clock held back ([`crate::clock::GuardedClock`]), and a clock behind the last processed minute.
//! Both make the member not ready (`/readyz` 503, check `clock`, with the reason).

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{check, Observer};
use crate::clock::{ClockWatch, Minute};

/// The clock as `/status.json` shows it.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ClockView {
    /// `ok`, `step_held` (a forward step of the wall clock not accepted yet) or `behind_cursor`
    /// (the clock is behind the last processed minute).
    pub state: &'static str,
    /// The wall clock (RFC 3339), when the clock checks itself.
    pub wall: Option<String>,
    /// The time the dispatcher runs on.
    pub trusted: Option<String>,
    /// What is wrong, in words.
    pub detail: String,
}

/// Steps seen so far, as last counted into the metrics.
#[derive(Debug, Default)]
pub(super) struct StepsCounted {
    forward: u64,
    backward: u64,
}

impl Observer {
    /// Once a tick: the clock's own view (`watch`, `None` for a clock that does not check itself)
    /// and, when the loop's clock is behind the last processed minute, `(now, processed)`.
    pub fn clock_checked(&self, watch: Option<&ClockWatch>, behind: Option<(Minute, Minute)>) {
        if !self.on {
            return;
        }
        let mut view = ClockView {
            state: "ok",
            wall: watch.map(|w| rfc3339(w.wall)),
            trusted: watch.map(|w| rfc3339(w.trusted)),
            detail: "the wall clock moves with the monotonic clock".into(),
        };
        if let Some(w) = watch {
            self.metrics
                .clock_offset
                .set((w.wall - w.trusted).num_milliseconds() as f64 / 1000.0);
            let mut page = self.page();
            let counted = &mut page.clock_steps;
            self.metrics
                .clock_steps
                .get_or_create(&super::metrics::DirectionLabel {
                    direction: "forward",
                })
                .inc_by(w.forward_steps.saturating_sub(counted.forward));
            self.metrics
                .clock_steps
                .get_or_create(&super::metrics::DirectionLabel {
                    direction: "backward",
                })
                .inc_by(w.backward_steps.saturating_sub(counted.backward));
            counted.forward = counted.forward.max(w.forward_steps);
            counted.backward = counted.backward.max(w.backward_steps);
        }
        if let Some(s) = watch.and_then(|w| w.suspect) {
            view.state = "step_held";
            view.detail = format!(
                "clock fault: the wall clock stepped {}s ahead of the monotonic clock at {}; dispatching on monotonic time, the new time is accepted at {} if it holds (or sooner when another member's cursor confirms it)",
                s.step.num_seconds(),
                rfc3339(s.since),
                rfc3339(s.accept_at),
            );
        }
        if let Some((now, processed)) = behind {
            view.state = "behind_cursor";
            view.detail = format!(
                "clock behind the cursor: the clock reads {now}, the last processed minute is {processed}; waiting for the clock to pass it (no minute is sent twice)"
            );
        }
        let ok = view.state == "ok";
        self.health.set(
            check::CLOCK,
            ok,
            if ok {
                "the wall clock moves with the monotonic clock".to_string()
            } else {
                view.detail.clone()
            },
        );
        self.page().clock = Some(view);
    }
}

/// An instant as the page and `/status.json` write it: RFC 3339 UTC, whole seconds.
pub(super) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::clock::SuspectStep;
    use crate::dispatcher::observe::tests::{metrics_text, observer};
    use crate::dispatcher::observe::Mode;

    fn watch(suspect: Option<SuspectStep>, forward: u64, backward: u64) -> ClockWatch {
        let t = Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap();
        ClockWatch {
            wall: t + suspect.map_or(chrono::Duration::zero(), |s| s.step),
            trusted: t,
            suspect,
            forward_steps: forward,
            backward_steps: backward,
        }
    }

    #[test]
    fn a_held_step_and_a_clock_behind_the_cursor_are_not_ready_counted_and_shown() {
        let (o, _) = observer(Mode::DryRun);
        o.schedule_loaded(std::path::Path::new("s.json"), "abc");
        o.clock_checked(Some(&watch(None, 0, 0)), None);
        assert!(o.health().readiness().ready);
        let t = Utc.with_ymd_and_hms(2026, 12, 7, 12, 0, 0).unwrap();
        let step = SuspectStep {
            step: chrono::Duration::hours(2),
            since: t,
            accept_at: t + chrono::Duration::minutes(10),
        };
        // Reported every tick while the step holds: counted once.
        o.clock_checked(Some(&watch(Some(step), 1, 0)), None);
        o.clock_checked(Some(&watch(Some(step), 1, 0)), None);
        let r = o.health().readiness();
        assert!(!r.ready);
        assert!(
            r.checks[check::CLOCK].detail.contains("7200s ahead"),
            "{r:?}"
        );
        let text = metrics_text(&o);
        assert!(
            text.contains("cronq_clock_steps_total{direction=\"forward\"} 1"),
            "{text}"
        );
        assert!(text.contains("cronq_clock_offset_seconds 7200"), "{text}");
        assert_eq!(
            serde_json::to_value(o.status()).unwrap()["clock"]["state"],
            "step_held"
        );
        // The step is accepted, the clock then stepped back behind the last processed minute.
        o.clock_checked(
            Some(&watch(None, 1, 1)),
            Some((Minute(29_000_000), Minute(29_000_002))),
        );
        let r = o.health().readiness();
        assert!(!r.ready);
        assert!(
            r.checks[check::CLOCK]
                .detail
                .starts_with("clock behind the cursor"),
            "{r:?}"
        );
        assert!(o.render().contains("clock behind the cursor"));
        let text = metrics_text(&o);
        assert!(
            text.contains("cronq_clock_steps_total{direction=\"backward\"} 1"),
            "{text}"
        );
        o.clock_checked(Some(&watch(None, 1, 1)), None);
        assert!(o.health().readiness().ready);
    }
}
