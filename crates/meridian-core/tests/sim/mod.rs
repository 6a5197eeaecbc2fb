//! A simulated cluster that drives the failover machine in virtual time.
//!
//! [`Sim`] owns a [`Failover`] and a model of the servers it watches: each node has a role
//! (primary or replica), a timeline, WAL positions, an upstream it streams from and
//! `synchronous_standby_names`; each can be alive, dead (connections refused), hung (nothing
//! answers, open connections stay open) or partitioned from the monitor (the monitor's probes
//! and steps time out, but the other nodes still reach it). Time advances in ticks of
//! [`TICK`] ms. At each tick, in this order: scheduled faults apply; the primary writes WAL and
//! replicas streaming from a working upstream catch up (at once, or at their `throughput`);
//! steps that are due finish and their outcomes are fed back; probes that are due finish and
//! are fed as observations; scheduled operator commands are fed; probes start (every node every
//! [`PROBE_INTERVAL`], and every node the machine asked for with `Action::Probe` since the last
//! tick); `Input::Tick` is fed.
//!
//! Probes report what the control plane's probe reports (`crates/meridian-control/src/probe.rs`):
//! a dead node refuses at once, a hung or partitioned one times out after [`PROBE_TIMEOUT`]; a
//! live one shows `pg_is_in_recovery()`, its positions, its WAL receiver (sender host and port,
//! age of the last message by its own clock) and the replicas streaming from it with their
//! `sync_state` as PostgreSQL derives it from `synchronous_standby_names` (docs, 20.6.2).
//! Steps are carried out after a short delay when the node is reachable; they fail at once
//! against a dead node and after [`CONNECT_TIMEOUT`] against an unreachable one (unless it
//! answers again before then: the connection attempt then goes through). A step may be
//! given a fault: fail without effect, or take effect and lose the reply.
//!
//! The sim checks the machine's safety promises as each action comes out and keeps what it
//! found in [`Sim::violations`]: the published primary is a writable node of the simulation and
//! never one that was replaced (until it was turned into a replica); generations never go down
//! and name one node each; no promotion while the old primary is reachable, writable, unfenced
//! and was seen so by the machine; one run at a time; no automatic promotion after a failed one
//! until an operator acts; no automatic failover while a reachable replica receives WAL from the
//! primary; automatic failovers `min_interval` apart; a switchover never promotes a node that
//! lacks the fenced primary's WAL.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use meridian_core::Lsn;
use meridian_core::alerts::{AlertKind, Condition};
use meridian_core::failover::{
    Action, Command, Failover, FailoverPolicy, Input, NodeSpec, Published, RunKind, RunOutcome,
    RunRecord, StepId, StepOutput, Work,
};
use meridian_core::observation::{
    Downstream, NodeStatus, Observation, ProbeError, Timestamp, WalReceiver,
};
use meridian_core::topology::NodeId;

/// One step of virtual time, in milliseconds.
pub const TICK: u64 = 100;
/// Every node is probed this often (the monitor's `probe_interval`).
pub const PROBE_INTERVAL: u64 = 1_000;
/// A probe of a node that does not answer fails after this long.
pub const PROBE_TIMEOUT: u64 = 1_000;
/// A step against a node that does not answer fails after this long.
pub const CONNECT_TIMEOUT: u64 = 2_000;
/// A replica gives up a silent stream after this long (`wal_receiver_timeout`, default 60 s).
pub const WAL_RECEIVER_TIMEOUT: u64 = 60_000;
/// The primaries' `wal_sender_timeout`.
pub const WAL_SENDER_TIMEOUT: Duration = Duration::from_secs(5);
/// WAL a writable primary produces per tick (client writes and the monitor's heartbeat).
pub const WRITES_PER_TICK: u64 = 1_000;
/// A `WaitReplay` step gives up after this long.
pub const REPLAY_DEADLINE: u64 = 10_000;
/// How long a replica must have streamed, reachable, from the primary to count as proof that
/// the primary lives (a few of the machine's confirmation probes).
pub const WITNESS: u64 = 1_000;
/// Where every node's WAL starts.
pub const START_LSN: u64 = 0x100_0000;
/// The port of every node (hosts differ).
pub const PORT: u16 = 5432;

/// A node as configured for a simulation.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Region name.
    pub region: &'static str,
    /// Region priority.
    pub region_priority: i32,
    /// Node priority.
    pub priority: i32,
    /// Never promote.
    pub no_failover: bool,
    /// Probe latency.
    pub latency: Duration,
    /// WAL bytes it can receive per tick; `None`: it keeps up at once.
    pub throughput: Option<u64>,
    /// The node it streams from at the start; `None` for the initial primary.
    pub upstream: Option<u16>,
}

/// A node of `region` with default settings; the first node without [`NodeConfig::from`] is
/// the initial primary.
pub fn node(region: &'static str, region_priority: i32) -> NodeConfig {
    NodeConfig {
        region,
        region_priority,
        priority: 0,
        no_failover: false,
        latency: Duration::from_millis(2),
        throughput: None,
        upstream: None,
    }
}

impl NodeConfig {
    /// Streams from `upstream` at the start.
    pub fn from(mut self, upstream: u16) -> Self {
        self.upstream = Some(upstream);
        self
    }

    /// Node priority.
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Probe latency.
    pub fn latency_ms(mut self, ms: u64) -> Self {
        self.latency = Duration::from_millis(ms);
        self
    }

    /// Receives at most this many bytes per tick.
    pub fn throughput(mut self, bytes_per_tick: u64) -> Self {
        self.throughput = Some(bytes_per_tick);
        self
    }

    /// Configured `no_failover`.
    pub fn no_failover(mut self) -> Self {
        self.no_failover = true;
        self
    }
}

/// A cluster to simulate.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The machine's policy.
    pub policy: FailoverPolicy,
    /// The nodes; node `i` is `NodeId(i)`, named `n{i}`.
    pub nodes: Vec<NodeConfig>,
    /// The initial primary's `synchronous_standby_names`.
    pub synchronous: String,
    /// Seeds the step delays.
    pub seed: u64,
}

impl ClusterConfig {
    /// These nodes, asynchronous, default policy.
    pub fn new(nodes: Vec<NodeConfig>) -> Self {
        ClusterConfig {
            policy: FailoverPolicy::default(),
            nodes,
            synchronous: String::new(),
            seed: 1,
        }
    }
}

