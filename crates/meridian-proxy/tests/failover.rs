//! The proxy during a failover, against a real primary and replica: transactions that need the
//! primary wait for the next view instead of failing (bounded in time and in number), nothing
//! opened under an older view generation carries a transaction, a transaction left on a
//! replaced primary ends promptly with an error even when that server hangs, and a server that
//! says it is a hot standby is reported and not reused.
//!
//! There is no monitor here: each test publishes the views a control plane would, on the
//! proxy's view channel, and reads the proxy's fast signal itself.

mod support;

use std::time::{Duration, Instant};

use meridian_core::topology::{ClusterView, NodeId, ProxySignal};
use meridian_testkit::{Check, Node, TestCluster, wait_until};
use support::{PASSWORD, ProxyUnderTest, STEP, active_backend, backend_pid_of, sqlstate, view_of};
use tokio_postgres::Client;

/// How quickly a client must hear the outcome once its cause has happened.
const PROMPTLY: Duration = Duration::from_secs(5);

/// The view naming node `primary` (index) as the primary, at `generation`.
fn view(cluster: &TestCluster, primary: usize, generation: u64) -> ClusterView {
    ClusterView {
        generation,
        ..view_of(cluster, primary)
    }
}

/// The same view, paused: a failover is under way.
fn paused(cluster: &TestCluster, primary: usize, generation: u64) -> ClusterView {
    ClusterView {
        paused: true,
        ..view(cluster, primary, generation)
    }
}

/// A primary and one replica, with table `t` replicated to both.
async fn cluster_with_table() -> TestCluster {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    cluster
        .primary()
        .execute("CREATE TABLE t (id int)")
        .await
        .unwrap();
    cluster.wait_replicated(STEP).await.unwrap();
    cluster
}

/// The port of the server a client's next transaction runs on.
async fn server_port(client: &Client) -> i32 {
    client
        .query_one("/* meridian:primary */ SELECT inet_server_port()", &[])
        .await
        .unwrap()
        .get(0)
}

async fn backend_pid(client: &Client) -> i32 {
    backend_pid_of(client, "/* meridian:primary */ SELECT pg_backend_pid()").await
}

/// Waits until `node` has no backend with process id `pid` any more.
async fn wait_backend_gone(node: &Node, pid: i32) {
    let sql = format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {pid}");
    wait_until(STEP, &format!("backend {pid} to exit"), || async {
        match node.query_one(&sql).await {
            Ok(count) => Check::when(count.as_deref() == Some("0"), (), count),
            Err(e) => Check::NotYet(format!("{e:#}")),
        }
    })
    .await
    .unwrap();
}

/// Inserts into `t` and returns the port of the server that took the write.
async fn insert(client: &Client, id: i32) -> Result<i32, tokio_postgres::Error> {
    let row = client
        .query_one(
            &format!("INSERT INTO t VALUES ({id}) RETURNING inet_server_port()"),
            &[],
        )
        .await?;
    Ok(row.get(0))
}

#[tokio::test]
async fn a_transaction_started_while_paused_waits_and_runs_on_the_new_primary() {
    let cluster = cluster_with_table().await;
    let replica = &cluster.replicas()[0];
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let client = proxy.connect().await;
    assert_eq!(
        server_port(&client).await,
        i32::from(cluster.primary().port())
    );

    proxy.publish(paused(&cluster, 0, 1));
    let write = tokio::spawn(async move {
        let result = insert(&client, 1).await;
        (result, client)
    });
    proxy.wait_for_buffered(1).await;

    replica.promote().await.unwrap();
    proxy.publish(view(&cluster, 1, 2));
    let (result, client) = tokio::time::timeout(PROMPTLY, write)
        .await
        .expect("the waiting transaction did not run once the new view was published")
        .unwrap();
    let port = result.expect("the client saw an error for a transaction that only had to wait");
    assert_eq!(port, i32::from(replica.port()), "it ran on the new primary");
    assert_eq!(
        replica
            .query_one("SELECT count(*) FROM t WHERE id = 1")
            .await
            .unwrap()
            .as_deref(),
        Some("1"),
        "the write is on the new primary"
    );
    assert_eq!(proxy.proxy.waiting_for_primary(), 0);
    assert_eq!(server_port(&client).await, i32::from(replica.port()));
}

