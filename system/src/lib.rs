//! # chatsim-system: the chat backend as sans-IO state machines
//!
//! This crate is the WhatsApp-style backend that every chatsim engine drives. It does no I/O:
//! no sockets, no clock, no threads, no randomness of its own. Each component is handed
//! `(now, input)` and answers with [`Effect`]s (frames to send, durable writes, what a user
//! saw); an engine (madsim, turmoil, stateright, or an in-memory test harness) carries them.
//!
//! ```text
//!  device ──Up──▶ gateway ──FromDevice──▶ shard(conv) ──Append──▶ storage
//!    ▲               │  ▲                    │   ▲                    │ sync
//!    │◀────Down──────┘  └──ToDevice──────────┘   └──Appended──────────┘
//!    │                  gateway ──Register──▶ session ◀──Lookup── shard
//! ```
//!
//! The life of a message: the device puts it in its outbox under a client id and sends it; the
//! gateway stamps the authenticated sender and forwards it to the shard owning the
//! conversation; the shard gives it the next sequence number and asks storage to append it to
//! the log *and* park a copy in the recipient's inbox; only when storage has synced does the
//! shard answer sent ✓ to the sender and push the message to the recipient's gateway (found in
//! the session service). The recipient device orders by sequence number, holds back after a
//! gap and fetches what is missing, drops duplicates by id, and acks; the ack deletes the inbox
//! entry. A device that was away drains its inbox on reconnect, page by page.
//!
//! Layout (a directory is one machine split by concern; its `mod.rs` says what each file owns):
//! - [`proto`]: identifiers (`ids`), what phones and gateways exchange (`device_frames`),
//!   server-to-server messages (`rpc`), storage operations (`storage_ops`) and what all of
//!   them carry (`chat`).
//! - [`device`]: the phone app: the connection and its handshake (`connection`), the outbox
//!   and retries (`outbox`), each conversation's ordered view with gaps and dedup
//!   (`conversation`), receipts and ticks (`receipts`), sender keys (`keys`).
//! - [`gateway`]: device connections, authentication, heartbeats, routing.
//! - [`session`]: user -> (gateway, epoch), and presence.
//! - [`shard`]: sequence numbers and persist-then-ack (`sequencer`), group fan-out (`fanout`),
//!   pushes and delivery tracking (`delivery`), receipts (`receipts`), slot leases and
//!   takeover (`lease`).
//! - [`e2e`]: per-device keys and sealing: servers relay ciphertext only.
//! - [`storage`]: the data model (`state`), reads (`reads`), leases (`lease`), and with
//!   replicas the coordinator that acknowledges on a quorum (`coordinator`); durable only once
//!   synced (relay or server-history model).
//! - [`replica`]: a storage replica's operation log.
//! - [`push`]: the push provider (APNs / FCM): slow, lossy, coalescing.
//! - [`route`]: the one effect router: where each [`Effect`] goes, for every engine.
//! - [`durable`]: what survives a crash, kept beside the hosts, and the machines a restarted
//!   server begins with.
//! - [`limits`]: every bound, with its unit.
//! - [`knobs`]: the bounds a run may shrink (BUGGIFY), with the design's values by default.
//! - [`probe`]: coverage probes: the rare branches a swarm should reach, by name.
//! - [`attack`]: what a compromised device may try (crafted requests on its own connection).
//! - [`bugs`]: the bug zoo: classic wrong designs as switches, off by default.
//! - [`timers`]: the deadline set each component keeps.
//! - [`routing`]: which shard owns what, and device tokens.
//! - `testkit` (feature `testkit`): every component in one process on virtual time; the
//!   system-wide tests in `tests/` drive it.
//!
//! Every machine asserts what must hold after its state changes (a sequence number assigned
//! is the next one, a fence only rises, a cursor only moves forward, a queue stays within its
//! bound), and names every input it ignores with the reason; an input that cannot reach it
//! is `unreachable!`. These stay on in release builds: a broken transition stops the run
//! where it happens, not later as a history violation far from its cause.

