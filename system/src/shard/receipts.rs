//! Receipt pushes: a stored receipt is pushed to each sender device it names, retried until
//! that device says it saw it (or is not connected: storage queues a copy for its next drain).

use super::{Pending, Shard, Timer, STORAGE};
use crate::limits::PUSH_ATTEMPTS_MAX;
use crate::proto::{ConvId, DeviceId, Millis, Receipt, ReceiptKind, Rpc, Seq};
use crate::Effect;

/// One receipt on its way to one sender device: (sender device, conversation, reader, kind).
pub(super) type ReceiptPushKey = (DeviceId, ConvId, DeviceId, ReceiptKind);

/// A receipt push being retried until the sender device saw it.
#[derive(Clone, Debug, Hash)]
pub(super) struct ReceiptPush {
    /// The newest mark to tell the sender device.
    pub(super) upto: Seq,
    /// Attempts so far, for the backoff and the give-up bound.
    pub(super) attempts: u32,
}

impl Shard {
    /// Tell `to` about `receipt` through its gateway; with `retry`, keep at it until the device
    /// says it saw it (or is not connected).
    pub(super) fn push_receipt(
        &mut self,
        now: Millis,
        to: DeviceId,
        receipt: Receipt,
        retry: bool,
    ) {
        let key = (to, receipt.conv, receipt.reader, receipt.kind);
        let p = self.receipt_pushes.entry(key).or_insert(ReceiptPush {
            upto: 0,
            attempts: 0,
        });
        p.upto = p.upto.max(receipt.upto);
        // Without retries this first attempt is also the last.
        p.attempts = if retry { 0 } else { PUSH_ATTEMPTS_MAX - 1 };
        self.attempt_receipt(now, key);
    }

    pub(super) fn attempt_receipt(&mut self, now: Millis, key: ReceiptPushKey) {
        let Some(p) = self.receipt_pushes.get_mut(&key) else {
            return;
        };
        if p.attempts >= PUSH_ATTEMPTS_MAX {
            self.receipt_pushes.remove(&key);
            return;
        }
        p.attempts += 1;
        let delay = Self::push_retry_delay(p.attempts);
        self.timers.set(Timer::ReceiptPush(key), now + delay);
        self.locate(now, key.0.user, Pending::LocateReceipt(key));
    }

    /// Receipts a previous life stored but may not have pushed: push them again.
    pub(super) fn sweep_receipts(
        &mut self,
        now: Millis,
        slot: u16,
        after: Option<(DeviceId, Receipt)>,
        out: &mut Vec<Effect>,
    ) {
        let req = self.request(now, Pending::ReceiptSweep { slot, after });
        let rpc = Rpc::ReadQueuedReceipts {
            req,
            shard: slot,
            shards: self.topo.shards,
            after,
        };
        out.push(Effect::Rpc { to: STORAGE, rpc });
    }
}
