//! What can be wrong with bytes from a peer.

use crate::sqlstate;

/// A malformed or unacceptable message. Every variant maps to the SQLSTATE PostgreSQL itself
/// would answer with, so the proxy can reply with a correct `ErrorResponse` and close.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// A length field below its own four bytes.
    #[error("invalid message length {0}")]
    BadLength(i64),
    /// A message longer than the configured maximum; refused before allocating.
    #[error("message of {len} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// Length announced by the peer.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// A message whose content does not match its type.
    #[error("malformed {message} message: {problem}")]
    Malformed {
        /// The message type, as named in the protocol docs.
        message: &'static str,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// A message type that is not valid in this direction or at this point.
    #[error("unexpected message type {:?}", char::from(*.0))]
    UnexpectedTag(u8),
    /// A startup packet asking for a protocol this proxy does not speak.
    #[error("unsupported frontend protocol {}.{}: server supports 3.0", .0 >> 16, .0 & 0xFFFF)]
    UnsupportedProtocol(u32),
}

impl WireError {
    /// The SQLSTATE of the `ErrorResponse` that answers this error.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            WireError::UnsupportedProtocol(_) => sqlstate::FEATURE_NOT_SUPPORTED,
            _ => sqlstate::PROTOCOL_VIOLATION,
        }
    }

    /// A malformed-message error.
    pub fn malformed(message: &'static str, problem: &'static str) -> WireError {
        WireError::Malformed { message, problem }
    }
}
