//! Property tests: `CronExpr::next_after` against oracles that share no code with cronq.
//!
//! ```text
//! random standard expression ──► cronq (dialect → saffron → day filter → tz.rs)  ──┐
//!   + random start instant   ──► oracle: own field parser + day-by-day scan       ──┼─► equal?
//!                            ──► croner 4.0.3 (where its semantics are cron(8)'s)  ──┘
//! ```
//!
//! The brute-force oracle is written from the cron(8) rules, not from cronq's code: its own tiny
//! field parser turns each field into a set, a day matches by the star-prefix rule ("restricted" =
//! the field text does not start with `*`; both restricted → either matches, otherwise both must),
//! and the search walks day by day, then minute by minute inside a matching day. In a time zone the
//! oracle walks real time minute by minute like a cron daemon does and applies the DST rules to what
//! the wall clock shows (see `zone_oracle`).

use std::str::FromStr;
use std::sync::OnceLock;

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone,
    Timelike, Utc, Weekday,
};
use chrono_tz::Tz;
use cronq::cron::{CronError, CronExpr};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

// ---------------------------------------------------------------------------------------------
// The brute-force oracle.
// ---------------------------------------------------------------------------------------------

/// One field's grammar, as the oracle knows it.
#[derive(Clone, Copy, Debug)]
struct FieldKind {
    min: u32,
    max: u32,
    names: &'static [&'static str],
    /// The value of `names[0]`.
    first_named: u32,
}

const MINUTE: FieldKind = FieldKind {
    min: 0,
    max: 59,
    names: &[],
    first_named: 0,
};
const HOUR: FieldKind = FieldKind {
    min: 0,
    max: 23,
    names: &[],
    first_named: 0,
};
const DAY_OF_MONTH: FieldKind = FieldKind {
    min: 1,
    max: 31,
    names: &[],
    first_named: 0,
};
const MONTH: FieldKind = FieldKind {
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
    first_named: 1,
};
const DAY_OF_WEEK: FieldKind = FieldKind {
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
    first_named: 0,
};

impl FieldKind {
    fn value(self, text: &str) -> u32 {
        let upper = text.to_ascii_uppercase();
        match self.names.iter().position(|n| *n == upper) {
            Some(i) => self.first_named + i as u32,
            None => text.parse().expect("the generator writes numbers or names"),
        }
    }

    /// The field as a set, bit n = value n. Only the valid syntax the generators write.
    fn set(self, text: &str) -> u64 {
        let mut set = 0u64;
        for item in text.split(',') {
            let (base, step) = match item.split_once('/') {
                Some((base, step)) => (base, step.parse::<u32>().expect("numeric step")),
                None => (item, 1),
            };
            let (first, last) = if base == "*" {
                (self.min, self.max)
            } else if let Some((a, b)) = base.split_once('-') {
                (self.value(a), self.value(b))
            } else if item.contains('/') {
                // `a/n` is `a-max/n`
                (self.value(base), self.max)
            } else {
                let v = self.value(base);
                (v, v)
            };
            let mut v = first;
            while v <= last {
                set |= 1 << v;
                v += step;
            }
        }
        set
    }
}

/// The day-of-month field: a set of days or one of the extensions.
#[derive(Clone, Copy, Debug)]
enum DayRule {
    /// bit n = day n
    Days(u64),
    /// `L` (`before` = 0) or `L-n`: the last day of the month, or n days before it.
    Last { before: u32 },
    /// `LW`: the last Monday-Friday of the month.
    LastWeekday,
    /// `nW`: the Monday-Friday nearest to day n, never leaving the month; no match in a month
    /// without day n.
    NearestWeekday(u32),
}

/// The day-of-week field: a set of weekdays or one of the extensions (0 = Sunday).
#[derive(Clone, Copy, Debug)]
enum WeekdayRule {
    /// bit 0 = Sunday … bit 6 = Saturday (7 already folded onto 0)
    Weekdays(u64),
    /// `d#n`: the n-th such weekday of the month.
    Nth { weekday: u32, nth: u32 },
    /// `dL`: the last such weekday of the month.
    Last { weekday: u32 },
}

