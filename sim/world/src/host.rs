//! The host layer: one server host and one phone host that every engine drives the same way.
//!
//! A host owns a machine and everything between that machine and the engine's transport: it
//! turns what its connections report into [`Input`]s (a gateway learns of a device connection
//! when the device first speaks on it; a phone ignores events of a connection it has already
//! replaced), hands each input to the machine, and sends each [`Effect`] where the shared
//! [router](chatsim_system::route) says: encoded frames to a peer or down a connection,
//! durable writes to the store beside the host, wake-ups to a phone, observations to the
//! recorder. An engine keeps only its event loop, its connection tasks and its fault
//! primitives, and tells the host how bytes leave it through [`ServerLinks`] or
//! [`PhoneLinks`].
//!
//! Nothing here assumes a simulator: no clock is read (`now` is an argument), no task is
//! spawned, and the connection writer type `W` is whatever the engine's connection tasks read
//! from (a channel sender in madsim, turmoil and the real server alike).
//!
//! Call order, per host: ask `deadline()`, wait for an event or the deadline, then call
//! `on_event` or `on_deadline` with the time it happened; repeat.

use crate::plan::device_fault;
use crate::record::Recorder;
use crate::wire::{encode, Frame, Wire};
use bytes::Bytes;
use chatsim_judge::Event;
use chatsim_system::device::Device;
use chatsim_system::durable::Write;
use chatsim_system::probe::Probe;
use chatsim_system::proto::{ConnId, DeviceId, Envelope, Host, Millis, Up};
use chatsim_system::route::{route, Route};
use chatsim_system::{Action, Disk, Effect, Input, Machine};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// What a server's connection tasks report about one accepted connection.
pub enum ConnEvent<W> {
    /// A connection was accepted; `W` writes to it.
    Opened(ConnId, W),
    /// A whole frame arrived on it. Boxed: a frame is far bigger than the other events.
    Frame(ConnId, Box<Wire>),
    /// It closed (EOF, error, or the host dropped its writer).
    Closed(ConnId),
}

/// How bytes leave a server host: the engine's side of it.
pub trait ServerLinks<W> {
    /// Send an encoded frame to another server (the engine opens the link on first use, and
    /// drops what it cannot deliver, as a network would).
    fn to_peer(&mut self, to: Host, frame: Bytes);
    /// Write an encoded frame on one of this host's accepted connections.
    fn to_conn(&mut self, conn: &W, frame: Bytes);
    /// Wake a phone through the OS's push channel, outside the chat network.
    fn wake(&mut self, device: DeviceId);
    /// Keep a write the machine synced, beside the host.
    /// `write` made durable at `now` (a storage rebuild's view is also when it serves again).
    fn persist(&mut self, now: Millis, write: Write);
    /// Count a probe the machine reached.
    fn probe(&mut self, probe: Probe);
    /// What the disk beside this host does now (the world's disk faults set it). A host
    /// without a disk, or a world without disk faults, keeps the default.
    fn disk(&self) -> Disk {
        Disk::Healthy
    }
}

/// A server machine and its connections.
pub struct ServerHost<W> {
    /// Who this host is.
    host: Host,
    /// The machine, as it (re)started.
    machine: Box<dyn Machine>,
    /// Writers of the connections open now, by the id this host gave them.
    writers: BTreeMap<ConnId, W>,
    /// Connections a device has spoken on: the machine was told of them (`Accepted`), and
    /// must be told when they close. Server links are never in here.
    devices: BTreeSet<ConnId>,
    /// Effects of the input being handled (kept to reuse its allocation).
    out: Vec<Effect>,
    /// The disk's state the machine was last told of (a restarted machine starts healthy
    /// and hears the truth at its first input).
    disk: Disk,
}

impl<W> ServerHost<W> {
    /// A host for `machine`, with no connection open.
    pub fn new(host: Host, machine: Box<dyn Machine>) -> ServerHost<W> {
        assert!(
            !matches!(host, Host::Device(_)),
            "{host} is a phone: it gets a PhoneHost"
        );
        ServerHost {
            host,
            machine,
            writers: BTreeMap::new(),
            devices: BTreeSet::new(),
            out: Vec::new(),
            disk: Disk::Healthy,
        }
    }

    /// When the machine next wants [`ServerHost::on_deadline`].
    pub fn deadline(&self) -> Option<Millis> {
        self.machine.poll_timeout()
    }

