//! The replication coordinator: a [`Storage`] built with [`Storage::replicated`] keeps its view
//! in memory and has each operation synced by a quorum of replicas before it is applied and
//! answered; after a (re)start it rebuilds the view from a quorum's operations, writes again
//! what too few of them had, and opens a higher term before serving.
//!
//! Every method here runs only on a coordinator (`repl` is set), hence their `expect`s: the
//! dispatch in `mod.rs` calls them only then.

use super::{Buffered, Storage, StorageState};
use crate::bugs::Bug;
use crate::limits::{READ_OPS_RETRY_MS, REPLICATE_RETRY_MS};
use crate::probe::Probe;
use crate::proto::{Host, Millis, OpId, Rpc, StorageOp, TermSpan};
use crate::{Deployment, Effect};
use std::collections::{BTreeMap, BTreeSet};

/// A coordinator's dealings with its replicas.
#[derive(Clone, Debug, Hash)]
pub(super) struct Replication {
    /// Replicas behind this coordinator, numbered from 0.
    pub(super) replicas: u16,
    /// This life's boot number (the engine counts the coordinator's starts).
    pub(super) boot: u64,
    /// Acknowledgements that make a write durable, and answers that make a rebuild complete
    /// (a majority: any two majorities share a replica).
    pub(super) quorum: usize,
    /// The term operations are sent under (0 until the rebuild opens one).
    pub(super) term: u64,
    /// The counter of the last operation sent in this term.
    pub(super) next: u64,
    /// When operations last went out: the next send waits until a replica sync delay after
    /// it, so one frame carries what a replica would have synced together anyway.
    pub(super) last_send: Option<Millis>,
    /// Leading buffer entries already sent out.
    pub(super) sent: usize,
    /// Replicas that acknowledged each operation in flight.
    pub(super) acks: BTreeMap<OpId, BTreeSet<u16>>,
    /// When to resend what is unacknowledged (or re-ask a rebuild's read), if anything is.
    pub(super) retry_at: Option<Millis>,
    /// Set while the view is being rebuilt; requests wait in `deferred` meanwhile.
    pub(super) rebuild: Option<Rebuild>,
    /// Requests that came while rebuilding, served in order once the view is ready.
    pub(super) deferred: Vec<(Host, Rpc)>,
}

/// A term is (round << TERM_BOOT_BITS) | boot number: rounds order terms, boot numbers keep
/// two lives that picked the same round apart.
const TERM_BOOT_BITS: u32 = 20;
const TERM_BOOT_MASK: u64 = (1 << TERM_BOOT_BITS) - 1;

/// One replica's answers to a rebuild's read.
#[derive(Clone, Debug, Hash, Default)]
pub(super) struct ReplicaRead {
    /// The operations it has sent so far, in its order.
    pub(super) ops: Vec<(OpId, StorageOp)>,
    /// Where its last page ended.
    pub(super) last: Option<OpId>,
    /// Its last page said there is no more.
    pub(super) done: bool,
}

/// Rebuilding the view after a (re)start: read every operation from a quorum of replicas,
/// then make sure what was read is on a quorum before serving from it.
#[derive(Clone, Debug, Hash, Default)]
pub(super) struct Rebuild {
    /// Per replica: what it has answered so far.
    pub(super) read: BTreeMap<u16, ReplicaRead>,
    /// Phase two: operations being written again (read from fewer than a quorum, and the new
    /// term's opening), with who acknowledged them.
    pub(super) repair: BTreeMap<OpId, (StorageOp, BTreeSet<u16>)>,
    /// The view the read produced, served once the repair is done.
    pub(super) view: Option<StorageState>,
}

impl Storage {
    /// A coordinator in front of `topo.replicas` replicas: it starts empty, rebuilds its view
    /// from them, and acknowledges a write once a quorum has synced it.
    pub fn replicated(topo: &Deployment, boot: u64) -> Storage {
        let quorum = if topo.bugs.has(Bug::QuorumOfOne) {
            1
        } else {
            usize::from(topo.replicas) / 2 + 1
        };
        Storage {
            repl: Some(Replication {
                replicas: topo.replicas,
                boot,
                quorum,
                term: 0,
                next: 0,
                last_send: None,
                sent: 0,
                acks: BTreeMap::new(),
                retry_at: Some(0),
                rebuild: Some(Rebuild::default()),
                deferred: Vec::new(),
            }),
            ..Storage::configured(StorageState::new(topo.storage_model), topo)
        }
    }

