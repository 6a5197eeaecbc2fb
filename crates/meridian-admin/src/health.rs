//! What the health endpoints answer, decided from the monitor's snapshot in pure functions:
//! the original service's `GET /health`, the load-balancer checks in Patroni's style
//! (`/primary`, `/replica?max_lag=`, `/liveness`, `/readiness`) and the topology of
//! `GET /api/database/status`.
//!
//! A node is *up* when it answers probes (healthy or degraded); unknown (not judged yet) and
//! down are not up.

use meridian_core::status::{ClusterStatus, NodeState};
use meridian_core::topology::{Health, Role};

use crate::model::{
    self, HealthCounts, HealthState, Link, Liveness, NodeStatus, PoolState, PrimaryCheck,
    Readiness, Region, ReplicaCheck, ReplicaHealth, Topology,
};

/// An answer: whether the check passes (200) or not (503), and its body.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer<T> {
    /// The check passes.
    pub ok: bool,
    /// The body.
    pub body: T,
}

fn up(node: &NodeState) -> bool {
    matches!(node.health, Health::Healthy | Health::Degraded)
}

/// The node taking writes, when one is known, observed as primary and up.
fn writable_primary(status: &ClusterStatus) -> Option<&NodeState> {
    status
        .primary
        .and_then(|id| status.node(id))
        .filter(|node| node.role == Role::Primary && up(node))
}

/// Every node other than the current primary (configured replicas, and an old primary that
/// awaits rejoin).
fn replicas(status: &ClusterStatus) -> impl Iterator<Item = &NodeState> {
    status
        .nodes
        .iter()
        .filter(move |node| Some(node.id) != status.primary)
}

fn link(connected: bool) -> Link {
    if connected {
        Link::Connected
    } else {
        Link::Disconnected
    }
}

/// `GET /health`: 200 while every configured node is up; 503 when the primary or any
/// replica is down. `status` is `healthy` (all healthy), `degraded` (all up, some slow or
/// failing probes) or `unhealthy`.
pub fn health(status: &ClusterStatus, version: &str) -> Answer<model::Health> {
    let primary_up = writable_primary(status).is_some();
    let replica_nodes: Vec<&NodeState> = replicas(status).collect();
    let replicas_up = replica_nodes.iter().all(|node| up(node));
    let all_healthy = status
        .nodes
        .iter()
        .all(|node| node.health == Health::Healthy);
    let ok = primary_up && replicas_up;
    let state = if !ok {
        HealthState::Unhealthy
    } else if all_healthy && !status.paused {
        HealthState::Healthy
    } else {
        HealthState::Degraded
    };
    Answer {
        ok,
        body: model::Health {
            status: state,
            version: version.to_owned(),
            db_primary: link(primary_up),
            db_replica: (!replica_nodes.is_empty()).then(|| link(replicas_up)),
            replicas: replica_nodes
                .iter()
                .map(|node| ReplicaHealth {
                    name: node.name.to_string(),
                    region: node.region.to_string(),
                    state: node.health.as_str().to_owned(),
                    role: node.role.as_str().to_owned(),
                    lag_bytes: node.lag.map(|lag| lag.bytes),
                    lag_seconds: node.lag.map(|lag| lag.seconds.as_secs_f64()),
                })
                .collect(),
        },
    }
}

/// `GET /primary`: 200 only while a writable primary exists (not while a failover is under
/// way).
pub fn primary(status: &ClusterStatus) -> Answer<PrimaryCheck> {
    match writable_primary(status).filter(|_| !status.paused) {
        Some(node) => Answer {
            ok: true,
            body: PrimaryCheck {
                role: Some("primary".to_owned()),
                node: Some(node.name.to_string()),
                generation: Some(status.generation),
                reason: None,
            },
        },
        None => Answer {
            ok: false,
            body: PrimaryCheck {
                role: None,
                node: None,
                generation: None,
                reason: Some(
                    if status.paused {
                        "a failover or switchover is under way"
                    } else {
                        "no writable primary"
                    }
                    .to_owned(),
                ),
            },
        },
    }
}

/// `GET /replica?max_lag=BYTES`: 200 while at least one replica is up (and, with `max_lag`,
/// at most that many bytes behind).
pub fn replica(status: &ClusterStatus, max_lag: Option<u64>) -> Answer<ReplicaCheck> {
    let qualifying: Vec<String> = status
        .nodes
        .iter()
        .filter(|node| node.role == Role::Replica && up(node))
        .filter(|node| match (max_lag, node.lag) {
            (Some(max), Some(lag)) => lag.bytes <= max,
            (Some(_), None) => false,
            (None, _) => true,
        })
        .map(|node| node.name.to_string())
        .collect();
    Answer {
        ok: !qualifying.is_empty(),
        body: ReplicaCheck {
            replicas: qualifying,
            max_lag,
        },
    }
}