fn days_in_month(date: NaiveDate) -> u32 {
    let (y, m) = (date.year(), date.month());
    let next = if m == 12 {
        NaiveDate::from_ymd_opt(y + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(y, m + 1, 1)
    };
    next.and_then(|d| d.pred_opt()).expect("a real month").day()
}

impl DayRule {
    fn parse(text: &str) -> DayRule {
        let upper = text.to_ascii_uppercase();
        if upper == "L" {
            DayRule::Last { before: 0 }
        } else if upper == "LW" {
            DayRule::LastWeekday
        } else if let Some(n) = upper.strip_prefix("L-") {
            DayRule::Last {
                before: n.parse().expect("numeric offset"),
            }
        } else if let Some(n) = upper.strip_suffix('W') {
            DayRule::NearestWeekday(n.parse().expect("numeric day"))
        } else {
            DayRule::Days(DAY_OF_MONTH.set(text))
        }
    }

    fn matches(self, date: NaiveDate) -> bool {
        let (day, last) = (date.day(), days_in_month(date));
        let weekday = |d: u32| date.with_day(d).expect("a day of this month").weekday();
        let working = |d: u32| !matches!(weekday(d), Weekday::Sat | Weekday::Sun);
        match self {
            DayRule::Days(set) => set & (1 << day) != 0,
            DayRule::Last { before } => last.checked_sub(before) == Some(day),
            DayRule::LastWeekday => (1..=last).rev().find(|&d| working(d)) == Some(day),
            DayRule::NearestWeekday(n) if n > last => false,
            DayRule::NearestWeekday(n) => {
                let target = match weekday(n) {
                    Weekday::Sat if n == 1 => 3,
                    Weekday::Sat => n - 1,
                    Weekday::Sun if n == last => n - 2,
                    Weekday::Sun => n + 1,
                    _ => n,
                };
                day == target
            }
        }
    }
}

impl WeekdayRule {
    fn parse(text: &str) -> WeekdayRule {
        let upper = text.to_ascii_uppercase();
        if let Some((d, n)) = upper.split_once('#') {
            WeekdayRule::Nth {
                weekday: DAY_OF_WEEK.value(d) % 7,
                nth: n.parse().expect("numeric nth"),
            }
        } else if let Some(d) = upper.strip_suffix('L').filter(|d| !d.is_empty()) {
            WeekdayRule::Last {
                weekday: DAY_OF_WEEK.value(d) % 7,
            }
        } else {
            let mut set = DAY_OF_WEEK.set(text);
            if set & (1 << 7) != 0 {
                set = (set & !(1 << 7)) | 1;
            }
            WeekdayRule::Weekdays(set)
        }
    }

    fn matches(self, date: NaiveDate) -> bool {
        let weekday = date.weekday().num_days_from_sunday();
        match self {
            WeekdayRule::Weekdays(set) => set & (1 << weekday) != 0,
            WeekdayRule::Nth { weekday: w, nth } => w == weekday && (date.day() - 1) / 7 + 1 == nth,
            WeekdayRule::Last { weekday: w } => {
                w == weekday && date.day() + 7 > days_in_month(date)
            }
        }
    }
}

/// A standard expression as the oracle understands it.
#[derive(Clone, Debug)]
struct Spec {
    minutes: u64,
    hours: u64,
    months: u64,
    days: DayRule,
    weekdays: WeekdayRule,
    /// cron(8): a day field is restricted iff its text does not start with `*`.
    days_restricted: bool,
    weekdays_restricted: bool,
    /// cron(8)'s fixed-time job: neither the minute nor the hour text starts with `*` (Debian's
    /// `MIN_STAR`/`HR_STAR` flags look at the first character only, so `0-30/10` is fixed).
    fixed_time: bool,
}

impl Spec {
    fn parse(text: &str) -> Spec {
        let text = text.trim();
        let expanded = match text {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let f: Vec<&str> = expanded.split_whitespace().collect();
        assert_eq!(f.len(), 5, "{text:?}");
        Spec {
            minutes: MINUTE.set(f[0]),
            hours: HOUR.set(f[1]),
            months: MONTH.set(f[3]),
            days: DayRule::parse(f[2]),
            weekdays: WeekdayRule::parse(f[4]),
            days_restricted: !f[2].starts_with('*'),
            weekdays_restricted: !f[4].starts_with('*'),
            fixed_time: !f[0].starts_with('*') && !f[1].starts_with('*'),
        }
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let by_day = self.days.matches(date);
        let by_weekday = self.weekdays.matches(date);
        if self.days_restricted && self.weekdays_restricted {
            by_day || by_weekday
        } else {
            by_day && by_weekday
        }
    }

    fn matches(&self, t: NaiveDateTime) -> bool {
        t.second() == 0
            && self.minutes & (1 << t.minute()) != 0
            && self.hours & (1 << t.hour()) != 0
            && self.day_matches(t.date())
    }

    /// The Gregorian calendar repeats every 400 years, weekdays included: a day rule that
    /// matches no day in 2000-2399 matches no day ever.
    fn never_fires(&self) -> bool {
        let mut day = NaiveDate::from_ymd_opt(2000, 1, 1).expect("valid");
        let end = NaiveDate::from_ymd_opt(2400, 1, 1).expect("valid");
        while day < end {
            if self.day_matches(day) {
                return false;
            }
            day = day.succ_opt().expect("in range");
        }
        true
    }

    /// The first matching wall-clock minute strictly after `after`, scanning no further than
    /// `last_day` (inclusive).
    fn next_after(&self, after: NaiveDateTime, last_day: NaiveDate) -> Option<NaiveDateTime> {
        let mut day = after.date();
        while day <= last_day {
            if self.day_matches(day) {
                for h in (0..24).filter(|h| self.hours & (1 << h) != 0) {
                    for m in (0..60).filter(|m| self.minutes & (1 << m) != 0) {
                        let t = day.and_hms_opt(h, m, 0).expect("valid time");
                        if t > after {
                            return Some(t);
                        }
                    }
                }
            }
            day = day.succ_opt()?;
        }
        None
    }
}

/// Walks real time minute by minute after `after` (up to `until`), the way Debian's cron(8) main
/// loop does, and returns the first instant the job fires:
/// - when the wall clock jumps forward, a wildcard job runs only if the minute now shown matches
///   ("run wildcard jobs for current minute"); a fixed-time job fires once if any skipped local
///   minute or the minute shown matches ("run fixed-time jobs for each minute missed");
/// - when a local time occurs twice, a fixed-time job fires only in the first copy.
fn zone_oracle(
    spec: &Spec,
    tz: Tz,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let minute = Duration::minutes(1);
    let truncated = after.with_second(0)?.with_nanosecond(0)?;
    let mut u = truncated + minute;
    while u <= until {
        let shown = u.with_timezone(&tz).naive_local();
        let before = (u - minute).with_timezone(&tz).naive_local();
        let fires = if shown - before > minute && spec.fixed_time {
            let mut skipped = before + minute;
            let mut any = false;
            while skipped <= shown {
                any |= spec.matches(skipped);
                skipped += minute;
            }
            any
        } else if spec.matches(shown) {
            let second_copy = matches!(
                tz.from_local_datetime(&shown),
                LocalResult::Ambiguous(_, later) if later.with_timezone(&Utc) == u
            );
            !(second_copy && spec.fixed_time)
        } else {
            false
        };
        if fires {
            return Some(u);
        }
        u += minute;
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Generators of valid standard expressions.
// ---------------------------------------------------------------------------------------------

/// What the generator may write; croner needs a narrower dialect (see `croner_agrees`).
#[derive(Clone, Copy, Debug)]
struct Dialect {
    /// `*` as one item of a longer list (`1,*`): croner rejects it ("Invalid number").
    bare_star_in_lists: bool,
    /// `SUN` as the end of a range: croner rewrites every `-SUN` to `-7`, so `SUN-SUN` is every
    /// day there but Sunday in cron(8).
    sun_as_range_end: bool,
}

const FULL: Dialect = Dialect {
    bare_star_in_lists: true,
    sun_as_range_end: true,
};
const CRONER: Dialect = Dialect {
    bare_star_in_lists: false,
    sun_as_range_end: false,
};

/// A value as a number or, for months and weekdays, sometimes a name in some letter case.
fn render(kind: FieldKind, v: u32, style: u8) -> String {
    let named = v
        .checked_sub(kind.first_named)
        .and_then(|i| kind.names.get(i as usize));
    match (named, style) {
        (Some(name), 3) => name.to_string(),
        (Some(name), 4) => name.to_ascii_lowercase(),
        (Some(name), 5) => format!("{}{}", &name[..1], name[1..].to_ascii_lowercase()),
        _ => v.to_string(),
    }
}

fn item(kind: FieldKind, dialect: Dialect) -> BoxedStrategy<String> {
    let span = kind.max - kind.min + 1;
    let value = (kind.min..=kind.max, 0u8..6).prop_map(move |(v, s)| render(kind, v, s));
    let range = (kind.min..=kind.max, kind.min..=kind.max, 0u8..6, 0u8..6).prop_map(
        move |(a, b, sa, sb)| {
            let (a, b) = (a.min(b), a.max(b));
            // SUN is 0, so it can end a range only as `SUN-SUN`.
            let sb = if b == 0 && !dialect.sun_as_range_end {
                0
            } else {
                sb
            };
            format!("{}-{}", render(kind, a, sa), render(kind, b, sb))
        },
    );
    let star: BoxedStrategy<String> = if dialect.bare_star_in_lists {
        Just("*".to_string()).boxed()
    } else {
        (1..=span).prop_map(|n| format!("*/{n}")).boxed()
    };
    prop_oneof![
        1 => star,
        2 => (1..=span).prop_map(|n| format!("*/{n}")),
        4 => value,
        3 => range.clone(),
        2 => (range, 1..=span).prop_map(|(r, n)| format!("{r}/{n}")),
        2 => (kind.min..=kind.max, 0u8..6, 1..=span)
            .prop_map(move |(a, s, n)| format!("{}/{n}", render(kind, a, s))),
    ]
    .boxed()
}

fn field(kind: FieldKind, dialect: Dialect, star_weight: u32) -> BoxedStrategy<String> {
    prop_oneof![
        star_weight => Just("*".to_string()),
        10 => proptest::collection::vec(item(kind, dialect), 1..=3).prop_map(|items| items.join(",")),
    ]
    .boxed()
}

fn separator() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => Just(" ".to_string()),
        1 => Just("  ".to_string()),
        1 => Just("\t".to_string()),
        1 => Just(" \t ".to_string()),
    ]
}

fn layout(fields: [String; 5], seps: Vec<String>) -> String {
    let mut text = seps[0].trim_matches(' ').to_string();
    for (i, f) in fields.iter().enumerate() {
        if i > 0 {
            text.push_str(&seps[i]);
        }
        text.push_str(f);
    }
    text.push_str(seps[5].trim_matches('\t'));
    text
}

fn five_fields(dialect: Dialect) -> impl Strategy<Value = String> {
    (
        field(MINUTE, dialect, 3),
        field(HOUR, dialect, 3),
        field(DAY_OF_MONTH, dialect, 5),
        field(MONTH, dialect, 5),
        field(DAY_OF_WEEK, dialect, 5),
        proptest::collection::vec(separator(), 6),
    )
        .prop_map(|(mi, h, dom, mo, dow, seps)| layout([mi, h, dom, mo, dow], seps))
}

fn expression() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => prop::sample::select(vec![
            "@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly",
        ])
        .prop_map(str::to_string),
        19 => five_fields(FULL),
    ]
}

