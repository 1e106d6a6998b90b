//! Every numeric and duration flag of every subcommand is range-checked at parse time: a zero,
//! negative, huge or malformed value is a usage error (exit 2) that names the flag and its range,
//! before anything runs. `explain` has no numeric flag.

use std::process::Command;

fn cronq(args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cronq"));
    command.env("CRONQ_HTTP", "127.0.0.1:0");
    for (name, _) in std::env::vars() {
        if name.starts_with("CRONQ_") {
            command.env_remove(name);
        }
    }
    command.args(args).output().expect("the cronq binary runs")
}

#[test]
fn bad_values_of_group_and_catch_up_flags_are_usage_errors_naming_the_flag() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("run", "--tick", &["0s", "-1s", "2h", "soon"]),
        ("run", "--max-catchup", &["0s", "30s", "400d", "x"]),
        ("run", "--shutdown-grace", &["-1s", "2h", "x"]),
        ("run", "--queue-capacity", &["0", "-1", "99999999999", "x"]),
        ("run", "--shards", &["0", "-1", "10001", "x"]),
        ("run", "--session-timeout", &["0s", "-5s", "31m", "x"]),
        (
            "run",
            "--drill-clock",
            &["0x@1764441000", "10x@-1", "99999x@1", "fast"],
        ),
        ("status", "--timeout", &["0s", "-1s", "11m", "x"]),
    ];
    for (command, flag, values) in cases {
        for value in *values {
            let arg = format!("{flag}={value}");
            let mut args = vec![*command, arg.as_str()];
            if *command == "run" {
                args.push("--dry-run");
            }
            let out = cronq(&args);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{command} {arg}: {stderr}");
            assert!(
                stderr.contains(flag),
                "{command} {arg}: the message names the flag: {stderr}"
            );
            assert!(out.stdout.is_empty(), "{command} {arg}: nothing on stdout");
        }
    }
}

