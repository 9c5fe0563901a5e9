//! The small worlds explored completely, each a config with `into_model()`: users, servers,
//! what users do (a script of cues: any time, or within a window the clock waits on), and
//! which faults the world may inject before `faults_until` (the rest of the horizon lets
//! retries settle, so `liveness` is fair). Every model finishes within two minutes on a 2-core
//! machine; small variants' unique state counts are pinned by tests.
//!
//! No symmetry reduction: no two devices here are interchangeable. Each holds its own key pair
//! and its own seeded generator (retry and reconnect jitter), so renaming two users gives a
//! state whose future differs, and merging the two would hide schedules, not repeat them.

use crate::world::{keyed, Budget, Cue, Limits, Scripts};
use crate::ChatModel;
use chatsim_system::bugs::{Bug, Bugs};
use chatsim_system::proto::{ConvId, DeviceId, Host, Millis, UserId};
use chatsim_system::routing::shard_for_conv;
use chatsim_system::{Action, Deployment};

/// Every model's name (a plain `chatsim check` runs them all: each finishes within minutes).
pub const NAMES: [&str; 7] = [
    "direct",
    "read",
    "reconnect",
    "group",
    "failover",
    "handover",
    "adversary",
];

/// Worlds one size up, searched only when named (`chatsim check --model direct-3`): the depth
/// first search made them affordable on a laptop, not in CI's budget.
pub const BIGGER: [&str; 2] = ["direct-3", "direct-2-faults"];

fn user(u: u32) -> DeviceId {
    DeviceId::primary(UserId(u))
}

fn deployment(users: u32, gateways: u16, shards: u16, bugs: &Bugs) -> Deployment {
    keyed(&Deployment {
        users,
        gateways,
        shards,
        devices_per_user: 1,
        bugs: bugs.clone(),
        ..Deployment::default()
    })
}

fn send(to: u32, n: u32) -> Action {
    Action::SendDirect {
        to: UserId(to),
        body: format!("text number {n}").into_bytes(),
    }
}

/// (a) Two users, one gateway, one shard, storage; one user sends two texts to the other over
/// a network that may lose one server frame and duplicate one; at most one server crashes.
/// With `chat_open` (the `read` model, without crashes) the recipient has the chat open, so
/// what it shows is read and its read receipts flow back.
#[derive(Clone, Debug)]
pub struct Direct {
    /// Texts u0 sends u1.
    pub messages: u32,
    /// Server frames the network may lose.
    pub drops: u8,
    /// Server frames it may duplicate.
    pub dups: u8,
    /// Server crashes (storage or the shard).
    pub crashes: u8,
    /// Faults in all.
    pub faults: u8,
    /// Users act only before this (ms).
    pub users_until: Millis,
    /// Faults only before this (ms).
    pub faults_until: Millis,
    /// The search's horizon (ms).
    pub horizon: Millis,
    /// u1 has the chat open from the start, so what it shows is read and read receipts flow
    /// (the `read` model).
    pub chat_open: bool,
}

impl Default for Direct {
    fn default() -> Self {
        Direct {
            chat_open: false,
            messages: 2,
            drops: 1,
            dups: 1,
            crashes: 1,
            faults: 1,
            users_until: 2_000,
            faults_until: 2_000,
            horizon: 12_000,
        }
    }
}

impl Direct {
    /// The model, with `bugs` switched on.
    pub fn into_model(self, bugs: &Bugs) -> ChatModel {
        let topo = deployment(2, 1, 1, bugs);
        let mut scripts: Scripts = [(
            user(0),
            (1..=self.messages)
                .map(|n| Cue::any_time(send(1, n)))
                .collect(),
        )]
        .into_iter()
        .collect();
        let mut reaches = vec!["a message is shown", "every message is delivered"];
        if self.crashes > 0 && self.faults > 0 {
            reaches.push("a server crashes");
        }
        if self.chat_open {
            let conv = ConvId::direct(UserId(0), UserId(1));
            // At some quiet moment before the first timer fires: texts may already be shown,
            // or held back behind a gap, which is when reading must not run ahead.
            scripts.insert(user(1), vec![Cue::between(0, 1, Action::OpenChat { conv })]);
            reaches.push("a message is read");
        }
        ChatModel {
            name: if self.chat_open { "read" } else { "direct" },
            limits: Limits {
                // Gateways and the session service crash in `reconnect`.
                crashable: vec![Host::Storage(0), Host::Shard(0)],
                ..Limits::new(self.horizon, self.faults_until, self.users_until)
            },
            budget: Budget {
                drops: self.drops,
                dups: self.dups,
                crashes: self.crashes,
                total: self.faults,
                ..Budget::default()
            },
            topo,
            scripts,
            reaches,
        }
    }
}

