//! Standard (Vixie/Debian) cron syntax in, saffron syntax out.
//!
//! Users write standard cron: 5 fields, day-of-week 0-7 with 0 and 7 = Sunday, `@daily` style macros.
//! saffron is Quartz-flavoured (day-of-week 1-7 = Sunday-Saturday, no `0`, no macros) and reports every
//! problem as the same opaque "Failed to parse cron expression". So this module parses the standard
//! syntax itself, field by field, into value sets, reports precise errors (field, token, why), and
//! then writes an equivalent expression saffron understands: plain numbers only, with saffron's own
//! day-of-week numbering. saffron then compiles that into its bitmasks and does the date search.
//!
//! One rule saffron cannot express: cron(8) treats a day field that *starts with* `*` (such as `*/2`)
//! as unrestricted, so when either day field starts with `*` the day must match BOTH fields; only when
//! both are restricted does either one suffice. [`Translation::day_filter`] carries the day condition
//! that must be checked after saffron in that case.

use std::fmt;

/// The five fields of a standard cron expression, in order.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Field {
    /// 0-59
    Minute,
    /// 0-23
    Hour,
    /// 1-31
    DayOfMonth,
    /// 1-12 or JAN-DEC
    Month,
    /// 0-7 (0 and 7 are Sunday) or SUN-SAT
    DayOfWeek,
}

impl Field {
    const ALL: [Field; 5] = [
        Field::Minute,
        Field::Hour,
        Field::DayOfMonth,
        Field::Month,
        Field::DayOfWeek,
    ];

    /// The inclusive range of numbers the field accepts.
    fn bounds(self) -> (u32, u32) {
        match self {
            Field::Minute => (0, 59),
            Field::Hour => (0, 23),
            Field::DayOfMonth => (1, 31),
            Field::Month => (1, 12),
            Field::DayOfWeek => (0, 7),
        }
    }

    fn names(self) -> &'static [&'static str] {
        match self {
            Field::Month => &[
                "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
            ],
            Field::DayOfWeek => &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
            _ => &[],
        }
    }

    /// What a value of this field looks like, for "expected …" messages.
    fn expectation(self) -> &'static str {
        match self {
            Field::Minute => "a number 0-59",
            Field::Hour => "a number 0-23",
            Field::DayOfMonth => "a number 1-31 (or L, LW, L-n, nW)",
            Field::Month => "a number 1-12 or a name JAN-DEC",
            Field::DayOfWeek => "a number 0-7 or a name SUN-SAT",
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day-of-month",
            Field::Month => "month",
            Field::DayOfWeek => "day-of-week",
        })
    }
}

/// Why one field of an expression was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FieldProblem {
    /// A token that is neither a number, a name nor an operator.
    Expected {
        /// What the field accepts.
        expected: &'static str,
        /// The offending list item.
        found: String,
    },
    /// A number outside the field's range.
    OutOfRange {
        /// The number as written.
        value: String,
        /// The field's inclusive bounds.
        min: u32,
        /// The field's inclusive bounds.
        max: u32,
    },
    /// `a-b` with `a > b`.
    ReversedRange {
        /// The list item, as written.
        token: String,
    },
    /// `*/0`
    ZeroStep {
        /// The list item, as written.
        token: String,
    },
    /// `1,,2` or a trailing comma.
    EmptyItem {
        /// The whole field.
        token: String,
    },
    /// `L`, `W`, `#` items may not be mixed with other list items.
    SpecialInList {
        /// The special item.
        token: String,
    },
    /// `d#n` with n outside 1-5.
    NthOutOfRange {
        /// The item.
        token: String,
    },
}

impl fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldProblem::Expected { expected, found } => {
                write!(f, "expected {expected}, found {found:?}")
            }
            FieldProblem::OutOfRange { value, min, max } => {
                write!(f, "{value} is out of range {min}-{max}")
            }
            FieldProblem::ReversedRange { token } => write!(
                f,
                "range {token:?} is reversed: the start must not be after the end"
            ),
            FieldProblem::ZeroStep { token } => {
                write!(f, "step must be at least 1, found {token:?}")
            }
            FieldProblem::EmptyItem { token } => write!(f, "empty list item in {token:?}"),
            FieldProblem::SpecialInList { token } => write!(
                f,
                "{token:?} cannot be combined with other values in a list"
            ),
            FieldProblem::NthOutOfRange { token } => {
                write!(f, "the week number in {token:?} must be 1-5")
            }
        }
    }
}

