//! Paged reads a storage node serves from durable state only: a conversation's log as one
//! reader may see it, a device's inbox, the receipts queued for it, and a restarted shard's
//! sweep of pending inbox entries.

use super::Storage;
use crate::proto::{ConvId, DeviceId, InboxCursor, Message, Receipt, Seq};
use crate::routing::shard_for_conv;

/// A page of a sweep: entries, where the next page starts, whether there is one.
pub(super) type PendingPage = (
    Vec<(DeviceId, Message)>,
    Option<(DeviceId, ConvId, Seq)>,
    bool,
);

impl Storage {
    /// The log between `lo` and `hi` as `device` may see it (see [`Rpc::ReadLog`]), each
    /// message with only that device's sealed key: a page of group messages with every
    /// member's keys would not fit in a frame.
    pub(super) fn read_log(
        &self,
        conv: ConvId,
        lo: Seq,
        hi: Seq,
        device: DeviceId,
    ) -> Vec<Message> {
        let reader = device.user;
        let Some(log) = self.durable.logs.get(&conv) else {
            return Vec::new();
        };
        let in_range = log.range(lo..=hi.max(lo)).map(|(_, m)| m);
        if !conv.is_group() {
            return in_range.map(|m| m.for_device(device)).collect();
        }
        if self.group_log_to_anyone {
            return in_range.map(|m| m.for_device(device)).collect();
        }
        let joins = |m: &Message| {
            m.event
                .as_ref()
                .is_some_and(|e| e.members.binary_search(&reader).is_ok())
        };
        let mut msgs: Vec<Message> = in_range
            .filter(|m| self.durable.member_at(conv, m.seq, reader) || joins(m))
            .map(|m| m.for_device(device))
            .collect();
        if !self.durable.member_at(conv, lo, reader) {
            // Where the reader's membership starts, even past `hi`: without it a new member
            // holding a later message would ask for the same empty range forever.
            let first_join = log
                .range(lo..)
                .map(|(_, m)| m)
                .find(|m| joins(m) && !self.durable.member_at(conv, m.seq, reader));
            if let Some(m) = first_join.filter(|m| m.seq > hi) {
                msgs.push(m.for_device(device));
            }
        }
        msgs
    }

    pub(super) fn read_inbox(
        &self,
        device: DeviceId,
        after: Option<InboxCursor>,
        limit: u32,
    ) -> (Vec<Message>, Option<InboxCursor>, bool) {
        let Some(inbox) = self.durable.inboxes.get(&device) else {
            return (Vec::new(), after, false);
        };
        let mut iter = inbox
            .iter()
            .filter(|(c, s)| after.is_none_or(|a| (*c, *s) > (a.conv, a.seq)));
        let mut page = Vec::new();
        let mut next = after;
        for (conv, seq) in iter.by_ref().take(limit as usize) {
            let msg = self.durable.logs.get(conv).and_then(|l| l.get(seq));
            let msg = msg.expect("an inbox entry is only written together with its log entry");
            page.push(msg.for_device(device));
            next = Some(InboxCursor {
                conv: *conv,
                seq: *seq,
            });
        }
        let more = iter.next().is_some();
        (page, next, more)
    }

    /// The receipts queued for `device`, up to a page of them, and whether more remain.
    pub(super) fn queued_receipts(&self, device: DeviceId) -> (Vec<Receipt>, bool) {
        let Some(queued) = self.durable.receipt_inbox.get(&device) else {
            return (Vec::new(), false);
        };
        let max = self.knobs.receipts_page_entries_max;
        let page = queued
            .iter()
            .take(max)
            .map(|(&(conv, reader, kind), &upto)| Receipt {
                conv,
                reader,
                kind,
                upto,
            })
            .collect();
        (page, queued.len() > max)
    }

    /// Inbox entries whose conversation `shard` owns, after `after`. A full scan: it runs once
    /// per shard restart, never on the message path.
    pub(super) fn read_pending(
        &self,
        shard: u16,
        shards: u16,
        after: Option<(DeviceId, ConvId, Seq)>,
        limit: u32,
    ) -> PendingPage {
        let mut iter = self
            .durable
            .inboxes
            .iter()
            .flat_map(|(d, entries)| entries.iter().map(move |(c, s)| (*d, *c, *s)))
            .filter(|k| after.is_none_or(|a| *k > a) && shard_for_conv(k.1, shards) == shard);
        let mut page = Vec::new();
        let mut next = after;
        for (device, conv, seq) in iter.by_ref().take(limit as usize) {
            let msg = self.durable.logs.get(&conv).and_then(|l| l.get(&seq));
            let msg = msg.expect("an inbox entry is only written together with its log entry");
            page.push((device, msg.for_device(device)));
            next = Some((device, conv, seq));
        }
        let more = iter.next().is_some();
        (page, next, more)
    }
}
