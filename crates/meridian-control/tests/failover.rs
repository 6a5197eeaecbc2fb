//! Failover, switchover and rejoin against real clusters: the monitor, the failover machine and
//! the executor together, with servers killed, hung and cut off as in production.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meridian_control::credentials::Credentials;
use meridian_control::executor::{ExecNode, Executor};
use meridian_control::monitor::{self, MonitorHandle, MonitorSettings, MonitoredNode};
use meridian_control::store::{MemoryStore, Store};
use meridian_core::alerts::{AlertKind, AlertPolicy};
use meridian_core::backoff::Backoff;
use meridian_core::failover::{Command, FailoverPolicy};
use meridian_core::status::ClusterStatus;
use meridian_core::topology::NodeId;
use meridian_testkit::{Check, TestCluster, wait_until};
use meridian_tls::{ServerTls, ServerTlsSet};

const TIMEOUT: Duration = Duration::from_secs(30);
const INTERVAL: Duration = Duration::from_millis(250);

/// Settings for `cluster` with Meridian's default detection (3 probes, 200 ms confirmation);
/// `port_of` may route a node's probes through a link; `region_priority` per region name.
fn settings(
    cluster: &TestCluster,
    port_of: impl Fn(usize) -> u16,
    region_priority: impl Fn(&str) -> i32,
) -> MonitorSettings {
    let credentials = Credentials {
        user: "postgres".into(),
        password: None,
        database: "postgres".into(),
    };
    let nodes: Vec<MonitoredNode> = cluster
        .nodes()
        .iter()
        .enumerate()
        .map(|(i, node)| MonitoredNode {
            id: NodeId(i as u16),
            name: Arc::from(node.name()),
            region: Arc::from(node.region()),
            host: Arc::from("127.0.0.1"),
            port: port_of(i),
            no_failover: false,
            priority: 0,
            region_priority: region_priority(node.region()),
            probe_interval: INTERVAL,
        })
        .collect();
    let executor = Executor {
        nodes: cluster
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, node)| ExecNode {
                id: NodeId(i as u16),
                name: Arc::from(node.name()),
                host: Arc::from("127.0.0.1"),
                port: node.port(),
                tls: ServerTls::Disable,
                data_dir: Some(node.data_dir()),
                step_timeout: Duration::from_secs(20),
            })
            .collect(),
        credentials: credentials.clone(),
        pg_bin: None,
        rejoin_command: None,
        connect_timeout: Duration::from_secs(1),
    };
    MonitorSettings {
        nodes,
        credentials,
        tls: ServerTlsSet::uniform(ServerTls::Disable),
        probe_timeout: Duration::from_millis(800),
        backoff: Backoff {
            initial: Duration::from_millis(250),
            max: Duration::from_secs(1),
            attempts: 3,
            then: INTERVAL,
            jitter: 0.0,
        },
        policy: AlertPolicy::default(),
        failover: FailoverPolicy {
            min_interval: Duration::ZERO,
            step_timeout: Duration::from_secs(25),
            ..FailoverPolicy::default()
        },
        executor,
    }
}

/// Logs of the control plane, shown with a failing test's output.
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("meridian_control=info")
        .with_test_writer()
        .try_init();
}

fn store() -> Arc<dyn Store> {
    Arc::new(MemoryStore::default())
}

