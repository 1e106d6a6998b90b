//! The dispatcher's Prometheus metrics: their names, help texts and labels (none carries a job
//! name), registered once; and the two handles the hot path holds, a batch histogram for the skew
//! and a counter per topic, so that a produce batch costs a few atomic adds.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::{Registry, Unit};

/// Bounds of `cronq_dispatch_skew_seconds`: 1 ms to 10 minutes (a catch-up after an outage).
const SKEW_BUCKETS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// Bounds of `cronq_schedule_reload_seconds`: a small file in milliseconds, a million jobs in
/// seconds.
const RELOAD_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Bounds of `cronq_schedule_topic_apply_seconds`: a change reaches the wheel in milliseconds.
const TOPIC_APPLY_BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct TopicLabel {
    pub(super) topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ReasonLabel {
    pub(super) reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ErrorLabel {
    pub(super) topic: String,
    pub(super) kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ResultLabel {
    pub(super) result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct DirectionLabel {
    pub(super) direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(super) struct ShardLabel {
    pub(super) shard: u32,
}

/// Why a produce failed, as `cronq_produce_errors_total{kind}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProduceErrorKind {
    /// A produce request failed because the broker could not be reached (retried).
    Unreachable,
    /// A produce request failed with another transient error (retried).
    Retriable,
    /// A record the broker refused for good (dropped).
    Rejected,
    /// An attempt to make a topic usable failed (its dispatches wait).
    Topic,
    /// The broker refused a produce request for want of rights (TOPIC_ or
    /// CLUSTER_AUTHORIZATION_FAILED): its dispatches wait and are retried.
    Unauthorized,
}

impl ProduceErrorKind {
    const ALL: [ProduceErrorKind; 5] = [
        ProduceErrorKind::Unreachable,
        ProduceErrorKind::Retriable,
        ProduceErrorKind::Rejected,
        ProduceErrorKind::Topic,
        ProduceErrorKind::Unauthorized,
    ];

    pub(super) fn label(self) -> &'static str {
        match self {
            ProduceErrorKind::Unreachable => "unreachable",
            ProduceErrorKind::Retriable => "retriable",
            ProduceErrorKind::Rejected => "rejected",
            ProduceErrorKind::Topic => "topic",
            ProduceErrorKind::Unauthorized => "unauthorized",
        }
    }
}

/// A histogram that takes `n` equal observations in one call: every record of a produce batch
/// for one slot is acked at the same instant, so its skew is observed once per batch, not once
/// per record. Encoded by prometheus-client like its own histograms.
#[derive(Debug, Clone)]
pub struct BatchHistogram {
    bounds: Arc<[f64]>,
    inner: Arc<Mutex<HistogramState>>,
}

#[derive(Debug)]
struct HistogramState {
    sum: f64,
    count: u64,
    /// Per bucket (not cumulative), the last one +Inf.
    buckets: Vec<u64>,
}

impl BatchHistogram {
    fn new(bounds: &[f64]) -> BatchHistogram {
        BatchHistogram {
            bounds: bounds.iter().copied().chain([f64::INFINITY]).collect(),
            inner: Arc::new(Mutex::new(HistogramState {
                sum: 0.0,
                count: 0,
                buckets: vec![0; bounds.len() + 1],
            })),
        }
    }

    /// `n` observations of `value`.
    pub fn observe_n(&self, value: f64, n: u64) {
        if n == 0 {
            return;
        }
        let bucket = self
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(self.bounds.len() - 1);
        let mut s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        s.sum += value * n as f64;
        s.count += n;
        s.buckets[bucket] += n;
    }

    /// (sum, count) so far.
    pub fn totals(&self) -> (f64, u64) {
        let s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        (s.sum, s.count)
    }
}

impl TypedMetric for BatchHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for BatchHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = {
            let s = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
            let buckets: Vec<(f64, u64)> = self
                .bounds
                .iter()
                .copied()
                .zip(s.buckets.iter().copied())
                .collect();
            (s.sum, s.count, buckets)
        };
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// `cronq_dispatched_total` of one topic, resolved once, plus the total the page shows; from an
/// observer that is off, a counter that counts nothing.
#[derive(Debug, Clone)]
pub struct TopicCounter {
    /// (the topic's, every topic's); `None` when the observer is off.
    counters: Option<(Counter, Counter)>,
}

impl TopicCounter {
    /// The counter of an observer that is off.
    pub(super) const OFF: TopicCounter = TopicCounter { counters: None };

    /// `n` more dispatches delivered.
    #[inline]
    pub fn add(&self, n: u64) {
        if let Some((topic, total)) = &self.counters {
            topic.inc_by(n);
            total.inc_by(n);
        }
    }
}

/// The dispatcher's Prometheus metrics (docs/operations.md lists them).
#[derive(Debug)]
pub(super) struct Metrics {
    pub(super) dispatched: Family<TopicLabel, Counter>,
    pub(super) skew: BatchHistogram,
    pub(super) skipped: Family<ReasonLabel, Counter>,
    pub(super) undelivered: Gauge,
    pub(super) produce_errors: Family<ErrorLabel, Counter>,
    pub(super) queue_depth: Gauge,
    pub(super) delay_queue_depth: Gauge,
    pub(super) schedule_jobs: Gauge,
    pub(super) reloads: Family<ResultLabel, Counter>,
    pub(super) reload_seconds: Histogram,
    pub(super) tick_lag: Gauge<f64, AtomicU64>,
    pub(super) shards_owned: Gauge,
    pub(super) shard_cursor_lag: Family<ShardLabel, Gauge<f64, AtomicU64>>,
    pub(super) takeovers: Counter,
    pub(super) schedule_rejected: Counter,
    pub(super) schedule_topic_seconds: Histogram,
    pub(super) clock_steps: Family<DirectionLabel, Counter>,
    pub(super) clock_offset: Gauge<f64, AtomicU64>,
    /// Every topic's `dispatched` (not exported: the page's total).
    pub(super) dispatched_all: Counter,
}

impl Metrics {
    /// The metrics, registered in `registry`, with the series known from the start at 0 (so that
    /// rates and alerts see them before the first event); `default_topic` is the one of jobs
    /// without their own.
    pub(super) fn new(registry: &mut Registry, default_topic: &str) -> Metrics {
        let m = Metrics {
            dispatched: Family::default(),
            skew: BatchHistogram::new(&SKEW_BUCKETS),
            skipped: Family::default(),
            undelivered: Gauge::default(),
            produce_errors: Family::default(),
            queue_depth: Gauge::default(),
            delay_queue_depth: Gauge::default(),
            schedule_jobs: Gauge::default(),
            reloads: Family::default(),
            reload_seconds: Histogram::new(RELOAD_BUCKETS),
            tick_lag: Gauge::default(),
            shards_owned: Gauge::default(),
            shard_cursor_lag: Family::default(),
            takeovers: Counter::default(),
            schedule_rejected: Counter::default(),
            schedule_topic_seconds: Histogram::new(TOPIC_APPLY_BUCKETS),
            clock_steps: Family::default(),
            clock_offset: Gauge::default(),
            dispatched_all: Counter::default(),
        };
        registry.register(
            "cronq_dispatched",
            "Dispatches the broker acked (dry run: printed), by topic",
            m.dispatched.clone(),
        );
        registry.register_with_unit(
            "cronq_dispatch_skew",
            "Ack time minus slot time of each dispatch",
            Unit::Seconds,
            m.skew.clone(),
        );
        registry.register(
            "cronq_slots_skipped",
            "Job slots left out, by reason: catchup_window (missed, older than the job's window), catchup_rule (missed, left out by its catch-up rule) or paused (its job is paused)",
            m.skipped.clone(),
        );
        registry.register(
            "cronq_undelivered",
            "Dispatches handed to the producer pool and not yet acked or dropped",
            m.undelivered.clone(),
        );
        registry.register(
            "cronq_produce_errors",
            "Produce failures by topic and kind: unreachable and retriable (failed requests, retried), rejected (records dropped), topic (failed attempts to make a topic usable)",
            m.produce_errors.clone(),
        );
        registry.register(
            "cronq_queue_depth",
            "Dispatches waiting in the queue between the tick loop and the sink",
            m.queue_depth.clone(),
        );
        registry.register(
            "cronq_delay_queue_depth",
            "Dispatches of jobs with a jitter waiting for their notBefore in the delay queue (--delay-capacity)",
            m.delay_queue_depth.clone(),
        );
        registry.register(
            "cronq_schedule_jobs",
            "Jobs in this dispatcher's wheels (enabled jobs of its shards with a run to come)",
            m.schedule_jobs.clone(),
        );
        registry.register(
            "cronq_schedule_reloads",
            "Changes of the schedule file, by result: ok, rejected (kept the last good schedule), vanished (unreadable)",
            m.reloads.clone(),
        );
        registry.register_with_unit(
            "cronq_schedule_reload",
            "Time to read, validate and compile a changed schedule file",
            Unit::Seconds,
            m.reload_seconds.clone(),
        );
        registry.register_with_unit(
            "cronq_tick_lag",
            "How late after its minute boundary the last minute was handed out",
            Unit::Seconds,
            m.tick_lag.clone(),
        );
        registry.register(
            "cronq_shards_owned",
            "Shards this dispatcher owns",
            m.shards_owned.clone(),
        );
        registry.register_with_unit(
            "cronq_shard_cursor_lag",
            "Time since the end of the last minute whose every dispatch was acked, per owned shard",
            Unit::Seconds,
            m.shard_cursor_lag.clone(),
        );
        registry.register(
            "cronq_takeovers",
            "Shards taken over from their cursor (start-up, rebalance, a dead member)",
            m.takeovers.clone(),
        );
        registry.register(
            "cronq_schedule_records_rejected",
            "Schedule topic records of owned shards that failed the checks (the job's last good version stays in force)",
            m.schedule_rejected.clone(),
        );
        registry.register_with_unit(
            "cronq_schedule_topic_apply",
            "From the fetch of schedule topic records to their jobs in the wheel",
            Unit::Seconds,
            m.schedule_topic_seconds.clone(),
        );
        registry.register(
            "cronq_clock_steps",
            "Steps of the wall clock against the monotonic clock, by direction: forward (held back until --clock-settle or a confirmation) or backward (taken at once; processed minutes are not sent again)",
            m.clock_steps.clone(),
        );
        registry.register_with_unit(
            "cronq_clock_offset",
            "Wall clock minus the time the dispatcher runs on (non-zero while a forward step is held back)",
            Unit::Seconds,
            m.clock_offset.clone(),
        );
        for direction in ["forward", "backward"] {
            let _ = m.clock_steps.get_or_create(&DirectionLabel { direction });
        }
        for result in ["ok", "rejected", "vanished"] {
            let _ = m.reloads.get_or_create(&ResultLabel { result });
        }
        for reason in ["catchup_window", "catchup_rule", "paused"] {
            let _ = m.skipped.get_or_create(&ReasonLabel { reason });
        }
        let _ = m.dispatched.get_or_create(&TopicLabel {
            topic: default_topic.to_string(),
        });
        for kind in ProduceErrorKind::ALL {
            let _ = m.produce_errors.get_or_create(&ErrorLabel {
                topic: default_topic.to_string(),
                kind: kind.label(),
            });
        }
        m
    }

    /// The counter of dispatches delivered to `topic`.
    pub(super) fn dispatched_to(&self, topic: &str) -> TopicCounter {
        TopicCounter {
            counters: Some((
                self.dispatched.get_or_create_owned(&TopicLabel {
                    topic: topic.to_string(),
                }),
                self.dispatched_all.clone(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::ProduceErrorKind;
    use crate::dispatcher::observe::tests::{metrics_text, observer};
    use crate::dispatcher::observe::Mode;

    #[test]
    fn skew_of_a_batch_is_counted_once_per_record_in_its_bucket() {
        let (o, _) = observer(Mode::DryRun);
        o.acked(Duration::from_millis(3), 10);
        o.acked(Duration::from_secs(90), 2);
        o.acked(Duration::from_secs(3600), 1);
        let text = metrics_text(&o);
        for line in [
            "cronq_dispatch_skew_seconds_count 13",
            "cronq_dispatch_skew_seconds_bucket{le=\"0.0025\"} 0",
            "cronq_dispatch_skew_seconds_bucket{le=\"0.005\"} 10",
            "cronq_dispatch_skew_seconds_bucket{le=\"60.0\"} 10",
            "cronq_dispatch_skew_seconds_bucket{le=\"120.0\"} 12",
            "cronq_dispatch_skew_seconds_bucket{le=\"600.0\"} 12",
            "cronq_dispatch_skew_seconds_bucket{le=\"+Inf\"} 13",
            "cronq_dispatch_skew_seconds_sum 3780.03",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
    }

    #[test]
    fn counters_take_their_labels_and_no_job_name() {
        let (o, _) = observer(Mode::DryRun);
        let jobs = o.dispatched_to("jobs");
        jobs.add(5);
        jobs.add(2);
        o.dispatched_to("reports").add(1);
        o.produce_error("reports", ProduceErrorKind::Unreachable, 1);
        let text = metrics_text(&o);
        for line in [
            "cronq_dispatched_total{topic=\"jobs\"} 7",
            "cronq_dispatched_total{topic=\"reports\"} 1",
            "cronq_produce_errors_total{topic=\"reports\",kind=\"unreachable\"} 1",
            "cronq_schedule_reloads_total{result=\"rejected\"} 0",
            "cronq_slots_skipped_total{reason=\"catchup_rule\"} 0",
        ] {
            assert!(text.contains(line), "no {line:?} in\n{text}");
        }
        assert_eq!(o.status().acked_total, 8);
    }
}
