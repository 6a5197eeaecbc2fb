//! Whether a failed database operation may be tried again, and when.
//!
//! The rule that matters: **never run a write twice**. A write may be retried only when the
//! failure proves it did not commit — the connection could not be opened, or the server rolled
//! the transaction back (serialization failure, deadlock) — or when the caller declared it
//! idempotent. A connection lost after the request was sent, SQLSTATE `08007` (transaction
//! resolution unknown) and a backend terminated by a shutdown (`57P01`, `57P02`: its commit may
//! already be durable) leave the commit in doubt: a read is retried, a write is not.
//!
//! Transient failures (PostgreSQL docs, Appendix A): class `08` (connection exception), `40001`
//! (serialization failure), `40P01` (deadlock detected), `57P01`–`57P03` (admin shutdown, crash
//! shutdown, cannot connect now), `53300` (too many connections), and a lost connection.
//! Everything else (syntax, constraint violations, permissions, ...) would fail again.
//!
//! Pure: the delay comes from [`Backoff`] with the caller's random draw.

use std::time::Duration;

use crate::backoff::Backoff;

/// What went wrong, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure<'a> {
    /// The server (or a proxy) answered with this SQLSTATE.
    Sqlstate(&'a str),
    /// The connection broke without an error from the server.
    ConnectionLost {
        /// The request had been sent (its outcome is unknown); `false`: the connection could
        /// not be opened, or broke before anything was sent.
        after_sending: bool,
    },
}

/// What the operation does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Reads only: running it twice changes nothing.
    Read,
    /// May write; `idempotent` when the caller declared that running it twice is harmless.
    Write {
        /// Declared safe to run twice.
        idempotent: bool,
    },
}

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Try again after this delay.
    Retry {
        /// How long to wait first.
        after: Duration,
    },
    /// Report the failure.
    GiveUp(Why),
}

/// Why a failure is not retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// It would fail again (not a transient failure).
    Permanent,
    /// A write whose commit may have happened, not declared idempotent.
    MayHaveCommitted,
    /// The attempts are used up.
    Exhausted,
}

/// Whether this failure is of a transient kind (it may not happen again).
pub fn is_transient(failure: Failure<'_>) -> bool {
    match failure {
        Failure::ConnectionLost { .. } => true,
        Failure::Sqlstate(code) => {
            code.starts_with("08")
                || matches!(
                    code,
                    "40001" | "40P01" | "57P01" | "57P02" | "57P03" | "53300"
                )
        }
    }
}

/// Whether the failure leaves a write's commit in doubt: the request may have committed
/// before the failure was reported.
pub fn commit_in_doubt(failure: Failure<'_>) -> bool {
    match failure {
        Failure::ConnectionLost { after_sending } => after_sending,
        // transaction_resolution_unknown: the server (or Meridian's proxy) says exactly that.
        Failure::Sqlstate("08007") => true,
        // A backend terminated by a shutdown may already have committed: a commit waiting for
        // a synchronous replica is cancelled with "the transaction has already committed
        // locally" before the connection ends with 57P01.
        Failure::Sqlstate("57P01" | "57P02") => true,
        // Any other error the server sent aborted the transaction, or came before anything
        // ran (08001 and 57P03 at connection, 08006 from Meridian for a transaction it lost
        // while the client was between statements: rolled back).
        Failure::Sqlstate(_) => false,
    }
}

/// Whether to try `operation` again after its `attempt`-th failure (0: the first try failed),
/// and when: after `backoff`'s delay for that attempt, at most `backoff.attempts` times. `draw`
/// is a random number in `[0, 1)` for the jitter.
pub fn decide(
    failure: Failure<'_>,
    operation: Operation,
    attempt: u32,
    backoff: &Backoff,
    draw: f64,
) -> Decision {
    if !is_transient(failure) {
        return Decision::GiveUp(Why::Permanent);
    }
    if operation == (Operation::Write { idempotent: false }) && commit_in_doubt(failure) {
        return Decision::GiveUp(Why::MayHaveCommitted);
    }
    if attempt >= backoff.attempts {
        return Decision::GiveUp(Why::Exhausted);
    }
    Decision::Retry {
        after: backoff.delay(attempt, draw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff() -> Backoff {
        Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            attempts: 3,
            then: Duration::from_secs(2),
            jitter: 0.2,
        }
    }

    /// Every row: the failure, the operation, and whether it is retried (`R`), given up as
    /// permanent (`P`) or as a possible commit (`C`).
    #[test]
    fn the_classification_table() {
        let read = Operation::Read;
        let write = Operation::Write { idempotent: false };
        let idempotent = Operation::Write { idempotent: true };
        let lost_sent = Failure::ConnectionLost {
            after_sending: true,
        };
        let lost_before = Failure::ConnectionLost {
            after_sending: false,
        };
        let s = Failure::Sqlstate;
        let table: &[(Failure<'_>, Operation, char)] = &[
            // Connection exceptions.
            (s("08006"), read, 'R'),
            (s("08006"), write, 'R'),
            (s("08001"), write, 'R'),
            (s("08003"), write, 'R'),
            (s("08007"), read, 'R'),
            (s("08007"), write, 'C'),
            (s("08007"), idempotent, 'R'),
            (lost_sent, read, 'R'),
            (lost_sent, write, 'C'),
            (lost_sent, idempotent, 'R'),
            (lost_before, write, 'R'),
            // Rolled back, or refused before anything ran: retried whatever the operation.
            (s("40001"), write, 'R'),
            (s("40P01"), write, 'R'),
            (s("53300"), write, 'R'),
            (s("57P03"), write, 'R'),
            // Terminated by a shutdown: the commit may already be durable.
            (s("57P01"), read, 'R'),
            (s("57P01"), write, 'C'),
            (s("57P01"), idempotent, 'R'),
            (s("57P02"), write, 'C'),
            // Would fail again.
            (s("23505"), write, 'P'),
            (s("42601"), read, 'P'),
            (s("42501"), read, 'P'),
            (s("25006"), write, 'P'),
            (s("57014"), read, 'P'),
        ];
        let backoff = backoff();
        for (failure, operation, expected) in table {
            let got = match decide(*failure, *operation, 0, &backoff, 0.5) {
                Decision::Retry { .. } => 'R',
                Decision::GiveUp(Why::Permanent) => 'P',
                Decision::GiveUp(Why::MayHaveCommitted) => 'C',
                Decision::GiveUp(Why::Exhausted) => 'E',
            };
            assert_eq!(got, *expected, "{failure:?} {operation:?}");
        }
    }

    #[test]
    fn retries_follow_the_backoff_and_stop_after_its_attempts() {
        let backoff = backoff();
        let failure = Failure::Sqlstate("40001");
        let write = Operation::Write { idempotent: false };
        for attempt in 0..backoff.attempts {
            assert_eq!(
                decide(failure, write, attempt, &backoff, 0.5),
                Decision::Retry {
                    after: backoff.delay(attempt, 0.5)
                }
            );
        }
        assert_eq!(
            decide(failure, write, backoff.attempts, &backoff, 0.5),
            Decision::GiveUp(Why::Exhausted)
        );
    }
}
