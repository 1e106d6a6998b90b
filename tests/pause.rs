//! `cronq pause` / `cronq resume` on a real broker (tansu) with real `cronq run` processes on a
//! drill clock (a "minute" lasts 6 real seconds): paused slots are not sent, a pause survives a
//! kill -9 of its shard's owner, a pause's end follows each job's catch-up rule, `--all` stops
//! everything, `--until` ends a pause by itself, and bad input is refused with a clear error.
//! What arrived is read back with rdkafka and checked slot by slot.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::*;

/// cronq's default `--partitions` of the job topic.
const PARTITIONS: i32 = 3;

/// Shards of the tests' groups.
const SHARDS: i32 = 4;

/// One test's broker, topic, schedule and drill clock.
struct Setup {
    broker: Broker,
    topic: String,
    dir: tempfile::TempDir,
    schedule: PathBuf,
    drill: Drill,
}

impl Setup {
    fn new(prefix: &str, schedule_json: &str) -> Setup {
        let (dir, schedule) = schedule_file(schedule_json);
        Setup {
            broker: Broker::start(),
            topic: random_topic(prefix),
            dir,
            schedule,
            drill: Drill::new(10),
        }
    }

    fn address(&self) -> String {
        self.broker.address()
    }

    fn group(&self) -> String {
        format!("g-{}", self.topic)
    }

    fn member(&self, name: &str) -> Dispatcher {
        Dispatcher::start(
            &self.address(),
            &self.topic,
            &self.schedule,
            self.drill,
            name,
            self.dir.path(),
            &["--shards", &SHARDS.to_string()],
        )
    }

    /// `cronq <args…>` against this test's broker and group, on its drill clock.
    fn cronq(&self, args: &[&str]) -> std::process::Output {
        Command::new(CRONQ)
            .args(args)
            .args(["--brokers", &self.address(), "--group", &self.group()])
            .args(["--drill-clock", &self.drill.setting()])
            .stdin(Stdio::null())
            .output()
            .expect("run cronq")
    }

