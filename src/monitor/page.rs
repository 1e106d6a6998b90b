//! The monitor's status page (`GET /` on `--http`) and a run's page (`GET /runs/{dispatchId}`):
//! HTML rendered from views the HTTP side reads from the database ([`super::api`]), with the
//! shared helpers of [`crate::obs::page`], so they look like the dispatcher's and worker's pages.
//!
//! Everything from the topics (job names, workers, who, reasons, a job's own stdout and stderr) is
//! untrusted: every such text goes through [`escape`], and every link through [`path_segment`].

use std::fmt::Write as _;

use chrono::{DateTime, SecondsFormat, Utc};

use super::model::{Attempt, AuditEntry, Run, RunState};
use super::notify::path_segment;
use crate::obs::page::{document, escape, stat};

/// How often the pages reload themselves.
const REFRESH_SECONDS: u32 = 15;

/// Runs in a job's strip.
pub const STRIP_RUNS: usize = 30;

/// Jobs on one page of the job list.
pub const JOBS_PER_PAGE: usize = 200;

/// What the status page shows.
#[derive(Debug, Clone, Default)]
pub struct IndexView {
    /// When it was read.
    pub now: DateTime<Utc>,
    /// The latest run of each job failing now (newest first).
    pub failing: Vec<Run>,
    /// Recent late and missed runs (newest first).
    pub late_and_missed: Vec<Run>,
    /// One page of jobs, each with its last [`STRIP_RUNS`] runs, newest first.
    pub jobs: Vec<(String, Vec<Run>)>,
    /// The page of jobs shown starts after this job (none: the first page).
    pub from: Option<String>,
    /// The job the next page starts after, when there is one.
    pub next_from: Option<String>,
    /// The latest audit entries (newest first).
    pub audit: Vec<AuditEntry>,
}

fn instant(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".into(),
        |t| t.to_rfc3339_opts(SecondsFormat::Secs, true),
    )
}

/// The page's colour class of a state.
fn class(state: RunState) -> &'static str {
    match state {
        RunState::Succeeded => "ok",
        RunState::Failed | RunState::TimedOut | RunState::DeadLettered | RunState::Missed => "bad",
        RunState::Late => "warn",
        _ => "muted",
    }
}

fn duration(run: &Run) -> String {
    run.duration().map_or_else(
        || "-".into(),
        |d| format!("{:.1} s", d.num_milliseconds() as f64 / 1000.0),
    )
}

/// A link to a run's page, relative to the page it is on (`prefix`: `""` on `/`).
fn run_link(prefix: &str, run: &Run, text: &str) -> String {
    format!(
        "<a href=\"{prefix}runs/{}\">{}</a>",
        path_segment(&run.dispatch_id),
        escape(text)
    )
}

/// A table of runs (failing now; late and missed).
fn runs_table(out: &mut String, runs: &[Run], empty: &str) {
    if runs.is_empty() {
        let _ = write!(out, "<p class=\"muted\">{}</p>", escape(empty));
        return;
    }
    out.push_str(
        "<table><tr><th>job</th><th>slot</th><th>outcome</th><th>attempts</th><th>exit</th>\
<th>worker</th><th>stderr (end)</th></tr>",
    );
    for run in runs {
        let tail: String = last_line(&run.stderr_tail);
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td>\
<td class=\"wrap\">{}</td></tr>",
            escape(&run.job),
            run_link("", run, &instant(Some(run.slot))),
            class(run.state),
            run.state.as_str(),
            run.attempts,
            run.last_exit_code
                .map_or_else(|| "-".into(), |c| c.to_string()),
            escape(run.worker.as_deref().unwrap_or("-")),
            escape(&tail),
        );
    }
    out.push_str("</table>");
}

/// The last non-empty line of `text`, at most 200 characters.
fn last_line(text: &str) -> String {
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    let n = line.chars().count();
    if n > 200 {
        line.chars().skip(n - 200).collect()
    } else {
        line.to_string()
    }
}

/// A job's strip: its runs oldest to newest, left to right, one coloured cell each with a title.
fn strip(out: &mut String, runs: &[Run]) {
    out.push_str("<div class=\"strip\">");
    for run in runs.iter().take(STRIP_RUNS).rev() {
        let _ = write!(
            out,
            "<a class=\"{}\" href=\"runs/{}\" title=\"{} {}\"></a>",
            class(run.state),
            path_segment(&run.dispatch_id),
            escape(&instant(Some(run.slot))),
            run.state.as_str(),
        );
    }
    out.push_str("</div>");
}

