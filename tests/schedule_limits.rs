//! What a schedule file may hold: the record each job becomes against `--max-message-bytes`,
//! topic names by Kafka's rule, `--max-jobs`, and `--max-file-bytes` (a larger file is refused
//! before it is read). Each refusal names the file, and where there is one the job and the field,
//! in the loader's `file:line:col: jobs[i] "name": field: …` style.

use std::path::{Path, PathBuf};
use std::process::Command;

use cronq::schedule::{self, LoadError, LoadOptions};

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

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn problems(json: &str, options: LoadOptions) -> Vec<String> {
    match schedule::parse(json.as_bytes(), Path::new("s.json"), options) {
        Ok(_) => Vec::new(),
        Err(LoadError::Invalid { problems, .. }) => {
            problems.iter().map(ToString::to_string).collect()
        }
        Err(e) => panic!("{e}"),
    }
}

/// The largest payload of a job named `big` (or any 3-character name) with `* * * * *` and
/// priority 0 whose dispatch still fits a 1 MiB (1 048 576-byte) record batch, worked out by hand
/// from Kafka's v2 format and JobMessage v1:
///
/// - value: `{"v":1,"jobName":"big","priority":0,"job":"` + payload +
///   `","cronTime":"* * * * *","scheduledAt":"2026-01-01T00:00:00Z","dispatchId":"big@2026-01-01T00:00:00Z"}`
/// - key `big`: 1 varint byte + 3
/// - headers: `cronq-dispatch-id` = `big@…Z` (1+17+1+24 = 43), `cronq-priority` = `0` (1+14+1+1
///   = 17), `cronq-scheduled-at` = `…Z` (1+18+1+20 = 40): 100, plus their count (1)
/// - the record: attributes 1, timestamp and offset deltas 1+1, the value's length (about 1 MB,
///   zig-zag 2^21: 3 varint bytes), and the record's own length (3 varint bytes)
/// - the batch header: 61
fn largest_payload_in_one_mib() -> usize {
    let value_frame = r#"{"v":1,"jobName":"big","priority":0,"job":""#.len()
        + r#"","cronTime":"* * * * *","scheduledAt":"2026-01-01T00:00:00Z","dispatchId":"big@2026-01-01T00:00:00Z"}"#.len();
    let record_frame = 61 + 3 + 1 + 1 + 1 + (1 + 3) + 3 + (1 + 100);
    1_048_576 - record_frame - value_frame
}

fn job(name: &str, payload_len: usize) -> String {
    format!(
        r#"{{"jobName":"{name}","job":"{}","cronTime":"* * * * *"}}"#,
        "x".repeat(payload_len)
    )
}

