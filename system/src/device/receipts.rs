//! Receipts and ticks: the delivered and read marks this device owes senders (sent a moment
//! after a show, retried until stored), reading an open chat, and, for its own texts, the
//! readers' marks that move ✓✓ and read.

use super::conversation::Slot;
use super::{Device, Link, Timer};
use crate::bugs::Bug;
use crate::limits::{RECEIPT_DELAY_MS, RECEIPT_RETRY_MS};
use crate::probe::Probe;
use crate::proto::{
    ConvId, DeviceId, Message, Millis, MsgId, Receipt, ReceiptKind, Seq, Up, UserId,
};
use crate::{Effect, Observation};
use std::collections::{BTreeMap, BTreeSet};

/// A receipt this device owes senders, until the server says it is stored.
#[derive(Clone, Debug, Hash, Default)]
pub(super) struct ReceiptOut {
    /// Cumulative mark to send.
    pub(super) want: Seq,
    /// What the server has stored.
    pub(super) acked: Seq,
    /// Messages covered and not yet acknowledged: seq -> sender device (whom to tell).
    pub(super) senders: BTreeMap<Seq, DeviceId>,
}

/// A text of ours on its way to ✓✓ and read.
#[derive(Clone, Debug)]
pub(super) struct MineTicks {
    /// Its client id, which the ticks name.
    pub(super) id: MsgId,
    /// The users it went to, as the view knew them at its sequence number, in order.
    pub(super) recipients: Vec<UserId>,
    /// The ticks shown so far.
    pub(super) tick: Option<ReceiptKind>,
    /// Recipient devices it may be stored without a copy for (linked mid-run): they pass it
    /// unseen, so their marks say nothing of it (device-added seed 700064 under BUGGIFY: a
    /// laptop linked after seq 23 was sealed passed it, and its "delivered up to 25" drew
    /// ✓✓ before any device of its user had shown seq 23).
    unsealed: BTreeSet<DeviceId>,
    /// How many recipients, from the first, are known to have read it. Marks only rise, so
    /// they are never looked at again: each receipt of a 1,024-member group's message had
    /// rescanned them from the first (10% of the 100,000-user world).
    read: usize,
    /// How many recipients, from the first, are known to have it delivered (or read).
    delivered: usize,
}

// The two counts are a cache of what the marks say, so a state is the same whichever
// receipts moved them (the model checker's state counts must not depend on it).
impl std::hash::Hash for MineTicks {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.id.hash(state);
        self.recipients.hash(state);
        self.tick.hash(state);
        self.unsealed.hash(state);
    }
}

impl Device {
    /// A text from someone else reached the screen: it is owed a delivered receipt, and a
    /// read one at once if the conversation is open here.
    pub(super) fn shown(&mut self, now: Millis, msg: &Message, out: &mut Vec<Effect>) {
        let (conv, seq, sender) = (msg.conv, msg.seq, msg.id.device);
        if sender.user == self.id.user || msg.event.is_some() {
            self.took(now, conv, seq);
            return;
        }
        self.owe(conv, ReceiptKind::Delivered, seq, sender);
        if self.open == Some(conv) && !self.background {
            Self::observe(out, Observation::Read { conv, upto: seq });
            self.owe(conv, ReceiptKind::Read, seq, sender);
        } else {
            self.unread.entry(conv).or_default().insert(seq, sender);
        }
        self.arm_receipts(now, conv);
    }

    /// Something nobody is owed a receipt for (our own text from another device, a
    /// membership change) reached the screen: the delivered mark still moves past it, since
    /// storage deletes this device's inbox entries up to the mark. The per-message ack is the
    /// quick way to delete one and may be lost; the mark is retried until stored.
    pub(super) fn took(&mut self, now: Millis, conv: ConvId, seq: Seq) {
        let r = self
            .receipts_out
            .entry((conv, ReceiptKind::Delivered))
            .or_default();
        r.want = r.want.max(seq);
        self.arm_receipts(now, conv);
    }

    /// Owe `sender` a `kind` receipt covering `seq` in `conv`.
    pub(super) fn owe(&mut self, conv: ConvId, kind: ReceiptKind, seq: Seq, sender: DeviceId) {
        let through = if self.bug(Bug::ReceiptUptoOffByOne) {
            seq + 1
        } else {
            seq
        };
        let r = self.receipts_out.entry((conv, kind)).or_default();
        r.want = r.want.max(through);
        r.senders.insert(seq, sender);
    }

    /// Send this conversation's receipts soon (a burst of shows goes as one). Soon even while
    /// an earlier mark awaits its ack: that wait is the retry timer's, and a show riding on it
    /// drew its ✓✓ up to [`RECEIPT_RETRY_MS`] late in a busy chat with no fault anywhere (the
    /// `receipt_latency` bound found it: 2 s on every smoke seed).
    pub(super) fn arm_receipts(&mut self, now: Millis, conv: ConvId) {
        self.timers
            .set_min(Timer::Receipt(conv), now + RECEIPT_DELAY_MS);
    }

