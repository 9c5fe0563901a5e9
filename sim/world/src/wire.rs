//! Framing on simulated (or real) TCP: a 4-byte big-endian length, then the postcard encoding
//! of one [`Wire`] frame. Decoding separates "not enough bytes yet" (`Ok(None)`) from bad input
//! (`Err`), so a reader can be cancelled and resumed without losing a frame.

use bytes::{Bytes, BytesMut};
use chatsim_system::limits::FRAME_BYTES_MAX;
use chatsim_system::proto::{
    ConvId, Down, Envelope, Host, Millis, Missed, MsgId, Rpc, Seq, StorageOp, Up,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Everything that travels on a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Wire {
    /// Server to server.
    Server(Envelope),
    /// Device to gateway.
    Up(Up),
    /// Gateway to device.
    Down(Down),
    /// An engine's own acknowledgement on a server-to-server connection: how many frames the
    /// receiver has read from it so far. Not part of the protocol (no machine sees it); the
    /// turmoil engine uses it as a keepalive's answer, to notice a stream that stalled.
    LinkAck(u64),
}

/// One frame on the wire: what travels, who sent it and when (the header a sequence diagram
/// needs; the system itself never reads it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The sending host.
    pub from: Host,
    /// Simulated send time.
    pub sent_ms: Millis,
    /// The payload.
    pub wire: Wire,
}

/// A frame as the engine logged it on delivery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FrameRecord {
    /// Sender.
    pub from: Host,
    /// Receiver.
    pub to: Host,
    /// Simulated send time.
    pub sent_ms: Millis,
    /// Simulated delivery time.
    pub recv_ms: Millis,
    /// A short label, e.g. `Append seq 4`.
    pub label: String,
    /// The message it concerns, when it names one by id.
    pub msg: Option<MsgId>,
    /// The message it concerns, when it names one by (conversation, seq).
    pub key: Option<(ConvId, Seq)>,
    /// Its size on the wire: what capacity checks weigh storage and links by.
    pub bytes: u32,
}

fn describe_up(up: &Up) -> (String, Option<MsgId>, Option<(ConvId, Seq)>) {
    match up {
        Up::Hello { epoch, .. } => (format!("Hello (epoch {epoch})"), None, None),
        Up::Send { id, op: None, .. } => (format!("Send {id}"), Some(*id), None),
        Up::Send {
            id, op: Some(op), ..
        } => (format!("Send {id} ({op:?})"), Some(*id), None),
        Up::Ack { conv, seq } => (format!("Ack seq {seq}"), None, Some((*conv, *seq))),
        Up::Drain { .. } => ("Drain".into(), None, None),
        Up::Fetch { from, to, .. } => (format!("Fetch {from}..={to}"), None, None),
        Up::Pull { .. } => ("Pull".into(), None, None),
        Up::Link => ("Link".into(), None, None),
        Up::Subscribe { user: Some(u) } => (format!("Subscribe {u}"), None, None),
        Up::Subscribe { user: None } => ("Unsubscribe".into(), None, None),
        Up::Receipt { kind, upto, .. } => (format!("Receipt {kind:?} ≤{upto}"), None, None),
        Up::ReceiptSeen { seen, .. } => match &seen[..] {
            [(_, kind, upto)] => (format!("ReceiptSeen {kind:?} ≤{upto}"), None, None),
            _ => (format!("ReceiptSeen ({})", seen.len()), None, None),
        },
        Up::Ping => ("Ping".into(), None, None),
    }
}

fn describe_down(down: &Down) -> (String, Option<MsgId>, Option<(ConvId, Seq)>) {
    match down {
        Down::Welcome { .. } => ("Welcome".into(), None, None),
        Down::Refused { reason, id } => (format!("Refused {reason:?}"), *id, None),
        Down::Sent { id, seq, conv } => {
            (format!("Sent ✓ seq {seq}"), Some(*id), Some((*conv, *seq)))
        }
        Down::Deliver { msg, path } => (
            format!("Deliver seq {} ({path})", msg.seq),
            Some(msg.id),
            Some((msg.conv, msg.seq)),
        ),
        Down::DrainPage { more, .. } => (format!("DrainPage more={more}"), None, None),
        Down::Pulled { last, .. } => (format!("Pulled last {last}"), None, None),
        Down::Presence {
            user,
            online,
            last_seen,
        } => {
            let what = if *online {
                "online".to_string()
            } else {
                format!("last seen {last_seen}")
            };
            (format!("Presence {user} {what}"), None, None)
        }
        Down::Linked => ("Linked".into(), None, None),
        Down::ReceiptAck { kind, upto, .. } => (format!("ReceiptAck {kind:?} ≤{upto}"), None, None),
        Down::Receipt { receipt } => (
            format!(
                "Receipt {:?} ≤{} from {}",
                receipt.kind, receipt.upto, receipt.reader
            ),
            None,
            None,
        ),
        Down::Pong => ("Pong".into(), None, None),
    }
}

