//! What the worker reports to its [`Observer`]: the consume loop's turns, the group, the lag
//! watcher, the autoscaler, and each attempt through [`ObservedHandler`], plus dead letters and
//! duplicates.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::metrics::{reason_index, reason_name, status_index, PartitionLabels};
use super::status::{PartitionLag, PoolSample, RecentDeadLetter, RecentResult, RunningJob};
use super::{
    Observer, CHECK_CONSUMING, CHECK_GROUP, CHECK_KAFKA, DEAD_LETTERS, MAX_TEXT, POOL_BUCKET,
    POOL_WINDOW, RESULTS,
};
use crate::obs::health::Beat;
use crate::wire::result::DeadReason;
use crate::wire::JobMessage;
use crate::worker::executor::{BoxFuture, Handler, JobRun, Outcome, Status};

fn cut(text: &str) -> String {
    match text.char_indices().nth(MAX_TEXT) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

impl Observer {
    /// The consume loop starts: ready to consume, and its heartbeat counts from now.
    pub fn consuming(&self) -> Beat {
        self.health
            .set(CHECK_CONSUMING, true, "consuming and running jobs");
        self.health.heartbeat("consume_loop", self.max_silence)
    }

    /// Shutdown began: not ready (no new jobs start) while running jobs finish.
    pub fn stopping(&self) {
        self.health.set(
            CHECK_CONSUMING,
            false,
            "shutting down: no new jobs start, running ones finish",
        );
    }

    /// The group assigned these partitions (possibly none): the worker is a member.
    pub fn assigned(&self, partitions: usize) {
        let detail = if partitions == 0 {
            format!(
                "joined group {:?} with no partitions (more members than partitions)",
                self.group
            )
        } else {
            format!(
                "joined group {:?}; {partitions} partition(s) assigned",
                self.group
            )
        };
        self.health.set(CHECK_GROUP, true, detail);
    }

    /// The lag watcher's latest view: each assigned partition, and whether the broker answered.
    pub fn lag(&self, partitions: Vec<PartitionLag>, reached: Result<(), String>) {
        match reached {
            Ok(()) => self
                .health
                .set(CHECK_KAFKA, true, format!("reached {}", self.brokers)),
            Err(why) => self.health.set(
                CHECK_KAFKA,
                false,
                format!("cannot reach {}: {why}", self.brokers),
            ),
        }
        let mut recent = self.recent();
        for old in &recent.lag {
            if !partitions
                .iter()
                .any(|p| p.topic == old.topic && p.partition == old.partition)
            {
                self.metrics.lag.remove(&PartitionLabels {
                    topic: old.topic.clone(),
                    partition: old.partition,
                });
            }
        }
        for p in &partitions {
            self.metrics
                .lag
                .get_or_create(&PartitionLabels {
                    topic: p.topic.clone(),
                    partition: p.partition,
                })
                .set(p.lag as i64);
        }
        recent.lag = partitions;
    }

    /// The loop's view now: jobs running and records queued. Called every turn of the loop.
    pub fn load(&self, in_flight: usize, queued: usize) {
        self.metrics.in_flight.set(in_flight as i64);
        self.metrics.queue_depth.set(queued as i64);
        self.in_flight.store(in_flight as i64, Ordering::Relaxed);
        self.queue_depth.store(queued as i64, Ordering::Relaxed);
    }

    /// The autoscaler decided: the pool's `target`, from `previous`; `busy` executors run jobs.
    pub fn pool(&self, previous: usize, target: usize, busy: usize) {
        self.pool_at(self.started.elapsed(), previous, target, busy);
    }

    /// [`Observer::pool`] at `elapsed` since the observer started.
    fn pool_at(&self, elapsed: Duration, previous: usize, target: usize, busy: usize) {
        if target > previous {
            self.metrics.resizes_up.inc();
        } else if target < previous {
            self.metrics.resizes_down.inc();
        }
        let size = target.max(busy);
        self.metrics.pool_size.set(size as i64);
        self.metrics.pool_target.set(target as i64);
        self.pool_size.store(size as u64, Ordering::Relaxed);
        self.pool_target.store(target as u64, Ordering::Relaxed);
        let bucket = elapsed.as_secs() / POOL_BUCKET.as_secs();
        let at =
            self.started_at + chrono::Duration::seconds((bucket * POOL_BUCKET.as_secs()) as i64);
        let sample = PoolSample {
            at,
            size,
            target,
            busy,
        };
        let mut recent = self.recent();
        match recent.pool.back_mut() {
            Some((b, s)) if *b == bucket => {
                s.size = s.size.max(size);
                s.target = s.target.max(target);
                s.busy = s.busy.max(busy);
            }
            _ => recent.pool.push_back((bucket, sample)),
        }
        let buckets = POOL_WINDOW.as_secs() / POOL_BUCKET.as_secs();
        while recent
            .pool
            .front()
            .is_some_and(|(b, _)| b + buckets <= bucket)
        {
            recent.pool.pop_front();
        }
    }

    /// A record was skipped as a recently finished dispatchId.
    pub fn duplicate(&self) {
        self.metrics.duplicates.inc();
    }

    /// A record is being sent to the dead letter topic.
    pub fn dead_letter(
        &self,
        reason: DeadReason,
        job_name: &str,
        topic: &str,
        partition: i32,
        offset: i64,
    ) {
        self.metrics.dead_letters[reason_index(reason)].inc();
        let letter = RecentDeadLetter {
            reason: reason_name(reason),
            job_name: cut(job_name),
            topic: cut(topic),
            partition,
            offset,
            at: Utc::now(),
        };
        let mut recent = self.recent();
        if recent.dead_letters.len() == DEAD_LETTERS {
            recent.dead_letters.pop_front();
        }
        recent.dead_letters.push_back(letter);
    }

    /// A job was not run because it was older than `--max-age` (its JobResult says `expired`).
    pub fn expired(&self, message: &JobMessage) {
        self.result(
            cut(&message.job_name),
            cut(&message.dispatch_id),
            0,
            Status::Expired,
            Duration::ZERO,
        );
    }

    /// A record was not run because of its job's overlap policy: `skipped`, or `cancelled` (a
    /// queued run a newer one replaced). Counted like an attempt, with attempt 0 and no duration.
    pub fn not_run(&self, message: &JobMessage, status: Status) {
        self.result(
            cut(&message.job_name),
            cut(&message.dispatch_id),
            0,
            status,
            Duration::ZERO,
        );
    }

    /// An attempt ended (`job_name` and `dispatch_id` already cut).
    fn result(
        &self,
        job_name: String,
        dispatch_id: String,
        attempt: u32,
        status: Status,
        took: Duration,
    ) {
        self.metrics.runs[status_index(status)].inc();
        // Records that were not run (expired, skipped, a queued run replaced) have no duration.
        if !took.is_zero() {
            self.metrics.duration.observe(took.as_secs_f64());
        }
        let result = RecentResult {
            job_name,
            dispatch_id,
            status: status.as_str(),
            attempt,
            duration_seconds: took.as_secs_f64(),
            finished_at: Utc::now(),
        };
        let mut recent = self.recent();
        if recent.results.len() == RESULTS {
            recent.results.pop_front();
        }
        recent.results.push_back(result);
    }

    /// An attempt starts: it shows as running until the returned guard is finished or dropped.
    pub(super) fn attempt_started(&self, run: &JobRun) -> Attempt<'_> {
        let since = Utc::now();
        if run.attempt == 1 {
            if let Ok(scheduled) = DateTime::parse_from_rfc3339(&run.message.scheduled_at) {
                let delay = (since - scheduled.with_timezone(&Utc))
                    .to_std()
                    .unwrap_or_default();
                self.metrics.start_delay.observe(delay.as_secs_f64());
            }
        }
        let mut recent = self.recent();
        let id = recent.next_id;
        recent.next_id += 1;
        recent.running.insert(
            id,
            RunningJob {
                job_name: cut(&run.message.job_name),
                dispatch_id: cut(&run.message.dispatch_id),
                attempt: run.attempt,
                since,
                running_seconds: 0.0,
            },
        );
        Attempt {
            observer: self,
            id,
            clock: Instant::now(),
            ended: false,
        }
    }
}

