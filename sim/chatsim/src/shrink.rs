//! Shrinking: turn a failing seed into the smallest explicit scenario that still breaks the
//! same invariant. The seed's plan becomes a list of explicit events; delta debugging
//! (ddmin) removes chunks of them (a fault and its end go together) while the invariant still
//! breaks; then the topology is trimmed to the users still involved and the heal moved as
//! early as the remaining faults allow. The result is written as a scenario file with an
//! explicit `[[event]]` schedule, so it replays without the seed's draws, and told as a short
//! story.

use crate::plan::{make_plan, plan_events};
use crate::run::{run_seed_keeping, Engine, Keep, RunError, RunReport};
use crate::scenario::{action_name, EventAction, Role, Scenario, ScheduledEvent, WorkloadSpec};
use chatsim_judge::{Event, Fault};
use chatsim_system::bugs::Bugs;
use chatsim_system::Observation;
use rayon::prelude::*;
use std::collections::BTreeSet;
use std::fmt::Write;

/// Simulation runs one shrink may spend.
pub const SHRINK_RUNS_MAX: usize = 2_000;
/// Lines in a story.
pub const STORY_LINES_MAX: usize = 30;

/// What shrinking produced.
#[derive(Clone, Debug)]
pub struct Shrunk {
    /// The minimal scenario (path unset).
    pub scenario: Scenario,
    /// Its text, ready to write.
    pub text: String,
    /// The invariant that still breaks.
    pub invariant: String,
    /// The story of the violation.
    pub story: Vec<String>,
    /// Events before and after.
    pub events_before: usize,
    /// Events in the shrunk schedule.
    pub events_after: usize,
    /// Simulation runs spent.
    pub runs: usize,
    /// The final run.
    pub report: RunReport,
}

/// Catching seeds a hunt shrinks before it keeps the shortest story. Removing one event
/// shifts every later random draw, so a catch can be 1-minimal at 30 events on one seed and
/// at 3 on the next (order-by-timestamp on reconnect-storm, measured: 32, 3 and 4 events on
/// seeds 1 to 3).
pub const HUNT_CATCHES: usize = 3;

/// Runs a hunt's shrink may spend removing nothing before it gives that catch up (it still
/// counts as caught, with its story unshrunk). Some seeds' failures are races that almost any
/// removal reshuffles away: measured, shard-failover seed 11 with `unfenced-failover` and
/// session-race seed 11 with `session-register-last-wins` spent the whole 2,000-run budget
/// for little, while another catch of the same bug shrank to 22 and 2 events in 441 and 37
/// runs. ddmin's first six rounds (halves to 64ths) take 126 runs.
pub const HUNT_BARREN_RUNS: usize = 100;

/// A story this short (in events) is short enough for `chatsim hunt`: it stops there rather
/// than shrink more catches in search of a shorter one.
pub const HUNT_SHORT_ENOUGH: usize = 3;

/// Runs each of a hunt's shrinks may spend in all. A hunt keeps the shortest of several
/// catches, so one that shrinks slowly need not be followed to the end: measured, the kept
/// stories took 37 to 441 runs, while a catch that would not shrink took the whole 2,000.
/// `chatsim shrink` of one seed keeps [`SHRINK_RUNS_MAX`].
pub const HUNT_SHRINK_RUNS: usize = 500;

/// How far a shrink goes: its run budget, and the runs after which it stops if it has
/// removed nothing.
#[derive(Clone, Copy, Debug)]
struct Limits {
    runs: usize,
    barren: Option<usize>,
}

/// A lone shrink's: the whole budget, never given up.
const UNBOUNDED: Limits = Limits {
    runs: SHRINK_RUNS_MAX,
    barren: None,
};

const HUNT_LIMITS: Limits = Limits {
    runs: HUNT_SHRINK_RUNS,
    barren: Some(HUNT_BARREN_RUNS),
};

/// What a hunt found: the seed whose shrunk story is shortest, and every seed that caught it.
#[derive(Clone, Debug)]
pub struct Hunted {
    /// The seed kept.
    pub seed: u64,
    /// Its shrunk run.
    pub shrunk: Shrunk,
    /// Every catching seed that was shrunk, in order.
    pub caught: Vec<u64>,
    /// Wall time from the hunt's start until its first catch was judged: how long finding
    /// the bug took, before any shrinking.
    pub first_catch_seconds: f64,
    /// Wall time of the whole hunt, shrinks included.
    pub seconds: f64,
}

