//! What the scenario-wide test files share: where the scenario files are and which of them are
//! judged seed by seed, how a zoo gate's outcomes are tallied, and how to run the binary.

// Each test file compiles its own copy of this module and uses only part of it.
#![allow(dead_code)]

pub mod live;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Run the `chatsim` binary from the repository's root, as a user would.
pub fn chatsim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chatsim"))
        .args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .output()
        .expect("the binary runs")
}

/// What a run printed on standard error.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The repository's scenarios/ folder.
pub fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios")
}

/// Every judged scenario file, sorted. The benchmark's worlds and the scale run are measured
/// by hand or by `chatsim bench`, not judged seed by seed (the scale run takes minutes and
/// gigabytes).
pub fn scenario_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(scenarios_dir())
        .expect("scenarios/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .filter(|p| {
            !p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with("bench-") || n.starts_with("scale-")
            })
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 6,
        "expected the six foundation scenarios, found {files:?}"
    );
    files
}

/// Split per-bug outcomes of a zoo gate into what was caught and what was missed, each in zoo
/// order.
pub fn caught_and_missed(outcomes: Vec<Result<String, String>>) -> (Vec<String>, Vec<String>) {
    let (caught, missed): (Vec<_>, Vec<_>) = outcomes.into_iter().partition(Result::is_ok);
    (
        caught.into_iter().flatten().collect(),
        missed.into_iter().filter_map(Result::err).collect(),
    )
}

/// The invariants `r` broke, each with its first violation, on one line.
pub fn broken(r: &chatsim::run::RunReport) -> String {
    r.invariants
        .iter()
        .filter(|v| !v.holds)
        .map(|v| format!("{} ({})", v.name, v.violations[0].detail))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every judged scenario on `engine`, the seeds `seeds_for` picks, one worker per core: what
/// failed, one line each with its replay (empty: all passed). A pass that acked nothing is
/// vacuous, and fails the test at once.
pub fn failing_seeds(
    engine: chatsim::run::Engine,
    seeds_for: impl Fn(&chatsim::scenario::Scenario) -> Vec<u64>,
) -> Vec<String> {
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let none = chatsim_system::bugs::Bugs::none();
    let mut failures = Vec::new();
    for path in scenario_files() {
        let s = chatsim::scenario::Scenario::load(&path).expect("scenario files are valid");
        let report = chatsim::swarm::swarm_on(engine, &s, &seeds_for(&s), jobs, &none);
        assert_eq!(report.engine, engine.name());
        for (seed, r) in &report.per_seed {
            match r {
                Ok(r) if r.passed() => assert!(
                    r.stats.messages_acked > 0,
                    "{} seed {seed} acked nothing on {}: the run is vacuous",
                    s.name(),
                    engine.name()
                ),
                Ok(r) => failures.push(format!(
                    "{} seed {seed}: {} -- replay: {}",
                    s.name(),
                    broken(r),
                    r.replay
                )),
                Err(e) => failures.push(format!("{} seed {seed}: {e}", s.name())),
            }
        }
    }
    failures
}
