//! `presence_converges` and the `presence_load` bound: what a chat shows of its peer (online,
//! or last seen) settles on the truth after the heal, its last seen never goes back, and
//! presence goes only to devices that are looking.
//!
//! The truth comes from the peer's own devices: a user is online while one of their devices
//! has a live connection (`Connected` until `Disconnected`). Servers learn of a disconnect
//! late (a silent phone is noticed only by the gateway's idle timeout), so a shown last seen
//! is judged by where it may fall, not by the exact millisecond.

use crate::bounds::{Weather, FETCH_ROUND_TRIP_MS};
use crate::checkers::{Bounds, Verdict, Violation};
use crate::history::{Event, History, Looking, View};
use crate::receipts::VIEW_SLACK_MS;
use chatsim_system::limits::{
    GATEWAY_IDLE_TIMEOUT_MS, PRESENCE_DEBOUNCE_MS, PRESENCE_RENEW_MS, PUSH_WAKE_MS,
};
use chatsim_system::proto::{ConvId, DeviceId, Millis, UserId};
use chatsim_system::Observation;
use std::collections::{BTreeMap, BTreeSet};

/// Name of the presence invariant.
pub const PRESENCE_CONVERGES: &str = "presence_converges";
/// Name of the presence load bound.
pub const PRESENCE_LOAD: &str = "presence_load";

/// Presence updates to devices not looking may not exceed this many, plus
/// [`PRESENCE_UNWANTED_PER_LOOKING`] of those to devices looking. The correct design sends
/// none on purpose: the few it does are races (a chat closed while an update was on its way).
/// Measured on the presence scenario, seeds 1-20: 0-3 unwanted against 162-217 looking;
/// broadcasting to everyone (`presence-broadcast-all`) sent 292-637.
pub const PRESENCE_UNWANTED_FLOOR: usize = 20;
/// See [`PRESENCE_UNWANTED_FLOOR`]: one unwanted update allowed per this many wanted ones.
pub const PRESENCE_UNWANTED_PER_LOOKING: usize = 4;

/// Per user, how their devices' connections moved: the truth presence is judged against.
#[derive(Default)]
struct Truth {
    connected: BTreeSet<DeviceId>,
    /// When the user last went from offline to online.
    online_since: Millis,
    /// When any device of theirs last connected or disconnected.
    changed: Millis,
}

/// The chat each device has open at the end and since when, from the plan when the history
/// has one: a device that lost track of its open chat reports it consistently wrong.
fn plan_open(h: &History) -> Option<BTreeMap<DeviceId, (ConvId, Millis)>> {
    (!h.views.is_empty()).then(|| Looking::build(h).open_at_end)
}

impl Truth {
    /// What is wrong with showing `seen` (online, last seen) for this user, if anything:
    /// online if one of their devices is connected, else a last seen no earlier than the start
    /// of their last time online.
    fn mismatch(&self, user: UserId, seen: Option<(bool, Millis)>) -> Option<String> {
        let online = !self.connected.is_empty();
        match seen {
            None => Some("nothing".to_string()),
            Some((shown_online, last_seen)) => {
                if shown_online != online {
                    Some(if shown_online {
                        "online".to_string()
                    } else {
                        format!("last seen at {last_seen} ms")
                    })
                } else if !online && last_seen < self.online_since {
                    Some(format!(
                        "last seen at {last_seen} ms, before {user}'s last time online began at {} ms",
                        self.online_since
                    ))
                } else {
                    None
                }
            }
        }
    }

    fn observe(&mut self, device: DeviceId, connected: bool, t: Millis) {
        let was = !self.connected.is_empty();
        if connected {
            self.connected.insert(device);
        } else {
            self.connected.remove(&device);
        }
        if !was && !self.connected.is_empty() {
            self.online_since = t;
        }
        self.changed = t;
    }
}

