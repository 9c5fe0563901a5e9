//! Framing on simulated (or real) TCP: a 4-byte big-endian length, then the postcard encoding
//! of one [`Wire`] frame. Decoding separates "not enough bytes yet" (`Ok(None)`) from bad input
//! (`Err`), so a reader can be cancelled and resumed without losing a frame.

use bytes::{Bytes, BytesMut};
use chatsim_system::limits::FRAME_BYTES_MAX;
use chatsim_system::proto::{Down, Envelope, Up};
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

const LEN_BYTES: usize = 4;

/// Encode one frame with its length prefix.
pub fn encode(w: &Wire) -> Bytes {
    let body = postcard::to_allocvec(w).expect("every Wire value is serialisable");
    let mut buf = Vec::with_capacity(LEN_BYTES + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
    buf.extend_from_slice(&body);
    Bytes::from(buf)
}

/// Take one complete frame off the front of `buf`, if there is one, with its bytes on the wire
/// (length prefix included), so a caller can digest exactly what travelled without copying.
pub fn decode(buf: &mut BytesMut) -> Result<Option<(Wire, Bytes)>, WireError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    // A frame split at every possible byte boundary must still decode exactly once.
    #[test]
    fn frames_survive_arbitrary_splits_and_oversize_is_refused() {
        let frames = [
            Wire::Up(Up::Ping),
            Wire::Down(Down::Pong),
            Wire::Up(Up::Drain { after: None }),
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