/// Expressions on which croner 4.0.3 means what cron(8) means (checked in its source):
/// - croner calls a day field unrestricted only when it is exactly `*`, cron(8) when it starts
///   with `*`; they disagree exactly when neither day field is `*` and one starts with `*`
///   (`*/2` next to `1`: cron(8) ANDs, croner ORs);
/// - croner has no `@midnight`;
/// - bare `*` list items and `-SUN` are already kept out by the `CRONER` dialect;
/// - `a/n` is rejected by croner's default parser and means `a-max/n` with `sloppy_ranges`,
///   which `croner_parser` turns on; `7` and `*` (0-7) in day-of-week fold onto Sunday in both.
fn croner_agrees(text: &str) -> bool {
    let f: Vec<&str> = text.split_whitespace().collect();
    let (dom, dow) = (f[2], f[4]);
    let either_exactly_star = dom == "*" || dow == "*";
    either_exactly_star || (!dom.starts_with('*') && !dow.starts_with('*'))
}

fn croner_expression() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => prop::sample::select(vec!["@yearly", "@annually", "@monthly", "@weekly", "@daily", "@hourly"])
            .prop_map(str::to_string),
        19 => five_fields(CRONER).prop_filter("croner ORs star-prefixed day fields", |t| croner_agrees(t)),
    ]
}

