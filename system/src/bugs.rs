//! The bug zoo: the classic wrong answers to "design WhatsApp", as switches. All are off in the
//! real design; a run turns some on to show that the testbed sees each mistake (a checker that
//! never fails proves nothing). Each entry names the mistake, the invariant expected to catch
//! it and the scenario that shows it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// One classic mistake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Bug {
    /// The shard answers ✓ before storage has synced the message.
    AckBeforePersist,
    /// Devices order a conversation by the sender's clock, showing each message on arrival.
    OrderByTimestamp,
    /// Devices show every copy they receive.
    NoClientDedup,
    /// A retry gets a fresh client id, so the server cannot recognise it.
    NewIdPerRetry,
    /// No session service: a shard pushes only through the sender's gateway.
    NoSessionService,
    /// A disconnect clears the session entry whatever its epoch.
    SessionClearWithoutEpoch,
    /// Nothing is parked for offline recipients.
    NoOfflineInbox,
    /// The inbox entry is deleted when the shard pushes, not when the device acks.
    DeleteInboxOnPush,
    /// The gateway treats a successful socket write as delivery and acks for the device.
    SocketWriteIsDelivery,
    /// A drain cut short by a lost connection is taken as complete, so the next connection
    /// fetches no backlog.
    EarlyQueueEmpty,
    /// A reader moves past a sequence number it could not fetch, taking it for one reserved
    /// but never to be written (a rolled-back auto-increment): a message that was only late
    /// (its shard down, a link cut) is dropped when it arrives.
    ReaderSkipsUnfinishedSeq,
    /// Devices neither hold back after a gap nor fetch it: they show what they have.
    NoGapRepair,
    /// A shard that takes over a conversation does not fence out the old owner.
    UnfencedFailover,
    /// The sender's ✓ waits for the group fan-out.
    SyncFanout,
    /// "Mark read" covers messages not yet delivered: the shard stretches a read receipt to
    /// the conversation's last sequence number, and the phone calls read whatever arrives in
    /// an open chat, even held back behind a gap.
    ReadBeforeDelivered,
    /// Receipts are sent once and never retried.
    FireAndForgetReceipts,
    /// Only the links are encrypted: servers see plaintext.
    TlsOnly,
    /// Presence changes are broadcast to every user, not to those looking.
    PresenceBroadcastAll,
    /// Devices reconnect after a fixed delay, all in lockstep.
    NoReconnectJitter,
    /// The shard sequences a group post without checking the sender is a member.
    NoMemberCheck,
    /// Replicated storage counts one replica as a quorum: a write is acknowledged once one
    /// replica has it, and a restarted coordinator rebuilds from the first replica to answer.
    QuorumOfOne,
    /// Storage takes a direct message sealed for whatever devices the sender knew, so one
    /// that never heard of a newly linked device leaves it without a copy.
    StaleDeviceList,
    /// The phone counts its own pings as signs of life, so a connection that swallows
    /// everything (a black hole) never times out on its side.
    HeartbeatHearsOwnPings,
    /// The phone takes the first drain page for the whole backlog: it never asks for the next.
    DrainFirstPageOnly,
    /// Storage recognises a retried append by the sender's user and counter, not its device,
    /// so a companion's message is taken for a repeat of the phone's and acked as stored.
    DedupByUser,
    /// The session service takes every registration, whatever its epoch: a late one from a
    /// gateway the phone has left overwrites the newer entry.
    SessionRegisterLastWins,
    /// The shard's ✓ carries the conversation's next number (its counter after the increment),
    /// not the number the message was stored under.
    AckSeqOffByOne,
    /// A phone's receipt says "through" where it means "up to": it covers one number more than
    /// the phone has shown.
    ReceiptUptoOffByOne,
    /// Storage keeps the index it spots retries by in memory only: after a restart a retried
    /// append it already stored is stored again, under a new number.
    DedupIndexNotRecovered,
    /// The shard takes the sender a message id names at its word, without checking it
    /// against the device the connection authenticated.
    TrustClientSender,
    /// The shard sequences a direct message without checking the sender is in the chat.
    SendSkipsMembership,
    /// The shard serves a direct chat's log to any device that asks for it.
    FetchSkipsMembership,
    /// Storage hands a group's log to any reader, member or not.
    GroupLogToAnyone,
    /// The shard tells anyone who asks how far a group's log reaches.
    PullSkipsMembership,
    /// The shard stores and passes on a receipt for a direct chat from a device not in it.
    ReceiptFromAnyone,
    /// A phone treats a copy that does not open like a missing one: receipts stop short of
    /// it (and a direct chat waits for it), so one tampered copy from a compromised sender
    /// stalls the chat's ticks for every honest sender after it.
    TamperedCopyHolds,
}

