//! A chat shard: owns conversations (by hash), gives each message the next sequence number,
//! has storage append it to the log *and* park a copy in every recipient's inbox, and answers
//! sent ✓ only once storage says the write is durable. Then it looks recipients up in the
//! session service and pushes through their gateways. It also serves inbox drains, gap
//! fetches and acks for the users it owns by hash.
//!
//! Delivery is the shard's job until the device acks: every push is tracked per recipient
//! device and retried with capped backoff while the session service says the device is
//! connected (a push into a dead connection, or lost to a partition, goes again). When the device
//! is not connected the shard stops: the device drains its inbox when it connects. Acks come to
//! the conversation's shard, which stops tracking and deletes the inbox entry.
//!
//! Groups: membership changes are entries in the group's own log, so the membership in force
//! when a message takes its sequence number decides who receives it. A group message is
//! appended with a durable fan-out job (its recipient devices); ✓ goes to the sender as soon
//! as that append is synced, and the shard then works the job off in steps of
//! [`crate::limits::FANOUT_STEP_DEVICES`] (the run's knob) (park inbox entries and move the cursor in one write, then push),
//! one job at a time per group so members see its messages in order. A restarted shard reads
//! the unfinished jobs and resumes at their cursors: nobody is skipped, and a step redone after a
//! crash only parks entries that exist already (devices drop the repeated push by id).
//!
//! The shard keeps nothing durable: a restarted shard reloads a conversation's last sequence
//! number from storage on first use, and sweeps storage's inboxes for its conversations to take
//! up the deliveries its previous life was tracking. Writes for one conversation go one at a
//! time, so sequence numbers are contiguous; storage refuses a non-contiguous one and dedups
//! by message id, so a retry after a crash can never take a second number.
//!
//! Ownership: conversations hash to slots (one per shard number). A shard writes for a slot
//! only while it holds the slot's lease in storage, renewed every second; a slot whose lease
//! runs out is taken over by any live shard under a higher epoch, which then sweeps the slot
//! (inboxes, fan-out jobs, queued receipts) and tells every gateway. Appends and fan-out steps
//! carry the epoch, and storage refuses a stale one (`Fenced`): the shard lets the slot go.
//!
//! Receipts: a reader's cumulative mark is stored (`PutReceipt`), acknowledged to the reader,
//! and pushed to each sender device it names, with retries until that device says it saw it;
//! storage keeps a queued copy for the sender's next drain. A device that is not connected is
//! left to its inbox, and the push provider is asked to wake it.
//!
//! Inputs: `Rpc` (`FromDevice` from gateways; `ConvLoaded`, `Appended`, `AppendConflict`,
//! `MsgFound`, `FanoutStepped`, `Fanouts`, `InboxPage`, `PendingPage`, `LogRange`,
//! `ReceiptStored`, `QueuedReceipts`, `LeaseTable`, `Fenced` from storage; `Located` from the
//! session service), `Timeout`. Outputs: `Rpc` (to storage, gateways, the session service and
//! the push provider). Timers: lease renewal, storage retry per conversation, fan-out step
//! retry, push retry per delivery and per receipt, expiry of pending lookups and reads.
//!
//! The machine is one struct, [`Shard`], whose methods live beside their concern: this file
//! holds its state, construction and the dispatch of device frames, storage answers and
//! timers; `sequencer` admitting and sequencing sends; `fanout` group fan-out jobs; `delivery`
//! tracked pushes and sweeps; `receipts` receipt pushes; `lease` slot leases and takeover.

mod delivery;
mod fanout;
mod lease;
mod receipts;
mod sequencer;
#[cfg(test)]
mod tests;

use self::delivery::{Delivery, DeliveryKey};
use self::fanout::Job;
use self::receipts::{ReceiptPush, ReceiptPushKey};
use self::sequencer::{Conv, Group, PendingSend};
use crate::bugs::Bug;
use crate::limits::{LOOKUP_TIMEOUT_MS, SHARD_LEASE_RENEW_MS, STORAGE_RETRY_MS};
use crate::probe::Probe;
use crate::proto::{
    ConvId, DeviceId, Down, Host, Message, Millis, MsgId, Path, Receipt, ReceiptKind, Refusal, Rpc,
    Seq, Up,
};
use crate::routing::shard_for_conv;
use crate::timers::Timers;
use crate::{Deployment, Effect, Input, Machine};
use std::collections::{BTreeMap, BTreeSet};

