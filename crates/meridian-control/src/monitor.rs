//! The monitor: probes every node, judges its health, raises alerts, and publishes the cluster
//! view the proxy routes by and the status the operator interface shows.
//!
//! Two kinds of task:
//! - one *probe loop* per node, on that node's region's probe interval, owning its probe
//!   connection ([`crate::probe::Prober`]); a forced probe (operator health check), an
//!   operator's reconnect or the proxy's fast signal (a connection error it saw) makes it probe
//!   at once, the last two on a new connection (the old one is dropped first);
//! - one *judge*, fed every observation in order, owning all judgement state (health per node,
//!   the lag tracker, the alert book). After each observation it publishes a new
//!   [`ClusterStatus`] and, when roles or health changed, a new [`ClusterView`]; it queues the
//!   probe sample and alert changes to the store (which never blocks it) and logs one line per
//!   state change.
//!
//! The judge also drives the failover machine ([`meridian_core::failover`]): it feeds it every
//! observation, the proxy's fast signals, operator commands, the outcomes of the steps it asked
//! for and a tick, and carries out its actions: probes, the published primary and pause (the
//! view), steps run by the [`Executor`] on their own tasks, run records to the store, alerts.
//! The primary and the generation in the view are the machine's, never a guess.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use meridian_config::Config;
use meridian_core::alerts::{
    Alert, AlertBook, AlertEvent, AlertKind, AlertPolicy, Condition, Severity, node_conditions,
};
use meridian_core::backoff::Backoff;
use meridian_core::failover::{
    Action, Command, Failover, FailoverPolicy, Input, Level, NodeSpec, RunOutcome, RunRecord,
    StepId, StepOutput,
};
use meridian_core::health::{HealthPolicy, NodeHealth};
use meridian_core::lag::{Lag, LagTracker};
use meridian_core::observation::{Observation, ProbeError, Timestamp};
use meridian_core::status::{ClusterStatus, NodeState};
use meridian_core::topology::{ClusterView, Health, NodeId, NodeView, ProxySignal, Role};
use meridian_tls::{ServerTlsSet, TlsSetupError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::coordination::{Gate, Ticket};
use crate::credentials::Credentials;
use crate::executor::{ExecNode, Executor};
use crate::probe::{ProbeTarget, Prober, wall_clock};
use crate::store::{AlertChange, AlertRecord, FailoverRecord, Phase, ProbeSample, Store};

/// Latency histogram buckets (upper bounds, seconds), for the metrics.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// A fast signal from the proxy is not acted on more than once per node in this window: a
/// burst of failing connections is one event.
const FAST_SIGNAL_QUIET: Duration = Duration::from_millis(200);

/// How many primary positions the lag tracker keeps: minutes of history at one per second.
const LAG_HISTORY: usize = 600;

/// How many recent run records the handle keeps for the operator interface.
const RECENT_RUNS: usize = 20;

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
    /// Its region's priority.
    pub region_priority: i32,
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
    /// Detection and promotion rules.
    pub failover: FailoverPolicy,
    /// Carries out failover steps on the servers.
    pub executor: Executor,
    /// With several instances: the failover barrier every step waits for after a paused
    /// view (see [`crate::coordination`]); `None` for a single instance.
    pub gate: Option<Gate>,
}

