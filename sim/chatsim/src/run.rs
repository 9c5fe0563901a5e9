//! One seed, start to finish: draw the plan, run it on an engine in a fresh thread, judge the
//! history, and summarise. Everything a report or a CI gate needs comes out as a [`RunReport`].

use crate::engine::RawRun;
use crate::plan::make_plan;
use crate::scenario::Scenario;
use chatsim_judge::checkers::{check_all_timed, Bounds};
use chatsim_judge::{Event, History, Verdict};
use chatsim_system::bugs::Bugs;
use chatsim_system::knobs::Knobs;
use chatsim_system::probe::Probe;
use chatsim_system::Observation;
pub use chatsim_world::record::Keep;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;
use thiserror::Error;

/// Which engine ran.
pub const ENGINE_MADSIM: &str = "madsim";

/// The simulators that can run a scenario. Both drive the same machines over the same plan and
/// are judged by the same checkers; their verdicts must agree.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    /// madsim: every host and every phone a node, the main engine (the fastest; the
    /// benchmark's, the shrinker's and the model-free tools' engine).
    #[default]
    Madsim,
    /// turmoil: real tokio per host, phones on a few cell hosts, turmoil's hold, crash and
    /// bounce for faults.
    Turmoil,
    /// `chatsim serve`'s own serving code (its host loop, WebSocket gateways and phones, its
    /// server links) on turmoil's sockets and clock, in turmoil's world and faults.
    Served,
}

impl Engine {
    /// The name reports and JSON use.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Madsim => ENGINE_MADSIM,
            Engine::Turmoil => chatsim_turmoil::ENGINE,
            Engine::Served => chatsim_turmoil::ENGINE_SERVED,
        }
    }
}

/// A run that produced no verdict.
#[derive(Debug, Error)]
pub enum RunError {
    /// The simulation itself panicked: a bug in the system or the driver, with the seed that
    /// shows it.
    #[error("the simulation panicked on seed {seed}: {message}")]
    Panicked {
        /// The seed.
        seed: u64,
        /// The panic message.
        message: String,
    },
    /// This binary was built without `--cfg madsim`.
    #[error("this chatsim was built without --cfg madsim; build it with the workspace's .cargo/config.toml")]
    NoEngine,
    /// An engine could not finish the run.
    #[error("the {engine} engine failed on seed {seed}: {message}")]
    Engine {
        /// Which engine.
        engine: &'static str,
        /// The seed.
        seed: u64,
        /// What it said.
        message: String,
    },
}

/// Counts that describe a run.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Stats {
    /// Messages users pressed send on.
    pub messages_sent: usize,
    /// Of those, how many got sent ✓.
    pub messages_acked: usize,
    /// (message, device) displays, duplicates excluded.
    pub messages_delivered: usize,
    /// Duplicate copies dropped by devices.
    pub duplicates_dropped: usize,
    /// Gaps devices detected.
    pub gaps_detected: usize,
    /// Faults injected (each start and end counts).
    pub faults: usize,
    /// Frames delivered between hosts.
    pub frames: u64,
    /// Of those, by what they were for (`device link`, `gateway-shard`, `shard-storage`,
    /// `storage-replica`, `session`, `heartbeats`, `receipts`, `presence`, `push`, `engine
    /// acks`).
    pub frames_by_kind: BTreeMap<&'static str, u64>,
    /// Frames per (message, device) display: what delivering one message costs the system.
    pub frames_per_delivery: f64,
    /// Inbox entries left in storage at the end.
    pub inbox_left: usize,
    /// Inbox entries storage wrote over the run.
    pub inbox_written: u64,
    /// Texts whose bodies storage still kept at the end (the relay model deletes delivered
    /// ones).
    pub bodies_kept: usize,
    /// Simulated seconds.
    pub sim_seconds: f64,
    /// Wall-clock seconds of this run (not part of the trace).
    pub wall_seconds: f64,
    /// Wall-clock seconds the checkers took over the history, outside `wall_seconds`.
    pub judge_seconds: f64,
    /// Events in the history the checkers read.
    pub history_events: usize,
    /// Of `judge_seconds`, each checker's own share, by invariant name.
    pub judge_seconds_by_invariant: BTreeMap<&'static str, f64>,
    /// Of `judge_seconds`, deriving what several checkers share (first displays, first acks,
    /// memberships, links), built once before them.
    pub judge_seconds_shared: f64,
}