pub mod attack;
pub mod bugs;
pub mod device;
pub mod draws;
pub mod durable;
pub mod e2e;
pub mod gateway;
pub mod knobs;
pub mod limits;
pub mod probe;
pub mod proto;
pub mod push;
pub mod replica;
pub mod route;
pub mod routing;
pub mod session;
pub mod shard;
pub mod storage;
pub mod timers;

#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

use proto::{ConnId, ConvId, Down, Host, Millis, MsgId, Path, Rpc, Seq, StorageOp, Up, UserId};
use serde::{Deserialize, Serialize};

/// What an engine hands a component.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Input {
    /// A server-to-server message arrived.
    Rpc {
        /// Sender.
        from: Host,
        /// Message.
        rpc: Rpc,
    },
    /// Gateway: a device opened a connection.
    Accepted {
        /// The gateway-local id the engine gave it.
        conn: ConnId,
    },
    /// Gateway: a frame arrived on a device connection.
    FromConn {
        /// Which connection.
        conn: ConnId,
        /// The frame.
        up: Up,
    },
    /// Gateway: a device connection closed (EOF or error).
    ConnClosed {
        /// Which connection.
        conn: ConnId,
    },
    /// Device: the connection it asked for is open.
    Connected,
    /// Device: the connection it asked for could not be opened.
    ConnectFailed,
    /// Device: a frame arrived from the gateway.
    Down(Down),
    /// Device: the connection closed under it.
    Disconnected,
    /// Device: a push notification arrived (the OS woke the app).
    Pushed,
    /// Device: the user (workload) or the world (faults) did something.
    Action(Action),
    /// The deadline from `poll_timeout` passed. Spurious calls are harmless.
    Timeout,
    /// Storage and replicas: what the disk under them does from now on (the host's disk, as
    /// its OS reports it through fsync latency and `ENOSPC`).
    Disk(Disk),
}

/// The state of a storage node's disk, as the world sets it.
#[derive(Clone, Copy, Debug, Hash, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Disk {
    /// Syncs take the run's usual time.
    #[default]
    Healthy,
    /// Each sync takes this long (an fsync latency spike: a busy or failing device).
    Slow(Millis),
    /// No space left: a write that would grow the data is refused, neither kept nor answered,
    /// so the writer's own retry brings it again once there is room. Deletes, lease renewals
    /// and reads go on (they free space or rewrite it in place).
    Full,
}

/// Stop a server machine handed an input of a connection or a phone: the host layer gives
/// connection inputs only to gateways and phone inputs only to phones, so an engine that does
/// otherwise is broken, and carrying on would hide it.
#[track_caller]
pub(crate) fn not_for_this_host(who: &str, input: &Input) -> ! {
    unreachable!("{who} is handed an input only a gateway or a phone gets: {input:?}")
}

/// What a user or the world does to a device.
#[derive(Clone, Debug, Hash, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// The user sends `body` to `to` in their direct conversation.
    SendDirect {
        /// The recipient.
        to: UserId,
        /// The text.
        body: Vec<u8>,
    },
    /// The user creates group number `group` with these members (and themselves).
    CreateGroup {
        /// The group's number.
        group: u32,
        /// Who else is in it.
        members: Vec<UserId>,
    },
    /// The user adds someone to a group they are in.
    AddMember {
        /// The group's number.
        group: u32,
        /// Who.
        user: UserId,
    },
    /// The user removes someone from a group they are in (themselves: they leave).
    RemoveMember {
        /// The group's number.
        group: u32,
        /// Who.
        user: UserId,
    },
    /// The user sends `body` to a group.
    SendGroup {
        /// The group's number.
        group: u32,
        /// The text.
        body: Vec<u8>,
    },
    /// The phone goes offline (airplane mode): close and stop reconnecting.
    GoOffline,
    /// The phone comes back online.
    GoOnline,
    /// The network drops the connection; the phone reconnects on its own.
    DropConnection,
    /// The user puts the app in the background: the OS closes its connection, and only a
    /// push (or the user coming back) wakes it.
    Background,
    /// The user brings the app back.
    Foreground,
    /// The user opens a conversation on this device: what it shows there is read.
    OpenChat {
        /// Which.
        conv: ConvId,
    },
    /// The user links this device (a companion added mid-run): until now it did nothing.
    Link,
    /// The user leaves this conversation (nothing happens if another one is open by now).
    CloseChat {
        /// Which.
        conv: ConvId,
    },
    /// The device is compromised and sends this crafted request (as soon as it is connected).
    Attack(attack::Attack),
}

