//! `receipts`: ✓✓ and read ticks tell the truth, never go back, and catch up after the heal.
//!
//! Judged from what devices saw, never from the servers' marks: a reader's screen says what it
//! showed (`Displayed`) and what its user read (`Read`); a sender's screen says which receipts
//! it learned (`Receipt`, per reader device) and which ticks it drew (`Ticks`, aggregated over
//! the recipient users). Who was owed a message comes from [`History::memberships`], rebuilt
//! from the changes users asked for.

use crate::bounds::{Weather, FETCH_ROUND_TRIP_MS};
use crate::checkers::{Bounds, Verdict, Violation};
use crate::history::{Event, History, Links, Looking, Memberships};
use chatsim_system::limits::{PUSH_RETRY_MS_MAX, RECEIPT_DELAY_MS, RECEIPT_RETRY_MS};
use chatsim_system::proto::{ConvId, DeviceId, Millis, MsgId, ReceiptKind, Seq, UserId};
use chatsim_system::Observation;
use std::collections::BTreeMap;

/// Name of the receipts invariant.
pub const RECEIPTS: &str = "receipts";
/// Name of the receipt-latency bound: in calm weather a receipt reaches its sender within
/// [`RECEIPT_BOUND_MS`].
pub const RECEIPT_LATENCY: &str = "receipt_latency";

/// The receipt promise for a text shown in calm weather, once the servers have worked off any
/// fault's backlog ([`crate::bounds::Weather::servers_settled`]): the reader sends its mark
/// [`RECEIPT_DELAY_MS`] after showing (or reading) it, the shard stores it and pushes it on to
/// the connected sender at once, a round trip in all ([`FETCH_ROUND_TRIP_MS`]: reader,
/// gateway, shard, storage, the sender's gateway, sender).
pub const RECEIPT_BOUND_MS: Millis = RECEIPT_DELAY_MS + FETCH_ROUND_TRIP_MS;

/// The receipt promise for a text shown before the weather calmed, whose mark or push a
/// fault may have swallowed, or before the servers had worked off the fault's backlog: the
/// reader re-sends every [`RECEIPT_RETRY_MS`] until stored, and
/// the shard re-pushes with a backoff of at most [`PUSH_RETRY_MS_MAX`], so the next attempt of
/// either goes within the larger of the two and arrives within a round trip.
pub const RECEIPT_IN_FLIGHT_BOUND_MS: Millis =
    max(RECEIPT_RETRY_MS, PUSH_RETRY_MS_MAX) + FETCH_ROUND_TRIP_MS;

const fn max(a: Millis, b: Millis) -> Millis {
    if a > b {
        a
    } else {
        b
    }
}

/// What the readers' screens showed, indexed for the questions receipts raise.
struct Screens {
    /// (device, conversation, seq) -> when it was first shown.
    shown: BTreeMap<(DeviceId, ConvId, Seq), Millis>,
    /// (device, conversation) -> (time, read mark so far), the mark never falling.
    read: BTreeMap<(DeviceId, ConvId), Vec<(Millis, Seq)>>,
}

impl Screens {
    fn build(h: &History) -> Screens {
        let mut shown = BTreeMap::new();
        let mut read: BTreeMap<(DeviceId, ConvId), Vec<(Millis, Seq)>> = BTreeMap::new();
        for r in &h.records {
            let Event::Device { device, obs } = &r.event else {
                continue;
            };
            match obs {
                Observation::Displayed { conv, seq, .. } => {
                    shown.entry((*device, *conv, *seq)).or_insert(r.t);
                }
                Observation::Read { conv, upto } => {
                    let marks = read.entry((*device, *conv)).or_default();
                    let best = marks.last().map_or(0, |(_, s)| *s).max(*upto);
                    marks.push((r.t, best));
                }
                _ => {}
            }
        }
        Screens { shown, read }
    }

    fn shown_at(&self, d: DeviceId, conv: ConvId, seq: Seq) -> Option<Millis> {
        self.shown.get(&(d, conv, seq)).copied()
    }

    /// When `d`'s user had read `seq` there: read marks it, and it was on screen.
    fn read_at(&self, d: DeviceId, conv: ConvId, seq: Seq) -> Option<Millis> {
        let marks = self.read.get(&(d, conv))?;
        let i = marks.partition_point(|(_, s)| *s < seq);
        let read = marks.get(i)?.0;
        Some(read.max(self.shown_at(d, conv, seq)?))
    }

    fn has_at(&self, kind: ReceiptKind, d: DeviceId, conv: ConvId, seq: Seq) -> Option<Millis> {
        match kind {
            ReceiptKind::Delivered => self.shown_at(d, conv, seq),
            ReceiptKind::Read => self.read_at(d, conv, seq),
        }
    }

