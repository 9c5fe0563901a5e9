//! One conversation as this device shows it: [`ConvView`] keeps the sequence-number order
//! (holding back what comes after a gap), the ids seen (dedup) and, for a group, the
//! membership as of the last change shown. The `Device` methods here place delivered
//! messages in their view, show what became contiguous, and fetch gaps from the server.

use super::{Device, Link, Timer};
use crate::bugs::Bug;
use crate::e2e::Bundle;
use crate::limits::{DRAIN_RETRY_MS, GAP_REPAIR_DELAY_MS, GAP_RETRY_MS};
use crate::probe::Probe;
use crate::proto::{
    ConvId, DeviceId, GroupOp, Message, Millis, MsgId, Path, ReceiptKind, Seq, Up, UserId,
};
use crate::{Effect, Observation};
use std::collections::{BTreeMap, BTreeSet};

/// What fills one sequence number of a view, held until everything before it is shown.
#[derive(Clone, Debug, Hash)]
pub(super) enum Slot {
    /// Someone else's message (or our own from another device), and how it came.
    Theirs(Message, Path),
    /// Stored before this device was linked: not sealed for it, nothing to show.
    BeforeMyTime,
    /// One of ours, stored; a membership change of ours is applied when the view reaches it.
    /// Its ticks must not count the devices it may have been stored without a copy for.
    Mine(MsgId, Option<GroupOp>, BTreeSet<DeviceId>),
}

/// One conversation as this device shows it.
#[derive(Clone, Debug, Hash)]
pub(super) struct ConvView {
    /// The first sequence number not yet shown (or filled by one of our own messages).
    pub(super) next_seq: Seq,
    /// Known messages after a gap, waiting for it to fill.
    pub(super) held: BTreeMap<Seq, Slot>,
    /// Every id received here, for dedup.
    pub(super) seen: BTreeSet<MsgId>,
    /// Groups: the members as of `version` (the last change shown).
    pub(super) members: BTreeSet<UserId>,
    /// Groups: sequence number of the last membership change shown (0: none yet).
    pub(super) version: Seq,
    /// Groups: whether this device's user is a member, as far as the view has got.
    pub(super) joined: bool,
    /// The log is known to reach at least this far (a `StaleMembers` refusal said so): what
    /// lies between here and `next_seq` is a gap to fetch even with nothing held.
    pub(super) known_end: Seq,
    /// Fetches sent for the gap in front of the view (only `reader-skips-unfinished-seq`
    /// looks at this).
    pub(super) gap_fetches: u32,
    /// The last sequence number the latest gap fetch asked for (0: none since the view was
    /// last whole). A fetch asks for at most a knob's worth; once the front passes this, what
    /// is still missing lies beyond the fetch's reach, not in flight.
    pub(super) fetched_to: Seq,
}

impl Default for ConvView {
    fn default() -> Self {
        ConvView {
            next_seq: 1,
            held: BTreeMap::new(),
            seen: BTreeSet::new(),
            members: BTreeSet::new(),
            version: 0,
            joined: false,
            known_end: 0,
            gap_fetches: 0,
            fetched_to: 0,
        }
    }
}

impl ConvView {
    /// The last sequence number of the gap in front of the view, if there is one: before the
    /// first message held back, or up to where the log is known to reach.
    pub(super) fn gap_end(&self) -> Option<Seq> {
        match self.held.first_key_value() {
            Some((&first, _)) => Some(first - 1),
            None => (self.known_end >= self.next_seq).then_some(self.known_end),
        }
    }

    /// Take every held slot contiguous with the front of the view, in order, moving the front
    /// past them.
    fn take_contiguous(&mut self) -> Vec<(Seq, Slot)> {
        let mut ready = Vec::new();
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() != self.next_seq {
                break;
            }
            let (seq, slot) = entry.remove_entry();
            let front = self.next_seq;
            self.next_seq = seq + 1;
            // The front moves by exactly one per slot taken, never back.
            assert_eq!(self.next_seq, front + 1, "view front must advance by one");
            ready.push((seq, slot));
        }
        ready
    }
}

impl Device {
    pub(super) fn pull(&mut self, now: Millis, conv: ConvId, out: &mut Vec<Effect>) {
        out.push(Effect::Up(Up::Pull { conv }));
        self.timers.set(Timer::Pull(conv), now + DRAIN_RETRY_MS);
    }

