//! The fault ledger: what the nemesis has broken and not yet mended, and what a heal must undo
//! and record, for every engine.
//!
//! Each engine breaks things its own way (madsim clogs nodes and links; turmoil holds links and
//! stops a phone's cell from carrying its connection); [`FaultPrimitives`] is that small part.
//! Everything else is here, once: which faults are in force, that a restart applies only to a
//! host that is down, that a clog or silence already in force is not applied twice, what the
//! history records and when, and the order in which [`WorldAction::HealAll`] mends things (hosts
//! restarted, clogs lifted, phones given their voice back, one-way cuts healed, partitions
//! healed). A fault an engine cannot express is said once in the run's output, never dropped
//! silently.

use crate::plan::WorldAction;
use crate::record::Recorder;
use chatsim_judge::{Event, Fault};
use chatsim_system::proto::{DeviceId, Host, Millis};
use std::collections::BTreeSet;

/// One side of a partition: hosts, sorted.
pub type Side = Vec<Host>;

/// What an engine can break and mend. Called only by the [`FaultLedger`], which guarantees the
/// calls make sense: `restart` only for a host `kill`ed before, `clog(h, false)` only for a
/// clogged host, and so on.
pub trait FaultPrimitives {
    /// Kill a server host: its memory and connections are gone.
    fn kill(&mut self, host: Host);
    /// Restart a killed server host from what it made durable.
    fn restart(&mut self, host: Host);
    /// Hold (`on`) or release every frame to and from a server host.
    fn clog(&mut self, host: Host, on: bool);
    /// Silence (`on`) or give back a phone's voice: its connection carries nothing either way
    /// while silent, as in a tunnel.
    fn silence(&mut self, device: DeviceId, on: bool);
    /// Hold (`on`) or release every frame between the two sides, both ways.
    fn cut(&mut self, a: &[Host], b: &[Host], on: bool);
    /// Drop (`on`) or stop dropping frames from `a` to `b` only. `Err` says why this engine
    /// cannot; the ledger then skips the fault and says so in the run's output.
    fn cut_one_way(&mut self, a: &[Host], b: &[Host], on: bool) -> Result<(), String>;
}

/// What the nemesis has broken and not yet mended.
#[derive(Debug, Default)]
pub struct FaultLedger {
    /// Killed hosts not yet restarted.
    down: BTreeSet<Host>,
    /// Clogged server hosts.
    clogged: BTreeSet<Host>,
    /// Silent phones.
    silenced: BTreeSet<DeviceId>,
    /// Partitions in force, in the order they began.
    partitions: Vec<(Side, Side)>,
    /// One-way partitions in force, (from, to), in the order they began.
    one_way: Vec<(Side, Side)>,
    /// One-way partitions the engine could not apply: their heal is skipped too.
    one_way_skipped: Vec<(Side, Side)>,
    /// Faults the engine could not express, each said once, in plan order.
    skipped: Vec<String>,
}

impl FaultLedger {
    /// Nothing broken.
    pub fn new() -> FaultLedger {
        FaultLedger::default()
    }

    /// Carry out `action` at `now` with `engine`'s primitives, recording what the history
    /// must see.
    pub fn act(
        &mut self,
        now: Millis,
        action: WorldAction,
        engine: &mut impl FaultPrimitives,
        rec: &Recorder,
    ) {
        match action {
            WorldAction::Fault(f) => {
                if self.fault(now, &f, engine) {
                    rec.record(now, Event::Fault(f));
                }
            }
            WorldAction::HealAll => {
                for h in std::mem::take(&mut self.down) {
                    engine.restart(h);
                    rec.record(now, Event::Fault(Fault::Restart(h)));
                }
                for h in std::mem::take(&mut self.clogged) {
                    engine.clog(h, false);
                    rec.record(now, Event::Fault(Fault::Unclog(h)));
                }
                for d in std::mem::take(&mut self.silenced) {
                    engine.silence(d, false);
                    rec.record(now, Event::Fault(Fault::DeviceUnsilent(d)));
                }
                for (a, b) in std::mem::take(&mut self.one_way) {
                    engine
                        .cut_one_way(&a, &b, false)
                        .expect("an engine that applied a one-way cut can heal it");
                    rec.record(now, Event::Fault(Fault::PartitionOnewayHealed(a, b)));
                }
                for (a, b) in std::mem::take(&mut self.partitions) {
                    engine.cut(&a, &b, false);
                    rec.record(now, Event::Fault(Fault::PartitionHealed(a, b)));
                }
                rec.record(now, Event::Healed);
            }
        }
        assert!(
            self.clogged.iter().all(|h| !matches!(h, Host::Device(_))),
            "phones are silenced, not clogged"
        );
    }

    /// Apply one fault; false when the history must not see it (the engine skipped it).
    fn fault(&mut self, now: Millis, f: &Fault, engine: &mut impl FaultPrimitives) -> bool {
        match f {
            Fault::Kill(h) => {
                engine.kill(*h);
                self.down.insert(*h);
            }
            Fault::Restart(h) => {
                if self.down.remove(h) {
                    engine.restart(*h);
                }
            }
            Fault::Clog(h) => {
                if self.clogged.insert(*h) {
                    engine.clog(*h, true);
                }
            }
            Fault::Unclog(h) => {
                if self.clogged.remove(h) {
                    engine.clog(*h, false);
                }
            }
            Fault::DeviceSilent(d) => {
                if self.silenced.insert(*d) {
                    engine.silence(*d, true);
                }
            }
            Fault::DeviceUnsilent(d) => {
                if self.silenced.remove(d) {
                    engine.silence(*d, false);
                }
            }
            Fault::Partition(a, b) => {
                engine.cut(a, b, true);
                self.partitions.push((a.clone(), b.clone()));
            }
            Fault::PartitionHealed(a, b) => {
                if let Some(i) = self.partitions.iter().position(|p| p.0 == *a && p.1 == *b) {
                    self.partitions.remove(i);
                    engine.cut(a, b, false);
                }
            }
            Fault::PartitionOneway(a, b) => match engine.cut_one_way(a, b, true) {
                Ok(()) => self.one_way.push((a.clone(), b.clone())),
                Err(why) => {
                    self.skipped.push(format!("{f} at {now} ms: {why}"));
                    self.one_way_skipped.push((a.clone(), b.clone()));
                    return false;
                }
            },
            Fault::PartitionOnewayHealed(a, b) => {
                let same = |p: &(Side, Side)| p.0 == *a && p.1 == *b;
                if let Some(i) = self.one_way_skipped.iter().position(same) {
                    self.one_way_skipped.remove(i);
                    return false;
                }
                if let Some(i) = self.one_way.iter().position(same) {
                    self.one_way.remove(i);
                    engine
                        .cut_one_way(a, b, false)
                        .expect("an engine that applied a one-way cut can heal it");
                }
            }
            // The phone's own doing (its plan's actions carry them out); recorded here only
            // when the plan lists them as world events.
            Fault::DeviceOffline(_) | Fault::DeviceOnline(_) | Fault::DeviceDrop(_) => {}
        }
        true
    }

    /// Faults of the plan this engine could not express, each said once, in plan order.
    pub fn skipped(self) -> Vec<String> {
        self.skipped
    }

    /// Whether anything is still broken.
    pub fn is_clear(&self) -> bool {
        self.down.is_empty()
            && self.clogged.is_empty()
            && self.silenced.is_empty()
            && self.partitions.is_empty()
            && self.one_way.is_empty()
    }
}
