//! `receipts`: ✓✓ and read ticks tell the truth, never go back, and catch up after the heal.
//!
//! Judged from what devices saw, never from the servers' marks: a reader's screen says what it
//! showed (`Displayed`) and what its user read (`Read`); a sender's screen says which receipts
//! it learned (`Receipt`, per reader device) and which ticks it drew (`Ticks`, aggregated over
//! the recipient users). Who was owed a message comes from [`History::memberships`], rebuilt
//! from the changes users asked for.

use crate::checkers::{Bounds, Verdict, Violation};
use crate::history::{Event, History, Links, Memberships};
use chatsim_system::proto::{ConvId, DeviceId, Millis, MsgId, ReceiptKind, Seq, UserId};
use chatsim_system::Observation;
use std::collections::BTreeMap;

/// Name of the receipts invariant.
pub const RECEIPTS: &str = "receipts";

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
    // Each sender device's texts by conversation and seq, as its ✓ placed them.
    let mut own: BTreeMap<(DeviceId, ConvId), BTreeMap<Seq, MsgId>> = BTreeMap::new();
    for r in &h.records {
        if let Event::Device {
            device,
            obs: Observation::Acked { id, conv, seq },
        } = &r.event
        {
            if id.device == *device && !changes.contains(id) {
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
            } => {
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
    violations.sort_by_key(|v| v.at);
    Verdict::new(RECEIPTS, violations, checked)
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
}