/// What a delivered frame is for, as `chatsim run --json` and `bench` count frames: the
/// purpose first (heartbeats, receipts, presence, push, the engine's own acks), then the link
/// it crossed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum FrameKind {
    /// Phone and gateway, for messages, acks, drains and fetches.
    DeviceLink,
    /// Gateway and chat shard.
    GatewayShard,
    /// Chat shard and storage.
    ShardStorage,
    /// Storage coordinator and its replicas.
    StorageReplica,
    /// Anyone and the session service (registrations, lookups).
    Session,
    /// Pings and pongs.
    Heartbeat,
    /// Delivered and read receipts, wherever they travel.
    Receipts,
    /// Presence subscriptions and updates.
    Presence,
    /// The push provider and wake-ups.
    Push,
    /// An engine's own acknowledgement on a server link (turmoil's keepalive).
    EngineAck,
}

impl FrameKind {
    /// Every kind, in report order.
    pub const ALL: [FrameKind; 10] = [
        FrameKind::DeviceLink,
        FrameKind::GatewayShard,
        FrameKind::ShardStorage,
        FrameKind::StorageReplica,
        FrameKind::Session,
        FrameKind::Heartbeat,
        FrameKind::Receipts,
        FrameKind::Presence,
        FrameKind::Push,
        FrameKind::EngineAck,
    ];

    /// Its name in JSON and tables.
    pub fn name(self) -> &'static str {
        match self {
            FrameKind::DeviceLink => "device link",
            FrameKind::GatewayShard => "gateway-shard",
            FrameKind::ShardStorage => "shard-storage",
            FrameKind::StorageReplica => "storage-replica",
            FrameKind::Session => "session",
            FrameKind::Heartbeat => "heartbeats",
            FrameKind::Receipts => "receipts",
            FrameKind::Presence => "presence",
            FrameKind::Push => "push",
            FrameKind::EngineAck => "engine acks",
        }
    }

    /// What a frame from `from` to `to` carrying `wire` is for.
    pub fn of(from: Host, to: Host, wire: &Wire) -> FrameKind {
        let up_kind = |up: &Up| match up {
            Up::Ping => Some(FrameKind::Heartbeat),
            Up::Receipt { .. } | Up::ReceiptSeen { .. } => Some(FrameKind::Receipts),
            Up::Subscribe { .. } => Some(FrameKind::Presence),
            _ => None,
        };
        let down_kind = |down: &Down| match down {
            Down::Pong => Some(FrameKind::Heartbeat),
            Down::Receipt { .. } | Down::ReceiptAck { .. } => Some(FrameKind::Receipts),
            Down::Presence { .. } => Some(FrameKind::Presence),
            _ => None,
        };
        let purpose = match wire {
            Wire::LinkAck(_) => Some(FrameKind::EngineAck),
            Wire::Up(up) => up_kind(up),
            Wire::Down(down) => down_kind(down),
            Wire::Server(Envelope { rpc, .. }) => match rpc {
                Rpc::FromDevice { up, .. } => up_kind(up),
                Rpc::ToDevice { down, .. } => down_kind(down),
                Rpc::PutReceipt { .. }
                | Rpc::ReceiptStored { .. }
                | Rpc::ReadQueuedReceipts { .. }
                | Rpc::QueuedReceipts { .. }
                | Rpc::ReceiptSeen { .. }
                | Rpc::NotHere {
                    missed: Missed::Receipt(..),
                    ..
                } => Some(FrameKind::Receipts),
                Rpc::Subscribe { .. } | Rpc::Notify { .. } => Some(FrameKind::Presence),
                Rpc::Wake => Some(FrameKind::Push),
                _ => None,
            },
        };
        if let Some(k) = purpose {
            return k;
        }
        let has = |f: fn(&Host) -> bool| f(&from) || f(&to);
        if has(|h| matches!(h, Host::Push)) {
            FrameKind::Push
        } else if has(|h| matches!(h, Host::Device(_))) {
            FrameKind::DeviceLink
        } else if has(|h| matches!(h, Host::Session)) {
            FrameKind::Session
        } else if has(|h| matches!(h, Host::Replica(_))) {
            FrameKind::StorageReplica
        } else if has(|h| matches!(h, Host::Storage(_))) {
            FrameKind::ShardStorage
        } else {
            FrameKind::GatewayShard
        }
    }
}

