//! What the machines make durable, on disk, in one redb file (`<data>/chatsim.redb`) laid out
//! as the design's tables: messages partitioned by conversation and clustered by sequence
//! number (`messages`, keyed (conversation, seq)), each device's inbox queue (`inbox`, keyed
//! (user, device index, conversation, seq)), the rest of storage's state and the session table
//! as one record each (`records`), and a log of the synced writes made since the tables were
//! last brought up to date (`writes`).
//!
//! An ack means synced: each write the router hands over is appended to the log in one
//! transaction committed with `Durability::Immediate` (an fsync before `commit` returns), and
//! the host sends nothing the machine said after that write until it returns. Group commit is
//! the storage machine's own: it gathers the operations of a sync period (`STORAGE_SYNC_MS`)
//! into one write, so one fsync covers every append of that period. Every
//! [`COMPACT_EVERY`] writes (and at start-up) the log is folded into the tables, in one
//! transaction that empties the log and writes only the rows that changed, looking only at the
//! conversations and devices the logged writes name (`storage::touched`), so a folding costs
//! what those writes touched and a restart reads the live data and at most that many writes,
//! not the whole history. The disk keeps a copy of the two big tables' rows in memory to diff
//! against: the store's data twice over in RAM, a price for now. Both storage models
//! work: the relay model's deleted bodies are rows that changed.
//!
//! Why redb: one file, ACID transactions with copy-on-write B-trees and no write-ahead log of
//! its own to tune, pure Rust (nothing to build from C), tuple keys kept in order (a
//! conversation's messages are one range, in seq order), and a commit that is durable when it
//! returns.
//!
//! A failed commit is not retried: the server stops at once (an abort), because a write the
//! disk refused may or may not be on it, and acking past that breaks the promise (PostgreSQL's
//! lesson from fsync errors).

use chatsim_system::durable::Write;
use chatsim_system::proto::{ConvId, DeviceId, Message, StorageOp, UserId};
use chatsim_system::session::{SessionChange, SessionTable};
use chatsim_system::storage::{touched, RowChange, StorageRest, StorageState, TableRows};
use chatsim_system::StorageModel;
use redb::{Database, Durability, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// Synced writes not yet folded into the tables, by their number in the order made.
const WRITES: TableDefinition<u64, &[u8]> = TableDefinition::new("writes");
/// (conversation, seq) -> the message.
const MESSAGES: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("messages");
/// (user, device index, conversation, seq): an inbox entry.
const INBOX: TableDefinition<(u32, u8, u64, u64), ()> = TableDefinition::new("inbox");
/// "storage": the rest of storage's state; "session": the session table.
const RECORDS: TableDefinition<&str, &[u8]> = TableDefinition::new("records");
/// What the data was written for: a deployment the file must match.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");

/// The file name inside the data folder.
pub const FILE: &str = "chatsim.redb";

/// Log writes between two foldings into the tables: each folding diffs the whole state, so
/// this bounds both its share of the work and how much a restart replays.
pub const COMPACT_EVERY: u64 = 1_000;

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
    /// A row cannot be decoded.
    #[error("{path}: {what} is unreadable: {reason}")]
    Corrupt {
        /// Which file.
        path: PathBuf,
        /// Which row.
        what: String,
        /// Why.
        reason: String,
    },
}

/// What a data file held when it was opened.
pub struct Recovered {
    /// Storage's state as the tables hold it.
    pub storage: StorageState,
    /// The session table as the tables hold it.
    pub session: SessionTable,
    /// Writes made after the tables were last brought up to date, in order: apply them on top.
    pub log: Vec<Write>,
}

/// The open data file.
pub struct Disk {
    db: Database,
    path: PathBuf,
    /// The next write's number.
    next: u64,
    /// Writes in the log now.
    logged: u64,
    /// What the message and inbox tables hold: the base the next folding diffs against.
    tables: TableRows,
    /// Conversations and devices whose rows the logged writes may have changed: all a folding
    /// needs to look at.
    convs: BTreeSet<ConvId>,
    devices: BTreeSet<DeviceId>,
    /// Writes between two foldings.
    compact_every: u64,
    /// How commits are made durable: `Immediate` always, but for the test that shows the
    /// power-cut check failing without the fsync.
    durability: Durability,
}

