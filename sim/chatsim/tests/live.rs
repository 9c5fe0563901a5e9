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
fn addr() -> String {
    format!(
        "127.0.0.1:{}",
        10_000 + (std::process::id() % 50) * 400 + 350
    )
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

fn client(device: &str, addr: &str) -> Client {
    let mut child = chatsim(&["client", device, "--addr", addr, "--users", "3"])
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
    let addr = addr();
    let server = chatsim(&[
        "serve",
        "--addr",
        &addr,
        "--users",
        "3",
        "--grace-ms",
        "300",
    ])
    .stderr(Stdio::piped())
    .spawn()
    .expect("the binary runs");
    let up = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(&addr).is_err() {
        assert!(
            Instant::now() < up,
            "chatsim serve never listened on {addr}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut reader = client("u1", &addr);
    let mut writer = client("u0", &addr);
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
    let killed = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
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
    ] {
        let out = chatsim(&args).output().expect("the binary runs");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
    }
}
