//! The serving code under simulation (`--engine served`): every server host runs
//! `chatsim serve`'s own host loop ([`chatsim_server::serve::run_host`]: its accept loops,
//! WebSocket handshake, frame checks and close codes, server links and shutdown path) and
//! every phone `chatsim client`'s own connection code ([`chatsim_server::phone::connection`]),
//! over turmoil's sockets and clock instead of the kernel's. The world around them (cells,
//! plan, nemesis, recorder) is the turmoil engine's, so the checkers judge the serving code
//! as they judge the engines.
//!
//! What does not run here, and why: the real clock and signals (`now()`, Ctrl-C: the
//! simulation's clock stands in and a run ends when its plan does), the data folder and Redis
//! (`disk.rs` and `sessions.rs` write to a real file and a real server; the durable state
//! lives in the same in-memory model the engines use), and the threads (`chatsim serve` runs
//! each host on a thread of its own; here each is a turmoil host).

use super::{host_name, keepalive_ms, now, Shared, PORT};
use chatsim_server::site::{Counters, Endpoint, Net, Site};
use chatsim_system::durable::Write;
use chatsim_system::probe::Probe;
use chatsim_system::proto::{DeviceId, Host, Millis};
use chatsim_world::host::PhoneEvent;
use chatsim_world::wire::Frame;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use turmoil::net::{TcpListener, TcpStream};

/// The port a served gateway takes phones' WebSockets on (its peers' links use [`PORT`]).
pub(super) const WS_PORT: u16 = PORT + 1;

/// The simulated world as the serving code sees it.
#[derive(Clone)]
pub(super) struct SimSite(pub(super) Arc<Shared>);

impl Net for SimSite {
    type Stream = TcpStream;
    type Listener = TcpListener;

    fn now(&self) -> Millis {
        now()
    }

    async fn accept(&self, l: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
        l.accept().await
    }

    async fn connect(&self, to: Endpoint) -> io::Result<TcpStream> {
        match to {
            Endpoint::Server(h) => TcpStream::connect((host_name(h), PORT)).await,
            Endpoint::Phones(g) => TcpStream::connect((host_name(Host::Gateway(g)), WS_PORT)).await,
        }
    }

    fn url(&self, g: u16) -> String {
        format!("ws://{}:{WS_PORT}/", host_name(Host::Gateway(g)))
    }

    fn keepalive_ms(&self, from: Host, to: Host) -> Millis {
        keepalive_ms(&self.0.network, from, to)
    }

    fn heard(&self, now: Millis, at: Host, raw: &[u8], frame: &Frame) {
        self.0.rec.delivered(now, at, raw, frame);
    }
}

impl Site for SimSite {
    fn machine(&self, host: Host) -> Box<dyn chatsim_system::Machine> {
        self.0.durable.machine(host, &self.0.topo, self.0.seed)
    }

    fn persist(&self, _host: Host, now: Millis, write: Write) {
        if matches!(write, Write::Rebuilt(_)) {
            self.0.rec.rebuilt(now);
        }
        self.0.durable.apply(write);
    }

    fn wake(&self, device: DeviceId) {
        if let Some(w) = self.0.wakers.lock().expect("never poisoned").get(&device) {
            let _ = w.send(PhoneEvent::Wake);
        }
    }

    fn probe(&self, probe: Probe) {
        self.0.rec.probe(probe);
    }

    fn disk(&self, host: Host) -> chatsim_system::Disk {
        self.0.durable.disk(host)
    }

    fn counters(&self) -> &Counters {
        &self.0.counters
    }
}

/// A server host running `chatsim serve`'s host loop.
pub(super) async fn server_main(host: Host, sh: Arc<Shared>) -> turmoil::Result {
    let internal = TcpListener::bind(("0.0.0.0", PORT)).await?;
    let phones = match host {
        Host::Gateway(_) => Some(TcpListener::bind(("0.0.0.0", WS_PORT)).await?),
        _ => None,
    };
    let stop = sh.stop.subscribe();
    chatsim_server::serve::run_host(SimSite(sh), host, internal, phones, stop, 0).await;
    Ok(())
}

/// A served phone's sockets: turmoil's, carried by its cell, which honours the plan's silence
/// and black holes on the phone's connection.
#[derive(Clone)]
pub(super) struct PhoneNet {
    pub(super) sh: Arc<Shared>,
    pub(super) id: DeviceId,
}

impl Net for PhoneNet {
    type Stream = CellStream;
    type Listener = TcpListener;

    fn now(&self) -> Millis {
        now()
    }

