//! Recycling the pools (the operator's "refresh connections"): every server connection that
//! exists is replaced, gracefully. Idle ones are closed and the next transaction runs on a new
//! backend; a transaction or a pinned session that is under way keeps its backend until it
//! ends, and that backend is closed then; recycling some nodes leaves the other nodes' pools
//! alone. Each backend's fate is read from `pg_stat_activity` on the server itself.

mod support;

use std::collections::BTreeSet;

use meridian_core::topology::NodeId;
use meridian_proxy::RecycleReport;
use meridian_testkit::{Check, Node, TestCluster, wait_until};
use support::{ProxyUnderTest, STEP, backend_pid, backend_pid_of};

/// The backends of `node` that serve the proxy: client backends other than the test kit's own
/// sessions (it logs in with `application_name = meridian-testkit`).
async fn proxy_backends(node: &Node) -> Result<BTreeSet<i32>, String> {
    let rows = node
        .query(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' \
             AND application_name <> 'meridian-testkit'",
        )
        .await
        .map_err(|e| format!("{e:#}"))?;
    rows.iter()
        .map(|row| {
            let pid = row.first().cloned().flatten().unwrap_or_default();
            pid.parse().map_err(|e| format!("pid {pid:?}: {e}"))
        })
        .collect()
}

/// Waits until none of `pids` is a backend of `node` any more.
async fn wait_gone(node: &Node, pids: &BTreeSet<i32>, what: &str) {
    wait_until(STEP, what, || async {
        match proxy_backends(node).await {
            Ok(now) => Check::when(now.is_disjoint(pids), (), now),
            Err(e) => Check::NotYet(e),
        }
    })
    .await
    .unwrap();
}

/// Waits until every connection of the proxy's only pool is idle, and there are at least
/// `idle` of them; returns how many.
async fn wait_idle(proxy: &ProxyUnderTest, idle: usize) -> usize {
    wait_until(
        STEP,
        &format!("{idle} or more idle connections"),
        || async {
            let stats = proxy.pool_stats();
            Check::when(
                stats.open == stats.idle && stats.idle >= idle,
                stats.idle,
                stats,
            )
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn after_recycle_transactions_run_on_new_backends_and_the_old_ones_are_closed() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let node = cluster.primary();
    let proxy = ProxyUnderTest::start(&cluster, "[pool]\nmin_size = 3\nmax_size = 4\n").await;
    let client = proxy.connect().await;
    let first = backend_pid(&client).await;
    // One client, one transaction at a time: the pool holds `min_size`.
    assert_eq!(wait_idle(&proxy, 3).await, 3);
    let old = proxy_backends(node).await.unwrap();
    assert_eq!(old.len(), 3, "{old:?}");
    assert!(old.contains(&first), "{first} in {old:?}");
    let connects = proxy.pool_stats().connects;

    // From a thread with no runtime at all, as the operator interface's own runtime is not
    // the proxy's.
    let handle = proxy.proxy.clone();
    let report = std::thread::spawn(move || handle.recycle(None))
        .join()
        .unwrap();
    assert_eq!(
        report,
        RecycleReport {
            pools: 1,
            idle: 3,
            in_use: 0
        }
    );

    // No new transaction gets a connection from before the recycle, even one that asks
    // before the pool's maintenance has run.
    for _ in 0..3 {
        let pid = backend_pid(&client).await;
        assert!(!old.contains(&pid), "{pid} is one of the old {old:?}");
    }
    wait_gone(node, &old, "the old backends closed").await;
    let log = node.log_tail(200);
    assert!(
        !log.contains("unexpected EOF"),
        "closed politely (Terminate), not dropped:\n{log}"
    );
    // The pool is back to `min_size` at least (the first checkout after the recycle may have
    // opened one of its own while the maintenance task refilled), every connection new.
    let refilled = wait_idle(&proxy, 3).await;
    let new = proxy_backends(node).await.unwrap();
    assert_eq!(new.len(), refilled, "{new:?}");
    assert!(new.is_disjoint(&old), "old {old:?}, new {new:?}");
    assert!(
        proxy.pool_stats().connects >= connects + 3,
        "{:?}",
        proxy.pool_stats()
    );
    // A second recycle finds the new ones, all idle.
    assert_eq!(proxy.proxy.recycle(None).idle, refilled);
}

#[tokio::test]
async fn a_transaction_open_during_recycle_commits_then_its_backend_is_closed() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let node = cluster.primary();
    node.execute("CREATE TABLE t (id int PRIMARY KEY)")
        .await
        .unwrap();
    let proxy = ProxyUnderTest::start(&cluster, "[pool]\nmin_size = 0\nmax_size = 2\n").await;
    let client = proxy.connect().await;
    client
        .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let pid = backend_pid(&client).await;
    let stats = proxy.pool_stats();

    let report = proxy.proxy.recycle(None);
    assert_eq!(
        report,
        RecycleReport {
            pools: 1,
            idle: stats.idle,
            in_use: stats.in_use(),
        }
    );
    assert_eq!(report.in_use, 1, "{stats:?}");

    client
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    assert_eq!(
        backend_pid(&client).await,
        pid,
        "the transaction stays on its backend"
    );
    client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        node.query_one("SELECT count(*) FROM t").await.unwrap(),
        Some("2".into()),
        "both rows committed"
    );
    wait_gone(
        node,
        &BTreeSet::from([pid]),
        "the transaction's backend closed",
    )
    .await;
    assert_ne!(
        backend_pid(&client).await,
        pid,
        "the next transaction runs on a new backend"
    );
}

