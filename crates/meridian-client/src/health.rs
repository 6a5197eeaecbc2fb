//! What the manager knows of its nodes, for a `/health` endpoint ([`Health`], the original
//! design's JSON plus per-node detail) and for metrics ([`Stats`], with a Prometheus text
//! rendering). Both read the monitor's last observations: no query is sent to build them.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use meridian_core::balance::Role;
use serde::Serialize;

use crate::manager::PoolManager;

/// The health document. Serializes as the original design's shape, extended:
///
/// ```json
/// {"status": "healthy", "db_primary": "connected", "db_replica": "connected",
///  "nodes": [{"name": "db-1:5432/app", "role": "primary", "state": "up", ...}]}
/// ```
///
/// `db_replica` is `null` when no replica is configured, `connected` while at least one
/// replica serves reads, `disconnected` otherwise.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Health {
    /// `healthy` (everything up), `degraded` (some replica down, reads still on replicas),
    /// `unhealthy` (no primary, or no replica left to read from).
    pub status: &'static str,
    /// `connected` or `disconnected`.
    pub db_primary: &'static str,
    /// `connected`, `disconnected`, or `null` without replicas.
    pub db_replica: Option<&'static str>,
    /// Where the roles come from: `checks` (the client's own) or `control_plane` (a Meridian
    /// control plane's view, while it answers).
    pub roles_from: &'static str,
    /// Every node.
    pub nodes: Vec<NodeHealth>,
}

/// One node in [`Health`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct NodeHealth {
    /// `host:port/database`.
    pub name: String,
    /// `primary`, `replica` or `unknown`.
    pub role: &'static str,
    /// `up` or `down`.
    pub state: &'static str,
    /// Round trip of its last check.
    pub latency_ms: Option<f64>,
    /// Bytes of WAL behind the primary (replicas).
    pub lag_bytes: Option<u64>,
    /// Its last position (insert on a primary, replay on a replica).
    pub lsn: Option<String>,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// Its pool.
    pub pool: PoolStats,
    /// Why its last check failed.
    pub last_error: Option<String>,
}

/// A node's sqlx pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// Connections open.
    pub size: u32,
    /// Of those, idle.
    pub idle: u32,
    /// Of those, in use.
    pub in_use: u32,
    /// The most it opens.
    pub max: u32,
}

impl Health {
    /// 200 when healthy or degraded, 503 when unhealthy: what a `/health` endpoint answers.
    ///
    /// ```no_run
    /// # fn f(db: meridian_client::PoolManager) {
    /// let health = db.health();
    /// let body = serde_json::to_string(&health).unwrap();
    /// let status = health.http_status(); // 200 or 503
    /// # }
    /// ```
    pub fn http_status(&self) -> u16 {
        if self.status == "unhealthy" { 503 } else { 200 }
    }
}

/// Counters and gauges for metrics.
///
/// ```no_run
/// # fn f(db: meridian_client::PoolManager) {
/// let stats = db.stats();
/// let text = stats.prometheus(); // serve it at /metrics
/// let on_replicas: u64 = stats.nodes.iter().filter(|n| n.role == "replica").map(|n| n.routed).sum();
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Stats {
    /// Reads that went to the primary because no replica qualified.
    pub read_fallbacks: u64,
    /// Per node.
    pub nodes: Vec<NodeStats>,
}

/// One node in [`Stats`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct NodeStats {
    /// `host:port/database`.
    pub name: String,
    /// `primary`, `replica` or `unknown`.
    pub role: &'static str,
    /// Its last check succeeded.
    pub up: bool,
    /// Queries routed to it.
    pub routed: u64,
    /// Queries that failed because of it.
    pub failures: u64,
    /// `closed`, `open` or `half_open`.
    pub breaker: &'static str,
    /// Its pool.
    pub pool: PoolStats,
    /// Bytes behind the primary.
    pub lag_bytes: Option<u64>,
    /// Its last check's round trip, in seconds.
    pub latency_seconds: Option<f64>,
}

