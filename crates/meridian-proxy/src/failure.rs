//! Everything a client can be told went wrong, mapped to an `ErrorResponse` in one place.
//!
//! Each failure has the SQLSTATE PostgreSQL itself uses for the same situation (PostgreSQL
//! docs, appendix A), and a message naming the cause. Whether the session survives is part of
//! the mapping: `FATAL` closes the client connection, `ERROR` keeps it.
//!
//! Failover, as the client sees it:
//! - a transaction that waited for a primary longer than `failover_buffer_timeout` gets
//!   `08006` (connection_failure), ERROR, naming the last connection error when the named
//!   primary was unreachable: the same code as [`Failure::NoPrimary`], because the
//!   outcome is the same (no primary to run on), only later. `57P03` (cannot_connect_now) was
//!   the other candidate; PostgreSQL sends it only to a connection being opened, and a client
//!   already logged in to Meridian keeps its connection here, so class 08, which drivers and
//!   retry policies already treat as "try again", says it better;
//! - a session that cannot even wait, because `failover_buffer_size` sessions already do,
//!   gets `53300` (too_many_connections), ERROR, as for an exhausted pool;
//! - a transaction open on a primary that a failover replaced gets `08006`, ERROR (FATAL in
//!   session pooling), exactly as when its server connection is lost ([`Failure::ServerLost`]):
//!   its server connection is abandoned, the old server rolls it back, and whether a COMMIT in
//!   flight took effect there is unknown, which is what class 08 tells. `57P01`
//!   (admin_shutdown) stays the code of Meridian's own shutdown.

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
    /// A read no replica could serve, with `routing.primary_reads = never`.
    #[error("no replica can serve this read: {why} (routing.primary_reads = never)")]
    NoReplica {
        /// Why no replica qualified.
        why: meridian_core::routing::RouteReason,
    },
    /// The server connection died while the client was using it.
    #[error(
        "the connection to server {node} was lost{}",
        if *in_flight {
            " while a statement was running; whether it committed is unknown"
        } else {
            "; the transaction was rolled back"
        }
    )]
    ServerLost {
        /// The node's name.
        node: String,
        /// A request that could have committed (an autocommit statement, a COMMIT) was
        /// unanswered: its outcome is unknown (08007) rather than rolled back (08006).
        in_flight: bool,
    },
    /// The proxy is shutting down.
    #[error("terminating connection because Meridian is shutting down")]
    ShuttingDown,
    /// A transaction waited for a primary for all of `failover_buffer_timeout`.
    #[error(
        "no primary became available within failover_buffer_timeout ({timeout:?}){}",
        last_error.as_deref().map(|e| format!("; last error: {e}")).unwrap_or_default()
    )]
    FailoverTimeout {
        /// `failover_buffer_timeout`.
        timeout: std::time::Duration,
        /// Why the last attempt to reach the primary failed, when it was attempted.
        last_error: Option<String>,
    },
    /// `failover_buffer_size` sessions already wait for a primary.
    #[error("the failover buffer is full: {size} transactions already wait for a primary")]
    FailoverBufferFull {
        /// `failover_buffer_size`.
        size: usize,
    },
    /// The view's generation moved past the server connection's: the primary was replaced.
    #[error(
        "the primary changed (failover from {old} to {}); the transaction was rolled back",
        new.as_deref().unwrap_or("a primary not chosen yet")
    )]
    FailedOver {
        /// The node the transaction was running on.
        old: String,
        /// The new primary's name, when the new view names one.
        new: Option<String>,
    },
}

impl Failure {
    /// Whether the client connection must be closed after the error.
    pub fn is_fatal(&self) -> bool {
        !matches!(
            self,
            Failure::Pool(_)
                | Failure::NoPrimary
                | Failure::NoReplica { .. }
                | Failure::ServerLost { .. }
                | Failure::FailoverTimeout { .. }
                | Failure::FailoverBufferFull { .. }
                | Failure::FailedOver { .. }
        )
    }

