//! Every numeric and duration flag of the dispatcher group is range-checked at parse time: a zero,
//! negative, huge or malformed value is a usage error (exit 2) that names the flag, before anything
//! runs.

use std::process::Command;

fn cronq(args: &[&str]) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cronq"));
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
        ("--max-age", "1m"),
        ("--max-age", "366d"),
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