/// `GET /liveness`: the process answers.
pub fn liveness() -> Liveness {
    Liveness { alive: true }
}

/// `GET /readiness`: 200 once the proxy has somewhere to send writes (a primary observed).
pub fn readiness(status: &ClusterStatus) -> Answer<Readiness> {
    let ready = writable_primary(status).is_some();
    Answer {
        ok: ready,
        body: Readiness { ready },
    }
}

/// Nodes by judged health.
pub fn health_counts(status: &ClusterStatus) -> HealthCounts {
    let mut counts = HealthCounts::default();
    for node in &status.nodes {
        match node.health {
            Health::Healthy => counts.healthy += 1,
            Health::Degraded => counts.degraded += 1,
            Health::Down => counts.down += 1,
            Health::Unknown => counts.unknown += 1,
        }
    }
    counts
}

/// Whether the primary is writable and up.
pub fn primary_healthy(status: &ClusterStatus) -> bool {
    writable_primary(status).is_some()
}

/// A node's status, with the pools (of every pool given) that lead to it.
pub fn node_status(status: &ClusterStatus, node: &NodeState, pools: &[PoolState]) -> NodeStatus {
    NodeStatus {
        name: node.name.to_string(),
        host: node.host.to_string(),
        port: node.port,
        role: node.role.as_str().to_owned(),
        health: node.health.as_str().to_owned(),
        primary: Some(node.id) == status.primary,
        lag_bytes: node.lag.map(|lag| lag.bytes),
        lag_seconds: node.lag.map(|lag| lag.seconds.as_secs_f64()),
        latency_ms: node.latency.map(|l| l.as_secs_f64() * 1000.0),
        connect_latency_ms: node.connect_latency.map(|l| l.as_secs_f64() * 1000.0),
        lsn: node.lsn.map(|lsn| lsn.to_string()),
        timeline: node.timeline,
        wal_receiver: node.wal_receiver.clone(),
        upstream: node.upstream.clone(),
        connections: node.connections,
        max_connections: node.max_connections,
        consecutive_failures: node.consecutive_failures,
        error_rate: node.error_rate,
        last_error: node.last_error.clone(),
        last_probe_at_ms: node.last_probe_at.map(|at| at.0),
        needs_rejoin: node.needs_rejoin,
        no_failover: node.no_failover,
        priority: node.priority,
        pools: pools
            .iter()
            .filter(|pool| pool.node == *node.name)
            .cloned()
            .collect(),
    }
}

