//! The deployment a scenario and seed describe, and the durable state beside its hosts.
//!
//! A run's hosts crash and restart; what they made durable must not go with them, so it lives
//! here, outside every simulated host, shared by the run's tasks. Only synced writes reach it
//! (the machines say when), so a kill loses exactly what was never synced.

use crate::plan::{derive_seed, Plan};
use crate::scenario::Scenario;
use chatsim_system::bugs::Bugs;
use chatsim_system::durable::{DurableState, Write};
use chatsim_system::proto::{DeviceId, Host, UserId};
use chatsim_system::{Deployment, KeyDirectory, Machine};
use std::sync::{Mutex, MutexGuard};

/// Salt of the push provider's generator, drawn from the run seed.
const PUSH_SALT: u64 = 0x7075_7368;

/// The seed of one device's generator (and so of its keys). Index 0 keeps the salt
/// single-device runs always had.
pub fn device_seed(seed: u64, d: DeviceId) -> u64 {
    derive_seed(
        seed,
        0x6465_7600 + u64::from(d.user.0) + (u64::from(d.index) << 40),
    )
}

/// The deployment a scenario and a seed's plan describe, its key directory included (the keys
/// are the same for every seed).
pub fn deployment(scenario: &Scenario, plan: &Plan, bugs: Bugs) -> Deployment {
    let t = &scenario.topology;
    let mut topo = Deployment {
        users: t.users,
        gateways: t.gateways,
        shards: t.shards,
        devices_per_user: t.devices_per_user,
        fanout_on_read_over: t.fanout_on_read_over,
        replicas: t.replicas,
        storage_model: t.storage_model,
        clock_skew_ms: t.clock_skew_ms,
        push: scenario.push.spec(),
        bugs,
        keys: Default::default(),
        // Fixed: a device keeps its keys from seed to seed, so a swarm agrees each pair once.
        key_seed: 0,
        late_devices: plan.late_devices(),
        knobs: plan.knobs,
        transport: t.transport,
    };
    topo.keys = KeyDirectory::new(
        (0..topo.users)
            .flat_map(|u| topo.devices_of(UserId(u)))
            .map(|d| (d, chatsim_system::e2e::device_public(topo.key_seed, d)))
            .collect(),
    );
    topo
}

/// State that survives a crash: what storage, its replicas and the session service made
/// durable, shared by every host of one run.
pub struct Durable {
    /// What every server made durable; hosts lock it only between awaits.
    state: Mutex<DurableState>,
    /// What each storage host's disk does now, where a fault changed it: the disk outlives
    /// the host's crashes, as the data on it does.
    disks: Mutex<std::collections::BTreeMap<Host, chatsim_system::Disk>>,
}

impl Durable {
    /// Nothing durable yet.
    pub fn new(topo: &Deployment) -> Durable {
        Durable {
            state: Mutex::new(DurableState::new(topo.storage_model)),
            disks: Mutex::default(),
        }
    }

    /// What `host`'s disk does now.
    pub fn disk(&self, host: Host) -> chatsim_system::Disk {
        let disks = self.disks.lock().expect("no host panics holding it");
        disks.get(&host).copied().unwrap_or_default()
    }

    /// Set what `host`'s disk does from now on (a disk fault, or its end).
    pub fn set_disk(&self, host: Host, disk: chatsim_system::Disk) {
        let mut disks = self.disks.lock().expect("no host panics holding it");
        disks.insert(host, disk);
    }

    /// The durable state, for reading (a host's tasks never hold it across an await).
    pub fn lock(&self) -> MutexGuard<'_, DurableState> {
        self.state.lock().expect("no host panics holding it")
    }

    /// The machine a server host starts (or restarts) with: fresh, but for what it made
    /// durable before.
    pub fn machine(&self, host: Host, topo: &Deployment, seed: u64) -> Box<dyn Machine> {
        self.lock().start(host, topo, derive_seed(seed, PUSH_SALT))
    }

    /// Keep a write a server synced.
    pub fn apply(&self, write: Write) {
        self.lock().apply(write);
    }

    /// Storage's inbox entries now (the report's timeline).
    pub fn inbox_entries(&self) -> usize {
        self.lock().storage.inbox_entries()
    }
}