/// What a component asks its engine to do.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Effect {
    /// Send a message to another server.
    Rpc {
        /// Destination.
        to: Host,
        /// Message.
        rpc: Rpc,
    },
    /// Gateway: send a frame down a device connection.
    Down {
        /// Which connection.
        conn: ConnId,
        /// The frame.
        frame: Down,
    },
    /// Gateway: close a device connection.
    CloseConn {
        /// Which connection.
        conn: ConnId,
    },
    /// Device: open a connection to this gateway (replacing any current one).
    Connect {
        /// Gateway index.
        gateway: u16,
    },
    /// Device: send a frame on the current connection.
    Up(Up),
    /// Device: close the current connection. No `Disconnected` input follows.
    Disconnect,
    /// Storage: these operations are now durable; keep them outside the node.
    Persist(Vec<StorageOp>),
    /// Storage coordinator: its view was rebuilt from the replicas; it replaces what earlier
    /// `Persist` effects built up (the engine keeps it for reports only).
    Rebuilt(Box<storage::StorageState>),
    /// Replica: these operations are synced; keep them outside the node.
    PersistOps(Vec<(proto::OpId, replica::SharedOp)>),
    /// Session service: this change is now durable; keep it outside the node.
    PersistSession(session::SessionChange),
    /// Device: something the user could see, for the history.
    Observe(Observation),
    /// Any machine: it took a rare or defensive branch (counted beside the run, never in the
    /// history or the trace).
    Probe(probe::Probe),
}

