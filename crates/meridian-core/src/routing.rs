//! Where a transaction runs, decided in pure code with the reason attached.
//!
//! The proxy calls [`route`] whenever a client needs a server and has none: at the first
//! statement of every transaction in transaction pooling (an open transaction, or a pinned
//! session, keeps the server it has). The order of the rules:
//!
//! 1. A hint wins: a leading comment `/* meridian:primary */` or `/* meridian:replica */` on
//!    the statement, else the session's `SET meridian.route = primary|replica` (see
//!    [`commands`]). `auto` means no hint.
//! 2. With splitting off (`read_write_split = false`), everything runs on the primary.
//! 3. By class ([`crate::classify`]): reads (and `BEGIN READ ONLY`) go to a replica; writes,
//!    DDL, unknown statements, session state and other transactions go to the primary.
//! 4. Read-your-writes: a session that holds a WAL position (its last write, or a token it was
//!    handed) may only read from a replica known to have replayed it. When none is known to,
//!    the best replica is named with [`RouteDecision::Replica::confirm`]: the proxy checks it on
//!    the spot and waits up to `causal_read_timeout`; if that runs out it routes again with
//!    [`SessionRoute::caught_up_timed_out`] set and the read goes to the primary.
//! 5. Replica choice among *qualifying* replicas (observed as replicas, healthy or degraded,
//!    circuit closed, under both lag ceilings): the proxy's own region first
//!    (`local_region`), then the lowest score `latency × (in-flight + 1)`, ties broken by the
//!    caller's rotating number so equal replicas share the load. The latency is the monitor's
//!    last probe round trip, a whole query (4–15 ms on an idle loopback server here) and
//!    noisy: it is floored at 20 ms, so replicas in one zone tie and only a distant replica
//!    (another region) scores worse; degraded nodes count four times.
//! 6. No replica qualifies: the primary, unless `primary_reads = never`; with
//!    `primary_reads = always` the primary competes with the replicas for every read.
//!
//! A failover does not stop reads: a paused view, or one with no primary, still routes reads
//! to replicas; only what needs the primary waits ([`NoRoute::Paused`]).

pub mod commands;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::classify::{Classification, PinReason, StatementClass};
use crate::lsn::Lsn;
use crate::topology::{ClusterView, Health, NodeId, NodeView, Role};

/// Where a session or a statement asks to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Target {
    /// Decided by the statement's class (no hint).
    #[default]
    Auto,
    /// The primary.
    Primary,
    /// A replica.
    Replica,
}

impl Target {
    /// The spelling used by hints, `SET meridian.route` and `SHOW`.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Auto => "auto",
            Target::Primary => "primary",
            Target::Replica => "replica",
        }
    }

    /// Parses `auto`, `primary` or `replica`, case-insensitively.
    pub fn parse(text: &[u8]) -> Option<Target> {
        [Target::Auto, Target::Primary, Target::Replica]
            .into_iter()
            .find(|t| text.eq_ignore_ascii_case(t.as_str().as_bytes()))
    }
}

/// `routing.primary_reads`: whether reads may use the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PrimaryReads {
    /// Never: a read no replica can serve fails.
    Never,
    /// Only when no replica qualifies (the default).
    #[default]
    Fallback,
    /// Always a candidate, scored like the replicas.
    Always,
}

/// The routing settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePolicy {
    /// Send reads to replicas at all (`read_write_split`).
    pub split: bool,
    /// The proxy's own region: its replicas are preferred.
    pub local_region: Option<Arc<str>>,
    /// Replicas further behind than this many bytes get no reads.
    pub max_lag_bytes: u64,
    /// Replicas further behind than this get no reads.
    pub max_lag: Duration,
    /// Whether reads may use the primary.
    pub primary_reads: PrimaryReads,
    /// A session-level `SET` pins the session to its server (otherwise it lasts for the
    /// transaction only, as in any transaction pooler).
    pub pin_session_settings: bool,
}

impl Default for RoutePolicy {
    fn default() -> RoutePolicy {
        RoutePolicy {
            split: true,
            local_region: None,
            max_lag_bytes: 16 * 1024 * 1024,
            max_lag: Duration::from_secs(10),
            primary_reads: PrimaryReads::Fallback,
            pin_session_settings: false,
        }
    }
}