/// Whether the monitor and the other nodes reach a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Works, reachable from everywhere.
    Alive,
    /// Not running: connections are refused.
    Dead,
    /// Running but stalled: nothing answers, open connections stay open.
    Hung,
    /// Works, but the monitor cannot reach it (the other nodes can).
    Partitioned,
}

impl Reach {
    /// The server works (writes WAL, serves its replicas).
    pub fn works(self) -> bool {
        matches!(self, Reach::Alive | Reach::Partitioned)
    }
}

/// What a node is, in truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimRole {
    /// Not in recovery.
    Primary,
    /// In recovery.
    Replica,
}

/// A replica's WAL receiver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receiver {
    /// The node it streams from.
    pub upstream: NodeId,
    /// When it last heard from it.
    pub last_message_at: u64,
    /// Messages flow (false: the connection is open but the sender is stalled).
    pub live: bool,
    /// Messages have flowed without a break since.
    pub live_since: u64,
}

/// One simulated server.
#[derive(Debug, Clone)]
pub struct SimNode {
    /// Identity.
    pub id: NodeId,
    /// Name (`n{i}`).
    pub name: Arc<str>,
    /// Host.
    pub host: Arc<str>,
    /// Configuration.
    pub config: NodeConfig,
    /// Reachability.
    pub reach: Reach,
    /// Since when.
    pub reach_since: u64,
    /// Role.
    pub role: SimRole,
    /// Refuses writes (`default_transaction_read_only`, sessions ended).
    pub fenced: bool,
    /// Current timeline.
    pub timeline: u32,
    /// A primary's insert position; a replica's received position.
    pub lsn: u64,
    /// A replica's replayed position.
    pub replayed: u64,
    /// The node a replica streams from (`primary_conninfo`).
    pub upstream: Option<NodeId>,
    /// The WAL receiver, when connected.
    pub receiver: Option<Receiver>,
    /// `synchronous_standby_names`.
    pub synchronous_standby_names: String,
    /// A primary's last acknowledged commit position.
    pub acknowledged: u64,
    /// Reachable, primary and unfenced without a break since.
    pub writable_since: Option<u64>,
}

/// Something that happens to the cluster from outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// The server stops; connections are refused.
    Kill(u16),
    /// The server stalls.
    Hang(u16),
    /// The monitor can no longer reach it.
    Partition(u16),
    /// Back to normal (a dead server restarts in the role it had).
    Revive(u16),
    /// The proxy reports it could not use the node.
    FastSignal(u16),
}

/// A scheduled event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A fault, at the start of its tick.
    Fault(Fault),
    /// An operator's command, after the tick's outcomes and probes.
    Command(Command),
}

/// What goes wrong with one step, by its ordinal (1 = the first step executed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepFault {
    /// It fails, having done nothing.
    Fail,
    /// It takes effect, but the reply is lost: reported as failed.
    LostReply,
}

/// A step as the machine asked for it.
#[derive(Debug, Clone)]
pub struct Executed {
    /// When.
    pub at: u64,
    /// Its id.
    pub step: StepId,
    /// What.
    pub work: Work,
}

/// A step's outcome as fed back.
#[derive(Debug, Clone)]
pub struct Finished {
    /// When.
    pub at: u64,
    /// Its id.
    pub step: StepId,
    /// How.
    pub result: Result<StepOutput, String>,
}

/// A promotion that took effect on a simulated node.
#[derive(Debug, Clone)]
pub struct Promotion {
    /// The node.
    pub node: NodeId,
    /// Its WAL position when promoted.
    pub lsn: u64,
    /// The run's old primary.
    pub old: Option<NodeId>,
    /// The old primary's last acknowledged commit.
    pub old_acknowledged: u64,
    /// Acknowledged bytes of the old primary the new one lacks.
    pub lost_acknowledged: u64,
    /// The old primary replicated synchronously.
    pub old_synchronous: bool,
}

/// A run as seen through its records.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// Started by the machine itself (not in answer to a command).
    pub automatic: bool,
    /// When its first record came out.
    pub started: u64,
    /// Its latest record.
    pub record: RunRecord,
    /// The WAL position its fence reported.
    pub fenced_lsn: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Refused,
    Unreachable,
    Reached,
}

#[derive(Debug, Clone)]
struct PendingStep {
    step: StepId,
    work: Work,
    emitted: u64,
    due: u64,
    path: Path,
    fault: Option<StepFault>,
    run: Option<u64>,
}

/// `synchronous_standby_names`, parsed (PostgreSQL docs, 20.6.2).
#[derive(Debug, Clone, PartialEq, Eq)]
struct SyncRule {
    /// `FIRST` (priority) rather than `ANY` (quorum).
    first: bool,
    count: usize,
    names: Vec<String>,
}

impl SyncRule {
    fn parse(setting: &str) -> Option<SyncRule> {
        let setting = setting.trim();
        if setting.is_empty() {
            return None;
        }
        let (first, count, list) = match setting.find('(') {
            Some(open) => {
                let head: Vec<&str> = setting[..open].split_whitespace().collect();
                let list = setting[open + 1..].trim_end().trim_end_matches(')');
                match head.as_slice() {
                    [method, n] => (!method.eq_ignore_ascii_case("ANY"), n.parse().ok()?, list),
                    [n] => (true, n.parse().ok()?, list),
                    _ => return None,
                }
            }
            None => (true, 1, setting),
        };
        let names = list
            .split(',')
            .map(|n| n.trim().trim_matches('"').to_owned())
            .filter(|n| !n.is_empty())
            .collect();
        Some(SyncRule {
            first,
            count,
            names,
        })
    }

