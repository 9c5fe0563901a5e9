//! Every bound in the backend, named with its unit. Simulated time is free under madsim, so
//! timeouts are shorter than a production deployment's (WhatsApp-scale heartbeats are tens of
//! seconds) to keep runs short, but their ratios are the production ones.

use crate::proto::Millis;

/// Companion devices a user may have beside the primary phone (WhatsApp allows four).
pub const COMPANIONS_MAX: u8 = 4;

/// The largest sequence number a frame may name (2^53: a conversation writing a message a
/// millisecond reaches it in 285,000 years, and every JSON client holds it exactly). A frame
/// naming more comes from a hostile or broken peer and is dropped where it enters a machine,
/// so no counter downstream can reach the end of its range.
pub const SEQ_MAX: u64 = 1 << 53;

/// Members a group may have (WhatsApp's cap); a join past it is refused with `GroupFull`.
pub const GROUP_MEMBERS_MAX: usize = 1_024;
/// Devices one group fan-out step parks inbox entries for and pushes to. A crash loses at
/// most one step's progress, and a step is redone idempotently.
pub const FANOUT_STEP_DEVICES: usize = 64;

/// A device sends a ping this often while connected.
pub const HEARTBEAT_INTERVAL_MS: Millis = 2_000;
/// Either side gives up on a connection it has heard nothing on for this long.
pub const HEARTBEAT_TIMEOUT_MS: Millis = 6_000;
/// A gateway gives up on a connection it has heard nothing on for this long: longer than the
/// phone's own timeout, since dropping a live phone costs a reconnect storm.
pub const GATEWAY_IDLE_TIMEOUT_MS: Millis = 10_000;
/// Short polling: how long a phone waits between requests (the heartbeat's interval: the
/// same idle cost a websocket pays in pings, so the comparison is the latency and the cost of
/// each request).
pub const SHORT_POLL_INTERVAL_MS: Millis = 2_000;
/// Long polling: how long a request is held open with nothing to say before the phone asks
/// again (under the gateway's idle timeout, as a real hold sits under the proxy's).
pub const LONG_POLL_HOLD_MS: Millis = 8_000;
/// A polling request that has answered everything still waits this long before closing, so
/// its acks leave before the connection does.
pub const POLL_LINGER_MS: Millis = 50;
/// How often a gateway scans its connections for heartbeat timeouts.
pub const HEARTBEAT_CHECK_MS: Millis = 1_000;

/// First outbox retry delay; doubles per attempt up to the max, with full jitter.
pub const OUTBOX_RETRY_MS_MIN: Millis = 1_000;
/// Cap on the outbox retry delay.
pub const OUTBOX_RETRY_MS_MAX: Millis = 8_000;
/// Messages a device keeps unacknowledged at once; more wait in the outbox, unsent.
pub const OUTBOX_IN_FLIGHT_MAX: usize = 64;

/// First reconnect delay; doubles per failure up to the max, with full jitter so a crowd of
/// phones does not reconnect in lockstep.
pub const RECONNECT_BACKOFF_MS_MIN: Millis = 100;
/// Cap on the reconnect delay.
pub const RECONNECT_BACKOFF_MS_MAX: Millis = 5_000;
/// Doublings a capped exponential backoff makes at most (reconnect, outbox retry) before its
/// cap takes over; keeps the shift from overflowing after many failures.
pub const BACKOFF_DOUBLINGS_MAX: u32 = 16;
/// A device that sent `Hello` gives up on the connection if `Welcome` does not follow.
pub const HANDSHAKE_TIMEOUT_MS: Millis = 3_000;

/// Phone clocks are off from true time by up to this much either way (drawn per device), which
/// is why nothing may order messages by the sender's timestamp.
pub const CLOCK_SKEW_MS_MAX: Millis = 3_000;

/// How long a device waits for a missing message before asking for it.
pub const GAP_REPAIR_DELAY_MS: Millis = 500;
/// How often it asks again while the gap persists.
pub const GAP_RETRY_MS: Millis = 2_000;
/// Largest range one gap fetch asks for.
pub const GAP_FETCH_SEQS_MAX: u64 = 64;

/// Inbox entries per drain page.
pub const INBOX_PAGE_ENTRIES: u32 = 32;
/// A connected device drains its inbox again this long after its last complete drain: the last
/// line of defence, for a message whose shard gave up pushing it (`PUSH_ATTEMPTS_MAX`). Longer
/// than every scenario's liveness bound on purpose, so a run that needs it to pass is a failing
/// run: the pushes and their retries must do the work.
pub const INBOX_SYNC_MS: Millis = 60_000;
/// A device re-requests a drain page it has not received in this long.
pub const DRAIN_RETRY_MS: Millis = 2_000;

/// A device waits this long after showing a message before sending its receipt, so a burst
/// (a drain, a fetched gap) goes as one cumulative receipt instead of one per message.
pub const RECEIPT_DELAY_MS: Millis = 200;
/// A device re-sends a receipt the server has not acknowledged after this long.
pub const RECEIPT_RETRY_MS: Millis = 2_000;
/// A device linked mid-run asks again to have its link recorded after this long unanswered.
pub const LINK_RETRY_MS: Millis = 2_000;
/// Receipts handed to a device with the first page of its drain; if more are queued, the
/// device drains again a moment later (after seeing these, which deletes them).
pub const RECEIPTS_PAGE_ENTRIES_MAX: usize = 256;
/// How long after a drain that left receipts queued the device drains again. The marks for
/// what it saw go ahead of it; a drain that overtakes them (they go to the conversation's
/// shard, the drain to the user's) brings some receipts twice, which ticks that only move
/// forward shrug off. It was [`DRAIN_RETRY_MS`] (2 s) a page: a BUGGIFY run with pages of one
/// receipt left a 20-member group's ticks 40 s behind, and a 1,024-member group's 2,048 queued
/// receipts took 16 s at the design's page.
pub const RECEIPTS_DRAIN_AGAIN_MS: Millis = 200;

