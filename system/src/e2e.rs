//! End-to-end encryption, per device, as Signal and WhatsApp do it in spirit: every device has
//! its own X25519 key pair; a sender seals one ciphertext per recipient device, with a key from
//! HKDF-SHA256 over the X25519 shared secret and ChaCha20-Poly1305 as the AEAD. Servers relay
//! and store the sealed bundle and can read none of it.
//!
//! Groups use sender keys, as Signal's and WhatsApp's group protocols do: each sender device
//! draws a symmetric key per group and membership version, seals the message once under it,
//! and sends the key itself sealed pairwise to every member device, only on its first message
//! under that version. Every membership change starts a new version and so a new key: a member
//! who left never holds the key of anything sent after (WhatsApp rotates on removal; rotating
//! on every change is simpler and no weaker).
//!
//! Simplifications, stated: keys are static (no ratchet, no prekeys, so no forward secrecy);
//! the public-key directory is part of the deployment every device is configured with (the
//! stand-in for a key server); the nonce is derived from the message id, which is unique per
//! sender device, so (key, nonce) never repeats.

use crate::proto::{ConvId, DeviceId, MsgId, Seq};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};

/// A device's key pair.
#[derive(Clone)]
pub struct KeyPair {
    /// The X25519 secret; never leaves the device.
    secret: StaticSecret,
    /// The public half, as published in the directory.
    pub public: [u8; 32],
}

// The public half names the pair (the secret is the device's, fixed by its seed).
impl std::hash::Hash for KeyPair {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.public.hash(state);
    }
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret, even in a debug dump.
        write!(f, "KeyPair {{ public: {:02x?}.. }}", &self.public[..4])
    }
}

/// The key pair of the device whose generator is seeded with `seed`: the same seed always
/// gives the same keys, so runs replay.
pub fn keypair(seed: u64) -> KeyPair {
    keypair_known(seed, None)
}

/// Device `d`'s key pair in a deployment whose keys come from `key_seed`
/// ([`crate::Deployment::key_seed`]), with its public half if the directory already has it.
pub fn device_keypair(key_seed: u64, d: DeviceId, public: Option<[u8; 32]>) -> KeyPair {
    // One seed per device, distinct for distinct devices under one `key_seed`.
    let id = u64::from(d.user.0) << 8 | u64::from(d.index);
    keypair_known(key_seed.rotate_left(29) ^ id, public)
}

/// Device `d`'s public key under `key_seed`, as [`device_keypair`] derives it. Every seed of a
/// swarm, hunt or shrink builds its key directory anew from the same `key_seed`, so each public
/// key (a scalar multiplication) is derived once per process and kept here: derived per seed
/// it was 1.2% of a cheap gate seed (smoke, perf). Lookups only (never iterated).
pub fn device_public(key_seed: u64, d: DeviceId) -> [u8; 32] {
    let key = (key_seed, d);
    if let Some(public) = PUBLICS.lock().expect("never poisoned").get(&key) {
        return *public;
    }
    let public = device_keypair(key_seed, d, None).public;
    let mut publics = PUBLICS.lock().expect("never poisoned");
    if publics.len() >= PUBLICS_MAX {
        // Only a process that meets many key seeds gets here; starting over costs derivations.
        publics.clear();
    }
    publics.insert(key, public);
    public
}

/// Public keys by (key seed, device).
type Publics = std::collections::HashMap<(u64, DeviceId), [u8; 32]>;

static PUBLICS: std::sync::LazyLock<std::sync::Mutex<Publics>> =
    std::sync::LazyLock::new(Default::default);

/// Public keys [`PUBLICS`] holds at most (about 60 bytes each: 16 MB), above the 100,000-user
/// world's 100,000 devices.
const PUBLICS_MAX: usize = 1 << 18;

/// As [`keypair`], with the public half already known (the deployment's key directory computed
/// it from the same seed): deriving a public key is a scalar multiplication, and at 100,000
/// devices computing each twice was half of an idle world's instructions (callgrind).
pub fn keypair_known(seed: u64, public: Option<[u8; 32]>) -> KeyPair {
    let mut bytes = [0u8; 32];
    ChaCha8Rng::seed_from_u64(seed ^ 0x6b65_7973_6b65_7973).fill_bytes(&mut bytes);
    let secret = StaticSecret::from(bytes);
    let public = public.unwrap_or_else(|| PublicKey::from(&secret).to_bytes());
    // Agreements are reused by the pair of public keys, so a pair's public half must be its
    // secret's.
    debug_assert_eq!(
        public,
        PublicKey::from(&secret).to_bytes(),
        "a key pair named by a public key that is not its secret's"
    );
    KeyPair { secret, public }
}