    pub(super) fn fill_slot(
        &mut self,
        now: Millis,
        conv: ConvId,
        seq: Seq,
        slot: Slot,
        out: &mut Vec<Effect>,
    ) {
        let view = self.convs.entry(conv).or_default();
        if seq >= view.next_seq {
            view.held.entry(seq).or_insert(slot);
        }
        self.advance(now, conv, out);
    }

    /// Show everything contiguous; arm gap repair if something is still held back.
    pub(super) fn advance(&mut self, now: Millis, conv: ConvId, out: &mut Vec<Effect>) {
        let ready = self.convs.entry(conv).or_default().take_contiguous();
        let moved = !ready.is_empty();
        for (seq, slot) in ready {
            match slot {
                Slot::Theirs(msg, path) => self.display(now, out, &msg, path),
                Slot::BeforeMyTime => {}
                Slot::Mine(_, Some(op), _) => {
                    let view = self.convs.entry(conv).or_default();
                    let mut members = view.members.clone();
                    match op {
                        GroupOp::Create { members: first } => {
                            members = first.into_iter().collect();
                            members.insert(self.id.user);
                        }
                        GroupOp::Add { user } => {
                            members.insert(user);
                        }
                        GroupOp::Remove { user } => {
                            members.remove(&user);
                        }
                    }
                    self.apply_members(out, conv, seq, members);
                }
                Slot::Mine(id, None, unsealed) => self.track_mine(conv, seq, id, unsealed, out),
            }
        }
        let view = self.convs.entry(conv).or_default();
        match view.gap_end() {
            Some(end) => {
                if !self.timers.is_set(&Timer::Gap(conv)) {
                    let (from, to) = (view.next_seq, end);
                    Self::observe(out, Observation::GapDetected { conv, from, to });
                    self.timers.set(Timer::Gap(conv), now + GAP_REPAIR_DELAY_MS);
                } else if moved && view.fetched_to > 0 && view.next_seq > view.fetched_to {
                    // The fetch was answered in full and the gap goes on past what it could
                    // ask for: nothing more is on its way, so ask for the next piece now. A
                    // gap longer than a fetch used to wait the repair delay per piece (a
                    // BUGGIFY run with fetches of one to three found it).
                    self.timers.set(Timer::Gap(conv), now);
                } else if moved {
                    // Part of the gap came in (a fetch's page, a drained entry) and the rest is
                    // a fresh hole: ask for it as soon as a new one, not after the retry timer
                    // meant for a fetch that went unanswered. A gap split by messages that came
                    // another way used to wait 2 s per piece (the gap_repair bound found it).
                    self.timers
                        .set_min(Timer::Gap(conv), now + GAP_REPAIR_DELAY_MS);
                }
            }
            None => {
                view.gap_fetches = 0;
                view.fetched_to = 0;
                self.timers.cancel(&Timer::Gap(conv));
            }
        }
    }

    /// The view moved past a membership change at `seq`.
    pub(super) fn apply_members(
        &mut self,
        out: &mut Vec<Effect>,
        conv: ConvId,
        seq: Seq,
        members: BTreeSet<UserId>,
    ) {
        let me = self.id.user;
        let over = self.topo.fanout_on_read_over as usize;
        let view = self.convs.entry(conv).or_default();
        let read_before = over > 0 && view.joined && view.members.len() > over;
        view.version = seq;
        view.joined = members.contains(&me);
        if !view.joined {
            // Removed: nothing after this is ours to wait for, except what the server sent us
            // because we were added back (it only sends what is owed).
            view.held.retain(|s, _| *s > seq);
            view.known_end = 0;
            self.timers.cancel(&Timer::Gap(conv));
        }
        // Only on becoming a reader of this log (joining it, or it growing past the
        // threshold): a group we already read was pulled when we connected.
        if view.joined && over > 0 && members.len() > over && !read_before {
            self.pulls_due.insert(conv);
        }
        let members: Vec<UserId> = members.iter().copied().collect();
        view.members = members.iter().copied().collect();
        Self::observe(out, Observation::MembersChanged { conv, seq, members });
    }

