//! The plan of `cronq apply`: a valid schedule file's jobs against the newest record of each job
//! in the schedule topic ([`super::latest`]), as terraform shows a plan: what to add, to change
//! (field by field) and to remove, and the records that make it so ([`Plan::writes`]).
//!
//! ```text
//!  file entries (checked) ──┐
//!                           ├──► Plan::new ──► render (stdout) ──► writes() ──► super::write
//!  latest() per job ────────┘    compared as JSON values: formatting and key order do not matter
//! ```
//!
//! Ownership: `--source` tags every job apply writes; `--prune` removes only jobs whose newest
//! record carries that tag, so a file owns its jobs beside jobs the API or other files wrote. A
//! job of the file whose spec is unchanged but whose tag is another is rewritten with the file's
//! tag (shown as a change of `source`): the file now owns it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::value::RawValue;
use serde_json::Value;

use super::{Latest, Write};
use crate::wire::schedule::{Changed, ScheduleRecord};

/// One job of the file: its name and its entry, compacted ([`compact`]).
#[derive(Debug, Clone)]
pub struct FileJob {
    /// `jobName`.
    pub name: String,
    /// The entry as the file writes it, whitespace outside strings removed.
    pub spec: Box<RawValue>,
}

/// How a changed job differs from its newest record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldChange {
    /// A field with a new value: `    cronTime: "a" -> "b"`.
    Changed {
        /// The field.
        field: String,
        /// The topic's value (compact JSON).
        was: String,
        /// The file's value.
        now: String,
    },
    /// A field only the file has: `    + timezone: "Europe/Berlin"`.
    Added {
        /// The field.
        field: String,
        /// The file's value.
        now: String,
    },
    /// A field only the topic has: `    - jitter: "5m"`.
    Removed {
        /// The field.
        field: String,
        /// The topic's value.
        was: String,
    },
    /// The same spec under another source tag: the file takes the job over.
    Source {
        /// The newest record's tag (`None`: untagged, e.g. written by the API).
        was: Option<String>,
        /// This apply's tag.
        now: String,
    },
    /// The newest record does not decode: it is replaced.
    Undecodable {
        /// Why.
        reason: String,
    },
}

/// What one apply changes.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Jobs of the file the topic does not have, by name.
    pub add: Vec<FileJob>,
    /// Jobs of the file whose newest record differs, by name, with how.
    pub change: Vec<(FileJob, Vec<FieldChange>)>,
    /// Jobs of this source that are no longer in the file (tombstoned: `--prune`), by name.
    pub remove: Vec<String>,
    /// Jobs of this source that are no longer in the file, kept (no `--prune`), by name.
    pub kept: Vec<String>,
    /// Jobs of the file the topic already has as they are.
    pub unchanged: usize,
    /// Jobs not in the file that carry another source tag (or none): never touched.
    pub others: usize,
    /// The source tag.
    pub source: String,
}

/// Values longer than this are shortened in the plan.
const SHOWN_VALUE_CHARS: usize = 160;

