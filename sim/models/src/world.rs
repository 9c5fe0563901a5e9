//! The adapter: every component of a small deployment held in one value that stateright can
//! explore. The components are the very `chatsim-system` machines the simulators run; this
//! module only carries their effects (frames into the network, durable writes beside the
//! nodes, observations into [`Facts`]) and offers the choices the world can make next
//! ([`Step`]): which frame arrives, which is lost or duplicated, when timers fire, what a user
//! does, what crashes.
//!
//! Time: the clock moves only when the next timer fires ([`Step::Tick`]), and (with
//! `quiet_ticks`) only once no frame is deliverable, so every frame arrives before the next
//! timer unless it is dropped or held by a partition. That keeps a 20-second horizon of
//! heartbeats and lease renewals finite and small; a frame overtaken by a timer is what a drop
//! plus a retry, or a partition's held frames, stand for.
//!
//! Hashing: stateright deduplicates states by hash. Every machine derives `Hash` over ordered
//! collections only (a rule of the whole code base, for determinism); the few hand-written
//! ones say what they stand for (a generator by where its stream stands, a key pair by its
//! public half, the key directory and the pairwise-session cache as their `Debug` shows them,
//! so states merge exactly as when they were told apart by their rendering). A [`World`] keeps
//! each machine's and the durable state's hash as a digest, refreshed when a step changes it,
//! and the machines sit behind copy-on-write `Arc`s: a state costs what its step changed.

use chatsim_system::device::Device;
use chatsim_system::durable::DurableState;
use chatsim_system::gateway::Gateway;
use chatsim_system::proto::{
    ConnId, ConvId, DeviceId, Host, Millis, MsgId, ReceiptKind, Rpc, Seq, UserId,
};
use chatsim_system::push::Push;
use chatsim_system::route::{route, Route};
use chatsim_system::session::Session;
use chatsim_system::shard::Shard;
use chatsim_system::storage::Storage;
use chatsim_system::{Action, Deployment, Effect, Input, Machine, Observation};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;

pub use crate::bounds::{Budget, Cue, Limits, Scripts};

/// One display: (conversation, seq, id, body).
pub type Shown = (ConvId, Seq, MsgId, Vec<u8>);

/// What users saw, kept as the properties need it (no times: two paths to the same facts and
/// machines are one state).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Facts {
    /// Texts users pressed send on (membership changes excluded), with their bodies.
    pub texts: BTreeMap<MsgId, (ConvId, Vec<u8>)>,
    /// Membership changes asked for.
    pub changes: BTreeSet<MsgId>,
    /// Sent ✓, with the sequence number the server gave.
    pub acked: BTreeMap<MsgId, (ConvId, Seq)>,
    /// Each device's displays in order.
    pub shown: BTreeMap<DeviceId, Vec<Shown>>,
    /// Inbox drains completed, by any device.
    pub drains: u8,
    /// Servers crashed so far.
    pub crashes: u8,
    /// Texts the server refused for good (the user was told they failed).
    pub refused: BTreeSet<MsgId>,
    /// The ticks each sender device shows on its texts (delivered ✓✓, or read).
    pub ticks: BTreeMap<MsgId, ReceiptKind>,
    /// How far each device has read each conversation.
    pub read: BTreeMap<(DeviceId, ConvId), Seq>,
    /// `Unregister`s gateways sent the session service (a connection of theirs ended).
    pub unregisters: u8,
    /// The first thing a compromised device got out of the servers that it must not have (an
    /// ack under another's name, a foreign chat's message or length, a receipt from outside).
    pub breach: Option<String>,
    /// Requests refused as coming from outside a conversation (`NotMember`).
    pub outsiders_refused: u8,
}

/// A FIFO channel: a device connection's end, or a link from one server to another (each is
/// one TCP connection in the engines).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Lane {
    /// Frames to `to` on device connection `conn`.
    Conn {
        /// The receiving end.
        to: Host,
        /// The connection.
        conn: ConnId,
    },
    /// Frames from one server (or the push provider) to another host.
    Link {
        /// Sender.
        from: Host,
        /// Receiver.
        to: Host,
    },
}

