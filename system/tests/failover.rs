//! System-wide stories of crashes and shard failover through the in-memory harness
//! ([`Cluster`]): storage crashing before its sync, every server role crashing mid-chat, a
//! restarted shard sweeping the inboxes, a frozen shard's slot moving and its late write
//! fenced out (or, with the fence off, overwriting), a restarted shard retaking a slot. Each
//! test says in its first comment what it shows.

mod common;

use chatsim_system::proto::{ConvId, DeviceId, Host, Path};
use chatsim_system::testkit::Cluster;
use chatsim_system::{Action, Observation};
use common::*;
use std::collections::BTreeMap;

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
