//! The proxy's side of routing: the live per-node knowledge the pure policy
//! (`meridian_core::routing`) reads, and the counters of what it decided.
//!
//! Per node, kept in atomics so that routing takes no lock: transactions in flight (the load
//! in `latency × in-flight`), the circuit (opened when a connection to the node fails, so
//! reads go elsewhere at once instead of waiting for the monitor to mark the node down), and
//! the highest replay position a session confirmed there itself (read-your-writes: a later
//! session with an older token needs no check). The read-your-writes position of `global`
//! mode (the newest write any session committed) lives here too.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use meridian_core::Lsn;
use meridian_core::classify::PinReason;
use meridian_core::routing::{
    self, Loads, NodeLoad, RouteDecision, RoutePolicy, RouteReason, SessionRoute, Statement,
};
use meridian_core::topology::{ClusterView, NodeId};
use tokio::time::Instant;

/// How long reads avoid a node after a connection to it failed. The monitor, told at once on
/// the fast signal, usually marks a dead node down well within it; after it one read tries
/// the node again.
pub const CIRCUIT_OPEN_FOR: Duration = Duration::from_secs(2);

/// Every pin reason, in the order the counters keep them.
pub const PIN_REASONS: [PinReason; 7] = [
    PinReason::TemporaryTable,
    PinReason::SessionAdvisoryLock,
    PinReason::Listen,
    PinReason::HoldCursor,
    PinReason::PreparedStatement,
    PinReason::SessionSetting,
    PinReason::LoadedLibrary,
];

/// What the proxy knows of one node.
#[derive(Debug, Default)]
struct NodeState {
    in_flight: AtomicU32,
    /// Milliseconds since the router started until which the circuit is open (0: closed).
    circuit_open_until: AtomicU64,
    replayed: AtomicU64,
    routed: [AtomicU64; RouteReason::ALL.len()],
    /// Reads that failed over to another node after a connection to this one failed.
    rerouted: AtomicU64,
}

/// Counters of one node, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeRouting {
    /// The node.
    pub node: NodeId,
    /// Transactions routed there, by reason (in [`RouteReason::ALL`] order), with the count.
    pub routed: Vec<(RouteReason, u64)>,
    /// Transactions running there now.
    pub in_flight: u32,
    /// Its circuit is open: no reads go there for now.
    pub circuit_open: bool,
    /// Reads sent elsewhere after a connection to it failed.
    pub rerouted: u64,
}

/// Everything routing counted, for metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingReport {
    /// Per node.
    pub nodes: Vec<NodeRouting>,
    /// Sessions pinned to their server, by reason.
    pub pins: Vec<(PinReason, u64)>,
    /// Reads a replica refused with 25006 that were run again on the primary.
    pub read_only_retries: u64,
    /// Reads that waited for a replica to replay the session's last write.
    pub causal_waits: u64,
    /// Of those, the ones that gave up and went to the primary.
    pub causal_timeouts: u64,
    /// Reads that found no replica and failed (`primary_reads = never`).
    pub no_replica_failures: u64,
}

/// The live routing state shared by every session.
#[derive(Debug)]
pub struct Router {
    policy: RoutePolicy,
    started: Instant,
    nodes: Vec<NodeState>,
    /// The newest write position any session learned (`read_your_writes = global`).
    global_lsn: AtomicU64,
    tie: AtomicU64,
    pins: [AtomicU64; PIN_REASONS.len()],
    read_only_retries: AtomicU64,
    causal_waits: AtomicU64,
    causal_timeouts: AtomicU64,
    no_replica_failures: AtomicU64,
}

impl Router {
    /// A router for the nodes of `view` (node ids are fixed for the life of the process).
    pub fn new(policy: RoutePolicy, view: &ClusterView) -> Router {
        let count = view
            .nodes
            .iter()
            .map(|n| usize::from(n.id.0) + 1)
            .max()
            .unwrap_or(0);
        Router {
            policy,
            started: Instant::now(),
            nodes: (0..count).map(|_| NodeState::default()).collect(),
            global_lsn: AtomicU64::new(0),
            tie: AtomicU64::new(0),
            pins: Default::default(),
            read_only_retries: AtomicU64::new(0),
            causal_waits: AtomicU64::new(0),
            causal_timeouts: AtomicU64::new(0),
            no_replica_failures: AtomicU64::new(0),
        }
    }

