//! How cronq authenticates to Kafka and encrypts the connection: the `--security-protocol`,
//! `--sasl-*` and `--ssl-*` flags every Kafka subcommand shares, checked once at start and turned
//! into the settings of both clients (rskafka: rustls + its SASL config; rdkafka: librdkafka
//! properties).
//!
//! ```text
//!  SecurityArgs (flags / CRONQ_* env) ──► Security::resolve ──► Security (files read and parsed)
//!                                          (clear error naming        ├─► rustls ClientConfig + SaslConfig (rskafka)
//!                                           the flag and the file)    └─► security.protocol, sasl.*, ssl.* (rdkafka)
//! ```
//!
//! The SASL password comes from a file, never from a flag, so it does not show in `ps`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// `--security-protocol`: Kafka's names for the four ways to talk to a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SecurityProtocol {
    /// No TLS, no authentication.
    #[default]
    Plaintext,
    /// TLS (with a client certificate when --ssl-cert/--ssl-key are given).
    Ssl,
    /// SASL authentication over plain TCP.
    #[value(name = "sasl_plaintext", alias = "sasl-plaintext")]
    SaslPlaintext,
    /// SASL authentication over TLS.
    #[value(name = "sasl_ssl", alias = "sasl-ssl")]
    SaslSsl,
}

impl SecurityProtocol {
    /// The connection is TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// The client authenticates with SASL.
    pub fn sasl(self) -> bool {
        matches!(
            self,
            SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl
        )
    }

    /// librdkafka's `security.protocol` value.
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "plaintext",
            SecurityProtocol::Ssl => "ssl",
            SecurityProtocol::SaslPlaintext => "sasl_plaintext",
            SecurityProtocol::SaslSsl => "sasl_ssl",
        }
    }
}

/// `--sasl-mechanism`
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SaslMechanism {
    /// PLAIN: the password travels as is (use it with sasl_ssl).
    Plain,
    /// SCRAM-SHA-256
    #[value(name = "scram-sha-256")]
    ScramSha256,
    /// SCRAM-SHA-512
    #[value(name = "scram-sha-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The mechanism's name on the wire (librdkafka's `sasl.mechanism`).
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// The security flags of every subcommand that talks to Kafka (`run`, `worker`, `tail`, `status`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecurityArgs {
    /// How to talk to the brokers: plaintext, ssl (TLS), sasl_plaintext or sasl_ssl.
    #[arg(long, env = "CRONQ_SECURITY_PROTOCOL", value_enum, default_value_t = SecurityProtocol::Plaintext)]
    pub security_protocol: SecurityProtocol,
    /// SASL mechanism (with --security-protocol sasl_plaintext or sasl_ssl).
    #[arg(long, env = "CRONQ_SASL_MECHANISM", value_enum)]
    pub sasl_mechanism: Option<SaslMechanism>,
    /// SASL user name.
    #[arg(long, env = "CRONQ_SASL_USERNAME")]
    pub sasl_username: Option<String>,
    /// File holding the SASL password (one line; a trailing newline is ignored).
    #[arg(long, env = "CRONQ_SASL_PASSWORD_FILE")]
    pub sasl_password_file: Option<PathBuf>,
    /// PEM file of the CA certificates that sign the brokers' certificates (default: the system's).
    #[arg(long, env = "CRONQ_SSL_CA")]
    pub ssl_ca: Option<PathBuf>,
    /// PEM file of this client's certificate (mutual TLS; needs --ssl-key).
    #[arg(long, env = "CRONQ_SSL_CERT")]
    pub ssl_cert: Option<PathBuf>,
    /// PEM file of this client's private key (needs --ssl-cert).
    #[arg(long, env = "CRONQ_SSL_KEY")]
    pub ssl_key: Option<PathBuf>,
}

