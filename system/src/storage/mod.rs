//! Storage: conversation logs (clustered by sequence number), per-device inboxes, group
//! membership history, and the durable queue of group fan-out jobs.
//!
//! Fault model: a crash loses every write not yet synced. Writes collect in a buffer and are
//! synced together [`crate::limits::STORAGE_SYNC_MS`] (the run's knob) after the first one (group commit); only then are they
//! acknowledged and handed to the engine as [`Effect::Persist`], which keeps them outside the
//! node. Reads see synced data only, so nobody can observe a write a crash could still undo.
//! Appends are idempotent by message id and must carry the next sequence number.
//!
//! A group message is appended with its fan-out job (the devices it must reach, fixed by the
//! membership when its sequence number was assigned); the shard then works the job off step by
//! step, each step parking inbox entries and moving the job's cursor in one durable write, so a
//! crashed shard's successor resumes where the cursor stands.
//!
//! It also keeps each reader's receipt marks and, per sender device, the receipts it has not
//! seen yet (one entry per reader and kind, so repeats coalesce); and the shard slot leases,
//! deciding takeovers against its own clock and refusing appends and fan-out steps under a
//! stale epoch (the fence that keeps a paused shard's late writes out).
//!
//! With replicas ([`Storage::replicated`]), this node keeps nothing itself: it is the
//! coordinator in front of `Deployment::replicas` [`crate::replica`]s, making the decisions
//! above against its in-memory view. Each operation goes to every replica under an [`OpId`]
//! (term, counter), and is acknowledged (and applied to the view, so read) once a majority has
//! synced it. A restarted coordinator reads every operation from a majority, applies their
//! union in id order, writes again what fewer than a majority of those had, and opens a
//! higher term before serving; requests wait meanwhile. A majority write and a majority read
//! always share a replica, so nothing acknowledged is missing from a rebuilt view.
//!
//! Inputs: `Rpc` (`LoadConv`, `Append`, `FanoutStep`, `ReadFanouts`, `FindMsg`, `ReadInbox`,
//! `ReadLog`, `ReadPending`, `DeleteInbox`, `PutReceipt`, `ReceiptSeen`, `ReadQueuedReceipts`,
//! `Lease`; from replicas `Replicated`, `Ops`, `ReplicaUp`) and `Timeout` (the sync, the
//! replication retry). Outputs: `Rpc` answers, `Persist` and `Rebuilt`.
//!
//! The node is split by concern: this file holds its state, the write buffer, the sync and the
//! request dispatch; `state` the durable data model ([`StorageState`]); `reads` the paged
//! reads; `lease` the shard slot leases and the fence; `coordinator` the replication mode.
//! The coordinator is still a mode of [`Storage`] (its `repl` field), not a type of its own:
//! it shares the node's buffer and view, and taking it apart is left for a change that may
//! alter behaviour.

mod coordinator;
mod lease;
mod reads;
mod rows;
mod state;
#[cfg(test)]
mod tests;

pub use self::rows::{touched, RowChange, StorageRest, TableRows};
pub use self::state::StorageState;

use self::coordinator::Replication;
use crate::bugs::Bug;
use crate::knobs::Knobs;
use crate::limits::FANOUT_JOBS_PAGE_MAX;
use crate::probe::Probe;
use crate::proto::{ConvId, DeviceId, Host, Millis, MsgId, OpId, Receipt, Rpc, Seq, StorageOp};
use crate::routing::shard_for_conv;
use crate::Deployment;
use crate::{Disk, Effect, Input, Machine, StorageModel};

/// A request waiting in the buffer for the sync (a coordinator: for a quorum).
#[derive(Clone, Debug, Hash)]
struct Buffered {
    /// The durable change, if the request makes one.
    op: Option<StorageOp>,
    /// The answer, sent only once `op` (and everything before it) is durable.
    reply: Option<(Host, Rpc)>,
    /// A conversation to load for this host once the buffer is durable.
    load: Option<(Host, ConvId)>,
    /// With replicas: the id the operation was sent out under (`None`: not sent yet, or no
    /// operation).
    id: Option<OpId>,
}

