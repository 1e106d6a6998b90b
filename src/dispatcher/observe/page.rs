//! The dispatcher's status page (`GET /`): one self-contained HTML document rendered from a
//! [`Status`], every value from the data escaped.

use std::fmt::Write as _;

use chrono::DateTime;

use super::status::Status;
use super::{Mode, Observer};
use crate::obs::page::{bar_chart, document, escape, format_number, stat};

/// Paused jobs listed on the status page (all of them in `/status.json`).
const PAUSED_LISTED: usize = 100;

/// How the page refreshes itself, in seconds.
const REFRESH_SECONDS: u32 = 10;

/// `12:34` of an RFC 3339 instant.
fn hhmm(rfc: &str) -> &str {
    rfc.get(11..16).unwrap_or(rfc)
}

/// "in 3 min", "in 2 h 5 min" from `now` to `at`.
fn in_how_long(now: &str, at: &str) -> String {
    let (Ok(now), Ok(at)) = (
        DateTime::parse_from_rfc3339(now),
        DateTime::parse_from_rfc3339(at),
    ) else {
        return String::new();
    };
    let minutes = ((at - now).num_seconds().max(0) + 59) / 60;
    match minutes {
        0 => "now".into(),
        m if m < 60 => format!("in {m} min"),
        m if m < 48 * 60 => format!("in {} h {} min", m / 60, m % 60),
        m => format!("in {} d", m / (24 * 60)),
    }
}

impl Observer {
    /// The status page.
    pub fn render(&self) -> String {
        render(&self.status())
    }
}

