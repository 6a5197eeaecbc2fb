//! Routing by intent on a real cluster, checked on the servers themselves
//! (`inet_server_port()`), and what happens when replicas die or the primary is replaced.

mod support;

use std::collections::BTreeSet;

use meridian_client::{Error, QueryIntent, TxOptions};
use meridian_testkit::{Check, TestCluster, wait_until};

use support::{TIMEOUT, manager, served_by};

#[tokio::test]
async fn writes_run_on_the_primary_and_reads_share_the_replicas() {
    let cluster = TestCluster::builder().replicas(2).start().await.unwrap();
    let db = manager(&cluster).await;
    let primary = cluster.primary().port();
    let replicas: BTreeSet<u16> = cluster.replicas().iter().map(|r| r.port()).collect();

    for _ in 0..4 {
        assert_eq!(served_by(&db, QueryIntent::Write).await.unwrap(), primary);
    }
    let mut read_on = BTreeSet::new();
    for _ in 0..6 {
        let port = served_by(&db, QueryIntent::Read).await.unwrap();
        assert!(replicas.contains(&port), "a read ran on {port}");
        read_on.insert(port);
    }
    assert_eq!(read_on, replicas, "round-robin reaches every replica");

    // The bare pools agree: a write through `pool(Write)` lands, a read-only transaction runs
    // on a replica, and `primary()` / `replicas()` name the right servers.
    sqlx::query("CREATE TABLE t (id int PRIMARY KEY)")
        .execute(&db.pool(QueryIntent::Write).unwrap())
        .await
        .unwrap();
    let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
        .fetch_one(&db.primary().unwrap())
        .await
        .unwrap();
    assert_eq!(port, i32::from(primary));
    assert_eq!(db.replicas().len(), 2);
    let in_recovery = db
        .transaction(TxOptions::new().read_only(), |tx| {
            Box::pin(async move {
                Ok(sqlx::query_scalar::<_, bool>("SELECT pg_is_in_recovery()")
                    .fetch_one(&mut **tx)
                    .await?)
            })
        })
        .await
        .unwrap();
    assert!(in_recovery, "a read-only transaction runs on a replica");

    let health = db.health();
    assert_eq!(
        (health.status, health.db_primary, health.db_replica),
        ("healthy", "connected", Some("connected"))
    );
    assert_eq!(health.http_status(), 200);
    let shown = format!("{db:?}");
    assert!(
        shown.contains(&format!("127.0.0.1:{primary}/postgres")),
        "{shown}"
    );
}

#[tokio::test]
async fn without_replicas_everything_uses_the_primary() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let db = manager(&cluster).await;
    let primary = cluster.primary().port();
    assert_eq!(served_by(&db, QueryIntent::Read).await.unwrap(), primary);
    assert_eq!(served_by(&db, QueryIntent::Write).await.unwrap(), primary);
    let health = db.health();
    assert_eq!((health.status, health.db_replica), ("healthy", None));
    let json = serde_json::to_value(&health).unwrap();
    assert_eq!(json["db_replica"], serde_json::Value::Null);
    assert_eq!(json["db_primary"], "connected");
}

