//! Scenario files: the TOML schema, loading, and validation. A scenario gives *ranges*; each
//! seed draws concrete values inside them (see [`crate::plan`]), which is swarm testing: one
//! file covers many fault mixes. Unknown fields are errors, and every error names the file,
//! the line where there is one, and the field.
//!
//! This file holds the schema and loading; `validate` holds the range checks (with the
//! bounds as named constants) and how their errors are built.

use serde::Deserialize;
use std::path::{Path, PathBuf};
use thiserror::Error;

mod validate;

// The bounds are part of the schema's contract (callers quote them), so they are named here
// too, as `crate::scenario::USERS_MAX` and so on.
pub use validate::*;

/// Why a scenario could not be used. Every variant names the file.
#[derive(Debug, Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or does not fit the schema (unknown or missing field,
    /// wrong type). The message carries the line and column.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is out of range.
    #[error("{path}: field `{field}`: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Dotted path of the field.
        field: String,
        /// Why it is wrong.
        reason: String,
    },
}

/// An inclusive range `[lo, hi]`, written as a two-element array in TOML.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(from = "[u64; 2]")]
pub struct Range {
    /// Lower bound.
    pub lo: u64,
    /// Upper bound.
    pub hi: u64,
}

impl From<[u64; 2]> for Range {
    fn from([lo, hi]: [u64; 2]) -> Self {
        Range { lo, hi }
    }
}

/// A scenario file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// One line saying what the scenario shows (the story goes in the file's comments).
    pub description: String,
    /// BUGGIFY (FoundationDB's name): on half the seeds, some of the system's bounds shrink
    /// (an inbox page of 1 to 3 entries, a fan-out step of a few devices, a small outbox window,
    /// a slow sync), drawn per seed, so rare branches become common. Off by default, and in the
    /// reference and bench worlds.
    #[serde(default)]
    pub buggify: bool,
    /// Why this scenario must never buggify, not even when the command line asks for it
    /// (`--buggify` on a swarm of every scenario skips it and says why). For a scenario whose
    /// point is a throughput the shrunken bounds cannot reach within the run, so the checkers
    /// would report as lost what is only late.
    #[serde(default)]
    pub buggify_never: Option<String>,
    /// The command line turned BUGGIFY on for a file that does not ask for it (not a TOML
    /// field): a replay command must say so.
    #[serde(skip)]
    pub buggify_forced: bool,
    /// Hosts and users.
    pub topology: TopologySpec,
    /// Who sends what, when, drawn per seed (none when absent).
    #[serde(default)]
    pub workload: WorkloadSpec,
    /// Link behaviour.
    #[serde(default)]
    pub network: NetworkSpec,
    /// The push provider.
    #[serde(default)]
    pub push: PushSpec,
    /// Phases of the run and the bounds checkers use.
    pub run: RunSpec,
    /// Faults, each drawn per seed within its ranges.
    #[serde(default, rename = "fault")]
    pub faults: Vec<FaultSpec>,
    /// Explicit events at fixed times, on top of anything drawn: what `chatsim shrink` writes,
    /// so a stored failure does not depend on the seed's draws.
    #[serde(default, rename = "event")]
    pub schedule: Vec<ScheduledEvent>,
    /// Where the scenario was loaded from (not a TOML field).
    #[serde(skip)]
    pub path: PathBuf,
    /// The file's text as read (not a TOML field): its opening comments are the story a
    /// report tells, and a bundled scenario has no file to read them from again.
    #[serde(skip)]
    pub source: String,
}

