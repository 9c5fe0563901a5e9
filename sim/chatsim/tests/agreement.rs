//! The two engines must agree. madsim and turmoil are independent simulators driving the same
//! machines over the same per-seed plans and judged by the same checkers: a scenario the clean
//! design passes on one must pass on the other, and a zoo bug one catches the other must catch
//! within the same seed budget. madsim's half of each check is in `scenarios.rs` and
//! `zoo.rs`; this file runs turmoil's, and its determinism.

mod common;

use chatsim::run::{run_seed_on, Engine};
use chatsim::scenario::Scenario;
use chatsim_system::bugs::{Bugs, ZOO};
use common::{broken, caught_and_missed, failing_seeds, scenarios_dir};
use rayon::prelude::*;

/// Seeds every scenario must pass on turmoil in every test run: madsim's half
/// (`scenarios.rs`) runs 1..20, and this one 1..10 to keep CI within its 30 minutes (it was
/// the longest test, 190 s of two cores for 1..20 in a test build). `chatsim swarm scenarios
/// --engine turmoil --seeds 1..20` is the longer check (580 seeds, none failing, 2026-12-07).
const SEEDS: std::ops::RangeInclusive<u64> = 1..=10;
/// Seeds tried per zoo bug on turmoil (the madsim zoo gate's budget).
const SEED_BUDGET: u64 = 20;
/// Bugs turmoil catches, but not within [`SEED_BUDGET`]: (bug, the budget it needs). A known
/// disagreement, kept visible here rather than hidden by a bigger budget for all.
/// `reader-skips-unfinished-seq` on partition-heal: madsim catches it on 7 of seeds 1..20
/// (first seed 3); turmoil on none of 1..20 but on seeds 22, 23, 44, 52 and 60 of 1..60
/// (measured 2026-11-29; the same five seeds with a 1 ms and a 2 ms turmoil tick and with 4 and
/// 2 cells, so the plan decides more than the timing). Why madsim finds it on more plans is not understood yet.
const SLOWER_ON_TURMOIL: &[(&str, u64)] = &[("reader-skips-unfinished-seq", 30)];
/// Scenarios whose determinism is checked on turmoil in every test run (the ones with the
/// most faults of each kind; `chatsim run --engine turmoil` on any other twice shows the same).
const DETERMINISM: &[&str] = &[
    "partition-heal",
    "oneway-partition",
    "gateway-crash",
    "silent-phone",
    "groups",
    "blackhole",
    "latency-spike",
    "malicious",
];

/// Seeds nobody had run on which turmoil broke `ack_latency` on oneway-partition (issue 22):
/// a server link that lost a frame to the one-way cut stalled, and requests were retried into
/// it for 10 s (a TCP user timeout) instead of a keepalive's second; on 5015 the median ✓ was
/// 1,770 ms against 300. Seven broke (40, 61, 66, 89, 5015, 5042, 5044); these three, the
/// slowest, still break with the 10 s timeout under today's `ack_latency`, which excuses the
/// keepalive's second after a heal, so they keep the engine honest and not just the checker.
const ONEWAY_STALL_SEEDS: &[u64] = &[89, 5015, 5044];

/// The seeds run for a scenario: big-group (1,024 members) takes minutes for twenty in a test
/// build, so its first two; `chatsim swarm scenarios/big-group.toml --engine turmoil --seeds
/// 1..20` is the full check.
fn seeds_for(s: &Scenario) -> Vec<u64> {
    if s.name() == "big-group" {
        (1..=2).collect()
    } else if s.name() == "churn-fanout" {
        // About 1 s a seed in release; turmoil passes seeds 1..20 (2026-12-05).
        (1..=3).collect()
    } else {
        SEEDS.collect()
    }
}