impl Plan {
    /// Compares `file` (every job of a valid file) with `topic` (the newest record of each job).
    pub fn new(
        file: Vec<FileJob>,
        topic: &BTreeMap<String, Latest>,
        source: &str,
        prune: bool,
    ) -> Plan {
        let mut plan = Plan {
            source: source.to_string(),
            ..Plan::default()
        };
        let mut in_file = BTreeSet::new();
        for job in file {
            in_file.insert(job.name.clone());
            match topic.get(&job.name) {
                None => plan.add.push(job),
                Some(latest) => match &latest.record {
                    Err(reason) => {
                        let reason = format!(
                            "the topic's newest record (partition {} offset {}) does not decode: {reason}",
                            latest.partition, latest.offset
                        );
                        plan.change
                            .push((job, vec![FieldChange::Undecodable { reason }]));
                    }
                    Ok(record) => {
                        let mut fields = field_changes(&record.spec, &job.spec);
                        if fields.is_empty() && record.changed.source.as_deref() != Some(source) {
                            fields.push(FieldChange::Source {
                                was: record.changed.source.clone(),
                                now: source.to_string(),
                            });
                        }
                        if fields.is_empty() {
                            plan.unchanged += 1;
                        } else {
                            plan.change.push((job, fields));
                        }
                    }
                },
            }
        }
        for (name, latest) in topic {
            if in_file.contains(name) {
                continue;
            }
            let ours = latest
                .record
                .as_ref()
                .is_ok_and(|r| r.changed.source.as_deref() == Some(source));
            match (ours, prune) {
                (true, true) => plan.remove.push(name.clone()),
                (true, false) => plan.kept.push(name.clone()),
                (false, _) => plan.others += 1,
            }
        }
        plan.add.sort_by(|a, b| a.name.cmp(&b.name));
        plan.change.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        plan
    }

    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.change.is_empty() && self.remove.is_empty()
    }

    /// The records that carry out the plan: each added or changed job's entry tagged `changed`,
    /// a tombstone for each removed job.
    pub fn writes(&self, changed: &Changed) -> Vec<Write> {
        self.records(changed)
            .iter()
            .map(|(name, record)| Write::of(name, record.as_ref()))
            .collect()
    }

    /// The records of [`Plan::writes`] before they are encoded, by name (`None`: a tombstone):
    /// an upsert per job to add or change, then a delete per job to remove.
    pub fn records(&self, changed: &Changed) -> Vec<(String, Option<ScheduleRecord>)> {
        let upserts = self
            .add
            .iter()
            .chain(self.change.iter().map(|(job, _)| job))
            .map(|job| {
                let record = ScheduleRecord {
                    spec: job.spec.clone(),
                    changed: changed.clone(),
                };
                (job.name.clone(), Some(record))
            });
        let deletes = self.remove.iter().map(|name| (name.clone(), None));
        upserts.chain(deletes).collect()
    }
}

impl fmt::Display for Plan {
    /// `+ name`, `~ name` with a line per field, `- name`, the jobs kept, then the summary line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for job in &self.add {
            writeln!(f, "+ {}", job.name)?;
        }
        for (job, fields) in &self.change {
            writeln!(f, "~ {}", job.name)?;
            for field in fields {
                match field {
                    FieldChange::Changed { field, was, now } => {
                        writeln!(f, "    {field}: {} -> {}", shown(was), shown(now))?
                    }
                    FieldChange::Added { field, now } => {
                        writeln!(f, "    + {field}: {}", shown(now))?
                    }
                    FieldChange::Removed { field, was } => {
                        writeln!(f, "    - {field}: {}", shown(was))?
                    }
                    FieldChange::Source { was, now } => match was {
                        Some(was) => writeln!(f, "    source: {was:?} -> {now:?} (same spec; the file takes the job over)")?,
                        None => writeln!(f, "    source: (none) -> {now:?} (same spec; the file takes the job over)")?,
                    },
                    FieldChange::Undecodable { reason } => writeln!(f, "    {reason}")?,
                }
            }
        }
        for name in &self.remove {
            writeln!(f, "- {name}")?;
        }
        for name in &self.kept {
            writeln!(
                f,
                "  {name}: not in the file, kept (--prune deletes the jobs of source {:?} that are not in the file)",
                self.source
            )?;
        }
        write!(
            f,
            "Plan: {} to add, {} to change, {} to remove; {} unchanged",
            self.add.len(),
            self.change.len(),
            self.remove.len(),
            self.unchanged
        )?;
        if !self.kept.is_empty() {
            write!(f, ", {} kept without --prune", self.kept.len())?;
        }
        if self.others > 0 {
            write!(
                f,
                ", {} of other sources not in the file left alone",
                self.others
            )?;
        }
        writeln!(f, ".")
    }
}

/// A value as the plan shows it: shortened past [`SHOWN_VALUE_CHARS`].
fn shown(value: &str) -> String {
    match value.char_indices().nth(SHOWN_VALUE_CHARS) {
        None => value.to_string(),
        Some((cut, _)) => format!("{}…", &value[..cut]),
    }
}