/// The status page.
pub fn index(view: &IndexView) -> String {
    let mut body = String::from("<h1>cronq monitor</h1>");
    body.push_str("<section><div class=\"grid\">");
    stat(
        &mut body,
        &view.failing.len().to_string(),
        "jobs failing now",
        Some(if view.failing.is_empty() { "ok" } else { "bad" }),
    );
    stat(
        &mut body,
        &view.late_and_missed.len().to_string(),
        "late or missed (24 h)",
        Some(if view.late_and_missed.is_empty() {
            "ok"
        } else {
            "warn"
        }),
    );
    stat(
        &mut body,
        &view.jobs.len().to_string(),
        "jobs on this page",
        None,
    );
    stat(&mut body, &instant(Some(view.now)), "read at", None);
    body.push_str("</div></section>");

    body.push_str("<section id=\"failing\"><h2>Failing now</h2>");
    runs_table(&mut body, &view.failing, "No job is failing.");
    body.push_str("</section>");

    body.push_str("<section id=\"late-missed\"><h2>Late and missed</h2>");
    runs_table(
        &mut body,
        &view.late_and_missed,
        "No late or missed run in the last 24 hours.",
    );
    body.push_str("</section>");

    body.push_str("<section id=\"jobs\"><h2>Jobs</h2>");
    if view.jobs.is_empty() {
        body.push_str("<p class=\"muted\">No runs yet.</p>");
    } else {
        body.push_str(
            "<table><tr><th>job</th><th>last outcome</th><th>last slot</th><th>last 30 runs</th></tr>",
        );
        for (job, runs) in &view.jobs {
            let _ = write!(
                body,
                "<tr data-job=\"{}\"><td>{}</td>",
                escape(job),
                escape(job)
            );
            match runs.first() {
                Some(last) => {
                    let _ = write!(
                        body,
                        "<td class=\"{}\">{}</td><td>{}</td>",
                        class(last.state),
                        last.state.as_str(),
                        run_link("", last, &instant(Some(last.slot))),
                    );
                }
                None => body.push_str("<td>-</td><td>-</td>"),
            }
            body.push_str("<td>");
            strip(&mut body, runs);
            body.push_str("</td></tr>");
        }
        body.push_str("</table>");
    }
    let mut pages = Vec::new();
    if view.from.is_some() {
        pages.push("<a href=\"./\">first page</a>".to_string());
    }
    if let Some(next) = &view.next_from {
        pages.push(format!(
            "<a href=\"?from={}\">next {JOBS_PER_PAGE} jobs</a>",
            path_segment(next)
        ));
    }
    if !pages.is_empty() {
        let _ = write!(body, "<p>{}</p>", pages.join(" · "));
    }
    body.push_str("</section>");

    body.push_str("<section id=\"audit\"><h2>Audit log</h2>");
    if view.audit.is_empty() {
        body.push_str("<p class=\"muted\">No operator action recorded.</p>");
    } else {
        body.push_str(
            "<table><tr><th>when</th><th>who</th><th>what</th><th>job</th><th>reason</th></tr>",
        );
        for entry in &view.audit {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"wrap\">{}</td></tr>",
                escape(&instant(Some(entry.at))),
                escape(&entry.who),
                escape(&entry.what),
                escape(entry.job.as_deref().unwrap_or("(all jobs)")),
                escape(entry.reason.as_deref().unwrap_or("")),
            );
        }
        body.push_str("</table>");
    }
    body.push_str("</section>");
    document("cronq monitor", REFRESH_SECONDS, &body)
}

/// A run's page: the run, and each attempt with its exit code, worker and output tails.
pub fn run(run: &Run, attempts: &[Attempt]) -> String {
    let mut body = format!(
        "<p><a href=\"../\">← cronq monitor</a></p><h1>{} <span class=\"{}\">{}</span></h1>",
        escape(&run.dispatch_id),
        class(run.state),
        run.state.as_str()
    );
    body.push_str("<section><table>");
    for (name, value) in [
        ("job", run.job.clone()),
        ("slot", instant(Some(run.slot))),
        ("dispatched", instant(run.dispatched_at)),
        ("started", instant(run.started_at)),
        ("finished", instant(run.finished_at)),
        ("duration", duration(run)),
        ("attempts", run.attempts.to_string()),
        (
            "last exit code",
            run.last_exit_code
                .map_or_else(|| "-".into(), |c| c.to_string()),
        ),
        ("worker", run.worker.clone().unwrap_or_else(|| "-".into())),
        ("deadline", instant(run.deadline)),
        ("manual", if run.manual { "yes" } else { "no" }.into()),
    ] {
        let _ = write!(
            body,
            "<tr><th>{name}</th><td class=\"wrap\">{}</td></tr>",
            escape(&value)
        );
    }
    body.push_str("</table></section>");
    if attempts.is_empty() {
        body.push_str(
            "<section id=\"attempts\"><h2>Attempts</h2><p class=\"muted\">No attempt reported.</p>",
        );
        if !run.stderr_tail.is_empty() {
            let _ = write!(
                body,
                "<h2>stderr (end)</h2><pre class=\"stderr\">{}</pre>",
                escape(&run.stderr_tail)
            );
        }
        body.push_str("</section>");
    }
    for a in attempts {
        let _ = write!(
            body,
            "<section class=\"attempt\"><h2>Attempt {} <span class=\"{}\">{}</span></h2>\
<p>exit code {} · worker {} · started {} · finished {} · {} ms</p>\
<h2>stdout (end)</h2><pre class=\"stdout\">{}</pre>\
<h2>stderr (end)</h2><pre class=\"stderr\">{}</pre></section>",
            a.attempt,
            match a.status.as_str() {
                "succeeded" => "ok",
                "failed" | "timed_out" => "bad",
                _ => "warn",
            },
            escape(&a.status),
            a.exit_code.map_or_else(|| "-".into(), |c| c.to_string()),
            escape(&a.worker),
            instant(a.started_at),
            instant(a.finished_at),
            a.duration_ms,
            escape(&a.stdout_tail),
            escape(&a.stderr_tail),
        );
    }
    document(
        &format!("{} · cronq monitor", run.dispatch_id),
        REFRESH_SECONDS,
        &body,
    )
}

