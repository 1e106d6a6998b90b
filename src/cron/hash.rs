//! Jenkins' `H`: a field value of the job's own, chosen by a stable hash of its name, so that a
//! hundred thousand `H * * * *` jobs spread over the hour instead of all firing at `:00`.
//!
//! The hash is documented so any other implementation can reproduce it: for field `f` (`minute`,
//! `hour`, `day-of-month`, `month`, `day-of-week`) of job `name`,
//! `h = murmur2("<name>:<f>")` over the UTF-8 bytes with Kafka's seed `0x9747b28c` (the Java
//! client's `Utils.murmur2`), read as an unsigned 32-bit number. Then, with the range `lo-hi`
//! (the field's own, or the one written in `H(lo-hi)`):
//!
//! | item | value |
//! |---|---|
//! | `H` | `lo + h mod (hi-lo+1)` |
//! | `H(a-b)` | `a + h mod (b-a+1)` |
//! | `H/n`, `H(a-b)/n` | every `n` from `lo + h mod min(n, hi-lo+1)` up to `hi` |
//!
//! The field ranges of a bare `H` are minute 0-59, hour 0-23, day-of-month **1-28** (a day every
//! month has, as in Jenkins), month 1-12, day-of-week 0-6. `H` may be a list item (`H,30`); it is
//! resolved into plain numbers before the expression is parsed, so everything else about it is
//! standard cron. A field holding `H` is restricted (it does not start with `*`).

use std::borrow::Cow;

use super::dialect::{Field, FieldProblem, SyntaxError};

const FIELDS: [Field; 5] = [
    Field::Minute,
    Field::Hour,
    Field::DayOfMonth,
    Field::Month,
    Field::DayOfWeek,
];

/// The range a bare `H` picks from.
fn hash_range(field: Field) -> (u32, u32) {
    match field {
        Field::Minute => (0, 59),
        Field::Hour => (0, 23),
        Field::DayOfMonth => (1, 28),
        Field::Month => (1, 12),
        Field::DayOfWeek => (0, 6),
    }
}

/// The range `H(a-b)` may name.
fn field_bounds(field: Field) -> (u32, u32) {
    match field {
        Field::Minute => (0, 59),
        Field::Hour => (0, 23),
        Field::DayOfMonth => (1, 31),
        Field::Month => (1, 12),
        Field::DayOfWeek => (0, 6),
    }
}

/// The documented hash of `job` for `field`.
pub fn job_hash(job: &str, field: Field) -> u32 {
    let salted = format!("{job}:{field}");
    murmur2::murmur2(salted.as_bytes(), murmur2::KAFKA_SEED)
}

fn is_hash_item(item: &str) -> bool {
    item == "H" || item.starts_with("H/") || item.starts_with("H(")
}

/// Whether `text` uses `H` anywhere.
pub fn uses_hash(text: &str) -> bool {
    text.split_whitespace()
        .any(|field| field.split(',').any(is_hash_item))
}

/// `text` with every `H` item replaced by plain numbers for `job`; unchanged (borrowed) without
/// `H`. `H` without a job is an error that says how to give one.
pub fn resolve<'t>(text: &'t str, job: Option<&str>) -> Result<Cow<'t, str>, SyntaxError> {
    if !uses_hash(text) {
        return Ok(Cow::Borrowed(text));
    }
    let Some(job) = job else {
        return Err(SyntaxError::HashWithoutJob);
    };
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.len() != FIELDS.len() {
        // Not five fields: the parser reports that.
        return Ok(Cow::Borrowed(text));
    }
    let mut out = Vec::with_capacity(fields.len());
    for (field, token) in FIELDS.into_iter().zip(fields) {
        let items: Result<Vec<String>, FieldProblem> = token
            .split(',')
            .map(|item| {
                if is_hash_item(item) {
                    resolve_item(field, item, job_hash(job, field))
                } else {
                    Ok(item.to_string())
                }
            })
            .collect();
        let items = items.map_err(|problem| SyntaxError::Field { field, problem })?;
        out.push(items.join(","));
    }
    Ok(Cow::Owned(out.join(" ")))
}