    pub(super) fn send_receipts(&mut self, now: Millis, conv: ConvId, out: &mut Vec<Effect>) {
        if self.link != Link::Ready {
            return; // The welcome sends them.
        }
        let forget = self.bug(Bug::FireAndForgetReceipts);
        // A mark may not pass a text this device could not show.
        let cap = self.holes.get(&conv).map_or(Seq::MAX, |h| h - 1);
        let mut owed = false;
        for kind in [ReceiptKind::Delivered, ReceiptKind::Read] {
            let Some(r) = self.receipts_out.get_mut(&(conv, kind)) else {
                continue;
            };
            let upto = r.want.min(cap);
            if upto <= r.acked {
                continue;
            }
            let notify: BTreeSet<DeviceId> = r.senders.range(..=upto).map(|(_, d)| *d).collect();
            out.push(Effect::Up(Up::Receipt {
                conv,
                kind,
                upto,
                notify: notify.into_iter().collect(),
            }));
            if forget {
                // Sent is as good as stored, to this design.
                r.acked = upto;
                r.senders.retain(|s, _| *s > upto);
            } else {
                owed = true;
            }
        }
        if owed {
            self.timers
                .set(Timer::Receipt(conv), now + RECEIPT_RETRY_MS);
        }
    }

    pub(super) fn on_receipt_ack(&mut self, conv: ConvId, kind: ReceiptKind, upto: Seq) {
        if let Some(r) = self.receipts_out.get_mut(&(conv, kind)) {
            r.acked = r.acked.max(upto);
            r.senders.retain(|s, _| *s > upto);
        }
        let done = [ReceiptKind::Delivered, ReceiptKind::Read].iter().all(|k| {
            self.receipts_out
                .get(&(conv, *k))
                .is_none_or(|r| r.want <= r.acked)
        });
        if done {
            self.timers.cancel(&Timer::Receipt(conv));
        }
    }

    /// A receipt for our messages: keep the newest mark per reader and kind, move the ticks
    /// of what it covers, and say we saw it (so the server drops its copy).
    pub(super) fn on_receipt(&mut self, now: Millis, receipt: Receipt, out: &mut Vec<Effect>) {
        let seen = self.seen.entry(receipt.conv).or_default();
        let upto = seen.entry((receipt.reader, receipt.kind)).or_default();
        *upto = (*upto).max(receipt.upto);
        self.timers
            .set_min(Timer::Seen(receipt.conv), now + RECEIPT_DELAY_MS);
        let key = (receipt.conv, receipt.reader, receipt.kind);
        let mark = self.marks.entry(key).or_default();
        if receipt.upto <= *mark {
            return; // A repeat or an older one: marks never go back.
        }
        let before = std::mem::replace(mark, receipt.upto);
        assert!(before < receipt.upto, "a reader's mark only rises");
        Self::observe(out, Observation::Receipt { receipt });
        // Texts at or below the old mark already counted this reader, so only the newly
        // covered ones can move (all of them would make a long chat's receipts quadratic).
        let seqs: Vec<Seq> = self
            .mine
            .get(&receipt.conv)
            .map(|m| {
                m.range(before + 1..=receipt.upto)
                    .map(|(s, _)| *s)
                    .collect()
            })
            .unwrap_or_default();
        for seq in seqs {
            self.update_ticks(receipt.conv, seq, out);
        }
    }

    /// Say which receipts of `conv` we saw, in one frame. Without a link they wait: the next
    /// receipt (a drain brings queued ones again) arms the timer anew.
    pub(super) fn send_seen(&mut self, conv: ConvId, out: &mut Vec<Effect>) {
        if self.link != Link::Ready {
            return;
        }
        let Some(seen) = self.seen.remove(&conv) else {
            return;
        };
        assert!(
            !seen.is_empty(),
            "a conversation is listed only with receipts seen"
        );
        let seen = seen
            .into_iter()
            .map(|((reader, kind), upto)| (reader, kind, upto))
            .collect();
        out.push(Effect::Up(Up::ReceiptSeen { conv, seen }));
    }

    /// Say now which receipts of every conversation we saw: before a drain, so storage drops
    /// them before it hands out the next page of queued receipts.
    pub(super) fn flush_seen(&mut self, out: &mut Vec<Effect>) {
        let convs: Vec<ConvId> = self.seen.keys().copied().collect();
        for conv in convs {
            self.timers.cancel(&Timer::Seen(conv));
            self.send_seen(conv, out);
        }
    }

