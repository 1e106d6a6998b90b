//! Secure connections, failure isolation and outage logging of the Kafka layer, against a real
//! broker (tansu) and the real `cronq` binary, read back with rdkafka (a client we did not write).
//!
//! tansu 0.6 accepts `--cert/--key` but does not wrap its connections in TLS, so TLS is tested
//! through a TLS-terminating proxy the test starts in front of the broker (the broker advertises
//! the proxy's address, so every connection of both clients goes through it). SASL is tansu's own
//! (`--authentication`): SCRAM credentials are registered with an AlterUserScramCredentials
//! request before the broker is restarted with authentication on. tansu 0.6 drops PLAIN logins of
//! either client (its PLAIN server path closes the connection), so PLAIN is pinned by the unit
//! tests of the client settings only.

mod common;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

const PARTITIONS: i32 = 3;

/// A schedule of `*/step` jobs (every `step` minutes), each on `topic` when given.
fn schedule(jobs: &[(&str, u32, Option<&str>)]) -> String {
    let entries: Vec<String> = jobs
        .iter()
        .map(|(name, step, topic)| {
            let topic = topic.map_or(String::new(), |t| format!(r#","topic":"{t}""#));
            format!(
                r#"{{"jobName":"{name}","priority":1,"job":"run {name}","cronTime":"*/{step} * * * *"{topic}}}"#
            )
        })
        .collect();
    format!(r#"{{"jobs":[{}]}}"#, entries.join(","))
}

/// The dispatch ids `*/step` fires in the hour from 2026-11-26T10:00Z.
fn hour_of(name: &str, step: u32) -> HashSet<String> {
    (0..60)
        .step_by(step as usize)
        .map(|m| format!("{name}@2026-11-26T10:{m:02}:00Z"))
        .collect()
}

const FROM: &str = "2026-11-26T10:00:00Z";
const UNTIL: &str = "2026-11-26T11:00:00Z";

/// Reads every record of `topic` (from the beginning, up to the high watermarks) with rdkafka
/// configured by `settings`; returns the dispatch ids.
fn read_ids(
    brokers: &str,
    settings: &[(&str, String)],
    topic: &str,
    timeout: Duration,
) -> Vec<String> {
    read_records(brokers, settings, topic, timeout)
        .into_iter()
        .map(|(_, id)| id)
        .collect()
}

/// As `read_ids`, with the partition each record is in.
fn read_records(
    brokers: &str,
    settings: &[(&str, String)],
    topic: &str,
    timeout: Duration,
) -> Vec<(i32, String)> {
    consume_all_with(brokers, settings, topic, PARTITIONS, 0, timeout)
        .into_iter()
        .map(|c| {
            let id = c.value["dispatchId"].as_str().unwrap_or_default();
            (c.partition, id.to_string())
        })
        .collect()
}

/// `cronq run` over the hour [FROM, UNTIL) with `args`, stderr to `log`.
fn backfill(brokers: &str, schedule: &Path, log: &Path, args: &[&str]) -> std::process::Child {
    Command::new(CRONQ)
        .env("CRONQ_HTTP", "127.0.0.1:0")
        .args([
            "run",
            "--brokers",
            brokers,
            "--from",
            FROM,
            "--until",
            UNTIL,
        ])
        .args(["--retry-backoff", "50ms"])
        .args(args)
        .arg("--schedule")
        .arg(schedule)
        // the default log filter: what an operator sees
        .env_remove("CRONQ_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("spawn cronq")
}

fn cronq_status(brokers: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(CRONQ)
        .env("CRONQ_HTTP", "127.0.0.1:0")
        .args(["status", "--brokers", brokers, "--timeout", "8s"])
        .args(args)
        .env_remove("CRONQ_LOG")
        .output()
        .expect("run cronq status");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// ---- TLS: a throwaway CA and a TLS-terminating proxy ----

struct Pki {
    dir: tempfile::TempDir,
    ca: PathBuf,
    server_chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    server_key: rustls::pki_types::PrivateKeyDer<'static>,
    ca_der: rustls::pki_types::CertificateDer<'static>,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    };
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "cronq test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();

    let server_key = KeyPair::generate().unwrap();
    let mut server_params =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    server_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server = server_params.signed_by(&server_key, &ca, &ca_key).unwrap();

    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(vec!["cronq-client".to_string()]).unwrap();
    client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let client = client_params.signed_by(&client_key, &ca, &ca_key).unwrap();

    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ca_path = write("ca.pem", ca.pem());
    let client_cert = write("client.pem", client.pem());
    let client_key_path = write("client.key", client_key.serialize_pem());
    Pki {
        ca: ca_path,
        ca_der: ca.der().clone(),
        server_chain: vec![server.der().clone()],
        server_key: rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
        client_cert,
        client_key: client_key_path,
        dir,
    }
}

/// Accepts TLS on a port of its own and forwards the plain bytes to the broker.
struct TlsProxy {
    port: u16,
    _runtime: tokio::runtime::Runtime,
}

fn tls_proxy(pki: &Pki, upstream: u16, require_client_cert: bool) -> TlsProxy {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = if require_client_cert {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(pki.ca_der.clone()).unwrap();
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder
        .with_single_cert(pki.server_chain.clone(), pki.server_key.clone_key())
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    runtime.spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let Ok(mut broker) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut broker).await;
            });
        }
    });
    TlsProxy {
        port,
        _runtime: runtime,
    }
}

