//! Coverage probes as users and CI see them: `chatsim coverage` lists every probe once,
//! unreached first, with counts that add up and an exit code that says whether any probe was
//! missed; swarms carry the same counts; and the CI gate, that the judged scenarios reach every
//! probe.

mod common;

use chatsim::coverage::{judged_scenarios, measure};
use chatsim::run::Engine;
use chatsim::scenario::Scenario;
use chatsim_system::probe::Probe;
use common::{chatsim, stderr};
use std::process::Output;
use std::time::Instant;

fn json_of(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).expect("--json prints one JSON object")
}

/// Check a `{"probes": [...], "unreached": [...]}` object from runs of `seeds` (inclusive)
/// over `runs` (scenario, seed) pairs; return the unreached names.
fn check_shape(j: &serde_json::Value, seeds: (u64, u64), runs: u64) -> Vec<String> {
    let probes = j["probes"].as_array().expect("probes is an array");
    assert_eq!(probes.len(), Probe::ALL.len(), "every probe listed once");
    let mut seen_reached = false;
    let mut zero_rows = Vec::new();
    for p in probes {
        let name = p["name"].as_str().expect("name").to_string();
        assert!(
            Probe::ALL.iter().any(|x| x.name() == name),
            "{name} is a probe"
        );
        let hits = p["hits"].as_u64().expect("hits");
        let n = p["seeds"].as_u64().expect("seeds");
        if n == 0 {
            assert!(!seen_reached, "{name}: unreached probes come first");
            assert_eq!(hits, 0, "{name}");
            assert!(p["first_seed"].is_null(), "{name}");
            zero_rows.push(name);
        } else {
            seen_reached = true;
            assert!(hits >= n && n <= runs, "{name}: {hits} hits on {n} seeds");
            let first = p["first_seed"].as_u64().expect("first_seed");
            assert!((seeds.0..=seeds.1).contains(&first), "{name}: {first}");
        }
    }
    let unreached: Vec<String> = j["unreached"]
        .as_array()
        .expect("unreached is an array")
        .iter()
        .map(|n| n.as_str().expect("names").to_string())
        .collect();
    assert_eq!(
        unreached, zero_rows,
        "unreached names the zero rows, in order"
    );
    unreached
}

