//! The monitor: probes every node, judges its health, raises alerts, and publishes the cluster
//! view the proxy routes by and the status the operator interface shows.
//!
//! Two kinds of task:
//! - one *probe loop* per node, on that node's region's probe interval, owning its probe
//!   connection ([`crate::probe::Prober`]); a forced probe (operator health check) or the proxy's
//!   fast signal (a connection error it saw) makes it probe at once;
//! - one *judge*, fed every observation in order, owning all judgement state (health per node,
//!   the lag tracker, the alert book). After each observation it publishes a new
//!   [`ClusterStatus`] and, when roles or health changed, a new [`ClusterView`]; it queues the
//!   probe sample and alert changes to the store (which never blocks it) and logs one line per
//!   state change.
//!
//! Until the failover machine takes over the choice, the primary is the node last observed
//! writable; the generation increases whenever that node changes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use meridian_config::Config;
use meridian_core::alerts::{
    Alert, AlertBook, AlertEvent, AlertKind, AlertPolicy, Severity, node_conditions,
};
use meridian_core::backoff::Backoff;
use meridian_core::health::{HealthPolicy, NodeHealth};
use meridian_core::lag::{Lag, LagTracker};
use meridian_core::observation::{Observation, ProbeError};
use meridian_core::status::{ClusterStatus, NodeState};
use meridian_core::topology::{ClusterView, Health, NodeId, NodeView, Role};
use meridian_tls::{ServerTlsSet, TlsSetupError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::credentials::Credentials;
use crate::probe::{ProbeTarget, Prober, wall_clock};
use crate::store::{AlertChange, AlertRecord, ProbeSample, Store};

/// Latency histogram buckets (upper bounds, seconds), for the metrics.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A fast signal from the proxy is not acted on more than once per node in this window: a
/// burst of failing connections is one event.
const FAST_SIGNAL_QUIET: Duration = Duration::from_millis(200);

/// How many primary positions the lag tracker keeps: minutes of history at one per second.
const LAG_HISTORY: usize = 600;

/// One node to watch.
#[derive(Debug, Clone)]
pub struct MonitoredNode {
    /// Identity (its index in the configuration).
    pub id: NodeId,
    /// Name.
    pub name: Arc<str>,
    /// Region.
    pub region: Arc<str>,
    /// Host.
    pub host: Arc<str>,
    /// Port.
    pub port: u16,
    /// Never promote it.
    pub no_failover: bool,
    /// Preference among equals.
    pub priority: i32,
    /// Its region's probe interval.
    pub probe_interval: Duration,
}

/// Everything the monitor needs.
#[derive(Debug, Clone)]
pub struct MonitorSettings {
    /// The nodes, in configuration order.
    pub nodes: Vec<MonitoredNode>,
    /// How probes log in.
    pub credentials: Credentials,
    /// TLS per region.
    pub tls: ServerTlsSet,
    /// One probe's time limit.
    pub probe_timeout: Duration,
    /// Reconnection schedule (its `then` is replaced by each node's probe interval).
    pub backoff: Backoff,
    /// Health and alert thresholds.
    pub policy: AlertPolicy,
}

impl MonitorSettings {
    /// The settings a configuration describes; `credentials` from [`Credentials::from_config`].
    pub fn from_config(
        config: &Config,
        credentials: Credentials,
    ) -> Result<MonitorSettings, TlsSetupError> {
        let monitor = &config.monitor;
        let nodes = config
            .regions
            .iter()
            .flat_map(|region| region.nodes.iter().map(move |node| (region, node)))
            .enumerate()
            .map(|(i, (region, node))| MonitoredNode {
                id: NodeId(i as u16),
                name: Arc::from(node.name.as_str()),
                region: Arc::from(region.name.as_str()),
                host: Arc::from(node.host.as_str()),
                port: node.port,
                no_failover: node.no_failover,
                priority: node.priority,
                probe_interval: region.probe_interval.unwrap_or(monitor.probe_interval),
            })
            .collect();
        Ok(MonitorSettings {
            nodes,
            credentials,
            tls: ServerTlsSet::from_config(config)?,
            probe_timeout: monitor.probe_timeout,
            backoff: Backoff {
                initial: monitor.reconnect_initial,
                max: monitor.reconnect_max,
                attempts: monitor.reconnect_attempts,
                then: monitor.probe_interval,
                jitter: 0.2,
            },
            policy: AlertPolicy {
                health: HealthPolicy {
                    slow_warning: monitor.slow_warning,
                    slow_critical: monitor.slow_critical,
                    failures_to_down: monitor.failures_to_down,
                    error_rate_warning: monitor.error_rate_warning,
                    error_rate_critical: monitor.error_rate_critical,
                    ..HealthPolicy::default()
                },
                lag_warning: monitor.lag_warning,
                lag_critical: monitor.lag_critical,
            },
        })
    }
}

/// Counters kept beside the status, for the metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MonitorCounters {
    /// Per node name: cumulative counts of probe latencies at or below each of
    /// [`LATENCY_BUCKETS`], then the count and sum of all.
    pub latency: BTreeMap<String, LatencyHistogram>,
    /// Alerts raised since start, by kind and severity.
    pub alerts_raised: BTreeMap<(AlertKind, Severity), u64>,
    /// Active alerts now.
    pub active_alerts: Vec<Alert>,
}

