//! The models searched completely: pinned state counts for small clean variants (an accidental
//! change to the state space shows here), and each bug's counterexample found.

use chatsim_models::models::{by_name, model_for, Direct, Failover, Group};
use chatsim_models::{explain, ChatModel};
use chatsim_system::bugs::{Bug, Bugs};
use stateright::{Checker, HasDiscoveries, Model};

fn complete(m: ChatModel) -> (usize, Vec<&'static str>) {
    let c = m.checker().threads(1).spawn_bfs().join();
    let mut found: Vec<&'static str> = c.discoveries().keys().copied().collect();
    found.sort();
    (c.unique_state_count(), found)
}

// Without faults every message arrives on every order of deliveries, and the search reaches
// the states it promises. The counts pin the state spaces.
#[test]
fn clean_small_worlds_pass_and_their_state_counts_hold() {
    let none = Bugs::none();
    let reached = ["a message is shown", "every message is delivered"];
    let (n, found) = complete(
        Direct {
            messages: 1,
            faults: 0,
            ..Direct::default()
        }
        .into_model(&none),
    );
    assert_eq!(found, reached, "direct, one message, no faults");
    assert_eq!(n, 585);
    let (n, found) = complete(
        Group {
            crashes: 0,
            ..Group::default()
        }
        .into_model(&none),
    );
    assert_eq!(found, reached, "group, no crash");
    assert_eq!(n, 4_969);
    let mut failover = Failover::default().into_model(&none);
    failover.budget.total = 0;
    failover.reaches.retain(|r| *r != "a shard takes over");
    let (n, found) = complete(failover);
    assert_eq!(found, reached, "failover, no partition");
    assert_eq!(n, 6_749);
}

/// The invariants the first counterexample breaks (sorted), its length and what was wrong.
fn counterexample(bug: Bug) -> (Vec<&'static str>, usize, String) {
    let bugs: Bugs = [bug].into_iter().collect();
    let m = by_name(
        model_for(bug).expect("the bug shows in a small model"),
        &bugs,
    )
    .expect("the model exists");
    let c = m
        .clone()
        .checker()
        .threads(1)
        .finish_when(HasDiscoveries::AnyFailures)
        .spawn_bfs()
        .join();
    let mut broken: Vec<_> = c
        .discoveries()
        .into_iter()
        .filter(|(name, _)| chatsim_models::ALWAYS.contains(name))
        .collect();
    broken.sort_by_key(|(name, _)| *name);
    let (name, path) = broken
        .first()
        .cloned()
        .unwrap_or_else(|| panic!("{bug}: no counterexample"));
    let last = path.last_state().clone();
    (
        broken.iter().map(|(n, _)| *n).collect(),
        path.into_actions().len(),
        explain(&m, name, &last),
    )
}

// Each bug of the direct model yields a short story, caught by the invariant the simulator
// catches it with (or, for a gap shown out of order, the durability one).
#[test]
fn direct_model_bugs_are_found() {
    let (broken, steps, why) = counterexample(Bug::AckBeforePersist);
    assert_eq!(broken, ["no_loss"], "{why}");
    assert!(steps < 30, "{steps}");
    assert!(counterexample(Bug::NoClientDedup)
        .0
        .contains(&"exactly_once"));
    assert!(counterexample(Bug::NewIdPerRetry)
        .0
        .contains(&"exactly_once"));
    assert!(counterexample(Bug::DeleteInboxOnPush)
        .0
        .contains(&"no_loss"));
    let (broken, _, why) = counterexample(Bug::NoGapRepair);
    assert!(
        broken.contains(&"no_loss") || broken.contains(&"conversation_order"),
        "{broken:?}: {why}"
    );
}

// A phone whose connection is cut after the gateway wrote the frame (and acked for it) loses
// the message with `socket-write-is-delivery`.
#[test]
fn reconnect_model_finds_socket_write_is_delivery() {
    assert!(counterexample(Bug::SocketWriteIsDelivery)
        .0
        .contains(&"no_loss"));
}

// The properties see nothing wrong in the initial (warmed-up) state of every model, and the
// model names and the bugs' models agree.
#[test]
fn every_model_starts_clean() {
    for name in chatsim_models::models::NAMES {
        let m = by_name(name, &Bugs::none()).expect("named model exists");
        let w = &m.init_states()[0];
        for p in m.properties() {
            if chatsim_models::ALWAYS.contains(&p.name) {
                assert!((p.condition)(&m, w), "{name}: {} at the start", p.name);
            }
        }
    }
    assert_eq!(model_for(Bug::AckBeforePersist), Some("direct"));
    assert_eq!(model_for(Bug::TlsOnly), None);
}