/// One choice the world makes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Step {
    /// The oldest frame on a lane arrives.
    Arrive(Lane),
    /// The oldest frame on a server link is lost.
    Lose(Lane),
    /// The oldest frame on a server link arrives, and a copy stays at the head (a resend).
    Repeat(Lane),
    /// Unordered network: a frame in flight arrives; named by its rendering.
    Deliver(String),
    /// Unordered network: it is lost.
    Drop(String),
    /// Unordered network: it arrives, and a copy stays in flight.
    Dup(String),
    /// The next timer fires (the clock jumps to it).
    Tick,
    /// A user does the next thing in their script.
    User(DeviceId),
    /// A server crashes and restarts from what it made durable.
    Crash(Host),
    /// The network cuts a device's connection.
    CutConn(DeviceId),
    /// A device's network changes: the phone sees its connection die and reconnects, while
    /// its gateway keeps the old socket open (half-open) until its idle timeout.
    HalfOpen(DeviceId),
    /// A server is cut off from the other servers; what it sends them or they send it waits
    /// (device connections stay up).
    Partition(Host),
    /// Every partition heals and what waited is delivered.
    Heal,
}

/// A server-to-server frame (or a push) in flight.
#[derive(Clone, Debug, Hash)]
pub struct Packet {
    /// Sender.
    pub from: Host,
    /// Receiver.
    pub to: Host,
    /// What it delivers.
    pub input: Input,
}

/// The whole deployment as one explorable state.
#[derive(Clone, Debug)]
pub struct World {
    /// Virtual now (ms).
    pub now: Millis,
    // Machines and the durable state sit behind `Arc`s, copied on write: a step changes one or
    // two of them, and a state's clone (and drop) then costs a pointer for each of the rest.
    gateways: Vec<Arc<Gateway>>,
    session: Arc<Session>,
    shards: Vec<Arc<Shard>>,
    storage: Arc<Storage>,
    push: Arc<Push>,
    devices: BTreeMap<DeviceId, Arc<Device>>,
    /// What the servers have synced (a crash keeps only this).
    pub durable: Arc<DurableState>,
    /// What the state's hash is made of for the machines and `durable`.
    digests: Digests,
    conns: BTreeMap<DeviceId, (u16, ConnId)>,
    next_conn: u64,
    /// Frames in flight on FIFO lanes (each copied on write, as the machines are).
    lanes: BTreeMap<Lane, Arc<VecDeque<Input>>>,
    /// Server frames in flight when links are unordered: a multiset keyed by rendering, any
    /// of them may come next.
    net: BTreeMap<String, (Packet, u32)>,
    /// Whether server links are unordered (`net`) instead of FIFO lanes.
    unordered: bool,
    /// Partitioned servers.
    cut: BTreeSet<Host>,
    /// How far each device is through its user's script.
    script_at: BTreeMap<DeviceId, usize>,
    /// Faults left.
    pub budget: Budget,
    /// What users saw (copied on write: most steps show nothing).
    pub facts: Arc<Facts>,
}

/// One value's hash, as the checker's digests of machines keep it.
fn digest_of(value: &impl Hash) -> u64 {
    // aHash with fixed seeds: several times SipHash's speed on a machine's many small fields,
    // and the same digests on every run.
    ahash::RandomState::with_seeds(1, 2, 3, 4).hash_one(value)
}

/// Each machine's and the durable state's digest (and each machine's next timer), kept up to
/// date as they change: a step changes one or two of them, and hashing only those instead of
/// the whole world took most of a state's cost away.
#[derive(Clone, Debug, Default)]
struct Digests {
    /// By host, in order (the hosts are fixed when the world is made), each with its next
    /// timer: the search asks for the earliest at every state.
    hosts: Vec<(Host, u64, Option<Millis>)>,
    durable: u64,
}

#[cfg(debug_assertions)]
thread_local! {
    /// States hashed on this thread, for the sampled freshness check.
    static CHECKED: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl Hash for World {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Named field by field, so a new field must be placed: digested or hashed here.
        let World {
            now,
            gateways: _,
            session: _,
            shards: _,
            storage: _,
            push: _,
            devices: _,
            durable: _,
            digests,
            conns,
            next_conn,
            lanes,
            net,
            unordered,
            cut,
            script_at,
            budget,
            facts,
        } = self;
        // Checking hashes every machine again, so debug builds check one state in 16.
        #[cfg(debug_assertions)]
        {
            let n = CHECKED.with(|c| c.replace(c.get().wrapping_add(1)));
            assert!(
                !n.is_multiple_of(16) || self.digests_fresh(),
                "a machine or the durable state changed without its digest"
            );
        }
        for (_, d, _) in &digests.hosts {
            state.write_u64(*d);
        }
        state.write_u64(digests.durable);
        (now, conns, next_conn, lanes, net, unordered).hash(state);
        (cut, script_at, budget, facts).hash(state);
    }
}

