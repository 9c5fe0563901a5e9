//! A storage replica: the durable log of storage operations its coordinator sends it, in the
//! one order every replica shares ([`OpId`]). Replicas make no decisions; the coordinator
//! counts their acknowledgements (a quorum makes a write durable) and rebuilds its view from a
//! quorum of them when it restarts.
//!
//! Fault model, as storage's: operations are buffered and synced [`crate::limits::STORAGE_SYNC_MS`] after the
//! first one; only synced ones are acknowledged and handed to the engine as
//! [`Effect::PersistOps`], and a crash loses the rest.
//!
//! Inputs: `Rpc::Replicate`, `Rpc::ReadOps`, `Timeout`. Outputs: `Rpc::Replicated`,
//! `Rpc::Ops`, `Rpc::ReplicaUp` (once, at boot), `PersistOps`.

use crate::knobs::Knobs;
#[cfg(test)]
use crate::limits::STORAGE_SYNC_MS;
use crate::probe::Probe;
use crate::proto::{Host, Millis, OpId, Rpc, StorageOp};
use crate::storage::StorageState;
use crate::{Disk, Effect, Input, Machine};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A synced operation, shared: the node's log and the engine's durable copy of it hold the
/// same allocation instead of two (replica logs are the biggest state of a replicated run).
pub type SharedOp = Arc<StorageOp>;

/// The coordinator every replica answers to.
pub const COORDINATOR: Host = Host::Storage(0);

/// What a replica keeps across crashes: its synced operations by id.
#[derive(Clone, Debug, Hash, Default, PartialEq, Eq)]
pub struct ReplicaLog {
    /// Synced operations by id (ids are never reused).
    ops: BTreeMap<OpId, SharedOp>,
}

impl ReplicaLog {
    /// Keep `batch` (an id already held keeps its first operation: ids are never reused).
    pub fn apply(&mut self, batch: &[(OpId, SharedOp)]) {
        for (id, op) in batch {
            self.ops.entry(*id).or_insert_with(|| Arc::clone(op));
        }
    }

    /// Operations held.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Whether it holds `id`.
    pub fn has(&self, id: OpId) -> bool {
        self.ops.contains_key(&id)
    }

    /// The store these operations make, applied in order (for reports and tests).
    pub fn state(&self) -> StorageState {
        let mut s = StorageState::default();
        self.ops.values().for_each(|op| s.apply(op));
        s
    }
}

/// A replica node.
#[derive(Clone, Debug, Hash)]
pub struct Replica {
    /// What it has synced: all a crash leaves.
    durable: ReplicaLog,
    /// Operations received and not yet synced (a crash loses them; they were never
    /// acknowledged).
    buffer: Vec<(OpId, SharedOp)>,
    /// When the buffer is synced next, if anything waits.
    sync_at: Option<Millis>,
    /// Not yet told the coordinator it is up (sent at the first timeout, i.e. at boot).
    hello_due: bool,
    /// The run's knobs: the sync delay and the page of operations.
    knobs: Knobs,
    /// What the disk does now: only a slow one changes a replica (a full disk is storage's
    /// fault kind; a replica refusing some operations would leave holes in its log).
    disk: Disk,
}

impl Replica {
    /// A replica recovering `durable` (empty on first boot).
    pub fn new(durable: ReplicaLog) -> Replica {
        Replica {
            durable,
            buffer: Vec::new(),
            sync_at: None,
            hello_due: true,
            knobs: Knobs::default(),
            disk: Disk::Healthy,
        }
    }

    /// The same, under the run's knobs.
    pub fn configured(durable: ReplicaLog, knobs: Knobs) -> Replica {
        Replica {
            knobs,
            ..Replica::new(durable)
        }
    }

    /// What it has synced.
    pub fn durable(&self) -> &ReplicaLog {
        &self.durable
    }

    fn sync(&mut self, out: &mut Vec<Effect>) {
        self.sync_at = None;
        let batch = std::mem::take(&mut self.buffer);
        if batch.is_empty() {
            return;
        }
        self.durable.apply(&batch);
        let ids = batch.iter().map(|(id, _)| *id).collect();
        out.push(Effect::PersistOps(batch));
        out.push(Effect::Rpc {
            to: COORDINATOR,
            rpc: Rpc::Replicated { ids },
        });
    }

    /// A page of synced operations after `after`: at least one, then as many as fit in
    /// the knob [`Knobs::ops_page_bytes`].
    fn page(&self, after: Option<OpId>) -> Rpc {
        let mut iter = match after {
            Some(a) => self
                .durable
                .ops
                .range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => self.durable.ops.range(..),
        }
        .peekable();
        let (mut ops, mut bytes) = (Vec::new(), 0);
        while let Some((id, op)) = iter.peek() {
            let size = op.approx_bytes();
            if !ops.is_empty() && bytes + size > self.knobs.ops_page_bytes {
                break;
            }
            bytes += size;
            ops.push((**id, StorageOp::clone(op)));
            iter.next();
        }
        Rpc::Ops {
            after,
            ops,
            more: iter.peek().is_some(),
        }
    }
}