    /// Send the buffer's new operations to every replica, each under the next id, all in one
    /// frame per replica (split only past the page size).
    pub(super) fn send_out(&mut self, now: Millis, out: &mut Vec<Effect>) {
        let page_bytes = self.knobs.ops_page_bytes;
        let repl = self.repl.as_mut().expect("only a coordinator sends out");
        let mut batch = Vec::new();
        let len = self.buffer.len();
        for b in &mut self.buffer[repl.sent..] {
            if let Some(op) = &b.op {
                repl.next += 1;
                let id = OpId {
                    term: repl.term,
                    n: repl.next,
                };
                b.id = Some(id);
                let reused = repl.acks.insert(id, BTreeSet::new());
                // The counter only rises within a term, and a term is opened once per life.
                assert!(reused.is_none(), "operation id {id:?} sent out twice");
                batch.push((id, op));
            }
        }
        repl.sent = len;
        if batch.is_empty() {
            return;
        }
        repl.last_send = Some(now);
        for r in 0..repl.replicas {
            replicate(Host::Replica(r), &batch, page_bytes, out);
        }
        repl.retry_at.get_or_insert(now + REPLICATE_RETRY_MS);
    }

    /// Apply and answer, in order, every leading buffered entry a quorum has: the view (and
    /// so every read) only ever holds what a quorum has synced.
    pub(super) fn commit(&mut self, out: &mut Vec<Effect>) {
        let repl = self.repl.as_mut().expect("only a coordinator commits");
        let ready = self.buffer[..repl.sent]
            .iter()
            .take_while(|b| {
                b.id.is_none_or(|id| repl.acks.get(&id).is_some_and(|a| a.len() >= repl.quorum))
            })
            .count();
        if ready == 0 {
            return;
        }
        repl.sent -= ready;
        let done: Vec<Buffered> = self.buffer.drain(..ready).collect();
        for id in done.iter().filter_map(|b| b.id) {
            repl.acks.remove(&id);
        }
        if repl.acks.is_empty() {
            repl.retry_at = None;
        }
        let mut ops = Vec::new();
        let mut replies = Vec::new();
        for b in done {
            if let Some(op) = b.op {
                self.durable.apply(&op);
                ops.push(op);
            }
            replies.extend(b.reply);
            if let Some((to, conv)) = b.load {
                replies.push((to, self.conv_loaded(conv)));
            }
        }
        if !ops.is_empty() {
            out.push(Effect::Persist(ops));
        }
        for (to, rpc) in replies {
            out.push(Effect::Rpc { to, rpc });
        }
    }

    /// What a replica says, to a coordinator.
    pub(super) fn on_replica(&mut self, now: Millis, r: u16, rpc: Rpc, out: &mut Vec<Effect>) {
        let repl = self
            .repl
            .as_mut()
            .expect("only a coordinator hears replicas");
        match rpc {
            Rpc::Replicated { ids } => {
                if let Some(rb) = repl.rebuild.as_mut() {
                    for id in ids {
                        if let Some((_, acks)) = rb.repair.get_mut(&id) {
                            acks.insert(r);
                        }
                    }
                    return self.finish_repair(now, out);
                }
                for id in ids {
                    if let Some(acks) = repl.acks.get_mut(&id) {
                        acks.insert(r);
                    }
                }
                self.commit(out);
            }
            Rpc::Ops { after, ops, more } => {
                let Some(rb) = repl.rebuild.as_mut() else {
                    return;
                };
                if rb.view.is_some() {
                    return; // The read is over.
                }
                let entry = rb.read.entry(r).or_default();
                // Only the continuation we asked for: a retried request can bring a page twice,
                // or an old one late.
                if entry.done || after != entry.last {
                    return;
                }
                if let Some((id, _)) = ops.last() {
                    entry.last = Some(*id);
                }
                entry.ops.extend(ops);
                if more {
                    let after = entry.last;
                    out.push(Effect::Rpc {
                        to: Host::Replica(r),
                        rpc: Rpc::ReadOps { after },
                    });
                } else {
                    entry.done = true;
                    self.finish_read(now, out);
                }
            }
            Rpc::ReplicaUp => {
                if let Some(rb) = repl.rebuild.as_mut() {
                    if rb.view.is_none() {
                        // What it answered before is still good (pages hold synced operations
                        // only, which a crash keeps); the question it had may be lost.
                        let e = rb.read.entry(r).or_default();
                        if !e.done {
                            out.push(Effect::Rpc {
                                to: Host::Replica(r),
                                rpc: Rpc::ReadOps { after: e.last },
                            });
                        }
                    }
                }
                self.resend(Some(r), out);
            }
            // A replica sends only the three above; anything else from one is a confused
            // peer, and must not crash the coordinator.
            Rpc::Register { .. }
            | Rpc::Registered { .. }
            | Rpc::Unregister { .. }
            | Rpc::Subscribe { .. }
            | Rpc::Notify { .. }
            | Rpc::Wake
            | Rpc::Alive { .. }
            | Rpc::Lookup { .. }
            | Rpc::Located { .. }
            | Rpc::FromDevice { .. }
            | Rpc::ToDevice { .. }
            | Rpc::NotHere { .. }
            | Rpc::LoadConv { .. }
            | Rpc::ConvLoaded { .. }
            | Rpc::Lease { .. }
            | Rpc::LeaseTable { .. }
            | Rpc::Owner { .. }
            | Rpc::Fenced { .. }
            | Rpc::Append { .. }
            | Rpc::FanoutStep { .. }
            | Rpc::FanoutStepped { .. }
            | Rpc::ReadFanouts { .. }
            | Rpc::Fanouts { .. }
            | Rpc::FindMsg { .. }
            | Rpc::MsgFound { .. }
            | Rpc::Appended { .. }
            | Rpc::AppendConflict { .. }
            | Rpc::ReadInbox { .. }
            | Rpc::InboxPage { .. }
            | Rpc::PutReceipt { .. }
            | Rpc::ReceiptStored { .. }
            | Rpc::ReadQueuedReceipts { .. }
            | Rpc::QueuedReceipts { .. }
            | Rpc::ReceiptSeen { .. }
            | Rpc::DeleteInbox { .. }
            | Rpc::ReadPending { .. }
            | Rpc::PendingPage { .. }
            | Rpc::ReadLog { .. }
            | Rpc::LogRange { .. }
            | Rpc::Link { .. }
            | Rpc::Linked { .. }
            | Rpc::StaleDevices { .. }
            | Rpc::Replicate { .. }
            | Rpc::ReadOps { .. } => {}
        }
    }