/// A short label for a frame and the message it concerns, for sequence diagrams.
pub fn describe(w: &Wire) -> (String, Option<MsgId>, Option<(ConvId, Seq)>) {
    match w {
        Wire::LinkAck(n) => (format!("link ack {n}"), None, None),
        Wire::Up(up) => describe_up(up),
        Wire::Down(down) => describe_down(down),
        Wire::Server(Envelope { rpc, .. }) => match rpc {
            Rpc::FromDevice { up, .. } => describe_up(up),
            Rpc::ToDevice { down, .. } => describe_down(down),
            Rpc::Append { msg, .. } => (
                format!("Append seq {}", msg.seq),
                Some(msg.id),
                Some((msg.conv, msg.seq)),
            ),
            Rpc::Appended { id, seq, conv, .. } => (
                format!("Appended seq {seq}"),
                Some(*id),
                Some((*conv, *seq)),
            ),
            Rpc::AppendConflict { id, last_seq, .. } => {
                (format!("AppendConflict last {last_seq}"), Some(*id), None)
            }
            Rpc::DeleteInbox { conv, seq, .. } => {
                (format!("DeleteInbox seq {seq}"), None, Some((*conv, *seq)))
            }
            Rpc::Lookup { asks } => match &asks[..] {
                [(_, user)] => (format!("Lookup {user}"), None, None),
                _ => (format!("Lookup ({} users)", asks.len()), None, None),
            },
            Rpc::Notify { device } => (format!("Notify {device}"), None, None),
            Rpc::NotHere { device, missed } => match missed {
                Missed::Deliver(conv, seq) => (
                    format!("NotHere {device} seq {seq}"),
                    None,
                    Some((*conv, *seq)),
                ),
                Missed::Receipt(..) => (format!("NotHere {device} (receipt)"), None, None),
            },
            Rpc::Alive { devices, at } => (
                format!("Alive ({} devices, as of {at})", devices.len()),
                None,
                None,
            ),
            Rpc::Wake => ("Wake".into(), None, None),
            Rpc::Subscribe { user, .. } => (format!("Subscribe {user:?}"), None, None),
            Rpc::Located { answers } => {
                let devices: usize = answers.iter().map(|(_, at)| at.len()).sum();
                (format!("Located ({devices} devices)"), None, None)
            }
            Rpc::Register { epoch, .. } => (format!("Register (epoch {epoch})"), None, None),
            Rpc::Registered { current, .. } => {
                (format!("Registered current={current}"), None, None)
            }
            Rpc::Unregister { epoch, .. } => (format!("Unregister (epoch {epoch})"), None, None),
            Rpc::LoadConv { .. } => ("LoadConv".into(), None, None),
            Rpc::ConvLoaded { last_seq, .. } => (format!("ConvLoaded last {last_seq}"), None, None),
            Rpc::ReadInbox { .. } => ("ReadInbox".into(), None, None),
            Rpc::InboxPage { entries, .. } => {
                (format!("InboxPage ({})", entries.len()), None, None)
            }
            Rpc::ReadPending { .. } => ("ReadPending".into(), None, None),
            Rpc::PendingPage { entries, .. } => {
                (format!("PendingPage ({})", entries.len()), None, None)
            }
            Rpc::ReadLog { from, to, .. } => (format!("ReadLog {from}..={to}"), None, None),
            Rpc::LogRange { msgs, .. } => (format!("LogRange ({})", msgs.len()), None, None),
            Rpc::FanoutStep {
                fence: _,
                conv,
                seq,
                from,
                devices,
                park,
            } => (
                format!(
                    "FanoutStep seq {seq} [{from}+{}]{}",
                    devices.len(),
                    if *park { "" } else { " push only" }
                ),
                None,
                Some((*conv, *seq)),
            ),
            Rpc::FanoutStepped { conv, seq, next } => (
                format!("FanoutStepped seq {seq} at {next}"),
                None,
                Some((*conv, *seq)),
            ),
            Rpc::ReadFanouts { .. } => ("ReadFanouts".into(), None, None),
            Rpc::FindMsg { id, .. } => (format!("FindMsg {id}"), Some(*id), None),
            Rpc::MsgFound { id, seq, .. } => (format!("MsgFound {seq:?}"), Some(*id), None),
            Rpc::Fanouts { jobs, .. } => (format!("Fanouts ({})", jobs.len()), None, None),
            Rpc::PutReceipt { receipt, .. } => (
                format!("PutReceipt {:?} ≤{}", receipt.kind, receipt.upto),
                None,
                None,
            ),
            Rpc::ReceiptStored { receipt, .. } => (
                format!("ReceiptStored {:?} ≤{}", receipt.kind, receipt.upto),
                None,
                None,
            ),
            Rpc::Lease { renew, acquire, .. } => (
                format!("Lease renew {renew:?} acquire {acquire:?}"),
                None,
                None,
            ),
            Rpc::LeaseTable { leases } => (format!("LeaseTable ({})", leases.len()), None, None),
            Rpc::Owner { slot, epoch } => (format!("Owner slot {slot} epoch {epoch}"), None, None),
            Rpc::Fenced { slot, epoch } => {
                (format!("Fenced slot {slot} epoch {epoch}"), None, None)
            }
            Rpc::ReadQueuedReceipts { .. } => ("ReadQueuedReceipts".into(), None, None),
            Rpc::QueuedReceipts { receipts, .. } => {
                (format!("QueuedReceipts ({})", receipts.len()), None, None)
            }
            Rpc::ReceiptSeen { receipts, .. } => match &receipts[..] {
                [r] => (format!("ReceiptSeen {:?} ≤{}", r.kind, r.upto), None, None),
                _ => (format!("ReceiptSeen ({})", receipts.len()), None, None),
            },
            Rpc::Replicate { ops } => {
                // A batch is drawn under its first append, the message a diagram follows.
                let key = ops.iter().find_map(|(_, op)| match op {
                    StorageOp::Append { msg, .. } => Some((msg.conv, msg.seq)),
                    _ => None,
                });
                let ids = match (ops.first(), ops.last()) {
                    (Some((a, _)), Some((b, _))) if a != b => {
                        format!("{}.{}..{}.{}", a.term, a.n, b.term, b.n)
                    }
                    (Some((a, _)), _) => format!("{}.{}", a.term, a.n),
                    _ => "nothing".into(),
                };
                (format!("Replicate {ids}"), None, key)
            }
            Rpc::Replicated { ids } => (format!("Replicated ({})", ids.len()), None, None),
            Rpc::ReadOps { .. } => ("ReadOps".into(), None, None),
            Rpc::Ops { ops, more, .. } => (
                format!("Ops ({}{})", ops.len(), if *more { ", more" } else { "" }),
                None,
                None,
            ),
            Rpc::ReplicaUp => ("ReplicaUp".into(), None, None),
            Rpc::Link { device, .. } => (format!("Link {device}"), None, None),
            Rpc::Linked { device, .. } => (format!("Linked {device}"), None, None),
            Rpc::StaleDevices { id, device, .. } => {
                (format!("StaleDevices {device}"), Some(*id), None)
            }
        },
    }
}

