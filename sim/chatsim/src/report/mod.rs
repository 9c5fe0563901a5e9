//! Reports a person would rather look at, and files a CI system can read: per run a folder with
//! `index.html` (one self-contained page: the scenario's story and parameters, the fault
//! schedule, the invariant table with every violation, the replay command, the charts),
//! charts as SVG and PNG, `sequence.svg`, `run.json` and `history.jsonl`; per swarm a page with
//! the failing seeds and charts. Every file is written atomically (a temporary file, then a
//! rename), so an interrupted run never leaves a half-written report over a good one.

pub mod charts;
pub mod sequence;
pub mod viewer;

use crate::run::RunReport;
use crate::scenario::Scenario;
use crate::swarm::SwarmReport;
use charts::{bar_chart, line_chart, Series, Window};
use chatsim_judge::checkers::CHECKS;
use chatsim_judge::{Event, Fault, History};
use chatsim_system::proto::{Millis, MsgId, Path as DeliveryPath};
use chatsim_system::Observation;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// Violations listed per invariant on the page (all of them are in `run.json`).
pub const PAGE_VIOLATIONS_MAX: usize = 200;
/// Faults listed in the schedule table.
pub const PAGE_FAULTS_MAX: usize = 300;

/// Write `contents` to `path` atomically: a temporary file beside it, then a rename.
pub fn write_atomic(path: &Path, contents: impl AsRef<[u8]>) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let file = path
        .file_name()
        .map_or_else(|| "out".into(), |f| f.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{file}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

/// The default folder for a run's report.
pub fn default_run_dir(r: &RunReport) -> PathBuf {
    PathBuf::from(format!("reports/{}-{}", r.scenario, r.seed))
}

pub(crate) fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn secs(t: Millis) -> f64 {
    t as f64 / 1000.0
}

/// The comment lines that open a scenario file: its story.
pub fn story_of(scenario: &Scenario) -> Vec<String> {
    scenario
        .source
        .lines()
        .take_while(|l| l.starts_with('#') || l.trim().is_empty())
        .map(|l| l.trim_start_matches('#').trim().to_string())
        .collect()
}

/// What each transport cost, when the phones poll.
fn transports_html(costs: &[crate::transport::TransportCost]) -> String {
    if costs.is_empty() {
        return String::new();
    }
    let row = |tag: &str, cells: &[String]| {
        let cells: String = cells
            .iter()
            .map(|c| format!("<{tag}>{}</{tag}>", esc(c)))
            .collect();
        format!("<tr>{cells}</tr>")
    };
    let mut b = String::from("<h2>Transports</h2><table id=\"transports\">");
    b.push_str(&row("th", &crate::transport::COLUMNS.map(str::to_string)));
    for c in costs {
        b.push_str(&row("td", &crate::transport::cells(c)));
    }
    b.push_str("</table>\n");
    b
}

/// The lessons that run this scenario, as a line pointing at `chatsim learn`.
fn lessons_html(scenario: &str) -> String {
    let lessons = crate::learn::for_scenario(scenario);
    if lessons.is_empty() {
        return String::new();
    }
    let items: Vec<String> = lessons
        .iter()
        .map(|l| {
            format!(
                "<code>chatsim learn {}</code> ({})",
                esc(l.name),
                esc(l.title)
            )
        })
        .collect();
    format!(
        "<p id=\"lessons\">Lessons on this scenario: {}.</p>\n",
        items.join(", ")
    )
}

/// The scenario's story as HTML paragraphs (blank comment lines separate them).
fn story_html(scenario: &Scenario) -> String {
    let text: String = story_of(scenario)
        .iter()
        .map(|l| {
            if l.is_empty() {
                "</p><p>".to_string()
            } else {
                esc(l) + " "
            }
        })
        .collect();
    format!("<h2>The story</h2><p>{text}</p>\n")
}

/// Render charts into a temporary folder inside `dir`, then move them into place, so a
/// half-drawn chart never replaces a good one.
pub(crate) fn draw_charts(
    dir: &Path,
    stems: &[&str],
    draw: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<(), String> {
    let tmp = dir.join(format!(".charts-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
    let drawn = draw(&tmp);
    let moved = drawn.and_then(|()| {
        for stem in stems {
            for ext in ["svg", "png"] {
                let name = format!("{stem}.{ext}");
                std::fs::rename(tmp.join(&name), dir.join(&name))
                    .map_err(|e| format!("{}: {e}", dir.join(&name).display()))?;
            }
        }
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&tmp);
    moved
}

/// Fan-out cost by group size: for each group text every member device showed, the time
/// from its ✓ to the last member's display, as the median per group size (members when it was
/// sequenced). Empty when the run has no group texts.
pub fn fanout_costs(h: &History) -> Vec<(f64, f64)> {
    let groups = h.memberships();
    let mut acked: BTreeMap<MsgId, (Millis, chatsim_system::proto::ConvId, u64)> = BTreeMap::new();
    let mut shown: BTreeMap<(MsgId, chatsim_system::proto::DeviceId), Millis> = BTreeMap::new();
    let mut texts = std::collections::BTreeSet::new();
    for rec in &h.records {
        let Event::Device { device, obs } = &rec.event else {
            continue;
        };
        match obs {
            Observation::Sent { id, conv, .. } if conv.is_group() => {
                texts.insert(*id);
            }
            Observation::ChangeAsked { id, .. } => {
                texts.remove(id);
            }
            Observation::Acked { id, conv, seq } if conv.is_group() => {
                acked.entry(*id).or_insert((rec.t, *conv, *seq));
            }
            Observation::Displayed { id, conv, .. } if conv.is_group() => {
                shown.entry((*id, *device)).or_insert(rec.t);
            }
            _ => {}
        }
    }
    let mut by_size: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for (id, (t, conv, seq)) in acked.into_iter().filter(|(id, _)| texts.contains(id)) {
        let owed = h.recipients_at(&groups, conv, seq, id.device);
        let last = owed
            .iter()
            .map(|d| shown.get(&(id, *d)).copied())
            .try_fold(t, |m, x| x.map(|x| m.max(x)));
        if let Some(last) = last.filter(|_| !owed.is_empty()) {
            let size = groups.before(conv, seq).len();
            by_size.entry(size).or_default().push((last - t) as f64);
        }
    }
    by_size
        .into_iter()
        .map(|(size, mut v)| {
            v.sort_by(f64::total_cmp);
            (size as f64, percentile(&v, 0.5))
        })
        .collect()
}

/// Fault windows from the history: each fault's start paired with its end.
pub fn fault_windows(h: &History) -> Vec<Window> {
    let mut open: Vec<(Fault, Millis)> = Vec::new();
    let mut out = Vec::new();
    let ends = |start: &Fault, end: &Fault| match (start, end) {
        (Fault::Kill(a), Fault::Restart(b))
        | (Fault::Clog(a), Fault::Unclog(b))
        | (Fault::LatencySpike(a), Fault::LatencySpikeEnd(b))
        | (Fault::DiskSlow(a), Fault::DiskSlowEnd(b))
        | (Fault::DiskFull(a), Fault::DiskFullEnd(b)) => a == b,
        (Fault::Partition(a, b), Fault::PartitionHealed(c, d))
        | (Fault::PartitionOneway(a, b), Fault::PartitionOnewayHealed(c, d)) => a == c && b == d,
        (Fault::DeviceOffline(a), Fault::DeviceOnline(b))
        | (Fault::DeviceSilent(a), Fault::DeviceUnsilent(b))
        | (Fault::DeviceBlackhole(a), Fault::DeviceBlackholeEnd(b)) => a == b,
        _ => false,
    };
    for r in &h.records {
        let Event::Fault(f) = &r.event else { continue };
        match f {
            Fault::Kill(_)
            | Fault::Clog(_)
            | Fault::Partition(..)
            | Fault::PartitionOneway(..)
            | Fault::DeviceOffline(_)
            | Fault::DeviceSilent(_)
            | Fault::DeviceBlackhole(_)
            | Fault::LatencySpike(_) => open.push((f.clone(), r.t)),
            Fault::DeviceDrop(_) => out.push(Window {
                from: secs(r.t),
                to: secs(r.t) + 0.05,
                label: f.to_string(),
            }),
            end => {
                if let Some(i) = open.iter().position(|(s, _)| ends(s, end)) {
                    let (s, t0) = open.remove(i);
                    out.push(Window {
                        from: secs(t0),
                        to: secs(r.t),
                        label: s.to_string(),
                    });
                }
            }
        }
    }
    out.extend(open.into_iter().map(|(s, t0)| Window {
        from: secs(t0),
        to: secs(h.end),
        label: s.to_string(),
    }));
    out.sort_by(|a, b| a.from.total_cmp(&b.from));
    out
}

/// Delivery latency (display time minus send time) per path, in ms.
pub fn latencies(h: &History) -> BTreeMap<DeliveryPath, Vec<f64>> {
    let mut sent: BTreeMap<MsgId, Millis> = BTreeMap::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut out: BTreeMap<DeliveryPath, Vec<f64>> = BTreeMap::new();
    for r in &h.records {
        match &r.event {
            Event::Device {
                obs: Observation::Sent { id, .. },
                ..
            } => {
                sent.entry(*id).or_insert(r.t);
            }
            Event::Device {
                device,
                obs: Observation::Displayed { id, path, .. },
            } => {
                if let (true, Some(t0)) = (seen.insert((*device, *id)), sent.get(id)) {
                    out.entry(*path)
                        .or_default()
                        .push(r.t.saturating_sub(*t0) as f64);
                }
            }
            _ => {}
        }
    }
    for v in out.values_mut() {
        v.sort_by(f64::total_cmp);
    }
    out
}

/// Each path's sorted latencies as a cumulative distribution, one series a path.
pub(crate) fn cdf_series(lat: &BTreeMap<DeliveryPath, Vec<f64>>) -> Vec<Series> {
    lat.iter()
        .map(|(path, v)| Series {
            name: format!("{path} ({} deliveries)", v.len()),
            points: v
                .iter()
                .enumerate()
                .map(|(i, x)| (*x, (i + 1) as f64 / v.len() as f64))
                .collect(),
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A step line: each value holds until the next change, and the last one until `end`.
fn steps(changes: &[(f64, f64)], end: f64) -> Vec<(f64, f64)> {
    let mut pts = Vec::with_capacity(changes.len() * 2 + 1);
    let mut prev = 0.0;
    for &(x, y) in changes {
        pts.push((x, prev));
        pts.push((x, y));
        prev = y;
    }
    pts.push((end, prev));
    pts
}

/// Connected devices, messages in flight (sent, not yet acked) and inbox depth over time.
pub fn timeline(h: &History, samples: &[(Millis, usize)]) -> Vec<Series> {
    let mut connected = std::collections::BTreeSet::new();
    let mut acked = std::collections::BTreeSet::new();
    let (mut in_flight, mut conn_pts, mut flight_pts) = (0i64, vec![(0.0, 0.0)], vec![(0.0, 0.0)]);
    for r in &h.records {
        let Event::Device { device, obs } = &r.event else {
            continue;
        };
        let x = secs(r.t);
        match obs {
            Observation::Connected { .. } => {
                connected.insert(*device);
                conn_pts.push((x, connected.len() as f64));
            }
            Observation::Disconnected { .. } => {
                connected.remove(device);
                conn_pts.push((x, connected.len() as f64));
            }
            Observation::Sent { .. } => {
                in_flight += 1;
                flight_pts.push((x, in_flight as f64));
            }
            Observation::Acked { id, .. } if acked.insert(*id) => {
                in_flight -= 1;
                flight_pts.push((x, in_flight as f64));
            }
            _ => {}
        }
    }
    let end = secs(h.end);
    vec![
        Series {
            name: "connected devices".into(),
            points: steps(&conn_pts, end),
        },
        Series {
            name: "messages in flight (sent, no ✓ yet)".into(),
            points: steps(&flight_pts, end),
        },
        Series {
            name: "inbox entries in storage".into(),
            points: samples.iter().map(|(t, n)| (secs(*t), *n as f64)).collect(),
        },
    ]
}

pub(crate) fn chart_block(stem: &str, caption: &str) -> String {
    format!(
        r#"<figure><img src="{stem}.svg" alt="{caption}" width="900" height="420"><figcaption>{caption} (<a href="{stem}.png">PNG</a>, <a href="{stem}.svg">SVG</a>)</figcaption></figure>"#,
        caption = esc(caption)
    )
}

const STYLE: &str = "body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
.ok{color:#185c18;font-weight:bold}.bad{color:#b00;font-weight:bold}pre{background:#f6f6f6;padding:8px;overflow-x:auto}
code{background:#f3f3f3;padding:1px 4px}figure{margin:1.5em 0}figcaption{color:#555;font-size:90%}";

/// A tiny check the CI's browser test reads: a script error or an image that did not load
/// marks the page, so a headless browser's DOM dump shows it.
const CHECK_SCRIPT: &str = r#"<script>
window.addEventListener('error', function () { document.body.setAttribute('data-check', 'script-error'); });
window.addEventListener('load', function () {
  var bad = Array.prototype.filter.call(document.images, function (i) { return !i.complete || i.naturalWidth === 0; });
  if (document.body.getAttribute('data-check') !== 'script-error') {
    document.body.setAttribute('data-check', bad.length ? 'broken-images' : 'ok');
  }
});
</script>"#;

pub(crate) fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title><style>{STYLE}</style></head>\n<body data-check=\"pending\">\n{body}\n{CHECK_SCRIPT}\n</body></html>\n",
        esc(title)
    )
}

/// Create report folder `dir` and give back how to write a file into it: atomically, an error
/// naming the file.
pub(crate) fn folder(
    dir: &Path,
) -> Result<impl Fn(&str, String) -> Result<(), String> + '_, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(move |name: &str, contents: String| {
        write_atomic(&dir.join(name), contents)
            .map_err(|e| format!("{}: {e}", dir.join(name).display()))
    })
}

/// A history as JSON lines, one record a line.
pub(crate) fn history_jsonl(h: &History) -> String {
    let mut jsonl = String::new();
    for rec in &h.records {
        jsonl.push_str(&serde_json::to_string(rec).expect("records are serialisable"));
        jsonl.push('\n');
    }
    jsonl
}

/// Write the report of one run into `dir`; `trace` picks the message the sequence diagram
/// follows (default: the first violation's message, else the first message sent).
pub fn write_run_report(
    dir: &Path,
    r: &RunReport,
    scenario: &Scenario,
    trace: Option<&str>,
) -> Result<(), String> {
    let w = folder(dir)?;
    let h = &r.history;

    w("run.json", crate::output::json(r))?;
    w("history.jsonl", history_jsonl(h))?;

    let lat = latencies(h);
    let all: Vec<f64> = {
        let mut v: Vec<f64> = lat.values().flatten().copied().collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let series = cdf_series(&lat);
    let (p50, p95, p99) = (
        percentile(&all, 0.5),
        percentile(&all, 0.95),
        percentile(&all, 0.99),
    );
    let markers = [
        (p50, format!("p50 {p50:.0} ms")),
        (p95, format!("p95 {p95:.0} ms")),
        (p99, format!("p99 {p99:.0} ms")),
    ];
    let windows = fault_windows(h);
    let lines = timeline(h, &r.samples);
    let fanout = fanout_costs(h);
    let stems: &[&str] = if fanout.is_empty() {
        &["latency", "timeline"]
    } else {
        &["latency", "timeline", "fanout"]
    };
    draw_charts(dir, stems, |tmp| {
        if !fanout.is_empty() {
            let series = [Series {
                name: "median, ✓ to the last member's display".into(),
                points: fanout.clone(),
            }];
            line_chart(
                tmp,
                "fanout",
                "Fan-out cost by group size",
                "members when sequenced",
                "ms",
                &series,
                &[],
                &[],
            )?;
        }
        line_chart(
            tmp,
            "latency",
            "Delivery latency (CDF), by path",
            "ms from send to display",
            "fraction delivered",
            &series,
            &[],
            &markers,
        )?;
        line_chart(
            tmp,
            "timeline",
            "Devices, messages in flight and inbox depth; faults shaded",
            "simulated seconds",
            "count",
            &lines,
            &windows,
            &[],
        )
    })?;

    let first_violation = r
        .invariants
        .iter()
        .flat_map(|v| v.violations.iter())
        .find(|v| v.message.is_some());
    let focus_id = trace
        .map(str::to_string)
        .or_else(|| first_violation.and_then(|v| v.message.clone()))
        .or_else(|| {
            h.records.iter().find_map(|rec| match &rec.event {
                Event::Device {
                    obs: Observation::Sent { id, .. },
                    ..
                } => Some(id.to_string()),
                _ => None,
            })
        });
    let focus = focus_id.as_deref().map(|id| sequence::focus(h, id));
    let title = match (&focus, first_violation) {
        (Some(f), Some(v)) if Some(&f.id) == v.message.as_ref() => format!(
            "{} seed {}: {} broken for {}",
            r.scenario, r.seed, v.invariant, f.id
        ),
        (Some(f), _) => format!("{} seed {}: message {}", r.scenario, r.seed, f.id),
        (None, _) => format!("{} seed {}", r.scenario, r.seed),
    };
    w(
        "sequence.svg",
        sequence::sequence_svg(&r.frame_log, h, focus.as_ref(), &title),
    )?;

    w(
        "index.html",
        run_page(r, scenario, (p50, p95, p99), !fanout.is_empty()),
    )
}

fn run_page(
    r: &RunReport,
    scenario: &Scenario,
    (p50, p95, p99): (f64, f64, f64),
    fanout: bool,
) -> String {
    let mut b = String::new();
    let verdict = if r.passed() {
        r#"<span class="ok">PASS</span>"#
    } else {
        r#"<span class="bad">FAIL</span>"#
    };
    let _ = writeln!(
        b,
        "<h1>chatsim: {} seed {} {verdict}</h1>",
        esc(&r.scenario),
        r.seed
    );
    let bugs = if r.bugs.is_empty() {
        "none (the real design)".to_string()
    } else {
        r.bugs.join(", ")
    };
    let _ = writeln!(
        b,
        "<p>Engine <b>{}</b>, bug-zoo switches: <b>{}</b>, trace hash <code>{}</code>.<br>Replay: <code>{}</code></p>",
        r.engine,
        esc(&bugs),
        r.trace_hash,
        esc(&r.replay)
    );
    if !r.skipped.is_empty() {
        let _ = writeln!(
            b,
            "<p><b>Skipped on {}</b> (this engine cannot express them):</p><ul>",
            r.engine
        );
        for s in &r.skipped {
            let _ = writeln!(b, "<li>{}</li>", esc(s));
        }
        b.push_str("</ul>\n");
    }
    b.push_str(&story_html(scenario));
    b.push_str(&lessons_html(&r.scenario));
    b.push_str(&transports_html(&r.transports));
    let _ = writeln!(b, "<h2>Invariants</h2><table><tr><th>check</th><th>verdict</th><th>checked</th><th>violations</th></tr>");
    for v in &r.invariants {
        let verdict = if v.holds {
            r#"<span class="ok">holds</span>"#
        } else {
            r#"<span class="bad">BROKEN</span>"#
        };
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td>{verdict}</td><td>{}</td><td>{}</td></tr>",
            v.name,
            v.checked,
            v.violations.len()
        );
    }
    b.push_str("</table>\n");
    for v in r.invariants.iter().filter(|v| !v.holds) {
        let _ = writeln!(b, "<h3>{} violations ({} of {})</h3><table><tr><th>message</th><th>text</th><th>device</th><th>conversation</th><th>at (ms)</th><th>what happened</th></tr>", v.name, v.violations.len().min(PAGE_VIOLATIONS_MAX), v.violations.len());
        for x in v.violations.iter().take(PAGE_VIOLATIONS_MAX) {
            let o = |s: &Option<String>| esc(s.as_deref().unwrap_or(""));
            let _ = writeln!(
                b,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                o(&x.message),
                o(&x.body),
                o(&x.device),
                o(&x.conv),
                x.at.map_or(String::new(), |t| t.to_string()),
                esc(&x.detail)
            );
        }
        b.push_str("</table>\n");
    }
    b.push_str(&viewer::section(r));
    let st = &r.stats;
    let _ = writeln!(
        b,
        "<h2>Counts</h2><p>{} messages sent, {} acked, {} delivered ({} duplicates dropped, {} gaps detected); {} faults; {} frames; {} inbox entries written, {} left; {} texts stored at the end; {:.1} s simulated in {:.2} s wall. Delivery latency p50 {p50:.0} ms, p95 {p95:.0} ms, p99 {p99:.0} ms.</p>",
        st.messages_sent, st.messages_acked, st.messages_delivered, st.duplicates_dropped, st.gaps_detected, st.faults, st.frames, st.inbox_written, st.inbox_left, st.bodies_kept, st.sim_seconds, st.wall_seconds
    );
    b.push_str("<h2>Charts</h2>\n");
    b.push_str(&chart_block(
        "latency",
        "Delivery latency CDF by path (live push, inbox drain, gap fetch), p50/p95/p99 marked",
    ));
    b.push_str(&chart_block(
        "timeline",
        "Connected devices, messages in flight and inbox depth over time, fault windows shaded",
    ));
    if fanout {
        b.push_str(&chart_block(
            "fanout",
            "Fan-out cost by group size: median time from the sender's ✓ to the last member's display, per group size",
        ));
    } else {
        b.push_str(
            "<p>Fan-out cost by group size: this run has no group texts every member showed.</p>\n",
        );
    }
    b.push_str("<h2>Sequence diagram</h2>\n");
    b.push_str(r#"<figure><img src="sequence.svg" alt="message sequence diagram"><figcaption>The frames of the violating (or traced) message, faults marked (<a href="sequence.svg">SVG</a>)</figcaption></figure>"#);
    let _ = writeln!(
        b,
        "<h2>Fault schedule</h2><table><tr><th>at (ms)</th><th>fault</th></tr>"
    );
    let faults: Vec<_> = r
        .history
        .records
        .iter()
        .filter(|rec| matches!(rec.event, Event::Fault(_) | Event::Healed))
        .collect();
    for rec in faults.iter().take(PAGE_FAULTS_MAX) {
        let what = match &rec.event {
            Event::Fault(f) => f.to_string(),
            _ => "every fault healed".into(),
        };
        let _ = writeln!(b, "<tr><td>{}</td><td>{}</td></tr>", rec.t, esc(&what));
    }
    b.push_str("</table>\n");
    if faults.len() > PAGE_FAULTS_MAX {
        let _ = writeln!(
            b,
            "<p>{} more in history.jsonl.</p>",
            faults.len() - PAGE_FAULTS_MAX
        );
    }
    let text = &scenario.source;
    let _ = writeln!(
        b,
        "<h2>Parameters</h2><p>The scenario file, <code>{}</code>:</p><pre>{}</pre>",
        esc(&scenario.path.display().to_string()),
        esc(text)
    );
    b.push_str(r#"<p>Files: <a href="run.json">run.json</a>, <a href="history.jsonl">history.jsonl</a> (one event per line), <a href="sequence.svg">sequence.svg</a>.</p>"#);
    page(&format!("chatsim {} seed {}", r.scenario, r.seed), &b)
}

/// Write a swarm's report into `dir`.
/// Write a gate's report into `dir`: `gate.json`, an `index.html` with a line per scenario,
/// and each scenario's swarm report in a folder of its name.
pub fn write_gate_report(
    dir: &Path,
    g: &crate::swarm::Gate,
    scenarios: &[Scenario],
) -> Result<(), String> {
    let w = folder(dir)?;
    w(
        "gate.json",
        serde_json::to_string_pretty(g).expect("reports are serialisable"),
    )?;
    let verdict = if g.seeds_failed == 0 {
        "<span class=\"ok\">PASS</span>"
    } else {
        "<span class=\"bad\">FAIL</span>"
    };
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<h1>chatsim swarm: {} scenarios {verdict}</h1><p>{} seeds on {} ({:.0} a minute), {} failed; seeds {}..{}; binary <code>{}</code>.</p>",
        g.scenarios.len(),
        g.seeds_run,
        g.engine,
        g.seeds_per_minute,
        g.seeds_failed,
        g.seed_range.first,
        g.seed_range.last,
        esc(&g.binary)
    );
    b.push_str("<table><tr><th>scenario</th><th>seeds</th><th>failed</th><th>broken</th></tr>");
    for (r, s) in g.scenarios.iter().zip(scenarios) {
        write_swarm_report(&dir.join(&r.scenario), r, s)?;
        let broken: Vec<String> = r
            .invariants
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{} ({n})", esc(k)))
            .collect();
        let _ = write!(
            b,
            "<tr><td><a href=\"{0}/index.html\">{0}</a></td><td>{1}</td><td class=\"{3}\">{2}</td><td>{4}</td></tr>",
            esc(&r.scenario),
            r.seeds_run,
            r.seeds_failed,
            if r.seeds_failed == 0 { "ok" } else { "bad" },
            broken.join(", ")
        );
    }
    b.push_str("</table>\n<p>Files: <a href=\"gate.json\">gate.json</a>.</p>");
    w("index.html", page("chatsim swarm gate", &b))
}

pub fn write_swarm_report(dir: &Path, r: &SwarmReport, scenario: &Scenario) -> Result<(), String> {
    let w = folder(dir)?;
    w(
        "swarm.json",
        serde_json::to_string_pretty(r).expect("reports are serialisable"),
    )?;
    let bars: Vec<(String, f64)> = CHECKS
        .iter()
        .map(|c| (c.to_string(), *r.invariants.get(*c).unwrap_or(&0) as f64))
        .collect();
    let walls: Vec<f64> = r
        .seeds
        .iter()
        .filter(|o| !o.panicked)
        .map(|o| o.wall_seconds * 1000.0)
        .collect();
    let max = walls.iter().copied().fold(1.0_f64, f64::max);
    let bins = 12usize;
    let width = max / bins as f64;
    let mut hist = vec![0.0; bins];
    for x in &walls {
        hist[((x / width) as usize).min(bins - 1)] += 1.0;
    }
    let hist_bars: Vec<(String, f64)> = hist
        .iter()
        .enumerate()
        .map(|(i, n)| (format!("{:.0}", (i as f64 + 0.5) * width), *n))
        .collect();
    draw_charts(dir, &["failures", "walltime"], |tmp| {
        bar_chart(
            tmp,
            "failures",
            "Seeds that broke each check",
            "seeds",
            &bars,
        )?;
        bar_chart(
            tmp,
            "walltime",
            "Wall time per seed (ms, bin centres)",
            "seeds",
            &hist_bars,
        )
    })?;

    let mut b = String::new();
    let verdict = if r.seeds_failed == 0 {
        r#"<span class="ok">PASS</span>"#
    } else {
        r#"<span class="bad">FAIL</span>"#
    };
    let _ = writeln!(b, "<h1>chatsim swarm: {} {verdict}</h1><p>{} seeds on {}, {} failed; bug-zoo switches: {}; {:.1} s wall.</p>", esc(&r.scenario), r.seeds_run, r.engine, r.seeds_failed, esc(&if r.bugs.is_empty() { "none".to_string() } else { r.bugs.join(", ") }), r.wall_seconds);
    b.push_str(&story_html(scenario));
    b.push_str("<h2>Checks</h2><table><tr><th>check</th><th>seeds broken</th></tr>");
    for (name, n) in &r.invariants {
        let _ = write!(b, "<tr><td>{name}</td><td>{n}</td></tr>");
    }
    b.push_str("</table>\n");
    b.push_str(&coverage_html(&r.coverage));
    b.push_str("<h2>Failing seeds</h2><table><tr><th>seed</th><th>broken</th><th>first violation</th><th>replay</th></tr>");
    for f in &r.failures {
        let _ = writeln!(
            b,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td></tr>",
            f.seed,
            esc(&f.broken.join(", ")),
            esc(&f.first_violation),
            esc(&f.replay)
        );
    }
    b.push_str("</table>\n");
    b.push_str(&chart_block("failures", "Seeds that broke each check"));
    b.push_str(&chart_block("walltime", "Histogram of wall time per seed"));
    w(
        "index.html",
        page(&format!("chatsim swarm {}", r.scenario), &b),
    )
}

/// The swarm page's coverage table: unreached probes first (with why each matters), then how
/// often, on how many seeds and first on which seed each reached one was.
fn coverage_html(c: &crate::coverage::Coverage) -> String {
    let total = chatsim_system::probe::Probe::ALL.len();
    let mut b = format!(
        "<h2>Coverage</h2><p>{} of {total} probes reached (a probe is a rare or defensive branch a machine took); the unreached come first.</p><table><tr><th>probe</th><th>hits</th><th>seeds</th><th>first seed</th><th>why it matters</th></tr>",
        c.reached()
    );
    for row in c.rows() {
        let (class, first) = match row.first_seed {
            Some(seed) => ("", seed.to_string()),
            None => (r#" class="bad""#, "unreached".to_string()),
        };
        let _ = write!(
            b,
            "<tr><td{class}>{}</td><td>{}</td><td>{}</td><td>{first}</td><td>{}</td></tr>",
            esc(row.name),
            row.hits,
            row.seeds,
            esc(row.reason)
        );
    }
    b.push_str("</table>\n");
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatsim_system::proto::{ConvId, DeviceId, GroupOp, UserId};

    // The fan-out cost of a group text is the time from its ✓ to the last member's display,
    // keyed by the members it was sequenced for; a text some member never showed is left out.
    #[test]
    fn fanout_cost_is_ack_to_last_display_per_group_size() {
        let g = ConvId::group(1);
        let dev = |u: u32| DeviceId::primary(UserId(u));
        let mut h = History::new(3);
        let create = MsgId {
            device: dev(0),
            n: 0,
        };
        let op = GroupOp::Create {
            members: vec![UserId(1), UserId(2)],
        };
        h.observe(
            0,
            dev(0),
            Observation::ChangeAsked {
                id: create,
                conv: g,
                op,
            },
        );
        h.observe(
            1,
            dev(0),
            Observation::Acked {
                id: create,
                conv: g,
                seq: 1,
            },
        );
        let shown = |id: MsgId, seq| Observation::Displayed {
            id,
            conv: g,
            seq,
            path: DeliveryPath::Live,
            body: b"x".to_vec(),
            sent_at: 0,
        };
        for (n, seq, t_ack, shows) in [
            (1, 2, 10, vec![(1, 20), (2, 35)]),
            (2, 3, 50, vec![(1, 60)]),
        ] {
            let id = MsgId { device: dev(0), n };
            let sent = Observation::Sent {
                id,
                conv: g,
                body: b"x".to_vec(),
            };
            h.observe(t_ack - 5, dev(0), sent);
            h.observe(t_ack, dev(0), Observation::Acked { id, conv: g, seq });
            for (u, t) in shows {
                h.observe(t, dev(u), shown(id, seq));
            }
        }
        assert_eq!(fanout_costs(&h), vec![(3.0, 25.0)]);
    }
}