/// A storage node.
#[derive(Clone, Debug, Hash)]
pub struct Storage {
    /// What is synced (a coordinator: what a quorum has); every read is served from this.
    durable: StorageState,
    /// Writes and answers waiting for the sync (a coordinator: for a quorum), in order.
    buffer: Vec<Buffered>,
    /// When the buffer is synced (a coordinator: sent out), if anything waits.
    sync_at: Option<Millis>,
    /// Only with `unfenced-failover`: any shard's append is a blind put at its sequence number.
    unfenced: bool,
    /// The run's knobs: the group-commit delay and the receipts page.
    knobs: Knobs,
    /// What the disk does now (the world says).
    disk: Disk,
    /// Probes reached where no effect list is at hand (the buffer), handed out at the end of
    /// the input.
    probes_due: Vec<Probe>,
    /// With replicas: this node keeps nothing itself and coordinates them.
    repl: Option<Replication>,
    /// Only with `stale-device-list`: no check that a message has every linked device's copy.
    any_devices: bool,
    /// Only with `dedup-by-user`: a retry is recognised by user and counter alone.
    dedup_by_user: bool,
    /// Only with `group-log-to-anyone`: a group's log is read out to members and strangers
    /// alike.
    group_log_to_anyone: bool,
}

impl Storage {
    /// A node recovering `durable` (empty on first boot).
    pub fn new(durable: StorageState) -> Storage {
        Storage {
            durable,
            buffer: Vec::new(),
            sync_at: None,
            unfenced: false,
            knobs: Knobs::default(),
            disk: Disk::Healthy,
            probes_due: Vec::new(),
            repl: None,
            any_devices: false,
            dedup_by_user: false,
            group_log_to_anyone: false,
        }
    }

    fn model(&self) -> StorageModel {
        if self.durable.relay {
            StorageModel::Relay
        } else {
            StorageModel::History
        }
    }

    /// Whether it is serving (a coordinator is not while it rebuilds its view).
    pub fn serving(&self) -> bool {
        self.repl.as_ref().is_none_or(|r| r.rebuild.is_none())
    }

    /// The same, with the deployment's knobs and the bug-zoo switches that concern storage.
    pub fn configured(mut durable: StorageState, topo: &Deployment) -> Storage {
        let bugs = &topo.bugs;
        if bugs.has(Bug::DedupIndexNotRecovered) {
            durable.ids.clear();
        }
        Storage {
            unfenced: bugs.has(Bug::UnfencedFailover),
            any_devices: bugs.has(Bug::StaleDeviceList),
            dedup_by_user: bugs.has(Bug::DedupByUser),
            group_log_to_anyone: bugs.has(Bug::GroupLogToAnyone),
            knobs: topo.knobs,
            ..Storage::new(durable)
        }
    }

    /// What a crash would keep right now.
    pub fn durable(&self) -> &StorageState {
        &self.durable
    }

    fn buffer(&mut self, now: Millis, op: Option<StorageOp>, reply: Option<(Host, Rpc)>) {
        if self.disk == Disk::Full && op.as_ref().is_some_and(StorageOp::grows) {
            // Refused, as ENOSPC: nothing kept, nothing answered; the writer retries.
            self.probes_due.push(Probe::StorageDiskFull);
            return;
        }
        self.buffer.push(Buffered {
            op,
            reply,
            load: None,
            id: None,
        });
        self.arm_sync(now);
    }

    /// A single node syncs a little later, with whatever else came meanwhile (group commit).
    /// A coordinator sends at once after a quiet spell, else one sync delay after its last
    /// send: a replica syncs at most once per delay anyway, so gathering what comes meanwhile
    /// into one frame costs a write at most that delay and saves a frame per operation per
    /// replica under load (a third of all frames on the reference world).
    fn arm_sync(&mut self, now: Millis) {
        if let Some(repl) = &self.repl {
            let at = repl
                .last_send
                .map_or(now, |t| now.max(t + self.knobs.storage_sync_ms));
            self.sync_at.get_or_insert(at);
            return;
        }
        let delay = if let Disk::Slow(ms) = self.disk {
            if self.sync_at.is_none() {
                self.probes_due.push(Probe::StorageSyncSlowed);
            }
            ms
        } else {
            self.knobs.storage_sync_ms
        };
        self.sync_at.get_or_insert(now + delay);
    }

    fn buffered_append(&self, id: MsgId) -> Option<Seq> {
        self.buffer.iter().find_map(|b| match &b.op {
            Some(StorageOp::Append { msg, .. }) if msg.id == id => Some(msg.seq),
            _ => None,
        })
    }

