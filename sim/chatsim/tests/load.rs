//! `chatsim load` as a user runs it: real WebSocket phones against a `chatsim serve` it starts
//! itself (on disk), the history judged. The design passes, with the server SIGKILLed mid
//! fan-out and mid drain too; a server with a zoo bug fails, on real sockets; the bare relay
//! floor delivers everything. Sized for CI (a few hundred phones, seconds each), one at a time.

mod common;

use common::live::{addr, command};
use serde_json::Value;
use std::sync::Mutex;

/// Load runs measure time: two at once on two cores would measure each other.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Run `chatsim load` with `args` (plus JSON output and a report folder of its own); its exit
/// code and figures.
fn load(name: &str, offset: u32, args: &[&str]) -> (i32, Value) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out_dir = std::env::temp_dir().join(format!("chatsim-load-{name}-{}", std::process::id()));
    let at = addr(offset);
    let mut all = vec![
        "load",
        "--json",
        "--addr",
        &at,
        "--out",
        out_dir.to_str().expect("a UTF-8 temp path"),
    ];
    all.extend_from_slice(args);
    let out = command(&all).output().expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let figures: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON from chatsim load ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        out_dir.join("index.html").exists(),
        "the report is written whatever the verdict"
    );
    let _ = std::fs::remove_dir_all(&out_dir);
    (out.status.code().unwrap_or(-1), figures)
}

fn failing(figures: &Value) -> Vec<String> {
    figures["verdict"]
        .as_array()
        .expect("a verdict")
        .iter()
        .filter(|v| v["holds"] == false)
        .map(|v| v["name"].as_str().unwrap_or("?").to_string())
        .collect()
}

fn n(figures: &Value, field: &str) -> u64 {
    figures[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {figures}"))
}

const SMALL: &[&str] = &[
    "--devices",
    "300",
    "--rate",
    "300",
    "--groups",
    "10",
    "--group-size",
    "6",
    "--away-share",
    "10",
    "--away-secs",
    "1.5",
];

// The design under real load: every phone connects, every text is acked and shown once, in
// order, and every checker holds; memory per idle connection is measured, and the same
// schedule through the bare relay is set beside it.
#[test]
fn a_load_run_on_real_sockets_is_judged_and_passes() {
    let mut args = SMALL.to_vec();
    let floor_at = addr(45);
    args.extend([
        "--duration",
        "3",
        "--beside-floor",
        "--floor-addr",
        &floor_at,
    ]);
    let (code, f) = load("design", 30, &args);
    assert_eq!(failing(&f), Vec::<String>::new(), "{f}");
    assert_eq!(code, 0, "{f}");
    assert_eq!(n(&f, "connected"), 300);
    assert!(n(&f, "sends") >= 850, "{f}");
    assert_eq!(n(&f, "acked"), n(&f, "sends"));
    assert_eq!(n(&f, "displayed"), n(&f, "owed"));
    assert!(
        f["display_by_path"]["inbox"]["count"].as_u64() > Some(0),
        "away phones drain"
    );
    assert!(f["kib_per_idle_connection"].as_f64() > Some(0.0), "{f}");
    assert!(n(&f, "history_events") > 3_000);
    // Beside the floor, at a rate both keep up with: the same displays a second, and a ratio
    // for latency and CPU.
    let beside = &f["beside_floor"];
    let ratio = beside["delivered_ratio"].as_f64().expect("a ratio");
    assert!((0.9..1.1).contains(&ratio), "{beside}");
    assert!(beside["display_p99_ratio"].as_f64() > Some(0.0), "{beside}");
    assert!(beside["cpu_ratio"].as_f64() > Some(0.0), "{beside}");
}

// SIGKILL under load, aimed mid group fan-out, mid inbox drain and anywhere, the server
// started again on the same data folder each time: every acked text is still shown once, in
// order. The same kills catch a server that acks before its write is synced.
#[test]
fn a_server_killed_under_load_loses_nothing_it_acked() {
    let mut args = SMALL.to_vec();
    args.extend(["--duration", "6", "--kills", "3"]);
    let (code, f) = load("kills", 30, &args);
    assert_eq!(failing(&f), Vec::<String>::new(), "{f}");
    assert_eq!(code, 0, "{f}");
    let aims: Vec<&str> = f["kills"]
        .as_array()
        .expect("kills")
        .iter()
        .map(|k| k[0].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(aims.len(), 3, "{f}");
    for aim in ["MidFanout", "MidDrain", "Anywhere"] {
        assert!(aims.contains(&aim), "{aims:?}");
    }
    assert_eq!(n(&f, "acked"), n(&f, "sends"));
    assert_eq!(n(&f, "displayed"), n(&f, "owed"));

    args.extend(["--bug", "ack-before-persist", "--settle", "4"]);
    let (code, f) = load("kills-bug", 30, &args);
    assert_eq!(code, 1, "{f}");
    let broken = failing(&f);
    assert!(
        broken.iter().any(|b| b == "no_loss" || b == "liveness"),
        "an ack ahead of its sync dies with the server: {broken:?}"
    );
}

// A server that parks nothing for offline phones, under load with phones away: the judged
// history shows the loss and the run exits 1.
#[test]
fn a_load_run_against_a_server_that_loses_messages_fails() {
    let mut args = SMALL.to_vec();
    let share = args
        .iter()
        .position(|a| *a == "--away-share")
        .expect("in SMALL");
    args[share + 1] = "20";
    args.extend([
        "--duration",
        "3",
        "--settle",
        "3",
        "--bug",
        "no-offline-inbox",
    ]);
    let (code, f) = load("bug", 70, &args);
    assert_eq!(code, 1, "{f}");
    assert!(failing(&f).contains(&"no_loss".to_string()), "{f}");
    assert!(n(&f, "displayed") < n(&f, "owed"));
}

// The floor: the same schedule through a bare relay, every message delivered.
#[test]
fn the_bare_relay_floor_delivers_the_same_schedule() {
    let (code, f) = load(
        "floor",
        40,
        &[
            "--floor",
            "--devices",
            "200",
            "--rate",
            "200",
            "--duration",
            "2",
        ],
    );
    assert_eq!(code, 0, "{f}");
    assert_eq!(f["target"], "floor");
    assert_eq!(n(&f, "connected"), 200);
    assert_eq!(n(&f, "displayed"), n(&f, "owed"));
    assert!(n(&f, "owed") >= 400);
}

// A flag that cannot run is refused before anything starts, naming it, with exit code 2.
#[test]
fn a_load_that_cannot_run_names_its_flag() {
    let out = command(&["load", "--rate", "0"])
        .output()
        .expect("the binary runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--rate"), "{err}");
    let out = command(&["load", "--kills", "2", "--server-memory"])
        .output()
        .expect("the binary runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--kills"));
}
