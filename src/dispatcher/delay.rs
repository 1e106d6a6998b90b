//! The delay queue between the tick loop and the producers: the records of jobs with a `jitter`
//! wait here until their `notBefore`; every other record passes straight through.
//!
//! ```text
//!  tick loop ──► queue (--queue-capacity) ──► delay task ──► queue (--queue-capacity) ──► producers
//!                                              │ no jitter, or notBefore passed: forwarded at once
//!                                              └► waiting (min-heap by notBefore, --delay-capacity):
//!                                                 released at notBefore on the dispatcher's clock
//! ```
//!
//! The wheel keeps minute resolution: a jittered job is due in its slot's minute like any other,
//! and its lease counts the dispatch from then on. The shard's cursor therefore passes the minute
//! only once the delayed record too is acked, and a crash in the middle of a jittered minute
//! re-sends from the cursor, with the same `dispatchId` and `notBefore`.
//!
//! Bounded, never lossy: with `--delay-capacity` records waiting the task stops taking from its
//! input, so the tick loop's queue fills and the loop waits (as for a slow broker); a record
//! taken later than its `notBefore` leaves at once, late. Releasing waits for room in the
//! producers' queue the same way.
//!
//! Handover and shutdown do not wait out the offsets: [`DelayQueue::flush`] sends the records of
//! the released shards at once (every record, at shutdown), so their cursors can be written before
//! the shards go. The records still carry `notBefore`, and workers do not start them before it.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::Dispatch;
use crate::clock::Clock;
use crate::wire::SlotTexts;

/// `--delay-capacity`'s default: a minute of a million jittered jobs waits without backpressure
/// (64 bytes a record: 64 MB).
pub const DEFAULT_DELAY_CAPACITY: usize = 1_000_000;

/// The longest the task sleeps before it reads the clock again (a drill or test clock may jump).
const MAX_SLEEP: Duration = Duration::from_millis(250);

/// A record waiting for its `notBefore`.
#[derive(Debug)]
struct Waiting {
    /// `notBefore`, milliseconds since the epoch.
    at_ms: i64,
    /// Arrival order: ties leave in the order they came.
    seq: u64,
    dispatch: Dispatch,
}

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}

impl Eq for Waiting {}

impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Waiting {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at_ms, self.seq).cmp(&(other.at_ms, other.seq))
    }
}

/// The queue's numbers, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct DelayStats {
    /// Records waiting now.
    pub depth: AtomicU64,
    /// The most that ever waited at once.
    pub peak: AtomicU64,
    /// Records that waited and were released (at their time or by a flush).
    pub released: AtomicU64,
    /// The sum over released records of how late they left after their `notBefore`, in µs
    /// (flushed ones not counted).
    pub late_us_sum: AtomicU64,
}

enum Command {
    /// Send the waiting records of these shards now (`None`: every record, and from now on no
    /// record waits). Answered with how many were sent.
    Flush {
        shards: Option<Vec<u32>>,
        done: oneshot::Sender<usize>,
    },
}

/// The running delay task.
#[derive(Debug)]
pub struct DelayQueue {
    commands: mpsc::UnboundedSender<Command>,
    stats: Arc<DelayStats>,
    task: JoinHandle<()>,
}

/// `notBefore` of `dispatch`, for a job with a jitter or an `at` job (its instant).
fn not_before(dispatch: &Dispatch, texts: &mut SlotTexts) -> Option<DateTime<Utc>> {
    if let Some(at) = dispatch.spec.at() {
        return Some(at);
    }
    let jitter = dispatch.spec.jitter?;
    let text = texts.get(dispatch.scheduled_at);
    Some(crate::wire::ids::not_before(
        &dispatch.spec.name,
        dispatch.scheduled_at,
        text,
        jitter,
    ))
}

