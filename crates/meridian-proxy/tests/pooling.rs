//! Server connections shared between clients: what one client leaves on a connection must not
//! reach the next (transaction pooling), what a client owns must follow it from connection to
//! connection (reported parameters, `application_name`, prepared statements), and a full pool
//! makes clients wait, then fail with 53300. Also session pooling, where a client keeps its
//! connection until it leaves.
//!
//! Most tests use a pool of one server connection, so that two clients are known to share it
//! (each test also checks `pg_backend_pid()` to be sure).

mod support;

use std::time::{Duration, Instant};

use meridian_testkit::{Check, TestCluster, wait_until};
use support::{PASSWORD, ProxyUnderTest, STEP, backend_pid, sqlstate};
use tokio_postgres::Client;

const ONE_CONNECTION: &str = "[pool]\nmax_size = 1\n";

async fn text(client: &Client, sql: &str) -> String {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

#[tokio::test]
async fn set_by_one_client_does_not_leak_to_the_next_in_transaction_mode() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(&cluster, ONE_CONNECTION).await;
    let first = proxy.connect().await;
    let second = proxy.connect().await;
    assert_eq!(
        backend_pid(&first).await,
        backend_pid(&second).await,
        "both clients use the only server connection"
    );
    let default = text(&second, "SHOW work_mem").await;

    first.batch_execute("SET work_mem = '42MB'").await.unwrap();
    first
        .batch_execute("SET statement_timeout = '17s'")
        .await
        .unwrap();

    assert_eq!(text(&second, "SHOW work_mem").await, default);
    assert_eq!(text(&second, "SHOW statement_timeout").await, "0");
    assert_eq!(
        backend_pid(&first).await,
        backend_pid(&second).await,
        "still the same server connection"
    );
}

#[tokio::test]
async fn a_clients_time_zone_follows_it_across_transactions_and_not_to_others() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(&cluster, ONE_CONNECTION).await;
    let paris = proxy.connect().await;
    let other = proxy.connect().await;

    paris
        .batch_execute("SET TimeZone = 'Europe/Paris'")
        .await
        .unwrap();

    // Interleaved on the one server connection, each client sees its own setting.
    for _ in 0..3 {
        assert_eq!(text(&other, "SHOW TimeZone").await, "UTC");
        assert_eq!(text(&paris, "SHOW TimeZone").await, "Europe/Paris");
    }
    assert_eq!(
        text(
            &paris,
            "SELECT to_char(timestamptz '2026-07-01 12:00:00+00', 'HH24')"
        )
        .await,
        "14",
        "the setting is in effect for the client's queries, not only SHOW"
    );
    assert_eq!(backend_pid(&paris).await, backend_pid(&other).await);
}

#[tokio::test]
async fn the_startup_application_name_reaches_the_server_for_each_client() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(&cluster, ONE_CONNECTION).await;
    let mut config = proxy.config("app", PASSWORD);
    let (billing, _) = proxy
        .connect_watched(config.application_name("billing"))
        .await
        .unwrap();
    let (reports, _) = proxy
        .connect_watched(config.application_name("reports"))
        .await
        .unwrap();
    let sql = "SELECT application_name FROM pg_stat_activity WHERE pid = pg_backend_pid()";

    for _ in 0..2 {
        assert_eq!(text(&billing, sql).await, "billing");
        assert_eq!(text(&reports, sql).await, "reports");
    }
    assert_eq!(backend_pid(&billing).await, backend_pid(&reports).await);
}

#[tokio::test]
async fn prepared_statements_survive_a_move_to_another_server_connection() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(&cluster, "[pool]\nmax_size = 4\n").await;
    let client = proxy.connect().await;
    let statement = client
        .prepare("SELECT $1::int + 1, pg_backend_pid()")
        .await
        .unwrap();
    let row = client.query_one(&statement, &[&1i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
    let prepared_on: i32 = row.get(1);

    // Other clients take server connections inside open transactions until one of them
    // holds the connection the statement was prepared on.
    let mut holders = Vec::new();
    loop {
        assert!(
            holders.len() < 3,
            "the connection {prepared_on} was never handed out"
        );
        let holder = proxy.connect().await;
        holder.batch_execute("BEGIN").await.unwrap();
        let pid = backend_pid(&holder).await;
        holders.push(holder);
        if pid == prepared_on {
            break;
        }
    }

    let row = client.query_one(&statement, &[&41i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    assert_ne!(
        row.get::<_, i32>(1),
        prepared_on,
        "the statement ran on another connection"
    );
    for holder in &holders {
        holder.batch_execute("COMMIT").await.unwrap();
    }
    let row = client.query_one(&statement, &[&99i32]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 100);
}

/// A plain `BEGIN` is answered by the proxy and sent with the transaction's first statement:
/// until then the client holds no server connection (another client uses the only one), and
/// the transaction is still one transaction on the server, from its first statement to its
/// end (a rollback undoes its insert; after an error the server refuses the rest, 25P02).
#[tokio::test]
async fn a_plain_begin_holds_no_server_connection_until_its_first_statement() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(
        &cluster,
        "[pool]\nmax_size = 1\ncheckout_timeout = \"1s\"\n",
    )
    .await;
    let client = proxy.connect().await;
    let other = proxy.connect().await;
    client
        .batch_execute("CREATE TABLE t (id int)")
        .await
        .unwrap();

    client.batch_execute("BEGIN").await.unwrap();
    let stats = proxy.pool_stats();
    assert_eq!(stats.in_use(), 0, "no connection lent: {stats:?}");
    assert_eq!(text(&other, "SELECT 'not blocked'").await, "not blocked");

    client
        .batch_execute("INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    assert_eq!(text(&client, "SELECT count(*)::text FROM t").await, "1");
    let stats = proxy.pool_stats();
    assert_eq!(stats.in_use(), 1, "the transaction's connection: {stats:?}");
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(text(&other, "SELECT count(*)::text FROM t").await, "0");

    client.batch_execute("BEGIN").await.unwrap();
    let error = client.batch_execute("SELECT 1/0").await.unwrap_err();
    assert_eq!(sqlstate(&error), "22012");
    let error = client.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&error), "25P02", "{error}");
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(text(&client, "SELECT 'usable'").await, "usable");
}

#[tokio::test]
async fn an_exhausted_pool_fails_a_query_with_53300_after_the_checkout_timeout() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(
        &cluster,
        "[pool]\nmax_size = 1\ncheckout_timeout = \"1s\"\n",
    )
    .await;
    let holder = proxy.connect().await;
    let waiter = proxy.connect().await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();

    let started = Instant::now();
    let error = waiter.simple_query("SELECT 1").await.unwrap_err();
    let waited = started.elapsed();

    assert_eq!(sqlstate(&error), "53300");
    assert!(
        waited >= Duration::from_millis(950) && waited < Duration::from_secs(4),
        "failed after {waited:?}, expected about the 1 s checkout timeout"
    );
    // The error ended only that query: once the connection is free, the client goes on.
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(text(&waiter, "SELECT 'served'").await, "served");
}

