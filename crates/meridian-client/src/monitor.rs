//! The background checks: each node's role and WAL position, on a connection of the monitor's
//! own (so a pool the application exhausted does not look like a dead node), reconnecting
//! with backoff when the node goes away. Optionally, a Meridian control plane's view
//! (`/api/database/status`) decides the roles instead.
//!
//! sqlx does not expose the `in_hot_standby` parameter PostgreSQL reports on promotion, so the
//! role comes from `pg_is_in_recovery()` at every check; a query that fails on a node wakes
//! its check at once instead of waiting for the next tick.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use meridian_core::Lsn;
use meridian_core::balance::Role;
use serde::Deserialize;
use sqlx::{Connection, PgConnection};
use tokio::sync::watch;

use crate::manager::Shared;
use crate::node::Node;

/// Role and position, in one round trip.
const CHECK_SQL: &str = "SELECT pg_is_in_recovery(), (CASE WHEN pg_is_in_recovery() \
     THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_insert_lsn() END)::text";

/// Least time between two checks of a node that queries asked for.
const MIN_SPACING: Duration = Duration::from_millis(20);

/// What one check found.
#[derive(Debug)]
struct Found {
    in_recovery: bool,
    lsn: Option<Lsn>,
    latency: Duration,
}

/// Checks node `index` once (reusing `conn`, opening it first when needed).
async fn check(
    shared: &Shared,
    node: &Node,
    conn: &mut Option<PgConnection>,
) -> Result<Found, String> {
    let timeout = shared.options.check_timeout;
    if conn.is_none() {
        let opened = tokio::time::timeout(timeout, PgConnection::connect_with(&node.connect))
            .await
            .map_err(|_| format!("connecting timed out after {timeout:?}"))?
            .map_err(|e| e.to_string())?;
        *conn = Some(opened);
    }
    let c = conn.as_mut().expect("opened above");
    let started = Instant::now();
    let row: Result<(bool, Option<String>), String> =
        match tokio::time::timeout(timeout, sqlx::query_as(CHECK_SQL).fetch_one(&mut *c)).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err(format!("the check timed out after {timeout:?}")),
        };
    let (in_recovery, lsn) = row.inspect_err(|_| *conn = None)?;
    Ok(Found {
        in_recovery,
        lsn: lsn.and_then(|text| text.parse().ok()),
        latency: started.elapsed(),
    })
}

/// Records a check's outcome in the node's state.
fn apply(shared: &Shared, node: &Node, found: Result<Found, String>) {
    let roles_from_here = !shared.control_plane_fresh();
    let mut observed = node.observed.lock().expect("not poisoned");
    match found {
        Ok(found) => {
            if roles_from_here {
                observed.role = next_role(shared, observed.role, found.in_recovery);
                observed.lag_bytes = None;
            }
            if observed.failures > 0 || !observed.reachable {
                tracing::info!(node = %node.name, "node reachable");
            }
            observed.reachable = true;
            observed.lsn = found.lsn;
            observed.latency = Some(found.latency);
            observed.failures = 0;
            observed.last_error = None;
        }
        Err(error) => {
            if observed.reachable || observed.failures == 0 {
                tracing::warn!(node = %node.name, %error, "node unreachable");
            }
            observed.reachable = false;
            observed.failures += 1;
            observed.last_error = Some(error);
            drop(observed);
            // Acquisitions waiting on it give up now rather than at their timeout.
            node.down.notify_waiters();
        }
    }
}

/// The role after a check: a node seen in recovery before and now out of it was promoted, and
/// its promotion counts as newer than any earlier primary's.
fn next_role(shared: &Shared, before: Role, in_recovery: bool) -> Role {
    match (before, in_recovery) {
        (_, true) => Role::Replica,
        (Role::Primary { since }, false) => Role::Primary { since },
        (Role::Replica, false) => {
            let since = shared.promotions.fetch_add(1, Ordering::Relaxed) + 1;
            Role::Primary { since }
        }
        (Role::Unknown, false) => Role::Primary { since: 0 },
    }
}

/// Checks every node once, concurrently: what [`crate::Builder::build`] waits for.
pub(crate) async fn first_round(shared: &Shared) -> Vec<Option<PgConnection>> {
    let checks = shared.nodes.iter().map(|node| async move {
        let mut conn = None;
        let found = check(shared, node, &mut conn).await;
        apply(shared, node, found);
        conn
    });
    futures::future::join_all(checks).await
}

/// Checks node `index` for as long as the manager lives: every `check_interval` while it
/// answers, on the reconnection backoff while it does not, at once when a query failed on it.
pub(crate) async fn watch_node(
    shared: Arc<Shared>,
    index: usize,
    mut conn: Option<PgConnection>,
    mut stop: watch::Receiver<bool>,
) {
    let node = &shared.nodes[index];
    loop {
        let failures = node.observed.lock().expect("not poisoned").failures;
        let delay = match failures {
            0 => shared.options.check_interval,
            n => shared.options.reconnect.delay(n - 1, rand::random::<f64>()),
        };
        let checked = tokio::time::Instant::now();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = node.check_now.notified() => {
                // Queries failing in a burst ask for many checks: one per MIN_SPACING will do.
                tokio::time::sleep_until(checked + MIN_SPACING).await;
            }
            _ = stop.changed() => return,
        }
        let found = check(&shared, node, &mut conn).await;
        apply(&shared, node, found);
    }
}

