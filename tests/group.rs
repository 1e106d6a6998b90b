//! The dispatcher group on a real broker (tansu) with real `cronq run` processes: crash and
//! restart, a member killed for good, a rolling restart, each catch-up rule after an outage. Time
//! runs on a drill clock (`--drill-clock`), so a "minute" lasts a few real seconds; what arrived is
//! read back with rdkafka and checked slot by slot.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::*;

/// cronq's default `--partitions` of the job topic.
const PARTITIONS: i32 = 3;

/// The group after its members stopped: each shard's final cursor (drill minute), from
/// `cronq status --json`.
struct GroupEnd {
    shards: u32,
    cursors: BTreeMap<u32, i64>,
}

/// Waits until `cronq status` says the group is healthy and caught up: every shard owned and its
/// last record past the minute before this one. Healthy alone is not enough: it allows a cursor
/// two minutes behind, which a member that has just taken over still has before its catch-up.
fn wait_healthy(broker: &str, topic: &str, drill: Drill, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let (healthy, view) = group_status(broker, topic, drill);
        let caught_up = view["shards"].as_array().is_some_and(|shards| {
            shards
                .iter()
                .all(|s| s["behindMinutes"].as_i64().is_some_and(|b| b <= 0))
        });
        if healthy && caught_up {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not become healthy: {view}"
        );
        (0..25).for_each(|_| pause());
    }
}

fn group_end(broker: &str, topic: &str, drill: Drill) -> GroupEnd {
    let (_, view) = group_status(broker, topic, drill);
    let shards = view["shards"]
        .as_array()
        .unwrap_or_else(|| panic!("status: {view}"));
    let cursors = shards
        .iter()
        .map(|s| {
            let at: DateTime<Utc> = s["cursor"].as_str().expect("cursor").parse().unwrap();
            (
                s["shard"].as_u64().unwrap() as u32,
                at.timestamp().div_euclid(60),
            )
        })
        .collect();
    GroupEnd {
        shards: shards.len() as u32,
        cursors,
    }
}

/// One test's broker, topic, schedule file and drill clock: starts members by name.
struct Setup {
    broker: Broker,
    topic: String,
    dir: tempfile::TempDir,
    schedule: PathBuf,
    drill: Drill,
}

impl Setup {
    fn new(prefix: &str, schedule_json: &str, speed: i64) -> Setup {
        let (dir, schedule) = schedule_file(schedule_json);
        Setup {
            broker: Broker::start(),
            topic: random_topic(prefix),
            dir,
            schedule,
            drill: Drill::new(speed),
        }
    }

    fn address(&self) -> String {
        self.broker.address()
    }

    fn member(&self, name: &str, extra: &[&str]) -> Dispatcher {
        Dispatcher::start(
            &self.address(),
            &self.topic,
            &self.schedule,
            self.drill,
            name,
            self.dir.path(),
            extra,
        )
    }

    /// After the group stopped: what arrived, checked complete against each shard's final cursor
    /// (see [`Arrivals::assert_complete`]).
    fn arrivals(
        &self,
        jobs: usize,
        expected: usize,
        stopped: i64,
        logs: &[&Dispatcher],
    ) -> Arrivals {
        let end = group_end(&self.address(), &self.topic, self.drill);
        let arrivals = Arrivals::read(&self.address(), &self.topic, expected);
        arrivals.assert_complete(jobs, &end, stopped, logs);
        arrivals
    }

    /// Members started together, each waited for until it runs shards.
    fn group(&self, names: &[&str]) -> Vec<Dispatcher> {
        let mut members: Vec<Dispatcher> = names.iter().map(|n| self.member(n, &[])).collect();
        for m in &mut members {
            m.wait_log("taking over a shard", Duration::from_secs(90));
        }
        members
    }
}

