//! The failover machine: who the primary is, when it has failed, and the steps that replace it.
//!
//! Pure: `Failover::handle(now, input) -> Vec<Action>`. Inputs are probe observations, the
//! proxy's fast signals, the outcomes of the steps it asked for, operator commands and ticks;
//! actions ask for probes, publish views, execute steps on the servers, record the history and
//! raise alerts. The control plane carries the actions out and feeds their outcomes back.
//!
//! # Detection
//!
//! The primary is *suspect* after one failed probe (or a fast signal from the proxy): from then
//! on every node is probed every `confirm_interval` instead of every probe interval. It has
//! *failed* once it missed `failure_threshold` consecutive probes **and** the replicas, probed
//! after the suspicion began and still answering, confirm that none still receives WAL from it:
//! a replica whose WAL receiver streams from the primary (not from another replica: a cascade)
//! and heard from it within `receiver_timeout` proves the primary alive, however unreachable it
//! is from here (a partition between the monitor and the primary), and then there is no
//! failover, an alert instead. A replica that died since it answered (with its region) is no
//! witness. A killed primary is confirmed in about `failure_threshold × confirm_interval`: its
//! replicas' streams break at once.
//!
//! # Safety
//!
//! - One run (failover or switchover) at a time; the primary is published only once promoted
//!   and verified, with the generation increased: writes are only routed to the primary of the
//!   current generation.
//! - Never promote while the old primary is reachable and writable, except on an operator's
//!   command, and then only after fencing it (a switchover).
//! - After a failed promotion, automatic failover halts and `failover_failed` is raised: no
//!   trying node after node. An operator command resumes it.
//! - Automatic failovers are at least `min_interval` apart.
//! - An old primary never becomes primary again by being observed writable: it *needs rejoin*
//!   and receives no traffic until it is a replica again.
//!
//! # Runs
//!
//! Failover: publish a paused view (the proxies hold new transactions), fence the old primary
//! unless it is known dead, give the best candidate ([`crate::candidates`]) the synchronous
//! replicas it must wait for (those of the old primary that survive, the gaps filled with
//! replicas that will stream from it, never one that received WAL past the candidate's and so
//! cannot follow its timeline; none if the old primary was asynchronous) *before*
//! promoting it, so that its first commit already waits for them; promote it, publish the new
//! view (generation + 1), repoint the other replicas (region leaders to the new primary, the
//! other members of their region to their leader). Switchover: pause, fence the primary (its last WAL position comes back),
//! wait until the target replayed that position, then promote as above and turn the old
//! primary into a replica (rejoin). Every phase is timed in the run's record.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use crate::alerts::{AlertKind, Condition};
use crate::candidates::{self, Candidate, Ranking, RankingPolicy};
use crate::health::{HealthPolicy, NodeHealth};
use crate::lsn::Lsn;
use crate::observation::{NodeStatus, Observation, ProbeError, Timestamp};
use crate::topology::{Health, NodeId};

/// The rules of detection and promotion.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverPolicy {
    /// Fail over without an operator.
    pub automatic: bool,
    /// Consecutive failed probes of the primary before it can be declared failed.
    pub failure_threshold: u32,
    /// Probe cadence while the primary is suspect.
    pub confirm_interval: Duration,
    /// A replica that heard from its sender within this long still receives WAL. It is raised
    /// to half the replica's `wal_receiver_timeout` (and half the primary's
    /// `wal_sender_timeout`) plus a second when that is longer: an idle live stream may carry
    /// nothing for that long.
    pub receiver_timeout: Duration,
    /// Replicas further behind (bytes) are not promoted.
    pub max_lag: u64,
    /// Least time between two automatic failovers.
    pub min_interval: Duration,
    /// Time allowed for one step (fence, promote, repoint, ...).
    pub step_timeout: Duration,
    /// Health thresholds for judging candidates.
    pub health: HealthPolicy,
}

impl Default for FailoverPolicy {
    fn default() -> Self {
        FailoverPolicy {
            automatic: true,
            failure_threshold: 3,
            confirm_interval: Duration::from_millis(200),
            receiver_timeout: Duration::from_secs(3),
            max_lag: 16 * 1024 * 1024,
            min_interval: Duration::from_secs(60),
            step_timeout: Duration::from_secs(15),
            health: HealthPolicy::default(),
        }
    }
}

/// A node as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeSpec {
    /// Identity.
    pub id: NodeId,
    /// Name (also its `application_name` on its upstream).
    pub name: Arc<str>,
    /// Region.
    pub region: Arc<str>,
    /// The region's priority.
    pub region_priority: i32,
    /// The node's priority.
    pub priority: i32,
    /// Never promote.
    pub no_failover: bool,
    /// Host.
    pub host: Arc<str>,
    /// Port.
    pub port: u16,
}

/// Identifies a step so that its outcome finds its way back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StepId(pub u64);

/// Work on the servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Make the node refuse writes and end its client sessions; report its last WAL position.
    Fence {
        /// The node.
        node: NodeId,
    },
    /// Undo a fence (an aborted switchover).
    Unfence {
        /// The node.
        node: NodeId,
    },
    /// Wait until the node has replayed `lsn`.
    WaitReplay {
        /// The node.
        node: NodeId,
        /// The position.
        lsn: Lsn,
    },
    /// Promote the replica and verify it accepts writes on a new timeline.
    Promote {
        /// The node.
        node: NodeId,
    },
    /// Make the replica stream from `upstream`.
    Repoint {
        /// The replica.
        node: NodeId,
        /// Its new upstream.
        upstream: NodeId,
    },
    /// Set a node's `synchronous_standby_names` (the primary's, or a candidate's just before
    /// its promotion).
    SetSynchronous {
        /// The node.
        node: NodeId,
        /// The setting; empty: reset (asynchronous).
        value: String,
    },
    /// Turn a node (an old primary) into a replica of `upstream`.
    Rejoin {
        /// The node.
        node: NodeId,
        /// Its upstream.
        upstream: NodeId,
    },
}

impl Work {
    /// The node the work is done on.
    pub fn node(&self) -> NodeId {
        match self {
            Work::Fence { node }
            | Work::Unfence { node }
            | Work::WaitReplay { node, .. }
            | Work::Promote { node }
            | Work::Repoint { node, .. }
            | Work::SetSynchronous { node, .. }
            | Work::Rejoin { node, .. } => *node,
        }
    }
}

/// What a step reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepOutput {
    /// Fenced; its WAL position once no session could write any more.
    Fenced {
        /// `pg_current_wal_lsn()` after fencing.
        lsn: Option<Lsn>,
    },
    /// Done, nothing to report.
    Done,
    /// Promoted, on this timeline.
    Promoted {
        /// The new timeline.
        timeline: Option<u32>,
    },
}

/// An operator's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Fail over now: to the best replica, of `region` if named, or to `node`. With the primary
    /// alive this is a switchover (the primary is fenced first).
    Failover {
        /// Only replicas of this region.
        region: Option<Arc<str>>,
        /// This replica.
        node: Option<NodeId>,
    },
    /// Planned change of primary, losing nothing.
    Switchover {
        /// The new primary, or the best replica.
        to: Option<NodeId>,
    },
    /// Turn a node (an old primary) into a replica of the current primary.
    Rejoin {
        /// The node.
        node: NodeId,
    },
    /// Resume automatic failover after a failed one.
    ResumeAutomatic,
}

/// An input of the machine.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// A probe result.
    Observation(Box<Observation>),
    /// The proxy could not use this node.
    FastSignal(NodeId),
    /// The proxy saw the first write commit on `node` under view `generation`: the end of the
    /// write unavailability of the run that published that generation (its `first_write`
    /// phase).
    WriteAccepted {
        /// Where it committed.
        node: NodeId,
        /// The view generation of its server connection.
        generation: u64,
    },
    /// A step finished.
    Outcome {
        /// Which.
        step: StepId,
        /// How.
        result: Result<StepOutput, String>,
    },
    /// An operator's command.
    Command(Command),
    /// Time passes.
    Tick,
    /// Whether this instance's machine may act (several instances coordinated through etcd:
    /// only the elected leader's may). An inactive machine observes and publishes but starts
    /// no failover and refuses commands. Active by default.
    Leadership(bool),
    /// Another instance (several coordinated through etcd) reached `node` at `at`: while the
    /// primary answers some observer, it is not dead, whatever this instance's probes say.
    PeerSighting {
        /// The node it reached.
        node: NodeId,
        /// When (its wall clock).
        at: Timestamp,
    },
    /// The view the previous leader published, to continue from on becoming the leader:
    /// generations never go back, and the primary it chose stays the primary.
    Continue {
        /// Its generation.
        generation: u64,
        /// Its primary.
        primary: Option<NodeId>,
    },
}

/// The phase from a run's publication of the new primary to the first write the proxy saw
/// commit there.
pub const FIRST_WRITE: &str = "first_write";

/// Who takes writes, as published to the proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// Increases with every promotion.
    pub generation: u64,
    /// The primary, if any.
    pub primary: Option<NodeId>,
    /// New write transactions must wait for the next view.
    pub paused: bool,
}

/// How a run went or is going.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunOutcome {
    /// Still running.
    InProgress,
    /// The new primary takes writes.
    Completed,
    /// It did not happen; why.
    Failed(String),
}

/// A failover or a switchover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    /// Unplanned.
    Failover,
    /// Planned.
    Switchover,
    /// An old primary turned into a replica of the current one, on an operator's command.
    Rejoin,
}

impl RunKind {
    /// The stable name used in the store, the API and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RunKind::Failover => "failover",
            RunKind::Switchover => "switchover",
            RunKind::Rejoin => "rejoin",
        }
    }
}

/// One timed phase of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhaseRecord {
    /// `detection`, `fence`, `replay`, `promote`, `publish`, `repoint`, ...
    pub name: String,
    /// Start.
    pub started_at: Timestamp,
    /// End.
    pub finished_at: Timestamp,
    /// `ok`, `skipped: ...`, or the error.
    pub outcome: String,
}

/// The history of one run, re-issued as it progresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// Unique, increasing.
    pub id: u64,
    /// Failover or switchover.
    pub kind: RunKind,
    /// Why it started.
    pub reason: String,
    /// The primary it replaces.
    pub old_primary: Option<NodeId>,
    /// The node promoted (or chosen).
    pub new_primary: Option<NodeId>,
    /// The generation of the new primary.
    pub generation: u64,
    /// Start.
    pub started_at: Timestamp,
    /// End.
    pub finished_at: Option<Timestamp>,
    /// How it went.
    pub outcome: RunOutcome,
    /// Timed phases.
    pub phases: Vec<PhaseRecord>,
    /// The candidate ranking, one line per replica.
    pub ranking: String,
}

/// A log line worth an operator's attention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Normal progress.
    Info,
    /// Something is wrong.
    Warn,
}

/// What the control plane must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Probe these nodes now.
    Probe(Vec<NodeId>),
    /// Publish who takes writes.
    Publish(Published),
    /// Do this on the servers; report with `Input::Outcome { step }`.
    Execute {
        /// Its id.
        step: StepId,
        /// What.
        work: Work,
    },
    /// Store this state of a run.
    Record(RunRecord),
    /// Raise this alert.
    Raise(Condition),
    /// Resolve this alert.
    Resolve(AlertKind, Option<NodeId>),
    /// Log a decision.
    Log(Level, String),
}

/// What the machine tracks of one node.
#[derive(Debug, Clone)]
struct Tracked {
    health: NodeHealth,
    /// The last successful probe.
    last_ok: Option<(Timestamp, NodeStatus)>,
    consecutive_failures: u32,
    last_error: Option<ProbeError>,
    observed: bool,
}

