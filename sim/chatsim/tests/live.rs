//! `chatsim serve` and `chatsim client` as a user runs them: the server in one process, two
//! terminal clients in two more, driven through their stdin. A text goes across with ✓, ✓✓
//! and read, and SIGTERM stops the server cleanly (exit 0, after its grace).

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// Ports of this test process's own (a deployment takes its gateways' and, 100 up, one per
/// host), under the ephemeral range.
fn addr(offset: u32) -> String {
    format!(
        "127.0.0.1:{}",
        10_000 + (std::process::id() % 50) * 400 + offset
    )
}

/// A running `chatsim serve`, killed if a failing test leaves it running (an orphaned server
/// would hold its ports, and the pipes of whoever ran the tests).
struct Server(Option<Child>);

impl Server {
    fn child(&self) -> &Child {
        self.0.as_ref().expect("running until waited for")
    }

    /// Wait for it to end, with what it printed.
    fn wait_with_output(mut self) -> std::io::Result<std::process::Output> {
        self.0.take().expect("waited for once").wait_with_output()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Start `chatsim serve` with `args` and wait until it listens on `addr`.
fn start_server(addr: &str, args: &[&str]) -> Server {
    let mut all = vec!["serve", "--addr", addr, "--users", "3", "--grace-ms", "300"];
    all.extend_from_slice(args);
    let mut server = chatsim(&all)
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    let up = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        if let Ok(Some(status)) = server.try_wait() {
            panic!("chatsim serve exited ({status}) before listening on {addr}");
        }
        assert!(
            Instant::now() < up,
            "chatsim serve never listened on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Server(Some(server))
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(ok.success(), "kill {sig}");
}

fn chatsim(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chatsim"));
    c.args(args);
    c
}

/// A client whose stdout lines arrive on a channel.
struct Client {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

/// A client's own state folder, one per test (`name`) and process.
fn state(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("chatsim-client-{name}-{}", std::process::id()));
    dir.to_str().expect("a UTF-8 temp path").to_string()
}

fn client(device: &str, addr: &str, state: &str) -> Client {
    let mut child = chatsim(&[
        "client", device, "--addr", addr, "--users", "3", "--state", state,
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .spawn()
    .expect("the binary runs");
    let stdin = child.stdin.take().expect("piped");
    let stdout = child.stdout.take().expect("piped");
    let (tx, lines) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Client {
        child,
        stdin,
        lines,
    }
}

impl Client {
    fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("the client reads its stdin");
    }

    /// Lines until one contains `what` (true), or `within` passes (false).
    fn wait_for(&self, what: &str, within: Duration, seen: &mut Vec<String>) -> bool {
        let end = Instant::now() + within;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    let hit = l.contains(what);
                    seen.push(l);
                    if hit {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }
}

#[test]
fn two_terminal_clients_talk_through_chatsim_serve_and_sigterm_stops_it() {
    let addr = addr(350);
    let server = start_server(&addr, &["--memory"]);
    let st = state("two");
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
        let out = chatsim(&args).output().expect("the binary runs");
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
    let st = state("sigkill");
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
    let st = state("again");
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