/// What a user could notice on one device: the history the checkers judge is made of these.
#[derive(Clone, Debug, Hash, PartialEq, Eq, Serialize, Deserialize)]
pub enum Observation {
    /// The user pressed send.
    Sent {
        /// The client id.
        id: MsgId,
        /// Conversation.
        conv: ConvId,
        /// The text.
        body: Vec<u8>,
    },
    /// Sent ✓: the server stored it under `seq`.
    Acked {
        /// The client id.
        id: MsgId,
        /// Conversation.
        conv: ConvId,
        /// Its sequence number.
        seq: Seq,
    },
    /// A message appeared on screen.
    Displayed {
        /// Its id.
        id: MsgId,
        /// Conversation.
        conv: ConvId,
        /// Its sequence number.
        seq: Seq,
        /// How it arrived.
        path: Path,
        /// The text.
        body: Vec<u8>,
        /// The sender's compose time (for latency).
        sent_at: Millis,
    },
    /// A message arrived again and was dropped by id.
    DuplicateDropped {
        /// Its id.
        id: MsgId,
        /// Conversation.
        conv: ConvId,
        /// Its sequence number.
        seq: Seq,
        /// How the copy arrived.
        path: Path,
    },
    /// Messages after a gap are held back; the gap is `from..=to`.
    GapDetected {
        /// Conversation.
        conv: ConvId,
        /// First missing.
        from: Seq,
        /// Last missing.
        to: Seq,
    },
    /// The device asked the server for a missing range.
    GapFetch {
        /// Conversation.
        conv: ConvId,
        /// First missing.
        from: Seq,
        /// Last missing.
        to: Seq,
    },
    /// The phone starts opening a connection (each attempt, successful or not).
    Connecting {
        /// Gateway index.
        gateway: u16,
    },
    /// The connection is up and registered.
    Connected {
        /// Gateway index.
        gateway: u16,
        /// Connection epoch.
        epoch: u64,
    },
    /// The connection is gone.
    Disconnected {
        /// Why.
        reason: DisconnectReason,
    },
    /// The inbox drain reached the end.
    DrainComplete,
    /// Storage has this device's link: messages sent to its user from now on reach it.
    Linked,
    /// A delivered copy could not be opened (missing, or sealed for someone else).
    Undecryptable {
        /// Its id.
        id: MsgId,
        /// Conversation.
        conv: ConvId,
        /// Its sequence number.
        seq: Seq,
    },
    /// The server refused something.
    Refused {
        /// Why.
        reason: proto::Refusal,
        /// The message concerned, if any.
        #[serde(default)]
        id: Option<MsgId>,
        /// True when the message is dropped for good (the user sees it failed); false when the
        /// phone will try again.
        #[serde(default)]
        fin: bool,
    },
    /// The user asked for a membership change (logged with its `Sent`): the judges rebuild
    /// each group's membership from these, not from what the server says it became.
    ChangeAsked {
        /// The change's id.
        id: MsgId,
        /// The group.
        conv: ConvId,
        /// What was asked.
        op: proto::GroupOp,
    },
    /// The user read every message owed to this device in `conv` up to `upto` (the
    /// conversation was open when they were shown, or was opened after).
    Read {
        /// Conversation.
        conv: ConvId,
        /// Up to which sequence number.
        upto: Seq,
    },
    /// A sender device learned a reader's receipt mark moved forward.
    Receipt {
        /// The receipt.
        receipt: proto::Receipt,
    },
    /// The ticks on one of this device's texts moved forward: delivered (✓✓) once every
    /// recipient user has it on a device, read once every one has read it.
    Ticks {
        /// The text.
        id: MsgId,
        /// Conversation.
        conv: ConvId,
        /// Its sequence number.
        seq: Seq,
        /// Delivered or read.
        tick: proto::ReceiptKind,
    },
    /// A push woke the app in the background.
    Woken,
    /// The user opened a conversation on this device (`None`: closed it).
    Opened {
        /// Which, if any.
        conv: Option<ConvId>,
    },
    /// A presence update arrived: `looking` says whether this device has the chat with `user`
    /// open (what it shows), or not (load a correct design never sends).
    Presence {
        /// Whose.
        user: UserId,
        /// Online.
        online: bool,
        /// Last seen, if offline.
        last_seen: Millis,
        /// Whether the chat with `user` is open here.
        looking: bool,
    },
    /// This (compromised) device sent a crafted request.
    Attacked {
        /// What it tried.
        attack: attack::Attack,
    },
    /// A compromised device was told how far a group's log reaches (answering its own
    /// request: an honest device keeps this to itself).
    Pulled {
        /// The group.
        conv: ConvId,
        /// The last sequence number it was told.
        last: Seq,
    },
    /// A message of a conversation a compromised device asked about reached it (whether or
    /// not it could open it).
    Fetched {
        /// Its id.
        id: MsgId,
        /// Conversation.
        conv: ConvId,
        /// Its sequence number.
        seq: Seq,
    },
    /// The device's view of a group's membership moved past a change (its own, once ✓ and in
    /// order, or someone else's, when displayed): from `seq` on, these are the members.
    MembersChanged {
        /// The group.
        conv: ConvId,
        /// The change's sequence number.
        seq: Seq,
        /// Every member after it, sorted.
        members: Vec<UserId>,
    },
}

/// Why a device's connection ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, Serialize, Deserialize)]
pub enum DisconnectReason {
    /// The user went offline.
    UserOffline,
    /// The network dropped it (fault).
    Dropped,
    /// The peer closed it.
    Closed,
    /// No heartbeat answer in time.
    HeartbeatTimeout,
    /// The app went to the background (or back to sleep after a push woke it).
    Backgrounded,
    /// A polling phone's request was answered and closed (see [`Transport`]).
    Polled,
}

