//! `cronq apply FILE` and `cronq export` against a real broker (tansu): the plan on stdout, only
//! the difference written (a second apply moves no high watermark), `--dry-run` writes nothing,
//! `--prune` removes only its own source's jobs, an invalid file writes nothing, and `export`
//! gives back a file `validate` accepts with the jobs in force. What the topic holds is read back
//! with rdkafka (a client we did not write).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use serde_json::Value;

/// Shards of the tests' groups.
const SHARDS: u32 = 4;

/// One test's broker and group, and a directory for its files.
struct Setup {
    broker: Broker,
    group: String,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(prefix: &str) -> Setup {
        Setup {
            broker: Broker::start(),
            group: random_topic(prefix),
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn topic(&self) -> String {
        format!("{}.schedule", self.group)
    }

    /// Writes `jobs` as a schedule file `name` (one entry per line, pretty-printed so positions
    /// are lines) and returns its path.
    fn file(&self, name: &str, jobs: &[Value]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, schedule_text(jobs)).expect("write schedule");
        path
    }

    /// `cronq <args…>` against this test's broker and group.
    fn cronq(&self, args: &[&str]) -> Output {
        self.cronq_in(&self.group, args)
    }

    /// `cronq <args…>` against this test's broker and `group`; apply's cache (if any) in this
    /// test's directory.
    fn cronq_in(&self, group: &str, args: &[&str]) -> Output {
        Command::new(CRONQ)
            .args(args)
            .args(["--brokers", &self.broker.address(), "--group", group])
            .args(["--timeout", "20s"])
            .env("XDG_CACHE_HOME", self.dir.path().join("cache"))
            .stdin(Stdio::null())
            .output()
            .expect("run cronq")
    }

    /// `cronq apply FILE <extra…> --shards 4`, which must succeed; returns its stdout.
    fn apply(&self, file: &Path, extra: &[&str]) -> String {
        self.apply_logged(file, extra).0
    }

    /// As [`Setup::apply`], returning stdout and stderr.
    fn apply_logged(&self, file: &Path, extra: &[&str]) -> (String, String) {
        let mut args = vec!["apply", file.to_str().unwrap(), "--shards", "4"];
        args.extend(extra);
        let out = self.cronq(&args);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            out.status.success(),
            "cronq {args:?}: {}\n{stderr}",
            out.status
        );
        (String::from_utf8(out.stdout).expect("UTF-8 plan"), stderr)
    }

    fn watermarks(&self) -> BTreeMap<i32, i64> {
        high_watermarks(&self.broker.address(), &self.topic(), SHARDS as i32)
    }

    /// Every record of the schedule topic: (key, value or None for a tombstone).
    fn records(&self) -> Vec<(String, Option<Value>)> {
        let (_, records) = read_raw(&self.broker.address(), &self.topic(), SHARDS as i32);
        records
    }

    /// `cronq export`, which must succeed: the file's jobs by name, and stderr.
    fn export(&self) -> (BTreeMap<String, Value>, PathBuf, String) {
        let path = self.dir.path().join("exported.json");
        let out = self.cronq(&["export", "--output", path.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "export: {}\n{stderr}", out.status);
        let text = std::fs::read_to_string(&path).expect("exported file");
        (jobs_by_name(&text), path, stderr)
    }
}

fn job(name: &str, cron: &str) -> Value {
    serde_json::json!({"jobName": name, "job": format!("run-{name}"), "cronTime": cron})
}

fn schedule_text(jobs: &[Value]) -> String {
    let lines: Vec<String> = jobs
        .iter()
        .map(|j| format!("    {}", serde_json::to_string(j).unwrap()))
        .collect();
    format!("{{\n  \"jobs\": [\n{}\n  ]\n}}\n", lines.join(",\n"))
}

fn jobs_by_name(text: &str) -> BTreeMap<String, Value> {
    let file: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"));
    file["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no jobs array: {text}"))
        .iter()
        .map(|j| (j["jobName"].as_str().unwrap().to_string(), j.clone()))
        .collect()
}

