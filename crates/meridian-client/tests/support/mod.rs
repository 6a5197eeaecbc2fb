//! Shared by the client's real-cluster tests: a manager with fast checks over a test kit
//! cluster, and the port of the server a query ran on.

#![allow(dead_code)]

use std::time::Duration;

use meridian_client::{Backoff, Builder, PoolManager, QueryIntent};
use meridian_testkit::TestCluster;

pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Checks every 100 ms; a node that went away is retried after 100, 200, 400 ms, then every
/// 400 ms: detection and recovery within a second, for tests.
pub fn fast(builder: Builder) -> Builder {
    builder
        .check_interval(Duration::from_millis(100))
        .reconnect(Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
            attempts: 3,
            then: Duration::from_millis(400),
            jitter: 0.0,
        })
        .retry(Backoff {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(200),
            attempts: 8,
            then: Duration::from_millis(200),
            jitter: 0.2,
        })
}

/// A fast manager over the cluster: its first node as primary, the others as replicas.
pub async fn manager(cluster: &TestCluster) -> PoolManager {
    let mut builder = PoolManager::builder();
    for (i, node) in cluster.nodes().iter().enumerate() {
        builder = if i == 0 {
            builder.primary(node.url())
        } else {
            builder.replica(node.url())
        };
    }
    fast(builder).build().await.expect("manager")
}

/// The port of the server that ran a query for `intent` (as the server reports it).
pub async fn served_by(db: &PoolManager, intent: QueryIntent) -> meridian_client::Result<u16> {
    db.run(intent, |conn| {
        Box::pin(async move {
            let port: i32 = sqlx::query_scalar("SELECT inet_server_port()")
                .fetch_one(conn)
                .await?;
            Ok(u16::try_from(port).expect("a port"))
        })
    })
    .await
}