#[test]
fn validate_reports_a_bad_catch_up_rule_with_file_line_job_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    std::fs::write(
        &path,
        r#"{"jobs":[{"jobName":"n","job":"x","cronTime":"* * * * *","catchup":"sometimes"}]}"#,
    )
    .unwrap();
    let out = cronq(&["validate", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(r#"s.json:1:68: jobs[0] "n": catchup: "sometimes" is not one of "all", "latest", "none""#),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------
// Every numeric and duration flag of every subcommand, with its range (issue 10).
// ---------------------------------------------------------------------------------------------

/// Runs cronq with `args`; a cronq that outlives `limit` (a bad value that was accepted and
/// started a dispatcher or a worker) is killed, and the test sees it as exit status `None`.
#[test]
fn validate_reports_bad_run_settings_with_file_line_job_field_and_the_accepted_values() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    std::fs::write(
        &path,
        r#"{"jobs":[{"jobName":"n","job":"x","cronTime":"* * * * *","overlap":"replce","timeout":"0s","maxAttempts":0}]}"#,
    )
    .unwrap();
    let out = cronq(&["validate", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    for problem in [
        r#"s.json:1:68: jobs[0] "n": overlap: "replce" is not one of "queue", "skip", "allow", "replace" (did you mean "replace"?)"#,
        r#"s.json:1:87: jobs[0] "n": timeout: "0s" is out of range 1s-1d (the range of the worker's --timeout)"#,
        r#"s.json:1:106: jobs[0] "n": maxAttempts: 0 is out of range 1-100 (the range of the worker's --max-attempts)"#,
    ] {
        assert!(stderr.contains(problem), "{problem}\n{stderr}");
    }
}

fn cronq_within(args: &[&str], limit: std::time::Duration) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cronq"));
    command.env("CRONQ_HTTP", "127.0.0.1:0");
    for (name, _) in std::env::vars() {
        if name.starts_with("CRONQ_") {
            command.env_remove(name);
        }
    }
    let child = command
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the cronq binary runs");
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let (done, output) = std::sync::mpsc::channel();
    std::thread::spawn(move || done.send(child.wait_with_output().expect("output")));
    match output.recv_timeout(limit) {
        Ok(out) => out,
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            output.recv().expect("output after the kill")
        }
    }
}

/// `(subcommand, flag, range as the message prints it, bad values)`: for each flag its zero (where
/// zero is out of range), a negative value, the first value past the top, a value too large for
/// any integer type, and malformed text.
const BAD_VALUES: &[(&str, &str, &str, &[&str])] = &[
    (
        "run",
        "--api-rate",
        "1-1000000",
        &["0", "-1", "1000001", "18446744073709551615", "x"],
    ),
    (
        "run",
        "--api-max-body",
        "1024-16777216",
        &["0", "1023", "16777217", "x"],
    ),
    (
        "run",
        "--api-max-batch-body",
        "1024-268435456",
        &["0", "268435457", "x"],
    ),
    (
        "run",
        "--tick",
        "10ms-1m",
        &["0s", "-1s", "61s", "99999999999999999999999s", "soon"],
    ),
    (
        "run",
        "--max-catchup",
        "1m-366d",
        &["0s", "-1m", "367d", "99999999999999999999999s", "x"],
    ),
    (
        "run",
        "--shutdown-grace",
        "0s-1h",
        &["-1s", "3601s", "99999999999999999999999s", "x"],
    ),
    (
        "run",
        "--queue-capacity",
        "1-10000000",
        &["0", "-1", "10000001", "18446744073709551615", "1e3", "x"],
    ),
    (
        "run",
        "--delay-capacity",
        "1-100000000",
        &["0", "-1", "100000001", "1e3", "x"],
    ),
    (
        "run",
        "--shards",
        "1-10000",
        &["0", "-1", "10001", "99999999999999999999999", "x"],
    ),
    (
        "run",
        "--session-timeout",
        "1s-30m",
        &["0s", "-5s", "31m", "99999999999999999999999s", "x"],
    ),
    (
        "run",
        "--partitions",
        "1-10000",
        &["0", "-1", "10001", "99999999999999999999999", "three"],
    ),
    (
        "run",
        "--replication-factor",
        "1-32",
        &["0", "-1", "33", "32768", "99999999999999999999999", "x"],
    ),
    (
        "run",
        "--producers",
        "1-256",
        &["0", "-1", "257", "18446744073709551616", "x"],
    ),
    (
        "run",
        "--batch-size",
        "1-100000",
        &["0", "-1", "100001", "18446744073709551615", "1.5"],
    ),
    (
        "run",
        "--retry-backoff",
        "10ms-30s",
        &["0s", "-1s", "31s", "99999999999999999999999s", "x"],
    ),
    (
        "run",
        "--max-message-bytes",
        "1024-104857600",
        &[
            "0",
            "-1",
            "1023",
            "104857601",
            "99999999999999999999999",
            "1MB",
        ],
    ),
    (
        "run",
        "--max-jobs",
        "1-100000000",
        &["0", "-1", "100000001", "99999999999999999999999", "10M"],
    ),
    (
        "run",
        "--max-file-bytes",
        "1024-17179869184",
        &["0", "-1", "17179869185", "99999999999999999999999", "2GiB"],
    ),
    (
        "validate",
        "--max-message-bytes",
        "1024-104857600",
        &["0", "-1", "104857601", "99999999999999999999999", "x"],
    ),
    (
        "validate",
        "--max-jobs",
        "1-100000000",
        &["0", "-1", "100000001", "99999999999999999999999", "x"],
    ),
    (
        "validate",
        "--max-file-bytes",
        "1024-17179869184",
        &["0", "-1", "17179869185", "99999999999999999999999", "x"],
    ),
    (
        "worker",
        "--timeout",
        "1s-1d",
        &["0s", "-1s", "25h", "99999999999999999999999s", "x"],
    ),
    (
        "worker",
        "--max-timeout",
        "1s-1d",
        &["0s", "-1s", "25h", "99999999999999999999999s", "x"],
    ),
    (
        "worker",
        "--kill-grace",
        "0s-10m",
        &["-1s", "11m", "99999999999999999999999s", "x"],
    ),
    (
        "worker",
        "--max-attempts",
        "1-100",
        &["0", "-1", "101", "99999999999999999999999", "x"],
    ),
    (
        "worker",
        "--max-attempts-cap",
        "1-100",
        &["0", "-1", "101", "99999999999999999999999", "x"],
    ),
    (
        "worker",
        "--retry-backoff",
        "10ms-30s",
        &["0s", "-1s", "31s", "99999999999999999999999s", "x"],
    ),
    (
        "worker",
        "--prefetch",
        "1-100000",
        &["0", "-1", "100001", "18446744073709551616", "x"],
    ),
    (
        "worker",
        "--min-workers",
        "1-1024",
        &["0", "-1", "1025", "18446744073709551616", "x"],
    ),
    (
        "worker",
        "--max-workers",
        "1-1024",
        &["0", "-1", "1025", "18446744073709551616", "x"],
    ),
    (
        "worker",
        "--scale-interval",
        "100ms-1m",
        &["0s", "-1s", "61s", "99999999999999999999999s", "x"],
    ),
    (
        "worker",
        "--target-drain",
        "1s-1h",
        &["0s", "-1s", "61m", "99999999999999999999999s", "x"],
    ),
    (
        "worker",
        "--scale-down-delay",
        "0s-1h",
        &["-1s", "61m", "99999999999999999999999s", "x"],
    ),
    (
        "worker",
        "--shutdown-grace",
        "0s-1h",
        &["-1s", "61m", "99999999999999999999999s", "x"],
    ),
    (
        "worker",
        "--commit-interval",
        "100ms-5m",
        &["0s", "-1s", "301s", "99999999999999999999999s", "x"],
    ),
    (
        "worker",
        "--session-timeout",
        "1s-30m",
        &["0s", "-1s", "31m", "99999999999999999999999s", "x"],
    ),
    (
        "worker",
        "--dedup-capacity",
        "1-10000000",
        &["0", "-1", "10000001", "18446744073709551616", "x"],
    ),
    (
        "worker",
        "--dedupe-window",
        "0s-7d",
        &["-1s", "8d", "99999999999999999999999s", "x"],
    ),
    (
        "worker",
        "--partitions",
        "1-10000",
        &["0", "-1", "10001", "99999999999999999999999", "x"],
    ),
    (
        "worker",
        "--replication-factor",
        "1-32",
        &["0", "-1", "33", "99999999999999999999999", "x"],
    ),
    (
        "tail",
        "--count",
        "1-1000000000",
        &["0", "-1", "1000000001", "18446744073709551616", "x"],
    ),
    (
        "tail",
        "--idle-timeout",
        "100ms-7d",
        &["0s", "-1s", "8d", "99999999999999999999999s", "x"],
    ),
    (
        "status",
        "--timeout",
        "1s-10m",
        &["0s", "-1s", "11m", "99999999999999999999999s", "x"],
    ),
    (
        "trigger",
        "--timeout",
        "1s-10m",
        &["0s", "-1s", "11m", "99999999999999999999999s", "x"],
    ),
    (
        "trigger",
        "--partitions",
        "1-10000",
        &["0", "-1", "10001", "99999999999999999999999", "x"],
    ),
    (
        "trigger",
        "--replication-factor",
        "1-32",
        &["0", "-1", "33", "99999999999999999999999", "x"],
    ),
    (
        "pause",
        "--timeout",
        "1s-10m",
        &["0s", "-1s", "11m", "99999999999999999999999s", "x"],
    ),
    (
        "pause",
        "--until",
        "1s-366d",
        &["0s", "-1s", "367d", "99999999999999999999999s", "x"],
    ),
    (
        "pause",
        "--replication-factor",
        "1-32",
        &["0", "-1", "33", "99999999999999999999999", "x"],
    ),
    (
        "resume",
        "--timeout",
        "1s-10m",
        &["0s", "-1s", "11m", "99999999999999999999999s", "x"],
    ),
    (
        "next",
        "--count",
        "0-100000",
        &["-1", "100001", "18446744073709551615", "x"],
    ),
    (
        "next",
        "-n",
        "0-100000",
        &["-1", "100001", "18446744073709551615", "x"],
    ),
];

#[test]
fn every_numeric_and_duration_flag_refuses_zero_negative_huge_and_malformed_values_with_its_range()
{
    let mut wrong = Vec::new();
    for (command, flag, range, values) in BAD_VALUES {
        for value in *values {
            let arg = format!("{flag}={value}");
            let mut args = vec![*command, arg.as_str()];
            // Should a value pass, nothing may start for real: no Kafka, no handlers.
            match *command {
                "run" => args.push("--dry-run"),
                "worker" => args.extend(["--handlers", "/nonexistent", "--brokers", "127.0.0.1:1"]),
                "tail" | "status" => args.extend(["--brokers", "127.0.0.1:1"]),
                "next" => args.push("* * * * *"),
                "trigger" => args.extend(["some-job", "--schedule", "/nonexistent"]),
                "pause" => args.extend([
                    "some-job",
                    "--schedule",
                    "/nonexistent",
                    "--brokers",
                    "127.0.0.1:1",
                ]),
                "resume" => args.extend(["some-job", "--brokers", "127.0.0.1:1"]),
                _ => {}
            }
            let out = cronq_within(&args, std::time::Duration::from_secs(10));
            let stderr = String::from_utf8_lossy(&out.stderr);
            // clap names a flag by its long form (`-n` is `--count`).
            let named = if *flag == "-n" { "--count" } else { flag };
            if out.status.code() != Some(2)
                || !stderr.contains(named)
                || !stderr.contains(range)
                || !out.stdout.is_empty()
            {
                wrong.push(format!(
                    "cronq {command} {arg}: exit {:?}, stdout {} bytes, stderr: {}",
                    out.status.code(),
                    out.stdout.len(),
                    stderr.trim()
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "not usage errors naming flag and range:\n{}",
        wrong.join("\n")
    );
}

/// The same check reaches a value given through the flag's environment variable.
#[test]
fn a_bad_value_from_the_environment_is_the_same_usage_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_cronq"))
        .env("CRONQ_HTTP", "127.0.0.1:0")
        .args(["next", "* * * * *"])
        .env("CRONQ_COUNT", "18446744073709551615")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--count") && stderr.contains("0-100000"),
        "{stderr}"
    );
}

/// The ends of the range are accepted: `next` prints as many instants as asked, none to the
/// largest count.
#[test]
fn next_accepts_the_ends_of_its_count_range() {
    for (count, lines) in [("0", 0), ("100000", 100_000)] {
        let out = cronq(&[
            "next",
            "* * * * *",
            "--after",
            "2026-01-01T00:00:00Z",
            "-n",
            count,
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), lines);
    }
}

#[test]
fn a_topic_flag_that_kafka_would_refuse_is_a_usage_error() {
    let cases: &[(&str, &str, &str)] = &[
        ("run", "--topic", "jobs/eu"),
        ("run", "--topic", ".."),
        ("run", "--state-topic", "a b"),
        ("worker", "--results-topic", ""),
        ("worker", "--dlq-topic", "dlq!"),
        ("tail", "--topic", "."),
        ("status", "--state-topic", "x:y"),
    ];
    for (command, flag, value) in cases {
        let arg = format!("{flag}={value}");
        let out = cronq_within(
            &[command, &arg, "--brokers", "127.0.0.1:1"],
            std::time::Duration::from_secs(10),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{command} {arg}: {stderr}");
        assert!(
            stderr.contains(flag) && stderr.contains("Kafka topic name"),
            "{command} {arg}: {stderr}"
        );
    }
}

/// A replay before 1970 used to panic in a debug build (the wheel counts minutes from the epoch)
/// and one past 2100 to dispatch nothing in a release build; both are usage errors now.
#[test]
fn a_replay_outside_1970_to_2100_is_a_usage_error_naming_the_flag() {
    let cases = [
        ("--from", "1969-12-31T23:59:00Z", "1970-01-01T01:00:00Z"),
        ("--from", "1970-01-01T00:00:00Z", "1970-01-01T01:00:00Z"),
        ("--from", "0001-01-01T00:00:00Z", "1970-01-01T01:00:00Z"),
        ("--until", "2099-12-31T23:00:00Z", "2100-01-01T00:01:00Z"),
        ("--from", "2100-06-01T00:00:00Z", "2100-06-02T00:00:00Z"),
    ];
    for (flag, from, until) in cases {
        let out = cronq_within(
            &["run", "--dry-run", "--from", from, "--until", until],
            std::time::Duration::from_secs(10),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{from}..{until}: {stderr}");
        assert!(
            stderr.contains(&format!("{flag}: "))
                && stderr.contains(
                    "outside the replayable span 1970-01-01T00:01:00Z to 2100-01-01T00:00:00Z"
                ),
            "{from}..{until}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(out.stdout.is_empty());
    }
    // The span's own ends replay: the first and the last minute of it.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.json");
    std::fs::write(
        &path,
        r#"{"jobs":[{"jobName":"m","job":"x","cronTime":"* * * * *"}]}"#,
    )
    .unwrap();
    let schedule = path.to_str().unwrap();
    for (from, until, slot) in [
        (
            "1970-01-01T00:01:00Z",
            "1970-01-01T00:02:00Z",
            "1970-01-01T00:01:00Z",
        ),
        (
            "2099-12-31T23:59:00Z",
            "2100-01-01T00:00:00Z",
            "2099-12-31T23:59:00Z",
        ),
    ] {
        let out = cronq_within(
            &[
                "run",
                "--dry-run",
                "--schedule",
                schedule,
                "--from",
                from,
                "--until",
                until,
            ],
            std::time::Duration::from_secs(20),
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(stdout.lines().count(), 1, "{stdout}");
        assert!(
            stdout.contains(&format!(r#""scheduledAt":"{slot}""#)),
            "{stdout}"
        );
    }
}

/// `next` and `explain` at the ends of what RFC 3339 can write: no panic, and no instant past
/// year 9999 (which RFC 3339 cannot write).
#[test]
fn next_at_the_ends_of_the_calendar_neither_panics_nor_prints_year_10000() {
    for zone in ["UTC", "Europe/Berlin", "Pacific/Kiritimati", "Etc/GMT+12"] {
        for expr in ["* * * * *", "0 0 L * *", "0 0 29 2 1", "@yearly"] {
            let early = cronq(&[
                "next",
                expr,
                "--tz",
                zone,
                "--after",
                "0000-01-01T00:00:00Z",
                "-n",
                "2",
            ]);
            assert_eq!(
                early.status.code(),
                Some(0),
                "{expr} in {zone}: {}",
                String::from_utf8_lossy(&early.stderr)
            );
            let late = cronq(&[
                "next",
                expr,
                "--tz",
                zone,
                "--after",
                "9999-12-31T23:57:00Z",
                "-n",
                "5",
            ]);
            let stdout = String::from_utf8_lossy(&late.stdout);
            assert_eq!(
                late.status.code(),
                Some(0),
                "{expr} in {zone}: {}",
                String::from_utf8_lossy(&late.stderr)
            );
            assert!(
                stdout.lines().all(|l| l.starts_with("9999-")),
                "{expr} in {zone}: {stdout}"
            );
        }
    }
    // In UTC exactly two minutes of 9999 remain after 23:57.
    let out = cronq(&[
        "next",
        "* * * * *",
        "--after",
        "9999-12-31T23:57:00Z",
        "-n",
        "5",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "9999-12-31T23:58:00Z\n9999-12-31T23:59:00Z\n"
    );
    let out = cronq(&["explain", "0 0 * * *", "--tz", "Pacific/Kiritimati"]);
    assert_eq!(out.status.code(), Some(0));
}

// ---- end of the issue-10 range checks; cases for new worker flags follow below this line ----
#[test]
fn bad_values_of_the_workers_hardening_flags_are_usage_errors_naming_the_flag_and_range() {
    // (flag, malformed values, values out of range, the range the message gives)
    let cases: &[(&str, &[&str], &[&str], &str)] = &[
        (
            "--max-age",
            &["-1h", "soon", ""],
            &["0s", "30s", "367d"],
            "1m-366d",
        ),
        (
            "--max-output",
            &["-1", "8 parsecs", "k", "", "1.5KiB"],
            &["0", "1023", "129KiB", "1MiB", "99999999999999999999"],
            "1KiB-128KiB",
        ),
        (
            "--max-held-bytes",
            &["-1", "8 parsecs", "G", "", "1.5GiB"],
            &["0", "1048575", "1023KiB", "17GiB", "99999999999999999999"],
            "1MiB-16GiB",
        ),
        (
            "--pass-env",
            &["", "1ABC", "A=B", "A B", "A-B", "$HOME"],
            &[],
            "",
        ),
    ];
    for (flag, malformed, out_of_range, range) in cases {
        for (value, in_range_message) in malformed
            .iter()
            .map(|v| (v, false))
            .chain(out_of_range.iter().map(|v| (v, true)))
        {
            let arg = format!("{flag}={value}");
            let out = cronq(&["worker", "--shell", arg.as_str()]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "worker {arg}: {stderr}");
            assert!(
                stderr.contains(flag),
                "worker {arg}: names the flag: {stderr}"
            );
            if in_range_message {
                assert!(
                    stderr.contains(&format!("out of range {range}")),
                    "worker {arg}: gives the range: {stderr}"
                );
            }
            assert!(out.stdout.is_empty(), "worker {arg}: nothing on stdout");
        }
    }
}

#[test]
fn the_workers_size_age_and_env_flags_accept_the_forms_they_document() {
    for (flag, value) in [
        ("--max-output", "1KiB"),
        ("--max-output", "8k"),
        ("--max-output", "4096"),
        ("--max-output", "128KiB"),
        ("--max-held-bytes", "1MiB"),
        ("--max-held-bytes", "1048576"),
        ("--max-held-bytes", "16GiB"),
        ("--max-held-bytes", "512m"),
        ("--max-age", "1m"),
        ("--max-age", "366d"),
        ("--dedupe-window", "0s"),
        ("--dedupe-window", "7d"),
        ("--pass-env", "AWS_REGION"),
        ("--pass-env", "_X1,Y2"),
    ] {
        let arg = format!("{flag}={value}");
        // Parsed, the flags let the worker go on to check --handlers, which fails here with its
        // own message: a value that did not parse would have stopped it before, naming the flag.
        let out = cronq(&["worker", arg.as_str(), "--handlers", "/dev/null"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--handlers: /dev/null is not a directory"),
            "worker {arg}: {stderr}"
        );
    }
}