/// Reads every record of `topic` (all partitions, to the high watermarks) with rdkafka.
fn read_raw(broker: &str, topic: &str, partitions: i32) -> (usize, Vec<(String, Option<Value>)>) {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};
    let high = high_watermarks(broker, topic, partitions);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .set("group.id", random_topic("apply-reader"))
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .expect("partition");
    }
    consumer.assign(&tpl).expect("assign");
    let wanted: i64 = high.values().sum();
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while (out.len() as i64) < wanted {
        assert!(
            std::time::Instant::now() < deadline,
            "read {} of {wanted} records",
            out.len()
        );
        if let Some(Ok(m)) = consumer.poll(std::time::Duration::from_millis(200)) {
            let key = String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned();
            let value = m
                .payload()
                .map(|v| serde_json::from_slice(v).expect("JSON record"));
            out.push((key, value));
        }
    }
    (out.len(), out)
}

#[test]
fn a_second_apply_of_the_same_file_writes_nothing() {
    let setup = Setup::new("apply-twice");
    let jobs = [
        job("backup", "0 3 * * *"),
        job("report", "*/15 * * * *"),
        job("sweep", "@hourly"),
    ];
    let file = setup.file("prod.json", &jobs);
    let first = setup.apply(&file, &[]);
    for name in ["backup", "report", "sweep"] {
        assert!(first.contains(&format!("+ {name}\n")), "{first}");
    }
    assert!(
        first.contains("3 to add, 0 to change, 0 to remove"),
        "{first}"
    );
    let records = setup.records();
    assert_eq!(records.len(), 3, "one record per job: {records:?}");
    for (key, value) in &records {
        let value = value.as_ref().expect("no tombstone");
        assert_eq!(value["v"], 1);
        assert_eq!(&value["spec"]["jobName"], key.as_str());
        assert_eq!(value["changed"]["via"], "apply");
        assert_eq!(value["changed"]["source"], "prod.json");
        assert!(!value["changed"]["by"].as_str().unwrap().is_empty());
        let wanted = jobs.iter().find(|j| j["jobName"] == key.as_str()).unwrap();
        assert_eq!(&value["spec"], wanted, "the spec is the file's entry");
    }
    let before = setup.watermarks();

    // The same jobs, re-indented and with their keys in another order: the same JSON values.
    let reordered: Vec<String> = jobs
        .iter()
        .map(|j| {
            format!(
                "{{ \"cronTime\" : {}, \"job\": {},\n \"jobName\": {} }}",
                j["cronTime"], j["job"], j["jobName"]
            )
        })
        .collect();
    std::fs::write(
        &file,
        format!("{{\"jobs\": [\n{}\n]}}", reordered.join(",\n")),
    )
    .unwrap();
    let second = setup.apply(&file, &[]);
    assert!(
        second.contains("0 to add, 0 to change, 0 to remove; 3 unchanged"),
        "{second}"
    );
    assert_eq!(
        setup.watermarks(),
        before,
        "the second apply wrote something"
    );
}