    /// When every user in `users` had `seq` (or had read it) on at least one device.
    fn all_at(
        &self,
        h: &History,
        kind: ReceiptKind,
        users: &[UserId],
        conv: ConvId,
        seq: Seq,
    ) -> Option<Millis> {
        users.iter().try_fold(0, |latest: Millis, u| {
            let first = h
                .devices_of(*u)
                .filter_map(|d| self.has_at(kind, d, conv, seq))
                .min()?;
            Some(latest.max(first))
        })
    }
}

/// The users a text `sender` sent at `seq` in `conv` went to (their own user aside).
fn recipient_users(
    h: &History,
    m: &Memberships,
    conv: ConvId,
    seq: Seq,
    sender: DeviceId,
) -> Vec<UserId> {
    if conv.is_group() {
        m.before(conv, seq)
            .iter()
            .copied()
            .filter(|u| *u != sender.user)
            .collect()
    } else {
        conv.direct_peer(sender.user)
            .filter(|p| p.0 < h.users && *p != sender.user)
            .into_iter()
            .collect()
    }
}

fn tick_name(kind: ReceiptKind) -> &'static str {
    match kind {
        ReceiptKind::Delivered => "✓✓",
        ReceiptKind::Read => "read",
    }
}

/// Four promises, one violation per breach:
/// - a receipt a sender device learns (reader `d` has everything up to `upto`) is true for
///   each of that device's texts it covers that `d` was owed: `d` had shown it (delivered), or
///   its user had read it there (read), by then;
/// - a sender's ✓✓ on a text means every recipient user had it on some device; its read tick,
///   that every one had read it;
/// - neither a receipt mark nor a text's ticks ever go back;
/// - once every recipient user has a text (or has read it), its sender shows ✓✓ (or read)
///   within `bounds.liveness_ms` of that moment or of the heal, whichever is later; a deadline
///   past the end of the run is not judged.
pub fn receipts(h: &History, bounds: Bounds) -> Verdict {
    receipts_in(h, bounds, &h.memberships(), &h.links())
}

