//! Daylight-saving time, by hand: every expected instant below is computed from the zone's rules
//! for 2026, not from cronq.
//!
//! The rules under test (DESIGN.md "Time", src/cron/tz.rs):
//! - a local time in a gap fires once, at the first instant after the gap (several gap times of
//!   one job collapse into that one firing);
//! - in a repeated hour, a job whose minute and hour are fixed numbers fires only in the first
//!   copy; a job with `*` or a step in its minute or hour fires in both.
//!
//! The 2026 transitions (the first test checks them against the tz database):
//!
//! | zone               | spring forward (gap)                         | fall back (repeat)                             |
//! |--------------------|----------------------------------------------|------------------------------------------------|
//! | Europe/Berlin      | Sun 29 Mar 02:00 CET → 03:00 CEST = 01:00Z   | Sun 25 Oct 03:00 CEST → 02:00 CET = 01:00Z     |
//! | America/New_York   | Sun 8 Mar 02:00 EST → 03:00 EDT = 07:00Z     | Sun 1 Nov 02:00 EDT → 01:00 EST = 06:00Z       |
//! | Australia/Sydney   | Sun 4 Oct 02:00 AEST → 03:00 AEDT = 3 Oct 16:00Z | Sun 5 Apr 03:00 AEDT → 02:00 AEST = 4 Apr 16:00Z |
//! | Australia/Lord_Howe| Sun 4 Oct 02:00 +10:30 → 02:30 +11 = 3 Oct 15:30Z | Sun 5 Apr 02:00 +11 → 01:30 +10:30 = 4 Apr 15:00Z |

use chrono::{DateTime, Duration, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use cronq::cron::CronExpr;

use chrono_tz::America::New_York;
use chrono_tz::Australia::{Lord_Howe, Sydney};
use chrono_tz::Europe::Berlin;

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .with_timezone(&Utc)
}

/// The next `n` firings of `expr` on `tz`'s wall clock after `after`, as `YYYY-MM-DDTHH:MMZ`.
fn fires(expr: &str, tz: Tz, after: &str, n: usize) -> Vec<String> {
    let compiled = CronExpr::parse(expr, tz).unwrap_or_else(|e| panic!("{expr:?}: {e}"));
    let mut out = Vec::new();
    let mut cursor = utc(after);
    for _ in 0..n {
        let Some(t) = compiled.next_after(cursor) else {
            break;
        };
        out.push(t.format("%Y-%m-%dT%H:%MZ").to_string());
        cursor = t;
    }
    out
}

fn offset_minutes(tz: Tz, at: DateTime<Utc>) -> i32 {
    tz.offset_from_utc_datetime(&at.naive_utc())
        .fix()
        .local_minus_utc()
        / 60
}

#[test]
fn the_2026_transitions_are_where_the_rules_put_them() {
    let table = [
        (Berlin, "2026-03-29T01:00:00Z", 60, 120),
        (Berlin, "2026-10-25T01:00:00Z", 120, 60),
        (New_York, "2026-03-08T07:00:00Z", -300, -240),
        (New_York, "2026-11-01T06:00:00Z", -240, -300),
        (Sydney, "2026-10-03T16:00:00Z", 600, 660),
        (Sydney, "2026-04-04T16:00:00Z", 660, 600),
        (Lord_Howe, "2026-10-03T15:30:00Z", 630, 660),
        (Lord_Howe, "2026-04-04T15:00:00Z", 660, 630),
    ];
    for (tz, at, before, after) in table {
        let at = utc(at);
        assert_eq!(
            offset_minutes(tz, at - Duration::seconds(1)),
            before,
            "{tz} before {at}"
        );
        assert_eq!(offset_minutes(tz, at), after, "{tz} at {at}");
    }
}

// ---------------------------------------------------------------------------------------------
// Europe/Berlin
// ---------------------------------------------------------------------------------------------

