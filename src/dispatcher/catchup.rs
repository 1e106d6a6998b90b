//! Which missed slots are sent: each job's catch-up rule (`catchup`) and window (`catchupWindow`).
//! Pure: the scheduler asks [`admit`] about every slot it hands out late, and a takeover's or a
//! stall's skips are summed in [`Skips`] for ONE warning, never a line per slot.
//!
//! A slot is *missed* when it is handed out after its own minute has passed: a new owner catching up
//! from a shard's cursor, or a process that stalled (a suspended machine, a clock jump). The slot of
//! the current minute is live and always sent.
//!
//! | rule     | missed slots sent                                   |
//! |----------|-----------------------------------------------------|
//! | `all`    | every one inside the window, in order               |
//! | `latest` | only the most recent one, if it is inside the window |
//! | `none`   | none                                                |

use std::collections::HashMap;

use crate::clock::Minute;
use crate::schedule::{Catchup, JobSpec};

/// Why a missed slot was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// Older than the job's `catchupWindow`.
    Window,
    /// The job's `catchup` rule (`none`, or `latest` with a later missed slot).
    Rule,
}

/// A job's window in whole minutes (a window is at least one minute).
pub fn window_minutes(spec: &JobSpec) -> i64 {
    i64::try_from(spec.catchup_window.as_secs() / 60).unwrap_or(i64::MAX)
}

/// Whether the job's slot `slot` is sent when handed out at minute `now`; `next` is the job's
/// next slot after `slot`.
pub fn admit(
    catchup: Catchup,
    window: i64,
    slot: Minute,
    next: Option<Minute>,
    now: Minute,
) -> Result<(), SkipReason> {
    if slot >= now {
        return Ok(());
    }
    if slot.0 < now.0.saturating_sub(window) {
        return Err(SkipReason::Window);
    }
    match catchup {
        Catchup::All => Ok(()),
        Catchup::None => Err(SkipReason::Rule),
        Catchup::Latest if next.is_some_and(|n| n < now) => Err(SkipReason::Rule),
        Catchup::Latest => Ok(()),
    }
}

/// Jobs named one by one in the warning; the rest are only counted.
const NAMED_JOBS: usize = 10_000;

/// Skipped slots of one takeover or stall, per reason and per job.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Skips {
    /// Older than the job's window.
    pub window: u64,
    /// Left out by the job's rule.
    pub rule: u64,
    per_job: HashMap<String, u64>,
    /// Skips of jobs beyond the first [`NAMED_JOBS`] named.
    unnamed: u64,
}

impl Skips {
    /// Counts `slots` skipped slots of `job`.
    pub fn add(&mut self, job: &str, reason: SkipReason, slots: u64) {
        match reason {
            SkipReason::Window => self.window += slots,
            SkipReason::Rule => self.rule += slots,
        }
        if let Some(n) = self.per_job.get_mut(job) {
            *n += slots;
        } else if self.per_job.len() < NAMED_JOBS {
            self.per_job.insert(job.to_string(), slots);
        } else {
            self.unnamed += slots;
        }
    }

    /// Skipped slots in all.
    pub fn total(&self) -> u64 {
        self.window + self.rule
    }

    /// Skipped slots of `job`.
    pub fn of(&self, job: &str) -> u64 {
        self.per_job.get(job).copied().unwrap_or(0)
    }

    /// Jobs with a skipped slot.
    pub fn jobs(&self) -> usize {
        self.per_job.len()
    }

    /// The jobs with the most skips, `name×count`, most first, at most `n` of them.
    pub fn top(&self, n: usize) -> String {
        let mut jobs: Vec<(&String, &u64)> = self.per_job.iter().collect();
        jobs.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        let mut text: Vec<String> = jobs
            .iter()
            .take(n)
            .map(|(name, count)| format!("{name}×{count}"))
            .collect();
        if jobs.len() > n || self.unnamed > 0 {
            text.push("…".to_string());
        }
        text.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Minute = Minute(1_000);

    /// A job firing every `step` minutes, missed from `cursor` to `NOW` with a window: the slots
    /// a takeover sends, by walking `admit` over every slot (the scheduler's own walk).
    fn sent(rule: Catchup, window: i64, step: i64, cursor: i64) -> Vec<i64> {
        let slots: Vec<i64> = (cursor + 1..=NOW.0).filter(|m| m % step == 0).collect();
        slots
            .iter()
            .enumerate()
            .filter(|(i, &m)| {
                let next = slots
                    .get(i + 1)
                    .map(|&n| Minute(n))
                    .or(Some(Minute(m + step)));
                admit(rule, window, Minute(m), next, NOW).is_ok()
            })
            .map(|(_, &m)| m)
            .collect()
    }

    #[test]
    fn all_sends_every_missed_slot_inside_the_window_and_the_live_one() {
        assert_eq!(
            sent(Catchup::All, 60, 5, 970),
            [975, 980, 985, 990, 995, 1000]
        );
        // 10 minutes of window: 990 is exactly 10 minutes old and still inside.
        assert_eq!(sent(Catchup::All, 10, 5, 970), [990, 995, 1000]);
    }

    #[test]
    fn latest_sends_only_the_most_recent_missed_slot() {
        // Live slot 1000 plus the latest missed one, 995.
        assert_eq!(sent(Catchup::Latest, 60, 5, 970), [995, 1000]);
        // Every 7 minutes: 994 is the last missed; 1000 is not a slot.
        assert_eq!(sent(Catchup::Latest, 60, 7, 970), [994]);
        // The latest missed slot is outside the window: nothing missed is sent.
        assert_eq!(sent(Catchup::Latest, 3, 7, 970), Vec::<i64>::new());
    }

    #[test]
    fn none_sends_only_the_live_slot() {
        assert_eq!(sent(Catchup::None, 60, 5, 970), [1000]);
        assert_eq!(sent(Catchup::None, 60, 7, 970), Vec::<i64>::new());
    }

    #[test]
    fn reasons_are_told_apart() {
        assert_eq!(
            admit(Catchup::All, 10, Minute(980), Some(Minute(985)), NOW),
            Err(SkipReason::Window)
        );
        assert_eq!(
            admit(Catchup::None, 10, Minute(995), Some(Minute(1000)), NOW),
            Err(SkipReason::Rule)
        );
        assert_eq!(admit(Catchup::None, 10, NOW, None, NOW), Ok(()));
    }

    #[test]
    fn skips_are_counted_per_job_and_reason() {
        let mut skips = Skips::default();
        skips.add("a", SkipReason::Window, 3);
        skips.add("b", SkipReason::Rule, 1);
        skips.add("a", SkipReason::Rule, 2);
        assert_eq!((skips.window, skips.rule, skips.total()), (3, 3, 6));
        assert_eq!((skips.of("a"), skips.of("b"), skips.jobs()), (5, 1, 2));
        assert_eq!(skips.top(1), "a×5, …");
        assert_eq!(skips.top(5), "a×5, b×1");
    }
}