/// Run `scenario` with `bugs` on seeds 1..=`seeds` until `invariant` breaks on
/// [`HUNT_CATCHES`] of them (or the seeds run out), shrink each catch, and keep the shortest;
/// stop early at a story of `enough` events or fewer. `None` when no seed caught it. Seeds are
/// tried, and each shrink's removals, as many at once as the current rayon pool has threads;
/// what is found is the same at any width (seeds are judged in order, later ones in a window
/// only ever wasted). `on_catch` hears of each catching seed, with the wall seconds since the
/// start, before it is shrunk: a catch is news while its shrink still runs.
pub fn hunt(
    scenario: &Scenario,
    bugs: &Bugs,
    invariant: &str,
    seeds: u64,
    enough: usize,
    on_catch: &mut dyn FnMut(u64, f64),
) -> Result<Option<Hunted>, ShrinkError> {
    let started = std::time::Instant::now();
    let mut first_catch_seconds = 0.0;
    let width = u64::try_from(rayon::current_num_threads().max(1)).unwrap_or(1);
    let mut best: Option<Hunted> = None;
    let mut caught = Vec::new();
    let mut from = 1;
    'windows: while from <= seeds {
        let window: Vec<u64> = (from..=seeds.min(from + width - 1)).collect();
        from += width;
        let runs: Vec<Result<RunReport, RunError>> = window
            .par_iter()
            .map(|&seed| run_seed_keeping(Engine::Madsim, scenario, seed, bugs, Keep::VERDICT))
            .collect();
        for (seed, r) in window.into_iter().zip(runs) {
            if !r?
                .invariants
                .iter()
                .any(|v| v.name == invariant && !v.holds)
            {
                continue;
            }
            let at = started.elapsed().as_secs_f64();
            if caught.is_empty() {
                first_catch_seconds = at;
            }
            on_catch(seed, at);
            caught.push(seed);
            let shrunk = shrink_within(scenario, seed, bugs, Some(invariant), HUNT_LIMITS)?;
            if best
                .as_ref()
                .is_none_or(|b| shrunk.events_after < b.shrunk.events_after)
            {
                best = Some(Hunted {
                    seed,
                    shrunk,
                    caught: Vec::new(),
                    first_catch_seconds,
                    seconds: 0.0,
                });
            }
            let short = best
                .as_ref()
                .is_some_and(|b| b.shrunk.events_after <= enough);
            if caught.len() >= HUNT_CATCHES || short {
                break 'windows;
            }
        }
    }
    Ok(best.map(|mut b| {
        b.caught = caught;
        b.seconds = started.elapsed().as_secs_f64();
        b
    }))
}

/// Why shrinking could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShrinkError {
    /// The seed passes: nothing to shrink.
    #[error("seed {seed} of {scenario} breaks no invariant{with}: nothing to shrink")]
    Passes {
        /// Scenario name.
        scenario: String,
        /// The seed.
        seed: u64,
        /// " with bugs …" or empty.
        with: String,
    },
    /// The named invariant did not break on this seed.
    #[error("seed {seed} does not break `{invariant}` (it breaks: {broken})")]
    NotBroken {
        /// The seed.
        seed: u64,
        /// The invariant asked for.
        invariant: String,
        /// What did break.
        broken: String,
    },
    /// The simulation failed.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// A unit ddmin removes: one event, or a fault's start together with its end.
type Unit = Vec<ScheduledEvent>;

fn pair_key(e: &ScheduledEvent) -> Option<(bool, String)> {
    let who = || {
        format!(
            "{:?}{:?}{:?}{:?}{:?}{:?}{:?}",
            e.user, e.device, e.to, e.group, e.host, e.side_a, e.side_b
        )
    };
    match e.action {
        EventAction::Kill
        | EventAction::Clog
        | EventAction::Offline
        | EventAction::Silent
        | EventAction::Blackhole
        | EventAction::Spike
        | EventAction::DiskSlow
        | EventAction::DiskFull
        | EventAction::Open
        | EventAction::Background
        | EventAction::Partition
        | EventAction::PartitionOneway => Some((true, format!("{}{}", starts_of(e.action), who()))),
        EventAction::Restart
        | EventAction::Unclog
        | EventAction::Online
        | EventAction::Unsilent
        | EventAction::BlackholeEnd
        | EventAction::SpikeEnd
        | EventAction::DiskSlowEnd
        | EventAction::DiskFullEnd
        | EventAction::Close
        | EventAction::Foreground
        | EventAction::HealPartition
        | EventAction::HealPartitionOneway => {
            Some((false, format!("{}{}", starts_of(e.action), who())))
        }
        EventAction::Send
        | EventAction::Drop
        | EventAction::CreateGroup
        | EventAction::AddMember
        | EventAction::RemoveMember
        | EventAction::Link
        | EventAction::Attack => None,
    }
}