/// (b) A phone moves between two gateways while a text to it is in flight: its connection is
/// cut (or its gateway crashes) and it reconnects, drains its inbox and takes the text. A
/// gateway may be partitioned for a while (`partitions`, 0 by default: with one, the search
/// outgrows minutes), so its reports to the session service arrive late. Two faults in all.
#[derive(Clone, Debug)]
pub struct Reconnect {
    /// Times the network may cut the phone's connection.
    pub cuts: u8,
    /// Server crashes (gateways only).
    pub crashes: u8,
    /// Partitions of a gateway (its messages to the session service wait until the heal).
    pub partitions: u8,
    /// Users act only before this (ms).
    pub users_until: Millis,
    /// Faults only before this (ms).
    pub faults_until: Millis,
    /// The search's horizon (ms).
    pub horizon: Millis,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            cuts: 1,
            crashes: 1,
            partitions: 0,
            users_until: 2_000,
            faults_until: 2_000,
            horizon: 16_000,
        }
    }
}

impl Reconnect {
    /// The model, with `bugs` switched on.
    pub fn into_model(self, bugs: &Bugs) -> ChatModel {
        let topo = deployment(2, 2, 1, bugs);
        let scripts: Scripts = [(user(0), vec![Cue::any_time(send(1, 1))])]
            .into_iter()
            .collect();
        ChatModel {
            name: "reconnect",
            limits: Limits {
                crashable: vec![Host::Gateway(0), Host::Gateway(1)],
                droppable: vec![user(1)],
                // A partitioned gateway's reports to the session service arrive late.
                partitionable: vec![Host::Gateway(0), Host::Gateway(1)],
                ..Limits::new(self.horizon, self.faults_until, self.users_until)
            },
            budget: Budget {
                conn_drops: self.cuts,
                crashes: self.crashes,
                partitions: self.partitions,
                total: 2,
                ..Budget::default()
            },
            topo,
            scripts,
            reaches: vec![
                "a message is shown",
                "every message is delivered",
                "a drain completes",
                "a server crashes",
            ],
        }
    }
}

/// (c) A group of three: its creator posts one text, and the shard may crash in the middle of
/// the fan-out (after ✓, before or between its steps).
#[derive(Clone, Debug)]
pub struct Group {
    /// Shard crashes.
    pub crashes: u8,
    /// Users act only before this (ms).
    pub users_until: Millis,
    /// Faults only before this (ms).
    pub faults_until: Millis,
    /// The search's horizon (ms).
    pub horizon: Millis,
}

impl Default for Group {
    fn default() -> Self {
        Group {
            crashes: 1,
            users_until: 1_000,
            faults_until: 1_000,
            horizon: 10_000,
        }
    }
}

impl Group {
    /// The model, with `bugs` switched on.
    pub fn into_model(self, bugs: &Bugs) -> ChatModel {
        let topo = deployment(3, 1, 1, bugs);
        let scripts: Scripts = [(
            user(0),
            vec![
                Cue::any_time(Action::CreateGroup {
                    group: 0,
                    members: vec![UserId(1), UserId(2)],
                }),
                Cue::any_time(Action::SendGroup {
                    group: 0,
                    body: b"hello group".to_vec(),
                }),
            ],
        )]
        .into_iter()
        .collect();
        ChatModel {
            name: "group",
            limits: Limits {
                crashable: vec![Host::Shard(0)],
                in_flight_max: 10,
                ..Limits::new(self.horizon, self.faults_until, self.users_until)
            },
            budget: Budget {
                crashes: self.crashes,
                total: self.crashes,
                ..Budget::default()
            },
            topo,
            scripts,
            reaches: vec![
                "a message is shown",
                "every message is delivered",
                "a server crashes",
            ],
        }
    }
}