/// A user's presence change is published this long after it happens, and only if it still
/// holds: a shorter flap (a reconnect) shows nobody anything.
pub const PRESENCE_DEBOUNCE_MS: Millis = 2_000;
/// A presence subscription lapses this long after it was last renewed.
pub const PRESENCE_LEASE_MS: Millis = 20_000;
/// A device with a chat open renews its presence subscription this often (well inside the
/// lease, so one lost renewal does not end it).
pub const PRESENCE_RENEW_MS: Millis = 8_000;

/// A phone woken in the background by a push stays connected this long (to drain) before the
/// OS suspends it again (iOS allows about 30 s).
pub const PUSH_WAKE_MS: Millis = 10_000;

/// A gateway tells the session service which devices it holds this often, so an entry whose
/// `Unregister` was lost (or whose gateway crashed) does not outlive its connection by more.
pub const GATEWAY_ALIVE_MS: Millis = 5_000;
/// A presence change waits at most this long for a flap to settle before it is published.
pub const PRESENCE_DEBOUNCE_MAX_MS: Millis = 6_000;

/// A gateway re-sends a `Register` the session service has not answered after this long.
pub const REGISTER_RETRY_MS: Millis = 1_000;

/// A shard's lease on a slot (the conversations hashed to one shard number) lasts this long
/// past its last renewal; then any live shard may take the slot over.
pub const SHARD_LEASE_MS: Millis = 3_000;
/// A shard renews its leases (and looks for expired ones to take over) this often.
pub const SHARD_LEASE_RENEW_MS: Millis = 1_000;

/// A shard re-sends a storage request that has not been answered after this long.
pub const STORAGE_RETRY_MS: Millis = 500;
/// Sends a shard queues per conversation before refusing with `Busy`.
pub const CONV_QUEUE_SENDS_MAX: usize = 256;
/// First retry of a push the device has not acked; doubles per attempt up to the max.
pub const PUSH_RETRY_MS_MIN: Millis = 1_000;
/// A shard's first push to a device goes straight to the gateway the device's own frame came
/// through this recently, without asking the session service (a lookup and its answer were
/// two frames of every push). A device gone from there since costs the first retry's wait
/// ([`PUSH_RETRY_MS_MIN`]), which always asks.
pub const LOCATION_HINT_MS: Millis = 1_000;
/// Cap on the push retry delay.
pub const PUSH_RETRY_MS_MAX: Millis = 8_000;
/// Push attempts per delivery before the shard leaves it to the inbox alone (about 80 s of
/// trying, longer than any partition the scenarios hold).
pub const PUSH_ATTEMPTS_MAX: u32 = 12;
/// Deliveries one shard tracks at once; past this the inbox alone carries new messages.
pub const DELIVERIES_TRACKED_MAX: usize = 1_000_000;
/// Fan-out jobs per page of a restarted shard's sweep. A job carries its message with every
/// member device's sealed key (up to 5,120 of them, about 300 KiB), so one per page keeps a
/// page well under [`FRAME_BYTES_MAX`].
pub const FANOUT_JOBS_PAGE_MAX: usize = 1;
/// Inbox entries per page of a restarted shard's sweep.
pub const SWEEP_PAGE_ENTRIES: u32 = 256;
/// A shard forgets a pending session lookup after this long (the inbox still has the message).
pub const LOOKUP_TIMEOUT_MS: Millis = 2_000;

/// A server-to-server link whose frames go this long unacknowledged, without progress, is
/// taken for dead and replaced, the way HTTP/2 and gRPC keepalive pings give up on a connection
/// that stops answering (typically within a second or two). The engines' links enforce it (on
/// turmoil, where a stream that lost a frame stalls for good); the machines never see it, they
/// only retry. About two [`STORAGE_RETRY_MS`], so a request goes at most twice into a stalled
/// link; the judges excuse sends this long after a one-way cut heals, and no longer.
pub const SERVER_LINK_KEEPALIVE_MS: Millis = 1_000;

/// Storage syncs its write buffer this long after the first unsynced write (group commit, the
/// stand-in for an fsync). Writes are acknowledged only after the sync.
pub const STORAGE_SYNC_MS: Millis = 2;

/// A sync's time while the world slows a storage host's disk (the `disk-slow` fault): an fsync
/// a hundred times the group commit's usual, as a saturated or failing device gives.
pub const DISK_SLOW_SYNC_MS: Millis = 300;

/// A storage coordinator sends a replica again what it has not acknowledged after this long.
pub const REPLICATE_RETRY_MS: Millis = 500;
/// A storage coordinator rebuilding its view asks a replica that has not answered again after
/// this long.
pub const READ_OPS_RETRY_MS: Millis = 1_000;
/// A page of operations a replica hands its coordinator stays under this many bytes (a group
/// text with a sealed key per member device is about 300 KiB on its own).
pub const OPS_PAGE_BYTES: usize = 512 * 1024;

/// Largest frame on the wire, in bytes; bigger frames are a protocol error.
pub const FRAME_BYTES_MAX: usize = 1 << 20;
/// Largest message body, in bytes (Signal's limit is 96 KiB).
pub const BODY_BYTES_MAX: usize = 96 * 1024;