#[test]
fn the_clean_design_passes_every_scenario_on_turmoil() {
    let failures = failing_seeds(Engine::Turmoil, seeds_for);
    assert!(
        failures.is_empty(),
        "failing on turmoil:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_zoo_bug_is_caught_on_turmoil_within_the_seed_budget() {
    // One bug per core at a time, as the madsim zoo gate does.
    let available: Vec<_> = ZOO.iter().filter(|i| i.available).collect();
    let outcomes: Vec<Result<String, String>> = available
        .par_iter()
        .map(|info| {
            let path = scenarios_dir().join(format!("{}.toml", info.scenario));
            let s = Scenario::load(&path).expect("the zoo names an existing scenario");
            let bugs: Bugs = [info.bug].into_iter().collect();
            let budget = SLOWER_ON_TURMOIL
                .iter()
                .find(|(b, _)| *b == info.name)
                .map_or(SEED_BUDGET, |(_, n)| *n);
            let first = (1..=budget).find(|&seed| {
                let r = run_seed_on(Engine::Turmoil, &s, seed, &bugs).expect("the simulation runs");
                r.invariants
                    .iter()
                    .any(|v| v.name == info.caught_by && !v.holds)
            });
            match first {
                Some(seed) => Ok(format!(
                    "{} by {} at seed {seed}",
                    info.name, info.caught_by
                )),
                None => Err(format!(
                    "{} ({} on {})",
                    info.name, info.caught_by, info.scenario
                )),
            }
        })
        .collect();
    let (caught, missed) = caught_and_missed(outcomes);
    eprintln!("{}", caught.join("\n"));
    assert!(
        missed.is_empty(),
        "turmoil did not catch within its budget ({SEED_BUDGET} seeds unless listed): {}",
        missed.join(", ")
    );
}

// A link stalled by a one-way cut is replaced within its keepalive, so the sends after the
// heal are quick again: every invariant holds on the seeds that once broke `ack_latency`, and
// it judged enough sends to mean it.
#[test]
fn oneway_partition_seeds_that_stalled_a_link_pass_on_turmoil() {
    let s = Scenario::load(&scenarios_dir().join("oneway-partition.toml")).expect("valid");
    let failures: Vec<String> = ONEWAY_STALL_SEEDS
        .par_iter()
        .filter_map(|&seed| {
            let r = run_seed_on(Engine::Turmoil, &s, seed, &Bugs::none()).expect("runs");
            let judged = r
                .invariants
                .iter()
                .find(|v| v.name == "ack_latency")
                .map_or(0, |v| v.checked);
            (!r.passed() || judged < 100)
                .then(|| format!("seed {seed}: {} ({judged} ✓ judged)", broken(&r)))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// latency-spike seed 5129 lost 18 acked texts for good on turmoil: a spike made gateway 0's
// link to the session service slower than its keepalive, the link was replaced, and the
// gateway's list of its devices (made before a companion reconnected) arrived after that
// companion's registration and cleared it. The session service thought the companion offline
// and woke it by push while it sat connected, never shown its own user's group texts again. A
// list now clears only what was registered before it was made.
#[test]
fn a_devices_list_overtaken_by_a_registration_loses_nothing_on_turmoil() {
    let s = Scenario::load(&scenarios_dir().join("latency-spike.toml")).expect("valid");
    let r = run_seed_on(Engine::Turmoil, &s, 5129, &Bugs::none()).expect("runs");
    assert!(r.passed(), "{}", broken(&r));
    let raced = r
        .probes
        .get(&chatsim_system::probe::Probe::SessionAliveOlderThanRegister)
        .copied()
        .unwrap_or(0);
    assert!(
        raced > 0,
        "the seed no longer races the list and the registration"
    );
}

#[test]
fn turmoil_gives_the_same_trace_hash_for_the_same_seed() {
    for name in DETERMINISM {
        let s = Scenario::load(&scenarios_dir().join(format!("{name}.toml"))).expect("valid");
        let a = run_seed_on(Engine::Turmoil, &s, 7, &Bugs::none()).expect("runs");
        let b = run_seed_on(Engine::Turmoil, &s, 7, &Bugs::none()).expect("runs");
        let c = run_seed_on(Engine::Turmoil, &s, 8, &Bugs::none()).expect("runs");
        assert_eq!(
            a.trace_hash,
            b.trace_hash,
            "{} is not deterministic",
            s.name()
        );
        assert_eq!(
            a.history,
            b.history,
            "{}: same hash, different histories",
            s.name()
        );
        assert_ne!(
            a.trace_hash,
            c.trace_hash,
            "{}: seeds 7 and 8 agree",
            s.name()
        );
    }
}

// The engines are independent: the same seed gives each its own trace (a shared hash would
// mean one engine's run was being reported as the other's).
#[test]
fn the_engines_run_the_same_plan_but_not_the_same_trace() {
    let s = Scenario::load(&scenarios_dir().join("partition-heal.toml")).expect("valid");
    let m = run_seed_on(Engine::Madsim, &s, 3, &Bugs::none()).expect("runs");
    let t = run_seed_on(Engine::Turmoil, &s, 3, &Bugs::none()).expect("runs");
    assert_eq!((m.engine, t.engine), ("madsim", "turmoil"));
    assert!(m.passed() && t.passed(), "{} / {}", broken(&m), broken(&t));
    assert_eq!(
        m.stats.messages_sent, t.stats.messages_sent,
        "the plan differs"
    );
    assert_eq!(m.stats.faults, t.stats.faults, "the fault schedule differs");
    assert_ne!(m.trace_hash, t.trace_hash);
    assert!(t.replay.ends_with("--engine turmoil"), "{}", t.replay);
}

// The black hole is a fault of both engines, and it bites on both: connections swallowed
// without a close are found only by heartbeats, the phone's and the gateway's, and the run
// still passes.
#[test]
fn a_black_hole_is_noticed_only_by_heartbeats_on_both_engines() {
    use chatsim_system::probe::Probe;
    let s = Scenario::load(&scenarios_dir().join("blackhole.toml")).expect("valid");
    for engine in [Engine::Madsim, Engine::Turmoil] {
        let r = run_seed_on(engine, &s, 1, &Bugs::none()).expect("runs");
        assert!(r.passed(), "{engine:?}: {}", broken(&r));
        for p in [Probe::HeartbeatTimedOut, Probe::GatewayIdleClosed] {
            let hits = r.probes.get(&p).copied().unwrap_or(0);
            assert!(hits > 0, "{engine:?}: {} never fired", p.name());
        }
    }
}
