//! The monitor against real multi-region clusters: roles, positions and lag as the servers
//! report them, health that follows crashes and hangs, alerts raised at their thresholds and
//! resolved when the condition clears, and a store that survives a restart.

use std::sync::Arc;
use std::time::Duration;

use meridian_control::monitor::{self, MonitorHandle, MonitorSettings};
use meridian_control::store::{AlertQuery, Retention, SqliteStore, Store};
use meridian_core::alerts::{AlertKind, AlertPolicy, Severity};
use meridian_core::backoff::Backoff;
use meridian_core::failover::FailoverPolicy;
use meridian_core::health::HealthPolicy;
use meridian_core::status::ClusterStatus;
use meridian_core::topology::{Health, NodeId, Role};
use meridian_testkit::{Check, FaultLink, TestCluster, wait_until};

mod support;
use support::INTERVAL;

const TIMEOUT: Duration = Duration::from_secs(30);

/// Monitor settings for `cluster`, probing every 250 ms, with `policy` and failover off (these
/// tests watch; failing over is tested in tests/failover.rs); `port_of` may route a node's
/// probes through a link.
fn settings(
    cluster: &TestCluster,
    port_of: impl Fn(usize) -> u16,
    policy: AlertPolicy,
) -> MonitorSettings {
    let settings = support::settings(cluster, port_of, |_| 0);
    MonitorSettings {
        policy,
        failover: FailoverPolicy {
            automatic: false,
            ..settings.failover
        },
        ..settings
    }
}

/// Node ports for [`settings`] where the probes of node 1 (the replica) go through `link`.
fn replica_through(cluster: &TestCluster, link: &FaultLink) -> impl Fn(usize) -> u16 {
    let ports: Vec<u16> = cluster.nodes().iter().map(|n| n.port()).collect();
    let link_port = link.port();
    move |i| if i == 1 { link_port } else { ports[i] }
}

fn store(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(&dir.path().join("meridian.db"), Retention::default()).unwrap())
}

/// Waits until the monitor's status satisfies `holds`, describing `what`.
async fn wait_status(
    monitor: &MonitorHandle,
    what: &str,
    holds: impl Fn(&ClusterStatus) -> bool,
) -> Arc<ClusterStatus> {
    wait_until(TIMEOUT, what, || async {
        let status = monitor.status();
        let seen = status
            .nodes
            .iter()
            .map(|n| format!("{}: {:?} {:?} lag {:?}", n.name, n.role, n.health, n.lag))
            .collect::<Vec<_>>();
        Check::when(holds(&status), status.clone(), seen)
    })
    .await
    .unwrap()
}

fn node<'a>(status: &'a ClusterStatus, name: &str) -> &'a meridian_core::status::NodeState {
    status.nodes.iter().find(|n| &*n.name == name).unwrap()
}

#[tokio::test]
async fn a_three_region_cluster_is_reported_as_the_servers_see_it() {
    let cluster = TestCluster::builder()
        .region("us-east", 2)
        .region("eu-west", 2)
        .region("ap-south", 1)
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let monitor = monitor::spawn(
        settings(
            &cluster,
            |i| cluster.nodes()[i].port(),
            AlertPolicy::default(),
        ),
        store(&dir),
    );
    cluster
        .primary()
        .execute("CREATE TABLE t AS SELECT generate_series(1, 10000) AS id")
        .await
        .unwrap();
    cluster.wait_replicated(TIMEOUT).await.unwrap();
    let written = cluster.primary().lsn().await.unwrap();

    let status = wait_status(&monitor, "every replica caught up and healthy", |s| {
        s.nodes.iter().all(|n| n.health == Health::Healthy)
            && s.nodes
                .iter()
                .filter(|n| n.role == Role::Replica)
                .all(|n| n.lsn.is_some_and(|l| l >= written) && n.lag.is_some())
    })
    .await;
    assert_eq!(status.primary, Some(NodeId(0)));
    assert_eq!(monitor.view().borrow().primary, Some(NodeId(0)));
    assert_eq!(node(&status, "us-east-1").role, Role::Primary);
    for name in ["us-east-2", "eu-west-1", "eu-west-2", "ap-south-1"] {
        let replica = node(&status, name);
        assert_eq!(replica.role, Role::Replica, "{name}");
        assert_eq!(replica.timeline, Some(1), "{name}");
        assert_eq!(replica.wal_receiver.as_deref(), Some("streaming"), "{name}");
        // Caught up with a primary that is now idle: zero lag, not growing lag.
        assert_eq!(replica.lag.unwrap().bytes, 0, "{name}");
        assert_eq!(replica.lag.unwrap().seconds, Duration::ZERO, "{name}");
    }
    assert_eq!(
        node(&status, "eu-west-2").upstream.as_deref(),
        Some(format!("127.0.0.1:{}", cluster.node("eu-west-1").port()).as_str()),
        "the cascaded replica streams from its region leader"
    );
    // Still zero a few probes later: idleness is not lag.
    let later = wait_status(&monitor, "more probes", |s| {
        s.nodes[1].probes >= status.nodes[1].probes + 4
    })
    .await;
    assert!(
        later
            .nodes
            .iter()
            .all(|n| n.lag.is_none_or(|l| l.seconds == Duration::ZERO))
    );
    assert!(
        monitor.counters().active_alerts.is_empty(),
        "{:?}",
        monitor.counters().active_alerts
    );
}