/// The storage node every shard writes to (one in this design; replicated later).
const STORAGE: Host = Host::Storage(0);

/// What a request out to storage or the session service was for.
#[derive(Clone, Debug, Hash)]
enum Pending {
    /// Where the device of this delivery is.
    Locate(DeliveryKey),
    /// Where the sender device of this receipt push is.
    LocateReceipt(ReceiptPushKey),
    /// A drain page for this device, to hand on through this gateway.
    Drain { device: DeviceId, gateway: u16 },
    /// A gap fetch for this device, to hand on through this gateway.
    Fetch { device: DeviceId, gateway: u16 },
    /// A page of a taken-over slot's inbox entries, after this one.
    Sweep {
        slot: u16,
        after: Option<DeliveryKey>,
    },
    /// A page of a taken-over slot's queued receipts, after this one.
    ReceiptSweep {
        slot: u16,
        after: Option<(DeviceId, Receipt)>,
    },
    /// A page of unfinished fan-out jobs (of the slot, or of one conversation).
    Fanouts {
        slot: u16,
        conv: Option<ConvId>,
        after: Option<(ConvId, Seq)>,
    },
}

/// The shard's timers; the derived order decides which of two due at once fires first.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Resend this conversation's storage request (load, lookup of a refused send, append).
    Storage(ConvId),
    /// Try this delivery again unless the device acked it.
    Push(DeliveryKey),
    /// Try this receipt push again unless the sender device saw it.
    ReceiptPush(ReceiptPushKey),
    /// Resend this fan-out job's step that storage has not answered.
    Fanout((ConvId, Seq)),
    /// Renew our leases and ask for slots free to take.
    Lease,
    /// Forget (or, for a sweep page, ask again) this request unanswered for too long.
    Expire(u64),
}

/// A chat shard.
#[derive(Clone, Debug, Hash)]
pub struct Shard {
    /// This shard's number, and so its home slot.
    index: u16,
    /// The deployment it runs in: shard and gateway counts, users, bugs switched on.
    /// Shared by every machine of a deployment: a model checker clones whole worlds per state.
    topo: std::sync::Arc<Deployment>,
    /// What this life knows of each conversation it sequences.
    convs: BTreeMap<ConvId, Conv>,
    /// Requests out to storage or the session service, by request id.
    pending: BTreeMap<u64, Pending>,
    /// Messages on their way to devices, tracked until acked.
    deliveries: BTreeMap<DeliveryKey, Delivery>,
    /// Receipts pushed to sender devices, retried until seen (or the device is not connected:
    /// then its next drain brings them, from storage's queue).
    receipt_pushes: BTreeMap<ReceiptPushKey, ReceiptPush>,
    /// Session lookups this input raised, sent together when it is handled.
    asks: Vec<(u64, crate::proto::UserId)>,
    /// The gateway each device's latest frame came through, and when: where a first push
    /// goes without a lookup while fresh ([`LOCATION_HINT_MS`]).
    heard: BTreeMap<DeviceId, (u16, Millis)>,
    /// Unfinished group fan-outs, by (conversation, seq).
    jobs: BTreeMap<(ConvId, Seq), Job>,
    /// The last request id handed out.
    next_req: u64,
    /// Slots (conversations hashed to one shard number) this host holds a lease on, with its
    /// epoch: writes for any other slot wait, and storage refuses them under a stale epoch.
    leases: BTreeMap<u16, u64>,
    /// Slots the last lease table showed free to take: run out, or still in the name of an
    /// earlier life of this host (taken again under a new epoch, never adopted as they are).
    expired: BTreeSet<u16>,
    /// Slots asked for since boot and not yet granted: a table naming us owner of one of
    /// these is a grant.
    acquiring: BTreeSet<u16>,
    /// Pending deadlines.
    timers: Timers<Timer>,
}

