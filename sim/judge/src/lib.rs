//! # chatsim-judge: histories and the invariant checkers that judge them
//!
//! Checkers live apart from the system they judge and read only a [`History`]: what each
//! device observed and which faults were injected when. Each returns the violations it found,
//! naming the messages, devices and times involved, so a report can point at them.
//!
//! - [`history`]: the event types and the history container.
//! - [`checkers`]: `no_loss`, `exactly_once`, `conversation_order`, `liveness`.
//! - [`confidential`]: `e2e_confidential`, over every byte servers received.
//! - [`authz`]: `authz`, who may post to and read a group, and no posting as another user.
//! - [`receipts`]: `receipts`, ✓✓ and read ticks that tell the truth and catch up.
//! - [`presence`]: `presence_converges`, and the `presence_load` bound.
//! - [`inbox`]: `inbox_drained`, no inbox entry outlives its device's taking of it.
//! - [`bounds`]: cost checks (`reconnect_load`) for mistakes that show as load, not wrong answers.

pub mod authz;
pub mod bounds;
pub mod checkers;
pub mod confidential;
pub mod history;
pub mod inbox;
pub mod presence;
pub mod receipts;

pub use checkers::{check_all, Bounds, Verdict, Violation};
pub use history::{Event, Fault, History, Record};
