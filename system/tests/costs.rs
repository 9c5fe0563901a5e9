//! What a correct system must not overspend, and the edges of its own bookkeeping: the
//! outbox window, the quick delete of a pushed entry, the size of a gap fetch and when it is
//! asked, a replica's sync time and page size, a message's per-device copy, and probes that
//! must stay silent on a run with nothing to report. A defect here loses nothing, so no
//! invariant of the swarm sees it; each test was written against a mutant that survived the
//! mutation sample (reports/mutants/) and names it.

mod common;

use chatsim_system::device::Device;
use chatsim_system::e2e::{device_keypair, seal, Bundle};
use chatsim_system::knobs::Knobs;
use chatsim_system::limits::{GAP_REPAIR_DELAY_MS, GAP_RETRY_MS};
use chatsim_system::probe::Probe;
use chatsim_system::proto::{
    ConvId, DeviceId, Down, Host, Message, MsgId, OpId, Path, Receipt, ReceiptKind, Rpc, StorageOp,
    Up, UserId,
};
use chatsim_system::replica::{Replica, ReplicaLog};
use chatsim_system::testkit::Cluster;
use chatsim_system::{Action, Deployment, Effect, Input, KeyDirectory, Machine};
use common::*;

/// A phone driven alone, connected and welcomed, with what it emitted so far cleared.
fn welcomed(id: DeviceId, topo: Deployment) -> Device {
    let mut d = Device::new(id, topo, 1, true);
    let mut out = Vec::new();
    d.handle(0, Input::Timeout, &mut out);
    d.handle(1, Input::Connected, &mut out);
    d.handle(2, Input::Down(Down::Welcome { epoch: 1 }), &mut out);
    d
}

/// The two-phone topology with real keys, so a phone alone can open what `text` seals.
fn keyed() -> (Deployment, impl Fn(u64) -> Message) {
    let (ka, kb) = (device_keypair(0, A, None), device_keypair(0, B, None));
    let mut t = topo();
    t.keys = KeyDirectory::new([(A, ka.public), (B, kb.public)].into_iter().collect());
    let text = move |seq: u64| {
        let id = MsgId {
            device: A,
            n: seq as u32,
        };
        let copy = seal(&ka, B, &kb.public, id, &[seq as u8]);
        Message {
            conv: ConvId::direct(A.user, B.user),
            seq,
            id,
            body: Bundle {
                copies: vec![(B, copy)],
            }
            .encode(),
            sent_at: 0,
            event: None,
            keys: Vec::new(),
        }
    };
    (t, text)
}

/// Shard 0 of the two-shard topology, booted (its first lease request sent) and driven alone.
fn booted_shard() -> chatsim_system::shard::Shard {
    let mut s = chatsim_system::shard::Shard::new(0, topo());
    s.handle(0, Input::Timeout, &mut Vec::new());
    s
}

/// `home`, the shard of a conversation with work under way, freezes past its lease, the
/// other shard takes its slot, and it wakes to the lease table saying so.
fn slot_taken_while_frozen(c: &mut Cluster, home: u16) {
    c.freeze(Host::Shard(home));
    c.run_for(7_000);
    assert_eq!(
        c.durable().lease(home).map(|l| l.0),
        Some(1 - home),
        "taken over"
    );
    c.thaw(Host::Shard(home));
    c.run_for(1_000);
}

fn deliver(d: &mut Device, now: u64, msg: Message, path: Path) -> Vec<Effect> {
    let mut out = Vec::new();
    d.handle(now, Input::Down(Down::Deliver { msg, path }), &mut out);
    out
}

/// The sequence numbers a phone acked in `out`.
fn acks(out: &[Effect]) -> Vec<u64> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Up(Up::Ack { seq, .. }) => Some(*seq),
            _ => None,
        })
        .collect()
}

fn fetches(out: &[Effect]) -> Vec<(u64, u64)> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Up(Up::Fetch { from, to, .. }) => Some((*from, *to)),
            _ => None,
        })
        .collect()
}

// device `in_flight`: replaced by 0, the outbox window never filled and every queued text
// went out at once. The window is what keeps a phone that reconnects with a long queue from
// flooding its shard.
#[test]
fn a_phone_keeps_no_more_sends_in_flight_than_its_window() {
    let topo = Deployment {
        knobs: Knobs {
            outbox_in_flight_max: 2,
            ..Knobs::default()
        },
        ..topo()
    };
    let mut a = welcomed(A, topo);
    let mut out = Vec::new();
    for i in 0..5u8 {
        let body = vec![i];
        a.handle(
            10,
            Input::Action(Action::SendDirect { to: B.user, body }),
            &mut out,
        );
    }
    let sends = |out: &[Effect]| -> Vec<MsgId> {
        out.iter()
            .filter_map(|e| match e {
                Effect::Up(Up::Send { id, .. }) => Some(*id),
                _ => None,
            })
            .collect()
    };
    let first = sends(&out);
    assert_eq!(first.len(), 2, "a window of two: {out:?}");
    out.clear();
    let conv = ConvId::direct(A.user, B.user);
    let sent = Down::Sent {
        conv,
        id: first[0],
        seq: 1,
    };
    a.handle(20, Input::Down(sent), &mut out);
    assert_eq!(sends(&out).len(), 1, "one ✓ frees one place: {out:?}");
}

// device `on_deliver` and shard `Up::Receipt`: a shown text of a direct chat is acked by its
// delivered mark alone, a receipt delay later, which deletes its inbox entry and stops the
// shard's pushes; a per-message ack said the same three frames sooner. `inbox_drained` only
// looks at the end, so a defect here is a cost the swarm cannot see.
#[test]
fn a_pushed_direct_text_leaves_the_inbox_with_its_delivered_mark() {
    use chatsim_system::limits::{PUSH_RETRY_MS_MIN, RECEIPT_DELAY_MS};
    // Frames take a millisecond a hop; the delivered mark waits RECEIPT_DELAY_MS.
    let mut c = one_text(topo(), "quick", 50);
    assert_eq!(displayed(&c, B).len(), 1);
    assert_eq!(c.durable().inbox_written(), 1, "an entry was parked for it");
    assert_eq!(c.durable().inbox_entries(), 1, "gone before any mark went");
    c.run_for(RECEIPT_DELAY_MS);
    assert_eq!(c.durable().inbox_entries(), 0, "the mark left the entry");
    c.run_for(2 * PUSH_RETRY_MS_MIN);
    assert_eq!(displayed(&c, B).len(), 1);
    assert!(
        !c.probes.contains_key(&Probe::ShardPushRetried),
        "the mark did not stop the shard's pushes"
    );
}

