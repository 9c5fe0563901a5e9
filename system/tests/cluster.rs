//! System-wide behaviour through the in-memory harness ([`Cluster`]): every component of a
//! small deployment in one process, frames on a 1 ms queue, virtual time. Each test tells one
//! story end to end (a message acked and shown, a crash survived, a failover fenced) and says
//! in its first comment what it shows.

use chatsim_system::proto::{ConvId, Path};
use chatsim_system::proto::{DeviceId, Host, Millis, UserId};
use chatsim_system::testkit::Cluster;
use chatsim_system::{Action, Deployment, Effect, Input, Machine, Observation};
use std::collections::BTreeMap;

fn topo() -> Deployment {
    Deployment {
        users: 2,
        gateways: 2,
        shards: 2,
        ..Deployment::default()
    }
}
const A: DeviceId = DeviceId {
    user: UserId(0),
    index: 0,
};
const B: DeviceId = DeviceId {
    user: UserId(1),
    index: 0,
};

fn send(c: &mut Cluster, from: DeviceId, to: DeviceId, text: &str) {
    c.act(
        from,
        Action::SendDirect {
            to: to.user,
            body: text.as_bytes().to_vec(),
        },
    );
}

fn displayed(c: &Cluster, d: DeviceId) -> Vec<(u64, String, Path)> {
    c.seen(d, |o| matches!(o, Observation::Displayed { .. }))
        .map(|o| match o {
            Observation::Displayed {
                seq, body, path, ..
            } => (*seq, String::from_utf8_lossy(body).into_owned(), *path),
            _ => unreachable!(),
        })
        .collect()
}

// The happy path end to end: ✓ for the sender, the message live on the recipient, in order.
#[test]
fn a_message_between_two_online_users_is_acked_and_displayed_live() {
    let mut c = Cluster::new(topo());
    c.run_for(1_000);
    send(&mut c, A, B, "hi");
    send(&mut c, A, B, "there");
    c.run_for(1_000);
    assert_eq!(
        c.seen(A, |o| matches!(o, Observation::Acked { .. }))
            .count(),
        2
    );
    assert_eq!(
        displayed(&c, B),
        vec![
            (1, "hi".into(), Path::Live),
            (2, "there".into(), Path::Live)
        ]
    );
    assert_eq!(
        c.durable().inbox_entries(),
        0,
        "acked entries must be deleted"
    );
}

// Offline recipient: the message waits in the inbox and arrives by drain on reconnect.
#[test]
fn an_offline_recipient_gets_the_message_from_its_inbox_on_reconnect() {
    let mut c = Cluster::new(topo());
    c.run_for(1_000);
    c.act(B, Action::GoOffline);
    send(&mut c, A, B, "while you were out");
    c.run_for(2_000);
    assert!(displayed(&c, B).is_empty());
    assert_eq!(c.durable().inbox_entries(), 1);
    c.act(B, Action::GoOnline);
    c.run_for(2_000);
    assert_eq!(
        displayed(&c, B),
        vec![(1, "while you were out".into(), Path::Inbox)]
    );
    assert!(
        c.seen(B, |o| matches!(o, Observation::DrainComplete))
            .count()
            >= 1
    );
    assert_eq!(c.durable().inbox_entries(), 0);
}

// Storage crashing before its sync must cost the ✓, never the message: the sender retries
// with the same id and the recipient shows it once.
#[test]
fn a_storage_crash_before_sync_delays_the_ack_and_the_retry_is_shown_once() {
    let mut c = Cluster::new(topo());
    c.run_for(1_000);
    send(&mut c, A, B, "fragile");
    // Send -> gateway -> shard (load conv) -> storage -> shard -> storage: crash in between.
    c.run_for(4);
    c.crash(Host::Storage(0));
    c.run_for(1);
    assert_eq!(
        c.seen(A, |o| matches!(o, Observation::Acked { .. }))
            .count(),
        0
    );
    c.run_for(20_000);
    assert_eq!(
        c.seen(A, |o| matches!(o, Observation::Acked { .. }))
            .count(),
        1
    );
    assert_eq!(displayed(&c, B).len(), 1);
    assert_eq!(c.durable().messages(), 1);
}

// Crash every server role mid-conversation; every message still arrives exactly once, in
// order, once things settle.
#[test]
fn crashes_of_every_server_role_lose_nothing_and_duplicate_nothing() {
    let mut c = Cluster::new(topo());
    c.run_for(1_000);
    for i in 0..20u32 {
        send(&mut c, A, B, &format!("a{i}"));
        send(&mut c, B, A, &format!("b{i}"));
        c.run_for(3);
        let victim = [
            Host::Gateway(0),
            Host::Shard(0),
            Host::Storage(0),
            Host::Session,
            Host::Gateway(1),
            Host::Shard(1),
        ][i as usize % 6];
        c.crash(victim);
        c.run_for(50);
    }
    c.run_for(60_000);
    for (d, prefix) in [(B, "a"), (A, "b")] {
        let shown = displayed(&c, d);
        let bodies: Vec<String> = shown.iter().map(|s| s.1.clone()).collect();
        let want: Vec<String> = (0..20).map(|i| format!("{prefix}{i}")).collect();
        let mut sorted = bodies.clone();
        sorted.sort();
        let mut want_sorted = want.clone();
        want_sorted.sort();
        assert_eq!(sorted, want_sorted, "{d} shows {bodies:?}");
        assert!(
            shown.windows(2).all(|w| w[0].0 < w[1].0),
            "{d} out of order: {shown:?}"
        );
    }
    assert_eq!(c.device(A).outbox_len(), 0);
    assert_eq!(c.device(B).outbox_len(), 0);
}