#[tokio::test]
async fn a_replica_cut_off_from_its_stream_lags_alerts_and_recovers() {
    let cluster = TestCluster::builder()
        .replicas(1)
        .replication_links()
        .start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = AlertPolicy {
        lag_warning: Duration::from_secs(2),
        lag_critical: Duration::from_secs(600),
        ..AlertPolicy::default()
    };
    let monitor = monitor::spawn(
        settings(&cluster, |i| cluster.nodes()[i].port(), policy),
        store(&dir),
    );
    cluster
        .primary()
        .execute("CREATE TABLE t (id int)")
        .await
        .unwrap();
    wait_status(&monitor, "both nodes healthy", |s| {
        s.nodes.iter().all(|n| n.health == Health::Healthy)
    })
    .await;

    // The replica stops receiving WAL while the primary keeps writing.
    cluster.replication_link("main-2").unwrap().blackhole();
    let writer = {
        let primary = cluster.primary().client().await.unwrap();
        tokio::spawn(async move {
            for i in 0.. {
                if primary
                    .execute("INSERT INTO t VALUES ($1)", &[&i])
                    .await
                    .is_err()
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let lagging = wait_status(&monitor, "the replica to lag over 2 s", |s| {
        s.nodes[1]
            .lag
            .is_some_and(|l| l.seconds >= Duration::from_secs(2) && l.bytes > 0)
    })
    .await;
    let first = lagging.nodes[1].lag.unwrap();
    let alert = wait_until(TIMEOUT, "a replication_lag alert", || async {
        let counters = monitor.counters();
        let alert = counters
            .active_alerts
            .iter()
            .find(|a| a.kind == AlertKind::ReplicationLag && a.node.as_deref() == Some("main-2"))
            .cloned();
        Check::when(alert.is_some(), alert, counters.active_alerts.len())
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(alert.severity, Severity::Medium);
    assert_eq!(alert.threshold, 2.0);
    let grown = wait_status(&monitor, "the lag to keep growing", |s| {
        s.nodes[1]
            .lag
            .is_some_and(|l| l.seconds > first.seconds && l.bytes > first.bytes)
    })
    .await;
    assert!(grown.nodes[1].lag.unwrap().seconds > first.seconds);

    writer.abort();
    cluster.replication_link("main-2").unwrap().pass();
    wait_status(&monitor, "the replica to catch up", |s| {
        s.nodes[1]
            .lag
            .is_some_and(|l| l.bytes == 0 && l.seconds == Duration::ZERO)
    })
    .await;
    wait_until(TIMEOUT, "the lag alert to resolve", || async {
        let active = monitor.counters().active_alerts.len();
        Check::when(active == 0, (), active)
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_killed_replica_is_down_within_three_intervals_and_healthy_after_restart() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let monitor = monitor::spawn(
        settings(
            &cluster,
            |i| cluster.nodes()[i].port(),
            AlertPolicy::default(),
        ),
        store(&dir),
    );
    wait_status(&monitor, "both healthy", |s| {
        s.nodes.iter().all(|n| n.health == Health::Healthy)
    })
    .await;

    let killed = tokio::time::Instant::now();
    cluster.node("main-2").kill();
    let status = wait_status(&monitor, "the replica down", |s| {
        s.nodes[1].health == Health::Down
    })
    .await;
    // 3 failures at 250 ms, plus one interval of phase: generous bound, not a speed test.
    assert!(
        killed.elapsed() < INTERVAL * 3 + Duration::from_secs(2),
        "{:?}",
        killed.elapsed()
    );
    assert!(
        status.nodes[1]
            .last_error
            .as_deref()
            .unwrap()
            .contains("refused")
    );
    let alert = monitor
        .counters()
        .active_alerts
        .iter()
        .find(|a| a.kind == AlertKind::EndpointDown)
        .cloned()
        .expect("endpoint_down raised");
    assert_eq!(
        alert.severity,
        Severity::High,
        "a replica down is high, a primary down critical"
    );
    assert_eq!(
        status.primary,
        Some(NodeId(0)),
        "a dead replica does not change the primary"
    );

    cluster.node("main-2").start().await.unwrap();
    wait_status(&monitor, "the replica healthy again", |s| {
        s.nodes[1].health == Health::Healthy
    })
    .await;
    wait_until(TIMEOUT, "endpoint_down resolved", || async {
        let active = monitor.counters().active_alerts.len();
        Check::when(active == 0, (), active)
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_hung_node_is_slow_then_down_as_thresholds_say() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    // The replica's probes go through a link that adds latency; the primary's are direct.
    let link = FaultLink::start(cluster.node("main-2").addr()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let policy = AlertPolicy {
        health: HealthPolicy {
            slow_warning: Duration::from_millis(300),
            slow_critical: Duration::from_secs(5),
            ..HealthPolicy::default()
        },
        ..AlertPolicy::default()
    };
    let monitor = monitor::spawn(
        settings(&cluster, replica_through(&cluster, &link), policy),
        store(&dir),
    );
    wait_status(&monitor, "both healthy", |s| {
        s.nodes.iter().all(|n| n.health == Health::Healthy)
    })
    .await;

    link.latency(Duration::from_millis(200));
    wait_status(&monitor, "the replica degraded by slowness", |s| {
        s.nodes[1].health == Health::Degraded
    })
    .await;
    let slow = wait_until(TIMEOUT, "endpoint_slow", || async {
        let alert = monitor
            .counters()
            .active_alerts
            .iter()
            .find(|a| a.kind == AlertKind::EndpointSlow)
            .cloned();
        Check::when(alert.is_some(), alert, "none")
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(slow.severity, Severity::Medium);
    assert_eq!(slow.threshold, 0.3);
    link.pass();
    wait_status(&monitor, "healthy again", |s| {
        s.nodes[1].health == Health::Healthy
    })
    .await;

    // A hung server: every process stopped, connections accepted by the kernel, no answer.
    cluster.primary().pause();
    let status = wait_status(&monitor, "the paused primary down", |s| {
        s.nodes[0].health == Health::Down
    })
    .await;
    assert!(
        status.nodes[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("no answer")
    );
    let down = monitor
        .counters()
        .active_alerts
        .iter()
        .find(|a| a.kind == AlertKind::EndpointDown)
        .cloned()
        .unwrap();
    assert_eq!(down.severity, Severity::Critical, "the primary is down");
    cluster.primary().resume();
    wait_status(&monitor, "the primary back", |s| {
        s.nodes[0].health == Health::Healthy
    })
    .await;
}

#[tokio::test]
async fn alerts_and_history_survive_a_restart() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings_of = || {
        settings(
            &cluster,
            |i| cluster.nodes()[i].port(),
            AlertPolicy::default(),
        )
    };
    let first_store = store(&dir);
    let first = monitor::spawn(settings_of(), first_store.clone());
    wait_status(&first, "both healthy", |s| {
        s.nodes.iter().all(|n| n.health == Health::Healthy)
    })
    .await;
    cluster.node("main-2").kill();
    wait_status(&first, "the replica down", |s| {
        s.nodes[1].health == Health::Down
    })
    .await;
    let raised = first.counters().active_alerts.clone();
    assert_eq!(raised.len(), 1, "{raised:?}");
    drop(first);
    first_store.flush();
    let samples_before = first_store.probe_history(Some("main-2"), 1000).unwrap();
    assert!(
        samples_before.iter().any(|s| !s.ok),
        "failed probes are in the history"
    );
    drop(first_store);

    // A new process: same store file, the replica still down.
    let second_store = store(&dir);
    let second = monitor::spawn(settings_of(), second_store.clone());
    let restored = second.counters().active_alerts.clone();
    assert_eq!(
        restored.len(),
        1,
        "the active alert is restored before any probe: {restored:?}"
    );
    assert_eq!(restored[0].id, raised[0].id);
    assert_eq!(restored[0].kind, AlertKind::EndpointDown);
    let history = second_store.probe_history(Some("main-2"), 1000).unwrap();
    assert!(history.len() >= samples_before.len());

    // The condition clears: resolved, and stored resolved.
    cluster.node("main-2").start().await.unwrap();
    wait_until(TIMEOUT, "the restored alert resolved", || async {
        let active = second.counters().active_alerts.len();
        Check::when(active == 0, (), active)
    })
    .await
    .unwrap();
    second_store.flush();
    let stored = second_store
        .alerts(&AlertQuery {
            limit: 10,
            min_severity: None,
            active: None,
            node: Some("main-2".into()),
        })
        .unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert!(stored[0].resolved_at_ms.is_some());
}

#[tokio::test]
async fn a_forced_probe_reports_a_recovered_node_at_once() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut slow_settings = settings(
        &cluster,
        |i| cluster.nodes()[i].port(),
        AlertPolicy::default(),
    );
    // Reconnection backs off for a long time: only a forced probe can notice recovery soon.
    slow_settings.backoff = Backoff {
        initial: Duration::from_secs(60),
        max: Duration::from_secs(60),
        attempts: 5,
        then: Duration::from_secs(60),
        jitter: 0.0,
    };
    let monitor = monitor::spawn(slow_settings, store(&dir));
    wait_status(&monitor, "both healthy", |s| {
        s.nodes.iter().all(|n| n.health == Health::Healthy)
    })
    .await;
    cluster.node("main-2").kill();
    wait_status(&monitor, "the replica down", |s| {
        s.nodes[1].health == Health::Down
    })
    .await;
    cluster.node("main-2").start().await.unwrap();
    let status = monitor.probe_now(Some(NodeId(1))).await;
    assert_eq!(
        status.nodes[1].consecutive_failures, 0,
        "the forced probe reconnected"
    );
    assert_eq!(status.nodes[1].role, Role::Replica);
}

#[tokio::test]
async fn opening_the_probe_connection_is_timed_apart_from_the_probe_query() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    // The replica is 100 ms away each way: opening a session (startup, authentication, the
    // server's parameters) takes at least one round trip, and so does each probe query.
    let link = FaultLink::start(cluster.node("main-2").addr()).unwrap();
    link.latency(Duration::from_millis(100));
    let dir = tempfile::tempdir().unwrap();
    let store = store(&dir);
    let monitor = monitor::spawn(
        settings(
            &cluster,
            replica_through(&cluster, &link),
            AlertPolicy::default(),
        ),
        store.clone(),
    );
    let round_trip = Duration::from_millis(200);
    let status = wait_status(&monitor, "three probes of the replica", |s| {
        s.nodes[1].probes >= 3 && s.nodes[1].consecutive_failures == 0
    })
    .await;
    let replica = &status.nodes[1];
    let connect = replica.connect_latency.expect("the first probe connected");
    assert!(connect >= round_trip, "{connect:?}");
    assert!(replica.latency.unwrap() >= round_trip, "{replica:?}");
    assert!(status.nodes[0].connect_latency.is_some());

    // The store has it on the probe that connected, and not on those that reused the
    // connection the monitor keeps.
    store.flush();
    let samples = store.probe_history(Some("main-2"), 100).unwrap();
    let connected: Vec<Option<f64>> = samples.iter().map(|s| s.connect_ms).collect();
    let opened = connected.iter().filter(|c| c.is_some()).count();
    assert_eq!(opened, 1, "{connected:?}");
    assert!(
        connected.iter().flatten().all(|ms| *ms >= 200.0),
        "{connected:?}"
    );

    // A rebuilt connection is timed again.
    monitor.reconnect(&[NodeId(1)]).await;
    store.flush();
    let samples = store.probe_history(Some("main-2"), 100).unwrap();
    assert!(
        samples[0].connect_ms.is_some_and(|ms| ms >= 200.0),
        "{samples:?}"
    );
}