/// Hosts and users.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySpec {
    /// Users, each with one phone.
    pub users: u32,
    /// Gateways.
    pub gateways: u16,
    /// Chat shards.
    pub shards: u16,
    /// Devices per user: the primary phone plus companions (1 to 5).
    #[serde(default = "one_device")]
    pub devices_per_user: u8,
    /// Groups with more members than this are read from their log instead of fanned out into
    /// inboxes (0, the default: every group fans out on write).
    #[serde(default)]
    pub fanout_on_read_over: u32,
    /// Storage replicas behind the storage coordinator (0, the default: storage is one
    /// durable node; otherwise an odd number from 3 to 7, with majority quorums).
    #[serde(default)]
    pub replicas: u16,
    /// Each phone's clock is off by up to ± this many ms (default 3,000): timestamps lie.
    #[serde(default)]
    pub clock_skew_ms: Option<u64>,
    /// What storage keeps once a message is delivered: `"history"` (the default: the log
    /// keeps everything) or `"relay"` (WhatsApp: delivered texts are deleted).
    #[serde(default)]
    pub storage_model: chatsim_system::StorageModel,
    /// How phones reach their gateway: `"websocket"` (the default: one persistent
    /// connection), `"long-poll"`, `"short-poll"`, or `"mixed"` (a third of the users each,
    /// by user id, so one run compares them).
    #[serde(default)]
    pub transport: chatsim_system::Transport,
}

fn one_device() -> u8 {
    1
}

/// Who sends what, when.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Messages sent in the whole run.
    #[serde(default)]
    pub messages: u32,
    /// Distinct 1:1 conversations the messages are spread over (drawn per seed).
    #[serde(default)]
    pub conversations: u32,
    /// Sends happen at uniformly drawn times in this window (ms).
    pub send_window_ms: Range,
    /// Groups and their traffic, drawn per seed (none when absent).
    #[serde(default)]
    pub groups: Option<GroupsSpec>,
    /// Times a user opens one of their conversations on one device and reads it, in the send
    /// window (what read receipts report).
    #[serde(default)]
    pub opens: u32,
    /// How long a conversation stays open (ms).
    #[serde(default = "default_open_ms")]
    pub open_ms: Range,
    /// Times a phone's user puts the app in the background, in the send window: until they
    /// bring it back, only a push wakes it.
    #[serde(default)]
    pub backgrounds: u32,
    /// How long the app stays in the background (ms).
    #[serde(default = "default_background_ms")]
    pub background_ms: Range,
    /// Phones press nothing while offline (a phone left in a drawer): the sends drawn for an
    /// offline stretch are not made, so the phone's own queued sends cannot tell it how far
    /// its conversations went, and what reached it meanwhile comes back through the inbox.
    #[serde(default)]
    pub quiet_while_offline: bool,
}

fn default_background_ms() -> Range {
    Range {
        lo: 5_000,
        hi: 20_000,
    }
}

fn default_open_ms() -> Range {
    Range {
        lo: 1_000,
        hi: 8_000,
    }
}

/// Groups: created at the start, written to and reshaped during the send window.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsSpec {
    /// How many groups (numbered from 0).
    pub count: u32,
    /// Members of each group at creation, the creator included, drawn per group.
    pub size: Range,
    /// Group texts sent in the whole run, spread over the groups.
    pub messages: u32,
    /// Membership changes (an add or a removal by the group's creator) in the send window.
    #[serde(default)]
    pub changes: Range,
    /// When the creators create their groups (ms).
    #[serde(default = "default_create_at")]
    pub create_at_ms: u64,
}

fn default_create_at() -> u64 {
    200
}