/// A frame that cannot be decoded.
#[derive(Debug, Error)]
pub enum WireError {
    /// The length prefix exceeds [`FRAME_BYTES_MAX`].
    #[error("frame of {0} bytes exceeds the {FRAME_BYTES_MAX}-byte limit")]
    TooLarge(usize),
    /// The bytes are not a valid frame.
    #[error("undecodable frame: {0}")]
    Decode(#[from] postcard::Error),
}

/// Bytes of the length prefix before each frame.
pub const LEN_BYTES: usize = 4;

/// Encode one frame with its length prefix.
pub fn encode(f: &Frame) -> Bytes {
    // Written once, behind room for the prefix, into a buffer sized for most frames: encoding
    // into a fresh vector and copying it behind the prefix cost two allocations and a copy
    // per frame, and the vector's growth from empty a few more.
    let mut buf = Vec::with_capacity(ENCODE_CAPACITY);
    buf.extend_from_slice(&[0; LEN_BYTES]);
    let mut buf = postcard::to_extend(f, buf).expect("every Frame is serialisable");
    let len = u32::try_from(buf.len() - LEN_BYTES).expect("a frame is far below 4 GiB");
    buf[..LEN_BYTES].copy_from_slice(&len.to_be_bytes());
    Bytes::from(buf)
}

/// The buffer a frame is encoded into at first: most frames (acks, receipts, a sealed text
/// with its envelope) fit, and a bigger one grows it.
const ENCODE_CAPACITY: usize = 256;

/// Take one complete frame off the front of `buf`, if there is one, with its bytes on the wire
/// (length prefix included), so a caller can digest exactly what travelled without copying.
pub fn decode(buf: &mut BytesMut) -> Result<Option<(Frame, Bytes)>, WireError> {
    if buf.len() < LEN_BYTES {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(WireError::TooLarge(len));
    }
    if buf.len() < LEN_BYTES + len {
        return Ok(None);
    }
    let raw = buf.split_to(LEN_BYTES + len).freeze();
    let wire = postcard::from_bytes(&raw[LEN_BYTES..])?;
    Ok(Some((wire, raw)))
}

/// A frame of `bytes` bytes on the wire (length prefix included) with a body of zeros: what
/// the benchmark's floor sends in place of a real frame of that size.
pub fn filler(bytes: u32) -> Bytes {
    let body = (bytes as usize).saturating_sub(LEN_BYTES);
    let mut frame = BytesMut::with_capacity(LEN_BYTES + body);
    frame.extend_from_slice(&(body as u32).to_be_bytes());
    frame.resize(LEN_BYTES + body, 0);
    frame.freeze()
}

/// Drop every complete frame at the front of `buf` unread and say how many there were (the
/// floor's receivers count frames without decoding them).
pub fn skip_frames(buf: &mut BytesMut) -> u64 {
    let mut n = 0;
    while buf.len() >= LEN_BYTES {
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if buf.len() < LEN_BYTES + len {
            break;
        }
        let _ = buf.split_to(LEN_BYTES + len);
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use chatsim_system::proto::{DeviceId, UserId};

    // A frame is its postcard body behind a 4-byte big-endian length, and a ciphertext is a
    // plain length and its bytes (what a `Vec<u8>` would be, and what clients/python reads),
    // whichever way the encoder writes them; decoding gives the frame back.
    #[test]
    fn a_frame_is_its_length_then_its_postcard_body_with_ciphertexts_as_plain_bytes() {
        let d = DeviceId {
            user: UserId(3),
            index: 0,
        };
        let body: Vec<u8> = (0..=200).collect();
        let f = Frame {
            from: Host::Device(d),
            sent_ms: 12_345,
            wire: Wire::Up(chatsim_system::proto::Up::Send {
                conv: chatsim_system::proto::ConvId::direct(UserId(3), UserId(9)),
                id: chatsim_system::proto::MsgId { device: d, n: 7 },
                body: body.clone(),
                sent_at: 1_000,
                op: None,
                version: 0,
                keys: vec![(d, vec![0xAB; 48])],
            }),
        };
        let bytes = encode(&f);
        let inner = postcard::to_allocvec(&f).expect("serialisable");
        assert_eq!(&bytes[..LEN_BYTES], &(inner.len() as u32).to_be_bytes());
        assert_eq!(&bytes[LEN_BYTES..], &inner[..]);
        let mut plain = postcard::to_allocvec(&body.len()).expect("a varint");
        plain.extend_from_slice(&body);
        assert!(
            bytes.windows(plain.len()).any(|w| w == &plain[..]),
            "the body is its varint length and its bytes"
        );
        let mut key = postcard::to_allocvec(&d).expect("an id");
        key.push(48);
        key.extend_from_slice(&[0xAB; 48]);
        assert!(
            bytes.windows(key.len()).any(|w| w == &key[..]),
            "a sealed key is its device, its length and its bytes"
        );
        let mut buf = BytesMut::from(&bytes[..]);
        let (back, raw) = decode(&mut buf).expect("decodes").expect("whole");
        assert_eq!(raw, bytes);
        assert_eq!(encode(&back), bytes);
    }

    // A frame is counted by its purpose wherever it travels, else by the link it crossed.
    #[test]
    fn frames_are_counted_by_purpose_first_then_by_link() {
        let phone = Host::Device(DeviceId {
            user: UserId(1),
            index: 0,
        });
        let (gw, shard, storage) = (Host::Gateway(0), Host::Shard(1), Host::Storage(0));
        let server = |from: Host, rpc: Rpc| Wire::Server(Envelope { from, rpc });
        let cases = [
            (phone, gw, Wire::Up(Up::Ping), FrameKind::Heartbeat),
            (gw, phone, Wire::Down(Down::Pong), FrameKind::Heartbeat),
            (
                phone,
                gw,
                Wire::Up(Up::Subscribe { user: None }),
                FrameKind::Presence,
            ),
            (
                phone,
                gw,
                Wire::Up(Up::Drain { after: None }),
                FrameKind::DeviceLink,
            ),
            (
                gw,
                shard,
                server(
                    gw,
                    Rpc::FromDevice {
                        device: DeviceId {
                            user: UserId(1),
                            index: 0,
                        },
                        up: Up::Ping,
                    },
                ),
                FrameKind::Heartbeat,
            ),
            (
                gw,
                shard,
                server(
                    gw,
                    Rpc::FromDevice {
                        device: DeviceId {
                            user: UserId(1),
                            index: 0,
                        },
                        up: Up::Drain { after: None },
                    },
                ),
                FrameKind::GatewayShard,
            ),
            (shard, Host::Push, server(shard, Rpc::Wake), FrameKind::Push),
            (shard, storage, Wire::LinkAck(3), FrameKind::EngineAck),
        ];
        for (from, to, wire, want) in cases {
            assert_eq!(FrameKind::of(from, to, &wire), want, "{wire:?}");
        }
        let names: std::collections::BTreeSet<&str> =
            FrameKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), FrameKind::ALL.len(), "names are distinct");
        for (i, k) in FrameKind::ALL.iter().enumerate() {
            assert_eq!(
                *k as usize, i,
                "ALL is in declaration order: counters index by it"
            );
        }
    }

