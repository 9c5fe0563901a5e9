//! The durable data model of a storage node: conversation logs, message ids, inboxes, group
//! membership history, fan-out jobs, receipt marks and queues, shard leases and linked
//! devices. Every change goes through [`StorageState::apply`], which the node, its replicas
//! and the engine's outside copy all share.

use crate::proto::{ConvId, DeviceId, Message, Millis, MsgId, ReceiptKind, Seq, StorageOp, UserId};
use crate::StorageModel;
use std::collections::{BTreeMap, BTreeSet};

/// The durable contents of a storage node. The engine keeps a copy of this outside the node,
/// updated from `Persist` effects, and hands it back on restart.
#[derive(Clone, Debug, Hash, Default, PartialEq, Eq)]
pub struct StorageState {
    /// Per conversation, its messages by sequence number.
    pub(super) logs: BTreeMap<ConvId, BTreeMap<Seq, Message>>,
    /// Where each appended message id sits: what makes appends idempotent.
    pub(super) ids: BTreeMap<MsgId, (ConvId, Seq)>,
    /// Per device, the (conversation, seq) entries parked for it and not yet taken.
    pub(super) inboxes: BTreeMap<DeviceId, BTreeSet<(ConvId, Seq)>>,
    /// Per group: (sequence number of a membership change, members after it), in order.
    pub(super) groups: BTreeMap<ConvId, Vec<(Seq, Vec<UserId>)>>,
    /// Inbox entries ever written (durable writes a fan-out on read saves).
    pub(super) parked: u64,
    /// Unfinished fan-out jobs: (conversation, seq) -> (devices, cursor, parks entries).
    pub(super) fanouts: BTreeMap<(ConvId, Seq), (Vec<DeviceId>, u32, bool)>,
    /// Each reader's receipt marks: (conversation, reader, kind) -> up to which seq.
    pub(super) marks: BTreeMap<ReceiptKey, Seq>,
    /// Receipts a sender device has not seen yet, one per (conversation, reader, kind).
    pub(super) receipt_inbox: BTreeMap<DeviceId, BTreeMap<ReceiptKey, Seq>>,
    /// Shard slot leases: slot -> (owner host, epoch, until).
    pub(super) leases: BTreeMap<u16, (u16, u64, Millis)>,
    /// Devices linked to their user's account mid-run.
    pub(super) linked: BTreeSet<DeviceId>,
    /// The relay model: a text's body is deleted once every device it was parked for has
    /// taken it (history lives on the devices).
    pub(super) relay: bool,
    /// Relay: inbox entries of each message not yet taken.
    pub(super) outstanding: BTreeMap<(ConvId, Seq), u32>,
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

    pub(super) fn park(&mut self, devices: &[DeviceId], conv: ConvId, seq: Seq) {
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
    pub(super) fn taken(&mut self, conv: ConvId, seq: Seq) {
        let Some(n) = self.outstanding.get_mut(&(conv, seq)) else {
            return;
        };
        // A count is removed when it reaches zero, so one still here is at least one.
        assert!(*n > 0, "an outstanding count of zero was kept");
        *n -= 1;
        if *n == 0 {
            self.outstanding.remove(&(conv, seq));
            if !self.fanouts.contains_key(&(conv, seq)) {
                self.forget(conv, seq);
            }
        }
    }

    /// Texts whose body waits for devices to take it (relay model).
    pub(super) fn outstanding_texts(&self) -> usize {
        self.outstanding.len()
    }

    pub(super) fn forget(&mut self, conv: ConvId, seq: Seq) {
        if let Some(m) = self.logs.get_mut(&conv).and_then(|l| l.get_mut(&seq)) {
            if m.event.is_none() {
                m.body = Vec::new();
                m.keys = Vec::new();
            }
        }
    }

    pub(super) fn remove_entry(&mut self, device: DeviceId, conv: ConvId, seq: Seq) {
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

    /// Only with `dedup-by-user`: a stored message with the same user and counter as `id`,
    /// whichever of the user's devices sent it.
    pub fn find_by_user(&self, id: MsgId) -> Option<(ConvId, Seq)> {
        self.ids
            .iter()
            .find(|(k, _)| k.device.user == id.device.user && k.n == id.n)
            .map(|(_, v)| *v)
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