#[tokio::test]
async fn a_pause_that_never_ends_fails_the_waiting_transaction_after_the_buffer_timeout() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let timeout = Duration::from_millis(500);
    let proxy =
        ProxyUnderTest::start(&cluster, "[proxy]\nfailover_buffer_timeout = \"500ms\"\n").await;
    let client = proxy.connect().await;

    proxy.publish(paused(&cluster, 0, 1));
    let started = Instant::now();
    let error = tokio::time::timeout(PROMPTLY, client.simple_query("SELECT 1"))
        .await
        .expect("the waiting transaction was not failed after the buffer timeout")
        .unwrap_err();
    let waited = started.elapsed();
    assert_eq!(sqlstate(&error), "08006");
    assert_eq!(error.as_db_error().unwrap().severity(), "ERROR");
    assert!(
        waited >= timeout,
        "failed after {waited:?}, before the timeout"
    );
    assert_eq!(proxy.proxy.waiting_for_primary(), 0);

    // The client keeps its connection: once the pause ends, it is served again.
    proxy.publish(view(&cluster, 0, 1));
    assert_eq!(
        server_port(&client).await,
        i32::from(cluster.primary().port())
    );
}

#[tokio::test]
async fn a_full_failover_buffer_refuses_one_more_waiting_transaction_with_53300() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(
        &cluster,
        "[proxy]\nfailover_buffer_size = 1\nfailover_buffer_timeout = \"60s\"\n",
    )
    .await;
    let first = proxy.connect().await;
    let second = proxy.connect().await;

    proxy.publish(paused(&cluster, 0, 1));
    let waiting = tokio::spawn(async move {
        let result = first.simple_query("SELECT 1").await;
        (result, first)
    });
    proxy.wait_for_buffered(1).await;

    // Answered at once, while the first client still waits.
    let error = tokio::time::timeout(PROMPTLY, second.simple_query("SELECT 1"))
        .await
        .expect("the client over the buffer size was not refused promptly")
        .unwrap_err();
    assert_eq!(sqlstate(&error), "53300");
    assert_eq!(error.as_db_error().unwrap().severity(), "ERROR");
    assert_eq!(proxy.proxy.waiting_for_primary(), 1);

    proxy.publish(view(&cluster, 0, 1));
    let (result, _first) = tokio::time::timeout(PROMPTLY, waiting)
        .await
        .expect("the buffered transaction did not run once the pause ended")
        .unwrap();
    result.expect("the buffered transaction failed");
    assert_eq!(
        server_port(&second).await,
        i32::from(cluster.primary().port())
    );
}

#[tokio::test]
async fn after_the_primary_is_killed_a_new_transaction_waits_for_the_promoted_replica() {
    let cluster = cluster_with_table().await;
    let replica = &cluster.replicas()[0];
    let mut proxy = ProxyUnderTest::start(&cluster, "").await;
    let client = proxy.connect().await;
    // A server connection to the primary sits idle in the pool.
    assert_eq!(
        server_port(&client).await,
        i32::from(cluster.primary().port())
    );

    cluster.primary().kill();
    let write = tokio::spawn(async move {
        let result = insert(&client, 2).await;
        (result, client)
    });
    // The proxy could not connect, told the monitor, and waits for a view.
    proxy.wait_for_report(NodeId(0)).await;
    proxy.wait_for_buffered(1).await;

    replica.promote().await.unwrap();
    proxy.publish(view(&cluster, 1, 2));
    let (result, _client) = tokio::time::timeout(PROMPTLY, write)
        .await
        .expect("the waiting transaction did not run once the new view was published")
        .unwrap();
    let port = result.expect("a transaction started after the kill saw an error");
    assert_eq!(port, i32::from(replica.port()));
}