impl Shard {
    /// Shard number `index` with empty memory (first boot or after a crash).
    pub fn new(index: u16, topo: impl Into<std::sync::Arc<Deployment>>) -> Shard {
        let topo: std::sync::Arc<Deployment> = topo.into();
        let mut timers = Timers::default();
        // First thing after (re)boot: take the home slot (fencing out any earlier life); the
        // grant starts the sweeps that take up what that life left unfinished.
        timers.set(Timer::Lease, 0);
        Shard {
            index,
            topo,
            convs: BTreeMap::new(),
            pending: BTreeMap::new(),
            deliveries: BTreeMap::new(),
            receipt_pushes: BTreeMap::new(),
            asks: Vec::new(),
            heard: BTreeMap::new(),
            jobs: BTreeMap::new(),
            next_req: 0,
            leases: BTreeMap::new(),
            expired: BTreeSet::new(),
            acquiring: BTreeSet::new(),
            timers,
        }
    }

    /// Deliveries being tracked until their device acks.
    pub fn tracked(&self) -> usize {
        self.deliveries.len()
    }

    /// This shard's index.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// Group fan-outs not finished yet.
    pub fn fanouts(&self) -> usize {
        self.jobs.len()
    }

    fn request(&mut self, now: Millis, p: Pending) -> u64 {
        self.next_req += 1;
        let reused = self.pending.insert(self.next_req, p);
        assert!(
            reused.is_none(),
            "request id {} handed out twice",
            self.next_req
        );
        self.timers
            .set(Timer::Expire(self.next_req), now + LOOKUP_TIMEOUT_MS);
        self.next_req
    }

    fn to_device(device: DeviceId, gateway: u16, down: Down, out: &mut Vec<Effect>) {
        out.push(Effect::Rpc {
            to: Host::Gateway(gateway),
            rpc: Rpc::ToDevice { device, down },
        });
    }

    fn is_member(&self, conv: ConvId, device: DeviceId) -> bool {
        conv.direct_peer(device.user)
            .is_some_and(|peer| peer != device.user && self.topo.has_user(peer))
    }

    /// Tell `device` how far `conv` reaches, if it is a member: a group's length, its pace and
    /// its existence are the members' business (a direct chat is never pulled).
    fn answer_pull(
        &self,
        device: DeviceId,
        gateway: u16,
        conv: ConvId,
        pulled: Down,
        out: &mut Vec<Effect>,
    ) {
        let member = self.convs.get(&conv).is_some_and(|c| {
            c.group
                .as_ref()
                .is_some_and(|g| g.members.contains(&device.user))
        });
        if member || self.topo.bugs.has(Bug::PullSkipsMembership) {
            Self::to_device(device, gateway, pulled, out);
        } else {
            out.push(Effect::Probe(Probe::PullRefused));
            Self::refuse(device, gateway, Refusal::NotMember, None, out);
        }
    }

    fn refuse(
        device: DeviceId,
        gateway: u16,
        reason: Refusal,
        id: Option<MsgId>,
        out: &mut Vec<Effect>,
    ) {
        Self::to_device(device, gateway, Down::Refused { reason, id }, out);
    }

    /// Hand `msg` to `device`, with only its own sealed key.
    fn deliver(device: DeviceId, gateway: u16, msg: &Message, path: Path, out: &mut Vec<Effect>) {
        let down = Down::Deliver {
            msg: msg.for_device(device),
            path,
        };
        Self::to_device(device, gateway, down, out);
    }

    fn slot(&self, conv: ConvId) -> u16 {
        shard_for_conv(conv, self.topo.shards)
    }

    /// The (slot, epoch) a write for `conv` goes under, if this host holds the slot.
    fn fence(&self, conv: ConvId) -> Option<(u16, u64)> {
        let slot = self.slot(conv);
        self.leases.get(&slot).map(|e| (slot, *e))
    }

