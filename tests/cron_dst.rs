//! Daylight-saving time, by hand: every expected instant below is computed from the zone's rules,
//! not from cronq.
//!
//! The rules under test are Debian cron(8)'s (DESIGN.md "Time", src/cron/tz.rs). A job is a
//! *wildcard job* when its minute or hour field starts with `*`; every other job is *fixed-time*.
//! - Spring forward: a fixed-time job whose local time falls in the gap fires once, at the first
//!   instant after the gap (several gap times of one job collapse into that one firing); a wildcard
//!   job simply skips the local times that do not exist.
//! - Fall back: a fixed-time job fires only in the first copy of a repeated local time; a wildcard
//!   job fires in both.
//!
//! The 2026 transitions (the first test checks them against the tz database):
//!
//! | zone               | spring forward (gap)                         | fall back (repeat)                             |
//! |--------------------|----------------------------------------------|------------------------------------------------|
//! | Europe/Berlin      | Sun 29 Mar 02:00 CET → 03:00 CEST = 01:00Z   | Sun 25 Oct 03:00 CEST → 02:00 CET = 01:00Z     |
//! | America/New_York   | Sun 8 Mar 02:00 EST → 03:00 EDT = 07:00Z     | Sun 1 Nov 02:00 EDT → 01:00 EST = 06:00Z       |
//! | Australia/Sydney   | Sun 4 Oct 02:00 AEST → 03:00 AEDT = 3 Oct 16:00Z | Sun 5 Apr 03:00 AEDT → 02:00 AEST = 4 Apr 16:00Z |
//! | Australia/Lord_Howe| Sun 4 Oct 02:00 +10:30 → 02:30 +11 = 3 Oct 15:30Z | Sun 5 Apr 02:00 +11 → 01:30 +10:30 = 4 Apr 15:00Z |
//!
//! The 2027 table ([`debian_dst_rule_table_2027`]) adds America/Santiago, whose clocks change at
//! midnight.

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
fn berlin_spring_wildcard_jobs_skip_the_missing_hour() {
    // 01:45 CET, then 02:00-02:45 do not exist (skipped), then 03:00 CEST = 01:00Z, 03:15 CEST
    assert_eq!(
        fires("*/15 * * * *", Berlin, "2026-03-29T00:30:00Z", 3),
        [
            "2026-03-29T00:45Z",
            "2026-03-29T01:00Z",
            "2026-03-29T01:15Z"
        ]
    );
    // 01:30 CET = 00:30Z; 02:30 does not exist and a wildcard job skips it; 03:30 CEST = 01:30Z;
    // 04:30 CEST = 02:30Z (Debian: wildcard jobs "are run based on the new time immediately")
    assert_eq!(
        fires("30 * * * *", Berlin, "2026-03-29T00:00:00Z", 3),
        [
            "2026-03-29T00:30Z",
            "2026-03-29T01:30Z",
            "2026-03-29T02:30Z"
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
    // 01:45 EST = 06:45Z, then the gap is skipped, 03:00 EDT = 07:00Z, 03:15 EDT
    assert_eq!(
        fires("*/15 * * * *", New_York, "2026-03-08T06:30:00Z", 3),
        [
            "2026-03-08T06:45Z",
            "2026-03-08T07:00Z",
            "2026-03-08T07:15Z"
        ]
    );
    // 01:30 EST = 06:30Z, 02:30 (gap) skipped, 03:30 EDT = 07:30Z, 04:30 EDT = 08:30Z
    assert_eq!(
        fires("30 * * * *", New_York, "2026-03-08T06:00:00Z", 3),
        [
            "2026-03-08T06:30Z",
            "2026-03-08T07:30Z",
            "2026-03-08T08:30Z"
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
    // 01:30 AEST = 15:30Z, 02:30 (gap) skipped, 03:30 AEDT = 16:30Z, 04:30 AEDT = 17:30Z
    assert_eq!(
        fires("30 * * * *", Sydney, "2026-10-03T15:00:00Z", 3),
        [
            "2026-10-03T15:30Z",
            "2026-10-03T16:30Z",
            "2026-10-03T17:30Z"
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
    // 01:45 +10:30, then 02:00 and 02:15 (gap) are skipped, 02:30 +11 exists, then 02:45 +11
    assert_eq!(
        fires("*/15 * * * *", Lord_Howe, "2026-10-03T15:00:00Z", 3),
        [
            "2026-10-03T15:15Z",
            "2026-10-03T15:30Z",
            "2026-10-03T15:45Z"
        ]
    );
    // hourly is a wildcard job: 02:00 is in the gap and skipped; 03:00 +11 = 16:00Z, 04:00 +11
    assert_eq!(
        fires("0 * * * *", Lord_Howe, "2026-10-03T14:30:00Z", 2),
        ["2026-10-03T16:00Z", "2026-10-03T17:00Z"]
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

// ---------------------------------------------------------------------------------------------
// The Debian rule as one table: five zones, both transitions of 2027, every kind of minute/hour
// field.
// ---------------------------------------------------------------------------------------------

use chrono_tz::America::Santiago;

/// The 2027 transitions the table below is written against (checked against the tz database by
/// [`the_2027_transitions_are_where_the_table_puts_them`]):
///
/// | zone               | spring forward: local times that do not exist        | fall back: local times that happen twice   |
/// |--------------------|------------------------------------------------------|--------------------------------------------|
/// | Europe/Berlin      | Sun 28 Mar 02:00-02:59 (01:59 +01:00 → 03:00 +02:00) | Sun 31 Oct 02:00-02:59 (+02:00, then +01:00) |
/// | America/New_York   | Sun 14 Mar 02:00-02:59 (01:59 -05:00 → 03:00 -04:00) | Sun 7 Nov 01:00-01:59 (-04:00, then -05:00)  |
/// | Australia/Sydney   | Sun 3 Oct 02:00-02:59 (01:59 +10:00 → 03:00 +11:00)  | Sun 4 Apr 02:00-02:59 (+11:00, then +10:00)  |
/// | Australia/Lord_Howe| Sun 3 Oct 02:00-02:29 (01:59 +10:30 → 02:30 +11:00)  | Sun 4 Apr 01:30-01:59 (+11:00, then +10:30)  |
/// | America/Santiago   | Sun 5 Sep 00:00-00:59 (Sat 23:59 -04:00 → Sun 01:00 -03:00) | Sat 3 Apr 23:00-23:59 (-03:00, then -04:00) |
#[test]
fn the_2027_transitions_are_where_the_table_puts_them() {
    // (zone, first instant of the new offset, offset before, offset after), minutes east of UTC
    let table = [
        (Berlin, "2027-03-28T01:00:00Z", 60, 120),
        (Berlin, "2027-10-31T01:00:00Z", 120, 60),
        (New_York, "2027-03-14T07:00:00Z", -300, -240),
        (New_York, "2027-11-07T06:00:00Z", -240, -300),
        (Sydney, "2027-10-02T16:00:00Z", 600, 660),
        (Sydney, "2027-04-03T16:00:00Z", 660, 600),
        (Lord_Howe, "2027-10-02T15:30:00Z", 630, 660),
        (Lord_Howe, "2027-04-03T15:00:00Z", 660, 630),
        (Santiago, "2027-09-05T04:00:00Z", -240, -180),
        (Santiago, "2027-04-04T03:00:00Z", -180, -240),
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

/// One row: `expr` in `tz`, asked after `after`, fires at `want`, in that order. Instants are
/// written in the zone's local time with the offset in force (`2027-03-28T03:00+02:00` is 03:00
/// CEST), so each can be checked against the rule by reading it.
struct Row {
    tz: Tz,
    expr: &'static str,
    /// The kind of minute/hour field the row exercises, and the class cron(8) gives the job.
    kind: &'static str,
    after: &'static str,
    want: &'static [&'static str],
}

fn local(text: &str) -> DateTime<Utc> {
    // RFC 3339 without seconds, as the table writes it.
    let (date_time, offset) = text.split_at(16);
    utc(&format!("{date_time}:00{offset}"))
}

#[test]
fn debian_dst_rule_table_2027() {
    #[rustfmt::skip]
    let rows = [
        // ---- Europe/Berlin, spring forward: 28 Mar 02:00-02:59 does not exist ----
        Row { tz: Berlin, expr: "30 2 * * *", kind: "fixed: gap time → first instant after the gap",
              after: "2027-03-27T12:00+01:00", want: &["2027-03-28T03:00+02:00", "2027-03-29T02:30+02:00"] },
        Row { tz: Berlin, expr: "30 1-3 * * *", kind: "ranged hour, fixed: 02:30 → 03:00, 03:30 still runs",
              after: "2027-03-28T00:00+01:00", want: &["2027-03-28T01:30+01:00", "2027-03-28T03:00+02:00", "2027-03-28T03:30+02:00", "2027-03-29T01:30+02:00"] },
        Row { tz: Berlin, expr: "45 0-5/2 * * *", kind: "a-b/n hour, fixed: 02:45 → 03:00",
              after: "2027-03-28T00:00+01:00", want: &["2027-03-28T00:45+01:00", "2027-03-28T03:00+02:00", "2027-03-28T04:45+02:00"] },
        Row { tz: Berlin, expr: "0-59/20 2 * * *", kind: "a-b/n minute, fixed: 02:00, 02:20, 02:40 collapse into 03:00",
              after: "2027-03-28T00:00+01:00", want: &["2027-03-28T03:00+02:00", "2027-03-29T02:00+02:00", "2027-03-29T02:20+02:00"] },
        Row { tz: Berlin, expr: "0 */2 * * *", kind: "stepped hour, wildcard: 02:00 skipped, no extra 03:00",
              after: "2027-03-27T23:30+01:00", want: &["2027-03-28T00:00+01:00", "2027-03-28T04:00+02:00", "2027-03-28T06:00+02:00"] },
        Row { tz: Berlin, expr: "*/15 2 * * *", kind: "stepped minute, wildcard: the whole gap day is skipped",
              after: "2027-03-27T12:00+01:00", want: &["2027-03-29T02:00+02:00", "2027-03-29T02:15+02:00"] },
        Row { tz: Berlin, expr: "30 * * * *", kind: "wildcard hour: 02:30 skipped, no 03:00",
              after: "2027-03-28T01:00+01:00", want: &["2027-03-28T01:30+01:00", "2027-03-28T03:30+02:00", "2027-03-28T04:30+02:00"] },
        Row { tz: Berlin, expr: "*/15 * * * *", kind: "wildcard: 02:00-02:45 skipped, 03:00 exists",
              after: "2027-03-28T01:40+01:00", want: &["2027-03-28T01:45+01:00", "2027-03-28T03:00+02:00", "2027-03-28T03:15+02:00"] },
        Row { tz: Berlin, expr: "@hourly", kind: "@hourly is a wildcard job: 02:00 skipped",
              after: "2027-03-28T01:30+01:00", want: &["2027-03-28T03:00+02:00", "2027-03-28T04:00+02:00"] },
        // ---- Europe/Berlin, fall back: 31 Oct 02:00-02:59 happens at +02:00, then at +01:00 ----
        Row { tz: Berlin, expr: "30 2 * * *", kind: "fixed: first copy only",
              after: "2027-10-30T12:00+02:00", want: &["2027-10-31T02:30+02:00", "2027-11-01T02:30+01:00"] },
        Row { tz: Berlin, expr: "30 1-3 * * *", kind: "ranged hour, fixed: first copy only",
              after: "2027-10-31T00:00+02:00", want: &["2027-10-31T01:30+02:00", "2027-10-31T02:30+02:00", "2027-10-31T03:30+01:00"] },
        Row { tz: Berlin, expr: "45 0-5/2 * * *", kind: "a-b/n hour, fixed (hour does not start with *): once",
              after: "2027-10-31T00:00+02:00", want: &["2027-10-31T00:45+02:00", "2027-10-31T02:45+02:00", "2027-10-31T04:45+01:00"] },
        Row { tz: Berlin, expr: "0-59/20 2 * * *", kind: "a-b/n minute, fixed: first copy only",
              after: "2027-10-31T02:10+02:00", want: &["2027-10-31T02:20+02:00", "2027-10-31T02:40+02:00", "2027-11-01T02:00+01:00"] },
        Row { tz: Berlin, expr: "0 */2 * * *", kind: "stepped hour, wildcard: both copies",
              after: "2027-10-31T01:00+02:00", want: &["2027-10-31T02:00+02:00", "2027-10-31T02:00+01:00", "2027-10-31T04:00+01:00"] },
        Row { tz: Berlin, expr: "*/15 2 * * *", kind: "stepped minute, wildcard: both copies",
              after: "2027-10-31T02:40+02:00", want: &["2027-10-31T02:45+02:00", "2027-10-31T02:00+01:00", "2027-10-31T02:15+01:00"] },
        Row { tz: Berlin, expr: "30 * * * *", kind: "wildcard hour: both copies",
              after: "2027-10-31T01:00+02:00", want: &["2027-10-31T01:30+02:00", "2027-10-31T02:30+02:00", "2027-10-31T02:30+01:00", "2027-10-31T03:30+01:00"] },
        // ---- America/New_York, spring forward: 14 Mar 02:00-02:59 does not exist ----
        Row { tz: New_York, expr: "30 2 * * *", kind: "fixed: gap time → 03:00",
              after: "2027-03-13T12:00-05:00", want: &["2027-03-14T03:00-04:00", "2027-03-15T02:30-04:00"] },
        Row { tz: New_York, expr: "0 1-3 * * *", kind: "ranged hour, fixed: 02:00 → 03:00 collapses with 03:00",
              after: "2027-03-14T00:00-05:00", want: &["2027-03-14T01:00-05:00", "2027-03-14T03:00-04:00", "2027-03-15T01:00-04:00"] },
        Row { tz: New_York, expr: "15 0-4/2 * * *", kind: "a-b/n hour, fixed: 02:15 → 03:00",
              after: "2027-03-14T00:30-05:00", want: &["2027-03-14T03:00-04:00", "2027-03-14T04:15-04:00"] },
        Row { tz: New_York, expr: "0 */2 * * *", kind: "stepped hour, wildcard: 02:00 skipped",
              after: "2027-03-14T00:30-05:00", want: &["2027-03-14T04:00-04:00", "2027-03-14T06:00-04:00"] },
        Row { tz: New_York, expr: "*/20 2 * * *", kind: "stepped minute, wildcard: gap day skipped",
              after: "2027-03-13T12:00-05:00", want: &["2027-03-15T02:00-04:00", "2027-03-15T02:20-04:00"] },
        Row { tz: New_York, expr: "30 * * * *", kind: "wildcard hour: 02:30 skipped",
              after: "2027-03-14T01:00-05:00", want: &["2027-03-14T01:30-05:00", "2027-03-14T03:30-04:00"] },
        // ---- America/New_York, fall back: 7 Nov 01:00-01:59 happens at -04:00, then at -05:00 ----
        Row { tz: New_York, expr: "30 1 * * *", kind: "fixed: first copy only",
              after: "2027-11-06T12:00-04:00", want: &["2027-11-07T01:30-04:00", "2027-11-08T01:30-05:00"] },
        Row { tz: New_York, expr: "0,30 0-2 * * *", kind: "list minute, ranged hour, fixed: first copy only",
              after: "2027-11-07T00:45-04:00", want: &["2027-11-07T01:00-04:00", "2027-11-07T01:30-04:00", "2027-11-07T02:00-05:00", "2027-11-07T02:30-05:00"] },
        Row { tz: New_York, expr: "30 1-23/2 * * *", kind: "a-b/n hour, fixed: first copy only",
              after: "2027-11-07T00:00-04:00", want: &["2027-11-07T01:30-04:00", "2027-11-07T03:30-05:00"] },
        Row { tz: New_York, expr: "*/30 1 * * *", kind: "stepped minute, wildcard: both copies",
              after: "2027-11-07T01:10-04:00", want: &["2027-11-07T01:30-04:00", "2027-11-07T01:00-05:00", "2027-11-07T01:30-05:00", "2027-11-08T01:00-05:00"] },
        Row { tz: New_York, expr: "45 * * * *", kind: "wildcard hour: both copies",
              after: "2027-11-07T00:50-04:00", want: &["2027-11-07T01:45-04:00", "2027-11-07T01:45-05:00", "2027-11-07T02:45-05:00"] },
        // ---- Australia/Sydney, spring forward: 3 Oct 02:00-02:59 does not exist ----
        Row { tz: Sydney, expr: "0 2 * * *", kind: "fixed: gap time → 03:00",
              after: "2027-10-02T12:00+10:00", want: &["2027-10-03T03:00+11:00", "2027-10-04T02:00+11:00"] },
        Row { tz: Sydney, expr: "30 2-3 * * *", kind: "ranged hour, fixed: 02:30 → 03:00, then 03:30",
              after: "2027-10-03T00:00+10:00", want: &["2027-10-03T03:00+11:00", "2027-10-03T03:30+11:00"] },
        Row { tz: Sydney, expr: "10 0-4/2 * * *", kind: "a-b/n hour, fixed: 02:10 → 03:00",
              after: "2027-10-03T00:30+10:00", want: &["2027-10-03T03:00+11:00", "2027-10-03T04:10+11:00"] },
        Row { tz: Sydney, expr: "30 */2 * * *", kind: "stepped hour, wildcard: 02:30 skipped",
              after: "2027-10-03T00:45+10:00", want: &["2027-10-03T04:30+11:00", "2027-10-03T06:30+11:00"] },
        Row { tz: Sydney, expr: "*/30 * * * *", kind: "wildcard: 02:00, 02:30 skipped",
              after: "2027-10-03T01:00+10:00", want: &["2027-10-03T01:30+10:00", "2027-10-03T03:00+11:00", "2027-10-03T03:30+11:00"] },
        // ---- Australia/Sydney, fall back: 4 Apr 02:00-02:59 happens at +11:00, then at +10:00 ----
        Row { tz: Sydney, expr: "30 2 * * *", kind: "fixed: first copy only",
              after: "2027-04-03T12:00+11:00", want: &["2027-04-04T02:30+11:00", "2027-04-05T02:30+10:00"] },
        Row { tz: Sydney, expr: "0-30/15 2 * * *", kind: "a-b/n minute, fixed: first copy only",
              after: "2027-04-04T02:20+11:00", want: &["2027-04-04T02:30+11:00", "2027-04-05T02:00+10:00"] },
        Row { tz: Sydney, expr: "*/30 2 * * *", kind: "stepped minute, wildcard: both copies",
              after: "2027-04-04T02:20+11:00", want: &["2027-04-04T02:30+11:00", "2027-04-04T02:00+10:00", "2027-04-04T02:30+10:00"] },
        Row { tz: Sydney, expr: "15 * * * *", kind: "wildcard hour: both copies",
              after: "2027-04-04T01:30+11:00", want: &["2027-04-04T02:15+11:00", "2027-04-04T02:15+10:00", "2027-04-04T03:15+10:00"] },
        // ---- Australia/Lord_Howe, spring forward by 30 minutes: 3 Oct 02:00-02:29 does not exist ----
        Row { tz: Lord_Howe, expr: "15 2 * * *", kind: "fixed: gap time → 02:30",
              after: "2027-10-02T12:00+10:30", want: &["2027-10-03T02:30+11:00", "2027-10-04T02:15+11:00"] },
        Row { tz: Lord_Howe, expr: "0,15,30,45 2 * * *", kind: "list minute, fixed: 02:00, 02:15 collapse with 02:30",
              after: "2027-10-03T01:50+10:30", want: &["2027-10-03T02:30+11:00", "2027-10-03T02:45+11:00"] },
        Row { tz: Lord_Howe, expr: "20 0-6/2 * * *", kind: "a-b/n hour, fixed: 02:20 → 02:30",
              after: "2027-10-03T01:00+10:30", want: &["2027-10-03T02:30+11:00", "2027-10-03T04:20+11:00"] },
        Row { tz: Lord_Howe, expr: "*/10 2 * * *", kind: "stepped minute, wildcard: 02:00-02:20 skipped, 02:30 on exists",
              after: "2027-10-03T01:00+10:30", want: &["2027-10-03T02:30+11:00", "2027-10-03T02:40+11:00", "2027-10-03T02:50+11:00"] },
        Row { tz: Lord_Howe, expr: "0 * * * *", kind: "wildcard hour: 02:00 skipped, no 02:30",
              after: "2027-10-03T01:30+10:30", want: &["2027-10-03T03:00+11:00", "2027-10-03T04:00+11:00"] },
        Row { tz: Lord_Howe, expr: "*/15 * * * *", kind: "wildcard: 02:00, 02:15 skipped",
              after: "2027-10-03T01:40+10:30", want: &["2027-10-03T01:45+10:30", "2027-10-03T02:30+11:00", "2027-10-03T02:45+11:00"] },
        // ---- Australia/Lord_Howe, fall back by 30 minutes: 4 Apr 01:30-01:59 at +11:00, then +10:30 ----
        Row { tz: Lord_Howe, expr: "45 1 * * *", kind: "fixed: first copy only",
              after: "2027-04-03T12:00+11:00", want: &["2027-04-04T01:45+11:00", "2027-04-05T01:45+10:30"] },
        Row { tz: Lord_Howe, expr: "15-45/15 1 * * *", kind: "a-b/n minute, fixed: first copy only",
              after: "2027-04-04T01:20+11:00", want: &["2027-04-04T01:30+11:00", "2027-04-04T01:45+11:00", "2027-04-05T01:15+10:30"] },
        Row { tz: Lord_Howe, expr: "*/15 1 * * *", kind: "stepped minute, wildcard: both copies of 01:30 and 01:45",
              after: "2027-04-04T01:20+11:00", want: &["2027-04-04T01:30+11:00", "2027-04-04T01:45+11:00", "2027-04-04T01:30+10:30", "2027-04-04T01:45+10:30"] },
        Row { tz: Lord_Howe, expr: "30 * * * *", kind: "wildcard hour: both copies of 01:30",
              after: "2027-04-04T00:00+11:00", want: &["2027-04-04T00:30+11:00", "2027-04-04T01:30+11:00", "2027-04-04T01:30+10:30", "2027-04-04T02:30+10:30"] },
        // ---- America/Santiago, spring forward at midnight: Sun 5 Sep 00:00-00:59 does not exist ----
        Row { tz: Santiago, expr: "@daily", kind: "@daily is fixed: midnight → 01:00",
              after: "2027-09-04T12:00-04:00", want: &["2027-09-05T01:00-03:00", "2027-09-06T00:00-03:00"] },
        Row { tz: Santiago, expr: "30 0 * * 0", kind: "fixed, Sundays: 00:30 → 01:00 the same Sunday",
              after: "2027-09-01T00:00-04:00", want: &["2027-09-05T01:00-03:00", "2027-09-12T00:30-03:00"] },
        Row { tz: Santiago, expr: "0 0-6/3 * * *", kind: "a-b/n hour, fixed: 00:00 → 01:00",
              after: "2027-09-04T23:00-04:00", want: &["2027-09-05T01:00-03:00", "2027-09-05T03:00-03:00", "2027-09-05T06:00-03:00"] },
        Row { tz: Santiago, expr: "*/30 0 * * *", kind: "stepped minute, wildcard: the gap day is skipped",
              after: "2027-09-04T12:00-04:00", want: &["2027-09-06T00:00-03:00", "2027-09-06T00:30-03:00"] },
        Row { tz: Santiago, expr: "0 * * * *", kind: "wildcard hour: midnight skipped",
              after: "2027-09-04T22:30-04:00", want: &["2027-09-04T23:00-04:00", "2027-09-05T01:00-03:00", "2027-09-05T02:00-03:00"] },
        Row { tz: Santiago, expr: "0 */4 * * *", kind: "stepped hour, wildcard: midnight skipped",
              after: "2027-09-04T21:00-04:00", want: &["2027-09-05T04:00-03:00", "2027-09-05T08:00-03:00"] },
        // ---- America/Santiago, fall back at midnight: Sat 3 Apr 23:00-23:59 at -03:00, then -04:00 ----
        Row { tz: Santiago, expr: "30 23 * * *", kind: "fixed: first copy only",
              after: "2027-04-03T12:00-03:00", want: &["2027-04-03T23:30-03:00", "2027-04-04T23:30-04:00"] },
        Row { tz: Santiago, expr: "0 22-23 * * *", kind: "ranged hour, fixed: first copy only",
              after: "2027-04-03T21:30-03:00", want: &["2027-04-03T22:00-03:00", "2027-04-03T23:00-03:00", "2027-04-04T22:00-04:00"] },
        Row { tz: Santiago, expr: "45 1-23/2 * * *", kind: "a-b/n hour, fixed: first copy only",
              after: "2027-04-03T22:00-03:00", want: &["2027-04-03T23:45-03:00", "2027-04-04T01:45-04:00"] },
        Row { tz: Santiago, expr: "*/30 23 * * *", kind: "stepped minute, wildcard: both copies",
              after: "2027-04-03T23:10-03:00", want: &["2027-04-03T23:30-03:00", "2027-04-03T23:00-04:00", "2027-04-03T23:30-04:00"] },
        Row { tz: Santiago, expr: "0 * * * *", kind: "wildcard hour: both copies of 23:00",
              after: "2027-04-03T22:30-03:00", want: &["2027-04-03T23:00-03:00", "2027-04-03T23:00-04:00", "2027-04-04T00:00-04:00"] },
        Row { tz: Santiago, expr: "@daily", kind: "@daily: the midnight after the repeat happens once",
              after: "2027-04-03T12:00-03:00", want: &["2027-04-04T00:00-04:00", "2027-04-05T00:00-04:00"] },
    ];
    let mut wrong = Vec::new();
    for row in &rows {
        let expr =
            CronExpr::parse(row.expr, row.tz).unwrap_or_else(|e| panic!("{}: {e}", row.expr));
        let show = |t: DateTime<Utc>| {
            t.with_timezone(&row.tz)
                .format("%Y-%m-%dT%H:%M%:z")
                .to_string()
        };
        let mut cursor = local(row.after);
        let mut got = Vec::new();
        for _ in row.want {
            match expr.next_after(cursor) {
                Some(t) => {
                    got.push(show(t));
                    cursor = t;
                }
                None => break,
            }
        }
        let want: Vec<String> = row.want.iter().map(|w| show(local(w))).collect();
        if got != want {
            wrong.push(format!(
                "{} {:?} ({}) after {}:\n    want {want:?}\n    got  {got:?}",
                row.tz, row.expr, row.kind, row.after
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} rows disagree:\n{}",
        wrong.len(),
        rows.len(),
        wrong.join("\n")
    );
}
