//! `authz`: who may post to and read a conversation, that nobody posts as someone else, and
//! that what a screen shows is what its author wrote; attacked by compromised devices
//! ([`chatsim_system::attack`]). Judged
//! from what devices saw: membership comes from the changes devices reported
//! ([`History::memberships`]), so a server that lets the wrong user in is caught by what that
//! user's phone showed or was acked, not by asking the server.

use crate::checkers::{Verdict, Violation};
use crate::history::{Event, History, Memberships};
use chatsim_system::proto::{ConvId, DeviceId, MsgId, Seq, UserId};
use chatsim_system::Observation;
use std::collections::{BTreeMap, BTreeSet};

/// Name of the authorization invariant.
pub const AUTHZ: &str = "authz";

/// Three promises, one violation per breach:
/// - a group post is acked only to a member of the group when its sequence number was assigned
///   (a membership change by a member, or the change that creates the group);
/// - a device shows a group message only if its user was a member then, or was added by it;
/// - every message a device shows was sent by the device its id names (no one posts as
///   another user).
pub fn authz(h: &History) -> Verdict {
    authz_in(h, &h.memberships())
}

/// [`authz`] with the memberships the other checkers share.
pub(crate) fn authz_in(h: &History, groups: &Memberships) -> Verdict {
    let sent = h.composed();
    let mut violations = Vec::new();
    let mut checked = 0;
    let mut reported: BTreeSet<(MsgId, String)> = BTreeSet::new();
    for r in &h.records {
        let Event::Device { device, obs } = &r.event else {
            continue;
        };
        match obs {
            Observation::Acked { id, conv, seq } if conv.is_group() => {
                checked += 1;
                let before = groups.before(*conv, *seq);
                let creates = before.is_empty() && groups.change_at(*conv, *seq).is_some();
                if !creates && !before.contains(&id.device.user) {
                    violations.push(
                        Violation::new(
                            AUTHZ,
                            r.t,
                            format!(
                                "{id} from {} acked as seq {seq} in {conv}, but {} was not a member then",
                                id.device, id.device.user
                            ),
                        )
                        .message(*id)
                        .device(*device)
                        .conv(*conv),
                    );
                }
            }
            Observation::Displayed { id, conv, seq, .. } => {
                checked += 1;
                if !sent.contains(id) && reported.insert((*id, "forged".into())) {
                    violations.push(
                        Violation::new(
                            AUTHZ,
                            r.t,
                            format!(
                                "{device} shows {id} as sent by {}, which never sent it",
                                id.device
                            ),
                        )
                        .message(*id)
                        .device(*device)
                        .conv(*conv),
                    );
                }
                if conv.is_group() {
                    let user = device.user;
                    let member = groups.before(*conv, *seq).contains(&user)
                        || groups
                            .change_at(*conv, *seq)
                            .is_some_and(|m| m.contains(&user));
                    if !member {
                        violations.push(
                            Violation::new(
                                AUTHZ,
                                r.t,
                                format!(
                                    "{device} shows {id} (seq {seq} of {conv}) though {user} was not a member then"
                                ),
                            )
                            .message(*id)
                            .device(*device)
                            .conv(*conv),
                        );
                    }
                }
            }
            _ => {}
        }
    }
    // Every member list a device reported must be the one the users' changes make: a server
    // that computes membership wrongly (drops a member, keeps a removed one) shows here.
    for (t, device, conv, seq, reported) in h.reported_memberships() {
        checked += 1;
        let expected = groups.change_at(conv, seq);
        if expected.is_some_and(|e| e != reported) {
            violations.push(
                Violation::new(
                    AUTHZ,
                    t,
                    format!(
                        "{device} was told the members of {conv} at seq {seq} are {}, but the changes users asked for make them {}",
                        names(reported),
                        names(expected.unwrap_or_default())
                    ),
                )
                .device(device)
                .conv(conv),
            );
        }
    }
    outsiders(h, groups, &mut violations, &mut checked);
    content(h, &mut violations, &mut checked);
    Verdict::new(AUTHZ, violations, checked)
}

