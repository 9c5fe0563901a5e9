//! Storage: conversation logs (clustered by sequence number), per-device inboxes, group
//! membership history, and the durable queue of group fan-out jobs.
//!
//! Fault model: a crash loses every write not yet synced. Writes collect in a buffer and are
//! synced together [`STORAGE_SYNC_MS`] after the first one (group commit); only then are they
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

use crate::bugs::{Bug, Bugs};
use crate::limits::{
    FANOUT_JOBS_PAGE, READ_OPS_RETRY_MS, RECEIPTS_PAGE_MAX, REPLICATE_RETRY_MS, SHARD_LEASE_MS,
    STORAGE_SYNC_MS,
};
use crate::proto::{
    ConvId, DeviceId, Host, InboxCursor, LeaseView, Message, Millis, MsgId, OpId, Receipt,
    ReceiptKind, Rpc, Seq, StorageOp, TermSpan, UserId,
};
use crate::routing::shard_for_conv;
use crate::{Deployment, Effect, Input, Machine, StorageModel};
use std::collections::{BTreeMap, BTreeSet};

/// The durable contents of a storage node. The engine keeps a copy of this outside the node,
/// updated from `Persist` effects, and hands it back on restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StorageState {
    logs: BTreeMap<ConvId, BTreeMap<Seq, Message>>,
    ids: BTreeMap<MsgId, (ConvId, Seq)>,
    inboxes: BTreeMap<DeviceId, BTreeSet<(ConvId, Seq)>>,
    /// Per group: (sequence number of a membership change, members after it), in order.
    groups: BTreeMap<ConvId, Vec<(Seq, Vec<UserId>)>>,
    /// Inbox entries ever written (durable writes a fan-out on read saves).
    parked: u64,
    /// Unfinished fan-out jobs: (conversation, seq) -> (devices, cursor, parks entries).
    fanouts: BTreeMap<(ConvId, Seq), (Vec<DeviceId>, u32, bool)>,
    /// Each reader's receipt marks: (conversation, reader, kind) -> up to which seq.
    marks: BTreeMap<ReceiptKey, Seq>,
    /// Receipts a sender device has not seen yet, one per (conversation, reader, kind).
    receipt_inbox: BTreeMap<DeviceId, BTreeMap<ReceiptKey, Seq>>,
    /// Shard slot leases: slot -> (owner host, epoch, until).
    leases: BTreeMap<u16, (u16, u64, Millis)>,
    /// Devices linked to their user's account mid-run.
    linked: BTreeSet<DeviceId>,
    /// The relay model: a text's body is deleted once every device it was parked for has
    /// taken it (history lives on the devices).
    relay: bool,
    /// Relay: inbox entries of each message not yet taken.
    outstanding: BTreeMap<(ConvId, Seq), u32>,
}

/// (conversation, reader device, kind): one receipt mark.
type ReceiptKey = (ConvId, DeviceId, ReceiptKind);

