//! The bug zoo gate: every mistake the built design can express is caught by the check the zoo
//! names for it, on its scenario, within the seed budget. A checker that never fails proves
//! nothing; this is the test that the testbed can see.

mod common;

use chatsim::run::run_seed;
use chatsim::scenario::Scenario;
use chatsim::shrink::{hunt, Hunted};
use chatsim_system::bugs::{Bugs, ZOO};
use common::caught_and_missed;
use rayon::prelude::*;
use std::path::Path;

/// Seeds tried per bug before the gate gives up. Measured (2026-11-29): every bug is caught
/// within its first 6 seeds; 20 leaves room for changes that shift the traces.
const SEED_BUDGET: u64 = 20;
/// The longest shrunk story (in events) the zoo accepts. Measured: at most 10 (the shortest
/// of up to three catches per bug).
const SHRUNK_EVENTS_MAX: usize = 30;
/// Bugs whose shortest story is longer by nature, and their limit. `drain-first-page-only`
/// shows only past a full inbox page: 33 texts to one phone away, its going and coming back
/// (measured: 35 events).
const LONGER_STORIES: &[(&str, usize)] = &[(
    "drain-first-page-only",
    chatsim_system::limits::INBOX_PAGE_ENTRIES as usize + 13,
)];

fn shrunk_max(bug: &str) -> usize {
    LONGER_STORIES
        .iter()
        .find(|(b, _)| *b == bug)
        .map_or(SHRUNK_EVENTS_MAX, |(_, n)| *n)
}

#[test]
fn every_available_zoo_bug_is_caught_within_the_seed_budget_and_shrinks_to_a_short_story() {
    let dir = common::scenarios_dir();
    // Bugs in parallel, and within each hunt its seeds and shrink steps as the pool has room.
    let available: Vec<_> = ZOO.iter().filter(|i| i.available).collect();
    let outcomes: Vec<Result<String, String>> = available
        .par_iter()
        .map(|info| {
            let path = dir.join(format!("{}.toml", info.scenario));
            let scenario = Scenario::load(&path).expect("the zoo names an existing scenario");
            let bugs: Bugs = [info.bug].into_iter().collect();
            let max = shrunk_max(info.name);
            // Catch it, and shrink the catch: a short explicit story that still breaks the same
            // invariant with the bug, and passes without it, so the bug and nothing else is what
            // breaks it. The hunt shrinks up to three catching seeds and keeps the shortest.
            let hunted = hunt(
                &scenario,
                &bugs,
                info.caught_by,
                SEED_BUDGET,
                max,
                &mut |_, _| {},
            )
            .expect("hunts");
            let Some(Hunted { seed, shrunk, .. }) = hunted else {
                return Err(format!(
                    "{} ({} on {})",
                    info.name, info.caught_by, info.scenario
                ));
            };
            assert!(
                shrunk.events_after <= max,
                "{}: {} events left",
                info.name,
                shrunk.events_after
            );
            assert!(
                shrunk.story.len() <= max,
                "{}: story of {} lines",
                info.name,
                shrunk.story.len()
            );
            let replay = Scenario::parse(Path::new("shrunk.toml"), &shrunk.text)
                .expect("the shrunk file parses");
            let with_bug = run_seed(&replay, seed, &bugs).expect("runs");
            assert!(
                with_bug
                    .invariants
                    .iter()
                    .any(|v| v.name == info.caught_by && !v.holds),
                "{}: the shrunk file does not reproduce {}",
                info.name,
                info.caught_by
            );
            let clean = run_seed(&replay, seed, &Bugs::none()).expect("runs");
            assert!(
                clean.passed(),
                "{}: the shrunk file fails without the bug too",
                info.name
            );
            Ok(format!(
                "{} by {} at seed {seed}, shrunk to {} events",
                info.name, info.caught_by, shrunk.events_after
            ))
        })
        .collect();
    let (caught, missed) = caught_and_missed(outcomes);
    eprintln!("{}", caught.join("\n"));
    assert!(
        missed.is_empty(),
        "not caught within {SEED_BUDGET} seeds: {missed:?}\ncaught: {caught:?}"
    );
    // Every bug in the zoo is built: none may slip back to unavailable.
    assert_eq!(
        caught.len(),
        ZOO.len(),
        "every zoo bug is available and caught: {caught:?}"
    );
}