/// What the zoo says about one bug.
#[derive(Clone, Copy, Debug, Hash)]
pub struct BugInfo {
    /// The bug.
    pub bug: Bug,
    /// Its name on the command line.
    pub name: &'static str,
    /// The mistake in one line.
    pub mistake: &'static str,
    /// The invariant (or bound check) expected to catch it.
    pub caught_by: &'static str,
    /// The scenario file (stem) that shows it.
    pub scenario: &'static str,
    /// False while the part of the design it breaks is not built yet (groups, receipts,
    /// presence, encryption, failover).
    pub available: bool,
}

/// Every bug in the zoo.
pub const ZOO: [BugInfo; 36] = [
    BugInfo { bug: Bug::AckBeforePersist, name: "ack-before-persist", mistake: "the shard answers sent ✓ before storage has synced the message", caught_by: "no_loss", scenario: "shard-crash-after-persist", available: true },
    BugInfo { bug: Bug::OrderByTimestamp, name: "order-by-timestamp", mistake: "phones order a conversation by the sender's clock and show messages on arrival", caught_by: "conversation_order", scenario: "clock-skew", available: true },
    BugInfo { bug: Bug::NoClientDedup, name: "no-client-dedup", mistake: "phones show every copy they receive instead of dropping repeats by message id", caught_by: "exactly_once", scenario: "partition-heal", available: true },
    BugInfo { bug: Bug::NewIdPerRetry, name: "new-id-per-retry", mistake: "a retry gets a fresh client id, so the server stores the message twice", caught_by: "exactly_once", scenario: "partition-heal", available: true },
    BugInfo { bug: Bug::NoSessionService, name: "no-session-service", mistake: "no session service: a shard pushes only through the sender's own gateway", caught_by: "liveness", scenario: "smoke", available: true },
    BugInfo { bug: Bug::SessionClearWithoutEpoch, name: "session-clear-without-epoch", mistake: "a late disconnect clears the session entry of a newer connection", caught_by: "liveness", scenario: "session-race", available: true },
    BugInfo { bug: Bug::NoOfflineInbox, name: "no-offline-inbox", mistake: "nothing is parked for offline recipients", caught_by: "no_loss", scenario: "silent-phone", available: true },
    BugInfo { bug: Bug::DeleteInboxOnPush, name: "delete-inbox-on-push", mistake: "the inbox entry is deleted when the shard pushes, not when the phone acks", caught_by: "no_loss", scenario: "silent-phone", available: true },
    BugInfo { bug: Bug::SocketWriteIsDelivery, name: "socket-write-is-delivery", mistake: "the gateway acks for the phone once the socket write succeeds", caught_by: "no_loss", scenario: "silent-phone", available: true },
    BugInfo { bug: Bug::EarlyQueueEmpty, name: "early-queue-empty", mistake: "a drain cut short by a lost connection counts as complete, so the next connection fetches no backlog", caught_by: "liveness", scenario: "slow-drain", available: true },
    BugInfo { bug: Bug::ReaderSkipsUnfinishedSeq, name: "reader-skips-unfinished-seq", mistake: "a phone moves past a gap one fetch did not fill, taking the number for reserved and never written", caught_by: "no_loss", scenario: "partition-heal", available: true },
    BugInfo { bug: Bug::NoGapRepair, name: "no-gap-repair", mistake: "phones show what they have instead of holding back after a gap and fetching it", caught_by: "no_loss", scenario: "partition-heal", available: true },
    BugInfo { bug: Bug::UnfencedFailover, name: "unfenced-failover", mistake: "a shard taking over a conversation does not fence out the old owner", caught_by: "conversation_order", scenario: "shard-failover", available: true },
    BugInfo { bug: Bug::SyncFanout, name: "sync-fanout", mistake: "the shard writes and pushes to each group member in turn before answering ✓", caught_by: "ack_latency", scenario: "group-fanout", available: true },
    BugInfo { bug: Bug::ReadBeforeDelivered, name: "read-before-delivered", mistake: "\"mark read\" covers messages not yet shown: the server marks the chat read up to its log's end", caught_by: "receipts", scenario: "receipts", available: true },
    BugInfo { bug: Bug::FireAndForgetReceipts, name: "fire-and-forget-receipts", mistake: "receipts are sent once and never retried", caught_by: "receipts", scenario: "receipts", available: true },
    BugInfo { bug: Bug::TlsOnly, name: "tls-only", mistake: "only links are encrypted: servers see plaintext", caught_by: "e2e_confidential", scenario: "smoke", available: true },
    BugInfo { bug: Bug::PresenceBroadcastAll, name: "presence-broadcast-all", mistake: "presence changes go to every user, not to those looking", caught_by: "presence_load", scenario: "presence", available: true },
    BugInfo { bug: Bug::NoReconnectJitter, name: "no-reconnect-jitter", mistake: "phones reconnect after fixed delays, all in lockstep", caught_by: "reconnect_load", scenario: "reconnect-storm", available: true },
    BugInfo { bug: Bug::NoMemberCheck, name: "no-member-check", mistake: "the shard sequences a group post without checking that the sender is a member", caught_by: "authz", scenario: "groups", available: true },
    BugInfo { bug: Bug::StaleDeviceList, name: "stale-device-list", mistake: "a message sealed for the sender's stale device list is stored, leaving a newly linked device without a copy", caught_by: "no_loss", scenario: "device-added", available: true },
    BugInfo { bug: Bug::QuorumOfOne, name: "quorum-of-one", mistake: "replicated storage acks a write on one replica and rebuilds from the first to answer", caught_by: "no_loss", scenario: "replica-crash", available: true },
    BugInfo { bug: Bug::HeartbeatHearsOwnPings, name: "heartbeat-hears-own-pings", mistake: "the phone counts its own pings as signs of life, so a black-holed connection never times out", caught_by: "liveness", scenario: "blackhole", available: true },
    BugInfo { bug: Bug::DrainFirstPageOnly, name: "drain-first-page-only", mistake: "the phone takes the first inbox page for the whole backlog and never asks for the next", caught_by: "liveness", scenario: "long-absence", available: true },
    BugInfo { bug: Bug::DedupByUser, name: "dedup-by-user", mistake: "storage spots a retry by user and counter, not device, so a companion's text is acked as a repeat", caught_by: "no_loss", scenario: "multi-device", available: true },
    BugInfo { bug: Bug::AckSeqOffByOne, name: "ack-seq-off-by-one", mistake: "the sender's ✓ carries the conversation's next number, not the one its message was stored under", caught_by: "no_loss", scenario: "smoke", available: true },
    BugInfo { bug: Bug::ReceiptUptoOffByOne, name: "receipt-upto-off-by-one", mistake: "a phone's receipt covers one number more than it has shown (\"through\" taken for \"up to\")", caught_by: "receipts", scenario: "receipts", available: true },
    BugInfo { bug: Bug::DedupIndexNotRecovered, name: "dedup-index-not-recovered", mistake: "storage's index of stored message ids lives in memory only, so after a restart a retry is stored twice", caught_by: "no_loss", scenario: "shard-crash-after-persist", available: true },
    BugInfo { bug: Bug::TrustClientSender, name: "trust-client-sender", mistake: "the shard takes the sender a message id names at its word, not the connection's authenticated device", caught_by: "authz", scenario: "malicious", available: true },
    BugInfo { bug: Bug::SendSkipsMembership, name: "send-skips-membership", mistake: "the shard sequences a direct message without checking that the sender is in the chat", caught_by: "authz", scenario: "malicious", available: true },
    BugInfo { bug: Bug::FetchSkipsMembership, name: "fetch-skips-membership", mistake: "the shard serves a direct chat's log to any device that asks", caught_by: "authz", scenario: "malicious", available: true },
    BugInfo { bug: Bug::GroupLogToAnyone, name: "group-log-to-anyone", mistake: "storage hands a group's log to any reader, member or not", caught_by: "authz", scenario: "malicious", available: true },
    BugInfo { bug: Bug::PullSkipsMembership, name: "pull-skips-membership", mistake: "the shard tells anyone who asks how far a group's log reaches", caught_by: "authz", scenario: "malicious", available: true },
    BugInfo { bug: Bug::ReceiptFromAnyone, name: "receipt-from-anyone", mistake: "the shard stores and passes on a direct chat's receipt from a device not in the chat", caught_by: "authz", scenario: "malicious", available: true },
    BugInfo { bug: Bug::TamperedCopyHolds, name: "tampered-copy-holds", mistake: "a copy that does not open is treated as missing, so one tampered text stops the chat's receipts behind it", caught_by: "receipts", scenario: "malicious", available: true },
    BugInfo { bug: Bug::SessionRegisterLastWins, name: "session-register-last-wins", mistake: "the session service takes every registration whatever its epoch, so a late one from an old gateway wins", caught_by: "liveness", scenario: "session-race", available: true },
];

