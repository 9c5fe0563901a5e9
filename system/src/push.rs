//! The push provider: the stand-in for APNs and FCM. A shard asks it to wake a device that is
//! not connected; some time later (it is slow), unless it loses the push (it is lossy), the
//! device's OS hands the app a notification and the app connects and drains its inbox.
//!
//! It keeps at most one pending push per device, the newest, as APNs does for a device it
//! cannot reach: asking again while one is pending changes nothing. Nothing depends on a push
//! arriving: a phone that never gets one still drains everything when its user opens the app;
//! the push only makes that happen sooner.
//!
//! Randomness (delay, loss) comes only from the seeded generator it is given; a crash forgets
//! every pending push.
//!
//! Inputs: `Rpc` (`Notify` from shards), `Timeout`. Outputs: `Rpc::Wake` to devices (carried by
//! the engine outside the simulated network, as the OS's own channel is). Timers: one per
//! pending push.

use crate::probe::Probe;
use crate::proto::{DeviceId, Host, Millis, Rpc};
use crate::timers::Timers;
use crate::{Deployment, Effect, Input, Machine};
use rand::Rng;

/// The push provider.
#[derive(Clone, Debug, Hash)]
pub struct Push {
    /// The provider's behaviour (delays, losses).
    /// Shared by every machine of a deployment: a model checker clones whole worlds per state.
    topo: std::sync::Arc<Deployment>,
    /// Draws each push's delay and whether it is lost.
    rng: crate::draws::Draws,
    /// One pending push per device, due when its delay runs out (a second notify before then
    /// coalesces into it, as APNs collapses notifications).
    pending: Timers<DeviceId>,
    /// Pushes handed to devices over this life.
    delivered: u64,
    /// Pushes lost over this life.
    lost: u64,
}

impl Push {
    /// A provider with no pending pushes (first boot or after a crash); `seed` drives its
    /// delays and losses.
    pub fn new(topo: impl Into<std::sync::Arc<Deployment>>, seed: u64) -> Push {
        let topo: std::sync::Arc<Deployment> = topo.into();
        Push {
            topo,
            rng: crate::draws::Draws::seeded(seed),
            pending: Timers::default(),
            delivered: 0,
            lost: 0,
        }
    }

    /// (delivered, lost) pushes over this life.
    pub fn counts(&self) -> (u64, u64) {
        (self.delivered, self.lost)
    }
}

impl Machine for Push {
    fn handle(&mut self, now: Millis, input: Input, out: &mut Vec<Effect>) {
        match input {
            Input::Rpc {
                from: Host::Shard(_),
                rpc: Rpc::Notify { device },
            } if self.topo.has_device(device) && !self.pending.is_set(&device) => {
                let (lo, hi) = self.topo.push.delay_ms;
                let delay = self.rng.gen_range(lo..=hi.max(lo));
                self.pending.set(device, now + delay);
            }
            Input::Timeout => {
                while let Some(device) = self.pending.pop_due(now) {
                    if self.rng.gen_range(0..100) < u32::from(self.topo.push.loss_percent) {
                        out.push(Effect::Probe(Probe::PushLost));
                        self.lost += 1;
                        continue;
                    }
                    self.delivered += 1;
                    out.push(Effect::Rpc {
                        to: Host::Device(device),
                        rpc: Rpc::Wake,
                    });
                }
            }
            // A push already pending for the device: the provider collapses the two, as APNs
            // does. (An unknown device gets nothing: there is no token to send to.)
            Input::Rpc {
                from: Host::Shard(_),
                rpc: Rpc::Notify { .. },
            } => out.push(Effect::Probe(Probe::PushCoalesced)),
            Input::Rpc { from, rpc } => {
                unreachable!("only a shard's Notify reaches the push provider: {rpc:?} from {from}")
            }
            // Only gateways hold connections and only phones have users: the hosts never hand
            // these to this machine.
            input => crate::not_for_this_host("the push provider", &input),
        }
    }

    fn poll_timeout(&self) -> Option<Millis> {
        self.pending.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::UserId;
    use crate::PushSpec;

    /// Ask for a push to `d`; true when it was coalesced into one already pending.
    fn notify(p: &mut Push, now: Millis, d: DeviceId) -> bool {
        let mut out = Vec::new();
        let rpc = Rpc::Notify { device: d };
        p.handle(
            now,
            Input::Rpc {
                from: Host::Shard(0),
                rpc,
            },
            &mut out,
        );
        match out[..] {
            [] => false,
            [Effect::Probe(Probe::PushCoalesced)] => true,
            _ => panic!("nothing but a coalescing probe goes out at once: {out:?}"),
        }
    }

    // Slow (a delay from the configured range), coalescing (one pending push per device),
    // and lossy (about the configured share lost).
    #[test]
    fn pushes_are_late_coalesced_and_sometimes_lost() {
        let topo = Deployment {
            users: 200,
            push: PushSpec {
                delay_ms: (100, 200),
                loss_percent: 25,
            },
            ..Deployment::default()
        };
        let mut p = Push::new(topo, 7);
        for u in 0..200 {
            let d = DeviceId::primary(UserId(u));
            assert!(!notify(&mut p, 0, d), "the first is pending, not coalesced");
            assert!(
                notify(&mut p, 10, d),
                "the second is coalesced into the first"
            );
        }
        let mut out = Vec::new();
        p.handle(99, Input::Timeout, &mut out);
        assert!(out.is_empty(), "none before the shortest delay");
        p.handle(200, Input::Timeout, &mut out);
        let (delivered, lost) = p.counts();
        assert_eq!(
            delivered + lost,
            200,
            "one push per device, however often asked"
        );
        let probes = |p: Probe| out.iter().filter(|e| **e == Effect::Probe(p)).count() as u64;
        assert_eq!(probes(Probe::PushLost), lost, "each loss is probed");
        assert_eq!(out.len() as u64, delivered + lost);
        assert!((30..=70).contains(&lost), "about a quarter lost: {lost}");
    }

    // A server handed a phone's input is driven by a broken engine: it stops there.
    #[test]
    #[should_panic(expected = "only a gateway or a phone gets")]
    fn a_server_handed_a_phones_input_stops_the_run() {
        let mut p = Push::new(Deployment::default(), 1);
        p.handle(0, Input::Connected, &mut Vec::new());
    }
}
