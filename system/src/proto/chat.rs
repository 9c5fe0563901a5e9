//! What a conversation holds and its members exchange about it: messages, group membership
//! changes, receipts, and the cursor of an inbox drain. Device frames, server messages and
//! storage operations all carry these, so they live apart from each.

use super::{ConvId, DeviceId, Millis, MsgId, Seq, UserId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A change to a group's membership, as a member asks for it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupOp {
    /// Create the group with these members (the creator is added if missing).
    Create {
        /// The first members.
        members: Vec<UserId>,
    },
    /// Add a user.
    Add {
        /// Who.
        user: UserId,
    },
    /// Remove a user (a member removing themselves leaves).
    Remove {
        /// Who.
        user: UserId,
    },
}

impl GroupOp {
    /// The line a device shows for this change, made unique by the change's id (the checkers
    /// tell messages apart by sender and text, and the same member may be added twice).
    pub fn describe(&self, id: MsgId) -> String {
        match self {
            GroupOp::Create { members } => {
                format!("{id}: creates the group with {} others", members.len())
            }
            GroupOp::Add { user } => format!("{id}: adds {user}"),
            GroupOp::Remove { user } => format!("{id}: removes {user}"),
        }
    }
}

/// A membership change as the log stores it: the op and the member list after it. Membership
/// is routing metadata, so servers see it (as WhatsApp's servers do); message bodies stay
/// sealed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEvent {
    /// What changed.
    pub op: GroupOp,
    /// Every member after the change, sorted.
    pub members: Vec<UserId>,
}

/// A stored and delivered chat message. `body` is opaque bytes to every server.
#[derive(Clone, Debug, Hash, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// The conversation it belongs to.
    pub conv: ConvId,
    /// Its place in the conversation.
    pub seq: Seq,
    /// The sender's id for it; the sender device is `id.device`.
    pub id: MsgId,
    /// The payload: sealed per device (direct) or under the sender's key (group). As bytes, not
    /// a sequence: postcard writes it the same, but in one copy instead of byte by byte.
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// The sender's clock when composed: shown to users, never used for ordering.
    pub sent_at: Millis,
    /// Set when this entry is a group membership change instead of a text.
    #[serde(default)]
    pub event: Option<GroupEvent>,
    /// The sender's group key, sealed once per recipient device (only on the first message
    /// after a membership change). Servers hand each device its own entry and nobody else's,
    /// as WhatsApp's servers split a stanza's per-device parts.
    #[serde(default, with = "sealed_keys")]
    pub keys: Vec<(DeviceId, Vec<u8>)>,
}

/// Sealed keys on the wire: each device with its key as a byte string, which postcard writes
/// as it writes a `Vec<u8>` (a varint length and the bytes) but in one copy, not byte by byte.
/// A group's first message after a change carries one per member device: hundreds of keys.
pub(crate) mod sealed_keys {
    use super::DeviceId;
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(keys: &[(DeviceId, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(keys.len()))?;
        for (device, key) in keys {
            seq.serialize_element(&(device, serde_bytes::Bytes::new(key)))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Vec<(DeviceId, Vec<u8>)>, D::Error> {
        let keys: Vec<(DeviceId, serde_bytes::ByteBuf)> = Deserialize::deserialize(d)?;
        Ok(keys
            .into_iter()
            .map(|(device, key)| (device, key.into_vec()))
            .collect())
    }
}

impl Message {
    /// This message as `device` receives it: only its own sealed key, if any.
    pub fn for_device(&self, device: DeviceId) -> Message {
        // Field by field: cloning the whole message first copied every member's sealed key
        // for each member, quadratic in a big group's fan-out.
        let Message {
            conv,
            seq,
            id,
            body,
            sent_at,
            event,
            keys,
        } = self;
        Message {
            conv: *conv,
            seq: *seq,
            id: *id,
            body: body.clone(),
            sent_at: *sent_at,
            event: event.clone(),
            keys: keys.iter().filter(|(d, _)| *d == device).cloned().collect(),
        }
    }
}

/// How a message reached a device: the checkers and reports split latency by path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Path {
    /// Pushed over the live connection right after it was stored.
    Live,
    /// Drained from the device's offline inbox.
    Inbox,
    /// Fetched from the conversation log to repair a gap.
    Fetch,
}

/// Which receipt: the recipient device has the message (✓✓), or its user has read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ReceiptKind {
    /// Delivered: the device stored and showed the message.
    Delivered,
    /// Read: the user looked at it (the conversation was open on that device).
    Read,
}

/// A receipt as it travels to a sender device: `reader` has every message of `conv` it is
/// owed up to `upto`, delivered or read. Cumulative, as XMPP stream management counts
/// stanzas: a later receipt covers an earlier lost one, so retries and coalescing are safe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Receipt {
    /// Conversation.
    pub conv: ConvId,
    /// The device that has (or whose user read) the messages.
    pub reader: DeviceId,
    /// Delivered or read.
    pub kind: ReceiptKind,
    /// Every message owed to `reader` up to this sequence number.
    pub upto: Seq,
}

/// Where an inbox drain resumes: entries are ordered by (conversation, sequence).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InboxCursor {
    /// Conversation of the last entry handed out.
    pub conv: ConvId,
    /// Sequence number of the last entry handed out.
    pub seq: Seq,
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Path::Live => "live",
            Path::Inbox => "inbox",
            Path::Fetch => "fetch",
        })
    }
}
