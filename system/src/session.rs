//! The session service: device -> (gateway, connection epoch), so shards know where to push.
//!
//! Durable, like a Redis with an append-only file synced on every write: each change is handed
//! to the engine as [`Effect::PersistSession`] before it is answered, and a restart recovers the
//! table. Epochs come from the device's own connection counter, so a newer connection always
//! wins: a late `Register` from a stale connection is refused, and an `Unregister` clears an
//! entry only when its epoch still matches (a late disconnect must not erase a newer
//! connection).
//!
//! Inputs: `Rpc` (`Register`, `Unregister`, `Lookup`). Outputs: `Rpc` answers,
//! `PersistSession`. No timers.

use crate::bugs::Bug;
use crate::proto::{DeviceId, Host, Millis, Rpc};
use crate::{Deployment, Effect, Input, Machine};
use std::collections::BTreeMap;

/// The session table: device -> (gateway index, connection epoch).
pub type SessionTable = BTreeMap<DeviceId, (u16, u64)>;

/// The session service.
#[derive(Clone, Debug)]
pub struct Session {
    topo: Deployment,
    table: SessionTable,
}

impl Session {
    /// A session service recovering `table` (empty on first boot).
    pub fn new(topo: Deployment, table: SessionTable) -> Session {
        Session { topo, table }
    }

    /// Where `device` is registered, if anywhere.
    pub fn entry(&self, device: DeviceId) -> Option<(u16, u64)> {
        self.table.get(&device).copied()
    }
}

impl Machine for Session {
    fn handle(&mut self, _now: Millis, input: Input, out: &mut Vec<Effect>) {
        let Input::Rpc { from, rpc } = input else {
            return;
        };
        match (from, rpc) {
            (Host::Gateway(g), Rpc::Register { device, epoch }) => {
                let current = self.table.get(&device).is_none_or(|&(_, e)| e <= epoch);
                if current && self.table.insert(device, (g, epoch)) != Some((g, epoch)) {
                    out.push(Effect::PersistSession {
                        device,
                        entry: Some((g, epoch)),
                    });
                }
                let rpc = Rpc::Registered {
                    device,
                    epoch,
                    current,
                };
                out.push(Effect::Rpc { to: from, rpc });
            }
            (Host::Gateway(_), Rpc::Unregister { device, epoch })
                if self.topo.bugs.has(Bug::SessionClearWithoutEpoch)
                    || self.table.get(&device).is_some_and(|&(_, e)| e == epoch) =>
            {
                self.table.remove(&device);
                out.push(Effect::PersistSession {
                    device,
                    entry: None,
                });
            }
            (Host::Shard(_), Rpc::Lookup { req, user }) => {
                let at = self
                    .topo
                    .devices_of(user)
                    .into_iter()
                    .filter_map(|d| self.table.get(&d).map(|&(g, _)| (d, g)))
                    .collect();
                out.push(Effect::Rpc {
                    to: from,
                    rpc: Rpc::Located { req, at },
                });
            }
            _ => {}
        }
    }

    fn poll_timeout(&self) -> Option<Millis> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::UserId;

    fn send(s: &mut Session, from: Host, rpc: Rpc) -> Vec<Effect> {
        let mut out = Vec::new();
        s.handle(0, Input::Rpc { from, rpc }, &mut out);
        out
    }

    // The classic bug: a phone moves from gateway 1 to gateway 2, then gateway 1 notices the
    // old connection died and unregisters. That must not erase the new entry.
    #[test]
    fn late_unregister_of_an_older_epoch_keeps_the_newer_connection() {
        let topo = Deployment {
            users: 2,
            gateways: 2,
            shards: 1,
            ..Deployment::default()
        };
        let mut s = Session::new(topo, SessionTable::new());
        let d = DeviceId::primary(UserId(1));
        send(
            &mut s,
            Host::Gateway(0),
            Rpc::Register {
                device: d,
                epoch: 1,
            },
        );
        send(
            &mut s,
            Host::Gateway(1),
            Rpc::Register {
                device: d,
                epoch: 2,
            },
        );
        send(
            &mut s,
            Host::Gateway(0),
            Rpc::Unregister {
                device: d,
                epoch: 1,
            },
        );
        assert_eq!(s.entry(d), Some((1, 2)));
        // A stale re-registration is refused and told so.
        let out = send(
            &mut s,
            Host::Gateway(0),
            Rpc::Register {
                device: d,
                epoch: 1,
            },
        );
        assert!(matches!(
            out[0],
            Effect::Rpc {
                rpc: Rpc::Registered { current: false, .. },
                ..
            }
        ));
        assert_eq!(s.entry(d), Some((1, 2)));
        send(
            &mut s,
            Host::Gateway(1),
            Rpc::Unregister {
                device: d,
                epoch: 2,
            },
        );
        assert_eq!(s.entry(d), None);
    }
}