fn every_minute_jobs(n: usize) -> String {
    let jobs: Vec<String> = (0..n)
        .map(|i| format!(r#"{{"jobName":"job-{i:04}","job":"run {i}","cronTime":"* * * * *"}}"#))
        .collect();
    format!(r#"{{"jobs":[{}]}}"#, jobs.join(","))
}

/// Slots (drill minutes) per job, and how many records carried each dispatchId.
struct Arrivals {
    slots: BTreeMap<String, BTreeSet<i64>>,
    copies: HashMap<String, u32>,
}

impl Arrivals {
    fn read(broker: &str, topic: &str, expected: usize) -> Arrivals {
        let records = consume_all(
            broker,
            topic,
            PARTITIONS,
            expected,
            Duration::from_secs(120),
        );
        let mut slots: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
        let mut copies: HashMap<String, u32> = HashMap::new();
        for r in &records {
            let name = r.value["jobName"].as_str().expect("jobName").to_string();
            let at: DateTime<Utc> = r.value["scheduledAt"]
                .as_str()
                .expect("scheduledAt")
                .parse()
                .unwrap();
            let id = r.value["dispatchId"]
                .as_str()
                .expect("dispatchId")
                .to_string();
            assert_eq!(
                id,
                format!("{name}@{}", r.value["scheduledAt"].as_str().unwrap())
            );
            slots
                .entry(name)
                .or_default()
                .insert(at.timestamp().div_euclid(60));
            *copies.entry(id).or_default() += 1;
        }
        Arrivals { slots, copies }
    }

    /// Nothing lost: every job has every minute from its first slot up to its shard's final
    /// cursor, and every final cursor reaches `stopped` (the minute the test began stopping the
    /// group), so the check covers the whole run. On a failure the dispatchers' logs are printed.
    fn assert_complete(&self, jobs: usize, end: &GroupEnd, stopped: i64, logs: &[&Dispatcher]) {
        with_logs(logs, || self.check_complete(jobs, end, stopped));
    }

    fn check_complete(&self, jobs: usize, end: &GroupEnd, stopped: i64) {
        assert_eq!(self.slots.len(), jobs, "jobs that arrived");
        for (shard, cursor) in &end.cursors {
            assert!(
                *cursor >= stopped - 1,
                "shard {shard}: final cursor {cursor} < {stopped}"
            );
        }
        // A shard that never had a cursor starts at the next minute after its first owner got
        // it, so jobs may start a minute or two apart; from there on, nothing may be missing.
        let firsts: Vec<i64> = self
            .slots
            .values()
            .filter_map(|s| s.first())
            .copied()
            .collect();
        let (earliest, latest) = (*firsts.iter().min().unwrap(), *firsts.iter().max().unwrap());
        assert!(latest - earliest <= 2, "jobs started {earliest}..{latest}");
        for (job, slots) in &self.slots {
            let shard = cronq::wire::partition_for(job.as_bytes(), end.shards as i32) as u32;
            let until = end.cursors[&shard];
            let first = *slots.first().unwrap();
            let missing: Vec<i64> = (first..=until).filter(|m| !slots.contains(m)).collect();
            assert!(
                missing.is_empty(),
                "{job} (shard {shard}, cursor {until}): {} of {} slots missing: {missing:?}",
                missing.len(),
                until - first + 1
            );
        }
    }

    /// The minutes that have duplicated dispatchIds.
    fn duplicate_minutes(&self) -> (u32, BTreeSet<String>) {
        self.duplicate_minutes_before(i64::MAX)
    }

    /// [`Self::duplicate_minutes`] of the slots before drill minute `before`.
    fn duplicate_minutes_before(&self, before: i64) -> (u32, BTreeSet<String>) {
        let (dups, found) = self.duplicates_before(before, 1);
        (dups, found.into_keys().collect())
    }

    /// Duplicated copies of the slots before drill minute `before`, and for each duplicated
    /// minute the shards (of `shards`) whose jobs it was sent twice for.
    fn duplicates_before(
        &self,
        before: i64,
        shards: u32,
    ) -> (u32, BTreeMap<String, BTreeSet<u32>>) {
        let mut dups = 0;
        let mut found: BTreeMap<String, BTreeSet<u32>> = BTreeMap::new();
        for (id, n) in &self.copies {
            let (job, at) = id.split_once('@').unwrap_or((id, ""));
            let slot = chrono::DateTime::parse_from_rfc3339(at)
                .map_or(i64::MIN, |t| t.timestamp().div_euclid(60));
            if *n > 1 && slot < before {
                dups += n - 1;
                let shard = cronq::wire::partition_for(job.as_bytes(), shards as i32) as u32;
                found.entry(at.to_string()).or_default().insert(shard);
            }
        }
        (dups, found)
    }
}

/// Scenario 1: one dispatcher, 200 jobs every minute, kill -9 mid-minute, restart 3 minutes
/// later: every slot of the gap arrives, duplicates only of the minute in progress.
#[test]
fn a_crashed_dispatcher_restarted_later_sends_every_slot_of_the_gap() {
    let setup = Setup::new("crash", &every_minute_jobs(200), 10);
    let drill = setup.drill;
    let mut first = setup.member("a", &[]);
    first.wait_log("taking over a shard", Duration::from_secs(60));
    drill.wait_minutes(3, 30);
    first.kill9();
    drill.wait_minutes(3, 0);
    let mut second = setup.member("a2", &[]);
    second.wait_log("taking over a shard", Duration::from_secs(60));
    drill.wait_minutes(2, 10);
    let stopped = drill.minute();
    second.terminate();
    let arrivals = setup.arrivals(200, 200 * 10, stopped, &[&first, &second]);
    let (dups, minutes) = arrivals.duplicate_minutes();
    eprintln!("crash + restart: {dups} duplicates in minutes {minutes:?}");
    assert!(
        minutes.len() <= 1,
        "duplicates beyond the minute in progress: {minutes:?}"
    );
    assert!(second.log().contains("behind_minutes"), "{}", second.log());
}

/// Scenario 5: each catch-up rule after a 10-minute outage.
#[test]
fn after_an_outage_each_job_follows_its_catch_up_rule() {
    let setup = Setup::new(
        "rules",
        r#"{"jobs":[
          {"jobName":"all","job":"x","cronTime":"* * * * *"},
          {"jobName":"all-5m","job":"x","cronTime":"* * * * *","catchupWindow":"5m"},
          {"jobName":"latest","job":"x","cronTime":"* * * * *","catchup":"latest"},
          {"jobName":"none","job":"x","cronTime":"* * * * *","catchup":"none"}
        ]}"#,
        20,
    );
    let drill = setup.drill;
    let mut first = setup.member("a", &[]);
    first.wait_log("taking over a shard", Duration::from_secs(60));
    drill.wait_minutes(2, 30);
    first.kill9();
    drill.wait_minutes(10, 0);
    let mut second = setup.member("b", &[]);
    second.wait_log("missed slots were skipped", Duration::from_secs(60));
    drill.wait_minutes(2, 10);
    second.terminate();
    let a = Arrivals::read(&setup.address(), &setup.topic, 100);
    let slots = |job: &str| a.slots.get(job).cloned().unwrap_or_default();
    let all = slots("all");
    let (first_slot, last_slot) = (*all.first().unwrap(), *all.last().unwrap());
    assert_eq!(
        all.len() as i64,
        last_slot - first_slot + 1,
        "all: every slot, {all:?}"
    );
    // `none` shows the outage: the minutes it did not get.
    let none = slots("none");
    let gap: Vec<i64> = (first_slot..=last_slot)
        .filter(|m| !none.contains(m))
        .collect();
    // Killed 30 s into a minute, restarted 10 minutes later: the 9 minutes in between are missed
    // for sure; the 10th only when the takeover ends after its own minute.
    assert!(
        gap.len() >= 9,
        "an outage of at least 9 whole minutes: {gap:?}"
    );
    assert_eq!(
        gap.len() as i64,
        gap[gap.len() - 1] - gap[0] + 1,
        "one gap: {gap:?}"
    );
    let in_gap =
        |job: &str| -> Vec<i64> { slots(job).into_iter().filter(|m| gap.contains(m)).collect() };
    assert_eq!(
        in_gap("latest"),
        [gap[gap.len() - 1]],
        "latest: only the most recent missed slot"
    );
    // The window counts back from the takeover minute, the first one after the gap.
    let takeover = gap[gap.len() - 1] + 1;
    let window: Vec<i64> = gap.iter().copied().filter(|m| *m >= takeover - 5).collect();
    assert_eq!(
        in_gap("all-5m"),
        window,
        "all-5m: the missed slots of the last 5 minutes"
    );
    assert!(
        second.log().contains("by_rule"),
        "one skip warning: {}",
        second.log()
    );
}

/// Scenario 2: three dispatchers, 12 shards, 1 000 jobs; one is killed for good. Its shards are
/// taken over (on tansu through the orphan watchdog) and no slot is missed.
#[test]
fn a_member_killed_for_good_has_its_shards_taken_over_and_no_slot_is_missed() {
    let setup = Setup::new("takeover", &every_minute_jobs(1000), 10);
    let drill = setup.drill;
    let mut members = setup.group(&["a", "b", "c"]);
    drill.wait_minutes(3, 30);
    let killed_at = Instant::now();
    let before: Vec<usize> = members[..2].iter().map(|m| m.log().len()).collect();
    members[2].kill9();
    // The survivors log the takeover of the dead member's shards (coordinator or watchdog).
    let deadline = Instant::now() + Duration::from_secs(240);
    let took_over = loop {
        let logs: String = members[..2]
            .iter()
            .zip(&before)
            .map(|(m, from)| m.log()[*from..].to_string())
            .collect();
        if logs.contains("previous_owner=\"c\"") {
            break killed_at.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "no takeover of c's shards; logs:\n{logs}"
        );
        pause();
    };
    eprintln!(
        "takeover after kill -9: {took_over:?} real ({} drill minutes)",
        took_over.as_secs() * drill.speed as u64 / 60
    );
    wait_healthy(
        &setup.address(),
        &setup.topic,
        drill,
        Duration::from_secs(240),
    );
    drill.wait_minutes(1, 10);
    let stopped = drill.minute();
    for m in &mut members[..2] {
        m.terminate();
    }
    let arrivals = setup.arrivals(
        1000,
        1000 * 12,
        stopped,
        &members.iter().collect::<Vec<_>>(),
    );
    let (dups, minutes) = arrivals.duplicate_minutes();
    eprintln!("kill -9 of one of three: {dups} duplicates in minutes {minutes:?}");
}

/// Scenario 3: a rolling restart of three dispatchers loses and duplicates no slot.
#[test]
fn a_rolling_restart_of_three_dispatchers_loses_and_duplicates_nothing() {
    let setup = Setup::new("rolling", &every_minute_jobs(300), 10);
    let drill = setup.drill;
    let mut members = setup.group(&["a", "b", "c"]);
    // Kept for their logs, shown if the check below fails.
    let mut stopped_members = Vec::new();
    drill.wait_minutes(2, 20);
    for member in members.iter_mut() {
        member.terminate();
        let name = format!("{}2", member.name);
        stopped_members.push(std::mem::replace(member, setup.member(&name, &[])));
        member.wait_log("taking over a shard", Duration::from_secs(90));
        drill.wait_minutes(1, 20);
    }
    wait_healthy(
        &setup.address(),
        &setup.topic,
        drill,
        Duration::from_secs(240),
    );
    let stopped = drill.minute();
    for m in &mut members {
        m.terminate();
    }
    let arrivals = setup.arrivals(300, 300 * 12, stopped, &members.iter().collect::<Vec<_>>());
    // The rolling restart's handovers, not the test's own teardown: the members stopped one after
    // another at the end hand their shards to members that are stopping too, within their
    // shutdown grace, where a minute not yet acked is re-sent (at least once, same dispatchId).
    let (dups, minutes) = arrivals.duplicates_before(stopped, 12);
    let all: Vec<_> = stopped_members.iter().chain(&members).collect();
    with_logs(&all, || {
        assert_eq!(
            dups, 0,
            "a clean handover duplicates nothing; duplicated minutes and their shards {minutes:?}"
        )
    });
}

/// A coordinator may assign a shard before its previous owner has let go: tansu answers a join at
/// once, with the members that have not rejoined yet, and the previous owner hears of the
/// rebalance only at its next heartbeat. Here `b` is frozen (no tick, no heartbeat, for less than
/// the session) while `a` leaves and `c` joins: `c` is given shards `b` still holds, waits for
/// `b`'s final cursor records once `b` thaws, and no minute is sent twice.
#[test]
fn a_shard_assigned_before_its_previous_owner_let_go_waits_for_its_final_cursor() {
    let setup = Setup::new("overlap", &every_minute_jobs(120), 10);
    let drill = setup.drill;
    // One session for the whole group (tansu keeps the first member's): long enough for `b` to be
    // frozen while `a` leaves and `c` starts, even on a loaded machine.
    let session = ["--session-timeout", "15s"];
    let mut a = setup.member("a", &session);
    a.wait_log("taking over a shard", Duration::from_secs(90));
    let mut b = setup.member("b", &session);
    b.wait_log("taking over a shard", Duration::from_secs(90));
    drill.wait_minutes(1, 30);
    b.freeze(true);
    a.terminate();
    let mut c = setup.member("c", &session);
    let waited = (0..250).any(|_| {
        pause();
        c.log().contains("waiting for the previous owner")
    });
    b.freeze(false);
    c.wait_log("taking over a shard", Duration::from_secs(90));
    drill.wait_minutes(3, 0);
    let stopped = drill.minute();
    for m in [&mut b, &mut c] {
        m.terminate();
    }
    let members = [&a, &b, &c];
    let arrivals = setup.arrivals(120, 120 * 5, stopped, &members);
    let (dups, minutes) = arrivals.duplicates_before(stopped, 12);
    with_logs(&members, || {
        assert!(
            waited && c.log().contains("the previous owner handed the shard over"),
            "c was given shards b still held, and waited for b's final records"
        );
        assert_eq!(
            dups, 0,
            "a shard assigned before its previous owner let go is not sent twice; duplicated minutes and their shards {minutes:?}"
        );
    });
}

/// `cronq status` reads the group: healthy with one member running, every shard owned.
#[test]
fn status_shows_every_shard_owned_by_the_running_member() {
    let setup = Setup::new("status", &every_minute_jobs(10), 10);
    let drill = setup.drill;
    let mut member = setup.member("solo", &["--shards", "4"]);
    member.wait_log("taking over a shard", Duration::from_secs(60));
    drill.wait_minutes(1, 40);
    let out = Command::new(CRONQ)
        .env("CRONQ_HTTP", "127.0.0.1:0")
        .args([
            "status",
            "--brokers",
            &setup.address(),
            "--group",
            &format!("g-{}", setup.topic),
            "--json",
        ])
        .args(["--drill-clock", &drill.setting()])
        .output()
        .expect("cronq status");
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(
        view["members"]["solo"],
        serde_json::json!([0, 1, 2, 3]),
        "{view}"
    );
    assert_eq!(view["orphaned"], serde_json::json!([]), "{view}");
    assert!(out.status.success(), "{view}");

    // A second member with another schedule file: reported by the members after 2 drill minutes
    // of disagreement, and by status at once.
    let other_dir = tempfile::tempdir().unwrap();
    let other_schedule = other_dir.path().join("schedule.json");
    std::fs::write(&other_schedule, every_minute_jobs(11)).unwrap();
    let mut other = Dispatcher::start(
        &setup.address(),
        &setup.topic,
        &other_schedule,
        drill,
        "other",
        setup.dir.path(),
        &["--shards", "4"],
    );
    other.wait_log("taking over a shard", Duration::from_secs(60));
    let deadline = Instant::now() + Duration::from_secs(120);
    while !(member.log() + &other.log()).contains("runs a different schedule") {
        assert!(
            Instant::now() < deadline,
            "no member reported the other schedule:\n{}\n{}",
            member.log(),
            other.log()
        );
        pause();
    }
    let (healthy, view) = group_status(&setup.address(), &setup.topic, drill);
    assert!(!healthy && view["md5Disagree"] == true, "{view}");
    other.kill9();
    member.kill9();
    // Its records go stale: after 2 drill minutes every shard is orphaned and status says so.
    drill.wait_minutes(3, 0);
    let out = Command::new(CRONQ)
        .env("CRONQ_HTTP", "127.0.0.1:0")
        .args([
            "status",
            "--brokers",
            &setup.address(),
            "--group",
            &format!("g-{}", setup.topic),
        ])
        .args(["--drill-clock", &drill.setting()])
        .output()
        .expect("cronq status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("shards with no owner: [0, 1, 2, 3]"),
        "{text}"
    );
}

/// Scenario 4: the broker is SIGKILLed and restarted while a group of two runs: nothing is lost.
#[test]
fn a_broker_killed_and_restarted_under_a_running_group_loses_nothing() {
    let mut setup = Setup::new("brokerkill", &every_minute_jobs(200), 10);
    let drill = setup.drill;
    let mut members: Vec<Dispatcher> = ["a", "b"].iter().map(|n| setup.member(n, &[])).collect();
    for m in &mut members {
        m.wait_log("taking over a shard", Duration::from_secs(90));
    }
    drill.wait_minutes(2, 30);
    setup.broker.kill();
    drill.wait_minutes(2, 0);
    setup.broker.launch();
    wait_healthy(
        &setup.address(),
        &setup.topic,
        drill,
        Duration::from_secs(240),
    );
    drill.wait_minutes(1, 10);
    let stopped = drill.minute();
    for m in &mut members {
        m.terminate();
    }
    let arrivals = setup.arrivals(200, 200 * 10, stopped, &members.iter().collect::<Vec<_>>());
    let (dups, minutes) = arrivals.duplicate_minutes();
    eprintln!("broker killed under the group: {dups} duplicates in minutes {minutes:?}");
}

/// Scenario 6: SIGTERM while the queue is full (the broker is gone): the process still exits, it
/// counts what it could not deliver, and the next owner re-sends it from the cursor.
#[test]
fn sigterm_with_a_full_queue_counts_the_undelivered_and_the_next_owner_resends_them() {
    let mut setup = Setup::new("fullq", &every_minute_jobs(500), 10);
    let drill = setup.drill;
    // The session outlives the outage, so the member still owns its shards at SIGTERM.
    let extra = [
        "--queue-capacity",
        "50",
        "--shutdown-grace",
        "2s",
        "--session-timeout",
        "15s",
    ];
    let mut first = setup.member("a", &extra);
    first.wait_log("taking over a shard", Duration::from_secs(60));
    drill.wait_minutes(2, 20);
    setup.broker.kill();
    // A minute boundary passes: 500 dispatches meet a queue of 50 and a dead broker.
    drill.wait_minutes(1, 20);
    let stopped = Instant::now();
    first.terminate();
    eprintln!("stopped with a full queue in {:?}", stopped.elapsed());
    let log = first.log();
    let undelivered: u64 = log
        .lines()
        .find(|l| l.contains("dispatcher stopped"))
        .and_then(|l| l.split("undelivered=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no undelivered count in the log:\n{log}"));
    assert!(undelivered > 0, "{log}");
    setup.broker.launch();
    let mut second = setup.member("b", &[]);
    second.wait_log("taking over a shard", Duration::from_secs(60));
    wait_healthy(
        &setup.address(),
        &setup.topic,
        drill,
        Duration::from_secs(120),
    );
    let stopped = drill.minute();
    second.terminate();
    let arrivals = setup.arrivals(500, 500 * 6, stopped, &[&first, &second]);
    let (dups, minutes) = arrivals.duplicate_minutes();
    eprintln!("SIGTERM with a full queue: {undelivered} undelivered, re-sent; {dups} duplicates in {minutes:?}");
}

/// A minute with nothing due logs nothing at info; a due one logs one line.
#[test]
fn an_idle_minute_logs_nothing_and_a_due_minute_one_line() {
    let setup = Setup::new(
        "idle",
        r#"{"jobs":[{"jobName":"every-3","job":"x","cronTime":"*/3 * * * *"}]}"#,
        20,
    );
    let drill = setup.drill;
    let mut member = setup.member("a", &[]);
    member.wait_log("taking over a shard", Duration::from_secs(60));
    let from = drill.minute();
    let until = drill.wait_minutes(7, 30);
    member.terminate();
    let log = member.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("slot dispatched"))
        .collect();
    assert!(
        lines.iter().all(|l| l.contains("jobs=1")),
        "only due minutes are logged: {lines:#?}"
    );
    // Minutes from..=until due for `*/3`; the first may have been taken over mid-minute.
    let due = (from + 1..=until).filter(|m| m % 3 == 0).count();
    assert!(
        lines.len() >= due && lines.len() <= due + 1,
        "{due} due minutes, {} lines: {lines:#?}",
        lines.len()
    );
}

