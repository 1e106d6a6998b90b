//! Exhaustive tables of what standard cron means, pinned through `next_after` on real calendar
//! dates (never through the saffron text cronq produces), and the full text of every error.
//!
//! Calendar facts used below (Gregorian, checked by hand):
//! - November 2026 starts on a Sunday: Sun 1, 8, 15, 22, 29; Fri 6, 13, 20, 27; Mon 30.
//! - December 2026 starts on a Tuesday; January 2027 on a Friday; February 2027 on a Monday
//!   (28 days, the 28th a Sunday); February 2028 has 29 days (the 29th a Tuesday).
//! - August 2026 starts on a Saturday; May 31 2026 and January 31 2027 are Sundays; October 31
//!   2026 is a Saturday.

use chrono::{DateTime, TimeZone, Utc};
use cronq::cron::{CronError, CronExpr};

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

fn compile(expr: &str) -> CronExpr {
    CronExpr::parse(expr, chrono_tz::UTC).unwrap_or_else(|e| panic!("{expr:?}: {e}"))
}

/// The next `n` firings after `after`, as `YYYY-MM-DD HH:MM`.
fn firings(expr: &str, after: DateTime<Utc>, n: usize) -> Vec<String> {
    let compiled = compile(expr);
    let mut out = Vec::new();
    let mut cursor = after;
    for _ in 0..n {
        let Some(t) = compiled.next_after(cursor) else {
            break;
        };
        out.push(t.format("%Y-%m-%d %H:%M").to_string());
        cursor = t;
    }
    out
}

/// The next `n` firing dates after `after`, as `YYYY-MM-DD`.
fn dates(expr: &str, after: DateTime<Utc>, n: usize) -> Vec<String> {
    firings(expr, after, n)
        .into_iter()
        .map(|f| f[..10].to_string())
        .collect()
}

/// The days of the week of Sunday 22 - Saturday 28 November 2026 on which `0 12 * * <field>`
/// fires, as day-of-month numbers.
fn days_in_the_week_of_22_november(weekday_field: &str) -> Vec<u32> {
    let compiled = compile(&format!("0 12 * * {weekday_field}"));
    let mut out = Vec::new();
    let mut cursor = at(2026, 11, 22, 0, 0);
    while let Some(t) = compiled.next_after(cursor) {
        if t >= at(2026, 11, 29, 0, 0) {
            break;
        }
        out.push(t.format("%d").to_string().parse().unwrap());
        cursor = t;
    }
    out
}

fn error(expr: &str) -> String {
    CronExpr::parse(expr, chrono_tz::UTC)
        .map(|e| format!("accepted: {e:?}"))
        .unwrap_or_else(|e| e.to_string())
}

// ---------------------------------------------------------------------------------------------
// Day of week
// ---------------------------------------------------------------------------------------------

#[test]
fn every_weekday_number_0_to_7_fires_on_its_day_and_7_is_sunday() {
    // from Sunday 22 November 2026, two weeks
    let table: [(u32, [&str; 2]); 8] = [
        (0, ["2026-11-22", "2026-11-29"]), // Sunday
        (1, ["2026-11-23", "2026-11-30"]), // Monday
        (2, ["2026-11-24", "2026-12-01"]),
        (3, ["2026-11-25", "2026-12-02"]),
        (4, ["2026-11-26", "2026-12-03"]),
        (5, ["2026-11-27", "2026-12-04"]), // Friday
        (6, ["2026-11-28", "2026-12-05"]), // Saturday
        (7, ["2026-11-22", "2026-11-29"]), // Sunday again
    ];
    for (number, want) in table {
        assert_eq!(
            dates(&format!("0 12 * * {number}"), at(2026, 11, 22, 0, 0), 2),
            want,
            "day-of-week {number}"
        );
    }
}

#[test]
fn weekday_names_in_any_case_mean_their_numbers() {
    let names = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
    for (number, name) in names.iter().enumerate() {
        let day = 22 + number as u32;
        let capitalised = format!("{}{}", &name[..1], name[1..].to_lowercase());
        for spelling in [name.to_string(), name.to_lowercase(), capitalised] {
            assert_eq!(
                days_in_the_week_of_22_november(&spelling),
                vec![day],
                "{spelling}"
            );
        }
    }
}

