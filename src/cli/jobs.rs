//! `cronq jobs get|put|delete|list|next|hash-token`: the command-line client of the jobs API
//! (`cronq run --schedule-topic --api-tokens FILE`). Any member's URL will do: it forwards to the
//! job's owner. JSON on stdout; an HTTP error prints the server's message on stderr and exits 1.
//!
//! ```text
//!  token: --token-file F (its first line) or $CRONQ_API_TOKEN ──► Authorization: Bearer …
//!  get NAME ──► GET /api/v1/jobs/NAME        put [FILE|-] ──► PUT /api/v1/jobs/{jobName}
//!  delete NAME ──► DELETE …                  list ──► GET /api/v1/jobs?prefix&after&limit (--all: every page)
//!  next NAME ──► GET …/next?n=               hash-token ──► stdin's token, SHA-256 in hex (for the token file)
//! ```

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue, Method};
use bytes::Bytes;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::args::status_timeout;
use super::error::CliError;
use super::runtime::{block_on, OnSignal};
use crate::obs::client::HttpClient;

/// `cronq jobs`
#[derive(Debug, Args)]
pub struct JobsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: JobsCommand,
}

/// The subcommands of `cronq jobs`.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Print a job: its entry, version and who changed it last.
    Get {
        /// The job.
        name: String,
        /// Where and who.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Create or replace a job from its JSON (one entry of a schedule file's `jobs`); prints its
    /// new version.
    Put {
        /// The job's JSON; `-` or nothing: stdin.
        file: Option<PathBuf>,
        /// The job's name (default: the body's `jobName`).
        #[arg(long)]
        name: Option<String>,
        /// Write only if the job's version is this one (`*`: only if it exists).
        #[arg(long)]
        if_match: Option<String>,
        /// Where and who.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a job (a tombstone); prints the tombstone's version.
    Delete {
        /// The job.
        name: String,
        /// Delete only if the job's version is this one.
        #[arg(long)]
        if_match: Option<String>,
        /// Where and who.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List jobs by name, a page at a time (`next` is the next page's `--after`).
    List {
        /// Only names starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Only names after this one (the previous page's `next`).
        #[arg(long)]
        after: Option<String>,
        /// Jobs per page (1-1000).
        #[arg(long, default_value_t = 100, value_parser = |s: &str| super::args::whole::<usize>(s, 1, 1000))]
        limit: usize,
        /// Follow `next` to the end: every job in one list.
        #[arg(long)]
        all: bool,
        /// Where and who.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print a job's next runs.
    Next {
        /// The job.
        name: String,
        /// How many (1-100).
        #[arg(short = 'n', long = "count", default_value_t = 5, value_parser = |s: &str| super::args::whole::<usize>(s, 1, 100))]
        count: usize,
        /// Where and who.
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Read a token on stdin and print its SHA-256 in hex: the `sha256` of a token file entry.
    HashToken,
}

/// Where the API is and who calls it.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// Any member's jobs API (its `--http` address).
    #[arg(long, env = "CRONQ_API_URL", default_value = "http://127.0.0.1:9464")]
    pub url: String,
    /// A file whose first line is the token (default: the CRONQ_API_TOKEN environment variable).
    #[arg(long, env = "CRONQ_API_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Give up when the server does not answer within this long (1s-10m).
    #[arg(long, env = "CRONQ_TIMEOUT", default_value = "30s", value_parser = status_timeout)]
    pub timeout: Duration,
}

impl ClientArgs {
    fn token(&self) -> Result<String, CliError> {
        let token = match &self.token_file {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| CliError::Invalid {
                    flag: "--token-file",
                    reason: format!("{}: {e}", path.display()),
                })?
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string(),
            None => std::env::var("CRONQ_API_TOKEN")
                .unwrap_or_default()
                .trim()
                .to_string(),
        };
        if token.is_empty() {
            return Err(CliError::Invalid {
                flag: "--token-file",
                reason: "no token: give --token-file or set CRONQ_API_TOKEN".into(),
            });
        }
        Ok(token)
    }
}

/// Percent-encodes a path segment or query value.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One request; the body of a 2xx reply, or the server's message as the error.
fn call(
    client: &ClientArgs,
    method: Method,
    path: &str,
    if_match: Option<&str>,
    body: Option<Vec<u8>>,
) -> Result<Value, CliError> {
    let token = client.token()?;
    let mut headers = HeaderMap::new();
    let auth =
        HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| CliError::Invalid {
            flag: "--token-file",
            reason: "the token has characters a header cannot carry".into(),
        })?;
    headers.insert(header::AUTHORIZATION, auth);
    if let Some(v) = if_match {
        let v = HeaderValue::from_str(v).map_err(|_| CliError::Invalid {
            flag: "--if-match",
            reason: format!("{v:?} cannot be a header value"),
        })?;
        headers.insert(header::IF_MATCH, v);
    }
    if body.is_some() {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    let url = format!("{}{path}", client.url.trim_end_matches('/'));
    let http = HttpClient::new(client.timeout, 256 << 20);
    let reply = block_on(OnSignal::Exit, |_| async move {
        http.send(
            method,
            &url,
            &headers,
            Bytes::from(body.unwrap_or_default()),
        )
        .await
        .map_err(|e| CliError::Api(e.to_string()))
    })?;
    let value: Value = serde_json::from_slice(&reply.body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&reply.body).into_owned()));
    if reply.status.is_success() {
        return Ok(value);
    }
    let mut message = format!(
        "HTTP {}: {}",
        reply.status.as_u16(),
        value["error"]
            .as_str()
            .map_or_else(|| value.to_string(), str::to_string)
    );
    for p in value["problems"].as_array().into_iter().flatten() {
        let path = p["path"].as_str().unwrap_or("");
        let text = p["message"].as_str().unwrap_or("");
        if path.is_empty() {
            message.push_str(&format!("\n  {text}"));
        } else {
            message.push_str(&format!("\n  {path}: {text}"));
        }
    }
    if let Some(v) = value["version"].as_str() {
        message.push_str(&format!(" (current version {v})"));
    }
    Err(CliError::Api(message))
}