#[test]
fn tls_with_a_client_certificate_dispatches_through_both_clients_and_rdkafka_reads_back() {
    let pki = pki();
    let mut broker = Broker::not_started();
    let proxy = tls_proxy(&pki, broker.port, true);
    broker.advertised_port = Some(proxy.port);
    broker.launch();
    let brokers = format!("127.0.0.1:{}", proxy.port);
    let topic = random_topic("tls");
    let (dir, path) = schedule_file(&schedule(&[("tls-a", 5, None), ("tls-b", 15, None)]));
    let log = dir.path().join("cronq.log");
    let ca = pki.ca.to_string_lossy().into_owned();
    let cert = pki.client_cert.to_string_lossy().into_owned();
    let key = pki.client_key.to_string_lossy().into_owned();
    // The topic is created by cronq's rdkafka admin client, the records produced by rskafka: both
    // over TLS with the client certificate (the proxy refuses a client without one).
    let mut child = backfill(
        &brokers,
        &path,
        &log,
        &[
            "--topic",
            &topic,
            "--security-protocol",
            "ssl",
            "--ssl-ca",
            &ca,
            "--ssl-cert",
            &cert,
            "--ssl-key",
            &key,
        ],
    );
    assert!(
        wait_exit(&mut child, Duration::from_secs(60), &log).success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let got = read_ids(
        &brokers,
        &[
            ("security.protocol", "ssl".into()),
            ("ssl.ca.location", ca.clone()),
            ("ssl.certificate.location", cert.clone()),
            ("ssl.key.location", key.clone()),
        ],
        &topic,
        Duration::from_secs(30),
    );
    let expected: HashSet<String> = hour_of("tls-a", 5)
        .union(&hour_of("tls-b", 15))
        .cloned()
        .collect();
    assert_eq!(got.len(), expected.len(), "{got:?}");
    assert_eq!(got.into_iter().collect::<HashSet<_>>(), expected);

    // The worker (rdkafka consumer group, producer and topic admin) over the same TLS: every job
    // is consumed and its result produced (`sh -c "run …"` fails: one failed result per job).
    let results = format!("{topic}.results");
    let worker_log = dir.path().join("worker.log");
    let mut worker = Command::new(CRONQ)
        .env("CRONQ_HTTP", "127.0.0.1:0")
        .args([
            "worker",
            "--brokers",
            &brokers,
            "--topic",
            &topic,
            "--shell",
        ])
        .args(["--group", &format!("w-{topic}"), "--max-attempts", "1"])
        .args([
            "--results-topic",
            &results,
            "--dlq-topic",
            &format!("{topic}.dlq"),
        ])
        .args(["--security-protocol", "ssl", "--ssl-ca", &ca])
        .args(["--ssl-cert", &cert, "--ssl-key", &key])
        .env_remove("CRONQ_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&worker_log).unwrap())
        .spawn()
        .expect("spawn cronq worker");
    let tls_settings = [
        ("security.protocol", "ssl".to_string()),
        ("ssl.ca.location", ca.clone()),
        ("ssl.certificate.location", cert.clone()),
        ("ssl.key.location", key.clone()),
    ];
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let reported: HashSet<String> =
            read_ids(&brokers, &tls_settings, &results, Duration::from_secs(10))
                .into_iter()
                .collect();
        if reported == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker reported {} of {} jobs over TLS; log:\n{}",
            reported.len(),
            expected.len(),
            std::fs::read_to_string(&worker_log).unwrap_or_default()
        );
        pause();
    }
    let _ = worker.kill();
    let _ = worker.wait();

    // Another CA does not vouch for the proxy's certificate: refused, with the reason.
    let other = pki_other_ca(&pki);
    let (code, stderr) = cronq_status(
        &brokers,
        &["--security-protocol", "ssl", "--ssl-ca", &other],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot reach Kafka"), "{stderr}");
    assert!(
        stderr.to_lowercase().contains("certificate"),
        "the TLS error is named: {stderr}"
    );
    // Plain TCP to a TLS port does not work either (so the test above really used TLS).
    let (code, stderr) = cronq_status(&brokers, &[]);
    assert_eq!(code, 1, "{stderr}");
}

/// A CA certificate unrelated to `pki`'s.
fn pki_other_ca(pki: &Pki) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let path = pki.dir.path().join("other-ca.pem");
    std::fs::write(&path, cert.pem()).unwrap();
    path.to_string_lossy().into_owned()
}

