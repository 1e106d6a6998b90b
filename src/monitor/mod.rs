//! `cronq monitor`: did it run? Joins every dispatch to its attempts and outcome, keeps the run
//! history in SQLite, and alerts on failed, late and missed runs through signed webhooks.
//!
//! ```text
//!  job topics ─┐                                        ┌─► runs, attempts, audit (SQLite, --db)
//!  results  ───┼─► ingest (rdkafka, positions kept in ──┤
//!  dead letters┤    the database, one transaction per   └─► judge: failed / timed_out / dead_lettered
//!  control  ───┘    batch: a restart resumes exactly)         late (deadline) / missed (schedule) /
//!                                                              recovered ──► outbox (same database)
//!                                                                               │
//!                                        notify: POST, HMAC-SHA256 signed, retried 24 h ◄──┘
//! ```
//!
//! The topics are the truth: the database is an index that a monitor started on an empty one
//! rebuilds from what the topics still hold. [`model`] holds the types every part shares; the
//! outbox a notifier drains is the [`model::Outbox`] trait, so delivery is tested without a
//! database. [`api`] serves the history on `--http` (a JSON API and, with [`page`], the status
//! page), reading it on connections of its own.

pub mod api;
pub mod ingest;
pub mod judge;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod page;
pub mod service;
pub mod store;
