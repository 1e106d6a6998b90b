//! The dispatcher: the tick loop ([`tick_loop`]) over the scheduling state ([`scheduler`]), and the
//! sinks that take due jobs away (the `--dry-run` printer here; Kafka producers next).

pub mod dry_run;
pub mod producer;
pub mod scheduler;
pub mod tick_loop;

pub use scheduler::{Dispatch, Scheduler};
pub use tick_loop::{DispatchSink, ScheduleSource, SinkClosed, TickLoop, TickReport};