/// (d) Shard takeover with a zombie owner. User 0 sends a text; the shard owning the
/// conversation may be partitioned from everyone at any moment until `users_until` (with the
/// text's storage write still on its way, or not); user 0's phone goes offline, so its retries
/// wait. The partitioned owner's lease runs out and the other shard takes the slot over; user 1
/// answers (between `answer_from` and `answer_by`) and user 0 comes back online (between
/// `back_from` and `back_by`: before the heal, its retries reach the successor first; after
/// it, the zombie's held write lands first). Every order of deliveries, timer firings, the
/// partition's start and these cues is searched up to `faults_until`, when the partition
/// heals; the heal and what follows (the zombie's held frames arriving, in one order, then
/// everything settling) is one schedule: the held frames pile up one per timer of the zombie,
/// and every order of them is too many. With the fence, the zombie's late write is
/// refused and its text keeps the number the successor gave it; without it
/// (`unfenced-failover`) the write lands on a number the successor already gave a message.
#[derive(Clone, Debug)]
pub struct Failover {
    /// User 0 sends, and the partition begins, only before this (ms).
    pub users_until: Millis,
    /// User 1 answers from this (ms): past the owner's lease, when a partition began early.
    pub answer_from: Millis,
    /// ... and before the clock passes this.
    pub answer_by: Millis,
    /// The partition heals at this (ms).
    pub faults_until: Millis,
    /// User 0's phone is back online from this (ms) ...
    pub back_from: Millis,
    /// ... and before the clock passes this.
    pub back_by: Millis,
    /// The search's horizon (ms).
    pub horizon: Millis,
}

impl Default for Failover {
    fn default() -> Self {
        Failover {
            users_until: 500,
            answer_from: 4_000,
            answer_by: 4_500,
            faults_until: 6_000,
            back_from: 5_500,
            back_by: 7_000,
            horizon: 22_000,
        }
    }
}

impl Failover {
    /// The model, with `bugs` switched on.
    pub fn into_model(self, bugs: &Bugs) -> ChatModel {
        let topo = deployment(2, 1, 2, bugs);
        let owner = shard_for_conv(ConvId::direct(UserId(0), UserId(1)), 2);
        let scripts: Scripts = [
            (
                user(0),
                vec![
                    Cue::any_time(send(1, 1)),
                    // Offline within the first second, so the text's retries wait for the
                    // phone's return and the successor can hear the answer first.
                    Cue::between(0, 1_000, Action::GoOffline),
                    Cue::between(self.back_from, self.back_by, Action::GoOnline),
                ],
            ),
            (
                user(1),
                vec![Cue::between(self.answer_from, self.answer_by, send(0, 100))],
            ),
        ]
        .into_iter()
        .collect();
        ChatModel {
            name: "failover",
            limits: Limits {
                partitionable: vec![Host::Shard(owner)],
                ..Limits::new(self.horizon, self.faults_until, self.users_until)
            },
            budget: Budget {
                partitions: 1,
                total: 1,
                ..Budget::default()
            },
            topo,
            scripts,
            reaches: vec![
                "a message is shown",
                "every message is delivered",
                "a shard takes over",
            ],
        }
    }
}

/// (e) A phone's network changes (Wi-Fi to cellular): its side of the connection dies while
/// its gateway's side stays open, half-open, until the gateway's idle timeout. The phone
/// reconnects after its backoff (a fraction of a second) and registers again (a newer epoch); the old connection's late
/// `Unregister` reaches the session service seconds later. A text to that phone is sent after
/// that (between `text_from` and `text_by`). With epochs the late report is ignored; without
/// (`session-clear-without-epoch`) it clears the phone's live entry and the text waits in the
/// inbox for a drain that does not come before the horizon.
#[derive(Clone, Debug)]
pub struct Handover {
    /// Times the phone's network may change.
    pub changes: u8,
    /// Network changes only before this (ms).
    pub faults_until: Millis,
    /// The text is sent from this (ms): after the old gateway's idle timeout.
    pub text_from: Millis,
    /// ... and before the clock passes this.
    pub text_by: Millis,
    /// The search's horizon (ms).
    pub horizon: Millis,
}

impl Default for Handover {
    fn default() -> Self {
        Handover {
            changes: 1,
            faults_until: 2_000,
            text_from: 13_000,
            text_by: 15_000,
            horizon: 28_000,
        }
    }
}

impl Handover {
    /// The model, with `bugs` switched on.
    pub fn into_model(self, bugs: &Bugs) -> ChatModel {
        let topo = deployment(2, 2, 1, bugs);
        let scripts: Scripts = [(
            user(0),
            vec![Cue::between(self.text_from, self.text_by, send(1, 1))],
        )]
        .into_iter()
        .collect();
        ChatModel {
            name: "handover",
            limits: Limits {
                droppable: vec![user(1)],
                ..Limits::new(self.horizon, self.faults_until, 0)
            },
            budget: Budget {
                half_opens: self.changes,
                total: self.changes,
                ..Budget::default()
            },
            topo,
            scripts,
            reaches: vec![
                "a message is shown",
                "every message is delivered",
                "a drain completes",
                // The old socket's late `Unregister` was sent (a reconnect to the same gateway
                // replaces the socket at once, and the story does not happen).
                "a stale connection is unregistered",
            ],
        }
    }
}

