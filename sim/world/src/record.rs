//! The run recorder every delivered frame and device observation goes through, whatever
//! carries the frames, and the [`RawRun`] an engine hands back, judged the same way for every
//! engine. Also the frame trace the benchmark's floor replays ([`FloorPlan`]).

use crate::deploy::Durable;
use crate::plan::Plan;
use crate::wire::{describe, Frame, FrameRecord};
use chatsim_judge::confidential::Screen;
use chatsim_judge::history::View;
use chatsim_judge::{Event, History, Record};
use chatsim_system::probe::Probe;
use chatsim_system::proto::{DeviceId, Host, Millis};
use chatsim_system::{Action, Deployment, Observation};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Frames kept in the run's frame log (for sequence diagrams); later ones are only counted.
pub const FRAME_LOG_MAX: usize = 500_000;
/// How often engines sample storage's inbox depth, in simulated ms.
pub const SAMPLE_MS: Millis = 250;

/// The simulated time (ms) of the latest frame a run in this process delivered, for a
/// progress display on a long single run. Written by runs, read only by the display: it
/// shapes no run (and with several runs at once it is only some run's time).
pub static PROGRESS_MS: AtomicU64 = AtomicU64::new(0);

/// What an engine hands back from one run.
#[derive(Debug)]
pub struct RawRun {
    /// Everything devices observed and every fault injected.
    /// Everything devices observed and every fault, as it happened.
    pub history: History,
    /// Frames delivered between hosts.
    /// Frames delivered so far.
    pub frames: u64,
    /// Of those, how many of each kind ([`crate::wire::FrameKind::ALL`] order).
    pub frames_by_kind: [u64; crate::wire::FrameKind::ALL.len()],
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
    /// (time, inbox entries in durable storage), sampled every [`SAMPLE_MS`].
    pub samples: Vec<(Millis, usize)>,
    /// Every delivered frame's route, size and send time, when the caller asked for them
    /// (the benchmark replays them on bare nodes); empty otherwise.
    pub frame_trace: Vec<FrameTrace>,
    /// Faults the plan asked for that this engine cannot express, each said once, in plan
    /// order (empty when the engine ran the whole plan).
    pub skipped: Vec<String>,
    /// How often each coverage probe was reached (probes never reached are absent).
    pub probes: BTreeMap<Probe, u64>,
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

/// The frames the benchmark's floor replays, sorted into routes. Cloning shares the frames.
#[derive(Clone)]
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
    /// Digest of every delivered frame (time, receiver, bytes): the trace hash's source.
    digest: Mutex<Sha256>,
    frames: AtomicU64,
    /// Frames per [`crate::wire::FrameKind`], in its `ALL` order.
    kinds: [AtomicU64; crate::wire::FrameKind::ALL.len()],
    /// Kept only when asked ([`Keep::frame_log`]).
    frame_log: Option<Mutex<Vec<FrameRecord>>>,
    /// Scans each frame a server receives for the plan's plaintexts, keeping only hits.
    screen: Mutex<Screen>,
    samples: Mutex<Vec<(Millis, usize)>>,
    /// Every delivered frame's route, size and send time, when the benchmark asks.
    trace: Option<Mutex<Vec<FrameTrace>>>,
    /// How often each coverage probe was reached.
    probes: Mutex<BTreeMap<Probe, u64>>,
}

/// The plan's screen actions, in time order (by device within one millisecond, as the plan
/// map holds them): the judges' truth of who looked at what.
fn views(plan: &Plan) -> Vec<(Millis, DeviceId, View)> {
    let mut views: Vec<(Millis, DeviceId, View)> = plan
        .device
        .iter()
        .flat_map(|(d, acts)| {
            acts.iter().filter_map(move |(t, a)| {
                let v = match a {
                    Action::OpenChat { conv } => View::Open(*conv),
                    Action::CloseChat { conv } => View::Close(*conv),
                    Action::Background => View::Background,
                    Action::Foreground => View::Foreground,
                    Action::GoOffline => View::Offline,
                    Action::GoOnline => View::Online,
                    _ => return None,
                };
                Some((*t, *d, v))
            })
        })
        .collect();
    views.sort_by_key(|(t, _, _)| *t);
    views
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
                views: views(plan),
                ..History::with_devices(topo.users, topo.devices_per_user)
            }),
            digest: Mutex::new(Sha256::new()),
            frames: AtomicU64::new(0),
            kinds: std::array::from_fn(|_| AtomicU64::new(0)),
            frame_log: keep.frame_log.then(|| Mutex::new(Vec::new())),
            screen: Mutex::new(Screen::new(texts)),
            samples: Mutex::new(Vec::new()),
            trace: keep.frame_trace.then(|| Mutex::new(Vec::new())),
            probes: Mutex::new(BTreeMap::new()),
        }
    }

    /// Record a world event (a fault, the heal).
    pub fn record(&self, t: Millis, event: Event) {
        self.history
            .lock()
            .expect("no thread ever panics holding it")
            .push(t, event);
    }

    /// The storage coordinator finished a rebuild and serves from `t` on.
    pub fn rebuilt(&self, t: Millis) {
        self.history
            .lock()
            .expect("no thread ever panics holding it")
            .rebuilt
            .push(t);
    }

    /// The history's records from index `from` on: a live client shows them as they come.
    pub fn records_from(&self, from: usize) -> Vec<Record> {
        let h = self.history.lock().expect("never poisoned");
        h.records
            .get(from..)
            .map(<[Record]>::to_vec)
            .unwrap_or_default()
    }

    /// Record what a device observed.
    pub fn observe(&self, t: Millis, device: DeviceId, obs: Observation) {
        self.history
            .lock()
            .expect("never poisoned")
            .observe(t, device, obs);
    }

    /// Count a coverage probe a machine reached (outside the history and the digest: a
    /// probe changes no trace).
    pub fn probe(&self, probe: Probe) {
        *self
            .probes
            .lock()
            .expect("never poisoned")
            .entry(probe)
            .or_default() += 1;
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
        let kind = crate::wire::FrameKind::of(frame.from, at, &frame.wire);
        self.kinds[kind as usize].fetch_add(1, Ordering::Relaxed);
        PROGRESS_MS.store(now, Ordering::Relaxed);
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
                    bytes: raw.len() as u32,
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
            let state = durable.lock();
            let d = &state.storage;
            history.inbox_left = d.inbox_list();
            (d.inbox_entries(), d.inbox_written(), d.bodies_kept())
        };
        RawRun {
            history,
            frames: self.frames.load(Ordering::Relaxed),
            frames_by_kind: std::array::from_fn(|i| self.kinds[i].load(Ordering::Relaxed)),
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
            probes: std::mem::take(&mut *self.probes.lock().expect("never poisoned")),
        }
    }
}
