//! `chatsim serve` and `chatsim client`: the command line's side of the real server. The
//! serving itself is `chatsim-server`'s; this module turns flags into a deployment, names into
//! hosts and devices, and typed lines into the same [`Action`]s a scenario's plan holds.

use chatsim_server::phone::{IdStore, Phone};
use chatsim_server::serve::{bind, signalled, ServeError, Served};
use chatsim_server::Config;
use chatsim_system::proto::{ConvId, DeviceId, Host, Millis, UserId};
use chatsim_system::Action;
use real_tokio::sync::mpsc::unbounded_channel;
use std::io::{BufRead, Write};
use std::net::SocketAddr;

/// Who exists and where they listen: `serve` and `client` must be given the same.
#[derive(clap::Args, Clone, Debug)]
pub struct DeploymentArgs {
    /// Gateway 1's WebSocket address, on loopback; gateway N listens N-1 ports up from it and
    /// the servers' own links 100 ports up.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub addr: SocketAddr,
    /// Users (u0, u1, ...).
    #[arg(long, default_value_t = 8)]
    pub users: u32,
    /// Devices per user: a primary phone (d0) and companions (d1, ...).
    #[arg(long, default_value_t = 1)]
    pub devices_per_user: u8,
    /// Gateways.
    #[arg(long, default_value_t = 2)]
    pub gateways: u16,
    /// Chat shards.
    #[arg(long, default_value_t = 2)]
    pub shards: u16,
    /// Derives every device's keys: a client must be given its server's.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl DeploymentArgs {
    /// The deployment these flags describe, checked, and its device named `name`.
    pub fn device(&self, name: &str) -> Result<(Config, DeviceId), String> {
        let cfg = self.config();
        cfg.validate().map_err(|e| e.to_string())?;
        let me = parse_device(&cfg, name)?;
        Ok((cfg, me))
    }

    /// The deployment these flags describe.
    pub fn config(&self) -> Config {
        Config {
            addr: self.addr,
            users: self.users,
            devices_per_user: self.devices_per_user,
            gateways: self.gateways,
            shards: self.shards,
            seed: self.seed,
            phone_connections_max: chatsim_server::DEFAULT_PHONE_CONNECTIONS_MAX,
            bugs: Default::default(),
        }
    }
}

/// The hosts `names` (as the logs print them: gateway-1, session, shard-2, storage-1, push).
pub fn parse_roles(cfg: &Config, names: &[String]) -> Result<Vec<Host>, String> {
    let hosts = cfg.hosts();
    names
        .iter()
        .map(|n| {
            hosts
                .iter()
                .copied()
                .find(|h| h.to_string() == *n)
                .ok_or_else(|| {
                    let known: Vec<String> = hosts.iter().map(ToString::to_string).collect();
                    format!(
                        "--role {n}: not a host of this deployment ({})",
                        known.join(", ")
                    )
                })
        })
        .collect()
}

/// A device named `u3` (user 3's primary phone) or `u3.d1` (its first companion).
pub fn parse_device(cfg: &Config, s: &str) -> Result<DeviceId, String> {
    let bad = || format!("device {s:?}: expected u<user> or u<user>.d<index>, e.g. u0 or u0.d1");
    let rest = s.strip_prefix('u').ok_or_else(bad)?;
    let (user, index) = match rest.split_once(".d") {
        Some((u, d)) => (u, d.parse::<u8>().map_err(|_| bad())?),
        None => (rest, 0),
    };
    let user = UserId(user.parse().map_err(|_| bad())?);
    let d = DeviceId { user, index };
    if user.0 >= cfg.users || index >= cfg.devices_per_user {
        return Err(format!(
            "device {s}: the deployment has users u0..u{} with {} device(s) each",
            cfg.users - 1,
            cfg.devices_per_user
        ));
    }
    Ok(d)
}

/// The first word of `s` and the rest, trimmed.
fn two_words(s: &str) -> Option<(&str, &str)> {
    s.split_once(' ').map(|(a, b)| (a, b.trim()))
}

/// What `help` prints.
pub const CLIENT_HELP: &str = "\
commands:
  send u1 <text>         a text to user 1
  open u1 | open g2      open a chat: what it shows there is read (blue ticks for the sender)
  close u1 | close g2    leave it
  group 2 u1 u3          create group 2 with users 1 and 3
  gsend 2 <text>         a text to group 2
  add 2 u4 | remove 2 u4 change group 2's members
  offline | online       airplane mode, and back (the backlog arrives)
  quit";

