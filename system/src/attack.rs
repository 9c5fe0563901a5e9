//! What a compromised device may try: one crafted request per [`Attack`], sent on the device's
//! own authenticated connection. The attacker holds valid credentials for its own account and
//! nothing else, which is the threat Signal's server is built for (any client may be hostile).
//! The world draws attacks per seed ([`crate::Action::Attack`]); the device's `attack` module
//! sends them and records what came back; the judges decide whether a server let one through.
//! Each names the defence that must stop it, and the zoo switch that removes that defence.

use crate::proto::{ConvId, DeviceId, UserId};
use serde::{Deserialize, Serialize};

/// Message counters an attack uses for ids it makes up: far past any counter a run's honest
/// devices reach, so a made-up id never collides with one of theirs by chance.
pub const FORGED_N_BASE: u32 = 1 << 30;

/// How far a forged read receipt claims to reach: past any conversation a run writes.
pub const FORGED_RECEIPT_UPTO: u64 = 1_000;

/// One crafted request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Attack {
    /// Send `to` a text whose id names `victim`'s phone as its author (the shard must check
    /// the id's device against the connection's; zoo: `trust-client-sender`).
    Impersonate {
        /// Whom the text goes to (a chat the attacker is in).
        to: UserId,
        /// Whose name it carries.
        victim: UserId,
    },
    /// Post a text into the direct chat of two other users (the shard checks the poster is in
    /// it; zoo: `send-skips-membership`).
    PostForeign {
        /// One member of the chat.
        a: UserId,
        /// The other.
        b: UserId,
    },
    /// Ask for a conversation's log it is not in: a direct chat of two others (the shard
    /// checks; zoo: `fetch-skips-membership`) or a group (storage shows a reader only what it
    /// was a member for; zoo: `group-log-to-anyone`).
    FetchForeign {
        /// The conversation.
        conv: ConvId,
    },
    /// Ask how far a group's log reaches, not being a member (the shard checks; zoo:
    /// `pull-skips-membership`).
    PullForeign {
        /// The group's number.
        group: u32,
    },
    /// A read receipt for the direct chat of two other users, claiming everything read, sent
    /// to `a`'s devices (the shard checks the reader is in the chat; zoo:
    /// `receipt-from-anyone`).
    ForgeReceipt {
        /// The member told (whose texts it claims to have read).
        a: UserId,
        /// The other member.
        b: UserId,
    },
    /// Add itself to a group it is not in (the shard checks the changer is a member; zoo:
    /// `no-member-check`).
    HijackGroup {
        /// The group's number.
        group: u32,
    },
    /// Send the id of its own latest stored message again with other content (dedup by id, on
    /// the shard and on every phone, keeps what was shown).
    ReuseId,
    /// Send a text into a conversation it is in whose ciphertext was tampered with, so no
    /// recipient can open it (phones record it as unreadable and move past it: one bad copy
    /// must not hold back the chat behind it).
    Tamper {
        /// The chat (direct with another user, or a group).
        conv: ConvId,
    },
}

/// The attacks' names in scenario files, in the order a plan draws from.
pub const ATTACK_NAMES: [&str; 8] = [
    "impersonate",
    "post-foreign",
    "fetch-foreign",
    "pull-foreign",
    "forge-receipt",
    "hijack-group",
    "reuse-id",
    "tamper",
];

impl Attack {
    /// Its name in a scenario file (one of [`ATTACK_NAMES`]).
    pub fn name(&self) -> &'static str {
        match self {
            Attack::Impersonate { .. } => "impersonate",
            Attack::PostForeign { .. } => "post-foreign",
            Attack::FetchForeign { .. } => "fetch-foreign",
            Attack::PullForeign { .. } => "pull-foreign",
            Attack::ForgeReceipt { .. } => "forge-receipt",
            Attack::HijackGroup { .. } => "hijack-group",
            Attack::ReuseId => "reuse-id",
            Attack::Tamper { .. } => "tamper",
        }
    }

    /// What `by` tries, in one line for stories and reports.
    pub fn describe(&self, by: DeviceId) -> String {
        match self {
            Attack::Impersonate { to, victim } => {
                format!("{by} (compromised) sends {to} a text signed as {victim}'s phone")
            }
            Attack::PostForeign { a, b } => {
                format!("{by} (compromised) posts into {}", ConvId::direct(*a, *b))
            }
            Attack::FetchForeign { conv } => {
                format!("{by} (compromised) asks for the log of {conv}")
            }
            Attack::PullForeign { group } => {
                format!(
                    "{by} (compromised) asks how far {} reaches",
                    ConvId::group(*group)
                )
            }
            Attack::ForgeReceipt { a, b } => format!(
                "{by} (compromised) tells {a} it read all of {}",
                ConvId::direct(*a, *b)
            ),
            Attack::HijackGroup { group } => {
                format!(
                    "{by} (compromised) adds itself to {}",
                    ConvId::group(*group)
                )
            }
            Attack::ReuseId => {
                format!(
                    "{by} (compromised) replays its latest stored message's id with other content"
                )
            }
            Attack::Tamper { conv } => {
                format!("{by} (compromised) sends {conv} a text with tampered ciphertext")
            }
        }
    }
}
