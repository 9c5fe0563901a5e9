//! `chatsim serve`: every server host of a deployment (or the roles asked for) on its own
//! thread, each a current-thread tokio runtime around one [`ServerHost`] (the machines are not
//! `Send`, and hosts talk only over sockets, so a thread each is also what spreads them over
//! cores). Gateways take phones' WebSocket connections; every host takes its peers' links on
//! its internal port.
//!
//! What a peer sends is checked before any machine sees it: a phone may send only `Up` frames,
//! one whole frame per binary message, each within [`FRAME_BYTES_MAX`]; anything else closes
//! its connection with a WebSocket close code (`docs/protocol.md`), and costs the server no
//! more than one message's buffer. Internal ports take only server frames.

use crate::disk::{Disk, DiskError};
use crate::sessions::{RedisSessions, SessionsError};
use crate::site::{Counters, Endpoint, Net, Site};
use crate::{now, Config, ConfigError};
use bytes::{Bytes, BytesMut};
use chatsim_system::durable::Write;
use chatsim_system::limits::FRAME_BYTES_MAX;
use chatsim_system::probe::Probe;
use chatsim_system::proto::{ConnId, DeviceId, Host, Millis, Up};
use chatsim_world::deploy::Durable;
use chatsim_world::host::{ConnEvent, ServerHost, ServerLinks};
use chatsim_world::wire::{decode, encode, Frame, Wire, LEN_BYTES};
use futures_util::{SinkExt, StreamExt};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::{io, rc::Rc};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;

/// Bytes a WebSocket connection reads at a time. tungstenite's default is 128 KiB a
/// connection, which a gateway holding many idle phones cannot afford; a phone's frames are
/// small (a text, an ack), and a bigger one is read in several goes.
pub const WS_READ_BUFFER_BYTES: usize = 4 * 1024;

/// How long a phone's connection may take over its WebSocket handshake, and then stay silent
/// before its first frame: the gateway machine learns of a connection only from that frame, so without
/// this a peer that never speaks would hold a socket and its buffers for as long as it liked.
pub const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends (texts and membership changes) one phone connection may make per second, sustained,
/// and in a burst: far above a person typing or a phone flushing its outbox after an absence
/// (it keeps at most `OUTBOX_IN_FLIGHT_MAX` unacked). Each send costs a durable write, so a
/// flooding device is held to this instead of taking the shard and storage from everyone.
pub const PHONE_SENDS_PER_S: f64 = 50.0;
/// See [`PHONE_SENDS_PER_S`].
pub const PHONE_SENDS_BURST: f64 = 200.0;
/// Frames of any kind one phone connection may send per second, sustained, and in a burst:
/// a drain is acked one message at a time, and a backlog of a few thousand fits the burst.
pub const PHONE_FRAMES_PER_S: f64 = 2_000.0;
/// See [`PHONE_FRAMES_PER_S`].
pub const PHONE_FRAMES_BURST: f64 = 4_000.0;
/// A phone held back by its rate limits this long without a break is closed (1008,
/// `TooFast`): until then it is only slowed, its frames left unread in the kernel's buffers.
pub const PHONE_THROTTLED_MAX: Duration = Duration::from_secs(5);

/// A token bucket: `rate` a second, at most `burst` saved up.
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: tokio::time::Instant,
}

impl Bucket {
    fn new(rate: f64, burst: f64) -> Bucket {
        Bucket {
            tokens: burst,
            rate,
            burst,
            at: tokio::time::Instant::now(),
        }
    }

    /// Spend one token; if none is left, how long until the next one.
    fn take(&mut self, now: tokio::time::Instant) -> Option<Duration> {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.at = now;
        self.tokens -= 1.0;
        (self.tokens < 0.0).then(|| Duration::from_secs_f64(-self.tokens / self.rate))
    }
}

/// How long after the stop signal the machines keep running, so acks of writes already
/// synced go out and the syncs in flight finish, before the hosts stop.
pub const DEFAULT_GRACE_MS: Millis = 1_000;

/// Why serving failed.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The configuration cannot be served.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be opened.
    #[error("{host}: cannot listen on {addr}: {source}")]
    Bind {
        /// Which host.
        host: Host,
        /// Where.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A host's thread could not start.
    #[error("{0}: cannot start its thread: {1}")]
    Thread(Host, std::io::Error),
    /// The data folder cannot be used.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// Redis cannot hold the sessions.
    #[error(transparent)]
    Sessions(#[from] SessionsError),
    /// A host's machine panicked (an assertion on its state failed): the server stops.
    #[error("{0} stopped: its machine failed an assertion (see the log)")]
    HostPanicked(Host),
}

/// Which hosts this process runs: all of the deployment's, or the roles named.
pub fn local_hosts(cfg: &Config, roles: &[Host]) -> Vec<Host> {
    if roles.is_empty() {
        cfg.hosts()
    } else {
        cfg.hosts()
            .into_iter()
            .filter(|h| roles.contains(h))
            .collect()
    }
}

/// What the server did, for the log line it ends with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Served {
    /// Hosts that ran here.
    pub hosts: usize,
    /// Phone connections accepted over the whole run.
    pub phone_connections: u64,
    /// Phone connections closed for a bad frame.
    pub refused: u64,
}

