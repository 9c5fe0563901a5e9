//! The serving code under simulation (`--engine served`): `chatsim serve`'s own host loop,
//! accept loops, WebSocket handshake and frame checks, and server links, with `chatsim
//! client`'s own connection code on every phone, carried by turmoil's sockets and clock
//! through the world, plans and faults of the turmoil engine, and judged by the same checkers.
//! What `chatsim serve` runs and what is judged here differ only in the sockets, the clock,
//! and where durable writes go (`docs/engines.md`).

mod common;

use chatsim::run::{run_seed_on, Engine};
use chatsim::scenario::Scenario;
use chatsim_system::bugs::Bugs;
use common::{broken, failing_seeds, scenarios_dir};

/// Seeds every scenario must pass on the serving code in every test run; `chatsim swarm
/// --engine served` over more is the longer check (seeds 1..20 of every judged scenario but
/// big-group passed on 2026-12-05).
const SEEDS: std::ops::RangeInclusive<u64> = 1..=8;

fn seeds_for(s: &Scenario) -> Vec<u64> {
    match s.name().as_str() {
        // 1,024 members: a seed takes about as long as the rest of a scenario's eight.
        "big-group" => vec![1],
        "churn-fanout" => vec![1, 2],
        _ => SEEDS.collect(),
    }
}

fn load(name: &str) -> Scenario {
    Scenario::load(&scenarios_dir().join(format!("{name}.toml"))).expect("a valid scenario")
}

#[test]
fn the_serving_code_passes_every_scenario_under_simulation() {
    let failures = failing_seeds(Engine::Served, seeds_for);
    assert!(
        failures.is_empty(),
        "failing on the serving code:\n{}",
        failures.join("\n")
    );
}

// A WebSocket client's frames are masked with bytes tungstenite draws from the OS, and its
// handshake key too; neither changes a decoded frame, a length or a time, so neither may move
// the trace.
#[test]
fn the_serving_code_gives_the_same_trace_for_the_same_seed() {
    for name in [
        "gateway-crash",
        "oneway-partition",
        "silent-phone",
        "blackhole",
    ] {
        let s = load(name);
        let a = run_seed_on(Engine::Served, &s, 7, &Bugs::none()).expect("runs");
        let b = run_seed_on(Engine::Served, &s, 7, &Bugs::none()).expect("runs");
        let c = run_seed_on(Engine::Served, &s, 8, &Bugs::none()).expect("runs");
        assert_eq!(a.trace_hash, b.trace_hash, "{name} is not deterministic");
        assert_eq!(
            a.history, b.history,
            "{name}: same hash, different histories"
        );
        assert_ne!(a.trace_hash, c.trace_hash, "{name}: seeds 7 and 8 agree");
    }
}

// The same plan, carried by other code: the engine's own plain-TCP links and the serving
// code's WebSockets agree on what happened to whom, but not on every frame's timing.
#[test]
fn the_served_run_is_the_turmoil_plan_carried_by_the_serving_code() {
    let s = load("gateway-crash");
    let t = run_seed_on(Engine::Turmoil, &s, 3, &Bugs::none()).expect("runs");
    let v = run_seed_on(Engine::Served, &s, 3, &Bugs::none()).expect("runs");
    assert_eq!((t.engine, v.engine), ("turmoil", "served"));
    assert!(t.passed() && v.passed(), "{} / {}", broken(&t), broken(&v));
    assert_eq!(
        t.stats.messages_sent, v.stats.messages_sent,
        "the plan differs"
    );
    assert_eq!(t.stats.faults, v.stats.faults, "the fault schedule differs");
    assert_ne!(t.trace_hash, v.trace_hash);
    assert!(v.replay.ends_with("--engine served"), "{}", v.replay);
}

// What the serving code got wrong, found by running it here: `chatsim serve`'s server links
// had no keepalive, so a link whose stream stopped moving (turmoil's one-way cut loses a
// segment for good; real TCP gets through only after seconds of backoff past the heal) was
// written into for the rest of the run. 19 of oneway-partition's seeds 1..20 failed: acked
// texts never shown (`no_loss`), sends never acked (`liveness`). Listeners now acknowledge
// what they read and a link with frames unacknowledged for the deployment's keepalive is
// replaced, as the design asks of every server link. These three were among the nineteen.
#[test]
fn a_server_link_that_stops_moving_is_replaced_by_the_serving_code() {
    let s = load("oneway-partition");
    for seed in [1, 2, 4] {
        let r = run_seed_on(Engine::Served, &s, seed, &Bugs::none()).expect("runs");
        assert!(r.passed(), "seed {seed}: {}", broken(&r));
    }
}
