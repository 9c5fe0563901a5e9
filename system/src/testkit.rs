//! An in-memory engine for tests, in the style of quinn-proto's test harness: every component
//! in one struct, frames in a time-ordered queue with a fixed link latency, virtual time that
//! jumps to the next event. `step` runs one event, `run_until` drives to a time and refuses to
//! spin forever (a livelock fails the test instead of hanging it).

use crate::device::Device;
use crate::durable::DurableState;
use crate::gateway::Gateway;
use crate::proto::{ConnId, DeviceId, Host, Millis, Up, UserId};
use crate::push::Push;
use crate::replica::{Replica, ReplicaLog};
use crate::route::{route, Route};
use crate::session::Session;
use crate::shard::Shard;
use crate::storage::{Storage, StorageState};
use crate::{Action, Deployment, Effect, Input, Machine, Observation};
use std::collections::BTreeMap;

/// One-way latency of every link, in ms.
pub const LINK_LATENCY_MS: Millis = 1;
/// The push provider's seed: the harness draws nothing else from a run seed.
const PUSH_SEED: u64 = 1;
/// `run_until` gives up after this many events: far more than any test needs.
pub const STEPS_MAX: usize = 1_000_000;

/// Every component of a small deployment, driven in memory.
pub struct Cluster {
    /// Virtual now.
    pub now: Millis,
    /// The deployment every component was built from.
    topo: Deployment,
    /// Every gateway, by index.
    gateways: Vec<Gateway>,
    /// The session service.
    session: Session,
    /// Every chat shard, by index.
    shards: Vec<Shard>,
    /// The storage node (with replicas: their coordinator).
    storage: Storage,
    /// Every storage replica, by index.
    replicas: Vec<Replica>,
    /// The push provider.
    push: Push,
    /// What every server made durable: what a crash leaves.
    durable: DurableState,
    /// Every device.
    devices: BTreeMap<DeviceId, Device>,
    /// Each connected device's (gateway, connection).
    conns: BTreeMap<DeviceId, (u16, ConnId)>,
    /// Frames in flight, by (arrival time, sequence number): ties keep send order.
    queue: BTreeMap<(Millis, u64), (Host, Input)>,
    /// The last sequence number handed to the queue.
    next_event: u64,
    /// The last connection id handed out.
    next_conn: u64,
    /// Everything every device observed, in order.
    pub observations: Vec<(Millis, DeviceId, Observation)>,
    /// Every frame a device sent, whether a connection carried it or not: what a test
    /// counts to see a phone that asks more often than it needs to.
    pub ups: Vec<(Millis, DeviceId, Up)>,
    /// How many questions each session lookup a shard sent carried: what a test counts to
    /// see a shard ask once per member where once per fan-out step would do.
    pub lookups: Vec<usize>,
    /// How often each probe was reached.
    pub probes: BTreeMap<crate::probe::Probe, u64>,
    /// Server-to-server messages into these hosts are lost (a lossy link, not a crash).
    pub lossy: std::collections::BTreeSet<Host>,
    /// Frozen hosts (a long GC pause): their timers wait and what arrives for them is held.
    frozen: std::collections::BTreeSet<Host>,
    /// What arrived for (or from) a frozen host, in order, until it thaws.
    held: Vec<(Host, Input)>,
}

impl Cluster {
    /// A cluster with every device online and connecting at time 0.
    pub fn new(topo: Deployment) -> Cluster {
        let mut topo = topo;
        let seed_of = |d: DeviceId| u64::from(d.user.0) * 8 + u64::from(d.index) + 1;
        let all: Vec<DeviceId> = (0..topo.users)
            .flat_map(|u| topo.devices_of(UserId(u)))
            .collect();
        topo.keys = crate::KeyDirectory::new(
            all.iter()
                .map(|d| (*d, crate::e2e::device_public(topo.key_seed, *d)))
                .collect(),
        );
        let devices = all
            .into_iter()
            .map(|d| (d, Device::new(d, topo.clone(), seed_of(d), true)))
            .collect();
        let mut durable = DurableState::new(topo.storage_model);
        Cluster {
            now: 0,
            gateways: (0..topo.gateways)
                .map(|i| Gateway::new(i, topo.clone()))
                .collect(),
            session: durable.start_session(&topo),
            shards: (0..topo.shards)
                .map(|i| Shard::new(i, topo.clone()))
                .collect(),
            storage: durable.start_storage(&topo),
            replicas: (0..topo.replicas)
                .map(|i| durable.start_replica(i, &topo))
                .collect(),
            push: Push::new(topo.clone(), PUSH_SEED),
            durable,
            devices,
            conns: BTreeMap::new(),
            queue: BTreeMap::new(),
            next_event: 0,
            next_conn: 0,
            observations: Vec::new(),
            ups: Vec::new(),
            lookups: Vec::new(),
            probes: BTreeMap::new(),
            lossy: std::collections::BTreeSet::new(),
            frozen: std::collections::BTreeSet::new(),
            held: Vec::new(),
            topo,
        }
    }