/// The detection state of the current primary.
#[derive(Debug, Clone, PartialEq)]
struct Suspicion {
    since: Timestamp,
    last_probe: Timestamp,
    /// Decisions already explained in the log (once per suspicion).
    reported: BTreeSet<&'static str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Fencing,
    WaitingReplay,
    /// Setting the candidate's synchronous replicas before it is promoted.
    Securing,
    Promoting,
    Repointing,
    Demoting,
    Aborting,
}

/// A run in progress.
#[derive(Debug, Clone)]
struct Run {
    record: RunRecord,
    old: NodeId,
    new: NodeId,
    stage: Stage,
    stage_started: Timestamp,
    /// Steps under way and when each started.
    pending: Vec<(StepId, Work, Timestamp)>,
    /// Synchronous names of the old primary, to restore on the new one.
    synchronous: Option<String>,
    /// The names the candidate got before its promotion (then nothing is left to set after).
    secured: bool,
    /// The replicas that received more WAL than the candidate when it was given its
    /// synchronous replicas, just before its promotion, with what they received: they cannot
    /// follow its timeline.
    ahead: BTreeMap<NodeId, Lsn>,
    /// The old primary was fenced (to undo if a switchover aborts).
    fenced: bool,
}

/// The machine.
#[derive(Debug, Clone)]
pub struct Failover {
    policy: FailoverPolicy,
    nodes: Vec<NodeSpec>,
    tracked: Vec<Tracked>,
    primary: Option<NodeId>,
    generation: u64,
    paused: bool,
    suspicion: Option<Suspicion>,
    run: Option<Run>,
    /// Automatic failover is halted, with why.
    halted: Option<String>,
    /// The primary a failed promotion left unreplaced: what an operator's failover replaces.
    orphaned: Option<NodeId>,
    /// The last run that completed, until its `first_write` phase is recorded.
    completed: Option<RunRecord>,
    last_automatic: Option<Timestamp>,
    needs_rejoin: BTreeSet<NodeId>,
    /// Replicas that received WAL past the point where the primary's timeline began (ahead of
    /// the replica promoted), with the position they received: they cannot follow it until
    /// rejoined, so they are neither candidates nor served traffic (reported as needing
    /// rejoin) until a rejoin of theirs succeeds or a probe sees them replay past that
    /// position (which a replica stuck on the old timeline never does; its WAL receiver's
    /// timeline says nothing, as it fetches the new timeline's history all the same).
    diverged: BTreeMap<NodeId, Lsn>,
    next_step: u64,
    next_run: u64,
    /// This instance leads (or is alone): it may fail over and take commands.
    active: bool,
    /// The latest time another instance reached each node.
    peer_sightings: BTreeMap<NodeId, Timestamp>,
}

/// A summary for operators.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FailoverState {
    /// Increases with every promotion.
    pub generation: u64,
    /// The primary.
    pub primary: Option<NodeId>,
    /// Writes wait for a run to finish.
    pub paused: bool,
    /// The primary is suspect since.
    pub suspect_since: Option<Timestamp>,
    /// The run under way.
    pub running: Option<u64>,
    /// Automatic failover is halted, why.
    pub halted: Option<String>,
    /// Old primaries awaiting rejoin.
    pub needs_rejoin: Vec<NodeId>,
}

impl Failover {
    /// A machine for these nodes. `next_run` continues the numbering of stored runs.
    pub fn new(policy: FailoverPolicy, nodes: Vec<NodeSpec>, next_run: u64) -> Failover {
        let tracked = nodes
            .iter()
            .map(|_| Tracked {
                health: NodeHealth::new(),
                last_ok: None,
                consecutive_failures: 0,
                last_error: None,
                observed: false,
            })
            .collect();
        Failover {
            policy,
            nodes,
            tracked,
            primary: None,
            generation: 0,
            paused: false,
            suspicion: None,
            run: None,
            halted: None,
            orphaned: None,
            completed: None,
            last_automatic: None,
            needs_rejoin: BTreeSet::new(),
            diverged: BTreeMap::new(),
            next_step: 1,
            next_run: next_run.max(1),
            active: true,
            peer_sightings: BTreeMap::new(),
        }
    }

    /// The operator's summary.
    pub fn state(&self) -> FailoverState {
        FailoverState {
            generation: self.generation,
            primary: self.primary,
            paused: self.paused,
            suspect_since: self.suspicion.as_ref().map(|s| s.since),
            running: self.run.as_ref().map(|r| r.record.id),
            halted: self.halted.clone(),
            needs_rejoin: self
                .needs_rejoin
                .union(&self.diverged.keys().copied().collect())
                .copied()
                .collect(),
        }
    }

    /// What is published now.
    pub fn published(&self) -> Published {
        Published {
            generation: self.generation,
            primary: self.primary,
            paused: self.paused,
        }
    }

    /// Feeds one input; returns what to do.
    pub fn handle(&mut self, now: Timestamp, input: Input) -> Vec<Action> {
        let mut out = Vec::new();
        match input {
            Input::Observation(observation) => self.observe(now, *observation, &mut out),
            Input::FastSignal(node) => {
                if self.primary == Some(node) && self.run.is_none() && self.suspicion.is_none() {
                    self.suspect(now, "the proxy could not use it", &mut out);
                }
            }
            Input::WriteAccepted { node, generation } => {
                self.write_accepted(now, node, generation, &mut out);
            }
            Input::Outcome { step, result } => self.outcome(now, step, result, &mut out),
            Input::Command(command) => self.command(now, command, &mut out),
            Input::Tick => self.tick(now, &mut out),
            Input::Leadership(active) => {
                if self.active != active {
                    self.active = active;
                    self.suspicion = None;
                    out.push(Action::Log(
                        Level::Info,
                        if active {
                            "this instance leads: it fails over and takes commands".into()
                        } else {
                            "another instance leads: this one only observes".into()
                        },
                    ));
                }
            }
            Input::Continue {
                generation,
                primary,
            } => self.continue_from(generation, primary, &mut out),
            Input::PeerSighting { node, at } => {
                let latest = self.peer_sightings.entry(node).or_insert(at);
                *latest = (*latest).max(at);
            }
        }
        out
    }

    /// Takes over the previous leader's view: its generation (if newer) and its primary.
    fn continue_from(&mut self, generation: u64, primary: Option<NodeId>, out: &mut Vec<Action>) {
        if self.run.is_some() {
            return;
        }
        let changed =
            generation > self.generation || (primary.is_some() && primary != self.primary);
        self.generation = self.generation.max(generation);
        if let Some(new) = primary
            && self.primary != Some(new)
        {
            if let Some(old) = self.primary {
                self.needs_rejoin.insert(old);
            }
            self.needs_rejoin.remove(&new);
            self.primary = Some(new);
            self.suspicion = None;
            self.orphaned = None;
        }
        self.paused = false;
        if changed {
            out.push(Action::Log(
                Level::Info,
                format!(
                    "continuing from the published view: generation {}, primary {}",
                    self.generation,
                    self.primary
                        .map(|p| self.name(p).to_string())
                        .unwrap_or_else(|| "none".into())
                ),
            ));
        }
        self.publish(out);
    }

    fn spec(&self, node: NodeId) -> &NodeSpec {
        &self.nodes[usize::from(node.0)]
    }

    fn name(&self, node: NodeId) -> Arc<str> {
        self.spec(node).name.clone()
    }

    fn all_nodes(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    fn status(&self, node: NodeId) -> Option<&NodeStatus> {
        self.tracked[usize::from(node.0)]
            .last_ok
            .as_ref()
            .map(|(_, s)| s)
    }

    fn publish(&self, out: &mut Vec<Action>) {
        out.push(Action::Publish(self.published()));
    }

    fn observe(&mut self, now: Timestamp, observation: Observation, out: &mut Vec<Action>) {
        let node = observation.node;
        let Some(tracked) = self.tracked.get_mut(usize::from(node.0)) else {
            return;
        };
        tracked.observed = true;
        tracked
            .health
            .observe(&self.policy.health, &observation.outcome);
        match &observation.outcome {
            Ok(status) => {
                tracked.consecutive_failures = 0;
                tracked.last_error = None;
                tracked.last_ok = Some((observation.at, status.clone()));
            }
            Err(error) => {
                tracked.consecutive_failures = tracked.consecutive_failures.saturating_add(1);
                tracked.last_error = Some(error.clone());
            }
        }
        let writable = matches!(&observation.outcome, Ok(status) if !status.in_recovery);

        if let Some(&stuck) = self.diverged.get(&node)
            && matches!(&observation.outcome,
                Ok(status) if status.in_recovery && status.replay_lsn.is_some_and(|r| r > stuck))
        {
            self.diverged.remove(&node);
            out.push(Action::Log(
                Level::Info,
                format!(
                    "{} replays past {stuck}: it follows the primary's timeline",
                    self.name(node)
                ),
            ));
        }
        if self.needs_rejoin.contains(&node) {
            if matches!(&observation.outcome, Ok(status) if status.in_recovery) {
                self.needs_rejoin.remove(&node);
                out.push(Action::Log(
                    Level::Info,
                    format!("{} is a replica again", self.name(node)),
                ));
            }
            return;
        }
        if self.run.is_some() {
            return;
        }
        match self.primary {
            None => self.adopt(now, out),
            Some(primary) if primary == node => {
                // A node seen writable on a newer timeline while this primary still answered
                // (the probes raced the promotion made outside Meridian): followed now that
                // the primary fails, as if the probes had come the other way round.
                if let (Err(_), Some(newer)) = (&observation.outcome, self.promoted_outside(node)) {
                    self.follow_promoted(newer, primary, out);
                    return;
                }
                if writable {
                    if self.suspicion.take().is_some() {
                        out.push(Action::Log(
                            Level::Info,
                            format!("primary {} answers again", self.name(node)),
                        ));
                        out.push(Action::Resolve(AlertKind::PrimaryUnreachable, Some(node)));
                    }
                } else if self.suspicion.is_none() {
                    let why = match &observation.outcome {
                        Ok(_) => "it is in recovery",
                        Err(_) => "a probe failed",
                    };
                    self.suspect(now, why, out);
                }
            }
            Some(primary) if writable => {
                // A second writable node. Promoted by someone else after the primary died (a
                // newer timeline while the primary does not answer), or a split brain.
                let primary_failing = self.tracked[usize::from(primary.0)].consecutive_failures > 0;
                if primary_failing && self.is_promoted_outside(node, primary) {
                    self.follow_promoted(node, primary, out);
                } else {
                    self.needs_rejoin.insert(node);
                    out.push(Action::Log(
                        Level::Warn,
                        format!(
                            "{} accepts writes but is not the primary of generation {}: no traffic is routed to it until it rejoins",
                            self.name(node),
                            self.generation
                        ),
                    ));
                }
            }
            Some(_) => {}
        }
        if self.suspicion.is_some() {
            self.try_confirm(now, out);
        }
    }

    /// A node other than `primary` whose last probe succeeded and found it promoted outside
    /// Meridian.
    fn promoted_outside(&self, primary: NodeId) -> Option<NodeId> {
        self.nodes.iter().map(|n| n.id).find(|&id| {
            id != primary
                && self.tracked[usize::from(id.0)].consecutive_failures == 0
                && self.is_promoted_outside(id, primary)
        })
    }

    /// Whether `node` was last seen writable on a newer timeline than `primary`'s.
    fn is_promoted_outside(&self, node: NodeId, primary: NodeId) -> bool {
        let primary_timeline = self.status(primary).and_then(|s| s.timeline);
        self.status(node)
            .is_some_and(|s| !s.in_recovery && s.timeline > primary_timeline)
    }

    /// Makes `node`, promoted outside Meridian while `primary` does not answer, the primary
    /// of a new generation; `primary` needs a rejoin.
    fn follow_promoted(&mut self, node: NodeId, primary: NodeId, out: &mut Vec<Action>) {
        let timeline = self.status(node).and_then(|s| s.timeline);
        out.push(Action::Log(
            Level::Warn,
            format!(
                "{} was promoted outside Meridian (timeline {:?}) while primary {} does not answer: following it",
                self.name(node),
                timeline,
                self.name(primary)
            ),
        ));
        self.needs_rejoin.remove(&node);
        self.needs_rejoin.insert(primary);
        self.suspicion = None;
        out.push(Action::Resolve(
            AlertKind::PrimaryUnreachable,
            Some(primary),
        ));
        self.generation += 1;
        self.primary = Some(node);
        self.orphaned = None;
        self.publish(out);
    }

    /// Chooses the first primary once every node has been observed: the writable one, or among
    /// several the one on the newest timeline (the others need rejoin).
    fn adopt(&mut self, _now: Timestamp, out: &mut Vec<Action>) {
        if self.tracked.iter().any(|t| !t.observed) || self.halted.is_some() {
            return;
        }
        let mut writable: Vec<NodeId> = self
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|&id| !self.needs_rejoin.contains(&id))
            .filter(|&id| {
                let t = &self.tracked[usize::from(id.0)];
                t.consecutive_failures == 0
                    && t.last_ok.as_ref().is_some_and(|(_, s)| !s.in_recovery)
            })
            .collect();
        if writable.is_empty() {
            return;
        }
        writable.sort_by_key(|&id| std::cmp::Reverse(self.status(id).and_then(|s| s.timeline)));
        let chosen = writable[0];
        for &other in &writable[1..] {
            self.needs_rejoin.insert(other);
            out.push(Action::Log(
                Level::Warn,
                format!(
                    "{} also accepts writes, on an older timeline than {}: no traffic is routed to it until it rejoins",
                    self.name(other),
                    self.name(chosen)
                ),
            ));
        }
        // A node that does not answer now but accepted writes when it last did (the primary a
        // failed run left behind) was a primary before this one: it must not come back as one.
        let silent: Vec<NodeId> = self
            .nodes
            .iter()
            .map(|n| n.id)
            .filter(|&id| id != chosen && !self.needs_rejoin.contains(&id))
            .filter(|&id| {
                let t = &self.tracked[usize::from(id.0)];
                t.consecutive_failures > 0
                    && t.last_ok.as_ref().is_some_and(|(_, s)| !s.in_recovery)
            })
            .collect();
        for other in silent {
            self.needs_rejoin.insert(other);
            out.push(Action::Log(
                Level::Warn,
                format!(
                    "{} does not answer and accepted writes when it last did: no traffic is routed to it until it rejoins",
                    self.name(other)
                ),
            ));
        }
        self.generation += 1;
        self.primary = Some(chosen);
        self.orphaned = None;
        out.push(Action::Log(
            Level::Info,
            format!(
                "primary is {} (generation {})",
                self.name(chosen),
                self.generation
            ),
        ));
        self.publish(out);
    }