/// The shape every component shares, so engines can drive any of them the same way.
///
/// Order of calls: `handle` with each input as it arrives; after every call, ask
/// `poll_timeout` and call `handle(now, Input::Timeout)` once `now` reaches it.
pub trait Machine {
    /// Process one input at time `now`, appending what to do to `out`.
    fn handle(&mut self, now: Millis, input: Input, out: &mut Vec<Effect>);
    /// The earliest time this component wants `Input::Timeout`, if any.
    fn poll_timeout(&self) -> Option<Millis>;
}

/// What every component is configured with: the static directory of users and hosts, and the
/// bug-zoo switches in force (none in a correct deployment).
#[derive(Clone, Debug, Hash, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// Number of users (ids 0..users).
    pub users: u32,
    /// Number of gateways.
    pub gateways: u16,
    /// Number of chat shards.
    pub shards: u16,
    /// Devices per user: a primary phone and up to [`limits::COMPANIONS_MAX`] companions
    /// (0 is read as 1).
    pub devices_per_user: u8,
    /// Classic design mistakes switched on (see [`bugs`]); empty for the real design.
    pub bugs: bugs::Bugs,
    /// Groups with more members than this are read from their log (fan-out on read): their
    /// texts park no inbox entries; online members get pushes and every member pulls on
    /// connecting. 0: every group fans out on write.
    #[serde(default)]
    pub fanout_on_read_over: u32,
    /// The push provider's behaviour.
    #[serde(default)]
    pub push: PushSpec,
    /// Devices that start unlinked and are added to their user's account mid-run (by
    /// [`Action::Link`]); senders learn of them only when storage refuses a message without
    /// their copy.
    #[serde(default)]
    pub late_devices: std::collections::BTreeSet<proto::DeviceId>,
    /// Each device's clock is off by an amount drawn from ±this (ms); `None`: the default,
    /// [`limits::CLOCK_SKEW_MS_MAX`].
    #[serde(default)]
    pub clock_skew_ms: Option<Millis>,
    /// What storage keeps once a message is delivered.
    #[serde(default)]
    pub storage_model: StorageModel,
    /// Storage replicas behind the storage coordinator (0: storage is one durable node).
    #[serde(default)]
    pub replicas: u16,
    /// Every device's public key (the stand-in for a key server).
    pub keys: KeyDirectory,
    /// What every device's key pair is derived from, with its id
    /// ([`e2e::device_keypair`]). The simulators keep it 0, so a device has the same keys in
    /// every seed and a swarm makes each pair's X25519 agreement once; a live deployment uses
    /// its own seed.
    #[serde(default)]
    pub key_seed: u64,
    /// The bounds a BUGGIFY draw may shrink ([`knobs`]); the design's values by default.
    #[serde(default)]
    pub knobs: knobs::Knobs,
    /// How phones reach their gateway: a persistent connection, or HTTP-style polling.
    #[serde(default)]
    pub transport: Transport,
}

/// How phones reach their gateway. Polling is the design page's first "common mistake": each
/// request is modelled as a short connection (its handshake stands for the HTTP request and
/// its authentication), so the cost and the latency are measured on the same machines.
#[derive(
    Clone, Copy, Debug, Hash, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// One persistent connection per phone, kept alive by heartbeats; the server pushes.
    #[default]
    Websocket,
    /// The phone asks; the server holds the request until something arrives or
    /// [`limits::LONG_POLL_HOLD_MS`] pass; the phone asks again at once.
    LongPoll,
    /// The phone asks every [`limits::SHORT_POLL_INTERVAL_MS`] and takes what is waiting.
    ShortPoll,
    /// A third of the users each: websocket, long-poll, short-poll (by user id), so one run
    /// compares all three on the same world.
    Mixed,
}

