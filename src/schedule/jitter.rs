//! A job's `"jitter"`: its records leave at the slot plus a stable offset of their own, so that a
//! hundred thousand jobs due in one minute do not all reach the workers in the same second.
//!
//! ```text
//!  slot (scheduledAt, dispatchId unchanged) ──► offset = murmur2("<jobName>@<scheduledAt>") mod jitter
//!                                               ──► notBefore = slot + offset (RFC 3339, milliseconds)
//!  dispatcher: the delay queue releases the record at notBefore; worker: no run starts before it
//! ```
//!
//! The hash is documented so that any other implementation can reproduce it (the maths is
//! [`crate::wire::ids::offset_ms`]'s, since every process computes it): `h` is Kafka's
//! murmur2 (the Java client's `Utils.murmur2`, seed `0x9747b28c`) of the UTF-8 bytes of the
//! record's `dispatchId`, `<jobName>@<scheduledAt>` with `scheduledAt` as the message writes it
//! (`nightly@2026-11-27T01:30:00Z`), read as an unsigned 32-bit number; the offset is
//! `h mod J` milliseconds, `J` the jitter in milliseconds. The same job and slot always get the same
//! offset (a crash that re-sends a slot re-sends the same `notBefore`), and slots spread uniformly
//! over `[0, J)` (the bias of the modulo is below `J / 2^32`, under 0.02 % at the 10-minute cap).
//!
//! The loader's rules for the value (see [`check`]): at least 1 ms, whole milliseconds, at most
//! [`MAX_JITTER`], at most the job's `catchupWindow`, and at most the job's smallest interval
//! between consecutive slots ([`smallest_gap_below`]), so that a job's records still leave in slot
//! order.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::kinds::When;
use crate::wire::job::MAX_JITTER;
use crate::wire::slot_text;

/// How far ahead the loader looks for the job's smallest interval between consecutive slots: a
/// year and a month, so every month length, weekday and daylight-saving change of the zone's
/// current rules is seen.
pub const GAP_HORIZON_DAYS: i64 = 400;

/// Two consecutive slots of a job closer than the jitter allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    /// The earlier slot.
    pub from: DateTime<Utc>,
    /// The next one.
    pub to: DateTime<Utc>,
}

impl Gap {
    /// The interval between the two slots.
    pub fn length(&self) -> Duration {
        (self.to - self.from).to_std().unwrap_or_default()
    }
}

/// The first pair of consecutive slots of `expr` after `from`, within [`GAP_HORIZON_DAYS`], that
/// are less than `jitter` apart; `None` when there is none (the jitter is at most the job's
/// smallest interval over that horizon).
///
/// Slots are whole minutes, so a jitter of at most a minute needs no search. Otherwise every slot
/// of the horizon is visited (at most 576 000, for a jitter just over a minute: a valid jitter of
/// `J` leaves at most `400 days / J` of them), stopping at the first gap that is too small. An
/// interval that occurs less often than once in 400 days (a 29 February in some expressions) is
/// not seen.
pub fn smallest_gap_below(expr: &When, from: DateTime<Utc>, jitter: Duration) -> Option<Gap> {
    if jitter <= Duration::from_secs(60) {
        return None;
    }
    let jitter = chrono::Duration::from_std(jitter).ok()?;
    let until = from + chrono::Duration::days(GAP_HORIZON_DAYS);
    let mut previous = expr.next_after(from)?;
    while previous < until {
        let next = expr.next_after(previous)?;
        if next - previous < jitter {
            return Some(Gap {
                from: previous,
                to: next,
            });
        }
        previous = next;
    }
    None
}