#[test]
fn a_changed_field_shows_in_the_plan_and_a_dry_run_writes_nothing() {
    let setup = Setup::new("apply-dry");
    let file = setup.file(
        "jobs.json",
        &[job("a", "*/5 * * * *"), job("b", "0 * * * *")],
    );

    // Before anything exists: the plan, and no topic is created.
    let out = setup.cronq(&[
        "apply",
        file.to_str().unwrap(),
        "--dry-run",
        "--shards",
        "4",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(plan.contains("+ a\n") && plan.contains("+ b\n"), "{plan}");
    assert!(plan.contains("2 to add"), "{plan}");
    let topics = topic_names(&setup.broker.address());
    assert!(
        !topics.contains(&setup.topic()),
        "a dry run created {}: {topics:?}",
        setup.topic()
    );

    setup.apply(&file, &[]);
    let before = setup.watermarks();
    let mut changed_b = job("b", "0 * * * *");
    changed_b["timezone"] = "Europe/Berlin".into();
    let file = setup.file(
        "jobs.json",
        &[job("a", "*/10 * * * *"), changed_b, job("c", "@daily")],
    );
    let plan = setup.apply(&file, &["--dry-run"]);
    assert!(
        plan.contains("~ a\n    cronTime: \"*/5 * * * *\" -> \"*/10 * * * *\"\n"),
        "{plan}"
    );
    assert!(
        plan.contains("~ b\n    + timezone: \"Europe/Berlin\"\n"),
        "{plan}"
    );
    assert!(plan.contains("+ c\n"), "{plan}");
    assert!(
        plan.contains("1 to add, 2 to change, 0 to remove"),
        "{plan}"
    );
    assert_eq!(setup.watermarks(), before, "--dry-run wrote something");

    // The same plan without --dry-run writes exactly those three jobs.
    let applied = setup.apply(&file, &[]);
    assert_eq!(applied, plan, "the plan applied is the plan shown");
    let after = setup.watermarks();
    let written: i64 = after.values().sum::<i64>() - before.values().sum::<i64>();
    assert_eq!(written, 3, "{before:?} -> {after:?}");
}

/// The topics the broker has.
fn topic_names(broker: &str) -> Vec<String> {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker)
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(None, std::time::Duration::from_secs(10))
        .expect("metadata");
    metadata
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .collect()
}

#[test]
fn prune_removes_only_the_jobs_of_its_own_source() {
    let setup = Setup::new("apply-prune");
    let team_a = setup.file(
        "team-a.json",
        &[job("a1", "0 1 * * *"), job("a2", "0 2 * * *")],
    );
    let team_b = setup.file("team-b.json", &[job("b1", "0 3 * * *")]);
    setup.apply(&team_a, &[]);
    setup.apply(&team_b, &[]);
    // The same file under another name, tagged as team-a's by --source.
    let smaller = setup.file("next.json", &[job("a1", "0 1 * * *")]);

    let before = setup.watermarks();
    let kept = setup.apply(&smaller, &["--source", "team-a.json"]);
    assert!(
        kept.contains(
            "a2: not in the file, kept (--prune deletes the jobs of source \"team-a.json\""
        ),
        "{kept}"
    );
    assert!(
        !kept.contains("b1"),
        "another source's job is not listed: {kept}"
    );
    assert!(kept.contains("0 to remove"), "{kept}");
    assert_eq!(
        setup.watermarks(),
        before,
        "without --prune nothing is written"
    );

    let pruned = setup.apply(&smaller, &["--source", "team-a.json", "--prune"]);
    assert!(pruned.contains("- a2\n"), "{pruned}");
    assert!(!pruned.contains("- b1"), "{pruned}");
    assert!(
        pruned.contains("0 to add, 0 to change, 1 to remove"),
        "{pruned}"
    );
    let tombstones: Vec<String> = setup
        .records()
        .into_iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k)
        .collect();
    assert_eq!(tombstones, vec!["a2".to_string()]);

    let (jobs, _, _) = setup.export();
    assert_eq!(
        jobs.keys().cloned().collect::<Vec<_>>(),
        vec!["a1".to_string(), "b1".to_string()],
        "team-b's job survives team-a's prune"
    );
}

