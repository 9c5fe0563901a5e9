//! The checkers on hand-built histories: each invariant catches what it names, and only that.

use super::*;
use crate::history::Fault;
use chatsim_system::proto::{Host, Path, UserId};

const BOUNDS: Bounds = Bounds {
    liveness_ms: 100,
    ack_p50_ms: 300,
    fetch_extra_ms: 0,
    fetch_max: chatsim_system::limits::GAP_FETCH_SEQS_MAX,
    inbox_page: chatsim_system::limits::INBOX_PAGE_ENTRIES,
};

fn dev(u: u32) -> DeviceId {
    DeviceId::primary(UserId(u))
}

fn conv(a: u32, b: u32) -> ConvId {
    ConvId::direct(UserId(a), UserId(b))
}

fn mid(u: u32, n: u32) -> MsgId {
    MsgId { device: dev(u), n }
}

fn history(end: Millis) -> History {
    let mut h = History::new(3);
    h.end = end;
    h
}

/// User `from` presses send on message `n` to user `to`.
fn sent(h: &mut History, t: Millis, from: u32, n: u32, to: u32, body: &str) {
    h.observe(
        t,
        dev(from),
        Observation::Sent {
            id: mid(from, n),
            conv: conv(from, to),
            body: body.into(),
        },
    );
}

/// User `from`'s message `n` to `to` gets its ✓ with `seq`.
fn acked(h: &mut History, t: Millis, from: u32, n: u32, to: u32, seq: Seq) {
    h.observe(
        t,
        dev(from),
        Observation::Acked {
            id: mid(from, n),
            conv: conv(from, to),
            seq,
        },
    );
}

/// User `on` displays user `from`'s message `n`.
fn shown(h: &mut History, t: Millis, on: u32, from: u32, n: u32, seq: Seq, body: &str) {
    let obs = Observation::Displayed {
        id: mid(from, n),
        conv: conv(from, on),
        seq,
        path: Path::Live,
        body: body.into(),
        sent_at: 0,
    };
    h.observe(t, dev(on), obs);
}

/// A full, well-behaved exchange: sent, acked, displayed, in both directions.
fn send_and_deliver(h: &mut History, t: Millis, from: u32, n: u32, to: u32, seq: Seq, body: &str) {
    sent(h, t, from, n, to, body);
    acked(h, t + 10, from, n, to, seq);
    shown(h, t + 20, to, from, n, seq, body);
    let tick = Observation::Ticks {
        id: mid(from, n),
        conv: conv(from, to),
        seq,
        tick: chatsim_system::proto::ReceiptKind::Delivered,
    };
    h.observe(t + 25, dev(from), tick);
}

fn clean() -> History {
    let mut h = history(1000);
    h.push(0, Event::Fault(Fault::Kill(Host::Shard(0))));
    h.push(5, Event::Fault(Fault::Restart(Host::Shard(0))));
    h.push(5, Event::Healed);
    send_and_deliver(&mut h, 10, 0, 1, 1, 1, "hi");
    send_and_deliver(&mut h, 40, 1, 1, 0, 2, "yo");
    send_and_deliver(&mut h, 70, 2, 1, 0, 1, "hey");
    send_and_deliver(&mut h, 100, 0, 2, 1, 3, "again");
    h
}

fn only(v: &Verdict) -> &Violation {
    assert_eq!(
        v.violations.len(),
        1,
        "expected one violation, got {:#?}",
        v.violations
    );
    &v.violations[0]
}

// A well-behaved run passes every check, reported in CHECKS order, and each invariant
// checker actually examined something (not a vacuous pass). The history has no reconnects,
// no server frames and no open chats, so the reconnect bound, confidentiality and presence
// have nothing to look at; bounds.rs, confidential.rs and presence.rs test them.
#[test]
fn clean_history_passes_every_check() {
    let verdicts = check_all(&clean(), BOUNDS);
    assert_eq!(verdicts.iter().map(|v| v.name).collect::<Vec<_>>(), CHECKS);
    for v in &verdicts {
        assert!(v.holds, "{} failed: {:#?}", v.name, v.violations);
        assert!(
            v.checked > 0
                || !INVARIANTS.contains(&v.name)
                || v.name == crate::confidential::E2E_CONFIDENTIAL
                || v.name == crate::presence::PRESENCE_CONVERGES,
            "{} checked nothing",
            v.name
        );
    }
}

