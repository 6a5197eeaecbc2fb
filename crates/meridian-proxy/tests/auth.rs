//! Client authentication at the proxy: SCRAM-SHA-256, md5 and trust users, wrong passwords and
//! unknown users (both 28P01, indistinguishable), and the startup packets the proxy refuses
//! before authenticating: replication connections, no user, too many clients.

mod support;

use meridian_testkit::{Check, TestCluster, wait_until};
use support::raw::{self, RawClient};
use support::{PASSWORD, ProxyUnderTest, STEP, sqlstate, trust_user};
use tokio_postgres::error::DbError;

const MD5_USER: &str = "[[users]]\nname = \"legacy\"\nauth = \"md5\"\npassword = \"md5-secret\"\nserver_user = \"postgres\"\n";

fn db_error(error: &tokio_postgres::Error) -> &DbError {
    error
        .as_db_error()
        .unwrap_or_else(|| panic!("expected an error from the proxy, got {error}"))
}

/// The first authentication request the proxy sends `user`: the `R` message's code and the
/// rest of its body.
async fn authentication_request(proxy: &ProxyUnderTest, user: &str) -> (i32, Vec<u8>) {
    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(&raw::startup(&[("user", user), ("database", "postgres")]))
        .await;
    let request = client.read().await.expect("closed before authentication");
    assert_eq!(request.tag, b'R', "{request:?}");
    let code = i32::from_be_bytes(request.body[..4].try_into().unwrap());
    (code, request.body[4..].to_vec())
}

#[tokio::test]
async fn a_scram_user_logs_in_with_its_password_and_fails_with_28p01_without_it() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(&cluster, "").await;

    // AuthenticationSASL (10) offering SCRAM-SHA-256.
    assert_eq!(
        authentication_request(&proxy, "app").await,
        (10, b"SCRAM-SHA-256\0\0".to_vec())
    );
    let client = proxy.connect_as("app", PASSWORD).await.unwrap();
    let row = client.query_one("SELECT current_user", &[]).await.unwrap();
    assert_eq!(
        row.get::<_, &str>(0),
        "postgres",
        "runs as the configured server_user"
    );

    let error = proxy
        .connect_as("app", "not-the-password")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&error), "28P01");
    assert_eq!(db_error(&error).severity(), "FATAL");
}

#[tokio::test]
async fn an_md5_user_logs_in_with_its_password_and_fails_with_28p01_without_it() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(&cluster, MD5_USER).await;

    // AuthenticationMD5Password (5) with a 4-byte salt.
    let (code, salt) = authentication_request(&proxy, "legacy").await;
    assert_eq!((code, salt.len()), (5, 4));
    let client = proxy.connect_as("legacy", "md5-secret").await.unwrap();
    let row = client.query_one("SELECT 1::int", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);

    let error = proxy.connect_as("legacy", "md5-wrong").await.unwrap_err();
    assert_eq!(sqlstate(&error), "28P01");
    assert_eq!(db_error(&error).severity(), "FATAL");
}

#[tokio::test]
async fn a_trust_user_logs_in_without_a_password() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(&cluster, &trust_user("local")).await;

    // AuthenticationOk straight away (RawClient::login_trust checks it).
    let mut raw_client = RawClient::login_trust(proxy.addr, "local").await;
    raw_client.send(&raw::query("SELECT 1")).await;
    assert_eq!(raw::tags(&raw_client.until_ready().await), "TDCZ");

    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(proxy.addr.port())
        .user("local")
        .dbname("postgres")
        .connect_timeout(STEP);
    let (client, _) = proxy.connect_watched(&config).await.unwrap();
    let row = client.query_one("SELECT 1::int", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
}

#[tokio::test]
async fn an_unknown_user_fails_exactly_as_a_wrong_password_does() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(&cluster, "").await;

    // The same SCRAM exchange is offered whether or not the user exists.
    assert_eq!(
        authentication_request(&proxy, "nobody").await,
        authentication_request(&proxy, "app").await
    );
    let unknown = proxy.connect_as("nobody", PASSWORD).await.unwrap_err();
    let wrong = proxy
        .connect_as("app", "not-the-password")
        .await
        .unwrap_err();

    assert_eq!(sqlstate(&unknown), "28P01");
    assert_eq!(sqlstate(&wrong), "28P01");
    let (unknown, wrong) = (db_error(&unknown), db_error(&wrong));
    assert_eq!(unknown.severity(), wrong.severity());
    // Here the text is the behaviour: apart from the name the client gave, nothing in the
    // error may tell an unknown user from a known one with a wrong password.
    assert_eq!(
        unknown.message().replace("\"nobody\"", "\"app\""),
        wrong.message()
    );
    assert_eq!(unknown.detail(), wrong.detail());
    assert_eq!(unknown.hint(), wrong.hint());
}

#[tokio::test]
async fn a_replication_connection_is_refused_with_0a000() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(&cluster, "").await;

    for replication in ["database", "true"] {
        let mut client = RawClient::connect(proxy.addr).await;
        client
            .send(&raw::startup(&[
                ("user", "app"),
                ("database", "postgres"),
                ("replication", replication),
            ]))
            .await;
        let error = client.expect_error_then_close().await;
        assert_eq!(error.sqlstate(), "0A000", "replication={replication}");
        assert_eq!(error.severity(), "FATAL");
    }
    // Explicitly not a replication connection: an ordinary login.
    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(&raw::startup(&[
            ("user", "app"),
            ("database", "postgres"),
            ("replication", "false"),
        ]))
        .await;
    let request = client.read().await.expect("closed");
    assert_eq!(request.tag, b'R', "replication=false logs in: {request:?}");
}

#[tokio::test]
async fn a_startup_packet_without_a_user_is_refused_with_28000() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(&cluster, "").await;

    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(&raw::startup(&[("database", "postgres")]))
        .await;

    let error = client.expect_error_then_close().await;
    assert_eq!(error.sqlstate(), "28000");
    assert_eq!(error.severity(), "FATAL");
}

#[tokio::test]
async fn clients_over_max_client_connections_get_53300_until_one_leaves() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(&cluster, "[proxy]\nmax_client_connections = 2\n").await;
    let first = proxy.connect().await;
    let second = proxy.connect().await;

    let error = proxy.connect_as("app", PASSWORD).await.unwrap_err();
    assert_eq!(sqlstate(&error), "53300");
    assert_eq!(db_error(&error).severity(), "FATAL");

    drop(first);
    let third = wait_until(STEP, "a connection after one client left", || async {
        Check::from(proxy.connect_as("app", PASSWORD).await)
    })
    .await
    .unwrap();
    for client in [&second, &third] {
        let row = client.query_one("SELECT 1::int", &[]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 1);
    }
}
