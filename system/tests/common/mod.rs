//! What the system-wide tests share: the two-user topology, its two phones `A` and `B`, and
//! helpers that send a text and read back what a device showed or how often it reconnected.
//! Each test file compiles this module on its own and uses only part of it, hence the
//! `dead_code` allowance.

#![allow(dead_code)]

use chatsim_system::proto::{DeviceId, Path, UserId};
use chatsim_system::testkit::Cluster;
use chatsim_system::{Action, Deployment, Observation};

pub fn topo() -> Deployment {
    Deployment {
        users: 2,
        gateways: 2,
        shards: 2,
        ..Deployment::default()
    }
}
pub const A: DeviceId = DeviceId {
    user: UserId(0),
    index: 0,
};
pub const B: DeviceId = DeviceId {
    user: UserId(1),
    index: 0,
};

pub fn send(c: &mut Cluster, from: DeviceId, to: DeviceId, text: &str) {
    c.act(
        from,
        Action::SendDirect {
            to: to.user,
            body: text.as_bytes().to_vec(),
        },
    );
}

/// A cluster of `topo` a second after boot (every phone connected), in which A has sent B
/// `text` and `ms` more have passed.
pub fn one_text(topo: Deployment, text: &str, ms: chatsim_system::proto::Millis) -> Cluster {
    let mut c = Cluster::new(topo);
    c.run_for(1_000);
    send(&mut c, A, B, text);
    c.run_for(ms);
    c
}

pub fn displayed(c: &Cluster, d: DeviceId) -> Vec<(u64, String, Path)> {
    c.seen(d, |o| matches!(o, Observation::Displayed { .. }))
        .map(|o| match o {
            Observation::Displayed {
                seq, body, path, ..
            } => (*seq, String::from_utf8_lossy(body).into_owned(), *path),
            _ => unreachable!(),
        })
        .collect()
}

pub fn reconnects(c: &Cluster, d: DeviceId) -> usize {
    c.seen(d, |o| matches!(o, Observation::Connected { .. }))
        .count()
}
