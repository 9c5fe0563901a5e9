//! # chatsim-turmoil: the second engine
//!
//! The same scenario, plan and `chatsim-system` machines as the madsim engine, carried by
//! turmoil instead: real tokio on one paused current-thread runtime per host, turmoil's
//! simulated TCP between hosts, and a nemesis that steps the simulation and injects the plan's
//! faults between steps with turmoil's own primitives. Two independent simulators running the
//! same files must reach the same verdicts; a disagreement is a bug in one of them or in how
//! the system is driven.
//!
//! Shape of the world, chosen from turmoil's costs (it steps every host every tick and
//! scans links per host, so cost grows steeply with the number of hosts): each server is a
//! host; phones share a few **cell** hosts, one TCP connection per phone, the way a mobile
//! network carries many handsets. A per-phone fault is applied by its cell (a silent phone
//! stops reading and writing its connection; going offline or dropping the connection is the
//! phone's own doing), and a whole cell could be cut off like a mobile outage.
//!
//! Faults map onto turmoil:
//! - kill / restart: `crash` / `bounce` (the host's tasks are dropped, sockets with them; the
//!   machine restarts from what it made durable, kept outside the hosts as in the madsim
//!   engine).
//! - clog and partition: `hold` / `release` on every link of the cut: frames wait and then
//!   arrive in a burst, which is what TCP's retransmission does over a healed cut and what
//!   madsim's clogs do. (turmoil's `partition` drops segments instead, and a stream that lost
//!   one stalls forever, even after repair; only `partition-oneway` uses it.)
//! - a scenario's extra per-link latency: turmoil's per-link latency. turmoil's links are
//!   undirected, so an extra latency set for `a -> b` applies both ways here.
//!
//! Determinism: turmoil's generator is seeded from the run seed, and with `--cfg
//! tokio_unstable` (set for the whole workspace) turmoil seeds every host runtime's generator
//! too and a panicking task shuts its runtime down, which fails the run instead of going
//! unnoticed.

use bytes::{Bytes, BytesMut};
use chatsim_system::bugs::Bugs;
use chatsim_system::device::Device;
use chatsim_system::durable::Write;
use chatsim_system::limits::SERVER_LINK_KEEPALIVE_MS;
use chatsim_system::probe::Probe;
use chatsim_system::proto::{ConnId, DeviceId, Host, Millis, UserId};
use chatsim_system::Action;
use chatsim_world::deploy::{deployment, device_seed, Durable};
use chatsim_world::host::{ConnEvent, PhoneEvent, PhoneHost, PhoneLinks, ServerHost, ServerLinks};
use chatsim_world::nemesis::FaultLedger;
use chatsim_world::plan::{role_of, server_hosts, Plan};
use chatsim_world::record::{Keep, RawRun, Recorder, SAMPLE_MS};
use chatsim_world::scenario::{NetworkSpec, Role, Scenario};
use chatsim_world::wire::{decode, encode, Frame, Wire};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use tokio::task::spawn_local;
use turmoil::net::{TcpListener, TcpStream};

mod faults;
mod floor;
mod served;

use faults::{Links, Primitives};
pub use floor::floor;

/// The name this engine goes by in reports and JSON.
pub const ENGINE: &str = "turmoil";
/// The name of this engine carrying `chatsim serve`'s own serving code (see `served.rs`).
pub const ENGINE_SERVED: &str = "served";

