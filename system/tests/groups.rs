//! System-wide stories of groups through the in-memory harness ([`Cluster`]): membership at
//! sequencing deciding who receives, the member cap, a fan-out resumed after a shard crash, a
//! member that missed the creation, and fan-out on read. Each test says in its first comment
//! what it shows.

mod common;

use chatsim_system::proto::{ConvId, DeviceId, Host, Path, UserId};
use chatsim_system::testkit::Cluster;
use chatsim_system::{Action, Deployment, Effect, Input, Machine, Observation};
use common::*;

fn user(u: u32) -> DeviceId {
    DeviceId::primary(UserId(u))
}

fn group_topo(users: u32) -> Deployment {
    Deployment {
        users,
        gateways: 2,
        shards: 2,
        ..Deployment::default()
    }
}

fn refusals(c: &Cluster, d: DeviceId) -> Vec<chatsim_system::proto::Refusal> {
    c.seen(d, |o| matches!(o, Observation::Refused { .. }))
        .map(|o| match o {
            Observation::Refused { reason, .. } => *reason,
            _ => unreachable!(),
        })
        .collect()
}

/// What a device showed, membership lines ("u0.d0#3: adds u5") left out.
fn texts(c: &Cluster, d: DeviceId) -> Vec<String> {
    let is_change = |b: &str| {
        b.split_once(": ")
            .is_some_and(|(id, _)| id.starts_with('u') && id.contains(".d") && id.contains('#'))
    };
    displayed(c, d)
        .into_iter()
        .map(|(_, b, _)| b)
        .filter(|b| !is_change(b))
        .collect()
}

/// `from` posts `text` to group 1.
fn say(c: &mut Cluster, from: DeviceId, text: &str) {
    c.act(
        from,
        Action::SendGroup {
            group: 1,
            body: text.as_bytes().to_vec(),
        },
    );
}

// Membership at the moment of sequencing decides who receives a group message: a removed
// member sees nothing sent after the removal, an added one nothing sent before the add, and
// everyone in between sees it all, in one order.
#[test]
fn group_membership_at_sequencing_decides_who_receives() {
    let mut c = Cluster::new(group_topo(4));
    c.run_for(1_000);
    let (a, b, cc, d) = (user(0), user(1), user(2), user(3));
    c.act(
        a,
        Action::CreateGroup {
            group: 1,
            members: vec![b.user, cc.user],
        },
    );
    c.run_for(500);
    say(&mut c, a, "before");
    c.run_for(500);
    c.act(
        a,
        Action::RemoveMember {
            group: 1,
            user: cc.user,
        },
    );
    c.run_for(500);
    c.act(
        a,
        Action::AddMember {
            group: 1,
            user: d.user,
        },
    );
    c.run_for(500);
    say(&mut c, b, "after");
    c.run_for(3_000);
    assert_eq!(texts(&c, b), vec!["before"]);
    assert_eq!(
        texts(&c, cc),
        vec!["before"],
        "a removed member saw a later message"
    );
    assert_eq!(texts(&c, d), vec!["after"], "an added member saw history");
    assert_eq!(texts(&c, a), vec!["after"]);
    let changes = |dev| {
        c.seen(dev, |o| matches!(o, Observation::MembersChanged { .. }))
            .count()
    };
    assert_eq!(changes(b), 3, "create, remove, add");
    assert_eq!(changes(cc), 2, "create and its own removal");
    assert_eq!(changes(d), 1, "only the add that brought it in");
    assert!(c
        .seen(d, |o| matches!(o, Observation::Undecryptable { .. }))
        .next()
        .is_none());
    // The removed member can no longer post.
    say(&mut c, cc, "still here?");
    c.run_for(2_000);
    assert_eq!(
        refusals(&c, cc),
        vec![chatsim_system::proto::Refusal::NotMember]
    );
    assert_eq!(
        c.device(cc).outbox_len(),
        0,
        "a final refusal leaves the outbox"
    );
    assert_eq!(c.durable().fanouts_pending(), 0);
    assert_eq!(c.durable().inbox_entries(), 0);
}

// A group at the cap refuses one more member with a clear answer to the device.
#[test]
fn a_join_past_the_cap_is_refused_with_group_full() {
    use chatsim_system::limits::GROUP_MEMBERS_MAX;
    let users = GROUP_MEMBERS_MAX as u32 + 1;
    let mut c = Cluster::new(group_topo(users));
    c.run_for(1_000);
    let members = (1..GROUP_MEMBERS_MAX as u32).map(UserId).collect();
    c.act(user(0), Action::CreateGroup { group: 7, members });
    c.run_for(2_000);
    assert!(refusals(&c, user(0)).is_empty());
    c.act(
        user(0),
        Action::AddMember {
            group: 7,
            user: UserId(users - 1),
        },
    );
    c.run_for(2_000);
    assert_eq!(
        refusals(&c, user(0)),
        vec![chatsim_system::proto::Refusal::GroupFull]
    );
    let last = user(GROUP_MEMBERS_MAX as u32 - 1);
    assert_eq!(
        c.seen(last, |o| matches!(o, Observation::MembersChanged { .. }))
            .count(),
        1
    );
}

