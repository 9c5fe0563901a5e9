//! The session service: device -> (gateway, connection epoch), so shards know where to push;
//! and presence (online / last seen), since it is the one place that knows who is connected.
//!
//! Durable, like a Redis with an append-only file synced on every write: each change is handed
//! to the engine as [`Effect::PersistSession`] before it is answered, and a restart recovers the
//! table. Epochs come from the device's own connection counter, so a newer connection always
//! wins: a late `Register` from a stale connection is refused, and an `Unregister` clears an
//! entry only when its epoch still matches (a late disconnect must not erase a newer
//! connection).
//!
//! Presence: a user is online while any of their devices is registered; when the last one
//! goes, their last seen is that moment (kept durable, so it never goes back across a restart).
//! A change is published [`PRESENCE_DEBOUNCE_MS`] after it happens, and only if it still holds
//! then: a flap shorter than that publishes nothing (WhatsApp does not flicker a contact
//! offline for a reconnect). It goes only to devices that have a chat with the user open:
//! they subscribe on opening it and renew the subscription, a lease of
//! [`PRESENCE_LEASE_MS`], while it stays open (so subscriptions need no durability: a restart
//! forgets them and the renewals bring them back). Each subscription is answered at once with
//! the current presence.
//!
//! Inputs: `Rpc` (`Register`, `Unregister`, `Subscribe` from gateways; `Lookup` from shards),
//! `Timeout`. Outputs: `Rpc` answers and presence pushes (`ToDevice` through a gateway),
//! `PersistSession`. Timers: one debounce per user whose presence changed.

use crate::bugs::Bug;
use crate::limits::{PRESENCE_DEBOUNCE_MAX_MS, PRESENCE_DEBOUNCE_MS, PRESENCE_LEASE_MS};
use crate::probe::Probe;
use crate::proto::{DeviceId, Down, Host, Millis, Rpc, UserId};
use crate::timers::Timers;
use crate::{Deployment, Effect, Input, Machine};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One durable change to the session service's state.
#[derive(Clone, Debug, Hash, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionChange {
    /// A device's (gateway, epoch), or `None` when its entry is cleared.
    Entry {
        /// The device.
        device: DeviceId,
        /// Its (gateway, epoch, the gateway's clock when it asked to register it), if
        /// registered.
        entry: Option<(u16, u64, Millis)>,
    },
    /// A user's last device went away at `at`.
    LastSeen {
        /// The user.
        user: UserId,
        /// When.
        at: Millis,
    },
}

/// The session service's durable state: device -> (gateway index, connection epoch), and each
/// user's last seen.
#[derive(Clone, Debug, Hash, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTable {
    /// device -> (gateway index, connection epoch, the gateway's clock at its `Register`).
    entries: BTreeMap<DeviceId, (u16, u64, Millis)>,
    /// When each user's last device went away (only ever moves forward).
    last_seen: BTreeMap<UserId, Millis>,
}

impl SessionTable {
    /// An empty table (first boot).
    pub fn new() -> SessionTable {
        SessionTable::default()
    }

    /// Apply one durable change: the node and the engine's outside copy both use this.
    pub fn apply(&mut self, change: &SessionChange) {
        match change {
            SessionChange::Entry {
                device,
                entry: Some(e),
            } => {
                self.entries.insert(*device, *e);
            }
            SessionChange::Entry {
                device,
                entry: None,
            } => {
                self.entries.remove(device);
            }
            SessionChange::LastSeen { user, at } => {
                let seen = self.last_seen.entry(*user).or_default();
                *seen = (*seen).max(*at);
            }
        }
    }
}

/// What a user's contacts are shown: online, or when last seen (0: never).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct Presence {
    /// Any device registered.
    online: bool,
    /// When the last one went, if offline.
    last_seen: Millis,
}

/// The session service.
#[derive(Clone, Debug, Hash)]
pub struct Session {
    /// Who exists, and the bugs in force.
    /// Shared by every machine of a deployment: a model checker clones whole worlds per state.
    topo: std::sync::Arc<Deployment>,
    /// Where each device is registered, and last seens: the durable part.
    table: SessionTable,
    /// Per watched user: the devices looking at them, with their gateway and lease end.
    subs: BTreeMap<UserId, BTreeMap<DeviceId, (u16, Millis)>>,
    /// Per device: whom it watches (one open chat at a time).
    watching: BTreeMap<DeviceId, UserId>,
    /// The presence last published per user.
    published: BTreeMap<UserId, Presence>,
    /// When each user's unpublished change began (the debounce waits at most so long).
    changing: BTreeMap<UserId, Millis>,
    /// One timer per user whose presence changed: when to publish it, if it still holds.
    timers: Timers<UserId>,
}