// device `on_deliver`: only a text its delivered mark is about to cover goes without an ack.
// One held behind a gap is acked at once (else the shard pushes it again every retry until
// the gap fills); so is a group's (its fan-out step waits on the acks).
#[test]
fn a_phone_acks_at_once_what_its_mark_does_not_cover_yet() {
    let (topo, text) = keyed();
    let mut b = welcomed(B, topo);
    assert_eq!(
        acks(&deliver(&mut b, 3, text(1), Path::Live)),
        Vec::<u64>::new()
    );
    assert_eq!(
        acks(&deliver(&mut b, 4, text(3), Path::Live)),
        vec![3],
        "held"
    );
    assert_eq!(
        acks(&deliver(&mut b, 5, text(2), Path::Live)),
        Vec::<u64>::new()
    );
}

// shard `attempt` (`>` to `==`) and shard `on_storage` (`!` deleted): two probes that fire on
// the common case instead of the rare one were still "reached", so coverage could not tell.
// A calm run with one text and no restart pushes once and resumes no fan-out.
#[test]
fn rare_branch_probes_stay_silent_on_a_calm_run() {
    let c = one_text(topo(), "calm", 1_000);
    assert_eq!(displayed(&c, B).len(), 1);
    let hits = |p| c.probes.get(&p).copied().unwrap_or(0);
    assert_eq!(hits(Probe::ShardPushRetried), 0, "{:?}", c.probes);
    assert_eq!(hits(Probe::ShardFanoutResumed), 0, "{:?}", c.probes);
}

// device `on_gap_timer` (`-` to `+`): a gap fetch asked for two numbers more than the knob
// allows. The knob is the bound on a fetch's reply; a BUGGIFY run shrinks it to make a long
// gap take many fetches.
#[test]
fn a_gap_fetch_asks_for_no_more_than_the_knob_allows() {
    let (mut topo, text) = keyed();
    topo.knobs.gap_fetch_seqs_max = 2;
    let mut b = welcomed(B, topo);
    deliver(&mut b, 3, text(1), Path::Live);
    deliver(&mut b, 4, text(10), Path::Live);
    let mut out = Vec::new();
    b.handle(4 + GAP_REPAIR_DELAY_MS, Input::Timeout, &mut out);
    assert_eq!(fetches(&out), vec![(2, 3)], "{out:?}");
}

// device `advance` (`+` to `*`): part of a gap filled by a fetch's reply left the rest waiting
// for the fetch retry (2 s) instead of the repair delay. gap_repair's bound allows the retry,
// so only the timing shows it.
#[test]
fn the_rest_of_a_partly_filled_gap_is_asked_for_after_the_repair_delay() {
    let (topo, text) = keyed();
    let mut b = welcomed(B, topo);
    deliver(&mut b, 3, text(1), Path::Live);
    deliver(&mut b, 4, text(5), Path::Live);
    let mut out = Vec::new();
    let asked = 4 + GAP_REPAIR_DELAY_MS;
    b.handle(asked, Input::Timeout, &mut out);
    assert_eq!(fetches(&out), vec![(2, 4)]);
    // The reply brings only 2 (3 and 4 still on their way, or lost).
    let part = asked + 10;
    deliver(&mut b, part, text(2), Path::Fetch);
    out.clear();
    b.handle(part + GAP_REPAIR_DELAY_MS, Input::Timeout, &mut out);
    assert_eq!(
        fetches(&out),
        vec![(3, 4)],
        "asked again a repair delay after the part came, not {GAP_RETRY_MS} ms after the fetch"
    );
}

// device `handle`'s `ConnectFailed` guard: taken as always true, a stale connect failure
// knocked down a phone that was connected. A host may report a failed attempt late.
#[test]
fn a_late_connect_failure_does_not_knock_down_a_connected_phone() {
    let mut a = welcomed(A, topo());
    assert!(a.is_ready());
    let mut out = Vec::new();
    a.handle(10, Input::ConnectFailed, &mut out);
    assert!(a.is_ready(), "still connected: {out:?}");
}

fn receipt_op(notify: usize) -> StorageOp {
    StorageOp::Receipt {
        receipt: Receipt {
            conv: ConvId::direct(UserId(0), UserId(1)),
            reader: DeviceId::primary(UserId(1)),
            kind: ReceiptKind::Delivered,
            upto: 1,
        },
        notify: (0..notify)
            .map(|u| DeviceId::primary(UserId(u as u32)))
            .collect(),
    }
}

fn append_op(body: usize, keys: &[usize], recipients: usize, fanout: usize) -> StorageOp {
    let device = |u: usize| DeviceId::primary(UserId(u as u32));
    StorageOp::Append {
        msg: Message {
            conv: ConvId::direct(UserId(0), UserId(1)),
            seq: 1,
            id: MsgId { device: A, n: 1 },
            body: vec![7; body],
            sent_at: 0,
            event: None,
            keys: keys
                .iter()
                .enumerate()
                .map(|(i, len)| (device(i), vec![0; *len]))
                .collect(),
        },
        recipients: (0..recipients).map(device).collect(),
        fanout: (0..fanout).map(device).collect(),
        park: true,
    }
}

// storage ops `approx_bytes` (three mutants: a constant 1, `+` to `*`, `*` to `+`): the size
// estimate pages a replica's log for a rebuild, so it must grow with each part of an
// operation as the bytes on the wire do: a fixed header, the body, each sealed key and its
// entry, each device named.
#[test]
fn an_operations_size_grows_with_each_of_its_parts() {
    let size = |op: StorageOp| op.approx_bytes();
    let base = size(append_op(0, &[], 0, 0));
    assert!(base > 1, "a header costs something");
    assert_eq!(size(append_op(100, &[], 0, 0)), base + 100, "the body");
    let key = size(append_op(0, &[32], 0, 0)) - base;
    assert!(key > 32, "a key costs its bytes and an entry: {key}");
    assert_eq!(
        size(append_op(0, &[64], 0, 0)),
        base + key + 32,
        "a longer key costs its extra bytes"
    );
    assert_eq!(
        size(append_op(0, &[32, 32, 32], 0, 0)),
        base + 3 * key,
        "keys add up"
    );
    let entry = size(append_op(0, &[], 1, 0)) - base;
    assert!(entry > 0);
    assert_eq!(size(append_op(0, &[], 3, 0)), base + 3 * entry);
    assert_eq!(size(append_op(0, &[], 2, 3)), base + 5 * entry);
    assert_eq!(
        size(append_op(10, &[32], 2, 1)),
        base + 10 + key + 3 * entry
    );
    assert_eq!(size(receipt_op(4)) - size(receipt_op(0)), 4 * entry);
}