// A message held after a gap is shown only once the gap is fetched, and in order: driven
// on the device alone so nothing but the fetch can fill the gap.
#[test]
fn a_gap_is_held_back_and_repaired_by_fetch() {
    use chatsim_system::device::Device;
    use chatsim_system::e2e::{keypair, seal, Bundle};
    use chatsim_system::limits::GAP_REPAIR_DELAY_MS;
    use chatsim_system::proto::{Down, Message, MsgId, Up};
    let conv = ConvId::direct(A.user, B.user);
    let (ka, kb) = (keypair(100), keypair(1));
    let mut t = topo();
    t.keys =
        chatsim_system::KeyDirectory::new([(A, ka.public), (B, kb.public)].into_iter().collect());
    let msg = |seq: u64| {
        let id = MsgId {
            device: A,
            n: seq as u32,
        };
        let copy = seal(&ka, B, &kb.public, id, &[seq as u8]);
        let body = Bundle {
            copies: vec![(B, copy)],
        }
        .encode();
        Message {
            conv,
            seq,
            id,
            body,
            sent_at: 0,
            event: None,
            keys: Vec::new(),
        }
    };
    let mut d = Device::new(B, t, 1, true);
    let mut out = Vec::new();
    d.handle(0, Input::Timeout, &mut out);
    d.handle(1, Input::Connected, &mut out);
    d.handle(2, Input::Down(Down::Welcome { epoch: 1 }), &mut out);
    out.clear();
    d.handle(
        3,
        Input::Down(Down::Deliver {
            msg: msg(1),
            path: Path::Live,
        }),
        &mut out,
    );
    d.handle(
        4,
        Input::Down(Down::Deliver {
            msg: msg(3),
            path: Path::Live,
        }),
        &mut out,
    );
    let shown = |out: &[Effect]| -> Vec<u64> {
        out.iter()
            .filter_map(|e| match e {
                Effect::Observe(Observation::Displayed { seq, .. }) => Some(*seq),
                _ => None,
            })
            .collect()
    };
    assert_eq!(shown(&out), vec![1], "3 must wait for 2");
    assert!(out.contains(&Effect::Observe(Observation::GapDetected {
        conv,
        from: 2,
        to: 2
    })));
    out.clear();
    d.handle(4 + GAP_REPAIR_DELAY_MS, Input::Timeout, &mut out);
    assert!(
        out.contains(&Effect::Up(Up::Fetch {
            conv,
            from: 2,
            to: 2
        })),
        "{out:?}"
    );
    out.clear();
    d.handle(
        600,
        Input::Down(Down::Deliver {
            msg: msg(2),
            path: Path::Fetch,
        }),
        &mut out,
    );
    d.handle(
        601,
        Input::Down(Down::Deliver {
            msg: msg(2),
            path: Path::Inbox,
        }),
        &mut out,
    );
    assert_eq!(shown(&out), vec![2, 3]);
    assert!(out.iter().any(|e| matches!(
        e,
        Effect::Observe(Observation::DuplicateDropped { seq: 2, .. })
    )));
}

fn reconnects(c: &Cluster, d: DeviceId) -> usize {
    c.seen(d, |o| matches!(o, Observation::Connected { .. }))
        .count()
}

// A push lost on its way (the shard-to-gateway link drops it) is retried by the shard until
// the device acks: the message arrives live, without waiting for a reconnect or a sync.
#[test]
fn a_lost_push_is_retried_until_the_device_acks() {
    let mut c = Cluster::new(topo());
    c.run_for(1_000);
    c.lossy.extend([Host::Gateway(0), Host::Gateway(1)]);
    send(&mut c, A, B, "lost once");
    c.run_for(200);
    assert!(
        displayed(&c, B).is_empty(),
        "the first push must have been lost"
    );
    c.lossy.clear();
    c.run_for(3_000);
    assert_eq!(displayed(&c, B), vec![(1, "lost once".into(), Path::Live)]);
    assert_eq!(reconnects(&c, B), 1, "delivered without reconnecting");
    assert_eq!(c.durable().inbox_entries(), 0);
}

// A shard that restarts forgets the deliveries it was tracking; its boot sweep over the
// inboxes takes them up again, so the recipient still gets the message live.
#[test]
fn a_restarted_shard_sweeps_the_inboxes_and_pushes_what_was_pending() {
    let mut c = Cluster::new(topo());
    c.run_for(1_000);
    let conv = ConvId::direct(A.user, B.user);
    let owner = Host::Shard(chatsim_system::routing::shard_for_conv(conv, 2));
    // Lose the first push, then crash the shard before its retry.
    c.lossy.extend([Host::Gateway(0), Host::Gateway(1)]);
    send(&mut c, A, B, "after the crash");
    c.run_for(200);
    c.lossy.clear();
    assert!(displayed(&c, B).is_empty());
    c.crash(owner);
    c.run_for(500);
    assert_eq!(
        displayed(&c, B),
        vec![(1, "after the crash".into(), Path::Live)]
    );
    assert_eq!(reconnects(&c, B), 1);
}