    /// Send again what `only` (or every replica) has not acknowledged, in one frame per
    /// replica (split only past the page size).
    pub(super) fn resend(&self, only: Option<u16>, out: &mut Vec<Effect>) {
        let repl = self.repl.as_ref().expect("only a coordinator resends");
        let pending: Vec<(OpId, &StorageOp, &BTreeSet<u16>)> = match &repl.rebuild {
            Some(rb) => rb
                .repair
                .iter()
                .map(|(id, (op, acks))| (*id, op, acks))
                .collect(),
            None => self.buffer[..repl.sent]
                .iter()
                .filter_map(|b| {
                    let (id, op) = (b.id?, b.op.as_ref()?);
                    Some((id, op, repl.acks.get(&id)?))
                })
                .collect(),
        };
        let mut resent = false;
        for r in (0..repl.replicas).filter(|r| only.is_none_or(|o| o == *r)) {
            let batch: Vec<(OpId, &StorageOp)> = pending
                .iter()
                .filter(|(_, _, acks)| !acks.contains(&r))
                .map(|(id, op, _)| (*id, *op))
                .collect();
            resent |= !batch.is_empty();
            replicate(Host::Replica(r), &batch, self.knobs.ops_page_bytes, out);
        }
        if resent && repl.rebuild.is_none() {
            out.push(Effect::Probe(Probe::CoordinatorResent));
        }
    }