impl StorageState {
    /// Apply one durable operation. Both the node and the engine's outside copy use this, so
    /// they cannot drift apart.
    pub fn apply(&mut self, op: &StorageOp) {
        match op {
            StorageOp::Append {
                msg,
                recipients,
                fanout,
                park,
            } => {
                self.ids.insert(msg.id, (msg.conv, msg.seq));
                self.park(recipients, msg.conv, msg.seq);
                if let Some(event) = &msg.event {
                    self.groups
                        .entry(msg.conv)
                        .or_default()
                        .push((msg.seq, event.members.clone()));
                }
                if !fanout.is_empty() {
                    self.fanouts
                        .insert((msg.conv, msg.seq), (fanout.clone(), 0, *park));
                }
                self.logs
                    .entry(msg.conv)
                    .or_default()
                    .insert(msg.seq, msg.clone());
            }
            StorageOp::FanoutStep {
                conv,
                seq,
                devices,
                next,
                park,
            } => {
                // A step for a job already finished (a late retry, or a shard that lost its
                // slot replaying an old cursor) parks nothing: those entries were parked and
                // perhaps acked and deleted since.
                if *park && self.fanouts.contains_key(&(*conv, *seq)) {
                    self.park(devices, *conv, *seq);
                }
                if let Some((all, cursor, parks)) = self.fanouts.get_mut(&(*conv, *seq)) {
                    *cursor = (*cursor).max(*next);
                    if *cursor as usize >= all.len() {
                        let parks = *parks;
                        self.fanouts.remove(&(*conv, *seq));
                        // Every entry it parked may be taken already.
                        if self.relay && parks && !self.outstanding.contains_key(&(*conv, *seq)) {
                            self.forget(*conv, *seq);
                        }
                    }
                }
            }
            StorageOp::Receipt { receipt: r, notify } => {
                let key = (r.conv, r.reader, r.kind);
                let mark = self.marks.entry(key).or_default();
                *mark = (*mark).max(r.upto);
                if r.kind == ReceiptKind::Delivered {
                    // The reader has everything of this conversation up to the mark: its
                    // inbox entries there are done with, even if their acks were lost.
                    let done: Vec<_> = self.inboxes.get(&r.reader).map_or(Vec::new(), |inbox| {
                        inbox
                            .range((r.conv, 0)..=(r.conv, r.upto))
                            .copied()
                            .collect()
                    });
                    for (conv, seq) in done {
                        self.remove_entry(r.reader, conv, seq);
                    }
                }
                for d in notify {
                    let queued = self.receipt_inbox.entry(*d).or_default();
                    let q = queued.entry(key).or_default();
                    *q = (*q).max(r.upto);
                }
            }
            StorageOp::DeleteReceipt { device, receipt: r } => {
                if let Some(queued) = self.receipt_inbox.get_mut(device) {
                    let key = (r.conv, r.reader, r.kind);
                    // Only if the device saw this one or a newer: a newer queued receipt stays.
                    if queued.get(&key).is_some_and(|q| *q <= r.upto) {
                        queued.remove(&key);
                    }
                    if queued.is_empty() {
                        self.receipt_inbox.remove(device);
                    }
                }
            }
            StorageOp::Lease {
                slot,
                owner,
                epoch,
                until,
            } => {
                self.leases.insert(*slot, (*owner, *epoch, *until));
            }
            StorageOp::DeleteInbox { device, conv, seq } => self.remove_entry(*device, *conv, *seq),
            StorageOp::Link { device } => {
                self.linked.insert(*device);
            }
            StorageOp::Term { .. } => {}
        }
    }

    /// An empty store of the given model.
    pub fn new(model: StorageModel) -> StorageState {
        StorageState {
            relay: model == StorageModel::Relay,
            ..StorageState::default()
        }
    }

    fn park(&mut self, devices: &[DeviceId], conv: ConvId, seq: Seq) {
        for d in devices {
            if self.mark(conv, *d, ReceiptKind::Delivered) >= seq {
                // The device already has it (a fan-out step late behind a newer message the
                // device showed, with this one fetched): an entry now would never be taken.
                continue;
            }
            if self.inboxes.entry(*d).or_default().insert((conv, seq)) {
                self.parked += 1;
                if self.relay {
                    *self.outstanding.entry((conv, seq)).or_default() += 1;
                }
            }
        }
    }

    /// An inbox entry of (`conv`, `seq`) was taken: with the relay model, the last one takes
    /// the body with it (unless a fan-out job still has devices to park it for).
    fn taken(&mut self, conv: ConvId, seq: Seq) {
        let Some(n) = self.outstanding.get_mut(&(conv, seq)) else {
            return;
        };
        *n -= 1;
        if *n == 0 {
            self.outstanding.remove(&(conv, seq));
            if !self.fanouts.contains_key(&(conv, seq)) {
                self.forget(conv, seq);
            }
        }
    }

