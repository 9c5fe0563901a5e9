//! The madsim engine: every server and every device is a madsim node, frames travel over
//! madsim's simulated TCP, and a nemesis task on the supervisor node injects the plan's faults.
//!
//! The driver is deliberately thin: it turns socket events into [`Input`]s and [`Effect`]s
//! into socket writes; all protocol logic lives in `chatsim-system`. It is written against the
//! tokio API (`madsim-tokio`), so the node code also compiles against real tokio.
//!
//! A node's machine sits in a [`Seat`] its tasks share (a run is one thread): a connection's
//! task hands the machine each frame as it reads it, and the host writes each step's frames
//! itself at the step's end ([`Outlet`], [`PeerLink`]), leaving a task only what must wait (the
//! pace, a cut, a connection to open). A frame costs no task hop beyond madsim's own.
//!
//! Durable state (storage's synced records) lives in [`Shared`], outside the nodes, so a kill
//! keeps exactly what was synced. Traps handled here, measured: madsim's `write_all` only
//! buffers until `flush()`; restarting a node that was not killed panics ("address in use"),
//! so the nemesis kills before it restarts and tracks which hosts are down.

use super::RawRun;
use crate::plan::{derive_seed, role_of, server_hosts, Plan, SPIKE_LATENCY_MS};
use crate::scenario::{Range, Role, Scenario};
use crate::wire::{decode, filler, skip_frames, Frame};
use bytes::{Bytes, BytesMut};
use chatsim_system::bugs::Bugs;
use chatsim_system::device::Device;
use chatsim_system::durable::Write;
use chatsim_system::limits::SERVER_LINK_KEEPALIVE_MS;
use chatsim_system::probe::Probe;
use chatsim_system::proto::{ConnId, DeviceId, Host, Millis, UserId};
use chatsim_system::{Action, Deployment};
use chatsim_world::deploy::{deployment, device_seed, Durable};
use chatsim_world::host::{ConnEvent, PhoneEvent, PhoneHost, PhoneLinks, ServerHost, ServerLinks};
use chatsim_world::nemesis::{FaultLedger, FaultPrimitives};
use chatsim_world::record::{FloorPlan, Keep, Recorder, SAMPLE_MS};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::{RefCell, RefMut};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use tokio::time::{sleep_until, Instant};

/// The port every server listens on.
const PORT: u16 = 7000;
/// A deadline so far off that no run reaches it: what a `select!` branch waits on when it
/// has no deadline (the branch is disabled, but its future is still built).
const NEVER: Duration = Duration::from_secs(86_400 * 365);
/// Room a connection's read buffer has before each read. madsim hands a read at most the
/// buffer's spare room of the chunk the peer flushed, so this bounds how much one read takes;
/// a frame bigger than it grows the buffer. Every phone's connection has two buffers (one at
/// each end): at 100,000 phones an 8 KiB buffer each was 1.6 GB of a 4 GB budget.
const READ_ROOM_BYTES: usize = 1024;
/// An emptied read buffer above this capacity (grown for a big frame) is given back, so a
/// connection that once carried a large key distribution does not keep its size.
const READ_KEEP_BYTES: usize = 8 * 1024;

/// Spawn `task` on the heap behind one pointer. madsim's node init and madsim-tokio's spawn
/// each wrap a task in an async block that keeps the future twice (the moved-in value and the
/// one being awaited), so an unboxed task costs about four times its future. Once per phone
/// (its task, its connection's task at each end, the latency queue each way) that was most of
/// 11 KB a phone.
fn spawn_boxed(task: impl Future<Output = ()> + Send + 'static) {
    tokio::spawn(Box::pin(task));
}

/// As [`spawn_boxed`], for a task of a host's node that reaches the host's [`Seat`] (not
/// `Send`: a run is one thread).
fn spawn_local_boxed(task: impl Future<Output = ()> + 'static) {
    tokio::task::spawn_local(Box::pin(task));
}

/// Make room for the next read, giving back a buffer grown past [`READ_KEEP_BYTES`] once it
/// holds nothing.
fn read_room(buf: &mut BytesMut) {
    if buf.is_empty() && buf.capacity() > READ_KEEP_BYTES {
        *buf = BytesMut::new();
    }
    buf.reserve(READ_ROOM_BYTES);
}

/// The simulated address of a host. Simulated only: madsim never touches a real network.
pub fn addr_of(host: Host) -> SocketAddr {
    let ip = match host {
        Host::Gateway(i) => Ipv4Addr::new(10, 1, 0, i as u8 + 1),
        Host::Session => Ipv4Addr::new(10, 2, 0, 1),
        Host::Push => Ipv4Addr::new(10, 5, 0, 1),
        Host::Shard(i) => Ipv4Addr::new(10, 3, 0, i as u8 + 1),
        Host::Storage(i) => Ipv4Addr::new(10, 4, 0, i as u8 + 1),
        Host::Replica(i) => Ipv4Addr::new(10, 4, 1, i as u8 + 1),
        Host::Device(d) => {
            let u = d.user.0;
            Ipv4Addr::new(
                10,
                16 + (u >> 16) as u8 * 4 + d.index,
                (u >> 8) as u8,
                u as u8,
            )
        }
    };
    SocketAddr::new(IpAddr::V4(ip), PORT)
}

/// State shared by every node of one run; it is what survives a kill.
struct Shared {
    t0: Instant,
    topo: Deployment,
    seed: u64,
    rec: Recorder,
    durable: Durable,
    links: BTreeMap<(Role, Role), Range>,
    /// Each device's event channel, for pushes: the OS's channel to the phone, outside the
    /// chat network (a partition of ours does not hold it; killing the provider loses what it
    /// had pending).
    wakers: Mutex<BTreeMap<DeviceId, UnboundedSender<PhoneEvent>>>,
    /// The black-hole switch of each phone the plan drops into one (no others: a phone without
    /// one steps exactly the tasks it always did).
    holes: BTreeMap<DeviceId, watch::Sender<bool>>,
    /// Server hosts whose links are slowed now; `None` when the plan has no spikes, and then
    /// no connection goes through a pump for them.
    spiked: Option<Mutex<BTreeSet<Host>>>,
    /// The cuts in force now, which server links consult to play their keepalive.
    cuts: Mutex<Cuts>,
    /// One switch per server link, flipped in registration order at every change of `cuts`,
    /// so a link waiting out a cut hears when it ends. One channel a link, not one for all:
    /// tokio's `watch` spreads a channel's waiters over several queues by a generator nothing
    /// seeds, so with many waiters the order they woke in, and the trace, varied between runs
    /// (churn-fanout seed 7, only when other tests ran beside it).
    cut_switches: Mutex<Vec<watch::Sender<()>>>,
}