    /// A quorum of replicas has been read through: rebuild the view from what they hold
    /// together, in id order, and write again what fewer than a quorum of them had (it may
    /// have been acknowledged to nobody, but it is served from now on, so it must survive the
    /// next rebuild too), along with the opening of a new, higher term.
    pub(super) fn finish_read(&mut self, now: Millis, out: &mut Vec<Effect>) {
        let model = self.model();
        let repl = self.repl.as_mut().expect("only a coordinator rebuilds");
        let rb = repl.rebuild.as_mut().expect("called while rebuilding");
        let done: Vec<u16> = rb
            .read
            .iter()
            .filter(|(_, e)| e.done)
            .map(|(r, _)| *r)
            .collect();
        if done.len() < repl.quorum {
            return;
        }
        let mut union: BTreeMap<OpId, (StorageOp, usize)> = BTreeMap::new();
        for r in &done {
            for (id, op) in std::mem::take(&mut rb.read.get_mut(r).expect("listed").ops) {
                union.entry(id).or_insert((op, 0)).1 += 1;
            }
        }
        // The latest term opening read says which operations of earlier terms were served;
        // any other was synced on a minority and never served (an earlier rebuild did not read
        // it), so serving it now would change history behind a later term's back.
        let latest = union.iter().rev().find_map(|(id, (op, _))| match op {
            StorageOp::Term { live, .. } => Some((id.term, live.clone())),
            _ => None,
        });
        if let Some((last_term, live)) = latest {
            union.retain(|id, _| id.term >= last_term || TermSpan::keeps(&live, *id));
        }
        let mut view = StorageState::new(model);
        union.values().for_each(|(op, _)| view.apply(op));
        // A higher term than any read, made unique by this life's boot number: a life that
        // died before its opening reached a majority may have used the next term on a replica
        // not read now, and two different openings under one id would be told apart by which
        // replica answered first.
        let highest = union
            .keys()
            .map(|id| id.term >> TERM_BOOT_BITS)
            .max()
            .unwrap_or(0);
        let term = ((highest + 1) << TERM_BOOT_BITS) | (repl.boot & TERM_BOOT_MASK);
        // A life rebuilds once, from term 0, and the new round is at least one.
        assert!(term > repl.term, "a coordinator's term only rises");
        repl.term = term;
        repl.next = 0;
        let live = TermSpan::cover(union.keys().copied());
        rb.repair = union
            .into_iter()
            .filter(|(_, (_, n))| *n < repl.quorum)
            .map(|(id, (op, _))| (id, (op, BTreeSet::new())))
            .collect();
        if !rb.repair.is_empty() {
            out.push(Effect::Probe(Probe::CoordinatorRepaired));
        }
        rb.repair.insert(
            OpId { term, n: 0 },
            (StorageOp::Term { term, live }, BTreeSet::new()),
        );
        rb.view = Some(view);
        self.resend(None, out);
        if let Some(repl) = self.repl.as_mut() {
            repl.retry_at = Some(now + REPLICATE_RETRY_MS);
        }
    }

    /// Serve once every repaired operation is on a quorum.
    pub(super) fn finish_repair(&mut self, now: Millis, out: &mut Vec<Effect>) {
        let repl = self.repl.as_mut().expect("only a coordinator rebuilds");
        let rb = repl.rebuild.as_ref().expect("called while rebuilding");
        if rb.view.is_none() || rb.repair.values().any(|(_, a)| a.len() < repl.quorum) {
            return;
        }
        let rb = repl.rebuild.take().expect("checked above");
        out.push(Effect::Probe(Probe::CoordinatorRebuilt));
        repl.retry_at = None;
        self.durable = rb.view.expect("checked above");
        out.push(Effect::Rebuilt(Box::new(self.durable.clone())));
        let deferred = std::mem::take(&mut repl.deferred);
        for (from, rpc) in deferred {
            self.on_rpc(now, from, rpc, out);
        }
    }

    /// The retry timer: ask replicas that have not answered a rebuild's read again, and send
    /// again what replicas have not acknowledged.
    pub(super) fn on_retry(&mut self, now: Millis, out: &mut Vec<Effect>) {
        let repl = self.repl.as_mut().expect("only a coordinator retries");
        repl.retry_at = None;
        if let Some(rb) = repl.rebuild.as_mut() {
            if rb.view.is_none() {
                for r in 0..repl.replicas {
                    let e = rb.read.entry(r).or_default();
                    if !e.done {
                        out.push(Effect::Rpc {
                            to: Host::Replica(r),
                            rpc: Rpc::ReadOps { after: e.last },
                        });
                    }
                }
                repl.retry_at = Some(now + READ_OPS_RETRY_MS);
                return;
            }
            repl.retry_at = Some(now + REPLICATE_RETRY_MS);
        } else if !repl.acks.is_empty() {
            repl.retry_at = Some(now + REPLICATE_RETRY_MS);
        }
        self.resend(None, out);
    }
}

/// Send `batch` to replica `to` in as few frames as the page size allows (at least one
/// operation a frame, so an operation bigger than a page still goes).
fn replicate(to: Host, batch: &[(OpId, &StorageOp)], page_bytes: usize, out: &mut Vec<Effect>) {
    let mut frame: Vec<(OpId, StorageOp)> = Vec::new();
    let mut bytes = 0;
    for (id, op) in batch {
        let size = op.approx_bytes();
        if !frame.is_empty() && bytes + size > page_bytes {
            let ops = std::mem::take(&mut frame);
            out.push(Effect::Rpc {
                to,
                rpc: Rpc::Replicate { ops },
            });
            bytes = 0;
        }
        bytes += size;
        frame.push((*id, StorageOp::clone(op)));
    }
    if !frame.is_empty() {
        out.push(Effect::Rpc {
            to,
            rpc: Rpc::Replicate { ops: frame },
        });
    }
}
