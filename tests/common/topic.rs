//! A test's topics, through rdkafka (a client we did not write): create them (tansu does not
//! auto-create), produce records, read everything back up to the high watermarks, and read a
//! group's committed offsets.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use super::pause;

/// A current-thread runtime to drive rdkafka's futures from a synchronous test.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Creates `topic` (tansu does not auto-create).
pub fn create_topic(broker: &str, topic: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .expect("admin client");
    let results = runtime()
        .block_on(admin.create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        ))
        .expect("create topic");
    for r in results {
        r.unwrap_or_else(|(t, e)| panic!("creating {t}: {e}"));
    }
}

/// One record ready to produce.
pub struct Record {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// The dispatcher's murmur2 partition (or any fixed one); None: let rdkafka's own partitioner
    /// pick.
    pub partition: Option<i32>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Produces `records` (acks=all) and waits until each is delivered.
pub fn produce(broker: &str, topic: &str, records: &[Record]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    runtime().block_on(async {
        let mut pending = Vec::new();
        for r in records {
            let mut headers = OwnedHeaders::new();
            for (k, v) in &r.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: Some(v),
                });
            }
            let mut record = FutureRecord::to(topic)
                .key(&r.key)
                .payload(&r.value)
                .headers(headers);
            if let Some(p) = r.partition {
                record = record.partition(p);
            }
            // Queued at once (`send` would queue only when awaited, one linger apart).
            pending.push(
                producer
                    .send_result(record)
                    .map_err(|(e, _)| e)
                    .expect("queue"),
            );
        }
        for p in pending {
            p.await
                .expect("delivery")
                .map_err(|(e, _)| e)
                .expect("produce");
        }
    });
}

/// Produces tombstones (records with a key and no value) for `keys`, each to its given partition
/// (acks=all), and waits until each is delivered.
pub fn produce_tombstones(broker: &str, topic: &str, keys: &[(&str, i32)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("acks", "all")
        .create()
        .expect("producer");
    runtime().block_on(async {
        for (key, partition) in keys {
            let record: FutureRecord<'_, str, [u8]> =
                FutureRecord::to(topic).key(*key).partition(*partition);
            producer
                .send(record, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
                .expect("produce tombstone");
        }
    });
}

/// One consumed record.
#[derive(Debug, Clone)]
pub struct Consumed {
    pub partition: i32,
    pub key: Vec<u8>,
    pub value: serde_json::Value,
    pub headers: Vec<(String, Vec<u8>)>,
    /// The record's timestamp (stamped by the producer), in ms since the Unix epoch.
    pub timestamp_ms: Option<i64>,
}

/// Reads every partition of `topic` from the beginning with rdkafka up to its high watermark (so
/// duplicates, if any, are all seen), giving up after `timeout`; returns what arrived. `expected`
/// only sizes the buffer.
pub fn consume_all(
    broker: &str,
    topic: &str,
    partitions: i32,
    expected: usize,
    timeout: Duration,
) -> Vec<Consumed> {
    consume_all_with(broker, &[], topic, partitions, expected, timeout)
}

/// [`consume_all`] with more rdkafka `settings` (TLS, SASL).
pub fn consume_all_with(
    broker: &str,
    settings: &[(&str, String)],
    topic: &str,
    partitions: i32,
    expected: usize,
    timeout: Duration,
) -> Vec<Consumed> {
    let mut config = ClientConfig::new();
    for (k, v) in settings {
        config.set(*k, v);
    }
    if let Ok(debug) = std::env::var("CRONQ_TEST_RDKAFKA_DEBUG") {
        config.set("debug", debug);
    }
    let consumer: BaseConsumer = config
        .set("bootstrap.servers", broker)
        .set("group.id", format!("verify-{topic}"))
        .set("enable.auto.commit", "false")
        .set("api.version.request", "true")
        .create()
        .expect("rdkafka consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition offset");
    }
    consumer.assign(&tpl).expect("assign");
    let deadline = Instant::now() + timeout;
    // The end of each partition: its high watermark, read once everything has been produced.
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    for p in 0..partitions {
        let high = loop {
            match consumer.fetch_watermarks(topic, p, Duration::from_secs(5)) {
                Ok((_, high)) => break high,
                Err(e) => {
                    assert!(Instant::now() < deadline, "watermarks of {topic}/{p}: {e}");
                    pause();
                }
            }
        };
        if high > 0 {
            remaining.insert(p, high);
        }
    }
    let mut out = Vec::with_capacity(expected);
    while !remaining.is_empty() && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                if remaining
                    .get(&m.partition())
                    .is_some_and(|high| m.offset() + 1 >= *high)
                {
                    remaining.remove(&m.partition());
                }
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                            .collect()
                    })
                    .unwrap_or_default();
                let value = serde_json::from_slice(m.payload().unwrap_or_default())
                    .unwrap_or(serde_json::Value::Null);
                out.push(Consumed {
                    partition: m.partition(),
                    key: m.key().unwrap_or_default().to_vec(),
                    value,
                    headers,
                    timestamp_ms: m.timestamp().to_millis(),
                });
            }
            Some(Err(e)) => eprintln!("consumer: {e}"),
            None => {}
        }
    }
    out
}

/// The group's committed offsets, per partition (-1: none).
pub fn committed(broker: &str, group: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets");
    got.elements()
        .iter()
        .map(|e| {
            let offset = match e.offset() {
                Offset::Offset(o) => o,
                _ => -1,
            };
            (e.partition(), offset)
        })
        .collect()
}

/// Each partition's high watermark: the offset the next record will get.
pub fn high_watermarks(broker: &str, topic: &str, partitions: i32) -> BTreeMap<i32, i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .expect("consumer");
    (0..partitions)
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            (p, high)
        })
        .collect()
}
