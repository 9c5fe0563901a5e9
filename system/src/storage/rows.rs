//! A storage node's durable state as the design lays it out in tables, for a store on a real
//! disk: messages partitioned by conversation and clustered by sequence number, one row each;
//! each device's inbox queue, one row per entry in (conversation, seq) order; and the rest
//! (fan-out jobs, receipt marks and queues, leases, linked devices) as one small record.
//! What can be derived from those rows (where each message id sits, group membership history,
//! the relay model's outstanding counts) is derived on load, not stored twice. A store keeps
//! the tables in step with [`StorageState::fold_into`], which diffs only the conversations and
//! devices [`touched`] names.

use super::state::StorageState;
use crate::proto::{ConvId, DeviceId, Message, Millis, ReceiptKind, Seq, StorageOp};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One row of the two big tables that differs between two states.
#[derive(Debug, Hash, PartialEq, Eq)]
pub enum RowChange<'a> {
    /// Message `seq` of conversation `conv` is now this (`None`: gone).
    Message(ConvId, Seq, Option<&'a Message>),
    /// Device `device`'s inbox entry for (`conv`, `seq`) is now present (true) or not.
    Inbox(DeviceId, ConvId, Seq, bool),
}

/// Everything of a storage node's state but its messages and inbox entries.
#[derive(Clone, Debug, Hash, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageRest {
    fanouts: BTreeMap<(ConvId, Seq), (Vec<DeviceId>, u32, bool)>,
    marks: BTreeMap<(ConvId, DeviceId, ReceiptKind), Seq>,
    receipt_inbox: BTreeMap<DeviceId, BTreeMap<(ConvId, DeviceId, ReceiptKind), Seq>>,
    leases: BTreeMap<u16, (u16, u64, Millis)>,
    linked: BTreeSet<DeviceId>,
    parked: u64,
    relay: bool,
}

/// The rows of the two big tables as a store last wrote them: what its next folding diffs
/// against, one conversation or device at a time.
#[derive(Clone, Debug, Hash, Default, PartialEq, Eq)]
pub struct TableRows {
    logs: BTreeMap<ConvId, BTreeMap<Seq, Message>>,
    inboxes: BTreeMap<DeviceId, BTreeSet<(ConvId, Seq)>>,
}

/// The conversations and devices whose rows an operation may change: every one it names.
/// (Its other effects are on the rest of the state.)
pub fn touched(op: &StorageOp, convs: &mut BTreeSet<ConvId>, devices: &mut BTreeSet<DeviceId>) {
    match op {
        StorageOp::Append {
            msg, recipients, ..
        } => {
            convs.insert(msg.conv);
            devices.extend(recipients.iter().copied());
        }
        StorageOp::FanoutStep {
            conv, devices: d, ..
        } => {
            convs.insert(*conv);
            devices.extend(d.iter().copied());
        }
        // A delivered mark takes the reader's entries up to it (and, relayed, their bodies).
        StorageOp::Receipt { receipt, .. } => {
            convs.insert(receipt.conv);
            devices.insert(receipt.reader);
        }
        StorageOp::DeleteInbox { device, conv, .. } => {
            convs.insert(*conv);
            devices.insert(*device);
        }
        StorageOp::DeleteReceipt { .. }
        | StorageOp::Lease { .. }
        | StorageOp::Link { .. }
        | StorageOp::Term { .. } => {}
    }
}

impl StorageState {
    /// Every row of the two big tables.
    pub fn table_rows(&self) -> TableRows {
        TableRows {
            logs: self.logs.clone(),
            inboxes: self.inboxes.clone(),
        }
    }

