//! Delivery tracking: each message on its way to a device is pushed through the gateway the
//! session service names, and retried with capped backoff until the device acks or is found
//! not connected (then its inbox carries it); a new slot owner sweeps storage's inboxes to take
//! up an earlier life's deliveries.

use super::{Pending, Shard, Timer, STORAGE};
use crate::bugs::Bug;
use crate::limits::{
    BACKOFF_DOUBLINGS_MAX, DELIVERIES_TRACKED_MAX, LOCATION_HINT_MS, PUSH_ATTEMPTS_MAX,
    PUSH_RETRY_MS_MAX, PUSH_RETRY_MS_MIN,
};
use crate::probe::Probe;
use crate::proto::{ConvId, DeviceId, Host, Message, Millis, Missed, Path, Rpc, Seq, UserId};
use crate::Effect;

/// One message on its way to one device: (device, conversation, sequence number).
pub(super) type DeliveryKey = (DeviceId, ConvId, Seq);

/// A delivery being tracked until the device acks.
#[derive(Clone, Debug, Hash)]
pub(super) struct Delivery {
    /// The message, with only this device's sealed key.
    pub(super) msg: Message,
    /// Attempts so far, for the backoff and the give-up bound.
    pub(super) attempts: u32,
    /// The latest attempt went to the device's last gateway without a lookup.
    pub(super) hinted: bool,
    /// False for a text of a group read from its log: no inbox entry to delete on the ack.
    pub(super) parked: bool,
}