impl RoutePolicy {
    /// Whether running `classification` pins the session to its server under this policy.
    pub fn pin(&self, classification: &Classification) -> Option<PinReason> {
        match classification.pins_session()? {
            PinReason::SessionSetting if !self.pin_session_settings => None,
            pin => Some(pin),
        }
    }
}

/// What is being routed: the first statement (or batch) of a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statement {
    /// Its classification.
    pub classification: Classification,
    /// A leading `/* meridian:... */` comment ([`commands::leading_hint`]).
    pub hint: Target,
}

/// The session's routing state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionRoute {
    /// `SET meridian.route`.
    pub target: Target,
    /// The WAL position reads must see (read-your-writes), if any.
    pub min_lsn: Option<Lsn>,
    /// The proxy waited `causal_read_timeout` for a replica to replay `min_lsn` in vain.
    pub caught_up_timed_out: bool,
}

/// What the proxy itself knows of a node, beyond the view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeLoad {
    /// Transactions the proxy runs there now.
    pub in_flight: u32,
    /// The proxy failed to use it lately: no reads until the circuit closes.
    pub circuit_open: bool,
    /// The highest replay position the proxy confirmed there itself.
    pub replayed: Lsn,
}

/// The proxy's live knowledge, asked for per node while routing.
pub trait Loads {
    /// This node's load.
    fn load(&self, node: NodeId) -> NodeLoad;
    /// A number that changes from call to call, to rotate among equally good replicas.
    fn tie_break(&self) -> u64;
}

/// Why a transaction was sent where it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteReason {
    /// It may write (write, DDL or unknown statement).
    MayWrite,
    /// It sets or uses session state, which lives with the primary's sessions.
    SessionState,
    /// An explicit transaction that did not declare itself read-only, or other transaction
    /// control.
    ReadWriteTransaction,
    /// A leading `/* meridian:primary */`.
    HintPrimary,
    /// `SET meridian.route = primary`.
    SessionPrimary,
    /// `read_write_split = false`.
    SplitOff,
    /// An autocommit read.
    Read,
    /// `BEGIN READ ONLY` (or a batch starting with it).
    ReadOnlyTransaction,
    /// A leading `/* meridian:replica */`.
    HintReplica,
    /// `SET meridian.route = replica`.
    SessionReplica,
    /// A read that the primary won among the candidates (`primary_reads = always`).
    PrimaryReadsAlways,
    /// A read with no replica to serve it: none observed, healthy and with a closed circuit.
    NoReplica,
    /// A read with every usable replica over a lag ceiling.
    ReplicasLagging,
    /// A read-your-writes read no replica caught up with in `causal_read_timeout`.
    NotCaughtUp,
}

impl RouteReason {
    /// Every reason, in a fixed order (metrics index counters by it).
    pub const ALL: [RouteReason; 14] = [
        RouteReason::MayWrite,
        RouteReason::SessionState,
        RouteReason::ReadWriteTransaction,
        RouteReason::HintPrimary,
        RouteReason::SessionPrimary,
        RouteReason::SplitOff,
        RouteReason::Read,
        RouteReason::ReadOnlyTransaction,
        RouteReason::HintReplica,
        RouteReason::SessionReplica,
        RouteReason::PrimaryReadsAlways,
        RouteReason::NoReplica,
        RouteReason::ReplicasLagging,
        RouteReason::NotCaughtUp,
    ];

    /// Position in [`RouteReason::ALL`].
    pub fn index(self) -> usize {
        // `ALL` lists the variants in declaration order (a test checks it).
        self as usize
    }

    /// A short snake_case name, for metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteReason::MayWrite => "may_write",
            RouteReason::SessionState => "session_state",
            RouteReason::ReadWriteTransaction => "read_write_transaction",
            RouteReason::HintPrimary => "hint_primary",
            RouteReason::SessionPrimary => "session_primary",
            RouteReason::SplitOff => "split_off",
            RouteReason::Read => "read",
            RouteReason::ReadOnlyTransaction => "read_only_transaction",
            RouteReason::HintReplica => "hint_replica",
            RouteReason::SessionReplica => "session_replica",
            RouteReason::PrimaryReadsAlways => "primary_reads_always",
            RouteReason::NoReplica => "fallback_no_replica",
            RouteReason::ReplicasLagging => "fallback_lagging",
            RouteReason::NotCaughtUp => "fallback_not_caught_up",
        }
    }

    /// A read that went to the primary because no replica could take it.
    pub fn is_fallback(self) -> bool {
        matches!(
            self,
            RouteReason::NoReplica | RouteReason::ReplicasLagging | RouteReason::NotCaughtUp
        )
    }
}