// ---- SASL: tansu --authentication with SCRAM credentials ----

fn put_varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_compact(out: &mut Vec<u8>, bytes: &[u8]) {
    put_varint(out, bytes.len() as u32 + 1);
    out.extend_from_slice(bytes);
}

/// Registers `user`'s SCRAM credential for `mechanism` (1: SHA-256, 2: SHA-512) with an
/// AlterUserScramCredentials v0 request written by hand (neither client has this admin call).
fn register_scram(port: u16, user: &str, password: &str, mechanism: i8) {
    let salt = b"cronq-test-salt-0123";
    let iterations = 4096u32;
    let mut salted = vec![0u8; if mechanism == 1 { 32 } else { 64 }];
    let algorithm = if mechanism == 1 {
        ring::pbkdf2::PBKDF2_HMAC_SHA256
    } else {
        ring::pbkdf2::PBKDF2_HMAC_SHA512
    };
    ring::pbkdf2::derive(
        algorithm,
        std::num::NonZeroU32::new(iterations).unwrap(),
        salt,
        password.as_bytes(),
        &mut salted,
    );
    let mut req = Vec::new();
    req.extend_from_slice(&51i16.to_be_bytes()); // api key: AlterUserScramCredentials
    req.extend_from_slice(&0i16.to_be_bytes()); // version 0 (flexible)
    req.extend_from_slice(&7i32.to_be_bytes()); // correlation id
    req.extend_from_slice(&5i16.to_be_bytes()); // client id
    req.extend_from_slice(b"cronq");
    put_varint(&mut req, 0); // header tags
    put_varint(&mut req, 1); // deletions: none
    put_varint(&mut req, 2); // upsertions: one
    put_compact(&mut req, user.as_bytes());
    req.push(mechanism as u8);
    req.extend_from_slice(&(iterations as i32).to_be_bytes());
    put_compact(&mut req, salt);
    put_compact(&mut req, &salted);
    put_varint(&mut req, 0); // upsertion tags
    put_varint(&mut req, 0); // body tags
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(&(req.len() as i32).to_be_bytes()).unwrap();
    stream.write_all(&req).unwrap();
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).unwrap();
    let mut resp = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut resp).unwrap();
    // correlation id (4), header tags (1), throttle (4), results count (1), user, error code
    assert_eq!(&resp[..4], &7i32.to_be_bytes());
    let user_len = resp[10] as usize - 1;
    let at = 11 + user_len;
    let code = i16::from_be_bytes([resp[at], resp[at + 1]]);
    assert_eq!(code, 0, "AlterUserScramCredentials answered error {code}");
}

/// A broker with SCRAM credentials for alice (both mechanisms) and authentication required.
fn sasl_broker(advertised_port: Option<u16>) -> Broker {
    let mut broker = Broker::not_started();
    broker.launch();
    register_scram(broker.port, "alice", "alice-secret", 1);
    register_scram(broker.port, "alice", "alice-secret", 2);
    broker.kill();
    broker.extra_args = vec!["--authentication".into()];
    broker.advertised_port = advertised_port;
    broker.launch();
    broker
}