/// [`receipts`] with the memberships and links the other checkers share.
pub(crate) fn receipts_in(
    h: &History,
    bounds: Bounds,
    groups: &Memberships,
    links: &Links,
) -> Verdict {
    let screens = Screens::build(h);
    let changes = h.change_ids();
    // What users composed: a compromised device's ✓ for an id it made up (a tampered text) is
    // owed no ticks; `authz` judges the rest of what it got.
    let composed = h.composed();
    // Each sender device's texts by conversation and seq, as its ✓ placed them.
    let mut own: BTreeMap<(DeviceId, ConvId), BTreeMap<Seq, MsgId>> = BTreeMap::new();
    for r in &h.records {
        if let Event::Device {
            device,
            obs: Observation::Acked { id, conv, seq },
        } = &r.event
        {
            if id.device == *device && !changes.contains(id) && composed.contains(id) {
                own.entry((*device, *conv)).or_default().insert(*seq, *id);
            }
        }
    }
    let owed = |reader: DeviceId, conv: ConvId, seq: Seq, sender: DeviceId| {
        reader != sender
            && reader.user != sender.user
            && recipient_users(h, groups, conv, seq, sender).contains(&reader.user)
    };

    let mut violations = Vec::new();
    let mut checked = 0;
    let mut marks: BTreeMap<(DeviceId, ConvId, DeviceId, ReceiptKind), Seq> = BTreeMap::new();
    let mut ticks: BTreeMap<(DeviceId, MsgId), ReceiptKind> = BTreeMap::new();
    for r in &h.records {
        let Event::Device { device, obs } = &r.event else {
            continue;
        };
        let (s, t) = (*device, r.t);
        match obs {
            Observation::Receipt { receipt: rc } => {
                let key = (s, rc.conv, rc.reader, rc.kind);
                let before = marks.get(&key).copied().unwrap_or(0);
                checked += 1;
                if rc.upto < before {
                    violations.push(
                        Violation::new(
                            RECEIPTS,
                            t,
                            format!(
                                "{s} learned {} has {} up to seq {} ({}), after up to seq {before}: receipts went back",
                                rc.reader, rc.conv, rc.upto, tick_name(rc.kind)
                            ),
                        )
                        .device(s)
                        .conv(rc.conv),
                    );
                    continue;
                }
                marks.insert(key, rc.upto);
                let Some(texts) = own.get(&(s, rc.conv)) else {
                    continue;
                };
                for (&seq, &id) in texts.range(before + 1..=rc.upto) {
                    if !owed(rc.reader, rc.conv, seq, s) || !links.owed(rc.reader, id) {
                        continue;
                    }
                    checked += 1;
                    if screens
                        .has_at(rc.kind, rc.reader, rc.conv, seq)
                        .is_some_and(|at| at <= t)
                    {
                        continue;
                    }
                    let fact = match rc.kind {
                        ReceiptKind::Delivered => "had not shown it",
                        ReceiptKind::Read => "had not read it",
                    };
                    violations.push(
                        Violation::new(
                            RECEIPTS,
                            t,
                            format!(
                                "{s} got a {} receipt from {} covering {id} (seq {seq}) at {t} ms, but {} {fact}",
                                tick_name(rc.kind), rc.reader, rc.reader
                            ),
                        )
                        .message(id)
                        .device(rc.reader)
                        .conv(rc.conv),
                    );
                }
            }
            Observation::Ticks {
                id,
                conv,
                seq,
                tick,
            } if composed.contains(id) => {
                checked += 1;
                if let Some(&was) = ticks.get(&(s, *id)) {
                    if *tick < was {
                        violations.push(
                            Violation::new(
                                RECEIPTS,
                                t,
                                format!(
                                    "{id} went back from {} to {} on {s}",
                                    tick_name(was),
                                    tick_name(*tick)
                                ),
                            )
                            .message(*id)
                            .device(s)
                            .conv(*conv),
                        );
                        continue;
                    }
                }
                ticks.insert((s, *id), *tick);
                let users = recipient_users(h, groups, *conv, *seq, s);
                for u in users {
                    let has = h
                        .devices_of(u)
                        .filter_map(|d| screens.has_at(*tick, d, *conv, *seq))
                        .min();
                    if has.is_some_and(|at| at <= t) {
                        continue;
                    }
                    violations.push(
                        Violation::new(
                            RECEIPTS,
                            t,
                            format!(
                                "{s} showed {} on {id} (seq {seq}) at {t} ms, but no device of {u} had {} it",
                                tick_name(*tick),
                                match tick {
                                    ReceiptKind::Delivered => "shown",
                                    ReceiptKind::Read => "read",
                                }
                            ),
                        )
                        .message(*id)
                        .device(s)
                        .conv(*conv),
                    );
                }
            }
            _ => {}
        }
    }

    // Convergence: what every recipient had by the heal (or later) reaches the sender.
    let healed = h.healed_at().unwrap_or(0);
    for ((s, conv), texts) in &own {
        for (&seq, &id) in texts {
            let users = recipient_users(h, groups, *conv, seq, *s);
            if users.is_empty() {
                continue;
            }
            let shown = ticks.get(&(*s, id)).copied();
            for kind in [ReceiptKind::Read, ReceiptKind::Delivered] {
                let Some(at) = screens.all_at(h, kind, &users, *conv, seq) else {
                    continue;
                };
                let due = healed.max(at).saturating_add(bounds.liveness_ms);
                if due > h.end {
                    continue;
                }
                checked += 1;
                if shown.is_none_or(|got| got < kind) {
                    let now = shown.map_or("no ticks", tick_name);
                    violations.push(
                        Violation::new(
                            RECEIPTS,
                            due,
                            format!(
                                "every recipient had {} {id} (seq {seq}) by {at} ms, but {s} still showed {now} at its deadline of {due} ms",
                                match kind {
                                    ReceiptKind::Delivered => "got",
                                    ReceiptKind::Read => "read",
                                }
                            ),
                        )
                        .message(id)
                        .device(*s)
                        .conv(*conv),
                    );
                }
                break;
            }
        }
    }
    if !h.views.is_empty() {
        checked += reads_match_the_screen(h, &changes, &mut violations);
    }
    violations.sort_by_key(|v| v.at);
    Verdict::new(RECEIPTS, violations, checked)
}

/// A phone host takes the plan's actions one at a time, so one due at the same moment as
/// others (or as a timer) reaches its device a millisecond or two late: views are judged with
/// this much room either way.
pub const VIEW_SLACK_MS: Millis = 50;

