//! The real server: the same `chatsim-system` machines the simulators check, each behind the
//! same host layer they drive (`chatsim-world`'s [`ServerHost`](chatsim_world::host::ServerHost)
//! and [`PhoneHost`](chatsim_world::host::PhoneHost)), on real tokio and real sockets.
//!
//! Phones speak WebSocket to gateways, one frame per binary message; servers speak
//! length-prefixed frames to each other over TCP. Everything listens on loopback. This crate
//! owns only what a simulator cannot share with it: listeners and connection tasks, the wall
//! clock, and shutdown. Which code is shared and which is not is listed in `docs/protocol.md`.

pub mod disk;
pub mod phone;
pub mod relay;
pub mod serve;
pub mod sessions;
pub mod site;

use chatsim_system::bugs::Bugs;
use chatsim_system::proto::{DeviceId, Host, Millis, UserId};
use chatsim_system::{Deployment, KeyDirectory, PushSpec, StorageModel};
use chatsim_world::deploy::device_seed;
use std::net::{IpAddr, SocketAddr};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;

/// Ports above gateway 0's where the servers' own links listen, one per host in
/// [`Config::hosts`] order: far enough up that a deployment's gateways never reach them.
pub const INTERNAL_PORT_OFFSET: u16 = 100;

/// Phone connections a gateway holds at most, unless told otherwise: far above what a test or a
/// terminal needs, under what one process's file descriptors allow once raised.
pub const DEFAULT_PHONE_CONNECTIONS_MAX: u32 = 50_000;

/// A deployment to serve (or, for a client, to find): who exists and where everyone listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Gateway 0's WebSocket address; gateway `g` listens `g` ports up from it.
    pub addr: SocketAddr,
    /// Users, with ids `0..users`.
    pub users: u32,
    /// Devices per user: a primary phone and companions.
    pub devices_per_user: u8,
    /// Gateways.
    pub gateways: u16,
    /// Chat shards.
    pub shards: u16,
    /// Derives each device's key pair: a stand-in for provisioning and a key server, so a
    /// client started with the same seed holds the keys its peers seal for (see
    /// `docs/protocol.md`; the token a device proves itself with is not a secret yet).
    pub seed: u64,
    /// Phone connections one gateway holds at most; one more is answered with close code 1013
    /// (try again later) and dropped, so a flood of connections costs a bounded amount.
    pub phone_connections_max: u32,
    /// Bug-zoo mistakes switched on in every machine built from this configuration (servers
    /// and phones alike): none in production; a load run against a server with one shows the
    /// judged history catching it on real sockets.
    pub bugs: Bugs,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 7400)),
            users: 8,
            devices_per_user: 1,
            gateways: 2,
            shards: 2,
            seed: 1,
            phone_connections_max: DEFAULT_PHONE_CONNECTIONS_MAX,
            bugs: Bugs::default(),
        }
    }
}

/// A configuration that cannot be served.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    /// Servers and clients talk to loopback only.
    #[error("address {0}: chatsim serves loopback only (127.0.0.1 or ::1)")]
    NotLoopback(IpAddr),
    /// A count is zero or out of range.
    #[error("{field}: {reason}")]
    Range {
        /// Which setting.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The ports the deployment needs run past 65535.
    #[error("port {0}: the deployment needs {1} ports from it, past 65535")]
    Ports(u16, usize),
}

