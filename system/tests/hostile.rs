//! Hostile inputs, well typed: a device with valid credentials sends arbitrary frames on its
//! own connection (any request, any conversation, made-up ids and sequence numbers, users
//! who do not exist), and a phone is handed arbitrary frames by its gateway (a hostile or
//! broken server). Between them the honest users keep talking. The property, over every
//! generated sequence: no machine panics (their assertions are on in every build), the
//! gateways and shards stay within their bounds, and a text an honest user sends afterwards
//! still reaches its recipient. `CHATSIM_FUZZ_SCALE` multiplies the case count (CI runs the
//! default and prints it).

mod common;

use chatsim_system::proto::{
    ConvId, DeviceId, Down, GroupOp, InboxCursor, Message, MsgId, Path, Receipt, ReceiptKind,
    Refusal, Up, UserId,
};
use chatsim_system::routing::device_token;
use chatsim_system::testkit::Cluster;
use chatsim_system::{Action, Deployment, Input, Observation};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestRunner};

/// Users of the deployment; ids up to this one (which does not exist) are generated.
const USERS: u32 = 4;
/// The compromised device and the phone a hostile gateway talks to.
const ATTACKER: DeviceId = DeviceId {
    user: UserId(3),
    index: 0,
};
const VICTIM: DeviceId = DeviceId {
    user: UserId(2),
    index: 0,
};
/// Cases per run before `CHATSIM_FUZZ_SCALE`.
const CASES: u32 = 1_000;

fn topo() -> Deployment {
    Deployment {
        users: USERS,
        gateways: 2,
        shards: 2,
        // Groups over 2 members are read from their log, so pulls reach real groups.
        fanout_on_read_over: 2,
        ..Deployment::default()
    }
}

fn cases() -> u32 {
    let scale = std::env::var("CHATSIM_FUZZ_SCALE")
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1)
        .max(1);
    CASES.saturating_mul(scale)
}

fn user() -> impl Strategy<Value = UserId> {
    (0..=USERS).prop_map(UserId)
}

fn device() -> impl Strategy<Value = DeviceId> {
    (user(), 0..2u8).prop_map(|(user, index)| DeviceId { user, index })
}

fn conv() -> impl Strategy<Value = ConvId> {
    prop_oneof![
        (user(), user()).prop_map(|(a, b)| ConvId::direct(a, b)),
        (0..3u32).prop_map(ConvId::group),
    ]
}

fn seq() -> impl Strategy<Value = u64> {
    prop_oneof![0..12u64, Just(u64::MAX), any::<u64>()]
}

fn msg_id() -> impl Strategy<Value = MsgId> {
    (device(), prop_oneof![0..6u32, any::<u32>()]).prop_map(|(device, n)| MsgId { device, n })
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..48)
}

fn group_op() -> impl Strategy<Value = GroupOp> {
    prop_oneof![
        prop::collection::vec(user(), 0..4).prop_map(|members| GroupOp::Create { members }),
        user().prop_map(|user| GroupOp::Add { user }),
        user().prop_map(|user| GroupOp::Remove { user }),
    ]
}

fn kind() -> impl Strategy<Value = ReceiptKind> {
    prop_oneof![Just(ReceiptKind::Delivered), Just(ReceiptKind::Read)]
}

fn receipt() -> impl Strategy<Value = Receipt> {
    (conv(), device(), kind(), seq()).prop_map(|(conv, reader, kind, upto)| Receipt {
        conv,
        reader,
        kind,
        upto,
    })
}

fn cursor() -> impl Strategy<Value = Option<InboxCursor>> {
    prop::option::of((conv(), seq()).prop_map(|(conv, seq)| InboxCursor { conv, seq }))
}

/// Any frame a device may send.
fn up() -> impl Strategy<Value = Up> {
    prop_oneof![
        (device(), any::<bool>(), any::<u64>()).prop_map(|(device, valid, epoch)| Up::Hello {
            device,
            token: if valid { device_token(device) } else { epoch },
            epoch,
        }),
        (
            conv(),
            msg_id(),
            body(),
            prop::option::of(group_op()),
            seq(),
            prop::collection::vec((device(), body()), 0..3)
        )
            .prop_map(|(conv, id, body, op, version, keys)| Up::Send {
                conv,
                id,
                body,
                sent_at: 0,
                op,
                version,
                keys,
            }),
        (conv(), seq()).prop_map(|(conv, seq)| Up::Ack { conv, seq }),
        cursor().prop_map(|after| Up::Drain { after }),
        (conv(), seq(), seq()).prop_map(|(conv, from, to)| Up::Fetch { conv, from, to }),
        conv().prop_map(|conv| Up::Pull { conv }),
        (conv(), kind(), seq(), prop::collection::vec(device(), 0..3)).prop_map(
            |(conv, kind, upto, notify)| Up::Receipt {
                conv,
                kind,
                upto,
                notify,
            }
        ),
        (
            conv(),
            prop::collection::vec((device(), kind(), seq()), 0..3)
        )
            .prop_map(|(conv, seen)| Up::ReceiptSeen { conv, seen }),
        prop::option::of(user()).prop_map(|user| Up::Subscribe { user }),
        Just(Up::Ping),
        Just(Up::Link),
    ]
}

