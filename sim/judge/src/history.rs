//! The history of one run: what every device observed and every fault the world injected, each
//! stamped with simulated time. This is all the checkers may look at (like Jepsen, they judge
//! what users could notice, never a server's internal state).

use chatsim_system::proto::{ConvId, DeviceId, GroupOp, Host, Millis, MsgId, Seq, UserId};
use chatsim_system::Observation;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// Every group's membership changes as devices saw them: group -> seq -> members after it.
/// Taken from the history (each device reports the changes its view moves past), so the
/// judges learn who was owed a message without asking the system.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Memberships(BTreeMap<ConvId, BTreeMap<Seq, Vec<UserId>>>);

impl Memberships {
    /// The members of `conv` when `seq` was assigned: after every change before it.
    pub fn before(&self, conv: ConvId, seq: Seq) -> &[UserId] {
        self.0
            .get(&conv)
            .and_then(|m| m.range(..seq).next_back())
            .map_or(&[], |(_, v)| v.as_slice())
    }

    /// The members after the change at `seq`, if `seq` is a membership change.
    pub fn change_at(&self, conv: ConvId, seq: Seq) -> Option<&[UserId]> {
        self.0
            .get(&conv)
            .and_then(|m| m.get(&seq))
            .map(Vec::as_slice)
    }
}

/// A fault the world injected (or healed). Device-level faults name the device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    /// A server host was killed (its memory is gone; synced storage survives).
    Kill(Host),
    /// A killed host was started again.
    Restart(Host),
    /// Every link into and out of a host stops delivering (frames are held, not dropped).
    Clog(Host),
    /// A clogged host's links deliver again (held frames arrive).
    Unclog(Host),
    /// Links between two sets of hosts stop delivering, both ways.
    Partition(Vec<Host>, Vec<Host>),
    /// A partition between these two sets ends.
    PartitionHealed(Vec<Host>, Vec<Host>),
    /// A device went offline by choice (airplane mode).
    DeviceOffline(DeviceId),
    /// A device came back online.
    DeviceOnline(DeviceId),
    /// A device's connection was dropped by the network; it reconnects on its own.
    DeviceDrop(DeviceId),
    /// A device went silent without closing its connection (half-open).
    DeviceSilent(DeviceId),
    /// A silent device's network works again.
    DeviceUnsilent(DeviceId),
    /// Frames from the first set of hosts to the second are dropped (not held), one way only;
    /// a stream that lost one stalls for good (turmoil's TCP has no retransmission), so only
    /// timeouts and reconnections recover.
    PartitionOneway(Vec<Host>, Vec<Host>),
    /// A one-way partition ends (streams it stalled stay stalled).
    PartitionOnewayHealed(Vec<Host>, Vec<Host>),
    // New variants go last: a trace hash covers the history's encoding, variant numbers
    // included, so a variant inserted above would move every trace that holds a later one.
    /// A device's connection fell into a black hole (NAT rebinding, a cell handover, a
    /// middlebox's idle timeout): frames are dropped both ways and no close ever arrives, so
    /// only a keepalive on either side notices. Connections it opens until the hole ends fall
    /// in too.
    DeviceBlackhole(DeviceId),
    /// New connections of the device get through again (the swallowed ones stay dead).
    DeviceBlackholeEnd(DeviceId),
    /// Every link of a server host gets a hundredfold latency (a congested switch, a GC
    /// pause in a proxy): frames still arrive, but paths through it fall far behind paths
    /// around it, so what races (a live push, an inbox drain, a gap fetch, a receipt) arrives
    /// out of order.
    LatencySpike(Host),
    /// The host's links are back to their usual latency.
    LatencySpikeEnd(Host),
    /// A storage host's disk slows: every sync takes
    /// [`chatsim_system::limits::DISK_SLOW_SYNC_MS`] (a failing or saturated device), so acks
    /// wait for it.
    DiskSlow(Host),
    /// The disk syncs at its usual speed again.
    DiskSlowEnd(Host),
    /// Storage's disk is full: writes that add data are refused (no ack; the writer retries),
    /// deletes and reads go on.
    DiskFull(Host),
    /// There is room on the disk again.
    DiskFullEnd(Host),
}

