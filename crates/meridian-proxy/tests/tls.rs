//! TLS on both legs: clients to the proxy (`[tls]`, checked with psql, whose `\conninfo`
//! reports the negotiated protocol), and the proxy to the servers (`[server_tls]`, checked on
//! the server in `pg_stat_ssl`, against test-kit servers started with `ssl = on`).

mod support;

use meridian_testkit::TestCluster;
use support::raw::{self, RawClient};
use support::{Certificate, PASSWORD, ProxyUnderTest, describe, run, sqlstate};

/// Whether the server connection serving `proxy`'s next query is encrypted, as the server sees
/// it.
async fn server_connection_uses_tls(proxy: &ProxyUnderTest) -> bool {
    proxy
        .connect()
        .await
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

/// The severity of an error the proxy answered a login with: `FATAL`, as from PostgreSQL, when
/// the login cannot complete.
fn login_severity(error: &tokio_postgres::Error) -> &str {
    error
        .as_db_error()
        .unwrap_or_else(|| panic!("expected an error from the proxy, got {error}"))
        .severity()
}

fn server_tls(mode: &str, root_cert: Option<&std::path::Path>) -> String {
    let mut section = format!("[server_tls]\nmode = \"{mode}\"\n");
    if let Some(root) = root_cert {
        section.push_str(&format!("root_cert = \"{}\"\n", root.display()));
    }
    section
}

#[tokio::test]
async fn psql_connects_to_the_proxy_over_tls() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let certificate = Certificate::generate();
    let proxy = ProxyUnderTest::start(&cluster, &certificate.tls_section()).await;

    // `require` encrypts without checking the certificate; `verify-full` checks it against
    // its own self-signed root and the host name (the certificate names 127.0.0.1).
    for (mode, root) in [("require", None), ("verify-full", Some(&certificate.cert))] {
        let mut command = proxy.libpq_command("psql", "app", PASSWORD);
        command.env("PGSSLMODE", mode);
        if let Some(root) = root {
            command.env("PGSSLROOTCERT", root);
        }
        let output =
            run(command.args(["-X", "-c", "\\conninfo", "-At", "-c", "SELECT 6 * 7"])).await;

        assert!(output.status.success(), "{mode}: {}", describe(&output));
        let stdout = String::from_utf8_lossy(&output.stdout);
        // The text is the behaviour here: psql's report of the negotiated protocol.
        assert!(
            stdout.contains("SSL connection (protocol: TLSv1.3"),
            "{mode}: {}",
            describe(&output)
        );
        assert!(stdout.ends_with("42\n"), "{mode}: {}", describe(&output));
    }
}

#[tokio::test]
async fn a_tls_proxy_still_accepts_plaintext_clients() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let certificate = Certificate::generate();
    let proxy = ProxyUnderTest::start(&cluster, &certificate.tls_section()).await;

    let client = proxy.connect().await;

    let row = client.query_one("SELECT 1::int", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1);
}

#[tokio::test]
async fn a_proxy_without_a_certificate_declines_tls() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let proxy = ProxyUnderTest::start(&cluster, "").await;

    let mut command = proxy.libpq_command("psql", "app", PASSWORD);
    command.env("PGSSLMODE", "require");
    let output = run(command.args(["-X", "-c", "SELECT 1"])).await;

    // psql exits 2 when it cannot connect; libpq words the proxy's `N` answer to the
    // SSLRequest as below (the text is libpq's, and it is the behaviour).
    assert_eq!(output.status.code(), Some(2), "{}", describe(&output));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("server does not support SSL"),
        "{}",
        describe(&output)
    );
    // Without the requirement, the same client gets in over plain TCP.
    let mut command = proxy.libpq_command("psql", "app", PASSWORD);
    command.env("PGSSLMODE", "prefer");
    let output = run(command.args(["-X", "-At", "-c", "SELECT 1"])).await;
    assert!(output.status.success(), "{}", describe(&output));
}

#[tokio::test]
async fn plaintext_sent_after_an_ssl_request_is_refused_with_08p01() {
    let cluster = TestCluster::builder().start().await.unwrap();
    let certificate = Certificate::generate();
    let proxy = ProxyUnderTest::start(&cluster, &certificate.tls_section()).await;
    let bystander = proxy.connect().await;

    // A startup packet right behind the SSLRequest, before any handshake: what a man in the
    // middle injecting plaintext would send (CVE-2021-23214). It must not be taken as the
    // client's.
    let mut client = RawClient::connect(proxy.addr).await;
    client
        .send(&raw::batch(&[
            raw::ssl_request(),
            raw::startup(&[("user", "app"), ("database", "postgres")]),
        ]))
        .await;

    let error = client.expect_error_then_close().await;
    assert_eq!(error.sqlstate(), "08P01");
    let row = bystander.query_one("SELECT 1::int", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 1, "other clients are unaffected");
}

#[tokio::test]
async fn server_tls_modes_decide_whether_server_connections_are_encrypted() {
    let cluster = TestCluster::builder().tls().start().await.unwrap();
    let root = cluster.tls_root_cert().expect("a TLS cluster has a root");

    for (mode, expected) in [
        ("disable", false),
        ("prefer", true),
        ("require", true),
        ("verify-full", true),
    ] {
        let proxy = ProxyUnderTest::start(&cluster, &server_tls(mode, Some(root))).await;
        assert_eq!(
            server_connection_uses_tls(&proxy).await,
            expected,
            "server_tls.mode = {mode}"
        );
    }
}

#[tokio::test]
async fn verify_full_refuses_a_server_whose_certificate_the_root_did_not_sign() {
    let cluster = TestCluster::builder().tls().start().await.unwrap();
    let stranger = Certificate::generate();
    let proxy =
        ProxyUnderTest::start(&cluster, &server_tls("verify-full", Some(&stranger.cert))).await;

    let error = proxy.connect_as("app", PASSWORD).await.unwrap_err();

    assert_eq!(sqlstate(&error), "08006");
    assert_eq!(login_severity(&error), "FATAL");
}

#[tokio::test]
async fn require_refuses_a_server_without_tls_and_prefer_falls_back_to_plaintext() {
    let cluster = TestCluster::builder().start().await.unwrap();

    let requiring = ProxyUnderTest::start(&cluster, &server_tls("require", None)).await;
    let error = requiring.connect_as("app", PASSWORD).await.unwrap_err();
    assert_eq!(sqlstate(&error), "08006");
    assert_eq!(login_severity(&error), "FATAL");

    let preferring = ProxyUnderTest::start(&cluster, &server_tls("prefer", None)).await;
    assert!(!server_connection_uses_tls(&preferring).await);
}