fn starts_of(a: EventAction) -> &'static str {
    match a {
        EventAction::Kill | EventAction::Restart => "kill",
        EventAction::Clog | EventAction::Unclog => "clog",
        EventAction::Offline | EventAction::Online => "offline",
        EventAction::Silent | EventAction::Unsilent => "silent",
        EventAction::Blackhole | EventAction::BlackholeEnd => "blackhole",
        EventAction::Spike | EventAction::SpikeEnd => "spike",
        EventAction::DiskSlow | EventAction::DiskSlowEnd => "disk-slow",
        EventAction::DiskFull | EventAction::DiskFullEnd => "disk-full",
        EventAction::Partition | EventAction::HealPartition => "partition",
        EventAction::PartitionOneway | EventAction::HealPartitionOneway => "partition-oneway",
        EventAction::Open | EventAction::Close => "open",
        EventAction::Background | EventAction::Foreground => "background",
        EventAction::Send
        | EventAction::Drop
        | EventAction::CreateGroup
        | EventAction::AddMember
        | EventAction::RemoveMember
        | EventAction::Link
        | EventAction::Attack => "",
    }
}

/// Group events into units: each fault start with the next matching end.
fn units(events: Vec<ScheduledEvent>) -> Vec<Unit> {
    let mut out: Vec<Unit> = Vec::new();
    let mut open: Vec<(String, usize)> = Vec::new();
    for e in events {
        match pair_key(&e) {
            Some((true, k)) => {
                open.push((k, out.len()));
                out.push(vec![e]);
            }
            Some((false, k)) => match open.iter().position(|(o, _)| *o == k) {
                Some(i) => {
                    let (_, at) = open.remove(i);
                    out[at].push(e);
                }
                None => out.push(vec![e]),
            },
            None => out.push(vec![e]),
        }
    }
    out
}

fn flatten(units: &[Unit]) -> Vec<ScheduledEvent> {
    let mut v: Vec<ScheduledEvent> = units.iter().flatten().cloned().collect();
    v.sort_by_key(|e| e.at_ms);
    v
}

struct Trial<'a> {
    base: &'a Scenario,
    seed: u64,
    bugs: &'a Bugs,
    invariant: String,
    runs: usize,
    /// Runs this shrink may spend.
    budget: usize,
    /// Stop ddmin after this many runs if nothing was removed yet.
    give_up: Option<usize>,
}

impl<'a> Trial<'a> {
    fn new(base: &'a Scenario, seed: u64, bugs: &'a Bugs, invariant: &str, limits: Limits) -> Self {
        Trial {
            base,
            seed,
            bugs,
            invariant: invariant.to_string(),
            runs: 0,
            budget: limits.runs,
            give_up: limits.barren,
        }
    }

    fn variant(&self, events: Vec<ScheduledEvent>) -> Scenario {
        let mut s = self.base.clone();
        s.workload = WorkloadSpec::default();
        s.faults = Vec::new();
        s.schedule = events;
        s
    }

    /// Whether the variant still breaks the invariant (false once the run budget is spent).
    fn fails(&mut self, s: &Scenario) -> Option<RunReport> {
        if self.runs >= self.budget {
            return None;
        }
        self.runs += 1;
        self.breaks(s)
    }

    fn breaks(&self, s: &Scenario) -> Option<RunReport> {
        let r = run_seed_keeping(Engine::Madsim, s, self.seed, self.bugs, Keep::VERDICT).ok()?;
        r.invariants
            .iter()
            .any(|v| v.name == self.invariant && !v.holds)
            .then_some(r)
    }

