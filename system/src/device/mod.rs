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
//!
//! The machine is one struct, [`Device`], whose methods live beside their concern: this file
//! holds its state, construction and input dispatch; `connection` the link, handshake, drains
//! and presence watch; `outbox` composing, sending and retrying; `conversation` the per-chat
//! view (ordering, gaps, dedup, membership); `receipts` receipts owed and ticks shown; `keys`
//! end-to-end sealing and opening.

mod attack;
mod connection;
mod conversation;
mod keys;
mod outbox;
mod polling;
mod receipts;

use self::conversation::{ConvView, Slot};
use self::outbox::Outgoing;
use self::receipts::{MineTicks, ReceiptOut};
use crate::attack::Attack;
use crate::bugs::Bug;
use crate::e2e::{KeyPair, Session};
use crate::limits::{
    BACKOFF_DOUBLINGS_MAX, CLOCK_SKEW_MS_MAX, HANDSHAKE_TIMEOUT_MS, HEARTBEAT_INTERVAL_MS,
    HEARTBEAT_TIMEOUT_MS, INBOX_SYNC_MS, LINK_RETRY_MS, PUSH_WAKE_MS, RECEIPTS_DRAIN_AGAIN_MS,
};
use crate::probe::Probe;
use crate::proto::{
    ConvId, DeviceId, Down, GroupOp, InboxCursor, Millis, MsgId, ReceiptKind, Seq, Up,
};
use crate::routing::device_token;
use crate::timers::Timers;
use crate::{Action, Deployment, DisconnectReason, Effect, Input, Machine, Observation};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet};

/// Where the device's one connection stands.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Link {
    /// No connection, nor one asked for (a reconnect may be scheduled).
    Down,
    /// `Connect` went out; the engine has not said whether it opened.
    Connecting,
    /// Open, `Hello` sent, `Welcome` not yet back.
    Handshaking,
    /// Welcomed: frames may flow.
    Ready,
}

/// The device's timers; the derived order decides which of two due at once fires first.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Try connecting again (backoff after a failure or a lost link).
    Reconnect,
    /// Ping the gateway, or give up on a connection heard nothing on for too long.
    Heartbeat,
    /// Give up on a connection whose `Welcome` has not come.
    Handshake,
    /// Send this outbox entry again, same id, unless it was acknowledged meanwhile.
    Retry(MsgId),
    /// Fetch the gap in front of this conversation's view (again).
    Gap(ConvId),
    /// Ask again for the drain page that has not come.
    Drain,
    /// Drain the inbox again: the periodic backstop, or sooner if receipts are still queued.
    Sync,
    /// Ask again how far this group's log reaches (groups read from their log).
    Pull(ConvId),
    /// Send this conversation's owed receipts: a moment after a show, then as retries.
    Receipt(ConvId),
    /// Say which receipts of this conversation we saw, a moment after the first.
    Seen(ConvId),
    /// Renew the presence subscription of the open chat.
    Presence,
    /// The push's wake-up is over: back to sleep in the background.
    Sleep,
    /// Ask storage again to record our link.
    Link,
    /// Polling: the request has answered everything; close it (after a linger for acks).
    Hangup,
    /// Polling: a long poll's hold is over, or a short poll's request took too long.
    Hold,
}