fn replicate(r: &mut Replica, now: u64, n: u64, op: StorageOp) -> Vec<Effect> {
    let mut out = Vec::new();
    let id = OpId { term: 1, n };
    let rpc = Rpc::Replicate {
        ops: vec![(id, op)],
    };
    let from = Host::Storage(0);
    r.handle(now, Input::Rpc { from, rpc }, &mut out);
    out
}

// replica `handle` (`+` to `-`): a replica synced at once instead of its sync time after the
// first buffered operation: a faster disk than configured, so a crash inside the window lost
// nothing and the lost-unsynced-write paths went untested.
#[test]
fn a_replica_syncs_its_sync_time_after_the_first_buffered_operation() {
    let knobs = Knobs {
        storage_sync_ms: 50,
        ..Knobs::default()
    };
    let mut r = Replica::configured(ReplicaLog::default(), knobs);
    let mut out = Vec::new();
    r.handle(0, Input::Timeout, &mut out);
    replicate(&mut r, 100, 1, receipt_op(0));
    replicate(&mut r, 120, 2, receipt_op(0));
    assert_eq!(r.poll_timeout(), Some(150), "the first op starts the wait");
    out.clear();
    r.handle(149, Input::Timeout, &mut out);
    assert!(r.durable().is_empty(), "not yet synced: {out:?}");
    r.handle(150, Input::Timeout, &mut out);
    assert_eq!(r.durable().len(), 2);
}

// replica `page` (`&&` to `||`, and `+` to `-` in the running size): a rebuild reads a log in
// pages of the knob's bytes, at least one operation each. Pages of one operation each made a
// rebuild take a round trip per operation; a running size that subtracted underflowed on the
// first operation bigger than those before it.
#[test]
fn a_replica_pages_its_log_by_bytes_at_least_one_operation_a_page() {
    let small = receipt_op(0).approx_bytes();
    let big_op = append_op(1_000, &[], 0, 0);
    let big = big_op.approx_bytes();
    let knobs = Knobs {
        ops_page_bytes: 2 * small + small / 2,
        storage_sync_ms: 0,
        ..Knobs::default()
    };
    let mut r = Replica::configured(ReplicaLog::default(), knobs);
    let mut out = Vec::new();
    r.handle(0, Input::Timeout, &mut out);
    for (n, op) in [receipt_op(0), receipt_op(0), big_op, receipt_op(0)]
        .into_iter()
        .enumerate()
    {
        replicate(&mut r, 1, n as u64, op);
    }
    r.handle(1, Input::Timeout, &mut out);
    assert_eq!(r.durable().len(), 4);
    assert!(big > knobs.ops_page_bytes, "the big one fits no page");
    let page = |r: &mut Replica, after: Option<u64>| -> (Vec<u64>, bool) {
        let mut out = Vec::new();
        let after = after.map(|n| OpId { term: 1, n });
        let rpc = Rpc::ReadOps { after };
        r.handle(
            2,
            Input::Rpc {
                from: Host::Storage(0),
                rpc,
            },
            &mut out,
        );
        match out.as_slice() {
            [Effect::Rpc {
                rpc: Rpc::Ops { ops, more, .. },
                ..
            }] => (ops.iter().map(|(id, _)| id.n).collect(), *more),
            other => panic!("one page, not {other:?}"),
        }
    };
    assert_eq!(page(&mut r, None), (vec![0, 1], true), "two small ones fit");
    assert_eq!(page(&mut r, Some(1)), (vec![2], true), "a big one alone");
    assert_eq!(page(&mut r, Some(2)), (vec![3], false));
}

// chat `Message::for_device` (the field `keys` deleted from its struct expression, so every
// copy kept every recipient's sealed key): each key is sealed for its own device, so nothing
// leaks that e2e_confidential sees, but a device learned who else got the group key and
// frames grew with the group. A device's copy carries its own key and nobody else's.
#[test]
fn a_devices_copy_of_a_message_carries_only_its_own_key() {
    let StorageOp::Append { msg, .. } = append_op(5, &[8, 9, 10], 0, 0) else {
        unreachable!("built as an append")
    };
    let one = DeviceId::primary(UserId(1));
    let copy = msg.for_device(one);
    assert_eq!(copy.keys, vec![(one, vec![0; 9])]);
    assert_eq!(copy.body, msg.body);
    let stranger = DeviceId::primary(UserId(7));
    assert!(msg.for_device(stranger).keys.is_empty());
}

// device `on_welcome` (`>` to `>=`) and `apply_members` (the "becoming a reader" test, in
// several mutants): a phone pulls a group read from its log (one over the fan-out-on-read
// threshold) once when it joins or the group grows past the threshold, once per connection,
// and not when a member is added to a group it already reads; a group at the threshold is fanned out, never pulled. Every extra
// pull is a log read that finds nothing; a missing one leaves a reader behind.
#[test]
fn a_phone_pulls_a_group_read_from_its_log_once_per_connection() {
    let topo = Deployment {
        users: 5,
        fanout_on_read_over: 3,
        ..topo()
    };
    let mut c = Cluster::new(topo);
    let one = DeviceId::primary(UserId(1));
    let creator = DeviceId::primary(UserId(0));
    c.run_for(1_000);
    let big = [1, 2, 3].map(UserId).to_vec();
    let small = [1, 4].map(UserId).to_vec();
    c.act(
        creator,
        Action::CreateGroup {
            group: 2,
            members: big,
        },
    );
    c.act(
        creator,
        Action::CreateGroup {
            group: 3,
            members: small,
        },
    );
    c.run_for(1_000);
    let pulls = |c: &Cluster, group: u32, since: u64| {
        c.ups
            .iter()
            .filter(|(t, d, up)| {
                *t >= since
                    && *d == one
                    && matches!(up, Up::Pull { conv } if *conv == ConvId::group(group))
            })
            .count()
    };
    assert_eq!(pulls(&c, 2, 0), 1, "joining a group of four over three");
    assert_eq!(pulls(&c, 3, 0), 0, "a group of three is fanned out");
    let added = c.now;
    c.act(
        creator,
        Action::AddMember {
            group: 2,
            user: UserId(4),
        },
    );
    c.run_for(1_000);
    assert_eq!(
        pulls(&c, 2, added),
        0,
        "already a reader when the group grew"
    );
    c.act(one, Action::GoOffline);
    c.run_for(100);
    let back = c.now;
    c.act(one, Action::GoOnline);
    c.run_for(1_000);
    assert_eq!(pulls(&c, 2, back), 1, "once per connection");
    assert_eq!(pulls(&c, 3, 0), 0);
    let grown = c.now;
    c.act(
        creator,
        Action::AddMember {
            group: 3,
            user: UserId(2),
        },
    );
    c.run_for(1_000);
    assert_eq!(
        pulls(&c, 3, grown),
        1,
        "a reader from when it grew past three"
    );
}

