//! The interactive run viewer embedded in every run's `index.html`: this module owns the data
//! the page replays (a compact JSON blob built from the run's history and frame log) and the
//! HTML section that carries it with its script and style inline, so the page works from a
//! `file://` URL with no network. The page computes what each phone showed at a moment from
//! the events itself; nothing here precomputes a state per step.
//!
//! The blob holds: the history's events of the kinds the viewer steps through (with the line
//! of `history.jsonl` each came from), fault windows with their hosts, every violation with the
//! moment it happens, and for each message its hops: the phone's own steps from the history
//! (send, ✓, display per device, ✓✓, read) and the server's from the frame log (gateway, shard,
//! persist, ✓, fan-out, live push or inbox drain, acks), each with its time.
//!
//! Cap rule, for large runs: the first [`VIEWER_EVENTS_MAX`] events (in history order) are
//! kept and the rest cut, so the state at every kept step is exact; each message keeps its
//! first [`VIEWER_PHONE_HOPS_MAX`] phone-side hops and its first [`VIEWER_HOPS_MAX`]
//! server-side ones. The page says when either cut something.

use super::sequence::fault_hosts;
use crate::run::RunReport;
use crate::wire::FrameRecord;
use chatsim_judge::{Event, Fault, History};
use chatsim_system::proto::{ConvId, DeviceId, Host, Millis, MsgId, Path, ReceiptKind, Seq};
use chatsim_system::Observation;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Events the viewer keeps at most: the first ones, in history order.
pub const VIEWER_EVENTS_MAX: usize = 20_000;
/// Server-side hops (frames, and the push and drain tied to an inbox display) listed per
/// message at most: the first ones, in time order.
pub const VIEWER_HOPS_MAX: usize = 40;
/// Phone-side hops (from the history: send, ✓, displays, ✓✓, reads) listed per message at
/// most: the first ones, in time order.
pub const VIEWER_PHONE_HOPS_MAX: usize = 200;
/// The hop kinds that come from the history's phone-side steps.
const PHONE_HOPS: [&str; 7] = [
    "send",
    "acked",
    "display",
    "duplicate",
    "delivered",
    "read-ticks",
    "read",
];
/// Violations the viewer lists at most (all of them are in `run.json`).
pub const VIEWER_VIOLATIONS_MAX: usize = 200;

const SCRIPT: &str = include_str!("viewer.js");
const STYLE: &str = include_str!("viewer.css");

/// What the page gets.
#[derive(Debug, Serialize)]
pub struct ViewerData {
    /// When the run ended (ms).
    pub end: Millis,
    /// The cap on events, and how many viewer events the history had before it.
    pub events_max: usize,
    /// Viewer events in the whole history (more than `events.len()` when the cap cut some).
    pub events_total: usize,
    /// Server-side hops per message at most.
    pub hops_max: usize,
    /// Phone-side hops per message at most.
    pub phone_hops_max: usize,
    /// Devices, sorted; events name them by index.
    pub devices: Vec<DeviceInfo>,
    /// Conversations, sorted; events and messages name them by index.
    pub convs: Vec<ConvInfo>,
    /// Messages, in the order events first name them.
    pub messages: Vec<MessageInfo>,
    /// The events the viewer steps through.
    pub events: Vec<ViewerEvent>,
    /// Fault windows, by start time.
    pub faults: Vec<FaultWindow>,
    /// Violations, with their moments.
    pub violations: Vec<ViolationAt>,
    /// Violations the run had in all (more than listed when capped).
    pub violations_total: usize,
    /// Where hops happen (a device, or `from → to`); hops name them by index.
    pub places: Vec<String>,
}

/// A device as the page names it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct DeviceInfo {
    /// `u1.d0`.
    pub name: String,
    /// `u1`.
    pub user: String,
}

/// A conversation as the page names it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ConvInfo {
    /// `c(u1,u13)` or `g2`.
    pub name: String,
    /// The two members of a direct conversation (empty for a group: the page shows no
    /// presence there).
    pub members: Vec<String>,
}

/// One message and its hops.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct MessageInfo {
    /// `u22.d0#16`.
    pub id: String,
    /// Conversation index.
    pub conv: usize,
    /// Device index of the composing device (none when it observed nothing the viewer keeps).
    pub from: Option<usize>,
    /// The text (lossy UTF-8).
    pub text: String,
    /// A membership change, not a text.
    pub change: bool,
    /// Its sequence number, once the history shows one.
    pub seq: Option<Seq>,
    /// Its hops in time order.
    pub hops: Vec<Hop>,
    /// Hops left out by the cap.
    pub hops_cut: usize,
}

/// One step of a message's way. Written as a four-item array (`[t, kind, label, place]`):
/// a big run has tens of thousands of hops, and field names would triple the page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    /// When it happened (a frame's arrival, or the history event's time).
    pub t: Millis,
    /// What step it is; the page words each kind. Phone side: `send`, `acked`, `display`,
    /// `duplicate`, `delivered`, `read-ticks`, `read`. Frames: `gateway`, `shard`, `persist`,
    /// `stored`, `replicate`, `ack-sent`, `ack-phone`, `fanout`, `push`, `push-phone`,
    /// `drain`, `drain-phone`, `fetch`, `device-ack`, `inbox-delete`, `other`; tied by device
    /// and time (see `add_wake_hops`): `push-notify`, `wake`, `woken`, `drain-request`.
    pub kind: &'static str,
    /// The frame's own label, or a detail of the history event (`seq 4`, `via live`).
    pub label: String,
    /// Index into [`ViewerData::places`]: the device, or `from → to` of a frame.
    pub at: usize,
}