/// A device.
#[derive(Clone, Debug, Hash)]
pub struct Device {
    /// Who this device is (its user and device number).
    id: DeviceId,
    /// The deployment it runs in: gateways, key directory, bugs switched on.
    /// Shared by every machine of a deployment: a model checker clones whole worlds per state.
    topo: std::sync::Arc<Deployment>,
    /// The only source of randomness (gateway choice, jitter, sender keys), seeded.
    rng: crate::draws::Draws,
    /// Where the one connection stands.
    link: Link,
    /// The gateway of the current (or last) connection.
    gateway: u16,
    /// Connections opened so far; a `Welcome` must name the current one.
    epoch: u64,
    /// The user (or the world) has the phone online.
    online: bool,
    /// Connection failures since the last welcome, for the reconnect backoff.
    reconnect_failures: u32,
    /// When the gateway was last heard from, for the heartbeat timeout.
    last_heard: Millis,
    /// When this device last sent the gateway anything: a link busy both ways within the
    /// interval needs no ping (MQTT and XMPP ping only an idle link).
    last_sent: Millis,
    /// Messages composed and not yet sent ✓ (or refused for good), by client id.
    outbox: BTreeMap<MsgId, Outgoing>,
    /// The number of the next client message id this device hands out.
    next_n: u32,
    /// What this device shows of each conversation.
    convs: BTreeMap<ConvId, ConvView>,
    /// A drain in progress: the cursor of the page asked for (`None` inside: from the start).
    drain: Option<Option<InboxCursor>>,
    /// Pages of the drain in progress asked for after its first (a probe counts them).
    drain_pages: u32,
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
    /// Receipts we got and have not yet said we saw: the newest mark per reader and kind.
    seen: BTreeMap<ConvId, BTreeMap<(DeviceId, ReceiptKind), Seq>>,
    /// Our texts not yet read by all, per conversation and seq.
    mine: BTreeMap<ConvId, BTreeMap<Seq, MineTicks>>,
    /// The id and conversation of the latest text of ours stored (sent ✓): what a compromised
    /// app replays with other words.
    last_acked_text: Option<(MsgId, ConvId)>,
    /// Compromised only: attacks waiting for a welcomed connection.
    attacks_due: Vec<Attack>,
    /// Compromised only: requests sent under made-up ids, awaiting an answer.
    forged: BTreeMap<MsgId, attack::Forged>,
    /// Compromised only: made-up ids handed out so far.
    forged_n: u32,
    /// Compromised only: conversations an attack asked about.
    probing: BTreeSet<ConvId>,
    /// Polling: something was delivered on this request (a long poll answers then).
    request_got: bool,
    /// Pending deadlines.
    timers: Timers<Timer>,
}