fn ticks(c: &Cluster, d: DeviceId) -> Vec<(u64, chatsim_system::proto::ReceiptKind)> {
    c.seen(d, |o| matches!(o, Observation::Ticks { .. }))
        .map(|o| match o {
            Observation::Ticks { seq, tick, .. } => (*seq, *tick),
            _ => unreachable!(),
        })
        .collect()
}

// The whole life of the ticks: ✓✓ once the recipient shows the text, read once its user
// opens the chat; the sender's queued copies are dropped once it has seen them.
#[test]
fn ticks_go_delivered_then_read_and_nothing_stays_queued() {
    use chatsim_system::proto::ReceiptKind::{Delivered, Read};
    let mut c = Cluster::new(topo());
    c.run_for(1_000);
    send(&mut c, A, B, "one");
    send(&mut c, A, B, "two");
    c.run_for(1_000);
    assert_eq!(ticks(&c, A), vec![(1, Delivered), (2, Delivered)]);
    let conv = ConvId::direct(A.user, B.user);
    c.act(B, Action::OpenChat { conv });
    c.run_for(1_000);
    assert_eq!(
        ticks(&c, A),
        vec![(1, Delivered), (2, Delivered), (1, Read), (2, Read)]
    );
    // Shown while open: read at once (both receipts go in one batch, ✓✓ first).
    send(&mut c, A, B, "three");
    c.run_for(1_000);
    assert_eq!(ticks(&c, A)[4..], [(3, Delivered), (3, Read)]);
    assert_eq!(c.durable().receipts_queued(), 0);
    assert_eq!(c.durable().mark(conv, B, Read), 3);
}

// A receipt lost on its way to the shard is sent again until storage has it; with
// `fire-and-forget-receipts` it is gone, and the sender's ticks stay grey.
#[test]
fn a_lost_receipt_is_retried_until_stored() {
    for forget in [false, true] {
        let mut t = topo();
        if forget {
            t.bugs = chatsim_system::bugs::Bugs::from_iter([
                chatsim_system::bugs::Bug::FireAndForgetReceipts,
            ]);
        }
        let mut c = Cluster::new(t);
        c.run_for(1_000);
        let conv = ConvId::direct(A.user, B.user);
        let owner = Host::Shard(chatsim_system::routing::shard_for_conv(conv, 2));
        send(&mut c, A, B, "hi");
        c.run_for(100);
        assert_eq!(displayed(&c, B).len(), 1);
        c.lossy.insert(owner);
        c.run_for(500);
        c.lossy.clear();
        assert!(ticks(&c, A).is_empty(), "the first receipt must be lost");
        c.run_for(5_000);
        let want = if forget {
            Vec::new()
        } else {
            vec![(1, chatsim_system::proto::ReceiptKind::Delivered)]
        };
        assert_eq!(ticks(&c, A), want, "forget = {forget}");
    }
}

// A sender that is offline when its receipt is stored finds it queued when it comes back.
#[test]
fn an_offline_sender_gets_its_receipts_from_the_queue() {
    let mut c = Cluster::new(topo());
    c.run_for(1_000);
    send(&mut c, A, B, "bye");
    c.run_for(30);
    assert_eq!(
        c.seen(A, |o| matches!(o, Observation::Acked { .. }))
            .count(),
        1
    );
    c.act(A, Action::GoOffline);
    c.run_for(2_000);
    assert_eq!(displayed(&c, B).len(), 1);
    assert!(ticks(&c, A).is_empty());
    assert_eq!(c.durable().receipts_queued(), 1);
    c.act(A, Action::GoOnline);
    c.run_for(2_000);
    assert_eq!(
        ticks(&c, A),
        vec![(1, chatsim_system::proto::ReceiptKind::Delivered)]
    );
    assert_eq!(c.durable().receipts_queued(), 0);
}

fn presence(c: &Cluster, d: DeviceId) -> Vec<(bool, Millis, bool)> {
    c.seen(d, |o| matches!(o, Observation::Presence { .. }))
        .map(|o| match o {
            Observation::Presence {
                online,
                last_seen,
                looking,
                ..
            } => (*online, *last_seen, *looking),
            _ => unreachable!(),
        })
        .collect()
}

// Opening the chat shows the peer online; a reconnect shorter than the debounce shows
// nothing; going away shows the last seen once the debounce is over; closing the chat
// stops the updates.
#[test]
fn presence_is_debounced_and_goes_only_to_a_device_looking() {
    use chatsim_system::limits::PRESENCE_DEBOUNCE_MS;
    let mut c = Cluster::new(topo());
    c.run_for(1_000);
    let conv = ConvId::direct(A.user, B.user);
    c.act(A, Action::OpenChat { conv });
    c.run_for(100);
    assert_eq!(presence(&c, A), vec![(true, 0, true)]);
    c.act(B, Action::DropConnection);
    c.run_for(PRESENCE_DEBOUNCE_MS + 1_000);
    assert!(reconnects(&c, B) >= 2, "B came back");
    assert_eq!(presence(&c, A).len(), 1, "a flap is no news");
    let gone = c.now;
    c.act(B, Action::GoOffline);
    c.run_for(PRESENCE_DEBOUNCE_MS + 500);
    let shown = presence(&c, A);
    assert_eq!(shown.len(), 2, "{shown:?}");
    let (online, last_seen, looking) = shown[1];
    assert!(!online && looking);
    assert!(
        (gone..gone + 100).contains(&last_seen),
        "{last_seen} vs {gone}"
    );
    c.act(A, Action::CloseChat { conv });
    c.run_for(100);
    c.act(B, Action::GoOnline);
    c.run_for(PRESENCE_DEBOUNCE_MS + 1_000);
    assert_eq!(presence(&c, A).len(), 2, "nobody looking, nothing sent");
}