#[test]
fn a_job_whose_record_would_pass_one_mib_fails_validate_naming_file_job_and_field() {
    let fits = largest_payload_in_one_mib();
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{{\"jobs\":[\n{},\n{}\n]}}",
        job("fit", fits),
        job("big", fits + 1)
    );
    let path = write(dir.path(), "s.json", &text);
    let out = cronq(&["validate", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let lines: Vec<&str> = stderr.lines().collect();
    // The problem points at the payload of the second job (line 3, after `{"jobName":"big","job":`).
    assert_eq!(
        lines[0],
        format!(
            "{}:3:24: jobs[1] \"big\": job: each dispatch would be a 1048577-byte Kafka record batch (JobMessage with key and headers), more than --max-message-bytes 1048576; the payload is {} bytes",
            path.display(),
            fits + 1
        )
    );
    assert_eq!(lines.len(), 2, "one problem and the summary: {stderr}");
    assert!(out.stdout.is_empty());

    // The same file with the broker's limit raised: both jobs fit.
    let out = cronq(&[
        "validate",
        path.to_str().unwrap(),
        "--max-message-bytes",
        "2000000",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The size check counts JSON escapes: a payload of quotes is twice its length on the wire.
#[test]
fn the_record_size_counts_the_payload_as_json_writes_it() {
    let limit = LoadOptions {
        max_message_bytes: 4096,
        ..LoadOptions::default()
    };
    // 2000 quotes are 4000 bytes escaped (`\"`): with the frame, over 4096. 2000 letters are not.
    let quotes = format!(
        r#"{{"jobs":[{{"jobName":"q","job":"{}","cronTime":"@daily"}}]}}"#,
        "\\\"".repeat(2000)
    );
    let got = problems(&quotes, limit.clone());
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].starts_with(r#"s.json:1:31: jobs[0] "q": job: each dispatch would be a "#)
            && got[0].contains("more than --max-message-bytes 4096; the payload is 2000 bytes"),
        "{got:?}"
    );
    let letters = format!(
        r#"{{"jobs":[{{"jobName":"q","job":"{}","cronTime":"@daily"}}]}}"#,
        "x".repeat(2000)
    );
    assert_eq!(problems(&letters, limit), Vec::<String>::new());
}

/// A job with an oversized payload and another bad field gets both problems in one pass.
#[test]
fn an_oversized_payload_is_reported_next_to_the_jobs_other_problems() {
    let limit = LoadOptions {
        max_message_bytes: 1024,
        ..LoadOptions::default()
    };
    let text = format!(
        r#"{{"jobs":[{{"jobName":"j","job":"{}","cronTime":"61 * * * *"}}]}}"#,
        "x".repeat(2000)
    );
    let got = problems(&text, limit);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got[0].starts_with(r#"s.json:1:31: jobs[0] "j": job: each dispatch would be a "#),
        "{got:?}"
    );
    assert!(
        got[1].ends_with(r#"jobs[0] "j": cronTime: minute: 61 is out of range 0-59"#),
        "{got:?}"
    );
}

#[test]
fn topic_names_kafka_would_refuse_are_reported_with_file_job_and_field() {
    let long = "t".repeat(250);
    let text = format!(
        r#"{{"jobs": [
  {{"jobName": "slash", "job": "x", "cronTime": "* * * * *", "topic": "jobs/eu"}},
  {{"jobName": "dots", "job": "x", "cronTime": "* * * * *", "topic": ".."}},
  {{"jobName": "dot", "job": "x", "cronTime": "* * * * *", "topic": "."}},
  {{"jobName": "empty", "job": "x", "cronTime": "* * * * *", "topic": ""}},
  {{"jobName": "long", "job": "x", "cronTime": "* * * * *", "topic": "{long}"}},
  {{"jobName": "fine", "job": "x", "cronTime": "* * * * *", "topic": "jobs.eu_1-x"}},
  {{"jobName": "dots-ok", "job": "x", "cronTime": "* * * * *", "topic": "..."}},
  {{"jobName": "max", "job": "x", "cronTime": "* * * * *", "topic": "{}"}}
]}}"#,
        "m".repeat(249)
    );
    assert_eq!(
        problems(&text, LoadOptions::default()),
        [
            r#"s.json:2:70: jobs[0] "slash": topic: "jobs/eu" is not a valid Kafka topic name: '/' is not one of a-z A-Z 0-9 . _ -"#.to_string(),
            r#"s.json:3:69: jobs[1] "dots": topic: ".." is not allowed as a Kafka topic name"#.to_string(),
            r#"s.json:4:68: jobs[2] "dot": topic: "." is not allowed as a Kafka topic name"#.to_string(),
            r#"s.json:5:70: jobs[3] "empty": topic: a Kafka topic name must not be empty"#.to_string(),
            format!(
                r#"s.json:6:69: jobs[4] "long": topic: {}… is 250 characters long; a Kafka topic name has at most 249"#,
                "t".repeat(40)
            ),
        ]
    );
}

#[test]
fn more_jobs_than_max_jobs_is_one_problem_naming_the_first_job_over() {
    let text = r#"{"jobs": [
  {"jobName": "a", "job": "x", "cronTime": "* * * * *"},
  {"jobName": "b", "job": "x", "cronTime": "* * * * *"},
  {"jobName": "c", "job": "x", "cronTime": "61 * * * *"}
]}"#;
    let two = LoadOptions {
        max_jobs: 2,
        ..LoadOptions::default()
    };
    // Nothing past the limit is checked (job c's bad minute is not reported).
    assert_eq!(
        problems(text, two),
        [
            r#"s.json:4:3: jobs[2] "c": the file holds 3 jobs, more than --max-jobs 2; this is the first one over"#
        ]
    );
    let three = LoadOptions {
        max_jobs: 3,
        ..LoadOptions::default()
    };
    assert_eq!(
        problems(text, three),
        [r#"s.json:4:44: jobs[2] "c": cronTime: minute: 61 is out of range 0-59"#]
    );

    // The flag on `run` and `validate`.
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "s.json", text);
    for command in [
        vec!["validate", path.to_str().unwrap(), "--max-jobs", "2"],
        vec![
            "run",
            "--dry-run",
            "--schedule",
            path.to_str().unwrap(),
            "--max-jobs",
            "2",
        ],
    ] {
        let out = cronq(&command);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                r#"{}:4:3: jobs[2] "c": the file holds 3 jobs, more than --max-jobs 2"#,
                path.display()
            )),
            "{command:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "{command:?}");
    }
}