// shard `on_storage`'s `Fenced` guard (taken as always true): the answer to a write of an
// older epoch, arriving after the shard leased the slot again, made it drop a slot it holds
// until its next lease: an availability blip of a lease period. Only a refusal naming an epoch
// newer than ours means the slot is gone.
#[test]
fn a_shard_lets_a_slot_go_only_for_a_fence_newer_than_its_lease() {
    use chatsim_system::proto::LeaseView;
    use chatsim_system::shard::Shard;
    let mut s = booted_shard();
    let mut out = Vec::new();
    let storage = |rpc| Input::Rpc {
        from: Host::Storage(0),
        rpc,
    };
    let leases = vec![LeaseView {
        slot: 0,
        owner: 0,
        epoch: 3,
        live: true,
    }];
    s.handle(1, storage(Rpc::LeaseTable { leases }), &mut out);
    let fenced = |s: &mut Shard, now, epoch| {
        let mut out = Vec::new();
        s.handle(now, storage(Rpc::Fenced { slot: 0, epoch }), &mut out);
        out.contains(&Effect::Probe(Probe::ShardFenced))
    };
    assert!(!fenced(&mut s, 2, 2), "a late answer to epoch 2's write");
    assert!(!fenced(&mut s, 3, 3), "our own epoch");
    assert!(fenced(&mut s, 4, 4), "epoch 4 is another owner's");
}

// shard `lose` (replaced by nothing, or keeping the lost slot's state and dropping the
// rest) and `on_lease_table`'s test of what is ours: a shard that wakes from a pause to find
// its slot taken must forget the slot's deliveries, or it goes on pushing (and retrying)
// for conversations another shard now owns; storage's fence stops only its writes.
#[test]
fn a_shard_that_finds_its_slot_taken_forgets_the_slots_deliveries() {
    let mut c = Cluster::new(topo());
    c.run_for(1_000);
    let conv = ConvId::direct(A.user, B.user);
    let home = chatsim_system::routing::shard_for_conv(conv, 2);
    // Pushes are lost on their way, so the delivery stays tracked and retried.
    c.lossy.extend([Host::Gateway(0), Host::Gateway(1)]);
    send(&mut c, A, B, "tracked");
    c.run_for(100);
    assert_eq!(c.shard(home).tracked(), 1);
    slot_taken_while_frozen(&mut c, home);
    assert_eq!(
        c.shard(home).tracked(),
        0,
        "the slot and its deliveries are gone"
    );
}

// shard `on_lease_table` (`&&` to `||` in "ours: owned by us and live", and in "expired: not
// ours, and dead or once ours"): a shard whose bid for a slot lost must not take it over
// (its writes would all be fenced), and bids again only for its home slot, never for another
// slot a shard holds live (a refused request each renewal).
#[test]
fn a_shard_takes_only_the_slots_the_table_gives_it_and_bids_for_no_live_slot_but_its_home() {
    use chatsim_system::limits::SHARD_LEASE_RENEW_MS;
    use chatsim_system::proto::LeaseView;
    let mut s = booted_shard();
    let mut out = Vec::new();
    let view = |slot, owner, epoch, live| LeaseView {
        slot,
        owner,
        epoch,
        live,
    };
    // Our bid for the home slot lost: shard 1 holds it (and its own slot) live.
    let leases = vec![view(0, 1, 5, true), view(1, 1, 2, true)];
    out.clear();
    let from = Host::Storage(0);
    let rpc = Rpc::LeaseTable { leases };
    s.handle(1, Input::Rpc { from, rpc }, &mut out);
    assert!(
        !out.iter().any(|e| matches!(
            e,
            Effect::Rpc {
                rpc: Rpc::Owner { .. },
                ..
            }
        )),
        "claimed a slot it does not hold: {out:?}"
    );
    out.clear();
    s.handle(SHARD_LEASE_RENEW_MS, Input::Timeout, &mut out);
    let asked: Vec<Vec<u16>> = out
        .iter()
        .filter_map(|e| match e {
            Effect::Rpc {
                rpc: Rpc::Lease { acquire, .. },
                ..
            } => Some(acquire.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        asked,
        vec![vec![0]],
        "its home slot again, never shard 1's own live slot"
    );
}

fn sends_of(out: &[Effect]) -> Vec<(MsgId, ConvId, usize)> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Up(Up::Send { id, conv, keys, .. }) => Some((*id, *conv, keys.len())),
            _ => None,
        })
        .collect()
}

// device `on_refused` (`==` to `!=` in "our creation of this post's group is pending"): a post
// refused `NotMember` was retried, not given up, whenever the phone had a creation of some
// other group pending: a post that can never land, re-sent until that creation is acked.
#[test]
fn a_post_refused_not_member_is_given_up_even_with_another_groups_creation_pending() {
    let topo = Deployment { users: 3, ..topo() };
    let mut a = welcomed(A, topo);
    let mut out = Vec::new();
    let create = Action::CreateGroup {
        group: 3,
        members: vec![UserId(1)],
    };
    a.handle(10, Input::Action(create), &mut out);
    let post = Action::SendGroup {
        group: 2,
        body: b"not mine".to_vec(),
    };
    a.handle(11, Input::Action(post), &mut out);
    let group2 = ConvId::group(2);
    let sent = sends_of(&out);
    let id = sent
        .iter()
        .find(|(_, conv, _)| *conv == group2)
        .map(|s| s.0)
        .expect("the post went out");
    let refused = Down::Refused {
        reason: chatsim_system::proto::Refusal::NotMember,
        id: Some(id),
    };
    a.handle(12, Input::Down(refused), &mut out);
    out.clear();
    for t in (1_000..60_000).step_by(1_000) {
        a.handle(t, Input::Timeout, &mut out);
    }
    assert!(
        !sends_of(&out).iter().any(|s| s.0 == id),
        "a refused post went again: {out:?}"
    );
}

