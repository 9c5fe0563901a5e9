//! Storage's durable changes: every operation a storage node applies and keeps (and, with
//! replicas, ships to them in one order), with the ids and term spans that order them.

use super::{ConvId, DeviceId, Message, Millis, Receipt, Seq};
use serde::{Deserialize, Serialize};

/// One durable change to storage. The storage node applies these to its state and, once
/// synced, hands them to the engine to keep outside the node (a crash keeps only those).
#[derive(Clone, Debug, Hash, PartialEq, Eq, Serialize, Deserialize)]
pub enum StorageOp {
    /// Append a message to its conversation log and park a copy in each recipient's inbox
    /// (direct), or queue its fan-out (group).
    Append {
        /// The message, with its sequence number.
        msg: Message,
        /// Devices that get an inbox entry now, with the append.
        recipients: Vec<DeviceId>,
        /// Devices the group fan-out will reach, in order: a durable job the shard works
        /// through after answering ✓.
        #[serde(default)]
        fanout: Vec<DeviceId>,
        /// Whether the job parks inbox entries (false: the group is read from its log).
        #[serde(default = "yes")]
        park: bool,
    },
    /// One step of a group fan-out: park inbox entries for `devices` and move the job's cursor
    /// to `next` (the job is gone once `next` reaches its end).
    FanoutStep {
        /// Conversation.
        conv: ConvId,
        /// Sequence number of the message being fanned out.
        seq: Seq,
        /// The devices of this step.
        devices: Vec<DeviceId>,
        /// The job's cursor after this step.
        next: u32,
        /// False for a group read from its log: the step only moves the cursor (its devices
        /// get pushes, and pull what they miss).
        #[serde(default = "yes")]
        park: bool,
    },
    /// A receipt: keep the reader's mark (it only moves forward) and queue it for each sender
    /// device to be told, one entry per (conversation, reader, kind) so repeats coalesce.
    Receipt {
        /// The receipt.
        receipt: Receipt,
        /// Sender devices that get it.
        notify: Vec<DeviceId>,
    },
    /// A sender device has this receipt: drop its queued copy unless a newer one replaced it.
    DeleteReceipt {
        /// The sender device.
        device: DeviceId,
        /// The receipt it saw.
        receipt: Receipt,
    },
    /// A slot's lease was granted or renewed.
    Lease {
        /// The slot.
        slot: u16,
        /// The shard host holding it.
        owner: u16,
        /// Its epoch.
        epoch: u64,
        /// When it runs out unless renewed (storage's clock).
        until: Millis,
    },
    /// A device acked a message: drop its inbox entry.
    DeleteInbox {
        /// Whose inbox.
        device: DeviceId,
        /// Conversation of the entry.
        conv: ConvId,
        /// Sequence number of the entry.
        seq: Seq,
    },
    /// A device was linked to its user's account: appends to its user must carry a copy for
    /// it from now on.
    Link {
        /// The device.
        device: DeviceId,
    },
    /// A storage coordinator began its term (replicated storage; changes nothing else). Kept
    /// on a quorum before the coordinator writes anything, so the next one's read sees it and
    /// picks a higher term.
    Term {
        /// The term.
        term: u64,
        /// The operations of earlier terms its view was rebuilt from. Any other operation of
        /// an earlier term was never served (everything served is on a majority, and so in
        /// every majority read): a later rebuild that meets one, synced on a replica it did
        /// not read this time, leaves it out.
        #[serde(default)]
        live: Vec<TermSpan>,
    },
}

impl StorageOp {
    /// Whether a full disk refuses it: it adds data (a message, inbox entries, a queued
    /// receipt, a device), where deletes, leases and terms free or overwrite space.
    pub fn grows(&self) -> bool {
        matches!(
            self,
            StorageOp::Append { .. }
                | StorageOp::FanoutStep { .. }
                | StorageOp::Receipt { .. }
                | StorageOp::Link { .. }
        )
    }

    /// About how many bytes this takes on the wire: what pages of replicated operations are
    /// cut by (a group text carries a sealed key per member device).
    pub fn approx_bytes(&self) -> usize {
        const ENTRY: usize = 16;
        64 + match self {
            StorageOp::Append {
                msg,
                recipients,
                fanout,
                ..
            } => {
                msg.body.len()
                    + msg.keys.iter().map(|k| k.1.len() + ENTRY).sum::<usize>()
                    + (recipients.len() + fanout.len()) * ENTRY
            }
            StorageOp::FanoutStep { devices, .. }
            | StorageOp::Receipt {
                notify: devices, ..
            } => devices.len() * ENTRY,
            _ => 0,
        }
    }
}

/// Which operations of one term a rebuild kept: counters `0..=upto` except `holes`.
#[derive(Clone, Debug, Hash, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermSpan {
    /// The term.
    pub term: u64,
    /// Its highest counter kept.
    pub upto: u64,
    /// Counters below `upto` not kept.
    pub holes: Vec<u64>,
}

impl TermSpan {
    /// The spans covering `ids` (in order).
    pub fn cover(ids: impl IntoIterator<Item = OpId>) -> Vec<TermSpan> {
        let mut spans: Vec<TermSpan> = Vec::new();
        for id in ids {
            match spans.last_mut() {
                Some(s) if s.term == id.term => {
                    s.holes.extend(s.upto + 1..id.n);
                    s.upto = id.n;
                }
                _ => spans.push(TermSpan {
                    term: id.term,
                    upto: id.n,
                    holes: (0..id.n).collect(),
                }),
            }
        }
        spans
    }

    /// Whether `spans` keep `id`.
    pub fn keeps(spans: &[TermSpan], id: OpId) -> bool {
        spans
            .iter()
            .find(|s| s.term == id.term)
            .is_some_and(|s| id.n <= s.upto && s.holes.binary_search(&id.n).is_err())
    }
}

/// A replicated storage operation's place in the one order every replica applies them in:
/// the coordinator's term, then its counter within the term.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct OpId {
    /// The coordinator's term (each life of the coordinator has a higher one).
    pub term: u64,
    /// Counter within the term.
    pub n: u64,
}

fn yes() -> bool {
    true
}
