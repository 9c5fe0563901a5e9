//! Swarm runs: many seeds of one scenario, in parallel across seeds (each seed is still one
//! deterministic run on its own fresh thread), each seed drawing its own fault mix from the
//! scenario's ranges. Aggregates per-invariant counts and probe coverage, names the first
//! failing seeds with the command that replays each, and writes JUnit XML for CI systems.

use crate::coverage::Coverage;
use crate::run::{run_seed_keeping, Engine, Keep, RunError, RunReport};
use crate::scenario::Scenario;
use chatsim_judge::checkers::CHECKS;
use chatsim_judge::History;
use chatsim_system::bugs::Bugs;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::str::FromStr;
use std::time::Instant;

/// Failing seeds listed in the text summary; the JSON lists all.
pub const FAILING_SEEDS_SHOWN_MAX: usize = 10;

/// An inclusive seed range, written `A..B` or `A..=B` (both inclusive: `1..20` is 20 seeds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeedRange {
    /// First seed.
    pub first: u64,
    /// Last seed.
    pub last: u64,
}

impl FromStr for SeedRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s
            .split_once("..=")
            .or_else(|| s.split_once(".."))
            .ok_or_else(|| {
                format!("`{s}` is not a seed range: write A..B (inclusive), e.g. 1..100")
            })?;
        let parse = |x: &str| {
            x.trim()
                .parse::<u64>()
                .map_err(|e| format!("`{x}` in `{s}`: {e}"))
        };
        let (first, last) = (parse(a)?, parse(b)?);
        if first > last {
            return Err(format!("`{s}`: the first seed is above the last"));
        }
        Ok(SeedRange { first, last })
    }
}

/// Which part of a seed range this process runs: every `count`-th seed starting at `index`,
/// so N CI jobs (or Kubernetes indexed jobs) split one range with no coordination.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// This job's index, `0..count`.
    pub index: u64,
    /// How many jobs share the range.
    pub count: u64,
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (i, n) = s
            .split_once('/')
            .ok_or_else(|| format!("`{s}` is not a shard: write I/N, e.g. 0/4"))?;
        let parse = |x: &str| {
            x.trim()
                .parse::<u64>()
                .map_err(|e| format!("`{x}` in `{s}`: {e}"))
        };
        let (index, count) = (parse(i)?, parse(n)?);
        if count == 0 || index >= count {
            return Err(format!("`{s}`: need 0 <= I < N"));
        }
        Ok(Shard { index, count })
    }
}

/// The environment variable a Kubernetes indexed Job sets to each pod's index.
pub const JOB_INDEX_ENV: &str = "JOB_COMPLETION_INDEX";

impl Shard {
    /// The whole range: one job.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    /// `I/N`, or `N` alone with the index from [`JOB_INDEX_ENV`] (`job_index`, read by the
    /// caller), so a Kubernetes indexed Job's pods need no per-pod arguments.
    pub fn parse_with(s: &str, job_index: Option<&str>) -> Result<Shard, String> {
        if s.contains('/') {
            return s.parse();
        }
        let index = job_index.ok_or_else(|| {
            format!("--shard {s}: no index given and {JOB_INDEX_ENV} is not set (write I/N)")
        })?;
        format!("{}/{s}", index.trim())
            .parse()
            .map_err(|e| format!("--shard {s} with {JOB_INDEX_ENV}={index}: {e}"))
    }
}

/// What identifies the binary that ran a swarm: the SHA-256 of its executable (16 hex digits),
/// so `chatsim merge` refuses pieces built from different code. `unknown` when the executable
/// cannot be read.
pub fn binary_id() -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        std::env::current_exe()
            .and_then(std::fs::read)
            .map(|bytes| hex16(&Sha256::digest(&bytes)))
            .unwrap_or_else(|_| "unknown".into())
    })
    .clone()
}

fn hex16(digest: &[u8]) -> String {
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A scenario's identity for merging: the SHA-256 of its text (16 hex digits).
pub fn scenario_hash(s: &Scenario) -> String {
    hex16(&Sha256::digest(s.source.as_bytes()))
}

/// The seeds a shard of a range runs, in order.
pub fn seeds_of(range: SeedRange, shard: Shard) -> Vec<u64> {
    (range.first..=range.last)
        .skip(shard.index as usize)
        .step_by(shard.count as usize)
        .collect()
}

/// One seed that failed, as the summary shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Failure {
    /// The seed.
    pub seed: u64,
    /// Invariants it broke (or `panic`).
    pub broken: Vec<String>,
    /// The first violation's detail.
    pub first_violation: String,
    /// The command that replays it.
    pub replay: String,
}