    fn on_from_device(
        &mut self,
        now: Millis,
        gateway: u16,
        device: DeviceId,
        up: Up,
        out: &mut Vec<Effect>,
    ) {
        self.heard.insert(device, (gateway, now));
        match up {
            Up::Send {
                conv,
                id,
                body,
                sent_at,
                op,
                version,
                keys,
            } => {
                let send = PendingSend {
                    device,
                    gateway,
                    id,
                    body,
                    sent_at,
                    op,
                    version,
                    keys,
                };
                self.on_send(now, conv, send, out);
            }
            Up::Ack { conv, seq } => {
                // An ack of a delivery we do not track (a fetch, a drain) may still have an
                // entry: delete unless we know there is none.
                let key = (device, conv, seq);
                let parked = self.deliveries.get(&key).is_none_or(|d| d.parked);
                self.untrack(now, key, out);
                if parked {
                    out.push(Effect::Rpc {
                        to: STORAGE,
                        rpc: Rpc::DeleteInbox { device, conv, seq },
                    });
                }
            }
            Up::Drain { after } => {
                let req = self.request(now, Pending::Drain { device, gateway });
                let rpc = Rpc::ReadInbox {
                    req,
                    device,
                    after,
                    limit: self.topo.knobs.inbox_page_entries,
                };
                out.push(Effect::Rpc { to: STORAGE, rpc });
            }
            Up::Fetch { conv, from, to } => {
                // In a group, storage shows the reader only what they may see.
                let checked = !self.topo.bugs.has(Bug::FetchSkipsMembership);
                if checked && !conv.is_group() && !self.is_member(conv, device) {
                    Self::refuse(device, gateway, Refusal::NotMember, None, out);
                    return;
                }
                let to = to.min(from.saturating_add(self.topo.knobs.gap_fetch_seqs_max - 1));
                let req = self.request(now, Pending::Fetch { device, gateway });
                out.push(Effect::Rpc {
                    to: STORAGE,
                    rpc: Rpc::ReadLog {
                        req,
                        conv,
                        from,
                        to,
                        reader: device,
                    },
                });
            }
            Up::Pull { conv } => {
                let c = self.convs.entry(conv).or_default();
                match c.last_seq {
                    Some(last) => {
                        let pulled = Down::Pulled { conv, last };
                        self.answer_pull(device, gateway, conv, pulled, out);
                    }
                    None => {
                        c.pullers.push((device, gateway));
                        self.load(now, conv, out);
                    }
                }
            }
            Up::Receipt {
                conv,
                kind,
                upto,
                notify,
            } => {
                // Only a member may say it has a conversation's messages; in a group the
                // notify list names senders, checked where it lands (each sender device drops
                // a receipt for messages it never sent).
                let checked = !self.topo.bugs.has(Bug::ReceiptFromAnyone);
                if checked && !conv.is_group() && !self.is_member(conv, device) {
                    Self::refuse(device, gateway, Refusal::NotMember, None, out);
                    return;
                }
                if kind == ReceiptKind::Delivered {
                    // The mark says the device has everything up to it: a phone acks a shown
                    // text of a direct chat with its mark alone, so the pushes stop here.
                    let done: Vec<Seq> = self
                        .deliveries
                        .range((device, conv, 0)..=(device, conv, upto))
                        .map(|(key, _)| key.2)
                        .collect();
                    for seq in done {
                        self.untrack(now, (device, conv, seq), out);
                    }
                }
                let mut upto = upto;
                if kind == ReceiptKind::Read && self.topo.bugs.has(Bug::ReadBeforeDelivered) {
                    // "Mark the chat read": up to the log's end, in flight or not.
                    let end = self.convs.get(&conv).and_then(|c| c.last_seq);
                    upto = upto.max(end.unwrap_or(0));
                }
                let receipt = Receipt {
                    conv,
                    reader: device,
                    kind,
                    upto,
                };
                if self.topo.bugs.has(Bug::FireAndForgetReceipts) {
                    // Passed on once, kept nowhere, acknowledged to nobody.
                    for to in notify {
                        self.push_receipt(now, to, receipt, false, out);
                    }
                    return;
                }
                // A slot we do not hold (taken over while a gateway still routes here, or not
                // yet ours after a restart): the reader retries, by then at the owner. Stored
                // from here, the receipt would wait for a drain: the owner's sweep is over and
                // our push dies with the slot (shard-crash-after-persist seed 400703, where a
                // sender online to the end never got ✓✓ for five texts).
                let Some(fence) = self.fence(conv) else {
                    return;
                };
                let rpc = Rpc::PutReceipt {
                    fence,
                    receipt,
                    notify,
                    via: gateway,
                };
                out.push(Effect::Rpc { to: STORAGE, rpc });
            }
            Up::ReceiptSeen { conv, seen } => {
                let mut receipts = Vec::with_capacity(seen.len());
                for (reader, kind, upto) in seen {
                    let key = (device, conv, reader, kind);
                    if self
                        .receipt_pushes
                        .get(&key)
                        .is_some_and(|p| p.upto <= upto)
                    {
                        self.receipt_pushes.remove(&key);
                        self.timers.cancel(&Timer::ReceiptPush(key));
                    }
                    receipts.push(Receipt {
                        conv,
                        reader,
                        kind,
                        upto,
                    });
                }
                if !receipts.is_empty() {
                    let rpc = Rpc::ReceiptSeen { device, receipts };
                    out.push(Effect::Rpc { to: STORAGE, rpc });
                }
            }
            // The gateway takes these itself (subscriptions go to the session service).
            Up::Link => {
                let rpc = Rpc::Link {
                    device,
                    via: gateway,
                };
                out.push(Effect::Rpc { to: STORAGE, rpc });
            }
            Up::Hello { .. } | Up::Ping | Up::Subscribe { .. } => {}
        }
    }