/// Something a user did to what their app shows, as the plan scheduled it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum View {
    /// Opened this chat (switching from any other).
    Open(ConvId),
    /// Closed this chat (nothing happens if it is not the one open).
    Close(ConvId),
    /// Put the app in the background: an open chat is no longer looked at.
    Background,
    /// Brought the app back.
    Foreground,
    /// Turned the phone's network off (airplane mode).
    Offline,
    /// Turned it back on.
    Online,
}

/// When each device's user was looking at which chat, replayed from [`History::views`].
pub struct Looking {
    /// Per device: (chat, from, until) while it was open with the app in the foreground;
    /// `until` is `Millis::MAX` for one still being looked at when the run ended.
    pub looked: BTreeMap<DeviceId, Vec<(ConvId, Millis, Millis)>>,
    /// Per device: the chat open when the run ended (foreground or not) and since when.
    pub open_at_end: BTreeMap<DeviceId, (ConvId, Millis)>,
}

impl Looking {
    /// Replays the plan's views as a device handles them: opening switches chats, closing
    /// another chat than the open one does nothing, and a backgrounded app looks at nothing.
    pub fn build(h: &History) -> Looking {
        #[derive(Default)]
        struct State {
            open: Option<(ConvId, Millis)>,
            background: bool,
            /// The chat being looked at and since when.
            looking: Option<(ConvId, Millis)>,
        }
        let mut states: BTreeMap<DeviceId, State> = BTreeMap::new();
        let mut looked: BTreeMap<DeviceId, Vec<(ConvId, Millis, Millis)>> = BTreeMap::new();
        for &(t, d, view) in &h.views {
            let st = states.entry(d).or_default();
            match view {
                View::Open(c) => st.open = Some((c, t)),
                View::Close(c) => {
                    if st.open.is_some_and(|(o, _)| o == c) {
                        st.open = None;
                    }
                }
                View::Background => st.background = true,
                View::Foreground => st.background = false,
                View::Offline | View::Online => continue,
            }
            let now = st.open.filter(|_| !st.background).map(|(c, _)| c);
            if st.looking.map(|(c, _)| c) != now {
                if let Some((c, from)) = st.looking.take() {
                    looked.entry(d).or_default().push((c, from, t));
                }
                st.looking = now.map(|c| (c, t));
            }
        }
        let mut open_at_end = BTreeMap::new();
        for (d, st) in states {
            if let Some((c, from)) = st.looking {
                looked.entry(d).or_default().push((c, from, Millis::MAX));
            }
            if let Some(open) = st.open {
                open_at_end.insert(d, open);
            }
        }
        Looking {
            looked,
            open_at_end,
        }
    }

    /// Whether `d`'s user looked at `conv` at some moment in `[from, to]`.
    pub fn looked_between(&self, d: DeviceId, conv: ConvId, from: Millis, to: Millis) -> bool {
        self.looked.get(&d).is_some_and(|all| {
            all.iter()
                .any(|&(c, a, b)| c == conv && a <= to && b >= from)
        })
    }
}

impl Fault {
    /// Whether this starts a server fault (`Some(true)`), ends one (`Some(false)`), or is a
    /// device's (`None`): the one place the checkers learn which faults put servers in bad
    /// weather, so a new kind is classified once.
    pub fn server(&self) -> Option<bool> {
        match self {
            Fault::Kill(_)
            | Fault::Clog(_)
            | Fault::Partition(..)
            | Fault::PartitionOneway(..)
            | Fault::LatencySpike(_)
            | Fault::DiskSlow(_)
            | Fault::DiskFull(_) => Some(true),
            Fault::Restart(_)
            | Fault::Unclog(_)
            | Fault::PartitionHealed(..)
            | Fault::PartitionOnewayHealed(..)
            | Fault::LatencySpikeEnd(_)
            | Fault::DiskSlowEnd(_)
            | Fault::DiskFullEnd(_) => Some(false),
            Fault::DeviceOffline(_)
            | Fault::DeviceOnline(_)
            | Fault::DeviceDrop(_)
            | Fault::DeviceSilent(_)
            | Fault::DeviceUnsilent(_)
            | Fault::DeviceBlackhole(_)
            | Fault::DeviceBlackholeEnd(_) => None,
        }
    }
}

