//! What a query needs from the cluster ([`QueryIntent`]), and the token that carries a write's
//! position to the reads that must see it ([`WalToken`]).

use std::fmt;
use std::str::FromStr;

use meridian_core::Lsn;
use meridian_core::balance::Intent;

/// What a query needs: the pool it gets depends on it.
///
/// ```
/// use meridian_client::{QueryIntent, WalToken};
/// let token: WalToken = "0/3000148".parse().unwrap();
/// assert_eq!(QueryIntent::ReadAfter(token).to_string(), "read after 0/3000148");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryIntent {
    /// Reads: a replica close enough to the primary, else the primary.
    Read,
    /// Writes, and reads that must be current: the primary.
    Write,
    /// Reads that must see a write: a replica that has replayed it, else the primary.
    ReadAfter(WalToken),
}

impl QueryIntent {
    pub(crate) fn decision(self) -> Intent {
        match self {
            QueryIntent::Read => Intent::Read,
            QueryIntent::Write => Intent::Write,
            QueryIntent::ReadAfter(token) => Intent::ReadAfter(token.0),
        }
    }
}

impl fmt::Display for QueryIntent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.decision().fmt(f)
    }
}

/// The primary's WAL position after a write, as returned by
/// [`PoolManager::write`](crate::PoolManager::write). A read with
/// [`QueryIntent::ReadAfter`] sees that write. It prints and parses as PostgreSQL writes an
/// LSN (`0/3000148`), so a service can hand it to its client (a header, a cookie) and get it
/// back with the next request.
///
/// ```
/// use meridian_client::WalToken;
/// let token: WalToken = "16/B374D848".parse().unwrap();
/// assert_eq!(token.to_string(), "16/B374D848");
/// assert!("not a position".parse::<WalToken>().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WalToken(pub(crate) Lsn);

impl WalToken {
    /// A token no replica can satisfy: reads after it go to the primary. Given when the
    /// write committed but its position could not be read back.
    pub const PRIMARY: WalToken = WalToken(Lsn(u64::MAX));

    /// The position.
    pub fn lsn(self) -> Lsn {
        self.0
    }
}

impl fmt::Display for WalToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for WalToken {
    type Err = meridian_core::lsn::ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(WalToken)
    }
}
