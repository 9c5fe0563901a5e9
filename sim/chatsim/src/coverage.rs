//! Coverage: which probes ([`Probe`]) a set of runs reached, how often, on how many seeds, and
//! first on which seed. A probe names a rare or defensive branch (a duplicate dropped, a write
//! fenced, a lease moved); one that no run reaches names a mechanism the scenarios never
//! exercise, however often they pass. Swarms carry a [`Coverage`], and `chatsim coverage`
//! measures it over many scenarios and fails while any probe is unreached.
//!
//! Counts are aggregated as runs finish, never kept per seed, so memory does not grow with the
//! seed range; every map is a `BTreeMap` and every merge is a sum or a minimum, so the result
//! does not depend on which worker finished first.

use crate::run::{run_seed_keeping, Engine, Keep};
use crate::scenario::Scenario;
use chatsim_system::bugs::Bugs;
use chatsim_system::probe::Probe;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Serialize, Serializer};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

/// Unreached probes the swarm's one-line summary names before it says "and N more".
pub const UNREACHED_SHOWN_MAX: usize = 10;

/// One probe's counts so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tally {
    hits: u64,
    seeds: u64,
    /// The lowest seed that reached it, and the index of its scenario (ties go to the earlier
    /// scenario, so the answer is the same whatever order runs finished in).
    first: Option<(u64, usize)>,
}

/// Probe counts aggregated over runs of one or more scenarios.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Scenario names, in the order they were added; tallies refer to them by index.
    scenarios: Vec<String>,
    /// Runs added.
    runs: u64,
    /// Only probes some run reached (a count of zero is never stored).
    tallies: BTreeMap<Probe, Tally>,
}

/// One probe as the table and the JSON show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProbeRow {
    /// The probe's name, e.g. "device: duplicate dropped by id".
    pub name: &'static str,
    /// Why reaching it matters.
    pub reason: &'static str,
    /// Times it was reached, summed over every run.
    pub hits: u64,
    /// Runs (scenario, seed) that reached it at least once.
    pub seeds: u64,
    /// The lowest seed that reached it (`null` when none did).
    pub first_seed: Option<u64>,
    /// The scenario of that seed (the earlier one on a tie).
    pub first_scenario: Option<String>,
}

impl Coverage {
    /// Empty coverage for runs of `scenario`.
    pub fn new(scenario: impl Into<String>) -> Self {
        Coverage {
            scenarios: vec![scenario.into()],
            ..Coverage::default()
        }
    }

    /// Count one run of the first scenario: `seed` and the probe counts it reached.
    pub fn add_run(&mut self, seed: u64, probes: &BTreeMap<Probe, u64>) {
        self.add_run_of(0, seed, probes);
    }

    fn add_run_of(&mut self, scenario: usize, seed: u64, probes: &BTreeMap<Probe, u64>) {
        self.runs += 1;
        for (&probe, &n) in probes {
            if n == 0 {
                continue;
            }
            let t = self.tallies.entry(probe).or_default();
            t.hits += n;
            t.seeds += 1;
            t.first = Some(
                t.first
                    .map_or((seed, scenario), |f| f.min((seed, scenario))),
            );
        }
    }

