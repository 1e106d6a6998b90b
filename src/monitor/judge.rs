//! What a record or the passing of time does to a run: the monitor's rules, pure (no IO, no
//! clock of their own: every function is given `now`), so they are tested synchronously.
//!
//! ```text
//!  JobMessage ──► Dispatched ─┐                      (a missed slot's row becomes a normal run)
//!  JobResult  ──► attempt  ───┼─► step(run, event) ─► new run + the state it entered + its alert
//!  dead letter ─► outcome  ───┘
//!  now ─► deadline passed, no final state ─────────────► late
//!  now ─► slot + --missed-after passed, no dispatch ───► missed, or skipped_by_rule (paused, or
//!                                                        collapsed by `catchup: latest`)
//! ```
//!
//! The store applies these inside its transactions ([`super::store`]); the alerts a step names go
//! to the outbox in the same transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::model::{AlertKind, Run, RunState, STDERR_TAIL_BYTES};
use crate::schedule::{Catchup, Job};
use crate::wire::control::ControlRecord;
use crate::wire::job::JobMessage;
use crate::wire::result::{DeadReason, JobResult, Status};

/// What a deadline is made of when a job sets no `deadline` of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// `--default-timeout`: a job's attempt timeout when neither the job nor its message says.
    pub timeout: Duration,
    /// `--default-max-attempts`: likewise for its attempts.
    pub max_attempts: u32,
}

impl Default for Defaults {
    fn default() -> Defaults {
        Defaults {
            timeout: Duration::from_secs(3600),
            max_attempts: 3,
        }
    }
}

/// Added to timeout × attempts for the retries' backoff and the pickup.
pub const DEADLINE_SLACK: Duration = Duration::from_secs(5 * 60);

/// When a run of `job`'s `slot` becomes `late` without a final state: the job's `deadline` after
/// the slot; without one, timeout × maxAttempts + [`DEADLINE_SLACK`] (each from the message, else
/// the job, else `defaults`), capped at the job's next slot (a run still going when the next one
/// is due is late).
pub fn deadline(
    slot: DateTime<Utc>,
    job: Option<&Job>,
    message: Option<&JobMessage>,
    defaults: &Defaults,
) -> DateTime<Utc> {
    let after = |d: Duration| {
        chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| slot.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    };
    if let Some(own) = job.and_then(|j| j.spec.deadline) {
        return after(own);
    }
    let timeout = message
        .and_then(|m| m.timeout_ms.map(Duration::from_millis))
        .or_else(|| job.and_then(|j| j.spec.timeout))
        .unwrap_or(defaults.timeout);
    let attempts = message
        .and_then(|m| m.max_attempts)
        .or_else(|| job.and_then(|j| j.spec.max_attempts))
        .unwrap_or(defaults.max_attempts)
        .max(1);
    let by_attempts = after(
        timeout
            .saturating_mul(attempts)
            .saturating_add(DEADLINE_SLACK),
    );
    match job.and_then(|j| j.expr.next_after(slot)) {
        Some(next) if next < by_attempts => next,
        _ => by_attempts,
    }
}

/// A record that concerns a run.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// Its JobMessage, written at `at` (the record's timestamp).
    Dispatched {
        /// The message.
        message: &'a JobMessage,
        /// When it was written.
        at: DateTime<Utc>,
    },
    /// One attempt's result.
    Reported(&'a JobResult),
    /// Its dead letter.
    DeadLettered {
        /// Why.
        reason: DeadReason,
        /// The message, when the letter carries it.
        message: Option<&'a JobMessage>,
        /// The last attempt's result, when the letter carries it.
        last: Option<&'a JobResult>,
    },
}

