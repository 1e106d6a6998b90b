//! The names and numbers every process derives the same way from a job and its slot: the slot's
//! wire text, the `dispatchId`, Kafka's murmur2 (the partition of a key, the shard of a job) and a
//! jittered slot's `notBefore`.
//!
//! ```text
//!  slot ──► slot_text (RFC 3339, whole seconds) ──► dispatch_id = "<jobName>@<slot_text>"
//!  dispatchId ──► murmur2 mod jitter ──► not_before = slot + offset (RFC 3339, milliseconds)
//!  key ──► murmur2 ──► partition_for (the Java client's default partitioner; also job → shard)
//! ```
//!
//! The jitter's hash is documented so that any other implementation can reproduce it: `h` is
//! Kafka's murmur2 (the Java client's `Utils.murmur2`, seed `0x9747b28c`) of the UTF-8 bytes of the
//! record's `dispatchId`, read as an unsigned 32-bit number; the offset is `h mod J` milliseconds,
//! `J` the jitter in milliseconds (see [`crate::schedule::jitter`] for the loader's rules).

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

/// A slot as it appears on the wire: RFC 3339, UTC, whole seconds (`2026-11-27T01:30:00Z`).
pub fn slot_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// `jobName@scheduledAt`, with `scheduled_at` as [`slot_text`] writes it.
pub fn dispatch_id(job_name: &str, scheduled_at: &str) -> String {
    format!("{job_name}@{scheduled_at}")
}

/// What ends the `dispatchId` of a run triggered by hand (`cronq trigger`).
pub const MANUAL_SUFFIX: &str = "#manual";

/// The instant of a run triggered by hand as its `scheduledAt` and `dispatchId` write it: RFC 3339,
/// UTC, milliseconds (`2026-11-29T21:14:05.123Z`), so that two triggers within one second are two
/// runs. Earlier versions of cronq wrote whole seconds; every reader takes both.
pub fn manual_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// `jobName@<instant>#manual`: the `dispatchId` of a run of `job_name` triggered by hand at the
/// instant written `at_text` ([`manual_text`]).
pub fn manual_dispatch_id(job_name: &str, at_text: &str) -> String {
    format!("{job_name}@{at_text}{MANUAL_SUFFIX}")
}

/// The instant text of `id` when it is the `dispatchId` of a run of `job_name` triggered by hand
/// (`jobName@<instant>#manual`, the instant in whole seconds or with a fraction); `None` otherwise.
/// Only the shape is checked here, not that the text is an instant.
pub fn manual_instant<'a>(id: &'a str, job_name: &str) -> Option<&'a str> {
    id.strip_prefix(job_name)?
        .strip_prefix('@')?
        .strip_suffix(MANUAL_SUFFIX)
}

/// [`slot_text`] of the last slot asked for: the records of a minute share one slot, so a producer
/// formats it once per minute rather than once per record.
#[derive(Debug, Default)]
pub struct SlotTexts {
    last: Option<(DateTime<Utc>, String)>,
}

impl SlotTexts {
    /// The wire text of `at`.
    pub fn get(&mut self, at: DateTime<Utc>) -> &str {
        if self.last.as_ref().is_none_or(|(last, _)| *last != at) {
            self.last = Some((at, slot_text(at)));
        }
        self.last.as_ref().map_or("", |(_, text)| text)
    }
}

/// Kafka's murmur2 of `key`, as the Java client's `Utils.murmur2` computes it (signed).
pub fn murmur2(key: &[u8]) -> i32 {
    murmur2::murmur2(key, murmur2::KAFKA_SEED) as i32
}

/// The partition the Java client's default partitioner picks for a keyed record:
/// `toPositive(murmur2(key)) % partitions`.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    debug_assert!(partitions > 0);
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// The offset of the slot whose `dispatchId` is `dispatch_id` (`<jobName>@<scheduledAt>`) within
/// a jitter of `jitter_ms` milliseconds: `murmur2(dispatch_id) mod jitter_ms`, in `[0, jitter_ms)`.
///
/// ```
/// use cronq::wire::ids::offset_ms;
/// let a = offset_ms("nightly@2026-11-27T01:30:00Z", 30_000);
/// assert!(a < 30_000);
/// assert_eq!(a, offset_ms("nightly@2026-11-27T01:30:00Z", 30_000));
/// ```
pub fn offset_ms(dispatch_id: &str, jitter_ms: u64) -> u64 {
    let h = murmur2::murmur2(dispatch_id.as_bytes(), murmur2::KAFKA_SEED);
    u64::from(h) % jitter_ms.max(1)
}

