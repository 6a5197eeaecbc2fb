//! The monitor and the proxy together: the proxy routes by the monitor's view and tells the
//! monitor at once about a node it cannot use; the binary serves metrics and never logs a
//! password.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use meridian_config::{Config, Environment};
use meridian_control::credentials::Credentials;
use meridian_control::monitor::{self, MonitorHandle, MonitorSettings};
use meridian_control::store::{MemoryStore, Retention};
use meridian_core::topology::{Health, NodeId};
use meridian_proxy::{Proxy, ProxySettings};
use meridian_testkit::{Check, TestCluster, wait_until};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;

use support::{DataDirs, cluster_toml, connect, free_port, http_get};

mod support;

const TIMEOUT: Duration = Duration::from_secs(30);

/// The configuration of a cluster (see [`cluster_toml`]) with `monitor` settings.
fn config(cluster: &TestCluster, monitor: &str) -> (Config, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{}[monitor]\n{monitor}\n",
        cluster_toml(cluster, DataDirs::Unmanaged)
    );
    let path = dir.path().join("meridian.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(Some(&path), &Environment::default()).unwrap();
    (config, dir)
}

/// A monitor and a proxy in this process, wired as `meridian run` wires them.
async fn start(config: &Config) -> (MonitorHandle, Proxy, u16) {
    let credentials = Credentials::from_config(config).unwrap();
    let monitor = monitor::spawn(
        MonitorSettings::from_config(config, credentials).unwrap(),
        Arc::new(MemoryStore::new(Retention::default())),
    );
    monitor.first_round().await;
    let proxy = Proxy::new(
        ProxySettings::from_config(config).unwrap(),
        monitor.view(),
        Some(monitor.fast_signal()),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let running = proxy.clone();
    tokio::spawn(async move { running.run(listener, std::future::pending()).await });
    (monitor, proxy, port)
}

#[tokio::test]
async fn a_node_the_proxy_cannot_use_is_probed_at_once() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    // Scheduled probes every minute: only the proxy's signal can make the monitor look sooner.
    let (config, _dir) = config(
        &cluster,
        "probe_interval = \"60s\"\nreconnect_initial = \"60s\"\nreconnect_max = \"60s\"",
    );
    let (monitor, _proxy, port) = start(&config).await;
    let client = connect(port).await.unwrap();
    client.simple_query("SELECT 1").await.unwrap();
    let probes_before = monitor.status().nodes[0].probes;

    cluster.primary().kill();
    // The query waits while the proxy's signal has the monitor probe the primary at once (not
    // in a minute), find it dead and fail over; then it runs on the new primary.
    let served: i32 = client
        .query_one(
            "SELECT inet_server_port() FROM (SELECT txid_current()) AS write",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(served as u16, cluster.node("main-2").port());

    let status = wait_until(
        Duration::from_secs(10),
        "the monitor to probe the primary again",
        || async {
            let status = monitor.status();
            let primary = &status.nodes[0];
            Check::when(
                primary.probes > probes_before && primary.last_error.is_some(),
                status.clone(),
                primary.probes,
            )
        },
    )
    .await
    .unwrap();
    assert!(
        status.nodes[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("refused")
    );
}

#[tokio::test]
async fn writes_follow_the_node_the_monitor_observes_as_primary() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let (config, _dir) = config(&cluster, "probe_interval = \"200ms\"");
    let (monitor, _proxy, port) = start(&config).await;
    let client = connect(port).await.unwrap();
    let served: i32 = client
        .query_one(
            "SELECT inet_server_port() FROM (SELECT txid_current()) AS write",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(served as u16, cluster.primary().port());

    // A promotion made outside Meridian: the old primary stops, the replica is promoted.
    cluster.primary().kill();
    cluster.node("main-2").promote().await.unwrap();
    let status = wait_until(
        TIMEOUT,
        "the monitor to observe the new primary",
        || async {
            let status = monitor.status();
            Check::when(
                status.primary == Some(NodeId(1)),
                status.clone(),
                status.primary,
            )
        },
    )
    .await
    .unwrap();
    assert_eq!(status.generation, 2);
    // The new primary is adopted as soon as it answers writable; the dead one is judged down
    // on its own schedule.
    wait_until(TIMEOUT, "the old primary to be judged down", || async {
        let health = monitor.status().nodes[0].health;
        Check::when(health == Health::Down, (), health)
    })
    .await
    .unwrap();

    let served = wait_until(
        TIMEOUT,
        "a write through the proxy on the new primary",
        || async {
            let write = client
                .batch_execute("CREATE TABLE IF NOT EXISTS t (id int)")
                .await;
            let port = client
                .query_one(
                    "SELECT inet_server_port() FROM (SELECT txid_current()) AS write",
                    &[],
                )
                .await;
            match (write, port) {
                (Ok(()), Ok(row)) => Check::Ready(row.get::<_, i32>(0)),
                (write, port) => Check::NotYet(format!("{:?} {:?}", write.err(), port.err())),
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(served as u16, cluster.node("main-2").port());
}

#[tokio::test]
async fn the_binary_serves_metrics_and_never_logs_a_password() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("run")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "DATABASE_URL",
            format!(
                "postgres://postgres:url-s3cret@127.0.0.1:{}/postgres",
                cluster.primary().port()
            ),
        )
        .env(
            "DATABASE_REPLICA_URL",
            format!(
                "postgres://postgres:url-s3cret@127.0.0.1:{}/postgres",
                cluster.node("main-2").port()
            ),
        )
        .env("MERIDIAN_LISTEN", format!("127.0.0.1:{port}"))
        .env("MERIDIAN_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env("MERIDIAN_DATA_DIR", data.path())
        .env("MERIDIAN_PROBE_INTERVAL", "200ms")
        // A monitor role that does not exist: every probe is refused, and logged.
        .env("MERIDIAN_MONITOR_USER", "nobody")
        .env("MERIDIAN_MONITOR_PASSWORD", "monitor-s3cret")
        .env("MERIDIAN_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let metrics = wait_until(TIMEOUT, "metrics with both nodes judged", || async {
        match http_get(admin, "/metrics").await {
            Err(e) => Check::NotYet(e.to_string()),
            Ok(body) => Check::when(
                body.contains(
                    "meridian_node_health{node=\"replica1\",region=\"default\",state=\"down\"} 1",
                ),
                body.clone(),
                body.len(),
            ),
        }
    })
    .await
    .unwrap();
    assert!(metrics.starts_with("HTTP/1.1 200"), "{metrics}");
    assert!(
        metrics.contains("meridian_node_probe_errors_total{node=\"primary\",region=\"default\"}"),
        "{metrics}"
    );
    // Never observed, neither node is known as the primary: both are "replica down", high.
    assert!(
        metrics.contains("meridian_alerts_active{type=\"endpoint_down\",severity=\"high\"} 2"),
        "{metrics}"
    );

    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let mut logs = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut logs)
        .await
        .unwrap();
    assert!(
        logs.contains("alert raised"),
        "the refusals are logged:\n{logs}"
    );
    for secret in ["url-s3cret", "monitor-s3cret"] {
        assert!(!logs.contains(secret), "{secret} was logged:\n{logs}");
    }
    assert!(!metrics.contains("s3cret"));
}
