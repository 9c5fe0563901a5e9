//! The swarm that judges a mutant: cargo-mutants builds `chatsim-system` with one defect put in
//! and runs this target (scripts/mutants.sh); the mutant is caught when a run breaks an
//! invariant, an assertion in a machine panics, a run is vacuous (nothing sent, acked or
//! shown: every checker holds of an empty history), or a probe the clean system reaches on
//! these seeds goes unreached (a mechanism stopped working, as FoundationDB's code probes and
//! Antithesis's "sometimes" assertions tell). It is the CI swarm in small: every judged
//! scenario but big-group (minutes a seed in a test build), a few seeds, on madsim.
//!
//! Ignored in `cargo test`: every_scenario_passes_seeds_1_to_20 already runs these seeds and
//! more on the clean system. `scripts/mutants.sh` passes `--ignored`.

mod common;

use chatsim::run::run_seed;
use chatsim::scenario::Scenario;
use chatsim_system::bugs::Bugs;
use chatsim_system::probe::Probe;
use common::scenario_files;
use rayon::prelude::*;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

/// Seeds per scenario: six take about 15 s on two cores in a test build, less than a mutant's
/// rebuild.
const SEEDS: [u64; 6] = [1, 2, 3, 4, 5, 6];

/// The coverage gate's rare seeds (sim/chatsim/tests/coverage.rs): reconnect-storm 11 stalls a
/// handshake and 20 closes a stale connection; without them a mutant that breaks either
/// mechanism survived.
const RARE: (&str, [u64; 2]) = ("reconnect-storm", [11, 20]);

/// Probes the clean system does not reach on these runs (the gate's two listed gaps): every
/// other probe must fire.
const NOT_REACHED_HERE: [&str; 2] = ["device: copy undecryptable", "shard: append conflict"];

#[test]
#[ignore = "the mutation judge: scripts/mutants.sh runs it with --ignored"]
fn the_judged_scenarios_pass_a_few_seeds_and_reach_their_probes() {
    let runs: Vec<(Scenario, u64)> = scenario_files()
        .iter()
        .map(|p| Scenario::load(p).expect("scenario files are valid"))
        .filter(|s| s.name() != "big-group")
        .flat_map(|s| {
            let rare = if s.name() == RARE.0 { &RARE.1[..] } else { &[] };
            let seeds: Vec<u64> = SEEDS.iter().chain(rare).copied().collect();
            seeds.into_iter().map(move |seed| (s.clone(), seed))
        })
        .collect();
    // A mutant is caught by its first failing run: the rest are skipped, which halves the
    // time a caught mutant costs (a missed one still runs everything).
    let stop = AtomicBool::new(false);
    let outcomes: Vec<(Option<String>, BTreeSet<Probe>)> = runs
        .par_iter()
        .map(|(s, seed)| {
            if stop.load(Ordering::Relaxed) {
                return (None, BTreeSet::new());
            }
            let r = run_seed(s, *seed, &Bugs::none()).expect("the simulation runs");
            let st = &r.stats;
            let broken: Vec<&str> = r
                .invariants
                .iter()
                .filter(|v| !v.holds)
                .map(|v| v.name)
                .collect();
            let problem = if !broken.is_empty() {
                Some(broken.join(", "))
            } else if st.messages_sent == 0 || st.messages_acked == 0 || st.messages_delivered == 0
            {
                Some(format!(
                    "vacuous: {} sent, {} acked, {} shown",
                    st.messages_sent, st.messages_acked, st.messages_delivered
                ))
            } else {
                None
            };
            let reached = r.probes.keys().copied().collect();
            if problem.is_some() {
                stop.store(true, Ordering::Relaxed);
            }
            (
                problem.map(|p| format!("  {} seed {seed}: {p}", s.name())),
                reached,
            )
        })
        .collect();
    let failed: Vec<&String> = outcomes.iter().filter_map(|(p, _)| p.as_ref()).collect();
    assert!(
        failed.is_empty(),
        "{} of {} runs failed (the rest were skipped once one had):\n{}",
        failed.len(),
        runs.len(),
        failed
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let reached: BTreeSet<Probe> = outcomes.into_iter().flat_map(|(_, r)| r).collect();
    let unreached: Vec<&str> = Probe::ALL
        .iter()
        .filter(|p| !reached.contains(p) && !NOT_REACHED_HERE.contains(&p.name()))
        .map(|p| p.name())
        .collect();
    assert!(
        unreached.is_empty(),
        "probes the clean system reaches went unreached: {}",
        unreached.join(", ")
    );
}
