//! The example service (`examples/synapse`) with Meridian's proxy as its only database: one
//! `DATABASE_URL`, no replica URLs, the proxy splitting reads from writes behind it. With
//! `read_your_writes = "global"`, a read on any pooled connection sees the writes committed
//! through the proxy before it, even while the replica's replay is paused: the service needs
//! no token of its own.

mod support;

use std::time::Duration;

use meridian_client::PoolManager;
use meridian_testkit::{Check, TestCluster, wait_until};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use support::{DataDirs, PASSWORD, RunningMeridian, cluster_toml, http_json};

const TIMEOUT: Duration = Duration::from_secs(60);

/// `POST path` with a JSON `body` to the service on `port`: the status, the `x-wal-token`
/// header and the body.
async fn post(port: u16, path: &str, body: &str) -> (u16, Option<String>, Value) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let token = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.eq_ignore_ascii_case("x-wal-token")
            .then(|| value.trim().to_owned())
    });
    (
        head[9..12].parse().unwrap(),
        token,
        serde_json::from_str(body).unwrap_or_default(),
    )
}

#[tokio::test]
async fn synapse_through_the_proxy_reads_its_own_writes_while_the_replica_lags() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let meridian = RunningMeridian::start(
        &format!(
            "[monitor]\nprobe_interval = \"300ms\"\n\
             [routing]\nread_your_writes = \"global\"\ncausal_read_timeout = \"1s\"\n{}",
            cluster_toml(&cluster, DataDirs::Unmanaged)
        ),
        TIMEOUT,
    )
    .await;
    let url = format!(
        "postgres://app:{PASSWORD}@127.0.0.1:{}/postgres",
        meridian.port
    );
    let db = meridian.or_log(
        PoolManager::builder()
            .primary(url)
            .build()
            .await
            .map_err(anyhow::Error::from),
    );
    // sqlx's migrator holds a session advisory lock: the proxy pins the session to the
    // primary while it runs.
    meridian.or_log(synapse::migrate(&db).await.map_err(anyhow::Error::from));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(synapse::serve(listener, db, std::future::pending()));

    // One node as far as the service knows: the proxy, taking writes.
    let (code, health) = http_json(port, "GET", "/health", None, None).await.unwrap();
    assert_eq!(code, 200, "{health}");
    assert_eq!(health["db_primary"], "connected");
    assert_eq!(health["db_replica"], Value::Null);

    let replica = &cluster.replicas()[0];
    wait_until(TIMEOUT, "the table on the replica", || async {
        replica
            .query_one("SELECT to_regclass('public.transactions')::text")
            .await
            .map(|found| Check::when(found.is_some(), (), found))
            .unwrap_or_else(|e| Check::NotYet(e.to_string()))
    })
    .await
    .unwrap();
    replica
        .execute("SELECT pg_wal_replay_pause()")
        .await
        .unwrap();

    let mut ids = Vec::new();
    for n in 1..=3 {
        let (code, token, row) = post(
            port,
            "/transactions",
            &format!(r#"{{"account": "acc-{n}", "amount_cents": {n}00, "currency": "EUR"}}"#),
        )
        .await;
        assert_eq!(code, 201, "{row}\n{}", meridian.log());
        assert!(token.is_some(), "a write answers its token");
        let id = row["id"].as_i64().unwrap();
        // No token: the proxy alone keeps the read from the paused replica.
        let (code, read) = http_json(port, "GET", &format!("/transactions/{id}"), None, None)
            .await
            .unwrap();
        assert_eq!((code, &read), (200, &row), "{}", meridian.log());
        ids.push(id);
    }
    let (code, list) = http_json(port, "GET", "/transactions", None, None)
        .await
        .unwrap();
    assert_eq!(code, 200, "{list}");
    let listed: Vec<i64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["id"].as_i64().unwrap())
        .collect();
    ids.reverse();
    assert_eq!(listed, ids);
    // The writes are on the primary, which the replica has not replayed.
    assert_eq!(
        cluster
            .primary()
            .query_one("SELECT count(*) FROM transactions")
            .await
            .unwrap()
            .as_deref(),
        Some("3")
    );
    assert_eq!(
        replica
            .query_one("SELECT count(*) FROM transactions")
            .await
            .unwrap()
            .as_deref(),
        Some("0")
    );
    replica
        .execute("SELECT pg_wal_replay_resume()")
        .await
        .unwrap();
}