#[test]
fn berlin_spring_fixed_job_in_the_gap_fires_once_at_three() {
    // 28 Mar 02:30 CET = 01:30Z; 29 Mar 02:30 does not exist → 03:00 CEST = 01:00Z;
    // 30 Mar 02:30 CEST = 00:30Z
    assert_eq!(
        fires("30 2 * * *", Berlin, "2026-03-27T12:00:00Z", 3),
        [
            "2026-03-28T01:30Z",
            "2026-03-29T01:00Z",
            "2026-03-30T00:30Z"
        ]
    );
    // two gap times of one job collapse into one firing
    assert_eq!(
        fires("0,30 2 * * *", Berlin, "2026-03-29T00:00:00Z", 3),
        [
            "2026-03-29T01:00Z",
            "2026-03-30T00:00Z",
            "2026-03-30T00:30Z"
        ]
    );
    // a job at 03:00 and the gap: one firing at 03:00 CEST
    assert_eq!(
        fires("0 3 * * *", Berlin, "2026-03-29T00:00:00Z", 1),
        ["2026-03-29T01:00Z"]
    );
}

#[test]
fn berlin_spring_wildcard_jobs_skip_nothing_and_double_nothing() {
    // 01:30 CET, 01:45 CET, then 02:00-02:45 are the gap, collapsing with 03:00 CEST = 01:00Z
    assert_eq!(
        fires("*/15 * * * *", Berlin, "2026-03-29T00:30:00Z", 3),
        [
            "2026-03-29T00:45Z",
            "2026-03-29T01:00Z",
            "2026-03-29T01:15Z"
        ]
    );
    // 01:30 CET = 00:30Z; 02:30 is in the gap → 03:00 CEST = 01:00Z; 03:30 CEST = 01:30Z.
    // This pins the rule as DESIGN.md states it (every job's gap times fire after the gap).
    // Debian's cron(8) differs here: wildcard jobs "are run based on the new time immediately",
    // so Debian would not run this job at 03:00.
    assert_eq!(
        fires("30 * * * *", Berlin, "2026-03-29T00:00:00Z", 3),
        [
            "2026-03-29T00:30Z",
            "2026-03-29T01:00Z",
            "2026-03-29T01:30Z"
        ]
    );
}

#[test]
fn berlin_fall_fixed_job_fires_in_the_first_copy_only() {
    // 25 Oct 02:30 CEST = 00:30Z (02:30 CET = 01:30Z is skipped); 26 Oct 02:30 CET = 01:30Z
    assert_eq!(
        fires("30 2 * * *", Berlin, "2026-10-24T12:00:00Z", 2),
        ["2026-10-25T00:30Z", "2026-10-26T01:30Z"]
    );
    // asked between the copies: the second copy is still not a firing
    assert_eq!(
        fires("30 2 * * *", Berlin, "2026-10-25T00:45:00Z", 1),
        ["2026-10-26T01:30Z"]
    );
    // an hour range is still fixed: 01:30 CEST, 02:30 CEST, (not 02:30 CET), 03:30 CET
    assert_eq!(
        fires("30 1-3 * * *", Berlin, "2026-10-24T23:00:00Z", 3),
        [
            "2026-10-24T23:30Z",
            "2026-10-25T00:30Z",
            "2026-10-25T02:30Z"
        ]
    );
}