    /// `cronq pause`/`resume …`, which must succeed; returns the record it printed.
    fn control(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        if args[0] == "pause" {
            all.extend(["--schedule", self.schedule.to_str().unwrap()]);
        }
        let out = self.cronq(&all);
        assert!(
            out.status.success(),
            "cronq {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.lines().count(), 1, "one line of data: {stdout}");
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    }

    fn status_json(&self) -> serde_json::Value {
        let out = self.cronq(&["status", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "{e}: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// Waits until every shard is owned and no cursor lags.
    fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.cronq(&["status", "--json"]);
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the group did not become healthy: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            (0..25).for_each(|_| pause());
        }
    }

    /// The slots (drill minutes) that arrived, per job, and how many records carried a
    /// dispatchId more than once.
    fn arrivals(&self, expected: usize) -> BTreeMap<String, BTreeSet<i64>> {
        let records = consume_all(
            &self.address(),
            &self.topic,
            PARTITIONS,
            expected,
            Duration::from_secs(120),
        );
        let mut slots: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
        for r in &records {
            let name = r.value["jobName"].as_str().expect("jobName").to_string();
            let scheduled = r.value["scheduledAt"].as_str().expect("scheduledAt");
            assert_eq!(
                r.value["dispatchId"],
                format!("{name}@{scheduled}"),
                "{:?}",
                r.value
            );
            let at: DateTime<Utc> = scheduled.parse().unwrap();
            slots
                .entry(name)
                .or_default()
                .insert(at.timestamp().div_euclid(60));
        }
        slots
    }
}

/// An instant of a control record.
fn instant(record: &serde_json::Value, field: &str) -> DateTime<Utc> {
    record[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field} in {record}"))
        .parse()
        .unwrap()
}

/// The drill minutes whose slot lies in [since, until).
fn minutes_in(since: DateTime<Utc>, until: DateTime<Utc>) -> BTreeSet<i64> {
    let first = (since.timestamp() + 59).div_euclid(60);
    let last = (until.timestamp() - 1).div_euclid(60);
    (first..=last).collect()
}

/// Every minute from `first` to `last` is in `slots`; names the missing ones.
fn assert_every_minute(job: &str, slots: &BTreeSet<i64>, first: i64, last: i64) {
    let missing: Vec<i64> = (first..=last).filter(|m| !slots.contains(m)).collect();
    assert!(
        missing.is_empty(),
        "{job}: minutes {missing:?} missing of {first}..={last}"
    );
}

/// Pause, kill -9 of the paused job's shard owner (a fresh member joins as it dies), resume:
/// the paused slots of a `catchup: none` job and of a job resumed `--drop-missed` are not
/// sent; those of a job with the default rule are sent on resume, each with its own
/// scheduledAt; every other slot of every job arrives, around the takeover too.
#[test]
fn a_pause_survives_a_takeover_and_its_resume_follows_each_jobs_catch_up_rule() {
    let mut jobs = vec![
        r#"{"jobName":"held","job":"x","cronTime":"* * * * *","catchup":"none"}"#.to_string(),
        r#"{"jobName":"caught","job":"x","cronTime":"* * * * *"}"#.to_string(),
        r#"{"jobName":"dropped","job":"x","cronTime":"* * * * *"}"#.to_string(),
    ];
    jobs.extend(
        (0..20)
            .map(|i| format!(r#"{{"jobName":"other-{i:02}","job":"x","cronTime":"* * * * *"}}"#)),
    );
    let setup = Setup::new(
        "pause-takeover",
        &format!(r#"{{"jobs":[{}]}}"#, jobs.join(",")),
    );
    let drill = setup.drill;
    let mut members = vec![setup.member("a"), setup.member("b")];
    for m in &mut members {
        m.wait_log("taking over a shard", Duration::from_secs(90));
    }
    setup.wait_healthy(Duration::from_secs(120));
    drill.wait_minutes(1, 30);
    let reason = "incident 4711: payments db";
    let held = setup.control(&["pause", "held", "--reason", reason]);
    let caught = setup.control(&["pause", "caught"]);
    let dropped = setup.control(&["pause", "dropped"]);
    assert_eq!(held["paused"], true);
    assert_eq!(held["reason"], reason);
    drill.wait_minutes(1, 20);

    // The owner of held's shard dies; a fresh member joins as it does.
    let shard = cronq::wire::partition_for(b"held", SHARDS);
    let view = setup.status_json();
    let owner = view["shards"][shard as usize]["owner"]
        .as_str()
        .unwrap_or_else(|| panic!("shard {shard} has no owner: {view}"))
        .to_string();
    let victim = members.iter().position(|m| m.name == owner).unwrap();
    let killed_at = drill.minute();
    members[victim].kill9();
    let mut fresh = setup.member("c");
    fresh.wait_log("taking over a shard", Duration::from_secs(90));
    let deadline = Instant::now() + Duration::from_secs(240);
    let survivors: Vec<usize> = (0..members.len()).filter(|i| *i != victim).collect();
    loop {
        let logs: String = survivors
            .iter()
            .map(|i| members[*i].log())
            .collect::<String>()
            + &fresh.log();
        if logs.contains(&format!("previous_owner=\"{owner}\"")) {
            let by_fresh = fresh.log().contains(&format!("previous_owner=\"{owner}\""));
            eprintln!(
                "{owner}'s shards taken over by {}",
                if by_fresh {
                    "the fresh member"
                } else {
                    "a survivor"
                }
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no takeover of {owner}'s shards:\n{logs}"
        );
        pause();
    }
    setup.wait_healthy(Duration::from_secs(240));
    let status = setup.status_json();
    let paused_jobs: Vec<&str> = status["paused"]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["job"].as_str())
        .collect();
    assert_eq!(paused_jobs, ["caught", "dropped", "held"], "{status}");
    drill.wait_minutes(1, 30);
    let held_end = setup.control(&["resume", "held"]);
    let caught_end = setup.control(&["resume", "caught"]);
    let dropped_end = setup.control(&["resume", "dropped", "--drop-missed"]);
    assert_eq!(held_end["paused"], false);
    assert_eq!(
        held_end["since"], held["since"],
        "a resume closes its pause's interval"
    );
    assert_eq!(dropped_end["dropMissed"], true);
    drill.wait_minutes(2, 10);
    let stopped = drill.minute();
    members.push(fresh);
    for i in (0..members.len()).filter(|i| *i != victim) {
        members[i].terminate();
    }
    let logs: Vec<&Dispatcher> = members.iter().collect();
    with_logs(&logs, || {
        // Every shard's final cursor got past the resume: the paused slots sent late were acked
        // and counted, and nothing is left for a next owner to re-send.
        let view = setup.status_json();
        for shard in view["shards"].as_array().unwrap() {
            let cursor: DateTime<Utc> = shard["cursor"].as_str().unwrap().parse().unwrap();
            let minute = cursor.timestamp().div_euclid(60);
            assert!(
                minute >= stopped - 1,
                "final cursor {minute} < {}: {shard}",
                stopped - 1
            );
        }
        let arrived = setup.arrivals(23 * 12);
        let paused_held = minutes_in(instant(&held, "since"), instant(&held_end, "until"));
        let paused_caught = minutes_in(instant(&caught, "since"), instant(&caught_end, "until"));
        let paused_dropped = minutes_in(instant(&dropped, "since"), instant(&dropped_end, "until"));
        eprintln!(
            "paused minutes {paused_held:?}, owner {owner} killed in minute {killed_at}, stopped {stopped}"
        );
        assert!(
            paused_held.len() >= 3,
            "the pause spans the takeover: {paused_held:?}"
        );
        assert!(paused_held.contains(&killed_at));
        let last = stopped - 1;
        for (job, slots) in &arrived {
            // A shard's first owner starts it at the next minute: each job from its own first.
            let first = *slots.first().unwrap();
            let (skipped, must_skip): (BTreeSet<i64>, bool) = match job.as_str() {
                "held" => (paused_held.clone(), true),
                "dropped" => (paused_dropped.clone(), true),
                "caught" => (paused_caught.clone(), false),
                _ => (BTreeSet::new(), false),
            };
            let got: BTreeSet<i64> = slots.intersection(&skipped).copied().collect();
            if must_skip {
                assert!(got.is_empty(), "{job}: paused slots sent: {got:?}");
                let expected: BTreeSet<i64> =
                    (first..=last).filter(|m| !skipped.contains(m)).collect();
                let missing: Vec<&i64> = expected.difference(slots).collect();
                assert!(
                    missing.is_empty(),
                    "{job}: unpaused slots missing: {missing:?}"
                );
            } else {
                // The default rule (all, 1h): the paused slots too, each as its own slot.
                assert_every_minute(job, slots, first, last);
            }
        }
        assert_eq!(arrived.len(), 23, "every job arrived");
    });
    // One log line per change of state, not one per slot.
    let all_logs: String = members.iter().map(|m| m.log()).collect();
    assert!(all_logs.contains("pause ended (resumed)"), "{all_logs}");
    let paused_lines = all_logs
        .lines()
        .filter(|l| l.contains("job paused") && l.contains("held"))
        .count();
    assert!(
        paused_lines <= 3,
        "one line per member that saw it: {paused_lines}"
    );
}

/// `pause --all` stops every dispatch from the first minute after it, also on a member started
/// after a kill -9 (it reads the pause back before its first dispatch); `resume --all` restarts
/// them all (with `--drop-missed`, without the paused slots).
#[test]
fn pause_all_stops_every_dispatch_within_a_tick_and_resume_all_restarts_them() {
    let jobs: Vec<String> = (0..50)
        .map(|i| format!(r#"{{"jobName":"job-{i:02}","job":"x","cronTime":"* * * * *"}}"#))
        .collect();
    let setup = Setup::new("pause-all", &format!(r#"{{"jobs":[{}]}}"#, jobs.join(",")));
    let drill = setup.drill;
    let mut member = setup.member("solo");
    member.wait_log("taking over a shard", Duration::from_secs(90));
    drill.wait_minutes(1, 30);
    let written = Instant::now();
    let all = setup.control(&["pause", "--all", "--reason", "incident"]);
    assert_eq!(all["job"], serde_json::Value::Null);
    member.wait_log("job paused job=\"--all\"", Duration::from_secs(30));
    eprintln!(
        "pause --all applied {:?} (real) after the command returned",
        written.elapsed()
    );
    drill.wait_minutes(1, 10);
    member.kill9();
    let mut member = setup.member("solo-2");
    member.wait_log("taking over a shard", Duration::from_secs(90));
    drill.wait_minutes(1, 30);
    // While paused: nothing at or after the pause's start has been sent.
    let since = instant(&all, "since");
    let during = setup.arrivals(50 * 4);
    let late: Vec<(String, i64)> = during
        .iter()
        .flat_map(|(j, s)| s.iter().map(move |m| (j.clone(), *m)))
        .filter(|(_, m)| *m * 60 >= since.timestamp())
        .collect();
    assert!(
        late.is_empty(),
        "sent while everything was paused: {late:?}"
    );
    let text = String::from_utf8_lossy(&setup.cronq(&["status"]).stdout).to_string();
    assert!(
        text.starts_with("PAUSED: ALL JOBS"),
        "--all first and loud:\n{text}"
    );
    let end = setup.control(&["resume", "--all", "--drop-missed"]);
    drill.wait_minutes(2, 10);
    let stopped = drill.minute();
    member.terminate();
    with_logs(&[&member], || {
        let arrived = setup.arrivals(50 * 8);
        let paused = minutes_in(since, instant(&end, "until"));
        assert!(paused.len() >= 2, "{paused:?}");
        let resumed_from = paused.last().unwrap() + 1;
        assert_eq!(arrived.len(), 50);
        for (job, slots) in &arrived {
            let sent: Vec<&i64> = slots.intersection(&paused).collect();
            assert!(sent.is_empty(), "{job}: paused slots sent: {sent:?}");
            assert_every_minute(job, slots, resumed_from, stopped - 1);
            assert!(
                slots.contains(&(paused.first().unwrap() - 1)),
                "{job}: the slot before the pause"
            );
        }
    });
}

/// `--until` ends a pause by itself; while it lasts `cronq status`, the status page and
/// /status.json list it, and the metric counts its slots as skipped with reason `paused`.
#[test]
fn until_ends_a_pause_by_itself_and_status_lists_it_while_it_lasts() {
    let setup = Setup::new(
        "pause-until",
        r#"{"jobs":[{"jobName":"nightly","job":"x","cronTime":"* * * * *","catchup":"none"},
                   {"jobName":"steady","job":"x","cronTime":"* * * * *"}]}"#,
    );
    let drill = setup.drill;
    let mut member = setup.member("solo");
    member.wait_log("taking over a shard", Duration::from_secs(90));
    let addr = http_addr_in_log(&member.log, Duration::from_secs(30));
    drill.wait_minutes(1, 30);
    let until = (drill.now() + chrono::Duration::minutes(3)).to_rfc3339();
    let record = setup.control(&[
        "pause",
        "nightly",
        "--until",
        &until,
        "--reason",
        "vendor maintenance",
    ]);
    member.wait_log("job paused job=\"nightly\"", Duration::from_secs(30));
    drill.wait_minutes(1, 30);

    let view = setup.status_json();
    let listed = &view["paused"]["jobs"][0];
    assert_eq!(listed["job"], "nightly", "{view}");
    assert_eq!(listed["reason"], "vendor maintenance");
    assert_eq!(listed["since"], record["since"]);
    assert_eq!(listed["until"], record["until"]);
    let text = String::from_utf8_lossy(&setup.cronq(&["status"]).stdout).to_string();
    assert!(
        text.contains("paused jobs: 1") && text.contains("nightly") && text.contains("until"),
        "{text}"
    );
    let (_, page) = http_get(&format!("http://{addr}/"));
    assert!(
        page.contains("Paused jobs (1)") && page.contains("vendor maintenance"),
        "{page}"
    );
    let (_, json) = http_get(&format!("http://{addr}/status.json"));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["paused"]["jobs"][0]["job"], "nightly", "{json}");
    let (_, metrics) = http_get(&format!("http://{addr}/metrics"));
    let counted: u64 = metrics
        .lines()
        .find(|l| l.starts_with("cronq_slots_skipped_total{reason=\"paused\"}"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(counted >= 1, "{metrics}");

    // After --until nothing is listed and the job runs again, without any paused slot.
    let end = instant(&record, "until");
    while drill.now() < end + chrono::Duration::seconds(30) {
        pause();
    }
    member.wait_log("pause ended (--until reached)", Duration::from_secs(30));
    let view = setup.status_json();
    assert_eq!(view["paused"]["jobs"], serde_json::json!([]), "{view}");
    drill.wait_minutes(1, 10);
    let stopped = drill.minute();
    member.terminate();
    with_logs(&[&member], || {
        let arrived = setup.arrivals(20);
        let paused = minutes_in(instant(&record, "since"), end);
        assert_eq!(paused.len(), 3, "{paused:?}");
        let nightly = &arrived["nightly"];
        let sent: Vec<&i64> = nightly.intersection(&paused).collect();
        assert!(sent.is_empty(), "paused slots sent: {sent:?}");
        assert_every_minute("nightly", nightly, paused.last().unwrap() + 1, stopped - 1);
        let steady = &arrived["steady"];
        assert_every_minute("steady", steady, *steady.first().unwrap(), stopped - 1);
        let metrics = counted;
        eprintln!("paused slots counted by the metric mid-pause: {metrics}");
    });
}

/// Each kind of bad input is refused before anything is written, with the file, job, flag or
/// broker named.
#[test]
fn bad_input_is_refused_with_a_clear_error() {
    let setup = Setup::new(
        "pause-bad",
        r#"{"jobs":[{"jobName":"nightly-backup","job":"x","cronTime":"0 2 * * *"}]}"#,
    );
    let schedule = setup.schedule.to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        let out = setup.cronq(args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).to_string(),
            out.stdout,
        )
    };
    let (code, err, out) = run(&["pause", "nightly-backpu", "--schedule", &schedule]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("no job \"nightly-backpu\"") && err.contains(&schedule),
        "{err}"
    );
    assert!(err.contains("did you mean \"nightly-backup\""), "{err}");
    assert!(out.is_empty());

    let (code, err, _) = run(&[
        "pause",
        "nightly-backup",
        "--schedule",
        &schedule,
        "--until",
        "2020-01-01T00:00:00Z",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--until") && err.contains("not in the future"),
        "{err}"
    );

    for (args, flag) in [
        (
            vec!["pause", "nightly-backup", "--until", "soon"],
            "--until",
        ),
        (
            vec!["pause", "nightly-backup", "--until", "400d"],
            "--until",
        ),
        (vec!["pause", "nightly-backup", "--drop-missed"], "--until"),
        (vec!["pause", "nightly-backup", "--all"], "--all"),
        (vec!["pause"], "<JOB>"),
        (
            vec!["resume", "nightly-backup", "--timeout", "0s"],
            "--timeout",
        ),
    ] {
        let (code, err, _) = run(&args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(flag), "{args:?}: {err}");
    }
    let long = "x".repeat(501);
    let (code, err, _) = run(&["pause", "nightly-backup", "--reason", &long]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--reason") && err.contains("1-500"), "{err}");

    // Nothing is paused: a resume says so and writes nothing.
    let (code, err, out) = run(&["resume", "nightly-backup"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("nightly-backup is not paused") && err.contains("never paused"),
        "{err}"
    );
    assert!(out.is_empty());

    // --force pauses a name the file does not have (yet); it can be resumed like any other.
    let forced = setup.control(&["pause", "ghost", "--force"]);
    assert_eq!(
        (forced["job"].as_str(), forced["paused"].as_bool()),
        (Some("ghost"), Some(true))
    );
    let ended = setup.control(&["resume", "ghost", "--drop-missed"]);
    assert_eq!(ended["since"], forced["since"]);
    assert_eq!(ended["dropMissed"], true);

    // A broker nobody listens on: a bounded wait, then an error naming it.
    let nobody = Broker::not_started();
    let out = Command::new(CRONQ)
        .args(["pause", "nightly-backup", "--schedule", &schedule])
        .args(["--brokers", &nobody.address(), "--timeout", "2s"])
        .stdin(Stdio::null())
        .output()
        .expect("cronq pause");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&nobody.address()) && err.contains("within 2s"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

/// Whoever can write the state and control topics chooses the owner, the pause's `by` and its
/// reason: `cronq status` prints them escaped, so a reason of ESC `[2J` cannot clear the
/// operator's screen, and a newline cannot forge a line of the output.
#[test]
fn status_escapes_the_text_of_forged_cursor_and_pause_records() {
    let broker = Broker::start();
    let group = format!("g-{}", random_topic("escape"));
    let (state, control) = (format!("{group}.state"), format!("{group}.control"));
    create_topic(&broker.address(), &state, 1);
    create_topic(&broker.address(), &control, 1);
    let now = Utc::now();
    let minute = now.timestamp() / 60 * 60;
    let text = |at: i64| {
        DateTime::from_timestamp(at, 0)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let cursor = serde_json::json!({"v":1,"shard":0,"minute":text(minute - 60),
        "writtenAt":text(now.timestamp()),"owner":"evil\u{1b}[2J\u{1b}]0;owned\u{7}",
        "generation":1,"scheduleMd5":"m\u{9b}31md5"});
    let paused = serde_json::json!({"v":1,"job":"nightly","paused":true,
        "reason":"\u{1b}[2J\rOK: nothing paused\n\u{202e}","since":text(minute - 600),
        "by":"ops\u{1b}[8m@host","at":text(minute - 600)});
    produce(
        &broker.address(),
        &state,
        &[Record {
            key: b"cursor".to_vec(),
            value: serde_json::to_vec(&cursor).unwrap(),
            partition: Some(0),
            headers: Vec::new(),
        }],
    );
    produce(
        &broker.address(),
        &control,
        &[Record {
            key: b"nightly".to_vec(),
            value: serde_json::to_vec(&paused).unwrap(),
            partition: Some(0),
            headers: Vec::new(),
        }],
    );
    let status = |json: bool| {
        let out = Command::new(CRONQ)
            .args(["status", "--brokers", &broker.address(), "--group", &group])
            .args(json.then_some("--json"))
            .stdin(Stdio::null())
            .output()
            .expect("run cronq status");
        String::from_utf8(out.stdout).unwrap()
    };
    let controls = |out: &str| -> Vec<char> {
        out.chars()
            .filter(|&c| {
                (c.is_control() && c != '\n')
                    || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
            })
            .collect()
    };
    let out = status(false);
    assert!(out.contains("nightly"), "the pause is listed: {out}");
    assert!(
        controls(&out).is_empty(),
        "raw controls {:?} in\n{out}",
        controls(&out)
    );
    assert!(
        out.contains("reason: \\u001b[2J\\u000dOK: nothing paused\\u000a\\u202e"),
        "{out}"
    );
    assert!(out.contains("evil\\u001b[2J"), "the owner, escaped: {out}");
    let json = status(true);
    assert!(
        controls(&json).is_empty(),
        "raw controls {:?} in\n{json}",
        controls(&json)
    );
    let view: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        view["paused"]["jobs"][0]["reason"], paused["reason"],
        "still JSON: {view}"
    );
}

/// A writer of the control topic is checked: a pause longer than 366 days, a record whose key is
/// not its job, a blank job name and a record past the table's bound of 10 000 jobs are ignored,
/// each logged with its offset, and the good records still count.
#[test]
fn forged_control_records_are_ignored_and_the_table_is_bounded() {
    let broker = Broker::start();
    let group = format!("g-{}", random_topic("forged"));
    let (state, control) = (format!("{group}.state"), format!("{group}.control"));
    create_topic(&broker.address(), &state, 1);
    create_topic(&broker.address(), &control, 1);
    let now = Utc::now().timestamp();
    let text = |at: i64| {
        DateTime::from_timestamp(at, 0)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let record = |key: &str, job: &str, until: Option<i64>| Record {
        key: key.as_bytes().to_vec(),
        value: serde_json::to_vec(&serde_json::json!({"v":1,"job":job,"paused":true,
            "since":text(now - 60),"until":until.map(text),"by":"mallory@lan","at":text(now - 60)}))
        .unwrap(),
        partition: Some(0),
        headers: Vec::new(),
    };
    let day = 86_400;
    let mut records = vec![
        record("frozen", "frozen", Some(now + 400 * day)),
        record("nightly", "payroll", None),
        record("  ", "  ", None),
        record("yearly", "yearly", Some(now + 300 * day)),
    ];
    // Fill the table: 9 999 more jobs, then one too many.
    records.extend((0..10_000).map(|i| {
        let name = format!("filler-{i:05}");
        record(&name, &name, None)
    }));
    produce(&broker.address(), &control, &records);
    let out = Command::new(CRONQ)
        .args([
            "status",
            "--json",
            "--brokers",
            &broker.address(),
            "--group",
            &group,
        ])
        .stdin(Stdio::null())
        .output()
        .expect("run cronq status");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let view: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    let jobs: Vec<&str> = view["paused"]["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["job"].as_str().unwrap())
        .collect();
    assert_eq!(jobs.len(), 10_000, "the table's bound: {stderr}");
    assert!(jobs.contains(&"yearly"), "a 300-day pause counts");
    for ignored in ["frozen", "nightly", "payroll", "  ", "filler-09999"] {
        assert!(!jobs.contains(&ignored), "{ignored:?} listed");
    }
    for (offset, why) in [
        (0, "more than 366 days"),
        (1, "key is not its job"),
        (2, "not a job name"),
        (10_003, "holds 10000 jobs already"),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.contains("ignoring a control record")
                    && l.contains(&format!("offset={offset} "))
                    && l.contains(why)),
            "offset {offset} ({why}) not logged:\n{stderr}"
        );
    }
}

/// A pause of a name that is no job of the schedule (`--force`, or a forged record) pauses
/// nothing: the member that owns its shard says so once, and the jobs of the schedule run on.
#[test]
fn a_pause_of_a_job_not_in_the_schedule_is_logged_once_and_pauses_nothing() {
    let setup = Setup::new(
        "pause-stranger",
        r#"{"jobs":[{"jobName":"steady","job":"x","cronTime":"* * * * *"}]}"#,
    );
    let mut member = setup.member("solo");
    member.wait_log("taking over a shard", Duration::from_secs(90));
    setup.control(&["pause", "ghost", "--force", "--reason", "typo"]);
    member.wait_log(
        "control record of a job not in the schedule: it pauses nothing job=\"ghost\"",
        Duration::from_secs(30),
    );
    setup.drill.wait_minutes(2, 30);
    member.terminate();
    let log = std::fs::read_to_string(&member.log).unwrap();
    assert_eq!(
        log.matches("control record of a job not in the schedule")
            .count(),
        1,
        "logged once: {log}"
    );
    with_logs(&[&member], || {
        let arrived = setup.arrivals(2);
        assert!(arrived["steady"].len() >= 2, "{arrived:?}");
    });
}