fn password_file(dir: &Path, name: &str, password: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("{password}\n")).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn sasl_scram_dispatches_and_rdkafka_reads_back_and_a_wrong_password_is_refused() {
    let broker = sasl_broker(None);
    let brokers = broker.address();
    let (dir, path) = schedule_file(&schedule(&[("sasl-a", 10, None)]));
    let secret = password_file(dir.path(), "pw", "alice-secret");
    let wrong = password_file(dir.path(), "wrong", "not-her-password");

    for (mechanism, topic) in [
        ("scram-sha-512", random_topic("scram512")),
        ("scram-sha-256", random_topic("scram256")),
    ] {
        let log = dir.path().join(format!("cronq-{mechanism}.log"));
        let mut child = backfill(
            &brokers,
            &path,
            &log,
            &[
                "--topic",
                &topic,
                "--security-protocol",
                "sasl_plaintext",
                "--sasl-mechanism",
                mechanism,
                "--sasl-username",
                "alice",
                "--sasl-password-file",
                &secret,
            ],
        );
        assert!(
            wait_exit(&mut child, Duration::from_secs(60), &log).success(),
            "{mechanism}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        let got = read_ids(
            &brokers,
            &[
                ("security.protocol", "sasl_plaintext".into()),
                ("sasl.mechanism", "SCRAM-SHA-256".into()),
                ("sasl.username", "alice".into()),
                ("sasl.password", "alice-secret".into()),
            ],
            &topic,
            Duration::from_secs(30),
        );
        assert_eq!(
            got.into_iter().collect::<HashSet<_>>(),
            hour_of("sasl-a", 10),
            "{mechanism}"
        );
    }

    // The broker really checks: a wrong SCRAM password and no SASL at all are both refused.
    let (code, stderr) = cronq_status(
        &brokers,
        &[
            "--security-protocol",
            "sasl_plaintext",
            "--sasl-mechanism",
            "scram-sha-512",
            "--sasl-username",
            "alice",
            "--sasl-password-file",
            &wrong,
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot reach Kafka"), "{stderr}");
    let (code, stderr) = cronq_status(&brokers, &[]);
    assert_eq!(code, 1, "{stderr}");
}

#[test]
fn sasl_ssl_through_a_tls_proxy_dispatches_and_rdkafka_reads_back() {
    let pki = pki();
    let mut broker = Broker::not_started();
    let proxy = tls_proxy(&pki, broker.port, false);
    // Register the credentials on the plain port first, then require authentication behind TLS.
    broker.launch();
    register_scram(broker.port, "alice", "alice-secret", 1);
    broker.kill();
    broker.extra_args = vec!["--authentication".into()];
    broker.advertised_port = Some(proxy.port);
    broker.launch();
    let brokers = format!("127.0.0.1:{}", proxy.port);
    let topic = random_topic("saslssl");
    let (dir, path) = schedule_file(&schedule(&[("ss-a", 20, None)]));
    let secret = password_file(dir.path(), "pw", "alice-secret");
    let log = dir.path().join("cronq.log");
    let ca = pki.ca.to_string_lossy().into_owned();
    let mut child = backfill(
        &brokers,
        &path,
        &log,
        &[
            "--topic",
            &topic,
            "--security-protocol",
            "sasl_ssl",
            "--ssl-ca",
            &ca,
            "--sasl-mechanism",
            "scram-sha-256",
            "--sasl-username",
            "alice",
            "--sasl-password-file",
            &secret,
        ],
    );
    assert!(
        wait_exit(&mut child, Duration::from_secs(60), &log).success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let got = read_ids(
        &brokers,
        &[
            ("security.protocol", "sasl_ssl".into()),
            ("ssl.ca.location", ca),
            ("sasl.mechanism", "SCRAM-SHA-256".into()),
            ("sasl.username", "alice".into()),
            ("sasl.password", "alice-secret".into()),
        ],
        &topic,
        Duration::from_secs(30),
    );
    assert_eq!(got.into_iter().collect::<HashSet<_>>(), hour_of("ss-a", 20));
}

#[test]
fn inconsistent_security_flags_are_refused_at_start_naming_the_flag_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-ca.pem");
    let missing_text = missing.to_string_lossy().into_owned();
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["--security-protocol", "ssl", "--ssl-cert", "c.pem"],
            "--ssl-cert: needs --ssl-key".into(),
        ),
        (
            vec![
                "--security-protocol",
                "sasl_ssl",
                "--sasl-mechanism",
                "plain",
            ],
            "--sasl-username: --sasl-mechanism PLAIN needs a user name".into(),
        ),
        (
            vec!["--sasl-username", "alice"],
            "--sasl-username: is set but --security-protocol is plaintext".into(),
        ),
        (
            vec!["--security-protocol", "ssl", "--ssl-ca", &missing_text],
            format!("--ssl-ca: {}: cannot read it", missing.display()),
        ),
    ];
    for sub in ["run", "worker", "tail", "status"] {
        for (args, expected) in &cases {
            let out = Command::new(CRONQ)
                .env("CRONQ_HTTP", "127.0.0.1:0")
                .arg(sub)
                .args(["--brokers", "127.0.0.1:1"])
                .args(args)
                .args(if sub == "worker" {
                    vec!["--shell"]
                } else {
                    vec![]
                })
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{sub} {args:?}: {stderr}");
            assert!(
                stderr.contains(expected.as_str()),
                "{sub} {args:?}: expected {expected:?} in {stderr}"
            );
        }
    }
}