/// Three promises:
/// - per device and watched user, the last seen shown never goes back;
/// - a device with a direct chat open at the end shows the peer's presence as it is, within
///   `bounds.liveness_ms` of the later of the heal, the chat's opening and the peer's last
///   connect or disconnect: online if one of the peer's devices is connected, else a last
///   seen no earlier than the start of the peer's last time online (a deadline past the end
///   of the run is not judged);
/// - (for the load bound, see [`presence_load`]).
pub fn presence_converges(h: &History, bounds: Bounds) -> Verdict {
    let mut truth: BTreeMap<UserId, Truth> = BTreeMap::new();
    let mut open: BTreeMap<DeviceId, (ConvId, Millis)> = BTreeMap::new();
    // Per (observer, watched): the last presence shown (time, online, last seen) and the
    // highest last seen shown.
    let mut shown: BTreeMap<(DeviceId, UserId), (Millis, bool, Millis)> = BTreeMap::new();
    let mut highest: BTreeMap<(DeviceId, UserId), Millis> = BTreeMap::new();
    let mut violations = Vec::new();
    let mut checked = 0;
    for r in &h.records {
        let Event::Device { device, obs } = &r.event else {
            continue;
        };
        let t = r.t;
        match obs {
            Observation::Connected { .. } | Observation::Disconnected { .. } => {
                let connected = matches!(obs, Observation::Connected { .. });
                truth
                    .entry(device.user)
                    .or_default()
                    .observe(*device, connected, t);
            }
            Observation::Opened { conv } => match conv {
                Some(c) => {
                    open.insert(*device, (*c, t));
                }
                None => {
                    open.remove(device);
                }
            },
            Observation::Presence {
                user,
                online,
                last_seen,
                looking: true,
            } => {
                let key = (*device, *user);
                shown.insert(key, (t, *online, *last_seen));
                if *online {
                    continue;
                }
                checked += 1;
                let top = highest.entry(key).or_default();
                if *last_seen < *top {
                    violations.push(
                        Violation::new(
                            PRESENCE_CONVERGES,
                            t,
                            format!(
                                "{device} showed {user} last seen at {last_seen} ms after showing {} ms: last seen went back",
                                *top
                            ),
                        )
                        .device(*device),
                    );
                } else {
                    *top = *last_seen;
                }
            }
            _ => {}
        }
    }
    let healed = h.healed_at().unwrap_or(0);
    let open = plan_open(h).unwrap_or(open);
    for (device, (conv, opened)) in &open {
        let Some(peer) = conv.direct_peer(device.user) else {
            continue;
        };
        let Some(u) = truth.get(&peer) else {
            continue;
        };
        let due = healed
            .max(*opened)
            .max(u.changed)
            .saturating_add(bounds.liveness_ms);
        if due > h.end {
            continue;
        }
        checked += 1;
        let online = !u.connected.is_empty();
        let seen = shown
            .get(&(*device, peer))
            .filter(|(t, _, _)| *t >= *opened)
            .map(|&(_, on, seen)| (on, seen));
        let wrong = u.mismatch(peer, seen);
        if let Some(wrong) = wrong {
            let state = if online { "online" } else { "offline" };
            violations.push(
                Violation::new(
                    PRESENCE_CONVERGES,
                    due,
                    format!(
                        "{device} has the chat with {peer} open, {peer} is {state}, but at the deadline of {due} ms it showed {wrong}"
                    ),
                )
                .device(*device)
                .conv(*conv),
            );
        }
    }
    if !h.views.is_empty() {
        checked += connections_obey_users(h, &mut violations);
    }
    violations.sort_by_key(|v| v.at);
    Verdict::new(PRESENCE_CONVERGES, violations, checked)
}