impl Disk {
    /// Open (or create) the data file in `dir` for the deployment named `deployment`, whose
    /// storage keeps `model`, and say what it holds.
    pub fn open(
        dir: &Path,
        deployment: &str,
        model: StorageModel,
    ) -> Result<(Disk, Recovered), DiskError> {
        let path = dir.join(FILE);
        let open = |e: &dyn std::fmt::Display| DiskError::Open {
            path: path.clone(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| open(&e))?;
        let db = Database::create(&path).map_err(|e| open(&e))?;
        Disk::load(db, path, deployment, model)
    }

    /// Read what `db` holds (`path` names it in errors) and keep it as the open data file.
    fn load(
        db: Database,
        path: PathBuf,
        deployment: &str,
        model: StorageModel,
    ) -> Result<(Disk, Recovered), DiskError> {
        let open = |e: &dyn std::fmt::Display| DiskError::Open {
            path: path.clone(),
            reason: e.to_string(),
        };
        let corrupt = |what: String, e: &dyn std::fmt::Display| DiskError::Corrupt {
            path: path.clone(),
            what,
            reason: e.to_string(),
        };
        let tx = db.begin_write().map_err(|e| open(&e))?;
        let (mut next, mut log) = (0, Vec::new());
        let (storage, session) = {
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
            let messages = tx.open_table(MESSAGES).map_err(|e| open(&e))?;
            let mut msgs = Vec::new();
            for row in messages.iter().map_err(|e| open(&e))? {
                let (k, v) = row.map_err(|e| open(&e))?;
                let (conv, seq) = k.value();
                let m: Message = postcard::from_bytes(v.value())
                    .map_err(|e| corrupt(format!("message {seq} of conversation {conv}"), &e))?;
                msgs.push(m);
            }
            let inbox = tx.open_table(INBOX).map_err(|e| open(&e))?;
            let mut entries = Vec::new();
            for row in inbox.iter().map_err(|e| open(&e))? {
                let (k, _) = row.map_err(|e| open(&e))?;
                let (user, index, conv, seq) = k.value();
                let device = DeviceId {
                    user: UserId(user),
                    index,
                };
                entries.push((device, ConvId(conv), seq));
            }
            let records = tx.open_table(RECORDS).map_err(|e| open(&e))?;
            let rest = match records.get("storage").map_err(|e| open(&e))? {
                Some(v) => postcard::from_bytes::<StorageRest>(v.value())
                    .map_err(|e| corrupt("the storage record".into(), &e))?,
                None => StorageState::new(model).rest(),
            };
            let session = match records.get("session").map_err(|e| open(&e))? {
                Some(v) => postcard::from_bytes::<SessionTable>(v.value())
                    .map_err(|e| corrupt("the session record".into(), &e))?,
                None => SessionTable::new(),
            };
            let writes = tx.open_table(WRITES).map_err(|e| open(&e))?;
            for row in writes.iter().map_err(|e| open(&e))? {
                let (k, v) = row.map_err(|e| open(&e))?;
                let n = k.value();
                let logged: Logged = postcard::from_bytes(v.value())
                    .map_err(|e| corrupt(format!("write {n}"), &e))?;
                log.push(match logged {
                    Logged::Storage(ops) => Write::Storage(ops),
                    Logged::Session(change) => Write::Session(change),
                });
                next = n + 1;
            }
            (StorageState::from_rows(msgs, entries, rest), session)
        };
        tx.commit().map_err(|e| open(&e))?;
        let disk = Disk {
            db,
            path,
            next,
            logged: log.len() as u64,
            tables: storage.table_rows(),
            convs: BTreeSet::new(),
            devices: BTreeSet::new(),
            compact_every: COMPACT_EVERY,
            durability: Durability::Immediate,
        };
        let mut disk = disk;
        for w in &log {
            disk.note(w);
        }
        Ok((
            disk,
            Recovered {
                storage,
                session,
                log,
            },
        ))
    }

    /// Fold the log into the tables every `n` writes instead of [`COMPACT_EVERY`].
    pub fn compacting_every(mut self, n: u64) -> Disk {
        self.compact_every = n.max(1);
        self
    }

    /// The number the next write gets (it starts again from 0 after a folding empties the
    /// log and the file is opened again).
    pub fn writes(&self) -> u64 {
        self.next
    }

    /// Writes in the log, not yet folded into the tables.
    pub fn logged(&self) -> u64 {
        self.logged
    }

    /// Whether the log is due to be folded into the tables.
    pub fn due(&self) -> bool {
        self.logged >= self.compact_every
    }

    /// Remember which rows `write` may change, for the next folding.
    fn note(&mut self, write: &Write) {
        if let Write::Storage(ops) = write {
            for op in ops {
                touched(op, &mut self.convs, &mut self.devices);
            }
        }
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
        tx.set_durability(self.durability);
        {
            let mut t = tx.open_table(WRITES).map_err(|e| e.to_string())?;
            t.insert(self.next, bytes.as_slice())
                .map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())?;
        self.next += 1;
        self.logged += 1;
        self.note(write);
        Ok(())
    }

    /// Bring the tables up to `storage` and `session` (the state after every write logged so
    /// far; `None` leaves the session record alone, as when Redis holds the table) and empty the
    /// log, in one synced transaction: only the rows that changed since the last folding are
    /// written.
    pub fn compact(
        &mut self,
        storage: &StorageState,
        session: Option<&SessionTable>,
    ) -> Result<(), String> {
        let err = |e: &dyn std::fmt::Display| e.to_string();
        let mut tx = self.db.begin_write().map_err(|e| err(&e))?;
        tx.set_durability(self.durability);
        {
            let mut messages = tx.open_table(MESSAGES).map_err(|e| err(&e))?;
            let mut inbox = tx.open_table(INBOX).map_err(|e| err(&e))?;
            let mut failed = None;
            // The rows are brought up to date as they are written: if the commit fails, the
            // server stops (see the module's note on failed commits).
            storage.fold_into(&mut self.tables, &self.convs, &self.devices, |change| {
                if failed.is_some() {
                    return;
                }
                let done = match change {
                    RowChange::Message(conv, seq, Some(m)) => {
                        postcard::to_allocvec(m).map_err(|e| err(&e)).and_then(|b| {
                            messages
                                .insert((conv.0, seq), b.as_slice())
                                .map(drop)
                                .map_err(|e| err(&e))
                        })
                    }
                    RowChange::Message(conv, seq, None) => messages
                        .remove((conv.0, seq))
                        .map(drop)
                        .map_err(|e| err(&e)),
                    RowChange::Inbox(d, conv, seq, true) => inbox
                        .insert((d.user.0, d.index, conv.0, seq), ())
                        .map(drop)
                        .map_err(|e| err(&e)),
                    RowChange::Inbox(d, conv, seq, false) => inbox
                        .remove((d.user.0, d.index, conv.0, seq))
                        .map(drop)
                        .map_err(|e| err(&e)),
                };
                if let Err(e) = done {
                    failed = Some(e);
                }
            });
            if let Some(e) = failed {
                return Err(e);
            }
            let mut records = tx.open_table(RECORDS).map_err(|e| err(&e))?;
            let rest = postcard::to_allocvec(&storage.rest()).map_err(|e| err(&e))?;
            records
                .insert("storage", rest.as_slice())
                .map_err(|e| err(&e))?;
            if let Some(session) = session {
                let s = postcard::to_allocvec(session).map_err(|e| err(&e))?;
                records
                    .insert("session", s.as_slice())
                    .map_err(|e| err(&e))?;
            }
        }
        tx.delete_table(WRITES).map_err(|e| err(&e))?;
        tx.open_table(WRITES).map_err(|e| err(&e))?;
        tx.commit().map_err(|e| err(&e))?;
        self.convs.clear();
        self.devices.clear();
        self.logged = 0;
        Ok(())
    }

    /// Rows in the message and inbox tables (what a folding has written so far).
    pub fn rows(&self) -> Result<(u64, u64), String> {
        let tx = self.db.begin_read().map_err(|e| e.to_string())?;
        let m = tx.open_table(MESSAGES).map_err(|e| e.to_string())?;
        let i = tx.open_table(INBOX).map_err(|e| e.to_string())?;
        Ok((
            m.len().map_err(|e| e.to_string())?,
            i.len().map_err(|e| e.to_string())?,
        ))
    }

    /// The file, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod power_cut;

#[cfg(test)]
mod tests {
    use super::*;
    use chatsim_system::proto::{Message, MsgId, Receipt, ReceiptKind};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chatsim-disk-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn text(conv: ConvId, seq: u64, from: u32, n: u32) -> Message {
        Message {
            conv,
            seq,
            id: MsgId {
                device: DeviceId::primary(UserId(from)),
                n,
            },
            body: vec![1, 2, 3],
            sent_at: seq,
            event: None,
            keys: Vec::new(),
        }
    }

    /// Writes of a small conversation: appends parked for the reader, some taken again.
    pub(super) fn writes() -> Vec<Write> {
        let conv = ConvId::direct(UserId(0), UserId(1));
        let reader = DeviceId::primary(UserId(1));
        let mut w = Vec::new();
        for seq in 1..=25u64 {
            w.push(Write::Storage(vec![StorageOp::Append {
                msg: text(conv, seq, 0, seq as u32),
                recipients: vec![reader],
                fanout: Vec::new(),
                park: true,
            }]));
            if seq % 3 == 0 {
                w.push(Write::Storage(vec![StorageOp::DeleteInbox {
                    device: reader,
                    conv,
                    seq: seq - 1,
                }]));
            }
        }
        w.push(Write::Storage(vec![StorageOp::Receipt {
            receipt: Receipt {
                conv,
                reader,
                kind: ReceiptKind::Delivered,
                upto: 10,
            },
            notify: vec![DeviceId::primary(UserId(0))],
        }]));
        w
    }

    // Whatever the point the last folding happened at, the file gives back the state every
    // write made: tables plus the log after them. Both storage models; the relay model's
    // deleted bodies come back deleted.
    #[test]
    fn the_tables_and_the_log_after_them_give_back_every_write() {
        for model in [StorageModel::History, StorageModel::Relay] {
            let dir = scratch(&format!("{model:?}"));
            let (disk, rec) = Disk::open(&dir, "d", model).expect("opens");
            assert!(rec.log.is_empty());
            let mut disk = disk.compacting_every(4);
            let mut state = StorageState::new(model);
            for w in writes() {
                disk.append(&w).expect("synced");
                if let Write::Storage(ops) = &w {
                    ops.iter().for_each(|op| state.apply(op));
                }
                if disk.due() {
                    disk.compact(&state, None).expect("folded");
                }
            }
            assert!(
                disk.logged() > 0 && disk.logged() < 4,
                "some writes only in the log"
            );
            let rows = disk.rows().expect("readable");
            assert!(
                rows.0 > 0 && rows.1 > 0,
                "the tables were written: {rows:?}"
            );
            drop(disk);

            let (mut disk, rec) = Disk::open(&dir, "d", model).expect("opens again");
            let mut back = rec.storage;
            for w in &rec.log {
                if let Write::Storage(ops) = w {
                    ops.iter().for_each(|op| back.apply(op));
                }
            }
            assert_eq!(back, state, "{model:?}");
            if model == StorageModel::Relay {
                assert!(
                    state.bodies_kept() < 25,
                    "the relay model deleted taken bodies"
                );
            }
            // Folded at start-up, nothing is left to replay.
            disk.compact(&back, None).expect("folded");
            drop(disk);
            let (_, rec) = Disk::open(&dir, "d", model).expect("opens a third time");
            assert!(rec.log.is_empty());
            assert_eq!(rec.storage, state);
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn a_file_of_another_deployment_is_refused_by_name() {
        let dir = scratch("mismatch");
        drop(Disk::open(&dir, "users=8", StorageModel::History).expect("opens"));
        let Err(e) = Disk::open(&dir, "users=9", StorageModel::History) else {
            panic!("opened another deployment's data")
        };
        let e = e.to_string();
        assert!(e.contains("users=8") && e.contains("chatsim.redb"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