fn resolve_item(field: Field, item: &str, h: u32) -> Result<String, FieldProblem> {
    let malformed = || FieldProblem::Expected {
        expected: "H, H/n, H(a-b) or H(a-b)/n",
        found: item.to_string(),
    };
    let rest = &item[1..];
    let ((lo, hi), rest) = match rest.strip_prefix('(') {
        Some(inner) => {
            let (range, rest) = inner.split_once(')').ok_or_else(malformed)?;
            let (a, b) = range.split_once('-').ok_or_else(malformed)?;
            let (min, max) = field_bounds(field);
            let a = number(a, min, max).ok_or_else(|| out_of_range(a, min, max))?;
            let b = number(b, min, max).ok_or_else(|| out_of_range(b, min, max))?;
            if a > b {
                return Err(FieldProblem::ReversedRange {
                    token: item.to_string(),
                });
            }
            ((a, b), rest)
        }
        None => (hash_range(field), rest),
    };
    let span = hi - lo + 1;
    if rest.is_empty() {
        return Ok((lo + h % span).to_string());
    }
    let step = rest.strip_prefix('/').ok_or_else(malformed)?;
    if step.is_empty() || !step.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    let step: u32 = step.parse().map_err(|_| FieldProblem::OutOfRange {
        value: step.to_string(),
        min: 1,
        max: span,
    })?;
    if step == 0 {
        return Err(FieldProblem::ZeroStep {
            token: item.to_string(),
        });
    }
    let start = lo + h % step.min(span);
    Ok(if start + step > hi {
        start.to_string()
    } else {
        format!("{start}-{hi}/{step}")
    })
}

fn number(text: &str, min: u32, max: u32) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().filter(|n| (min..=max).contains(n))
}

