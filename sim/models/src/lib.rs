//! # chatsim-models: exhaustive model checking of the backend with stateright
//!
//! Random seeds find bugs; an exhaustive search of a small world shows their absence there and
//! finds the *shortest* story when one exists. This crate wraps the very `chatsim-system`
//! machines the simulators drive ([`world`]: an adapter, not a second implementation) and
//! explores every order of deliveries, losses, duplicates, timer firings, user actions and
//! crashes that a small configuration allows ([`models`]).
//!
//! Properties carry the names `chatsim run` prints:
//! - `no_loss` (always): every message with sent ✓ is, for each recipient device, on that
//!   phone (shown, or held back behind a gap: the phone's ack promises it has it), or parked
//!   in its inbox in storage's durable state, or owed by a durable fan-out job. This
//!   is the design's durability argument as a state invariant: a message outside all three is
//!   one crash or one lost frame away from being gone.
//! - `exactly_once` (always): no device shows a message id, or a text, twice.
//! - `conversation_order` (always): each device shows a conversation in increasing sequence
//!   numbers, and one sequence number never names two messages.
//! - `receipts` (always): a sender's ✓✓ on a text means every recipient user shows it on a
//!   device, and a read tick that one of their devices read it; once the world has settled,
//!   every text shown to all its recipients carries ✓✓ at its sender (a receipt lost on the
//!   way was sent again).
//! - `liveness` (always, judged once the world has settled: nothing can arrive and no timer is
//!   left before the horizon): every text got ✓ and is shown on every recipient device. The
//!   horizon leaves time after the last fault for retries to finish, so a settled world that
//!   still owes a message is a real hole, not an early cut-off. This stands in for an
//!   `eventually` property: stateright judges those only at terminal states and misses paths
//!   that end in a cycle, and every path here is cut by the horizon, which it does not treat as
//!   terminal.
//! - `authz` (always): no device is acked a message under another device's name, gets a
//!   message of a direct chat it is not in (or one posted there from outside), is told a
//!   group's length or fetches its log while not a member, or is shown a receipt from outside a
//!   chat. Attacked by the `adversary` model's compromised phone.
//! - `sometimes` properties show that the search reaches the interesting states, so a pass is
//!   never vacuous: a message shown or read, every message delivered, a drain completed, a
//!   stale connection unregistered, a crash, a takeover (per model).

pub mod bounds;
pub mod models;
pub mod world;

use chatsim_system::proto::{ConvId, DeviceId, Host, MsgId, ReceiptKind, Rpc, Seq, UserId};
use chatsim_system::Deployment;
use stateright::{Model, Property};
use std::collections::{BTreeMap, BTreeSet};
use world::{Budget, Lane, Limits, Scripts, Step, World};

/// One model: a small deployment, what its users do, and the faults and bounds of the search.
#[derive(Clone, Debug)]
pub struct ChatModel {
    /// Its name (`chatsim check --model NAME`).
    pub name: &'static str,
    /// The deployment, keys included.
    pub topo: Deployment,
    /// What each user does, in order.
    pub scripts: Scripts,
    /// Faults the world may inject.
    pub budget: Budget,
    /// Bounds of the search.
    pub limits: Limits,
    /// The `sometimes` properties this model must reach (names from [`SOMETIMES`]).
    pub reaches: Vec<&'static str>,
}

/// The warm-up before the search takes a few dozen steps; this bounds it.
const WARM_UP_STEPS_MAX: usize = 10_000;

/// Names of the invariants, as `chatsim run` prints them.
pub const ALWAYS: [&str; 6] = [
    "no_loss",
    "exactly_once",
    "conversation_order",
    "receipts",
    "liveness",
    "authz",
];
/// Names of the reachability properties.
pub const SOMETIMES: [&str; 8] = [
    "an outsider is refused",
    "a message is shown",
    "a message is read",
    "a stale connection is unregistered",
    "every message is delivered",
    "a drain completes",
    "a server crashes",
    "a shard takes over",
];