// An acked message that never reaches its recipient is reported by no_loss, naming the
// message, its text, the recipient and the ack time.
#[test]
fn no_loss_catches_acked_message_never_displayed() {
    let mut h = clean();
    sent(&mut h, 200, 0, 3, 2, "lost");
    acked(&mut h, 210, 0, 3, 2, 1);
    let v = no_loss(&h);
    assert!(!v.holds);
    let x = only(&v);
    assert_eq!(x.message.as_deref(), Some("u0.d0#3"));
    assert_eq!(x.body.as_deref(), Some("lost"));
    assert_eq!(x.device.as_deref(), Some("u2.d0"));
    assert_eq!(x.conv, Some(conv(0, 2).to_string()));
    assert_eq!(x.at, Some(210));
    assert!(
        x.detail.contains("never displayed on u2.d0"),
        "{}",
        x.detail
    );
}

// A message sent but never acked promises nothing, so no_loss does not flag it.
#[test]
fn no_loss_ignores_unacked_send() {
    let mut h = clean();
    sent(&mut h, 200, 0, 3, 2, "pending");
    assert!(no_loss(&h).holds);
}

// The same id displayed twice on one device is one extra display, dated at the repeat.
#[test]
fn exactly_once_catches_same_id_displayed_twice() {
    let mut h = clean();
    shown(&mut h, 300, 1, 0, 1, 1, "hi");
    let v = exactly_once(&h);
    let x = only(&v);
    assert_eq!(x.message.as_deref(), Some("u0.d0#1"));
    assert_eq!(x.device.as_deref(), Some("u1.d0"));
    assert_eq!(x.at, Some(300));
}

// A resend of the same text under a new id is still the same message to the user.
#[test]
fn exactly_once_catches_same_text_resent_under_new_id() {
    let mut h = clean();
    shown(&mut h, 300, 1, 0, 9, 4, "hi");
    let v = exactly_once(&h);
    let x = only(&v);
    assert_eq!(x.message.as_deref(), Some("u0.d0#9"));
    assert_eq!(x.body.as_deref(), Some("hi"));
    assert_eq!(x.device.as_deref(), Some("u1.d0"));
    assert_eq!(x.at, Some(300));
    assert!(x.detail.contains("as u0.d0#1"), "{}", x.detail);
}

// Two devices displaying the same text from different senders are different messages.
#[test]
fn exactly_once_allows_same_text_from_different_senders() {
    let mut h = history(1000);
    send_and_deliver(&mut h, 10, 1, 1, 0, 1, "same");
    send_and_deliver(&mut h, 40, 2, 1, 0, 1, "same");
    assert!(exactly_once(&h).holds);
}

// A device showing seq 2 before seq 1 in one conversation breaks display order; the
// violation names the late message and both seqs.
#[test]
fn conversation_order_catches_out_of_order_display() {
    let mut h = history(1000);
    sent(&mut h, 10, 0, 1, 1, "first");
    sent(&mut h, 11, 0, 2, 1, "second");
    acked(&mut h, 20, 0, 1, 1, 1);
    acked(&mut h, 21, 0, 2, 1, 2);
    shown(&mut h, 30, 1, 0, 2, 2, "second");
    shown(&mut h, 31, 1, 0, 1, 1, "first");
    let v = conversation_order(&h);
    let x = only(&v);
    assert_eq!(x.message.as_deref(), Some("u0.d0#1"));
    assert_eq!(x.device.as_deref(), Some("u1.d0"));
    assert_eq!(x.at, Some(31));
    assert!(x.detail.contains("seq 1 after seq 2"), "{}", x.detail);
}

