//! The jobs API against a real broker (tansu) and real `cronq run --schedule-topic --api-tokens`
//! members on a drill clock: a job PUT fires and reads back with its version, a DELETE stops it,
//! tokens and If-Match guard every write, a batch lists back page by page, a member forwards a
//! request for a shard it does not own, the `cronq jobs` client works, and every response matches
//! docs/openapi.json.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const SHARDS: u32 = 4;
const WRITE_TOKEN: &str = "w-secret-token";
const READ_TOKEN: &str = "r-secret-token";

fn sha256_hex(token: &str) -> String {
    let out = Command::new(CRONQ)
        .args(["jobs", "hash-token"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(token.as_bytes())?;
            child.wait_with_output()
        })
        .expect("cronq jobs hash-token");
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn token_file(path: &Path, tokens: &[(&str, &str, &str)]) {
    let entries: Vec<Value> = tokens
        .iter()
        .map(|(name, scope, token)| json!({"name": name, "scope": scope, "sha256": sha256_hex(token)}))
        .collect();
    std::fs::write(path, json!({ "tokens": entries }).to_string()).unwrap();
}

/// One response as the test saw it, for the OpenAPI check: (method, documented path, status, body).
type Seen = (String, String, u16, Value);

/// A test's broker, its group's members with the API on, and what the API answered.
struct Group {
    broker: Broker,
    topic: String,
    drill: Drill,
    dir: tempfile::TempDir,
    tokens: PathBuf,
    members: Vec<Dispatcher>,
    urls: Vec<String>,
    seen: Mutex<Vec<Seen>>,
}

struct Reply {
    status: u16,
    etag: Option<String>,
    headers: BTreeMap<String, String>,
    body: Value,
}

impl Group {
    fn start(prefix: &str, members: &[&str]) -> Group {
        Group::start_with(prefix, members, &[])
    }

    /// [`Group::start`] with more `cronq run` flags for every member.
    fn start_with(prefix: &str, members: &[&str], extra: &[&str]) -> Group {
        let broker = Broker::start();
        let topic = random_topic(prefix);
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("tokens.json");
        token_file(
            &tokens,
            &[
                ("deploy-bot", "write", WRITE_TOKEN),
                ("ci", "read", READ_TOKEN),
            ],
        );
        create_topic(&broker.address(), &topic, 3);
        let drill = Drill::new(10);
        let mut group = Group {
            broker,
            topic,
            drill,
            dir,
            tokens,
            members: Vec::new(),
            urls: Vec::new(),
            seen: Mutex::new(Vec::new()),
        };
        for name in members {
            group.add(name, extra);
        }
        group.wait_settled();
        group
    }

    fn add(&mut self, name: &str, extra: &[&str]) {
        let unused = self.dir.path().join("no-file.json");
        let shards = SHARDS.to_string();
        let tokens = self.tokens.to_str().unwrap().to_string();
        let member = Dispatcher::start(
            &self.broker.address(),
            &self.topic,
            &unused,
            self.drill,
            name,
            self.dir.path(),
            &[
                &[
                    "--schedule-topic",
                    "--shards",
                    shards.as_str(),
                    "--api-tokens",
                    tokens.as_str(),
                ][..],
                extra,
            ]
            .concat(),
        );
        let http = http_addr_in_log(&member.log, Duration::from_secs(30));
        self.urls.push(format!("http://{http}"));
        self.members.push(member);
    }

    /// Every shard owned, and each member's API serving.
    fn wait_settled(&mut self) {
        for m in &mut self.members {
            m.wait_log("jobs API serving", Duration::from_secs(90));
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (healthy, view) = group_status(&self.broker.address(), &self.topic, self.drill);
            let owned: Vec<u64> = self.urls.iter().map(|u| self.jobs_held(u).1).collect();
            // Every shard owned once, and every member owning some.
            let spread = owned.iter().all(|&n| n > 0);
            if healthy && owned.iter().sum::<u64>() == u64::from(SHARDS) && spread {
                break;
            }
            assert!(Instant::now() < deadline, "group not settled: {view}");
            (0..25).for_each(|_| pause());
        }
    }

    /// (jobs held, shards owned) of the member at `url`, from its /status.json.
    fn jobs_held(&self, url: &str) -> (u64, u64) {
        let (_, status) = http_get(&format!("{url}/status.json"));
        let status: Value = serde_json::from_str(&status).unwrap_or(Value::Null);
        let shards = status["scheduleTopic"]["shards"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let jobs = shards.iter().map(|s| s["jobs"].as_u64().unwrap_or(0)).sum();
        (jobs, shards.len() as u64)
    }

    fn jobs_in_force(&self) -> u64 {
        self.urls.iter().map(|u| self.jobs_held(u).0).sum()
    }

    /// `method url` with `token` (and If-Match, body); `doc` is the documented path it exercises.
    #[allow(clippy::too_many_arguments)]
    fn call(
        &self,
        member: usize,
        method: &str,
        path: &str,
        doc: &str,
        token: Option<&str>,
        if_match: Option<&str>,
        body: Option<&str>,
    ) -> Reply {
        let url = format!("{}{path}", self.urls[member]);
        let mut req = ureq::request(method, &url).timeout(Duration::from_secs(60));
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        if let Some(v) = if_match {
            req = req.set("If-Match", v);
        }
        let result = match body {
            Some(b) => req.set("Content-Type", "application/json").send_string(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {url}: {e}"),
        };
        let status = resp.status();
        let headers: BTreeMap<String, String> = resp
            .headers_names()
            .into_iter()
            .filter_map(|n| Some((n.to_ascii_lowercase(), resp.header(&n)?.to_string())))
            .collect();
        let etag = headers.get("etag").cloned();
        let text = resp.into_string().unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        self.seen.lock().unwrap().push((
            method.to_ascii_lowercase(),
            doc.to_string(),
            status,
            body.clone(),
        ));
        Reply {
            status,
            etag,
            headers,
            body,
        }
    }

    fn put(
        &self,
        member: usize,
        name: &str,
        body: &str,
        token: &str,
        if_match: Option<&str>,
    ) -> Reply {
        self.call(
            member,
            "PUT",
            &format!("/api/v1/jobs/{name}"),
            "/api/v1/jobs/{name}",
            Some(token),
            if_match,
            Some(body),
        )
    }

    fn get(&self, member: usize, name: &str, token: &str) -> Reply {
        self.call(
            member,
            "GET",
            &format!("/api/v1/jobs/{name}"),
            "/api/v1/jobs/{name}",
            Some(token),
            None,
            None,
        )
    }

    fn delete(&self, member: usize, name: &str, token: &str) -> Reply {
        self.call(
            member,
            "DELETE",
            &format!("/api/v1/jobs/{name}"),
            "/api/v1/jobs/{name}",
            Some(token),
            None,
            None,
        )
    }

    /// `call` again while it answers 503 with Retry-After (a shard's owner not known yet, a
    /// rebalance), as a client is told to; at most 30 s.
    fn retrying(&self, call: impl Fn() -> Reply) -> Reply {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let reply = call();
            if reply.status != 503
                || !reply.headers.contains_key("retry-after")
                || Instant::now() > deadline
            {
                return reply;
            }
            (0..25).for_each(|_| pause());
        }
    }

    fn logs(&self) -> Vec<&Dispatcher> {
        self.members.iter().collect()
    }

    /// Waits until `check` holds, polling; panics with the members' logs after `timeout`.
    fn wait(&self, what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !check() {
            if Instant::now() > deadline {
                with_logs(&self.logs(), || panic!("{what}: not within {timeout:?}"));
            }
            (0..25).for_each(|_| pause());
        }
    }
}

fn job(name: &str, payload: &str, cron: &str, topic: &str) -> String {
    json!({"jobName": name, "job": payload, "cronTime": cron, "topic": topic}).to_string()
}

#[test]
fn a_job_put_through_the_api_fires_reads_back_with_its_version_and_stops_when_deleted() {
    let g = Group::start("apifire", &["m1"]);
    let put = g.put(
        0,
        "every-minute",
        &job("every-minute", "hello", "* * * * *", &g.topic),
        WRITE_TOKEN,
        None,
    );
    assert_eq!(put.status, 201, "{}", put.body);
    let version = put.body["version"].as_str().unwrap().to_string();
    assert_eq!(put.etag.as_deref(), Some(format!("\"{version}\"").as_str()));
    // Read back from Kafka at its version, with who wrote it.
    let got = g.get(0, "every-minute", READ_TOKEN);
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(got.body["version"], version.as_str());
    assert_eq!(got.body["job"]["job"], "hello");
    assert_eq!(got.body["job"]["cronTime"], "* * * * *");
    assert_eq!(got.body["changed"]["by"], "deploy-bot");
    assert_eq!(got.body["changed"]["via"], "api");
    // In force on its owner, and it fires.
    g.wait("the job held by its owner", Duration::from_secs(30), || {
        g.jobs_in_force() == 1
    });
    let mut fired = Vec::new();
    g.wait("a dispatch of the job", Duration::from_secs(60), || {
        fired = consume_all(&g.broker.address(), &g.topic, 3, 10, Duration::from_secs(5));
        !fired.is_empty()
    });
    assert_eq!(fired[0].value["jobName"], "every-minute");
    assert_eq!(fired[0].value["job"], "hello");
    // Its next runs, as validate computes them: every minute.
    let next = g.call(
        0,
        "GET",
        "/api/v1/jobs/every-minute/next?n=3",
        "/api/v1/jobs/{name}/next",
        Some(READ_TOKEN),
        None,
        None,
    );
    assert_eq!(next.status, 200, "{}", next.body);
    let runs: Vec<chrono::DateTime<chrono::Utc>> = next.body["next"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(runs.len(), 3);
    assert_eq!((runs[1] - runs[0]).num_seconds(), 60);
    let bad_n = g.call(
        0,
        "GET",
        "/api/v1/jobs/every-minute/next?n=101",
        "/api/v1/jobs/{name}/next",
        Some(READ_TOKEN),
        None,
        None,
    );
    assert_eq!(bad_n.status, 400);
    // Replaced: 200 and a new version.
    let again = g.put(
        0,
        "every-minute",
        &job("every-minute", "hello-2", "* * * * *", &g.topic),
        WRITE_TOKEN,
        Some(&version),
    );
    assert_eq!(again.status, 200, "{}", again.body);
    assert_ne!(again.body["version"], version.as_str());
    // Deleted: 404, and its owner drops it.
    let deleted = g.delete(0, "every-minute", WRITE_TOKEN);
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    let gone = g.get(0, "every-minute", READ_TOKEN);
    assert_eq!(gone.status, 404, "{}", gone.body);
    assert_eq!(g.delete(0, "every-minute", WRITE_TOKEN).status, 404);
    let next_gone = g.call(
        0,
        "GET",
        "/api/v1/jobs/every-minute/next",
        "/api/v1/jobs/{name}/next",
        Some(READ_TOKEN),
        None,
        None,
    );
    assert_eq!(next_gone.status, 404);
    g.wait(
        "the job dropped by its owner",
        Duration::from_secs(30),
        || g.jobs_in_force() == 0,
    );
    // It stops: nothing dispatched two drill minutes after the delete was in force.
    let settled = g.drill.wait_minutes(1, 5);
    let before = consume_all(&g.broker.address(), &g.topic, 3, 10, Duration::from_secs(5)).len();
    g.drill.wait_until(settled + 2, 10);
    let after = consume_all(&g.broker.address(), &g.topic, 3, 10, Duration::from_secs(5)).len();
    with_logs(&g.logs(), || {
        assert_eq!(before, after, "dispatched after its delete")
    });
    check_openapi(&g.seen.lock().unwrap(), false);
}

/// An `at` job created through the API fires once, in the minute of its instant, with the instant
/// to the second as `notBefore`; once its slot is acked, its owner deletes it (a GET gives 404).
#[test]
fn an_at_job_put_through_the_api_fires_at_its_second_and_its_owner_then_deletes_it() {
    let g = Group::start("apiat", &["m1"]);
    let at = (g.drill.minute() + 2) * 60 + 37;
    let at_text = chrono::DateTime::<chrono::Utc>::from_timestamp(at, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let body =
        json!({"jobName": "launch", "job": "send", "at": at_text, "topic": g.topic}).to_string();
    let put = g.put(0, "launch", &body, WRITE_TOKEN, None);
    assert_eq!(put.status, 201, "{}", put.body);
    let next = g.call(
        0,
        "GET",
        "/api/v1/jobs/launch/next?n=3",
        "/api/v1/jobs/{name}/next",
        Some(READ_TOKEN),
        None,
        None,
    );
    assert_eq!(next.status, 200, "{}", next.body);
    // One run, at its second.
    assert_eq!(next.body["next"], json!([at_text]), "{}", next.body);
    let mut fired = Vec::new();
    g.wait(
        "the dispatch of the at job",
        Duration::from_secs(90),
        || {
            fired = consume_all(&g.broker.address(), &g.topic, 3, 10, Duration::from_secs(5));
            !fired.is_empty()
        },
    );
    g.wait("the owner's tombstone", Duration::from_secs(60), || {
        g.get(0, "launch", READ_TOKEN).status == 404
    });
    let after = consume_all(&g.broker.address(), &g.topic, 3, 10, Duration::from_secs(5));
    with_logs(&g.logs(), || {
        assert_eq!(
            after.len(),
            1,
            "one run: {:?}",
            after.iter().map(|r| &r.value).collect::<Vec<_>>()
        );
        let v = &after[0].value;
        let slot = chrono::DateTime::<chrono::Utc>::from_timestamp(at / 60 * 60, 0).unwrap();
        assert_eq!(
            v["scheduledAt"],
            slot.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let not_before = chrono::DateTime::<chrono::Utc>::from_timestamp(at, 0)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        assert_eq!(v["notBefore"], not_before.as_str());
        assert_eq!(v["cronTime"], format!("@at {at_text}"));
    });
}

#[test]
fn tokens_validation_and_if_match_guard_every_write() {
    let g = Group::start("apiguard", &["m1"]);
    let body = job("guarded", "x", "*/5 * * * *", &g.topic);
    let path = "/api/v1/jobs/guarded";
    let doc = "/api/v1/jobs/{name}";
    // No token, an unknown one: 401 with the challenge; a read token on a write: 403.
    let none = g.call(0, "PUT", path, doc, None, None, Some(&body));
    assert_eq!(none.status, 401);
    assert!(none
        .headers
        .get("www-authenticate")
        .is_some_and(|h| h.starts_with("Bearer")));
    assert_eq!(
        g.call(0, "GET", path, doc, None, None, None).status,
        401,
        "reads need a token too"
    );
    assert_eq!(g.put(0, "guarded", &body, "nope", None).status, 401);
    let read = g.put(0, "guarded", &body, READ_TOKEN, None);
    assert_eq!(read.status, 403, "{}", read.body);
    assert_eq!(g.delete(0, "guarded", READ_TOKEN).status, 403);
    let created = g.put(0, "guarded", &body, WRITE_TOKEN, None);
    assert_eq!(created.status, 201, "{}", created.body);
    let v1 = created.body["version"].as_str().unwrap().to_string();

    // An invalid job: 422 with the field and validate's words, nothing written.
    let bad = g.put(
        0,
        "guarded",
        &job("guarded", "x", "61 * * * *", &g.topic),
        WRITE_TOKEN,
        None,
    );
    assert_eq!(bad.status, 422, "{}", bad.body);
    assert_eq!(bad.body["error"], "invalid job");
    assert_eq!(bad.body["problems"][0]["path"], "cronTime");
    assert_eq!(
        bad.body["problems"][0]["message"],
        "minute: 61 is out of range 0-59"
    );
    let other_name = g.put(
        0,
        "guarded",
        &job("another", "x", "* * * * *", &g.topic),
        WRITE_TOKEN,
        None,
    );
    assert_eq!(other_name.status, 422);
    assert_eq!(other_name.body["problems"][0]["path"], "jobName");
    assert_eq!(g.get(0, "guarded", READ_TOKEN).body["version"], v1.as_str());
    // Too large a body: 413.
    let huge = format!(
        r#"{{"jobName":"guarded","job":"{}","cronTime":"* * * * *"}}"#,
        "x".repeat(1 << 20)
    );
    assert_eq!(g.put(0, "guarded", &huge, WRITE_TOKEN, None).status, 413);
    // A malformed If-Match: 400; a stale one: 412 with the current version.
    assert_eq!(
        g.put(0, "guarded", &body, WRITE_TOKEN, Some("W/\"1\""))
            .status,
        400
    );
    let stale = g.put(0, "guarded", &body, WRITE_TOKEN, Some("\"999999\""));
    assert_eq!(stale.status, 412, "{}", stale.body);
    assert_eq!(stale.body["version"], v1.as_str());
    assert_eq!(
        g.put(
            0,
            "never-made",
            &body.replace("guarded", "never-made"),
            WRITE_TOKEN,
            Some("*")
        )
        .status,
        412
    );

    // Two writers with the same If-Match at once: exactly one wins.
    let results: Vec<u16> = std::thread::scope(|s| {
        let writers: Vec<_> = (0..2)
            .map(|i| {
                let (g, v1) = (&g, &v1);
                let body = job("guarded", &format!("writer-{i}"), "*/5 * * * *", &g.topic);
                s.spawn(move || {
                    g.put(0, "guarded", &body, WRITE_TOKEN, Some(&format!("\"{v1}\"")))
                        .status
                })
            })
            .collect();
        writers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    let mut sorted = results.clone();
    sorted.sort();
    assert_eq!(sorted, vec![200, 412], "{results:?}");
    let dm = g.call(
        0,
        "DELETE",
        path,
        doc,
        Some(WRITE_TOKEN),
        Some(&format!("\"{v1}\"")),
        None,
    );
    assert_eq!(dm.status, 412, "a delete with a stale version");

    // A rewritten token file is picked up (looked at again within a second).
    token_file(
        &g.tokens,
        &[
            ("rotated", "write", "fresh-token"),
            ("ci", "read", READ_TOKEN),
        ],
    );
    g.wait("the new token accepted", Duration::from_secs(10), || {
        g.get(0, "guarded", "fresh-token").status == 200
    });
    assert_eq!(
        g.get(0, "guarded", WRITE_TOKEN).status,
        401,
        "the removed token"
    );
    let by = g.put(0, "guarded", &body, "fresh-token", None);
    assert_eq!(by.status, 200);
    assert_eq!(
        g.get(0, "guarded", READ_TOKEN).body["changed"]["by"],
        "rotated"
    );
    // A broken file keeps the last good one.
    std::fs::write(&g.tokens, "{not json").unwrap();
    g.wait("the broken file logged", Duration::from_secs(10), || {
        assert_eq!(g.get(0, "guarded", "fresh-token").status, 200);
        g.members[0]
            .log()
            .contains("the new API token file does not parse")
    });
    check_openapi(&g.seen.lock().unwrap(), false);
}

#[test]
fn a_batch_of_1000_puts_lists_back_in_pages_and_the_cli_works_against_the_server() {
    let mut g = Group::start("apibatch", &["m1"]);
    let ops: Vec<Value> = (0..1000)
        .map(|i| json!({"op": "put", "job": {"jobName": format!("batch-{i:04}"), "job": "b", "cronTime": "0 3 * * *"}}))
        .collect();
    let batch = |ops: &[Value]| {
        g.call(
            0,
            "POST",
            "/api/v1/jobs:batch",
            "/api/v1/jobs:batch",
            Some(WRITE_TOKEN),
            None,
            Some(&json!({"ops": ops}).to_string()),
        )
    };
    // One invalid op: 422 naming it, nothing written.
    let mut bad = ops.clone();
    bad[7]["job"]["cronTime"] = json!("* * * * * * *");
    bad.push(json!({"op": "delete"}));
    let refused = batch(&bad);
    assert_eq!(refused.status, 422, "{}", refused.body);
    let problems = refused.body["problems"].as_array().unwrap();
    assert_eq!(problems[0]["op"], 7);
    assert_eq!(problems[0]["path"], "ops[7].job.cronTime");
    assert_eq!(problems[1]["path"], "ops[1000].jobName");
    let listed = g.call(
        0,
        "GET",
        "/api/v1/jobs",
        "/api/v1/jobs",
        Some(READ_TOKEN),
        None,
        None,
    );
    assert_eq!(listed.body["jobs"], json!([]), "nothing written");
    let written = batch(&ops);
    assert_eq!(written.status, 200, "{}", written.body);
    assert_eq!(written.body["results"].as_array().unwrap().len(), 1000);
    // Listed back by name, 100 a page.
    let mut names = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &after {
            Some(a) => format!("/api/v1/jobs?prefix=batch-&limit=100&after={a}"),
            None => "/api/v1/jobs?prefix=batch-&limit=100".to_string(),
        };
        let page = g.call(
            0,
            "GET",
            &path,
            "/api/v1/jobs",
            Some(READ_TOKEN),
            None,
            None,
        );
        assert_eq!(page.status, 200, "{}", page.body);
        pages += 1;
        names.extend(
            page.body["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| j["jobName"].as_str().unwrap().to_string()),
        );
        match page.body["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
        assert!(pages <= 11, "too many pages");
    }
    let expected: Vec<String> = (0..1000).map(|i| format!("batch-{i:04}")).collect();
    assert_eq!(names, expected);
    assert_eq!(
        g.call(
            0,
            "GET",
            "/api/v1/jobs?limit=1001",
            "/api/v1/jobs",
            Some(READ_TOKEN),
            None,
            None
        )
        .status,
        400
    );
    g.wait("1000 jobs in force", Duration::from_secs(30), || {
        g.jobs_in_force() == 1000
    });

    // The CLI client.
    let token_path = g.dir.path().join("token");
    std::fs::write(&token_path, format!("{WRITE_TOKEN}\n")).unwrap();
    let job_path = g.dir.path().join("job.json");
    std::fs::write(
        &job_path,
        job("cli-job", "from-cli", "15 * * * *", &g.topic),
    )
    .unwrap();
    let cli = |args: &[&str]| {
        Command::new(CRONQ)
            .args(["jobs"])
            .args(args)
            .args(["--url", &g.urls[0]])
            .arg("--token-file")
            .arg(&token_path)
            .output()
            .expect("cronq jobs")
    };
    let put = cli(&["put", job_path.to_str().unwrap()]);
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let put: Value = serde_json::from_slice(&put.stdout).unwrap();
    assert_eq!(put["jobName"], "cli-job");
    let got = cli(&["get", "cli-job"]);
    assert!(got.status.success());
    let got: Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(
        (got["job"]["job"].clone(), got["version"].clone()),
        (json!("from-cli"), put["version"].clone())
    );
    let list = cli(&["list", "--prefix", "batch-", "--limit", "300", "--all"]);
    assert!(list.status.success());
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1000);
    let next = cli(&["next", "cli-job", "-n", "2"]);
    assert!(next.status.success());
    std::fs::write(
        &job_path,
        job("cli-job", "from-cli", "15 25 * * *", &g.topic),
    )
    .unwrap();
    let invalid = cli(&["put", job_path.to_str().unwrap()]);
    assert_eq!(invalid.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&invalid.stderr);
    assert!(
        stderr.contains("HTTP 422") && stderr.contains("cronTime: hour: 25 is out of range 0-23"),
        "{stderr}"
    );
    let stale = cli(&["delete", "cli-job", "--if-match", "\"1\""]);
    assert_eq!(stale.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&stale.stderr).contains("HTTP 412"));
    let deleted = cli(&["delete", "cli-job"]);
    assert!(
        deleted.status.success(),
        "{}",
        String::from_utf8_lossy(&deleted.stderr)
    );
    let gone = cli(&["get", "cli-job"]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("HTTP 404"));

    // The document itself.
    let doc = g.call(
        0,
        "GET",
        "/api/v1/openapi.json",
        "/api/v1/openapi.json",
        None,
        None,
        None,
    );
    assert_eq!(doc.status, 200);
    assert_eq!(doc.body["openapi"], "3.0.3");
    g.members[0].terminate();
    check_openapi(&g.seen.lock().unwrap(), false);
}

/// The API's own acked records go to the member's follower straight from the write path, not
/// fetched back from the broker; `cronq apply` writing the same partitions at the same time leaves
/// gaps between them, which the follower reads from the broker. In the end every record of every
/// partition is applied, once, whichever way it came.
#[test]
fn the_apis_own_records_reach_the_wheel_without_a_read_back_beside_another_writers() {
    let mut g = Group::start_with(
        "apiown",
        &["m1"],
        &["--log", "info,cronq::dispatcher::schedule_topic=debug"],
    );
    let group = format!("g-{}", g.topic);
    let files: Vec<PathBuf> = (0..3)
        .map(|k| {
            let jobs: Vec<Value> = (0..100)
                .map(|i| json!({"jobName": format!("applied-{k}-{i:03}"), "job": "a", "cronTime": "0 4 * * *"}))
                .collect();
            let path = g.dir.path().join(format!("apply-{k}.json"));
            std::fs::write(&path, json!({ "jobs": jobs }).to_string()).unwrap();
            path
        })
        .collect();
    let address = g.broker.address();
    std::thread::scope(|s| {
        let applier = s.spawn(|| {
            for (k, file) in files.iter().enumerate() {
                let out = Command::new(CRONQ)
                    .args(["apply", file.to_str().unwrap(), "--brokers", &address])
                    .args(["--group", &group, "--shards", &SHARDS.to_string()])
                    .args(["--source", &format!("file-{k}")])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        });
        for b in 0..5 {
            let ops: Vec<Value> = (0..200)
                .map(|i| json!({"op": "put", "job": {"jobName": format!("api-{b}-{i:03}"), "job": "b", "cronTime": "0 3 * * *"}}))
                .collect();
            let written = g.call(
                0,
                "POST",
                "/api/v1/jobs:batch",
                "/api/v1/jobs:batch",
                Some(WRITE_TOKEN),
                None,
                Some(&json!({ "ops": ops }).to_string()),
            );
            assert_eq!(written.status, 200, "{}", written.body);
        }
        applier.join().unwrap();
    });
    g.wait("1300 jobs in force", Duration::from_secs(60), || {
        g.jobs_in_force() == 1300
    });
    // Every partition applied up to its end.
    let marks = high_watermarks(&address, &format!("{group}.schedule"), SHARDS as i32);
    g.wait(
        "every partition applied to its end",
        Duration::from_secs(30),
        || {
            let (_, status) = http_get(&format!("{}/status.json", g.urls[0]));
            let status: Value = serde_json::from_str(&status).unwrap_or(Value::Null);
            let applied: BTreeMap<i32, i64> = status["scheduleTopic"]["shards"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| Some((s["shard"].as_i64()? as i32, s["applied"].as_i64()?)))
                .collect();
            applied == marks
        },
    );
    // The follower took the API's records from the write path (a write whose partition had
    // another writer's records pending is read back instead, so not all 1000 need be).
    let log = g.members[0].log();
    let own: u64 = log
        .lines()
        .filter(|l| l.contains("schedule topic follower round"))
        .filter_map(|l| {
            l.split("own_records=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum();
    with_logs(&g.logs(), || {
        assert!(own > 0 && own <= 1000, "own records handed over: {own}");
    });
    g.members.iter_mut().for_each(Dispatcher::terminate);
}

#[test]
fn a_request_sent_to_a_member_that_does_not_own_the_shard_is_forwarded_to_the_owner() {
    let g = Group::start("apifwd", &["m1", "m2"]);
    // Each member owns part of the shards: a job of each member's shards.
    let owned_by = |m: usize| g.jobs_held(&g.urls[m]).1;
    assert!(
        owned_by(0) > 0 && owned_by(1) > 0,
        "both members own shards"
    );
    // Every job through member 0, and through member 1: half of them are forwarded either way.
    for (i, via) in [
        (0, 0),
        (1, 1),
        (2, 0),
        (3, 1),
        (4, 0),
        (5, 1),
        (6, 0),
        (7, 1),
    ] {
        let name = format!("fwd-{i}");
        let body = job(&name, "f", "0 4 * * *", &g.topic);
        let put = g.retrying(|| g.put(via, &name, &body, WRITE_TOKEN, None));
        assert_eq!(put.status, 201, "{name} via m{}: {}", via + 1, put.body);
        let other = 1 - via;
        let got = g.retrying(|| g.get(other, &name, READ_TOKEN));
        assert_eq!(got.status, 200, "{name} via m{}: {}", other + 1, got.body);
        assert_eq!(got.body["version"], put.body["version"]);
        assert_eq!(got.etag, put.etag);
    }
    // A list from either member gathers every shard's jobs.
    for m in 0..2 {
        let list = g.retrying(|| {
            g.call(
                m,
                "GET",
                "/api/v1/jobs?prefix=fwd-",
                "/api/v1/jobs",
                Some(READ_TOKEN),
                None,
                None,
            )
        });
        assert_eq!(list.status, 200, "{}", list.body);
        let names: Vec<&str> = list.body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["jobName"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            (0..8).map(|i| format!("fwd-{i}")).collect::<Vec<_>>(),
            "via m{}",
            m + 1
        );
    }
    // A batch through one member writes on both.
    let ops: Vec<Value> = (0..20).map(|i| json!({"op": "put", "job": {"jobName": format!("fb-{i:02}"), "job": "b", "cronTime": "0 5 * * *"}})).collect();
    let ops = json!({ "ops": ops }).to_string();
    let batch = g.retrying(|| {
        g.call(
            0,
            "POST",
            "/api/v1/jobs:batch",
            "/api/v1/jobs:batch",
            Some(WRITE_TOKEN),
            None,
            Some(&ops),
        )
    });
    assert_eq!(batch.status, 200, "{}", batch.body);
    assert!(batch.body["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["version"].is_string()));
    // A forwarded request for a shard the member does not own is not forwarded again: 503.
    let (_, status) = http_get(&format!("{}/status.json", g.urls[0]));
    let status: Value = serde_json::from_str(&status).unwrap();
    let m1_shards: Vec<i32> = status["scheduleTopic"]["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["shard"].as_i64().unwrap() as i32)
        .collect();
    let elsewhere = (0..8)
        .map(|i| format!("fwd-{i}"))
        .find(|n| !m1_shards.contains(&cronq::wire::partition_for(n.as_bytes(), SHARDS as i32)))
        .expect("a job of m2's shards");
    let refused = ureq::get(&format!("{}/api/v1/jobs/{elsewhere}", g.urls[0]))
        .set("Authorization", &format!("Bearer {READ_TOKEN}"))
        .set("X-Cronq-Forwarded", "1")
        .call();
    match refused {
        Err(ureq::Error::Status(503, r)) => assert_eq!(r.header("Retry-After"), Some("1")),
        other => panic!("expected 503 for {elsewhere} on m1: {other:?}"),
    }
    g.wait("28 jobs in force", Duration::from_secs(30), || {
        g.jobs_in_force() == 28
    });
    check_openapi(&g.seen.lock().unwrap(), false);
}

#[test]
fn a_token_over_its_rate_gets_429_with_retry_after_and_others_are_not_held() {
    let g = Group::start_with("apirate", &["m1"], &["--api-rate", "3"]);
    let statuses: Vec<Reply> = (0..8).map(|_| g.get(0, "nothing", READ_TOKEN)).collect();
    let limited: Vec<&Reply> = statuses.iter().filter(|r| r.status == 429).collect();
    assert!(!limited.is_empty(), "8 requests at once on a rate of 3/s");
    assert!(limited.iter().all(|r| r
        .headers
        .get("retry-after")
        .is_some_and(|v| v.parse::<u64>().is_ok_and(|s| s >= 1))));
    assert!(
        statuses.iter().take(3).all(|r| r.status == 404),
        "the burst goes through"
    );
    // Another token has its own bucket.
    assert_eq!(g.get(0, "nothing", WRITE_TOKEN).status, 404);
    check_openapi(&g.seen.lock().unwrap(), false);
}

#[test]
fn the_api_needs_the_topic_mode_and_the_http_server() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.json");
    std::fs::write(&tokens, r#"{"tokens":[]}"#).unwrap();
    let run = |args: &[&str]| {
        Command::new(CRONQ)
            .args([
                "run",
                "--brokers",
                "127.0.0.1:1",
                "--api-tokens",
                tokens.to_str().unwrap(),
            ])
            .args(args)
            .output()
            .expect("cronq run")
    };
    let file_mode = run(&[]);
    assert_eq!(file_mode.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&file_mode.stderr).contains("--schedule-topic"));
    let no_http = run(&["--schedule-topic", "--http", "off"]);
    assert_eq!(no_http.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&no_http.stderr).contains("--http"),
        "{}",
        String::from_utf8_lossy(&no_http.stderr)
    );
    std::fs::write(
        &tokens,
        r#"{"tokens":[{"name":"a","scope":"admin","sha256":""}]}"#,
    )
    .unwrap();
    let bad_file = run(&["--schedule-topic"]);
    assert_eq!(bad_file.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_file.stderr).contains("tokens[0]: scope"));
}

// ---- the OpenAPI document against what the server answered ----

fn openapi() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Resolves a local `$ref`.
fn resolve<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v["$ref"].as_str() {
        Some(r) => {
            let mut at = doc;
            for part in r.trim_start_matches("#/").split('/') {
                at = &at[part];
            }
            resolve(doc, at)
        }
        None => v,
    }
}

/// Checks `value` against `schema`: the subset of JSON Schema the document uses (type, nullable,
/// required, properties, additionalProperties: false, items, enum, maxItems, minimum/maximum).
fn validate(doc: &Value, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if value.is_null() && schema["nullable"] == true {
        return;
    }
    let ok = match schema["type"].as_str() {
        None => true,
        Some("object") => value.is_object(),
        Some("array") => value.is_array(),
        Some("string") => value.is_string(),
        Some("integer") => value.is_i64() || value.is_u64(),
        Some("number") => value.is_number(),
        Some("boolean") => value.is_boolean(),
        Some(other) => {
            problems.push(format!(
                "{at}: schema type {other} not supported by the checker"
            ));
            false
        }
    };
    if !ok {
        problems.push(format!("{at}: {value} is not of type {}", schema["type"]));
        return;
    }
    if let Some(options) = schema["enum"].as_array() {
        if !options.contains(value) {
            problems.push(format!("{at}: {value} is not one of {options:?}"));
        }
    }
    if let Some(obj) = value.as_object() {
        for r in schema["required"].as_array().into_iter().flatten() {
            if !obj.contains_key(r.as_str().unwrap_or_default()) {
                problems.push(format!("{at}: missing required {r}"));
            }
        }
        let props = schema["properties"].as_object();
        for (k, v) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => validate(doc, s, v, &format!("{at}.{k}"), problems),
                None if schema["additionalProperties"] == false => {
                    problems.push(format!("{at}: property {k:?} is not documented"))
                }
                None => {}
            }
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(max) = schema["maxItems"].as_u64() {
            if items.len() as u64 > max {
                problems.push(format!("{at}: more than {max} items"));
            }
        }
        if !schema["items"].is_null() {
            for (i, item) in items.iter().enumerate() {
                validate(doc, &schema["items"], item, &format!("{at}[{i}]"), problems);
            }
        }
    }
}

/// Every response seen has a documented status for its path and method, and its body validates
/// against the documented schema; with `every_operation`, every documented operation was seen.
fn check_openapi(seen: &[Seen], every_operation: bool) {
    let doc = openapi();
    let mut problems = Vec::new();
    for (method, path, status, body) in seen {
        let op = &doc["paths"][path.as_str()][method.as_str()];
        if op.is_null() {
            problems.push(format!("{method} {path}: not documented"));
            continue;
        }
        let response = &op["responses"][status.to_string().as_str()];
        if response.is_null() {
            problems.push(format!("{method} {path}: status {status} not documented"));
            continue;
        }
        let schema = &resolve(&doc, response)["content"]["application/json"]["schema"];
        if !schema.is_null() {
            validate(
                &doc,
                schema,
                body,
                &format!("{method} {path} {status}"),
                &mut problems,
            );
        }
    }
    if every_operation {
        for (path, ops) in doc["paths"].as_object().unwrap() {
            for method in ops
                .as_object()
                .unwrap()
                .keys()
                .filter(|m| *m != "parameters")
            {
                if !seen.iter().any(|(m, p, _, _)| m == method && p == path) {
                    problems.push(format!("{method} {path}: documented but never exercised"));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the server does not match docs/openapi.json:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_openapi_checker_catches_an_undocumented_status_and_a_wrong_body() {
    let ok: Vec<Seen> = vec![(
        "put".into(),
        "/api/v1/jobs/{name}".into(),
        201,
        json!({"jobName": "a", "version": "1"}),
    )];
    check_openapi(&ok, false);
    let wrong = std::panic::catch_unwind(|| {
        check_openapi(
            &[(
                "put".into(),
                "/api/v1/jobs/{name}".into(),
                201,
                json!({"jobName": "a", "version": 1}),
            )],
            false,
        )
    });
    assert!(wrong.is_err(), "a number where the document says string");
    let undocumented = std::panic::catch_unwind(|| {
        check_openapi(
            &[("get".into(), "/api/v1/jobs".into(), 418, json!({}))],
            false,
        )
    });
    assert!(undocumented.is_err());
}

/// Every documented operation is exercised by this file's tests: each of them checks what it saw,
/// and this one runs one call per operation on one member so that none is left unchecked.
#[test]
fn every_documented_operation_answers_as_documented() {
    let g = Group::start("apidoc", &["m1"]);
    let body = job("doc-job", "d", "0 6 * * *", &g.topic);
    let put = g.put(0, "doc-job", &body, WRITE_TOKEN, None);
    assert_eq!(put.status, 201);
    g.get(0, "doc-job", READ_TOKEN);
    g.call(
        0,
        "GET",
        "/api/v1/jobs/doc-job/next",
        "/api/v1/jobs/{name}/next",
        Some(READ_TOKEN),
        None,
        None,
    );
    g.call(
        0,
        "GET",
        "/api/v1/jobs",
        "/api/v1/jobs",
        Some(READ_TOKEN),
        None,
        None,
    );
    g.call(
        0,
        "POST",
        "/api/v1/jobs:batch",
        "/api/v1/jobs:batch",
        Some(WRITE_TOKEN),
        None,
        Some(r#"{"ops":[{"op":"delete","jobName":"nobody"}]}"#),
    );
    g.call(
        0,
        "GET",
        "/api/v1/openapi.json",
        "/api/v1/openapi.json",
        None,
        None,
        None,
    );
    g.delete(0, "doc-job", WRITE_TOKEN);
    check_openapi(&g.seen.lock().unwrap(), true);
}
