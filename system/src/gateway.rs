//! A gateway: holds device connections, binds each to a device by its token, registers it in
//! the session service before letting the device drain or send, forwards device frames to the
//! owning shard with the *authenticated* device attached, and passes shard frames down.
//!
//! Fault model it defends against: half-open connections (a phone that went silent without
//! closing) are found by an idle timeout, longer than the phone's own (a gateway is slower to
//! give up on a phone than the phone on it), so a phone that moved may already be registered
//! elsewhere when its old gateway unregisters: the session service's epoch check is what keeps
//! that late unregister from erasing the new entry.
//!
//! Frames go to the shard host that holds the slot of their conversation (or, for a drain, of
//! their user): each holder tells every gateway about its slots with their lease epoch, and
//! the highest epoch heard wins, so a paused old owner announcing late cannot pull traffic
//! back. Until told otherwise a gateway sends a slot's frames to its home shard.
//!
//! Inputs: `Accepted`, `FromConn`, `ConnClosed`, `Rpc` (`Registered`, `ToDevice`, `Owner`),
//! `Timeout`.
//! Outputs: `Down`, `CloseConn`, `Rpc`. Timers: idle scan, register retry.

use crate::bugs::Bug;
use crate::limits::{
    GATEWAY_ALIVE_MS, GATEWAY_IDLE_TIMEOUT_MS, HEARTBEAT_CHECK_MS, REGISTER_RETRY_MS,
};
use crate::probe::Probe;
use crate::proto::{ConnId, DeviceId, Down, Host, Millis, Missed, Path, Refusal, Rpc, Up};
use crate::routing::{device_token, shard_for_conv, shard_for_user};
use crate::timers::Timers;
use crate::{Deployment, Effect, Input, Machine};
use std::collections::BTreeMap;

fn to_session(out: &mut Vec<Effect>, rpc: Rpc) {
    out.push(Effect::Rpc {
        to: Host::Session,
        rpc,
    });
}

/// Where a device connection is in its handshake.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum ConnState {
    /// Accepted, no valid `Hello` yet.
    Unbound,
    /// Bound to a device, waiting for the session service.
    Registering,
    /// Registered and welcomed.
    Ready,
}

/// One device connection this gateway holds.
#[derive(Clone, Debug, Hash)]
struct Conn {
    /// The device its `Hello` proved it is (`None` until then).
    device: Option<DeviceId>,
    /// The connection epoch the device chose: the session service keeps the newest.
    epoch: u64,
    /// When the device last sent anything (a heartbeat counts): the idle scan's measure.
    last_heard: Millis,
    /// Where it is in its handshake.
    state: ConnState,
}

/// What a gateway waits for.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Look for connections idle past [`GATEWAY_IDLE_TIMEOUT_MS`] (half-open ones) and close
    /// them; runs while any connection is open.
    HeartbeatScan,
    /// Tell the session service which devices are here, so entries of a crashed earlier life
    /// of this gateway are cleared and live ones kept.
    Alive,
    /// Ask the session service again to register this connection (the answer was lost).
    Register(ConnId),
}

/// A gateway.
#[derive(Clone, Debug, Hash)]
pub struct Gateway {
    /// Which gateway (0-based).
    index: u16,
    /// Who exists, and the bugs in force.
    /// Shared by every machine of a deployment: a model checker clones whole worlds per state.
    topo: std::sync::Arc<Deployment>,
    /// Every connection open here, by the id the engine gave it.
    conns: BTreeMap<ConnId, Conn>,
    /// Each bound device's one connection here (a newer one replaces it).
    by_device: BTreeMap<DeviceId, ConnId>,
    /// slot -> (shard host, epoch), as announced by the lease holders.
    owners: BTreeMap<u16, (u16, u64)>,
    /// What it waits for.
    timers: Timers<Timer>,
}

impl Gateway {
    /// Gateway number `index` (0-based) with no connections (first boot or after a crash).
    pub fn new(index: u16, topo: impl Into<std::sync::Arc<Deployment>>) -> Gateway {
        let topo: std::sync::Arc<Deployment> = topo.into();
        Gateway {
            index,
            topo,
            conns: BTreeMap::new(),
            by_device: BTreeMap::new(),
            owners: BTreeMap::new(),
            // At once on boot: clears what an earlier life of this gateway left registered.
            timers: {
                let mut t = Timers::default();
                t.set(Timer::Alive, 0);
                t
            },
        }
    }

    /// This gateway's index.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// Devices with a ready connection here.
    pub fn ready_devices(&self) -> usize {
        self.conns
            .values()
            .filter(|c| c.state == ConnState::Ready)
            .count()
    }

