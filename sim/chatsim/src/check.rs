//! `chatsim check` and `chatsim explore`: exhaustive search of the small worlds in
//! `chatsim-models` with stateright, and its Explorer on loopback. Stories of counterexamples
//! are told in the same words as the models' `describe`.

use chatsim_models::models::{by_name, model_for, BIGGER, NAMES};
use chatsim_models::{describe, explain, routine, ChatModel, ALWAYS};
use chatsim_system::bugs::{Bug, Bugs};
use serde::Serialize;
use stateright::{Checker, HasDiscoveries, Model};
use std::time::Instant;

/// Why a check could not start.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// No model of that name.
    #[error("--model: no model named {0:?}; the models are {models}, and one size up {bigger}", models = NAMES.join(", "), bigger = BIGGER.join(", "))]
    UnknownModel(String),
    /// The bug shows in no small model.
    #[error("--bug {0}: no small model shows this bug (yet); `chatsim bugs` names the scenario that does")]
    NoModelFor(Bug),
}

/// In which order to search.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    /// Depth first for a complete check (it visits the same states as breadth first at about
    /// twice the pace: no per-state copy of the path so far, no frontier of whole worlds held
    /// at once), breadth first on one thread for a hunt (`--bug`); either way, a broken
    /// invariant's story is then made the shortest.
    #[default]
    Auto,
    /// Breadth first, and the shortest stories.
    Bfs,
    /// Depth first, hunts too, and the first story found (not the shortest).
    Dfs,
}

/// How to search.
#[derive(Clone, Copy, Debug)]
pub struct Search {
    /// The order.
    pub order: Order,
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
    /// Unique states per wall second of the complete search (a second search that only looks
    /// for the shortest stories is not counted).
    pub states_per_second: f64,
    /// How the states were visited: "bfs" or "dfs".
    pub search: &'static str,
    /// Wall seconds spent after the search making the stories of broken invariants the
    /// shortest (not in `seconds`).
    pub story_seconds: f64,
    /// Whether every reachable state within the bounds was visited (false: it stopped at the
    /// first violation).
    pub complete: bool,
    /// Invariants broken, each with its story (the shortest where it says so: a hunt, or a
    /// complete check that found it, searches breadth first on one thread for it).
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
    /// Whether no shorter story breaks this invariant (told by a one-thread breadth-first
    /// search).
    pub shortest: bool,
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
    let threads = search.threads.max(1);
    let mut o = match (search.order, hunting) {
        (Order::Auto | Order::Bfs, true) => bfs(&m, 1, Some(HasDiscoveries::AnyFailures), 0),
        (Order::Bfs, false) => bfs(&m, threads, None, 0),
        (Order::Dfs, _) | (Order::Auto, false) => dfs(&m, threads, hunting),
    };
    if search.order != Order::Dfs {
        let started = Instant::now();
        for v in &mut o.violations {
            shorten(&m, v);
        }
        o.story_seconds = started.elapsed().as_secs_f64();
    }
    o
}

/// Make `v`'s story the shortest that breaks its invariant. A breadth-first search on one
/// thread first reaches each state by a shortest path, but stateright records the last
/// violating state of the block of states it was checking when it stopped, which can be
/// deeper than the first (and a depth-first story is anything): so search again among
/// shorter stories only, until there is none.
fn shorten(m: &ChatModel, v: &mut Found) {
    let Some(name) = ALWAYS.iter().copied().find(|n| *n == v.invariant) else {
        return;
    };
    loop {
        let steps = v.story.len();
        let until = HasDiscoveries::AnyOf([name].into_iter().collect());
        // A story of k steps ends in a state of depth k + 1; the search skips states at
        // its target depth and beyond.
        let again = bfs(m, 1, Some(until), steps + 1);
        match again.violations.into_iter().find(|s| s.invariant == name) {
            Some(shorter) if shorter.story.len() < steps => *v = shorter,
            _ => break,
        }
    }
    v.shortest = true;
}

/// Breadth first on `threads`, until `until` if given, checking states shallower than `depth`
/// (0: no bound).
fn bfs(m: &ChatModel, threads: usize, until: Option<HasDiscoveries>, depth: usize) -> Outcome {
    let started = Instant::now();
    let mut builder = m.clone().checker().threads(threads).target_max_depth(depth);
    let stopping = until.is_some();
    if let Some(until) = until {
        builder = builder.finish_when(until);
    }
    outcome(m, builder.spawn_bfs().join(), started, stopping, "bfs")
}

