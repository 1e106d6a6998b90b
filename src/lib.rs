//! cronq: a cron-to-Kafka job dispatcher.
//!
//! ```text
//! schedule/schedule.json ──► schedule::load ──► Vec<Job> ──► wheel::Wheel ◄── dispatcher::tick_loop (one task)
//!    (MD5 checked every tick)   (validate, diff)   (compiled cron)                 │ due jobs, each minute
//!                                                                                  ▼
//!                                                      DispatchSink (bounded channel: dry-run printer / Kafka producers)
//! ```
//!
//! - [`cron`]: standard cron expressions (5 fields, `@macros`) compiled through saffron, evaluated in
//!   an IANA zone with the Debian cron(8) DST rules.
//! - [`clock`]: [`clock::Minute`], the scheduler's unit of time, and the injectable [`clock::Clock`].

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod cli;
pub mod clock;
pub mod cron;
pub mod dispatcher;
pub mod message;
pub mod schedule;
pub mod tail;
pub mod wheel;
