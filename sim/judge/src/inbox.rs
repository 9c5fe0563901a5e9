//! `inbox_drained`: after the heal, an inbox entry its device has taken is deleted. An entry
//! left behind costs storage forever and is handed out again at every drain; enough of them
//! and a reconnect storm becomes a storm of re-drains.
//!
//! The history does not see storage, so the engine lists what the inboxes still hold when the
//! run ends ([`History::inbox_left`]); a device took an entry when it showed the message or
//! dropped a copy of it as a duplicate (it acks both).

use crate::bounds::{Weather, FETCH_ROUND_TRIP_MS};
use crate::checkers::{Bounds, Verdict, Violation};
use crate::history::{Event, History};
use chatsim_system::limits::DRAIN_RETRY_MS;
use chatsim_system::proto::{ConvId, DeviceId, Millis, Seq};
use chatsim_system::Observation;
use std::collections::BTreeMap;

/// Name of the inbox invariant.
pub const INBOX_DRAINED: &str = "inbox_drained";

/// No inbox entry outlives its device's taking of it by more than `bounds.liveness_ms` after
/// the heal: each entry left at the end is a violation if its device showed (or dropped as a
/// duplicate) that message early enough that the deletion was due before the run ended.
/// `checked` counts the entries the device took (left or not judged as "taken").
pub fn inbox_drained(h: &History, bounds: Bounds) -> Verdict {
    let healed = h.healed_at().unwrap_or(0);
    // (device, conversation, seq) -> when the device last took it.
    let mut taken: BTreeMap<(DeviceId, ConvId, Seq), Millis> = BTreeMap::new();
    for r in &h.records {
        let Event::Device { device, obs } = &r.event else {
            continue;
        };
        match obs {
            Observation::Displayed { conv, seq, .. }
            | Observation::DuplicateDropped { conv, seq, .. } => {
                taken.insert((*device, *conv, *seq), r.t);
            }
            _ => {}
        }
    }
    let mut violations = Vec::new();
    for &(device, conv, seq) in &h.inbox_left {
        let Some(&t) = taken.get(&(device, conv, seq)) else {
            continue;
        };
        let due = t.max(healed) + bounds.liveness_ms;
        if due <= h.end {
            violations.push(
                Violation::new(
                    INBOX_DRAINED,
                    due,
                    format!(
                        "{device} took seq {seq} of {conv} at {t} ms, but its inbox entry was still there at the end ({} ms)",
                        h.end
                    ),
                )
                .device(device)
                .conv(conv),
            );
        }
    }
    Verdict::new(INBOX_DRAINED, violations, taken.len())
}

/// Name of the drain-latency bound: a device that connects has its backlog within as many
/// round trips as it has pages.
pub const DRAIN_LATENCY: &str = "drain_latency";