    async fn accept(&self, l: &TcpListener) -> io::Result<(CellStream, SocketAddr)> {
        let (s, peer) = l.accept().await?;
        Ok((CellStream::plain(s), peer))
    }

    async fn connect(&self, to: Endpoint) -> io::Result<CellStream> {
        let silent = self
            .sh
            .silent
            .get(&self.id)
            .expect("every device has a silence switch")
            .subscribe();
        // A silent phone reaches nobody: its attempt fails as on a dead radio.
        if *silent.borrow() {
            return Err(io::Error::new(io::ErrorKind::NetworkUnreachable, "silent"));
        }
        let hole = self.sh.holes.get(&self.id).map(watch::Sender::subscribe);
        let inner = SimSite(self.sh.clone()).connect(to).await?;
        Ok(CellStream {
            inner,
            silent: Some(silent),
            hole,
            read_wait: None,
            write_wait: None,
            swallowed: false,
        })
    }

    fn url(&self, g: u16) -> String {
        SimSite(self.sh.clone()).url(g)
    }

    fn heard(&self, now: Millis, at: Host, raw: &[u8], frame: &Frame) {
        self.sh.rec.delivered(now, at, raw, frame);
    }
}

type Wait = Pin<Box<dyn Future<Output = ()>>>;

/// A phone's connection as its cell carries it. While the phone is silent the cell moves none
/// of its bytes either way (they wait on both sides, as in a tunnel); once it falls into a
/// black hole, everything either side writes is lost and the connection never closes from
/// this end, so only a heartbeat can tell. The same semantics as the turmoil engine's own
/// phone connections.
pub(super) struct CellStream {
    inner: TcpStream,
    silent: Option<watch::Receiver<bool>>,
    hole: Option<watch::Receiver<bool>>,
    read_wait: Option<Wait>,
    write_wait: Option<Wait>,
    swallowed: bool,
}

impl CellStream {
    fn plain(inner: TcpStream) -> CellStream {
        CellStream {
            inner,
            silent: None,
            hole: None,
            read_wait: None,
            write_wait: None,
            swallowed: false,
        }
    }

    /// Whether the connection fell into a black hole: once it has, it stays swallowed even
    /// after the hole closes (frames were lost both ways, which TCP never recovers from), as
    /// the turmoil engine's own phones do.
    fn holed(&mut self) -> bool {
        if !self.swallowed && self.hole.as_ref().is_some_and(|h| *h.borrow()) {
            self.swallowed = true;
        }
        self.swallowed
    }

    /// Ready when the phone may talk (now, or once its silence ends); pending, with `cx` woken
    /// at the end, while it is silent.
    fn may_talk(
        silent: &Option<watch::Receiver<bool>>,
        wait: &mut Option<Wait>,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        let Some(s) = silent else {
            return Poll::Ready(());
        };
        if !*s.borrow() {
            *wait = None;
            return Poll::Ready(());
        }
        let fut = wait.get_or_insert_with(|| {
            let mut s = s.clone();
            Box::pin(async move {
                if s.wait_for(|on| !*on).await.is_err() {
                    // Nobody will ever end this silence.
                    std::future::pending::<()>().await;
                }
            })
        });
        match fut.as_mut().poll(cx) {
            Poll::Ready(()) => {
                *wait = None;
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for CellStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.holed() {
            // Drain what arrives so the peer's writes never back up; hand the phone nothing,
            // not even the end of the stream.
            let mut scratch = [0u8; 4096];
            loop {
                let mut sink = ReadBuf::new(&mut scratch);
                match Pin::new(&mut me.inner).poll_read(cx, &mut sink) {
                    Poll::Ready(Ok(())) if !sink.filled().is_empty() => continue,
                    Poll::Ready(_) => return Poll::Pending,
                    Poll::Pending => return Poll::Pending,
                }
            }
        }
        if Self::may_talk(&me.silent, &mut me.read_wait, cx).is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut me.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CellStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let me = self.get_mut();
        if me.holed() {
            return Poll::Ready(Ok(buf.len()));
        }
        if Self::may_talk(&me.silent, &mut me.write_wait, cx).is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut me.inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.holed() {
            return Poll::Ready(Ok(()));
        }
        if Self::may_talk(&me.silent, &mut me.write_wait, cx).is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut me.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let me = self.get_mut();
        if me.holed() {
            return Poll::Ready(Ok(()));
        }
        if Self::may_talk(&me.silent, &mut me.write_wait, cx).is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut me.inner).poll_shutdown(cx)
    }
}