    fn on_storage(&mut self, now: Millis, rpc: Rpc, out: &mut Vec<Effect>) {
        match rpc {
            Rpc::ConvLoaded {
                conv,
                last_seq,
                members,
            } => {
                let c = self.convs.entry(conv).or_default();
                if c.loading {
                    c.loading = false;
                    c.last_seq = Some(last_seq);
                    c.group = members.map(|(version, members)| Group {
                        version,
                        members: members.into_iter().collect(),
                    });
                    for (device, gateway) in std::mem::take(&mut c.pullers) {
                        let pulled = Down::Pulled {
                            conv,
                            last: last_seq,
                        };
                        self.answer_pull(device, gateway, conv, pulled, out);
                    }
                    self.timers.cancel(&Timer::Storage(conv));
                    self.pump(now, conv, out);
                }
            }
            Rpc::Appended {
                conv,
                id,
                seq,
                duplicate,
            } => self.on_appended(now, conv, id, seq, duplicate, out),
            Rpc::AppendConflict { conv, id, .. } => {
                out.push(Effect::Probe(Probe::ShardAppendConflict));
                let Some(c) = self.convs.get_mut(&conv) else {
                    return;
                };
                let Some(f) = c.in_flight.take_if(|f| f.msg.id == id) else {
                    return;
                };
                // Our idea of the conversation is behind storage's (a lost write, or an
                // earlier life's): reload it, membership included, and admit the send again.
                c.queue.push_front(f.send);
                c.last_seq = None;
                c.group = None;
                self.timers.cancel(&Timer::Storage(conv));
                self.pump(now, conv, out);
            }
            Rpc::StaleDevices { conv, id, device } => {
                let Some(c) = self.convs.get_mut(&conv) else {
                    return;
                };
                let Some(f) = c.in_flight.take_if(|f| f.msg.id == id) else {
                    return;
                };
                self.timers.cancel(&Timer::Storage(conv));
                let reason = Refusal::StaleDevices { device };
                Self::refuse(f.send.device, f.send.gateway, reason, Some(id), out);
                self.pump(now, conv, out);
            }
            Rpc::Linked { device, via } => Self::to_device(device, via, Down::Linked, out),
            Rpc::MsgFound { conv, id, seq } => {
                let Some(c) = self.convs.get_mut(&conv) else {
                    return;
                };
                let Some((p, reason)) = c.checking.take_if(|(p, _)| p.id == id) else {
                    return;
                };
                self.timers.cancel(&Timer::Storage(conv));
                match seq {
                    Some(seq) => {
                        // Stored before: ✓ it, and reload, since our membership predates it.
                        c.last_seq = None;
                        c.group = None;
                        let sent = Down::Sent { conv, id, seq };
                        Self::to_device(p.device, p.gateway, sent, out);
                    }
                    None => Self::refuse(p.device, p.gateway, reason, Some(p.id), out),
                }
                self.pump(now, conv, out);
            }
            Rpc::FanoutStepped { conv, seq, next } => {
                self.on_fanout_stepped(now, (conv, seq), next, out)
            }
            Rpc::Fanouts {
                req,
                jobs,
                next,
                more,
            } => {
                if let Some(Pending::Fanouts { slot, conv, .. }) = self.pending.remove(&req) {
                    if more {
                        self.read_fanouts(now, slot, conv, next, out);
                    }
                    self.timers.cancel(&Timer::Expire(req));
                    let mut convs = BTreeSet::new();
                    if !jobs.is_empty() {
                        out.push(Effect::Probe(Probe::ShardFanoutResumed));
                    }
                    for (msg, devices, next, park) in jobs {
                        convs.insert(msg.conv);
                        self.jobs.entry((msg.conv, msg.seq)).or_insert(Job {
                            msg,
                            devices,
                            next,
                            stepping: false,
                            park,
                            ack: None,
                        });
                    }
                    for conv in convs {
                        self.fanout_pump(now, conv, out);
                    }
                }
            }
            Rpc::QueuedReceipts {
                req,
                receipts,
                next,
                more,
            } => {
                if let Some(Pending::ReceiptSweep { slot, .. }) = self.pending.remove(&req) {
                    self.timers.cancel(&Timer::Expire(req));
                    for (to, receipt) in receipts {
                        self.push_receipt(now, to, receipt, true, out);
                    }
                    if more {
                        self.sweep_receipts(now, slot, next, out);
                    }
                }
            }
            Rpc::LeaseTable { leases } => self.on_lease_table(now, leases, out),
            // Only if it is news: a late answer to an older epoch's write must not drop the
            // slot held now under a newer one.
            Rpc::Fenced { slot, epoch }
                if self.leases.get(&slot).is_some_and(|held| *held < epoch) =>
            {
                out.push(Effect::Probe(Probe::ShardFenced));
                self.lose(slot)
            }
            Rpc::ReceiptStored {
                receipt,
                notify,
                via,
            } => {
                let ack = Down::ReceiptAck {
                    conv: receipt.conv,
                    kind: receipt.kind,
                    upto: receipt.upto,
                };
                Self::to_device(receipt.reader, via, ack, out);
                for to in notify {
                    self.push_receipt(now, to, receipt, true, out);
                }
            }
            Rpc::InboxPage {
                req,
                entries,
                receipts,
                receipts_more,
                next,
                more,
            } => {
                if let Some(Pending::Drain { device, gateway }) = self.pending.remove(&req) {
                    self.timers.cancel(&Timer::Expire(req));
                    for receipt in receipts {
                        Self::to_device(device, gateway, Down::Receipt { receipt }, out);
                    }
                    for msg in entries {
                        if self.topo.bugs.has(Bug::DeleteInboxOnPush) {
                            Self::delete_inbox(device, &msg, out);
                        }
                        Self::deliver(device, gateway, &msg, Path::Inbox, out);
                    }
                    let page = Down::DrainPage {
                        next,
                        more,
                        receipts_more,
                    };
                    Self::to_device(device, gateway, page, out);
                }
            }
            Rpc::PendingPage {
                req,
                entries,
                next,
                more,
            } => {
                if let Some(Pending::Sweep { slot, .. }) = self.pending.remove(&req) {
                    self.timers.cancel(&Timer::Expire(req));
                    for (device, msg) in entries {
                        self.track(now, device, msg.for_device(device), true, out);
                    }
                    if more {
                        self.sweep(now, slot, next, out);
                    }
                }
            }
            Rpc::LogRange { req, msgs } => {
                if let Some(Pending::Fetch { device, gateway }) = self.pending.remove(&req) {
                    self.timers.cancel(&Timer::Expire(req));
                    for msg in msgs {
                        Self::deliver(device, gateway, &msg, Path::Fetch, out);
                    }
                }
            }
            // Old news: a late answer to an older epoch's write (the slot is held under a
            // newer one now, or not at all).
            Rpc::Fenced { .. } => {}
            // Requests and traffic of other hosts, or between storage and its replicas: not
            // addressed to a shard, and a confused peer must not crash it.
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
            | Rpc::Lease { .. }
            | Rpc::Owner { .. }
            | Rpc::Append { .. }
            | Rpc::FanoutStep { .. }
            | Rpc::ReadFanouts { .. }
            | Rpc::FindMsg { .. }
            | Rpc::ReadInbox { .. }
            | Rpc::PutReceipt { .. }
            | Rpc::ReadQueuedReceipts { .. }
            | Rpc::ReceiptSeen { .. }
            | Rpc::DeleteInbox { .. }
            | Rpc::ReadPending { .. }
            | Rpc::ReadLog { .. }
            | Rpc::Link { .. } => {}
            Rpc::Replicate { .. }
            | Rpc::Replicated { .. }
            | Rpc::ReadOps { .. }
            | Rpc::Ops { .. }
            | Rpc::ReplicaUp => {}
        }
    }

