//! The device: the phone app. It keeps one connection to a gateway and reconnects (with
//! jittered, capped backoff) when it is lost; keeps an outbox keyed by client message id and
//! retries until sent ✓, always with the same id; drops duplicates by id; shows each
//! conversation in sequence-number order, holding messages back after a gap and fetching the
//! gap from the server; acks every message it receives (even duplicates, so the server can
//! delete the inbox entry); and drains its inbox after every (re)connect and periodically
//! while connected (the backstop for a push that was lost).
//!
//! In a group the device knows the membership only from the group's own log: each change is
//! an entry with a sequence number, applied when the device shows it in order (its own change
//! once ✓). It seals group texts under its sender key for the membership version it knows and
//! says which version that was; the shard refuses a stale one, and the device retries once it
//! has caught up. A device added to a group starts its view at the change that added it.
//!
//! Receipts: a text from someone else that reaches the screen is owed a cumulative delivered
//! mark, sent a moment later and again until stored; one shown while its chat is open (and the
//! app in the foreground) is read at once, the rest when the chat is opened. For its own texts
//! the device keeps each reader's marks and draws ✓✓ once every recipient user has the text on
//! some device, read once every one has read it. Presence: while a direct chat is open the
//! device watches the peer (a lease it renews). In the background the app keeps no
//! connection; a push wakes it to drain for a few seconds.
//!
//! Randomness (gateway choice, jitter, sender keys) comes only from the seeded generator it is
//! given.
//!
//! Inputs: `Connected`, `ConnectFailed`, `Down`, `Disconnected`, `Pushed`, `Action`,
//! `Timeout`. Outputs: `Connect`, `Up`, `Disconnect`, `Observe`. Timers: reconnect, heartbeat,
//! handshake, per-message retry, per-conversation gap repair and receipt send, drain retry,
//! periodic inbox sync, group pull, presence renewal, back to sleep after a push.

use crate::bugs::Bug;
use crate::e2e::{Bundle, GroupSealed, KeyPair, Session};
use crate::limits::{
    CLOCK_SKEW_MS_MAX, DRAIN_RETRY_MS, GAP_FETCH_SEQS_MAX, GAP_REPAIR_DELAY_MS, GAP_RETRY_MS,
    HANDSHAKE_TIMEOUT_MS, HEARTBEAT_INTERVAL_MS, HEARTBEAT_TIMEOUT_MS, INBOX_SYNC_MS,
    LINK_RETRY_MS, OUTBOX_IN_FLIGHT_MAX, OUTBOX_RETRY_MS_MAX, OUTBOX_RETRY_MS_MIN,
    PRESENCE_RENEW_MS, PUSH_WAKE_MS, RECEIPT_DELAY_MS, RECEIPT_RETRY_MS, RECONNECT_BACKOFF_MS_MAX,
    RECONNECT_BACKOFF_MS_MIN,
};
use crate::proto::{
    ConvId, DeviceId, Down, GroupOp, InboxCursor, Message, Millis, MsgId, Path, Receipt,
    ReceiptKind, Refusal, Seq, Up, UserId,
};
use crate::routing::device_token;
use crate::timers::Timers;
use crate::{Action, Deployment, DisconnectReason, Effect, Input, Machine, Observation};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{BTreeMap, BTreeSet};

/// A group text ready to send: body, the membership version it was sealed for, and the
/// sender key sealed per member device (empty once distributed).
type SealedGroup = (Vec<u8>, Seq, Vec<(DeviceId, Vec<u8>)>);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    Down,
    Connecting,
    Handshaking,
    Ready,
}

#[derive(Clone, Debug)]
struct Outgoing {
    conv: ConvId,
    body: Vec<u8>,
    sent_at: Millis,
    attempts: u32,
    transmitted: bool,
    op: Option<GroupOp>,
    /// The membership version whose sender key the last transmission carried, if it did.
    carried_key: Option<Seq>,
}

#[derive(Clone, Debug)]
enum Slot {
    Theirs(Message, Path),
    /// Stored before this device was linked: not sealed for it, nothing to show.
    BeforeMyTime,
    /// One of ours, stored; a membership change of ours is applied when the view reaches it.
    Mine(MsgId, Option<GroupOp>),
}

/// A receipt this device owes senders, until the server says it is stored.
#[derive(Clone, Debug, Default)]
struct ReceiptOut {
    /// Cumulative mark to send.
    want: Seq,
    /// What the server has stored.
    acked: Seq,
    /// Messages covered and not yet acknowledged: seq -> sender device (whom to tell).
    senders: BTreeMap<Seq, DeviceId>,
}

/// A text of ours on its way to ✓✓ and read.
#[derive(Clone, Debug)]
struct MineTicks {
    id: MsgId,
    /// The users it went to, as the view knew them at its sequence number.
    recipients: BTreeSet<UserId>,
    /// The ticks shown so far.
    tick: Option<ReceiptKind>,
}