impl Serialize for Hop {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.t, self.kind, &self.label, self.at).serialize(s)
    }
}

/// One event the viewer steps through. Fields a kind does not use are left out.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ViewerEvent {
    /// Its line in `history.jsonl` (0-based).
    pub i: usize,
    /// Simulated time.
    pub t: Millis,
    /// Kind: `sent`, `acked`, `displayed`, `duplicate`, `ticks`, `read`, `presence`,
    /// `opened`, `connected`, `disconnected`, `gap`, `woken`, `fault`, `healed`.
    pub k: &'static str,
    /// Device index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub d: Option<usize>,
    /// Message index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub m: Option<usize>,
    /// Conversation index.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub c: Option<usize>,
    /// Sequence number (acked, displayed), `upto` (read), first missing (gap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s: Option<Seq>,
    /// Path of a display (`live`, `inbox`, `fetch`) or a tick (`delivered`, `read`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p: Option<&'static str>,
    /// Presence: whose (`u13`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub u: Option<String>,
    /// Presence: online.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub on: Option<bool>,
    /// Presence: last seen (ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ls: Option<Millis>,
    /// A fault's description.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub l: Option<String>,
}

/// A fault from its start to its end (or the end of the run).
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct FaultWindow {
    /// Start (ms).
    pub from: Millis,
    /// End (ms); equal to `from` for an instant fault (a dropped connection).
    pub to: Millis,
    /// The fault as the history prints it.
    pub label: String,
    /// Hosts it concerns.
    pub hosts: Vec<String>,
    /// Still open when the run ended.
    pub open: bool,
}

/// A violation and the moment it happens.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct ViolationAt {
    /// Which invariant.
    pub check: String,
    /// When: the verdict's own time, else the first event of the message it names, else the
    /// end of the run.
    pub t: Millis,
    /// Where `t` came from: `verdict`, `history` or `end`.
    pub source: &'static str,
    /// The message, device and conversation it names (empty when none).
    pub message: String,
    /// Device.
    pub device: String,
    /// Conversation.
    pub conv: String,
    /// What went wrong.
    pub detail: String,
}

fn path_name(p: Path) -> &'static str {
    match p {
        Path::Live => "live",
        Path::Inbox => "inbox",
        Path::Fetch => "fetch",
    }
}

fn tick_name(k: ReceiptKind) -> &'static str {
    match k {
        ReceiptKind::Delivered => "delivered",
        ReceiptKind::Read => "read",
    }
}

/// The end a start fault waits for; `None` for an end, or an instant fault.
fn end_of(f: &Fault) -> Option<Fault> {
    Some(match f {
        Fault::Kill(h) => Fault::Restart(*h),
        Fault::Clog(h) => Fault::Unclog(*h),
        Fault::LatencySpike(h) => Fault::LatencySpikeEnd(*h),
        Fault::DiskSlow(h) => Fault::DiskSlowEnd(*h),
        Fault::DiskFull(h) => Fault::DiskFullEnd(*h),
        Fault::Partition(a, b) => Fault::PartitionHealed(a.clone(), b.clone()),
        Fault::PartitionOneway(a, b) => Fault::PartitionOnewayHealed(a.clone(), b.clone()),
        Fault::DeviceOffline(d) => Fault::DeviceOnline(*d),
        Fault::DeviceSilent(d) => Fault::DeviceUnsilent(*d),
        Fault::DeviceBlackhole(d) => Fault::DeviceBlackholeEnd(*d),
        _ => return None,
    })
}

fn is_end(f: &Fault) -> bool {
    matches!(
        f,
        Fault::Restart(_)
            | Fault::Unclog(_)
            | Fault::LatencySpikeEnd(_)
            | Fault::DiskSlowEnd(_)
            | Fault::DiskFullEnd(_)
            | Fault::PartitionHealed(..)
            | Fault::PartitionOnewayHealed(..)
            | Fault::DeviceOnline(_)
            | Fault::DeviceUnsilent(_)
            | Fault::DeviceBlackholeEnd(_)
    )
}

/// Fault windows: each start paired with the first matching end after it.
pub fn fault_windows(h: &History) -> Vec<FaultWindow> {
    let mut open: Vec<(Fault, Millis)> = Vec::new();
    let mut out = Vec::new();
    let window = |f: &Fault, from, to, open| FaultWindow {
        from,
        to,
        label: f.to_string(),
        hosts: fault_hosts(f).iter().map(ToString::to_string).collect(),
        open,
    };
    for r in &h.records {
        let Event::Fault(f) = &r.event else { continue };
        if end_of(f).is_some() {
            open.push((f.clone(), r.t));
        } else if is_end(f) {
            // An end with no start before it (a plan that heals what it never broke) draws
            // nothing: there is no window to show.
            if let Some(i) = open.iter().position(|(s, _)| end_of(s).as_ref() == Some(f)) {
                let (s, t0) = open.remove(i);
                out.push(window(&s, t0, r.t, false));
            }
        } else {
            out.push(window(f, r.t, r.t, false));
        }
    }
    out.extend(open.iter().map(|(s, t0)| window(s, *t0, h.end, true)));
    out.sort_by(|a, b| (a.from, a.to, &a.label).cmp(&(b.from, b.to, &b.label)));
    out
}