impl Device {
    /// A device, offline until its first `GoOnline` (or started with `online` true, in which
    /// case it connects on its first `Timeout`). `seed` drives its generator.
    pub fn new(
        id: DeviceId,
        topo: impl Into<std::sync::Arc<Deployment>>,
        seed: u64,
        online: bool,
    ) -> Device {
        let topo: std::sync::Arc<Deployment> = topo.into();
        let mut timers = Timers::default();
        let linked = !topo.late_devices.contains(&id);
        if online && linked {
            timers.set(Timer::Reconnect, 0);
        }
        // The directory's copy was derived from the same key seed (a test world may have none).
        let keys = crate::e2e::device_keypair(topo.key_seed, id, topo.keys.get(&id).copied());
        debug_assert_eq!(
            keys.public,
            crate::e2e::device_keypair(topo.key_seed, id, None).public,
            "the key directory disagrees with {id}'s own keys"
        );
        let mut rng = crate::draws::Draws::seeded(seed);
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
            last_sent: 0,
            outbox: BTreeMap::new(),
            next_n: 0,
            convs: BTreeMap::new(),
            drain: None,
            drain_pages: 0,
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
            seen: BTreeMap::new(),
            mine: BTreeMap::new(),
            last_acked_text: None,
            attacks_due: Vec::new(),
            forged: BTreeMap::new(),
            forged_n: 0,
            probing: BTreeSet::new(),
            request_got: false,
            timers,
        }
    }

    /// Number this device's connections from after `epoch`. A simulated phone lives as long
    /// as its run and counts from 0; a real client is a new process each time it starts, and
    /// counting from 0 again would have the session service refuse it as stale until its last
    /// connection's entry is gone, so it starts past a number it cannot have used (its clock).
    pub fn resume_epochs_after(&mut self, epoch: u64) {
        self.epoch = self.epoch.max(epoch);
    }

    /// The counter the next message id will take ([`MsgId::n`]).
    pub fn next_message_n(&self) -> u32 {
        self.next_n
    }

    /// Hand out message ids from `n` on. A device that lives in more than one process (a real
    /// client, restarted) must never reuse an id: the shard would answer a new text with an
    /// old one's ✓ as a retry, every receiver would drop it as a duplicate, and its sealing
    /// would reuse a nonce under the same key.
    pub fn resume_ids_at(&mut self, n: u32) {
        self.next_n = self.next_n.max(n);
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
        // The observations that mark a defensive branch are its probes too, so the probe sits
        // where the user-visible fact is made.
        let probe = match &o {
            Observation::DuplicateDropped { .. } => Some(Probe::DuplicateDropped),
            Observation::GapDetected { .. } => Some(Probe::GapDetected),
            Observation::GapFetch { .. } => Some(Probe::GapFetched),
            Observation::Undecryptable { .. } => Some(Probe::Undecryptable),
            Observation::Woken => Some(Probe::WokenByPush),
            _ => None,
        };
        out.push(Effect::Observe(o));
        if let Some(p) = probe {
            Self::probe(out, p);
        }
    }

    fn probe(out: &mut Vec<Effect>, p: Probe) {
        out.push(Effect::Probe(p));
    }

    /// Capped exponential backoff with jitter in [delay/2, delay].
    fn backoff(&mut self, min: Millis, max: Millis, attempts: u32) -> Millis {
        let delay = min
            .saturating_mul(1 << attempts.min(BACKOFF_DOUBLINGS_MAX))
            .min(max);
        self.rng.gen_range(delay / 2..=delay)
    }

    fn on_down(&mut self, now: Millis, frame: Down, out: &mut Vec<Effect>) {
        if self.link == Link::Down || self.link == Link::Connecting {
            return;
        }
        if !frame.seqs_in_range() {
            return; // From a hostile or broken server: no conversation reaches that far.
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
            Down::Refused { reason, id } => {
                if !self.forged_refused(reason, id, out) {
                    self.on_refused(now, reason, id, out)
                }
            }
            Down::Sent { conv, id, seq } => {
                if !self.forged_sent(now, conv, id, seq, out) {
                    self.on_sent(now, conv, id, seq, out)
                }
            }
            Down::Deliver { msg, path } => {
                self.request_got = true;
                if self.probed(msg.conv) {
                    let (id, conv, seq) = (msg.id, msg.conv, msg.seq);
                    Self::observe(out, Observation::Fetched { id, conv, seq });
                }
                self.on_deliver(now, msg, path, out)
            }
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
                    if more && !self.bug(Bug::DrainFirstPageOnly) {
                        self.drain_pages += 1;
                        Self::probe(out, Probe::DrainSecondPage);
                        if self.drain_pages > 1 {
                            Self::probe(out, Probe::DrainManyPages);
                        }
                        self.start_drain(now, next, out);
                    } else {
                        self.drain = None;
                        self.believes_drained = false;
                        self.timers.cancel(&Timer::Drain);
                        let again = if std::mem::take(&mut self.receipts_pending) {
                            self.flush_seen(out);
                            RECEIPTS_DRAIN_AGAIN_MS
                        } else {
                            INBOX_SYNC_MS
                        };
                        self.timers.set(Timer::Sync, now + again);
                        Self::observe(out, Observation::DrainComplete);
                    }
                }
            }
            Down::Pulled { conv, last } => {
                if self.probed(conv) {
                    Self::observe(out, Observation::Pulled { conv, last });
                }
                self.timers.cancel(&Timer::Pull(conv));
                let view = self.convs.entry(conv).or_default();
                if view.joined {
                    view.known_end = view.known_end.max(last);
                    self.advance(now, conv, out);
                }
            }
            Down::ReceiptAck { conv, kind, upto } => self.on_receipt_ack(conv, kind, upto),
            Down::Receipt { receipt } => self.on_receipt(now, receipt, out),
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
            Action::Attack(attack) => self.plan_attack(now, attack, out),
        }
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
                let quiet = |at: Millis| now.saturating_sub(at) >= HEARTBEAT_INTERVAL_MS;
                if now.saturating_sub(self.last_heard) >= HEARTBEAT_TIMEOUT_MS {
                    Self::probe(out, Probe::HeartbeatTimedOut);
                    self.link_lost(now, DisconnectReason::HeartbeatTimeout, true, out);
                } else if !quiet(self.last_heard) && !quiet(self.last_sent) {
                    // Both ends spoke within the interval: the link is alive and the gateway's
                    // idle scan has heard us, so a ping would say nothing. Look again once
                    // the older of the two is an interval old.
                    let next = self.last_heard.min(self.last_sent) + HEARTBEAT_INTERVAL_MS;
                    self.timers.set(Timer::Heartbeat, next.max(now + 1));
                } else {
                    out.push(Effect::Up(Up::Ping));
                    if self.bug(Bug::HeartbeatHearsOwnPings) {
                        self.last_heard = now;
                    }
                    self.timers
                        .set(Timer::Heartbeat, now + HEARTBEAT_INTERVAL_MS);
                }
            }
            Timer::Handshake => {
                if self.link == Link::Handshaking {
                    Self::probe(out, Probe::HandshakeTimedOut);
                    self.link_lost(now, DisconnectReason::HeartbeatTimeout, true, out);
                }
            }
            Timer::Retry(id) => {
                if self.link == Link::Ready && self.outbox.contains_key(&id) {
                    Self::probe(out, Probe::OutboxRetried);
                    self.transmit(now, id, out);
                }
            }
            Timer::Gap(conv) => self.on_gap_timer(now, conv, out),
            Timer::Drain => {
                if let (Link::Ready, Some(after)) = (self.link, self.drain) {
                    self.start_drain(now, after, out);
                }
            }
            Timer::Pull(conv) => {
                // A member removed meanwhile has no business asking (the shard refuses it).
                let joined = self.convs.get(&conv).is_some_and(|v| v.joined);
                if self.link == Link::Ready && joined {
                    self.pull(now, conv, out);
                }
            }
            Timer::Receipt(conv) => self.send_receipts(now, conv, out),
            Timer::Seen(conv) => self.send_seen(conv, out),
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
            Timer::Hangup => self.on_hangup(now, out),
            Timer::Hold => self.on_hold(now, out),
        }
    }
}

