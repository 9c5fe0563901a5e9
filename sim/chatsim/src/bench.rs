//! `chatsim bench`: how fast the simulator is against the floor its engine sets, measured side
//! by side in one process, so what is reported are ratios, not lone times on a shared machine.
//!
//! Three timed phases on one scenario and seed, after an untimed run of the full system with
//! faults off that records every delivered frame's route, size and send time: the floor (bare
//! nodes at the same addresses replaying exactly those frames over one connection per route,
//! with the engine's pacing and no chat logic), the full system with faults off again, and
//! with the scenario's faults on. Each phase runs on a
//! fresh thread, as every seed does, and all three on one engine: madsim (nodes) or turmoil
//! (hosts, the phones on cells), each measured against its own floor. The full phases keep
//! what a swarm's seed keeps (no frame log), so the figures are what a seed costs.

use crate::engine::RawRun;
use crate::plan::{device_fault, make_plan, Plan, WorldAction};
use crate::run::{bounds, on_fresh_thread, stats, Engine, RunError, ENGINE_MADSIM};
use crate::scenario::Scenario;
use chatsim_judge::check_all;
use chatsim_system::bugs::Bugs;
use chatsim_system::proto::Millis;
use chatsim_world::record::{FloorPlan, Keep};
use serde::Serialize;
use std::time::Instant;

/// One phase's figures.
#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    /// `floor`, `full` or `full+faults`.
    pub name: &'static str,
    /// Frames delivered.
    pub frames: u64,
    /// Wall-clock seconds.
    pub wall_seconds: f64,
    /// Frames delivered per wall second.
    pub frames_per_sec: f64,
    /// Distinct (device, message) displays (0 for the floor, which has no messages).
    pub messages_delivered: usize,
    /// Displays per wall second.
    pub messages_per_sec: f64,
    /// Simulated seconds.
    pub sim_seconds: f64,
    /// Simulated seconds per wall second.
    pub sim_seconds_per_wall_second: f64,
    /// Whether every invariant held (for the floor, which has none: whether it replayed
    /// every frame of the full run; for the full system, also whether it moved exactly the
    /// frames of the untimed run the floor replays).
    pub invariants_hold: bool,
    /// Events in the history the checkers judged (0 for the floor).
    pub history_records: usize,
    /// Frames by what they were for (empty for the floor, whose frames are filler).
    pub frames_by_kind: std::collections::BTreeMap<&'static str, u64>,
    /// Frames per (message, device) display (0 for the floor).
    pub frames_per_delivery: f64,
    /// Wall seconds every checker took over that history together (not part of
    /// `wall_seconds`): compare it with `history_records` across worlds of different sizes
    /// to see the checkers stay linear.
    pub judge_seconds: f64,
}

/// What `chatsim bench` prints.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Scenario name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// The engine.
    pub engine: &'static str,
    /// Frames per wall second of the floor.
    pub floor_frames_per_sec: f64,
    /// Frames per wall second of the full system, faults off.
    pub full_frames_per_sec: f64,
    /// full / floor, frames per wall second: of the median rounds when there are several.
    pub ratio: f64,
    /// Rounds of floor then full (faults off) timed one after the other; each phase shown is
    /// the round of median wall time. On a shared machine one short floor phase varies by a
    /// third from run to run (bench-quick, 2026-12-07: 520,000 to 777,000 frames a second for
    /// one binary), so a single round's ratio says little on its own.
    pub rounds: u32,
    /// Each round's full / floor, in the order run.
    pub round_ratios: Vec<f64>,
    /// Messages delivered per wall second, full system, faults off.
    pub messages_per_sec: f64,
    /// Simulated seconds per wall second, full system, faults off.
    pub sim_seconds_per_wall_second: f64,
    /// The process's peak resident set over all phases, in bytes (0 where the OS does not
    /// say): the full run's, plus the frame trace the floor replays.
    pub peak_rss_bytes: u64,
    /// Every phase in full.
    pub phases: Vec<Phase>,
}