    fn rank(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name || n == "*")
    }

    /// `sync_state` of each connected standby (in the order given).
    fn states(&self, connected: &[&str]) -> Vec<&'static str> {
        if !self.first {
            return connected
                .iter()
                .map(|n| {
                    if self.rank(n).is_some() {
                        "quorum"
                    } else {
                        "async"
                    }
                })
                .collect();
        }
        let mut listed: Vec<(usize, usize)> = connected
            .iter()
            .enumerate()
            .filter_map(|(i, n)| self.rank(n).map(|r| (r, i)))
            .collect();
        listed.sort();
        let sync: BTreeSet<usize> = listed.iter().take(self.count).map(|&(_, i)| i).collect();
        connected
            .iter()
            .enumerate()
            .map(|(i, n)| {
                if sync.contains(&i) {
                    "sync"
                } else if self.rank(n).is_some() {
                    "potential"
                } else {
                    "async"
                }
            })
            .collect()
    }

    /// The position up to which commits are acknowledged, given the connected standbys'
    /// positions; `None` when too few are connected (commits wait).
    fn acknowledged(&self, connected: &[(&str, u64)]) -> Option<u64> {
        let names: Vec<&str> = connected.iter().map(|(n, _)| *n).collect();
        let states = self.states(&names);
        let mut positions: Vec<u64> = connected
            .iter()
            .zip(states)
            .filter(|(_, s)| *s == "sync" || *s == "quorum")
            .map(|((_, lsn), _)| *lsn)
            .collect();
        if positions.len() < self.count.max(1) {
            return None;
        }
        positions.sort_unstable_by(|a, b| b.cmp(a));
        if self.first {
            positions.last().copied()
        } else {
            Some(positions[self.count.max(1) - 1])
        }
    }
}

/// The simulation.
#[derive(Debug)]
pub struct Sim {
    /// The machine under test.
    pub machine: Failover,
    policy: FailoverPolicy,
    now: u64,
    nodes: Vec<SimNode>,
    /// Timeline `t` branched from `forks[t].0` at `forks[t].1` (`forks[1]` is the root).
    forks: Vec<(u32, u64)>,
    rng: u64,
    schedule: Vec<(u64, Event)>,
    step_faults: BTreeMap<u64, StepFault>,
    steps_seen: u64,
    pending: Vec<PendingStep>,
    probing: BTreeMap<usize, u64>,
    requested: BTreeSet<usize>,
    /// When each node was last fed to the machine as a successful, writable probe.
    fed_writable: Vec<Option<u64>>,
    /// Every view published, with its time.
    pub published: Vec<(u64, Published)>,
    /// Every step asked for.
    pub executed: Vec<Executed>,
    /// Every step outcome fed back.
    pub finished: Vec<Finished>,
    /// Every promotion that took effect.
    pub promotions: Vec<Promotion>,
    /// Every run, by id.
    pub runs: BTreeMap<u64, RunInfo>,
    /// Alerts raised.
    pub raised: Vec<(u64, Condition)>,
    /// Alerts resolved.
    pub resolved: Vec<(u64, AlertKind, Option<NodeId>)>,
    /// Safety promises broken, with when and why.
    pub violations: Vec<String>,
    trace: Vec<String>,
    tracing: bool,
    first_violation_line: Option<usize>,
    halted: bool,
    last_primary: Option<(NodeId, u64)>,
    generations: BTreeMap<u64, NodeId>,
    replaced: BTreeSet<NodeId>,
    last_automatic_completed: Option<u64>,
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

/// `12.300s`.
pub fn time(t: u64) -> String {
    format!("{}.{:03}s", t / 1000, t % 1000)
}

fn index(node: NodeId) -> usize {
    usize::from(node.0)
}

impl Sim {
    /// A cluster where every node is alive and every replica streams from its upstream, caught
    /// up. Nothing has been probed yet.
    pub fn new(config: ClusterConfig) -> Sim {
        let specs: Vec<NodeSpec> = config
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| NodeSpec {
                id: NodeId(i as u16),
                name: Arc::from(format!("n{i}")),
                region: Arc::from(n.region),
                region_priority: n.region_priority,
                priority: n.priority,
                no_failover: n.no_failover,
                host: Arc::from(format!("10.0.0.{}", i + 1)),
                port: PORT,
            })
            .collect();
        assert_eq!(
            config.nodes.iter().filter(|n| n.upstream.is_none()).count(),
            1,
            "exactly one initial primary"
        );
        let nodes = config
            .nodes
            .iter()
            .zip(&specs)
            .map(|(n, spec)| {
                let primary = n.upstream.is_none();
                SimNode {
                    id: spec.id,
                    name: spec.name.clone(),
                    host: spec.host.clone(),
                    config: n.clone(),
                    reach: Reach::Alive,
                    reach_since: 0,
                    role: if primary {
                        SimRole::Primary
                    } else {
                        SimRole::Replica
                    },
                    fenced: false,
                    timeline: 1,
                    lsn: START_LSN,
                    replayed: START_LSN,
                    upstream: n.upstream.map(NodeId),
                    receiver: n.upstream.map(|u| Receiver {
                        upstream: NodeId(u),
                        last_message_at: 0,
                        live: true,
                        live_since: 0,
                    }),
                    synchronous_standby_names: if primary {
                        config.synchronous.clone()
                    } else {
                        String::new()
                    },
                    acknowledged: START_LSN,
                    writable_since: primary.then_some(0),
                }
            })
            .collect::<Vec<_>>();
        let count = nodes.len();
        let mut sim = Sim {
            machine: Failover::new(config.policy.clone(), specs, 1),
            policy: config.policy,
            now: 0,
            nodes,
            forks: vec![(0, 0), (0, 0)],
            rng: config.seed,
            schedule: Vec::new(),
            step_faults: BTreeMap::new(),
            steps_seen: 0,
            pending: Vec::new(),
            probing: BTreeMap::new(),
            requested: BTreeSet::new(),
            fed_writable: vec![None; count],
            published: Vec::new(),
            executed: Vec::new(),
            finished: Vec::new(),
            promotions: Vec::new(),
            runs: BTreeMap::new(),
            raised: Vec::new(),
            resolved: Vec::new(),
            violations: Vec::new(),
            trace: Vec::new(),
            tracing: true,
            first_violation_line: None,
            halted: false,
            last_primary: None,
            generations: BTreeMap::new(),
            replaced: BTreeSet::new(),
            last_automatic_completed: None,
        };
        sim.start_probes();
        sim
    }

    /// Keep no trace (faster; property tests re-run a failing case with it).
    pub fn quiet(mut self) -> Self {
        self.tracing = false;
        self
    }

    /// A node.
    pub fn node(&self, id: u16) -> &SimNode {
        &self.nodes[usize::from(id)]
    }

    /// Schedules an event at `at` ms (rounded up to a tick).
    pub fn at(&mut self, at: u64, event: Event) {
        let position = self.schedule.partition_point(|(t, _)| *t <= at);
        self.schedule.insert(position, (at, event));
    }

    /// Schedules a fault.
    pub fn fault(&mut self, at: u64, fault: Fault) {
        self.at(at, Event::Fault(fault));
    }