/// How `now` (the file's entry) differs from `was` (the topic's spec), field by field; empty when
/// they are the same JSON value (whatever the formatting and the order of keys).
pub fn field_changes(was: &RawValue, now: &RawValue) -> Vec<FieldChange> {
    // The topic's specs are written compact (by apply and the API), so equal text is the usual case.
    if was.get() == now.get() || compact(was.get()) == now.get() {
        return Vec::new();
    }
    let was: Value = serde_json::from_str(was.get()).unwrap_or(Value::Null);
    let now: Value = serde_json::from_str(now.get()).unwrap_or(Value::Null);
    if was == now {
        return Vec::new();
    }
    let text = |v: &Value| serde_json::to_string(v).unwrap_or_default();
    match (&was, &now) {
        (Value::Object(was), Value::Object(now)) => {
            let fields: BTreeSet<&String> = was.keys().chain(now.keys()).collect();
            fields
                .into_iter()
                .filter_map(|field| match (was.get(field), now.get(field)) {
                    (Some(a), Some(b)) if a == b => None,
                    (Some(a), Some(b)) => Some(FieldChange::Changed {
                        field: field.clone(),
                        was: text(a),
                        now: text(b),
                    }),
                    (None, Some(b)) => Some(FieldChange::Added {
                        field: field.clone(),
                        now: text(b),
                    }),
                    (Some(a), None) => Some(FieldChange::Removed {
                        field: field.clone(),
                        was: text(a),
                    }),
                    (None, None) => None,
                })
                .collect()
        }
        _ => vec![FieldChange::Changed {
            field: "spec".into(),
            was: text(&was),
            now: text(&now),
        }],
    }
}

/// JSON text without the whitespace between tokens (strings untouched, key order and number
/// spelling kept): one record per job entry, one line per job in `export`.
pub fn compact(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
            out.push(c);
        } else if !matches!(c, ' ' | '\t' | '\n' | '\r') {
            out.push(c);
        }
    }
    out
}

