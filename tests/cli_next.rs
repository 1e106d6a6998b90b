//! The `cronq next` / `cronq explain` contract, through the real binary: stdout carries only data
//! (one RFC 3339 instant per line: `Z` in UTC, the zone's offset otherwise), errors go to stderr
//! with exit status 2 and leave stdout empty.

use std::process::{Command, Output};

use chrono::{DateTime, FixedOffset, Timelike, Utc};

/// Runs the binary with `args` and with none of the `CRONQ_*` variables of the caller's
/// environment, plus `env`.
fn cronq_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cronq"));
    command.env("CRONQ_HTTP", "127.0.0.1:0");
    for (name, _) in std::env::vars() {
        if name.starts_with("CRONQ_") {
            command.env_remove(name);
        }
    }
    command.args(args).envs(env.iter().copied());
    command.output().expect("the cronq binary runs")
}

fn cronq(args: &[&str]) -> Output {
    cronq_with_env(args, &[])
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("UTF-8 stdout")
}

fn stderr(out: &Output) -> String {
    String::from_utf8(out.stderr.clone()).expect("UTF-8 stderr")
}

/// Success: status 0, nothing on stderr; returns stdout.
fn success(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(out));
    assert_eq!(stderr(out), "", "stderr must be empty on success");
    stdout(out)
}

/// Bad input: status 2, nothing on stdout; returns stderr.
fn usage_error(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(2), "stdout: {}", stdout(out));
    assert_eq!(stdout(out), "", "stdout must be empty on error");
    stderr(out)
}

// ---------------------------------------------------------------------------------------------
// cronq next
// ---------------------------------------------------------------------------------------------

#[test]
fn next_prints_utc_instants_with_z_one_per_line() {
    // 2026-11-27 is a Friday: after Friday noon come Monday, Tuesday, Wednesday noon
    let out = cronq(&[
        "next",
        "0 12 * * MON-FRI",
        "--after",
        "2026-11-27T12:00:00Z",
        "-n",
        "3",
    ]);
    assert_eq!(
        success(&out),
        "2026-11-30T12:00:00Z\n2026-12-01T12:00:00Z\n2026-12-02T12:00:00Z\n"
    );
}

#[test]
fn next_in_a_zone_prints_the_local_time_with_its_offset() {
    // Berlin: 09:00 CET (+01:00) on 28 March, 09:00 CEST (+02:00) after the change on the 29th
    let out = cronq(&[
        "next",
        "0 9 * * *",
        "--tz",
        "Europe/Berlin",
        "--after",
        "2026-03-28T00:00:00Z",
        "-n",
        "3",
    ]);
    assert_eq!(
        success(&out),
        "2026-03-28T09:00:00+01:00\n2026-03-29T09:00:00+02:00\n2026-03-30T09:00:00+02:00\n"
    );
    // Lord Howe's half-hour offsets; 02:15 on 4 October is in the gap and fires at 02:30 +11:00
    let out = cronq(&[
        "next",
        "15 2 * * *",
        "--tz",
        "Australia/Lord_Howe",
        "--after",
        "2026-10-02T12:00:00Z",
        "-n",
        "3",
    ]);
    assert_eq!(
        success(&out),
        "2026-10-03T02:15:00+10:30\n2026-10-04T02:30:00+11:00\n2026-10-05T02:15:00+11:00\n"
    );
}

#[test]
fn next_prints_five_by_default_and_n_chooses_how_many() {
    let after = ["--after", "2026-11-27T12:00:00Z"];
    let five = success(&cronq(&["next", "@hourly", after[0], after[1]]));
    assert_eq!(
        five,
        "2026-11-27T13:00:00Z\n2026-11-27T14:00:00Z\n2026-11-27T15:00:00Z\n\
         2026-11-27T16:00:00Z\n2026-11-27T17:00:00Z\n"
    );
    let one = success(&cronq(&["next", "@hourly", after[0], after[1], "-n", "1"]));
    assert_eq!(one, "2026-11-27T13:00:00Z\n");
    let long = success(&cronq(&[
        "next", "@hourly", after[0], after[1], "--count", "2",
    ]));
    assert_eq!(long, "2026-11-27T13:00:00Z\n2026-11-27T14:00:00Z\n");
    let none = success(&cronq(&["next", "@hourly", after[0], after[1], "-n", "0"]));
    assert_eq!(none, "");
}

