//! The invariant checkers: `no_loss`, `exactly_once`, `conversation_order` and `liveness`.
//!
//! This module owns what "correct" means for a run. Each checker reads only a [`History`]
//! (what devices showed their users, and when faults healed) and returns a [`Verdict`] listing
//! every [`Violation`] it found, naming the message, device, conversation and time involved.
//!
//! A *logical message* is identified by (sender device, body), not by [`MsgId`]: a buggy system
//! may resend the same text under a new id, and a user would still see the same message twice.
//! Workloads keep bodies unique per sender, so this identification is exact for them.
//!
//! Everything is built from ordered maps and iterated in history order, so the same history
//! always yields the same violations in the same order, and cost stays `O(n log n)`.

use crate::history::{Event, History, Links, Memberships};
use chatsim_system::proto::{ConvId, DeviceId, Millis, MsgId, Seq};
use chatsim_system::Observation;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// A map the checkers only look things up in, never iterate: hashing keeps each lookup
/// constant time on million-event histories (the B-tree versions' comparisons chased body
/// pointers all over the heap), and since nothing walks it, hash order cannot reach a
/// verdict or a report. Anything iterated stays a `BTreeMap`.
pub(crate) type Lookup<K, V> = HashMap<K, V>;

/// Name of the no-loss invariant: every acked message is displayed on every recipient.
pub const NO_LOSS: &str = "no_loss";
/// Name of the exactly-once invariant: no device displays a message twice.
pub const EXACTLY_ONCE: &str = "exactly_once";
/// Name of the ordering invariant: displays follow sequence numbers, which everyone agrees on.
pub const CONVERSATION_ORDER: &str = "conversation_order";
/// Name of the liveness invariant: once faults heal, sends are acked and displayed in bounded time.
pub const LIVENESS: &str = "liveness";
/// Every invariant, in the order [`check_all`] reports them.
pub const INVARIANTS: [&str; 9] = [
    NO_LOSS,
    EXACTLY_ONCE,
    CONVERSATION_ORDER,
    LIVENESS,
    crate::confidential::E2E_CONFIDENTIAL,
    crate::authz::AUTHZ,
    crate::receipts::RECEIPTS,
    crate::presence::PRESENCE_CONVERGES,
    crate::inbox::INBOX_DRAINED,
];
/// The bound checks (cost, not wrong answers), in the order [`check_all`] reports them.
pub const BOUND_CHECKS: [&str; 7] = [
    crate::bounds::ACK_LATENCY,
    crate::bounds::GAP_REPAIR,
    crate::receipts::RECEIPT_LATENCY,
    crate::presence::PRESENCE_LATENCY,
    crate::inbox::DRAIN_LATENCY,
    crate::bounds::RECONNECT_LOAD,
    crate::presence::PRESENCE_LOAD,
];
/// Every check [`check_all`] runs, invariants first, then bound checks, in its order.
pub const CHECKS: [&str; INVARIANTS.len() + BOUND_CHECKS.len()] = concat(INVARIANTS, BOUND_CHECKS);

/// `a` then `b`, at compile time, so [`CHECKS`] cannot drift from the two lists it joins.
const fn concat<const A: usize, const B: usize, const N: usize>(
    a: [&'static str; A],
    b: [&'static str; B],
) -> [&'static str; N] {
    let mut out = [""; N];
    let mut i = 0;
    while i < A {
        out[i] = a[i];
        i += 1;
    }
    while i < N {
        out[i] = b[i - A];
        i += 1;
    }
    out
}

/// One broken promise, with enough context for a report to point at it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Which invariant (one of [`INVARIANTS`]).
    pub invariant: &'static str,
    /// The message concerned (its [`MsgId`], e.g. `u1.d0#3`), when there is one.
    pub message: Option<String>,
    /// The message's text, when known.
    pub body: Option<String>,
    /// The device that saw (or should have seen) it.
    pub device: Option<String>,
    /// The conversation.
    pub conv: Option<String>,
    /// When the violation became visible (an ack, a repeated display, a missed deadline).
    pub at: Option<Millis>,
    /// One readable sentence describing what went wrong.
    pub detail: String,
}

/// The outcome of one checker over one history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Which invariant (one of [`INVARIANTS`]).
    pub name: &'static str,
    /// True when no violation was found.
    pub holds: bool,
    /// Every violation found, in the order the history revealed them.
    pub violations: Vec<Violation>,
    /// How many items were judged (e.g. (message, recipient) pairs), so a vacuous pass shows.
    pub checked: usize,
}