// ---- isolation: one bad topic does not stop the others ----

#[test]
fn a_missing_topic_does_not_stop_a_good_one_and_is_picked_up_once_created() {
    let broker = Broker::start();
    let good = random_topic("good");
    let bad = random_topic("missing");
    create_topic(&broker.address(), &good, PARTITIONS);
    let (dir, path) = schedule_file(&schedule(&[
        ("iso-good", 1, None),
        ("iso-bad", 5, Some(&bad)),
    ]));
    let log = dir.path().join("cronq.log");
    let mut child = backfill(
        &broker.address(),
        &path,
        &log,
        &["--topic", &good, "--no-create-topics"],
    );
    // Every job of the good topic arrives while the bad topic does not exist.
    let deadline = Instant::now() + Duration::from_secs(60);
    let expected_good = hour_of("iso-good", 1);
    loop {
        let got: HashSet<String> = read_ids(&broker.address(), &[], &good, Duration::from_secs(10))
            .into_iter()
            .collect();
        if got == expected_good {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the good topic got {} of {} while the other topic is missing; log:\n{}",
            got.len(),
            expected_good.len(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        pause();
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("topic cannot be used") && text.contains(&bad),
        "the bad topic is reported with its name:\n{text}"
    );
    assert!(
        text.contains("--no-create-topics"),
        "the report says what is wrong:\n{text}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "the replay waits for the bad topic's dispatches"
    );
    // Create it: the waiting dispatches go out and the replay finishes.
    create_topic(&broker.address(), &bad, PARTITIONS);
    assert!(
        wait_exit(&mut child, Duration::from_secs(60), &log).success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let got_bad: Vec<String> = read_ids(&broker.address(), &[], &bad, Duration::from_secs(30));
    assert_eq!(got_bad.len(), 12, "{got_bad:?}");
    assert_eq!(
        got_bad.into_iter().collect::<HashSet<_>>(),
        hour_of("iso-bad", 5)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("topic usable again"), "{text}");
}

#[test]
fn a_failing_partition_does_not_stop_the_others_and_delivers_once_it_recovers() {
    use std::sync::atomic::Ordering;
    let mut broker = Broker::not_started();
    let topic = random_topic("partfail");
    const VICTIM: i32 = 1;
    let proxy = ProduceFault::start(broker.port, &topic, Some(VICTIM), KAFKA_STORAGE_ERROR);
    broker.advertised_port = Some(proxy.port);
    broker.launch();
    let brokers = format!("127.0.0.1:{}", proxy.port);
    create_topic(&brokers, &topic, PARTITIONS);
    // 30 jobs every 5 minutes: 360 dispatches over the 3 partitions by their keys.
    let names: Vec<String> = (0..30).map(|i| format!("pf-{i:02}")).collect();
    let jobs: Vec<(&str, u32, Option<&str>)> =
        names.iter().map(|n| (n.as_str(), 5, None)).collect();
    let all: HashSet<String> = names.iter().flat_map(|n| hour_of(n, 5)).collect();
    // Kafka's default partitioner, written out here: murmur2 of the key, positive, mod partitions.
    let partition_of = |id: &str| {
        let job = id.split('@').next().unwrap_or_default();
        (murmur2::murmur2(job.as_bytes(), murmur2::KAFKA_SEED) & 0x7fff_ffff) as i32 % PARTITIONS
    };
    let (victim_ids, other_ids): (HashSet<String>, HashSet<String>) = all
        .iter()
        .cloned()
        .partition(|id| partition_of(id) == VICTIM);
    assert!(!victim_ids.is_empty() && !other_ids.is_empty());
    let (dir, path) = schedule_file(&schedule(&jobs));
    let log = dir.path().join("cronq.log");
    let mut child = backfill(
        &brokers,
        &path,
        &log,
        &["--topic", &topic, "--no-create-topics"],
    );
    // While partition VICTIM refuses every produce, the other partitions get all their dispatches.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = read_records(&brokers, &[], &topic, Duration::from_secs(10));
        assert!(
            got.iter().all(|(p, _)| *p != VICTIM),
            "a refused partition holds records: {got:?}"
        );
        let ids: HashSet<String> = got.into_iter().map(|(_, id)| id).collect();
        if ids == other_ids && proxy.refused.load(Ordering::SeqCst) >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "with partition {VICTIM} failing, the others got {} of {} (refused requests: {}); log:\n{}",
            ids.len(),
            other_ids.len(),
            proxy.refused.load(Ordering::SeqCst),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        pause();
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "the replay waits for the failing partition's dispatches"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let report = text
        .lines()
        .find(|l| l.contains("partition failing"))
        .unwrap_or_else(|| panic!("the failing partition is reported:\n{text}"));
    assert!(
        report.contains(&format!("partition={VICTIM}")) && report.contains(&topic),
        "the report names the topic and partition: {report}"
    );
    // The partition recovers: its dispatches go out, each once, and the replay finishes.
    proxy.failing.store(false, Ordering::SeqCst);
    assert!(
        wait_exit(&mut child, Duration::from_secs(60), &log).success(),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let got = read_records(&brokers, &[], &topic, Duration::from_secs(30));
    assert_eq!(got.len(), all.len(), "every dispatch once: {got:?}");
    let ids: HashSet<String> = got.iter().map(|(_, id)| id.clone()).collect();
    assert_eq!(ids, all);
    for (p, id) in &got {
        assert_eq!(*p, partition_of(id), "{id} in partition {p}");
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("partition delivering again"), "{text}");
}

// ---- outage: state changes, not a warning per retry ----

#[test]
fn a_broker_outage_is_logged_as_a_few_state_changes_not_a_warning_per_retry() {
    let mut broker = Broker::start();
    let topic = random_topic("outage");
    let names: Vec<String> = (0..200).map(|i| format!("o-{i:03}")).collect();
    let jobs: Vec<(&str, u32, Option<&str>)> =
        names.iter().map(|n| (n.as_str(), 1, None)).collect();
    let (dir, path) = schedule_file(&schedule(&jobs));
    let log = dir.path().join("cronq.log");
    // Small requests, so the hour (12 000 records) is still going when the broker dies.
    let mut child = backfill(
        &broker.address(),
        &path,
        &log,
        &[
            "--topic",
            &topic,
            "--batch-size",
            "20",
            "--producers",
            "2",
            "--queue-capacity",
            "100",
        ],
    );
    wait_for_line(
        &log,
        "slot dispatched",
        Duration::from_secs(60),
        "no progress before the outage",
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "finished before the outage"
    );
    broker.kill();
    let down_at = Instant::now();
    let outage = Duration::from_secs(20);
    while down_at.elapsed() < outage {
        assert!(
            child.try_wait().unwrap().is_none(),
            "cronq must wait for the broker"
        );
        pause();
    }
    broker.launch();
    assert!(wait_exit(&mut child, Duration::from_secs(300), &log).success());
    let text = std::fs::read_to_string(&log).unwrap();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    println!(
        "{}-second outage: {} warning/error lines:\n{}",
        outage.as_secs(),
        warnings.len(),
        warnings.join("\n")
    );
    assert!(
        warnings.len() <= 3,
        "a 20 s outage logs its state changes, not every retry ({} lines):\n{}",
        warnings.len(),
        warnings.join("\n")
    );
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("cannot reach Kafka") && l.contains(&broker.address())),
        "the outage is reported with the broker:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("Kafka reachable again") && l.contains("down_for")),
        "the recovery is reported with the outage's length:\n{text}"
    );
    assert!(
        !text.contains("Failed to connect to broker"),
        "rskafka's retry chatter stays at debug:\n{text}"
    );
    let got: HashSet<String> = read_ids(&broker.address(), &[], &topic, Duration::from_secs(120))
        .into_iter()
        .collect();
    assert_eq!(got.len(), 12_000, "nothing is lost in the outage");
}

/// The issue's scenario: a live dispatcher group member (real time, no drill clock) through a
/// broker outage of more than a minute, across a minute boundary.
#[test]
fn a_live_dispatcher_reports_a_long_outage_once_then_once_a_minute_then_its_end() {
    let mut broker = Broker::start();
    let topic = random_topic("live-outage");
    let names: Vec<String> = (0..50).map(|i| format!("l-{i:02}")).collect();
    let jobs: Vec<(&str, u32, Option<&str>)> =
        names.iter().map(|n| (n.as_str(), 1, None)).collect();
    let (dir, path) = schedule_file(&schedule(&jobs));
    let log = dir.path().join("cronq.log");
    let mut child = Command::new(CRONQ)
        .env("CRONQ_HTTP", "127.0.0.1:0")
        .args(["run", "--brokers", &broker.address(), "--topic", &topic])
        .args(["--group", &format!("g-{topic}"), "--session-timeout", "6s"])
        .arg("--schedule")
        .arg(&path)
        .env_remove("CRONQ_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn cronq run");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let wait_for = |needle: &str, timeout: Duration| {
        let deadline = Instant::now() + timeout;
        while !read().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} within {timeout:?}:\n{}",
                read()
            );
            pause();
        }
    };
    wait_for("taking over a shard", Duration::from_secs(60));
    let before = read().lines().count();
    broker.kill();
    let down_at = Instant::now();
    let outage = Duration::from_secs(70);
    while down_at.elapsed() < outage {
        assert!(
            child.try_wait().unwrap().is_none(),
            "cronq must wait for the broker"
        );
        pause();
    }
    broker.launch();
    wait_for("Kafka reachable again", Duration::from_secs(90));
    // A minute after the outage is dispatched and acked again.
    let recovered = read().lines().count();
    let deadline = Instant::now() + Duration::from_secs(90);
    while !read()
        .lines()
        .skip(recovered)
        .any(|l| l.contains("slot dispatched") && l.contains("jobs=50"))
    {
        assert!(
            Instant::now() < deadline,
            "no minute dispatched after the outage:\n{}",
            read()
        );
        pause();
    }
    let _ = nix_kill_term(&mut child);
    let text = read();
    let during: Vec<&str> = text
        .lines()
        .skip(before)
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    println!(
        "{}-second outage of a live dispatcher: {} warning/error lines:\n{}",
        outage.as_secs(),
        during.len(),
        during.join("\n")
    );
    assert_eq!(
        during
            .iter()
            .filter(|l| l.contains("cannot reach Kafka;"))
            .count(),
        1,
        "one 'down' report:\n{text}"
    );
    assert!(
        during
            .iter()
            .any(|l| l.contains("still cannot reach Kafka") && l.contains("down_for")),
        "a 'still down' report after a minute:\n{text}"
    );
    assert!(
        during.len() <= 6,
        "a 70 s outage logs its state changes, not every retry ({} lines):\n{}",
        during.len(),
        during.join("\n")
    );
    assert!(!text.contains("Failed to connect to broker"), "{text}");
}

