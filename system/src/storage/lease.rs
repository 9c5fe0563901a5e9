//! Shard slot leases on a storage node: renewals, takeovers decided against the node's own
//! clock and buffered state, and the fence that refuses a write under a stale epoch.

use super::Storage;
use crate::limits::SHARD_LEASE_MS;
use crate::probe::Probe;
use crate::proto::{Host, LeaseView, Millis, Rpc, StorageOp};
use crate::Effect;
use std::collections::BTreeSet;

impl Storage {
    /// A slot's lease as it will be once the buffer is durable.
    pub(super) fn lease_now(&self, slot: u16) -> Option<(u16, u64, Millis)> {
        let buffered = self.buffer.iter().rev().find_map(|b| match &b.op {
            Some(StorageOp::Lease {
                slot: s,
                owner,
                epoch,
                until,
            }) if *s == slot => Some((*owner, *epoch, *until)),
            _ => None,
        });
        buffered.or_else(|| self.durable.lease(slot))
    }

    /// Whether a write under `fence` may go ahead: its epoch is the slot's current one. The
    /// fence is what keeps a paused or cut-off shard (a zombie) from getting anything written
    /// after another took its slot over.
    pub(super) fn fenced(&self, fence: (u16, u64), from: Host, out: &mut Vec<Effect>) -> bool {
        if self.unfenced {
            return false;
        }
        let (slot, epoch) = fence;
        let current = self.lease_now(slot).map_or(0, |(_, e, _)| e);
        if current == epoch {
            return false;
        }
        let rpc = Rpc::Fenced {
            slot,
            epoch: current,
        };
        out.push(Effect::Probe(Probe::StorageFenceRefused));
        out.push(Effect::Rpc { to: from, rpc });
        true
    }

    pub(super) fn on_lease(
        &mut self,
        now: Millis,
        from: Host,
        shard: u16,
        renew: Vec<(u16, u64)>,
        acquire: Vec<u16>,
        out: &mut Vec<Effect>,
    ) {
        let until = now + SHARD_LEASE_MS;
        for (slot, epoch) in renew {
            // Renewed even after running out, as long as nobody took it meanwhile.
            if self
                .lease_now(slot)
                .is_some_and(|(o, e, _)| o == shard && e == epoch)
            {
                let op = StorageOp::Lease {
                    slot,
                    owner: shard,
                    epoch,
                    until,
                };
                self.buffer(now, Some(op), None);
            }
        }
        for slot in acquire {
            let current = self.lease_now(slot);
            let grant = match current {
                None => slot == shard,
                Some((owner, _, until)) => until <= now || owner == shard,
            };
            if grant {
                if current.is_some_and(|(owner, _, _)| owner != shard) {
                    out.push(Effect::Probe(Probe::StorageLeaseMoved));
                }
                // Decided against the buffered state, so two takeovers in one sync window
                // cannot both win.
                let op = StorageOp::Lease {
                    slot,
                    owner: shard,
                    epoch: current.map_or(0, |l| l.1) + 1,
                    until,
                };
                self.buffer(now, Some(op), None);
            }
        }
        let mut slots: BTreeSet<u16> = self.durable.leases.keys().copied().collect();
        slots.extend(self.buffer.iter().filter_map(|b| match &b.op {
            Some(StorageOp::Lease { slot, .. }) => Some(*slot),
            _ => None,
        }));
        let leases = slots
            .into_iter()
            .filter_map(|slot| {
                let (owner, epoch, until) = self.lease_now(slot)?;
                Some(LeaseView {
                    slot,
                    owner,
                    epoch,
                    live: until > now,
                })
            })
            .collect();
        self.buffer(now, None, Some((from, Rpc::LeaseTable { leases })));
    }
}