/// The jitter in whole milliseconds (what [`offset_ms`] takes).
pub fn jitter_ms(jitter: Duration) -> u64 {
    u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX)
}

/// `notBefore` of the slot at `slot` (written `slot_text`) of job `job_name` with `jitter`.
pub fn not_before(
    job_name: &str,
    slot: DateTime<Utc>,
    slot_text: &str,
    jitter: Duration,
) -> DateTime<Utc> {
    let id = dispatch_id(job_name, slot_text);
    let offset = offset_ms(&id, jitter_ms(jitter));
    slot + chrono::Duration::milliseconds(offset as i64)
}

/// [`not_before`] from the dispatch id alone (`slot` is the instant its `scheduledAt` names).
pub fn not_before_of(dispatch_id: &str, slot: DateTime<Utc>, jitter: Duration) -> DateTime<Utc> {
    slot + chrono::Duration::milliseconds(offset_ms(dispatch_id, jitter_ms(jitter)) as i64)
}

/// `notBefore` as the message and the header write it: RFC 3339, UTC, milliseconds
/// (`2026-11-27T01:30:12.345Z`).
pub fn not_before_text(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    #[test]
    fn a_manual_dispatch_id_has_milliseconds_and_the_old_whole_seconds_form_still_reads() {
        let at = DateTime::from_timestamp_millis(1_764_450_845_123).unwrap();
        let id = manual_dispatch_id("sync", &manual_text(at));
        assert_eq!(id, "sync@2025-11-29T21:14:05.123Z#manual");
        assert_eq!(
            manual_instant(&id, "sync"),
            Some("2025-11-29T21:14:05.123Z")
        );
        // Two triggers 1 ms apart within one second are two ids.
        let next = at + chrono::Duration::milliseconds(1);
        assert_ne!(manual_dispatch_id("sync", &manual_text(next)), id);
        // What cronq wrote before: whole seconds.
        assert_eq!(
            manual_instant("sync@2025-11-29T21:14:05Z#manual", "sync"),
            Some("2025-11-29T21:14:05Z")
        );
        for not in [
            "sync@2025-11-29T21:14:05Z",
            "other@x#manual",
            "sync#manual",
            "syncx@y#manual",
        ] {
            assert_eq!(manual_instant(not, "sync"), None, "{not}");
        }
    }

    #[test]
    fn slot_texts_are_the_slot_text_of_each_slot_asked_for() {
        let mut texts = SlotTexts::default();
        for secs in [0, 0, 60, 60, 0, 4_102_444_800, 59] {
            assert_eq!(texts.get(at(secs)), slot_text(at(secs)), "{secs}");
        }
    }

    #[test]
    fn murmur2_matches_the_java_clients_published_test_vectors() {
        // org.apache.kafka.common.utils.UtilsTest#testMurmur2
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key), expected, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn partition_is_the_positive_hash_modulo_the_partition_count() {
        // murmur2("21") = -973932308; & 0x7fffffff = 1173551340
        assert_eq!(partition_for(b"21", 3), 1_173_551_340 % 3);
        assert_eq!(partition_for(b"abc", 7), 479_470_107 % 7);
        for p in 1..50 {
            assert!((0..p).contains(&partition_for(b"foobar", p)));
        }
    }

    #[test]
    fn not_before_is_the_slot_plus_the_offset_of_its_dispatch_id() {
        let slot = Utc.with_ymd_and_hms(2026, 11, 27, 1, 30, 0).unwrap();
        let text = slot_text(slot);
        let jitter = Duration::from_secs(30);
        let nb = not_before("nightly", slot, &text, jitter);
        let offset = offset_ms("nightly@2026-11-27T01:30:00Z", 30_000);
        assert_eq!(nb, slot + chrono::Duration::milliseconds(offset as i64));
        assert_eq!(
            nb,
            not_before_of("nightly@2026-11-27T01:30:00Z", slot, jitter)
        );
        assert_eq!(
            not_before_text(slot + chrono::Duration::milliseconds(12_345)),
            "2026-11-27T01:30:12.345Z"
        );
        assert_eq!(not_before_text(slot), "2026-11-27T01:30:00.000Z");
    }
}
