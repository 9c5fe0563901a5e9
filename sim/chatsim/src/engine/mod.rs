//! Engines that drive the `system/` state machines. Each takes a scenario, a seed and a plan and
//! returns the raw outcome of the run; judging happens elsewhere ([`crate::run`]).

pub use chatsim_world::record::{FrameTrace, RawRun};

#[cfg(madsim)]
pub mod madsim;
