//! Engines that drive the `system/` state machines. Each takes a scenario, a seed and a plan and
//! returns the raw outcome of the run; judging happens elsewhere ([`crate::run`]).

use chatsim_judge::History;
use chatsim_system::proto::Millis;

#[cfg(madsim)]
pub mod madsim;

/// What an engine hands back from one run.
#[derive(Debug)]
pub struct RawRun {
    /// Everything devices observed and every fault injected.
    pub history: History,
    /// Frames delivered between hosts.
    pub frames: u64,
    /// Digest of every delivered frame (time, receiver, bytes), in delivery order.
    pub frame_digest: [u8; 32],
    /// Simulated time at the end.
    pub sim_ms: Millis,
    /// Inbox entries left in durable storage at the end.
    pub inbox_left: usize,
    /// Inbox entries durable storage wrote over the run.
    pub inbox_written: u64,
    /// Texts whose bodies storage still kept at the end (the relay model deletes delivered
    /// ones).
    pub bodies_kept: usize,
    /// Every delivered frame (up to a bound), for sequence diagrams.
    pub frame_log: Vec<crate::wire::FrameRecord>,
    /// (time, inbox entries in durable storage), sampled periodically.
    pub samples: Vec<(Millis, usize)>,
    /// Every delivered frame's route, size and send time, when the caller asked for them
    /// (the benchmark replays them on bare nodes); empty otherwise.
    pub frame_trace: Vec<FrameTrace>,
}

/// One delivered frame as the benchmark's floor replays it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameTrace {
    /// Sender.
    pub from: chatsim_system::proto::Host,
    /// Receiver.
    pub to: chatsim_system::proto::Host,
    /// Bytes on the wire, length prefix included.
    pub bytes: u32,
    /// Simulated send time.
    pub sent_ms: Millis,
}