/// Which hosts are clogged and which links are cut, and since when. madsim's TCP holds a
/// frame written into a clogged link and retries it with a backoff that grows to 10 s, so a
/// server link cut for seconds delivered its backlog up to 10 s after the heal, a frame at a
/// time (partition-heal seed 5171: a shard's session lookups from before a 12 s cut arrived
/// 6.8 s after it healed, and receipts the shard was pushing waited with them). The
/// deployment's server links take a link that stops answering for dead within
/// [`SERVER_LINK_KEEPALIVE_MS`] and replace it (the turmoil engine enforces that with
/// acknowledgements); here the engine that makes the cuts knows them, so a server link holds
/// its frames while its link is cut and, once the cut is that old, drops the connection and
/// what it held, as a keepalive would, and opens a fresh one when the cut ends.
#[derive(Default)]
struct Cuts {
    hosts: BTreeMap<Host, Instant>,
    links: BTreeMap<(Host, Host), Instant>,
}

impl Cuts {
    /// Since when frames between `a` and `b` have been held, either way (`None`: they flow).
    fn since(&self, a: Host, b: Host) -> Option<Instant> {
        [
            self.hosts.get(&a),
            self.hosts.get(&b),
            self.links.get(&(a, b)),
            self.links.get(&(b, a)),
        ]
        .into_iter()
        .flatten()
        .min()
        .copied()
    }
}