    /// Hand `out` every row of conversations `convs` and devices `devices` that differs
    /// between `rows` and this state, and bring `rows` up to date for them: the work is that of
    /// the conversations and devices named, not of the whole state.
    pub fn fold_into(
        &self,
        rows: &mut TableRows,
        convs: &BTreeSet<ConvId>,
        devices: &BTreeSet<DeviceId>,
        mut out: impl FnMut(RowChange<'_>),
    ) {
        let empty = BTreeMap::new();
        for conv in convs {
            let new = self.logs.get(conv).unwrap_or(&empty);
            let old = rows.logs.get(conv).unwrap_or(&empty);
            for (seq, m) in new {
                if old.get(seq) != Some(m) {
                    out(RowChange::Message(*conv, *seq, Some(m)));
                }
            }
            for seq in old.keys().filter(|s| !new.contains_key(s)) {
                out(RowChange::Message(*conv, *seq, None));
            }
            match self.logs.get(conv) {
                Some(log) => rows.logs.insert(*conv, log.clone()),
                None => rows.logs.remove(conv),
            };
        }
        let none = BTreeSet::new();
        for d in devices {
            let new = self.inboxes.get(d).unwrap_or(&none);
            let old = rows.inboxes.get(d).unwrap_or(&none);
            for &(c, s) in new.difference(old) {
                out(RowChange::Inbox(*d, c, s, true));
            }
            for &(c, s) in old.difference(new) {
                out(RowChange::Inbox(*d, c, s, false));
            }
            match self.inboxes.get(d) {
                Some(set) => rows.inboxes.insert(*d, set.clone()),
                None => rows.inboxes.remove(d),
            };
        }
    }

    /// The rest of the state, as one record.
    pub fn rest(&self) -> StorageRest {
        StorageRest {
            fanouts: self.fanouts.clone(),
            marks: self.marks.clone(),
            receipt_inbox: self.receipt_inbox.clone(),
            leases: self.leases.clone(),
            linked: self.linked.clone(),
            parked: self.parked,
            relay: self.relay,
        }
    }

    /// The state the rows describe: `messages` and `inbox` in any order.
    pub fn from_rows(
        messages: impl IntoIterator<Item = Message>,
        inbox: impl IntoIterator<Item = (DeviceId, ConvId, Seq)>,
        rest: StorageRest,
    ) -> StorageState {
        let mut s = StorageState {
            fanouts: rest.fanouts,
            marks: rest.marks,
            receipt_inbox: rest.receipt_inbox,
            leases: rest.leases,
            linked: rest.linked,
            parked: rest.parked,
            relay: rest.relay,
            ..StorageState::default()
        };
        for m in messages {
            s.ids.insert(m.id, (m.conv, m.seq));
            s.logs.entry(m.conv).or_default().insert(m.seq, m);
        }
        // Membership history in sequence order, as appends made it.
        for (conv, log) in &s.logs {
            for (seq, m) in log {
                if let Some(e) = &m.event {
                    s.groups
                        .entry(*conv)
                        .or_default()
                        .push((*seq, e.members.clone()));
                }
            }
        }
        for (d, c, q) in inbox {
            if s.inboxes.entry(d).or_default().insert((c, q)) && s.relay {
                *s.outstanding.entry((c, q)).or_default() += 1;
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{GroupEvent, GroupOp, MsgId, Receipt, UserId};
    use crate::StorageModel;

    fn dev(u: u32) -> DeviceId {
        DeviceId::primary(UserId(u))
    }

    fn msg(conv: ConvId, seq: Seq, from: u32, n: u32, event: Option<GroupEvent>) -> Message {
        Message {
            conv,
            seq,
            id: MsgId {
                device: dev(from),
                n,
            },
            body: if event.is_some() {
                Vec::new()
            } else {
                vec![7; 5]
            },
            sent_at: seq * 10,
            event,
            keys: Vec::new(),
        }
    }

    /// Every kind of operation, on both storage models: after each one, the rows give back
    /// the state exactly, and the changes since the previous state, applied to its rows, give
    /// the new rows.
    #[test]
    fn the_rows_give_back_the_state_after_every_kind_of_operation() {
        let direct = ConvId::direct(UserId(0), UserId(1));
        let group = ConvId::group(1);
        let members = vec![UserId(0), UserId(1), UserId(2)];
        let ops = vec![
            StorageOp::Lease {
                slot: 3,
                owner: 1,
                epoch: 2,
                until: 900,
            },
            StorageOp::Append {
                msg: msg(direct, 1, 0, 0, None),
                recipients: vec![dev(1)],
                fanout: Vec::new(),
                park: true,
            },
            StorageOp::Append {
                msg: msg(
                    group,
                    1,
                    0,
                    1,
                    Some(GroupEvent {
                        op: GroupOp::Create {
                            members: members.clone(),
                        },
                        members: members.clone(),
                    }),
                ),
                recipients: Vec::new(),
                fanout: vec![dev(1), dev(2)],
                park: true,
            },
            StorageOp::FanoutStep {
                conv: group,
                seq: 1,
                devices: vec![dev(1)],
                next: 1,
                park: true,
            },
            StorageOp::Append {
                msg: msg(group, 2, 1, 0, None),
                recipients: vec![dev(0), dev(2)],
                fanout: Vec::new(),
                park: true,
            },
            StorageOp::FanoutStep {
                conv: group,
                seq: 1,
                devices: vec![dev(2)],
                next: 2,
                park: true,
            },
            StorageOp::Receipt {
                receipt: Receipt {
                    conv: direct,
                    reader: dev(1),
                    kind: ReceiptKind::Delivered,
                    upto: 1,
                },
                notify: vec![dev(0)],
            },
            StorageOp::DeleteInbox {
                device: dev(0),
                conv: group,
                seq: 2,
            },
            StorageOp::DeleteInbox {
                device: dev(2),
                conv: group,
                seq: 2,
            },
            StorageOp::DeleteReceipt {
                device: dev(0),
                receipt: Receipt {
                    conv: direct,
                    reader: dev(1),
                    kind: ReceiptKind::Delivered,
                    upto: 1,
                },
            },
            StorageOp::Link {
                device: DeviceId {
                    user: UserId(2),
                    index: 1,
                },
            },
        ];
        for model in [StorageModel::History, StorageModel::Relay] {
            let mut state = StorageState::new(model);
            let mut folded = TableRows::default();
            for op in &ops {
                state.apply(op);
                // Folding only what the operation names reaches the same rows as a full copy.
                let (mut convs, mut devices) = (BTreeSet::new(), BTreeSet::new());
                touched(op, &mut convs, &mut devices);
                state.fold_into(&mut folded, &convs, &devices, |_| {});
                assert_eq!(
                    folded,
                    state.table_rows(),
                    "{model:?}: {op:?} touches more than it names"
                );
                // And the rows give back the state.
                let back = StorageState::from_rows(
                    folded.logs.values().flat_map(BTreeMap::values).cloned(),
                    folded
                        .inboxes
                        .iter()
                        .flat_map(|(d, set)| set.iter().map(move |&(c, s)| (*d, c, s))),
                    state.rest(),
                );
                assert_eq!(back, state, "{model:?} after {op:?}");
            }
            // The relay model dropped both texts' bodies once their entries were taken (the
            // direct one by the reader's delivered receipt), and the rows saw it.
            let bodies = state.bodies_kept();
            let kept = if model == StorageModel::Relay { 0 } else { 2 };
            assert_eq!(bodies, kept, "{model:?}");
        }
    }
}