#[derive(Clone, Debug)]
struct ConvView {
    /// The first sequence number not yet shown (or filled by one of our own messages).
    next_seq: Seq,
    /// Known messages after a gap, waiting for it to fill.
    held: BTreeMap<Seq, Slot>,
    /// Every id received here, for dedup.
    seen: BTreeSet<MsgId>,
    /// Groups: the members as of `version` (the last change shown).
    members: BTreeSet<UserId>,
    /// Groups: sequence number of the last membership change shown (0: none yet).
    version: Seq,
    /// Groups: whether this device's user is a member, as far as the view has got.
    joined: bool,
    /// The log is known to reach at least this far (a `StaleMembers` refusal said so): what
    /// lies between here and `next_seq` is a gap to fetch even with nothing held.
    known_end: Seq,
    /// Fetches sent for the gap in front of the view (only `reader-skips-unfinished-seq`
    /// looks at this).
    gap_fetches: u32,
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
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Reconnect,
    Heartbeat,
    Handshake,
    Retry(MsgId),
    Gap(ConvId),
    Drain,
    Sync,
    Pull(ConvId),
    Receipt(ConvId),
    Presence,
    Sleep,
    /// Ask storage again to record our link.
    Link,
}

/// A device.
#[derive(Clone, Debug)]
pub struct Device {
    id: DeviceId,
    topo: Deployment,
    rng: ChaCha8Rng,
    link: Link,
    gateway: u16,
    epoch: u64,
    online: bool,
    reconnect_failures: u32,
    last_heard: Millis,
    outbox: BTreeMap<MsgId, Outgoing>,
    next_n: u32,
    convs: BTreeMap<ConvId, ConvView>,
    drain: Option<Option<InboxCursor>>,
    /// Only with `early-queue-empty`: the phone believes its backlog is done.
    believes_drained: bool,
    /// This phone's clock minus true time: phones disagree, which is why nothing orders by it.
    clock_skew_ms: i64,
    /// This device's key pair (its public half is in the deployment's directory).
    keys: KeyPair,
    /// One session per peer device, set up on first use.
    sessions: BTreeMap<DeviceId, Session>,
    /// Our sender keys, per (group, membership version).
    my_keys: BTreeMap<(ConvId, Seq), [u8; 32]>,
    /// (group, version) whose key a stored message of ours has carried to every member.
    distributed: BTreeSet<(ConvId, Seq)>,
    /// Other devices' sender keys, per (device, group, version).
    peer_keys: BTreeMap<(DeviceId, ConvId, Seq), [u8; 32]>,
    /// Groups read from their log whose end we must ask for, once connected: a membership
    /// change we just applied may have made us a member, or the group big enough, after our
    /// connection's pulls went out.
    pulls_due: BTreeSet<ConvId>,
    /// The app is in the background: it keeps no connection unless a push woke it.
    background: bool,
    /// A push woke the app until then.
    woken_until: Option<Millis>,
    /// The last drain said more receipts are queued than it handed out.
    receipts_pending: bool,
    /// The session service may hold a presence subscription of ours (the last `Subscribe`
    /// named someone): closing a chat while disconnected must still end it.
    subscribed: bool,
    /// Per conversation, the first text shown as undecryptable: receipt marks stop short of
    /// it, since the device never showed it.
    holes: BTreeMap<ConvId, Seq>,
    /// The conversation the user has open on this device (what it shows is read at once).
    open: Option<ConvId>,
    /// Linked to its user's account (false until `Action::Link` for a device added mid-run).
    linked: bool,
    /// Storage has our link (a late device asks on every connection until it does).
    link_stored: bool,
    /// Devices added mid-run that we know are linked (storage refused a message of ours
    /// without their copy): we seal for them from now on.
    known_late: BTreeSet<DeviceId>,
    /// Receipts owed, per (conversation, kind).
    receipts_out: BTreeMap<(ConvId, ReceiptKind), ReceiptOut>,
    /// Shown but not read yet: conversation -> seq -> sender device.
    unread: BTreeMap<ConvId, BTreeMap<Seq, DeviceId>>,
    /// Receipt marks other devices sent us: (conversation, reader, kind) -> seq.
    marks: BTreeMap<(ConvId, DeviceId, ReceiptKind), Seq>,
    /// Our texts not yet read by all, per conversation and seq.
    mine: BTreeMap<ConvId, BTreeMap<Seq, MineTicks>>,
    timers: Timers<Timer>,
}