    fn suspect(&mut self, now: Timestamp, why: &str, out: &mut Vec<Action>) {
        let Some(primary) = self.primary else { return };
        self.suspicion = Some(Suspicion {
            since: now,
            last_probe: now,
            reported: BTreeSet::new(),
        });
        out.push(Action::Log(
            Level::Warn,
            format!(
                "primary {} is suspect: {why}; probing every node every {:?}",
                self.name(primary),
                self.policy.confirm_interval
            ),
        ));
        out.push(Action::Probe(self.all_nodes()));
    }

    fn tick(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        let all = self.all_nodes();
        if let Some(suspicion) = &mut self.suspicion
            && now.since(suspicion.last_probe) >= self.policy.confirm_interval
        {
            suspicion.last_probe = now;
            out.push(Action::Probe(all));
        }
        if let Some(run) = &self.run {
            let expired: Vec<StepId> = run
                .pending
                .iter()
                .filter(|(_, _, started)| now.since(*started) >= self.policy.step_timeout)
                .map(|(step, _, _)| *step)
                .collect();
            for step in expired {
                let timeout = format!("timed out after {:?}", self.policy.step_timeout);
                self.outcome(now, step, Err(timeout), out);
            }
        }
    }

    /// How long a live stream from `primary` to a replica with `replica`'s settings may be
    /// silent; `None`: without limit.
    ///
    /// An idle primary sends nothing by itself. A replica reports to its sender every
    /// `wal_receiver_status_interval`, and the sender pings a replica only after half its
    /// `wal_sender_timeout` without a report; the replica asks its sender for a reply after
    /// half its own `wal_receiver_timeout` without a message (`walreceiver.c`), or never
    /// when that is zero (PostgreSQL docs, 20.6.3). So a live idle stream may stay silent for
    /// up to half the replica's `wal_receiver_timeout`: `receiver_timeout` is raised to that
    /// plus a second.
    fn receiver_timeout(&self, primary: NodeId, replica: &NodeStatus) -> Option<Duration> {
        let half_plus_a_second = |t: Duration| t / 2 + Duration::from_secs(1);
        let sender = self
            .status(primary)
            .and_then(|s| s.wal_sender_timeout)
            .map(half_plus_a_second)
            .unwrap_or_default();
        let receiver = match replica.wal_receiver_timeout {
            Some(Duration::ZERO) => return None,
            Some(t) => half_plus_a_second(t),
            None => Duration::ZERO,
        };
        Some(self.policy.receiver_timeout.max(sender).max(receiver))
    }

    /// Whether `status` (replica `node`'s) shows a live stream from the primary: streaming,
    /// heard from recently, and not from another node (a cascade). A cascade is known by its
    /// sender's address, or, when it streams through an address Meridian does not know (a
    /// relay, a NAT), by another replica listing it among the replicas it feeds.
    fn receives_from_primary(&self, node: NodeId, status: &NodeStatus, primary: NodeId) -> bool {
        let Some(receiver) = &status.wal_receiver else {
            return false;
        };
        if !receiver.is_streaming() {
            return false;
        }
        let name = self.name(node);
        let from_other_node = self.nodes.iter().any(|n| {
            n.id != primary
                && n.id != node
                && ((Some(n.port) == receiver.sender_port
                    && receiver
                        .sender_host
                        .as_deref()
                        .is_none_or(|h| h == &*n.host))
                    || self.status(n.id).is_some_and(|s| {
                        s.in_recovery && s.downstream.iter().any(|d| *d.application_name == *name)
                    }))
        });
        let timeout = self.receiver_timeout(primary, status);
        !from_other_node
            && receiver
                .last_message_age
                .zip(timeout)
                .is_none_or(|(age, timeout)| age <= timeout)
    }

    fn try_confirm(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        let (Some(primary), Some(suspicion)) = (self.primary, self.suspicion.clone()) else {
            return;
        };
        let failures = self.tracked[usize::from(primary.0)].consecutive_failures;
        if failures < self.policy.failure_threshold {
            return;
        }
        let mut fresh = Vec::new();
        let mut receiving = Vec::new();
        for node in self.nodes.iter().map(|n| n.id).filter(|&n| n != primary) {
            // A witness answered since the suspicion began and still answers: a replica that
            // heard from the primary and then died with it (a lost region) proves nothing.
            let tracked = &self.tracked[usize::from(node.0)];
            if let Some((at, status)) = &tracked.last_ok
                && *at >= suspicion.since
                && tracked.consecutive_failures == 0
                && status.in_recovery
            {
                fresh.push(node);
                if self.receives_from_primary(node, status, primary) {
                    receiving.push(node);
                }
            }
        }
        if let Some(&seen) = self.peer_sightings.get(&primary)
            && seen >= suspicion.since
            && now.since(seen) < self.policy.receiver_timeout
        {
            self.report_once(
                "peer-sighting",
                out,
                Level::Warn,
                format!(
                    "primary {} does not answer this instance but another instance reached it {} ms ago: it is alive, no failover",
                    self.name(primary),
                    now.since(seen).as_millis()
                ),
            );
            return;
        }
        if !receiving.is_empty() {
            let names: Vec<Arc<str>> = receiving.iter().map(|&n| self.name(n)).collect();
            self.report_once(
                "receiving",
                out,
                Level::Warn,
                format!(
                    "primary {} does not answer Meridian but {} still receive WAL from it: it is alive, no failover",
                    self.name(primary),
                    names.join(", ")
                ),
            );
            let alerted = self
                .suspicion
                .as_ref()
                .is_some_and(|s| s.reported.contains("receiving-alert"));
            if !alerted {
                // Its own kind: the node-state rule's endpoint_down (same node) would overwrite
                // the message that says why there is no failover.
                if let Some(condition) = Condition::failover(
                    AlertKind::PrimaryUnreachable,
                    Some(primary),
                    f64::from(failures),
                    format!(
                        "primary unreachable from Meridian, but replicas still receive WAL from it ({}): not failing over",
                        names.join(", ")
                    ),
                ) {
                    out.push(Action::Raise(Condition {
                        threshold: f64::from(self.policy.failure_threshold),
                        ..condition
                    }));
                }
                if let Some(s) = &mut self.suspicion {
                    s.reported.insert("receiving-alert");
                }
            }
            return;
        }
        if fresh.is_empty() {
            self.report_once(
                "no-witness",
                out,
                Level::Warn,
                format!(
                    "primary {} does not answer and no replica answers either: waiting",
                    self.name(primary)
                ),
            );
            return;
        }
        let reason = format!(
            "primary {} missed {failures} probes and no replica receives WAL from it",
            self.name(primary)
        );
        if !self.active {
            self.report_once(
                "follower",
                out,
                Level::Info,
                format!("{reason}; the leading instance decides"),
            );
            return;
        }
        if !self.policy.automatic {
            self.report_once(
                "manual",
                out,
                Level::Warn,
                format!("{reason}; automatic failover is off"),
            );
            return;
        }
        if let Some(why) = &self.halted {
            let why = why.clone();
            self.report_once(
                "halted",
                out,
                Level::Warn,
                format!("{reason}; automatic failover is halted ({why})"),
            );
            return;
        }
        if let Some(last) = self.last_automatic
            && now.since(last) < self.policy.min_interval
        {
            self.report_once(
                "too-soon",
                out,
                Level::Warn,
                format!(
                    "{reason}; the last failover was less than {:?} ago",
                    self.policy.min_interval
                ),
            );
            return;
        }
        self.start(now, RunKind::Failover, reason, None, None, out);
    }

    fn report_once(
        &mut self,
        key: &'static str,
        out: &mut Vec<Action>,
        level: Level,
        message: String,
    ) {
        if let Some(suspicion) = &mut self.suspicion
            && suspicion.reported.insert(key)
        {
            out.push(Action::Log(level, message));
        }
    }

    /// The candidates for promotion: every replica but those awaiting rejoin.
    fn candidates(&self, primary: Option<NodeId>) -> Vec<Candidate> {
        let synchronous: BTreeSet<&str> = primary
            .and_then(|p| self.status(p))
            .map(|s| {
                s.downstream
                    .iter()
                    .filter(|d| d.sync_state == "sync" || d.sync_state == "quorum")
                    .map(|d| d.application_name.as_str())
                    .collect()
            })
            .unwrap_or_default();
        self.nodes
            .iter()
            .filter(|n| {
                Some(n.id) != primary
                    && !self.needs_rejoin.contains(&n.id)
                    && !self.diverged.contains_key(&n.id)
            })
            .filter_map(|n| {
                let tracked = &self.tracked[usize::from(n.id.0)];
                let status = tracked.last_ok.as_ref().map(|(_, s)| s);
                if status.is_some_and(|s| !s.in_recovery) {
                    return None;
                }
                Some(Candidate {
                    node: n.id,
                    name: n.name.clone(),
                    region: n.region.clone(),
                    region_priority: n.region_priority,
                    node_priority: n.priority,
                    no_failover: n.no_failover,
                    // Unanswered probes since the last success make a node unfit whatever
                    // its longer-term judgement.
                    health: if tracked.consecutive_failures > 0 {
                        Health::Down
                    } else {
                        tracked.health.health()
                    },
                    received: self.received(n.id),
                    latency: status.map(|s| s.latency),
                    synchronous: synchronous.contains(&*n.name),
                })
            })
            .collect()
    }

