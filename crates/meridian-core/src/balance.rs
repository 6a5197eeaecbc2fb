//! Which node an in-process client (`meridian-client`) sends a query to, decided in pure code.
//!
//! The client keeps one connection pool per node and asks [`choose`] for every query, with
//! what its monitor last observed of each node:
//!
//! - [`Intent::Write`] goes to the primary: the node observed as primary, or, when two claim to
//!   be (an old primary still up after a promotion elsewhere), the one that became primary
//!   last: a promotion is the newer fact. No primary: [`Unavailable::NoPrimary`].
//! - [`Intent::Read`] goes to a *qualifying* replica: observed as a replica, reachable, circuit
//!   not open, and no further behind the primary than the lag ceiling (a lag that cannot be
//!   measured, because no primary is reachable, does not exclude). Among them the
//!   [`Strategy`] picks. None qualifies: the primary.
//! - [`Intent::ReadAfter`] is a read that must see a write: only replicas known to have
//!   replayed the write's WAL position qualify (the lag ceiling still applies); otherwise the
//!   primary. This is what makes read-your-writes exact rather than probable.
//!
//! Every decision carries its reason, so the client can log and count why a read landed on
//! the primary.

use std::fmt;
use std::time::Duration;

use crate::lsn::Lsn;

/// What a query needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Intent {
    /// Reads; any replica that is close enough will do.
    Read,
    /// Writes (or reads that must be current): the primary.
    Write,
    /// Reads that must see everything up to this WAL position (a write's token).
    ReadAfter(Lsn),
}

impl fmt::Display for Intent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Intent::Read => f.write_str("read"),
            Intent::Write => f.write_str("write"),
            Intent::ReadAfter(lsn) => write!(f, "read after {lsn}"),
        }
    }
}

/// How the qualifying replicas share the reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// In turn.
    #[default]
    RoundRobin,
    /// The one with the fewest queries under way (ties in turn).
    LeastInFlight,
    /// The one with the lowest measured round trip (ties, and unmeasured ones, in turn).
    LowestLatency,
}

/// What the monitor last observed of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not known yet, or not reachable since start.
    Unknown,
    /// Accepts writes; `since` orders promotions: a larger number became primary later.
    Primary {
        /// When (in the monitor's own count of role changes) it was last seen becoming primary.
        since: u64,
    },
    /// In recovery.
    Replica,
}

/// One node as the chooser sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeState {
    /// Its observed role.
    pub role: Role,
    /// Its last check (or query) succeeded.
    pub reachable: bool,
    /// Its circuit breaker is open: send nothing.
    pub circuit_open: bool,
    /// Bytes of WAL it is behind the primary, when measurable.
    pub lag_bytes: Option<u64>,
    /// Last WAL position it replayed (replicas).
    pub replayed: Option<Lsn>,
    /// Round trip of its last check.
    pub latency: Option<Duration>,
    /// Queries (connections) under way on it.
    pub in_flight: u32,
}

/// The rules of one choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Policy {
    /// How replicas share reads.
    pub strategy: Strategy,
    /// Replicas further behind than this many bytes get no reads (`None`: no ceiling).
    pub max_lag_bytes: Option<u64>,
}

/// Where the query goes, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Index of the chosen node in the slice given to [`choose`].
    pub node: usize,
    /// Why it.
    pub reason: Reason,
}

/// Why a node was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The primary, for a write.
    Primary,
    /// A replica, by the strategy.
    Replica,
    /// The primary, because no replica qualified for the read.
    NoReplica,
    /// The primary, because no replica has replayed the position the read must see.
    NotReplayed,
}

impl Reason {
    /// A short name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Primary => "primary",
            Reason::Replica => "replica",
            Reason::NoReplica => "no_replica_qualified",
            Reason::NotReplayed => "not_replayed_on_replicas",
        }
    }
}

/// Why no node can take the query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// A write (or a read with no replica left) needs the primary and none is reachable with
    /// a closed circuit.
    NoPrimary,
}

impl fmt::Display for Unavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unavailable::NoPrimary => f.write_str(
                "no reachable primary (every node is down, in recovery, or behind an open circuit)",
            ),
        }
    }
}