// Two states are the same state exactly when the search merges them: by their hash (the
// `Hash` above), so equality and hashing cannot disagree.
impl PartialEq for World {
    fn eq(&self, other: &World) -> bool {
        digest_of(self) == digest_of(other)
    }
}

impl Eq for World {}

/// The push provider's seed, as the in-memory harness has it.
const PUSH_SEED: u64 = 1;

/// A device's seed, as the in-memory harness derives it.
fn seed_of(d: DeviceId) -> u64 {
    u64::from(d.user.0) * 8 + u64::from(d.index) + 1
}

/// `topo` with every device's public key in its directory (each device's key pair comes from
/// its seed).
pub fn keyed(topo: &Deployment) -> Deployment {
    let mut topo = topo.clone();
    topo.keys = chatsim_system::KeyDirectory::new(
        (0..topo.users)
            .flat_map(|u| topo.devices_of(UserId(u)))
            .map(|d| (d, chatsim_system::e2e::device_public(topo.key_seed, d)))
            .collect(),
    );
    topo
}

impl World {
    /// Every component fresh, every device online and about to connect. `topo` must be
    /// [`keyed`].
    pub fn new(topo: &Deployment, budget: Budget, unordered: bool) -> World {
        // One copy for every machine: a state's clone then copies a pointer per machine.
        let topo = Arc::new(topo.clone());
        let all: Vec<DeviceId> = (0..topo.users)
            .flat_map(|u| topo.devices_of(UserId(u)))
            .collect();
        let mut durable = DurableState::new(topo.storage_model);
        let mut world = World {
            now: 0,
            gateways: (0..topo.gateways)
                .map(|i| Arc::new(Gateway::new(i, Arc::clone(&topo))))
                .collect(),
            session: Arc::new(durable.start_session(&topo)),
            shards: (0..topo.shards)
                .map(|i| Arc::new(Shard::new(i, Arc::clone(&topo))))
                .collect(),
            storage: Arc::new(durable.start_storage(&topo)),
            push: Arc::new(Push::new(Arc::clone(&topo), PUSH_SEED)),
            devices: all
                .iter()
                .map(|d| {
                    (
                        *d,
                        Arc::new(Device::new(*d, Arc::clone(&topo), seed_of(*d), true)),
                    )
                })
                .collect(),
            durable: Arc::new(durable),
            conns: BTreeMap::new(),
            next_conn: 0,
            lanes: BTreeMap::new(),
            net: BTreeMap::new(),
            unordered,
            cut: BTreeSet::new(),
            script_at: all.iter().map(|d| (*d, 0)).collect(),
            budget,
            facts: Arc::default(),
            digests: Digests::default(),
        };
        for h in world.hosts() {
            world.redigest(h);
        }
        world.digests.durable = digest_of(&world.durable);
        world
    }

    /// Hash `host` again into its digest (and read its next timer), after it changed.
    fn redigest(&mut self, host: Host) {
        fn of(m: &(impl Hash + Machine)) -> (u64, Option<Millis>) {
            (digest_of(m), m.poll_timeout())
        }
        let d = match host {
            Host::Gateway(i) => self.gateways.get(usize::from(i)).map(|m| of(&**m)),
            Host::Session => Some(of(&*self.session)),
            Host::Shard(i) => self.shards.get(usize::from(i)).map(|m| of(&**m)),
            Host::Storage(_) => Some(of(&*self.storage)),
            Host::Push => Some(of(&*self.push)),
            Host::Device(d) => self.devices.get(&d).map(|m| of(&**m)),
            Host::Replica(_) => None,
        };
        if let Some((d, deadline)) = d {
            match self.digests.hosts.binary_search_by_key(&host, |(h, ..)| *h) {
                Ok(at) => self.digests.hosts[at] = (host, d, deadline),
                Err(at) => self.digests.hosts.insert(at, (host, d, deadline)),
            }
        }
    }

    /// Whether every digest matches what it digests (sampled in debug builds' hashing).
    #[cfg_attr(not(debug_assertions), allow(dead_code))]
    fn digests_fresh(&self) -> bool {
        let mut fresh = self.clone();
        for h in self.hosts() {
            fresh.redigest(h);
        }
        fresh.digests.durable = digest_of(&self.durable);
        fresh.digests.hosts == self.digests.hosts && fresh.digests.durable == self.digests.durable
    }