thread_local! {
    /// Worlds built on this thread and not yet dropped (a run's whole world is one `Shared`).
    static WORLDS_ALIVE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// How many worlds built on this thread are still alive: 0 once its runs have returned, or
/// every finished run's hosts, sockets and machines are leaking (a swarm would keep them all).
pub fn worlds_alive_on_this_thread() -> usize {
    WORLDS_ALIVE.with(|n| n.get())
}

impl Drop for Shared {
    fn drop(&mut self) {
        WORLDS_ALIVE.with(|n| n.set(n.get().saturating_sub(1)));
    }
}

impl Shared {
    fn now(&self) -> Millis {
        self.millis(Instant::now())
    }

    /// Simulated milliseconds since the run began, at `at`.
    fn millis(&self, at: Instant) -> Millis {
        at.duration_since(self.t0).as_millis() as Millis
    }

    fn change_cuts(&self, change: impl FnOnce(&mut Cuts)) {
        change(&mut self.cuts.lock().expect("never poisoned"));
        let mut switches = self.cut_switches.lock().expect("never poisoned");
        switches.retain(|s| s.send(()).is_ok());
    }

    /// Wait while the link between `from` and `to` is cut: true once frames flow again,
    /// false once the cut is [`SERVER_LINK_KEEPALIVE_MS`] old (a keepalive has given the
    /// connection up by then).
    async fn wait_out_cut(&self, from: Host, to: Host, changed: &mut watch::Receiver<()>) -> bool {
        loop {
            changed.borrow_and_update();
            let since = self.cuts.lock().expect("never poisoned").since(from, to);
            let Some(since) = since else {
                return true;
            };
            let dead = since + Duration::from_millis(SERVER_LINK_KEEPALIVE_MS);
            if Instant::now() >= dead {
                return false;
            }
            // Biased: an unbiased select draws from tokio's own RNG, which nothing seeds.
            tokio::select! {
                biased;
                _ = changed.changed() => {}
                _ = sleep_until(dead) => {}
            }
        }
    }

    /// Whether frames from `from` to `to` may take extra latency: the scenario sets some for
    /// the link, or spikes slow links now and then.
    fn delays(&self, from: Host, to: Role) -> bool {
        self.spiked.is_some() || self.links.contains_key(&(role_of(from), to))
    }

    /// Wrap a connection's outgoing frames in the scenario's extra latency for `from -> to`
    /// (callers ask [`Shared::delays`] first), and in a spike's while `from` or `to_host` (when known) is spiked. `nth`
    /// tells this connection from earlier ones between the same hosts, so each draws its own
    /// latencies.
    fn delayed(
        self: &Arc<Self>,
        from: Host,
        to: Role,
        to_host: Option<Host>,
        nth: u64,
        rx: UnboundedReceiver<Bytes>,
    ) -> UnboundedReceiver<Bytes> {
        assert!(
            self.delays(from, to),
            "only a link that may delay gets a queue"
        );
        let range = self.links.get(&(role_of(from), to)).copied();
        let sh = self.clone();
        let spiked = move || {
            sh.spiked.as_ref().is_some_and(|s| {
                let s = s.lock().expect("never poisoned");
                s.contains(&from) || to_host.is_some_and(|t| s.contains(&t))
            })
        };
        let salt = format!("{from}->{to:?}#{nth}")
            .bytes()
            .fold(0, |h, b| derive_seed(h, u64::from(b)));
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(self.seed, salt));
        let (tx, out) = unbounded_channel();
        let mut rx = rx;
        spawn_boxed(async move {
            // Each frame's deadline is drawn when it is written, and deadlines never go
            // backwards, so frames on one connection stay in order without waiting on each
            // other: extra latency, not a narrower pipe.
            let mut queue: VecDeque<(Instant, Bytes)> = VecDeque::new();
            let mut last = Instant::now();
            let mut open = true;
            let mut alarm = Alarm::default();
            while open || !queue.is_empty() {
                let front = queue.front().map(|(at, _)| *at);
                tokio::select! {
                    biased;
                    frame = rx.recv(), if open => match frame {
                        Some(frame) => {
                            let mut extra = range.map_or(0, |r| rng.gen_range(r.lo..=r.hi));
                            if spiked() {
                                extra += rng.gen_range(SPIKE_LATENCY_MS.0..=SPIKE_LATENCY_MS.1);
                            } else if extra == 0 && range.is_none() && queue.is_empty() {
                                // Only here for spikes, and none now: no extra hop.
                                if tx.send(frame).is_err() {
                                    return;
                                }
                                continue;
                            }
                            let extra = Duration::from_millis(extra);
                            last = (Instant::now() + extra).max(last);
                            queue.push_back((last, frame));
                        }
                        None => open = false,
                    },
                    now = alarm.until(front.unwrap_or(last)), if front.is_some() => {
                        // Everything due goes now: madsim sleeps at least 1 ms, so releasing one
                        // frame per wake-up would cap the link at 1,000 frames a second.
                        while let Some((_, frame)) = queue.pop_front_if(|(at, _)| *at <= now) {
                            if tx.send(frame).is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        out
    }
}

/// The least time between two payloads written on one connection. madsim carries one payload
/// per flush, and a receiving socket takes at least 1 ms per payload when payloads queue up
/// (its `sleep_until` never sleeps less), so a busy connection writing a payload per frame
/// would be capped at 1,000 frames a second and back up. Frames written within this pace are
/// coalesced into one payload, as TCP coalesces a burst into segments; an idle connection
/// writes at once, so quiet links gain no latency.
const WRITE_PACE: Duration = Duration::from_millis(2);

/// A wake-up one task waits for and anything on the run's thread gives; one given while the
/// task is busy is kept for its next wait. tokio's `Notify` did the same at 5% of a small run:
/// each wait entered and left a locked waiter list, where one thread needs a flag.
#[derive(Default)]
struct Poke {
    given: std::cell::Cell<bool>,
    waiter: RefCell<Option<std::task::Waker>>,
}

impl Poke {
    fn poke(&self) {
        self.given.set(true);
        if let Some(waker) = self.waiter.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Ready once poked (at once, if a poke is kept).
    fn wait(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.given.replace(false) {
                return std::task::Poll::Ready(());
            }
            let mut waiter = self.waiter.borrow_mut();
            if !waiter.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waiter = Some(cx.waker().clone());
            }
            std::task::Poll::Pending
        })
    }
}

/// One connection's socket and what is waiting to be written on it, shared by the
/// connection's task (which reads, and writes what the pace held back) and its host (which
/// writes at the end of each step, in its own turn). A host that handed each frame to the
/// connection's task through a channel cost a send, a wake-up and a poll of that task per
/// payload.
struct Outlet {
    st: RefCell<OutletState>,
    /// Wakes the connection's task: a payload is held for the pace, the host let go, or a
    /// write failed.
    poke: Poke,
}

#[derive(Default)]
struct OutletState {
    /// `None` until a phone's connection is made, and again once the connection ended.
    stream: Option<TcpStream>,
    /// Frames written since the last payload went.
    held: BytesMut,
    last_write: Option<Instant>,
    /// The host dropped its writer: write what is held, then close.
    let_go: bool,
    /// Frames written now are lost: the connection ended, or fell into a black hole.
    dead: bool,
}

/// Write `bytes` as one payload, now. madsim's stream takes a whole write at once and sends it
/// on flush, never pending; a write that did pend, or failed (the peer's socket is gone, like a
/// TCP reset), counts as failed. False if it failed.
fn write_now(stream: &mut TcpStream, bytes: &[u8]) -> bool {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let wrote = matches!(
        std::pin::Pin::new(&mut *stream).poll_write(&mut cx, bytes),
        std::task::Poll::Ready(Ok(n)) if n == bytes.len()
    );
    wrote
        && matches!(
            std::pin::Pin::new(stream).poll_flush(&mut cx),
            std::task::Poll::Ready(Ok(()))
        )
}

impl OutletState {
    /// Send what is held as one payload; false if the write failed.
    fn put(&mut self, now: Instant) -> bool {
        let Some(stream) = self.stream.as_mut() else {
            return true;
        };
        if self.held.is_empty() {
            return true;
        }
        let bytes = self.held.split().freeze();
        let ok = write_now(stream, &bytes);
        self.last_write = Some(now);
        if !ok {
            self.dead = true;
            self.held.clear();
        }
        ok
    }
}

impl Outlet {
    fn new(stream: Option<TcpStream>) -> Rc<Outlet> {
        Rc::new(Outlet {
            st: RefCell::new(OutletState {
                stream,
                ..OutletState::default()
            }),
            poke: Poke::default(),
        })
    }

    /// Keep `frame` for the next payload; true if it is the first kept since the last one went
    /// (the caller then releases the outlet at the end of its step).
    fn hold(&self, frame: &[u8]) -> bool {
        let mut st = self.st.borrow_mut();
        if st.dead {
            return false;
        }
        let first = st.held.is_empty();
        st.held.extend_from_slice(frame);
        first
    }

    /// Send what is held now if the pace allows, else leave it to the connection's task.
    /// Frames written within [`WRITE_PACE`] of the last payload wait for it to pass, and go
    /// as one payload with whatever else is written meanwhile.
    fn release(&self, now: Instant) {
        let mut st = self.st.borrow_mut();
        if st.held.is_empty() || st.stream.is_none() {
            // Nothing to send, or not connected yet: the task sends what is held once it is.
            return;
        }
        let paced = st.last_write.is_some_and(|l| l + WRITE_PACE > now);
        if paced || !st.put(now) {
            drop(st);
            self.poke.poke();
        }
    }

    /// The connection's task's turn to write: wait out the pace, then send what is held.
    async fn drain(&self) {
        let due = {
            let st = self.st.borrow();
            if st.held.is_empty() || st.stream.is_none() {
                return;
            }
            st.last_write.map(|l| l + WRITE_PACE)
        };
        if let Some(due) = due.filter(|d| *d > Instant::now()) {
            sleep_until(due).await;
        }
        self.st.borrow_mut().put(Instant::now());
    }

    /// Read what the socket has into `buf`: bytes read, 0 at its end.
    fn poll_read(
        &self,
        cx: &mut std::task::Context<'_>,
        buf: &mut BytesMut,
    ) -> std::task::Poll<std::io::Result<usize>> {
        let mut st = self.st.borrow_mut();
        let Some(stream) = st.stream.as_mut() else {
            return std::task::Poll::Ready(Ok(0));
        };
        // Made and polled once per poll, so no borrow of the socket outlives it: madsim's
        // stream keeps its own read state, and read_buf is cancel-safe.
        let read = stream.read_buf(buf);
        std::pin::pin!(read).poll(cx)
    }

    /// The connection is over: drop the socket (the peer reads its end) and whatever is held.
    fn end(&self) {
        let mut st = self.st.borrow_mut();
        st.dead = true;
        st.held.clear();
        st.stream = None;
    }
}

/// A host's writer of one connection: frames go straight into the outlet, or, on a link with
/// extra latency, through the queue that delays them. Dropping it lets the connection go.
enum ConnWriter {
    Direct(OutletHold),
    Delayed(UnboundedSender<Bytes>),
}

/// The host's hold on an outlet; dropping it closes the connection once what it holds is sent.
struct OutletHold(Rc<Outlet>);

impl Drop for OutletHold {
    fn drop(&mut self) {
        self.0.st.borrow_mut().let_go = true;
        self.0.poke.poke();
    }
}

/// What a host writes in one step, released at the step's end so a step's frames to one
/// connection go as one payload.
#[derive(Default)]
struct Outbox {
    dirty: Vec<Rc<Outlet>>,
    /// Peer links written to in this step.
    links: Vec<Rc<PeerLink>>,
}

impl Outbox {
    fn write(&mut self, conn: &ConnWriter, frame: Bytes) {
        match conn {
            ConnWriter::Direct(hold) => {
                if hold.0.hold(&frame) {
                    self.dirty.push(hold.0.clone());
                }
            }
            ConnWriter::Delayed(tx) => {
                let _ = tx.send(frame);
            }
        }
    }

    /// Write what the step held, at `now`, the step's time: no simulated time passes in a
    /// step, and the caller has already read the clock once (each read is a call into
    /// madsim's clock, a lock and two reference counts).
    fn release(&mut self, now: Instant) {
        if self.dirty.is_empty() && self.links.is_empty() {
            return;
        }
        for outlet in self.dirty.drain(..) {
            outlet.release(now);
        }
        for link in self.links.drain(..) {
            link.release(now);
        }
    }
}

impl Shared {
    /// The writer a host gets for `outlet`: direct, or through [`Shared::delayed`]'s queue
    /// when the link has extra latency (a local task then moves what the queue lets out into
    /// the outlet, and lets the outlet go once the host's writer and the queue are done).
    fn writer(
        self: &Arc<Self>,
        outlet: &Rc<Outlet>,
        from: Host,
        to: Role,
        to_host: Option<Host>,
        nth: u64,
    ) -> ConnWriter {
        if !self.delays(from, to) {
            return ConnWriter::Direct(OutletHold(outlet.clone()));
        }
        let (tx, rx) = unbounded_channel();
        let out = self.delayed(from, to, to_host, nth, rx);
        let hold = OutletHold(outlet.clone());
        forward_delayed(out, move |frames| {
            for frame in frames {
                hold.0.hold(frame);
            }
            hold.0.release(Instant::now());
        });
        ConnWriter::Delayed(tx)
    }
}

/// Hand what a delay queue lets out to `put`, a batch at a time (everything due at once goes
/// as one payload), until the queue's writer is gone.
fn forward_delayed(mut out: UnboundedReceiver<Bytes>, mut put: impl FnMut(&[Bytes]) + 'static) {
    spawn_local_boxed(async move {
        let mut batch = Vec::new();
        while let Some(frame) = out.recv().await {
            batch.push(frame);
            while let Ok(more) = out.try_recv() {
                batch.push(more);
            }
            put(&batch);
            batch.clear();
        }
    });
}

/// How a connection ended, as its task reports it.
#[derive(PartialEq)]
enum Ended {
    /// Closed: by the peer, a failed write, a bad frame, or the host letting it go.
    Closed,
    /// Fell into a black hole: neither end hears of it.
    Swallowed,
}

/// Serve one connection: hand every decoded frame to `on_frame`, write what the pace held
/// back, and close once the host lets go (after writing what it held), the peer closes, a
/// write fails or a frame is bad. A phone's connection may fall into `hole`: from then on it
/// reads and drops everything, never closes from this end (a close would be a frame too), and
/// ends, unheard, once the peer gives up and closes.
async fn run_conn(
    outlet: &Outlet,
    mut hole: Option<watch::Receiver<bool>>,
    mut on_frame: impl FnMut(Instant, Frame, &[u8]),
) -> Ended {
    let mut buf = BytesMut::new();
    let ended = loop {
        read_room(&mut buf);
        tokio::select! {
            biased;
            _ = hole_opens(hole.as_mut()) => break Ended::Swallowed,
            _ = outlet.poke.wait() => {
                // In the branch body, not the select: a read finishing during the pace must
                // not race the write.
                outlet.drain().await;
                let st = outlet.st.borrow();
                if st.dead || (st.let_go && st.held.is_empty()) {
                    break Ended::Closed;
                }
            }
            // read_buf is cancel-safe: a frame half-read when a write wins the race stays in `buf`.
            n = std::future::poll_fn(|cx| outlet.poll_read(cx, &mut buf)) => {
                if !matches!(n, Ok(n) if n > 0) {
                    break Ended::Closed;
                }
                // No time passes while a read's frames are handed on: one clock read for all.
                let at = Instant::now();
                loop {
                    match decode(&mut buf) {
                        Ok(Some((f, raw))) => on_frame(at, f, &raw),
                        Ok(None) => break,
                        Err(_) => {
                            outlet.end();
                            return Ended::Closed;
                        }
                    }
                }
            }
        }
    };
    if ended == Ended::Swallowed {
        // Whatever either side writes from now on is lost; reads are drained so the peer's
        // writes never back up.
        {
            let mut st = outlet.st.borrow_mut();
            st.dead = true;
            st.held.clear();
        }
        loop {
            buf.clear();
            read_room(&mut buf);
            let n = std::future::poll_fn(|cx| outlet.poll_read(cx, &mut buf)).await;
            if !matches!(n, Ok(n) if n > 0) {
                break;
            }
        }
    }
    outlet.end();
    ended
}

/// Until `hole` opens (never, if there is none or its switch is gone).
async fn hole_opens(hole: Option<&mut watch::Receiver<bool>>) {
    let Some(hole) = hole else {
        return std::future::pending().await;
    };
    if hole.wait_for(|on| *on).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// A server's link to another server: its socket and what waits to go on it, shared by the
/// host, which writes at the end of a step when nothing stands in the way, and the link's
/// task, which waits out the pace, a cut, or a reconnect. The link only writes: the peer
/// answers on its own link back.
struct PeerLink {
    sh: Arc<Shared>,
    from: Host,
    to: Host,
    st: RefCell<PeerState>,
    /// Wakes the link's task: frames wait for it.
    poke: Poke,
}

#[derive(Default)]
struct PeerState {
    stream: Option<TcpStream>,
    /// Frames written and not yet taken for a payload, in order.
    held: BytesMut,
    last_write: Option<Instant>,
    /// The task has taken a payload it has not written yet: later frames wait behind it.
    busy: bool,
}

impl PeerLink {
    /// Send what is held now if nothing stands in the way (the pace, a cut, a connection to
    /// open, a payload the task holds), else leave it to the task.
    fn release(&self, now: Instant) {
        let mut st = self.st.borrow_mut();
        if st.held.is_empty() || st.busy {
            return;
        }
        let paced = st.last_write.is_some_and(|l| l + WRITE_PACE > now);
        let cut = || {
            let cuts = self.sh.cuts.lock().expect("never poisoned");
            cuts.since(self.from, self.to).is_some()
        };
        let st = &mut *st;
        if let Some(stream) = st.stream.as_mut().filter(|_| !paced && !cut()) {
            let payload = st.held.split();
            st.last_write = Some(now);
            if write_now(stream, &payload) {
                return;
            }
            // The peer restarted: the task sends the payload again on a fresh connection.
            st.stream = None;
            st.held = payload;
        }
        self.poke.poke();
    }
}

/// A peer link's task: each payload the host could not send waits out the pace and any cut,
/// then goes, on a fresh connection if the old one failed.
async fn peer_link(link: Rc<PeerLink>) {
    let (sh, from, to) = (&link.sh, link.from, link.to);
    let (switch, mut changed) = watch::channel(());
    sh.cut_switches.lock().expect("never poisoned").push(switch);
    loop {
        link.poke.wait().await;
        loop {
            let due = {
                let mut st = link.st.borrow_mut();
                if st.held.is_empty() {
                    st.busy = false;
                    break;
                }
                st.busy = true;
                st.last_write.map(|l| l + WRITE_PACE)
            };
            if let Some(due) = due.filter(|d| *d > Instant::now()) {
                sleep_until(due).await;
            }
            let payload = {
                let mut st = link.st.borrow_mut();
                st.last_write = Some(Instant::now());
                st.held.split().freeze()
            };
            if !sh.wait_out_cut(from, to, &mut changed).await {
                // The keepalive gave the connection up: it goes, and this payload with it.
                link.st.borrow_mut().stream = None;
                continue;
            }
            // A write to a connection whose peer has restarted fails at once (the peer's
            // socket is gone, like a TCP reset): the payload was not sent, so it goes again on
            // a fresh connection. One that cannot get through a fresh one either is dropped,
            // as a network would drop it; the protocol's own retries cover that.
            let old = link.st.borrow_mut().stream.take();
            if let Some(mut s) = old {
                if write_now(&mut s, &payload) {
                    link.st.borrow_mut().stream = Some(s);
                    continue;
                }
            }
            if let Ok(mut s) = TcpStream::connect(addr_of(to)).await {
                if write_now(&mut s, &payload) {
                    link.st.borrow_mut().stream = Some(s);
                }
            }
        }
    }
}

/// A host's writer of one peer link: straight into the link, or, on a link with extra
/// latency, through the queue that delays them.
enum PeerWriter {
    Direct(Rc<PeerLink>),
    Delayed(UnboundedSender<Bytes>),
}

/// Devices one accepting task serves. madsim's `accept` sleeps before it returns and a sleep
/// lasts at least 1 ms of simulated time, so one task accepts at most 1,000 connections a
/// simulated second: 12,500 phones on one gateway (the 100,000-user run) would take 12.5 s to
/// get in, past the handshake timeout, and reconnect forever. A real server accepts far faster,
/// so a gateway gets one accepting task per this many of the devices it expects.
const DEVICES_PER_ACCEPTOR: u64 = 1_000;

/// How many tasks accept connections on `host` (one, except on gateways with many devices:
/// worlds of up to 1,000 devices a gateway keep one, and with it their traces).
fn acceptors(host: Host, topo: &Deployment) -> u64 {
    match host {
        Host::Gateway(_) => {
            let devices = u64::from(topo.users) * u64::from(topo.devices_per_user.max(1));
            let per_gateway = devices.div_ceil(u64::from(topo.gateways.max(1)));
            per_gateway.div_ceil(DEVICES_PER_ACCEPTOR).max(1)
        }
        _ => 1,
    }
}

/// A host loop's timer. madsim's `Sleep` adds a timer to the scheduler on every poll and
/// cannot take one back, so a fresh `sleep_until` per turn of a `select!` loop left one timer
/// per event behind, each waking the task again when it fired. An alarm asks for a wake-up only
/// when none is outstanding at or before the deadline it waits for.
#[derive(Default)]
struct Alarm {
    /// The earliest wake-up asked for and not yet passed.
    armed: Option<Instant>,
}

impl Alarm {
    /// Ready, with the time it saw, once `at` has passed.
    fn until(&mut self, at: Instant) -> AlarmWait<'_> {
        AlarmWait { alarm: self, at }
    }
}

/// [`Alarm::until`]'s future.
struct AlarmWait<'a> {
    alarm: &'a mut Alarm,
    at: Instant,
}

impl Future for AlarmWait<'_> {
    type Output = Instant;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Instant> {
        let now = Instant::now();
        if now >= self.at {
            return std::task::Poll::Ready(now);
        }
        // A wake-up still to come no later than `at` re-polls this task in time.
        let pending = self.alarm.armed.filter(|a| *a > now);
        if pending.is_none_or(|a| a > self.at) {
            let mut sleep = std::pin::pin!(sleep_until(self.at));
            // Registers the wake-up with this task's waker; the timer outlives the `Sleep`.
            let _ = sleep.as_mut().poll(cx);
            let at = self.at;
            self.alarm.armed = Some(pending.map_or(at, |a| a.min(at)));
        }
        std::task::Poll::Pending
    }
}

/// A host's machine, shared by the host's own task (its deadlines) and its connections' tasks,
/// which hand the machine each frame in their own task the moment they read it. Through a
/// channel to the host's task, every frame cost a send, a wake-up and a poll of that task,
/// with a clock read in each: a quarter of a small run's wall.
struct Seat<T> {
    inner: RefCell<T>,
    /// Told when handling an event brought the machine's deadline forward, so the host's
    /// task re-arms its alarm (a permit is kept if the task is busy).
    rearm: Poke,
}

impl<T> Seat<T> {
    fn new(inner: T) -> Seat<T> {
        Seat {
            inner: RefCell::new(inner),
            rearm: Poke::default(),
        }
    }

    /// The host, to act on. A host is never re-entered: a connection's task or the host's
    /// own reaches it only between polls, and nothing it calls hands it an event.
    fn lock(&self) -> RefMut<'_, T> {
        self.inner.borrow_mut()
    }

    /// Tell the host's task if the deadline moved from `before` to an earlier `after`: its
    /// alarm waits for no sooner than `before`. A later deadline needs no word: the alarm
    /// fires early, and the task checks the deadline again before it acts.
    fn moved(&self, before: Option<Millis>, after: Option<Millis>) {
        if after.is_some_and(|a| before.is_none_or(|b| a < b)) {
            self.rearm.poke();
        }
    }

    /// Wait for the deadline `deadline()` reads to pass, or for word that it moved forward;
    /// then, if it has passed, `fire` at the time it fired. Loops so each turn reads the
    /// deadline afresh.
    async fn serve(
        &self,
        sh: &Shared,
        deadline: impl Fn(&T) -> Option<Millis>,
        mut fire: impl FnMut(&mut T, Millis, Instant),
    ) {
        let mut alarm = Alarm::default();
        loop {
            let at = deadline(&self.lock()).map(|t| sh.t0 + Duration::from_millis(t));
            tokio::select! {
                biased;
                _ = self.rearm.wait() => {}
                fired = alarm.until(at.unwrap_or(sh.t0 + NEVER)), if at.is_some() => {
                    let now = sh.millis(fired);
                    let mut inner = self.lock();
                    if deadline(&inner).is_some_and(|d| d <= now) {
                        fire(&mut inner, now, fired);
                    }
                }
            }
        }
    }
}

/// A server host and how its bytes leave it, in one seat.
struct ServerSeat {
    server: ServerHost<ConnWriter>,
    links: ServerIo,
}

impl Seat<ServerSeat> {
    fn on_event(&self, at: Instant, ev: ConnEvent<ConnWriter>) {
        let mut inner = self.lock();
        let ServerSeat { server, links } = &mut *inner;
        let before = server.deadline();
        server.on_event(links.sh.millis(at), ev, links);
        links.outbox.release(at);
        self.moved(before, server.deadline());
    }
}

async fn server_main(host: Host, sh: Arc<Shared>) {
    let machine = sh.durable.machine(host, &sh.topo, sh.seed);
    let listener = TcpListener::bind(addr_of(host))
        .await
        .expect("a restarted node's old socket was released by the kill");
    let seat = Rc::new(Seat::new(ServerSeat {
        server: ServerHost::new(host, machine),
        links: ServerIo {
            sh: sh.clone(),
            host,
            peers: BTreeMap::new(),
            outbox: Outbox::default(),
        },
    }));
    let listener = Arc::new(listener);
    let next_conn = Arc::new(AtomicU64::new(0));
    for _ in 0..acceptors(host, &sh.topo) {
        let accept_seat = seat.clone();
        let accept_sh = sh.clone();
        let (listener, next_conn) = (listener.clone(), next_conn.clone());
        tokio::task::spawn_local(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let next = next_conn.fetch_add(1, Ordering::Relaxed) + 1;
                let conn = ConnId(next);
                let outlet = Outlet::new(Some(stream));
                // Only a gateway writes on accepted connections, and only to devices.
                let writer = accept_sh.writer(&outlet, host, Role::Device, None, next);
                accept_seat.on_event(Instant::now(), ConnEvent::Opened(conn, writer));
                let (seat, sh) = (accept_seat.clone(), accept_sh.clone());
                spawn_local_boxed(async move {
                    run_conn(&outlet, None, |at, f, raw| {
                        sh.rec.delivered(sh.millis(at), host, raw, &f);
                        seat.on_event(at, ConnEvent::Frame(conn, Box::new(f.wire)));
                    })
                    .await;
                    seat.on_event(Instant::now(), ConnEvent::Closed(conn));
                });
            }
        });
    }
    seat.serve(
        &sh,
        |s| s.server.deadline(),
        |s, now, at| {
            s.server.on_deadline(now, &mut s.links);
            s.links.outbox.release(at);
        },
    )
    .await
}