/// The part of `/api/database/status` the client reads.
#[derive(Debug, Deserialize)]
pub(crate) struct ControlView {
    generation: u64,
    paused: bool,
    regions: Vec<ControlRegion>,
}

#[derive(Debug, Deserialize)]
struct ControlRegion {
    nodes: Vec<ControlNode>,
}

#[derive(Debug, Deserialize)]
struct ControlNode {
    host: String,
    port: u16,
    role: String,
    health: String,
    primary: bool,
    lag_bytes: Option<u64>,
    lsn: Option<String>,
    latency_ms: Option<f64>,
}

/// Applies a control plane's view to the nodes it knows (matched by host and port). The node
/// it names primary is the primary, its promotion ordered by the view's generation; while a
/// failover is under way (`paused`) no node is primary, so writes wait rather than reach a
/// node being demoted.
pub(crate) fn apply_control_view(shared: &Shared, view: &ControlView) {
    for theirs in view.regions.iter().flat_map(|r| &r.nodes) {
        let Some(node) = shared
            .nodes
            .iter()
            .find(|n| n.connect.get_host() == theirs.host && n.connect.get_port() == theirs.port)
        else {
            continue;
        };
        let mut observed = node.observed.lock().expect("not poisoned");
        observed.role = if theirs.primary && !view.paused {
            Role::Primary {
                since: view.generation,
            }
        } else if theirs.role == "replica" {
            Role::Replica
        } else {
            Role::Unknown
        };
        if theirs.health == "down" {
            observed.reachable = false;
        }
        observed.lag_bytes = theirs.lag_bytes;
        if let Some(lsn) = theirs.lsn.as_deref().and_then(|t| t.parse().ok()) {
            observed.lsn = Some(lsn);
        }
        if let Some(ms) = theirs.latency_ms {
            observed.latency = Some(Duration::from_secs_f64(ms.max(0.0) / 1000.0));
        }
    }
}

/// Polls the control plane every `check_interval`. Its view holds for three intervals; when
/// the control plane stops answering, the client's own checks decide roles again.
pub(crate) async fn follow_control_plane(
    shared: Arc<Shared>,
    url: String,
    mut stop: watch::Receiver<bool>,
) {
    let endpoint = format!("{}/api/database/status", url.trim_end_matches('/'));
    let token = shared.options.control_plane_token.clone();
    let timeout = shared.options.check_timeout;
    loop {
        let endpoint = endpoint.clone();
        let token = token.clone();
        let fetched =
            tokio::task::spawn_blocking(move || fetch(&endpoint, token.as_deref(), timeout)).await;
        match fetched {
            Ok(Ok(view)) => {
                apply_control_view(&shared, &view);
                shared.control_plane_seen(Instant::now() + 3 * shared.options.check_interval);
            }
            Ok(Err(error)) => tracing::warn!(%error, "cannot read the control plane's view"),
            Err(_) => {}
        }
        tokio::select! {
            () = tokio::time::sleep(shared.options.check_interval) => {}
            _ = stop.changed() => return,
        }
    }
}

fn fetch(endpoint: &str, token: Option<&str>, timeout: Duration) -> Result<ControlView, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .build()
        .into();
    let mut request = agent.get(endpoint);
    if let Some(token) = token {
        request = request.header("Authorization", format!("Bearer {token}"));
    }
    let mut response = request.call().map_err(|e| format!("{endpoint}: {e}"))?;
    response
        .body_mut()
        .read_json::<ControlView>()
        .map_err(|e| format!("{endpoint}: unexpected answer: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_control_view_parses_from_the_admin_api_shape() {
        let json = r#"{"generation": 4, "primary": "b", "paused": false, "failover_halted": null,
            "regions": [{"name": "r", "nodes": [
              {"name": "a", "host": "10.0.0.1", "port": 5432, "role": "replica", "health": "down",
               "primary": false, "lag_bytes": 100, "lsn": "0/10", "latency_ms": 2.5, "extra": 1},
              {"name": "b", "host": "10.0.0.2", "port": 5432, "role": "primary", "health": "healthy",
               "primary": true, "lag_bytes": null, "lsn": "0/20", "latency_ms": null}]}]}"#;
        let view: ControlView = serde_json::from_str(json).unwrap();
        assert_eq!(view.generation, 4);
        assert!(!view.paused);
        let nodes = &view.regions[0].nodes;
        assert!(nodes[1].primary && nodes[0].health == "down");
    }
}