#[test]
fn an_invalid_file_exits_non_zero_with_file_line_col_and_writes_nothing() {
    let setup = Setup::new("apply-invalid");
    let good = setup.file("prod.json", &[job("a", "0 * * * *")]);
    setup.apply(&good, &[]);
    let before = setup.watermarks();

    let bad = setup.file(
        "prod.json",
        &[job("a", "5 * * * *"), job("b", "61 * * * *")],
    );
    let text = std::fs::read_to_string(&bad).unwrap();
    // Where the bad value starts, as an editor counts (1-based line and column).
    let offset = text.find("\"61 * * * *\"").unwrap();
    let line = text[..offset].matches('\n').count() + 1;
    let col = offset - text[..offset].rfind('\n').map_or(0, |i| i + 1) + 1;
    let out = setup.cronq(&["apply", bad.to_str().unwrap(), "--shards", "4"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let wanted = format!(
        "{}:{line}:{col}: jobs[1] \"b\": cronTime: minute: 61 is out of range 0-59",
        bad.display()
    );
    assert!(stderr.contains(&wanted), "wanted {wanted:?} in:\n{stderr}");
    assert!(stderr.contains("nothing was written"), "{stderr}");
    assert!(out.stdout.is_empty(), "no plan for an invalid file");
    assert_eq!(
        setup.watermarks(),
        before,
        "an invalid file wrote something"
    );
}

#[test]
fn export_gives_back_the_jobs_in_force_as_a_file_validate_accepts() {
    let setup = Setup::new("apply-export");
    let mut berlin = job("berlin", "30 2 * * *");
    berlin["timezone"] = "Europe/Berlin".into();
    berlin["catchup"] = "latest".into();
    let mut off = job("off", "*/7 * * * *");
    off["enabled"] = false.into();
    off["priority"] = 5.into();
    let jobs = vec![
        job("zeta", "@daily"),
        berlin,
        off,
        job("alpha", "0 0 1 1 *"),
    ];
    let file = setup.file("all.json", &jobs);
    setup.apply(&file, &[]);

    // A record that fails the checks, written over alpha: alpha's last good version stays.
    let shard = cronq::schedule::ShardFilter::all(SHARDS).shard_of("alpha") as i32;
    let bad = serde_json::json!({"v": 1, "spec": job("alpha", "61 * * * *"),
        "changed": {"at": "2026-12-07T10:00:00.000Z", "by": "t", "via": "api"}});
    produce(
        &setup.broker.address(),
        &setup.topic(),
        &[Record {
            key: b"alpha".to_vec(),
            value: serde_json::to_vec(&bad).unwrap(),
            partition: Some(shard),
            headers: vec![],
        }],
    );
    let bad_offset = setup.watermarks()[&shard] - 1;

    let (exported, path, stderr) = setup.export();
    assert!(
        stderr.contains(&format!("partition={shard}"))
            && stderr.contains(&format!("offset={bad_offset}")),
        "the rejected record is reported with its partition and offset: {stderr}"
    );
    assert!(stderr.contains("61 is out of range"), "{stderr}");
    let wanted: BTreeMap<String, Value> = jobs
        .iter()
        .map(|j| (j["jobName"].as_str().unwrap().to_string(), j.clone()))
        .collect();
    assert_eq!(exported, wanted, "the exported jobs are the applied ones");
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("{\"") && !l.starts_with("{\"jobs\""))
        .map(|l| {
            let v: Value = serde_json::from_str(l.trim_end_matches(',')).unwrap();
            v["jobName"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        lines,
        exported.keys().cloned().collect::<Vec<_>>(),
        "one job per line, sorted by name:\n{text}"
    );
    let stdout = setup.cronq(&["export"]);
    assert!(stdout.status.success());
    assert_eq!(
        String::from_utf8_lossy(&stdout.stdout),
        text,
        "stdout carries the same file as --output"
    );
    let validate = Command::new(CRONQ)
        .args(["validate", path.to_str().unwrap()])
        .output()
        .expect("validate");
    assert!(
        validate.status.success(),
        "validate refused the export: {}",
        String::from_utf8_lossy(&validate.stderr)
    );

    // Applying the export under the first file's source restores alpha over the bad record
    // and leaves the others alone.
    let plan = setup.apply(&path, &["--dry-run", "--source", "all.json"]);
    assert!(
        plan.contains("~ alpha\n    cronTime: \"61 * * * *\" -> \"0 0 1 1 *\"\n"),
        "{plan}"
    );
    assert!(
        plan.contains("0 to add, 1 to change, 0 to remove; 3 unchanged"),
        "{plan}"
    );
}

#[test]
fn a_topic_with_other_partitions_than_the_group_has_shards_is_refused() {
    let setup = Setup::new("apply-parts");
    create_topic(
        &setup.broker.address(),
        &format!("{}.state", setup.group),
        4,
    );
    create_topic(&setup.broker.address(), &setup.topic(), 2);
    let file = setup.file("f.json", &[job("a", "0 * * * *")]);
    let out = setup.cronq(&["apply", file.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("has 2 partitions, but the group has 4 shards"),
        "{stderr}"
    );
    assert_eq!(
        high_watermarks(&setup.broker.address(), &setup.topic(), 2)
            .values()
            .sum::<i64>(),
        0
    );
}

#[test]
fn an_unreachable_broker_fails_within_the_timeout_and_bad_flags_are_usage_errors() {
    let (_dir, file) =
        schedule_file(r#"{"jobs":[{"jobName":"a","job":"x","cronTime":"* * * * *"}]}"#);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let started = std::time::Instant::now();
    let out = Command::new(CRONQ)
        .args(["apply", file.to_str().unwrap(), "--timeout", "2s"])
        .args(["--brokers", &format!("127.0.0.1:{port}")])
        .output()
        .expect("run cronq");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("connecting") && stderr.contains("within 2s"),
        "{stderr}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(15));

    for (args, wanted) in [
        (vec!["apply", "f.json", "--source", ""], "range is 1-200"),
        (
            vec!["apply", "f.json", "--timeout", "0s"],
            "out of range 1s-10m",
        ),
        (
            vec!["apply", "f.json", "--shards", "0"],
            "out of range 1-10000",
        ),
        (
            vec!["apply", "f.json", "--replication-factor", "33"],
            "out of range 1-32",
        ),
        (vec!["export", "--timeout", "11m"], "out of range 1s-10m"),
    ] {
        let out = Command::new(CRONQ).args(&args).output().expect("run cronq");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(wanted), "{args:?}: {stderr}");
    }
}

/// `field=N` of the log line containing `message`, in `stderr`.
fn logged(stderr: &str, message: &str, field: &str) -> u64 {
    let line = stderr
        .lines()
        .find(|l| l.contains(message))
        .unwrap_or_else(|| panic!("no {message:?} line:\n{stderr}"));
    line.split(&format!(" {field}="))
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in {line}"))
}

/// Issue 20, re-apply: apply keeps a copy of the topic, so the next apply from the same machine
/// fetches only the records written since, its own writes included in the copy; another writer's
/// records are still read and planned against; and a copy the topic does not confirm (here one of
/// another group's topic) is read past whole. Each plan is checked against a plan made with
/// `--no-cache` at the same moment.
#[test]
fn a_reapply_reads_only_what_was_written_since_and_a_copy_the_topic_denies_is_not_used() {
    let setup = Setup::new("apply-cache");
    let jobs: Vec<Value> = (0..120)
        .map(|i| job(&format!("job-{i:03}"), "*/5 * * * *"))
        .collect();
    let file = setup.file("mine.json", &jobs);
    let path = file.to_str().unwrap();
    let apply = |extra: &[&str]| setup.apply_logged(&file, extra);
    let (_, first) = apply(&[]);
    assert_eq!(
        logged(&first, "apply cache written", "jobs"),
        120,
        "{first}"
    );
    // Its own 120 writes are in the copy: nothing is fetched.
    let (plan, again) = apply(&[]);
    assert!(plan.contains("120 unchanged"), "{plan}");
    assert_eq!(logged(&again, "read the schedule topic", "records_read"), 0);
    assert_eq!(
        logged(&again, "read the schedule topic", "partitions_resumed"),
        4
    );
    // Another writer (no cache of its own) takes one job over and adds one.
    let other = setup.file(
        "other.json",
        &[job("job-007", "0 * * * *"), job("zz-other", "@daily")],
    );
    setup.apply(&other, &["--no-cache"]);
    let (cached_plan, stderr) = apply(&["--dry-run"]);
    let (uncached_plan, _) = apply(&["--dry-run", "--no-cache"]);
    assert_eq!(cached_plan, uncached_plan);
    assert!(cached_plan.contains("~ job-007"), "{cached_plan}");
    assert_eq!(
        logged(&stderr, "read the schedule topic", "records_read"),
        2
    );
    assert_eq!(
        logged(&stderr, "read the schedule topic", "partitions_read_whole"),
        0
    );
    // A copy from another topic: every mark names a record this topic does not have.
    let cache_dir = setup.dir.path().join("cache/cronq");
    let files = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    };
    let [mine] = files(&cache_dir).try_into().expect("one cache file");
    let elsewhere = format!("{}-elsewhere", setup.group);
    let out = setup.cronq_in(&elsewhere, &["apply", path, "--shards", "4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = files(&cache_dir)
        .into_iter()
        .find(|f| *f != mine)
        .expect("the other group's cache file");
    std::fs::copy(&theirs, &mine).unwrap();
    let (plan, stderr) = apply(&[]);
    assert_eq!(plan, uncached_plan, "{stderr}");
    assert_eq!(
        logged(&stderr, "read the schedule topic", "partitions_read_whole"),
        4
    );
    let (plan, stderr) = apply(&[]);
    assert!(plan.contains("120 unchanged"), "{plan}");
    assert_eq!(
        logged(&stderr, "read the schedule topic", "records_read"),
        0
    );
    // A file that is not a cache is named, and the apply goes on without it.
    std::fs::write(&mine, b"not a cache").unwrap();
    let (plan, stderr) = apply(&["--dry-run"]);
    assert!(plan.contains("120 unchanged"), "{plan}");
    assert!(stderr.contains("the apply cache is unreadable"), "{stderr}");
}
