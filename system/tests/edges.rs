//! Edges the swarm cannot see, pinned one by one: each test here was written against a mutant
//! that survived the mutation sample's swarm (reports/mutants/), and names it. They are the
//! boundaries of a check (the last user, the second drain page), accessors the engines and the
//! model read, and the simulated providers' own promises (a push service configured to lose
//! nothing loses nothing), which every scenario takes on trust.

mod common;

use chatsim_system::knobs::Knobs;
use chatsim_system::probe::Probe;
use chatsim_system::proto::{
    ConvId, DeviceId, Down, Host, MsgId, Receipt, ReceiptKind, Rpc, UserId,
};
use chatsim_system::testkit::Cluster;
use chatsim_system::{Deployment, Effect, Input, Machine, PushSpec};
use common::*;

// lib.rs `has_user`: `<` to `<=` let a user one past the last in (a phone naming it would
// reach servers that index arrays by user).
#[test]
fn the_last_user_exists_and_the_next_does_not() {
    let topo = topo();
    assert!(topo.has_user(UserId(topo.users - 1)));
    assert!(!topo.has_user(UserId(topo.users)));
    assert!(!topo.has_device(DeviceId::primary(UserId(topo.users))));
}

// device `is_ready` (read by the stateright model): a phone is ready only once welcomed.
#[test]
fn a_phone_is_ready_only_between_its_welcome_and_its_disconnect() {
    let mut c = Cluster::new(topo());
    assert!(!c.device(A).is_ready(), "not before it connected");
    c.run_for(1_000);
    assert!(c.device(A).is_ready());
    c.act(A, chatsim_system::Action::GoOffline);
    c.run_for(100);
    assert!(!c.device(A).is_ready(), "not once offline");
}

// device `on_down`: `||` to `&&` let a phone with no connection act on frames (a late frame
// of a connection it already gave up). Its machine must drop them.
#[test]
fn a_phone_with_no_connection_ignores_frames() {
    let topo = topo();
    let mut d = chatsim_system::device::Device::new(A, topo, 1, false);
    let receipt = Receipt {
        conv: ConvId::direct(A.user, B.user),
        reader: B,
        kind: ReceiptKind::Delivered,
        upto: 1,
    };
    let mut out = Vec::new();
    d.handle(10, Input::Down(Down::Receipt { receipt }), &mut out);
    assert!(
        out.is_empty(),
        "a frame with no connection did something: {out:?}"
    );
}

// device `on_down` drain pages: `>` to `>=` fired "more than two pages" on the second. A
// backlog of three in pages of two is a two-page drain.
#[test]
fn a_two_page_drain_is_probed_as_two_pages_not_more() {
    let drain = |texts: usize| {
        let topo = Deployment {
            knobs: Knobs {
                inbox_page_entries: 2,
                ..Knobs::default()
            },
            ..topo()
        };
        let mut c = Cluster::new(topo);
        c.run_for(1_000);
        c.act(B, chatsim_system::Action::GoOffline);
        c.run_for(100);
        for i in 0..texts {
            send(&mut c, A, B, &format!("t{i}"));
        }
        c.run_for(2_000);
        c.act(B, chatsim_system::Action::GoOnline);
        c.run_for(3_000);
        assert_eq!(displayed(&c, B).len(), texts, "the backlog arrives");
        let hits = |p| c.probes.get(&p).copied().unwrap_or(0);
        (hits(Probe::DrainSecondPage), hits(Probe::DrainManyPages))
    };
    assert_eq!(
        drain(3),
        (1, 0),
        "three in pages of two: a second page, no third"
    );
    let (second, many) = drain(5);
    assert!(
        second >= 2 && many >= 1,
        "five in pages of two: three pages"
    );
}

// gateway `ready_devices` (read by the stateright model): counts ready connections only.
#[test]
fn a_gateway_counts_its_ready_connections() {
    let mut c = Cluster::new(topo());
    c.run_for(1_000);
    let ready: usize = (0..2).map(|g| c.gateway(g).ready_devices()).sum();
    assert_eq!(ready, 2, "both phones are connected, each to one gateway");
}

// push `handle`: `<` to `<=` lost one push in a hundred from a service configured to lose
// none. Scenarios with `loss_percent = 0` take the simulated provider at its word.
#[test]
fn a_push_service_configured_to_lose_nothing_loses_nothing() {
    let topo = Deployment {
        users: 1_000,
        push: PushSpec {
            delay_ms: (10, 20),
            loss_percent: 0,
        },
        ..Deployment::default()
    };
    let mut p = chatsim_system::push::Push::new(topo, 7);
    let mut out = Vec::new();
    for u in 0..1_000 {
        let device = DeviceId::primary(UserId(u));
        let rpc = Rpc::Notify { device };
        p.handle(
            0,
            Input::Rpc {
                from: Host::Shard(0),
                rpc,
            },
            &mut out,
        );
    }
    p.handle(100, Input::Timeout, &mut out);
    assert_eq!(p.counts(), (1_000, 0));
    assert!(!out.contains(&Effect::Probe(Probe::PushLost)));
}