#[tokio::test]
async fn a_waiting_query_gets_the_connection_when_it_is_given_back() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(
        &cluster,
        "[pool]\nmax_size = 1\ncheckout_timeout = \"30s\"\n",
    )
    .await;
    let holder = proxy.connect().await;
    let waiter = proxy.connect().await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap();

    let query = tokio::spawn(async move {
        let row = waiter.query_one("SELECT 'got it'", &[]).await;
        row.map(|r| r.get::<_, String>(0))
    });
    proxy.wait_for_waiters(1).await;
    holder.batch_execute("COMMIT").await.unwrap();

    let answer = tokio::time::timeout(STEP, query)
        .await
        .expect("the waiting query was not served")
        .unwrap()
        .unwrap();
    assert_eq!(answer, "got it");
}

#[tokio::test]
async fn terminate_mid_transaction_rolls_back_and_frees_the_only_connection() {
    let cluster = TestCluster::builder().start().await.unwrap();
    cluster
        .primary()
        .execute("CREATE TABLE t (id int)")
        .await
        .unwrap();
    let proxy = ProxyUnderTest::start(
        &cluster,
        "[pool]\nmax_size = 1\ncheckout_timeout = \"5s\"\n",
    )
    .await;
    let (leaver, connection) = proxy
        .connect_watched(&proxy.config("app", PASSWORD))
        .await
        .unwrap();
    leaver
        .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();

    // Dropping the client makes tokio-postgres send Terminate and close.
    drop(leaver);
    tokio::time::timeout(STEP, connection)
        .await
        .expect("the connection did not close")
        .unwrap()
        .unwrap();

    // The next client needs the only server connection for its login and its query: it gets
    // one well within the checkout timeout.
    let next = proxy.connect().await;
    assert_eq!(text(&next, "SELECT 'served'").await, "served");
    // The abandoned transaction is rolled back, not kept open on a server connection.
    let primary = cluster.primary();
    wait_until(STEP, "no backend idle in transaction", || async {
        primary
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'",
            )
            .await
            .map(|count| Check::when(count.as_deref() == Some("0"), (), count))
            .unwrap_or_else(|e| Check::NotYet(format!("{e:#}")))
    })
    .await
    .unwrap();
    assert_eq!(text(&next, "SELECT count(*)::text FROM t").await, "0");
}

#[tokio::test]
async fn session_mode_keeps_one_connection_per_client_and_resets_it_after() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(
        &cluster,
        "[proxy]\npool_mode = \"session\"\n[pool]\nmax_size = 1\ncheckout_timeout = \"30s\"\n",
    )
    .await;
    let (first, first_connection) = proxy
        .connect_watched(&proxy.config("app", PASSWORD))
        .await
        .unwrap();

    // Session state lasts across transactions: settings, temporary tables, the backend.
    let pid = backend_pid(&first).await;
    first
        .batch_execute("SET work_mem = '42MB'; CREATE TEMP TABLE scratch (x int)")
        .await
        .unwrap();
    first
        .batch_execute("BEGIN; INSERT INTO scratch VALUES (1); COMMIT")
        .await
        .unwrap();
    assert_eq!(text(&first, "SHOW work_mem").await, "42MB");
    assert_eq!(
        text(&first, "SELECT count(*)::text FROM scratch").await,
        "1"
    );
    assert_eq!(backend_pid(&first).await, pid);

    // A second client waits for the only connection while the first is connected, even idle.
    let second = tokio::spawn({
        let config = proxy.config("app", PASSWORD);
        async move { config.connect(tokio_postgres::NoTls).await }
    });
    proxy.wait_for_waiters(1).await;
    drop(first);
    tokio::time::timeout(STEP, first_connection)
        .await
        .expect("the first client's connection did not close")
        .unwrap()
        .unwrap();
    let (second, connection) = tokio::time::timeout(STEP, second)
        .await
        .expect("the second client never got the connection")
        .unwrap()
        .unwrap();
    tokio::spawn(connection);

    // Same server connection, reset (server_reset_query = DISCARD ALL) in between.
    assert_eq!(backend_pid(&second).await, pid);
    assert_ne!(text(&second, "SHOW work_mem").await, "42MB");
    let error = second
        .simple_query("SELECT count(*) FROM scratch")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&error), "42P01", "the temporary table is gone");
}
