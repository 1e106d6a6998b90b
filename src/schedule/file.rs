//! The on-disk shape of `schedule.json`, read so that every problem can be found in one pass.
//!
//! serde's derived `deny_unknown_fields` stops at the first error and forgets positions. Instead the
//! file is read as borrowed [`RawValue`]s: the top-level object, the `jobs` array, and each job's
//! fields, each still pointing into the file's text. Each field is then checked on its own by
//! `load.rs`, so a typo in job 3 and a bad cron in job 9 are both reported, with `line:column`.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// Fields a job may have. Anything else is an error (a typo like `cronTme` must not pass silently).
pub const JOB_FIELDS: &[&str] = &[
    "jobName",
    "priority",
    "job",
    "cronTime",
    "timezone",
    "topic",
    "enabled",
    "catchup",
    "catchupWindow",
    "timeout",
    "maxAttempts",
    "overlap",
    "jitter",
    "at",
    "every",
    "startAt",
    "endAt",
    "keepAfterRun",
    "deadline",
];

/// Fields the top-level object may have.
pub const TOP_FIELDS: &[&str] = &["jobs"];

/// A JSON object's members in file order, values left unparsed.
#[derive(Debug)]
pub struct RawObject<'a> {
    /// `(key, value)` pairs, duplicates kept so they can be reported.
    pub members: Vec<(Cow<'a, str>, &'a RawValue)>,
}

impl<'a> RawObject<'a> {
    /// The value of `key` (the first one, if duplicated).
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.members
            .iter()
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, v)| *v)
    }
}

struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(5));
                while let Some(key) = map.next_key::<Key<'de>>()? {
                    let value: &'de RawValue = map.next_value()?;
                    members.push((key.0, value));
                }
                Ok(RawObject { members })
            }
        }
        d.deserialize_map(ObjectVisitor)
    }
}

/// Byte offset of `inner` (a slice of `outer`) within `outer`.
pub fn offset_in(outer: &str, inner: &str) -> Option<usize> {
    let start = outer.as_ptr() as usize;
    let pos = inner.as_ptr() as usize;
    (pos >= start && pos + inner.len() <= start + outer.len()).then(|| pos - start)
}

/// Turns byte offsets into 1-based `(line, column)`; built only when a problem needs it.
#[derive(Debug)]
pub struct LineIndex {
    line_starts: Vec<usize>,
}

impl LineIndex {
    /// Indexes the line starts of `text`.
    pub fn new(text: &str) -> LineIndex {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { line_starts }
    }

    /// 1-based line and column (in characters) of byte `offset` of `text`.
    pub fn position(&self, text: &str, offset: usize) -> (usize, usize) {
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        let start = self.line_starts[line - 1];
        let column = text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        (line, column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_object_keeps_members_in_order_with_duplicates_and_escaped_keys() {
        let text = r#"{"a": 1, "b\u0041": [2], "a": "x"}"#;
        let obj: RawObject = serde_json::from_str(text).unwrap();
        let keys: Vec<&str> = obj.members.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["a", "bA", "a"]);
        assert_eq!(obj.get("a").unwrap().get(), "1");
        assert_eq!(
            offset_in(text, obj.get("bA").unwrap().get()),
            text.find("[2]")
        );
    }

    #[test]
    fn line_index_reports_one_based_line_and_character_column() {
        let text = "{\n  \"é\": 1,\n  \"x\": 2\n}";
        let idx = LineIndex::new(text);
        assert_eq!(idx.position(text, 0), (1, 1));
        let x = text.find("\"x\"").unwrap();
        assert_eq!(idx.position(text, x), (3, 3));
        let one = text.find('1').unwrap();
        assert_eq!(idx.position(text, one), (2, 8));
    }
}
