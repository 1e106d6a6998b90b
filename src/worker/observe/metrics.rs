//! The worker's Prometheus metrics, registered once, with a handle per status, reason and
//! direction cached at start: a job costs a few atomic adds, no label lookup. No metric has a
//! jobName label (unbounded cardinality).

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::wire::result::DeadReason;
use crate::worker::executor::Status;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct PartitionLabels {
    pub(super) topic: String,
    pub(super) partition: i32,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabel {
    direction: &'static str,
}

pub(super) const STATUSES: [Status; 7] = [
    Status::Succeeded,
    Status::Failed,
    Status::TimedOut,
    Status::Rejected,
    Status::Expired,
    Status::Skipped,
    Status::Cancelled,
];

pub(super) const REASONS: [DeadReason; 6] = [
    DeadReason::AttemptsExhausted,
    DeadReason::Rejected,
    DeadReason::Malformed,
    DeadReason::Expired,
    DeadReason::Crashed,
    DeadReason::FutureSlot,
];

pub(super) fn status_index(status: Status) -> usize {
    match status {
        Status::Succeeded => 0,
        Status::Failed => 1,
        Status::TimedOut => 2,
        Status::Rejected => 3,
        Status::Expired => 4,
        Status::Skipped => 5,
        Status::Cancelled => 6,
    }
}

pub(super) fn reason_index(reason: DeadReason) -> usize {
    match reason {
        DeadReason::AttemptsExhausted => 0,
        DeadReason::Rejected => 1,
        DeadReason::Malformed => 2,
        DeadReason::Expired => 3,
        DeadReason::Crashed => 4,
        DeadReason::FutureSlot => 5,
    }
}

/// The wire name of a dead letter's reason (as in the letter's `reason` field).
pub fn reason_name(reason: DeadReason) -> &'static str {
    match reason {
        DeadReason::AttemptsExhausted => "attempts_exhausted",
        DeadReason::Rejected => "rejected",
        DeadReason::Malformed => "malformed",
        DeadReason::Expired => "expired",
        DeadReason::Crashed => "crashed",
        DeadReason::FutureSlot => "future_slot",
    }
}

/// The metric handles, created and registered once.
pub(super) struct Metrics {
    pub(super) registry: Arc<Registry>,
    pub(super) lag: Family<PartitionLabels, Gauge>,
    pub(super) pool_size: Gauge,
    pub(super) pool_target: Gauge,
    pub(super) in_flight: Gauge,
    pub(super) queue_depth: Gauge,
    /// `cronq_job_runs_total`, one handle per [`STATUSES`].
    pub(super) runs: [Counter; STATUSES.len()],
    pub(super) duration: Histogram,
    pub(super) start_delay: Histogram,
    /// `cronq_dead_letters_total`, one handle per [`REASONS`].
    pub(super) dead_letters: [Counter; REASONS.len()],
    pub(super) duplicates: Counter,
    pub(super) resizes_up: Counter,
    pub(super) resizes_down: Counter,
}

/// Seconds, from 5 ms to an hour: jobs range from no-ops to batch runs.
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 60.0, 300.0, 3600.0,
];
/// Seconds, from 10 ms to an hour: a healthy worker starts a job well within a second of its slot;
/// a backlog or a worker that was down shows as minutes.
const DELAY_BUCKETS: [f64; 13] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0, 300.0, 3600.0,
];