/// One seed's outcome as a swarm's JSON carries it: what `chatsim merge` and JUnit read.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SeedOutcome {
    /// The seed.
    pub seed: u64,
    /// Invariants it broke, with their violation counts (empty: it passed).
    pub broken: BTreeMap<String, usize>,
    /// Whether the simulation itself panicked.
    pub panicked: bool,
    /// Faults the engine skipped.
    pub skipped: usize,
    /// Wall seconds of its run (not part of any verdict).
    pub wall_seconds: f64,
}

/// The outcome of a swarm.
#[derive(Clone, Debug, Serialize)]
pub struct SwarmReport {
    /// Scenario name.
    pub scenario: String,
    /// The scenario file as given (what a merged report loads its story from).
    pub scenario_path: String,
    /// The SHA-256 of the scenario's text (16 hex digits).
    pub scenario_hash: String,
    /// The binary that ran it ([`binary_id`]).
    pub binary: String,
    /// The seed range the swarm was asked for.
    pub seed_range: SeedRange,
    /// Which part of it this process ran.
    pub shard: Shard,
    /// Engine.
    pub engine: &'static str,
    /// Bugs switched on.
    pub bugs: Vec<String>,
    /// Whether BUGGIFY was on for these seeds: the file's `buggify`, or `--buggify` for a file
    /// that does not say `buggify_never` (a gate run with `--buggify` shows here which of its
    /// scenarios ran as written).
    pub buggify: bool,
    /// Seeds this process ran.
    pub seeds_run: usize,
    /// Of those, how many broke an invariant or panicked.
    pub seeds_failed: usize,
    /// Their seeds, in order.
    pub failing_seeds: Vec<u64>,
    /// Per invariant: how many seeds broke it.
    pub invariants: BTreeMap<String, usize>,
    /// Seeds whose simulation panicked.
    pub panicked_seeds: Vec<u64>,
    /// Faults the engine could not express and skipped, summed over the seeds (each run's
    /// summary lists them); a swarm that passes with skips did not test those faults.
    pub faults_skipped: usize,
    /// Seeds with at least one skipped fault.
    pub seeds_with_skips: usize,
    /// Details of each failing seed.
    pub failures: Vec<Failure>,
    /// Wall seconds for the whole swarm.
    pub wall_seconds: f64,
    /// Which coverage probes the seeds reached, aggregated as they finished (JSON: `probes`,
    /// unreached first, and `unreached`).
    pub coverage: Coverage,
    /// Every seed's outcome, in seed order.
    pub seeds: Vec<SeedOutcome>,
    /// Every seed's outcome, in seed order (for JUnit and reports): verdicts and counts; each
    /// history is dropped once judged and no frame log is kept.
    #[serde(skip)]
    pub per_seed: Vec<(u64, Result<RunReport, String>)>,
}

/// Run `seeds` of `scenario` on `jobs` worker threads on the main engine.
pub fn swarm(scenario: &Scenario, seeds: &[u64], jobs: usize, bugs: &Bugs) -> SwarmReport {
    swarm_on(Engine::Madsim, scenario, seeds, jobs, bugs)
}

/// Run `seeds` of `scenario` on `jobs` worker threads on `engine`.
pub fn swarm_on(
    engine: Engine,
    scenario: &Scenario,
    seeds: &[u64],
    jobs: usize,
    bugs: &Bugs,
) -> SwarmReport {
    swarm_many(engine, std::slice::from_ref(scenario), seeds, jobs, bugs)
        .into_iter()
        .next()
        .expect("one scenario, one report")
}

/// Which seeds of each scenario a swarm runs.
#[derive(Clone, Copy, Debug)]
pub enum Seeds<'a> {
    /// These seeds, of every scenario.
    Listed(&'a [u64]),
    /// Seeds from the range's first upwards, for `seconds` of wall: see [`Budget`].
    Budget(Budget),
}

/// A gate sized in time: each scenario runs its seeds in order from `range.first` (never past
/// `range.last`), the next seed always going to the scenario that has had the least run time so
/// far, until `seconds` of wall have passed. Every scenario gets an equal share of the workers'
/// time, so a cheap scenario judges hundreds of seeds for each of a costly one's, and each
/// scenario's seeds are one unbroken range: `--seeds FIRST..LAST` with what it ran replays it
/// exactly. Which seeds fit depends on the machine; each seed's verdict does not.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Budget {
    /// The seeds each scenario may draw from, in order.
    pub range: SeedRange,
    /// Wall seconds: no seed starts when its scenario's mean run so far would end past them.
    pub seconds: f64,
}

/// What a budgeted swarm's worker does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    /// Run this seed of this scenario.
    Run(usize, u64),
    /// Wait for a running seed to end: the only seeds left that fit are of scenarios whose
    /// first seed is still running.
    Wait,
    /// Nothing more fits in the budget.
    Done,
}