/// What an observation is to the viewer: its kind, and whether it is stepped through at all
/// (connection attempts, receipts behind the ticks and the like are left out: they change
/// nothing a phone shows that another kept event does not).
fn kind_of(obs: &Observation) -> Option<&'static str> {
    Some(match obs {
        Observation::Sent { .. } => "sent",
        Observation::Acked { .. } => "acked",
        Observation::Displayed { .. } => "displayed",
        Observation::DuplicateDropped { .. } => "duplicate",
        Observation::Ticks { .. } => "ticks",
        Observation::Read { .. } => "read",
        Observation::Presence { .. } => "presence",
        Observation::Opened { .. } => "opened",
        Observation::Connected { .. } => "connected",
        Observation::Disconnected { .. } => "disconnected",
        Observation::GapDetected { .. } => "gap",
        Observation::Woken => "woken",
        _ => return None,
    })
}

/// A frame's hop kind, from its label and its ends.
fn frame_kind(f: &FrameRecord) -> &'static str {
    let l = f.label.as_str();
    let to_device = matches!(f.to, Host::Device(_));
    if l.starts_with("Send ") {
        if matches!(f.from, Host::Device(_)) {
            "gateway"
        } else {
            "shard"
        }
    } else if l.starts_with("Append seq") {
        "persist"
    } else if l.starts_with("Appended seq") {
        "stored"
    } else if l.starts_with("Replicate") {
        "replicate"
    } else if l.starts_with("Sent ✓") {
        if to_device {
            "ack-phone"
        } else {
            "ack-sent"
        }
    } else if l.starts_with("FanoutStep") {
        "fanout"
    } else if l.starts_with("Deliver") {
        match (l.contains("(live)"), l.contains("(inbox)"), to_device) {
            (true, _, true) => "push-phone",
            (true, _, false) => "push",
            (_, true, true) => "drain-phone",
            (_, true, false) => "drain",
            _ => "fetch",
        }
    } else if l.starts_with("Ack seq") {
        "device-ack"
    } else if l.starts_with("DeleteInbox") {
        "inbox-delete"
    } else {
        "other"
    }
}

struct Builder<'a> {
    h: &'a History,
    devices: Vec<DeviceId>,
    convs: Vec<ConvId>,
    messages: Vec<MessageInfo>,
    ids: Vec<MsgId>,
    by_id: BTreeMap<MsgId, usize>,
}

impl Builder<'_> {
    fn dev(&self, d: DeviceId) -> Option<usize> {
        self.devices.binary_search(&d).ok()
    }

    fn conv(&self, c: ConvId) -> Option<usize> {
        self.convs.binary_search(&c).ok()
    }

    /// The message's index, adding it on first sight.
    fn msg(&mut self, id: MsgId, conv: ConvId) -> usize {
        if let Some(i) = self.by_id.get(&id) {
            return *i;
        }
        let i = self.messages.len();
        self.messages.push(MessageInfo {
            id: id.to_string(),
            // Every conversation a kept observation names was collected up front, so the
            // fallback is never taken; it keeps a bad index out of the page all the same.
            conv: self.conv(conv).unwrap_or(0),
            from: self.dev(id.device),
            text: String::new(),
            change: false,
            seq: None,
            hops: Vec::new(),
            hops_cut: 0,
        });
        self.ids.push(id);
        self.by_id.insert(id, i);
        i
    }

    fn event(&mut self, i: usize, t: Millis, device: DeviceId, obs: &Observation) -> ViewerEvent {
        let mut e = ViewerEvent {
            i,
            t,
            k: kind_of(obs).unwrap_or("other"),
            d: self.dev(device),
            m: None,
            c: None,
            s: None,
            p: None,
            u: None,
            on: None,
            ls: None,
            l: None,
        };
        match obs {
            Observation::Sent { id, conv, body } => {
                let m = self.msg(*id, *conv);
                if self.messages[m].text.is_empty() {
                    self.messages[m].text = String::from_utf8_lossy(body).into_owned();
                }
                e.m = Some(m);
                e.c = self.conv(*conv);
            }
            Observation::Acked { id, conv, seq } => {
                let m = self.msg(*id, *conv);
                self.messages[m].seq.get_or_insert(*seq);
                (e.m, e.c, e.s) = (Some(m), self.conv(*conv), Some(*seq));
            }
            Observation::Displayed {
                id,
                conv,
                seq,
                path,
                body,
                ..
            } => {
                let m = self.msg(*id, *conv);
                if self.messages[m].text.is_empty() {
                    self.messages[m].text = String::from_utf8_lossy(body).into_owned();
                }
                self.messages[m].seq.get_or_insert(*seq);
                (e.m, e.c, e.s) = (Some(m), self.conv(*conv), Some(*seq));
                e.p = Some(path_name(*path));
            }
            Observation::DuplicateDropped {
                id,
                conv,
                seq,
                path,
            } => {
                let m = self.msg(*id, *conv);
                (e.m, e.c, e.s) = (Some(m), self.conv(*conv), Some(*seq));
                e.p = Some(path_name(*path));
            }
            Observation::Ticks {
                id,
                conv,
                seq,
                tick,
            } => {
                let m = self.msg(*id, *conv);
                (e.m, e.c, e.s) = (Some(m), self.conv(*conv), Some(*seq));
                e.p = Some(tick_name(*tick));
            }
            Observation::Read { conv, upto } => {
                (e.c, e.s) = (self.conv(*conv), Some(*upto));
            }
            Observation::Presence {
                user,
                online,
                last_seen,
                ..
            } => {
                e.u = Some(user.to_string());
                e.on = Some(*online);
                e.ls = Some(*last_seen);
            }
            Observation::Opened { conv } => {
                e.c = conv.and_then(|c| self.conv(c));
            }
            Observation::GapDetected { conv, from, to } => {
                (e.c, e.s) = (self.conv(*conv), Some(*from));
                e.l = Some(format!("gap {from}..={to}"));
            }
            Observation::Disconnected { reason } => e.l = Some(format!("{reason:?}")),
            _ => {}
        }
        e
    }
}

