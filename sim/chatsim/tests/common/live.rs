//! Running the real binary as a user does: `chatsim serve` on ports of this test process's
//! own, terminal clients driven through their stdin, and a server that a failing test leaves
//! behind killed, not orphaned.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// Ports of this test process's own (a deployment takes its gateways' and, 100 up, one per
/// host), under the ephemeral range.
pub fn addr(offset: u32) -> String {
    format!(
        "127.0.0.1:{}",
        10_000 + (std::process::id() % 50) * 400 + offset
    )
}

/// A running `chatsim serve`, killed if a failing test leaves it running (an orphaned server
/// would hold its ports, and the pipes of whoever ran the tests).
pub struct Server(Option<Child>);

impl Server {
    pub fn child(&self) -> &Child {
        self.0.as_ref().expect("running until waited for")
    }

    /// Wait for it to end, with what it printed.
    pub fn wait_with_output(mut self) -> std::io::Result<std::process::Output> {
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
pub fn start_server(addr: &str, args: &[&str]) -> Server {
    let mut all = vec!["serve", "--addr", addr, "--users", "3", "--grace-ms", "300"];
    all.extend_from_slice(args);
    let mut server = command(&all)
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

/// Send `sig` (`-TERM`, `-KILL`) to `child`.
pub fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(ok.success(), "kill {sig}");
}

/// The `chatsim` binary with `args`.
pub fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chatsim"));
    c.args(args);
    c
}

/// A client whose stdout lines arrive on a channel.
pub struct Client {
    pub child: Child,
    pub stdin: ChildStdin,
    pub lines: Receiver<String>,
}

/// A client's own state folder, one per test (`name`), removed when the guard is dropped.
pub fn state(name: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::Builder::new()
        .prefix(&format!("chatsim-client-{name}-"))
        .tempdir()
        .expect("a temp dir");
    let path = dir.path().to_str().expect("a UTF-8 temp path").to_string();
    (dir, path)
}

pub fn client(device: &str, addr: &str, state: &str) -> Client {
    let mut child = command(&[
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
    pub fn say(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").expect("the client reads its stdin");
    }

    /// Lines until one contains `what` (true), or `within` passes (false).
    pub fn wait_for(&self, what: &str, within: Duration, seen: &mut Vec<String>) -> bool {
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