impl MonitorSettings {
    /// The settings a configuration describes; `credentials` from [`Credentials::from_config`].
    pub fn from_config(
        config: &Config,
        credentials: Credentials,
    ) -> Result<MonitorSettings, TlsSetupError> {
        let monitor = &config.monitor;
        let tls = ServerTlsSet::from_config(config)?;
        let nodes: Vec<MonitoredNode> = config
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
                region_priority: region.priority,
                probe_interval: region.probe_interval.unwrap_or(monitor.probe_interval),
            })
            .collect();
        let failover = &config.failover;
        let exec_nodes = config
            .regions
            .iter()
            .flat_map(|region| region.nodes.iter().map(move |node| (region, node)))
            .zip(&nodes)
            .map(|((region, node), monitored)| ExecNode {
                id: monitored.id,
                name: monitored.name.clone(),
                host: monitored.host.clone(),
                port: monitored.port,
                tls: tls.for_region(&region.name).clone(),
                data_dir: node.data_dir.clone(),
                step_timeout: region.failover_timeout.unwrap_or(failover.step_timeout),
            })
            .collect::<Vec<_>>();
        // The machine's own step limit is a backstop behind the executor's (per region, with
        // a precise message): the longest of them and a second.
        let longest_step = exec_nodes
            .iter()
            .map(|n| n.step_timeout)
            .max()
            .unwrap_or(failover.step_timeout);
        let health = HealthPolicy {
            slow_warning: monitor.slow_warning,
            slow_critical: monitor.slow_critical,
            failures_to_down: monitor.failures_to_down,
            error_rate_warning: monitor.error_rate_warning,
            error_rate_critical: monitor.error_rate_critical,
            ..HealthPolicy::default()
        };
        Ok(MonitorSettings {
            nodes,
            failover: FailoverPolicy {
                automatic: failover.automatic,
                failure_threshold: failover.failure_threshold,
                confirm_interval: failover.confirm_interval,
                receiver_timeout: failover.receiver_timeout,
                max_lag: failover.max_lag_on_failover,
                min_interval: failover.min_interval,
                step_timeout: longest_step + Duration::from_secs(1),
                health: health.clone(),
            },
            executor: Executor {
                nodes: exec_nodes,
                credentials: credentials.clone(),
                pg_bin: failover.pg_bin.clone(),
                rejoin_command: failover.rejoin_command.clone(),
                connect_timeout: monitor.probe_timeout,
            },
            credentials,
            tls,
            probe_timeout: monitor.probe_timeout,
            backoff: Backoff {
                initial: monitor.reconnect_initial,
                max: monitor.reconnect_max,
                attempts: monitor.reconnect_attempts,
                then: monitor.probe_interval,
                jitter: 0.2,
            },
            policy: AlertPolicy {
                health,
                lag_warning: monitor.lag_warning,
                lag_critical: monitor.lag_critical,
            },
            gate: None,
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
    /// Failovers and switchovers finished since start, by kind and outcome (`completed`,
    /// `failed`).
    pub runs_finished: BTreeMap<(String, String), u64>,
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
    /// Probe now and answer after the observation is judged; with `reconnect`, on a new
    /// connection (the current one is dropped first).
    Probe {
        reply: oneshot::Sender<()>,
        reconnect: bool,
    },
    /// The failover machine wants a fresh observation: probe now, reconnecting if needed.
    Soon,
    /// The proxy could not use the node: probe now if not done very recently.
    FastSignal,
}

struct Judged {
    observation: Observation,
    /// Answered once the observation is judged and published.
    replies: Vec<oneshot::Sender<()>>,
}

/// What an operator's command started.
pub type CommandReply = Result<Option<u64>, String>;

type CommandRequest = (Command, oneshot::Sender<CommandReply>);

/// A step's outcome on its way back to the machine.
type StepResult = (StepId, Result<StepOutput, String>);

/// The monitor's outputs and controls, cheap to clone.
#[derive(Debug, Clone)]
pub struct MonitorHandle {
    view: watch::Receiver<Arc<ClusterView>>,
    status: watch::Receiver<Arc<ClusterStatus>>,
    counters: watch::Receiver<Arc<MonitorCounters>>,
    runs: watch::Receiver<Arc<Vec<FailoverRecord>>>,
    nodes: Vec<mpsc::UnboundedSender<NodeCommand>>,
    fast: mpsc::UnboundedSender<ProxySignal>,
    commands: mpsc::UnboundedSender<CommandRequest>,
    coordination: mpsc::UnboundedSender<Coordinating>,
}

/// What the coordinator tells the monitor.
#[derive(Debug)]
enum Coordinating {
    /// An input of the failover machine (leadership, continuation).
    Machine(Input),
    /// Raise or resolve the `coordination_lost` alert, or the archive watch's alerts.
    Alert(Vec<Action>),
}

impl std::fmt::Debug for NodeCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeCommand::Probe {
                reconnect: false, ..
            } => "Probe",
            NodeCommand::Probe {
                reconnect: true, ..
            } => "Probe (reconnect)",
            NodeCommand::Soon => "Soon",
            NodeCommand::FastSignal => "FastSignal",
        })
    }
}

