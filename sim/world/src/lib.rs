//! # chatsim-world: what every engine shares
//!
//! An engine (madsim in `chatsim`, turmoil in `chatsim-turmoil`) owns only its transport, its
//! clock and its fault primitives. Everything else that defines a run lives here, so the two
//! engines run the same scenario, the same plan and the same machines, and are judged alike:
//! - [`scenario`]: the TOML scenario schema, loading and validation (errors name file, line,
//!   field).
//! - [`plan`]: per-seed workload and fault schedule drawn from a scenario's ranges.
//! - [`wire`]: length-delimited postcard framing on (simulated) TCP.
//! - [`deploy`]: the deployment a scenario and seed describe, and the durable state kept beside
//!   the hosts (what a crash leaves, and the machines a restarted server begins with).
//! - [`host`]: the host layer: a server host and a phone host that turn engine events into
//!   machine inputs and effects into routes, the same for every engine and the real server.
//! - [`nemesis`]: the fault ledger: what is broken, what a heal must undo and record, over a
//!   small trait of engine primitives.
//! - [`record`]: the run recorder, and the [`record::RawRun`] an engine hands back.

pub mod deploy;
pub mod host;
pub mod nemesis;
pub mod plan;
pub mod record;
pub mod scenario;
pub mod wire;