    /// Show a message that reached its place in order: open a group text under its sender's
    /// key, apply a membership change.
    pub(super) fn display(
        &mut self,
        now: Millis,
        out: &mut Vec<Effect>,
        msg: &Message,
        path: Path,
    ) {
        if !msg.conv.is_group() {
            Self::show(out, msg, path);
            return self.shown(now, msg, out);
        }
        if let Some(event) = &msg.event {
            let shown = Message {
                body: event.op.describe(msg.id).into_bytes(),
                keys: Vec::new(),
                ..msg.clone()
            };
            Self::show(out, &shown, path);
            self.took(now, msg.conv, msg.seq);
            let members = event.members.iter().copied().collect();
            return self.apply_members(out, msg.conv, msg.seq, members);
        }
        match self.open_group(msg) {
            Some(plaintext) => {
                let shown = Message {
                    body: plaintext,
                    keys: Vec::new(),
                    ..msg.clone()
                };
                Self::show(out, &shown, path);
                self.shown(now, msg, out);
            }
            None => {
                // A text whose key we hold and which does not open was tampered with by its
                // sender: receipts pass it (see the direct case). So does one sealed for
                // another membership than the one in force where it stands: the shard takes
                // only texts naming the current version, so the sender named one and sealed
                // under another (a stale body resent with a fresh version: malicious seed
                // 401272, where a member who joined since held no key for it and its hole
                // kept every later text of the group from ✓✓). Without the key for the
                // version in force, it is a hole: receipts stop short of it.
                let in_force = self.convs.get(&msg.conv).map_or(0, |v| v.version);
                let senders_doing = crate::e2e::GroupSealed::decode(&msg.body).is_some_and(|s| {
                    s.version != in_force
                        || self
                            .peer_keys
                            .contains_key(&(msg.id.device, msg.conv, s.version))
                });
                if senders_doing && !self.bug(Bug::TamperedCopyHolds) {
                    Self::probe(out, Probe::TamperedCopySkipped);
                } else {
                    let hole = self.holes.entry(msg.conv).or_insert(msg.seq);
                    *hole = (*hole).min(msg.seq);
                }
                Self::observe(
                    out,
                    Observation::Undecryptable {
                        id: msg.id,
                        conv: msg.conv,
                        seq: msg.seq,
                    },
                )
            }
        }
    }

    pub(super) fn show(out: &mut Vec<Effect>, msg: &Message, path: Path) {
        let o = Observation::Displayed {
            id: msg.id,
            conv: msg.conv,
            seq: msg.seq,
            path,
            body: msg.body.clone(),
            sent_at: msg.sent_at,
        };
        out.push(Effect::Observe(o));
    }

    /// A message came: take it, then ack it unless a direct chat's delivered mark, still to
    /// be stored, covers it. That mark deletes the inbox entries up to it and stops the
    /// shard's pushes, so a per-message ack of a shown text was three frames (ack, its hop to
    /// the shard, the shard's delete) saying what the mark says a moment later. A group keeps
    /// its acks: its push-only fan-out step waits for them before it moves on.
    pub(super) fn on_deliver(
        &mut self,
        now: Millis,
        msg: Message,
        path: Path,
        out: &mut Vec<Effect>,
    ) {
        let (conv, seq) = (msg.conv, msg.seq);
        self.take_delivered(now, msg, path, out);
        let below_hole = self.holes.get(&conv).is_none_or(|h| seq < *h);
        let marked = self
            .receipts_out
            .get(&(conv, ReceiptKind::Delivered))
            .is_some_and(|r| r.acked < seq && seq <= r.want);
        if conv.is_group() || !marked || !below_hole {
            out.push(Effect::Up(Up::Ack { conv, seq }));
        }
    }