/// How a madsim server host's bytes leave it.
struct ServerIo {
    sh: Arc<Shared>,
    host: Host,
    /// Outgoing server-to-server links, one connection per destination, opened on first use
    /// and reopened after a failure.
    peers: BTreeMap<Host, PeerWriter>,
    /// What this step wrote on its accepted connections and its links.
    outbox: Outbox,
}

impl ServerLinks<ConnWriter> for ServerIo {
    fn to_peer(&mut self, to: Host, frame: Bytes) {
        let (sh, from) = (&self.sh, self.host);
        let writer = self.peers.entry(to).or_insert_with(|| {
            let link = Rc::new(PeerLink {
                sh: sh.clone(),
                from,
                to,
                st: RefCell::default(),
                poke: Poke::default(),
            });
            spawn_local_boxed(peer_link(link.clone()));
            if !sh.delays(from, role_of(to)) {
                return PeerWriter::Direct(link);
            }
            let (tx, rx) = unbounded_channel();
            let out = sh.delayed(from, role_of(to), Some(to), 0, rx);
            forward_delayed(out, move |frames| {
                let mut st = link.st.borrow_mut();
                for frame in frames {
                    st.held.extend_from_slice(frame);
                }
                drop(st);
                link.release(Instant::now());
            });
            PeerWriter::Delayed(tx)
        });
        // A frame that cannot be delivered is dropped, as a network would: the protocol's own
        // retries cover it.
        match writer {
            PeerWriter::Direct(link) => {
                let mut st = link.st.borrow_mut();
                if st.held.is_empty() {
                    self.outbox.links.push(link.clone());
                }
                st.held.extend_from_slice(&frame);
            }
            PeerWriter::Delayed(tx) => {
                let _ = tx.send(frame);
            }
        }
    }