// A shard crash midway through a fan-out: its successor resumes at the job's cursor, so
// every member gets the message and nobody shows it twice; and the sender had its ✓ before
// the fan-out was done.
#[test]
fn a_fanout_interrupted_by_a_shard_crash_resumes_without_skips_or_repeats() {
    let users = 300;
    let mut c = Cluster::new(group_topo(users));
    c.run_for(1_000);
    let members: Vec<UserId> = (1..users).map(UserId).collect();
    c.act(user(0), Action::CreateGroup { group: 3, members });
    c.run_for(2_000);
    let owner = Host::Shard(chatsim_system::routing::shard_for_conv(ConvId::group(3), 2));
    c.act(
        user(0),
        Action::SendGroup {
            group: 3,
            body: b"to everyone".to_vec(),
        },
    );
    let reached = |c: &Cluster| (1..users).filter(|u| texts(c, user(*u)).len() == 1).count();
    // Run until the first step's members have it, then crash the owner.
    while reached(&c) == 0 {
        c.run_for(1);
    }
    let acked = c
        .seen(user(0), |o| matches!(o, Observation::Acked { .. }))
        .count();
    assert_eq!(acked, 2, "✓ must not wait for the fan-out");
    assert_eq!(
        c.durable().fanouts_pending(),
        1,
        "crash must hit mid fan-out"
    );
    let reached = reached(&c);
    assert!(
        reached > 0 && reached < users as usize - 1,
        "reached {reached}"
    );
    c.crash(owner);
    c.run_for(5_000);
    for u in 1..users {
        assert_eq!(texts(&c, user(u)), vec!["to everyone"], "{}", user(u));
    }
    assert_eq!(c.durable().fanouts_pending(), 0);
    assert_eq!(c.durable().inbox_entries(), 0);
}

// A member that missed the group's creation and then sees a later change listing it must
// not skip ahead to that change: only an add of itself starts its view there. Driven on
// the device alone: the creation never arrives until the fetch brings it.
#[test]
fn a_member_that_missed_the_creation_waits_for_it_instead_of_skipping() {
    use chatsim_system::device::Device;
    use chatsim_system::proto::{Down, GroupEvent, GroupOp, Message, MsgId, Up};
    let g = ConvId::group(4);
    let (a, b) = (user(0), user(1));
    let event = |seq: u64, op: GroupOp, members: &[u32]| Message {
        conv: g,
        seq,
        id: MsgId {
            device: a,
            n: seq as u32,
        },
        body: Vec::new(),
        sent_at: 0,
        event: Some(GroupEvent {
            op,
            members: members.iter().map(|u| UserId(*u)).collect(),
        }),
        keys: Vec::new(),
    };
    let create = event(
        1,
        GroupOp::Create {
            members: vec![UserId(1)],
        },
        &[0, 1],
    );
    let add = event(2, GroupOp::Add { user: UserId(2) }, &[0, 1, 2]);
    let mut d = Device::new(b, group_topo(3), 1, true);
    let mut out = Vec::new();
    d.handle(0, Input::Timeout, &mut out);
    d.handle(1, Input::Connected, &mut out);
    d.handle(2, Input::Down(Down::Welcome { epoch: 1 }), &mut out);
    out.clear();
    let deliver = |msg: &Message| {
        Input::Down(Down::Deliver {
            msg: msg.clone(),
            path: Path::Live,
        })
    };
    d.handle(3, deliver(&add), &mut out);
    let changes = |out: &[Effect]| -> Vec<u64> {
        out.iter()
            .filter_map(|e| match e {
                Effect::Observe(Observation::MembersChanged { seq, .. }) => Some(*seq),
                _ => None,
            })
            .collect()
    };
    assert!(
        changes(&out).is_empty(),
        "skipped to a change that is not its own add"
    );
    d.handle(
        3 + chatsim_system::limits::GAP_REPAIR_DELAY_MS,
        Input::Timeout,
        &mut out,
    );
    assert!(out.contains(&Effect::Up(Up::Fetch {
        conv: g,
        from: 1,
        to: 1
    })));
    d.handle(600, deliver(&create), &mut out);
    assert_eq!(changes(&out), vec![1, 2]);
}

