//! `chatsim check` and `chatsim explore`: exhaustive search of the small worlds in
//! `chatsim-models` with stateright, and its Explorer on loopback. Stories of counterexamples
//! are told in the same words as the models' `describe`.

use chatsim_models::models::{by_name, model_for, NAMES};
use chatsim_models::{describe, explain, routine, ChatModel, ALWAYS};
use chatsim_system::bugs::{Bug, Bugs};
use serde::Serialize;
use stateright::{Checker, HasDiscoveries, Model};
use std::time::Instant;

/// Why a check could not start.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// No model of that name.
    #[error("--model: no model named {0:?}; the models are {models}", models = NAMES.join(", "))]
    UnknownModel(String),
    /// The bug shows in no small model.
    #[error("--bug {0}: no small model shows this bug (yet); `chatsim bugs` names the scenario that does")]
    NoModelFor(Bug),
}

/// How to search.
#[derive(Clone, Copy, Debug)]
pub struct Search {
    /// Depth first (finds some counterexample sooner; not the shortest).
    pub dfs: bool,
    /// Checker threads.
    pub threads: usize,
}

/// One model's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Outcome {
    /// The model.
    pub model: &'static str,
    /// Bugs switched on.
    pub bugs: Vec<String>,
    /// States generated, repeats included.
    pub states: usize,
    /// Unique states.
    pub unique_states: usize,
    /// Deepest path explored.
    pub max_depth: usize,
    /// Wall seconds.
    pub seconds: f64,
    /// Unique states per wall second.
    pub states_per_second: f64,
    /// Whether every reachable state within the bounds was visited (false: it stopped at the
    /// first violation).
    pub complete: bool,
    /// Invariants broken, each with its story (the shortest when a BFS hunt ran on one
    /// thread, as `check --bug` does).
    pub violations: Vec<Found>,
    /// `sometimes` properties never reached (a pass with one of these is vacuous).
    pub unreached: Vec<String>,
}

/// A broken invariant and the path to it.
#[derive(Clone, Debug, Serialize)]
pub struct Found {
    /// The invariant, named as `chatsim run` names it.
    pub invariant: String,
    /// What was wrong in the last state.
    pub detail: String,
    /// One line per step.
    pub story: Vec<String>,
    /// Per step, whether it is background traffic (timers, heartbeats, lease renewals, owner
    /// announcements, alive reports), which the summary folds into a count.
    pub routine: Vec<bool>,
}

impl Outcome {
    /// Whether the model passed: no invariant broken and every `sometimes` reached.
    pub fn passed(&self) -> bool {
        self.violations.is_empty() && self.unreached.is_empty()
    }
}

/// The models a `check` runs: the one named, the one a bug shows in, or all.
pub fn models(model: Option<&str>, bugs: &Bugs) -> Result<Vec<ChatModel>, CheckError> {
    let names: Vec<&str> = match (model, bugs.iter().next()) {
        (Some(name), _) => vec![name],
        (None, Some(bug)) => vec![model_for(bug).ok_or(CheckError::NoModelFor(bug))?],
        (None, None) => NAMES.to_vec(),
    };
    names
        .into_iter()
        .map(|n| by_name(n, bugs).ok_or_else(|| CheckError::UnknownModel(n.to_string())))
        .collect()
}

/// Search `m` completely (or, with bugs on, until the first violation).
pub fn check(m: ChatModel, search: Search, hunting: bool) -> Outcome {
    let started = Instant::now();
    // stateright's BFS finds the shortest path only on one thread; a hunt wants that story.
    let threads = if hunting && !search.dfs {
        1
    } else {
        search.threads.max(1)
    };
    let mut builder = m.clone().checker().threads(threads);
    if hunting {
        builder = builder.finish_when(HasDiscoveries::AnyFailures);
    }
    if search.dfs {
        outcome(m, builder.spawn_dfs().join(), started, hunting)
    } else {
        outcome(m, builder.spawn_bfs().join(), started, hunting)
    }
}