/// What `d` showed at each sequence number of `conv`, by message id.
fn shown_at(c: &Cluster, d: DeviceId) -> BTreeMap<u64, chatsim_system::proto::MsgId> {
    c.seen(d, |o| matches!(o, Observation::Displayed { .. }))
        .map(|o| match o {
            Observation::Displayed { seq, id, .. } => (*seq, *id),
            _ => unreachable!(),
        })
        .collect()
}

/// The zombie story: the conversation's shard freezes holding A's message X; its lease runs
/// out and the other shard takes the slot; B's message Y gets the next number there; then
/// the zombie wakes and its write of X under that same number reaches storage. Fenced, X
/// is refused and later stored under a number of its own; unfenced, X overwrites Y.
fn zombie_story(bugs: chatsim_system::bugs::Bugs) -> (Cluster, chatsim_system::proto::MsgId) {
    let mut t = topo();
    t.bugs = bugs;
    let mut c = Cluster::new(t);
    c.run_for(1_000);
    let conv = ConvId::direct(A.user, B.user);
    let owner = Host::Shard(chatsim_system::routing::shard_for_conv(conv, 2));
    send(&mut c, A, B, "before");
    c.run_for(500);
    c.freeze(owner);
    send(&mut c, A, B, "X");
    c.run_for(2);
    // A's phone goes quiet, so its retries of X do not reach the new owner first.
    c.act(A, Action::GoOffline);
    c.run_for(7_000);
    send(&mut c, B, A, "Y");
    c.run_for(1_000);
    c.thaw(owner);
    c.run_for(500);
    c.act(A, Action::GoOnline);
    c.run_for(10_000);
    let x = c
        .seen(
            A,
            |o| matches!(o, Observation::Sent { body, .. } if body == b"X"),
        )
        .find_map(|o| match o {
            Observation::Sent { id, .. } => Some(*id),
            _ => None,
        })
        .expect("X was sent");
    (c, x)
}

#[test]
fn a_frozen_shards_slot_moves_and_its_late_write_is_fenced_out() {
    let (c, x) = zombie_story(chatsim_system::bugs::Bugs::none());
    let (on_a, on_b) = (shown_at(&c, A), shown_at(&c, B));
    assert!(on_b.values().any(|id| *id == x), "B shows X: {on_b:?}");
    assert_eq!(on_b.len(), 2, "before and X on B: {on_b:?}");
    assert_eq!(on_a.len(), 1, "Y on A: {on_a:?}");
    // Y took seq 2 under the new owner; X came after it, not on top of it.
    let y_seq = *on_a.keys().next().expect("Y");
    let x_seq = on_b.iter().find(|(_, id)| **id == x).map(|(s, _)| *s);
    assert_eq!((y_seq, x_seq), (2, Some(3)));
    let conv = ConvId::direct(A.user, B.user);
    let slot = chatsim_system::routing::shard_for_conv(conv, 2);
    let (holder, epoch, _) = c.durable().lease(slot).expect("leased");
    assert_ne!(holder, slot, "the slot moved");
    assert!(epoch >= 2);
}

#[test]
fn without_the_fence_the_zombie_overwrites_an_acked_message() {
    let bugs = chatsim_system::bugs::Bugs::from_iter([chatsim_system::bugs::Bug::UnfencedFailover]);
    let (c, x) = zombie_story(bugs);
    let on_b = shown_at(&c, B);
    assert!(
        !on_b.values().any(|id| *id == x),
        "X is lost on B: {on_b:?}"
    );
    let x_acked = c
        .seen(
            A,
            |o| matches!(o, Observation::Acked { id, .. } if *id == x),
        )
        .count();
    assert_eq!(x_acked, 1, "yet A saw X acked");
}

// A backgrounded phone is woken by a push, drains, and sleeps again; with every push lost
// it still gets the message when its user brings the app back: nothing waits on a push.
#[test]
fn a_push_only_wakes_and_nothing_depends_on_it() {
    for loss_percent in [0, 100] {
        let mut t = topo();
        t.push = chatsim_system::PushSpec {
            delay_ms: (500, 500),
            loss_percent,
        };
        let mut c = Cluster::new(t);
        c.run_for(1_000);
        c.act(B, Action::Background);
        c.run_for(100);
        send(&mut c, A, B, "wake up");
        c.run_for(2_000);
        let woken = c.seen(B, |o| matches!(o, Observation::Woken)).count();
        if loss_percent == 0 {
            assert_eq!(woken, 1);
            assert_eq!(displayed(&c, B), vec![(1, "wake up".into(), Path::Inbox)]);
            c.run_for(chatsim_system::limits::PUSH_WAKE_MS);
            let asleep = c
                .seen(B, |o| {
                    matches!(
                        o,
                        Observation::Disconnected {
                            reason: chatsim_system::DisconnectReason::Backgrounded
                        }
                    )
                })
                .count();
            assert_eq!(asleep, 2, "back to sleep after the wake");
        } else {
            assert_eq!(woken, 0);
            assert!(displayed(&c, B).is_empty(), "no push, no wake");
            c.act(B, Action::Foreground);
            c.run_for(1_000);
            assert_eq!(displayed(&c, B), vec![(1, "wake up".into(), Path::Inbox)]);
        }
        assert_eq!(c.durable().inbox_entries(), 0);
    }
}