/// State every host of this process shares.
struct Shared {
    cfg: Config,
    topo: chatsim_system::Deployment,
    /// What the machines made durable, in memory: the state they restart from.
    durable: Durable,
    /// The same on disk, when serving with a data folder.
    disk: Option<Mutex<Disk>>,
    /// The session table on Redis, when asked for: then the session's writes go there, not
    /// to the disk.
    sessions: Option<Mutex<RedisSessions>>,
    /// Whether the deployment keeps its session table on Redis (whether or not this process
    /// runs the session service): then the data folder never holds it.
    on_redis: bool,
    counters: Counters,
}

/// The real world: loopback sockets at the addresses a [`Config`] gives, the wall clock.
#[derive(Clone, Debug)]
pub struct RealNet {
    cfg: Config,
}

impl RealNet {
    /// The deployment `cfg` describes, reached over real sockets.
    pub fn new(cfg: &Config) -> RealNet {
        RealNet { cfg: cfg.clone() }
    }
}

impl Net for RealNet {
    type Stream = TcpStream;
    type Listener = TcpListener;

    fn now(&self) -> Millis {
        now()
    }

    async fn accept(&self, l: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
        let (s, peer) = l.accept().await?;
        let _ = s.set_nodelay(true);
        Ok((s, peer))
    }

    async fn connect(&self, to: Endpoint) -> io::Result<TcpStream> {
        let addr = match to {
            Endpoint::Server(h) => self.cfg.internal_addr(h),
            Endpoint::Phones(g) => self.cfg.gateway_addr(g),
        };
        let s = TcpStream::connect(addr).await?;
        let _ = s.set_nodelay(true);
        Ok(s)
    }

    fn url(&self, g: u16) -> String {
        format!("ws://{}/", self.cfg.gateway_addr(g))
    }
}

/// A serving process: real sockets, the wall clock, and the durable state on disk or Redis.
#[derive(Clone)]
pub struct RealSite {
    net: RealNet,
    sh: Arc<Shared>,
}

impl Net for RealSite {
    type Stream = TcpStream;
    type Listener = TcpListener;

    fn now(&self) -> Millis {
        now()
    }

    async fn accept(&self, l: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
        self.net.accept(l).await
    }

    async fn connect(&self, to: Endpoint) -> io::Result<TcpStream> {
        self.net.connect(to).await
    }

    fn url(&self, g: u16) -> String {
        self.net.url(g)
    }
}

impl Site for RealSite {
    fn machine(&self, host: Host) -> Box<dyn chatsim_system::Machine> {
        self.sh
            .durable
            .machine(host, &self.sh.topo, self.sh.cfg.seed)
    }

    fn persist(&self, _host: Host, _now: Millis, write: Write) {
        let sh = &self.sh;
        if let (Some(redis), Write::Session(change)) = (&sh.sessions, &write) {
            let mut redis = redis
                .lock()
                .expect("a host that panicked holding it aborted");
            match redis.apply(change) {
                Ok(true) => {}
                // The fence on Redis refused what the machine's own fence let through: another
                // session process wrote a newer entry. The newer one stands.
                Ok(false) => tracing::warn!(?change, "Redis kept a newer session entry"),
                Err(e) => {
                    tracing::error!(error = %e, "a session write failed: stopping");
                    std::process::abort();
                }
            }
            sh.durable.apply(write);
            return;
        }
        let Some(disk) = &sh.disk else {
            sh.durable.apply(write);
            return;
        };
        // Held until the write is in the durable state too: a folding by the other host that
        // keeps data (storage or session) must never empty a log entry the state lacks.
        let mut disk = disk
            .lock()
            .expect("a host that panicked holding it aborted");
        if let Err(e) = disk.append(&write) {
            tracing::error!(path = %disk.path().display(), error = %e, "a synced write failed: stopping before anything is acked past it");
            std::process::abort();
        }
        sh.durable.apply(write);
        if disk.due() {
            let st = sh.durable.lock();
            let session = (!sh.on_redis).then_some(&st.session);
            if let Err(e) = disk.compact(&st.storage, session) {
                tracing::error!(path = %disk.path().display(), error = %e, "folding the log into the tables failed: stopping");
                std::process::abort();
            }
        }
    }

    fn wake(&self, device: DeviceId) {
        // No push provider is wired to real phones yet: the phone drains when it connects.
        tracing::debug!(%device, "push");
    }

    fn counters(&self) -> &Counters {
        &self.sh.counters
    }