    fn machine(&mut self, host: Host) -> Option<&mut dyn Machine> {
        Some(match host {
            Host::Gateway(i) => {
                Arc::make_mut(self.gateways.get_mut(usize::from(i))?) as &mut dyn Machine
            }
            Host::Session => Arc::make_mut(&mut self.session) as &mut dyn Machine,
            Host::Shard(i) => {
                Arc::make_mut(self.shards.get_mut(usize::from(i))?) as &mut dyn Machine
            }
            Host::Storage(_) => Arc::make_mut(&mut self.storage) as &mut dyn Machine,
            Host::Push => Arc::make_mut(&mut self.push) as &mut dyn Machine,
            Host::Device(d) => Arc::make_mut(self.devices.get_mut(&d)?) as &mut dyn Machine,
            Host::Replica(_) => return None,
        })
    }

    fn hosts(&self) -> Vec<Host> {
        let mut hosts: Vec<Host> = self
            .gateways
            .iter()
            .map(|g| Host::Gateway(g.index()))
            .collect();
        hosts.extend([Host::Session, Host::Storage(0), Host::Push]);
        hosts.extend(self.shards.iter().map(|s| Host::Shard(s.index())));
        hosts.extend(self.devices.keys().map(|d| Host::Device(*d)));
        hosts
    }

    /// Hand `input` to `host` now and carry out its effects.
    fn input(&mut self, host: Host, input: Input) {
        let now = self.now;
        let mut out = Vec::new();
        let Some(m) = self.machine(host) else { return };
        m.handle(now, input, &mut out);
        self.redigest(host);
        let mut durable = false;
        for e in out {
            durable |= self.effect(host, e);
        }
        if durable {
            self.digests.durable = digest_of(&self.durable);
        }
    }

    fn send(&mut self, from: Host, to: Host, input: Input) {
        if !self.unordered {
            let lane = Lane::Link { from, to };
            Arc::make_mut(self.lanes.entry(lane).or_default()).push_back(input);
            return;
        }
        let key = format!("{from} -> {to}: {input:?}");
        self.net
            .entry(key)
            .or_insert_with(|| (Packet { from, to, input }, 0))
            .1 += 1;
    }

    fn lane(&mut self, to: Host, conn: ConnId, input: Input) {
        Arc::make_mut(self.lanes.entry(Lane::Conn { to, conn }).or_default()).push_back(input);
    }

    fn device_at(&self, gateway: u16, conn: ConnId) -> Option<DeviceId> {
        self.conns
            .iter()
            .find(|(_, c)| **c == (gateway, conn))
            .map(|(d, _)| *d)
    }

    /// Carry one effect, routed by the shared router, into the model's network; say whether
    /// it changed the durable state.
    fn effect(&mut self, host: Host, e: Effect) -> bool {
        match route(host, e) {
            Route::Wake(d) => self.send(host, Host::Device(d), Input::Pushed),
            Route::Peer { to, rpc } => {
                if matches!(rpc, Rpc::Unregister { .. }) {
                    let f = Arc::make_mut(&mut self.facts);
                    f.unregisters = f.unregisters.saturating_add(1);
                }
                self.send(host, to, Input::Rpc { from: host, rpc })
            }
            Route::Down {
                gateway,
                conn,
                frame,
            } => {
                if let Some(d) = self.device_at(gateway, conn) {
                    self.lane(Host::Device(d), conn, Input::Down(frame));
                }
            }
            Route::Close { gateway, conn } => {
                if let Some(d) = self.device_at(gateway, conn) {
                    self.conns.remove(&d);
                    self.lane(Host::Device(d), conn, Input::Disconnected);
                }
            }
            Route::Connect { device, gateway } => {
                self.close_device_conn(device);
                self.next_conn += 1;
                let conn = ConnId(self.next_conn);
                self.conns.insert(device, (gateway, conn));
                self.lane(Host::Gateway(gateway), conn, Input::Accepted { conn });
                self.lane(Host::Device(device), conn, Input::Connected);
            }
            Route::Up { device, up } => {
                if let Some(&(g, conn)) = self.conns.get(&device) {
                    self.lane(Host::Gateway(g), conn, Input::FromConn { conn, up });
                }
            }
            Route::Disconnect { device } => self.close_device_conn(device),
            Route::Observe { device, obs } => self.observe(device, obs),
            Route::Durable(write) => {
                Arc::make_mut(&mut self.durable).apply(write);
                return true;
            }
            // Coverage is the swarm's question; counting here would split equal states.
            Route::Probe(_) => {}
        }
        false
    }