impl fmt::Display for RouteReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RouteReason::MayWrite => "the statement may write",
            RouteReason::SessionState => "the statement sets or reads session state",
            RouteReason::ReadWriteTransaction => {
                "a transaction that is not declared READ ONLY runs on the primary"
            }
            RouteReason::HintPrimary => "hint /* meridian:primary */",
            RouteReason::SessionPrimary => "SET meridian.route = primary",
            RouteReason::SplitOff => "read_write_split is off",
            RouteReason::Read => "an autocommit read",
            RouteReason::ReadOnlyTransaction => "a READ ONLY transaction",
            RouteReason::HintReplica => "hint /* meridian:replica */",
            RouteReason::SessionReplica => "SET meridian.route = replica",
            RouteReason::PrimaryReadsAlways => {
                "a read; the primary scored best (primary_reads = always)"
            }
            RouteReason::NoReplica => "a read, but no replica is up",
            RouteReason::ReplicasLagging => {
                "a read, but every replica is over the lag ceiling"
            }
            RouteReason::NotCaughtUp => {
                "a read of the session's own write, which no replica replayed within causal_read_timeout"
            }
        })
    }
}

/// Why a transaction cannot be placed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRoute {
    /// No node is known to be the primary.
    NoPrimary,
    /// A failover or switchover is under way: wait for the next view.
    Paused,
    /// A read no replica can serve, and `primary_reads = never`; the reason the primary would
    /// have been used.
    NoReplica(RouteReason),
}

/// A routing decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteDecision {
    /// Run on the primary.
    Primary {
        /// The primary.
        node: NodeId,
        /// Why.
        reason: RouteReason,
    },
    /// Run on a replica.
    Replica {
        /// The chosen replica.
        node: NodeId,
        /// Why.
        reason: RouteReason,
        /// Read-your-writes: the node is not known to have replayed this position yet; check
        /// before running the read there.
        confirm: Option<Lsn>,
    },
    /// Nowhere to run it right now.
    Unavailable(NoRoute),
}

impl RouteDecision {
    /// The chosen node, if any.
    pub fn node(&self) -> Option<NodeId> {
        match *self {
            RouteDecision::Primary { node, .. } | RouteDecision::Replica { node, .. } => Some(node),
            RouteDecision::Unavailable(_) => None,
        }
    }

    /// The reason, if a node was chosen.
    pub fn reason(&self) -> Option<RouteReason> {
        match *self {
            RouteDecision::Primary { reason, .. } | RouteDecision::Replica { reason, .. } => {
                Some(reason)
            }
            RouteDecision::Unavailable(_) => None,
        }
    }
}

/// Routes the first statement of a transaction (see the module notes for the rules).
pub fn route(
    statement: &Statement,
    session: &SessionRoute,
    view: &ClusterView,
    policy: &RoutePolicy,
    loads: &impl Loads,
) -> RouteDecision {
    let wants = match statement.hint {
        Target::Primary => Err(RouteReason::HintPrimary),
        Target::Replica => Ok(RouteReason::HintReplica),
        Target::Auto => match session.target {
            Target::Primary => Err(RouteReason::SessionPrimary),
            Target::Replica => Ok(RouteReason::SessionReplica),
            Target::Auto if !policy.split => Err(RouteReason::SplitOff),
            Target::Auto => by_class(&statement.classification),
        },
    };
    match wants {
        Err(reason) => primary(view, reason),
        Ok(reason) => read(reason, session, view, policy, loads),
    }
}

/// Where a statement's class sends it: `Ok` for a replica, `Err` for the primary.
fn by_class(classification: &Classification) -> Result<RouteReason, RouteReason> {
    match classification.class {
        StatementClass::Empty | StatementClass::Read => Ok(RouteReason::Read),
        StatementClass::Transaction(control) => {
            if control.is_read_only() && !control.needs_primary() {
                Ok(RouteReason::ReadOnlyTransaction)
            } else {
                Err(RouteReason::ReadWriteTransaction)
            }
        }
        StatementClass::SessionState => Err(RouteReason::SessionState),
        StatementClass::Write | StatementClass::Ddl | StatementClass::Unknown => {
            Err(RouteReason::MayWrite)
        }
    }
}

