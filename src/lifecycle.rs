//! One owner for a service's background tasks (the dispatcher's, the worker's, the HTTP server's).
//!
//! ```text
//!   service owner ── Tasks::spawn(name, |token| task) ──► JoinSet (every task, with its name)
//!        │                                                   │ a task that ends before shutdown
//!        ◄──────────────────── Tasks::ended() ◄──────────────┘ is an error the owner acts on
//!        │ shutdown
//!        └─► Tasks::shutdown(grace): cancel the tasks' token ─► join what ends within the grace
//!                                                            ─► abort_all, join the rest
//! ```
//!
//! Every task gets a child of the owner's token, so cancelling the owner's token (a signal) reaches
//! them all, and `shutdown` never leaves a task unjoined. Work that must happen in a fixed order at
//! shutdown (flush a queue, then write cursors) stays in the owner's own code, before `shutdown`.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use tokio::task::{Id, JoinSet};
use tokio_util::sync::CancellationToken;

/// How a task ended.
#[derive(Debug)]
pub enum Exit<E> {
    /// It returned `Ok`.
    Done,
    /// It returned an error.
    Failed(E),
    /// It panicked; the panic's message.
    Panicked(String),
    /// It was aborted (at the end of a shutdown's grace).
    Aborted,
}

/// A task's name and how it ended.
#[derive(Debug)]
pub struct Ended<E> {
    /// The name the task was spawned with ("the cursor writer").
    pub name: &'static str,
    /// How it ended.
    pub exit: Exit<E>,
}

impl<E: fmt::Display> Ended<E> {
    /// Why the task ended, for a log line or an error: "it stopped", the error, the panic.
    pub fn reason(&self) -> String {
        match &self.exit {
            Exit::Done => "it stopped".into(),
            Exit::Failed(e) => e.to_string(),
            Exit::Panicked(message) => format!("it panicked: {message}"),
            Exit::Aborted => "it was aborted".into(),
        }
    }
}

/// The background tasks of one service, owned in one place.
pub struct Tasks<E> {
    set: JoinSet<Result<(), E>>,
    names: HashMap<Id, &'static str>,
    token: CancellationToken,
}

impl<E: Send + 'static> Tasks<E> {
    /// No tasks yet; their token is a child of `parent` (cancelled with it, or by `shutdown`).
    pub fn new(parent: &CancellationToken) -> Tasks<E> {
        Tasks {
            set: JoinSet::new(),
            names: HashMap::new(),
            token: parent.child_token(),
        }
    }

    /// Starts `task` with a child token of the tasks' token, under `name`.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        let handle = self.set.spawn(task(self.token.child_token()));
        self.names.insert(handle.id(), name);
    }

    /// Starts `task`, a future that knows nothing of tokens, under `name`: cancelling the tasks
    /// drops it where it waits (it then counts as done).
    pub fn spawn_until_cancelled<Fut>(&mut self, name: &'static str, task: Fut)
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.spawn(name, |token| async move {
            token.run_until_cancelled(task).await;
            Ok(())
        });
    }

    /// How many tasks are running.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// True when no task runs.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// The next task to end. Never resolves while there is none (so it can sit in a `select!`).
    pub async fn ended(&mut self) -> Ended<E> {
        loop {
            match self.set.join_next_with_id().await {
                Some(joined) => return self.name(joined),
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Cancels every task, waits up to `grace` for them to end, then aborts the rest and joins
    /// them too. Returns how each ended, in the order they did.
    pub async fn shutdown(mut self, grace: Duration) -> Vec<Ended<E>> {
        self.token.cancel();
        let mut ended = Vec::with_capacity(self.set.len());
        let deadline = tokio::time::Instant::now() + grace;
        while let Ok(Some(joined)) =
            tokio::time::timeout_at(deadline, self.set.join_next_with_id()).await
        {
            ended.push(self.name(joined));
        }
        self.set.abort_all();
        while let Some(joined) = self.set.join_next_with_id().await {
            ended.push(self.name(joined));
        }
        ended
    }

    fn name(&mut self, joined: Result<(Id, Result<(), E>), tokio::task::JoinError>) -> Ended<E> {
        let (id, exit) = match joined {
            Ok((id, Ok(()))) => (id, Exit::Done),
            Ok((id, Err(e))) => (id, Exit::Failed(e)),
            Err(e) if e.is_panic() => {
                let id = e.id();
                let payload = e.into_panic();
                let message = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-text panic".into());
                (id, Exit::Panicked(message))
            }
            Err(e) => (e.id(), Exit::Aborted),
        };
        Ended {
            name: self.names.remove(&id).unwrap_or("a task"),
            exit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_task_that_ends_early_is_reported_with_its_name_and_error() {
        let root = CancellationToken::new();
        let mut tasks: Tasks<String> = Tasks::new(&root);
        tasks.spawn("the waiter", |token| async move {
            token.cancelled().await;
            Ok(())
        });
        tasks.spawn("the failing one", |_| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Err("broker gone".to_owned())
        });
        let ended = tasks.ended().await;
        assert_eq!(ended.name, "the failing one");
        assert_eq!(ended.reason(), "broker gone");
        assert_eq!(tasks.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panic_is_reported_as_such() {
        let root = CancellationToken::new();
        let mut tasks: Tasks<String> = Tasks::new(&root);
        tasks.spawn("the panicking one", |_| async { panic!("boom") });
        let ended = tasks.ended().await;
        assert_eq!(ended.name, "the panicking one");
        assert_eq!(ended.reason(), "it panicked: boom");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_joins_the_willing_and_aborts_the_stubborn_after_the_grace() {
        let root = CancellationToken::new();
        let mut tasks: Tasks<String> = Tasks::new(&root);
        tasks.spawn("the polite one", |token| async move {
            token.cancelled().await;
            Ok(())
        });
        tasks.spawn("the stubborn one", |_| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        });
        let started = tokio::time::Instant::now();
        let ended = tasks.shutdown(Duration::from_secs(5)).await;
        let exits: Vec<(&str, String)> = ended.iter().map(|e| (e.name, e.reason())).collect();
        assert_eq!(
            exits,
            [
                ("the polite one", "it stopped".to_owned()),
                ("the stubborn one", "it was aborted".to_owned())
            ]
        );
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_the_parent_token_reaches_every_task() {
        let root = CancellationToken::new();
        let mut tasks: Tasks<String> = Tasks::new(&root);
        tasks.spawn("the listener", |token| async move {
            token.cancelled().await;
            Err("cancelled".to_owned())
        });
        root.cancel();
        assert_eq!(tasks.ended().await.reason(), "cancelled");
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_without_a_token_is_dropped_at_shutdown_without_waiting_out_the_grace() {
        let root = CancellationToken::new();
        let mut tasks: Tasks<String> = Tasks::new(&root);
        tasks.spawn_until_cancelled("the sleeper", async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        let started = tokio::time::Instant::now();
        let ended = tasks.shutdown(Duration::from_secs(5)).await;
        assert_eq!(ended.len(), 1);
        assert_eq!(
            (ended[0].name, ended[0].reason()),
            ("the sleeper", "it stopped".into())
        );
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn with_no_task_ended_never_resolves() {
        let root = CancellationToken::new();
        let mut tasks: Tasks<String> = Tasks::new(&root);
        let waited = tokio::time::timeout(Duration::from_secs(60), tasks.ended()).await;
        assert!(waited.is_err());
        assert!(tasks.is_empty());
    }
}