/// Why a `"jitter"` value is refused, as the loader reports it (after `jitter: `).
pub fn check(
    text: &str,
    expr: Option<&When>,
    catchup_window: Option<Duration>,
    from: DateTime<Utc>,
) -> Result<Duration, String> {
    let jitter = humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like \"30s\", \"90s\" or \"5m\": {e}"))?;
    if jitter < Duration::from_millis(1) || jitter > MAX_JITTER {
        return Err(format!(
            "{text:?} is out of range 1ms-10m (for more spread, use H in cronTime)"
        ));
    }
    if jitter.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!("{text:?} is not a whole number of milliseconds"));
    }
    if let Some(window) = catchup_window.filter(|w| jitter > *w) {
        return Err(format!(
            "{text:?} is longer than the job's catchupWindow {}: a slot still waiting for its offset when a dispatcher crashes would be re-sent outside its window and skipped",
            humantime::format_duration(window)
        ));
    }
    if let Some(gap) = expr.and_then(|e| smallest_gap_below(e, from, jitter)) {
        return Err(format!(
            "{text:?} is longer than the job's smallest interval between two slots, {} ({} to {}): its records could leave out of slot order",
            humantime::format_duration(gap.length()),
            slot_text(gap.from),
            slot_text(gap.to),
        ));
    }
    Ok(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn expr(text: &str, zone: &str) -> When {
        When::of_cron(crate::cron::CronExpr::parse_in(text, zone).unwrap())
    }

    #[test]
    fn the_smallest_gap_is_found_within_an_hour_across_hours_and_across_midnight() {
        let from = at(2026, 11, 30, 0, 0);
        let m = |n: u64| Duration::from_secs(60 * n);
        // */5: every gap is 5 minutes.
        assert_eq!(
            smallest_gap_below(&expr("*/5 * * * *", "UTC"), from, m(5)),
            None
        );
        let gap = smallest_gap_below(&expr("*/5 * * * *", "UTC"), from, m(6)).unwrap();
        assert_eq!(gap.length(), m(5));
        // 0,50 past 9 and 10: 10:00 follows 09:50.
        let gap = smallest_gap_below(&expr("0,50 9,10 * * *", "UTC"), from, m(11)).unwrap();
        assert_eq!(
            (gap.from, gap.to),
            (at(2026, 11, 30, 9, 50), at(2026, 11, 30, 10, 0))
        );
        // 23:55 on the 30th, then 00:00 on the 1st: only where a 31st does not come between.
        let e = expr("0,55 0,23 1,30 * *", "UTC");
        let gap = smallest_gap_below(&e, from, m(6)).unwrap();
        assert_eq!(
            (gap.from, gap.to),
            (at(2026, 11, 30, 23, 55), at(2026, 12, 1, 0, 0))
        );
        // A jitter of at most a minute never needs a search, and never finds a gap.
        assert_eq!(
            smallest_gap_below(&expr("* * * * *", "UTC"), from, m(1)),
            None
        );
        assert!(smallest_gap_below(
            &expr("* * * * *", "UTC"),
            from,
            m(1) + Duration::from_millis(1)
        )
        .is_some());
    }

    /// Berlin skips 02:00-02:59 on 28 March 2027: the fixed-time `10,50 1,2 * * *` runs 01:50 CET
    /// and then 03:00 CEST (02:10 and 02:50 collapse into the first instant after the gap), 10
    /// minutes apart in real time where every other day's gaps are 20 minutes or more.
    #[test]
    fn a_daylight_saving_change_that_shortens_a_gap_is_seen() {
        let e = expr("10,50 1,2 * * *", "Europe/Berlin");
        let from = at(2026, 11, 30, 0, 0);
        let m = |n: u64| Duration::from_secs(60 * n);
        assert_eq!(smallest_gap_below(&e, from, m(10)), None);
        let gap = smallest_gap_below(&e, from, m(15)).unwrap();
        assert_eq!(
            (gap.from, gap.to),
            (at(2027, 3, 28, 0, 50), at(2027, 3, 28, 1, 0))
        );
    }

    #[test]
    fn values_are_refused_with_the_rule_they_break() {
        let from = at(2026, 11, 30, 0, 0);
        let hourly = expr("0 * * * *", "UTC");
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(
            check("30s", Some(&hourly), hour, from),
            Ok(Duration::from_secs(30))
        );
        assert_eq!(check("10m", Some(&hourly), hour, from), Ok(MAX_JITTER));
        let err =
            |text: &str, e: &When, w: Option<Duration>| check(text, Some(e), w, from).unwrap_err();
        assert_eq!(
            err("0s", &hourly, hour),
            r#""0s" is out of range 1ms-10m (for more spread, use H in cronTime)"#
        );
        assert_eq!(
            err("11m", &hourly, hour),
            r#""11m" is out of range 1ms-10m (for more spread, use H in cronTime)"#
        );
        assert_eq!(
            err("1ms 500us", &hourly, hour),
            r#""1ms 500us" is not a whole number of milliseconds"#
        );
        assert!(err("soon", &hourly, hour)
            .starts_with(r#""soon" is not a duration like "30s", "90s" or "5m": "#));
        assert_eq!(
            err("5m", &hourly, Some(Duration::from_secs(120))),
            r#""5m" is longer than the job's catchupWindow 2m: a slot still waiting for its offset when a dispatcher crashes would be re-sent outside its window and skipped"#
        );
        assert_eq!(
            err("5m", &expr("*/3 * * * *", "UTC"), hour),
            r#""5m" is longer than the job's smallest interval between two slots, 3m (2026-11-30T00:03:00Z to 2026-11-30T00:06:00Z): its records could leave out of slot order"#
        );
    }
}