fn croner_parser() -> croner::parser::CronParser {
    croner::parser::CronParser::builder()
        .sloppy_ranges(true)
        .build()
}

/// The day-of-month extensions, or a plain field.
fn day_of_month_rule() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just("*".to_string()),
        2 => Just("L".to_string()),
        1 => (1u32..=30).prop_map(|n| format!("L-{n}")),
        1 => Just("LW".to_string()),
        2 => (1u32..=31).prop_map(|n| format!("{n}W")),
        // near the end of the month, where months differ
        3 => (28u32..=31).prop_map(|n| format!("{n}W")),
        2 => field(DAY_OF_MONTH, CRONER, 0),
    ]
}

/// The day-of-week extensions (weekday 0-7 or a name), or a plain field.
fn day_of_week_rule() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just("*".to_string()),
        3 => (0u32..=7, 0u8..6, 1u32..=5)
            .prop_map(|(d, style, n)| format!("{}#{n}", render(DAY_OF_WEEK, d, style))),
        3 => (0u32..=7, 0u8..6).prop_map(|(d, style)| format!("{}L", render(DAY_OF_WEEK, d, style))),
        2 => field(DAY_OF_WEEK, CRONER, 0),
    ]
}

fn is_extension(field: &str) -> bool {
    field.contains(['L', 'W', '#'])
}

