//! `chatsim merge`: the JSON of `swarm --shard k/n --json` runs (CI matrix jobs, a Kubernetes
//! indexed Job's pods) combined into the one result an unsharded swarm would have given: the
//! same JSON, one JUnit file, one report. Pieces that do not fit are refused, each refusal
//! naming the file and what is wrong: another binary, engine, bug set, BUGGIFY, seed range or
//! scenario set; a shard missing or given twice; a seed missing or run twice.

use crate::coverage::Coverage;
use crate::run::Engine;
use crate::swarm::{seeds_of, Failure, Gate, SeedOutcome, SeedRange, Shard, SwarmReport};
use chatsim_judge::checkers::CHECKS;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One scenario's swarm as a piece carries it.
#[derive(Deserialize)]
struct ScenarioPiece {
    scenario: String,
    scenario_path: String,
    scenario_hash: String,
    binary: String,
    engine: String,
    bugs: Vec<String>,
    buggify: bool,
    seed_range: SeedRange,
    shard: Shard,
    faults_skipped: usize,
    seeds_with_skips: usize,
    failures: Vec<Failure>,
    wall_seconds: f64,
    seeds: Vec<SeedOutcome>,
    #[serde(skip)]
    coverage: Coverage,
}

/// A piece: a file and the scenario swarms in it (one for a single-scenario swarm).
struct Piece {
    path: PathBuf,
    shard: Shard,
    scenarios: Vec<ScenarioPiece>,
    /// Whether it was a gate (several scenarios, or a folder) rather than one scenario.
    gate: bool,
}

fn scenario_piece(path: &Path, v: &serde_json::Value) -> Result<ScenarioPiece, String> {
    let mut p: ScenarioPiece = serde_json::from_value(v.clone()).map_err(|e| {
        format!(
            "{}: not the JSON of `chatsim swarm --json` from this version: {e}",
            path.display()
        )
    })?;
    p.coverage =
        Coverage::from_json(&v["coverage"]).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(p)
}

fn read_piece(path: &Path) -> Result<Piece, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
    let (scenarios, gate) = match v["scenarios"].as_array() {
        Some(list) if v.get("scenario").is_none() => (
            list.iter()
                .map(|x| scenario_piece(path, x))
                .collect::<Result<Vec<_>, _>>()?,
            true,
        ),
        _ => (vec![scenario_piece(path, &v)?], false),
    };
    let head = scenarios
        .first()
        .ok_or_else(|| format!("{}: a swarm of no scenarios", path.display()))?;
    // A gate's own fields must agree with every scenario in it: an edited or spliced file
    // is refused rather than half believed.
    for s in &scenarios {
        if s.binary != head.binary || s.seed_range != head.seed_range || s.shard != head.shard {
            return Err(format!(
                "{}: its scenarios disagree on binary, seed range or shard",
                path.display()
            ));
        }
    }
    if gate {
        let header: (Option<&str>, Option<SeedRange>, Option<Shard>) = (
            v["binary"].as_str(),
            serde_json::from_value(v["seed_range"].clone()).ok(),
            serde_json::from_value(v["shard"].clone()).ok(),
        );
        if header
            != (
                Some(head.binary.as_str()),
                Some(head.seed_range),
                Some(head.shard),
            )
        {
            return Err(format!(
                "{}: the gate's binary, seed range or shard disagrees with its scenarios'",
                path.display()
            ));
        }
    }
    let shard = head.shard;
    Ok(Piece {
        path: path.to_owned(),
        shard,
        scenarios,
        gate,
    })
}

/// What merging gave: one scenario's swarm, or a gate over several.
pub enum Merged {
    /// The pieces were single-scenario swarms.
    One(Box<SwarmReport>),
    /// The pieces were gates.
    Gate(Gate),
}

fn engine_name(name: &str) -> Result<&'static str, String> {
    [Engine::Madsim, Engine::Turmoil, Engine::Served]
        .into_iter()
        .map(Engine::name)
        .find(|n| *n == name)
        .ok_or_else(|| format!("engine `{name}` is not one this binary knows"))
}

