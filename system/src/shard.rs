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
//! The shard keeps nothing durable: a restarted shard reloads a conversation's last sequence
//! number from storage on first use, and sweeps storage's inboxes for its conversations to take
//! up the deliveries its previous life was tracking. Writes for one conversation go one at a time, so sequence
//! numbers are contiguous; storage refuses a non-contiguous one and dedups by message id, so a
//! retry after a crash can never take a second number.
//!
//! Inputs: `Rpc` (`FromDevice` from gateways; `ConvLoaded`, `Appended`, `AppendConflict`,
//! `InboxPage`, `LogRange` from storage; `Located` from the session service), `Timeout`.
//! Outputs: `Rpc`. Timers: storage retry per conversation, push retry per delivery, the boot
//! sweep, expiry of pending lookups and reads.

use crate::bugs::Bug;
use crate::limits::{
    CONV_QUEUE_MAX, DELIVERIES_TRACKED_MAX, GAP_FETCH_SEQS_MAX, INBOX_PAGE_SIZE, LOOKUP_TIMEOUT_MS,
    PUSH_ATTEMPTS_MAX, PUSH_RETRY_MS_MAX, PUSH_RETRY_MS_MIN, STORAGE_RETRY_MS, SWEEP_PAGE_SIZE,
};
use crate::proto::{
    ConvId, DeviceId, Down, Host, Message, Millis, MsgId, Path, Refusal, Rpc, Seq, Up,
};
use crate::timers::Timers;
use crate::{Deployment, Effect, Input, Machine};
use std::collections::{BTreeMap, VecDeque};

/// The storage node every shard writes to (one in this design; replicated later).
const STORAGE: Host = Host::Storage(0);

#[derive(Clone, Debug)]
struct PendingSend {
    device: DeviceId,
    gateway: u16,
    id: MsgId,
    body: Vec<u8>,
    sent_at: Millis,
}

#[derive(Clone, Debug, Default)]
struct Conv {
    last_seq: Option<Seq>,
    loading: bool,
    queue: VecDeque<PendingSend>,
    in_flight: Option<(PendingSend, Seq)>,
}

/// One message on its way to one device: (device, conversation, sequence number).
type DeliveryKey = (DeviceId, ConvId, Seq);

#[derive(Clone, Debug)]
struct Delivery {
    msg: Message,
    attempts: u32,
}

#[derive(Clone, Debug)]
enum Pending {
    Locate(DeliveryKey),
    Drain { device: DeviceId, gateway: u16 },
    Fetch { device: DeviceId, gateway: u16 },
    Sweep { after: Option<DeliveryKey> },
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Storage(ConvId),
    Push(DeliveryKey),
    Sweep,
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
    next_req: u64,
    timers: Timers<Timer>,
}