    /// A connection to the node the view names as primary failed in a way that says the node
    /// is down or going away: worth waiting for the next view rather than failing at once.
    pub(crate) fn is_node_unavailable(&self) -> bool {
        matches!(self, Failure::Pool(PoolError::Connect(e)) if e.is_node_unavailable())
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
            Failure::NoReplica { .. } => (
                sqlstate::CONNECTION_FAILURE,
                self.to_string(),
                Some(
                    "raise routing.max_replica_lag_bytes or routing.max_replica_lag_seconds, \
                     bring a replica back, or set routing.primary_reads = \"fallback\"",
                ),
            ),
            Failure::ServerLost {
                in_flight: true, ..
            } => (
                sqlstate::TRANSACTION_RESOLUTION_UNKNOWN,
                self.to_string(),
                Some("check whether the write is there before retrying it"),
            ),
            Failure::ServerLost { .. } => (sqlstate::CONNECTION_FAILURE, self.to_string(), None),
            Failure::ShuttingDown => (sqlstate::ADMIN_SHUTDOWN, self.to_string(), None),
            Failure::FailoverTimeout { .. } => (
                sqlstate::CONNECTION_FAILURE,
                self.to_string(),
                Some(
                    "a failover is under way or the primary is unreachable; retry the \
                     transaction, or raise proxy.failover_buffer_timeout",
                ),
            ),
            Failure::FailoverBufferFull { .. } => (
                sqlstate::TOO_MANY_CONNECTIONS,
                self.to_string(),
                Some("raise proxy.failover_buffer_size, or retry once the failover is over"),
            ),
            Failure::FailedOver { .. } => (sqlstate::CONNECTION_FAILURE, self.to_string(), None),
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
        let lost = Failure::ServerLost {
            node: "pg1".into(),
            in_flight: false,
        };
        assert_eq!(lost.to_fields().code(), "08006");
        assert_eq!(lost.to_fields().severity(), "ERROR");
        assert_eq!(lost.to_fatal_fields().severity(), "FATAL");
        assert_eq!(lost.to_fatal_fields().code(), "08006");
        let unknown = Failure::ServerLost {
            node: "pg1".into(),
            in_flight: true,
        };
        assert_eq!(unknown.to_fields().code(), "08007");
        assert_eq!(
            unknown.to_string(),
            "the connection to server pg1 was lost while a statement was running; whether it \
             committed is unknown"
        );
        assert_eq!(
            Failure::Protocol(WireError::BadLength(2))
                .to_fields()
                .code(),
            "08P01"
        );
    }

    #[test]
    fn failover_failures_keep_the_session_and_say_what_happened() {
        let timeout = Failure::FailoverTimeout {
            timeout: Duration::from_millis(500),
            last_error: None,
        };
        assert_eq!(timeout.to_fields().code(), "08006");
        assert_eq!(timeout.to_fields().severity(), "ERROR");
        assert_eq!(
            timeout.to_string(),
            "no primary became available within failover_buffer_timeout (500ms)"
        );
        let unreachable = Failure::FailoverTimeout {
            timeout: Duration::from_secs(15),
            last_error: Some("cannot reach 10.0.0.1:5432: connection refused".into()),
        };
        assert_eq!(unreachable.to_fields().code(), "08006");
        assert_eq!(
            unreachable.to_string(),
            "no primary became available within failover_buffer_timeout (15s); last error: \
             cannot reach 10.0.0.1:5432: connection refused"
        );
        let full = Failure::FailoverBufferFull { size: 1 };
        assert_eq!(full.to_fields().code(), "53300");
        assert_eq!(full.to_fields().severity(), "ERROR");
        let failed_over = Failure::FailedOver {
            old: "pg0".into(),
            new: Some("pg1".into()),
        };
        assert_eq!(failed_over.to_fields().code(), "08006");
        assert_eq!(failed_over.to_fields().severity(), "ERROR");
        assert_eq!(failed_over.to_fatal_fields().severity(), "FATAL");
        assert_eq!(
            failed_over.to_string(),
            "the primary changed (failover from pg0 to pg1); the transaction was rolled back"
        );
    }

    #[test]
    fn only_a_node_that_seems_down_is_worth_waiting_for() {
        let io = |kind: std::io::ErrorKind| ServerError::Unreachable {
            addr: "127.0.0.1:5432".into(),
            source: kind.into(),
        };
        let waits = |e: ServerError| Failure::Pool(PoolError::Connect(e)).is_node_unavailable();
        assert!(waits(io(std::io::ErrorKind::ConnectionRefused)));
        assert!(waits(ServerError::Timeout {
            addr: "127.0.0.1:5432".into(),
            timeout: Duration::from_secs(5),
        }));
        let refused =
            |code: &str| ServerError::Refused(ErrorFields::new(Severity::Fatal, code, "refused"));
        // "the database system is starting up / shutting down / in recovery mode".
        assert!(waits(refused("57P03")));
        assert!(waits(refused("57P01")));
        // A refusal that waiting will not change fails at once.
        assert!(!waits(refused("3D000")));
        assert!(!waits(refused("28P01")));
        assert!(!waits(ServerError::TlsRefused {
            addr: "127.0.0.1:5432".into()
        }));
        assert!(!Failure::NoPrimary.is_node_unavailable());
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
