//! The swarm that judges a mutant: cargo-mutants builds `chatsim-system` with one defect put in
//! and runs this target (scripts/mutants.sh); the mutant is caught when a run breaks an
//! invariant or an assertion in a machine panics. It is the CI swarm in small: every judged
//! scenario but big-group (minutes a seed in a test build), a few seeds, on madsim.
//!
//! Ignored in `cargo test`: every_scenario_passes_seeds_1_to_20 already runs these seeds and
//! more on the clean system. `scripts/mutants.sh` passes `--ignored`.

mod common;

use chatsim::coverage::measure;
use chatsim::run::Engine;
use chatsim::scenario::Scenario;
use common::scenario_files;

/// Seeds per scenario: six take about 15 s on two cores in a test build, less than a mutant's rebuild.
const SEEDS: [u64; 6] = [1, 2, 3, 4, 5, 6];

#[test]
#[ignore = "the mutation judge: scripts/mutants.sh runs it with --ignored"]
fn the_judged_scenarios_pass_a_few_seeds() {
    let scenarios: Vec<Scenario> = scenario_files()
        .iter()
        .map(|p| Scenario::load(p).expect("scenario files are valid"))
        .filter(|s| s.name() != "big-group")
        .collect();
    let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
    let report = measure(Engine::Madsim, &scenarios, &SEEDS, jobs);
    let failed: Vec<String> = report
        .failed_runs
        .iter()
        .map(|f| format!("  {} seed {}: {}", f.scenario, f.seed, f.broken.join(", ")))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} runs failed ({:.0} s):\n{}",
        failed.len(),
        scenarios.len() * SEEDS.len(),
        report.wall_seconds,
        failed.join("\n")
    );
}