impl KeyPair {
    /// The secret's bytes, for provisioning a device that lives outside this process
    /// (`chatsim keys`, the stand-in for a phone generating its own key and registering the
    /// public half). Never logged.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }
}

/// One sealed copy per recipient device; this is the message body servers see.
#[derive(Clone, Debug, Hash, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    /// (recipient device, ciphertext) pairs.
    pub copies: Vec<(DeviceId, Vec<u8>)>,
}

impl Bundle {
    /// The body bytes.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a bundle is always serialisable")
    }

    /// A bundle from body bytes, if they are one.
    pub fn decode(body: &[u8]) -> Option<Bundle> {
        postcard::from_bytes(body).ok()
    }

    /// The copy for `device`.
    pub fn copy_for(&self, device: DeviceId) -> Option<&[u8]> {
        self.copies
            .iter()
            .find(|(d, _)| *d == device)
            .map(|(_, c)| c.as_slice())
    }
}

fn cipher(shared: &[u8; 32], from: DeviceId, to: DeviceId) -> ChaCha20Poly1305 {
    let hk = Hkdf::<Sha256>::new(Some(b"chatsim-e2e-v1"), shared);
    // The direction is part of the key: a copy for B from A cannot pass as one for A from B.
    let mut info = Vec::with_capacity(10);
    for d in [from, to] {
        info.extend_from_slice(&d.user.0.to_le_bytes());
        info.push(d.index);
    }
    let mut key = [0u8; 32];
    hk.expand(&info, &mut key)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    ChaCha20Poly1305::new(Key::from_slice(&key))
}

fn nonce(id: MsgId) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&id.n.to_le_bytes());
    n[4..8].copy_from_slice(&id.device.user.0.to_le_bytes());
    n[8] = id.device.index;
    n
}

/// The nonce of a sender-key copy: a hash of (id, version), kept apart from message nonces
/// by its domain label (96 bits of SHA-256: a collision is not a concern at any scale here).
fn key_nonce(id: MsgId, version: Seq) -> [u8; 12] {
    use sha2::Digest;
    let mut h = Sha256::new();
    h.update(b"chatsim-sender-key-copy");
    h.update(nonce(id));
    h.update(version.to_le_bytes());
    let digest = h.finalize();
    let mut n = [0u8; 12];
    n.copy_from_slice(&digest[..12]);
    n
}

/// Agreements made in this process, by their pair of public keys, lower first: X25519 is
/// symmetric, so both ends of a pair share one entry. A device that restarts (or a model
/// checker's state that rebuilds one) agrees again with every peer, and the simulators give a
/// device the same keys in every seed (`Deployment::key_seed`), so every seed of a swarm, a
/// hunt or a shrink after the first finds its pairs here: on big-group, 24,398 agreements per
/// run were 35% of its time. The secret is a pure function of the two keys, so reusing it
/// changes nothing a run does. Lookups only (never iterated).
static AGREED: std::sync::LazyLock<std::sync::Mutex<Agreed>> =
    std::sync::LazyLock::new(Default::default);

/// Shared secrets by their pair of public keys, in two generations: once the newer holds
/// [`AGREED_GENERATION`] pairs it becomes the older, and the older is dropped. One map emptied
/// whenever it was full dropped pairs made a moment before, whose other end (a group member
/// opening the sender key just sealed for it) was about to look them up: on the
/// 100,000-user world about a sixth of all agreements were made twice.
#[derive(Default)]
struct Agreed {
    newer: std::collections::HashMap<([u8; 32], [u8; 32]), [u8; 32]>,
    older: std::collections::HashMap<([u8; 32], [u8; 32]), [u8; 32]>,
}

impl Agreed {
    fn get(&self, pair: &([u8; 32], [u8; 32])) -> Option<[u8; 32]> {
        self.newer
            .get(pair)
            .or_else(|| self.older.get(pair))
            .copied()
    }

    fn insert(&mut self, pair: ([u8; 32], [u8; 32]), shared: [u8; 32]) {
        if self.newer.len() >= AGREED_GENERATION {
            self.older = std::mem::take(&mut self.newer);
        }
        self.newer.insert(pair, shared);
    }
}