impl Machine for Device {
    fn handle(&mut self, now: Millis, input: Input, out: &mut Vec<Effect>) {
        let before = out.len();
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
                // A polling request is short; its own deadline (`Hold`) stands in for pings.
                if self.polling().is_none() {
                    self.timers
                        .set(Timer::Heartbeat, now + HEARTBEAT_INTERVAL_MS);
                }
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
            // A late answer to a connection attempt given up on meanwhile (the handshake or a
            // drop ended it, or the user went offline): the link it was for is gone.
            Input::Connected | Input::ConnectFailed => {}
            // Server-side inputs: engines may hand any input to any machine, and a phone has
            // no connections of its own to accept nor peers to hear RPCs from.
            Input::Rpc { .. }
            | Input::Accepted { .. }
            | Input::FromConn { .. }
            | Input::ConnClosed { .. }
            | Input::Disk(_) => {}
        }
        if self.link == Link::Ready {
            for conv in std::mem::take(&mut self.pulls_due) {
                self.pull(now, conv, out);
            }
            if !self.attacks_due.is_empty() {
                self.launch_attacks(now, out);
            }
            self.maybe_hang_up(now);
        }
        if out[before..].iter().any(|e| matches!(e, Effect::Up(_))) {
            self.last_sent = now;
        }
    }

    fn poll_timeout(&self) -> Option<Millis> {
        self.timers.next()
    }
}