    /// A replica's received WAL position (replayed, if it reports no receiver), as last seen.
    fn received(&self, node: NodeId) -> Option<Lsn> {
        self.status(node)
            .and_then(|s| s.receive_lsn.or(s.replay_lsn))
    }

    fn synchronous_mode(&self, primary: NodeId) -> Option<String> {
        self.status(primary)
            .map(|s| s.synchronous_standby_names.trim().to_owned())
            .filter(|names| !names.is_empty())
    }

    /// Starts a failover (primary gone) or a switchover (primary alive, fenced first).
    fn start(
        &mut self,
        now: Timestamp,
        kind: RunKind,
        reason: String,
        region: Option<Arc<str>>,
        target: Option<NodeId>,
        out: &mut Vec<Action>,
    ) {
        let Some(old) = self.primary.or(self.orphaned) else {
            out.push(Action::Log(
                Level::Warn,
                format!("{reason}: there is no primary to replace"),
            ));
            return;
        };
        let synchronous = self.synchronous_mode(old);
        let policy = RankingPolicy {
            max_lag: self.policy.max_lag,
            synchronous: synchronous.is_some(),
            region,
            primary_region: Some(self.spec(old).region.clone()),
        };
        let reference = self.status(old).and_then(|s| s.current_lsn);
        let mut candidates = self.candidates(Some(old));
        if let Some(target) = target {
            candidates.retain(|c| c.node == target);
        }
        let ranking: Ranking = candidates::rank(&candidates, reference, &policy);
        let id = self.next_run;
        self.next_run += 1;
        let mut record = RunRecord {
            id,
            kind,
            reason: reason.clone(),
            old_primary: Some(old),
            new_primary: None,
            generation: self.generation,
            started_at: now,
            finished_at: None,
            outcome: RunOutcome::InProgress,
            phases: Vec::new(),
            ranking: ranking.to_string(),
        };
        if let Some(suspicion) = &self.suspicion {
            record.phases.push(PhaseRecord {
                name: "detection".into(),
                started_at: suspicion.since,
                finished_at: now,
                outcome: "ok".into(),
            });
        }
        let Some(chosen) = ranking.chosen().map(|c| c.node) else {
            let why = if ranking.entries.is_empty() {
                "no replica to promote".to_owned()
            } else {
                format!("no eligible replica:\n{ranking}")
            };
            record.outcome = RunOutcome::Failed(why.clone());
            record.finished_at = Some(now);
            out.push(Action::Record(record));
            out.push(Action::Log(Level::Warn, format!("{reason}, but {why}")));
            if let Some(c) = Condition::failover(
                AlertKind::FailoverFailed,
                Some(old),
                0.0,
                format!("{reason}, but {why}"),
            ) {
                out.push(Action::Raise(c));
            }
            // Not halted: a replica may become eligible; but do not retry within this suspicion.
            if let Some(s) = &mut self.suspicion {
                s.reported.insert("no-candidate");
            }
            self.suspicion = self.suspicion.take().map(|mut s| {
                s.since = now;
                s
            });
            return;
        };
        record.new_primary = Some(chosen);
        out.push(Action::Log(
            Level::Warn,
            format!(
                "{}: {reason}; promoting {}\n{ranking}",
                kind.as_str(),
                self.name(chosen)
            ),
        ));
        if let Some(c) = Condition::failover(
            AlertKind::FailoverTriggered,
            Some(old),
            0.0,
            format!("{reason}; promoting {}", self.name(chosen)),
        ) {
            out.push(Action::Raise(c));
        }
        self.paused = true;
        self.primary = None;
        self.publish(out);
        let mut run = Run {
            record,
            old,
            new: chosen,
            stage: Stage::Fencing,
            stage_started: now,
            pending: Vec::new(),
            synchronous,
            secured: false,
            ahead: BTreeMap::new(),
            fenced: false,
        };
        let old_error = self.tracked[usize::from(old.0)].last_error.clone();
        let dead =
            old_error.as_ref().is_some_and(ProbeError::is_strong) && kind == RunKind::Failover;
        if dead {
            run.record.phases.push(PhaseRecord {
                name: "fence".into(),
                started_at: now,
                finished_at: now,
                outcome: "skipped: nothing listens on the old primary".into(),
            });
            self.run = Some(run);
            self.promote(now, out);
        } else {
            self.run = Some(run);
            self.execute(now, Work::Fence { node: old }, out);
        }
        self.record(out);
    }

    fn execute(&mut self, now: Timestamp, work: Work, out: &mut Vec<Action>) {
        let step = StepId(self.next_step);
        self.next_step += 1;
        if let Some(run) = &mut self.run {
            run.pending.push((step, work.clone(), now));
        }
        out.push(Action::Execute { step, work });
    }

    fn record(&self, out: &mut Vec<Action>) {
        if let Some(run) = &self.run {
            out.push(Action::Record(run.record.clone()));
        }
    }

    fn phase(&mut self, name: &str, now: Timestamp, outcome: String) {
        if let Some(run) = &mut self.run {
            run.record.phases.push(PhaseRecord {
                name: name.to_owned(),
                started_at: run.stage_started,
                finished_at: now,
                outcome,
            });
            run.stage_started = now;
        }
    }

    fn set_stage(&mut self, stage: Stage, now: Timestamp) {
        if let Some(run) = &mut self.run {
            run.stage = stage;
            run.stage_started = now;
        }
    }

    /// Promotes the candidate, after giving it the synchronous replicas it must wait for as a
    /// primary (`ALTER SYSTEM` works on a replica): when the old primary replicated
    /// synchronously, the new one's very first commit already waits for its replicas, so no
    /// commit is acknowledged from a single copy between the promotion and the repoint; when
    /// it did not, or no replica is left to wait for, the setting is cleared, so that one the
    /// candidate inherited (a base backup of a synchronous primary) cannot block its commits.
    fn promote(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        let Some((new, synchronous)) = self.run.as_ref().map(|r| (r.new, r.synchronous.clone()))
        else {
            return;
        };
        let mut ahead = BTreeMap::new();
        // The candidate's timeline will begin where its received WAL ends.
        if let Some(fork) = self.received(new) {
            ahead = self.ahead_of(new, fork);
            for (&node, received) in &ahead {
                out.push(Action::Log(
                    Level::Warn,
                    format!(
                        "{} received WAL up to {received}, past {fork} where {}'s timeline will begin: it cannot follow {} until it is rejoined (pg_rewind); until then commits do not wait for it and no traffic goes to it",
                        self.name(node),
                        self.name(new),
                        self.name(new)
                    ),
                ));
            }
        }
        let value = synchronous
            .and_then(|names| {
                let live = self.synchronous_candidates(new, &ahead);
                new_synchronous(&names, &self.name(new), &live)
            })
            .unwrap_or_default();
        if let Some(run) = &mut self.run {
            run.ahead = ahead;
        }
        self.set_stage(Stage::Securing, now);
        self.execute(now, Work::SetSynchronous { node: new, value }, out);
    }

    fn outcome(
        &mut self,
        now: Timestamp,
        step: StepId,
        result: Result<StepOutput, String>,
        out: &mut Vec<Action>,
    ) {
        let Some(run) = &mut self.run else { return };
        let Some(index) = run.pending.iter().position(|(s, _, _)| *s == step) else {
            return;
        };
        let (_, work, _) = run.pending.remove(index);
        let stage = run.stage;
        let kind = run.record.kind;
        match (stage, &work, result) {
            (Stage::Fencing, Work::Fence { .. }, Ok(StepOutput::Fenced { lsn })) => {
                self.phase("fence", now, "ok".into());
                if let Some(run) = &mut self.run {
                    run.fenced = true;
                }
                match (kind, lsn) {
                    (RunKind::Switchover, Some(lsn)) => {
                        let new = self.run.as_ref().map(|r| r.new).expect("run");
                        self.set_stage(Stage::WaitingReplay, now);
                        self.execute(now, Work::WaitReplay { node: new, lsn }, out);
                    }
                    _ => self.promote(now, out),
                }
            }
            (Stage::Fencing, Work::Fence { .. }, Err(error)) => {
                let (old, started) = self
                    .run
                    .as_ref()
                    .map(|r| (r.old, r.record.started_at))
                    .expect("run");
                if kind == RunKind::Switchover {
                    // A live primary that cannot be fenced must stay the primary.
                    self.phase("fence", now, error.clone());
                    self.abort(now, format!("could not fence the primary: {error}"), out);
                } else if self.answers_writable_since(old, started) {
                    // It came back while the fence was under way: promoting now would make
                    // two writable primaries. It stays the primary.
                    self.phase("fence", now, error.clone());
                    self.abort(
                        now,
                        format!(
                            "primary {} answers again but could not be fenced: {error}",
                            self.name(old)
                        ),
                        out,
                    );
                } else {
                    // Best effort: the old primary does not answer, which is why we are here.
                    self.phase("fence", now, format!("not reachable: {error}"));
                    self.promote(now, out);
                }
            }
            (Stage::WaitingReplay, Work::WaitReplay { .. }, Ok(_)) => {
                self.phase("replay", now, "ok".into());
                self.promote(now, out);
            }
            (Stage::WaitingReplay, Work::WaitReplay { .. }, Err(error)) => {
                self.phase("replay", now, error.clone());
                self.abort(now, format!("the target did not catch up: {error}"), out);
            }
            (Stage::Securing, Work::SetSynchronous { node, value }, result) => {
                let (node, value) = (*node, value.clone());
                match result {
                    Ok(_) => {
                        let outcome = if value.is_empty() {
                            "none: asynchronous".to_owned()
                        } else {
                            value
                        };
                        self.phase("synchronous", now, outcome);
                        if let Some(run) = &mut self.run {
                            run.secured = true;
                        }
                    }
                    Err(error) => {
                        // Better a primary than none: promote anyway, and set the names again
                        // once it is one.
                        self.phase("synchronous", now, error.clone());
                        out.push(Action::Log(
                            Level::Warn,
                            format!(
                                "could not set {}'s synchronous replicas before promoting it ({error}): its first commits may be acknowledged before a replica has them",
                                self.name(node)
                            ),
                        ));
                    }
                }
                // The old primary may have come back meanwhile: unless it was fenced,
                // promoting now would make two writable primaries. It stays the primary.
                let (old, started, fenced) = self
                    .run
                    .as_ref()
                    .map(|r| (r.old, r.record.started_at, r.fenced))
                    .expect("run");
                if !fenced && self.answers_writable_since(old, started) {
                    self.abort(
                        now,
                        format!(
                            "primary {} answers again, unfenced: not promoting {}",
                            self.name(old),
                            self.name(node)
                        ),
                        out,
                    );
                    return;
                }
                self.set_stage(Stage::Promoting, now);
                self.execute(now, Work::Promote { node }, out);
            }
            (Stage::Promoting, Work::Promote { node }, Ok(_)) => {
                let node = *node;
                self.phase("promote", now, "ok".into());
                self.promoted(now, node, out);
            }
            (Stage::Promoting, Work::Promote { node }, Err(error)) => {
                let name = self.name(*node);
                self.phase("promote", now, error.clone());
                let why = format!("promoting {name} failed: {error}");
                self.halted = Some(why.clone());
                self.orphaned = self.run.as_ref().map(|r| r.old);
                self.finish(now, RunOutcome::Failed(why.clone()), out);
                self.paused = false;
                self.publish(out);
                out.push(Action::Log(
                    Level::Warn,
                    format!("{why}; automatic failover is halted until an operator acts"),
                ));
                if let Some(c) =
                    Condition::failover(AlertKind::FailoverFailed, Some(*node), 0.0, why)
                {
                    out.push(Action::Raise(c));
                }
            }
            (Stage::Repointing, _, result) => {
                if let Err(error) = &result {
                    let target = self.name(work.node());
                    out.push(Action::Log(
                        Level::Warn,
                        format!("{work:?} on {target} failed: {error}"),
                    ));
                }
                if let Some((old, new)) = self
                    .run
                    .as_ref()
                    .filter(|run| run.pending.is_empty())
                    .map(|run| (run.old, run.new))
                {
                    self.phase("repoint", now, "ok".into());
                    if kind == RunKind::Switchover {
                        self.set_stage(Stage::Demoting, now);
                        self.execute(
                            now,
                            Work::Rejoin {
                                node: old,
                                upstream: new,
                            },
                            out,
                        );
                    } else {
                        self.complete(now, out);
                    }
                }
            }
            (Stage::Demoting, Work::Rejoin { node, .. }, result) => {
                let failed = result.is_err();
                let outcome = match result {
                    Ok(_) => {
                        // Rewound onto the primary's timeline.
                        self.diverged.remove(node);
                        // It runs again: look at it now rather than when its probe's reconnect
                        // backoff (up to reconnect_max) next allows.
                        out.push(Action::Probe(vec![*node]));
                        "ok".to_owned()
                    }
                    Err(error) => {
                        out.push(Action::Log(
                            Level::Warn,
                            format!(
                                "{} could not be turned into a replica: {error}; it needs rejoin",
                                self.name(*node)
                            ),
                        ));
                        error
                    }
                };
                self.phase("demote", now, outcome.clone());
                if self.run.as_ref().map(|r| r.record.kind) == Some(RunKind::Rejoin) {
                    // The run was only this step: it failed if the step did.
                    let outcome = if failed {
                        RunOutcome::Failed(outcome)
                    } else {
                        RunOutcome::Completed
                    };
                    self.finish(now, outcome, out);
                } else {
                    self.complete(now, out);
                }
            }
            (Stage::Aborting, _, result) => {
                if let Err(error) = result {
                    out.push(Action::Log(
                        Level::Warn,
                        format!("undoing the fence failed: {error}"),
                    ));
                }
                if self.run.as_ref().is_some_and(|r| r.pending.is_empty()) {
                    self.run = None;
                }
            }
            (_, work, result) => {
                out.push(Action::Log(
                    Level::Warn,
                    format!("unexpected outcome of {work:?}: {result:?}"),
                ));
            }
        }
        self.record(out);
    }