/// `n` records keyed like cursors whose values do not decode, for shard `partition`.
fn garbage_cursors(n: usize, partition: i32) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            key: b"cursor".to_vec(),
            value: format!("{{\"v\":1,\"garbage\":{i}").into_bytes(),
            partition: Some(partition),
            headers: Vec::new(),
        })
        .collect()
}

/// Issue 19: a shard whose newest cursor records do not decode (more of them than the first read
/// back covers) is flagged by `cronq status`, and its next owner resumes from the last cursor that
/// decodes, logging each bad record once with its offset: no slot of the gap is lost.
#[test]
fn unreadable_records_after_a_cursor_are_read_through_and_the_gap_is_sent() {
    let setup = Setup::new("garbage", &every_minute_jobs(20), 10);
    let drill = setup.drill;
    let mut first = setup.member("a", &["--shards", "1"]);
    first.wait_log("taking over a shard", Duration::from_secs(60));
    drill.wait_minutes(2, 30);
    first.kill9();
    let state = format!("g-{}.state", setup.topic);
    produce(&setup.address(), &state, &garbage_cursors(40, 0));
    let (healthy, view) = group_status(&setup.address(), &setup.topic, drill);
    assert!(!healthy, "{view}");
    assert_eq!(view["unreadable"], serde_json::json!([0]), "{view}");
    assert_eq!(
        view["shards"][0]["unreadableOffsets"]
            .as_array()
            .map(Vec::len),
        Some(40),
        "{view}"
    );
    assert!(view["shards"][0]["cursor"].is_string(), "{view}");
    drill.wait_minutes(3, 0);
    let mut second = setup.member("b", &["--shards", "1"]);
    second.wait_log("taking over a shard", Duration::from_secs(60));
    let log = second.log();
    assert!(
        log.contains("resuming from the last one that does"),
        "{log}"
    );
    let reported: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("unreadable cursor record"))
        .collect();
    assert_eq!(reported.len(), 40, "each bad record once:\n{log}");
    drill.wait_minutes(2, 10);
    let stopped = drill.minute();
    second.terminate();
    // The watchdog read the shard every minute: still one line per bad record.
    let log = second.log();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("unreadable cursor record"))
            .count(),
        40,
        "{log}"
    );
    setup.arrivals(20, 20 * 9, stopped, &[&first, &second]);
}