fn outcome(
    m: ChatModel,
    checker: impl Checker<ChatModel>,
    started: Instant,
    hunting: bool,
) -> Outcome {
    let seconds = started.elapsed().as_secs_f64();
    let discoveries = checker.discoveries();
    // A hunt stops at its first counterexample; without one it visited everything.
    let complete = !hunting || !discoveries.keys().any(|name| ALWAYS.contains(name));
    let mut violations = Vec::new();
    let mut unreached = Vec::new();
    for p in m.properties() {
        let found = discoveries.get(p.name);
        let is_invariant = ALWAYS.contains(&p.name);
        match (is_invariant, found) {
            (true, Some(path)) => {
                let last = path.last_state().clone();
                let (story, routine) = path
                    .clone()
                    .into_vec()
                    .iter()
                    .filter_map(|(w, step)| {
                        step.as_ref().map(|s| (describe(&m, w, s), routine(w, s)))
                    })
                    .unzip();
                violations.push(Found {
                    invariant: p.name.to_string(),
                    detail: explain(&m, p.name, &last),
                    story,
                    routine,
                });
            }
            (false, None) if complete => unreached.push(p.name.to_string()),
            _ => {}
        }
    }
    let unique = checker.unique_state_count();
    Outcome {
        model: m.name,
        bugs: m.topo.bugs.iter().map(|b| b.to_string()).collect(),
        states: checker.state_count(),
        unique_states: unique,
        max_depth: checker.max_depth(),
        seconds,
        states_per_second: unique as f64 / seconds.max(1e-9),
        complete,
        violations,
        unreached,
    }
}

/// The summary `chatsim check` prints for one model. Steps where only time passes are folded
/// into one line per run of them.
pub fn summary(o: &Outcome) -> String {
    let mut s = format!(
        "chatsim check: model {}{}\n  states generated {}, unique {}, max depth {}, {:.1} s, {:.0} states/s{}\n",
        o.model,
        if o.bugs.is_empty() {
            String::new()
        } else {
            format!(" with --bug {}", o.bugs.join(" --bug "))
        },
        o.states,
        o.unique_states,
        o.max_depth,
        o.seconds,
        o.states_per_second,
        if o.complete { "" } else { " (stopped at the first violation)" }
    );
    for v in &o.violations {
        s += &format!(
            "  {} BROKEN after {} steps: {}\n",
            v.invariant,
            v.story.len(),
            v.detail
        );
        let mut folded = 0;
        for (i, line) in v.story.iter().enumerate() {
            if v.routine.get(i).copied().unwrap_or(false) {
                folded += 1;
                continue;
            }
            if folded > 0 {
                s += &format!("        ({folded} routine steps: timers, heartbeats, leases)\n");
                folded = 0;
            }
            s += &format!("    {:>3}. {line}\n", i + 1);
        }
        if folded > 0 {
            s += &format!("        ({folded} routine steps: timers, heartbeats, leases)\n");
        }
    }
    for u in &o.unreached {
        s += &format!("  never reached: {u} (the search is too narrow to mean anything)\n");
    }
    s += &format!("  verdict: {}\n", if o.passed() { "PASS" } else { "FAIL" });
    s
}

/// Serve stateright's Explorer for `m` on `addr` (blocks while it serves).
pub fn explore(m: ChatModel, addr: &str) -> std::io::Result<()> {
    use std::net::ToSocketAddrs;
    let resolved = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{addr} names no address")))?;
    // Bind first, so a taken port is a clear error rather than a panic inside the Explorer.
    drop(std::net::TcpListener::bind(resolved)?);
    eprintln!(
        "exploring model {}: point a browser at http://{resolved}/ (Ctrl-C to stop)",
        m.name
    );
    m.checker().serve(resolved);
    Ok(())
}