impl Shard {
    /// Start tracking the delivery of `msg` to `device` and make the first attempt.
    pub(super) fn track(
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
            hinted: false,
            parked,
        };
        self.deliveries.insert(key, delivery);
        assert!(
            self.deliveries.len() <= DELIVERIES_TRACKED_MAX,
            "deliveries tracked past their bound"
        );
        self.attempt(now, key, out);
    }

    pub(super) fn untrack(&mut self, now: Millis, key: DeliveryKey, out: &mut Vec<Effect>) {
        self.deliveries.remove(&key);
        self.timers.cancel(&Timer::Push(key));
        // A push-only fan-out step waits for its pushes to settle before its cursor moves.
        self.fanout_pushed(now, (key.1, key.2), out);
    }

    /// One delivery attempt: ask where the device is; retry later unless it acks first.
    pub(super) fn attempt(&mut self, now: Millis, key: DeliveryKey, out: &mut Vec<Effect>) {
        let Some(d) = self.deliveries.get_mut(&key) else {
            return;
        };
        if d.attempts >= PUSH_ATTEMPTS_MAX {
            // Given up; the message still waits in the inbox for the device's next drain.
            self.untrack(now, key, out);
            return;
        }
        if d.attempts > 0 {
            out.push(Effect::Probe(Probe::ShardPushRetried));
        }
        d.attempts += 1;
        let first = d.attempts == 1;
        let delay = Self::push_retry_delay(d.attempts);
        self.timers.set(Timer::Push(key), now + delay);
        // A retry always asks: the device may have moved since its frame.
        let hinted = if first { self.hint(now, key.0) } else { None };
        if let Some(d) = self.deliveries.get_mut(&key) {
            d.hinted = hinted.is_some();
        }
        match hinted {
            Some(gateway) => self.push_tracked(now, key, gateway, out),
            None => self.locate(now, key.0.user, Pending::Locate(key)),
        }
    }

    /// The gateway `device`'s own frame came through within [`LOCATION_HINT_MS`], if any.
    pub(super) fn hint(&mut self, now: Millis, device: DeviceId) -> Option<u16> {
        let &(gateway, at) = self.heard.get(&device)?;
        if now.saturating_sub(at) < LOCATION_HINT_MS {
            return Some(gateway);
        }
        // Stale for good: the next frame from it brings a fresh one.
        self.heard.remove(&device);
        None
    }

    /// A push missed `device` at gateway `g`. One sent there on the device's last frame (a
    /// hint, which a reconnect elsewhere leaves stale) asks the session service at once, the
    /// retry's timer left as it was: waiting out the retry drew ✓✓ 1.9 s after the text
    /// showed in calm weather (slow-drain seed 191 with twice the drops). Every hinted push
    /// is asked for, not only the first to come back (eight receipts of one group text went
    /// to a gateway the sender had left; shard-failover seed 8 on the serving code). A push
    /// that went by a lookup waits for its retry as before, so a session service wrong about
    /// the device costs no more frames than it did.
    pub(super) fn not_here(
        &mut self,
        now: Millis,
        g: u16,
        device: DeviceId,
        missed: Missed,
        out: &mut Vec<Effect>,
    ) {
        if self.heard.get(&device).is_some_and(|(at, _)| *at == g) {
            self.heard.remove(&device);
        }
        let then = match missed {
            Missed::Deliver(conv, seq) => {
                let key = (device, conv, seq);
                let d = self.deliveries.get_mut(&key).filter(|d| d.hinted);
                d.map(|d| {
                    d.hinted = false;
                    Pending::Locate(key)
                })
            }
            Missed::Receipt(conv, reader, kind) => {
                let key = (device, conv, reader, kind);
                let p = self.receipt_pushes.get_mut(&key).filter(|p| p.hinted);
                p.map(|p| {
                    p.hinted = false;
                    Pending::LocateReceipt(key)
                })
            }
        };
        if let Some(then) = then {
            out.push(Effect::Probe(Probe::ShardStaleHintCorrected));
            self.locate(now, device.user, then);
        }
    }

    /// Push a tracked delivery to the device at `gateway`.
    fn push_tracked(&mut self, now: Millis, key: DeliveryKey, gateway: u16, out: &mut Vec<Effect>) {
        let Some(d) = self.deliveries.get(&key) else {
            return;
        };
        let msg = d.msg.clone();
        self.push(key.0, &msg, gateway, out);
        if self.topo.bugs.has(Bug::DeleteInboxOnPush) {
            // Pushed counts as delivered: no entry, no retry.
            self.untrack(now, key, out);
        }
    }

    /// The wait before the next try of a push tried `attempts` times: doubling, capped.
    pub(super) fn push_retry_delay(attempts: u32) -> Millis {
        PUSH_RETRY_MS_MIN
            .saturating_mul(1 << attempts.saturating_sub(1).min(BACKOFF_DOUBLINGS_MAX))
            .min(PUSH_RETRY_MS_MAX)
    }

    /// Ask the session service where `user`'s devices are, with the input's other questions
    /// ([`Shard::send_asks`]); the answer goes to `then`.
    pub(super) fn locate(&mut self, now: Millis, user: UserId, then: Pending) {
        let req = self.request(now, then);
        self.asks.push((req, user));
    }

    /// Ask the session service, in one frame, every question this input raised.
    pub(super) fn send_asks(&mut self, out: &mut Vec<Effect>) {
        if self.asks.is_empty() {
            return;
        }
        let asks = std::mem::take(&mut self.asks);
        out.push(Effect::Rpc {
            to: Host::Session,
            rpc: Rpc::Lookup { asks },
        });
    }

    pub(super) fn on_located(
        &mut self,
        now: Millis,
        req: u64,
        at: Vec<(DeviceId, u16)>,
        out: &mut Vec<Effect>,
    ) {
        let key = match self.pending.remove(&req) {
            Some(Pending::Locate(key)) => key,
            Some(Pending::LocateReceipt(key)) => {
                self.timers.cancel(&Timer::Expire(req));
                let Some(p) = self.receipt_pushes.get(&key) else {
                    return;
                };
                match at.iter().find(|(device, _)| *device == key.0) {
                    Some(&(_, gateway)) => Self::send_receipt(key, p, gateway, out),
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
        if !self.deliveries.contains_key(&key) {
            return;
        }
        match at.iter().find(|(device, _)| *device == key.0) {
            Some(&(_, gateway)) => self.push_tracked(now, key, gateway, out),
            // Not connected: it drains its inbox when it connects, so stop here, and ask the
            // push provider to wake it (a push only hurries that along).
            None => {
                self.untrack(now, key, out);
                let rpc = Rpc::Notify { device: key.0 };
                out.push(Effect::Rpc {
                    to: Host::Push,
                    rpc,
                });
            }
        }
    }

    pub(super) fn delete_inbox(device: DeviceId, msg: &Message, out: &mut Vec<Effect>) {
        let rpc = Rpc::DeleteInbox {
            device,
            conv: msg.conv,
            seq: msg.seq,
        };
        out.push(Effect::Rpc { to: STORAGE, rpc });
    }

    /// Push `msg` live to `device` at `gateway`.
    pub(super) fn push(
        &self,
        device: DeviceId,
        msg: &Message,
        gateway: u16,
        out: &mut Vec<Effect>,
    ) {
        if self.topo.bugs.has(Bug::DeleteInboxOnPush) {
            Self::delete_inbox(device, msg, out);
        }
        Self::deliver(device, gateway, msg, Path::Live, out);
    }

    pub(super) fn sweep(
        &mut self,
        now: Millis,
        slot: u16,
        after: Option<DeliveryKey>,
        out: &mut Vec<Effect>,
    ) {
        let req = self.request(now, Pending::Sweep { slot, after });
        let rpc = Rpc::ReadPending {
            req,
            shard: slot,
            shards: self.topo.shards,
            after,
            limit: self.topo.knobs.sweep_page_entries,
        };
        out.push(Effect::Rpc { to: STORAGE, rpc });
    }
}
