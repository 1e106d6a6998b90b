//! Standard cron in, UTC instants out.
//!
//! ```text
//! "0 12 * * MON-FRI" ──► dialect::translate ──► saffron::Cron (bitmasks) ──► next_after(t)
//!   (standard syntax,      (precise errors,        + a day filter for          (local wall clock →
//!    @macros, 0-7 dow)      saffron's dow 1-7)       cron(8)'s AND rule)         UTC, tz.rs DST rules)
//! ```
//!
//! Everything else in cronq (the schedule loader, the wheel's reinsertion, `cronq next`) evaluates
//! cron through [`CronExpr`].

pub mod dialect;
pub mod hash;
pub mod tz;

use std::fmt;

use chrono::{DateTime, Datelike, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

use self::dialect::{DayFilter, SyntaxError, Translation};

/// Why an expression or zone was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CronError {
    /// The text is not valid standard cron.
    #[error(transparent)]
    Syntax(#[from] SyntaxError),
    /// Valid syntax, but no instant ever matches.
    #[error(
        "the expression can never fire: the days it selects never occur in the months it selects"
    )]
    NeverFires,
    /// Not an IANA time zone name.
    #[error(
        "unknown time zone {name:?}: expected an IANA name such as \"UTC\" or \"Europe/Berlin\""
    )]
    UnknownZone {
        /// The name as written.
        name: String,
    },
    /// saffron refused our translation: a bug in the front end, reported rather than hidden.
    #[error("internal error: saffron rejected the translated expression {translated:?}")]
    Translation {
        /// What we handed saffron.
        translated: String,
    },
}

/// A compiled cron expression evaluated on the wall clock of one time zone.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use cronq::cron::CronExpr;
///
/// let weekdays_at_noon = CronExpr::parse("0 12 * * MON-FRI", chrono_tz::UTC).unwrap();
/// // 2026-11-27 is a Friday; the next run after Friday noon is Monday noon.
/// let friday_noon = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
/// assert_eq!(
///     weekdays_at_noon.next_after(friday_noon),
///     Some(Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap())
/// );
/// ```
#[derive(Clone)]
pub struct CronExpr {
    source: String,
    tz: Tz,
    translation: Translation,
    compiled: saffron::Cron,
    /// With `nW` ORed with a day-of-week field (both restricted): that field alone, which is what
    /// a day in a month without day `n` must match.
    or_weekdays: Option<saffron::Cron>,
}

impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CronExpr")
            .field("source", &self.source)
            .field("tz", &self.tz)
            .field("saffron", &self.translation.saffron)
            .field("day_filter", &self.translation.day_filter)
            .finish()
    }
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.tz == other.tz
    }
}

/// A day filter can reject every candidate for a long time (`*/31` day-of-month AND Monday in
/// February is years apart); give up after this many candidate days.
const MAX_FILTERED_DAYS: usize = 100_000;

impl CronExpr {
    /// Parses a standard cron expression (5 fields or an `@macro`) to be evaluated in `tz`.
    ///
    /// ```
    /// use cronq::cron::CronExpr;
    /// let err = CronExpr::parse("61 * * * *", chrono_tz::UTC).unwrap_err();
    /// assert_eq!(err.to_string(), "minute: 61 is out of range 0-59");
    /// ```
    pub fn parse(text: &str, tz: Tz) -> Result<CronExpr, CronError> {
        CronExpr::parse_for_job(text, tz, None)
    }