/// One line of history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A device observed something.
    Device {
        /// Which device.
        device: DeviceId,
        /// What it saw.
        obs: Observation,
    },
    /// The world injected or healed a fault.
    Fault(Fault),
    /// Every fault is healed from here on: liveness is measured from this point.
    Healed,
}

/// An event with its simulated time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Simulated ms since the start of the run.
    pub t: Millis,
    /// What happened.
    pub event: Event,
}

/// A run's history plus the little static knowledge checkers need to interpret it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Events in the order they happened (non-decreasing `t`).
    pub records: Vec<Record>,
    /// Number of users (ids `0..users`), each with one device (index 0) on the 1:1 path.
    pub users: u32,
    /// When the run ended (simulated ms).
    pub end: Millis,
    /// Devices per user (index 0 is the primary phone); 0 is read as 1.
    #[serde(default)]
    pub devices_per_user: u8,
    /// Devices added to their user's account mid-run: owed only what was sent after storage
    /// had their link (their `Linked`).
    #[serde(default)]
    pub late_devices: Vec<DeviceId>,
    /// What the inboxes still held when the run ended, (device, conversation, seq), in order.
    #[serde(default)]
    pub inbox_left: Vec<(DeviceId, ConvId, Seq)>,
    /// What users did to their apps' screens, from the plan, in time order: the truth read
    /// receipts and presence are judged against (a device's own `Opened` and `Read` reports
    /// are what is on trial). Empty for a history with no plan behind it; the checks that
    /// need it then fall back to the devices' reports.
    #[serde(default)]
    pub views: Vec<(Millis, DeviceId, View)>,
    /// When the storage coordinator finished each rebuild of its view from its replicas (at
    /// boot and after each restart; empty without replicas): it serves only from then, so a
    /// restart's recovery is judged from here, not from the restart. Not serialised, so not in
    /// the trace hash: it follows from the frames the hash already covers, and adding it moved
    /// no trace. A history read back from a file has none, and is judged as before it existed
    /// (calm from the restart).
    #[serde(skip)]
    pub rebuilt: Vec<Millis>,
    /// Every frame a server host received, bytes and all: what servers could see. Not part
    /// of the serialised history (the trace hash already covers every frame).
    #[serde(skip)]
    pub server_frames: Vec<ServerFrame>,
    /// Set when the engine screened server frames as they arrived: `server_frames` then holds
    /// only frames that contained a screened text.
    #[serde(skip)]
    pub screened: Option<crate::confidential::Screened>,
}

/// One frame as a server host received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerFrame {
    /// When it arrived.
    pub t: Millis,
    /// Which server.
    pub host: Host,
    /// Its bytes on the wire.
    pub bytes: Vec<u8>,
}

impl History {
    /// An empty history for `users` users with one device each.
    pub fn new(users: u32) -> History {
        History::with_devices(users, 1)
    }

    /// An empty history for `users` users with `devices_per_user` devices each.
    pub fn with_devices(users: u32, devices_per_user: u8) -> History {
        History {
            records: Vec::new(),
            users,
            end: 0,
            devices_per_user,
            late_devices: Vec::new(),
            inbox_left: Vec::new(),
            views: Vec::new(),
            rebuilt: Vec::new(),
            server_frames: Vec::new(),
            screened: None,
        }
    }

    pub(crate) fn devices_of(&self, user: UserId) -> impl Iterator<Item = DeviceId> {
        (0..self.devices_per_user.max(1)).map(move |index| DeviceId { user, index })
    }

    /// Append an event at `t`.
    pub fn push(&mut self, t: Millis, event: Event) {
        self.records.push(Record { t, event });
    }

    /// Append a device observation at `t`.
    pub fn observe(&mut self, t: Millis, device: DeviceId, obs: Observation) {
        self.push(t, Event::Device { device, obs });
    }

    /// When faults were healed, if they were.
    pub fn healed_at(&self) -> Option<Millis> {
        self.records
            .iter()
            .find(|r| r.event == Event::Healed)
            .map(|r| r.t)
    }