impl MonitorHandle {
    /// Whether this instance leads (several instances through etcd): only a leading
    /// monitor fails over and takes commands. A single instance always leads.
    pub fn set_leadership(&self, leads: bool) {
        let _ = self
            .coordination
            .send(Coordinating::Machine(Input::Leadership(leads)));
    }

    /// Raises the `coordination_lost` alert with `why`, or resolves it (`None`).
    pub fn coordination_lost(&self, why: Option<String>) {
        let action = match why {
            Some(why) => {
                Condition::failover(AlertKind::CoordinationLost, None, 0.0, why).map(Action::Raise)
            }
            None => Some(Action::Resolve(AlertKind::CoordinationLost, None)),
        };
        let _ = self
            .coordination
            .send(Coordinating::Alert(action.into_iter().collect()));
    }

    /// Raises, updates or resolves the `archiving_*` alerts as the archive watch judged them
    /// (see [`crate::archiving`]); the alert book stores and counts them like any other.
    pub fn archiving_alerts(&self, changes: Vec<meridian_core::archiving::AlertChange>) {
        use meridian_core::archiving::AlertChange;
        let actions = changes
            .into_iter()
            .map(|change| match change {
                AlertChange::Raise(condition) => Action::Raise(condition),
                AlertChange::Resolve(kind, node) => Action::Resolve(kind, node),
            })
            .collect();
        let _ = self.coordination.send(Coordinating::Alert(actions));
    }

    /// Another instance reached `node` at `at` (its wall clock): a primary some observer
    /// still reaches is not failed over.
    pub fn peer_sighting(&self, node: NodeId, at: Timestamp) {
        let _ = self
            .coordination
            .send(Coordinating::Machine(Input::PeerSighting { node, at }));
    }

    /// Continues from the view the previous leader published (on becoming the leader).
    pub fn continue_from(&self, generation: u64, primary: Option<NodeId>) {
        let _ = self
            .coordination
            .send(Coordinating::Machine(Input::Continue {
                generation,
                primary,
            }));
    }

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

    /// The sender the proxy reports unusable nodes and first writes on.
    pub fn fast_signal(&self) -> mpsc::UnboundedSender<ProxySignal> {
        self.fast.clone()
    }

    /// The most recent failover and switchover records, newest first, as they progress.
    pub fn recent_runs(&self) -> Arc<Vec<FailoverRecord>> {
        self.runs.borrow().clone()
    }

    /// Probes `node` (or every node) now, reconnecting if needed, and returns the status once
    /// the results are judged.
    pub async fn probe_now(&self, node: Option<NodeId>) -> Arc<ClusterStatus> {
        self.probe(|id| node.is_none_or(|n| n == id), false).await
    }

    /// Rebuilds the probe connections of `nodes`: each one's probe loop drops its connection
    /// and probes at once on a new one, whatever its reconnection backoff says. Returns the
    /// status once the results are judged. Nodes the monitor does not know are ignored.
    pub async fn reconnect(&self, nodes: &[NodeId]) -> Arc<ClusterStatus> {
        self.probe(|id| nodes.contains(&id), true).await
    }