/// The plan without its faults: every world fault and every device-level fault dropped, the
/// users' own actions (and so the workload) exactly as with them.
fn calm(mut plan: Plan) -> Plan {
    plan.world
        .retain(|(_, a)| !matches!(a, WorldAction::Fault(_)));
    for (d, acts) in plan.device.iter_mut() {
        acts.retain(|(_, a)| device_fault(*d, a).is_none());
    }
    plan
}

fn phase(name: &'static str, s: &Scenario, raw: &RawRun, wall: f64) -> Phase {
    let st = stats(raw, wall);
    let judging = Instant::now();
    let invariants_hold = check_all(
        &raw.history,
        bounds(s, &chatsim_system::knobs::Knobs::default()),
    )
    .iter()
    .all(|v| v.holds);
    let judge_seconds = judging.elapsed().as_secs_f64();
    Phase {
        name,
        frames: st.frames,
        wall_seconds: wall,
        frames_per_sec: per(st.frames as f64, wall),
        messages_delivered: st.messages_delivered,
        messages_per_sec: per(st.messages_delivered as f64, wall),
        sim_seconds: st.sim_seconds,
        sim_seconds_per_wall_second: per(st.sim_seconds, wall),
        invariants_hold,
        history_records: raw.history.records.len(),
        judge_seconds,
        frames_by_kind: st.frames_by_kind,
        frames_per_delivery: st.frames_per_delivery,
    }
}

fn per(x: f64, wall: f64) -> f64 {
    if wall > 0.0 {
        x / wall
    } else {
        0.0
    }
}

