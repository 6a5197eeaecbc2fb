//! The operator's reconnect against a real cluster: the monitor's probe connections to the named
//! nodes are rebuilt (a new backend on the server, the old one gone), the other nodes keep
//! theirs, and the answer carries the fresh probe's result.

use std::sync::Arc;
use std::time::Duration;

use meridian_control::monitor::{self, MonitorSettings};
use meridian_control::probe::wall_clock;
use meridian_control::store::{Retention, SqliteStore, Store};
use meridian_core::failover::FailoverPolicy;
use meridian_core::topology::{Health, NodeId};
use meridian_testkit::{Check, Node, TestCluster, wait_until};

mod support;

const TIMEOUT: Duration = Duration::from_secs(30);

/// The `application_name` the monitor's probe connections log in with.
const PROBE_APPLICATION: &str = "meridian-monitor";

/// Monitor settings for `cluster` with failover off and probes a minute apart, so that every
/// probe during a test is one the test asked for.
fn settings(cluster: &TestCluster) -> MonitorSettings {
    let mut settings = support::settings(cluster, |i| cluster.nodes()[i].port(), |_| 0);
    for node in &mut settings.nodes {
        node.probe_interval = Duration::from_secs(60);
    }
    MonitorSettings {
        failover: FailoverPolicy {
            automatic: false,
            ..settings.failover
        },
        ..settings
    }
}

fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(&dir.path().join("meridian.db"), Retention::default()).unwrap())
}

/// The backends of the monitor's probe connections on `node`.
async fn probe_backends(node: &Node) -> Result<Vec<i32>, String> {
    let rows = node
        .query(&format!(
            "SELECT pid FROM pg_stat_activity WHERE application_name = '{PROBE_APPLICATION}' \
             ORDER BY pid"
        ))
        .await
        .map_err(|e| format!("{e:#}"))?;
    rows.iter()
        .map(|row| {
            let pid = row.first().cloned().flatten().unwrap_or_default();
            pid.parse().map_err(|e| format!("pid {pid:?}: {e}"))
        })
        .collect()
}

/// The backend of the monitor's only probe connection on `node`, once there is exactly one
/// and it is not `old`.
async fn only_probe_backend(node: &Node, old: Option<i32>) -> i32 {
    let what = match old {
        Some(old) => format!("one probe backend on {} other than {old}", node.name()),
        None => format!("one probe backend on {}", node.name()),
    };
    wait_until(TIMEOUT, &what, || async {
        match probe_backends(node).await {
            Ok(pids) => match pids[..] {
                [pid] if Some(pid) != old => Check::Ready(pid),
                _ => Check::NotYet(format!("{pids:?}")),
            },
            Err(e) => Check::NotYet(e),
        }
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn reconnect_rebuilds_the_named_nodes_probe_connections_only() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let monitor = monitor::spawn(settings(&cluster), store(&dir));
    let first = monitor.first_round().await;
    assert!(
        first.nodes.iter().all(|n| n.health == Health::Healthy),
        "{first:#?}"
    );
    let primary = cluster.primary();
    let replica = cluster.node("main-2");
    let primary_before = only_probe_backend(primary, None).await;
    let replica_before = only_probe_backend(replica, None).await;
    let probes_before = first.nodes[1].probes;

    let asked_at = wall_clock();
    let status = monitor.reconnect(&[NodeId(1)]).await;

    let reconnected = &status.nodes[1];
    assert!(
        reconnected.last_probe_at.is_some_and(|at| at >= asked_at),
        "the answer carries a probe made after the request: {reconnected:#?}"
    );
    assert_eq!(reconnected.probes, probes_before + 1, "{reconnected:#?}");
    assert_eq!(reconnected.health, Health::Healthy, "{reconnected:#?}");
    assert_eq!(reconnected.consecutive_failures, 0, "{reconnected:#?}");
    let replica_after = only_probe_backend(replica, Some(replica_before)).await;
    assert_ne!(replica_after, replica_before);

    // The primary was not named: it keeps its connection (and was not probed).
    assert_eq!(status.nodes[0].probes, first.nodes[0].probes);
    assert_eq!(probe_backends(primary).await.unwrap(), vec![primary_before]);

    // A plain forced probe reuses the connection it finds.
    let status = monitor.probe_now(Some(NodeId(1))).await;
    assert_eq!(status.nodes[1].probes, probes_before + 2);
    assert_eq!(probe_backends(replica).await.unwrap(), vec![replica_after]);
}

#[tokio::test]
async fn reconnect_of_every_node_answers_once_each_is_judged() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let monitor = monitor::spawn(settings(&cluster), store(&dir));
    monitor.first_round().await;
    let before: Vec<i32> = every_probe_backend(&cluster).await;

    let asked_at = wall_clock();
    let status = monitor.reconnect(&[NodeId(0), NodeId(1), NodeId(7)]).await;

    for node in &status.nodes {
        assert!(
            node.last_probe_at.is_some_and(|at| at >= asked_at),
            "{node:#?}"
        );
        assert_eq!(node.health, Health::Healthy, "{node:#?}");
    }
    for (node, old) in cluster.nodes().iter().zip(before) {
        only_probe_backend(node, Some(old)).await;
    }
}

/// The probe backend of every node, in node order.
async fn every_probe_backend(cluster: &TestCluster) -> Vec<i32> {
    let mut pids = Vec::new();
    for node in cluster.nodes() {
        pids.push(only_probe_backend(node, None).await);
    }
    pids
}