/// A latency histogram with the fixed [`LATENCY_BUCKETS`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatencyHistogram {
    /// Cumulative count per bucket.
    pub buckets: [u64; LATENCY_BUCKETS.len()],
    /// Observations.
    pub count: u64,
    /// Sum of observations, seconds.
    pub sum: f64,
}

impl LatencyHistogram {
    fn observe(&mut self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        for (bucket, bound) in self.buckets.iter_mut().zip(LATENCY_BUCKETS) {
            if seconds <= bound {
                *bucket += 1;
            }
        }
        self.count += 1;
        self.sum += seconds;
    }
}

enum NodeCommand {
    /// Probe now and answer after the observation is judged.
    Probe(oneshot::Sender<()>),
    /// The proxy could not use the node: probe now if not done very recently.
    FastSignal,
}

struct Judged {
    observation: Observation,
    /// Answered once the observation is judged and published.
    reply: Option<oneshot::Sender<()>>,
}

/// The monitor's outputs and controls, cheap to clone.
#[derive(Debug, Clone)]
pub struct MonitorHandle {
    view: watch::Receiver<Arc<ClusterView>>,
    status: watch::Receiver<Arc<ClusterStatus>>,
    counters: watch::Receiver<Arc<MonitorCounters>>,
    nodes: Vec<mpsc::UnboundedSender<NodeCommand>>,
    fast: mpsc::UnboundedSender<NodeId>,
}

impl std::fmt::Debug for NodeCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeCommand::Probe(_) => "Probe",
            NodeCommand::FastSignal => "FastSignal",
        })
    }
}

impl MonitorHandle {
    /// The cluster view for routing.
    pub fn view(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view.clone()
    }

    /// The latest status.
    pub fn status(&self) -> Arc<ClusterStatus> {
        self.status.borrow().clone()
    }

    /// Follows the status as it changes.
    pub fn status_updates(&self) -> watch::Receiver<Arc<ClusterStatus>> {
        self.status.clone()
    }

    /// Counters and active alerts.
    pub fn counters(&self) -> Arc<MonitorCounters> {
        self.counters.borrow().clone()
    }

    /// The sender the proxy reports unusable nodes on.
    pub fn fast_signal(&self) -> mpsc::UnboundedSender<NodeId> {
        self.fast.clone()
    }

    /// Probes `node` (or every node) now, reconnecting if needed, and returns the status once
    /// the results are judged.
    pub async fn probe_now(&self, node: Option<NodeId>) -> Arc<ClusterStatus> {
        let mut replies = Vec::new();
        for (i, sender) in self.nodes.iter().enumerate() {
            if node.is_none_or(|n| usize::from(n.0) == i) {
                let (reply, answered) = oneshot::channel();
                if sender.send(NodeCommand::Probe(reply)).is_ok() {
                    replies.push(answered);
                }
            }
        }
        for answered in replies {
            let _ = answered.await;
        }
        self.status()
    }