/// Why a whole expression was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyntaxError {
    /// Nothing but whitespace.
    #[error("the expression is empty; expected 5 fields (minute hour day-of-month month day-of-week) or a macro like @daily")]
    Empty,
    /// Not 5 fields.
    #[error("expected 5 fields (minute hour day-of-month month day-of-week), found {found}")]
    FieldCount {
        /// How many whitespace-separated fields there were.
        found: usize,
    },
    /// `@something` that is not a known macro.
    #[error("unknown macro {name:?}: expected one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly")]
    UnknownMacro {
        /// The macro as written.
        name: String,
    },
    /// `H` with no job name to hash.
    #[error("`H` picks a value from the job's name, and there is none: give a job name (`--job NAME` on the command line), or write the value")]
    HashWithoutJob,
    /// One field is wrong.
    #[error("{field}: {problem}")]
    Field {
        /// Which field.
        field: Field,
        /// What is wrong with it.
        problem: FieldProblem,
    },
}

/// The result of translating a standard expression for saffron.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Translation {
    /// An expression in saffron's syntax with the same meaning (apart from `day_filter`).
    pub saffron: String,
    /// When set, a day saffron finds must ALSO pass this filter. Needed for cron(8)'s rule that a
    /// `*`-prefixed day field makes the two day fields AND, which saffron cannot express.
    pub day_filter: Option<DayFilter>,
    /// Neither the minute nor the hour field starts with `*` (cron(8)'s `MIN_STAR`/`HR_STAR` test on
    /// the field's first character): a *fixed-time* job. `30 2`, `0,30 1-3` and `45 0-5/2` are fixed;
    /// `* 2`, `*/15 2` and `0 */2` are *wildcard* jobs. See the DST rules in [`super::tz`].
    pub fixed_time: bool,
    /// The `n` of an `nW` day-of-month. saffron also fires `nW` in a month that has no day `n`
    /// (on the Friday or Monday next to where it would be), so such days are checked again.
    pub nearest_weekday: Option<u32>,
    /// The same expression with the minute, hour and month fields as the user wrote them (when they
    /// are plain numbers, ranges and steps), for a friendlier description ("every 15 minutes"
    /// rather than "at 0, 15, 30 and 45"). May be rejected by saffron; then `saffron` is described.
    pub description_text: String,
}

/// A day condition checked after saffron (see [`Translation::day_filter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayFilter {
    /// The day's weekday must be in the set (bit 0 = Sunday … bit 6 = Saturday).
    Weekdays(u8),
    /// The day of the month must be in the set (bit n = day n).
    MonthDays(u32),
}

/// Expands `@macros` to their 5-field meaning.
fn expand_macro(text: &str) -> Result<&'static str, SyntaxError> {
    Ok(match text.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        _ => {
            return Err(SyntaxError::UnknownMacro {
                name: text.to_string(),
            })
        }
    })
}