/// What an explicit event does.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum EventAction {
    /// `user` sends `text` to `to`.
    Send,
    /// `user`'s phone goes offline.
    Offline,
    /// `user`'s phone comes back online.
    Online,
    /// `user`'s connection drops.
    Drop,
    /// `user`'s phone goes silent (half-open).
    Silent,
    /// `user`'s phone is reachable again.
    Unsilent,
    /// `user`'s connection falls into a black hole: frames dropped both ways, no close ever
    /// arrives; connections it opens until `blackhole-end` fall in too.
    Blackhole,
    /// `user`'s new connections get through again.
    BlackholeEnd,
    /// Kill `host`.
    Kill,
    /// Restart `host`.
    Restart,
    /// Clog `host`.
    Clog,
    /// Unclog `host`.
    Unclog,
    /// Partition `side_a` from `side_b`.
    Partition,
    /// Heal the partition between `side_a` and `side_b`.
    HealPartition,
    /// Drop frames from `side_a` to `side_b`, one way (turmoil only).
    PartitionOneway,
    /// End the one-way partition from `side_a` to `side_b`.
    HealPartitionOneway,
    /// Every link of `host` slows a hundredfold.
    Spike,
    /// `host`'s links are back to their usual latency.
    SpikeEnd,
    /// `host`'s disk (storage or a replica) slows: every sync takes long.
    DiskSlow,
    /// `host`'s disk syncs at its usual speed again.
    DiskSlowEnd,
    /// `host`'s disk (storage) is full: writes that add data are refused.
    DiskFull,
    /// `host`'s disk has room again.
    DiskFullEnd,
    /// `user` creates group `group` with `members` (and themselves).
    CreateGroup,
    /// `user` adds `member` to `group`.
    AddMember,
    /// `user` removes `member` from `group`.
    RemoveMember,
    /// `user` opens their conversation with `to`, or `group`, on `device`: shown is read.
    Open,
    /// `user` closes that conversation on `device`, if it is still the open one.
    Close,
    /// `user` puts the app on `device` in the background.
    Background,
    /// `user` brings the app on `device` back.
    Foreground,
    /// `user` links `device` (a companion, index 1 or more) to their account: it does nothing
    /// before, and is owed only what is sent after.
    Link,
    /// `user`'s `device` is compromised and sends the crafted request `attack` names (one of
    /// [`chatsim_system::attack::ATTACK_NAMES`]), aimed with `to`, `member` and `group`.
    Attack,
}

/// One explicit event.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScheduledEvent {
    /// When (ms).
    pub at_ms: u64,
    /// What.
    pub action: EventAction,
    /// The user whose phone acts (device actions).
    #[serde(default)]
    pub user: Option<u32>,
    /// Which of the user's devices (0, the primary, when absent).
    #[serde(default)]
    pub device: Option<u8>,
    /// The recipient (`send` to a user).
    #[serde(default)]
    pub to: Option<u32>,
    /// The group (`send` to a group, and the group actions).
    #[serde(default)]
    pub group: Option<u32>,
    /// The first members (`create-group`).
    #[serde(default)]
    pub members: Vec<u32>,
    /// Who is added or removed (`add-member`, `remove-member`).
    #[serde(default)]
    pub member: Option<u32>,
    /// The text (`send`).
    #[serde(default)]
    pub text: Option<String>,
    /// The server host, e.g. `shard-1` (server actions).
    #[serde(default)]
    pub host: Option<String>,
    /// What a compromised device tries (`attack`).
    #[serde(default)]
    pub attack: Option<String>,
    /// One side of a partition.
    #[serde(default)]
    pub side_a: Vec<String>,
    /// The other side.
    #[serde(default)]
    pub side_b: Vec<String>,
}

impl ScheduledEvent {
    /// An event with only its time and action set; the caller fills in who and what.
    pub fn new(at_ms: u64, action: EventAction) -> ScheduledEvent {
        ScheduledEvent {
            at_ms,
            action,
            user: None,
            device: None,
            to: None,
            group: None,
            members: Vec::new(),
            member: None,
            text: None,
            host: None,
            attack: None,
            side_a: Vec::new(),
            side_b: Vec::new(),
        }
    }
}

/// Parse a host name as the simulator prints it (`gateway-1`, `session`, `shard-2`,
/// `storage-1`), checking it exists in a topology with `gateways` and `shards`.
pub fn parse_host(name: &str, t: &TopologySpec) -> Option<chatsim_system::proto::Host> {
    use chatsim_system::proto::Host;
    if name == "session" {
        return Some(Host::Session);
    }
    if name == "push" {
        return Some(Host::Push);
    }
    let (role, n) = name.rsplit_once('-')?;
    let i = n.parse::<u16>().ok()?.checked_sub(1)?;
    match role {
        "gateway" if i < t.gateways => Some(Host::Gateway(i)),
        "shard" if i < t.shards => Some(Host::Shard(i)),
        "storage" if i == 0 => Some(Host::Storage(0)),
        "replica" if i < t.replicas => Some(Host::Replica(i)),
        _ => None,
    }
}

