//! The data file under power cuts: a redb storage backend that holds what was written since the
//! last fsync the way a page cache does, and a cut that keeps only what an fsync made durable.
//! It stands in for a filesystem that drops unsynced writes (LazyFS, dm-flakey), which this
//! machine cannot mount without root.

use super::*;
use redb::StorageBackend;
use std::sync::{Arc, Mutex, MutexGuard};

/// One change the disk was asked to make, kept until an fsync makes it durable.
#[derive(Debug, Clone)]
enum Pending {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

#[derive(Debug, Default)]
struct Platter {
    /// What survives a cut.
    durable: Vec<u8>,
    /// What reads see: the durable bytes with every pending change on top.
    cached: Vec<u8>,
    /// Changes since the last fsync, in order.
    pending: Vec<Pending>,
    /// Write, resize and sync calls left before the power goes; `None` never.
    calls_left: Option<u64>,
    /// The power is gone: every call fails.
    dead: bool,
    /// Calls made so far.
    calls: u64,
}

fn apply(bytes: &mut Vec<u8>, change: &Pending) {
    match change {
        Pending::Write(at, data) => {
            let (at, end) = (*at as usize, *at as usize + data.len());
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[at..end].copy_from_slice(data);
        }
        Pending::SetLen(len) => bytes.resize(*len as usize, 0),
    }
}

/// A disk whose power can be cut; clones share the platter.
#[derive(Debug, Clone, Default)]
struct CuttableDisk(Arc<Mutex<Platter>>);

impl CuttableDisk {
    fn platter(&self) -> MutexGuard<'_, Platter> {
        // A panicking test thread is the only way to poison it; the test fails then anyway.
        self.0.lock().expect("the platter's lock is not poisoned")
    }

