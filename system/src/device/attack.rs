//! The compromised app: the honest phone with a module that sends crafted requests
//! ([`Attack`]) on its own connection once it is welcomed, and records the answers the servers
//! should never have given: a ✓ for a made-up id, a group's end, a foreign conversation's
//! messages. Everything else it does stays the honest app's, so the attack runs inside a live
//! workload, as a stolen phone would.

use super::conversation::Slot;
use super::keys::SealedGroup;
use super::{Device, Link};
use crate::attack::{Attack, FORGED_N_BASE, FORGED_RECEIPT_UPTO};
use crate::e2e::{Bundle, GroupSealed};
use crate::proto::{ConvId, DeviceId, GroupOp, Millis, MsgId, ReceiptKind, Refusal, Seq, Up};
use crate::{Effect, Observation};

/// How often a forged membership change is sent again with the version the shard names (a
/// stale version is refused before membership is looked at, so the attacker catches up first).
const FORGED_RESENDS_MAX: u8 = 3;

/// A request an attack sent under an id it made up, kept to record the answer.
#[derive(Clone, Debug, Hash)]
pub(super) struct Forged {
    /// The frame, for a resend with a newer version.
    up: Up,
    /// Resends so far.
    resends: u8,
}

impl Device {
    /// Queue `attack`: it goes out once the connection is welcomed.
    pub(super) fn plan_attack(&mut self, now: Millis, attack: Attack, out: &mut Vec<Effect>) {
        self.attacks_due.push(attack);
        self.launch_attacks(now, out);
    }

    /// Send every queued attack, if the connection is ready.
    pub(super) fn launch_attacks(&mut self, now: Millis, out: &mut Vec<Effect>) {
        if self.link != Link::Ready {
            return;
        }
        for attack in std::mem::take(&mut self.attacks_due) {
            self.launch(now, attack, out);
        }
    }

    fn forged_id(&mut self) -> MsgId {
        let id = MsgId {
            device: self.id,
            n: FORGED_N_BASE + self.forged_n,
        };
        self.forged_n += 1;
        id
    }

    fn send_forged(&mut self, id: MsgId, up: Up, out: &mut Vec<Effect>) {
        let f = Forged {
            up: up.clone(),
            resends: 0,
        };
        self.forged.insert(id, f);
        out.push(Effect::Up(up));
    }

    fn launch(&mut self, now: Millis, attack: Attack, out: &mut Vec<Effect>) {
        Self::observe(
            out,
            Observation::Attacked {
                attack: attack.clone(),
            },
        );
        let sent_at = self.local_clock(now);
        match attack {
            Attack::Impersonate { to, victim } => {
                let conv = ConvId::direct(self.id.user, to);
                let id = MsgId {
                    device: DeviceId::primary(victim),
                    ..self.forged_id()
                };
                let body = self.seal(conv, id, format!("forged as {victim}").as_bytes());
                let up = text(conv, id, body, sent_at);
                self.send_forged(id, up, out);
            }
            Attack::PostForeign { a, b } => {
                let conv = ConvId::direct(a, b);
                let id = self.forged_id();
                let up = text(conv, id, b"posted from outside".to_vec(), sent_at);
                self.send_forged(id, up, out);
            }
            Attack::FetchForeign { conv } => {
                self.probing.insert(conv);
                let to = self.topo.knobs.gap_fetch_seqs_max;
                out.push(Effect::Up(Up::Fetch { conv, from: 1, to }));
            }
            Attack::PullForeign { group } => {
                let conv = ConvId::group(group);
                self.probing.insert(conv);
                out.push(Effect::Up(Up::Pull { conv }));
            }
            Attack::ForgeReceipt { a, b } => {
                let conv = ConvId::direct(a, b);
                out.push(Effect::Up(Up::Receipt {
                    conv,
                    kind: ReceiptKind::Read,
                    upto: FORGED_RECEIPT_UPTO,
                    notify: self.topo.devices_of(a),
                }));
            }
            Attack::HijackGroup { group } => {
                let conv = ConvId::group(group);
                let id = self.forged_id();
                let version = self.convs.get(&conv).map_or(0, |v| v.version);
                let up = Up::Send {
                    conv,
                    id,
                    body: Vec::new(),
                    sent_at,
                    op: Some(GroupOp::Add { user: self.id.user }),
                    version,
                    keys: Vec::new(),
                };
                self.send_forged(id, up, out);
            }
            Attack::ReuseId => {
                // A stored one: an id still in flight is the sender's own to change (the server
                // cannot tell a retry resealed for new members from new words), so only a
                // replay of a stored id can rewrite what someone already has.
                let Some((id, conv)) = self.last_acked_text else {
                    return; // Nothing stored yet: nothing to replay.
                };
                let other = format!("{id} rewritten").into_bytes();
                let sealed = if conv.is_group() {
                    self.seal_group(conv, id, &other)
                } else {
                    (self.seal(conv, id, &other), 0, Vec::new())
                };
                let up = post(conv, id, sealed, sent_at);
                // Not kept as forged: the id is the device's own, and its answers are the
                // honest app's to take (a ✓ for a message it already shows changes nothing).
                out.push(Effect::Up(up));
            }
            Attack::Tamper { conv } => {
                let id = self.forged_id();
                let plaintext = b"tampered".to_vec();
                let sealed = if conv.is_group() {
                    let (body, version, keys) = self.seal_group(conv, id, &plaintext);
                    (tamper_group(body), version, keys)
                } else {
                    (
                        tamper_direct(self.seal(conv, id, &plaintext)),
                        0,
                        Vec::new(),
                    )
                };
                let up = post(conv, id, sealed, sent_at);
                self.send_forged(id, up, out);
            }
        }
    }