/// Pairs one generation of [`AGREED`] holds (about 100 bytes each, so both at most 26 MB).
const AGREED_GENERATION: usize = 1 << 17;

/// The X25519 secret `mine` shares with the holder of `peer_public`.
fn agree(mine: &KeyPair, peer_public: &[u8; 32]) -> [u8; 32] {
    let pair = if mine.public <= *peer_public {
        (mine.public, *peer_public)
    } else {
        (*peer_public, mine.public)
    };
    if let Some(shared) = AGREED.lock().expect("never poisoned").get(&pair) {
        return shared;
    }
    // Outside the lock: another thread may make the same agreement meanwhile, to the same end.
    let shared = mine
        .secret
        .diffie_hellman(&PublicKey::from(*peer_public))
        .to_bytes();
    AGREED.lock().expect("never poisoned").insert(pair, shared);
    shared
}

/// The keys one device shares with one peer, one per direction: the X25519 agreement runs
/// once per pair (as a Signal session is set up once), not once per message.
#[derive(Clone)]
pub struct Session {
    /// Seals what this device sends to the peer.
    outgoing: ChaCha20Poly1305,
    /// Opens what the peer sends to this device.
    incoming: ChaCha20Poly1305,
}

impl Session {
    /// The session of `me` (keys `mine`) with `peer` (public key `peer_public`).
    pub fn new(mine: &KeyPair, me: DeviceId, peer: DeviceId, peer_public: &[u8; 32]) -> Session {
        // One X25519 agreement per pair of devices (the costliest step of the whole
        // simulation on group-heavy runs); both directions' keys come from it through HKDF.
        let shared = agree(mine, peer_public);
        Session {
            outgoing: cipher(&shared, me, peer),
            incoming: cipher(&shared, peer, me),
        }
    }

    /// Seal `plaintext` of our message `id` for the peer.
    pub fn seal(&self, id: MsgId, plaintext: &[u8]) -> Vec<u8> {
        self.outgoing
            .encrypt(Nonce::from_slice(&nonce(id)), plaintext)
            .expect("ChaCha20-Poly1305 encryption cannot fail for in-memory buffers")
    }

    /// Seal a sender key of membership `version` for the peer, riding on our message `id`.
    /// Its own nonce: a retry of `id` under a newer version carries another key, and the same
    /// (key, nonce) must never seal two plaintexts.
    pub fn seal_key(&self, id: MsgId, version: Seq, key: &[u8]) -> Vec<u8> {
        self.outgoing
            .encrypt(Nonce::from_slice(&key_nonce(id, version)), key)
            .expect("ChaCha20-Poly1305 encryption cannot fail for in-memory buffers")
    }

    /// Open a sender key the peer sealed with [`Session::seal_key`].
    pub fn open_key(&self, id: MsgId, version: Seq, sealed: &[u8]) -> Option<Vec<u8>> {
        self.incoming
            .decrypt(Nonce::from_slice(&key_nonce(id, version)), sealed)
            .ok()
    }

    /// Open the peer's message `id`.
    pub fn open(&self, id: MsgId, ciphertext: &[u8]) -> Option<Vec<u8>> {
        self.incoming
            .decrypt(Nonce::from_slice(&nonce(id)), ciphertext)
            .ok()
    }
}

/// A group message body: the membership version whose sender key sealed it, and the ciphertext.
#[derive(Clone, Debug, Hash, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSealed {
    /// Which of the sender's keys (one per membership version).
    pub version: Seq,
    /// The text, sealed under that key.
    pub ciphertext: Vec<u8>,
}

impl GroupSealed {
    /// The body bytes.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a sealed group body is always serialisable")
    }

    /// A sealed group body from body bytes, if they are one.
    pub fn decode(body: &[u8]) -> Option<GroupSealed> {
        postcard::from_bytes(body).ok()
    }
}

fn group_aad(conv: ConvId, version: Seq) -> [u8; 16] {
    // Bound to the group and version: a ciphertext moved to another group does not open.
    let mut aad = [0u8; 16];
    aad[..8].copy_from_slice(&conv.0.to_le_bytes());
    aad[8..].copy_from_slice(&version.to_le_bytes());
    aad
}