/// Bounds the liveness check uses.
#[derive(Clone, Copy, Debug)]
pub struct Bounds {
    /// After faults heal (or after the send/ack, if later), how long a message may take to be
    /// acked to its sender and displayed on each recipient.
    pub liveness_ms: Millis,
    /// The most the median send-to-✓ time may be (`ack_latency`).
    pub ack_p50_ms: Millis,
    /// Extra latency the scenario puts on a fetch's path, there and back (`gap_repair` adds it
    /// to its promise): slow links between phones, gateways, shards and storage.
    pub fetch_extra_ms: Millis,
    /// The most numbers one gap fetch asks for in the run
    /// ([`chatsim_system::knobs::Knobs::gap_fetch_seqs_max`]): a longer gap takes a round trip
    /// per piece.
    pub fetch_max: u64,
    /// The most entries one inbox page holds in the run
    /// ([`chatsim_system::knobs::Knobs::inbox_page_entries`]): a drain takes a round trip a
    /// page.
    pub inbox_page: u32,
}

/// Run every checker, in [`INVARIANTS`] order.
pub fn check_all(h: &History, bounds: Bounds) -> Vec<Verdict> {
    check_all_timed(h, bounds)
        .checks
        .into_iter()
        .map(|(v, _)| v)
        .collect()
}

/// Every verdict with the wall time its checker took, and the time spent deriving the facts
/// several checkers share: how a long history's judging divides (reported, never part of a
/// trace or a verdict).
pub struct Timed {
    /// Building [`Facts`] once for all checkers.
    pub shared: Duration,
    /// Each check's verdict and its own time, in [`CHECKS`] order.
    pub checks: Vec<(Verdict, Duration)>,
}

/// As [`check_all`], timed. The facts two or more checkers read (first displays, first acks,
/// memberships, links) are derived once and lent to each of them.
pub fn check_all_timed(h: &History, bounds: Bounds) -> Timed {
    let started = Instant::now();
    let facts = Facts::build(h);
    let shared = started.elapsed();
    let f = &facts;
    let checks: [&dyn Fn() -> Verdict; CHECKS.len()] = [
        &|| no_loss_in(h, f),
        &|| exactly_once(h),
        &|| conversation_order_in(h, &f.ix),
        &|| liveness_in(h, bounds, f),
        &|| crate::confidential::e2e_confidential(h),
        &|| crate::authz::authz_in(h, &f.groups),
        &|| crate::receipts::receipts_in(h, bounds, &f.groups, &f.links),
        &|| crate::presence::presence_converges(h, bounds),
        &|| crate::inbox::inbox_drained(h, bounds),
        &|| crate::bounds::ack_latency(h, bounds.ack_p50_ms),
        &|| crate::bounds::gap_repair(h, bounds.fetch_extra_ms, bounds.fetch_max),
        &|| crate::receipts::receipt_latency(h, bounds.fetch_extra_ms),
        &|| crate::presence::presence_latency(h, bounds.fetch_extra_ms),
        &|| crate::inbox::drain_latency(h, bounds.fetch_extra_ms, bounds.inbox_page),
        &|| crate::bounds::reconnect_load(h),
        &|| crate::presence::presence_load(h),
    ];
    let checks = checks
        .iter()
        .map(|check| {
            let started = Instant::now();
            let verdict = check();
            (verdict, started.elapsed())
        })
        .collect();
    Timed { shared, checks }
}

/// What several checkers derive from one history: built once when they run together
/// ([`check_all_timed`]), so a million-event history is not indexed three times over.
pub(crate) struct Facts<'a> {
    ix: Index<'a>,
    shown: FirstDisplays<'a>,
    acks: Vec<Ack<'a>>,
    pub(crate) groups: Memberships,
    pub(crate) links: Links,
}

