//! The worker's status page (`GET /`): one self-contained HTML document rendered from a
//! [`StatusView`]; every text from the topic or the configuration is escaped.

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};

use super::status::StatusView;
use super::{Observer, DEAD_LETTERS, POOL_BUCKET, POOL_WINDOW, RESULTS};
use crate::obs::page::{document, escape, format_number, stat};

/// How often the page reloads itself.
const REFRESH_SECONDS: u32 = 5;

impl Observer {
    /// The status page.
    pub fn page(&self) -> String {
        render(&self.snapshot())
    }
}

fn time_of_day(t: DateTime<Utc>) -> String {
    t.format("%H:%M:%S").to_string()
}

fn seconds(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else if s < 120.0 {
        format!("{s:.1} s")
    } else if s < 7200.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

fn status_class(status: &str) -> &'static str {
    match status {
        "succeeded" => "ok",
        "failed" | "timed_out" => "bad",
        _ => "warn",
    }
}

/// The pool chart: one column per [`POOL_BUCKET`] over [`POOL_WINDOW`]; the pale bar is the pool's
/// size, the solid bar the executors running a job, the line the autoscaler's target.
fn pool_chart(view: &StatusView) -> String {
    const HEIGHT: f64 = 100.0;
    let columns = (POOL_WINDOW.as_secs() / POOL_BUCKET.as_secs()) as i64;
    let step = POOL_BUCKET.as_secs() as i64;
    let width = columns as f64 * 10.0;
    let top = view
        .pool_history
        .iter()
        .map(|s| s.size.max(s.target))
        .max()
        .unwrap_or(0)
        .max(view.max_workers.min(view.pool_size.max(1) * 2))
        .max(1) as f64;
    let last = view.pool_history.last().map(|s| s.at).unwrap_or(view.now);
    let column_of = |at: DateTime<Utc>| columns - 1 - (last - at).num_seconds() / step;
    let y = |v: usize| HEIGHT - v as f64 / top * HEIGHT;
    let mut svg = format!(
        "<svg class=\"chart pool\" viewBox=\"0 0 {width} {HEIGHT}\" preserveAspectRatio=\"none\" \
style=\"height:140px;max-height:none\" role=\"img\" aria-label=\"pool size and target, last 10 minutes\">\
<line x1=\"0\" y1=\"{HEIGHT}\" x2=\"{width}\" y2=\"{HEIGHT}\" style=\"stroke:var(--line)\"/>"
    );
    let mut target_line = Vec::new();
    for s in &view.pool_history {
        let col = column_of(s.at);
        if !(0..columns).contains(&col) {
            continue;
        }
        let x = col as f64 * 10.0;
        let tip = format!(
            "{}: size {}, target {}, busy {}",
            time_of_day(s.at),
            s.size,
            s.target,
            s.busy
        );
        let _ = write!(
            svg,
            "<g><title>{}</title><rect x=\"{}\" y=\"{:.2}\" width=\"8\" height=\"{:.2}\" \
style=\"fill:var(--accent);opacity:.3\"/><rect x=\"{}\" y=\"{:.2}\" width=\"8\" height=\"{:.2}\" \
style=\"fill:var(--accent)\"/></g>",
            escape(&tip),
            x + 1.0,
            y(s.size),
            HEIGHT - y(s.size),
            x + 1.0,
            y(s.busy),
            HEIGHT - y(s.busy),
        );
        target_line.push(format!(
            "{:.1},{:.2} {:.1},{:.2}",
            x,
            y(s.target),
            x + 10.0,
            y(s.target)
        ));
    }
    if !target_line.is_empty() {
        let _ = write!(
            svg,
            "<polyline points=\"{}\" style=\"fill:none;stroke:var(--warn);stroke-width:2;\
vector-effect:non-scaling-stroke\"/>",
            target_line.join(" ")
        );
    }
    svg.push_str("</svg>");
    format!(
        "{svg}<div class=\"muted\" style=\"display:flex;justify-content:space-between;font-size:.8rem\">\
<span>10 min ago</span><span>scale 0–{}</span><span>now</span></div>\
<p class=\"muted\" style=\"font-size:.85rem;margin:.4rem 0 0\">\
<span style=\"color:var(--accent);opacity:.45\">■</span> pool size &nbsp;\
<span style=\"color:var(--accent)\">■</span> running a job &nbsp;\
<span style=\"color:var(--warn)\">━</span> target</p>",
        format_number(top)
    )
}