    /// The policy.
    pub fn policy(&self) -> &RoutePolicy {
        &self.policy
    }

    /// Decides where `statement` runs; see [`routing::route`].
    pub fn route(
        &self,
        statement: &Statement,
        session: &SessionRoute,
        view: &ClusterView,
    ) -> RouteDecision {
        routing::route(statement, session, view, &self.policy, self)
    }

    /// Counts a decision that was carried out.
    pub fn count(&self, node: NodeId, reason: RouteReason) {
        if let Some(state) = self.node(node) {
            state.routed[reason.index()].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A transaction starts on `node`; it ends when the guard is dropped.
    pub fn start(self: &Arc<Self>, node: NodeId) -> InFlight {
        if let Some(state) = self.node(node) {
            state.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        InFlight {
            router: self.clone(),
            node,
        }
    }

    /// A connection to `node` failed: no reads go there for [`CIRCUIT_OPEN_FOR`].
    pub fn open_circuit(&self, node: NodeId) {
        if let Some(state) = self.node(node) {
            let until = self.millis() + millis(CIRCUIT_OPEN_FOR);
            state.circuit_open_until.store(until, Ordering::Relaxed);
            state.rerouted.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// `node` was seen to have replayed `lsn`.
    pub fn replayed(&self, node: NodeId, lsn: Lsn) {
        if let Some(state) = self.node(node) {
            state.replayed.fetch_max(lsn.0, Ordering::Relaxed);
        }
    }

    /// A session committed a write that ends at `lsn`.
    pub fn wrote(&self, lsn: Lsn) {
        self.global_lsn.fetch_max(lsn.0, Ordering::Relaxed);
    }

    /// The newest write position any session learned.
    pub fn global_lsn(&self) -> Option<Lsn> {
        match self.global_lsn.load(Ordering::Relaxed) {
            0 => None,
            lsn => Some(Lsn(lsn)),
        }
    }

    /// A session got pinned.
    pub fn pinned(&self, reason: PinReason) {
        if let Some(i) = PIN_REASONS.iter().position(|r| *r == reason) {
            self.pins[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A read refused by a replica with 25006 runs again on the primary.
    pub fn read_only_retry(&self) {
        self.read_only_retries.fetch_add(1, Ordering::Relaxed);
    }

    /// A read waits for a replica to replay a session's write; `timed_out` when it gave up.
    pub fn causal_wait(&self, timed_out: bool) {
        self.causal_waits.fetch_add(1, Ordering::Relaxed);
        if timed_out {
            self.causal_timeouts.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A read failed for want of a replica.
    pub fn no_replica(&self) {
        self.no_replica_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Every counter.
    pub fn report(&self) -> RoutingReport {
        let now = self.millis();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RoutingReport {
            nodes: self
                .nodes
                .iter()
                .enumerate()
                .map(|(i, state)| NodeRouting {
                    node: NodeId(i as u16),
                    routed: RouteReason::ALL
                        .iter()
                        .map(|r| (*r, load(&state.routed[r.index()])))
                        .collect(),
                    in_flight: state.in_flight.load(Ordering::Relaxed),
                    circuit_open: load(&state.circuit_open_until) > now,
                    rerouted: load(&state.rerouted),
                })
                .collect(),
            pins: PIN_REASONS
                .iter()
                .zip(&self.pins)
                .map(|(r, n)| (*r, load(n)))
                .collect(),
            read_only_retries: load(&self.read_only_retries),
            causal_waits: load(&self.causal_waits),
            causal_timeouts: load(&self.causal_timeouts),
            no_replica_failures: load(&self.no_replica_failures),
        }
    }

    fn node(&self, node: NodeId) -> Option<&NodeState> {
        self.nodes.get(usize::from(node.0))
    }

    fn millis(&self) -> u64 {
        millis(self.started.elapsed()).max(1)
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Loads for Router {
    fn load(&self, node: NodeId) -> NodeLoad {
        let Some(state) = self.node(node) else {
            return NodeLoad::default();
        };
        let open_until = state.circuit_open_until.load(Ordering::Relaxed);
        NodeLoad {
            in_flight: state.in_flight.load(Ordering::Relaxed),
            circuit_open: open_until != 0 && open_until > self.millis(),
            replayed: Lsn(state.replayed.load(Ordering::Relaxed)),
        }
    }

    fn tie_break(&self) -> u64 {
        self.tie.fetch_add(1, Ordering::Relaxed)
    }
}

/// A transaction running on a node, counted while it lives.
#[derive(Debug)]
pub struct InFlight {
    router: Arc<Router>,
    node: NodeId,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(state) = self.router.node(self.node) {
            state.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use meridian_core::topology::{Health, NodeView, Role};

    use super::*;

    fn view() -> ClusterView {
        let node = |id: u16, role: Role| NodeView {
            id: NodeId(id),
            name: Arc::from(format!("n{id}")),
            region: Arc::from("r"),
            host: Arc::from("127.0.0.1"),
            port: 5432,
            role,
            health: Health::Healthy,
            lag: None,
            replayed: None,
            latency: None,
        };
        ClusterView {
            generation: 1,
            primary: Some(NodeId(0)),
            paused: false,
            nodes: vec![node(0, Role::Primary), node(1, Role::Replica)],
        }
    }

    #[tokio::test]
    async fn loads_follow_transactions_circuits_and_confirmed_positions() {
        let router = Arc::new(Router::new(RoutePolicy::default(), &view()));
        let first = router.start(NodeId(1));
        let second = router.start(NodeId(1));
        assert_eq!(router.load(NodeId(1)).in_flight, 2);
        drop(first);
        assert_eq!(router.load(NodeId(1)).in_flight, 1);
        drop(second);
        assert_eq!(router.load(NodeId(1)).in_flight, 0);

        assert!(!router.load(NodeId(1)).circuit_open);
        router.open_circuit(NodeId(1));
        assert!(router.load(NodeId(1)).circuit_open);
        assert!(!router.load(NodeId(0)).circuit_open);

        router.replayed(NodeId(1), Lsn(200));
        router.replayed(NodeId(1), Lsn(100));
        assert_eq!(router.load(NodeId(1)).replayed, Lsn(200));
        // A node the router never heard of has no load and is not a panic.
        assert_eq!(router.load(NodeId(9)), NodeLoad::default());
        router.open_circuit(NodeId(9));
    }

    #[tokio::test]
    async fn a_replica_with_an_open_circuit_gets_no_reads() {
        let router = Router::new(RoutePolicy::default(), &view());
        let read = Statement {
            classification: meridian_core::classify::Classifier::default().classify(b"SELECT 1"),
            hint: routing::Target::Auto,
        };
        let session = SessionRoute::default();
        assert_eq!(
            router.route(&read, &session, &view()).node(),
            Some(NodeId(1))
        );
        router.open_circuit(NodeId(1));
        let decision = router.route(&read, &session, &view());
        assert_eq!(
            decision,
            RouteDecision::Primary {
                node: NodeId(0),
                reason: RouteReason::NoReplica
            }
        );
        router.count(NodeId(0), RouteReason::NoReplica);
        let report = router.report();
        assert!(report.nodes[1].circuit_open);
        assert_eq!(report.nodes[1].rerouted, 1);
        assert!(
            report.nodes[0]
                .routed
                .contains(&(RouteReason::NoReplica, 1))
        );
    }

    #[test]
    fn the_global_position_only_moves_forward() {
        let router = Router::new(RoutePolicy::default(), &view());
        assert_eq!(router.global_lsn(), None);
        router.wrote(Lsn(10));
        router.wrote(Lsn(5));
        assert_eq!(router.global_lsn(), Some(Lsn(10)));
        router.pinned(PinReason::TemporaryTable);
        assert!(
            router
                .report()
                .pins
                .contains(&(PinReason::TemporaryTable, 1))
        );
    }
}