impl Session {
    /// A session service recovering `table` (empty on first boot).
    pub fn new(topo: impl Into<std::sync::Arc<Deployment>>, table: SessionTable) -> Session {
        let topo: std::sync::Arc<Deployment> = topo.into();
        Session {
            topo,
            table,
            subs: BTreeMap::new(),
            watching: BTreeMap::new(),
            published: BTreeMap::new(),
            changing: BTreeMap::new(),
            timers: Timers::default(),
        }
    }

    /// Where `device` is registered, if anywhere.
    pub fn entry(&self, device: DeviceId) -> Option<(u16, u64)> {
        self.table.entries.get(&device).map(|&(g, e, _)| (g, e))
    }

    fn online(&self, user: UserId) -> bool {
        self.topo
            .devices_of(user)
            .iter()
            .any(|d| self.table.entries.contains_key(d))
    }

    fn presence(&self, user: UserId) -> Presence {
        if self.online(user) {
            return Presence {
                online: true,
                last_seen: 0,
            };
        }
        Presence {
            online: false,
            last_seen: self.table.last_seen.get(&user).copied().unwrap_or(0),
        }
    }

    fn persist(&mut self, change: SessionChange, out: &mut Vec<Effect>) {
        self.table.apply(&change);
        out.push(Effect::PersistSession(change));
    }

    /// Set (or clear) `device`'s entry; if that moved its user between online and offline,
    /// record the last seen and start the debounce.
    fn set_entry(
        &mut self,
        now: Millis,
        device: DeviceId,
        entry: Option<(u16, u64, Millis)>,
        out: &mut Vec<Effect>,
    ) {
        let user = device.user;
        let was = self.online(user);
        self.persist(SessionChange::Entry { device, entry }, out);
        let is = self.online(user);
        if was && !is {
            self.persist(SessionChange::LastSeen { user, at: now }, out);
        }
        if was != is {
            // Every change restarts the wait, so a flap straddling a deadline publishes
            // nothing; a user who never settles is published after the cap.
            let began = *self.changing.entry(user).or_insert(now);
            let at = (now + PRESENCE_DEBOUNCE_MS).min(began + PRESENCE_DEBOUNCE_MAX_MS);
            self.timers.set(user, at);
        }
    }

    fn tell(device: DeviceId, gateway: u16, user: UserId, p: Presence, out: &mut Vec<Effect>) {
        let down = Down::Presence {
            user,
            online: p.online,
            last_seen: p.last_seen,
        };
        out.push(Effect::Rpc {
            to: Host::Gateway(gateway),
            rpc: Rpc::ToDevice { device, down },
        });
    }

    /// The debounce of `user` ran out: publish if the presence still differs.
    fn publish(&mut self, now: Millis, user: UserId, out: &mut Vec<Effect>) {
        self.changing.remove(&user);
        let p = self.presence(user);
        if self.published.get(&user) == Some(&p) {
            // A flap: back where it was before anyone was told.
            out.push(Effect::Probe(Probe::PresenceFlapAbsorbed));
            return;
        }
        self.published.insert(user, p);
        if self.topo.bugs.has(Bug::PresenceBroadcastAll) {
            // Everyone connected hears it, looking or not.
            for (device, (gateway, _, _)) in &self.table.entries {
                if device.user != user {
                    Self::tell(*device, *gateway, user, p, out);
                }
            }
            return;
        }
        let Some(subs) = self.subs.get_mut(&user) else {
            return;
        };
        subs.retain(|_, (_, until)| *until > now);
        for (device, (gateway, _)) in subs.iter() {
            Self::tell(*device, *gateway, user, p, out);
        }
    }