impl Shard {
    /// Shard number `index` with empty memory (first boot or after a crash).
    pub fn new(index: u16, topo: Deployment) -> Shard {
        let mut timers = Timers::default();
        // First thing after (re)boot: take up the deliveries a previous life left unfinished.
        timers.set(Timer::Sweep, 0);
        Shard {
            index,
            topo,
            convs: BTreeMap::new(),
            pending: BTreeMap::new(),
            deliveries: BTreeMap::new(),
            next_req: 0,
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

    /// The devices that must receive a message in `conv` sent by `sender`.
    fn recipients(&self, conv: ConvId, sender: DeviceId) -> Vec<DeviceId> {
        self.topo.recipients(conv, sender)
    }

    fn is_member(&self, conv: ConvId, device: DeviceId) -> bool {
        conv.direct_peer(device.user)
            .is_some_and(|peer| peer != device.user && self.topo.has_user(peer))
    }

    fn send_append(&self, conv: ConvId, p: &PendingSend, seq: Seq, out: &mut Vec<Effect>) {
        let msg = Message {
            conv,
            seq,
            id: p.id,
            body: p.body.clone(),
            sent_at: p.sent_at,
        };
        let recipients = if self.topo.bugs.has(Bug::NoOfflineInbox) {
            Vec::new()
        } else {
            self.recipients(conv, p.device)
        };
        out.push(Effect::Rpc {
            to: STORAGE,
            rpc: Rpc::Append { msg, recipients },
        });
    }

    /// Start the next write of `conv` if none is in flight.
    fn pump(&mut self, now: Millis, conv: ConvId, out: &mut Vec<Effect>) {
        let c = self.convs.entry(conv).or_default();
        if c.in_flight.is_some() {
            return;
        }
        let Some(last) = c.last_seq else {
            if !c.loading && !c.queue.is_empty() {
                c.loading = true;
                out.push(Effect::Rpc {
                    to: STORAGE,
                    rpc: Rpc::LoadConv { conv },
                });
                self.timers
                    .set(Timer::Storage(conv), now + STORAGE_RETRY_MS);
            }
            return;
        };
        let Some(p) = c.queue.pop_front() else {
            self.timers.cancel(&Timer::Storage(conv));
            return;
        };
        c.in_flight = Some((p.clone(), last + 1));
        self.send_append(conv, &p, last + 1, out);
        if self.topo.bugs.has(Bug::AckBeforePersist) {
            let sent = Down::Sent {
                conv,
                id: p.id,
                seq: last + 1,
            };
            Self::to_device(p.device, p.gateway, sent, out);
        }
        self.timers
            .set(Timer::Storage(conv), now + STORAGE_RETRY_MS);
    }

    fn on_send(&mut self, now: Millis, conv: ConvId, send: PendingSend, out: &mut Vec<Effect>) {
        let (device, gateway, id) = (send.device, send.gateway, send.id);
        if id.device != device || !self.is_member(conv, device) {
            Self::to_device(
                device,
                gateway,
                Down::Refused {
                    reason: Refusal::NotMember,
                    id: Some(id),
                },
                out,
            );
            return;
        }
        let c = self.convs.entry(conv).or_default();
        // A retry of a send already queued or in flight: answer on the newest connection.
        if let Some((p, _)) = c.in_flight.as_mut().filter(|(p, _)| p.id == id) {
            p.gateway = gateway;
            return;
        }
        if let Some(p) = c.queue.iter_mut().find(|p| p.id == id) {
            p.gateway = gateway;
            return;
        }
        if c.queue.len() >= CONV_QUEUE_MAX {
            Self::to_device(
                device,
                gateway,
                Down::Refused {
                    reason: Refusal::Busy,
                    id: Some(id),
                },
                out,
            );
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
        out: &mut Vec<Effect>,
    ) {
        let Some(c) = self.convs.get_mut(&conv) else {
            return;
        };
        let Some((p, _)) = c.in_flight.take_if(|(p, _)| p.id == id) else {
            return;
        };
        c.last_seq = Some(c.last_seq.unwrap_or(0).max(seq));
        self.timers.cancel(&Timer::Storage(conv));
        // Durable: now, and only now, the sender may see ✓.
        Self::to_device(p.device, p.gateway, Down::Sent { conv, id, seq }, out);
        let msg = Message {
            conv,
            seq,
            id,
            body: p.body,
            sent_at: p.sent_at,
        };
        for device in self.recipients(conv, p.device) {
            if self.topo.bugs.has(Bug::NoSessionService) {
                // Without a directory the only gateway this shard knows is the sender's.
                self.push(device, &msg, p.gateway, out);
            } else {
                self.track(now, device, msg.clone(), out);
            }
        }
        self.pump(now, conv, out);
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
            } => {
                let send = PendingSend {
                    device,
                    gateway,
                    id,
                    body,
                    sent_at,
                };
                self.on_send(now, conv, send, out);
            }
            Up::Ack { conv, seq } => {
                self.untrack((device, conv, seq));
                out.push(Effect::Rpc {
                    to: STORAGE,
                    rpc: Rpc::DeleteInbox { device, conv, seq },
                });
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
                if !self.is_member(conv, device) {
                    Self::to_device(
                        device,
                        gateway,
                        Down::Refused {
                            reason: Refusal::NotMember,
                            id: None,
                        },
                        out,
                    );
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
                    },
                });
            }
            Up::Hello { .. } | Up::Ping => {}
        }
    }

    fn on_storage(&mut self, now: Millis, rpc: Rpc, out: &mut Vec<Effect>) {
        match rpc {
            Rpc::ConvLoaded { conv, last_seq } => {
                let c = self.convs.entry(conv).or_default();
                if c.loading {
                    c.loading = false;
                    c.last_seq = Some(last_seq);
                    self.timers.cancel(&Timer::Storage(conv));
                    self.pump(now, conv, out);
                }
            }
            Rpc::Appended { conv, id, seq, .. } => self.on_appended(now, conv, id, seq, out),
            Rpc::AppendConflict { conv, id, last_seq } => {
                let Some(c) = self.convs.get_mut(&conv) else {
                    return;
                };
                let Some((p, seq)) = c.in_flight.as_mut().filter(|(p, _)| p.id == id) else {
                    return;
                };
                *seq = last_seq + 1;
                c.last_seq = Some(last_seq);
                let (p, seq) = (p.clone(), *seq);
                self.send_append(conv, &p, seq, out);
                self.timers
                    .set(Timer::Storage(conv), now + STORAGE_RETRY_MS);
            }
            Rpc::InboxPage {
                req,
                entries,
                next,
                more,
            } => {
                if let Some(Pending::Drain { device, gateway }) = self.pending.remove(&req) {
                    self.timers.cancel(&Timer::Expire(req));
                    for msg in entries {
                        if self.topo.bugs.has(Bug::DeleteInboxOnPush) {
                            Self::delete_inbox(device, &msg, out);
                        }
                        Self::to_device(
                            device,
                            gateway,
                            Down::Deliver {
                                msg,
                                path: Path::Inbox,
                            },
                            out,
                        );
                    }
                    Self::to_device(device, gateway, Down::DrainPage { next, more }, out);
                }
            }
            Rpc::PendingPage {
                req,
                entries,
                next,
                more,
            } => {
                if let Some(Pending::Sweep { .. }) = self.pending.remove(&req) {
                    self.timers.cancel(&Timer::Expire(req));
                    for (device, msg) in entries {
                        self.track(now, device, msg, out);
                    }
                    if more {
                        self.sweep(now, next, out);
                    }
                }
            }
            Rpc::LogRange { req, msgs } => {
                if let Some(Pending::Fetch { device, gateway }) = self.pending.remove(&req) {
                    self.timers.cancel(&Timer::Expire(req));
                    for msg in msgs {
                        Self::to_device(
                            device,
                            gateway,
                            Down::Deliver {
                                msg,
                                path: Path::Fetch,
                            },
                            out,
                        );
                    }
                }
            }
            _ => {}
        }
    }

    /// Start tracking the delivery of `msg` to `device` and make the first attempt.
    fn track(&mut self, now: Millis, device: DeviceId, msg: Message, out: &mut Vec<Effect>) {
        let key = (device, msg.conv, msg.seq);
        if self.deliveries.contains_key(&key) {
            return;
        }
        if self.deliveries.len() >= DELIVERIES_TRACKED_MAX {
            // Over the bound the inbox alone carries it: the device drains on connect.
            return;
        }
        self.deliveries.insert(key, Delivery { msg, attempts: 0 });
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
        let delay = PUSH_RETRY_MS_MIN
            .saturating_mul(1 << (d.attempts - 1).min(16))
            .min(PUSH_RETRY_MS_MAX);
        self.timers.set(Timer::Push(key), now + delay);
        let req = self.request(now, Pending::Locate(key));
        let rpc = Rpc::Lookup {
            req,
            user: key.0.user,
        };
        out.push(Effect::Rpc {
            to: Host::Session,
            rpc,
        });
    }

    fn on_located(&mut self, req: u64, at: Vec<(DeviceId, u16)>, out: &mut Vec<Effect>) {
        let Some(Pending::Locate(key)) = self.pending.remove(&req) else {
            return;
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
            // Not connected: it drains its inbox when it connects, so stop here.
            None => self.untrack(key),
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
        let down = Down::Deliver {
            msg: msg.clone(),
            path: Path::Live,
        };
        Self::to_device(device, gateway, down, out);
    }

    fn sweep(&mut self, now: Millis, after: Option<DeliveryKey>, out: &mut Vec<Effect>) {
        let req = self.request(now, Pending::Sweep { after });
        let rpc = Rpc::ReadPending {
            req,
            shard: self.index,
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
                } else if let Some((p, seq)) = &c.in_flight {
                    self.send_append(conv, p, *seq, out);
                } else {
                    return;
                }
                self.timers
                    .set(Timer::Storage(conv), now + STORAGE_RETRY_MS);
            }
            Timer::Push(key) => self.attempt(now, key, out),
            Timer::Sweep => self.sweep(now, None, out),
            // The device retries drains and fetches, and a delivery's own timer retries its
            // lookup; only an unanswered sweep page is asked for again here.
            Timer::Expire(req) => {
                if let Some(Pending::Sweep { after }) = self.pending.remove(&req) {
                    self.sweep(now, after, out);
                }
            }
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
