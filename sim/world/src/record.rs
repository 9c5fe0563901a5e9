//! What every engine shares about one run, whatever carries its frames: the deployment a
//! scenario and seed describe, the durable state that survives a crash (kept outside the
//! simulated hosts, so a kill loses exactly what was never synced), the machines a (re)started
//! server host begins with, and the recorder every delivered frame and device observation goes
//! through. An engine owns only its transport, its clock and its fault primitives; what it
//! hands back is a [`RawRun`], judged the same way for every engine.

use crate::plan::{derive_seed, Plan};
use crate::scenario::Scenario;
use crate::wire::{describe, Frame, FrameRecord};
use chatsim_judge::confidential::Screen;
use chatsim_judge::{Event, History};
use chatsim_system::bugs::Bugs;
use chatsim_system::gateway::Gateway;
use chatsim_system::proto::{DeviceId, Host, Millis, UserId};
use chatsim_system::push::Push;
use chatsim_system::replica::{Replica, ReplicaLog};
use chatsim_system::session::{Session, SessionTable};
use chatsim_system::shard::Shard;
use chatsim_system::storage::{Storage, StorageState};
use chatsim_system::{Action, Deployment, Effect, KeyDirectory, Machine, Observation};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Frames kept in the run's frame log (for sequence diagrams); later ones are only counted.
pub const FRAME_LOG_MAX: usize = 500_000;
/// How often engines sample storage's inbox depth, in simulated ms.
pub const SAMPLE_MS: Millis = 250;

/// What an engine hands back from one run.
#[derive(Debug)]
pub struct RawRun {
    /// Everything devices observed and every fault injected.
    pub history: History,
    /// Frames delivered between hosts.
    pub frames: u64,
    /// Digest of every delivered frame (time, receiver, bytes), in delivery order.
    pub frame_digest: [u8; 32],
    /// Simulated time at the end.
    pub sim_ms: Millis,
    /// Inbox entries left in durable storage at the end.
    pub inbox_left: usize,
    /// Inbox entries durable storage wrote over the run.
    pub inbox_written: u64,
    /// Texts whose bodies storage still kept at the end (the relay model deletes delivered
    /// ones).
    pub bodies_kept: usize,
    /// Every delivered frame (up to a bound), for sequence diagrams.
    pub frame_log: Vec<FrameRecord>,
    /// (time, inbox entries in durable storage), sampled periodically.
    pub samples: Vec<(Millis, usize)>,
    /// Every delivered frame's route, size and send time, when the caller asked for them
    /// (the benchmark replays them on bare nodes); empty otherwise.
    pub frame_trace: Vec<FrameTrace>,
    /// Faults the plan asked for that this engine cannot express, each said once, in plan
    /// order (empty when the engine ran the whole plan).
    pub skipped: Vec<String>,
}

/// One delivered frame as the benchmark's floor replays it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameTrace {
    /// Sender.
    pub from: Host,
    /// Receiver.
    pub to: Host,
    /// Bytes on the wire, length prefix included.
    pub bytes: u32,
    /// Simulated send time.
    pub sent_ms: Millis,
}

/// One route's frames, (send time, bytes), in send order; shared, not copied, by its sender.
pub type Frames = Arc<[(Millis, u32)]>;

/// The frames the benchmark's floor replays, sorted into routes.
pub struct FloorPlan {
    /// Per sender: per receiver, the frames to send, (send time, bytes), in send order.
    pub routes: BTreeMap<Host, Vec<(Host, Frames)>>,
    /// Every host that sends or receives a frame.
    pub hosts: BTreeSet<Host>,
    /// Frames in all.
    pub total: u64,
    /// The last send time.
    pub last: Millis,
}