    fn subscribe(
        &mut self,
        now: Millis,
        device: DeviceId,
        gateway: u16,
        user: Option<UserId>,
        out: &mut Vec<Effect>,
    ) {
        if let Some(old) = self.watching.remove(&device) {
            if let Some(subs) = self.subs.get_mut(&old) {
                subs.remove(&device);
                if subs.is_empty() {
                    self.subs.remove(&old);
                }
            }
        }
        let Some(user) = user.filter(|u| self.topo.has_user(*u) && *u != device.user) else {
            return;
        };
        self.watching.insert(device, user);
        self.subs
            .entry(user)
            .or_default()
            .insert(device, (gateway, now + PRESENCE_LEASE_MS));
        // Answer with what was published: a change still in its debounce is not news yet.
        let p = match self.published.get(&user) {
            Some(p) => *p,
            None => {
                let p = self.presence(user);
                self.published.insert(user, p);
                p
            }
        };
        Self::tell(device, gateway, user, p, out);
    }
}

impl Machine for Session {
    fn handle(&mut self, now: Millis, input: Input, out: &mut Vec<Effect>) {
        let (from, rpc) = match input {
            Input::Rpc { from, rpc } => (from, rpc),
            Input::Timeout => {
                while let Some(user) = self.timers.pop_due(now) {
                    self.publish(now, user, out);
                }
                return;
            }
            // Only gateways hold connections and only phones have users: the hosts never hand
            // these to this machine.
            input => crate::not_for_this_host("the session service", &input),
        };
        match (from, rpc) {
            (Host::Gateway(g), Rpc::Register { device, epoch, at }) => {
                let current = self
                    .table
                    .entries
                    .get(&device)
                    .is_none_or(|&(_, e, _)| e <= epoch)
                    || self.topo.bugs.has(Bug::SessionRegisterLastWins);
                if current && self.entry(device) != Some((g, epoch)) {
                    self.set_entry(now, device, Some((g, epoch, at)), out);
                }
                // An answer of "current" must be true of the table it came from.
                assert!(
                    !current || self.entry(device) == Some((g, epoch)),
                    "session: {device} answered current at epoch {epoch} but not registered so"
                );
                if !current {
                    out.push(Effect::Probe(Probe::SessionStaleRegisterRefused));
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
                    || self.entry(device).is_some_and(|(_, e)| e == epoch) =>
            {
                self.set_entry(now, device, None, out);
                assert!(
                    self.entry(device).is_none(),
                    "session: {device} not cleared"
                );
            }
            // A late disconnect of an older connection: the newer entry stands.
            (Host::Gateway(_), Rpc::Unregister { .. }) => {
                out.push(Effect::Probe(Probe::SessionLateUnregisterIgnored));
            }
            (Host::Gateway(g), Rpc::Alive { devices, at }) => {
                let live: BTreeSet<(DeviceId, u64)> = devices.into_iter().collect();
                // Only what the gateway asked for before it made the list: a `Register` sent
                // after it can arrive first (its link was replaced meanwhile), and clearing
                // that entry left a connected phone unreachable for good (latency-spike seed
                // 5129 on turmoil: a companion never shown its own texts again).
                let (stale, newer): (Vec<_>, Vec<_>) = self
                    .table
                    .entries
                    .iter()
                    .filter(|(d, (gw, e, _))| *gw == g && !live.contains(&(**d, *e)))
                    .partition(|(_, (_, _, asked))| *asked < at);
                let stale: Vec<DeviceId> = stale.into_iter().map(|(d, _)| *d).collect();
                if !newer.is_empty() {
                    out.push(Effect::Probe(Probe::SessionAliveOlderThanRegister));
                }
                if !stale.is_empty() {
                    out.push(Effect::Probe(Probe::SessionStaleEntriesCleared));
                }
                for device in stale {
                    self.set_entry(now, device, None, out);
                }
            }
            (Host::Gateway(g), Rpc::Subscribe { device, user }) => {
                self.subscribe(now, device, g, user, out);
            }
            (Host::Shard(_), Rpc::Lookup { asks }) => {
                let answers = asks
                    .into_iter()
                    .map(|(req, user)| {
                        let at = self
                            .topo
                            .devices_of(user)
                            .into_iter()
                            .filter_map(|d| self.entry(d).map(|(g, _)| (d, g)))
                            .collect();
                        (req, at)
                    })
                    .collect();
                out.push(Effect::Rpc {
                    to: from,
                    rpc: Rpc::Located { answers },
                });
            }
            (from, rpc) => {
                unreachable!("no server sends the session service this: {rpc:?} from {from}")
            }
        }
    }

    fn poll_timeout(&self) -> Option<Millis> {
        self.timers.next()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Down, UserId};

    fn send(s: &mut Session, from: Host, rpc: Rpc) -> Vec<Effect> {
        let mut out = Vec::new();
        s.handle(0, Input::Rpc { from, rpc }, &mut out);
        out
    }

    // The classic bug: a phone moves from gateway 1 to gateway 2, then gateway 1 notices the
    // old connection died and unregisters. That must not erase the new entry.
    #[test]
    fn late_unregister_of_an_older_epoch_keeps_the_newer_connection() {
        let mut s = Session::new(topo(), SessionTable::new());
        let d = DeviceId::primary(UserId(1));
        send(
            &mut s,
            Host::Gateway(0),
            Rpc::Register {
                device: d,
                epoch: 1,
                at: 0,
            },
        );
        send(
            &mut s,
            Host::Gateway(1),
            Rpc::Register {
                device: d,
                epoch: 2,
                at: 0,
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
                at: 0,
            },
        );
        assert!(matches!(
            out[..],
            [
                Effect::Probe(Probe::SessionStaleRegisterRefused),
                Effect::Rpc {
                    rpc: Rpc::Registered { current: false, .. },
                    ..
                }
            ]
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

    fn presence_pushes(out: &[Effect]) -> Vec<bool> {
        out.iter()
            .filter_map(|e| match e {
                Effect::Rpc {
                    rpc:
                        Rpc::ToDevice {
                            down: Down::Presence { online, .. },
                            ..
                        },
                    ..
                } => Some(*online),
                _ => None,
            })
            .collect()
    }

    fn topo() -> Deployment {
        Deployment {
            users: 2,
            gateways: 2,
            shards: 1,
            ..Deployment::default()
        }
    }

    /// `send` at `now`, then any debounce that has run out.
    fn at(s: &mut Session, now: Millis, from: Host, rpc: Rpc) -> Vec<Effect> {
        let mut out = Vec::new();
        s.handle(now, Input::Rpc { from, rpc }, &mut out);
        s.handle(now, Input::Timeout, &mut out);
        out
    }

    // A gateway's periodic list of its devices clears an entry whose `Unregister` was lost,
    // and the user's last seen is that moment.
    #[test]
    fn an_entry_its_gateway_no_longer_lists_is_cleared() {
        let mut s = Session::new(topo(), SessionTable::new());
        let d = DeviceId::primary(UserId(1));
        at(
            &mut s,
            0,
            Host::Gateway(0),
            Rpc::Register {
                device: d,
                epoch: 1,
                at: 0,
            },
        );
        at(
            &mut s,
            10,
            Host::Gateway(1),
            Rpc::Alive {
                devices: vec![],
                at: 10,
            },
        );
        assert_eq!(
            s.entry(d),
            Some((0, 1)),
            "another gateway's list says nothing of it"
        );
        at(
            &mut s,
            20,
            Host::Gateway(0),
            Rpc::Alive {
                devices: vec![(d, 1)],
                at: 20,
            },
        );
        assert_eq!(s.entry(d), Some((0, 1)));
        let out = at(
            &mut s,
            30,
            Host::Gateway(0),
            Rpc::Alive {
                devices: vec![],
                at: 30,
            },
        );
        assert_eq!(s.entry(d), None);
        assert!(
            out.contains(&Effect::PersistSession(SessionChange::LastSeen {
                user: d.user,
                at: 30
            }))
        );
    }

    // A gateway lists its devices at 10 and registers a new connection at 12; over a replaced
    // link the list arrives second. It was made before the connection existed, so it must not
    // clear it (latency-spike seed 5129 on turmoil left a connected companion unreachable for
    // good this way); a list made after the registration still clears it.
    #[test]
    fn a_list_made_before_a_registration_does_not_clear_it() {
        let mut s = Session::new(topo(), SessionTable::new());
        let d = DeviceId::primary(UserId(1));
        at(
            &mut s,
            15,
            Host::Gateway(0),
            Rpc::Register {
                device: d,
                epoch: 5,
                at: 12,
            },
        );
        let out = at(
            &mut s,
            16,
            Host::Gateway(0),
            Rpc::Alive {
                devices: vec![],
                at: 10,
            },
        );
        assert_eq!(s.entry(d), Some((0, 5)), "an older list cleared it");
        assert!(out.contains(&Effect::Probe(Probe::SessionAliveOlderThanRegister)));
        // Made at the same moment as the registration: the connection may have come just
        // after the list, so it stands too.
        at(
            &mut s,
            17,
            Host::Gateway(0),
            Rpc::Alive {
                devices: vec![],
                at: 12,
            },
        );
        assert_eq!(s.entry(d), Some((0, 5)));
        at(
            &mut s,
            20,
            Host::Gateway(0),
            Rpc::Alive {
                devices: vec![],
                at: 13,
            },
        );
        assert_eq!(s.entry(d), None, "a later list clears it");
    }

    // Every change restarts the debounce: flaps that straddle the first deadline publish
    // nothing, and a settled change is published once.
    #[test]
    fn flaps_publish_nothing_and_a_settled_change_publishes_once() {
        let mut s = Session::new(topo(), SessionTable::new());
        let (watcher, d) = (DeviceId::primary(UserId(0)), DeviceId::primary(UserId(1)));
        at(
            &mut s,
            0,
            Host::Gateway(0),
            Rpc::Register {
                device: d,
                epoch: 1,
                at: 0,
            },
        );
        let out = at(
            &mut s,
            0,
            Host::Gateway(1),
            Rpc::Subscribe {
                device: watcher,
                user: Some(d.user),
            },
        );
        assert_eq!(presence_pushes(&out), vec![true]);
        let mut seen = Vec::new();
        let mut epoch = 1;
        for (t, online) in [(1_000, false), (1_100, true), (2_990, false), (3_050, true)] {
            let rpc = if online {
                epoch += 1;
                Rpc::Register {
                    device: d,
                    epoch,
                    at: 0,
                }
            } else {
                Rpc::Unregister { device: d, epoch }
            };
            seen.extend(presence_pushes(&at(&mut s, t, Host::Gateway(0), rpc)));
        }
        for t in (3_100..12_000).step_by(100) {
            let mut out = Vec::new();
            s.handle(t, Input::Timeout, &mut out);
            seen.extend(presence_pushes(&out));
        }
        assert!(seen.is_empty(), "a flap is no news: {seen:?}");
        at(
            &mut s,
            12_000,
            Host::Gateway(0),
            Rpc::Unregister { device: d, epoch },
        );
        for t in (12_100..20_000).step_by(100) {
            let mut out = Vec::new();
            s.handle(t, Input::Timeout, &mut out);
            seen.extend(presence_pushes(&out));
        }
        assert_eq!(seen, vec![false]);
    }

    // A subscription not renewed lapses at its lease's end, to the millisecond: a change
    // published then reaches nobody (two survivors of the mutation sample: a lease of
    // now x 20 s that never lapsed, and one that lapsed a millisecond late).
    #[test]
    fn a_subscription_not_renewed_lapses_at_its_leases_end() {
        let lapse = |unregister_at: Millis| {
            let mut s = Session::new(topo(), SessionTable::new());
            let (watcher, d) = (DeviceId::primary(UserId(0)), DeviceId::primary(UserId(1)));
            let register = Rpc::Register {
                device: d,
                epoch: 1,
                at: 0,
            };
            at(&mut s, 0, Host::Gateway(0), register);
            let subscribe = Rpc::Subscribe {
                device: watcher,
                user: Some(d.user),
            };
            at(&mut s, 1_000, Host::Gateway(1), subscribe);
            // The registration's own debounce runs out (online is published).
            for t in (1_100..=3_000).step_by(100) {
                s.handle(t, Input::Timeout, &mut Vec::new());
            }
            let unregister = Rpc::Unregister {
                device: d,
                epoch: 1,
            };
            let mut seen =
                presence_pushes(&at(&mut s, unregister_at, Host::Gateway(0), unregister));
            for t in (unregister_at + 100..unregister_at + 10_000).step_by(100) {
                let mut out = Vec::new();
                s.handle(t, Input::Timeout, &mut out);
                seen.extend(presence_pushes(&out));
            }
            seen
        };
        let end = 1_000 + PRESENCE_LEASE_MS;
        assert_eq!(
            lapse(end - PRESENCE_DEBOUNCE_MS - 100),
            vec![false],
            "inside the lease"
        );
        assert!(
            lapse(end - PRESENCE_DEBOUNCE_MS).is_empty(),
            "published at its end"
        );
        assert!(lapse(end + 5_000).is_empty(), "long after");
    }
}
