//! What the search may do: the fault budget a world spends ([`Budget`]), users' scripts of
//! cues ([`Cue`]), and the bounds of a model's search ([`Limits`]: horizon, when faults and
//! users stop, how many of each). Kept apart from the world they bound, so a model reads as
//! its configuration.

use chatsim_system::proto::{DeviceId, Host, Millis};
use chatsim_system::Action;
use std::collections::BTreeMap;

/// How many faults of each kind the world may still inject.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Budget {
    /// Server-to-server frames lost.
    pub drops: u8,
    /// Server-to-server frames delivered twice.
    pub dups: u8,
    /// Server crashes (each restarts at once from its durable state).
    pub crashes: u8,
    /// Device connections cut by the network (the phone reconnects on its own).
    pub conn_drops: u8,
    /// Device connections that die on the phone's side only (its network changed): the
    /// gateway hears nothing more, and closes its end only at its idle timeout.
    pub half_opens: u8,
    /// Partitions of one server from every other host (each heals when the fault window
    /// closes).
    pub partitions: u8,
    /// Faults of any kind, in all: the kinds' budgets are each capped, and so is their sum
    /// (one fault of any kind keeps a model's branching a sum of its kinds, not a product).
    pub total: u8,
}

/// One thing a user does, and when.
#[derive(Clone, Debug)]
pub struct Cue {
    /// What the user does.
    pub action: Action,
    /// Not before this (ms), unless the next timer is at or past `by`: then at once.
    pub from: Millis,
    /// `Some(t)`: once this cue is the user's next, the clock does not pass `t` until the
    /// user has done it (a story step that must happen, such as a phone coming back online).
    /// `None`: at any quiet moment before the model's `users_until`, or never, and then no
    /// later cue of this user happens either. [`Cue::well_formed`] says when these rules could
    /// miss a `by`.
    pub by: Option<Millis>,
}

impl Cue {
    /// `action` at any quiet moment before the model's `users_until`, or never.
    pub fn any_time(action: Action) -> Cue {
        Cue {
            action,
            from: 0,
            by: None,
        }
    }

    /// `action` at some quiet moment from `from` on, and before the clock passes `by`.
    pub fn between(from: Millis, by: Millis, action: Action) -> Cue {
        Cue {
            action,
            from,
            by: Some(by),
        }
    }

    /// Why `script` could miss a deadline, if it could: deadlines out of order (a later cue's
    /// would pass while an earlier one is pending), or one past `horizon` (the world may
    /// settle before it). An optional cue that never happens takes the rest of the script
    /// with it, deadlines included: a script puts one only where the rest depends on it (in
    /// `failover`, the phone goes offline and back only if it sent its text).
    pub fn well_formed(script: &[Cue], horizon: Millis) -> Result<(), String> {
        let mut last_by = 0;
        for (i, c) in script.iter().enumerate() {
            match c.by {
                None => {}
                Some(by) if by < last_by => {
                    return Err(format!(
                        "cue {i}'s deadline {by} is before the previous one"
                    ))
                }
                Some(by) if by > horizon => {
                    return Err(format!("cue {i}'s deadline {by} is past the horizon"))
                }
                Some(by) => last_by = by,
            }
        }
        Ok(())
    }

    /// Whether the action is a message or a membership change (owed ✓ and delivery).
    pub fn sends(&self) -> bool {
        matches!(
            self.action,
            Action::SendDirect { .. }
                | Action::SendGroup { .. }
                | Action::CreateGroup { .. }
                | Action::AddMember { .. }
                | Action::RemoveMember { .. }
        )
    }
}

/// Each device's script: what its user does, in order.
pub type Scripts = BTreeMap<DeviceId, Vec<Cue>>;

/// The bounds of one model's search.
#[derive(Clone, Debug)]
pub struct Limits {
    /// No timer fires after this (ms).
    pub horizon: Millis,
    /// Faults are injected only before this (ms), and partitions heal when it comes; with
    /// `settle_in_order`, the search branches only before it, so the rest of the horizon
    /// settles along one schedule.
    pub faults_until: Millis,
    /// Cues without a deadline happen only before this (ms), and partitions begin only
    /// before it.
    pub users_until: Millis,
    /// Timers fire only when no frame can arrive.
    pub quiet_ticks: bool,
    /// Server links deliver in any order (a multiset) instead of in order per link (TCP, as
    /// in both engines).
    pub unordered: bool,
    /// After `faults_until`, frames arrive in one fixed order (the first lane first) instead
    /// of every order: the search is exhaustive up to `faults_until` and then follows one
    /// schedule to the horizon, which is what keeps each model within minutes.
    pub settle_in_order: bool,
    /// States with more frames in flight (not held by a partition) than this are judged but
    /// not explored further.
    pub in_flight_max: usize,
    /// Servers that may crash.
    pub crashable: Vec<Host>,
    /// Devices whose connection the network may cut.
    pub droppable: Vec<DeviceId>,
    /// Servers that may be partitioned.
    pub partitionable: Vec<Host>,
}

impl Limits {
    /// The bounds the models share, with these times: timers only when nothing can arrive,
    /// FIFO links, one schedule after the fault window, at most 8 frames that could arrive in
    /// flight, and nothing that may crash, be cut or be partitioned (a model names those).
    pub fn new(horizon: Millis, faults_until: Millis, users_until: Millis) -> Limits {
        Limits {
            horizon,
            faults_until,
            users_until,
            quiet_ticks: true,
            unordered: false,
            settle_in_order: true,
            in_flight_max: 8,
            crashable: Vec::new(),
            droppable: Vec::new(),
            partitionable: Vec::new(),
        }
    }
}
