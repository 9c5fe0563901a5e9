//! End-to-end keys on the device: pairwise sessions per peer device, sealing a direct text
//! per recipient device, group sender keys (made per membership version, carried sealed per
//! member until a message with them is stored) and opening what arrives.

use super::Device;
use crate::bugs::Bug;
use crate::e2e::{Bundle, GroupSealed, Session};
use crate::proto::{ConvId, DeviceId, Message, MsgId, Seq};
use rand::RngCore;
use std::collections::BTreeSet;

/// A group text ready to send: body, the membership version it was sealed for, and the
/// sender key sealed per member device (empty once distributed).
pub(super) type SealedGroup = (Vec<u8>, Seq, Vec<(DeviceId, Vec<u8>)>);

impl Device {
    pub(super) fn open_group(&mut self, msg: &Message) -> Option<Vec<u8>> {
        if self.bug(Bug::TlsOnly) {
            return Some(msg.body.clone());
        }
        let sealed = GroupSealed::decode(&msg.body)?;
        let key = self
            .peer_keys
            .get(&(msg.id.device, msg.conv, sealed.version))?;
        crate::e2e::group_open(key, msg.conv, msg.id, &sealed)
    }

    /// Keep the sender key a group message carries for us, whatever happens to the message.
    pub(super) fn take_keys(&mut self, msg: &Message) {
        let Some((_, copy)) = msg.keys.iter().find(|(d, _)| *d == self.id) else {
            return;
        };
        let sender = msg.id.device;
        // The copy's nonce depends on the version, which the body names.
        let Some(sealed) = GroupSealed::decode(&msg.body) else {
            return;
        };
        let version = sealed.version;
        let Some(opened) = self
            .session(sender)
            .and_then(|s| s.open_key(msg.id, version, copy))
        else {
            return;
        };
        if let Some((named, key)) = crate::e2e::decode_sender_key(&opened) {
            if named == version {
                self.peer_keys.insert((sender, msg.conv, version), key);
            }
        }
    }

    /// The devices a group message of ours goes to, as far as our view knows.
    pub(super) fn group_recipients(&self, conv: ConvId) -> Vec<DeviceId> {
        self.convs.get(&conv).map_or_else(Vec::new, |v| {
            v.members
                .iter()
                .flat_map(|u| self.topo.devices_of(*u))
                .filter(|d| *d != self.id)
                .collect()
        })
    }

    /// Seal a group text under our sender key for the membership version we know; the key
    /// itself goes along, sealed per member device, until a message carrying it is stored.
    pub(super) fn seal_group(&mut self, conv: ConvId, id: MsgId, plaintext: &[u8]) -> SealedGroup {
        let version = self.convs.get(&conv).map_or(0, |v| v.version);
        if self.bug(Bug::TlsOnly) {
            return (plaintext.to_vec(), version, Vec::new());
        }
        let key = match self.my_keys.get(&(conv, version)) {
            Some(k) => *k,
            None => {
                let mut k = [0u8; 32];
                self.rng.fill_bytes(&mut k);
                self.my_keys.insert((conv, version), k);
                k
            }
        };
        let mut keys = Vec::new();
        if !self.distributed.contains(&(conv, version)) {
            let wire = crate::e2e::encode_sender_key(version, &key);
            for to in self.group_recipients(conv) {
                if let Some(session) = self.session(to) {
                    keys.push((to, session.seal_key(id, version, &wire)));
                }
            }
        }
        let body = crate::e2e::group_seal(&key, conv, version, id, plaintext);
        (body, version, keys)
    }

    /// The body servers see: one copy per recipient device, sealed for that device (plaintext
    /// copies with `tls-only`).
    pub(super) fn seal(&mut self, conv: ConvId, id: MsgId, plaintext: &[u8]) -> Vec<u8> {
        let tls_only = self.bug(Bug::TlsOnly);
        let mut copies = Vec::new();
        let left_out = self.left_out(conv);
        for to in self.topo.recipients(conv, self.id) {
            if left_out.contains(&to) {
                continue; // Not known to be linked (storage says so if it is).
            }
            if tls_only {
                copies.push((to, plaintext.to_vec()));
            } else if let Some(session) = self.session(to) {
                copies.push((to, session.seal(id, plaintext)));
            }
            // A device missing from the directory cannot be written to.
        }
        Bundle { copies }.encode()
    }

    /// The recipient devices of a direct text that a copy sealed now leaves out: linked
    /// mid-run and not yet known to be. Empty, without a look at the recipients, in a world
    /// that links no device mid-run (every transmission asks).
    pub(super) fn left_out(&self, conv: ConvId) -> Vec<DeviceId> {
        if self.topo.late_devices.is_empty() {
            return Vec::new();
        }
        self.topo
            .recipients(conv, self.id)
            .into_iter()
            .filter(|to| self.topo.late_devices.contains(to) && !self.known_late.contains(to))
            .collect()
    }

    /// The devices linked mid-run that a stored direct text of ours has no copy for.
    pub(super) fn unsealed_in(&self, stored: &Message) -> BTreeSet<DeviceId> {
        if self.topo.late_devices.is_empty() {
            return BTreeSet::new();
        }
        let bundle = Bundle::decode(&stored.body);
        self.topo
            .recipients(stored.conv, self.id)
            .into_iter()
            .filter(|d| self.topo.late_devices.contains(d))
            .filter(|d| bundle.as_ref().is_none_or(|b| b.copy_for(*d).is_none()))
            .collect()
    }

    pub(super) fn session(&mut self, peer: DeviceId) -> Option<&Session> {
        if !self.sessions.contains_key(&peer) {
            let key = self.topo.keys.get(&peer)?;
            let session = Session::new(&self.keys, self.id, peer, key);
            self.sessions.insert(peer, session);
        }
        self.sessions.get(&peer)
    }

    /// This device's plaintext of a delivered message, if it can open it.
    pub(super) fn open(&mut self, msg: &Message) -> Option<Vec<u8>> {
        let bundle = Bundle::decode(&msg.body)?;
        let copy = bundle.copy_for(self.id)?;
        if self.bug(Bug::TlsOnly) {
            return Some(copy.to_vec());
        }
        self.session(msg.id.device)?.open(msg.id, copy)
    }
}