/// Presence is only as true as the connections under it: a phone whose user turned its
/// network off, or put the app in the background, holds no connection (the OS would not let
/// it), except for [`PUSH_WAKE_MS`] after a push woke it in the background. Otherwise the
/// user shows online while away, and messages arrive live on a phone nobody looks at (so the
/// push path goes untested). Judged against the plan ([`History::views`]), with
/// [`VIEW_SLACK_MS`] for the phone host to reach an action: a phone's `Connected` while its
/// user had it away, and a connection still open that long after the user went away.
/// Returns how many connections and departures it judged.
fn connections_obey_users(h: &History, violations: &mut Vec<Violation>) -> usize {
    // Per device: the plan's (time, offline, background) after each change.
    let mut plan: BTreeMap<DeviceId, Vec<(Millis, bool, bool)>> = BTreeMap::new();
    for &(t, d, view) in &h.views {
        let all = plan.entry(d).or_default();
        let (_, mut off, mut bg) = all.last().copied().unwrap_or((0, false, false));
        match view {
            View::Offline => off = true,
            View::Online => off = false,
            View::Background => bg = true,
            View::Foreground => bg = false,
            View::Open(_) | View::Close(_) => continue,
        }
        all.push((t, off, bg));
    }
    let away_at = |d: DeviceId, t: Millis| -> (bool, bool) {
        plan.get(&d).map_or((false, false), |all| {
            let i = all.partition_point(|(at, _, _)| *at <= t);
            i.checked_sub(1)
                .map_or((false, false), |i| (all[i].1, all[i].2))
        })
    };
    // Per device: its connects, disconnects and wakes, in time order.
    let mut seen: BTreeMap<DeviceId, Vec<(Millis, &Observation)>> = BTreeMap::new();
    for r in &h.records {
        if let Event::Device { device, obs } = &r.event {
            if matches!(
                obs,
                Observation::Connected { .. }
                    | Observation::Disconnected { .. }
                    | Observation::Woken
            ) {
                seen.entry(*device).or_default().push((r.t, obs));
            }
        }
    }
    let mut checked = 0;
    for (&d, events) in &seen {
        let mut woken: Option<Millis> = None;
        for &(t, obs) in events {
            match obs {
                Observation::Woken => woken = Some(t),
                Observation::Connected { .. } => {
                    checked += 1;
                    // Away now and a moment ago, so an action racing the connect is not it.
                    let (now_off, now_bg) = away_at(d, t);
                    let (was_off, was_bg) = away_at(d, t.saturating_sub(VIEW_SLACK_MS));
                    let excused = woken.is_some_and(|w| t <= w + PUSH_WAKE_MS + VIEW_SLACK_MS);
                    let why = if now_off && was_off {
                        Some("its user had turned its network off")
                    } else if now_bg && was_bg && !excused {
                        Some("its user had put the app in the background, and no push had woken it")
                    } else {
                        None
                    };
                    if let Some(why) = why {
                        violations.push(
                            Violation::new(
                                PRESENCE_CONVERGES,
                                t,
                                format!("{d} connected at {t} ms, but {why}"),
                            )
                            .device(d),
                        );
                    }
                }
                _ => {}
            }
        }
        // Each departure: connected just before it, disconnected within the slack.
        let Some(changes) = plan.get(&d) else {
            continue;
        };
        let mut before = (false, false);
        for &(ta, off, bg) in changes {
            let went = (off && !before.0) || (bg && !before.1 && !before.0);
            before = (off, bg);
            if !went {
                continue;
            }
            let by = ta + VIEW_SLACK_MS;
            if by > h.end {
                continue;
            }
            checked += 1;
            let last = events
                .iter()
                .take_while(|(t, _)| *t <= by)
                .filter(|(_, o)| !matches!(o, Observation::Woken))
                .last();
            if let Some(&(since, Observation::Connected { .. })) = last {
                if since <= ta {
                    let how = if off {
                        "turned its network off"
                    } else {
                        "put the app in the background"
                    };
                    violations.push(
                        Violation::new(
                            PRESENCE_CONVERGES,
                            by,
                            format!(
                                "{d}'s user {how} at {ta} ms, but its connection (up since {since} ms) was still open {VIEW_SLACK_MS} ms later"
                            ),
                        )
                        .device(d),
                    );
                }
            }
        }
    }
    checked
}

/// Name of the presence-latency bound: in calm weather an open chat shows the peer's presence
/// within [`PRESENCE_BOUND_MS`].
pub const PRESENCE_LATENCY: &str = "presence_latency";

/// The presence promise: a change is published [`PRESENCE_DEBOUNCE_MS`] after it happens, a
/// chat's opening is answered at once with the current presence, and the subscription is
/// renewed (and answered again) every [`PRESENCE_RENEW_MS`], which makes good an update lost
/// before the weather calmed. So from the later of the change, the opening and calm weather,
/// the truth is on screen within the larger of the two plus a round trip
/// ([`FETCH_ROUND_TRIP_MS`]: the peer's gateway, the session service, the watcher's gateway).
pub const PRESENCE_BOUND_MS: Millis =
    max(PRESENCE_DEBOUNCE_MS, PRESENCE_RENEW_MS) + FETCH_ROUND_TRIP_MS;

const fn max(a: Millis, b: Millis) -> Millis {
    if a > b {
        a
    } else {
        b
    }
}