/// Chooses the node for `intent`. `turn` is a number the caller increments per query: it
/// rotates round-robin and breaks ties.
pub fn choose(
    nodes: &[NodeState],
    intent: Intent,
    policy: &Policy,
    turn: u64,
) -> Result<Choice, Unavailable> {
    let primary = primary(nodes);
    let must_have = match intent {
        Intent::Write => None,
        Intent::Read => Some(None),
        Intent::ReadAfter(lsn) => Some(Some(lsn)),
    };
    if let Some(after) = must_have {
        let qualifying: Vec<usize> = (0..nodes.len())
            .filter(|&i| qualifies(&nodes[i], policy, after))
            .collect();
        if let Some(node) = pick(nodes, &qualifying, policy.strategy, turn) {
            return Ok(Choice {
                node,
                reason: Reason::Replica,
            });
        }
        let reason = match after {
            // Replicas that would qualify but for the position: say so.
            Some(_) if (0..nodes.len()).any(|i| qualifies(&nodes[i], policy, None)) => {
                Reason::NotReplayed
            }
            _ => Reason::NoReplica,
        };
        return primary
            .map(|node| Choice { node, reason })
            .ok_or(Unavailable::NoPrimary);
    }
    primary
        .map(|node| Choice {
            node,
            reason: Reason::Primary,
        })
        .ok_or(Unavailable::NoPrimary)
}

/// The usable primary: the one promoted last among those reachable with a closed circuit.
fn primary(nodes: &[NodeState]) -> Option<usize> {
    nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.reachable && !n.circuit_open)
        .filter_map(|(i, n)| match n.role {
            Role::Primary { since } => Some((since, i)),
            _ => None,
        })
        // The latest promotion; among equals (both configured as primary at start) the first.
        .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)))
        .map(|(_, i)| i)
}

fn qualifies(node: &NodeState, policy: &Policy, after: Option<Lsn>) -> bool {
    node.role == Role::Replica
        && node.reachable
        && !node.circuit_open
        && match (policy.max_lag_bytes, node.lag_bytes) {
            (Some(max), Some(lag)) => lag <= max,
            _ => true,
        }
        && match after {
            None => true,
            Some(lsn) => node.replayed.is_some_and(|replayed| replayed >= lsn),
        }
}

