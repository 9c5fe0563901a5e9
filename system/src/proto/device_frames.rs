//! The device protocol: the frames a phone or companion sends up to its gateway and the
//! frames it gets back down, including why a request was refused.

use super::{ConvId, DeviceId, GroupOp, InboxCursor, Millis, MsgId, Path, Receipt, ReceiptKind};
use super::{Message, Seq, UserId};
use serde::{Deserialize, Serialize};

/// Frames a device sends to its gateway.
#[derive(Clone, Debug, Hash, PartialEq, Eq, Serialize, Deserialize)]
pub enum Up {
    /// First frame on a connection: who I am, my token, and this connection's epoch (the
    /// device's own connection counter, so newer connections always win in the session table).
    Hello {
        /// The device claiming this connection.
        device: DeviceId,
        /// Its credential; the gateway checks it.
        token: u64,
        /// Strictly increasing per device across connections.
        epoch: u64,
    },
    /// Send a message or a group membership change (first try or a retry: the id is the
    /// same).
    Send {
        /// Target conversation.
        conv: ConvId,
        /// Client-generated id.
        id: MsgId,
        /// Payload (as bytes: see [`Message::body`](super::Message::body)).
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
        /// Client clock at compose time.
        sent_at: Millis,
        /// A membership change instead of a text (groups only).
        #[serde(default)]
        op: Option<GroupOp>,
        /// Groups: the membership version (sequence number of the last membership change) the
        /// sender sealed for. The shard refuses a stale one, since members added since could
        /// not read it (WhatsApp's participant hash does the same). 0 for direct messages.
        #[serde(default)]
        version: Seq,
        /// Groups: the sender's key sealed per recipient device (see [`Message::keys`]).
        #[serde(default, with = "super::chat::sealed_keys")]
        keys: Vec<(DeviceId, Vec<u8>)>,
    },
    /// I have stored this message: the server may delete its inbox entry.
    Ack {
        /// Conversation of the message.
        conv: ConvId,
        /// Its sequence number.
        seq: Seq,
    },
    /// Send me my next inbox page after `after`.
    Drain {
        /// Resume point; `None` starts from the beginning.
        after: Option<InboxCursor>,
    },
    /// Re-send the conversation log between `from` and `to` inclusive (gap repair).
    Fetch {
        /// Conversation with the gap.
        conv: ConvId,
        /// First missing sequence number.
        from: Seq,
        /// Last missing sequence number.
        to: Seq,
    },
    /// How far does this group's log reach? (A member asks on every connection, since a
    /// group read from its log parks nothing in inboxes.)
    Pull {
        /// The group.
        conv: ConvId,
    },
    /// A receipt from this device (the reader): retried until `ReceiptAck` says it is
    /// stored. `notify` names the devices whose messages it covers (the reader knows who sent
    /// what it showed; the server does not read bodies to find out).
    Receipt {
        /// Conversation.
        conv: ConvId,
        /// Delivered or read.
        kind: ReceiptKind,
        /// Cumulative: every owed message up to here.
        upto: Seq,
        /// Sender devices to tell.
        notify: Vec<DeviceId>,
    },
    /// A sender device got these receipts of one conversation: the server may drop its copies
    /// of them. Sent a moment after the first, with what came meanwhile (a group's sender
    /// hears from every member at about the same time).
    ReceiptSeen {
        /// Conversation.
        conv: ConvId,
        /// Each receipt seen: reader, kind and how far it reached (the newest per reader and
        /// kind).
        seen: Vec<(DeviceId, ReceiptKind, Seq)>,
    },
    /// Watch this user's presence (the chat with them is open), or stop watching (`None`).
    /// A lease: renewed while the chat stays open.
    Subscribe {
        /// Whom.
        user: Option<UserId>,
    },
    /// Heartbeat.
    Ping,
    /// This device was just linked to its user's account (a companion added mid-run): record
    /// it, so every message to its user from now on must be sealed for it too.
    Link,
}

/// Why a gateway or shard turned a request down.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// The token did not match the claimed device.
    BadToken,
    /// A frame other than `Hello` arrived before the connection was bound.
    NotAuthenticated,
    /// The device is not a member of the conversation it wrote to.
    NotMember,
    /// The conversation's queue is full; retry later.
    Busy,
    /// The group already has [`crate::limits::GROUP_MEMBERS_MAX`] members.
    GroupFull,
    /// The group's membership changed since the sender's version: catch up, seal again, retry.
    StaleMembers {
        /// The current version: the log reaches at least this far, so the phone fetches up
        /// to it instead of waiting for a push that may be slow.
        version: Seq,
    },
    /// A membership change that makes no sense (adding a member, removing a non-member,
    /// creating a group that exists, naming a user who does not exist).
    BadGroupOp,
    /// The message has no sealed copy for `device`, linked to a recipient's account since
    /// the sender last looked (Signal's "mismatched devices"): seal for it too and retry.
    StaleDevices {
        /// The device missing a copy.
        device: DeviceId,
    },
}

