//! The kinds of schedule a job can have, and the bounds any of them can take: what the scheduler
//! evaluates for a job ([`When`]) and what its settings record of it ([`Timing`]).
//!
//! ```text
//!  "cronTime": "30 2 * * *"   ─► When::Cron   (the cron front end, in the job's zone; shared by
//!                                               every job with the same text and zone)
//!  "at": "2027-03-01T14:05:30+01:00" ─► When::At     one slot: the minute containing the instant;
//!                                                     the record's notBefore is the instant itself
//!  "every": "90m"             ─► When::Every  slots anchor + k·period, whole minutes, UTC
//!                                             (anchor: startAt rounded up to its minute, else the epoch)
//!  "startAt" / "endAt"        ─► bounds of any kind: no slot before startAt, none at or after endAt
//! ```
//!
//! Every kind answers the one question the wheel, catch-up and the tools ask: the next slot
//! strictly after an instant ([`When::next_after`]). Slots are whole minutes (an `at` job's slot is
//! the minute that contains its instant), so the wheel and the cursors stay in minutes; only the
//! record of an `at` job carries its second, as its `notBefore` (the jitter's machinery: the delay
//! queue holds the record until then and the worker starts no run before it).

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use chrono_tz::Tz;

use crate::clock::Minute;
use crate::cron::CronExpr;

/// The shortest `every`.
pub const MIN_EVERY: Duration = Duration::from_secs(60);
/// The longest `every`: 366 days.
pub const MAX_EVERY: Duration = Duration::from_secs(366 * 24 * 3600);

/// What a job's settings record of a schedule that is not a plain, unbounded `cronTime` (the
/// common case keeps none: see [`crate::schedule::JobSpec::timing`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Timing {
    /// Which kind the job is.
    pub kind: Kind,
    /// `startAt`: no slot before it.
    pub start_at: Option<DateTime<Utc>>,
    /// `endAt`: no slot at or after it.
    pub end_at: Option<DateTime<Utc>>,
    /// `keepAfterRun`: a topic-sourced job is kept after its last slot (its `at`, or the last before
    /// `endAt`); without it the owner removes it with a tombstone.
    pub keep_after_run: bool,
}

impl Timing {
    /// The instant of an `at` job.
    pub fn at(&self) -> Option<DateTime<Utc>> {
        match self.kind {
            Kind::At(at) => Some(at),
            _ => None,
        }
    }
}

/// The kind of a job's schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `cronTime`.
    Cron,
    /// `at`: one run at this instant (whole seconds).
    At(DateTime<Utc>),
    /// `every`: a run every this many minutes.
    Every(u32),
}

/// A job's compiled schedule: what the scheduler evaluates. Jobs with the same plain `cronTime` in
/// the same zone share one (the loader's cache); a bounded job or an `at`/`every` job has its own.
#[derive(Clone, PartialEq)]
pub struct When {
    shape: Shape,
    /// No slot before this.
    start: Option<DateTime<Utc>>,
    /// No slot at or after this.
    end: Option<DateTime<Utc>>,
    /// The zone the job's times are shown in (and, for cron, evaluated in).
    tz: Tz,
    /// The schedule as one line of text: the cron expression, `@at <instant>` or `@every <period>`.
    /// It is what a JobMessage's `cronTime` carries.
    source: String,
}

#[derive(Clone, PartialEq)]
enum Shape {
    Cron(CronExpr),
    /// The instant.
    At(DateTime<Utc>),
    /// Slots at `anchor + k * period` minutes, `k >= 0`.
    Every {
        anchor: i64,
        period: i64,
    },
}

impl fmt::Debug for When {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("When");
        d.field("source", &self.source).field("tz", &self.tz);
        if let Some(s) = self.start {
            d.field("start", &s);
        }
        if let Some(e) = self.end {
            d.field("end", &e);
        }
        d.finish()
    }
}

/// The text of an instant as the tools print it: RFC 3339, UTC, seconds.
fn instant_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `90m`, `1d 12h`: a period of whole minutes as humantime writes it.
pub fn period_text(minutes: u32) -> String {
    humantime::format_duration(Duration::from_secs(u64::from(minutes) * 60)).to_string()
}

/// An `at`, `startAt` or `endAt` value: an RFC 3339 instant with its offset, in whole seconds; the
/// error is the loader's message for the field.
pub fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    match DateTime::parse_from_rfc3339(text.trim()) {
        Ok(t) if t.timestamp_subsec_nanos() == 0 => Ok(t.with_timezone(&Utc)),
        Ok(_) => Err(format!("{text:?} is not a whole second")),
        Err(e) => Err(format!(
            "{text:?} is not an RFC 3339 instant with its offset, like \"2027-03-01T14:05:30+01:00\" or \"2027-03-01T13:05:30Z\": {e}"
        )),
    }
}

