//! The `chatsim` command line. Exit codes: 0 every invariant holds, 1 an invariant is broken,
//! 2 bad input or usage, 3 the simulation itself failed (a panic, with the seed to replay).

// Seeds allocate and free small objects by the million (frames, effects, madsim's tasks and
// wakers); mimalloc's thread-local free lists do that in fewer instructions than glibc's
// bins (measured side by side in reports/bench).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use chatsim::coverage::{judged_scenarios, measure};
use chatsim::merge::Merged;
use chatsim::output::{json, replay_log, summary};
use chatsim::report::{default_run_dir, write_atomic, write_run_report, write_swarm_report};
use chatsim::run::{run_seed_keeping, Engine, Keep};
use chatsim::scenario::{FaultKind, Scenario, ScenarioError};
use chatsim::shrink::{shrink, ShrinkError};
use chatsim::swarm::{
    junit as junit_xml, seeds_of, summary as swarm_summary, SeedRange, Shard as SwarmShard,
};
use chatsim_system::bugs::{Bug, Bugs, ZOO};
use clap::{Parser, Subcommand};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Deterministic simulation of a WhatsApp-style chat backend, attacked with faults and judged
/// against the guarantees users care about.
#[derive(Parser)]
#[command(name = "chatsim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Run a scenario even if it looks like it needs more memory than this machine has
    /// available (see `CHATSIM_MEMORY_LIMIT_MIB`).
    #[arg(long, global = true)]
    force: bool,
    /// A folder of one's own scenarios: a scenario named without a path (`chatsim run smoke`)
    /// is looked for here before the ones bundled into the binary.
    #[arg(long, global = true, value_name = "DIR", env = "CHATSIM_SCENARIOS")]
    scenarios: Option<PathBuf>,
}

/// Set once from `--force` before any scenario is loaded.
static FORCE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
/// Set once from `--scenarios` (or `CHATSIM_SCENARIOS`) before any scenario is loaded.
static OWN: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();

/// The folder of one's own scenarios, if one was given.
fn own() -> Option<&'static Path> {
    OWN.get().and_then(Option::as_deref)
}

/// Where scenario listings come from: one's own folder, else `scenarios/` (bundled when
/// absent).
fn scenarios_dir() -> PathBuf {
    own().map_or_else(|| PathBuf::from("scenarios"), Path::to_path_buf)
}

