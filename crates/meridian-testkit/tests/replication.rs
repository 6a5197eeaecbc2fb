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
        assert!(
            replica.is_in_recovery().await.unwrap(),
            "{} is not a replica",
            replica.name()
        );
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

#[tokio::test]
async fn regions_cascade_from_their_leader_and_every_replica_gets_the_writes() {
    let cluster = TestCluster::builder()
        .region("us-east", 2)
        .region("eu-west", 3)
        .region("ap-south", 1)
        .start()
        .await
        .unwrap();
    let names: Vec<&str> = cluster.nodes().iter().map(|n| n.name()).collect();
    assert_eq!(
        names,
        [
            "us-east-1",
            "us-east-2",
            "eu-west-1",
            "eu-west-2",
            "eu-west-3",
            "ap-south-1"
        ]
    );

    // Who streams from whom, as each upstream's walsenders report it.
    let expected_upstream = [
        ("us-east-2", "us-east-1"),
        ("eu-west-1", "us-east-1"),
        ("eu-west-2", "eu-west-1"),
        ("eu-west-3", "eu-west-1"),
        ("ap-south-1", "us-east-1"),
    ];
    for (replica, upstream) in expected_upstream {
        let state = cluster
            .node(upstream)
            .query_one(&format!(
                "SELECT state FROM pg_stat_replication WHERE application_name = '{replica}'"
            ))
            .await
            .unwrap();
        assert_eq!(
            state.as_deref(),
            Some("streaming"),
            "{replica} from {upstream}"
        );
    }
    let primary_senders = cluster
        .primary()
        .query_one("SELECT string_agg(application_name, ',' ORDER BY application_name) FROM pg_stat_replication")
        .await
        .unwrap();
    assert_eq!(
        primary_senders.as_deref(),
        Some("ap-south-1,eu-west-1,us-east-2")
    );

    cluster
        .primary()
        .execute("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 100)")
        .await
        .unwrap();
    cluster.wait_replicated(TIMEOUT).await.unwrap();
    for replica in cluster.replicas() {
        let count = replica.query_one("SELECT count(*) FROM t").await.unwrap();
        assert_eq!(count.as_deref(), Some("100"), "on {}", replica.name());
    }
}

#[tokio::test]
async fn synchronous_commit_waits_while_no_synchronous_replica_is_up() {
    let cluster = TestCluster::builder()
        .replicas(1)
        .synchronous(1)
        .start()
        .await
        .unwrap();
    let primary = cluster.primary();
    let names = primary
        .query_one("SHOW synchronous_standby_names")
        .await
        .unwrap();
    assert_eq!(names.as_deref(), Some("ANY 1 (\"main-2\")"));
    primary.execute("CREATE TABLE t (id int)").await.unwrap();

    let replica = cluster.node("main-2");
    replica.kill();
    let writer = primary.client().await.unwrap();
    let commit = tokio::spawn(async move { writer.execute("INSERT INTO t VALUES (1)", &[]).await });

    // The commit is waiting for a synchronous replica: PostgreSQL says so.
    wait_until(TIMEOUT, "the INSERT to wait in SyncRep", || async {
        match primary
            .query_one("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
            .await
        {
            Ok(n) => Check::when(n.as_deref() == Some("1"), (), n),
            Err(e) => Check::NotYet(format!("{e:#}")),
        }
    })
    .await
    .unwrap();
    assert!(
        !commit.is_finished(),
        "the commit returned with no synchronous replica"
    );

    replica.start().await.unwrap();
    let inserted = tokio::time::timeout(TIMEOUT, commit)
        .await
        .expect("the commit still waits after the replica returned")
        .unwrap()
        .unwrap();
    assert_eq!(inserted, 1);
    let on_replica = wait_until(TIMEOUT, "the row on the replica", || async {
        replica.query_one("SELECT count(*) FROM t").await.into()
    })
    .await
    .unwrap();
    assert_eq!(on_replica.as_deref(), Some("1"));
}
