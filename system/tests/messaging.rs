//! System-wide stories of the message path through the in-memory harness ([`Cluster`]): a
//! text acked and shown live, drained from the inbox, held back after a gap and fetched, a
//! lost push retried; the ticks (delivered, read) and their queue; presence; a backgrounded
//! app woken by push; a companion linked mid-conversation. Each test says in its first
//! comment what it shows.

mod common;

use chatsim_system::proto::{ConvId, DeviceId, Host, Millis, Path, UserId};
use chatsim_system::testkit::Cluster;
use chatsim_system::{Action, Deployment, Effect, Input, Machine, Observation};
use common::*;

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

// A message held after a gap is shown only once the gap is fetched, and in order: driven
// on the device alone so nothing but the fetch can fill the gap.
#[test]
fn a_gap_is_held_back_and_repaired_by_fetch() {
    use chatsim_system::device::Device;
    use chatsim_system::e2e::{device_keypair, seal, Bundle};
    use chatsim_system::limits::GAP_REPAIR_DELAY_MS;
    use chatsim_system::proto::{Down, Message, MsgId, Up};
    let conv = ConvId::direct(A.user, B.user);
    let (ka, kb) = (device_keypair(0, A, None), device_keypair(0, B, None));
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