    fn forget(&mut self, conv: ConvId, seq: Seq) {
        if let Some(m) = self.logs.get_mut(&conv).and_then(|l| l.get_mut(&seq)) {
            if m.event.is_none() {
                m.body = Vec::new();
                m.keys = Vec::new();
            }
        }
    }

    fn remove_entry(&mut self, device: DeviceId, conv: ConvId, seq: Seq) {
        if let Some(inbox) = self.inboxes.get_mut(&device) {
            if inbox.remove(&(conv, seq)) {
                if inbox.is_empty() {
                    self.inboxes.remove(&device);
                }
                self.taken(conv, seq);
            }
        }
    }

    /// Texts whose bodies storage still keeps (the relay model deletes delivered ones).
    pub fn bodies_kept(&self) -> usize {
        let logs = self.logs.values().flat_map(|l| l.values());
        logs.filter(|m| m.event.is_none() && !m.body.is_empty())
            .count()
    }

    /// Inbox entries written over the node's life (each counted once).
    pub fn inbox_written(&self) -> u64 {
        self.parked
    }

    /// A group's current (version, members), if it exists.
    pub fn members(&self, conv: ConvId) -> Option<(Seq, Vec<UserId>)> {
        self.groups.get(&conv).and_then(|h| h.last()).cloned()
    }

    /// Whether `user` was a member of `conv` when sequence number `seq` was assigned (that is,
    /// after every membership change before it).
    pub fn member_at(&self, conv: ConvId, seq: Seq, user: UserId) -> bool {
        let Some(history) = self.groups.get(&conv) else {
            return false;
        };
        let before = history.partition_point(|(s, _)| *s < seq);
        before > 0 && history[before - 1].1.binary_search(&user).is_ok()
    }

    /// Whether the fan-out job of message `seq` in `conv` is unfinished and has yet to park
    /// an entry for `device` (the job's devices from its cursor on).
    pub fn fanout_owes(&self, conv: ConvId, seq: Seq, device: DeviceId) -> bool {
        self.fanouts
            .get(&(conv, seq))
            .is_some_and(|(devices, next, _)| {
                devices.iter().skip(*next as usize).any(|d| *d == device)
            })
    }

    /// Unfinished fan-out jobs.
    pub fn fanouts_pending(&self) -> usize {
        self.fanouts.len()
    }

    /// The last sequence number in a conversation's log (0 when empty).
    pub fn last_seq(&self, conv: ConvId) -> Seq {
        self.logs
            .get(&conv)
            .and_then(|l| l.last_key_value())
            .map_or(0, |(s, _)| *s)
    }

    /// Where a message id sits, if it was ever appended.
    pub fn find(&self, id: MsgId) -> Option<(ConvId, Seq)> {
        self.ids.get(&id).copied()
    }

    /// Number of inbox entries over all devices.
    pub fn inbox_entries(&self) -> usize {
        self.inboxes.values().map(BTreeSet::len).sum()
    }

    /// A device linked mid-run to a member of direct conversation `msg.conv`, other than its
    /// sender, that `msg` carries no sealed copy for.
    pub fn missing_copy(&self, msg: &Message) -> Option<DeviceId> {
        if msg.conv.is_group() || msg.event.is_some() {
            return None;
        }
        let (a, b) = msg.conv.direct_members();
        let bundle = crate::e2e::Bundle::decode(&msg.body);
        self.linked
            .iter()
            .filter(|d| (d.user == a || d.user == b) && **d != msg.id.device)
            .find(|d| bundle.as_ref().is_none_or(|b| b.copy_for(**d).is_none()))
            .copied()
    }

    /// Every inbox entry, (device, conversation, seq), in order.
    pub fn inbox_list(&self) -> Vec<(DeviceId, ConvId, Seq)> {
        let entries = self.inboxes.iter();
        entries
            .flat_map(|(d, set)| set.iter().map(move |&(c, s)| (*d, c, s)))
            .collect()
    }

