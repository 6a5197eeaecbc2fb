//! When things go wrong: a cancelled query, a server connection or a whole server dying under
//! a query, malformed and oversized packets from a raw socket, and a graceful shutdown. In
//! each case the client concerned gets the SQLSTATE PostgreSQL itself would send, and every
//! other client goes on as if nothing happened.

mod support;

use std::time::{Duration, Instant};

use meridian_core::topology::NodeId;
use meridian_testkit::{Check, TestCluster, wait_until};
use support::raw::{self, RawClient};
use support::{PASSWORD, ProxyUnderTest, STEP, active_backend, backend_pid, sqlstate, trust_user};
use tokio_postgres::{Client, NoTls};

/// How quickly a client must hear that its query is over, once the cause has happened.
const PROMPTLY: Duration = Duration::from_secs(5);

async fn assert_serves(client: &Client, what: &str) {
    let row = client
        .query_one("SELECT 1::int", &[])
        .await
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(row.get::<_, i32>(0), 1, "{what}");
}

#[tokio::test]
async fn cancel_stops_a_long_query_promptly_with_57014() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let client = proxy.connect().await;
    let token = client.cancel_token();
    let query = tokio::spawn(async move {
        let result = client.simple_query("SELECT pg_sleep(30)").await;
        (result, client)
    });
    active_backend(cluster.primary(), "pg_sleep(30)").await;

    let cancelled = Instant::now();
    token.cancel_query(NoTls).await.unwrap();
    let (result, client) = tokio::time::timeout(PROMPTLY, query)
        .await
        .expect("the query was still running 5 s after the cancel")
        .unwrap();

    assert_eq!(sqlstate(&result.unwrap_err()), "57014");
    assert!(cancelled.elapsed() < PROMPTLY);
    assert_serves(&client, "the cancelled client").await;
}

#[tokio::test]
async fn a_server_connection_terminated_mid_query_fails_only_that_query() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let primary = cluster.primary();
    let proxy = ProxyUnderTest::start(&cluster, &trust_user("raw")).await;
    let bystander = proxy.connect().await;
    let mut victim = RawClient::login_trust(proxy.addr, "raw").await;
    victim.send(&raw::query("SELECT pg_sleep(10)")).await;
    let pid = active_backend(primary, "pg_sleep(10)").await;

    let terminated = primary
        .query_one(&format!("SELECT pg_terminate_backend({pid})"))
        .await
        .unwrap();
    assert_eq!(terminated.as_deref(), Some("t"));

    // After the query's RowDescription, the server's own goodbye (57P01, admin_shutdown) is
    // relayed as an ERROR, not FATAL: the client keeps its connection to the proxy. The
    // query then ends with ReadyForQuery, outside any transaction.
    let replies = tokio::time::timeout(PROMPTLY, victim.until_ready())
        .await
        .expect("the client did not hear of the lost query promptly");
    assert_eq!(raw::tags(&replies), "TEZ", "{replies:?}");
    assert_eq!(replies[1].sqlstate(), "57P01");
    assert_eq!(replies[1].severity(), "ERROR");
    assert_eq!(replies[2].body, b"I");

    victim.send(&raw::query("SELECT 'again'")).await;
    let replies = victim.until_ready().await;
    assert_eq!(raw::tags(&replies), "TDCZ", "{replies:?}");
    assert_eq!(replies[1].data_row(), vec![Some("again".to_owned())]);
    assert_serves(&bystander, "another client").await;
}

#[tokio::test]
async fn an_idle_pooled_connection_whose_backend_was_terminated_is_not_handed_out() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let primary = cluster.primary();
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let client = proxy.connect().await;
    // Transaction pooling: the connection that ran this is idle in the pool, the next to go.
    let pid = backend_pid(&client).await;
    let terminated = primary
        .query_one(&format!("SELECT pg_terminate_backend({pid})"))
        .await
        .unwrap();
    assert_eq!(terminated.as_deref(), Some("t"));
    wait_until(STEP, "the terminated backend to exit", || async {
        let gone = primary
            .query(&format!("SELECT 1 FROM pg_stat_activity WHERE pid = {pid}"))
            .await;
        Check::when(gone.as_ref().is_ok_and(Vec::is_empty), (), gone)
    })
    .await
    .unwrap();

    // At once: the proxy's reactor has seen the closed socket, and the checkout skips the
    // connection instead of failing the client's query with 57P01.
    let next = backend_pid(&client).await;
    assert_ne!(next, pid, "a new server connection serves the next query");
}

