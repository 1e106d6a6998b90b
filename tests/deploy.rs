//! The deployment files, tested rather than only written. No Docker engine and no Kubernetes
//! cluster exist on the development and CI machines, so each file is checked against what it
//! names:
//! - every cronq command line in them (docker/docker-compose.yaml, deploy/systemd/,
//!   deploy/kubernetes/, the Dockerfile's ENV) is parsed by cronq's own clap `Command`, flags,
//!   values and `CRONQ_*` variables alike;
//! - ports, health checks, volumes, scrape targets, Grafana provisioning and the Kubernetes
//!   objects' references agree with each other and with the repository;
//! - the dashboard's queries name exactly the metrics of issue 11, and (against running processes)
//!   only metrics that `/metrics` exports;
//! - the systemd units pass `systemd-analyze verify` and `security`, the Kubernetes manifests
//!   kubernetes-validate's schemas (both installed by scripts/deploy_tools.sh);
//! - the example handlers do what they say, and scripts/quickstart.sh runs the whole loop against
//!   a real broker and stops cleanly.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::CommandFactory;
use common::{pause, Broker, CRONQ};
use serde_norway::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `path` as the repository names it, for messages.
fn relative(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One YAML document, `<<` merge keys applied (the compose file uses them).
fn yaml(path: &Path) -> Value {
    let mut v: Value = serde_norway::from_str(&read(path))
        .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
    v.apply_merge()
        .unwrap_or_else(|e| panic!("{}: merge keys: {e}", path.display()));
    v
}

/// Every document of a multi-document YAML file.
fn yaml_docs(path: &Path) -> Vec<Value> {
    use serde::Deserialize;
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// A YAML scalar as the text a process would see.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .map(|s| s.iter().map(scalar).collect())
        .unwrap_or_default()
}

fn get<'a>(v: &'a Value, path: &[&str]) -> &'a Value {
    let mut cur = v;
    for key in path {
        cur = cur
            .get(*key)
            .unwrap_or_else(|| panic!("missing `{}` in {v:?}", path.join(".")));
    }
    cur
}

// ---------------------------------------------------------------------------------------------
// Command lines against cronq's real CLI

/// A cronq command line found in a deployment file: its arguments (subcommand first) and the
/// environment it sets (`valueFrom` and the like have no literal value).
struct CommandLine {
    origin: String,
    args: Vec<String>,
    env: Vec<(String, Option<String>)>,
}

/// Parses `line` with cronq's clap `Command`: an unknown flag, a bad value, or a `CRONQ_*`
/// variable that no flag of the subcommand reads is an error naming the file.
fn check_command_line(line: &CommandLine) -> Result<(), String> {
    let mut root = cronq::cli::Cli::command();
    root.build();
    let sub_name = line.args.first().cloned().unwrap_or_default();
    let Some(sub) = root.find_subcommand(&sub_name) else {
        return Err(format!(
            "{}: `{sub_name}` is not a cronq subcommand",
            line.origin
        ));
    };
    let mut argv = vec!["cronq".to_string()];
    argv.extend(line.args.iter().cloned());
    for (name, value) in &line.env {
        if !name.starts_with("CRONQ_") {
            continue;
        }
        let arg = sub
            .get_arguments()
            .chain(root.get_arguments())
            .find(|a| a.get_env().is_some_and(|e| e == name.as_str()));
        let Some(arg) = arg else {
            return Err(format!(
                "{}: {name} is not a variable of `cronq {sub_name}`",
                line.origin
            ));
        };
        let (Some(long), Some(value)) = (arg.get_long(), value) else {
            continue;
        };
        // A flag given on the command line wins over its variable; check the variable only alone.
        let flag = format!("--{long}");
        if argv
            .iter()
            .any(|a| a == &flag || a.starts_with(&format!("{flag}=")))
        {
            continue;
        }
        if matches!(arg.get_action(), clap::ArgAction::SetTrue) {
            match value.as_str() {
                "true" => argv.push(flag),
                "false" => {}
                other => {
                    return Err(format!(
                        "{}: {name}={other}: a switch takes true or false",
                        line.origin
                    ))
                }
            }
        } else {
            argv.push(format!("{flag}={value}"));
        }
    }
    cronq::cli::Cli::try_parse_from_argv(&argv)
        .map_err(|e| format!("{}: `{}`: {e}", line.origin, argv[1..].join(" ")))
}

trait TryParseArgv {
    fn try_parse_from_argv(argv: &[String]) -> Result<(), String>;
}

impl TryParseArgv for cronq::cli::Cli {
    fn try_parse_from_argv(argv: &[String]) -> Result<(), String> {
        use clap::Parser;
        cronq::cli::Cli::try_parse_from(argv)
            .map(|_| ())
            .map_err(|e| e.render().to_string().trim().to_string())
    }
}

/// The value of `--flag` in `args` (`--flag V` or `--flag=V`).
fn flag_value(args: &[String], flag: &str) -> Option<String> {
    let eq = format!("{flag}=");
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).cloned()
        } else {
            a.strip_prefix(&eq).map(str::to_string)
        }
    })
}

/// The default of `cronq SUB --flag` as clap declares it.
fn default_of(sub: &str, flag: &str) -> Option<String> {
    let mut root = cronq::cli::Cli::command();
    root.build();
    let sub = root.find_subcommand(sub)?;
    let arg = sub
        .get_arguments()
        .find(|a| a.get_long() == flag.strip_prefix("--"))?;
    arg.get_default_values()
        .first()
        .map(|v| v.to_string_lossy().into_owned())
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{addr:?} is not HOST:PORT"))
}

// ---------------------------------------------------------------------------------------------
// docker/docker-compose.yaml

fn compose() -> Value {
    yaml(&repo().join("docker/docker-compose.yaml"))
}

fn services(compose: &Value) -> Vec<(String, Value)> {
    get(compose, &["services"])
        .as_mapping()
        .expect("services is a map")
        .iter()
        .map(|(k, v)| (scalar(k), v.clone()))
        .collect()
}

/// The compose services that run cronq's image, with their command.
fn cronq_services(compose: &Value) -> Vec<(String, Vec<String>, Value)> {
    services(compose)
        .into_iter()
        .filter(|(_, s)| s.get("image").map(scalar).as_deref() == Some("cronq:local"))
        .map(|(name, s)| {
            let command = strings(get(&s, &["command"]));
            (name, command, s)
        })
        .collect()
}