/// The strategy's pick among `candidates` (indexes into `nodes`).
fn pick(nodes: &[NodeState], candidates: &[usize], strategy: Strategy, turn: u64) -> Option<usize> {
    if candidates.is_empty() {
        return None;
    }
    let rotated = |k: usize| candidates[(k + turn as usize) % candidates.len()];
    let in_turn = (0..candidates.len()).map(rotated);
    match strategy {
        Strategy::RoundRobin => Some(rotated(0)),
        // `min_by_key` keeps the first of equals: the rotation breaks ties in turn.
        Strategy::LeastInFlight => in_turn.min_by_key(|&i| nodes[i].in_flight),
        Strategy::LowestLatency => {
            in_turn.min_by_key(|&i| nodes[i].latency.unwrap_or(Duration::MAX))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary(since: u64) -> NodeState {
        NodeState {
            role: Role::Primary { since },
            ..replica()
        }
    }

    fn replica() -> NodeState {
        NodeState {
            role: Role::Replica,
            reachable: true,
            circuit_open: false,
            lag_bytes: Some(0),
            replayed: Some(Lsn(1000)),
            latency: Some(Duration::from_millis(1)),
            in_flight: 0,
        }
    }

    fn node_for(
        nodes: &[NodeState],
        intent: Intent,
        policy: &Policy,
        turn: u64,
    ) -> (usize, Reason) {
        let c = choose(nodes, intent, policy, turn).expect("a node");
        (c.node, c.reason)
    }

    #[test]
    fn writes_go_to_the_primary_and_reads_to_replicas() {
        let nodes = [primary(0), replica(), replica()];
        let p = Policy::default();
        assert_eq!(node_for(&nodes, Intent::Write, &p, 7), (0, Reason::Primary));
        let (node, reason) = node_for(&nodes, Intent::Read, &p, 7);
        assert_eq!(reason, Reason::Replica);
        assert!(node == 1 || node == 2);
    }

    #[test]
    fn without_replicas_everything_uses_the_primary() {
        let nodes = [primary(0)];
        let p = Policy::default();
        assert_eq!(
            node_for(&nodes, Intent::Read, &p, 0),
            (0, Reason::NoReplica)
        );
        assert_eq!(node_for(&nodes, Intent::Write, &p, 0), (0, Reason::Primary));
    }

    #[test]
    fn round_robin_takes_replicas_in_turn() {
        let nodes = [primary(0), replica(), replica(), replica()];
        let p = Policy::default();
        let picked: Vec<usize> = (0..6)
            .map(|turn| node_for(&nodes, Intent::Read, &p, turn).0)
            .collect();
        assert_eq!(picked, [1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn least_in_flight_prefers_the_idlest_and_rotates_among_equals() {
        let mut nodes = [primary(0), replica(), replica(), replica()];
        nodes[1].in_flight = 4;
        nodes[2].in_flight = 1;
        nodes[3].in_flight = 1;
        let p = Policy {
            strategy: Strategy::LeastInFlight,
            ..Policy::default()
        };
        let picked: Vec<usize> = (0..4)
            .map(|turn| node_for(&nodes, Intent::Read, &p, turn).0)
            .collect();
        assert!(!picked.contains(&1), "{picked:?}");
        assert!(picked.contains(&2) && picked.contains(&3), "{picked:?}");
    }

    #[test]
    fn lowest_latency_prefers_the_nearest_and_unmeasured_last() {
        let mut nodes = [primary(0), replica(), replica(), replica()];
        nodes[1].latency = Some(Duration::from_millis(40));
        nodes[2].latency = Some(Duration::from_millis(2));
        nodes[3].latency = None;
        let p = Policy {
            strategy: Strategy::LowestLatency,
            ..Policy::default()
        };
        for turn in 0..5 {
            assert_eq!(node_for(&nodes, Intent::Read, &p, turn).0, 2);
        }
    }

    #[test]
    fn lagging_down_and_open_circuit_replicas_get_no_reads() {
        let mut nodes = [primary(0), replica(), replica(), replica(), replica()];
        nodes[1].lag_bytes = Some(10_000_000);
        nodes[2].reachable = false;
        nodes[3].circuit_open = true;
        let p = Policy {
            max_lag_bytes: Some(1_000_000),
            ..Policy::default()
        };
        for turn in 0..8 {
            assert_eq!(node_for(&nodes, Intent::Read, &p, turn).0, 4);
        }
        // Without a ceiling the lagging one is fine.
        let p = Policy::default();
        assert!((0..8).any(|turn| node_for(&nodes, Intent::Read, &p, turn).0 == 1));
    }

    #[test]
    fn an_unmeasurable_lag_does_not_exclude() {
        let mut nodes = [replica()];
        nodes[0].lag_bytes = None;
        let p = Policy {
            max_lag_bytes: Some(0),
            ..Policy::default()
        };
        assert_eq!(node_for(&nodes, Intent::Read, &p, 0), (0, Reason::Replica));
    }

    #[test]
    fn with_no_replica_left_reads_fall_back_to_the_primary() {
        let mut nodes = [primary(0), replica(), replica()];
        nodes[1].reachable = false;
        nodes[2].role = Role::Unknown;
        let p = Policy::default();
        assert_eq!(
            node_for(&nodes, Intent::Read, &p, 3),
            (0, Reason::NoReplica)
        );
    }

    #[test]
    fn read_after_waits_for_a_replica_that_replayed_the_write() {
        let mut nodes = [primary(0), replica(), replica()];
        nodes[1].replayed = Some(Lsn(500));
        nodes[2].replayed = Some(Lsn(2000));
        let p = Policy::default();
        for turn in 0..4 {
            assert_eq!(
                node_for(&nodes, Intent::ReadAfter(Lsn(1500)), &p, turn),
                (2, Reason::Replica)
            );
        }
        assert_eq!(
            node_for(&nodes, Intent::ReadAfter(Lsn(3000)), &p, 0),
            (0, Reason::NotReplayed)
        );
        nodes[2].replayed = None;
        nodes[1].reachable = false;
        nodes[2].reachable = false;
        assert_eq!(
            node_for(&nodes, Intent::ReadAfter(Lsn(100)), &p, 0),
            (0, Reason::NoReplica)
        );
    }

    #[test]
    fn the_latest_promotion_wins_over_an_old_primary_still_up() {
        let nodes = [primary(0), primary(3), replica()];
        let p = Policy::default();
        assert_eq!(node_for(&nodes, Intent::Write, &p, 0), (1, Reason::Primary));
    }

    #[test]
    fn no_reachable_primary_is_an_error_for_writes_but_not_for_reads() {
        let mut nodes = [primary(0), replica()];
        nodes[0].reachable = false;
        let p = Policy::default();
        assert_eq!(
            choose(&nodes, Intent::Write, &p, 0),
            Err(Unavailable::NoPrimary)
        );
        assert_eq!(node_for(&nodes, Intent::Read, &p, 0), (1, Reason::Replica));
        nodes[1].reachable = false;
        assert_eq!(
            choose(&nodes, Intent::Read, &p, 0),
            Err(Unavailable::NoPrimary)
        );
        nodes[0].reachable = true;
        nodes[0].circuit_open = true;
        assert_eq!(
            choose(&nodes, Intent::Write, &p, 0),
            Err(Unavailable::NoPrimary)
        );
    }
}
