//! The one effect router: where each [`Effect`] a machine produces must go, and whether the
//! machine had any business producing it.
//!
//! Every engine (madsim, turmoil, the in-memory `testkit`, the stateright
//! models, and the real server) carries effects between machines. What differs between them is
//! *how* a frame travels (a simulated socket, a queue, a model's network set); *where* it goes
//! is the same everywhere and is decided here, once: a server's `Rpc` to a device is a push
//! wake-up over the phone OS's channel, not a frame on the chat network; a gateway's `Down`
//! goes to one of that gateway's connections; a durable write is kept beside its host, never
//! inside it. An engine matches on [`Route`], whose variants carry the producing host's
//! identity, so it never re-derives who may do what.
//!
//! A machine that produces an effect of another kind of host (a device persisting storage
//! operations, a shard writing down a device connection) is a broken machine, and the router
//! panics naming both: a panic surfaces the bug at its source; a dropped effect hides it.

use crate::durable::Write;
use crate::probe::Probe;
use crate::proto::{ConnId, DeviceId, Down, Host, Rpc, Up};
use crate::{Effect, Observation};

/// Where one effect goes, with the producing host's identity where the destination depends on
/// it.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Route {
    /// A server-to-server message over the chat network.
    Peer {
        /// The receiving server.
        to: Host,
        /// The message.
        rpc: Rpc,
    },
    /// The push provider wakes a phone. This travels over the phone OS's channel (APNs /
    /// FCM), outside the chat network: a partition of ours does not hold it.
    Wake(DeviceId),
    /// A gateway writes a frame down one of its device connections.
    Down {
        /// The gateway whose connection it is.
        gateway: u16,
        /// The connection.
        conn: ConnId,
        /// The frame.
        frame: Down,
    },
    /// A gateway closes one of its device connections.
    Close {
        /// The gateway whose connection it is.
        gateway: u16,
        /// The connection.
        conn: ConnId,
    },
    /// A device opens a connection to a gateway, replacing any current one.
    Connect {
        /// The device.
        device: DeviceId,
        /// The gateway's index.
        gateway: u16,
    },
    /// A device writes a frame on its current connection (dropped if it has none).
    Up {
        /// The device.
        device: DeviceId,
        /// The frame.
        up: Up,
    },
    /// A device closes its current connection; no `Disconnected` input follows.
    Disconnect {
        /// The device.
        device: DeviceId,
    },
    /// Something the user could see on a device: it goes to the history.
    Observe {
        /// The device.
        device: DeviceId,
        /// What was seen.
        obs: Observation,
    },
    /// A server made something durable: keep it beside the host, where a crash cannot reach.
    Durable(Write),
    /// A machine took a rare branch: count it beside the run.
    Probe(Probe),
}

/// Where `effect`, produced by `from`, goes.
///
/// # Panics
/// When `from` produced an effect only another kind of host may produce: the machine is
/// broken, and carrying on would turn its bug into a history violation far from its cause.
pub fn route(from: Host, effect: Effect) -> Route {
    match (from, effect) {
        (
            Host::Push,
            Effect::Rpc {
                to: Host::Device(d),
                rpc: Rpc::Wake,
            },
        ) => Route::Wake(d),
        (Host::Device(_), e @ Effect::Rpc { .. }) => {
            unreachable!("{from} is a device and produced a server message: {e:?}")
        }
        (_, Effect::Rpc { to, rpc }) => {
            assert!(
                !matches!(to, Host::Device(_)),
                "{from} sent a server message to a device (only the push provider reaches a \
                 phone, and only to wake it): {rpc:?}"
            );
            Route::Peer { to, rpc }
        }
        (Host::Gateway(gateway), Effect::Down { conn, frame }) => Route::Down {
            gateway,
            conn,
            frame,
        },
        (Host::Gateway(gateway), Effect::CloseConn { conn }) => Route::Close { gateway, conn },
        (Host::Device(device), Effect::Connect { gateway }) => Route::Connect { device, gateway },
        (Host::Device(device), Effect::Up(up)) => Route::Up { device, up },
        (Host::Device(device), Effect::Disconnect) => Route::Disconnect { device },
        (Host::Device(device), Effect::Observe(obs)) => Route::Observe { device, obs },
        (Host::Storage(_), Effect::Persist(ops)) => Route::Durable(Write::Storage(ops)),
        (Host::Storage(_), Effect::Rebuilt(view)) => Route::Durable(Write::Rebuilt(view)),
        (Host::Replica(replica), Effect::PersistOps(ops)) => {
            Route::Durable(Write::Replica { replica, ops })
        }
        (Host::Session, Effect::PersistSession(change)) => Route::Durable(Write::Session(change)),
        (_, Effect::Probe(p)) => Route::Probe(p),
        (from, e) => unreachable!("{from} produced an effect it has no business producing: {e:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::UserId;
    use crate::session::SessionChange;

    const PHONE: DeviceId = DeviceId {
        user: UserId(3),
        index: 0,
    };

    // A push to a phone is a wake-up, whoever else could address a device.
    #[test]
    fn the_push_provider_wakes_phones_outside_the_chat_network() {
        let wake = Effect::Rpc {
            to: Host::Device(PHONE),
            rpc: Rpc::Wake,
        };
        assert_eq!(route(Host::Push, wake), Route::Wake(PHONE));
    }

    // The gateway's identity travels with its connection's frames, so an engine can find the
    // connection without knowing which host spoke.
    #[test]
    fn a_gateway_close_names_its_gateway() {
        let close = Effect::CloseConn { conn: ConnId(7) };
        assert_eq!(
            route(Host::Gateway(2), close),
            Route::Close {
                gateway: 2,
                conn: ConnId(7)
            }
        );
    }

    #[test]
    fn durable_writes_are_kept_beside_their_host() {
        let w = route(Host::Replica(1), Effect::PersistOps(Vec::new()));
        assert!(matches!(
            w,
            Route::Durable(Write::Replica { replica: 1, .. })
        ));
        let s = route(
            Host::Session,
            Effect::PersistSession(SessionChange::LastSeen {
                user: UserId(0),
                at: 1,
            }),
        );
        assert!(matches!(s, Route::Durable(Write::Session(_))));
    }

    // A broken machine is caught where it breaks.
    #[test]
    #[should_panic(expected = "no business")]
    fn a_shard_writing_down_a_device_connection_is_a_broken_machine() {
        route(Host::Shard(0), Effect::CloseConn { conn: ConnId(1) });
    }

    #[test]
    #[should_panic(expected = "is a device")]
    fn a_device_cannot_speak_server_to_server() {
        route(
            Host::Device(PHONE),
            Effect::Rpc {
                to: Host::Session,
                rpc: Rpc::Wake,
            },
        );
    }

    #[test]
    #[should_panic(expected = "only the push provider")]
    fn only_the_push_provider_addresses_a_phone() {
        route(
            Host::Shard(0),
            Effect::Rpc {
                to: Host::Device(PHONE),
                rpc: Rpc::Wake,
            },
        );
    }

    #[test]
    #[should_panic(expected = "no business")]
    fn storage_operations_persisted_by_a_gateway_are_refused() {
        route(Host::Gateway(0), Effect::Persist(Vec::new()));
    }
}
