//! Slot leases and takeover: the lease table after each renewal decides which slots this shard
//! holds; a newly held slot is swept (inboxes, fan-out jobs, queued receipts) and its
//! conversations reloaded, and a lost one is forgotten.

use super::{Pending, Shard, Timer};
use crate::probe::Probe;
use crate::proto::{ConvId, Host, LeaseView, Millis, Rpc};
use crate::routing::shard_for_conv;
use crate::Effect;
use std::collections::{BTreeMap, BTreeSet};

impl Shard {
    /// The lease table after our renewal: take up slots newly ours, drop slots lost, and tell
    /// every gateway which slots we hold.
    pub(super) fn on_lease_table(
        &mut self,
        now: Millis,
        leases: Vec<LeaseView>,
        out: &mut Vec<Effect>,
    ) {
        let me = self.index;
        let mine: BTreeMap<u16, u64> = leases
            .iter()
            .filter(|l| l.owner == me && l.live)
            .filter(|l| {
                self.leases.get(&l.slot) == Some(&l.epoch) || self.acquiring.contains(&l.slot)
            })
            .map(|l| (l.slot, l.epoch))
            .collect();
        self.acquiring.retain(|s| !mine.contains_key(s));
        self.expired = leases
            .iter()
            .filter(|l| !mine.contains_key(&l.slot) && (!l.live || l.owner == me))
            .map(|l| l.slot)
            .collect();
        let lost: Vec<u16> = self
            .leases
            .iter()
            .filter(|(s, e)| mine.get(s) != Some(e))
            .map(|(s, _)| *s)
            .collect();
        for slot in lost {
            self.lose(slot);
        }
        // Sends queued here for a slot another host holds will be retried there.
        let others: BTreeSet<u16> = leases
            .iter()
            .filter(|l| l.owner != me && l.live)
            .map(|l| l.slot)
            .collect();
        let shards = self.topo.shards;
        self.convs
            .retain(|conv, _| !others.contains(&shard_for_conv(*conv, shards)));
        for (&slot, &epoch) in &mine {
            if self.leases.insert(slot, epoch) != Some(epoch) {
                self.take_over(now, slot, out);
            }
            for g in 0..self.topo.gateways {
                let rpc = Rpc::Owner { slot, epoch };
                out.push(Effect::Rpc {
                    to: Host::Gateway(g),
                    rpc,
                });
            }
        }
    }

    /// `slot` is newly ours: what its last owner was doing (deliveries in inboxes, fan-out
    /// jobs, receipts queued) is read back from storage, and each conversation's next
    /// sequence number is reloaded before anything is sequenced.
    pub(super) fn take_over(&mut self, now: Millis, slot: u16, out: &mut Vec<Effect>) {
        if slot != self.index {
            out.push(Effect::Probe(Probe::ShardTookOver));
        }
        self.sweep(now, slot, None, out);
        self.sweep_receipts(now, slot, None, out);
        self.read_fanouts(now, slot, None, None, out);
        let convs: Vec<ConvId> = self
            .convs
            .iter_mut()
            .filter(|(conv, _)| shard_for_conv(**conv, self.topo.shards) == slot)
            .map(|(conv, c)| {
                if c.in_flight.is_none() && !c.loading {
                    c.last_seq = None;
                    c.group = None;
                }
                *conv
            })
            .collect();
        for conv in convs {
            self.pump(now, conv, out);
        }
    }

    /// `slot` is no longer ours (fenced, or the table shows another owner): forget its
    /// conversations, so nothing more is written or pushed for it from here.
    pub(super) fn lose(&mut self, slot: u16) {
        self.leases.remove(&slot);
        // Sweeps still out for the slot would bring its deliveries and jobs back.
        let reading: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| match p {
                Pending::Sweep { slot: s, .. }
                | Pending::ReceiptSweep { slot: s, .. }
                | Pending::Fanouts { slot: s, .. } => *s == slot,
                _ => false,
            })
            .map(|(req, _)| *req)
            .collect();
        for req in reading {
            self.pending.remove(&req);
            self.timers.cancel(&Timer::Expire(req));
        }
        let shards = self.topo.shards;
        let theirs = |conv: ConvId| shard_for_conv(conv, shards) == slot;
        self.convs.retain(|conv, _| !theirs(*conv));
        self.jobs.retain(|(conv, _), _| !theirs(*conv));
        self.deliveries.retain(|(_, conv, _), _| !theirs(*conv));
        self.receipt_pushes
            .retain(|(_, conv, _, _), _| !theirs(*conv));
    }
}
