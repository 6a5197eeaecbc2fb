//! The library's error, with the classification callers need: is it worth retrying, which
//! SQLSTATE, did the node fail or the statement.

use meridian_core::retry::Failure;

use crate::intent::QueryIntent;

/// What went wrong. Closures given to [`PoolManager::run`](crate::PoolManager::run) and its
/// siblings return this too: `?` converts a `sqlx::Error`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No connection could be had from `node` (nothing was sent to it).
    #[error("cannot get a connection to {node}: {source}")]
    Connect {
        /// The node, as `host:port/database`.
        node: String,
        /// sqlx's error.
        #[source]
        source: sqlx::Error,
    },
    /// A statement failed, or the connection broke while it ran.
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    /// No node can serve the intent right now.
    #[error("no node can serve a {intent} now: {reason}")]
    Unavailable {
        /// What was asked.
        intent: QueryIntent,
        /// Why nothing qualifies.
        reason: String,
    },
    /// The configuration was rejected.
    #[error("invalid {field}: {message}")]
    Config {
        /// The setting (an environment variable or a builder method).
        field: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
}

impl Error {
    /// The SQLSTATE the server sent, if the failure came from the server.
    ///
    /// ```
    /// let e = meridian_client::Error::Sqlx(sqlx::Error::PoolTimedOut);
    /// assert_eq!(e.sqlstate(), None);
    /// ```
    pub fn sqlstate(&self) -> Option<&str> {
        let source = match self {
            Error::Connect { source, .. } | Error::Sqlx(source) => source,
            _ => return None,
        };
        source.as_database_error()?.code().map(|code| match code {
            std::borrow::Cow::Borrowed(code) => code,
            // sqlx hands out owned codes only for drivers other than PostgreSQL's.
            std::borrow::Cow::Owned(_) => "",
        })
    }

    /// Whether trying again may succeed: a transient failure (SQLSTATE class `08`, `40001`,
    /// `40P01`, `57P01`–`57P03`, `53300`, a lost or refused connection, no node available
    /// yet). Whether it is *safe* to retry a write is another question, which
    /// [`PoolManager::retry`](crate::PoolManager::retry) answers.
    ///
    /// ```
    /// let e = meridian_client::Error::Sqlx(sqlx::Error::PoolTimedOut);
    /// assert!(e.is_retryable());
    /// let e = meridian_client::Error::Sqlx(sqlx::Error::RowNotFound);
    /// assert!(!e.is_retryable());
    /// ```
    pub fn is_retryable(&self) -> bool {
        self.failure()
            .is_some_and(meridian_core::retry::is_transient)
    }

    /// Whether the failure says the node (not the statement) is in trouble: these count
    /// against its circuit breaker.
    pub fn is_node_failure(&self) -> bool {
        if matches!(self, Error::Unavailable { .. }) {
            // Nothing was tried.
            return false;
        }
        match self.failure() {
            Some(Failure::ConnectionLost { .. }) => true,
            Some(Failure::Sqlstate(code)) => {
                code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300")
            }
            None => false,
        }
    }

    /// The failure as the pure retry rules see it; `None` for failures that are not about the
    /// database at all (a row that failed to decode, a bad configuration).
    pub(crate) fn failure(&self) -> Option<Failure<'_>> {
        match self {
            Error::Connect { source, .. } => Some(match source.as_database_error() {
                Some(_) => Failure::Sqlstate(self.sqlstate().unwrap_or("")),
                None => Failure::ConnectionLost {
                    after_sending: false,
                },
            }),
            // Nothing was sent: the node may be back (or elected) soon.
            Error::Unavailable { .. } => Some(Failure::ConnectionLost {
                after_sending: false,
            }),
            Error::Sqlx(source) => match source {
                sqlx::Error::Database(_) => Some(Failure::Sqlstate(self.sqlstate().unwrap_or(""))),
                // The connection broke during the statement: its outcome is unknown.
                sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => {
                    Some(Failure::ConnectionLost {
                        after_sending: true,
                    })
                }
                // Waiting for a connection (or opening one) timed out: nothing was sent.
                sqlx::Error::PoolTimedOut => Some(Failure::ConnectionLost {
                    after_sending: false,
                }),
                _ => None,
            },
            Error::Config { .. } => None,
        }
    }
}

/// Shorthand for the library's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_failures_are_classified() {
        let io = Error::Sqlx(sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        assert!(io.is_retryable() && io.is_node_failure());
        assert_eq!(
            io.failure(),
            Some(Failure::ConnectionLost {
                after_sending: true
            })
        );
        let connect = Error::Connect {
            node: "n".into(),
            source: sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        };
        assert_eq!(
            connect.failure(),
            Some(Failure::ConnectionLost {
                after_sending: false
            })
        );
        let decode = Error::Sqlx(sqlx::Error::ColumnNotFound("x".into()));
        assert!(!decode.is_retryable() && !decode.is_node_failure());
        assert_eq!(decode.sqlstate(), None);
        let unavailable = Error::Unavailable {
            intent: QueryIntent::Write,
            reason: "no primary".into(),
        };
        assert!(unavailable.is_retryable());
        assert!(!unavailable.is_node_failure());
    }
}