/// An `every` value: whole minutes, 1m-366d; the error is the loader's message for the field.
pub fn parse_every(text: &str) -> Result<u32, String> {
    match humantime::parse_duration(text) {
        Ok(d) if d < MIN_EVERY || d > MAX_EVERY => Err(format!("{text:?} is out of range 1m-366d")),
        Ok(d) if d.subsec_nanos() != 0 || d.as_secs() % 60 != 0 => Err(format!(
            "{text:?} is not a whole number of minutes (slots are whole minutes)"
        )),
        Ok(d) => Ok((d.as_secs() / 60) as u32),
        Err(e) => Err(format!(
            "{text:?} is not a duration like \"15m\", \"90m\" or \"1d\": {e}"
        )),
    }
}

impl When {
    /// A cron expression, unbounded.
    pub fn of_cron(expr: CronExpr) -> When {
        When {
            start: None,
            end: None,
            tz: expr.tz(),
            source: expr.source().to_string(),
            shape: Shape::Cron(expr),
        }
    }

    /// The compiled schedule of a job whose settings carry `timing` (`expr`: its cron expression
    /// when the kind is [`Kind::Cron`]; `None` then makes an unbounded cron a never-firing one).
    pub fn of(timing: &Timing, expr: Option<CronExpr>, tz: Tz) -> Option<When> {
        let (shape, source) = match timing.kind {
            Kind::Cron => {
                let expr = expr?;
                let source = expr.source().to_string();
                (Shape::Cron(expr), source)
            }
            Kind::At(at) => (Shape::At(at), format!("@at {}", instant_text(at))),
            Kind::Every(minutes) => {
                let anchor = timing.start_at.map_or(0, |s| {
                    let m = Minute::containing(s);
                    if m.start() == Some(s) {
                        m.0
                    } else {
                        m.0 + 1
                    }
                });
                (
                    Shape::Every {
                        anchor,
                        period: i64::from(minutes.max(1)),
                    },
                    format!("@every {}", period_text(minutes)),
                )
            }
        };
        Some(When {
            shape,
            start: timing.start_at,
            end: timing.end_at,
            tz,
            source,
        })
    }

