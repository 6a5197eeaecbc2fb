//! Everything a client can be told went wrong, mapped to an `ErrorResponse` in one place.
//!
//! Each failure has the SQLSTATE PostgreSQL itself uses for the same situation (PostgreSQL
//! docs, appendix A), and a message naming the cause. Whether the session survives is part of
//! the mapping: `FATAL` closes the client connection, `ERROR` keeps it.

use meridian_wire::WireError;
use meridian_wire::auth::AuthError;
use meridian_wire::backend::{ErrorFields, Severity};
use meridian_wire::sqlstate;

use crate::pool::PoolError;
use crate::server::ServerError;

/// A failure to report to a client.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// Bytes that are not the protocol, or not at this point.
    #[error(transparent)]
    Protocol(#[from] WireError),
    /// The client's credentials were refused.
    #[error("authentication of {user:?} failed: {source}")]
    Auth {
        /// The user the client gave.
        user: String,
        /// Why.
        source: AuthError,
    },
    /// The startup packet named no user.
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUser,
    /// A replication connection (`replication=...` in the startup packet).
    #[error(
        "replication connections are not supported through Meridian; connect to the server directly"
    )]
    Replication,
    /// `max_client_connections` reached.
    #[error("sorry, too many clients already")]
    TooManyClients,
    /// Startup and authentication took longer than `client_login_timeout`.
    #[error("canceling authentication due to timeout")]
    LoginTimeout,
    /// No server connection could be had.
    #[error(transparent)]
    Pool(#[from] PoolError),
    /// No node is known to take writes.
    #[error("no primary is available")]
    NoPrimary,
    /// The server connection died while the client was using it.
    #[error("the connection to server {node} was lost; the transaction was rolled back")]
    ServerLost {
        /// The node's name.
        node: String,
    },
    /// The proxy is shutting down.
    #[error("terminating connection because Meridian is shutting down")]
    ShuttingDown,
}

impl Failure {
    /// Whether the client connection must be closed after the error.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            Failure::Pool(_) | Failure::NoPrimary | Failure::ServerLost { .. }
        )
    }

    /// The ErrorResponse fields, `FATAL` when the connection ends with it.
    pub fn to_fields(&self) -> ErrorFields {
        self.fields(self.is_fatal())
    }

    /// The ErrorResponse fields of a failure that ends the connection (during login or
    /// when the session stops), `FATAL` whatever the failure.
    pub fn to_fatal_fields(&self) -> ErrorFields {
        self.fields(true)
    }

    fn fields(&self, fatal: bool) -> ErrorFields {
        let severity = if fatal {
            Severity::Fatal
        } else {
            Severity::Error
        };
        let (code, message, hint): (&str, String, Option<&str>) = match self {
            Failure::Protocol(e) => (e.sqlstate(), e.to_string(), None),
            Failure::Auth { user, source } => {
                let message = if source.is_wrong_password() {
                    format!("password authentication failed for user \"{user}\"")
                } else {
                    format!("authentication failed for user \"{user}\": {source}")
                };
                (source.sqlstate(), message, None)
            }
            Failure::NoUser => (
                sqlstate::INVALID_AUTHORIZATION_SPECIFICATION,
                self.to_string(),
                None,
            ),
            Failure::Replication => (sqlstate::FEATURE_NOT_SUPPORTED, self.to_string(), None),
            Failure::TooManyClients => (
                sqlstate::TOO_MANY_CONNECTIONS,
                self.to_string(),
                Some("raise proxy.max_client_connections, or use fewer connections"),
            ),
            Failure::LoginTimeout => (sqlstate::PROTOCOL_VIOLATION, self.to_string(), None),
            Failure::Pool(PoolError::Exhausted { .. }) => (
                sqlstate::TOO_MANY_CONNECTIONS,
                self.to_string(),
                Some("raise pool.max_size or pool.checkout_timeout, or shorten transactions"),
            ),
            Failure::Pool(PoolError::Connect(ServerError::Refused(fields))) => {
                // The server's own words (no such database, role, ...), relayed as they are.
                if fields.severity() == severity.as_str() {
                    return fields.clone();
                }
                return ErrorFields::new(severity, fields.code(), fields.message());
            }
            Failure::Pool(PoolError::Connect(e)) => {
                (sqlstate::CONNECTION_FAILURE, e.to_string(), None)
            }
            Failure::NoPrimary => (
                sqlstate::CONNECTION_FAILURE,
                self.to_string(),
                Some("no node of the cluster is currently observed as a writable primary"),
            ),
            Failure::ServerLost { .. } => (sqlstate::CONNECTION_FAILURE, self.to_string(), None),
            Failure::ShuttingDown => (sqlstate::ADMIN_SHUTDOWN, self.to_string(), None),
        };
        let fields = ErrorFields::new(severity, code, message);
        match hint {
            Some(hint) => fields.hint(hint),
            None => fields,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn sqlstates_and_fatality() {
        let exhausted = Failure::Pool(PoolError::Exhausted {
            timeout: Duration::from_secs(5),
            max_size: 10,
            node: "pg1".into(),
        });
        assert_eq!(exhausted.to_fields().code(), "53300");
        assert!(!exhausted.is_fatal());
        assert_eq!(Failure::TooManyClients.to_fields().code(), "53300");
        assert_eq!(Failure::TooManyClients.to_fields().severity(), "FATAL");
        assert_eq!(Failure::ShuttingDown.to_fields().code(), "57P01");
        assert_eq!(Failure::NoUser.to_fields().code(), "28000");
        assert_eq!(Failure::Replication.to_fields().code(), "0A000");
        let lost = Failure::ServerLost { node: "pg1".into() };
        assert_eq!(lost.to_fields().code(), "08006");
        assert_eq!(lost.to_fields().severity(), "ERROR");
        assert_eq!(lost.to_fatal_fields().severity(), "FATAL");
        assert_eq!(lost.to_fatal_fields().code(), "08006");
        assert_eq!(
            Failure::Protocol(WireError::BadLength(2))
                .to_fields()
                .code(),
            "08P01"
        );
    }

    #[test]
    fn a_server_refusal_is_relayed_with_its_own_code() {
        let refused =
            ErrorFields::new(Severity::Fatal, "3D000", "database \"nope\" does not exist");
        let failure = Failure::Pool(PoolError::Connect(ServerError::Refused(refused)));
        let fields = failure.to_fields();
        assert_eq!(fields.code(), "3D000");
        assert_eq!(fields.message(), "database \"nope\" does not exist");
    }
}