    /// Add `other`'s runs (its scenarios come after these).
    pub fn merge(&mut self, other: Coverage) {
        let offset = self.scenarios.len();
        self.scenarios.extend(other.scenarios);
        self.runs += other.runs;
        for (probe, o) in other.tallies {
            let o_first = o.first.map(|(seed, i)| (seed, i + offset));
            let t = self.tallies.entry(probe).or_default();
            t.hits += o.hits;
            t.seeds += o.seeds;
            t.first = match (t.first, o_first) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }

    /// Add `other`'s runs of the same scenarios (another shard of the same swarm).
    pub fn absorb(&mut self, other: &Coverage) -> Result<(), String> {
        if self.scenarios != other.scenarios {
            return Err(format!(
                "coverage of {:?} cannot absorb coverage of {:?}",
                self.scenarios, other.scenarios
            ));
        }
        self.runs += other.runs;
        for (probe, o) in &other.tallies {
            let t = self.tallies.entry(*probe).or_default();
            t.hits += o.hits;
            t.seeds += o.seeds;
            t.first = match (t.first, o.first) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        Ok(())
    }

    /// Coverage read back from its JSON (what a swarm's `--json` wrote).
    pub fn from_json(v: &serde_json::Value) -> Result<Coverage, String> {
        let scenarios: Vec<String> = v["scenarios"]
            .as_array()
            .ok_or("coverage: no `scenarios` list")?
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or("coverage: a scenario name is not a string")
            })
            .collect::<Result<_, _>>()?;
        let runs = v["runs"].as_u64().ok_or("coverage: no `runs` count")?;
        let mut tallies = BTreeMap::new();
        for row in v["probes"].as_array().ok_or("coverage: no `probes` list")? {
            let name = row["name"]
                .as_str()
                .ok_or("coverage: a probe without a name")?;
            let probe = Probe::ALL
                .iter()
                .copied()
                .find(|p| p.name() == name)
                .ok_or_else(|| format!("coverage: probe `{name}` is not one this binary knows"))?;
            let hits = row["hits"].as_u64().unwrap_or(0);
            if hits == 0 {
                continue;
            }
            let first = match (row["first_seed"].as_u64(), row["first_scenario"].as_str()) {
                (Some(seed), Some(sc)) => Some((
                    seed,
                    scenarios
                        .iter()
                        .position(|x| x == sc)
                        .ok_or_else(|| format!("coverage: `{sc}` is not among its scenarios"))?,
                )),
                _ => None,
            };
            tallies.insert(
                probe,
                Tally {
                    hits,
                    seeds: row["seeds"].as_u64().unwrap_or(0),
                    first,
                },
            );
        }
        Ok(Coverage {
            scenarios,
            runs,
            tallies,
        })
    }

    /// Scenario names, in the order added.
    pub fn scenarios(&self) -> &[String] {
        &self.scenarios
    }

    /// Runs counted.
    pub fn runs(&self) -> u64 {
        self.runs
    }

    /// Probes no run reached, in [`Probe::ALL`] order.
    pub fn unreached(&self) -> Vec<Probe> {
        Probe::ALL
            .iter()
            .copied()
            .filter(|p| !self.tallies.contains_key(p))
            .collect()
    }

    /// How many probes some run reached.
    pub fn reached(&self) -> usize {
        Probe::ALL.len() - self.unreached().len()
    }

    /// Whether every probe was reached.
    pub fn complete(&self) -> bool {
        self.unreached().is_empty()
    }

    /// Every probe: the unreached first, then the reached, each in [`Probe::ALL`] order (the
    /// unreached are what a reader has to act on).
    pub fn rows(&self) -> Vec<ProbeRow> {
        let row = |p: Probe| {
            let t = self.tallies.get(&p).copied().unwrap_or_default();
            ProbeRow {
                name: p.name(),
                reason: p.reason(),
                hits: t.hits,
                seeds: t.seeds,
                first_seed: t.first.map(|(seed, _)| seed),
                first_scenario: t.first.and_then(|(_, i)| self.scenarios.get(i).cloned()),
            }
        };
        let (unreached, reached): (Vec<Probe>, Vec<Probe>) = Probe::ALL
            .iter()
            .copied()
            .partition(|p| !self.tallies.contains_key(p));
        unreached.into_iter().chain(reached).map(row).collect()
    }

    /// The one line a swarm's summary shows: "probes reached: N of M; unreached: a, b, ...".
    pub fn one_line(&self) -> String {
        let unreached = self.unreached();
        let mut s = format!("probes reached: {} of {}", self.reached(), Probe::ALL.len());
        if !unreached.is_empty() {
            let names: Vec<&str> = unreached
                .iter()
                .take(UNREACHED_SHOWN_MAX)
                .map(|p| p.name())
                .collect();
            s.push_str("; unreached: ");
            s.push_str(&names.join(", "));
            if unreached.len() > UNREACHED_SHOWN_MAX {
                s.push_str(&format!(
                    ", and {} more (see --json)",
                    unreached.len() - UNREACHED_SHOWN_MAX
                ));
            }
        }
        s
    }