impl Event<'_> {
    /// The run it concerns: `(dispatchId, job, slot text)`; `None` for a dead letter of a record
    /// that could not be read (it names no run).
    pub fn names(&self) -> Option<(&str, &str, &str)> {
        match self {
            Event::Dispatched { message, .. } => Some((
                &message.dispatch_id,
                &message.job_name,
                &message.scheduled_at,
            )),
            Event::Reported(r) => Some((&r.dispatch_id, &r.job_name, &r.scheduled_at)),
            Event::DeadLettered { message, last, .. } => match (message, last) {
                (Some(m), _) => Some((&m.dispatch_id, &m.job_name, &m.scheduled_at)),
                (None, Some(r)) => Some((&r.dispatch_id, &r.job_name, &r.scheduled_at)),
                (None, None) => None,
            },
        }
    }
}

/// What one event did to a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The run after it.
    pub run: Run,
    /// The state it moved into, when it moved (a new run counts as moving into its state).
    pub entered: Option<RunState>,
    /// A second JobMessage of a slot that had one: nothing changed.
    pub duplicate: bool,
    /// The alert its new state raises.
    pub alert: Option<AlertKind>,
}

/// The alert a run raises on entering `state`, if any (`late`, `missed` and `recovered` are
/// raised by the passing of time and by the job's history, not by one run's record).
pub fn alert_on_entering(state: RunState) -> Option<AlertKind> {
    match state {
        RunState::Failed => Some(AlertKind::Failed),
        RunState::TimedOut => Some(AlertKind::TimedOut),
        RunState::DeadLettered => Some(AlertKind::DeadLettered),
        RunState::Late => Some(AlertKind::Late),
        RunState::Missed => Some(AlertKind::Missed),
        _ => None,
    }
}

/// Whether an alert of `kind` puts the job in trouble, so its next success is a `recovered`.
pub fn is_trouble(kind: AlertKind) -> bool {
    kind != AlertKind::Recovered
}

/// A state that no later record of the run changes (a final result or a dead letter came).
fn is_final(state: RunState) -> bool {
    state.is_terminal() && !matches!(state, RunState::Missed | RunState::SkippedByRule)
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The end of `text`, at most [`STDERR_TAIL_BYTES`].
fn tail(text: &str) -> String {
    crate::wire::result::tail_text(text.as_bytes(), STDERR_TAIL_BYTES)
}

/// Applies `event` to `current` (the run as stored, if any). `deadline` gives a new run's
/// deadline from its job and slot. `None` when the event names no run or its slot is not an
/// instant (the caller counts it as rejected).
pub fn step(
    current: Option<Run>,
    event: &Event<'_>,
    deadline: impl FnOnce(&str, DateTime<Utc>, Option<&JobMessage>) -> DateTime<Utc>,
) -> Option<Step> {
    let (id, job, slot_text) = event.names()?;
    let slot = parse_time(slot_text)?;
    let message = match event {
        Event::Dispatched { message, .. } => Some(*message),
        Event::DeadLettered { message, .. } => *message,
        Event::Reported(_) => None,
    };
    let existed = current.is_some();
    let mut run = current.unwrap_or_else(|| {
        let mut run = Run::new(id.to_string(), job.to_string(), slot, RunState::Dispatched);
        run.deadline = Some(deadline(job, slot, message));
        run
    });
    let before = run.state;
    let mut duplicate = false;
    match event {
        Event::Dispatched { at, .. } => {
            if run.dispatched_at.is_some() {
                duplicate = true;
            } else {
                run.dispatched_at = Some(*at);
                if matches!(run.state, RunState::Missed | RunState::SkippedByRule) {
                    // Dispatched after all (a catch-up, a resume): a normal run from here on.
                    run.state = RunState::Dispatched;
                }
            }
        }
        Event::Reported(result) => {
            record_attempt(&mut run, result);
            if !is_final(run.state) {
                run.state = match result.status {
                    Status::Succeeded => RunState::Succeeded,
                    Status::Skipped => RunState::Skipped,
                    Status::Cancelled => RunState::Cancelled,
                    // Retried, or about to be dead-lettered: the letter ends the run.
                    Status::Failed | Status::TimedOut | Status::Rejected | Status::Expired => {
                        // A late run stays late until it ends.
                        if run.state == RunState::Late {
                            RunState::Late
                        } else {
                            RunState::Running
                        }
                    }
                };
            }
        }
        Event::DeadLettered { reason, last, .. } => {
            if let Some(last) = last {
                record_attempt(&mut run, last);
            }
            if !is_final(run.state) {
                run.state = match reason {
                    DeadReason::AttemptsExhausted => match last.map(|r| r.status) {
                        Some(Status::TimedOut) => RunState::TimedOut,
                        _ => RunState::Failed,
                    },
                    _ => RunState::DeadLettered,
                };
            }
        }
    }
    let entered = (!existed || run.state != before).then_some(run.state);
    Some(Step {
        alert: entered.and_then(alert_on_entering),
        run,
        entered,
        duplicate,
    })
}

/// Folds one attempt's result into its run: the attempts count, and the last attempt's exit
/// code, stderr and worker (an earlier attempt read after a later one changes none of them).
fn record_attempt(run: &mut Run, result: &JobResult) {
    let started = parse_time(&result.started_at);
    let finished = parse_time(&result.finished_at);
    if let Some(s) = started {
        if result.attempt > 0 && run.started_at.is_none_or(|t| s < t) {
            run.started_at = Some(s);
        }
    }
    if result.attempt >= run.attempts {
        run.attempts = result.attempt;
        run.last_exit_code = result.exit_code;
        run.stderr_tail = tail(&result.stderr_tail);
        run.worker = Some(result.worker.clone());
        if let Some(f) = finished {
            run.finished_at = Some(f);
        }
    }
}

/// Whether a pause covers `slot` for `job`: a control record of the job, or of every job
/// (`--all`), whose interval `[since, until)` holds it.
pub fn paused_at<'a>(
    records: impl IntoIterator<Item = &'a ControlRecord>,
    slot: DateTime<Utc>,
) -> bool {
    records.into_iter().any(|r| r.covers(slot))
}

