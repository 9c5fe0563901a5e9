//! The history of one run: what every device observed and every fault the world injected, each
//! stamped with simulated time. This is all the checkers may look at (like Jepsen, they judge
//! what users could notice, never a server's internal state).

use chatsim_system::proto::{ConvId, DeviceId, Host, Millis, UserId};
use chatsim_system::Observation;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A fault the world injected (or healed). Device-level faults name the device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Fault {
    /// A server host was killed (its memory is gone; synced storage survives).
    Kill(Host),
    /// A killed host was started again.
    Restart(Host),
    /// Every link into and out of a host stops delivering (frames are held, not dropped).
    Clog(Host),
    /// A clogged host's links deliver again (held frames arrive).
    Unclog(Host),
    /// Links between two sets of hosts stop delivering, both ways.
    Partition(Vec<Host>, Vec<Host>),
    /// A partition between these two sets ends.
    PartitionHealed(Vec<Host>, Vec<Host>),
    /// A device went offline by choice (airplane mode).
    DeviceOffline(DeviceId),
    /// A device came back online.
    DeviceOnline(DeviceId),
    /// A device's connection was dropped by the network; it reconnects on its own.
    DeviceDrop(DeviceId),
    /// A device went silent without closing its connection (half-open).
    DeviceSilent(DeviceId),
    /// A silent device's network works again.
    DeviceUnsilent(DeviceId),
}

/// One line of history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A device observed something.
    Device {
        /// Which device.
        device: DeviceId,
        /// What it saw.
        obs: Observation,
    },
    /// The world injected or healed a fault.
    Fault(Fault),
    /// Every fault is healed from here on: liveness is measured from this point.
    Healed,
}

/// An event with its simulated time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Simulated ms since the start of the run.
    pub t: Millis,
    /// What happened.
    pub event: Event,
}

/// A run's history plus the little static knowledge checkers need to interpret it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Events in the order they happened (non-decreasing `t`).
    pub records: Vec<Record>,
    /// Number of users (ids `0..users`), each with one device (index 0) on the 1:1 path.
    pub users: u32,
    /// When the run ended (simulated ms).
    pub end: Millis,
}

impl History {
    /// An empty history for `users` users.
    pub fn new(users: u32) -> History {
        History {
            records: Vec::new(),
            users,
            end: 0,
        }
    }

    /// Append an event at `t`.
    pub fn push(&mut self, t: Millis, event: Event) {
        self.records.push(Record { t, event });
    }

    /// Append a device observation at `t`.
    pub fn observe(&mut self, t: Millis, device: DeviceId, obs: Observation) {
        self.push(t, Event::Device { device, obs });
    }

    /// When faults were healed, if they were.
    pub fn healed_at(&self) -> Option<Millis> {
        self.records
            .iter()
            .find(|r| r.event == Event::Healed)
            .map(|r| r.t)
    }

    /// The devices that must display a message the `sender` device sent in `conv`: every
    /// device of the other member of the direct conversation.
    pub fn recipients(&self, conv: ConvId, sender: DeviceId) -> Vec<DeviceId> {
        conv.direct_peer(sender.user)
            .filter(|p| p.0 < self.users && *p != sender.user)
            .map(|p| vec![DeviceId::primary(p)])
            .unwrap_or_default()
    }

    /// All devices in the run.
    pub fn devices(&self) -> impl Iterator<Item = DeviceId> {
        (0..self.users).map(|u| DeviceId::primary(UserId(u)))
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let side = |hs: &[Host]| {
            hs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Fault::Kill(h) => write!(f, "kill {h}"),
            Fault::Restart(h) => write!(f, "restart {h}"),
            Fault::Clog(h) => write!(f, "clog {h}"),
            Fault::Unclog(h) => write!(f, "unclog {h}"),
            Fault::Partition(a, b) => write!(f, "partition [{}] | [{}]", side(a), side(b)),
            Fault::PartitionHealed(a, b) => {
                write!(f, "heal partition [{}] | [{}]", side(a), side(b))
            }
            Fault::DeviceOffline(d) => write!(f, "{d} goes offline"),
            Fault::DeviceOnline(d) => write!(f, "{d} comes online"),
            Fault::DeviceDrop(d) => write!(f, "{d} loses its connection"),
            Fault::DeviceSilent(d) => write!(f, "{d} goes silent (half-open)"),
            Fault::DeviceUnsilent(d) => write!(f, "{d} is reachable again"),
        }
    }
}