    /// The first of `candidates`, in order, that still breaks the invariant, as
    /// [`Trial::fails`] on each in turn would find it, and with the runs counted as it would
    /// count them (up to and including that one, within the budget). Up to as many run at once
    /// as the current rayon pool has threads: the ones after the first that breaks were
    /// speculative and are not counted, so the outcome never depends on the pool's width.
    fn first_failing(&mut self, candidates: &[Scenario]) -> Option<(usize, RunReport)> {
        let width = rayon::current_num_threads().max(1);
        let budget = self.budget.saturating_sub(self.runs);
        let candidates = &candidates[..candidates.len().min(budget)];
        for (b, batch) in candidates.chunks(width).enumerate() {
            let broke: Vec<Option<RunReport>> = if batch.len() == 1 {
                vec![self.breaks(&batch[0])]
            } else {
                let me = &*self;
                batch.par_iter().map(|s| me.breaks(s)).collect()
            };
            match broke
                .into_iter()
                .enumerate()
                .find_map(|(i, r)| Some((i, r?)))
            {
                Some((i, r)) => {
                    self.runs += i + 1;
                    return Some((b * width + i, r));
                }
                None => self.runs += batch.len(),
            }
        }
        None
    }
}

/// Who a violation is about: the users of its message's conversation (its sender, and the
/// other member of a direct one), the user of the device that saw it, and its group. `None`
/// when it names neither a message nor a device (a load bound: everyone may matter).
fn concerned(report: &RunReport, invariant: &str) -> Option<(BTreeSet<u32>, Option<u32>)> {
    let v = report
        .invariants
        .iter()
        .find(|v| v.name == invariant)
        .and_then(|v| v.violations.first())?;
    if v.message.is_none() && v.device.is_none() {
        return None;
    }
    let (mut users, mut group) = (BTreeSet::new(), None);
    for rec in &report.history.records {
        let Event::Device { device, obs } = &rec.event else {
            continue;
        };
        if v.device.as_deref() == Some(device.to_string().as_str()) {
            users.insert(device.user.0);
        }
        if let Observation::Sent { id, conv, .. } = obs {
            if v.message.as_deref() == Some(id.to_string().as_str()) {
                users.insert(id.device.user.0);
                match conv.group_number() {
                    Some(g) => group = Some(g),
                    None => {
                        let (a, b) = conv.direct_members();
                        users.extend([a.0, b.0]);
                    }
                }
            }
        }
    }
    Some((users, group))
}

/// Before ddmin, one try at keeping only the units that concern the violation's users and
/// group, with every fault on a server or the network (the units that name no user). A
/// seed's hundreds of unrelated sends would otherwise cost ddmin many runs to remove in
/// chunks, each of which may reshuffle the draws enough to lose the failure; when this one
/// run still fails, ddmin starts from tens of units instead. One run, and nothing changes
/// when it no longer fails. With the focused units, the run that showed they still fail.
fn focus(
    trial: &mut Trial<'_>,
    units: Vec<Unit>,
    report: &RunReport,
) -> (Vec<Unit>, Option<RunReport>) {
    let Some((users, group)) = concerned(report, &trial.invariant) else {
        return (units, None);
    };
    let relevant = |e: &ScheduledEvent| {
        let named: Vec<u32> = [e.user, e.to, e.member]
            .into_iter()
            .flatten()
            .chain(e.members.iter().copied())
            .collect();
        (named.is_empty() && e.group.is_none())
            || named.iter().any(|u| users.contains(u))
            || (e.group.is_some() && e.group == group)
    };
    let focused: Vec<Unit> = units
        .iter()
        .filter(|u| u.iter().any(relevant))
        .cloned()
        .collect();
    if focused.len() == units.len() || focused.is_empty() {
        return (units, None);
    }
    let s = trial.variant(flatten(&focused));
    match trial.fails(&s) {
        Some(r) => (focused, Some(r)),
        None => (units, None),
    }
}