/// A later dispatched slot of the same job: `(its slot, when it was dispatched)`.
pub type LaterDispatch = (DateTime<Utc>, DateTime<Utc>);

/// What a slot of `job` with no dispatch by slot + `--missed-after` is: `skipped_by_rule` when
/// the job was paused at that instant, or when `catchup: latest` collapsed it (a later slot of
/// the job, within its catch-up window, was dispatched late, i.e. by a catch-up that chose it
/// over this one); `missed` otherwise. `later` is the latest dispatched slot of the job after
/// this one, if any.
pub fn missing_slot(
    job: &Job,
    slot: DateTime<Utc>,
    paused: bool,
    later: Option<LaterDispatch>,
) -> RunState {
    if paused {
        return RunState::SkippedByRule;
    }
    if job.spec.catchup == Catchup::Latest {
        let window =
            chrono::Duration::from_std(job.spec.catchup_window).unwrap_or(chrono::Duration::MAX);
        if let Some((later_slot, dispatched_at)) = later {
            let within = later_slot > slot && later_slot - slot <= window;
            // A dispatch in its own minute is not a catch-up.
            let caught_up = dispatched_at >= later_slot + chrono::Duration::minutes(1);
            if within && caught_up {
                return RunState::SkippedByRule;
            }
        }
    }
    RunState::Missed
}

/// The slots of `job` in `(after, until]`, oldest first (none for a disabled job).
pub fn slots_between(
    job: &Job,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
) -> impl Iterator<Item = DateTime<Utc>> + '_ {
    let enabled = job.spec.enabled;
    std::iter::successors(
        enabled.then(|| job.expr.next_after(after)).flatten(),
        move |&s| job.expr.next_after(s),
    )
    .take_while(move |&s| s <= until)
}

