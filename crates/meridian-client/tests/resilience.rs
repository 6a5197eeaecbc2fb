//! Retries and the circuit breaker against a real server: which failures are retried (and
//! which writes are not), and a breaker that opens on failing connections and closes once
//! they work again.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use meridian_client::{BoxFuture, BreakerPolicy, Error, Options, PoolManager, QueryIntent};
use meridian_testkit::{Check, TestCluster, wait_until};
use sqlx::PgConnection;

use support::{TIMEOUT, fast, manager};

/// Gives a closure stored in a variable the signature the helpers take (a closure's
/// signature is inferred only where it is passed, not where it is stored).
fn on_connection<F>(f: F) -> F
where
    F: for<'c> FnMut(&'c mut PgConnection) -> BoxFuture<'c, meridian_client::Result<()>>,
{
    f
}

fn select_one(conn: &mut PgConnection) -> BoxFuture<'_, meridian_client::Result<()>> {
    Box::pin(async move {
        sqlx::query("SELECT 1").execute(conn).await?;
        Ok(())
    })
}

/// Runs `sql` through `retry` (or `retry_idempotent`) the first time, a harmless query after;
/// returns the outcome and the number of attempts.
async fn attempts(
    db: &PoolManager,
    intent: QueryIntent,
    idempotent: bool,
    first: &'static str,
) -> (Result<(), Error>, u32) {
    let runs = Arc::new(AtomicU32::new(0));
    let attempt = on_connection(|conn| {
        let runs = runs.clone();
        Box::pin(async move {
            let sql = if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                first
            } else {
                "SELECT 1"
            };
            sqlx::raw_sql(sql).execute(conn).await?;
            Ok(())
        })
    });
    let result = if idempotent {
        db.retry_idempotent(intent, attempt).await
    } else {
        db.retry(intent, attempt).await
    };
    (result, runs.load(Ordering::SeqCst))
}

#[tokio::test]
async fn transient_failures_are_retried_but_never_a_write_that_may_have_committed() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let db = manager(&cluster).await;
    // The server ends the session mid-statement: 57P01, "terminating connection due to
    // administrator command". A read runs again; a write may already have committed.
    let terminate = "SELECT pg_terminate_backend(pg_backend_pid())";

    let (result, runs) = attempts(&db, QueryIntent::Read, false, terminate).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(runs, 2);

    let (result, runs) = attempts(&db, QueryIntent::Write, false, terminate).await;
    let error = result.unwrap_err();
    assert_eq!(runs, 1, "a write whose commit is in doubt is not retried");
    assert!(
        error.is_retryable(),
        "transient, but not safe to repeat: {error}"
    );
    assert_eq!(error.sqlstate(), Some("57P01"));

    let (result, runs) = attempts(&db, QueryIntent::Write, true, terminate).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(runs, 2, "declared idempotent, it is retried");

    // A rolled-back deadlock-class failure is retried even for a write.
    let (result, runs) = attempts(
        &db,
        QueryIntent::Write,
        false,
        "DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$",
    )
    .await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(runs, 2);

    // Permanent failures are not retried.
    let (result, runs) = attempts(&db, QueryIntent::Read, false, "SELEC 1").await;
    let error = result.unwrap_err();
    assert_eq!((error.sqlstate(), runs), (Some("42601"), 1));
    assert!(!error.is_retryable());
}

#[tokio::test]
async fn the_breaker_opens_on_failing_connections_and_closes_when_they_work_again() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let primary = cluster.primary();
    // A role allowed one connection: the monitor's. Every connection the pool tries to open
    // is refused with 53300 while the node itself stays up.
    primary
        .execute("CREATE ROLE app LOGIN CONNECTION LIMIT 1")
        .await
        .unwrap();
    let mut options = Options::default();
    options.acquire_timeout = Duration::from_millis(500);
    let db = fast(PoolManager::builder().options(options).primary(format!(
        "postgres://app@127.0.0.1:{}/postgres",
        primary.port()
    )))
    .breaker(BreakerPolicy {
        failures_to_open: 2,
        open_for: Duration::from_secs(1),
        trials: 1,
    })
    .build()
    .await
    .unwrap();

    for _ in 0..2 {
        let error = db.run(QueryIntent::Write, select_one).await.unwrap_err();
        assert!(matches!(error, Error::Connect { .. }), "{error}");
        assert!(error.is_node_failure(), "{error}");
    }
    let health = db.health();
    assert_eq!(health.nodes[0].breaker, "open", "{health:?}");
    assert_eq!(
        health.nodes[0].state, "up",
        "the node itself answers its checks"
    );
    // Open: refused at once, without trying the node.
    let error = db.run(QueryIntent::Write, select_one).await.unwrap_err();
    assert!(matches!(error, Error::Unavailable { .. }), "{error}");

    primary
        .execute("ALTER ROLE app CONNECTION LIMIT -1")
        .await
        .unwrap();
    // After `open_for`, one trial passes and closes it.
    wait_until(TIMEOUT, "the breaker to let a trial through", || async {
        Check::from(db.run(QueryIntent::Write, select_one).await)
    })
    .await
    .unwrap();
    assert_eq!(db.health().nodes[0].breaker, "closed");
    let stats = db.stats();
    assert!(stats.nodes[0].failures >= 2, "{stats:?}");
}
