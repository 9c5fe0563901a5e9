//! The wire vocabulary: identifiers, the frames a device exchanges with its gateway, and the
//! messages servers exchange with each other. Everything here is plain data (serde), so every
//! engine encodes it the same way and every history can name what it saw.
//!
//! Split by concern (every item is re-exported here, so `crate::proto::X` names them all):
//! identifiers in `ids`, conversation content in `chat`, the device protocol in
//! `device_frames`, storage's durable operations in `storage_ops`, and server-to-server
//! messages in `rpc`. Moving an item between these files changes no encoding: serde names
//! neither modules nor paths, and postcard encodes variants by their index in the enum.

mod chat;
mod device_frames;
mod ids;
mod rpc;
mod storage_ops;

pub use chat::*;
pub use device_frames::*;
pub use ids::*;
pub use rpc::*;
pub use storage_ops::*;

#[cfg(test)]
mod tests;