    /// Parses an expression of job `job`, whose `H` items (Jenkins' hash, see [`hash`]) are
    /// resolved from the job's name first; without a job, `H` is an error.
    ///
    /// ```
    /// use cronq::cron::CronExpr;
    /// let e = CronExpr::parse_for_job("H H * * *", chrono_tz::UTC, Some("nightly-backup")).unwrap();
    /// assert_eq!(e.source(), "9 5 * * *");
    /// ```
    pub fn parse_for_job(text: &str, tz: Tz, job: Option<&str>) -> Result<CronExpr, CronError> {
        let resolved = hash::resolve(text, job)?;
        let text = resolved.as_ref();
        let translation = dialect::translate(text)?;
        let compiled: saffron::Cron =
            translation
                .saffron
                .parse()
                .map_err(|_| CronError::Translation {
                    translated: translation.saffron.clone(),
                })?;
        // With `nW` the day-of-week text saffron gets is `*` unless the two day fields OR.
        let or_weekdays = match (
            translation.nearest_weekday,
            translation.saffron.rsplit(' ').next(),
        ) {
            (Some(_), Some(dow)) if dow != "*" => Some(format!("* * * * {dow}").parse().map_err(
                |_| CronError::Translation {
                    translated: translation.saffron.clone(),
                },
            )?),
            _ => None,
        };
        let expr = CronExpr {
            source: text.trim().to_string(),
            tz,
            translation,
            compiled,
            or_weekdays,
        };
        let probe = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).single();
        if probe.and_then(|t| expr.next_local_after(t)).is_none() {
            return Err(CronError::NeverFires);
        }
        Ok(expr)
    }

    /// Parses with a zone given by IANA name.
    pub fn parse_in(text: &str, zone: &str) -> Result<CronExpr, CronError> {
        CronExpr::parse(text, tz::parse_zone(zone)?)
    }

    /// The next instant strictly after `after` at which the expression fires, or `None` if it never
    /// fires again within the representable range.
    #[inline]
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.tz == Tz::UTC {
            self.next_local_after(after)
        } else {
            tz::next_in_zone(self, after)
        }
    }

    /// The compiled expression alone, when it is the whole evaluation: a UTC expression with no
    /// day filter and no `nW`, whose [`next_after`](Self::next_after) is exactly saffron's
    /// `Cron::next_after`. A caller that evaluates many expressions (the scheduler) keeps these
    /// 40-byte values side by side, instead of reading each ~200-byte expression behind its own
    /// allocation on every evaluation.
    pub(crate) fn plain_utc(&self) -> Option<&saffron::Cron> {
        let plain = self.tz == Tz::UTC
            && self.translation.day_filter.is_none()
            && self.translation.nearest_weekday.is_none();
        plain.then_some(&self.compiled)
    }

    /// Evaluates the expression on a naive wall clock represented as UTC: the next wall-clock time
    /// strictly after `after` (truncated to the minute) that matches.
    #[inline]
    pub(crate) fn next_local_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let first = self.compiled.next_after(after)?;
        if self.translation.day_filter.is_none() && self.translation.nearest_weekday.is_none() {
            return Some(first);
        }
        let mut candidate = first;
        for _ in 0..MAX_FILTERED_DAYS {
            if self.accepts_day(candidate) {
                return Some(candidate);
            }
            let last_minute = candidate
                .date_naive()
                .and_time(NaiveTime::from_hms_opt(23, 59, 0)?)
                .and_utc();
            candidate = self.compiled.next_after(last_minute)?;
        }
        None
    }

    /// Whether a day saffron found passes the checks saffron cannot do itself.
    #[inline]
    fn accepts_day(&self, candidate: DateTime<Utc>) -> bool {
        let by_filter = match self.translation.day_filter {
            None => true,
            Some(DayFilter::Weekdays(mask)) => {
                mask & (1 << candidate.weekday().num_days_from_sunday()) != 0
            }
            Some(DayFilter::MonthDays(mask)) => mask & (1 << candidate.day()) != 0,
        };
        let nearest_weekday_holds = match self.translation.nearest_weekday {
            // saffron's `nW` found a day in a month without day n: only an ORed day-of-week
            // field can make it a match.
            Some(n) if n > days_in_month(candidate) => self
                .or_weekdays
                .as_ref()
                .is_some_and(|weekdays| weekdays.contains(candidate)),
            _ => true,
        };
        by_filter && nearest_weekday_holds
    }

    /// The expression as the user wrote it (trimmed).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The zone whose wall clock the expression is evaluated on.
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The equivalent expression handed to saffron.
    pub fn saffron_expression(&self) -> &str {
        &self.translation.saffron
    }

    /// A fixed-time job: neither the minute nor the hour field starts with `*` (see the DST rules in
    /// [`tz`]).
    pub fn is_fixed_time(&self) -> bool {
        self.translation.fixed_time
    }

    /// A one-line English description.
    ///
    /// ```
    /// use cronq::cron::CronExpr;
    /// let e = CronExpr::parse("*/15 * * * *", chrono_tz::UTC).unwrap();
    /// assert_eq!(
    ///     e.describe(),
    ///     "Every 15th minute starting from minute 0 to minute 59 past the hour (UTC)"
    /// );
    /// ```
    pub fn describe(&self) -> String {
        let describe = |text: &str| {
            text.parse::<saffron::parse::CronExpr>().ok().map(|parsed| {
                parsed
                    .describe(saffron::parse::English::default())
                    .to_string()
            })
        };
        let base = describe(&self.translation.description_text)
            .or_else(|| describe(&self.translation.saffron))
            .unwrap_or_else(|| self.translation.saffron.clone());
        let filter = match self.translation.day_filter {
            None => String::new(),
            Some(DayFilter::Weekdays(mask)) => {
                const NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
                let days: Vec<&str> = (0..7)
                    .filter(|d| mask & (1 << d) != 0)
                    .map(|d| NAMES[d])
                    .collect();
                format!(", only if that day is also a {}", days.join("/"))
            }
            Some(DayFilter::MonthDays(mask)) => {
                let days: Vec<String> = (1..32)
                    .filter(|d| mask & (1 << d) != 0)
                    .map(|d: u32| d.to_string())
                    .collect();
                format!(", only if that day of the month is {}", days.join(","))
            }
        };
        format!("{base}{filter} ({})", self.tz.name())
    }
}

/// 28-31.
fn days_in_month(at: DateTime<Utc>) -> u32 {
    match at.month() {
        4 | 6 | 9 | 11 => 30,
        2 if at.date_naive().leap_year() => 29,
        2 => 28,
        _ => 31,
    }
}