/// The TOML name of an event action.
pub fn action_name(a: EventAction) -> &'static str {
    match a {
        EventAction::Send => "send",
        EventAction::Offline => "offline",
        EventAction::Online => "online",
        EventAction::Drop => "drop",
        EventAction::Silent => "silent",
        EventAction::Unsilent => "unsilent",
        EventAction::Blackhole => "blackhole",
        EventAction::BlackholeEnd => "blackhole-end",
        EventAction::Kill => "kill",
        EventAction::Restart => "restart",
        EventAction::Clog => "clog",
        EventAction::Unclog => "unclog",
        EventAction::Spike => "spike",
        EventAction::SpikeEnd => "spike-end",
        EventAction::DiskSlow => "disk-slow",
        EventAction::DiskSlowEnd => "disk-slow-end",
        EventAction::DiskFull => "disk-full",
        EventAction::DiskFullEnd => "disk-full-end",
        EventAction::Partition => "partition",
        EventAction::HealPartition => "heal-partition",
        EventAction::PartitionOneway => "partition-oneway",
        EventAction::HealPartitionOneway => "heal-partition-oneway",
        EventAction::CreateGroup => "create-group",
        EventAction::AddMember => "add-member",
        EventAction::RemoveMember => "remove-member",
        EventAction::Open => "open",
        EventAction::Close => "close",
        EventAction::Background => "background",
        EventAction::Foreground => "foreground",
        EventAction::Link => "link",
        EventAction::Attack => "attack",
    }
}

/// Link behaviour.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// One-way latency of every frame, drawn per frame (ms). Frames on one connection stay in
    /// order; frames on different connections overtake each other.
    #[serde(default = "default_latency")]
    pub latency_ms: Range,
    /// Extra latency on the links from one role to another.
    #[serde(default, rename = "link")]
    pub links: Vec<LinkSpec>,
}

/// Extra one-way latency on every connection from hosts of one role to hosts of another,
/// drawn per frame; frames on one connection still arrive in order.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkSpec {
    /// The sending role.
    pub from: Role,
    /// The receiving role.
    pub to: Role,
    /// Extra latency added to each frame (ms).
    pub extra_latency_ms: Range,
}

fn default_latency() -> Range {
    Range { lo: 1, hi: 10 }
}

impl Default for NetworkSpec {
    fn default() -> Self {
        NetworkSpec {
            latency_ms: default_latency(),
            links: Vec::new(),
        }
    }
}

/// The push provider (APNs / FCM): how late its pushes arrive and how many it loses.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushSpec {
    /// A push arrives this long after a shard asked for it (ms), drawn per push.
    #[serde(default = "default_push_delay")]
    pub delay_ms: Range,
    /// Percent of pushes lost (0 to 100).
    #[serde(default = "default_push_loss")]
    pub loss_percent: u8,
}

fn default_push_delay() -> Range {
    Range { lo: 200, hi: 1_500 }
}

fn default_push_loss() -> u8 {
    5
}

impl Default for PushSpec {
    fn default() -> Self {
        PushSpec {
            delay_ms: default_push_delay(),
            loss_percent: default_push_loss(),
        }
    }
}

impl PushSpec {
    /// As the system's deployment carries it.
    pub fn spec(&self) -> chatsim_system::PushSpec {
        chatsim_system::PushSpec {
            delay_ms: (self.delay_ms.lo, self.delay_ms.hi),
            loss_percent: self.loss_percent,
        }
    }
}