    fn observe(&mut self, d: DeviceId, o: Observation) {
        let f = Arc::make_mut(&mut self.facts);
        match o.clone() {
            Observation::Sent { id, conv, body } => {
                f.texts.insert(id, (conv, body));
            }
            Observation::ChangeAsked { id, .. } => {
                f.changes.insert(id);
                f.texts.remove(&id);
            }
            Observation::Acked { id, conv, seq } => {
                f.acked.insert(id, (conv, seq));
            }
            Observation::Displayed {
                id,
                conv,
                seq,
                body,
                ..
            } => f.shown.entry(d).or_default().push((conv, seq, id, body)),
            Observation::DrainComplete => f.drains = f.drains.saturating_add(1),
            Observation::Ticks { id, tick, .. } => {
                f.ticks.insert(id, tick);
            }
            Observation::Read { conv, upto } => {
                let at = f.read.entry((d, conv)).or_default();
                *at = (*at).max(upto);
            }
            Observation::Refused {
                id: Some(id),
                fin: true,
                ..
            } => {
                f.refused.insert(id);
            }
            _ => {}
        }
        if let Some(b) = breach(d, &o, &self.durable) {
            Arc::make_mut(&mut self.facts).breach.get_or_insert(b);
        }
        if matches!(
            o,
            Observation::Refused {
                reason: chatsim_system::proto::Refusal::NotMember,
                ..
            }
        ) {
            let f = Arc::make_mut(&mut self.facts);
            f.outsiders_refused = f.outsiders_refused.saturating_add(1);
        }
    }

    fn close_device_conn(&mut self, d: DeviceId) {
        if let Some((g, conn)) = self.conns.remove(&d) {
            // What was on its way to the phone dies with the socket.
            self.lanes.remove(&Lane::Conn {
                to: Host::Device(d),
                conn,
            });
            self.lane(Host::Gateway(g), conn, Input::ConnClosed { conn });
        }
    }

    /// Whether frames may move between `from` and `to`: neither end is partitioned.
    fn open(&self, from: Host, to: Host) -> bool {
        !self.cut.contains(&from) && !self.cut.contains(&to)
    }

    fn lane_open(&self, lane: &Lane) -> bool {
        match lane {
            Lane::Conn { .. } => true,
            Lane::Link { from, to } => self.open(*from, *to),
        }
    }

    /// Whether anything can arrive now (held frames of a partition do not count).
    pub fn quiet(&self) -> bool {
        !self
            .lanes
            .iter()
            .any(|(l, q)| !q.is_empty() && self.lane_open(l))
            && !self.net.values().any(|(p, _)| self.open(p.from, p.to))
    }

    /// Whether device `d` holds message `id` of `conv` back behind a gap.
    pub fn holds(&self, d: DeviceId, conv: ConvId, id: MsgId) -> bool {
        self.devices.get(&d).is_some_and(|dev| dev.has(conv, id))
    }

    /// How far `d` is through its script.
    pub fn script_at(&self, d: DeviceId) -> usize {
        self.script_at.get(&d).copied().unwrap_or(0)
    }

    /// The frame at the head of `lane`, if any.
    pub fn head(&self, lane: &Lane) -> Option<&Input> {
        self.lanes.get(lane).and_then(|q| q.front())
    }

    /// Frames in flight that may arrive now: a partition's held frames pile up one per
    /// timer of the cut-off server (retries, lease renewals), with no choice among them until
    /// the heal, so they do not count against the bound.
    pub fn in_flight(&self) -> usize {
        self.lanes
            .iter()
            .filter(|(l, _)| self.lane_open(l))
            .map(|(_, q)| q.len())
            .sum::<usize>()
            + self
                .net
                .values()
                .filter(|(p, _)| self.open(p.from, p.to))
                .map(|(_, n)| *n as usize)
                .sum::<usize>()
    }

    /// When `host` next wants a timeout.
    /// `host`'s next timer, as kept beside its digest.
    fn deadline(&self, host: Host) -> Option<Millis> {
        let at = self
            .digests
            .hosts
            .binary_search_by_key(&host, |(h, ..)| *h)
            .ok()?;
        self.digests.hosts[at].2
    }

    /// The earliest timer of any component.
    pub fn next_deadline(&self) -> Option<Millis> {
        self.digests.hosts.iter().filter_map(|(.., t)| *t).min()
    }

