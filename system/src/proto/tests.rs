//! Identifier properties the routing and the logs depend on.

use super::*;

// A direct conversation must get the same id from both sides, or the two users would
// write to different logs.
#[test]
fn direct_conversation_id_is_symmetric_and_reversible() {
    let (a, b) = (UserId(7), UserId(3));
    assert_eq!(ConvId::direct(a, b), ConvId::direct(b, a));
    assert_eq!(ConvId::direct(a, b).direct_members(), (b, a));
    assert_eq!(ConvId::direct(a, b).direct_peer(a), Some(b));
    assert_eq!(ConvId::direct(a, b).direct_peer(UserId(9)), None);
}

// A group id must never collide with a direct one, or a group's log would be some pair's.
#[test]
fn group_ids_are_apart_from_direct_ones() {
    let g = ConvId::group(7);
    assert!(g.is_group() && g.group_number() == Some(7));
    assert_eq!(g.direct_peer(UserId(0)), None);
    let d = ConvId::direct(UserId(0), UserId(7));
    assert!(!d.is_group() && d.group_number().is_none());
    assert_ne!(g, d);
    assert_eq!(g.to_string(), "g7");
}
