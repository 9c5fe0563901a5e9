//! `chatsim learn`: lessons for people preparing for system-design interviews. A lesson is a
//! design choice shown, not told: the broken variant and the right one run on the same
//! scenario, seed and plan side by side; for a mistake, the shrunk story of the violation,
//! what the user's phone showed, the fix; for a trade-off, both variants' measurements; and the
//! questions an interviewer asks next. Each writes a lesson page with both runs.
//!
//! A mistake lesson pins the seed it shows (found by `chatsim hunt`), so it runs in seconds
//! and the same way every time; the lesson test fails if a pinned seed stops catching.

use crate::report::{esc, folder, page, write_run_report};
use crate::run::{run_seed_keeping, Engine, Keep, RunReport};
use crate::scenario::Scenario;
use crate::shrink::shrink;
use crate::transport::percentile;
use chatsim_judge::Event;
use chatsim_system::bugs::{Bug, Bugs};
use chatsim_system::proto::{Millis, MsgId};
use chatsim_system::Observation;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What a lesson shows.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// A classic mistake: a zoo bug on its scenario, on a seed where its invariant breaks.
    Mistake {
        /// The zoo bug that is the mistake.
        bug: Bug,
        /// A seed on which the bug's invariant breaks.
        seed: u64,
    },
    /// A trade-off: two ways to build the same thing, both correct, measured side by side.
    TradeOff {
        /// The scenario both run (by name).
        scenario: &'static str,
        /// The seed.
        seed: u64,
        /// The ways, each as (label, edits of the scenario's text: each `(from, to)` replaces
        /// the first `from`, which must be there).
        ways: &'static [(&'static str, Edits)],
        /// The measurements the lesson is about (keys of [`Variant::measures`]).
        about: &'static [&'static str],
    },
}

/// Edits of a scenario's text: each `(from, to)` replaces the first `from`.
pub type Edits = &'static [(&'static str, &'static str)];

/// One lesson.
#[derive(Clone, Copy, Debug)]
pub struct Lesson {
    /// Its name on the command line.
    pub name: &'static str,
    /// A title.
    pub title: &'static str,
    /// Where the lesson comes from: the design's common mistakes, a real incident, a trade-off.
    pub from: &'static str,
    /// The design choice in two sentences.
    pub choice: &'static str,
    /// The fix (or the rule of thumb, for a trade-off) in two lines.
    pub fix: &'static str,
    /// What is run.
    pub kind: Kind,
    /// What an interviewer asks next, each with a short answer.
    pub questions: &'static [(&'static str, &'static str)],
}

impl Lesson {
    /// The scenario the lesson runs (by name).
    pub fn scenario(&self) -> &'static str {
        match self.kind {
            Kind::Mistake { bug, .. } => bug.info().scenario,
            Kind::TradeOff { scenario, .. } => scenario,
        }
    }
}

/// The lessons for a zoo bug (what `chatsim bugs` links).
pub fn for_bug(bug: Bug) -> Option<&'static Lesson> {
    LESSONS
        .iter()
        .find(|l| matches!(l.kind, Kind::Mistake { bug: b, .. } if b == bug))
}

/// The lessons a scenario shows (what its report links).
pub fn for_scenario(name: &str) -> Vec<&'static Lesson> {
    LESSONS.iter().filter(|l| l.scenario() == name).collect()
}

/// A lesson by name.
pub fn find(name: &str) -> Option<&'static Lesson> {
    LESSONS.iter().find(|l| l.name == name)
}

/// One variant's run, as the lesson shows it.
#[derive(Clone, Debug, Serialize)]
pub struct Variant {
    /// "broken: ..." or "right: ...".
    pub label: String,
    /// Zoo bugs on.
    pub bugs: Vec<String>,
    /// Whether every invariant held.
    pub passed: bool,
    /// Invariants that broke, with their violation counts.
    pub broken: BTreeMap<String, usize>,
    /// The first violation's sentence, if any.
    pub first_violation: Option<String>,
    /// Measurements: counts, latencies (ms), costs per message.
    pub measures: BTreeMap<&'static str, f64>,
    /// The trace hash.
    pub trace_hash: String,
    /// The command that replays it.
    pub replay: String,
    /// Where its full report is (relative to the lesson page).
    pub report: String,
}