    /// Fire every timer due at the next deadline, in a fixed host order.
    fn tick(&mut self) {
        let Some(at) = self.next_deadline() else {
            return;
        };
        self.now = self.now.max(at);
        for h in self.hosts() {
            if self.deadline(h).is_some_and(|t| t <= self.now) {
                self.input(h, Input::Timeout);
            }
        }
    }

    /// Crash `host` and restart it at once from its durable state: what was in flight to it
    /// is lost, and a gateway's connections close.
    fn crash(&mut self, host: Host, topo: &Deployment) {
        self.net.retain(|_, (p, _)| p.to != host);
        self.lanes
            .retain(|l, _| !matches!(l, Lane::Link { to, .. } if *to == host));
        Arc::make_mut(&mut self.facts).crashes += 1;
        match host {
            Host::Gateway(g) => {
                self.gateways[usize::from(g)] = Arc::new(Gateway::new(g, topo.clone()));
                self.lanes
                    .retain(|l, _| !matches!(l, Lane::Conn { to, .. } if *to == Host::Gateway(g)));
                let gone: Vec<(DeviceId, ConnId)> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.0 == g)
                    .map(|(d, c)| (*d, c.1))
                    .collect();
                for (d, conn) in gone {
                    self.conns.remove(&d);
                    self.lanes.remove(&Lane::Conn {
                        to: Host::Gateway(g),
                        conn,
                    });
                    self.lanes.remove(&Lane::Conn {
                        to: Host::Device(d),
                        conn,
                    });
                    self.lane(Host::Device(d), conn, Input::Disconnected);
                }
            }
            Host::Session => {
                self.session = Arc::new(Arc::make_mut(&mut self.durable).start_session(topo))
            }
            Host::Shard(s) => {
                self.shards[usize::from(s)] = Arc::new(Shard::new(s, topo.clone()));
            }
            Host::Storage(_) => {
                self.storage = Arc::new(Arc::make_mut(&mut self.durable).start_storage(topo))
            }
            Host::Push => self.push = Arc::new(Push::new(topo.clone(), PUSH_SEED)),
            Host::Device(_) | Host::Replica(_) => {}
        }
        self.redigest(host);
        self.digests.durable = digest_of(&self.durable);
    }

    /// Apply one step (the model's `next_state`).
    pub fn apply(&mut self, step: &Step, topo: &Deployment, scripts: &Scripts) {
        match step {
            Step::Deliver(key) | Step::Dup(key) | Step::Drop(key) => {
                let Some((packet, n)) = self.net.get_mut(key) else {
                    return;
                };
                let packet = packet.clone();
                match step {
                    Step::Dup(_) => {
                        self.budget.dups -= 1;
                        self.budget.total -= 1;
                    }
                    _ => {
                        *n -= 1;
                        if *n == 0 {
                            self.net.remove(key);
                        }
                    }
                }
                if let Step::Drop(_) = step {
                    self.budget.drops -= 1;
                    self.budget.total -= 1;
                } else {
                    self.input(packet.to, packet.input);
                }
            }
            Step::Arrive(lane) | Step::Lose(lane) | Step::Repeat(lane) => {
                let Some(q) = self.lanes.get_mut(lane).map(Arc::make_mut) else {
                    return;
                };
                let input = match step {
                    Step::Repeat(_) => q.front().cloned(),
                    _ => q.pop_front(),
                };
                if q.is_empty() {
                    self.lanes.remove(lane);
                }
                let Some(input) = input else { return };
                let to = match lane {
                    Lane::Conn { to, .. } | Lane::Link { to, .. } => *to,
                };
                match step {
                    Step::Lose(_) => {
                        self.budget.drops -= 1;
                        self.budget.total -= 1;
                    }
                    Step::Repeat(_) => {
                        self.budget.dups -= 1;
                        self.budget.total -= 1;
                        self.input(to, input);
                    }
                    _ => self.input(to, input),
                }
            }
            Step::Tick => self.tick(),
            Step::User(d) => {
                let at = self.script_at.get(d).copied().unwrap_or(0);
                if let Some(cue) = scripts.get(d).and_then(|s| s.get(at)).cloned() {
                    self.script_at.insert(*d, at + 1);
                    self.input(Host::Device(*d), Input::Action(cue.action));
                }
            }
            Step::Crash(h) => {
                self.budget.crashes -= 1;
                self.budget.total -= 1;
                self.crash(*h, topo);
            }
            Step::CutConn(d) => {
                self.budget.conn_drops -= 1;
                self.budget.total -= 1;
                self.input(Host::Device(*d), Input::Action(Action::DropConnection));
            }
            Step::HalfOpen(d) => {
                self.budget.half_opens -= 1;
                self.budget.total -= 1;
                // Forget the socket without telling the gateway: what it writes there now
                // goes nowhere, and what was on its way to the phone is gone.
                if let Some((_, conn)) = self.conns.remove(d) {
                    self.lanes.remove(&Lane::Conn {
                        to: Host::Device(*d),
                        conn,
                    });
                }
                self.input(Host::Device(*d), Input::Action(Action::DropConnection));
            }
            Step::Partition(h) => {
                self.budget.partitions -= 1;
                self.budget.total -= 1;
                self.cut.insert(*h);
            }
            Step::Heal => self.cut.clear(),
        }
    }

    /// The steps open from here (the model's `actions`), in a fixed order.
    pub fn steps(&self, spec: &Limits, scripts: &Scripts, out: &mut Vec<Step>) {
        let window = self.now < spec.faults_until;
        if (window || !spec.settle_in_order) && self.in_flight() > spec.in_flight_max {
            // Past the bound nothing happens (the state is still judged, unlike states outside
            // stateright's `within_boundary`, which it never checks). Settling in order is one
            // schedule, so nothing to bound.
            return;
        }
        let faults = window && self.budget.total > 0;
        for (key, (p, _)) in &self.net {
            if !self.open(p.from, p.to) {
                continue;
            }
            out.push(Step::Deliver(key.clone()));
            let server = !matches!(p.to, Host::Device(_));
            if faults && server && self.budget.drops > 0 {
                out.push(Step::Drop(key.clone()));
            }
            if faults && server && self.budget.dups > 0 {
                out.push(Step::Dup(key.clone()));
            }
        }
        for (lane, q) in &self.lanes {
            if q.is_empty() || !self.lane_open(lane) {
                continue;
            }
            out.push(Step::Arrive(*lane));
            // Server links lose and repeat frames; a device connection only dies whole.
            let server = matches!(lane, Lane::Link { to, .. } if !matches!(to, Host::Device(_)));
            if faults && server && self.budget.drops > 0 {
                out.push(Step::Lose(*lane));
            }
            if faults && server && self.budget.dups > 0 {
                out.push(Step::Repeat(*lane));
            }
        }
        // Users act between bursts, when nothing can arrive: their actions still race with
        // timers, drops and crashes, but not with every frame of the background traffic.
        let quiet = self.quiet();
        let next = self.next_deadline();
        // A cue with a `by` the next timer would pass holds the clock until it is done.
        let due = |cue: &Cue| cue.by.is_some_and(|by| next.is_none_or(|t| t >= by));
        let mut waiting = false;
        for (d, at) in &self.script_at {
            let Some(cue) = scripts.get(d).and_then(|s| s.get(*at)) else {
                continue;
            };
            waiting |= due(cue);
            let acting = match cue.by {
                None => self.now < spec.users_until,
                Some(_) => self.now >= cue.from || due(cue),
            };
            if acting && quiet {
                out.push(Step::User(*d));
            }
        }
        if !window && !self.cut.is_empty() {
            // Partitions heal when the fault window closes: healing earlier would let every
            // order of the frames they held be searched, and those pile up one per timer.
            out.clear();
            out.push(Step::Heal);
            return;
        }
        if !window && spec.settle_in_order && !out.is_empty() {
            // Settling: one schedule, the first frame that can arrive.
            out.truncate(1);
            return;
        }
        if (!spec.quiet_ticks || quiet) && !waiting {
            if let Some(t) = next {
                if t <= spec.horizon {
                    out.push(Step::Tick);
                }
            }
        }
        if faults {
            if self.budget.crashes > 0 {
                out.extend(spec.crashable.iter().map(|h| Step::Crash(*h)));
            }
            let connected = spec.droppable.iter().filter(|d| self.conns.contains_key(d));
            if self.budget.conn_drops > 0 {
                out.extend(connected.clone().map(|d| Step::CutConn(*d)));
            }
            if self.budget.half_opens > 0 {
                out.extend(connected.map(|d| Step::HalfOpen(*d)));
            }
            if self.budget.partitions > 0 && self.cut.is_empty() && self.now < spec.users_until {
                out.extend(spec.partitionable.iter().map(|h| Step::Partition(*h)));
            }
        }
    }

    /// Whether the run has settled: nothing can arrive and no timer is left before the
    /// horizon. Delivery is judged here.
    pub fn settled(&self, horizon: Millis) -> bool {
        self.quiet() && self.cut.is_empty() && self.next_deadline().is_none_or(|t| t > horizon)
    }

    /// Bring the deployment up along one schedule, with no user action and no fault: every
    /// phone connected, registered and drained, every slot leased, nothing in flight. Models
    /// start here, so the search spends itself on messages and faults, not on the order in
    /// which phones first connect. At most `steps_max` steps.
    pub fn warm_up(&mut self, topo: &Deployment, steps_max: usize) {
        let calm = Limits {
            unordered: self.unordered,
            in_flight_max: usize::MAX,
            ..Limits::new(Millis::MAX, 0, 0)
        };
        let phones = self.devices.len();
        let scripts = Scripts::new();
        let mut steps = Vec::new();
        for _ in 0..steps_max {
            let up = self.devices.values().all(|d| d.is_ready());
            if up && usize::from(self.facts.drains) >= phones && self.quiet() {
                return;
            }
            steps.clear();
            self.steps(&calm, &scripts, &mut steps);
            let Some(step) = steps.first().cloned() else {
                return;
            };
            self.apply(&step, topo, &scripts);
        }
    }

    /// Shards' view of who holds which slot is in storage's leases.
    pub fn lease_owner(&self, slot: u16) -> Option<u16> {
        self.durable.storage.lease(slot).map(|(owner, _, _)| owner)
    }
}