    fn to_conn(&mut self, conn: &ConnWriter, frame: Bytes) {
        self.outbox.write(conn, frame);
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
        self.sh.durable.disk(self.host)
    }
}

/// A phone and how its bytes leave it, in one seat.
struct PhoneSeat {
    phone: PhoneHost<ConnWriter>,
    links: PhoneIo,
}

impl Seat<PhoneSeat> {
    fn on_event(&self, at: Instant, ev: PhoneEvent, rec: &Recorder) {
        let mut inner = self.lock();
        let PhoneSeat { phone, links } = &mut *inner;
        let before = phone.deadline();
        phone.on_event(links.sh.millis(at), ev, rec, links);
        links.outbox.release(at);
        self.moved(before, phone.deadline());
    }
}

async fn device_main(id: DeviceId, actions: Vec<(Millis, Action)>, online: bool, sh: Arc<Shared>) {
    let machine = Device::new(id, sh.topo.clone(), device_seed(sh.seed, id), online);
    // Pushes come from the push server's task, so they arrive through a channel to this one:
    // whatever the phone does about one (connect, above all) must start on the phone's node.
    let (tx, mut pushes) = unbounded_channel::<PhoneEvent>();
    sh.wakers.lock().expect("never poisoned").insert(id, tx);
    let seat = Rc::new_cyclic(|me| {
        Seat::new(PhoneSeat {
            phone: PhoneHost::new(id, machine, actions),
            links: PhoneIo {
                sh: sh.clone(),
                me: Host::Device(id),
                seat: me.clone(),
                outbox: Outbox::default(),
            },
        })
    });
    let serve = seat.serve(
        &sh,
        |s| s.phone.deadline(),
        |s, now, at| {
            s.phone.on_deadline(now, &sh.rec, &mut s.links);
            s.links.outbox.release(at);
        },
    );
    let pushed = async {
        while let Some(ev) = pushes.recv().await {
            seat.on_event(Instant::now(), ev, &sh.rec);
        }
    };
    // Biased: an unbiased select draws from tokio's own RNG, which nothing seeds.
    tokio::select! {
        biased;
        _ = pushed => {}
        _ = serve => {}
    }
}