/// Phases of the run and the bounds checkers use.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSpec {
    /// Every fault is healed at this time (ms): killed hosts restart, links unclog, devices
    /// come back online.
    pub heal_at_ms: u64,
    /// The run goes on this long after the heal, so the system can converge (ms).
    pub settle_ms: u64,
    /// After the heal, every acked message must be displayed within this bound (ms).
    pub liveness_ms: u64,
    /// The median time from send to ✓ may be at most this (ms; the `ack_latency` bound).
    /// Raise it only for links slow by design.
    #[serde(default = "default_ack_p50")]
    pub ack_p50_ms: u64,
}

fn default_ack_p50() -> u64 {
    300
}

/// What kind of fault.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// Kill a server host; restart it after `duration_ms`.
    Kill,
    /// Clog a server host (frames held, not lost) for `duration_ms`.
    Clog,
    /// Split the hosts of the target roles into two sides for `duration_ms`: frames between
    /// the sides are held both ways and arrive once it heals (TCP retransmits across a cut).
    Partition,
    /// Split the hosts of the target roles into two sides and drop frames from the first to
    /// the second for `duration_ms`, one way. A TCP stream that loses a frame this way stalls
    /// for good; only the system's timeouts recover. turmoil only: madsim's TCP never drops a
    /// frame, so a madsim run skips it and says so.
    PartitionOneway,
    /// Drop a device's connection; it reconnects on its own.
    DeviceDrop,
    /// A device goes offline for `duration_ms`.
    DeviceOffline,
    /// A device goes silent without closing (half-open) for `duration_ms`.
    DeviceSilent,
    /// A device's connection falls into a black hole (NAT rebinding, a cell handover, a
    /// middlebox's idle timeout): its frames are dropped both ways and no close ever arrives,
    /// so only a keepalive notices. Connections it opens for `duration_ms` fall in too; the
    /// swallowed ones stay dead after.
    DeviceBlackhole,
    /// A device flaps for `duration_ms`: its connection drops every 1 to 6 s (drawn per drop),
    /// and it reconnects each time, so it connects and drops many times a minute (a phone at
    /// the edge of coverage, a flaky Wi-Fi).
    DeviceFlap,
    /// Every link of a server host (one of `targets`) slows a hundredfold for `duration_ms`
    /// (frames take 100 to 1,000 ms instead of 1 to 10), so messages racing on paths through
    /// it and around it arrive out of order.
    LatencySpike,
    /// A storage host's disk (`targets`: storage or replica) slows for `duration_ms`: every
    /// sync takes 300 ms instead of 2, and acks wait for it.
    DiskSlow,
    /// Storage's disk fills for `duration_ms`: writes that add data (messages, inbox entries,
    /// receipts) are refused without an answer, so senders see no ✓ and retry; deletes and
    /// reads go on.
    DiskFull,
    /// A device is compromised: it sends one crafted request (an
    /// [`chatsim_system::attack::Attack`], kind and target drawn per seed) on its own
    /// authenticated connection, inside its normal use. Instantaneous: no `duration_ms`.
    Malicious,
}

impl FaultKind {
    /// Every kind, in the order `chatsim scenarios` lists them.
    pub const ALL: [FaultKind; 13] = [
        FaultKind::Kill,
        FaultKind::Clog,
        FaultKind::LatencySpike,
        FaultKind::DiskSlow,
        FaultKind::DiskFull,
        FaultKind::Partition,
        FaultKind::PartitionOneway,
        FaultKind::DeviceDrop,
        FaultKind::DeviceFlap,
        FaultKind::DeviceOffline,
        FaultKind::DeviceSilent,
        FaultKind::DeviceBlackhole,
        FaultKind::Malicious,
    ];

