//! The operator interface: an HTTP router over a small control trait, so that it can be tested
//! without a cluster. It serves the Prometheus exposition (`/metrics`), the failover history
//! and the operator commands (switchover, failover to a region, rejoin) under
//! `/api/database/`; the rest of the REST API and the dashboard build on the same listener.
//!
//! Commands change the cluster, so they need `Authorization: Bearer <token>` with the
//! configured `admin_token`; without one configured they are refused with how to set it. Each
//! command leaves one audit line in the log (what, outcome; never the token). Errors have one
//! JSON shape: `{"error":{"code":"…","message":"…"}}`.

mod auth;
mod error;
pub mod health;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use meridian_core::status::ClusterStatus;
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpListener;

pub use crate::auth::AdminAuth;
pub use crate::error::ApiError;
pub use axum::http::StatusCode;

/// A command that changes the cluster.
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
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
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

/// The future a mutation returns.
pub type MutationFuture<'a> = Pin<Box<dyn Future<Output = Result<Value, ApiError>> + Send + 'a>>;

/// What the operator interface needs from the running Meridian.
pub trait Control: Send + Sync + 'static {
    /// Everything Meridian measures, in the Prometheus text exposition format.
    fn metrics(&self) -> String;

    /// The monitor's latest snapshot of every node.
    fn status(&self) -> Arc<ClusterStatus>;

    /// The alerts `filter` asks for, newest first, as a JSON array (a bad severity is a 400).
    fn alerts(&self, filter: AlertFilter) -> Result<Value, ApiError>;

    /// The most recent failovers and switchovers, newest first, as a JSON array.
    fn failover_history(&self, limit: usize) -> Result<Value, ApiError>;

    /// Carries out a command and returns its result (the run's record) once it has finished
    /// or a wait limit passed.
    fn mutate(&self, mutation: Mutation) -> MutationFuture<'_>;
}

#[derive(Clone)]
struct AppState {
    control: Arc<dyn Control>,
    auth: Arc<AdminAuth>,
}

/// The operator interface's routes.
pub fn router(control: Arc<dyn Control>, auth: AdminAuth) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(get_health))
        .route("/primary", get(get_primary))
        .route("/replica", get(get_replica))
        .route("/liveness", get(liveness))
        .route("/readiness", get(readiness))
        .route("/api/database/status", get(status))
        .route("/api/database/alerts", get(alerts))
        .route("/api/database/failover-history", get(failover_history))
        .route("/api/database/switchover", post(switchover))
        .route("/api/database/failover/{region}", post(failover))
        .route("/api/database/rejoin/{node}", post(rejoin))
        .fallback(not_found)
        .with_state(AppState {
            control,
            auth: Arc::new(auth),
        })
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

/// `GET /metrics`: OpenMetrics-compatible Prometheus text.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.control.metrics(),
    )
}

/// A health answer: 200 when its check passes, 503 otherwise.
fn answer(answer: health::Answer) -> Response {
    let code = if answer.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(answer.body)).into_response()
}

/// `GET /health`: the original service's health document (see [`health::health`]).
async fn get_health(State(state): State<AppState>) -> Response {
    answer(health::health(
        &state.control.status(),
        env!("CARGO_PKG_VERSION"),
    ))
}

/// `GET /primary`: 200 while a writable primary exists.
async fn get_primary(State(state): State<AppState>) -> Response {
    answer(health::primary(&state.control.status()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MaxLag {
    max_lag: Option<u64>,
}

/// `GET /replica?max_lag=BYTES`: 200 while a replica qualifies.
async fn get_replica(
    State(state): State<AppState>,
    query: Result<Query<MaxLag>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match query {
        Ok(Query(query)) => answer(health::replica(&state.control.status(), query.max_lag)),
        Err(e) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("max_lag must be a number of bytes, e.g. /replica?max_lag=1048576: {e}"),
        )
        .into_response(),
    }
}

/// `GET /liveness`: the process answers.
async fn liveness() -> Response {
    axum::Json(serde_json::json!({ "alive": true })).into_response()
}

/// `GET /readiness`: 200 once a primary has been observed.
async fn readiness(State(state): State<AppState>) -> Response {
    answer(health::readiness(&state.control.status()))
}

/// `GET /api/database/status`: the topology by region.
async fn status(State(state): State<AppState>) -> Response {
    axum::Json(health::topology(&state.control.status())).into_response()
}

/// `GET /api/database/alerts?limit=&severity=&active=&node=`.
async fn alerts(
    State(state): State<AppState>,
    query: Result<Query<AlertFilter>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(mut filter) = query.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("expected ?limit=N&severity=low|medium|high|critical&active=true|false&node=NAME: {e}"),
        )
    })?;
    filter.limit = Some(filter.limit.unwrap_or(100).clamp(1, 1000));
    Ok(axum::Json(state.control.alerts(filter)?).into_response())
}

#[derive(Deserialize)]
struct Limit {
    limit: Option<usize>,
}

/// `GET /api/database/failover-history?limit=N` (default 20, at most 1000).
async fn failover_history(
    State(state): State<AppState>,
    Query(query): Query<Limit>,
) -> Result<Response, ApiError> {
    let limit = query.limit.unwrap_or(20).clamp(1, 1000);
    Ok(axum::Json(state.control.failover_history(limit)?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SwitchoverBody {
    to: Option<String>,
}

/// `POST /api/database/switchover` with an optional body `{"to": "node"}`.
async fn switchover(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let to = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice::<SwitchoverBody>(&body) {
            Ok(body) => body.to,
            Err(e) => {
                return ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("the body must be {{\"to\": \"<node>\"}} or empty: {e}"),
                )
                .into_response();
            }
        }
    };
    command(&state, &headers, Mutation::Switchover { to }).await
}

/// `POST /api/database/failover/{region}`.
async fn failover(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(region): Path<String>,
) -> Response {
    command(&state, &headers, Mutation::Failover { region }).await
}

/// `POST /api/database/rejoin/{node}`.
async fn rejoin(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(node): Path<String>,
) -> Response {
    command(&state, &headers, Mutation::Rejoin { node }).await
}

/// Checks the token, runs the command, and leaves the audit line.
async fn command(state: &AppState, headers: &HeaderMap, mutation: Mutation) -> Response {
    let what = mutation.describe();
    if let Err(refused) = state.auth.check(headers) {
        tracing::warn!(target: "meridian::audit", command = %what, outcome = "refused", reason = %refused.message(), "operator command");
        return refused.into_response();
    }
    match state.control.mutate(mutation).await {
        Ok(result) => {
            tracing::info!(target: "meridian::audit", command = %what, outcome = "done", "operator command");
            axum::Json(result).into_response()
        }
        Err(error) => {
            tracing::warn!(target: "meridian::audit", command = %what, outcome = "failed", reason = %error.message(), "operator command");
            error.into_response()
        }
    }
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
}

#[cfg(test)]
mod tests;