impl Device {
    /// A device, offline until its first `GoOnline` (or started with `online` true, in which
    /// case it connects on its first `Timeout`). `seed` drives its generator.
    pub fn new(id: DeviceId, topo: Deployment, seed: u64, online: bool) -> Device {
        let mut timers = Timers::default();
        let linked = !topo.late_devices.contains(&id);
        if online && linked {
            timers.set(Timer::Reconnect, 0);
        }
        // The directory's copy was derived from this same seed (a test world may have none).
        let keys = crate::e2e::keypair_known(seed, topo.keys.get(&id).copied());
        debug_assert_eq!(
            keys.public,
            crate::e2e::keypair(seed).public,
            "the key directory disagrees with {id}'s own seed"
        );
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let skew = topo.clock_skew_ms.unwrap_or(CLOCK_SKEW_MS_MAX) as i64;
        let clock_skew_ms = rng.gen_range(-skew..=skew);
        Device {
            id,
            topo,
            rng,
            link: Link::Down,
            gateway: 0,
            epoch: 0,
            online,
            reconnect_failures: 0,
            last_heard: 0,
            outbox: BTreeMap::new(),
            next_n: 0,
            convs: BTreeMap::new(),
            drain: None,
            believes_drained: false,
            clock_skew_ms,
            keys,
            sessions: BTreeMap::new(),
            my_keys: BTreeMap::new(),
            distributed: BTreeSet::new(),
            peer_keys: BTreeMap::new(),
            pulls_due: BTreeSet::new(),
            background: false,
            woken_until: None,
            receipts_pending: false,
            subscribed: false,
            holes: BTreeMap::new(),
            open: None,
            linked,
            link_stored: linked,
            known_late: BTreeSet::new(),
            receipts_out: BTreeMap::new(),
            unread: BTreeMap::new(),
            marks: BTreeMap::new(),
            mine: BTreeMap::new(),
            timers,
        }
    }

    /// This device's id.
    pub fn id(&self) -> DeviceId {
        self.id
    }

    /// Messages composed but not yet sent ✓.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Whether the device has a welcomed connection.
    pub fn is_ready(&self) -> bool {
        self.link == Link::Ready
    }

    /// Whether message `id` is held back behind a gap on this phone: not shown yet, but in the
    /// phone's own store, which is what its ack to the server promises.
    pub fn has(&self, conv: ConvId, id: MsgId) -> bool {
        self.convs.get(&conv).is_some_and(|v| {
            v.held
                .values()
                .any(|s| matches!(s, Slot::Theirs(m, _) if m.id == id))
        })
    }

    fn bug(&self, bug: Bug) -> bool {
        self.topo.bugs.has(bug)
    }

    /// What this phone's clock says at true time `now`.
    fn local_clock(&self, now: Millis) -> Millis {
        now.saturating_add_signed(self.clock_skew_ms)
    }

    fn observe(out: &mut Vec<Effect>, o: Observation) {
        out.push(Effect::Observe(o));
    }

    /// Capped exponential backoff with jitter in [delay/2, delay].
    fn backoff(&mut self, min: Millis, max: Millis, attempts: u32) -> Millis {
        let delay = min.saturating_mul(1 << attempts.min(16)).min(max);
        self.rng.gen_range(delay / 2..=delay)
    }

    /// Whether the phone wants a connection now: online, and in the foreground or woken.
    fn wants_link(&self, now: Millis) -> bool {
        self.linked
            && self.online
            && (!self.background || self.woken_until.is_some_and(|t| now < t))
    }

    fn schedule_reconnect(&mut self, now: Millis) {
        if self.wants_link(now) {
            let d = if self.bug(Bug::NoReconnectJitter) {
                let shift = self.reconnect_failures.min(16);
                RECONNECT_BACKOFF_MS_MIN
                    .saturating_mul(1 << shift)
                    .min(RECONNECT_BACKOFF_MS_MAX)
            } else {
                self.backoff(
                    RECONNECT_BACKOFF_MS_MIN,
                    RECONNECT_BACKOFF_MS_MAX,
                    self.reconnect_failures,
                )
            };
            self.reconnect_failures = self.reconnect_failures.saturating_add(1);
            self.timers.set(Timer::Reconnect, now + d);
        }
    }

    fn link_lost(
        &mut self,
        now: Millis,
        reason: DisconnectReason,
        close: bool,
        out: &mut Vec<Effect>,
    ) {
        if self.link == Link::Down {
            return;
        }
        if close {
            out.push(Effect::Disconnect);
        }
        self.link = Link::Down;
        if self.drain.is_some() && self.bug(Bug::EarlyQueueEmpty) {
            // The drain was cut short, yet the app marks its backlog done.
            self.believes_drained = true;
            Self::observe(out, Observation::DrainComplete);
        }
        self.drain = None;
        for t in [
            Timer::Heartbeat,
            Timer::Handshake,
            Timer::Drain,
            Timer::Sync,
        ] {
            self.timers.cancel(&t);
        }
        Self::observe(out, Observation::Disconnected { reason });
        self.schedule_reconnect(now);
    }

    fn connect(&mut self, out: &mut Vec<Effect>) {
        self.gateway = self.rng.gen_range(0..self.topo.gateways.max(1));
        self.link = Link::Connecting;
        let gateway = self.gateway;
        Self::observe(out, Observation::Connecting { gateway });
        out.push(Effect::Connect { gateway });
    }

    fn in_flight(&self) -> usize {
        self.outbox.values().filter(|o| o.transmitted).count()
    }