/// ddmin over units: remove chunks while the invariant still breaks. A round's removals are
/// tried in order and the first that still breaks is taken, several at once when the rayon
/// pool has threads to spare (the choice is the same as one at a time). With the units kept,
/// the run of the last removal taken (`None` if none was): each taken removal was a run that
/// still failed, so the result needs no run of its own, which the budget may no longer allow.
fn ddmin(trial: &mut Trial<'_>, mut units: Vec<Unit>) -> (Vec<Unit>, Option<RunReport>) {
    let mut last = None;
    let mut n = 2usize;
    let start = units.len();
    while units.len() >= 2 {
        if units.len() == start && trial.give_up.is_some_and(|g| trial.runs >= g) {
            break;
        }
        let chunk = units.len().div_ceil(n);
        let rests: Vec<Vec<Unit>> = (0..n)
            .map(|i| (i * chunk, ((i + 1) * chunk).min(units.len())))
            .filter(|(lo, hi)| lo < hi)
            .map(|(lo, hi)| units[..lo].iter().chain(&units[hi..]).cloned().collect())
            .collect();
        let variants: Vec<Scenario> = rests.iter().map(|r| trial.variant(flatten(r))).collect();
        match trial.first_failing(&variants) {
            Some((i, r)) => {
                units = rests.into_iter().nth(i).expect("the index is of a rest");
                last = Some(r);
                n = (n - 1).max(2);
            }
            None => {
                if n >= units.len() {
                    break;
                }
                n = (n * 2).min(units.len());
            }
        }
    }
    (units, last)
}

/// Shrink `seed` of `scenario` with `bugs` until `invariant` (default: the first broken one)
/// breaks with as few events as ddmin finds.
pub fn shrink(
    scenario: &Scenario,
    seed: u64,
    bugs: &Bugs,
    invariant: Option<&str>,
) -> Result<Shrunk, ShrinkError> {
    shrink_within(scenario, seed, bugs, invariant, UNBOUNDED)
}

/// As [`shrink`], within `limits`.
fn shrink_within(
    scenario: &Scenario,
    seed: u64,
    bugs: &Bugs,
    invariant: Option<&str>,
    limits: Limits,
) -> Result<Shrunk, ShrinkError> {
    let original = run_seed_keeping(Engine::Madsim, scenario, seed, bugs, Keep::VERDICT)?;
    let broken: Vec<&str> = original
        .invariants
        .iter()
        .filter(|v| !v.holds)
        .map(|v| v.name)
        .collect();
    let invariant = match invariant {
        Some(i) if broken.contains(&i) => i.to_string(),
        Some(i) => {
            return Err(ShrinkError::NotBroken {
                seed,
                invariant: i.to_string(),
                broken: broken.join(", "),
            });
        }
        None => match broken.first() {
            Some(i) => i.to_string(),
            None => {
                let with = if bugs.is_empty() {
                    String::new()
                } else {
                    format!(" with bugs {}", original.bugs.join(" "))
                };
                return Err(ShrinkError::Passes {
                    scenario: scenario.name(),
                    seed,
                    with,
                });
            }
        },
    };
    let events = plan_events(&make_plan(scenario, seed));
    let events_before = events.len();
    let mut trial = Trial::new(scenario, seed, bugs, &invariant, limits);

    // The explicit schedule must still fail before anything is removed; if the conversion
    // itself changed the run, shrinking would chase a different failure.
    let mut best = trial.variant(events.clone());
    let mut report = trial.fails(&best).unwrap_or(original);
    let (kept, focused) = focus(&mut trial, units(events), &report);
    let (kept, reduced) = ddmin(&mut trial, kept);
    if let Some(r) = reduced.or(focused) {
        best = trial.variant(flatten(&kept));
        report = r;
    }

    // Fewer users: drop the ones no remaining event names (ids are kept, so ownership by hash
    // does not move).
    let involved = best
        .schedule
        .iter()
        .flat_map(|e| {
            [e.user, e.to, e.member]
                .into_iter()
                .chain(e.members.iter().copied().map(Some))
        })
        .flatten()
        .max();
    if let Some(max) = involved {
        let mut fewer = best.clone();
        fewer.topology.users = (max + 1).max(2);
        if fewer.topology.users < best.topology.users {
            if let Some(r) = trial.fails(&fewer) {
                best = fewer;
                report = r;
            }
        }
    }
    // A shorter run: heal right after the last remaining event.
    let last = best.schedule.iter().map(|e| e.at_ms).max().unwrap_or(0);
    if last < best.run.heal_at_ms {
        let mut sooner = best.clone();
        sooner.run.heal_at_ms = last + 1;
        if let Some(r) = trial.fails(&sooner) {
            best = sooner;
            report = r;
        }
    }

    let story = story(&report, &invariant);
    let events_after = best.schedule.len();
    let text = scenario_text(
        &best,
        scenario,
        seed,
        bugs,
        &invariant,
        &story,
        events_before,
    );
    Ok(Shrunk {
        scenario: best,
        text,
        invariant,
        story,
        events_before,
        events_after,
        runs: trial.runs,
        report,
    })
}