#[tokio::test]
async fn a_transaction_whose_server_dies_while_it_is_idle_is_told_it_was_rolled_back() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let mut proxy =
        ProxyUnderTest::start(&cluster, "[proxy]\nfailover_buffer_timeout = \"1s\"\n").await;
    let client = proxy.connect().await;
    client
        .batch_execute("CREATE TABLE t (id int); BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    cluster.primary().kill();
    // The proxy saw its server connection close (it reports the node) before COMMIT is sent.
    proxy.wait_for_report(NodeId(0)).await;
    // Nothing was in flight and nothing committed: the outcome is known.
    let error = tokio::time::timeout(PROMPTLY, client.batch_execute("COMMIT"))
        .await
        .expect("COMMIT hung after the server died")
        .unwrap_err();
    assert_eq!(sqlstate(&error), "08006");
    let message = error.as_db_error().unwrap().message();
    assert!(
        message.ends_with("the transaction was rolled back"),
        "{message}"
    );
}

#[tokio::test]
async fn a_killed_server_fails_the_running_query_with_08007_and_service_resumes_after_restart() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let primary = cluster.primary();
    // No view follows the kill here (there is no monitor): a transaction waits this long for
    // one, then fails.
    let proxy =
        ProxyUnderTest::start(&cluster, "[proxy]\nfailover_buffer_timeout = \"1s\"\n").await;
    let other = proxy.connect().await;
    let busy = proxy.connect().await;
    let query = tokio::spawn(async move {
        let result = busy.simple_query("SELECT pg_sleep(10)").await;
        (result, busy)
    });
    active_backend(primary, "pg_sleep(10)").await;

    let killed = Instant::now();
    primary.kill();
    let (result, busy) = tokio::time::timeout(PROMPTLY, query)
        .await
        .expect("the query still waited 5 s after its server died")
        .unwrap();
    // An autocommit statement was running: whether it committed is unknown to the proxy.
    assert_eq!(sqlstate(&result.unwrap_err()), "08007");
    assert!(killed.elapsed() < PROMPTLY);

    // While the server is down, queries fail with a connection exception (class 08) once
    // failover_buffer_timeout has passed without a new view, instead of hanging.
    let error = tokio::time::timeout(PROMPTLY, other.simple_query("SELECT 1"))
        .await
        .expect("a query hung while the server was down")
        .unwrap_err();
    assert!(sqlstate(&error).starts_with("08"), "{}", sqlstate(&error));

    primary.start().await.unwrap();
    // The pool discards the dead connections and opens new ones.
    for (client, what) in [
        (&busy, "the client whose query died"),
        (&other, "another client"),
    ] {
        wait_until(STEP, &format!("{what} to be served again"), || async {
            Check::from(client.simple_query("SELECT 1").await)
        })
        .await
        .unwrap();
    }
    assert_serves(&proxy.connect().await, "a new client").await;
}

/// Startup packets no client may send, each refused with the SQLSTATE PostgreSQL uses.
fn malformed_startup_packets() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let protocol_3 = 196_608i32.to_be_bytes();
    let mut too_long = 20_000i32.to_be_bytes().to_vec();
    too_long.extend_from_slice(&protocol_3);
    too_long.extend_from_slice(b"user\0app\0");
    let mut cut_short = protocol_3.to_vec();
    cut_short.extend_from_slice(b"user\0app");
    let mut version_2 = 0x0002_0000i32.to_be_bytes().to_vec();
    version_2.extend_from_slice(b"user\0app\0\0");
    vec![
        (
            "a length of 0xFFFFFFFF",
            vec![0xFF, 0xFF, 0xFF, 0xFF, 0, 3, 0, 0],
            "08P01",
        ),
        ("a length of 3", vec![0, 0, 0, 3], "08P01"),
        // Refused on its announced length, before the rest is awaited or buffered.
        (
            "a length of 20 000 (PostgreSQL's limit is 10 000)",
            too_long,
            "08P01",
        ),
        (
            "an HTTP request",
            b"GET / HTTP/1.1\r\nHost: meridian\r\n\r\n".to_vec(),
            "08P01",
        ),
        (
            "a parameter value without its NUL",
            raw::untagged(&cut_short),
            "08P01",
        ),
        ("protocol version 2.0", raw::untagged(&version_2), "0A000"),
    ]
}

