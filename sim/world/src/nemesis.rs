//! The fault ledger: what the nemesis has broken and not yet mended, and what a heal must undo
//! and record, for every engine.
//!
//! Each engine breaks things its own way (madsim clogs nodes and links; turmoil holds links and
//! stops a phone's cell from carrying its connection); [`FaultPrimitives`] is that small part.
//! Everything else is here, once: which faults are in force, that a restart applies only to a
//! host that is down, that a clog or silence already in force is not applied twice, what the
//! history records and when, and the order in which [`WorldAction::HealAll`] mends things (hosts
//! restarted, clogs lifted, spikes ended, phones given their voice back, black holes closed, one-way cuts
//! healed, partitions healed). A fault an engine cannot express is said once in the run's output, never dropped
//! silently.

use crate::plan::WorldAction;
use crate::record::Recorder;
use chatsim_judge::{Event, Fault};
use chatsim_system::limits::DISK_SLOW_SYNC_MS;
use chatsim_system::proto::{DeviceId, Host, Millis};
use chatsim_system::Disk;
use std::collections::{BTreeMap, BTreeSet};

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
    /// Open (`on`) or close a black hole under a phone: its connection of the moment, and
    /// each one it opens while the hole is open, drops every frame both ways and never closes
    /// (the phone's machine may give up on it; the server never hears). Closing the hole lets
    /// new connections through; the swallowed ones stay dead.
    fn blackhole(&mut self, device: DeviceId, on: bool);
    /// Slow (`on`) every link of a server host a hundredfold, or give it back its usual
    /// latency ([`crate::plan::SPIKE_LATENCY_MS`]).
    fn spike(&mut self, host: Host, on: bool);
    /// Set what a storage host's disk does from now on; the host's machine hears of it at
    /// its next input (a disk's state matters only when it writes).
    fn disk(&mut self, host: Host, disk: Disk);
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
    /// Server hosts whose links are slowed.
    spiked: BTreeSet<Host>,
    /// Phones under an open black hole.
    holed: BTreeSet<DeviceId>,
    /// Storage hosts whose disk is not healthy, and what it does.
    disks: BTreeMap<Host, Disk>,
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
                for h in std::mem::take(&mut self.spiked) {
                    engine.spike(h, false);
                    rec.record(now, Event::Fault(Fault::LatencySpikeEnd(h)));
                }
                for d in std::mem::take(&mut self.silenced) {
                    engine.silence(d, false);
                    rec.record(now, Event::Fault(Fault::DeviceUnsilent(d)));
                }
                for (h, d) in std::mem::take(&mut self.disks) {
                    engine.disk(h, Disk::Healthy);
                    let end = match d {
                        Disk::Full => Fault::DiskFullEnd(h),
                        _ => Fault::DiskSlowEnd(h),
                    };
                    rec.record(now, Event::Fault(end));
                }
                for d in std::mem::take(&mut self.holed) {
                    engine.blackhole(d, false);
                    rec.record(now, Event::Fault(Fault::DeviceBlackholeEnd(d)));
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
            Fault::LatencySpike(h) => {
                if self.spiked.insert(*h) {
                    engine.spike(*h, true);
                }
            }
            Fault::LatencySpikeEnd(h) => {
                if self.spiked.remove(h) {
                    engine.spike(*h, false);
                }
            }
            Fault::DiskSlow(h) | Fault::DiskFull(h) => {
                let d = if matches!(f, Fault::DiskFull(_)) {
                    Disk::Full
                } else {
                    Disk::Slow(DISK_SLOW_SYNC_MS)
                };
                if self.disks.contains_key(h) {
                    return false;
                }
                self.disks.insert(*h, d);
                engine.disk(*h, d);
            }
            Fault::DiskSlowEnd(h) | Fault::DiskFullEnd(h) => {
                if self.disks.remove(h).is_none() {
                    return false;
                }
                engine.disk(*h, Disk::Healthy);
            }
            Fault::DeviceBlackhole(d) => {
                if self.holed.insert(*d) {
                    engine.blackhole(*d, true);
                }
            }
            Fault::DeviceBlackholeEnd(d) => {
                if self.holed.remove(d) {
                    engine.blackhole(*d, false);
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
            && self.holed.is_empty()
            && self.spiked.is_empty()
            && self.partitions.is_empty()
            && self.one_way.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deploy::Durable;
    use crate::plan::Plan;
    use crate::record::Keep;
    use chatsim_system::proto::UserId;
    use chatsim_system::Deployment;

    const PHONE: DeviceId = DeviceId {
        user: UserId(1),
        index: 0,
    };

    /// An engine that can do everything but cut one way (as madsim), and logs every call.
    #[derive(Default)]
    struct Log(Vec<String>);

    impl FaultPrimitives for Log {
        fn kill(&mut self, host: Host) {
            self.0.push(format!("kill {host}"));
        }
        fn restart(&mut self, host: Host) {
            self.0.push(format!("restart {host}"));
        }
        fn clog(&mut self, host: Host, on: bool) {
            self.0.push(format!("clog {host} {on}"));
        }
        fn silence(&mut self, device: DeviceId, on: bool) {
            self.0.push(format!("silence {device} {on}"));
        }
        fn blackhole(&mut self, device: DeviceId, on: bool) {
            self.0.push(format!("blackhole {device} {on}"));
        }
        fn spike(&mut self, host: Host, on: bool) {
            self.0.push(format!("spike {host} {on}"));
        }
        fn disk(&mut self, host: Host, disk: Disk) {
            self.0.push(format!("disk {host} {disk:?}"));
        }
        fn cut(&mut self, a: &[Host], b: &[Host], on: bool) {
            self.0.push(format!("cut {} {} {on}", a.len(), b.len()));
        }
        fn cut_one_way(&mut self, _: &[Host], _: &[Host], _: bool) -> Result<(), String> {
            Err("no one-way cuts here".into())
        }
    }

    fn run(actions: Vec<WorldAction>) -> (Vec<String>, Vec<Event>, Vec<String>, bool) {
        let topo = Deployment {
            users: 2,
            ..Deployment::default()
        };
        let rec = Recorder::new(&topo, &Plan::default(), Keep::VERDICT);
        let (mut ledger, mut engine) = (FaultLedger::new(), Log::default());
        for (t, a) in actions.into_iter().enumerate() {
            ledger.act(t as Millis, a, &mut engine, &rec);
        }
        let clear = ledger.is_clear();
        let raw = rec.finish(100, 100, &Durable::new(&topo), ledger.skipped());
        let events = raw.history.records.into_iter().map(|r| r.event).collect();
        (engine.0, events, raw.skipped, clear)
    }

    // The calls an engine sees make sense whatever the plan asks: a restart only for a host
    // that is down, a clog or silence only once, and a heal undoes exactly what is broken, in
    // the one order every engine follows.
    #[test]
    fn a_heal_undoes_exactly_what_is_broken_in_one_order() {
        use WorldAction::Fault as F;
        let (calls, events, skipped, clear) = run(vec![
            F(Fault::Restart(Host::Shard(0))),
            F(Fault::Kill(Host::Shard(0))),
            F(Fault::Clog(Host::Gateway(1))),
            F(Fault::Clog(Host::Gateway(1))),
            F(Fault::DeviceSilent(PHONE)),
            F(Fault::DeviceBlackhole(PHONE)),
            F(Fault::DeviceBlackhole(PHONE)),
            F(Fault::Partition(vec![Host::Session], vec![Host::Shard(1)])),
            WorldAction::HealAll,
        ]);
        assert_eq!(
            calls,
            [
                "kill shard-1",
                "clog gateway-2 true",
                "silence u1.d0 true",
                "blackhole u1.d0 true",
                "cut 1 1 true",
                "restart shard-1",
                "clog gateway-2 false",
                "silence u1.d0 false",
                "blackhole u1.d0 false",
                "cut 1 1 false",
            ]
        );
        assert!(clear, "nothing is broken after a heal");
        assert!(skipped.is_empty());
        // Every fault the plan asked for is in the history, then what the heal mended, then
        // the heal itself.
        assert_eq!(events.len(), 8 + 5 + 1);
        assert_eq!(events[8], Event::Fault(Fault::Restart(Host::Shard(0))));
        assert_eq!(events[10], Event::Fault(Fault::DeviceUnsilent(PHONE)));
        assert_eq!(events[11], Event::Fault(Fault::DeviceBlackholeEnd(PHONE)));
        assert_eq!(events[13], Event::Healed);
    }

    // A fault the engine cannot express is said once, and neither it nor its heal reaches the
    // history (the checkers must not excuse what never happened).
    #[test]
    fn a_fault_the_engine_cannot_express_is_said_and_kept_out_of_the_history() {
        use WorldAction::Fault as F;
        let (a, b) = (vec![Host::Shard(0)], vec![Host::Storage(0)]);
        let (calls, events, skipped, clear) = run(vec![
            F(Fault::PartitionOneway(a.clone(), b.clone())),
            F(Fault::PartitionOnewayHealed(a, b)),
        ]);
        assert!(calls.is_empty(), "{calls:?}");
        assert!(events.is_empty(), "{events:?}");
        assert_eq!(skipped.len(), 1);
        assert!(
            skipped[0].contains("at 0 ms: no one-way cuts here"),
            "{skipped:?}"
        );
        assert!(clear);
    }

    // A heal of something not broken changes nothing in the engine, yet the plan's event is
    // still recorded (the history says what the world asked for).
    #[test]
    fn mending_what_is_not_broken_calls_nothing() {
        use WorldAction::Fault as F;
        let (calls, events, _, _) = run(vec![
            F(Fault::Unclog(Host::Gateway(0))),
            F(Fault::DeviceUnsilent(PHONE)),
            F(Fault::PartitionHealed(
                vec![Host::Session],
                vec![Host::Push],
            )),
        ]);
        assert!(calls.is_empty(), "{calls:?}");
        assert_eq!(events.len(), 3);
    }
}