#[test]
fn after_is_strict_and_takes_any_offset() {
    // exactly on a firing: the next one
    let on = success(&cronq(&[
        "next",
        "0 12 * * *",
        "--after",
        "2026-11-27T12:00:00Z",
        "-n",
        "1",
    ]));
    assert_eq!(on, "2026-11-28T12:00:00Z\n");
    // 13:00+01:00 is 12:00Z: the same instant
    let offset = success(&cronq(&[
        "next",
        "0 12 * * *",
        "--after",
        "2026-11-27T13:00:00+01:00",
        "-n",
        "1",
    ]));
    assert_eq!(offset, "2026-11-28T12:00:00Z\n");
    // one second earlier: that noon
    let before = success(&cronq(&[
        "next",
        "0 12 * * *",
        "--after",
        "2026-11-27T11:59:59Z",
        "-n",
        "1",
    ]));
    assert_eq!(before, "2026-11-27T12:00:00Z\n");
}

#[test]
fn without_after_the_instants_start_now() {
    let before = Utc::now();
    let out = success(&cronq(&["next", "* * * * *", "-n", "2"]));
    let instants: Vec<DateTime<FixedOffset>> = out
        .lines()
        .map(|l| DateTime::parse_from_rfc3339(l).expect("RFC 3339"))
        .collect();
    assert_eq!(instants.len(), 2);
    assert!(
        instants[0] > before,
        "{} is not after {before}",
        instants[0]
    );
    assert!(instants[0] <= before + chrono::Duration::minutes(2));
    assert_eq!(instants[1] - instants[0], chrono::Duration::minutes(1));
}

#[test]
fn flags_can_come_from_the_environment() {
    let out = cronq_with_env(
        &["next", "0 9 * * *"],
        &[
            ("CRONQ_TZ", "America/New_York"),
            ("CRONQ_AFTER", "2026-11-27T00:00:00Z"),
            ("CRONQ_COUNT", "2"),
        ],
    );
    assert_eq!(
        success(&out),
        "2026-11-27T09:00:00-05:00\n2026-11-28T09:00:00-05:00\n"
    );
}

#[test]
fn an_invalid_expression_is_exit_status_2_with_the_reason_on_stderr() {
    let err = usage_error(&cronq(&["next", "61 * * * *"]));
    assert_eq!(
        err,
        "error: invalid cron expression \"61 * * * *\": minute: 61 is out of range 0-59\n"
    );
    let err = usage_error(&cronq(&["next", "0 12 * * SAT-SUN"]));
    assert_eq!(
        err,
        "error: invalid cron expression \"0 12 * * SAT-SUN\": day-of-week: range \"SAT-SUN\" \
         is reversed: the start must not be after the end\n"
    );
    let err = usage_error(&cronq(&["next", "0 0 31 2 *"]));
    assert_eq!(
        err,
        "error: invalid cron expression \"0 0 31 2 *\": the expression can never fire: the days \
         it selects never occur in the months it selects\n"
    );
}

#[test]
fn an_unknown_zone_is_exit_status_2_with_the_reason_on_stderr() {
    let err = usage_error(&cronq(&["next", "* * * * *", "--tz", "Mars/Olympus"]));
    assert_eq!(
        err,
        "error: --tz: unknown time zone \"Mars/Olympus\": expected an IANA name such as \"UTC\" \
         or \"Europe/Berlin\"\n"
    );
}