    /// The new primary accepts writes: publish it, then repoint the others.
    fn promoted(&mut self, now: Timestamp, new: NodeId, out: &mut Vec<Action>) {
        let Some(run) = &mut self.run else { return };
        let old = run.old;
        self.generation += 1;
        run.record.generation = self.generation;
        self.primary = Some(new);
        self.orphaned = None;
        self.paused = false;
        self.suspicion = None;
        self.needs_rejoin.insert(old);
        let synchronous = run.synchronous.clone().filter(|_| !run.secured);
        let ahead = std::mem::take(&mut run.ahead);
        self.diverged.extend(&ahead);
        self.publish(out);
        self.phase("publish", now, format!("generation {}", self.generation));
        out.push(Action::Log(
            Level::Warn,
            format!(
                "{} is the primary of generation {}",
                self.name(new),
                self.generation
            ),
        ));
        self.set_stage(Stage::Repointing, now);
        for (node, upstream) in self.repoint_plan(new) {
            self.execute(now, Work::Repoint { node, upstream }, out);
        }
        if let Some(names) = synchronous {
            let live: Vec<Arc<str>> = self.synchronous_candidates(new, &ahead);
            match new_synchronous(&names, &self.name(new), &live) {
                Some(value) => self.execute(now, Work::SetSynchronous { node: new, value }, out),
                None => out.push(Action::Log(
                    Level::Warn,
                    format!(
                        "the old primary replicated synchronously ({names}) but no replica is left to wait for: {} replicates asynchronously until one is",
                        self.name(new)
                    ),
                )),
            }
        }
        if self.run.as_ref().is_some_and(|r| r.pending.is_empty()) {
            self.phase("repoint", now, "nothing to repoint".into());
            if self.run.as_ref().map(|r| r.record.kind) == Some(RunKind::Switchover) {
                self.set_stage(Stage::Demoting, now);
                self.execute(
                    now,
                    Work::Rejoin {
                        node: old,
                        upstream: new,
                    },
                    out,
                );
            } else {
                self.complete(now, out);
            }
        }
    }

    /// The replicas that may replicate synchronously from `primary`: those the repoint plan
    /// has streaming from it directly (a cascaded replica never connects to the primary, so
    /// naming it in `synchronous_standby_names` would make commits wait forever), those of its
    /// region first, then in configuration order; never one of `ahead` (see
    /// [`ahead_of`](Self::ahead_of)), which would never confirm a commit either.
    fn synchronous_candidates(
        &self,
        primary: NodeId,
        ahead: &BTreeMap<NodeId, Lsn>,
    ) -> Vec<Arc<str>> {
        let region = self.spec(primary).region.clone();
        let mut direct: Vec<&NodeSpec> = self
            .upstreams(primary)
            .into_iter()
            .filter(|&(node, upstream)| upstream == primary && !ahead.contains_key(&node))
            .map(|(node, _)| self.spec(node))
            .collect();
        direct.sort_by_key(|n| n.region != region);
        direct.into_iter().map(|n| n.name.clone()).collect()
    }

    /// The live replicas that received WAL past `fork`, where the `candidate`'s timeline will
    /// begin once it is promoted: the old primary sent them WAL the candidate never had (an
    /// asynchronous replica may be ahead of the synchronous one promoted), so they cannot
    /// follow the new timeline until they are rewound (rejoined). Asked just before the
    /// promotion, when the old timeline no longer moves; a replica streaming from the
    /// candidate itself is never ahead of it, whatever the timing of the probes says.
    fn ahead_of(&self, candidate: NodeId, fork: Lsn) -> BTreeMap<NodeId, Lsn> {
        self.upstreams(candidate)
            .into_iter()
            .filter(|&(node, _)| self.streams_from(node) != Some(candidate))
            .filter_map(|(node, _)| Some((node, self.received(node)?)))
            .filter(|&(_, received)| received > fork)
            .collect()
    }

    /// Where each surviving replica should stream from: the new primary for its own region and
    /// for every other region's leader (its first live member), the leader for the rest. Only
    /// the replicas not already streaming from their upstream.
    pub fn repoint_plan(&self, primary: NodeId) -> Vec<(NodeId, NodeId)> {
        self.upstreams(primary)
            .into_iter()
            .filter(|&(node, upstream)| self.streams_from(node) != Some(upstream))
            .collect()
    }

    /// Every live replica (other than `primary`) with the node it should stream from, as
    /// [`Failover::repoint_plan`] describes, in configuration order.
    fn upstreams(&self, primary: NodeId) -> Vec<(NodeId, NodeId)> {
        let primary_region = self.spec(primary).region.clone();
        let live = |id: NodeId| {
            let t = &self.tracked[usize::from(id.0)];
            id != primary
                && !self.needs_rejoin.contains(&id)
                && t.consecutive_failures == 0
                && t.last_ok.as_ref().is_some_and(|(_, s)| s.in_recovery)
        };
        let mut upstreams = Vec::new();
        let mut leaders: Vec<(Arc<str>, NodeId)> = Vec::new();
        for node in self.nodes.iter().filter(|n| live(n.id)) {
            let upstream = if node.region == primary_region {
                primary
            } else if let Some((_, leader)) = leaders.iter().find(|(r, _)| *r == node.region) {
                *leader
            } else {
                leaders.push((node.region.clone(), node.id));
                primary
            };
            upstreams.push((node.id, upstream));
        }
        upstreams
    }

    /// The configured node `node`'s WAL receiver streams from, if it is one of ours.
    fn streams_from(&self, node: NodeId) -> Option<NodeId> {
        let receiver = self.status(node)?.wal_receiver.as_ref()?;
        self.nodes
            .iter()
            .find(|n| {
                Some(n.port) == receiver.sender_port
                    && receiver
                        .sender_host
                        .as_deref()
                        .is_none_or(|h| h == &*n.host)
            })
            .map(|n| n.id)
    }

    fn complete(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        let Some(run) = &self.run else { return };
        let (old, new, kind) = (run.old, run.new, run.record.kind);
        if kind == RunKind::Failover {
            self.last_automatic = Some(now);
        }
        self.finish(now, RunOutcome::Completed, out);
        out.push(Action::Resolve(AlertKind::FailoverTriggered, Some(old)));
        out.push(Action::Resolve(AlertKind::PrimaryUnreachable, Some(old)));
        if let Some(c) = Condition::failover(
            AlertKind::FailoverCompleted,
            Some(new),
            0.0,
            format!("{} replaced {} as primary", self.name(new), self.name(old)),
        ) {
            out.push(Action::Raise(c));
        }
    }

    /// Ends the run with `outcome`, recording it.
    fn finish(&mut self, now: Timestamp, outcome: RunOutcome, out: &mut Vec<Action>) {
        if let Some(mut run) = self.run.take() {
            run.record.outcome = outcome;
            run.record.finished_at = Some(now);
            let first_write_pending = run.record.outcome == RunOutcome::Completed
                && !run.record.phases.iter().any(|p| p.name == FIRST_WRITE);
            out.push(Action::Record(run.record.clone()));
            self.completed = first_write_pending.then_some(run.record);
        }
    }

    /// Records the `first_write` phase of the run that published `generation` with `node` as
    /// primary (still running, or the last one completed), from its publication to now; once.
    fn write_accepted(
        &mut self,
        now: Timestamp,
        node: NodeId,
        generation: u64,
        out: &mut Vec<Action>,
    ) {
        let running = self.run.as_mut().map(|r| &mut r.record);
        let Some(record) = running
            .filter(|r| r.outcome == RunOutcome::InProgress)
            .or(self.completed.as_mut())
            .filter(|r| r.generation == generation && r.new_primary == Some(node))
            .filter(|r| r.phases.iter().any(|p| p.name == "publish"))
            .filter(|r| !r.phases.iter().any(|p| p.name == FIRST_WRITE))
        else {
            return;
        };
        let published = record
            .phases
            .iter()
            .find(|p| p.name == "publish")
            .map_or(record.started_at, |p| p.finished_at);
        record.phases.push(PhaseRecord {
            name: FIRST_WRITE.into(),
            started_at: published,
            finished_at: now,
            outcome: "ok".into(),
        });
        out.push(Action::Record(record.clone()));
        if self
            .completed
            .as_ref()
            .is_some_and(|c| c.generation == generation)
        {
            self.completed = None;
        }
    }

    /// A run that cannot finish: the old primary stays primary.
    fn abort(&mut self, now: Timestamp, why: String, out: &mut Vec<Action>) {
        let Some(run) = &self.run else { return };
        let (old, fenced) = (run.old, run.fenced);
        let what = run.record.kind.as_str();
        out.push(Action::Log(Level::Warn, format!("{what} aborted: {why}")));
        self.primary = Some(old);
        self.orphaned = None;
        self.paused = false;
        self.publish(out);
        if let Some(c) = Condition::failover(
            AlertKind::FailoverFailed,
            Some(old),
            0.0,
            format!("{what} aborted: {why}"),
        ) {
            out.push(Action::Raise(c));
        }
        out.push(Action::Resolve(AlertKind::FailoverTriggered, Some(old)));
        // On the run's own record: while the fence is undone the run lives on, and every
        // record re-issued from now on must say how it ended.
        if let Some(run) = &mut self.run {
            run.record.outcome = RunOutcome::Failed(why);
            run.record.finished_at = Some(now);
            out.push(Action::Record(run.record.clone()));
        }
        if fenced {
            self.set_stage(Stage::Aborting, now);
            if let Some(run) = &mut self.run {
                run.pending.clear();
            }
            self.execute(now, Work::Unfence { node: old }, out);
        } else {
            self.run = None;
        }
    }