/// The status page of `view`. Every text from the topic or the configuration is escaped.
pub fn render(view: &StatusView) -> String {
    // The shared stylesheet plus this page's own: names get room and the table scrolls sideways
    // instead of breaking a name into one letter per line; on a phone, secondary columns go.
    let mut b = String::from(
        "<style>td.name{min-width:11em}@media (max-width:640px){.wide{display:none}}</style>",
    );
    let _ = write!(
        b,
        "<h1>cronq worker <span class=\"muted\">{}</span></h1>",
        escape(&view.worker)
    );
    let (class, word) = if view.ready {
        ("ok", "Ready")
    } else {
        ("warn", "Not ready")
    };
    let _ = write!(
        b,
        "<p id=\"readiness\"><b class=\"{class}\">{word}</b> <span class=\"muted\">· group {} · topic {} · \
brokers {} · up {} · {}</span></p>",
        escape(&view.group),
        escape(&view.topic),
        escape(&view.brokers),
        escape(&seconds(view.uptime_seconds as f64)),
        escape(&view.now.to_rfc3339_opts(SecondsFormat::Secs, true)),
    );
    if !view.ready {
        b.push_str("<ul>");
        for (name, check) in view.checks.iter().filter(|(_, c)| !c.ok) {
            let _ = write!(
                b,
                "<li><b>{}</b>: {}</li>",
                escape(name),
                escape(&check.detail)
            );
        }
        b.push_str("</ul>");
    }

    // At a glance.
    let total_lag: u64 = view.lag.iter().map(|p| p.lag).sum();
    let failed = view.runs.get("failed").copied().unwrap_or(0)
        + view.runs.get("timed_out").copied().unwrap_or(0);
    let letters: u64 = view.dead_letters.values().sum();
    b.push_str("<section><div class=\"grid\">");
    stat(
        &mut b,
        &format!("{} / {}", view.pool_size, view.pool_target),
        &format!(
            "pool size / target ({}–{})",
            view.min_workers, view.max_workers
        ),
        None,
    );
    stat(&mut b, &view.in_flight.to_string(), "running now", None);
    stat(&mut b, &view.queue_depth.to_string(), "queued here", None);
    stat(&mut b, &total_lag.to_string(), "lag (records)", None);
    stat(
        &mut b,
        &view.runs.get("succeeded").copied().unwrap_or(0).to_string(),
        "succeeded",
        None,
    );
    stat(&mut b, &failed.to_string(), "failed or timed out", None);
    stat(&mut b, &letters.to_string(), "dead letters", None);
    stat(
        &mut b,
        &view.duplicates_skipped.to_string(),
        "duplicates skipped",
        None,
    );
    b.push_str("</div></section>");

    // The pool.
    b.push_str("<section id=\"pool\"><h2>Pool, last 10 minutes</h2>");
    b.push_str(&pool_chart(view));
    b.push_str("</section>");

    // Running now.
    let _ = write!(
        b,
        "<section id=\"running\"><h2>Running now <span class=\"muted\">({})</span></h2>",
        view.running.len()
    );
    if view.running.is_empty() {
        b.push_str("<p class=\"muted\">No job is running.</p>");
    } else {
        b.push_str(
            "<table><tr><th>job</th><th class=\"wide\">dispatchId</th><th>attempt</th><th class=\"wide\">since</th><th>for</th></tr>",
        );
        for r in &view.running {
            let _ = write!(
                b,
                "<tr><td class=\"wrap name\">{}</td><td class=\"wrap muted wide\">{}</td><td>{}</td><td class=\"wide\">{}</td><td>{}</td></tr>",
                escape(&r.job_name),
                escape(&r.dispatch_id),
                r.attempt,
                time_of_day(r.since),
                escape(&seconds(r.running_seconds)),
            );
        }
        b.push_str("</table>");
    }
    b.push_str("</section>");

    // Lag.
    let _ = write!(
        b,
        "<section id=\"lag\"><h2>Lag per partition <span class=\"muted\">of {}</span></h2>",
        escape(&view.topic)
    );
    if view.lag.is_empty() {
        b.push_str("<p class=\"muted\">No partition assigned (yet).</p>");
    } else {
        b.push_str("<table><tr><th>partition</th><th>position</th><th>end</th><th>lag</th></tr>");
        let opt = |v: Option<i64>| v.map_or_else(|| "–".to_string(), |v| v.to_string());
        for p in &view.lag {
            let class = if p.lag == 0 { "" } else { " class=\"warn\"" };
            let _ = write!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td{class}>{}</td></tr>",
                p.partition,
                opt(p.position),
                opt(p.end),
                p.lag
            );
        }
        b.push_str("</table>");
    }
    b.push_str("</section>");

    // Results.
    let _ = write!(
        b,
        "<section id=\"results\"><h2>Last results <span class=\"muted\">({} of at most {RESULTS})</span></h2>",
        view.results.len()
    );
    if view.results.is_empty() {
        b.push_str("<p class=\"muted\">No job has finished yet.</p>");
    } else {
        b.push_str(
            "<table><tr><th class=\"wide\">finished</th><th>job</th><th>status</th><th class=\"wide\">attempt</th><th>took</th></tr>",
        );
        for r in &view.results {
            let _ = write!(
                b,
                "<tr><td class=\"wide\">{}</td><td class=\"wrap name\" title=\"{}\">{}</td><td class=\"{}\">{}</td><td class=\"wide\">{}</td><td>{}</td></tr>",
                time_of_day(r.finished_at),
                escape(&r.dispatch_id),
                escape(&r.job_name),
                status_class(r.status),
                escape(r.status),
                r.attempt,
                escape(&seconds(r.duration_seconds)),
            );
        }
        b.push_str("</table>");
    }
    b.push_str("</section>");

    // Dead letters.
    let _ = write!(
        b,
        "<section id=\"dead-letters\"><h2>Recent dead letters <span class=\"muted\">({} of at most {DEAD_LETTERS})</span></h2>",
        view.recent_dead_letters.len()
    );
    if view.recent_dead_letters.is_empty() {
        b.push_str("<p class=\"muted\">None.</p>");
    } else {
        b.push_str(
            "<table><tr><th class=\"wide\">at</th><th>reason</th><th>job</th><th>partition</th><th>offset</th></tr>",
        );
        for d in &view.recent_dead_letters {
            let _ = write!(
                b,
                "<tr><td class=\"wide\">{}</td><td class=\"bad\">{}</td><td class=\"wrap name\">{}</td><td title=\"{}\">{}</td><td>{}</td></tr>",
                time_of_day(d.at),
                escape(d.reason),
                escape(&d.job_name),
                escape(&d.topic),
                d.partition,
                d.offset,
            );
        }
        b.push_str("</table>");
    }
    b.push_str("</section>");
    document(
        &format!("cronq worker {}", view.worker),
        REFRESH_SECONDS,
        &b,
    )
}

