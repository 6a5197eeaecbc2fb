//! `meridian-client` following a running Meridian's control plane
//! (`/api/database/status`): roles come from Meridian's view, and a switchover ordered through
//! Meridian moves the client's writes.

mod support;

use std::time::Duration;

use meridian_client::{PoolManager, QueryIntent};
use meridian_testkit::{Check, TestCluster, wait_until};

use support::{DataDirs, RunningMeridian, cluster_toml, http_json};

const TIMEOUT: Duration = Duration::from_secs(60);
const TOKEN: &str = "client-test-token";

/// The port of the server that ran a query for `intent`.
async fn served_by(db: &PoolManager, intent: QueryIntent) -> meridian_client::Result<u16> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_follows_the_control_plane_through_a_switchover() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let meridian = RunningMeridian::start(
        &format!(
            "admin_token = \"{TOKEN}\"\n[monitor]\nprobe_interval = \"200ms\"\n{}",
            cluster_toml(&cluster, DataDirs::Managed)
        ),
        TIMEOUT,
    )
    .await;
    let (old, new) = (cluster.primary(), &cluster.replicas()[0]);
    let db = PoolManager::builder()
        .primary(old.url())
        .replica(new.url())
        .check_interval(Duration::from_millis(100))
        .control_plane(
            format!("http://127.0.0.1:{}", meridian.admin),
            Some(TOKEN.into()),
        )
        .build()
        .await
        .unwrap();
    meridian.or_log(
        wait_until(TIMEOUT, "roles from the control plane", || async {
            let health = db.health();
            Check::when(health.roles_from == "control_plane", (), health)
        })
        .await,
    );
    assert_eq!(
        served_by(&db, QueryIntent::Write).await.unwrap(),
        old.port()
    );
    assert_eq!(served_by(&db, QueryIntent::Read).await.unwrap(), new.port());

    let (code, run) = http_json(
        meridian.admin,
        "POST",
        "/api/database/switchover",
        Some(TOKEN),
        None,
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{run}\n{}", meridian.log());
    assert_eq!(run["outcome"], "completed", "{run}");
    meridian.or_log(
        wait_until(TIMEOUT, "writes on the new primary", || async {
            let port = served_by(&db, QueryIntent::Write).await;
            Check::when(matches!(port, Ok(p) if p == new.port()), (), port)
        })
        .await,
    );
    // The old primary, demoted to a replica by Meridian, serves reads.
    meridian.or_log(
        wait_until(TIMEOUT, "reads on the demoted primary", || async {
            let port = served_by(&db, QueryIntent::Read).await;
            Check::when(matches!(port, Ok(p) if p == old.port()), (), port)
        })
        .await,
    );
    assert_eq!(db.health().roles_from, "control_plane");
}
