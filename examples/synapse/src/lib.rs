//! Synapse, the transactions service of Meridian's original design, rebuilt on
//! [`meridian_client`]: a small JSON API over one table, whose writes go to the primary and
//! whose reads go to replicas, or, with the `x-wal-token` a write answered, to a replica that
//! has replayed that write (read-your-writes), else to the primary.
//!
//! The binary (`main.rs`) wires [`config`], [`migrate`] and [`serve`]; tests run the same
//! [`app`] in-process on a port of their choosing.

pub mod api;
pub mod config;
pub mod error;
pub mod model;
pub mod store;

use std::future::Future;

use axum::Router;
use meridian_client::PoolManager;
use tokio::net::TcpListener;

/// The service's HTTP application over `db`.
pub fn app(db: PoolManager) -> Router {
    api::router(db)
}

/// Why the schema could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// No node is known to be the primary.
    #[error(transparent)]
    NoPrimary(meridian_client::Error),
    /// A migration failed, or the lock or the bookkeeping table could not be had.
    #[error(transparent)]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// Applies the migrations of `migrations/` (embedded at build time) that the primary has not
/// run yet. sqlx holds an advisory lock meanwhile, so instances starting together apply each
/// migration once; running them again is a no-op.
pub async fn migrate(db: &PoolManager) -> Result<(), MigrateError> {
    let primary = db.primary().map_err(MigrateError::NoPrimary)?;
    sqlx::migrate!("./migrations").run(&primary).await?;
    Ok(())
}

/// Serves [`app`] over `db` on `listener` until `shutdown` completes, then lets the requests
/// in flight finish.
pub async fn serve(
    listener: TcpListener,
    db: PoolManager,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(db))
        .with_graceful_shutdown(shutdown)
        .await
}