    /// The next slot strictly after `after`, or `None` when the job has no slot left.
    ///
    /// ```
    /// use chrono::{TimeZone, Utc};
    /// use cronq::schedule::kinds::{Kind, Timing, When};
    /// let t = |h, m, s| Utc.with_ymd_and_hms(2027, 3, 1, h, m, s).unwrap();
    /// let timing = Timing { kind: Kind::Every(90), start_at: Some(t(8, 0, 0)), end_at: Some(t(12, 0, 0)), keep_after_run: false };
    /// let every = When::of(&timing, None, chrono_tz::UTC).unwrap();
    /// assert_eq!(every.next_after(t(0, 0, 0)), Some(t(8, 0, 0)));
    /// assert_eq!(every.next_after(t(8, 0, 0)), Some(t(9, 30, 0)));
    /// assert_eq!(every.next_after(t(10, 59, 59)), Some(t(11, 0, 0)));
    /// assert_eq!(every.next_after(t(11, 0, 0)), None); // 12:30 is after endAt
    /// let at = Timing { kind: Kind::At(t(14, 5, 30)), start_at: None, end_at: None, keep_after_run: false };
    /// let once = When::of(&at, None, chrono_tz::UTC).unwrap();
    /// assert_eq!(once.next_after(t(14, 4, 0)), Some(t(14, 5, 0))); // its slot: the minute of 14:05:30
    /// assert_eq!(once.next_after(t(14, 5, 0)), None);
    /// ```
    #[inline]
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let next = match &self.shape {
            Shape::Cron(expr) => match self.start {
                // The first slot at or after startAt: slots are whole minutes, so "after the
                // second before it" is exactly that.
                Some(start) if start > after => {
                    expr.next_after(start - chrono::Duration::seconds(1))?
                }
                _ => expr.next_after(after)?,
            },
            Shape::At(at) => {
                if self.start.is_some_and(|s| *at < s) {
                    return None;
                }
                let slot = Minute::containing(*at).start()?;
                if slot <= after {
                    return None;
                }
                // The bound applies to the instant itself, which is at or after its slot.
                return match self.end {
                    Some(end) if *at >= end => None,
                    _ => Some(slot),
                };
            }
            Shape::Every { anchor, period } => {
                let after = Minute::containing(after).0;
                let k = if after < *anchor {
                    0
                } else {
                    (after - anchor).div_euclid(*period) + 1
                };
                let slot = k.checked_mul(*period)?.checked_add(*anchor)?;
                Minute(slot).start()?
            }
        };
        match self.end {
            Some(end) if next >= end => None,
            _ => Some(next),
        }
    }

    /// The cron expression, for a cron job.
    pub fn cron(&self) -> Option<&CronExpr> {
        match &self.shape {
            Shape::Cron(expr) => Some(expr),
            _ => None,
        }
    }

    /// The compiled cron expression alone, when it is the whole evaluation (see
    /// [`CronExpr::plain_utc`]): an unbounded plain UTC cron job.
    pub(crate) fn plain_utc(&self) -> Option<&saffron::Cron> {
        match (&self.shape, self.start, self.end) {
            (Shape::Cron(expr), None, None) => expr.plain_utc(),
            _ => None,
        }
    }

    /// The schedule as one line: the cron expression, `@at <instant>` or `@every <period>`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The zone the job's times are shown in (and a cron expression is evaluated in).
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// A cron job whose minute and hour are fixed (its DST rule); `false` for the other kinds.
    pub fn is_fixed_time(&self) -> bool {
        self.cron().is_some_and(CronExpr::is_fixed_time)
    }

    /// The instant of an `at` job.
    pub fn at(&self) -> Option<DateTime<Utc>> {
        match self.shape {
            Shape::At(at) => Some(at),
            _ => None,
        }
    }

    /// A one-line English description.
    pub fn describe(&self) -> String {
        let base = match &self.shape {
            Shape::Cron(expr) => expr.describe(),
            Shape::At(at) => format!("Once, at {}", instant_text(*at)),
            Shape::Every { anchor, period } => {
                let anchor = Minute(*anchor)
                    .start()
                    .map_or_else(|| "?".into(), instant_text);
                format!(
                    "Every {} (UTC, anchored at {anchor})",
                    period_text(*period as u32)
                )
            }
        };
        let mut out = base;
        if let Some(s) = self.start {
            out.push_str(&format!(", from {}", instant_text(s)));
        }
        if let Some(e) = self.end {
            out.push_str(&format!(", until {} (exclusive)", instant_text(e)));
        }
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn timing(kind: Kind, start: Option<i64>, end: Option<i64>) -> Timing {
        let at = |s: i64| Utc.timestamp_opt(s, 0).unwrap();
        Timing {
            kind,
            start_at: start.map(at),
            end_at: end.map(at),
            keep_after_run: false,
        }
    }

    /// The model: every slot of the job in `[from, to)` (seconds since the epoch), listed by
    /// walking every minute (or, for an `at` job, by its definition), with the bounds applied to
    /// each candidate. Shared with the scheduler's property tests.
    pub(crate) fn model_slots(t: &Timing, from: i64, to: i64) -> Vec<i64> {
        let inside = |instant: i64| {
            t.start_at.is_none_or(|s| instant >= s.timestamp())
                && t.end_at.is_none_or(|e| instant < e.timestamp())
        };
        match t.kind {
            Kind::At(at) => {
                let slot = at.timestamp().div_euclid(60) * 60;
                if slot >= from && slot < to && inside(at.timestamp()) {
                    vec![slot]
                } else {
                    vec![]
                }
            }
            Kind::Every(period) => {
                // The anchor's definition: the first whole minute at or after startAt, else 0.
                let anchor = t.start_at.map_or(0, |s| {
                    let secs = s.timestamp();
                    secs.div_euclid(60) * 60 + if secs % 60 == 0 { 0 } else { 60 }
                });
                let mut out = vec![];
                let mut minute = from.div_euclid(60) * 60;
                if minute < from {
                    minute += 60;
                }
                while minute < to {
                    let since = minute - anchor;
                    if since >= 0 && since % (i64::from(period) * 60) == 0 && inside(minute) {
                        out.push(minute);
                    }
                    minute += 60;
                }
                out
            }
            Kind::Cron => unreachable!("cron is the cron front end's, tested there"),
        }
    }

    /// Every slot `When::next_after` gives in `[from, to)`, starting just before `from`.
    fn walked(w: &When, from: i64, to: i64) -> Vec<i64> {
        let mut out = vec![];
        let mut cursor = Utc.timestamp_opt(from - 1, 0).unwrap();
        while let Some(next) = w.next_after(cursor) {
            if next.timestamp() >= to {
                break;
            }
            out.push(next.timestamp());
            cursor = next;
        }
        out
    }

    // Around 2027-03-01, in seconds.
    const BASE: i64 = 1_803_888_000;

    proptest! {
        #[test]
        fn every_slots_match_a_minute_by_minute_model(
            period in 1u32..400,
            start in proptest::option::of(-50_000i64..50_000),
            end_after_start in proptest::option::of(0i64..80_000),
            from in -60_000i64..60_000,
        ) {
            let start = start.map(|s| BASE + s);
            let end = end_after_start.map(|e| start.unwrap_or(BASE) + e);
            let t = timing(Kind::Every(period), start, end);
            let w = When::of(&t, None, chrono_tz::UTC).unwrap();
            let (from, to) = (BASE + from, BASE + from + 40_000);
            prop_assert_eq!(walked(&w, from, to), model_slots(&t, from, to));
        }

        #[test]
        fn an_at_job_has_one_slot_the_minute_of_its_instant(
            at in -50_000i64..50_000,
            start in proptest::option::of(-50_000i64..50_000),
            end in proptest::option::of(-50_000i64..50_000),
            from in -60_000i64..60_000,
        ) {
            let t = timing(Kind::At(Utc.timestamp_opt(BASE + at, 0).unwrap()), start.map(|s| BASE + s), end.map(|e| BASE + e));
            let w = When::of(&t, None, chrono_tz::UTC).unwrap();
            let (from, to) = (BASE + from, BASE + 60_000);
            prop_assert_eq!(walked(&w, from, to), model_slots(&t, from, to));
        }

        #[test]
        fn bounds_keep_exactly_the_cron_slots_inside_them(
            minute in 0u32..60,
            step in 1u32..30,
            start in proptest::option::of(0i64..200_000),
            len in proptest::option::of(0i64..200_000),
        ) {
            let text = format!("{minute}/{step} * * * *");
            let expr = CronExpr::parse(&text, chrono_tz::UTC).unwrap();
            let start = start.map(|s| BASE + s);
            let end = len.map(|l| start.unwrap_or(BASE) + l);
            let t = timing(Kind::Cron, start, end);
            let bounded = When::of(&t, Some(expr.clone()), chrono_tz::UTC).unwrap();
            let (from, to) = (BASE - 1_000, BASE + 400_000);
            // The oracle: the unbounded expression's slots, filtered by the bounds' definition.
            let unbounded = walked(&When::of_cron(expr), from, to);
            let expected: Vec<i64> = unbounded
                .into_iter()
                .filter(|s| start.is_none_or(|b| *s >= b) && end.is_none_or(|e| *s < e))
                .collect();
            prop_assert_eq!(walked(&bounded, from, to), expected);
        }
    }

    #[test]
    fn every_is_anchored_at_the_epoch_without_start_at_so_every_member_agrees() {
        let t = timing(Kind::Every(90), None, None);
        let w = When::of(&t, None, chrono_tz::Europe::Berlin).unwrap();
        // 2027-03-28 is the spring-forward day in Berlin: intervals are UTC, so nothing shifts.
        let day = Utc.with_ymd_and_hms(2027, 3, 28, 0, 0, 0).unwrap();
        let slots: Vec<_> = std::iter::successors(w.next_after(day), |t| w.next_after(*t))
            .take(4)
            .map(|t| t.format("%H:%M").to_string())
            .collect();
        // A day is 16 × 90 minutes, so every UTC midnight is a slot: 00:00, 01:30, 03:00, …, the
        // Berlin clock change between 01:00 and 02:00 UTC notwithstanding.
        assert_eq!(slots, ["01:30", "03:00", "04:30", "06:00"]);
        assert_eq!(w.source(), "@every 1h 30m");
    }

    #[test]
    fn an_every_job_starting_mid_minute_starts_at_the_next_whole_minute() {
        let start = Utc.with_ymd_and_hms(2027, 3, 1, 8, 0, 30).unwrap();
        let t = Timing {
            kind: Kind::Every(60),
            start_at: Some(start),
            end_at: None,
            keep_after_run: false,
        };
        let w = When::of(&t, None, chrono_tz::UTC).unwrap();
        assert_eq!(
            w.next_after(start - chrono::Duration::hours(1)),
            Some(Utc.with_ymd_and_hms(2027, 3, 1, 8, 1, 0).unwrap())
        );
    }
}