// A chat left open in a backgrounded app is not looked at: a push-woken drain shows the
// text (✓✓) but reads nothing until the user brings the app back.
#[test]
fn a_woken_app_delivers_but_reads_only_in_the_foreground() {
    use chatsim_system::proto::ReceiptKind::{Delivered, Read};
    let mut t = topo();
    t.push.loss_percent = 0;
    let mut c = Cluster::new(t);
    c.run_for(1_000);
    let conv = ConvId::direct(A.user, B.user);
    c.act(B, Action::OpenChat { conv });
    c.act(B, Action::Background);
    c.run_for(100);
    send(&mut c, A, B, "later");
    c.run_for(3_000);
    assert_eq!(displayed(&c, B).len(), 1, "woken and drained");
    assert_eq!(ticks(&c, A), vec![(1, Delivered)]);
    assert_eq!(
        c.seen(B, |o| matches!(o, Observation::Read { .. })).count(),
        0
    );
    c.act(B, Action::Foreground);
    c.run_for(1_000);
    assert_eq!(ticks(&c, A), vec![(1, Delivered), (1, Read)]);
}

// A shard that took a frozen neighbour's slot and then restarts takes that slot back too
// (under a new epoch), not only its home slot: the conversation keeps moving while the
// neighbour is still frozen.
#[test]
fn a_restarted_shard_retakes_a_slot_its_earlier_life_held() {
    let mut c = Cluster::new(topo());
    c.run_for(1_000);
    let conv = ConvId::direct(A.user, B.user);
    let home = chatsim_system::routing::shard_for_conv(conv, 2);
    let other = 1 - home;
    c.freeze(Host::Shard(home));
    c.run_for(6_000);
    assert_eq!(
        c.durable().lease(home).map(|l| l.0),
        Some(other),
        "taken over"
    );
    c.crash(Host::Shard(other));
    c.run_for(3_000);
    let (holder, epoch, _) = c.durable().lease(home).expect("leased");
    assert_eq!(holder, other);
    assert!(epoch >= 3, "retaken under a new epoch: {epoch}");
    send(&mut c, A, B, "still moving");
    c.run_for(3_000);
    assert_eq!(displayed(&c, B).len(), 1);
}

fn user(u: u32) -> DeviceId {
    DeviceId::primary(UserId(u))
}

fn group_topo(users: u32) -> Deployment {
    Deployment {
        users,
        gateways: 2,
        shards: 2,
        ..Deployment::default()
    }
}

fn refusals(c: &Cluster, d: DeviceId) -> Vec<chatsim_system::proto::Refusal> {
    c.seen(d, |o| matches!(o, Observation::Refused { .. }))
        .map(|o| match o {
            Observation::Refused { reason, .. } => *reason,
            _ => unreachable!(),
        })
        .collect()
}

/// What a device showed, membership lines ("u0.d0#3: adds u5") left out.
fn texts(c: &Cluster, d: DeviceId) -> Vec<String> {
    let is_change = |b: &str| {
        b.split_once(": ")
            .is_some_and(|(id, _)| id.starts_with('u') && id.contains(".d") && id.contains('#'))
    };
    displayed(c, d)
        .into_iter()
        .map(|(_, b, _)| b)
        .filter(|b| !is_change(b))
        .collect()
}

// Membership at the moment of sequencing decides who receives a group message: a removed
// member sees nothing sent after the removal, an added one nothing sent before the add, and
// everyone in between sees it all, in one order.
#[test]
fn group_membership_at_sequencing_decides_who_receives() {
    let mut c = Cluster::new(group_topo(4));
    c.run_for(1_000);
    let (a, b, cc, d) = (user(0), user(1), user(2), user(3));
    c.act(
        a,
        Action::CreateGroup {
            group: 1,
            members: vec![b.user, cc.user],
        },
    );
    c.run_for(500);
    let say = |c: &mut Cluster, from: DeviceId, text: &str| {
        c.act(
            from,
            Action::SendGroup {
                group: 1,
                body: text.as_bytes().to_vec(),
            },
        );
    };
    say(&mut c, a, "before");
    c.run_for(500);
    c.act(
        a,
        Action::RemoveMember {
            group: 1,
            user: cc.user,
        },
    );
    c.run_for(500);
    c.act(
        a,
        Action::AddMember {
            group: 1,
            user: d.user,
        },
    );
    c.run_for(500);
    say(&mut c, b, "after");
    c.run_for(3_000);
    assert_eq!(texts(&c, b), vec!["before"]);
    assert_eq!(
        texts(&c, cc),
        vec!["before"],
        "a removed member saw a later message"
    );
    assert_eq!(texts(&c, d), vec!["after"], "an added member saw history");
    assert_eq!(texts(&c, a), vec!["after"]);
    let changes = |dev| {
        c.seen(dev, |o| matches!(o, Observation::MembersChanged { .. }))
            .count()
    };
    assert_eq!(changes(b), 3, "create, remove, add");
    assert_eq!(changes(cc), 2, "create and its own removal");
    assert_eq!(changes(d), 1, "only the add that brought it in");
    assert!(c
        .seen(d, |o| matches!(o, Observation::Undecryptable { .. }))
        .next()
        .is_none());
    // The removed member can no longer post.
    say(&mut c, cc, "still here?");
    c.run_for(2_000);
    assert_eq!(
        refusals(&c, cc),
        vec![chatsim_system::proto::Refusal::NotMember]
    );
    assert_eq!(
        c.device(cc).outbox_len(),
        0,
        "a final refusal leaves the outbox"
    );
    assert_eq!(c.durable().fanouts_pending(), 0);
    assert_eq!(c.durable().inbox_entries(), 0);
}