impl Metrics {
    pub(super) fn new() -> Metrics {
        let mut registry = Registry::default();
        let lag = Family::<PartitionLabels, Gauge>::default();
        registry.register(
            "cronq_worker_lag",
            "Records of an assigned partition not read yet (high watermark minus position)",
            lag.clone(),
        );
        let pool_size = Gauge::default();
        registry.register(
            "cronq_worker_pool_size",
            "Executors now: the target, or more while jobs above a lowered target finish",
            pool_size.clone(),
        );
        let pool_target = Gauge::default();
        registry.register(
            "cronq_worker_pool_target",
            "Executors the autoscaler decided on, within --min-workers and --max-workers",
            pool_target.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "cronq_worker_in_flight",
            "Jobs whose handler is running",
            in_flight.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "cronq_worker_queue_depth",
            "Records fetched and waiting in the local queue (jobs, and records to dead-letter)",
            queue_depth.clone(),
        );
        let runs_family = Family::<StatusLabel, Counter>::default();
        registry.register(
            "cronq_job_runs",
            "Job attempts reported, by their JobResult status",
            runs_family.clone(),
        );
        let runs =
            STATUSES.map(|s| runs_family.get_or_create_owned(&StatusLabel { status: s.as_str() }));
        let duration = Histogram::new(DURATION_BUCKETS);
        registry.register(
            "cronq_job_duration_seconds",
            "How long an attempt's handler ran",
            duration.clone(),
        );
        let start_delay = Histogram::new(DELAY_BUCKETS);
        registry.register(
            "cronq_job_start_delay_seconds",
            "From a job's scheduledAt to the start of its first attempt",
            start_delay.clone(),
        );
        let letters_family = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "cronq_dead_letters",
            "Records sent to the dead letter topic, by reason",
            letters_family.clone(),
        );
        let dead_letters = REASONS.map(|r| {
            letters_family.get_or_create_owned(&ReasonLabel {
                reason: reason_name(r),
            })
        });
        let duplicates = Counter::default();
        registry.register(
            "cronq_duplicates_skipped",
            "Records skipped because their dispatchId is done (finished here, or a terminal result in the results topic)",
            duplicates.clone(),
        );
        let resizes = Family::<DirectionLabel, Counter>::default();
        registry.register(
            "cronq_pool_resizes",
            "Pool target changes by the autoscaler, up or down",
            resizes.clone(),
        );
        let resizes_up = resizes.get_or_create_owned(&DirectionLabel { direction: "up" });
        let resizes_down = resizes.get_or_create_owned(&DirectionLabel { direction: "down" });
        Metrics {
            registry: Arc::new(registry),
            lag,
            pool_size,
            pool_target,
            in_flight,
            queue_depth,
            runs,
            duration,
            start_delay,
            dead_letters,
            duplicates,
            resizes_up,
            resizes_down,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::wire::result::DeadReason;
    use crate::worker::executor::Status;
    use crate::worker::observe::tests::{config, exported, message, run};
    use crate::worker::observe::Observer;

    #[test]
    fn attempts_are_counted_by_status_and_timed_without_a_job_label() {
        let observer = Observer::new(&config());
        observer
            .attempt_started(&run("a", 1))
            .end(Status::Succeeded);
        observer.attempt_started(&run("b", 1)).end(Status::Failed);
        observer.attempt_started(&run("b", 2)).end(Status::TimedOut);
        observer.expired(&message("c", "2026-11-26T00:01:00Z"));
        observer.dead_letter(DeadReason::AttemptsExhausted, "b", "jobs", 0, 7);
        observer.duplicate();
        let text = exported(&observer);
        for line in [
            "cronq_job_runs_total{status=\"succeeded\"} 1",
            "cronq_job_runs_total{status=\"failed\"} 1",
            "cronq_job_runs_total{status=\"timed_out\"} 1",
            "cronq_job_runs_total{status=\"expired\"} 1",
            "cronq_job_runs_total{status=\"rejected\"} 0",
            // Expired jobs did not run: not timed.
            "cronq_job_duration_seconds_count 3",
            // First attempts only; the expired one never started.
            "cronq_job_start_delay_seconds_count 2",
            "cronq_dead_letters_total{reason=\"attempts_exhausted\"} 1",
            "cronq_dead_letters_total{reason=\"malformed\"} 0",
            "cronq_duplicates_skipped_total 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        assert!(
            !text.contains("job_name") && !text.contains("\"a\""),
            "{text}"
        );
    }
}