#[test]
fn weekday_ranges_lists_and_steps() {
    // Sun 22, Mon 23, Tue 24, Wed 25, Thu 26, Fri 27, Sat 28
    let table: &[(&str, &[u32])] = &[
        ("1-5", &[23, 24, 25, 26, 27]),
        ("MON-FRI", &[23, 24, 25, 26, 27]),
        ("mon-fri", &[23, 24, 25, 26, 27]),
        ("Mon-Fri", &[23, 24, 25, 26, 27]),
        ("0-6", &[22, 23, 24, 25, 26, 27, 28]),
        ("0-7", &[22, 23, 24, 25, 26, 27, 28]),
        ("SUN-SAT", &[22, 23, 24, 25, 26, 27, 28]),
        ("5-7", &[22, 27, 28]),
        ("FRI-7", &[22, 27, 28]),
        ("6,7", &[22, 28]),
        ("0,7", &[22]),
        ("SAT,SUN", &[22, 28]),
        ("6-7", &[22, 28]),
        ("SUN-SUN", &[22]),
        ("TUE-THU,SAT", &[24, 25, 26, 28]),
        ("1,3-4,FRI", &[23, 25, 26, 27]),
        // `*` is 0-7, so `*/n` counts from Sunday = 0
        ("*/2", &[22, 24, 26, 28]),
        ("*/3", &[22, 25, 28]),
        ("*/7", &[22]),
        ("*/1", &[22, 23, 24, 25, 26, 27, 28]),
        ("1-7/2", &[22, 23, 25, 27]),
        ("0-6/3", &[22, 25, 28]),
        ("MON-FRI/2", &[23, 25, 27]),
        // `a/n` is `a-7/n`
        ("3/2", &[22, 25, 27]),
        ("MON/2", &[22, 23, 25, 27]),
        ("6/1", &[22, 28]),
    ];
    for (field, days) in table {
        assert_eq!(
            days_in_the_week_of_22_november(field),
            days.to_vec(),
            "day-of-week {field:?}"
        );
    }
}

/// SUN is 0, so a range ending on Sunday by name runs backwards: cronq rejects it rather than
/// guessing; `SAT,SUN`, `SAT-7` or `6-7` say "the weekend".
#[test]
fn a_range_ending_on_sunday_by_name_is_reversed() {
    assert_eq!(
        error("0 12 * * SAT-SUN"),
        r#"day-of-week: range "SAT-SUN" is reversed: the start must not be after the end"#
    );
    assert_eq!(
        error("0 12 * * FRI-SUN"),
        r#"day-of-week: range "FRI-SUN" is reversed: the start must not be after the end"#
    );
    assert_eq!(
        error("0 12 * * 6-0"),
        r#"day-of-week: range "6-0" is reversed: the start must not be after the end"#
    );
    assert_eq!(days_in_the_week_of_22_november("SAT-7"), vec![22, 28]);
}

#[test]
fn nth_weekday_of_the_month() {
    let after = at(2026, 10, 31, 0, 0);
    let table: &[(&str, [&str; 3])] = &[
        ("5#3", ["2026-11-20", "2026-12-18", "2027-01-15"]),
        ("FRI#3", ["2026-11-20", "2026-12-18", "2027-01-15"]),
        ("fri#3", ["2026-11-20", "2026-12-18", "2027-01-15"]),
        ("1#1", ["2026-11-02", "2026-12-07", "2027-01-04"]),
        ("0#1", ["2026-11-01", "2026-12-06", "2027-01-03"]),
        ("7#1", ["2026-11-01", "2026-12-06", "2027-01-03"]),
        ("SUN#1", ["2026-11-01", "2026-12-06", "2027-01-03"]),
        // a 5th Sunday only in months that have one
        ("0#5", ["2026-11-29", "2027-01-31", "2027-05-30"]),
        ("7#5", ["2026-11-29", "2027-01-31", "2027-05-30"]),
    ];
    for (field, want) in table {
        assert_eq!(
            dates(&format!("0 9 * * {field}"), after, 3),
            want.to_vec(),
            "day-of-week {field:?}"
        );
    }
}

