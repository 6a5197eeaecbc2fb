//! Shared by the service's tests: a pool manager with fast checks over a test-kit cluster, the
//! service run in-process on a port of its own, and plain HTTP/1.1 over a TCP stream (one
//! request per connection, as `curl` sends it).

#![allow(dead_code)]

use std::time::Duration;

use meridian_client::{Backoff, PoolManager};
use meridian_testkit::TestCluster;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Bound of every wait: generous, since these 2-core machines are shared.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A manager over `cluster` (its primary, then its replicas) that notices a node's death
/// within a second: checks every 200 ms, reconnection after 100, 200, 400 ms then every
/// 500 ms, and reads retried for about four seconds. No lag ceiling: a replica whose replay
/// is paused keeps serving plain reads, so only a token keeps a read off it.
pub async fn manager(cluster: &TestCluster) -> PoolManager {
    let mut builder = PoolManager::builder().primary(cluster.primary().url());
    for replica in cluster.replicas() {
        builder = builder.replica(replica.url());
    }
    builder
        .check_interval(Duration::from_millis(200))
        .reconnect(Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(500),
            attempts: 3,
            then: Duration::from_millis(500),
            jitter: 0.0,
        })
        .retry(Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
            attempts: 10,
            then: Duration::from_millis(500),
            jitter: 0.2,
        })
        .max_lag_bytes(None)
        .build()
        .await
        .expect("a pool manager")
}

/// The service, migrated and serving on a loopback port of its own until [`Service::stop`]
/// (or the end of the test).
pub struct Service {
    pub port: u16,
    pub db: PoolManager,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Service {
    /// Migrates `db`'s primary and serves the app over `db` on `127.0.0.1:0`.
    pub async fn start(db: PoolManager) -> Service {
        synapse::migrate(&db).await.expect("migrations");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(synapse::serve(listener, db.clone(), async {
            let _ = stopped.await;
        }));
        Service {
            port,
            db,
            stop: Some(stop),
            task,
        }
    }

    /// `method path` with `headers` and, when given, a JSON `body`.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> Reply {
        request(self.port, method, path, headers, body)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.call("GET", path, &[], None).await
    }

    /// `GET path` with an `x-wal-token`.
    pub async fn get_after(&self, path: &str, token: &str) -> Reply {
        self.call("GET", path, &[("x-wal-token", token)], None)
            .await
    }

    pub async fn post(&self, path: &str, body: &str) -> Reply {
        self.call(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            Some(body),
        )
        .await
    }

    /// Posts a valid transaction for `account`; the reply, asserted 201.
    pub async fn create(&self, account: &str, amount_cents: i64) -> Reply {
        let reply = self
            .post(
                "/transactions",
                &format!(
                    r#"{{"account": "{account}", "amount_cents": {amount_cents}, "currency": "EUR"}}"#
                ),
            )
            .await;
        assert_eq!(reply.status, 201, "{reply:?}");
        reply
    }

    /// Asks the server to shut down and waits until it has.
    pub async fn stop(mut self) -> std::io::Result<()> {
        let _ = self.stop.take().expect("running").send(());
        (&mut self.task).await.expect("the server task")
    }
}

/// An HTTP response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    /// Names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    /// The body as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_default()
    }

    /// The value of header `name` (lower case), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The `field` of an error body.
    pub fn field(&self) -> Value {
        self.json()["field"].clone()
    }
}

/// Sends one request to `127.0.0.1:port` with `Connection: close` and reads the whole
/// response.
pub async fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> std::io::Result<Reply> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = body.unwrap_or("");
    text.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(text.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    parse(&response).ok_or_else(|| std::io::Error::other(format!("not HTTP: {response:?}")))
}

fn parse(response: &str) -> Option<Reply> {
    let (head, body) = response.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.get(9..12)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    // Every response of the service has a length; a chunked one would need decoding.
    if headers.iter().any(|(n, _)| n == "transfer-encoding") {
        return None;
    }
    Some(Reply {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
