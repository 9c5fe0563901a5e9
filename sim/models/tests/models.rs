//! The models searched completely: pinned state counts for small clean variants (an accidental
//! change to the state space shows here), and each bug's counterexample found.

use chatsim_models::models::{
    by_name, model_for, Adversary, Direct, Failover, Group, Handover, BIGGER,
};
use chatsim_models::{explain, ChatModel};
use chatsim_system::bugs::{Bug, Bugs};
use stateright::{Checker, HasDiscoveries, Model};

/// Search `m` completely (depth first, as `chatsim check` does) and check it reached exactly `reached` (sorted; a broken invariant
/// would show among them) in `states` unique states.
fn passes(what: &str, m: ChatModel, reached: &[&str], states: usize) {
    let c = m.checker().threads(1).spawn_dfs().join();
    let mut found: Vec<&'static str> = c.discoveries().keys().copied().collect();
    found.sort();
    assert_eq!(found, reached, "{what}");
    assert_eq!(c.unique_state_count(), states, "{what}");
}

const SHOWN: &str = "a message is shown";
const READ: &str = "a message is read";
const DELIVERED: &str = "every message is delivered";

// Without faults every message arrives on every order of deliveries, and the search reaches
// the states it promises. The counts pin the state spaces.
#[test]
fn clean_small_worlds_pass_and_their_state_counts_hold() {
    let none = Bugs::none();
    let direct = |chat_open| Direct {
        messages: 1,
        faults: 0,
        chat_open,
        ..Direct::default()
    };
    let m = direct(false).into_model(&none);
    passes("direct, one message", m, &[SHOWN, DELIVERED], 535);
    let m = direct(true).into_model(&none);
    passes("read, one message", m, &[READ, SHOWN, DELIVERED], 673);
    let m = Group {
        crashes: 0,
        ..Group::default()
    }
    .into_model(&none);
    passes("group, no crash", m, &[SHOWN, DELIVERED], 2_407);
    let mut m = Failover::default().into_model(&none);
    m.budget.total = 0;
    m.reaches.retain(|r| *r != "a shard takes over");
    // User 0's phone goes offline and must come back (a cue with a deadline): were that
    // deadline not kept, its text would never get ✓ and `liveness` would be found.
    passes("failover, no partition", m, &[SHOWN, DELIVERED], 9_929);
    let m = Handover::default().into_model(&none);
    let reached = [
        "a drain completes",
        SHOWN,
        "a stale connection is unregistered",
        DELIVERED,
    ];
    passes("handover", m, &reached, 1_639);
}

// With faults, too, the clean design passes (a property that fired on a faulted clean world
// would otherwise go unnoticed: the bug tests only see that it fires with the bug on). Small
// faulted variants, pinned: reading with one lost frame, and a takeover with the partition
// starting in the first 100 ms and the answer and the return in narrow windows.
#[test]
fn faulted_small_worlds_pass_and_their_state_counts_hold() {
    let none = Bugs::none();
    let m = Direct {
        messages: 1,
        chat_open: true,
        crashes: 0,
        dups: 0,
        ..Direct::default()
    }
    .into_model(&none);
    passes("read, one lost frame", m, &[READ, SHOWN, DELIVERED], 9_538);
    let m = narrow_failover().into_model(&none);
    let reached = [SHOWN, "a shard takes over", DELIVERED];
    passes("failover, narrow windows", m, &reached, 104_727);
}

/// Failover with the partition starting in the first 100 ms and the answer and the return in
/// narrow windows (the return still on both sides of the heal at 6 s).
fn narrow_failover() -> Failover {
    Failover {
        users_until: 100,
        answer_from: 4_000,
        answer_by: 4_100,
        back_from: 5_900,
        back_by: 7_000,
        ..Failover::default()
    }
}

/// The invariants the first counterexample breaks (sorted), its length and what was wrong, in
/// the model `chatsim check --bug` hunts the bug in.
fn counterexample(bug: Bug) -> (Vec<&'static str>, usize, String) {
    let bugs: Bugs = [bug].into_iter().collect();
    let m = by_name(
        model_for(bug).expect("the bug shows in a small model"),
        &bugs,
    )
    .expect("the model exists");
    counterexample_in(m, bug)
}