/// A device with a direct chat open at the end shows the peer's presence as it is (as in
/// [`presence_converges`]) within [`PRESENCE_BOUND_MS`] (plus the scenario's slow links) of
/// the latest of: the chat's opening, the peer's last connect or disconnect, calm servers, the
/// watcher's connecting, and [`GATEWAY_IDLE_TIMEOUT_MS`] after a device fault of the peer's
/// ended (a connection that went quiet without closing is only noticed by the gateway's idle
/// timeout). `presence_converges` allows the scenario's whole `liveness_ms`; this sees a chat
/// that shows the truth only because a later renewal or event happened to bring it.
pub fn presence_latency(h: &History, fetch_extra_ms: Millis) -> Verdict {
    let bound = PRESENCE_BOUND_MS + fetch_extra_ms;
    let mut weather = Weather::of(h);
    let mut truth: BTreeMap<UserId, Truth> = BTreeMap::new();
    let mut open: BTreeMap<DeviceId, (ConvId, Millis)> = BTreeMap::new();
    // Per (watcher, watched): every presence shown (when, online, last seen), in time order.
    type Shown = Vec<(Millis, bool, Millis)>;
    let mut shown: BTreeMap<(DeviceId, UserId), Shown> = BTreeMap::new();
    for r in &h.records {
        let Some((device, obs)) = weather.feed(r) else {
            continue;
        };
        match obs {
            Observation::Connected { .. } | Observation::Disconnected { .. } => {
                let connected = matches!(obs, Observation::Connected { .. });
                truth
                    .entry(device.user)
                    .or_default()
                    .observe(device, connected, r.t);
            }
            Observation::Opened { conv: Some(c) } => {
                open.insert(device, (*c, r.t));
            }
            Observation::Opened { conv: None } => {
                open.remove(&device);
            }
            Observation::Presence {
                user,
                online,
                last_seen,
                looking: true,
            } => {
                shown
                    .entry((device, *user))
                    .or_default()
                    .push((r.t, *online, *last_seen));
            }
            _ => {}
        }
    }
    let mut violations = Vec::new();
    let mut checked = 0;
    let open = plan_open(h).unwrap_or(open);
    for (&device, &(conv, opened)) in &open {
        let Some(peer) = conv.direct_peer(device.user) else {
            continue;
        };
        let (Some(u), Some(calm), Some(since)) = (
            truth.get(&peer),
            weather.servers_calm(),
            weather.up_since(device),
        ) else {
            continue;
        };
        let Some(peer_calm) = h.devices_of(peer).try_fold(0, |latest: Millis, d| {
            let ended = weather.device_calm(d)?;
            let noticed = if ended == 0 {
                0
            } else {
                ended + GATEWAY_IDLE_TIMEOUT_MS
            };
            Some(latest.max(noticed))
        }) else {
            continue;
        };
        let start = opened.max(u.changed).max(calm).max(since).max(peer_calm);
        let due = start + bound;
        if due > h.end {
            continue;
        }
        checked += 1;
        let seen = shown.get(&(device, peer)).and_then(|all| {
            all.iter()
                .rev()
                .find(|(t, _, _)| *t <= due && *t >= opened)
                .map(|&(_, on, seen)| (on, seen))
        });
        if let Some(wrong) = u.mismatch(peer, seen) {
            let state = if u.connected.is_empty() {
                "offline"
            } else {
                "online"
            };
            violations.push(
                Violation::new(
                    PRESENCE_LATENCY,
                    due,
                    format!(
                        "{device} has the chat with {peer} open, {peer} is {state} and the weather calm since {start} ms, but at {due} ms it showed {wrong}; the promise is {bound} ms (renewal {PRESENCE_RENEW_MS}, above the debounce {PRESENCE_DEBOUNCE_MS}, + round trip {FETCH_ROUND_TRIP_MS} + the scenario's slow links {fetch_extra_ms})"
                    ),
                )
                .device(device)
                .conv(conv),
            );
        }
    }
    Verdict::new(PRESENCE_LATENCY, violations, checked)
}