#[derive(Subcommand)]
enum Command {
    /// Run one seed of a scenario and judge it.
    Run {
        /// The scenario file (see `chatsim scenarios`).
        scenario: PathBuf,
        /// The seed: the same scenario and seed always give the same trace hash.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print one JSON object instead of the summary.
        #[arg(long)]
        json: bool,
        /// Switch on a bug-zoo mistake (repeatable; see `chatsim bugs`).
        #[arg(long = "bug", value_name = "NAME")]
        bugs: Vec<Bug>,
        /// Write the report here (default: reports/<scenario>-<seed>/).
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
        /// Write no report.
        #[arg(long, conflicts_with = "report")]
        no_report: bool,
        /// The message the sequence diagram follows, e.g. u3.d0#7 (default: the first
        /// violation's message).
        #[arg(long, value_name = "ID")]
        trace_message: Option<String>,
        /// BUGGIFY: on half the seeds shrink some of the system's bounds (pages, fan-out steps,
        /// windows, sync time), drawn per seed, even if the scenario file does not ask for it.
        #[arg(long)]
        buggify: bool,
        /// The simulator: madsim (the main engine) or turmoil (the second, whose verdicts
        /// must agree).
        #[arg(long, value_enum, default_value_t = Engine::Madsim)]
        engine: Engine,
    },
    /// Print a run's history as a readable log, one event per line, simulated time first.
    Replay {
        /// The scenario file.
        scenario: PathBuf,
        /// The seed to replay.
        #[arg(long)]
        seed: u64,
        /// Bug-zoo mistakes that were on (repeatable).
        #[arg(long = "bug", value_name = "NAME")]
        bugs: Vec<Bug>,
        /// BUGGIFY: on half the seeds shrink some of the system's bounds (pages, fan-out steps,
        /// windows, sync time), drawn per seed, even if the scenario file does not ask for it.
        #[arg(long)]
        buggify: bool,
        /// The simulator: madsim (the main engine) or turmoil (the second, whose verdicts
        /// must agree).
        #[arg(long, value_enum, default_value_t = Engine::Madsim)]
        engine: Engine,
    },
    /// Run many seeds of a scenario in parallel and count what broke. Several scenarios, or a
    /// folder (its judged scenarios), run as one gate on one pool: a summary, JSON and JUnit
    /// over all of them.
    Swarm {
        /// Scenario files, names or folders.
        #[arg(required = true, num_args = 1..)]
        scenarios: Vec<PathBuf>,
        /// Seeds to run, inclusive: `1..100` (default 1..20; with --for, the seeds each
        /// scenario draws from in order, default 1..1000000000).
        #[arg(long)]
        seeds: Option<SeedRange>,
        /// Size the gate in time instead: run each scenario's seeds in order until this much
        /// wall has passed (`900s`, `15m`, `1h`), each scenario an equal share of the workers'
        /// time, then say which seeds each ran.
        #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration, conflicts_with = "shard")]
        budget: Option<f64>,
        /// Worker threads (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
        /// Switch on a bug-zoo mistake (repeatable).
        #[arg(long = "bug", value_name = "NAME")]
        bugs: Vec<Bug>,
        /// Print one JSON object instead of the summary.
        #[arg(long)]
        json: bool,
        /// Also write JUnit XML here: one testcase per seed and invariant.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Run only every N-th seed starting at I (`I/N`, 0 <= I < N) to split a range over
        /// jobs; `N` alone takes I from JOB_COMPLETION_INDEX (a Kubernetes indexed Job).
        #[arg(long)]
        shard: Option<String>,
        /// Write the swarm report here (default: reports/<scenario>-swarm/).
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
        /// Write no report.
        #[arg(long, conflicts_with = "report")]
        no_report: bool,
        /// BUGGIFY: on half the seeds shrink some of the system's bounds (pages, fan-out steps,
        /// windows, sync time), drawn per seed, even if the scenario file does not ask for it.
        #[arg(long)]
        buggify: bool,
        /// The simulator: madsim (the main engine) or turmoil (the second, whose verdicts
        /// must agree).
        #[arg(long, value_enum, default_value_t = Engine::Madsim)]
        engine: Engine,
    },
    /// Run seeds of scenarios (default: every judged one in scenarios/) and list which coverage
    /// probes they reached, unreached first. Exit 1 when a probe is unreached or a run broke an
    /// invariant, 3 when a run panicked.
    Coverage {
        /// Scenario files (default: every judged scenario in scenarios/, that is all but
        /// bench-* and scale-*).
        scenarios: Vec<PathBuf>,
        /// Seeds each scenario runs, inclusive: `1..3`.
        #[arg(long, default_value = "1..3")]
        seeds: SeedRange,
        /// Worker threads (default: one per core).
        #[arg(long)]
        jobs: Option<usize>,
        /// Print one JSON object (`probes`, `unreached`, ...) instead of the table.
        #[arg(long)]
        json: bool,
        /// BUGGIFY: on half the seeds shrink some of the system's bounds (pages, fan-out steps,
        /// windows, sync time), drawn per seed, even if the scenario file does not ask for it.
        #[arg(long)]
        buggify: bool,
        /// The simulator: madsim (the main engine) or turmoil (the second, whose verdicts
        /// must agree).
        #[arg(long, value_enum, default_value_t = Engine::Madsim)]
        engine: Engine,
    },
    /// Cut a failing seed down to a minimal explicit scenario that still breaks the same
    /// invariant, write it, and tell its story.
    Shrink {
        /// The scenario file.
        scenario: PathBuf,
        /// The failing seed.
        #[arg(long)]
        seed: u64,
        /// Bug-zoo mistakes that were on (repeatable).
        #[arg(long = "bug", value_name = "NAME")]
        bugs: Vec<Bug>,
        /// The invariant to keep broken (default: the first one the seed breaks).
        #[arg(long)]
        invariant: Option<String>,
        /// Where to write the shrunk scenario (default: reports/<scenario>-<seed>-shrunk.toml).
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// BUGGIFY, as `run --buggify` (the failing run's knobs come from its seed).
        #[arg(long)]
        buggify: bool,
        /// Runs tried at once (default: one per core). The shrunk scenario is the same at
        /// any number: removals are judged in order, the later ones only speculation.
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Combine the `--json` output of `swarm --shard k/n` runs into the one result an unsharded
    /// swarm gives: the same summary and JSON, one JUnit file, one report. Refuses pieces that
    /// do not fit (another binary, engine, bug set, seed range or scenario set; a shard
    /// missing or repeated).
    Merge {
        /// The pieces: JSON files written by `chatsim swarm ... --shard k/n --json`.
        #[arg(required = true, num_args = 1..)]
        pieces: Vec<PathBuf>,
        /// Print the merged JSON instead of the summary.
        #[arg(long)]
        json: bool,
        /// Also write JUnit XML here.
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Write the swarm report here (default: reports/<scenario>-swarm/, or
        /// reports/gate-swarm/ for several scenarios).
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
        /// Write no report.
        #[arg(long, conflicts_with = "report")]
        no_report: bool,
    },
    /// Run a zoo bug's scenario seed by seed until its invariant breaks, then shrink that seed.
    /// Exit 1 when the bug was caught, 0 when the budget ran out first.
    Hunt {
        /// The bug to hunt.
        #[arg(long)]
        bug: Bug,
        /// Seeds to try, from 1.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        /// Where to write the shrunk scenario.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        /// Runs tried at once, seeds and shrink steps (default: one per core). What is
        /// caught and kept is the same at any number.
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Measure the simulator against its engine's floor, side by side in one process: bare
    /// nodes replaying the same frames, the full system with faults off, and with faults on.
    Bench {
        /// The small version (`scenarios/bench-quick.toml`), for CI; no timing is asserted.
        #[arg(long)]
        quick: bool,
        /// Another scenario to measure.
        #[arg(long, value_name = "FILE", conflicts_with = "quick")]
        scenario: Option<PathBuf>,
        /// The seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The engine to measure, against its own floor: madsim, or turmoil (bare turmoil hosts
        /// for the floor).
        #[arg(long, value_enum, default_value_t = Engine::Madsim)]
        engine: Engine,
        /// Time the floor and the full system (faults off) this many times, one after the
        /// other, and report each by its median round: on a shared machine one round's ratio
        /// can be a third off.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=50))]
        rounds: u32,
        /// Print one JSON object instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Explore small worlds exhaustively (stateright) over the same state machines; with
    /// `--bug`, find the shortest story that shows it.
    Check {
        /// One model (direct, read, reconnect, group, failover, handover, adversary; default: all, or the bug's; one size up, only when named: direct-3, direct-2-faults).
        #[arg(long, value_name = "NAME")]
        model: Option<String>,
        /// Switch on a bug-zoo mistake and stop at its first counterexample.
        #[arg(long = "bug", value_name = "NAME")]
        bugs: Vec<Bug>,
        /// Breadth first throughout (a hunt always is: the shortest counterexample). By default a
        /// complete check goes depth first, about twice as fast over the same states, and only
        /// searches breadth first again for the shortest story if an invariant broke.
        #[arg(long, conflicts_with = "dfs")]
        bfs: bool,
        /// Depth first throughout, hunts too (some counterexample, not the shortest).
        #[arg(long)]
        dfs: bool,
        /// Checker threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
        /// Print one JSON object per model instead of the summary.
        #[arg(long)]
        json: bool,
    },
    /// Serve stateright's Explorer for a model on loopback, to walk its states in a browser.
    Explore {
        /// The model (default: direct, or the bug's).
        #[arg(long, value_name = "NAME")]
        model: Option<String>,
        /// Switch on a bug-zoo mistake.
        #[arg(long = "bug", value_name = "NAME")]
        bugs: Vec<Bug>,
        /// Where to listen.
        #[arg(long, default_value = "127.0.0.1:3000")]
        addr: String,
    },
    /// Serve the chat backend for real: the same machines on real tokio, phones over
    /// WebSocket, everything on loopback. Stops on Ctrl-C or SIGTERM, finishing what is in
    /// flight first. Log detail: RUST_LOG (e.g. RUST_LOG=debug).
    Serve {
        #[command(flatten)]
        deployment: chatsim::live::DeploymentArgs,
        /// Run only this host (repeatable: gateway-1, session, shard-1, storage-1, push); the
        /// others are expected at their ports, run by other `chatsim serve --role` processes.
        #[arg(long = "role", value_name = "HOST")]
        roles: Vec<String>,
        /// How long to keep finishing in-flight work after the stop signal (ms).
        #[arg(long, default_value_t = 1000)]
        grace_ms: u64,
        /// The data folder: every synced write is kept there and replayed on the next start
        /// (created if missing; it must have been written for the same deployment).
        #[arg(long, default_value = "chatsim-data", conflicts_with = "memory")]
        data: PathBuf,
        /// Keep nothing on disk: a restart starts empty.
        #[arg(long)]
        memory: bool,
        /// Keep the session table on this Redis (e.g. redis://127.0.0.1:6379) instead of with
        /// the rest of the data.
        #[arg(long, value_name = "URL")]
        sessions: Option<String>,
        /// Phone connections each gateway holds at most; past it a connection gets close code
        /// 1013 (try again later).
        #[arg(long, default_value_t = chatsim_server::DEFAULT_PHONE_CONNECTIONS_MAX)]
        connections_max: u32,
        /// Switch on a bug-zoo mistake in every server machine (never in production: it is
        /// there to watch `chatsim load` catch it on real sockets; its phones must have it
        /// too, and `load --bug` gives it to both).
        #[arg(long = "bug", value_name = "NAME")]
        bugs: Vec<Bug>,
    },
    /// Be one phone of a running `chatsim serve` in the terminal (type `help` there): send,
    /// see ✓ ✓✓ and read, go offline and come back to the backlog.
    Client {
        /// Which device: u1 (user 1's phone) or u1.d1 (its first companion).
        device: String,
        #[command(flatten)]
        deployment: chatsim::live::DeploymentArgs,
        /// The phone's own storage: the message id counter, so a client started again never
        /// reuses an id (created if missing).
        #[arg(long, default_value = "chatsim-client")]
        state: PathBuf,
    },
    /// Print what a client written elsewhere needs to be one device of a `chatsim serve`
    /// deployment, as JSON: gateway URLs, its token, its X25519 key pair and every device's
    /// public key (a stand-in for provisioning: see docs/protocol.md).
    Keys {
        /// Which device: u1 (user 1's phone) or u1.d1 (its first companion).
        device: String,
        #[command(flatten)]
        deployment: chatsim::live::DeploymentArgs,
    },
    /// Load a chat server with thousands of real WebSocket phones on a fixed schedule (an open
    /// model: latencies run from each send's intended time), then judge what every phone saw
    /// with the same checkers as a simulated run. Starts its own `chatsim serve` unless given
    /// --target. Raises its open-file limit to the hard limit. Exit 1 if the verdict fails.
    Load {
        /// A running server's gateway 1 (its deployment flags must match these: --devices at
        /// most its --users, the same --seed, --gateways and --shards). Without it, load
        /// starts a server at --addr for the run and stops it after.
        #[arg(long)]
        target: Option<std::net::SocketAddr>,
        /// The running server's process id, to read its memory and CPU (a server load starts
        /// itself is always measured).
        #[arg(long)]
        server_pid: Option<u32>,
        /// Measure the floor instead: a bare WebSocket relay (no chat logic) under the same
        /// schedule (`chatsim relay`; started at --addr unless --target).
        #[arg(long)]
        floor: bool,
        /// Where a server load starts itself listens (gateway 1; loopback).
        #[arg(long, default_value = "127.0.0.1:7600")]
        addr: std::net::SocketAddr,
        /// Keep the started server's data in memory, not on disk.
        #[arg(long)]
        server_memory: bool,
        /// After the chat run, run the same schedule through the bare relay (started at
        /// --floor-addr) and print each figure beside the floor's, as a ratio.
        #[arg(long, conflicts_with = "floor")]
        beside_floor: bool,
        /// Where --beside-floor starts the relay (loopback).
        #[arg(long, default_value = "127.0.0.1:7500")]
        floor_addr: std::net::SocketAddr,
        /// Phones, one user each.
        #[arg(long, default_value_t = 1000)]
        devices: u32,
        /// Messages offered per second.
        #[arg(long, default_value_t = 500.0)]
        rate: f64,
        /// Seconds of offered load.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Groups created before the load.
        #[arg(long, default_value_t = 20)]
        groups: u32,
        /// Members per group.
        #[arg(long, default_value_t = 8)]
        group_size: u32,
        /// Percent of texts sent to a group (by its members).
        #[arg(long, default_value_t = 20)]
        group_share: u8,
        /// Percent of phones that go offline once during the load and come back.
        #[arg(long, default_value_t = 5)]
        away_share: u8,
        /// Seconds each of them stays away.
        #[arg(long, default_value_t = 2.0)]
        away_secs: f64,
        /// Seconds after the load within which every text must be acked and shown (the
        /// verdict's liveness bound).
        #[arg(long, default_value_t = 10.0)]
        settle: f64,
        /// Phones that connect at once.
        #[arg(long, default_value_t = 500)]
        connect_batch: u32,
        /// Bytes per text.
        #[arg(long, default_value_t = 64)]
        body_bytes: usize,
        /// Draws the schedule (and the deployment's keys).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Gateways of the deployment.
        #[arg(long, default_value_t = 2)]
        gateways: u16,
        /// Chat shards of the deployment.
        #[arg(long, default_value_t = 2)]
        shards: u16,
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
        /// Report folder (default reports/load/<target>-<devices>x<rate>).
        #[arg(long)]
        out: Option<PathBuf>,
        /// SIGKILL the server this many times during the load (aiming mid group fan-out, mid
        /// inbox drain and anywhere, in turn) and start it again on the same data: the
        /// verdict then judges durability too.
        #[arg(long, default_value_t = 0, conflicts_with = "target")]
        kills: u32,
        /// Switch on a bug-zoo mistake in the server load starts and in its phones, to watch
        /// the verdict catch it over real sockets.
        #[arg(long = "bug", value_name = "NAME", conflicts_with_all = ["target", "floor"])]
        bugs: Vec<Bug>,
    },
    /// A bare WebSocket relay with no chat logic: the floor `chatsim load --floor` measures
    /// chatsim against. Runs until stopped.
    Relay {
        /// Where to listen (loopback).
        #[arg(long, default_value = "127.0.0.1:7500")]
        addr: std::net::SocketAddr,
    },
    /// List the bug zoo: each classic mistake, the invariant that catches it, and the
    /// scenario that shows it.
    Bugs,
    /// Lessons for system-design interviews: with no name, list them; with a name, run the
    /// broken and the right design side by side on the same seed, tell the story, and write a
    /// lesson page (exit 0 when the lesson showed what it teaches).
    Learn {
        /// The lesson (see `chatsim learn`).
        name: Option<String>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
        /// Write the lesson page here (default: reports/learn/NAME/).
        #[arg(long, value_name = "DIR")]
        report: Option<PathBuf>,
    },
    /// The design's back-of-envelope estimates, with their derivation; every assumption is a
    /// flag. `--check` runs a scaled world and compares predicted with measured figures (exit 1
    /// when one is outside its tolerance).
    Capacity {
        /// The assumptions (each a flag; the defaults are the design page's figures).
        #[command(flatten)]
        assumptions: chatsim::capacity::Assumptions,
        /// Run a scaled world and compare the formulas' predictions with what it measured.
        #[arg(long)]
        check: bool,
        /// Users in the scaled world of `--check`.
        #[arg(long, default_value_t = 500)]
        check_users: u32,
        /// The scaled world's seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List the scenario files in a folder with their one-line descriptions (by default
    /// `scenarios/`, or the ones bundled into the binary when there is no such folder here).
    Scenarios {
        /// The folder to list (default: `--scenarios`, else `scenarios/`).
        dir: Option<PathBuf>,
    },
}

const EXIT_BROKEN: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;
const EXIT_ENGINE: u8 = 3;

fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

/// The scenario with BUGGIFY forced on when the command line asks for it, unless its file
/// says it must never buggify: then it runs as written, and standard error says why, so a
/// `swarm scenarios --buggify` gate judges the others without false alarms from it.
fn buggified(mut s: Scenario, on: bool) -> Scenario {
    if on && !s.buggify {
        if let Some(why) = &s.buggify_never {
            eprintln!(
                "note: {}: not buggified, its file says never: {why}",
                s.name()
            );
            return s;
        }
        s.buggify = true;
        s.buggify_forced = true;
    }
    s
}

/// A progress bar on standard error for a single run that takes more than a couple of
/// seconds: simulated time against the plan's end, read from the runs' shared clock
/// ([`chatsim::record::PROGRESS_MS`]). Shown only on a terminal; cleared when dropped.
struct Progress {
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    shown: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    fn start(end_ms: u64) -> Progress {
        use std::io::IsTerminal;
        use std::sync::atomic::Ordering;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        chatsim::record::PROGRESS_MS.store(0, Ordering::Relaxed);
        let shown = std::io::stderr().is_terminal().then(|| {
            let done = done.clone();
            std::thread::spawn(move || {
                let started = std::time::Instant::now();
                while started.elapsed() < std::time::Duration::from_secs(2) {
                    if done.load(Ordering::Relaxed) {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                let bar = indicatif::ProgressBar::new(end_ms.max(1));
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} [{elapsed_precise}] {bar:40} simulated {msg}",
                    )
                    .expect("the template is valid"),
                );
                bar.set_message(format!("of {:.1} s", end_ms as f64 / 1000.0));
                while !done.load(Ordering::Relaxed) {
                    let t = chatsim::record::PROGRESS_MS.load(Ordering::Relaxed);
                    bar.set_position(t.min(end_ms));
                    bar.set_message(format!(
                        "{:.1} s of {:.1} s",
                        t as f64 / 1000.0,
                        end_ms as f64 / 1000.0
                    ));
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                bar.finish_and_clear();
            })
        });
        Progress { done, shown }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.done.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.shown.take() {
            let _ = t.join();
        }
    }
}

fn load(path: &Path) -> Result<Scenario, ExitCode> {
    let s =
        chatsim::catalog::load(path, own()).map_err(|e: ScenarioError| fail(EXIT_BAD_INPUT, e))?;
    if FORCE.get().copied().unwrap_or(false) {
        return Ok(s);
    }
    let Some((available, source)) = chatsim::live::memory_available() else {
        return Ok(s);
    };
    let need = s.memory_estimate(true);
    if need.bytes > available {
        let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
        let (field, part) = need.biggest;
        return Err(fail(
            EXIT_BAD_INPUT,
            format!(
                "{}: {field}: a run would need about {:.1} GiB ({:.1} GiB of it for {field}), more than the {:.1} GiB available ({source}); lower it, or pass --force to run anyway",
                path.display(),
                gib(need.bytes),
                gib(part),
                gib(available)
            ),
        ));
    }
    Ok(s)
}

/// A wall-clock length as `--for` takes it: a number of seconds, minutes or hours (`900s`,
/// `15m`, `1.5h`; a bare number is seconds).
fn parse_duration(s: &str) -> Result<f64, String> {
    let (number, unit) = match s.trim().strip_suffix(['s', 'm', 'h']) {
        Some(n) => (n, s.trim().chars().last().unwrap_or('s')),
        None => (s.trim(), 's'),
    };
    let n: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration: write e.g. 900s, 15m or 1h"))?;
    if !n.is_finite() || n <= 0.0 {
        return Err(format!("`{s}`: a duration must be above zero"));
    }
    Ok(n * match unit {
        'm' => 60.0,
        'h' => 3600.0,
        _ => 1.0,
    })
}

/// What a swarm or a merge ends with: JUnit, the report, the summary or JSON, the exit code
/// (3 when a seed panicked, 1 when one broke an invariant).
fn finish_swarm(
    outcome: Merged,
    scenarios: &[Scenario],
    junit: Option<PathBuf>,
    report_dir: Option<PathBuf>,
    no_report: bool,
    as_json: bool,
) -> ExitCode {
    let reports: Vec<&chatsim::swarm::SwarmReport> = match &outcome {
        Merged::One(r) => vec![r.as_ref()],
        Merged::Gate(g) => g.scenarios.iter().collect(),
    };
    if let Some(path) = junit {
        let xml = match &outcome {
            Merged::One(r) => junit_xml(r),
            Merged::Gate(g) => chatsim::swarm::junit_of(&g.scenarios, g.wall_seconds),
        };
        if let Err(e) = write_atomic(&path, xml) {
            return fail(
                EXIT_BAD_INPUT,
                format!("{}: cannot write JUnit XML: {e}", path.display()),
            );
        }
    }
    if !no_report {
        let written = match &outcome {
            Merged::One(r) => {
                let dir = report_dir
                    .unwrap_or_else(|| PathBuf::from(format!("reports/{}-swarm", r.scenario)));
                write_swarm_report(&dir, r, &scenarios[0]).map(|()| dir)
            }
            Merged::Gate(g) => {
                let dir = report_dir.unwrap_or_else(|| PathBuf::from("reports/gate-swarm"));
                chatsim::report::write_gate_report(&dir, g, scenarios).map(|()| dir)
            }
        };
        match written {
            Ok(dir) => eprintln!("report: {}", dir.join("index.html").display()),
            Err(e) => return fail(EXIT_BAD_INPUT, format!("cannot write the report: {e}")),
        }
    }
    if as_json {
        let text = match &outcome {
            Merged::One(r) => serde_json::to_string_pretty(r),
            Merged::Gate(g) => serde_json::to_string_pretty(g),
        };
        println!("{}", text.expect("reports are serialisable"));
    } else {
        match &outcome {
            Merged::One(r) => print!("{}", swarm_summary(r)),
            Merged::Gate(g) => print!("{}", g.summary()),
        }
    }
    if reports.iter().any(|r| !r.panicked_seeds.is_empty()) {
        ExitCode::from(EXIT_ENGINE)
    } else if reports
        .iter()
        .any(|r| r.seeds_failed > 0 || r.seeds_run == 0)
    {
        ExitCode::from(EXIT_BROKEN)
    } else {
        ExitCode::SUCCESS
    }
}

/// Run `f` on a pool of `jobs` worker threads (default: one per core), which is how wide the
/// shrinker and the hunt try runs at once.
fn in_pool<T: Send>(jobs: Option<usize>, f: impl FnOnce() -> T + Send) -> T {
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .thread_name(|i| format!("shrink-{i}"))
        .build()
        .expect("the OS can start worker threads")
        .install(f)
}

fn shrink_and_write(
    s: &Scenario,
    seed: u64,
    bugs: &Bugs,
    invariant: Option<&str>,
    out: Option<PathBuf>,
) -> ExitCode {
    match shrink(s, seed, bugs, invariant) {
        Ok(x) => write_shrunk(s, seed, bugs, &x, out),
        Err(e @ ShrinkError::Run(_)) => fail(EXIT_ENGINE, e),
        Err(e) => fail(EXIT_BAD_INPUT, e),
    }
}

fn write_shrunk(
    s: &Scenario,
    seed: u64,
    bugs: &Bugs,
    shrunk: &chatsim::shrink::Shrunk,
    out: Option<PathBuf>,
) -> ExitCode {
    let out =
        out.unwrap_or_else(|| PathBuf::from(format!("reports/{}-{seed}-shrunk.toml", s.name())));
    if let Err(e) = write_atomic(&out, &shrunk.text) {
        return fail(
            EXIT_BAD_INPUT,
            format!("{}: cannot write: {e}", out.display()),
        );
    }
    println!(
        "shrunk {} seed {seed}: {} events -> {} ({} runs); `{}` still breaks",
        s.name(),
        shrunk.events_before,
        shrunk.events_after,
        shrunk.runs,
        shrunk.invariant
    );
    for line in &shrunk.story {
        println!("  {line}");
    }
    let flags: String = bugs.iter().map(|b| format!(" --bug {b}")).collect();
    println!(
        "written to {}; replay: cargo run --release -p chatsim -- run {} --seed {seed}{flags}",
        out.display(),
        out.display()
    );
    ExitCode::from(EXIT_BROKEN)
}

/// Structured logs on stderr for the real server, at info unless RUST_LOG says otherwise.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_BAD_INPUT } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    FORCE.get_or_init(|| cli.force);
    OWN.get_or_init(|| cli.scenarios.clone());
    match cli.command {
        Command::Run {
            scenario,
            seed,
            json: as_json,
            bugs,
            report,
            no_report,
            trace_message,
            engine,
            buggify,
        } => {
            let s = match load(&scenario) {
                Ok(s) => buggified(s, buggify),
                Err(code) => return code,
            };
            // The frame log only feeds the report's sequence diagram.
            let keep = if no_report {
                Keep::VERDICT
            } else {
                Keep::REPORT
            };
            let progress = Progress::start(s.end_ms());
            let ran = run_seed_keeping(engine, &s, seed, &bugs.into_iter().collect(), keep);
            drop(progress);
            match ran {
                Ok(r) => {
                    if as_json {
                        println!("{}", json(&r));
                    } else {
                        print!("{}", summary(&r));
                    }
                    if !no_report {
                        let dir = report.unwrap_or_else(|| default_run_dir(&r));
                        match write_run_report(&dir, &r, &s, trace_message.as_deref()) {
                            Ok(()) => eprintln!("report: {}", dir.join("index.html").display()),
                            Err(e) => {
                                return fail(
                                    EXIT_BAD_INPUT,
                                    format!("cannot write the report: {e}"),
                                )
                            }
                        }
                    }
                    if r.passed() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(EXIT_BROKEN)
                    }
                }
                Err(e) => fail(EXIT_ENGINE, e),
            }
        }
        Command::Replay {
            scenario,
            seed,
            bugs,
            engine,
            buggify,
        } => {
            let s = match load(&scenario) {
                Ok(s) => buggified(s, buggify),
                Err(code) => return code,
            };
            let bugs = bugs.into_iter().collect();
            match run_seed_keeping(engine, &s, seed, &bugs, Keep::VERDICT) {
                Ok(r) => {
                    print!("{}", replay_log(&r.history));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(EXIT_ENGINE, e),
            }
        }
        Command::Swarm {
            scenarios,
            seeds,
            budget,
            jobs,
            bugs,
            json: as_json,
            junit,
            shard,
            report: report_dir,
            no_report,
            engine,
            buggify,
        } => {
            let job_index = std::env::var(chatsim::swarm::JOB_INDEX_ENV).ok();
            let shard = match shard.map(|s| SwarmShard::parse_with(&s, job_index.as_deref())) {
                None => SwarmShard::WHOLE,
                Some(Ok(s)) => s,
                Some(Err(e)) => return fail(EXIT_BAD_INPUT, e),
            };
            let seeds = seeds.unwrap_or(match budget {
                None => SeedRange { first: 1, last: 20 },
                Some(_) => SeedRange {
                    first: 1,
                    last: 1_000_000_000,
                },
            });
            let mut paths = Vec::new();
            let mut gate = scenarios.len() > 1;
            for p in scenarios {
                // `scenarios` with no such folder here is the bundled judged ones.
                if p.is_dir() || p == Path::new("scenarios") {
                    gate = true;
                    match judged_scenarios(&p) {
                        Ok(found) => paths.extend(found),
                        Err(e) => return fail(EXIT_BAD_INPUT, e),
                    }
                } else {
                    paths.push(p);
                }
            }
            let mut loaded = Vec::new();
            for p in &paths {
                match load(p) {
                    Ok(s) => loaded.push(buggified(s, buggify)),
                    Err(code) => return code,
                }
            }
            let jobs =
                jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let started = std::time::Instant::now();
            // Only a listed swarm spells its seeds out: a budget's range may be a billion long.
            let listed = match budget {
                None => seeds_of(seeds, shard),
                Some(_) => Vec::new(),
            };
            let which = match budget {
                None => chatsim::swarm::Seeds::Listed(&listed),
                Some(seconds) => chatsim::swarm::Seeds::Budget(chatsim::swarm::Budget {
                    range: seeds,
                    seconds,
                }),
            };
            let mut reports = chatsim::swarm::swarm_seeds(
                engine,
                &loaded,
                which,
                jobs,
                &bugs.into_iter().collect(),
            );
            for r in &mut reports {
                // A budgeted scenario's range is what it ran; a listed one's, what was asked.
                if budget.is_none() {
                    r.seed_range = seeds;
                }
                r.shard = shard;
            }
            let outcome = if gate {
                let mut g = chatsim::swarm::Gate::of(
                    reports,
                    seeds,
                    shard,
                    started.elapsed().as_secs_f64(),
                );
                g.budget_seconds = budget;
                Merged::Gate(g)
            } else {
                Merged::One(Box::new(reports.remove(0)))
            };
            finish_swarm(outcome, &loaded, junit, report_dir, no_report, as_json)
        }
        Command::Merge {
            pieces,
            json: as_json,
            junit,
            report,
            no_report,
        } => {
            let merged = match chatsim::merge::merge(&pieces) {
                Ok(m) => m,
                Err(e) => return fail(EXIT_BAD_INPUT, e),
            };
            let reports: Vec<&chatsim::swarm::SwarmReport> = match &merged {
                Merged::One(r) => vec![r.as_ref()],
                Merged::Gate(g) => g.scenarios.iter().collect(),
            };
            let mut loaded = Vec::new();
            if !no_report {
                for r in reports {
                    match load(Path::new(&r.scenario_path)) {
                        Ok(s) => loaded.push(s),
                        Err(code) => return code,
                    }
                }
            }
            finish_swarm(merged, &loaded, junit, report, no_report, as_json)
        }
        Command::Coverage {
            scenarios,
            seeds,
            jobs,
            json: as_json,
            engine,
            buggify,
        } => {
            let paths = if scenarios.is_empty() {
                match judged_scenarios(&scenarios_dir()) {
                    Ok(p) => p,
                    Err(e) => return fail(EXIT_BAD_INPUT, e),
                }
            } else {
                scenarios
            };
            let mut loaded = Vec::new();
            for p in &paths {
                match load(p) {
                    Ok(s) => loaded.push(buggified(s, buggify)),
                    Err(code) => return code,
                }
            }
            let jobs =
                jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            let seeds = seeds_of(seeds, SwarmShard { index: 0, count: 1 });
            let report = measure(engine, &loaded, &seeds, jobs);
            if as_json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("reports are serialisable")
                );
            } else {
                print!("{}", report.summary());
            }
            ExitCode::from(report.exit_code())
        }
        Command::Shrink {
            scenario,
            seed,
            bugs,
            invariant,
            out,
            buggify,
            jobs,
        } => {
            let s = match load(&scenario) {
                Ok(s) => buggified(s, buggify),
                Err(code) => return code,
            };
            let bugs: Bugs = bugs.into_iter().collect();
            in_pool(jobs, || {
                shrink_and_write(&s, seed, &bugs, invariant.as_deref(), out)
            })
        }
        Command::Hunt {
            bug,
            seeds,
            out,
            jobs,
        } => {
            let info = bug.info();
            if !info.available {
                return fail(
                    EXIT_BAD_INPUT,
                    format!(
                        "`{bug}` needs a part of the design that is not built yet ({})",
                        info.scenario
                    ),
                );
            }
            let s = match load(Path::new(info.scenario)) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let bugs: Bugs = [bug].into_iter().collect();
            let hunted = in_pool(jobs, || {
                chatsim::shrink::hunt(
                    &s,
                    &bugs,
                    info.caught_by,
                    seeds,
                    chatsim::shrink::HUNT_SHORT_ENOUGH,
                    &mut |seed, at| {
                        eprintln!("caught on seed {seed} after {at:.1} s of wall; shrinking it");
                    },
                )
            });
            match hunted {
                Ok(Some(h)) => {
                    let seeds: Vec<String> = h.caught.iter().map(ToString::to_string).collect();
                    println!(
                        "caught `{bug}` on seeds {} of {}: {} broke; kept seed {}, the shortest story \
                         shrunk ({} events; first caught after {:.1} s, all shrunk after {:.1} s)",
                        seeds.join(", "),
                        info.scenario,
                        info.caught_by,
                        h.seed,
                        h.shrunk.events_after,
                        h.first_catch_seconds,
                        h.seconds
                    );
                    write_shrunk(&s, h.seed, &bugs, &h.shrunk, out)
                }
                Ok(None) => {
                    println!(
                        "`{bug}` was not caught by {} in {seeds} seeds of {}",
                        info.caught_by, info.scenario
                    );
                    ExitCode::SUCCESS
                }
                Err(e @ ShrinkError::Run(_)) => fail(EXIT_ENGINE, e),
                Err(e) => fail(EXIT_BAD_INPUT, e),
            }
        }
        Command::Bench {
            quick,
            scenario,
            seed,
            engine,
            rounds,
            json: as_json,
        } => {
            let path = scenario.unwrap_or_else(|| {
                PathBuf::from(if quick {
                    "scenarios/bench-quick.toml"
                } else {
                    "scenarios/bench-reference.toml"
                })
            });
            let s = match load(&path) {
                Ok(s) => s,
                Err(code) => return code,
            };
            match chatsim::bench::bench_rounds(&s, seed, engine, rounds) {
                Ok(r) => {
                    if as_json {
                        println!(
                            "{}",
                            serde_json::to_string_pretty(&r).expect("the report serialises")
                        );
                    } else {
                        print!("{}", chatsim::bench::summary(&r));
                    }
                    if r.phases.iter().all(|p| p.invariants_hold) {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(EXIT_BROKEN)
                    }
                }
                Err(e) => fail(EXIT_ENGINE, e),
            }
        }
        Command::Check {
            model,
            bugs,
            bfs,
            dfs,
            threads,
            json: as_json,
        } => {
            let bugs: Bugs = bugs.into_iter().collect();
            let models = match chatsim::check::models(model.as_deref(), &bugs) {
                Ok(m) => m,
                Err(e) => return fail(EXIT_BAD_INPUT, e),
            };
            use chatsim::check::Order;
            let search = chatsim::check::Search {
                order: match (bfs, dfs) {
                    (true, _) => Order::Bfs,
                    (_, true) => Order::Dfs,
                    _ => Order::Auto,
                },
                threads: threads
                    .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
            };
            let mut passed = true;
            for m in models {
                let o = chatsim::check::check(m, search, !bugs.is_empty());
                if as_json {
                    println!(
                        "{}",
                        serde_json::to_string(&o).expect("an outcome serialises")
                    );
                } else {
                    print!("{}", chatsim::check::summary(&o));
                }
                passed &= o.passed();
            }
            if passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_BROKEN)
            }
        }
        Command::Serve {
            deployment,
            roles,
            grace_ms,
            data,
            memory,
            sessions,
            connections_max,
            bugs,
        } => {
            init_logs();
            if let Some(limit) = chatsim_server::raise_fd_limit() {
                tracing::info!(limit, "open-file limit raised to its hard limit");
            }
            let cfg = chatsim_server::Config {
                phone_connections_max: connections_max,
                bugs: bugs.into_iter().collect(),
                ..deployment.config()
            };
            let roles = match chatsim::live::parse_roles(&cfg, &roles) {
                Ok(r) => r,
                Err(e) => return fail(EXIT_BAD_INPUT, e),
            };
            let data = (!memory).then_some(data.as_path());
            match chatsim::live::serve(&cfg, &roles, data, sessions.as_deref(), grace_ms) {
                Ok(s) => {
                    tracing::info!(
                        hosts = s.hosts,
                        phone_connections = s.phone_connections,
                        refused = s.refused,
                        "stopped"
                    );
                    ExitCode::SUCCESS
                }
                Err(e @ chatsim_server::serve::ServeError::HostPanicked(_)) => fail(EXIT_ENGINE, e),
                Err(e) => fail(EXIT_BAD_INPUT, e),
            }
        }
        Command::Client {
            device,
            deployment,
            state,
        } => {
            let (cfg, me) = match deployment.device(&device) {
                Ok(found) => found,
                Err(e) => return fail(EXIT_BAD_INPUT, e),
            };
            let stdin = std::io::BufReader::new(std::io::stdin());
            let ids_at = chatsim::live::ids_path(&state, me);
            let ids = match chatsim_server::phone::IdStore::open(&ids_at) {
                Ok(ids) => ids,
                Err(e) => {
                    return fail(
                        EXIT_BAD_INPUT,
                        format!("--state {}: {}: {e}", state.display(), ids_at.display()),
                    )
                }
            };
            match chatsim::live::client(&cfg, me, ids, stdin, std::io::stdout()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(EXIT_ENGINE, e),
            }
        }
        Command::Relay { addr } => match chatsim::live::relay(addr) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(EXIT_BAD_INPUT, format!("--addr {addr}: {e}")),
        },
        Command::Load {
            target,
            server_pid,
            floor,
            addr,
            server_memory,
            beside_floor,
            floor_addr,
            devices,
            rate,
            duration,
            groups,
            group_size,
            group_share,
            away_share,
            away_secs,
            settle,
            connect_batch,
            body_bytes,
            seed,
            gateways,
            shards,
            json,
            out,
            kills,
            bugs,
        } => {
            if kills > 0 && (floor || server_memory) {
                return fail(
                    EXIT_BAD_INPUT,
                    "--kills: needs the chat server on disk (not --floor or --server-memory)",
                );
            }
            let spec = chatsim::load::LoadSpec {
                devices,
                rate,
                duration_s: duration,
                groups,
                group_size,
                group_share,
                away_share,
                away_s: away_secs,
                settle_s: settle,
                connect_batch,
                body_bytes,
                seed,
                kills,
            };
            let cfg = chatsim_server::Config {
                addr: target.unwrap_or(addr),
                users: devices,
                devices_per_user: 1,
                gateways,
                shards,
                seed,
                // Every phone on one gateway must fit, with room for reconnects.
                phone_connections_max: devices.saturating_add(1000),
                bugs: bugs.into_iter().collect(),
            };
            if let Err(e) = spec.validate() {
                return fail(EXIT_BAD_INPUT, e);
            }
            if let Err(e) = cfg.validate() {
                return fail(EXIT_BAD_INPUT, e);
            }
            let kind = if floor { "floor" } else { "chatsim" };
            let dir = out
                .unwrap_or_else(|| PathBuf::from(format!("reports/load/{kind}-{devices}x{rate}")));
            let limit = chatsim_server::raise_fd_limit();
            let say = |m: &str| {
                if !json {
                    eprintln!("load: {m}");
                }
            };
            say(&format!(
                "open-file limit {}",
                limit.map_or("unchanged (could not raise it)".into(), |l| l.to_string())
            ));
            let mut server = match target {
                Some(_) => None,
                None => {
                    let log = dir.join("server.log");
                    let started = if floor {
                        chatsim::live::spawn_self(
                            &["relay".into(), format!("--addr={addr}")],
                            addr,
                            &log,
                            None,
                        )
                    } else {
                        let data = (!server_memory).then(|| {
                            std::env::temp_dir()
                                .join(format!("chatsim-load-{}", std::process::id()))
                        });
                        chatsim::live::spawn_self(
                            &chatsim::live::serve_args(&cfg, data.as_deref()),
                            addr,
                            &log,
                            data,
                        )
                    };
                    match started {
                        Ok(s) => Some(s),
                        Err(e) => return fail(EXIT_ENGINE, e),
                    }
                }
            };
            let watch = chatsim::load::Watch {
                pid: server_pid.or(server.as_ref().map(|s| s.pid())),
            };
            let mut progress = |m: &str| say(m);
            let ran = if floor {
                chatsim::load::run_floor(cfg.addr, &spec, watch, &mut progress).map(|r| (r, None))
            } else {
                let restart = server
                    .as_mut()
                    .map(|s| s as &mut dyn chatsim::load::Restart);
                chatsim::load::run_chat(&cfg, &spec, watch, restart, &mut progress)
                    .map(|(r, h)| (r, Some(h)))
            };
            drop(server);
            let (mut report, history) = match ran {
                Ok(r) => r,
                Err(e @ chatsim::load::LoadError::Spec(_)) => return fail(EXIT_BAD_INPUT, e),
                Err(e) => return fail(EXIT_ENGINE, e),
            };
            if beside_floor {
                if !floor_addr.ip().is_loopback() {
                    return fail(
                        EXIT_BAD_INPUT,
                        format!("--floor-addr {floor_addr}: loopback only (127.0.0.1 or ::1)"),
                    );
                }
                say("the same schedule through the bare relay, beside it");
                let relay = match chatsim::live::spawn_self(
                    &["relay".into(), format!("--addr={floor_addr}")],
                    floor_addr,
                    &dir.join("relay.log"),
                    None,
                ) {
                    Ok(r) => r,
                    Err(e) => return fail(EXIT_ENGINE, e),
                };
                let watch = chatsim::load::Watch {
                    pid: Some(relay.pid()),
                };
                match chatsim::load::run_floor(floor_addr, &spec, watch, &mut |m: &str| say(m)) {
                    Ok(floor) => {
                        report.beside_floor = Some(chatsim::load::Beside::of(&report, &floor));
                    }
                    Err(e) => return fail(EXIT_ENGINE, format!("the floor's run: {e}")),
                }
            }
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("figures are serialisable")
                );
            } else {
                print!("{}", chatsim::load::summary(&report));
            }
            match chatsim::load::write_report(&dir, &report, history.as_ref()) {
                Ok(()) => say(&format!("report: {}/index.html", dir.display())),
                Err(e) => return fail(EXIT_ENGINE, format!("writing the report: {e}")),
            }
            if report.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_BROKEN)
            }
        }
        Command::Keys { device, deployment } => {
            let (cfg, me) = match deployment.device(&device) {
                Ok(found) => found,
                Err(e) => return fail(EXIT_BAD_INPUT, e),
            };
            println!("{:#}", chatsim::live::provisioning(&cfg, me));
            ExitCode::SUCCESS
        }
        Command::Explore { model, bugs, addr } => {
            let bugs: Bugs = bugs.into_iter().collect();
            let name = model.or_else(|| bugs.iter().next().is_none().then(|| "direct".to_string()));
            let mut models = match chatsim::check::models(name.as_deref(), &bugs) {
                Ok(m) => m,
                Err(e) => return fail(EXIT_BAD_INPUT, e),
            };
            let m = models.remove(0);
            match chatsim::check::explore(m, &addr) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(EXIT_BAD_INPUT, format!("--addr {addr}: {e}")),
            }
        }
        Command::Bugs => {
            // Written, not printed: `chatsim bugs | head` closes the pipe early.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "{:<28} {:<20} {:<27} {:<26} mistake",
                "bug", "caught by", "scenario", "lesson"
            );
            for b in &ZOO {
                let scenario = if b.available {
                    b.scenario.to_string()
                } else {
                    format!("({}: not built)", b.scenario)
                };
                let lesson = chatsim::learn::for_bug(b.bug).map_or("-", |l| l.name);
                let _ = writeln!(
                    out,
                    "{:<28} {:<20} {:<27} {:<26} {}",
                    b.name, b.caught_by, scenario, lesson, b.mistake
                );
            }
            let _ = writeln!(
                out,
                "\nA lesson runs the mistake beside the design: `chatsim learn NAME`."
            );
            ExitCode::SUCCESS
        }
        Command::Learn {
            name,
            json: as_json,
            report,
        } => {
            use chatsim::learn;
            let Some(name) = name else {
                if as_json {
                    let list: Vec<serde_json::Value> = learn::LESSONS
                        .iter()
                        .map(|l| {
                            serde_json::json!({
                                "name": l.name, "title": l.title, "from": l.from,
                                "scenario": l.scenario(),
                            })
                        })
                        .collect();
                    println!(
                        "{}",
                        serde_json::to_string_pretty(&list).expect("plain data")
                    );
                } else {
                    let _ = write!(std::io::stdout().lock(), "{}", learn::listing());
                }
                return ExitCode::SUCCESS;
            };
            let Some(lesson) = learn::find(&name) else {
                return fail(
                    EXIT_BAD_INPUT,
                    format!("no lesson `{name}`; `chatsim learn` lists them"),
                );
            };
            let dir = report.unwrap_or_else(|| learn::default_dir(lesson.name));
            let ran = learn::run(lesson, own(), &dir);
            match ran {
                Ok(o) => {
                    if as_json {
                        println!("{}", serde_json::to_string_pretty(&o).expect("plain data"));
                    } else {
                        print!("{}", learn::text(&o));
                    }
                    if o.shown {
                        ExitCode::SUCCESS
                    } else {
                        eprintln!("error: the lesson did not show what it teaches (see the verdicts above)");
                        ExitCode::from(EXIT_BROKEN)
                    }
                }
                Err(e) => fail(EXIT_ENGINE, e),
            }
        }
        Command::Capacity {
            assumptions: a,
            check,
            check_users,
            seed,
            json: as_json,
        } => {
            use chatsim::capacity::{check as run_check, check_table, derivation, estimate};
            if let Err(e) = a.validate() {
                return fail(EXIT_BAD_INPUT, e);
            }
            if check && !(20..=20_000).contains(&check_users) {
                return fail(
                    EXIT_BAD_INPUT,
                    format!("--check-users: {check_users}: between 20 and 20000 (a scaled world runs on this machine in seconds)"),
                );
            }
            let e = estimate(&a);
            let checked = if check {
                match run_check(&a, check_users, seed) {
                    Ok(c) => Some(c),
                    Err(e) => return fail(EXIT_ENGINE, e),
                }
            } else {
                None
            };
            if as_json {
                let j = serde_json::json!({ "assumptions": a, "estimate": e, "check": checked });
                println!(
                    "{}",
                    serde_json::to_string_pretty(&j).expect("plain numbers")
                );
            } else {
                println!("assumptions (each a flag; see --help):");
                println!(
                    "{}",
                    serde_json::to_string_pretty(&a).expect("plain numbers")
                );
                println!("derivation:");
                print!("{}", derivation(&a, &e));
                if let Some(c) = &checked {
                    println!();
                    print!("{}", check_table(c));
                }
            }
            match checked {
                Some(c) if !c.passed() => ExitCode::from(EXIT_BROKEN),
                _ => ExitCode::SUCCESS,
            }
        }
        Command::Scenarios { dir } => {
            let dir = dir.unwrap_or_else(scenarios_dir);
            let files = match chatsim::catalog::list(&dir) {
                Ok(f) => f,
                Err(e) => return fail(EXIT_BAD_INPUT, e),
            };
            if !dir.is_dir() {
                println!("(no {} folder here: the scenarios bundled into this binary; run one by name, e.g. `chatsim run smoke`)\n", dir.display());
            }
            let mut code = ExitCode::SUCCESS;
            // Written, not printed: `chatsim scenarios | head` closes the pipe early, and a
            // listing cut short is not an error.
            let mut out = std::io::stdout().lock();
            for f in files {
                match chatsim::catalog::load(&f, None) {
                    Ok(s) => {
                        let _ = writeln!(out, "{:<28} {}", f.display(), s.description);
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        code = ExitCode::from(EXIT_BAD_INPUT);
                    }
                }
            }
            let _ = writeln!(out, "\nfault kinds ([[fault]] kind = ...):");
            for k in FaultKind::ALL {
                let _ = writeln!(out, "  {:<18} {}", k.name(), k.summary());
            }
            code
        }
    }
}
