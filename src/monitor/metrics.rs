//! The monitor's Prometheus metrics (`--http` `/metrics`). No per-job label: a schedule of a
//! million jobs must not become a million series.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::model::RunState;
use super::store::Applied;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TopicLabel {
    topic: String,
}

/// Every metric of the monitor.
#[derive(Debug, Default)]
pub struct Metrics {
    runs: Family<StatusLabel, Counter>,
    missed: Counter,
    late: Counter,
    duplicates: Counter,
    alerts: Counter,
    rejected: Family<TopicLabel, Counter>,
    /// Records between the positions and the high watermarks, over every partition read.
    pub ingest_lag: Gauge,
    /// The database's size.
    pub db_bytes: Gauge,
}

impl Metrics {
    /// The metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> std::sync::Arc<Metrics> {
        let m = Metrics::default();
        for state in RunState::ALL {
            // Every status from the start, so a rate() sees its first increment.
            let _ = m.runs.get_or_create(&StatusLabel {
                status: state.as_str(),
            });
        }
        registry.register(
            "cronq_monitor_runs",
            "Runs that entered each state",
            m.runs.clone(),
        );
        registry.register(
            "cronq_monitor_missed",
            "Slots of the schedule with no dispatch by slot + --missed-after",
            m.missed.clone(),
        );
        registry.register(
            "cronq_monitor_late",
            "Runs with no final state by their deadline",
            m.late.clone(),
        );
        registry.register(
            "cronq_monitor_duplicates",
            "Second JobMessages of a slot (a re-send after a crash)",
            m.duplicates.clone(),
        );
        registry.register(
            "cronq_monitor_alerts_raised",
            "Alerts raised (one per job, slot and kind)",
            m.alerts.clone(),
        );
        registry.register(
            "cronq_monitor_records_rejected",
            "Records that do not decode, skipped",
            m.rejected.clone(),
        );
        registry.register(
            "cronq_monitor_ingest_lag_records",
            "Records not yet ingested, over every partition read",
            m.ingest_lag.clone(),
        );
        registry.register(
            "cronq_monitor_db_bytes",
            "Size of the monitor's database",
            m.db_bytes.clone(),
        );
        std::sync::Arc::new(m)
    }

    /// Counts what a batch or a judge pass did.
    pub fn applied(&self, applied: &Applied) {
        for state in RunState::ALL {
            let n = applied.count(state);
            if n > 0 {
                self.runs
                    .get_or_create(&StatusLabel {
                        status: state.as_str(),
                    })
                    .inc_by(n);
            }
        }
        self.missed.inc_by(applied.count(RunState::Missed));
        self.late.inc_by(applied.count(RunState::Late));
        self.duplicates.inc_by(applied.duplicates);
        self.alerts.inc_by(applied.alerts);
    }

    /// A record of `topic` that did not decode.
    pub fn rejected(&self, topic: &str) {
        self.rejected
            .get_or_create(&TopicLabel {
                topic: topic.to_string(),
            })
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_names_are_exported_without_a_per_job_label() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let mut applied = Applied::default();
        applied.entered[RunState::ALL
            .iter()
            .position(|s| *s == RunState::Missed)
            .unwrap()] = 2;
        metrics.applied(&applied);
        metrics.rejected("jobs.results");
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        for line in [
            "cronq_monitor_runs_total{status=\"missed\"} 2",
            "cronq_monitor_runs_total{status=\"succeeded\"} 0",
            "cronq_monitor_missed_total 2",
            "cronq_monitor_late_total 0",
            "cronq_monitor_records_rejected_total{topic=\"jobs.results\"} 1",
            "cronq_monitor_ingest_lag_records 0",
            "cronq_monitor_db_bytes 0",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert!(!text.contains("job="), "{text}");
    }
}