    /// Waits until every node has been probed at least once.
    pub async fn first_round(&self) -> Arc<ClusterStatus> {
        let mut status = self.status.clone();
        let _ = status
            .wait_for(|s| s.nodes.iter().all(|n| n.last_probe_at.is_some()))
            .await;
        self.status()
    }
}

/// Starts the probe loops and the judge on the current runtime.
pub fn spawn(settings: MonitorSettings, store: Arc<dyn Store>) -> MonitorHandle {
    let status = initial_status(&settings);
    let view = view_of(&status);
    let (view_tx, view_rx) = watch::channel(Arc::new(view));
    let (status_tx, status_rx) = watch::channel(Arc::new(status.clone()));
    let judge = Judge::new(settings.clone(), status.clone(), store);
    // Alerts restored from the store are visible before the first probe.
    let (counters_tx, counters_rx) = watch::channel(Arc::new(judge.counters.clone()));
    let (observations_tx, observations_rx) = mpsc::unbounded_channel::<Judged>();
    let mut node_senders = Vec::new();
    for node in &settings.nodes {
        let (tx, rx) = mpsc::unbounded_channel();
        node_senders.push(tx);
        let prober = Prober::new(
            ProbeTarget {
                node: node.id,
                name: node.name.clone(),
                host: node.host.clone(),
                port: node.port,
                tls: settings.tls.for_region(&node.region).clone(),
            },
            settings.credentials.clone(),
            settings.probe_timeout,
            Backoff {
                then: node.probe_interval,
                ..settings.backoff
            },
        );
        tokio::spawn(probe_loop(
            prober,
            node.probe_interval,
            rx,
            observations_tx.clone(),
        ));
    }
    let (fast_tx, mut fast_rx) = mpsc::unbounded_channel::<NodeId>();
    let forward = node_senders.clone();
    tokio::spawn(async move {
        while let Some(node) = fast_rx.recv().await {
            if let Some(sender) = forward.get(usize::from(node.0)) {
                let _ = sender.send(NodeCommand::FastSignal);
            }
        }
    });
    tokio::spawn(judge.run(observations_rx, view_tx, status_tx, counters_tx));
    MonitorHandle {
        view: view_rx,
        status: status_rx,
        counters: counters_rx,
        nodes: node_senders,
        fast: fast_tx,
    }
}

async fn probe_loop(
    mut prober: Prober,
    interval: Duration,
    mut commands: mpsc::UnboundedReceiver<NodeCommand>,
    observations: mpsc::UnboundedSender<Judged>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_probe: Option<Instant> = None;
    loop {
        let (force, reply) = tokio::select! {
            _ = tick.tick() => (false, None),
            command = commands.recv() => match command {
                None => return,
                Some(NodeCommand::Probe(reply)) => (true, Some(reply)),
                Some(NodeCommand::FastSignal) => {
                    if last_probe.is_some_and(|at| at.elapsed() < FAST_SIGNAL_QUIET) {
                        continue;
                    }
                    prober.disconnect();
                    (true, None)
                }
            },
        };
        let outcome = prober.probe(force).await;
        last_probe = Some(Instant::now());
        let observation = Observation {
            node: prober.target().node,
            at: wall_clock(),
            outcome,
        };
        if observations.send(Judged { observation, reply }).is_err() {
            return;
        }
        if force {
            // A forced probe counts as this interval's.
            tick.reset();
        }
    }
}

/// All judgement state, owned by one task.
struct Judge {
    settings: MonitorSettings,
    status: ClusterStatus,
    health: Vec<NodeHealth>,
    /// The role each node was last observed in.
    roles: Vec<Role>,
    lag: LagTracker,
    alerts: AlertBook,
    counters: MonitorCounters,
    store: Arc<dyn Store>,
}