// Seqs in different conversations are independent: interleaving them is not disorder.
#[test]
fn conversation_order_is_per_conversation() {
    let mut h = history(1000);
    send_and_deliver(&mut h, 10, 1, 1, 0, 5, "a");
    send_and_deliver(&mut h, 40, 2, 1, 0, 1, "b");
    assert!(conversation_order(&h).holds);
}

// The sender acked with seq 1 but the recipient shows seq 2: observers disagree.
#[test]
fn conversation_order_catches_seq_disagreement() {
    let mut h = history(1000);
    sent(&mut h, 10, 0, 1, 1, "hi");
    acked(&mut h, 20, 0, 1, 1, 1);
    shown(&mut h, 30, 1, 0, 1, 2, "hi");
    let v = conversation_order(&h);
    let x = only(&v);
    assert_eq!(x.message.as_deref(), Some("u0.d0#1"));
    assert_eq!(x.device.as_deref(), Some("u1.d0"));
    assert_eq!(x.at, Some(30));
    assert!(
        x.detail.contains("with seq 2") && x.detail.contains("with seq 1"),
        "{}",
        x.detail
    );
}

// Two different messages acked with the same seq in one conversation collide.
#[test]
fn conversation_order_catches_two_messages_sharing_a_seq() {
    let mut h = history(1000);
    sent(&mut h, 10, 0, 1, 1, "a");
    acked(&mut h, 20, 0, 1, 1, 1);
    sent(&mut h, 30, 1, 1, 0, "b");
    acked(&mut h, 40, 1, 1, 0, 1);
    let v = conversation_order(&h);
    let x = only(&v);
    assert_eq!(x.message.as_deref(), Some("u1.d0#1"));
    assert_eq!(x.at, Some(40));
    assert!(x.detail.contains("u0.d0#1 \"a\""), "{}", x.detail);
}

// Liveness is measured from the heal: a message acked during a fault may wait until
// heal + bound, and one displayed after that is late by the difference.
#[test]
fn liveness_catches_late_display_after_heal() {
    let mut h = history(1000);
    h.push(50, Event::Fault(Fault::Clog(Host::Gateway(0))));
    sent(&mut h, 90, 0, 1, 1, "on time");
    sent(&mut h, 91, 0, 2, 1, "late");
    acked(&mut h, 100, 0, 1, 1, 1);
    acked(&mut h, 101, 0, 2, 1, 2);
    h.push(500, Event::Fault(Fault::Unclog(Host::Gateway(0))));
    h.push(500, Event::Healed);
    shown(&mut h, 590, 1, 0, 1, 1, "on time");
    shown(&mut h, 700, 1, 0, 2, 2, "late");
    let v = liveness(&h, BOUNDS);
    let x = only(&v);
    assert_eq!(x.message.as_deref(), Some("u0.d0#2"));
    assert_eq!(x.device.as_deref(), Some("u1.d0"));
    assert_eq!(x.at, Some(600));
    assert!(
        x.detail.contains("100 ms after its deadline of 600 ms"),
        "{}",
        x.detail
    );
    assert!(x.detail.contains("the heal at 500 ms"), "{}", x.detail);
}

// A send that is never acked, with its deadline inside the run, is a liveness violation.
#[test]
fn liveness_catches_unacked_send() {
    let mut h = clean();
    sent(&mut h, 300, 2, 2, 1, "stuck");
    let v = liveness(&h, BOUNDS);
    let x = only(&v);
    assert_eq!(x.message.as_deref(), Some("u2.d0#2"));
    assert_eq!(x.device.as_deref(), Some("u2.d0"));
    assert_eq!(x.at, Some(400));
    assert!(x.detail.contains("never acked"), "{}", x.detail);
    // The same send turned down for good owes no ✓; one the phone will retry still does.
    let mut retried = h.clone();
    let refusal = |fin| Observation::Refused {
        reason: chatsim_system::proto::Refusal::NotMember,
        id: Some(mid(2, 2)),
        fin,
    };
    retried.observe(310, dev(2), refusal(false));
    assert_eq!(liveness(&retried, BOUNDS).violations.len(), 1);
    h.observe(310, dev(2), refusal(true));
    let v = liveness(&h, BOUNDS);
    assert!(v.holds, "{:?}", v.violations);
}

