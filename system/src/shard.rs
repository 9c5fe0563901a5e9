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
//! [`FANOUT_STEP_DEVICES`] (park inbox entries and move the cursor in one write, then push),
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

use crate::bugs::Bug;
use crate::limits::{
    CONV_QUEUE_MAX, DELIVERIES_TRACKED_MAX, FANOUT_STEP_DEVICES, GAP_FETCH_SEQS_MAX,
    GROUP_MEMBERS_MAX, INBOX_PAGE_SIZE, LOOKUP_TIMEOUT_MS, PUSH_ATTEMPTS_MAX, PUSH_RETRY_MS_MAX,
    PUSH_RETRY_MS_MIN, SHARD_LEASE_RENEW_MS, STORAGE_RETRY_MS, SWEEP_PAGE_SIZE,
};
use crate::proto::{
    ConvId, DeviceId, Down, GroupEvent, GroupOp, Host, LeaseView, Message, Millis, MsgId, Path,
    Receipt, ReceiptKind, Refusal, Rpc, Seq, Up, UserId,
};
use crate::routing::shard_for_conv;
use crate::timers::Timers;
use crate::{Deployment, Effect, Input, Machine};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The storage node every shard writes to (one in this design; replicated later).
const STORAGE: Host = Host::Storage(0);

#[derive(Clone, Debug)]
struct PendingSend {
    device: DeviceId,
    gateway: u16,
    id: MsgId,
    body: Vec<u8>,
    sent_at: Millis,
    op: Option<GroupOp>,
    version: Seq,
    keys: Vec<(DeviceId, Vec<u8>)>,
}

/// A write on its way to storage: the message with its sequence number, and who gets it.
#[derive(Clone, Debug)]
struct InFlight {
    device: DeviceId,
    gateway: u16,
    msg: Message,
    /// Inbox entries written with the append (direct messages).
    recipients: Vec<DeviceId>,
    /// The fan-out job written with the append (groups).
    fanout: Vec<DeviceId>,
    /// Whether that job parks inbox entries (false: the group is read from its log).
    park: bool,
    /// Kept so a conflict can put the send back in the queue as it came.
    send: PendingSend,
}

#[derive(Clone, Debug)]
struct Group {
    version: Seq,
    members: BTreeSet<UserId>,
}

#[derive(Clone, Debug, Default)]
struct Conv {
    last_seq: Option<Seq>,
    /// Groups: the membership in force (`None` until loaded, or when the group does not exist).
    group: Option<Group>,
    loading: bool,
    queue: VecDeque<PendingSend>,
    in_flight: Option<InFlight>,
    /// A group send about to be refused, while storage says whether it is a retry of one
    /// already stored (then it gets its ✓, not a refusal).
    checking: Option<(PendingSend, Refusal)>,
    /// Only with `sync-fanout`: the next write waits until this conversation's fan-out is done.
    blocked: bool,
    /// Devices waiting for a `Pulled` answer until the conversation is loaded.
    pullers: Vec<(DeviceId, u16)>,
}

/// A group message's fan-out in progress.
#[derive(Clone, Debug)]
struct Job {
    msg: Message,
    devices: Vec<DeviceId>,
    next: u32,
    stepping: bool,
    /// False for a group read from its log: steps push without parking inbox entries.
    park: bool,
    /// Only with `sync-fanout`: the ✓ held back until the job is done.
    ack: Option<(DeviceId, u16)>,
}

/// One message on its way to one device: (device, conversation, sequence number).
type DeliveryKey = (DeviceId, ConvId, Seq);

#[derive(Clone, Debug)]
struct Delivery {
    msg: Message,
    attempts: u32,
    /// False for a text of a group read from its log: no inbox entry to delete on the ack.
    parked: bool,
}

/// One receipt on its way to one sender device: (sender device, conversation, reader, kind).
type ReceiptPushKey = (DeviceId, ConvId, DeviceId, ReceiptKind);

#[derive(Clone, Debug)]
struct ReceiptPush {
    upto: Seq,
    attempts: u32,
}