    /// The table: probe | hits | seeds | first seed, the unreached (with why each matters)
    /// under their own header first, each line indented by two spaces.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let rows = self.rows();
        let width = rows
            .iter()
            .map(|r| r.name.chars().count())
            .max()
            .unwrap_or(5);
        let several = self.scenarios.len() > 1;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "  {:<width$}  {:>9}  {:>6}  first seed",
            "probe", "hits", "seeds"
        );
        let unreached = rows.iter().filter(|r| r.seeds == 0).count();
        if unreached > 0 {
            let _ = writeln!(
                s,
                "  unreached ({unreached} of {}): no run took these branches",
                rows.len()
            );
        }
        for (i, r) in rows.iter().enumerate() {
            if i == unreached {
                let _ = writeln!(
                    s,
                    "  reached ({} of {})",
                    rows.len() - unreached,
                    rows.len()
                );
            }
            let first = match (r.first_seed, &r.first_scenario) {
                (Some(seed), Some(sc)) if several => format!("{seed} ({sc})"),
                (Some(seed), _) => seed.to_string(),
                (None, _) => "-".to_string(),
            };
            let _ = writeln!(
                s,
                "  {:<width$}  {:>9}  {:>6}  {first}",
                r.name, r.hits, r.seeds
            );
            if r.seeds == 0 {
                let _ = writeln!(s, "      why it matters: {}", r.reason);
            }
        }
        s
    }
}

/// Serialised as `{"probes": [...], "unreached": [names], "reached", "total", "runs",
/// "scenarios"}`, probes in [`Coverage::rows`] order.
impl Serialize for Coverage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Json<'a> {
            probes: Vec<ProbeRow>,
            unreached: Vec<&'static str>,
            reached: usize,
            total: usize,
            runs: u64,
            scenarios: &'a [String],
        }
        Json {
            probes: self.rows(),
            unreached: self.unreached().iter().map(|p| p.name()).collect(),
            reached: self.reached(),
            total: Probe::ALL.len(),
            runs: self.runs,
            scenarios: &self.scenarios,
        }
        .serialize(serializer)
    }
}

/// Every judged scenario file in `dir` (the bundled ones when `dir` is a `scenarios` folder
/// that is not here), sorted: each `.toml` except the benchmark's worlds
/// (`bench-*`) and the scale run (`scale-*`), which are measured by `chatsim bench` and by
/// hand, not judged seed by seed (the scale run takes minutes and gigabytes). The same rule as
/// the scenario tests'.
pub fn judged_scenarios(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let files: Vec<PathBuf> = crate::catalog::list(dir)?
        .into_iter()
        .filter(|p| crate::catalog::is_judged(p))
        .collect();
    if files.is_empty() {
        return Err(format!("{}: no scenario files", dir.display()));
    }
    Ok(files)
}

/// A run that broke an invariant or panicked while coverage was measured: its probes still
/// count (a panicked run's are lost), but the measurement is not a clean bill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FailedRun {
    /// Scenario name.
    pub scenario: String,
    /// The seed.
    pub seed: u64,
    /// Invariants it broke, or `panic`.
    pub broken: Vec<String>,
    /// The command that replays it.
    pub replay: String,
}

/// `chatsim coverage`'s outcome.
#[derive(Clone, Debug, Serialize)]
pub struct CoverageReport {
    /// The probes, flattened in: `probes`, `unreached`, `reached`, `total`, `runs`,
    /// `scenarios`.
    #[serde(flatten)]
    pub coverage: Coverage,
    /// Engine.
    pub engine: &'static str,
    /// The seeds each scenario ran.
    pub seeds: Vec<u64>,
    /// Runs that broke an invariant or panicked, in scenario then seed order.
    pub failed_runs: Vec<FailedRun>,
    /// Wall seconds for the whole measurement.
    pub wall_seconds: f64,
}

impl CoverageReport {
    /// Whether a run panicked (the simulation itself failed).
    pub fn panicked(&self) -> bool {
        self.failed_runs
            .iter()
            .any(|f| f.broken.iter().any(|b| b == "panic"))
    }

    /// The exit code `chatsim coverage` ends with: 3 when a run panicked (the simulation
    /// failed), 1 when a probe is unreached or a run broke an invariant (either way the
    /// scenarios do not show what they should), 0 otherwise.
    pub fn exit_code(&self) -> u8 {
        if self.panicked() {
            3
        } else if !self.coverage.complete() || !self.failed_runs.is_empty() {
            1
        } else {
            0
        }
    }