impl Judge {
    fn new(settings: MonitorSettings, status: ClusterStatus, store: Arc<dyn Store>) -> Judge {
        let mut alerts = AlertBook::new(store.next_alert_id().unwrap_or(1));
        match store.active_alerts() {
            Ok(active) => {
                let restored = active.iter().filter_map(alert_from_record).collect();
                alerts.restore(restored, |name| {
                    settings
                        .nodes
                        .iter()
                        .find(|n| &*n.name == name)
                        .map(|n| n.id)
                });
            }
            Err(e) => tracing::warn!("cannot restore the active alerts: {e}"),
        }
        let counters = MonitorCounters {
            active_alerts: alerts.active().cloned().collect(),
            ..MonitorCounters::default()
        };
        let nodes = settings.nodes.len();
        Judge {
            settings,
            status,
            health: (0..nodes).map(|_| NodeHealth::new()).collect(),
            roles: vec![Role::Unknown; nodes],
            lag: LagTracker::new(LAG_HISTORY),
            alerts,
            counters,
            store,
        }
    }

    async fn run(
        mut self,
        mut observations: mpsc::UnboundedReceiver<Judged>,
        view: watch::Sender<Arc<ClusterView>>,
        status: watch::Sender<Arc<ClusterStatus>>,
        counters: watch::Sender<Arc<MonitorCounters>>,
    ) {
        while let Some(Judged { observation, reply }) = observations.recv().await {
            self.judge(observation);
            let new_view = view_of(&self.status);
            view.send_if_modified(|current| {
                if **current == new_view {
                    false
                } else {
                    *current = Arc::new(new_view);
                    true
                }
            });
            let _ = status.send(Arc::new(self.status.clone()));
            let _ = counters.send(Arc::new(self.counters.clone()));
            if let Some(reply) = reply {
                let _ = reply.send(());
            }
        }
    }

    fn judge(&mut self, observation: Observation) {
        let index = usize::from(observation.node.0);
        let Some(node) = self.settings.nodes.get(index).cloned() else {
            return;
        };
        let before = self.status.nodes[index].clone();
        let health = self.health[index].observe(&self.settings.policy.health, &observation.outcome);
        if let Ok(status) = &observation.outcome {
            self.roles[index] = if status.in_recovery {
                Role::Replica
            } else {
                Role::Primary
            };
        }
        self.choose_primary();
        if self.status.primary == Some(node.id)
            && let Ok(status) = &observation.outcome
            && let Some(lsn) = status.current_lsn
        {
            self.lag.record_primary(observation.at, lsn);
        }
        // Alert severity follows the role the node last showed: a primary that stops
        // answering is a primary down, even once it no longer counts as the primary.
        let is_primary = self.roles[index] == Role::Primary;
        let lag: Option<Lag> = match &observation.outcome {
            Ok(status) if status.in_recovery => status
                .replay_lsn
                .and_then(|replayed| self.lag.lag(replayed, observation.at)),
            Ok(_) => None,
            // A replica that does not answer keeps its last known lag.
            Err(_) => before.lag,
        };

        let state = &mut self.status.nodes[index];
        state.role = self.roles[index];
        state.health = health;
        state.last_probe_at = Some(observation.at);
        state.probes += 1;
        state.consecutive_failures = self.health[index].consecutive_failures();
        state.error_rate = self.health[index].error_rate();
        state.lag = lag;
        match &observation.outcome {
            Ok(status) => {
                state.latency = Some(status.latency);
                state.timeline = status.timeline;
                state.lsn = status.current_lsn.or(status.replay_lsn);
                state.receive_lsn = status.receive_lsn;
                state.wal_receiver = status.wal_receiver.as_ref().and_then(|w| w.status.clone());
                state.upstream = status.wal_receiver.as_ref().and_then(|w| {
                    match (&w.sender_host, w.sender_port) {
                        (Some(host), Some(port)) => Some(format!("{host}:{port}")),
                        _ => None,
                    }
                });
                state.connections = status.connections;
                state.max_connections = status.max_connections;
                state.last_error = None;
                self.counters
                    .latency
                    .entry(node.name.to_string())
                    .or_default()
                    .observe(status.latency);
            }
            Err(error) => {
                state.probe_failures += 1;
                state.last_error = Some(describe(error));
            }
        }
        let after = state.clone();
        log_changes(&before, &after);

        let conditions = node_conditions(
            &self.settings.policy,
            node.id,
            is_primary,
            &self.health[index],
            lag,
        );
        let events = self.alerts.reconcile_node(
            node.id,
            &node.name,
            &node.region,
            &conditions,
            observation.at,
        );
        for event in events {
            self.on_alert(event);
        }
        self.counters.active_alerts = self.alerts.active().cloned().collect();
        self.store.record_probe(ProbeSample {
            node: node.name.to_string(),
            region: node.region.to_string(),
            at_ms: observation.at.0,
            ok: observation.outcome.is_ok(),
            latency_ms: observation
                .outcome
                .as_ref()
                .ok()
                .map(|s| s.latency.as_secs_f64() * 1000.0),
            role: match after.role {
                Role::Primary => Some("primary".into()),
                Role::Replica => Some("replica".into()),
                Role::Unknown => None,
            },
            health: health_str(after.health).into(),
            lag_bytes: lag.map(|l| l.bytes),
            lag_seconds: lag.map(|l| l.seconds.as_secs_f64()),
            error: after.last_error.clone(),
        });
    }