#[derive(Clone, Debug)]
enum Pending {
    Locate(DeliveryKey),
    LocateReceipt(ReceiptPushKey),
    Drain {
        device: DeviceId,
        gateway: u16,
    },
    Fetch {
        device: DeviceId,
        gateway: u16,
    },
    Sweep {
        slot: u16,
        after: Option<DeliveryKey>,
    },
    ReceiptSweep {
        slot: u16,
        after: Option<(DeviceId, Receipt)>,
    },
    Fanouts {
        slot: u16,
        conv: Option<ConvId>,
        after: Option<(ConvId, Seq)>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Storage(ConvId),
    Push(DeliveryKey),
    ReceiptPush(ReceiptPushKey),
    Fanout((ConvId, Seq)),
    Lease,
    Expire(u64),
}

/// A chat shard.
#[derive(Clone, Debug)]
pub struct Shard {
    index: u16,
    topo: Deployment,
    convs: BTreeMap<ConvId, Conv>,
    pending: BTreeMap<u64, Pending>,
    deliveries: BTreeMap<DeliveryKey, Delivery>,
    /// Receipts pushed to sender devices, retried until seen (or the device is not connected:
    /// then its next drain brings them, from storage's queue).
    receipt_pushes: BTreeMap<ReceiptPushKey, ReceiptPush>,
    jobs: BTreeMap<(ConvId, Seq), Job>,
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
    timers: Timers<Timer>,
}

impl Shard {
    /// Shard number `index` with empty memory (first boot or after a crash).
    pub fn new(index: u16, topo: Deployment) -> Shard {
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

    /// Sends queued or in flight over all conversations.
    pub fn queued(&self) -> usize {
        self.convs
            .values()
            .map(|c| c.queue.len() + usize::from(c.in_flight.is_some()))
            .sum()
    }

    fn request(&mut self, now: Millis, p: Pending) -> u64 {
        self.next_req += 1;
        self.pending.insert(self.next_req, p);
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

    /// The recipients of a direct message `sender` sealed a copy for: a device linked after
    /// it was stored (or, before that, unknown to the sender) has none and cannot open it.
    /// Storage refuses a message missing a copy for a device linked before it.
    fn sealed_recipients(
        topo: &Deployment,
        conv: ConvId,
        sender: DeviceId,
        body: &[u8],
    ) -> Vec<DeviceId> {
        let mut all = topo.recipients(conv, sender);
        if !topo.late_devices.is_empty() {
            let bundle = crate::e2e::Bundle::decode(body);
            all.retain(|d| bundle.as_ref().is_some_and(|b| b.copy_for(*d).is_some()));
        }
        all
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

    fn send_append(f: &InFlight, fence: (u16, u64), out: &mut Vec<Effect>) {
        out.push(Effect::Rpc {
            to: STORAGE,
            rpc: Rpc::Append {
                fence,
                msg: f.msg.clone(),
                recipients: f.recipients.clone(),
                fanout: f.fanout.clone(),
                park: f.park,
            },
        });
    }

    /// Give `p` sequence number `seq`, or say why not. For a group this is the moment the
    /// membership decides: who receives it, and whether the sender may post at all.
    fn admit(&self, conv: ConvId, p: &PendingSend, seq: Seq) -> Result<InFlight, Refusal> {
        let mut msg = Message {
            conv,
            seq,
            id: p.id,
            body: p.body.clone(),
            sent_at: p.sent_at,
            event: None,
            keys: Vec::new(),
        };
        if !conv.is_group() {
            let recipients = if self.topo.bugs.has(Bug::NoOfflineInbox) {
                Vec::new()
            } else {
                Self::sealed_recipients(&self.topo, conv, p.device, &p.body)
            };
            return Ok(InFlight {
                device: p.device,
                gateway: p.gateway,
                msg,
                recipients,
                fanout: Vec::new(),
                park: true,
                send: p.clone(),
            });
        }
        let group = self.convs.get(&conv).and_then(|c| c.group.as_ref());
        let sender = p.device.user;
        let (before, after): (BTreeSet<UserId>, BTreeSet<UserId>) = match (&p.op, group) {
            (Some(GroupOp::Create { members }), None) if seq == 1 => {
                let mut after: BTreeSet<UserId> = members.iter().copied().collect();
                after.insert(sender);
                if !after.iter().all(|u| self.topo.has_user(*u)) {
                    return Err(Refusal::BadGroupOp);
                }
                if after.len() > GROUP_MEMBERS_MAX {
                    return Err(Refusal::GroupFull);
                }
                (BTreeSet::new(), after)
            }
            (Some(GroupOp::Create { .. }), _) => return Err(Refusal::BadGroupOp),
            (_, None) => return Err(Refusal::NotMember),
            (op, Some(g)) => {
                // Without the check the sender's own idea of the membership is taken too:
                // a design that does not check membership has no use for its version either.
                let unchecked = self.topo.bugs.has(Bug::NoMemberCheck);
                if !g.members.contains(&sender) && !unchecked {
                    return Err(Refusal::NotMember);
                }
                if p.version != g.version && !unchecked {
                    let version = g.version;
                    return Err(Refusal::StaleMembers { version });
                }
                let mut after = g.members.clone();
                match op {
                    Some(GroupOp::Add { user }) => {
                        if !self.topo.has_user(*user) || g.members.contains(user) {
                            return Err(Refusal::BadGroupOp);
                        }
                        if g.members.len() >= GROUP_MEMBERS_MAX {
                            return Err(Refusal::GroupFull);
                        }
                        after.insert(*user);
                    }
                    Some(GroupOp::Remove { user }) if !g.members.contains(user) => {
                        return Err(Refusal::BadGroupOp);
                    }
                    Some(GroupOp::Remove { user }) => {
                        after.remove(user);
                    }
                    _ => {}
                }
                (g.members.clone(), after)
            }
        };
        // A membership change goes to the old members and the new (a removed member learns
        // it was removed; an added one learns the whole list); a text goes to the members.
        let users: BTreeSet<UserId> = before.union(&after).copied().collect();
        let fanout = users
            .iter()
            .flat_map(|u| self.topo.devices_of(*u))
            .filter(|d| *d != p.device)
            .collect();
        // Fan-out on read: a text to a group over the threshold parks nothing; membership
        // changes always park, since a member must learn of a group to pull from it.
        let over = self.topo.fanout_on_read_over;
        let park = p.op.is_some() || over == 0 || before.len() <= over as usize;
        if let Some(op) = p.op.clone() {
            msg.event = Some(GroupEvent {
                op,
                members: after.into_iter().collect(),
            });
        }
        msg.keys = p.keys.clone();
        Ok(InFlight {
            device: p.device,
            gateway: p.gateway,
            msg,
            recipients: Vec::new(),
            fanout,
            park,
            send: p.clone(),
        })
    }

    /// Ask storage for the conversation's last sequence number and membership, unless a load
    /// is already out (its retry timer covers a lost answer).
    fn load(&mut self, now: Millis, conv: ConvId, out: &mut Vec<Effect>) {
        let c = self.convs.entry(conv).or_default();
        if c.loading {
            return;
        }
        c.loading = true;
        out.push(Effect::Rpc {
            to: STORAGE,
            rpc: Rpc::LoadConv { conv },
        });
        self.timers
            .set(Timer::Storage(conv), now + STORAGE_RETRY_MS);
    }

    /// Start the next write of `conv` if none is in flight.
    fn pump(&mut self, now: Millis, conv: ConvId, out: &mut Vec<Effect>) {
        loop {
            let c = self.convs.entry(conv).or_default();
            if c.in_flight.is_some() || c.checking.is_some() || c.blocked {
                return;
            }
            let Some(last) = c.last_seq else {
                if !c.queue.is_empty() {
                    self.load(now, conv, out);
                }
                return;
            };
            if c.queue.is_empty() {
                self.timers.cancel(&Timer::Storage(conv));
                return;
            }
            // Only the slot's lease holder sequences: the queue waits for a grant (or is
            // dropped when another host turns out to hold it).
            let Some(fence) = self.fence(conv) else {
                return;
            };
            let c = self.convs.entry(conv).or_default();
            let Some(p) = c.queue.pop_front() else {
                return;
            };
            let flight = match self.admit(conv, &p, last + 1) {
                Ok(f) => f,
                Err(reason) if conv.is_group() => {
                    // A retry of a send stored by an earlier life (its ✓ lost in a crash)
                    // would be refused against the membership it changed itself, or after
                    // its sender left: ask storage first.
                    out.push(Effect::Rpc {
                        to: STORAGE,
                        rpc: Rpc::FindMsg { conv, id: p.id },
                    });
                    self.convs.entry(conv).or_default().checking = Some((p, reason));
                    self.timers
                        .set(Timer::Storage(conv), now + STORAGE_RETRY_MS);
                    return;
                }
                Err(reason) => {
                    Self::refuse(p.device, p.gateway, reason, Some(p.id), out);
                    continue;
                }
            };
            Self::send_append(&flight, fence, out);
            if self.topo.bugs.has(Bug::AckBeforePersist) {
                let sent = Down::Sent {
                    conv,
                    id: flight.msg.id,
                    seq: last + 1,
                };
                Self::to_device(flight.device, flight.gateway, sent, out);
            }
            self.convs.entry(conv).or_default().in_flight = Some(flight);
            self.timers
                .set(Timer::Storage(conv), now + STORAGE_RETRY_MS);
            return;
        }
    }

    fn on_send(&mut self, now: Millis, conv: ConvId, send: PendingSend, out: &mut Vec<Effect>) {
        let (device, gateway, id) = (send.device, send.gateway, send.id);
        // Group membership is checked when the sequence number is assigned, not here: it may
        // change while the send waits in the queue.
        if id.device != device || (!conv.is_group() && !self.is_member(conv, device)) {
            Self::refuse(device, gateway, Refusal::NotMember, Some(id), out);
            return;
        }
        let c = self.convs.entry(conv).or_default();
        // A retry of a send already queued or in flight: answer on the newest connection.
        if let Some(f) = c.in_flight.as_mut().filter(|f| f.msg.id == id) {
            f.gateway = gateway;
            return;
        }
        if let Some(p) = c.queue.iter_mut().find(|p| p.id == id) {
            // A retry resealed for a newer membership replaces what was queued.
            *p = send;
            return;
        }
        if c.queue.len() >= CONV_QUEUE_MAX {
            Self::refuse(device, gateway, Refusal::Busy, Some(id), out);
            return;
        }
        c.queue.push_back(send);
        self.pump(now, conv, out);
    }

    fn on_appended(
        &mut self,
        now: Millis,
        conv: ConvId,
        id: MsgId,
        seq: Seq,
        duplicate: bool,
        out: &mut Vec<Effect>,
    ) {
        let Some(c) = self.convs.get_mut(&conv) else {
            return;
        };
        let Some(f) = c.in_flight.take_if(|f| f.msg.id == id) else {
            return;
        };
        c.last_seq = Some(c.last_seq.unwrap_or(0).max(seq));
        self.timers.cancel(&Timer::Storage(conv));
        if conv.is_group() {
            let sync = self.topo.bugs.has(Bug::SyncFanout) && !duplicate;
            if duplicate {
                // Stored by an earlier life of this shard: our idea of the conversation (its
                // membership above all) may predate it, so reload before the next send; its
                // fan-out job may still be waiting in storage.
                c.last_seq = None;
                c.group = None;
                Self::to_device(f.device, f.gateway, Down::Sent { conv, id, seq }, out);
                let slot = self.slot(conv);
                self.read_fanouts(now, slot, Some(conv), None, out);
            } else {
                if let Some(e) = &f.msg.event {
                    c.group = Some(Group {
                        version: seq,
                        members: e.members.iter().copied().collect(),
                    });
                }
                if sync {
                    c.blocked = true;
                } else {
                    // Durable: ✓ now; the fan-out follows on its own.
                    Self::to_device(f.device, f.gateway, Down::Sent { conv, id, seq }, out);
                }
                let job = Job {
                    msg: f.msg,
                    devices: f.fanout,
                    next: 0,
                    stepping: false,
                    park: f.park,
                    ack: sync.then_some((f.device, f.gateway)),
                };
                self.jobs.insert((conv, seq), job);
                self.fanout_pump(now, conv, out);
            }
        } else {
            // Durable: now, and only now, the sender may see ✓.
            Self::to_device(f.device, f.gateway, Down::Sent { conv, id, seq }, out);
            let msg = Message { seq, ..f.msg };
            for device in Self::sealed_recipients(&self.topo, conv, f.device, &msg.body) {
                if self.topo.bugs.has(Bug::NoSessionService) {
                    // Without a directory the only gateway this shard knows is the sender's.
                    self.push(device, &msg, f.gateway, out);
                } else {
                    self.track(now, device, msg.clone(), true, out);
                }
            }
        }
        self.pump(now, conv, out);
    }

    /// Step the oldest unfinished fan-out of `conv`, unless a step is already out.
    fn fanout_pump(&mut self, now: Millis, conv: ConvId, out: &mut Vec<Effect>) {
        let step = self.step_devices();
        // One job at a time per group, the oldest first: a job read back after a restart may
        // be older than one already stepping, and then waits for it.
        let range = (conv, 0)..=(conv, Seq::MAX);
        if self.jobs.range(range.clone()).any(|(_, j)| j.stepping) {
            return;
        }
        let Some(fence) = self.fence(conv) else {
            return;
        };
        let Some((&key, job)) = self.jobs.range_mut(range).next() else {
            return;
        };
        job.stepping = true;
        Self::send_step(key, job, step, fence, out);
        self.timers.set(Timer::Fanout(key), now + STORAGE_RETRY_MS);
    }

    /// Devices per fan-out step. With `sync-fanout`, the naive loop: one write per member,
    /// all inside the send path.
    fn step_devices(&self) -> usize {
        if self.topo.bugs.has(Bug::SyncFanout) {
            1
        } else {
            FANOUT_STEP_DEVICES
        }
    }

    fn send_step(
        key: (ConvId, Seq),
        job: &Job,
        step: usize,
        fence: (u16, u64),
        out: &mut Vec<Effect>,
    ) {
        let from = job.next as usize;
        let to = (from + step).min(job.devices.len());
        let rpc = Rpc::FanoutStep {
            fence,
            conv: key.0,
            seq: key.1,
            from: job.next,
            devices: job.devices[from.min(to)..to].to_vec(),
            park: job.park,
        };
        out.push(Effect::Rpc { to: STORAGE, rpc });
    }

    fn on_fanout_stepped(
        &mut self,
        now: Millis,
        key: (ConvId, Seq),
        next: u32,
        out: &mut Vec<Effect>,
    ) {
        let Some(job) = self.jobs.get_mut(&key) else {
            return;
        };
        if next <= job.next && !job.devices.is_empty() {
            return; // An answer to a step already counted.
        }
        let parked: Vec<DeviceId> =
            job.devices[job.next as usize..(next as usize).min(job.devices.len())].to_vec();
        job.next = next;
        job.stepping = false;
        let msg = job.msg.clone();
        let park = job.park;
        let done = next as usize >= job.devices.len();
        self.timers.cancel(&Timer::Fanout(key));
        for device in parked {
            self.track(now, device, msg.for_device(device), park, out);
        }
        if done {
            if let Some(job) = self.jobs.remove(&key) {
                if let Some((device, gateway)) = job.ack {
                    let sent = Down::Sent {
                        conv: key.0,
                        id: msg.id,
                        seq: key.1,
                    };
                    Self::to_device(device, gateway, sent, out);
                }
            }
            if let Some(c) = self.convs.get_mut(&key.0) {
                if c.blocked
                    && !self
                        .jobs
                        .range((key.0, 0)..=(key.0, Seq::MAX))
                        .any(|(_, j)| j.ack.is_some())
                {
                    c.blocked = false;
                    self.pump(now, key.0, out);
                }
            }
        }
        self.fanout_pump(now, key.0, out);
    }

    fn read_fanouts(
        &mut self,
        now: Millis,
        slot: u16,
        conv: Option<ConvId>,
        after: Option<(ConvId, Seq)>,
        out: &mut Vec<Effect>,
    ) {
        let req = self.request(now, Pending::Fanouts { slot, conv, after });
        let rpc = Rpc::ReadFanouts {
            req,
            shard: slot,
            shards: self.topo.shards,
            conv,
            after,
        };
        out.push(Effect::Rpc { to: STORAGE, rpc });
    }

    fn on_from_device(
        &mut self,
        now: Millis,
        gateway: u16,
        device: DeviceId,
        up: Up,
        out: &mut Vec<Effect>,
    ) {
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
                self.untrack(key);
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
                    limit: INBOX_PAGE_SIZE,
                };
                out.push(Effect::Rpc { to: STORAGE, rpc });
            }
            Up::Fetch { conv, from, to } => {
                // In a group, storage shows the reader only what they may see.
                if !conv.is_group() && !self.is_member(conv, device) {
                    Self::refuse(device, gateway, Refusal::NotMember, None, out);
                    return;
                }
                let to = to.min(from.saturating_add(GAP_FETCH_SEQS_MAX - 1));
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
                        Self::to_device(device, gateway, Down::Pulled { conv, last }, out)
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
                if !conv.is_group() && !self.is_member(conv, device) {
                    Self::refuse(device, gateway, Refusal::NotMember, None, out);
                    return;
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
                let rpc = Rpc::PutReceipt {
                    receipt,
                    notify,
                    via: gateway,
                };
                out.push(Effect::Rpc { to: STORAGE, rpc });
            }
            Up::ReceiptSeen { receipt } => {
                let key = (device, receipt.conv, receipt.reader, receipt.kind);
                if self
                    .receipt_pushes
                    .get(&key)
                    .is_some_and(|p| p.upto <= receipt.upto)
                {
                    self.receipt_pushes.remove(&key);
                    self.timers.cancel(&Timer::ReceiptPush(key));
                }
                let rpc = Rpc::ReceiptSeen { device, receipt };
                out.push(Effect::Rpc { to: STORAGE, rpc });
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

    /// The lease table after our renewal: take up slots newly ours, drop slots lost, and tell
    /// every gateway which slots we hold.
    fn on_lease_table(&mut self, now: Millis, leases: Vec<LeaseView>, out: &mut Vec<Effect>) {
        let me = self.index;
        let mine: BTreeMap<u16, u64> = leases
            .iter()
            .filter(|l| l.owner == me && l.live)
            .filter(|l| {
                self.leases.get(&l.slot) == Some(&l.epoch) || self.acquiring.contains(&l.slot)
            })
            .map(|l| (l.slot, l.epoch))
            .collect();
        self.acquiring.retain(|s| !mine.contains_key(s));
        self.expired = leases
            .iter()
            .filter(|l| !mine.contains_key(&l.slot) && (!l.live || l.owner == me))
            .map(|l| l.slot)
            .collect();
        let lost: Vec<u16> = self
            .leases
            .iter()
            .filter(|(s, e)| mine.get(s) != Some(e))
            .map(|(s, _)| *s)
            .collect();
        for slot in lost {
            self.lose(slot);
        }
        // Sends queued here for a slot another host holds will be retried there.
        let others: BTreeSet<u16> = leases
            .iter()
            .filter(|l| l.owner != me && l.live)
            .map(|l| l.slot)
            .collect();
        let shards = self.topo.shards;
        self.convs
            .retain(|conv, _| !others.contains(&shard_for_conv(*conv, shards)));
        for (&slot, &epoch) in &mine {
            if self.leases.insert(slot, epoch) != Some(epoch) {
                self.take_over(now, slot, out);
            }
            for g in 0..self.topo.gateways {
                let rpc = Rpc::Owner { slot, epoch };
                out.push(Effect::Rpc {
                    to: Host::Gateway(g),
                    rpc,
                });
            }
        }
    }

    /// `slot` is newly ours: what its last owner was doing (deliveries in inboxes, fan-out
    /// jobs, receipts queued) is read back from storage, and each conversation's next
    /// sequence number is reloaded before anything is sequenced.
    fn take_over(&mut self, now: Millis, slot: u16, out: &mut Vec<Effect>) {
        self.sweep(now, slot, None, out);
        self.sweep_receipts(now, slot, None, out);
        self.read_fanouts(now, slot, None, None, out);
        let convs: Vec<ConvId> = self
            .convs
            .iter_mut()
            .filter(|(conv, _)| shard_for_conv(**conv, self.topo.shards) == slot)
            .map(|(conv, c)| {
                if c.in_flight.is_none() && !c.loading {
                    c.last_seq = None;
                    c.group = None;
                }
                *conv
            })
            .collect();
        for conv in convs {
            self.pump(now, conv, out);
        }
    }

    /// `slot` is no longer ours (fenced, or the table shows another owner): forget its
    /// conversations, so nothing more is written or pushed for it from here.
    fn lose(&mut self, slot: u16) {
        self.leases.remove(&slot);
        // Sweeps still out for the slot would bring its deliveries and jobs back.
        let reading: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| match p {
                Pending::Sweep { slot: s, .. }
                | Pending::ReceiptSweep { slot: s, .. }
                | Pending::Fanouts { slot: s, .. } => *s == slot,
                _ => false,
            })
            .map(|(req, _)| *req)
            .collect();
        for req in reading {
            self.pending.remove(&req);
            self.timers.cancel(&Timer::Expire(req));
        }
        let shards = self.topo.shards;
        let theirs = |conv: ConvId| shard_for_conv(conv, shards) == slot;
        self.convs.retain(|conv, _| !theirs(*conv));
        self.jobs.retain(|(conv, _), _| !theirs(*conv));
        self.deliveries.retain(|(_, conv, _), _| !theirs(*conv));
        self.receipt_pushes
            .retain(|(_, conv, _, _), _| !theirs(*conv));
    }

    /// Tell `to` about `receipt` through its gateway; with `retry`, keep at it until the device
    /// says it saw it (or is not connected).
    fn push_receipt(
        &mut self,
        now: Millis,
        to: DeviceId,
        receipt: Receipt,
        retry: bool,
        out: &mut Vec<Effect>,
    ) {
        let key = (to, receipt.conv, receipt.reader, receipt.kind);
        let p = self.receipt_pushes.entry(key).or_insert(ReceiptPush {
            upto: 0,
            attempts: 0,
        });
        p.upto = p.upto.max(receipt.upto);
        // Without retries this first attempt is also the last.
        p.attempts = if retry { 0 } else { PUSH_ATTEMPTS_MAX - 1 };
        self.attempt_receipt(now, key, out);
    }

    fn attempt_receipt(&mut self, now: Millis, key: ReceiptPushKey, out: &mut Vec<Effect>) {
        let Some(p) = self.receipt_pushes.get_mut(&key) else {
            return;
        };
        if p.attempts >= PUSH_ATTEMPTS_MAX {
            self.receipt_pushes.remove(&key);
            return;
        }
        p.attempts += 1;
        let delay = Self::push_retry_delay(p.attempts);
        self.timers.set(Timer::ReceiptPush(key), now + delay);
        self.locate(now, key.0.user, Pending::LocateReceipt(key), out);
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
                        Self::to_device(device, gateway, pulled, out);
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
            _ => {}
        }
    }

    /// Start tracking the delivery of `msg` to `device` and make the first attempt.
    fn track(
        &mut self,
        now: Millis,
        device: DeviceId,
        msg: Message,
        parked: bool,
        out: &mut Vec<Effect>,
    ) {
        let key = (device, msg.conv, msg.seq);
        if self.deliveries.contains_key(&key) {
            return;
        }
        if self.deliveries.len() >= DELIVERIES_TRACKED_MAX {
            // Over the bound the inbox alone carries it: the device drains on connect.
            return;
        }
        let delivery = Delivery {
            msg,
            attempts: 0,
            parked,
        };
        self.deliveries.insert(key, delivery);
        self.attempt(now, key, out);
    }

    fn untrack(&mut self, key: DeliveryKey) {
        self.deliveries.remove(&key);
        self.timers.cancel(&Timer::Push(key));
    }

    /// One delivery attempt: ask where the device is; retry later unless it acks first.
    fn attempt(&mut self, now: Millis, key: DeliveryKey, out: &mut Vec<Effect>) {
        let Some(d) = self.deliveries.get_mut(&key) else {
            return;
        };
        if d.attempts >= PUSH_ATTEMPTS_MAX {
            // Given up; the message still waits in the inbox for the device's next drain.
            self.untrack(key);
            return;
        }
        d.attempts += 1;
        let delay = Self::push_retry_delay(d.attempts);
        self.timers.set(Timer::Push(key), now + delay);
        self.locate(now, key.0.user, Pending::Locate(key), out);
    }

    /// The wait before the next try of a push tried `attempts` times: doubling, capped.
    fn push_retry_delay(attempts: u32) -> Millis {
        PUSH_RETRY_MS_MIN
            .saturating_mul(1 << attempts.saturating_sub(1).min(16))
            .min(PUSH_RETRY_MS_MAX)
    }

    /// Ask the session service where `user`'s devices are; the answer goes to `then`.
    fn locate(&mut self, now: Millis, user: UserId, then: Pending, out: &mut Vec<Effect>) {
        let req = self.request(now, then);
        out.push(Effect::Rpc {
            to: Host::Session,
            rpc: Rpc::Lookup { req, user },
        });
    }

    fn on_located(&mut self, req: u64, at: Vec<(DeviceId, u16)>, out: &mut Vec<Effect>) {
        let key = match self.pending.remove(&req) {
            Some(Pending::Locate(key)) => key,
            Some(Pending::LocateReceipt(key)) => {
                self.timers.cancel(&Timer::Expire(req));
                let Some(p) = self.receipt_pushes.get(&key) else {
                    return;
                };
                let receipt = Receipt {
                    conv: key.1,
                    reader: key.2,
                    kind: key.3,
                    upto: p.upto,
                };
                match at.iter().find(|(device, _)| *device == key.0) {
                    Some(&(device, gateway)) => {
                        Self::to_device(device, gateway, Down::Receipt { receipt }, out);
                    }
                    // Not connected: storage keeps it for the device's next drain.
                    None => {
                        self.receipt_pushes.remove(&key);
                        self.timers.cancel(&Timer::ReceiptPush(key));
                    }
                }
                return;
            }
            _ => return,
        };
        self.timers.cancel(&Timer::Expire(req));
        let Some(d) = self.deliveries.get(&key) else {
            return;
        };
        match at.iter().find(|(device, _)| *device == key.0) {
            Some(&(device, gateway)) => {
                let msg = d.msg.clone();
                self.push(device, &msg, gateway, out);
                if self.topo.bugs.has(Bug::DeleteInboxOnPush) {
                    // Pushed counts as delivered: no entry, no retry.
                    self.untrack(key);
                }
            }
            // Not connected: it drains its inbox when it connects, so stop here, and ask the
            // push provider to wake it (a push only hurries that along).
            None => {
                self.untrack(key);
                let rpc = Rpc::Notify { device: key.0 };
                out.push(Effect::Rpc {
                    to: Host::Push,
                    rpc,
                });
            }
        }
    }

    fn delete_inbox(device: DeviceId, msg: &Message, out: &mut Vec<Effect>) {
        let rpc = Rpc::DeleteInbox {
            device,
            conv: msg.conv,
            seq: msg.seq,
        };
        out.push(Effect::Rpc { to: STORAGE, rpc });
    }

    /// Push `msg` live to `device` at `gateway`.
    fn push(&self, device: DeviceId, msg: &Message, gateway: u16, out: &mut Vec<Effect>) {
        if self.topo.bugs.has(Bug::DeleteInboxOnPush) {
            Self::delete_inbox(device, msg, out);
        }
        Self::deliver(device, gateway, msg, Path::Live, out);
    }

    /// Receipts a previous life stored but may not have pushed: push them again.
    fn sweep_receipts(
        &mut self,
        now: Millis,
        slot: u16,
        after: Option<(DeviceId, Receipt)>,
        out: &mut Vec<Effect>,
    ) {
        let req = self.request(now, Pending::ReceiptSweep { slot, after });
        let rpc = Rpc::ReadQueuedReceipts {
            req,
            shard: slot,
            shards: self.topo.shards,
            after,
        };
        out.push(Effect::Rpc { to: STORAGE, rpc });
    }

    fn sweep(&mut self, now: Millis, slot: u16, after: Option<DeliveryKey>, out: &mut Vec<Effect>) {
        let req = self.request(now, Pending::Sweep { slot, after });
        let rpc = Rpc::ReadPending {
            req,
            shard: slot,
            shards: self.topo.shards,
            after,
            limit: SWEEP_PAGE_SIZE,
        };
        out.push(Effect::Rpc { to: STORAGE, rpc });
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
                self.timers
                    .set(Timer::Storage(conv), now + STORAGE_RETRY_MS);
            }
            Timer::Push(key) => self.attempt(now, key, out),
            Timer::ReceiptPush(key) => self.attempt_receipt(now, key, out),
            Timer::Fanout(key) => {
                let step = self.step_devices();
                let job = self.jobs.get(&key).filter(|j| j.stepping);
                if let (Some(job), Some(fence)) = (job, self.fence(key.0)) {
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
                _ => {}
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
                from: Host::Session,
                rpc: Rpc::Located { req, at },
            } => self.on_located(req, at, out),
            Input::Rpc {
                from: Host::Storage(_),
                rpc,
            } => self.on_storage(now, rpc, out),
            Input::Timeout => {
                while let Some(t) = self.timers.pop_due(now) {
                    self.on_timer(now, t, out);
                }
            }
            _ => {}
        }
    }

    fn poll_timeout(&self) -> Option<Millis> {
        self.timers.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::UserId;

    fn topo() -> Deployment {
        Deployment {
            users: 3,
            gateways: 1,
            shards: 1,
            ..Deployment::default()
        }
    }

    fn send(from: DeviceId, id: MsgId, conv: ConvId) -> Input {
        Input::Rpc {
            from: Host::Gateway(0),
            rpc: Rpc::FromDevice {
                device: from,
                up: Up::Send {
                    conv,
                    id,
                    body: b"hello".to_vec(),
                    sent_at: 0,
                    op: None,
                    version: 0,
                    keys: Vec::new(),
                },
            },
        }
    }

    fn refusals(out: &[Effect]) -> Vec<Refusal> {
        out.iter()
            .filter_map(|e| match e {
                Effect::Rpc {
                    rpc:
                        Rpc::ToDevice {
                            down: Down::Refused { reason, .. },
                            ..
                        },
                    ..
                } => Some(*reason),
                _ => None,
            })
            .collect()
    }

    // A frame whose message id names another device than the one the gateway authenticated
    // is refused before it reaches storage: nobody posts as someone else. So is a post to a
    // direct conversation the sender is not in.
    #[test]
    fn a_send_as_someone_else_or_into_someone_elses_chat_is_refused() {
        let (a, b, c) = (
            DeviceId::primary(UserId(0)),
            DeviceId::primary(UserId(1)),
            DeviceId::primary(UserId(2)),
        );
        let mut shard = Shard::new(0, topo());
        let mut out = Vec::new();
        let forged = MsgId { device: b, n: 0 };
        shard.handle(1, send(a, forged, ConvId::direct(a.user, b.user)), &mut out);
        assert_eq!(refusals(&out), vec![Refusal::NotMember]);
        assert!(!out.iter().any(|e| matches!(
            e,
            Effect::Rpc {
                to: Host::Storage(_),
                ..
            }
        )));
        out.clear();
        let own = MsgId { device: c, n: 0 };
        shard.handle(2, send(c, own, ConvId::direct(a.user, b.user)), &mut out);
        assert_eq!(refusals(&out), vec![Refusal::NotMember]);
        out.clear();
        let fine = MsgId { device: a, n: 1 };
        shard.handle(3, send(a, fine, ConvId::direct(a.user, b.user)), &mut out);
        assert!(refusals(&out).is_empty());
        assert!(out.iter().any(|e| matches!(
            e,
            Effect::Rpc {
                rpc: Rpc::LoadConv { .. },
                ..
            }
        )));
    }
}
