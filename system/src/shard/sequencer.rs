//! Sequencing: a send is queued per conversation, admitted (for a group, against the
//! membership in force when it takes its number), given the next sequence number and written
//! to storage one at a time; sent ✓ goes back only once storage says the write is durable.

use super::fanout::Job;
use super::{Shard, Timer, STORAGE};
use crate::bugs::Bug;
use crate::limits::{GROUP_MEMBERS_MAX, STORAGE_RETRY_MS};
use crate::probe::Probe;
use crate::proto::{
    ConvId, DeviceId, Down, GroupEvent, GroupOp, Message, Millis, MsgId, Refusal, Rpc, Seq, UserId,
};
use crate::{Deployment, Effect};
use std::collections::{BTreeSet, VecDeque};

/// A send waiting in its conversation's queue, as the device framed it.
#[derive(Clone, Debug, Hash)]
pub(super) struct PendingSend {
    /// The sending device.
    pub(super) device: DeviceId,
    /// The gateway its frame came through (answers go back there).
    pub(super) gateway: u16,
    /// Its client id, the same on every retry.
    pub(super) id: MsgId,
    /// The sealed body.
    pub(super) body: Vec<u8>,
    /// The sender's clock when composed (never used for ordering).
    pub(super) sent_at: Millis,
    /// The membership change it asks for, if it is one.
    pub(super) op: Option<GroupOp>,
    /// Groups: the membership version the sender sealed for.
    pub(super) version: Seq,
    /// Groups: the sender key, sealed per member device (empty once distributed).
    pub(super) keys: Vec<(DeviceId, Vec<u8>)>,
}

/// A write on its way to storage: the message with its sequence number, and who gets it.
#[derive(Clone, Debug, Hash)]
pub(super) struct InFlight {
    /// The sending device.
    pub(super) device: DeviceId,
    /// Where its ✓ goes (the newest connection a retry came through).
    pub(super) gateway: u16,
    /// The message, with its sequence number.
    pub(super) msg: Message,
    /// Inbox entries written with the append (direct messages).
    pub(super) recipients: Vec<DeviceId>,
    /// The fan-out job written with the append (groups).
    pub(super) fanout: Vec<DeviceId>,
    /// Whether that job parks inbox entries (false: the group is read from its log).
    pub(super) park: bool,
    /// Kept so a conflict can put the send back in the queue as it came.
    pub(super) send: PendingSend,
}

/// A group's membership in force, as storage last said or our own writes made it.
#[derive(Clone, Debug, Hash)]
pub(super) struct Group {
    /// Sequence number of the last membership change.
    pub(super) version: Seq,
    /// The members after it.
    pub(super) members: BTreeSet<UserId>,
}

/// What this life knows of one conversation it sequences.
#[derive(Clone, Debug, Hash, Default)]
pub(super) struct Conv {
    /// The last sequence number taken (`None` until loaded from storage).
    pub(super) last_seq: Option<Seq>,
    /// Groups: the membership in force (`None` until loaded, or when the group does not exist).
    pub(super) group: Option<Group>,
    /// A `LoadConv` is out.
    pub(super) loading: bool,
    /// Sends waiting their turn, in arrival order (at most the knob [`crate::knobs::Knobs::conv_queue_sends_max`], [`crate::limits::CONV_QUEUE_SENDS_MAX`] by design, from devices).
    pub(super) queue: VecDeque<PendingSend>,
    /// The one write out to storage.
    pub(super) in_flight: Option<InFlight>,
    /// A group send about to be refused, while storage says whether it is a retry of one
    /// already stored (then it gets its ✓, not a refusal).
    pub(super) checking: Option<(PendingSend, Refusal)>,
    /// Only with `sync-fanout`: the next write waits until this conversation's fan-out is done.
    pub(super) blocked: bool,
    /// Devices waiting for a `Pulled` answer until the conversation is loaded.
    pub(super) pullers: Vec<(DeviceId, u16)>,
}

impl Shard {
    /// The recipients of a direct message `sender` sealed a copy for: a device linked after
    /// it was stored (or, before that, unknown to the sender) has none and cannot open it.
    /// Storage refuses a message missing a copy for a device linked before it.
    pub(super) fn sealed_recipients(
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

    pub(super) fn send_append(f: &InFlight, fence: (u16, u64), out: &mut Vec<Effect>) {
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
    pub(super) fn admit(
        &self,
        conv: ConvId,
        p: &PendingSend,
        seq: Seq,
    ) -> Result<InFlight, Refusal> {
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
                    // A text leaves the membership as it is.
                    None => {}
                    Some(GroupOp::Create { .. }) => {
                        unreachable!("a create of an existing group was refused above")
                    }
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
    pub(super) fn load(&mut self, now: Millis, conv: ConvId, out: &mut Vec<Effect>) {
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
    pub(super) fn pump(&mut self, now: Millis, conv: ConvId, out: &mut Vec<Effect>) {
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

    pub(super) fn on_send(
        &mut self,
        now: Millis,
        conv: ConvId,
        send: PendingSend,
        out: &mut Vec<Effect>,
    ) {
        let (device, gateway, id) = (send.device, send.gateway, send.id);
        // Group membership is checked when the sequence number is assigned, not here: it may
        // change while the send waits in the queue.
        let forged = id.device != device && !self.topo.bugs.has(Bug::TrustClientSender);
        let outsider = !conv.is_group()
            && !self.is_member(conv, device)
            && !self.topo.bugs.has(Bug::SendSkipsMembership);
        if forged || outsider {
            Self::refuse(device, gateway, Refusal::NotMember, Some(id), out);
            return;
        }
        let queue_max = self.topo.knobs.conv_queue_sends_max;
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
        if c.queue.len() >= queue_max {
            out.push(Effect::Probe(Probe::ShardQueueFull));
            Self::refuse(device, gateway, Refusal::Busy, Some(id), out);
            return;
        }
        c.queue.push_back(send);
        // Only a conflict puts a send back past the bound; a device's send never does.
        assert!(c.queue.len() <= queue_max, "a send queued past its bound");
        self.pump(now, conv, out);
    }

    pub(super) fn on_appended(
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
        // Storage keeps a fresh append under the number this shard gave it (the next one):
        // anything else and the conversation's numbering has a hole or a fork.
        assert!(
            duplicate || seq == f.msg.seq,
            "{conv:?}: {id:?} sequenced {} but stored fresh as {seq}",
            f.msg.seq
        );
        if duplicate {
            out.push(Effect::Probe(Probe::ShardAppendDuplicate));
        }
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
                    let members: BTreeSet<UserId> = e.members.iter().copied().collect();
                    let pending = self
                        .jobs
                        .range((conv, 0)..=(conv, Seq::MAX))
                        .next()
                        .is_some();
                    if let (true, Some(old)) = (pending, c.group.as_ref()) {
                        if members.iter().any(|u| !old.members.contains(u)) {
                            out.push(Effect::Probe(Probe::ShardMemberAddedMidFanout));
                        }
                        if old.members.iter().any(|u| !members.contains(u)) {
                            out.push(Effect::Probe(Probe::ShardMemberRemovedMidFanout));
                        }
                    }
                    c.group = Some(Group {
                        version: seq,
                        members,
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
            let told = if self.topo.bugs.has(Bug::AckSeqOffByOne) {
                seq + 1
            } else {
                seq
            };
            let sent = Down::Sent {
                conv,
                id,
                seq: told,
            };
            Self::to_device(f.device, f.gateway, sent, out);
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
}
