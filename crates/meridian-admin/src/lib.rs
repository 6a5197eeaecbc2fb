//! The operator interface: the REST API, the Prometheus exposition and the dashboard, as one
//! HTTP router over a small control trait, so that it can be tested without a cluster.
//!
//! - Load-balancer checks (`/health`, `/primary`, `/replica`, `/liveness`, `/readiness`) are
//!   always open: HAProxy and Kubernetes probes send no credentials.
//! - Reads (`/metrics` and `GET /api/database/*`) are open, or need the admin token when
//!   `admin_protect_reads` is on.
//! - Commands change the cluster or its connections, so they always need
//!   `Authorization: Bearer <token>` with the configured `admin_token`; without one configured
//!   they are refused with how to set it. Each command leaves one audit line in the log (what,
//!   outcome; never the token).
//!
//! Errors have one JSON shape: `{"error":{"code":"…","message":"…"}}`. The OpenAPI document at
//! `/api/openapi.json` is generated from the handlers' annotations and the typed bodies of
//! [`model`], registered together with the routes (see `api`).

mod api;
mod auth;
mod dashboard;
mod error;
pub mod health;
pub mod model;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use meridian_core::status::ClusterStatus;
use serde::Deserialize;
use tokio::net::TcpListener;
use utoipa::IntoParams;

pub use crate::auth::AdminAuth;
pub use crate::error::ApiError;
pub use axum::http::StatusCode;

use crate::model::{
    Alert, Archiving, Backups, CoordinationInfo, FailoverRun, Performance, PoolState, ProbeSample,
    QueryAnalysis, Recycled,
};

/// A command for the failover machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mutation {
    /// Planned change of primary, to `to` or the best replica.
    Switchover {
        /// The replica to promote, by name.
        to: Option<String>,
    },
    /// Fail over to the best replica of `region`.
    Failover {
        /// The region, by name.
        region: String,
    },
    /// Turn `node` (an old primary) into a replica of the current primary.
    Rejoin {
        /// The node, by name.
        node: String,
    },
}

impl Mutation {
    fn describe(&self) -> String {
        match self {
            Mutation::Switchover { to: None } => "switchover".to_owned(),
            Mutation::Switchover { to: Some(to) } => format!("switchover to {to}"),
            Mutation::Failover { region } => format!("failover to region {region}"),
            Mutation::Rejoin { node } => format!("rejoin of {node}"),
        }
    }
}

/// Which alerts `GET /api/database/alerts` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AlertFilter {
    /// At most this many, newest first (default 100, at most 1000).
    pub limit: Option<usize>,
    /// Only this severity and above (`low`, `medium`, `high`, `critical`).
    pub severity: Option<String>,
    /// `true`: only active alerts; `false`: only resolved ones.
    pub active: Option<bool>,
    /// Only alerts about this node.
    pub node: Option<String>,
}

/// A boxed future borrowing the control.
pub type ControlFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the operator interface needs from the running Meridian.
pub trait Control: Send + Sync + 'static {
    /// Everything Meridian measures, in the Prometheus text exposition format.
    fn metrics(&self) -> String;

    /// The monitor's latest snapshot of every node.
    fn status(&self) -> Arc<ClusterStatus>;

    /// The proxy's pools with their counters.
    fn pools(&self) -> Vec<PoolState>;

    /// Sessions waiting for a primary right now.
    fn waiting_for_primary(&self) -> usize;

    /// The alerts `filter` asks for, newest first (a bad severity is a 400).
    fn alerts(&self, filter: AlertFilter) -> Result<Vec<Alert>, ApiError>;

    /// The most recent failovers and switchovers, newest first.
    fn failover_history(&self, limit: usize) -> Result<Vec<FailoverRun>, ApiError>;

    /// Probe samples of `node` (or every node), newest first (an unknown node is a 404).
    fn probe_history(&self, node: Option<&str>, limit: usize)
    -> Result<Vec<ProbeSample>, ApiError>;

    /// Latency, throughput and routing per node.
    fn performance(&self) -> Performance;

    /// The configuration in effect as JSON, secrets redacted.
    fn config(&self) -> serde_json::Value;

    /// What Meridian makes of `query` against the live cluster.
    fn analyze(&self, query: &str) -> Result<QueryAnalysis, ApiError>;

    /// Carries out a failover-machine command and returns its run's record once it has
    /// finished or a wait limit passed.
    fn mutate(&self, mutation: Mutation) -> ControlFuture<'_, Result<FailoverRun, ApiError>>;

    /// Probes every node now and returns the status once the results are judged.
    fn probe_all(&self) -> ControlFuture<'_, Arc<ClusterStatus>>;

    /// Rebuilds the probe connections to the nodes of `region` (a 404 for an unknown one),
    /// probes them on the fresh connections and returns the status once judged.
    fn reconnect(&self, region: &str) -> ControlFuture<'_, Result<Arc<ClusterStatus>, ApiError>>;

    /// Replaces the pools' connections gracefully: those of `region`'s nodes, or all.
    fn recycle(&self, region: Option<&str>) -> Result<Recycled, ApiError>;

    /// With several instances: this instance's coordination, and the view the leader
    /// published (generation, primary, paused) that its proxy routes writes by.
    fn coordination(&self) -> Option<(CoordinationInfo, Option<PublishedView>)> {
        None
    }

    /// The primary's WAL archiving as last checked; `None` when no WAL archive is configured.
    fn archiving(&self) -> Option<Archiving> {
        None
    }

    /// The backup catalog as last read; `None` when no backup location is configured.
    fn backups(&self) -> Option<Backups> {
        None
    }
}

/// The view the leader published, as a proxy applies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedView {
    /// Generation.
    pub generation: u64,
    /// The primary's name.
    pub primary: Option<String>,
    /// Writes wait.
    pub paused: bool,
}

/// The operator interface's routes: API, metrics, OpenAPI document and dashboard.
pub fn router(control: Arc<dyn Control>, auth: AdminAuth) -> Router {
    api::router(control, auth)
}

/// Serves `router` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests;
