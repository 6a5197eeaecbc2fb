//! The queries, each with the intent that picks its node: the insert in a transaction on the
//! primary (returning the WAL token of its commit), reads on a replica, or on one that has
//! replayed the caller's last write, or on the primary when none qualifies.
//!
//! Reads go through [`PoolManager::retry`], so a replica dying under a read costs a retry on
//! another node, not an error. The insert runs in a transaction that is retried only when it
//! surely did not commit (it could not begin, or was rolled back by a serialization failure
//! or deadlock): a commit in doubt is reported, never repeated, so no transaction is stored
//! twice.

use meridian_client::{PoolManager, QueryIntent, TxOptions, Written};

use crate::model::{NewTransaction, Page, Transaction};

/// The columns of a [`Transaction`], `created_at` rendered as RFC 3339 text in UTC.
macro_rules! columns {
    () => {
        "id, account, amount_cents, currency, description, \
         to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS created_at"
    };
}

const INSERT: &str = concat!(
    "INSERT INTO transactions (account, amount_cents, currency, description) \
     VALUES ($1, $2, $3, $4) RETURNING ",
    columns!()
);
const BY_ID: &str = concat!("SELECT ", columns!(), " FROM transactions WHERE id = $1");
const PAGE: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM transactions ORDER BY id DESC LIMIT $1 OFFSET $2"
);

/// Stores `new` on the primary; the row and the token that reads it back.
pub async fn insert(
    db: &PoolManager,
    new: NewTransaction,
) -> meridian_client::Result<Written<Transaction>> {
    db.write(TxOptions::new().retry(), move |tx| {
        // Each attempt's future owns its values: the helpers' futures outlive no borrow.
        let new = new.clone();
        Box::pin(async move {
            Ok(sqlx::query_as(INSERT)
                .bind(&new.account)
                .bind(new.amount_cents)
                .bind(&new.currency)
                .bind(&new.description)
                .fetch_one(&mut **tx)
                .await?)
        })
    })
    .await
}

/// The transaction `id`, if it exists (as seen by the node `intent` picks).
pub async fn get(
    db: &PoolManager,
    intent: QueryIntent,
    id: i64,
) -> meridian_client::Result<Option<Transaction>> {
    db.retry(intent, |conn| {
        Box::pin(async move { Ok(sqlx::query_as(BY_ID).bind(id).fetch_optional(conn).await?) })
    })
    .await
}

/// One page of transactions, newest first.
pub async fn list(
    db: &PoolManager,
    intent: QueryIntent,
    page: Page,
) -> meridian_client::Result<Vec<Transaction>> {
    db.retry(intent, |conn| {
        Box::pin(async move {
            Ok(sqlx::query_as(PAGE)
                .bind(page.limit)
                .bind(page.offset)
                .fetch_all(conn)
                .await?)
        })
    })
    .await
}