/// What running a lesson gave.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// The lesson's name.
    pub lesson: &'static str,
    /// Its title.
    pub title: &'static str,
    /// Where it comes from.
    pub from: &'static str,
    /// The scenario.
    pub scenario: String,
    /// The seed both variants ran.
    pub seed: u64,
    /// The choice.
    pub choice: &'static str,
    /// The broken variant then the right one, or a trade-off's ways in order.
    pub variants: Vec<Variant>,
    /// For a mistake: the invariant it must break.
    pub invariant: Option<&'static str>,
    /// For a mistake: the shrunk story of the violation, one line an event.
    pub story: Vec<String>,
    /// For a mistake: how many events the shrunk scenario kept, of how many.
    pub shrunk_events: Option<(usize, usize)>,
    /// For a mistake: what the user's phones showed.
    pub phone: Vec<String>,
    /// The fix.
    pub fix: &'static str,
    /// The questions and answers.
    pub questions: Vec<(&'static str, &'static str)>,
    /// For a trade-off: the measurements the lesson is about.
    pub about: Vec<&'static str>,
    /// Whether the lesson showed what it teaches: a mistake's broken variant breaks its
    /// invariant and the right one passes; a trade-off's two variants both pass.
    pub shown: bool,
    /// The lesson page.
    pub page: String,
}

/// The measurements every variant carries.
pub fn measures(r: &RunReport, s: &Scenario) -> BTreeMap<&'static str, f64> {
    let mut sent: BTreeMap<MsgId, Millis> = BTreeMap::new();
    let mut acked: BTreeSet<MsgId> = BTreeSet::new();
    let mut ack_ms = Vec::new();
    let mut shown: BTreeSet<(chatsim_system::proto::DeviceId, MsgId)> = BTreeSet::new();
    let mut display_ms = Vec::new();
    for rec in &r.history.records {
        let Event::Device { device, obs } = &rec.event else {
            continue;
        };
        match obs {
            Observation::Sent { id, .. } => {
                sent.entry(*id).or_insert(rec.t);
            }
            Observation::Acked { id, .. } => {
                if let (true, Some(t0)) = (acked.insert(*id), sent.get(id)) {
                    ack_ms.push(rec.t.saturating_sub(*t0) as f64);
                }
            }
            Observation::Displayed { id, .. } => {
                if let (true, Some(t0)) = (shown.insert((*device, *id)), sent.get(id)) {
                    display_ms.push(rec.t.saturating_sub(*t0) as f64);
                }
            }
            _ => {}
        }
    }
    let scenario = s;
    let s = &r.stats;
    let delivered = s.messages_delivered.max(1) as f64;
    let mut m = BTreeMap::new();
    m.insert("messages sent", s.messages_sent as f64);
    m.insert("messages delivered", s.messages_delivered as f64);
    m.insert("✓ p50 ms", percentile(ack_ms.clone(), 0.5));
    m.insert("✓ p99 ms", percentile(ack_ms, 0.99));
    m.insert("display p50 ms", percentile(display_ms.clone(), 0.5));
    m.insert("display p99 ms", percentile(display_ms, 0.99));
    m.insert("frames per delivery", s.frames as f64 / delivered);
    m.insert(
        "inbox writes per delivery",
        s.inbox_written as f64 / delivered,
    );
    m.insert("texts storage kept", s.bodies_kept as f64);
    // What the phones' transport cost, over every device (one transport a run here).
    let costs = crate::transport::costs(
        &r.history,
        &r.frame_log,
        scenario.topology.transport,
        r.history.end,
    );
    let sum = |f: &dyn Fn(&crate::transport::TransportCost) -> f64| -> f64 {
        let n: usize = costs.iter().map(|c| c.devices).sum();
        costs.iter().map(|c| f(c) * c.devices as f64).sum::<f64>() / n.max(1) as f64
    };
    m.insert("requests per delivery", sum(&|c| c.requests_per_delivery));
    m.insert(
        "link bytes per delivery",
        sum(&|c| c.link_bytes_per_delivery.unwrap_or(0.0)),
    );
    m.insert("idle phone: requests/h", sum(&|c| c.idle_requests_per_hour));
    m.insert(
        "idle phone: bytes/h",
        sum(&|c| c.idle_bytes_per_hour.unwrap_or(0.0)),
    );
    m
}

fn variant(label: String, r: &RunReport, s: &Scenario, report: &str) -> Variant {
    let broken: BTreeMap<String, usize> = r
        .invariants
        .iter()
        .filter(|v| !v.holds)
        .map(|v| (v.name.to_string(), v.violations.len()))
        .collect();
    let first_violation = r
        .invariants
        .iter()
        .flat_map(|v| v.violations.first())
        .next()
        .map(|v| format!("{}: {}", v.invariant, v.detail));
    Variant {
        label,
        bugs: r.bugs.clone(),
        passed: r.passed(),
        broken,
        first_violation,
        measures: measures(r, s),
        trace_hash: r.trace_hash.clone(),
        replay: r.replay.clone(),
        report: report.to_string(),
    }
}