    fn command(&mut self, now: Timestamp, command: Command, out: &mut Vec<Action>) {
        if !self.active {
            out.push(Action::Log(
                Level::Warn,
                format!("{command:?} refused: this instance does not lead; send it to the leader"),
            ));
            return;
        }
        if self.run.is_some() && !matches!(command, Command::ResumeAutomatic) {
            out.push(Action::Log(
                Level::Warn,
                format!("{command:?} refused: a failover or switchover is under way"),
            ));
            return;
        }
        match command {
            Command::ResumeAutomatic => {
                if self.halted.take().is_some() {
                    out.push(Action::Log(
                        Level::Info,
                        "automatic failover resumed".into(),
                    ));
                }
            }
            Command::Switchover { to } => {
                if !self.primary_alive() {
                    out.push(Action::Log(
                        Level::Warn,
                        "switchover refused: the primary does not answer; use failover".into(),
                    ));
                    return;
                }
                let reason = "switchover requested by an operator".to_owned();
                self.start(now, RunKind::Switchover, reason, None, to, out);
            }
            Command::Failover { region, node } => {
                self.halted = None;
                let target = match (&region, node) {
                    (Some(r), _) => format!(" to region {r}"),
                    (None, Some(n)) => format!(" to {}", self.name(n)),
                    (None, None) => String::new(),
                };
                let reason = format!("failover{target} requested by an operator");
                // A live primary is fenced first and its WAL replayed: a switchover.
                let kind = if self.primary_alive() {
                    RunKind::Switchover
                } else {
                    RunKind::Failover
                };
                self.start(now, kind, reason, region, node, out);
            }
            Command::Rejoin { node } => {
                let Some(primary) = self.primary else {
                    out.push(Action::Log(
                        Level::Warn,
                        "rejoin refused: there is no primary to follow".into(),
                    ));
                    return;
                };
                if node == primary {
                    out.push(Action::Log(
                        Level::Warn,
                        format!("rejoin refused: {} is the primary", self.name(node)),
                    ));
                    return;
                }
                // A one-step run of its own, so its outcome is tracked like any step.
                let id = self.next_run;
                self.next_run += 1;
                self.run = Some(Run {
                    record: RunRecord {
                        id,
                        kind: RunKind::Rejoin,
                        reason: format!("rejoin of {} requested by an operator", self.name(node)),
                        old_primary: Some(node),
                        new_primary: Some(primary),
                        generation: self.generation,
                        started_at: now,
                        finished_at: None,
                        outcome: RunOutcome::InProgress,
                        phases: Vec::new(),
                        ranking: String::new(),
                    },
                    old: node,
                    new: primary,
                    stage: Stage::Demoting,
                    stage_started: now,
                    pending: Vec::new(),
                    synchronous: None,
                    secured: false,
                    ahead: BTreeMap::new(),
                    fenced: false,
                });
                self.execute(
                    now,
                    Work::Rejoin {
                        node,
                        upstream: primary,
                    },
                    out,
                );
                // Recorded as it starts, like every run: the history shows it under way and the
                // operator's command gets its id.
                self.record(out);
            }
        }
    }

    /// Whether `node`'s latest probe succeeded, at or after `since`, and found it writable.
    fn answers_writable_since(&self, node: NodeId, since: Timestamp) -> bool {
        let t = &self.tracked[usize::from(node.0)];
        t.consecutive_failures == 0
            && t.last_ok
                .as_ref()
                .is_some_and(|(at, s)| *at >= since && !s.in_recovery)
    }

    fn primary_alive(&self) -> bool {
        self.primary.is_some_and(|p| {
            let t = &self.tracked[usize::from(p.0)];
            t.consecutive_failures == 0 && t.last_ok.as_ref().is_some_and(|(_, s)| !s.in_recovery)
        })
    }
}