/// A budgeted swarm's dispatcher: which seed goes next, and what each scenario has spent.
struct Dispatcher {
    budget: Budget,
    started: Instant,
    /// The next seed of each scenario.
    next: Vec<u64>,
    /// Run seconds of each scenario's finished seeds, plus a guess for those in flight.
    spent: Vec<f64>,
    /// Finished seeds of each scenario, and their run seconds.
    finished: Vec<(u32, f64)>,
    /// Scenarios by cost, costliest first: the order ties are broken in, so the first round
    /// starts the biggest worlds first.
    order: Vec<usize>,
}

impl Dispatcher {
    fn new(budget: Budget, order: Vec<usize>) -> Dispatcher {
        let n = order.len();
        Dispatcher {
            budget,
            started: Instant::now(),
            next: vec![budget.range.first; n],
            spent: vec![0.0; n],
            finished: vec![(0, 0.0); n],
            order,
        }
    }

    /// A scenario's mean run so far (`None` before its first seed finished).
    fn mean(&self, i: usize) -> Option<f64> {
        let (n, s) = self.finished[i];
        (n > 0).then(|| s / f64::from(n))
    }

    /// The next (scenario, seed) to run, charged with its scenario's mean run.
    fn take(&mut self) -> Next {
        let now = self.started.elapsed().as_secs_f64();
        let fits = |d: &Dispatcher, i: usize| {
            d.next[i] <= d.budget.range.last && now + d.mean(i).unwrap_or(0.0) <= d.budget.seconds
        };
        // A scenario whose first seed is still running has no measure yet, so no second seed:
        // charged nothing, it would win every pick until its first ended.
        let measured =
            |d: &Dispatcher, i: usize| d.finished[i].0 > 0 || d.next[i] == d.budget.range.first;
        let mut waiting = false;
        let mut best: Option<usize> = None;
        for &i in &self.order {
            if !fits(self, i) {
                continue;
            }
            if !measured(self, i) {
                waiting = true;
                continue;
            }
            if best.is_none_or(|b| self.spent[i] < self.spent[b]) {
                best = Some(i);
            }
        }
        let Some(i) = best else {
            return if waiting { Next::Wait } else { Next::Done };
        };
        let seed = self.next[i];
        self.next[i] += 1;
        self.spent[i] += self.mean(i).unwrap_or(0.0);
        Next::Run(i, seed)
    }

    /// Seed of scenario `i` finished after `seconds` of run: its guess becomes the measure.
    fn done(&mut self, i: usize, seconds: f64) {
        self.spent[i] += seconds - self.mean(i).unwrap_or(0.0);
        self.finished[i].0 += 1;
        self.finished[i].1 += seconds;
    }
}

/// Run seeds of every scenario on one pool of `jobs` worker threads, so a gate over many
/// scenarios keeps every core busy to the end; a report per scenario, in the order given.
pub fn swarm_many(
    engine: Engine,
    scenarios: &[Scenario],
    seeds: &[u64],
    jobs: usize,
    bugs: &Bugs,
) -> Vec<SwarmReport> {
    swarm_seeds(engine, scenarios, Seeds::Listed(seeds), jobs, bugs)
}