// device `on_timer`'s link-retry guard (`&&` to `||`): a companion that lost its connection
// before its link was stored kept sending `Link` every retry period into no connection. The
// welcome of its next connection asks again; nothing between.
#[test]
fn a_companion_asks_to_be_linked_only_while_connected() {
    use chatsim_system::limits::LINK_RETRY_MS;
    let b1 = DeviceId {
        user: UserId(1),
        index: 1,
    };
    let mut topo = Deployment {
        devices_per_user: 2,
        ..topo()
    };
    topo.late_devices.insert(b1);
    let mut d = Device::new(b1, topo, 1, true);
    let mut out = Vec::new();
    d.handle(0, Input::Timeout, &mut out);
    d.handle(1, Input::Action(Action::Link), &mut out);
    d.handle(2, Input::Timeout, &mut out);
    d.handle(3, Input::Connected, &mut out);
    d.handle(4, Input::Down(Down::Welcome { epoch: 1 }), &mut out);
    let links = |out: &[Effect]| out.iter().filter(|e| **e == Effect::Up(Up::Link)).count();
    assert_eq!(links(&out), 1, "the welcome asks: {out:?}");
    d.handle(5, Input::Disconnected, &mut out);
    out.clear();
    d.handle(4 + LINK_RETRY_MS, Input::Timeout, &mut out);
    d.handle(4 + 3 * LINK_RETRY_MS, Input::Timeout, &mut out);
    let down: Vec<&Effect> = out.iter().filter(|e| matches!(e, Effect::Up(_))).collect();
    assert!(down.is_empty(), "frames with no connection: {down:?}");
}

// device `subscribe` (`+` to `*`): the renewal of a presence subscription was set for a time
// far away, so a chat left open lost its peer's presence when the lease lapsed (20 s).
#[test]
fn an_open_chat_renews_its_presence_subscription() {
    use chatsim_system::limits::PRESENCE_RENEW_MS;
    let mut a = welcomed(A, topo());
    let mut out = Vec::new();
    let conv = ConvId::direct(A.user, B.user);
    a.handle(10, Input::Action(Action::OpenChat { conv }), &mut out);
    let subs = |out: &[Effect]| {
        out.iter()
            .filter(|e| matches!(e, Effect::Up(Up::Subscribe { user: Some(u) }) if *u == B.user))
            .count()
    };
    assert_eq!(subs(&out), 1, "opening watches the peer: {out:?}");
    out.clear();
    // The gateway answers the pings, as it would.
    for t in (1_000..PRESENCE_RENEW_MS).step_by(1_000) {
        a.handle(t, Input::Timeout, &mut out);
        a.handle(t, Input::Down(Down::Pong), &mut out);
    }
    assert_eq!(subs(&out), 0, "not before the renewal time: {out:?}");
    a.handle(10 + PRESENCE_RENEW_MS, Input::Timeout, &mut out);
    assert_eq!(subs(&out), 1, "renewed on time: {out:?}");
}

// device `transmit` (`!` deleted from "this send carried keys"): a group text that carried
// the sender's new key was not remembered as having distributed it, so every later text
// sealed the key again for every member: frames that grow with the group, for ever.
#[test]
fn a_group_sender_key_travels_with_the_first_text_only() {
    let topo = Deployment { users: 3, ..topo() };
    let mut c = Cluster::new(topo);
    c.run_for(1_000);
    let members = vec![UserId(1), UserId(2)];
    c.act(A, Action::CreateGroup { group: 2, members });
    c.run_for(1_000);
    for text in ["one", "two", "three"] {
        let body = text.as_bytes().to_vec();
        c.act(A, Action::SendGroup { group: 2, body });
        c.run_for(500);
    }
    let keyed: Vec<usize> = c
        .ups
        .iter()
        .filter_map(|(_, d, up)| match up {
            Up::Send { keys, op: None, .. } if *d == A => Some(keys.len()),
            _ => None,
        })
        .collect();
    assert_eq!(keyed, vec![2, 0, 0], "the key once, sealed for each member");
}

// shard `index` (read by the testkit and the stateright model to name a shard's host).
#[test]
fn a_shard_knows_its_index() {
    let topo = Deployment {
        shards: 4,
        ..topo()
    };
    assert_eq!(chatsim_system::shard::Shard::new(3, topo).index(), 3);
}

/// Every answer of a paged read of `storage`, asking again after each answer's cursor until
/// it says there is no more (at most `pages` asks: a cursor that does not move is a defect).
fn page_through<T, C: Clone>(
    storage: &mut chatsim_system::storage::Storage,
    pages: usize,
    ask: impl Fn(Option<C>) -> Rpc,
    answer: impl Fn(Rpc) -> (Vec<T>, Option<C>, bool),
) -> Vec<T> {
    let mut all = Vec::new();
    let mut after = None;
    for _ in 0..pages {
        let mut out = Vec::new();
        let from = Host::Shard(0);
        storage.handle(
            1,
            Input::Rpc {
                from,
                rpc: ask(after.clone()),
            },
            &mut out,
        );
        let [Effect::Rpc { rpc, .. }] = <[Effect; 1]>::try_from(out).expect("one answer") else {
            panic!("an answer is an rpc")
        };
        let (items, next, more) = answer(rpc);
        all.extend(items);
        if !more {
            return all;
        }
        after = next;
    }
    panic!("still more after {pages} pages")
}