#[tokio::test]
async fn reads_leave_a_dead_replica_and_fall_back_to_the_primary_when_none_is_left() {
    let cluster = TestCluster::builder().replicas(2).start().await.unwrap();
    let db = manager(&cluster).await;
    let primary = cluster.primary().port();
    let (first, second) = (&cluster.replicas()[0], &cluster.replicas()[1]);

    first.kill();
    wait_until(TIMEOUT, "the dead replica to be seen down", || async {
        let health = db.health();
        let down = health.nodes.iter().filter(|n| n.state == "down").count();
        Check::when(down == 1, (), health)
    })
    .await
    .unwrap();
    let health = db.health();
    assert_eq!((health.status, health.http_status()), ("degraded", 200));
    // Once detected, no read fails and none reaches the dead one.
    for _ in 0..10 {
        assert_eq!(
            served_by(&db, QueryIntent::Read).await.unwrap(),
            second.port()
        );
    }

    second.kill();
    wait_until(TIMEOUT, "both replicas to be seen down", || async {
        let health = db.health();
        Check::when(health.db_replica == Some("disconnected"), (), health)
    })
    .await
    .unwrap();
    for _ in 0..10 {
        assert_eq!(served_by(&db, QueryIntent::Read).await.unwrap(), primary);
    }
    let health = db.health();
    assert_eq!(health.http_status(), 503);
    assert_eq!(health.status, "unhealthy");
    let json = serde_json::to_value(&health).unwrap();
    assert_eq!(json["db_replica"], "disconnected");
    assert_eq!(json["db_primary"], "connected");
    assert!(db.stats().read_fallbacks >= 10);
    let metrics = db.stats().prometheus();
    assert!(
        metrics.contains("meridian_client_read_fallbacks_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "meridian_client_up{{node=\"127.0.0.1:{}/postgres\",role=\"replica\"}} 0",
            first.port()
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn after_a_promotion_writes_resume_on_the_new_primary_without_a_restart() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let db = manager(&cluster).await;
    let (old, new) = (cluster.primary(), &cluster.replicas()[0]);
    db.run(QueryIntent::Write, |conn| {
        Box::pin(async move {
            sqlx::query("CREATE TABLE t (id int PRIMARY KEY)")
                .execute(conn)
                .await?;
            Ok(())
        })
    })
    .await
    .unwrap();
    cluster.wait_replicated(TIMEOUT).await.unwrap();

    new.promote().await.unwrap();
    old.kill();
    // Writes fail only while the change is unseen; `retry` rides over that window (a write
    // refused for want of a primary, or whose connection could not open, never ran).
    let landed_on = db
        .retry(QueryIntent::Write, |conn| {
            Box::pin(async move {
                sqlx::query("INSERT INTO t VALUES (1)")
                    .execute(&mut *conn)
                    .await?;
                let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
                    .fetch_one(conn)
                    .await?;
                Ok(port)
            })
        })
        .await;
    let landed_on = match landed_on {
        Ok(port) => port,
        // The insert may have failed with its connection to the old primary breaking while
        // it was sent: then retrying a write is refused, rightly. Once the new primary is
        // seen, writes work.
        Err(e) => {
            assert!(e.is_retryable(), "{e}");
            wait_until(TIMEOUT, "writes on the promoted node", || async {
                Check::from(served_by(&db, QueryIntent::Write).await)
            })
            .await
            .unwrap();
            db.run(QueryIntent::Write, |conn| {
                Box::pin(async move {
                    sqlx::query("INSERT INTO t VALUES (1)")
                        .execute(conn)
                        .await?;
                    Ok(())
                })
            })
            .await
            .unwrap();
            i32::from(new.port())
        }
    };
    assert_eq!(landed_on, i32::from(new.port()));
    assert_eq!(
        served_by(&db, QueryIntent::Write).await.unwrap(),
        new.port()
    );
    assert_eq!(
        new.query_one("SELECT count(*) FROM t")
            .await
            .unwrap()
            .as_deref(),
        Some("1")
    );
    // With the old primary gone and the new one the only node, reads use it too.
    assert_eq!(served_by(&db, QueryIntent::Read).await.unwrap(), new.port());
}

#[tokio::test]
async fn writes_without_a_primary_fail_fast_with_a_retryable_error() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let db = manager(&cluster).await;
    cluster.primary().kill();
    wait_until(TIMEOUT, "the primary to be seen down", || async {
        let health = db.health();
        Check::when(health.db_primary == "disconnected", (), health)
    })
    .await
    .unwrap();
    let error = served_by(&db, QueryIntent::Write).await.unwrap_err();
    assert!(matches!(error, Error::Unavailable { .. }), "{error}");
    assert!(error.is_retryable());
    assert!(
        error.to_string().contains("no reachable primary"),
        "{error}"
    );
    // Reads go on on the replica.
    assert_eq!(
        served_by(&db, QueryIntent::Read).await.unwrap(),
        cluster.replicas()[0].port()
    );
    assert_eq!(db.health().http_status(), 503);
}

#[tokio::test]
async fn a_replica_that_comes_back_is_reconnected_and_serves_reads_again() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let db = manager(&cluster).await;
    let (primary, replica) = (cluster.primary().port(), &cluster.replicas()[0]);
    assert_eq!(
        served_by(&db, QueryIntent::Read).await.unwrap(),
        replica.port()
    );

    replica.kill();
    wait_until(TIMEOUT, "reads to leave the dead replica", || async {
        let port = served_by(&db, QueryIntent::Read).await;
        Check::when(matches!(port, Ok(p) if p == primary), (), port)
    })
    .await
    .unwrap();
    // The monitor keeps trying on its backoff; the pool's dead connections are replaced.
    replica.start().await.unwrap();
    wait_until(TIMEOUT, "reads back on the restarted replica", || async {
        let port = served_by(&db, QueryIntent::Read).await;
        Check::when(matches!(port, Ok(p) if p == replica.port()), (), port)
    })
    .await
    .unwrap();
    let health = db.health();
    assert_eq!(health.status, "healthy", "{health:?}");
}

#[tokio::test]
async fn a_read_sent_to_a_replica_that_just_died_moves_on_without_waiting_for_the_pool() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    // A pool that would wait 60 s for a connection: only the monitor can cut that short.
    let mut options = meridian_client::Options::default();
    options.acquire_timeout = std::time::Duration::from_secs(60);
    let db = support::fast(
        meridian_client::PoolManager::builder()
            .options(options)
            .primary(cluster.primary().url())
            .replica(cluster.replicas()[0].url()),
    )
    .build()
    .await
    .unwrap();
    assert_eq!(
        served_by(&db, QueryIntent::Read).await.unwrap(),
        cluster.replicas()[0].port()
    );
    cluster.replicas()[0].kill();
    let started = std::time::Instant::now();
    let port = db
        .retry(QueryIntent::Read, |conn| {
            Box::pin(async move {
                let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
                    .fetch_one(conn)
                    .await?;
                Ok(port)
            })
        })
        .await
        .unwrap();
    assert_eq!(port, i32::from(cluster.primary().port()));
    // A generous bound, far below the pool's 60 s: the read did not wait for sqlx.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}
