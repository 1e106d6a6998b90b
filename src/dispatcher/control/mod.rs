//! Pause and resume: the operator's records on the group's control topic, and what a dispatcher
//! makes of them.
//!
//! ```text
//!  cronq pause/resume ──► <group>.control (1 partition, compacted; key = jobName, " " = --all)
//!                                │ every member follows it: from the start to the high watermark
//!                                ▼ at start and before each takeover, then long-polled
//!                          ControlFollower ──► PauseTable (latest record per key) ──► TickLoop
//!     run_minute_at ──► due jobs ──► Pauses::apply_minute: paused slots out (counted `paused`),
//!                                    the paused slots a pause's end sends (the job's catch-up rule)
//! ```
//!
//! - [`crate::wire::control`]: the record's format;
//! - [`topic`]: the topic itself (create, append, read whole);
//! - [`table`]: the latest record of every key, and the pauses in force as the status shows them;
//! - [`follower`]: the background task that keeps each member's table current;
//! - [`pauses`]: what the tick loop holds back, and sends when a pause ends;
//! - [`command`]: `cronq pause`/`resume` and the status's read of the pauses.
//!
//! A record describes one paused interval `[since, until)` of a job (or of every job): a pause
//! writes `paused: true` with `until` absent (or its `--until`), a resume writes `paused: false`
//! with the interval it closed. A slot inside an interval is *paused*: it is not sent when its
//! minute is handed out, and the shard's cursor moves past it (it is decided, not lost). When the
//! interval ends (a resume, or `until` reached) the job's catch-up rule decides about its paused
//! slots exactly as about slots missed in downtime, counted back from the first minute after the
//! end, in which they are sent; `dropMissed` sends none.
//!
//! Whether a slot is paused is a function of the records alone, never of when a member read them,
//! so a member that takes a shard over decides the shard's slots as the previous owner did. The
//! latest record of a key wins; nothing relies on the broker compacting the topic (tansu 0.6 does
//! not), compaction only bounds its size. Resumes are explicit records, not tombstones, because the
//! catch-up needs the interval; a tombstone (from a tool that cleans up) just forgets the key.

pub mod command;
pub mod follower;
pub mod pauses;
pub mod table;
pub mod topic;

pub use crate::wire::control::{control_topic, ControlRecord, ALL_KEY, RECORD_VERSION};
pub use command::{command, read_paused, CommandError, Decide};
pub use follower::ControlFollower;
pub use pauses::{paused_slots_sent, PauseEffect, Pauses};
pub use table::{all_line, render, PauseTable, PausedJob, PausedView};
pub use topic::{ensure_control_topic, read_table, write, ControlError};

/// What the tests of the pauses share: instants, records and schedules written briefly.
#[cfg(test)]
mod testing {
    use std::path::Path;

    use crate::schedule::{parse, LoadOptions, Schedule};

    pub use crate::wire::control::testing::{at, pause, resume};

    pub fn schedule(json: &str) -> Schedule {
        parse(json.as_bytes(), Path::new("s.json"), LoadOptions::default()).unwrap()
    }
}