#[tokio::test]
async fn the_first_committed_write_of_each_generation_is_reported_once() {
    let cluster = cluster_with_table().await;
    let mut proxy = ProxyUnderTest::start(&cluster, "").await;
    let client = proxy.connect().await;
    let first = ProxySignal::WriteAccepted {
        node: NodeId(0),
        generation: 1,
    };
    proxy.publish(view(&cluster, 0, 1));
    // Reads, a write rolled back and a write whose implicit transaction failed are not
    // writes accepted.
    client.simple_query("SELECT count(*) FROM t").await.unwrap();
    client
        .batch_execute("BEGIN; INSERT INTO t VALUES (1); ROLLBACK")
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO t VALUES (1); SELECT 1 / 0")
        .await
        .unwrap_err();
    // A write in an explicit transaction counts once it commits.
    client
        .batch_execute("BEGIN; INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    assert_eq!(proxy.signals(), [], "nothing committed yet");
    client.batch_execute("COMMIT").await.unwrap();
    proxy.wait_for_signal(first).await;
    client
        .execute("INSERT INTO t VALUES (3)", &[])
        .await
        .unwrap();
    client
        .execute("UPDATE t SET id = 4 WHERE id = 3", &[])
        .await
        .unwrap();
    assert_eq!(proxy.signals(), [], "one report per generation");

    proxy.publish(view(&cluster, 0, 2));
    client
        .execute("DELETE FROM t WHERE id = 4", &[])
        .await
        .unwrap();
    proxy
        .wait_for_signal(ProxySignal::WriteAccepted {
            node: NodeId(0),
            generation: 2,
        })
        .await;
}

#[tokio::test]
async fn connections_opened_under_an_older_generation_are_closed_not_reused() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let primary = cluster.primary();
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let client = proxy.connect().await;
    let before = backend_pid(&client).await;
    // Transaction pooling with one client: the same idle connection serves it again.
    assert_eq!(backend_pid(&client).await, before);

    // A new generation that still names the same node (it failed over and back).
    proxy.publish(view(&cluster, 0, 2));
    let after = backend_pid(&client).await;
    assert_ne!(
        after, before,
        "a generation-1 connection ran a generation-2 transaction"
    );
    wait_backend_gone(primary, before).await;
    assert_eq!(
        backend_pid(&client).await,
        after,
        "the new connection is pooled"
    );
}

#[tokio::test]
async fn an_open_transaction_on_a_hung_primary_fails_promptly_when_the_primary_is_replaced() {
    let cluster = cluster_with_table().await;
    let primary = cluster.primary();
    let replica = &cluster.replicas()[0];
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    // One client waits on a query, another is idle inside its transaction.
    let busy = proxy.connect().await;
    let idle = proxy.connect().await;
    busy.batch_execute("BEGIN; INSERT INTO t VALUES (3)")
        .await
        .unwrap();
    idle.batch_execute("BEGIN; INSERT INTO t VALUES (4)")
        .await
        .unwrap();
    let query = tokio::spawn(async move {
        let result = busy.simple_query("SELECT pg_sleep(60)").await;
        (result, busy)
    });
    active_backend(primary, "pg_sleep(60)").await;

    primary.pause();
    replica.promote().await.unwrap();
    let published = Instant::now();
    proxy.publish(view(&cluster, 1, 2));
    let (result, busy) = tokio::time::timeout(PROMPTLY, query)
        .await
        .expect("the query on the hung primary still waited 5 s after the new view")
        .unwrap();
    let error = result.unwrap_err();
    assert_eq!(sqlstate(&error), "08006");
    assert_eq!(error.as_db_error().unwrap().severity(), "ERROR");
    assert!(published.elapsed() < PROMPTLY);

    // The idle one hears it at its next statement.
    let error = tokio::time::timeout(PROMPTLY, idle.simple_query("INSERT INTO t VALUES (5)"))
        .await
        .expect("the idle transaction's next statement hung")
        .unwrap_err();
    assert_eq!(sqlstate(&error), "08006");

    // Both connections go on, on the new primary; the rolled-back writes are nowhere there.
    for client in [&busy, &idle] {
        assert_eq!(server_port(client).await, i32::from(replica.port()));
    }
    assert_eq!(
        replica
            .query_one("SELECT count(*) FROM t WHERE id IN (3, 4, 5)")
            .await
            .unwrap()
            .as_deref(),
        Some("0")
    );
}

#[tokio::test]
async fn a_hot_standby_named_primary_is_reported_and_its_connections_are_not_reused() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let replica = &cluster.replicas()[0];
    let mut proxy = ProxyUnderTest::start(&cluster, "").await;
    // A mistaken view: the replica (which reports in_hot_standby = on) as the primary.
    proxy.publish(view_of(&cluster, 1));
    let client = proxy.connect().await;

    // Reading works there...
    let row = client
        .query_one(
            "/* meridian:primary */ SELECT pg_backend_pid(), pg_is_in_recovery()",
            &[],
        )
        .await
        .unwrap();
    let (first, in_recovery): (i32, bool) = (row.get(0), row.get(1));
    assert!(in_recovery);
    proxy.wait_for_report(NodeId(1)).await;
    // ...but the connection is closed after its transaction, and the next one gets another.
    let second = backend_pid(&client).await;
    assert_ne!(second, first, "a connection to a hot standby was reused");
    wait_backend_gone(replica, first).await;
    // A write is refused by the server itself (read-only transaction).
    let error = client
        .simple_query("CREATE TABLE t (id int)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&error), "25006");
}

