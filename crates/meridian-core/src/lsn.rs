//! WAL positions.
//!
//! PostgreSQL prints a log sequence number as two hexadecimal halves, `16/B374D848`
//! (see the `pg_lsn` type in the PostgreSQL docs, section 8.20). Comparing and subtracting
//! positions is how Meridian measures replication lag in bytes and decides read-your-writes, so
//! the type is a plain `u64` with the textual form at the edges.

use std::fmt;
use std::str::FromStr;

/// A position in the write-ahead log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The invalid position `0/0`, which PostgreSQL uses for "none".
    pub const INVALID: Lsn = Lsn(0);

    /// Bytes of WAL between `self` and an earlier position; zero if `earlier` is not earlier.
    pub fn bytes_after(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Why a text is not an LSN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid WAL position {text:?}: expected two hexadecimal halves such as 16/B374D848")]
pub struct ParseLsnError {
    text: String,
}

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let invalid = || ParseLsnError {
            text: text.to_owned(),
        };
        let (high, low) = text.split_once('/').ok_or_else(invalid)?;
        let half = |s: &str| {
            if s.is_empty() || s.len() > 8 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid());
            }
            u32::from_str_radix(s, 16).map_err(|_| invalid())
        };
        Ok(Lsn((u64::from(half(high)?) << 32) | u64::from(half(low)?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_postgres_form() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn, Lsn(0x16_B374_D848));
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert_eq!("0/0".parse::<Lsn>().unwrap(), Lsn::INVALID);
        assert_eq!(Lsn(0x3000060).to_string(), "0/3000060");
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in [
            "",
            "16",
            "/1",
            "1/",
            "G/1",
            "1/2/3",
            "123456789/0",
            " 1/2",
            "+1/2",
        ] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn bytes_after_saturates() {
        assert_eq!(Lsn(100).bytes_after(Lsn(40)), 60);
        assert_eq!(Lsn(40).bytes_after(Lsn(100)), 0);
    }

    proptest::proptest! {
        #[test]
        fn display_round_trips(raw: u64) {
            let lsn = Lsn(raw);
            proptest::prop_assert_eq!(lsn.to_string().parse::<Lsn>().unwrap(), lsn);
        }
    }
}