/// `GET /api/database/status`: the whole topology, by region, with the proxy's pools.
pub fn topology(status: &ClusterStatus, pools: &[PoolState]) -> Topology {
    let mut regions: Vec<Region> = Vec::new();
    for node in &status.nodes {
        let entry = node_status(status, node, pools);
        match regions
            .iter_mut()
            .find(|region| region.name == *node.region)
        {
            Some(region) => region.nodes.push(entry),
            None => regions.push(Region {
                name: node.region.to_string(),
                nodes: vec![entry],
            }),
        }
    }
    Topology {
        generation: status.generation,
        primary: status
            .primary
            .and_then(|id| status.node(id))
            .map(|node| node.name.to_string()),
        paused: status.paused,
        failover_halted: status.failover.halted.clone(),
        regions,
        coordination: None,
        archiving: None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use meridian_core::lag::Lag;
    use meridian_core::topology::NodeId;
    use serde_json::{Value, json};

    use super::*;

    /// The body as it goes on the wire.
    fn wire<T: serde::Serialize>(answer: &Answer<T>) -> Value {
        serde_json::to_value(&answer.body).unwrap()
    }

    fn node(id: u16, name: &str, region: &str, role: Role) -> NodeState {
        NodeState {
            id: NodeId(id),
            name: Arc::from(name),
            region: Arc::from(region),
            host: Arc::from("127.0.0.1"),
            port: 5432 + id,
            no_failover: false,
            priority: 0,
            role,
            health: Health::Healthy,
            latency: Some(Duration::from_millis(2)),
            connect_latency: Some(Duration::from_millis(3)),
            lag: (role == Role::Replica).then(Lag::default),
            timeline: Some(1),
            lsn: None,
            receive_lsn: None,
            wal_receiver: None,
            upstream: None,
            connections: 1,
            max_connections: 100,
            consecutive_failures: 0,
            error_rate: 0.0,
            last_error: None,
            last_probe_at: None,
            probes: 1,
            probe_failures: 0,
            needs_rejoin: false,
        }
    }

    /// A primary and a replica in `us`, a replica in `eu`, all healthy.
    pub(crate) fn cluster() -> ClusterStatus {
        ClusterStatus {
            generation: 1,
            primary: Some(NodeId(0)),
            nodes: vec![
                node(0, "pg1", "us", Role::Primary),
                node(1, "pg2", "us", Role::Replica),
                node(2, "pg3", "eu", Role::Replica),
            ],
            ..ClusterStatus::default()
        }
    }

    #[test]
    fn health_is_healthy_then_degraded_then_unhealthy() {
        let mut status = cluster();
        let answer = health(&status, "1.2.3");
        assert!(answer.ok);
        assert_eq!(wire(&answer)["status"], "healthy");
        assert_eq!(wire(&answer)["version"], "1.2.3");
        assert_eq!(wire(&answer)["db_primary"], "connected");
        assert_eq!(wire(&answer)["db_replica"], "connected");
        assert_eq!(wire(&answer)["replicas"][1]["name"], "pg3");
        assert_eq!(wire(&answer)["replicas"][1]["lag_bytes"], 0);

        status.nodes[2].health = Health::Degraded;
        let answer = health(&status, "1.2.3");
        assert!(answer.ok, "degraded is still up");
        assert_eq!(wire(&answer)["status"], "degraded");

        status.nodes[2].health = Health::Down;
        let answer = health(&status, "1.2.3");
        assert!(!answer.ok, "a configured replica is down");
        assert_eq!(wire(&answer)["status"], "unhealthy");
        assert_eq!(wire(&answer)["db_replica"], "disconnected");
        assert_eq!(wire(&answer)["db_primary"], "connected");
        assert_eq!(wire(&answer)["replicas"][1]["state"], "down");

        let mut no_primary = cluster();
        no_primary.nodes[0].health = Health::Down;
        let answer = health(&no_primary, "1.2.3");
        assert!(!answer.ok);
        assert_eq!(wire(&answer)["db_primary"], "disconnected");
    }

    #[test]
    fn a_single_node_has_no_replica_status() {
        let mut status = cluster();
        status.nodes.truncate(1);
        let answer = health(&status, "v");
        assert!(answer.ok);
        assert_eq!(wire(&answer)["db_replica"], Value::Null);
        assert_eq!(wire(&answer)["replicas"], json!([]));
    }

    #[test]
    fn the_primary_check_fails_while_paused_or_without_a_writable_primary() {
        let mut status = cluster();
        assert!(primary(&status).ok);
        assert_eq!(wire(&primary(&status))["node"], "pg1");
        status.paused = true;
        assert!(!primary(&status).ok);
        status.paused = false;
        status.nodes[0].role = Role::Replica;
        assert!(!primary(&status).ok, "observed as a replica: not writable");
        assert!(!readiness(&status).ok);
    }

    #[test]
    fn the_replica_check_honours_the_lag_ceiling() {
        let mut status = cluster();
        assert!(replica(&status, None).ok);
        status.nodes[1].lag = Some(Lag {
            bytes: 5_000_000,
            seconds: Duration::from_secs(3),
        });
        let answer = replica(&status, Some(1_000_000));
        assert!(answer.ok);
        assert_eq!(wire(&answer)["replicas"], json!(["pg3"]));
        status.nodes[2].health = Health::Down;
        assert!(!replica(&status, Some(1_000_000)).ok);
        assert!(
            replica(&status, None).ok,
            "without a ceiling the lagging one counts"
        );
    }

    #[test]
    fn the_topology_groups_nodes_by_region() {
        let pools = [PoolState {
            node: "pg2".to_owned(),
            user: "app".to_owned(),
            database: "db".to_owned(),
            open: 3,
            idle: 1,
            in_use: 2,
            waiting: 0,
            checkouts: 10,
            checkout_timeouts: 0,
            connects: 3,
            connect_failures: 0,
        }];
        let topology = serde_json::to_value(topology(&cluster(), &pools)).unwrap();
        assert_eq!(topology["primary"], "pg1");
        assert_eq!(topology["regions"][0]["name"], "us");
        assert_eq!(topology["regions"][0]["nodes"][1]["name"], "pg2");
        assert_eq!(topology["regions"][1]["name"], "eu");
        assert_eq!(topology["regions"][0]["nodes"][0]["primary"], true);
        assert_eq!(topology["regions"][0]["nodes"][0]["latency_ms"], 2.0);
        assert_eq!(topology["regions"][0]["nodes"][0]["pools"], json!([]));
        assert_eq!(topology["regions"][0]["nodes"][1]["pools"][0]["in_use"], 2);
        assert_eq!(topology["failover_halted"], Value::Null);
    }

    #[test]
    fn nodes_are_counted_by_health() {
        let mut status = cluster();
        status.nodes[1].health = Health::Down;
        status.nodes[2].health = Health::Unknown;
        let counts = health_counts(&status);
        assert_eq!(
            (counts.healthy, counts.degraded, counts.down, counts.unknown),
            (1, 0, 1, 1)
        );
        assert!(primary_healthy(&status));
        status.nodes[0].health = Health::Down;
        assert!(!primary_healthy(&status));
    }
}
