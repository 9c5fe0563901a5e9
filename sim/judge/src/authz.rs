//! `authz`: who may post to and read a group, and that nobody posts as someone else. Judged
//! from what devices saw: membership comes from the changes devices reported
//! ([`History::memberships`]), so a server that lets the wrong user in is caught by what that
//! user's phone showed or was acked, not by asking the server.

use crate::checkers::{Verdict, Violation};
use crate::history::{Event, History, Memberships};
use chatsim_system::proto::MsgId;
use chatsim_system::Observation;
use std::collections::BTreeSet;

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
    let sent: BTreeSet<MsgId> = h
        .records
        .iter()
        .filter_map(|r| match &r.event {
            Event::Device {
                device,
                obs: Observation::Sent { id, .. },
            } if id.device == *device => Some(*id),
            _ => None,
        })
        .collect();
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
    Verdict::new(AUTHZ, violations, checked)
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
        assert_eq!(v.checked, 5, "2 acks, 1 display, 2 member lists");
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
                body: b"after".to_vec(),
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
}