/// The conversation an observation concerns, if any.
fn conv_of(obs: &Observation) -> Option<ConvId> {
    match obs {
        Observation::Sent { conv, .. }
        | Observation::Acked { conv, .. }
        | Observation::Displayed { conv, .. }
        | Observation::DuplicateDropped { conv, .. }
        | Observation::Ticks { conv, .. }
        | Observation::Read { conv, .. }
        | Observation::GapDetected { conv, .. } => Some(*conv),
        Observation::Opened { conv } => *conv,
        _ => None,
    }
}

/// Build the page's data from a run.
pub fn viewer_data(r: &RunReport) -> ViewerData {
    viewer_data_of(&r.history, &r.frame_log, &r.invariants)
}

/// Build the page's data from a history, its frames and its verdicts.
pub fn viewer_data_of(
    h: &History,
    frames: &[FrameRecord],
    verdicts: &[chatsim_judge::Verdict],
) -> ViewerData {
    let kept: Vec<(usize, Millis, DeviceId, &Observation)> = h
        .records
        .iter()
        .enumerate()
        .filter_map(|(i, r)| match &r.event {
            Event::Device { device, obs } if kind_of(obs).is_some() => Some((i, r.t, *device, obs)),
            _ => None,
        })
        .collect();
    let faults_and_heal = h
        .records
        .iter()
        .filter(|r| matches!(r.event, Event::Fault(_) | Event::Healed))
        .count();
    let events_total = kept.len() + faults_and_heal;

    let mut devices: BTreeSet<DeviceId> = BTreeSet::new();
    let mut convs: BTreeSet<ConvId> = BTreeSet::new();
    for (_, _, d, obs) in &kept {
        devices.insert(*d);
        convs.extend(conv_of(obs));
    }
    let mut b = Builder {
        h,
        devices: devices.into_iter().collect(),
        convs: convs.into_iter().collect(),
        messages: Vec::new(),
        ids: Vec::new(),
        by_id: BTreeMap::new(),
    };
    let changes = h.change_ids();

    let mut events = Vec::new();
    for (i, r) in b.h.records.iter().enumerate() {
        if events.len() >= VIEWER_EVENTS_MAX {
            break;
        }
        match &r.event {
            Event::Device { device, obs } if kind_of(obs).is_some() => {
                let e = b.event(i, r.t, *device, obs);
                events.push(e);
            }
            Event::Fault(f) => {
                events.push(ViewerEvent {
                    i,
                    t: r.t,
                    k: "fault",
                    d: None,
                    m: None,
                    c: None,
                    s: None,
                    p: None,
                    u: None,
                    on: None,
                    ls: None,
                    l: Some(f.to_string()),
                });
            }
            Event::Healed => events.push(ViewerEvent {
                i,
                t: r.t,
                k: "healed",
                d: None,
                m: None,
                c: None,
                s: None,
                p: None,
                u: None,
                on: None,
                ls: None,
                l: Some("every fault healed".into()),
            }),
            _ => {}
        }
    }
    for (m, id) in b.messages.iter_mut().zip(&b.ids) {
        m.change = changes.contains(id);
    }
    let cut_at = events.last().map_or(0, |e| e.t);
    let capped = events.len() < events_total;
    let places = add_hops(&mut b, &events, frames, capped.then_some(cut_at));

    let mut violations = Vec::new();
    let mut violations_total = 0;
    for v in verdicts {
        violations_total += v.violations.len();
        for x in &v.violations {
            if violations.len() >= VIEWER_VIOLATIONS_MAX {
                break;
            }
            let from_history = x
                .message
                .as_ref()
                .and_then(|m| b.ids.iter().position(|id| id.to_string() == *m))
                .and_then(|m| events.iter().find(|e| e.m == Some(m)))
                .map(|e| e.t);
            let (t, source) = match (x.at, from_history) {
                (Some(t), _) => (t, "verdict"),
                (None, Some(t)) => (t, "history"),
                (None, None) => (h.end, "end"),
            };
            let s = |o: &Option<String>| o.clone().unwrap_or_default();
            violations.push(ViolationAt {
                check: v.name.to_string(),
                t,
                source,
                message: s(&x.message),
                device: s(&x.device),
                conv: s(&x.conv),
                detail: x.detail.clone(),
            });
        }
    }
    violations.sort_by_key(|v| v.t);

    ViewerData {
        end: h.end,
        events_max: VIEWER_EVENTS_MAX,
        events_total,
        hops_max: VIEWER_HOPS_MAX,
        phone_hops_max: VIEWER_PHONE_HOPS_MAX,
        devices: b
            .devices
            .iter()
            .map(|d| DeviceInfo {
                name: d.to_string(),
                user: d.user.to_string(),
            })
            .collect(),
        convs: b
            .convs
            .iter()
            .map(|c| ConvInfo {
                name: c.to_string(),
                members: if c.is_group() {
                    Vec::new()
                } else {
                    let (x, y) = c.direct_members();
                    vec![x.to_string(), y.to_string()]
                },
            })
            .collect(),
        messages: b.messages,
        events,
        faults: fault_windows(h),
        violations,
        violations_total,
        places,
    }
}