    /// The devices that must display a message the `sender` device sent in `conv`: every
    /// device of the other member of the direct conversation, and the sender's own other
    /// devices (a user's companions show what their phone sent). Written here from the spec,
    /// not borrowed from the system, so a wrong recipient list there is caught, not copied.
    pub fn recipients(&self, conv: ConvId, sender: DeviceId) -> Vec<DeviceId> {
        let Some(peer) = conv
            .direct_peer(sender.user)
            .filter(|p| p.0 < self.users && *p != sender.user)
        else {
            return Vec::new();
        };
        let own = self.devices_of(sender.user).filter(|d| *d != sender);
        self.devices_of(peer).chain(own).collect()
    }

    /// Ids of the membership changes users asked for (their `Sent` describes the change; it
    /// is not a text).
    pub fn change_ids(&self) -> std::collections::BTreeSet<MsgId> {
        self.records
            .iter()
            .filter_map(|r| match &r.event {
                Event::Device {
                    obs: Observation::ChangeAsked { id, .. },
                    ..
                } => Some(*id),
                _ => None,
            })
            .collect()
    }

    /// Every message id a user composed (a `Sent` on the device the id names): what a
    /// compromised device made up is not among them.
    pub fn composed(&self) -> BTreeSet<MsgId> {
        self.records
            .iter()
            .filter_map(|r| match &r.event {
                Event::Device {
                    device,
                    obs: Observation::Sent { id, .. },
                } if id.device == *device => Some(*id),
                _ => None,
            })
            .collect()
    }

    /// Devices that sent a crafted request ([`Observation::Attacked`]): compromised for the
    /// whole run, as far as the judges are concerned.
    pub fn attackers(&self) -> BTreeSet<DeviceId> {
        self.records
            .iter()
            .filter_map(|r| match &r.event {
                Event::Device {
                    device,
                    obs: Observation::Attacked { .. },
                } => Some(*device),
                _ => None,
            })
            .collect()
    }

    /// Every group's membership, rebuilt from the changes users asked for (`ChangeAsked`),
    /// placed at the sequence number the history shows each one took (its ✓, or any device
    /// showing it). Not from the member lists the server computed: a server that dropped a
    /// member would have the judges agree with it. Changes that never took a sequence number
    /// (refused) change nothing.
    pub fn memberships(&self) -> Memberships {
        let mut asked: BTreeMap<MsgId, (ConvId, GroupOp)> = BTreeMap::new();
        let mut seq_of: BTreeMap<MsgId, Seq> = BTreeMap::new();
        for r in &self.records {
            let Event::Device { obs, .. } = &r.event else {
                continue;
            };
            match obs {
                Observation::ChangeAsked { id, conv, op } => {
                    asked.insert(*id, (*conv, op.clone()));
                }
                Observation::Acked { id, seq, .. } | Observation::Displayed { id, seq, .. } => {
                    seq_of.entry(*id).or_insert(*seq);
                }
                _ => {}
            }
        }
        let mut changes: BTreeMap<ConvId, BTreeMap<Seq, (MsgId, GroupOp)>> = BTreeMap::new();
        for (id, (conv, op)) in asked {
            if let Some(seq) = seq_of.get(&id) {
                changes.entry(conv).or_default().insert(*seq, (id, op));
            }
        }
        let mut m: BTreeMap<ConvId, BTreeMap<Seq, Vec<UserId>>> = BTreeMap::new();
        for (conv, by_seq) in changes {
            let mut members: BTreeSet<UserId> = BTreeSet::new();
            let at = m.entry(conv).or_default();
            for (seq, (id, op)) in by_seq {
                match op {
                    GroupOp::Create { members: first } => {
                        members = first.into_iter().collect();
                        members.insert(id.device.user);
                    }
                    GroupOp::Add { user } => {
                        members.insert(user);
                    }
                    GroupOp::Remove { user } => {
                        members.remove(&user);
                    }
                }
                at.insert(seq, members.iter().copied().collect());
            }
        }
        Memberships(m)
    }

    /// Every membership change a device reported moving past, as (time, device, group, seq,
    /// members), for comparison with [`History::memberships`].
    pub fn reported_memberships(&self) -> Vec<(Millis, DeviceId, ConvId, Seq, &[UserId])> {
        self.records
            .iter()
            .filter_map(|r| match &r.event {
                Event::Device {
                    device,
                    obs: Observation::MembersChanged { conv, seq, members },
                } => Some((r.t, *device, *conv, *seq, members.as_slice())),
                _ => None,
            })
            .collect()
    }

