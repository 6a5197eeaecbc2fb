//! Read-your-writes and lag exclusion against a replica whose replay is paused
//! (`pg_wal_replay_pause()`): a real replica falling behind, on demand.

mod support;

use meridian_client::{PoolManager, QueryIntent, TxOptions, WalToken};
use meridian_testkit::{Check, TestCluster, wait_until};

use support::{TIMEOUT, fast, served_by};

/// Inserts `id` on the primary; the token of the write.
async fn insert(db: &PoolManager, id: i32) -> WalToken {
    db.write(TxOptions::new(), |tx| {
        Box::pin(async move {
            sqlx::query("INSERT INTO notes VALUES ($1)")
                .bind(id)
                .execute(&mut **tx)
                .await?;
            Ok(())
        })
    })
    .await
    .unwrap()
    .token
}

/// Whether the node chosen for `intent` sees note `id`, and its port.
async fn sees(db: &PoolManager, intent: QueryIntent, id: i32) -> (bool, u16) {
    db.run(intent, |conn| {
        Box::pin(async move {
            let found: Option<i32> = sqlx::query_scalar("SELECT id FROM notes WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
            let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
                .fetch_one(conn)
                .await?;
            Ok((found.is_some(), u16::try_from(port).unwrap()))
        })
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn reads_after_a_write_never_miss_it_while_the_replica_lags() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let (primary, replica) = (cluster.primary(), &cluster.replicas()[0]);
    // No lag ceiling: the lagging replica keeps qualifying for plain reads, so only the token
    // keeps a read off it.
    let db = fast(
        PoolManager::builder()
            .primary(primary.url())
            .replica(replica.url())
            .max_lag_bytes(None),
    )
    .build()
    .await
    .unwrap();
    db.run(QueryIntent::Write, |conn| {
        Box::pin(async move {
            sqlx::query("CREATE TABLE notes (id int PRIMARY KEY)")
                .execute(conn)
                .await?;
            Ok(())
        })
    })
    .await
    .unwrap();

    // Caught up, a read after a write runs on the replica (once its check has seen the
    // replay).
    let token = insert(&db, 0).await;
    wait_until(TIMEOUT, "a read after the write on the replica", || async {
        let (seen, port) = sees(&db, QueryIntent::ReadAfter(token), 0).await;
        assert!(seen, "a read after the write missed it");
        Check::when(port == replica.port(), (), port)
    })
    .await
    .unwrap();

    replica
        .execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    let (mut stale_plain_reads, mut stale_reads_after) = (0, 0);
    for id in 1..=30 {
        let token = insert(&db, id).await;
        let (seen, port) = sees(&db, QueryIntent::ReadAfter(token), id).await;
        if !seen {
            stale_reads_after += 1;
        }
        assert_eq!(
            port,
            primary.port(),
            "the paused replica cannot have replayed it"
        );
        let (seen, port) = sees(&db, QueryIntent::Read, id).await;
        if !seen {
            assert_eq!(port, replica.port());
            stale_plain_reads += 1;
        }
    }
    assert_eq!(stale_reads_after, 0, "zero stale reads after a write");
    // The replica really was behind: plain reads missed every write.
    assert_eq!(stale_plain_reads, 30);
    let stats = db.stats();
    assert!(stats.read_fallbacks >= 30, "{stats:?}");

    // Replay resumes: reads after the last write return to the replica.
    replica
        .execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    let token = insert(&db, 31).await;
    wait_until(
        TIMEOUT,
        "reads after the write back on the replica",
        || async {
            let (seen, port) = sees(&db, QueryIntent::ReadAfter(token), 31).await;
            assert!(seen, "a read after the write missed it");
            Check::when(port == replica.port(), (), port)
        },
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_replica_beyond_the_lag_ceiling_gets_no_reads_until_it_catches_up() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let (primary, replica) = (cluster.primary(), &cluster.replicas()[0]);
    let db = fast(
        PoolManager::builder()
            .primary(primary.url())
            .replica(replica.url())
            .max_lag_bytes(Some(1024 * 1024)),
    )
    .build()
    .await
    .unwrap();
    assert_eq!(
        served_by(&db, QueryIntent::Read).await.unwrap(),
        replica.port()
    );

    replica
        .execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();
    // About 10 MiB of WAL the replica does not replay.
    primary
        .execute("CREATE TABLE big AS SELECT g, repeat('x', 100) AS pad FROM generate_series(1, 60000) g")
        .await
        .unwrap();
    wait_until(TIMEOUT, "the replica's lag to pass the ceiling", || async {
        let health = db.health();
        let lag = health
            .nodes
            .iter()
            .find(|n| n.role == "replica")
            .and_then(|n| n.lag_bytes);
        Check::when(lag.is_some_and(|l| l > 1024 * 1024), (), lag)
    })
    .await
    .unwrap();
    for _ in 0..5 {
        assert_eq!(
            served_by(&db, QueryIntent::Read).await.unwrap(),
            primary.port()
        );
    }

    replica
        .execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
    wait_until(TIMEOUT, "reads back on the replica", || async {
        let port = served_by(&db, QueryIntent::Read).await.unwrap();
        Check::when(port == replica.port(), (), port)
    })
    .await
    .unwrap();
}