    fn last_seq_incl_buffer(&self, conv: ConvId) -> Seq {
        let buffered = self.buffer.iter().filter_map(|b| match &b.op {
            Some(StorageOp::Append { msg, .. }) if msg.conv == conv => Some(msg.seq),
            _ => None,
        });
        buffered.fold(self.durable.last_seq(conv), Seq::max)
    }

    fn conv_loaded(&self, conv: ConvId) -> Rpc {
        Rpc::ConvLoaded {
            conv,
            last_seq: self.durable.last_seq(conv),
            members: self.durable.members(conv),
        }
    }

    fn sync(&mut self, now: Millis, out: &mut Vec<Effect>) {
        self.sync_at = None;
        if self.repl.is_some() {
            self.send_out(now, out);
            return self.commit(out);
        }
        let buffer = std::mem::take(&mut self.buffer);
        let mut ops = Vec::new();
        let mut replies = Vec::new();
        let mut loads = Vec::new();
        let outstanding = self.durable.outstanding_texts();
        for b in buffer {
            if let Some(op) = b.op {
                self.durable.apply(&op);
                ops.push(op);
            }
            replies.extend(b.reply);
            loads.extend(b.load);
        }
        if self.durable.outstanding_texts() < outstanding {
            out.push(Effect::Probe(Probe::StorageRelayBodyDeleted));
        }
        // Loads answer from what is now durable: never a membership or a last sequence
        // number that a crash could still take back.
        for (to, conv) in loads {
            replies.push((to, self.conv_loaded(conv)));
        }
        if !ops.is_empty() {
            out.push(Effect::Persist(ops));
        }
        for (to, rpc) in replies {
            out.push(Effect::Rpc { to, rpc });
        }
    }