/// Expressions with at least one `L`, `L-n`, `LW`, `nW`, `d#n` or `dL`, in short and long months
/// (plain fields in the dialect croner shares).
fn extension_expression() -> impl Strategy<Value = String> {
    (
        field(MINUTE, CRONER, 3),
        prop::sample::select(vec!["0", "12", "*/6", "9-17", "*"]).prop_map(str::to_string),
        day_of_month_rule(),
        prop_oneof![
            2 => field(MONTH, CRONER, 3),
            // only months shorter than 31 days
            1 => prop::sample::select(vec!["2", "FEB", "4", "6,9", "9,11", "2,4", "Feb,Apr,Jun,Sep,Nov"])
                .prop_map(str::to_string),
        ],
        day_of_week_rule(),
        proptest::collection::vec(separator(), 6),
    )
        .prop_filter("no extension", |(_, _, dom, _, dow, _)| {
            is_extension(dom) || is_extension(dow)
        })
        .prop_map(|(mi, h, dom, mo, dow, seps)| layout([mi, h, dom, mo, dow], seps))
}

/// 2000-01-01T00:00:00Z ..= 2040-12-31T23:59:59Z, seconds included so that starts are not
/// always on a minute.
fn start_instant() -> impl Strategy<Value = DateTime<Utc>> {
    (946_684_800i64..2_240_611_200i64)
        .prop_map(|s| DateTime::from_timestamp(s, 0).expect("in range"))
}

// ---------------------------------------------------------------------------------------------
// The checks.
// ---------------------------------------------------------------------------------------------

/// How far the day-by-day scan looks: 29 February on one weekday can be 28 years apart.
const SCAN_YEARS: i32 = 30;

/// Up to this many successive instants are compared per case.
const CHAIN: usize = 3;

fn compile(text: &str, tz: Tz) -> Result<CronExpr, TestCaseError> {
    CronExpr::parse(text, tz)
        .map_err(|e| TestCaseError::fail(format!("{text:?} was rejected: {e}")))
}