/// The outcome of one seed.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// Scenario name (file stem).
    pub scenario: String,
    /// Scenario file as given.
    pub scenario_path: String,
    /// The seed.
    pub seed: u64,
    /// Which engine ran it.
    pub engine: &'static str,
    /// Faults of the plan this engine could not express and skipped (said, never silent).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Bug-zoo switches that were on (empty for the real design).
    pub bugs: Vec<String>,
    /// The knobs a BUGGIFY draw shrank, as `name=value` (empty: the design's bounds).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub knobs: Vec<String>,
    /// Digest of everything observable in the run; same scenario and seed, same hash.
    pub trace_hash: String,
    /// One verdict per invariant.
    pub invariants: Vec<Verdict>,
    /// Counts.
    pub stats: Stats,
    /// What each transport cost (scenarios whose phones poll; empty on websocket only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub transports: Vec<crate::transport::TransportCost>,
    /// The command that replays this run.
    pub replay: String,
    /// The full history (not serialised into the summary JSON).
    #[serde(skip)]
    pub history: History,
    /// Every delivered frame, for the sequence diagram (not serialised).
    #[serde(skip)]
    pub frame_log: Vec<crate::wire::FrameRecord>,
    /// Inbox depth samples, for the timeline (not serialised).
    #[serde(skip)]
    pub samples: Vec<(chatsim_system::proto::Millis, usize)>,
    /// How often each coverage probe was reached (absent: never). Not serialised: a run's
    /// JSON stays the verdict; `chatsim coverage` and swarms aggregate these.
    #[serde(skip)]
    pub probes: BTreeMap<Probe, u64>,
}

impl RunReport {
    /// Whether every invariant holds.
    pub fn passed(&self) -> bool {
        self.invariants.iter().all(|v| v.holds)
    }
}

/// The trace hash: the frame digest and the encoded history, hashed together.
pub fn trace_hash(raw: &RawRun) -> String {
    let mut h = Sha256::new();
    h.update(raw.frame_digest);
    h.update(postcard::to_allocvec(&raw.history).expect("histories are serialisable"));
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn stats(raw: &RawRun, wall_seconds: f64) -> Stats {
    let mut s = Stats {
        frames: raw.frames,
        frames_by_kind: crate::wire::FrameKind::ALL
            .iter()
            .zip(raw.frames_by_kind)
            .map(|(k, n)| (k.name(), n))
            .collect(),
        inbox_left: raw.inbox_left,
        inbox_written: raw.inbox_written,
        bodies_kept: raw.bodies_kept,
        sim_seconds: raw.sim_ms as f64 / 1000.0,
        wall_seconds,
        history_events: raw.history.records.len(),
        ..Stats::default()
    };
    let mut delivered = BTreeSet::new();
    for r in &raw.history.records {
        let (device, obs) = match &r.event {
            Event::Device { device, obs } => (device, obs),
            Event::Fault(_) => {
                s.faults += 1;
                continue;
            }
            Event::Healed => continue,
        };
        match obs {
            Observation::Sent { .. } => s.messages_sent += 1,
            Observation::Acked { .. } => s.messages_acked += 1,
            Observation::Displayed { id, .. } => {
                delivered.insert((*device, *id));
            }
            Observation::DuplicateDropped { .. } => s.duplicates_dropped += 1,
            Observation::GapDetected { .. } => s.gaps_detected += 1,
            _ => {}
        }
    }
    s.messages_delivered = delivered.len();
    s.frames_per_delivery = s.frames as f64 / s.messages_delivered.max(1) as f64;
    s
}

/// The command that replays `seed` of the scenario at `path` on `engine`.
pub fn replay_command(engine: Engine, path: &str, seed: u64, bugs: &Bugs, buggify: bool) -> String {
    let mut flags: String = bugs.iter().map(|b| format!(" --bug {b}")).collect();
    if buggify {
        // Only when the command line turned it on: a file that buggifies does it again.
        flags.push_str(" --buggify");
    }
    if engine != Engine::Madsim {
        flags.push_str(&format!(" --engine {}", engine.name()));
    }
    format!("cargo run --release -p chatsim -- run {path} --seed {seed}{flags}")
}

/// Run `f` on a fresh thread named `name` (every seed gets one: std's hash keys are per
/// thread, and madsim's determinism was seen to hold per fresh thread); a panic becomes
/// [`RunError::Panicked`] naming `seed`.
pub(crate) fn on_fresh_thread<T: Send + 'static>(
    name: String,
    seed: u64,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, RunError> {
    std::thread::Builder::new()
        .name(name)
        .spawn(f)
        .expect("the OS can spawn a thread")
        .join()
        .map_err(|e| RunError::Panicked {
            seed,
            message: e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "non-string panic".into()),
        })
}

