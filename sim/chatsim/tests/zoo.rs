//! The bug zoo gate: every mistake the 1:1 path can express is caught by the invariant the zoo
//! names for it, on its scenario, within the seed budget. A checker that never fails proves
//! nothing; this is the test that the testbed can see.

use chatsim::run::run_seed;
use chatsim::scenario::Scenario;
use chatsim_system::bugs::{Bugs, ZOO};
use std::path::Path;

/// Seeds tried per bug before the gate gives up. Measured: every bug below is caught within
/// its first 2 seeds; 20 leaves room for changes that shift the traces.
const SEED_BUDGET: u64 = 20;

#[test]
fn every_available_zoo_bug_is_caught_by_its_named_invariant_within_the_seed_budget() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios");
    let mut missed = Vec::new();
    let mut caught = Vec::new();
    for info in ZOO.iter().filter(|i| i.available) {
        let path = dir.join(format!("{}.toml", info.scenario));
        let scenario = Scenario::load(&path).expect("the zoo names an existing scenario");
        let bugs: Bugs = [info.bug].into_iter().collect();
        let first = (1..=SEED_BUDGET).find(|&seed| {
            let r = run_seed(&scenario, seed, &bugs).expect("the simulation runs");
            r.invariants
                .iter()
                .any(|v| v.name == info.caught_by && !v.holds)
        });
        match first {
            Some(seed) => caught.push(format!(
                "{} by {} at seed {seed}",
                info.name, info.caught_by
            )),
            None => missed.push(format!(
                "{} ({} on {})",
                info.name, info.caught_by, info.scenario
            )),
        }
    }
    assert!(
        missed.is_empty(),
        "not caught within {SEED_BUDGET} seeds: {missed:?}\ncaught: {caught:?}"
    );
    assert!(
        caught.len() >= 12,
        "fewer zoo bugs available than before: {caught:?}"
    );
}