    fn take_delivered(&mut self, now: Millis, mut msg: Message, path: Path, out: &mut Vec<Effect>) {
        let (conv, seq, id) = (msg.conv, msg.seq, msg.id);
        if id.device == self.id {
            // Our own message came back through a fetch: it is stored, so it counts as ✓ (and
            // a membership change of ours applies even if the outbox no longer has it).
            self.on_sent_with(now, conv, id, seq, Some(&msg), out);
            return;
        }
        let mut jumped = false;
        if conv.is_group() {
            // Group texts are opened when shown (the sender key may ride on an earlier
            // message still on its way); keys are kept as soon as they arrive.
            self.take_keys(&msg);
            let me = self.id.user;
            let view = self.convs.entry(conv).or_default();
            let adds_me = msg
                .event
                .as_ref()
                .is_some_and(|e| matches!(e.op, GroupOp::Add { user } if user == me));
            if adds_me && !view.joined && seq > view.next_seq {
                // Our membership starts here: nothing before it is ours to wait for. Only an
                // add of us does this; any other change listing us is one we must not skip to.
                view.next_seq = seq;
                view.held.retain(|s, _| *s >= seq);
                jumped = true;
            }
        } else {
            let mine = Bundle::decode(&msg.body).is_some_and(|b| b.copy_for(self.id).is_some());
            if !mine && self.topo.late_devices.contains(&self.id) {
                // Stored before we were linked, sealed for the devices there were then
                // (storage refuses anything later without our copy): not ours to show.
                Self::probe(out, Probe::StoredBeforeLinkPassed);
                return self.fill_slot(now, conv, seq, Slot::BeforeMyTime, out);
            }
            match self.open(&msg) {
                Some(plaintext) => msg.body = plaintext,
                None if mine && !self.bug(Bug::TlsOnly) && !self.bug(Bug::TamperedCopyHolds) => {
                    // Our copy is there and does not open: tampered with, or sealed under
                    // another key, by its sender (a server cannot forge a copy that opens).
                    // Its place is taken by nothing, so one bad copy cannot hold back the
                    // chat behind it, and receipts pass it: the sender's own doing.
                    Self::probe(out, Probe::TamperedCopySkipped);
                    Self::observe(out, Observation::Undecryptable { id, conv, seq });
                    return self.fill_slot(now, conv, seq, Slot::BeforeMyTime, out);
                }
                None => {
                    // No copy for us: acked all the same (redelivering a copy that is not
                    // there helps nobody), and receipts stop short of it.
                    let hole = self.holes.entry(conv).or_insert(seq);
                    *hole = (*hole).min(seq);
                    Self::observe(out, Observation::Undecryptable { id, conv, seq });
                    return;
                }
            }
        }
        let bugs = &self.topo.bugs;
        let view = self.convs.entry(conv).or_default();
        let repeat = !view.seen.insert(id);
        if bugs.has(Bug::NoClientDedup) && (repeat || seq < view.next_seq) {
            self.display(now, out, &msg, path);
            return;
        }
        if bugs.has(Bug::OrderByTimestamp) && !repeat {
            // Shown at once, placed by the sender's clock: no waiting for a gap to fill.
            view.next_seq = view.next_seq.max(seq + 1);
            self.display(now, out, &msg, path);
            return;
        }
        if bugs.has(Bug::NoGapRepair)
            && !repeat
            && seq >= view.next_seq
            && !view.held.contains_key(&seq)
        {
            // Shows what it has; whatever was missing before it is given up on.
            view.next_seq = seq + 1;
            self.display(now, out, &msg, path);
            return;
        }
        if repeat || seq < view.next_seq || view.held.contains_key(&seq) {
            Self::observe(
                out,
                Observation::DuplicateDropped {
                    id,
                    conv,
                    seq,
                    path,
                },
            );
            if jumped {
                // The add that starts our view was already held: show from it now.
                self.advance(now, conv, out);
            }
            return;
        }
        let sender = msg.id.device;
        let text = msg.event.is_none() && sender.user != self.id.user;
        view.held.insert(seq, Slot::Theirs(msg, path));
        if text && self.open == Some(conv) && self.bug(Bug::ReadBeforeDelivered) {
            // Arrived in an open chat, so the app calls it read, gap or no gap.
            self.owe(conv, ReceiptKind::Read, seq, sender);
            self.arm_receipts(now, conv);
        }
        self.advance(now, conv, out);
    }

    /// The gap in front of the view is still open: fetch it (again), or with
    /// `reader-skips-unfinished-seq` give up on it after one fetch.
    pub(super) fn on_gap_timer(&mut self, now: Millis, conv: ConvId, out: &mut Vec<Effect>) {
        let skip = self.bug(Bug::ReaderSkipsUnfinishedSeq);
        let Some(view) = self.convs.get_mut(&conv) else {
            return;
        };
        let Some(end) = view.gap_end() else {
            return;
        };
        if skip && view.gap_fetches > 0 {
            // A fetch did not fill it, so the number must have been reserved and
            // never written: move past it. (A message only late, because the shard or
            // a link was down, is dropped when it arrives.)
            view.next_seq = end + 1;
            view.gap_fetches = 0;
            self.advance(now, conv, out);
            return;
        }
        if self.link == Link::Ready {
            view.gap_fetches += 1;
            let from = view.next_seq;
            let to = end.min(from + self.topo.knobs.gap_fetch_seqs_max - 1);
            view.fetched_to = to;
            out.push(Effect::Up(Up::Fetch { conv, from, to }));
            Self::observe(out, Observation::GapFetch { conv, from, to });
        }
        self.timers.set(Timer::Gap(conv), now + GAP_RETRY_MS);
    }
}