/// SIGTERM, then wait (bounded) for the exit.
fn nix_kill_term(child: &mut std::process::Child) -> Option<std::process::ExitStatus> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        pause();
    }
    let _ = child.kill();
    None
}

// ---- authorization: a refused write waits, it is never counted as delivered ----

/// The minutes of `topic`'s records of job `job`, and how many records carried each dispatchId.
fn minutes_of(brokers: &str, topic: &str, job: &str) -> (BTreeSet<i64>, HashMap<String, u32>) {
    let mut minutes = BTreeSet::new();
    let mut copies = HashMap::new();
    for c in consume_all(brokers, topic, PARTITIONS, 0, Duration::from_secs(20)) {
        if c.value["jobName"].as_str() != Some(job) {
            continue;
        }
        let at: chrono::DateTime<chrono::Utc> = c.value["scheduledAt"]
            .as_str()
            .expect("scheduledAt")
            .parse()
            .expect("RFC 3339");
        minutes.insert(at.timestamp().div_euclid(60));
        let id = c.value["dispatchId"].as_str().unwrap_or_default();
        *copies.entry(id.to_string()).or_default() += 1;
    }
    (minutes, copies)
}

/// The cursor (drill minute) of shard 0 of the group `g-{topic}`, from `cronq status --json`.
fn shard_cursor(brokers: &str, topic: &str, drill: Drill) -> Option<i64> {
    let (_, view) = group_status(brokers, topic, drill);
    let at = view["shards"][0]["cursor"].as_str()?;
    let at: chrono::DateTime<chrono::Utc> = at.parse().ok()?;
    Some(at.timestamp().div_euclid(60))
}