    fn phone_connections_max(&self) -> usize {
        self.sh.cfg.phone_connections_max as usize
    }
}

/// A server about to run: its listeners are open (so a port in use is an error before anything
/// starts), its hosts not yet started.
pub struct Bound {
    site: RealSite,
    listeners: Vec<(Host, std::net::TcpListener, Option<std::net::TcpListener>)>,
}

/// Connections a listener queues before they are accepted. The standard library asks for
/// 128: ten thousand phones arriving within a second overflow it, and each one dropped waits
/// a second for its SYN to be sent again. The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 4096;

/// A non-blocking listener on `addr` with [`LISTEN_BACKLOG`].
pub fn listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // A restarted server takes its ports back while the old connections linger in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

/// Open every listener `roles` needs (all hosts when empty), the data in `data` (kept in
/// memory only when `None`), and the session table on the Redis at `sessions` (else with the
/// rest of the data).
pub fn bind(
    cfg: &Config,
    roles: &[Host],
    data: Option<&Path>,
    sessions: Option<&str>,
) -> Result<Bound, ServeError> {
    cfg.validate()?;
    let open = |host: Host, addr: SocketAddr| {
        listen(addr).map_err(|source| ServeError::Bind { host, addr, source })
    };
    let mut listeners = Vec::new();
    for host in local_hosts(cfg, roles) {
        let internal = open(host, cfg.internal_addr(host))?;
        let phones = match host {
            Host::Gateway(g) => Some(open(host, cfg.gateway_addr(g))?),
            _ => None,
        };
        listeners.push((host, internal, phones));
    }
    let topo = cfg.deployment();
    let durable = Durable::new(&topo);
    // Only the hosts that make writes durable need the folder (and hold its lock): a process
    // running only gateways, say, shares a machine with the one that has it.
    let keeps = |h: &&(Host, _, _)| matches!(h.0, Host::Storage(_) | Host::Session);
    let on_redis = sessions.is_some();
    let disk = data
        .filter(|_| listeners.iter().any(|h| keeps(&h)))
        .map(|dir| {
            let (mut disk, rec) = Disk::open(dir, &cfg.name(), topo.storage_model)?;
            tracing::info!(
                path = %disk.path().display(),
                messages = rec.storage.messages(),
                inbox = rec.storage.inbox_entries(),
                log = rec.log.len(),
                "recovered"
            );
            {
                let mut st = durable.lock();
                st.storage = rec.storage;
                // With Redis the session table is Redis's alone.
                if !on_redis {
                    st.session = rec.session;
                }
            }
            for w in rec.log {
                if !(on_redis && matches!(w, Write::Session(_))) {
                    durable.apply(w);
                }
            }
            // Fold what the log held into the tables now, so the next start reads no more.
            let st = durable.lock();
            disk.compact(&st.storage, (!on_redis).then_some(&st.session))
                .map_err(|reason| DiskError::Open {
                    path: disk.path().to_path_buf(),
                    reason,
                })?;
            drop(st);
            Ok::<_, DiskError>(disk)
        })
        .transpose()?;
    let sessions = sessions
        .filter(|_| listeners.iter().any(|h| h.0 == Host::Session))
        .map(|url| RedisSessions::open(url, &cfg.name(), |w| durable.apply(w)))
        .transpose()?;
    Ok(Bound {
        site: RealSite {
            net: RealNet::new(cfg),
            sh: Arc::new(Shared {
                durable,
                disk: disk.map(Mutex::new),
                sessions: sessions.map(Mutex::new),
                on_redis,
                topo,
                cfg: cfg.clone(),
                counters: Counters::default(),
            }),
        },
        listeners,
    })
}

impl Bound {
    /// Run every host until `stop` resolves, then `grace_ms` more, then return.
    pub fn run(
        self,
        stop: impl Future<Output = ()>,
        grace_ms: Millis,
    ) -> Result<Served, ServeError> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let hosts = self.listeners.len();
        let mut threads = Vec::new();
        for (host, internal, phones) in self.listeners {
            let (site, stop) = (self.site.clone(), stop_rx.clone());
            let t = std::thread::Builder::new()
                .name(host.to_string())
                .spawn(move || host_thread(host, site, internal, phones, stop, grace_ms))
                .map_err(|e| ServeError::Thread(host, e))?;
            threads.push((host, t));
        }
        tracing::info!(hosts, addr = %self.site.sh.cfg.addr, "serving");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime builds");
        rt.block_on(stop);
        tracing::info!(grace_ms, "stopping: finishing what is in flight");
        let _ = stop_tx.send(true);
        let mut failed = None;
        for (host, t) in threads {
            if t.join().is_err() {
                failed.get_or_insert(host);
            }
        }
        if let Some(host) = failed {
            return Err(ServeError::HostPanicked(host));
        }
        let (phone_connections, refused) = self.site.counters().read();
        Ok(Served {
            hosts,
            phone_connections,
            refused,
        })
    }
}