/// Compares `CHAIN` successive `next_after` results in UTC with the scan. Returns the instants.
fn check_against_scan(
    text: &str,
    start: DateTime<Utc>,
) -> Result<Vec<DateTime<Utc>>, TestCaseError> {
    let spec = Spec::parse(text);
    let last_day = start
        .date_naive()
        .with_year(start.year() + SCAN_YEARS)
        .unwrap_or(NaiveDate::MAX);
    let first = spec.next_after(start.naive_utc(), last_day);
    if first.is_none() && spec.never_fires() {
        prop_assert_eq!(
            CronExpr::parse(text, chrono_tz::UTC).map(|_| ()),
            Err(CronError::NeverFires),
            "{:?} never fires",
            text
        );
        return Ok(Vec::new());
    }
    let expr = compile(text, chrono_tz::UTC)?;
    let mut after = start;
    let mut seen = Vec::new();
    for _ in 0..CHAIN {
        let got = expr.next_after(after);
        let want = spec
            .next_after(after.naive_utc(), last_day)
            .map(|t| t.and_utc());
        let Some(got) = got else {
            prop_assert!(
                want.is_none(),
                "{text:?} after {after}: cronq None, oracle {want:?}"
            );
            break;
        };
        prop_assert!(got > after, "{text:?}: {got} is not after {after}");
        prop_assert!(
            spec.matches(got.naive_utc()),
            "{text:?} after {after}: {got} does not match"
        );
        match want {
            Some(want) => {
                prop_assert!(
                    want >= got,
                    "{text:?} after {after}: cronq skipped {want} and returned {got}"
                );
                prop_assert_eq!(got, want, "{:?} after {}", text, after);
            }
            None => prop_assert!(
                got.date_naive() > last_day,
                "{text:?} after {after}: {got} but nothing matches before {last_day}"
            ),
        }
        seen.push(got);
        after = got;
    }
    Ok(seen)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn next_after_in_utc_matches_a_brute_force_scan(text in expression(), start in start_instant()) {
        let seen = check_against_scan(&text, start)?;
        // "Etc/UTC" is a different Tz value, so it takes the zone path (tz.rs) with offset 0:
        // it must not change anything.
        if let Some(&first) = seen.first() {
            let etc = compile(&text, chrono_tz::Etc::UTC)?;
            prop_assert_eq!(etc.next_after(start), Some(first), "{:?} in Etc/UTC", text);
        }
    }

    #[test]
    fn next_after_in_utc_matches_croner(text in croner_expression(), start in start_instant()) {
        check_against_scan(&text, start)?;
        let Ok(expr) = CronExpr::parse(&text, chrono_tz::UTC) else {
            // never fires (checked above); croner would search to its year limit
            return Ok(());
        };
        let reference = croner_parser()
            .parse(&text)
            .map_err(|e| TestCaseError::fail(format!("croner rejected {text:?}: {e}")))?;
        check_against_croner(&text, &expr, &reference, start)?;
    }

    #[test]
    fn extensions_in_utc_match_a_brute_force_scan_and_croner(
        text in extension_expression(),
        start in start_instant(),
    ) {
        check_against_scan(&text, start)?;
        let Ok(expr) = CronExpr::parse(&text, chrono_tz::UTC) else {
            return Ok(());
        };
        // croner has no `L-n`; it reads the others as cron(8) extensions do (checked in its
        // pattern.rs: `nW` never leaves the month and does not fire in a month without day n).
        if croner_agrees(&text) && !text.contains("L-") {
            let reference = croner_parser()
                .parse(&text)
                .map_err(|e| TestCaseError::fail(format!("croner rejected {text:?}: {e}")))?;
            check_against_croner(&text, &expr, &reference, start)?;
        }
    }
}

