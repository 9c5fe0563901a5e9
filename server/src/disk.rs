//! What the machines make durable, on disk: every synced write, in the order it was made, in
//! one redb file (`<data>/chatsim.redb`), and replayed into the state the machines recover
//! from when the server starts again.
//!
//! Why redb: one file, ACID transactions with copy-on-write B-trees and no write-ahead log of
//! its own to tune, pure Rust (nothing to build from C), and a commit that is durable when it
//! returns. Each write the router hands over is one transaction committed with
//! `Durability::Immediate` (an fsync before `commit` returns), and the host sends nothing the
//! machine said after that write until it returns, so an ack still means synced. Group commit
//! is the storage machine's own: it gathers the operations of a sync period
//! (`STORAGE_SYNC_MS`) into one write, so one fsync covers every append of that period.
//!
//! The layout is a log, not yet the design's tables (messages by conversation, clustered by
//! sequence number; inbox queues by device): the machines already keep those in memory and
//! rebuild them from the log, and a log is what a crash test needs first. A restart replays
//! every write ever made, so start-up grows with history; compaction into the design's tables
//! is the next step (issue 23).
//!
//! A failed commit is not retried: the server stops at once (an abort), because a write the
//! disk refused may or may not be on it, and acking past that breaks the promise (PostgreSQL's
//! lesson from fsync errors).

use chatsim_system::durable::Write;
use chatsim_system::proto::StorageOp;
use chatsim_system::session::SessionChange;
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Every write, by its number in the order made.
const WRITES: TableDefinition<u64, &[u8]> = TableDefinition::new("writes");
/// What the data was written for: a deployment the file must match.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// The file name inside the data folder.
pub const FILE: &str = "chatsim.redb";

/// A write as it is kept on disk: the kinds a served deployment makes (it has no storage
/// replicas, so no replica writes or rebuilt views).
#[derive(Debug, Serialize, Deserialize)]
enum Logged {
    Storage(Vec<StorageOp>),
    Session(SessionChange),
}

/// Why the data folder cannot be used.
#[derive(Debug, Error)]
pub enum DiskError {
    /// The folder or file cannot be opened or read.
    #[error("{path}: {reason}")]
    Open {
        /// Which file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file holds the data of another deployment.
    #[error("{path}: written for the deployment \"{found}\", not \"{wanted}\" (start with the same --users, --devices-per-user, --gateways, --shards and --seed, or another --data folder)")]
    Mismatch {
        /// Which file.
        path: PathBuf,
        /// The deployment it was written for.
        found: String,
        /// The one asked for now.
        wanted: String,
    },
    /// A logged write cannot be decoded.
    #[error("{path}: write {n} is unreadable: {reason}")]
    Corrupt {
        /// Which file.
        path: PathBuf,
        /// Which write.
        n: u64,
        /// Why.
        reason: String,
    },
}

/// The open data file.
pub struct Disk {
    db: Database,
    path: PathBuf,
    next: u64,
}

impl Disk {
    /// Open (or create) the data file in `dir` for the deployment named `deployment`, and
    /// hand each write already in it to `replay`, in order.
    pub fn open(
        dir: &Path,
        deployment: &str,
        mut replay: impl FnMut(Write),
    ) -> Result<Disk, DiskError> {
        let path = dir.join(FILE);
        let open = |e: &dyn std::fmt::Display| DiskError::Open {
            path: path.clone(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| open(&e))?;
        let db = Database::create(&path).map_err(|e| open(&e))?;
        let tx = db.begin_write().map_err(|e| open(&e))?;
        let mut next = 0;
        {
            let mut meta = tx.open_table(META).map_err(|e| open(&e))?;
            let found = meta
                .get("deployment")
                .map_err(|e| open(&e))?
                .map(|v| v.value().to_string());
            match found {
                Some(found) if found != deployment => {
                    return Err(DiskError::Mismatch {
                        path,
                        found,
                        wanted: deployment.to_string(),
                    })
                }
                Some(_) => {}
                None => {
                    meta.insert("deployment", deployment)
                        .map_err(|e| open(&e))?;
                }
            }
            let writes = tx.open_table(WRITES).map_err(|e| open(&e))?;
            for row in writes.iter().map_err(|e| open(&e))? {
                let (k, v) = row.map_err(|e| open(&e))?;
                let n = k.value();
                let logged: Logged =
                    postcard::from_bytes(v.value()).map_err(|e| DiskError::Corrupt {
                        path: path.clone(),
                        n,
                        reason: e.to_string(),
                    })?;
                replay(match logged {
                    Logged::Storage(ops) => Write::Storage(ops),
                    Logged::Session(change) => Write::Session(change),
                });
                next = n + 1;
            }
        }
        tx.commit().map_err(|e| open(&e))?;
        Ok(Disk { db, path, next })
    }

    /// Writes kept so far.
    pub fn writes(&self) -> u64 {
        self.next
    }

    /// Keep `write`, synced to the disk before this returns.
    pub fn append(&mut self, write: &Write) -> Result<(), String> {
        let logged = match write {
            Write::Storage(ops) => Logged::Storage(ops.clone()),
            Write::Session(change) => Logged::Session(change.clone()),
            Write::Rebuilt(_) | Write::Replica { .. } => {
                return Err("a served deployment has no storage replicas".into())
            }
        };
        let bytes = postcard::to_allocvec(&logged).map_err(|e| e.to_string())?;
        let mut tx = self.db.begin_write().map_err(|e| e.to_string())?;
        tx.set_durability(Durability::Immediate);
        {
            let mut t = tx.open_table(WRITES).map_err(|e| e.to_string())?;
            t.insert(self.next, bytes.as_slice())
                .map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())?;
        self.next += 1;
        Ok(())
    }

    /// The file, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