    /// Connections open now (for an engine's bookkeeping and tests).
    pub fn open_connections(&self) -> usize {
        self.writers.len()
    }

    /// Handle what a connection reported at `now`.
    pub fn on_event(&mut self, now: Millis, event: ConnEvent<W>, links: &mut impl ServerLinks<W>) {
        let input = match event {
            ConnEvent::Opened(conn, writer) => {
                let fresh = self.writers.insert(conn, writer).is_none();
                assert!(fresh, "{}: connection {conn:?} opened twice", self.host);
                return;
            }
            ConnEvent::Frame(conn, wire) => match *wire {
                Wire::Server(Envelope { from, rpc }) => Input::Rpc { from, rpc },
                Wire::Up(up) => {
                    // A device connection is one a device speaks on: the gateway hears of it
                    // with its first frame, in the same call.
                    if self.devices.insert(conn) {
                        self.machine
                            .handle(now, Input::Accepted { conn }, &mut self.out);
                    }
                    Input::FromConn { conn, up }
                }
                // Frames a server never acts on: a phone's frame type, and the transport's own
                // acknowledgements (read by the sending link, not the machine).
                Wire::Down(_) | Wire::LinkAck(_) => return,
            },
            ConnEvent::Closed(conn) => {
                self.writers.remove(&conn);
                if !self.devices.remove(&conn) {
                    return;
                }
                Input::ConnClosed { conn }
            }
        };
        self.handle(now, input, links);
    }

    /// The deadline from [`ServerHost::deadline`] passed; `now` is the time it fired.
    pub fn on_deadline(&mut self, now: Millis, links: &mut impl ServerLinks<W>) {
        self.handle(now, Input::Timeout, links);
    }

    fn handle(&mut self, now: Millis, input: Input, links: &mut impl ServerLinks<W>) {
        let host = self.host;
        if matches!(host, Host::Storage(_) | Host::Replica(_)) {
            // Only these have a disk. Told before the input it may write for: a disk's state
            // shows when it is used.
            let disk = links.disk();
            if disk != self.disk {
                self.disk = disk;
                self.machine.handle(now, Input::Disk(disk), &mut self.out);
            }
        }
        self.machine.handle(now, input, &mut self.out);
        for effect in self.out.drain(..) {
            match route(host, effect) {
                Route::Wake(d) => links.wake(d),
                Route::Peer { to, rpc } => links.to_peer(
                    to,
                    encode(&Frame {
                        from: host,
                        sent_ms: now,
                        wire: Wire::Server(Envelope { from: host, rpc }),
                    }),
                ),
                Route::Down { conn, frame, .. } => {
                    if let Some(w) = self.writers.get(&conn) {
                        let frame = encode(&Frame {
                            from: host,
                            sent_ms: now,
                            wire: Wire::Down(frame),
                        });
                        links.to_conn(w, frame);
                    }
                }
                Route::Close { conn, .. } => {
                    // Dropping the writer ends the connection's task, which closes the socket.
                    self.writers.remove(&conn);
                    self.devices.remove(&conn);
                }
                Route::Durable(write) => links.persist(now, write),
                Route::Probe(p) => links.probe(p),
                r @ (Route::Connect { .. }
                | Route::Up { .. }
                | Route::Disconnect { .. }
                | Route::Observe { .. }) => {
                    unreachable!("the router gives a server ({host}) no device route: {r:?}")
                }
            }
        }
    }
}

/// What a phone's connection tasks report; each names the connection attempt (its
/// generation) it concerns, so news of a replaced connection is ignored.
pub enum PhoneEvent {
    /// Attempt `gen` connected.
    Connected(u64),
    /// Attempt `gen` failed to connect.
    ConnectFailed(u64),
    /// A whole frame arrived on connection `gen`. Boxed: a frame is far bigger than the rest.
    Frame(u64, Box<Wire>),
    /// Connection `gen` closed under the phone.
    Closed(u64),
    /// A push notification from the provider (the OS woke the app).
    Wake,
}

/// How bytes leave a phone host: the engine's side of it.
pub trait PhoneLinks<W> {
    /// Start connection attempt `gen` to `gateway`; frames for it go to the returned writer,
    /// and the attempt's fate comes back as [`PhoneEvent`]s carrying `gen`.
    fn connect(&mut self, gateway: u16, gen: u64) -> W;
    /// Write an encoded frame on the current connection.
    fn send(&mut self, conn: &W, frame: Bytes);
}

