//! The schedule file: parse and validate it ([`load`]), notice when it changes ([`fingerprint`]),
//! and work out what a new version changes ([`diff`]); what Kafka and the machine allow it is in
//! [`limits`].

pub mod diff;
pub mod file;
pub mod fingerprint;
pub mod jitter;
pub mod limits;
pub mod load;

pub use load::{
    load, parse, parse_reusing, Catchup, Job, JobSpec, LoadError, LoadOptions, Problem, Schedule,
    ShardFilter, DEFAULT_CATCHUP_WINDOW,
};
