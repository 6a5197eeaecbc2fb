//! `ClusterBuilder::tls`: every server accepts TLS with a certificate that clients verify
//! against `TestCluster::tls_root_cert`, replicas included; without it, servers stay plain.

use std::process::Output;

use meridian_testkit::{Kit, Node, TestCluster};

/// `psql -At -c sql` against `node` with libpq's `sslmode` and, if given, `sslrootcert`.
async fn psql(node: &Node, sslmode: &str, root: Option<&std::path::Path>, sql: &str) -> Output {
    let kit = Kit::get().unwrap();
    let mut conninfo = format!("{} sslmode={sslmode}", node.conninfo());
    if let Some(root) = root {
        conninfo.push_str(&format!(" sslrootcert={}", root.display()));
    }
    tokio::process::Command::new(kit.bin().program("psql"))
        .env_remove("PGSSLMODE")
        .env_remove("PGSSLROOTCERT")
        .args(["-X", "-At", "-d", &conninfo, "-c", sql])
        .kill_on_drop(true)
        .output()
        .await
        .unwrap()
}

fn describe(output: &Output) -> String {
    format!(
        "{}: {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[tokio::test]
async fn tls_servers_present_a_certificate_that_verifies_against_the_root() {
    let cluster = TestCluster::builder()
        .replicas(1)
        .tls()
        .start()
        .await
        .unwrap();
    let root = cluster
        .tls_root_cert()
        .expect("a TLS cluster has a root certificate");

    for node in cluster.nodes() {
        // verify-full checks the chain against the root and 127.0.0.1 against the names.
        let output = psql(
            node,
            "verify-full",
            Some(root),
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
        .await;
        assert!(
            output.status.success(),
            "{}: {}",
            node.name(),
            describe(&output)
        );
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "t\n",
            "{}",
            node.name()
        );
    }
    // The replica's own replication connection is encrypted too (libpq's default `prefer`).
    assert_eq!(
        cluster
            .primary()
            .query_one("SELECT ssl FROM pg_stat_ssl JOIN pg_stat_replication USING (pid)")
            .await
            .unwrap()
            .as_deref(),
        Some("t")
    );
    // Plain connections, such as the kit's own, are still accepted.
    assert_eq!(
        cluster
            .primary()
            .query_one("SHOW ssl")
            .await
            .unwrap()
            .as_deref(),
        Some("on")
    );
}

#[tokio::test]
async fn without_tls_servers_refuse_it_and_there_is_no_root() {
    let cluster = TestCluster::builder().start().await.unwrap();

    assert_eq!(cluster.tls_root_cert(), None);
    assert_eq!(
        cluster
            .primary()
            .query_one("SHOW ssl")
            .await
            .unwrap()
            .as_deref(),
        Some("off")
    );
    let output = psql(cluster.primary(), "require", None, "SELECT 1").await;
    assert!(!output.status.success(), "{}", describe(&output));
}