/// (f) A compromised phone: u0 sends u1 a text while u2, with valid credentials for its own
/// account only, sends crafted requests one after another at any moment: a text to u0 signed
/// as u1, a post into u0 and u1's chat, a fetch of that chat's log, a read receipt for it to
/// u0, and a pull of a group it is not in. No faults: the search is over every interleaving of
/// the attack with the honest exchange, so a check the servers skip at one moment is found.
#[derive(Clone, Debug)]
pub struct Adversary {
    /// Users act only before this (ms).
    pub users_until: Millis,
    /// The search's horizon (ms).
    pub horizon: Millis,
}

impl Default for Adversary {
    fn default() -> Self {
        Adversary {
            users_until: 1_000,
            horizon: 6_000,
        }
    }
}

impl Adversary {
    /// The model, with `bugs` switched on.
    pub fn into_model(self, bugs: &Bugs) -> ChatModel {
        use chatsim_system::attack::Attack;
        let topo = deployment(3, 1, 1, bugs);
        let (u0, u1) = (UserId(0), UserId(1));
        let attacks = [
            Attack::Impersonate { to: u0, victim: u1 },
            Attack::PostForeign { a: u0, b: u1 },
            Attack::FetchForeign {
                conv: ConvId::direct(u0, u1),
            },
            Attack::ForgeReceipt { a: u0, b: u1 },
            Attack::PullForeign { group: 0 },
        ];
        let scripts: Scripts = [
            (user(0), vec![Cue::any_time(send(1, 1))]),
            (
                user(2),
                attacks
                    .into_iter()
                    .map(|a| Cue::any_time(Action::Attack(a)))
                    .collect(),
            ),
        ]
        .into_iter()
        .collect();
        ChatModel {
            name: "adversary",
            limits: Limits::new(self.horizon, self.users_until, self.users_until),
            budget: Budget::default(),
            topo,
            scripts,
            reaches: vec![
                "a message is shown",
                "every message is delivered",
                "an outsider is refused",
            ],
        }
    }
}

/// The model named `name` with `bugs` on, if there is one.
pub fn by_name(name: &str, bugs: &Bugs) -> Option<ChatModel> {
    Some(match name {
        "direct" => Direct::default().into_model(bugs),
        "read" => Direct {
            chat_open: true,
            // Lost and repeated frames make the gaps reading must not run ahead of; crashes
            // add nothing to reading and triple the search.
            crashes: 0,
            ..Direct::default()
        }
        .into_model(bugs),
        "reconnect" => Reconnect::default().into_model(bugs),
        "group" => Group::default().into_model(bugs),
        "failover" => Failover::default().into_model(bugs),
        "handover" => Handover::default().into_model(bugs),
        "adversary" => Adversary::default().into_model(bugs),
        "direct-3" => ChatModel {
            name: "direct-3",
            ..Direct {
                messages: 3,
                ..Direct::default()
            }
            .into_model(bugs)
        },
        "direct-2-faults" => ChatModel {
            name: "direct-2-faults",
            ..Direct {
                faults: 2,
                ..Direct::default()
            }
            .into_model(bugs)
        },
        _ => return None,
    })
}

/// The model a bug shows in, when it can show in a small one.
pub fn model_for(bug: Bug) -> Option<&'static str> {
    Some(match bug {
        Bug::AckBeforePersist
        | Bug::NoClientDedup
        | Bug::NewIdPerRetry
        | Bug::DeleteInboxOnPush
        | Bug::NoGapRepair
        | Bug::FireAndForgetReceipts => "direct",
        Bug::ReadBeforeDelivered => "read",
        Bug::EarlyQueueEmpty | Bug::SocketWriteIsDelivery => "reconnect",
        Bug::UnfencedFailover => "failover",
        Bug::SessionClearWithoutEpoch => "handover",
        Bug::TrustClientSender
        | Bug::SendSkipsMembership
        | Bug::FetchSkipsMembership
        | Bug::PullSkipsMembership
        | Bug::ReceiptFromAnyone => "adversary",
        _ => return None,
    })
}
