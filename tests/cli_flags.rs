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
