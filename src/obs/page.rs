//! The status pages' shared parts: one self-contained HTML document (no scripts, no CDN), its
//! stylesheet, escaping, the figures of a page's top grid, and a small inline SVG bar chart.

use std::fmt::Write as _;

/// A whole page: `title`, refreshed by the browser every `refresh_seconds`, around `body` (HTML).
pub fn document(title: &str, refresh_seconds: u32, body: &str) -> String {
    let title = escape(title);
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<meta http-equiv=\"refresh\" content=\"{refresh_seconds}\">\
<title>{title}</title><style>{STYLE}</style></head>\n<body><main>\n{body}\n</main></body></html>\n"
    )
}

const STYLE: &str = "\
:root{color-scheme:light dark;--fg:#1d2330;--muted:#667085;--bg:#f7f8fa;--card:#fff;--line:#e3e6eb;\
--accent:#3b6fd8;--ok:#2f855a;--warn:#b7791f;--bad:#c53030}\
@media (prefers-color-scheme:dark){:root{--fg:#e6e8ec;--muted:#9aa3b2;--bg:#15181e;--card:#1d2129;\
--line:#2c313c;--accent:#7aa2f7}}\
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--fg);\
font:15px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif}\
main{max-width:1100px;margin:0 auto;padding:16px}\
h1{font-size:1.35rem;margin:.2rem 0 1rem}h2{font-size:1.05rem;margin:0 0 .6rem}\
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px;\
margin:0 0 14px;overflow-x:auto}\
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(150px,1fr));gap:10px}\
.stat{border:1px solid var(--line);border-radius:8px;padding:8px 10px}\
.stat b{display:block;font-size:1.3rem}.stat span{color:var(--muted);font-size:.85rem}\
table{border-collapse:collapse;width:100%;font-size:.9rem}\
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid var(--line);white-space:nowrap}\
th{color:var(--muted);font-weight:600}td.wrap{white-space:normal;word-break:break-word}\
.muted{color:var(--muted)}.ok{color:var(--ok)}.warn{color:var(--warn)}.bad{color:var(--bad)}\
.chart{width:100%;height:auto;max-height:160px}.chart rect{fill:var(--accent)}\
.chart .alt{fill:var(--warn)}.chart text{fill:var(--muted);font-size:10px}\
pre{white-space:pre-wrap;word-break:break-word;font-size:.85rem;margin:0}\
.strip{display:flex;gap:2px}.strip a{display:block;width:9px;height:16px;border-radius:2px;\
background:var(--line)}.strip a.ok{background:var(--ok)}.strip a.warn{background:var(--warn)}\
.strip a.bad{background:var(--bad)}a{color:var(--accent)}";

/// `text` made safe inside HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One figure of a page's top grid: `value` in large type over its `label`; with a `class`, the
/// value's `<b>` carries it (`ok`, `warn`, `bad`, or empty).
pub fn stat(out: &mut String, value: &str, label: &str, class: Option<&str>) {
    let _ = match class {
        Some(class) => write!(
            out,
            "<div class=\"stat\"><b class=\"{class}\">{}</b><span>{}</span></div>",
            escape(value),
            escape(label)
        ),
        None => write!(
            out,
            "<div class=\"stat\"><b>{}</b><span>{}</span></div>",
            escape(value),
            escape(label)
        ),
    };
}

/// An inline SVG bar chart of `values` (oldest first), one bar each, scaled to the largest; each
/// bar's tooltip is its `labels` entry. `title` is read by screen readers.
pub fn bar_chart(title: &str, values: &[f64], labels: &[String]) -> String {
    const HEIGHT: f64 = 100.0;
    let n = values.len().max(1);
    let width = (n * 10) as f64;
    let max = values.iter().copied().fold(0.0_f64, f64::max);
    let mut svg = format!(
        "<svg class=\"chart\" viewBox=\"0 0 {width} {}\" preserveAspectRatio=\"none\" role=\"img\" \
aria-label=\"{}\">",
        HEIGHT + 12.0,
        escape(title)
    );
    for (i, &v) in values.iter().enumerate() {
        let h = if max > 0.0 { v / max * HEIGHT } else { 0.0 };
        let label = labels.get(i).map(String::as_str).unwrap_or("");
        let _ = write!(
            svg,
            "<rect x=\"{}\" y=\"{:.2}\" width=\"8\" height=\"{:.2}\"><title>{}</title></rect>",
            i * 10 + 1,
            HEIGHT - h,
            h,
            escape(label)
        );
    }
    let _ = write!(
        svg,
        "<text x=\"0\" y=\"{}\">max {}</text></svg>",
        HEIGHT + 11.0,
        escape(&format_number(max))
    );
    svg
}

/// `12`, `12.5`, `0.004`: a number without needless decimals.
pub fn format_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_neutralises_markup() {
        assert_eq!(
            escape("<script>alert('x')</script> & \"y\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;y&quot;"
        );
    }

    #[test]
    fn stat_escapes_and_carries_its_class_only_when_given() {
        let mut out = String::new();
        stat(&mut out, "1 < 2", "a & b", Some("warn"));
        stat(&mut out, "3", "c", None);
        assert_eq!(
            out,
            "<div class=\"stat\"><b class=\"warn\">1 &lt; 2</b><span>a &amp; b</span></div>\
<div class=\"stat\"><b>3</b><span>c</span></div>"
        );
    }

    #[test]
    fn bar_chart_scales_to_the_largest_value() {
        let svg = bar_chart(
            "jobs",
            &[0.0, 5.0, 10.0],
            &["a".into(), "b".into(), "<c>".into()],
        );
        assert!(svg.contains("height=\"0.00\""), "{svg}");
        assert!(svg.contains("height=\"50.00\""), "{svg}");
        assert!(svg.contains("height=\"100.00\""), "{svg}");
        assert!(svg.contains("<title>&lt;c&gt;</title>"), "{svg}");
        assert!(svg.contains("max 10"), "{svg}");
    }

    #[test]
    fn document_is_self_contained_and_refreshes() {
        let html = document("cronq <x>", 5, "<p>hi</p>");
        assert!(html.contains("<meta http-equiv=\"refresh\" content=\"5\">"));
        assert!(html.contains("<title>cronq &lt;x&gt;</title>"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("http://") && !html.contains("https://"));
    }
}
