//! `rec_id`: the id of one served list (an impression), so the events it led to can cite it and
//! training data can join what was served to what followed.
//!
//! The ULID layout: 48 bits of Unix milliseconds then 80 random bits, in 26 characters of
//! Crockford's base32 (no I, L, O or U). Cheap (no coordination, no clock beyond the request's),
//! unique for practical purposes (80 random bits per millisecond), and sortable: ids compare as
//! strings in time order, to the millisecond.

/// Crockford's base32 alphabet.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Length of a rec id.
pub const LEN: usize = 26;

/// The rec id for a list served at `unix_ms` (the low 48 bits are used), with `random`'s low 80
/// bits.
pub fn new(unix_ms: u64, random: u128) -> String {
    let value: u128 = (u128::from(unix_ms & 0xFFFF_FFFF_FFFF) << 80) | (random & ((1u128 << 80) - 1));
    // 26 characters x 5 bits = 130 bits: the first character carries the top 3 bits.
    (0..LEN).map(|i| ALPHABET[((value >> (5 * (LEN - 1 - i))) & 0x1F) as usize] as char).collect()
}

/// Whether `id` is a rec id as [`new`] writes them (26 characters of the alphabet, the first at
/// most `7`, so the value fits 128 bits).
pub fn is_valid(id: &str) -> bool {
    id.len() == LEN && id.bytes().all(|b| ALPHABET.contains(&b)) && id.as_bytes()[0] <= b'7'
}

/// The Unix milliseconds a valid rec id was made at.
pub fn unix_ms(id: &str) -> Option<u64> {
    if !is_valid(id) {
        return None;
    }
    let value = id.bytes().fold(0u128, |acc, b| {
        let digit = ALPHABET.iter().position(|&a| a == b).unwrap_or(0) as u128;
        (acc << 5) | digit
    });
    Some((value >> 80) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_value_and_round_trip() {
        assert_eq!(new(0, 0), "00000000000000000000000000");
        // The ULID specification's example timestamp, 1469918176385 ms: "01ARYZ6S41" then randomness.
        assert!(new(1_469_918_176_385, 0).starts_with("01ARYZ6S41"), "{}", new(1_469_918_176_385, 0));
        let id = new(1_764_000_000_123, 0xDEAD_BEEF_u128 << 40);
        assert!(is_valid(&id), "{id}");
        assert_eq!(unix_ms(&id), Some(1_764_000_000_123));
    }

    #[test]
    fn ids_sort_in_time_order_and_differ_by_their_random_part() {
        let earlier = new(1_000, u128::MAX);
        let later = new(1_001, 0);
        assert!(earlier < later);
        assert_ne!(new(5, 1), new(5, 2));
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            "0000000000000000000000000",
            "000000000000000000000000000",
            "8ZZZZZZZZZZZZZZZZZZZZZZZZZ",
            "01ARYZ6S41000000000000000U",
            "01aryz6s410000000000000000",
        ] {
            assert!(!is_valid(bad), "{bad}");
            assert_eq!(unix_ms(bad), None);
        }
    }
}
