//! The `chatsim` binary as users and CI see it: exit codes, messages naming file, line and
//! field, JSON fields, and determinism across two processes.

mod common;

use common::{chatsim, stderr};
use std::path::Path;
use std::process::{Command, Output};

/// A scenario file written into `dir` (a test's own temporary folder, removed when it ends).
fn scratch(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write scratch scenario");
    path.display().to_string()
}

fn json_of(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).expect("--json prints one JSON object")
}

// The same scenario and seed must give the same trace hash in two separate processes (std's
// hash keys differ per process, so this catches HashMap iteration leaking into behaviour).
#[test]
fn two_processes_agree_on_the_trace_hash_and_the_json_has_the_promised_fields() {
    let a = chatsim(&[
        "run",
        "scenarios/partition-heal.toml",
        "--seed",
        "7",
        "--json",
    ]);
    let b = chatsim(&[
        "run",
        "scenarios/partition-heal.toml",
        "--seed",
        "7",
        "--json",
    ]);
    assert_eq!(a.status.code(), Some(0), "{}", stderr(&a));
    let (ja, jb) = (json_of(&a), json_of(&b));
    assert_eq!(ja["trace_hash"], jb["trace_hash"]);
    assert_eq!(ja["scenario"], "partition-heal");
    assert_eq!(ja["seed"], 7);
    assert_eq!(ja["engine"], "madsim");
    let names: Vec<&str> = ja["invariants"]
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        names,
        [
            "no_loss",
            "exactly_once",
            "conversation_order",
            "liveness",
            "e2e_confidential",
            "authz",
            "receipts",
            "presence_converges",
            "inbox_drained",
            "ack_latency",
            "gap_repair",
            "receipt_latency",
            "presence_latency",
            "drain_latency",
            "reconnect_load",
            "presence_load"
        ]
    );
    assert!(ja["invariants"][0]["holds"].as_bool().expect("bool"));
    assert!(ja["invariants"][0]["violations"].is_array());
    for field in [
        "messages_sent",
        "messages_acked",
        "messages_delivered",
        "sim_seconds",
        "wall_seconds",
        "frames",
        "judge_seconds",
        "history_events",
    ] {
        assert!(ja["stats"][field].is_number(), "stats.{field} missing");
    }
    // Every frame is counted under exactly one kind.
    let kinds = ja["stats"]["frames_by_kind"]
        .as_object()
        .expect("stats.frames_by_kind is an object");
    let counted: u64 = kinds.values().map(|v| v.as_u64().expect("a count")).sum();
    assert_eq!(Some(counted), ja["stats"]["frames"].as_u64(), "{kinds:?}");
    for kind in [
        "device link",
        "gateway-shard",
        "shard-storage",
        "session",
        "heartbeats",
    ] {
        assert!(
            kinds[kind].as_u64().expect("a count") > 0,
            "no {kind} frames: {kinds:?}"
        );
    }
    let per = ja["stats"]["frames_per_delivery"]
        .as_f64()
        .expect("a number");
    let delivered = ja["stats"]["messages_delivered"]
        .as_f64()
        .expect("a number");
    assert!(
        (per * delivered - counted as f64).abs() < 1.0,
        "{per} x {delivered}"
    );
    // Each checker's time, under the same names the verdicts carry, and the facts they share,
    // adding up to the total.
    let by = ja["stats"]["judge_seconds_by_invariant"]
        .as_object()
        .expect("stats.judge_seconds_by_invariant is an object");
    let mut timed: Vec<&str> = by.keys().map(String::as_str).collect();
    let mut sorted_names = names.clone();
    timed.sort_unstable();
    sorted_names.sort_unstable();
    assert_eq!(timed, sorted_names);
    let shared = ja["stats"]["judge_seconds_shared"]
        .as_f64()
        .expect("stats.judge_seconds_shared is a number");
    let sum: f64 = shared
        + by.values()
            .map(|v| v.as_f64().expect("seconds"))
            .sum::<f64>();
    let total = ja["stats"]["judge_seconds"].as_f64().expect("seconds");
    assert!((sum - total).abs() < 1e-9, "{sum} != {total}");
}

