//! `e2e_confidential`: no byte a server received contains a message's plaintext. All
//! plaintexts are searched for in one pass per frame (Aho-Corasick), so the check stays linear
//! in the bytes servers saw. An engine either hands the checker every frame a server host
//! received, or (to keep memory flat on big worlds) screens each frame as it arrives with a
//! [`Screen`] built from the plan's texts and keeps only the frames with a hit; the checker
//! then also fails any sent text the screen was not looking for.

use crate::checkers::{Verdict, Violation};
use crate::history::{Event, History, ServerFrame};
use aho_corasick::AhoCorasick;
use chatsim_system::proto::{Host, Millis, MsgId};
use chatsim_system::Observation;
use std::collections::{BTreeMap, BTreeSet};

/// Name of the confidentiality invariant.
pub const E2E_CONFIDENTIAL: &str = "e2e_confidential";
/// Texts shorter than this are not searched for: a few bytes turn up in ciphertext by chance.
pub const PLAINTEXT_MIN_BYTES: usize = 8;

/// What an engine's [`Screen`] looked for and how many frames it scanned: when a history
/// carries this, its `server_frames` are only the frames that contained one of `texts`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Screened {
    /// The plaintexts every server frame was searched for.
    pub texts: BTreeSet<Vec<u8>>,
    /// Frames servers received, all scanned.
    pub frames: u64,
}

/// Scans each frame a server receives, as it arrives, for texts known before the run (the
/// plan's), and keeps only frames that contain one: a run's memory then no longer grows with
/// every byte servers saw.
pub struct Screen {
    ac: Option<AhoCorasick>,
    screened: Screened,
    kept: Vec<ServerFrame>,
}

impl Screen {
    /// A screen for these plaintexts (those shorter than [`PLAINTEXT_MIN_BYTES`] are skipped,
    /// as the checker skips them).
    pub fn new(texts: impl IntoIterator<Item = Vec<u8>>) -> Screen {
        let texts: BTreeSet<Vec<u8>> = texts
            .into_iter()
            .filter(|t| t.len() >= PLAINTEXT_MIN_BYTES)
            .collect();
        let ac = (!texts.is_empty()).then(|| {
            AhoCorasick::new(&texts).expect("a set of byte strings always builds an automaton")
        });
        Screen {
            ac,
            screened: Screened { texts, frames: 0 },
            kept: Vec::new(),
        }
    }

    /// A server host received `bytes` at `t`.
    pub fn see(&mut self, t: Millis, host: Host, bytes: &[u8]) {
        self.screened.frames += 1;
        if self.ac.as_ref().is_some_and(|ac| ac.is_match(bytes)) {
            self.kept.push(ServerFrame {
                t,
                host,
                bytes: bytes.to_vec(),
            });
        }
    }

    /// Hand what was kept, and what was looked for, to the history.
    pub fn finish(self, h: &mut History) {
        h.server_frames = self.kept;
        h.screened = Some(self.screened);
    }
}

/// No server-visible byte contains any plaintext a user sent.
pub fn e2e_confidential(h: &History) -> Verdict {
    // A membership change's `Sent` shows the user a description of it; membership is routing
    // metadata servers see by design, so only texts are secret.
    let changes = h.change_ids();
    let mut texts: BTreeMap<Vec<u8>, (MsgId, Millis)> = BTreeMap::new();
    for r in &h.records {
        if let Event::Device {
            obs: Observation::Sent { id, body, .. },
            ..
        } = &r.event
        {
            if body.len() >= PLAINTEXT_MIN_BYTES && !changes.contains(id) {
                texts.entry(body.clone()).or_insert((*id, r.t));
            }
        }
    }
    let mut violations = Vec::new();
    let checked = match &h.screened {
        Some(s) => {
            // A text the engine did not screen for could have reached a server unseen.
            for (text, (id, t)) in &texts {
                if !s.texts.contains(text) {
                    violations.push(Violation {
                        invariant: E2E_CONFIDENTIAL,
                        message: Some(id.to_string()),
                        body: Some(String::from_utf8_lossy(text).into_owned()),
                        device: None,
                        conv: None,
                        at: Some(*t),
                        detail: format!(
                            "{id} was sent but servers' frames were not screened for its text"
                        ),
                    });
                }
            }
            usize::try_from(s.frames).unwrap_or(usize::MAX)
        }
        None => h.server_frames.len(),
    };
    let texts: Vec<(Vec<u8>, MsgId)> = texts.into_iter().map(|(t, (id, _))| (t, id)).collect();
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

    // Screening as frames arrive keeps the frame with the plaintext and drops the others, and
    // the checker over the screened history reaches the same verdict as over every frame.
    #[test]
    fn a_screen_keeps_only_frames_with_a_plaintext_and_the_verdict_stands() {
        let mut h = history(b"");
        h.server_frames.clear();
        let mut screen = Screen::new([b"the launch code is 1234".to_vec(), b"short".to_vec()]);
        screen.see(3, Host::Gateway(0), &[0x8e, 0x11, 0x42]);
        screen.see(5, Host::Shard(0), b"..the launch code is 1234..");
        screen.see(6, Host::Storage(0), b"short short short");
        screen.finish(&mut h);
        assert_eq!(h.server_frames.len(), 1);
        let v = e2e_confidential(&h);
        assert!(!v.holds);
        assert_eq!(v.checked, 3);
        assert_eq!(v.violations[0].device.as_deref(), Some("shard-1"));
    }

    // A text sent but not screened for is a hole in the engine's screening: it fails the check
    // even though no kept frame shows it.
    #[test]
    fn a_sent_text_the_screen_did_not_look_for_is_caught() {
        let mut h = history(b"");
        h.server_frames.clear();
        let mut screen = Screen::new([b"some other text entirely".to_vec()]);
        screen.see(5, Host::Shard(0), b"..the launch code is 1234..");
        screen.finish(&mut h);
        assert!(h.server_frames.is_empty());
        let v = e2e_confidential(&h);
        assert!(!v.holds);
        assert!(v.violations[0].detail.contains("not screened"));
        assert_eq!(v.violations[0].message.as_deref(), Some("u0.d0#0"));
    }
}