/// Whether `user` belonged to `conv` when `seq` was assigned (or was added by it).
fn member_at(groups: &Memberships, conv: ConvId, seq: Seq, user: UserId) -> bool {
    if !conv.is_group() {
        return conv.direct_peer(user).is_some();
    }
    groups.before(conv, seq).contains(&user)
        || groups
            .change_at(conv, seq)
            .is_some_and(|m| m.contains(&user))
}

/// What a compromised device must never get out of the servers: an ack for a message under
/// someone else's name, a post into a chat it is not in, a conversation's messages or length
/// while not a member, a receipt passed on from outside the chat. One violation per
/// (device or message, conversation, kind), at the first time it shows.
fn outsiders(
    h: &History,
    groups: &Memberships,
    violations: &mut Vec<Violation>,
    checked: &mut usize,
) {
    let mut reported: BTreeSet<(String, ConvId, &str)> = BTreeSet::new();
    let mut flag = |key: String, conv: ConvId, kind: &'static str, v: Violation| {
        if reported.insert((key, conv, kind)) {
            violations.push(v);
        }
    };
    for r in &h.records {
        let Event::Device { device, obs } = &r.event else {
            continue;
        };
        let d = *device;
        // A message that reached this device: who it names, and whether the device may hold it.
        let holds = match obs {
            Observation::Acked { id, conv, seq } => {
                *checked += 1;
                if id.device != d {
                    let detail = format!(
                        "{d} was acked {id} as seq {seq} in {conv}, a message under {}'s name",
                        id.device
                    );
                    let v = Violation::new(AUTHZ, r.t, detail)
                        .message(*id)
                        .device(d)
                        .conv(*conv);
                    flag(id.to_string(), *conv, "acked-forged", v);
                }
                Some((*id, *conv, *seq, false))
            }
            Observation::Displayed { id, conv, seq, .. } => Some((*id, *conv, *seq, false)),
            Observation::Undecryptable { id, conv, seq }
            | Observation::DuplicateDropped { id, conv, seq, .. }
            | Observation::Fetched { id, conv, seq } => Some((*id, *conv, *seq, true)),
            Observation::Pulled { conv, last } => {
                *checked += 1;
                let member = groups
                    .before(*conv, last.saturating_add(1))
                    .contains(&d.user);
                if !member {
                    let detail = format!(
                        "{d} was told {conv} reaches seq {last}, though {} was not a member",
                        d.user
                    );
                    let v = Violation::new(AUTHZ, r.t, detail).device(d).conv(*conv);
                    flag(d.to_string(), *conv, "pulled", v);
                }
                None
            }
            Observation::Receipt { receipt } if !receipt.conv.is_group() => {
                *checked += 1;
                let conv = receipt.conv;
                if conv.direct_peer(receipt.reader.user).is_none() {
                    let detail = format!(
                        "{d} was shown a {:?} receipt in {conv} from {}, who is not in it",
                        receipt.kind, receipt.reader
                    );
                    let v = Violation::new(AUTHZ, r.t, detail).device(d).conv(conv);
                    flag(receipt.reader.to_string(), conv, "receipt", v);
                }
                None
            }
            _ => None,
        };
        let Some((id, conv, seq, unseen)) = holds else {
            continue;
        };
        *checked += 1;
        if !conv.is_group() && conv.direct_peer(id.device.user).is_none() {
            let detail = format!(
                "{id} reached {d} in {conv}, posted by {}, who is not in it",
                id.device
            );
            let v = Violation::new(AUTHZ, r.t, detail)
                .message(id)
                .device(d)
                .conv(conv);
            flag(id.to_string(), conv, "posted-in", v);
        }
        // A group display by a non-member is judged above with its sequence number; the rest of
        // what reached an outsider (a direct chat's messages, or any copy it could not open or
        // dropped) is judged here.
        let judged_above = conv.is_group() && !unseen;
        if !judged_above && !member_at(groups, conv, seq, d.user) {
            let detail = format!(
                "{id} (seq {seq} of {conv}) reached {d}, though {} was not in {conv} then",
                d.user
            );
            let v = Violation::new(AUTHZ, r.t, detail)
                .message(id)
                .device(d)
                .conv(conv);
            flag(d.to_string(), conv, "read-by", v);
        }
    }
}