/// Ctrl-C or SIGTERM, whichever comes first.
pub async fn signalled() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn host_thread(
    host: Host,
    site: RealSite,
    internal: std::net::TcpListener,
    phones: Option<std::net::TcpListener>,
    stop: watch::Receiver<bool>,
    grace_ms: Millis,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds");
    let local = tokio::task::LocalSet::new();
    let internal = {
        let _in_runtime = rt.enter();
        let internal =
            TcpListener::from_std(internal).expect("a nonblocking std listener converts");
        let phones =
            phones.map(|l| TcpListener::from_std(l).expect("a nonblocking std listener converts"));
        (internal, phones)
    };
    local.block_on(
        &rt,
        run_host(site, host, internal.0, internal.1, stop, grace_ms),
    );
}

/// One server host until `stop` turns true and `grace_ms` more have passed: its machine
/// behind the host layer, its peers' links arriving on `internal`, phones on `phones` (a
/// gateway's). Call it inside a `LocalSet`: connections are tasks spawned locally. A simulated
/// world runs this same function on its own sockets and clock.
pub async fn run_host<S: Site>(
    site: S,
    host: Host,
    internal: S::Listener,
    phones: Option<S::Listener>,
    mut stop: watch::Receiver<bool>,
    grace_ms: Millis,
) {
    let machine = site.machine(host);
    let (tx, mut rx) = unbounded_channel::<ConnEvent<Writer>>();
    let next = Rc::new(AtomicU64::new(0));
    let accepting = tokio::task::spawn_local(accept_servers(
        site.clone(),
        host,
        internal,
        tx.clone(),
        next.clone(),
    ));
    let phones_accepting = phones.map(|l| {
        tokio::task::spawn_local(accept_phones(
            site.clone(),
            host,
            l,
            tx.clone(),
            next.clone(),
        ))
    });
    let mut server = ServerHost::new(host, machine);
    let mut links = Links {
        site: site.clone(),
        me: host,
        peers: BTreeMap::new(),
    };
    let mut stop_at: Option<tokio::time::Instant> = None;
    loop {
        let deadline = server.deadline();
        let wait = deadline.map(|d| Duration::from_millis(d.saturating_sub(site.now())));
        tokio::select! {
            biased;
            _ = stop.changed(), if stop_at.is_none() => {
                // No new phones; what is in flight finishes within the grace.
                if let Some(a) = &phones_accepting {
                    a.abort();
                }
                stop_at = Some(tokio::time::Instant::now() + Duration::from_millis(grace_ms));
            }
            _ = sleep_until_opt(stop_at), if stop_at.is_some() => break,
            ev = rx.recv() => match ev {
                Some(ev) => server.on_event(site.now(), ev, &mut links),
                None => break,
            },
            _ = sleep_opt(wait), if wait.is_some() => server.on_deadline(site.now(), &mut links),
        }
    }
    accepting.abort();
    tracing::debug!(%host, "stopped");
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

/// Peers' links: length-prefixed server frames; anything else ends the connection. Each read
/// that brought server frames is answered with how many have arrived so far
/// ([`Wire::LinkAck`]), so the sending side can tell a stream that stopped moving.
async fn accept_servers<S: Site>(
    site: S,
    host: Host,
    l: S::Listener,
    tx: UnboundedSender<ConnEvent<Writer>>,
    next: Rc<AtomicU64>,
) {
    while let Ok((mut stream, _)) = site.accept(&l).await {
        let conn = ConnId(next.fetch_add(1, Ordering::Relaxed) + 1);
        // Nothing is written back through the host on a peer's link: its writer is never read.
        let (wtx, _unread) = Writer::new();
        if tx.send(ConnEvent::Opened(conn, wtx)).is_err() {
            return;
        }
        let (tx, site) = (tx.clone(), site.clone());
        tokio::task::spawn_local(async move {
            let mut buf = BytesMut::with_capacity(8 * 1024);
            let mut arrived = 0u64;
            'read: while matches!(stream.read_buf(&mut buf).await, Ok(n) if n > 0) {
                let before = arrived;
                loop {
                    match decode(&mut buf) {
                        Ok(Some((f, raw))) if matches!(f.wire, Wire::Server(_)) => {
                            arrived += 1;
                            site.heard(site.now(), host, &raw, &f);
                            let _ = tx.send(ConnEvent::Frame(conn, Box::new(f.wire)));
                        }
                        Ok(None) => break,
                        Ok(Some(_)) | Err(_) => break 'read,
                    }
                }
                if arrived > before {
                    let ack = encode(&Frame {
                        from: host,
                        sent_ms: site.now(),
                        wire: Wire::LinkAck(arrived),
                    });
                    if !write_all(&mut stream, &ack).await {
                        break;
                    }
                }
            }
            let _ = tx.send(ConnEvent::Closed(conn));
        });
    }
}

