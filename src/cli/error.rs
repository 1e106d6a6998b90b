//! The one error type of the subcommands, and the exit status each error maps to: 2 for bad input
//! on the command line, 1 for everything else.

use crate::cron::CronError;
use crate::dispatcher::service::ServiceError;
use crate::schedule::LoadError;
use crate::worker::WorkerError;

/// Errors a subcommand reports to the user.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// A bad expression or zone given on the command line.
    #[error("invalid cron expression {expr:?}: {source}")]
    Expression {
        /// As given.
        expr: String,
        /// Why.
        source: CronError,
    },
    /// A bad time zone given on the command line.
    #[error("--tz: {0}")]
    Zone(CronError),
    /// A time argument is not RFC 3339.
    #[error("{flag}: {value:?} is not an RFC 3339 instant (e.g. 2026-11-26T12:00:00Z): {source}")]
    Instant {
        /// Which flag.
        flag: &'static str,
        /// As given.
        value: String,
        /// Why.
        source: chrono::ParseError,
    },
    /// `--from` is not before `--until`.
    #[error("--from must be before --until")]
    EmptyWindow,
    /// The schedule can't be loaded.
    #[error(transparent)]
    Schedule(#[from] LoadError),

    /// A flag's value cannot be used.
    #[error("{flag}: {reason}")]
    Invalid {
        /// Which flag.
        flag: &'static str,
        /// Why.
        reason: String,
    },
    /// The worker could not run.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// The dispatcher stopped on an error.
    #[error(transparent)]
    Dispatcher(#[from] ServiceError),
    /// Kafka could not be read.
    #[error("{0}")]
    Kafka(String),
    /// A pause or resume that makes no sense as things stand (resuming what is not paused).
    #[error("{0}")]
    Control(String),
    /// The worker could not protect its secrets from its handlers.
    #[error(transparent)]
    RunAs(#[from] crate::worker::run_as::RunAsError),
    /// The HTTP server of `--http` could not start.
    #[error(transparent)]
    Http(#[from] crate::obs::http::HttpError),

    /// The jobs API answered with an error (its message), or did not answer.
    #[error("{0}")]
    Api(String),

    /// The monitor stopped on an error.
    #[error(transparent)]
    Monitor(#[from] crate::monitor::service::MonitorError),
    /// The monitor's database cannot be read.
    #[error(transparent)]
    History(#[from] crate::monitor::store::StoreError),

    /// Writing to stdout failed (e.g. a closed pipe).
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
}

impl CliError {
    /// The process exit status for this error: 2 for bad input on the command line.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Expression { .. }
            | CliError::Zone(_)
            | CliError::Instant { .. }
            | CliError::EmptyWindow
            | CliError::Invalid { .. } => 2,
            CliError::Output(_)
            | CliError::Schedule(_)
            | CliError::Worker(_)
            | CliError::Dispatcher(_)
            | CliError::Http(_)
            | CliError::RunAs(_)
            | CliError::Control(_)
            | CliError::Api(_)
            | CliError::Monitor(_)
            | CliError::History(_)
            | CliError::Kafka(_) => 1,
        }
    }
}