/// The checkers' bounds a scenario sets, under the run's knobs. No loss and liveness never
/// widen: a knob must keep the design within them (a scenario whose flood cannot converge
/// under them does not buggify). The median ✓ does: a conversation has one append in flight
/// at a time, so a slower sync queues a busy conversation's sends behind it, and a smaller
/// outbox window or conversation queue makes sends wait their turn by design; the median's
/// promise is then only the liveness bound.
pub(crate) fn bounds(s: &Scenario, knobs: &Knobs) -> Bounds {
    let design = Knobs::default();
    let queued = knobs.outbox_in_flight_max < design.outbox_in_flight_max
        || knobs.conv_queue_sends_max < design.conv_queue_sends_max
        || knobs.storage_sync_ms > design.storage_sync_ms;
    let ack_p50_ms = if queued {
        s.run.ack_p50_ms.max(s.run.liveness_ms)
    } else {
        s.run.ack_p50_ms
    };
    Bounds {
        liveness_ms: s.run.liveness_ms,
        ack_p50_ms,
        fetch_extra_ms: fetch_extra_ms(s),
        fetch_max: knobs.gap_fetch_seqs_max,
        inbox_page: knobs.inbox_page_entries,
    }
}

/// The extra latency a scenario's slow links add to a fetch's path (phone, gateway, shard,
/// storage and back): each leg's slowest extra, both ways.
fn fetch_extra_ms(s: &Scenario) -> u64 {
    use crate::scenario::Role::{Device, Gateway, Shard, Storage};
    let extra = |from, to| {
        s.network
            .links
            .iter()
            .filter(|l| l.from == from && l.to == to)
            .map(|l| l.extra_latency_ms.hi)
            .max()
            .unwrap_or(0)
    };
    [(Device, Gateway), (Gateway, Shard), (Shard, Storage)]
        .into_iter()
        .map(|(a, b)| extra(a, b) + extra(b, a))
        .sum()
}

/// Run one seed on a fresh thread on the main engine (madsim) and judge it.
pub fn run_seed(scenario: &Scenario, seed: u64, bugs: &Bugs) -> Result<RunReport, RunError> {
    run_seed_on(Engine::Madsim, scenario, seed, bugs)
}

/// Run one seed on a fresh thread on `engine` and judge it, keeping the frame log a report
/// draws its sequence diagram from.
pub fn run_seed_on(
    engine: Engine,
    scenario: &Scenario,
    seed: u64,
    bugs: &Bugs,
) -> Result<RunReport, RunError> {
    run_seed_keeping(engine, scenario, seed, bugs, Keep::REPORT)
}

