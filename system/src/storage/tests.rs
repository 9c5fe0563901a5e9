//! Unit tests of the storage node: sync before answer, idempotent appends, leases and the
//! fence, receipt queues.

use super::*;
use crate::bugs::Bugs;
use crate::limits::{
    DISK_SLOW_SYNC_MS, RECEIPTS_PAGE_ENTRIES_MAX, SHARD_LEASE_MS, STORAGE_SYNC_MS,
};
use crate::probe::Probe;
use crate::proto::{LeaseView, Message, ReceiptKind, UserId};

fn msg(seq: Seq, n: u32) -> Message {
    let device = DeviceId::primary(UserId(1));
    Message {
        conv: ConvId::direct(UserId(1), UserId(2)),
        seq,
        id: MsgId { device, n },
        body: vec![],
        sent_at: 0,
        event: None,
        keys: vec![],
    }
}

/// Hand storage an append under `fence` (no sync yet).
fn append_under(
    s: &mut Storage,
    now: Millis,
    fence: (u16, u64),
    m: Message,
    recipients: Vec<DeviceId>,
) -> Vec<Effect> {
    let mut out = Vec::new();
    let rpc = Rpc::Append {
        fence,
        msg: m,
        recipients,
        fanout: vec![],
        park: true,
    };
    s.handle(
        now,
        Input::Rpc {
            from: Host::Shard(0),
            rpc,
        },
        &mut out,
    );
    out
}

fn append(s: &mut Storage, now: Millis, m: Message) -> Vec<Effect> {
    // No lease was ever granted here: epoch 0 is current.
    append_under(s, now, (0, 0), m, vec![DeviceId::primary(UserId(2))])
}

// The whole point of persist-before-ack: no answer may leave before the sync, and a crash
// before it keeps nothing.
#[test]
fn append_is_answered_only_after_sync_and_lost_if_crashed_before() {
    let mut s = Storage::new(StorageState::default());
    assert!(
        append(&mut s, 10, msg(1, 1)).is_empty(),
        "answered before sync"
    );
    assert_eq!(s.poll_timeout(), Some(10 + STORAGE_SYNC_MS));
    let crashed = Storage::new(s.durable().clone());
    assert_eq!(crashed.durable().messages(), 0);

    let mut out = Vec::new();
    s.handle(12, Input::Timeout, &mut out);
    assert!(matches!(out[0], Effect::Persist(_)));
    assert!(matches!(
        out[1],
        Effect::Rpc {
            rpc: Rpc::Appended {
                seq: 1,
                duplicate: false,
                ..
            },
            ..
        }
    ));
    assert_eq!(s.durable().inbox_entries(), 1);
}

// A load while writes are buffered is answered only after the sync, from durable state:
// a crash before the sync must not leave a shard holding a sequence number it took back.
#[test]
fn a_load_waits_for_buffered_writes_and_reports_only_durable_state() {
    let mut s = Storage::new(StorageState::default());
    append(&mut s, 0, msg(1, 1));
    let mut out = Vec::new();
    let conv = ConvId::direct(UserId(1), UserId(2));
    let load = Rpc::LoadConv { conv };
    s.handle(
        1,
        Input::Rpc {
            from: Host::Shard(0),
            rpc: load.clone(),
        },
        &mut out,
    );
    assert!(out.is_empty(), "answered before the sync: {out:?}");
    s.handle(2, Input::Timeout, &mut out);
    assert!(out.iter().any(|e| matches!(
        e,
        Effect::Rpc {
            rpc: Rpc::ConvLoaded { last_seq: 1, .. },
            ..
        }
    )));
    // The same load, buffered, on a node that crashes before the sync: the successor
    // answers from what survived.
    let mut s = Storage::new(StorageState::default());
    append(&mut s, 0, msg(1, 1));
    let mut s = Storage::new(s.durable().clone());
    let mut out = Vec::new();
    s.handle(
        1,
        Input::Rpc {
            from: Host::Shard(0),
            rpc: load,
        },
        &mut out,
    );
    assert!(matches!(
        out[0],
        Effect::Rpc {
            rpc: Rpc::ConvLoaded { last_seq: 0, .. },
            ..
        }
    ));
}

