//! `cronq apply`'s local copy of the schedule topic: the newest record of every job as of an
//! offset per partition, so that a re-apply reads only what was written since, not the whole topic.
//!
//! ```text
//!  apply ──► load (if any) ──► per partition: fetch from the mark's record ──► same record? ──► read on from it
//!                                                                         └─ other/none ──► read the partition whole
//!        ──► plan, write ──► the writes join the copy; a mark moves past them when nothing came between ──► save
//! ```
//!
//! The copy is trusted only as far as the topic confirms it: each partition's mark names the last
//! record the copy holds (its offset, and an MD5 of its key and value), and a read starts at that
//! record. If the record is gone (another topic of the same name, a partition compacted past it) or
//! differs, the partition is read whole, as without a copy. Records after the mark (another apply,
//! the jobs API, a dispatcher's tombstones) are read as usual, so the plan is always against what
//! the topic holds.
//!
//! The file holds the job specs (which may carry payloads an operator considers private), so it is
//! written with mode 0600 in a 0700 directory; it is replaced whole by a rename.

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::Latest;
use crate::wire::schedule::ScheduleRecord;

/// The first bytes of a cache file (the format's version is the last digit).
const MAGIC: &[u8] = b"cronq apply cache 1\n";

/// Why a cache file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The file system said no.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a cache file of this version, or is cut short.
    #[error("{path}: not a cronq apply cache of this version ({what})")]
    Format {
        /// The file.
        path: PathBuf,
        /// What did not match.
        what: &'static str,
    },
}

/// Where one partition's copy ends: the copy holds everything below `next`, and `last` is the
/// newest record below it (offset and [`fingerprint`]), which a later read checks first.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mark {
    /// The first offset the copy does not hold.
    pub next: i64,
    /// The newest record the copy holds; `None` when there is none (the partition is read whole
    /// next time).
    pub last: Option<(i64, [u8; 16])>,
}

/// The topic's newest record of each job, as of each partition's [`Mark`].
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Every job by name (tombstoned jobs left out).
    pub jobs: BTreeMap<String, Latest>,
    /// One mark per partition.
    pub marks: Vec<Mark>,
}

/// The MD5 of a record's key and value: what a mark checks the topic's record against.
pub fn fingerprint(key: &[u8], value: Option<&[u8]>) -> [u8; 16] {
    let mut ctx = md5::Context::new();
    ctx.consume((key.len() as u64).to_le_bytes());
    ctx.consume(key);
    match value {
        Some(v) => {
            ctx.consume([1]);
            ctx.consume(v);
        }
        None => ctx.consume([0]),
    }
    ctx.finalize().0
}

/// The cache file for `topic` behind `brokers` in `dir`.
pub fn path_for(dir: &Path, brokers: &str, topic: &str) -> PathBuf {
    let id = md5::compute(format!("{brokers}\n{topic}"));
    dir.join(format!("apply-{id:x}.bin"))
}

/// The default directory: `$XDG_CACHE_HOME/cronq`, else `$HOME/.cache/cronq`; `None` when neither
/// is set.
pub fn default_dir() -> Option<PathBuf> {
    let non_empty = |v: &str| {
        std::env::var_os(v)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    };
    non_empty("XDG_CACHE_HOME")
        .or_else(|| non_empty("HOME").map(|h| h.join(".cache")))
        .map(|d| d.join("cronq"))
}

impl Snapshot {
    /// Reads a cache file. `Ok(None)` when there is none.
    pub fn load(path: &Path) -> Result<Option<Snapshot>, CacheError> {
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CacheError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let mut r = Reader {
            inner: BufReader::with_capacity(1 << 20, file),
            path,
        };
        let mut magic = vec![0; MAGIC.len()];
        r.exact(&mut magic)?;
        if magic != MAGIC {
            return Err(r.format("magic"));
        }
        let partitions = r.u32()?;
        if partitions > 1 << 16 {
            return Err(r.format("partition count"));
        }
        let mut marks = Vec::with_capacity(partitions as usize);
        for _ in 0..partitions {
            let next = r.i64()?;
            let last = match r.u8()? {
                0 => None,
                1 => {
                    let offset = r.i64()?;
                    let mut hash = [0; 16];
                    r.exact(&mut hash)?;
                    Some((offset, hash))
                }
                _ => return Err(r.format("mark")),
            };
            marks.push(Mark { next, last });
        }
        let count = r.u64()?;
        // Written in name order: collected, the map is built in one pass, not searched per job.
        let mut jobs = Vec::with_capacity(count.min(1 << 24) as usize);
        for _ in 0..count {
            let name = String::from_utf8(r.bytes()?).map_err(|_| r.format("job name"))?;
            let partition = r.u32()? as i32;
            let offset = r.i64()?;
            let ok = r.u8()?;
            let body = r.bytes()?;
            let record = match ok {
                1 => ScheduleRecord::decode(&body).map_err(|e| e.to_string()),
                0 => Err(String::from_utf8_lossy(&body).into_owned()),
                _ => return Err(r.format("record kind")),
            };
            jobs.push((
                name,
                Latest {
                    offset,
                    partition,
                    record,
                },
            ));
        }
        let jobs: BTreeMap<String, Latest> = jobs.into_iter().collect();
        let mut end = [0];
        if r.inner.read(&mut end).map_err(|e| r.io(e))? != 0 {
            return Err(r.format("trailing bytes"));
        }
        Ok(Some(Snapshot { jobs, marks }))
    }

