//! The lag watcher: the broker-side backlog the pool size follows, measured every
//! `--scale-interval` on a client of its own, for the consumer loop and the status page.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::Offset;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::group::Consumer_;
use super::observe::{Observer, PartitionLag};

/// The lag watcher's watermark queries: no group, never fetches, its own broker connections.
pub(super) type LagClient = BaseConsumer<crate::kafka::KafkaContext>;

/// Records not started yet on the broker side: Σ (high watermark − position) over the assigned
/// partitions, with each partition's share, and whether the broker answered. Blocking (one
/// watermark request per partition, or one metadata request when none is assigned). The positions
/// are the group consumer's (local state, no request); the watermarks come from `lag_client`, a
/// client of its own: on the group consumer's connection a ListOffsets request waits behind the fetch
/// the broker is holding, times out, and librdkafka's timeout handling then costs the fetch itself.
fn broker_lag(
    consumer: &Consumer_,
    lag_client: &LagClient,
    topic: &str,
) -> Option<(u64, Vec<PartitionLag>, Result<(), String>)> {
    let positions = consumer.position().ok()?;
    let mut total = 0u64;
    let mut partitions = Vec::with_capacity(positions.count());
    let mut reached: Option<Result<(), String>> = None;
    for e in positions.elements() {
        // A partition nothing was read from since it was assigned is either caught up or about to
        // deliver; counting its whole history would be wrong, so it counts as 0 until then.
        let position = match e.offset() {
            Offset::Offset(position) => Some(position),
            _ => None,
        };
        let end = match lag_client.fetch_watermarks(
            e.topic(),
            e.partition(),
            Duration::from_secs(1),
        ) {
            Ok((_low, high)) => {
                reached = Some(Ok(()));
                Some(high)
            }
            Err(err) => {
                debug!(message = "watermarks unavailable", topic = e.topic(), partition = e.partition(), error = %err);
                reached.get_or_insert(Err(err.to_string()));
                None
            }
        };
        let lag = match (position, end) {
            (Some(position), Some(end)) => (end - position).max(0) as u64,
            _ => 0,
        };
        total += lag;
        partitions.push(PartitionLag {
            topic: e.topic().to_string(),
            partition: e.partition(),
            position,
            end,
            lag,
        });
    }
    let reached = reached.unwrap_or_else(|| {
        lag_client
            .fetch_metadata(Some(topic), Duration::from_secs(1))
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    Some((total, partitions, reached))
}

/// Measures the broker-side lag every `every` until stopped.
pub(super) struct LagWatcher {
    /// The group consumer, for its positions.
    pub(super) consumer: Arc<Consumer_>,
    /// The client the watermarks are asked of.
    pub(super) client: Arc<LagClient>,
    pub(super) every: Duration,
    /// Told each partition's lag and whether the broker answered.
    pub(super) observer: Arc<Observer>,
    /// The job topic.
    pub(super) topic: String,
}

impl LagWatcher {
    /// Sends the total lag (`None`: not known) on `tx` every `every`, until `stop` is cancelled
    /// or nobody listens. A measurement in flight is left to finish on its blocking thread.
    pub(super) async fn run(
        self,
        tx: watch::Sender<Option<u64>>,
        stop: CancellationToken,
    ) -> Result<(), Infallible> {
        stop.run_until_cancelled(self.watch(tx)).await;
        Ok(())
    }

    async fn watch(self, tx: watch::Sender<Option<u64>>) {
        let mut tick = tokio::time::interval(self.every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let c = Arc::clone(&self.consumer);
            let l = Arc::clone(&self.client);
            let t = self.topic.clone();
            let seen = tokio::task::spawn_blocking(move || broker_lag(&c, &l, &t))
                .await
                .ok()
                .flatten();
            let lag = seen.map(|(total, partitions, reached)| {
                self.observer.lag(partitions, reached);
                total
            });
            if tx.send(lag).is_err() {
                return;
            }
        }
    }
}