/// A line `me`'s user typed, as an action: `Ok(None)` for a blank line or `help`, `Err` for
/// a mistake.
pub fn parse_command(me: DeviceId, line: &str) -> Result<Option<Action>, String> {
    let line = line.trim();
    let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
    let rest = rest.trim();
    let user = |s: &str| {
        s.strip_prefix('u')
            .and_then(|n| n.parse().ok())
            .map(UserId)
            .ok_or_else(|| format!("{s:?}: expected a user, e.g. u1"))
    };
    let group = |s: &str| {
        s.strip_prefix('g')
            .unwrap_or(s)
            .parse::<u32>()
            .map_err(|_| format!("{s:?}: expected a group number, e.g. 2"))
    };
    let action = match word {
        "" | "help" => return Ok(None),
        "send" => {
            let (to, text) = two_words(rest).ok_or("send u1 <text>")?;
            Action::SendDirect {
                to: user(to)?,
                body: text.as_bytes().to_vec(),
            }
        }
        "gsend" => {
            let (g, text) = two_words(rest).ok_or("gsend 2 <text>")?;
            Action::SendGroup {
                group: group(g)?,
                body: text.as_bytes().to_vec(),
            }
        }
        "group" => {
            let mut words = rest.split_whitespace();
            let g = group(words.next().ok_or("group 2 u1 u3")?)?;
            let members = words.map(user).collect::<Result<Vec<_>, _>>()?;
            Action::CreateGroup { group: g, members }
        }
        "add" | "remove" => {
            let (g, u) = two_words(rest).ok_or("add 2 u4")?;
            let (group, user) = (group(g)?, user(u)?);
            if word == "add" {
                Action::AddMember { group, user }
            } else {
                Action::RemoveMember { group, user }
            }
        }
        "open" | "close" => {
            let conv = if rest.starts_with('g') {
                ConvId::group(group(rest)?)
            } else {
                ConvId::direct(me.user, user(rest)?)
            };
            if word == "open" {
                Action::OpenChat { conv }
            } else {
                Action::CloseChat { conv }
            }
        }
        "offline" => Action::GoOffline,
        "online" => Action::GoOnline,
        other => return Err(format!("{other:?}: not a command (type help)")),
    };
    Ok(Some(action))
}

/// What a client outside this codebase needs to be device `me` of `cfg`'s deployment, as
/// JSON (`chatsim keys`): where the gateways are, its token, its X25519 key pair, and every
/// device's public key. The stand-in for provisioning and a key server (`docs/protocol.md`):
/// whoever has the deployment's seed can print any device's secret.
pub fn provisioning(cfg: &Config, me: DeviceId) -> serde_json::Value {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let topo = cfg.deployment();
    let keys = chatsim_system::e2e::device_keypair(topo.key_seed, me, None);
    let directory: Vec<serde_json::Value> = (0..cfg.users)
        .flat_map(|u| topo.devices_of(UserId(u)))
        .filter_map(|d| {
            let public = topo.keys.get(&d)?;
            Some(serde_json::json!({
                "user": d.user.0,
                "index": d.index,
                "public": hex(public),
            }))
        })
        .collect();
    serde_json::json!({
        "device": { "user": me.user.0, "index": me.index },
        "token": chatsim_system::routing::device_token(me),
        "secret": hex(&keys.secret_bytes()),
        "public": hex(&keys.public),
        "gateways": (0..cfg.gateways)
            .map(|g| format!("ws://{}/", cfg.gateway_addr(g)))
            .collect::<Vec<_>>(),
        "directory": directory,
    })
}

/// Serve until Ctrl-C or SIGTERM, keeping the data in `data` (memory only when `None`) and the
/// session table on the Redis at `sessions` if given.
pub fn serve(
    cfg: &Config,
    roles: &[Host],
    data: Option<&std::path::Path>,
    sessions: Option<&str>,
    grace_ms: Millis,
) -> Result<Served, ServeError> {
    bind(cfg, roles, data, sessions)?.run(signalled(), grace_ms)
}

/// Where a client keeps device `me`'s message id counter in its state folder `dir`.
pub fn ids_path(dir: &std::path::Path, me: DeviceId) -> std::path::PathBuf {
    dir.join(format!("{me}.next-id"))
}

