//! `e2e_confidential`: no byte a server received contains a message's plaintext. The history
//! carries every frame a server host received; all plaintexts are searched for in one pass per
//! frame (Aho-Corasick), so the check stays linear in the bytes servers saw.

use crate::checkers::{Verdict, Violation};
use crate::history::{Event, History};
use aho_corasick::AhoCorasick;
use chatsim_system::proto::MsgId;
use chatsim_system::Observation;
use std::collections::{BTreeMap, BTreeSet};

/// Name of the confidentiality invariant.
pub const E2E_CONFIDENTIAL: &str = "e2e_confidential";
/// Texts shorter than this are not searched for: a few bytes turn up in ciphertext by chance.
pub const PLAINTEXT_MIN_BYTES: usize = 8;

/// No server-visible byte contains any plaintext a user sent.
pub fn e2e_confidential(h: &History) -> Verdict {
    let mut texts: BTreeMap<Vec<u8>, MsgId> = BTreeMap::new();
    for r in &h.records {
        if let Event::Device {
            obs: Observation::Sent { id, body, .. },
            ..
        } = &r.event
        {
            if body.len() >= PLAINTEXT_MIN_BYTES {
                texts.entry(body.clone()).or_insert(*id);
            }
        }
    }
    let texts: Vec<(Vec<u8>, MsgId)> = texts.into_iter().collect();
    let mut violations = Vec::new();
    let checked = h.server_frames.len();
    if !texts.is_empty() {
        let ac = AhoCorasick::new(texts.iter().map(|(t, _)| t))
            .expect("a set of byte strings always builds an automaton");
        let mut reported = BTreeSet::new();
        for f in &h.server_frames {
            // Overlapping: a text that is a prefix of another (#1 of #11) must not hide it.
            for m in ac.find_overlapping_iter(&f.bytes) {
                let (text, id) = &texts[m.pattern().as_usize()];
                if reported.insert(*id) {
                    violations.push(Violation {
                        invariant: E2E_CONFIDENTIAL,
                        message: Some(id.to_string()),
                        body: Some(String::from_utf8_lossy(text).into_owned()),
                        device: Some(f.host.to_string()),
                        conv: None,
                        at: Some(f.t),
                        detail: format!("the plaintext of {id} reached {} at {} ms", f.host, f.t),
                    });
                }
            }
        }
    }
    Verdict {
        name: E2E_CONFIDENTIAL,
        holds: violations.is_empty(),
        violations,
        checked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::ServerFrame;
    use chatsim_system::proto::{ConvId, DeviceId, Host, UserId};

    fn history(frame: &[u8]) -> History {
        let a = DeviceId::primary(UserId(0));
        let mut h = History::new(2);
        let id = MsgId { device: a, n: 0 };
        let conv = ConvId::direct(UserId(0), UserId(1));
        h.observe(
            1,
            a,
            Observation::Sent {
                id,
                conv,
                body: b"the launch code is 1234".to_vec(),
            },
        );
        h.server_frames.push(ServerFrame {
            t: 5,
            host: Host::Shard(0),
            bytes: frame.to_vec(),
        });
        h
    }

    // A plaintext anywhere inside a server's frame is caught and names message and host; the
    // same message as ciphertext passes.
    #[test]
    fn plaintext_seen_by_a_server_is_caught_and_ciphertext_is_not() {
        let v = e2e_confidential(&history(b"\x00\x17header:the launch code is 1234:trailer"));
        assert!(!v.holds);
        assert_eq!(v.violations[0].message.as_deref(), Some("u0.d0#0"));
        assert_eq!(v.violations[0].device.as_deref(), Some("shard-1"));
        let v = e2e_confidential(&history(&[
            0x8e, 0x11, 0x42, 0x07, 0x99, 0xa0, 0x3c, 0x5d, 0x01,
        ]));
        assert!(v.holds);
        assert_eq!(v.checked, 1);
    }
}
