//! Comparison of secrets without leaking, through timing, where they first differ.
//!
//! A comparison that stops at the first differing byte lets an attacker who can time many
//! attempts learn a proof or an md5 response byte by byte. Both SCRAM (RFC 5802 section 9,
//! "Security Considerations") and md5 responses are compared here instead.

/// Whether `a` and `b` are equal, in time that depends only on their lengths.
///
/// The lengths are public (a SHA-256 output, an md5 response), so returning early on a length
/// difference leaks nothing. The bytes are folded with xor and or into one accumulator, with no
/// branch on the data; `black_box` keeps the optimiser from turning the fold back into an early
/// exit.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |accumulator, (x, y)| {
        std::hint::black_box(accumulator | (x ^ y))
    });
    std::hint::black_box(difference) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_and_unequal() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"xbc"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
    }
}