#[tokio::test]
async fn malformed_startup_packets_get_an_error_and_a_closed_connection() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(&cluster, "").await;
    let bystander = proxy.connect().await;

    for (what, bytes, expected) in malformed_startup_packets() {
        let mut client = RawClient::connect(proxy.addr).await;
        client.send(&bytes).await;
        let error = client.expect_error_then_close().await;
        assert_eq!(error.sqlstate(), expected, "{what}");
        assert_eq!(error.severity(), "FATAL", "{what}");
        assert_serves(&bystander, what).await;
    }

    // Garbage where the startup packet should follow a declined SSLRequest.
    let mut client = RawClient::connect(proxy.addr).await;
    client.send(&raw::ssl_request()).await;
    assert_eq!(client.read_byte().await, b'N', "no [tls]: TLS declined");
    client.send(&[0, 0, 0, 1]).await;
    let error = client.expect_error_then_close().await;
    assert_eq!(error.sqlstate(), "08P01");
    assert_serves(&bystander, "after garbage behind an SSLRequest").await;
}

#[tokio::test]
async fn malformed_and_oversized_messages_after_login_get_an_error_and_a_closed_connection() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(&cluster, &trust_user("raw")).await;
    let bystander = proxy.connect().await;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // Refused on the header alone: nothing near 2 GiB is sent, or buffered.
        (
            "a Query announcing 2 GiB",
            vec![b'Q', 0x7F, 0xFF, 0xFF, 0xFF],
        ),
        (
            "a length of 2^31, negative as a signed length",
            vec![b'Q', 0x80, 0, 0, 0],
        ),
        ("a length of 3", vec![b'Q', 0, 0, 0, 3]),
        ("an unknown message type", raw::message(b'!', b"?")),
        (
            "a Query without its terminating NUL",
            raw::message(b'Q', b"SELECT 1"),
        ),
        (
            "a password message outside authentication",
            raw::message(b'p', b"secret\0"),
        ),
    ];

    for (what, bytes) in cases {
        let mut client = RawClient::login_trust(proxy.addr, "raw").await;
        client.send(&bytes).await;
        let error = client.expect_error_then_close().await;
        assert_eq!(error.sqlstate(), "08P01", "{what}");
        assert_eq!(error.severity(), "FATAL", "{what}");
        assert_serves(&bystander, what).await;
    }
}

#[tokio::test]
async fn shutdown_lets_an_open_transaction_finish_and_disconnects_idle_clients_with_57p01() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let primary = cluster.primary();
    primary.execute("CREATE TABLE t (id int)").await.unwrap();
    let mut proxy = ProxyUnderTest::start(&cluster, "[proxy]\nshutdown_timeout = \"20s\"\n").await;
    let addr = proxy.addr;
    let config = proxy.config("app", PASSWORD);
    let (busy, busy_end) = proxy.connect_watched(&config).await.unwrap();
    let (_idle, idle_end) = proxy.connect_watched(&config).await.unwrap();
    busy.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();

    let shutdown = tokio::spawn(async move { proxy.shut_down(STEP).await });

    // The idle client is told why, unprompted, and disconnected.
    let idle_end = tokio::time::timeout(STEP, idle_end)
        .await
        .expect("the idle client was not disconnected")
        .unwrap();
    let error = idle_end.expect_err("the idle client's connection ended without an error");
    assert_eq!(sqlstate(&error), "57P01");
    assert_eq!(error.as_db_error().unwrap().severity(), "FATAL");
    // Meanwhile the transaction goes on to its end; then that client is disconnected too.
    busy.batch_execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    busy.batch_execute("COMMIT").await.unwrap();
    let busy_end = tokio::time::timeout(STEP, busy_end)
        .await
        .expect("the client was not disconnected after its transaction")
        .unwrap();
    assert_eq!(sqlstate(&busy_end.unwrap_err()), "57P01");
    tokio::time::timeout(STEP, shutdown)
        .await
        .expect("the shutdown did not complete")
        .unwrap();

    assert_eq!(
        primary
            .query_one("SELECT count(*) FROM t")
            .await
            .unwrap()
            .as_deref(),
        Some("2"),
        "the transaction committed during the shutdown"
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the proxy still accepts connections after shutting down"
    );
}