fn check_against_croner(
    text: &str,
    expr: &CronExpr,
    reference: &croner::Cron,
    start: DateTime<Utc>,
) -> Result<(), TestCaseError> {
    let mut after = start;
    for _ in 0..CHAIN {
        let want = reference.find_next_occurrence(&after, false).ok();
        let got = expr.next_after(after);
        prop_assert_eq!(got, want, "{:?} after {} (croner)", text, after);
        match got {
            Some(t) => after = t,
            None => break,
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Time zones: random expressions around real DST transitions.
// ---------------------------------------------------------------------------------------------

/// Successive instants compared per case around a transition: enough to walk through it.
const ZONE_CHAIN: usize = 8;

const ZONES: [Tz; 5] = [
    chrono_tz::Europe::Berlin,
    chrono_tz::America::New_York,
    chrono_tz::Australia::Sydney,
    chrono_tz::Australia::Lord_Howe,
    // Clocks change at midnight, so a gap or a repeat straddles the date.
    chrono_tz::America::Santiago,
];

fn utc_offset(tz: Tz, at: DateTime<Utc>) -> i32 {
    tz.offset_from_utc_datetime(&at.naive_utc())
        .fix()
        .local_minus_utc()
}

/// Every offset change of `ZONES[i]` from 2000 to 2040, to the minute, from the tz database.
fn transitions() -> &'static [Vec<DateTime<Utc>>; 5] {
    static ALL: OnceLock<[Vec<DateTime<Utc>>; 5]> = OnceLock::new();
    ALL.get_or_init(|| {
        ZONES.map(|tz| {
            let step = Duration::hours(6);
            let end = Utc.with_ymd_and_hms(2041, 1, 1, 0, 0, 0).unwrap();
            let mut t = Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap();
            let mut found = Vec::new();
            while t < end {
                if utc_offset(tz, t) != utc_offset(tz, t + step) {
                    let mut m = t;
                    while utc_offset(tz, m) == utc_offset(tz, t) {
                        m += Duration::minutes(1);
                    }
                    found.push(m);
                }
                t += step;
            }
            found
        })
    })
}

/// Minute and hour fields that put jobs near the small hours where clocks change, plus some
/// general ones; the day fields mostly fire daily so the short scan sees firings.
fn zone_expression() -> impl Strategy<Value = String> {
    let minute = prop_oneof![
        3 => prop::sample::select(vec!["0", "30", "45", "15,45", "0-59/20", "*/15", "*", "10-40", "5/20", "*/10"])
            .prop_map(str::to_string),
        1 => field(MINUTE, FULL, 1),
    ];
    let hour = prop_oneof![
        3 => prop::sample::select(vec!["1", "2", "3", "1-3", "2,3", "*", "*/2", "0-4", "1,2", "0", "23", "0-5/2", "1-23/2", "22-23"])
            .prop_map(str::to_string),
        1 => field(HOUR, FULL, 1),
    ];
    (
        minute,
        hour,
        field(DAY_OF_MONTH, FULL, 30),
        field(MONTH, FULL, 30),
        field(DAY_OF_WEEK, FULL, 30),
        proptest::collection::vec(separator(), 6),
    )
        .prop_map(|(mi, h, dom, mo, dow, seps)| layout([mi, h, dom, mo, dow], seps))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn next_after_around_dst_transitions_matches_a_real_time_walk(
        text in zone_expression(),
        zone in 0usize..ZONES.len(),
        pick in any::<prop::sample::Index>(),
        shift_minutes in -8 * 60i64..3 * 60,
        seconds in 0i64..60,
    ) {
        let spec = Spec::parse(&text);
        let tz = ZONES[zone];
        let Ok(expr) = CronExpr::parse(&text, tz) else {
            prop_assert!(spec.never_fires(), "{text:?} was rejected");
            return Ok(());
        };
        let transition = *pick.get(&transitions()[zone]);
        let start = transition + Duration::minutes(shift_minutes) + Duration::seconds(seconds);
        let until = start + Duration::days(2);
        let mut after = start;
        for _ in 0..ZONE_CHAIN {
            let want = zone_oracle(&spec, tz, after, until);
            let got = expr.next_after(after);
            match want {
                Some(want) => prop_assert_eq!(got, Some(want), "{:?} in {} after {}", text, tz, after),
                None => {
                    prop_assert!(got.is_none_or(|g| g > until), "{text:?} in {tz} after {after}: cronq {got:?}, nothing fires until {until}");
                    break;
                }
            }
            after = want.expect("compared above");
        }
    }
}

/// The transition table the zone property draws from must really be the DST changes (two a year in
/// each zone, 2008 onwards at least), or the property would test nothing interesting.
#[test]
fn the_transition_table_holds_two_changes_a_year() {
    for (tz, found) in ZONES.iter().zip(transitions()) {
        let in_2026 = found.iter().filter(|t| t.year() == 2026).count();
        assert_eq!(in_2026, 2, "{tz}: {found:?}");
        assert!(
            found.len() >= 2 * 33,
            "{tz}: only {} transitions",
            found.len()
        );
    }
}

/// croner really is independent and really disagrees where `croner_agrees` says: if this ever
/// stops failing to agree, the exclusion is stale.
#[test]
fn croner_ors_a_star_prefixed_day_field_where_cron8_ands() {
    // `*/2` day-of-month is 1,3,…,31. With Monday, cron(8) needs an odd day that is a Monday.
    // 2026-11-27 is a Friday; Sunday 29 is odd; Monday 30 is even; Monday 7 December is odd.
    let text = "0 0 */2 * 1";
    let after = Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap();
    let croner_next = croner::Cron::from_str(text)
        .unwrap()
        .find_next_occurrence(&after, false)
        .unwrap();
    // croner ORs: Sunday the 29th is odd.
    assert_eq!(
        croner_next,
        Utc.with_ymd_and_hms(2026, 11, 29, 0, 0, 0).unwrap()
    );
    // cron(8): odd AND Monday: Nov 30 is even; Dec 7 is odd and a Monday.
    let cronq_next = CronExpr::parse(text, chrono_tz::UTC)
        .unwrap()
        .next_after(after);
    assert_eq!(
        cronq_next,
        Some(Utc.with_ymd_and_hms(2026, 12, 7, 0, 0, 0).unwrap())
    );
}
