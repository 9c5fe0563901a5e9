//! System-wide stories of storage through the in-memory harness ([`Cluster`]): replicated
//! storage surviving replica and coordinator crashes, waiting for a quorum, forgetting with a
//! quorum of one or keeping an unacknowledged write out of a newer term, and the relay model
//! deleting a text once every device has it. Each test says in its first comment what it
//! shows.

mod common;

use chatsim_system::proto::{DeviceId, Host, UserId};
use chatsim_system::testkit::Cluster;
use chatsim_system::{Action, Deployment, Observation};
use common::*;

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

// Coordinator `send_out` (`!` deleted from "operations await acks": the retry armed only when
// none did) and `resend` (`==` to `!=`: a restarted replica's catch-up sent to every other
// replica instead). A write whose copies were lost on the way is sent again: after the retry
// time to every replica that lacks it, and at once to a replica that comes back, so a quorum
// forms without waiting for the retry.
#[test]
fn lost_copies_of_a_write_are_sent_again_and_a_returning_replica_catches_up_at_once() {
    use chatsim_system::limits::REPLICATE_RETRY_MS;
    // Both copies lost: no quorum until the retry.
    let mut c = Cluster::new(replicated());
    c.run_for(1_000);
    c.lossy.extend([Host::Replica(1), Host::Replica(2)]);
    send(&mut c, A, B, "copies lost");
    c.run_for(50);
    c.lossy.clear();
    assert_eq!(acks(&c), 0, "no quorum yet");
    c.run_for(REPLICATE_RETRY_MS + 100);
    assert_eq!(acks(&c), 1, "the retry formed a quorum");

    // The retry's copies lost too: it is retried again a period later (coordinator `on_retry`,
    // `+` to `*`: the next retry was set for a time far off).
    let mut c = Cluster::new(replicated());
    c.run_for(1_000);
    c.lossy.extend([Host::Replica(1), Host::Replica(2)]);
    send(&mut c, A, B, "lost twice");
    c.run_for(REPLICATE_RETRY_MS + 100);
    c.lossy.clear();
    assert_eq!(acks(&c), 0, "the first retry was lost as well");
    c.run_for(REPLICATE_RETRY_MS + 100);
    assert_eq!(acks(&c), 1, "the second retry formed a quorum");

    // One replica still unreachable, the other restarts: its hello brings the write at once.
    let mut c = Cluster::new(replicated());
    c.run_for(1_000);
    c.lossy.extend([Host::Replica(1), Host::Replica(2)]);
    send(&mut c, A, B, "caught up");
    c.run_for(50);
    c.lossy.remove(&Host::Replica(2));
    c.crash(Host::Replica(2));
    c.run_for(REPLICATE_RETRY_MS / 3);
    assert_eq!(
        acks(&c),
        1,
        "replica 2 caught up on its return, before the retry"
    );
}