impl Machine for Replica {
    fn handle(&mut self, now: Millis, input: Input, out: &mut Vec<Effect>) {
        match input {
            Input::Rpc {
                rpc: Rpc::Replicate { ops },
                ..
            } => {
                if ops.is_empty() {
                    return; // Nothing to sync: a sync armed for it would ack nothing.
                }
                self.buffer
                    .extend(ops.into_iter().map(|(id, op)| (id, Arc::new(op))));
                let delay = match self.disk {
                    Disk::Slow(ms) => {
                        if self.sync_at.is_none() {
                            out.push(Effect::Probe(Probe::StorageSyncSlowed));
                        }
                        ms
                    }
                    Disk::Healthy | Disk::Full => self.knobs.storage_sync_ms,
                };
                self.sync_at.get_or_insert(now + delay);
            }
            Input::Rpc {
                from,
                rpc: Rpc::ReadOps { after },
            } => out.push(Effect::Rpc {
                to: from,
                rpc: self.page(after),
            }),
            Input::Disk(disk) => self.disk = disk,
            Input::Timeout => {
                if self.hello_due {
                    self.hello_due = false;
                    out.push(Effect::Rpc {
                        to: COORDINATOR,
                        rpc: Rpc::ReplicaUp,
                    });
                }
                if self.sync_at.is_some_and(|t| t <= now) {
                    self.sync(out);
                }
            }
            Input::Rpc { from, rpc } => {
                unreachable!("only the coordinator's Replicate and ReadOps reach a replica: {rpc:?} from {from}")
            }
            // Only gateways hold connections and only phones have users: the hosts never hand
            // these to this machine.
            input => crate::not_for_this_host("a replica", &input),
        }
        assert!(
            self.buffer.is_empty() == self.sync_at.is_none(),
            "a replica's buffer waits for a sync exactly when it holds something"
        );
    }

    fn poll_timeout(&self) -> Option<Millis> {
        if self.hello_due {
            return Some(0);
        }
        self.sync_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{ConvId, DeviceId, UserId};
    use crate::proto::{Receipt, ReceiptKind};

    fn op(upto: u64) -> StorageOp {
        StorageOp::Receipt {
            receipt: Receipt {
                conv: ConvId::direct(UserId(0), UserId(1)),
                reader: DeviceId::primary(UserId(1)),
                kind: ReceiptKind::Delivered,
                upto,
            },
            notify: vec![],
        }
    }

    fn replicate(r: &mut Replica, now: Millis, n: u64) -> Vec<Effect> {
        let mut out = Vec::new();
        let rpc = Rpc::Replicate {
            ops: vec![(OpId { term: 1, n }, op(n))],
        };
        r.handle(
            now,
            Input::Rpc {
                from: COORDINATOR,
                rpc,
            },
            &mut out,
        );
        out
    }

    #[test]
    fn operations_are_acknowledged_only_once_synced_and_a_crash_loses_the_rest() {
        let mut r = Replica::new(ReplicaLog::default());
        let mut out = Vec::new();
        r.handle(0, Input::Timeout, &mut out);
        assert!(matches!(
            &out[..],
            [Effect::Rpc {
                rpc: Rpc::ReplicaUp,
                ..
            }]
        ));
        assert!(
            replicate(&mut r, 10, 1).is_empty(),
            "nothing before the sync"
        );
        let mut out = Vec::new();
        r.handle(10 + STORAGE_SYNC_MS, Input::Timeout, &mut out);
        let acked = out.iter().any(|e| {
            matches!(e, Effect::Rpc { rpc: Rpc::Replicated { ids }, .. } if ids == &[OpId { term: 1, n: 1 }])
        });
        assert!(acked, "{out:?}");
        replicate(&mut r, 20, 2);
        // A crash now: the engine restarts the replica from what it persisted.
        let restarted = Replica::new(r.durable().clone());
        assert_eq!(restarted.durable().len(), 1);
        assert!(!restarted.durable().has(OpId { term: 1, n: 2 }));
    }

    #[test]
    fn reads_come_in_pages_in_order() {
        let mut log = ReplicaLog::default();
        let batch: Vec<_> = (1..=5)
            .map(|n| (OpId { term: 1, n }, Arc::new(op(n))))
            .collect();
        log.apply(&batch);
        let r = Replica::new(log);
        let Rpc::Ops { ops, more, .. } = r.page(Some(OpId { term: 1, n: 2 })) else {
            panic!("a read is answered with a page");
        };
        assert!(!more);
        let ids: Vec<u64> = ops.iter().map(|(id, _)| id.n).collect();
        assert_eq!(ids, [3, 4, 5]);
    }
}