fn refusal() -> impl Strategy<Value = Refusal> {
    prop_oneof![
        Just(Refusal::BadToken),
        Just(Refusal::NotAuthenticated),
        Just(Refusal::NotMember),
        Just(Refusal::Busy),
        Just(Refusal::GroupFull),
        seq().prop_map(|version| Refusal::StaleMembers { version }),
        Just(Refusal::BadGroupOp),
        device().prop_map(|device| Refusal::StaleDevices { device }),
    ]
}

fn path() -> impl Strategy<Value = Path> {
    prop_oneof![Just(Path::Live), Just(Path::Inbox), Just(Path::Fetch)]
}

fn message() -> impl Strategy<Value = Message> {
    (
        conv(),
        seq(),
        msg_id(),
        body(),
        prop::option::of((group_op(), prop::collection::vec(user(), 0..4))),
        prop::collection::vec((device(), body()), 0..2),
    )
        .prop_map(|(conv, seq, id, body, event, keys)| Message {
            conv,
            seq,
            id,
            body,
            sent_at: 0,
            event: event.map(|(op, mut members)| {
                members.sort();
                members.dedup();
                chatsim_system::proto::GroupEvent { op, members }
            }),
            keys,
        })
}

/// Any frame a gateway may send a phone.
fn down() -> impl Strategy<Value = Down> {
    prop_oneof![
        (0..4u64).prop_map(|epoch| Down::Welcome { epoch }),
        (refusal(), prop::option::of(msg_id()))
            .prop_map(|(reason, id)| Down::Refused { reason, id }),
        (conv(), msg_id(), seq()).prop_map(|(conv, id, seq)| Down::Sent { conv, id, seq }),
        (message(), path()).prop_map(|(msg, path)| Down::Deliver { msg, path }),
        (cursor(), any::<bool>(), any::<bool>()).prop_map(|(next, more, receipts_more)| {
            Down::DrainPage {
                next,
                more,
                receipts_more,
            }
        }),
        (conv(), seq()).prop_map(|(conv, last)| Down::Pulled { conv, last }),
        Just(Down::Linked),
        (conv(), kind(), seq()).prop_map(|(conv, kind, upto)| Down::ReceiptAck {
            conv,
            kind,
            upto
        }),
        receipt().prop_map(|receipt| Down::Receipt { receipt }),
        (user(), any::<bool>(), any::<u64>()).prop_map(|(user, online, last_seen)| {
            Down::Presence {
                user,
                online,
                last_seen,
            }
        }),
        Just(Down::Pong),
    ]
}

/// One step of a case: a frame from the attacker, a frame to the victim, or time passing.
#[derive(Clone, Debug)]
enum Step {
    Up(Up),
    Down(Down),
    Wait(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => up().prop_map(Step::Up),
        3 => down().prop_map(Step::Down),
        1 => (1..3_000u64).prop_map(Step::Wait),
    ]
}

/// Run one case: boot, an honest exchange under way, the steps, then an honest text that must
/// arrive. Panics (a machine's assertion) fail the case as they are.
fn run(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut c = Cluster::new(topo());
    c.run_for(1_000);
    let a = DeviceId::primary(UserId(0));
    let b = DeviceId::primary(UserId(1));
    common::send(&mut c, a, b, "before");
    c.act(
        a,
        Action::CreateGroup {
            group: 0,
            members: vec![UserId(1), UserId(2)],
        },
    );
    prop_assert!(
        c.conn_of(ATTACKER).is_some(),
        "the attacker is connected before its frames"
    );
    for s in steps {
        match s {
            Step::Up(up) => {
                if let Some((g, conn)) = c.conn_of(ATTACKER) {
                    let input = Input::FromConn {
                        conn,
                        up: up.clone(),
                    };
                    c.input(chatsim_system::proto::Host::Gateway(g), input);
                }
            }
            Step::Down(down) => {
                let host = chatsim_system::proto::Host::Device(VICTIM);
                c.input(host, Input::Down(down.clone()));
            }
            Step::Wait(ms) => c.run_for(*ms),
        }
        c.run_for(20);
        for g in 0..2 {
            let ready = c.gateway(g).ready_devices();
            prop_assert!(ready <= USERS as usize, "gateway {g} holds {ready} devices");
        }
    }
    common::send(&mut c, a, b, "after the attack");
    c.run_for(60_000);
    let shown = common::displayed(&c, b);
    prop_assert!(
        shown.iter().any(|(_, text, _)| text == "after the attack"),
        "an honest text sent after the attack never arrived: {shown:?}"
    );
    for s in 0..2 {
        let tracked = c.shard(s).tracked();
        prop_assert!(tracked <= 64, "shard {s} still tracks {tracked} deliveries");
    }
    // The compromised device's own honest app goes on too.
    let attacker_up = c
        .seen(ATTACKER, |o| matches!(o, Observation::Connected { .. }))
        .count();
    prop_assert!(attacker_up >= 1);
    Ok(())
}

#[test]
fn hostile_frames_never_panic_a_machine_nor_stop_honest_users() {
    let config = Config {
        cases: cases(),
        // Found failures are kept beside this file and replayed first on every run.
        failure_persistence: Some(Box::new(FileFailurePersistence::SourceParallel(
            "proptest-regressions",
        ))),
        source_file: Some(file!()),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let strategy = prop::collection::vec(step(), 1..24);
    let result = runner.run(&strategy, |steps| run(&steps));
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn the_input_count_is_stated() {
    println!(
        "hostile machine inputs: {} cases of up to 23 crafted frames each (CHATSIM_FUZZ_SCALE multiplies)",
        cases()
    );
    assert!(cases() >= CASES);
}
