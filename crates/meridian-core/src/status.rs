//! What the monitor knows about every node, as one snapshot: the data behind the operator API,
//! the metrics and the logs.
//!
//! Pure data. The control plane produces a new snapshot after each judged probe; readers take
//! whichever is current.

use std::sync::Arc;
use std::time::Duration;

use crate::failover::FailoverState;
use crate::lag::Lag;
use crate::lsn::Lsn;
use crate::observation::Timestamp;
use crate::topology::{Health, NodeId, Role};

/// One node as last judged.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeState {
    /// Identity.
    pub id: NodeId,
    /// Configured name.
    pub name: Arc<str>,
    /// Region.
    pub region: Arc<str>,
    /// Host.
    pub host: Arc<str>,
    /// Port.
    pub port: u16,
    /// Configured: never promote this node.
    pub no_failover: bool,
    /// Configured preference among equals.
    pub priority: i32,
    /// Observed role.
    pub role: Role,
    /// Judged health.
    pub health: Health,
    /// Latency of the last successful probe.
    pub latency: Option<Duration>,
    /// How long the last opening of the probe's connection took (TCP, TLS, authentication).
    pub connect_latency: Option<Duration>,
    /// Replication lag (replicas, once the primary has been observed).
    pub lag: Option<Lag>,
    /// Timeline written or replayed.
    pub timeline: Option<u32>,
    /// The primary's insert position, or a replica's replay position.
    pub lsn: Option<Lsn>,
    /// A replica's received position.
    pub receive_lsn: Option<Lsn>,
    /// A replica's WAL receiver status (`streaming`, ...), `None` when none runs.
    pub wal_receiver: Option<String>,
    /// Where a replica streams from (`host:port`).
    pub upstream: Option<String>,
    /// Client backends on the node.
    pub connections: u32,
    /// Its `max_connections`.
    pub max_connections: u32,
    /// Consecutive failed probes.
    pub consecutive_failures: u32,
    /// Share of failed probes in the recent window.
    pub error_rate: f64,
    /// The last probe's error, described.
    pub last_error: Option<String>,
    /// When the node was last probed.
    pub last_probe_at: Option<Timestamp>,
    /// Probes run since start.
    pub probes: u64,
    /// Of those, failed.
    pub probe_failures: u64,
    /// An old primary that receives no traffic until it is a replica again.
    pub needs_rejoin: bool,
}

/// Every node, and who is primary.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterStatus {
    /// Increases at every change of primary.
    pub generation: u64,
    /// The node taking writes, if known.
    pub primary: Option<NodeId>,
    /// A failover or switchover is under way: transactions needing the primary wait.
    pub paused: bool,
    /// The failover machine's state: suspicion, the run under way, a halt.
    pub failover: FailoverState,
    /// Every configured node, in configuration order.
    pub nodes: Vec<NodeState>,
}

impl ClusterStatus {
    /// The node with this id.
    pub fn node(&self, id: NodeId) -> Option<&NodeState> {
        self.nodes.iter().find(|n| n.id == id)
    }
}