/// Be device `me` of `cfg`'s deployment: lines from `input` are commands, what the phone
/// observes goes to `out`, one line each. Message ids are handed out past those `ids` has
/// kept, so a client started again never reuses one. Returns when `input` ends or says
/// `quit`.
pub fn client(
    cfg: &Config,
    me: DeviceId,
    ids: IdStore,
    input: impl BufRead + Send + 'static,
    mut out: impl Write,
) -> std::io::Result<()> {
    let (todo, actions) = unbounded_channel();
    let (errors_tx, mut errors) = unbounded_channel::<String>();
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            for line in input.lines() {
                let Ok(line) = line else { break };
                if line.trim() == "quit" {
                    break;
                }
                match parse_command(me, &line) {
                    Ok(Some(a)) => {
                        if todo.send(a).is_err() {
                            break;
                        }
                    }
                    Ok(None) => {
                        let _ = errors_tx.send(CLIENT_HELP.to_string());
                    }
                    Err(e) => {
                        let _ = errors_tx.send(format!("? {e}"));
                    }
                }
            }
        })?;
    writeln!(
        out,
        "{me}: connecting to ws://{} (type help)",
        cfg.gateway_addr(0)
    )?;
    let rt = real_tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = real_tokio::task::LocalSet::new();
    let mut phone = Phone::keeping_ids(cfg, me, ids);
    let t0 = chatsim_server::now();
    let mut failed = Ok(());
    local.block_on(&rt, async {
        let lines = std::cell::RefCell::new(Vec::new());
        let run = phone.run(actions, |r| {
            let at = r.t.saturating_sub(t0) as f64 / 1000.0;
            lines
                .borrow_mut()
                .push(format!("{at:>8.3} s  {}", crate::output::record_line(r)));
        });
        real_tokio::pin!(run);
        loop {
            real_tokio::select! {
                biased;
                done = &mut run => {
                    if let Err(e) = done {
                        failed = Err(e);
                    }
                    break;
                }
                Some(e) = errors.recv() => lines.borrow_mut().push(e),
                () = real_tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
            }
            for l in lines.borrow_mut().drain(..) {
                if let Err(e) = writeln!(out, "{l}") {
                    failed = Err(e);
                }
            }
            if failed.is_err() {
                break;
            }
        }
        for l in lines.borrow_mut().drain(..) {
            let _ = writeln!(out, "{l}");
        }
    });
    failed
}

/// The memory a run may use, in bytes, and where that figure came from: the
/// `CHATSIM_MEMORY_LIMIT_MIB` variable if set (for a container whose `/proc/meminfo` shows
/// its host, and for tests), else the smaller of the kernel's `MemAvailable` and what this
/// process's cgroup still allows. `None` where neither can be read.
pub fn memory_available() -> Option<(u64, &'static str)> {
    if let Ok(v) = std::env::var("CHATSIM_MEMORY_LIMIT_MIB") {
        if let Ok(mib) = v.trim().parse::<u64>() {
            return Some((mib << 20, "CHATSIM_MEMORY_LIMIT_MIB"));
        }
    }
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        let kib: u64 = s
            .lines()
            .find_map(|l| l.strip_prefix("MemAvailable:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        Some(kib << 10)
    });
    let read = |f: &str| {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{f}"))
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    // "max" (no limit) does not parse, and leaves the kernel's figure.
    let cgroup =
        read("memory.max").map(|max| max.saturating_sub(read("memory.current").unwrap_or(0)));
    match (meminfo, cgroup) {
        (Some(m), Some(c)) if c < m => Some((c, "the cgroup's memory.max")),
        (Some(m), _) => Some((m, "MemAvailable in /proc/meminfo")),
        (None, Some(c)) => Some((c, "the cgroup's memory.max")),
        (None, None) => None,
    }
}

/// A server `chatsim load` started for itself, stopped (SIGKILL) when dropped, its data
/// folder removed then.
pub struct Spawned {
    child: std::process::Child,
    args: Vec<String>,
    log: std::path::PathBuf,
    data: Option<std::path::PathBuf>,
}

impl Spawned {
    /// Its process id, for reading its memory and CPU.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(d) = &self.data {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl crate::load::Restart for Spawned {
    fn kill(&mut self) -> Result<(), String> {
        // Child::kill is SIGKILL: no grace, no flush; the page cache survives, as it does
        // when a process crashes (power loss is another matter: see docs/protocol.md).
        self.child
            .kill()
            .map_err(|e| format!("cannot kill the server: {e}"))
    }

    fn gone(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)) | Err(_))
    }

    fn start(&mut self) -> Result<u32, String> {
        self.child = start_child(&self.args, &self.log, true)?;
        Ok(self.child.id())
    }

    fn stopped(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!(
                "the restarted server stopped ({status}); its output is in {}",
                self.log.display()
            )),
            _ => None,
        }
    }
}

fn start_child(
    args: &[String],
    log: &std::path::Path,
    append: bool,
) -> Result<std::process::Child, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(log)
        .map_err(|e| format!("{}: {e}", log.display()))?;
    let err = out
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    std::process::Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("cannot start the server: {e}"))
}