// One small scenario for two seeds: the JSON has the promised shape and counts, the exit code
// says whether a probe was missed, and the table puts the unreached under their own header.
#[test]
fn coverage_lists_every_probe_unreached_first_with_counts_that_add_up() {
    let o = chatsim(&[
        "coverage",
        "scenarios/smoke.toml",
        "--seeds",
        "1..2",
        "--jobs",
        "2",
        "--json",
    ]);
    let j = json_of(&o);
    let unreached = check_shape(&j, (1, 2), 2);
    assert_eq!(j["runs"], 2);
    assert_eq!(j["scenarios"], serde_json::json!(["smoke"]));
    assert_eq!(j["failed_runs"].as_array().map(Vec::len), Some(0));
    let expected = if unreached.is_empty() { 0 } else { 1 };
    assert_eq!(o.status.code(), Some(expected), "{}", stderr(&o));

    let o = chatsim(&["coverage", "scenarios/smoke.toml", "--seeds", "1..2"]);
    assert_eq!(o.status.code(), Some(expected), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    let last = text.lines().last().expect("a summary");
    assert!(
        last.starts_with(&format!(
            "coverage: {} of {} probes reached over 1 scenario x 2 seeds",
            Probe::ALL.len() - unreached.len(),
            Probe::ALL.len()
        )),
        "{text}"
    );
    if let Some(first) = unreached.first() {
        let header = text.find("  unreached (").expect("an unreached header");
        let row = text
            .find(first.as_str())
            .expect("the unreached probe is listed");
        assert!(header < row, "{text}");
        if unreached.len() < Probe::ALL.len() {
            assert!(text.find("  reached (").expect("a reached header") > row);
        }
    }
}

// Bad input is exit 2, as for every other command.
#[test]
fn coverage_refuses_bad_input_with_exit_2() {
    let o = chatsim(&["coverage", "scenarios/no-such.toml", "--seeds", "1..2"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("no-such.toml"), "{}", stderr(&o));
    let o = chatsim(&["coverage", "scenarios/smoke.toml", "--seeds", "3..1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

// A swarm carries the same counts: one line in its summary, the table in its JSON.
#[test]
fn swarm_reports_coverage_in_its_summary_and_json() {
    let o = chatsim(&[
        "swarm",
        "scenarios/smoke.toml",
        "--seeds",
        "1..2",
        "--no-report",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = json_of(&o);
    check_shape(&j["coverage"], (1, 2), 2);
    let o = chatsim(&[
        "swarm",
        "scenarios/smoke.toml",
        "--seeds",
        "1..2",
        "--no-report",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains("  probes reached: ") && text.contains(&format!(" of {}", Probe::ALL.len())),
        "{text}"
    );
}

const GATE_SEEDS: std::ops::RangeInclusive<u64> = 1..=3;

/// Probes too rare for three seeds, each with the engine, scenario and seeds that reach it:
/// the gate runs those too, so the probe is held to them.
const RARE: &[(&str, Engine, &str, &[u64])] = &[
    // A phone whose handshake stalls: its gateway restarted (or lost the session service)
    // mid-handshake while every phone reconnects at once.
    (
        "device: handshake timed out",
        Engine::Madsim,
        "reconnect-storm",
        &[11],
    ),
    // A phone's register retry lands after the same phone registered elsewhere (seed 14 until
    // the gap-repair change of 2026-12-05 moved the traces, then 20, then 12 after the frame
    // cuts of 2026-12-06; after the madsim timer change the same day none of reconnect-storm's
    // seeds 1..200 reaches it, and 5 runs of 1,200 do among reconnect-storm's and
    // session-race's seeds 201..800; 20 once madsim's hosts wrote and read their sockets
    // themselves, 2026-12-07: 4 of reconnect-storm's seeds 1..300 reach it; 172 once shown
    // direct texts were acked by their marks and pushes went to a device's last gateway,
    // session 21: 3 of seeds 1..400).
    (
        "gateway: stale connection closed",
        Engine::Madsim,
        "reconnect-storm",
        &[172],
    ),
    // A gateway's list of its devices overtaken by a registration it sent later: only over a
    // server link that was replaced mid-flight, which turmoil's keepalive does under a spike
    // (madsim's links keep order, and a cut one drops rather than reorders).
    (
        "session: alive report older than a registration",
        Engine::Turmoil,
        "latency-spike",
        &[5129],
    ),
];

/// Probes no scenario reaches yet, each with what would: issue 22's gap, kept visible ("device:
/// copy undecryptable" left it when `malicious.toml` brought compromised senders). The gate
/// fails if one of these is reached (then it belongs in the gate proper) or if any other probe
/// is not.
const NOT_YET_REACHED: &[(&str, &str)] = &[(
    "shard: append conflict",
    "a shard whose next number is behind storage's; a shard that loses its slot forgets \
         the slot's conversations and reloads them, so in the clean design only a zoo bug \
         (unfenced-failover) gets here: tried, a fail-over-and-back script on seeds 1-10 \
         was fenced instead",
)];

// The CI gate: the judged scenarios, a few seeds each, plus the named seeds of the rare probes,
// reach every probe but the listed gaps. An unreached probe names a mechanism no scenario
// tests; the fix is a scenario (or a fault range) that takes that branch, not a lower bar.
#[test]
fn every_probe_is_reached_by_the_judged_scenarios() {
    let started = Instant::now();
    let paths = judged_scenarios(&common::scenarios_dir()).expect("scenarios/ lists");
    let scenarios: Vec<Scenario> = paths
        .iter()
        .map(|p| Scenario::load(p).expect("scenario files are valid"))
        .collect();
    let seeds: Vec<u64> = GATE_SEEDS.collect();
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut report = measure(Engine::Madsim, &scenarios, &seeds, jobs);
    for (probe, engine, name, rare_seeds) in RARE {
        let path = common::scenarios_dir().join(format!("{name}.toml"));
        let s = Scenario::load(&path).expect("a rare probe names a scenario that exists");
        let rare = measure(*engine, &[s], rare_seeds, jobs);
        let reached = rare
            .coverage
            .rows()
            .iter()
            .any(|r| r.name == *probe && r.hits > 0);
        assert!(
            reached,
            "{probe}: not reached by {name} seeds {rare_seeds:?}"
        );
        report.coverage.merge(rare.coverage);
    }
    let gaps: Vec<&str> = NOT_YET_REACHED.iter().map(|(p, _)| *p).collect();
    let unreached = report.coverage.unreached();
    let missed: Vec<String> = unreached
        .iter()
        .filter(|p| !gaps.contains(&p.name()))
        .map(|p| format!("  {} -- {}", p.name(), p.reason()))
        .collect();
    assert!(
        missed.is_empty(),
        "{} of {} probes unreached by {} judged scenarios x {} seeds ({:.0} s):\n{}",
        missed.len(),
        Probe::ALL.len(),
        scenarios.len(),
        seeds.len(),
        started.elapsed().as_secs_f64(),
        missed.join("\n")
    );
    for (gap, what) in NOT_YET_REACHED {
        assert!(
            Probe::ALL.iter().any(|p| p.name() == *gap),
            "{gap}: listed as a gap but no such probe"
        );
        assert!(
            unreached.iter().any(|p| p.name() == *gap),
            "{gap} is reached now ({what}): move it into the gate proper"
        );
    }
}
