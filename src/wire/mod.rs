//! The contracts every cronq process shares: what goes on a Kafka topic and how it is read back.
//! The lowest layer of the crate: it depends on nothing else of cronq but [`crate::clock`], so the
//! dispatcher, the worker, the tools and any other consumer agree on one definition.
//!
//! ```text
//!  dispatcher ── JobMessage v1 ([`job`]) ──► jobs topic ──► worker ── JobResult / DeadLetter ([`result`])
//!      │  ▲                                                              ──► results / DLQ topics
//!      │  └── ControlRecord ([`control`]) ◄── <group>.control ◄── cronq pause / resume
//!      └──── Cursor ([`cursor`]) ──► <group>.state (one per shard)
//!  every record: dispatch_id, slot_text, murmur2 / partition_for, notBefore ([`ids`])
//! ```
//!
//! A record built from a job's settings is made above this layer ([`crate::schedule::record`]).

pub mod control;
pub mod cursor;
pub mod ids;
pub mod job;
pub mod result;
pub mod schedule;

pub use ids::{
    dispatch_id, manual_dispatch_id, manual_instant, manual_text, murmur2, partition_for,
    slot_text, SlotTexts, MANUAL_SUFFIX,
};
pub use job::{
    JobMessage, Overlap, HEADER_BY, HEADER_DISPATCH_ID, HEADER_NOT_BEFORE, HEADER_PRIORITY,
    HEADER_REASON, HEADER_SCHEDULED_AT,
};