    fn on_rpc(&mut self, now: Millis, from: Host, rpc: Rpc, out: &mut Vec<Effect>) {
        match rpc {
            Rpc::LoadConv { conv } => {
                if self.buffer.is_empty() {
                    out.push(Effect::Rpc {
                        to: from,
                        rpc: self.conv_loaded(conv),
                    });
                } else {
                    // Wait for the buffered writes: a buffered append may be this
                    // conversation's, and answering with it before it is durable could hand
                    // out a membership or sequence number a crash then takes back.
                    self.buffer.push(Buffered {
                        op: None,
                        reply: None,
                        load: Some((from, conv)),
                        id: None,
                    });
                    self.arm_sync(now);
                }
            }
            Rpc::FindMsg { conv, id } => {
                let seq = self.durable.find(id).map(|(_, s)| s);
                let found = self.buffered_append(id);
                let rpc = Rpc::MsgFound {
                    conv,
                    id,
                    seq: seq.or(found),
                };
                if seq.is_none() && found.is_some() {
                    // Answer once that copy is durable, never before.
                    self.buffer(now, None, Some((from, rpc)));
                } else {
                    out.push(Effect::Rpc { to: from, rpc });
                }
            }
            Rpc::FanoutStep {
                fence,
                conv,
                seq,
                from: start,
                devices,
                park,
            } => {
                if self.fenced(fence, from, out) {
                    return;
                }
                let next = start.saturating_add(devices.len() as u32);
                // A step that parks nothing still moves the cursor durably, so a restarted
                // shard's pushes resume where they stood.
                let devices = if park { devices } else { Vec::new() };
                let op = StorageOp::FanoutStep {
                    conv,
                    seq,
                    devices,
                    next,
                    park,
                };
                let reply = Rpc::FanoutStepped { conv, seq, next };
                self.buffer(now, Some(op), Some((from, reply)));
            }
            Rpc::ReadFanouts {
                req,
                shard,
                shards,
                conv,
                after,
            } => {
                let mut iter = self
                    .durable
                    .fanouts
                    .iter()
                    .filter(|(k, _)| after.is_none_or(|a| **k > a))
                    .filter(|((c, _), _)| {
                        conv.map_or(shard_for_conv(*c, shards) == shard, |only| only == *c)
                    });
                let mut jobs = Vec::new();
                let mut next = after;
                for ((c, s), (devices, cursor, park)) in iter.by_ref().take(FANOUT_JOBS_PAGE_MAX) {
                    let msg = self.durable.logs.get(c).and_then(|l| l.get(s));
                    let msg =
                        msg.expect("a fan-out job is only written together with its log entry");
                    jobs.push((msg.clone(), devices.clone(), *cursor, *park));
                    next = Some((*c, *s));
                }
                let more = iter.next().is_some();
                out.push(Effect::Rpc {
                    to: from,
                    rpc: Rpc::Fanouts {
                        req,
                        jobs,
                        next,
                        more,
                    },
                });
            }
            Rpc::Lease {
                shard,
                renew,
                acquire,
            } => self.on_lease(now, from, shard, renew, acquire, out),
            Rpc::Append {
                fence,
                msg,
                recipients,
                fanout,
                park,
            } => {
                if self.fenced(fence, from, out) {
                    return;
                }
                let (conv, id) = (msg.conv, msg.id);
                let stored = if self.dedup_by_user {
                    self.durable.find_by_user(id)
                } else {
                    self.durable.find(id)
                };
                if let Some((_, seq)) = stored {
                    out.push(Effect::Probe(Probe::StorageAppendIdempotent));
                    let rpc = Rpc::Appended {
                        conv,
                        id,
                        seq,
                        duplicate: true,
                    };
                    out.push(Effect::Rpc { to: from, rpc });
                } else if let Some(seq) = self.buffered_append(id) {
                    out.push(Effect::Probe(Probe::StorageAppendIdempotent));
                    // Answer once the first copy is durable, never before.
                    let rpc = Rpc::Appended {
                        conv,
                        id,
                        seq,
                        duplicate: true,
                    };
                    self.buffer(now, None, Some((from, rpc)));
                } else if let Some(device) = (!self.any_devices)
                    .then(|| self.durable.missing_copy(&msg))
                    .flatten()
                {
                    out.push(Effect::Probe(Probe::StorageStaleDevicesRefused));
                    out.push(Effect::Rpc {
                        to: from,
                        rpc: Rpc::StaleDevices { conv, id, device },
                    });
                } else {
                    let last_seq = self.last_seq_incl_buffer(conv);
                    // A blind put, with the bug: whoever writes a number last wins it.
                    if msg.seq != last_seq + 1 && !self.unfenced {
                        out.push(Effect::Rpc {
                            to: from,
                            rpc: Rpc::AppendConflict { conv, id, last_seq },
                        });
                    } else {
                        let rpc = Rpc::Appended {
                            conv,
                            id,
                            seq: msg.seq,
                            duplicate: false,
                        };
                        let op = StorageOp::Append {
                            msg,
                            recipients,
                            fanout,
                            park,
                        };
                        self.buffer(now, Some(op), Some((from, rpc)));
                    }
                }
            }
            Rpc::Link { device, via } => {
                let reply = (from, Rpc::Linked { device, via });
                self.buffer(now, Some(StorageOp::Link { device }), Some(reply));
            }
            Rpc::PutReceipt {
                fence,
                receipt,
                notify,
                via,
            } => {
                if self.fenced(fence, from, out) {
                    return;
                }
                let reply = Rpc::ReceiptStored {
                    receipt,
                    notify: notify.clone(),
                    via,
                };
                let op = StorageOp::Receipt { receipt, notify };
                self.buffer(now, Some(op), Some((from, reply)));
            }
            Rpc::ReadQueuedReceipts {
                req,
                shard,
                shards,
                after,
            } => {
                let start = after.map(|(d, r)| (d, (r.conv, r.reader, r.kind)));
                let mut iter = self
                    .durable
                    .receipt_inbox
                    .iter()
                    .flat_map(|(d, q)| q.iter().map(move |(k, upto)| (*d, *k, *upto)))
                    .filter(|(d, k, _)| {
                        start.is_none_or(|s| (*d, *k) > s) && shard_for_conv(k.0, shards) == shard
                    })
                    .map(|(d, (conv, reader, kind), upto)| {
                        let r = Receipt {
                            conv,
                            reader,
                            kind,
                            upto,
                        };
                        (d, r)
                    });
                let receipts: Vec<(DeviceId, Receipt)> = iter
                    .by_ref()
                    .take(self.knobs.receipts_page_entries_max)
                    .collect();
                let more = iter.next().is_some();
                let next = receipts.last().copied().or(after);
                let rpc = Rpc::QueuedReceipts {
                    req,
                    receipts,
                    next,
                    more,
                };
                out.push(Effect::Rpc { to: from, rpc });
            }
            Rpc::ReceiptSeen { device, receipts } => {
                for receipt in receipts {
                    let op = StorageOp::DeleteReceipt { device, receipt };
                    self.buffer(now, Some(op), None);
                }
            }
            Rpc::DeleteInbox { device, conv, seq } => {
                self.buffer(
                    now,
                    Some(StorageOp::DeleteInbox { device, conv, seq }),
                    None,
                );
            }
            Rpc::ReadInbox {
                req,
                device,
                after,
                limit,
            } => {
                let (entries, next, more) = self.read_inbox(device, after, limit);
                let (receipts, receipts_more) = if after.is_none() {
                    self.queued_receipts(device)
                } else {
                    (Vec::new(), false)
                };
                out.push(Effect::Rpc {
                    to: from,
                    rpc: Rpc::InboxPage {
                        req,
                        entries,
                        receipts,
                        receipts_more,
                        next,
                        more,
                    },
                });
            }
            Rpc::ReadPending {
                req,
                shard,
                shards,
                after,
                limit,
            } => {
                let (entries, next, more) = self.read_pending(shard, shards, after, limit);
                let rpc = Rpc::PendingPage {
                    req,
                    entries,
                    next,
                    more,
                };
                out.push(Effect::Rpc { to: from, rpc });
            }
            Rpc::ReadLog {
                req,
                conv,
                from: lo,
                to: hi,
                reader,
            } => {
                let msgs = self.read_log(conv, lo, hi, reader);
                out.push(Effect::Rpc {
                    to: from,
                    rpc: Rpc::LogRange { req, msgs },
                });
            }
            // Not addressed to storage; a confused peer must not crash it. Storage's own
            // answers, echoed back:
            Rpc::ConvLoaded { .. }
            | Rpc::LeaseTable { .. }
            | Rpc::Fenced { .. }
            | Rpc::FanoutStepped { .. }
            | Rpc::Fanouts { .. }
            | Rpc::MsgFound { .. }
            | Rpc::Appended { .. }
            | Rpc::AppendConflict { .. }
            | Rpc::InboxPage { .. }
            | Rpc::ReceiptStored { .. }
            | Rpc::QueuedReceipts { .. }
            | Rpc::PendingPage { .. }
            | Rpc::LogRange { .. }
            | Rpc::Linked { .. }
            | Rpc::StaleDevices { .. } => {}
            // Gateway, session service and shard traffic:
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
            | Rpc::Owner { .. } => {}
            // Replication: requests are a replica's to serve, and replicas' answers reach here
            // only on a node without replicas (a coordinator routes them to `on_replica`), or
            // from a host that is no replica; there is nothing to coordinate.
            Rpc::Replicate { .. }
            | Rpc::ReadOps { .. }
            | Rpc::Replicated { .. }
            | Rpc::Ops { .. }
            | Rpc::ReplicaUp => {}
        }
    }
}

impl Machine for Storage {
    fn handle(&mut self, now: Millis, input: Input, out: &mut Vec<Effect>) {
        match input {
            Input::Rpc {
                from: Host::Replica(r),
                rpc,
            } if self.repl.is_some() => self.on_replica(now, r, rpc, out),
            Input::Rpc { from, rpc } => match self.repl.as_mut() {
                Some(repl) if repl.rebuild.is_some() => repl.deferred.push((from, rpc)),
                _ => self.on_rpc(now, from, rpc, out),
            },
            Input::Disk(disk) => self.disk = disk,
            Input::Timeout => {
                if self.sync_at.is_some_and(|at| at <= now) {
                    self.sync(now, out);
                }
                let retry = self.repl.as_ref().and_then(|r| r.retry_at);
                if retry.is_some_and(|at| at <= now) {
                    self.on_retry(now, out);
                }
            }
            // Only gateways hold connections and only phones have users: the hosts never hand
            // these to this machine.
            input => crate::not_for_this_host("storage", &input),
        }
        out.extend(self.probes_due.drain(..).map(Effect::Probe));
    }

    fn poll_timeout(&self) -> Option<Millis> {
        let retry = self.repl.as_ref().and_then(|r| r.retry_at);
        match (self.sync_at, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}
