//! # chatsim: the chat backend under deterministic simulation, attacked and judged
//!
//! Layout:
//! - [`scenario`]: the TOML scenario schema, loading and validation (errors name file, line,
//!   field).
//! - [`plan`]: per-seed workload and fault schedule drawn from a scenario's ranges.
//! - [`engine`]: engines driving `chatsim-system`; [`engine::madsim`] is the main one.
//! - [`wire`]: length-delimited postcard framing on (simulated) TCP.
//! - [`run`]: one seed end to end: plan, engine, checkers, stats, trace hash.
//! - [`report`]: the report folder: HTML page, charts, sequence diagram, JSON files.
//! - [`output`]: the one-screen summary, JSON and the replay log.
//! - [`shrink`]: a failing seed cut down to a minimal explicit scenario and its story.
//! - [`swarm`]: many seeds in parallel, per-invariant counts, JUnit XML.
//! - [`check`]: exhaustive search of small worlds (`chatsim-models`, stateright) and its
//!   Explorer.
//!
//! The checkers themselves live in `chatsim-judge` and read only the history.

pub mod bench;
pub mod check;
pub mod engine;
pub mod output;
pub mod plan;
pub mod report;
pub mod run;
pub mod scenario;
pub mod shrink;
pub mod swarm;
pub mod wire;