impl ChatModel {
    /// The devices owed message `id` (sequence number `seq` in `conv`).
    fn recipients(&self, w: &World, id: MsgId, conv: ConvId, seq: Seq) -> Vec<DeviceId> {
        if conv.is_group() {
            (0..self.topo.users)
                .map(UserId)
                .filter(|u| w.durable.storage.member_at(conv, seq, *u))
                .flat_map(|u| self.topo.devices_of(u))
                .filter(|d| *d != id.device)
                .collect()
        } else {
            self.topo.recipients(conv, id.device)
        }
    }

    fn shown(w: &World, d: DeviceId, id: MsgId) -> bool {
        w.facts
            .shown
            .get(&d)
            .is_some_and(|v| v.iter().any(|(_, _, i, _)| *i == id))
    }

    /// The first acked text that is neither shown nor recoverable for some recipient.
    pub fn lost(&self, w: &World) -> Option<(MsgId, DeviceId)> {
        let inbox: BTreeSet<(DeviceId, ConvId, Seq)> =
            w.durable.storage.inbox_list().into_iter().collect();
        for (id, (conv, seq)) in &w.facts.acked {
            if !w.facts.texts.contains_key(id) {
                continue;
            }
            for r in self.recipients(w, *id, *conv, *seq) {
                let safe = Self::shown(w, r, *id)
                    || w.holds(r, *conv, *id)
                    || inbox.contains(&(r, *conv, *seq))
                    || w.durable.storage.fanout_owes(*conv, *seq, r);
                if !safe {
                    return Some((*id, r));
                }
            }
        }
        None
    }

    /// A device that showed one message (by id or by text) twice.
    pub fn shown_twice(w: &World) -> Option<DeviceId> {
        w.facts.shown.iter().find_map(|(d, v)| {
            let ids: BTreeSet<MsgId> = v.iter().map(|x| x.2).collect();
            let texts: BTreeSet<&Vec<u8>> = v.iter().map(|x| &x.3).collect();
            (ids.len() < v.len() || texts.len() < v.len()).then_some(*d)
        })
    }

    /// A device that showed a conversation out of order, or a sequence number that names two
    /// messages (on screens or in sent ✓).
    pub fn out_of_order(w: &World) -> Option<String> {
        let mut named: BTreeMap<(ConvId, Seq), MsgId> = BTreeMap::new();
        let all = w
            .facts
            .shown
            .values()
            .flatten()
            .map(|(c, s, i, _)| (*c, *s, *i))
            .chain(w.facts.acked.iter().map(|(i, (c, s))| (*c, *s, *i)));
        for (conv, seq, id) in all {
            if let Some(other) = named.insert((conv, seq), id) {
                if other != id {
                    return Some(format!("{conv:?} seq {seq} names {other} and {id}"));
                }
            }
        }
        for (d, v) in &w.facts.shown {
            let mut last: BTreeMap<ConvId, Seq> = BTreeMap::new();
            for (conv, seq, _, _) in v {
                if last.insert(*conv, *seq).is_some_and(|prev| prev >= *seq) {
                    return Some(format!("{d} showed {conv:?} out of order at seq {seq}"));
                }
            }
        }
        None
    }

    /// A text whose sender shows a tick some recipient user has not earned (no device of theirs
    /// shows it, or, for a read tick, read it); once settled, a text shown to every recipient
    /// whose sender still lacks ✓✓.
    pub fn bad_tick(&self, w: &World) -> Option<String> {
        for (id, tick) in &w.facts.ticks {
            let Some((conv, seq)) = w.facts.acked.get(id) else {
                return Some(format!("{id} shows a tick before its ✓"));
            };
            let recipients = self.recipients(w, *id, *conv, *seq);
            // The sender's own other devices get a copy, but ticks speak of the other users.
            let users: BTreeSet<UserId> = recipients
                .iter()
                .map(|d| d.user)
                .filter(|u| *u != id.device.user)
                .collect();
            for u in users {
                let devices = || recipients.iter().filter(move |d| d.user == u);
                if !devices().any(|d| Self::shown(w, *d, *id)) {
                    let tick = match tick {
                        ReceiptKind::Delivered => "✓✓ (delivered)",
                        ReceiptKind::Read => "a read tick",
                    };
                    return Some(format!(
                        "{id} has {tick} on its sender, but {u} shows it nowhere"
                    ));
                }
                let read = devices().any(|d| {
                    w.facts
                        .read
                        .get(&(*d, *conv))
                        .is_some_and(|upto| upto >= seq)
                        && Self::shown(w, *d, *id)
                });
                if *tick == ReceiptKind::Read && !read {
                    return Some(format!(
                        "{id} shows read on its sender, but {u} has not read it"
                    ));
                }
            }
        }
        if !w.settled(self.limits.horizon) {
            return None;
        }
        w.facts
            .acked
            .iter()
            .filter(|(id, _)| w.facts.texts.contains_key(id) && !w.facts.ticks.contains_key(id))
            .find(|(id, (conv, seq))| {
                let r = self.recipients(w, **id, *conv, *seq);
                !r.is_empty() && r.iter().all(|d| Self::shown(w, *d, **id))
            })
            .map(|(id, _)| {
                format!("settled, and {id} is shown to every recipient but has no ✓✓ on its sender")
            })
    }