    /// The primary is the node last observed writable and not judged down. Two writable nodes
    /// (a promotion Meridian did not make) keep the current primary while it stays writable.
    fn choose_primary(&mut self) {
        let writable: Vec<usize> = (0..self.roles.len())
            .filter(|&i| self.roles[i] == Role::Primary && self.health[i].health() != Health::Down)
            .collect();
        let current = self.status.primary.map(|id| usize::from(id.0));
        let chosen = match current {
            Some(i) if writable.contains(&i) => Some(i),
            _ => match writable.as_slice() {
                [only] => Some(*only),
                [] => None,
                several => {
                    // The one on the newest timeline was promoted last.
                    several
                        .iter()
                        .copied()
                        .max_by_key(|&i| self.status.nodes[i].timeline.unwrap_or(0))
                }
            },
        };
        let chosen = chosen.map(|i| self.settings.nodes[i].id);
        if chosen != self.status.primary {
            if let Some(id) = chosen {
                self.status.generation += 1;
                self.lag.reset();
                let node = &self.settings.nodes[usize::from(id.0)].name;
                let generation = self.status.generation;
                if generation == 1 {
                    tracing::info!(node = %node, generation, "primary observed");
                } else {
                    tracing::warn!(node = %node, generation, "primary changed");
                }
            } else {
                tracing::warn!("no node is observed as a writable primary");
            }
            self.status.primary = chosen;
        }
    }

    fn on_alert(&mut self, event: AlertEvent) {
        let alert = event.alert();
        let node = alert.node.as_deref().unwrap_or("-");
        match &event {
            AlertEvent::Raised(_) => {
                *self
                    .counters
                    .alerts_raised
                    .entry((alert.kind, alert.severity))
                    .or_default() += 1;
                tracing::warn!(
                    alert = alert.kind.as_str(),
                    severity = alert.severity.as_str(),
                    node,
                    value = alert.value,
                    threshold = alert.threshold,
                    "alert raised: {}",
                    alert.message
                );
            }
            AlertEvent::Updated(_) => tracing::info!(
                alert = alert.kind.as_str(),
                severity = alert.severity.as_str(),
                node,
                value = alert.value,
                "alert updated: {}",
                alert.message
            ),
            AlertEvent::Resolved(_) => {
                tracing::info!(alert = alert.kind.as_str(), node, "alert resolved")
            }
        }
        let record = record_from_alert(alert);
        self.store.record_alert(match event {
            AlertEvent::Raised(_) => AlertChange::Raised(record),
            AlertEvent::Updated(_) => AlertChange::Updated(record),
            AlertEvent::Resolved(_) => AlertChange::Resolved(record),
        });
    }
}