#[cfg(test)]
mod tests {
    use crate::wire::result::DeadReason;
    use crate::worker::executor::{JobRun, Status};
    use crate::worker::observe::tests::{config, message, run};
    use crate::worker::observe::{Observer, PartitionLag};

    #[test]
    fn names_from_the_topic_are_text_on_the_page_never_markup() {
        let hostile = "<script>alert(1)</script>\"'&<img src=x onerror=y>";
        let mut c = config();
        c.report.worker = hostile.into();
        c.topic = hostile.into();
        let observer = Observer::new(&c);
        let _running = observer.attempt_started(&JobRun {
            message: message(hostile, hostile),
            attempt: 1,
        });
        observer
            .attempt_started(&run(hostile, 1))
            .end(Status::Failed);
        observer.dead_letter(DeadReason::Malformed, hostile, hostile, 0, 1);
        observer.lag(
            vec![PartitionLag {
                topic: hostile.into(),
                partition: 0,
                position: None,
                end: None,
                lag: 0,
            }],
            Err(hostile.into()),
        );
        let html = observer.page();
        assert!(
            !html.contains("<script") && !html.contains("<img"),
            "{html}"
        );
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39;&amp;&lt;img"));
        // Every place a name appears: worker, topic, running, results, dead letters, readiness.
        assert!(
            html.matches("&lt;img src=x onerror=y&gt;").count() >= 6,
            "{html}"
        );
    }
}
