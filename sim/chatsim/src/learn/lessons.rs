//! The lessons themselves: the design's common mistakes, the incidents of
//! shared/failure-stories.md, and the trade-offs, with the seeds they show on.

use super::{Kind, Lesson};
use chatsim_system::bugs::Bug;

const COMMON: &str = "the design's common mistakes";
const TRADE_OFF: &str = "a trade-off, measured";

/// Every lesson, in the order a learner should take them.
pub static LESSONS: &[Lesson] = &[
    Lesson {
        name: "polling",
        title: "A persistent connection, not HTTP polling",
        from: COMMON,
        choice: "Chat needs the server to speak first. Short polling asks every few seconds, so a message waits up to an interval and every poll costs a full request even when nothing came; long polling holds each request open until something arrives, which cuts the wait but still pays a whole request (its headers and authentication) for nearly every message, where a WebSocket sends one small frame.",
        fix: "Hold one persistent connection per device (WebSocket, or MQTT/XMPP) with a heartbeat only on an idle link; fall back to long polling only where a network blocks it.",
        kind: Kind::TradeOff {
            scenario: "transports",
            seed: 1,
            ways: &[
                ("websocket: one persistent connection", &[("transport = \"mixed\"", "transport = \"websocket\"")]),
                ("long-poll: held until something arrives", &[("transport = \"mixed\"", "transport = \"long-poll\"")]),
                ("short-poll: ask every 2 s", &[("transport = \"mixed\"", "transport = \"short-poll\"")]),
            ],
            about: &["display p50 ms", "display p99 ms", "requests per delivery", "link bytes per delivery", "idle phone: requests/h", "idle phone: bytes/h"],
        },
        questions: &[
            ("Isn't long polling as fast as a WebSocket?", "Nearly, for one message: the held request answers at once. But each answer ends the request, so a burst of messages pays a new request (and its authentication) per message, and the server holds a request per idle user anyway."),
            ("What does the heartbeat cost a WebSocket?", "A ping frame of a few bytes per interval on an idle link; chatsim pings every 2 s of simulated time, which is why an idle websocket phone sends more frames here than a long poll, yet fewer bytes than a short poll."),
            ("How many connections can one gateway hold?", "A few hundred thousand to a million idle ones with an event loop and small buffers (see chatsim capacity and the load reports)."),
        ],
    },
    Lesson {
        name: "ack-before-persist",
        title: "Acknowledge only what is durable",
        from: COMMON,
        choice: "The sender's ✓ promises the message will arrive. If the server answers before storage has synced it, a crash in between loses a message its sender already saw as sent.",
        fix: "Answer ✓ only after storage (a quorum of replicas) has the message durably; a retry of an unacknowledged send is deduplicated by its client id.",
        kind: Kind::Mistake { bug: Bug::AckBeforePersist, seed: 1 },
        questions: &[
            ("Doesn't waiting for the disk make ✓ slow?", "A synced append on a replica quorum costs a few ms; batching many conversations' appends into one fsync (group commit) keeps throughput. The ✓ is the product's promise, so it pays that cost."),
            ("What if storage acked but the ✓ was lost on the way?", "The phone retries with the same client id; storage sees the id, answers with the stored seq, and nothing is stored twice."),
            ("Why not let the phone keep the message until the recipient reads it?", "The phone may be lost or offline for weeks; the server's durable copy is what lets the recipient get it while the sender is away."),
        ],
    },
    Lesson {
        name: "timestamp-order",
        title: "Order by the server's sequence, not by clocks",
        from: COMMON,
        choice: "Two phones' clocks disagree by seconds, so ordering a conversation by the sender's timestamp shows messages in different orders on different screens. The server's per-conversation sequence number is one order everyone agrees on.",
        fix: "Give each message a per-conversation sequence number at the shard that owns the conversation; phones show in sequence order and hold back after a gap until it fills.",
        kind: Kind::Mistake { bug: Bug::OrderByTimestamp, seed: 1 },
        questions: &[
            ("Why not synchronise the clocks with NTP?", "NTP bounds skew to milliseconds at best, and phones are often far worse; two sends within the skew still race. Order must not depend on any clock."),
            ("Who assigns the sequence number in a group?", "The one shard that owns the group's conversation; ownership moves only with a fenced lease, so two shards never number the same conversation."),
            ("What does a phone do when seq 7 arrives before seq 6?", "It holds 7 back, asks for the gap after a short wait, and shows 6 then 7."),
        ],
    },
    Lesson {
        name: "no-session-service",
        title: "Know which gateway holds each user",
        from: COMMON,
        choice: "With many gateways, the shard storing a message must know which gateway holds the recipient's connection. Without a session service it can only push through the sender's own gateway, so most recipients wait for their next reconnect.",
        fix: "Keep a session service (user -> gateway, with an epoch per connection) that gateways register in; shards look the recipient up and push through the right gateway, or park the message in the inbox.",
        kind: Kind::Mistake { bug: Bug::NoSessionService, seed: 1 },
        questions: &[
            ("Isn't broadcasting to every gateway simpler?", "It multiplies every message by the number of gateways (about a thousand at WhatsApp's size); a lookup costs one read."),
            ("What if the session entry is stale?", "The push fails or lands on a gateway without the connection; the message is already in the inbox, and the phone drains it when it reconnects. Epochs keep a late disconnect from erasing a newer connection's entry."),
            ("Where does the session service keep its data?", "In memory with replication (Redis, or an in-house store): it is rebuilt by reconnections, so it need not be as durable as messages."),
        ],
    },
    Lesson {
        name: "offline-delivery",
        title: "Park messages for offline phones",
        from: COMMON,
        choice: "Most recipients are not connected at the moment a message arrives. A design that only pushes to live connections drops everything sent to a phone that is asleep, in a tunnel or switched off.",
        fix: "Write an inbox entry per recipient device before pushing; delete it only when the device acknowledges the message, and drain the inbox on every reconnect.",
        kind: Kind::Mistake { bug: Bug::NoOfflineInbox, seed: 4 },
        questions: &[
            ("How long does the inbox keep entries?", "Until the device acks, or a retention limit (WhatsApp: about 30 days); past that, a phone that comes back is told what expired."),
            ("Does the inbox not double the writes?", "An entry is a small key (device, conversation, seq), not a copy of the text; fan-out on read for huge groups avoids even that."),
            ("What wakes a phone whose app is asleep?", "A push notification (APNs/FCM) that carries no content; the app connects and drains."),
        ],
    },
    Lesson {
        name: "tls-is-not-e2e",
        title: "TLS protects links, not the message",
        from: COMMON,
        choice: "TLS encrypts each hop, but every server decrypts, handles and stores the plaintext. End-to-end encryption seals the text on the sender's phone for each recipient device, so gateways, shards and storage only ever carry ciphertext.",
        fix: "Seal each text per recipient device (X25519 sessions, sender keys for groups); servers route by metadata only.",
        kind: Kind::Mistake { bug: Bug::TlsOnly, seed: 1 },
        questions: &[
            ("How does a group of 1,000 avoid 1,000 encryptions per message?", "Sender keys: each member hands its group key once to every member device, then seals each text once."),
            ("What still leaks with E2E?", "Metadata: who talks to whom, when, and how much. Sealed sender and padding reduce it."),
            ("How does a new device read old messages?", "It cannot decrypt history sealed before it existed; the phone can transfer history over a direct link, or the relay model keeps none on the server."),
        ],
    },
    Lesson {
        name: "duplicate-on-redelivery",
        title: "Drop repeats by message id on the phone",
        from: "Signal-Desktop #446: lost acks caused redelivery",
        choice: "At-least-once delivery means the same message can arrive twice: a lost ack, a reconnect mid-drain, a push racing a fetch. A phone that shows whatever arrives shows it twice.",
        fix: "Every message carries a unique id; the phone keeps the ids it has shown per conversation and drops repeats, so at-least-once becomes exactly-once on screen.",
        kind: Kind::Mistake { bug: Bug::NoClientDedup, seed: 1 },
        questions: &[
            ("Why not make delivery exactly-once in the network?", "No network can: an ack can always be lost after the message arrived. Idempotent receivers are the only way."),
            ("How long must a phone remember ids?", "Per conversation, everything below the highest contiguous seq is implied; only ids above it need keeping."),
        ],
    },
    Lesson {
        name: "retry-new-id",
        title: "A retry keeps its client id",
        from: "synapse #3365: slow saves duplicated by retries",
        choice: "A phone that hears no ✓ retries. If each retry gets a fresh id, the server cannot tell a retry from a new message and stores it twice.",
        fix: "The outbox assigns the client id once, at compose time, and every retry carries it; storage keeps an index of ids it has stored and answers a repeat with the first seq.",
        kind: Kind::Mistake { bug: Bug::NewIdPerRetry, seed: 1 },
        questions: &[
            ("Where does the dedup index live?", "Beside the log, durable with it: after a restart a retry must still be recognised (the zoo bug dedup-index-not-recovered shows what happens otherwise)."),
            ("Could the server dedup by content?", "Two identical texts (\"ok\", \"ok\") are legitimately two messages; only an id says which it is."),
        ],
    },
    Lesson {
        name: "queue-empty-too-early",
        title: "A drain is done when the server says so",
        from: "Signal-Desktop #1503: \"queue empty\" fired early",
        choice: "A reconnecting phone pages through its backlog. If a connection lost mid-drain is taken as a finished drain, the next connection fetches nothing and the rest of the backlog waits.",
        fix: "A drain completes only on the server's last page (more=false) on the same connection; a drain cut short starts over on the next connection.",
        kind: Kind::Mistake { bug: Bug::EarlyQueueEmpty, seed: 1 },
        questions: &[
            ("What about live messages arriving during the drain?", "They carry seqs; the phone holds them back until the drain reaches them, so they never land in the middle of the backlog out of order."),
            ("How big should a page be?", "Bounded in count and bytes, so a phone back after a month does not get one giant frame."),
        ],
    },
    Lesson {
        name: "dead-socket-write",
        title: "A socket write is not a delivery",
        from: "ejabberd #1151: writes to a dead TCP connection were lost",
        choice: "A write to a TCP socket succeeds as soon as the kernel buffers it, even when the peer vanished minutes ago. Deleting the inbox entry then loses the message.",
        fix: "Delete the inbox entry only when the device acknowledges the message by seq; the gateway never acks on the phone's behalf.",
        kind: Kind::Mistake { bug: Bug::SocketWriteIsDelivery, seed: 1 },
        questions: &[
            ("How does the server notice a dead connection?", "Heartbeats with a timeout: no pong (from the peer, not our own ping) within the window closes it."),
            ("Isn't an application ack per message expensive?", "Acks are cumulative per conversation and ride on frames already going the same way."),
        ],
    },
    Lesson {
        name: "unfinished-seq",
        title: "A reserved number is not a written one",
        from: "synapse #7206: one slow write held back, then skipped",
        choice: "Sequence numbers are reserved before the write completes, so a reader can see seq 8 stored while seq 7 is still being written. A reader that moves past the hole never comes back for 7.",
        fix: "Readers stop at the first unfinished number and fetch again later; a gap is only skipped when the writer declares it abandoned.",
        kind: Kind::Mistake { bug: Bug::ReaderSkipsUnfinishedSeq, seed: 1 },
        questions: &[
            ("Why not assign numbers only after the write?", "Then two concurrent writes to the conversation must serialise on storage; reserving first keeps the shard's pipeline full."),
            ("What if the writer crashed?", "The new owner, fenced by a lease epoch, fills or abandons the reserved number explicitly."),
        ],
    },
    Lesson {
        name: "receipts-not-retried",
        title: "Receipts need retries too",
        from: "nheko #1621: read markers not retried left badges stuck",
        choice: "Delivered and read receipts cross the same flaky links as messages. Sent once and never retried, a lost one leaves the sender's ticks grey for good.",
        fix: "Receipts are cumulative per conversation (\"read up to seq N\") and retried until acknowledged, so a later one replaces a lost one.",
        kind: Kind::Mistake { bug: Bug::FireAndForgetReceipts, seed: 1 },
        questions: &[
            ("Why cumulative?", "One small frame covers many messages and makes retries idempotent: receiving \"up to 9\" twice changes nothing."),
            ("Do receipts go through the inbox?", "Yes, for an offline sender: they are parked like messages and drained."),
        ],
    },
    Lesson {
        name: "presence-storm",
        title: "Tell presence only to those looking",
        from: "synapse #3971: presence fan-out pinned the CPU",
        choice: "Broadcasting every online/offline change to every contact grows with the square of users, and a mass reconnect turns it into a storm. Presence only matters to someone with the chat open.",
        fix: "Subscribe to a user's presence while their chat is on screen; coalesce changes and send only to subscribers.",
        kind: Kind::Mistake { bug: Bug::PresenceBroadcastAll, seed: 1 },
        questions: &[
            ("How fresh must \"last seen\" be?", "Seconds are fine; it is advisory, so it can be batched and dropped under load."),
            ("What about groups of 1,000?", "Group presence is usually not shown, or sampled; per-member subscriptions would not scale."),
        ],
    },
    Lesson {
        name: "reconnect-lockstep",
        title: "Reconnect with jitter",
        from: "mattermost-webapp #10960: identical retry delays in lockstep",
        choice: "When a gateway dies, all its phones reconnect at once; with fixed delays they retry in lockstep and hit the survivors in waves. Random jitter spreads them out.",
        fix: "Exponential backoff with full jitter (a random delay up to the current cap) on every reconnect.",
        kind: Kind::Mistake { bug: Bug::NoReconnectJitter, seed: 1 },
        questions: &[
            ("What else protects the servers?", "Admission control: a gateway sheds new connections past a rate and tells phones when to retry."),
            ("And the session service during the storm?", "Registrations carry epochs, so their order does not matter, and it can be rate-limited like the gateways."),
        ],
    },
    Lesson {
        name: "half-open-connection",
        title: "Only the peer's pong proves it is there",
        from: "ejabberd FAQ: half-open TCP connections",
        choice: "A phone behind a dead NAT keeps a socket that carries nothing, yet never closes. A heartbeat that counts its own pings as signs of life never notices.",
        fix: "Count only frames from the peer; close after the timeout without them and reconnect, draining the inbox.",
        kind: Kind::Mistake { bug: Bug::HeartbeatHearsOwnPings, seed: 1 },
        questions: &[
            ("How often to ping?", "Below the shortest NAT timeout on the path (often 30-60 s on mobile), and only on a link idle for the interval."),
            ("Does the server need its own timeout?", "Yes, or it keeps pushing into a dead connection and holds its memory."),
        ],
    },
    Lesson {
        name: "quorum-of-one",
        title: "Replicate before you acknowledge",
        from: COMMON,
        choice: "Storage with replicas that acks after one write loses that write if the one replica dies, and a rebuild from the first replica to answer can miss it. Majority quorums make every acked write survive any minority of failures.",
        fix: "Ack after a majority of replicas synced; rebuild from a majority, taking the longest log.",
        kind: Kind::Mistake { bug: Bug::QuorumOfOne, seed: 4 },
        questions: &[
            ("Why 3 replicas rather than 2?", "A majority of 2 is 2, so one failure stops writes; 3 tolerates one failure and keeps writing."),
            ("Across data centres?", "A quorum spanning sites costs a WAN round trip per write; many systems keep the quorum in one region and replicate asynchronously further away."),
        ],
    },
    Lesson {
        name: "stale-device-list",
        title: "Seal for the account's current devices",
        from: "WhatsApp multi-device: a phone plus up to 4 companions",
        choice: "A sender seals one copy per recipient device. If its list of devices is stale, a newly linked companion gets no copy, and storage accepting the message leaves that device without it.",
        fix: "Storage checks the copies against the account's current device list and refuses a send that misses one; the sender refreshes the list and reseals.",
        kind: Kind::Mistake { bug: Bug::StaleDeviceList, seed: 1 },
        questions: &[
            ("How does a phone learn of a new device?", "The server tells it (a device-list change), and a refused send carries the current list."),
            ("What does a new device see of old chats?", "Only what is sent after it linked, unless the phone transfers history to it directly."),
        ],
    },
    Lesson {
        name: "trust-the-client",
        title: "The connection says who is sending",
        from: "malicious devices",
        choice: "A compromised phone can write any sender into a message. A shard that believes the id's sender lets one device post in another's name.",
        fix: "Take the sender from the authenticated connection, check membership for every send, fetch, pull and receipt, and refuse the rest.",
        kind: Kind::Mistake { bug: Bug::TrustClientSender, seed: 1 },
        questions: &[
            ("Doesn't E2E encryption already prove the sender?", "It proves it to recipients who check the signature; the server must still refuse forgeries so it cannot be used to spam or impersonate in metadata."),
            ("What else must be checked per request?", "Membership for sends, fetches, pulls and receipts; sizes and sequence numbers within bounds."),
        ],
    },
    Lesson {
        name: "fanout-write-vs-read",
        title: "Fan-out on write or on read, for a hot group",
        from: TRADE_OFF,
        choice: "Fan-out on write puts an inbox entry for every member device at send time: reads are cheap, a big group's writes are not. Fan-out on read writes the text once and members pull the group's log when they connect.",
        fix: "Fan out on write for small groups (most chats) and on read above a size threshold (topology.fanout_on_read_over); both keep every invariant.",
        kind: Kind::TradeOff {
            scenario: "group-fanout",
            seed: 1,
            ways: &[
                ("write: fan-out on write, every group", &[]),
                ("read: fan-out on read over 8 members", &[("[topology]\n", "[topology]\nfanout_on_read_over = 8\n")]),
            ],
            about: &["inbox writes per delivery", "frames per delivery", "✓ p99 ms", "display p99 ms"],
        },
        questions: &[
            ("Where is the threshold?", "Where the write amplification of one text (members x devices inbox entries) costs more than the extra reads; Twitter's timelines made the same split for celebrities."),
            ("What does fan-out on read cost the phone?", "A pull per group on reconnect and a check of the group's log length; a phone in many big groups pays it for each."),
        ],
    },
    Lesson {
        name: "relay-vs-history",
        title: "Relay (delete once delivered) or server history",
        from: TRADE_OFF,
        choice: "A relay deletes a text once every device it was parked for has taken it, so storage holds only what is in flight (WhatsApp). Server history keeps every message, so new devices and search can read it (Matrix, Slack).",
        fix: "Choose by product: relay for privacy and storage cost, history for multi-device sync and search; both keep every delivery invariant.",
        kind: Kind::TradeOff {
            scenario: "multi-device",
            seed: 1,
            ways: &[
                ("history: the log keeps every text", &[("storage_model = \"relay\"", "storage_model = \"history\"")]),
                ("relay: delete once delivered", &[]),
            ],
            about: &["texts storage kept", "inbox writes per delivery"],
        },
        questions: &[
            ("How does a relay give a new device its history?", "The phone sends it over a direct, end-to-end encrypted transfer; the server never held it."),
            ("What does storage cost with history at 100B messages a day?", "About 20 TB a day per copy (chatsim capacity), forever; a relay holds hours of it."),
        ],
    },
    Lesson {
        name: "group-size",
        title: "What a bigger group costs",
        from: TRADE_OFF,
        choice: "Every group text is delivered to every other member's devices, so its cost grows with the group. The same thirty texts in a group of 4-8 and in one of 48-64 differ by that factor in deliveries, inbox writes and frames.",
        fix: "Cap group size (WhatsApp: 1,024), fan out on read above a threshold, and pace fan-out from a queue so one big group cannot hold back the shard.",
        kind: Kind::TradeOff {
            scenario: "group-fanout",
            seed: 1,
            ways: &[
                ("small: a group of 4-8", &[("size = [48, 64]", "size = [4, 8]")]),
                ("big: a group of 48-64", &[]),
            ],
            about: &["messages delivered", "frames per delivery", "✓ p99 ms", "display p99 ms"],
        },
        questions: &[
            ("Why does ✓ not wait for the fan-out?", "The shard acks once the text is stored and queues the fan-out (sync-fanout in the zoo shows the other way: ✓ waits for every member)."),
            ("How many deliveries a second does a 1,000-member group make?", "A text a second makes about a thousand; see chatsim capacity --group-size."),
        ],
    },
];
