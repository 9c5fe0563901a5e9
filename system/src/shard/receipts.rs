//! Receipt pushes: a stored receipt is pushed to each sender device it names, retried until
//! that device says it saw it (or is not connected: storage queues a copy for its next drain).

use super::{Pending, Shard, Timer, STORAGE};
use crate::limits::PUSH_ATTEMPTS_MAX;
use crate::proto::{ConvId, DeviceId, Down, Millis, Receipt, ReceiptKind, Rpc, Seq};
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
    /// The latest attempt went to the device's last gateway without a lookup.
    pub(super) hinted: bool,
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
        out: &mut Vec<Effect>,
    ) {
        let key = (to, receipt.conv, receipt.reader, receipt.kind);
        let p = self.receipt_pushes.entry(key).or_insert(ReceiptPush {
            upto: 0,
            attempts: 0,
            hinted: false,
        });
        p.upto = p.upto.max(receipt.upto);
        // Without retries this first attempt is also the last.
        p.attempts = if retry { 0 } else { PUSH_ATTEMPTS_MAX - 1 };
        self.attempt_receipt(now, key, out);
    }

    pub(super) fn attempt_receipt(
        &mut self,
        now: Millis,
        key: ReceiptPushKey,
        out: &mut Vec<Effect>,
    ) {
        let Some(p) = self.receipt_pushes.get_mut(&key) else {
            return;
        };
        if p.attempts >= PUSH_ATTEMPTS_MAX {
            self.receipt_pushes.remove(&key);
            return;
        }
        p.attempts += 1;
        let first = p.attempts == 1;
        let delay = Self::push_retry_delay(p.attempts);
        self.timers.set(Timer::ReceiptPush(key), now + delay);
        // A retry always asks: the device may have moved since its frame.
        let hinted = if first { self.hint(now, key.0) } else { None };
        let p = self
            .receipt_pushes
            .get_mut(&key)
            .expect("looked up above, and nothing since removes it");
        p.hinted = hinted.is_some();
        match hinted {
            Some(gateway) => Self::send_receipt(key, p, gateway, out),
            None => self.locate(now, key.0.user, Pending::LocateReceipt(key)),
        }
    }

    /// Push the newest mark of `key` to its sender device at `gateway`.
    pub(super) fn send_receipt(
        key: ReceiptPushKey,
        p: &ReceiptPush,
        gateway: u16,
        out: &mut Vec<Effect>,
    ) {
        let receipt = Receipt {
            conv: key.1,
            reader: key.2,
            kind: key.3,
            upto: p.upto,
        };
        Self::to_device(key.0, gateway, Down::Receipt { receipt }, out);
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