fn secs(t: u64) -> String {
    format!("{:.3}s", t as f64 / 1000.0)
}

/// The violation as a few lines: every fault, and what happened to the violating message.
pub fn story(r: &RunReport, invariant: &str) -> Vec<String> {
    let Some(v) = r
        .invariants
        .iter()
        .find(|v| v.name == invariant)
        .and_then(|v| v.violations.first())
    else {
        return vec![format!("{invariant} broke")];
    };
    let mut lines = Vec::new();
    // A group message shows on many devices: those lines become one summary where the first
    // of them stood, so the story stays about what happened, not who was in the group.
    let mut shown: Option<(usize, usize, String, String, String)> = None;
    for rec in &r.history.records {
        if let Event::Device {
            device,
            obs: Observation::Displayed { id, .. },
        } = &rec.event
        {
            if v.message.as_deref() == Some(id.to_string().as_str()) {
                match &mut shown {
                    Some((_, n, _, _, last)) => {
                        *n += 1;
                        *last = secs(rec.t);
                    }
                    None => {
                        let at = secs(rec.t);
                        shown = Some((lines.len(), 1, device.to_string(), at.clone(), at));
                        lines.push(String::new());
                    }
                }
                continue;
            }
        }
        let line = match &rec.event {
            Event::Fault(f) => Some(match f {
                Fault::Kill(h) => format!("{h} crashed at {}", secs(rec.t)),
                Fault::Restart(h) => format!("{h} restarted at {}", secs(rec.t)),
                f => format!("{f} at {}", secs(rec.t)),
            }),
            Event::Healed => Some(format!("every fault healed at {}", secs(rec.t))),
            Event::Device { device, obs } => {
                let mine = |id: &chatsim_system::proto::MsgId| {
                    v.message.as_deref() == Some(id.to_string().as_str())
                };
                match obs {
                    Observation::Sent { id, conv, .. } if mine(id) => Some(format!(
                        "{id} sent by {device} in {conv} at {}",
                        secs(rec.t)
                    )),
                    Observation::Acked { id, seq, .. } if mine(id) => Some(format!(
                        "{id} acked ✓ to {device} at {} as seq {seq}",
                        secs(rec.t)
                    )),

                    Observation::Disconnected { reason }
                        if v.device.as_deref() == Some(device.to_string().as_str()) =>
                    {
                        Some(format!(
                            "{device} disconnected ({reason:?}) at {}",
                            secs(rec.t)
                        ))
                    }
                    _ => None,
                }
            }
        };
        lines.extend(line);
    }
    if let Some((at, n, first, from, to)) = shown {
        let id = v.message.as_deref().unwrap_or_default();
        lines[at] = if n == 1 {
            format!("{id} shown on {first} at {from}")
        } else {
            format!("{id} shown on {n} devices from {from} to {to} ({first} first)")
        };
    }
    // With the note and the verdict line, at most STORY_LINES_MAX lines in all.
    if lines.len() > STORY_LINES_MAX - 1 {
        let cut = lines.len() - (STORY_LINES_MAX - 2);
        lines.drain(..cut);
        lines.insert(0, format!("({cut} earlier lines left out)"));
    }
    lines.push(format!("{invariant}: {}", v.detail));
    lines
}

fn quote(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Device => "device",
        Role::Gateway => "gateway",
        Role::Session => "session",
        Role::Shard => "shard",
        Role::Storage => "storage",
        Role::Replica => "replica",
        Role::Push => "push",
    }
}