impl FloorPlan {
    /// Sort a full run's delivered frames into routes.
    pub fn new(trace: Vec<FrameTrace>) -> FloorPlan {
        let mut by_route: BTreeMap<(Host, Host), Vec<(Millis, u32)>> = BTreeMap::new();
        let mut hosts = BTreeSet::new();
        let total = trace.len() as u64;
        let last = trace.iter().map(|f| f.sent_ms).max().unwrap_or(0);
        for f in trace {
            hosts.insert(f.from);
            hosts.insert(f.to);
            by_route
                .entry((f.from, f.to))
                .or_default()
                .push((f.sent_ms, f.bytes));
        }
        let mut routes: BTreeMap<Host, Vec<(Host, Frames)>> = BTreeMap::new();
        for ((from, to), mut frames) in by_route {
            frames.sort_by_key(|(t, _)| *t);
            routes.entry(from).or_default().push((to, frames.into()));
        }
        FloorPlan {
            routes,
            hosts,
            total,
            last,
        }
    }
}

/// The seed of one device's generator (and so of its keys). Index 0 keeps the salt
/// single-device runs always had.
pub fn device_seed(seed: u64, d: DeviceId) -> u64 {
    derive_seed(
        seed,
        0x6465_7600 + u64::from(d.user.0) + (u64::from(d.index) << 40),
    )
}

/// The deployment a scenario describes for one seed, its key directory included.
pub fn deployment(scenario: &Scenario, seed: u64, plan: &Plan, bugs: Bugs) -> Deployment {
    let t = &scenario.topology;
    let mut topo = Deployment {
        users: t.users,
        gateways: t.gateways,
        shards: t.shards,
        devices_per_user: t.devices_per_user,
        fanout_on_read_over: t.fanout_on_read_over,
        replicas: t.replicas,
        storage_model: t.storage_model,
        clock_skew_ms: t.clock_skew_ms,
        push: scenario.push.spec(),
        bugs,
        keys: Default::default(),
        late_devices: plan.late_devices(),
    };
    topo.keys = KeyDirectory::new(
        (0..topo.users)
            .flat_map(|u| topo.devices_of(UserId(u)))
            .map(|d| (d, chatsim_system::e2e::keypair(device_seed(seed, d)).public))
            .collect(),
    );
    topo
}

/// State that survives a crash: what storage, its replicas and the session service made
/// durable.
pub struct Durable {
    /// Storage's durable state (with replicas: the coordinator's view, for reports only).
    pub storage: Mutex<StorageState>,
    /// Each replica's synced operations.
    pub replica_logs: Mutex<BTreeMap<u16, ReplicaLog>>,
    /// How many times the storage coordinator has started (its boot number).
    pub storage_boots: AtomicU64,
    /// The session table as last persisted.
    pub session: Mutex<SessionTable>,
}

impl Durable {
    /// Nothing durable yet.
    pub fn new(topo: &Deployment) -> Durable {
        Durable {
            storage: Mutex::new(StorageState::new(topo.storage_model)),
            replica_logs: Mutex::new(BTreeMap::new()),
            storage_boots: AtomicU64::new(0),
            session: Mutex::new(SessionTable::new()),
        }
    }

    /// The machine a server host starts (or restarts) with: fresh, but for what it made
    /// durable before.
    pub fn machine(&self, host: Host, topo: &Deployment, seed: u64) -> Box<dyn Machine> {
        let topo = topo.clone();
        match host {
            Host::Gateway(i) => Box::new(Gateway::new(i, topo)),
            Host::Session => Box::new(Session::new(
                topo,
                self.session.lock().expect("never poisoned").clone(),
            )),
            Host::Shard(i) => Box::new(Shard::new(i, topo)),
            Host::Push => Box::new(Push::new(topo, derive_seed(seed, 0x7075_7368))),
            Host::Storage(_) if topo.replicas > 0 => {
                let boot = self.storage_boots.fetch_add(1, Ordering::Relaxed);
                Box::new(Storage::replicated(&topo, boot))
            }
            Host::Storage(_) => Box::new(Storage::with_bugs(
                self.storage.lock().expect("never poisoned").clone(),
                &topo.bugs,
            )),
            Host::Replica(i) => Box::new(Replica::new(
                self.replica_logs
                    .lock()
                    .expect("never poisoned")
                    .get(&i)
                    .cloned()
                    .unwrap_or_default(),
            )),
            Host::Device(_) => unreachable!("devices are not server machines"),
        }
    }