impl Bug {
    /// The zoo's entry for this bug.
    pub fn info(self) -> &'static BugInfo {
        ZOO.iter()
            .find(|i| i.bug == self)
            .expect("every Bug has a ZOO entry")
    }
}

impl fmt::Display for Bug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.info().name)
    }
}

/// A bug name that is not in the zoo.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct UnknownBug(pub String);

impl fmt::Display for UnknownBug {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = ZOO.iter().map(|i| i.name).collect();
        write!(
            f,
            "unknown bug `{}`; the zoo has: {}",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownBug {}

impl FromStr for Bug {
    type Err = UnknownBug;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ZOO.iter()
            .find(|i| i.name == s)
            .map(|i| i.bug)
            .ok_or_else(|| UnknownBug(s.to_string()))
    }
}

/// The set of bugs switched on.
#[derive(Clone, Debug, Hash, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bugs(BTreeSet<Bug>);

impl Bugs {
    /// No bugs: the real design.
    pub fn none() -> Bugs {
        Bugs::default()
    }

    /// Whether `bug` is on.
    pub fn has(&self, bug: Bug) -> bool {
        self.0.contains(&bug)
    }

    /// The bugs switched on, in a fixed order.
    pub fn iter(&self) -> impl Iterator<Item = Bug> + '_ {
        self.0.iter().copied()
    }

    /// Whether any bug is on.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<Bug> for Bugs {
    fn from_iter<I: IntoIterator<Item = Bug>>(iter: I) -> Self {
        Bugs(iter.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every bug has exactly one entry and its name parses back to it.
    #[test]
    fn every_bug_round_trips_through_its_name() {
        for info in &ZOO {
            assert_eq!(info.name.parse::<Bug>(), Ok(info.bug));
            assert_eq!(info.bug.info().name, info.name);
        }
        let names: BTreeSet<&str> = ZOO.iter().map(|i| i.name).collect();
        assert_eq!(names.len(), ZOO.len());
        assert!("ack-after-persist"
            .parse::<Bug>()
            .unwrap_err()
            .to_string()
            .contains("ack-before-persist"));
    }
}
