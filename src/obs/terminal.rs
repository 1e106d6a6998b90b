//! Text from a topic on its way to a terminal: `cronq tail`'s lines, `cronq status`'s owners and
//! pauses, the records `cronq pause`/`resume` print. Whoever can write a topic chooses that text,
//! so every control character in it (escape sequences, carriage returns, newlines) and every
//! bidirectional override is written as `\uXXXX` ([`escape_controls`]): a record can neither
//! drive the operator's terminal (ESC `[2J` clears it) nor spoof a line of the output.

/// Characters that change how a terminal shows what follows: C0 and C1 controls, DEL, and the
/// Unicode bidirectional marks and overrides.
pub fn is_terminal_control(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `text` with every terminal control character written as `\uXXXX` (as in JSON, so JSON stays
/// JSON).
pub fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if is_terminal_control(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_keeps_ordinary_text_and_json_as_they_are() {
        let plain = r#"{"jobName":"nightly-backup","job":"backup \"orders\" ünïcode ✓"}"#;
        assert_eq!(escape_controls(plain), plain);
        // A raw control character inside a JSON string becomes the JSON escape for it.
        let escaped = escape_controls("{\"a\":\"x\u{1b}y\"}");
        let parsed: serde_json::Value = serde_json::from_str(&escaped).unwrap();
        assert_eq!(parsed["a"], "x\u{1b}y");
    }

    #[test]
    fn every_control_a_terminal_acts_on_is_escaped() {
        let hostile = "a\u{1b}[2J\u{7}\r\n\u{8}\u{7f}\u{9b}31m\u{202e}\u{2066}b";
        let escaped = escape_controls(hostile);
        assert!(!escaped.chars().any(is_terminal_control), "{escaped:?}");
        assert_eq!(
            escaped,
            "a\\u001b[2J\\u0007\\u000d\\u000a\\u0008\\u007f\\u009b31m\\u202e\\u2066b"
        );
    }
}
