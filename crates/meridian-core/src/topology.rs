//! The cluster as Meridian sees it: nodes, their observed roles and health, and the current
//! primary with its generation.
//!
//! A [`ClusterView`] is an immutable value. The control plane publishes a new one whenever
//! something changes and the data plane reads whichever is current; nobody mutates a
//! published view. Roles are *observed* (`pg_is_in_recovery()`), never taken from
//! configuration: until a node has been observed its role is [`Role::Unknown`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::lag::Lag;
use crate::lsn::Lsn;

/// A node's identity for the life of the process: its index in the configured node list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u16);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// What the proxy tells the control plane about the servers it uses, as it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxySignal {
    /// A connection to this node failed or was lost: worth probing it now rather than at the
    /// next scheduled probe.
    Unusable(NodeId),
    /// The first write committed under this view generation, on this node (the end of a
    /// failover's write unavailability, as clients saw it).
    WriteAccepted {
        /// The node the write committed on.
        node: NodeId,
        /// The view generation its server connection was opened under.
        generation: u64,
    },
}

/// What a node was last observed to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Accepts writes (`pg_is_in_recovery() = false`).
    Primary,
    /// A streaming replica (`pg_is_in_recovery() = true`).
    Replica,
    /// Not observed yet, or not reachable.
    Unknown,
}

impl Role {
    /// The lower-case name, as logs, the store and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::Unknown => "unknown",
        }
    }
}

/// Meridian's judgement of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Answering within thresholds.
    Healthy,
    /// Answering, but slowly or with errors.
    Degraded,
    /// Not answering.
    Down,
    /// Not judged yet.
    Unknown,
}

impl Health {
    /// The lower-case name, as logs, the store and the API spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Down => "down",
            Health::Unknown => "unknown",
        }
    }
}

/// One node in a view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    /// Stable identity.
    pub id: NodeId,
    /// Configured name.
    pub name: Arc<str>,
    /// Region the node belongs to.
    pub region: Arc<str>,
    /// Host name or address.
    pub host: Arc<str>,
    /// TCP port.
    pub port: u16,
    /// Observed role.
    pub role: Role,
    /// Judged health.
    pub health: Health,
    /// Replication lag as last measured (replicas, once the primary was observed).
    pub lag: Option<Lag>,
    /// A replica's replay position as last probed.
    pub replayed: Option<Lsn>,
    /// Latency of the last successful probe.
    pub latency: Option<Duration>,
}

/// The whole cluster at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// Increases at every promotion; writes only go to the primary of the current generation.
    pub generation: u64,
    /// The node that takes writes, if one is known.
    pub primary: Option<NodeId>,
    /// A failover or switchover is under way: new transactions that need the primary wait for
    /// the next view instead of failing.
    pub paused: bool,
    /// Every configured node.
    pub nodes: Vec<NodeView>,
}

impl ClusterView {
    /// The node with this id.
    pub fn node(&self, id: NodeId) -> Option<&NodeView> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The node with this name.
    pub fn node_named(&self, name: &str) -> Option<&NodeView> {
        self.nodes.iter().find(|n| &*n.name == name)
    }
}