impl<'a> Facts<'a> {
    pub(crate) fn build(h: &'a History) -> Facts<'a> {
        let ix = Index::build(h);
        let acks = first_acks(h, &ix);
        Facts {
            shown: FirstDisplays::build(h),
            acks,
            ix,
            groups: h.memberships(),
            links: h.links(),
        }
    }
}

/// Every message acked to its sender is displayed on every recipient device before the run
/// ends. One violation per (message, recipient) that never showed it, dated at the ack.
pub fn no_loss(h: &History) -> Verdict {
    no_loss_in(h, &Facts::build(h))
}

fn no_loss_in(h: &History, f: &Facts<'_>) -> Verdict {
    let shown = &f.shown;
    let mut violations = Vec::new();
    let mut checked = 0;
    for ack in &f.acks {
        for r in h.recipients_at(&f.groups, ack.conv, ack.seq, ack.id.device) {
            if !f.links.owed(r, ack.id) {
                continue;
            }
            checked += 1;
            if shown.by_msg.contains_key(&(r, ack.msg)) {
                continue;
            }
            // Shown under the same id with other text is still a loss: the user never saw
            // what was sent. Saying so saves the reader a hunt.
            let detail = match shown.by_id.get(&(r, ack.id)) {
                Some(t) => format!(
                    "acked at {} ms with seq {}, displayed on {r} at {t} ms only with different text",
                    ack.t, ack.seq
                ),
                None => format!("acked at {} ms with seq {}, never displayed on {r}", ack.t, ack.seq),
            };
            violations.push(
                Violation::new(NO_LOSS, ack.t, detail)
                    .message(ack.id)
                    .body(ack.msg)
                    .device(r)
                    .conv(ack.conv),
            );
        }
    }
    Verdict::new(NO_LOSS, violations, checked)
}

/// No device displays the same logical message twice, whether under the same [`MsgId`] or
/// under a new one carrying the same text. One violation per extra display, dated at it.
pub fn exactly_once(h: &History) -> Verdict {
    let mut by_msg: Lookup<(DeviceId, Logical<'_>), (Millis, MsgId)> = Lookup::new();
    let mut by_id: Lookup<(DeviceId, MsgId), Millis> = Lookup::new();
    let mut violations = Vec::new();
    let mut checked = 0;
    for (t, device, obs) in observations(h) {
        let Observation::Displayed { id, conv, body, .. } = obs else {
            continue;
        };
        checked += 1;
        let msg = Logical::Text {
            sender: id.device,
            body,
        };
        let prior = by_msg
            .get(&(device, msg))
            .copied()
            .or_else(|| by_id.get(&(device, *id)).map(|t0| (*t0, *id)));
        if let Some((t0, id0)) = prior {
            let detail = if id0 == *id {
                format!("displayed again on {device} at {t} ms (first displayed at {t0} ms)")
            } else {
                format!("displayed again on {device} at {t} ms as {id} (first displayed at {t0} ms as {id0})")
            };
            violations.push(
                Violation::new(EXACTLY_ONCE, t, detail)
                    .message(*id)
                    .body(msg)
                    .device(device)
                    .conv(*conv),
            );
        }
        by_msg.entry((device, msg)).or_insert((t, *id));
        by_id.entry((device, *id)).or_insert(t);
    }
    Verdict::new(EXACTLY_ONCE, violations, checked)
}

/// Each device displays each conversation's messages in strictly increasing seq order, every
/// observer (the sender's ack, every display) agrees on each message's seq, and no two logical
/// messages share one (conversation, seq).
pub fn conversation_order(h: &History) -> Verdict {
    conversation_order_in(h, &Index::build(h))
}

fn conversation_order_in<'a>(h: &'a History, ix: &Index<'a>) -> Verdict {
    let mut last_shown: BTreeMap<(DeviceId, ConvId), (Seq, MsgId)> = BTreeMap::new();
    let mut seq_of: Lookup<Logical<'_>, Claim> = Lookup::new();
    let mut holder: Lookup<(ConvId, Seq), (Logical<'_>, Claim)> = Lookup::new();
    // One report per distinct disagreement: a message shown on many devices with the same
    // wrong seq is one bug, not one per retry.
    let mut reported_seq: BTreeSet<(Logical<'_>, Seq)> = BTreeSet::new();
    let mut reported_slot: BTreeSet<(ConvId, Seq, Logical<'_>)> = BTreeSet::new();
    let mut violations = Vec::new();
    let mut checked = 0;
    for (t, device, obs) in observations(h) {
        let (id, conv, seq, msg, acked) = match obs {
            Observation::Acked { id, conv, seq } => (*id, *conv, *seq, ix.logical(*id), true),
            Observation::Displayed {
                id,
                conv,
                seq,
                body,
                ..
            } => (
                *id,
                *conv,
                *seq,
                Logical::Text {
                    sender: id.device,
                    body,
                },
                false,
            ),
            _ => continue,
        };
        checked += 1;
        let claim = Claim {
            t,
            device,
            id,
            seq,
            acked,
        };

        if !acked {
            if let Some((prev, prev_id)) = last_shown.insert((device, conv), (seq, id)) {
                if seq <= prev {
                    let detail =
                        format!("displayed on {device} at {t} ms with seq {seq} after seq {prev} ({prev_id}) in {conv}");
                    violations.push(
                        Violation::new(CONVERSATION_ORDER, t, detail)
                            .message(id)
                            .body(msg)
                            .device(device)
                            .conv(conv),
                    );
                }
            }
        }

        let first = *seq_of.entry(msg).or_insert(claim);
        if first.seq != seq && reported_seq.insert((msg, seq)) {
            let detail = format!(
                "{} with seq {seq}, but {} with seq {}",
                claim.describe(),
                first.describe(),
                first.seq
            );
            violations.push(
                Violation::new(CONVERSATION_ORDER, t, detail)
                    .message(id)
                    .body(msg)
                    .device(device)
                    .conv(conv),
            );
        }

        let (owner, owner_claim) = *holder.entry((conv, seq)).or_insert((msg, claim));
        if owner != msg && reported_slot.insert((conv, seq, msg)) {
            let detail = format!(
                "{} with seq {seq} in {conv}, but that seq already belongs to {}{} ({})",
                claim.describe(),
                owner_claim.id,
                owner.quoted(),
                owner_claim.how()
            );
            violations.push(
                Violation::new(CONVERSATION_ORDER, t, detail)
                    .message(id)
                    .body(msg)
                    .device(device)
                    .conv(conv),
            );
        }
    }
    Verdict::new(CONVERSATION_ORDER, violations, checked)
}

/// Once faults heal, the system makes progress: every acked message is displayed on every
/// recipient within `bounds.liveness_ms` of max(heal time, ack time), and every sent message
/// is acked within `bounds.liveness_ms` of max(heal time, send time). A deadline after the end
/// of the run with nothing observed yet cannot be judged and is skipped; `checked` counts only
/// the deadlines judged. Violations are dated at the missed deadline.
pub fn liveness(h: &History, bounds: Bounds) -> Verdict {
    liveness_in(h, bounds, &Facts::build(h))
}

fn liveness_in(h: &History, bounds: Bounds, f: &Facts<'_>) -> Verdict {
    let shown = &f.shown;
    let healed = h.healed_at().unwrap_or(0);
    let deadline = |t: Millis| healed.max(t).saturating_add(bounds.liveness_ms);
    // Says which clock the deadline ran from, so a reader can tell "slow after heal" from
    // "slow in calm weather".
    let since = |t: Millis, what: &str| {
        if healed > t {
            format!("the heal at {healed} ms")
        } else {
            format!("the {what} at {t} ms")
        }
    };
    let acks = &f.acks;
    let mut violations = Vec::new();
    let mut checked = 0;

    let first_ack_at: Lookup<Logical<'_>, Millis> = acks.iter().map(|a| (a.msg, a.t)).collect();
    // A send the server turned down for good (its sender was no longer in the group, the group
    // was full) owes no ✓: the user was told it failed.
    let refused: BTreeSet<MsgId> = observations(h)
        .filter_map(|(_, _, o)| match o {
            Observation::Refused {
                id: Some(id),
                fin: true,
                ..
            } => Some(*id),
            _ => None,
        })
        .collect();
    for (t, _, obs) in observations(h) {
        let Observation::Sent { id, conv, body } = obs else {
            continue;
        };
        if refused.contains(id) {
            continue;
        }
        let msg = Logical::Text {
            sender: id.device,
            body,
        };
        let due = deadline(t);
        let detail = match first_ack_at.get(&msg) {
            Some(&a) if a <= due => None,
            Some(&a) => Some(format!(
                "sent at {t} ms, acked at {a} ms: {} ms after its deadline of {due} ms ({} ms after {})",
                a - due,
                bounds.liveness_ms,
                since(t, "send")
            )),
            None if due > h.end => continue,
            None => Some(format!(
                "sent at {t} ms, never acked by the end at {} ms: {} ms past its deadline of {due} ms ({} ms after {})",
                h.end,
                h.end - due,
                bounds.liveness_ms,
                since(t, "send")
            )),
        };
        checked += 1;
        if let Some(detail) = detail {
            violations.push(
                Violation::new(LIVENESS, due, detail)
                    .message(*id)
                    .body(msg)
                    .device(id.device)
                    .conv(*conv),
            );
        }
    }

    let (groups, links) = (&f.groups, &f.links);
    for ack in acks {
        let due = deadline(ack.t);
        for r in h.recipients_at(groups, ack.conv, ack.seq, ack.id.device) {
            if !links.owed(r, ack.id) {
                continue;
            }
            let detail = match shown.by_msg.get(&(r, ack.msg)) {
                Some(&d) if d <= due => None,
                Some(&d) => Some(format!(
                    "acked at {} ms, displayed on {r} at {d} ms: {} ms after its deadline of {due} ms ({} ms after {})",
                    ack.t,
                    d - due,
                    bounds.liveness_ms,
                    since(ack.t, "ack")
                )),
                None if due > h.end => continue,
                None => Some(format!(
                    "acked at {} ms, never displayed on {r} by the end at {} ms: {} ms past its deadline of {due} ms ({} ms after {})",
                    ack.t,
                    h.end,
                    h.end - due,
                    bounds.liveness_ms,
                    since(ack.t, "ack")
                )),
            };
            checked += 1;
            if let Some(detail) = detail {
                violations.push(
                    Violation::new(LIVENESS, due, detail)
                        .message(ack.id)
                        .body(ack.msg)
                        .device(r)
                        .conv(ack.conv),
                );
            }
        }
    }

    // A device linked mid-run connects only once its user linked it: its link must then be
    // stored in time, or senders never learn of it and it is owed nothing for ever.
    let mut first_connect: BTreeMap<DeviceId, Millis> = BTreeMap::new();
    for (t, d, o) in observations(h) {
        if matches!(o, Observation::Connected { .. }) && h.late_devices.contains(&d) {
            first_connect.entry(d).or_insert(t);
        }
    }
    for (d, c) in first_connect {
        let due = deadline(c);
        checked += 1;
        let linked = links.linked_at(d);
        if linked.is_some_and(|l| l <= due) || due > h.end {
            continue;
        }
        let detail = format!(
            "{d} connected at {c} ms as a newly linked device, but its link was {} ({} ms after {})",
            linked.map_or("never stored".to_string(), |l| format!("stored only at {l} ms")),
            bounds.liveness_ms,
            since(c, "connect")
        );
        violations.push(Violation::new(LIVENESS, due, detail).device(d));
    }

    // Deadlines grow with event time for all kinds, so a stable sort by deadline interleaves
    // the passes back into history order.
    violations.sort_by_key(|v| v.at);
    Verdict::new(LIVENESS, violations, checked)
}

impl Violation {
    pub(crate) fn new(invariant: &'static str, at: Millis, detail: String) -> Violation {
        Violation {
            invariant,
            message: None,
            body: None,
            device: None,
            conv: None,
            at: Some(at),
            detail,
        }
    }

    pub(crate) fn message(mut self, id: MsgId) -> Violation {
        self.message = Some(id.to_string());
        self
    }

    fn body(mut self, msg: Logical<'_>) -> Violation {
        self.body = msg.text();
        self
    }

    pub(crate) fn device(mut self, device: DeviceId) -> Violation {
        self.device = Some(device.to_string());
        self
    }

    pub(crate) fn conv(mut self, conv: ConvId) -> Violation {
        self.conv = Some(conv.to_string());
        self
    }
}

impl Verdict {
    pub(crate) fn new(name: &'static str, violations: Vec<Violation>, checked: usize) -> Verdict {
        Verdict {
            name,
            holds: violations.is_empty(),
            violations,
            checked,
        }
    }
}

/// A logical message: who composed it and what it says. `Unknown` covers an ack whose id was
/// never seen sent or displayed, so its text cannot be recovered; such a message can only be
/// matched by id, and since no display carries that id it never collides with a `Text` key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Logical<'a> {
    Text { sender: DeviceId, body: &'a [u8] },
    Unknown(MsgId),
}

impl Logical<'_> {
    fn text(self) -> Option<String> {
        match self {
            Logical::Text { body, .. } => Some(String::from_utf8_lossy(body).into_owned()),
            Logical::Unknown(_) => None,
        }
    }

    /// ` "text"` for detail sentences, or nothing when the text is unknown.
    fn quoted(self) -> String {
        self.text().map(|b| format!(" {b:?}")).unwrap_or_default()
    }
}

/// What the history says each [`MsgId`]'s text is, so an ack (which carries no body) can be
/// tied to its logical message.
struct Index<'a> {
    sent: Lookup<MsgId, &'a [u8]>,
    displayed: Lookup<MsgId, &'a [u8]>,
}

impl<'a> Index<'a> {
    fn build(h: &'a History) -> Index<'a> {
        let mut sent = Lookup::new();
        let mut displayed = Lookup::new();
        for (_, _, obs) in observations(h) {
            match obs {
                Observation::Sent { id, body, .. } => {
                    sent.entry(*id).or_insert(body.as_slice());
                }
                Observation::Displayed { id, body, .. } => {
                    displayed.entry(*id).or_insert(body.as_slice());
                }
                _ => {}
            }
        }
        Index { sent, displayed }
    }

    fn logical(&self, id: MsgId) -> Logical<'a> {
        // The sender's own Sent is authoritative; a display only names the text of an id the
        // sender never recorded sending (a system-invented resend).
        match self.sent.get(&id).or_else(|| self.displayed.get(&id)) {
            Some(body) => Logical::Text {
                sender: id.device,
                body,
            },
            None => Logical::Unknown(id),
        }
    }
}

/// The first time each device displayed each logical message, and each id.
struct FirstDisplays<'a> {
    by_msg: Lookup<(DeviceId, Logical<'a>), Millis>,
    by_id: Lookup<(DeviceId, MsgId), Millis>,
}

impl<'a> FirstDisplays<'a> {
    // Every recorded display counts: the history stops at the end of the run.
    fn build(h: &'a History) -> FirstDisplays<'a> {
        let mut by_msg = Lookup::new();
        let mut by_id = Lookup::new();
        for (t, device, obs) in observations(h) {
            if let Observation::Displayed { id, body, .. } = obs {
                by_msg
                    .entry((
                        device,
                        Logical::Text {
                            sender: id.device,
                            body,
                        },
                    ))
                    .or_insert(t);
                by_id.entry((device, *id)).or_insert(t);
            }
        }
        FirstDisplays { by_msg, by_id }
    }
}

/// The first ✓ a logical message got.
struct Ack<'a> {
    t: Millis,
    id: MsgId,
    conv: ConvId,
    seq: Seq,
    msg: Logical<'a>,
}

/// The first ack of each logical message, in history order. Later acks (retries, or a resend
/// under a new id) promise nothing new, so judging them again would only repeat violations.
///
/// A compromised device's ✓ for an id it made up (no `Sent`: nobody composed it) promises
/// nobody anything; `authz` judges whether it should have been given at all.
fn first_acks<'a>(h: &'a History, ix: &Index<'a>) -> Vec<Ack<'a>> {
    let attackers = h.attackers();
    let mut seen = BTreeSet::new();
    let mut acks = Vec::new();
    for (t, device, obs) in observations(h) {
        if let Observation::Acked { id, conv, seq } = obs {
            let msg = ix.logical(*id);
            if matches!(msg, Logical::Unknown(_)) && attackers.contains(&device) {
                continue;
            }
            if seen.insert(msg) {
                acks.push(Ack {
                    t,
                    id: *id,
                    conv: *conv,
                    seq: *seq,
                    msg,
                });
            }
        }
    }
    acks
}

/// Who first claimed a seq for a message (or a message for a seq), for detail sentences.
#[derive(Clone, Copy)]
struct Claim {
    t: Millis,
    device: DeviceId,
    id: MsgId,
    seq: Seq,
    acked: bool,
}

impl Claim {
    /// "u0.d0#1 acked to u0.d0 at 20 ms"
    fn describe(&self) -> String {
        format!("{} {}", self.id, self.how())
    }

    /// "acked to u0.d0 at 20 ms"
    fn how(&self) -> String {
        let how = if self.acked {
            "acked to"
        } else {
            "displayed on"
        };
        format!("{how} {} at {} ms", self.device, self.t)
    }
}

/// Every device observation with its time, in history order.
fn observations(h: &History) -> impl Iterator<Item = (Millis, DeviceId, &Observation)> {
    h.records.iter().filter_map(|r| match &r.event {
        Event::Device { device, obs } => Some((r.t, *device, obs)),
        _ => None,
    })
}

#[cfg(test)]
mod tests;