impl Stats {
    /// The Prometheus text exposition of these figures (metric names `meridian_client_*`,
    /// labelled by node and role), for a service's `/metrics`.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP meridian_client_read_fallbacks_total Reads served by the primary because no replica qualified.\n\
             # TYPE meridian_client_read_fallbacks_total counter\n\
             meridian_client_read_fallbacks_total {}",
            self.read_fallbacks
        );
        let series: [(&str, &str, &str, Figure); 7] = [
            (
                "up",
                "gauge",
                "1 when the node's last check succeeded.",
                |n| Some(f64::from(u8::from(n.up))),
            ),
            (
                "routed_total",
                "counter",
                "Queries routed to the node.",
                |n| Some(n.routed as f64),
            ),
            (
                "failures_total",
                "counter",
                "Queries that failed because of the node.",
                |n| Some(n.failures as f64),
            ),
            (
                "pool_connections",
                "gauge",
                "Connections open in the node's pool.",
                |n| Some(f64::from(n.pool.size)),
            ),
            (
                "pool_in_use",
                "gauge",
                "Connections of the node's pool in use.",
                |n| Some(f64::from(n.pool.in_use)),
            ),
            (
                "lag_bytes",
                "gauge",
                "Bytes of WAL the replica is behind the primary.",
                |n| n.lag_bytes.map(|b| b as f64),
            ),
            (
                "latency_seconds",
                "gauge",
                "Round trip of the node's last check.",
                |n| n.latency_seconds,
            ),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(
                out,
                "# HELP meridian_client_{name} {help}\n# TYPE meridian_client_{name} {kind}"
            );
            for node in &self.nodes {
                if let Some(v) = value(node) {
                    let _ = writeln!(
                        out,
                        "meridian_client_{name}{{node=\"{}\",role=\"{}\"}} {v}",
                        node.name, node.role
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP meridian_client_breaker_open 1 when the node's circuit breaker is open or half-open.\n\
             # TYPE meridian_client_breaker_open gauge"
        );
        for node in &self.nodes {
            let _ = writeln!(
                out,
                "meridian_client_breaker_open{{node=\"{}\",state=\"{}\"}} {}",
                node.name,
                node.breaker,
                u8::from(node.breaker != "closed")
            );
        }
        out
    }
}

/// One per-node figure of [`Stats::prometheus`], read from a node's stats.
type Figure = fn(&NodeStats) -> Option<f64>;

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Primary { .. } => "primary",
        Role::Replica => "replica",
        Role::Unknown => "unknown",
    }
}

impl PoolManager {
    /// The health document, from the monitor's last checks.
    ///
    /// ```no_run
    /// # async fn f(db: meridian_client::PoolManager) {
    /// let health = db.health();
    /// println!("{} {}", health.http_status(), serde_json::to_string(&health).unwrap());
    /// # }
    /// ```
    pub fn health(&self) -> Health {
        let shared = self.shared();
        let now = shared.now();
        let states = shared.states(now);
        let writable = meridian_core::balance::choose(
            &states,
            meridian_core::balance::Intent::Write,
            &Default::default(),
            0,
        )
        .is_ok();
        // With a single node configured there is no replica to report, as in the original.
        let replica_up = states
            .iter()
            .any(|s| s.role == Role::Replica && s.reachable && !s.circuit_open);
        let db_replica = match (states.len() > 1, replica_up) {
            (false, _) => None,
            (true, true) => Some("connected"),
            (true, false) => Some("disconnected"),
        };
        let all_up = states.iter().all(|s| s.reachable && !s.circuit_open);
        let status = if !writable || db_replica == Some("disconnected") {
            "unhealthy"
        } else if all_up {
            "healthy"
        } else {
            "degraded"
        };
        let nodes = shared
            .nodes
            .iter()
            .zip(&states)
            .map(|(node, state)| {
                let observed = node.observed();
                NodeHealth {
                    name: node.name.clone(),
                    role: role_name(state.role),
                    state: if state.reachable { "up" } else { "down" },
                    latency_ms: state.latency.map(|d| d.as_secs_f64() * 1000.0),
                    lag_bytes: state.lag_bytes,
                    lsn: observed.lsn.map(|l| l.to_string()),
                    breaker: node.breaker_state(now).as_str(),
                    pool: pool_stats(node, shared.options.max_connections),
                    last_error: observed.last_error,
                }
            })
            .collect();
        Health {
            status,
            db_primary: if writable {
                "connected"
            } else {
                "disconnected"
            },
            db_replica,
            roles_from: if shared.control_plane_fresh() {
                "control_plane"
            } else {
                "checks"
            },
            nodes,
        }
    }

    /// Counters and gauges, for metrics (see [`Stats`]).
    pub fn stats(&self) -> Stats {
        let shared = self.shared();
        let now = shared.now();
        let states = shared.states(now);
        Stats {
            read_fallbacks: shared.fallbacks.load(Ordering::Relaxed),
            nodes: shared
                .nodes
                .iter()
                .zip(&states)
                .map(|(node, state)| NodeStats {
                    name: node.name.clone(),
                    role: role_name(state.role),
                    up: state.reachable,
                    routed: node.routed.load(Ordering::Relaxed),
                    failures: node.failures.load(Ordering::Relaxed),
                    breaker: node.breaker_state(now).as_str(),
                    pool: pool_stats(node, shared.options.max_connections),
                    lag_bytes: state.lag_bytes,
                    latency_seconds: state.latency.map(|d| d.as_secs_f64()),
                })
                .collect(),
        }
    }
}

fn pool_stats(node: &crate::node::Node, max: u32) -> PoolStats {
    let size = node.pool.size();
    let in_use = node.in_use();
    PoolStats {
        size,
        idle: size - in_use,
        in_use,
        max,
    }
}
