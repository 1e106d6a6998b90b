//! The jobs API's token file (`--api-tokens FILE`): who may call the API, and with what scope.
//!
//! ```text
//!  {"tokens":[{"name":"deploy-bot","scope":"write","sha256":"<hex of SHA-256 of the token>"}]}
//!  Authorization: Bearer <token> ──► SHA-256 ──► compared with EVERY entry in constant time
//!                                                 └─► the entry's name (`changed.by`) and scope
//! ```
//!
//! The file holds hashes only: a leaked file gives no token away. It is looked at again at most
//! once a second (its mtime and length, then the SHA-256 of its bytes); a new version that does not
//! parse is logged with the file and the reason, and the last good one stays in force.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// How often the file is looked at again, at most.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// GET requests only.
    Read,
    /// Everything.
    Write,
}

/// One token of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// Its name: the record's `changed.by`.
    pub name: String,
    /// What it may do.
    pub scope: Scope,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
}

/// Why a token file cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenFileError {
    /// The file cannot be read.
    #[error("{path}: cannot read the token file: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// Not the JSON of a token file.
    #[error(
        "{path}: not a token file ({{\"tokens\":[{{\"name\",\"scope\",\"sha256\"}}]}}): {reason}"
    )]
    Json {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// One entry is wrong.
    #[error("{path}: tokens[{index}]: {field}: {reason}")]
    Entry {
        /// The file.
        path: String,
        /// The entry's index.
        index: usize,
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileWire {
    tokens: Vec<EntryWire>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryWire {
    name: String,
    scope: String,
    sha256: String,
}

/// Reads a token file's text.
pub fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<Token>, TokenFileError> {
    let shown = path.display().to_string();
    let file: FileWire = serde_json::from_slice(bytes).map_err(|e| TokenFileError::Json {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let entry = |index, field, reason: String| TokenFileError::Entry {
        path: shown.clone(),
        index,
        field,
        reason,
    };
    let mut out = Vec::with_capacity(file.tokens.len());
    for (index, t) in file.tokens.into_iter().enumerate() {
        let len = t.name.chars().count();
        if !(1..=200).contains(&len) || t.name.chars().any(char::is_control) {
            return Err(entry(
                index,
                "name",
                "1-200 characters, no control characters".into(),
            ));
        }
        if out.iter().any(|o: &Token| o.name == t.name) {
            return Err(entry(index, "name", format!("{:?} is used twice", t.name)));
        }
        let scope = match t.scope.as_str() {
            "read" => Scope::Read,
            "write" => Scope::Write,
            other => {
                return Err(entry(
                    index,
                    "scope",
                    format!("{other:?} is not \"read\" or \"write\""),
                ))
            }
        };
        let sha256 = hex32(&t.sha256).ok_or_else(|| {
            entry(
                index,
                "sha256",
                "64 hex digits (`cronq jobs hash-token` prints them)".into(),
            )
        })?;
        out.push(Token {
            name: t.name,
            scope,
            sha256,
        });
    }
    Ok(out)
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The SHA-256 of `token`, as the file writes it (lowercase hex).
pub fn hash_hex(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The entry `presented` is, compared with every entry in constant time (no early exit, so the
/// time taken says nothing of which entry, if any, matched).
pub fn find<'a>(tokens: &'a [Token], presented: &str) -> Option<&'a Token> {
    let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    let mut found = None;
    for t in tokens {
        if bool::from(t.sha256.ct_eq(&hash)) {
            found = Some(t);
        }
    }
    found
}

/// The token file as the server holds it: the last good version, looked at again at most once a
/// second.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    state: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    tokens: Arc<Vec<Token>>,
    looked: Instant,
    stamp: Option<(SystemTime, u64)>,
    content: [u8; 32],
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

fn read(path: &Path) -> Result<Vec<u8>, TokenFileError> {
    std::fs::read(path).map_err(|e| TokenFileError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

impl TokenFile {
    /// Reads `path` now: a file that cannot be read or does not parse is an error at start.
    pub fn open(path: &Path) -> Result<TokenFile, TokenFileError> {
        let stamped = stamp(path);
        let bytes = read(path)?;
        let tokens = parse(path, &bytes)?;
        Ok(TokenFile {
            path: path.to_path_buf(),
            state: Mutex::new(Loaded {
                tokens: Arc::new(tokens),
                looked: Instant::now(),
                stamp: stamped,
                content: Sha256::digest(&bytes).into(),
            }),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tokens in force, after looking at the file again if the last look is a second old.
    pub fn tokens(&self) -> Arc<Vec<Token>> {
        self.tokens_at(Instant::now())
    }

    fn tokens_at(&self, now: Instant) -> Arc<Vec<Token>> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if now.saturating_duration_since(state.looked) < RELOAD_EVERY {
            return Arc::clone(&state.tokens);
        }
        state.looked = now;
        let stamped = stamp(&self.path);
        if stamped == state.stamp {
            return Arc::clone(&state.tokens);
        }
        state.stamp = stamped;
        let bytes = match read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(message = "the API token file cannot be read; the last good version stays in force", path = %self.path.display(), error = %e);
                return Arc::clone(&state.tokens);
            }
        };
        let content: [u8; 32] = Sha256::digest(&bytes).into();
        if content == state.content {
            return Arc::clone(&state.tokens);
        }
        state.content = content;
        match parse(&self.path, &bytes) {
            Ok(tokens) => {
                tracing::info!(message = "API token file reloaded", path = %self.path.display(), tokens = tokens.len());
                state.tokens = Arc::new(tokens);
            }
            Err(e) => {
                tracing::error!(message = "the new API token file does not parse; the last good version stays in force", path = %self.path.display(), error = %e);
            }
        }
        Arc::clone(&state.tokens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_text(entries: &[(&str, &str, &str)]) -> String {
        let tokens: Vec<String> = entries
            .iter()
            .map(|(name, scope, token)| {
                format!(
                    r#"{{"name":"{name}","scope":"{scope}","sha256":"{}"}}"#,
                    hash_hex(token)
                )
            })
            .collect();
        format!(r#"{{"tokens":[{}]}}"#, tokens.join(","))
    }

    #[test]
    fn the_hash_is_the_sha256_of_the_token_in_lowercase_hex() {
        assert_eq!(
            hash_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_presented_token_finds_its_entry_and_an_unknown_one_none() {
        let text = file_text(&[("ci", "read", "t-read"), ("bot", "write", "t-write")]);
        let tokens = parse(Path::new("t.json"), text.as_bytes()).unwrap();
        assert_eq!(
            find(&tokens, "t-read").map(|t| (t.name.as_str(), t.scope)),
            Some(("ci", Scope::Read))
        );
        assert_eq!(
            find(&tokens, "t-write").map(|t| t.scope),
            Some(Scope::Write)
        );
        assert!(find(&tokens, "t-writ").is_none());
        assert!(find(&tokens, "").is_none());
    }

    #[test]
    fn a_bad_file_names_the_entry_and_the_field() {
        let path = Path::new("/etc/cronq/tokens.json");
        let bad_scope = r#"{"tokens":[{"name":"a","scope":"admin","sha256":"00"}]}"#;
        assert_eq!(
            parse(path, bad_scope.as_bytes()).unwrap_err().to_string(),
            "/etc/cronq/tokens.json: tokens[0]: scope: \"admin\" is not \"read\" or \"write\""
        );
        let bad_hash = r#"{"tokens":[{"name":"a","scope":"read","sha256":"xyz"}]}"#;
        assert!(parse(path, bad_hash.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("tokens[0]: sha256: 64 hex digits"));
        let unknown = r#"{"tokens":[],"extra":1}"#;
        assert!(matches!(
            parse(path, unknown.as_bytes()),
            Err(TokenFileError::Json { .. })
        ));
        let twice = file_text(&[("a", "read", "x"), ("a", "write", "y")]);
        assert!(parse(path, twice.as_bytes())
            .unwrap_err()
            .to_string()
            .contains("used twice"));
    }

    #[test]
    fn a_rewritten_file_is_picked_up_and_a_broken_one_keeps_the_last_good_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.json");
        std::fs::write(&path, file_text(&[("a", "read", "one")])).unwrap();
        let file = TokenFile::open(&path).unwrap();
        let start = Instant::now();
        assert!(find(&file.tokens_at(start), "one").is_some());
        std::fs::write(&path, file_text(&[("b", "write", "two-longer")])).unwrap();
        // Within the second: not looked at again.
        assert!(find(&file.tokens_at(start), "one").is_some());
        let later = start + RELOAD_EVERY;
        let now = file.tokens_at(later);
        assert!(find(&now, "one").is_none());
        assert_eq!(find(&now, "two-longer").map(|t| t.name.as_str()), Some("b"));
        std::fs::write(&path, "{not json at all").unwrap();
        let kept = file.tokens_at(later + RELOAD_EVERY);
        assert!(
            find(&kept, "two-longer").is_some(),
            "the last good version stays"
        );
        assert!(
            TokenFile::open(&path).is_err(),
            "a broken file at start is an error"
        );
    }
}
