//! The dispatcher: the service that owns a `cronq run`'s lifecycle ([`service`]; its pipeline and
//! its group member in `pipeline.rs` and `member.rs`), the tick loop
//! ([`tick_loop`]) over one scheduler per owned shard ([`scheduler`]), the catch-up rules of missed
//! slots ([`catchup`]), paused jobs ([`control`]: `cronq pause`/`resume` on `<group>.control`), the
//! dispatcher group and its cursors ([`group`], [`cursor`]), the operator's
//! view of the group ([`status`]), and the sinks that take due jobs away (the `--dry-run` printer,
//! the Kafka producer pool, behind the [`delay`] queue that holds jittered records until their
//! `notBefore`).

pub mod api;
pub mod catchup;
mod config;
pub mod control;
pub mod cursor;
mod cursor_writer;
pub mod delay;
pub mod dry_run;
pub mod group;
mod handover;
mod member;
pub mod observe;
mod own_writes;
mod pipeline;
pub mod producer;
mod schedule_topic;
pub mod scheduler;
pub mod service;
pub mod status;
pub mod tick_loop;
pub mod watchdog;

pub use scheduler::{Dispatch, Edited, JobRef, Scheduler};
pub use tick_loop::{DispatchSink, ScheduleSource, ShardRun, SinkClosed, TickLoop, TickReport};