/// Each message's hops: its phone-side steps from the kept events, and the frames that name it
/// (by id, or, for frames that carry no id, by its conversation and sequence number: a
/// sequence number two messages were given lists the frames under both), merged in time
/// order. With a cut, frames after it are left out like the events. Gives the places hops
/// name, in the order first named.
fn add_hops(
    b: &mut Builder,
    events: &[ViewerEvent],
    frames: &[FrameRecord],
    cut: Option<Millis>,
) -> Vec<String> {
    let mut places: Vec<String> = Vec::new();
    let mut place_ix: BTreeMap<String, usize> = BTreeMap::new();
    let mut place = |name: String| -> usize {
        if let Some(i) = place_ix.get(&name) {
            return *i;
        }
        places.push(name.clone());
        place_ix.insert(name, places.len() - 1);
        places.len() - 1
    };
    let mut hops: Vec<Vec<Hop>> = vec![Vec::new(); b.messages.len()];
    // A Read names a conversation up to a sequence number: it reads every message there up to
    // it that the device had not read yet.
    let mut by_conv: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, m) in b.messages.iter().enumerate() {
        by_conv.entry(m.conv).or_default().push(i);
    }
    let mut read_by: BTreeSet<(usize, Option<usize>)> = BTreeSet::new();
    for e in events {
        let at = place(
            e.d.and_then(|d| b.devices.get(d))
                .map_or_else(String::new, ToString::to_string),
        );
        let Some(m) = e.m else {
            if let (Some(c), Some(upto), "read") = (e.c, e.s, e.k) {
                for &m in by_conv.get(&c).into_iter().flatten() {
                    let seq = b.messages[m].seq;
                    if seq.is_some_and(|s| s <= upto) && read_by.insert((m, e.d)) {
                        hops[m].push(Hop {
                            t: e.t,
                            kind: "read",
                            label: format!("up to seq {upto}"),
                            at,
                        });
                    }
                }
            }
            continue;
        };
        let (kind, label) = match (e.k, e.p) {
            ("sent", _) => ("send", String::new()),
            ("acked", _) => ("acked", format!("seq {}", e.s.unwrap_or(0))),
            ("displayed", Some(p)) => ("display", format!("via {p}")),
            ("duplicate", Some(p)) => ("duplicate", format!("via {p}")),
            ("ticks", Some("read")) => ("read-ticks", String::new()),
            ("ticks", _) => ("delivered", String::new()),
            _ => continue,
        };
        hops[m].push(Hop {
            t: e.t,
            kind,
            label,
            at,
        });
    }
    let mut by_key: BTreeMap<(ConvId, Seq), Vec<usize>> = BTreeMap::new();
    for (i, m) in b.messages.iter().enumerate() {
        if let (Some(c), Some(s)) = (b.convs.get(m.conv), m.seq) {
            by_key.entry((*c, s)).or_default().push(i);
        }
    }
    for f in frames {
        if cut.is_some_and(|c| f.recv_ms > c) {
            continue;
        }
        let owners: Vec<usize> = match (f.msg, f.key) {
            (Some(id), _) => b.by_id.get(&id).copied().into_iter().collect(),
            (None, Some(key)) => by_key.get(&key).cloned().unwrap_or_default(),
            (None, None) => Vec::new(),
        };
        if owners.is_empty() {
            continue;
        }
        let kind = frame_kind(f);
        let at = place(format!("{} → {}", f.from, f.to));
        for m in owners {
            hops[m].push(Hop {
                t: f.recv_ms,
                kind,
                label: f.label.clone(),
                at,
            });
        }
    }
    add_wake_hops(b, events, frames, cut, &mut hops, &mut place);
    for (m, hs) in b.messages.iter_mut().zip(hops) {
        // Capped apart: a group text's frames would otherwise crowd out the later members'
        // displays, which say more about where it got to.
        let (mut phone, mut server): (Vec<Hop>, Vec<Hop>) =
            hs.into_iter().partition(|x| PHONE_HOPS.contains(&x.kind));
        phone.sort_by_key(|x| x.t);
        server.sort_by_key(|x| x.t);
        m.hops_cut = phone.len().saturating_sub(VIEWER_PHONE_HOPS_MAX)
            + server.len().saturating_sub(VIEWER_HOPS_MAX);
        phone.truncate(VIEWER_PHONE_HOPS_MAX);
        server.truncate(VIEWER_HOPS_MAX);
        phone.append(&mut server);
        // Stable: at one millisecond, the phone's own steps come first, then frames in
        // delivery order, the orders the history and the frame log give.
        phone.sort_by_key(|x| x.t);
        m.hops = phone;
    }
    places
}