fn log_changes(before: &NodeState, after: &NodeState) {
    if before.health != after.health {
        let (from, to) = (health_str(before.health), health_str(after.health));
        if after.health == Health::Healthy {
            tracing::info!(node = %after.name, region = %after.region, from, to, "node health changed");
        } else {
            let error = after.last_error.as_deref().unwrap_or("");
            tracing::warn!(node = %after.name, region = %after.region, from, to, error, "node health changed");
        }
    }
    if before.role != after.role && after.role != Role::Unknown {
        tracing::info!(node = %after.name, region = %after.region, role = role_str(after.role), "node role observed");
    }
}

fn initial_status(settings: &MonitorSettings) -> ClusterStatus {
    ClusterStatus {
        generation: 0,
        primary: None,
        nodes: settings
            .nodes
            .iter()
            .map(|node| NodeState {
                id: node.id,
                name: node.name.clone(),
                region: node.region.clone(),
                host: node.host.clone(),
                port: node.port,
                no_failover: node.no_failover,
                priority: node.priority,
                role: Role::Unknown,
                health: Health::Unknown,
                latency: None,
                lag: None,
                timeline: None,
                lsn: None,
                receive_lsn: None,
                wal_receiver: None,
                upstream: None,
                connections: 0,
                max_connections: 0,
                consecutive_failures: 0,
                error_rate: 0.0,
                last_error: None,
                last_probe_at: None,
                probes: 0,
                probe_failures: 0,
            })
            .collect(),
    }
}

/// The routing view of a status.
pub fn view_of(status: &ClusterStatus) -> ClusterView {
    ClusterView {
        generation: status.generation,
        primary: status.primary,
        paused: false,
        nodes: status
            .nodes
            .iter()
            .map(|n| NodeView {
                id: n.id,
                name: n.name.clone(),
                region: n.region.clone(),
                host: n.host.clone(),
                port: n.port,
                role: n.role,
                health: n.health,
            })
            .collect(),
    }
}

fn describe(error: &ProbeError) -> String {
    match error {
        ProbeError::Refused => "connection refused or reset".to_owned(),
        ProbeError::Timeout => "no answer within the probe timeout".to_owned(),
        ProbeError::Rejected { sqlstate } => format!("refused by the server (SQLSTATE {sqlstate})"),
        ProbeError::Other(text) => text.clone(),
    }
}

/// The lower-case name of a health state, as logs, the store and the API spell it.
pub fn health_str(health: Health) -> &'static str {
    match health {
        Health::Healthy => "healthy",
        Health::Degraded => "degraded",
        Health::Down => "down",
        Health::Unknown => "unknown",
    }
}

/// The lower-case name of a role.
pub fn role_str(role: Role) -> &'static str {
    match role {
        Role::Primary => "primary",
        Role::Replica => "replica",
        Role::Unknown => "unknown",
    }
}

fn record_from_alert(alert: &Alert) -> AlertRecord {
    AlertRecord {
        id: alert.id,
        kind: alert.kind.as_str().to_owned(),
        node: alert.node.clone(),
        region: alert.region.clone(),
        severity: alert.severity.as_str().to_owned(),
        value: alert.value,
        threshold: alert.threshold,
        message: alert.message.clone(),
        raised_at_ms: alert.raised_at.0,
        updated_at_ms: alert.updated_at.0,
        resolved_at_ms: alert.resolved_at.map(|t| t.0),
    }
}

fn alert_from_record(record: &AlertRecord) -> Option<Alert> {
    use meridian_core::observation::Timestamp;
    Some(Alert {
        id: record.id,
        kind: record.kind.parse().ok()?,
        node: record.node.clone(),
        region: record.region.clone(),
        severity: record.severity.parse().ok()?,
        value: record.value,
        threshold: record.threshold,
        message: record.message.clone(),
        raised_at: Timestamp(record.raised_at_ms),
        updated_at: Timestamp(record.updated_at_ms),
        resolved_at: record.resolved_at_ms.map(Timestamp),
    })
}