// A group at the cap refuses one more member with a clear answer to the device.
#[test]
fn a_join_past_the_cap_is_refused_with_group_full() {
    use chatsim_system::limits::GROUP_MEMBERS_MAX;
    let users = GROUP_MEMBERS_MAX as u32 + 1;
    let mut c = Cluster::new(group_topo(users));
    c.run_for(1_000);
    let members = (1..GROUP_MEMBERS_MAX as u32).map(UserId).collect();
    c.act(user(0), Action::CreateGroup { group: 7, members });
    c.run_for(2_000);
    assert!(refusals(&c, user(0)).is_empty());
    c.act(
        user(0),
        Action::AddMember {
            group: 7,
            user: UserId(users - 1),
        },
    );
    c.run_for(2_000);
    assert_eq!(
        refusals(&c, user(0)),
        vec![chatsim_system::proto::Refusal::GroupFull]
    );
    let last = user(GROUP_MEMBERS_MAX as u32 - 1);
    assert_eq!(
        c.seen(last, |o| matches!(o, Observation::MembersChanged { .. }))
            .count(),
        1
    );
}

// A shard crash midway through a fan-out: its successor resumes at the job's cursor, so
// every member gets the message and nobody shows it twice; and the sender had its ✓ before
// the fan-out was done.
#[test]
fn a_fanout_interrupted_by_a_shard_crash_resumes_without_skips_or_repeats() {
    let users = 300;
    let mut c = Cluster::new(group_topo(users));
    c.run_for(1_000);
    let members: Vec<UserId> = (1..users).map(UserId).collect();
    c.act(user(0), Action::CreateGroup { group: 3, members });
    c.run_for(2_000);
    let owner = Host::Shard(chatsim_system::routing::shard_for_conv(ConvId::group(3), 2));
    c.act(
        user(0),
        Action::SendGroup {
            group: 3,
            body: b"to everyone".to_vec(),
        },
    );
    let reached = |c: &Cluster| (1..users).filter(|u| texts(c, user(*u)).len() == 1).count();
    // Run until the first step's members have it, then crash the owner.
    while reached(&c) == 0 {
        c.run_for(1);
    }
    let acked = c
        .seen(user(0), |o| matches!(o, Observation::Acked { .. }))
        .count();
    assert_eq!(acked, 2, "✓ must not wait for the fan-out");
    assert_eq!(
        c.durable().fanouts_pending(),
        1,
        "crash must hit mid fan-out"
    );
    let reached = reached(&c);
    assert!(
        reached > 0 && reached < users as usize - 1,
        "reached {reached}"
    );
    c.crash(owner);
    c.run_for(5_000);
    for u in 1..users {
        assert_eq!(texts(&c, user(u)), vec!["to everyone"], "{}", user(u));
    }
    assert_eq!(c.durable().fanouts_pending(), 0);
    assert_eq!(c.durable().inbox_entries(), 0);
}

// A member that missed the group's creation and then sees a later change listing it must
// not skip ahead to that change: only an add of itself starts its view there. Driven on
// the device alone: the creation never arrives until the fetch brings it.
#[test]
fn a_member_that_missed_the_creation_waits_for_it_instead_of_skipping() {
    use chatsim_system::device::Device;
    use chatsim_system::proto::{Down, GroupEvent, GroupOp, Message, MsgId, Up};
    let g = ConvId::group(4);
    let (a, b) = (user(0), user(1));
    let event = |seq: u64, op: GroupOp, members: &[u32]| Message {
        conv: g,
        seq,
        id: MsgId {
            device: a,
            n: seq as u32,
        },
        body: Vec::new(),
        sent_at: 0,
        event: Some(GroupEvent {
            op,
            members: members.iter().map(|u| UserId(*u)).collect(),
        }),
        keys: Vec::new(),
    };
    let create = event(
        1,
        GroupOp::Create {
            members: vec![UserId(1)],
        },
        &[0, 1],
    );
    let add = event(2, GroupOp::Add { user: UserId(2) }, &[0, 1, 2]);
    let mut d = Device::new(b, group_topo(3), 1, true);
    let mut out = Vec::new();
    d.handle(0, Input::Timeout, &mut out);
    d.handle(1, Input::Connected, &mut out);
    d.handle(2, Input::Down(Down::Welcome { epoch: 1 }), &mut out);
    out.clear();
    let deliver = |msg: &Message| {
        Input::Down(Down::Deliver {
            msg: msg.clone(),
            path: Path::Live,
        })
    };
    d.handle(3, deliver(&add), &mut out);
    let changes = |out: &[Effect]| -> Vec<u64> {
        out.iter()
            .filter_map(|e| match e {
                Effect::Observe(Observation::MembersChanged { seq, .. }) => Some(*seq),
                _ => None,
            })
            .collect()
    };
    assert!(
        changes(&out).is_empty(),
        "skipped to a change that is not its own add"
    );
    d.handle(
        3 + chatsim_system::limits::GAP_REPAIR_DELAY_MS,
        Input::Timeout,
        &mut out,
    );
    assert!(out.contains(&Effect::Up(Up::Fetch {
        conv: g,
        from: 1,
        to: 1
    })));
    d.handle(600, deliver(&create), &mut out);
    assert_eq!(changes(&out), vec![1, 2]);
}