// Fan-out on read: a text to a group over the threshold parks no inbox entries; an online
// member gets it pushed, an offline one pulls it from the log when it reconnects.
#[test]
fn a_group_read_from_its_log_parks_nothing_and_an_offline_member_pulls() {
    let mut topo = group_topo(5);
    topo.fanout_on_read_over = 2;
    let mut c = Cluster::new(topo);
    c.run_for(1_000);
    let members = (1..5).map(UserId).collect();
    c.act(user(0), Action::CreateGroup { group: 2, members });
    c.run_for(1_000);
    let written = c.durable().inbox_written();
    assert_eq!(written, 4, "the creation parks for every member");
    c.act(user(4), Action::GoOffline);
    for text in ["one", "two", "three"] {
        let body = text.as_bytes().to_vec();
        c.act(user(0), Action::SendGroup { group: 2, body });
    }
    c.run_for(2_000);
    assert_eq!(
        c.durable().inbox_written(),
        written,
        "texts parked inbox entries"
    );
    assert_eq!(texts(&c, user(1)), vec!["one", "two", "three"]);
    assert!(texts(&c, user(4)).is_empty());
    c.act(user(4), Action::GoOnline);
    c.run_for(3_000);
    assert_eq!(texts(&c, user(4)), vec!["one", "two", "three"]);
    assert_eq!(c.durable().inbox_entries(), 0);
}

/// A group of u0 and eight members, settled; then u0 posts `body`, with the frame counters
/// cleared just before.
fn post_to_eight(body: &[u8]) -> Cluster {
    let mut c = Cluster::new(group_topo(9));
    c.run_for(1_000);
    let members: Vec<UserId> = (1..9).map(UserId).collect();
    c.act(user(0), Action::CreateGroup { group: 1, members });
    c.run_for(2_000);
    c.lookups.clear();
    c.ups.clear();
    c.act(
        user(0),
        Action::SendGroup {
            group: 1,
            body: body.to_vec(),
        },
    );
    c
}

// Shard `send_asks`: a group message's fan-out asks the session service where every member is
// in one frame, not one frame per member (lookups were a sixth to a quarter of all frames in
// the group scenarios), and every member still gets it.
#[test]
fn a_fanout_asks_where_all_its_members_are_in_one_frame() {
    let mut c = post_to_eight(b"all at once");
    c.run_for(150);
    for u in 1..9 {
        assert_eq!(texts(&c, user(u)), vec!["all at once"], "member {u}");
    }
    assert!(
        c.lookups.contains(&8),
        "one lookup asked for all eight members: {:?}",
        c.lookups
    );
}

// Device `send_seen`: a group's sender hears a receipt from every member at about the same
// time, and says it saw them in one frame a moment later, not one frame per receipt (those
// frames, three hops each, were a quarter of group-flood's).
#[test]
fn a_sender_says_it_saw_a_groups_receipts_in_few_frames() {
    use chatsim_system::proto::Up;
    let mut c = post_to_eight(b"tick tock");
    c.run_for(3_000);
    let frames: Vec<usize> = c
        .ups
        .iter()
        .filter_map(|(_, d, up)| match up {
            Up::ReceiptSeen { seen, .. } if *d == user(0) => Some(seen.len()),
            _ => None,
        })
        .collect();
    let said: usize = frames.iter().sum();
    assert!(said >= 8, "every member's receipt is said seen: {frames:?}");
    assert!(
        frames.len() * 2 <= said,
        "several receipts a frame: {frames:?}"
    );
}

// Device `update_ticks`: a group text shows ✓✓ only once every member has it and read only
// once every member read it, whichever order their receipts come in. The first member in the
// device's order is the last to receive and to read, so a count of members already heard
// from that skipped ahead (or never went back to look) would show a tick too early or never.
#[test]
fn group_ticks_wait_for_the_first_member_when_it_is_the_last_to_answer() {
    use chatsim_system::proto::ReceiptKind::{Delivered, Read};
    let mut c = Cluster::new(group_topo(4));
    c.run_for(1_000);
    let (a, b, cc, d) = (user(0), user(1), user(2), user(3));
    let members = vec![b.user, cc.user, d.user];
    c.act(a, Action::CreateGroup { group: 1, members });
    c.run_for(500);
    c.act(b, Action::GoOffline);
    c.run_for(500);
    say(&mut c, a, "who has it");
    let ticks = |c: &Cluster| -> Vec<_> {
        c.seen(a, |o| matches!(o, Observation::Ticks { .. }))
            .map(|o| match o {
                Observation::Ticks { tick, .. } => *tick,
                _ => unreachable!(),
            })
            .collect()
    };
    c.run_for(2_000);
    assert_eq!(texts(&c, cc), vec!["who has it"]);
    assert!(
        ticks(&c).is_empty(),
        "b has not received it: {:?}",
        ticks(&c)
    );
    c.act(b, Action::GoOnline);
    c.run_for(2_000);
    assert_eq!(ticks(&c), vec![Delivered]);
    let conv = ConvId::group(1);
    for reader in [d, cc] {
        c.act(reader, Action::OpenChat { conv });
        c.run_for(1_000);
        assert_eq!(ticks(&c), vec![Delivered], "b has not read it");
    }
    c.act(b, Action::OpenChat { conv });
    c.run_for(1_000);
    assert_eq!(ticks(&c), vec![Delivered, Read]);
}