// The summary says what a person needs: verdicts, counts, the hash and the replay command.
#[test]
fn the_summary_names_invariants_counts_hash_and_replay_command() {
    let o = chatsim(&["run", "scenarios/smoke.toml", "--seed", "3"]);
    assert_eq!(o.status.code(), Some(0));
    let out = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "no_loss",
        "holds",
        "messages:",
        "trace hash:",
        "run scenarios/smoke.toml --seed 3",
        "verdict: PASS",
    ] {
        assert!(out.contains(needle), "summary lacks {needle:?}:\n{out}");
    }
    let replay = chatsim(&["replay", "scenarios/smoke.toml", "--seed", "3"]);
    let log = String::from_utf8_lossy(&replay.stdout);
    assert!(
        log.lines()
            .any(|l| l.contains(" ms  u") && l.contains("shows")),
        "{log}"
    );
}

// Bad input exits 2 with a message naming the file, the line and the field; never a panic.
#[test]
fn bad_input_exits_2_naming_file_line_and_field() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let o = chatsim(&["run", "scenarios/no-such-file.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no-such-file.toml"), "{}", stderr(&o));

    let good = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/smoke.toml"),
    )
    .expect("smoke");
    let typo = scratch(
        &tmp,
        "typo.toml",
        &good.replace("shards = 2", "shards = 2\nshard_count = 2"),
    );
    let o = chatsim(&["run", &typo]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("typo.toml") && e.contains("shard_count") && e.contains("line"),
        "{e}"
    );

    let broken = scratch(
        &tmp,
        "broken.toml",
        "description = \"x\"\n[topology\nusers = 3\n",
    );
    let o = chatsim(&["run", &broken]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("broken.toml") && stderr(&o).contains("line 2"),
        "{}",
        stderr(&o)
    );

    let range = scratch(
        &tmp,
        "range.toml",
        &good.replace("latency_ms = [1, 10]", "latency_ms = [10, 1]"),
    );
    let o = chatsim(&["run", &range]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("`network.latency_ms`"),
        "{}",
        stderr(&o)
    );

    let o = chatsim(&["run", "scenarios/smoke.toml", "--no-such-flag"]);
    assert_eq!(o.status.code(), Some(2));
    let o = chatsim(&["run", "scenarios/smoke.toml", "--seed", "minus-one"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!stderr(&o).contains("panicked"));
}

