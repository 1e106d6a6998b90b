//! Wall clock ↔ UTC, with the Debian cron(8) daylight-saving rules.
//!
//! A cron expression describes local wall-clock times; the scheduler needs UTC instants. Most local
//! times map to exactly one instant. Twice a year they don't, and the rules are Debian cron(8)'s (its `cron.c` main loop). A job is a *wildcard job* when its
//! minute or hour field starts with `*` (`*`, `*/15`, `@hourly`); every other job (numbers, lists,
//! ranges, `a-b/n`) is a *fixed-time job* ([`super::dialect::Translation::fixed_time`]).
//!
//! - **Spring forward** (a gap: 02:00-02:59 never happens in Berlin on the last Sunday of March): a
//!   fixed-time job whose local time falls in the gap fires once, at the first instant after the
//!   gap (03:00 CEST); several gap times of one job collapse into that one firing. A wildcard job
//!   runs on the new time: local times that do not exist are simply skipped (`30 * * * *` runs
//!   01:30 CET, then 03:30 CEST).
//! - **Fall back** (a repeat: 02:00-02:59 happens twice in Berlin on the last Sunday of October): a
//!   fixed-time job fires only at the first occurrence of a repeated local time; a wildcard job
//!   runs on real time and fires in both copies.

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, Offset, TimeZone, Utc};
use chrono_tz::Tz;

use super::{CronError, CronExpr};

/// Parses an IANA zone name.
///
/// ```
/// use cronq::cron::tz::parse_zone;
/// assert_eq!(parse_zone("Europe/Berlin").unwrap(), chrono_tz::Europe::Berlin);
/// assert!(parse_zone("Mars/Olympus").is_err());
/// ```
pub fn parse_zone(name: &str) -> Result<Tz, CronError> {
    name.trim()
        .parse::<Tz>()
        .map_err(|_| CronError::UnknownZone {
            name: name.to_string(),
        })
}

/// The UTC offset of `tz` at `at`, in seconds.
fn offset_secs(tz: Tz, at: DateTime<Utc>) -> i64 {
    i64::from(
        tz.offset_from_utc_datetime(&at.naive_utc())
            .fix()
            .local_minus_utc(),
    )
}

/// A naive local time carried in a `DateTime<Utc>` (how saffron takes it).
fn wall(tz: Tz, at: DateTime<Utc>) -> DateTime<Utc> {
    at.with_timezone(&tz).naive_local().and_utc()
}

/// The largest DST shift we look around for (real shifts are 30 min to 2 h).
const SHIFT_WINDOW: Duration = Duration::hours(3);

/// How far to walk forward from a time in a gap to the gap's end (Samoa once skipped a whole day).
const MAX_GAP_MINUTES: i64 = 48 * 60;

/// The instants at which local wall time `local` fires, per the rules in the module doc.
fn instants(tz: Tz, local: NaiveDateTime, fixed_time: bool, out: &mut Vec<DateTime<Utc>>) {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => out.push(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(first, second) => {
            out.push(first.with_timezone(&Utc));
            if !fixed_time {
                out.push(second.with_timezone(&Utc));
            }
        }
        // A wildcard job skips a local time that does not exist.
        LocalResult::None if !fixed_time => {}
        LocalResult::None => {
            // A fixed-time job in a gap fires at the first instant after it, i.e. the first local
            // minute that exists.
            for m in 1..=MAX_GAP_MINUTES {
                let probe = local + Duration::minutes(m);
                match tz.from_local_datetime(&probe) {
                    LocalResult::None => continue,
                    LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                        // Transitions happen on minute boundaries in every zone tzdata still uses,
                        // so the first existing minute is the first instant after the gap.
                        out.push(t.with_timezone(&Utc));
                        return;
                    }
                }
            }
        }
    }
}

/// [`CronExpr::next_after`] for zones other than UTC.
pub(crate) fn next_in_zone(expr: &CronExpr, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let tz = expr.tz();
    let fixed = expr.is_fixed_time();
    // A local time earlier than `after`'s own can still lie ahead in real time when clocks fall back
    // soon: start that much earlier.
    let fall_back = (offset_secs(tz, after) - offset_secs(tz, after + SHIFT_WINDOW)).max(0);
    let start = wall(tz, after) - Duration::seconds(fall_back) - Duration::minutes(1);

    let mut best: Option<DateTime<Utc>> = None;
    let mut cursor = start;
    let mut found = Vec::with_capacity(2);
    // Local times map to instants in order except across a fall-back; once a candidate is found,
    // later local times can only beat it when a repeat is near it.
    let mut horizon: Option<DateTime<Utc>> = None;
    loop {
        let local = expr.next_local_after(cursor)?;
        if let Some(h) = horizon {
            if local > h {
                break;
            }
        }
        found.clear();
        instants(tz, local.naive_utc(), fixed, &mut found);
        for &t in &found {
            if t > after && best.is_none_or(|b| t < b) {
                best = Some(t);
            }
        }
        if let (Some(b), None) = (best, horizon) {
            let repeat_near = offset_secs(tz, b - SHIFT_WINDOW) > offset_secs(tz, b + SHIFT_WINDOW);
            if !repeat_near {
                break;
            }
            horizon = Some(local + SHIFT_WINDOW);
        }
        cursor = local;
    }
    best
}