#[tokio::test]
async fn a_promotion_announced_by_in_hot_standby_is_reported_at_once() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let replica = &cluster.replicas()[0];
    let mut proxy = ProxyUnderTest::start(&cluster, "").await;
    proxy.publish(view_of(&cluster, 1));
    let client = proxy.connect().await;
    client.batch_execute("BEGIN; SELECT 1").await.unwrap();
    proxy.wait_for_report(NodeId(1)).await;
    proxy.signals();

    // PostgreSQL 14+ tells every open session of a promoted server, with the reply to its
    // next statement (ParameterStatus in_hot_standby = off).
    replica.promote().await.unwrap();
    let row = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0), "the replica was promoted");
    proxy.wait_for_report(NodeId(1)).await;
    client.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test]
async fn in_session_pooling_a_replaced_primary_closes_the_client_with_fatal() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let replica = &cluster.replicas()[0];
    let proxy = ProxyUnderTest::start(&cluster, "[proxy]\npool_mode = \"session\"\n").await;
    let config = proxy.config("app", PASSWORD);
    let (client, end) = proxy.connect_watched(&config).await.unwrap();
    assert_eq!(
        server_port(&client).await,
        i32::from(cluster.primary().port())
    );

    replica.promote().await.unwrap();
    proxy.publish(view(&cluster, 1, 2));
    // Its session state lived on the old primary: the client is told, unprompted, and closed.
    let end = tokio::time::timeout(PROMPTLY, end)
        .await
        .expect("the session-pooled client was not closed after the failover")
        .unwrap();
    let error = end.expect_err("the connection ended without an error");
    assert_eq!(sqlstate(&error), "08006");
    assert_eq!(error.as_db_error().unwrap().severity(), "FATAL");

    // A new client gets the new primary.
    let client = proxy.connect().await;
    assert_eq!(server_port(&client).await, i32::from(replica.port()));
}

#[tokio::test]
async fn a_transaction_waiting_for_a_primary_ends_promptly_at_shutdown() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let mut proxy =
        ProxyUnderTest::start(&cluster, "[proxy]\nfailover_buffer_timeout = \"60s\"\n").await;
    let config = proxy.config("app", PASSWORD);
    let (client, end) = proxy.connect_watched(&config).await.unwrap();
    proxy.publish(paused(&cluster, 0, 1));
    let query = tokio::spawn(async move { client.simple_query("SELECT 1").await.map(|_| ()) });
    proxy.wait_for_buffered(1).await;

    let started = Instant::now();
    proxy.shut_down(PROMPTLY).await;
    assert!(started.elapsed() < PROMPTLY);
    // The waiting query is answered with the shutdown's FATAL, and the connection closed.
    let error = tokio::time::timeout(PROMPTLY, query)
        .await
        .expect("the waiting query was not answered")
        .unwrap()
        .unwrap_err();
    assert_eq!(sqlstate(&error), "57P01");
    assert_eq!(error.as_db_error().unwrap().severity(), "FATAL");
    tokio::time::timeout(PROMPTLY, end)
        .await
        .expect("the waiting client was not disconnected")
        .unwrap()
        .ok();
}

#[tokio::test]
async fn no_primary_without_a_pause_fails_at_once() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy =
        ProxyUnderTest::start(&cluster, "[proxy]\nfailover_buffer_timeout = \"60s\"\n").await;
    let client = proxy.connect().await;
    proxy.publish(ClusterView {
        primary: None,
        ..view_of(&cluster, 0)
    });
    let error = tokio::time::timeout(PROMPTLY, client.simple_query("SELECT 1"))
        .await
        .expect("a transaction waited although no failover was under way")
        .unwrap_err();
    assert_eq!(sqlstate(&error), "08006");
    assert_eq!(proxy.proxy.waiting_for_primary(), 0);
}