fn print(value: &Value) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    )?;
    out.flush()?;
    Ok(())
}

/// Runs `cronq jobs …`.
pub(super) fn run(args: JobsArgs) -> Result<ExitCode, CliError> {
    match args.command {
        JobsCommand::HashToken => {
            let mut token = String::new();
            std::io::stdin().read_to_string(&mut token)?;
            let token = token.trim_end_matches(['\n', '\r']);
            if token.is_empty() {
                return Err(CliError::Invalid {
                    flag: "stdin",
                    reason: "no token on stdin".into(),
                });
            }
            writeln!(
                std::io::stdout().lock(),
                "{}",
                crate::dispatcher::api::tokens::hash_hex(token)
            )?;
        }
        JobsCommand::Get { name, client } => {
            print(&call(
                &client,
                Method::GET,
                &format!("/api/v1/jobs/{}", encode(&name)),
                None,
                None,
            )?)?;
        }
        JobsCommand::Put {
            file,
            name,
            if_match,
            client,
        } => {
            let body = match file.as_deref() {
                None => read_stdin()?,
                Some(p) if p.as_os_str() == "-" => read_stdin()?,
                Some(p) => std::fs::read(p).map_err(|e| CliError::Invalid {
                    flag: "FILE",
                    reason: format!("{}: {e}", p.display()),
                })?,
            };
            let name = match name {
                Some(n) => n,
                None => serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v["jobName"].as_str().map(str::to_string))
                    .ok_or_else(|| CliError::Invalid {
                        flag: "--name",
                        reason: "the body has no jobName: give --name".into(),
                    })?,
            };
            print(&call(
                &client,
                Method::PUT,
                &format!("/api/v1/jobs/{}", encode(&name)),
                if_match.as_deref(),
                Some(body),
            )?)?;
        }
        JobsCommand::Delete {
            name,
            if_match,
            client,
        } => {
            print(&call(
                &client,
                Method::DELETE,
                &format!("/api/v1/jobs/{}", encode(&name)),
                if_match.as_deref(),
                None,
            )?)?;
        }
        JobsCommand::List {
            prefix,
            after,
            limit,
            all,
            client,
        } => {
            let mut after = after;
            let mut jobs: Vec<Value> = Vec::new();
            loop {
                let mut path = format!("/api/v1/jobs?prefix={}&limit={limit}", encode(&prefix));
                if let Some(a) = &after {
                    path.push_str(&format!("&after={}", encode(a)));
                }
                let page = call(&client, Method::GET, &path, None, None)?;
                if !all {
                    print(&page)?;
                    break;
                }
                jobs.extend(page["jobs"].as_array().cloned().unwrap_or_default());
                match page["next"].as_str() {
                    Some(next) => after = Some(next.to_string()),
                    None => {
                        print(&serde_json::json!({"jobs": jobs, "next": null}))?;
                        break;
                    }
                }
            }
        }
        JobsCommand::Next {
            name,
            count,
            client,
        } => {
            print(&call(
                &client,
                Method::GET,
                &format!("/api/v1/jobs/{}/next?n={count}", encode(&name)),
                None,
                None,
            )?)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn read_stdin() -> Result<Vec<u8>, CliError> {
    let mut body = Vec::new();
    std::io::stdin().read_to_end(&mut body)?;
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_percent_encoded_in_the_path() {
        assert_eq!(encode("nightly-backup_1.x"), "nightly-backup_1.x");
        assert_eq!(encode("a/b c"), "a%2Fb%20c");
    }
}