    /// Its name in a scenario file's `kind`.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Kill => "kill",
            FaultKind::Clog => "clog",
            FaultKind::LatencySpike => "latency-spike",
            FaultKind::DiskSlow => "disk-slow",
            FaultKind::DiskFull => "disk-full",
            FaultKind::Partition => "partition",
            FaultKind::PartitionOneway => "partition-oneway",
            FaultKind::DeviceDrop => "device-drop",
            FaultKind::DeviceFlap => "device-flap",
            FaultKind::DeviceOffline => "device-offline",
            FaultKind::DeviceSilent => "device-silent",
            FaultKind::DeviceBlackhole => "device-blackhole",
            FaultKind::Malicious => "malicious",
        }
    }

    /// One line on what it does, and where an engine cannot do it.
    pub fn summary(self) -> &'static str {
        match self {
            FaultKind::Kill => "a server host dies (memory gone, synced storage kept) and restarts",
            FaultKind::Clog => "a server host's frames are held both ways, then arrive",
            FaultKind::LatencySpike => "a server host's links slow a hundredfold; paths race",
            FaultKind::DiskSlow => "a storage disk's syncs take 300 ms; acks wait for them",
            FaultKind::DiskFull => "storage's disk fills; writes refused, senders retry",
            FaultKind::Partition => "server hosts split in two; frames between held both ways",
            FaultKind::PartitionOneway => {
                "frames dropped one way between server groups (turmoil only)"
            }
            FaultKind::DeviceDrop => "a phone's connection closes; it reconnects",
            FaultKind::DeviceFlap => "a phone's connection drops every 1 to 6 s for a while",
            FaultKind::DeviceOffline => "a phone goes offline (airplane mode), then back",
            FaultKind::DeviceSilent => "a phone's connection carries nothing, held both ways",
            FaultKind::DeviceBlackhole => "a phone's connection drops every frame and never closes",
            FaultKind::Malicious => {
                "a compromised phone sends a crafted request: forged sender, foreign chat, replay"
            }
        }
    }
}

/// A server role a fault may target.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Phones (only as a link end in `[[network.link]]`; faults pick devices themselves).
    Device,
    /// Gateways.
    Gateway,
    /// The session service.
    Session,
    /// Chat shards.
    Shard,
    /// Storage (the coordinator, with replicas).
    Storage,
    /// Storage replicas.
    Replica,
    /// The push provider.
    Push,
}

/// One fault line: how many, when, how long.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// What kind.
    pub kind: FaultKind,
    /// Server roles it may hit (server faults only; device faults pick devices).
    #[serde(default)]
    pub targets: Vec<Role>,
    /// How many, drawn per seed.
    pub count: Range,
    /// When each one starts (ms), drawn per fault.
    pub window_ms: Range,
    /// How long each one lasts (ms), drawn per fault; cut short by the heal.
    #[serde(default)]
    pub duration_ms: Option<Range>,
}

impl Scenario {
    /// Read, parse and validate a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.to_owned(),
            source,
        })?;
        Scenario::parse(path, &text)
    }

    /// Parse and validate scenario text; `path` is only used in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Scenario, ScenarioError> {
        let mut s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        s.path = path.to_owned();
        s.source = text.to_owned();
        s.validate()?;
        Ok(s)
    }

    /// The scenario's name: its file stem.
    pub fn name(&self) -> String {
        self.path
            .file_stem()
            .map_or_else(|| "scenario".into(), |s| s.to_string_lossy().into_owned())
    }

    /// When the run ends (ms).
    pub fn end_ms(&self) -> u64 {
        let last_event = self.schedule.iter().map(|e| e.at_ms).max().unwrap_or(0);
        self.run
            .heal_at_ms
            .max(self.workload.send_window_ms.hi)
            .max(last_event)
            + self.run.settle_ms
    }

    /// The extra latency range on links from `from` to `to`, if the scenario sets one.
    pub fn extra_latency(&self, from: Role, to: Role) -> Option<Range> {
        self.network
            .links
            .iter()
            .find(|l| l.from == from && l.to == to)
            .map(|l| l.extra_latency_ms)
    }

    /// How many hosts the roles cover.
    pub fn hosts_of(&self, roles: &[Role]) -> usize {
        let t = &self.topology;
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        roles
            .iter()
            .map(|r| match r {
                Role::Gateway => usize::from(t.gateways),
                Role::Shard => usize::from(t.shards),
                Role::Session | Role::Storage | Role::Push => 1,
                Role::Replica => usize::from(t.replicas),
                Role::Device => 0,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests;