/// The synchronous setting for a new primary, from the old primary's `setting`: the same method
/// and quorum over the same names, the promoted node's name replaced by another live replica
/// (`live`, preferred first), so that commits keep waiting for as many replicas as before.
/// Names that are no longer live replicas are dropped; `None` when none is left (replication
/// is then asynchronous until an operator sets it again). `*` (any standby) is kept as is.
pub fn new_synchronous(setting: &str, promoted: &str, live: &[Arc<str>]) -> Option<String> {
    let setting = setting.trim();
    if setting == "*" {
        return Some(setting.to_owned());
    }
    // Forms (PostgreSQL docs, 20.6.2): `ANY n (list)`, `FIRST n (list)`, `n (list)`, `list`.
    let (method, quorum, list) = match setting.find('(') {
        Some(open) => {
            let head = setting[..open].trim();
            let list = setting[open + 1..].trim_end().trim_end_matches(')');
            let mut words = head.split_whitespace();
            let (method, number) = match (words.next(), words.next()) {
                (Some(m), Some(n)) => (Some(m.to_ascii_uppercase()), n),
                (Some(n), None) => (None, n),
                _ => return None,
            };
            (method, number.parse::<usize>().ok()?, list)
        }
        None => (None, 1, setting),
    };
    let names: Vec<String> = list
        .split(',')
        .map(|n| n.trim().trim_matches('"').to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    let mut kept: Vec<String> = names
        .iter()
        .filter(|n| n.as_str() != promoted && live.iter().any(|l| &**l == n.as_str()))
        .cloned()
        .collect();
    // As many names as before: replace the promoted one (and any dead one) by live replicas.
    for candidate in live {
        if kept.len() >= names.len() {
            break;
        }
        if &**candidate != promoted && !kept.iter().any(|k| k == &**candidate) {
            kept.push(candidate.to_string());
        }
    }
    kept.truncate(names.len());
    if kept.is_empty() {
        return None;
    }
    let quorum = quorum.min(kept.len()).max(1);
    let list = kept
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    Some(match method {
        Some(method) => format!("{method} {quorum} ({list})"),
        None => format!("FIRST {quorum} ({list})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::{Downstream, WalReceiver};

    fn spec(id: u16, region: &str, region_priority: i32) -> NodeSpec {
        NodeSpec {
            id: NodeId(id),
            name: Arc::from(format!("n{id}")),
            region: Arc::from(region),
            region_priority,
            priority: 0,
            no_failover: false,
            host: Arc::from("127.0.0.1"),
            port: 5000 + id,
        }
    }

    fn primary_status(lsn: u64, downstream: &[(&str, &str)]) -> NodeStatus {
        NodeStatus {
            latency: Duration::from_millis(2),
            connect_latency: None,
            in_recovery: false,
            timeline: Some(1),
            current_lsn: Some(Lsn(lsn)),
            receive_lsn: None,
            replay_lsn: None,
            last_replay_at: None,
            wal_receiver: None,
            downstream: downstream
                .iter()
                .map(|(name, sync)| Downstream {
                    application_name: (*name).into(),
                    state: "streaming".into(),
                    sync_state: (*sync).into(),
                    flush_lsn: Some(Lsn(lsn)),
                    replay_lsn: Some(Lsn(lsn)),
                })
                .collect(),
            synchronous_standby_names: String::new(),
            connections: 1,
            max_connections: 100,
            wal_sender_timeout: Some(Duration::from_secs(5)),
            wal_receiver_timeout: None,
        }
    }

    fn replica_status(lsn: u64, upstream_port: Option<u16>, age: Duration) -> NodeStatus {
        NodeStatus {
            in_recovery: true,
            current_lsn: None,
            receive_lsn: Some(Lsn(lsn)),
            replay_lsn: Some(Lsn(lsn)),
            wal_receiver: upstream_port.map(|port| WalReceiver {
                status: Some("streaming".into()),
                sender_host: Some("127.0.0.1".into()),
                sender_port: Some(port),
                last_message_at: None,
                last_message_age: Some(age),
                timeline: Some(1),
            }),
            downstream: Vec::new(),
            ..primary_status(0, &[])
        }
    }

    fn ok(node: u16, at: u64, status: NodeStatus) -> Input {
        Input::Observation(Box::new(Observation {
            node: NodeId(node),
            at: Timestamp(at),
            outcome: Ok(status),
        }))
    }

    fn failed(node: u16, at: u64, error: ProbeError) -> Input {
        Input::Observation(Box::new(Observation {
            node: NodeId(node),
            at: Timestamp(at),
            outcome: Err(error),
        }))
    }

    fn published(actions: &[Action]) -> Vec<Published> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Publish(p) => Some(*p),
                _ => None,
            })
            .collect()
    }

    fn work(actions: &[Action]) -> Vec<(StepId, Work)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Execute { step, work } => Some((*step, work.clone())),
                _ => None,
            })
            .collect()
    }

    /// `started` holds a decision to promote: its first step sets the candidate's synchronous
    /// replicas (none here: the primary was asynchronous). Completes that step; returns the
    /// actions that follow, the promotion among them.
    fn secured(m: &mut Failover, at: u64, started: &[Action]) -> Vec<Action> {
        let [(step, Work::SetSynchronous { value, .. })] = &work(started)[..] else {
            panic!("the candidate's synchronous setting comes first: {started:?}");
        };
        assert_eq!(
            value, "",
            "an asynchronous primary's successor starts asynchronous"
        );
        m.handle(
            Timestamp(at),
            Input::Outcome {
                step: *step,
                result: Ok(StepOutput::Done),
            },
        )
    }

    /// Three nodes in one region, observed once: n0 primary.
    fn steady() -> Failover {
        let mut machine = Failover::new(
            FailoverPolicy::default(),
            vec![spec(0, "us", 10), spec(1, "us", 10), spec(2, "eu", 8)],
            1,
        );
        let mut actions = Vec::new();
        actions.extend(machine.handle(Timestamp(0), ok(0, 0, primary_status(100, &[]))));
        actions.extend(machine.handle(
            Timestamp(0),
            ok(1, 0, replica_status(100, Some(5000), Duration::ZERO)),
        ));
        actions.extend(machine.handle(
            Timestamp(0),
            ok(2, 0, replica_status(100, Some(5000), Duration::ZERO)),
        ));
        assert_eq!(
            published(&actions),
            vec![Published {
                generation: 1,
                primary: Some(NodeId(0)),
                paused: false
            }]
        );
        machine
    }

    #[test]
    fn the_writable_node_is_adopted_once_every_node_was_observed() {
        steady();
    }

    /// n1 promoted outside Meridian: writable, on timeline 2.
    fn promoted(at: u64) -> Input {
        let mut status = primary_status(120, &[]);
        status.timeline = Some(2);
        ok(1, at, status)
    }

    fn following_n1() -> Vec<Published> {
        vec![Published {
            generation: 2,
            primary: Some(NodeId(1)),
            paused: false,
        }]
    }

    #[test]
    fn a_replica_promoted_outside_meridian_after_the_primary_died_is_followed() {
        let mut m = steady();
        m.handle(Timestamp(1000), failed(0, 1000, ProbeError::Refused));
        let actions = m.handle(Timestamp(1100), promoted(1100));
        assert_eq!(published(&actions), following_n1());
    }

    #[test]
    fn a_promotion_seen_before_the_primary_fails_is_followed_when_it_does() {
        // The probes race the promotion: the promoted replica answers writable while the old
        // primary's last probe still succeeded. The outcome must not depend on that order.
        let mut m = steady();
        assert!(published(&m.handle(Timestamp(1000), promoted(1000))).is_empty());
        let actions = m.handle(Timestamp(1100), failed(0, 1100, ProbeError::Refused));
        assert_eq!(published(&actions), following_n1());
        assert!(work(&actions).is_empty(), "nothing to promote: {actions:?}");
    }

    #[test]
    fn a_second_writable_node_on_the_same_timeline_is_not_followed() {
        let mut m = steady();
        // Writable on the primary's own timeline: a split brain, not a promotion.
        m.handle(Timestamp(1000), ok(1, 1000, primary_status(120, &[])));
        let actions = m.handle(Timestamp(1100), failed(0, 1100, ProbeError::Refused));
        assert!(
            published(&actions)
                .iter()
                .all(|p| p.primary != Some(NodeId(1))),
            "{actions:?}"
        );
    }

    #[test]
    fn a_dead_primary_is_replaced_by_the_best_replica() {
        let mut m = steady();
        // The primary's postmaster is gone: refused, and the replicas' streams broke.
        let suspect = m.handle(Timestamp(1000), failed(0, 1000, ProbeError::Refused));
        assert!(
            suspect
                .iter()
                .any(|a| matches!(a, Action::Probe(nodes) if nodes.len() == 3))
        );
        m.handle(
            Timestamp(1200),
            ok(1, 1200, replica_status(100, None, Duration::ZERO)),
        );
        m.handle(
            Timestamp(1200),
            ok(2, 1200, replica_status(90, None, Duration::ZERO)),
        );
        assert!(
            m.handle(Timestamp(1200), failed(0, 1200, ProbeError::Refused))
                .iter()
                .all(|a| !matches!(a, Action::Execute { .. }))
        );
        let started = m.handle(Timestamp(1400), failed(0, 1400, ProbeError::Refused));
        assert_eq!(
            published(&started),
            vec![Published {
                generation: 1,
                primary: None,
                paused: true
            }]
        );
        let steps = work(&secured(&mut m, 1450, &started));
        assert_eq!(
            steps.len(),
            1,
            "fencing is skipped for a dead primary: {started:?}"
        );
        assert_eq!(
            steps[0].1,
            Work::Promote { node: NodeId(1) },
            "n1 has the most WAL"
        );

        let promoted = m.handle(
            Timestamp(1600),
            Input::Outcome {
                step: steps[0].0,
                result: Ok(StepOutput::Promoted { timeline: Some(2) }),
            },
        );
        assert_eq!(
            published(&promoted),
            vec![Published {
                generation: 2,
                primary: Some(NodeId(1)),
                paused: false
            }]
        );
        let repoints = work(&promoted);
        assert_eq!(repoints.len(), 1);
        assert_eq!(
            repoints[0].1,
            Work::Repoint {
                node: NodeId(2),
                upstream: NodeId(1)
            }
        );
        let done = m.handle(
            Timestamp(1700),
            Input::Outcome {
                step: repoints[0].0,
                result: Ok(StepOutput::Done),
            },
        );
        let record = done
            .iter()
            .filter_map(|a| match a {
                Action::Record(r) => Some(r.clone()),
                _ => None,
            })
            .next()
            .unwrap();
        assert_eq!(record.outcome, RunOutcome::Completed);
        let phases: Vec<&str> = record.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            phases,
            [
                "detection",
                "fence",
                "synchronous",
                "promote",
                "publish",
                "repoint"
            ]
        );
        assert!(
            done.iter()
                .any(|a| matches!(a, Action::Raise(c) if c.kind == AlertKind::FailoverCompleted))
        );
        assert_eq!(m.state().needs_rejoin, vec![NodeId(0)]);
    }

    /// Kills n0 of [`steady`] and carries the failover to n1 up to the end of the promotion:
    /// the actions of that last step (publish, repoint of n2).
    fn promote_n1_after_n0_dies(m: &mut Failover) -> Vec<Action> {
        let mut started = m.handle(Timestamp(1000), failed(0, 1000, ProbeError::Refused));
        for at in [1200, 1400] {
            m.handle(
                Timestamp(at),
                ok(1, at, replica_status(100, None, Duration::ZERO)),
            );
            m.handle(
                Timestamp(at),
                ok(2, at, replica_status(90, None, Duration::ZERO)),
            );
            started.extend(m.handle(Timestamp(at), failed(0, at, ProbeError::Refused)));
        }
        let started = secured(m, 1450, &started);
        let [(promote, Work::Promote { node: NodeId(1) })] = &work(&started)[..] else {
            panic!("n1 is promoted at once: {started:?}");
        };
        m.handle(
            Timestamp(1600),
            Input::Outcome {
                step: *promote,
                result: Ok(StepOutput::Promoted { timeline: Some(2) }),
            },
        )
    }

    /// [`steady`] after n0 died and the failover to n1 completed (n2 repointed, at 1700).
    fn failed_over_to_n1() -> Failover {
        let mut m = steady();
        let promoted = promote_n1_after_n0_dies(&mut m);
        let [(repoint, _)] = &work(&promoted)[..] else {
            panic!("n2 is repointed: {promoted:?}");
        };
        m.handle(
            Timestamp(1700),
            Input::Outcome {
                step: *repoint,
                result: Ok(StepOutput::Done),
            },
        );
        assert_eq!(m.state().running, None, "the run is over");
        m
    }

    fn records(actions: &[Action]) -> Vec<RunRecord> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Record(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn the_first_write_on_the_new_primary_closes_the_first_write_phase_once() {
        let mut m = steady();
        let promoted = promote_n1_after_n0_dies(&mut m);
        assert_eq!(published(&promoted)[0].generation, 2);
        let repoint = work(&promoted)[0].0;
        // Writes of another node or generation are not the new primary's first.
        assert!(
            m.handle(
                Timestamp(1650),
                Input::WriteAccepted {
                    node: NodeId(0),
                    generation: 2
                }
            )
            .is_empty()
        );
        assert!(
            m.handle(
                Timestamp(1650),
                Input::WriteAccepted {
                    node: NodeId(1),
                    generation: 1
                }
            )
            .is_empty()
        );
        let done = m.handle(
            Timestamp(1700),
            Input::Outcome {
                step: repoint,
                result: Ok(StepOutput::Done),
            },
        );
        assert_eq!(records(&done)[0].outcome, RunOutcome::Completed);
        let written = records(&m.handle(
            Timestamp(1750),
            Input::WriteAccepted {
                node: NodeId(1),
                generation: 2,
            },
        ));
        assert_eq!(written.len(), 1);
        let phases: Vec<(&str, u64, u64)> = written[0]
            .phases
            .iter()
            .map(|p| (p.name.as_str(), p.started_at.0, p.finished_at.0))
            .collect();
        assert_eq!(
            &phases[4..],
            [
                ("publish", 1600, 1600),
                ("repoint", 1600, 1700),
                (FIRST_WRITE, 1600, 1750)
            ]
        );
        assert!(
            m.handle(
                Timestamp(1800),
                Input::WriteAccepted {
                    node: NodeId(1),
                    generation: 2
                }
            )
            .is_empty(),
            "recorded once"
        );
    }

    #[test]
    fn an_unreachable_primary_that_still_streams_is_not_failed_over() {
        let mut m = steady();
        for at in [1000, 1200, 1400, 1600] {
            let actions = m.handle(Timestamp(at), failed(0, at, ProbeError::Timeout));
            assert!(work(&actions).is_empty(), "{actions:?}");
            // n1 still hears from the primary (a partition between Meridian and the primary).
            m.handle(
                Timestamp(at),
                ok(
                    1,
                    at,
                    replica_status(100, Some(5000), Duration::from_millis(500)),
                ),
            );
            m.handle(
                Timestamp(at),
                ok(2, at, replica_status(100, None, Duration::ZERO)),
            );
        }
        assert_eq!(
            m.published(),
            Published {
                generation: 1,
                primary: Some(NodeId(0)),
                paused: false
            }
        );
        assert!(m.state().suspect_since.is_some());
    }

    #[test]
    fn a_cascade_streaming_through_an_unknown_address_does_not_prove_the_primary_alive() {
        // n2 streams from n1 through a relay on port 7000, which is no node's address: only
        // n1's list of the replicas it feeds says where n2's WAL comes from.
        let mut m = steady();
        let feeding_n2 = NodeStatus {
            downstream: primary_status(100, &[("n2", "async")]).downstream,
            ..replica_status(100, None, Duration::ZERO)
        };
        for at in [1000, 1200, 1400] {
            m.handle(Timestamp(at), failed(0, at, ProbeError::Refused));
            m.handle(Timestamp(at), ok(1, at, feeding_n2.clone()));
            m.handle(
                Timestamp(at),
                ok(2, at, replica_status(100, Some(7000), Duration::ZERO)),
            );
        }
        assert!(
            m.state().running.is_some(),
            "the dead primary was not failed over: {:?}",
            m.state()
        );

        // Without n1's word, a live stream from an unknown address may be the primary's.
        let mut m = steady();
        for at in [1000, 1200, 1400, 1600] {
            m.handle(Timestamp(at), failed(0, at, ProbeError::Refused));
            m.handle(
                Timestamp(at),
                ok(1, at, replica_status(100, None, Duration::ZERO)),
            );
            m.handle(
                Timestamp(at),
                ok(2, at, replica_status(100, Some(7000), Duration::ZERO)),
            );
        }
        assert_eq!(m.state().running, None, "{:?}", m.state());
        assert_eq!(m.published().primary, Some(NodeId(0)));
    }

    #[test]
    fn a_replica_that_heard_the_primary_and_then_died_with_it_proves_nothing() {
        // n1 answers once after the suspicion began, still streaming from n0, then dies too
        // (the whole region is lost); n2 answers and hears nothing.
        let mut m = steady();
        m.handle(Timestamp(1000), failed(0, 1000, ProbeError::Refused));
        m.handle(
            Timestamp(1010),
            ok(1, 1010, replica_status(100, Some(5000), Duration::ZERO)),
        );
        for at in [1200, 1400] {
            m.handle(Timestamp(at), failed(0, at, ProbeError::Refused));
            m.handle(Timestamp(at), failed(1, at, ProbeError::Refused));
            m.handle(
                Timestamp(at),
                ok(2, at, replica_status(100, None, Duration::ZERO)),
            );
        }
        assert!(
            m.state().running.is_some(),
            "the dead primary was not failed over: {:?}",
            m.state()
        );
    }

    #[test]
    fn an_idle_stream_proves_the_primary_alive_for_half_the_replicas_receiver_timeout() {
        // A primary without writes sends nothing until the replica asks, after half its
        // wal_receiver_timeout (here 20 s) of silence: 8 s of silence is no sign of death,
        // 12 s is.
        let idle = |age: u64| NodeStatus {
            wal_receiver_timeout: Some(Duration::from_secs(20)),
            ..replica_status(100, Some(5000), Duration::from_secs(age))
        };
        let mut m = steady();
        for at in [1000, 1200, 1400, 1600] {
            m.handle(Timestamp(at), failed(0, at, ProbeError::Timeout));
            m.handle(Timestamp(at), ok(1, at, idle(8)));
            let actions = m.handle(Timestamp(at), ok(2, at, idle(8)));
            assert!(work(&actions).is_empty(), "{actions:?}");
        }
        assert_eq!(m.published().primary, Some(NodeId(0)));
        m.handle(Timestamp(1800), failed(0, 1800, ProbeError::Timeout));
        m.handle(Timestamp(1800), ok(1, 1800, idle(12)));
        let actions = m.handle(Timestamp(1800), ok(2, 1800, idle(12)));
        assert_eq!(
            work(&actions).first().map(|(_, w)| w.clone()),
            Some(Work::Fence { node: NodeId(0) }),
            "{actions:?}"
        );
    }

    #[test]
    fn a_replica_that_never_asks_its_sender_proves_it_alive_while_it_streams() {
        // wal_receiver_timeout = 0: an idle stream may stay silent for ever.
        let silent = NodeStatus {
            wal_receiver_timeout: Some(Duration::ZERO),
            ..replica_status(100, Some(5000), Duration::from_secs(600))
        };
        let mut m = steady();
        for at in [1000, 1200, 1400, 1600] {
            m.handle(Timestamp(at), failed(0, at, ProbeError::Timeout));
            m.handle(Timestamp(at), ok(1, at, silent.clone()));
            let actions = m.handle(Timestamp(at), ok(2, at, silent.clone()));
            assert!(work(&actions).is_empty(), "{actions:?}");
        }
        assert_eq!(m.published().primary, Some(NodeId(0)));
    }

    #[test]
    fn an_operators_rejoin_is_recorded_as_it_starts() {
        let mut m = failed_over_to_n1();
        let started = m.handle(
            Timestamp(2000),
            Input::Command(Command::Rejoin { node: NodeId(0) }),
        );
        assert_eq!(
            work(&started)
                .into_iter()
                .map(|(_, w)| w)
                .collect::<Vec<_>>(),
            [Work::Rejoin {
                node: NodeId(0),
                upstream: NodeId(1)
            }]
        );
        let records = records(&started);
        assert_eq!(records.len(), 1, "{started:?}");
        assert_eq!(records[0].outcome, RunOutcome::InProgress);
        assert_eq!(m.state().running, Some(records[0].id));
    }

    #[test]
    fn a_rejoin_fails_when_its_step_does_and_raises_no_completion() {
        let mut m = failed_over_to_n1();
        let mut outcomes = Vec::new();
        for result in [Err("pg_rewind failed".to_owned()), Ok(StepOutput::Done)] {
            let started = m.handle(
                Timestamp(2000),
                Input::Command(Command::Rejoin { node: NodeId(0) }),
            );
            let [(step, _)] = &work(&started)[..] else {
                panic!("one rejoin step: {started:?}");
            };
            let result_ok = result.is_ok();
            let done = m.handle(
                Timestamp(2500),
                Input::Outcome {
                    step: *step,
                    result,
                },
            );
            assert!(
                !done.iter().any(|a| matches!(a, Action::Raise(_))),
                "{done:?}"
            );
            // A node that runs again is probed at once, whatever its reconnect backoff.
            let probed = done
                .iter()
                .any(|a| matches!(a, Action::Probe(nodes) if nodes == &[NodeId(0)]));
            assert_eq!(probed, result_ok, "{done:?}");
            let record = records(&done).pop().expect("recorded");
            assert_eq!(record.kind, RunKind::Rejoin);
            outcomes.push(record.outcome);
        }
        assert_eq!(
            outcomes,
            [
                RunOutcome::Failed("pg_rewind failed".into()),
                RunOutcome::Completed
            ]
        );
    }

    #[test]
    fn a_failed_promotion_halts_automatic_failover() {
        let mut m = steady();
        m.handle(Timestamp(1000), failed(0, 1000, ProbeError::Refused));
        m.handle(
            Timestamp(1100),
            ok(1, 1100, replica_status(100, None, Duration::ZERO)),
        );
        m.handle(Timestamp(1100), failed(0, 1100, ProbeError::Refused));
        let started = m.handle(Timestamp(1200), failed(0, 1200, ProbeError::Refused));
        let step = work(&secured(&mut m, 1250, &started))[0].0;
        let failed_out = m.handle(
            Timestamp(1300),
            Input::Outcome {
                step,
                result: Err("boom".into()),
            },
        );
        assert!(
            failed_out
                .iter()
                .any(|a| matches!(a, Action::Raise(c) if c.kind == AlertKind::FailoverFailed))
        );
        assert_eq!(
            published(&failed_out),
            vec![Published {
                generation: 1,
                primary: None,
                paused: false
            }]
        );
        assert!(m.state().halted.is_some());
        // More evidence does not start another run.
        let again = m.handle(Timestamp(1400), failed(0, 1400, ProbeError::Refused));
        assert!(work(&again).is_empty());
    }

    /// n0's probe is refused at each of `times` while n1 and n2 answer as replicas that lost
    /// their stream: what the machine did.
    fn n0_fails_at(m: &mut Failover, times: &[u64]) -> Vec<Action> {
        let mut out = Vec::new();
        for &at in times {
            m.handle(
                Timestamp(at),
                ok(1, at, replica_status(100, None, Duration::ZERO)),
            );
            m.handle(
                Timestamp(at),
                ok(2, at, replica_status(90, None, Duration::ZERO)),
            );
            out.extend(m.handle(Timestamp(at), failed(0, at, ProbeError::Refused)));
        }
        out
    }

    #[test]
    fn a_follower_starts_no_failover_and_refuses_commands_until_it_leads() {
        let mut m = steady();
        m.handle(Timestamp(500), Input::Leadership(false));
        let mut seen = Vec::new();
        for at in [1000, 1200, 1400, 1600] {
            m.handle(
                Timestamp(at),
                ok(1, at, replica_status(100, None, Duration::ZERO)),
            );
            seen.extend(m.handle(Timestamp(at), failed(0, at, ProbeError::Refused)));
        }
        assert!(work(&seen).is_empty(), "{seen:?}");
        assert!(m.state().running.is_none());
        let refused = m.handle(
            Timestamp(1700),
            Input::Command(Command::Switchover { to: None }),
        );
        assert!(
            refused
                .iter()
                .any(|a| matches!(a, Action::Log(Level::Warn, t) if t.contains("does not lead"))),
            "{refused:?}"
        );
        // Leading, with the primary still dead, it fails over at the next evidence.
        m.handle(Timestamp(1800), Input::Leadership(true));
        let started = n0_fails_at(&mut m, &[2000, 2200, 2400]);
        assert!(m.state().running.is_some(), "{started:?}");
    }

    #[test]
    fn a_primary_another_instance_still_reaches_is_not_failed_over() {
        let mut m = steady();
        let mut seen = Vec::new();
        for at in [1000, 1200, 1400, 1600] {
            // Another instance reached the primary just now, each time.
            m.handle(
                Timestamp(at),
                Input::PeerSighting {
                    node: NodeId(0),
                    at: Timestamp(at),
                },
            );
            m.handle(
                Timestamp(at),
                ok(1, at, replica_status(100, None, Duration::ZERO)),
            );
            seen.extend(m.handle(Timestamp(at), failed(0, at, ProbeError::Refused)));
        }
        assert!(work(&seen).is_empty(), "{seen:?}");
        assert!(
            seen.iter().any(
                |a| matches!(a, Action::Log(Level::Warn, t) if t.contains("another instance reached it"))
            ),
            "{seen:?}"
        );
        // The sightings stop (old ones age out): the failover goes ahead.
        let started = n0_fails_at(&mut m, &[5000, 5200, 5400]);
        assert!(m.state().running.is_some(), "{started:?}");
    }

    #[test]
    fn a_new_leader_continues_from_the_published_generation_and_primary() {
        let mut m = steady();
        // The previous leader failed over to n1 at generation 4.
        let out = m.handle(
            Timestamp(100),
            Input::Continue {
                generation: 4,
                primary: Some(NodeId(1)),
            },
        );
        assert_eq!(
            published(&out),
            vec![Published {
                generation: 4,
                primary: Some(NodeId(1)),
                paused: false
            }]
        );
        assert_eq!(m.state().needs_rejoin, vec![NodeId(0)]);
        // An older generation never winds it back.
        let out = m.handle(
            Timestamp(200),
            Input::Continue {
                generation: 2,
                primary: Some(NodeId(1)),
            },
        );
        assert_eq!(published(&out)[0].generation, 4);
    }

    /// A synchronous primary (`ANY 2 (n1, n2)`) dies while its asynchronous replica n3 had
    /// received more WAL than either synchronous one (commits not yet confirmed by both). n3
    /// cannot follow the promoted n1's timeline without a rewind: naming it among n1's
    /// synchronous replicas would make every commit wait forever, so n2 alone is named; and
    /// until a probe sees n3 replay past where it was stuck (rejoined), it needs rejoin and is
    /// no candidate.
    #[test]
    fn a_replica_ahead_of_the_promoted_one_is_left_out_until_it_follows_its_timeline() {
        let mut m = Failover::new(
            FailoverPolicy::default(),
            (0..4).map(|id| spec(id, "us", 10)).collect(),
            1,
        );
        let primary = NodeStatus {
            synchronous_standby_names: "ANY 2 (n1, n2)".into(),
            ..primary_status(100, &[("n1", "quorum"), ("n2", "quorum"), ("n3", "async")])
        };
        m.handle(Timestamp(0), ok(0, 0, primary));
        for node in 1..4 {
            m.handle(
                Timestamp(0),
                ok(node, 0, replica_status(100, Some(5000), Duration::ZERO)),
            );
        }
        let mut started = m.handle(Timestamp(1000), failed(0, 1000, ProbeError::Refused));
        for at in [1200, 1400] {
            for (node, received) in [(1, 150), (2, 140), (3, 170)] {
                m.handle(
                    Timestamp(at),
                    ok(node, at, replica_status(received, None, Duration::ZERO)),
                );
            }
            started.extend(m.handle(Timestamp(at), failed(0, at, ProbeError::Refused)));
        }
        let [(step, Work::SetSynchronous { node, value })] = &work(&started)[..] else {
            panic!("the candidate's synchronous setting comes first: {started:?}");
        };
        assert_eq!(
            *node,
            NodeId(1),
            "the synchronous replica with the most WAL"
        );
        assert_eq!(value, "ANY 1 (\"n2\")");
        assert!(
            started.iter().any(|a| matches!(a,
                Action::Log(Level::Warn, message)
                    if message.starts_with("n3 received WAL up to")
                        && message.contains("until it is rejoined"))),
            "{started:?}"
        );
        assert_eq!(
            m.state().needs_rejoin,
            Vec::<NodeId>::new(),
            "not before the promotion"
        );

        let promote = m.handle(
            Timestamp(1450),
            Input::Outcome {
                step: *step,
                result: Ok(StepOutput::Done),
            },
        );
        let [(promote, Work::Promote { node: NodeId(1) })] = &work(&promote)[..] else {
            panic!("n1 is promoted: {promote:?}");
        };
        m.handle(
            Timestamp(1600),
            Input::Outcome {
                step: *promote,
                result: Ok(StepOutput::Promoted { timeline: Some(2) }),
            },
        );
        assert_eq!(m.state().needs_rejoin, vec![NodeId(0), NodeId(3)]);
        assert!(
            m.candidates(Some(NodeId(1)))
                .iter()
                .all(|c| c.node != NodeId(3)),
            "n3 is never promoted: it would drop n1's timeline"
        );

        // n3 stays where it was stuck (its receiver may well report the new timeline), then
        // (rejoined) replays past it.
        m.handle(Timestamp(2000), ok(1, 2000, primary_status(200, &[])));
        let stuck = NodeStatus {
            timeline: Some(2),
            ..replica_status(170, Some(5001), Duration::ZERO)
        };
        m.handle(Timestamp(2000), ok(3, 2000, stuck));
        assert_eq!(m.state().needs_rejoin, vec![NodeId(0), NodeId(3)]);
        let followed = m.handle(
            Timestamp(3000),
            ok(3, 3000, replica_status(200, Some(5001), Duration::ZERO)),
        );
        assert_eq!(m.state().needs_rejoin, vec![NodeId(0)]);
        assert!(
            followed.iter().any(|a| matches!(a,
                Action::Log(Level::Info, message)
                    if message.starts_with("n3 replays past"))),
            "{followed:?}"
        );
    }

    #[test]
    fn synchronous_names_move_to_the_surviving_replicas() {
        let live = [Arc::from("n2"), Arc::from("n3")];
        assert_eq!(
            new_synchronous("ANY 1 (\"n1\")", "n1", &live).as_deref(),
            Some("ANY 1 (\"n2\")")
        );
        assert_eq!(
            new_synchronous("FIRST 2 (n1, n2)", "n1", &live).as_deref(),
            Some("FIRST 2 (\"n2\", \"n3\")")
        );
        assert_eq!(
            new_synchronous("n1", "n1", &live).as_deref(),
            Some("FIRST 1 (\"n2\")")
        );
        assert_eq!(new_synchronous("ANY 1 (n1)", "n1", &[]), None);
        assert_eq!(new_synchronous("*", "n1", &[]).as_deref(), Some("*"));
    }
}
