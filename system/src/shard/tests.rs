//! Unit tests of the shard: what it refuses at the door.

use super::*;
use crate::proto::UserId;

fn topo() -> Deployment {
    Deployment {
        users: 3,
        gateways: 1,
        shards: 1,
        ..Deployment::default()
    }
}

fn send(from: DeviceId, id: MsgId, conv: ConvId) -> Input {
    Input::Rpc {
        from: Host::Gateway(0),
        rpc: Rpc::FromDevice {
            device: from,
            up: Up::Send {
                conv,
                id,
                body: b"hello".to_vec(),
                sent_at: 0,
                op: None,
                version: 0,
                keys: Vec::new(),
            },
        },
    }
}

fn refusals(out: &[Effect]) -> Vec<Refusal> {
    out.iter()
        .filter_map(|e| match e {
            Effect::Rpc {
                rpc:
                    Rpc::ToDevice {
                        down: Down::Refused { reason, .. },
                        ..
                    },
                ..
            } => Some(*reason),
            _ => None,
        })
        .collect()
}

// A frame whose message id names another device than the one the gateway authenticated
// is refused before it reaches storage: nobody posts as someone else. So is a post to a
// direct conversation the sender is not in.
#[test]
fn a_send_as_someone_else_or_into_someone_elses_chat_is_refused() {
    let (a, b, c) = (
        DeviceId::primary(UserId(0)),
        DeviceId::primary(UserId(1)),
        DeviceId::primary(UserId(2)),
    );
    let mut shard = Shard::new(0, topo());
    let mut out = Vec::new();
    let forged = MsgId { device: b, n: 0 };
    shard.handle(1, send(a, forged, ConvId::direct(a.user, b.user)), &mut out);
    assert_eq!(refusals(&out), vec![Refusal::NotMember]);
    assert!(!out.iter().any(|e| matches!(
        e,
        Effect::Rpc {
            to: Host::Storage(_),
            ..
        }
    )));
    out.clear();
    let own = MsgId { device: c, n: 0 };
    shard.handle(2, send(c, own, ConvId::direct(a.user, b.user)), &mut out);
    assert_eq!(refusals(&out), vec![Refusal::NotMember]);
    out.clear();
    let fine = MsgId { device: a, n: 1 };
    shard.handle(3, send(a, fine, ConvId::direct(a.user, b.user)), &mut out);
    assert!(refusals(&out).is_empty());
    assert!(out.iter().any(|e| matches!(
        e,
        Effect::Rpc {
            rpc: Rpc::LoadConv { .. },
            ..
        }
    )));
}