    /// What a replica would keep if it crashed now.
    pub fn replica_log(&self, i: u16) -> ReplicaLog {
        self.durable.replica_log(i)
    }

    /// Whether storage is serving (a coordinator is not while it rebuilds its view).
    pub fn storage_serving(&self) -> bool {
        self.storage.serving()
    }

    /// What storage would keep if it crashed now (with replicas: the coordinator's view).
    pub fn durable(&self) -> &StorageState {
        &self.durable.storage
    }

    /// Mutable access to a device (for assertions on its state).
    pub fn device(&self, d: DeviceId) -> &Device {
        &self.devices[&d]
    }

    /// Shard `i` as it is now.
    pub fn shard(&self, i: u16) -> &Shard {
        &self.shards[usize::from(i)]
    }

    /// A gateway, by index (for assertions on its state).
    pub fn gateway(&self, g: u16) -> &Gateway {
        &self.gateways[usize::from(g)]
    }

    fn machine(&mut self, host: Host) -> Option<&mut dyn Machine> {
        Some(match host {
            Host::Gateway(i) => self.gateways.get_mut(usize::from(i))? as &mut dyn Machine,
            Host::Session => &mut self.session,
            Host::Shard(i) => self.shards.get_mut(usize::from(i))?,
            Host::Storage(_) => &mut self.storage,
            Host::Replica(i) => self.replicas.get_mut(usize::from(i))?,
            Host::Push => &mut self.push,
            Host::Device(d) => self.devices.get_mut(&d)?,
        })
    }

    fn enqueue(&mut self, to: Host, input: Input) {
        self.next_event += 1;
        self.queue
            .insert((self.now + LINK_LATENCY_MS, self.next_event), (to, input));
    }

    /// Freeze `host`: nothing it would do happens, and what travels to or from it waits (as a
    /// clogged host's frames do in the simulator).
    pub fn freeze(&mut self, host: Host) {
        self.frozen.insert(host);
    }