/// Run `seeds` of every scenario on one pool of `jobs` worker threads: [`swarm_many`], or a
/// gate sized in time ([`Budget`]), where each report's `seed_range` is what its scenario ran.
pub fn swarm_seeds(
    engine: Engine,
    scenarios: &[Scenario],
    seeds: Seeds<'_>,
    jobs: usize,
    bugs: &Bugs,
) -> Vec<SwarmReport> {
    let started = Instant::now();
    // Biggest worlds first (longest-processing-time order): a gate whose slowest seeds start
    // last ends with one worker busy and the others idle.
    let cost: Vec<u64> = scenarios
        .iter()
        .map(|s| s.memory_estimate(false).bytes)
        .collect();
    let mut order: Vec<usize> = (0..scenarios.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(cost[i]));
    let many = scenarios.len() > 1;
    let bar = if std::io::stderr().is_terminal() {
        let bar = match seeds {
            Seeds::Listed(list) => {
                let bar = ProgressBar::new((list.len() * scenarios.len()) as u64);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} seeds, {msg}",
                    )
                    .expect("the template is valid"),
                );
                bar
            }
            Seeds::Budget(b) => {
                let bar = ProgressBar::new(b.seconds.ceil() as u64);
                bar.set_style(
                    ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] {bar:40} of {len} s, {msg}",
                    )
                    .expect("the template is valid"),
                );
                bar
            }
        };
        Some(bar)
    } else {
        None
    };
    let ran = std::sync::atomic::AtomicUsize::new(0);
    let failed = std::sync::atomic::AtomicUsize::new(0);
    // Probe counts are added here as each seed finishes and dropped from its report, so a
    // long swarm holds one tally per probe and scenario, not one map per seed.
    let coverage: Vec<std::sync::Mutex<Coverage>> = scenarios
        .iter()
        .map(|s| std::sync::Mutex::new(Coverage::new(s.name())))
        .collect();
    let run_one = |i: usize, seed: u64| -> Result<RunReport, String> {
        let scenario = &scenarios[i];
        // A swarm reports verdicts, not runs: no frame log, and each seed's history goes as
        // soon as it is judged, so a long swarm holds verdicts, not histories.
        let r = run_seed_keeping(engine, scenario, seed, bugs, Keep::VERDICT)
            .map(|mut r| {
                r.history = History::default();
                // A poisoned lock only means another seed panicked while adding; the counts it
                // holds are still sums of whole seeds.
                coverage[i]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .add_run(seed, &std::mem::take(&mut r.probes));
                r
            })
            .map_err(|e: RunError| e.to_string());
        let ok = matches!(&r, Ok(rep) if rep.passed());
        let nfailed = failed.fetch_add(usize::from(!ok), std::sync::atomic::Ordering::Relaxed)
            + usize::from(!ok);
        let nran = ran.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        match &bar {
            Some(bar) => {
                match seeds {
                    Seeds::Listed(_) => bar.inc(1),
                    Seeds::Budget(_) => bar.set_position(started.elapsed().as_secs()),
                }
                bar.set_message(format!("{nran} seeds, {nfailed} failing"));
            }
            None if many => eprintln!(
                "{} seed {seed}: {}",
                scenario.name(),
                if ok { "pass" } else { "FAIL" }
            ),
            None => eprintln!("seed {seed}: {}", if ok { "pass" } else { "FAIL" }),
        }
        r
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .thread_name(|i| format!("swarm-{i}"))
        .build()
        .expect("the OS can start worker threads");
    let mut results: Vec<(usize, u64, Result<RunReport, String>)> = match seeds {
        Seeds::Listed(list) => {
            let pairs: Vec<(usize, u64)> = order
                .iter()
                .flat_map(|&i| list.iter().map(move |&s| (i, s)))
                .collect();
            pool.install(|| {
                // One seed a task: seeds differ in cost by a hundredfold across scenarios, and a
                // task of many seeds cannot be shared out once one worker is left with it.
                pairs
                    .par_iter()
                    .with_max_len(1)
                    .map(|&(i, seed)| (i, seed, run_one(i, seed)))
                    .collect()
            })
        }
        Seeds::Budget(budget) => {
            let dispatcher = std::sync::Mutex::new(Dispatcher::new(budget, order));
            // Rung whenever a seed ends, for workers waiting on a scenario's first seed.
            let ended = std::sync::Condvar::new();
            let done = std::sync::Mutex::new(Vec::new());
            pool.scope(|s| {
                for _ in 0..jobs.max(1) {
                    s.spawn(|_| {
                        // A poisoned lock means a run panicked past its own catch; what the
                        // dispatcher holds is still whole.
                        let lock = || dispatcher.lock().unwrap_or_else(|e| e.into_inner());
                        let mut d = lock();
                        loop {
                            match d.take() {
                                Next::Done => break,
                                Next::Wait => d = ended.wait(d).unwrap_or_else(|e| e.into_inner()),
                                Next::Run(i, seed) => {
                                    drop(d);
                                    let r = run_one(i, seed);
                                    let seconds = r.as_ref().map_or(0.0, |r| r.stats.wall_seconds);
                                    done.lock()
                                        .unwrap_or_else(|e| e.into_inner())
                                        .push((i, seed, r));
                                    d = lock();
                                    d.done(i, seconds);
                                    ended.notify_all();
                                }
                            }
                        }
                    });
                }
            });
            done.into_inner().unwrap_or_else(|e| e.into_inner())
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let wall = started.elapsed().as_secs_f64();
    results.sort_by_key(|&(i, seed, _)| (i, seed));
    let mut per: Vec<Vec<(u64, Result<RunReport, String>)>> =
        scenarios.iter().map(|_| Vec::new()).collect();
    for (i, seed, r) in results {
        per[i].push((seed, r));
    }
    scenarios
        .iter()
        .zip(per)
        .zip(coverage)
        .map(|((scenario, results), cov)| {
            let range = match seeds {
                Seeds::Listed(list) => SeedRange {
                    first: list.iter().copied().min().unwrap_or(0),
                    last: list.iter().copied().max().unwrap_or(0),
                },
                // What it ran: one unbroken range from the first (`seeds_run` 0: nothing).
                Seeds::Budget(b) => SeedRange {
                    first: b.range.first,
                    last: b.range.first + (results.len() as u64).saturating_sub(1),
                },
            };
            summarise(
                engine,
                scenario,
                bugs,
                results,
                cov.into_inner().unwrap_or_else(|e| e.into_inner()),
                wall,
                range,
            )
        })
        .collect()
}

fn summarise(
    engine: Engine,
    scenario: &Scenario,
    bugs: &Bugs,
    results: Vec<(u64, Result<RunReport, String>)>,
    coverage: Coverage,
    wall_seconds: f64,
    seed_range: SeedRange,
) -> SwarmReport {
    let mut invariants: BTreeMap<String, usize> =
        CHECKS.iter().map(|n| (n.to_string(), 0)).collect();
    let mut failures = Vec::new();
    let mut panicked_seeds = Vec::new();
    let skips: Vec<usize> = results
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(|r| r.skipped.len())
        .collect();
    for (seed, r) in &results {
        match r {
            Ok(rep) if rep.passed() => {}
            Ok(rep) => {
                let broken: Vec<String> = rep
                    .invariants
                    .iter()
                    .filter(|v| !v.holds)
                    .map(|v| v.name.to_string())
                    .collect();
                for b in &broken {
                    *invariants.entry(b.clone()).or_default() += 1;
                }
                let first_violation = rep
                    .invariants
                    .iter()
                    .flat_map(|v| v.violations.first())
                    .map(|v| v.detail.clone())
                    .next()
                    .unwrap_or_default();
                failures.push(Failure {
                    seed: *seed,
                    broken,
                    first_violation,
                    replay: rep.replay.clone(),
                });
            }
            Err(e) => {
                panicked_seeds.push(*seed);
                let replay = crate::run::replay_command(
                    engine,
                    &scenario.path.display().to_string(),
                    *seed,
                    bugs,
                    scenario.buggify_forced,
                );
                failures.push(Failure {
                    seed: *seed,
                    broken: vec!["panic".into()],
                    first_violation: e.clone(),
                    replay,
                });
            }
        }
    }
    let seeds = results
        .iter()
        .map(|(seed, r)| match r {
            Ok(rep) => SeedOutcome {
                seed: *seed,
                broken: rep
                    .invariants
                    .iter()
                    .filter(|v| !v.holds)
                    .map(|v| (v.name.to_string(), v.violations.len()))
                    .collect(),
                panicked: false,
                skipped: rep.skipped.len(),
                wall_seconds: rep.stats.wall_seconds,
            },
            Err(_) => SeedOutcome {
                seed: *seed,
                broken: BTreeMap::new(),
                panicked: true,
                skipped: 0,
                wall_seconds: 0.0,
            },
        })
        .collect();
    SwarmReport {
        scenario: scenario.name(),
        scenario_path: scenario.path.display().to_string(),
        scenario_hash: scenario_hash(scenario),
        binary: binary_id(),
        seed_range,
        shard: Shard::WHOLE,
        seeds,
        engine: engine.name(),
        bugs: bugs.iter().map(|b| b.to_string()).collect(),
        buggify: scenario.buggify,
        seeds_run: results.len(),
        seeds_failed: failures.len(),
        failing_seeds: failures.iter().map(|f| f.seed).collect(),
        invariants,
        panicked_seeds,
        faults_skipped: skips.iter().sum(),
        seeds_with_skips: skips.iter().filter(|n| **n > 0).count(),
        failures,
        wall_seconds,
        coverage,
        per_seed: results,
    }
}

/// The swarm's text summary.
pub fn summary(r: &SwarmReport) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let bugs = if r.bugs.is_empty() {
        String::new()
    } else {
        format!(", bugs: {}", r.bugs.join(" "))
    };
    let _ = writeln!(
        s,
        "chatsim swarm: {}, {} seeds on {}{bugs}",
        r.scenario, r.seeds_run, r.engine
    );
    let _ = writeln!(s, "  {:<20} {:>14}", "invariant", "seeds broken");
    for (name, n) in &r.invariants {
        let _ = writeln!(s, "  {name:<20} {n:>14}");
    }
    if !r.panicked_seeds.is_empty() {
        let _ = writeln!(s, "  {:<20} {:>14}", "(panicked)", r.panicked_seeds.len());
    }
    if r.faults_skipped > 0 {
        let _ = writeln!(
            s,
            "  skipped on {}: {} faults on {} seeds (this engine cannot express them; \
             `chatsim run` on a seed lists them)",
            r.engine, r.faults_skipped, r.seeds_with_skips
        );
    }
    let _ = writeln!(s, "  {}", r.coverage.one_line());
    let _ = writeln!(s, "  failing seeds: {} of {}", r.seeds_failed, r.seeds_run);
    for f in r.failures.iter().take(FAILING_SEEDS_SHOWN_MAX) {
        let _ = writeln!(
            s,
            "    seed {}: {} -- {}",
            f.seed,
            f.broken.join(", "),
            f.first_violation
        );
        let _ = writeln!(s, "      replay: {}", f.replay);
    }
    if r.failures.len() > FAILING_SEEDS_SHOWN_MAX {
        let _ = writeln!(
            s,
            "    ... and {} more (see --json)",
            r.failures.len() - FAILING_SEEDS_SHOWN_MAX
        );
    }
    let rate = if r.wall_seconds > 0.0 {
        r.seeds_run as f64 / r.wall_seconds * 60.0
    } else {
        0.0
    };
    let _ = writeln!(
        s,
        "  wall: {:.1} s ({rate:.0} seeds per minute)",
        r.wall_seconds
    );
    let _ = writeln!(
        s,
        "  verdict: {}",
        if r.seeds_failed == 0 { "PASS" } else { "FAIL" }
    );
    s
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// JUnit XML: one testcase per seed and invariant, so CI systems show each failure natively.
pub fn junit(r: &SwarmReport) -> String {
    junit_of(std::slice::from_ref(r), r.wall_seconds)
}

/// JUnit XML for several scenarios' swarms: a testsuite each.
pub fn junit_of(reports: &[SwarmReport], wall_seconds: f64) -> String {
    use std::fmt::Write;
    let tally = |r: &SwarmReport| {
        let cases = r.seeds.len() * CHECKS.len();
        let failures: usize = r
            .seeds
            .iter()
            .map(|o| {
                if o.panicked {
                    CHECKS.len()
                } else {
                    o.broken.len()
                }
            })
            .sum();
        (cases, failures)
    };
    let (cases, failures) = reports
        .iter()
        .map(tally)
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"chatsim\" tests=\"{cases}\" failures=\"{failures}\" time=\"{wall_seconds:.3}\">"
    );
    for r in reports {
        let (cases, failures) = tally(r);
        let name = xml_escape(&r.scenario);
        let _ = writeln!(
            x,
            "  <testsuite name=\"{name}\" tests=\"{cases}\" failures=\"{failures}\" time=\"{:.3}\">",
            r.wall_seconds
        );
        // How the suite ran, for whoever reads only this file: a `--buggify` gate leaves a
        // scenario whose file says `buggify_never` as written, and the seeds say what to replay.
        let seeds = format!("{}..{}", r.seed_range.first, r.seed_range.last);
        let _ = writeln!(
            x,
            "    <properties>\n      <property name=\"buggify\" value=\"{}\"/>\n      <property name=\"seeds\" value=\"{seeds}\"/>\n    </properties>",
            r.buggify
        );
        let by_seed: BTreeMap<u64, &Failure> = r.failures.iter().map(|f| (f.seed, f)).collect();
        for o in &r.seeds {
            let seed = o.seed;
            for inv in CHECKS {
                let _ = write!(
                    x,
                    "    <testcase classname=\"{name}.seed-{seed}\" name=\"{inv}\" time=\"{:.3}\"",
                    o.wall_seconds
                );
                let said = by_seed.get(&seed);
                let detail = said.map_or(String::new(), |f| {
                    format!(
                        "first violation: {}\nreplay: {}",
                        f.first_violation, f.replay
                    )
                });
                let failure = if o.panicked {
                    Some(("the simulation panicked".to_string(), detail))
                } else {
                    o.broken
                        .get(inv)
                        .map(|n| (format!("{n} violations of {inv}"), detail))
                };
                match failure {
                    None => x.push_str("/>\n"),
                    Some((message, body)) => {
                        let _ = writeln!(
                            x,
                            ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                            xml_escape(&message),
                            xml_escape(&body)
                        );
                    }
                }
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

/// A swarm over several scenarios at once: a CI gate sized in seeds.
#[derive(Clone, Debug, Serialize)]
pub struct Gate {
    /// The binary that ran it.
    pub binary: String,
    /// Engine.
    pub engine: &'static str,
    /// Bugs switched on.
    pub bugs: Vec<String>,
    /// The seed range each scenario was asked for.
    pub seed_range: SeedRange,
    /// Which part of it this process ran.
    pub shard: Shard,
    /// Seeds run, over every scenario.
    pub seeds_run: usize,
    /// Of those, how many broke an invariant or panicked.
    pub seeds_failed: usize,
    /// Wall seconds of the whole gate.
    pub wall_seconds: f64,
    /// Seeds a minute of wall.
    pub seeds_per_minute: f64,
    /// A gate sized in time (`swarm --for`): its wall seconds. Each scenario's report says
    /// which seeds it ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_seconds: Option<f64>,
    /// Scenarios that ran no seed (a budget too short to reach them): the gate did not judge
    /// them, so it fails.
    pub unjudged: Vec<String>,
    /// One swarm report per scenario, in the order given.
    pub scenarios: Vec<SwarmReport>,
}

impl Gate {
    /// The gate over `reports`, each of which ran `shard` of `seed_range`.
    pub fn of(
        reports: Vec<SwarmReport>,
        seed_range: SeedRange,
        shard: Shard,
        wall_seconds: f64,
    ) -> Gate {
        let seeds_run = reports.iter().map(|r| r.seeds_run).sum();
        Gate {
            binary: reports.first().map_or_else(binary_id, |r| r.binary.clone()),
            engine: reports.first().map_or("madsim", |r| r.engine),
            bugs: reports.first().map(|r| r.bugs.clone()).unwrap_or_default(),
            seed_range,
            shard,
            seeds_run,
            seeds_failed: reports.iter().map(|r| r.seeds_failed).sum(),
            wall_seconds,
            seeds_per_minute: if wall_seconds > 0.0 {
                seeds_run as f64 / wall_seconds * 60.0
            } else {
                0.0
            },
            budget_seconds: None,
            unjudged: reports
                .iter()
                .filter(|r| r.seeds_run == 0)
                .map(|r| r.scenario.clone())
                .collect(),
            scenarios: reports,
        }
    }

    /// Whether every scenario was judged and no seed failed.
    pub fn passed(&self) -> bool {
        self.seeds_failed == 0 && self.unjudged.is_empty()
    }

    /// The gate's text summary: a line per scenario, the failing seeds, the totals.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let bugs = if self.bugs.is_empty() {
            String::new()
        } else {
            format!(", bugs: {}", self.bugs.join(" "))
        };
        let _ = writeln!(
            s,
            "chatsim swarm: {} scenarios, {} seeds on {}{bugs}",
            self.scenarios.len(),
            self.seeds_run,
            self.engine
        );
        if let Some(budget) = self.budget_seconds {
            let _ = writeln!(
                s,
                "  sized in time: {budget:.0} s of wall, each scenario an equal share of the \
                 workers' time, its seeds in order (replay one with --seeds and its range)"
            );
        }
        let _ = writeln!(
            s,
            "  {:<28} {:>7} {:>7}  broken",
            "scenario", "seeds", "failed"
        );
        for r in &self.scenarios {
            let broken: Vec<String> = r
                .invariants
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(k, n)| format!("{k} ({n})"))
                .collect();
            let ran = match (self.budget_seconds, r.seeds_run) {
                (Some(_), 0) => "  not reached".to_string(),
                (Some(_), _) => format!("  seeds {}..{}", r.seed_range.first, r.seed_range.last),
                (None, _) => String::new(),
            };
            let _ = writeln!(
                s,
                "  {:<28} {:>7} {:>7}  {}{ran}",
                r.scenario,
                r.seeds_run,
                r.seeds_failed,
                broken.join(", ")
            );
        }
        let mut shown = 0;
        for r in &self.scenarios {
            for f in &r.failures {
                if shown == FAILING_SEEDS_SHOWN_MAX {
                    break;
                }
                shown += 1;
                let _ = writeln!(
                    s,
                    "    {} seed {}: {} -- {}\n      replay: {}",
                    r.scenario,
                    f.seed,
                    f.broken.join(", "),
                    f.first_violation,
                    f.replay
                );
            }
        }
        if self.seeds_failed > shown {
            let _ = writeln!(
                s,
                "    ... and {} more (see --json)",
                self.seeds_failed - shown
            );
        }
        if !self.unjudged.is_empty() {
            let _ = writeln!(
                s,
                "  not judged (the budget ran out before their first seed): {}",
                self.unjudged.join(", ")
            );
        }
        let _ = writeln!(
            s,
            "  failing seeds: {} of {}\n  wall: {:.1} s ({:.0} seeds per minute)\n  verdict: {}",
            self.seeds_failed,
            self.seeds_run,
            self.wall_seconds,
            self.seeds_per_minute,
            if self.passed() { "PASS" } else { "FAIL" }
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Ranges are inclusive either way they are written, and bad ones say why.
    #[test]
    fn seed_ranges_and_shards_parse_and_split_a_range_without_overlap() {
        assert_eq!("1..20".parse(), Ok(SeedRange { first: 1, last: 20 }));
        assert_eq!("3..=3".parse(), Ok(SeedRange { first: 3, last: 3 }));
        assert!("20..1".parse::<SeedRange>().is_err());
        assert!("x..2".parse::<SeedRange>().is_err());
        assert!("4/4".parse::<Shard>().is_err());
        let range = SeedRange { first: 1, last: 10 };
        let mut all: Vec<u64> = (0..3)
            .flat_map(|i| seeds_of(range, Shard { index: i, count: 3 }))
            .collect();
        assert_eq!(seeds_of(range, Shard { index: 1, count: 3 }), vec![2, 5, 8]);
        all.sort();
        assert_eq!(all, (1..=10).collect::<Vec<_>>());
    }

    fn budget(first: u64, last: u64, seconds: f64) -> Budget {
        Budget {
            range: SeedRange { first, last },
            seconds,
        }
    }

    // One worker, two scenarios a seed of which costs 1.0 and 0.1: each is handed its seeds in
    // order, the cheap one ten for each of the costly one's, and neither is ever more than one
    // seed's cost ahead of the other.
    #[test]
    fn a_budget_gives_each_scenario_an_equal_share_of_time_and_its_seeds_in_order() {
        let cost = [1.0, 0.1];
        let mut d = Dispatcher::new(budget(5, 1_000_000, 1e9), vec![0, 1]);
        let mut seeds: [Vec<u64>; 2] = [Vec::new(), Vec::new()];
        for _ in 0..220 {
            let Next::Run(i, seed) = d.take() else {
                panic!("the budget is far off")
            };
            seeds[i].push(seed);
            d.done(i, cost[i]);
            assert!(
                (d.spent[0] - d.spent[1]).abs() <= 1.0 + 1e-9,
                "{:?}",
                d.spent
            );
        }
        assert_eq!(seeds[0], (5..25).collect::<Vec<_>>());
        assert_eq!(seeds[1], (5..205).collect::<Vec<_>>());
    }

    // Nothing past the range's last seed; a scenario whose first seed is still running (no
    // measure yet) gets no second, and a worker with nothing else waits for it rather than
    // ending (a one-scenario budget would run on one worker); nothing starts once the budget
    // has passed.
    #[test]
    fn a_budget_stops_at_the_range_end_at_an_unmeasured_scenario_and_at_the_deadline() {
        let mut d = Dispatcher::new(budget(1, 2, 1e9), vec![1, 0]);
        assert_eq!(d.take(), Next::Run(1, 1), "ties go in the given order");
        assert_eq!(d.take(), Next::Run(0, 1));
        assert_eq!(d.take(), Next::Wait, "both first seeds are still running");
        d.done(0, 0.5);
        assert_eq!(d.take(), Next::Run(0, 2));
        assert_eq!(
            d.take(),
            Next::Wait,
            "scenario 1's first seed is still running"
        );
        d.done(0, 0.5);
        d.done(1, 0.5);
        assert_eq!(d.take(), Next::Run(1, 2));
        d.done(1, 0.5);
        assert_eq!(d.take(), Next::Done, "the range is spent");

        let mut d = Dispatcher::new(budget(1, 100, 5.0), vec![0]);
        d.started -= std::time::Duration::from_secs(10);
        assert_eq!(d.take(), Next::Done, "the budget has passed");
        let mut d = Dispatcher::new(budget(1, 100, 5.0), vec![0]);
        d.started -= std::time::Duration::from_secs(3);
        d.finished[0] = (1, 3.0);
        d.next[0] = 2;
        assert_eq!(
            d.take(),
            Next::Done,
            "a seed of 3 s would end past the budget"
        );
    }

    // A gate where a scenario ran no seed did not judge it: it fails and says which.
    #[test]
    fn a_gate_with_a_scenario_that_ran_no_seed_fails() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/smoke.toml");
        let scenario = Scenario::load(&path).expect("the bundled smoke scenario loads");
        let report = summarise(
            Engine::Madsim,
            &scenario,
            &Bugs::default(),
            Vec::new(),
            Coverage::new(scenario.name()),
            1.0,
            SeedRange { first: 1, last: 1 },
        );
        let mut gate = Gate::of(
            vec![report],
            SeedRange { first: 1, last: 1 },
            Shard::WHOLE,
            1.0,
        );
        gate.budget_seconds = Some(1.0);
        assert!(!gate.passed());
        assert_eq!(gate.unjudged, vec![scenario.name()]);
        let summary = gate.summary();
        assert!(summary.contains("not judged"), "{summary}");
        assert!(summary.contains("verdict: FAIL"), "{summary}");
    }

    // The XML escapes what must be escaped, so a violation's text cannot break the file.
    #[test]
    fn xml_escaping_covers_markup_characters() {
        assert_eq!(
            xml_escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&apos;"
        );
    }
}
