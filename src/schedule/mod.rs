//! The schedule file: a job's settings ([`spec`]), parse and validate the file ([`load`]), notice
//! when it changes ([`fingerprint`]), and work out what a new version changes ([`diff`]); what Kafka
//! and the machine allow it is in [`limits`], the record a job's slot becomes in [`record`].

pub mod diff;
pub mod file;
pub mod fingerprint;
pub mod jitter;
pub mod kinds;
pub mod limits;
pub mod load;
pub mod record;
pub mod spec;

pub use load::{
    load, parse, parse_reusing, read_limited, LoadError, LoadOptions, Problem, SharedExprs,
};
pub use spec::{
    Catchup, Job, JobSpec, Kind, Schedule, ShardFilter, Timing, When, DEFAULT_CATCHUP_WINDOW,
};