    /// Wake a frozen host: what was held for it arrives now, in order, and its timers run.
    pub fn thaw(&mut self, host: Host) {
        self.frozen.remove(&host);
        let touches = |h: &Host, input: &Input| {
            *h == host || matches!(input, Input::Rpc { from, .. } if *from == host)
        };
        let (mine, others): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(h, i)| touches(h, i));
        self.held = others;
        for (h, input) in mine {
            self.next_event += 1;
            self.queue.insert((self.now, self.next_event), (h, input));
        }
    }

    /// Hand `input` to `host` now and carry out its effects.
    pub fn input(&mut self, host: Host, input: Input) {
        let from_frozen = matches!(&input, Input::Rpc { from, .. } if self.frozen.contains(from));
        if self.frozen.contains(&host) || from_frozen {
            self.held.push((host, input));
            return;
        }
        let now = self.now;
        let mut out = Vec::new();
        let Some(m) = self.machine(host) else { return };
        m.handle(now, input, &mut out);
        for e in out {
            self.effect(host, e);
        }
    }

    /// The (gateway, connection) a device is connected through, if it is: where a test puts
    /// frames the device's own app would never send.
    pub fn conn_of(&self, d: DeviceId) -> Option<(u16, ConnId)> {
        self.conns.get(&d).copied()
    }

    /// A user action on a device, now.
    pub fn act(&mut self, d: DeviceId, action: Action) {
        self.input(Host::Device(d), Input::Action(action));
    }

    fn device_at(&self, gateway: u16, conn: ConnId) -> Option<DeviceId> {
        self.conns
            .iter()
            .find(|(_, c)| **c == (gateway, conn))
            .map(|(d, _)| *d)
    }

    /// Carry one effect, routed by the shared router, over the harness's queue.
    fn effect(&mut self, host: Host, e: Effect) {
        match route(host, e) {
            Route::Wake(d) => self.enqueue(Host::Device(d), Input::Pushed),
            Route::Peer { to, rpc } => {
                if let crate::proto::Rpc::Lookup { asks } = &rpc {
                    self.lookups.push(asks.len());
                }
                if !self.lossy.contains(&to) {
                    self.enqueue(to, Input::Rpc { from: host, rpc });
                }
            }
            Route::Down {
                gateway,
                conn,
                frame,
            } => {
                if let Some(d) = self.device_at(gateway, conn) {
                    self.enqueue(Host::Device(d), Input::Down(frame));
                }
            }
            Route::Close { gateway, conn } => {
                if let Some(d) = self.device_at(gateway, conn) {
                    self.conns.remove(&d);
                    self.enqueue(Host::Device(d), Input::Disconnected);
                }
            }
            Route::Connect { device, gateway } => {
                self.close_device_conn(device);
                self.next_conn += 1;
                let conn = ConnId(self.next_conn);
                self.conns.insert(device, (gateway, conn));
                self.enqueue(Host::Gateway(gateway), Input::Accepted { conn });
                self.enqueue(Host::Device(device), Input::Connected);
            }
            Route::Up { device, up } => {
                self.ups.push((self.now, device, up.clone()));
                if let Some(&(g, conn)) = self.conns.get(&device) {
                    self.enqueue(Host::Gateway(g), Input::FromConn { conn, up });
                }
            }
            Route::Disconnect { device } => self.close_device_conn(device),
            Route::Observe { device, obs } => self.observations.push((self.now, device, obs)),
            Route::Durable(write) => self.durable.apply(write),
            Route::Probe(p) => *self.probes.entry(p).or_default() += 1,
        }
    }

    fn close_device_conn(&mut self, d: DeviceId) {
        if let Some((g, conn)) = self.conns.remove(&d) {
            self.enqueue(Host::Gateway(g), Input::ConnClosed { conn });
        }
    }

    /// Crash `host` and restart it at once with only its durable state: queued inputs to it
    /// are lost, and a gateway's connections close.
    pub fn crash(&mut self, host: Host) {
        self.queue.retain(|_, (h, _)| *h != host);
        match host {
            Host::Gateway(g) => {
                self.gateways[usize::from(g)] = Gateway::new(g, self.topo.clone());
                let gone: Vec<DeviceId> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| c.0 == g)
                    .map(|(d, _)| *d)
                    .collect();
                for d in gone {
                    self.conns.remove(&d);
                    self.enqueue(Host::Device(d), Input::Disconnected);
                }
            }
            Host::Session => self.session = self.durable.start_session(&self.topo),
            Host::Shard(s) => self.shards[usize::from(s)] = Shard::new(s, self.topo.clone()),
            Host::Storage(_) => self.storage = self.durable.start_storage(&self.topo),
            Host::Replica(i) => {
                self.replicas[usize::from(i)] = self.durable.start_replica(i, &self.topo)
            }
            Host::Push => self.push = Push::new(self.topo.clone(), PUSH_SEED),
            Host::Device(_) => panic!("devices do not crash in this harness"),
        }
    }

    fn next_timer(&self) -> Option<(Millis, Host)> {
        let hosts = self
            .gateways
            .iter()
            .map(|g| (g.poll_timeout(), Host::Gateway(g.index())))
            .chain([
                (self.session.poll_timeout(), Host::Session),
                (self.storage.poll_timeout(), Host::Storage(0)),
                (self.push.poll_timeout(), Host::Push),
            ])
            .chain(
                self.replicas
                    .iter()
                    .zip(0..)
                    .map(|(r, i)| (r.poll_timeout(), Host::Replica(i))),
            )
            .chain(
                self.shards
                    .iter()
                    .map(|s| (s.poll_timeout(), Host::Shard(s.index()))),
            )
            .chain(
                self.devices
                    .iter()
                    .map(|(d, m)| (m.poll_timeout(), Host::Device(*d))),
            );
        hosts
            .filter(|(_, h)| !self.frozen.contains(h))
            .filter_map(|(t, h)| t.map(|t| (t, h)))
            .min()
    }

    /// Run the next event (a frame or a timer) no later than `until`; false when none is due.
    pub fn step(&mut self, until: Millis) -> bool {
        let frame = self.queue.first_key_value().map(|(k, _)| k.0);
        let timer = self.next_timer();
        match (frame, timer) {
            (Some(f), t) if f <= until && t.is_none_or(|(t, _)| f <= t) => {
                let ((at, _), (host, input)) = self.queue.pop_first().expect("just peeked");
                self.now = self.now.max(at);
                self.input(host, input);
            }
            (_, Some((t, host))) if t <= until => {
                self.now = self.now.max(t);
                self.input(host, Input::Timeout);
            }
            _ => return false,
        }
        true
    }

    /// Drive until virtual time `until`, then set the clock there.
    pub fn run_until(&mut self, until: Millis) {
        for _ in 0..STEPS_MAX {
            if !self.step(until) {
                self.now = self.now.max(until);
                return;
            }
        }
        panic!("no quiescence after {STEPS_MAX} events: livelock before t={until}");
    }

    /// Advance virtual time by `ms`.
    pub fn run_for(&mut self, ms: Millis) {
        self.run_until(self.now + ms);
    }

    /// The observations of one device matching `f`.
    pub fn seen<'a>(
        &'a self,
        d: DeviceId,
        f: impl Fn(&Observation) -> bool + 'a,
    ) -> impl Iterator<Item = &'a Observation> + 'a {
        self.observations
            .iter()
            .filter(move |(_, dd, o)| *dd == d && f(o))
            .map(|(_, _, o)| o)
    }
}