/// Presence updates that reached devices not looking at the user (no chat with them open)
/// stay within [`PRESENCE_UNWANTED_FLOOR`] plus one per [`PRESENCE_UNWANTED_PER_LOOKING`]
/// wanted ones: presence is the chattiest thing a chat server sends, and broadcasting it to
/// every contact is how it drowns the servers. `checked` counts every update.
pub fn presence_load(h: &History) -> Verdict {
    let (mut looking, mut unwanted) = (0usize, 0usize);
    let mut first_unwanted = None;
    for r in &h.records {
        if let Event::Device {
            device,
            obs: Observation::Presence { looking: l, .. },
        } = &r.event
        {
            if *l {
                looking += 1;
            } else {
                unwanted += 1;
                first_unwanted.get_or_insert((r.t, *device));
            }
        }
    }
    let limit = PRESENCE_UNWANTED_FLOOR + looking / PRESENCE_UNWANTED_PER_LOOKING;
    let mut violations = Vec::new();
    if let Some((t, device)) = first_unwanted.filter(|_| unwanted > limit) {
        violations.push(
            Violation::new(
                PRESENCE_LOAD,
                t,
                format!(
                    "{unwanted} presence updates went to devices not looking (limit {limit}, with {looking} to devices looking); the first to {device}"
                ),
            )
            .device(device),
        );
    }
    Verdict::new(PRESENCE_LOAD, violations, looking + unwanted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Event;
    use chatsim_system::DisconnectReason;

    const BOUNDS: Bounds = Bounds {
        liveness_ms: 1_000,
        ack_p50_ms: 300,
        fetch_extra_ms: 0,
        fetch_max: chatsim_system::limits::GAP_FETCH_SEQS_MAX,
        inbox_page: chatsim_system::limits::INBOX_PAGE_ENTRIES,
    };

    fn dev(u: u32) -> DeviceId {
        DeviceId::primary(UserId(u))
    }

    fn connected(h: &mut History, t: Millis, u: u32) {
        let obs = Observation::Connected {
            gateway: 0,
            epoch: 1,
        };
        h.observe(t, dev(u), obs);
    }

    fn disconnected(h: &mut History, t: Millis, u: u32) {
        let obs = Observation::Disconnected {
            reason: DisconnectReason::Dropped,
        };
        h.observe(t, dev(u), obs);
    }

    fn sees(h: &mut History, t: Millis, on: u32, user: u32, online: bool, last_seen: Millis) {
        let obs = Observation::Presence {
            user: UserId(user),
            online,
            last_seen,
            looking: true,
        };
        h.observe(t, dev(on), obs);
    }

    /// u0 opens the chat with u1 at 100; u1 is online from 10 to 500.
    fn base() -> History {
        let mut h = History::new(2);
        h.end = 5_000;
        connected(&mut h, 0, 0);
        connected(&mut h, 10, 1);
        let conv = Some(ConvId::direct(UserId(0), UserId(1)));
        h.observe(100, dev(0), Observation::Opened { conv });
        sees(&mut h, 110, 0, 1, true, 0);
        disconnected(&mut h, 500, 1);
        h.push(600, Event::Healed);
        h
    }

    #[test]
    fn the_truth_on_time_passes() {
        let mut h = base();
        sees(&mut h, 2_600, 0, 1, false, 520);
        let v = presence_converges(&h, BOUNDS);
        assert!(v.holds, "{:#?}", v.violations);
        assert_eq!(v.checked, 2);
    }

    // Still showing online long after the peer left is caught at the deadline.
    #[test]
    fn a_stale_online_is_caught() {
        let v = presence_converges(&base(), BOUNDS);
        assert_eq!(v.violations.len(), 1, "{:#?}", v.violations);
        assert!(v.violations[0].detail.contains("u1 is offline"));
        assert!(v.violations[0].detail.contains("showed online"));
        assert_eq!(v.violations[0].at, Some(1_600));
    }

    // A last seen from before the peer's last time online is stale; one that goes back is
    // caught as it happens.
    #[test]
    fn an_old_or_backward_last_seen_is_caught() {
        let mut h = base();
        sees(&mut h, 2_600, 0, 1, false, 5);
        let v = presence_converges(&h, BOUNDS);
        assert_eq!(v.violations.len(), 1, "{:#?}", v.violations);
        assert!(v.violations[0]
            .detail
            .contains("before u1's last time online began at 10 ms"));

        let mut h = base();
        sees(&mut h, 2_600, 0, 1, false, 520);
        sees(&mut h, 2_700, 0, 1, false, 510);
        let v = presence_converges(&h, BOUNDS);
        assert_eq!(v.violations.len(), 1, "{:#?}", v.violations);
        assert!(v.violations[0].detail.contains("last seen went back"));
    }

    #[test]
    fn updates_to_devices_not_looking_are_bounded() {
        let mut h = base();
        for t in 0..(PRESENCE_UNWANTED_FLOOR as Millis) {
            let obs = Observation::Presence {
                user: UserId(1),
                online: true,
                last_seen: 0,
                looking: false,
            };
            h.observe(1_000 + t, dev(0), obs);
        }
        // The floor plus one per four wanted (one here): 20 pass.
        assert!(presence_load(&h).holds);
        let obs = Observation::Presence {
            user: UserId(1),
            online: true,
            last_seen: 0,
            looking: false,
        };
        h.observe(2_000, dev(0), obs);
        let v = presence_load(&h);
        assert!(!v.holds);
        assert!(
            v.violations[0].detail.starts_with("21 presence updates"),
            "{:?}",
            v.violations
        );
    }

    #[test]
    fn presence_within_its_promise_passes_and_a_little_late_is_caught() {
        // u1 went offline at 500; u0 has had the chat open since 100.
        let late = |at: Millis| {
            let mut h = base();
            h.end = 20_000;
            sees(&mut h, at, 0, 1, false, 480);
            presence_latency(&h, 0)
        };
        let v = late(500 + PRESENCE_BOUND_MS);
        assert!(v.holds && v.checked == 1, "{:?}", v.violations);
        let v = late(501 + PRESENCE_BOUND_MS);
        assert_eq!(v.violations.len(), 1);
        assert_eq!(v.violations[0].at, Some(500 + PRESENCE_BOUND_MS));
        assert!(v.violations[0].detail.contains("showed online"));
        assert!(v.violations[0].detail.contains("renewal 8000"));
        // A deadline past the end is not judged.
        let mut h = base();
        h.end = 500 + PRESENCE_BOUND_MS - 1;
        assert_eq!(presence_latency(&h, 0).checked, 0);
    }

    #[test]
    fn a_peer_whose_connection_went_quiet_is_judged_from_when_its_gateway_could_notice() {
        use crate::history::Fault;
        let mut h = base();
        h.end = 30_000;
        h.push(400, Event::Fault(Fault::DeviceSilent(dev(1))));
        h.push(450, Event::Fault(Fault::DeviceUnsilent(dev(1))));
        let due = 450 + GATEWAY_IDLE_TIMEOUT_MS + PRESENCE_BOUND_MS;
        sees(&mut h, due, 0, 1, false, 480);
        assert!(presence_latency(&h, 0).holds);
        let mut h = base();
        h.end = 30_000;
        h.push(400, Event::Fault(Fault::DeviceSilent(dev(1))));
        h.push(450, Event::Fault(Fault::DeviceUnsilent(dev(1))));
        sees(&mut h, due + 1, 0, 1, false, 480);
        assert!(!presence_latency(&h, 0).holds);
    }

    #[test]
    fn the_open_chat_comes_from_the_plan_when_there_is_one() {
        use crate::history::View;
        // The device closed the chat at 200 of its own accord (it lost track of which was
        // open) and so stopped watching; the plan says the user kept it open.
        let mut h = base();
        h.end = 20_000;
        h.observe(200, dev(0), Observation::Opened { conv: None });
        assert!(presence_converges(&h, BOUNDS).holds);
        let conv = ConvId::direct(UserId(0), UserId(1));
        h.views = vec![(100, dev(0), View::Open(conv))];
        let v = presence_converges(&h, BOUNDS);
        assert!(!v.holds);
        assert!(v.violations[0].detail.contains("showed online"));
        assert!(!presence_latency(&h, 0).holds);
    }

    #[test]
    fn a_phone_connected_while_its_user_is_away_is_caught_unless_a_push_woke_it() {
        use crate::history::View;
        let judged = |h: &History| {
            let mut v = Vec::new();
            let n = connections_obey_users(h, &mut v);
            (n, v)
        };
        // u1 goes to the background at 1,000 and disconnects at once: the truth.
        let mut h = History::new(2);
        h.end = 30_000;
        connected(&mut h, 10, 1);
        disconnected(&mut h, 1_000, 1);
        h.views = vec![(1_000, dev(1), View::Background)];
        let (n, v) = judged(&h);
        assert!(v.is_empty() && n == 2, "{v:?}");
        // It reconnects at 5,000 with nobody waking it: caught.
        connected(&mut h, 5_000, 1);
        let (_, v) = judged(&h);
        assert_eq!(v.len(), 1);
        assert!(v[0].detail.contains("background, and no push had woken it"));
        // A push at 4,990 excuses it.
        let mut woke = History::new(2);
        woke.end = 30_000;
        connected(&mut woke, 10, 1);
        disconnected(&mut woke, 1_000, 1);
        woke.observe(4_990, dev(1), Observation::Woken);
        connected(&mut woke, 5_000, 1);
        woke.views = h.views.clone();
        assert!(judged(&woke).1.is_empty());
        // Offline: no push excuses a connection, and one left open is caught too.
        let mut off = History::new(2);
        off.end = 30_000;
        connected(&mut off, 10, 1);
        off.views = vec![(1_000, dev(1), View::Offline)];
        let (_, v) = judged(&off);
        assert_eq!(v.len(), 1);
        assert!(v[0].detail.contains("still open"));
    }
}