    fn transmit(&mut self, now: Millis, mut id: MsgId, out: &mut Vec<Effect>) {
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
            self.outbox.insert(id, o);
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
    fn fill_window(&mut self, now: Millis, out: &mut Vec<Effect>) {
        if self.link != Link::Ready {
            return;
        }
        let room = OUTBOX_IN_FLIGHT_MAX.saturating_sub(self.in_flight());
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

    fn start_drain(&mut self, now: Millis, after: Option<InboxCursor>, out: &mut Vec<Effect>) {
        self.drain = Some(after);
        out.push(Effect::Up(Up::Drain { after }));
        self.timers.set(Timer::Drain, now + DRAIN_RETRY_MS);
    }

    fn on_welcome(&mut self, now: Millis, epoch: u64, out: &mut Vec<Effect>) {
        if self.link != Link::Handshaking || epoch != self.epoch {
            return;
        }
        self.link = Link::Ready;
        self.reconnect_failures = 0;
        self.timers.cancel(&Timer::Handshake);
        Self::observe(
            out,
            Observation::Connected {
                gateway: self.gateway,
                epoch,
            },
        );
        if !self.link_stored {
            out.push(Effect::Up(Up::Link));
            self.timers.set(Timer::Link, now + LINK_RETRY_MS);
        }
        if self.believes_drained {
            // "Queue empty" already fired, so the app sees no backlog to fetch.
            self.timers.set(Timer::Sync, now + INBOX_SYNC_MS);
        } else {
            self.start_drain(now, None, out);
        }
        // Groups read from their log parked nothing for us while we were away: ask how far
        // each reaches, and fetch the rest.
        let over = self.topo.fanout_on_read_over as usize;
        let pulls: Vec<ConvId> = self
            .convs
            .iter()
            .filter(|(c, v)| c.is_group() && v.joined && over > 0 && v.members.len() > over)
            .map(|(c, _)| *c)
            .collect();
        for conv in pulls {
            self.pull(now, conv, out);
        }
        // A new connection may reach a session service that forgot us: watch again (or end
        // a watch left over from a chat closed while we were away).
        if self.watched().is_some() || self.subscribed {
            self.subscribe(now, out);
        }
        // Receipts the server has not stored go again too.
        let owed: BTreeSet<ConvId> = self
            .receipts_out
            .iter()
            .filter(|(_, r)| r.want > r.acked)
            .map(|((c, _), _)| *c)
            .collect();
        for conv in owed {
            self.timers.set(Timer::Receipt(conv), now);
        }
        // Everything unacknowledged goes again on the new connection, same ids.
        for o in self.outbox.values_mut() {
            o.transmitted = false;
        }
        self.fill_window(now, out);
    }

    fn pull(&mut self, now: Millis, conv: ConvId, out: &mut Vec<Effect>) {
        out.push(Effect::Up(Up::Pull { conv }));
        self.timers.set(Timer::Pull(conv), now + DRAIN_RETRY_MS);
    }

    fn on_sent(&mut self, now: Millis, conv: ConvId, id: MsgId, seq: Seq, out: &mut Vec<Effect>) {
        self.on_sent_with(now, conv, id, seq, None, out);
    }

    /// Sent ✓ (or our own message seen stored); `stored_op` is the membership change the
    /// stored copy carries, used when the outbox no longer knows it.
    fn on_sent_with(
        &mut self,
        now: Millis,
        conv: ConvId,
        id: MsgId,
        seq: Seq,
        stored_op: Option<GroupOp>,
        out: &mut Vec<Effect>,
    ) {
        let mut op = stored_op;
        if let Some(o) = self.outbox.remove(&id) {
            self.timers.cancel(&Timer::Retry(id));
            Self::observe(out, Observation::Acked { id, conv, seq });
            if let Some(version) = o.carried_key {
                // Every member device now has our key for this version in its copy.
                self.distributed.insert((conv, version));
            }
            op = o.op.or(op);
        }
        self.fill_slot(now, conv, seq, Slot::Mine(id, op), out);
        self.fill_window(now, out);
    }

    fn on_refused(
        &mut self,
        now: Millis,
        reason: Refusal,
        id: Option<MsgId>,
        out: &mut Vec<Effect>,
    ) {
        if let Refusal::StaleDevices { device } = reason {
            // Sealed again for it at the retry.
            self.known_late.insert(device);
        }
        if let (Refusal::StaleMembers { version }, Some(id)) = (reason, id) {
            // Behind on the membership: fetch up to the version the shard named rather than
            // wait for the change's fan-out to reach us.
            if let Some(conv) = self.outbox.get(&id).map(|o| o.conv) {
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

    fn fill_slot(
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
    fn advance(&mut self, now: Millis, conv: ConvId, out: &mut Vec<Effect>) {
        let view = self.convs.entry(conv).or_default();
        let mut ready = Vec::new();
        while let Some(entry) = view.held.first_entry() {
            if *entry.key() != view.next_seq {
                break;
            }
            let (seq, slot) = entry.remove_entry();
            view.next_seq = seq + 1;
            ready.push((seq, slot));
        }
        for (seq, slot) in ready {
            match slot {
                Slot::Theirs(msg, path) => self.display(now, out, &msg, path),
                Slot::BeforeMyTime => {}
                Slot::Mine(_, Some(op)) => {
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
                Slot::Mine(id, None) => self.track_mine(conv, seq, id, out),
            }
        }
        let view = self.convs.entry(conv).or_default();
        match Self::gap_end(view) {
            Some(end) => {
                if !self.timers.is_set(&Timer::Gap(conv)) {
                    let (from, to) = (view.next_seq, end);
                    Self::observe(out, Observation::GapDetected { conv, from, to });
                    self.timers.set(Timer::Gap(conv), now + GAP_REPAIR_DELAY_MS);
                }
            }
            None => {
                view.gap_fetches = 0;
                self.timers.cancel(&Timer::Gap(conv));
            }
        }
    }

    /// The last sequence number of the gap in front of the view, if there is one: before the
    /// first message held back, or up to where the log is known to reach.
    fn gap_end(view: &ConvView) -> Option<Seq> {
        match view.held.first_key_value() {
            Some((&first, _)) => Some(first - 1),
            None => (view.known_end >= view.next_seq).then_some(view.known_end),
        }
    }

    /// The view moved past a membership change at `seq`.
    fn apply_members(
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
    fn display(&mut self, now: Millis, out: &mut Vec<Effect>, msg: &Message, path: Path) {
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
                let hole = self.holes.entry(msg.conv).or_insert(msg.seq);
                *hole = (*hole).min(msg.seq);
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

    fn open_group(&mut self, msg: &Message) -> Option<Vec<u8>> {
        if self.bug(Bug::TlsOnly) {
            return Some(msg.body.clone());
        }
        let sealed = GroupSealed::decode(&msg.body)?;
        let key = self
            .peer_keys
            .get(&(msg.id.device, msg.conv, sealed.version))?;
        crate::e2e::group_open(key, msg.conv, msg.id, &sealed)
    }

    /// A text from someone else reached the screen: it is owed a delivered receipt, and a
    /// read one at once if the conversation is open here.
    fn shown(&mut self, now: Millis, msg: &Message, out: &mut Vec<Effect>) {
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
    fn took(&mut self, now: Millis, conv: ConvId, seq: Seq) {
        let r = self
            .receipts_out
            .entry((conv, ReceiptKind::Delivered))
            .or_default();
        r.want = r.want.max(seq);
        self.arm_receipts(now, conv);
    }

    /// Owe `sender` a `kind` receipt covering `seq` in `conv`.
    fn owe(&mut self, conv: ConvId, kind: ReceiptKind, seq: Seq, sender: DeviceId) {
        let r = self.receipts_out.entry((conv, kind)).or_default();
        r.want = r.want.max(seq);
        r.senders.insert(seq, sender);
    }

    /// Send this conversation's receipts soon (a burst of shows goes as one).
    fn arm_receipts(&mut self, now: Millis, conv: ConvId) {
        if !self.timers.is_set(&Timer::Receipt(conv)) {
            self.timers
                .set(Timer::Receipt(conv), now + RECEIPT_DELAY_MS);
        }
    }

    fn send_receipts(&mut self, now: Millis, conv: ConvId, out: &mut Vec<Effect>) {
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

    fn on_receipt_ack(&mut self, conv: ConvId, kind: ReceiptKind, upto: Seq) {
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
    fn on_receipt(&mut self, receipt: Receipt, out: &mut Vec<Effect>) {
        out.push(Effect::Up(Up::ReceiptSeen { receipt }));
        let key = (receipt.conv, receipt.reader, receipt.kind);
        let mark = self.marks.entry(key).or_default();
        if receipt.upto <= *mark {
            return; // A repeat or an older one: marks never go back.
        }
        let before = std::mem::replace(mark, receipt.upto);
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

    /// Our text at `seq` took its place in the view: from here on its ticks follow receipts.
    fn track_mine(&mut self, conv: ConvId, seq: Seq, id: MsgId, out: &mut Vec<Effect>) {
        let me = self.id.user;
        let recipients: BTreeSet<UserId> = if conv.is_group() {
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
        };
        self.mine.entry(conv).or_default().insert(seq, t);
        // Receipts can overtake our own ✓.
        self.update_ticks(conv, seq, out);
    }

    /// Delivered once every recipient user has it on some device; read once every one has
    /// read it (WhatsApp's group ticks). Shown only when they move forward.
    fn update_ticks(&mut self, conv: ConvId, seq: Seq, out: &mut Vec<Effect>) {
        let Some(t) = self.mine.get(&conv).and_then(|m| m.get(&seq)) else {
            return;
        };
        let mark = |user: UserId, kind: ReceiptKind| {
            self.topo
                .devices_of(user)
                .into_iter()
                .any(|d| self.marks.get(&(conv, d, kind)).is_some_and(|m| *m >= seq))
        };
        let all = |kind: ReceiptKind| t.recipients.iter().all(|u| mark(*u, kind));
        let tick = if all(ReceiptKind::Read) {
            Some(ReceiptKind::Read)
        } else if t
            .recipients
            .iter()
            .all(|u| mark(*u, ReceiptKind::Delivered) || mark(*u, ReceiptKind::Read))
        {
            Some(ReceiptKind::Delivered)
        } else {
            None
        };
        let Some(tick) = tick.filter(|new| Some(*new) > t.tick) else {
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

    /// Keep the sender key a group message carries for us, whatever happens to the message.
    fn take_keys(&mut self, msg: &Message) {
        let Some((_, copy)) = msg.keys.iter().find(|(d, _)| *d == self.id) else {
            return;
        };
        let sender = msg.id.device;
        // The copy's nonce depends on the version, which the body names.
        let Some(sealed) = GroupSealed::decode(&msg.body) else {
            return;
        };
        let version = sealed.version;
        let Some(opened) = self
            .session(sender)
            .and_then(|s| s.open_key(msg.id, version, copy))
        else {
            return;
        };
        if let Some((named, key)) = crate::e2e::decode_sender_key(&opened) {
            if named == version {
                self.peer_keys.insert((sender, msg.conv, version), key);
            }
        }
    }

    /// The devices a group message of ours goes to, as far as our view knows.
    fn group_recipients(&self, conv: ConvId) -> Vec<DeviceId> {
        self.convs.get(&conv).map_or_else(Vec::new, |v| {
            v.members
                .iter()
                .flat_map(|u| self.topo.devices_of(*u))
                .filter(|d| *d != self.id)
                .collect()
        })
    }

    /// Seal a group text under our sender key for the membership version we know; the key
    /// itself goes along, sealed per member device, until a message carrying it is stored.
    fn seal_group(&mut self, conv: ConvId, id: MsgId, plaintext: &[u8]) -> SealedGroup {
        let version = self.convs.get(&conv).map_or(0, |v| v.version);
        if self.bug(Bug::TlsOnly) {
            return (plaintext.to_vec(), version, Vec::new());
        }
        let key = match self.my_keys.get(&(conv, version)) {
            Some(k) => *k,
            None => {
                let mut k = [0u8; 32];
                self.rng.fill_bytes(&mut k);
                self.my_keys.insert((conv, version), k);
                k
            }
        };
        let mut keys = Vec::new();
        if !self.distributed.contains(&(conv, version)) {
            let wire = crate::e2e::encode_sender_key(version, &key);
            for to in self.group_recipients(conv) {
                if let Some(session) = self.session(to) {
                    keys.push((to, session.seal_key(id, version, &wire)));
                }
            }
        }
        let body = crate::e2e::group_seal(&key, conv, version, id, plaintext);
        (body, version, keys)
    }

    fn show(out: &mut Vec<Effect>, msg: &Message, path: Path) {
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

    /// The body servers see: one copy per recipient device, sealed for that device (plaintext
    /// copies with `tls-only`).
    fn seal(&mut self, conv: ConvId, id: MsgId, plaintext: &[u8]) -> Vec<u8> {
        let tls_only = self.bug(Bug::TlsOnly);
        let mut copies = Vec::new();
        for to in self.topo.recipients(conv, self.id) {
            if self.topo.late_devices.contains(&to) && !self.known_late.contains(&to) {
                continue; // Not known to be linked (storage says so if it is).
            }
            if tls_only {
                copies.push((to, plaintext.to_vec()));
            } else if let Some(session) = self.session(to) {
                copies.push((to, session.seal(id, plaintext)));
            }
            // A device missing from the directory cannot be written to.
        }
        Bundle { copies }.encode()
    }

    fn session(&mut self, peer: DeviceId) -> Option<&Session> {
        if !self.sessions.contains_key(&peer) {
            let key = self.topo.keys.get(&peer)?;
            let session = Session::new(&self.keys, self.id, peer, key);
            self.sessions.insert(peer, session);
        }
        self.sessions.get(&peer)
    }

    /// This device's plaintext of a delivered message, if it can open it.
    fn open(&mut self, msg: &Message) -> Option<Vec<u8>> {
        let bundle = Bundle::decode(&msg.body)?;
        let copy = bundle.copy_for(self.id)?;
        if self.bug(Bug::TlsOnly) {
            return Some(copy.to_vec());
        }
        self.session(msg.id.device)?.open(msg.id, copy)
    }

    fn on_deliver(&mut self, now: Millis, mut msg: Message, path: Path, out: &mut Vec<Effect>) {
        let (conv, seq, id) = (msg.conv, msg.seq, msg.id);
        out.push(Effect::Up(Up::Ack { conv, seq }));
        if id.device == self.id {
            // Our own message came back through a fetch: it is stored, so it counts as ✓ (and
            // a membership change of ours applies even if the outbox no longer has it).
            let op = msg.event.map(|e| e.op);
            self.on_sent_with(now, conv, id, seq, op, out);
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
                return self.fill_slot(now, conv, seq, Slot::BeforeMyTime, out);
            }
            match self.open(&msg) {
                Some(plaintext) => msg.body = plaintext,
                None => {
                    // Acked all the same: redelivering a copy that cannot be opened helps
                    // nobody.
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

    fn on_down(&mut self, now: Millis, frame: Down, out: &mut Vec<Effect>) {
        if self.link == Link::Down || self.link == Link::Connecting {
            return;
        }
        self.last_heard = now;
        match frame {
            Down::Welcome { epoch } => self.on_welcome(now, epoch, out),
            Down::Linked => {
                self.timers.cancel(&Timer::Link);
                if !self.link_stored {
                    self.link_stored = true;
                    Self::observe(out, Observation::Linked);
                }
            }
            Down::Refused { reason, id } => self.on_refused(now, reason, id, out),
            Down::Sent { conv, id, seq } => self.on_sent(now, conv, id, seq, out),
            Down::Deliver { msg, path } => self.on_deliver(now, msg, path, out),
            Down::DrainPage {
                next,
                more,
                receipts_more,
            } => {
                if receipts_more {
                    // Only a page of queued receipts comes with a drain (a big group queues two
                    // per member); once these are seen and dropped, the next drain brings more.
                    self.receipts_pending = true;
                }
                if self.drain.is_some() {
                    if more {
                        self.start_drain(now, next, out);
                    } else {
                        self.drain = None;
                        self.believes_drained = false;
                        self.timers.cancel(&Timer::Drain);
                        let again = if std::mem::take(&mut self.receipts_pending) {
                            DRAIN_RETRY_MS
                        } else {
                            INBOX_SYNC_MS
                        };
                        self.timers.set(Timer::Sync, now + again);
                        Self::observe(out, Observation::DrainComplete);
                    }
                }
            }
            Down::Pulled { conv, last } => {
                self.timers.cancel(&Timer::Pull(conv));
                let view = self.convs.entry(conv).or_default();
                if view.joined {
                    view.known_end = view.known_end.max(last);
                    self.advance(now, conv, out);
                }
            }
            Down::ReceiptAck { conv, kind, upto } => self.on_receipt_ack(conv, kind, upto),
            Down::Receipt { receipt } => self.on_receipt(receipt, out),
            Down::Presence {
                user,
                online,
                last_seen,
            } => {
                let looking = self.watched() == Some(user);
                let p = Observation::Presence {
                    user,
                    online,
                    last_seen,
                    looking,
                };
                Self::observe(out, p);
            }
            Down::Pong => {}
        }
    }

    /// Whose presence the open chat shows: the peer of an open direct conversation.
    fn watched(&self) -> Option<UserId> {
        self.open.and_then(|c| c.direct_peer(self.id.user))
    }

    /// Tell the session service whom we watch (renewing the lease while a chat is open).
    fn subscribe(&mut self, now: Millis, out: &mut Vec<Effect>) {
        if self.link != Link::Ready {
            return; // The welcome subscribes.
        }
        let user = self.watched();
        out.push(Effect::Up(Up::Subscribe { user }));
        self.subscribed = user.is_some();
        if user.is_some() {
            self.timers.set(Timer::Presence, now + PRESENCE_RENEW_MS);
        } else {
            self.timers.cancel(&Timer::Presence);
        }
    }

    fn on_action(&mut self, now: Millis, action: Action, out: &mut Vec<Effect>) {
        match action {
            Action::SendDirect { to, body } => {
                self.compose(now, ConvId::direct(self.id.user, to), body, None, out)
            }
            Action::SendGroup { group, body } => {
                self.compose(now, ConvId::group(group), body, None, out)
            }
            Action::CreateGroup { group, members } => {
                let op = GroupOp::Create { members };
                self.compose(now, ConvId::group(group), Vec::new(), Some(op), out)
            }
            Action::AddMember { group, user } => {
                let op = GroupOp::Add { user };
                self.compose(now, ConvId::group(group), Vec::new(), Some(op), out)
            }
            Action::RemoveMember { group, user } => {
                let op = GroupOp::Remove { user };
                self.compose(now, ConvId::group(group), Vec::new(), Some(op), out)
            }
            Action::GoOffline => {
                self.online = false;
                self.timers.cancel(&Timer::Reconnect);
                self.link_lost(now, DisconnectReason::UserOffline, true, out);
            }
            Action::GoOnline => {
                if !self.online {
                    self.online = true;
                    self.reconnect_failures = 0;
                    if self.link == Link::Down && self.wants_link(now) {
                        self.connect(out);
                    }
                }
            }
            Action::DropConnection => self.link_lost(now, DisconnectReason::Dropped, true, out),
            Action::Background => {
                if !self.background {
                    self.background = true;
                    self.woken_until = None;
                    self.timers.cancel(&Timer::Reconnect);
                    self.link_lost(now, DisconnectReason::Backgrounded, true, out);
                }
            }
            Action::Foreground => {
                self.background = false;
                self.woken_until = None;
                self.timers.cancel(&Timer::Sleep);
                self.read_open_chat(now, out);
                if self.online && self.link == Link::Down {
                    self.reconnect_failures = 0;
                    self.connect(out);
                }
            }
            Action::Link => {
                if !self.linked {
                    self.linked = true;
                    self.online = true;
                    self.reconnect_failures = 0;
                    if self.link == Link::Down && self.wants_link(now) {
                        self.connect(out);
                    }
                }
            }
            Action::OpenChat { conv } => self.open_chat(now, conv, out),
            Action::CloseChat { conv } if self.open == Some(conv) => {
                let watched = self.watched();
                self.open = None;
                Self::observe(out, Observation::Opened { conv: None });
                if watched.is_some() {
                    self.subscribe(now, out);
                }
            }
            Action::CloseChat { .. } => {}
        }
    }

    /// The user opens `conv`: everything shown there is read now.
    fn open_chat(&mut self, now: Millis, conv: ConvId, out: &mut Vec<Effect>) {
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
    fn read_open_chat(&mut self, now: Millis, out: &mut Vec<Effect>) {
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

    /// Put a new message (or membership change) in the outbox under a fresh id.
    fn compose(
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
        self.outbox.insert(
            id,
            Outgoing {
                conv,
                body,
                sent_at,
                attempts: 0,
                transmitted: false,
                op,
                carried_key: None,
            },
        );
        self.fill_window(now, out);
    }

    fn on_timer(&mut self, now: Millis, timer: Timer, out: &mut Vec<Effect>) {
        match timer {
            Timer::Reconnect => {
                if self.wants_link(now) && self.link == Link::Down {
                    self.connect(out);
                }
            }
            Timer::Heartbeat => {
                if self.link == Link::Down || self.link == Link::Connecting {
                    return;
                }
                if now.saturating_sub(self.last_heard) >= HEARTBEAT_TIMEOUT_MS {
                    self.link_lost(now, DisconnectReason::HeartbeatTimeout, true, out);
                } else {
                    out.push(Effect::Up(Up::Ping));
                    self.timers
                        .set(Timer::Heartbeat, now + HEARTBEAT_INTERVAL_MS);
                }
            }
            Timer::Handshake => {
                if self.link == Link::Handshaking {
                    self.link_lost(now, DisconnectReason::HeartbeatTimeout, true, out);
                }
            }
            Timer::Retry(id) => {
                if self.link == Link::Ready && self.outbox.contains_key(&id) {
                    self.transmit(now, id, out);
                }
            }
            Timer::Gap(conv) => {
                let skip = self.bug(Bug::ReaderSkipsUnfinishedSeq);
                let Some(view) = self.convs.get_mut(&conv) else {
                    return;
                };
                let Some(end) = Self::gap_end(view) else {
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
                    let to = end.min(from + GAP_FETCH_SEQS_MAX - 1);
                    out.push(Effect::Up(Up::Fetch { conv, from, to }));
                    Self::observe(out, Observation::GapFetch { conv, from, to });
                }
                self.timers.set(Timer::Gap(conv), now + GAP_RETRY_MS);
            }
            Timer::Drain => {
                if let (Link::Ready, Some(after)) = (self.link, self.drain) {
                    self.start_drain(now, after, out);
                }
            }
            Timer::Pull(conv) => {
                if self.link == Link::Ready {
                    self.pull(now, conv, out);
                }
            }
            Timer::Receipt(conv) => self.send_receipts(now, conv, out),
            Timer::Link => {
                // The link (or its answer) was lost: a shard or storage died with it.
                if !self.link_stored && self.link == Link::Ready {
                    out.push(Effect::Up(Up::Link));
                    self.timers.set(Timer::Link, now + LINK_RETRY_MS);
                }
            }
            Timer::Sleep => {
                if self.background {
                    self.woken_until = None;
                    self.timers.cancel(&Timer::Reconnect);
                    self.link_lost(now, DisconnectReason::Backgrounded, true, out);
                }
            }
            Timer::Presence => {
                if self.watched().is_some() {
                    self.subscribe(now, out);
                }
            }
            Timer::Sync => {
                if self.link == Link::Ready && self.drain.is_none() {
                    self.start_drain(now, None, out);
                }
            }
        }
    }
}

impl Machine for Device {
    fn handle(&mut self, now: Millis, input: Input, out: &mut Vec<Effect>) {
        match input {
            Input::Connected if self.link == Link::Connecting => {
                self.epoch += 1;
                self.link = Link::Handshaking;
                self.last_heard = now;
                let hello = Up::Hello {
                    device: self.id,
                    token: device_token(self.id),
                    epoch: self.epoch,
                };
                out.push(Effect::Up(hello));
                self.timers
                    .set(Timer::Handshake, now + HANDSHAKE_TIMEOUT_MS);
                self.timers
                    .set(Timer::Heartbeat, now + HEARTBEAT_INTERVAL_MS);
            }
            Input::ConnectFailed if self.link == Link::Connecting => {
                self.link = Link::Down;
                self.schedule_reconnect(now);
            }
            Input::Disconnected => self.link_lost(now, DisconnectReason::Closed, false, out),
            Input::Pushed => {
                Self::observe(out, Observation::Woken);
                if self.online && self.background {
                    // Connect and drain; the OS suspends the app again a little later.
                    let until = now + PUSH_WAKE_MS;
                    self.woken_until = Some(until);
                    self.timers.set(Timer::Sleep, until);
                    if self.link == Link::Down {
                        self.reconnect_failures = 0;
                        self.timers.cancel(&Timer::Reconnect);
                        self.connect(out);
                    }
                }
            }
            Input::Down(frame) => self.on_down(now, frame, out),
            Input::Action(action) => self.on_action(now, action, out),
            Input::Timeout => {
                while let Some(t) = self.timers.pop_due(now) {
                    self.on_timer(now, t, out);
                }
            }
            _ => {}
        }
        if self.link == Link::Ready {
            for conv in std::mem::take(&mut self.pulls_due) {
                self.pull(now, conv, out);
            }
        }
    }

    fn poll_timeout(&self) -> Option<Millis> {
        self.timers.next()
    }
}
