//! The one runtime of a command: [`block_on`] builds tokio's multi-threaded runtime and runs the
//! command on it under a [`Shutdown`] token that SIGINT and SIGTERM cancel; [`Shutdown::within`]
//! bounds one step of a command by that token and a timeout.
//!
//! ```text
//! SIGINT / SIGTERM ──► Shutdown (CancellationToken) ──► run / worker: graceful stop within the grace
//!                                                   └─► trigger / pause / resume: "stopped while …"
//! status, tail, a replay (OnSignal::Exit): no handler; the signal ends the process at once
//! ```

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::error::CliError;

/// What SIGINT and SIGTERM do to a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnSignal {
    /// Nothing is installed: the signal's default action ends the process at once. For commands
    /// with nothing to finish or to report (`status`, `tail`, a replay).
    Exit,
    /// The signal cancels the command's [`Shutdown`] and the command ends itself: a service drains
    /// within its grace, a one-shot write says whether it may have been written.
    Stop,
}

/// Builds the runtime and runs the command `command` makes from the shutdown token.
pub(super) fn block_on<T, F>(
    on_signal: OnSignal,
    command: impl FnOnce(Shutdown) -> F,
) -> Result<T, CliError>
where
    F: Future<Output = Result<T, CliError>>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let token = CancellationToken::new();
        if on_signal == OnSignal::Stop {
            let signalled = token.clone();
            tokio::spawn(async move {
                shutdown_signal().await;
                signalled.cancel();
            });
        }
        command(Shutdown(token)).await
    })
}

/// The token SIGINT and SIGTERM cancel (under [`OnSignal::Exit`], nothing does).
#[derive(Debug, Clone)]
pub(super) struct Shutdown(CancellationToken);

/// Why [`Shutdown::within`] cut a step short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cut {
    /// The limit passed first.
    TimedOut,
    /// SIGINT or SIGTERM came first.
    Signal,
}

impl Shutdown {
    /// The token itself, for a service that shuts down by itself when it is cancelled.
    pub(super) fn token(&self) -> CancellationToken {
        self.0.clone()
    }

    /// `work`, unless `limit` (if any) passes or a signal arrives first; either drops `work`.
    pub(super) async fn within<T>(
        &self,
        limit: Option<Duration>,
        work: impl Future<Output = T>,
    ) -> Result<T, Cut> {
        let bounded = async {
            match limit {
                Some(limit) => tokio::time::timeout(limit, work)
                    .await
                    .map_err(|_| Cut::TimedOut),
                None => Ok(work.await),
            }
        };
        tokio::select! {
            done = bounded => done,
            _ = self.0.cancelled() => Err(Cut::Signal),
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_step_that_ends_in_time_gives_its_output() {
        let shutdown = Shutdown(CancellationToken::new());
        let done = shutdown.within(Some(Duration::from_secs(10)), async { 7 });
        assert_eq!(done.await, Ok(7));
        assert_eq!(shutdown.within(None, async { 8 }).await, Ok(8));
    }

    #[tokio::test]
    async fn a_step_past_its_limit_is_cut_as_timed_out() {
        let shutdown = Shutdown(CancellationToken::new());
        let never = std::future::pending::<()>();
        let cut = shutdown.within(Some(Duration::from_millis(10)), never);
        assert_eq!(cut.await, Err(Cut::TimedOut));
    }

    #[tokio::test]
    async fn a_signal_cuts_a_step_with_or_without_a_limit() {
        let shutdown = Shutdown(CancellationToken::new());
        shutdown.token().cancel();
        let never = std::future::pending::<()>();
        assert_eq!(shutdown.within(None, never).await, Err(Cut::Signal));
        let never = std::future::pending::<()>();
        let cut = shutdown.within(Some(Duration::from_secs(10)), never);
        assert_eq!(cut.await, Err(Cut::Signal));
    }

    #[test]
    fn a_command_runs_on_the_runtime_and_its_error_comes_back() {
        let ok = block_on(OnSignal::Exit, |_| async { Ok(3) });
        assert_eq!(ok.ok(), Some(3));
        let err = block_on(OnSignal::Stop, |shutdown| async move {
            assert!(!shutdown.token().is_cancelled());
            Err::<(), _>(CliError::EmptyWindow)
        });
        assert!(matches!(err, Err(CliError::EmptyWindow)));
    }
}