/// How a madsim phone's bytes leave it.
struct PhoneIo {
    sh: Arc<Shared>,
    me: Host,
    /// The seat this sits in, which its connection tasks report to (weak: the seat holds this).
    seat: Weak<Seat<PhoneSeat>>,
    /// What this step wrote.
    outbox: Outbox,
}

impl PhoneLinks<ConnWriter> for PhoneIo {
    fn connect(&mut self, gateway: u16, gen: u64) -> ConnWriter {
        let to = Host::Gateway(gateway);
        let outlet = Outlet::new(None);
        let writer = self
            .sh
            .writer(&outlet, self.me, Role::Gateway, Some(to), gen);
        let (seat, sh, me) = (self.seat.clone(), self.sh.clone(), self.me);
        let hole = match me {
            Host::Device(d) => sh.holes.get(&d).map(watch::Sender::subscribe),
            _ => None,
        };
        spawn_local_boxed(async move {
            // `connect` is asked for with the seat held; this task first runs once it is let go.
            let tell = |ev: PhoneEvent| {
                if let Some(seat) = seat.upgrade() {
                    seat.on_event(Instant::now(), ev, &sh.rec);
                }
            };
            match TcpStream::connect(addr_of(to)).await {
                Err(_) => {
                    outlet.end();
                    tell(PhoneEvent::ConnectFailed(gen));
                }
                Ok(stream) => {
                    outlet.st.borrow_mut().stream = Some(stream);
                    tell(PhoneEvent::Connected(gen));
                    // What the phone wrote before the connection was made goes now.
                    outlet.release(Instant::now());
                    let ended = run_conn(&outlet, hole, |at, f, raw| {
                        sh.rec.delivered(sh.millis(at), me, raw, &f);
                        if let Some(seat) = seat.upgrade() {
                            seat.on_event(at, PhoneEvent::Frame(gen, Box::new(f.wire)), &sh.rec);
                        }
                    })
                    .await;
                    // A swallowed connection is one neither the phone nor its gateway hears of:
                    // only a keepalive can.
                    if ended == Ended::Closed {
                        tell(PhoneEvent::Closed(gen));
                    }
                }
            }
        });
        writer
    }