fn scenario_text(
    s: &Scenario,
    from: &Scenario,
    seed: u64,
    bugs: &Bugs,
    invariant: &str,
    story: &[String],
    before: usize,
) -> String {
    let flags: String = bugs.iter().map(|b| format!(" --bug {b}")).collect();
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# Shrunk by `chatsim shrink {} --seed {seed}{flags}`:",
        from.path.display()
    );
    let _ = writeln!(
        t,
        "# {before} events became {}; `{invariant}` still breaks.",
        s.schedule.len()
    );
    let _ = writeln!(t, "#\n# The story:");
    for l in story {
        let _ = writeln!(t, "#   {l}");
    }
    let _ = writeln!(
        t,
        "#\n# Replay it: cargo run --release -p chatsim -- run THIS_FILE --seed {seed}{flags}"
    );
    let _ = writeln!(
        t,
        "# The schedule below is explicit; the seed still drives network latencies and jitter."
    );
    let _ = writeln!(
        t,
        "description = {}",
        quote(&format!(
            "shrunk from {} seed {seed}: {invariant}",
            from.name()
        ))
    );
    if s.buggify {
        // The knobs come from the seed, as in the failing run.
        let _ = writeln!(t, "buggify = true");
    }
    if let Some(why) = &s.buggify_never {
        let _ = writeln!(t, "buggify_never = {}", quote(why));
    }
    let tp = &s.topology;
    let _ = writeln!(
        t,
        "\n[topology]\nusers = {}\ngateways = {}\nshards = {}\ndevices_per_user = {}\nfanout_on_read_over = {}\nreplicas = {}",
        tp.users, tp.gateways, tp.shards, tp.devices_per_user, tp.fanout_on_read_over, tp.replicas
    );
    let model = match tp.storage_model {
        chatsim_system::StorageModel::History => "history",
        chatsim_system::StorageModel::Relay => "relay",
    };
    let _ = writeln!(t, "storage_model = \"{model}\"");
    if let Some(skew) = tp.clock_skew_ms {
        let _ = writeln!(t, "clock_skew_ms = {skew}");
    }
    let n = &s.network;
    let _ = writeln!(
        t,
        "\n[network]\nlatency_ms = [{}, {}]",
        n.latency_ms.lo, n.latency_ms.hi
    );
    let p = &s.push;
    let _ = writeln!(
        t,
        "\n[push]\ndelay_ms = [{}, {}]\nloss_percent = {}",
        p.delay_ms.lo, p.delay_ms.hi, p.loss_percent
    );
    for l in &n.links {
        let _ = writeln!(
            t,
            "\n[[network.link]]\nfrom = \"{}\"\nto = \"{}\"\nextra_latency_ms = [{}, {}]",
            role_name(l.from),
            role_name(l.to),
            l.extra_latency_ms.lo,
            l.extra_latency_ms.hi
        );
    }
    let r = &s.run;
    let _ = writeln!(
        t,
        "\n[run]\nheal_at_ms = {}\nsettle_ms = {}\nliveness_ms = {}\nack_p50_ms = {}",
        r.heal_at_ms, r.settle_ms, r.liveness_ms, r.ack_p50_ms
    );
    for e in &s.schedule {
        let _ = writeln!(
            t,
            "\n[[event]]\nat_ms = {}\naction = \"{}\"",
            e.at_ms,
            action_name(e.action)
        );
        if let Some(u) = e.user {
            let _ = writeln!(t, "user = {u}");
        }
        if let Some(d) = e.device {
            let _ = writeln!(t, "device = {d}");
        }
        if let Some(u) = e.to {
            let _ = writeln!(t, "to = {u}");
        }
        if let Some(g) = e.group {
            let _ = writeln!(t, "group = {g}");
        }
        if !e.members.is_empty() {
            let list: Vec<String> = e.members.iter().map(ToString::to_string).collect();
            let _ = writeln!(t, "members = [{}]", list.join(", "));
        }
        if let Some(u) = e.member {
            let _ = writeln!(t, "member = {u}");
        }
        if let Some(x) = &e.text {
            let _ = writeln!(t, "text = {}", quote(x));
        }
        if let Some(h) = &e.host {
            let _ = writeln!(t, "host = {}", quote(h));
        }
        if let Some(a) = &e.attack {
            let _ = writeln!(t, "attack = {}", quote(a));
        }
        let list = |v: &[String]| v.iter().map(|h| quote(h)).collect::<Vec<_>>().join(", ");
        if !e.side_a.is_empty() {
            let _ = writeln!(
                t,
                "side_a = [{}]\nside_b = [{}]",
                list(&e.side_a),
                list(&e.side_b)
            );
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::run_seed;
    use std::path::Path;

    fn scenario(name: &str) -> Scenario {
        Scenario::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../scenarios/{name}.toml")),
        )
        .expect("valid")
    }

    // A seed's plan written out as explicit events replays the very same run: the schedule is
    // a faithful stand-in for the seed's draws.
    #[test]
    fn a_plan_written_as_explicit_events_replays_the_same_trace() {
        let s = scenario("gateway-crash");
        let original = run_seed(&s, 4, &Bugs::none()).expect("runs");
        let none = Bugs::none();
        let trial = Trial::new(&s, 4, &none, "", UNBOUNDED);
        let explicit = trial.variant(plan_events(&make_plan(&s, 4)));
        let text = scenario_text(&explicit, &s, 4, &Bugs::none(), "none", &[], 0);
        let reloaded =
            Scenario::parse(Path::new("shrunk.toml"), &text).expect("the written file parses");
        let again = run_seed(&reloaded, 4, &Bugs::none()).expect("runs");
        assert_eq!(original.trace_hash, again.trace_hash);
    }

    // A shrunk file keeps what its scenario's file says of BUGGIFY: a scenario that must never
    // buggify stays one when its shrunk story is run with `--buggify`.
    #[test]
    fn a_shrunk_file_keeps_buggify_never() {
        let s = scenario("group-flood");
        let why = s
            .buggify_never
            .clone()
            .expect("group-flood must never buggify");
        let none = Bugs::none();
        let explicit =
            Trial::new(&s, 1, &none, "", UNBOUNDED).variant(plan_events(&make_plan(&s, 1)));
        let text = scenario_text(&explicit, &s, 1, &none, "none", &[], 0);
        let reloaded =
            Scenario::parse(Path::new("shrunk.toml"), &text).expect("the written file parses");
        assert_eq!(reloaded.buggify_never, Some(why));
        assert!(!reloaded.buggify);
    }

    // The focus keeps the units that name the violation's users (the sender and the reader of
    // the late message) or no user at all, drops the rest, and its one run still fails.
    #[test]
    fn the_focus_keeps_the_violations_users_and_every_server_fault() {
        let s = scenario("long-absence");
        let bugs: Bugs = [chatsim_system::bugs::Bug::DrainFirstPageOnly]
            .into_iter()
            .collect();
        let r = run_seed_keeping(Engine::Madsim, &s, 1, &bugs, Keep::VERDICT).expect("runs");
        let (users, group) = concerned(&r, "liveness").expect("a liveness breach names a message");
        assert_eq!(group, None);
        assert!(
            users.len() >= 2 && users.len() < s.topology.users as usize,
            "{users:?}"
        );
        let events = plan_events(&make_plan(&s, 1));
        let all = units(events);
        let mut trial = Trial::new(&s, 1, &bugs, "liveness", UNBOUNDED);
        let (kept, report) = focus(&mut trial, all.clone(), &r);
        assert_eq!(trial.runs, 1);
        assert!(report.is_some(), "the focused schedule still fails");
        assert!(
            kept.len() < all.len(),
            "{} of {} units kept",
            kept.len(),
            all.len()
        );
        for e in kept.iter().flatten() {
            let named: Vec<u32> = [e.user, e.to, e.member].into_iter().flatten().collect();
            assert!(
                named.is_empty() || named.iter().any(|u| users.contains(u)),
                "{e:?}"
            );
        }
    }

    // A shrink cut short by its budget keeps what it removed: every removal taken was a run
    // that still failed (before, the result was run once more, which a spent budget refused,
    // and the whole schedule came back).
    #[test]
    fn a_shrink_out_of_runs_keeps_what_it_removed() {
        let s = scenario("smoke");
        let bugs: Bugs = [chatsim_system::bugs::Bug::AckSeqOffByOne]
            .into_iter()
            .collect();
        let limits = Limits {
            runs: 4,
            barren: None,
        };
        let x = shrink_within(&s, 1, &bugs, Some("no_loss"), limits).expect("shrinks");
        assert_eq!(x.runs, 4);
        assert!(
            x.events_after < x.events_before,
            "{} of {}",
            x.events_after,
            x.events_before
        );
        let again = run_seed(&x.scenario, 1, &bugs).expect("runs");
        assert!(again
            .invariants
            .iter()
            .any(|v| v.name == "no_loss" && !v.holds));
    }

    // Faults shrink as units: a kill is never kept without its restart.
    #[test]
    fn a_fault_start_and_its_end_form_one_unit() {
        let s = scenario("shard-crash-after-persist");
        let events = plan_events(&make_plan(&s, 2));
        let us = units(events.clone());
        assert_eq!(us.iter().map(Vec::len).sum::<usize>(), events.len());
        for u in us.iter().filter(|u| u[0].action == EventAction::Kill) {
            assert_eq!(u.len(), 2, "{u:?}");
            assert_eq!(u[1].action, EventAction::Restart);
            assert_eq!(u[0].host, u[1].host);
        }
    }
}