/// One attempt in progress; dropped without [`Attempt::ended`] (its handler panicked or its task
/// was aborted), it still leaves the running list, counted as `failed`.
pub(super) struct Attempt<'a> {
    observer: &'a Observer,
    id: u64,
    clock: Instant,
    ended: bool,
}

impl Attempt<'_> {
    pub(super) fn end(mut self, status: Status) {
        self.ended = true;
        self.finish(status);
    }

    fn finish(&self, status: Status) {
        let job = self.observer.recent().running.remove(&self.id);
        if let Some(job) = job {
            self.observer.result(
                job.job_name,
                job.dispatch_id,
                job.attempt,
                status,
                self.clock.elapsed(),
            );
        }
    }
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.finish(Status::Failed);
        }
    }
}

/// A [`Handler`] that reports each attempt to the [`Observer`] around the real handler.
pub struct ObservedHandler {
    /// The handler that runs jobs.
    pub inner: Arc<dyn Handler>,
    /// Where attempts are reported.
    pub observer: Arc<Observer>,
}

impl Handler for ObservedHandler {
    fn run<'a>(&'a self, run: &'a JobRun) -> BoxFuture<'a, Outcome> {
        let attempt = self.observer.attempt_started(run);
        Box::pin(Observed {
            attempt: Some(attempt),
            inner: self.inner.run(run),
        })
    }