    /// A slot's lease: (owner host, epoch, until), if it was ever held.
    pub fn lease(&self, slot: u16) -> Option<(u16, u64, Millis)> {
        self.leases.get(&slot).copied()
    }

    /// A reader's receipt mark (0: none).
    pub fn mark(&self, conv: ConvId, reader: DeviceId, kind: ReceiptKind) -> Seq {
        self.marks.get(&(conv, reader, kind)).copied().unwrap_or(0)
    }

    /// Receipts queued for sender devices, over all devices.
    pub fn receipts_queued(&self) -> usize {
        self.receipt_inbox.values().map(BTreeMap::len).sum()
    }

    /// Number of messages over all logs.
    pub fn messages(&self) -> usize {
        self.ids.len()
    }
}

/// A page of a sweep: entries, where the next page starts, whether there is one.
type PendingPage = (
    Vec<(DeviceId, Message)>,
    Option<(DeviceId, ConvId, Seq)>,
    bool,
);

#[derive(Clone, Debug)]
struct Buffered {
    op: Option<StorageOp>,
    reply: Option<(Host, Rpc)>,
    /// A conversation to load for this host once the buffer is durable.
    load: Option<(Host, ConvId)>,
    /// With replicas: the id the operation was sent out under (`None`: not sent yet, or no
    /// operation).
    id: Option<OpId>,
}

/// A coordinator's dealings with its replicas.
#[derive(Clone, Debug)]
struct Replication {
    replicas: u16,
    /// This life's boot number (the engine counts the coordinator's starts).
    boot: u64,
    /// Acknowledgements that make a write durable, and answers that make a rebuild complete
    /// (a majority: any two majorities share a replica).
    quorum: usize,
    term: u64,
    next: u64,
    /// Leading buffer entries already sent out.
    sent: usize,
    /// Replicas that acknowledged each operation in flight.
    acks: BTreeMap<OpId, BTreeSet<u16>>,
    retry_at: Option<Millis>,
    /// Set while the view is being rebuilt; requests wait in `deferred` meanwhile.
    rebuild: Option<Rebuild>,
    deferred: Vec<(Host, Rpc)>,
}

/// A term is (round << TERM_BOOT_BITS) | boot number: rounds order terms, boot numbers keep
/// two lives that picked the same round apart.
const TERM_BOOT_BITS: u32 = 20;
const TERM_BOOT_MASK: u64 = (1 << TERM_BOOT_BITS) - 1;

/// One replica's answers to a rebuild's read.
#[derive(Clone, Debug, Default)]
struct ReplicaRead {
    ops: Vec<(OpId, StorageOp)>,
    /// Where its last page ended.
    last: Option<OpId>,
    done: bool,
}

/// Rebuilding the view after a (re)start: read every operation from a quorum of replicas,
/// then make sure what was read is on a quorum before serving from it.
#[derive(Clone, Debug, Default)]
struct Rebuild {
    /// Per replica: what it has answered so far.
    read: BTreeMap<u16, ReplicaRead>,
    /// Phase two: operations being written again (read from fewer than a quorum, and the new
    /// term's opening), with who acknowledged them.
    repair: BTreeMap<OpId, (StorageOp, BTreeSet<u16>)>,
    /// The view the read produced, served once the repair is done.
    view: Option<StorageState>,
}

/// A storage node.
#[derive(Clone, Debug)]
pub struct Storage {
    durable: StorageState,
    buffer: Vec<Buffered>,
    sync_at: Option<Millis>,
    /// Only with `unfenced-failover`: any shard's append is a blind put at its sequence number.
    unfenced: bool,
    /// With replicas: this node keeps nothing itself and coordinates them.
    repl: Option<Replication>,
    /// Only with `stale-device-list`: no check that a message has every linked device's copy.
    any_devices: bool,
}