/// The status page of `s` (every value from the data escaped).
pub fn render(s: &Status) -> String {
    let mut body = String::new();
    let (title, subtitle) = match &s.mode {
        Mode::DryRun => (
            "cronq dispatcher".to_string(),
            "dry run: dispatches are printed, not sent".to_string(),
        ),
        Mode::Group {
            group,
            member,
            state_topic,
        } => (
            format!("cronq dispatcher · {member}"),
            format!("group {group} · state topic {state_topic}"),
        ),
    };
    let (state, class) = if !s.liveness.alive {
        ("stuck", "bad")
    } else if s.readiness.ready {
        ("ready", "ok")
    } else {
        ("not ready", "warn")
    };
    let _ = write!(
        body,
        "<h1>{} <span class=\"{class}\">● {state}</span></h1><p class=\"muted\">{} · {} UTC · refreshes every {REFRESH_SECONDS} s</p>",
        escape(&title),
        escape(&subtitle),
        escape(s.at.get(..19).unwrap_or(&s.at)).replace('T', " "),
    );
    let not_ready: Vec<String> = s
        .readiness
        .checks
        .iter()
        .filter(|(_, c)| !c.ok)
        .map(|(name, c)| format!("{name}: {}", c.detail))
        .collect();
    if !not_ready.is_empty() {
        let _ = write!(
            body,
            "<section><h2 class=\"warn\">Not ready</h2><ul>{}</ul></section>",
            not_ready
                .iter()
                .map(|l| format!("<li>{}</li>", escape(l)))
                .collect::<String>()
        );
    }

    // Refused writes hold their dispatches (and their shards' cursors) until the rights are back.
    if !s.refused_writes.is_empty() {
        let _ = write!(
            body,
            "<section><h2 class=\"bad\">Writes refused by the broker ({})</h2><p>Not authorized: these partitions' dispatches wait and are retried; nothing is dropped.</p><table><tr><th>topic</th><th>partition</th><th>since</th><th>error</th></tr>",
            s.refused_writes.len()
        );
        for r in &s.refused_writes {
            let _ = write!(
                body,
                "<tr><td class=\"wrap\">{}</td><td>{}</td><td>{}</td><td class=\"wrap\">{}</td></tr>",
                escape(&r.topic),
                r.partition,
                escape(&r.since),
                escape(&r.error),
            );
        }
        body.push_str("</table></section>");
    }

    // Topic mode: where each owned shard is in the schedule topic, and what it rejected.
    if let Some(t) = &s.schedule_topic {
        let rejected: u64 = t.shards.iter().map(|r| r.rejected).sum();
        let class = if rejected > 0 { " class=\"warn\"" } else { "" };
        let _ = write!(
            body,
            "<section><h2{class}>Schedule topic {}</h2><table><tr><th>shard</th><th>offset applied</th><th>jobs</th><th>records rejected</th></tr>",
            escape(&t.topic)
        );
        for r in &t.shards {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                r.shard, r.applied, r.jobs, r.rejected
            );
        }
        body.push_str("</table>");
        if !t.rejected.is_empty() {
            body.push_str("<p><b>last records rejected</b> (the job's last good version stays in force)</p><table><tr><th>at</th><th>partition</th><th>offset</th><th>key</th><th>reason</th></tr>");
            for r in t.rejected.iter().rev() {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"wrap\">{}</td><td class=\"wrap\">{}</td></tr>",
                    escape(&r.at),
                    r.partition,
                    r.offset,
                    escape(&r.key),
                    escape(&r.reason),
                );
            }
            body.push_str("</table>");
        }
        body.push_str("</section>");
    }

    // A shard whose cursor did not decode may have been started from the wrong place.
    if !s.unreadable_cursors.is_empty() {
        let class = if s.unreadable_cursors.iter().any(|u| u.nothing_decoded) {
            "bad"
        } else {
            "warn"
        };
        let _ = write!(
            body,
            "<section><h2 class=\"{class}\">Unreadable cursor records ({})</h2><table><tr><th>shard</th><th>taken over</th><th>started after</th><th>undecodable offsets</th></tr>",
            s.unreadable_cursors.len()
        );
        for u in &s.unreadable_cursors {
            let offsets = u
                .offsets
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            let from = if u.nothing_decoded {
                format!(
                    "{} (no cursor decoded: now minus the longest catch-up window)",
                    u.started_from
                )
            } else {
                format!("{} (the last readable cursor)", u.started_from)
            };
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td class=\"wrap\">{}</td><td class=\"wrap\">{}</td></tr>",
                u.shard,
                escape(&u.at),
                escape(&from),
                escape(&offsets),
            );
        }
        body.push_str("</table></section>");
    }

    // A pause stops dispatches: it is the first thing an operator must see.
    if let Some(all) = &s.paused.all {
        let _ = write!(
            body,
            "<section><h2 class=\"bad\">ALL JOBS PAUSED</h2><p>Nothing is dispatched: <code>cronq pause --all</code> since {}{} by {}{}. <code>cronq resume --all</code> ends it.</p></section>",
            escape(&all.since),
            all.until.as_ref().map_or(String::new(), |u| format!(" until {}", escape(u))),
            escape(&all.by),
            all.reason.as_ref().map_or(String::new(), |r| format!(": {}", escape(r))),
        );
    }
    if !s.paused.jobs.is_empty() {
        let _ = write!(
            body,
            "<section><h2 class=\"warn\">Paused jobs ({})</h2><table><tr><th>job</th><th>since</th><th>until</th><th>by</th><th>reason</th></tr>",
            s.paused.jobs.len()
        );
        for p in s.paused.jobs.iter().take(PAUSED_LISTED) {
            let _ = write!(
                body,
                "<tr><td class=\"wrap\">{}</td><td>{}</td><td>{}</td><td class=\"wrap\">{}</td><td class=\"wrap\">{}</td></tr>",
                escape(p.job.as_deref().unwrap_or("")),
                escape(&p.since),
                escape(p.until.as_deref().unwrap_or("until resumed")),
                escape(&p.by),
                escape(p.reason.as_deref().unwrap_or("")),
            );
        }
        body.push_str("</table>");
        if s.paused.jobs.len() > PAUSED_LISTED {
            let _ = write!(
                body,
                "<p class=\"muted\">and {} more (all in /status.json)</p>",
                s.paused.jobs.len() - PAUSED_LISTED
            );
        }
        body.push_str("</section>");
    }

    // The numbers that matter first.
    let last_hour: u64 = s.minutes.iter().map(|m| m.dispatched).sum();
    let last_skew = s.minutes.iter().rev().find_map(|m| m.skew_max_ms);
    body.push_str("<section><div class=\"grid\">");
    stat(
        &mut body,
        &format_number(s.jobs as f64),
        "jobs scheduled here",
        Some(""),
    );
    stat(
        &mut body,
        &format_number(last_hour as f64),
        "dispatched, last 60 min",
        Some(""),
    );
    stat(
        &mut body,
        &last_skew.map_or("–".into(), |ms| {
            format!("{} s", format_number(ms as f64 / 1000.0))
        }),
        "skew, last settled minute (max)",
        Some(if last_skew.is_some_and(|ms| ms > 60_000) {
            "warn"
        } else {
            ""
        }),
    );
    stat(
        &mut body,
        &format_number(s.undelivered as f64),
        "undelivered",
        Some(if s.undelivered > 0 { "warn" } else { "" }),
    );
    stat(
        &mut body,
        &format_number(s.queue_depth as f64),
        "queued",
        Some(""),
    );
    if let Some(total) = s.total_shards {
        stat(
            &mut body,
            &format!("{} / {total}", s.owned_shards.len()),
            "shards owned",
            Some(""),
        );
    }
    body.push_str("</div></section>");

    // The schedule.
    body.push_str("<section><h2>Schedule</h2>");
    match &s.schedule {
        None => body.push_str("<p class=\"warn\">not loaded yet</p>"),
        Some(sched) => {
            let _ = write!(
                body,
                "<table><tr><th>file</th><td class=\"wrap\">{}</td></tr><tr><th>md5</th><td class=\"wrap\">{}</td></tr><tr><th>loaded</th><td class=\"wrap\">{}</td></tr>",
                escape(&sched.path),
                escape(sched.md5.as_deref().unwrap_or("–")),
                escape(sched.loaded_at.as_deref().unwrap_or("–")),
            );
            match &sched.last_reload {
                None => body.push_str("<tr><th>last reload</th><td class=\"muted\">none since start</td></tr></table>"),
                Some(r) => {
                    let class = if r.result == "ok" { "ok" } else { "bad" };
                    let took = r.took_ms.map(|ms| format!(" in {ms} ms")).unwrap_or_default();
                    let _ = write!(
                        body,
                        "<tr><th>last reload</th><td class=\"wrap\">{} <b class=\"{class}\">{}</b>{}</td></tr></table>",
                        escape(&r.at),
                        escape(r.result),
                        escape(&took)
                    );
                    if !r.problems.is_empty() {
                        let _ = write!(
                            body,
                            "<p class=\"bad\">The last version of the file was not used; the schedule above stays in force until the file changes again.</p><pre class=\"problems\">{}</pre>",
                            escape(&r.problems.join("\n"))
                        );
                    }
                }
            }
        }
    }
    body.push_str("</section>");

    // The last hour.
    let labels: Vec<String> = s
        .minutes
        .iter()
        .map(|m| {
            let skew = m
                .skew_max_ms
                .map(|ms| format!(", skew max {} s", format_number(ms as f64 / 1000.0)))
                .unwrap_or_default();
            format!("{} · {} jobs{skew}", hhmm(&m.minute), m.dispatched)
        })
        .collect();
    let dispatched: Vec<f64> = s.minutes.iter().map(|m| m.dispatched as f64).collect();
    let skew: Vec<f64> = s
        .minutes
        .iter()
        .map(|m| m.skew_max_ms.unwrap_or(0) as f64 / 1000.0)
        .collect();
    let first = s.minutes.first().map_or("", |m| hhmm(&m.minute));
    let last = s.minutes.last().map_or("", |m| hhmm(&m.minute));
    let skew_chart = match s.mode {
        // Nothing is acked in a dry run: no skew to show.
        Mode::DryRun => String::new(),
        Mode::Group { .. } => format!(
            "<p><b>skew</b> <span class=\"muted\">(largest, seconds from slot to ack)</span></p>{}",
            bar_chart("dispatch skew per minute, seconds", &skew, &labels)
        ),
    };
    let _ = write!(
        body,
        "<section><h2>Last 60 minutes</h2><p class=\"muted\">{first} – {last} UTC, one bar a minute; \
hover a bar for its numbers</p><p><b>jobs dispatched</b></p>{}{skew_chart}</section>",
        bar_chart("jobs dispatched per minute", &dispatched, &labels),
    );

    // What comes next.
    let _ = write!(body, "<section><h2>Next {} runs</h2>", s.upcoming.len());
    if s.upcoming.is_empty() {
        body.push_str("<p class=\"muted\">nothing scheduled</p>");
    } else {
        // Two columns, so that a phone has room for long names: the topic goes under the job.
        body.push_str("<table class=\"upcoming\"><tr><th>job <span class=\"muted\">→ topic</span></th><th>when (UTC)</th></tr>");
        for r in &s.upcoming {
            let day = if r.at.get(..10) == s.at.get(..10) {
                String::new()
            } else {
                format!("{} ", r.at.get(..10).unwrap_or(""))
            };
            let _ = write!(
                body,
                "<tr><td class=\"wrap\">{}<br><span class=\"muted\">→ {}</span></td><td>{}{}<br><span class=\"muted\">{}</span></td></tr>",
                escape(&r.job_name),
                escape(&r.topic),
                escape(&day),
                escape(hhmm(&r.at)),
                escape(&in_how_long(&s.at, &r.at)),
            );
        }
        body.push_str("</table>");
    }
    body.push_str("</section>");

    // The group.
    if let Mode::Group { .. } = &s.mode {
        body.push_str("<section><h2>Group</h2>");
        if !s.owned_shards.is_empty() {
            body.push_str("<p><b>shards of this member</b></p><table><tr><th>shard</th><th>cursor (UTC)</th><th>jobs</th><th>not acked</th></tr>");
            for o in &s.owned_shards {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    o.shard,
                    escape(o.cursor.as_deref().map_or("–", hhmm)),
                    o.jobs,
                    o.outstanding
                );
            }
            body.push_str("</table>");
        }
        match &s.group {
            None => body.push_str("<p class=\"muted\">the group's cursor records are read once a minute; not read yet</p>"),
            Some(g) => {
                let verdict = if g.healthy() {
                    "<p class=\"ok\">every shard owned, every cursor within 2 minutes, one schedule</p>".to_string()
                } else {
                    let mut v = String::new();
                    if !g.orphaned.is_empty() {
                        let _ = write!(v, "<p class=\"bad\">shards with no owner: {:?}</p>", g.orphaned);
                    }
                    if !g.lagging.is_empty() {
                        let _ = write!(v, "<p class=\"warn\">cursors more than 2 minutes behind: {:?}</p>", g.lagging);
                    }
                    if !g.future.is_empty() {
                        let _ = write!(v, "<p class=\"bad\">cursors in the future (ahead of this member's clock): {:?}</p>", g.future);
                    }
                    if !g.clock_behind.is_empty() {
                        let _ = write!(v, "<p class=\"bad\">clock behind the cursor (the writer's clock read earlier than its cursor): {:?}</p>", g.clock_behind);
                    }
                    if g.md5_disagree {
                        v.push_str("<p class=\"bad\">members run different schedule files</p>");
                    }
                    v
                };
                let _ = write!(body, "<p><b>members</b> <span class=\"muted\">(cursor records read {} UTC)</span></p>{verdict}<table><tr><th>member</th><th>shards</th><th>schedule md5</th></tr>", escape(hhmm(&g.at)));
                for (member, shards) in &g.members {
                    let md5 = g.md5_by_owner.get(member).map_or("?", String::as_str);
                    let _ = write!(
                        body,
                        "<tr><td class=\"wrap\">{}</td><td>{}</td><td>{}</td></tr>",
                        escape(member),
                        escape(&format!("{shards:?}")),
                        escape(md5.get(..12).unwrap_or(md5))
                    );
                }
                body.push_str("</table><p><b>shards</b></p><table><tr><th>shard</th><th>owner</th><th>cursor (UTC)</th><th>behind</th><th>record age</th></tr>");
                for sh in &g.shards {
                    let owner = match &sh.owner {
                        Some(o) => escape(o),
                        None => "<b class=\"bad\">no owner</b>".into(),
                    };
                    let _ = write!(
                        body,
                        "<tr><td>{}</td><td class=\"wrap\">{owner}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                        sh.shard,
                        escape(sh.cursor.as_deref().map_or("never", hhmm)),
                        sh.behind_minutes.map_or("–".into(), |b| format!("{b} min")),
                        sh.record_age_seconds.map_or("–".into(), |a| format!("{a} s")),
                    );
                }
                body.push_str("</table>");
            }
        }
        body.push_str("</section>");
    }
    body.push_str(
        "<p class=\"muted\">Also: <a href=\"/metrics\">/metrics</a> · <a href=\"/status.json\">/status.json</a> · <a href=\"/healthz\">/healthz</a> · <a href=\"/readyz\">/readyz</a></p>",
    );
    document(&title, REFRESH_SECONDS, &body)
}