    /// Apply a server effect that makes something durable; hand back any other effect for the
    /// engine to carry.
    pub fn persist(&self, host: Host, effect: Effect) -> Option<Effect> {
        match effect {
            Effect::PersistSession(change) => {
                self.session.lock().expect("never poisoned").apply(&change);
            }
            Effect::Persist(ops) => {
                let mut d = self.storage.lock().expect("never poisoned");
                ops.iter().for_each(|op| d.apply(op));
            }
            Effect::Rebuilt(view) => *self.storage.lock().expect("never poisoned") = *view,
            Effect::PersistOps(ops) => {
                let Host::Replica(i) = host else {
                    unreachable!("only replicas persist operations")
                };
                self.replica_logs
                    .lock()
                    .expect("never poisoned")
                    .entry(i)
                    .or_default()
                    .apply(&ops);
            }
            other => return Some(other),
        }
        None
    }

    /// Storage's inbox entries now (the report's timeline).
    pub fn inbox_entries(&self) -> usize {
        self.storage.lock().expect("never poisoned").inbox_entries()
    }
}

/// What a run keeps besides what its verdict needs (the history, the frame digest, the
/// screen, the samples). The frame log labels every frame for a report's sequence diagram, a
/// formatted string per frame and a real share of a long run's time; runs judged only for
/// their verdict (a swarm's seeds, the shrinker's tries, the benchmark) skip it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Keep {
    /// The frame log ([`RawRun::frame_log`]), for a report.
    pub frame_log: bool,
    /// Every frame's route, size and send time ([`RawRun::frame_trace`]), for the
    /// benchmark's floor.
    pub frame_trace: bool,
}

impl Keep {
    /// What a run that writes a report needs: the frame log.
    pub const REPORT: Keep = Keep {
        frame_log: true,
        frame_trace: false,
    };
    /// Only what the verdict needs.
    pub const VERDICT: Keep = Keep {
        frame_log: false,
        frame_trace: false,
    };
    /// The benchmark's full phase: the trace its floor replays, no frame log.
    pub const BENCH: Keep = Keep {
        frame_log: false,
        frame_trace: true,
    };
}

/// Everything observable about a run as it happens: the history, every delivered frame's
/// digest, the frame log for diagrams, the confidentiality screen and the inbox samples.
pub struct Recorder {
    history: Mutex<History>,
    digest: Mutex<Sha256>,
    frames: AtomicU64,
    /// Kept only when asked ([`Keep::frame_log`]).
    frame_log: Option<Mutex<Vec<FrameRecord>>>,
    /// Scans each frame a server receives for the plan's plaintexts, keeping only hits.
    screen: Mutex<Screen>,
    samples: Mutex<Vec<(Millis, usize)>>,
    /// Every delivered frame's route, size and send time, when the benchmark asks.
    trace: Option<Mutex<Vec<FrameTrace>>>,
}

impl Recorder {
    /// A recorder for `plan` on `topo`, keeping what `keep` asks for.
    pub fn new(topo: &Deployment, plan: &Plan, keep: Keep) -> Recorder {
        let texts = plan.device.values().flatten().filter_map(|(_, a)| match a {
            Action::SendDirect { body, .. } | Action::SendGroup { body, .. } => Some(body.clone()),
            _ => None,
        });
        Recorder {
            history: Mutex::new(History {
                late_devices: topo.late_devices.iter().copied().collect(),
                ..History::with_devices(topo.users, topo.devices_per_user)
            }),
            digest: Mutex::new(Sha256::new()),
            frames: AtomicU64::new(0),
            frame_log: keep.frame_log.then(|| Mutex::new(Vec::new())),
            screen: Mutex::new(Screen::new(texts)),
            samples: Mutex::new(Vec::new()),
            trace: keep.frame_trace.then(|| Mutex::new(Vec::new())),
        }
    }