// A retried append must not take a second sequence number, and a skipped one is refused.
#[test]
fn appends_are_idempotent_by_id_and_must_be_contiguous() {
    let mut s = Storage::new(StorageState::default());
    append(&mut s, 0, msg(1, 1));
    let mut out = Vec::new();
    s.handle(5, Input::Timeout, &mut out);
    let again = append(&mut s, 6, msg(2, 1));
    assert!(matches!(
        again[..],
        [
            Effect::Probe(Probe::StorageAppendIdempotent),
            Effect::Rpc {
                rpc: Rpc::Appended {
                    seq: 1,
                    duplicate: true,
                    ..
                },
                ..
            }
        ]
    ));
    let skipped = append(&mut s, 6, msg(3, 2));
    assert!(matches!(
        skipped[0],
        Effect::Rpc {
            rpc: Rpc::AppendConflict { last_seq: 1, .. },
            ..
        }
    ));
}

fn lease(
    s: &mut Storage,
    now: Millis,
    shard: u16,
    renew: Vec<(u16, u64)>,
    acquire: Vec<u16>,
) -> Vec<LeaseView> {
    let mut out = Vec::new();
    let rpc = Rpc::Lease {
        shard,
        renew,
        acquire,
    };
    let from = Host::Shard(shard);
    s.handle(now, Input::Rpc { from, rpc }, &mut out);
    s.handle(now + STORAGE_SYNC_MS, Input::Timeout, &mut out);
    out.into_iter()
        .find_map(|e| match e {
            Effect::Rpc {
                rpc: Rpc::LeaseTable { leases },
                ..
            } => Some(leases),
            _ => None,
        })
        .expect("a lease request is answered with the table")
}

fn fenced_append(s: &mut Storage, now: Millis, fence: (u16, u64), m: Message) -> Vec<Effect> {
    let mut out = append_under(s, now, fence, m, vec![]);
    s.handle(now + STORAGE_SYNC_MS, Input::Timeout, &mut out);
    out
}

/// Storage refused a write to slot 0 (and said so) because the slot is at epoch 2 now.
fn assert_fenced_at_epoch_2(out: &[Effect]) {
    assert!(
        matches!(
            out,
            [
                Effect::Probe(Probe::StorageFenceRefused),
                Effect::Rpc {
                    rpc: Rpc::Fenced { slot: 0, epoch: 2 },
                    ..
                }
            ]
        ),
        "{out:?}"
    );
}

// A slot goes to its home shard first; nobody else may take it while the lease lives;
// once it runs out another shard takes it under a higher epoch, and the old owner's
// writes are refused from then on: a zombie cannot get a sequence number accepted.
#[test]
fn leases_pass_on_expiry_and_fence_out_the_old_owner() {
    let mut s = Storage::new(StorageState::default());
    let t = lease(&mut s, 0, 1, vec![], vec![0]);
    assert!(
        t.is_empty(),
        "only the home shard takes an unheld slot: {t:?}"
    );
    let t = lease(&mut s, 0, 0, vec![], vec![0]);
    assert_eq!((t[0].owner, t[0].epoch, t[0].live), (0, 1, true));
    let t = lease(&mut s, 10, 1, vec![], vec![0]);
    assert_eq!(t[0].owner, 0, "a live lease is not taken");
    assert!(matches!(
        fenced_append(&mut s, 20, (0, 1), msg(1, 1))[..],
        [
            Effect::Persist(_),
            Effect::Rpc {
                rpc: Rpc::Appended { .. },
                ..
            }
        ]
    ));
    let late = 20 + SHARD_LEASE_MS;
    let t = lease(&mut s, late, 1, vec![], vec![0]);
    assert_eq!((t[0].owner, t[0].epoch), (1, 2));
    let out = fenced_append(&mut s, late + 10, (0, 1), msg(2, 2));
    assert_fenced_at_epoch_2(&out);
    // The old owner's renewal fails too.
    let t = lease(&mut s, late + 20, 0, vec![(0, 1)], vec![]);
    assert_eq!((t[0].owner, t[0].epoch), (1, 2));
    assert_eq!(s.durable().last_seq(msg(1, 1).conv), 1);
}