/// What observation `o` at device `d` gives away that a server must never hand out, judged as
/// `authz` judges a history (direct chats by their ids, groups by storage's membership).
fn breach(d: DeviceId, o: &Observation, durable: &DurableState) -> Option<String> {
    let outside = |conv: ConvId, user: UserId, seq: Seq| {
        if conv.is_group() {
            !durable.storage.member_at(conv, seq, user)
        } else {
            conv.direct_peer(user).is_none()
        }
    };
    match o {
        Observation::Acked { id, .. } if id.device != d => Some(format!(
            "{d} was acked {id}, a message under {}'s name",
            id.device
        )),
        Observation::Acked { id, conv, .. }
        | Observation::Displayed { id, conv, .. }
        | Observation::Undecryptable { id, conv, .. }
        | Observation::Fetched { id, conv, .. }
            if !conv.is_group() && conv.direct_peer(id.device.user).is_none() =>
        {
            Some(format!(
                "{id} reached {d} in {conv}, which {} is not in",
                id.device.user
            ))
        }
        // A group's own displays are `group`'s business (a member shows the change that added
        // it, before which it was not one); what an attack fetched is judged here.
        Observation::Displayed { id, conv, seq, .. }
        | Observation::Undecryptable { id, conv, seq }
            if !conv.is_group() && outside(*conv, d.user, *seq) =>
        {
            Some(format!(
                "{id} (seq {seq} of {conv}) reached {d}, an outsider"
            ))
        }
        Observation::Fetched { id, conv, seq } if outside(*conv, d.user, *seq) => Some(format!(
            "{id} (seq {seq} of {conv}) reached {d}, an outsider"
        )),
        Observation::Pulled { conv, last } if outside(*conv, d.user, *last) => Some(format!(
            "{d} was told {conv} reaches seq {last}, not being a member"
        )),
        Observation::Receipt { receipt }
            if !receipt.conv.is_group() && outside(receipt.conv, receipt.reader.user, 0) =>
        {
            Some(format!(
                "{d} was shown a receipt in {} from {}, an outsider",
                receipt.conv, receipt.reader
            ))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The digests stand in for the machines in a state's hash: a machine changed behind their
    // back must show up as stale, or merged states would go unnoticed.
    #[test]
    fn a_machine_changed_without_its_digest_is_caught() {
        let topo = keyed(&Deployment {
            users: 2,
            gateways: 1,
            shards: 1,
            devices_per_user: 1,
            ..Deployment::default()
        });
        let mut w = World::new(&topo, Budget::default(), false);
        assert!(w.digests_fresh(), "a new world's digests are fresh");
        let phone = Host::Device(DeviceId::primary(UserId(0)));
        w.input(phone, Input::Timeout);
        assert!(w.digests_fresh(), "input keeps them fresh");
        let before = w.digests.hosts.clone();
        let d = w
            .devices
            .get_mut(&DeviceId::primary(UserId(1)))
            .expect("the phone is there");
        Arc::make_mut(d).handle(0, Input::Timeout, &mut Vec::new());
        assert_eq!(before, w.digests.hosts);
        assert!(!w.digests_fresh(), "a phone changed behind the digests");
    }
}
