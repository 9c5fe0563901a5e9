//! What the serving code asks of the world it runs in, so the same code runs in two: sockets
//! and a clock ([`Net`]), and for a server host also the durable state its machine restarts
//! from and where to report what it did ([`Site`]). `chatsim serve` gives it real sockets, the
//! wall clock and a disk ([`crate::serve::RealSite`]); the turmoil engine gives it simulated
//! ones, so the accept loops, the WebSocket checks and close codes, the server links and the
//! host loop that serve real phones run under simulation too and are judged by the same
//! checkers (`--engine served`).

use chatsim_system::durable::Write;
use chatsim_system::limits::SERVER_LINK_KEEPALIVE_MS;
use chatsim_system::probe::Probe;
use chatsim_system::proto::{DeviceId, Host, Millis};
use chatsim_system::{Disk, Machine};
use chatsim_world::wire::Frame;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::{AsyncRead, AsyncWrite};

/// Where a connection goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// A server's own port, where its peers' links arrive.
    Server(Host),
    /// A gateway's WebSocket port, where phones arrive.
    Phones(u16),
}

/// Sockets and a clock.
pub trait Net: Clone + 'static {
    /// A connected byte stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + 'static;
    /// A listening socket.
    type Listener: 'static;
    /// Milliseconds on this world's clock (what the machines are told it is).
    fn now(&self) -> Millis;
    /// The next connection on `l`, and who it came from.
    fn accept(
        &self,
        l: &Self::Listener,
    ) -> impl Future<Output = io::Result<(Self::Stream, SocketAddr)>>;
    /// Open a connection to `to`.
    fn connect(&self, to: Endpoint) -> impl Future<Output = io::Result<Self::Stream>>;
    /// The URL a phone asks for in its WebSocket handshake with gateway `g`.
    fn url(&self, g: u16) -> String;
    /// How long frames on the link from server `from` to server `to` may wait for an
    /// acknowledgement, without progress, before the link is replaced: the deployment's
    /// keepalive, or longer for a link a simulated world slows down.
    fn keepalive_ms(&self, _from: Host, _to: Host) -> Millis {
        SERVER_LINK_KEEPALIVE_MS
    }
    /// `frame` (its bytes `raw`, length prefix included) arrived at `at`: a simulated world
    /// records it for the judges and the trace; the real one need not.
    fn heard(&self, _now: Millis, _at: Host, _raw: &[u8], _frame: &Frame) {}
}

/// What a server host needs beside sockets.
pub trait Site: Net {
    /// `host`'s machine, started from what it made durable before.
    fn machine(&self, host: Host) -> Box<dyn Machine>;
    /// Keep `write`, which `host`'s machine synced at `now`, before anything is acked past it.
    fn persist(&self, host: Host, now: Millis, write: Write);
    /// Wake a phone through the OS's push channel, outside the chat network.
    fn wake(&self, device: DeviceId);
    /// Count a probe a machine reached.
    fn probe(&self, _probe: Probe) {}
    /// What `host`'s disk does now (a simulated world's disk faults set it).
    fn disk(&self, _host: Host) -> Disk {
        Disk::Healthy
    }
    /// Connection counts, for the log and the hostile-peer tests.
    fn counters(&self) -> &Counters;
    /// Phone connections one gateway holds at most.
    fn phone_connections_max(&self) -> usize {
        usize::MAX
    }
}

/// What the gateways of one process counted.
#[derive(Debug, Default)]
pub struct Counters {
    phone_connections: AtomicU64,
    refused: AtomicU64,
}

impl Counters {
    /// A phone's WebSocket handshake completed.
    pub fn opened(&self) {
        self.phone_connections.fetch_add(1, Ordering::Relaxed);
    }

    /// A phone's connection was closed for a bad frame.
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// (phone connections accepted, of them closed for a bad frame).
    pub fn read(&self) -> (u64, u64) {
        (
            self.phone_connections.load(Ordering::Relaxed),
            self.refused.load(Ordering::Relaxed),
        )
    }
}
