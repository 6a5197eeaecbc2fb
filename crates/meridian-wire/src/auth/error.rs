//! The one error type of password authentication, classified by SQLSTATE.
//!
//! Callers branch on [`AuthError::sqlstate`] and [`AuthError::is_wrong_password`], never on the
//! message text. Invariant: no variant carries a password, a hash of one, a key or a proof, so an
//! error may be logged or sent to a client as it is. The only text taken from the peer is the
//! value of a SCRAM `e=` attribute, which the server chose to make public.

/// A failed authentication exchange.
///
/// SQLSTATEs follow what PostgreSQL itself reports for the same failure (Appendix A, "PostgreSQL
/// Error Codes"), so the proxy can pass them to its clients unchanged:
/// - `28P01` `invalid_password`: the password (or proof) is wrong. An unknown user is reported the
///   same way by the mock exchange, so that the reply does not reveal which users exist.
/// - `28000` `invalid_authorization_specification`: the exchange cannot even start, because the
///   user is unknown and the caller chose to say so, the mechanism is not one we use, or the
///   stored secret is unusable.
/// - `08P01` `protocol_violation`: the peer sent a message that is malformed, out of order or asks
///   for a feature we did not offer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The client's proof or md5 response does not match the stored secret, or the user does not
    /// exist and the mock exchange ran.
    #[error("password authentication failed")]
    WrongPassword,

    /// The user does not exist. The exchanges in this module never return it (an unknown user
    /// runs the mock exchange and ends in [`AuthError::WrongPassword`]); it is here for callers
    /// that have nothing to hide, e.g. a user that has no password method configured at all.
    #[error("unknown user")]
    UnknownUser,

    /// The peer chose a SASL mechanism or password method we do not use.
    #[error("unsupported authentication mechanism {mechanism:?}")]
    UnsupportedMechanism {
        /// The mechanism's name as the peer spelled it.
        mechanism: String,
    },

    /// The stored secret (a `SCRAM-SHA-256$…` verifier or an `md5…` hash) cannot be parsed.
    #[error("invalid stored password secret: {reason}")]
    InvalidVerifier {
        /// What is wrong with it; never the secret itself.
        reason: &'static str,
    },

    /// A message does not follow the grammar of RFC 5802 section 7, or an md5 response is not
    /// `md5` followed by 32 hex digits.
    #[error("malformed {message}: {reason}")]
    Malformed {
        /// Which message, e.g. `"client-first-message"`.
        message: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// The client asked for channel binding (`p=` in the GS2 header), but we advertised only
    /// `SCRAM-SHA-256`, never `SCRAM-SHA-256-PLUS`.
    #[error(
        "client requested channel binding, but SCRAM-SHA-256 without channel binding was selected"
    )]
    ChannelBindingNotOffered,

    /// The `c=` attribute of the client-final-message is not the GS2 header of the
    /// client-first-message (RFC 5802 section 5.1).
    #[error("SCRAM channel binding check failed")]
    ChannelBindingMismatch,

    /// The client sent an authorization identity (`a=`), which PostgreSQL does not support.
    #[error("SCRAM authorization identity is not supported")]
    AuthorizationIdentityUnsupported,

    /// A mandatory extension (`m=`, RFC 5802 section 5.1) that we cannot honour.
    #[error("unsupported mandatory SCRAM extension")]
    UnsupportedExtension,

    /// The nonce does not continue the exchange: the server's nonce does not start with the
    /// client's, or the client-final-message does not repeat the combined nonce.
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,

    /// The server-final-message's `v=` is not the signature a server holding our verifier would
    /// compute: the server did not prove it knows the password. Classified `08P01`, not `28P01`:
    /// our password may well be right; it is the server that failed to authenticate itself, and
    /// retrying with another password would not help.
    #[error("SCRAM server signature mismatch")]
    ServerSignatureMismatch,

    /// The server ended the exchange with `e=` (RFC 5802 section 7, `server-error`).
    #[error("server reported SCRAM error {value:?}")]
    ServerError {
        /// The `server-error-value`, e.g. `invalid-proof`.
        value: String,
    },

    /// A message arrived when the exchange expected another one, or after it had ended.
    #[error("unexpected {message}: authentication exchange is {state}")]
    UnexpectedMessage {
        /// The message that arrived.
        message: &'static str,
        /// Where the exchange was.
        state: &'static str,
    },
}

impl AuthError {
    /// The SQLSTATE PostgreSQL would report for this failure.
    pub fn sqlstate(&self) -> &'static str {
        match self {
            AuthError::WrongPassword => "28P01",
            AuthError::ServerError { value } => match value.as_str() {
                "invalid-proof" => "28P01",
                "unknown-user" | "invalid-username-encoding" => "28000",
                _ => "08P01",
            },
            AuthError::UnknownUser
            | AuthError::UnsupportedMechanism { .. }
            | AuthError::InvalidVerifier { .. } => "28000",
            AuthError::Malformed { .. }
            | AuthError::ChannelBindingNotOffered
            | AuthError::ChannelBindingMismatch
            | AuthError::AuthorizationIdentityUnsupported
            | AuthError::UnsupportedExtension
            | AuthError::NonceMismatch
            | AuthError::ServerSignatureMismatch
            | AuthError::UnexpectedMessage { .. } => "08P01",
        }
    }

    /// Whether the password was wrong (SQLSTATE `28P01`), as opposed to a broken exchange.
    pub fn is_wrong_password(&self) -> bool {
        self.sqlstate() == "28P01"
    }

    pub(crate) fn malformed(message: &'static str, reason: &'static str) -> AuthError {
        AuthError::Malformed { message, reason }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        let cases = [
            (AuthError::WrongPassword, "28P01", true),
            (AuthError::UnknownUser, "28000", false),
            (
                AuthError::UnsupportedMechanism {
                    mechanism: "SCRAM-SHA-256-PLUS".into(),
                },
                "28000",
                false,
            ),
            (AuthError::InvalidVerifier { reason: "x" }, "28000", false),
            (AuthError::malformed("m", "r"), "08P01", false),
            (AuthError::ChannelBindingNotOffered, "08P01", false),
            (AuthError::ChannelBindingMismatch, "08P01", false),
            (AuthError::AuthorizationIdentityUnsupported, "08P01", false),
            (AuthError::UnsupportedExtension, "08P01", false),
            (AuthError::NonceMismatch, "08P01", false),
            (AuthError::ServerSignatureMismatch, "08P01", false),
            (
                AuthError::ServerError {
                    value: "invalid-proof".into(),
                },
                "28P01",
                true,
            ),
            (
                AuthError::ServerError {
                    value: "unknown-user".into(),
                },
                "28000",
                false,
            ),
            (
                AuthError::ServerError {
                    value: "other-error".into(),
                },
                "08P01",
                false,
            ),
            (
                AuthError::UnexpectedMessage {
                    message: "m",
                    state: "s",
                },
                "08P01",
                false,
            ),
        ];
        for (error, sqlstate, wrong_password) in cases {
            assert_eq!(error.sqlstate(), sqlstate, "{error:?}");
            assert_eq!(error.is_wrong_password(), wrong_password, "{error:?}");
        }
    }
}