    /// Record a world event (a fault, the heal).
    pub fn record(&self, t: Millis, event: Event) {
        self.history
            .lock()
            .expect("no thread ever panics holding it")
            .push(t, event);
    }

    /// Record what a device observed.
    pub fn observe(&self, t: Millis, device: DeviceId, obs: Observation) {
        self.history
            .lock()
            .expect("never poisoned")
            .observe(t, device, obs);
    }

    /// Record an inbox-depth sample.
    pub fn sample(&self, t: Millis, inbox: usize) {
        self.samples
            .lock()
            .expect("never poisoned")
            .push((t, inbox));
    }

    /// Account for `frame` (raw bytes `raw`) delivered to `at` at `now`.
    pub fn delivered(&self, now: Millis, at: Host, raw: &[u8], frame: &Frame) {
        if !matches!(at, Host::Device(_)) {
            self.screen
                .lock()
                .expect("never poisoned")
                .see(now, at, raw);
        }
        self.frames.fetch_add(1, Ordering::Relaxed);
        if let Some(trace) = &self.trace {
            trace.lock().expect("never poisoned").push(FrameTrace {
                from: frame.from,
                to: at,
                bytes: raw.len() as u32,
                sent_ms: frame.sent_ms,
            });
        }

        if let Some(log) = &self.frame_log {
            let mut log = log.lock().expect("never poisoned");
            if log.len() < FRAME_LOG_MAX {
                let (label, msg, key) = describe(&frame.wire);
                log.push(FrameRecord {
                    from: frame.from,
                    to: at,
                    sent_ms: frame.sent_ms,
                    recv_ms: now,
                    label,
                    msg,
                    key,
                });
            }
        }
        let mut d = self
            .digest
            .lock()
            .expect("no thread ever panics holding it");
        d.update(now.to_le_bytes());
        let mut host = [0u8; 16];
        let host = postcard::to_slice(&at, &mut host).expect("a Host encodes in under 16 bytes");
        d.update(&*host);
        d.update(raw);
    }

    /// Close the run at `end` (the plan's end) and `now` (the engine's clock), with what
    /// storage holds durably then.
    pub fn finish(
        &self,
        end: Millis,
        now: Millis,
        durable: &Durable,
        skipped: Vec<String>,
    ) -> RawRun {
        let mut history = std::mem::take(&mut *self.history.lock().expect("never poisoned"));
        // Hosts that share a simulation step (turmoil steps them one after another) record in
        // host order, not time order; checkers read records in time order. A stable sort keeps
        // the order of records made at the same millisecond, and leaves an already ordered
        // history (madsim's) as it was.
        history.records.sort_by_key(|r| r.t);
        history.end = end;
        std::mem::replace(
            &mut *self.screen.lock().expect("never poisoned"),
            Screen::new([]),
        )
        .finish(&mut history);
        let digest = self
            .digest
            .lock()
            .expect("never poisoned")
            .clone()
            .finalize();
        let (inbox_left, inbox_written, bodies_kept) = {
            let d = durable.storage.lock().expect("never poisoned");
            history.inbox_left = d.inbox_list();
            (d.inbox_entries(), d.inbox_written(), d.bodies_kept())
        };
        RawRun {
            history,
            frames: self.frames.load(Ordering::Relaxed),
            frame_digest: digest.into(),
            sim_ms: now,
            inbox_left,
            inbox_written,
            bodies_kept,
            frame_log: self
                .frame_log
                .as_ref()
                .map(|l| std::mem::take(&mut *l.lock().expect("never poisoned")))
                .unwrap_or_default(),
            samples: std::mem::take(&mut *self.samples.lock().expect("never poisoned")),
            frame_trace: self
                .trace
                .as_ref()
                .map(|t| std::mem::take(&mut *t.lock().expect("never poisoned")))
                .unwrap_or_default(),
            skipped,
        }
    }
}