/// As [`counterexample`], in the model `m` (built with `bug` on).
fn counterexample_in(m: ChatModel, bug: Bug) -> (Vec<&'static str>, usize, String) {
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

// A receipt sent once and lost on its way leaves the sender without ✓✓ for good.
#[test]
fn direct_model_finds_fire_and_forget_receipts() {
    let (broken, _, why) = counterexample(Bug::FireAndForgetReceipts);
    assert_eq!(broken, ["receipts"], "{why}");
}

// With the chat open, "mark read" stretched to the log's end covers a text still missing on
// the phone: its sender shows it read.
#[test]
fn read_model_finds_read_before_delivered() {
    let (broken, _, why) = counterexample(Bug::ReadBeforeDelivered);
    assert_eq!(broken, ["receipts"], "{why}");
}

// `receipts` sees a ✓✓ nobody earned: a tick on a text its recipient never showed.
#[test]
fn receipts_property_sees_an_unearned_tick() {
    use chatsim_system::proto::{ConvId, DeviceId, MsgId, ReceiptKind, UserId};
    let m = by_name("direct", &Bugs::none()).expect("direct exists");
    let mut w = m.init_states()[0].clone();
    assert_eq!(m.bad_tick(&w), None);
    let id = MsgId {
        device: DeviceId::primary(UserId(0)),
        n: 0,
    };
    let conv = ConvId::direct(UserId(0), UserId(1));
    std::sync::Arc::make_mut(&mut w.facts)
        .texts
        .insert(id, (conv, b"hi".to_vec()));
    std::sync::Arc::make_mut(&mut w.facts)
        .acked
        .insert(id, (conv, 1));
    std::sync::Arc::make_mut(&mut w.facts)
        .ticks
        .insert(id, ReceiptKind::Delivered);
    let why = m.bad_tick(&w).expect("an unearned ✓✓ is caught");
    assert!(why.contains("shows it nowhere"), "{why}");
    std::sync::Arc::make_mut(&mut w.facts)
        .shown
        .entry(DeviceId::primary(UserId(1)))
        .or_default()
        .push((conv, 1, id, b"hi".to_vec()));
    assert_eq!(m.bad_tick(&w), None, "earned once shown");
    std::sync::Arc::make_mut(&mut w.facts)
        .ticks
        .insert(id, ReceiptKind::Read);
    assert!(m.bad_tick(&w).is_some(), "read, but never read");
}

// A phone whose connection is cut after the gateway wrote the frame (and acked for it) loses
// the message with `socket-write-is-delivery`.
#[test]
fn reconnect_model_finds_socket_write_is_delivery() {
    assert!(counterexample(Bug::SocketWriteIsDelivery)
        .0
        .contains(&"no_loss"));
}

// A shard that took a zombie's slot over gives the answer the number the zombie gave the
// held text; without the fence the zombie's late write lands on it after the heal, and that
// number names two acked messages.
#[test]
fn failover_model_finds_unfenced_failover() {
    let bugs: Bugs = [Bug::UnfencedFailover].into_iter().collect();
    let (broken, _, why) =
        counterexample_in(narrow_failover().into_model(&bugs), Bug::UnfencedFailover);
    assert_eq!(broken, ["conversation_order"], "{why}");
    assert!(why.contains("names"), "{why}");
}

// A phone's old, half-open connection is unregistered seconds after the phone registered
// again elsewhere; without the epoch check that clears the live entry, and a text to the
// phone waits in its inbox past the horizon.
#[test]
fn handover_model_finds_session_clear_without_epoch() {
    let (broken, _, why) = counterexample(Bug::SessionClearWithoutEpoch);
    assert_eq!(broken, ["liveness"], "{why}");
}

// A compromised phone's five crafted requests, at every moment of an honest exchange, get
// nothing out of the design (every one refused as from outside), and each defence switched off
// lets its attack through: a short story, caught by `authz`.
#[test]
fn adversary_model_passes_clean_and_finds_each_missing_defence() {
    let m = Adversary::default().into_model(&Bugs::none());
    let reached = [SHOWN, "an outsider is refused", DELIVERED];
    passes("adversary", m, &reached, 4_615);
    for (bug, says) in [
        (
            Bug::TrustClientSender,
            "reached u0.d0 in c(u0,u2), which u1 is not in",
        ),
        (Bug::SendSkipsMembership, "in c(u0,u1), which u2 is not in"),
        (Bug::FetchSkipsMembership, "reached u2.d0, an outsider"),
        (Bug::PullSkipsMembership, "u2.d0 was told g0 reaches seq 0"),
        (Bug::ReceiptFromAnyone, "a receipt in c(u0,u1) from u2.d0"),
    ] {
        let (broken, steps, why) = counterexample(bug);
        assert_eq!(broken, ["authz"], "{bug}: {why}");
        assert!(why.contains(says), "{bug}: {why}");
        assert!(steps < 60, "{bug}: {steps} steps");
    }
}

// The properties see nothing wrong in the initial (warmed-up) state of every model, every
// script keeps its deadlines, and the model names and the bugs' models agree.
#[test]
fn every_model_starts_clean() {
    use chatsim_models::world::Cue;
    for name in chatsim_models::models::NAMES {
        let m = by_name(name, &Bugs::none()).expect("named model exists");
        for (d, script) in &m.scripts {
            Cue::well_formed(script, m.limits.horizon)
                .unwrap_or_else(|why| panic!("{name}: {d}'s script: {why}"));
        }
        let w = &m.init_states()[0];
        for p in m.properties() {
            if chatsim_models::ALWAYS.contains(&p.name) {
                assert!((p.condition)(&m, w), "{name}: {} at the start", p.name);
            }
        }
    }
    let online = |from, by| Cue::between(from, by, chatsim_system::Action::GoOnline);
    assert!(Cue::well_formed(&[online(0, 10), online(0, 20)], 100).is_ok());
    assert!(Cue::well_formed(&[online(0, 20), online(0, 10)], 100).is_err());
    assert!(
        Cue::well_formed(&[online(0, 10)], 5).is_err(),
        "past the horizon"
    );
    assert_eq!(model_for(Bug::AckBeforePersist), Some("direct"));
    assert_eq!(model_for(Bug::UnfencedFailover), Some("failover"));
    assert_eq!(model_for(Bug::TlsOnly), None);
}

// The full `direct` model, two texts and one fault of any kind, as `chatsim check` runs it:
// searched whole in CI since the search got several times faster (hashes of derived `Hash`,
// machines copied on write). Its count pins the default model's state space too.
#[test]
fn the_default_direct_model_is_searched_whole() {
    let m = by_name("direct", &Bugs::none()).expect("direct exists");
    let reached = [SHOWN, "a server crashes", DELIVERED];
    passes("direct, as chatsim check runs it", m, &reached, 216_584);
}

// The other default models, searched whole as `chatsim check` runs them, since the search went
// depth first: every model `check` runs by default has its count pinned here.
#[test]
fn the_default_read_reconnect_and_failover_models_are_searched_whole() {
    let whole = |name: &str| by_name(name, &Bugs::none()).expect("the model exists");
    let crash = "a server crashes";
    passes(
        "read",
        whole("read"),
        &["a message is read", SHOWN, DELIVERED],
        108_648,
    );
    let reached = ["a drain completes", SHOWN, crash, DELIVERED];
    passes("reconnect", whole("reconnect"), &reached, 446_109);
    let reached = [SHOWN, "a shard takes over", DELIVERED];
    passes("failover", whole("failover"), &reached, 373_003);
}

// The full `group` model (three users, a group made and posted to, a shard crash): before the
// speed-up the slowest search, 73 s on two threads in release.
#[test]
fn the_default_group_model_is_searched_whole() {
    let m = by_name("group", &Bugs::none()).expect("group exists");
    let reached = [SHOWN, "a server crashes", DELIVERED];
    passes("group, as chatsim check runs it", m, &reached, 153_027);
}

// The worlds one size up answer to their names (searched by hand, `chatsim check --model
// direct-3`: millions of states, past CI's budget; reports/bench/bigger-models.txt).
#[test]
fn the_bigger_worlds_answer_to_their_names() {
    for name in BIGGER {
        let m = by_name(name, &Bugs::none()).unwrap_or_else(|| panic!("{name} exists"));
        assert_eq!(m.name, name);
    }
    assert!(by_name("direct-4", &Bugs::none()).is_none());
}