/// Phones: WebSocket, one frame per binary message.
async fn accept_phones<S: Site>(
    site: S,
    host: Host,
    l: S::Listener,
    tx: UnboundedSender<ConnEvent<Writer>>,
    next: Rc<AtomicU64>,
) {
    let open = Rc::new(std::cell::Cell::new(0usize));
    let max = site.phone_connections_max();
    while let Ok((stream, peer)) = site.accept(&l).await {
        let conn = ConnId(next.fetch_add(1, Ordering::Relaxed) + 1);
        let (tx, site) = (tx.clone(), site.clone());
        let held = Held::take(&open);
        tokio::task::spawn_local(async move {
            // The upgrade must come within the same bound as the first frame: a peer that
            // opens a socket and says nothing would otherwise hold it for good.
            let handshake = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config()));
            let Ok(Ok(mut ws)) = tokio::time::timeout(FIRST_FRAME_TIMEOUT, handshake).await else {
                tracing::debug!(%host, %peer, "no WebSocket handshake in time");
                return;
            };
            if held.count() > max {
                // Past the limit: told to come back later, in few bytes and no machine's time.
                site.counters().refused();
                let close = Message::Close(Some(CloseFrame {
                    code: CloseCode::Again,
                    reason: "too many connections".into(),
                }));
                let _ = tokio::time::timeout(FIRST_FRAME_TIMEOUT, ws.send(close)).await;
                tracing::info!(%host, %peer, max, "refused a phone's connection: at the limit");
                return;
            }
            site.counters().opened();
            let (wtx, wrx) = Writer::new();
            if tx.send(ConnEvent::Opened(conn, wtx)).is_err() {
                return;
            }
            let refused = phone_conn(ws, wrx, |raw, frame| {
                site.heard(site.now(), host, raw, &frame);
                let _ = tx.send(ConnEvent::Frame(conn, Box::new(frame.wire)));
            })
            .await;
            if let Some(code) = refused {
                site.counters().refused();
                tracing::info!(%host, %peer, ?code, "closed a phone's connection for a bad frame");
            }
            let _ = tx.send(ConnEvent::Closed(conn));
        });
    }
}

/// One open phone connection, counted while it lives (its task holds it).
struct Held(Rc<std::cell::Cell<usize>>);

impl Held {
    fn take(open: &Rc<std::cell::Cell<usize>>) -> Held {
        open.set(open.get() + 1);
        Held(open.clone())
    }

    /// Connections open now, this one included.
    fn count(&self) -> usize {
        self.0.get()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

/// The WebSocket settings for a phone's connection: small buffers, and no message bigger than
/// a frame may be.
pub fn ws_config() -> WebSocketConfig {
    let mut c = WebSocketConfig::default();
    c.read_buffer_size = WS_READ_BUFFER_BYTES;
    c.write_buffer_size = 0;
    c.max_message_size = Some(LEN_BYTES + FRAME_BYTES_MAX);
    c.max_frame_size = Some(LEN_BYTES + FRAME_BYTES_MAX);
    c
}

/// Why a connection was closed on the phone, as a WebSocket close code.
pub fn close_code_for(bad: &BadFrame) -> CloseCode {
    match bad {
        BadFrame::NotBinary => CloseCode::Unsupported,
        BadFrame::Undecodable => CloseCode::Invalid,
        BadFrame::NotAPhoneFrame => CloseCode::Policy,
        BadFrame::TooBig => CloseCode::Size,
        BadFrame::Silent => CloseCode::Policy,
        BadFrame::NotReading => CloseCode::Policy,
        BadFrame::TooFast => CloseCode::Policy,
    }
}

/// What a phone sent that no phone may.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadFrame {
    /// A text message: frames are binary.
    NotBinary,
    /// Bytes that are not one whole frame.
    Undecodable,
    /// A frame a server sends (`Down`, a server RPC): a phone may send only `Up`.
    NotAPhoneFrame,
    /// Over the frame limit.
    TooBig,
    /// Nothing at all within [`FIRST_FRAME_TIMEOUT`] of connecting.
    Silent,
    /// It stopped reading while [`PHONE_QUEUE_BYTES_MAX`] queued up for it.
    NotReading,
    /// It kept sending faster than its rate limits for [`PHONE_THROTTLED_MAX`].
    TooFast,
}

/// Check one binary message from a phone: exactly one whole frame, and an `Up` one.
pub fn phone_frame(data: &[u8]) -> Result<Frame, BadFrame> {
    if data.len() > LEN_BYTES + FRAME_BYTES_MAX {
        return Err(BadFrame::TooBig);
    }
    let mut buf = BytesMut::from(data);
    match decode(&mut buf) {
        Ok(Some((f, _))) if buf.is_empty() => match f.wire {
            Wire::Up(_) => Ok(f),
            _ => Err(BadFrame::NotAPhoneFrame),
        },
        Err(chatsim_world::wire::WireError::TooLarge(_)) => Err(BadFrame::TooBig),
        _ => Err(BadFrame::Undecodable),
    }
}

/// Bytes a phone's connection may have queued for it, not yet taken by its socket, before the
/// server gives up on it: a phone that stops reading while others keep sending to it (a busy
/// group, pushes retried) would otherwise hold the server's memory without bound. Closing it
/// loses nothing: whatever was queued live is also in its inbox until it acks it, and it drains
/// when it reconnects. A MiB is hundreds of ordinary frames behind the kernel's own buffers.
pub const PHONE_QUEUE_BYTES_MAX: usize = 1 << 20;

/// How the host writes to one of its connections: frames go on a queue the connection's task
/// empties onto the socket. The queue is bounded in bytes ([`PHONE_QUEUE_BYTES_MAX`]); past the
/// bound, and when the host drops the writer (the machine closed the connection), the task is
/// told at once, even while it waits on a socket the peer does not read.
pub struct Writer {
    tx: UnboundedSender<Bytes>,
    state: Rc<Queue>,
}

/// What a writer and its connection's task share.
#[derive(Default)]
struct Queue {
    /// Bytes written, not yet taken by the task.
    bytes: std::cell::Cell<usize>,
    /// Set when the queue overflowed or the writer went.
    over: std::cell::Cell<bool>,
    wake: tokio::sync::Notify,
}

/// The connection task's end of a [`Writer`].
pub struct Outgoing {
    rx: UnboundedReceiver<Bytes>,
    state: Rc<Queue>,
}

impl Writer {
    /// A writer and the end its connection's task reads.
    pub fn new() -> (Writer, Outgoing) {
        let (tx, rx) = unbounded_channel();
        let state = Rc::new(Queue::default());
        (
            Writer {
                tx,
                state: state.clone(),
            },
            Outgoing { rx, state },
        )
    }