/// [`compact`] as a raw value (`json` must be valid JSON; invalid text comes back as it is).
pub fn compact_raw(json: &RawValue) -> Box<RawValue> {
    RawValue::from_string(compact(json.get())).unwrap_or_else(|_| json.to_owned())
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::wire::schedule::VIA_APPLY;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_string()).unwrap()
    }

    fn job(name: &str, rest: &str) -> FileJob {
        FileJob {
            name: name.into(),
            spec: compact_raw(&raw(&format!(r#"{{"jobName": "{name}", {rest}}}"#))),
        }
    }

    fn latest(spec: &str, source: Option<&str>) -> Latest {
        Latest {
            offset: 7,
            partition: 1,
            record: Ok(ScheduleRecord {
                spec: raw(spec),
                changed: Changed {
                    at: Utc::now(),
                    by: "t".into(),
                    via: VIA_APPLY.into(),
                    source: source.map(str::to_string),
                },
            }),
        }
    }

    #[test]
    fn compact_drops_whitespace_between_tokens_only() {
        let text = "{ \"a\" : [1, 2],\n\t\"b\": \"x y \\\" z\" }";
        assert_eq!(compact(text), r#"{"a":[1,2],"b":"x y \" z"}"#);
        let v1: Value = serde_json::from_str(text).unwrap();
        let v2: Value = serde_json::from_str(&compact(text)).unwrap();
        assert_eq!(v1, v2);
    }

    #[test]
    fn the_same_job_in_another_layout_is_unchanged_and_a_changed_field_is_named() {
        let mut topic = BTreeMap::new();
        topic.insert(
            "a".to_string(),
            latest(
                r#"{"job": "x",  "cronTime": "* * * * *", "jobName": "a"}"#,
                Some("f.json"),
            ),
        );
        topic.insert(
            "b".to_string(),
            latest(
                r#"{"jobName":"b","job":"x","cronTime":"* * * * *","jitter":"5m"}"#,
                Some("f.json"),
            ),
        );
        let file = vec![
            job("a", r#""cronTime": "* * * * *", "job": "x""#),
            job(
                "b",
                r#""job": "x", "cronTime": "*/5 * * * *", "timezone": "Europe/Berlin""#,
            ),
        ];
        let plan = Plan::new(file, &topic, "f.json", false);
        assert_eq!(plan.unchanged, 1);
        assert_eq!(plan.change.len(), 1);
        assert_eq!(
            plan.change[0].1,
            vec![
                FieldChange::Changed {
                    field: "cronTime".into(),
                    was: r#""* * * * *""#.into(),
                    now: r#""*/5 * * * *""#.into()
                },
                FieldChange::Removed {
                    field: "jitter".into(),
                    was: r#""5m""#.into()
                },
                FieldChange::Added {
                    field: "timezone".into(),
                    now: r#""Europe/Berlin""#.into()
                },
            ]
        );
        let text = plan.to_string();
        assert!(
            text.contains("~ b\n    cronTime: \"* * * * *\" -> \"*/5 * * * *\"\n"),
            "{text}"
        );
        assert!(text.contains("    - jitter: \"5m\"\n"), "{text}");
        assert!(
            text.contains("    + timezone: \"Europe/Berlin\"\n"),
            "{text}"
        );
        assert!(
            text.ends_with("Plan: 0 to add, 1 to change, 0 to remove; 1 unchanged.\n"),
            "{text}"
        );
    }

    #[test]
    fn prune_removes_only_the_sources_own_jobs_and_without_it_they_are_kept() {
        let mut topic = BTreeMap::new();
        let spec = |n: &str| format!(r#"{{"jobName":"{n}","job":"x","cronTime":"* * * * *"}}"#);
        topic.insert("mine".to_string(), latest(&spec("mine"), Some("f.json")));
        topic.insert(
            "theirs".to_string(),
            latest(&spec("theirs"), Some("g.json")),
        );
        topic.insert("api".to_string(), latest(&spec("api"), None));
        let broken = Latest {
            offset: 3,
            partition: 0,
            record: Err("not a schedule record".into()),
        };
        topic.insert("broken".to_string(), broken);
        let pruned = Plan::new(vec![], &topic, "f.json", true);
        assert_eq!(pruned.remove, vec!["mine".to_string()]);
        assert_eq!(pruned.others, 3);
        let writes = pruned.writes(&Changed {
            at: Utc::now(),
            by: "t".into(),
            via: VIA_APPLY.into(),
            source: Some("f.json".into()),
        });
        assert_eq!(writes.len(), 1);
        assert!(writes[0].name == "mine" && writes[0].value.is_none());
        let kept = Plan::new(vec![], &topic, "f.json", false);
        assert!(kept.is_empty());
        assert_eq!(kept.kept, vec!["mine".to_string()]);
        assert!(kept.to_string().contains("mine: not in the file, kept"));
    }

    #[test]
    fn a_job_taken_over_from_another_source_or_an_undecodable_one_is_a_change() {
        let mut topic = BTreeMap::new();
        let spec = r#"{"jobName":"a","job":"x","cronTime":"* * * * *"}"#;
        topic.insert("a".to_string(), latest(spec, Some("g.json")));
        topic.insert(
            "b".to_string(),
            Latest {
                offset: 3,
                partition: 0,
                record: Err("bad".into()),
            },
        );
        let file = vec![
            job("a", r#""job": "x", "cronTime": "* * * * *""#),
            job("b", r#""job": "x", "cronTime": "* * * * *""#),
        ];
        let plan = Plan::new(file, &topic, "f.json", false);
        assert_eq!(plan.change.len(), 2);
        assert!(
            matches!(&plan.change[0].1[..], [FieldChange::Source { was: Some(w), .. }] if w == "g.json")
        );
        assert!(
            matches!(&plan.change[1].1[..], [FieldChange::Undecodable { reason }] if reason.contains("offset 3"))
        );
    }
}