#[test]
fn last_weekday_of_the_month() {
    let after = at(2026, 11, 1, 0, 0);
    let table: &[(&str, &[&str])] = &[
        (
            "5L",
            &["2026-11-27", "2026-12-25", "2027-01-29", "2027-02-26"],
        ),
        (
            "FRIL",
            &["2026-11-27", "2026-12-25", "2027-01-29", "2027-02-26"],
        ),
        ("0L", &["2026-11-29", "2026-12-27", "2027-01-31"]),
        ("7L", &["2026-11-29", "2026-12-27", "2027-01-31"]),
        ("SUNL", &["2026-11-29", "2026-12-27", "2027-01-31"]),
    ];
    for (field, want) in table {
        assert_eq!(
            dates(&format!("0 9 * * {field}"), after, want.len()),
            want.to_vec(),
            "day-of-week {field:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Day of month
// ---------------------------------------------------------------------------------------------

#[test]
fn last_day_of_the_month_follows_month_lengths_and_leap_years() {
    assert_eq!(
        dates("0 0 L * *", at(2026, 11, 1, 0, 0), 4),
        ["2026-11-30", "2026-12-31", "2027-01-31", "2027-02-28"]
    );
    assert_eq!(
        dates("0 0 L 2 *", at(2027, 1, 1, 0, 0), 3),
        ["2027-02-28", "2028-02-29", "2029-02-28"]
    );
    assert_eq!(
        dates("0 0 L-3 * *", at(2026, 11, 1, 0, 0), 4),
        ["2026-11-27", "2026-12-28", "2027-01-28", "2027-02-25"]
    );
    // L-28 in February is the 1st of a leap February only
    assert_eq!(
        dates("0 0 L-28 2 *", at(2026, 1, 1, 0, 0), 2),
        ["2028-02-01", "2032-02-01"]
    );
}

#[test]
fn last_working_day_of_the_month() {
    // Oct 31 2026 is a Saturday, Jan 31 2027 and Feb 28 2027 are Sundays
    assert_eq!(
        dates("0 0 LW * *", at(2026, 10, 1, 0, 0), 5),
        [
            "2026-10-30",
            "2026-11-30",
            "2026-12-31",
            "2027-01-29",
            "2027-02-26"
        ]
    );
}

#[test]
fn nearest_working_day_never_leaves_the_month() {
    // the 15th: Saturday 15 Aug → Friday 14; Sunday 15 Nov → Monday 16; Tuesday 15 Dec stays
    assert_eq!(
        dates("0 0 15W 8,11,12 *", at(2026, 8, 1, 0, 0), 3),
        ["2026-08-14", "2026-11-16", "2026-12-15"]
    );
    // the 1st: Saturday 1 Aug → Monday 3 (not Friday 31 July); Sunday 1 Nov → Monday 2
    assert_eq!(
        dates("0 0 1W 8,11,12 *", at(2026, 7, 1, 0, 0), 3),
        ["2026-08-03", "2026-11-02", "2026-12-01"]
    );
    // the 31st: Sunday 31 May → Friday 29 (not Monday 1 June); Saturday 31 Oct → Friday 30;
    // months without a 31st are skipped
    assert_eq!(
        dates("0 0 31W * *", at(2026, 5, 1, 0, 0), 5),
        [
            "2026-05-29",
            "2026-07-31",
            "2026-08-31",
            "2026-10-30",
            "2026-12-31"
        ]
    );
    // the 29th of February exists in leap years only: Tuesday 29 Feb 2028; Sunday 29 Feb 2032 is
    // the last day, so Friday 27
    assert_eq!(
        dates("0 0 29W 2 *", at(2026, 1, 1, 0, 0), 2),
        ["2028-02-29", "2032-02-27"]
    );
}

#[test]
fn nearest_working_day_of_a_day_a_month_lacks_is_no_day_at_all() {
    // April has no 31st: not Friday 30 April (2027-04-30 is a Friday)
    assert_eq!(
        dates("0 0 31W 4,5 *", at(2027, 4, 1, 0, 0), 1),
        ["2027-05-31"]
    );
    // ORed with a weekday, only the weekday fires in such a month: Mondays of April 2027
    assert_eq!(
        dates("0 0 31W 4 1", at(2027, 4, 1, 0, 0), 4),
        ["2027-04-05", "2027-04-12", "2027-04-19", "2027-04-26"]
    );
    assert_eq!(error("0 0 31W 4 *"), NEVER_FIRES);
    assert_eq!(error("0 0 30W 2 *"), NEVER_FIRES);
    assert_eq!(error("0 0 31W 2,4,6,9,11 *"), NEVER_FIRES);
}

// ---------------------------------------------------------------------------------------------
// cron(8)'s day rule: a day field is restricted iff it does not start with `*`
// ---------------------------------------------------------------------------------------------

#[test]
fn both_day_fields_restricted_means_either() {
    // the 13th OR a Friday
    assert_eq!(
        dates("0 0 13 * 5", at(2026, 11, 1, 0, 0), 7),
        [
            "2026-11-06",
            "2026-11-13",
            "2026-11-20",
            "2026-11-27",
            "2026-12-04",
            "2026-12-11",
            "2026-12-13"
        ]
    );
    // the classic surprise: days 1-7 OR any Monday, not "the first Monday"
    assert_eq!(
        dates("0 0 1-7 * 1", at(2026, 11, 5, 0, 0), 5),
        [
            "2026-11-06",
            "2026-11-07",
            "2026-11-09",
            "2026-11-16",
            "2026-11-23"
        ]
    );
    // 1-31 is every day, but it does not start with `*`: restricted, so still OR
    assert_eq!(
        dates("0 0 1-31 * 5", at(2026, 11, 1, 0, 0), 3),
        ["2026-11-02", "2026-11-03", "2026-11-04"]
    );
}

#[test]
fn a_day_field_starting_with_star_means_both() {
    // {1,14,27} AND Friday
    assert_eq!(
        dates("0 0 */13 * 5", at(2026, 11, 1, 0, 0), 3),
        ["2026-11-27", "2027-01-01", "2027-05-14"]
    );
    // the 13th AND (Sunday or Friday): `*/5` is 0,5
    assert_eq!(
        dates("0 0 13 * */5", at(2026, 11, 1, 0, 0), 4),
        ["2026-11-13", "2026-12-13", "2027-06-13", "2027-08-13"]
    );
    // days 1-7 AND Sunday (`*/7` is 0,7): the first Sunday
    assert_eq!(
        dates("0 0 1-7 * */7", at(2026, 11, 2, 0, 0), 3),
        ["2026-12-06", "2027-01-03", "2027-02-07"]
    );
    // `*,13` starts with `*`: every day AND Friday
    assert_eq!(
        dates("0 0 *,13 * 5", at(2026, 11, 1, 0, 0), 2),
        ["2026-11-06", "2026-11-13"]
    );
    // plain `*` on one side: only the other field counts
    assert_eq!(
        dates("0 0 * * 5", at(2026, 11, 1, 0, 0), 2),
        ["2026-11-06", "2026-11-13"]
    );
    assert_eq!(
        dates("0 0 13 * *", at(2026, 11, 1, 0, 0), 2),
        ["2026-11-13", "2026-12-13"]
    );
    // an extension next to a star-prefixed field: the last Friday AND an odd day (last Fridays:
    // 27 Nov, 25 Dec, 29 Jan, 26 Feb, 26 Mar)
    assert_eq!(
        dates("0 0 */2 * 5L", at(2026, 11, 1, 0, 0), 3),
        ["2026-11-27", "2026-12-25", "2027-01-29"]
    );
    // the last day AND a Sunday/Tuesday/Thursday/Saturday
    assert_eq!(
        dates("0 0 L * */2", at(2026, 11, 1, 0, 0), 3),
        ["2026-12-31", "2027-01-31", "2027-02-28"]
    );
}

// ---------------------------------------------------------------------------------------------
// Minutes, hours, months, macros, whitespace
// ---------------------------------------------------------------------------------------------

#[test]
fn minute_and_hour_steps_and_ranges() {
    let after = at(2026, 11, 27, 10, 0);
    assert_eq!(
        firings("5/20 * * * *", after, 4),
        [
            "2026-11-27 10:05",
            "2026-11-27 10:25",
            "2026-11-27 10:45",
            "2026-11-27 11:05"
        ]
    );
    assert_eq!(
        firings("*/25 * * * *", after, 3),
        ["2026-11-27 10:25", "2026-11-27 10:50", "2026-11-27 11:00"]
    );
    assert_eq!(
        firings("10-30/10 * * * *", after, 4),
        [
            "2026-11-27 10:10",
            "2026-11-27 10:20",
            "2026-11-27 10:30",
            "2026-11-27 11:10"
        ]
    );
    assert_eq!(
        firings("0 */5 * * *", after, 3),
        ["2026-11-27 15:00", "2026-11-27 20:00", "2026-11-28 00:00"]
    );
    assert_eq!(firings("59 23 * * *", after, 1), ["2026-11-27 23:59"]);
}

#[test]
fn month_names_numbers_and_steps() {
    let after = at(2026, 11, 27, 0, 0);
    let quarterly = ["2027-01-01", "2027-04-01", "2027-07-01", "2027-10-01"];
    for field in [
        "*/3",
        "1-12/3",
        "1,4,7,10",
        "JAN,apr,Jul,OCT",
        "jan/3",
        "JAN-DEC/3",
    ] {
        assert_eq!(
            dates(&format!("0 0 1 {field} *"), after, 4),
            quarterly,
            "month {field:?}"
        );
    }
}

#[test]
fn macros_mean_their_five_fields() {
    let friday = at(2026, 11, 27, 10, 30);
    let table: &[(&str, &str)] = &[
        ("@yearly", "2027-01-01 00:00"),
        ("@annually", "2027-01-01 00:00"),
        ("@monthly", "2026-12-01 00:00"),
        ("@weekly", "2026-11-29 00:00"),
        ("@daily", "2026-11-28 00:00"),
        ("@midnight", "2026-11-28 00:00"),
        ("@hourly", "2026-11-27 11:00"),
        // cronq also takes them in capitals
        ("@DAILY", "2026-11-28 00:00"),
    ];
    for (name, next) in table {
        assert_eq!(firings(name, friday, 1), [*next], "{name}");
    }
    // @weekly is weekly
    assert_eq!(
        dates("@weekly", friday, 3),
        ["2026-11-29", "2026-12-06", "2026-12-13"]
    );
}

#[test]
fn whitespace_around_and_between_fields_does_not_matter() {
    let after = at(2026, 11, 27, 12, 0);
    let want = firings("0 12 * * MON-FRI", after, 2);
    assert_eq!(want, ["2026-11-30 12:00", "2026-12-01 12:00"]);
    for spelled in [
        "  0 12 * * MON-FRI",
        "0 12 * * MON-FRI \t",
        "0\t12\t*\t*\tMON-FRI",
        "0   12 *  * \t MON-FRI",
        " @hourly ",
    ] {
        if spelled.contains('@') {
            assert_eq!(firings(spelled, after, 1), ["2026-11-27 13:00"]);
        } else {
            assert_eq!(firings(spelled, after, 2), want, "{spelled:?}");
        }
    }
}

#[test]
fn next_after_is_strictly_after_and_on_whole_minutes() {
    let every_minute = compile("* * * * *");
    // exactly on a firing: the next one
    assert_eq!(
        every_minute.next_after(at(2026, 11, 27, 12, 0)),
        Some(at(2026, 11, 27, 12, 1))
    );
    // half a minute past: the next whole minute
    let half_past = at(2026, 11, 27, 12, 0) + chrono::Duration::seconds(30);
    assert_eq!(
        every_minute.next_after(half_past),
        Some(at(2026, 11, 27, 12, 1))
    );
    // a second before a firing: that firing
    let just_before = at(2026, 11, 27, 12, 0) - chrono::Duration::seconds(1);
    assert_eq!(
        compile("0 12 * * *").next_after(just_before),
        Some(at(2026, 11, 27, 12, 0))
    );
    // across the end of a year
    assert_eq!(
        compile("0 0 1 1 *").next_after(at(2026, 12, 31, 23, 59)),
        Some(at(2027, 1, 1, 0, 0))
    );
}

// ---------------------------------------------------------------------------------------------
// Errors: the full text of every message
// ---------------------------------------------------------------------------------------------

const NEVER_FIRES: &str =
    "the expression can never fire: the days it selects never occur in the months it selects";

#[test]
fn every_syntax_error_message() {
    let five = "expected 5 fields (minute hour day-of-month month day-of-week)";
    let table: &[(&str, String)] = &[
        // Empty
        ("", format!("the expression is empty; {five} or a macro like @daily")),
        (" \t ", format!("the expression is empty; {five} or a macro like @daily")),
        // FieldCount
        ("*", format!("{five}, found 1")),
        ("* * * *", format!("{five}, found 4")),
        ("* * * * * *", format!("{five}, found 6")),
        // UnknownMacro
        (
            "@reboot",
            r#"unknown macro "@reboot": expected one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly"#.to_string(),
        ),
        (
            "@every 5m",
            r#"unknown macro "@every 5m": expected one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly"#.to_string(),
        ),
        // Expected, in every field
        ("x * * * *", r#"minute: expected a number 0-59, found "x""#.to_string()),
        ("-5 * * * *", r#"minute: expected a number 0-59, found "-5""#.to_string()),
        ("1,x * * * *", r#"minute: expected a number 0-59, found "x""#.to_string()),
        ("* 1.5 * * *", r#"hour: expected a number 0-23, found "1.5""#.to_string()),
        (
            "* * ? * *",
            r#"day-of-month: expected a number 1-31 (or L, LW, L-n, nW), found "?""#.to_string(),
        ),
        (
            "* * W * *",
            r#"day-of-month: expected a number 1-31 (or L, LW, L-n, nW), found "W""#.to_string(),
        ),
        (
            "* * * FOO *",
            r#"month: expected a number 1-12 or a name JAN-DEC, found "FOO""#.to_string(),
        ),
        (
            "* * * JANUARY *",
            r#"month: expected a number 1-12 or a name JAN-DEC, found "JANUARY""#.to_string(),
        ),
        (
            "* * * * MONDAY",
            r#"day-of-week: expected a number 0-7 or a name SUN-SAT, found "MONDAY""#.to_string(),
        ),
        (
            "0 12 * * MON-",
            r#"day-of-week: expected a number 0-7 or a name SUN-SAT, found "MON-""#.to_string(),
        ),
        (
            "* * * * L",
            r#"day-of-week: expected a number 0-7 or a name SUN-SAT, found "L""#.to_string(),
        ),
        (
            "*/x * * * *",
            r#"minute: expected a number 0-59, found "*/x""#.to_string(),
        ),
        // OutOfRange, in every field, at both ends
        ("60 * * * *", "minute: 60 is out of range 0-59".to_string()),
        ("0-60 * * * *", "minute: 60 is out of range 0-59".to_string()),
        ("99999999999 * * * *", "minute: 99999999999 is out of range 0-59".to_string()),
        ("* 24 * * *", "hour: 24 is out of range 0-23".to_string()),
        ("* * 0 * *", "day-of-month: 0 is out of range 1-31".to_string()),
        ("* * 32 * *", "day-of-month: 32 is out of range 1-31".to_string()),
        ("* * 32W * *", "day-of-month: 32 is out of range 1-31".to_string()),
        ("* * L-31 * *", "day-of-month: 31 is out of range 1-30".to_string()),
        ("* * L-0 * *", "day-of-month: 0 is out of range 1-30".to_string()),
        ("* * * 0 *", "month: 0 is out of range 1-12".to_string()),
        ("* * * 13 *", "month: 13 is out of range 1-12".to_string()),
        ("* * * * 8", "day-of-week: 8 is out of range 0-7".to_string()),
        ("* * * * 8#2", "day-of-week: 8 is out of range 0-7".to_string()),
        // ReversedRange
        (
            "* 5-1 * * *",
            r#"hour: range "5-1" is reversed: the start must not be after the end"#.to_string(),
        ),
        (
            "* * * DEC-JAN *",
            r#"month: range "DEC-JAN" is reversed: the start must not be after the end"#.to_string(),
        ),
        (
            "0 0 1 nov-feb/2 *",
            r#"month: range "nov-feb/2" is reversed: the start must not be after the end"#.to_string(),
        ),
        // ZeroStep
        ("*/0 * * * *", r#"minute: step must be at least 1, found "*/0""#.to_string()),
        ("* 1-5/0 * * *", r#"hour: step must be at least 1, found "1-5/0""#.to_string()),
        // EmptyItem
        ("1,,2 * * * *", r#"minute: empty list item in "1,,2""#.to_string()),
        ("* 1, * * *", r#"hour: empty list item in "1,""#.to_string()),
        ("* * * ,1 *", r#"month: empty list item in ",1""#.to_string()),
        // SpecialInList
        (
            "* * L,1 * *",
            r#"day-of-month: "L" cannot be combined with other values in a list"#.to_string(),
        ),
        (
            "* * 1,15W * *",
            r#"day-of-month: "15W" cannot be combined with other values in a list"#.to_string(),
        ),
        (
            "* * * * 5#3,1",
            r#"day-of-week: "5#3" cannot be combined with other values in a list"#.to_string(),
        ),
        // NthOutOfRange
        (
            "* * * * 5#6",
            r#"day-of-week: the week number in "5#6" must be 1-5"#.to_string(),
        ),
        (
            "* * * * FRI#0",
            r#"day-of-week: the week number in "FRI#0" must be 1-5"#.to_string(),
        ),
    ];
    for (expr, want) in table {
        assert_eq!(&error(expr), want, "{expr:?}");
    }
}

#[test]
fn never_fires_message() {
    for expr in [
        "0 0 31 2 *",
        "0 0 30 2 *",
        "0 0 30,31 2 *",
        "0 0 31 4,6,9,11 *",
        "0 0 L-29 2 *",
        // `*/2` starts with `*`: 31 February AND an even weekday
        "0 0 31 2 */2",
        // the last working day is never a Sunday
        "0 0 LW * */7",
    ] {
        assert_eq!(error(expr), NEVER_FIRES, "{expr:?}");
        assert_eq!(
            CronExpr::parse(expr, chrono_tz::UTC).map(|_| ()),
            Err(CronError::NeverFires)
        );
    }
    // ORed with a weekday, the impossible day does not matter: Mondays of February
    assert_eq!(
        dates("0 0 31 2 1", at(2027, 1, 1, 0, 0), 2),
        ["2027-02-01", "2027-02-08"]
    );
    // 29 February exists
    assert_eq!(
        dates("0 0 29 2 *", at(2026, 1, 1, 0, 0), 2),
        ["2028-02-29", "2032-02-29"]
    );
}

#[test]
fn unknown_zone_message() {
    let err = CronExpr::parse_in("0 0 * * *", "Mars/Olympus").unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"unknown time zone "Mars/Olympus": expected an IANA name such as "UTC" or "Europe/Berlin""#
    );
    assert_eq!(
        err,
        CronError::UnknownZone {
            name: "Mars/Olympus".to_string()
        }
    );
    // abbreviations are not zones; surrounding blanks are forgiven
    assert!(CronExpr::parse_in("0 0 * * *", "CEST").is_err());
    assert!(CronExpr::parse_in("0 0 * * *", "Europe/Berlin").is_ok());
    assert!(CronExpr::parse_in("0 0 * * *", " Europe/Berlin ").is_ok());
}