/// Issue 19: a shard with cursor records of which none decodes is an error `cronq status` shows,
/// and its owner starts from now minus the longest catch-up window of the shard's jobs, each job
/// under its own rule (not from now, which would skip the gap silently); the page shows it.
#[test]
fn a_shard_whose_cursor_records_all_fail_to_decode_starts_from_now_minus_the_catch_up_window() {
    let setup = Setup::new(
        "nodecode",
        r#"{"jobs":[
          {"jobName":"all-5m","job":"x","cronTime":"* * * * *","catchup":"all","catchupWindow":"5m"},
          {"jobName":"latest-3m","job":"x","cronTime":"* * * * *","catchup":"latest","catchupWindow":"3m"},
          {"jobName":"none","job":"x","cronTime":"* * * * *","catchup":"none","catchupWindow":"2m"}
        ]}"#,
        10,
    );
    let drill = setup.drill;
    let state = format!("g-{}.state", setup.topic);
    create_topic(&setup.address(), &state, 1);
    produce(&setup.address(), &state, &garbage_cursors(5, 0));
    let (healthy, view) = group_status(&setup.address(), &setup.topic, drill);
    assert!(!healthy, "{view}");
    assert_eq!(view["noReadableCursor"], serde_json::json!([0]), "{view}");
    let mut member = setup.member("m", &["--shards", "1"]);
    member.wait_log("taking over a shard", Duration::from_secs(60));
    let http = http_addr_in_log(&member.log, Duration::from_secs(30));
    let (_, status) = http_get(&format!("http://{http}/status.json"));
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let found = &status["unreadableCursors"][0];
    assert_eq!(found["nothingDecoded"], true, "{status}");
    assert_eq!(
        found["offsets"].as_array().map(Vec::len),
        Some(5),
        "{status}"
    );
    let start: DateTime<Utc> = found["startedFrom"].as_str().unwrap().parse().unwrap();
    let start = start.timestamp().div_euclid(60);
    let log = member.log();
    assert!(
        log.contains("no cursor record of the shard decodes") && log.contains("behind_minutes=5"),
        "{log}"
    );
    let (_, page) = http_get(&format!("http://{http}/"));
    assert!(page.contains("Unreadable cursor records"), "{page}");
    drill.wait_minutes(1, 30);
    member.terminate();
    // The minute the catch-up judged against: 5 (the longest window) after where the shard
    // started, or one later when the takeover ended just before a minute boundary and the
    // catch-up pass ran after it. The member logs it with the skips (`none` always has some).
    let log = member.log();
    let until = log
        .split("missed slots were skipped by their jobs' catch-up rules until=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no catch-up line: {log}"));
    let now = format!("{}:00Z", until.trim_end_matches('Z'))
        .parse::<DateTime<Utc>>()
        .unwrap()
        .timestamp()
        .div_euclid(60);
    assert!(
        now == start + 5 || now == start + 6,
        "{now} vs {start}: {log}"
    );
    let arrivals = Arrivals::read(&setup.address(), &setup.topic, 12);
    let slots = |job: &str| arrivals.slots.get(job).cloned().unwrap_or_default();
    let before = |job: &str| -> Vec<i64> { slots(job).into_iter().filter(|m| *m < now).collect() };
    with_logs(&[&member], || {
        assert_eq!(
            before("all-5m"),
            ((now - 5).max(start + 1)..now).collect::<Vec<_>>(),
            "catchup all, 5m"
        );
        assert_eq!(before("latest-3m"), [now - 1], "catchup latest");
        assert_eq!(before("none"), Vec::<i64>::new(), "catchup none");
        for job in ["all-5m", "latest-3m", "none"] {
            assert!(slots(job).contains(&now), "{job}: the live minute {now}");
        }
    });
}