// `chatsim scenarios` lists every file with its description.
#[test]
fn scenarios_lists_every_file_with_its_description() {
    let o = chatsim(&["scenarios"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for name in [
        "smoke",
        "gateway-crash",
        "shard-crash-after-persist",
        "partition-heal",
        "offline-inbox",
        "reconnect-storm",
    ] {
        assert!(
            out.contains(&format!("{name}.toml")),
            "missing {name}:\n{out}"
        );
    }
    assert!(out.contains("no faults"), "{out}");
}

// A swarm with a zoo bug on fails, names its failing seeds in JSON and writes one JUnit
// testcase per seed and invariant; sharding splits the range.
#[test]
fn swarm_reports_failing_seeds_in_json_and_junit_and_shards_split_the_range() {
    let junit = std::env::temp_dir().join(format!("chatsim-junit-{}.xml", std::process::id()));
    let junit_arg = junit.display().to_string();
    let o = chatsim(&[
        "swarm",
        "scenarios/partition-heal.toml",
        "--seeds",
        "1..4",
        "--jobs",
        "2",
        "--bug",
        "no-client-dedup",
        "--json",
        "--junit",
        &junit_arg,
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let j = json_of(&o);
    assert_eq!(j["seeds_run"], 4);
    assert!(j["seeds_failed"].as_u64().expect("number") > 0);
    assert!(j["failing_seeds"]
        .as_array()
        .expect("array")
        .iter()
        .all(|s| s.is_u64()));
    assert!(j["invariants"]["exactly_once"].as_u64().expect("count") > 0);
    let xml = std::fs::read_to_string(&junit).expect("junit written");
    assert_eq!(
        xml.matches("<testcase ").count(),
        4 * chatsim_judge::checkers::CHECKS.len()
    );
    assert!(xml.contains("<failure message="));
    std::fs::remove_file(&junit).ok();

    let o = chatsim(&[
        "swarm",
        "scenarios/smoke.toml",
        "--seeds",
        "1..5",
        "--shard",
        "1/2",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(json_of(&o)["seeds_run"], 2, "seeds 2 and 4");
    let o = chatsim(&["swarm", "scenarios/smoke.toml", "--seeds", "5..1"]);
    assert_eq!(o.status.code(), Some(2));
    let o = chatsim(&["run", "scenarios/smoke.toml", "--bug", "no-such-bug"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("ack-before-persist"),
        "lists the zoo: {}",
        stderr(&o)
    );
}

// A gate sized in time runs each scenario's seeds in order from the first, one unbroken range
// each, and ends near its budget; a scenario's range run again gives the same verdicts; `--for`
// with `--shard`, or a duration that is none, is refused as bad input.
#[test]
fn a_gate_sized_in_time_runs_unbroken_seed_ranges_that_replay_alike() {
    let o = chatsim(&[
        "swarm",
        "smoke",
        "silent-phone",
        "--for",
        "4s",
        "--seeds",
        "3..1000",
        "--jobs",
        "2",
        "--bug",
        "no-client-dedup",
        "--json",
        "--no-report",
    ]);
    assert!(matches!(o.status.code(), Some(0 | 1)), "{}", stderr(&o));
    let j = json_of(&o);
    assert_eq!(j["budget_seconds"], 4.0);
    let wall = j["wall_seconds"].as_f64().expect("seconds");
    // No seed starts once the budget is spent; one already running may end after it.
    assert!((3.0..30.0).contains(&wall), "took {wall} s");
    let mut total = 0;
    for r in j["scenarios"].as_array().expect("array") {
        let ran: Vec<u64> = r["seeds"]
            .as_array()
            .expect("array")
            .iter()
            .map(|s| s["seed"].as_u64().expect("seed"))
            .collect();
        assert!(!ran.is_empty(), "every scenario judged: {r}");
        let last = r["seed_range"]["last"].as_u64().expect("last");
        assert_eq!(r["seed_range"]["first"], 3);
        assert_eq!(ran, (3..=last).collect::<Vec<_>>(), "{}", r["scenario"]);
        total += ran.len();
        // The same seeds, asked for by range: the same verdicts.
        let replay_last = last.min(6).to_string();
        let again = chatsim(&[
            "swarm",
            r["scenario_path"].as_str().expect("path"),
            "--seeds",
            &format!("3..{replay_last}"),
            "--bug",
            "no-client-dedup",
            "--json",
            "--no-report",
        ]);
        let again = json_of(&again);
        for (a, b) in r["seeds"]
            .as_array()
            .expect("array")
            .iter()
            .zip(again["seeds"].as_array().expect("array"))
        {
            assert_eq!((&a["seed"], &a["broken"]), (&b["seed"], &b["broken"]));
        }
    }
    assert_eq!(j["seeds_run"].as_u64(), Some(total as u64));
    for bad in [
        &["--for", "4s", "--shard", "0/2"][..],
        &["--for", "soon"][..],
        &["--for", "0s"][..],
    ] {
        let o = chatsim(&[&["swarm", "smoke", "--no-report"][..], bad].concat());
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
    }
}

// hunt catches a bug and writes a shrunk scenario that replays it; shrinking a passing seed or
// hunting a bug whose part of the design is not built is refused as bad input.
#[test]
fn hunt_writes_a_replayable_shrunk_scenario_and_refuses_what_it_cannot_do() {
    let hunt = |jobs: &str, out: &str| {
        chatsim(&[
            "hunt",
            "--bug",
            "no-client-dedup",
            "--seeds",
            "5",
            "--jobs",
            jobs,
            "--out",
            out,
        ])
    };
    let out = std::env::temp_dir().join(format!("chatsim-hunt-{}.toml", std::process::id()));
    let out_arg = out.display().to_string();
    let o = hunt("2", &out_arg);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(said.contains("exactly_once"), "{said}");
    // Replayed on the seed the hunt names (which seed catches it is the trace's business).
    let seed = said
        .split("--seed ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the replay line names a seed")
        .to_string();
    let r = chatsim(&["run", &out_arg, "--seed", &seed, "--bug", "no-client-dedup"]);
    assert_eq!(
        r.status.code(),
        Some(1),
        "the shrunk file replays the failure"
    );
    let r = chatsim(&["run", &out_arg, "--seed", &seed]);
    assert_eq!(r.status.code(), Some(0), "and passes without the bug");
    // The catch is told as it happens, before its shrink.
    assert!(
        stderr(&o).contains(&format!("caught on seed {seed} after")),
        "{}",
        stderr(&o)
    );
    // Seeds and shrink steps tried two at a time find and keep exactly what one at a time does.
    let one = std::env::temp_dir().join(format!("chatsim-hunt1-{}.toml", std::process::id()));
    let one_arg = one.display().to_string();
    let o1 = hunt("1", &one_arg);
    assert_eq!(o1.status.code(), Some(1), "{}", stderr(&o1));
    let two = std::fs::read_to_string(&out).expect("written");
    assert_eq!(std::fs::read_to_string(&one).expect("written"), two);
    std::fs::remove_file(&out).ok();
    std::fs::remove_file(&one).ok();

    let o = chatsim(&["shrink", "scenarios/smoke.toml", "--seed", "1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nothing to shrink"), "{}", stderr(&o));
    // Every zoo bug is built now, so the refusal left to check is a name not in the zoo.
    let o = chatsim(&["hunt", "--bug", "no-such-bug"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no-such-bug"), "{}", stderr(&o));
}

// The benchmark measures the floor and the full system side by side and says so in JSON; the
// floor replays every frame of the full run. No timing is asserted: machines differ.
#[test]
fn bench_prints_the_floor_the_full_system_and_their_ratio() {
    for engine in ["madsim", "turmoil"] {
        let o = chatsim(&[
            "bench",
            "--scenario",
            "scenarios/smoke.toml",
            "--engine",
            engine,
            "--json",
        ]);
        assert_eq!(o.status.code(), Some(0), "{engine}: {}", stderr(&o));
        let j = json_of(&o);
        assert_eq!(j["engine"], engine, "each engine against its own floor");
        bench_json_is_complete(&j);
    }
}

// `--rounds` times the floor and the full system that many times and reports the median round
// of each, with every round's ratio; zero rounds is bad input.
#[test]
fn bench_rounds_reports_the_median_round_and_every_rounds_ratio() {
    let args = ["bench", "--scenario", "scenarios/smoke.toml", "--json"];
    let o = chatsim(&[&args[..], &["--rounds", "3"]].concat());
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = json_of(&o);
    bench_json_is_complete(&j);
    assert_eq!(j["rounds"], 3);
    let ratios: Vec<f64> = j["round_ratios"]
        .as_array()
        .expect("round_ratios")
        .iter()
        .map(|r| r.as_f64().expect("a ratio"))
        .collect();
    assert_eq!(ratios.len(), 3, "{j}");
    assert!(ratios.iter().all(|r| *r > 0.0), "{ratios:?}");
    // The ratio is of the phases shown (the median floor and the median full, which need not
    // come from one round).
    let ratio = j["ratio"].as_f64().expect("ratio");
    let floor = j["phases"][0]["frames_per_sec"].as_f64().expect("floor");
    let full = j["phases"][1]["frames_per_sec"].as_f64().expect("full");
    assert!((ratio - full / floor).abs() < 1e-9, "{j}");
    let o = chatsim(&[&args[..], &["--rounds", "0"]].concat());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

fn bench_json_is_complete(j: &serde_json::Value) {
    for field in [
        "floor_frames_per_sec",
        "full_frames_per_sec",
        "ratio",
        "messages_per_sec",
        "sim_seconds_per_wall_second",
        "peak_rss_bytes",
    ] {
        assert!(j[field].as_f64().is_some_and(|x| x > 0.0), "{field}: {j}");
    }
    let phases = j["phases"].as_array().expect("phases");
    let names: Vec<&str> = phases
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["floor", "full", "full+faults"]);
    assert_eq!(
        phases[0]["frames"], phases[1]["frames"],
        "the floor replays every frame"
    );
    assert!(phases.iter().all(|p| p["invariants_hold"] == true));
}

// `check --bug` finds the shortest story, prints it step by step and exits 1; an unknown
// model is bad input (2).
#[test]
fn check_finds_a_bug_and_names_the_invariant_and_the_steps() {
    let o = chatsim(&["check", "--bug", "ack-before-persist", "--threads", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("model direct"), "{out}");
    assert!(out.contains("no_loss BROKEN after"), "{out}");
    assert!(out.contains("the user sends"), "{out}");
    assert!(out.contains("unique"), "{out}");
    let o = chatsim(&["check", "--model", "nonesuch"]);
    assert_eq!(o.status.code(), Some(2));
    let models = chatsim_models::models::NAMES.join(", ");
    assert!(stderr(&o).contains(&models), "{}", stderr(&o));
    let o = chatsim(&["check", "--bug", "tls-only"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no small model shows this bug"));
}

// `explore` serves the Explorer on the address given: its page answers HTTP 200.
#[test]
fn explore_serves_a_page_on_loopback() {
    use std::io::{Read, Write};
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_chatsim"))
        .args(["explore", "--model", "direct", "--addr", &addr])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let mut answer = String::new();
    for _ in 0..100 {
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            let _ = s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n");
            let _ = s.read_to_string(&mut answer);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
        "{answer:.200}"
    );
}

// `--engine turmoil` runs the second engine: JSON names it, two processes agree on its trace
// hash on a scenario with crashes (turmoil and every host runtime, bounced ones included,
// seeded), and the replay command keeps the flag.
#[test]
fn engine_turmoil_is_named_in_json_and_deterministic_across_processes() {
    let run = || {
        chatsim(&[
            "run",
            "scenarios/gateway-crash.toml",
            "--seed",
            "3",
            "--engine",
            "turmoil",
            "--json",
            "--no-report",
        ])
    };
    let (a, b) = (run(), run());
    assert_eq!(a.status.code(), Some(0), "{}", stderr(&a));
    let (ja, jb) = (json_of(&a), json_of(&b));
    assert_eq!(ja["engine"], "turmoil");
    assert_eq!(ja["trace_hash"], jb["trace_hash"]);
    assert!(
        ja["replay"]
            .as_str()
            .expect("replay")
            .ends_with("--engine turmoil"),
        "{}",
        ja["replay"]
    );
    let bad = chatsim(&["run", "scenarios/smoke.toml", "--engine", "ns3"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
}

// A fault one engine cannot express is skipped with a message, never silently: madsim cannot
// drop one direction of a TCP stream, so it says so in the summary and in JSON, and records
// no such fault in the history; turmoil runs it.
#[test]
fn a_fault_madsim_cannot_express_is_skipped_out_loud() {
    let madsim = chatsim(&[
        "run",
        "scenarios/oneway-partition.toml",
        "--seed",
        "1",
        "--json",
        "--no-report",
    ]);
    let j = json_of(&madsim);
    let skipped = j["skipped"].as_array().expect("skipped faults are listed");
    assert!(!skipped.is_empty());
    assert!(
        skipped
            .iter()
            .all(|s| s.as_str().is_some_and(|s| s.contains("one-way partition"))),
        "{skipped:?}"
    );
    let text = chatsim(&[
        "run",
        "scenarios/oneway-partition.toml",
        "--seed",
        "1",
        "--no-report",
    ]);
    assert!(
        String::from_utf8_lossy(&text.stdout).contains("skipped on madsim: one-way partition"),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    let turmoil = chatsim(&[
        "run",
        "scenarios/oneway-partition.toml",
        "--seed",
        "1",
        "--engine",
        "turmoil",
        "--json",
        "--no-report",
    ]);
    assert_eq!(turmoil.status.code(), Some(0), "{}", stderr(&turmoil));
    assert!(json_of(&turmoil).get("skipped").is_none());
    let swarm = chatsim(&[
        "swarm",
        "scenarios/oneway-partition.toml",
        "--seeds",
        "1..2",
        "--no-report",
    ]);
    let out = String::from_utf8_lossy(&swarm.stdout);
    assert!(out.contains("skipped on madsim:"), "{out}");
}

// A scenario that would outgrow the machine is refused before it starts, naming the field that
// weighs most and the estimate (exit 2), unless --force; a count past its named limit is
// refused by validation. (Found from outside: groups count = 9999999 grew to 5.2 GB in 30 s.)
#[test]
fn a_scenario_too_big_for_the_machine_is_refused_before_it_starts() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let limited = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_chatsim"))
            .args(args)
            .current_dir(&root)
            .env("CHATSIM_MEMORY_LIMIT_MIB", "4096")
            .output()
            .expect("the binary runs")
    };
    let good = std::fs::read_to_string(root.join("scenarios/smoke.toml")).expect("smoke");
    let huge = scratch(
        &tmp,
        "huge.toml",
        &good.replace("messages = 200", "messages = 9999999"),
    );
    let started = std::time::Instant::now();
    let o = limited(&["run", &huge, "--no-report"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("huge.toml")
            && e.contains("workload.messages")
            && e.contains("GiB")
            && e.contains("4.0 GiB available")
            && e.contains("--force"),
        "{e}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "refused before it started"
    );
    let o = limited(&["swarm", &huge, "--seeds", "1..2", "--no-report"]);
    assert_eq!(o.status.code(), Some(2), "swarms are refused too");

    // The same limit lets a scenario that fits run.
    let o = limited(&["run", "scenarios/smoke.toml", "--no-report"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));

    let fanout =
        std::fs::read_to_string(root.join("scenarios/group-fanout.toml")).expect("group-fanout");
    let groups = scratch(
        &tmp,
        "groups.toml",
        &fanout.replace("count = 1\n", "count = 9999999\n"),
    );
    let o = chatsim(&["run", &groups]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("workload.groups.count") && stderr(&o).contains("at most 100000"),
        "{}",
        stderr(&o)
    );
}

// A learner who installed the binary runs it from a folder with no scenarios in it: the zoo,
// hunting and named scenarios come from the binary; reports land under the current folder.
#[test]
fn the_binary_works_from_an_empty_folder_outside_the_repository() {
    let dir = std::env::temp_dir().join(format!("chatsim-anywhere-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let at = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_chatsim"))
            .args(args)
            .current_dir(&dir)
            .env_remove("CHATSIM_SCENARIOS")
            .output()
            .expect("the binary runs")
    };
    let o = at(&["run", "smoke", "--seed", "2"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(dir.join("reports/smoke-2/index.html").is_file());
    let page = std::fs::read_to_string(dir.join("reports/smoke-2/index.html")).expect("page");
    assert!(
        page.contains("Smoke: a calm day"),
        "the bundled story is told"
    );
    let o = at(&["run", "scenarios/smoke.toml", "--seed", "2", "--no-report"]);
    assert_eq!(o.status.code(), Some(0), "the README's paths work too");
    let o = at(&["bugs"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("timestamp-order"),
        "bugs name their lessons"
    );
    let o = at(&["learn"]);
    assert_eq!(o.status.code(), Some(0));
    let listed = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .count();
    assert!(
        listed >= 16,
        "a header, 14 lessons and a footer at least:\n{listed}"
    );
    let o = at(&["learn", "tls-is-not-e2e"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let said = String::from_utf8_lossy(&o.stdout);
    assert!(
        said.contains("e2e_confidential") && said.contains("the fix:"),
        "{said}"
    );
    assert!(dir
        .join("reports/learn/tls-is-not-e2e/index.html")
        .is_file());
    let o = at(&["learn", "no-such-lesson"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no-such-lesson"), "{}", stderr(&o));
    let o = at(&["hunt", "--bug", "ack-before-persist", "--seeds", "5"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("no_loss"));
    let o = at(&["scenarios"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("bundled"));
    // One's own folder comes before the bundle, from the flag or the environment.
    let mine = dir.join("mine");
    std::fs::create_dir_all(&mine).expect("dir");
    let text = std::fs::read_to_string(common::scenarios_dir().join("smoke.toml")).expect("file");
    std::fs::write(
        mine.join("smoke.toml"),
        text.replacen("description = \"", "description = \"MINE ", 1),
    )
    .expect("write");
    let o = Command::new(env!("CARGO_BIN_EXE_chatsim"))
        .args(["scenarios"])
        .current_dir(&dir)
        .env("CHATSIM_SCENARIOS", &mine)
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&o.stdout).contains("MINE"));
    let o = at(&["run", "nowhere", "--scenarios", "mine"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("nowhere: cannot read"),
        "{}",
        stderr(&o)
    );
    std::fs::remove_dir_all(&dir).ok();
}

// The calculator reproduces the design's figures, its check runs a scaled world within the
// stated tolerances, and a share that is not a share is refused naming the flag.
#[test]
fn capacity_reproduces_the_design_and_its_check_passes() {
    let o = chatsim(&["capacity", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let j = json_of(&o);
    let e = &j["estimate"];
    let avg = e["average_messages_per_s"].as_f64().expect("a number");
    assert!((1.1e6..1.3e6).contains(&avg), "about 1.2M msg/s: {avg}");
    let tb = e["bytes_per_day"].as_f64().expect("a number") / 1e12;
    assert!((19.0..21.0).contains(&tb), "about 20 TB a day: {tb}");
    assert_eq!(
        e["gateways"].as_f64(),
        Some(1000.0),
        "about a thousand gateways"
    );
    let o = chatsim(&["capacity", "--check", "--json"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let j = json_of(&o);
    let figures = j["check"]["figures"].as_array().expect("figures");
    assert_eq!(figures.len(), 4);
    for f in figures {
        assert_eq!(f["within"], true, "{f}");
        assert!(f["measured"].as_f64().expect("measured") > 0.0, "{f}");
    }
    // Traffic gathered into a few groups breaks the even-spread assumption of one shard's
    // share, and the check says so.
    let o = chatsim(&["capacity", "--check", "--group-share", "0.99"]);
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert!(String::from_utf8_lossy(&o.stdout).contains("OFF"));
    let o = chatsim(&["capacity", "--group-share", "2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--group-share"), "{}", stderr(&o));
}

/// A swarm's JSON with the wall-clock fields taken out: what must match across processes.
fn without_walls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m
            .into_iter()
            .filter(|(k, _)| !k.contains("wall") && k != "seeds_per_minute")
            .map(|(k, x)| (k, without_walls(x)))
            .collect(),
        serde_json::Value::Array(a) => a.into_iter().map(without_walls).collect(),
        x => x,
    }
}

// Four shards of a gate over two scenarios (one with a bug on, so failures and coverage are
// merged too), run as four processes and merged, give the JSON and JUnit of one unsharded
// run; a Kubernetes indexed Job's index stands in for I; pieces that do not fit are refused.
#[test]
fn merge_of_four_shards_equals_one_unsharded_run_and_refuses_pieces_that_do_not_fit() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let file = |n: &str| dir.path().join(n).display().to_string();
    let gate = [
        "swarm",
        "smoke",
        "session-race",
        "--seeds",
        "1..10",
        "--bug",
        "session-clear-without-epoch",
        "--json",
        "--no-report",
    ];
    let whole = chatsim(&[&gate[..], &["--junit", &file("whole.xml")]].concat());
    assert_eq!(
        whole.status.code(),
        Some(1),
        "the bug breaks: {}",
        stderr(&whole)
    );
    std::fs::write(file("whole.json"), &whole.stdout).expect("write");
    let mut pieces = Vec::new();
    for k in 0..4 {
        let shard = format!("{k}/4");
        let o = if k == 2 {
            // The index from the environment a Kubernetes indexed Job sets.
            Command::new(env!("CARGO_BIN_EXE_chatsim"))
                .args(gate)
                .args(["--shard", "4"])
                .env("JOB_COMPLETION_INDEX", "2")
                .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
                .output()
                .expect("runs")
        } else {
            chatsim(&[&gate[..], &["--shard", &shard]].concat())
        };
        assert!(matches!(o.status.code(), Some(0 | 1)), "{}", stderr(&o));
        let path = file(&format!("piece-{k}.json"));
        std::fs::write(&path, &o.stdout).expect("write");
        pieces.push(path);
    }
    let piece_args: Vec<&str> = pieces.iter().map(String::as_str).collect();
    let merged = chatsim(
        &[
            &["merge"][..],
            &piece_args,
            &["--json", "--no-report", "--junit", &file("merged.xml")],
        ]
        .concat(),
    );
    assert_eq!(merged.status.code(), Some(1), "{}", stderr(&merged));
    let a = without_walls(json_of(&whole));
    let b = without_walls(json_of(&merged));
    assert_eq!(a, b, "the merged JSON is the unsharded one");
    assert!(
        a["seeds_failed"].as_u64().expect("count") > 0,
        "failures were merged"
    );
    let times = |p: String| {
        let xml = std::fs::read_to_string(p).expect("junit");
        xml.split("time=\"")
            .enumerate()
            .map(|(i, part)| {
                if i == 0 {
                    part
                } else {
                    part.split_once('"').map_or(part, |x| x.1)
                }
            })
            .collect::<String>()
    };
    assert_eq!(
        times(file("whole.xml")),
        times(file("merged.xml")),
        "the same JUnit"
    );
    // A merged report is written, one page per scenario under the gate's.
    let o = chatsim(&[&["merge"][..], &piece_args, &["--report", &file("report")]].concat());
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        dir.path().join("report/index.html").is_file()
            && dir.path().join("report/smoke/index.html").is_file()
    );

    let refused = |args: Vec<&str>, why: &str| {
        let o = chatsim(&[&["merge", "--no-report"][..], &args].concat());
        assert_eq!(o.status.code(), Some(2), "{why}: {}", stderr(&o));
        assert!(stderr(&o).contains(why), "want `{why}` in: {}", stderr(&o));
    };
    refused(piece_args[..3].to_vec(), "shard 3/4 is missing");
    refused(
        vec![piece_args[0], piece_args[1], piece_args[1], piece_args[3]],
        "shard 1/4 is given twice",
    );
    let text = std::fs::read_to_string(&pieces[3]).expect("piece");
    let edit = |from: &str, to: &str, name: &str| {
        let path = file(name);
        std::fs::write(&path, text.replace(from, to)).expect("write");
        path
    };
    let other_binary = edit("\"binary\": \"", "\"binary\": \"0000", "binary.json");
    refused(
        vec![piece_args[0], piece_args[1], piece_args[2], &other_binary],
        "binary",
    );
    // The last piece's second scenario is session-race, whose file does not buggify.
    let other_buggify = edit("\"buggify\": false", "\"buggify\": true", "buggify.json");
    refused(
        vec![piece_args[0], piece_args[1], piece_args[2], &other_buggify],
        "ran session-race with BUGGIFY on",
    );
    let other_range = edit("\"last\": 10", "\"last\": 11", "range.json");
    refused(
        vec![piece_args[0], piece_args[1], piece_args[2], &other_range],
        "ran seeds",
    );
    let o = chatsim(&[
        "swarm",
        "smoke",
        "--seeds",
        "1..4",
        "--shard",
        "4",
        "--no-report",
    ]);
    assert_eq!(o.status.code(), Some(2), "no index anywhere");
    assert!(
        stderr(&o).contains("JOB_COMPLETION_INDEX"),
        "{}",
        stderr(&o)
    );
}

// `--buggify` leaves a scenario whose file says it must never buggify as written, and says
// why on standard error; the same file without that line buggifies on the same seed.
#[test]
fn buggify_on_the_command_line_skips_a_scenario_that_must_never_buggify() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/smoke.toml"),
    )
    .expect("smoke scenario");
    // smoke buggifies by its file; without that line, only `--buggify` can make it.
    let text = text.replace("\nbuggify = true\n", "\n");
    let plain = scratch(&tmp, "buggify-plain.toml", &text);
    let never = scratch(
        &tmp,
        "buggify-never.toml",
        &text.replacen(
            "\ndescription = ",
            "\nbuggify_never = \"a test's reason\"\ndescription = ",
            1,
        ),
    );
    let run = |path: &str, seed: u64| {
        let seed = seed.to_string();
        let o = chatsim(&[
            "run",
            path,
            "--seed",
            &seed,
            "--buggify",
            "--json",
            "--no-report",
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        // `knobs` is left out of the JSON when no knob shrank.
        let knobs = json_of(&o)["knobs"].as_array().map_or(0, Vec::len);
        (knobs, stderr(&o))
    };
    // Half the seeds buggify; one of the first eight surely does.
    let seed = (1..=8)
        .find(|&seed| run(&plain, seed).0 > 0)
        .expect("a buggified seed among 1..8");
    let (knobs, err) = run(&never, seed);
    assert_eq!(knobs, 0, "seed {seed} buggified a never-buggify scenario");
    assert!(
        err.contains("not buggified") && err.contains("a test's reason"),
        "{err}"
    );
}
