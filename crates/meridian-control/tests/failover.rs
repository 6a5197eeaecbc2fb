//! Failover, switchover and rejoin against real clusters: the monitor, the failover machine and
//! the executor together, with servers killed, hung and cut off as in production.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meridian_control::monitor::{self, MonitorHandle};
use meridian_control::store::{
    AlertChange, AlertQuery, AlertRecord, FailoverRecord, MemoryStore, ProbeSample, Store,
    StoreError,
};
use meridian_core::alerts::{AlertKind, Severity};
use meridian_core::failover::Command;
use meridian_core::status::ClusterStatus;
use meridian_core::topology::{ClusterView, NodeId, Role};
use meridian_testkit::{Check, FaultLink, TestCluster, wait_until};
use tokio::task::JoinHandle;

mod support;
use support::{INTERVAL, settings};

const TIMEOUT: Duration = Duration::from_secs(30);

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
        if holds(&status) {
            Check::Ready(status)
        } else {
            Check::NotYet(describe(monitor))
        }
    })
    .await
    .unwrap()
}

/// What the monitor shows now: the status, node by node, and the recent runs with their
/// phases, for failure messages.
fn describe(monitor: &MonitorHandle) -> String {
    let status = monitor.status();
    let nodes = status
        .nodes
        .iter()
        .map(|n| {
            format!(
                "{}: {:?} {:?} failures {} receiver {:?} from {:?}{}",
                n.name,
                n.role,
                n.health,
                n.consecutive_failures,
                n.wal_receiver,
                n.upstream,
                if n.needs_rejoin { " needs rejoin" } else { "" }
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let runs = monitor
        .recent_runs()
        .iter()
        .map(|r| {
            let phases: Vec<String> = r
                .phases
                .iter()
                .map(|p| format!("{}={}", p.name, p.outcome))
                .collect();
            format!(
                "run {} {} {:?} -> {:?} gen {} {} [{}]",
                r.id,
                r.kind,
                r.old_primary,
                r.new_primary,
                r.generation,
                r.outcome,
                phases.join(", ")
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    format!(
        "generation {} primary {:?} paused {} failover {:?}; nodes: {nodes}; runs: [{runs}]",
        status.generation, status.primary, status.paused, status.failover
    )
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

/// Sets every replica's `wal_receiver_timeout`. An idle primary sends its replicas nothing
/// until one asks, after half of that without a message: the monitor can tell a hung primary
/// from an idle one it cannot reach only after that long (60 s by default, too long here).
async fn set_wal_receiver_timeout(cluster: &TestCluster, timeout: &str) {
    for replica in cluster.replicas() {
        replica
            .execute(&format!(
                "ALTER SYSTEM SET wal_receiver_timeout = '{timeout}'"
            ))
            .await
            .unwrap();
        replica.execute("SELECT pg_reload_conf()").await.unwrap();
    }
}

/// Nodes that accept writes now. A node that does not answer within a few seconds (killed,
/// hung) accepts none.
async fn writable(cluster: &TestCluster) -> Vec<String> {
    let mut out = Vec::new();
    for node in cluster.nodes() {
        let answer = tokio::time::timeout(Duration::from_secs(3), node.is_in_recovery()).await;
        if matches!(answer, Ok(Ok(false))) {
            out.push(node.name().to_owned());
        }
    }
    out
}

/// Waits until the newest run has finished and returns its record.
/// A monitor of `cluster`'s nodes on their own ports, once it has adopted n0 as the primary.
async fn monitor_of(cluster: &TestCluster) -> MonitorHandle {
    let monitor = monitor::spawn(
        settings(cluster, |i| cluster.nodes()[i].port(), |_| 0),
        store(),
    );
    wait_status(&monitor, "the primary adopted", |s| {
        s.primary == Some(NodeId(0))
    })
    .await;
    monitor
}

/// Table `t` holding the row 1, replicated everywhere.
async fn table_t_everywhere(cluster: &TestCluster) {
    cluster
        .primary()
        .execute("CREATE TABLE t (id bigint PRIMARY KEY); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    cluster.wait_replicated(TIMEOUT).await.unwrap();
}

async fn wait_finished_run(monitor: &MonitorHandle) -> FailoverRecord {
    wait_status(monitor, "a run to finish", |_| {
        monitor
            .recent_runs()
            .first()
            .is_some_and(|r| r.outcome != "in_progress")
    })
    .await;
    monitor.recent_runs()[0].clone()
}

/// Has the monitor rejoin `name` and waits until the run completed; Meridian restarted the
/// server with `pg_ctl`, so the kit takes it over. Returns the run's record.
async fn rejoin(monitor: &MonitorHandle, cluster: &TestCluster, name: &str) -> FailoverRecord {
    let run = monitor
        .command(Command::Rejoin {
            node: id_of(cluster, name),
        })
        .await
        .expect("rejoin accepted")
        .expect("a run started");
    let record = monitor.wait_run(run, TIMEOUT).await.unwrap();
    assert_eq!(record.outcome, "completed", "{record:?}");
    cluster.node(name).adopt().unwrap();
    record
}

/// Waits until row `id` of table `t` has reached `name`.
async fn wait_row(cluster: &TestCluster, name: &str, id: i64) {
    let node = cluster.node(name);
    let sql = format!("SELECT count(*) FROM t WHERE id = {id}");
    wait_until(TIMEOUT, &format!("row {id} on {name}"), || async {
        match node.query_one(&sql).await {
            Ok(count) => Check::when(count.as_deref() == Some("1"), (), count),
            Err(e) => Check::NotYet(format!("{e:#}")),
        }
    })
    .await
    .unwrap();
}

/// A memory store that also keeps every alert change in order. The store keeps each alert's
/// last state only, and the node-state rules update an active `endpoint_down` at every failed
/// probe: what the failover machine said when it raised one would be gone.
#[derive(Default)]
struct AlertLog {
    store: MemoryStore,
    changes: Mutex<Vec<AlertChange>>,
}

impl AlertLog {
    fn changes(&self) -> Vec<AlertChange> {
        self.changes.lock().unwrap().clone()
    }
}

impl Store for AlertLog {
    fn record_alert(&self, change: AlertChange) {
        self.changes.lock().unwrap().push(change.clone());
        self.store.record_alert(change);
    }
    fn record_probe(&self, sample: ProbeSample) {
        self.store.record_probe(sample);
    }
    fn record_failover(&self, record: FailoverRecord) {
        self.store.record_failover(record);
    }
    fn alerts(&self, query: &AlertQuery) -> Result<Vec<AlertRecord>, StoreError> {
        self.store.alerts(query)
    }
    fn active_alerts(&self) -> Result<Vec<AlertRecord>, StoreError> {
        self.store.active_alerts()
    }
    fn next_alert_id(&self) -> Result<u64, StoreError> {
        self.store.next_alert_id()
    }
    fn probe_history(
        &self,
        node: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ProbeSample>, StoreError> {
        self.store.probe_history(node, limit)
    }
    fn failover_history(&self, limit: usize) -> Result<Vec<FailoverRecord>, StoreError> {
        self.store.failover_history(limit)
    }
    fn next_failover_id(&self) -> Result<u64, StoreError> {
        self.store.next_failover_id()
    }
    fn flush(&self) {
        self.store.flush();
    }
    fn dropped_samples(&self) -> u64 {
        self.store.dropped_samples()
    }
}

/// Records every view the monitor publishes, from its creation until [`ViewRecorder::stop`].
struct ViewRecorder {
    seen: Arc<Mutex<Vec<Arc<ClusterView>>>>,
    task: JoinHandle<()>,
}

impl ViewRecorder {
    fn start(monitor: &MonitorHandle) -> ViewRecorder {
        let mut views = monitor.view();
        let seen = Arc::new(Mutex::new(vec![views.borrow_and_update().clone()]));
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                while views.changed().await.is_ok() {
                    let view = views.borrow_and_update().clone();
                    seen.lock().unwrap().push(view);
                }
            }
        });
        ViewRecorder { seen, task }
    }

    /// The views seen, in order.
    fn stop(self) -> Vec<Arc<ClusterView>> {
        self.task.abort();
        self.seen.lock().unwrap().clone()
    }
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
        [
            "detection",
            "fence",
            "synchronous",
            "promote",
            "publish",
            "repoint"
        ],
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
        [
            "fence",
            "replay",
            "synchronous",
            "promote",
            "publish",
            "repoint",
            "demote"
        ],
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

#[tokio::test]
async fn a_hung_primary_is_replaced_once_its_replicas_stop_hearing_from_it() {
    logs();
    let cluster = TestCluster::builder().replicas(2).start().await.unwrap();
    set_wal_receiver_timeout(&cluster, "4s").await;
    let monitor = monitor_of(&cluster).await;
    table_t_everywhere(&cluster).await;

    let hung = Instant::now();
    cluster.primary().pause();
    let run = wait_finished_run(&monitor).await;
    let took = hung.elapsed();
    assert_eq!(run.outcome, "completed", "{}", describe(&monitor));
    assert_eq!(run.kind, "failover");
    assert_eq!(run.old_primary.as_deref(), Some("main-1"));
    assert_eq!(run.generation, 2);
    let phases: Vec<&str> = run.phases.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        phases,
        [
            "detection",
            "fence",
            "synchronous",
            "promote",
            "publish",
            "repoint"
        ],
        "{run:?}"
    );
    // A hung server accepts TCP connections but answers nothing: the fence was tried (a timeout
    // is weak evidence) and given up on.
    assert!(
        run.phases[1].outcome.starts_with("not reachable"),
        "{run:?}"
    );
    let new_name = run.new_primary.clone().expect("a new primary");
    let status = monitor.status();
    assert_eq!(status.generation, 2);
    assert_eq!(status.primary, Some(id_of(&cluster, &new_name)));
    assert!(!status.paused);
    assert!(took < Duration::from_secs(20), "failover took {took:?}");
    assert_eq!(writable(&cluster).await, std::slice::from_ref(&new_name));
    let other = if new_name == "main-2" {
        "main-3"
    } else {
        "main-2"
    };
    wait_streams_from(&cluster, other, &new_name).await;
    cluster
        .node(&new_name)
        .execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    wait_row(&cluster, other, 2).await;

    // The old primary wakes up writable on its old timeline: it is not the primary again.
    cluster.primary().resume();
    let status = wait_status(&monitor, "main-1 answering again", |s| {
        s.nodes[0].consecutive_failures == 0 && s.nodes[0].role == Role::Primary
    })
    .await;
    assert!(status.nodes[0].needs_rejoin, "{}", describe(&monitor));
    assert_eq!(status.primary, Some(id_of(&cluster, &new_name)));
    assert_eq!(status.generation, 2);
    assert_eq!(monitor.recent_runs().len(), 1, "{}", describe(&monitor));
    cluster.primary().kill();
}

#[tokio::test]
async fn a_primary_cut_off_from_the_monitor_while_its_replicas_stream_is_not_failed_over() {
    logs();
    let cluster = TestCluster::builder().replicas(2).start().await.unwrap();
    // Short enough that the watch below spans several rounds of the replicas asking the idle
    // primary for a reply.
    set_wal_receiver_timeout(&cluster, "4s").await;
    // The monitor reaches the primary through the link only; the replicas stream directly.
    let link = FaultLink::start(cluster.primary().addr()).unwrap();
    let settings = settings(
        &cluster,
        |i| {
            if i == 0 {
                link.port()
            } else {
                cluster.nodes()[i].port()
            }
        },
        |_| 0,
    );
    let (policy, probe_timeout) = (settings.failover.clone(), settings.probe_timeout);
    let log = Arc::new(AlertLog::default());
    let monitor = monitor::spawn(settings, log.clone());
    wait_status(
        &monitor,
        "the primary adopted, both replicas streaming",
        |s| {
            s.primary == Some(NodeId(0))
                && s.nodes[1..]
                    .iter()
                    .all(|n| n.wal_receiver.as_deref() == Some("streaming"))
        },
    )
    .await;
    table_t_everywhere(&cluster).await;

    link.blackhole();
    // Detection takes `failure_threshold` probes that each time out; watch three times as
    // long, every 100 ms, and fail at the first sign of a failover. The primary stays idle
    // meanwhile: its replicas' streams carry nothing but what keeps an idle stream alive.
    let window = 3 * policy.failure_threshold * (probe_timeout + INTERVAL);
    let cut = Instant::now();
    let mut every = tokio::time::interval(Duration::from_millis(100));
    while cut.elapsed() < window {
        every.tick().await;
        let status = monitor.status();
        assert!(
            status.primary == Some(NodeId(0))
                && status.generation == 1
                && !status.paused
                && status.failover.running.is_none()
                && monitor.recent_runs().is_empty(),
            "{:?} after the link was cut: {}",
            cut.elapsed(),
            describe(&monitor)
        );
    }
    let status = monitor.status();
    assert!(
        status.nodes[0].consecutive_failures >= policy.failure_threshold
            && status.failover.suspect_since.is_some(),
        "the monitor must have lost the primary: {}",
        describe(&monitor)
    );
    // The failover machine's own alert says why there is no failover.
    let changes = log.changes();
    assert!(
        changes.iter().any(|c| {
            let alert = c.record();
            alert.kind == AlertKind::PrimaryUnreachable.as_str()
                && alert.node.as_deref() == Some("main-1")
                && alert.severity == Severity::Critical.as_str()
                && alert.message.contains("replicas still receive WAL")
        }),
        "{changes:#?}"
    );
    let counters = monitor.counters();
    assert!(
        counters
            .active_alerts
            .iter()
            .any(|a| a.kind == AlertKind::PrimaryUnreachable
                && a.node.as_deref() == Some("main-1")
                && a.severity == Severity::Critical
                && a.message.contains("replicas still receive WAL")),
        "{:?}",
        counters.active_alerts
    );
    // The primary was alive all along: it takes writes and its replicas receive them.
    cluster
        .primary()
        .execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    wait_row(&cluster, "main-2", 2).await;
    wait_row(&cluster, "main-3", 2).await;
    assert_eq!(writable(&cluster).await, ["main-1"]);

    link.pass();
    let status = wait_status(&monitor, "the primary answering again", |s| {
        s.nodes[0].consecutive_failures == 0 && s.failover.suspect_since.is_none()
    })
    .await;
    assert_eq!(status.primary, Some(NodeId(0)));
    assert_eq!(status.generation, 1);
    assert!(monitor.recent_runs().is_empty(), "{}", describe(&monitor));
}

#[tokio::test]
async fn losing_the_primary_region_moves_the_primary_to_the_next_region_by_priority() {
    logs();
    let cluster = TestCluster::builder()
        .region("us", 2)
        .region("eu", 2)
        .region("ap", 2)
        .start()
        .await
        .unwrap();
    let mut settings = settings(
        &cluster,
        |i| cluster.nodes()[i].port(),
        |region| match region {
            "us" => 10,
            "eu" => 5,
            "ap" => 8,
            _ => 0,
        },
    );
    // A region leader and its cascade hold the same WAL when idle; node priority ranks the
    // leader first (otherwise probe latency decides).
    for node in &mut settings.nodes {
        if node.name.ends_with("-1") {
            node.priority = 1;
        }
    }
    let monitor = monitor::spawn(settings, store());
    wait_status(&monitor, "us-1 adopted, every replica streaming", |s| {
        s.primary == Some(id_of(&cluster, "us-1"))
            && s.nodes[1..]
                .iter()
                .all(|n| n.wal_receiver.as_deref() == Some("streaming"))
    })
    .await;
    table_t_everywhere(&cluster).await;

    for node in cluster.region("us") {
        node.kill();
    }
    let run = wait_finished_run(&monitor).await;
    assert_eq!(run.outcome, "completed", "{}", describe(&monitor));
    assert_eq!(run.old_primary.as_deref(), Some("us-1"));
    assert_eq!(run.new_primary.as_deref(), Some("ap-1"), "{}", run.ranking);
    assert_eq!(run.generation, 2);
    let status = monitor.status();
    assert_eq!(status.primary, Some(id_of(&cluster, "ap-1")));
    assert_eq!(status.generation, 2);
    assert_eq!(writable(&cluster).await, ["ap-1"]);
    // The eu leader follows the new primary; the cascades stay behind their leaders.
    wait_streams_from(&cluster, "eu-1", "ap-1").await;
    wait_streams_from(&cluster, "eu-2", "eu-1").await;
    wait_streams_from(&cluster, "ap-2", "ap-1").await;
    cluster
        .node("ap-1")
        .execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    for replica in ["ap-2", "eu-1", "eu-2"] {
        wait_row(&cluster, replica, 2).await;
    }
    assert_eq!(monitor.recent_runs().len(), 1, "{}", describe(&monitor));
}

#[tokio::test]
async fn a_restarted_old_primary_gets_no_traffic_until_rejoined_as_a_replica() {
    logs();
    let cluster = TestCluster::builder().replicas(2).start().await.unwrap();
    let monitor = monitor_of(&cluster).await;
    table_t_everywhere(&cluster).await;
    cluster.primary().kill();
    let failover = wait_finished_run(&monitor).await;
    assert_eq!(failover.outcome, "completed", "{}", describe(&monitor));
    let new_name = failover.new_primary.clone().expect("a new primary");
    let new = id_of(&cluster, &new_name);

    let views = ViewRecorder::start(&monitor);
    // Restarted as it was: crash recovery, then writable on its old timeline.
    cluster.primary().start().await.unwrap();
    assert!(!cluster.primary().is_in_recovery().await.unwrap());
    let status = wait_status(&monitor, "main-1 answering again", |s| {
        s.nodes[0].consecutive_failures == 0 && s.nodes[0].role == Role::Primary
    })
    .await;
    assert!(status.nodes[0].needs_rejoin, "{}", describe(&monitor));
    assert_eq!(status.primary, Some(new));
    assert_eq!(status.generation, 2);
    // A few more rounds of probes with it writable.
    for _ in 0..3 {
        let status = monitor.probe_now(None).await;
        assert_eq!(status.primary, Some(new));
        assert!(status.nodes[0].needs_rejoin);
    }

    let record = rejoin(&monitor, &cluster, "main-1").await;
    assert_eq!(record.kind, "rejoin");
    wait_streams_from(&cluster, "main-1", &new_name).await;
    let status = wait_status(&monitor, "main-1 reported as a replica", |s| {
        !s.nodes[0].needs_rejoin && s.nodes[0].role == Role::Replica
    })
    .await;
    assert_eq!(status.primary, Some(new));
    assert_eq!(status.generation, 2);
    cluster
        .node(&new_name)
        .execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    wait_row(&cluster, "main-1", 2).await;
    assert_eq!(writable(&cluster).await, std::slice::from_ref(&new_name));

    let views = views.stop();
    assert!(views.len() > 1, "the views of the period were recorded");
    let named: Vec<_> = views
        .iter()
        .filter(|v| v.primary == Some(NodeId(0)))
        .collect();
    assert!(named.is_empty(), "main-1 published as primary: {named:?}");
    assert!(views.iter().all(|v| v.generation == 2), "{views:?}");
}

#[tokio::test]
async fn a_replica_killed_with_its_primary_rejoins_the_new_one() {
    logs();
    let cluster = TestCluster::builder().replicas(2).start().await.unwrap();
    let monitor = monitor_of(&cluster).await;
    table_t_everywhere(&cluster).await;
    // main-3 first, so that main-2 is the only candidate.
    cluster.node("main-3").kill();
    cluster.primary().kill();
    let failover = wait_finished_run(&monitor).await;
    assert_eq!(failover.outcome, "completed", "{}", describe(&monitor));
    assert_eq!(failover.new_primary.as_deref(), Some("main-2"));
    cluster
        .node("main-2")
        .execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();

    // A crashed replica: pg_rewind must complete its crash recovery, which a standby cannot
    // do in single-user mode; Meridian takes its standby.signal away meanwhile.
    rejoin(&monitor, &cluster, "main-3").await;
    assert!(cluster.node("main-3").is_in_recovery().await.unwrap());
    wait_streams_from(&cluster, "main-3", "main-2").await;
    wait_row(&cluster, "main-3", 2).await;
    assert_eq!(writable(&cluster).await, ["main-2"]);
}

#[tokio::test]
async fn a_synchronous_primary_killed_under_write_load_loses_no_acknowledged_write() {
    logs();
    let cluster = TestCluster::builder()
        .replicas(2)
        .synchronous(1)
        .start()
        .await
        .unwrap();
    let monitor = monitor_of(&cluster).await;
    cluster
        .primary()
        .execute("CREATE TABLE t (id bigint PRIMARY KEY)")
        .await
        .unwrap();
    cluster.wait_replicated(TIMEOUT).await.unwrap();
    monitor.probe_now(None).await;

    // One session writing numbered rows, each acknowledged once its COMMIT returned.
    let acked = Arc::new(Mutex::new(Vec::<i64>::new()));
    let client = cluster.primary().client().await.unwrap();
    let writer = tokio::spawn({
        let acked = acked.clone();
        async move {
            for id in 1.. {
                match client
                    .batch_execute(&format!("INSERT INTO t VALUES ({id})"))
                    .await
                {
                    Ok(()) => acked.lock().unwrap().push(id),
                    Err(e) => return e,
                }
            }
            unreachable!()
        }
    });
    wait_until(TIMEOUT, "200 acknowledged writes", || async {
        let n = acked.lock().unwrap().len();
        Check::when(n >= 200, (), n)
    })
    .await
    .unwrap();
    cluster.primary().kill();
    let error = writer.await.unwrap();
    let acked = acked.lock().unwrap().clone();
    let run = wait_finished_run(&monitor).await;
    assert_eq!(run.outcome, "completed", "{}", describe(&monitor));
    let new_name = run.new_primary.clone().expect("a new primary");

    let present: BTreeSet<i64> = cluster
        .node(&new_name)
        .query("SELECT id FROM t")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|row| row[0].as_deref().and_then(|id| id.parse().ok()))
        .collect();
    let lost: Vec<i64> = acked
        .iter()
        .copied()
        .filter(|id| !present.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes missing on {new_name} (the writer stopped on: {error}): {lost:?}",
        lost.len(),
        acked.len()
    );

    // Exactly one promotion.
    let runs = monitor.recent_runs();
    assert_eq!(runs.len(), 1, "{}", describe(&monitor));
    assert_eq!(runs[0].kind, "failover");
    assert_eq!(runs[0].generation, 2);
    assert_eq!(writable(&cluster).await, std::slice::from_ref(&new_name));
    let other = if new_name == "main-2" {
        "main-3"
    } else {
        "main-2"
    };
    assert!(cluster.node(other).is_in_recovery().await.unwrap());
    let later = monitor.probe_now(None).await;
    assert_eq!(later.generation, 2);
    assert_eq!(monitor.recent_runs().len(), 1);
    // The new primary named its synchronous replica before it was promoted, so that no
    // commit of it was ever acknowledged from one copy; that replica confirms its commits.
    let phases: Vec<&str> = runs[0].phases.iter().map(|p| p.name.as_str()).collect();
    let synchronous = phases.iter().position(|p| *p == "synchronous");
    let promote = phases.iter().position(|p| *p == "promote");
    assert!(synchronous.is_some() && synchronous < promote, "{phases:?}");
    assert_eq!(
        cluster
            .node(&new_name)
            .query_one("SHOW synchronous_standby_names")
            .await
            .unwrap()
            .as_deref(),
        Some(format!("ANY 1 (\"{other}\")").as_str()),
        "{:?}",
        runs[0].phases
    );
    let quorum = "SELECT sync_state FROM pg_stat_replication";
    wait_until(TIMEOUT, "the other replica to confirm commits", || async {
        match cluster.node(&new_name).query_one(quorum).await {
            Ok(state) => Check::when(
                matches!(state.as_deref(), Some("sync" | "quorum")),
                (),
                state,
            ),
            Err(e) => Check::NotYet(format!("{e:#}")),
        }
    })
    .await
    .unwrap();
}