/// Waits until the monitor's status satisfies `holds`, describing `what`.
async fn wait_status(
    monitor: &MonitorHandle,
    what: &str,
    holds: impl Fn(&ClusterStatus) -> bool,
) -> Arc<ClusterStatus> {
    wait_until(TIMEOUT, what, || async {
        let status = monitor.status();
        let seen = format!(
            "generation {} primary {:?} paused {} failover {:?}; {}",
            status.generation,
            status.primary,
            status.paused,
            status.failover,
            status
                .nodes
                .iter()
                .map(|n| format!("{}: {:?} {:?}", n.name, n.role, n.health))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Check::when(holds(&status), status.clone(), seen)
    })
    .await
    .unwrap()
}

fn id_of(cluster: &TestCluster, name: &str) -> NodeId {
    NodeId(
        cluster
            .nodes()
            .iter()
            .position(|n| n.name() == name)
            .unwrap() as u16,
    )
}

/// The port a replica's WAL receiver streams from.
async fn upstream_port(cluster: &TestCluster, name: &str) -> Option<u16> {
    cluster
        .node(name)
        .query_one("SELECT sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'")
        .await
        .ok()
        .flatten()
        .and_then(|p| p.parse().ok())
}

async fn wait_streams_from(cluster: &TestCluster, replica: &str, upstream: &str) {
    let port = cluster.node(upstream).port();
    wait_until(
        TIMEOUT,
        &format!("{replica} to stream from {upstream}"),
        || async {
            let seen = upstream_port(cluster, replica).await;
            Check::when(seen == Some(port), (), format!("streams from {seen:?}"))
        },
    )
    .await
    .unwrap();
}

/// Nodes that accept writes now.
async fn writable(cluster: &TestCluster) -> Vec<String> {
    let mut out = Vec::new();
    for node in cluster.nodes() {
        if node.is_in_recovery().await.ok() == Some(false) {
            out.push(node.name().to_owned());
        }
    }
    out
}

#[tokio::test]
async fn a_killed_primary_is_replaced_and_the_other_replica_follows_the_new_one() {
    logs();
    let cluster = TestCluster::builder().replicas(2).start().await.unwrap();
    let store = store();
    let monitor = monitor::spawn(
        settings(&cluster, |i| cluster.nodes()[i].port(), |_| 0),
        store.clone(),
    );
    let status = wait_status(&monitor, "the primary adopted", |s| s.primary.is_some()).await;
    assert_eq!(status.primary, Some(id_of(&cluster, "main-1")));
    assert_eq!(status.generation, 1);
    cluster
        .primary()
        .execute("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 1000)")
        .await
        .unwrap();
    cluster.wait_replicated(TIMEOUT).await.unwrap();

    let killed = Instant::now();
    cluster.primary().kill();
    let status = wait_status(&monitor, "a new primary published", |s| {
        s.generation == 2 && s.primary.is_some() && !s.paused
    })
    .await;
    let took = killed.elapsed();
    let new = status.primary.unwrap();
    let new_name = cluster.nodes()[usize::from(new.0)].name().to_owned();
    assert_ne!(new_name, "main-1");
    assert!(took < Duration::from_secs(15), "failover took {took:?}");
    assert_eq!(writable(&cluster).await, std::slice::from_ref(&new_name));
    assert_eq!(
        cluster
            .node(&new_name)
            .query_one("SELECT count(*) FROM t")
            .await
            .unwrap()
            .as_deref(),
        Some("1000")
    );
    let other = if new_name == "main-2" {
        "main-3"
    } else {
        "main-2"
    };
    wait_streams_from(&cluster, other, &new_name).await;

    let done = wait_status(&monitor, "the run recorded as completed", |_| {
        monitor
            .recent_runs()
            .first()
            .is_some_and(|r| r.outcome == "completed")
    })
    .await;
    assert!(done.nodes[0].needs_rejoin, "the old primary needs rejoin");
    let runs = monitor.recent_runs();
    assert_eq!(runs.len(), 1, "exactly one promotion: {runs:?}");
    let run = &runs[0];
    assert_eq!(run.kind, "failover");
    assert_eq!(run.old_primary.as_deref(), Some("main-1"));
    assert_eq!(run.new_primary.as_deref(), Some(new_name.as_str()));
    assert_eq!(run.generation, 2);
    let phases: Vec<&str> = run.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        phases,
        ["detection", "fence", "promote", "publish", "repoint"],
        "{run:?}"
    );
    assert!(run.ranking.contains("main-2") && run.ranking.contains("main-3"));
    store.flush();
    let stored = store.failover_history(10).unwrap();
    assert_eq!(stored[0].outcome, "completed");
    let counters = monitor.counters();
    assert!(
        counters
            .active_alerts
            .iter()
            .any(|a| a.kind == AlertKind::FailoverCompleted),
        "{:?}",
        counters.active_alerts
    );
    assert!(
        !counters
            .active_alerts
            .iter()
            .any(|a| a.kind == AlertKind::FailoverTriggered)
    );
    // Nothing more happens: the old primary stays down, no second run.
    let later = monitor.probe_now(None).await;
    assert_eq!(later.generation, 2);
    assert_eq!(monitor.recent_runs().len(), 1);
}

#[tokio::test]
async fn a_switchover_loses_nothing_and_the_old_primary_becomes_a_replica() {
    logs();
    let cluster = TestCluster::builder().replicas(2).start().await.unwrap();
    let monitor = monitor::spawn(
        settings(&cluster, |i| cluster.nodes()[i].port(), |_| 0),
        store(),
    );
    wait_status(&monitor, "the primary adopted", |s| s.primary.is_some()).await;
    cluster
        .primary()
        .execute("CREATE TABLE t (id int)")
        .await
        .unwrap();
    cluster.wait_replicated(TIMEOUT).await.unwrap();
    monitor.probe_now(None).await;

    let target = id_of(&cluster, "main-3");
    let run = monitor
        .command(Command::Switchover { to: Some(target) })
        .await
        .expect("switchover accepted")
        .expect("a run started");
    let record = monitor.wait_run(run, TIMEOUT).await.unwrap();
    assert_eq!(record.outcome, "completed", "{record:?}");
    assert_eq!(record.kind, "switchover");
    assert_eq!(record.new_primary.as_deref(), Some("main-3"));
    let phases: Vec<&str> = record.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        phases,
        ["fence", "replay", "promote", "publish", "repoint", "demote"],
        "{record:?}"
    );
    assert_eq!(writable(&cluster).await, ["main-3"]);
    // The old primary was rewound and restarted by Meridian: the kit takes it over.
    cluster.node("main-1").adopt().unwrap();
    wait_streams_from(&cluster, "main-1", "main-3").await;
    wait_streams_from(&cluster, "main-2", "main-3").await;
    let status = wait_status(&monitor, "main-1 reported as a replica", |s| {
        !s.nodes[0].needs_rejoin && s.nodes[0].role == meridian_core::topology::Role::Replica
    })
    .await;
    assert_eq!(status.primary, Some(target));
    assert_eq!(status.generation, 2);
}