/// As [`run_seed_on`], keeping only what `keep` asks for besides the verdict's needs
/// ([`Keep::VERDICT`] for a run no report is written of).
pub fn run_seed_keeping(
    engine: Engine,
    scenario: &Scenario,
    seed: u64,
    bugs: &Bugs,
    keep: Keep,
) -> Result<RunReport, RunError> {
    run_plan_keeping(
        engine,
        scenario,
        seed,
        make_plan(scenario, seed),
        bugs,
        keep,
    )
}

/// As [`run_seed_keeping`] with a plan the caller drew (and perhaps changed: a regression
/// test pins the knob a seed's failure needed, so a change to how knobs are drawn cannot
/// quietly take the case away).
pub fn run_plan_keeping(
    engine: Engine,
    scenario: &Scenario,
    seed: u64,
    plan: crate::plan::Plan,
    bugs: &Bugs,
    keep: Keep,
) -> Result<RunReport, RunError> {
    let knobs = plan.knobs;
    let s = scenario.clone();
    let engine_bugs = bugs.clone();
    let started = Instant::now();
    let raw = on_fresh_thread(format!("seed-{seed}"), seed, move || match engine {
        Engine::Madsim => engine_run(&s, seed, plan, engine_bugs, keep),
        Engine::Turmoil | Engine::Served => {
            let carrier = match engine {
                Engine::Served => chatsim_turmoil::Carrier::Served,
                _ => chatsim_turmoil::Carrier::Engine,
            };
            chatsim_turmoil::run_carried(carrier, &s, seed, plan, engine_bugs, keep).map_err(|e| {
                RunError::Engine {
                    engine: engine.name(),
                    seed,
                    message: e.to_string(),
                }
            })
        }
    })??;
    let wall = started.elapsed().as_secs_f64();
    let bounds = bounds(scenario, &knobs);
    let path = scenario.path.display().to_string();
    let mut stats = stats(&raw, wall);
    let mut invariants = Vec::new();
    let timed = check_all_timed(&raw.history, bounds);
    stats.judge_seconds_shared = timed.shared.as_secs_f64();
    stats.judge_seconds = stats.judge_seconds_shared;
    for (verdict, took) in timed.checks {
        let took = took.as_secs_f64();
        stats.judge_seconds += took;
        stats.judge_seconds_by_invariant.insert(verdict.name, took);
        invariants.push(verdict);
    }
    let transports = if scenario.topology.transport == chatsim_system::Transport::Websocket {
        Vec::new()
    } else {
        crate::transport::costs(
            &raw.history,
            &raw.frame_log,
            scenario.topology.transport,
            raw.history.end,
        )
    };
    Ok(RunReport {
        transports,
        scenario: scenario.name(),
        replay: replay_command(engine, &path, seed, bugs, scenario.buggify_forced),
        bugs: bugs.iter().map(|b| b.to_string()).collect(),
        knobs: knobs.changed(),
        scenario_path: path,
        seed,
        engine: engine.name(),
        skipped: raw.skipped.clone(),
        trace_hash: trace_hash(&raw),
        invariants,
        stats,
        history: raw.history,
        frame_log: raw.frame_log,
        samples: raw.samples,
        probes: raw.probes,
    })
}

#[cfg(madsim)]
fn engine_run(
    s: &Scenario,
    seed: u64,
    plan: crate::plan::Plan,
    bugs: Bugs,
    keep: Keep,
) -> Result<RawRun, RunError> {
    Ok(crate::engine::madsim::run_keeping(
        s, seed, plan, bugs, keep,
    ))
}

#[cfg(not(madsim))]
fn engine_run(
    _: &Scenario,
    _: u64,
    _: crate::plan::Plan,
    _: Bugs,
    _: Keep,
) -> Result<RawRun, RunError> {
    Err(RunError::NoEngine)
}