/// Seal message `id` of group `conv` under the sender key `key` of membership `version`.
pub fn group_seal(
    key: &[u8; 32],
    conv: ConvId,
    version: Seq,
    id: MsgId,
    plaintext: &[u8],
) -> Vec<u8> {
    let aad = group_aad(conv, version);
    let ciphertext = ChaCha20Poly1305::new(Key::from_slice(key))
        .encrypt(
            Nonce::from_slice(&nonce(id)),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .expect("ChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
    GroupSealed {
        version,
        ciphertext,
    }
    .encode()
}

/// Open a group body sealed under `key` (the sender's key for `sealed.version`).
pub fn group_open(
    key: &[u8; 32],
    conv: ConvId,
    id: MsgId,
    sealed: &GroupSealed,
) -> Option<Vec<u8>> {
    let aad = group_aad(conv, sealed.version);
    ChaCha20Poly1305::new(Key::from_slice(key))
        .decrypt(
            Nonce::from_slice(&nonce(id)),
            Payload {
                msg: &sealed.ciphertext,
                aad: &aad,
            },
        )
        .ok()
}

/// A sender key as it travels inside a pairwise-sealed copy: the version, then the key.
pub fn encode_sender_key(version: Seq, key: &[u8; 32]) -> Vec<u8> {
    let mut v = version.to_le_bytes().to_vec();
    v.extend_from_slice(key);
    v
}

/// The (version, key) inside an opened sender-key copy.
pub fn decode_sender_key(bytes: &[u8]) -> Option<(Seq, [u8; 32])> {
    let (version, key) = bytes.split_first_chunk::<8>()?;
    Some((Seq::from_le_bytes(*version), key.try_into().ok()?))
}

// A session is derived from the two devices' keys: a cache, nothing a state is told by.
impl std::hash::Hash for Session {
    fn hash<H: std::hash::Hasher>(&self, _state: &mut H) {}
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Session { .. }")
    }
}

/// Seal `plaintext` of message `id` from `id.device` (whose keys are `mine`) for `to`.
pub fn seal(
    mine: &KeyPair,
    to: DeviceId,
    to_public: &[u8; 32],
    id: MsgId,
    plaintext: &[u8],
) -> Vec<u8> {
    Session::new(mine, id.device, to, to_public).seal(id, plaintext)
}

/// Open a copy sealed for `me` (keys `mine`) by `id.device` (public key `from_public`).
pub fn open(
    mine: &KeyPair,
    me: DeviceId,
    from_public: &[u8; 32],
    id: MsgId,
    ciphertext: &[u8],
) -> Option<Vec<u8>> {
    Session::new(mine, me, id.device, from_public).open(id, ciphertext)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::UserId;

    // `PUBLICS`: what a key directory is built from is what each device's own pair derives.
    #[test]
    fn a_kept_public_key_is_the_one_its_key_pair_derives() {
        for key_seed in [0, 7] {
            for d in [
                DeviceId::primary(UserId(3)),
                DeviceId {
                    user: UserId(3),
                    index: 1,
                },
            ] {
                let derived = device_keypair(key_seed, d, None).public;
                assert_eq!(device_public(key_seed, d), derived, "{d} first");
                assert_eq!(device_public(key_seed, d), derived, "{d} kept");
            }
        }
        assert_ne!(
            device_public(0, DeviceId::primary(UserId(3))),
            device_public(7, DeviceId::primary(UserId(3))),
            "kept by key seed too"
        );
    }

    // `Agreed`: a pair made just before the newer generation filled up is still there for the
    // other end of the pair to find; it goes only once a whole generation came after it.
    #[test]
    fn an_agreement_outlives_the_generation_it_was_made_in() {
        let pair = |n: u32| {
            let mut a = [0u8; 32];
            a[..4].copy_from_slice(&n.to_le_bytes());
            (a, [1u8; 32])
        };
        let mut agreed = Agreed::default();
        let n = AGREED_GENERATION as u32;
        for i in 0..n {
            agreed.insert(pair(i), [7; 32]);
        }
        agreed.insert(pair(n), [8; 32]);
        assert_eq!(agreed.get(&pair(n - 1)), Some([7; 32]), "made a moment ago");
        assert_eq!(agreed.get(&pair(n)), Some([8; 32]));
        for i in n + 1..2 * n + 1 {
            agreed.insert(pair(i), [9; 32]);
        }
        assert_eq!(
            agreed.get(&pair(n - 1)),
            None,
            "a generation later it is gone"
        );
        assert_eq!(agreed.get(&pair(n)), Some([8; 32]));
        assert!(agreed.newer.len() + agreed.older.len() <= 2 * AGREED_GENERATION);
    }

    // The recipient opens what was sealed for it; anyone else, or a tampered copy, cannot.
    #[test]
    fn only_the_addressed_device_opens_a_copy_and_tampering_is_detected() {
        let (a, b, c) = (
            DeviceId {
                user: UserId(1),
                index: 0,
            },
            DeviceId {
                user: UserId(2),
                index: 0,
            },
            DeviceId {
                user: UserId(3),
                index: 0,
            },
        );
        let (ka, kb, kc) = (keypair(1), keypair(2), keypair(3));
        let id = MsgId { device: a, n: 7 };
        let sealed = seal(&ka, b, &kb.public, id, b"meet at noon");
        assert!(
            !sealed.windows(4).any(|w| w == b"meet"),
            "ciphertext leaks plaintext"
        );
        assert_eq!(
            open(&kb, b, &ka.public, id, &sealed).as_deref(),
            Some(&b"meet at noon"[..])
        );
        assert_eq!(
            open(&kc, c, &ka.public, id, &sealed),
            None,
            "a third device opened it"
        );
        let mut tampered = sealed.clone();
        tampered[0] ^= 1;
        assert_eq!(open(&kb, b, &ka.public, id, &tampered), None);
        let other = MsgId { device: a, n: 8 };
        assert_eq!(
            open(&kb, b, &ka.public, other, &sealed),
            None,
            "nonce is bound to the id"
        );
        assert_eq!(keypair(1).public, ka.public, "keys replay from the seed");
    }

    // A group body opens only under its own sender key, in its own group; a key from an
    // older membership version (what a removed member still holds) does not open it.
    #[test]
    fn group_bodies_open_only_under_their_version_key_and_group() {
        let a = DeviceId {
            user: UserId(1),
            index: 0,
        };
        let id = MsgId { device: a, n: 3 };
        let (g, other) = (ConvId::group(1), ConvId::group(2));
        let (old, new) = ([1u8; 32], [2u8; 32]);
        let body = group_seal(&new, g, 9, id, b"the plan for friday");
        let sealed = GroupSealed::decode(&body).expect("body");
        assert_eq!(sealed.version, 9);
        assert!(
            !body.windows(4).any(|w| w == b"plan"),
            "ciphertext leaks plaintext"
        );
        assert_eq!(
            group_open(&new, g, id, &sealed).as_deref(),
            Some(&b"the plan for friday"[..])
        );
        assert_eq!(
            group_open(&old, g, id, &sealed),
            None,
            "an old key opened it"
        );
        assert_eq!(
            group_open(&new, other, id, &sealed),
            None,
            "moved to another group"
        );
        // A sender-key copy's nonce depends on the version: a retry of one message id under
        // a new version must not reuse (key, nonce).
        let (kx, ky) = (keypair(5), keypair(6));
        let b = DeviceId {
            user: UserId(2),
            index: 0,
        };
        let ab = Session::new(&kx, a, b, &ky.public);
        let ba = Session::new(&ky, b, a, &kx.public);
        let (c1, c2) = (ab.seal_key(id, 1, &old), ab.seal_key(id, 2, &old));
        assert_ne!(c1, c2, "same nonce for two versions");
        assert_eq!(ba.open_key(id, 1, &c1).as_deref(), Some(&old[..]));
        assert_eq!(ba.open_key(id, 2, &c1), None);
        let wire = encode_sender_key(9, &new);
        assert_eq!(decode_sender_key(&wire), Some((9, new)));
        assert_eq!(decode_sender_key(&wire[..20]), None);
    }

    // A device's keys are its own: no two devices of a deployment, and no two deployments'
    // copies of a device, share a key pair; the same device and key seed always give the same.
    #[test]
    fn device_keys_differ_by_device_and_key_seed_and_repeat_for_both() {
        let devices: Vec<DeviceId> = (0..300)
            .flat_map(|u| {
                (0..5).map(move |index| DeviceId {
                    user: UserId(u),
                    index,
                })
            })
            .collect();
        let mut seen = std::collections::BTreeSet::new();
        for key_seed in [0, 1, 7] {
            for d in &devices {
                let k = device_keypair(key_seed, *d, None);
                assert!(
                    seen.insert(k.public),
                    "{d} under key seed {key_seed} repeats a key"
                );
                assert_eq!(k.public, device_keypair(key_seed, *d, None).public);
            }
        }
    }
}
