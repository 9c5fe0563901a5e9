//! turmoil's fault primitives for the shared fault ledger: crash and bounce hosts, hold and
//! release links (counting the cuts that hold each), drop one direction of a link, slow a
//! host's links, and stop a phone's cell from carrying its connection or swallow it.

use super::{host_name, Shared};
use chatsim_system::proto::{DeviceId, Host};
use chatsim_world::nemesis::FaultPrimitives;
use chatsim_world::plan::SPIKE_LATENCY_MS;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A spiked link's latency on turmoil: fixed, the middle of [`SPIKE_LATENCY_MS`]. turmoil
/// sets a link's latency as a range and draws from an exponential curve near its low end, so
/// a range would leave most frames fast; a fixed latency slows every frame alike.
const SPIKE_LATENCY: Duration =
    Duration::from_millis((SPIKE_LATENCY_MS.0 + SPIKE_LATENCY_MS.1) / 2);

/// The state of turmoil's links that the nemesis's cuts share: which cuts hold each link,
/// and which one-way cuts are in force (turmoil keeps one state per direction of a link, so
/// releasing a hold must put a one-way cut back).
pub(super) struct Links {
    /// One-way partitions in force, (from, to).
    pub(super) oneway: Vec<(Vec<Host>, Vec<Host>)>,
    /// Every host's turmoil name, servers then cells.
    pub(super) everyone: Vec<String>,
    /// How many cuts hold each link (a clog and a partition may both hold one; it is released
    /// when the last of them ends).
    pub(super) held: BTreeMap<(String, String), u32>,
    /// Every link's usual latency range, for the end of a spike.
    pub(super) usual: (Duration, Duration),
    /// Links the scenario slows for good: their usual maximum (key sorted).
    pub(super) slow: BTreeMap<(String, String), Duration>,
    /// Hosts whose links are spiked now.
    pub(super) spiked: BTreeSet<String>,
}

impl Links {
    /// Hold (or release) every link between `a` and `b`.
    fn cut(&mut self, sim: &turmoil::Sim, a: &[String], b: &[String], on: bool) {
        for x in a {
            for y in b.iter().filter(|y| *y != x) {
                let key = if x < y {
                    (x.clone(), y.clone())
                } else {
                    (y.clone(), x.clone())
                };
                let count = self.held.entry(key).or_default();
                if on {
                    *count += 1;
                    if *count == 1 {
                        sim.hold(x.as_str(), y.as_str());
                    }
                } else if *count > 0 {
                    *count -= 1;
                    if *count == 0 {
                        sim.release(x.as_str(), y.as_str());
                        // turmoil's release heals both directions: a one-way cut still in
                        // force on this link goes back on.
                        for (from, to) in [(x, y), (y, x)] {
                            if self.drops_one_way(from, to) {
                                sim.partition_oneway(from.as_str(), to.as_str());
                            }
                        }
                    }
                }
            }
        }
    }

    /// Whether a one-way partition in force drops frames from `from` to `to`.
    fn drops_one_way(&self, from: &str, to: &str) -> bool {
        self.oneway.iter().any(|(a, b)| {
            a.iter().any(|h| host_name(*h) == from) && b.iter().any(|h| host_name(*h) == to)
        })
    }

    /// Whether a clog or partition holds the link between `x` and `y`.
    fn is_held(&self, x: &str, y: &str) -> bool {
        let key = if x < y {
            (x.to_string(), y.to_string())
        } else {
            (y.to_string(), x.to_string())
        };
        self.held.get(&key).is_some_and(|n| *n > 0)
    }

    /// Drop (or stop dropping) frames from every host of `a` to every host of `b`. turmoil
    /// keeps one state per direction of a link, so a one-way cut and a hold on the same link
    /// would overwrite each other: a held link stays held (its frames wait, not vanish) and a
    /// one-way cut that ends under a hold leaves the hold in place.
    fn drop_one_way(&self, sim: &turmoil::Sim, a: &[Host], b: &[Host], on: bool) {
        for x in Self::names(a) {
            for y in Self::names(b).iter().filter(|y| **y != x) {
                if self.is_held(&x, y) {
                    continue;
                }
                if on {
                    sim.partition_oneway(x.as_str(), y.as_str());
                } else {
                    sim.repair_oneway(x.as_str(), y.as_str());
                }
            }
        }
    }

    /// Slow every link of `host` (or give them back their usual latency, but for links to a
    /// host still spiked itself).
    fn spike(&mut self, sim: &turmoil::Sim, host: &str, on: bool) {
        if on {
            self.spiked.insert(host.to_string());
        } else {
            self.spiked.remove(host);
        }
        for y in self.everyone.iter().filter(|y| *y != host) {
            if on {
                sim.set_link_latency(host, y.as_str(), SPIKE_LATENCY);
            } else if !self.spiked.contains(y) {
                let key = if host < y.as_str() {
                    (host.to_string(), y.clone())
                } else {
                    (y.clone(), host.to_string())
                };
                let max = self.slow.get(&key).copied().unwrap_or(self.usual.1);
                sim.set_link_latency(host, y.as_str(), self.usual.0);
                sim.set_link_max_message_latency(host, y.as_str(), max);
            }
        }
    }

    fn names(hosts: &[Host]) -> Vec<String> {
        hosts.iter().map(|h| host_name(*h)).collect()
    }
}

/// turmoil's ways of breaking things, for the fault ledger.
pub(super) struct Primitives<'a> {
    pub(super) sim: &'a mut turmoil::Sim<'static>,
    pub(super) sh: &'a Shared,
    pub(super) links: &'a mut Links,
}

impl FaultPrimitives for Primitives<'_> {
    fn kill(&mut self, host: Host) {
        self.sim.crash(host_name(host));
    }

    fn restart(&mut self, host: Host) {
        self.sim.bounce(host_name(host));
    }

    fn clog(&mut self, host: Host, on: bool) {
        let everyone = self.links.everyone.clone();
        self.links.cut(self.sim, &[host_name(host)], &everyone, on);
    }

    fn silence(&mut self, device: DeviceId, on: bool) {
        self.sh
            .silent
            .get(&device)
            .expect("every device has a silence switch")
            .send_replace(on);
    }

    fn blackhole(&mut self, device: DeviceId, on: bool) {
        self.sh
            .holes
            .get(&device)
            .expect("the plan's black-holed phones have a switch")
            .send_replace(on);
    }

    fn spike(&mut self, host: Host, on: bool) {
        self.links.spike(self.sim, &host_name(host), on);
    }

    fn disk(&mut self, host: Host, disk: chatsim_system::Disk) {
        self.sh.durable.set_disk(host, disk);
    }

    fn cut(&mut self, a: &[Host], b: &[Host], on: bool) {
        self.links
            .cut(self.sim, &Links::names(a), &Links::names(b), on);
    }

    fn cut_one_way(&mut self, a: &[Host], b: &[Host], on: bool) -> Result<(), String> {
        if on {
            self.links.drop_one_way(self.sim, a, b, true);
            self.links.oneway.push((a.to_vec(), b.to_vec()));
        } else {
            // Out of the list first: a release inside the repair must not put it back.
            if let Some(i) = self.links.oneway.iter().position(|p| p.0 == a && p.1 == b) {
                self.links.oneway.remove(i);
            }
            self.links.drop_one_way(self.sim, a, b, false);
        }
        Ok(())
    }
}