/// The process's peak resident set (Linux's `VmHWM`), in bytes; 0 where unknown.
pub fn peak_rss_bytes() -> u64 {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return 0;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A run's outcome, or the engine's reason it could not finish.
type Ran<T> = Result<T, String>;

/// One engine's three entry points the benchmark times.
struct Phases {
    engine: &'static str,
    traced: fn(&Scenario, u64, Plan) -> Ran<RawRun>,
    /// Frames received and simulated ms until the last.
    floor: fn(&Scenario, u64, FloorPlan) -> Ran<(u64, Millis)>,
    run: fn(&Scenario, u64, Plan) -> Ran<RawRun>,
}

#[cfg(madsim)]
fn madsim_phases() -> Result<Phases, RunError> {
    use crate::engine::madsim;
    Ok(Phases {
        engine: ENGINE_MADSIM,
        traced: |s, seed, plan| {
            Ok(madsim::run_keeping(
                s,
                seed,
                plan,
                Bugs::none(),
                Keep::BENCH,
            ))
        },
        floor: |s, seed, plan| Ok(madsim::floor(s, seed, plan)),
        run: |s, seed, plan| {
            Ok(madsim::run_keeping(
                s,
                seed,
                plan,
                Bugs::none(),
                Keep::VERDICT,
            ))
        },
    })
}

impl Phases {
    /// How a run of `seed` that the engine could not finish is reported.
    fn failed(&self, seed: u64) -> impl Fn(String) -> RunError + Copy {
        let engine = self.engine;
        move |message| RunError::Engine {
            engine,
            seed,
            message,
        }
    }
}

/// Without the simulator there is nothing to measure.
#[cfg(not(madsim))]
fn madsim_phases() -> Result<Phases, RunError> {
    Err(RunError::NoEngine)
}

fn turmoil_phases() -> Phases {
    use chatsim_turmoil as t;
    Phases {
        engine: t::ENGINE,
        traced: |s, seed, plan| {
            t::run_keeping(s, seed, plan, Bugs::none(), Keep::BENCH).map_err(|e| e.to_string())
        },
        floor: |s, seed, plan| t::floor(s, seed, plan).map_err(|e| e.to_string()),
        run: |s, seed, plan| {
            t::run_keeping(s, seed, plan, Bugs::none(), Keep::VERDICT).map_err(|e| e.to_string())
        },
    }
}

/// Run the three phases of `scenario` at `seed` on `engine`, each on a fresh thread, after an
/// untimed run that records the frames the floor replays.
pub fn bench(scenario: &Scenario, seed: u64, engine: Engine) -> Result<BenchReport, RunError> {
    bench_rounds(scenario, seed, engine, 1)
}

/// The middle of `phases` by wall time (the later of the two middles for an even count), with
/// its verdict the verdict of every round: a round that failed fails the phase.
fn median(mut phases: Vec<Phase>) -> Phase {
    let all_hold = phases.iter().all(|p| p.invariants_hold);
    phases.sort_by(|a, b| a.wall_seconds.total_cmp(&b.wall_seconds));
    let mut m = phases.swap_remove(phases.len() / 2);
    m.invariants_hold = all_hold;
    m
}

/// [`bench`] with the floor and the full system (faults off) timed `rounds` times, one after
/// the other, and each reported by its median round.
pub fn bench_rounds(
    scenario: &Scenario,
    seed: u64,
    engine: Engine,
    rounds: u32,
) -> Result<BenchReport, RunError> {
    let rounds = rounds.max(1);
    let p = match engine {
        Engine::Madsim => madsim_phases()?,
        Engine::Turmoil => turmoil_phases(),
        Engine::Served => served_phases(),
    };
    let thread = || format!("bench-{seed}");
    let failed = p.failed(seed);

    // An untimed first run records the frames the floor replays, and warms the process: a
    // phase on a heap nobody has grown yet pays the kernel for every page it touches first.
    // With the full run timed first, the phases after it ran up to 2.7 times faster on
    // bench-quick for that alone; now every timed phase runs on a warm heap.
    let (s, plan, traced) = (scenario.clone(), calm(make_plan(scenario, seed)), p.traced);
    let mut raw =
        on_fresh_thread(thread(), seed, move || traced(&s, seed, plan))?.map_err(failed)?;
    let traced_frames = raw.frames;
    // Sorted into routes before the clock starts: the floor is timed on moving frames only.
    let replay = FloorPlan::new(std::mem::take(&mut raw.frame_trace));
    drop(raw);

    let mut floors = Vec::new();
    let mut fulls = Vec::new();
    let mut round_ratios = Vec::new();
    for _ in 0..rounds {
        let floor_phase = time_floor(scenario, seed, &p, replay.clone(), traced_frames)?;
        let full = time_full(scenario, seed, &p, traced_frames)?;
        round_ratios.push(per(full.frames_per_sec, floor_phase.frames_per_sec));
        floors.push(floor_phase);
        fulls.push(full);
    }
    let (floor_phase, full) = (median(floors), median(fulls));

    let (s, plan, run) = (scenario.clone(), make_plan(scenario, seed), p.run);
    let started = Instant::now();
    let raw = on_fresh_thread(thread(), seed, move || run(&s, seed, plan))?.map_err(failed)?;
    let faults = phase(
        "full+faults",
        scenario,
        &raw,
        started.elapsed().as_secs_f64(),
    );
    drop(raw);

    Ok(BenchReport {
        scenario: scenario.name(),
        seed,
        engine: p.engine,
        floor_frames_per_sec: floor_phase.frames_per_sec,
        full_frames_per_sec: full.frames_per_sec,
        ratio: per(full.frames_per_sec, floor_phase.frames_per_sec),
        rounds,
        round_ratios,
        messages_per_sec: full.messages_per_sec,
        sim_seconds_per_wall_second: full.sim_seconds_per_wall_second,
        peak_rss_bytes: peak_rss_bytes(),
        phases: vec![floor_phase, full, faults],
    })
}

/// One timed run of the floor over `replay`.
fn time_floor(
    scenario: &Scenario,
    seed: u64,
    p: &Phases,
    replay: FloorPlan,
    traced_frames: u64,
) -> Result<Phase, RunError> {
    let failed = p.failed(seed);
    let (s, floor) = (scenario.clone(), p.floor);
    let started = Instant::now();
    let (frames, sim_ms) = on_fresh_thread(format!("bench-{seed}"), seed, move || {
        floor(&s, seed, replay)
    })?
    .map_err(failed)?;
    let wall = started.elapsed().as_secs_f64();
    Ok(Phase {
        name: "floor",
        frames,
        wall_seconds: wall,
        frames_per_sec: per(frames as f64, wall),
        messages_delivered: 0,
        messages_per_sec: 0.0,
        sim_seconds: sim_ms as f64 / 1000.0,
        sim_seconds_per_wall_second: per(sim_ms as f64 / 1000.0, wall),
        // The floor has no invariants; what it must do is replay every frame.
        invariants_hold: frames == traced_frames,
        history_records: 0,
        judge_seconds: 0.0,
        frames_by_kind: Default::default(),
        frames_per_delivery: 0.0,
    })
}

/// One timed run of the full system with the scenario's faults off.
fn time_full(
    scenario: &Scenario,
    seed: u64,
    p: &Phases,
    traced_frames: u64,
) -> Result<Phase, RunError> {
    let failed = p.failed(seed);
    let (s, plan, run) = (scenario.clone(), calm(make_plan(scenario, seed)), p.run);
    let started = Instant::now();
    let raw = on_fresh_thread(format!("bench-{seed}"), seed, move || run(&s, seed, plan))?
        .map_err(failed)?;
    let mut full = phase("full", scenario, &raw, started.elapsed().as_secs_f64());
    // The same seed and plan as the untimed run: anything but the same frames is a determinism
    // bug, and the floor would have replayed another run's.
    full.invariants_hold &= full.frames == traced_frames;
    Ok(full)
}

/// The human-readable table.
pub fn summary(r: &BenchReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "chatsim bench: {} seed {}, engine {}",
        r.scenario, r.seed, r.engine
    );
    let _ = writeln!(
        s,
        "  {:<12} {:>10} {:>9} {:>12} {:>11} {:>12} {:>10} {:>9} {:>9}",
        "phase",
        "frames",
        "wall s",
        "frames/s",
        "messages",
        "messages/s",
        "sim s/s",
        "events",
        "judge s"
    );
    for p in &r.phases {
        let _ = writeln!(
            s,
            "  {:<12} {:>10} {:>9.2} {:>12.0} {:>11} {:>12.0} {:>10.1} {:>9} {:>9.3}{}",
            p.name,
            p.frames,
            p.wall_seconds,
            p.frames_per_sec,
            p.messages_delivered,
            p.messages_per_sec,
            p.sim_seconds_per_wall_second,
            p.history_records,
            p.judge_seconds,
            if p.invariants_hold { "" } else { "  (FAILED)" }
        );
    }
    let _ = writeln!(
        s,
        "  full / floor, frames per second: {:.2}   peak RSS: {:.0} MiB",
        r.ratio,
        r.peak_rss_bytes as f64 / (1024.0 * 1024.0)
    );
    if r.rounds > 1 {
        let lo = r.round_ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = r.round_ratios.iter().copied().fold(0.0, f64::max);
        let _ = writeln!(
            s,
            "  {} rounds of floor then full, the median round of each shown; each round's ratio \
             from {lo:.2} to {hi:.2}",
            r.rounds
        );
    }
    if let Some(full) = r.phases.iter().find(|p| p.name == "full") {
        let total = full.frames.max(1) as f64;
        let mut kinds: Vec<(&&str, &u64)> = full.frames_by_kind.iter().collect();
        kinds.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        let parts: Vec<String> = kinds
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(k, n)| format!("{k} {:.0}%", **n as f64 * 100.0 / total))
            .collect();
        let _ = writeln!(
            s,
            "  full: {:.1} frames per delivered message; {}",
            full.frames_per_delivery,
            parts.join(", ")
        );
    }
    s
}

/// The serving code on turmoil, against turmoil's floor: what `chatsim serve`'s own code
/// (WebSocket, its host loop) costs per frame beside the engine's plain links.
fn served_phases() -> Phases {
    use chatsim_turmoil as t;
    Phases {
        engine: t::ENGINE_SERVED,
        traced: |s, seed, plan| {
            t::run_carried(t::Carrier::Served, s, seed, plan, Bugs::none(), Keep::BENCH)
                .map_err(|e| e.to_string())
        },
        floor: |s, seed, plan| t::floor(s, seed, plan).map_err(|e| e.to_string()),
        run: |s, seed, plan| {
            t::run_carried(
                t::Carrier::Served,
                s,
                seed,
                plan,
                Bugs::none(),
                Keep::VERDICT,
            )
            .map_err(|e| e.to_string())
        },
    }
}
