//! The outbox: messages (and membership changes) the user composed, keyed by client id, sent
//! within an in-flight window and retried with the same id until the server says sent ✓ or
//! refuses them for good.

use super::conversation::Slot;
use super::{Device, Link, Timer};
use crate::bugs::Bug;
use crate::limits::{OUTBOX_RETRY_MS_MAX, OUTBOX_RETRY_MS_MIN};
use crate::probe::Probe;
use crate::proto::{ConvId, DeviceId, GroupOp, Message, Millis, MsgId, Refusal, Seq, Up};
use crate::{Effect, Observation};
use std::collections::BTreeSet;

/// A message in the outbox, kept until sent ✓ or refused for good.
#[derive(Clone, Debug, Hash)]
pub(super) struct Outgoing {
    /// The conversation it goes to.
    pub(super) conv: ConvId,
    /// The plaintext (empty for a membership change); sealed afresh at each transmission.
    pub(super) body: Vec<u8>,
    /// The phone's clock when it was composed (skewed: never used for ordering).
    pub(super) sent_at: Millis,
    /// Transmissions so far, for the retry backoff.
    pub(super) attempts: u32,
    /// Sent on the current connection and counted against the in-flight window.
    pub(super) transmitted: bool,
    /// The membership change it asks for, if it is one.
    pub(super) op: Option<GroupOp>,
    /// The membership version whose sender key the last transmission carried, if it did.
    pub(super) carried_key: Option<Seq>,
    /// Devices linked mid-run that some transmission left without a copy (not yet known to
    /// be linked), less those storage refused it for. Which transmission storage kept is not
    /// known here, so a device left out of any other may have no copy: its receipts do not
    /// count for this text's ✓✓.
    pub(super) unsealed: BTreeSet<DeviceId>,
}

impl Device {
    pub(super) fn in_flight(&self) -> usize {
        self.outbox.values().filter(|o| o.transmitted).count()
    }

    pub(super) fn transmit(&mut self, now: Millis, mut id: MsgId, out: &mut Vec<Effect>) {
        let attempts = match self.outbox.get(&id) {
            Some(o) => o.attempts,
            None => return,
        };
        if attempts > 0 && self.bug(Bug::NewIdPerRetry) {
            let o = self.outbox.remove(&id).expect("looked up above");
            self.timers.cancel(&Timer::Retry(id));
            id = MsgId {
                device: self.id,
                n: self.next_n,
            };
            self.next_n += 1;
            // To the phone it is a new message: the server cannot tell it is a retry.
            Self::observe(
                out,
                Observation::Sent {
                    id,
                    conv: o.conv,
                    body: o
                        .op
                        .as_ref()
                        .map_or_else(|| o.body.clone(), |op| op.describe(id).into_bytes()),
                },
            );
            if let Some(op) = o.op.clone() {
                let conv = o.conv;
                Self::observe(out, Observation::ChangeAsked { id, conv, op });
            }
            let reused = self.outbox.insert(id, o);
            assert!(reused.is_none(), "client id {id:?} handed out twice");
        }
        let delay = self.backoff(OUTBOX_RETRY_MS_MIN, OUTBOX_RETRY_MS_MAX, attempts);
        let Some(o) = self.outbox.get_mut(&id) else {
            return;
        };
        o.transmitted = true;
        o.attempts = o.attempts.saturating_add(1);
        let (conv, sent_at, plaintext, op) = (o.conv, o.sent_at, o.body.clone(), o.op.clone());
        // Sealed at each transmission: deterministic for one id, and right for a new one (or
        // for a membership that changed since the last try).
        let (body, version, keys) = if !conv.is_group() {
            let left_out = self.left_out(conv);
            if let Some(o) = self.outbox.get_mut(&id) {
                o.unsealed.extend(left_out);
            }
            (self.seal(conv, id, &plaintext), 0, Vec::new())
        } else if op.is_some() {
            let version = self.convs.get(&conv).map_or(0, |v| v.version);
            (Vec::new(), version, Vec::new())
        } else {
            self.seal_group(conv, id, &plaintext)
        };
        if let Some(o) = self.outbox.get_mut(&id) {
            o.carried_key = (!keys.is_empty()).then_some(version);
        }
        out.push(Effect::Up(Up::Send {
            conv,
            id,
            body,
            sent_at,
            op,
            version,
            keys,
        }));
        self.timers.set(Timer::Retry(id), now + delay);
    }

    /// Send untransmitted outbox entries while the in-flight window has room.
    pub(super) fn fill_window(&mut self, now: Millis, out: &mut Vec<Effect>) {
        if self.link != Link::Ready {
            return;
        }
        let room = self
            .topo
            .knobs
            .outbox_in_flight_max
            .saturating_sub(self.in_flight());
        let next: Vec<MsgId> = self
            .outbox
            .iter()
            .filter(|(_, o)| !o.transmitted)
            .map(|(id, _)| *id)
            .take(room)
            .collect();
        for id in next {
            self.transmit(now, id, out);
        }
    }

