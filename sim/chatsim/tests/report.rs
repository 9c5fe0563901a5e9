//! The report folder of a failing run and of a swarm: every file exists and parses (JSON,
//! JSON lines, SVG and JUnit as XML), and the violating message is named on the page and in
//! the sequence diagram.

use chatsim::report::{write_run_report, write_swarm_report};
use chatsim::run::run_seed;
use chatsim::scenario::Scenario;
use chatsim::swarm::{junit, swarm};
use chatsim_system::bugs::{Bug, Bugs};
use std::path::{Path, PathBuf};

fn scenario(name: &str) -> Scenario {
    Scenario::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../scenarios/{name}.toml")),
    )
    .expect("valid")
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("chatsim-report-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn parses_as_xml(p: &Path) {
    let text = read(p);
    roxmltree::Document::parse(&text)
        .unwrap_or_else(|e| panic!("{} is not well-formed XML: {e}", p.display()));
}

// A lost message (ack-before-persist) shows up in the table, the diagram and the JSON.
#[test]
fn a_failing_runs_report_names_the_lost_message_everywhere_and_every_file_parses() {
    let s = scenario("shard-crash-after-persist");
    let bugs: Bugs = [Bug::AckBeforePersist].into_iter().collect();
    // The first seed that loses a message (which one moves whenever the trace does).
    let r = (1..=20)
        .map(|seed| run_seed(&s, seed, &bugs).expect("runs"))
        .find(|r| !r.passed())
        .expect("ack-before-persist loses a message within 20 seeds");
    let lost = r
        .invariants
        .iter()
        .find(|v| v.name == "no_loss")
        .and_then(|v| v.violations.first())
        .and_then(|v| v.message.clone())
        .expect("no_loss names the lost message");
    let dir = temp_dir("run");
    write_run_report(&dir, &r, &s, None).expect("report written");

    let index = read(&dir.join("index.html"));
    assert!(index.contains(&lost), "index.html must name {lost}");
    assert!(index.contains("BROKEN") && index.contains("no_loss"));
    assert!(
        index.contains(&r.replay.replace('&', "&amp;")),
        "the replay command is on the page"
    );
    for img in ["latency.svg", "timeline.svg", "sequence.svg"] {
        assert!(
            index.contains(&format!("src=\"{img}\"")),
            "index.html shows {img}"
        );
    }
    let seq = read(&dir.join("sequence.svg"));
    assert!(seq.contains(&lost), "sequence.svg must follow {lost}");
    for svg in ["latency.svg", "timeline.svg", "sequence.svg"] {
        parses_as_xml(&dir.join(svg));
    }
    for png in ["latency.png", "timeline.png"] {
        let bytes = std::fs::read(dir.join(png)).expect("png written");
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{png} is a PNG");
    }
    let json: serde_json::Value =
        serde_json::from_str(&read(&dir.join("run.json"))).expect("run.json parses");
    assert_eq!(json["seed"], r.seed);
    let lines = read(&dir.join("history.jsonl"));
    assert_eq!(lines.lines().count(), r.history.records.len());
    for l in lines.lines() {
        serde_json::from_str::<serde_json::Value>(l).expect("each history line is JSON");
    }
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no temporary files left: {leftovers:?}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

// A traced message is followed instead of the first violation's.
#[test]
fn trace_message_picks_what_the_sequence_diagram_follows() {
    let s = scenario("smoke");
    let r = run_seed(&s, 2, &Bugs::none()).expect("runs");
    let dir = temp_dir("trace");
    write_run_report(&dir, &r, &s, Some("u3.d0#1")).expect("report written");
    let seq = read(&dir.join("sequence.svg"));
    assert!(
        seq.contains("following u3.d0#1"),
        "{}",
        &seq[..seq.len().min(600)]
    );
    std::fs::remove_dir_all(&dir).ok();
}

// A swarm's page, charts and JUnit file parse and name the failing seeds.
#[test]
fn a_swarm_report_and_its_junit_parse() {
    let s = scenario("partition-heal");
    let bugs: Bugs = [Bug::NoClientDedup].into_iter().collect();
    let r = swarm(&s, &[1, 2, 3], 2, &bugs);
    let dir = temp_dir("swarm");
    write_swarm_report(&dir, &r, &s).expect("report written");
    let index = read(&dir.join("index.html"));
    assert!(index.contains("exactly_once"));
    assert!(index.contains("--seed 1 --bug no-client-dedup"));
    for svg in ["failures.svg", "walltime.svg"] {
        parses_as_xml(&dir.join(svg));
    }
    let xml = junit(&r);
    let doc = roxmltree::Document::parse(&xml).expect("JUnit parses");
    let cases = doc
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .count();
    assert_eq!(cases, 3 * chatsim_judge::checkers::CHECKS.len());
    assert!(doc.descendants().any(|n| n.has_tag_name("failure")));
    let property = |name: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name("property") && n.attribute("name") == Some(name))
            .and_then(|n| n.attribute("value"))
            .map(str::to_string)
    };
    assert_eq!(property("seeds").as_deref(), Some("1..3"));
    // partition-heal's file says `buggify = true`.
    assert_eq!(property("buggify").as_deref(), Some("true"));
    std::fs::remove_dir_all(&dir).ok();
}
