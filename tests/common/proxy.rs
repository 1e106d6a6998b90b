//! A Kafka-aware proxy in front of the test broker: it understands just enough of the protocol to
//! answer the produce requests of one topic (or one partition of it) with an error while
//! `failing` is set, without passing them to the broker, and forwards everything else unchanged.
//! The broker advertises the proxy's port, so every connection of every client goes through it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Retriable: the partition's storage failed.
pub const KAFKA_STORAGE_ERROR: i16 = 56;
/// Not retriable by Kafka's own rules: the client may not write the topic.
pub const TOPIC_AUTHORIZATION_FAILED: i16 = 29;

/// A running proxy; stops with the test.
pub struct ProduceFault {
    pub port: u16,
    /// Produce requests of the victim are answered with the error while set (it starts set).
    pub failing: Arc<AtomicBool>,
    /// Produce requests answered with the error so far.
    pub refused: Arc<AtomicUsize>,
    _runtime: tokio::runtime::Runtime,
}

/// Reads one size-prefixed Kafka frame (the size included).
async fn read_frame<R: tokio::io::AsyncRead + Unpin>(r: &mut R) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut size = [0u8; 4];
    r.read_exact(&mut size).await.ok()?;
    let n = i32::from_be_bytes(size);
    let mut frame = size.to_vec();
    frame.resize(4 + usize::try_from(n).ok()?, 0);
    r.read_exact(&mut frame[4..]).await.ok()?;
    Some(frame)
}

/// A cursor over a request's bytes (big-endian, as Kafka writes them).
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    /// A (nullable) string with an int16 length.
    fn string(&mut self) -> Option<String> {
        let n = self.i16()?;
        if n < 0 {
            return Some(String::new());
        }
        Some(String::from_utf8_lossy(self.take(n as usize)?).into_owned())
    }
}

/// The `(topic, [partition])` list of a produce request.
type Targets = Vec<(String, Vec<i32>)>;

/// For a Produce request (v3-v7, the versions rskafka speaks): its version, correlation id and
/// targets.
fn produce_request(frame: &[u8]) -> Option<(i16, i32, Targets)> {
    let mut b = Bytes(&frame[4..]);
    let (api_key, version, correlation) = (b.i16()?, b.i16()?, b.i32()?);
    if api_key != 0 || !(3..=7).contains(&version) {
        return None;
    }
    b.string()?; // client id
    b.string()?; // transactional id
    b.i16()?; // acks
    b.i32()?; // timeout
    let mut topics = Vec::new();
    for _ in 0..b.i32()? {
        let name = b.string()?;
        let mut partitions = Vec::new();
        for _ in 0..b.i32()? {
            partitions.push(b.i32()?);
            let records = b.i32()?;
            if records > 0 {
                b.take(records as usize)?;
            }
        }
        topics.push((name, partitions));
    }
    Some((version, correlation, topics))
}

/// A Produce response (v3-v7) failing every partition of the request with `error`.
fn produce_error(
    version: i16,
    correlation: i32,
    topics: &[(String, Vec<i32>)],
    error: i16,
) -> Vec<u8> {
    let mut body = correlation.to_be_bytes().to_vec();
    body.extend((topics.len() as i32).to_be_bytes());
    for (name, partitions) in topics {
        body.extend((name.len() as i16).to_be_bytes());
        body.extend(name.as_bytes());
        body.extend((partitions.len() as i32).to_be_bytes());
        for p in partitions {
            body.extend(p.to_be_bytes());
            body.extend(error.to_be_bytes());
            body.extend((-1i64).to_be_bytes()); // base offset
            body.extend((-1i64).to_be_bytes()); // log append time (v2+)
            if version >= 5 {
                body.extend((-1i64).to_be_bytes()); // log start offset
            }
        }
    }
    body.extend(0i32.to_be_bytes()); // throttle time
    let mut frame = (body.len() as i32).to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

impl ProduceFault {
    /// A proxy to the broker on `upstream` answering the produce requests of `topic` (of its
    /// `partition` only, when given) with `error` while `failing` is set, which it is at start.
    pub fn start(upstream: u16, topic: &str, partition: Option<i32>, error: i16) -> ProduceFault {
        use tokio::io::AsyncWriteExt;
        let failing = Arc::new(AtomicBool::new(true));
        let refused = Arc::new(AtomicUsize::new(0));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let (fail, count, topic) = (failing.clone(), refused.clone(), topic.to_string());
        runtime.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(broker) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    continue;
                };
                let (mut from_client, to_client) = client.into_split();
                let (mut from_broker, mut to_broker) = broker.into_split();
                let to_client = Arc::new(tokio::sync::Mutex::new(to_client));
                let replies = to_client.clone();
                tokio::spawn(async move {
                    while let Some(frame) = read_frame(&mut from_broker).await {
                        if replies.lock().await.write_all(&frame).await.is_err() {
                            break;
                        }
                    }
                });
                let (topic, fail, count) = (topic.clone(), fail.clone(), count.clone());
                tokio::spawn(async move {
                    while let Some(frame) = read_frame(&mut from_client).await {
                        if let Some((version, correlation, topics)) = produce_request(&frame) {
                            let victim = topics.iter().any(|(t, ps)| {
                                *t == topic && partition.is_none_or(|p| ps.contains(&p))
                            });
                            if victim && fail.load(Ordering::SeqCst) {
                                count.fetch_add(1, Ordering::SeqCst);
                                let reply = produce_error(version, correlation, &topics, error);
                                if to_client.lock().await.write_all(&reply).await.is_err() {
                                    break;
                                }
                                continue;
                            }
                        }
                        if to_broker.write_all(&frame).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        ProduceFault {
            port,
            failing,
            refused,
            _runtime: runtime,
        }
    }
}
