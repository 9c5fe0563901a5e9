//! What survives a crash, kept beside the hosts rather than inside them, and the machines a
//! server host (re)starts with.
//!
//! A host's memory is lost when it crashes; only what it made durable is not. Every engine
//! therefore keeps one [`DurableState`] outside its simulated hosts (the real server keeps it on
//! disk), applies every [`Write`] the [router](crate::route) hands it, and builds each
//! restarted server from it. A write reaches here only once the machine says it is synced, so
//! "ack before persist" loses exactly what a real crash would.

use crate::gateway::Gateway;
use crate::proto::{Host, OpId, StorageOp};
use crate::push::Push;
use crate::replica::{Replica, ReplicaLog, SharedOp};
use crate::session::{Session, SessionChange, SessionTable};
use crate::shard::Shard;
use crate::storage::{Storage, StorageState};
use crate::{Deployment, Machine, StorageModel};
use std::collections::BTreeMap;

/// One durable write, as a machine hands it to its host.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Write {
    /// Storage synced these operations.
    Storage(Vec<StorageOp>),
    /// The storage coordinator rebuilt its view from the replicas; it replaces what earlier
    /// storage writes built up (kept for reports only: the replicas hold the truth).
    Rebuilt(Box<StorageState>),
    /// A replica synced these operations.
    Replica {
        /// Which replica.
        replica: u16,
        /// The operations, by id.
        ops: Vec<(OpId, SharedOp)>,
    },
    /// The session service synced this change.
    Session(SessionChange),
}

/// Everything every server made durable.
#[derive(Clone, Debug, Hash)]
pub struct DurableState {
    /// Storage's synced records (with replicas: the coordinator's last rebuilt view, for
    /// reports only).
    pub storage: StorageState,
    /// Each replica's synced operations, by replica index (absent: nothing synced yet).
    pub replicas: BTreeMap<u16, ReplicaLog>,
    /// The session table as last synced.
    pub session: SessionTable,
    /// How many times the storage node has started: a replicated coordinator's boot number,
    /// which makes its operation ids unique across restarts.
    pub storage_boots: u64,
}

impl DurableState {
    /// Nothing durable yet.
    pub fn new(model: StorageModel) -> DurableState {
        DurableState {
            storage: StorageState::new(model),
            replicas: BTreeMap::new(),
            session: SessionTable::new(),
            storage_boots: 0,
        }
    }

    /// Keep `write`.
    pub fn apply(&mut self, write: Write) {
        match write {
            Write::Storage(ops) => ops.iter().for_each(|op| self.storage.apply(op)),
            Write::Rebuilt(view) => self.storage = *view,
            Write::Replica { replica, ops } => {
                self.replicas.entry(replica).or_default().apply(&ops)
            }
            Write::Session(change) => self.session.apply(&change),
        }
    }

    /// What replica `i` would keep if it crashed now.
    pub fn replica_log(&self, i: u16) -> ReplicaLog {
        self.replicas.get(&i).cloned().unwrap_or_default()
    }

    /// Start the storage node: from its synced records, or (with replicas) as a coordinator
    /// that rebuilds its view from them, under the next boot number.
    pub fn start_storage(&mut self, topo: &Deployment) -> Storage {
        if topo.replicas > 0 {
            let boot = self.storage_boots;
            self.storage_boots += 1;
            Storage::replicated(topo, boot)
        } else {
            Storage::configured(self.storage.clone(), topo)
        }
    }

    /// Start the session service from its synced table.
    pub fn start_session(&self, topo: &Deployment) -> Session {
        Session::new(topo.clone(), self.session.clone())
    }

    /// Start replica `i` from its synced operations.
    pub fn start_replica(&self, i: u16, topo: &Deployment) -> Replica {
        Replica::configured(self.replica_log(i), topo.knobs)
    }

    /// The machine server `host` starts (or restarts) with: fresh, but for what it made
    /// durable. The push provider draws its losses and delays from `push_seed`.
    ///
    /// # Panics
    /// For a device: phones are not servers, and keep their own state.
    pub fn start(&mut self, host: Host, topo: &Deployment, push_seed: u64) -> Box<dyn Machine> {
        match host {
            Host::Gateway(i) => Box::new(Gateway::new(i, topo.clone())),
            Host::Session => Box::new(self.start_session(topo)),
            Host::Shard(i) => Box::new(Shard::new(i, topo.clone())),
            Host::Push => Box::new(Push::new(topo.clone(), push_seed)),
            Host::Storage(_) => Box::new(self.start_storage(topo)),
            Host::Replica(i) => Box::new(self.start_replica(i, topo)),
            Host::Device(d) => unreachable!("{d} is a phone, not a server machine"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A replicated coordinator's boot number is how many times it started before, so a
    // restarted one never reuses its predecessor's operation ids.
    #[test]
    fn each_replicated_storage_start_takes_the_next_boot_number() {
        let topo = Deployment {
            replicas: 3,
            ..Deployment::default()
        };
        let mut d = DurableState::new(StorageModel::History);
        d.start_storage(&topo);
        d.start_storage(&topo);
        assert_eq!(d.storage_boots, 2);
        let single = Deployment::default();
        d.start_storage(&single);
        assert_eq!(d.storage_boots, 2, "a single node has no boot number");
    }

    #[test]
    fn a_replica_starts_from_what_it_synced_and_nothing_else() {
        let mut d = DurableState::new(StorageModel::History);
        assert!(d.replica_log(1).is_empty());
        let link = StorageOp::Link {
            device: crate::proto::DeviceId {
                user: crate::proto::UserId(0),
                index: 1,
            },
        };
        d.apply(Write::Replica {
            replica: 1,
            ops: vec![(OpId { term: 1, n: 1 }, std::sync::Arc::new(link))],
        });
        assert!(d.replica_log(0).is_empty());
        assert_eq!(d.replica_log(1).len(), 1);
    }
}
