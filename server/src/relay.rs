//! The floor a chat server is measured against: a bare WebSocket relay with no chat logic (no
//! sequencing, storage, acks, sessions or encryption). Each connection names itself once; every
//! message after that names its addressees and is forwarded to each one connected, or dropped.
//! `chatsim load --floor` drives it with the same schedule as a chat load, so the two servers'
//! throughput and latency can be set side by side (`scripts/load.sh`).
//!
//! Wire, one binary WebSocket message each:
//! - first: the connection's own id, u32 little-endian;
//! - then: addressee count (u16 LE), that many ids (u32 LE), then the payload, which each
//!   addressee receives as one binary message.

use crate::serve::ws_config;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio_tungstenite::tungstenite::Message;

/// Who is connected: id to the queue of its connection's writer. Only looked up, never
/// iterated, so the map's order shapes nothing.
type Registry = Arc<Mutex<HashMap<u32, UnboundedSender<Bytes>>>>;

/// Parse a relayed message: its addressees and its payload.
pub fn split(msg: &[u8]) -> Option<(Vec<u32>, &[u8])> {
    let n = usize::from(u16::from_le_bytes(msg.get(..2)?.try_into().ok()?));
    let ids = msg.get(2..2 + 4 * n)?;
    let to = ids
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().expect("chunks of four")))
        .collect();
    Some((to, &msg[2 + 4 * n..]))
}

/// A relayed message for `to` carrying `payload`.
pub fn join(to: &[u32], payload: &[u8]) -> Vec<u8> {
    let n = u16::try_from(to.len()).expect("a relay message names at most 65535 addressees");
    let mut out = Vec::with_capacity(2 + 4 * to.len() + payload.len());
    out.extend_from_slice(&n.to_le_bytes());
    for id in to {
        out.extend_from_slice(&id.to_le_bytes());
    }
    out.extend_from_slice(payload);
    out
}

/// Relay on `listener` until the task is dropped.
pub async fn relay(listener: TcpListener) -> io::Result<()> {
    let registry: Registry = Arc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(stream, registry.clone()));
    }
}

async fn connection(stream: TcpStream, registry: Registry) {
    let Ok(ws) = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config())).await
    else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let me = match source.next().await {
        Some(Ok(Message::Binary(b))) if b.len() == 4 => {
            u32::from_le_bytes(b[..].try_into().expect("four bytes"))
        }
        _ => return,
    };
    let (tx, mut rx) = unbounded_channel::<Bytes>();
    registry.lock().expect("never poisoned").insert(me, tx);
    let writer = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if sink.send(Message::Binary(b)).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(msg)) = source.next().await {
        let Message::Binary(b) = msg else { continue };
        let Some((to, payload)) = split(&b) else {
            break;
        };
        let payload = Bytes::copy_from_slice(payload);
        let reg = registry.lock().expect("never poisoned");
        for id in to {
            if let Some(tx) = reg.get(&id) {
                let _ = tx.send(payload.clone());
            }
        }
    }
    registry.lock().expect("never poisoned").remove(&me);
    writer.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relay_message_names_its_addressees_and_keeps_its_payload() {
        let m = join(&[3, 70_000], b"hello");
        assert_eq!(split(&m), Some((vec![3, 70_000], &b"hello"[..])));
        assert_eq!(split(&m[..5]), None, "a cut list of addressees is refused");
        assert_eq!(split(&[]), None);
    }
}