/// What the phones showed around the first violation of `invariant`: the device that should
/// have seen the message, its screen in that conversation by then, and the sender's side.
pub fn phone_view(r: &RunReport, invariant: &str) -> Vec<String> {
    let Some(v) = r
        .invariants
        .iter()
        .filter(|v| v.name == invariant)
        .flat_map(|v| v.violations.first())
        .next()
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let at = v.at.unwrap_or(r.history.end);
    if let (Some(device), Some(conv)) = (&v.device, &v.conv) {
        let mut bubbles = Vec::new();
        for rec in r.history.records.iter().take_while(|rec| rec.t <= at) {
            if let Event::Device {
                device: d,
                obs:
                    Observation::Displayed {
                        conv: c, body, id, ..
                    },
            } = &rec.event
            {
                if d.to_string() == *device && c.to_string() == *conv {
                    let mine = v.message.as_deref() == Some(&id.to_string());
                    bubbles.push(format!(
                        "[{}{}]",
                        String::from_utf8_lossy(body),
                        if mine { " <- this one" } else { "" }
                    ));
                }
            }
        }
        let shown = if bubbles.is_empty() {
            "nothing".to_string()
        } else {
            let skip = bubbles.len().saturating_sub(8);
            let head = if skip > 0 {
                format!("({skip} earlier) ")
            } else {
                String::new()
            };
            head + &bubbles[skip..].join(" ")
        };
        out.push(format!(
            "{device}'s screen in {conv} at {:.1} s: {shown}",
            at as f64 / 1000.0
        ));
    }
    if let Some(id) = &v.message {
        let mut sender = None;
        for rec in &r.history.records {
            if let Event::Device { device, obs } = &rec.event {
                match obs {
                    Observation::Sent { id: i, body, .. } if i.to_string() == *id => {
                        sender = Some((
                            device.to_string(),
                            String::from_utf8_lossy(body).into_owned(),
                            rec.t,
                            None,
                        ));
                    }
                    Observation::Acked { id: i, .. } if i.to_string() == *id => {
                        if let Some(s) = sender.as_mut() {
                            s.3.get_or_insert(rec.t);
                        }
                    }
                    _ => {}
                }
            }
        }
        if let Some((device, body, t, ack)) = sender {
            out.push(match ack {
                Some(a) => format!(
                    "{device} sent \"{body}\" at {:.1} s and its phone showed ✓ at {:.1} s",
                    t as f64 / 1000.0,
                    a as f64 / 1000.0
                ),
                None => format!(
                    "{device} sent \"{body}\" at {:.1} s; its phone never showed ✓",
                    t as f64 / 1000.0
                ),
            });
        }
    }
    out.push(format!("what went wrong: {}", v.detail));
    out
}

/// A scenario with edits applied to its text.
fn edited(s: &Scenario, edits: Edits) -> Result<Scenario, String> {
    let mut text = s.source.clone();
    for (from, to) in edits {
        if !text.contains(from) {
            return Err(format!(
                "{}: the lesson edits `{from}`, which is not there",
                s.path.display()
            ));
        }
        text = text.replacen(from, to, 1);
    }
    Scenario::parse(&s.path, &text).map_err(|e| e.to_string())
}