impl DelayQueue {
    /// Starts the task between `input` (the tick loop's queue) and the returned receiver (the
    /// producers' input, `out_capacity` records). At most `capacity` records wait; the clock is the
    /// dispatcher's. `gauge` (the `--http` metric `cronq_delay_queue_depth`) follows the depth.
    pub fn start(
        input: mpsc::Receiver<Dispatch>,
        out_capacity: usize,
        capacity: usize,
        clock: Arc<dyn Clock>,
        gauge: Option<Gauge>,
    ) -> (mpsc::Receiver<Dispatch>, DelayQueue) {
        DelayQueue::start_polling(input, out_capacity, capacity, clock, gauge, MAX_SLEEP)
    }

    /// [`DelayQueue::start`], reading the clock at least every `poll` (tests with a manual clock).
    fn start_polling(
        input: mpsc::Receiver<Dispatch>,
        out_capacity: usize,
        capacity: usize,
        clock: Arc<dyn Clock>,
        gauge: Option<Gauge>,
        poll: Duration,
    ) -> (mpsc::Receiver<Dispatch>, DelayQueue) {
        let (out, rx) = mpsc::channel(out_capacity.max(1));
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let stats = Arc::new(DelayStats::default());
        let task = tokio::spawn(
            Task {
                input,
                out,
                commands: commands_rx,
                clock,
                poll,
                capacity: capacity.max(1),
                heap: BinaryHeap::new(),
                seq: 0,
                immediate: false,
                texts: SlotTexts::default(),
                stats: Arc::clone(&stats),
                gauge,
            }
            .run(),
        );
        (
            rx,
            DelayQueue {
                commands,
                stats,
                task,
            },
        )
    }

    /// The queue's numbers.
    pub fn stats(&self) -> &Arc<DelayStats> {
        &self.stats
    }

    /// Records waiting now.
    pub fn depth(&self) -> u64 {
        self.stats.depth.load(Ordering::Relaxed)
    }

    /// Sends the records waiting for `shards` now (`None`: every record, and none waits from then
    /// on: shutdown). Returns how many were sent, once they are in the producers' queue; 0 when the
    /// task is gone.
    pub async fn flush(&self, shards: Option<Vec<u32>>) -> usize {
        let (done, answer) = oneshot::channel();
        if self.commands.send(Command::Flush { shards, done }).is_err() {
            return 0;
        }
        answer.await.unwrap_or(0)
    }

    /// Joins the task, which ends once its input closed and it handed on what it held, or once the
    /// producers went away; aborted when it has not ended `within` (the producers were stopped).
    pub async fn join(mut self, within: Duration) {
        if tokio::time::timeout(within, &mut self.task).await.is_err() {
            self.task.abort();
            let _ = self.task.await;
        }
    }
}

struct Task {
    input: mpsc::Receiver<Dispatch>,
    out: mpsc::Sender<Dispatch>,
    commands: mpsc::UnboundedReceiver<Command>,
    clock: Arc<dyn Clock>,
    poll: Duration,
    capacity: usize,
    heap: BinaryHeap<Reverse<Waiting>>,
    seq: u64,
    /// Shutdown: nothing waits any more.
    immediate: bool,
    texts: SlotTexts,
    stats: Arc<DelayStats>,
    gauge: Option<Gauge>,
}

/// The producers' queue is gone: nothing can be sent any more.
struct Closed;

impl Task {
    async fn run(mut self) {
        let mut open = true;
        let mut commands_open = true;
        loop {
            if self.release_due().await.is_err() {
                return;
            }
            if !open {
                // The tick loop is gone (shutdown, or the end of a replay): nothing more comes,
                // so nothing waits any more.
                let _ = self.release_matching(None).await;
                return;
            }
            let wait = self.heap.peek().map(|Reverse(w)| {
                let at = DateTime::<Utc>::from_timestamp_millis(w.at_ms).unwrap_or_default();
                self.clock.real_until(at).min(self.poll)
            });
            let room = self.heap.len() < self.capacity;
            tokio::select! {
                biased;
                command = self.commands.recv(), if commands_open => match command {
                    Some(Command::Flush { shards, done }) => {
                        let Ok(sent) = self.flush(shards).await else { return };
                        let _ = done.send(sent);
                    }
                    // The handle is gone: finish what the input brings.
                    None => commands_open = false,
                },
                received = self.input.recv(), if room => match received {
                    Some(dispatch) => {
                        if self.accept(dispatch).await.is_err() {
                            return;
                        }
                        // A minute's records come in a burst: take what is queued without a
                        // select per record, while there is room.
                        while self.heap.len() < self.capacity {
                            let Ok(dispatch) = self.input.try_recv() else { break };
                            if self.accept(dispatch).await.is_err() {
                                return;
                            }
                        }
                    }
                    None => open = false,
                },
                _ = tokio::time::sleep(wait.unwrap_or(self.poll)), if wait.is_some() => {}
            }
            self.report_depth();
        }
    }

