//! Coverage probes: named facts about rare and defensive branches, so a swarm can say which
//! of them its runs reached (FoundationDB's `CODE_PROBE`, TigerBeetle's marks).
//!
//! A machine that takes such a branch pushes [`Effect::Probe`](crate::Effect::Probe); the
//! [router](crate::route) hands it to the engine, which counts it beside the run, never in the
//! history or the frame digest (a probe changes no behaviour and no trace hash). A probe that
//! no scenario reaches is a defect of the scenarios: the mechanism it names is never tested.
//!
//! Each probe has a name that reads as a fact and a one-line reason it matters.

/// Declare the probes: variant, name, reason.
macro_rules! probes {
    ($($(#[$doc:meta])* $variant:ident => $name:literal, $reason:literal;)+) => {
        /// A rare or defensive branch a machine took.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Probe {
            $($(#[$doc])* $variant,)+
        }

        impl Probe {
            /// Every probe, in declaration order.
            pub const ALL: &'static [Probe] = &[$(Probe::$variant,)+];

            /// The probe's name, as reports print it.
            pub fn name(self) -> &'static str {
                match self {
                    $(Probe::$variant => $name,)+
                }
            }

            /// Why reaching it matters.
            pub fn reason(self) -> &'static str {
                match self {
                    $(Probe::$variant => $reason,)+
                }
            }
        }
    };
}

probes! {
    // Device: ordering, dedup, gaps.
    /// A copy of a message already shown arrived and was dropped by its id.
    DuplicateDropped => "device: duplicate dropped by id",
        "dedup is what keeps retries and redeliveries from showing twice";
    /// Messages after a hole were held back.
    GapDetected => "device: gap detected",
        "order by sequence number must hold back what comes after a hole";
    /// The device asked the server for a missing range.
    GapFetched => "device: gap fetched",
        "a hole that the live path will not fill must be repaired by a fetch";
    /// A delivered copy could not be opened.
    Undecryptable => "device: copy undecryptable",
        "a copy sealed for another key must be recorded, never shown";
    /// A copy sealed for this device did not open (its sender tampered with it): skipped,
    /// and the chat moved on past it.
    TamperedCopySkipped => "device: tampered copy skipped",
        "one bad copy from a compromised sender must not hold back the chat behind it";
    /// A device linked mid-run passed a direct text stored before its link, with no copy for
    /// it.
    StoredBeforeLinkPassed => "device: text stored before its link passed",
        "a new device must move past what was sealed before it existed, without a hole";
    /// A receipt from a device that may have no copy of a text of ours covered it, and was
    /// not counted towards its ✓✓.
    ReceiptWithoutCopyIgnored => "device: receipt from a device without a copy not counted",
        "a device that passed a text it never had must not give that text ✓✓";
    // Device: connection and outbox.
    /// A polling phone's request answered everything it carried and closed.
    PollClosed => "device: poll answered and closed",
        "a polling request must close only after its drain, sends and receipts are answered";
    /// A long poll's hold ran out with nothing delivered: the phone asked again.
    LongPollHoldExpired => "device: long poll's hold ran out",
        "a held request must end before the gateway's idle timeout and be asked again";
    /// No heartbeat answer came in time: the phone gave up on its connection.
    HeartbeatTimedOut => "device: heartbeat timed out",
        "a half-open connection is found only by the phone's own keepalive";
    /// The handshake did not finish in time.
    HandshakeTimedOut => "device: handshake timed out",
        "a gateway that accepts and never answers must not hold the phone forever";
    /// Texts left unacknowledged by a lost connection were sent again on a new one.
    OutboxResentAfterReconnect => "device: outbox resent after reconnect",
        "a text sent into a dying connection is delivered only by its resend";
    /// A text's retry timer fired while it was still unacknowledged.
    OutboxRetried => "device: outbox retry fired",
        "a lost send or a lost ✓ is recovered only by the retry";
    /// The server refused a group text sealed for an old membership; it goes again.
    StaleMembersResealed => "device: group text resealed for new members",
        "a text sealed for yesterday's members must not reach only them";
    /// An inbox drain needed more than one page.
    DrainSecondPage => "device: drain needed a second page",
        "a backlog larger than a page must drain completely";
    /// An inbox drain needed more than two pages.
    DrainManyPages => "device: drain needed more than two pages",
        "the cursor must carry a drain across every page, not only the second";
    /// A push woke the app in the background.
    WokenByPush => "device: woken by a push",
        "a backgrounded phone learns of messages only through pushes";
    /// A receipt mark was sent again (the shard had not confirmed it).
    ReceiptResent => "device: receipt resent",
        "a lost receipt must be covered by the resend";
    // Gateway.
    /// A connection idle past the gateway's timeout was closed.
    GatewayIdleClosed => "gateway: idle connection closed",
        "a half-open connection must not keep a device registered here";
    /// A newer connection of the same device replaced an older one here.
    GatewayConnectionReplaced => "gateway: older connection replaced",
        "two live connections of one device would split its traffic";
    /// The session service said a newer connection exists elsewhere; this one was closed.
    GatewayStaleConnectionClosed => "gateway: stale connection closed",
        "a device connected twice must be served by its newest connection";
    /// A registration was asked for again (the answer was lost).
    GatewayRegisterRetried => "gateway: register retried",
        "a lost registration must not leave a device unreachable";
    /// A lease holder's announcement older than one heard was ignored.
    GatewayStaleOwnerIgnored => "gateway: stale owner announcement ignored",
        "a paused old shard must not pull traffic back";
    // Session service.
    /// A registration under an older epoch than the table's was answered not current.
    SessionStaleRegisterRefused => "session: stale registration refused",
        "a late register of an old connection must not win";
    /// An unregister under an older epoch was ignored.
    SessionLateUnregisterIgnored => "session: late unregister ignored",
        "a late disconnect must not erase a newer connection (the epoch fence)";
    /// A gateway's alive report cleared entries it no longer holds.
    SessionStaleEntriesCleared => "session: stale entries cleared",
        "a crashed gateway's registrations must not outlive it";
    /// A gateway's alive report, listed before a registration it sent later, arrived after it.
    SessionAliveOlderThanRegister => "session: alive report older than a registration",
        "a list made before a connection must not clear it (they race over a replaced link)";
    /// A presence change settled back before its debounce ran out.
    PresenceFlapAbsorbed => "session: presence flap absorbed",
        "a reconnect must not flicker a contact offline";
    // Shard.
    /// A push sent to the gateway of a device's last frame found it gone: asked anew at once.
    ShardStaleHintCorrected => "shard: push to a device's last gateway missed it",
        "a device that moved must not wait out a retry for what it could have now";
    /// A send was refused because its conversation's queue was full.
    ShardQueueFull => "shard: conversation queue full",
        "a flood must be refused, not buffered without bound";
    /// A device asked how far a group reaches without being a member (a compromised phone).
    PullRefused => "shard: pull by a non-member refused",
        "a group's length and pace must stay its members' business";
    /// Storage answered that an append was stored before (by an earlier life or a retry).
    ShardAppendDuplicate => "shard: append already stored",
        "a retried send must get its original sequence number, not a second one";
    /// Storage refused an append whose sequence number was taken.
    ShardAppendConflict => "shard: append conflict",
        "two owners numbering one conversation must be caught by storage";
    /// Storage refused a write under a stale lease epoch.
    ShardFenced => "shard: write fenced by a newer epoch",
        "a paused old owner's late write must stay out";
    /// The shard took over a slot whose lease had run out.
    ShardTookOver => "shard: took over a slot",
        "failover must move a dead shard's conversations";
    /// A push to a connected device was retried (no ack yet).
    ShardPushRetried => "shard: push retried",
        "a push lost on the way must be sent again while the device is connected";
    /// A fan-out step was sent again (storage had not answered).
    ShardFanoutStepRetried => "shard: fan-out step retried",
        "a lost fan-out step must not stall a group";
    /// A restarted shard resumed fan-out jobs left by its predecessor.
    ShardFanoutResumed => "shard: fan-out job resumed",
        "group members must not miss messages a crashed shard was fanning out";
    /// A member was added to a group while one of its fan-out jobs was still in progress.
    ShardMemberAddedMidFanout => "shard: member added during a fan-out",
        "a job's devices are fixed at its number: the newcomer gets none of what came before";
    /// A member was removed from a group while one of its fan-out jobs was still in progress.
    ShardMemberRemovedMidFanout => "shard: member removed during a fan-out",
        "a job's devices are fixed at its number: the leaver still gets what came before";
    /// A storage request's timer fired (no answer in time) and it went again.
    ShardStorageRetried => "shard: storage request retried",
        "a lost append or load must be retried, not forgotten";
    // Storage.
    /// An append of a message id already stored was answered with its stored number.
    StorageAppendIdempotent => "storage: append already stored",
        "appends must be idempotent by message id";
    /// An append or fan-out step under a stale lease epoch was refused.
    StorageFenceRefused => "storage: stale epoch refused",
        "the fence is what keeps an old owner's writes out";
    /// A relayed body was deleted once the last device that was owed it took it.
    StorageRelayBodyDeleted => "storage: relay body deleted",
        "the relay model keeps a text only until every device has it";
    /// A message was refused for lacking a copy for a linked device.
    StorageStaleDevicesRefused => "storage: stale device list refused",
        "a sender must learn of a device linked since it last looked";
    /// A lease was granted to a new holder after the old one expired.
    StorageLeaseMoved => "storage: lease moved to a new holder",
        "failover hands a slot over only after its lease ran out";
    /// A write was refused because the disk was full.
    StorageDiskFull => "storage: write refused, disk full",
        "a full disk must cost a retry, never an acknowledged message";
    /// A sync was armed while the disk was slow.
    StorageSyncSlowed => "storage: sync slowed by the disk",
        "an ack must wait for a slow fsync, however long it takes";
    // Push provider.
    /// A second notify for a device with a push pending was collapsed into it.
    PushCoalesced => "push: notification coalesced",
        "the provider collapses repeats, as APNs does";
    /// A push was lost.
    PushLost => "push: notification lost",
        "push is best effort: the inbox sync must cover a lost one";
    // Replication.
    /// A coordinator rebuilt its view from its replicas.
    CoordinatorRebuilt => "coordinator: view rebuilt from replicas",
        "a restarted coordinator must serve everything a quorum acknowledged";
    /// A rebuild found operations held by fewer than a quorum and wrote them again.
    CoordinatorRepaired => "coordinator: minority operations repaired",
        "what is served after a rebuild must survive the next one";
    /// An operation was sent again to replicas that had not acknowledged it.
    CoordinatorResent => "coordinator: replication resent",
        "a replica that missed an operation must get it again";
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    // Reports key probes by name: two with one name would merge their counts.
    #[test]
    fn every_probe_has_its_own_name_and_a_reason() {
        let names: BTreeSet<&str> = Probe::ALL.iter().map(|p| p.name()).collect();
        assert_eq!(names.len(), Probe::ALL.len());
        assert!(Probe::ALL.len() >= 40, "{} probes", Probe::ALL.len());
        assert!(Probe::ALL.iter().all(|p| !p.reason().is_empty()));
    }
}
