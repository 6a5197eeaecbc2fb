//! Transactions on a real server: commit and rollback, savepoints that keep the outer
//! transaction, and serialization failures retried when asked.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use meridian_client::{Error, PoolManager, QueryIntent, TxOptions, savepoint};
use meridian_testkit::TestCluster;
use tokio::sync::Barrier;

use support::manager;

async fn item_ids(db: &PoolManager) -> Vec<i32> {
    db.run(QueryIntent::Write, |conn| {
        Box::pin(async move {
            Ok(sqlx::query_scalar("SELECT id FROM items ORDER BY id")
                .fetch_all(conn)
                .await?)
        })
    })
    .await
    .unwrap()
}

async fn setup(db: &PoolManager, sql: &'static str) {
    db.run(QueryIntent::Write, |conn| {
        Box::pin(async move {
            sqlx::raw_sql(sql).execute(conn).await?;
            Ok(())
        })
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_failed_savepoint_is_rolled_back_and_the_outer_transaction_commits() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let db = manager(&cluster).await;
    setup(&db, "CREATE TABLE items (id int PRIMARY KEY)").await;

    db.transaction(TxOptions::new(), |tx| {
        Box::pin(async move {
            sqlx::query("INSERT INTO items VALUES (1)")
                .execute(&mut **tx)
                .await?;
            // A savepoint that fails (a duplicate key) after inserting 2: both undone.
            let failed = savepoint(tx, |sp| {
                Box::pin(async move {
                    sqlx::query("INSERT INTO items VALUES (2)")
                        .execute(&mut **sp)
                        .await?;
                    sqlx::query("INSERT INTO items VALUES (1)")
                        .execute(&mut **sp)
                        .await?;
                    Ok(())
                })
            })
            .await;
            assert_eq!(failed.unwrap_err().sqlstate(), Some("23505"));
            // Nested: the inner one fails, the outer savepoint keeps 3.
            savepoint(tx, |sp| {
                Box::pin(async move {
                    sqlx::query("INSERT INTO items VALUES (3)")
                        .execute(&mut **sp)
                        .await?;
                    let inner = savepoint(sp, |inner| {
                        Box::pin(async move {
                            sqlx::query("INSERT INTO items VALUES (4)")
                                .execute(&mut **inner)
                                .await?;
                            Err::<(), _>(Error::Sqlx(sqlx::Error::RowNotFound))
                        })
                    })
                    .await;
                    assert!(inner.is_err());
                    Ok(())
                })
            })
            .await?;
            sqlx::query("INSERT INTO items VALUES (5)")
                .execute(&mut **tx)
                .await?;
            Ok(())
        })
    })
    .await
    .unwrap();
    assert_eq!(item_ids(&db).await, [1, 3, 5]);

    // A transaction whose closure fails leaves nothing behind.
    let failed = db
        .transaction(TxOptions::new(), |tx| {
            Box::pin(async move {
                sqlx::query("INSERT INTO items VALUES (6)")
                    .execute(&mut **tx)
                    .await?;
                Err::<(), _>(Error::Sqlx(sqlx::Error::RowNotFound))
            })
        })
        .await;
    assert!(failed.is_err());
    assert_eq!(item_ids(&db).await, [1, 3, 5]);
}

/// Two serializable transactions with a write skew: each reads both rows, then takes one
/// doctor off call. A barrier makes both read before either writes, so one of them must fail with
/// `40001` (on its update or at commit). Returns each transaction's outcome and how many
/// times the closures ran in all.
async fn write_skew(db: &PoolManager, options: TxOptions) -> (Vec<Result<(), Error>>, u32) {
    let barrier = Arc::new(Barrier::new(2));
    let runs = Arc::new(AtomicU32::new(0));
    let mut handles = Vec::new();
    for write_id in [2, 1] {
        let (db, barrier, runs) = (db.clone(), barrier.clone(), runs.clone());
        handles.push(tokio::spawn(async move {
            db.transaction(options, |tx| {
                let (runs, barrier) = (runs.clone(), barrier.clone());
                Box::pin(async move {
                    let run = runs.fetch_add(1, Ordering::SeqCst);
                    let total: i64 = sqlx::query_scalar("SELECT sum(on_call)::bigint FROM doctors")
                        .fetch_one(&mut **tx)
                        .await?;
                    if run < 2 {
                        // The first two runs meet here: both have read before either writes.
                        barrier.wait().await;
                    }
                    if total >= 2 {
                        sqlx::query("UPDATE doctors SET on_call = 0 WHERE id = $1")
                            .bind(write_id)
                            .execute(&mut **tx)
                            .await?;
                    }
                    Ok(())
                })
            })
            .await
        }));
    }
    let mut outcomes = Vec::new();
    for handle in handles {
        outcomes.push(handle.await.unwrap());
    }
    (outcomes, runs.load(Ordering::SeqCst))
}

const DOCTORS: &str = "DROP TABLE IF EXISTS doctors; \
    CREATE TABLE doctors (id int PRIMARY KEY, on_call int NOT NULL); \
    INSERT INTO doctors VALUES (1, 1), (2, 1)";

#[tokio::test]
async fn serialization_failures_fail_without_retry_and_are_retried_when_asked() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let db = manager(&cluster).await;

    setup(&db, DOCTORS).await;
    let (outcomes, runs) = write_skew(&db, TxOptions::new().serializable()).await;
    assert_eq!(runs, 2);
    let failures: Vec<&Error> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
    assert_eq!(failures.len(), 1, "{outcomes:?}");
    assert_eq!(failures[0].sqlstate(), Some("40001"));
    assert!(failures[0].is_retryable());

    setup(&db, DOCTORS).await;
    let (outcomes, runs) = write_skew(&db, TxOptions::new().serializable().retry()).await;
    assert!(outcomes.iter().all(Result::is_ok), "{outcomes:?}");
    assert!(runs >= 3, "the failed one ran again ({runs} runs)");
    // The invariant serializable isolation protects: someone is still on call.
    let on_call = cluster
        .primary()
        .query_one("SELECT sum(on_call) FROM doctors")
        .await
        .unwrap();
    assert_eq!(on_call.as_deref(), Some("1"));
}
