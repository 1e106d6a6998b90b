//! The dispatcher group on a real broker (tansu) with real `cronq run` processes: crash and
//! restart, a member killed for good, a rolling restart, each catch-up rule after an outage. Time
//! runs on a drill clock (`--drill-clock`), so a "minute" lasts a few real seconds; what arrived is
//! read back with rdkafka and checked slot by slot.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use common::*;

/// cronq's default `--partitions` of the job topic.
const PARTITIONS: i32 = 3;

/// The drill clock all processes of one test share.
#[derive(Clone, Copy)]
struct Drill {
    epoch: i64,
    speed: i64,
}

impl Drill {
    fn new(speed: i64) -> Drill {
        Drill {
            epoch: Utc::now().timestamp(),
            speed,
        }
    }

    fn setting(&self) -> String {
        format!("{}x@{}", self.speed, self.epoch)
    }

    fn now(&self) -> DateTime<Utc> {
        let real = Utc::now().timestamp_millis();
        let ms = self.epoch * 1000 + (real - self.epoch * 1000) * self.speed;
        Utc.timestamp_millis_opt(ms).unwrap()
    }

    /// Drill minutes since the Unix epoch.
    fn minute(&self) -> i64 {
        self.now().timestamp().div_euclid(60)
    }

    /// Waits (polling) until drill time reaches `second` of a later minute than now; returns that minute.
    fn wait_minutes(&self, minutes: i64, second: u32) -> i64 {
        let target = self.minute() + minutes;
        let deadline = Instant::now() + Duration::from_secs(600);
        while self.minute() < target || (self.now().timestamp() % 60) < i64::from(second) {
            assert!(Instant::now() < deadline, "drill clock stuck");
            pause();
        }
        target
    }
}

struct Dispatcher {
    child: Child,
    log: PathBuf,
    name: String,
}

impl Dispatcher {
    fn start(
        broker: &str,
        topic: &str,
        schedule: &Path,
        drill: Drill,
        name: &str,
        dir: &Path,
        extra: &[&str],
    ) -> Dispatcher {
        let log = dir.join(format!("{name}-{}.log", Utc::now().timestamp_millis()));
        let child = Command::new(CRONQ)
            .args(["run", "--brokers", broker, "--topic", topic])
            .args(["--group", &format!("g-{topic}"), "--member-id", name])
            .args([
                "--tick",
                "100ms",
                "--session-timeout",
                "6s",
                "--retry-backoff",
                "50ms",
            ])
            .args(["--drill-clock", &drill.setting()])
            .args(extra)
            .arg("--schedule")
            .arg(schedule)
            .env("CRONQ_LOG", "info,rskafka=warn,librdkafka=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn cronq run");
        Dispatcher {
            child,
            log,
            name: name.to_string(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log shows `needle`.
    fn wait_log(&mut self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while !self.log().contains(needle) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before {needle:?}; log:\n{}",
                    self.name,
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{}: no {needle:?} within {timeout:?}; log:\n{}",
                self.name,
                self.log()
            );
            pause();
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit.
    fn terminate(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: signalling our own child process.
        #[allow(unsafe_code)]
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let status = wait_exit(&mut self.child, Duration::from_secs(60), &self.log);
        assert!(
            status.success(),
            "{} exited with {status}; log:\n{}",
            self.name,
            self.log()
        );
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

    /// Every job has every minute from the first slot seen to the last: nothing lost. On a
    /// failure the dispatchers' logs are printed.
    fn assert_no_gap(&self, jobs: usize, logs: &[&Dispatcher]) {
        let result = std::panic::catch_unwind(|| self.check_no_gap(jobs));
        if let Err(e) = result {
            for d in logs {
                eprintln!("===== {} =====\n{}", d.name, d.log());
            }
            std::panic::resume_unwind(e);
        }
    }

    fn check_no_gap(&self, jobs: usize) {
        assert_eq!(self.slots.len(), jobs, "jobs that arrived");
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
        let last = self
            .slots
            .values()
            .filter_map(|s| s.last())
            .max()
            .copied()
            .unwrap();
        for (job, slots) in &self.slots {
            let first = *slots.first().unwrap();
            let missing: Vec<i64> = (first..=last).filter(|m| !slots.contains(m)).collect();
            assert!(
                missing.is_empty(),
                "{job}: {} of {} slots missing: {missing:?}",
                missing.len(),
                last - first + 1
            );
        }
    }

    /// The minutes that have duplicated dispatchIds.
    fn duplicate_minutes(&self) -> (u32, BTreeSet<String>) {
        let mut dups = 0;
        let mut minutes = BTreeSet::new();
        for (id, n) in &self.copies {
            if *n > 1 {
                dups += n - 1;
                minutes.insert(id.split('@').nth(1).unwrap_or_default().to_string());
            }
        }
        (dups, minutes)
    }
}

/// Scenario 1: one dispatcher, 200 jobs every minute, kill -9 mid-minute, restart 3 minutes
/// later: every slot of the gap arrives, duplicates only of the minute in progress.
#[test]
fn a_crashed_dispatcher_restarted_later_sends_every_slot_of_the_gap() {
    let broker = Broker::start();
    let topic = random_topic("crash");
    let (dir, schedule) = schedule_file(&every_minute_jobs(200));
    let drill = Drill::new(10);
    let mut first = Dispatcher::start(
        &broker.address(),
        &topic,
        &schedule,
        drill,
        "a",
        dir.path(),
        &[],
    );
    first.wait_log("taking over a shard", Duration::from_secs(60));
    drill.wait_minutes(3, 30);
    first.kill9();
    drill.wait_minutes(3, 0);
    let mut second = Dispatcher::start(
        &broker.address(),
        &topic,
        &schedule,
        drill,
        "a2",
        dir.path(),
        &[],
    );
    second.wait_log("taking over a shard", Duration::from_secs(60));
    drill.wait_minutes(2, 10);
    second.terminate();
    let arrivals = Arrivals::read(&broker.address(), &topic, 200 * 10);
    arrivals.assert_no_gap(200, &[&first, &second]);
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
    let broker = Broker::start();
    let topic = random_topic("rules");
    let (dir, schedule) = schedule_file(
        r#"{"jobs":[
          {"jobName":"all","job":"x","cronTime":"* * * * *"},
          {"jobName":"all-5m","job":"x","cronTime":"* * * * *","catchupWindow":"5m"},
          {"jobName":"latest","job":"x","cronTime":"* * * * *","catchup":"latest"},
          {"jobName":"none","job":"x","cronTime":"* * * * *","catchup":"none"}
        ]}"#,
    );
    let drill = Drill::new(20);
    let mut first = Dispatcher::start(
        &broker.address(),
        &topic,
        &schedule,
        drill,
        "a",
        dir.path(),
        &[],
    );
    first.wait_log("taking over a shard", Duration::from_secs(60));
    drill.wait_minutes(2, 30);
    first.kill9();
    drill.wait_minutes(10, 0);
    let mut second = Dispatcher::start(
        &broker.address(),
        &topic,
        &schedule,
        drill,
        "b",
        dir.path(),
        &[],
    );
    second.wait_log("missed slots were skipped", Duration::from_secs(60));
    drill.wait_minutes(2, 10);
    second.terminate();
    let a = Arrivals::read(&broker.address(), &topic, 100);
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
    assert!(gap.len() >= 10, "an outage of at least 10 minutes: {gap:?}");
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
    let broker = Broker::start();
    let topic = random_topic("takeover");
    let (dir, schedule) = schedule_file(&every_minute_jobs(1000));
    let drill = Drill::new(10);
    let mut members: Vec<Dispatcher> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            Dispatcher::start(
                &broker.address(),
                &topic,
                &schedule,
                drill,
                n,
                dir.path(),
                &[],
            )
        })
        .collect();
    for m in &mut members {
        m.wait_log("taking over a shard", Duration::from_secs(90));
    }
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
    drill.wait_minutes(2, 10);
    for m in &mut members[..2] {
        m.terminate();
    }
    let arrivals = Arrivals::read(&broker.address(), &topic, 1000 * 12);
    arrivals.assert_no_gap(1000, &members.iter().collect::<Vec<_>>());
    let (dups, minutes) = arrivals.duplicate_minutes();
    eprintln!("kill -9 of one of three: {dups} duplicates in minutes {minutes:?}");
}