    /// Queue `frame`, unless the queue is over its bound: then the connection is to be closed.
    pub fn write(&self, frame: Bytes) {
        let q = &self.state;
        if q.over.get() {
            return;
        }
        let bytes = q.bytes.get() + frame.len();
        if bytes > PHONE_QUEUE_BYTES_MAX {
            q.over.set(true);
            q.wake.notify_one();
            return;
        }
        if self.tx.send(frame).is_ok() {
            q.bytes.set(bytes);
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.state.over.set(true);
        self.state.wake.notify_one();
    }
}

impl Outgoing {
    /// The next frame, or `None` once the writer has gone or the queue overflowed (checked
    /// first: the task stops at once, whatever is still queued).
    async fn next(&mut self) -> Option<Bytes> {
        if self.state.over.get() {
            return None;
        }
        let frame = self.rx.recv().await?;
        self.state
            .bytes
            .set(self.state.bytes.get().saturating_sub(frame.len()));
        Some(frame)
    }

    /// Whether the writer overflowed (true) rather than went away.
    fn overflowed(&self) -> bool {
        self.state.over.get() && !self.rx.is_closed()
    }

    /// Until the queue overflows or the writer goes.
    async fn stopped(&self) {
        while !self.state.over.get() {
            self.state.wake.notified().await;
        }
    }
}

/// Pump one phone's WebSocket: frames from `outgoing` go out as binary messages, each message
/// in is checked and handed on with its bytes. Returns the close code it refused the phone
/// with, if it did.
async fn phone_conn<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    mut outgoing: Outgoing,
    mut on_frame: impl FnMut(&[u8], Frame),
) -> Option<CloseCode>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let silent_until = tokio::time::Instant::now() + FIRST_FRAME_TIMEOUT;
    let mut spoke = false;
    let mut sends = Bucket::new(PHONE_SENDS_PER_S, PHONE_SENDS_BURST);
    let mut frames = Bucket::new(PHONE_FRAMES_PER_S, PHONE_FRAMES_BURST);
    // While set, nothing more is read from the phone until then.
    let mut paused_until: Option<tokio::time::Instant> = None;
    // Since when every frame has had to wait for its limits.
    let mut throttled_since: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            biased;
            out = outgoing.next() => match out {
                Some(frame) => {
                    // A peer that does not read holds this send: the host may still close the
                    // connection, or its queue overflow, meanwhile. The send is tried first, so
                    // what the machine queued before closing (a Refused ahead of the close)
                    // still goes out to a peer that reads.
                    tokio::select! {
                        biased;
                        sent = sink.send(Message::Binary(frame)) => {
                            if sent.is_err() {
                                return None;
                            }
                            continue;
                        }
                        () = outgoing.stopped() => {}
                    }
                    if outgoing.overflowed() {
                        // Dropped without a Close frame: it would wait behind what the peer
                        // is not reading.
                        return Some(close_code_for(&BadFrame::NotReading));
                    }
                    return None;
                }
                None if outgoing.overflowed() => {
                    return Some(close_code_for(&BadFrame::NotReading));
                }
                // The host dropped the writer: the machine closed this connection.
                None => {
                    let _ = tokio::time::timeout(FIRST_FRAME_TIMEOUT, sink.close()).await;
                    return None;
                }
            },
            () = tokio::time::sleep_until(silent_until), if !spoke => {
                let code = close_code_for(&BadFrame::Silent);
                let _ = sink
                    .send(Message::Close(Some(CloseFrame {
                        code,
                        reason: "no frame".into(),
                    })))
                    .await;
                return Some(code);
            }
            () = sleep_until_opt(paused_until), if paused_until.is_some() => {
                paused_until = None;
            }
            msg = stream.next(), if paused_until.is_none() => {
                let bad = match msg {
                    Some(Ok(Message::Binary(data))) => match phone_frame(&data) {
                        Ok(frame) => {
                            spoke = true;
                            let now = tokio::time::Instant::now();
                            let is_send = matches!(frame.wire, Wire::Up(Up::Send { .. }));
                            on_frame(&data, frame);
                            let wait = match (frames.take(now), is_send.then(|| sends.take(now)).flatten()) {
                                (Some(a), Some(b)) => Some(a.max(b)),
                                (a, b) => a.or(b),
                            };
                            match wait {
                                None => throttled_since = None,
                                Some(wait) => {
                                    let since = *throttled_since.get_or_insert(now);
                                    if now.duration_since(since) < PHONE_THROTTLED_MAX {
                                        paused_until = Some(now + wait);
                                        continue;
                                    }
                                    let code = close_code_for(&BadFrame::TooFast);
                                    let _ = tokio::time::timeout(
                                        FIRST_FRAME_TIMEOUT,
                                        sink.send(Message::Close(Some(CloseFrame {
                                            code,
                                            reason: "TooFast".into(),
                                        }))),
                                    )
                                    .await;
                                    return Some(code);
                                }
                            }
                            continue;
                        }
                        Err(bad) => bad,
                    },
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Text(_))) => BadFrame::NotBinary,
                    Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => BadFrame::TooBig,
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
                };
                let code = close_code_for(&bad);
                let _ = sink
                    .send(Message::Close(Some(CloseFrame {
                        code,
                        reason: format!("{bad:?}").into(),
                    })))
                    .await;
                return Some(code);
            }
        }
    }
}