    /// A ✓ for a forged id: recorded as acked (which the judges then check), and kept away
    /// from the honest outbox, which never heard of it. Returns whether it was one.
    pub(super) fn forged_sent(
        &mut self,
        now: Millis,
        conv: ConvId,
        id: MsgId,
        seq: Seq,
        out: &mut Vec<Effect>,
    ) -> bool {
        let Some(f) = self.forged.remove(&id) else {
            return false;
        };
        Self::observe(out, Observation::Acked { id, conv, seq });
        // A text under our own id stored in a chat we are in (a tampered one): its number is
        // ours, as an honest ✓'s is. Left out of the view, the honest app took it for a gap,
        // fetched its own text back and filled the gap unseen by the judges (gap_repair,
        // malicious seeds 421, 707, 840, 987, 1075, 1215).
        let text = matches!(f.up, Up::Send { op: None, .. });
        let ours = if conv.is_group() {
            self.convs.get(&conv).is_some_and(|v| v.joined)
        } else {
            conv.direct_peer(self.id.user).is_some()
        };
        if text && ours && id.device == self.id {
            self.fill_slot(
                now,
                conv,
                seq,
                Slot::Mine(id, None, Default::default()),
                out,
            );
        }
        true
    }

    /// A refusal of a forged id. A stale version is caught up and tried again (up to
    /// [`FORGED_RESENDS_MAX`] times); anything else ends the attempt. Returns whether it was one.
    pub(super) fn forged_refused(
        &mut self,
        reason: Refusal,
        id: Option<MsgId>,
        out: &mut Vec<Effect>,
    ) -> bool {
        let Some(id) = id.filter(|id| self.forged.contains_key(id)) else {
            return false;
        };
        let f = self.forged.get_mut(&id).expect("looked up above");
        if let (Refusal::StaleMembers { version }, Up::Send { version: v, .. }) =
            (reason, &mut f.up)
        {
            if f.resends < FORGED_RESENDS_MAX {
                f.resends += 1;
                *v = version;
                out.push(Effect::Up(f.up.clone()));
                return true;
            }
        }
        self.forged.remove(&id);
        let refused = Observation::Refused {
            reason,
            id: Some(id),
            fin: true,
        };
        Self::observe(out, refused);
        true
    }

    /// A message of a conversation an attack asked about: recorded before the honest app
    /// handles it (it cannot open it, or it may not show it at all).
    pub(super) fn probed(&self, conv: ConvId) -> bool {
        self.probing.contains(&conv)
    }
}

/// Flip a bit in every sealed copy: the bundle still parses, no copy opens.
fn tamper_direct(body: Vec<u8>) -> Vec<u8> {
    let Some(mut bundle) = Bundle::decode(&body) else {
        return body;
    };
    for (_, copy) in &mut bundle.copies {
        if let Some(b) = copy.last_mut() {
            *b ^= 1;
        }
    }
    bundle.encode()
}

/// Flip a bit in a group text's ciphertext: it parses, and does not open under the sender key.
fn tamper_group(body: Vec<u8>) -> Vec<u8> {
    let Some(mut sealed) = GroupSealed::decode(&body) else {
        return body;
    };
    if let Some(b) = sealed.ciphertext.last_mut() {
        *b ^= 1;
    }
    sealed.encode()
}

/// A text as sealed: (body, membership version, sender keys), as `seal_group` returns them.
fn post(conv: ConvId, id: MsgId, sealed: SealedGroup, sent_at: Millis) -> Up {
    let (body, version, keys) = sealed;
    Up::Send {
        conv,
        id,
        body,
        sent_at,
        op: None,
        version,
        keys,
    }
}

/// A direct text: no membership version, no sender keys.
fn text(conv: ConvId, id: MsgId, body: Vec<u8>, sent_at: Millis) -> Up {
    post(conv, id, (body, 0, Vec::new()), sent_at)
}