// storage `ReadFanouts` (`>` to `>=` on the cursor): a restarted shard reading its unfinished
// fan-out jobs a page at a time got the job at the cursor again on every page and never
// reached the next one. Paging through the jobs yields each once.
#[test]
fn paging_through_fan_out_jobs_yields_each_once() {
    let mut state = chatsim_system::storage::StorageState::default();
    let group = ConvId::group(2);
    for seq in 1..=3 {
        let StorageOp::Append { mut msg, .. } = append_op(4, &[], 0, 0) else {
            unreachable!("built as an append")
        };
        (msg.conv, msg.seq, msg.id.n) = (group, seq, seq as u32);
        let fanout = vec![B];
        state.apply(&StorageOp::Append {
            msg,
            recipients: Vec::new(),
            fanout,
            park: true,
        });
    }
    let mut s = chatsim_system::storage::Storage::new(state);
    let jobs = page_through(
        &mut s,
        10,
        |after| Rpc::ReadFanouts {
            req: 1,
            shard: 0,
            shards: 1,
            conv: None,
            after,
        },
        |rpc| match rpc {
            Rpc::Fanouts {
                jobs, next, more, ..
            } => (jobs.into_iter().map(|j| j.0.seq).collect(), next, more),
            other => panic!("not a page of jobs: {other:?}"),
        },
    );
    assert_eq!(jobs, vec![1, 2, 3]);
}

// storage `ReadQueuedReceipts` (`>` to `==` on the cursor): a restarted shard's receipt sweep
// got only its first page; the rest waited for their senders' next drain. Paging through
// the queued receipts yields each once, in pages of the knob's size (storage configured
// without the deployment's knobs pages by the default).
#[test]
fn paging_through_queued_receipts_yields_each_once() {
    let mut state = chatsim_system::storage::StorageState::default();
    for upto in 1..=2 {
        let StorageOp::Receipt { mut receipt, .. } = receipt_op(0) else {
            unreachable!("built as a receipt")
        };
        receipt.upto = upto;
        for kind in [ReceiptKind::Delivered, ReceiptKind::Read] {
            receipt.kind = kind;
            let notify = (0..3).map(|u| DeviceId::primary(UserId(u))).collect();
            state.apply(&StorageOp::Receipt { receipt, notify });
        }
    }
    let topo = Deployment {
        knobs: Knobs {
            receipts_page_entries_max: 2,
            ..Knobs::default()
        },
        ..topo()
    };
    let mut s = chatsim_system::storage::Storage::configured(state, &topo);
    let first = page_through(
        &mut s,
        1,
        |after| Rpc::ReadQueuedReceipts {
            req: 1,
            shard: 0,
            shards: 1,
            after,
        },
        |rpc| match rpc {
            Rpc::QueuedReceipts { receipts, .. } => (receipts, None, false),
            other => panic!("not a page of receipts: {other:?}"),
        },
    );
    assert_eq!(first.len(), 2, "a page of the knob's size");
    let queued = page_through(
        &mut s,
        10,
        |after| Rpc::ReadQueuedReceipts {
            req: 1,
            shard: 0,
            shards: 1,
            after,
        },
        |rpc| match rpc {
            Rpc::QueuedReceipts {
                receipts,
                next,
                more,
                ..
            } => (receipts, next, more),
            other => panic!("not a page of receipts: {other:?}"),
        },
    );
    let unique: std::collections::BTreeSet<_> = queued.iter().copied().collect();
    assert_eq!(unique.len(), queued.len(), "a receipt twice: {queued:?}");
    assert_eq!(queued.len(), 6, "two kinds for three devices: {queued:?}");
}

// device `wants_link` (`<` to `>` on the wake's end): a phone woken by a push that lost its
// connection during the wake stayed down until the next push or its user; the text that
// woke it waited. Within the wake it reconnects; after it, it does not.
#[test]
fn a_woken_phone_that_loses_its_connection_reconnects_within_the_wake() {
    use chatsim_system::limits::PUSH_WAKE_MS;
    let woken_then_dropped = |drop_at: u64| {
        let mut a = welcomed(A, topo());
        let mut out = Vec::new();
        a.handle(10, Input::Action(Action::Background), &mut out);
        a.handle(1_000, Input::Pushed, &mut out);
        a.handle(1_001, Input::Connected, &mut out);
        a.handle(1_002, Input::Down(Down::Welcome { epoch: 2 }), &mut out);
        assert!(a.is_ready(), "woken and connected: {out:?}");
        // Keep the connection heard from until it drops.
        for t in (1_100..drop_at).step_by(1_000) {
            a.handle(t, Input::Down(Down::Pong), &mut out);
            a.handle(t, Input::Timeout, &mut out);
        }
        a.handle(drop_at, Input::Disconnected, &mut out);
        out.clear();
        for t in (drop_at..drop_at + 6_000).step_by(50) {
            a.handle(t, Input::Timeout, &mut out);
        }
        out.iter().any(|e| matches!(e, Effect::Connect { .. }))
    };
    assert!(woken_then_dropped(2_000), "dropped a second into the wake");
    assert!(
        !woken_then_dropped(1_000 + PUSH_WAKE_MS + 500),
        "dropped after the wake ended"
    );
}

// storage `handle`'s guard on replica traffic (taken as always true): a single storage node
// (no replicas) handed a replica's message took itself for a coordinator and panicked. A
// stray frame from a confused peer must not take storage down.
#[test]
fn a_storage_without_replicas_ignores_a_replicas_message() {
    let mut s = chatsim_system::storage::Storage::new(Default::default());
    let mut out = Vec::new();
    for rpc in [Rpc::ReplicaUp, Rpc::Replicated { ids: Vec::new() }] {
        let from = Host::Replica(0);
        s.handle(5, Input::Rpc { from, rpc }, &mut out);
    }
    assert!(out.is_empty(), "{out:?}");
}

// device `on_action` (the `CloseChat` guard taken as always true, and `!` deleted from
// "not already in the background") and `wants_link` (`&&` to `||`): what the user does with
// the app decides what the phone does. Closing some other chat leaves the open one open (and
// watched); putting the app away closes the connection; going offline keeps it closed.
// The swarm sees these since the plan became the truth of what users did; this sees them
// frame by frame.
#[test]
fn a_phone_does_what_its_user_does_with_the_app() {
    let topo = Deployment { users: 3, ..topo() };
    let mut a = welcomed(A, topo.clone());
    let mut out = Vec::new();
    let open = ConvId::direct(A.user, B.user);
    let other = ConvId::direct(A.user, UserId(2));
    a.handle(10, Input::Action(Action::OpenChat { conv: open }), &mut out);
    out.clear();
    a.handle(
        11,
        Input::Action(Action::CloseChat { conv: other }),
        &mut out,
    );
    assert!(
        !out.iter()
            .any(|e| matches!(e, Effect::Up(Up::Subscribe { user: None }))),
        "closing another chat ended the open one's watch: {out:?}"
    );
    a.handle(12, Input::Action(Action::Background), &mut out);
    assert!(!a.is_ready(), "the app went to the background: {out:?}");
    assert!(out.contains(&Effect::Disconnect), "{out:?}");

    let mut a = welcomed(A, topo);
    a.handle(10, Input::Action(Action::GoOffline), &mut out);
    a.handle(11, Input::Disconnected, &mut out);
    out.clear();
    for t in (100..20_000).step_by(100) {
        a.handle(t, Input::Timeout, &mut out);
    }
    assert!(
        !out.iter().any(|e| matches!(e, Effect::Connect { .. })),
        "an offline user's phone connected: {out:?}"
    );
}