/// A phone: its machine, what its user will do and when, and its current connection.
pub struct PhoneHost<W> {
    /// Which phone.
    id: DeviceId,
    /// The app.
    machine: Device,
    /// The user's and the world's actions still to come, in time order.
    actions: VecDeque<(Millis, Action)>,
    /// The current connection attempt's generation and writer, if any.
    conn: Option<(u64, W)>,
    /// The last generation handed out: each attempt gets the next.
    gen: u64,
    /// Effects of the input being handled (kept to reuse its allocation).
    out: Vec<Effect>,
}

impl<W> PhoneHost<W> {
    /// A phone running `machine`, whose user does `actions` (in time order).
    pub fn new(id: DeviceId, machine: Device, actions: Vec<(Millis, Action)>) -> PhoneHost<W> {
        assert!(
            actions.windows(2).all(|w| w[0].0 <= w[1].0),
            "{id}: actions out of time order"
        );
        PhoneHost {
            id,
            machine,
            actions: actions.into(),
            conn: None,
            gen: 0,
            out: Vec::new(),
        }
    }

    /// The app, to read.
    pub fn machine(&self) -> &Device {
        &self.machine
    }

    /// The app, to set up before it starts (a real client resuming its ids).
    pub fn machine_mut(&mut self) -> &mut Device {
        &mut self.machine
    }

    /// When the phone next wants [`PhoneHost::on_deadline`]: its machine's timer or its next
    /// action, whichever is first.
    pub fn deadline(&self) -> Option<Millis> {
        let next_action = self.actions.front().map(|(t, _)| *t);
        [self.machine.poll_timeout(), next_action]
            .into_iter()
            .flatten()
            .min()
    }

    /// Handle what a connection (or the push channel) reported at `now`.
    pub fn on_event(
        &mut self,
        now: Millis,
        event: PhoneEvent,
        rec: &Recorder,
        links: &mut impl PhoneLinks<W>,
    ) {
        let current = self.conn.as_ref().map(|c| c.0);
        let input = match event {
            PhoneEvent::Connected(g) if Some(g) == current => Input::Connected,
            PhoneEvent::ConnectFailed(g) if Some(g) == current => {
                self.conn = None;
                Input::ConnectFailed
            }
            PhoneEvent::Frame(g, w) if Some(g) == current => match *w {
                Wire::Down(down) => Input::Down(down),
                // Only a gateway writes to a phone, and only `Down` frames.
                Wire::Up(_) | Wire::Server(_) | Wire::LinkAck(_) => return,
            },
            PhoneEvent::Closed(g) if Some(g) == current => {
                self.conn = None;
                Input::Disconnected
            }
            PhoneEvent::Wake => Input::Pushed,
            // News of an attempt the phone has already replaced or dropped.
            PhoneEvent::Connected(_)
            | PhoneEvent::ConnectFailed(_)
            | PhoneEvent::Frame(..)
            | PhoneEvent::Closed(_) => return,
        };
        self.handle(now, input, rec, links);
    }

    /// The deadline from [`PhoneHost::deadline`] passed at `now`: the next action if it is
    /// due (a world fault it implies is recorded), else the machine's timer.
    pub fn on_deadline(&mut self, now: Millis, rec: &Recorder, links: &mut impl PhoneLinks<W>) {
        let input = match self.actions.pop_front_if(|(t, _)| *t <= now) {
            Some((_, action)) => {
                if let Some(f) = device_fault(self.id, &action) {
                    rec.record(now, Event::Fault(f));
                }
                Input::Action(action)
            }
            None => Input::Timeout,
        };
        self.handle(now, input, rec, links);
    }

    /// The user does `action` at `now`: a live client's input rather than a planned one.
    pub fn act(
        &mut self,
        now: Millis,
        action: Action,
        rec: &Recorder,
        links: &mut impl PhoneLinks<W>,
    ) {
        self.handle(now, Input::Action(action), rec, links);
    }