    fn report_depth(&self) {
        let depth = self.heap.len() as u64;
        self.stats.depth.store(depth, Ordering::Relaxed);
        self.stats.peak.fetch_max(depth, Ordering::Relaxed);
        if let Some(gauge) = &self.gauge {
            gauge.set(depth as i64);
        }
    }

    async fn send(&self, dispatch: Dispatch) -> Result<(), Closed> {
        self.out.send(dispatch).await.map_err(|_| Closed)
    }

    /// Forwards `dispatch` now, or keeps it until its `notBefore`.
    async fn accept(&mut self, dispatch: Dispatch) -> Result<(), Closed> {
        let at = match not_before(&dispatch, &mut self.texts) {
            Some(at) if !self.immediate => at,
            _ => return self.send(dispatch).await,
        };
        if at <= self.clock.now() {
            return self.send(dispatch).await;
        }
        self.seq += 1;
        self.heap.push(Reverse(Waiting {
            at_ms: at.timestamp_millis(),
            seq: self.seq,
            dispatch,
        }));
        Ok(())
    }

    /// Sends every record whose `notBefore` has come, earliest first.
    async fn release_due(&mut self) -> Result<(), Closed> {
        loop {
            let now = self.clock.now();
            let now_ms = now.timestamp_millis();
            let Some(Reverse(first)) = self.heap.peek() else {
                return Ok(());
            };
            if first.at_ms > now_ms {
                return Ok(());
            }
            let late_us = (now - DateTime::<Utc>::from_timestamp_millis(first.at_ms).unwrap_or(now))
                .num_microseconds()
                .unwrap_or(0)
                .max(0) as u64;
            let Some(Reverse(waiting)) = self.heap.pop() else {
                return Ok(());
            };
            self.stats.released.fetch_add(1, Ordering::Relaxed);
            self.stats.late_us_sum.fetch_add(late_us, Ordering::Relaxed);
            self.send(waiting.dispatch).await?;
            self.report_depth();
        }
    }

    /// A flush: takes what the tick loop has queued, then sends the waiting records of `shards`
    /// (all with `None`, which also ends waiting for good).
    async fn flush(&mut self, shards: Option<Vec<u32>>) -> Result<usize, Closed> {
        if shards.is_none() {
            self.immediate = true;
        }
        while let Ok(dispatch) = self.input.try_recv() {
            self.accept(dispatch).await?;
        }
        self.release_matching(shards.as_deref()).await
    }