    fn drop_conn(&mut self, conn: ConnId, close: bool, out: &mut Vec<Effect>) {
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        self.timers.cancel(&Timer::Register(conn));
        if close {
            out.push(Effect::CloseConn { conn });
        }
        if let Some(device) = c.device {
            if self.by_device.get(&device) == Some(&conn) {
                self.by_device.remove(&device);
            }
            let rpc = Rpc::Unregister {
                device,
                epoch: c.epoch,
            };
            to_session(out, rpc);
        }
    }

    /// The shard host holding `slot`, as far as we have heard.
    fn owner(&self, slot: u16) -> Host {
        Host::Shard(self.owners.get(&slot).map_or(slot, |(host, _)| *host))
    }

    fn refuse(conn: ConnId, reason: Refusal, out: &mut Vec<Effect>) {
        out.push(Effect::Down {
            conn,
            frame: Down::Refused { reason, id: None },
        });
    }

    fn on_frame(&mut self, now: Millis, conn: ConnId, up: Up, out: &mut Vec<Effect>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.last_heard = now;
        match up {
            Up::Ping => out.push(Effect::Down {
                conn,
                frame: Down::Pong,
            }),
            Up::Hello {
                device,
                token,
                epoch,
            } => {
                if c.state != ConnState::Unbound {
                    return;
                }
                if !self.topo.has_device(device) || token != device_token(device) {
                    Self::refuse(conn, Refusal::BadToken, out);
                    self.drop_conn(conn, true, out);
                    return;
                }
                c.device = Some(device);
                c.epoch = epoch;
                c.state = ConnState::Registering;
                // One connection per device here: a newer one replaces the older.
                if let Some(old) = self.by_device.insert(device, conn) {
                    if old != conn && self.conns.remove(&old).is_some() {
                        out.push(Effect::Probe(Probe::GatewayConnectionReplaced));
                        self.timers.cancel(&Timer::Register(old));
                        out.push(Effect::CloseConn { conn: old });
                    }
                }
                if self.topo.bugs.has(Bug::NoSessionService) {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.state = ConnState::Ready;
                    }
                    out.push(Effect::Down {
                        conn,
                        frame: Down::Welcome { epoch },
                    });
                    return;
                }
                to_session(
                    out,
                    Rpc::Register {
                        device,
                        epoch,
                        at: now,
                    },
                );
                self.timers
                    .set(Timer::Register(conn), now + REGISTER_RETRY_MS);
            }
            up => {
                let (Some(device), ConnState::Ready) = (c.device, c.state) else {
                    Self::refuse(conn, Refusal::NotAuthenticated, out);
                    return;
                };
                if !up.seqs_in_range() {
                    // A number no conversation reaches: a hostile client's. Dropped here, so
                    // no server behind the gateway has to guard its arithmetic against it.
                    return;
                }
                if let Up::Subscribe { user } = up {
                    to_session(out, Rpc::Subscribe { device, user });
                    return;
                }
                let slot = match &up {
                    Up::Send { conv, .. }
                    | Up::Fetch { conv, .. }
                    | Up::Ack { conv, .. }
                    | Up::Pull { conv }
                    | Up::Receipt { conv, .. }
                    | Up::ReceiptSeen { conv, .. } => shard_for_conv(*conv, self.topo.shards),
                    _ => shard_for_user(device.user, self.topo.shards),
                };
                out.push(Effect::Rpc {
                    to: self.owner(slot),
                    rpc: Rpc::FromDevice { device, up },
                });
            }
        }
    }

    fn on_registered(
        &mut self,
        device: DeviceId,
        epoch: u64,
        current: bool,
        out: &mut Vec<Effect>,
    ) {
        let Some(&conn) = self.by_device.get(&device) else {
            return;
        };
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.epoch != epoch {
            return;
        }
        if !current {
            // The device is connected elsewhere with a newer epoch: this connection is stale.
            out.push(Effect::Probe(Probe::GatewayStaleConnectionClosed));
            self.drop_conn(conn, true, out);
            return;
        }
        if c.state == ConnState::Registering {
            c.state = ConnState::Ready;
            self.timers.cancel(&Timer::Register(conn));
            out.push(Effect::Down {
                conn,
                frame: Down::Welcome { epoch },
            });
        }
    }

    fn on_timer(&mut self, now: Millis, timer: Timer, out: &mut Vec<Effect>) {
        match timer {
            Timer::HeartbeatScan => {
                let dead: Vec<ConnId> = self
                    .conns
                    .iter()
                    .filter(|(_, c)| now.saturating_sub(c.last_heard) >= GATEWAY_IDLE_TIMEOUT_MS)
                    .map(|(id, _)| *id)
                    .collect();
                for conn in dead {
                    out.push(Effect::Probe(Probe::GatewayIdleClosed));
                    self.drop_conn(conn, true, out);
                }
                if !self.conns.is_empty() {
                    self.timers
                        .set(Timer::HeartbeatScan, now + HEARTBEAT_CHECK_MS);
                }
            }
            Timer::Alive => {
                let devices = self
                    .conns
                    .values()
                    .filter_map(|c| c.device.map(|d| (d, c.epoch)))
                    .collect();
                to_session(out, Rpc::Alive { devices, at: now });
                self.timers.set(Timer::Alive, now + GATEWAY_ALIVE_MS);
            }
            Timer::Register(conn) => {
                if let Some(c) = self.conns.get(&conn) {
                    if let (ConnState::Registering, Some(device)) = (c.state, c.device) {
                        let rpc = Rpc::Register {
                            device,
                            epoch: c.epoch,
                            at: now,
                        };
                        out.push(Effect::Probe(Probe::GatewayRegisterRetried));
                        to_session(out, rpc);
                        self.timers
                            .set(Timer::Register(conn), now + REGISTER_RETRY_MS);
                    }
                }
            }
        }
    }
}