// A receipt is written under its shard's fence too: stored by an old owner after the new
// one swept the slot's queued receipts, it would be pushed by nobody until the sender's next
// drain (shard-crash-after-persist seed 400703: ✓✓ never came to a sender online to the end).
#[test]
fn a_receipt_from_a_shard_whose_slot_was_taken_over_is_refused() {
    let mut s = Storage::new(StorageState::default());
    lease(&mut s, 0, 0, vec![], vec![0]);
    let late = SHARD_LEASE_MS + 10;
    let t = lease(&mut s, late, 1, vec![], vec![0]);
    assert_eq!((t[0].owner, t[0].epoch), (1, 2));
    let sender = DeviceId::primary(UserId(0));
    // Shard `from` writes a receipt under `fence` at `t`; what storage answered, once synced.
    let put = |s: &mut Storage, t: Millis, from: u16, fence: (u16, u64)| {
        let rpc = Rpc::PutReceipt {
            fence,
            receipt: Receipt {
                conv: ConvId::direct(UserId(0), UserId(1)),
                reader: DeviceId::primary(UserId(1)),
                kind: ReceiptKind::Delivered,
                upto: 1,
            },
            notify: vec![sender],
            via: 0,
        };
        let mut out = Vec::new();
        let from = Host::Shard(from);
        s.handle(t, Input::Rpc { from, rpc }, &mut out);
        s.handle(t + STORAGE_SYNC_MS, Input::Timeout, &mut out);
        out
    };
    assert_fenced_at_epoch_2(&put(&mut s, late + 1, 0, (0, 1)));
    assert_eq!(s.durable().receipts_queued(), 0);
    // The new owner's write goes in.
    let out = put(&mut s, late + 50, 1, (0, 2));
    assert_eq!(s.durable().receipts_queued(), 1, "{out:?}");
}

// A renewal is of one life's lease: a late renewal from a shard's earlier life (its epoch
// since raised by the shard's own re-acquisition) renews nothing, and above all does not put
// the old epoch back, which would let that life's fenced writes in again. (Storage `on_lease`,
// `&&` to `||` in "owned by the asker under the epoch it names": a mutant that survived the
// mutation sample.)
#[test]
fn a_late_renewal_of_an_earlier_life_keeps_the_newer_epoch() {
    let mut s = Storage::new(StorageState::default());
    let first = lease(&mut s, 0, 0, vec![], vec![0])[0].epoch;
    let second = lease(&mut s, 100, 0, vec![], vec![0])[0].epoch;
    assert!(
        second > first,
        "a new life takes the slot under a new epoch"
    );
    let t = lease(&mut s, 200, 0, vec![(0, first)], vec![]);
    assert_eq!((t[0].owner, t[0].epoch), (0, second));
}

// With `unfenced-failover` the same stale write lands, over the number's rightful owner.
#[test]
fn without_the_fence_a_stale_write_overwrites() {
    let bugs: Bugs = [Bug::UnfencedFailover].into_iter().collect();
    let topo = Deployment {
        bugs,
        ..Deployment::default()
    };
    let mut s = Storage::configured(StorageState::default(), &topo);
    lease(&mut s, 0, 0, vec![], vec![0]);
    fenced_append(&mut s, 10, (0, 1), msg(1, 1));
    lease(&mut s, 10 + SHARD_LEASE_MS, 1, vec![], vec![0]);
    let mut stale = msg(1, 2);
    stale.body = b"zombie".to_vec();
    let out = fenced_append(&mut s, 20 + SHARD_LEASE_MS, (0, 1), stale);
    assert!(out.iter().any(|e| matches!(
        e,
        Effect::Rpc {
            rpc: Rpc::Appended { .. },
            ..
        }
    )));
    let conv = msg(1, 1).conv;
    assert_eq!(s.durable().logs[&conv][&1].body, b"zombie");
}