/// The page of a run the database does not hold (404).
pub fn no_run(dispatch_id: &str) -> String {
    document(
        "run not found · cronq monitor",
        REFRESH_SECONDS,
        &format!(
            "<p><a href=\"../\">← cronq monitor</a></p><h1>No run {}</h1>\
<p class=\"muted\">Not in the monitor's history (never dispatched, or pruned after --history).</p>",
            escape(dispatch_id)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed_run() -> Run {
        let mut run = Run::new(
            "<b>evil</b>@2026-12-07T10:00:00Z".into(),
            "<b>evil</b>".into(),
            "2026-12-07T10:00:00Z".parse().unwrap(),
            RunState::Failed,
        );
        run.attempts = 2;
        run.last_exit_code = Some(1);
        run.worker = Some("w\"1".into());
        run.stderr_tail = "boom <script>alert(1)</script>".into();
        run
    }

    #[test]
    fn a_runs_stderr_is_escaped_on_its_page_and_on_the_index() {
        let run = failed_run();
        let attempt = Attempt {
            dispatch_id: run.dispatch_id.clone(),
            attempt: 1,
            status: "failed".into(),
            exit_code: Some(1),
            started_at: None,
            finished_at: None,
            duration_ms: 12,
            stdout_tail: "a & b".into(),
            stderr_tail: "<script>alert('x')</script>".into(),
            worker: "w1".into(),
        };
        let html = super::run(&run, &[attempt]);
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"));
        assert!(html.contains("a &amp; b"));
        assert!(!html.contains("<b>evil"));
        let view = IndexView {
            failing: vec![run.clone()],
            jobs: vec![(run.job.clone(), vec![run.clone()])],
            ..IndexView::default()
        };
        let html = index(&view);
        assert!(!html.contains("<script"), "{html}");
        assert!(!html.contains("<b>evil"), "{html}");
        assert!(html.contains("&lt;b&gt;evil&lt;/b&gt;"));
        // The link to the run encodes its id as one path segment.
        assert!(
            html.contains("href=\"runs/%3Cb%3Eevil%3C%2Fb%3E@2026-12-07T10:00:00Z\""),
            "{html}"
        );
    }

    #[test]
    fn the_strip_shows_the_runs_oldest_first_with_a_title_each() {
        let runs: Vec<Run> = (0..40)
            .rev()
            .map(|m| {
                let slot: DateTime<Utc> = "2026-12-07T10:00:00Z".parse().unwrap();
                let slot = slot + chrono::Duration::minutes(m);
                let state = if m % 2 == 0 {
                    RunState::Succeeded
                } else {
                    RunState::Failed
                };
                Run::new(format!("a@{m}"), "a".into(), slot, state)
            })
            .collect();
        let mut out = String::new();
        strip(&mut out, &runs);
        assert_eq!(out.matches("<a ").count(), STRIP_RUNS);
        let first = out
            .find("title=\"2026-12-07T10:10:00Z succeeded\"")
            .unwrap();
        let last = out.find("title=\"2026-12-07T10:39:00Z failed\"").unwrap();
        assert!(first < last, "{out}");
    }

    #[test]
    fn the_audit_log_shows_who_what_job_and_reason_escaped() {
        let view = IndexView {
            audit: vec![AuditEntry {
                at: "2026-12-07T10:00:30Z".parse().unwrap(),
                who: "alice@ops".into(),
                what: "pause".into(),
                job: Some("held".into()),
                reason: Some("INC-7: <maintenance>".into()),
                detail: serde_json::Value::Null,
                topic: "g.control".into(),
                partition: 0,
                offset: 3,
            }],
            next_from: Some("job #200".into()),
            ..IndexView::default()
        };
        let html = index(&view);
        assert!(
            html.contains("<td>alice@ops</td><td>pause</td><td>held</td>"),
            "{html}"
        );
        assert!(html.contains("INC-7: &lt;maintenance&gt;"));
        assert!(html.contains("href=\"?from=job%20%23200\""), "{html}");
    }
}