    fn send(&mut self, conn: &ConnWriter, frame: Bytes) {
        self.outbox.write(conn, frame);
    }
}

/// The madsim configuration for a scenario: its per-frame latency range.
pub fn config(scenario: &Scenario) -> madsim::Config {
    let lat = scenario.network.latency_ms;
    let mut config = madsim::Config::default();
    config.net.packet_loss_rate = 0.0;
    // madsim's range is half-open; the scenario's is inclusive.
    config.net.send_latency =
        Duration::from_millis(lat.lo)..Duration::from_millis(lat.hi) + Duration::from_micros(1);
    config
}

/// Run one seed of `scenario` under madsim. Call it on a fresh thread per seed: madsim's
/// determinism was seen to hold per fresh thread.
pub fn run(scenario: &Scenario, seed: u64, plan: Plan, bugs: Bugs) -> RawRun {
    run_keeping(scenario, seed, plan, bugs, Keep::REPORT)
}

/// As [`run`], keeping what `keep` asks for besides the verdict's needs.
pub fn run_keeping(scenario: &Scenario, seed: u64, plan: Plan, bugs: Bugs, keep: Keep) -> RawRun {
    let rt = madsim::runtime::Runtime::with_seed_and_config(seed, config(scenario));
    rt.block_on(simulate_keeping(scenario, seed, plan, bugs, keep))
}

/// The run itself, inside a madsim runtime the caller made (tests use madsim's own
/// determinism check this way).
pub async fn simulate(scenario: &Scenario, seed: u64, plan: Plan, bugs: Bugs) -> RawRun {
    simulate_keeping(scenario, seed, plan, bugs, Keep::REPORT).await
}

async fn simulate_keeping(
    scenario: &Scenario,
    seed: u64,
    plan: Plan,
    bugs: Bugs,
    keep: Keep,
) -> RawRun {
    let links = scenario
        .network
        .links
        .iter()
        .map(|l| ((l.from, l.to), l.extra_latency_ms))
        .collect();
    let topo = deployment(scenario, &plan, bugs);
    world(topo, seed, server_hosts(scenario), plan, links, keep).await
}

async fn world(
    topo: Deployment,
    seed: u64,
    hosts: Vec<Host>,
    plan: Plan,
    links: BTreeMap<(Role, Role), Range>,
    keep: Keep,
) -> RawRun {
    let handle = madsim::runtime::Handle::current();
    let net = madsim::net::NetSim::current();
    let users = topo.users;
    WORLDS_ALIVE.with(|n| n.set(n.get() + 1));
    let sh = Arc::new(Shared {
        t0: Instant::now(),
        rec: Recorder::new(&topo, &plan, keep),
        durable: Durable::new(&topo),
        topo,
        seed,
        links,
        wakers: Mutex::new(BTreeMap::new()),
        holes: plan
            .blackholed_devices()
            .into_iter()
            .map(|d| (d, watch::channel(false).0))
            .collect(),
        spiked: plan.has_spikes().then(|| Mutex::new(BTreeSet::new())),
        cuts: Mutex::new(Cuts::default()),
        cut_switches: Mutex::new(Vec::new()),
    });
    let mut nodes = BTreeMap::new();
    for host in hosts {
        let s = sh.clone();
        let node = handle
            .create_node()
            .name(host.to_string())
            .ip(addr_of(host).ip())
            .init(move || server_main(host, s.clone()))
            .build();
        nodes.insert(host, node.id());
    }
    for d in (0..users).flat_map(|u| sh.topo.devices_of(UserId(u))) {
        let actions = plan.device.get(&d).cloned().unwrap_or_default();
        let online = plan.online_at_start.contains(&d);
        let s = sh.clone();
        let host = Host::Device(d);
        let node = handle
            .create_node()
            .name(host.to_string())
            .ip(addr_of(host).ip())
            // Boxed for the reason `spawn_boxed` gives: a phone's task was 5,296 bytes around
            // a 1,296-byte future.
            .init(move || Box::pin(device_main(d, actions.clone(), online, s.clone())))
            .build();
        nodes.insert(host, node.id());
    }

    // The sampler: server-side state no device can see, for the report's timeline.
    let sampler_sh = sh.clone();
    let end_at = plan.end_at;
    tokio::spawn(async move {
        let mut t = 0;
        while t <= end_at {
            sleep_until(sampler_sh.t0 + Duration::from_millis(t)).await;
            let inbox = sampler_sh.durable.inbox_entries();
            sampler_sh.rec.sample(t, inbox);
            t += SAMPLE_MS;
        }
    });

    // The nemesis.
    let mut ledger = FaultLedger::new();
    let mut prims = Primitives {
        sh: &sh,
        handle: &handle,
        net: &net,
        nodes: &nodes,
    };
    for (t, action) in plan.world {
        sleep_until(sh.t0 + Duration::from_millis(t)).await;
        ledger.act(sh.now(), action, &mut prims, &sh.rec);
    }
    sleep_until(sh.t0 + Duration::from_millis(plan.end_at)).await;
    let raw = sh
        .rec
        .finish(plan.end_at, sh.now(), &sh.durable, ledger.skipped());
    // Every task still waiting holds the world (`Shared`) and is held by a waker in a channel
    // or socket of that same world, and madsim drops with its runtime only the tasks queued to
    // run: without this the whole world outlived the run, and a swarm kept every seed's (2 MB
    // a seed of partition-heal). Killing a node queues its tasks, and the runtime drops them.
    // The run is over (the recorder has handed everything over), so nothing here is traced.
    for id in nodes.values() {
        handle.kill(*id);
    }
    raw
}

/// madsim's ways of breaking things: kill and restart nodes, clog nodes and links.
struct Primitives<'a> {
    sh: &'a Shared,
    handle: &'a madsim::runtime::Handle,
    net: &'a madsim::net::NetSim,
    nodes: &'a BTreeMap<Host, madsim::task::NodeId>,
}

impl Primitives<'_> {
    fn node(&self, h: &Host) -> madsim::task::NodeId {
        *self.nodes.get(h).expect("every planned host has a node")
    }
}