impl Config {
    /// Check what a user gave: loopback, counts in range, ports that exist.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.addr.ip().is_loopback() {
            return Err(ConfigError::NotLoopback(self.addr.ip()));
        }
        let range = |field, ok: bool, reason: &str| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Range {
                    field,
                    reason: reason.to_string(),
                })
            }
        };
        range("users", self.users >= 2, "at least 2 (someone to talk to)")?;
        range("users", self.users <= 100_000, "at most 100000")?;
        range(
            "devices-per-user",
            (1..=1 + chatsim_system::limits::COMPANIONS_MAX).contains(&self.devices_per_user),
            "a primary and up to the design's companions",
        )?;
        range(
            "gateways",
            (1..INTERNAL_PORT_OFFSET).contains(&self.gateways),
            "1 to 99",
        )?;
        range("shards", (1..=64).contains(&self.shards), "1 to 64")?;
        range(
            "connections-max",
            self.phone_connections_max >= 1,
            "at least 1 phone connection per gateway",
        )?;
        let needed = usize::from(INTERNAL_PORT_OFFSET) + self.hosts().len();
        if usize::from(self.addr.port()) + needed > usize::from(u16::MAX) {
            return Err(ConfigError::Ports(self.addr.port(), needed));
        }
        Ok(())
    }

    /// Every server host of the deployment, in a fixed order.
    pub fn hosts(&self) -> Vec<Host> {
        let mut hosts: Vec<Host> = (0..self.gateways).map(Host::Gateway).collect();
        hosts.push(Host::Session);
        hosts.extend((0..self.shards).map(Host::Shard));
        hosts.push(Host::Storage(0));
        hosts.push(Host::Push);
        hosts
    }

    /// Where gateway `g` takes WebSocket connections.
    pub fn gateway_addr(&self, g: u16) -> SocketAddr {
        SocketAddr::new(self.addr.ip(), self.addr.port() + g)
    }

    /// Where server `h` takes its peers' links.
    pub fn internal_addr(&self, h: Host) -> SocketAddr {
        let index = self
            .hosts()
            .iter()
            .position(|x| *x == h)
            .expect("only the deployment's own hosts have addresses");
        let index = u16::try_from(index).expect("validate bounds the host count");
        SocketAddr::new(
            self.addr.ip(),
            self.addr.port() + INTERNAL_PORT_OFFSET + index,
        )
    }

    /// The machines' view of the deployment: the same structure a scenario gives the
    /// simulators, with a real phone's settings (its own clock, no injected skew; a push
    /// provider that loses nothing).
    pub fn deployment(&self) -> Deployment {
        let mut topo = Deployment {
            users: self.users,
            gateways: self.gateways,
            shards: self.shards,
            devices_per_user: self.devices_per_user,
            bugs: self.bugs.clone(),
            fanout_on_read_over: 0,
            push: PushSpec {
                delay_ms: (0, 0),
                loss_percent: 0,
            },
            late_devices: Default::default(),
            clock_skew_ms: Some(0),
            storage_model: StorageModel::default(),
            replicas: 0,
            keys: KeyDirectory::default(),
            // Keys of their own per deployment (whoever has its seed can derive them).
            key_seed: self.seed,
            knobs: Default::default(),
            // The real server speaks WebSocket; polling is a simulated comparison.
            transport: Default::default(),
        };
        topo.keys = KeyDirectory::new(
            (0..topo.users)
                .flat_map(|u| topo.devices_of(UserId(u)))
                .map(|d| (d, chatsim_system::e2e::device_public(topo.key_seed, d)))
                .collect(),
        );
        topo
    }

    /// The deployment in words, as a data folder records what it was written for.
    pub fn name(&self) -> String {
        format!(
            "users={} devices-per-user={} gateways={} shards={} seed={}",
            self.users, self.devices_per_user, self.gateways, self.shards, self.seed
        )
    }

    /// The seed a device's machine is built from (its keys come from it).
    pub fn device_seed(&self, d: DeviceId) -> u64 {
        device_seed(self.seed, d)
    }
}

/// Raise this process's open-file limit to its hard limit (thousands of connections need
/// more than a shell's usual 1,024), returning the limit now in force; a failure leaves the
/// limit as it was.
pub fn raise_fd_limit() -> Option<u64> {
    rlimit::increase_nofile_limit(u64::MAX).ok()
}

/// Milliseconds on this process's clock: monotonic (an `Instant`), started at the wall
/// clock's reading when first asked, so processes on one machine roughly agree (the machines
/// compare only their own readings, except a lease's end, which the storage grants and the
/// shard checks on its own clock with a margin).
pub fn now() -> Millis {
    static START: OnceLock<(Instant, Millis)> = OnceLock::new();
    let (t0, wall0) = START.get_or_init(|| {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as Millis);
        (Instant::now(), wall)
    });
    wall0 + t0.elapsed().as_millis() as Millis
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployment_gets_distinct_ports_and_refuses_what_it_cannot_serve() {
        let c = Config::default();
        assert_eq!(c.validate(), Ok(()));
        let mut ports: Vec<u16> = (0..c.gateways).map(|g| c.gateway_addr(g).port()).collect();
        ports.extend(c.hosts().iter().map(|h| c.internal_addr(*h).port()));
        let n = ports.len();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), n, "two listeners share a port");
        let far = Config {
            addr: SocketAddr::from(([10, 0, 0, 1], 7400)),
            ..Config::default()
        };
        assert!(matches!(far.validate(), Err(ConfigError::NotLoopback(_))));
        let lonely = Config {
            users: 1,
            ..Config::default()
        };
        assert!(matches!(
            lonely.validate(),
            Err(ConfigError::Range { field: "users", .. })
        ));
        let high = Config {
            addr: SocketAddr::from(([127, 0, 0, 1], 65_500)),
            ..Config::default()
        };
        assert!(matches!(
            high.validate(),
            Err(ConfigError::Ports(65_500, _))
        ));
    }
}