/// Run a lesson: both variants, the shrunk story, the page under `dir`.
pub fn run(lesson: &'static Lesson, own: Option<&Path>, dir: &Path) -> Result<Outcome, String> {
    let base =
        crate::catalog::load(Path::new(lesson.scenario()), own).map_err(|e| e.to_string())?;
    let run = |s: &Scenario, seed: u64, bugs: &Bugs| {
        run_seed_keeping(Engine::Madsim, s, seed, bugs, Keep::REPORT).map_err(|e| e.to_string())
    };
    let (seed, runs, labels, invariant, about, bugs) = match lesson.kind {
        Kind::Mistake { bug, seed } => {
            let bugs: Bugs = [bug].into_iter().collect();
            let broken = run(&base, seed, &bugs)?;
            let right = run(&base, seed, &Bugs::default())?;
            (
                seed,
                vec![(broken, base.clone()), (right, base.clone())],
                vec![
                    format!("broken: --bug {bug}"),
                    "right: the design".to_string(),
                ],
                Some(bug.info().caught_by),
                Vec::new(),
                Some(bugs),
            )
        }
        Kind::TradeOff {
            seed, ways, about, ..
        } => {
            let mut runs = Vec::new();
            let mut labels = Vec::new();
            for (label, edits) in ways {
                let s = edited(&base, edits)?;
                runs.push((run(&s, seed, &Bugs::default())?, s));
                labels.push((*label).to_string());
            }
            (seed, runs, labels, None, about.to_vec(), None)
        }
    };
    let mut variants = Vec::new();
    for (i, ((r, s), label)) in runs.iter().zip(labels).enumerate() {
        let sub = format!("{}", (b'a' + i as u8) as char);
        write_run_report(&dir.join(&sub), r, s, None)?;
        variants.push(variant(label, r, s, &format!("{sub}/index.html")));
    }
    let (mut story, mut shrunk_events, mut phone) = (Vec::new(), None, Vec::new());
    let shown = match (invariant, &bugs) {
        (Some(inv), Some(bugs)) => {
            if variants[0].broken.contains_key(inv) {
                // The phones are shown from the shrunk run, so they tell the same story.
                let x = shrink(&base, seed, bugs, Some(inv)).map_err(|e| e.to_string())?;
                phone = phone_view(&x.report, inv);
                story = x.story;
                shrunk_events = Some((x.events_after, x.events_before));
            }
            variants[0].broken.contains_key(inv) && variants[1].passed
        }
        _ => variants.iter().all(|v| v.passed),
    };
    let outcome = Outcome {
        lesson: lesson.name,
        title: lesson.title,
        from: lesson.from,
        scenario: base.name(),
        seed,
        choice: lesson.choice,
        variants,
        invariant,
        story,
        shrunk_events,
        phone,
        fix: lesson.fix,
        questions: lesson.questions.to_vec(),
        about,
        shown,
        page: dir.join("index.html").display().to_string(),
    };
    let w = folder(dir)?;
    w("index.html", lesson_page(&outcome))?;
    w(
        "lesson.json",
        serde_json::to_string_pretty(&outcome).expect("outcomes are serialisable"),
    )?;
    Ok(outcome)
}

/// The default folder for a lesson's page.
pub fn default_dir(name: &str) -> PathBuf {
    PathBuf::from(format!("reports/learn/{name}"))
}

fn fmt_measure(x: f64) -> String {
    if x.fract() == 0.0 || x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.2}")
    }
}

/// The measurement rows every variant shares, the lesson's own first.
fn measure_rows(o: &Outcome) -> Vec<(&'static str, Vec<f64>)> {
    let mut keys: Vec<&'static str> = o.about.clone();
    if let Some(first) = o.variants.first() {
        for k in first.measures.keys() {
            if !keys.contains(k) {
                keys.push(k);
            }
        }
    }
    keys.into_iter()
        .map(|k| {
            let row = o
                .variants
                .iter()
                .map(|v| v.measures.get(k).copied().unwrap_or(0.0))
                .collect();
            (k, row)
        })
        .collect()
}

/// The lesson in a terminal.
pub fn text(o: &Outcome) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "lesson {}: {} ({})\n", o.lesson, o.title, o.from);
    let _ = writeln!(s, "the choice: {}\n", o.choice);
    let _ = writeln!(
        s,
        "both on scenario {}, seed {}, the same plan:",
        o.scenario, o.seed
    );
    let verdict = |v: &Variant| {
        if v.passed {
            "every invariant holds".to_string()
        } else {
            let broken: Vec<String> = v.broken.iter().map(|(k, n)| format!("{k} ({n})")).collect();
            format!("BROKEN: {}", broken.join(", "))
        }
    };
    let short = |v: &Variant| v.label.split(':').next().unwrap_or("").to_string();
    let width = o
        .variants
        .iter()
        .map(|v| v.label.chars().count())
        .max()
        .unwrap_or(0);
    for v in &o.variants {
        let _ = writeln!(s, "  {:<width$}  {}", v.label, verdict(v));
    }
    let _ = write!(s, "  {:<28}", "");
    for v in &o.variants {
        let _ = write!(s, " {:>12}", short(v));
    }
    s.push('\n');
    for (k, row) in measure_rows(o) {
        let mark = if o.about.contains(&k) { "*" } else { " " };
        let _ = write!(s, " {mark}{k:<28}");
        for x in row {
            let _ = write!(s, " {:>12}", fmt_measure(x));
        }
        s.push('\n');
    }
    if !o.about.is_empty() {
        let _ = writeln!(s, "  (* what this trade-off is about)");
    }
    if let Some(inv) = o.invariant {
        let _ = writeln!(s, "\n`{inv}` is the invariant that fires.");
        if let Some((after, before)) = o.shrunk_events {
            let _ = writeln!(
                s,
                "the story, shrunk from {before} events to {after} that still break it:"
            );
        }
        for line in &o.story {
            let _ = writeln!(s, "  {line}");
        }
        let _ = writeln!(s, "\non the phones:");
        for line in &o.phone {
            let _ = writeln!(s, "  {line}");
        }
    }
    let _ = writeln!(s, "\nthe fix: {}\n", o.fix);
    let _ = writeln!(s, "what an interviewer asks next:");
    for (q, ans) in &o.questions {
        let _ = writeln!(s, "  Q: {q}\n     {ans}");
    }
    for (i, v) in o.variants.iter().enumerate() {
        let _ = writeln!(
            s,
            "{} {}",
            if i == 0 { "\nreplay:" } else { "       " },
            v.replay
        );
    }
    let _ = writeln!(s, "page: {}", o.page);
    s
}

