//! Server-to-server messages: what gateways, the session service, shards, storage nodes,
//! replicas and the push provider say to each other, and the envelope naming the sender.

use super::{
    ConvId, DeviceId, Down, Host, InboxCursor, Message, Millis, MsgId, OpId, Receipt, ReceiptKind,
    Seq,
};
use super::{StorageOp, Up, UserId};
use serde::{Deserialize, Serialize};

/// A slot's lease as storage holds it: the conversations hashed to shard number `slot` are
/// owned by shard host `owner` under `epoch` (storage refuses writes under older epochs).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    /// The slot.
    pub slot: u16,
    /// The shard host holding it.
    pub owner: u16,
    /// Its epoch: raised on every takeover.
    pub epoch: u64,
    /// False once the lease ran out unrenewed: any shard may take the slot over.
    pub live: bool,
}

/// A push that found its device gone from the gateway it was sent to (see [`Rpc::NotHere`]).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, Serialize, Deserialize)]
pub enum Missed {
    /// A live message: its conversation and number.
    Deliver(ConvId, Seq),
    /// A receipt for the device's texts: conversation, reader and kind.
    Receipt(ConvId, DeviceId, ReceiptKind),
}

/// Messages between servers. The sender is carried beside each (see [`Envelope`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rpc {
    /// Gateway -> session: this device is connected to me with this epoch.
    Register {
        /// The device.
        device: DeviceId,
        /// Its connection epoch.
        epoch: u64,
        /// The gateway's clock when it sent this, which its `Alive`s are ordered against.
        at: Millis,
    },
    /// Session -> gateway: the answer to `Register`.
    Registered {
        /// The device.
        device: DeviceId,
        /// The epoch that was registered.
        epoch: u64,
        /// False when the table already holds a newer epoch: this connection is stale.
        current: bool,
    },
    /// Gateway -> session: the connection with this epoch is gone.
    Unregister {
        /// The device.
        device: DeviceId,
        /// Only an entry with this epoch is removed.
        epoch: u64,
    },
    /// Gateway -> session: this device watches `user`'s presence (`None`: nobody).
    Subscribe {
        /// The device, as authenticated by the gateway.
        device: DeviceId,
        /// Whom it watches.
        user: Option<UserId>,
    },
    /// Shard -> push provider: wake this device (it is not connected).
    Notify {
        /// The device.
        device: DeviceId,
    },
    /// Push provider -> device (through the OS, not the chat network): something is waiting.
    Wake,
    /// Gateway -> session: every device bound to me, with its connection epoch. Entries of
    /// mine not listed are stale (a lost `Unregister`, or a life of mine that crashed).
    Alive {
        /// (device, epoch) of each connection bound here.
        devices: Vec<(DeviceId, u64)>,
        /// The gateway's clock when it listed them: an entry it asked to register later is
        /// not its to judge (the two can arrive in either order over a replaced link).
        at: Millis,
    },
    /// Shard -> session: where are these users' devices? One frame carries every question a
    /// shard's input raised (a group fan-out step asks for up to a page of members at once).
    Lookup {
        /// Each question: the id that matches its answer, and the user.
        asks: Vec<(u64, UserId)>,
    },
    /// Session -> shard: the answers to one `Lookup`, in its order.
    Located {
        /// Each question's id, with every connected device of its user and their gateways.
        answers: Vec<(u64, Vec<(DeviceId, u16)>)>,
    },
    /// Gateway -> shard: a frame from an authenticated device.
    FromDevice {
        /// The device, as authenticated by the gateway (never as claimed in the frame).
        device: DeviceId,
        /// The frame.
        up: Up,
    },
    /// Shard -> gateway: pass this down to the device if it is connected to you.
    ToDevice {
        /// Target device.
        device: DeviceId,
        /// The frame.
        down: Down,
    },
    /// Gateway -> shard: a push for a device not connected here (gone, or moved to another
    /// gateway since its last frame came through here): the shard asks where it is now
    /// rather than wait out its retry.
    NotHere {
        /// The device.
        device: DeviceId,
        /// What missed it.
        missed: Missed,
    },
    /// Shard -> storage: what is the last sequence number of this conversation?
    LoadConv {
        /// The conversation.
        conv: ConvId,
    },
    /// Storage -> shard: answer to `LoadConv`.
    ConvLoaded {
        /// The conversation.
        conv: ConvId,
        /// Its last durable sequence number (0 when empty).
        last_seq: Seq,
        /// Groups: the current membership version and members (`None`: no such group).
        members: Option<(Seq, Vec<UserId>)>,
    },
    /// Shard -> storage: renew these leases and try to take these slots over; answered
    /// (once durable) with the whole lease table.
    Lease {
        /// The asking shard host.
        shard: u16,
        /// (slot, epoch) held and renewed.
        renew: Vec<(u16, u64)>,
        /// Slots to take over: granted if unheld (home slot only), expired, or held by this
        /// same host in an earlier life.
        acquire: Vec<u16>,
    },
    /// Storage -> shard: every slot's lease.
    LeaseTable {
        /// One per slot that has ever been held.
        leases: Vec<LeaseView>,
    },
    /// Shard -> gateway: I own `slot` under `epoch`; route its frames to me (the highest epoch
    /// heard wins).
    Owner {
        /// The slot.
        slot: u16,
        /// The owner's epoch.
        epoch: u64,
    },
    /// Storage -> shard: a write under a stale epoch was refused; the slot has a newer owner.
    Fenced {
        /// The slot.
        slot: u16,
        /// The current epoch.
        epoch: u64,
    },
    /// Shard -> storage: append this message (seq must be the next one) and park inbox copies
    /// or queue the group fan-out.
    Append {
        /// (slot, epoch) the writer holds: storage refuses a stale one.
        fence: (u16, u64),
        /// The message, with the sequence number the shard chose.
        msg: Message,
        /// Devices that get an inbox entry with the append.
        recipients: Vec<DeviceId>,
        /// Devices for the durable fan-out job (groups).
        fanout: Vec<DeviceId>,
        /// Whether that job parks inbox entries (false: the group is read from its log).
        park: bool,
    },
    /// Shard -> storage: one fan-out step (see [`StorageOp::FanoutStep`]).
    FanoutStep {
        /// (slot, epoch) the writer holds: storage refuses a stale one.
        fence: (u16, u64),
        /// Conversation.
        conv: ConvId,
        /// Sequence number.
        seq: Seq,
        /// Index of this step's first device in the job.
        from: u32,
        /// This step's devices.
        devices: Vec<DeviceId>,
        /// Whether to park their inbox entries.
        park: bool,
    },
    /// Storage -> shard: the step is durable; the job's cursor is now `next`.
    FanoutStepped {
        /// Conversation.
        conv: ConvId,
        /// Sequence number.
        seq: Seq,
        /// The job's cursor.
        next: u32,
    },
    /// Shard -> storage: unfinished fan-out jobs of conversations this shard owns (after a
    /// restart, or of one conversation after a duplicate append).
    ReadFanouts {
        /// Matches the answer.
        req: u64,
        /// The asking shard.
        shard: u16,
        /// How many shards own conversations.
        shards: u16,
        /// Only this conversation, if set.
        conv: Option<ConvId>,
        /// Start after this job.
        after: Option<(ConvId, Seq)>,
    },
    /// Storage -> shard: a page of unfinished jobs.
    Fanouts {
        /// The question's `req`.
        req: u64,
        /// Each job: the message, its devices, the cursor, and whether it parks.
        jobs: Vec<(Message, Vec<DeviceId>, u32, bool)>,
        /// The last job in this page, where the next starts.
        next: Option<(ConvId, Seq)>,
        /// Whether jobs remain after this page.
        more: bool,
    },
    /// Shard -> storage: is this message id stored, and where? (Asked before refusing a group
    /// send, which may be a retry of one already stored.) Answered once durable.
    FindMsg {
        /// Conversation.
        conv: ConvId,
        /// The id.
        id: MsgId,
    },
    /// Storage -> shard: the answer to `FindMsg`.
    MsgFound {
        /// Conversation.
        conv: ConvId,
        /// The id.
        id: MsgId,
        /// Its sequence number, if it is stored.
        seq: Option<Seq>,
    },
    /// Storage -> shard: the append is durable (or was already: `duplicate`).
    Appended {
        /// Conversation.
        conv: ConvId,
        /// The message id.
        id: MsgId,
        /// The sequence number it holds in the log.
        seq: Seq,
        /// True when this id was already in the log (a retry).
        duplicate: bool,
    },
    /// Storage -> shard: the append's sequence number was not the next one.
    AppendConflict {
        /// Conversation.
        conv: ConvId,
        /// The message id of the refused append.
        id: MsgId,
        /// The log's actual last sequence number (durable or pending).
        last_seq: Seq,
    },
    /// Shard -> storage: read a page of a device's inbox.
    ReadInbox {
        /// Matches the answer.
        req: u64,
        /// Whose inbox.
        device: DeviceId,
        /// Start after this entry.
        after: Option<InboxCursor>,
        /// Page size.
        limit: u32,
    },
    /// Storage -> shard: an inbox page.
    InboxPage {
        /// The question's `req`.
        req: u64,
        /// Entries in (conversation, seq) order.
        entries: Vec<Message>,
        /// Receipts waiting for this device (on the first page only).
        #[serde(default)]
        receipts: Vec<Receipt>,
        /// Whether more receipts are queued than `receipts` holds.
        #[serde(default)]
        receipts_more: bool,
        /// Where the next page starts.
        next: Option<InboxCursor>,
        /// Whether entries remain after this page.
        more: bool,
    },
    /// Shard -> storage: store a receipt (see [`StorageOp::Receipt`]); answered once durable.
    PutReceipt {
        /// The writer's (slot, epoch): refused from a shard whose slot was taken over, whose
        /// stored receipt the new owner's sweep (already done) would never push.
        fence: (u16, u64),
        /// The receipt.
        receipt: Receipt,
        /// Sender devices to tell.
        notify: Vec<DeviceId>,
        /// The gateway the reader came through, echoed back for its `ReceiptAck`.
        via: u16,
    },
    /// Storage -> shard: the receipt is durable.
    ReceiptStored {
        /// The receipt.
        receipt: Receipt,
        /// Sender devices to tell.
        notify: Vec<DeviceId>,
        /// The reader's gateway.
        via: u16,
    },
    /// Shard -> storage (after a shard restart): receipts queued for sender devices in
    /// conversations this shard owns, so it can push them again.
    ReadQueuedReceipts {
        /// Matches the answer.
        req: u64,
        /// The asking shard.
        shard: u16,
        /// How many shards own conversations.
        shards: u16,
        /// Start after this (sender device, receipt).
        after: Option<(DeviceId, Receipt)>,
    },
    /// Storage -> shard: a page of queued receipts.
    QueuedReceipts {
        /// The question's `req`.
        req: u64,
        /// Each sender device with a receipt for it.
        receipts: Vec<(DeviceId, Receipt)>,
        /// Where the next page starts.
        next: Option<(DeviceId, Receipt)>,
        /// Whether more remain.
        more: bool,
    },
    /// Shard -> storage: a sender device saw these receipts. No answer.
    ReceiptSeen {
        /// The sender device.
        device: DeviceId,
        /// The receipts.
        receipts: Vec<Receipt>,
    },
    /// Shard -> storage: delete one inbox entry (the device acked it). No answer.
    DeleteInbox {
        /// Whose inbox.
        device: DeviceId,
        /// Conversation.
        conv: ConvId,
        /// Sequence number.
        seq: Seq,
    },
    /// Shard -> storage (after a shard restart): inbox entries of conversations this shard
    /// owns, so it can take their deliveries up again.
    ReadPending {
        /// Matches the answer.
        req: u64,
        /// The asking shard.
        shard: u16,
        /// How many shards own conversations.
        shards: u16,
        /// Start after this (device, conversation, seq).
        after: Option<(DeviceId, ConvId, Seq)>,
        /// Page size.
        limit: u32,
    },
    /// Storage -> shard: a page of pending inbox entries.
    PendingPage {
        /// The question's `req`.
        req: u64,
        /// Each entry's device and message.
        entries: Vec<(DeviceId, Message)>,
        /// Where the next page starts.
        next: Option<(DeviceId, ConvId, Seq)>,
        /// Whether entries remain after this page.
        more: bool,
    },
    /// Shard -> storage: read the log between `from` and `to` inclusive, as `reader` may see
    /// it: in a group, only what was sent while they were a member, plus the change that next
    /// adds them (so a device that does not know where its membership starts learns it).
    ReadLog {
        /// Matches the answer.
        req: u64,
        /// Conversation.
        conv: ConvId,
        /// First sequence number.
        from: Seq,
        /// Last sequence number.
        to: Seq,
        /// Who reads (messages come back with only this device's sealed key).
        reader: DeviceId,
    },
    /// Storage -> shard: the requested log range (only durable entries).
    LogRange {
        /// The question's `req`.
        req: u64,
        /// The messages found.
        msgs: Vec<Message>,
    },
    /// Shard -> storage: a device was linked to its user (answered once durable).
    Link {
        /// The device.
        device: DeviceId,
        /// The gateway the device is on (for the answer).
        via: u16,
    },
    /// Storage -> shard: the link is durable.
    Linked {
        /// The device.
        device: DeviceId,
        /// The gateway it was on.
        via: u16,
    },
    /// Storage -> shard: the append was refused: no sealed copy for a linked `device`.
    StaleDevices {
        /// Conversation.
        conv: ConvId,
        /// The message.
        id: MsgId,
        /// A device missing its copy.
        device: DeviceId,
    },
    /// Coordinator -> replica: keep these operations (repeats of an id are harmless). One
    /// frame carries every operation the coordinator gathered since its last send (at most
    /// one send per replica sync delay), not one frame per operation.
    Replicate {
        /// Each operation with its place in the order, in that order.
        ops: Vec<(OpId, StorageOp)>,
    },
    /// Replica -> coordinator: these operations are synced here.
    Replicated {
        /// Which.
        ids: Vec<OpId>,
    },
    /// Coordinator -> replica: the operations you hold after `after`, a page at a time.
    ReadOps {
        /// Where the last page ended (`None`: from the start).
        after: Option<OpId>,
    },
    /// Replica -> coordinator: a page of its synced operations, in order.
    Ops {
        /// The `after` it answers (a page is taken only as the continuation it was asked
        /// for).
        after: Option<OpId>,
        /// The page.
        ops: Vec<(OpId, StorageOp)>,
        /// More follow.
        more: bool,
    },
    /// Replica -> coordinator: I restarted; send me again what I have not acknowledged.
    ReplicaUp,
}

/// A server-to-server message with its sender, as it travels on the wire.
#[derive(Clone, Debug, Hash, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// The sending host.
    pub from: Host,
    /// The message.
    pub rpc: Rpc,
}
