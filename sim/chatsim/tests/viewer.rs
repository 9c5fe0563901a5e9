//! The run viewer in a real browser: `clients/viewer-test` drives a report's viewer in
//! headless Chromium with real clicks and key presses and checks what each step shows against
//! the run's `history.jsonl` (see that script). This test runs it with the binary `cargo test`
//! built.
//!
//! It needs Node.js, Chromium (`CHROMIUM`, else `chromium` on the PATH) and the script's
//! packages (`npm ci` in `clients/viewer-test`, which `.ci/run` does). Without them it says so
//! and passes, except in CI (`CI` set), where it fails.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn found(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_viewer_shows_what_the_history_says_after_every_click_and_key() {
    let dir = repo().join("clients/viewer-test");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".to_string());
    let missing: Vec<&str> = [
        (!found("node", "--version")).then_some("node"),
        (!found(&chromium, "--version")).then_some("chromium"),
        (!dir.join("node_modules/puppeteer-core").is_dir())
            .then_some("clients/viewer-test/node_modules (npm ci there)"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !missing.is_empty() {
        let why = format!(
            "the viewer test did not run: missing {}",
            missing.join(", ")
        );
        assert!(std::env::var_os("CI").is_none(), "{why}");
        eprintln!("{why}");
        return;
    }
    let chromium_path = if chromium.contains('/') {
        chromium
    } else {
        String::from_utf8(
            Command::new("sh")
                .args(["-c", &format!("command -v {chromium}")])
                .output()
                .expect("sh runs")
                .stdout,
        )
        .expect("a path")
        .trim()
        .to_string()
    };
    let o = Command::new("node")
        .arg("viewer-test.js")
        .current_dir(&dir)
        .env("CHATSIM_BIN", env!("CARGO_BIN_EXE_chatsim"))
        .env("CHROMIUM", chromium_path)
        .output()
        .expect("node runs");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "the viewer test failed:\n{out}\n{err}");
    println!("{out}");
}