    // The floor's frames count as frames: a filler of n bytes is n bytes, and a buffer of
    // fillers skips exactly the whole ones.
    #[test]
    fn fillers_have_their_size_and_skip_counts_whole_frames() {
        let mut buf = BytesMut::new();
        for n in [4, 5, 200] {
            let f = filler(n);
            assert_eq!(f.len(), n as usize);
            buf.extend_from_slice(&f);
        }
        buf.extend_from_slice(&filler(100)[..50]);
        assert_eq!(skip_frames(&mut buf), 3);
        assert_eq!(buf.len(), 50, "the half frame stays for the next read");
        buf.extend_from_slice(&filler(100)[50..]);
        assert_eq!(skip_frames(&mut buf), 1);
        assert!(buf.is_empty());
    }

    // A frame split at every possible byte boundary must still decode exactly once.
    #[test]
    fn frames_survive_arbitrary_splits_and_oversize_is_refused() {
        let frame = |wire| Frame {
            from: Host::Session,
            sent_ms: 7,
            wire,
        };
        let frames = [
            frame(Wire::Up(Up::Ping)),
            frame(Wire::Down(Down::Pong)),
            frame(Wire::Up(Up::Drain { after: None })),
        ];
        let bytes: Vec<u8> = frames.iter().flat_map(|f| encode(f).to_vec()).collect();
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            for part in [&bytes[..cut], &bytes[cut..]] {
                buf.extend_from_slice(part);
                while let Some((f, raw)) = decode(&mut buf).expect("valid") {
                    assert_eq!(raw, encode(&f), "the raw bytes are the frame as sent");
                    got.push(f);
                }
            }
            assert_eq!(got, frames);
        }
        let mut huge = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        assert!(matches!(decode(&mut huge), Err(WireError::TooLarge(_))));
    }
}