    fn handle(
        &mut self,
        now: Millis,
        input: Input,
        rec: &Recorder,
        links: &mut impl PhoneLinks<W>,
    ) {
        let me = Host::Device(self.id);
        self.machine.handle(now, input, &mut self.out);
        for effect in self.out.drain(..) {
            match route(me, effect) {
                Route::Connect { gateway, .. } => {
                    self.gen += 1;
                    let writer = links.connect(gateway, self.gen);
                    self.conn = Some((self.gen, writer));
                }
                Route::Up { up, .. } => {
                    if let Some((_, w)) = &self.conn {
                        links.send(w, up_frame(me, now, up));
                    }
                }
                Route::Disconnect { .. } => self.conn = None,
                Route::Observe { device, obs } => rec.observe(now, device, obs),
                Route::Probe(p) => rec.probe(p),
                r @ (Route::Peer { .. }
                | Route::Wake(_)
                | Route::Down { .. }
                | Route::Close { .. }
                | Route::Durable(_)) => {
                    unreachable!("the router gives a phone ({me}) no server route: {r:?}")
                }
            }
        }
    }
}

/// A phone's frame, encoded.
fn up_frame(me: Host, now: Millis, up: Up) -> Bytes {
    encode(&Frame {
        from: me,
        sent_ms: now,
        wire: Wire::Up(up),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Plan;
    use crate::record::Keep;
    use crate::wire::decode;
    use bytes::BytesMut;
    use chatsim_system::proto::{Down, UserId};
    use chatsim_system::Deployment;

    /// A server machine that logs what it is handed and answers each input with the effects
    /// queued for it.
    #[derive(Default)]
    struct Script {
        seen: std::sync::Arc<std::sync::Mutex<Vec<Input>>>,
        answers: VecDeque<Vec<Effect>>,
    }

    impl Machine for Script {
        fn handle(&mut self, _: Millis, input: Input, out: &mut Vec<Effect>) {
            self.seen.lock().expect("test").push(input);
            out.extend(self.answers.pop_front().unwrap_or_default());
        }
        fn poll_timeout(&self) -> Option<Millis> {
            None
        }
    }

    /// Connections are numbered writers; everything sent is logged.
    #[derive(Default)]
    struct Wires {
        to_conns: Vec<(u64, Bytes)>,
        to_peers: Vec<Host>,
        persisted: usize,
        wakes: Vec<DeviceId>,
        connects: Vec<(u16, u64)>,
    }

    impl ServerLinks<u64> for Wires {
        fn to_peer(&mut self, to: Host, _: Bytes) {
            self.to_peers.push(to);
        }
        fn to_conn(&mut self, conn: &u64, frame: Bytes) {
            self.to_conns.push((*conn, frame));
        }
        fn wake(&mut self, device: DeviceId) {
            self.wakes.push(device);
        }
        fn persist(&mut self, _: Millis, _: Write) {
            self.persisted += 1;
        }
        fn probe(&mut self, _: Probe) {}
    }

    impl PhoneLinks<u64> for Wires {
        fn connect(&mut self, gateway: u16, gen: u64) -> u64 {
            self.connects.push((gateway, gen));
            gen
        }
        fn send(&mut self, conn: &u64, frame: Bytes) {
            self.to_conns.push((*conn, frame));
        }
    }

    fn up_frame_on(conn: u64) -> ConnEvent<u64> {
        ConnEvent::Frame(ConnId(conn), Box::new(Wire::Up(Up::Ping)))
    }

    // A gateway hears of a device connection with its first frame, and of its end only if a
    // device ever spoke on it: a server link's close is none of the machine's business.
    #[test]
    fn a_gateway_learns_of_a_device_connection_when_the_device_first_speaks() {
        let script = Script::default();
        let seen = script.seen.clone();
        let mut host = ServerHost::new(Host::Gateway(0), Box::new(script));
        let mut wires = Wires::default();
        host.on_event(0, ConnEvent::Opened(ConnId(1), 1), &mut wires);
        host.on_event(0, ConnEvent::Opened(ConnId(2), 2), &mut wires);
        host.on_event(1, up_frame_on(1), &mut wires);
        host.on_event(2, up_frame_on(1), &mut wires);
        host.on_event(3, ConnEvent::Closed(ConnId(2)), &mut wires);
        host.on_event(4, ConnEvent::Closed(ConnId(1)), &mut wires);
        let seen = seen.lock().expect("test").clone();
        assert_eq!(
            seen,
            [
                Input::Accepted { conn: ConnId(1) },
                Input::FromConn {
                    conn: ConnId(1),
                    up: Up::Ping
                },
                Input::FromConn {
                    conn: ConnId(1),
                    up: Up::Ping
                },
                Input::ConnClosed { conn: ConnId(1) },
            ]
        );
        assert_eq!(host.open_connections(), 0);
    }

    // Effects go where the router says, encoded; a frame for a closed connection goes nowhere.
    #[test]
    fn a_server_host_carries_each_effect_where_the_router_sends_it() {
        let script = Script {
            answers: VecDeque::from([
                vec![],
                vec![
                    Effect::Down {
                        conn: ConnId(1),
                        frame: Down::Pong,
                    },
                    Effect::CloseConn { conn: ConnId(1) },
                    Effect::Down {
                        conn: ConnId(1),
                        frame: Down::Pong,
                    },
                    Effect::Rpc {
                        to: Host::Session,
                        rpc: chatsim_system::proto::Rpc::Wake,
                    },
                ],
            ]),
            ..Script::default()
        };
        let mut host = ServerHost::new(Host::Gateway(0), Box::new(script));
        let mut wires = Wires::default();
        host.on_event(0, ConnEvent::Opened(ConnId(1), 7), &mut wires);
        host.on_event(5, up_frame_on(1), &mut wires);
        assert_eq!(wires.to_conns.len(), 1, "nothing after the close");
        let (writer, bytes) = wires.to_conns.remove(0);
        assert_eq!(writer, 7);
        let (frame, _) = decode(&mut BytesMut::from(&bytes[..]))
            .expect("a whole frame")
            .expect("decodes");
        assert_eq!(frame.from, Host::Gateway(0));
        assert_eq!(frame.sent_ms, 5);
        assert!(matches!(frame.wire, Wire::Down(Down::Pong)));
        assert_eq!(wires.to_peers, [Host::Session]);
        assert_eq!(host.open_connections(), 0);
        assert!(wires.wakes.is_empty() && wires.persisted == 0);
    }

    // A machine that breaks the rules is stopped where it breaks them.
    #[test]
    #[should_panic(expected = "no business")]
    fn a_server_machine_that_speaks_as_a_phone_panics_at_its_host() {
        let script = Script {
            answers: VecDeque::from([vec![Effect::Disconnect]]),
            ..Script::default()
        };
        let mut host = ServerHost::new(Host::Shard(0), Box::new(script));
        host.on_deadline(0, &mut Wires::default());
    }

    fn phone_world() -> (Deployment, DeviceId) {
        let topo = Deployment {
            users: 2,
            gateways: 1,
            shards: 1,
            devices_per_user: 1,
            ..Deployment::default()
        };
        let me = DeviceId {
            user: UserId(0),
            index: 0,
        };
        (topo, me)
    }

    // A phone acts on news of its current connection only: a replaced attempt's late news is
    // dropped, and an action due is taken before the machine's own timer.
    #[test]
    fn a_phone_ignores_news_of_a_connection_it_has_replaced() {
        let (topo, me) = phone_world();
        let rec = Recorder::new(&topo, &Plan::default(), Keep::VERDICT);
        let machine = Device::new(me, topo.clone(), 1, true);
        let mut phone = PhoneHost::new(me, machine, vec![(50, Action::DropConnection)]);
        let mut wires = Wires::default();
        let start = phone.deadline().expect("an online phone connects at once");
        phone.on_deadline(start, &rec, &mut wires);
        assert_eq!(wires.connects.len(), 1, "{:?}", wires.connects);
        let (_, first) = wires.connects[0];
        phone.on_event(10, PhoneEvent::Connected(first + 1), &rec, &mut wires);
        assert!(
            wires.to_conns.is_empty(),
            "a stale attempt's news moved the phone"
        );
        phone.on_event(10, PhoneEvent::Connected(first), &rec, &mut wires);
        assert!(
            wires.to_conns.iter().all(|(w, _)| *w == first),
            "the phone wrote on its connection"
        );
        assert!(!wires.to_conns.is_empty(), "a connected phone says hello");
        assert_eq!(phone.deadline().map(|t| t <= 50), Some(true));
        phone.on_deadline(50, &rec, &mut wires);
        let raw = rec.finish(60, 60, &crate::deploy::Durable::new(&topo), Vec::new());
        assert!(
            raw.history
                .records
                .iter()
                .any(|r| r.event == Event::Fault(chatsim_judge::Fault::DeviceDrop(me))),
            "the drop the plan asked for is in the history"
        );
    }
}