fn lesson_page(o: &Outcome) -> String {
    let mut h = String::new();
    let _ = writeln!(
        h,
        "<h1>{}</h1><p><em>{}</em> &middot; lesson <code>{}</code> &middot; scenario <code>{}</code>, seed {}</p><p>{}</p>",
        esc(o.title),
        esc(o.from),
        esc(o.lesson),
        esc(&o.scenario),
        o.seed,
        esc(o.choice)
    );
    h.push_str("<h2>Side by side</h2><table id=\"side-by-side\"><tr><th></th>");
    for v in &o.variants {
        let _ = write!(
            h,
            "<th>{} (<a href=\"{}\">full report</a>)</th>",
            esc(&v.label),
            esc(&v.report)
        );
    }
    h.push_str("</tr><tr><td>verdict</td>");
    for v in &o.variants {
        if v.passed {
            h.push_str("<td class=\"ok\">every invariant holds</td>");
        } else {
            let broken: Vec<String> = v
                .broken
                .iter()
                .map(|(k, n)| format!("{} ({n})", esc(k)))
                .collect();
            let _ = write!(h, "<td class=\"bad\">BROKEN: {}</td>", broken.join(", "));
        }
    }
    h.push_str("</tr>");
    for (k, row) in measure_rows(o) {
        let strong = o.about.contains(&k);
        let (o1, c1) = if strong { ("<b>", "</b>") } else { ("", "") };
        let _ = write!(h, "<tr><td>{o1}{}{c1}</td>", esc(k));
        for x in row {
            let _ = write!(h, "<td>{}</td>", fmt_measure(x));
        }
        h.push_str("</tr>");
    }
    h.push_str("</table>");
    if let Some(inv) = o.invariant {
        let _ = write!(
            h,
            "<h2>What broke</h2><p><code>{}</code> fires.</p>",
            esc(inv)
        );
        if let Some((after, before)) = o.shrunk_events {
            let _ = write!(
                h,
                "<p>The story, shrunk from {before} events to {after}:</p>"
            );
        }
        h.push_str("<ol id=\"story\">");
        for line in &o.story {
            let _ = write!(h, "<li>{}</li>", esc(line));
        }
        h.push_str("</ol><h2>On the phones</h2><ul id=\"phone\">");
        for line in &o.phone {
            let _ = write!(h, "<li>{}</li>", esc(line));
        }
        h.push_str("</ul>");
    }
    let _ = write!(
        h,
        "<h2>The fix</h2><p>{}</p><h2>What an interviewer asks next</h2><dl>",
        esc(o.fix)
    );
    for (q, ans) in &o.questions {
        let _ = write!(h, "<dt><b>{}</b></dt><dd>{}</dd>", esc(q), esc(ans));
    }
    h.push_str("</dl><p>Replay:</p><ul>");
    for v in &o.variants {
        let _ = write!(h, "<li><code>{}</code></li>", esc(&v.replay));
    }
    h.push_str("</ul>");
    page(&format!("chatsim lesson: {}", o.title), &h)
}

/// The list `chatsim learn` prints.
pub fn listing() -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{:<26} {:<44} scenario", "lesson", "title");
    for l in LESSONS {
        let _ = writeln!(s, "{:<26} {:<44} {}", l.name, l.title, l.scenario());
    }
    let _ = writeln!(
        s,
        "\n{} lessons; run one with `chatsim learn NAME` (a few seconds; writes reports/learn/NAME/).",
        LESSONS.len()
    );
    s
}

mod lessons;
pub use lessons::LESSONS;