/// A device that connects drains its inbox one page of `inbox_page` entries a round trip
/// ([`FETCH_ROUND_TRIP_MS`], plus the scenario's slow links), asking for the next page the
/// moment one arrives; so its drain completes within a round trip per page, plus one for the
/// page that says there is no more, of its connecting (of calm weather, plus
/// [`DRAIN_RETRY_MS`] for the re-asking, when the servers calmed down mid-drain). The history
/// does not see the inbox, so the pages are counted from above: everything the device shows,
/// drops as a duplicate or learns of a membership change between connecting and the drain's
/// end, and every number of the gaps it meets (held back behind them). Judged where the device
/// stays connected to the end of the drain. `liveness` sees a backlog that never arrives;
/// this sees one paged at the retry timer's pace instead of the round trip's.
pub fn drain_latency(h: &History, fetch_extra_ms: Millis, inbox_page: u32) -> Verdict {
    let round_trip = FETCH_ROUND_TRIP_MS + fetch_extra_ms;
    let page = u64::from(inbox_page.max(1));
    let mut weather = Weather::of(h);
    // Drains under way: device -> (connected at, entries counted so far).
    let mut draining: BTreeMap<DeviceId, (Millis, u64)> = BTreeMap::new();
    let mut violations = Vec::new();
    let mut checked = 0;
    for r in &h.records {
        let Some((device, obs)) = weather.feed(r) else {
            continue;
        };
        let entries = match obs {
            Observation::Connected { .. } => {
                draining.insert(device, (r.t, 0));
                continue;
            }
            Observation::Disconnected { .. } => {
                draining.remove(&device);
                continue;
            }
            Observation::Displayed { .. }
            | Observation::DuplicateDropped { .. }
            | Observation::MembersChanged { .. } => 1,
            Observation::GapDetected { from, to, .. } => (to + 1).saturating_sub(*from),
            Observation::DrainComplete => {
                let Some((connected, entries)) = draining.remove(&device) else {
                    continue;
                };
                let (Some(calm), Some(since)) = (weather.servers_calm(), weather.up_since(device))
                else {
                    continue;
                };
                let start = connected.max(calm).max(since);
                if start > r.t {
                    continue;
                }
                checked += 1;
                let pages = entries.div_ceil(page) + 1;
                let retry = if start > connected { DRAIN_RETRY_MS } else { 0 };
                let bound = retry + pages * round_trip;
                let took = r.t - start;
                if took > bound {
                    violations.push(
                        Violation::new(
                            DRAIN_LATENCY,
                            r.t,
                            format!(
                                "{device} connected at {connected} ms and finished its drain at {} ms, {took} ms after calm weather began at {start} ms; the promise is {bound} ms ({pages} page(s) of {page} for at most {entries} entries, a round trip each of {FETCH_ROUND_TRIP_MS} + the scenario's slow links {fetch_extra_ms}, + a retry of {retry})",
                                r.t
                            ),
                        )
                        .device(device),
                    );
                }
                continue;
            }
            _ => continue,
        };
        if let Some((_, n)) = draining.get_mut(&device) {
            *n += entries;
        }
    }
    Verdict::new(DRAIN_LATENCY, violations, checked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Record;
    use chatsim_system::proto::Path;
    use chatsim_system::proto::{MsgId, UserId};

    const BOUNDS: Bounds = Bounds {
        liveness_ms: 1_000,
        ack_p50_ms: 1_000,
        fetch_extra_ms: 0,
        fetch_max: chatsim_system::limits::GAP_FETCH_SEQS_MAX,
        inbox_page: chatsim_system::limits::INBOX_PAGE_ENTRIES,
    };

    fn shown_at(t: Millis, device: DeviceId, conv: ConvId, seq: Seq) -> Record {
        let sender = DeviceId {
            user: UserId(0),
            index: 0,
        };
        Record {
            t,
            event: Event::Device {
                device,
                obs: Observation::Displayed {
                    id: MsgId {
                        device: sender,
                        n: seq as u32,
                    },
                    conv,
                    seq,
                    path: Path::Inbox,
                    body: format!("m{seq}").into_bytes(),
                    sent_at: 0,
                },
            },
        }
    }

    fn history(left: Vec<(DeviceId, ConvId, Seq)>) -> History {
        let d = DeviceId {
            user: UserId(1),
            index: 0,
        };
        let conv = ConvId::direct(UserId(0), UserId(1));
        let mut h = History::new(2);
        h.records.push(shown_at(100, d, conv, 1));
        h.records.push(shown_at(4_500, d, conv, 2));
        h.end = 5_000;
        h.inbox_left = left;
        h
    }

    #[test]
    fn an_entry_left_long_after_its_device_took_it_is_caught() {
        let d = DeviceId {
            user: UserId(1),
            index: 0,
        };
        let conv = ConvId::direct(UserId(0), UserId(1));
        let v = inbox_drained(&history(vec![(d, conv, 1)]), BOUNDS);
        assert!(!v.holds);
        assert_eq!(v.violations.len(), 1);
        assert_eq!(v.violations[0].at, Some(1_100));
        assert!(v.violations[0].detail.contains("seq 1"));
    }

    #[test]
    fn an_empty_inbox_a_recent_take_and_an_untaken_entry_all_pass() {
        let d = DeviceId {
            user: UserId(1),
            index: 0,
        };
        let other = DeviceId {
            user: UserId(0),
            index: 0,
        };
        let conv = ConvId::direct(UserId(0), UserId(1));
        assert!(inbox_drained(&history(vec![]), BOUNDS).holds);
        // Taken 500 ms before the end: the deletion is not due yet.
        assert!(inbox_drained(&history(vec![(d, conv, 2)]), BOUNDS).holds);
        // Never taken by its device (it stayed offline): the entry must stay.
        let v = inbox_drained(&history(vec![(other, conv, 1)]), BOUNDS);
        assert!(v.holds);
        assert_eq!(v.checked, 2);
    }

    /// `d` connects at 1,000 and shows `n` texts, then its drain completes at `done`.
    fn drain(n: u64, done: Millis) -> History {
        let d = DeviceId {
            user: UserId(1),
            index: 0,
        };
        let conv = ConvId::direct(UserId(0), UserId(1));
        let mut h = History::new(2);
        h.end = 60_000;
        let obs = Observation::Connected {
            gateway: 0,
            epoch: 1,
        };
        h.observe(1_000, d, obs);
        for seq in 1..=n {
            h.records.push(shown_at(1_001, d, conv, seq));
        }
        h.observe(done, d, Observation::DrainComplete);
        h
    }

    #[test]
    fn a_drain_within_a_round_trip_a_page_passes_and_a_little_late_is_caught() {
        // 40 entries in pages of 32: two pages and the empty answer.
        let promise = 3 * FETCH_ROUND_TRIP_MS;
        let v = drain_latency(&drain(40, 1_000 + promise), 0, 32);
        assert!(v.holds && v.checked == 1, "{:?}", v.violations);
        let v = drain_latency(&drain(40, 1_001 + promise), 0, 32);
        assert_eq!(v.violations.len(), 1);
        assert!(v.violations[0].detail.contains("3 page(s) of 32"));
        // Pages of one entry: 41 round trips.
        assert!(drain_latency(&drain(40, 1_000 + 41 * FETCH_ROUND_TRIP_MS), 0, 1).holds);
        assert!(!drain_latency(&drain(40, 1_001 + 41 * FETCH_ROUND_TRIP_MS), 0, 1).holds);
        // A page asked again only at the retry timer is what this exists to see.
        let paced = 1_000 + 2 * DRAIN_RETRY_MS;
        assert!(!drain_latency(&drain(40, paced), 0, 32).holds);
    }
}