fn wait_listening(
    child: &mut std::process::Child,
    addr: SocketAddr,
    log: &std::path::Path,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!(
                "the server stopped at once ({status}); its output is in {}",
                log.display()
            ));
        }
        if std::time::Instant::now() > deadline {
            return Err(format!(
                "the server did not listen at {addr} within 30 s; its output is in {}",
                log.display()
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Start this binary as `args` (a `serve` or `relay` command), its output going to `log`, and
/// wait until `addr` takes connections. `data` is removed when the server is dropped.
pub fn spawn_self(
    args: &[String],
    addr: SocketAddr,
    log: &std::path::Path,
    data: Option<std::path::PathBuf>,
) -> Result<Spawned, String> {
    let child = start_child(args, log, false)?;
    let mut spawned = Spawned {
        child,
        args: args.to_vec(),
        log: log.to_path_buf(),
        data,
    };
    wait_listening(&mut spawned.child, addr, log)?;
    Ok(spawned)
}

/// The `chatsim serve` arguments for `cfg`, with its data in `data` (memory only if `None`).
pub fn serve_args(cfg: &Config, data: Option<&std::path::Path>) -> Vec<String> {
    let mut a = vec![
        "serve".to_string(),
        format!("--addr={}", cfg.addr),
        format!("--users={}", cfg.users),
        format!("--devices-per-user={}", cfg.devices_per_user),
        format!("--gateways={}", cfg.gateways),
        format!("--shards={}", cfg.shards),
        format!("--seed={}", cfg.seed),
        format!("--connections-max={}", cfg.phone_connections_max),
    ];
    a.extend(cfg.bugs.iter().map(|b| format!("--bug={b}")));
    match data {
        Some(d) => a.push(format!("--data={}", d.display())),
        None => a.push("--memory".into()),
    }
    a
}

/// Run the bare relay (the floor `chatsim load --floor` measures against) at `addr` until the
/// process is stopped.
pub fn relay(addr: SocketAddr) -> std::io::Result<()> {
    if !addr.ip().is_loopback() {
        return Err(std::io::Error::other(format!(
            "--addr {addr}: the relay listens on loopback only (127.0.0.1 or ::1)"
        )));
    }
    chatsim_server::raise_fd_limit();
    let rt = real_tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let l = real_tokio::net::TcpListener::from_std(chatsim_server::serve::listen(addr)?)?;
        chatsim_server::relay::relay(l).await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_lines_become_the_actions_a_plan_holds() {
        let me = DeviceId::primary(UserId(0));
        let act = |l: &str| parse_command(me, l);
        assert_eq!(
            act("send u1 hi there"),
            Ok(Some(Action::SendDirect {
                to: UserId(1),
                body: b"hi there".to_vec()
            }))
        );
        assert_eq!(
            act("open u1"),
            Ok(Some(Action::OpenChat {
                conv: ConvId::direct(UserId(0), UserId(1))
            }))
        );
        assert_eq!(
            act("close g2"),
            Ok(Some(Action::CloseChat {
                conv: ConvId::group(2)
            }))
        );
        assert_eq!(
            act("group 2 u1 u3"),
            Ok(Some(Action::CreateGroup {
                group: 2,
                members: vec![UserId(1), UserId(3)]
            }))
        );
        assert_eq!(act("offline"), Ok(Some(Action::GoOffline)));
        assert_eq!(act("help"), Ok(None));
        assert!(act("send u1").is_err());
        assert!(act("send bob hi").is_err());
        assert!(act("dance").is_err());
    }

    // The keys handed out are the ones the deployment's other devices seal for.
    #[test]
    fn a_provisioned_device_gets_its_own_keys_and_everyones_public_half() {
        let cfg = Config::default();
        let me = DeviceId::primary(UserId(2));
        let p = provisioning(&cfg, me);
        let topo = cfg.deployment();
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        assert_eq!(p["public"], hex(topo.keys.get(&me).expect("listed")));
        assert_eq!(p["directory"].as_array().map(Vec::len), Some(8));
        assert_eq!(p["token"], chatsim_system::routing::device_token(me));
        let other = provisioning(&cfg, DeviceId::primary(UserId(3)));
        assert_ne!(p["secret"], other["secret"]);
        assert_eq!(p["secret"].as_str().map(str::len), Some(64));
    }

    #[test]
    fn names_resolve_to_the_deployments_hosts_and_devices_or_say_why_not() {
        let cfg = Config::default();
        assert_eq!(
            parse_roles(&cfg, &["gateway-2".into(), "session".into()]),
            Ok(vec![Host::Gateway(1), Host::Session])
        );
        let e = parse_roles(&cfg, &["gateway-9".into()]).expect_err("no such gateway");
        assert!(e.contains("gateway-9") && e.contains("shard-1"), "{e}");
        assert_eq!(parse_device(&cfg, "u3"), Ok(DeviceId::primary(UserId(3))));
        assert!(parse_device(&cfg, "u3.d1").is_err(), "one device per user");
        assert!(parse_device(&cfg, "u99").is_err());
        assert!(parse_device(&cfg, "bob").is_err());
    }
}