fn out_of_range(text: &str, min: u32, max: u32) -> FieldProblem {
    FieldProblem::OutOfRange {
        value: text.to_string(),
        min,
        max,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values computed with kafka-python's `murmur2` (the Java client's algorithm, not the crate
    /// cronq uses): `murmur2(b"nightly-backup:minute") & 0xffffffff` = 1593384549, and so on.
    #[test]
    fn the_documented_hash_reproduces_another_implementation() {
        assert_eq!(job_hash("nightly-backup", Field::Minute), 1_593_384_549);
        assert_eq!(job_hash("nightly-backup", Field::Hour), 943_983_893);
        assert_eq!(job_hash("report-7", Field::DayOfMonth), 3_485_960_555);
        assert_eq!(job_hash("report-7", Field::Month), 1_713_894_400);
        assert_eq!(job_hash("report-7", Field::DayOfWeek), 1_986_052_170);
    }

    /// Expected values from the table in the module docs applied by hand (Python) to the hashes
    /// above: 1593384549 mod 60 = 9, 943983893 mod 24 = 5, mod 15 = 9, 9 + mod 2 = 10, …
    #[test]
    fn each_form_resolves_as_documented() {
        let r = |text, job| resolve(text, Some(job)).unwrap().into_owned();
        assert_eq!(r("H H * * *", "nightly-backup"), "9 5 * * *");
        assert_eq!(r("H/15 * * * *", "nightly-backup"), "9-59/15 * * * *");
        assert_eq!(r("0 H(9-17)/2 * * *", "nightly-backup"), "0 10-17/2 * * *");
        assert_eq!(r("H H(0-5) H H H", "report-7"), "4 4 8 5 4");
        assert_eq!(r("H,30 * * * *", "nightly-backup"), "9,30 * * * *");
        // Not hash items: a weekday name with an H in it, and no H at all.
        assert_eq!(r("0 0 * * THU", "x"), "0 0 * * THU");
        assert!(matches!(resolve("0 0 * * *", None), Ok(Cow::Borrowed(_))));
    }

    #[test]
    fn h_without_a_job_and_malformed_h_are_errors_naming_the_problem() {
        let err = resolve("H * * * *", None).unwrap_err().to_string();
        assert!(err.contains("--job"), "{err}");
        let e = |text: &str| resolve(text, Some("j")).unwrap_err().to_string();
        assert_eq!(
            e("H(30-10) * * * *"),
            "minute: range \"H(30-10)\" is reversed: the start must not be after the end"
        );
        assert_eq!(e("H(0-99) * * * *"), "minute: 99 is out of range 0-59");
        assert_eq!(
            e("H/0 * * * *"),
            "minute: step must be at least 1, found \"H/0\""
        );
        assert_eq!(
            e("H/x * * * *"),
            "minute: expected H, H/n, H(a-b) or H(a-b)/n, found \"H/x\""
        );
        assert_eq!(
            e("* * H(1-3 * *"),
            "day-of-month: expected H, H/n, H(a-b) or H(a-b)/n, found \"H(1-3\""
        );
    }

    /// χ² goodness of fit against the uniform distribution over the field's range, for 100 000
    /// generated job names, at a 0.1 % significance level (critical value by Wilson-Hilferty).
    #[test]
    fn h_is_uniform_over_each_field_for_many_job_names() {
        const JOBS: usize = 100_000;
        let critical = |df: f64| {
            let z = 3.090_232; // the 99.9th percentile of the standard normal
            let a = 2.0 / (9.0 * df);
            df * (1.0 - a + z * a.sqrt()).powi(3)
        };
        let cases: [(&str, Field, u32, u32); 7] = [
            ("H * * * *", Field::Minute, 0, 59),
            ("0 H * * *", Field::Hour, 0, 23),
            ("0 0 H * *", Field::DayOfMonth, 1, 28),
            ("0 0 1 H *", Field::Month, 1, 12),
            ("0 0 * * H", Field::DayOfWeek, 0, 6),
            ("0 H(9-17) * * *", Field::Hour, 9, 17),
            ("H/15 * * * *", Field::Minute, 0, 14),
        ];
        for (text, field, lo, hi) in cases {
            let index = FIELDS.iter().position(|f| *f == field).unwrap();
            let mut counts = vec![0u64; (hi - lo + 1) as usize];
            for i in 0..JOBS {
                let job = format!("team-{}/job-{i}", i % 37);
                let resolved = resolve(text, Some(&job)).unwrap();
                let value = resolved.split(' ').nth(index).unwrap();
                // `H/15` resolves to `start-59/15`: its start is the value that must be uniform.
                let first: u32 = value.split(['-', ',']).next().unwrap().parse().unwrap();
                assert!((lo..=hi).contains(&first), "{text} for {job}: {resolved}");
                counts[(first - lo) as usize] += 1;
            }
            let expected = JOBS as f64 / counts.len() as f64;
            let chi2: f64 = counts
                .iter()
                .map(|&c| (c as f64 - expected).powi(2) / expected)
                .sum();
            let df = (counts.len() - 1) as f64;
            assert!(
                chi2 < critical(df),
                "{text}: chi2 {chi2:.1} >= {:.1} (df {df}): {counts:?}",
                critical(df)
            );
        }
    }

    #[test]
    fn the_same_job_always_gets_the_same_value_and_names_differ() {
        let a = resolve("H H * * *", Some("billing/invoice"))
            .unwrap()
            .into_owned();
        for _ in 0..3 {
            assert_eq!(resolve("H H * * *", Some("billing/invoice")).unwrap(), a);
        }
        let distinct: std::collections::HashSet<String> = (0..200)
            .map(|i| {
                resolve("H H * * *", Some(&format!("j{i}")))
                    .unwrap()
                    .into_owned()
            })
            .collect();
        assert!(distinct.len() > 150, "{}", distinct.len());
    }
}
