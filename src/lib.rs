//! cronq: a cron-to-Kafka job dispatcher.
//!
//! ```text
//! schedule/schedule.json ──► schedule::load ──► Vec<Job> ──► wheel::Wheel ◄── dispatcher::tick_loop (one task)
//!    (MD5 checked every tick)   (validate, diff)   (compiled cron)                 │ due jobs, each minute
//!                                                                                  ▼
//!                                                      DispatchSink (bounded channel: dry-run printer / Kafka producers)
//!                                                                                  │ JobMessage v1
//!                                                                                  ▼
//!                                                                            Kafka topic(s)
//!                                                                                  │ consumer group
//!                                                                                  ▼
//!                          worker (StreamConsumer) ──► local queue ──► executors (pool size follows lag)
//!                                     ▲                                            │ JobResult / dead letter
//!                                     └─ offsets committed only up to the lowest unfinished ◄─┘──► results / DLQ topics
//! ```
//!
//! - [`dispatcher`]: `cronq run` as a service: the tick loop over one scheduler per owned shard, the
//!   dispatcher group (shards = partitions of `<group>.state`, owned through Kafka's group
//!   coordinator, a cursor per shard in Kafka, takeover catch-up under each job's rule), the
//!   producers.
//! - [`cron`]: standard cron expressions (5 fields, `@macros`) compiled through saffron, evaluated in
//!   an IANA zone with the Debian cron(8) DST rules.
//! - [`worker`]: `cronq worker`, the consumer group that executes job messages (pool sized by lag).
//! - [`kafka`]: the one Kafka layer of both clients: connection and security settings, retry with
//!   backoff, topic administration, outage reporting.
//! - [`wire`]: the contracts every process shares (JobMessage v1, results and dead letters, the
//!   control and cursor records, `dispatchId`, murmur2); the lowest layer, beneath all the others.
//! - [`clock`]: [`clock::Minute`], the scheduler's unit of time, and the injectable [`clock::Clock`].

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod cli;
pub mod clock;
pub mod cron;
pub mod dispatcher;
pub mod kafka;
pub mod lifecycle;
pub mod obs;
pub mod schedule;
pub mod trigger;
pub mod wheel;
pub mod wire;
pub mod worker;