    /// Our text at `seq` took its place in the view: from here on its ticks follow receipts.
    pub(super) fn track_mine(
        &mut self,
        conv: ConvId,
        seq: Seq,
        id: MsgId,
        unsealed: BTreeSet<DeviceId>,
        out: &mut Vec<Effect>,
    ) {
        let me = self.id.user;
        // Members are a set: in order, each once.
        let recipients: Vec<UserId> = if conv.is_group() {
            self.convs
                .get(&conv)
                .map(|v| v.members.iter().copied().filter(|u| *u != me).collect())
                .unwrap_or_default()
        } else {
            conv.direct_peer(me)
                .into_iter()
                .filter(|u| *u != me)
                .collect()
        };
        if recipients.is_empty() {
            return;
        }
        let t = MineTicks {
            id,
            recipients,
            tick: None,
            unsealed,
            read: 0,
            delivered: 0,
        };
        self.mine.entry(conv).or_default().insert(seq, t);
        // Receipts can overtake our own ✓.
        self.update_ticks(conv, seq, out);
    }

    /// Delivered once every recipient user has it on some device; read once every one has
    /// read it (WhatsApp's group ticks). Shown only when they move forward.
    pub(super) fn update_ticks(&mut self, conv: ConvId, seq: Seq, out: &mut Vec<Effect>) {
        let Some(t) = self.mine.get(&conv).and_then(|m| m.get(&seq)) else {
            return;
        };
        let mark = |user: UserId, kind: ReceiptKind| {
            self.topo.device_ids(user).any(|d| {
                !t.unsealed.contains(&d)
                    && self.marks.get(&(conv, d, kind)).is_some_and(|m| *m >= seq)
            })
        };
        // Each count goes on from where the last receipt left it (a reader who read it had it
        // delivered too), so a big group's receipts cost one look per recipient and kind in
        // all, not one per receipt.
        let n = t.recipients.len();
        let mut read = t.read;
        while read < n && mark(t.recipients[read], ReceiptKind::Read) {
            read += 1;
        }
        let mut delivered = t.delivered.max(read);
        // Once ✓✓ shows, only read can move, so the delivered count is not needed again.
        if t.tick.is_none() {
            while delivered < n
                && (mark(t.recipients[delivered], ReceiptKind::Read)
                    || mark(t.recipients[delivered], ReceiptKind::Delivered))
            {
                delivered += 1;
            }
        }
        if delivered < n
            && t.unsealed.iter().any(|d| {
                t.recipients[delivered] == d.user
                    && [ReceiptKind::Delivered, ReceiptKind::Read]
                        .iter()
                        .any(|k| self.marks.get(&(conv, *d, *k)).is_some_and(|m| *m >= seq))
            })
        {
            Self::probe(out, Probe::ReceiptWithoutCopyIgnored);
        }
        let tick = if read == n {
            Some(ReceiptKind::Read)
        } else if delivered == n {
            Some(ReceiptKind::Delivered)
        } else {
            None
        };
        let new = tick.filter(|new| Some(*new) > t.tick);
        let t = self
            .mine
            .get_mut(&conv)
            .and_then(|m| m.get_mut(&seq))
            .expect("looked up above");
        t.read = read;
        t.delivered = delivered;
        let Some(tick) = new else {
            return;
        };
        let id = t.id;
        Self::observe(
            out,
            Observation::Ticks {
                id,
                conv,
                seq,
                tick,
            },
        );
        let mine = self.mine.entry(conv).or_default();
        if tick == ReceiptKind::Read {
            mine.remove(&seq);
        } else if let Some(t) = mine.get_mut(&seq) {
            t.tick = Some(tick);
        }
    }

    /// The user opens `conv`: everything shown there is read now.
    pub(super) fn open_chat(&mut self, now: Millis, conv: ConvId, out: &mut Vec<Effect>) {
        let watched = self.watched();
        self.open = Some(conv);
        Self::observe(out, Observation::Opened { conv: Some(conv) });
        if watched.is_some() || self.watched().is_some() {
            self.subscribe(now, out);
        }
        self.read_open_chat(now, out);
    }

    /// The user looks at the open chat (it was opened, or the app came back to the
    /// foreground): everything shown there is read now. A chat left open in a backgrounded
    /// app is not looked at.
    pub(super) fn read_open_chat(&mut self, now: Millis, out: &mut Vec<Effect>) {
        let Some(conv) = self.open.filter(|_| !self.background) else {
            return;
        };
        let mut read = self.unread.remove(&conv).unwrap_or_default();
        if let Some((&upto, _)) = read.last_key_value() {
            Self::observe(out, Observation::Read { conv, upto });
        }
        if self.bug(Bug::ReadBeforeDelivered) {
            // Opening marks read whatever has arrived, shown or still held back.
            let me = self.id.user;
            if let Some(view) = self.convs.get(&conv) {
                for (seq, slot) in &view.held {
                    if let Slot::Theirs(m, _) = slot {
                        if m.event.is_none() && m.id.device.user != me {
                            read.insert(*seq, m.id.device);
                        }
                    }
                }
            }
        }
        if !read.is_empty() {
            for (seq, sender) in read {
                self.owe(conv, ReceiptKind::Read, seq, sender);
            }
            self.arm_receipts(now, conv);
        }
    }
}