    fn run_cancellable<'a>(
        &'a self,
        run: &'a JobRun,
        cancel: &'a tokio_util::sync::CancellationToken,
    ) -> BoxFuture<'a, Outcome> {
        let attempt = self.observer.attempt_started(run);
        Box::pin(Observed {
            attempt: Some(attempt),
            inner: self.inner.run_cancellable(run, cancel),
        })
    }
}

/// The handler's future, and the attempt it ends. The inner future is kept until this one is
/// dropped, where the caller would have dropped it: wrapping changes nothing of where a panic of the
/// handler (while it runs, or when its future is dropped) surfaces.
struct Observed<'a> {
    attempt: Option<Attempt<'a>>,
    inner: BoxFuture<'a, Outcome>,
}

impl std::future::Future for Observed<'_> {
    type Output = Outcome;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Outcome> {
        let polled = self.inner.as_mut().poll(cx);
        if let std::task::Poll::Ready(outcome) = &polled {
            if let Some(attempt) = self.attempt.take() {
                attempt.end(outcome.status);
            }
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::observe::tests::{config, exported, message, run};

    #[test]
    fn skipped_and_cancelled_runs_are_counted_and_only_runs_that_ran_are_timed() {
        let observer = Observer::new(&config());
        let before = exported(&observer);
        for line in [
            "cronq_job_runs_total{status=\"skipped\"} 0",
            "cronq_job_runs_total{status=\"cancelled\"} 0",
        ] {
            assert!(
                before.lines().any(|l| l == line),
                "no {line:?} before any run"
            );
        }
        observer.not_run(&message("s", "2026-11-26T00:01:00Z"), Status::Skipped);
        observer.not_run(&message("s", "2026-11-26T00:02:00Z"), Status::Skipped);
        // A queued run replaced before it started, and a running one ended by the replacement.
        observer.not_run(&message("r", "2026-11-26T00:01:00Z"), Status::Cancelled);
        observer
            .attempt_started(&run("r", 1))
            .end(Status::Cancelled);
        let text = exported(&observer);
        for line in [
            "cronq_job_runs_total{status=\"skipped\"} 2",
            "cronq_job_runs_total{status=\"cancelled\"} 2",
            "cronq_job_duration_seconds_count 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        let view = observer.snapshot();
        assert_eq!((view.runs["skipped"], view.runs["cancelled"]), (2, 2));
        assert_eq!(view.results.len(), 4);
        assert!(view
            .results
            .iter()
            .any(|r| r.status == "skipped" && r.attempt == 0));
    }

    #[test]
    fn an_attempt_whose_handler_dies_leaves_the_running_list_as_failed() {
        let observer = Observer::new(&config());
        let attempt = observer.attempt_started(&run("doomed", 1));
        assert_eq!(observer.snapshot().running.len(), 1);
        assert_eq!(observer.snapshot().running[0].job_name, "doomed");
        drop(attempt);
        let view = observer.snapshot();
        assert!(view.running.is_empty());
        assert_eq!(view.results[0].job_name, "doomed");
        assert_eq!(view.results[0].status, "failed");
        assert_eq!(view.runs["failed"], 1);
    }

    #[test]
    fn only_the_latest_results_and_dead_letters_are_kept_newest_first() {
        let observer = Observer::new(&config());
        for i in 0..RESULTS + 30 {
            observer
                .attempt_started(&run(&format!("job-{i}"), 2))
                .end(Status::Succeeded);
            observer.dead_letter(
                DeadReason::Malformed,
                &format!("job-{i}"),
                "jobs",
                0,
                i as i64,
            );
        }
        let view = observer.snapshot();
        assert_eq!(view.results.len(), RESULTS);
        assert_eq!(view.results[0].job_name, format!("job-{}", RESULTS + 29));
        assert_eq!(view.results[RESULTS - 1].job_name, "job-30");
        assert_eq!(view.recent_dead_letters.len(), DEAD_LETTERS);
        assert_eq!(view.recent_dead_letters[0].offset, (RESULTS + 29) as i64);
        assert_eq!(
            view.runs["succeeded"],
            (RESULTS + 30) as u64,
            "counters count all"
        );
    }

    #[test]
    fn long_names_are_cut_for_the_page() {
        let observer = Observer::new(&config());
        let long = "x".repeat(10_000);
        observer.dead_letter(DeadReason::Malformed, &long, "jobs", 0, 1);
        let kept = &observer.snapshot().recent_dead_letters[0].job_name;
        assert_eq!(kept.chars().count(), MAX_TEXT + 1);
        assert!(kept.ends_with('…'));
    }

    #[test]
    fn the_pool_history_keeps_ten_minutes_of_ten_second_buckets_with_their_largest_values() {
        let observer = Observer::new(&config());
        let s = Duration::from_secs;
        observer.pool_at(s(0), 1, 1, 0);
        observer.pool_at(s(3), 1, 4, 2);
        observer.pool_at(s(7), 4, 2, 1);
        let view = observer.snapshot();
        assert_eq!(view.pool_history.len(), 1);
        let first = view.pool_history[0];
        assert_eq!((first.size, first.target, first.busy), (4, 4, 2));
        // A pool lowered below its busy executors still has them until their jobs end.
        observer.pool_at(s(15), 2, 1, 3);
        let second = *observer.snapshot().pool_history.last().unwrap();
        assert_eq!((second.size, second.target, second.busy), (3, 1, 3));
        assert_eq!((second.at - first.at).num_seconds(), 10);
        let text = exported(&observer);
        assert!(
            text.contains("cronq_pool_resizes_total{direction=\"up\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("cronq_pool_resizes_total{direction=\"down\"} 2"),
            "{text}"
        );
        assert!(text.contains("cronq_worker_pool_size 3"), "{text}");
        assert!(text.contains("cronq_worker_pool_target 1"), "{text}");
        // Ten minutes later the first bucket is gone.
        observer.pool_at(s(600), 1, 1, 0);
        let history = observer.snapshot().pool_history;
        assert_eq!(history.len(), 2);
        assert_eq!(history[0].at, second.at);
        assert!(history.len() <= (POOL_WINDOW.as_secs() / POOL_BUCKET.as_secs()) as usize);
    }

    #[test]
    fn lag_of_partitions_no_longer_assigned_is_no_longer_exported() {
        let observer = Observer::new(&config());
        let lag = |partition, lag| PartitionLag {
            topic: "jobs".into(),
            partition,
            position: Some(10),
            end: Some(10 + lag as i64),
            lag,
        };
        observer.lag(vec![lag(0, 5), lag(1, 0)], Ok(()));
        let text = exported(&observer);
        assert!(
            text.contains("cronq_worker_lag{topic=\"jobs\",partition=\"0\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("cronq_worker_lag{topic=\"jobs\",partition=\"1\"} 0"),
            "{text}"
        );
        observer.lag(vec![lag(1, 2)], Err("timed out".into()));
        let text = exported(&observer);
        assert!(!text.contains("partition=\"0\""), "{text}");
        assert!(
            text.contains("cronq_worker_lag{topic=\"jobs\",partition=\"1\"} 2"),
            "{text}"
        );
        let kafka = &observer.health().readiness().checks["kafka"];
        assert!(!kafka.ok && kafka.detail.contains("timed out"), "{kafka:?}");
    }
}