    pub(super) fn on_sent(
        &mut self,
        now: Millis,
        conv: ConvId,
        id: MsgId,
        seq: Seq,
        out: &mut Vec<Effect>,
    ) {
        self.on_sent_with(now, conv, id, seq, None, out);
    }

    /// Sent ✓ (or our own message seen stored, `stored`): the stored copy says what the
    /// outbox may no longer know, the membership change it carries and whom it was sealed
    /// for.
    pub(super) fn on_sent_with(
        &mut self,
        now: Millis,
        conv: ConvId,
        id: MsgId,
        seq: Seq,
        stored: Option<&Message>,
        out: &mut Vec<Effect>,
    ) {
        let mut op = stored.and_then(|m| m.event.as_ref()).map(|e| e.op.clone());
        // The stored copy says exactly whom it was sealed for; the outbox only what each
        // transmission left out.
        let exact = match stored {
            Some(m) if !conv.is_group() => Some(self.unsealed_in(m)),
            _ => None,
        };
        let mut unsealed = BTreeSet::new();
        if let Some(o) = self.outbox.remove(&id) {
            self.timers.cancel(&Timer::Retry(id));
            Self::observe(out, Observation::Acked { id, conv, seq });
            if o.op.is_none() {
                self.last_acked_text = Some((id, conv));
            }
            if let Some(version) = o.carried_key {
                // Every member device now has our key for this version in its copy.
                self.distributed.insert((conv, version));
            }
            op = o.op.or(op);
            unsealed = o.unsealed;
        }
        let unsealed = exact.unwrap_or(unsealed);
        self.fill_slot(now, conv, seq, Slot::Mine(id, op, unsealed), out);
        self.fill_window(now, out);
    }

    pub(super) fn on_refused(
        &mut self,
        now: Millis,
        reason: Refusal,
        id: Option<MsgId>,
        out: &mut Vec<Effect>,
    ) {
        if let Refusal::StaleDevices { device } = reason {
            // Sealed again for it at the retry.
            self.known_late.insert(device);
            // Storage refuses only while no copy of the id is stored or buffered, and from
            // now on refuses every one without `device`'s copy: whichever it keeps has one.
            if let Some(o) = id.and_then(|id| self.outbox.get_mut(&id)) {
                o.unsealed.remove(&device);
            }
        }
        if let (Refusal::StaleMembers { version }, Some(id)) = (reason, id) {
            // Behind on the membership: fetch up to the version the shard named rather than
            // wait for the change's fan-out to reach us.
            if let Some(conv) = self.outbox.get(&id).map(|o| o.conv) {
                Self::probe(out, Probe::StaleMembersResealed);
                let view = self.convs.entry(conv).or_default();
                view.known_end = view.known_end.max(version);
                self.advance(now, conv, out);
            }
        }
        // Final answers take the message out of the outbox; `Busy` and `StaleMembers` leave it
        // for the retry timer (by then the device has usually caught up with the membership).
        // `NotMember` is not final for a post while our creation of its group is still
        // unacknowledged: a post can overtake the creation (the model checker's story: the
        // shard dies, the creation's retry arrives after the post), and it is fine once the
        // creation is stored. A creation is never refused `NotMember`, so the wait ends.
        let post = id
            .and_then(|id| self.outbox.get(&id))
            .filter(|o| o.op.is_none());
        let joining = post.is_some_and(|p| {
            self.outbox
                .values()
                .any(|o| o.conv == p.conv && matches!(o.op, Some(GroupOp::Create { .. })))
        });
        let fatal = match reason {
            Refusal::NotMember => !joining,
            Refusal::GroupFull | Refusal::BadGroupOp => true,
            _ => false,
        };
        let mut fin = false;
        if let Some(id) = id.filter(|_| fatal) {
            if self.outbox.remove(&id).is_some() {
                self.timers.cancel(&Timer::Retry(id));
                fin = true;
            }
        }
        Self::observe(out, Observation::Refused { reason, id, fin });
    }

    /// Put a new message (or membership change) in the outbox under a fresh id.
    pub(super) fn compose(
        &mut self,
        now: Millis,
        conv: ConvId,
        body: Vec<u8>,
        op: Option<GroupOp>,
        out: &mut Vec<Effect>,
    ) {
        let id = MsgId {
            device: self.id,
            n: self.next_n,
        };
        self.next_n += 1;
        let shown = match &op {
            Some(op) => op.describe(id).into_bytes(),
            None => body.clone(),
        };
        Self::observe(
            out,
            Observation::Sent {
                id,
                conv,
                body: shown,
            },
        );
        if let Some(op) = &op {
            let op = op.clone();
            Self::observe(out, Observation::ChangeAsked { id, conv, op });
        }
        let sent_at = self.local_clock(now);
        let reused = self.outbox.insert(
            id,
            Outgoing {
                conv,
                body,
                sent_at,
                attempts: 0,
                transmitted: false,
                op,
                carried_key: None,
                unsealed: BTreeSet::new(),
            },
        );
        assert!(reused.is_none(), "client id {id:?} handed out twice");
        self.fill_window(now, out);
        self.ask_now(now, out);
    }
}