// Fan-out on read: a text to a group over the threshold parks no inbox entries; an online
// member gets it pushed, an offline one pulls it from the log when it reconnects.
#[test]
fn a_group_read_from_its_log_parks_nothing_and_an_offline_member_pulls() {
    let mut topo = group_topo(5);
    topo.fanout_on_read_over = 2;
    let mut c = Cluster::new(topo);
    c.run_for(1_000);
    let members = (1..5).map(UserId).collect();
    c.act(user(0), Action::CreateGroup { group: 2, members });
    c.run_for(1_000);
    let written = c.durable().inbox_written();
    assert_eq!(written, 4, "the creation parks for every member");
    c.act(user(4), Action::GoOffline);
    for text in ["one", "two", "three"] {
        let body = text.as_bytes().to_vec();
        c.act(user(0), Action::SendGroup { group: 2, body });
    }
    c.run_for(2_000);
    assert_eq!(
        c.durable().inbox_written(),
        written,
        "texts parked inbox entries"
    );
    assert_eq!(texts(&c, user(1)), vec!["one", "two", "three"]);
    assert!(texts(&c, user(4)).is_empty());
    c.act(user(4), Action::GoOnline);
    c.run_for(3_000);
    assert_eq!(texts(&c, user(4)), vec!["one", "two", "three"]);
    assert_eq!(c.durable().inbox_entries(), 0);
}

fn replicated() -> Deployment {
    Deployment {
        replicas: 3,
        ..topo()
    }
}

fn acks(c: &Cluster) -> usize {
    c.seen(A, |o| matches!(o, Observation::Acked { .. }))
        .count()
}

/// How many replicas hold `n` messages or more.
fn replicas_with(c: &Cluster, n: usize) -> usize {
    (0..3)
        .filter(|r| c.replica_log(*r).state().messages() >= n)
        .count()
}

// Replicated storage: every acked message is synced on a quorum, and crashing replicas and
// the coordinator over and over (each crash losing unsynced writes) loses nothing.
#[test]
fn replica_and_coordinator_crashes_lose_no_acked_message() {
    let mut c = Cluster::new(replicated());
    c.run_for(1_000);
    assert!(c.storage_serving());
    for i in 0..12u32 {
        send(&mut c, A, B, &format!("m{i}"));
        c.run_for(3);
        let victim = match i % 4 {
            3 => Host::Storage(0),
            r => Host::Replica(r as u16),
        };
        c.crash(victim);
        c.run_for(40);
    }
    c.run_for(30_000);
    let bodies: Vec<String> = displayed(&c, B).into_iter().map(|d| d.1).collect();
    let want: Vec<String> = (0..12).map(|i| format!("m{i}")).collect();
    let mut sorted = bodies.clone();
    sorted.sort();
    let mut want_sorted = want;
    want_sorted.sort();
    assert_eq!(sorted, want_sorted);
    assert_eq!(acks(&c), 12);
    assert!(replicas_with(&c, 12) >= 2, "a quorum holds every message");
    assert_eq!(c.durable().messages(), 12);
}

// With one replica reachable there is no quorum: nothing is acked (and nothing lost); the
// write completes once a second replica is back.
#[test]
fn without_a_quorum_nothing_is_acked_until_one_returns() {
    let mut c = Cluster::new(replicated());
    c.run_for(1_000);
    c.freeze(Host::Replica(1));
    c.freeze(Host::Replica(2));
    send(&mut c, A, B, "waits");
    c.run_for(3_000);
    assert_eq!(acks(&c), 0);
    assert!(replicas_with(&c, 1) <= 1, "no quorum holds it");
    c.thaw(Host::Replica(2));
    c.run_for(3_000);
    assert_eq!(acks(&c), 1);
    assert_eq!(displayed(&c, B).len(), 1);
}