/// Whose code carries the machines' bytes on turmoil's sockets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Carrier {
    /// This engine's own connection code: plain TCP to gateways, link keepalives.
    #[default]
    Engine,
    /// `chatsim serve`'s and `chatsim client`'s: its host loop, WebSocket to gateways, its
    /// server links.
    Served,
}
/// The port every server listens on.
const PORT: u16 = 7000;
/// Read buffer per connection, in bytes.
const READ_BUFFER_BYTES: usize = 8 * 1024;
/// Cell hosts that carry the phones: turmoil's per-step cost grows with hosts (partition-heal
/// seed 7 ran in about half the wall time on 2 cells as on 4).
const CELLS: u32 = 2;
/// Phones one cell may carry: a turmoil host has 16,384 ephemeral ports, one per connection
/// (and a reconnecting phone holds an old one a while), so bigger worlds get more cells.
const PHONES_PER_CELL_MAX: u32 = 12_000;
/// Segments a socket may hold unread. turmoil's default (64) would push back on a busy
/// gateway's connections far sooner than a kernel's socket buffer does.
const TCP_CAPACITY: usize = 1 << 16;
/// How long frames on a server link may wait for an acknowledgement, without progress, before
/// the link is taken for dead and replaced, at the least: the deployment's keepalive
/// ([`SERVER_LINK_KEEPALIVE_MS`]), not TCP's user timeout of tens of seconds, because a server
/// that retries into a stalled stream stalls with it: with a 10 s timeout here,
/// oneway-partition seed 5015 had every storage write wait out one stalled link for 10 s, 8 s
/// of it past the heal. One second is over twenty of the slowest round trips the scenarios'
/// base network draws (2 x (20 ms + a tick)), so a live link never trips it. A link a scenario
/// slows down gets [`KEEPALIVE_ROUND_TRIPS`] of its own slowest round trip instead, when that
/// is longer.
const KEEPALIVE_TIMEOUT_MS: Millis = SERVER_LINK_KEEPALIVE_MS;
/// Round trips a slow link may take to acknowledge before it is taken for dead: a healthy link
/// acknowledges within one (its receiver answers as it reads), so three leave twice that as
/// margin while a stalled one still goes within a few seconds (session-race's gateway-session
/// link, up to 1.5 s extra each way, gets about 9 s).
const KEEPALIVE_ROUND_TRIPS: Millis = 3;
/// How long a connection attempt may wait for its SYN to be answered.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How much simulated time one turmoil step covers. Inside a step each host's paused runtime
/// still fires its timers at their exact millisecond; only deliveries between hosts happen at
/// step boundaries. turmoil's cost is per host per step, so 2 ms halves it against turmoil's
/// default of 1 ms while scenario latencies stay in the tens of milliseconds.
const TICK: Duration = Duration::from_millis(2);
/// Simulated time allowed past the plan's end before turmoil calls the run overdue.
const OVERTIME: Duration = Duration::from_secs(60);

/// A run this engine could not finish.
#[derive(Debug, Error)]
pub enum EngineError {
    /// turmoil stopped the simulation (a host's software returned an error).
    #[error("turmoil stopped the run at {at_ms} ms: {message}")]
    Stopped {
        /// Simulated time when it stopped.
        at_ms: Millis,
        /// turmoil's reason.
        message: String,
    },
}

/// Simulated now, inside a host: turmoil's clock, shared by every host.
fn now() -> Millis {
    turmoil::sim_elapsed()
        .expect("only called from a host's software")
        .as_millis() as Millis
}

/// Sleep until simulated `at` (now, if it has passed).
async fn sleep_until(at: Millis) {
    tokio::time::sleep(Duration::from_millis(at.saturating_sub(now()))).await;
}