#[tokio::test]
async fn a_pinned_session_keeps_its_backend_until_it_ends() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let node = cluster.primary();
    let proxy = ProxyUnderTest::start(&cluster, "[pool]\nmin_size = 0\nmax_size = 2\n").await;
    let pinned = proxy.connect().await;
    // A temporary table pins the session to its server connection.
    pinned
        .batch_execute("CREATE TEMP TABLE scratch (id int)")
        .await
        .unwrap();
    let pid = backend_pid(&pinned).await;

    let report = proxy.proxy.recycle(None);
    assert_eq!(report.in_use, 1, "{report:?}");

    // Transactions after the recycle still see the session's table: same backend.
    for id in 0..3 {
        pinned
            .batch_execute(&format!("INSERT INTO scratch VALUES ({id})"))
            .await
            .unwrap();
    }
    assert_eq!(
        pinned
            .query_one("SELECT count(*) FROM scratch", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        3
    );
    assert_eq!(backend_pid(&pinned).await, pid);
    // Another client meanwhile gets a new backend.
    let other = proxy.connect().await;
    assert_ne!(backend_pid(&other).await, pid);

    drop(pinned);
    wait_gone(
        node,
        &BTreeSet::from([pid]),
        "the pinned session's backend closed",
    )
    .await;
}

#[tokio::test]
async fn recycling_one_node_leaves_the_other_nodes_pools_alone() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let primary = cluster.primary();
    let replica = &cluster.replicas()[0];
    let proxy = ProxyUnderTest::start(&cluster, "[pool]\nmin_size = 0\nmax_size = 2\n").await;
    let client = proxy.connect().await;
    const ON_PRIMARY: &str = "/* meridian:primary */ SELECT pg_backend_pid()";
    const ON_REPLICA: &str = "/* meridian:replica */ SELECT pg_backend_pid()";
    let primary_pid = backend_pid_of(&client, ON_PRIMARY).await;
    let replica_pid = backend_pid_of(&client, ON_REPLICA).await;
    assert!(
        proxy_backends(primary)
            .await
            .unwrap()
            .contains(&primary_pid)
    );
    assert!(
        proxy_backends(replica)
            .await
            .unwrap()
            .contains(&replica_pid)
    );
    let primary_connects = |proxy: &ProxyUnderTest| {
        proxy
            .proxy
            .pool_reports()
            .into_iter()
            .find(|r| r.node == primary.name())
            .map(|r| r.stats.connects)
    };
    let connects = primary_connects(&proxy);

    // The replica is node 1 of the view (see `support::view_of`).
    let report = proxy.proxy.recycle(Some(&[NodeId(1)]));
    assert_eq!(report.pools, 1, "{report:?}");
    assert_eq!(report.idle + report.in_use, 1, "{report:?}");

    wait_gone(
        replica,
        &BTreeSet::from([replica_pid]),
        "the replica's old backend closed",
    )
    .await;
    assert_ne!(backend_pid_of(&client, ON_REPLICA).await, replica_pid);
    assert!(
        proxy_backends(primary)
            .await
            .unwrap()
            .contains(&primary_pid),
        "the primary's backend is still there"
    );
    assert_eq!(backend_pid_of(&client, ON_PRIMARY).await, primary_pid);
    assert_eq!(
        primary_connects(&proxy),
        connects,
        "no new primary connection"
    );
    // Recycling nodes that have no pool touches nothing.
    assert_eq!(
        proxy.proxy.recycle(Some(&[NodeId(9)])),
        RecycleReport::default()
    );
}