// The same story with `quorum-of-one`: the write is acked on one replica; the coordinator
// restarts and rebuilds from the two that lack it, and the acked message is gone from the
// store (the sender's retry was answered long ago: nobody sends it again).
#[test]
fn with_a_quorum_of_one_a_rebuild_forgets_an_acked_message() {
    let mut topo = replicated();
    topo.bugs = [chatsim_system::bugs::Bug::QuorumOfOne]
        .into_iter()
        .collect();
    let mut c = Cluster::new(topo);
    c.run_for(1_000);
    c.act(B, Action::GoOffline);
    c.freeze(Host::Replica(1));
    c.freeze(Host::Replica(2));
    send(&mut c, A, B, "acked on one");
    c.run_for(3_000);
    assert_eq!(acks(&c), 1, "acked with one replica");
    c.freeze(Host::Replica(0));
    c.thaw(Host::Replica(1));
    c.thaw(Host::Replica(2));
    c.crash(Host::Storage(0));
    c.run_for(3_000);
    assert!(c.storage_serving());
    assert_eq!(c.durable().messages(), 0, "the rebuilt store lost it");
    c.act(B, Action::GoOnline);
    c.run_for(5_000);
    assert!(displayed(&c, B).is_empty());
}

// A companion linked mid-conversation: the sender, who has never heard of it, is told by
// storage's refusal, seals again, and the companion shows what came after its link (and
// moves past what came before without a gap it waits on).
#[test]
fn a_device_linked_mid_conversation_gets_what_is_sent_after() {
    let b1 = DeviceId {
        user: UserId(1),
        index: 1,
    };
    let mut topo = Deployment {
        devices_per_user: 2,
        ..topo()
    };
    topo.late_devices.insert(b1);
    let mut c = Cluster::new(topo);
    c.run_for(1_000);
    send(&mut c, A, B, "before");
    c.run_for(1_000);
    c.act(b1, Action::Link);
    c.run_for(1_000);
    assert_eq!(c.seen(b1, |o| matches!(o, Observation::Linked)).count(), 1);
    send(&mut c, A, B, "after");
    c.run_for(5_000);
    let refused = c.seen(A, |o| {
        matches!(
            o,
            Observation::Refused {
                reason: chatsim_system::proto::Refusal::StaleDevices { device },
                ..
            } if *device == b1
        )
    });
    assert_eq!(refused.count(), 1);
    let shown: Vec<String> = displayed(&c, b1).into_iter().map(|d| d.1).collect();
    assert_eq!(shown, ["after"]);
    assert_eq!(displayed(&c, B).len(), 2);
    assert_eq!(
        c.seen(b1, |o| matches!(o, Observation::Undecryptable { .. }))
            .count(),
        0
    );
    assert_eq!(c.device(A).outbox_len(), 0);
}

// The relay model keeps a text only until every device it was parked for has taken it:
// an offline companion keeps it stored, and its drain deletes it.
#[test]
fn relay_storage_deletes_a_text_once_every_device_has_it() {
    let b1 = DeviceId {
        user: UserId(1),
        index: 1,
    };
    let mut c = Cluster::new(Deployment {
        devices_per_user: 2,
        storage_model: chatsim_system::StorageModel::Relay,
        ..topo()
    });
    c.run_for(1_000);
    c.act(b1, Action::GoOffline);
    send(&mut c, A, B, "wait for the laptop");
    c.run_for(3_000);
    assert_eq!(displayed(&c, B).len(), 1);
    assert_eq!(
        c.durable().bodies_kept(),
        1,
        "the laptop has not taken it yet"
    );
    c.act(b1, Action::GoOnline);
    c.run_for(5_000);
    assert_eq!(displayed(&c, b1).len(), 1);
    assert_eq!(c.durable().bodies_kept(), 0);
    assert_eq!(c.durable().messages(), 1, "its id stays, for dedup");
}

// An operation synced on one replica only, never acknowledged, must not come back in a
// later rebuild after a newer term has given its sequence number to another message: the
// newer term's opening records what it was rebuilt from.
#[test]
fn an_unacknowledged_write_on_one_replica_does_not_come_back_over_a_newer_term() {
    let mut c = Cluster::new(replicated());
    c.run_for(1_000);
    // The shard has the conversation loaded, so the ghost goes straight to an append.
    send(&mut c, A, B, "hello");
    c.run_for(1_000);
    c.freeze(Host::Replica(1));
    c.freeze(Host::Replica(2));
    send(&mut c, A, B, "ghost");
    c.run_for(500);
    assert_eq!(acks(&c), 1, "only the hello");
    assert_eq!(replicas_with(&c, 2), 1, "the ghost is on one replica");
    c.act(A, Action::GoOffline);
    c.crash(Host::Shard(0));
    c.crash(Host::Shard(1));
    c.crash(Host::Storage(0));
    c.freeze(Host::Replica(0));
    c.thaw(Host::Replica(1));
    c.thaw(Host::Replica(2));
    c.run_for(5_000);
    assert!(c.storage_serving());
    send(&mut c, B, A, "real");
    c.run_for(5_000);
    // Rebuild again from the replica holding the ghost and one holding "real".
    c.freeze(Host::Replica(2));
    c.thaw(Host::Replica(0));
    c.crash(Host::Storage(0));
    c.run_for(5_000);
    c.thaw(Host::Replica(2));
    c.act(A, Action::GoOnline);
    c.run_for(30_000);
    let on_b: Vec<String> = displayed(&c, B).into_iter().map(|d| d.1).collect();
    let on_a: Vec<String> = displayed(&c, A).into_iter().map(|d| d.1).collect();
    assert_eq!(on_a, ["real"]);
    assert_eq!(
        on_b,
        ["hello", "ghost"],
        "the ghost's retry is stored anew and shown"
    );
}