impl FaultPrimitives for Primitives<'_> {
    fn kill(&mut self, host: Host) {
        self.handle.kill(self.node(&host));
    }

    fn restart(&mut self, host: Host) {
        // Only ever a killed node: restarting a live one panics ("address in use").
        self.handle.restart(self.node(&host));
    }

    fn clog(&mut self, host: Host, on: bool) {
        if on {
            self.net.clog_node(self.node(&host));
        } else {
            self.net.unclog_node(self.node(&host));
        }
        self.sh.change_cuts(|c| {
            if on {
                c.hosts.insert(host, Instant::now());
            } else {
                c.hosts.remove(&host);
            }
        });
    }

    fn silence(&mut self, device: DeviceId, on: bool) {
        // A silent phone's node is clogged: its frames wait, both ways, as in a tunnel.
        self.clog(Host::Device(device), on);
    }

    fn blackhole(&mut self, device: DeviceId, on: bool) {
        self.sh
            .holes
            .get(&device)
            .expect("the plan's black-holed phones have a switch")
            .send_replace(on);
    }

    fn disk(&mut self, host: Host, disk: chatsim_system::Disk) {
        self.sh.durable.set_disk(host, disk);
    }

    fn spike(&mut self, host: Host, on: bool) {
        let mut spiked = self
            .sh
            .spiked
            .as_ref()
            .expect("a plan with spikes gives the run a spike table")
            .lock()
            .expect("never poisoned");
        if on {
            spiked.insert(host);
        } else {
            spiked.remove(&host);
        }
    }

    fn cut(&mut self, a: &[Host], b: &[Host], on: bool) {
        let now = Instant::now();
        self.sh.change_cuts(|c| {
            for &x in a {
                for &y in b {
                    if on {
                        c.links.insert((x, y), now);
                    } else {
                        c.links.remove(&(x, y));
                    }
                }
            }
        });
        for x in a {
            for y in b {
                let (x, y) = (self.node(x), self.node(y));
                if on {
                    self.net.clog_link(x, y);
                    self.net.clog_link(y, x);
                } else {
                    self.net.unclog_link(x, y);
                    self.net.unclog_link(y, x);
                }
            }
        }
    }

    fn cut_one_way(&mut self, _: &[Host], _: &[Host], _: bool) -> Result<(), String> {
        Err(
            "madsim's TCP never drops a frame, so one direction cannot be cut (run it with \
             --engine turmoil)"
                .to_string(),
        )
    }
}

/// The benchmark's floor: bare nodes at the same addresses replaying `plan` (the same frames,
/// of the same sizes, sent at the same simulated times over one connection per route, written
/// with the same pacing as the engine's), with no chat logic at all. Unlike the full system,
/// a device and its gateway talk over two connections (one per direction), nothing ever
/// reconnects, and the scenario's extra per-link latencies are not applied. Returns the frames
/// received and the simulated ms until the last arrived.
pub fn floor(scenario: &Scenario, seed: u64, plan: FloorPlan) -> (u64, Millis) {
    let rt = madsim::runtime::Runtime::with_seed_and_config(seed, config(scenario));
    rt.block_on(floor_world(Arc::new(plan)))
}

async fn floor_world(plan: Arc<FloorPlan>) -> (u64, Millis) {
    let handle = madsim::runtime::Handle::current();
    let t0 = Instant::now();
    let received = Arc::new(AtomicU64::new(0));
    let mut nodes = Vec::new();
    for &host in &plan.hosts {
        let (plan, received) = (plan.clone(), received.clone());
        let node = handle
            .create_node()
            .name(host.to_string())
            .ip(addr_of(host).ip())
            .init(move || floor_node(host, plan.clone(), received.clone(), t0))
            .build();
        nodes.push(node.id());
    }
    // Frames may still be on the wire after the last send; give them a generous while.
    let deadline = t0 + Duration::from_millis(plan.last + 60_000);
    while received.load(Ordering::Relaxed) < plan.total && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let sim_ms = Instant::now().duration_since(t0).as_millis() as Millis;
    // As at the end of a run: waiting tasks are freed only once their nodes are killed.
    for id in nodes {
        handle.kill(id);
    }
    (received.load(Ordering::Relaxed), sim_ms)
}

/// The payload the floor's writer sends after `first` arrived, paced as the full system's
/// hosts pace theirs ([`Outlet`], [`PeerLink`]): wait out the pace, then take `first` and
/// whatever else is queued by then. Call it only where it cannot be cancelled (never as a
/// `select!` branch): `first` is already off the queue.
async fn paced(
    first: Bytes,
    rx: &mut UnboundedReceiver<Bytes>,
    last: &mut Option<Instant>,
) -> Bytes {
    // The clock is read once per write where it can be: each read is a call into madsim's
    // clock (`clock_gettime`, answered from the simulated time), 5% of a small run in all.
    let now = Instant::now();
    let now = match last.map(|l| l + WRITE_PACE).filter(|due| *due > now) {
        Some(due) => {
            sleep_until(due).await;
            Instant::now()
        }
        None => now,
    };
    *last = Some(now);
    batch(first, rx)
}

/// Every frame already waiting on `rx` after `first`, as one buffer.
fn batch(first: Bytes, rx: &mut UnboundedReceiver<Bytes>) -> Bytes {
    let Ok(second) = rx.try_recv() else {
        return first;
    };
    let mut buf = BytesMut::with_capacity(first.len() + second.len());
    buf.extend_from_slice(&first);
    buf.extend_from_slice(&second);
    while let Ok(more) = rx.try_recv() {
        buf.extend_from_slice(&more);
    }
    buf.freeze()
}

/// Write one payload whole; false once the connection is gone.
async fn write_frame(stream: &mut TcpStream, frame: &[u8]) -> bool {
    stream.write_all(frame).await.is_ok() && stream.flush().await.is_ok()
}

async fn floor_node(host: Host, plan: Arc<FloorPlan>, received: Arc<AtomicU64>, t0: Instant) {
    let listener = TcpListener::bind(addr_of(host))
        .await
        .expect("each floor host binds its own address once");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counter = received.clone();
            tokio::spawn(async move {
                // Read as the full system's connections read (same room per read).
                let mut buf = BytesMut::new();
                while {
                    read_room(&mut buf);
                    matches!(stream.read_buf(&mut buf).await, Ok(n) if n > 0)
                } {
                    counter.fetch_add(skip_frames(&mut buf), Ordering::Relaxed);
                }
            });
        }
    });
    for (to, frames) in plan.routes.get(&host).into_iter().flatten() {
        let (to, frames) = (*to, frames.clone());
        let (tx, mut rx) = unbounded_channel::<Bytes>();
        tokio::spawn(async move {
            for &(t, bytes) in frames.iter() {
                // madsim's sleep_until never sleeps less than a millisecond, even for a moment
                // already here: sleeping per frame would cap a route at 1,000 frames a second.
                let at = t0 + Duration::from_millis(t);
                if at > Instant::now() {
                    sleep_until(at).await;
                }
                let _ = tx.send(filler(bytes));
            }
        });
        tokio::spawn(async move {
            let mut stream = loop {
                match TcpStream::connect(addr_of(to)).await {
                    Ok(s) => break s,
                    Err(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                }
            };
            let mut last_write = None;
            while let Some(first) = rx.recv().await {
                let bytes = paced(first, &mut rx, &mut last_write).await;
                if !write_frame(&mut stream, &bytes).await {
                    return;
                }
            }
        });
    }
    std::future::pending().await
}