/// Translates a standard cron expression (or macro) into saffron's syntax.
///
/// ```
/// use cronq::cron::dialect::translate;
/// let t = translate("0 12 * * MON-FRI").unwrap();
/// // saffron numbers Sunday as 1, so Monday-Friday is 2-6.
/// assert_eq!(t.saffron, "0 12 * * 2,3,4,5,6");
/// ```
pub fn translate(text: &str) -> Result<Translation, SyntaxError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(SyntaxError::Empty);
    }
    let expanded = if trimmed.starts_with('@') {
        expand_macro(trimmed)?
    } else {
        trimmed
    };
    let fields: Vec<&str> = expanded.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(SyntaxError::FieldCount {
            found: fields.len(),
        });
    }
    let mut parsed = Vec::with_capacity(5);
    for (field, token) in Field::ALL.into_iter().zip(&fields) {
        let spec =
            parse_field(field, token).map_err(|problem| SyntaxError::Field { field, problem })?;
        parsed.push(spec);
    }
    let [minute, hour, dom, month, dow]: [FieldSpec; 5] = match parsed.try_into() {
        Ok(a) => a,
        Err(_) => unreachable!("five fields were parsed"),
    };

    let fixed_time = !minute.star_prefixed && !hour.star_prefixed;

    // cron(8): "If both fields are restricted (i.e., don't start with *), the command will be run
    // when either field matches"; otherwise both must match. saffron ORs two restricted fields and
    // ignores a literal `*`, which covers every case except a `*`-prefixed field that is not the full
    // set (like `*/2`) next to a non-`*` other field: there the day sets must AND.
    let dom_star = dom.star_prefixed;
    let dow_star = dow.star_prefixed;
    let dom_full = dom.is_full();
    let dow_full = dow.is_full();
    let mut day_filter = None;
    let (dom_text, dow_text) = if dom_star && dow_star {
        match (dom_full, dow_full) {
            (true, true) => ("*".to_string(), "*".to_string()),
            (true, false) => ("*".to_string(), dow.saffron_dow()),
            (false, true) => (dom.saffron_list(), "*".to_string()),
            (false, false) => {
                day_filter = Some(DayFilter::Weekdays(dow.weekday_mask()));
                (dom.saffron_list(), "*".to_string())
            }
        }
    } else if dom_star {
        if dom_full {
            ("*".to_string(), dow.saffron_dow())
        } else if let Some(mask) = dow.plain_weekday_mask() {
            day_filter = Some(DayFilter::Weekdays(mask));
            (dom.saffron_list(), "*".to_string())
        } else {
            // A `#`/`L` weekday rule: saffron checks it, we filter on the day numbers.
            day_filter = Some(DayFilter::MonthDays(dom.set as u32));
            ("*".to_string(), dow.saffron_dow())
        }
    } else if dow_star {
        if dow_full {
            (dom.saffron_dom(), "*".to_string())
        } else {
            day_filter = Some(DayFilter::Weekdays(dow.weekday_mask()));
            (dom.saffron_dom(), "*".to_string())
        }
    } else {
        (dom.saffron_dom(), dow.saffron_dow())
    };

    let saffron = format!(
        "{} {} {} {} {}",
        minute.saffron_list(),
        hour.saffron_list(),
        dom_text,
        month.saffron_list(),
        dow_text
    );
    let as_written = |spec: &FieldSpec| {
        if spec
            .source
            .bytes()
            .all(|b| b.is_ascii_digit() || b"*/-,".contains(&b))
        {
            spec.source.clone()
        } else {
            spec.saffron_list()
        }
    };
    let description_text = format!(
        "{} {} {} {} {}",
        as_written(&minute),
        as_written(&hour),
        dom_text,
        as_written(&month),
        dow_text
    );
    // `LW` also ends in `W`, but its `L` is no number.
    let nearest_weekday = dom
        .special
        .as_deref()
        .and_then(|s| s.strip_suffix('W'))
        .and_then(|n| n.parse().ok());
    Ok(Translation {
        saffron,
        day_filter,
        fixed_time,
        nearest_weekday,
        description_text,
    })
}

/// One parsed field.
#[derive(Debug, Clone)]
struct FieldSpec {
    field: Field,
    source: String,
    /// Values selected, bit n = value n (day-of-week already folded: 7 -> 0).
    set: u64,
    /// The field text starts with `*` (cron(8)'s notion of "unrestricted" day fields).
    star_prefixed: bool,
    /// A special day rule (`L`, `LW`, `L-3`, `15W`, `5#3`, `5L`) already in saffron syntax.
    special: Option<String>,
}

impl FieldSpec {
    fn is_full(&self) -> bool {
        if self.special.is_some() {
            return false;
        }
        let (min, max) = match self.field {
            Field::DayOfWeek => (0, 6),
            f => f.bounds(),
        };
        let full = ((1u64 << (max + 1)) - 1) & !((1u64 << min) - 1);
        self.set == full
    }

    fn values(&self) -> impl Iterator<Item = u32> + '_ {
        (0..64u32).filter(move |v| self.set & (1u64 << v) != 0)
    }

    /// The set as a comma list, or `*` when it is the literal `*`.
    fn saffron_list(&self) -> String {
        if self.source == "*" {
            return "*".to_string();
        }
        join(self.values())
    }

    fn saffron_dom(&self) -> String {
        match &self.special {
            Some(s) => s.clone(),
            None => self.saffron_list(),
        }
    }

    /// saffron numbers weekdays 1-7 = Sunday-Saturday.
    fn saffron_dow(&self) -> String {
        if let Some(s) = &self.special {
            return s.clone();
        }
        if self.source == "*" {
            return "*".to_string();
        }
        join(self.values().map(|d| d + 1))
    }

    fn weekday_mask(&self) -> u8 {
        (self.set & 0x7f) as u8
    }

    fn plain_weekday_mask(&self) -> Option<u8> {
        self.special.is_none().then(|| self.weekday_mask())
    }
}