/// How a message that waited in an inbox reached a device that was away: the push and the
/// drain carry no message id (a push names only the device, a drain asks for everything
/// waiting), so they are tied to a message by device and time: for each display via the inbox,
/// the last push notification for that device, the last wake-up it saw and the last drain it
/// asked for, each between the send and that display.
fn add_wake_hops(
    b: &Builder,
    events: &[ViewerEvent],
    frames: &[FrameRecord],
    cut: Option<Millis>,
    hops: &mut [Vec<Hop>],
    place: &mut impl FnMut(String) -> usize,
) {
    // Per device: (time, kind, label, place), in time order.
    let mut steps: BTreeMap<String, Vec<(Millis, &'static str, String, usize)>> = BTreeMap::new();
    for f in frames {
        if cut.is_some_and(|c| f.recv_ms > c) {
            continue;
        }
        let (device, kind) = match (&f.from, &f.to, f.label.as_str()) {
            (_, Host::Push, l) if l.starts_with("Notify ") => {
                (l.trim_start_matches("Notify ").to_string(), "push-notify")
            }
            (Host::Push, Host::Device(d), "Wake") => (d.to_string(), "wake"),
            (Host::Device(d), _, "Drain") => (d.to_string(), "drain-request"),
            _ => continue,
        };
        let at = place(format!("{} → {}", f.from, f.to));
        steps
            .entry(device)
            .or_default()
            .push((f.recv_ms, kind, f.label.clone(), at));
    }
    for e in events.iter().filter(|e| e.k == "woken") {
        if let Some(d) = e.d.and_then(|d| b.devices.get(d)) {
            let at = place(d.to_string());
            let list = steps.entry(d.to_string()).or_default();
            list.push((e.t, "woken", String::new(), at));
            list.sort_by_key(|x| x.0);
        }
    }
    let sent: BTreeMap<usize, Millis> = events
        .iter()
        .filter(|e| e.k == "sent")
        .filter_map(|e| e.m.map(|m| (m, e.t)))
        .collect();
    for e in events
        .iter()
        .filter(|e| e.k == "displayed" && e.p == Some("inbox"))
    {
        let (Some(m), Some(d)) = (e.m, e.d.and_then(|d| b.devices.get(d))) else {
            continue;
        };
        let (Some(t0), Some(list)) = (sent.get(&m), steps.get(&d.to_string())) else {
            continue;
        };
        for kind in ["push-notify", "wake", "woken", "drain-request"] {
            let last = list
                .iter()
                .rfind(|x| x.1 == kind && x.0 >= *t0 && x.0 <= e.t);
            if let Some((t, kind, label, at)) = last {
                hops[m].push(Hop {
                    t: *t,
                    kind,
                    label: label.clone(),
                    at: *at,
                });
            }
        }
    }
}

/// The data as JSON safe inside a `<script>` element: no `<` can close it early.
pub fn data_json(d: &ViewerData) -> String {
    serde_json::to_string(d)
        .unwrap_or_else(|_| "null".into())
        .replace('<', "\\u003c")
}

/// The viewer's section of a run page: its markup, its data, its style and its script.
pub fn section(r: &RunReport) -> String {
    let d = viewer_data(r);
    let cut = if d.events.len() < d.events_total {
        format!(
            " <b id=\"v-cut\">The cap cut this run: {} of {} events kept, up to {} ms; later events, and hops after that time, are not shown.</b>",
            d.events.len(),
            d.events_total,
            d.events.last().map_or(0, |e| e.t)
        )
    } else {
        String::new()
    };
    format!(
        r##"<h2 id="viewer-title">Viewer</h2>
<p class="v-help">Step through the run: <kbd>←</kbd>/<kbd>→</kbd> one event, <kbd>Shift</kbd>+arrow ten, <kbd>Home</kbd>/<kbd>End</kbd> the first and last, or drag the scrubber and click the timeline. Fault windows are the shaded bands, violations the red marks (click one to jump to its moment). Pick a device to see its chats as its screen showed them at that moment; click a message to follow its hops. Cap rule: the first {max} events of the history are kept (each message's first {phone_hops} phone-side hops and first {hops} server-side ones); {n} of {total} kept here.{cut}</p>
<div id="viewer" data-ready="0" tabindex="0">
<div id="v-timeline"></div>
<div class="v-controls"><button id="v-prev" type="button" title="previous event (←)">◀</button><input id="v-scrub" type="range" min="0" max="0" value="0" step="1" aria-label="event"><button id="v-next" type="button" title="next event (→)">▶</button> <span id="v-now"></span></div>
<div id="v-event"></div>
<div class="v-cols">
<div class="v-col"><h3>Devices</h3><div id="v-devices"></div><h3>Violations</h3><ol id="v-violations"></ol></div>
<div class="v-col"><h3 id="v-phone-title">Phone</h3><div id="v-phone"></div></div>
<div class="v-col"><h3>Messages</h3><div id="v-messages"></div><h3 id="v-hops-title">Hops</h3><ol id="v-hops"></ol></div>
</div>
</div>
<script type="application/json" id="viewer-data">{json}</script>
<style>{STYLE}</style>
<script>{SCRIPT}</script>
"##,
        max = VIEWER_EVENTS_MAX,
        hops = VIEWER_HOPS_MAX,
        phone_hops = VIEWER_PHONE_HOPS_MAX,
        n = d.events.len(),
        total = d.events_total,
        json = data_json(&d),
        cut = cut,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatsim_judge::{Verdict, Violation};
    use chatsim_system::proto::UserId;

    fn dev(u: u32) -> DeviceId {
        DeviceId::primary(UserId(u))
    }

    fn frame(
        from: Host,
        to: Host,
        t: Millis,
        label: &str,
        msg: Option<MsgId>,
        key: Option<(ConvId, Seq)>,
    ) -> FrameRecord {
        FrameRecord {
            from,
            to,
            sent_ms: t - 1,
            recv_ms: t,
            label: label.into(),
            msg,
            key,
            bytes: 40,
        }
    }

    // One text's way through a small hand-built run: the kept events (a connection attempt is
    // not one), the hops from the history and from frames found by id and by (conversation,
    // seq) merged in time order, with the push, wake-up and drain request tied to its inbox
    // display by device and time (an earlier push is not), a fault window with its host, and
    // each violation's moment (the verdict's own, or the first event of the message it names).
    #[test]
    fn a_texts_events_hops_faults_and_violation_moments() {
        let (a, b) = (dev(0), dev(1));
        let conv = ConvId::direct(a.user, b.user);
        let id = MsgId { device: a, n: 0 };
        let other = MsgId { device: b, n: 0 };
        let mut h = History::new(2);
        let body = b"hi".to_vec();
        h.observe(1, a, Observation::Connecting { gateway: 0 });
        h.observe(
            10,
            a,
            Observation::Sent {
                id,
                conv,
                body: body.clone(),
            },
        );
        h.push(15, Event::Fault(Fault::Kill(Host::Shard(0))));
        h.observe(20, a, Observation::Acked { id, conv, seq: 1 });
        h.push(25, Event::Fault(Fault::Restart(Host::Shard(0))));
        h.observe(26, b, Observation::Woken);
        let shown = Observation::Displayed {
            id,
            conv,
            seq: 1,
            path: Path::Inbox,
            body,
            sent_at: 10,
        };
        h.observe(30, b, shown);
        let tick = |tick| Observation::Ticks {
            id,
            conv,
            seq: 1,
            tick,
        };
        h.observe(40, a, tick(ReceiptKind::Delivered));
        h.observe(50, b, Observation::Read { conv, upto: 1 });
        h.observe(60, a, tick(ReceiptKind::Read));
        h.end = 100;
        let frames = [
            frame(
                Host::Device(a),
                Host::Gateway(0),
                11,
                "Send u0.d0#0",
                Some(id),
                None,
            ),
            frame(
                Host::Shard(0),
                Host::Storage(0),
                18,
                "Append seq 1",
                None,
                Some((conv, 1)),
            ),
            frame(
                Host::Shard(0),
                Host::Storage(0),
                19,
                "Append seq 2",
                None,
                Some((conv, 2)),
            ),
            frame(
                Host::Device(b),
                Host::Gateway(0),
                12,
                "Send u1.d0#0",
                Some(other),
                None,
            ),
            frame(
                Host::Gateway(0),
                Host::Device(b),
                29,
                "Deliver seq 1 (inbox)",
                Some(id),
                Some((conv, 1)),
            ),
            // A push for the recipient before the send is not this message's.
            frame(Host::Shard(0), Host::Push, 5, "Notify u1.d0", None, None),
            frame(Host::Shard(0), Host::Push, 22, "Notify u1.d0", None, None),
            frame(Host::Device(b), Host::Gateway(0), 27, "Drain", None, None),
        ];
        let violation = |at, detail: &str| Violation {
            invariant: "no_loss",
            message: Some(id.to_string()),
            body: None,
            device: Some(b.to_string()),
            conv: Some(conv.to_string()),
            at,
            detail: detail.into(),
        };
        let verdicts = [Verdict {
            name: "no_loss",
            holds: false,
            violations: vec![violation(Some(55), "late"), violation(None, "no time")],
            checked: 1,
        }];
        let d = viewer_data_of(&h, &frames, &verdicts);

        let kinds: Vec<(usize, Millis, &str)> = d.events.iter().map(|e| (e.i, e.t, e.k)).collect();
        assert_eq!(
            kinds,
            vec![
                (1, 10, "sent"),
                (2, 15, "fault"),
                (3, 20, "acked"),
                (4, 25, "fault"),
                (5, 26, "woken"),
                (6, 30, "displayed"),
                (7, 40, "ticks"),
                (8, 50, "read"),
                (9, 60, "ticks"),
            ]
        );
        assert_eq!(d.events_total, 9);
        assert_eq!(
            d.messages.len(),
            1,
            "the other device's frame names no kept message"
        );
        let m = &d.messages[0];
        assert_eq!(
            (m.id.as_str(), m.text.as_str(), m.seq),
            ("u0.d0#0", "hi", Some(1))
        );
        let hops: Vec<(Millis, &str, &str)> = m
            .hops
            .iter()
            .map(|x| (x.t, x.kind, d.places[x.at].as_str()))
            .collect();
        assert_eq!(
            hops,
            vec![
                (10, "send", "u0.d0"),
                (11, "gateway", "device-u0.d0 → gateway-1"),
                (18, "persist", "shard-1 → storage-1"),
                (20, "acked", "u0.d0"),
                (22, "push-notify", "shard-1 → push"),
                (26, "woken", "u1.d0"),
                (27, "drain-request", "device-u1.d0 → gateway-1"),
                (29, "drain-phone", "gateway-1 → device-u1.d0"),
                (30, "display", "u1.d0"),
                (40, "delivered", "u0.d0"),
                (50, "read", "u1.d0"),
                (60, "read-ticks", "u0.d0"),
            ]
        );
        assert_eq!(
            d.faults,
            vec![FaultWindow {
                from: 15,
                to: 25,
                label: "kill shard-1".into(),
                hosts: vec!["shard-1".into()],
                open: false,
            }]
        );
        let moments: Vec<(Millis, &str, &str)> = d
            .violations
            .iter()
            .map(|v| (v.t, v.source, v.detail.as_str()))
            .collect();
        assert_eq!(
            moments,
            vec![(10, "history", "no time"), (55, "verdict", "late")]
        );
    }

    // Past the cap the first events are kept, and the data says how many there were.
    #[test]
    fn the_cap_keeps_the_first_events_and_counts_the_rest() {
        let a = dev(0);
        let mut h = History::new(2);
        for t in 0..(VIEWER_EVENTS_MAX as Millis + 5) {
            h.observe(t, a, Observation::Woken);
        }
        let d = viewer_data_of(&h, &[], &[]);
        assert_eq!(d.events.len(), VIEWER_EVENTS_MAX);
        assert_eq!(d.events_total, VIEWER_EVENTS_MAX + 5);
        assert_eq!(d.events.last().map(|e| e.i), Some(VIEWER_EVENTS_MAX - 1));
    }

    // A message with more frames than the cap keeps its first frames and every phone-side
    // step, and counts what it cut.
    #[test]
    fn the_hop_cap_keeps_phone_steps_and_the_first_frames() {
        let (a, b) = (dev(0), dev(1));
        let conv = ConvId::direct(a.user, b.user);
        let id = MsgId { device: a, n: 0 };
        let mut h = History::new(2);
        h.observe(
            1,
            a,
            Observation::Sent {
                id,
                conv,
                body: b"x".to_vec(),
            },
        );
        let late = VIEWER_HOPS_MAX as Millis + 100;
        let shown = Observation::Displayed {
            id,
            conv,
            seq: 1,
            path: Path::Live,
            body: b"x".to_vec(),
            sent_at: 1,
        };
        h.observe(late, b, shown);
        let frames: Vec<FrameRecord> = (0..VIEWER_HOPS_MAX as Millis + 5)
            .map(|t| {
                frame(
                    Host::Device(a),
                    Host::Gateway(0),
                    2 + t,
                    "Send u0.d0#0",
                    Some(id),
                    None,
                )
            })
            .collect();
        let d = viewer_data_of(&h, &frames, &[]);
        let m = &d.messages[0];
        assert_eq!(m.hops_cut, 5);
        assert_eq!(m.hops.len(), VIEWER_HOPS_MAX + 2);
        assert_eq!(
            m.hops.last().map(|x| (x.t, x.kind)),
            Some((late, "display"))
        );
        assert_eq!(
            m.hops
                .iter()
                .filter(|x| x.kind == "gateway")
                .map(|x| x.t)
                .max(),
            Some(1 + VIEWER_HOPS_MAX as Millis)
        );
    }

    // Text a user typed cannot close the data's script element early.
    #[test]
    fn the_data_cannot_close_its_script_element() {
        let a = dev(0);
        let conv = ConvId::direct(a.user, UserId(1));
        let mut h = History::new(2);
        let body = b"</script><script>alert(1)</script>".to_vec();
        h.observe(
            1,
            a,
            Observation::Sent {
                id: MsgId { device: a, n: 0 },
                conv,
                body,
            },
        );
        let json = data_json(&viewer_data_of(&h, &[], &[]));
        assert!(!json.contains('<'), "{json}");
        let back: serde_json::Value = serde_json::from_str(&json).expect("still JSON");
        assert_eq!(
            back["messages"][0]["text"],
            "</script><script>alert(1)</script>"
        );
    }
}
