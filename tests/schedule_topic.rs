//! The topic mode on a real broker (tansu) with real `cronq run --schedule-topic` processes: the
//! schedule is `<group>.schedule`, one partition per shard. Records are written here with rdkafka
//! (a client we did not write), exactly as docs/contracts.md describes them; what the members
//! dispatched is read back from the job topic and checked slot by slot, on a drill clock.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;

/// cronq's default `--partitions` of the job topic.
const PARTITIONS: i32 = 3;

/// A schedule record value (contract v1) for `spec`.
fn record_value(spec: &str) -> Vec<u8> {
    format!(
        r#"{{"v":1,"spec":{spec},"changed":{{"at":"2026-12-07T10:00:00.000Z","by":"test","via":"apply","source":"t.json"}}}}"#
    )
    .into_bytes()
}

fn job_spec(name: &str, payload: &str, cron: &str) -> String {
    format!(r#"{{"jobName":"{name}","job":"{payload}","cronTime":"{cron}"}}"#)
}

/// The shard of `name` among `shards`: its partition of the schedule topic.
fn shard_of(name: &str, shards: u32) -> i32 {
    cronq::wire::partition_for(name.as_bytes(), shards as i32)
}

/// Writes each `(name, spec)` to its partition of `topic`.
fn write_jobs(broker: &str, topic: &str, shards: u32, jobs: &[(String, String)]) {
    let records: Vec<Record> = jobs
        .iter()
        .map(|(name, spec)| Record {
            key: name.as_bytes().to_vec(),
            value: record_value(spec),
            partition: Some(shard_of(name, shards)),
            headers: Vec::new(),
        })
        .collect();
    produce(broker, topic, &records);
}

/// Each job's dispatches: drill minute -> the `job` payload it carried.
fn dispatches(broker: &str, topic: &str) -> BTreeMap<String, BTreeMap<i64, String>> {
    let mut out: BTreeMap<String, BTreeMap<i64, String>> = BTreeMap::new();
    for r in consume_all(broker, topic, PARTITIONS, 100, Duration::from_secs(60)) {
        let name = r.value["jobName"].as_str().expect("jobName").to_string();
        let at: DateTime<Utc> = r.value["scheduledAt"].as_str().unwrap().parse().unwrap();
        let payload = r.value["job"].as_str().unwrap_or_default().to_string();
        out.entry(name)
            .or_default()
            .insert(at.timestamp().div_euclid(60), payload);
    }
    out
}

#[test]
fn an_upsert_and_a_delete_reach_the_owner_and_a_bad_record_leaves_the_last_good_version() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("stedit");
    let schedule_topic = format!("g-{topic}.schedule");
    let shards = 2;
    let drill = Drill::new(10);
    let dir = tempfile::tempdir().unwrap();
    create_topic(&address, &schedule_topic, shards as i32);
    write_jobs(
        &address,
        &schedule_topic,
        shards,
        &[
            ("a".into(), job_spec("a", "a-v1", "* * * * *")),
            ("b".into(), job_spec("b", "b-v1", "* * * * *")),
            ("c".into(), job_spec("c", "c-v1", "* * * * *")),
        ],
    );
    let unused = dir.path().join("no-such-file.json");
    let mut member = Dispatcher::start(
        &address,
        &topic,
        &unused,
        drill,
        "m1",
        dir.path(),
        &["--schedule-topic", "--shards", "2"],
    );
    member.wait_log("taking over a shard", Duration::from_secs(90));
    let http = http_addr_in_log(&member.log, Duration::from_secs(10));
    // Ready: the schedule is the topic, every owned shard read.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = http_get(&format!("http://{http}/readyz"));
        if code == 200 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not ready: {body}");
        (0..25).for_each(|_| pause());
    }
    // Two whole minutes on the first versions, then the changes, written mid-minute.
    let changed_at = drill.wait_minutes(2, 30);
    write_jobs(
        &address,
        &schedule_topic,
        shards,
        &[
            ("a".into(), job_spec("a", "a-v2", "* * * * *")),
            ("c".into(), job_spec("c", "c-v2", "61 * * * *")),
        ],
    );
    produce_tombstones(&address, &schedule_topic, &[("b", shard_of("b", shards))]);
    member.wait_log("schedule record rejected", Duration::from_secs(30));
    let stopped = drill.wait_minutes(3, 10);
    let (_, status) = http_get(&format!("http://{http}/status.json"));
    let (_, metrics) = http_get(&format!("http://{http}/metrics"));
    let page = browser_dom(&format!("http://{http}/"));
    let (_, group) = group_status(&address, &topic, drill);
    member.terminate();
    // The page (in a real browser) and `cronq status` show each shard's place in the topic.
    assert!(page.contains("Schedule topic"), "{page}");
    assert!(page.contains("61 is out of range"), "{page}");
    let positions: Vec<&serde_json::Value> = group["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["scheduleTopic"])
        .collect();
    let sum = |key: &str| -> u64 { positions.iter().map(|p| p[key].as_u64().unwrap()).sum() };
    assert_eq!(
        (sum("jobs"), sum("rejected"), sum("offset")),
        (2, 1, 6),
        "cronq status: {group}"
    );

    let got = dispatches(&address, &topic);
    with_logs(&[&member], || {
        let a = &got["a"];
        let b = &got["b"];
        let c = &got["c"];
        // Before the change: the first versions; from the minute after it: the new ones.
        assert!(
            a.range(..=changed_at).all(|(_, p)| p == "a-v1"),
            "a before the change: {a:?}"
        );
        let a_after: Vec<_> = a.range(changed_at + 1..).collect();
        assert!(a_after.len() >= 3, "a after the change: {a:?}");
        assert!(
            a_after.iter().all(|(_, p)| *p == "a-v2"),
            "a after the change: {a:?}"
        );
        // The tombstone stops b.
        // (The minute of the change was dispatched at its start, before the change.)
        assert!(
            b.range(..=changed_at).count() >= 2,
            "b ran before its delete: {b:?}"
        );
        assert_eq!(
            b.range(changed_at + 1..).count(),
            0,
            "b after its delete: {b:?}"
        );
        // c's bad version is rejected: its last good one keeps running, every minute.
        let c_minutes: BTreeSet<i64> = c.keys().copied().collect();
        let first = *c_minutes.first().unwrap();
        let missing: Vec<i64> = (first..stopped)
            .filter(|m| !c_minutes.contains(m))
            .collect();
        assert!(missing.is_empty(), "c missed minutes {missing:?}: {c:?}");
        assert!(c.values().all(|p| p == "c-v1"), "c: {c:?}");
    });
    let log = member.log();
    assert!(
        log.contains("cronTime: minute: 61 is out of range 0-59"),
        "the rejection names the field and the problem:\n{log}"
    );
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let view = &status["scheduleTopic"];
    assert_eq!(view["topic"], schedule_topic.as_str(), "{status}");
    let rejected: u64 = view["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["rejected"].as_u64().unwrap())
        .sum();
    assert_eq!(rejected, 1, "{view}");
    let jobs: u64 = view["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["jobs"].as_u64().unwrap())
        .sum();
    assert_eq!(jobs, 2, "a and c are held, b is gone: {view}");
    assert_eq!(view["rejected"][0]["key"], "\"c\"", "{view}");
    assert!(
        metrics.contains("cronq_schedule_records_rejected_total 1"),
        "{metrics}"
    );
}

/// The shards a member read from the topic, and how many jobs each held, from its log lines.
fn shards_read(log: &str) -> Vec<(u32, u64)> {
    log.lines()
        .filter(|l| l.contains("shard's schedule read from the topic"))
        .map(|l| {
            let field = |name: &str| -> u64 {
                l.split_whitespace()
                    .find_map(|w| w.strip_prefix(&format!("{name}=")))
                    .unwrap_or_else(|| panic!("no {name}= in {l}"))
                    .parse()
                    .unwrap()
            };
            (field("shard") as u32, field("jobs"))
        })
        .collect()
}

#[test]
fn three_members_each_read_only_their_shards_and_a_takeover_reads_one_partition() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("stgroup");
    let schedule_topic = format!("g-{topic}.schedule");
    let shards = 6u32;
    let drill = Drill::new(10);
    let dir = tempfile::tempdir().unwrap();
    create_topic(&address, &schedule_topic, shards as i32);
    let jobs: Vec<(String, String)> = (0..60)
        .map(|i| {
            let name = format!("job-{i:02}");
            let spec = job_spec(&name, &format!("run {i}"), "* * * * *");
            (name, spec)
        })
        .collect();
    write_jobs(&address, &schedule_topic, shards, &jobs);
    let mut per_shard: BTreeMap<u32, u64> = BTreeMap::new();
    for (name, _) in &jobs {
        *per_shard.entry(shard_of(name, shards) as u32).or_default() += 1;
    }
    let unused = dir.path().join("no-such-file.json");
    let extra = ["--schedule-topic", "--shards", "6"];
    let mut members: Vec<Dispatcher> = ["m1", "m2", "m3"]
        .iter()
        .map(|n| Dispatcher::start(&address, &topic, &unused, drill, n, dir.path(), &extra))
        .collect();
    for m in &mut members {
        m.wait_log("taking over a shard", Duration::from_secs(90));
    }
    // Settled: every shard owned by exactly one member.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (healthy, view) = group_status(&address, &topic, drill);
        if healthy {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not healthy: {view}");
        (0..25).for_each(|_| pause());
    }
    with_logs(&members.iter().collect::<Vec<_>>(), || {
        for m in &members {
            for (shard, held) in shards_read(&m.log()) {
                assert_eq!(
                    held, per_shard[&shard],
                    "{} read shard {shard}: its jobs, no other shard's",
                    m.name
                );
            }
        }
    });
    // m3 leaves: its shards are taken over; a member reads only the partitions of shards new to
    // it (the assignor may move other shards too), never one it kept.
    let before: Vec<usize> = members
        .iter()
        .map(|m| shards_read(&m.log()).len())
        .collect();
    let (_, view) = group_status(&address, &topic, drill);
    let owned_before = |name: &str| -> BTreeSet<u32> {
        view["shards"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["owner"] == name)
            .map(|s| s["shard"].as_u64().unwrap() as u32)
            .collect()
    };
    let m3_shards = owned_before("m3");
    assert!(!m3_shards.is_empty(), "m3 owns shards: {view}");
    members[2].terminate();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let read_after = loop {
        let read_after: Vec<(String, Vec<(u32, u64)>)> = members[..2]
            .iter()
            .zip(&before)
            .map(|(m, n)| (m.name.clone(), shards_read(&m.log()).split_off(*n)))
            .collect();
        let covered: BTreeSet<u32> = read_after
            .iter()
            .flat_map(|(_, r)| r.iter().map(|(s, _)| *s))
            .collect();
        if m3_shards.is_subset(&covered) {
            break read_after;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "m3's shards {m3_shards:?} not taken over: {read_after:?}"
        );
        (0..25).for_each(|_| pause());
    };
    with_logs(&members.iter().collect::<Vec<_>>(), || {
        for (name, reads) in &read_after {
            let kept = owned_before(name);
            for (shard, held) in reads {
                assert!(
                    !kept.contains(shard),
                    "{name} read its own shard {shard} again after m3 left: {read_after:?}"
                );
                assert_eq!(*held, per_shard[shard]);
            }
        }
    });
    // And the jobs run: the last minute before the end reached every job.
    let last = drill.wait_minutes(2, 20) - 1;
    for m in &mut members[..2] {
        m.terminate();
    }
    let got = dispatches(&address, &topic);
    with_logs(&members.iter().collect::<Vec<_>>(), || {
        for (name, _) in &jobs {
            assert!(
                got.get(name).is_some_and(|m| m.contains_key(&last)),
                "{name} not dispatched at minute {last}: {:?}",
                got.get(name)
            );
        }
    });
}

/// `at`, `every` and `keepAfterRun` on the topic, on a drill clock: an `at` job fires once in its
/// minute with its second as `notBefore`, and its owner then deletes it with a tombstone (one with
/// `keepAfterRun` stays); an `at` written after its second, in the same minute, still runs, late,
/// at once; an `every` job fires on the minutes anchored at its `startAt`, and on no other.
#[test]
fn at_and_every_jobs_fire_on_their_slots_and_a_fired_at_job_is_removed_by_its_owner() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("stkinds");
    let schedule_topic = format!("g-{topic}.schedule");
    let shards = 2;
    let drill = Drill::new(10);
    let dir = tempfile::tempdir().unwrap();
    create_topic(&address, &schedule_topic, shards as i32);
    let instant = |secs: i64| {
        DateTime::<Utc>::from_timestamp(secs, 0)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let m0 = drill.minute();
    let (once_at, kept_at) = ((m0 + 3) * 60 + 30, (m0 + 3) * 60 + 10);
    let anchor = m0 + 1;
    let spec = |name: &str, fields: String| {
        (
            name.to_string(),
            format!(r#"{{"jobName":"{name}","job":"run {name}",{fields}}}"#),
        )
    };
    write_jobs(
        &address,
        &schedule_topic,
        shards,
        &[
            spec("once", format!(r#""at":"{}""#, instant(once_at))),
            spec(
                "kept",
                format!(r#""at":"{}","keepAfterRun":true"#, instant(kept_at)),
            ),
            spec(
                "every2",
                format!(r#""every":"2m","startAt":"{}""#, instant(anchor * 60)),
            ),
        ],
    );
    let unused = dir.path().join("no-such-file.json");
    let mut member = Dispatcher::start(
        &address,
        &topic,
        &unused,
        drill,
        "m1",
        dir.path(),
        &["--schedule-topic", "--shards", "2"],
    );
    member.wait_log("taking over a shard", Duration::from_secs(90));
    // An `at` whose second has just passed, written in its own minute.
    let late_minute = drill.wait_minutes(4, 20);
    write_jobs(
        &address,
        &schedule_topic,
        shards,
        &[spec(
            "late",
            format!(r#""at":"{}""#, instant(late_minute * 60 + 5)),
        )],
    );
    member.wait_log("removed from the schedule topic", Duration::from_secs(60));
    // Three minutes, not two: on a loaded machine the member may take over only inside the anchor
    // minute (seen in CI), whose slot it then does not send; three slots of `every2` still fall
    // before `stopped`.
    let stopped = drill.wait_minutes(3, 10);
    member.terminate();

    let mut got: BTreeMap<String, Vec<(i64, Option<String>)>> = BTreeMap::new();
    for r in consume_all(&address, &topic, PARTITIONS, 20, Duration::from_secs(60)) {
        let at: DateTime<Utc> = r.value["scheduledAt"].as_str().unwrap().parse().unwrap();
        got.entry(r.value["jobName"].as_str().unwrap().to_string())
            .or_default()
            .push((
                at.timestamp().div_euclid(60),
                r.value["notBefore"].as_str().map(str::to_string),
            ));
    }
    let schedule: Vec<(String, bool)> = consume_all(
        &address,
        &schedule_topic,
        shards as i32,
        10,
        Duration::from_secs(60),
    )
    .into_iter()
    .map(|r| (String::from_utf8(r.key).unwrap(), r.value.is_null()))
    .collect();
    with_logs(&[&member], || {
        let millis = |secs: i64| {
            DateTime::<Utc>::from_timestamp(secs, 0)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        };
        assert_eq!(
            got["once"],
            [(once_at / 60, Some(millis(once_at)))],
            "{got:?}"
        );
        assert_eq!(got["kept"], [(kept_at / 60, Some(millis(kept_at)))]);
        assert_eq!(
            got["late"],
            [(late_minute, Some(millis(late_minute * 60 + 5)))]
        );
        // The minute the member was stopped in may or may not have been sent: left out.
        let every: Vec<i64> = got["every2"]
            .iter()
            .map(|(m, _)| *m)
            .filter(|m| *m < stopped)
            .collect();
        let expected: Vec<i64> = (every[0]..stopped)
            .filter(|m| m >= &anchor && (m - anchor) % 2 == 0)
            .collect();
        assert_eq!(every, expected, "every 2m from minute {anchor}");
        assert!(every.len() >= 3, "{every:?}");
        assert!(got["every2"].iter().all(|(_, nb)| nb.is_none()));
        // The owner deleted the fired `at` jobs, not the one to keep nor the interval.
        let tombstones: BTreeSet<&str> = schedule
            .iter()
            .filter(|(_, gone)| *gone)
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(tombstones, BTreeSet::from(["late", "once"]), "{schedule:?}");
    });
}

/// An `every` job keeps its anchored slots across takeovers: it runs on one member, a second one
/// joins (the group rebalances), then the first stops (SIGTERM: its shards are handed over). Every
/// slot `startAt + k × 3 min` from the first dispatch on is sent exactly once, and no other minute.
#[test]
fn an_interval_job_fires_on_its_anchored_slots_across_takeovers() {
    let broker = Broker::start();
    let address = broker.address();
    let topic = random_topic("stevery");
    let schedule_topic = format!("g-{topic}.schedule");
    let shards = 2u32;
    let drill = Drill::new(10);
    let dir = tempfile::tempdir().unwrap();
    create_topic(&address, &schedule_topic, shards as i32);
    let anchor = drill.minute() + 1;
    let start_at = DateTime::<Utc>::from_timestamp(anchor * 60, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let jobs: Vec<(String, String)> = ["every3-a", "every3-b", "every3-c"]
        .iter()
        .map(|name| {
            (
                name.to_string(),
                format!(
                    r#"{{"jobName":"{name}","job":"run","every":"3m","startAt":"{start_at}"}}"#
                ),
            )
        })
        .collect();
    write_jobs(&address, &schedule_topic, shards, &jobs);
    let unused = dir.path().join("no-such-file.json");
    let extra = ["--schedule-topic", "--shards", "2"];
    let mut m1 = Dispatcher::start(&address, &topic, &unused, drill, "m1", dir.path(), &extra);
    m1.wait_log("taking over a shard", Duration::from_secs(90));
    drill.wait_minutes(4, 20);
    let mut m2 = Dispatcher::start(&address, &topic, &unused, drill, "m2", dir.path(), &extra);
    m2.wait_log("taking over a shard", Duration::from_secs(90));
    drill.wait_minutes(4, 20);
    m1.terminate();
    // m2 owns both shards now.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (healthy, view) = group_status(&address, &topic, drill);
        let owners: BTreeSet<String> = view["shards"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter_map(|s| s["owner"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        if healthy && owners == BTreeSet::from(["m2".to_string()]) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "m2 owns all: {view}");
        (0..25).for_each(|_| pause());
    }
    // Long enough for 5 slots before `stopped` however the takeovers fall in their minutes (the
    // minute a fresh shard is taken over in is not its own: its first slot may be 3 minutes on).
    let stopped = drill.wait_minutes(8, 10);
    m2.terminate();
    let mut sent: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for r in consume_all(&address, &topic, PARTITIONS, 40, Duration::from_secs(60)) {
        let at: DateTime<Utc> = r.value["scheduledAt"].as_str().unwrap().parse().unwrap();
        sent.entry(r.value["jobName"].as_str().unwrap().to_string())
            .or_default()
            .push(at.timestamp().div_euclid(60));
    }
    with_logs(&[&m1, &m2], || {
        for (name, _) in &jobs {
            // The minute m2 was stopped in may or may not have been sent: left out.
            let mut minutes: Vec<i64> = sent[name]
                .iter()
                .copied()
                .filter(|m| *m < stopped)
                .collect();
            minutes.sort_unstable();
            let expected: Vec<i64> = (minutes[0]..stopped)
                .filter(|m| *m >= anchor && (m - anchor) % 3 == 0)
                .collect();
            assert_eq!(minutes, expected, "{name}: every 3m from minute {anchor}");
            assert!(minutes.len() >= 5, "{name}: {minutes:?}");
        }
    });
}