/// Whether a run with this state and deadline is late at `now`.
pub fn is_late(state: RunState, deadline: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    matches!(state, RunState::Dispatched | RunState::Running) && deadline.is_some_and(|d| d <= now)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::schedule::{parse, LoadOptions};

    pub(crate) fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    /// The jobs of a schedule file's text.
    pub(crate) fn jobs(json: &str) -> Vec<Job> {
        parse(
            json.as_bytes(),
            std::path::Path::new("s.json"),
            LoadOptions::default(),
        )
        .unwrap()
        .jobs
    }

    pub(crate) fn message(job: &str, slot: &str) -> JobMessage {
        JobMessage {
            v: 1,
            job_name: job.into(),
            priority: 0,
            job: "x".into(),
            cron_time: "* * * * *".into(),
            scheduled_at: slot.into(),
            dispatch_id: format!("{job}@{slot}"),
            timeout_ms: None,
            max_attempts: None,
            overlap: None,
            not_before: None,
        }
    }

    pub(crate) fn result(job: &str, slot: &str, attempt: u32, status: Status) -> JobResult {
        JobResult {
            v: 1,
            dispatch_id: format!("{job}@{slot}"),
            job_name: job.into(),
            scheduled_at: slot.into(),
            attempt,
            status,
            exit_code: Some(if status == Status::Succeeded { 0 } else { 1 }),
            started_at: slot.into(),
            finished_at: slot.into(),
            duration_ms: 10,
            stdout_tail: String::new(),
            stderr_tail: format!("attempt {attempt}"),
            worker: "w1".into(),
        }
    }

    const DEFAULTS: Defaults = Defaults {
        timeout: Duration::from_secs(3600),
        max_attempts: 3,
    };

    #[test]
    fn a_deadline_of_its_own_wins_over_the_default() {
        let jobs =
            jobs(r#"{"jobs":[{"jobName":"a","job":"x","cronTime":"0 * * * *","deadline":"2m"}]}"#);
        let slot = at("2026-12-07T10:00:00Z");
        assert_eq!(
            deadline(slot, Some(&jobs[0]), None, &DEFAULTS),
            at("2026-12-07T10:02:00Z")
        );
    }

    #[test]
    fn the_default_deadline_is_timeout_times_attempts_plus_five_minutes_capped_at_the_next_slot() {
        let jobs = jobs(
            r#"{"jobs":[
              {"jobName":"daily","job":"x","cronTime":"0 2 * * *","timeout":"10m","maxAttempts":2},
              {"jobName":"minutely","job":"x","cronTime":"* * * * *"},
              {"jobName":"plain","job":"x","cronTime":"0 0 1 1 *"}
            ]}"#,
        );
        let slot = at("2026-12-07T02:00:00Z");
        // 10m × 2 + 5m.
        assert_eq!(
            deadline(slot, Some(&jobs[0]), None, &DEFAULTS),
            at("2026-12-07T02:25:00Z")
        );
        // 1h × 3 + 5m, but the next slot comes first.
        assert_eq!(
            deadline(slot, Some(&jobs[1]), None, &DEFAULTS),
            at("2026-12-07T02:01:00Z")
        );
        // The defaults, uncapped by a next slot a year away.
        assert_eq!(
            deadline(slot, Some(&jobs[2]), None, &DEFAULTS),
            at("2026-12-07T05:05:00Z")
        );
        // The message's own settings come before the job's.
        let mut m = message("daily", "2026-12-07T02:00:00Z");
        m.timeout_ms = Some(60_000);
        m.max_attempts = Some(1);
        assert_eq!(
            deadline(slot, Some(&jobs[0]), Some(&m), &DEFAULTS),
            at("2026-12-07T02:06:00Z")
        );
        // A job the schedule does not know: the defaults.
        assert_eq!(
            deadline(slot, None, None, &DEFAULTS),
            at("2026-12-07T05:05:00Z")
        );
    }

    fn fixed(_: &str, slot: DateTime<Utc>, _: Option<&JobMessage>) -> DateTime<Utc> {
        slot + chrono::Duration::minutes(2)
    }

    #[test]
    fn a_run_goes_dispatched_running_failed_and_raises_one_failed_alert() {
        let slot = "2026-12-07T10:00:00Z";
        let m = message("a", slot);
        let first = step(
            None,
            &Event::Dispatched {
                message: &m,
                at: at(slot),
            },
            fixed,
        )
        .unwrap();
        assert_eq!(first.entered, Some(RunState::Dispatched));
        assert_eq!(first.run.deadline, Some(at("2026-12-07T10:02:00Z")));
        let r1 = result("a", slot, 1, Status::Failed);
        let second = step(Some(first.run), &Event::Reported(&r1), fixed).unwrap();
        assert_eq!(
            (second.entered, second.alert),
            (Some(RunState::Running), None)
        );
        let r2 = result("a", slot, 2, Status::Failed);
        let third = step(Some(second.run.clone()), &Event::Reported(&r2), fixed).unwrap();
        assert_eq!(third.entered, None, "still running");
        let letter = Event::DeadLettered {
            reason: DeadReason::AttemptsExhausted,
            message: Some(&m),
            last: Some(&r2),
        };
        let last = step(Some(third.run), &letter, fixed).unwrap();
        assert_eq!(last.entered, Some(RunState::Failed));
        assert_eq!(last.alert, Some(AlertKind::Failed));
        assert_eq!(last.run.attempts, 2);
        assert_eq!(last.run.stderr_tail, "attempt 2");
        // Read again (a re-delivery): nothing new.
        let again = step(Some(last.run.clone()), &letter, fixed).unwrap();
        assert_eq!((again.entered, again.alert), (None, None));
    }

    #[test]
    fn a_second_dispatch_is_a_duplicate_and_a_report_without_a_dispatch_makes_the_run() {
        let slot = "2026-12-07T10:00:00Z";
        let r = result("a", slot, 1, Status::Succeeded);
        let made = step(None, &Event::Reported(&r), fixed).unwrap();
        assert_eq!(made.entered, Some(RunState::Succeeded));
        assert_eq!(made.run.dispatched_at, None);
        let m = message("a", slot);
        let dispatched = Event::Dispatched {
            message: &m,
            at: at(slot),
        };
        let late_dispatch = step(Some(made.run), &dispatched, fixed).unwrap();
        assert!(!late_dispatch.duplicate);
        assert_eq!(late_dispatch.run.state, RunState::Succeeded);
        let twice = step(Some(late_dispatch.run), &dispatched, fixed).unwrap();
        assert!(twice.duplicate);
        assert_eq!(twice.entered, None);
    }

    #[test]
    fn a_missed_slot_dispatched_later_becomes_a_normal_run_and_timed_out_letters_say_so() {
        let slot = "2026-12-07T10:00:00Z";
        let missed = Run::new(format!("a@{slot}"), "a".into(), at(slot), RunState::Missed);
        let m = message("a", slot);
        let s = step(
            Some(missed),
            &Event::Dispatched {
                message: &m,
                at: at("2026-12-07T10:05:00Z"),
            },
            fixed,
        )
        .unwrap();
        assert_eq!(s.entered, Some(RunState::Dispatched));
        let r = result("a", slot, 3, Status::TimedOut);
        let letter = Event::DeadLettered {
            reason: DeadReason::AttemptsExhausted,
            message: None,
            last: Some(&r),
        };
        let s = step(Some(s.run), &letter, fixed).unwrap();
        assert_eq!(s.alert, Some(AlertKind::TimedOut));
        let rejected = Event::DeadLettered {
            reason: DeadReason::Rejected,
            message: Some(&m),
            last: None,
        };
        let s = step(None, &rejected, fixed).unwrap();
        assert_eq!(s.alert, Some(AlertKind::DeadLettered));
        let unreadable = Event::DeadLettered {
            reason: DeadReason::Malformed,
            message: None,
            last: None,
        };
        assert!(step(None, &unreadable, fixed).is_none());
    }

    #[test]
    fn a_manual_run_is_marked_manual() {
        let mut m = message("a", "2026-12-07T10:00:07.123Z");
        m.dispatch_id = "a@2026-12-07T10:00:07.123Z#manual".into();
        let s = step(
            None,
            &Event::Dispatched {
                message: &m,
                at: at("2026-12-07T10:00:07Z"),
            },
            fixed,
        )
        .unwrap();
        assert!(s.run.manual);
    }

    #[test]
    fn a_missing_slot_is_missed_unless_paused_or_collapsed_by_catchup_latest() {
        let jobs = jobs(
            r#"{"jobs":[
              {"jobName":"all","job":"x","cronTime":"* * * * *"},
              {"jobName":"latest","job":"x","cronTime":"* * * * *","catchup":"latest","catchupWindow":"10m"}
            ]}"#,
        );
        let slot = at("2026-12-07T10:00:00Z");
        assert_eq!(missing_slot(&jobs[0], slot, false, None), RunState::Missed);
        assert_eq!(
            missing_slot(&jobs[0], slot, true, None),
            RunState::SkippedByRule
        );
        // 10:02 sent at 10:03:10 by a catch-up: 10:00 was collapsed into it.
        let caught_up = Some((at("2026-12-07T10:02:00Z"), at("2026-12-07T10:03:10Z")));
        assert_eq!(
            missing_slot(&jobs[1], slot, false, caught_up),
            RunState::SkippedByRule
        );
        // The same under `catchup: all` is a loss.
        assert_eq!(
            missing_slot(&jobs[0], slot, false, caught_up),
            RunState::Missed
        );
        // A later slot sent in its own minute is no catch-up.
        let on_time = Some((at("2026-12-07T10:02:00Z"), at("2026-12-07T10:02:00.300Z")));
        assert_eq!(
            missing_slot(&jobs[1], slot, false, on_time),
            RunState::Missed
        );
        // Outside the window: not collapsed.
        let far = Some((at("2026-12-07T10:20:00Z"), at("2026-12-07T10:25:00Z")));
        assert_eq!(missing_slot(&jobs[1], slot, false, far), RunState::Missed);
    }

    #[test]
    fn pauses_cover_their_interval_only() {
        let pause = ControlRecord {
            v: 1,
            job: Some("a".into()),
            paused: false,
            reason: None,
            since: at("2026-12-07T10:00:00Z"),
            until: Some(at("2026-12-07T10:03:00Z")),
            drop_missed: false,
            by: "alice@ops".into(),
            at: at("2026-12-07T10:03:00Z"),
        };
        assert!(paused_at([&pause], at("2026-12-07T10:00:00Z")));
        assert!(paused_at([&pause], at("2026-12-07T10:02:00Z")));
        assert!(!paused_at([&pause], at("2026-12-07T10:03:00Z")));
        assert!(!paused_at([], at("2026-12-07T10:02:00Z")));
    }

    #[test]
    fn slots_between_lists_every_kind_in_its_window_and_none_for_a_disabled_job() {
        let jobs = jobs(
            r#"{"jobs":[
              {"jobName":"cron","job":"x","cronTime":"*/2 * * * *"},
              {"jobName":"every","job":"x","every":"3m","startAt":"2026-12-07T10:00:00Z"},
              {"jobName":"at","job":"x","at":"2026-12-07T10:04:30Z"},
              {"jobName":"off","job":"x","cronTime":"* * * * *","enabled":false}
            ]}"#,
        );
        let (after, until) = (at("2026-12-07T10:00:00Z"), at("2026-12-07T10:06:00Z"));
        let list = |j: &Job| {
            slots_between(j, after, until)
                .map(|s| s.format("%M").to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(list(&jobs[0]), ["02", "04", "06"]);
        assert_eq!(list(&jobs[1]), ["03", "06"]);
        assert_eq!(list(&jobs[2]), ["04"]);
        assert!(list(&jobs[3]).is_empty());
    }

    #[test]
    fn only_unfinished_runs_past_their_deadline_are_late() {
        let d = Some(at("2026-12-07T10:02:00Z"));
        let now = at("2026-12-07T10:02:00Z");
        assert!(is_late(RunState::Dispatched, d, now));
        assert!(is_late(RunState::Running, d, now));
        assert!(!is_late(RunState::Succeeded, d, now));
        assert!(!is_late(RunState::Late, d, now));
        assert!(!is_late(RunState::Running, d, at("2026-12-07T10:01:59Z")));
    }
}
