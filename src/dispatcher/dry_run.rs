//! The `--dry-run` sink: each dispatch as one JSON line on stdout, for previews and tests.

use std::io::Write;

use serde::Serialize;
use tokio::sync::mpsc;

use super::observe::{Observer, TopicCounter};
use super::Dispatch;

/// One dry-run line.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DryRunLine<'a> {
    /// The job.
    pub job_name: &'a str,
    /// The slot, RFC 3339 UTC.
    pub scheduled_at: String,
    /// Its priority.
    pub priority: i32,
    /// Its payload.
    pub job: &'a str,
    /// The topic it would go to.
    pub topic: &'a str,
    /// Jobs with a `jitter`: when its record would leave and its run may start.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before: Option<String>,
}

/// Renders `dispatch` as a JSON line (without the newline).
pub fn render(dispatch: &Dispatch, default_topic: &str) -> String {
    let scheduled_at = crate::wire::slot_text(dispatch.scheduled_at);
    let line = DryRunLine {
        job_name: &dispatch.spec.name,
        not_before: crate::schedule::record::not_before_for(&dispatch.spec, &scheduled_at),
        scheduled_at,
        priority: dispatch.spec.priority,
        job: &dispatch.spec.job,
        topic: dispatch.spec.topic.as_deref().unwrap_or(default_topic),
    };
    // Serializing plain strings and integers cannot fail.
    serde_json::to_string(&line).unwrap_or_default()
}

/// Prints every dispatch from `rx` until the channel closes, flushing whenever it runs dry so a
/// reader of the pipe sees each minute as it happens. Returns how many lines were written. Counts
/// the lines per topic in `observer`'s `cronq_dispatched_total`.
pub async fn print_lines(
    mut rx: mpsc::Receiver<Dispatch>,
    default_topic: String,
    observer: std::sync::Arc<Observer>,
) -> std::io::Result<u64> {
    // Not `stdout().lock()`: the guard is not Send and this future crosses awaits.
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout());
    let mut written = 0;
    // A few topics: each counter resolved once, counted per flush.
    let mut printed: Vec<(String, TopicCounter, u64)> = Vec::new();
    while let Some(d) = rx.recv().await {
        let mut next = Some(d);
        while let Some(d) = next {
            writeln!(out, "{}", render(&d, &default_topic))?;
            written += 1;
            let topic = d.spec.topic.as_deref().unwrap_or(&default_topic);
            match printed.iter_mut().find(|(t, _, _)| t == topic) {
                Some((_, _, n)) => *n += 1,
                None => printed.push((topic.to_string(), observer.dispatched_to(topic), 1)),
            }
            next = rx.try_recv().ok();
        }
        out.flush()?;
        for (_, counter, n) in &mut printed {
            counter.add(std::mem::take(n));
        }
    }
    out.flush()?;
    Ok(written)
}