// knobs `is_default` and `valid`: a drawn set that differs is not the default, and a zero
// anywhere but the sync time is refused by name.
#[test]
fn knobs_know_when_they_differ_and_refuse_a_zero_page() {
    let k = Knobs {
        gap_fetch_seqs_max: 1,
        ..Knobs::default()
    };
    assert!(!k.is_default());
    let zero = Knobs {
        inbox_page_entries: 0,
        ..Knobs::default()
    };
    assert_eq!(zero.valid(), Err("inbox_page_entries"));
    let instant = Knobs {
        storage_sync_ms: 0,
        ..Knobs::default()
    };
    assert_eq!(instant.valid(), Ok(()), "a sync may take no time");
}

// e2e `nonce`: a constant nonce reuses ChaCha20's keystream under one pair's key, so two
// texts' ciphertexts XOR to their plaintexts' XOR. The same text sent twice must not seal to
// the same bytes. And the one-call `seal` opens with `open`.
#[test]
fn two_texts_under_one_pairs_key_never_share_a_keystream() {
    use chatsim_system::e2e::{keypair, open, seal};
    let (a, b) = (keypair(1), keypair(2));
    let id = |n| MsgId { device: A, n };
    let one = seal(&a, B, &b.public, id(0), b"same words");
    let two = seal(&a, B, &b.public, id(1), b"same words");
    assert_ne!(one, two, "two ids, one keystream");
    assert_eq!(
        open(&b, B, &a.public, id(0), &one).as_deref(),
        Some(&b"same words"[..])
    );
    assert_eq!(
        open(&b, B, &a.public, id(1), &one),
        None,
        "sealed for id 0 only"
    );
}

// replica `ReplicaLog::is_empty`: true of an empty log only. A replica that took a write
// holds it.
#[test]
fn a_replica_that_took_a_write_is_not_empty() {
    let topo = Deployment {
        replicas: 2,
        ..topo()
    };
    let mut c = Cluster::new(topo);
    assert!(c.replica_log(0).is_empty());
    c.run_for(1_000);
    send(&mut c, A, B, "kept twice");
    c.run_for(1_000);
    assert_eq!(displayed(&c, B).len(), 1);
    let log = c.replica_log(0);
    assert!(!log.is_empty());
}

// gateway `on_frame`: `&&` to `||` closed a replaced connection but kept its record, so the
// gateway went on answering (and counting) a connection it had closed.
#[test]
fn a_replaced_connection_is_forgotten_not_just_closed() {
    use chatsim_system::gateway::Gateway;
    use chatsim_system::proto::{ConnId, Up};
    use chatsim_system::routing::device_token;
    let mut g = Gateway::new(0, topo());
    let mut out = Vec::new();
    for (conn, epoch) in [(1, 1), (2, 2)] {
        let conn = ConnId(conn);
        g.handle(0, Input::Accepted { conn }, &mut out);
        let up = Up::Hello {
            device: A,
            token: device_token(A),
            epoch,
        };
        g.handle(0, Input::FromConn { conn, up }, &mut out);
    }
    assert!(out.contains(&Effect::CloseConn { conn: ConnId(1) }));
    out.clear();
    let ping = Input::FromConn {
        conn: ConnId(1),
        up: Up::Ping,
    };
    g.handle(10, ping, &mut out);
    assert!(out.is_empty(), "the replaced connection answered: {out:?}");
}

// routing `device_token`: a constant token lets any phone say it is any other. Honest runs
// never try (both sides compute the same token), so only the property itself can be pinned:
// tokens differ per device.
#[test]
fn each_device_has_its_own_token() {
    use chatsim_system::routing::device_token;
    let companion = DeviceId {
        user: A.user,
        index: 1,
    };
    assert_ne!(device_token(A), device_token(B));
    assert_ne!(device_token(A), device_token(companion));
}

// timers `set_min`: arming for later than an armed deadline keeps the earlier one (receipts
// rely on it: a burst of shows goes out 200 ms after the first, not after the last).
#[test]
fn set_min_keeps_the_earlier_deadline() {
    use chatsim_system::timers::Timers;
    let mut t: Timers<u8> = Timers::default();
    t.set_min(1, 500);
    t.set_min(1, 700);
    assert_eq!(t.next(), Some(500));
    t.set_min(1, 300);
    assert_eq!(t.next(), Some(300));
    t.set(1, 900);
    assert_eq!(t.next(), Some(900), "set replaces, earlier or not");
}