fn primary(view: &ClusterView, reason: RouteReason) -> RouteDecision {
    if view.paused {
        return RouteDecision::Unavailable(NoRoute::Paused);
    }
    match view.primary.and_then(|id| view.node(id)) {
        Some(node) if node.role != Role::Replica => RouteDecision::Primary {
            node: node.id,
            reason,
        },
        _ => RouteDecision::Unavailable(NoRoute::NoPrimary),
    }
}

/// The writable primary, if the view has one and is not paused.
fn usable_primary(view: &ClusterView) -> Option<&NodeView> {
    if view.paused {
        return None;
    }
    view.primary
        .and_then(|id| view.node(id))
        .filter(|node| node.role != Role::Replica)
}

/// Why a replica does not qualify for reads, if it does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unfit {
    Unusable,
    Lagging,
}

fn fitness(node: &NodeView, load: &NodeLoad, policy: &RoutePolicy) -> Result<(), Unfit> {
    let up = matches!(node.health, Health::Healthy | Health::Degraded);
    if node.role != Role::Replica || !up || load.circuit_open {
        return Err(Unfit::Unusable);
    }
    match node.lag {
        Some(lag) if lag.bytes > policy.max_lag_bytes || lag.seconds > policy.max_lag => {
            Err(Unfit::Lagging)
        }
        _ => Ok(()),
    }
}

/// Routes a read: the best qualifying replica, with read-your-writes, or a fallback.
fn read(
    reason: RouteReason,
    session: &SessionRoute,
    view: &ClusterView,
    policy: &RoutePolicy,
    loads: &impl Loads,
) -> RouteDecision {
    let primary_node = usable_primary(view);
    let mut lagging = false;
    // (node, score, caught up) of every candidate.
    let mut best: Option<Choice> = None;
    let mut best_caught_up: Option<Choice> = None;
    let tie_break = loads.tie_break();
    for node in &view.nodes {
        let load = loads.load(node.id);
        let is_primary = Some(node.id) == primary_node.map(|p| p.id);
        if is_primary {
            if policy.primary_reads != PrimaryReads::Always {
                continue;
            }
        } else {
            match fitness(node, &load, policy) {
                Ok(()) => {}
                Err(Unfit::Lagging) => {
                    lagging = true;
                    continue;
                }
                Err(Unfit::Unusable) => continue,
            }
        }
        let choice = Choice {
            node: node.id,
            is_primary,
            local: policy
                .local_region
                .as_deref()
                .is_some_and(|region| *node.region == *region),
            score: score(node, &load),
        };
        let replayed = node.replayed.unwrap_or(Lsn::INVALID).max(load.replayed);
        let caught_up = is_primary || session.min_lsn.is_none_or(|min| replayed >= min);
        Choice::keep_better(&mut best, choice, tie_break);
        if caught_up {
            Choice::keep_better(&mut best_caught_up, choice, tie_break);
        }
    }
    let chosen = match (best_caught_up, best) {
        (Some(choice), _) => Some((choice, None)),
        (None, Some(choice)) if !session.caught_up_timed_out => Some((choice, session.min_lsn)),
        _ => None,
    };
    if let Some((choice, confirm)) = chosen {
        if choice.is_primary {
            return RouteDecision::Primary {
                node: choice.node,
                reason: RouteReason::PrimaryReadsAlways,
            };
        }
        return RouteDecision::Replica {
            node: choice.node,
            reason,
            confirm,
        };
    }
    let fallback = if best.is_some() {
        RouteReason::NotCaughtUp
    } else if lagging {
        RouteReason::ReplicasLagging
    } else {
        RouteReason::NoReplica
    };
    if policy.primary_reads == PrimaryReads::Never {
        return RouteDecision::Unavailable(NoRoute::NoReplica(fallback));
    }
    primary(view, fallback)
}

/// A candidate for a read.
#[derive(Debug, Clone, Copy)]
struct Choice {
    node: NodeId,
    is_primary: bool,
    local: bool,
    score: u64,
}

impl Choice {
    /// Keeps the better of `kept` and `new`: local region first, then the lower score; on a
    /// tie, `tie_break` decides, differently for different pairs of nodes.
    fn keep_better(kept: &mut Option<Choice>, new: Choice, tie_break: u64) {
        let Some(old) = kept else {
            *kept = Some(new);
            return;
        };
        let order = new
            .local
            .cmp(&old.local)
            .reverse()
            .then(new.score.cmp(&old.score));
        let better = match order {
            std::cmp::Ordering::Less => true,
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal => {
                mix(tie_break ^ u64::from(new.node.0)) < mix(tie_break ^ u64::from(old.node.0))
            }
        };
        if better {
            *kept = Some(new);
        }
    }
}