    /// Writes the cache file (a new file renamed over the old one), its directory created.
    pub fn save(&self, path: &Path) -> Result<(), CacheError> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let io = |source| CacheError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        let written = self.write_to(BufWriter::with_capacity(1 << 20, file));
        let renamed = written.and_then(|()| std::fs::rename(&tmp, path));
        if let Err(e) = renamed {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(e));
        }
        Ok(())
    }

    fn write_to(&self, mut w: impl Write) -> std::io::Result<()> {
        w.write_all(MAGIC)?;
        w.write_all(&(self.marks.len() as u32).to_le_bytes())?;
        for m in &self.marks {
            w.write_all(&m.next.to_le_bytes())?;
            match m.last {
                None => w.write_all(&[0])?,
                Some((offset, hash)) => {
                    w.write_all(&[1])?;
                    w.write_all(&offset.to_le_bytes())?;
                    w.write_all(&hash)?;
                }
            }
        }
        w.write_all(&(self.jobs.len() as u64).to_le_bytes())?;
        for (name, latest) in &self.jobs {
            put_bytes(&mut w, name.as_bytes())?;
            w.write_all(&(latest.partition as u32).to_le_bytes())?;
            w.write_all(&latest.offset.to_le_bytes())?;
            match &latest.record {
                Ok(r) => {
                    w.write_all(&[1])?;
                    put_bytes(&mut w, &ScheduleRecord::encode(&r.spec, &r.changed))?;
                }
                Err(reason) => {
                    w.write_all(&[0])?;
                    put_bytes(&mut w, reason.as_bytes())?;
                }
            }
        }
        w.flush()
    }

    /// Adds what this process wrote and the broker acked: `written` is each write's name and
    /// record (`None`: a tombstone); `offsets` each name's new offset; `last_prints` the
    /// [`fingerprint`] of the last record written to each partition. A partition's mark moves past
    /// its writes only when they directly follow the mark (no other writer's record came between),
    /// else the next read re-reads them.
    pub fn add_writes(
        &mut self,
        written: Vec<(String, Option<ScheduleRecord>)>,
        partition_of: impl Fn(&str) -> i32,
        offsets: &std::collections::HashMap<String, i64>,
        last_prints: &BTreeMap<i32, [u8; 16]>,
    ) {
        let mut by_partition: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
        for (name, record) in written {
            let Some(&offset) = offsets.get(&name) else {
                continue;
            };
            let partition = partition_of(&name);
            by_partition.entry(partition).or_default().push(offset);
            match record {
                Some(record) => {
                    self.jobs.insert(
                        name,
                        Latest {
                            offset,
                            partition,
                            record: Ok(record),
                        },
                    );
                }
                None => {
                    self.jobs.remove(&name);
                }
            }
        }
        for (partition, mut written) in by_partition {
            let (Some(mark), Some(&print)) = (
                self.marks.get_mut(partition as usize),
                last_prints.get(&partition),
            ) else {
                continue;
            };
            written.sort_unstable();
            let follows = written
                .iter()
                .enumerate()
                .all(|(i, offset)| *offset == mark.next + i as i64);
            if let (true, Some(&offset)) = (follows, written.last()) {
                *mark = Mark {
                    next: offset + 1,
                    last: Some((offset, print)),
                };
            }
        }
    }
}

fn put_bytes(w: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(&(bytes.len() as u32).to_le_bytes())?;
    w.write_all(bytes)
}

struct Reader<'a, R> {
    inner: R,
    path: &'a Path,
}