/// Why the security flags cannot be used. Each names the flag, and the file where there is one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecurityError {
    /// A flag that needs another one, or does not fit the protocol.
    #[error("{flag}: {reason}")]
    Flag {
        /// The flag.
        flag: &'static str,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A file named by a flag cannot be read or is not what the flag needs.
    #[error("{flag} {}: {reason}", path.display())]
    File {
        /// The flag.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// SASL credentials, read from their files.
#[derive(Clone)]
pub struct Sasl {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// User name.
    pub username: String,
    password: String,
}

impl std::fmt::Debug for Sasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// TLS settings: the files as given (librdkafka reads them itself) and their parsed contents
/// (for rustls).
#[derive(Debug, Clone)]
pub struct Tls {
    /// `--ssl-ca`: the file and its certificates.
    pub ca: Option<(PathBuf, Vec<CertificateDer<'static>>)>,
    /// `--ssl-cert` and `--ssl-key`: the files and their contents.
    pub client: Option<ClientIdentity>,
}

/// A client certificate chain and its key.
#[derive(Debug)]
pub struct ClientIdentity {
    /// `--ssl-cert`
    pub cert_path: PathBuf,
    /// `--ssl-key`
    pub key_path: PathBuf,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for ClientIdentity {
    fn clone(&self) -> Self {
        ClientIdentity {
            cert_path: self.cert_path.clone(),
            key_path: self.key_path.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

/// Checked security settings, ready for either client.
#[derive(Debug, Clone, Default)]
pub struct Security {
    /// The protocol.
    pub protocol: SecurityProtocol,
    /// With sasl_*.
    pub sasl: Option<Sasl>,
    /// With ssl and sasl_ssl.
    pub tls: Option<Tls>,
}

fn flag_error(flag: &'static str, reason: impl Into<String>) -> SecurityError {
    SecurityError::Flag {
        flag,
        reason: reason.into(),
    }
}

fn read_file(flag: &'static str, path: &Path) -> Result<Vec<u8>, SecurityError> {
    std::fs::read(path).map_err(|e| SecurityError::File {
        flag,
        path: path.to_path_buf(),
        reason: format!("cannot read it: {e}"),
    })
}

fn certificates(
    flag: &'static str,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, SecurityError> {
    let bytes = read_file(flag, path)?;
    let bad = |reason: String| SecurityError::File {
        flag,
        path: path.to_path_buf(),
        reason,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("not a PEM file: {e}")))?;
    if certs.is_empty() {
        return Err(bad(
            "holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)".into(),
        ));
    }
    Ok(certs)
}

impl Security {
    /// Checks the flags for consistency and reads every file they name.
    pub fn resolve(args: &SecurityArgs) -> Result<Security, SecurityError> {
        let protocol = args.security_protocol;
        let sasl = if protocol.sasl() {
            let mechanism = args.sasl_mechanism.ok_or_else(|| {
                flag_error(
                    "--sasl-mechanism",
                    format!(
                        "--security-protocol {} needs a mechanism: plain, scram-sha-256 or scram-sha-512",
                        protocol.as_str()
                    ),
                )
            })?;
            let username = args.sasl_username.clone().ok_or_else(|| {
                flag_error(
                    "--sasl-username",
                    format!("--sasl-mechanism {} needs a user name", mechanism.as_str()),
                )
            })?;
            if username.is_empty() {
                return Err(flag_error("--sasl-username", "is empty"));
            }
            let path = args.sasl_password_file.as_deref().ok_or_else(|| {
                flag_error(
                    "--sasl-password-file",
                    format!(
                        "--sasl-mechanism {} needs a file holding the password",
                        mechanism.as_str()
                    ),
                )
            })?;
            let bytes = read_file("--sasl-password-file", path)?;
            let text = String::from_utf8(bytes).map_err(|_| SecurityError::File {
                flag: "--sasl-password-file",
                path: path.to_path_buf(),
                reason: "is not UTF-8 text".into(),
            })?;
            let password = text.strip_suffix('\n').unwrap_or(&text);
            let password = password.strip_suffix('\r').unwrap_or(password).to_string();
            if password.is_empty() {
                return Err(SecurityError::File {
                    flag: "--sasl-password-file",
                    path: path.to_path_buf(),
                    reason: "is empty".into(),
                });
            }
            Some(Sasl {
                mechanism,
                username,
                password,
            })
        } else {
            let given = [
                ("--sasl-mechanism", args.sasl_mechanism.is_some()),
                ("--sasl-username", args.sasl_username.is_some()),
                ("--sasl-password-file", args.sasl_password_file.is_some()),
            ];
            if let Some((flag, _)) = given.iter().find(|(_, set)| *set) {
                return Err(flag_error(
                    flag,
                    format!(
                        "is set but --security-protocol is {}; use sasl_plaintext or sasl_ssl",
                        protocol.as_str()
                    ),
                ));
            }
            None
        };
        let tls = if protocol.tls() {
            let ca = match &args.ssl_ca {
                Some(path) => Some((path.clone(), certificates("--ssl-ca", path)?)),
                None => None,
            };
            let client = match (&args.ssl_cert, &args.ssl_key) {
                (Some(cert_path), Some(key_path)) => {
                    let chain = certificates("--ssl-cert", cert_path)?;
                    let key_bytes = read_file("--ssl-key", key_path)?;
                    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| {
                        SecurityError::File {
                            flag: "--ssl-key",
                            path: key_path.clone(),
                            reason: format!("holds no PEM private key: {e}"),
                        }
                    })?;
                    Some(ClientIdentity {
                        cert_path: cert_path.clone(),
                        key_path: key_path.clone(),
                        chain,
                        key,
                    })
                }
                (Some(_), None) => {
                    return Err(flag_error(
                        "--ssl-cert",
                        "needs --ssl-key (the private key of the client certificate)",
                    ))
                }
                (None, Some(_)) => {
                    return Err(flag_error(
                        "--ssl-key",
                        "needs --ssl-cert (the client certificate of the key)",
                    ))
                }
                (None, None) => None,
            };
            Some(Tls { ca, client })
        } else {
            let given = [
                ("--ssl-ca", args.ssl_ca.is_some()),
                ("--ssl-cert", args.ssl_cert.is_some()),
                ("--ssl-key", args.ssl_key.is_some()),
            ];
            if let Some((flag, _)) = given.iter().find(|(_, set)| *set) {
                return Err(flag_error(
                    flag,
                    format!(
                        "is set but --security-protocol is {}; use ssl or sasl_ssl",
                        protocol.as_str()
                    ),
                ));
            }
            None
        };
        let security = Security {
            protocol,
            sasl,
            tls,
        };
        // A CA, certificate or key rustls refuses is a start-up error too, not a connect loop.
        security.rustls_config()?;
        Ok(security)
    }

    /// The rustls configuration of the rskafka client (`None` without TLS).
    pub fn rustls_config(&self) -> Result<Option<Arc<rustls::ClientConfig>>, SecurityError> {
        let Some(tls) = &self.tls else {
            return Ok(None);
        };
        let mut roots = rustls::RootCertStore::empty();
        match &tls.ca {
            Some((path, certs)) => {
                for cert in certs {
                    roots.add(cert.clone()).map_err(|e| SecurityError::File {
                        flag: "--ssl-ca",
                        path: path.clone(),
                        reason: format!("not a usable CA certificate: {e}"),
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                for cert in found.certs {
                    // One odd system certificate must not make the others unusable.
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err(flag_error(
                        "--ssl-ca",
                        "no CA certificates found on this system; name a PEM file of the CA that signs the brokers' certificates",
                    ));
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| flag_error("--security-protocol", format!("TLS setup: {e}")))?
            .with_root_certificates(roots);
        let config = match &tls.client {
            Some(id) => builder
                .with_client_auth_cert(id.chain.clone(), id.key.clone_key())
                .map_err(|e| SecurityError::File {
                    flag: "--ssl-key",
                    path: id.key_path.clone(),
                    reason: format!("does not fit --ssl-cert {}: {e}", id.cert_path.display()),
                })?,
            None => builder.with_no_client_auth(),
        };
        Ok(Some(Arc::new(config)))
    }

    /// The SASL configuration of the rskafka client.
    pub fn rskafka_sasl(&self) -> Option<rskafka::client::SaslConfig> {
        use rskafka::client::{Credentials, SaslConfig};
        let sasl = self.sasl.as_ref()?;
        let credentials = Credentials::new(sasl.username.clone(), sasl.password.clone());
        Some(match sasl.mechanism {
            SaslMechanism::Plain => SaslConfig::Plain(credentials),
            SaslMechanism::ScramSha256 => SaslConfig::ScramSha256(credentials),
            SaslMechanism::ScramSha512 => SaslConfig::ScramSha512(credentials),
        })
    }

    /// Sets the librdkafka properties of these settings on `config`.
    pub fn apply_to_rdkafka(&self, config: &mut rdkafka::ClientConfig) {
        config.set("security.protocol", self.protocol.as_str());
        if let Some(sasl) = &self.sasl {
            config
                .set("sasl.mechanism", sasl.mechanism.as_str())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", &sasl.password);
        }
        if let Some(tls) = &self.tls {
            if let Some((path, _)) = &tls.ca {
                config.set("ssl.ca.location", path.to_string_lossy());
            }
            if let Some(id) = &tls.client {
                config
                    .set("ssl.certificate.location", id.cert_path.to_string_lossy())
                    .set("ssl.key.location", id.key_path.to_string_lossy());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(protocol: SecurityProtocol) -> SecurityArgs {
        SecurityArgs {
            security_protocol: protocol,
            ..SecurityArgs::default()
        }
    }

    fn flag_of(e: SecurityError) -> &'static str {
        match e {
            SecurityError::Flag { flag, .. } | SecurityError::File { flag, .. } => flag,
        }
    }

    #[test]
    fn plaintext_needs_nothing_and_sets_only_the_protocol() {
        let s = Security::resolve(&args(SecurityProtocol::Plaintext)).unwrap();
        assert!(s.sasl.is_none() && s.tls.is_none());
        let mut c = rdkafka::ClientConfig::new();
        s.apply_to_rdkafka(&mut c);
        assert_eq!(c.get("security.protocol"), Some("plaintext"));
        assert_eq!(c.get("sasl.mechanism"), None);
    }

    #[test]
    fn sasl_needs_a_mechanism_a_user_and_a_password_file() {
        let mut a = args(SecurityProtocol::SaslPlaintext);
        assert_eq!(
            flag_of(Security::resolve(&a).unwrap_err()),
            "--sasl-mechanism"
        );
        a.sasl_mechanism = Some(SaslMechanism::ScramSha512);
        assert_eq!(
            flag_of(Security::resolve(&a).unwrap_err()),
            "--sasl-username"
        );
        a.sasl_username = Some("alice".into());
        assert_eq!(
            flag_of(Security::resolve(&a).unwrap_err()),
            "--sasl-password-file"
        );
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope");
        a.sasl_password_file = Some(missing.clone());
        let e = Security::resolve(&a).unwrap_err();
        assert!(
            e.to_string().starts_with(&format!(
                "--sasl-password-file {}: cannot read it",
                missing.display()
            )),
            "{e}"
        );
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "\n").unwrap();
        a.sasl_password_file = Some(empty);
        assert!(Security::resolve(&a)
            .unwrap_err()
            .to_string()
            .ends_with("is empty"));
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        a.sasl_password_file = Some(file);
        let s = Security::resolve(&a).unwrap();
        let mut c = rdkafka::ClientConfig::new();
        s.apply_to_rdkafka(&mut c);
        assert_eq!(c.get("security.protocol"), Some("sasl_plaintext"));
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(c.get("sasl.username"), Some("alice"));
        assert_eq!(c.get("sasl.password"), Some("s3cret"));
        assert!(matches!(
            s.rskafka_sasl(),
            Some(rskafka::client::SaslConfig::ScramSha512(ref c)) if c.password == "s3cret"
        ));
        assert!(
            !format!("{s:?}").contains("s3cret"),
            "Debug shows the password"
        );
    }

    #[test]
    fn flags_that_do_not_fit_the_protocol_are_named() {
        let mut a = args(SecurityProtocol::Plaintext);
        a.sasl_username = Some("alice".into());
        let e = Security::resolve(&a).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--sasl-username: is set but --security-protocol is plaintext; use sasl_plaintext or sasl_ssl"
        );
        let mut a = args(SecurityProtocol::SaslPlaintext);
        a.ssl_ca = Some("ca.pem".into());
        a.sasl_mechanism = Some(SaslMechanism::Plain);
        a.sasl_username = Some("alice".into());
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "x").unwrap();
        a.sasl_password_file = Some(pw);
        assert_eq!(flag_of(Security::resolve(&a).unwrap_err()), "--ssl-ca");
    }

    #[test]
    fn a_client_certificate_needs_its_key_and_both_must_parse() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(SecurityProtocol::Ssl);
        a.ssl_cert = Some(dir.path().join("cert.pem"));
        assert_eq!(
            Security::resolve(&a).unwrap_err().to_string(),
            "--ssl-cert: needs --ssl-key (the private key of the client certificate)"
        );
        a.ssl_cert = None;
        a.ssl_key = Some(dir.path().join("key.pem"));
        assert_eq!(flag_of(Security::resolve(&a).unwrap_err()), "--ssl-key");

        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let mut a = args(SecurityProtocol::Ssl);
        a.ssl_ca = Some(not_pem.clone());
        assert_eq!(
            Security::resolve(&a).unwrap_err().to_string(),
            format!(
                "--ssl-ca {}: holds no certificate (expected PEM: -----BEGIN CERTIFICATE-----)",
                not_pem.display()
            )
        );

        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_path = dir.path().join("client.pem");
        let key_path = dir.path().join("client.key");
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, "not a key").unwrap();
        a.ssl_ca = Some(cert_path.clone());
        a.ssl_cert = Some(cert_path.clone());
        a.ssl_key = Some(key_path.clone());
        assert_eq!(flag_of(Security::resolve(&a).unwrap_err()), "--ssl-key");
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        let s = Security::resolve(&a).unwrap();
        assert!(s.rustls_config().unwrap().is_some());
        let mut c = rdkafka::ClientConfig::new();
        s.apply_to_rdkafka(&mut c);
        assert_eq!(c.get("security.protocol"), Some("ssl"));
        assert_eq!(
            c.get("ssl.certificate.location"),
            Some(cert_path.to_string_lossy().as_ref())
        );
        assert_eq!(
            c.get("ssl.ca.location"),
            Some(cert_path.to_string_lossy().as_ref())
        );
    }
}