// Coordinator `on_replica` (`||` to `&&` in "only the continuation we asked for"): a page a
// replica sent twice (a retried read) was taken twice while the read went on, so an operation
// held by one replica counted as held by two, looked like a quorum's, and was not written
// again: a minority's write served as if it would survive the next rebuild. Read from one
// replica holding it (its first page arriving twice) and one holding nothing, it is
// repaired onto the others.
#[test]
fn a_page_read_twice_in_a_rebuild_does_not_count_its_replica_twice() {
    use chatsim_system::proto::{ConvId, OpId, Receipt, ReceiptKind, Rpc, StorageOp};
    use chatsim_system::{Effect, Input, Machine};
    let op = |upto| StorageOp::Receipt {
        receipt: Receipt {
            conv: ConvId::direct(UserId(0), UserId(1)),
            reader: B,
            kind: ReceiptKind::Delivered,
            upto,
        },
        notify: Vec::new(),
    };
    let (first, second) = (OpId { term: 1, n: 1 }, OpId { term: 1, n: 2 });
    let mut s = chatsim_system::storage::Storage::replicated(&replicated(), 7);
    let mut out = Vec::new();
    s.handle(0, Input::Timeout, &mut out);
    let page = |after, ops: Vec<(OpId, StorageOp)>, more| Rpc::Ops { after, ops, more };
    let from = |r| Host::Replica(r);
    let one = page(None, vec![(first, op(1))], true);
    s.handle(
        1,
        Input::Rpc {
            from: from(0),
            rpc: one.clone(),
        },
        &mut out,
    );
    s.handle(
        2,
        Input::Rpc {
            from: from(0),
            rpc: one,
        },
        &mut out,
    );
    let rest = page(Some(first), vec![(second, op(2))], false);
    s.handle(
        3,
        Input::Rpc {
            from: from(0),
            rpc: rest,
        },
        &mut out,
    );
    out.clear();
    let empty = page(None, Vec::new(), false);
    s.handle(
        4,
        Input::Rpc {
            from: from(1),
            rpc: empty,
        },
        &mut out,
    );
    let repaired: Vec<OpId> = out
        .iter()
        .flat_map(|e| match e {
            Effect::Rpc {
                to: Host::Replica(1),
                rpc: Rpc::Replicate { ops },
            } => ops.iter().map(|(id, _)| *id).collect(),
            _ => Vec::new(),
        })
        .collect();
    assert!(
        repaired.contains(&first) && repaired.contains(&second),
        "both ops were on one replica only, so both are written again: {repaired:?}"
    );
    // Coordinator `finish_repair` (`<` to `>` in "a repaired op is not on a quorum yet"): it
    // serves only once every repaired op is on a quorum, or a crash now could lose what it
    // served.
    assert!(!s.serving(), "served before the repair was on a quorum");
    let repair: Vec<OpId> = out
        .iter()
        .flat_map(|e| match e {
            Effect::Rpc {
                to: Host::Replica(2),
                rpc: Rpc::Replicate { ops },
            } => ops.iter().map(|(id, _)| *id).collect(),
            _ => Vec::new(),
        })
        .collect();
    out.clear();
    let acked = |r| Input::Rpc {
        from: from(r),
        rpc: Rpc::Replicated {
            ids: repair.clone(),
        },
    };
    s.handle(5, acked(1), &mut out);
    assert!(
        !s.serving(),
        "one replica of a quorum of two has the repair"
    );
    s.handle(6, acked(2), &mut out);
    assert!(s.serving(), "every repaired op is on a quorum now: {out:?}");
}

// Coordinator `on_retry` (`+` to `*` on the read's retry): a rebuild whose reads were lost
// asks the replicas again a retry period later, not at a time far off (a coordinator that
// booted at 5 ms waited 5 x the period; one booting later, for ever).
#[test]
fn a_rebuilds_unanswered_reads_are_asked_again() {
    use chatsim_system::limits::READ_OPS_RETRY_MS;
    use chatsim_system::proto::Rpc;
    use chatsim_system::{Effect, Input, Machine};
    let mut s = chatsim_system::storage::Storage::replicated(&replicated(), 7);
    let reads = |out: &[Effect]| {
        out.iter()
            .filter(|e| {
                matches!(
                    e,
                    Effect::Rpc {
                        rpc: Rpc::ReadOps { .. },
                        ..
                    }
                )
            })
            .count()
    };
    let mut out = Vec::new();
    s.handle(500, Input::Timeout, &mut out);
    assert_eq!(reads(&out), 3, "one read per replica: {out:?}");
    out.clear();
    s.handle(500 + READ_OPS_RETRY_MS, Input::Timeout, &mut out);
    assert_eq!(reads(&out), 3, "asked again: {out:?}");
}