    fn on_timer(&mut self, now: Millis, timer: Timer, out: &mut Vec<Effect>) {
        match timer {
            Timer::Storage(conv) => {
                let Some(c) = self.convs.get(&conv) else {
                    return;
                };
                if c.loading {
                    out.push(Effect::Rpc {
                        to: STORAGE,
                        rpc: Rpc::LoadConv { conv },
                    });
                } else if let Some((p, _)) = &c.checking {
                    let rpc = Rpc::FindMsg { conv, id: p.id };
                    out.push(Effect::Rpc { to: STORAGE, rpc });
                } else if let (Some(f), Some(fence)) = (&c.in_flight, self.fence(conv)) {
                    Self::send_append(f, fence, out);
                } else {
                    return;
                }
                out.push(Effect::Probe(Probe::ShardStorageRetried));
                self.timers
                    .set(Timer::Storage(conv), now + STORAGE_RETRY_MS);
            }
            Timer::Push(key) => self.attempt(now, key, out),
            Timer::ReceiptPush(key) => self.attempt_receipt(now, key, out),
            Timer::Fanout(key) => {
                let step = self.step_devices();
                let job = self.jobs.get(&key).filter(|j| j.stepping);
                if let (Some(job), Some(fence)) = (job, self.fence(key.0)) {
                    out.push(Effect::Probe(Probe::ShardFanoutStepRetried));
                    Self::send_step(key, job, step, fence, out);
                    self.timers.set(Timer::Fanout(key), now + STORAGE_RETRY_MS);
                }
            }
            Timer::Lease => {
                self.timers.set(Timer::Lease, now + SHARD_LEASE_RENEW_MS);
                let renew = self.leases.iter().map(|(s, e)| (*s, *e)).collect();
                // The home slot until held; others only once the table says they ran out.
                let mut acquire: Vec<u16> = Vec::new();
                if !self.leases.contains_key(&self.index) {
                    acquire.push(self.index);
                }
                acquire.extend(self.expired.iter().filter(|s| **s != self.index));
                self.acquiring.extend(acquire.iter().copied());
                let rpc = Rpc::Lease {
                    shard: self.index,
                    renew,
                    acquire,
                };
                out.push(Effect::Rpc { to: STORAGE, rpc });
            }
            // The device retries drains and fetches, and a delivery's own timer retries its
            // lookup; only an unanswered sweep page is asked for again here.
            Timer::Expire(req) => match self.pending.remove(&req) {
                Some(Pending::Sweep { slot, after }) => self.sweep(now, slot, after, out),
                Some(Pending::ReceiptSweep { slot, after }) => {
                    self.sweep_receipts(now, slot, after, out)
                }
                Some(Pending::Fanouts { slot, conv, after }) => {
                    self.read_fanouts(now, slot, conv, after, out)
                }
                // Answered already, or left to the device's or the delivery's own retry.
                Some(Pending::Locate(_))
                | Some(Pending::LocateReceipt(_))
                | Some(Pending::Drain { .. })
                | Some(Pending::Fetch { .. })
                | None => {}
            },
        }
    }
}