/// A 3 GiB file (sparse: it takes no disk) is over the default 2 GiB limit: `validate` refuses it
/// from its size, and its memory stays far below the file's size.
#[test]
fn a_file_over_max_file_bytes_is_refused_from_its_size_without_being_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.json");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(3 << 30).unwrap();
    drop(file);
    let out = cronq(&["validate", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with(&format!(
            "{}: the file is 3221225472 bytes, more than --max-file-bytes 2147483648; it was not read",
            path.display()
        )),
        "{stderr}"
    );
    // Peak resident memory of the children this test binary waited for, in KiB on Linux.
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        assert_eq!(
            libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()),
            0
        );
        usage.assume_init()
    };
    assert!(
        usage.ru_maxrss < 200 * 1024,
        "a child peaked at {} KiB",
        usage.ru_maxrss
    );

    // A small limit on a small file, through the flag.
    let path = write(
        dir.path(),
        "s.json",
        &format!(
            r#"{{"jobs":[{}]}}"#,
            job("a", 2000) // a 2 KB file
        ),
    );
    let out = cronq(&[
        "validate",
        path.to_str().unwrap(),
        "--max-file-bytes",
        "1024",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("more than --max-file-bytes 1024; it was not read"),
        "{stderr}"
    );
}

/// A file whose size says nothing (a pipe that never ends) is read only up to the limit.
#[test]
fn a_pipe_that_never_ends_is_read_only_up_to_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pipe.json");
    let made = Command::new("mkfifo").arg(&path).status().unwrap();
    assert!(made.success());
    let writer_path = path.clone();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut pipe = std::fs::OpenOptions::new()
            .write(true)
            .open(&writer_path)
            .unwrap();
        let chunk = [b' '; 65_536];
        let mut written = 0usize;
        // Until the reader goes away (EPIPE), or 1 GiB: far more than the limit.
        while written < 1 << 30 && pipe.write_all(&chunk).is_ok() {
            written += chunk.len();
        }
        written
    });
    let options = LoadOptions {
        max_file_bytes: 100_000,
        ..LoadOptions::default()
    };
    let err = schedule::load(&path, options).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{0} has 1 problem:\n  {0}: the file is at least 100001 bytes, more than --max-file-bytes 100000; it was not read",
            path.display()
        )
    );
    let written = writer.join().unwrap();
    assert!(
        written < 1 << 30,
        "the writer was stopped by the closed pipe"
    );
}