    /// Asks the probe loop of every node `wanted` selects for a probe now and waits until
    /// each observation is judged.
    async fn probe(&self, wanted: impl Fn(NodeId) -> bool, reconnect: bool) -> Arc<ClusterStatus> {
        let mut replies = Vec::new();
        for (i, sender) in self.nodes.iter().enumerate() {
            let Ok(id) = u16::try_from(i).map(NodeId) else {
                break;
            };
            if wanted(id) {
                let (reply, answered) = oneshot::channel();
                if sender.send(NodeCommand::Probe { reply, reconnect }).is_ok() {
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

    /// Hands an operator's command to the failover machine. `Ok(Some(id))`: run `id` started;
    /// `Ok(None)`: done at once (resuming automatic failover); `Err`: refused, with why.
    pub async fn command(&self, command: Command) -> CommandReply {
        let (reply, answered) = oneshot::channel();
        self.commands
            .send((command, reply))
            .map_err(|_| "the monitor has stopped".to_owned())?;
        answered
            .await
            .map_err(|_| "the monitor has stopped".to_owned())?
    }

    /// Waits until run `id` has finished, up to `limit`; returns its last record.
    pub async fn wait_run(&self, id: u64, limit: Duration) -> Option<FailoverRecord> {
        let mut runs = self.runs.clone();
        let finished = |runs: &Arc<Vec<FailoverRecord>>| {
            runs.iter()
                .any(|r| r.id == id && r.outcome != "in_progress")
        };
        let _ = tokio::time::timeout(limit, runs.wait_for(finished)).await;
        let runs = self.runs.borrow().clone();
        runs.iter().find(|r| r.id == id).cloned()
    }
}

/// Starts the probe loops and the judge on the current runtime.
pub fn spawn(settings: MonitorSettings, store: Arc<dyn Store>) -> MonitorHandle {
    let status = initial_status(&settings);
    let view = view_of(&status);
    let (view_tx, view_rx) = watch::channel(Arc::new(view));
    let (status_tx, status_rx) = watch::channel(Arc::new(status.clone()));
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
    let judge = Judge::new(settings, status, store, node_senders.clone());
    // Alerts and runs restored from the store are visible before the first probe.
    let (counters_tx, counters_rx) = watch::channel(Arc::new(judge.counters.clone()));
    let (runs_tx, runs_rx) = watch::channel(Arc::new(judge.runs.clone()));
    let (fast_tx, fast_rx) = mpsc::unbounded_channel::<ProxySignal>();
    let (commands_tx, commands_rx) = mpsc::unbounded_channel::<CommandRequest>();
    let (coordination_tx, coordination_rx) = mpsc::unbounded_channel::<Coordinating>();
    tokio::spawn(judge.run(
        Inputs {
            observations: observations_rx,
            fast: fast_rx,
            commands: commands_rx,
            coordination: coordination_rx,
        },
        Outputs {
            view: view_tx,
            status: status_tx,
            counters: counters_tx,
            runs: runs_tx,
        },
    ));
    MonitorHandle {
        view: view_rx,
        status: status_rx,
        counters: counters_rx,
        runs: runs_rx,
        nodes: node_senders,
        fast: fast_tx,
        commands: commands_tx,
        coordination: coordination_tx,
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
        let mut replies = Vec::new();
        let force = tokio::select! {
            _ = tick.tick() => false,
            command = commands.recv() => match command {
                None => return,
                Some(NodeCommand::Probe { reply, reconnect }) => {
                    take_request(&mut prober, &mut replies, reply, reconnect);
                    true
                }
                Some(NodeCommand::Soon) => true,
                Some(NodeCommand::FastSignal) => {
                    if last_probe.is_some_and(|at| at.elapsed() < FAST_SIGNAL_QUIET) {
                        continue;
                    }
                    prober.disconnect();
                    true
                }
            },
        };
        // Requests that arrived meanwhile are served by this probe: a slow node does not
        // build a queue of probes.
        while let Ok(command) = commands.try_recv() {
            if let NodeCommand::Probe { reply, reconnect } = command {
                take_request(&mut prober, &mut replies, reply, reconnect);
            }
        }
        let outcome = prober.probe(force).await;
        last_probe = Some(Instant::now());
        let observation = Observation {
            node: prober.target().node,
            at: wall_clock(),
            outcome,
        };
        if observations
            .send(Judged {
                observation,
                replies,
            })
            .is_err()
        {
            return;
        }
        if force {
            // A forced probe counts as this interval's.
            tick.reset();
        }
    }
}

/// Takes an operator's probe request: its reply waits for the coming probe, which runs on a new
/// connection when `reconnect` asks for one.
fn take_request(
    prober: &mut Prober,
    replies: &mut Vec<oneshot::Sender<()>>,
    reply: oneshot::Sender<()>,
    reconnect: bool,
) {
    if reconnect {
        prober.disconnect();
    }
    replies.push(reply);
}

struct Inputs {
    observations: mpsc::UnboundedReceiver<Judged>,
    fast: mpsc::UnboundedReceiver<ProxySignal>,
    commands: mpsc::UnboundedReceiver<CommandRequest>,
    /// Leadership changes, the view to continue from, the coordination alert.
    coordination: mpsc::UnboundedReceiver<Coordinating>,
}

struct Outputs {
    view: watch::Sender<Arc<ClusterView>>,
    status: watch::Sender<Arc<ClusterStatus>>,
    counters: watch::Sender<Arc<MonitorCounters>>,
    runs: watch::Sender<Arc<Vec<FailoverRecord>>>,
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
    machine: Failover,
    executor: Arc<Executor>,
    /// Each node's probe loop.
    probes: Vec<mpsc::UnboundedSender<NodeCommand>>,
    steps: (
        mpsc::UnboundedSender<StepResult>,
        mpsc::UnboundedReceiver<StepResult>,
    ),
    /// Recent run records, newest first.
    runs: Vec<FailoverRecord>,
    /// The barrier the steps of the current run wait for (coordinated instances only).
    ticket: Option<Ticket>,
}

impl Judge {
    fn new(
        settings: MonitorSettings,
        status: ClusterStatus,
        store: Arc<dyn Store>,
        probes: Vec<mpsc::UnboundedSender<NodeCommand>>,
    ) -> Judge {
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
        let runs = store.failover_history(RECENT_RUNS).unwrap_or_else(|e| {
            tracing::warn!("cannot read the failover history: {e}");
            Vec::new()
        });
        let next_run = store.next_failover_id().unwrap_or(1);
        let specs = settings
            .nodes
            .iter()
            .map(|n| NodeSpec {
                id: n.id,
                name: n.name.clone(),
                region: n.region.clone(),
                region_priority: n.region_priority,
                priority: n.priority,
                no_failover: n.no_failover,
                host: n.host.clone(),
                port: n.port,
            })
            .collect();
        let mut machine = Failover::new(settings.failover.clone(), specs, next_run);
        if settings.gate.is_some() {
            // One of several instances: it follows until etcd elects it.
            machine.handle(wall_clock(), Input::Leadership(false));
        }
        let nodes = settings.nodes.len();
        Judge {
            executor: Arc::new(settings.executor.clone()),
            settings,
            status,
            health: (0..nodes).map(|_| NodeHealth::new()).collect(),
            roles: vec![Role::Unknown; nodes],
            lag: LagTracker::new(LAG_HISTORY),
            alerts,
            counters,
            store,
            machine,
            probes,
            steps: mpsc::unbounded_channel(),
            runs,
            ticket: None,
        }
    }

    async fn run(mut self, mut inputs: Inputs, outputs: Outputs) {
        // The machine's clock: suspicion probes every confirm interval, step deadlines.
        let period = (self.settings.failover.confirm_interval / 4)
            .clamp(Duration::from_millis(10), Duration::from_millis(100));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let mut replies = Vec::new();
            tokio::select! {
                judged = inputs.observations.recv() => {
                    let Some(judged) = judged else { return };
                    replies = judged.replies;
                    let observation = judged.observation;
                    self.judge(&observation);
                    self.feed(Input::Observation(Box::new(observation)));
                }
                Some(signal) = inputs.fast.recv() => match signal {
                    ProxySignal::Unusable(node) => {
                        if let Some(probe) = self.probes.get(usize::from(node.0)) {
                            let _ = probe.send(NodeCommand::FastSignal);
                        }
                        self.feed(Input::FastSignal(node));
                    }
                    ProxySignal::WriteAccepted { node, generation } => {
                        self.feed(Input::WriteAccepted { node, generation });
                    }
                },
                Some((command, reply)) = inputs.commands.recv() => {
                    let answer = self.command(command);
                    let _ = reply.send(answer);
                }
                Some(event) = inputs.coordination.recv() => match event {
                    Coordinating::Machine(input) => self.feed(input),
                    Coordinating::Alert(actions) => self.apply(actions),
                },
                Some((step, result)) = self.steps.1.recv() => {
                    self.feed(Input::Outcome { step, result });
                }
                _ = tick.tick() => {
                    self.feed(Input::Tick);
                }
            }
            self.publish(&outputs);
            for reply in replies {
                let _ = reply.send(());
            }
        }
    }

    fn publish(&self, outputs: &Outputs) {
        let new_view = view_of(&self.status);
        outputs.view.send_if_modified(|current| {
            if **current == new_view {
                false
            } else {
                *current = Arc::new(new_view);
                true
            }
        });
        outputs.status.send_if_modified(|current| {
            if **current == self.status {
                false
            } else {
                *current = Arc::new(self.status.clone());
                true
            }
        });
        outputs.counters.send_if_modified(|current| {
            if **current == self.counters {
                false
            } else {
                *current = Arc::new(self.counters.clone());
                true
            }
        });
        outputs.runs.send_if_modified(|current| {
            if **current == self.runs {
                false
            } else {
                *current = Arc::new(self.runs.clone());
                true
            }
        });
    }

    /// An operator's command: the machine's answer is read from what it did.
    fn command(&mut self, command: Command) -> CommandReply {
        tracing::info!(?command, "operator command");
        let before = self.machine.state().running;
        let actions = self.machine.handle(wall_clock(), Input::Command(command));
        let refusal = actions.iter().rev().find_map(|a| match a {
            Action::Log(Level::Warn, text) => Some(text.clone()),
            _ => None,
        });
        let started = actions.iter().find_map(|a| match a {
            Action::Record(record) if Some(record.id) != before => Some(record.clone()),
            _ => None,
        });
        self.apply(actions);
        match started {
            Some(record) => match &record.outcome {
                RunOutcome::Failed(why) => Err(why.clone()),
                _ => Ok(Some(record.id)),
            },
            None => match refusal {
                Some(why) => Err(why),
                None => Ok(None),
            },
        }
    }

    fn feed(&mut self, input: Input) {
        let actions = self.machine.handle(wall_clock(), input);
        self.apply(actions);
    }

    fn apply(&mut self, actions: Vec<Action>) {
        let now = wall_clock();
        for action in actions {
            match action {
                Action::Probe(nodes) => {
                    for node in nodes {
                        if let Some(probe) = self.probes.get(usize::from(node.0)) {
                            let _ = probe.send(NodeCommand::Soon);
                        }
                    }
                }
                Action::Publish(published) => {
                    if published.primary != self.status.primary
                        || published.generation != self.status.generation
                    {
                        self.lag.reset();
                    }
                    // A primary the machine publishes was seen writable: by a probe, or by the
                    // promotion step, which checks pg_is_in_recovery() before it succeeds. Its
                    // role says so now, not at its next probe: the proxy routes writes only to a
                    // primary whose role is not replica.
                    if let Some(id) = published.primary {
                        let index = usize::from(id.0);
                        self.roles[index] = Role::Primary;
                        self.status.nodes[index].role = Role::Primary;
                    }
                    self.status.generation = published.generation;
                    self.status.primary = published.primary;
                    self.status.paused = published.paused;
                    // One barrier per pause: the run's later steps wait for the same one.
                    self.ticket = match (&self.settings.gate, published.paused) {
                        (Some(gate), true) => self.ticket.take().or_else(|| Some(gate.request())),
                        _ => None,
                    };
                    let primary = published
                        .primary
                        .map(|id| self.node_name(id))
                        .unwrap_or_else(|| "none".into());
                    tracing::info!(
                        generation = published.generation,
                        primary = %primary,
                        paused = published.paused,
                        "view published"
                    );
                }
                Action::Execute { step, work } => {
                    let node = self.node_name(work.node());
                    tracing::info!(step = step.0, node = %node, ?work, "failover step started");
                    let executor = self.executor.clone();
                    let outcomes = self.steps.0.clone();
                    let ticket = self.ticket.clone();
                    tokio::spawn(async move {
                        if let Some(ticket) = ticket {
                            // No proxy may still write to the old primary: wait for the
                            // barrier before touching the servers, and act only as leader.
                            if let Err(why) = ticket.wait().await {
                                tracing::warn!(step = step.0, node = %node, "failover step not run: {why}");
                                let _ = outcomes.send((step, Err(why)));
                                return;
                            }
                        }
                        let result = executor.run(work).await;
                        match &result {
                            Ok(output) => {
                                tracing::info!(step = step.0, node = %node, ?output, "failover step done")
                            }
                            Err(error) => {
                                tracing::warn!(step = step.0, node = %node, error = %error, "failover step failed")
                            }
                        }
                        let _ = outcomes.send((step, result));
                    });
                }
                Action::Record(record) => {
                    let record = self.failover_record(&record);
                    let was_finished = self
                        .runs
                        .iter()
                        .any(|r| r.id == record.id && r.outcome != "in_progress");
                    if record.outcome != "in_progress" && !was_finished {
                        let outcome = record.outcome.split(':').next().unwrap_or_default();
                        *self
                            .counters
                            .runs_finished
                            .entry((record.kind.clone(), outcome.to_owned()))
                            .or_default() += 1;
                    }
                    self.store.record_failover(record.clone());
                    self.runs.retain(|r| r.id != record.id);
                    self.runs.insert(0, record);
                    self.runs.truncate(RECENT_RUNS);
                }
                Action::Raise(condition) => {
                    let node = condition.node.map(|id| self.node_name(id));
                    let region = condition
                        .node
                        .and_then(|id| self.settings.nodes.get(usize::from(id.0)))
                        .map(|n| n.region.clone());
                    let event =
                        self.alerts
                            .raise(condition, node.as_deref(), region.as_deref(), now);
                    self.on_alert(event);
                }
                Action::Resolve(kind, node) => {
                    if let Some(event) = self.alerts.resolve(kind, node, now) {
                        self.on_alert(event);
                    }
                }
                Action::Log(Level::Info, text) => tracing::info!("{text}"),
                Action::Log(Level::Warn, text) => tracing::warn!("{text}"),
            }
        }
        self.counters.active_alerts = self.alerts.active().cloned().collect();
        let state = self.machine.state();
        for node in &mut self.status.nodes {
            node.needs_rejoin = state.needs_rejoin.contains(&node.id);
        }
        self.status.failover = state;
    }

    fn node_name(&self, id: NodeId) -> Arc<str> {
        self.settings
            .nodes
            .get(usize::from(id.0))
            .map(|n| n.name.clone())
            .unwrap_or_else(|| Arc::from(id.to_string()))
    }

    fn failover_record(&self, record: &RunRecord) -> FailoverRecord {
        FailoverRecord {
            id: record.id,
            kind: record.kind.as_str().to_owned(),
            reason: record.reason.clone(),
            old_primary: record.old_primary.map(|id| self.node_name(id).to_string()),
            new_primary: record.new_primary.map(|id| self.node_name(id).to_string()),
            generation: record.generation,
            started_at_ms: record.started_at.0,
            finished_at_ms: record.finished_at.map(|t| t.0),
            outcome: match &record.outcome {
                RunOutcome::InProgress => "in_progress".to_owned(),
                RunOutcome::Completed => "completed".to_owned(),
                RunOutcome::Failed(why) => format!("failed: {why}"),
            },
            phases: record
                .phases
                .iter()
                .map(|p| Phase {
                    name: p.name.clone(),
                    started_at_ms: p.started_at.0,
                    finished_at_ms: p.finished_at.0,
                    outcome: p.outcome.clone(),
                })
                .collect(),
            ranking: record.ranking.clone(),
        }
    }

    fn judge(&mut self, observation: &Observation) {
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
                // Kept from the last probe that opened a connection.
                if status.connect_latency.is_some() {
                    state.connect_latency = status.connect_latency;
                }
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
            connect_ms: observation
                .outcome
                .as_ref()
                .ok()
                .and_then(|s| s.connect_latency)
                .map(|l| l.as_secs_f64() * 1000.0),
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
        paused: false,
        failover: Default::default(),
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
                connect_latency: None,
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
                needs_rejoin: false,
            })
            .collect(),
    }
}

/// The routing view of a status.
pub fn view_of(status: &ClusterStatus) -> ClusterView {
    ClusterView {
        generation: status.generation,
        primary: status.primary,
        paused: status.paused,
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
                // A node awaiting rejoin serves nothing: an old primary writable on its own
                // timeline, or a replica holding WAL the primary's timeline lacks (it could
                // answer reads with a commit that was never acknowledged).
                health: if n.needs_rejoin {
                    Health::Down
                } else {
                    n.health
                },
                lag: n.lag,
                replayed: n.lsn.filter(|_| n.role == Role::Replica),
                latency: n.latency,
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
    health.as_str()
}

/// The lower-case name of a role.
pub fn role_str(role: Role) -> &'static str {
    role.as_str()
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