impl<R: Read> Reader<'_, R> {
    fn io(&self, source: std::io::Error) -> CacheError {
        if source.kind() == std::io::ErrorKind::UnexpectedEof {
            return self.format("cut short");
        }
        CacheError::Io {
            path: self.path.to_path_buf(),
            source,
        }
    }

    fn format(&self, what: &'static str) -> CacheError {
        CacheError::Format {
            path: self.path.to_path_buf(),
            what,
        }
    }

    fn exact(&mut self, buf: &mut [u8]) -> Result<(), CacheError> {
        self.inner.read_exact(buf).map_err(|e| self.io(e))
    }

    fn u8(&mut self) -> Result<u8, CacheError> {
        let mut b = [0; 1];
        self.exact(&mut b)?;
        Ok(b[0])
    }

    fn u32(&mut self) -> Result<u32, CacheError> {
        let mut b = [0; 4];
        self.exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    fn u64(&mut self) -> Result<u64, CacheError> {
        let mut b = [0; 8];
        self.exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn i64(&mut self) -> Result<i64, CacheError> {
        Ok(self.u64()? as i64)
    }

    fn bytes(&mut self) -> Result<Vec<u8>, CacheError> {
        let len = self.u32()? as usize;
        if len > crate::wire::schedule::MAX_SCHEDULE_RECORD_BYTES + (1 << 10) {
            return Err(self.format("length"));
        }
        let mut buf = vec![0; len];
        self.exact(&mut buf)?;
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::schedule::{Changed, VIA_APPLY};
    use std::collections::HashMap;

    fn record(spec: &str) -> ScheduleRecord {
        ScheduleRecord {
            spec: serde_json::value::RawValue::from_string(spec.to_string()).unwrap(),
            changed: Changed {
                at: chrono::DateTime::from_timestamp(1_800_000_000, 0).unwrap(),
                by: "ci".into(),
                via: VIA_APPLY.into(),
                source: Some("s.json".into()),
            },
        }
    }

    fn snapshot() -> Snapshot {
        let mut jobs = BTreeMap::new();
        jobs.insert(
            "a".to_string(),
            Latest {
                offset: 4,
                partition: 1,
                record: Ok(record(
                    r#"{"jobName":"a","job":"x","cronTime":"* * * * *"}"#,
                )),
            },
        );
        jobs.insert(
            "b".to_string(),
            Latest {
                offset: 7,
                partition: 0,
                record: Err("not JSON".into()),
            },
        );
        Snapshot {
            jobs,
            marks: vec![
                Mark {
                    next: 8,
                    last: Some((7, fingerprint(b"b", Some(b"garbage")))),
                },
                Mark {
                    next: 0,
                    last: None,
                },
            ],
        }
    }

    fn summary(s: &Snapshot) -> Vec<(String, i32, i64, Result<String, String>)> {
        s.jobs
            .iter()
            .map(|(name, l)| {
                let record = l.record.as_ref().map(|r| {
                    String::from_utf8(ScheduleRecord::encode(&r.spec, &r.changed)).unwrap()
                });
                (
                    name.clone(),
                    l.partition,
                    l.offset,
                    record.map_err(Clone::clone),
                )
            })
            .collect()
    }

    #[test]
    fn a_saved_snapshot_loads_back_the_same_and_a_missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(dir.path(), "127.0.0.1:9092", "g.schedule");
        assert!(Snapshot::load(&path).unwrap().is_none());
        let s = snapshot();
        s.save(&path).unwrap();
        let back = Snapshot::load(&path).unwrap().unwrap();
        assert_eq!(back.marks, s.marks);
        assert_eq!(summary(&back), summary(&s));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_cut_or_foreign_file_is_a_format_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.bin");
        snapshot().save(&path).unwrap();
        let whole = std::fs::read(&path).unwrap();
        std::fs::write(&path, &whole[..whole.len() - 3]).unwrap();
        let err = Snapshot::load(&path).unwrap_err().to_string();
        assert!(err.contains("c.bin") && err.contains("cut short"), "{err}");
        std::fs::write(&path, b"{\"jobs\":[]}").unwrap();
        let err = Snapshot::load(&path).unwrap_err().to_string();
        assert!(err.contains("magic") || err.contains("cut short"), "{err}");
    }

    #[test]
    fn writes_right_after_the_mark_move_it_and_writes_after_a_gap_do_not() {
        let mut s = snapshot();
        let a2 = record(r#"{"jobName":"a","job":"y","cronTime":"* * * * *"}"#);
        let c = record(r#"{"jobName":"c","job":"z","cronTime":"* * * * *"}"#);
        let partition = |name: &str| if name == "b" || name == "c" { 0 } else { 1 };
        // Partition 0's mark is at 8: writes at 8 and 9 follow it. Partition 1's is at 0, and
        // its write landed at 3: someone wrote 0-2 in between.
        let offsets: HashMap<String, i64> = [
            ("c".to_string(), 8),
            ("b".to_string(), 9),
            ("a".to_string(), 3),
        ]
        .into();
        s.add_writes(
            vec![
                ("c".into(), Some(c)),
                ("b".into(), None),
                ("a".into(), Some(a2)),
            ],
            partition,
            &offsets,
            &[(0, [2; 16]), (1, [3; 16])].into(),
        );
        assert_eq!(
            s.marks,
            [
                Mark {
                    next: 10,
                    last: Some((9, [2; 16]))
                },
                Mark {
                    next: 0,
                    last: None
                }
            ]
        );
        let names: Vec<(&str, i64)> = s.jobs.iter().map(|(n, l)| (n.as_str(), l.offset)).collect();
        assert_eq!(names, [("a", 3), ("c", 8)]);
    }

    #[test]
    fn the_fingerprint_tells_a_tombstone_from_an_empty_value_and_keys_apart() {
        let prints = [
            fingerprint(b"a", None),
            fingerprint(b"a", Some(b"")),
            fingerprint(b"ab", Some(b"c")),
            fingerprint(b"a", Some(b"bc")),
        ];
        for (i, x) in prints.iter().enumerate() {
            for y in &prints[i + 1..] {
                assert_ne!(x, y);
            }
        }
    }
}