/// Read marks against what users looked at, taken from the plan ([`History::views`]), not
/// from the devices: a device marks read exactly the texts of others it showed while their
/// chat was open in the foreground (when shown, or when the chat was opened or the app
/// brought back), and no others. A device that lost track of which chat is open (closing the
/// wrong one, reading in the background) reports consistently wrong `Opened` and `Read`, so
/// only the plan can catch it. Returns how many texts it judged.
fn reads_match_the_screen(
    h: &History,
    changes: &std::collections::BTreeSet<MsgId>,
    violations: &mut Vec<Violation>,
) -> usize {
    let looking = Looking::build(h);
    // (device, conv) -> seq -> when shown, for other users' texts.
    let mut theirs: BTreeMap<(DeviceId, ConvId), BTreeMap<Seq, Millis>> = BTreeMap::new();
    // (device, conv) -> (time, read mark), the mark never falling.
    let mut marks: BTreeMap<(DeviceId, ConvId), Vec<(Millis, Seq)>> = BTreeMap::new();
    let mut checked = 0;
    for r in &h.records {
        let Event::Device { device, obs } = &r.event else {
            continue;
        };
        match obs {
            Observation::Displayed { id, conv, seq, .. }
                if id.device.user != device.user && !changes.contains(id) =>
            {
                theirs
                    .entry((*device, *conv))
                    .or_default()
                    .entry(*seq)
                    .or_insert(r.t);
            }
            Observation::Read { conv, upto } => {
                let all = marks.entry((*device, *conv)).or_default();
                let before = all.last().map_or(0, |(_, m)| *m);
                all.push((r.t, before.max(*upto)));
                let Some(shown) = theirs.get(&(*device, *conv)) else {
                    continue;
                };
                for (&seq, &at) in shown.range(before + 1..=*upto) {
                    checked += 1;
                    let from = at.saturating_sub(VIEW_SLACK_MS);
                    if !looking.looked_between(*device, *conv, from, r.t) {
                        violations.push(
                            Violation::new(
                                RECEIPTS,
                                r.t,
                                format!(
                                    "{device} marked seq {seq} of {conv} read at {} ms, but its user never had that chat open in the foreground after it was shown at {at} ms",
                                    r.t
                                ),
                            )
                            .device(*device)
                            .conv(*conv),
                        );
                    }
                }
            }
            _ => {}
        }
    }
    // Everything shown while looked at (or before) is read when the look begins or the text
    // arrives, whichever is later.
    for (&d, looks) in &looking.looked {
        for &(conv, from, until) in looks {
            let Some(shown) = theirs.get(&(d, conv)) else {
                continue;
            };
            let mark_at = |t: Millis| {
                marks.get(&(d, conv)).map_or(0, |all| {
                    let i = all.partition_point(|(at, _)| *at <= t);
                    i.checked_sub(1).map_or(0, |i| all[i].1)
                })
            };
            let until = until.saturating_sub(VIEW_SLACK_MS);
            for (&seq, &at) in shown.iter().filter(|(_, at)| **at < until && **at <= h.end) {
                let due = at.max(from) + VIEW_SLACK_MS;
                checked += 1;
                if mark_at(due) < seq {
                    violations.push(
                        Violation::new(
                            RECEIPTS,
                            due,
                            format!(
                                "{d}'s user was looking at {conv} at {due} ms with seq {seq} on screen (shown at {at} ms), but {d} had not marked it read"
                            ),
                        )
                        .device(d)
                        .conv(conv),
                    );
                    // One per look: the rest follow from the same lapse.
                    break;
                }
            }
        }
    }
    checked
}

/// Receipts owed: (sender, reader, conv, kind) -> seq -> when the reader had it.
type Owed = BTreeMap<(DeviceId, DeviceId, ConvId, ReceiptKind), BTreeMap<Seq, Millis>>;

fn owe(owed: &mut Owed, key: (DeviceId, DeviceId, ConvId, ReceiptKind), seq: Seq, t: Millis) {
    owed.entry(key).or_default().entry(seq).or_insert(t);
}

