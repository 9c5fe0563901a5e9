//! The Python client (`clients/python/chatsim_client.py`), written from `docs/protocol.md`
//! alone and sharing no code with the server, against a real `chatsim serve`: two Python
//! devices register, send, receive, decrypt, deduplicate, acknowledge, reconnect and drain;
//! and a Python device and `chatsim client` (the Rust one) open each other's sealed texts.
//!
//! It needs a Python with `websockets` and `cryptography`: `CHATSIM_PYTHON`, else the
//! repository's `.venv` (`.ci/run` makes it from `clients/python/requirements.txt`). Without
//! one it says so and passes, except in CI (`CI` set), where it fails.

mod common;

use common::live::{addr, client, command, start_server, state};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A Python that has the client's packages, if there is one.
fn python() -> Option<PathBuf> {
    let candidates = std::env::var_os("CHATSIM_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain([repo().join(".venv/bin/python")]);
    for py in candidates {
        let ok = Command::new(&py)
            .args(["-c", "import websockets, cryptography"])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return Some(py);
        }
    }
    None
}

#[test]
fn the_python_client_talks_to_chatsim_serve_and_to_the_rust_client() {
    let Some(py) = python() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have a Python with websockets and cryptography (.venv, see .ci/run)"
        );
        eprintln!("skipped: no Python with websockets and cryptography (make .venv: see .ci/run)");
        return;
    };
    let addr = addr(60);
    let server = start_server(&addr, &["--memory"]);
    let (_guard, dir) = state("python");
    let dir = PathBuf::from(dir);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a temp folder");
    for d in ["u0", "u1"] {
        let out = command(&["keys", d, "--addr", &addr, "--users", "3"])
            .output()
            .expect("the binary runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(dir.join(format!("{d}.json")), &out.stdout).expect("writable");
    }

    // The Rust client, user 2: its text waits in the Python device's inbox if need be.
    let st = dir.join("state");
    let st = st.to_str().expect("a UTF-8 temp path");
    let mut rust = client("u2", &addr, st);
    let t = Duration::from_secs(20);
    let mut r_seen = Vec::new();
    assert!(rust.wait_for("connected", t, &mut r_seen), "{r_seen:#?}");
    rust.say("send u0 from rust");

    let out = Command::new(&py)
        .arg(repo().join("clients/python/chatsim_client.py"))
        .args(["selftest", "--rust-peer", "u2", "--state", st])
        .arg("--me")
        .arg(dir.join("u0.json"))
        .arg("--peer")
        .arg(dir.join("u1.json"))
        .output()
        .expect("python runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains("selftest: ok"),
        "{}\n{said}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for step in [
        "sent, received, decrypted",
        "reconnected and drained the inbox in order",
        "shown once (dedup)",
        "acked entries are gone",
        "receipts reach the sender",
        "a text from the Rust client opened here",
    ] {
        assert!(said.contains(step), "missing step {step:?}:\n{said}");
    }
    // And the other way: the Rust client opened the Python device's sealed text, and showed
    // the delivered receipt the Python device sent for its own.
    assert!(
        rust.wait_for("\"from python\"", t, &mut r_seen),
        "{r_seen:#?}"
    );
    assert!(
        r_seen.iter().any(|l| l.contains("✓✓")) || rust.wait_for("✓✓", t, &mut r_seen),
        "{r_seen:#?}"
    );
    rust.say("quit");
    let _ = rust.child.wait();
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