/// Sleep until `at`, or forever when there is no deadline.
async fn sleep_until_some(at: Option<Millis>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The turmoil host name of a server.
fn host_name(h: Host) -> String {
    h.to_string()
}

/// The cell host that carries device `d`.
fn cell_of(flat: u32, cells: u32) -> String {
    format!("cell-{}", flat % cells + 1)
}

/// The slowest a frame may take one way between server hosts `a` and `b` under `network`: its
/// latency plus the largest extra any link entry sets between their roles (either way round,
/// since turmoil's links are undirected), plus a tick, since frames between hosts move at step
/// boundaries.
fn worst_one_way_ms(network: &NetworkSpec, a: Host, b: Host) -> Millis {
    let roles = (role_of(a), role_of(b));
    let extra = network
        .links
        .iter()
        .filter(|l| (l.from, l.to) == roles || (l.to, l.from) == roles)
        .map(|l| l.extra_latency_ms.hi)
        .max()
        .unwrap_or(0);
    network.latency_ms.hi + extra + TICK.as_millis() as Millis
}

/// How long the link from server `a` to server `b` may leave frames unacknowledged, without
/// progress, before it is replaced: [`KEEPALIVE_TIMEOUT_MS`], or [`KEEPALIVE_ROUND_TRIPS`] of
/// the link's slowest round trip when the scenario slows it down that much.
fn keepalive_ms(network: &NetworkSpec, a: Host, b: Host) -> Millis {
    let round_trip = worst_one_way_ms(network, a, b) + worst_one_way_ms(network, b, a);
    KEEPALIVE_TIMEOUT_MS.max(KEEPALIVE_ROUND_TRIPS * round_trip)
}

/// State shared by every host of one run; it is what survives a crash.
struct Shared {
    topo: chatsim_system::Deployment,
    /// The scenario's latencies, from which each server link's keepalive timeout is derived.
    network: NetworkSpec,
    seed: u64,
    rec: Recorder,
    durable: Durable,
    /// Each device's event channel, for pushes: the OS's channel to the phone, outside the
    /// chat network (a cut of ours does not hold it).
    wakers: Mutex<BTreeMap<DeviceId, UnboundedSender<PhoneEvent>>>,
    /// Whether each device is silent (its cell stops carrying its connection).
    silent: BTreeMap<DeviceId, watch::Sender<bool>>,
    /// The black-hole switch of each phone the plan drops into one (no others: a phone without
    /// one steps exactly the tasks it always did).
    holes: BTreeMap<DeviceId, watch::Sender<bool>>,
    /// Whose code carries the bytes.
    carrier: Carrier,
    /// The served hosts' stop signal: never sent (a run ends with its plan), kept so they
    /// never see it dropped.
    stop: watch::Sender<bool>,
    /// What the served gateways counted.
    counters: chatsim_server::site::Counters,
}

/// Wait until `silent` says the phone may talk again; returns false if nobody will ever say.
async fn wait_while_silent(silent: &mut watch::Receiver<bool>) -> bool {
    silent.wait_for(|s| !*s).await.is_ok()
}

/// Pump one connection: write what arrives on `outgoing` (what is already queued goes as one
/// write) and hand every decoded frame to `on_frame`. While `silent` says so, neither read nor
/// write: the phone is in a tunnel, the connection half-open, its bytes waiting on both sides.
/// With `ack_as`, a server acknowledges the server frames it has read ([`Wire::LinkAck`]) so
/// the sending side can tell a stalled stream. Ends, closing the connection, when `outgoing`
/// is dropped, the peer closes, or a frame is bad.
async fn run_conn(
    stream: &mut TcpStream,
    outgoing: &mut UnboundedReceiver<Bytes>,
    mut silent: Option<watch::Receiver<bool>>,
    ack_as: Option<Host>,
    mut on_frame: impl FnMut(Frame, &[u8]),
) {
    let mut buf = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let mut server_frames = 0u64;
    loop {
        if let Some(s) = silent.as_mut() {
            if *s.borrow() && !wait_while_silent(s).await {
                return;
            }
        }
        let went_silent = async {
            match silent.as_mut() {
                Some(s) => {
                    let _ = s.wait_for(|s| *s).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = went_silent => continue,
            msg = outgoing.recv() => match msg {
                Some(first) => {
                    let (bytes, _) = batch(first, outgoing);
                    if !write_all(stream, &bytes).await {
                        return;
                    }
                }
                None => return,
            },
            n = stream.read_buf(&mut buf) => {
                if !matches!(n, Ok(n) if n > 0) {
                    return;
                }
                let before = server_frames;
                loop {
                    match decode(&mut buf) {
                        Ok(Some((f, raw))) => {
                            server_frames += u64::from(matches!(f.wire, Wire::Server(_)));
                            on_frame(f, &raw);
                        }
                        Ok(None) => break,
                        Err(_) => return,
                    }
                }
                if let Some(me) = ack_as.filter(|_| server_frames > before) {
                    let ack = encode(&Frame { from: me, sent_ms: now(), wire: Wire::LinkAck(server_frames) });
                    if !write_all(stream, &ack).await {
                        return;
                    }
                }
            }
        }
    }
}

/// Every frame already waiting on `rx` after `first`, as one buffer, and how many frames that
/// is.
fn batch(first: Bytes, rx: &mut UnboundedReceiver<Bytes>) -> (Bytes, u64) {
    let Ok(second) = rx.try_recv() else {
        return (first, 1);
    };
    let mut buf = BytesMut::with_capacity(first.len() + second.len());
    buf.extend_from_slice(&first);
    buf.extend_from_slice(&second);
    let mut n = 2;
    while let Ok(more) = rx.try_recv() {
        buf.extend_from_slice(&more);
        n += 1;
    }
    (buf.freeze(), n)
}

/// A connection in a black hole: whatever either side writes is lost, and it never closes from
/// this end (a close would be a frame too). Reads are drained so the peer's writes never back
/// up; ends, dropping the socket unheard, once the peer gives up and closes.
async fn swallow(mut stream: TcpStream, mut outgoing: UnboundedReceiver<Bytes>) {
    let mut buf = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let mut writer_open = true;
    loop {
        buf.clear();
        tokio::select! {
            biased;
            frame = outgoing.recv(), if writer_open => writer_open = frame.is_some(),
            n = stream.read_buf(&mut buf) => {
                if !matches!(n, Ok(n) if n > 0) {
                    return;
                }
            }
        }
    }
}

/// Until `hole` opens (never, if its switch is gone).
async fn hole_opens(hole: &mut watch::Receiver<bool>) {
    if hole.wait_for(|on| *on).await.is_err() {
        std::future::pending::<()>().await;
    }
}

async fn write_all(stream: &mut TcpStream, bytes: &[u8]) -> bool {
    stream.write_all(bytes).await.is_ok() && stream.flush().await.is_ok()
}

/// An open server-to-server connection and what its receiver has acknowledged.
struct Link {
    stream: TcpStream,
    /// Bytes read back (acknowledgements), not yet decoded.
    buf: BytesMut,
    sent: u64,
    acked: u64,
    /// Since when frames have been waiting for an acknowledgement without progress.
    waiting_since: Option<Millis>,
}

/// One outgoing server-to-server link, opened on first use and reopened after a failure. A
/// frame that cannot get through a fresh connection either is dropped, as a network would: the
/// protocol's own retries cover it.
///
/// turmoil's TCP has no retransmission: a stream that lost a segment to a partition stalls for
/// good, and writes on it still succeed. So the link does what a keepalive does on a real
/// server: frames unacknowledged for `keepalive` (see [`keepalive_ms`]) without progress
/// mean the connection is dead, and the next frame opens a new one. A link held by a clog or a
/// partition longer than that is replaced too, as a real one would be: what it held may still
/// arrive at the release (ahead of the close), and what came after is dropped with the failed
/// connection attempts and retried by its owner. A connection attempt whose SYN is held, or sent to a crashed host
/// (turmoil delivers only to running hosts), waits until the hold ends or the host restarts,
/// so attempts give up after [`CONNECT_TIMEOUT`].
async fn peer_link(to: Host, keepalive: Millis, mut rx: UnboundedReceiver<Bytes>) {
    let mut link: Option<Link> = None;
    loop {
        let stall_at = link
            .as_ref()
            .and_then(|l| l.waiting_since)
            .map(|t| t + keepalive);
        let acks = async {
            match link.as_mut() {
                Some(l) => l.stream.read_buf(&mut l.buf).await.map_or(0, |n| n),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            n = acks => {
                let Some(l) = link.as_mut() else { continue };
                if n == 0 {
                    link = None;
                    continue;
                }
                while let Ok(Some((f, _))) = decode(&mut l.buf) {
                    if let Wire::LinkAck(k) = f.wire {
                        if k > l.acked {
                            l.acked = k;
                            l.waiting_since = (l.acked < l.sent).then(now);
                        }
                    }
                }
            }
            _ = sleep_until_some(stall_at), if stall_at.is_some() => link = None,
            frame = rx.recv() => {
                let Some(first) = frame else { return };
                let (bytes, n) = batch(first, &mut rx);
                // A write on a connection whose peer crashed fails once the peer's reset is
                // back: the frames go again on a fresh connection.
                if let Some(l) = link.as_mut() {
                    if write_all(&mut l.stream, &bytes).await {
                        l.sent += n;
                        l.waiting_since.get_or_insert_with(now);
                        continue;
                    }
                }
                link = None;
                let connect = TcpStream::connect((host_name(to), PORT));
                if let Ok(Ok(mut stream)) = tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
                    if write_all(&mut stream, &bytes).await {
                        link = Some(Link {
                            stream,
                            buf: BytesMut::new(),
                            sent: n,
                            acked: 0,
                            waiting_since: Some(now()),
                        });
                    }
                }
            }
        }
    }
}

async fn server_main(host: Host, sh: Arc<Shared>) -> turmoil::Result {
    let machine = sh.durable.machine(host, &sh.topo, sh.seed);
    let listener = TcpListener::bind(("0.0.0.0", PORT)).await?;
    let (tx, mut rx) = unbounded_channel::<ConnEvent<UnboundedSender<Bytes>>>();
    let accept_tx = tx.clone();
    let accept_sh = sh.clone();
    spawn_local(async move {
        let mut next = 0u64;
        while let Ok((mut stream, _)) = listener.accept().await {
            next += 1;
            let conn = ConnId(next);
            let (wtx, mut wrx) = unbounded_channel();
            let _ = accept_tx.send(ConnEvent::Opened(conn, wtx));
            let (etx, sh) = (accept_tx.clone(), accept_sh.clone());
            spawn_local(async move {
                run_conn(&mut stream, &mut wrx, None, Some(host), |f, raw| {
                    sh.rec.delivered(now(), host, raw, &f);
                    let _ = etx.send(ConnEvent::Frame(conn, Box::new(f.wire)));
                })
                .await;
                drop(stream);
                let _ = etx.send(ConnEvent::Closed(conn));
            });
        }
    });
    let mut links = ServerIo {
        sh: sh.clone(),
        me: host,
        peers: BTreeMap::new(),
    };
    let mut server = ServerHost::new(host, machine);
    loop {
        let deadline = server.deadline();
        tokio::select! {
            biased;
            ev = rx.recv() => {
                let ev = ev.expect("this task holds a sender");
                server.on_event(now(), ev, &mut links);
            }
            _ = sleep_until_some(deadline), if deadline.is_some() => server.on_deadline(now(), &mut links),
        }
    }
}

/// How a turmoil server host's bytes leave it.
struct ServerIo {
    sh: Arc<Shared>,
    /// The server whose links these are.
    me: Host,
    /// Outgoing server-to-server links, one per destination, opened on first use.
    peers: BTreeMap<Host, UnboundedSender<Bytes>>,
}

impl ServerLinks<UnboundedSender<Bytes>> for ServerIo {
    fn to_peer(&mut self, to: Host, frame: Bytes) {
        let link = self.peers.entry(to).or_insert_with(|| {
            let (ltx, lrx) = unbounded_channel();
            spawn_local(peer_link(
                to,
                keepalive_ms(&self.sh.network, self.me, to),
                lrx,
            ));
            ltx
        });
        let _ = link.send(frame);
    }

    fn to_conn(&mut self, conn: &UnboundedSender<Bytes>, frame: Bytes) {
        let _ = conn.send(frame);
    }

    fn wake(&mut self, device: DeviceId) {
        if let Some(w) = self.sh.wakers.lock().expect("never poisoned").get(&device) {
            let _ = w.send(PhoneEvent::Wake);
        }
    }

    fn persist(&mut self, now: Millis, write: Write) {
        if matches!(write, Write::Rebuilt(_)) {
            self.sh.rec.rebuilt(now);
        }
        self.sh.durable.apply(write);
    }

    fn probe(&mut self, probe: Probe) {
        self.sh.rec.probe(probe);
    }

    fn disk(&self) -> chatsim_system::Disk {
        self.sh.durable.disk(self.me)
    }
}

/// One phone, as a task on its cell.
async fn device_main(id: DeviceId, actions: Vec<(Millis, Action)>, online: bool, sh: Arc<Shared>) {
    let machine = Device::new(id, sh.topo.clone(), device_seed(sh.seed, id), online);
    let mut phone = PhoneHost::new(id, machine, actions);
    let (tx, mut rx) = unbounded_channel::<PhoneEvent>();
    sh.wakers
        .lock()
        .expect("never poisoned")
        .insert(id, tx.clone());
    let mut links = PhoneIo {
        sh: sh.clone(),
        me: Host::Device(id),
        events: tx,
        id,
    };
    loop {
        let deadline = phone.deadline();
        tokio::select! {
            biased;
            ev = rx.recv() => {
                let ev = ev.expect("this task holds a sender");
                phone.on_event(now(), ev, &sh.rec, &mut links);
            }
            _ = sleep_until_some(deadline), if deadline.is_some() => {
                phone.on_deadline(now(), &sh.rec, &mut links);
            }
        }
    }
}

/// How a phone on a turmoil cell reaches its gateway.
struct PhoneIo {
    sh: Arc<Shared>,
    me: Host,
    /// The phone's own event channel, which its connection tasks report on.
    events: UnboundedSender<PhoneEvent>,
    /// Which phone (its silence switch is in `sh`).
    id: DeviceId,
}

impl PhoneLinks<UnboundedSender<Bytes>> for PhoneIo {
    fn connect(&mut self, gateway: u16, gen: u64) -> UnboundedSender<Bytes> {
        if self.sh.carrier == Carrier::Served {
            let (wtx, wrx) = unbounded_channel();
            let net = served::PhoneNet {
                sh: self.sh.clone(),
                id: self.id,
            };
            spawn_local(chatsim_server::phone::connection(
                net,
                self.id,
                gateway,
                gen,
                wrx,
                self.events.clone(),
            ));
            return wtx;
        }
        let (wtx, mut wrx) = unbounded_channel();
        let (tx, sh, me) = (self.events.clone(), self.sh.clone(), self.me);
        let hole = sh.holes.get(&self.id).map(watch::Sender::subscribe);
        let silent = sh
            .silent
            .get(&self.id)
            .expect("every device has a silence switch")
            .subscribe();
        spawn_local(async move {
            // A silent phone reaches nobody: its attempt fails as on a dead radio.
            if *silent.borrow() {
                let _ = tx.send(PhoneEvent::ConnectFailed(gen));
                return;
            }
            let connect = TcpStream::connect((host_name(Host::Gateway(gateway)), PORT));
            // A SYN to a crashed gateway waits for its restart, and the phone's machine has no
            // handshake timer of its own: give up as a phone's connect timeout would, so it
            // tries again (and elsewhere).
            match tokio::time::timeout(CONNECT_TIMEOUT, connect)
                .await
                .map_err(drop)
                .and_then(|r| r.map_err(drop))
            {
                Err(()) => {
                    let _ = tx.send(PhoneEvent::ConnectFailed(gen));
                }
                Ok(mut stream) => {
                    let _ = tx.send(PhoneEvent::Connected(gen));
                    let conn = run_conn(&mut stream, &mut wrx, Some(silent), None, |f, raw| {
                        sh.rec.delivered(now(), me, raw, &f);
                        let _ = tx.send(PhoneEvent::Frame(gen, Box::new(f.wire)));
                    });
                    let swallowed = match hole {
                        Some(mut hole) => tokio::select! {
                            biased;
                            _ = hole_opens(&mut hole) => true,
                            _ = conn => false,
                        },
                        None => {
                            conn.await;
                            false
                        }
                    };
                    if swallowed {
                        // Neither the phone nor its gateway hears of it: only a keepalive can.
                        swallow(stream, wrx).await;
                    } else {
                        drop(stream);
                        let _ = tx.send(PhoneEvent::Closed(gen));
                    }
                }
            }
        });
        wtx
    }

    fn send(&mut self, conn: &UnboundedSender<Bytes>, frame: Bytes) {
        let _ = conn.send(frame);
    }
}

/// One phone a cell carries: its plan and whether it starts online.
#[derive(Clone)]
struct Phone {
    id: DeviceId,
    actions: Vec<(Millis, Action)>,
    online: bool,
}

/// A cell's software: every phone it carries, each its own task.
async fn cell_main(phones: Vec<Phone>, sh: Arc<Shared>) -> turmoil::Result {
    for p in phones {
        spawn_local(device_main(p.id, p.actions, p.online, sh.clone()));
    }
    std::future::pending::<()>().await;
    Ok(())
}

/// Run one seed of `scenario` on turmoil, keeping the frame log a report draws from. Call it
/// on a fresh thread per seed.
pub fn run(scenario: &Scenario, seed: u64, plan: Plan, bugs: Bugs) -> Result<RawRun, EngineError> {
    run_keeping(scenario, seed, plan, bugs, Keep::REPORT)
}

/// The simulation every run of `scenario` steps, lasting `until` simulated time: the floor
/// builds the same one, so it moves frames under the same latencies, tick and socket sizes.
fn simulation(scenario: &Scenario, seed: u64, until: Duration) -> turmoil::Sim<'static> {
    let lat = scenario.network.latency_ms;
    turmoil::Builder::new()
        .rng_seed(seed)
        .tick_duration(TICK)
        .simulation_duration(until)
        .min_message_latency(Duration::from_millis(lat.lo))
        .max_message_latency(Duration::from_millis(lat.hi))
        .tcp_capacity(TCP_CAPACITY)
        .build()
}

/// How many cells carry `n` phones.
fn cell_count(n: u32) -> u32 {
    CELLS.max(n.div_ceil(PHONES_PER_CELL_MAX)).min(n).max(1)
}

/// As [`run`], keeping what `keep` asks for besides the verdict's needs.
pub fn run_keeping(
    scenario: &Scenario,
    seed: u64,
    plan: Plan,
    bugs: Bugs,
    keep: Keep,
) -> Result<RawRun, EngineError> {
    run_carried(Carrier::Engine, scenario, seed, plan, bugs, keep)
}

/// As [`run_keeping`], with `carrier`'s code carrying the bytes.
pub fn run_carried(
    carrier: Carrier,
    scenario: &Scenario,
    seed: u64,
    plan: Plan,
    bugs: Bugs,
    keep: Keep,
) -> Result<RawRun, EngineError> {
    let topo = deployment(scenario, &plan, bugs);
    let lat = scenario.network.latency_ms;
    let mut sim = simulation(
        scenario,
        seed,
        Duration::from_millis(plan.end_at) + OVERTIME,
    );

    let devices: Vec<DeviceId> = (0..topo.users)
        .flat_map(|u| topo.devices_of(UserId(u)))
        .collect();
    let n = devices.len() as u32;
    let cells = cell_count(n);
    let sh = Arc::new(Shared {
        rec: Recorder::new(&topo, &plan, keep),
        durable: Durable::new(&topo),
        silent: devices
            .iter()
            .map(|&d| (d, watch::Sender::new(false)))
            .collect(),
        holes: plan
            .blackholed_devices()
            .into_iter()
            .map(|d| (d, watch::Sender::new(false)))
            .collect(),
        wakers: Mutex::new(BTreeMap::new()),
        carrier,
        stop: watch::Sender::new(false),
        counters: Default::default(),
        network: scenario.network.clone(),
        topo,
        seed,
    });

    let servers = server_hosts(scenario);
    for &host in &servers {
        let s = sh.clone();
        match carrier {
            Carrier::Engine => sim.host(host_name(host), move || server_main(host, s.clone())),
            Carrier::Served => sim.host(host_name(host), move || {
                served::server_main(host, s.clone())
            }),
        }
    }
    let mut phones: BTreeMap<String, Vec<Phone>> = BTreeMap::new();
    let mut cell_names = Vec::new();
    for (flat, &d) in devices.iter().enumerate() {
        let cell = cell_of(flat as u32, cells);
        if !cell_names.contains(&cell) {
            cell_names.push(cell.clone());
        }
        phones.entry(cell).or_default().push(Phone {
            id: d,
            actions: plan.device.get(&d).cloned().unwrap_or_default(),
            online: plan.online_at_start.contains(&d),
        });
    }
    for (cell, list) in phones {
        let s = sh.clone();
        sim.host(cell, move || cell_main(list.clone(), s.clone()));
    }

    // Per-link extra latency: turmoil's links are undirected, so `a -> b` slows both ways.
    let names_of = |role: Role| -> Vec<String> {
        if role == Role::Device {
            return cell_names.clone();
        }
        servers
            .iter()
            .filter(|h| role_of(**h) == role)
            .map(|h| host_name(*h))
            .collect()
    };
    let mut slow = BTreeMap::new();
    for link in &scenario.network.links {
        let max = Duration::from_millis(lat.hi + link.extra_latency_ms.hi);
        for a in names_of(link.from) {
            for b in names_of(link.to) {
                sim.set_link_max_message_latency(a.as_str(), b.as_str(), max);
                let key = if a < b {
                    (a.clone(), b)
                } else {
                    (b, a.clone())
                };
                slow.insert(key, max);
            }
        }
    }

    let everyone: Vec<String> = servers
        .iter()
        .map(|h| host_name(*h))
        .chain(cell_names.iter().cloned())
        .collect();
    let mut links = Links {
        oneway: Vec::new(),
        everyone,
        held: BTreeMap::new(),
        usual: (Duration::from_millis(lat.lo), Duration::from_millis(lat.hi)),
        slow,
        spiked: Default::default(),
    };
    let mut ledger = FaultLedger::new();
    let elapsed = |sim: &turmoil::Sim| sim.elapsed().as_millis() as Millis;
    let mut next_sample = 0;
    let mut step = |sim: &mut turmoil::Sim, until: Millis| -> Result<(), EngineError> {
        while elapsed(sim) < until {
            if elapsed(sim) >= next_sample && next_sample <= plan.end_at {
                sh.rec.sample(next_sample, sh.durable.inbox_entries());
                next_sample += SAMPLE_MS;
            }
            sim.step().map_err(|e| EngineError::Stopped {
                at_ms: elapsed(sim),
                message: e.to_string(),
            })?;
        }
        Ok(())
    };
    for (t, action) in plan.world {
        step(&mut sim, t)?;
        let at = elapsed(&sim);
        let mut prims = Primitives {
            sim: &mut sim,
            sh: &sh,
            links: &mut links,
        };
        ledger.act(at, action, &mut prims, &sh.rec);
    }
    step(&mut sim, plan.end_at)?;
    if next_sample <= plan.end_at {
        sh.rec.sample(next_sample, sh.durable.inbox_entries());
    }
    Ok(sh
        .rec
        .finish(plan.end_at, elapsed(&sim), &sh.durable, ledger.skipped()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    // Without `--cfg tokio_unstable`, a panic in a task spawned on a host is caught by tokio and
    // the simulation goes on as if nothing happened; with it (set in .cargo/config.toml) the
    // host's runtime shuts down and a panic reaches whoever steps the simulation, which is the
    // seed's own thread: the run fails, naming the seed. What reaches it is tokio's "a spawned
    // task panicked" (the task's own message and place are printed by the panic hook as it
    // happens).
    #[test]
    fn a_panic_in_a_host_task_fails_the_run() {
        let outcome = std::thread::spawn(|| {
            let mut sim = turmoil::Builder::new().rng_seed(1).build();
            sim.host("h", || async {
                spawn_local(async {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    panic!("a machine broke an invariant");
                });
                std::future::pending::<()>().await;
                Ok(())
            });
            for _ in 0..50 {
                sim.step()
                    .expect("the host software never returns an error");
            }
        })
        .join();
        let message = outcome.expect_err("the panic must fail the run");
        let text = message
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| message.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        assert!(
            text.contains("a machine broke an invariant") || text.contains("task panicked"),
            "{text}"
        );
    }

    #[test]
    fn every_device_lands_on_one_of_the_cells() {
        let cells: BTreeSet<String> = (0..1_000).map(|flat| cell_of(flat, CELLS)).collect();
        assert_eq!(cells.len(), CELLS as usize);
        assert_eq!(cell_of(5, 4), "cell-2");
        assert_eq!(cell_of(5, 2), "cell-2");
    }
}
