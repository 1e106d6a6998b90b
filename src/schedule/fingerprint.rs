//! Has the schedule file changed? Checked on every tick, so it must be cheap.
//!
//! The MD5 of the file's bytes decides. To avoid hashing a large file every second, a metadata
//! pre-check (size, mtime, inode) skips the read when nothing about the file changed — unless the
//! mtime is so recent that a second write within the same timestamp tick could hide behind it
//! (git's "racily clean" problem), in which case the file is hashed anyway. A `touch` changes the
//! metadata but not the digest, so it does not count as a change.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// An MD5 digest of a file's bytes.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Digest(pub [u8; 16]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(md5::compute(bytes).0)
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Meta {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl Meta {
    fn of(m: &std::fs::Metadata) -> Meta {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(m);
        #[cfg(not(unix))]
        let inode = 0;
        Meta {
            len: m.len(),
            modified: m.modified().ok(),
            inode,
        }
    }
}

/// What a check found.
#[derive(Debug)]
pub enum Change {
    /// Same bytes as last time (or as last reported).
    Unchanged,
    /// New contents.
    Changed {
        /// The file's bytes.
        bytes: Vec<u8>,
        /// Their digest.
        digest: Digest,
    },
    /// The file could not be read (vanished during an editor's rename-save, a ConfigMap swap,
    /// permissions …). The last known digest is kept, so the file's return is noticed.
    Unreadable(std::io::Error),
}

/// Watches one file by polling.
#[derive(Debug)]
pub struct FileWatch {
    path: PathBuf,
    meta: Option<Meta>,
    digest: Option<Digest>,
    max_bytes: u64,
}

/// Files modified this recently are hashed even if their metadata looks unchanged.
const RACY_WINDOW: Duration = Duration::from_secs(2);

impl FileWatch {
    /// Watches `path`; `digest` is the digest of the version already in use, if any.
    pub fn new(path: &Path, digest: Option<Digest>) -> FileWatch {
        FileWatch {
            path: path.to_path_buf(),
            meta: None,
            digest,
            max_bytes: u64::MAX,
        }
    }

    /// A file larger than `max` bytes (`--max-file-bytes`) is reported as unreadable instead of
    /// being read and hashed.
    pub fn with_max_bytes(mut self, max: u64) -> FileWatch {
        self.max_bytes = max;
        self
    }

    /// The file watched.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The digest of the last version seen.
    pub fn digest(&self) -> Option<Digest> {
        self.digest
    }

    /// Looks at the file once.
    pub fn check(&mut self) -> Change {
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => Meta::of(&m),
            Err(e) => {
                self.meta = None;
                return Change::Unreadable(e);
            }
        };
        let racy = meta.modified.is_none_or(|t| {
            SystemTime::now()
                .duration_since(t)
                .map_or(true, |age| age < RACY_WINDOW)
        });
        if self.meta.as_ref() == Some(&meta) && !racy {
            return Change::Unchanged;
        }
        if meta.len > self.max_bytes {
            self.meta = None;
            return Change::Unreadable(self.too_large(meta.len));
        }
        let bytes = match self.read(meta.len) {
            Ok(b) => b,
            Err(e) => {
                self.meta = None;
                return Change::Unreadable(e);
            }
        };
        self.meta = Some(meta);
        let digest = Digest::of(&bytes);
        if self.digest == Some(digest) {
            return Change::Unchanged;
        }
        self.digest = Some(digest);
        Change::Changed { bytes, digest }
    }

    /// The file's bytes, at most `max_bytes` of them (it may grow after its size was looked at).
    fn read(&self, len: u64) -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        // Sized up front: growing by doubling would hold up to twice a large file while copying.
        let mut bytes =
            Vec::with_capacity(usize::try_from(len.min(self.max_bytes)).unwrap_or(0) + 1);
        std::fs::File::open(&self.path)?
            .take(self.max_bytes.saturating_add(1))
            .read_to_end(&mut bytes)?;
        if bytes.len() as u64 > self.max_bytes {
            return Err(self.too_large(bytes.len() as u64));
        }
        Ok(bytes)
    }

    fn too_large(&self, len: u64) -> std::io::Error {
        std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!(
                "{} is {len} bytes or more, over --max-file-bytes {}; it was not read",
                self.path.display(),
                self.max_bytes
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_md5_of_the_bytes() {
        // RFC 1321 test vector.
        assert_eq!(
            Digest::of(b"abc").to_string(),
            "900150983cd24fb0d6963f7d28e17f72"
        );
    }

    #[test]
    fn touch_is_not_a_change_but_new_bytes_are_and_vanishing_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(&path, b"one").unwrap();
        let mut watch = FileWatch::new(&path, None);
        assert!(matches!(watch.check(), Change::Changed { .. }));
        assert!(matches!(watch.check(), Change::Unchanged));
        // rewrite with identical bytes (a touch that also rewrites)
        std::fs::write(&path, b"one").unwrap();
        assert!(matches!(watch.check(), Change::Unchanged));
        std::fs::write(&path, b"two").unwrap();
        match watch.check() {
            Change::Changed { bytes, digest } => {
                assert_eq!(bytes, b"two");
                assert_eq!(digest, Digest::of(b"two"));
            }
            other => panic!("expected a change, got {other:?}"),
        }
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(watch.check(), Change::Unreadable(_)));
        // back with the same bytes: not a change
        std::fs::write(&path, b"two").unwrap();
        assert!(matches!(watch.check(), Change::Unchanged));
    }

    /// A reload never reads a file over `--max-file-bytes`; once it shrinks back, it is a change.
    #[test]
    fn a_file_over_the_limit_is_unreadable_until_it_fits_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.json");
        std::fs::write(&path, b"0123456789").unwrap();
        let mut watch = FileWatch::new(&path, None).with_max_bytes(10);
        assert!(matches!(watch.check(), Change::Changed { .. }));
        std::fs::write(&path, b"0123456789A").unwrap();
        match watch.check() {
            Change::Unreadable(e) => {
                assert_eq!(e.kind(), std::io::ErrorKind::FileTooLarge);
                assert_eq!(
                    e.to_string(),
                    format!(
                        "{} is 11 bytes or more, over --max-file-bytes 10; it was not read",
                        path.display()
                    )
                );
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(watch.check(), Change::Changed { bytes, .. } if bytes == b"short"));
    }
}
