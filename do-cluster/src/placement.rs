//! Which live member should own each shard: rendezvous (highest random
//! weight) hashing. Every member computes the same answer from the same
//! member list, with no coordination; when a member joins, only the shards
//! it now wins move (to it), and when one leaves, only its own move.

/// A stable 64-bit hash of a member's name and a shard (FNV-1a, then a
/// finalizer that spreads close inputs apart). Stable across builds and
/// machines, which `std`'s hasher does not promise.
fn weight(member: &str, shard: u32) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in member.bytes().chain(shard.to_be_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // splitmix64's finalizer.
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

/// The member that should own `shard` among `members` (`None` when there
/// are none). Ties (vanishingly rare) go to the smaller name.
pub fn owner<'a>(shard: u32, members: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    members
        .into_iter()
        .max_by(|a, b| weight(a, shard).cmp(&weight(b, shard)).then(b.cmp(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_spread_evenly_and_a_joining_member_takes_only_its_share() {
        let three = ["node-a", "node-b", "node-c"];
        let before: Vec<&str> = (0..1024)
            .map(|s| owner(s, three).expect("an owner"))
            .collect();
        for member in three {
            let owned = before.iter().filter(|o| **o == member).count();
            // 1 024 / 3 ≈ 341; rendezvous hashing spreads within a few %.
            assert!((290..=395).contains(&owned), "{member}: {owned}");
        }
        let four = ["node-a", "node-b", "node-c", "node-d"];
        let after: Vec<&str> = (0..1024)
            .map(|s| owner(s, four).expect("an owner"))
            .collect();
        for (b, a) in before.iter().zip(&after) {
            assert!(a == b || *a == "node-d", "a shard moved from {b} to {a}");
        }
        let moved = after.iter().filter(|o| **o == "node-d").count();
        assert!((200..=320).contains(&moved), "{moved}");
        // The order members are listed in changes nothing.
        let reversed = ["node-d", "node-c", "node-b", "node-a"];
        assert!((0..1024).all(|s| owner(s, reversed) == owner(s, four)));
        assert_eq!(owner(1, std::iter::empty()), None);
    }
}