    /// Once settled: a text without ✓, or with ✓ but not shown on a recipient device.
    pub fn undelivered(&self, w: &World) -> Option<(MsgId, Option<DeviceId>)> {
        if !w.settled(self.limits.horizon) {
            return None;
        }
        self.owed(w)
    }

    fn owed(&self, w: &World) -> Option<(MsgId, Option<DeviceId>)> {
        // A text refused for good owes nothing: its user was told it failed (as the judge).
        for id in w
            .facts
            .texts
            .keys()
            .filter(|id| !w.facts.refused.contains(id))
        {
            let Some((conv, seq)) = w.facts.acked.get(id) else {
                return Some((*id, None));
            };
            for r in self.recipients(w, *id, *conv, *seq) {
                if !Self::shown(w, r, *id) {
                    return Some((*id, Some(r)));
                }
            }
        }
        None
    }

    fn script_done(&self, w: &World) -> bool {
        let sends = self
            .scripts
            .values()
            .flatten()
            .filter(|c| c.sends())
            .count();
        w.facts.texts.len() + w.facts.changes.len() >= sends
    }
}

impl Model for ChatModel {
    type State = World;
    type Action = Step;

    fn init_states(&self) -> Vec<World> {
        let mut w = World::new(&self.topo, self.budget, self.limits.unordered);
        w.warm_up(&self.topo, WARM_UP_STEPS_MAX);
        vec![w]
    }

    fn actions(&self, w: &World, actions: &mut Vec<Step>) {
        w.steps(&self.limits, &self.scripts, actions);
    }

    fn next_state(&self, w: &World, step: Step) -> Option<World> {
        let mut next = w.clone();
        next.apply(&step, &self.topo, &self.scripts);
        Some(next)
    }

    fn format_action(&self, step: &Step) -> String {
        story_line(self, step)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        let mut p = vec![
            Property::always("no_loss", |m: &ChatModel, w: &World| m.lost(w).is_none()),
            Property::always("exactly_once", |_: &ChatModel, w: &World| {
                ChatModel::shown_twice(w).is_none()
            }),
            Property::always("conversation_order", |_: &ChatModel, w: &World| {
                ChatModel::out_of_order(w).is_none()
            }),
            Property::always("receipts", |m: &ChatModel, w: &World| {
                m.bad_tick(w).is_none()
            }),
            Property::always("liveness", |m: &ChatModel, w: &World| {
                m.undelivered(w).is_none()
            }),
            Property::always("authz", |_: &ChatModel, w: &World| w.facts.breach.is_none()),
        ];
        for name in &self.reaches {
            let condition: fn(&ChatModel, &World) -> bool = match *name {
                "a message is shown" => |_, w| w.facts.shown.values().any(|v| !v.is_empty()),
                "a message is read" => |_, w| !w.facts.read.is_empty(),
                "a stale connection is unregistered" => |_, w| w.facts.unregisters > 0,
                "every message is delivered" => |m, w| m.script_done(w) && m.owed(w).is_none(),
                // Beyond the warm-up's: one per phone.
                "a drain completes" => |m, w| {
                    u32::from(w.facts.drains) > m.topo.users * u32::from(m.topo.devices_per_user)
                },
                "a server crashes" => |_, w| w.facts.crashes > 0,
                "an outsider is refused" => |_, w| w.facts.outsiders_refused > 0,
                "a shard takes over" => {
                    |m, w| (0..m.topo.shards).any(|s| w.lease_owner(s).is_some_and(|o| o != s))
                }
                _ => continue,
            };
            p.push(Property::sometimes(name, condition));
        }
        p
    }
}