// storage `read_pending` (`>` to `<` on the cursor): a restarted shard sweeping the inboxes
// of its slot a page at a time must see every parked entry once, or a delivery its earlier
// life left unfinished is never retried (the phone's next drain is the only way left).
#[test]
fn paging_through_parked_inbox_entries_yields_each_once() {
    let mut state = chatsim_system::storage::StorageState::default();
    for seq in 1..=3 {
        let StorageOp::Append { mut msg, .. } = append_op(4, &[], 0, 0) else {
            unreachable!("built as an append")
        };
        (msg.seq, msg.id.n) = (seq, seq as u32);
        let recipients = vec![A, B];
        state.apply(&StorageOp::Append {
            msg,
            recipients,
            fanout: Vec::new(),
            park: true,
        });
    }
    assert_eq!(state.inbox_entries(), 6);
    let mut s = chatsim_system::storage::Storage::new(state);
    let entries = page_through(
        &mut s,
        10,
        |after| Rpc::ReadPending {
            req: 1,
            shard: 0,
            shards: 1,
            after,
            limit: 2,
        },
        |rpc| match rpc {
            Rpc::PendingPage {
                entries,
                next,
                more,
                ..
            } => (
                entries
                    .into_iter()
                    .map(|(d, m)| (d, m.seq))
                    .collect::<Vec<_>>(),
                next,
                more,
            ),
            other => panic!("not a page of entries: {other:?}"),
        },
    );
    let unique: std::collections::BTreeSet<_> = entries.iter().copied().collect();
    assert_eq!(unique.len(), 6, "every entry once: {entries:?}");
    assert_eq!(entries.len(), 6, "every entry once: {entries:?}");
}

// storage state `apply` of a fan-out step (`&&` to `||` in "park only for a job still
// open"): a late retry of a step whose job already finished parked its devices' entries
// again, after they had perhaps been taken and deleted: a text delivered twice, and an inbox
// that never empties.
#[test]
fn a_late_fan_out_step_of_a_finished_job_parks_nothing() {
    let mut state = chatsim_system::storage::StorageState::default();
    let StorageOp::Append { mut msg, .. } = append_op(4, &[], 0, 0) else {
        unreachable!("built as an append")
    };
    msg.conv = ConvId::group(2);
    let (conv, seq) = (msg.conv, msg.seq);
    state.apply(&StorageOp::Append {
        msg,
        recipients: Vec::new(),
        fanout: vec![B],
        park: true,
    });
    let step = StorageOp::FanoutStep {
        conv,
        seq,
        devices: vec![B],
        next: 1,
        park: true,
    };
    state.apply(&step);
    assert_eq!(state.inbox_entries(), 1, "the step parks B's entry");
    state.apply(&StorageOp::DeleteInbox {
        device: B,
        conv,
        seq,
    });
    assert_eq!(state.inbox_entries(), 0, "B took it");
    state.apply(&step);
    assert_eq!(state.inbox_entries(), 0, "the late retry parked it again");
}