impl Transport {
    /// The transport `user`'s devices use.
    pub fn of(self, user: UserId) -> Transport {
        match self {
            Transport::Mixed => match user.0 % 3 {
                0 => Transport::Websocket,
                1 => Transport::LongPoll,
                _ => Transport::ShortPoll,
            },
            t => t,
        }
    }

    /// Its name in scenario files and reports.
    pub fn name(self) -> &'static str {
        match self {
            Transport::Websocket => "websocket",
            Transport::LongPoll => "long-poll",
            Transport::ShortPoll => "short-poll",
            Transport::Mixed => "mixed",
        }
    }
}

/// Every device's public key. Shared: every component holds a copy of the deployment, and a
/// copy of this per device would grow with the square of the devices. Its `Debug` gives the
/// count, not the keys (a state's rendering is what the model checker hashes).
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyDirectory(pub std::sync::Arc<std::collections::BTreeMap<proto::DeviceId, [u8; 32]>>);

impl KeyDirectory {
    /// A directory of these keys.
    pub fn new(keys: std::collections::BTreeMap<proto::DeviceId, [u8; 32]>) -> KeyDirectory {
        KeyDirectory(std::sync::Arc::new(keys))
    }

    /// `device`'s public key, if it has one.
    pub fn get(&self, device: &proto::DeviceId) -> Option<&[u8; 32]> {
        self.0.get(device)
    }
}

// One directory serves a whole deployment: its size tells it apart as well as its rendering.
impl std::hash::Hash for KeyDirectory {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.0.len().hash(state);
    }
}

impl std::fmt::Debug for KeyDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyDirectory({} keys)", self.0.len())
    }
}

/// What storage keeps of a conversation once it is delivered.
#[derive(Clone, Copy, Debug, Hash, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StorageModel {
    /// Server history (Matrix, Slack): the log keeps every message; devices can sync from it.
    #[default]
    History,
    /// Relay (WhatsApp): a text is deleted once every device it was parked for has taken it;
    /// history lives on the devices. Groups read from their log keep theirs.
    Relay,
}

/// How the push provider behaves: how late a push arrives, and how many are lost.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushSpec {
    /// A push arrives this long after it was asked for, drawn per push (ms).
    pub delay_ms: (Millis, Millis),
    /// Percent of pushes lost.
    pub loss_percent: u8,
}

impl Default for PushSpec {
    fn default() -> Self {
        // APNs's typical delivery is within a second, with no guarantee; say a few percent.
        PushSpec {
            delay_ms: (200, 1_500),
            loss_percent: 5,
        }
    }
}

impl Deployment {
    /// The devices of `user`: the primary (index 0) first, then its companions.
    pub fn devices_of(&self, user: UserId) -> Vec<proto::DeviceId> {
        self.device_ids(user).collect()
    }

    /// [`Deployment::devices_of`] without the vector, for loops over a big group's members.
    pub fn device_ids(&self, user: UserId) -> impl Iterator<Item = proto::DeviceId> {
        (0..self.devices_per_user.max(1)).map(move |index| proto::DeviceId { user, index })
    }

    /// Whether `user` exists.
    pub fn has_user(&self, user: UserId) -> bool {
        user.0 < self.users
    }

    /// Whether `device` exists.
    pub fn has_device(&self, device: proto::DeviceId) -> bool {
        self.has_user(device.user) && device.index < self.devices_per_user.max(1)
    }

    /// Who gets a copy of a message `sender` sent in `conv`: every device of the other member,
    /// and the sender's own other devices (so a user's companions show what the phone sent).
    pub fn recipients(&self, conv: ConvId, sender: proto::DeviceId) -> Vec<proto::DeviceId> {
        let Some(peer) = conv
            .direct_peer(sender.user)
            .filter(|p| self.has_user(*p) && *p != sender.user)
        else {
            return Vec::new();
        };
        let mut out = self.devices_of(peer);
        out.extend(
            self.devices_of(sender.user)
                .into_iter()
                .filter(|d| *d != sender),
        );
        out
    }
}