/// One step taken from state `w`, as a line of a story: who sent what to whom, what crashed.
pub fn describe(m: &ChatModel, w: &World, step: &Step) -> String {
    let frame = |lane: &Lane| {
        w.head(lane)
            .map(|i| short(&format!("{i:?}")))
            .unwrap_or_default()
    };
    match step {
        Step::Arrive(l @ Lane::Conn { to, .. }) => format!("{to} receives {}", frame(l)),
        Step::Arrive(l @ Lane::Link { from, to }) => {
            format!("{from} -> {to}: {} arrives", frame(l))
        }
        Step::Lose(l @ Lane::Link { from, to }) => format!("{from} -> {to}: {} is lost", frame(l)),
        Step::Repeat(l @ Lane::Link { from, to }) => {
            format!("{from} -> {to}: {} arrives twice", frame(l))
        }
        Step::Tick => format!(
            "time passes to the next timer ({} ms)",
            w.next_deadline().unwrap_or(w.now)
        ),
        Step::User(d) => match m.scripts.get(d).and_then(|s| s.get(w.script_at(*d))) {
            Some(c) => format!("{d}: the user {}", action_words(&c.action)),
            None => format!("{d}: the user is done"),
        },
        other => story_line(m, other),
    }
}

/// Whether `step`, taken from `w`, is background traffic a story folds away: the clock
/// moving to the next timer, a heartbeat, a shard's lease renewal and its answer, a shard
/// announcing its own slot, a gateway's alive report. A takeover (a lease asked for a slot,
/// a shard announcing another's) is never routine.
pub fn routine(w: &World, step: &Step) -> bool {
    use chatsim_system::proto::{Down, Up};
    use chatsim_system::Input;
    let Step::Arrive(lane) = step else {
        return matches!(step, Step::Tick);
    };
    match w.head(lane) {
        Some(Input::FromConn { up: Up::Ping, .. } | Input::Down(Down::Pong)) => true,
        Some(Input::Rpc { rpc, .. }) => match rpc {
            Rpc::Lease { acquire, .. } => acquire.is_empty(),
            // A shard announcing a slot not its own took it over: part of the story.
            Rpc::Owner { slot, .. } => {
                !matches!(lane, Lane::Link { from: Host::Shard(s), .. } if s != slot)
            }
            Rpc::LeaseTable { .. } | Rpc::Alive { .. } => true,
            _ => false,
        },
        _ => false,
    }
}

/// What a user does, in words.
fn action_words(a: &chatsim_system::Action) -> String {
    use chatsim_system::Action as A;
    match a {
        A::SendDirect { to, body } => {
            format!("sends {:?} to {to}", String::from_utf8_lossy(body))
        }
        A::SendGroup { group, body } => {
            format!("posts {:?} to group {group}", String::from_utf8_lossy(body))
        }
        A::CreateGroup { group, members } => format!("creates group {group} with {members:?}"),
        A::GoOffline => "turns on airplane mode".to_string(),
        A::GoOnline => "turns airplane mode off".to_string(),
        A::OpenChat { conv } => format!("opens the chat ({conv:?})"),
        other => format!("{other:?}"),
    }
}