impl Machine for Shard {
    fn handle(&mut self, now: Millis, input: Input, out: &mut Vec<Effect>) {
        match input {
            Input::Rpc {
                from: Host::Gateway(g),
                rpc: Rpc::FromDevice { device, up },
            } => {
                self.on_from_device(now, g, device, up, out);
            }
            Input::Rpc {
                from: Host::Gateway(g),
                rpc: Rpc::NotHere { device, missed },
            } => self.not_here(now, g, device, missed, out),
            Input::Rpc {
                from: Host::Session,
                rpc: Rpc::Located { answers },
            } => {
                for (req, at) in answers {
                    self.on_located(now, req, at, out);
                }
            }
            Input::Rpc {
                from: Host::Storage(_),
                rpc,
            } => self.on_storage(now, rpc, out),
            Input::Timeout => {
                while let Some(t) = self.timers.pop_due(now) {
                    self.on_timer(now, t, out);
                }
            }
            // An RPC from a host, or of a kind, a shard does not serve (gateways send only
            // device frames, the session service only locations): a confused peer must not
            // crash it.
            Input::Rpc { .. } => {}
            // Only gateways hold connections and only phones have users: the hosts never hand
            // these to this machine.
            input => crate::not_for_this_host("a shard", &input),
        }
        self.send_asks(out);
    }

    fn poll_timeout(&self) -> Option<Millis> {
        self.timers.next()
    }
}
