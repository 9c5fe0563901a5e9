//! Which shard owns a conversation or a user's inbox, and device credentials. A stable hash
//! (FNV-1a, fixed constants) so every host and every run agrees on ownership.

use crate::proto::{ConvId, DeviceId, UserId};

fn fnv1a(bytes: &[u8]) -> u64 {
    // FNV-1a 64: tiny and stable across platforms and releases, unlike std's SipHash keys.
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    // FNV's low bits are poorly mixed (ids differing by 2 land on the same shard mod 4): fold
    // the high half in.
    h ^ (h >> 29) ^ (h >> 47)
}

/// The shard that owns a conversation's log and sequence numbers.
pub fn shard_for_conv(conv: ConvId, shards: u16) -> u16 {
    (fnv1a(&conv.0.to_le_bytes()) % u64::from(shards.max(1))) as u16
}

/// The shard that serves a user's inbox (drains and acks).
pub fn shard_for_user(user: UserId, shards: u16) -> u16 {
    (fnv1a(&user.0.to_be_bytes()) % u64::from(shards.max(1))) as u16
}

/// The token a device presents in `Hello`. A stand-in for a real credential: what matters to
/// the simulation is that a gateway binds a connection only to the device the token names.
pub fn device_token(device: DeviceId) -> u64 {
    fnv1a(
        &[
            b"chatsim-token".as_slice(),
            &device.user.0.to_le_bytes(),
            &[device.index],
        ]
        .concat(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // Ownership must spread over shards, or "several shards" would silently be one.
    #[test]
    fn conversations_spread_over_every_shard() {
        let mut seen = [0u32; 4];
        for a in 0..40 {
            seen[usize::from(shard_for_conv(ConvId::direct(UserId(a), UserId(a + 1)), 4))] += 1;
        }
        assert!(seen.iter().all(|n| *n > 0), "{seen:?}");
        assert_ne!(
            device_token(DeviceId::primary(UserId(1))),
            device_token(DeviceId::primary(UserId(2)))
        );
    }
}