fn compose_env(service: &Value) -> Vec<(String, Option<String>)> {
    match service.get("environment") {
        Some(Value::Mapping(m)) => m
            .iter()
            .map(|(k, v)| (scalar(k), Some(scalar(v))))
            .collect(),
        Some(Value::Sequence(s)) => s
            .iter()
            .map(|e| {
                let e = scalar(e);
                match e.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (e, None),
                }
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// `--http` of a cronq service (its flag, else CRONQ_HTTP).
fn compose_http(command: &[String], service: &Value) -> Option<String> {
    flag_value(command, "--http").or_else(|| {
        compose_env(service)
            .into_iter()
            .find(|(k, _)| k == "CRONQ_HTTP")
            .and_then(|(_, v)| v)
    })
}

/// `(host ip, host port, container port)` of a short-syntax port mapping.
fn port_mapping(spec: &str) -> (Option<String>, u16, u16) {
    let parts: Vec<&str> = spec.split(':').collect();
    let num = |s: &str| {
        s.parse::<u16>()
            .unwrap_or_else(|_| panic!("port mapping {spec:?}: {s:?} is not a port"))
    };
    match parts.as_slice() {
        [host, container] => (None, num(host), num(container)),
        [ip, host, container] => (Some(ip.to_string()), num(host), num(container)),
        _ => panic!("port mapping {spec:?} is not [IP:]HOST:CONTAINER"),
    }
}

/// `(host path, container path)` of a short-syntax bind mount, the host path resolved against
/// docker/ (the compose file's directory).
fn bind_mounts(service: &Value) -> Vec<(PathBuf, String)> {
    strings(service.get("volumes").unwrap_or(&Value::Null))
        .into_iter()
        .filter(|v| v.starts_with('.') || v.starts_with('/'))
        .map(|v| {
            let parts: Vec<&str> = v.split(':').collect();
            (repo().join("docker").join(parts[0]), parts[1].to_string())
        })
        .collect()
}

/// A tool scripts/deploy_tools.sh installs into target/deploy-venv.
fn venv_tool(name: &str) -> PathBuf {
    let tool = repo().join("target/deploy-venv/bin").join(name);
    assert!(
        tool.is_file(),
        "{} is missing: run scripts/deploy_tools.sh (a virtualenv with the PyPI checkers)",
        tool.display()
    );
    tool
}

#[test]
fn compose_file_passes_the_compose_spec_schema() {
    // check-jsonschema ships the Compose Specification's schema (no download): a misspelt or
    // misplaced key fails here, which the checks below, reading only the keys they know, would miss.
    let out = Command::new(venv_tool("check-jsonschema"))
        .args(["--builtin-schema", "vendor.compose-spec"])
        .arg(repo().join("docker/docker-compose.yaml"))
        .output()
        .expect("run check-jsonschema");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Anyone on the LAN could write the job and control topics (Kafka has no login here) and use
/// Kafka UI: every published port binds 127.0.0.1, and every image pulled from a registry is
/// pinned to a version tag (or a digest), so `docker compose pull` never changes what runs.
#[test]
fn compose_publishes_only_on_localhost_and_pins_every_pulled_image() {
    let compose = compose();
    let mut problems = Vec::new();
    for (name, service) in services(&compose) {
        for spec in strings(service.get("ports").unwrap_or(&Value::Null)) {
            let (ip, _, _) = port_mapping(&spec);
            if ip.as_deref() != Some("127.0.0.1") {
                problems.push(format!(
                    "{name}: {spec:?} publishes beyond localhost (write 127.0.0.1:{spec})"
                ));
            }
        }
        let Some(image) = service.get("image").map(scalar) else {
            continue;
        };
        // Built here from the repository, never pulled.
        if service.get("build").is_some() {
            continue;
        }
        let (_, tag) = image
            .rsplit_once('/')
            .map_or(image.as_str(), |(_, last)| last)
            .split_once(':')
            .unwrap_or(("", ""));
        let pinned = image.contains("@sha256:")
            || (tag.chars().any(|c| c.is_ascii_digit())
                && !matches!(tag, "latest" | "stable" | "edge" | "main" | "master"));
        if !pinned {
            problems.push(format!(
                "{name}: image {image:?} is not pinned to a version tag"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn compose_ports_health_checks_and_volumes_match_the_http_addresses_and_the_repo() {
    let compose = compose();
    let mut problems = Vec::new();
    let mut host_ports = BTreeMap::new();
    for (name, service) in services(&compose) {
        for spec in strings(service.get("ports").unwrap_or(&Value::Null)) {
            let (_, host, _) = port_mapping(&spec);
            if let Some(other) = host_ports.insert(host, name.clone()) {
                problems.push(format!(
                    "host port {host} is published by both {other} and {name}"
                ));
            }
        }
        for (host, container) in bind_mounts(&service) {
            if !host.exists() {
                problems.push(format!(
                    "{name}: volume {} -> {container}: no such file or directory in the repository",
                    host.display()
                ));
            }
        }
    }
    let cronq = cronq_services(&compose);
    assert!(
        cronq.len() >= 4,
        "expected 2 dispatchers and 2 workers, got {}",
        cronq.len()
    );
    for (name, command, service) in &cronq {
        let Some(http) = compose_http(command, service) else {
            problems.push(format!("{name}: no --http address"));
            continue;
        };
        if !http.starts_with("0.0.0.0:") {
            problems.push(format!(
                "{name}: --http {http} is not reachable from other containers (use 0.0.0.0:PORT)"
            ));
        }
        let port = port_of(&http);
        let ports = strings(service.get("ports").unwrap_or(&Value::Null));
        if ports.is_empty() {
            problems.push(format!("{name}: publishes no port"));
        }
        for spec in ports {
            let (ip, _, container) = port_mapping(&spec);
            if container != port {
                problems.push(format!(
                    "{name}: publishes container port {container}, but cronq listens on {port} (--http {http})"
                ));
            }
            if ip.as_deref() != Some("127.0.0.1") {
                problems.push(format!(
                    "{name}: {spec} publishes the status page beyond localhost"
                ));
            }
        }
        let check = strings(get(service, &["healthcheck", "test"])).join(" ");
        if !check.contains(&format!("/dev/tcp/127.0.0.1/{port}")) || !check.contains("/readyz") {
            problems.push(format!(
                "{name}: the health check does not ask /readyz on port {port}: {check}"
            ));
        }
        // The schedule is a file of a mounted directory of the repository, or the image's own.
        if command.first().map(String::as_str) == Some("run") {
            let schedule = flag_value(command, "--schedule").unwrap_or_default();
            let mounted = bind_mounts(service).into_iter().find_map(|(host, dst)| {
                schedule
                    .strip_prefix(&format!("{dst}/"))
                    .map(|rest| host.join(rest))
            });
            match mounted {
                Some(file) => {
                    let out = Command::new(CRONQ)
                        .arg("validate")
                        .arg(&file)
                        .output()
                        .expect("run cronq validate");
                    if !out.status.success() {
                        problems.push(format!(
                            "{name}: {} does not validate: {}",
                            file.display(),
                            String::from_utf8_lossy(&out.stderr)
                        ));
                    }
                }
                None => problems.push(format!(
                    "{name}: --schedule {schedule} is not inside a mounted directory"
                )),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn compose_runs_two_dispatchers_as_one_group_and_two_workers_on_topics_created_first() {
    let compose = compose();
    let cronq = cronq_services(&compose);
    let setting = |command: &[String], sub: &str, flag: &str| {
        flag_value(command, flag)
            .or_else(|| default_of(sub, flag))
            .unwrap_or_default()
    };
    let dispatchers: Vec<_> = cronq.iter().filter(|(_, c, _)| c[0] == "run").collect();
    let workers: Vec<_> = cronq.iter().filter(|(_, c, _)| c[0] == "worker").collect();
    assert_eq!(dispatchers.len(), 2, "two `cronq run` services");
    assert_eq!(workers.len(), 2, "two `cronq worker` services");
    for (role, group, sub) in [
        (&dispatchers, "--group", "run"),
        (&workers, "--group", "worker"),
    ] {
        let groups: BTreeSet<_> = role
            .iter()
            .map(|(_, c, _)| setting(c, sub, group))
            .collect();
        let brokers: BTreeSet<_> = role
            .iter()
            .map(|(_, c, _)| setting(c, sub, "--brokers"))
            .collect();
        assert_eq!(groups.len(), 1, "{sub}: one group for all: {groups:?}");
        assert_eq!(brokers.len(), 1, "{sub}: the same brokers: {brokers:?}");
        let broker_hosts: BTreeSet<String> = brokers
            .iter()
            .flat_map(|b| {
                b.split(',')
                    .map(|h| h.split(':').next().unwrap_or("").to_string())
            })
            .collect();
        let names: BTreeSet<String> = services(&compose).into_iter().map(|(n, _)| n).collect();
        assert!(
            broker_hosts.is_subset(&names),
            "{sub}: brokers {broker_hosts:?} are not services of the compose file"
        );
    }
    let members: BTreeSet<_> = dispatchers
        .iter()
        .filter_map(|(_, c, _)| flag_value(c, "--member-id"))
        .collect();
    assert_eq!(members.len(), 2, "each dispatcher has its own --member-id");
    // The topics a worker reads and writes exist before it subscribes: create-topics creates
    // them, and every cronq service waits for it to finish.
    let create = strings(get(&compose, &["services", "create-topics", "command"])).join(" ");
    for (name, command, service) in workers {
        for flag in ["--topic", "--results-topic", "--dlq-topic"] {
            let topic = setting(command, "worker", flag);
            assert!(
                create.contains(&format!("--topic {topic} ")),
                "{name}: {flag} {topic} is not created by create-topics"
            );
        }
        let condition = get(service, &["depends_on", "create-topics", "condition"]);
        assert_eq!(
            scalar(condition),
            "service_completed_successfully",
            "{name}"
        );
    }
    for (name, command, service) in &dispatchers {
        let topic = setting(command, "run", "--topic");
        assert!(
            create.contains(&format!("--topic {topic} ")),
            "{name}: {topic}"
        );
        let condition = get(service, &["depends_on", "create-topics", "condition"]);
        assert_eq!(
            scalar(condition),
            "service_completed_successfully",
            "{name}"
        );
    }
    let build = get(&cronq[0].2, &["build"]);
    let dockerfile = repo()
        .join("docker")
        .join(scalar(get(build, &["context"])))
        .join(scalar(get(build, &["dockerfile"])));
    assert!(dockerfile.is_file(), "{} is missing", dockerfile.display());
}

#[test]
fn prometheus_scrapes_every_cronq_service_at_its_http_port() {
    let compose = compose();
    let prometheus = services(&compose)
        .into_iter()
        .find(|(_, s)| scalar(get(s, &["image"])).starts_with("prom/prometheus:"))
        .map(|(_, s)| s)
        .expect("a prometheus service");
    let config = bind_mounts(&prometheus)
        .into_iter()
        .find(|(_, dst)| dst == "/etc/prometheus/prometheus.yml")
        .map(|(host, _)| host)
        .expect("prometheus.yml mounted at /etc/prometheus/prometheus.yml");
    let command = strings(get(&prometheus, &["command"]));
    assert!(command.contains(&"--config.file=/etc/prometheus/prometheus.yml".to_string()));
    let config = yaml(&config);
    let mut targets = BTreeSet::new();
    for job in get(&config, &["scrape_configs"])
        .as_sequence()
        .expect("jobs")
    {
        let path = job.get("metrics_path").map(scalar);
        assert!(
            path.is_none() || path.as_deref() == Some("/metrics"),
            "{job:?}"
        );
        for sc in get(job, &["static_configs"])
            .as_sequence()
            .expect("static_configs")
        {
            for t in strings(get(sc, &["targets"])) {
                assert!(targets.insert(t.clone()), "{t} is scraped twice");
            }
        }
    }
    let expected: BTreeSet<String> = cronq_services(&compose)
        .iter()
        .map(|(name, command, service)| {
            let http = compose_http(command, service).expect("--http");
            format!("{name}:{}", port_of(&http))
        })
        .collect();
    assert_eq!(
        targets, expected,
        "scrape targets vs cronq services and their --http ports"
    );
}

#[test]
fn grafana_provisioning_points_at_prometheus_and_the_dashboard() {
    let compose = compose();
    let all = services(&compose);
    let (prom_name, prom) = all
        .iter()
        .find(|(_, s)| scalar(get(s, &["image"])).starts_with("prom/prometheus:"))
        .expect("prometheus");
    let prom_port = strings(get(prom, &["ports"]))
        .first()
        .map(|p| port_mapping(p).2)
        .expect("prometheus port");
    let (_, grafana) = all
        .iter()
        .find(|(_, s)| scalar(get(s, &["image"])).starts_with("grafana/grafana:"))
        .expect("grafana");
    let mounts = bind_mounts(grafana);
    let host_of = |dst: &str| {
        mounts
            .iter()
            .find(|(_, d)| d == dst)
            .map(|(h, _)| h.clone())
            .unwrap_or_else(|| panic!("grafana: nothing mounted at {dst}"))
    };
    let provisioning = host_of("/etc/grafana/provisioning");
    let sources = yaml(&provisioning.join("datasources/prometheus.yaml"));
    let source = &get(&sources, &["datasources"]).as_sequence().expect("list")[0];
    assert_eq!(scalar(get(source, &["type"])), "prometheus");
    assert_eq!(
        scalar(get(source, &["url"])),
        format!("http://{prom_name}:{prom_port}")
    );
    let providers = yaml(&provisioning.join("dashboards/cronq.yaml"));
    let provider = &get(&providers, &["providers"]).as_sequence().expect("list")[0];
    let path = scalar(get(provider, &["options", "path"]));
    let dashboards = host_of(&path);
    assert!(dashboards.join("cronq.json").is_file());
    let home = compose_env(grafana)
        .into_iter()
        .find(|(k, _)| k == "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
        .and_then(|(_, v)| v)
        .expect("a home dashboard");
    let rest = home
        .strip_prefix(&format!("{path}/"))
        .expect("home dashboard inside the provisioned directory");
    assert!(dashboards.join(rest).is_file(), "{home}");
}

// ---------------------------------------------------------------------------------------------
// The Grafana dashboard and the metrics

/// The metrics issue 11 asks for; `true` marks a histogram (queried as _bucket/_sum/_count).
const METRICS: &[(&str, bool)] = &[
    ("cronq_dispatched_total", false),
    ("cronq_dispatch_skew_seconds", true),
    ("cronq_slots_skipped_total", false),
    ("cronq_undelivered", false),
    ("cronq_produce_errors_total", false),
    ("cronq_queue_depth", false),
    ("cronq_schedule_jobs", false),
    ("cronq_schedule_reloads_total", false),
    ("cronq_schedule_reload_seconds", true),
    ("cronq_tick_lag_seconds", false),
    ("cronq_shards_owned", false),
    ("cronq_shard_cursor_lag_seconds", false),
    ("cronq_takeovers_total", false),
    ("cronq_worker_lag", false),
    ("cronq_worker_pool_size", false),
    ("cronq_worker_pool_target", false),
    ("cronq_worker_in_flight", false),
    ("cronq_worker_queue_depth", false),
    ("cronq_job_runs_total", false),
    ("cronq_job_duration_seconds", true),
    ("cronq_job_start_delay_seconds", true),
    ("cronq_dead_letters_total", false),
    ("cronq_duplicates_skipped_total", false),
    ("cronq_pool_resizes_total", false),
];

/// Labels the issue gives its metrics, plus those Prometheus adds (`instance`, `job`) and `le`.
const LABELS: &[&str] = &[
    "topic",
    "reason",
    "kind",
    "result",
    "shard",
    "partition",
    "status",
    "direction",
    "instance",
    "job",
    "le",
];

fn dashboard() -> serde_json::Value {
    let path = repo().join("docker/grafana/dashboards/cronq.json");
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every panel (rows' nested panels too).
fn panels(d: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().expect("panels") {
        out.push(p.clone());
        if let Some(nested) = p["panels"].as_array() {
            out.extend(nested.iter().cloned());
        }
    }
    out
}

/// `(panel title, expr)` of every query.
fn queries(d: &serde_json::Value) -> Vec<(String, String)> {
    panels(d)
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap_or("").to_string();
            p["targets"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap_or("").to_string()))
        })
        .collect()
}

/// The `cronq_*` series names an expression reads.
fn series_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("cronq_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        out.insert(name);
    }
    out
}

fn identifiers(text: &str) -> Vec<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// Labels an expression groups by (`by (…)`, `without (…)`) or matches on (`{label="…"}`).
fn labels_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for keyword in ["by (", "without ("] {
        for part in expr.split(keyword).skip(1) {
            out.extend(identifiers(part.split(')').next().unwrap_or("")));
        }
    }
    for part in expr.split('{').skip(1) {
        let inside = part.split('}').next().unwrap_or("");
        for matcher in inside.split(',') {
            let name = matcher.split(['=', '!']).next().unwrap_or("").trim();
            if !name.is_empty() {
                out.insert(name.to_string());
            }
        }
    }
    out
}

/// The metric of issue 11 a series name belongs to, if any.
fn metric_of(series: &str) -> Option<&'static str> {
    METRICS.iter().find_map(|(name, histogram)| {
        let matches = if *histogram {
            ["_bucket", "_sum", "_count"]
                .iter()
                .any(|s| series.strip_suffix(s) == Some(name))
        } else {
            series == *name
        };
        matches.then_some(*name)
    })
}

#[test]
fn dashboard_queries_cover_exactly_the_metrics_of_issue_11_with_bounded_labels() {
    let d = dashboard();
    assert_eq!(d["uid"], "cronq");
    let variable = d["templating"]["list"]
        .as_array()
        .and_then(|l| l.iter().find(|v| v["type"] == "datasource"))
        .expect("a data source variable");
    assert_eq!(variable["query"], "prometheus");
    let source = format!("${{{}}}", variable["name"].as_str().unwrap_or(""));
    let mut problems = Vec::new();
    let mut ids = BTreeSet::new();
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap_or("?");
        if !ids.insert(p["id"].as_u64().expect("panel id")) {
            problems.push(format!("{title}: duplicate panel id {}", p["id"]));
        }
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_u64().unwrap_or(99), g["w"].as_u64().unwrap_or(99));
        if x + w > 24 {
            problems.push(format!("{title}: gridPos beyond 24 columns"));
        }
        if p["type"] == "row" {
            continue;
        }
        if p["datasource"]["uid"] != source.as_str() {
            problems.push(format!("{title}: data source is not {source}"));
        }
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("{title}: no query"));
        }
        let refs: BTreeSet<_> = targets.iter().map(|t| t["refId"].to_string()).collect();
        if refs.len() != targets.len() {
            problems.push(format!("{title}: duplicate refId"));
        }
    }
    let mut used = BTreeSet::new();
    for (title, expr) in queries(&d) {
        let series = series_in(&expr);
        if series.is_empty() {
            problems.push(format!("{title}: `{expr}` reads no cronq metric"));
        }
        for s in series {
            match metric_of(&s) {
                Some(m) => {
                    used.insert(m);
                }
                None => problems.push(format!(
                    "{title}: `{s}` is not a metric of issue 11 (or a histogram without _bucket/_sum/_count)"
                )),
            }
        }
        for label in labels_in(&expr) {
            if !LABELS.contains(&label.as_str()) {
                problems.push(format!(
                    "{title}: label `{label}` is none of the bounded labels {LABELS:?}"
                ));
            }
        }
    }
    for (name, _) in METRICS {
        if !used.contains(name) {
            problems.push(format!("no panel shows {name}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Series names a Prometheus text (or OpenMetrics) exposition offers: its samples, and for each
/// `# TYPE` the names its samples take (a family registered but not yet observed has no sample).
fn exported(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (Some(name), Some(kind)) = (it.next(), it.next()) else {
                continue;
            };
            // Only the names samples take: a histogram's bare name, or a counter's without
            // `_total` (OpenMetrics' TYPE line), is no series a query can read.
            match kind {
                "counter" => {
                    out.insert(format!("{}_total", name.trim_end_matches("_total")));
                }
                "histogram" | "summary" => {
                    for s in ["_bucket", "_sum", "_count"] {
                        out.insert(format!("{name}{s}"));
                    }
                }
                _ => {
                    out.insert(name.to_string());
                }
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let name: String = line
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            out.insert(name);
        }
    }
    out
}

#[test]
fn the_exposition_parser_offers_only_names_that_samples_take() {
    // OpenMetrics (prometheus-client): counters' TYPE lines lack `_total`; families not yet
    // observed have a TYPE line and no sample.
    let open_metrics = "# HELP cronq_dispatched Acked.\n# TYPE cronq_dispatched counter\n\
        cronq_dispatched_total{topic=\"jobs\"} 3\n# TYPE cronq_takeovers counter\n\
        # TYPE cronq_dispatch_skew_seconds histogram\n# UNIT cronq_dispatch_skew_seconds seconds\n\
        # TYPE cronq_undelivered gauge\ncronq_undelivered 0\n# EOF\n";
    let names = exported(open_metrics);
    let expected: BTreeSet<String> = [
        "cronq_dispatched_total",
        "cronq_takeovers_total",
        "cronq_dispatch_skew_seconds_bucket",
        "cronq_dispatch_skew_seconds_sum",
        "cronq_dispatch_skew_seconds_count",
        "cronq_undelivered",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(names, expected);
    // The classic text format names counters with `_total` in TYPE.
    let text = "# TYPE cronq_job_runs_total counter\ncronq_job_runs_total{status=\"failed\"} 1\n";
    assert_eq!(
        exported(text),
        BTreeSet::from(["cronq_job_runs_total".to_string()])
    );
}

/// `GET path` (ureq): (status code, body), or why there was no answer.
fn http_get(addr: &str, path: &str) -> Result<(u16, String), String> {
    let url = format!("http://{addr}{path}");
    match ureq::get(&url).timeout(Duration::from_secs(10)).call() {
        Ok(resp) => {
            let code = resp.status();
            Ok((code, resp.into_string().map_err(|e| e.to_string())?))
        }
        Err(ureq::Error::Status(code, resp)) => Ok((code, resp.into_string().unwrap_or_default())),
        Err(e) => Err(format!("{url}: {e}")),
    }
}

/// Needs the HTTP surface of issue 11 (`--http`, /metrics, /healthz, /readyz): runs the
/// quickstart's dispatcher and worker, lets jobs run, and checks every series the dashboard
/// queries against what the two processes export.
#[test]
fn dashboard_queries_name_only_metrics_the_running_dispatcher_and_worker_export() {
    let mut qs = Quickstart::start();
    qs.wait_for(
        "a result and a dead letter",
        Duration::from_secs(120),
        |lines| {
            lines.iter().any(|l| l.starts_with("result  say-hello"))
                && lines.iter().any(|l| l.starts_with("DLQ     always-fails"))
        },
    );
    let mut offered = BTreeSet::new();
    for (who, addr) in [
        ("dispatcher", &qs.dispatcher_http),
        ("worker", &qs.worker_http),
    ] {
        for path in ["/healthz", "/readyz"] {
            let (status, body) = http_get(addr, path)
                .unwrap_or_else(|e| panic!("the {who}'s {path} (--http {addr}): {e}"));
            assert_eq!(status, 200, "{who} {path}: {body}");
            serde_json::from_str::<serde_json::Value>(&body)
                .unwrap_or_else(|e| panic!("{who} {path} is not JSON ({e}): {body}"));
        }
        let (status, body) = http_get(addr, "/metrics")
            .unwrap_or_else(|e| panic!("the {who}'s /metrics (--http {addr}): {e}"));
        assert_eq!(status, 200, "{who} /metrics: {body}");
        offered.extend(exported(&body));
    }
    let missing: Vec<String> = queries(&dashboard())
        .into_iter()
        .flat_map(|(title, expr)| {
            series_in(&expr)
                .into_iter()
                .filter(|s| !offered.contains(s))
                .map(move |s| format!("{title}: {s}"))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries series that neither process exports:\n{}\nexported: {offered:?}",
        missing.join("\n")
    );
    qs.stop();
}

// ---------------------------------------------------------------------------------------------
// The Dockerfile

/// The Dockerfile's instructions, continuation lines joined: (INSTRUCTION, rest).
fn dockerfile() -> Vec<(String, String)> {
    let text = read(&repo().join("Dockerfile"));
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (instr, rest) = current.split_once(' ').unwrap_or((&current, ""));
        out.push((instr.to_uppercase(), rest.trim().to_string()));
        current.clear();
    }
    out
}

#[test]
fn dockerfile_builds_in_two_stages_and_runs_cronq_as_a_non_root_user_on_bookworm_slim() {
    let instructions = dockerfile();
    let froms: Vec<(usize, &String)> = instructions
        .iter()
        .enumerate()
        .filter(|(_, (i, _))| i == "FROM")
        .map(|(n, (_, rest))| (n, rest))
        .collect();
    assert_eq!(froms.len(), 2, "two stages: {froms:?}");
    let build_stage = froms[0].1;
    assert!(
        build_stage.starts_with("rust:") && build_stage.contains("-bookworm AS build"),
        "the build stage is Rust on bookworm, named build: {build_stage}"
    );
    assert!(
        froms[1].1.starts_with("debian:bookworm-slim"),
        "the runtime is debian:bookworm-slim: {}",
        froms[1].1
    );
    let (build, runtime) = instructions.split_at(froms[1].0);
    let runs = |stage: &[(String, String)]| {
        stage
            .iter()
            .filter(|(i, _)| i == "RUN")
            .map(|(_, r)| r.clone())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let build_runs = runs(build);
    assert!(
        build_runs.contains("libssl-dev"),
        "OpenSSL headers for librdkafka"
    );
    assert!(build_runs.contains("cargo build --release --locked"));
    let runtime_runs = runs(runtime);
    for package in ["libssl3", "ca-certificates", "tini"] {
        assert!(
            runtime_runs.contains(package),
            "the runtime installs {package}"
        );
    }
    assert!(
        runtime_runs.contains("cronq --version"),
        "the image checks its binary starts"
    );
    // The binary is copied from the build stage to where ENTRYPOINT runs it.
    let copy = runtime
        .iter()
        .find(|(i, r)| i == "COPY" && r.starts_with("--from=build"))
        .map(|(_, r)| r.clone())
        .expect("COPY --from=build");
    let binary = copy.split_whitespace().last().unwrap_or("").to_string();
    let entrypoint: Vec<String> = runtime
        .iter()
        .find(|(i, _)| i == "ENTRYPOINT")
        .map(|(_, r)| serde_json::from_str(r).expect("ENTRYPOINT in exec form (a JSON array)"))
        .expect("ENTRYPOINT");
    assert_eq!(entrypoint.last(), Some(&binary), "ENTRYPOINT runs {binary}");
    assert!(binary.ends_with("/cronq"));
    let user = runtime
        .iter()
        .rfind(|(i, _)| i == "USER")
        .map(|(_, r)| r.clone())
        .expect("USER in the runtime stage");
    let uid = user.split(':').next().unwrap_or("");
    assert!(
        uid.parse::<u32>().is_ok_and(|u| u != 0),
        "USER is a numeric non-root uid (Kubernetes' runAsNonRoot can check it): {user}"
    );
    // COPY sources exist and are not excluded from the build context.
    let ignored: Vec<String> = read(&repo().join(".dockerignore"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    assert!(
        ignored.contains(&"target".to_string()),
        "target/ stays out of the context"
    );
    for (i, rest) in &instructions {
        if i != "COPY" || rest.starts_with("--from") {
            continue;
        }
        let words: Vec<&str> = rest
            .split_whitespace()
            .filter(|w| !w.starts_with("--"))
            .collect();
        for src in &words[..words.len() - 1] {
            assert!(
                repo().join(src).exists(),
                "COPY {src}: not in the repository"
            );
            let top = src.trim_start_matches("./").split('/').next().unwrap_or("");
            assert!(
                !ignored.iter().any(|g| g == top),
                "COPY {src}: excluded by .dockerignore"
            );
        }
    }
}

/// Packages debian:bookworm-slim ships (its essential set and their libraries) that cronq links.
const IN_BOOKWORM_SLIM: &[&str] = &["libc6", "libgcc-s1", "zlib1g"];

#[test]
fn the_runtime_image_installs_every_shared_library_the_binary_links() {
    // ldd of the binary under test (built on Debian, as the image's build stage is), each
    // library's Debian package by dpkg: a new system library (say, libsasl2 for GSSAPI) must be
    // installed by the runtime stage, or the image's `cronq --version` fails its build.
    let ldd = Command::new("ldd").arg(CRONQ).output().expect("run ldd");
    assert!(ldd.status.success(), "ldd {CRONQ}");
    let instructions = dockerfile();
    let runtime_from = instructions
        .iter()
        .rposition(|(i, _)| i == "FROM")
        .expect("FROM");
    let installed: BTreeSet<String> = instructions[runtime_from..]
        .iter()
        .filter(|(i, _)| i == "RUN")
        .flat_map(|(_, r)| {
            r.split("apt-get install")
                .skip(1)
                .flat_map(|rest| {
                    rest.split("&&")
                        .next()
                        .unwrap_or("")
                        .split_whitespace()
                        .filter(|w| !w.starts_with('-'))
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let mut missing = Vec::new();
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let Some(lib) = line.split_whitespace().next() else {
            continue;
        };
        if !line.contains("=>") || lib.starts_with("linux-vdso") {
            continue;
        }
        let owner = Command::new("dpkg")
            .args(["-S", &format!("*/{lib}")])
            .output()
            .expect("run dpkg -S");
        let text = String::from_utf8_lossy(&owner.stdout);
        let package = text
            .lines()
            .next()
            .and_then(|l| l.split(':').next())
            .unwrap_or_else(|| panic!("no Debian package owns {lib}"))
            .to_string();
        if !installed.contains(&package) && !IN_BOOKWORM_SLIM.contains(&package.as_str()) {
            missing.push(format!("{lib} (package {package})"));
        }
    }
    assert!(
        missing.is_empty(),
        "the runtime stage (installing {installed:?}) lacks: {}",
        missing.join(", ")
    );
}

/// Where the Dockerfile puts examples/handlers and examples/schedule.json.
fn image_path_of(src: &str) -> String {
    dockerfile()
        .into_iter()
        .find_map(|(i, rest)| {
            let words: Vec<&str> = rest.split_whitespace().collect();
            (i == "COPY" && words.first() == Some(&src)).then(|| {
                words
                    .last()
                    .unwrap_or(&"")
                    .trim_end_matches('/')
                    .to_string()
            })
        })
        .unwrap_or_else(|| panic!("the Dockerfile does not COPY {src}"))
}

// ---------------------------------------------------------------------------------------------
// systemd

fn unit_files() -> Vec<PathBuf> {
    let mut units: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy/systemd"))
        .expect("deploy/systemd")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "service"))
        .collect();
    units.sort();
    units
}

/// A unit's `Key=value` lines of section [Service].
fn service_settings(path: &Path) -> Vec<(String, String)> {
    section_settings(path, "[Service]")
}

/// A unit's `Key=value` lines of section `wanted` (`[Unit]`, `[Service]`).
fn section_settings(path: &Path, wanted: &str) -> Vec<(String, String)> {
    let mut section = String::new();
    let mut out = Vec::new();
    for line in read(path).lines() {
        let line = line.trim();
        if line.starts_with('[') {
            section = line.to_string();
        } else if section == wanted && !line.starts_with('#') {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.to_string(), v.to_string()));
            }
        }
    }
    out
}

fn systemd_analyze() -> &'static str {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "systemd-analyze is missing: run scripts/deploy_tools.sh (installs Debian's systemd package)"
    );
    "systemd-analyze"
}

#[test]
fn systemd_units_start_after_the_clock_is_synchronised() {
    // A dispatcher started on an unsynchronised clock (an RTC in local time) trusts it, and the
    // step that corrects it later is held back for --clock-settle.
    for unit in unit_files() {
        let settings = section_settings(&unit, "[Unit]");
        for key in ["After", "Wants"] {
            assert!(
                settings
                    .iter()
                    .any(|(k, v)| k == key && v.split_whitespace().any(|t| t == "time-sync.target")),
                "{}: {key}= lacks time-sync.target",
                unit.display()
            );
        }
    }
}

#[test]
fn systemd_units_pass_systemd_analyze_verify_and_its_security_review() {
    let tool = systemd_analyze();
    let dir = tempfile::tempdir().expect("temp dir");
    let binary = std::fs::canonicalize(CRONQ).expect("cronq binary");
    let mut names = Vec::new();
    for unit in unit_files() {
        let text = read(&unit);
        assert!(text.contains("/usr/local/bin/cronq "), "{}", unit.display());
        // verify checks that ExecStart's program exists: point it at the binary under test.
        let text = text.replace("/usr/local/bin/cronq", &binary.to_string_lossy());
        let name = unit
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        std::fs::write(dir.path().join(&name), text).expect("write unit");
        let settings = service_settings(&unit);
        for (key, value) in [
            ("DynamicUser", "yes"),
            ("ProtectSystem", "strict"),
            ("NoNewPrivileges", "yes"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
        ] {
            assert!(
                settings.iter().any(|(k, v)| k == key && v == value),
                "{name}: {key}={value}"
            );
        }
        // A template is verified as one of its instances.
        names.push(dir.path().join(name.replace("@.", "@a.")));
    }
    assert_eq!(
        names.len(),
        3,
        "cronq-dispatcher.service, cronq-worker@.service and cronq-monitor.service"
    );
    let out = Command::new(tool)
        .arg("verify")
        .args(&names)
        .output()
        .expect("systemd-analyze verify");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
    // Exposure 0.0 (locked down) to 10.0 (unsafe); systemd calls up to 2.0 "OK".
    for unit in &names {
        let out = Command::new(tool)
            .args(["security", "--offline=true", "--threshold=20"])
            .arg(unit)
            .output()
            .expect("systemd-analyze security");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}: exposure above 2.0:\n{}",
            unit.display(),
            text.lines()
                .filter(|l| l.contains('✗') || l.contains("Overall"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

fn systemd_command_lines() -> Vec<CommandLine> {
    unit_files()
        .iter()
        .map(|unit| {
            let settings = service_settings(unit);
            let exec = settings
                .iter()
                .find(|(k, _)| k == "ExecStart")
                .map(|(_, v)| v.clone())
                .expect("ExecStart");
            let mut words = shell_words::split(&exec).expect("ExecStart words");
            assert_eq!(
                words.remove(0),
                "/usr/local/bin/cronq",
                "{}",
                unit.display()
            );
            let env = settings
                .iter()
                .filter(|(k, _)| k == "Environment")
                .flat_map(|(_, v)| shell_words::split(v).expect("Environment words"))
                .map(|kv| {
                    let (k, v) = kv.split_once('=').expect("Environment=K=V");
                    (k.to_string(), Some(v.to_string()))
                })
                .collect();
            CommandLine {
                origin: relative(unit),
                args: words,
                env,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Kubernetes

fn kube_docs() -> Vec<(PathBuf, Value)> {
    yaml_docs_in("deploy/kubernetes")
}

/// Every YAML document of the `.yaml` files directly in `dir` (of the repo), files in name order.
fn yaml_docs_in(dir: &str) -> Vec<(PathBuf, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join(dir))
        .expect(dir)
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
        .into_iter()
        .flat_map(|f| yaml_docs(&f).into_iter().map(move |d| (f.clone(), d)))
        .collect()
}

fn kind_of(doc: &Value) -> String {
    scalar(get(doc, &["kind"]))
}

fn name_of(doc: &Value) -> String {
    scalar(get(doc, &["metadata", "name"]))
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .map(|m| m.iter().map(|(k, v)| (scalar(k), scalar(v))).collect())
        .unwrap_or_default()
}

fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn kube_command_lines() -> Vec<CommandLine> {
    let docs = kube_docs();
    let config_map = |name: &str| {
        docs.iter()
            .find(|(_, d)| kind_of(d) == "ConfigMap" && name_of(d) == name)
            .map(|(_, d)| labels(get(d, &["data"])))
            .unwrap_or_else(|| panic!("no ConfigMap {name}"))
    };
    let mut out = Vec::new();
    for (file, doc) in &docs {
        if !matches!(kind_of(doc).as_str(), "Deployment" | "StatefulSet") {
            continue;
        }
        let pod = get(doc, &["spec", "template", "spec"]);
        let init = pod.get("initContainers").and_then(Value::as_sequence);
        for c in get(pod, &["containers"])
            .as_sequence()
            .expect("containers")
            .iter()
            .chain(init.into_iter().flatten())
        {
            let mut env: Vec<(String, Option<String>)> = c
                .get("env")
                .and_then(Value::as_sequence)
                .map(|s| {
                    s.iter()
                        .map(|e| (scalar(get(e, &["name"])), e.get("value").map(scalar)))
                        .collect()
                })
                .unwrap_or_default();
            for from in c
                .get("envFrom")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                let name = scalar(get(from, &["configMapRef", "name"]));
                env.extend(config_map(&name).into_iter().map(|(k, v)| (k, Some(v))));
            }
            out.push(CommandLine {
                origin: format!(
                    "{}: {} {}",
                    relative(file),
                    name_of(doc),
                    scalar(get(c, &["name"]))
                ),
                args: strings(get(c, &["args"])),
                env,
            });
        }
    }
    out
}

#[test]
fn kubernetes_manifests_pass_the_schema_validator() {
    // Everything but the ServiceMonitor (a CRD, checked below) must have been checked, not
    // skipped for want of a schema.
    assert_kubernetes_valid(&kube_docs(), &["ServiceMonitor"]);
}

/// `kubernetes-validate --strict` passes `docs`' files for the oldest and the newest Kubernetes
/// the validator knows of that we support, and names every document as checked (but those of the
/// kinds in `unchecked`).
fn assert_kubernetes_valid(docs: &[(PathBuf, Value)], unchecked: &[&str]) {
    let validator = venv_tool("kubernetes-validate");
    let files: BTreeSet<PathBuf> = docs.iter().map(|(f, _)| f.clone()).collect();
    for version in ["1.29", "1.37"] {
        let out = Command::new(&validator)
            .args(["--strict", "--kubernetes-version", version])
            .args(&files)
            .output()
            .expect("run kubernetes-validate");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "kubernetes-validate {version}:\n{text}"
        );
        for (file, doc) in docs {
            if unchecked.contains(&kind_of(doc).as_str()) {
                continue;
            }
            let passed = format!(
                "{} passed for resource {}/{}",
                file.display(),
                kind_of(doc).to_lowercase(),
                name_of(doc)
            );
            assert!(
                text.contains(&passed),
                "not validated ({version}): {passed}\n{text}"
            );
        }
    }
}

#[test]
fn kubernetes_manifests_agree_with_each_other_the_image_and_the_endpoints() {
    let docs = kube_docs();
    let of_kind = |k: &str| -> Vec<&Value> {
        docs.iter()
            .filter(|(_, d)| kind_of(d) == k)
            .map(|(_, d)| d)
            .collect()
    };
    let deployments = of_kind("Deployment");
    let services = of_kind("Service");
    let uid: u64 = dockerfile()
        .iter()
        .rfind(|(i, _)| i == "USER")
        .and_then(|(_, u)| u.split(':').next().and_then(|u| u.parse().ok()))
        .expect("the Dockerfile's USER");
    let mut roles = BTreeMap::new();
    for d in &deployments {
        let name = name_of(d);
        let pod = get(d, &["spec", "template", "spec"]);
        let pod_labels = labels(get(d, &["spec", "template", "metadata", "labels"]));
        assert!(
            selects(
                &labels(get(d, &["spec", "selector", "matchLabels"])),
                &pod_labels
            ),
            "{name}: its selector does not select its pods"
        );
        assert_eq!(
            get(pod, &["securityContext", "runAsNonRoot"]),
            &Value::Bool(true),
            "{name}"
        );
        assert_eq!(
            get(pod, &["securityContext", "runAsUser"]).as_u64(),
            Some(uid),
            "{name}: runAsUser is the image's user"
        );
        let c = &get(pod, &["containers"]).as_sequence().expect("containers")[0];
        let sc = get(c, &["securityContext"]);
        assert_eq!(
            get(sc, &["allowPrivilegeEscalation"]),
            &Value::Bool(false),
            "{name}"
        );
        assert_eq!(
            get(sc, &["readOnlyRootFilesystem"]),
            &Value::Bool(true),
            "{name}"
        );
        let args = strings(get(c, &["args"]));
        let http = flag_value(&args, "--http").unwrap_or_else(|| panic!("{name}: no --http"));
        assert!(
            http.starts_with("0.0.0.0:"),
            "{name}: --http {http}: probes come from outside the pod"
        );
        let port = port_of(&http);
        let ports = get(c, &["ports"]).as_sequence().expect("ports");
        let named_http = ports
            .iter()
            .find(|p| p.get("name").map(scalar).as_deref() == Some("http"))
            .unwrap_or_else(|| panic!("{name}: no container port named http"));
        assert_eq!(
            get(named_http, &["containerPort"]).as_u64(),
            Some(u64::from(port)),
            "{name}"
        );
        for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
            let get_ = get(c, &[probe, "httpGet"]);
            assert_eq!(scalar(get(get_, &["path"])), path, "{name} {probe}");
            let p = scalar(get(get_, &["port"]));
            assert!(
                p == "http" || p == port.to_string(),
                "{name} {probe}: port {p}"
            );
        }
        let mounts = c
            .get("volumeMounts")
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        let volumes = pod
            .get("volumes")
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default();
        match args[0].as_str() {
            "run" => {
                assert_eq!(
                    get(d, &["spec", "replicas"]).as_u64(),
                    Some(2),
                    "{name}: 2 dispatchers"
                );
                // The schedule: a key of a ConfigMap mounted as a directory (no subPath, so the
                // kubelet's symlink swap reaches the dispatcher), and a schedule cronq accepts.
                let schedule = flag_value(&args, "--schedule").expect("--schedule");
                let (dir, key) = schedule.rsplit_once('/').expect("a path");
                let mount = mounts
                    .iter()
                    .find(|m| scalar(get(m, &["mountPath"])) == dir)
                    .unwrap_or_else(|| panic!("{name}: nothing mounted at {dir}"));
                assert!(
                    mount.get("subPath").is_none(),
                    "{name}: a subPath mount never updates"
                );
                let volume_name = scalar(get(mount, &["name"]));
                let volume = volumes
                    .iter()
                    .find(|v| scalar(get(v, &["name"])) == volume_name)
                    .expect("the volume");
                let map_name = scalar(get(volume, &["configMap", "name"]));
                let map = of_kind("ConfigMap")
                    .into_iter()
                    .find(|m| name_of(m) == map_name)
                    .unwrap_or_else(|| panic!("no ConfigMap {map_name}"));
                let text = scalar(get(map, &["data", key]));
                let dir = tempfile::tempdir().expect("temp dir");
                let file = dir.path().join(key);
                std::fs::write(&file, text).expect("write schedule");
                let out = Command::new(CRONQ)
                    .arg("validate")
                    .arg(&file)
                    .output()
                    .expect("validate");
                assert!(
                    out.status.success(),
                    "ConfigMap {map_name} {key}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            "worker" => {
                // Its init container waits for the topic it subscribes to.
                let topic =
                    flag_value(&args, "--topic").or_else(|| default_of("worker", "--topic"));
                let waits = pod
                    .get("initContainers")
                    .and_then(Value::as_sequence)
                    .into_iter()
                    .flatten()
                    .map(|c| strings(get(c, &["args"])))
                    .any(|a| a[0] == "tail" && flag_value(&a, "--topic") == topic);
                assert!(waits, "{name}: no init container waits for topic {topic:?}");
                let handlers = flag_value(&args, "--handlers").expect("--handlers");
                assert_eq!(
                    handlers,
                    image_path_of("examples/handlers/"),
                    "{name}: the image's handlers"
                );
            }
            other => panic!("{name}: runs `cronq {other}`"),
        }
        roles.insert(args[0].clone(), (pod_labels, port));
    }
    assert_eq!(roles.len(), 2, "a dispatcher and a worker Deployment");
    // Each role has a Service whose `http` port reaches the pods' `http` port.
    let mut service_labels = Vec::new();
    for (role, (pod_labels, port)) in &roles {
        let svc = services
            .iter()
            .find(|s| selects(&labels(get(s, &["spec", "selector"])), pod_labels))
            .unwrap_or_else(|| panic!("no Service selects the {role} pods"));
        let p = &get(svc, &["spec", "ports"]).as_sequence().expect("ports")[0];
        assert_eq!(scalar(get(p, &["name"])), "http");
        assert_eq!(scalar(get(p, &["targetPort"])), "http");
        assert_eq!(get(p, &["port"]).as_u64(), Some(u64::from(*port)));
        service_labels.push(labels(get(svc, &["metadata", "labels"])));
    }
    // The monitor's StatefulSet and Service are checked in
    // the_monitor_runs_as_one_statefulset_with_its_database_on_its_claim; the ServiceMonitor
    // scrapes its Service too.
    let monitor = services
        .iter()
        .find(|s| name_of(s) == "cronq-monitor")
        .expect("the cronq-monitor Service");
    service_labels.push(labels(get(monitor, &["metadata", "labels"])));
    // The ServiceMonitor (a CRD: no schema in the validator) selects both Services and scrapes
    // their `http` port at /metrics.
    let monitors = of_kind("ServiceMonitor");
    assert_eq!(monitors.len(), 1);
    let m = monitors[0];
    assert_eq!(scalar(get(m, &["apiVersion"])), "monitoring.coreos.com/v1");
    let selector = labels(get(m, &["spec", "selector", "matchLabels"]));
    for l in &service_labels {
        assert!(
            selects(&selector, l),
            "the ServiceMonitor misses a Service labelled {l:?}"
        );
    }
    let endpoints = get(m, &["spec", "endpoints"])
        .as_sequence()
        .expect("endpoints");
    assert!(!endpoints.is_empty());
    for e in endpoints {
        assert_eq!(scalar(get(e, &["port"])), "http");
        assert_eq!(scalar(get(e, &["path"])), "/metrics");
    }
    for d in &docs {
        let keys: BTreeSet<String> =
            d.1.as_mapping()
                .map(|m| m.keys().map(scalar).collect())
                .unwrap_or_default();
        assert!(
            keys.contains("apiVersion") && keys.contains("metadata"),
            "{}",
            d.0.display()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Every command line of every deployment file, against the real CLI

/// Needs the flags of issue 11 (`--http`, `--log-format`) to exist in src/cli/.
#[test]
fn deployment_files_use_only_real_flags_values_and_variables() {
    let mut lines = Vec::new();
    let compose = compose();
    for (name, command, service) in cronq_services(&compose) {
        lines.push(CommandLine {
            origin: format!("docker/docker-compose.yaml: {name}"),
            args: command,
            env: compose_env(&service),
        });
    }
    lines.extend(systemd_command_lines());
    lines.extend(kube_command_lines());
    // The image's ENV: each variable must be read by some subcommand.
    let env: Vec<(String, Option<String>)> = dockerfile()
        .into_iter()
        .filter(|(i, _)| i == "ENV")
        .flat_map(|(_, rest)| shell_words::split(&rest).expect("ENV words"))
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("ENV K=V");
            (k.to_string(), Some(v.to_string()))
        })
        .collect();
    let mut problems: Vec<String> = lines
        .iter()
        .filter_map(|l| check_command_line(l).err())
        .collect();
    for (k, v) in &env {
        let read_by_one = ["run", "worker", "validate"].iter().any(|sub| {
            check_command_line(&CommandLine {
                origin: String::new(),
                args: vec![sub.to_string()],
                env: vec![(k.clone(), v.clone())],
            })
            .is_ok()
        });
        if !read_by_one {
            problems.push(format!(
                "Dockerfile: ENV {k}={v:?} is read by no subcommand"
            ));
        }
    }
    // The image exposes the ports `run` and `worker` listen on by default.
    let exposed: BTreeSet<u16> = dockerfile()
        .into_iter()
        .filter(|(i, _)| i == "EXPOSE")
        .flat_map(|(_, r)| {
            r.split_whitespace()
                .map(|p| p.parse().expect("port"))
                .collect::<Vec<_>>()
        })
        .collect();
    let defaults: BTreeSet<u16> = ["run", "worker"]
        .iter()
        .filter_map(|sub| default_of(sub, "--http"))
        .map(|a| port_of(&a))
        .collect();
    if defaults.len() != 2 || exposed != defaults {
        problems.push(format!(
            "Dockerfile: EXPOSE {exposed:?} vs the --http defaults of run and worker {defaults:?}"
        ));
    }
    assert!(lines.len() >= 8, "found only {} command lines", lines.len());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_wrong_flag_value_or_variable_in_a_deployment_file_is_caught() {
    // The checker itself: it must reject what cronq would reject.
    let line = |args: &[&str], env: &[(&str, &str)]| CommandLine {
        origin: "example".into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), Some(v.to_string())))
            .collect(),
    };
    assert!(check_command_line(&line(&["run", "--schedule", "/x.json"], &[])).is_ok());
    assert!(check_command_line(&line(&["run", "--schedulee", "/x.json"], &[])).is_err());
    assert!(check_command_line(&line(&["worker", "--max-workers", "0"], &[])).is_err());
    assert!(check_command_line(&line(&["worker"], &[("CRONQ_MAX_WORKERS", "5000")])).is_err());
    assert!(check_command_line(&line(&["worker"], &[("CRONQ_MAX_WORKER", "5")])).is_err());
    assert!(check_command_line(&line(&["worker"], &[("CRONQ_SHELL", "yes")])).is_err());
    assert!(check_command_line(&line(
        &["worker"],
        &[("CRONQ_SHELL", "true"), ("HOME", "/x")]
    ))
    .is_ok());
    assert!(check_command_line(&line(&["run"], &[("CRONQ_HANDLERS", "/h")])).is_err());
    assert!(check_command_line(&line(&["serve"], &[])).is_err());
}

// ---------------------------------------------------------------------------------------------
// The example handlers and the quickstart

fn handler(name: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(repo().join("examples/handlers").join(name))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("run examples/handlers/{name}: {e}"))
}

#[test]
fn example_handlers_write_a_line_once_per_dispatch_sleep_and_fail_as_described() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("lines.txt");
    let file_s = file.to_string_lossy().into_owned();
    let env = |id: &'static str| {
        vec![
            ("WRITE_LINE_FILE", file_s.clone()),
            ("CRONQ_DISPATCH_ID", id.to_string()),
            ("CRONQ_ATTEMPT", "1".to_string()),
        ]
    };
    let run_write = |id: &'static str| {
        let e = env(id);
        let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        handler("write-line", &["hello", "there"], &e)
    };
    let first = run_write("say-hello@2026-11-30T10:00:00Z");
    assert!(first.status.success(), "{first:?}");
    let again = run_write("say-hello@2026-11-30T10:00:00Z");
    assert!(again.status.success(), "{again:?}");
    assert!(String::from_utf8_lossy(&again.stdout).starts_with("already written"));
    let next = run_write("say-hello@2026-11-30T10:01:00Z");
    assert!(next.status.success());
    let lines: Vec<String> = read(&file).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "one line per dispatch: {lines:?}");
    assert!(lines[0].contains(" say-hello@2026-11-30T10:00:00Z attempt=1 hello there"));
    assert!(lines[1].contains(" say-hello@2026-11-30T10:01:00Z "));
    assert!(String::from_utf8_lossy(&first.stdout).contains(&lines[0]));

    let started = Instant::now();
    let slept = handler("sleep", &["1"], &[]);
    assert!(slept.status.success());
    assert!(started.elapsed() >= Duration::from_secs(1), "it sleeps");
    assert!(String::from_utf8_lossy(&slept.stdout).contains("slept 1s"));
    for bad in ["x", "-1", "601"] {
        let out = handler("sleep", &[bad], &[]);
        assert_eq!(out.status.code(), Some(2), "sleep {bad}");
        assert!(!out.stderr.is_empty(), "sleep {bad} says why");
    }

    let failed = handler(
        "fail",
        &[],
        &[("CRONQ_ATTEMPT", "2"), ("CRONQ_DISPATCH_ID", "f@t")],
    );
    assert_eq!(failed.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&failed.stderr).contains("attempt 2 of f@t"));
    assert_eq!(handler("fail", &["3"], &[]).status.code(), Some(3));
}

/// scripts/quickstart.sh against a test broker, with the debug binary, free --http ports (through
/// CRONQ_HTTP, which the script sets per process) and a drill clock so minutes pass in seconds.
struct Quickstart {
    child: Child,
    dir: tempfile::TempDir,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    dispatcher_http: String,
    worker_http: String,
    _broker: Broker,
}

fn free_addr() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr").to_string();
    (l, addr)
}

impl Quickstart {
    fn start() -> Quickstart {
        let broker = Broker::start();
        let dir = tempfile::tempdir().expect("temp dir");
        let (l1, dispatcher_http) = free_addr();
        let (l2, worker_http) = free_addr();
        let (l3, monitor_http) = free_addr();
        drop((l1, l2, l3));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        let mut child = Command::new("bash")
            .arg(repo().join("scripts/quickstart.sh"))
            .env(
                "QUICKSTART_BIN",
                std::fs::canonicalize(CRONQ).expect("cronq"),
            )
            .env("QUICKSTART_DIR", dir.path())
            .env("QUICKSTART_DISPATCHER_HTTP", &dispatcher_http)
            .env("QUICKSTART_WORKER_HTTP", &worker_http)
            .env("QUICKSTART_MONITOR_HTTP", &monitor_http)
            .env("CRONQ_BROKERS", broker.address())
            .env("CRONQ_DRILL_CLOCK", format!("20x@{now}"))
            .env_remove("CRONQ_HTTP")
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.path().join("script.err")).expect("log"))
            // Its own process group: the test checks that nothing of it is left afterwards.
            .process_group(0)
            .spawn()
            .expect("start scripts/quickstart.sh");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Quickstart {
            child,
            dir,
            lines,
            seen: Vec::new(),
            dispatcher_http,
            worker_http,
            _broker: broker,
        }
    }

    fn logs(&self) -> String {
        ["script.err", "dispatcher.log", "worker.log", "monitor.log"]
            .iter()
            .map(|f| {
                let text = std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(15).collect();
                format!(
                    "--- {f} (last lines)\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Reads the script's stdout until `done` holds for everything seen so far.
    fn wait_for(&mut self, what: &str, timeout: Duration, done: impl Fn(&[String]) -> bool) {
        let deadline = Instant::now() + timeout;
        while !done(&self.seen) {
            match self.lines.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!(
                        "the quickstart ended before {what}:\n{}\n{}",
                        self.seen.join("\n"),
                        self.logs()
                    )
                }
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {timeout:?}; stdout:\n{}\n{}",
                self.seen.join("\n"),
                self.logs()
            );
        }
    }

    /// SIGTERM to the script (as Ctrl-C or a kill would): it must stop everything it started.
    fn stop(mut self) {
        let pid = self.child.id() as i32;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("signal the quickstart");
        // The worker lets a running job (`sleep 20`) finish within its 30 s grace.
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().expect("try_wait").is_none() {
            assert!(
                Instant::now() < deadline,
                "the quickstart did not stop:\n{}",
                self.logs()
            );
            pause();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let left = live_members_of_group(pid);
            if left.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "left running after the quickstart stopped: {left:?}"
            );
            pause();
        }
    }
}

impl Drop for Quickstart {
    fn drop(&mut self) {
        // A failed test still leaves nothing behind.
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// Processes of process group `pgid` that are not zombies: `(pid, command)`.
fn live_members_of_group(pgid: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp …; comm may hold spaces, so split after the last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields.len() > 2 && fields[2] == pgid.to_string() && fields[0] != "Z" {
            out.push((
                pid,
                head.split_once('(')
                    .map(|(_, c)| c.to_string())
                    .unwrap_or_default(),
            ));
        }
    }
    out
}

#[test]
fn quickstart_shows_results_and_a_dead_letter_and_stops_everything_it_started() {
    let mut qs = Quickstart::start();
    let has = |lines: &[String], prefix: &str, parts: &[&str]| {
        lines
            .iter()
            .any(|l| l.starts_with(prefix) && parts.iter().all(|p| l.contains(p)))
    };
    qs.wait_for(
        "the three jobs' outcomes",
        Duration::from_secs(150),
        |lines| {
            has(
                lines,
                "result  say-hello",
                &["attempt 1", "succeeded", "exit 0", "wrote to"],
            ) && has(
                lines,
                "result  always-fails",
                &["attempt 3", "failed", "exit 3"],
            ) && has(
                lines,
                "DLQ     always-fails",
                &["attempts_exhausted after attempt 3"],
            ) && has(lines, "result  take-a-nap", &["succeeded", "slept 20s"])
        },
    );
    let out = qs.seen.join("\n");
    assert!(out.contains("==> dispatcher status page: http://"), "{out}");
    assert!(out.contains("==> worker status page: http://"), "{out}");
    assert!(out.contains("==> monitor status page: http://"), "{out}");
    // The monitor it started keeps the history: the dead-lettered job's run is `failed` there.
    let db = qs.dir.path().join("monitor.db");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = Command::new(CRONQ)
            .args(["runs", "--status", "failed", "--json", "--db"])
            .arg(&db)
            .output()
            .expect("cronq runs");
        let runs = String::from_utf8_lossy(&runs.stdout).to_string();
        if runs.contains("\"always-fails\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the monitor has no failed run of always-fails: {runs}\n{}",
            qs.logs()
        );
        pause();
    }
    // write-line wrote one line per dispatch it ran, each dispatch of say-hello.
    let written = read(&qs.dir.path().join("lines.txt"));
    let ids: Vec<&str> = written
        .lines()
        .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
        .collect();
    let unique: BTreeSet<&&str> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "a dispatch written twice:\n{written}"
    );
    assert!(
        ids.iter().all(|id| id.starts_with("say-hello@")),
        "{written}"
    );
    for l in qs
        .seen
        .iter()
        .filter(|l| l.starts_with("result  say-hello") && l.contains("succeeded"))
    {
        let slot = l.split_whitespace().nth(2).unwrap_or("");
        assert!(
            written.contains(&format!("say-hello@{slot} ")),
            "{slot} not in\n{written}"
        );
    }
    qs.stop();
}

// ---------------------------------------------------------------------------------------------
// Kubernetes, topic mode: deploy/kubernetes/topic-mode/ (the schedule in Kafka)

fn topic_mode_docs() -> Vec<(PathBuf, Value)> {
    yaml_docs_in("deploy/kubernetes/topic-mode")
}

#[test]
fn the_topic_mode_manifests_hold_no_schedule_and_apply_it_from_a_job() {
    let docs = topic_mode_docs();
    assert_kubernetes_valid(&docs, &[]);
    assert!(
        docs.iter().all(|(_, d)| kind_of(d) != "ConfigMap"),
        "the topic mode keeps no schedule in a ConfigMap"
    );
    // The settings both read: the cronq-kafka ConfigMap of ../config.yaml.
    let kafka: Vec<(String, Option<String>)> = kube_docs()
        .iter()
        .find(|(_, d)| kind_of(d) == "ConfigMap" && name_of(d) == "cronq-kafka")
        .map(|(_, d)| labels(get(d, &["data"])))
        .expect("cronq-kafka in deploy/kubernetes/config.yaml")
        .into_iter()
        .map(|(k, v)| (k, Some(v)))
        .collect();
    let mut roles = BTreeSet::new();
    for (file, doc) in &docs {
        let pod = match kind_of(doc).as_str() {
            "Deployment" | "Job" => get(doc, &["spec", "template", "spec"]),
            _ => continue,
        };
        let c = &get(pod, &["containers"]).as_sequence().expect("containers")[0];
        let args = strings(get(c, &["args"]));
        let line = CommandLine {
            origin: format!("{}: {}", relative(file), name_of(doc)),
            args: args.clone(),
            env: kafka.clone(),
        };
        check_command_line(&line).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            get(pod, &["securityContext", "runAsNonRoot"]),
            &Value::Bool(true)
        );
        match (kind_of(doc).as_str(), args[0].as_str()) {
            ("Deployment", "run") => {
                assert!(args.iter().any(|a| a == "--schedule-topic"), "{args:?}");
                assert!(flag_value(&args, "--schedule").is_none(), "{args:?}");
                assert!(pod.get("volumes").is_none(), "no schedule volume");
            }
            ("Job", "apply") => {
                // The file it applies is the example schedule the image carries, and valid.
                assert_eq!(args[1], image_path_of("examples/schedule.json"));
                let out = Command::new(CRONQ)
                    .arg("validate")
                    .arg(repo().join("examples/schedule.json"))
                    .output()
                    .expect("validate");
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            (kind, cmd) => panic!("{}: a {kind} runs `cronq {cmd}`", relative(file)),
        }
        roles.insert(args[0].clone());
    }
    assert_eq!(
        roles,
        BTreeSet::from(["apply".to_string(), "run".to_string()])
    );
}

// ---------------------------------------------------------------------------------------------
// The monitor (issue 22): systemd, Kubernetes, compose

/// Where `cronq monitor --db` keeps its database in every deployment file.
const MONITOR_DB: &str = "/var/lib/cronq-monitor/monitor.db";

#[test]
fn the_monitor_unit_keeps_its_database_in_its_state_directory() {
    let unit = repo().join("deploy/systemd/cronq-monitor.service");
    let settings = service_settings(&unit);
    let value = |key: &str| {
        settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("cronq-monitor.service: no {key}="))
    };
    assert_eq!(value("StateDirectory"), "cronq-monitor");
    let exec = shell_words::split(&value("ExecStart")).expect("ExecStart words");
    assert_eq!(exec[..2], ["/usr/local/bin/cronq", "monitor"]);
    // StateDirectory=cronq-monitor is /var/lib/cronq-monitor, the only place it may write.
    assert_eq!(
        flag_value(&exec, "--db").as_deref(),
        Some(MONITOR_DB),
        "{exec:?}"
    );
    let http = flag_value(&exec, "--http").expect("--http");
    assert!(http.starts_with("127.0.0.1:"), "{http}");
    assert!(
        !read(&unit).contains("LoadCredential=") || read(&unit).contains("#   LoadCredential="),
        "the webhook secret is the operator's drop-in, not the shipped unit"
    );
}

#[test]
fn the_monitor_runs_as_one_statefulset_with_its_database_on_its_claim() {
    let docs = kube_docs();
    let set = docs
        .iter()
        .map(|(_, d)| d)
        .find(|d| kind_of(d) == "StatefulSet" && name_of(d) == "cronq-monitor")
        .expect("a StatefulSet cronq-monitor in deploy/kubernetes/");
    assert_eq!(
        get(set, &["spec", "replicas"]).as_u64(),
        Some(1),
        "one writer of the database"
    );
    let pod_labels = labels(get(set, &["spec", "template", "metadata", "labels"]));
    assert!(selects(
        &labels(get(set, &["spec", "selector", "matchLabels"])),
        &pod_labels
    ));
    let pod = get(set, &["spec", "template", "spec"]);
    let security = get(pod, &["securityContext"]);
    assert_eq!(get(security, &["runAsNonRoot"]), &Value::Bool(true));
    let uid = get(security, &["runAsUser"]).as_u64().expect("runAsUser");
    assert_eq!(
        get(security, &["fsGroup"]).as_u64(),
        Some(uid),
        "the claim is writable by the monitor's user"
    );
    let c = &get(pod, &["containers"]).as_sequence().expect("containers")[0];
    let sc = get(c, &["securityContext"]);
    assert_eq!(get(sc, &["readOnlyRootFilesystem"]), &Value::Bool(true));
    assert_eq!(get(sc, &["allowPrivilegeEscalation"]), &Value::Bool(false));
    let args = strings(get(c, &["args"]));
    assert_eq!(args[0], "monitor");
    // --db on the claim's mount.
    let db = flag_value(&args, "--db").expect("--db");
    assert_eq!(db, MONITOR_DB);
    let mounts = get(c, &["volumeMounts"]).as_sequence().expect("mounts");
    let mount_of = |path: &str| {
        mounts
            .iter()
            .filter(|m| path.starts_with(&format!("{}/", scalar(get(m, &["mountPath"])))))
            .map(|m| scalar(get(m, &["name"])))
            .next()
            .unwrap_or_else(|| panic!("nothing mounted above {path}"))
    };
    let claims: Vec<String> = get(set, &["spec", "volumeClaimTemplates"])
        .as_sequence()
        .expect("volumeClaimTemplates")
        .iter()
        .map(name_of)
        .collect();
    assert!(
        claims.contains(&mount_of(&db)),
        "--db {db} is not on a claim {claims:?}"
    );
    // The webhook secret file: a Secret's key, mounted read-only.
    let secret_file = flag_value(&args, "--webhook-secret-file").expect("--webhook-secret-file");
    let volume_name = mount_of(&secret_file);
    let volume = get(pod, &["volumes"])
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| scalar(get(v, &["name"])) == volume_name)
        .expect("the secret's volume");
    assert!(volume.get("secret").is_some(), "{volume:?}");
    let url = flag_value(&args, "--webhook").expect("--webhook");
    assert!(
        url.starts_with("http://"),
        "{url}: the notifier speaks http:// only"
    );
    // --http, the container port, the probes and the Service agree.
    let http = flag_value(&args, "--http").expect("--http");
    assert!(http.starts_with("0.0.0.0:"), "{http}");
    let port = port_of(&http);
    let named_http = get(c, &["ports"])
        .as_sequence()
        .expect("ports")
        .iter()
        .find(|p| p.get("name").map(scalar).as_deref() == Some("http"))
        .expect("a container port named http");
    assert_eq!(
        get(named_http, &["containerPort"]).as_u64(),
        Some(u64::from(port))
    );
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(scalar(get(c, &[probe, "httpGet", "path"])), path);
        assert_eq!(scalar(get(c, &[probe, "httpGet", "port"])), "http");
    }
    let service_name = scalar(get(set, &["spec", "serviceName"]));
    let service = docs
        .iter()
        .map(|(_, d)| d)
        .find(|d| kind_of(d) == "Service" && name_of(d) == service_name)
        .unwrap_or_else(|| panic!("no Service {service_name} (the StatefulSet's serviceName)"));
    assert!(selects(
        &labels(get(service, &["spec", "selector"])),
        &pod_labels
    ));
    let p = &get(service, &["spec", "ports"])
        .as_sequence()
        .expect("ports")[0];
    assert_eq!(
        (scalar(get(p, &["name"])), scalar(get(p, &["targetPort"]))),
        ("http".to_string(), "http".to_string())
    );
    assert_eq!(get(p, &["port"]).as_u64(), Some(u64::from(port)));
}

#[test]
fn compose_runs_one_monitor_with_its_database_on_a_named_volume() {
    let compose = compose();
    let monitors: Vec<_> = cronq_services(&compose)
        .into_iter()
        .filter(|(_, c, _)| c[0] == "monitor")
        .collect();
    assert_eq!(monitors.len(), 1, "one `cronq monitor` service");
    let (name, command, service) = &monitors[0];
    assert_eq!(flag_value(command, "--db").as_deref(), Some(MONITOR_DB));
    let volume = strings(get(service, &["volumes"]))
        .into_iter()
        .find(|v| v.ends_with(":/var/lib/cronq-monitor"))
        .unwrap_or_else(|| panic!("{name}: nothing mounted at /var/lib/cronq-monitor"));
    let (source, _) = volume.split_once(':').expect("SOURCE:TARGET");
    assert!(
        get(&compose, &["volumes"]).get(source).is_some(),
        "{name}: {source} is not a named volume of the compose file"
    );
    // The image creates the directory owned by its user: a new named volume copies that.
    let runs = dockerfile()
        .into_iter()
        .filter(|(i, _)| i == "RUN")
        .map(|(_, r)| r)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        runs.contains("install -d -o 10001 -g 10001 -m 0700 /var/lib/cronq-monitor"),
        "the Dockerfile makes /var/lib/cronq-monitor for the image's user"
    );
    let brokers = flag_value(command, "--brokers").expect("--brokers");
    let names: BTreeSet<String> = services(&compose).into_iter().map(|(n, _)| n).collect();
    for host in brokers.split(',') {
        let host = host.split(':').next().unwrap_or("");
        assert!(names.contains(host), "{name}: broker {host} is no service");
    }
}

