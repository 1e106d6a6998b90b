//! The minute and producer settings shared by the `dispatch` and `observe` benches.

use std::path::Path;
use std::time::Duration;

use cronq::dispatcher::producer::{CompressionArg, ProducerConfig};
use cronq::schedule::{self, LoadOptions};

/// Partitions of the bench topics.
pub const PARTITIONS: i32 = 3;
/// Records per produce request, for cronq and for the raw baseline.
pub const BATCH: usize = 1_000;

/// `jobs` jobs all due at 12:00, priorities 0-9.
pub fn noon_schedule(jobs: usize) -> schedule::Schedule {
    let entries: Vec<String> = (0..jobs)
        .map(|i| {
            format!(
                r#"{{"jobName":"bench-{i:06}","priority":{},"job":"run report --id {i}","cronTime":"0 12 * * *"}}"#,
                i % 10
            )
        })
        .collect();
    let json = format!(r#"{{"jobs":[{}]}}"#, entries.join(","));
    schedule::parse(
        json.as_bytes(),
        Path::new("bench.json"),
        LoadOptions::default(),
    )
    .expect("schedule")
}

/// cronq's producer pool as the benches run it against `broker`, jobs going to `topic`.
pub fn producer_config(broker: &str, topic: &str) -> ProducerConfig {
    ProducerConfig {
        kafka: cronq::kafka::Connection::plaintext(vec![broker.to_string()]),
        default_topic: topic.to_string(),
        partitions: PARTITIONS,
        replication_factor: 1,
        create_topics: true,
        producers: 4,
        batch_size: BATCH,
        compression: CompressionArg::None,
        retry_backoff: Duration::from_millis(50),
    }
}
