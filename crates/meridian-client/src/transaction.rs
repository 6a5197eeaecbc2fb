//! Transaction settings ([`TxOptions`]) and nested savepoints ([`savepoint`]).

use sqlx::{Acquire, PgTransaction};

use crate::BoxFuture;
use crate::error::Result;
use crate::intent::QueryIntent;

/// Isolation level of a transaction.
///
/// ```
/// use meridian_client::{Isolation, TxOptions};
/// let snapshot = TxOptions::new().read_only().isolation(Isolation::RepeatableRead);
/// assert_eq!(Isolation::default(), Isolation::ReadCommitted);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// PostgreSQL's default.
    #[default]
    ReadCommitted,
    /// One snapshot for the whole transaction.
    RepeatableRead,
    /// As if transactions ran one at a time; conflicts fail with `40001`.
    Serializable,
}

/// How [`PoolManager::transaction`](crate::PoolManager::transaction) runs one.
///
/// ```
/// use meridian_client::{Isolation, TxOptions};
/// let options = TxOptions::new().read_only().isolation(Isolation::RepeatableRead);
/// assert_eq!(options, TxOptions::new().read_only().isolation(Isolation::RepeatableRead));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxOptions {
    read_only: bool,
    isolation: Isolation,
    retry: bool,
}

impl TxOptions {
    /// A read-write transaction at read committed, not retried.
    pub fn new() -> TxOptions {
        TxOptions::default()
    }

    /// `READ ONLY`: it may run on a replica.
    pub fn read_only(mut self) -> TxOptions {
        self.read_only = true;
        self
    }

    /// The isolation level.
    pub fn isolation(mut self, isolation: Isolation) -> TxOptions {
        self.isolation = isolation;
        self
    }

    /// Shorthand for `isolation(Isolation::Serializable)`.
    pub fn serializable(self) -> TxOptions {
        self.isolation(Isolation::Serializable)
    }

    /// Run it again when it was rolled back by a serialization failure (`40001`) or a
    /// deadlock (`40P01`), or could not begin (no connection, no primary yet), with the
    /// manager's retry backoff. Never when its commit may have happened. The closure must
    /// then be safe to run again: it should only act through the transaction.
    pub fn retry(mut self) -> TxOptions {
        self.retry = true;
        self
    }

    pub(crate) fn retries(self) -> bool {
        self.retry
    }

    /// The same, but read-write (a write helper's transaction).
    pub(crate) fn writable(mut self) -> TxOptions {
        self.read_only = false;
        self
    }

    pub(crate) fn intent(self) -> QueryIntent {
        // PostgreSQL refuses serializable mode on a standby.
        if self.read_only && self.isolation != Isolation::Serializable {
            QueryIntent::Read
        } else {
            QueryIntent::Write
        }
    }

    /// The `BEGIN` statement (static text: sqlx only runs SQL it can trust).
    pub(crate) fn begin_statement(self) -> &'static str {
        match (self.isolation, self.read_only) {
            (Isolation::ReadCommitted, false) => "BEGIN",
            (Isolation::ReadCommitted, true) => "BEGIN READ ONLY",
            (Isolation::RepeatableRead, false) => "BEGIN ISOLATION LEVEL REPEATABLE READ",
            (Isolation::RepeatableRead, true) => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
            (Isolation::Serializable, false) => "BEGIN ISOLATION LEVEL SERIALIZABLE",
            (Isolation::Serializable, true) => "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY",
        }
    }
}

/// Runs `f` inside a savepoint of `tx`: released when `f` returns `Ok`, rolled back to when
/// it returns `Err`, leaving the outer transaction usable either way. Savepoints nest.
///
/// ```no_run
/// # async fn f(db: meridian_client::PoolManager) -> meridian_client::Result<()> {
/// use meridian_client::{TxOptions, savepoint};
/// db.transaction(TxOptions::new(), |tx| {
///     Box::pin(async move {
///         sqlx::query("INSERT INTO orders (id) VALUES (1)").execute(&mut **tx).await?;
///         // A failed optional step does not lose the order.
///         let _ = savepoint(tx, |sp| {
///             Box::pin(async move {
///                 sqlx::query("INSERT INTO coupons (order_id) VALUES (1)")
///                     .execute(&mut **sp)
///                     .await?;
///                 Ok(())
///             })
///         })
///         .await;
///         Ok(())
///     })
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub async fn savepoint<T>(
    tx: &mut PgTransaction<'_>,
    f: impl for<'s, 'x> FnOnce(&'s mut PgTransaction<'x>) -> BoxFuture<'s, Result<T>>,
) -> Result<T> {
    let mut inner = tx.begin().await?;
    match f(&mut inner).await {
        Ok(value) => {
            inner.commit().await?;
            Ok(value)
        }
        Err(e) => {
            inner.rollback().await?;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_goes_to_replicas_unless_serializable() {
        assert_eq!(TxOptions::new().intent(), QueryIntent::Write);
        assert_eq!(TxOptions::new().read_only().intent(), QueryIntent::Read);
        assert_eq!(
            TxOptions::new().read_only().serializable().intent(),
            QueryIntent::Write
        );
        assert_eq!(
            TxOptions::new()
                .read_only()
                .serializable()
                .begin_statement(),
            "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY"
        );
        assert_eq!(TxOptions::new().begin_statement(), "BEGIN");
    }
}