impl Storage {
    /// A node recovering `durable` (empty on first boot).
    pub fn new(durable: StorageState) -> Storage {
        Storage {
            durable,
            buffer: Vec::new(),
            sync_at: None,
            unfenced: false,
            repl: None,
            any_devices: false,
        }
    }

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
                sent: 0,
                acks: BTreeMap::new(),
                retry_at: Some(0),
                rebuild: Some(Rebuild::default()),
                deferred: Vec::new(),
            }),
            ..Storage::with_bugs(StorageState::new(topo.storage_model), &topo.bugs)
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

    /// The same, with the bug-zoo switches that concern storage.
    pub fn with_bugs(durable: StorageState, bugs: &Bugs) -> Storage {
        Storage {
            unfenced: bugs.has(Bug::UnfencedFailover),
            any_devices: bugs.has(Bug::StaleDeviceList),
            ..Storage::new(durable)
        }
    }

    /// A slot's lease as it will be once the buffer is durable.
    fn lease_now(&self, slot: u16) -> Option<(u16, u64, Millis)> {
        let buffered = self.buffer.iter().rev().find_map(|b| match &b.op {
            Some(StorageOp::Lease {
                slot: s,
                owner,
                epoch,
                until,
            }) if *s == slot => Some((*owner, *epoch, *until)),
            _ => None,
        });
        buffered.or_else(|| self.durable.lease(slot))
    }

    /// Whether a write under `fence` may go ahead: its epoch is the slot's current one. The
    /// fence is what keeps a paused or cut-off shard (a zombie) from getting anything written
    /// after another took its slot over.
    fn fenced(&self, fence: (u16, u64), from: Host, out: &mut Vec<Effect>) -> bool {
        if self.unfenced {
            return false;
        }
        let (slot, epoch) = fence;
        let current = self.lease_now(slot).map_or(0, |(_, e, _)| e);
        if current == epoch {
            return false;
        }
        let rpc = Rpc::Fenced {
            slot,
            epoch: current,
        };
        out.push(Effect::Rpc { to: from, rpc });
        true
    }

    fn on_lease(
        &mut self,
        now: Millis,
        from: Host,
        shard: u16,
        renew: Vec<(u16, u64)>,
        acquire: Vec<u16>,
    ) {
        let until = now + SHARD_LEASE_MS;
        for (slot, epoch) in renew {
            // Renewed even after running out, as long as nobody took it meanwhile.
            if self
                .lease_now(slot)
                .is_some_and(|(o, e, _)| o == shard && e == epoch)
            {
                let op = StorageOp::Lease {
                    slot,
                    owner: shard,
                    epoch,
                    until,
                };
                self.buffer(now, Some(op), None);
            }
        }
        for slot in acquire {
            let current = self.lease_now(slot);
            let grant = match current {
                None => slot == shard,
                Some((owner, _, until)) => until <= now || owner == shard,
            };
            if grant {
                // Decided against the buffered state, so two takeovers in one sync window
                // cannot both win.
                let op = StorageOp::Lease {
                    slot,
                    owner: shard,
                    epoch: current.map_or(0, |l| l.1) + 1,
                    until,
                };
                self.buffer(now, Some(op), None);
            }
        }
        let mut slots: BTreeSet<u16> = self.durable.leases.keys().copied().collect();
        slots.extend(self.buffer.iter().filter_map(|b| match &b.op {
            Some(StorageOp::Lease { slot, .. }) => Some(*slot),
            _ => None,
        }));
        let leases = slots
            .into_iter()
            .filter_map(|slot| {
                let (owner, epoch, until) = self.lease_now(slot)?;
                Some(LeaseView {
                    slot,
                    owner,
                    epoch,
                    live: until > now,
                })
            })
            .collect();
        self.buffer(now, None, Some((from, Rpc::LeaseTable { leases })));
    }

    /// What a crash would keep right now.
    pub fn durable(&self) -> &StorageState {
        &self.durable
    }

    fn buffer(&mut self, now: Millis, op: Option<StorageOp>, reply: Option<(Host, Rpc)>) {
        self.buffer.push(Buffered {
            op,
            reply,
            load: None,
            id: None,
        });
        self.arm_sync(now);
    }

    /// A single node syncs a little later, with whatever else came meanwhile (group commit);
    /// a coordinator sends at once, and each replica groups its own syncs.
    fn arm_sync(&mut self, now: Millis) {
        let delay = if self.repl.is_some() {
            0
        } else {
            STORAGE_SYNC_MS
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

    /// The log between `lo` and `hi` as `device` may see it (see [`Rpc::ReadLog`]), each
    /// message with only that device's sealed key: a page of group messages with every
    /// member's keys would not fit in a frame.
    fn read_log(&self, conv: ConvId, lo: Seq, hi: Seq, device: DeviceId) -> Vec<Message> {
        let reader = device.user;
        let Some(log) = self.durable.logs.get(&conv) else {
            return Vec::new();
        };
        let in_range = log.range(lo..=hi.max(lo)).map(|(_, m)| m);
        if !conv.is_group() {
            return in_range.map(|m| m.for_device(device)).collect();
        }
        let joins = |m: &Message| {
            m.event
                .as_ref()
                .is_some_and(|e| e.members.binary_search(&reader).is_ok())
        };
        let mut msgs: Vec<Message> = in_range
            .filter(|m| self.durable.member_at(conv, m.seq, reader) || joins(m))
            .map(|m| m.for_device(device))
            .collect();
        if !self.durable.member_at(conv, lo, reader) {
            // Where the reader's membership starts, even past `hi`: without it a new member
            // holding a later message would ask for the same empty range forever.
            let first_join = log
                .range(lo..)
                .map(|(_, m)| m)
                .find(|m| joins(m) && !self.durable.member_at(conv, m.seq, reader));
            if let Some(m) = first_join.filter(|m| m.seq > hi) {
                msgs.push(m.for_device(device));
            }
        }
        msgs
    }

    fn read_inbox(
        &self,
        device: DeviceId,
        after: Option<InboxCursor>,
        limit: u32,
    ) -> (Vec<Message>, Option<InboxCursor>, bool) {
        let Some(inbox) = self.durable.inboxes.get(&device) else {
            return (Vec::new(), after, false);
        };
        let mut iter = inbox
            .iter()
            .filter(|(c, s)| after.is_none_or(|a| (*c, *s) > (a.conv, a.seq)));
        let mut page = Vec::new();
        let mut next = after;
        for (conv, seq) in iter.by_ref().take(limit as usize) {
            let msg = self.durable.logs.get(conv).and_then(|l| l.get(seq));
            let msg = msg.expect("an inbox entry is only written together with its log entry");
            page.push(msg.for_device(device));
            next = Some(InboxCursor {
                conv: *conv,
                seq: *seq,
            });
        }
        let more = iter.next().is_some();
        (page, next, more)
    }

    /// The receipts queued for `device`, up to a page of them, and whether more remain.
    fn queued_receipts(&self, device: DeviceId) -> (Vec<Receipt>, bool) {
        let Some(queued) = self.durable.receipt_inbox.get(&device) else {
            return (Vec::new(), false);
        };
        let page = queued
            .iter()
            .take(RECEIPTS_PAGE_MAX)
            .map(|(&(conv, reader, kind), &upto)| Receipt {
                conv,
                reader,
                kind,
                upto,
            })
            .collect();
        (page, queued.len() > RECEIPTS_PAGE_MAX)
    }

    /// Inbox entries whose conversation `shard` owns, after `after`. A full scan: it runs once
    /// per shard restart, never on the message path.
    fn read_pending(
        &self,
        shard: u16,
        shards: u16,
        after: Option<(DeviceId, ConvId, Seq)>,
        limit: u32,
    ) -> PendingPage {
        let mut iter = self
            .durable
            .inboxes
            .iter()
            .flat_map(|(d, entries)| entries.iter().map(move |(c, s)| (*d, *c, *s)))
            .filter(|k| after.is_none_or(|a| *k > a) && shard_for_conv(k.1, shards) == shard);
        let mut page = Vec::new();
        let mut next = after;
        for (device, conv, seq) in iter.by_ref().take(limit as usize) {
            let msg = self.durable.logs.get(&conv).and_then(|l| l.get(&seq));
            let msg = msg.expect("an inbox entry is only written together with its log entry");
            page.push((device, msg.for_device(device)));
            next = Some((device, conv, seq));
        }
        let more = iter.next().is_some();
        (page, next, more)
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
        for b in buffer {
            if let Some(op) = b.op {
                self.durable.apply(&op);
                ops.push(op);
            }
            replies.extend(b.reply);
            loads.extend(b.load);
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

    /// Send the buffer's new operations to every replica, each under the next id.
    fn send_out(&mut self, now: Millis, out: &mut Vec<Effect>) {
        let repl = self.repl.as_mut().expect("only a coordinator sends out");
        for b in &mut self.buffer[repl.sent..] {
            if let Some(op) = &b.op {
                repl.next += 1;
                let id = OpId {
                    term: repl.term,
                    n: repl.next,
                };
                b.id = Some(id);
                repl.acks.insert(id, BTreeSet::new());
                for r in 0..repl.replicas {
                    let rpc = Rpc::Replicate { id, op: op.clone() };
                    out.push(Effect::Rpc {
                        to: Host::Replica(r),
                        rpc,
                    });
                }
            }
        }
        repl.sent = self.buffer.len();
        if !repl.acks.is_empty() {
            repl.retry_at.get_or_insert(now + REPLICATE_RETRY_MS);
        }
    }

    /// Apply and answer, in order, every leading buffered entry a quorum has: the view (and
    /// so every read) only ever holds what a quorum has synced.
    fn commit(&mut self, out: &mut Vec<Effect>) {
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
    fn on_replica(&mut self, now: Millis, r: u16, rpc: Rpc, out: &mut Vec<Effect>) {
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
            _ => {}
        }
    }

    /// Send again what `only` (or every replica) has not acknowledged.
    fn resend(&self, only: Option<u16>, out: &mut Vec<Effect>) {
        let repl = self.repl.as_ref().expect("only a coordinator resends");
        let targets = |acks: &BTreeSet<u16>| -> Vec<u16> {
            (0..repl.replicas)
                .filter(|r| only.is_none_or(|o| o == *r) && !acks.contains(r))
                .collect()
        };
        let mut send = |id: OpId, op: &StorageOp, acks: &BTreeSet<u16>| {
            for r in targets(acks) {
                let rpc = Rpc::Replicate { id, op: op.clone() };
                out.push(Effect::Rpc {
                    to: Host::Replica(r),
                    rpc,
                });
            }
        };
        if let Some(rb) = &repl.rebuild {
            for (id, (op, acks)) in &rb.repair {
                send(*id, op, acks);
            }
            return;
        }
        for b in &self.buffer[..repl.sent] {
            if let (Some(id), Some(op)) = (b.id, &b.op) {
                if let Some(acks) = repl.acks.get(&id) {
                    send(id, op, acks);
                }
            }
        }
    }

    /// A quorum of replicas has been read through: rebuild the view from what they hold
    /// together, in id order, and write again what fewer than a quorum of them had (it may
    /// have been acknowledged to nobody, but it is served from now on, so it must survive the
    /// next rebuild too), along with the opening of a new, higher term.
    fn finish_read(&mut self, now: Millis, out: &mut Vec<Effect>) {
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
        repl.term = term;
        repl.next = 0;
        let live = TermSpan::cover(union.keys().copied());
        rb.repair = union
            .into_iter()
            .filter(|(_, (_, n))| *n < repl.quorum)
            .map(|(id, (op, _))| (id, (op, BTreeSet::new())))
            .collect();
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
    fn finish_repair(&mut self, now: Millis, out: &mut Vec<Effect>) {
        let repl = self.repl.as_mut().expect("only a coordinator rebuilds");
        let rb = repl.rebuild.as_ref().expect("called while rebuilding");
        if rb.view.is_none() || rb.repair.values().any(|(_, a)| a.len() < repl.quorum) {
            return;
        }
        let rb = repl.rebuild.take().expect("checked above");
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
    fn on_retry(&mut self, now: Millis, out: &mut Vec<Effect>) {
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
                for ((c, s), (devices, cursor, park)) in iter.by_ref().take(FANOUT_JOBS_PAGE) {
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
            } => self.on_lease(now, from, shard, renew, acquire),
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
                if let Some((_, seq)) = self.durable.find(id) {
                    let rpc = Rpc::Appended {
                        conv,
                        id,
                        seq,
                        duplicate: true,
                    };
                    out.push(Effect::Rpc { to: from, rpc });
                } else if let Some(seq) = self.buffered_append(id) {
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
                receipt,
                notify,
                via,
            } => {
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
                let receipts: Vec<(DeviceId, Receipt)> =
                    iter.by_ref().take(RECEIPTS_PAGE_MAX).collect();
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
            Rpc::ReceiptSeen { device, receipt } => {
                let op = StorageOp::DeleteReceipt { device, receipt };
                self.buffer(now, Some(op), None);
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
            // Anything else is not addressed to storage; a confused peer must not crash it.
            _ => {}
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
            Input::Timeout => {
                if self.sync_at.is_some_and(|at| at <= now) {
                    self.sync(now, out);
                }
                let retry = self.repl.as_ref().and_then(|r| r.retry_at);
                if retry.is_some_and(|at| at <= now) {
                    self.on_retry(now, out);
                }
            }
            _ => {}
        }
    }

    fn poll_timeout(&self) -> Option<Millis> {
        let retry = self.repl.as_ref().and_then(|r| r.retry_at);
        match (self.sync_at, retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::UserId;

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
            again[0],
            Effect::Rpc {
                rpc: Rpc::Appended {
                    seq: 1,
                    duplicate: true,
                    ..
                },
                ..
            }
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
        assert!(
            matches!(
                out[..],
                [Effect::Rpc {
                    rpc: Rpc::Fenced { slot: 0, epoch: 2 },
                    ..
                }]
            ),
            "{out:?}"
        );
        // The old owner's renewal fails too.
        let t = lease(&mut s, late + 20, 0, vec![(0, 1)], vec![]);
        assert_eq!((t[0].owner, t[0].epoch), (1, 2));
        assert_eq!(s.durable().last_seq(msg(1, 1).conv), 1);
    }

    // With `unfenced-failover` the same stale write lands, over the number's rightful owner.
    #[test]
    fn without_the_fence_a_stale_write_overwrites() {
        let bugs: Bugs = [Bug::UnfencedFailover].into_iter().collect();
        let mut s = Storage::with_bugs(StorageState::default(), &bugs);
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
        let readers = RECEIPTS_PAGE_MAX as u32 + 44;
        for u in 1..=readers {
            let receipt = Receipt {
                conv,
                reader: DeviceId::primary(UserId(u)),
                kind: ReceiptKind::Delivered,
                upto: 1,
            };
            let rpc = Rpc::PutReceipt {
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
        assert_eq!((first.len(), more), (RECEIPTS_PAGE_MAX, true));
        for receipt in first {
            let rpc = Rpc::ReceiptSeen {
                device: sender,
                receipt,
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
}