/// Frames a gateway sends down to a device.
#[derive(Clone, Debug, Hash, PartialEq, Eq, Serialize, Deserialize)]
pub enum Down {
    /// The connection is bound and registered: the device may drain and send.
    Welcome {
        /// Echo of the connection's epoch.
        epoch: u64,
    },
    /// A request was refused.
    Refused {
        /// Why.
        reason: Refusal,
        /// The message concerned, if any.
        id: Option<MsgId>,
    },
    /// Sent ✓: the message is durable and has this sequence number.
    Sent {
        /// Conversation.
        conv: ConvId,
        /// The device's id for it.
        id: MsgId,
        /// The assigned sequence number.
        seq: Seq,
    },
    /// A message for this device.
    Deliver {
        /// The message.
        msg: Message,
        /// How it got here.
        path: Path,
    },
    /// The end of one inbox page.
    DrainPage {
        /// Where the next page starts.
        next: Option<InboxCursor>,
        /// Whether more entries remain after this page.
        more: bool,
        /// Whether more receipts are queued than the drain handed out: drain again once these
        /// are seen (each drain hands out the first page of what is still queued).
        #[serde(default)]
        receipts_more: bool,
    },
    /// The answer to `Pull`: the group's log is durable up to `last`; the device fetches what
    /// it is missing up to there.
    Pulled {
        /// The group.
        conv: ConvId,
        /// Its last durable sequence number.
        last: Seq,
    },
    /// The link is stored: from now on every message to this user is sealed for this device.
    Linked,
    /// The reader's receipt is stored: stop retrying it.
    ReceiptAck {
        /// Conversation.
        conv: ConvId,
        /// Delivered or read.
        kind: ReceiptKind,
        /// What was stored.
        upto: Seq,
    },
    /// A receipt for messages this device sent; answer with `ReceiptSeen`.
    Receipt {
        /// The receipt.
        receipt: Receipt,
    },
    /// A watched user's presence.
    Presence {
        /// Whose.
        user: UserId,
        /// Online now.
        online: bool,
        /// When last seen, if offline (0: never).
        last_seen: Millis,
    },
    /// Heartbeat answer.
    Pong,
}

fn sane(seq: Seq) -> bool {
    seq <= crate::limits::SEQ_MAX
}

impl Up {
    /// Whether every sequence number the frame names is at most
    /// [`crate::limits::SEQ_MAX`] (the gateway drops one that is not).
    pub fn seqs_in_range(&self) -> bool {
        match self {
            Up::Send { version, .. } => sane(*version),
            Up::Ack { seq, .. } => sane(*seq),
            Up::Drain { after } => after.is_none_or(|c| sane(c.seq)),
            Up::Fetch { from, to, .. } => sane(*from) && sane(*to),
            Up::Receipt { upto, .. } => sane(*upto),
            Up::ReceiptSeen { seen, .. } => seen.iter().all(|(_, _, upto)| sane(*upto)),
            Up::Hello { .. } | Up::Pull { .. } | Up::Subscribe { .. } | Up::Ping | Up::Link => true,
        }
    }
}

impl Down {
    /// Whether every sequence number the frame names is at most
    /// [`crate::limits::SEQ_MAX`] (a phone drops one that is not).
    pub fn seqs_in_range(&self) -> bool {
        match self {
            Down::Refused {
                reason: Refusal::StaleMembers { version },
                ..
            } => sane(*version),
            Down::Sent { seq, .. } => sane(*seq),
            Down::Deliver { msg, .. } => sane(msg.seq),
            Down::DrainPage { next, .. } => next.is_none_or(|c| sane(c.seq)),
            Down::Pulled { last, .. } => sane(*last),
            Down::ReceiptAck { upto, .. } => sane(*upto),
            Down::Receipt { receipt } => sane(receipt.upto),
            Down::Welcome { .. }
            | Down::Refused { .. }
            | Down::Linked
            | Down::Presence { .. }
            | Down::Pong => true,
        }
    }
}