/// Issue 19: the job topic's one partition keeps failing, its backlog fills (100 000 dispatches)
/// and the tick loop waits for it. The cursor records are written by a task of their own, so
/// every shard's record stays fresh meanwhile: `cronq status`, which judges the group the way the
/// members' watchdogs do, sees no orphan.
#[test]
fn a_stalled_partition_does_not_stop_the_cursor_records_of_the_shards() {
    let mut broker = Broker::not_started();
    let topic = random_topic("stall");
    let proxy = ProduceFault::start(broker.port, &topic, Some(0), KAFKA_STORAGE_ERROR);
    broker.advertised_port = Some(proxy.port);
    broker.launch();
    let brokers = format!("127.0.0.1:{}", proxy.port);
    create_topic(&brokers, &topic, 1);
    // 5 000 jobs a minute into the one failing partition: its backlog is full after 20 drill
    // minutes, one real minute at 20x.
    let (dir, schedule) = schedule_file(&every_minute_jobs(5000));
    let drill = Drill::new(20);
    let mut member = Dispatcher::start(
        &brokers,
        &topic,
        &schedule,
        drill,
        "m",
        dir.path(),
        // Small queues: the tick loop waits as soon as the failing partition's backlog is full.
        &["--shards", "2", "--queue-capacity", "100"],
    );
    member.wait_log("taking over a shard", Duration::from_secs(60));
    member.wait_log(
        "holding every dispatch until it drains",
        Duration::from_secs(300),
    );
    let stalled = drill.minute();
    drill.wait_minutes(3, 45);
    let (_, view) = group_status(&brokers, &topic, drill);
    with_logs(&[&member], || {
        assert_eq!(view["orphaned"], serde_json::json!([]), "{view}");
        assert_eq!(view["members"]["m"], serde_json::json!([0, 1]), "{view}");
        for shard in view["shards"].as_array().expect("shards") {
            let cursor: DateTime<Utc> = shard["cursor"].as_str().unwrap().parse().unwrap();
            // Held where the backlog filled up: nothing after it was acked.
            assert!(cursor.timestamp().div_euclid(60) <= stalled, "{view}");
        }
    });
    assert!(proxy.refused.load(std::sync::atomic::Ordering::SeqCst) > 0);
    assert!(
        member.child.try_wait().unwrap().is_none(),
        "{}",
        member.log()
    );
}
