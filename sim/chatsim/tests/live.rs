//! `chatsim serve` and `chatsim client` as a user runs them: the server in one process, two
//! terminal clients in two more, driven through their stdin. A text goes across with ✓, ✓✓
//! and read, and SIGTERM stops the server cleanly (exit 0, after its grace).

mod common;

use common::live::{addr, client, command, signal, start_server, state};
use std::time::Duration;
#[test]
fn two_terminal_clients_talk_through_chatsim_serve_and_sigterm_stops_it() {
    let addr = addr(350);
    let server = start_server(&addr, &["--memory"]);
    let (_dir, st) = state("two");
    let mut reader = client("u1", &addr, &st);
    let mut writer = client("u0", &addr, &st);
    let (mut r_seen, mut w_seen) = (Vec::new(), Vec::new());
    let t = Duration::from_secs(20);
    assert!(reader.wait_for("connected", t, &mut r_seen), "{r_seen:#?}");
    assert!(writer.wait_for("connected", t, &mut w_seen), "{w_seen:#?}");
    reader.say("open u0");
    assert!(
        reader.wait_for("opens c(u0,u1)", t, &mut r_seen),
        "{r_seen:#?}"
    );
    writer.say("send u1 hello from a terminal");
    writer.say("dance");
    assert!(writer.wait_for("sent ✓", t, &mut w_seen), "{w_seen:#?}");
    assert!(
        reader.wait_for("\"hello from a terminal\"", t, &mut r_seen),
        "{r_seen:#?}"
    );
    assert!(writer.wait_for("✓✓ read", t, &mut w_seen), "{w_seen:#?}");
    assert!(
        w_seen.iter().any(|l| l.contains("not a command")),
        "a mistyped command is answered: {w_seen:#?}"
    );
    for mut c in [reader, writer] {
        c.say("quit");
        let status = c.child.wait().expect("the client ends");
        assert!(status.success(), "{status}");
    }
    signal(server.child(), "-TERM");
    let out = server.wait_with_output().expect("the server ends");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {log}", out.status);
    assert!(
        log.contains("stopped") && log.contains("phone_connections=2"),
        "{log}"
    );
}

#[test]
fn serve_and_client_refuse_bad_input_with_exit_2() {
    for (args, says) in [
        (vec!["serve", "--addr", "10.1.2.3:7400"], "loopback"),
        (vec!["serve", "--role", "gateway-9"], "gateway-9"),
        (vec!["client", "bob"], "u<user>"),
        (vec!["client", "u42"], "u0..u7"),
        (
            vec!["client", "u1", "--state", "/dev/null/x"],
            "--state /dev/null/x",
        ),
    ] {
        let out = command(&args).output().expect("the binary runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

// SIGKILL, not a graceful stop: what was acked was synced, so a server started again on the
// same data folder still has it for the recipient.
#[test]
fn an_acked_text_survives_sigkill_of_chatsim_serve() {
    let addr = addr(150);
    let data = std::env::temp_dir().join(format!("chatsim-live-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let data_arg = data.to_str().expect("a UTF-8 temp path");
    let server = start_server(&addr, &["--data", data_arg]);
    let t = Duration::from_secs(20);
    let (_dir, st) = state("sigkill");
    let mut sender = client("u0", &addr, &st);
    let mut seen = Vec::new();
    assert!(sender.wait_for("connected", t, &mut seen), "{seen:#?}");
    sender.say("send u1 survives a kill");
    assert!(sender.wait_for("sent ✓", t, &mut seen), "{seen:#?}");
    signal(server.child(), "-KILL");
    let _ = server.wait_with_output();
    sender.say("quit");
    let _ = sender.child.wait();

    let server = start_server(&addr, &["--data", data_arg]);
    let mut reader = client("u1", &addr, &st);
    let mut seen = Vec::new();
    assert!(
        reader.wait_for("\"survives a kill\"", t, &mut seen),
        "lost to SIGKILL: {seen:#?}"
    );
    reader.say("quit");
    let _ = reader.child.wait();
    signal(server.child(), "-TERM");
    let out = server.wait_with_output().expect("the server ends");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}: {log}", out.status);
    assert!(log.contains("recovered"), "{log}");
    let _ = std::fs::remove_dir_all(&data);
}

// A terminal client is a new process each time it starts, and its device's message ids counted
// from 0 again: the second run's first text reused the first run's id, so the shard answered it
// with the old text's ✓ (a retry, as far as it could tell) and the reader dropped it as a
// duplicate. Sent ✓, never shown: a lost message. The client now keeps its id counter in its
// state folder.
#[test]
fn a_client_started_again_never_reuses_a_message_id() {
    let addr = addr(10);
    let server = start_server(&addr, &["--memory"]);
    let t = Duration::from_secs(20);
    let (_dir, st) = state("again");
    let _ = std::fs::remove_dir_all(&st);
    let mut reader = client("u1", &addr, &st);
    let mut r_seen = Vec::new();
    assert!(reader.wait_for("connected", t, &mut r_seen), "{r_seen:#?}");
    for text in ["from the first run", "from the second run"] {
        let mut writer = client("u0", &addr, &st);
        let mut w_seen = Vec::new();
        assert!(writer.wait_for("connected", t, &mut w_seen), "{w_seen:#?}");
        writer.say(&format!("send u1 {text}"));
        assert!(writer.wait_for("sent ✓", t, &mut w_seen), "{w_seen:#?}");
        assert!(
            reader.wait_for(&format!("\"{text}\""), t, &mut r_seen),
            "{text:?} was acked but never shown: {r_seen:#?}"
        );
        writer.say("quit");
        assert!(writer.child.wait().expect("the client ends").success());
    }
    reader.say("quit");
    let _ = reader.child.wait();
    signal(server.child(), "-TERM");
    let _ = server.wait_with_output();
    let _ = std::fs::remove_dir_all(&st);
}
