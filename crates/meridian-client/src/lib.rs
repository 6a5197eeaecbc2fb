//! In-process routing and resilience for Rust services on a replicated PostgreSQL, for
//! services that want Meridian's guarantees without a proxy in the path.
//!
//! A [`PoolManager`] keeps one sqlx pool per node (sqlx pools are single-host) and picks the
//! node for every query from its [`QueryIntent`]:
//!
//! - [`QueryIntent::Write`] to the primary; after a failover, to the promoted node, found by a
//!   background monitor that checks every node's role (or follows a Meridian control plane).
//! - [`QueryIntent::Read`] to a replica no further behind than the lag ceiling, shared by
//!   round-robin, least in-flight or lowest latency ([`Strategy`]); to the primary when no
//!   replica qualifies. With no replica configured, everything uses the primary.
//! - [`QueryIntent::ReadAfter`] with the [`WalToken`] a write returned: to a replica that has
//!   replayed that write, else the primary. No stale read after one's own write.
//!
//! Around that: a circuit breaker per node, reconnection with exponential backoff and
//! jitter, [`PoolManager::retry`] for transient failures (never re-running a write whose
//! commit may have happened), [`PoolManager::transaction`] with savepoints ([`savepoint`]),
//! read-only and serializable modes and serialization-failure retries, and
//! [`PoolManager::health`] / [`PoolManager::stats`] for `/health` and `/metrics`.
//!
//! Closures given to the helpers take the connection (or transaction) and return a boxed
//! future, `|conn| Box::pin(async move { ... })`, as sqlx's own `Connection::transaction`
//! does: a boxed `Send` future keeps the helpers usable from spawned tasks and web handlers,
//! which async closures borrowing their argument cannot promise today.
//!
//! The decisions (which node, whether to retry, the breaker's state) are pure functions in
//! `meridian-core` (`balance`, `retry`, `breaker`), shared with Meridian's proxy.
//!
//! ```no_run
//! # async fn f() -> meridian_client::Result<()> {
//! use meridian_client::{PoolManager, QueryIntent, TxOptions};
//!
//! let db = PoolManager::from_env().await?; // DATABASE_URL, DATABASE_REPLICA_URL(S)
//! let written = db
//!     .write(TxOptions::new(), |tx| {
//!         Box::pin(async move {
//!             Ok(sqlx::query_scalar::<_, i64>("INSERT INTO notes (body) VALUES ('hi') RETURNING id")
//!                 .fetch_one(&mut **tx)
//!                 .await?)
//!         })
//!     })
//!     .await?;
//! let body: String = db
//!     .retry(QueryIntent::ReadAfter(written.token), |conn| {
//!         Box::pin(async move {
//!             Ok(sqlx::query_scalar("SELECT body FROM notes WHERE id = $1")
//!                 .bind(written.value)
//!                 .fetch_one(conn)
//!                 .await?)
//!         })
//!     })
//!     .await?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod error;
mod health;
mod intent;
mod manager;
mod monitor;
mod node;
mod options;
mod transaction;

pub use error::{Error, Result};
/// The future the helpers' closures return: boxed and `Send`.
pub use futures::future::BoxFuture;
pub use health::{Health, NodeHealth, NodeStats, PoolStats, Stats};
pub use intent::{QueryIntent, WalToken};
pub use manager::{PoolManager, Written};
pub use meridian_core::backoff::Backoff;
pub use meridian_core::balance::Strategy;
pub use meridian_core::breaker::BreakerPolicy;
pub use options::{Builder, Options};
pub use transaction::{Isolation, TxOptions, savepoint};