fn dfs(m: &ChatModel, threads: usize, hunting: bool) -> Outcome {
    let started = Instant::now();
    let mut builder = m.clone().checker().threads(threads);
    if hunting {
        builder = builder.finish_when(HasDiscoveries::AnyFailures);
    }
    outcome(m, builder.spawn_dfs().join(), started, hunting, "dfs")
}

fn outcome(
    m: &ChatModel,
    checker: impl Checker<ChatModel>,
    started: Instant,
    hunting: bool,
    search: &'static str,
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
                        step.as_ref().map(|s| (describe(m, w, s), routine(w, s)))
                    })
                    .unzip();
                violations.push(Found {
                    invariant: p.name.to_string(),
                    detail: explain(m, p.name, &last),
                    story,
                    routine,
                    shortest: false,
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
        search,
        story_seconds: 0.0,
        complete,
        violations,
        unreached,
    }
}

/// The summary `chatsim check` prints for one model. Steps where only time passes are folded
/// into one line per run of them.
pub fn summary(o: &Outcome) -> String {
    let mut s = format!(
        "chatsim check: model {}{}\n  states generated {}, unique {}, max depth {}, {:.1} s, {:.0} states/s ({}){}\n",
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
        if o.search == "dfs" {
            "depth first"
        } else {
            "breadth first"
        },
        if o.complete { "" } else { " (stopped at the first violation)" }
    );
    for v in &o.violations {
        s += &format!(
            "  {} BROKEN after {} steps{}: {}\n",
            v.invariant,
            v.story.len(),
            if v.shortest {
                " (no shorter story)"
            } else {
                ""
            },
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

#[cfg(test)]
mod tests {
    use super::*;

    fn adversary(bug: Bug) -> ChatModel {
        by_name("adversary", &[bug].into_iter().collect()).expect("the adversary model exists")
    }

    /// The fewest steps after which `name` breaks in `m`, found from below: the smallest bound
    /// on story length under which a breadth-first search finds it at all.
    fn fewest_steps(m: &ChatModel, name: &'static str) -> usize {
        (1..500)
            .find(|k| {
                let until = HasDiscoveries::AnyOf([name].into_iter().collect());
                !bfs(m, 1, Some(until), k + 2).violations.is_empty()
            })
            .expect("the invariant breaks within 500 steps")
    }

    // stateright's breadth-first hunt keeps checking a block of states after the first broken
    // one and records the last, a longer story (29 steps where 19 do for this bug); the
    // story told must be the shortest there is, and a depth-first one may be far longer.
    #[test]
    fn a_hunt_tells_the_shortest_story_there_is() {
        let m = adversary(Bug::TrustClientSender);
        let search = |order| Search { order, threads: 2 };
        let hunt = check(m.clone(), search(Order::Auto), true);
        let [v] = &hunt.violations[..] else {
            panic!("one invariant broken: {:?}", hunt.violations)
        };
        assert_eq!(v.invariant, "authz");
        assert!(v.shortest);
        assert_eq!(v.story.len(), fewest_steps(&m, "authz"));
        let deep = check(m, search(Order::Dfs), true);
        assert!(deep.violations.iter().all(|d| !d.shortest));
        assert!(deep.violations[0].story.len() >= v.story.len());
    }

    // A complete check goes depth first over exactly the states breadth first visits, and a
    // break it finds is still told by its shortest story.
    #[test]
    fn a_complete_check_goes_depth_first_over_the_same_states() {
        let clean = by_name("handover", &Bugs::none()).expect("the handover model exists");
        let auto = check(
            clean.clone(),
            Search {
                order: Order::Auto,
                threads: 2,
            },
            false,
        );
        let wide = check(
            clean,
            Search {
                order: Order::Bfs,
                threads: 1,
            },
            false,
        );
        assert_eq!((auto.search, wide.search), ("dfs", "bfs"));
        assert!(auto.passed() && wide.passed());
        assert_eq!(auto.unique_states, wide.unique_states);

        let m = adversary(Bug::ReceiptFromAnyone);
        let whole = check(
            m.clone(),
            Search {
                order: Order::Auto,
                threads: 2,
            },
            false,
        );
        assert!(whole.complete);
        let v = whole
            .violations
            .iter()
            .find(|v| v.invariant == "authz")
            .expect("authz breaks");
        assert!(v.shortest);
        assert_eq!(v.story.len(), fewest_steps(&m, "authz"));
    }
}
