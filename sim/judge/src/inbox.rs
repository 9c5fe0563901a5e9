//! `inbox_drained`: after the heal, an inbox entry its device has taken is deleted. An entry
//! left behind costs storage forever and is handed out again at every drain; enough of them
//! and a reconnect storm becomes a storm of re-drains.
//!
//! The history does not see storage, so the engine lists what the inboxes still hold when the
//! run ends ([`History::inbox_left`]); a device took an entry when it showed the message or
//! dropped a copy of it as a duplicate (it acks both).

use crate::checkers::{Bounds, Verdict, Violation};
use crate::history::{Event, History};
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
}