/// How a host's bytes leave it.
struct Links<S> {
    site: S,
    me: Host,
    /// Outgoing links to other servers, one per destination, opened on first use.
    peers: BTreeMap<Host, UnboundedSender<Bytes>>,
}

impl<S: Site> ServerLinks<Writer> for Links<S> {
    fn to_peer(&mut self, to: Host, frame: Bytes) {
        let link = self.peers.entry(to).or_insert_with(|| {
            let (tx, rx) = unbounded_channel();
            let keepalive = self.site.keepalive_ms(self.me, to);
            tokio::task::spawn_local(peer_link(self.site.clone(), to, keepalive, rx));
            tx
        });
        let _ = link.send(frame);
    }

    fn to_conn(&mut self, conn: &Writer, frame: Bytes) {
        conn.write(frame);
    }

    fn wake(&mut self, device: DeviceId) {
        self.site.wake(device);
    }

    fn persist(&mut self, now: Millis, write: Write) {
        self.site.persist(self.me, now, write);
    }

    fn probe(&mut self, probe: Probe) {
        self.site.probe(probe);
    }

    fn disk(&self) -> chatsim_system::Disk {
        self.site.disk(self.me)
    }
}

/// How long a server link may take to connect before the frames it carries are dropped (the
/// machines retry them).
const LINK_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// An open link to a peer and what the peer has acknowledged of it.
struct Link<T> {
    stream: T,
    /// Acknowledgements read back, not yet decoded.
    buf: BytesMut,
    /// Frames written on this connection.
    sent: u64,
    /// Frames the peer said it has read.
    acked: u64,
    /// Since when frames have waited for an acknowledgement without progress.
    waiting_since: Option<Millis>,
}