// storage `read_log` (`!` deleted from "the change that made the reader a member"): a member
// added at 3 who asks for 1..2 (before its time) gets nothing of them, and must be told where
// its membership starts, or it asks for the same empty range for ever. With the mutant it was
// told of a later change (the add of someone else at 5) and skipped what it was owed from 3.
#[test]
fn a_read_before_a_members_time_points_at_the_change_that_added_it() {
    use chatsim_system::proto::{GroupEvent, GroupOp};
    let group = ConvId::group(2);
    let mut state = chatsim_system::storage::StorageState::default();
    let users = |us: &[u32]| us.iter().copied().map(UserId).collect::<Vec<_>>();
    let entry = |seq: u64, event: Option<GroupEvent>| {
        let StorageOp::Append { mut msg, .. } = append_op(4, &[], 0, 0) else {
            unreachable!("built as an append")
        };
        (msg.conv, msg.seq, msg.id.n, msg.event) = (group, seq, seq as u32, event);
        StorageOp::Append {
            msg,
            recipients: Vec::new(),
            fanout: Vec::new(),
            park: false,
        }
    };
    let change = |op, members: &[u32]| {
        Some(GroupEvent {
            op,
            members: users(members),
        })
    };
    let create = GroupOp::Create {
        members: users(&[1]),
    };
    state.apply(&entry(1, change(create, &[0, 1])));
    state.apply(&entry(2, None));
    let add = |u| GroupOp::Add { user: UserId(u) };
    state.apply(&entry(3, change(add(2), &[0, 1, 2])));
    state.apply(&entry(4, None));
    state.apply(&entry(5, change(add(3), &[0, 1, 2, 3])));
    let mut s = chatsim_system::storage::Storage::new(state);
    let mut out = Vec::new();
    let reader = DeviceId::primary(UserId(2));
    let rpc = Rpc::ReadLog {
        req: 1,
        conv: group,
        from: 1,
        to: 2,
        reader,
    };
    s.handle(
        1,
        Input::Rpc {
            from: Host::Shard(0),
            rpc,
        },
        &mut out,
    );
    let seqs: Vec<u64> = out
        .iter()
        .flat_map(|e| match e {
            Effect::Rpc {
                rpc: Rpc::LogRange { msgs, .. },
                ..
            } => msgs.iter().map(|m| m.seq).collect(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(seqs, vec![3], "where its membership starts: {out:?}");
}

// shard `lose` (`!` deleted from "keep the fan-out jobs of the other slots"): a shard that
// wakes to find its slot taken must drop the slot's unfinished fan-out jobs too (the new
// owner resumes them from storage), not keep stepping them under a fenced epoch.
#[test]
fn a_shard_that_finds_its_slot_taken_drops_the_slots_fan_out_jobs() {
    let topo = Deployment {
        users: 4,
        knobs: Knobs {
            fanout_step_devices: 1,
            ..Knobs::default()
        },
        ..topo()
    };
    let mut c = Cluster::new(topo);
    c.run_for(1_000);
    let members = vec![UserId(1), UserId(2), UserId(3)];
    c.act(A, Action::CreateGroup { group: 2, members });
    c.run_for(1_000);
    let home = chatsim_system::routing::shard_for_conv(ConvId::group(2), 2);
    let body = b"fanned out".to_vec();
    c.act(A, Action::SendGroup { group: 2, body });
    // Sequenced and stored, its fan-out a step in: then the shard freezes.
    for _ in 0..20 {
        if c.shard(home).fanouts() > 0 {
            break;
        }
        c.run_for(1);
    }
    assert_eq!(c.shard(home).fanouts(), 1, "a fan-out job under way");
    slot_taken_while_frozen(&mut c, home);
    assert_eq!(c.shard(home).fanouts(), 0, "the slot and its jobs are gone");
}

// device heartbeat: a ping on every interval, busy or not, was 16% of silent-phone's frames.
// A link both ends used within the interval gets none; a link quiet either way still does
// (the phone must hear a pong to trust it, the gateway must hear the phone to keep it).
#[test]
fn a_phone_pings_only_a_link_quiet_one_way_or_the_other() {
    use chatsim_system::limits::HEARTBEAT_INTERVAL_MS;
    assert_eq!(HEARTBEAT_INTERVAL_MS, 2_000, "the times below assume it");
    let pings = |out: &[Effect]| out.iter().filter(|e| **e == Effect::Up(Up::Ping)).count();
    let conv = ConvId::direct(A.user, B.user);
    let receipt = |upto| {
        Input::Down(Down::Receipt {
            receipt: Receipt {
                conv,
                reader: B,
                kind: ReceiptKind::Delivered,
                upto,
            },
        })
    };
    let mut d = welcomed(A, topo());
    let mut out = Vec::new();
    // Busy both ways: a receipt heard every 1.5 s, said seen 0.3 s later.
    for upto in 1..=4 {
        let at = 1_500 * upto - 1_000;
        d.handle(at, receipt(upto), &mut out);
        d.handle(at + 300, Input::Timeout, &mut out);
    }
    let seen = out
        .iter()
        .filter(|e| matches!(e, Effect::Up(Up::ReceiptSeen { .. })))
        .count();
    assert_eq!(
        seen, 4,
        "the phone did not say it saw each receipt: {out:?}"
    );
    assert_eq!(pings(&out), 0, "a busy link was pinged: {out:?}");
    // Heard from, but silent itself for an interval: the gateway's idle scan needs a frame.
    out.clear();
    d.handle(6_500, Input::Down(Down::Pong), &mut out);
    d.handle(7_400, Input::Timeout, &mut out);
    assert_eq!(pings(&out), 1, "a silent phone did not ping: {out:?}");
    // Quiet both ways: pinged again an interval later.
    out.clear();
    d.handle(9_500, Input::Timeout, &mut out);
    assert_eq!(pings(&out), 1, "an idle link was not pinged: {out:?}");
}

// shard `attempt_receipt`, `hint` and `not_here`: a lookup and its answer were two frames of
// every push. A first push goes straight to the gateway the device's own frame came through
// within LOCATION_HINT_MS; an older frame, or that gateway saying the device is gone, asks
// the session service once.
#[test]
fn a_first_push_goes_where_the_device_last_spoke_and_a_miss_asks_where_it_went() {
    use chatsim_system::limits::LOCATION_HINT_MS;
    use chatsim_system::proto::Missed;
    let conv = ConvId::direct(A.user, B.user);
    let from_a = |g: u16| Input::Rpc {
        from: Host::Gateway(g),
        rpc: Rpc::FromDevice {
            device: A,
            up: Up::ReceiptSeen { conv, seen: vec![] },
        },
    };
    let stored = |upto| Input::Rpc {
        from: Host::Storage(0),
        rpc: Rpc::ReceiptStored {
            receipt: Receipt {
                conv,
                reader: B,
                kind: ReceiptKind::Delivered,
                upto,
            },
            notify: vec![A],
            via: 0,
        },
    };
    let pushed_to = |out: &[Effect]| -> Vec<Host> {
        out.iter()
            .filter_map(|e| match e {
                Effect::Rpc {
                    to,
                    rpc:
                        Rpc::ToDevice {
                            device,
                            down: Down::Receipt { .. },
                        },
                } if *device == A => Some(*to),
                _ => None,
            })
            .collect()
    };
    let lookups = |out: &[Effect]| {
        out.iter()
            .filter(|e| {
                matches!(
                    e,
                    Effect::Rpc {
                        rpc: Rpc::Lookup { .. },
                        ..
                    }
                )
            })
            .count()
    };
    let mut s = booted_shard();
    let mut out = Vec::new();
    s.handle(10, from_a(1), &mut out);
    out.clear();
    s.handle(20, stored(1), &mut out);
    assert_eq!(pushed_to(&out), vec![Host::Gateway(1)], "{out:?}");
    assert_eq!(
        lookups(&out),
        0,
        "asked where a device is that just spoke: {out:?}"
    );
    // The gateway says A is gone: ask at once; the same push missing again asks no more
    // (its next try is the retry's, by a lookup).
    out.clear();
    let gone = Input::Rpc {
        from: Host::Gateway(1),
        rpc: Rpc::NotHere {
            device: A,
            missed: Missed::Receipt(conv, B, ReceiptKind::Delivered),
        },
    };
    s.handle(30, gone.clone(), &mut out);
    assert_eq!(lookups(&out), 1, "{out:?}");
    assert_eq!(pushed_to(&out), vec![]);
    out.clear();
    s.handle(31, gone, &mut out);
    assert!(out.is_empty(), "{out:?}");
    // The hint went with the miss; a fresh frame brings one, and it ages out.
    out.clear();
    s.handle(40, from_a(0), &mut out);
    s.handle(40 + LOCATION_HINT_MS, stored(2), &mut out);
    assert_eq!(pushed_to(&out), vec![], "{out:?}");
    assert_eq!(lookups(&out), 1, "a stale hint was trusted: {out:?}");
}