    /// Schedules an operator command.
    pub fn command(&mut self, at: u64, command: Command) {
        self.at(at, Event::Command(command));
    }

    /// Makes the `ordinal`-th step executed (1-based) go wrong.
    pub fn fail_step(&mut self, ordinal: u64, fault: StepFault) {
        self.step_faults.insert(ordinal, fault);
    }

    /// Runs until virtual time `until`.
    pub fn run_until(&mut self, until: u64) {
        while self.now < until {
            self.tick();
        }
    }

    /// Runs until `done` holds (checked after each tick) or `deadline`; returns when it held.
    pub fn run_until_true(&mut self, deadline: u64, done: impl Fn(&Sim) -> bool) -> Option<u64> {
        while self.now < deadline {
            self.tick();
            if done(self) {
                return Some(self.now);
            }
        }
        None
    }

    /// The latest published view.
    pub fn view(&self) -> Option<Published> {
        self.published.last().map(|(_, p)| *p)
    }

    /// The last primary published (it may have been unpublished since).
    pub fn last_published_primary(&self) -> Option<NodeId> {
        self.last_primary.map(|(node, _)| node)
    }

    /// Number of nodes.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Steps asked for at or after `after`.
    pub fn work_since(&self, after: u64) -> Vec<&Executed> {
        self.executed.iter().filter(|e| e.at >= after).collect()
    }

    /// Steps asked for at or after `after`, as work only.
    pub fn works_since(&self, after: u64) -> Vec<Work> {
        self.work_since(after)
            .into_iter()
            .map(|e| e.work.clone())
            .collect()
    }

    /// The outcome of a step.
    pub fn outcome_of(&self, step: StepId) -> Option<&Finished> {
        self.finished.iter().find(|f| f.step == step)
    }

    /// Alerts of `kind` raised.
    pub fn raised_of(&self, kind: AlertKind) -> Vec<&(u64, Condition)> {
        self.raised.iter().filter(|(_, c)| c.kind == kind).collect()
    }

    /// Every violation, then `lines` lines of the trace: those leading to the first violation
    /// (and a few after it), or the last ones.
    pub fn report(&self, lines: usize) -> String {
        let mut text = String::new();
        for v in &self.violations {
            let _ = writeln!(text, "VIOLATION {v}");
        }
        let end = match self.first_violation_line {
            Some(line) => (line + 20).min(self.trace.len()),
            None => self.trace.len(),
        };
        for line in &self.trace[end.saturating_sub(lines)..end] {
            let _ = writeln!(text, "{line}");
        }
        text
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if self.tracing {
            let line = format!("{:>8} {}", time(self.now), line());
            self.trace.push(line);
        }
    }

    fn violation(&mut self, what: String) {
        let line = format!("at {}: {what}", time(self.now));
        self.note(|| format!("VIOLATION {what}"));
        if self.first_violation_line.is_none() && self.tracing {
            self.first_violation_line = Some(self.trace.len());
        }
        self.violations.push(line);
    }