// Coordinator `arm_sync` (the batch delay): writes that come within a replica's sync delay
// of the last send go out together, one frame per replica, and each is answered once a
// quorum syncs that frame; a write after a quiet spell goes at once. One frame per write per
// replica was a third of all frames on the reference world.
#[test]
fn a_coordinator_sends_what_comes_within_a_sync_delay_in_one_frame() {
    use chatsim_system::limits::STORAGE_SYNC_MS;
    use chatsim_system::proto::{ConvId, OpId, Receipt, ReceiptKind, Rpc};
    use chatsim_system::{Effect, Input, Machine};
    let mut s = chatsim_system::storage::Storage::replicated(&replicated(), 1);
    let batches = |out: &[Effect], r: u16| -> Vec<Vec<OpId>> {
        out.iter()
            .filter_map(|e| match e {
                Effect::Rpc {
                    to: Host::Replica(to),
                    rpc: Rpc::Replicate { ops },
                } if *to == r => Some(ops.iter().map(|(id, _)| *id).collect()),
                _ => None,
            })
            .collect()
    };
    let ack = |s: &mut chatsim_system::storage::Storage, now, r, ids: &[OpId], out: &mut _| {
        let rpc = Rpc::Replicated { ids: ids.to_vec() };
        let from = Host::Replica(r);
        s.handle(now, Input::Rpc { from, rpc }, out);
    };
    // Serve first: every replica answers the rebuild's read empty, and a quorum syncs the
    // new term's opening.
    let mut out = Vec::new();
    s.handle(0, Input::Timeout, &mut out);
    for r in 0..3 {
        let rpc = Rpc::Ops {
            after: None,
            ops: Vec::new(),
            more: false,
        };
        s.handle(
            1,
            Input::Rpc {
                from: Host::Replica(r),
                rpc,
            },
            &mut out,
        );
    }
    let opening = batches(&out, 0).concat();
    assert_eq!(opening.len(), 1, "{out:?}");
    for r in 0..2 {
        ack(&mut s, 2, r, &opening, &mut out);
    }
    assert!(s.serving());
    // Shard 0 takes its slot (receipts are written under its fence), on a quorum well
    // before the writes below.
    out.clear();
    let rpc = Rpc::Lease {
        shard: 0,
        renew: Vec::new(),
        acquire: vec![0],
    };
    s.handle(
        3,
        Input::Rpc {
            from: Host::Shard(0),
            rpc,
        },
        &mut out,
    );
    s.handle(3, Input::Timeout, &mut out);
    let lease = batches(&out, 0).concat();
    assert_eq!(lease.len(), 1, "{out:?}");
    for r in 0..2 {
        ack(&mut s, 4, r, &lease, &mut out);
    }
    let put = |upto| Rpc::PutReceipt {
        fence: (0, 1),
        receipt: Receipt {
            conv: ConvId::direct(A.user, B.user),
            reader: B,
            kind: ReceiptKind::Delivered,
            upto,
        },
        notify: Vec::new(),
        via: 0,
    };
    let shard = Host::Shard(0);
    let stored = |out: &[Effect]| {
        out.iter()
            .filter(|e| {
                matches!(
                    e,
                    Effect::Rpc {
                        rpc: Rpc::ReceiptStored { .. },
                        ..
                    }
                )
            })
            .count()
    };
    // A write after a quiet spell goes out at the same instant.
    let t = 100;
    out.clear();
    s.handle(
        t,
        Input::Rpc {
            from: shard,
            rpc: put(1),
        },
        &mut out,
    );
    assert_eq!(
        s.poll_timeout(),
        Some(t),
        "sent at once after a quiet spell"
    );
    s.handle(t, Input::Timeout, &mut out);
    let first = batches(&out, 1).concat();
    assert_eq!(first.len(), 1, "{out:?}");
    // Two more within the sync delay wait for it, then share one frame per replica.
    out.clear();
    s.handle(
        t + 1,
        Input::Rpc {
            from: shard,
            rpc: put(2),
        },
        &mut out,
    );
    s.handle(
        t + 1,
        Input::Rpc {
            from: shard,
            rpc: put(3),
        },
        &mut out,
    );
    assert_eq!(s.poll_timeout(), Some(t + STORAGE_SYNC_MS));
    s.handle(t + 1, Input::Timeout, &mut out);
    assert!(batches(&out, 0).is_empty(), "not before the delay: {out:?}");
    s.handle(t + STORAGE_SYNC_MS, Input::Timeout, &mut out);
    for r in 0..3 {
        let frames = batches(&out, r);
        assert_eq!(frames.len(), 1, "one frame to replica {r}: {out:?}");
        assert_eq!(frames[0].len(), 2, "carrying both writes: {out:?}");
    }
    let second = batches(&out, 1).concat();
    // Answers wait for a quorum of each operation, and come in order.
    out.clear();
    ack(&mut s, t + 10, 1, &second, &mut out);
    assert_eq!(stored(&out), 0, "one replica is no quorum: {out:?}");
    ack(&mut s, t + 10, 2, &second, &mut out);
    assert_eq!(stored(&out), 0, "the first write is not on a quorum yet");
    ack(&mut s, t + 11, 1, &first, &mut out);
    ack(&mut s, t + 11, 2, &first, &mut out);
    assert_eq!(
        stored(&out),
        3,
        "all three, once the first is on a quorum: {out:?}"
    );
}