/// One outgoing server link: write what comes, and replace the connection when a write fails
/// or when frames wait `keepalive` ms for an acknowledgement without progress (a peer that
/// stopped answering, a cut that TCP would take many seconds of backoff to get through after
/// it heals). The frames a dead connection held are dropped, as a network would; the machines
/// retry them. The next frame opens a fresh connection.
async fn peer_link<S: Net>(site: S, to: Host, keepalive: Millis, mut rx: UnboundedReceiver<Bytes>) {
    let mut link: Option<Link<S::Stream>> = None;
    loop {
        let stall_in = link
            .as_ref()
            .and_then(|l| l.waiting_since)
            .map(|t| Duration::from_millis((t + keepalive).saturating_sub(site.now())));
        let acks = async {
            match link.as_mut() {
                Some(l) => l.stream.read_buf(&mut l.buf).await.unwrap_or(0),
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
                loop {
                    match decode(&mut l.buf) {
                        Ok(Some((f, _))) => {
                            // A peer answers a link with acknowledgements only.
                            let Wire::LinkAck(k) = f.wire else {
                                link = None;
                                break;
                            };
                            if k > l.acked {
                                l.acked = k;
                                l.waiting_since = (l.acked < l.sent).then(|| site.now());
                            }
                        }
                        Ok(None) => break,
                        Err(_) => {
                            link = None;
                            break;
                        }
                    }
                }
            }
            _ = sleep_opt(stall_in), if stall_in.is_some() => {
                tracing::debug!(%to, keepalive, "a server link stopped answering: replacing it");
                link = None;
            }
            frame = rx.recv() => {
                let Some(first) = frame else { return };
                let mut bytes = first.to_vec();
                let mut n = 1;
                while let Ok(more) = rx.try_recv() {
                    bytes.extend_from_slice(&more);
                    n += 1;
                }
                // A write the peer does not take (it stopped reading; a cut that TCP keeps
                // retransmitting into) holds this task, the stall timer with it: the write
                // gets the keepalive as its own bound.
                let bound = Duration::from_millis(keepalive);
                if let Some(l) = link.as_mut() {
                    if write_within(bound, &mut l.stream, &bytes).await {
                        l.sent += n;
                        l.waiting_since.get_or_insert_with(|| site.now());
                        continue;
                    }
                }
                link = None;
                let connect = site.connect(Endpoint::Server(to));
                if let Ok(Ok(mut stream)) = tokio::time::timeout(LINK_CONNECT_TIMEOUT, connect).await {
                    if write_within(bound, &mut stream, &bytes).await {
                        link = Some(Link {
                            stream,
                            buf: BytesMut::new(),
                            sent: n,
                            acked: 0,
                            waiting_since: Some(site.now()),
                        });
                    }
                }
            }
        }
    }
}

async fn write_within<W: tokio::io::AsyncWrite + Unpin>(
    bound: Duration,
    w: &mut W,
    bytes: &[u8],
) -> bool {
    matches!(
        tokio::time::timeout(bound, write_all(w, bytes)).await,
        Ok(true)
    )
}

async fn write_all<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, bytes: &[u8]) -> bool {
    w.write_all(bytes).await.is_ok() && w.flush().await.is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatsim_system::proto::{Down, Up, UserId};
    use chatsim_world::wire::{encode, Frame};

    fn framed(wire: Wire) -> Bytes {
        encode(&Frame {
            from: Host::Device(DeviceId::primary(UserId(0))),
            sent_ms: 0,
            wire,
        })
    }

    // docs/protocol.md's worked example, byte for byte.
    #[test]
    fn the_protocol_pages_example_frames_are_what_the_code_writes() {
        let ping = encode(&Frame {
            from: Host::Device(DeviceId::primary(UserId(3))),
            sent_ms: 1000,
            wire: Wire::Up(Up::Ping),
        });
        assert_eq!(
            ping.as_ref(),
            [0x00, 0x00, 0x00, 0x07, 0x06, 0x03, 0x00, 0xe8, 0x07, 0x01, 0x09]
        );
        let pong = encode(&Frame {
            from: Host::Gateway(0),
            sent_ms: 1000,
            wire: Wire::Down(Down::Pong),
        });
        assert_eq!(
            pong.as_ref(),
            [0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0xe8, 0x07, 0x02, 0x0a]
        );
    }

    #[test]
    fn a_phone_may_send_one_whole_up_frame_a_message_and_nothing_else() {
        let ping = framed(Wire::Up(Up::Ping));
        assert_eq!(phone_frame(&ping).map(|f| f.wire), Ok(Wire::Up(Up::Ping)));
        let mut two = ping.to_vec();
        two.extend_from_slice(&ping);
        assert_eq!(phone_frame(&two), Err(BadFrame::Undecodable));
        assert_eq!(
            phone_frame(&ping[..ping.len() - 1]),
            Err(BadFrame::Undecodable)
        );
        assert_eq!(
            phone_frame(b"\x00\x00\x00\x02\xff\xff"),
            Err(BadFrame::Undecodable)
        );
        // A length prefix past the limit says what it is before any body arrives.
        assert_eq!(phone_frame(b"garbage!"), Err(BadFrame::TooBig));
        let down = framed(Wire::Down(Down::Pong));
        assert_eq!(phone_frame(&down).err(), Some(BadFrame::NotAPhoneFrame));
        let mut huge = ((FRAME_BYTES_MAX + 1) as u32).to_be_bytes().to_vec();
        huge.extend_from_slice(&[0; 16]);
        assert_eq!(phone_frame(&huge), Err(BadFrame::TooBig));
        assert_eq!(close_code_for(&BadFrame::NotAPhoneFrame), CloseCode::Policy);
    }
}