    fn random(&mut self, bound: u64) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % bound.max(1)
    }

    /// One tick of virtual time.
    pub fn tick(&mut self) {
        self.now += TICK;
        let due = self.schedule.partition_point(|(t, _)| *t <= self.now);
        let mut commands = Vec::new();
        if due > 0 {
            let events: Vec<Event> = self.schedule.drain(..due).map(|(_, e)| e).collect();
            for event in events {
                match event {
                    Event::Fault(fault) => self.apply(fault),
                    Event::Command(command) => commands.push(command),
                }
            }
        }
        self.physics();
        if !self.pending.is_empty() {
            self.finish_steps();
        }
        if !self.probing.is_empty() {
            self.finish_probes();
        }
        for command in commands {
            self.feed(Input::Command(command));
        }
        self.start_probes();
        self.feed(Input::Tick);
    }

    fn set_reach(&mut self, i: usize, reach: Reach) {
        if self.nodes[i].reach != reach {
            self.nodes[i].reach = reach;
            self.nodes[i].reach_since = self.now;
        }
        if reach == Reach::Dead {
            self.nodes[i].receiver = None;
        }
        self.refresh_writable(i);
    }

    fn apply(&mut self, fault: Fault) {
        self.note(|| format!("FAULT {fault:?}"));
        match fault {
            Fault::Kill(n) => self.set_reach(usize::from(n), Reach::Dead),
            Fault::Hang(n) => {
                if self.nodes[usize::from(n)].reach != Reach::Dead {
                    self.set_reach(usize::from(n), Reach::Hung);
                }
            }
            Fault::Partition(n) => {
                if self.nodes[usize::from(n)].reach == Reach::Alive {
                    self.set_reach(usize::from(n), Reach::Partitioned);
                }
            }
            Fault::Revive(n) => self.set_reach(usize::from(n), Reach::Alive),
            Fault::FastSignal(n) => self.feed(Input::FastSignal(NodeId(n))),
        }
    }

    fn refresh_writable(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let writable = n.reach == Reach::Alive && n.role == SimRole::Primary && !n.fenced;
        match (writable, n.writable_since) {
            (true, None) => n.writable_since = Some(self.now),
            (false, Some(_)) => n.writable_since = None,
            _ => {}
        }
    }

    // ---- the servers -------------------------------------------------------------------

    fn physics(&mut self) {
        for n in &mut self.nodes {
            if n.role == SimRole::Primary && n.reach.works() && !n.fenced {
                n.lsn += WRITES_PER_TICK;
            }
        }
        // Upstreams before their replicas, so that WAL travels down a cascade in one tick.
        let count = self.nodes.len();
        let mut placed = vec![false; count];
        let mut order = Vec::with_capacity(count);
        while order.len() < count {
            let before = order.len();
            for (i, n) in self.nodes.iter().enumerate() {
                let ready = match n.upstream {
                    Some(u) if n.role == SimRole::Replica && index(u) != i => placed[index(u)],
                    _ => true,
                };
                if !placed[i] && ready {
                    placed[i] = true;
                    order.push(i);
                }
            }
            if order.len() == before {
                // A loop of replicas (none has WAL to give): any order.
                order.extend((0..count).filter(|&i| !placed[i]));
            }
        }
        for i in order {
            let mut budget = self.nodes[i].config.throughput.unwrap_or(u64::MAX);
            self.replicate(i, &mut budget);
        }
        self.acknowledge();
        for i in 0..self.nodes.len() {
            self.refresh_writable(i);
        }
    }

    fn replicate(&mut self, i: usize, budget: &mut u64) {
        // `budget`: what it may still receive this tick.
        let now = self.now;
        let node = &self.nodes[i];
        if node.role != SimRole::Replica || node.reach == Reach::Dead {
            self.nodes[i].receiver = None;
            return;
        }
        if node.reach == Reach::Hung {
            return;
        }
        let Some(up) = node.upstream.filter(|&u| index(u) != i) else {
            self.nodes[i].receiver = None;
            return;
        };
        let upstream = &self.nodes[index(up)];
        match upstream.reach {
            Reach::Dead => self.nodes[i].receiver = None,
            Reach::Hung => {
                // The connection stays open and silent until wal_receiver_timeout.
                let receiver = &mut self.nodes[i].receiver;
                match receiver {
                    Some(r)
                        if r.upstream == up && now - r.last_message_at < WAL_RECEIVER_TIMEOUT =>
                    {
                        r.live = false
                    }
                    _ => *receiver = None,
                }
            }
            Reach::Alive | Reach::Partitioned => {
                let (timeline, source) = (upstream.timeline, upstream.lsn);
                if !self.can_follow(node.timeline, node.lsn, timeline) {
                    self.nodes[i].receiver = None;
                    return;
                }
                let gain = source.saturating_sub(node.lsn).min(*budget);
                *budget -= gain;
                let n = &mut self.nodes[i];
                n.timeline = timeline;
                n.lsn += gain;
                n.replayed = n.lsn;
                match &mut n.receiver {
                    Some(r) if r.upstream == up && r.live => r.last_message_at = now,
                    receiver => {
                        *receiver = Some(Receiver {
                            upstream: up,
                            last_message_at: now,
                            live: true,
                            live_since: now,
                        })
                    }
                }
            }
        }
    }

    /// Whether a replica on `timeline` at `lsn` can stream from a node on `upstream`: the same
    /// timeline, or an ancestor that the upstream's history left after `lsn`.
    fn can_follow(&self, timeline: u32, lsn: u64, upstream: u32) -> bool {
        if timeline == upstream {
            return true;
        }
        let mut t = upstream;
        while t > 1 {
            let (parent, fork) = self.forks[t as usize];
            if parent == timeline {
                return lsn <= fork;
            }
            t = parent;
        }
        false
    }

    fn lineage(&self, timeline: u32) -> Vec<u32> {
        let mut line = vec![timeline];
        let mut t = timeline;
        while t > 1 {
            t = self.forks[t as usize].0;
            line.push(t);
        }
        line.reverse();
        line
    }

    /// Where the histories of two timelines part: the last common timeline and the position
    /// where either left it.
    fn divergence(&self, a: u32, b: u32) -> (u32, u64) {
        let (la, lb) = (self.lineage(a), self.lineage(b));
        let common = la.iter().zip(&lb).take_while(|(x, y)| x == y).count();
        let point = [la.get(common), lb.get(common)]
            .into_iter()
            .flatten()
            .map(|&t| self.forks[t as usize].1)
            .min()
            .unwrap_or(u64::MAX);
        (la[common - 1], point)
    }

    /// Replicas streaming from node `i`: (index, name).
    fn downstream_of(&self, i: usize) -> Vec<usize> {
        let id = self.nodes[i].id;
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.role == SimRole::Replica
                    && r.reach != Reach::Dead
                    && r.receiver.as_ref().is_some_and(|rc| rc.upstream == id)
            })
            .map(|(j, _)| j)
            .collect()
    }

    fn acknowledge(&mut self) {
        for p in 0..self.nodes.len() {
            let n = &self.nodes[p];
            if n.role != SimRole::Primary || !n.reach.works() || n.fenced {
                continue;
            }
            if n.synchronous_standby_names.is_empty() {
                let n = &mut self.nodes[p];
                n.acknowledged = n.lsn;
                continue;
            }
            let acknowledged = match SyncRule::parse(&n.synchronous_standby_names) {
                None => Some(n.lsn),
                Some(rule) => {
                    let connected: Vec<(&str, u64)> = self
                        .downstream_of(p)
                        .into_iter()
                        .filter(|&j| self.nodes[j].receiver.as_ref().is_some_and(|r| r.live))
                        .map(|j| (&*self.nodes[j].name, self.nodes[j].lsn))
                        .collect();
                    rule.acknowledged(&connected)
                }
            };
            if let Some(position) = acknowledged {
                let n = &mut self.nodes[p];
                n.acknowledged = n.acknowledged.max(position.min(n.lsn));
            }
        }
    }

    fn status(&self, i: usize) -> NodeStatus {
        let n = &self.nodes[i];
        let downstream_nodes = self.downstream_of(i);
        let names: Vec<&str> = downstream_nodes
            .iter()
            .map(|&j| &*self.nodes[j].name)
            .collect();
        let states = match (n.role, SyncRule::parse(&n.synchronous_standby_names)) {
            (SimRole::Primary, Some(rule)) => rule.states(&names),
            _ => vec!["async"; names.len()],
        };
        let downstream = downstream_nodes
            .iter()
            .zip(states)
            .map(|(&j, sync_state)| Downstream {
                application_name: self.nodes[j].name.to_string(),
                state: "streaming".into(),
                sync_state: sync_state.into(),
                flush_lsn: Some(Lsn(self.nodes[j].lsn)),
                replay_lsn: Some(Lsn(self.nodes[j].replayed)),
            })
            .collect();
        let base = NodeStatus {
            latency: n.config.latency,
            connect_latency: None,
            in_recovery: false,
            timeline: Some(n.timeline),
            current_lsn: None,
            receive_lsn: None,
            replay_lsn: None,
            last_replay_at: None,
            wal_receiver: None,
            downstream,
            synchronous_standby_names: n.synchronous_standby_names.clone(),
            wal_sender_timeout: Some(WAL_SENDER_TIMEOUT),
            wal_receiver_timeout: None,
            connections: 10,
            max_connections: 100,
        };
        match n.role {
            SimRole::Primary => NodeStatus {
                current_lsn: Some(Lsn(n.lsn)),
                ..base
            },
            SimRole::Replica => NodeStatus {
                in_recovery: true,
                receive_lsn: Some(Lsn(n.lsn)),
                replay_lsn: Some(Lsn(n.replayed)),
                last_replay_at: n.receiver.as_ref().map(|r| Timestamp(r.last_message_at)),
                wal_receiver: n.receiver.as_ref().map(|r| WalReceiver {
                    status: Some("streaming".into()),
                    sender_host: Some(self.nodes[index(r.upstream)].host.to_string()),
                    sender_port: Some(PORT),
                    last_message_at: Some(Timestamp(r.last_message_at)),
                    last_message_age: Some(Duration::from_millis(self.now - r.last_message_at)),
                    timeline: Some(n.timeline),
                }),
                ..base
            },
        }
    }

    // ---- probes ------------------------------------------------------------------------

    fn start_probes(&mut self) {
        let scheduled = self.now.is_multiple_of(PROBE_INTERVAL);
        for i in 0..self.nodes.len() {
            if (scheduled || self.requested.contains(&i)) && !self.probing.contains_key(&i) {
                self.probing.insert(i, self.now);
            }
        }
        self.requested.clear();
    }

    fn finish_probes(&mut self) {
        let probing: Vec<(usize, u64)> = self.probing.iter().map(|(&i, &t)| (i, t)).collect();
        for (i, started) in probing {
            let outcome = match self.nodes[i].reach {
                Reach::Alive => Ok(self.status(i)),
                Reach::Dead => Err(ProbeError::Refused),
                Reach::Hung | Reach::Partitioned if self.now - started >= PROBE_TIMEOUT => {
                    Err(ProbeError::Timeout)
                }
                Reach::Hung | Reach::Partitioned => continue,
            };
            self.probing.remove(&i);
            let observation = Observation {
                node: self.nodes[i].id,
                at: Timestamp(self.now),
                outcome,
            };
            self.feed(Input::Observation(Box::new(observation)));
        }
    }

    // ---- steps -------------------------------------------------------------------------

    fn base_delay(work: &Work) -> u64 {
        match work {
            Work::Promote { .. } => 300,
            Work::Rejoin { .. } => 500,
            _ => 100,
        }
    }

    fn finish_steps(&mut self) {
        let mut due: Vec<PendingStep> = Vec::new();
        let mut waiting = Vec::new();
        for mut p in std::mem::take(&mut self.pending) {
            // A connection attempt still under way succeeds once the node answers again.
            if p.path == Path::Unreachable && self.nodes[index(p.work.node())].reach == Reach::Alive
            {
                p.path = Path::Reached;
                p.due = self.now + Self::base_delay(&p.work);
            }
            if p.due <= self.now {
                due.push(p);
            } else {
                waiting.push(p);
            }
        }
        self.pending = waiting;
        due.sort_by_key(|p| (p.due, p.step));
        for p in due {
            let target = index(p.work.node());
            let result = match (p.path, self.nodes[target].reach) {
                (Path::Refused, _) | (Path::Reached, Reach::Dead) => {
                    Err("connection refused".to_owned())
                }
                (Path::Unreachable, _) => Err("timeout while connecting".to_owned()),
                (Path::Reached, Reach::Hung | Reach::Partitioned) => {
                    Err("connection lost: timeout".to_owned())
                }
                (Path::Reached, Reach::Alive) => match p.fault {
                    Some(StepFault::Fail) => Err("injected failure".to_owned()),
                    fault => match self.perform(&p) {
                        None => {
                            self.pending.push(p);
                            continue;
                        }
                        Some(Ok(_)) if fault == Some(StepFault::LostReply) => {
                            Err("injected: connection lost before the reply".to_owned())
                        }
                        Some(result) => result,
                    },
                },
            };
            self.note(|| format!("DONE {:?} {:?} -> {result:?}", p.step, p.work));
            self.finished.push(Finished {
                at: self.now,
                step: p.step,
                result: result.clone(),
            });
            self.feed(Input::Outcome {
                step: p.step,
                result,
            });
        }
    }

    /// Carries out a step on a reachable node; `None`: not finished yet.
    fn perform(&mut self, p: &PendingStep) -> Option<Result<StepOutput, String>> {
        let result = match &p.work {
            Work::Fence { node } => {
                let n = &mut self.nodes[index(*node)];
                n.fenced = true;
                let lsn = n.lsn;
                if let Some(run) = p.run.and_then(|r| self.runs.get_mut(&r)) {
                    run.fenced_lsn = Some(lsn);
                }
                Ok(StepOutput::Fenced {
                    lsn: Some(Lsn(lsn)),
                })
            }
            Work::Unfence { node } => {
                self.nodes[index(*node)].fenced = false;
                Ok(StepOutput::Done)
            }
            Work::WaitReplay { node, lsn } => {
                if self.nodes[index(*node)].replayed >= lsn.0 {
                    Ok(StepOutput::Done)
                } else if self.now >= p.emitted + REPLAY_DEADLINE {
                    Err(format!("{lsn} not replayed in time"))
                } else {
                    return None;
                }
            }
            Work::Promote { node } => self.promote(*node, p.run),
            Work::Repoint { node, upstream } => {
                let n = &mut self.nodes[index(*node)];
                if n.role != SimRole::Replica {
                    Err("not in recovery".to_owned())
                } else {
                    if n.upstream != Some(*upstream) {
                        n.upstream = Some(*upstream);
                        n.receiver = None;
                    }
                    Ok(StepOutput::Done)
                }
            }
            Work::SetSynchronous { node, value } => {
                self.nodes[index(*node)].synchronous_standby_names = value.clone();
                Ok(StepOutput::Done)
            }
            Work::Rejoin { node, upstream } => self.rejoin(*node, *upstream),
        };
        let target = index(p.work.node());
        self.refresh_writable(target);
        Some(result)
    }

    fn promote(&mut self, node: NodeId, run: Option<u64>) -> Result<StepOutput, String> {
        let i = index(node);
        if self.nodes[i].role == SimRole::Primary {
            return Ok(StepOutput::Promoted {
                timeline: Some(self.nodes[i].timeline),
            });
        }
        let info = run.and_then(|r| self.runs.get(&r));
        let old = info.and_then(|r| r.record.old_primary);
        let switchover = info.is_some_and(|r| r.record.kind == RunKind::Switchover);
        let fenced_lsn = info.and_then(|r| r.fenced_lsn);
        let timeline = self.forks.len() as u32;
        let (from, lsn) = (self.nodes[i].timeline, self.nodes[i].lsn);
        self.forks.push((from, lsn));
        let old_synchronous = old.is_some_and(|o| {
            SyncRule::parse(&self.nodes[index(o)].synchronous_standby_names).is_some()
        });
        let (old_acknowledged, lost_acknowledged) = match old.map(|o| &self.nodes[index(o)]) {
            Some(o) if o.timeline == from => (o.acknowledged, o.acknowledged.saturating_sub(lsn)),
            Some(o) => (o.acknowledged, 0),
            None => (0, 0),
        };
        if switchover && let Some(fenced) = fenced_lsn.filter(|&f| lsn < f) {
            self.violation(format!(
                "switchover promoted {} at {} but the fenced primary was at {}",
                self.nodes[i].name,
                Lsn(lsn),
                Lsn(fenced)
            ));
        }
        let n = &mut self.nodes[i];
        n.role = SimRole::Primary;
        n.timeline = timeline;
        n.upstream = None;
        n.receiver = None;
        n.fenced = false;
        n.acknowledged = lsn;
        // Promotion keeps the server's settings, `synchronous_standby_names` included (as
        // PostgreSQL does): what the machine set on the replica applies from the first commit.
        self.promotions.push(Promotion {
            node,
            lsn,
            old,
            old_acknowledged,
            lost_acknowledged,
            old_synchronous,
        });
        Ok(StepOutput::Promoted {
            timeline: Some(timeline),
        })
    }

    /// `pg_rewind` to where the histories part, then stream from `upstream`.
    fn rejoin(&mut self, node: NodeId, upstream: NodeId) -> Result<StepOutput, String> {
        if node == upstream {
            return Err("cannot follow itself".to_owned());
        }
        let (i, u) = (index(node), index(upstream));
        let (timeline, point) = self.divergence(self.nodes[i].timeline, self.nodes[u].timeline);
        let n = &mut self.nodes[i];
        n.timeline = timeline;
        n.lsn = n.lsn.min(point);
        n.replayed = n.lsn;
        n.role = SimRole::Replica;
        n.fenced = false;
        n.upstream = Some(upstream);
        n.receiver = None;
        n.synchronous_standby_names.clear();
        self.replaced.remove(&node);
        Ok(StepOutput::Done)
    }

    // ---- the machine -------------------------------------------------------------------

    fn describe(&self, input: &Input) -> Option<String> {
        Some(match input {
            Input::Tick => return None,
            Input::Observation(o) => match &o.outcome {
                Err(e) => format!("probe n{}: {e:?}", o.node.0),
                Ok(s) if !s.in_recovery => format!(
                    "probe n{}: primary tl{} {} sync={:?} down=[{}]",
                    o.node.0,
                    s.timeline.unwrap_or(0),
                    s.current_lsn.unwrap_or_default(),
                    s.synchronous_standby_names,
                    s.downstream
                        .iter()
                        .map(|d| format!("{}:{}", d.application_name, d.sync_state))
                        .collect::<Vec<_>>()
                        .join(",")
                ),
                Ok(s) => format!(
                    "probe n{}: replica tl{} {} {}",
                    o.node.0,
                    s.timeline.unwrap_or(0),
                    s.receive_lsn.unwrap_or_default(),
                    match &s.wal_receiver {
                        Some(w) => format!(
                            "from {} age {:?}",
                            w.sender_host.as_deref().unwrap_or("?"),
                            w.last_message_age.unwrap_or_default()
                        ),
                        None => "no receiver".to_owned(),
                    }
                ),
            },
            other => format!("{other:?}"),
        })
    }

    fn feed(&mut self, input: Input) {
        let by_operator = matches!(input, Input::Command(_));
        if let Input::Command(command) = &input {
            let accepted = self.machine.state().running.is_none()
                || matches!(command, Command::ResumeAutomatic);
            if accepted && matches!(command, Command::ResumeAutomatic | Command::Failover { .. }) {
                self.halted = false;
            }
        }
        if let Input::Observation(o) = &input
            && matches!(&o.outcome, Ok(s) if !s.in_recovery)
        {
            self.fed_writable[index(o.node)] = Some(self.now);
        }
        if self.tracing
            && let Some(line) = self.describe(&input)
        {
            self.note(|| format!("<- {line}"));
        }
        let actions = self.machine.handle(Timestamp(self.now), input);
        for action in &actions {
            if let Action::Record(record) = action {
                self.note_record(record, by_operator);
            }
        }
        for action in actions {
            match action {
                Action::Probe(nodes) => self.requested.extend(nodes.iter().map(|&n| index(n))),
                Action::Publish(published) => self.note_publish(published),
                Action::Execute { step, work } => self.note_execute(step, work),
                Action::Record(record) => self.note(|| {
                    format!(
                        "-> Record #{} {:?} {:?} old={:?} new={:?} gen={} phases=[{}]",
                        record.id,
                        record.kind,
                        record.outcome,
                        record.old_primary,
                        record.new_primary,
                        record.generation,
                        record
                            .phases
                            .iter()
                            .map(|p| format!("{}:{}", p.name, p.outcome))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }),
                Action::Raise(condition) => {
                    self.note(|| {
                        format!(
                            "-> Raise {} {:?} {:?}: {}",
                            condition.kind, condition.severity, condition.node, condition.message
                        )
                    });
                    self.raised.push((self.now, condition));
                }
                Action::Resolve(kind, node) => {
                    self.note(|| format!("-> Resolve {kind} {node:?}"));
                    self.resolved.push((self.now, kind, node));
                }
                Action::Log(level, message) => self.note(|| format!("-> Log {level:?} {message}")),
            }
        }
    }

    fn in_progress(&self) -> Vec<u64> {
        self.runs
            .iter()
            .filter(|(_, r)| r.record.outcome == RunOutcome::InProgress)
            .map(|(&id, _)| id)
            .collect()
    }

    fn note_record(&mut self, record: &RunRecord, by_operator: bool) {
        let previous = self.runs.get(&record.id).map(|r| r.record.outcome.clone());
        match &previous {
            None => {
                if let Some((&last, _)) = self.runs.last_key_value()
                    && record.id <= last
                {
                    self.violation(format!("run id {} after run id {last}", record.id));
                }
                let automatic = !by_operator;
                if record.outcome == RunOutcome::InProgress {
                    let others = self.in_progress();
                    if !others.is_empty() {
                        self.violation(format!(
                            "run #{} started while runs {others:?} are in progress",
                            record.id
                        ));
                    }
                    if automatic {
                        self.check_automatic_start(record);
                    }
                }
                self.runs.insert(
                    record.id,
                    RunInfo {
                        automatic,
                        started: self.now,
                        record: record.clone(),
                        fenced_lsn: None,
                    },
                );
            }
            Some(previous) => {
                if *previous != RunOutcome::InProgress && *previous != record.outcome {
                    self.violation(format!(
                        "run #{} finished as {previous:?}, then re-issued as {:?}",
                        record.id, record.outcome
                    ));
                }
                if let Some(run) = self.runs.get_mut(&record.id) {
                    run.record = record.clone();
                }
            }
        }
        if previous.is_none_or(|p| p == RunOutcome::InProgress) {
            let promote_failed = record
                .phases
                .iter()
                .any(|p| p.name == "promote" && p.outcome != "ok");
            if matches!(record.outcome, RunOutcome::Failed(_)) && promote_failed {
                self.halted = true;
            }
            let automatic = self.runs.get(&record.id).is_some_and(|r| r.automatic);
            if record.outcome == RunOutcome::Completed
                && record.kind == RunKind::Failover
                && automatic
            {
                self.last_automatic_completed = Some(self.now);
            }
        }
    }

    /// An automatic run starts: not too soon after the last, and not while a reachable replica
    /// has been receiving the primary's WAL for a while.
    fn check_automatic_start(&mut self, record: &RunRecord) {
        if let Some(last) = self.last_automatic_completed
            && self.now - last < ms(self.policy.min_interval)
        {
            self.violation(format!(
                "automatic run #{} starts {} ms after the last automatic failover completed (min_interval {:?})",
                record.id,
                self.now - last,
                self.policy.min_interval
            ));
        }
        let Some(old) = record.old_primary else {
            return;
        };
        let now = self.now;
        let witnesses: Vec<String> = self
            .nodes
            .iter()
            .filter(|r| {
                r.id != old
                    && r.role == SimRole::Replica
                    && r.reach == Reach::Alive
                    && now - r.reach_since >= WITNESS
                    && r.receiver.as_ref().is_some_and(|rc| {
                        rc.upstream == old && rc.live && now - rc.live_since >= WITNESS
                    })
            })
            .map(|r| r.name.to_string())
            .collect();
        if !witnesses.is_empty() {
            self.violation(format!(
                "automatic run #{} replaces n{} ({:?}) while {witnesses:?} receive its WAL",
                record.id,
                old.0,
                self.nodes[index(old)].reach
            ));
        }
    }

    fn note_publish(&mut self, published: Published) {
        self.note(|| format!("-> Publish {published:?}"));
        if published.paused && published.primary.is_some() {
            self.violation(format!("paused view names a primary: {published:?}"));
        }
        if let Some((_, last)) = self.published.last()
            && published.generation < last.generation
        {
            let last = *last;
            self.violation(format!("generation went down: {last:?} then {published:?}"));
        }
        if let Some(x) = published.primary {
            if let Some(&owner) = self.generations.get(&published.generation)
                && owner != x
            {
                self.violation(format!(
                    "generation {} names n{} and n{}",
                    published.generation, owner.0, x.0
                ));
            }
            self.generations.insert(published.generation, x);
            if let Some((y, g)) = self.last_primary
                && y != x
                && published.generation <= g
            {
                self.violation(format!(
                    "primary changed from n{} (generation {g}) to n{} without a new generation ({published:?})",
                    y.0, x.0
                ));
            }
            if !published.paused {
                let n = &self.nodes[index(x)];
                if n.role != SimRole::Primary {
                    self.violation(format!(
                        "published n{} as primary but it is a replica ({published:?})",
                        x.0
                    ));
                }
                if self.replaced.contains(&x) {
                    self.violation(format!(
                        "published n{}, an old primary that was replaced and never rejoined ({published:?})",
                        x.0
                    ));
                }
            }
            if let Some((y, _)) = self.last_primary
                && y != x
            {
                self.replaced.insert(y);
            }
            self.last_primary = Some((x, published.generation));
        }
        self.published.push((self.now, published));
    }

    fn note_execute(&mut self, step: StepId, work: Work) {
        self.note(|| format!("-> Execute {step:?} {work:?}"));
        let in_progress = self.in_progress();
        let run = (in_progress.len() == 1).then(|| in_progress[0]);
        if let Work::Promote { node } = &work {
            self.check_promote(*node, &in_progress);
        }
        self.steps_seen += 1;
        let fault = self.step_faults.get(&self.steps_seen).copied();
        let target = index(work.node());
        let jitter = self.random(3) * TICK;
        let (path, due) = match self.nodes[target].reach {
            Reach::Dead => (Path::Refused, self.now + TICK),
            Reach::Hung | Reach::Partitioned => (Path::Unreachable, self.now + CONNECT_TIMEOUT),
            Reach::Alive => (Path::Reached, self.now + Self::base_delay(&work) + jitter),
        };
        self.executed.push(Executed {
            at: self.now,
            step,
            work: work.clone(),
        });
        self.pending.push(PendingStep {
            step,
            work,
            emitted: self.now,
            due,
            path,
            fault,
            run,
        });
    }

    fn check_promote(&mut self, node: NodeId, in_progress: &[u64]) {
        let [run] = in_progress else {
            self.violation(format!(
                "promotion of n{} with runs {in_progress:?} in progress",
                node.0
            ));
            return;
        };
        let run = *run;
        let step_timeout = ms(self.policy.step_timeout);
        let foreign: Vec<String> = self
            .pending
            .iter()
            .filter(|p| p.run != Some(run) && self.now < p.emitted + step_timeout)
            .map(|p| format!("{:?} {:?}", p.step, p.work))
            .collect();
        if !foreign.is_empty() {
            self.violation(format!(
                "promotion of n{} in run #{run} while steps of another run are pending: {foreign:?}",
                node.0
            ));
        }
        let info = self.runs[&run].clone();
        if info.automatic && self.halted {
            self.violation(format!(
                "automatic run #{run} promotes n{} after a failed promotion, with no operator command since",
                node.0
            ));
        }
        if let Some(old) = info.record.old_primary {
            let o = &self.nodes[index(old)];
            if let (Some(since), Some(seen)) = (o.writable_since, self.fed_writable[index(old)])
                && seen >= since
            {
                self.violation(format!(
                    "run #{run} promotes n{} while the old primary n{} is reachable, writable and unfenced since {} (and the machine saw it so at {})",
                    node.0,
                    old.0,
                    time(since),
                    time(seen)
                ));
            }
        }
    }
}