/// A sender device learns each receipt it is owed within [`RECEIPT_BOUND_MS`] (plus
/// `fetch_extra_ms`, the scenario's slow links) of the later of the reader's showing or reading
/// the text and calm weather: servers calm, both devices connected. Judged where the receipt
/// arrives while both stay connected, and only where the sender was connected when the reader
/// had the text: a receipt for a sender that was away waits for its drain, which
/// [`crate::inbox::drain_latency`] judges. `receipts` sees a receipt that never comes; this
/// sees one that comes only by luck (the reader's next, unrelated mark, the sender's hourly
/// drain) after the mechanism meant to bring it failed.
pub fn receipt_latency(h: &History, fetch_extra_ms: Millis) -> Verdict {
    // A membership change is shown like a text but owed no receipt.
    let changes = h.change_ids();
    let mut weather = Weather::of(h);
    // What each reader device showed of other users' texts: (reader, conv) -> seq -> sender.
    let mut texts: BTreeMap<(DeviceId, ConvId), BTreeMap<Seq, DeviceId>> = BTreeMap::new();
    let mut read_upto: BTreeMap<(DeviceId, ConvId), Seq> = BTreeMap::new();
    // Receipts owed: (sender, reader, conv, kind) -> seq -> when the reader had it.
    let mut owed: Owed = BTreeMap::new();
    let mut violations = Vec::new();
    let mut checked = 0;
    // (sender, reader, conv, kind, seq, judged from, promise)
    type Judged = (DeviceId, DeviceId, ConvId, ReceiptKind, Seq, Millis, Millis);
    let mut judged: Vec<Judged> = Vec::new();
    for r in &h.records {
        let Some((device, obs)) = weather.feed(r) else {
            continue;
        };
        match obs {
            Observation::Displayed { id, conv, seq, .. }
                if id.device.user != device.user && !changes.contains(id) =>
            {
                texts
                    .entry((device, *conv))
                    .or_default()
                    .insert(*seq, id.device);
                owe(
                    &mut owed,
                    (id.device, device, *conv, ReceiptKind::Delivered),
                    *seq,
                    r.t,
                );
                if read_upto.get(&(device, *conv)).is_some_and(|u| *u >= *seq) {
                    owe(
                        &mut owed,
                        (id.device, device, *conv, ReceiptKind::Read),
                        *seq,
                        r.t,
                    );
                }
            }
            Observation::Read { conv, upto } => {
                let before = read_upto.get(&(device, *conv)).copied().unwrap_or(0);
                if *upto <= before {
                    continue;
                }
                read_upto.insert((device, *conv), *upto);
                if let Some(shown) = texts.get(&(device, *conv)) {
                    for (&seq, &s) in shown.range(before + 1..=*upto) {
                        owe(&mut owed, (s, device, *conv, ReceiptKind::Read), seq, r.t);
                    }
                }
            }
            Observation::Receipt { receipt: rc } => {
                let key = (device, rc.reader, rc.conv, rc.kind);
                let Some(pending) = owed.get_mut(&key) else {
                    continue;
                };
                let rest = pending.split_off(&(rc.upto + 1));
                let covered = std::mem::replace(pending, rest);
                judged.clear();
                for (seq, had) in covered {
                    let (Some(calm), Some(s_up), Some(reader_up)) = (
                        weather.servers_calm(),
                        weather.up_since(device),
                        weather.up_since(rc.reader),
                    ) else {
                        continue;
                    };
                    if s_up > had {
                        continue;
                    }
                    let start = had.max(calm).max(reader_up);
                    if start > r.t {
                        continue;
                    }
                    checked += 1;
                    let settled = weather.servers_settled().unwrap_or(Millis::MAX);
                    let bound = if start > had || had < settled {
                        RECEIPT_IN_FLIGHT_BOUND_MS
                    } else {
                        RECEIPT_BOUND_MS
                    } + fetch_extra_ms;
                    judged.push((device, rc.reader, rc.conv, rc.kind, seq, start, bound));
                }
                // One violation per late receipt, for the text it kept waiting most past its
                // promise.
                if let Some(&(s, reader, conv, kind, seq, start, bound)) = judged
                    .iter()
                    .max_by_key(|j| (r.t - j.5).saturating_sub(j.6))
                {
                    let took = r.t - start;
                    if took > bound {
                        violations.push(
                            Violation::new(
                                RECEIPT_LATENCY,
                                r.t,
                                format!(
                                    "{s} learned {reader}'s {} receipt for seq {seq} at {} ms, {took} ms after calm weather with the text on {reader}'s screen began at {start} ms; the promise is {bound} ms ({})",
                                    tick_name(kind),
                                    r.t,
                                    if bound - fetch_extra_ms == RECEIPT_BOUND_MS {
                                        format!("shown in calm weather: receipt delay {RECEIPT_DELAY_MS} + round trip {FETCH_ROUND_TRIP_MS} + the scenario's slow links {fetch_extra_ms}")
                                    } else {
                                        format!("shown before it, or before the fault's backlog was worked off: the larger of the reader's retry {RECEIPT_RETRY_MS} and the shard's push backoff {PUSH_RETRY_MS_MAX} + round trip {FETCH_ROUND_TRIP_MS} + the scenario's slow links {fetch_extra_ms}")
                                    }
                                ),
                            )
                            .device(s)
                            .conv(conv),
                        );
                    }
                }
            }
            _ => {}
        }
    }
    Verdict::new(RECEIPT_LATENCY, violations, checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatsim_system::proto::{Path, Receipt};

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

    fn conv() -> ConvId {
        ConvId::direct(UserId(0), UserId(1))
    }

    fn mid(n: u32) -> MsgId {
        MsgId { device: dev(0), n }
    }

    /// u0 sends text `n` as `seq` (acked at `t`) and u1 shows it at `shown`, if it does.
    fn text(h: &mut History, t: Millis, n: u32, seq: Seq, shown: Option<Millis>) {
        let (id, conv) = (mid(n), conv());
        let body = format!("m{n}").into_bytes();
        h.observe(
            t,
            dev(0),
            Observation::Sent {
                id,
                conv,
                body: body.clone(),
            },
        );
        h.observe(t, dev(0), Observation::Acked { id, conv, seq });
        if let Some(at) = shown {
            let obs = Observation::Displayed {
                id,
                conv,
                seq,
                path: Path::Live,
                body,
                sent_at: 0,
            };
            h.observe(at, dev(1), obs);
        }
    }

    fn receipt(h: &mut History, t: Millis, kind: ReceiptKind, upto: Seq) {
        let receipt = Receipt {
            conv: conv(),
            reader: dev(1),
            kind,
            upto,
        };
        h.observe(t, dev(0), Observation::Receipt { receipt });
    }

    fn ticks(h: &mut History, t: Millis, n: u32, seq: Seq, tick: ReceiptKind) {
        let obs = Observation::Ticks {
            id: mid(n),
            conv: conv(),
            seq,
            tick,
        };
        h.observe(t, dev(0), obs);
    }

    fn read(h: &mut History, t: Millis, upto: Seq) {
        h.observe(t, dev(1), Observation::Read { conv: conv(), upto });
    }

    /// Two texts, shown, read, receipted, ticked, in that order: the truth, on time.
    fn honest() -> History {
        let mut h = History::new(2);
        h.end = 10_000;
        text(&mut h, 10, 0, 1, Some(20));
        text(&mut h, 30, 1, 2, Some(40));
        receipt(&mut h, 300, ReceiptKind::Delivered, 2);
        ticks(&mut h, 300, 0, 1, ReceiptKind::Delivered);
        ticks(&mut h, 300, 1, 2, ReceiptKind::Delivered);
        read(&mut h, 500, 2);
        receipt(&mut h, 700, ReceiptKind::Read, 2);
        ticks(&mut h, 700, 0, 1, ReceiptKind::Read);
        ticks(&mut h, 700, 1, 2, ReceiptKind::Read);
        h
    }

    fn details(v: &Verdict) -> Vec<&str> {
        v.violations.iter().map(|v| v.detail.as_str()).collect()
    }

    #[test]
    fn honest_receipts_pass_and_are_counted() {
        let v = receipts(&honest(), BOUNDS);
        assert!(v.holds, "{:#?}", v.violations);
        // 2 receipts + 4 claims + 4 ticks + 2 convergence judgements.
        assert_eq!(v.checked, 12);
    }

    // ✓✓ for a text the reader never showed is a lie, both as a receipt and as ticks.
    #[test]
    fn delivered_before_shown_is_caught() {
        let mut h = History::new(2);
        h.end = 1_000; // Before any convergence deadline: only the lies are judged.
        text(&mut h, 10, 0, 1, Some(20));
        text(&mut h, 30, 1, 2, Some(900));
        receipt(&mut h, 300, ReceiptKind::Delivered, 2);
        ticks(&mut h, 300, 1, 2, ReceiptKind::Delivered);
        let v = receipts(&h, BOUNDS);
        let d = details(&v);
        assert_eq!(d.len(), 2, "{d:#?}");
        assert!(
            d[0].contains("had not shown it") && d[0].contains("u0.d0#1"),
            "{d:?}"
        );
        assert!(d[1].contains("no device of u1 had shown it"), "{d:?}");
    }

    // A read receipt for a text shown but not yet read is caught; so is one for a text that
    // the reader marked read before it was even on screen.
    #[test]
    fn read_before_read_is_caught() {
        let mut h = History::new(2);
        h.end = 1_000;
        text(&mut h, 10, 0, 1, Some(20));
        text(&mut h, 30, 1, 2, Some(800));
        read(&mut h, 50, 2);
        receipt(&mut h, 300, ReceiptKind::Read, 2);
        let v = receipts(&h, BOUNDS);
        let d = details(&v);
        assert_eq!(d.len(), 1, "{d:#?}");
        assert!(
            d[0].contains("had not read it") && d[0].contains("seq 2"),
            "{d:?}"
        );
    }

    #[test]
    fn ticks_or_marks_going_back_are_caught() {
        let mut h = honest();
        ticks(&mut h, 800, 0, 1, ReceiptKind::Delivered);
        receipt(&mut h, 900, ReceiptKind::Delivered, 1);
        let v = receipts(&h, BOUNDS);
        let d = details(&v);
        assert_eq!(d.len(), 2, "{d:#?}");
        assert!(d[0].contains("went back from read to ✓✓"), "{d:?}");
        assert!(d[1].contains("receipts went back"), "{d:?}");
    }

    // A receipt that never reaches the sender leaves its ticks behind: caught at the deadline
    // after the heal, and not judged when the deadline falls after the end.
    #[test]
    fn receipts_that_never_arrive_are_caught_after_the_heal() {
        let mut h = History::new(2);
        h.end = 10_000;
        text(&mut h, 10, 0, 1, Some(20));
        read(&mut h, 30, 1);
        h.push(2_000, Event::Healed);
        let v = receipts(&h, BOUNDS);
        let d = details(&v);
        assert_eq!(d.len(), 1, "{d:#?}");
        assert!(
            d[0].contains("still showed no ticks at its deadline of 3000 ms"),
            "{d:?}"
        );
        h.end = 2_500;
        assert!(receipts(&h, BOUNDS).holds);
    }

    fn up(h: &mut History, t: Millis, u: u32) {
        let obs = Observation::Connected {
            gateway: 0,
            epoch: 1,
        };
        h.observe(t, dev(u), obs);
    }

    /// Both connected from the start; u1 shows text 0 at 1,000 and reads it at 3,000; the
    /// delivered receipt reaches u0 at `delivered`, the read one at `read_at`.
    fn timed(delivered: Millis, read_at: Millis) -> History {
        let mut h = History::new(2);
        h.end = 30_000;
        up(&mut h, 0, 0);
        up(&mut h, 0, 1);
        text(&mut h, 900, 0, 1, Some(1_000));
        receipt(&mut h, delivered, ReceiptKind::Delivered, 1);
        read(&mut h, 3_000, 1);
        receipt(&mut h, read_at, ReceiptKind::Read, 1);
        h
    }

    #[test]
    fn receipts_within_their_promise_pass_and_a_little_late_are_caught() {
        let promise = RECEIPT_BOUND_MS;
        let v = receipt_latency(&timed(1_000 + promise, 3_000 + promise), 0);
        assert!(v.holds, "{:?}", v.violations);
        assert_eq!(v.checked, 2);
        let v = receipt_latency(&timed(1_001 + promise, 3_000 + promise), 0);
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
        assert!(v.violations[0].detail.contains("✓✓ receipt for seq 1"));
        assert!(v.violations[0].detail.contains("receipt delay 200"));
        let v = receipt_latency(&timed(1_000 + promise, 3_001 + promise), 0);
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
        assert!(v.violations[0].detail.contains("read receipt"));
        // The scenario's slow links widen the promise.
        assert!(receipt_latency(&timed(1_001 + promise, 3_000 + promise), 1).holds);
    }

    #[test]
    fn a_receipt_in_flight_when_a_fault_ends_has_the_retries_promise_and_an_absent_sender_none() {
        use crate::history::Fault;
        use chatsim_system::proto::Host;
        let faulted = |arrives: Millis| {
            let mut h = History::new(2);
            h.end = 30_000;
            up(&mut h, 0, 0);
            up(&mut h, 0, 1);
            h.push(500, Event::Fault(Fault::Kill(Host::Shard(0))));
            text(&mut h, 900, 0, 1, Some(1_000));
            h.push(1_500, Event::Fault(Fault::Restart(Host::Shard(0))));
            receipt(&mut h, arrives, ReceiptKind::Delivered, 1);
            h
        };
        let calm = 1_500 + crate::bounds::RECOVERY_MS;
        let v = receipt_latency(&faulted(calm + RECEIPT_IN_FLIGHT_BOUND_MS), 0);
        assert!(v.holds && v.checked == 1, "{:?}", v.violations);
        let v = receipt_latency(&faulted(calm + RECEIPT_IN_FLIGHT_BOUND_MS + 1), 0);
        assert_eq!(v.violations.len(), 1);
        assert!(v.violations[0].detail.contains("push backoff"));
        // The sender connected only after the text was shown: its receipts come with its
        // drain, which this does not judge.
        let mut h = History::new(2);
        h.end = 30_000;
        up(&mut h, 0, 1);
        text(&mut h, 900, 0, 1, Some(1_000));
        up(&mut h, 5_000, 0);
        receipt(&mut h, 20_000, ReceiptKind::Delivered, 1);
        let v = receipt_latency(&h, 0);
        assert!(v.holds && v.checked == 0);
    }

    #[test]
    fn a_restarted_replicated_storage_is_calm_only_after_its_rebuild() {
        use crate::history::Fault;
        use chatsim_system::proto::Host;
        // Storage restarts at 1,500 and serves again only at 20,000 (a long rebuild).
        let rebuilding = |arrives: Millis, rebuilt: Option<Millis>| {
            let mut h = History::new(2);
            h.end = 60_000;
            h.rebuilt = std::iter::once(5).chain(rebuilt).collect();
            up(&mut h, 0, 0);
            up(&mut h, 0, 1);
            h.push(500, Event::Fault(Fault::Kill(Host::Storage(0))));
            text(&mut h, 900, 0, 1, Some(1_000));
            h.push(1_500, Event::Fault(Fault::Restart(Host::Storage(0))));
            receipt(&mut h, arrives, ReceiptKind::Delivered, 1);
            h
        };
        let calm = 20_000 + crate::bounds::RECOVERY_MS;
        let v = receipt_latency(
            &rebuilding(calm + RECEIPT_IN_FLIGHT_BOUND_MS, Some(20_000)),
            0,
        );
        assert!(
            v.holds && v.checked == 1,
            "judged from the rebuild: {:?}",
            v.violations
        );
        let v = receipt_latency(
            &rebuilding(calm + RECEIPT_IN_FLIGHT_BOUND_MS + 1, Some(20_000)),
            0,
        );
        assert_eq!(v.violations.len(), 1, "late by 1 ms after the rebuild");
        // A rebuild that never ended: the storage never served again, nothing is judged.
        let v = receipt_latency(&rebuilding(50_000, None), 0);
        assert!(v.holds && v.checked == 0, "{:?}", v.violations);
    }

    /// Deadlines past the end: only the reads are judged.
    const PATIENT: Bounds = Bounds {
        liveness_ms: 100_000,
        ..BOUNDS
    };

    /// u1 shows text 0 at 1,000 and reads up to `read_upto` at `read_at`; the plan has u1 open
    /// the chat at `open` (and close it at 5,000).
    fn looked(open: Millis, read_at: Millis, read_upto: Seq) -> History {
        use crate::history::View;
        let mut h = History::new(2);
        h.end = 10_000;
        text(&mut h, 900, 0, 1, Some(1_000));
        text(&mut h, 950, 1, 2, Some(1_100));
        read(&mut h, read_at, read_upto);
        h.views = vec![
            (open, dev(1), View::Open(conv())),
            (5_000, dev(1), View::Close(conv())),
        ];
        h
    }

    #[test]
    fn read_marks_are_judged_against_the_plans_open_chat_not_the_devices_word() {
        // Opened at 2,000 and both texts marked read then: the truth.
        let v = receipts(&looked(2_000, 2_000, 2), PATIENT);
        assert!(v.holds, "{:?}", v.violations);
        // Marked read with the chat never open after the texts were shown.
        let v = receipts(&looked(6_000, 2_000, 2), PATIENT);
        assert!(!v.holds);
        assert!(v.violations[0].detail.contains("never had that chat open"));
        // Open from 2,000, but only seq 1 marked read (a device that lost track of the open
        // chat): seq 2 was on screen, unread.
        let v = receipts(&looked(2_000, 2_000, 1), PATIENT);
        assert!(!v.holds);
        assert!(v.violations[0].detail.contains("seq 2 on screen"));
        // Marked a moment late: within the phone host's slack, then past it.
        assert!(receipts(&looked(2_000, 2_000 + VIEW_SLACK_MS, 2), PATIENT).holds);
        assert!(!receipts(&looked(2_000, 2_001 + VIEW_SLACK_MS, 2), PATIENT).holds);
    }

    #[test]
    fn closing_another_chat_or_going_to_the_background_is_replayed_as_a_device_would() {
        use crate::history::View;
        let other = ConvId::direct(UserId(1), UserId(5));
        // Closing another chat leaves this one open: a text shown at 3,000 is read at once;
        // closing this one at 2,500 would make that read a lie.
        let closing = |c: ConvId| {
            let mut h = looked(2_000, 2_000, 2);
            h.views.insert(1, (2_500, dev(1), View::Close(c)));
            text(&mut h, 2_900, 2, 3, Some(3_000));
            read(&mut h, 3_000, 3);
            receipts(&h, PATIENT)
        };
        assert!(closing(other).holds);
        assert!(!closing(conv()).holds);
        // In the background from 1,500 to 4,000: opening at 2,000 is not looking until 4,000.
        let mut h = looked(2_000, 3_000, 2);
        h.views.insert(0, (1_500, dev(1), View::Background));
        h.views.insert(2, (4_000, dev(1), View::Foreground));
        assert!(!receipts(&h, PATIENT).holds);
        let mut h = looked(2_000, 4_000, 2);
        h.views.insert(0, (1_500, dev(1), View::Background));
        h.views.insert(2, (4_000, dev(1), View::Foreground));
        assert!(receipts(&h, PATIENT).holds);
    }
}