    /// The text summary: header, table, failed runs, and the final count line.
    pub fn summary(&self) -> String {
        use std::fmt::Write;
        let c = &self.coverage;
        let n = c.scenarios.len();
        let mut s = format!(
            "chatsim coverage: {n} scenario{} x {} seed{} on {}\n",
            plural(n),
            self.seeds.len(),
            plural(self.seeds.len()),
            self.engine
        );
        s.push_str(&c.table());
        if !self.failed_runs.is_empty() {
            let _ = writeln!(
                s,
                "  failed runs: {} (their probes count; fix them first)",
                self.failed_runs.len()
            );
            for f in &self.failed_runs {
                let _ = writeln!(
                    s,
                    "    {} seed {}: {} -- replay: {}",
                    f.scenario,
                    f.seed,
                    f.broken.join(", "),
                    f.replay
                );
            }
        }
        let _ = writeln!(
            s,
            "coverage: {} of {} probes reached over {n} scenario{} x {} seed{} ({:.1} s wall)",
            c.reached(),
            Probe::ALL.len(),
            plural(n),
            self.seeds.len(),
            plural(self.seeds.len()),
            self.wall_seconds
        );
        s
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// Run every seed of every scenario (clean design, no bugs) on `jobs` worker threads, each
/// (scenario, seed) its own deterministic run on a fresh thread, and aggregate their probes.
/// All pairs share one pool, so a long scenario does not leave a core idle while it finishes.
pub fn measure(
    engine: Engine,
    scenarios: &[Scenario],
    seeds: &[u64],
    jobs: usize,
) -> CoverageReport {
    let started = Instant::now();
    let pairs: Vec<(usize, u64)> = (0..scenarios.len())
        .flat_map(|i| seeds.iter().map(move |&seed| (i, seed)))
        .collect();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(pairs.len() as u64);
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} runs")
        {
            bar.set_style(style);
        }
        bar
    });
    // One coverage per scenario, merged in scenario order at the end.
    let per_scenario: Vec<Mutex<Coverage>> = scenarios
        .iter()
        .map(|s| Mutex::new(Coverage::new(s.name())))
        .collect();
    let bugs = Bugs::none();
    let work = || {
        pairs
            .par_iter()
            .filter_map(|&(i, seed)| {
                let s = &scenarios[i];
                let outcome = run_seed_keeping(engine, s, seed, &bugs, Keep::VERDICT);
                let failed = match &outcome {
                    Ok(r) => {
                        // A poisoned lock only means another run panicked while adding; the
                        // counts it holds are still sums of whole runs.
                        per_scenario[i]
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .add_run(seed, &r.probes);
                        (!r.passed()).then(|| FailedRun {
                            scenario: s.name(),
                            seed,
                            broken: r
                                .invariants
                                .iter()
                                .filter(|v| !v.holds)
                                .map(|v| v.name.to_string())
                                .collect(),
                            replay: r.replay.clone(),
                        })
                    }
                    Err(_) => Some(FailedRun {
                        scenario: s.name(),
                        seed,
                        broken: vec!["panic".into()],
                        replay: crate::run::replay_command(
                            engine,
                            &s.path.display().to_string(),
                            seed,
                            &bugs,
                            s.buggify_forced,
                        ),
                    }),
                };
                match &bar {
                    Some(bar) => bar.inc(1),
                    None => eprintln!(
                        "{} seed {seed}: {}",
                        s.name(),
                        if failed.is_none() { "pass" } else { "FAIL" }
                    ),
                }
                failed.map(|f| (i, f))
            })
            .collect::<Vec<(usize, FailedRun)>>()
    };
    let mut failed = match rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .thread_name(|i| format!("coverage-{i}"))
        .build()
    {
        Ok(pool) => pool.install(work),
        // Without a pool of our own, rayon's global one still runs every pair.
        Err(_) => work(),
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    failed.sort_by_key(|(i, f)| (*i, f.seed));
    let mut coverage = Coverage::default();
    for c in per_scenario {
        coverage.merge(c.into_inner().unwrap_or_else(|e| e.into_inner()));
    }
    CoverageReport {
        coverage,
        engine: engine.name(),
        seeds: seeds.to_vec(),
        failed_runs: failed.into_iter().map(|(_, f)| f).collect(),
        wall_seconds: started.elapsed().as_secs_f64(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(xs: &[(Probe, u64)]) -> BTreeMap<Probe, u64> {
        xs.iter().copied().collect()
    }

    // Hits sum, seeds count runs, the first seed is the lowest whatever the order runs
    // finished in, and a zero count is not a reach.
    #[test]
    fn runs_add_up_and_the_first_seed_is_the_lowest_in_any_order() {
        let (a, b) = (Probe::ALL[0], Probe::ALL[1]);
        let mut one = Coverage::new("x");
        one.add_run(5, &counts(&[(a, 3)]));
        one.add_run(2, &counts(&[(a, 1), (b, 0)]));
        one.add_run(9, &counts(&[]));
        let mut other = Coverage::new("x");
        other.add_run(9, &counts(&[]));
        other.add_run(2, &counts(&[(a, 1), (b, 0)]));
        other.add_run(5, &counts(&[(a, 3)]));
        assert_eq!(one, other);
        let rows = one.rows();
        let ra = rows.iter().find(|r| r.name == a.name()).expect("listed");
        assert_eq!((ra.hits, ra.seeds, ra.first_seed), (4, 2, Some(2)));
        assert_eq!(one.runs(), 3);
        assert!(one.unreached().contains(&b), "a zero count is no reach");
        assert_eq!(one.reached(), 1);
        assert!(!one.complete());
    }

    // Unreached probes come first, in declaration order, then the reached in declaration
    // order; every probe is listed once.
    #[test]
    fn rows_list_the_unreached_first_and_every_probe_once() {
        let last = *Probe::ALL.last().expect("probes exist");
        let mut c = Coverage::new("x");
        c.add_run(1, &counts(&[(last, 1), (Probe::ALL[0], 2)]));
        let rows = c.rows();
        assert_eq!(rows.len(), Probe::ALL.len());
        let split = rows.iter().position(|r| r.seeds > 0).expect("two reached");
        assert_eq!(split, Probe::ALL.len() - 2);
        assert!(rows[split..].iter().all(|r| r.seeds > 0));
        assert_eq!(rows[0].name, Probe::ALL[1].name());
        assert_eq!(rows[split].name, Probe::ALL[0].name());
        assert_eq!(rows[split + 1].name, last.name());
        let table = c.table();
        let unreached = format!("unreached ({} of", Probe::ALL.len() - 2);
        assert!(table.contains(&unreached), "{table}");
        // The one-liner names ten unreached probes and counts the rest.
        let more = format!(", and {} more", Probe::ALL.len() - 2 - 10);
        assert!(c.one_line().contains(&more), "{}", c.one_line());
    }

    // Merged coverage keeps each probe's first seed with its own scenario, and a probe every
    // scenario reached is complete: the case the CI gate passes on.
    #[test]
    fn merging_scenarios_names_the_first_scenario_and_full_coverage_is_complete() {
        let all: BTreeMap<Probe, u64> = Probe::ALL.iter().map(|&p| (p, 1)).collect();
        let mut a = Coverage::new("a");
        a.add_run(3, &all);
        let mut b = Coverage::new("b");
        b.add_run(1, &counts(&[(Probe::ALL[0], 7)]));
        a.merge(b);
        assert!(a.complete());
        assert!(a.unreached().is_empty());
        assert_eq!(
            a.one_line(),
            format!("probes reached: {0} of {0}", Probe::ALL.len())
        );
        let rows = a.rows();
        assert_eq!(rows[0].name, Probe::ALL[0].name());
        assert_eq!(
            (rows[0].hits, rows[0].seeds, rows[0].first_seed),
            (8, 2, Some(1))
        );
        assert_eq!(rows[0].first_scenario.as_deref(), Some("b"));
        assert_eq!(rows[1].first_scenario.as_deref(), Some("a"));
        let j = serde_json::to_value(&a).expect("serialises");
        assert_eq!(j["unreached"].as_array().map(Vec::len), Some(0));
        assert_eq!(j["probes"][0]["first_seed"], 1);
        assert_eq!(j["runs"], 2);
        let mut report = CoverageReport {
            coverage: a,
            engine: "madsim",
            seeds: vec![1, 2, 3],
            failed_runs: Vec::new(),
            wall_seconds: 0.0,
        };
        assert_eq!(
            report.exit_code(),
            0,
            "every probe reached, every run clean"
        );
        assert!(report.summary().contains(&format!(
            "coverage: {0} of {0} probes reached over 2 scenarios x 3 seeds",
            Probe::ALL.len()
        )));
        report.failed_runs.push(FailedRun {
            scenario: "a".into(),
            seed: 2,
            broken: vec!["no_loss".into()],
            replay: String::new(),
        });
        assert_eq!(report.exit_code(), 1, "a broken run fails the measurement");
        report.failed_runs[0].broken = vec!["panic".into()];
        assert_eq!(report.exit_code(), 3);
        report.failed_runs.clear();
        report.coverage = Coverage::new("a");
        assert_eq!(report.exit_code(), 1, "nothing reached");
    }
}