#[test]
fn a_bad_after_is_exit_status_2_and_shows_the_expected_form() {
    let err = usage_error(&cronq(&["next", "* * * * *", "--after", "yesterday"]));
    assert!(
        err.starts_with(
            "error: --after: \"yesterday\" is not an RFC 3339 instant (e.g. 2026-11-26T12:00:00Z): "
        ),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_missing_expression_is_a_usage_error() {
    let err = usage_error(&cronq(&["next"]));
    assert!(err.contains("<EXPR>"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// cronq explain
// ---------------------------------------------------------------------------------------------

#[test]
fn explain_prints_a_description_naming_the_zone_then_five_indented_instants() {
    let before = Utc::now();
    let out = success(&cronq(&[
        "explain",
        "0 12 * * MON-FRI",
        "--tz",
        "Europe/Berlin",
    ]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert!(out.ends_with('\n'));

    let description = lines[0];
    assert!(!description.starts_with(' '), "{description:?}");
    assert!(description.ends_with(" (Europe/Berlin)"), "{description:?}");
    assert!(description.len() > " (Europe/Berlin)".len());

    let mut previous = before.fixed_offset();
    for line in &lines[1..] {
        let text = line
            .strip_prefix("  ")
            .unwrap_or_else(|| panic!("not indented: {line:?}"));
        let t = DateTime::parse_from_rfc3339(text).expect("RFC 3339");
        assert!(t > previous, "{t} not after {previous}");
        // Berlin's offset, noon local, Monday-Friday
        assert!(
            text.ends_with("+01:00") || text.ends_with("+02:00"),
            "{text}"
        );
        assert_eq!((t.hour(), t.minute(), t.second()), (12, 0, 0), "{text}");
        let weekday = chrono::Datelike::weekday(&t);
        assert!(
            !matches!(weekday, chrono::Weekday::Sat | chrono::Weekday::Sun),
            "{text} is a {weekday}"
        );
        previous = t;
    }
}

#[test]
fn explain_in_utc_uses_z() {
    let out = success(&cronq(&["explain", "*/15 * * * *"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 6, "{out}");
    assert!(lines[0].ends_with(" (UTC)"), "{}", lines[0]);
    for line in &lines[1..] {
        assert!(line.starts_with("  ") && line.ends_with('Z'), "{line:?}");
        let t = DateTime::parse_from_rfc3339(line.trim()).expect("RFC 3339");
        assert_eq!(t.minute() % 15, 0, "{line}");
    }
}

#[test]
fn explain_rejects_like_next() {
    let err = usage_error(&cronq(&["explain", "* * * *"]));
    assert_eq!(
        err,
        "error: invalid cron expression \"* * * *\": expected 5 fields (minute hour day-of-month \
         month day-of-week), found 4\n"
    );
    let err = usage_error(&cronq(&["explain", "@daily", "--tz", "Europe/Berlln"]));
    assert_eq!(
        err,
        "error: --tz: unknown time zone \"Europe/Berlln\": expected an IANA name such as \"UTC\" \
         or \"Europe/Berlin\"\n"
    );
}

// ---------------------------------------------------------------------------------------------
// Jenkins' H
// ---------------------------------------------------------------------------------------------

/// `H H * * *` for `nightly-backup` is minute 9, hour 5: murmur2("nightly-backup:minute") =
/// 1593384549 and murmur2("nightly-backup:hour") = 943983893 by kafka-python's implementation.
#[test]
fn next_and_explain_resolve_h_for_the_job_given() {
    let out = success(&cronq(&[
        "next",
        "H H * * *",
        "--job",
        "nightly-backup",
        "--after",
        "2026-11-30T00:00:00Z",
        "-n",
        "2",
    ]));
    assert_eq!(out, "2026-11-30T05:09:00Z\n2026-12-01T05:09:00Z\n");
    let out = success(&cronq(&["explain", "H H * * *", "--job", "nightly-backup"]));
    assert!(
        out.starts_with("9 5 * * * (H resolved for job \"nightly-backup\")\n"),
        "{out}"
    );
}

#[test]
fn h_without_a_job_is_a_usage_error_that_says_how_to_give_one() {
    for sub in ["next", "explain"] {
        let err = usage_error(&cronq(&[sub, "H * * * *"]));
        assert!(
            err.contains("`H` picks a value from the job's name"),
            "{err}"
        );
        assert!(err.contains("--job NAME"), "{err}");
    }
}
