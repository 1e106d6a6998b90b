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
//! Layers, bottom up; a module imports only from the layers below it:
//! - [`wire`]: the contracts every process shares (JobMessage, results and dead letters, control
//!   and cursor records, `dispatchId`, murmur2); depends on nothing of cronq but [`clock`].
//! - [`clock`]: [`clock::Minute`], the scheduler's unit of time, and the injectable [`clock::Clock`].
//! - [`cron`]: standard cron expressions (5 fields, `@macros`, `H`) compiled through saffron,
//!   evaluated in an IANA zone with the Debian cron(8) DST rules.
//! - [`wheel`]: the hierarchical timing wheel; pure, no IO. [`cores`]: work split over the cores.
//! - [`schedule`]: the schedule file: job specs, the loader and its checks, limits, diff, jitter,
//!   and the record a job's slot becomes.
//! - [`kafka`]: the one Kafka layer of both clients: connection and security settings, client
//!   builders, one retry helper with one error classification per client, topic administration,
//!   outage reporting.
//! - [`store`]: the schedule in Kafka, `<group>.schedule` (one partition per shard, one record
//!   per job version): read a partition to its end, turn records into checked edits, write with
//!   acks=all.
//! - [`obs`] and [`lifecycle`]: the `--http` server, health and page helpers; the one owner of a
//!   service's background tasks.
//! - [`dispatcher`]: `cronq run` as a service: the tick loop over one scheduler per owned shard, the
//!   dispatcher group (shards = partitions of `<group>.state`, owned through Kafka's group
//!   coordinator, a cursor per shard in Kafka, takeover catch-up under each job's rule), the
//!   producers. [`trigger`]: one job's slot sent now.
//! - [`worker`]: `cronq worker`, the consumer group that executes job messages (pool sized by lag).
//! - [`cli`]: the command line, one file per command.

#![warn(missing_docs)]
#![deny(unsafe_code)]

/// The hash of cronq's in-memory maps keyed by job names and expressions: seeded per process
/// (hashbrown's own default), and several times faster than std's SipHash on such short keys,
/// which a million-job schedule hashes millions of times.
pub(crate) type FastHash = foldhash::fast::RandomState;

pub mod cli;
pub mod clock;
pub mod cores;
pub mod cron;
pub mod dispatcher;
pub mod kafka;
pub mod lifecycle;
pub mod monitor;
pub mod obs;
pub mod schedule;
pub mod store;
pub mod trigger;
pub mod wheel;
pub mod wire;
pub mod worker;