    /// The devices owed a message `sender` got sequence number `seq` for in `conv`. Direct:
    /// as [`History::recipients`]. Group: every device of every member at that moment (a
    /// membership change also goes to the members it adds), but the sender device itself.
    pub fn recipients_at(
        &self,
        m: &Memberships,
        conv: ConvId,
        seq: Seq,
        sender: DeviceId,
    ) -> Vec<DeviceId> {
        if !conv.is_group() {
            return self.recipients(conv, sender);
        }
        let mut users: BTreeSet<UserId> = m.before(conv, seq).iter().copied().collect();
        users.extend(m.change_at(conv, seq).unwrap_or_default().iter().copied());
        users
            .into_iter()
            .flat_map(|u| self.devices_of(u))
            .filter(|d| *d != sender)
            .collect()
    }

    /// Who is owed what, as far as devices added mid-run go (see [`Links`]).
    pub fn links(&self) -> Links {
        let mut links = Links {
            late: self.late_devices.iter().copied().collect(),
            ..Links::default()
        };
        for r in &self.records {
            let Event::Device { device, obs } = &r.event else {
                continue;
            };
            match obs {
                Observation::Linked => {
                    links.linked.entry(*device).or_insert(r.t);
                }
                Observation::Sent { id, .. } if !links.late.is_empty() => {
                    links.sent.entry(*id).or_insert(r.t);
                }
                _ => {}
            }
        }
        links
    }

    /// All devices in the run.
    pub fn devices(&self) -> impl Iterator<Item = DeviceId> + '_ {
        (0..self.users).flat_map(|u| self.devices_of(UserId(u)))
    }
}

/// When each device added mid-run was linked, and when each message was sent: such a device
/// is owed a message only if the user pressed send after its link was stored (a message sent
/// earlier may still reach it, if its append came later, but need not).
#[derive(Clone, Debug, Default)]
pub struct Links {
    late: BTreeSet<DeviceId>,
    linked: BTreeMap<DeviceId, Millis>,
    sent: BTreeMap<MsgId, Millis>,
}

impl Links {
    /// When storage had `device`'s link, if it was linked mid-run and that happened.
    pub fn linked_at(&self, device: DeviceId) -> Option<Millis> {
        self.linked.get(&device).copied()
    }