impl Machine for Gateway {
    fn handle(&mut self, now: Millis, input: Input, out: &mut Vec<Effect>) {
        match input {
            Input::Accepted { conn } => {
                let c = Conn {
                    device: None,
                    epoch: 0,
                    last_heard: now,
                    state: ConnState::Unbound,
                };
                self.conns.insert(conn, c);
                self.timers
                    .set_min(Timer::HeartbeatScan, now + HEARTBEAT_CHECK_MS);
            }
            Input::FromConn { conn, up } => self.on_frame(now, conn, up, out),
            Input::ConnClosed { conn } => self.drop_conn(conn, false, out),
            Input::Rpc {
                from: Host::Session,
                rpc:
                    Rpc::Registered {
                        device,
                        epoch,
                        current,
                    },
            } => {
                self.on_registered(device, epoch, current, out);
            }
            Input::Rpc {
                from: Host::Shard(host),
                rpc: Rpc::Owner { slot, epoch },
            } if self.owners.get(&slot).is_none_or(|(_, e)| *e < epoch) => {
                self.owners.insert(slot, (host, epoch));
            }
            Input::Rpc {
                from,
                rpc: Rpc::ToDevice { device, down },
            } if matches!(from, Host::Shard(_) | Host::Session) => {
                // A device that is not (or no longer) here misses the push (the message is
                // already in its inbox); the shard hears so, since it may have sent it here
                // on the strength of the device's last frame, and asks where it went.
                let here = self.by_device.get(&device).copied().filter(|conn| {
                    self.conns
                        .get(conn)
                        .is_some_and(|c| c.state == ConnState::Ready)
                });
                let missed = match &down {
                    Down::Deliver {
                        msg,
                        path: Path::Live,
                    } => Some(Missed::Deliver(msg.conv, msg.seq)),
                    Down::Receipt { receipt } => {
                        Some(Missed::Receipt(receipt.conv, receipt.reader, receipt.kind))
                    }
                    _ => None,
                };
                if let (None, Some(missed), Host::Shard(_)) = (here, missed, from) {
                    out.push(Effect::Rpc {
                        to: from,
                        rpc: Rpc::NotHere { device, missed },
                    });
                }
                if let Some(conn) = here {
                    if let (Down::Deliver { msg, .. }, true) =
                        (&down, self.topo.bugs.has(Bug::SocketWriteIsDelivery))
                    {
                        // The write went into the socket buffer; that is not the phone.
                        let up = Up::Ack {
                            conv: msg.conv,
                            seq: msg.seq,
                        };
                        let slot = shard_for_conv(msg.conv, self.topo.shards);
                        let rpc = Rpc::FromDevice { device, up };
                        out.push(Effect::Rpc {
                            to: self.owner(slot),
                            rpc,
                        });
                    }
                    out.push(Effect::Down { conn, frame: down });
                }
            }
            Input::Timeout => {
                while let Some(t) = self.timers.pop_due(now) {
                    self.on_timer(now, t, out);
                }
            }
            // A lease holder's announcement older than one already heard: the higher epoch
            // stands (a paused old owner must not pull traffic back).
            Input::Rpc {
                from: Host::Shard(_),
                rpc: Rpc::Owner { .. },
            } => out.push(Effect::Probe(Probe::GatewayStaleOwnerIgnored)),
            Input::Rpc { from, rpc } => {
                unreachable!(
                    "gateway-{}: no server sends a gateway this: {rpc:?} from {from}",
                    self.index + 1
                )
            }
            Input::Connected
            | Input::ConnectFailed
            | Input::Down(_)
            | Input::Disconnected
            | Input::Pushed
            | Input::Action(_)
            | Input::Disk(_) => {
                unreachable!(
                    "gateway-{}: handed a phone's or storage's input: {input:?}",
                    self.index + 1
                )
            }
        }
        // Each bound device has one connection here, and each connection at most one device.
        assert!(
            self.by_device.len() <= self.conns.len(),
            "gateway-{}: more devices bound than connections open",
            self.index + 1
        );
    }

    fn poll_timeout(&self) -> Option<Millis> {
        self.timers.next()
    }
}