/// Issue 19: the broker refuses one topic's produce requests with TOPIC_AUTHORIZATION_FAILED for
/// three (drill) minutes, then allows them again. Meanwhile the other topic's job keeps flowing,
/// and the shard's cursor never passes a slot that was not delivered; afterwards every slot of
/// the refused topic is there exactly once. The refusal is logged once, counted and on the page.
#[test]
fn a_topic_refused_for_want_of_rights_waits_and_every_slot_arrives_once_the_rights_are_back() {
    use std::sync::atomic::Ordering;
    let mut broker = Broker::not_started();
    let (free, acl) = (random_topic("free"), random_topic("acl"));
    let proxy = ProduceFault::start(broker.port, &acl, None, TOPIC_AUTHORIZATION_FAILED);
    proxy.failing.store(false, Ordering::SeqCst);
    broker.advertised_port = Some(proxy.port);
    broker.launch();
    let brokers = format!("127.0.0.1:{}", proxy.port);
    create_topic(&brokers, &free, PARTITIONS);
    create_topic(&brokers, &acl, PARTITIONS);
    let (dir, path) = schedule_file(&format!(
        r#"{{"jobs":[{{"jobName":"flow","job":"x","cronTime":"* * * * *"}},
                    {{"jobName":"acl","job":"x","cronTime":"* * * * *","topic":"{acl}"}}]}}"#
    ));
    // A drill minute lasts 6 real seconds: the 3-minute refusal takes 18 s.
    let drill = Drill::new(10);
    let mut member = Dispatcher::start(
        &brokers,
        &free,
        &path,
        drill,
        "m",
        dir.path(),
        &["--shards", "1"],
    );
    member.wait_log("taking over a shard", Duration::from_secs(60));
    let http = http_addr_in_log(&member.log, Duration::from_secs(30));
    with_logs(&[&member], || {
        // Both topics flow before the refusal.
        let deadline = Instant::now() + Duration::from_secs(60);
        while minutes_of(&brokers, &acl, "acl").0.is_empty() {
            assert!(Instant::now() < deadline, "nothing reached {acl}");
            pause();
        }
        proxy.failing.store(true, Ordering::SeqCst);
        let refused_from = drill.minute();
        let allowed_at = drill.wait_minutes(3, 30);
        let (acl_minutes, _) = minutes_of(&brokers, &acl, "acl");
        let (free_minutes, _) = minutes_of(&brokers, &free, "flow");
        // The other topic flowed through the refusal.
        for m in refused_from + 1..allowed_at {
            assert!(
                free_minutes.contains(&m),
                "flow missed minute {m} during the refusal: {free_minutes:?}"
            );
        }
        assert!(
            proxy.refused.load(Ordering::SeqCst) >= 2,
            "the refusal was retried"
        );
        // The cursor has not passed a slot that is not in the topic.
        let cursor = shard_cursor(&brokers, &free, drill).expect("a cursor");
        let first = *acl_minutes.first().unwrap();
        let missing: Vec<i64> = (first..=cursor)
            .filter(|m| !acl_minutes.contains(m))
            .collect();
        assert!(
            missing.is_empty(),
            "the cursor {cursor} passed undelivered slots {missing:?} (arrived: {acl_minutes:?})"
        );
        assert!(
            cursor < allowed_at - 1,
            "the cursor {cursor} waits for the refused slots"
        );
        // Logged once, counted, on the page.
        let log = member.log();
        assert_eq!(
            log.matches("writes refused").count(),
            1,
            "one line per state change:\n{log}"
        );
        assert!(!log.contains("dispatch dropped"), "{log}");
        let (_, metrics) = http_get(&format!("http://{http}/metrics"));
        let unauthorized = metrics
            .lines()
            .find(|l| l.contains(&acl) && l.contains("kind=\"unauthorized\""))
            .unwrap_or_else(|| panic!("no unauthorized counter for {acl}:\n{metrics}"));
        assert!(!unauthorized.ends_with(" 0"), "{unauthorized}");
        let (_, status) = http_get(&format!("http://{http}/status.json"));
        let status: serde_json::Value = serde_json::from_str(&status).unwrap();
        assert_eq!(
            status["refusedWrites"][0]["topic"],
            acl.as_str(),
            "{status}"
        );
        let (_, page) = http_get(&format!("http://{http}/"));
        assert!(page.contains("Writes refused by the broker"), "{page}");

        // The rights are back: the waiting slots go out, each once.
        proxy.failing.store(false, Ordering::SeqCst);
        wait_for_line(
            &member.log,
            "writes accepted again",
            Duration::from_secs(60),
            "the end of the refusal",
        );
        let (_, status) = http_get(&format!("http://{http}/status.json"));
        assert!(status.contains("\"refusedWrites\":[]"), "{status}");
        drill.wait_minutes(1, 40);
    });
    member.terminate();
    let cursor = shard_cursor(&brokers, &free, drill).expect("a final cursor");
    let (acl_minutes, copies) = minutes_of(&brokers, &acl, "acl");
    let first = *acl_minutes.first().unwrap();
    let missing: Vec<i64> = (first..=cursor)
        .filter(|m| !acl_minutes.contains(m))
        .collect();
    assert!(
        missing.is_empty(),
        "slots lost: {missing:?}; log:\n{}",
        member.log()
    );
    let twice: Vec<_> = copies.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "slots sent twice: {twice:?}");
    println!(
        "refused for 3 drill minutes: {} slots of {acl} from {first} to the final cursor {cursor}, each once",
        acl_minutes.len()
    );
}