/// Merge the pieces at `paths`.
pub fn merge(paths: &[PathBuf]) -> Result<Merged, String> {
    let pieces: Vec<Piece> = paths
        .iter()
        .map(|p| read_piece(p))
        .collect::<Result<_, _>>()?;
    let first = pieces.first().ok_or("no pieces to merge")?;
    let key = |p: &Piece| -> Vec<(String, String)> {
        p.scenarios
            .iter()
            .map(|s| (s.scenario.clone(), s.scenario_hash.clone()))
            .collect()
    };
    let head = &first.scenarios[0];
    for p in &pieces {
        let s = &p.scenarios[0];
        let name = p.path.display();
        let differs = |what: &str, a: String, b: String| {
            Err(format!(
                "{name}: {what} {a}, but {} has {b}",
                first.path.display()
            ))
        };
        if p.gate != first.gate {
            return differs(
                "is a",
                if p.gate { "gate" } else { "single swarm" }.into(),
                if first.gate {
                    "a gate"
                } else {
                    "a single swarm"
                }
                .into(),
            );
        }
        if s.binary != head.binary {
            return differs("was run by binary", s.binary.clone(), head.binary.clone());
        }
        if s.engine != head.engine {
            return differs("ran on", s.engine.clone(), head.engine.clone());
        }
        if s.bugs != head.bugs {
            return differs(
                "had bugs",
                format!("{:?}", s.bugs),
                format!("{:?}", head.bugs),
            );
        }
        if s.seed_range != head.seed_range {
            let r = |x: SeedRange| format!("{}..{}", x.first, x.last);
            return differs("ran seeds", r(s.seed_range), r(head.seed_range));
        }
        if p.shard.count != first.shard.count {
            return differs(
                "is one of",
                format!("{} shards", p.shard.count),
                format!("{}", first.shard.count),
            );
        }
        if key(p) != key(first) {
            return differs(
                "ran scenarios",
                format!("{:?}", key(p)),
                format!("{:?}", key(first)),
            );
        }
        // The same scenarios in the same order (just checked), each with BUGGIFY as in the
        // first piece: one run with `--buggify` and one without are not shards of one swarm.
        let on = |b: bool| if b { "on" } else { "off" }.to_string();
        for (mine, theirs) in p.scenarios.iter().zip(&first.scenarios) {
            if mine.buggify != theirs.buggify {
                return differs(
                    &format!("ran {} with BUGGIFY", mine.scenario),
                    on(mine.buggify),
                    on(theirs.buggify),
                );
            }
        }
    }
    let count = first.shard.count;
    let mut seen: BTreeMap<u64, &Path> = BTreeMap::new();
    for p in &pieces {
        if let Some(other) = seen.insert(p.shard.index, &p.path) {
            return Err(format!(
                "{}: shard {}/{count} is given twice (also {})",
                p.path.display(),
                p.shard.index,
                other.display()
            ));
        }
    }
    if let Some(missing) = (0..count).find(|i| !seen.contains_key(i)) {
        return Err(format!(
            "shard {missing}/{count} is missing: {} pieces given",
            pieces.len()
        ));
    }
    let range = head.seed_range;
    let engine = engine_name(&head.engine)?;
    let wall = pieces
        .iter()
        .map(|p| p.scenarios[0].wall_seconds)
        .fold(0.0, f64::max);
    let mut merged = Vec::new();
    for (i, _) in first.scenarios.iter().enumerate() {
        let parts: Vec<(&Path, &ScenarioPiece)> = pieces
            .iter()
            .map(|p| (p.path.as_path(), &p.scenarios[i]))
            .collect();
        merged.push(merge_scenario(&parts, range, engine, wall)?);
    }
    if first.gate {
        Ok(Merged::Gate(Gate::of(merged, range, Shard::WHOLE, wall)))
    } else {
        Ok(Merged::One(Box::new(
            merged.pop().expect("a single swarm has one scenario"),
        )))
    }
}

fn merge_scenario(
    parts: &[(&Path, &ScenarioPiece)],
    range: SeedRange,
    engine: &'static str,
    wall: f64,
) -> Result<SwarmReport, String> {
    let head = parts[0].1;
    let mut seeds: BTreeMap<u64, SeedOutcome> = BTreeMap::new();
    let mut failures: Vec<Failure> = Vec::new();
    let mut coverage = Coverage::new(head.scenario.clone());
    let (mut skipped, mut with_skips) = (0, 0);
    for (path, p) in parts {
        for o in &p.seeds {
            if seeds.insert(o.seed, o.clone()).is_some() {
                return Err(format!(
                    "{}: {} seed {} was run twice",
                    path.display(),
                    p.scenario,
                    o.seed
                ));
            }
        }
        failures.extend(p.failures.iter().cloned());
        coverage
            .absorb(&p.coverage)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        skipped += p.faults_skipped;
        with_skips += p.seeds_with_skips;
    }
    let want: BTreeSet<u64> = seeds_of(range, Shard::WHOLE).into_iter().collect();
    let got: BTreeSet<u64> = seeds.keys().copied().collect();
    if let Some(missing) = want.difference(&got).next() {
        return Err(format!(
            "{}: seed {missing} of {}..{} was run by no piece",
            head.scenario, range.first, range.last
        ));
    }
    if let Some(extra) = got.difference(&want).next() {
        return Err(format!(
            "{}: seed {extra} is outside {}..{}",
            head.scenario, range.first, range.last
        ));
    }
    failures.sort_by_key(|f| f.seed);
    let mut invariants: BTreeMap<String, usize> =
        CHECKS.iter().map(|n| (n.to_string(), 0)).collect();
    for o in seeds.values() {
        for name in o.broken.keys() {
            *invariants.entry(name.clone()).or_default() += 1;
        }
    }
    let seeds: Vec<SeedOutcome> = seeds.into_values().collect();
    Ok(SwarmReport {
        scenario: head.scenario.clone(),
        scenario_path: head.scenario_path.clone(),
        scenario_hash: head.scenario_hash.clone(),
        binary: head.binary.clone(),
        seed_range: range,
        shard: Shard::WHOLE,
        engine,
        bugs: head.bugs.clone(),
        buggify: head.buggify,
        seeds_run: seeds.len(),
        seeds_failed: failures.len(),
        failing_seeds: failures.iter().map(|f| f.seed).collect(),
        invariants,
        panicked_seeds: seeds
            .iter()
            .filter(|o| o.panicked)
            .map(|o| o.seed)
            .collect(),
        faults_skipped: skipped,
        seeds_with_skips: with_skips,
        failures,
        wall_seconds: wall,
        coverage,
        seeds,
        per_seed: Vec::new(),
    })
}