/// Nobody is shown other words than a message's author wrote: a text from an honest device
/// shows as it was composed, and a text from a compromised one (which may send anything under
/// its own ids) shows the same everywhere, so a reused id never rewrites what one screen shows.
fn content(h: &History, violations: &mut Vec<Violation>, checked: &mut usize) {
    let mut attackers: BTreeSet<DeviceId> = BTreeSet::new();
    let mut composed: BTreeMap<MsgId, &[u8]> = BTreeMap::new();
    for r in &h.records {
        match &r.event {
            Event::Device {
                device,
                obs: Observation::Attacked { .. },
            } => {
                attackers.insert(*device);
            }
            Event::Device {
                device,
                obs: Observation::Sent { id, body, .. },
            } if id.device == *device => {
                composed.entry(*id).or_insert(body.as_slice());
            }
            _ => {}
        }
    }
    // A membership change shows its description, which each phone words for itself.
    let changes = h.change_ids();
    let mut first_shown: BTreeMap<MsgId, (&[u8], DeviceId)> = BTreeMap::new();
    let mut reported: BTreeSet<MsgId> = BTreeSet::new();
    for r in &h.records {
        let Event::Device {
            device,
            obs: Observation::Displayed { id, conv, body, .. },
        } = &r.event
        else {
            continue;
        };
        if changes.contains(id) {
            continue;
        }
        *checked += 1;
        let (reference, whose) = match composed.get(id) {
            Some(sent) if !attackers.contains(&id.device) => {
                (*sent, format!("{} wrote", id.device))
            }
            _ => {
                let (first, on) = *first_shown.entry(*id).or_insert((body.as_slice(), *device));
                (first, format!("{on} showed"))
            }
        };
        if body.as_slice() != reference && reported.insert(*id) {
            let detail = format!(
                "{device} shows {id} as {:?}, but {whose} {:?}",
                String::from_utf8_lossy(body),
                String::from_utf8_lossy(reference)
            );
            violations.push(
                Violation::new(AUTHZ, r.t, detail)
                    .message(*id)
                    .device(*device)
                    .conv(*conv),
            );
        }
    }
}