#[cfg(test)]
mod tests {
    use crate::clock::Clock;
    use std::path::Path;
    use std::sync::Arc;

    use crate::dispatcher::observe::tests::{metrics_text, observer};
    use crate::dispatcher::observe::{Mode, UpcomingRun};
    use crate::schedule::{parse, LoadOptions};

    #[test]
    fn pauses_are_on_the_page_escaped_the_all_switch_first_and_counted() {
        use crate::dispatcher::control::{ControlRecord, PauseTable, ALL_KEY};
        let (o, clock) = observer(Mode::DryRun);
        assert!(metrics_text(&o).contains("cronq_slots_skipped_total{reason=\"paused\"} 0"));
        let now = clock.now();
        let record = |job: Option<&str>, reason: &str, until: Option<i64>| ControlRecord {
            v: 1,
            job: job.map(str::to_string),
            paused: true,
            reason: Some(reason.into()),
            since: now - chrono::Duration::minutes(5),
            until: until.map(|m| now + chrono::Duration::minutes(m)),
            drop_missed: false,
            by: "ops@host".into(),
            at: now,
        };
        let mut table = PauseTable::default();
        table.apply(
            "<b>job</b>",
            Some(record(Some("<b>job</b>"), "<script>x</script>", Some(30))),
        );
        // Ended by its --until a minute ago: not listed.
        table.apply("over", Some(record(Some("over"), "done", Some(-1))));
        o.pauses_changed(&Arc::new(table.clone()));
        let page = o.render();
        assert!(page.contains("Paused jobs (1)"), "{page}");
        assert!(
            page.contains("&lt;b&gt;job&lt;/b&gt;") && !page.contains("<b>job</b>"),
            "{page}"
        );
        assert!(
            page.contains("&lt;script&gt;") && !page.contains(">over<"),
            "{page}"
        );
        assert!(!page.contains("ALL JOBS PAUSED"));
        table.apply(ALL_KEY, Some(record(None, "incident", None)));
        o.pauses_changed(&Arc::new(table));
        let page = o.render();
        let all = page.find("ALL JOBS PAUSED").expect("the --all banner");
        assert!(all < page.find("Paused jobs").unwrap(), "--all first");
        assert!(
            all < page.find("jobs scheduled here").unwrap(),
            "before the numbers"
        );
        let json = serde_json::to_value(o.status()).unwrap();
        assert_eq!(json["paused"]["all"]["reason"], "incident", "{json}");
        assert_eq!(json["paused"]["jobs"][0]["job"], "<b>job</b>");
        o.paused_skipped(7);
        assert!(metrics_text(&o).contains("cronq_slots_skipped_total{reason=\"paused\"} 7"));
    }

