//! # chatsim-world: what every engine shares
//!
//! An engine (madsim in `chatsim`, turmoil in `chatsim-turmoil`) owns only its transport, its
//! clock and its fault primitives. Everything else that defines a run lives here, so the two
//! engines run the same scenario, the same plan and the same machines, and are judged alike:
//! - [`scenario`]: the TOML scenario schema, loading and validation (errors name file, line,
//!   field).
//! - [`plan`]: per-seed workload and fault schedule drawn from a scenario's ranges.
//! - [`wire`]: length-delimited postcard framing on (simulated) TCP.
//! - [`record`]: the deployment, durable state, server machines and the run recorder, and the
//!   [`record::RawRun`] an engine hands back.

pub mod plan;
pub mod record;
pub mod scenario;
pub mod wire;