    /// Count a change-making call; the one the power goes at fails, as do all after it.
    fn spend(p: &mut Platter) -> std::io::Result<()> {
        if p.dead {
            return Err(std::io::Error::other("the power is off"));
        }
        p.calls += 1;
        match p.calls_left {
            Some(0) => {
                p.dead = true;
                Err(std::io::Error::other("the power went"))
            }
            Some(n) => {
                p.calls_left = Some(n - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// The bytes a restart finds: only what an fsync made durable.
    fn after_cut(&self) -> CuttableDisk {
        let bytes = self.platter().durable.clone();
        CuttableDisk(Arc::new(Mutex::new(Platter {
            durable: bytes.clone(),
            cached: bytes,
            ..Platter::default()
        })))
    }
}

impl StorageBackend for CuttableDisk {
    fn len(&self) -> std::io::Result<u64> {
        Ok(self.platter().cached.len() as u64)
    }

    fn read(&self, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let p = self.platter();
        let (at, end) = (offset as usize, offset as usize + len);
        p.cached
            .get(at..end)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| std::io::Error::other("read past the end"))
    }

    fn set_len(&self, len: u64) -> std::io::Result<()> {
        let mut p = self.platter();
        Self::spend(&mut p)?;
        let change = Pending::SetLen(len);
        apply(&mut p.cached, &change);
        p.pending.push(change);
        Ok(())
    }

    // An eventual sync is taken as a full one: the data file only asks for immediate ones.
    fn sync_data(&self, _eventual: bool) -> std::io::Result<()> {
        let mut p = self.platter();
        Self::spend(&mut p)?;
        let pending = std::mem::take(&mut p.pending);
        for change in &pending {
            apply(&mut p.durable, change);
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut p = self.platter();
        Self::spend(&mut p)?;
        let change = Pending::Write(offset, data.to_vec());
        apply(&mut p.cached, &change);
        p.pending.push(change);
        Ok(())
    }
}

fn open_on(disk: &CuttableDisk, durability: Durability) -> Result<(Disk, Recovered), DiskError> {
    let db = redb::Builder::new()
        .create_with_backend(disk.clone())
        .map_err(|e| DiskError::Open {
            path: PathBuf::from("cuttable"),
            reason: e.to_string(),
        })?;
    let (mut d, rec) = Disk::load(db, PathBuf::from("cuttable"), "d", StorageModel::History)?;
    d.durability = durability;
    Ok((d, rec))
}

fn state_after(writes: &[Write]) -> StorageState {
    let mut state = StorageState::new(StorageModel::History);
    for w in writes {
        if let Write::Storage(ops) = w {
            ops.iter().for_each(|op| state.apply(op));
        }
    }
    state
}

/// What one cut found on restart.
#[derive(Debug, PartialEq)]
enum Found {
    /// Every acked write, and perhaps the one under way.
    Whole,
    /// A write was acked and is gone, or the state matches no prefix.
    Lost { acked: usize },
    /// The file did not open again.
    Unopenable(String),
}

/// Run the writes (folding every 4) until the power goes at change-making call `cut`, then
/// restart on what the cut left and compare with the acked prefix.
/// Append `all` (folding every 4) until the disk fails: the writes acked, and the state they
/// made.
fn write_until_failure(d: Disk, all: &[Write]) -> (usize, StorageState) {
    let mut d = d.compacting_every(4);
    let mut acked = 0;
    let mut state = StorageState::new(StorageModel::History);
    for w in all {
        if d.append(w).is_err() {
            break;
        }
        acked += 1;
        if let Write::Storage(ops) = w {
            ops.iter().for_each(|op| state.apply(op));
        }
        if d.due() && d.compact(&state, None).is_err() {
            break;
        }
    }
    (acked, state)
}

fn cut_at(cut: u64, durability: Durability) -> Found {
    let all = super::tests::writes();
    let disk = CuttableDisk::default();
    let (d, _) = open_on(&disk, durability).expect("a fresh disk opens");
    disk.platter().calls_left = Some(cut);
    let (acked, state) = write_until_failure(d, &all);
    let restarted = disk.after_cut();
    let (_, rec) = match open_on(&restarted, durability) {
        Ok(opened) => opened,
        Err(e) => return Found::Unopenable(e.to_string()),
    };
    let mut back = rec.storage;
    for w in &rec.log {
        if let Write::Storage(ops) = w {
            ops.iter().for_each(|op| back.apply(op));
        }
    }
    // The write the power went during was never acked: it may be there or not.
    let whole = back == state || (acked < all.len() && back == state_after(&all[..=acked]));
    if whole {
        Found::Whole
    } else {
        Found::Lost { acked }
    }
}

/// How many change-making calls the whole run makes with the power on.
fn calls_in_full_run(durability: Durability) -> u64 {
    let all = super::tests::writes();
    let disk = CuttableDisk::default();
    let (d, _) = open_on(&disk, durability).expect("a fresh disk opens");
    let before = disk.platter().calls;
    let (acked, _) = write_until_failure(d, &all);
    assert_eq!(acked, all.len(), "the power stays on");
    let calls = disk.platter().calls;
    calls - before
}

// The power goes at every change-making call of a run of appends and foldings in turn (mid
// commit, between an fsync and its return, mid folding, while closing), dropping every
// unsynced write. Every acked write comes back, in a file that opens.
#[test]
fn every_acked_write_survives_a_power_cut_at_any_call() {
    let calls = calls_in_full_run(Durability::Immediate);
    assert!(calls > 50, "the run makes few calls: {calls}");
    let mut cases = 0;
    for cut in 0..=calls {
        // A torn write-back (some unsynced writes kept, others lost) is not tried here: once
        // in CI it kept a header naming a file longer than the size kept, and redb 2.6.4
        // asserted on open (`raw_file_len >= layout.len`); see docs/protocol.md.
        let found = cut_at(cut, Durability::Immediate);
        assert_eq!(
            found,
            Found::Whole,
            "power cut at call {cut} of {calls}: {found:?}"
        );
        cases += 1;
    }
    println!("{cases} power cuts over {calls} calls: every acked write came back");
}

// Without the fsync the same cuts lose acked writes: the check above can fail.
#[test]
fn without_the_fsync_a_power_cut_loses_acked_writes() {
    let calls = calls_in_full_run(Durability::None);
    let lost: Vec<usize> = (0..=calls)
        .filter_map(|cut| match cut_at(cut, Durability::None) {
            Found::Lost { acked } => Some(acked),
            Found::Whole => None,
            Found::Unopenable(e) => panic!("cut at call {cut}: the file does not open: {e}"),
        })
        .collect();
    assert!(
        !lost.is_empty(),
        "no cut of {calls} lost an acked write without the fsync"
    );
    println!(
        "without the fsync {} of {} cuts lost acked writes (the most acked before one: {:?})",
        lost.len(),
        calls + 1,
        lost.iter().max()
    );
}