// ---------------------------------------------------------------------------------------------
// Prometheus alerting rules: deploy/prometheus/

/// The metrics the monitor exports (issue 22), beside those of issue 11 ([`METRICS`]).
const MONITOR_METRICS: &[&str] = &[
    "cronq_monitor_runs_total",
    "cronq_monitor_missed_total",
    "cronq_monitor_late_total",
    "cronq_monitor_ingest_lag_records",
    "cronq_monitor_alerts_sent_total",
    "cronq_monitor_alerts_failed_total",
    "cronq_monitor_alert_attempts_failed_total",
    "cronq_monitor_alerts_pending",
    "cronq_monitor_alerts_suppressed_total",
];

fn promtool() -> &'static str {
    let found = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "promtool is missing: run scripts/deploy_tools.sh (installs Debian's prometheus package)"
    );
    "promtool"
}

fn run_promtool(args: &[&str]) {
    let out = Command::new(promtool())
        .args(args)
        .current_dir(repo().join("deploy/prometheus"))
        .output()
        .expect("run promtool");
    assert!(
        out.status.success(),
        "promtool {}:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_alerting_rules_pass_promtool_check_and_their_unit_tests() {
    run_promtool(&["check", "rules", "cronq-rules.yaml"]);
    // Fires CronqDispatcherDown, CronqNoDispatcher, CronqShardsUnowned, CronqRunsMissed,
    // CronqAlertsUndelivered and CronqAlertsPendingHigh, and checks quiet ones stay quiet.
    run_promtool(&["test", "rules", "cronq-rules.test.yaml"]);
}

#[test]
fn every_alerting_rule_reads_real_metrics_waits_and_says_how_bad_and_why() {
    let rules = yaml(&repo().join("deploy/prometheus/cronq-rules.yaml"));
    // The dispatcher's and the worker's metrics: the tables of docs/operations.md ("Metrics").
    let documented: BTreeSet<String> = read(&repo().join("docs/operations.md"))
        .lines()
        .filter_map(|l| l.strip_prefix("| `cronq_"))
        .filter_map(|rest| rest.split('`').next())
        .map(|name| format!("cronq_{name}"))
        .collect();
    assert!(documented.len() > 20, "{documented:?}");
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    let mut groups = BTreeSet::new();
    for group in get(&rules, &["groups"]).as_sequence().expect("groups") {
        groups.insert(scalar(get(group, &["name"])));
        for rule in get(group, &["rules"]).as_sequence().expect("rules") {
            let name = scalar(get(rule, &["alert"]));
            if !names.insert(name.clone()) {
                problems.push(format!("{name}: defined twice"));
            }
            let expr = scalar(get(rule, &["expr"]));
            if rule.get("for").is_none() {
                problems.push(format!("{name}: no `for:`"));
            }
            let severity = rule
                .get("labels")
                .and_then(|l| l.get("severity"))
                .map(scalar);
            if !matches!(severity.as_deref(), Some("critical" | "warning" | "info")) {
                problems.push(format!("{name}: severity {severity:?}"));
            }
            for key in ["summary", "description"] {
                if rule.get("annotations").and_then(|a| a.get(key)).is_none() {
                    problems.push(format!("{name}: no {key} annotation"));
                }
            }
            for series in series_in(&expr) {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| series.strip_suffix(s))
                    .unwrap_or(&series);
                let known = documented.contains(base)
                    || documented.contains(series.as_str())
                    || MONITOR_METRICS.contains(&series.as_str());
                if !known {
                    problems.push(format!("{name}: `{series}` is no metric cronq exports"));
                }
            }
            for label in labels_in(&expr) {
                if !LABELS.contains(&label.as_str()) {
                    problems.push(format!("{name}: label `{label}` is not a bounded one"));
                }
            }
        }
    }
    assert_eq!(
        groups,
        BTreeSet::from([
            "cronq-dispatcher".to_string(),
            "cronq-worker".to_string(),
            "cronq-monitor".to_string()
        ])
    );
    // The scrape jobs the rules' `up{job=~…}` name are those of docker/prometheus.yml.
    let scrape: BTreeSet<String> = get(
        &yaml(&repo().join("docker/prometheus.yml")),
        &["scrape_configs"],
    )
    .as_sequence()
    .expect("scrape_configs")
    .iter()
    .map(|j| scalar(get(j, &["job_name"])))
    .collect();
    for job in ["cronq-dispatcher", "cronq-worker", "cronq-monitor"] {
        assert!(
            scrape.contains(job),
            "docker/prometheus.yml scrapes no {job}"
        );
    }
    let loaded = strings(get(
        &yaml(&repo().join("docker/prometheus.yml")),
        &["rule_files"],
    ));
    assert_eq!(loaded, ["/etc/prometheus/rules/cronq-rules.yaml"]);
    let prometheus = services(&compose())
        .into_iter()
        .find(|(_, s)| scalar(get(s, &["image"])).starts_with("prom/prometheus:"))
        .map(|(_, s)| s)
        .expect("prometheus");
    assert!(
        bind_mounts(&prometheus)
            .iter()
            .any(|(host, dst)| dst == "/etc/prometheus/rules"
                && host.join("cronq-rules.yaml").is_file()),
        "compose's prometheus mounts deploy/prometheus at /etc/prometheus/rules"
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
