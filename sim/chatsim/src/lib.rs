//! # chatsim: the chat backend under deterministic simulation, attacked and judged
//!
//! Layout:
//! - [`scenario`], [`plan`], [`wire`]: the scenario schema, per-seed plans and framing, from
//!   `chatsim-world`, which every engine shares.
//! - [`capacity`]: the design's estimates as a calculator, checked against a scaled run.
//! - [`catalog`]: where a scenario argument comes from: a file, one's own folder, or the
//!   scenarios bundled into the binary.
//! - [`learn`]: `chatsim learn`: lessons, the broken and the right design side by side.
//! - [`engine`]: engines driving `chatsim-system`; [`engine::madsim`] is the main one.
//! - [`run`]: one seed end to end: plan, engine, checkers, stats, trace hash.
//! - [`report`]: the report folder: HTML page, charts, sequence diagram, JSON files.
//! - [`output`]: the one-screen summary, JSON and the replay log.
//! - [`shrink`]: a failing seed cut down to a minimal explicit scenario and its story.
//! - [`swarm`]: many seeds in parallel, per-invariant counts, JUnit XML.
//! - [`merge`]: `chatsim merge`: sharded swarms' JSON combined into one result.
//! - [`coverage`]: which coverage probes runs reached, aggregated over seeds and scenarios.
//! - [`load`]: `chatsim load`: real WebSocket phones against a running server (or the bare
//!   relay it is measured against), latencies from the intended send time, the history judged.
//! - [`transport`]: what websocket, long-poll and short-poll phones cost in a run.
//! - [`check`]: exhaustive search of small worlds (`chatsim-models`, stateright) and its
//!   Explorer.
//!
//! The checkers themselves live in `chatsim-judge` and read only the history.

pub mod bench;
pub mod capacity;
pub mod catalog;
pub mod check;
pub mod coverage;
pub mod engine;
pub mod learn;
pub mod live;
pub mod load;
pub mod merge;
pub mod output;
pub mod report;
pub mod run;
pub mod shrink;
pub mod swarm;
pub mod transport;

pub use chatsim_world::{plan, record, scenario, wire};