fn join(values: impl Iterator<Item = u32>) -> String {
    let mut out = String::new();
    for v in values {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&v.to_string());
    }
    out
}

fn parse_field(field: Field, token: &str) -> Result<FieldSpec, FieldProblem> {
    let items: Vec<&str> = token.split(',').collect();
    if items.iter().any(|i| i.is_empty()) {
        return Err(FieldProblem::EmptyItem {
            token: token.to_string(),
        });
    }
    let mut spec = FieldSpec {
        field,
        source: token.to_string(),
        set: 0,
        star_prefixed: token.starts_with('*'),
        special: None,
    };
    for item in &items {
        if let Some(special) = parse_special(field, item)? {
            if items.len() > 1 {
                return Err(FieldProblem::SpecialInList {
                    token: item.to_string(),
                });
            }
            spec.special = Some(special);
            return Ok(spec);
        }
        spec.set |= parse_item(field, item)?;
    }
    if field == Field::DayOfWeek && spec.set & (1 << 7) != 0 {
        spec.set = (spec.set & !(1 << 7)) | 1;
    }
    Ok(spec)
}

/// `L`-style day rules, returned in saffron syntax. `Ok(None)` when `item` is not one.
fn parse_special(field: Field, item: &str) -> Result<Option<String>, FieldProblem> {
    let upper = item.to_ascii_uppercase();
    match field {
        Field::DayOfMonth => {
            if upper == "L" || upper == "LW" {
                return Ok(Some(upper));
            }
            if let Some(offset) = upper.strip_prefix("L-") {
                let n = parse_number(field, offset, item)?;
                if !(1..=30).contains(&n) {
                    return Err(FieldProblem::OutOfRange {
                        value: offset.to_string(),
                        min: 1,
                        max: 30,
                    });
                }
                return Ok(Some(format!("L-{n}")));
            }
            if let Some(day) = upper.strip_suffix('W') {
                let n = parse_value(field, day, item)?;
                return Ok(Some(format!("{n}W")));
            }
            Ok(None)
        }
        Field::DayOfWeek => {
            if let Some((day, nth)) = upper.split_once('#') {
                let d = parse_value(field, day, item)? % 7;
                let n = parse_number(field, nth, item)?;
                if !(1..=5).contains(&n) {
                    return Err(FieldProblem::NthOutOfRange {
                        token: item.to_string(),
                    });
                }
                return Ok(Some(format!("{}#{n}", d + 1)));
            }
            if let Some(day) = upper.strip_suffix('L') {
                if !day.is_empty() {
                    let d = parse_value(field, day, item)? % 7;
                    return Ok(Some(format!("{}L", d + 1)));
                }
            }
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// One list item: `*`, `*/n`, `a`, `a-b`, `a-b/n`, `a/n`. Returns the bit set.
fn parse_item(field: Field, item: &str) -> Result<u64, FieldProblem> {
    let (min, max) = field.bounds();
    let (range, step) = match item.split_once('/') {
        Some((r, s)) => {
            let step = parse_number(field, s, item)?;
            if step == 0 {
                return Err(FieldProblem::ZeroStep {
                    token: item.to_string(),
                });
            }
            (r, Some(step))
        }
        None => (item, None),
    };
    let (start, end) = if range == "*" {
        (min, max)
    } else if let Some((a, b)) = range.split_once('-') {
        let a = parse_value(field, a, item)?;
        let b = parse_value(field, b, item)?;
        if a > b {
            return Err(FieldProblem::ReversedRange {
                token: item.to_string(),
            });
        }
        (a, b)
    } else {
        let a = parse_value(field, range, item)?;
        // `a/n` means `a-max/n`, as in cron(8).
        (a, if step.is_some() { max } else { a })
    };
    let step = step.unwrap_or(1) as usize;
    Ok((start..=end)
        .step_by(step)
        .fold(0u64, |set, v| set | (1u64 << v)))
}

/// A number or (for month/day-of-week) a name, range-checked.
fn parse_value(field: Field, text: &str, item: &str) -> Result<u32, FieldProblem> {
    let (min, max) = field.bounds();
    let upper = text.to_ascii_uppercase();
    if let Some(i) = field.names().iter().position(|n| *n == upper) {
        return Ok(i as u32 + if field == Field::Month { 1 } else { 0 });
    }
    let value = parse_number(field, text, item)?;
    if value < min || value > max {
        return Err(FieldProblem::OutOfRange {
            value: text.to_string(),
            min,
            max,
        });
    }
    Ok(value)
}

/// A plain decimal number (no sign, no range check).
fn parse_number(field: Field, text: &str, item: &str) -> Result<u32, FieldProblem> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(FieldProblem::Expected {
            expected: field.expectation(),
            found: item.to_string(),
        });
    }
    // Huge numbers are out of range, not unparseable.
    Ok(text.parse::<u32>().unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dow(field: &str) -> String {
        let t = translate(&format!("0 0 1 * {field}")).unwrap();
        t.saffron.rsplit(' ').next().unwrap().to_string()
    }

    fn err(expr: &str) -> String {
        translate(expr).unwrap_err().to_string()
    }

    #[test]
    fn every_numeric_weekday_maps_to_saffron_numbering() {
        // standard: 0=Sun 1=Mon … 6=Sat 7=Sun ; saffron: 1=Sun … 7=Sat
        let expected = ["1", "2", "3", "4", "5", "6", "7", "1"];
        for (d, want) in expected.iter().enumerate() {
            assert_eq!(dow(&d.to_string()), *want, "day-of-week {d}");
        }
    }

    #[test]
    fn every_weekday_name_maps_like_its_number_in_any_case() {
        let names = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
        for (d, name) in names.iter().enumerate() {
            let want = (d + 1).to_string();
            assert_eq!(dow(name), want);
            assert_eq!(dow(&name.to_lowercase()), want);
        }
    }

    #[test]
    fn weekday_ranges_lists_and_steps() {
        let table = [
            ("1-5", "2,3,4,5,6"),
            ("MON-FRI", "2,3,4,5,6"),
            ("mon-fri", "2,3,4,5,6"),
            ("0-6", "1,2,3,4,5,6,7"),
            ("5-7", "1,6,7"),
            ("6,7", "1,7"),
            ("0,7", "1"),
            ("1-7/2", "1,2,4,6"),
            ("0-6/3", "1,4,7"),
            ("SAT,SUN", "1,7"),
            ("3/2", "1,4,6"),
        ];
        for (field, want) in table {
            assert_eq!(dow(field), want, "day-of-week {field}");
        }
    }

    #[test]
    fn weekday_nth_and_last() {
        for d in 0..=7u32 {
            let saffron_day = d % 7 + 1;
            assert_eq!(dow(&format!("{d}#3")), format!("{saffron_day}#3"));
            assert_eq!(dow(&format!("{d}L")), format!("{saffron_day}L"));
        }
        assert_eq!(dow("FRI#3"), "6#3");
        assert_eq!(dow("fril"), "6L");
    }

    #[test]
    fn star_prefixed_weekday_step_makes_days_and() {
        // `*/2` starts with `*`: day-of-month AND day-of-week.
        let t = translate("0 0 1-10 * */2").unwrap();
        assert_eq!(t.saffron, "0 0 1,2,3,4,5,6,7,8,9,10 * *");
        assert_eq!(t.day_filter, Some(DayFilter::Weekdays(0b101_0101)));
        // both restricted: saffron ORs them, no filter
        let t = translate("0 0 1-10 * 1").unwrap();
        assert_eq!(t.day_filter, None);
        assert_eq!(t.saffron, "0 0 1,2,3,4,5,6,7,8,9,10 * 2");
        // `*/1` is the full set: the same as `*`
        let t = translate("0 0 13 * */1").unwrap();
        assert_eq!(t.saffron, "0 0 13 * *");
        assert_eq!(t.day_filter, None);
    }

    #[test]
    fn macros_expand_to_their_standard_meaning() {
        let table = [
            ("@yearly", "0 0 1 1 *"),
            ("@annually", "0 0 1 1 *"),
            ("@monthly", "0 0 1 * *"),
            ("@weekly", "0 0 * * 1"),
            ("@daily", "0 0 * * *"),
            ("@midnight", "0 0 * * *"),
            ("@hourly", "0 * * * *"),
            ("@DAILY", "0 0 * * *"),
        ];
        for (m, want) in table {
            assert_eq!(translate(m).unwrap().saffron, want, "{m}");
        }
        assert!(!translate("@hourly").unwrap().fixed_time);
        assert!(translate("@daily").unwrap().fixed_time);
    }

    #[test]
    fn whitespace_between_and_around_fields_is_fine() {
        let t = translate("  */15 \t 9-17  * *\tMON-FRI ").unwrap();
        assert_eq!(
            t.saffron,
            "0,15,30,45 9,10,11,12,13,14,15,16,17 * * 2,3,4,5,6"
        );
    }

    #[test]
    fn fixed_time_means_neither_minute_nor_hour_starts_with_a_star() {
        assert!(translate("30 2 * * *").unwrap().fixed_time);
        assert!(translate("0,30 1-3 * * *").unwrap().fixed_time);
        // cron(8) looks at the first character only: a step or a later `*` keeps a job fixed.
        assert!(translate("45 0-5/2 * * *").unwrap().fixed_time);
        assert!(translate("0-30/10 2 * * *").unwrap().fixed_time);
        assert!(translate("5/20 2 * * *").unwrap().fixed_time);
        assert!(translate("1,* 2 * * *").unwrap().fixed_time);
        assert!(!translate("* 2 * * *").unwrap().fixed_time);
        assert!(!translate("*/15 2 * * *").unwrap().fixed_time);
        assert!(!translate("30 */2 * * *").unwrap().fixed_time);
        assert!(!translate("0 * * * *").unwrap().fixed_time);
    }

    #[test]
    fn error_messages_name_field_token_and_reason() {
        assert_eq!(err("61 * * * *"), "minute: 61 is out of range 0-59");
        assert_eq!(err("* 24 * * *"), "hour: 24 is out of range 0-23");
        assert_eq!(err("* * 0 * *"), "day-of-month: 0 is out of range 1-31");
        assert_eq!(err("* * * 13 *"), "month: 13 is out of range 1-12");
        assert_eq!(err("* * * * 8"), "day-of-week: 8 is out of range 0-7");
        assert_eq!(
            err("0 12 * * MON-"),
            r#"day-of-week: expected a number 0-7 or a name SUN-SAT, found "MON-""#
        );
        assert_eq!(
            err("* * * * *  *"),
            "expected 5 fields (minute hour day-of-month month day-of-week), found 6"
        );
        assert_eq!(
            err("* * * *"),
            "expected 5 fields (minute hour day-of-month month day-of-week), found 4"
        );
        assert_eq!(
            err("*/0 * * * *"),
            r#"minute: step must be at least 1, found "*/0""#
        );
        assert_eq!(
            err("* 5-1 * * *"),
            r#"hour: range "5-1" is reversed: the start must not be after the end"#
        );
        assert_eq!(err("1,,2 * * * *"), r#"minute: empty list item in "1,,2""#);
        assert_eq!(
            err("* * L,1 * *"),
            r#"day-of-month: "L" cannot be combined with other values in a list"#
        );
        assert_eq!(
            err("* * * * 5#6"),
            r#"day-of-week: the week number in "5#6" must be 1-5"#
        );
        assert_eq!(
            err("@reboot"),
            r#"unknown macro "@reboot": expected one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly"#
        );
        assert_eq!(
            err("   "),
            "the expression is empty; expected 5 fields (minute hour day-of-month month day-of-week) or a macro like @daily"
        );
        assert_eq!(
            err("* * * FOO *"),
            r#"month: expected a number 1-12 or a name JAN-DEC, found "FOO""#
        );
        assert_eq!(
            err("-5 * * * *"),
            r#"minute: expected a number 0-59, found "-5""#
        );
        assert_eq!(
            err("99999999999 * * * *"),
            "minute: 99999999999 is out of range 0-59"
        );
        assert_eq!(err("* * L-31 * *"), "day-of-month: 31 is out of range 1-30");
    }
}