    /// Sends the waiting records of `shards` (all with `None`) at once, earliest first.
    async fn release_matching(&mut self, shards: Option<&[u32]>) -> Result<usize, Closed> {
        let waiting = std::mem::take(&mut self.heap).into_sorted_vec();
        let mut sent = 0;
        // `into_sorted_vec` of `Reverse` is latest first.
        for Reverse(w) in waiting.into_iter().rev() {
            let shard = w.dispatch.lease.as_ref().map_or(0, |l| l.0.shard());
            if shards.is_none_or(|s| s.contains(&shard)) {
                self.stats.released.fetch_add(1, Ordering::Relaxed);
                self.send(w.dispatch).await?;
                sent += 1;
            } else {
                self.heap.push(Reverse(w));
            }
        }
        self.report_depth();
        Ok(sent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, Minute};
    use crate::dispatcher::cursor::{Lease, LeaseRef};
    use crate::schedule::JobSpec;
    use chrono::TimeZone;

    fn spec(name: &str, jitter: Option<Duration>) -> Arc<JobSpec> {
        Arc::new(JobSpec {
            name: name.into(),
            priority: 0,
            job: "x".into(),
            cron_time: Arc::from("* * * * *"),
            timezone: chrono_tz::UTC,
            topic: None,
            enabled: true,
            catchup: crate::schedule::Catchup::All,
            catchup_window: crate::schedule::DEFAULT_CATCHUP_WINDOW,
            shard: 0,
            timeout: None,
            max_attempts: None,
            overlap: None,
            jitter,
            timing: None,
            deadline: None,
        })
    }

    fn slot() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap()
    }

    fn dispatch(spec: &Arc<JobSpec>, lease: Option<&Arc<Lease>>) -> Dispatch {
        Dispatch {
            spec: Arc::clone(spec).into(),
            scheduled_at: slot(),
            lease: lease.map(|l| LeaseRef(Arc::clone(l))),
        }
    }

    fn nb(d: &Dispatch) -> DateTime<Utc> {
        not_before(d, &mut SlotTexts::default()).unwrap()
    }

    /// How often the task reads the manual clock in these tests.
    const POLL: Duration = Duration::from_millis(2);

    /// Gives the task the time to handle what it can (several of its polls). Only where nothing
    /// must happen: what must happen is waited for with [`until`] or a receive.
    async fn settle() {
        tokio::time::sleep(POLL * 5).await;
    }