#[test]
fn berlin_fall_wildcard_jobs_fire_in_both_copies() {
    // 01:30 CEST, 02:30 CEST, 02:30 CET, 03:30 CET
    assert_eq!(
        fires("30 * * * *", Berlin, "2026-10-24T23:00:00Z", 4),
        [
            "2026-10-24T23:30Z",
            "2026-10-25T00:30Z",
            "2026-10-25T01:30Z",
            "2026-10-25T02:30Z"
        ]
    );
    // 02:50 CEST → 02:00 CET, 02:15 CET
    assert_eq!(
        fires("*/15 * * * *", Berlin, "2026-10-25T00:50:00Z", 2),
        ["2026-10-25T01:00Z", "2026-10-25T01:15Z"]
    );
    // `*` minute with a fixed hour runs on real time through both 02:xx hours
    assert_eq!(
        fires("* 2 * * *", Berlin, "2026-10-25T00:58:00Z", 3),
        [
            "2026-10-25T00:59Z",
            "2026-10-25T01:00Z",
            "2026-10-25T01:01Z"
        ]
    );
    // a step in the hour: 02:30 in both copies, then 04:30 CET
    assert_eq!(
        fires("30 */2 * * *", Berlin, "2026-10-24T23:00:00Z", 3),
        [
            "2026-10-25T00:30Z",
            "2026-10-25T01:30Z",
            "2026-10-25T03:30Z"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// America/New_York
// ---------------------------------------------------------------------------------------------

#[test]
fn new_york_spring() {
    // 8 Mar 02:30 does not exist → 03:00 EDT = 07:00Z; 9 Mar 02:30 EDT = 06:30Z
    assert_eq!(
        fires("30 2 * * *", New_York, "2026-03-07T12:00:00Z", 2),
        ["2026-03-08T07:00Z", "2026-03-09T06:30Z"]
    );
    // 01:45 EST = 06:45Z, then the gap collapses with 03:00 EDT = 07:00Z
    assert_eq!(
        fires("*/15 * * * *", New_York, "2026-03-08T06:30:00Z", 3),
        [
            "2026-03-08T06:45Z",
            "2026-03-08T07:00Z",
            "2026-03-08T07:15Z"
        ]
    );
    // 01:30 EST, 02:30 (gap) → 03:00 EDT, 03:30 EDT
    assert_eq!(
        fires("30 * * * *", New_York, "2026-03-08T06:00:00Z", 3),
        [
            "2026-03-08T06:30Z",
            "2026-03-08T07:00Z",
            "2026-03-08T07:30Z"
        ]
    );
}

#[test]
fn new_york_fall() {
    // 1 Nov 01:30 EDT = 05:30Z (not 01:30 EST = 06:30Z); 2 Nov 01:30 EST = 06:30Z
    assert_eq!(
        fires("30 1 * * *", New_York, "2026-10-31T12:00:00Z", 2),
        ["2026-11-01T05:30Z", "2026-11-02T06:30Z"]
    );
    // 00:30 EDT, 01:30 EDT, 01:30 EST, 02:30 EST
    assert_eq!(
        fires("30 * * * *", New_York, "2026-11-01T04:00:00Z", 4),
        [
            "2026-11-01T04:30Z",
            "2026-11-01T05:30Z",
            "2026-11-01T06:30Z",
            "2026-11-01T07:30Z"
        ]
    );
    // 02:30 is not repeated in New York: 02:30 EST = 07:30Z
    assert_eq!(
        fires("30 2 * * *", New_York, "2026-10-31T12:00:00Z", 2),
        ["2026-11-01T07:30Z", "2026-11-02T07:30Z"]
    );
}

// ---------------------------------------------------------------------------------------------
// Australia/Sydney (southern hemisphere: spring in October, autumn in April)
// ---------------------------------------------------------------------------------------------

#[test]
fn sydney_spring_in_october() {
    // 3 Oct 02:30 AEST = 2 Oct 16:30Z; 4 Oct 02:30 does not exist → 03:00 AEDT = 3 Oct 16:00Z;
    // 5 Oct 02:30 AEDT = 4 Oct 15:30Z
    assert_eq!(
        fires("30 2 * * *", Sydney, "2026-10-02T12:00:00Z", 3),
        [
            "2026-10-02T16:30Z",
            "2026-10-03T16:00Z",
            "2026-10-04T15:30Z"
        ]
    );
    assert_eq!(
        fires("*/15 * * * *", Sydney, "2026-10-03T15:30:00Z", 3),
        [
            "2026-10-03T15:45Z",
            "2026-10-03T16:00Z",
            "2026-10-03T16:15Z"
        ]
    );
    // 01:30 AEST, 02:30 (gap) → 03:00 AEDT, 03:30 AEDT
    assert_eq!(
        fires("30 * * * *", Sydney, "2026-10-03T15:00:00Z", 3),
        [
            "2026-10-03T15:30Z",
            "2026-10-03T16:00Z",
            "2026-10-03T16:30Z"
        ]
    );
}

#[test]
fn sydney_autumn_in_april() {
    // 5 Apr 02:30 AEDT = 4 Apr 15:30Z (not 02:30 AEST = 16:30Z); 6 Apr 02:30 AEST = 5 Apr 16:30Z
    assert_eq!(
        fires("30 2 * * *", Sydney, "2026-04-04T00:00:00Z", 2),
        ["2026-04-04T15:30Z", "2026-04-05T16:30Z"]
    );
    // 01:30 AEDT, 02:30 AEDT, 02:30 AEST, 03:30 AEST
    assert_eq!(
        fires("30 * * * *", Sydney, "2026-04-04T14:00:00Z", 4),
        [
            "2026-04-04T14:30Z",
            "2026-04-04T15:30Z",
            "2026-04-04T16:30Z",
            "2026-04-04T17:30Z"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// Australia/Lord_Howe (a 30-minute shift)
// ---------------------------------------------------------------------------------------------

#[test]
fn lord_howe_spring_skips_half_an_hour() {
    // 3 Oct 02:15 +10:30 = 2 Oct 15:45Z; 4 Oct 02:15 does not exist → 02:30 +11 = 3 Oct 15:30Z;
    // 5 Oct 02:15 +11 = 4 Oct 15:15Z
    assert_eq!(
        fires("15 2 * * *", Lord_Howe, "2026-10-02T12:00:00Z", 3),
        [
            "2026-10-02T15:45Z",
            "2026-10-03T15:30Z",
            "2026-10-04T15:15Z"
        ]
    );
    // 02:30 itself exists: 02:30 +11 = 15:30Z
    assert_eq!(
        fires("30 2 * * *", Lord_Howe, "2026-10-03T12:00:00Z", 2),
        ["2026-10-03T15:30Z", "2026-10-04T15:30Z"]
    );
    // 01:45 +10:30, then 02:00 and 02:15 (gap) collapse with 02:30 +11, then 02:45 +11
    assert_eq!(
        fires("*/15 * * * *", Lord_Howe, "2026-10-03T15:00:00Z", 3),
        [
            "2026-10-03T15:15Z",
            "2026-10-03T15:30Z",
            "2026-10-03T15:45Z"
        ]
    );
    // hourly: 02:00 is in the gap → 02:30 +11 = 15:30Z, then 03:00 +11 = 16:00Z
    assert_eq!(
        fires("0 * * * *", Lord_Howe, "2026-10-03T14:30:00Z", 2),
        ["2026-10-03T15:30Z", "2026-10-03T16:00Z"]
    );
}

#[test]
fn lord_howe_autumn_repeats_half_an_hour() {
    // 5 Apr 01:45 +11 = 4 Apr 14:45Z (not 01:45 +10:30 = 15:15Z); 6 Apr 01:45 +10:30 = 5 Apr 15:15Z
    assert_eq!(
        fires("45 1 * * *", Lord_Howe, "2026-04-04T00:00:00Z", 2),
        ["2026-04-04T14:45Z", "2026-04-05T15:15Z"]
    );
    // 01:45 +11, 01:30 +10:30, 01:45 +10:30, 02:00 +10:30
    assert_eq!(
        fires("*/15 * * * *", Lord_Howe, "2026-04-04T14:40:00Z", 4),
        [
            "2026-04-04T14:45Z",
            "2026-04-04T15:00Z",
            "2026-04-04T15:15Z",
            "2026-04-04T15:30Z"
        ]
    );
    // 01:30 +11, 01:30 +10:30, 02:30 +10:30
    assert_eq!(
        fires("30 * * * *", Lord_Howe, "2026-04-04T14:00:00Z", 3),
        [
            "2026-04-04T14:30Z",
            "2026-04-04T15:00Z",
            "2026-04-04T16:00Z"
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// A whole skipped day
// ---------------------------------------------------------------------------------------------

/// Samoa crossed the date line at the end of Thursday 29 December 2011 (-10, its daylight time
/// then) straight into Saturday 31 December (+14): Friday 30 December never happened there.
#[test]
fn apia_noon_on_the_skipped_day_fires_once_when_the_day_after_begins() {
    let apia = chrono_tz::Pacific::Apia;
    assert_eq!(offset_minutes(apia, utc("2011-12-30T09:59:59Z")), -600);
    assert_eq!(offset_minutes(apia, utc("2011-12-30T10:00:00Z")), 840);
    // 29 Dec 12:00 -10 = 22:00Z; 30 Dec 12:00 never was → 31 Dec 00:00 +14 = 30 Dec 10:00Z;
    // 31 Dec 12:00 +14 = 30 Dec 22:00Z
    assert_eq!(
        fires("0 12 * * *", apia, "2011-12-29T00:00:00Z", 3),
        [
            "2011-12-29T22:00Z",
            "2011-12-30T10:00Z",
            "2011-12-30T22:00Z"
        ]
    );
}