    #[test]
    fn a_hostile_job_name_and_a_rejected_file_are_escaped_on_the_page() {
        let (o, _) = observer(Mode::Group {
            group: "g<b>".into(),
            member: "m\"1".into(),
            state_topic: "g.state".into(),
        });
        o.schedule_loaded(Path::new("/etc/cronq/<s>.json"), "abc");
        let bad = parse(
            br#"{"jobs":[{"jobName":"<img src=x onerror=alert(1)>","job":"x","cronTime":"61 * * * *"}]}"#,
            Path::new("s.json"),
            LoadOptions::default(),
        )
        .expect_err("minute 61");
        o.reload_rejected("def", &bad);
        o.page().upcoming = vec![UpcomingRun {
            job_name: "<script>alert('x')</script>".into(),
            at: "2026-11-29T12:01:00Z".into(),
            topic: "jobs".into(),
        }];
        let html = o.render();
        assert!(
            !html.contains("<script") && !html.contains("<img"),
            "{html}"
        );
        assert!(
            html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"),
            "{html}"
        );
        assert!(
            html.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{html}"
        );
        assert!(html.contains("61"), "the problem is shown: {html}");
        assert!(
            html.contains("g&lt;b&gt;") && html.contains("m&quot;1"),
            "{html}"
        );
        assert!(html.contains("<b class=\"bad\">rejected</b>"), "{html}");
        let text = metrics_text(&o);
        assert!(
            text.contains("cronq_schedule_reloads_total{result=\"rejected\"} 1"),
            "{text}"
        );
    }
}