/// One step as a line of a story, without the state it was taken from.
pub fn story_line(m: &ChatModel, step: &Step) -> String {
    match step {
        Step::Deliver(key) => format!("{} arrives", short(key)),
        Step::Drop(key) => format!("{} is lost", short(key)),
        Step::Dup(key) => format!("{} arrives, and a copy is still on its way", short(key)),
        Step::Arrive(Lane::Conn { to, conn }) => {
            format!("{to} takes the next frame on connection {}", conn.0)
        }
        Step::Arrive(Lane::Link { from, to }) => format!("{from} -> {to}: the next frame arrives"),
        Step::Lose(Lane::Link { from, to }) => format!("{from} -> {to}: the next frame is lost"),
        Step::Repeat(Lane::Link { from, to }) => {
            format!("{from} -> {to}: the next frame arrives twice")
        }
        Step::Lose(l) | Step::Repeat(l) => format!("{l:?}: the next frame is lost or repeated"),
        Step::Tick => "time passes to the next timer".to_string(),
        Step::User(d) => {
            let what = m
                .scripts
                .get(d)
                .map(|s| format!("{:?}", s.iter().map(|c| &c.action).collect::<Vec<_>>()))
                .unwrap_or_default();
            format!("{d} acts (script: {})", clip(&what, 80))
        }
        Step::Crash(h) => format!("{h} crashes and restarts from what it made durable"),
        Step::CutConn(d) => format!("the network cuts {d}'s connection"),
        Step::HalfOpen(d) => format!(
            "{d}'s network changes: the phone sees its connection die, its gateway does not (half-open until its idle timeout)"
        ),
        Step::Partition(h) => format!("{h} is partitioned from everyone"),
        Step::Heal => "the partition heals".to_string(),
    }
}

/// A frame's rendering cut to its kind and the message it concerns: "Append u0.d0#1 seq 2".
fn short(rendering: &str) -> String {
    // Drop the route part of an unordered-network key ("a -> b: ...").
    let body = rendering.split_once(": ").map_or(rendering, |(r, b)| {
        if r.contains(" -> ") {
            b
        } else {
            rendering
        }
    });
    let body = body.strip_prefix("Rpc { from: ").map_or(body, |rest| {
        rest.split_once("rpc: ").map_or(rest, |(_, r)| r)
    });
    let body = body
        .strip_prefix("FromConn { conn: ")
        .and_then(|r| r.split_once("up: ").map(|(_, u)| u))
        .or_else(|| body.strip_prefix("Down("))
        .unwrap_or(body);
    let kind: String = body.chars().take_while(|c| c.is_alphanumeric()).collect();
    let mut words = vec![kind];
    // The first message id and sequence number in it, if any.
    if let Some(i) = body.find("MsgId { device: DeviceId { user: UserId(") {
        let rest = &body[i + 40..];
        let user: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let n = rest
            .split_once("n: ")
            .map(|(_, r)| {
                r.chars()
                    .take_while(char::is_ascii_digit)
                    .collect::<String>()
            })
            .unwrap_or_default();
        words.push(format!("u{user}#{n}"));
    }
    if let Some(i) = body.find("seq: ") {
        let seq: String = body[i + 5..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        words.push(format!("seq {seq}"));
    }
    words.join(" ")
}

fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n).collect::<String>())
    }
}

/// The violated property's detail at the end of a counterexample, in words.
pub fn explain(m: &ChatModel, property: &str, w: &World) -> String {
    match property {
        "no_loss" => m.lost(w).map_or_else(String::new, |(id, d)| {
            format!("{id} has sent ✓ but is neither on {d}'s screen nor in its inbox in storage")
        }),
        "exactly_once" => ChatModel::shown_twice(w)
            .map_or_else(String::new, |d| format!("{d} shows a message twice")),
        "conversation_order" => ChatModel::out_of_order(w).unwrap_or_default(),
        "receipts" => m.bad_tick(w).unwrap_or_default(),
        "liveness" => m
            .undelivered(w)
            .map_or_else(String::new, |(id, d)| match d {
                Some(d) => format!("settled, and {id} was never shown on {d}"),
                None => format!("settled, and {id} never got sent ✓"),
            }),
        "authz" => w.facts.breach.clone().unwrap_or_default(),
        _ => String::new(),
    }
}

/// A crashable server list, for model configs.
pub fn servers(topo: &Deployment) -> Vec<Host> {
    let mut v: Vec<Host> = (0..topo.gateways).map(Host::Gateway).collect();
    v.extend([Host::Session, Host::Storage(0)]);
    v.extend((0..topo.shards).map(Host::Shard));
    v
}