// When the run ends before a deadline, a missing ack or display cannot be judged yet.
#[test]
fn liveness_skips_deadlines_after_end() {
    let mut h = clean();
    sent(&mut h, 950, 0, 3, 2, "unacked");
    sent(&mut h, 960, 1, 2, 2, "undisplayed");
    acked(&mut h, 970, 1, 2, 2, 1);
    let v = liveness(&h, BOUNDS);
    assert!(v.holds, "{:#?}", v.violations);
    assert_eq!(
        v.checked,
        liveness(&clean(), BOUNDS).checked + 1,
        "only the in-time ack is judged"
    );
}

/// User `u`'s first companion.
fn companion(u: u32) -> DeviceId {
    DeviceId {
        user: UserId(u),
        index: 1,
    }
}

/// Three users with a phone and a companion each, `late` linked mid-run.
fn linking(late: Vec<DeviceId>) -> History {
    let mut h = History::with_devices(3, 2);
    h.end = 10_000;
    h.late_devices = late;
    h
}

// A device linked mid-run is owed what was sent after its link, not before.
#[test]
fn a_late_device_is_owed_only_what_was_sent_after_its_link() {
    let companion = companion(1);
    // The sender's own companion is linked later too (and never mentioned again).
    let mut h = linking(vec![companion, self::companion(0)]);
    // Before the link: shown on the phone only, and nobody minds.
    sent(&mut h, 100, 0, 1, 1, "early");
    acked(&mut h, 110, 0, 1, 1, 1);
    shown(&mut h, 120, 1, 0, 1, 1, "early");
    h.observe(1_000, companion, Observation::Linked);
    assert!(no_loss(&h).holds);
    // After it: the companion must show it too.
    sent(&mut h, 2_000, 0, 2, 1, "late");
    acked(&mut h, 2_010, 0, 2, 1, 2);
    shown(&mut h, 2_020, 1, 0, 2, 2, "late");
    let v = no_loss(&h);
    assert!(!v.holds);
    assert_eq!(v.violations.len(), 1);
    assert!(
        v.violations[0].detail.contains("u1.d1"),
        "{:?}",
        v.violations
    );
}

// A device linked mid-run that connected but whose link was never stored is a liveness
// violation: nobody would ever seal for it.
#[test]
fn a_late_device_whose_link_is_never_stored_breaks_liveness() {
    let companion = companion(1);
    let mut h = linking(vec![companion]);
    let connected = Observation::Connected {
        gateway: 0,
        epoch: 1,
    };
    h.observe(500, companion, connected);
    let v = liveness(&h, BOUNDS);
    assert!(!v.holds);
    assert!(
        v.violations[0].detail.contains("never stored"),
        "{:?}",
        v.violations
    );
    h.observe(550, companion, Observation::Linked);
    assert!(liveness(&h, BOUNDS).holds);
}

// A compromised device's ✓ for an id it made up (no `Sent` anywhere) owes nobody a display:
// `no_loss` skips it. The same ✓ on an honest device (one that never attacked) is still judged,
// and so is a text the compromised device really composed.
#[test]
fn a_compromised_devices_made_up_ids_are_owed_nothing_but_its_texts_are() {
    let attacked = Observation::Attacked {
        attack: chatsim_system::attack::Attack::ReuseId,
    };
    let mut h = history(1_000);
    h.observe(1, dev(0), attacked.clone());
    acked(&mut h, 2, 0, 9, 1, 1);
    assert!(no_loss(&h).holds, "{:?}", no_loss(&h).violations);

    let mut h = history(1_000);
    acked(&mut h, 2, 0, 9, 1, 1);
    assert!(
        !no_loss(&h).holds,
        "an honest device's ✓ without a display is judged"
    );

    let mut h = history(1_000);
    h.observe(1, dev(0), attacked);
    sent(&mut h, 2, 0, 1, 1, "mine");
    acked(&mut h, 3, 0, 1, 1, 1);
    assert!(
        !no_loss(&h).holds,
        "what the compromised device composed is owed"
    );
}