fn names(users: &[chatsim_system::proto::UserId]) -> String {
    let shown: Vec<String> = users.iter().take(8).map(ToString::to_string).collect();
    match users.len().saturating_sub(shown.len()) {
        0 => format!("[{}]", shown.join(",")),
        more => format!("[{} +{more}]", shown.join(",")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatsim_system::proto::{ConvId, DeviceId, GroupOp, Path, UserId};

    fn dev(u: u32) -> DeviceId {
        DeviceId::primary(UserId(u))
    }

    fn shown(h: &mut History, t: u64, on: u32, id: MsgId, seq: u64) {
        let conv = ConvId::group(1);
        let obs = Observation::Displayed {
            id,
            conv,
            seq,
            path: Path::Live,
            body: b"x".to_vec(),
            sent_at: 0,
        };
        h.observe(t, dev(on), obs);
    }

    /// Group 1 created by u0 with u1 at seq 1; u1 removed at seq 2.
    fn group() -> History {
        let g = ConvId::group(1);
        let mut h = History::new(4);
        let members = |m: &[u32]| m.iter().map(|u| UserId(*u)).collect::<Vec<_>>();
        let create = MsgId {
            device: dev(0),
            n: 0,
        };
        let remove = MsgId {
            device: dev(0),
            n: 1,
        };
        let ops = [
            GroupOp::Create {
                members: members(&[1]),
            },
            GroupOp::Remove { user: UserId(1) },
        ];
        for ((t, id, seq, m), op) in [
            (1, create, 1, members(&[0, 1])),
            (2, remove, 2, members(&[0])),
        ]
        .into_iter()
        .zip(ops)
        {
            h.observe(
                t,
                dev(0),
                Observation::Sent {
                    id,
                    conv: g,
                    body: vec![],
                },
            );
            h.observe(t, dev(0), Observation::ChangeAsked { id, conv: g, op });
            h.observe(t, dev(0), Observation::Acked { id, conv: g, seq });
            h.observe(
                t,
                dev(0),
                Observation::MembersChanged {
                    conv: g,
                    seq,
                    members: m,
                },
            );
        }
        h
    }

    // The clean story passes: the creator's changes are acked, the removed member sees its
    // own removal.
    #[test]
    fn members_posting_and_reading_pass() {
        let mut h = group();
        shown(
            &mut h,
            3,
            1,
            MsgId {
                device: dev(0),
                n: 1,
            },
            2,
        );
        let v = authz(&h);
        assert!(v.holds, "{:?}", v.violations);
        // 2 acks, 1 display, 2 member lists; then who was acked and who holds what (2 acks
        // twice, the display once); the display is a change, whose words are not compared.
        assert_eq!(v.checked, 10, "5 membership checks and 5 outsider checks");
    }

    // A member list the server computed wrongly (it kept u1 after u1's removal) is caught
    // against the changes users asked for, and the judges' recipients follow the users.
    #[test]
    fn a_membership_the_server_got_wrong_is_caught() {
        let g = ConvId::group(1);
        let mut h = group();
        let wrong = vec![UserId(0), UserId(1)];
        h.observe(
            3,
            dev(2),
            Observation::MembersChanged {
                conv: g,
                seq: 2,
                members: wrong,
            },
        );
        let v = authz(&h);
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
        assert!(
            v.violations[0].detail.contains("make them [u0]"),
            "{}",
            v.violations[0].detail
        );
        let m = h.memberships();
        assert_eq!(m.before(g, 3), &[UserId(0)]);
        assert_eq!(m.change_at(g, 1), Some(&[UserId(0), UserId(1)][..]));
    }

    // A post acked to a removed member, a message shown to one, and a message nobody sent
    // are each caught.
    #[test]
    fn non_member_posts_reads_and_forgeries_are_caught() {
        let g = ConvId::group(1);
        let mut h = group();
        let late = MsgId {
            device: dev(1),
            n: 0,
        };
        h.observe(
            5,
            dev(1),
            Observation::Sent {
                id: late,
                conv: g,
                body: b"still here".to_vec(),
            },
        );
        h.observe(
            6,
            dev(1),
            Observation::Acked {
                id: late,
                conv: g,
                seq: 3,
            },
        );
        let v = authz(&h);
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
        assert!(v.violations[0].detail.contains("was not a member then"));

        let mut h = group();
        let text = MsgId {
            device: dev(0),
            n: 2,
        };
        h.observe(
            7,
            dev(0),
            Observation::Sent {
                id: text,
                conv: g,
                body: b"x".to_vec(),
            },
        );
        shown(&mut h, 8, 1, text, 3);
        let v = authz(&h);
        assert_eq!(v.violations.len(), 1, "{:?}", v.violations);
        assert_eq!(v.violations[0].device.as_deref(), Some("u1.d0"));

        let mut h = group();
        let forged = MsgId {
            device: dev(2),
            n: 9,
        };
        shown(&mut h, 9, 0, forged, 1);
        let v = authz(&h);
        assert!(
            v.violations
                .iter()
                .any(|x| x.detail.contains("never sent it")),
            "{:?}",
            v.violations
        );
    }

    fn detail_of(h: &History) -> Vec<String> {
        authz(h).violations.into_iter().map(|v| v.detail).collect()
    }

    fn has(h: &History, needle: &str) -> bool {
        let d = detail_of(h);
        assert!(
            d.iter().any(|x| x.contains(needle)),
            "{needle:?} not in {d:?}"
        );
        true
    }

    // A compromised device's haul, each kind on its own: an ack under another device's name,
    // a post into a chat of two others, a chat's message reaching an outsider, a group's length
    // told to a non-member, a receipt passed on from outside the chat.
    #[test]
    fn what_an_outsider_gets_out_of_the_servers_is_caught() {
        let direct = ConvId::direct(UserId(0), UserId(1));
        let foreign = |n| MsgId { device: dev(2), n };
        let mine = MsgId {
            device: dev(0),
            n: 0,
        };

        let mut h = History::new(4);
        let acked = Observation::Acked {
            id: foreign(9),
            conv: ConvId::direct(UserId(0), UserId(3)),
            seq: 1,
        };
        h.observe(1, dev(0), acked);
        assert!(has(&h, "a message under u2.d0's name"));

        let mut h = History::new(4);
        let unreadable = Observation::Undecryptable {
            id: foreign(1),
            conv: direct,
            seq: 3,
        };
        h.observe(1, dev(1), unreadable);
        assert!(has(&h, "posted by u2.d0, who is not in it"));

        let mut h = History::new(4);
        let fetched = Observation::Fetched {
            id: mine,
            conv: direct,
            seq: 1,
        };
        h.observe(1, dev(2), fetched);
        assert!(has(&h, "reached u2.d0, though u2 was not in c(u0,u1) then"));

        let mut h = group();
        let pulled = Observation::Pulled {
            conv: ConvId::group(1),
            last: 2,
        };
        h.observe(3, dev(3), pulled.clone());
        assert!(has(
            &h,
            "u3.d0 was told g1 reaches seq 2, though u3 was not a member"
        ));
        // The removed member was a member until seq 2: told seq 1, fine; told seq 2, not.
        let mut h = group();
        let early = Observation::Pulled {
            conv: ConvId::group(1),
            last: 1,
        };
        h.observe(3, dev(1), early);
        assert!(authz(&h).holds, "{:?}", detail_of(&h));
        h.observe(4, dev(1), pulled);
        assert!(has(&h, "u1.d0 was told g1 reaches seq 2"));

        let mut h = History::new(4);
        let receipt = |reader| Observation::Receipt {
            receipt: chatsim_system::proto::Receipt {
                conv: direct,
                reader,
                kind: chatsim_system::proto::ReceiptKind::Read,
                upto: 5,
            },
        };
        h.observe(1, dev(0), receipt(dev(1)));
        assert!(authz(&h).holds, "a member's receipt passes");
        h.observe(2, dev(0), receipt(dev(2)));
        assert!(has(
            &h,
            "a Read receipt in c(u0,u1) from u2.d0, who is not in it"
        ));
    }

    // A screen shows what the author wrote: an honest sender's text altered on the way is
    // caught against its Sent, and a compromised sender's id shown with two texts on two
    // screens is caught against the first.
    #[test]
    fn other_words_than_the_author_wrote_are_caught() {
        let direct = ConvId::direct(UserId(0), UserId(1));
        let show = |h: &mut History, t, on: DeviceId, id: MsgId, body: &[u8]| {
            let obs = Observation::Displayed {
                id,
                conv: direct,
                seq: 1,
                path: Path::Live,
                body: body.to_vec(),
                sent_at: 0,
            };
            h.observe(t, on, obs);
        };
        let id = MsgId {
            device: dev(0),
            n: 0,
        };
        let companion = DeviceId {
            user: UserId(1),
            index: 1,
        };
        let composed = |h: &mut History, body: &[u8]| {
            let sent = Observation::Sent {
                id,
                conv: direct,
                body: body.to_vec(),
            };
            h.observe(1, dev(0), sent);
        };
        let mut h = History::with_devices(2, 2);
        composed(&mut h, b"hello");
        show(&mut h, 2, dev(1), id, b"hello");
        assert!(authz(&h).holds, "{:?}", detail_of(&h));
        show(&mut h, 3, companion, id, b"HELLO");
        assert!(has(&h, "but u0.d0 wrote \"hello\""));

        let mut h = History::with_devices(2, 2);
        let attack = Observation::Attacked {
            attack: chatsim_system::attack::Attack::ReuseId,
        };
        h.observe(1, dev(0), attack);
        composed(&mut h, b"first");
        // A compromised sender may change its own words before anyone saw them...
        show(&mut h, 2, dev(1), id, b"second");
        assert!(authz(&h).holds, "{:?}", detail_of(&h));
        // ...but not what one screen shows against another.
        show(&mut h, 3, companion, id, b"third");
        assert!(has(&h, "but u1.d0 showed \"second\""));
    }
}