    /// Waits until `done` holds, polling; panics after 10 s (a loaded machine, not a slow task).
    async fn until(what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// The next record out, waited for (10 s at most).
    async fn next_out(out: &mut mpsc::Receiver<Dispatch>) -> Dispatch {
        match tokio::time::timeout(Duration::from_secs(10), out.recv()).await {
            Ok(Some(d)) => d,
            other => panic!("no record came out: {other:?}"),
        }
    }

    fn start(
        input: mpsc::Receiver<Dispatch>,
        capacity: usize,
        clock: &ManualClock,
    ) -> (mpsc::Receiver<Dispatch>, DelayQueue) {
        DelayQueue::start_polling(input, 100, capacity, Arc::new(clock.clone()), None, POLL)
    }

    /// Records leave at their notBefore on the dispatcher's clock, earliest first; records of jobs
    /// without a jitter do not wait behind them.
    #[tokio::test]
    async fn jittered_records_leave_at_their_not_before_and_others_at_once() {
        let clock = ManualClock::new(slot());
        let (tx, rx) = mpsc::channel(100);
        let (mut out, queue) = start(rx, 100, &clock);
        let jittered: Vec<Dispatch> = (0..20)
            .map(|i| {
                dispatch(
                    &spec(&format!("job-{i}"), Some(Duration::from_secs(60))),
                    None,
                )
            })
            .collect();
        let mut expected: Vec<(DateTime<Utc>, String)> = jittered
            .iter()
            .map(|d| (nb(d), d.spec.name.clone()))
            .collect();
        expected.sort();
        for d in jittered {
            tx.send(d).await.unwrap();
        }
        tx.send(dispatch(&spec("plain", None), None)).await.unwrap();
        assert_eq!(next_out(&mut out).await.spec.name, "plain");
        until("20 records wait", || queue.depth() == 20).await;
        // Step the clock a second at a time; every record whose notBefore passed must come out
        // (the task polls the clock: waited for, with a generous bound for a loaded machine), and
        // none before its time.
        let mut got = Vec::new();
        for _ in 0..61 {
            clock.advance(chrono::Duration::seconds(1));
            let now = clock.now();
            let due = expected.iter().filter(|(at, _)| *at <= now).count();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while got.len() < due {
                match tokio::time::timeout_at(deadline, out.recv()).await {
                    Ok(Some(d)) => {
                        let at = nb(&d);
                        assert!(at <= now, "{} left before {at}", d.spec.name);
                        got.push((at, d.spec.name.clone()));
                    }
                    other => panic!(
                        "{due} records were due by {now}, {} left ({other:?})",
                        got.len()
                    ),
                }
            }
            settle().await;
            if let Ok(d) = out.try_recv() {
                panic!("{} left before {}", d.spec.name, nb(&d));
            }
        }
        assert_eq!(got, expected);
        assert_eq!(queue.depth(), 0);
        assert_eq!(queue.stats().peak.load(Ordering::Relaxed), 20);
    }

    /// At capacity the task takes nothing more: the input queue fills and its sender waits; the
    /// records come out later, none lost.
    #[tokio::test]
    async fn a_full_queue_holds_the_tick_loop_back_and_loses_nothing() {
        let clock = ManualClock::new(slot());
        let (tx, rx) = mpsc::channel(2);
        let (mut out, queue) = start(rx, 3, &clock);
        let jitter = Some(Duration::from_secs(60));
        let records: Vec<Dispatch> = (0..8)
            .map(|i| dispatch(&spec(&format!("j{i}"), jitter), None))
            .collect();
        // 3 waiting in the heap, 2 in the input queue: the sixth does not fit, and its sender
        // waits (for 2 s here, then gives up; the first five go in at once).
        let mut sent = 0;
        for d in records.iter().cloned() {
            match tokio::time::timeout(Duration::from_secs(2), tx.send(d)).await {
                Ok(result) => {
                    result.unwrap();
                    sent += 1;
                }
                Err(_) => break,
            }
        }
        assert_eq!(sent, 5);
        until("3 records wait", || queue.depth() == 3).await;
        settle().await;
        assert_eq!(queue.depth(), 3, "no more than its capacity");
        clock.advance(chrono::Duration::seconds(61));
        for d in records.iter().skip(5).cloned() {
            tx.send(d).await.unwrap();
        }
        drop(tx);
        let mut names: Vec<String> = Vec::new();
        while let Some(d) = out.recv().await {
            names.push(d.spec.name.clone());
        }
        names.sort();
        assert_eq!(names, (0..8).map(|i| format!("j{i}")).collect::<Vec<_>>());
    }

    /// A handover flushes the released shard's records at once (the others keep waiting); a
    /// shutdown flushes everything and nothing waits after it.
    #[tokio::test]
    async fn a_flush_sends_the_released_shards_records_now() {
        let clock = ManualClock::new(slot());
        let (tx, rx) = mpsc::channel(100);
        let (mut out, queue) = start(rx, 100, &clock);
        let (a, b) = (Lease::new(1, Minute(0)), Lease::new(2, Minute(0)));
        let jitter = Some(Duration::from_secs(600));
        // One whose offset is not 0, so it really waits.
        let name = (0..)
            .map(|i| format!("j{i}"))
            .find(|n| nb(&dispatch(&spec(n, jitter), None)) > slot())
            .unwrap();
        for lease in [&a, &b, &a] {
            tx.send(dispatch(&spec(&name, jitter), Some(lease)))
                .await
                .unwrap();
        }
        until("3 records wait", || queue.depth() == 3).await;
        assert_eq!(queue.flush(Some(vec![1])).await, 2);
        for _ in 0..2 {
            assert_eq!(out.try_recv().unwrap().lease.unwrap().0.shard(), 1);
        }
        assert!(out.try_recv().is_err());
        assert_eq!(queue.flush(None).await, 1);
        assert_eq!(out.try_recv().unwrap().lease.unwrap().0.shard(), 2);
        tx.send(dispatch(&spec(&name, jitter), Some(&a)))
            .await
            .unwrap();
        // After a shutdown flush nothing waits: it comes out although its offset is ahead.
        assert_eq!(next_out(&mut out).await.spec.name, name);
        assert_eq!(queue.depth(), 0);
    }
}