// A sender in a big group has two receipts queued per member: a drain hands out a page of
// them and says more are queued, and once those are seen the next drain hands out the rest.
#[test]
fn queued_receipts_come_a_page_per_drain_and_say_when_more_remain() {
    let mut s = Storage::new(StorageState::default());
    let sender = DeviceId::primary(UserId(0));
    let conv = ConvId::group(1);
    let readers = RECEIPTS_PAGE_ENTRIES_MAX as u32 + 44;
    let t = lease(&mut s, 0, 0, vec![], vec![0]);
    let fence = (t[0].slot, t[0].epoch);
    for u in 1..=readers {
        let receipt = Receipt {
            conv,
            reader: DeviceId::primary(UserId(u)),
            kind: ReceiptKind::Delivered,
            upto: 1,
        };
        let rpc = Rpc::PutReceipt {
            fence,
            receipt,
            notify: vec![sender],
            via: 0,
        };
        let mut out = Vec::new();
        s.handle(
            0,
            Input::Rpc {
                from: Host::Shard(0),
                rpc,
            },
            &mut out,
        );
    }
    s.handle(STORAGE_SYNC_MS, Input::Timeout, &mut Vec::new());
    let drain = |s: &mut Storage| {
        let mut out = Vec::new();
        let rpc = Rpc::ReadInbox {
            req: 1,
            device: sender,
            after: None,
            limit: 32,
        };
        s.handle(
            10,
            Input::Rpc {
                from: Host::Shard(0),
                rpc,
            },
            &mut out,
        );
        match out.pop() {
            Some(Effect::Rpc {
                rpc:
                    Rpc::InboxPage {
                        receipts,
                        receipts_more,
                        ..
                    },
                ..
            }) => (receipts, receipts_more),
            other => panic!("a drain is answered with a page: {other:?}"),
        }
    };
    let (first, more) = drain(&mut s);
    assert_eq!((first.len(), more), (RECEIPTS_PAGE_ENTRIES_MAX, true));
    for receipt in first {
        let rpc = Rpc::ReceiptSeen {
            device: sender,
            receipts: vec![receipt],
        };
        s.handle(
            20,
            Input::Rpc {
                from: Host::Shard(0),
                rpc,
            },
            &mut Vec::new(),
        );
    }
    s.handle(20 + STORAGE_SYNC_MS, Input::Timeout, &mut Vec::new());
    let (rest, more) = drain(&mut s);
    assert_eq!((rest.len(), more), (44, false));
}

#[test]
fn a_delivered_mark_deletes_the_readers_entries_up_to_it_even_if_acks_were_lost() {
    let mut st = StorageState::default();
    let reader = DeviceId::primary(UserId(2));
    for seq in 1..=3 {
        st.apply(&StorageOp::Append {
            msg: msg(seq, seq as u32),
            recipients: vec![reader],
            fanout: vec![],
            park: true,
        });
    }
    assert_eq!(st.inbox_entries(), 3);
    let conv = msg(1, 1).conv;
    let mark = |kind, upto| StorageOp::Receipt {
        receipt: Receipt {
            conv,
            reader,
            kind,
            upto,
        },
        notify: vec![],
    };
    // A read mark says nothing about what is on the device's disk; a delivered one does.
    st.apply(&mark(ReceiptKind::Read, 3));
    assert_eq!(st.inbox_entries(), 3);
    st.apply(&mark(ReceiptKind::Delivered, 2));
    assert_eq!(st.inbox_list(), vec![(reader, conv, 3)]);
}

// A full disk refuses what would add data (nothing kept, nothing answered: the shard retries),
// lets deletes through, and takes the same write once there is room; a slow disk holds every
// answer until its long sync.
#[test]
fn a_full_disk_refuses_appends_until_room_and_a_slow_one_delays_the_ack() {
    let mut s = Storage::new(StorageState::default());
    let mut out = Vec::new();
    s.handle(0, Input::Disk(Disk::Full), &mut out);
    let refused = append(&mut s, 10, msg(1, 1));
    assert_eq!(refused, vec![Effect::Probe(Probe::StorageDiskFull)]);
    assert_eq!(s.poll_timeout(), None, "a refused write arms no sync");
    let device = DeviceId::primary(UserId(2));
    let conv = ConvId::direct(UserId(1), UserId(2));
    let mut out = Vec::new();
    let delete = Rpc::DeleteInbox {
        device,
        conv,
        seq: 1,
    };
    s.handle(
        11,
        Input::Rpc {
            from: Host::Shard(0),
            rpc: delete,
        },
        &mut out,
    );
    assert_eq!(
        s.poll_timeout(),
        Some(11 + STORAGE_SYNC_MS),
        "a delete still goes to disk"
    );
    s.handle(11 + STORAGE_SYNC_MS, Input::Timeout, &mut Vec::new());

    // Room again, and the disk slows: the retried append is kept, answered only after 300 ms.
    s.handle(
        20,
        Input::Disk(Disk::Slow(DISK_SLOW_SYNC_MS)),
        &mut Vec::new(),
    );
    let slowed = append(&mut s, 20, msg(1, 1));
    assert_eq!(slowed, vec![Effect::Probe(Probe::StorageSyncSlowed)]);
    assert_eq!(s.poll_timeout(), Some(20 + DISK_SLOW_SYNC_MS));
    let mut out = Vec::new();
    s.handle(20 + DISK_SLOW_SYNC_MS, Input::Timeout, &mut out);
    assert!(out.iter().any(|e| matches!(
        e,
        Effect::Rpc {
            rpc: Rpc::Appended { .. },
            ..
        }
    )));
    assert_eq!(s.durable().messages(), 1);
}