    /// Whether `device` is owed message `id`.
    pub fn owed(&self, device: DeviceId, id: MsgId) -> bool {
        if !self.late.contains(&device) {
            return true;
        }
        match (self.linked.get(&device), self.sent.get(&id)) {
            (Some(linked), Some(sent)) => linked <= sent,
            _ => false,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |hs: &[Host]| {
            hs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Fault::Kill(h) => write!(f, "kill {h}"),
            Fault::Restart(h) => write!(f, "restart {h}"),
            Fault::Clog(h) => write!(f, "clog {h}"),
            Fault::Unclog(h) => write!(f, "unclog {h}"),
            Fault::Partition(a, b) => write!(f, "partition [{}] | [{}]", side(a), side(b)),
            Fault::PartitionHealed(a, b) => {
                write!(f, "heal partition [{}] | [{}]", side(a), side(b))
            }
            Fault::PartitionOneway(a, b) => {
                write!(f, "one-way partition [{}] -> [{}]", side(a), side(b))
            }
            Fault::PartitionOnewayHealed(a, b) => {
                write!(f, "heal one-way partition [{}] -> [{}]", side(a), side(b))
            }
            Fault::DeviceOffline(d) => write!(f, "{d} goes offline"),
            Fault::DeviceOnline(d) => write!(f, "{d} comes online"),
            Fault::DeviceDrop(d) => write!(f, "{d} loses its connection"),
            Fault::DeviceSilent(d) => write!(f, "{d} goes silent (half-open)"),
            Fault::DeviceUnsilent(d) => write!(f, "{d} is reachable again"),
            Fault::DeviceBlackhole(d) => {
                write!(f, "{d}'s connection falls into a black hole (no close)")
            }
            Fault::DeviceBlackholeEnd(d) => write!(f, "{d}'s new connections get through again"),
            Fault::LatencySpike(h) => write!(f, "{h}'s links slow a hundredfold"),
            Fault::LatencySpikeEnd(h) => write!(f, "{h}'s links are fast again"),
            Fault::DiskSlow(h) => write!(f, "{h}'s disk slows (each sync takes long)"),
            Fault::DiskSlowEnd(h) => write!(f, "{h}'s disk syncs at its usual speed"),
            Fault::DiskFull(h) => write!(f, "{h}'s disk is full (writes refused)"),
            Fault::DiskFullEnd(h) => write!(f, "{h}'s disk has room again"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::no_loss;
    use chatsim_system::proto::MsgId;

    // With companions, a message is owed to the other member's devices and to the sender's own
    // other devices; a companion left without its copy is a loss.
    #[test]
    fn a_senders_companion_without_its_copy_is_a_loss() {
        let (a0, a1) = (
            DeviceId {
                user: UserId(0),
                index: 0,
            },
            DeviceId {
                user: UserId(0),
                index: 1,
            },
        );
        let (b0, b1) = (
            DeviceId {
                user: UserId(1),
                index: 0,
            },
            DeviceId {
                user: UserId(1),
                index: 1,
            },
        );
        let conv = ConvId::direct(UserId(0), UserId(1));
        let mut h = History::with_devices(2, 2);
        assert_eq!(h.recipients(conv, a0), vec![b0, b1, a1]);
        assert_eq!(h.devices().count(), 4);
        let id = MsgId { device: a0, n: 0 };
        let body = b"hi".to_vec();
        h.observe(
            1,
            a0,
            Observation::Sent {
                id,
                conv,
                body: body.clone(),
            },
        );
        h.observe(2, a0, Observation::Acked { id, conv, seq: 1 });
        for d in [b0, b1] {
            let obs = Observation::Displayed {
                id,
                conv,
                seq: 1,
                path: chatsim_system::proto::Path::Live,
                body: body.clone(),
                sent_at: 0,
            };
            h.observe(3, d, obs);
        }
        h.end = 10_000;
        let v = no_loss(&h);
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
        assert_eq!(v.violations[0].device.as_deref(), Some("u0.d1"));
    }

    // In a group, a text is owed to the members at its sequence number: a member then who
    // never shows it is a loss; a member added after it is owed nothing.
    #[test]
    fn a_group_member_at_the_texts_seq_without_it_is_a_loss_and_a_later_one_is_not() {
        use chatsim_system::proto::GroupOp;
        let g = ConvId::group(3);
        let dev = |u: u32| DeviceId::primary(UserId(u));
        let mut h = History::new(4);
        let create = MsgId {
            device: dev(0),
            n: 0,
        };
        let text = MsgId {
            device: dev(0),
            n: 1,
        };
        let add = MsgId {
            device: dev(0),
            n: 2,
        };
        let ops = [
            (
                create,
                1,
                GroupOp::Create {
                    members: vec![UserId(1), UserId(2)],
                },
            ),
            (add, 3, GroupOp::Add { user: UserId(3) }),
        ];
        for (id, seq, op) in ops {
            h.observe(
                seq,
                dev(0),
                Observation::Sent {
                    id,
                    conv: g,
                    body: vec![],
                },
            );
            h.observe(seq, dev(0), Observation::ChangeAsked { id, conv: g, op });
            h.observe(seq, dev(0), Observation::Acked { id, conv: g, seq });
        }
        let body = b"to the group".to_vec();
        h.observe(
            2,
            dev(0),
            Observation::Sent {
                id: text,
                conv: g,
                body: body.clone(),
            },
        );
        h.observe(
            2,
            dev(0),
            Observation::Acked {
                id: text,
                conv: g,
                seq: 2,
            },
        );
        let shown = Observation::Displayed {
            id: text,
            conv: g,
            seq: 2,
            path: chatsim_system::proto::Path::Live,
            body,
            sent_at: 0,
        };
        h.observe(4, dev(1), shown);
        h.end = 10_000;
        let m = h.memberships();
        assert_eq!(
            h.recipients_at(&m, g, 2, dev(0)),
            vec![dev(1), dev(2)],
            "the text is owed to u1 and u2, not to u3 added later"
        );
        let v = no_loss(&h);
        let missing: Vec<_> = v
            .violations
            .iter()
            .filter(|x| x.message.as_deref() == Some("u0.d0#1"))
            .map(|x| x.device.clone())
            .collect();
        assert_eq!(missing, vec![Some("u2.d0".to_string())]);
    }
}