/// Scenario 3: a rolling restart of three dispatchers loses and duplicates no slot.
#[test]
fn a_rolling_restart_of_three_dispatchers_loses_and_duplicates_nothing() {
    let broker = Broker::start();
    let topic = random_topic("rolling");
    let (dir, schedule) = schedule_file(&every_minute_jobs(300));
    let drill = Drill::new(10);
    let mut members: Vec<Dispatcher> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            Dispatcher::start(
                &broker.address(),
                &topic,
                &schedule,
                drill,
                n,
                dir.path(),
                &[],
            )
        })
        .collect();
    for m in &mut members {
        m.wait_log("taking over a shard", Duration::from_secs(90));
    }
    drill.wait_minutes(2, 20);
    for member in members.iter_mut() {
        member.terminate();
        let name = format!("{}2", member.name);
        *member = Dispatcher::start(
            &broker.address(),
            &topic,
            &schedule,
            drill,
            &name,
            dir.path(),
            &[],
        );
        member.wait_log("taking over a shard", Duration::from_secs(90));
        drill.wait_minutes(1, 20);
    }
    for m in &mut members {
        m.terminate();
    }
    let arrivals = Arrivals::read(&broker.address(), &topic, 300 * 12);
    arrivals.assert_no_gap(300, &members.iter().collect::<Vec<_>>());
    let (dups, minutes) = arrivals.duplicate_minutes();
    assert_eq!(
        dups, 0,
        "a clean handover duplicates nothing; duplicated minutes {minutes:?}"
    );
}

/// `cronq status` reads the group: healthy with one member running, every shard owned.
#[test]
fn status_shows_every_shard_owned_by_the_running_member() {
    let broker = Broker::start();
    let topic = random_topic("status");
    let (dir, schedule) = schedule_file(&every_minute_jobs(10));
    let drill = Drill::new(10);
    let mut member = Dispatcher::start(
        &broker.address(),
        &topic,
        &schedule,
        drill,
        "solo",
        dir.path(),
        &["--shards", "4"],
    );
    member.wait_log("taking over a shard", Duration::from_secs(60));
    drill.wait_minutes(1, 40);
    let out = Command::new(CRONQ)
        .args([
            "status",
            "--brokers",
            &broker.address(),
            "--group",
            &format!("g-{topic}"),
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
    member.kill9();
    // Its records go stale: after 2 drill minutes every shard is orphaned and status says so.
    drill.wait_minutes(3, 0);
    let out = Command::new(CRONQ)
        .args([
            "status",
            "--brokers",
            &broker.address(),
            "--group",
            &format!("g-{topic}"),
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
