//! Where a transaction runs, decided in pure code with the reason attached.
//!
//! Today every transaction runs on the primary; read/write splitting adds replica decisions
//! to the same function, so the proxy never decides on its own.

use crate::topology::{ClusterView, NodeId, Role};

/// Why a transaction was sent where it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteReason {
    /// It may write, so it runs on the primary.
    Primary,
}

/// Why a transaction cannot be placed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRoute {
    /// No node is known to be the primary.
    NoPrimary,
    /// A failover or switchover is under way: wait for the next view.
    Paused,
}

/// A routing decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteDecision {
    /// Run on this node.
    Node {
        /// The chosen node.
        node: NodeId,
        /// Why.
        reason: RouteReason,
    },
    /// Nowhere to run it right now.
    Unavailable(NoRoute),
}

/// Routes a transaction: to the current primary.
pub fn route(view: &ClusterView) -> RouteDecision {
    if view.paused {
        return RouteDecision::Unavailable(NoRoute::Paused);
    }
    match view.primary.and_then(|id| view.node(id)) {
        Some(node) if node.role != Role::Replica => RouteDecision::Node {
            node: node.id,
            reason: RouteReason::Primary,
        },
        _ => RouteDecision::Unavailable(NoRoute::NoPrimary),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::topology::{Health, NodeView};

    fn node(id: u16, role: Role) -> NodeView {
        NodeView {
            id: NodeId(id),
            name: Arc::from(format!("pg{id}")),
            region: Arc::from("main"),
            host: Arc::from("127.0.0.1"),
            port: 5432 + id,
            role,
            health: Health::Healthy,
        }
    }

    #[test]
    fn routes_to_the_primary_of_the_view() {
        let view = ClusterView {
            generation: 1,
            primary: Some(NodeId(1)),
            paused: false,
            nodes: vec![node(0, Role::Replica), node(1, Role::Primary)],
        };
        assert_eq!(
            route(&view),
            RouteDecision::Node {
                node: NodeId(1),
                reason: RouteReason::Primary
            }
        );
    }

    #[test]
    fn a_paused_view_routes_nowhere_yet() {
        let view = ClusterView {
            generation: 3,
            primary: Some(NodeId(1)),
            paused: true,
            nodes: vec![node(0, Role::Replica), node(1, Role::Primary)],
        };
        assert_eq!(route(&view), RouteDecision::Unavailable(NoRoute::Paused));
    }

    #[test]
    fn no_primary_means_no_route() {
        let view = ClusterView {
            generation: 1,
            primary: None,
            paused: false,
            nodes: vec![node(0, Role::Replica)],
        };
        assert_eq!(route(&view), RouteDecision::Unavailable(NoRoute::NoPrimary));
        // A view naming a node that is observed as a replica is not trusted for writes.
        let stale = ClusterView {
            generation: 1,
            primary: Some(NodeId(0)),
            paused: false,
            nodes: vec![node(0, Role::Replica)],
        };
        assert_eq!(
            route(&stale),
            RouteDecision::Unavailable(NoRoute::NoPrimary)
        );
    }
}