/// A cheap bit mixer (splitmix64's finaliser), so that each tie-break number orders tied
/// nodes differently.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// `latency × (in-flight + 1)` in microseconds, latency floored at 20 ms; degraded counts 4×.
fn score(node: &NodeView, load: &NodeLoad) -> u64 {
    const FLOOR_MICROS: u64 = 20_000;
    let latency = node
        .latency
        .map_or(FLOOR_MICROS, |l| {
            u64::try_from(l.as_micros()).unwrap_or(u64::MAX)
        })
        .max(FLOOR_MICROS);
    let degraded = if node.health == Health::Degraded {
        4
    } else {
        1
    };
    latency
        .saturating_mul(u64::from(load.in_flight) + 1)
        .saturating_mul(degraded)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::collections::HashMap;

    use super::*;
    use crate::classify::Classifier;
    use crate::lag::Lag;

    /// Probe round trips of loopback servers differ from probe to probe, and must not decide.
    #[test]
    fn noisy_nearby_latencies_do_not_decide() {
        let mut view = cluster();
        view.nodes[1].latency = Some(Duration::from_millis(4));
        view.nodes[2].latency = Some(Duration::from_millis(15));
        view.nodes[3].region = Arc::from("eu");
        view.nodes[3].latency = Some(Duration::from_micros(4500));
        let loads = TestLoads::default();
        let mut counts: HashMap<NodeId, u32> = HashMap::new();
        for _ in 0..300 {
            let decision = route(
                &statement("SELECT 1"),
                &SessionRoute::default(),
                &view,
                &RoutePolicy::default(),
                &loads,
            );
            *counts.entry(decision.node().unwrap()).or_default() += 1;
        }
        for replica in 1..=3 {
            let n = counts[&NodeId(replica)];
            assert!((50..=150).contains(&n), "#{replica} got {n} of 300");
        }
    }

    fn node(id: u16, role: Role, region: &str) -> NodeView {
        NodeView {
            id: NodeId(id),
            name: Arc::from(format!("pg{id}")),
            region: Arc::from(region),
            host: Arc::from("127.0.0.1"),
            port: 5432 + id,
            role,
            health: Health::Healthy,
            lag: Some(Lag::default()),
            replayed: None,
            latency: Some(Duration::from_micros(300)),
        }
    }

    /// A primary #0 and replicas #1 and #2 in region "eu", replica #3 in "us".
    fn cluster() -> ClusterView {
        ClusterView {
            generation: 1,
            primary: Some(NodeId(0)),
            paused: false,
            nodes: vec![
                node(0, Role::Primary, "eu"),
                node(1, Role::Replica, "eu"),
                node(2, Role::Replica, "eu"),
                node(3, Role::Replica, "us"),
            ],
        }
    }

    #[derive(Default)]
    struct TestLoads {
        loads: HashMap<NodeId, NodeLoad>,
        next: Cell<u64>,
    }

    impl TestLoads {
        fn with(mut self, node: u16, load: NodeLoad) -> Self {
            self.loads.insert(NodeId(node), load);
            self
        }
    }

    impl Loads for TestLoads {
        fn load(&self, node: NodeId) -> NodeLoad {
            self.loads.get(&node).copied().unwrap_or_default()
        }
        fn tie_break(&self) -> u64 {
            let n = self.next.get();
            self.next.set(n + 1);
            n
        }
    }

    fn statement(sql: &str) -> Statement {
        Statement {
            classification: Classifier::default().classify(sql.as_bytes()),
            hint: commands::leading_hint(sql.as_bytes()),
        }
    }

    fn route_sql(sql: &str, view: &ClusterView, policy: &RoutePolicy) -> RouteDecision {
        route(
            &statement(sql),
            &SessionRoute::default(),
            view,
            policy,
            &TestLoads::default(),
        )
    }

    fn primary_for(reason: RouteReason) -> RouteDecision {
        RouteDecision::Primary {
            node: NodeId(0),
            reason,
        }
    }

    #[test]
    fn writes_and_read_write_transactions_go_to_the_primary() {
        let view = cluster();
        let policy = RoutePolicy::default();
        for (sql, reason) in [
            ("INSERT INTO t VALUES (1)", RouteReason::MayWrite),
            ("SELECT nextval('s')", RouteReason::MayWrite),
            ("SELECT * FROM t FOR UPDATE", RouteReason::MayWrite),
            (
                "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
                RouteReason::MayWrite,
            ),
            ("CREATE TABLE x (a int)", RouteReason::MayWrite),
            ("FROBNICATE", RouteReason::MayWrite),
            ("SET search_path = app", RouteReason::SessionState),
            ("BEGIN", RouteReason::ReadWriteTransaction),
            (
                "BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY",
                RouteReason::ReadWriteTransaction,
            ),
            ("SELECT 1 /* meridian:replica */", RouteReason::Read),
        ] {
            let decision = route_sql(sql, &view, &policy);
            if reason == RouteReason::Read {
                // A hint must lead the text.
                assert!(
                    matches!(decision, RouteDecision::Replica { .. }),
                    "{sql}: {decision:?}"
                );
            } else {
                assert_eq!(decision, primary_for(reason), "{sql}");
            }
        }
    }

    #[test]
    fn reads_and_read_only_transactions_go_to_a_replica() {
        let view = cluster();
        let policy = RoutePolicy::default();
        for (sql, reason) in [
            (
                "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
                RouteReason::Read,
            ),
            ("", RouteReason::Read),
            ("BEGIN READ ONLY", RouteReason::ReadOnlyTransaction),
            (
                "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY",
                RouteReason::ReadOnlyTransaction,
            ),
        ] {
            match route_sql(sql, &view, &policy) {
                RouteDecision::Replica {
                    node,
                    reason: got,
                    confirm: None,
                } => {
                    assert_ne!(node, NodeId(0), "{sql}");
                    assert_eq!(got, reason, "{sql}");
                }
                other => panic!("{sql}: {other:?}"),
            }
        }
    }

    #[test]
    fn hints_override_the_class_and_the_session_setting() {
        let view = cluster();
        let policy = RoutePolicy::default();
        assert_eq!(
            route_sql("/* meridian:primary */ SELECT 1", &view, &policy),
            primary_for(RouteReason::HintPrimary)
        );
        assert!(matches!(
            route_sql("/*meridian:REPLICA*/ UPDATE t SET a = 1", &view, &policy),
            RouteDecision::Replica {
                reason: RouteReason::HintReplica,
                ..
            }
        ));
        let pinned_primary = SessionRoute {
            target: Target::Primary,
            ..SessionRoute::default()
        };
        let loads = TestLoads::default();
        assert_eq!(
            route(
                &statement("SELECT 1"),
                &pinned_primary,
                &view,
                &policy,
                &loads
            ),
            primary_for(RouteReason::SessionPrimary)
        );
        assert!(matches!(
            route(
                &statement("/* meridian:replica */ SELECT 1"),
                &pinned_primary,
                &view,
                &policy,
                &loads
            ),
            RouteDecision::Replica {
                reason: RouteReason::HintReplica,
                ..
            }
        ));
        let replica = SessionRoute {
            target: Target::Replica,
            ..SessionRoute::default()
        };
        assert!(matches!(
            route(&statement("SELECT 1"), &replica, &view, &policy, &loads),
            RouteDecision::Replica {
                reason: RouteReason::SessionReplica,
                ..
            }
        ));
        // Splitting off sends everything to the primary, but an explicit hint still counts.
        let off = RoutePolicy {
            split: false,
            ..RoutePolicy::default()
        };
        assert_eq!(
            route_sql("SELECT 1", &view, &off),
            primary_for(RouteReason::SplitOff)
        );
        assert!(matches!(
            route_sql("/* meridian:replica */ SELECT 1", &view, &off),
            RouteDecision::Replica { .. }
        ));
    }

    #[test]
    fn the_local_region_is_preferred_then_the_least_loaded() {
        let view = cluster();
        let us = RoutePolicy {
            local_region: Some(Arc::from("us")),
            ..RoutePolicy::default()
        };
        for _ in 0..5 {
            assert_eq!(route_sql("SELECT 1", &view, &us).node(), Some(NodeId(3)));
        }
        // In "eu", #1 is busy: #2 takes the reads.
        let eu = RoutePolicy {
            local_region: Some(Arc::from("eu")),
            ..RoutePolicy::default()
        };
        let loads = TestLoads::default().with(
            1,
            NodeLoad {
                in_flight: 3,
                ..NodeLoad::default()
            },
        );
        for _ in 0..5 {
            let decision = route(
                &statement("SELECT 1"),
                &SessionRoute::default(),
                &view,
                &eu,
                &loads,
            );
            assert_eq!(decision.node(), Some(NodeId(2)));
        }
        // A far replica (80 ms) loses to a near one (under the 20 ms floor) even when the near
        // one has a request in flight.
        let mut far = cluster();
        far.nodes[2].health = Health::Down;
        far.nodes[3].latency = Some(Duration::from_millis(80));
        let busy_near = TestLoads::default().with(
            1,
            NodeLoad {
                in_flight: 1,
                ..NodeLoad::default()
            },
        );
        let decision = route(
            &statement("SELECT 1"),
            &SessionRoute::default(),
            &far,
            &RoutePolicy::default(),
            &busy_near,
        );
        assert_eq!(decision.node(), Some(NodeId(1)));
    }

    #[test]
    fn equal_replicas_share_the_reads() {
        let view = cluster();
        let policy = RoutePolicy::default();
        let loads = TestLoads::default();
        let mut counts: HashMap<NodeId, u32> = HashMap::new();
        for _ in 0..300 {
            let decision = route(
                &statement("SELECT 1"),
                &SessionRoute::default(),
                &view,
                &policy,
                &loads,
            );
            *counts.entry(decision.node().unwrap()).or_default() += 1;
        }
        assert_eq!(counts.get(&NodeId(0)), None, "no read on the primary");
        for replica in 1..=3 {
            let n = counts[&NodeId(replica)];
            assert!((50..=150).contains(&n), "#{replica} got {n} of 300");
        }
    }

    #[test]
    fn down_circuit_open_unobserved_and_lagging_replicas_get_no_reads() {
        let policy = RoutePolicy::default();
        let mut view = cluster();
        view.nodes[1].health = Health::Down;
        view.nodes[2].role = Role::Unknown;
        view.nodes[3].lag = Some(Lag {
            bytes: policy.max_lag_bytes + 1,
            seconds: Duration::ZERO,
        });
        assert_eq!(
            route_sql("SELECT 1", &view, &policy),
            primary_for(RouteReason::ReplicasLagging)
        );
        view.nodes[3].lag = Some(Lag {
            bytes: 0,
            seconds: policy.max_lag + Duration::from_millis(1),
        });
        assert_eq!(
            route_sql("SELECT 1", &view, &policy),
            primary_for(RouteReason::ReplicasLagging)
        );
        view.nodes[3].lag = Some(Lag::default());
        assert_eq!(
            route_sql("SELECT 1", &view, &policy).node(),
            Some(NodeId(3))
        );
        let open = TestLoads::default().with(
            3,
            NodeLoad {
                circuit_open: true,
                ..NodeLoad::default()
            },
        );
        let decision = route(
            &statement("SELECT 1"),
            &SessionRoute::default(),
            &view,
            &policy,
            &open,
        );
        assert_eq!(decision, primary_for(RouteReason::NoReplica));
        // primary_reads = never: the read fails instead.
        let never = RoutePolicy {
            primary_reads: PrimaryReads::Never,
            ..policy.clone()
        };
        let decision = route(
            &statement("SELECT 1"),
            &SessionRoute::default(),
            &view,
            &never,
            &open,
        );
        assert_eq!(
            decision,
            RouteDecision::Unavailable(NoRoute::NoReplica(RouteReason::NoReplica))
        );
    }

    #[test]
    fn primary_reads_always_lets_the_primary_compete() {
        let view = cluster();
        let always = RoutePolicy {
            primary_reads: PrimaryReads::Always,
            ..RoutePolicy::default()
        };
        let loads = TestLoads::default();
        let mut on_primary = 0;
        for _ in 0..400 {
            if let RouteDecision::Primary { reason, .. } = route(
                &statement("SELECT 1"),
                &SessionRoute::default(),
                &view,
                &always,
                &loads,
            ) {
                assert_eq!(reason, RouteReason::PrimaryReadsAlways);
                on_primary += 1;
            }
        }
        assert!((50..=150).contains(&on_primary), "{on_primary} of 400");
    }

    #[test]
    fn read_your_writes_prefers_replicas_known_to_have_replayed_the_token() {
        let mut view = cluster();
        view.nodes[1].replayed = Some(Lsn(100));
        view.nodes[2].replayed = Some(Lsn(50));
        view.nodes[3].replayed = Some(Lsn(50));
        let policy = RoutePolicy::default();
        let session = SessionRoute {
            min_lsn: Some(Lsn(80)),
            ..SessionRoute::default()
        };
        let loads = TestLoads::default();
        for _ in 0..5 {
            assert_eq!(
                route(&statement("SELECT 1"), &session, &view, &policy, &loads),
                RouteDecision::Replica {
                    node: NodeId(1),
                    reason: RouteReason::Read,
                    confirm: None
                }
            );
        }
        // The proxy's own confirmation counts as much as the monitor's.
        let confirmed = TestLoads::default().with(
            2,
            NodeLoad {
                replayed: Lsn(90),
                ..NodeLoad::default()
            },
        );
        view.nodes[1].health = Health::Down;
        assert_eq!(
            route(&statement("SELECT 1"), &session, &view, &policy, &confirmed).node(),
            Some(NodeId(2))
        );
        // Nobody known to be there: the best replica, to be checked on the spot.
        let ahead = SessionRoute {
            min_lsn: Some(Lsn(1000)),
            ..SessionRoute::default()
        };
        match route(&statement("SELECT 1"), &ahead, &view, &policy, &loads) {
            RouteDecision::Replica {
                confirm: Some(Lsn(1000)),
                node,
                ..
            } => assert_ne!(node, NodeId(1)),
            other => panic!("{other:?}"),
        }
        // The check timed out: the primary.
        let timed_out = SessionRoute {
            caught_up_timed_out: true,
            ..ahead
        };
        assert_eq!(
            route(&statement("SELECT 1"), &timed_out, &view, &policy, &loads),
            primary_for(RouteReason::NotCaughtUp)
        );
    }

    #[test]
    fn reads_keep_flowing_while_the_primary_is_replaced() {
        let mut view = cluster();
        view.paused = true;
        let policy = RoutePolicy::default();
        assert!(matches!(
            route_sql("SELECT 1", &view, &policy),
            RouteDecision::Replica { .. }
        ));
        assert_eq!(
            route_sql("UPDATE t SET a = 1", &view, &policy),
            RouteDecision::Unavailable(NoRoute::Paused)
        );
        view.paused = false;
        view.primary = None;
        view.nodes[0].role = Role::Unknown;
        view.nodes[0].health = Health::Down;
        assert!(matches!(
            route_sql("SELECT 1", &view, &policy),
            RouteDecision::Replica { .. }
        ));
        assert_eq!(
            route_sql("UPDATE t SET a = 1", &view, &policy),
            RouteDecision::Unavailable(NoRoute::NoPrimary)
        );
        // No replica either: the read waits with the writes.
        for replica in &mut view.nodes[1..] {
            replica.health = Health::Down;
        }
        assert_eq!(
            route_sql("SELECT 1", &view, &policy),
            RouteDecision::Unavailable(NoRoute::NoPrimary)
        );
    }

    #[test]
    fn a_view_naming_a_replica_as_primary_routes_no_writes() {
        let mut view = cluster();
        view.primary = Some(NodeId(1));
        assert_eq!(
            route_sql("UPDATE t SET a = 1", &view, &RoutePolicy::default()),
            RouteDecision::Unavailable(NoRoute::NoPrimary)
        );
    }

    #[test]
    fn session_settings_pin_only_when_configured() {
        let classifier = Classifier::default();
        let set = classifier.classify(b"SET statement_timeout = '1s'");
        let temp = classifier.classify(b"CREATE TEMP TABLE t (a int)");
        let policy = RoutePolicy::default();
        assert_eq!(policy.pin(&set), None);
        assert_eq!(policy.pin(&temp), Some(PinReason::TemporaryTable));
        let pinning = RoutePolicy {
            pin_session_settings: true,
            ..RoutePolicy::default()
        };
        assert_eq!(pinning.pin(&set), Some(PinReason::SessionSetting));
    }

    #[test]
    fn reasons_are_indexed_and_named_uniquely() {
        for (i, reason) in RouteReason::ALL.iter().enumerate() {
            assert_eq!(reason.index(), i);
        }
        let names: std::collections::HashSet<_> =
            RouteReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(names.len(), RouteReason::ALL.len());
    }
}
