//! The handlers of the REST API and their OpenAPI annotations, registered through
//! `utoipa-axum` so that every route is in the generated document by construction.
//!
//! Three groups, each with its access rule: open load-balancer checks, reads (token-protected
//! when configured), and commands (always token-protected and audited).

use std::sync::{Arc, OnceLock};

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{self, OpenApi};
use utoipa::{IntoParams, Modify};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::AdminAuth;
use crate::error::ApiError;
use crate::health::{self, Answer};
use crate::model::{
    AnalyzeRequest, Archiving, Backups, Connections, ErrorBody, FailoverRun, Liveness,
    NodeConnections, Performance, PrimaryCheck, ProbeSample, QueryAnalysis, Readiness, Reconnected,
    Recycled, ReplicaCheck, Report, SwitchoverRequest, SystemHealth, Topology,
};
use crate::{AlertFilter, Control, Mutation, StatusCode};

#[derive(Clone)]
struct AppState {
    control: Arc<dyn Control>,
    auth: Arc<AdminAuth>,
    /// The OpenAPI document, rendered once the routes are assembled.
    openapi: Arc<OnceLock<String>>,
}

/// The routes, with the OpenAPI document served at `/api/openapi.json`.
pub(crate) fn router(control: Arc<dyn Control>, auth: AdminAuth) -> axum::Router {
    let state = AppState {
        control,
        auth: Arc::new(auth),
        openapi: Arc::default(),
    };
    let (router, document) = routes(state.clone()).split_for_parts();
    let rendered = document
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot render the OpenAPI document: {e}\"}}"));
    let _ = state.openapi.set(rendered);
    router
        .merge(crate::dashboard::routes())
        .fallback(not_found)
        .with_state(state)
}

fn routes(state: AppState) -> OpenApiRouter<AppState> {
    let open = OpenApiRouter::new()
        .routes(routes!(get_health))
        .routes(routes!(get_primary))
        .routes(routes!(get_replica))
        .routes(routes!(liveness))
        .routes(routes!(readiness))
        .routes(routes!(openapi_json));
    let reads = OpenApiRouter::new()
        .routes(routes!(metrics))
        .routes(routes!(status))
        .routes(routes!(system_health))
        .routes(routes!(alerts))
        .routes(routes!(probe_history))
        .routes(routes!(failover_history))
        .routes(routes!(performance))
        .routes(routes!(connections))
        .routes(routes!(export))
        .routes(routes!(archiving))
        .routes(routes!(backups))
        .routes(routes!(analyze_query))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            reads_allowed,
        ));
    let commands = OpenApiRouter::new()
        .routes(routes!(switchover))
        .routes(routes!(failover))
        .routes(routes!(rejoin))
        .routes(routes!(reconnect))
        .routes(routes!(health_check))
        .routes(routes!(refresh_connections));
    OpenApiRouter::<AppState>::with_openapi(base_document())
        .merge(open)
        .merge(reads)
        .merge(commands)
}

/// Title, version, the bearer scheme and tags.
fn base_document() -> OpenApi {
    let mut document = openapi::OpenApiBuilder::new()
        .info(
            openapi::InfoBuilder::new()
                .title("Meridian operator API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Health checks, topology, alerts, history, performance and operator \
                     commands of a Meridian instance. Errors are {\"error\":{\"code\",\"message\"}}.",
                ))
                .build(),
        )
        .build();
    BearerScheme.modify(&mut document);
    document
}

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, document: &mut OpenApi) {
        let components = document.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "admin_token",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// Reads need the token when `admin_protect_reads` is on.
async fn reads_allowed(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match state.auth.check_read(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// A health answer: 200 when its check passes, 503 otherwise.
fn answer<T: Serialize>(answer: Answer<T>) -> Response {
    let code = if answer.ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(answer.body)).into_response()
}

/// A query string that did not parse: a 400 saying what is expected.
fn bad_query(expected: &str) -> impl FnOnce(QueryRejection) -> ApiError + '_ {
    move |e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("expected {expected}: {e}"),
        )
    }
}

/// A JSON body, or a 400 saying what is expected; an empty body is `T::default()` when
/// `empty` is given.
fn json_body<T: DeserializeOwned>(
    body: &Bytes,
    empty: Option<T>,
    expected: &str,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace)
        && let Some(value) = empty
    {
        return Ok(value);
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the body must be {expected}: {e}"),
        )
    })
}

/// `GET /health`: the original service's health document.
#[utoipa::path(get, path = "/health", tag = "checks",
    responses(
        (status = 200, description = "every configured node is up", body = crate::model::Health),
        (status = 503, description = "the primary or a configured replica is down", body = crate::model::Health),
    ))]
async fn get_health(State(state): State<AppState>) -> Response {
    answer(health::health(
        &state.control.status(),
        env!("CARGO_PKG_VERSION"),
    ))
}

/// `GET /primary`: 200 while a writable primary exists.
#[utoipa::path(get, path = "/primary", tag = "checks",
    responses(
        (status = 200, description = "a writable primary exists", body = PrimaryCheck),
        (status = 503, description = "none, or a failover is under way", body = PrimaryCheck),
    ))]
async fn get_primary(State(state): State<AppState>) -> Response {
    answer(health::primary(&state.control.status()))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct MaxLag {
    /// Only replicas at most this many bytes behind qualify.
    max_lag: Option<u64>,
}

/// `GET /replica?max_lag=BYTES`: 200 while a replica qualifies.
#[utoipa::path(get, path = "/replica", tag = "checks", params(MaxLag),
    responses(
        (status = 200, description = "at least one replica qualifies", body = ReplicaCheck),
        (status = 503, description = "none does", body = ReplicaCheck),
        (status = 400, description = "max_lag is not a number", body = ErrorBody),
    ))]
async fn get_replica(
    State(state): State<AppState>,
    query: Result<Query<MaxLag>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(bad_query(
        "max_lag as a number of bytes, e.g. /replica?max_lag=1048576",
    ))?;
    Ok(answer(health::replica(
        &state.control.status(),
        query.max_lag,
    )))
}

/// `GET /liveness`: the process answers.
#[utoipa::path(get, path = "/liveness", tag = "checks",
    responses((status = 200, description = "always", body = Liveness)))]
async fn liveness() -> Json<Liveness> {
    Json(health::liveness())
}

/// `GET /readiness`: 200 once a writable primary has been observed.
#[utoipa::path(get, path = "/readiness", tag = "checks",
    responses(
        (status = 200, description = "a writable primary is known", body = Readiness),
        (status = 503, description = "not yet", body = Readiness),
    ))]
async fn readiness(State(state): State<AppState>) -> Response {
    answer(health::readiness(&state.control.status()))
}

/// `GET /api/openapi.json`: this document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "checks",
    responses((status = 200, description = "the OpenAPI 3.1 document", content_type = "application/json")))]
async fn openapi_json(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.openapi.get().cloned().unwrap_or_default(),
    )
        .into_response()
}

/// `GET /metrics`: Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "reads",
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "every metric", body = String, content_type = "text/plain; version=0.0.4"),
        (status = 401, description = "reads are protected and the token is missing or wrong", body = ErrorBody),
    ))]
async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.control.metrics(),
    )
        .into_response()
}

fn topology(control: &dyn Control) -> Topology {
    let mut topology = health::topology(&control.status(), &control.pools());
    if let Some((info, published)) = control.coordination() {
        if let Some(published) = published {
            topology.generation = published.generation;
            topology.paused = published.paused;
            for node in topology.regions.iter_mut().flat_map(|r| r.nodes.iter_mut()) {
                node.primary = published.primary.as_deref() == Some(node.name.as_str());
            }
            topology.primary = published.primary;
        }
        topology.coordination = Some(info);
    }
    topology.archiving = control.archiving();
    topology
}

/// `GET /api/database/status`: the topology by region, with pools.
#[utoipa::path(get, path = "/api/database/status", tag = "reads",
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "regions, nodes, roles, health, lag, generation, pools", body = Topology),
        (status = 401, description = "reads are protected and the token is missing or wrong", body = ErrorBody),
    ))]
async fn status(State(state): State<AppState>) -> Json<Topology> {
    Json(topology(&*state.control))
}

fn system_health_of(control: &dyn Control) -> Result<SystemHealth, ApiError> {
    let status = control.status();
    let active_alerts = control.alerts(AlertFilter {
        limit: Some(1000),
        active: Some(true),
        ..AlertFilter::default()
    })?;
    Ok(SystemHealth {
        status: health::health(&status, env!("CARGO_PKG_VERSION"))
            .body
            .status,
        primary_healthy: health::primary_healthy(&status),
        primary: status
            .primary
            .and_then(|id| status.node(id))
            .map(|node| node.name.to_string()),
        generation: status.generation,
        paused: status.paused,
        failover_halted: status.failover.halted.clone(),
        nodes: health::health_counts(&status),
        active_alerts,
    })
}

/// `GET /api/database/health`: system health and active alerts.
#[utoipa::path(get, path = "/api/database/health", tag = "reads",
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "overall state, node counts, active alerts", body = SystemHealth),
        (status = 401, description = "reads are protected and the token is missing or wrong", body = ErrorBody),
    ))]
async fn system_health(State(state): State<AppState>) -> Result<Json<SystemHealth>, ApiError> {
    Ok(Json(system_health_of(&*state.control)?))
}

/// `GET /api/database/alerts?limit=&severity=&active=&node=`.
#[utoipa::path(get, path = "/api/database/alerts", tag = "reads", params(AlertFilter),
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "alerts, newest first", body = [crate::model::Alert]),
        (status = 400, description = "a bad filter", body = ErrorBody),
        (status = 401, description = "reads are protected and the token is missing or wrong", body = ErrorBody),
    ))]
async fn alerts(
    State(state): State<AppState>,
    query: Result<Query<AlertFilter>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(mut filter) = query.map_err(bad_query(
        "?limit=N&severity=low|medium|high|critical&active=true|false&node=NAME",
    ))?;
    filter.limit = Some(filter.limit.unwrap_or(100).clamp(1, 1000));
    Ok(Json(state.control.alerts(filter)?).into_response())
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ProbeQuery {
    /// Only this node's probes.
    endpoint: Option<String>,
    /// At most this many, newest first (default 100, at most 5000).
    limit: Option<usize>,
}

/// `GET /api/database/metrics?endpoint=&limit=`: probe history.
#[utoipa::path(get, path = "/api/database/metrics", tag = "reads", params(ProbeQuery),
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "probe samples, newest first", body = [ProbeSample]),
        (status = 400, description = "a bad query", body = ErrorBody),
        (status = 404, description = "no such node", body = ErrorBody),
        (status = 401, description = "reads are protected and the token is missing or wrong", body = ErrorBody),
    ))]
async fn probe_history(
    State(state): State<AppState>,
    query: Result<Query<ProbeQuery>, QueryRejection>,
) -> Result<Json<Vec<ProbeSample>>, ApiError> {
    let Query(query) = query.map_err(bad_query("?endpoint=NODE&limit=N"))?;
    let limit = query.limit.unwrap_or(100).clamp(1, 5000);
    Ok(Json(
        state
            .control
            .probe_history(query.endpoint.as_deref(), limit)?,
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct Limit {
    /// At most this many, newest first (default 20, at most 1000).
    limit: Option<usize>,
}

/// `GET /api/database/failover-history?limit=N`.
#[utoipa::path(get, path = "/api/database/failover-history", tag = "reads", params(Limit),
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "failovers and switchovers with their phases, newest first", body = [FailoverRun]),
        (status = 400, description = "a bad query", body = ErrorBody),
        (status = 401, description = "reads are protected and the token is missing or wrong", body = ErrorBody),
    ))]
async fn failover_history(
    State(state): State<AppState>,
    query: Result<Query<Limit>, QueryRejection>,
) -> Result<Json<Vec<FailoverRun>>, ApiError> {
    let Query(query) = query.map_err(bad_query("?limit=N"))?;
    let limit = query.limit.unwrap_or(20).clamp(1, 1000);
    Ok(Json(state.control.failover_history(limit)?))
}

/// `GET /api/database/performance`.
#[utoipa::path(get, path = "/api/database/performance", tag = "reads",
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "per-node latency, throughput, routing shares, pins, fallbacks", body = Performance),
        (status = 401, description = "reads are protected and the token is missing or wrong", body = ErrorBody),
    ))]
async fn performance(State(state): State<AppState>) -> Json<Performance> {
    Json(state.control.performance())
}

fn connections_of(control: &dyn Control) -> Connections {
    let status = control.status();
    let pools = control.pools();
    Connections {
        nodes: status
            .nodes
            .iter()
            .map(|node| NodeConnections {
                node: node.name.to_string(),
                region: node.region.to_string(),
                server_connections: node.connections,
                max_connections: node.max_connections,
                pooled: pools
                    .iter()
                    .filter(|pool| pool.node == *node.name)
                    .map(|pool| pool.open)
                    .sum(),
            })
            .collect(),
        pools,
        waiting_for_primary: control.waiting_for_primary(),
    }
}

/// `GET /api/database/connections`: pool state per node.
#[utoipa::path(get, path = "/api/database/connections", tag = "reads",
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "pools and server connection counts", body = Connections),
        (status = 401, description = "reads are protected and the token is missing or wrong", body = ErrorBody),
    ))]
async fn connections(State(state): State<AppState>) -> Json<Connections> {
    Json(connections_of(&*state.control))
}

/// `GET /api/database/archiving`: the primary's WAL archiving.
#[utoipa::path(get, path = "/api/database/archiving", tag = "reads",
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "state, RPO, last archived and failed WAL files of the primary", body = Archiving),
        (status = 404, description = "no WAL archive is configured ([backup] wal_archive)", body = ErrorBody),
        (status = 401, description = "reads are protected and the token is missing or wrong", body = ErrorBody),
    ))]
async fn archiving(State(state): State<AppState>) -> Result<Json<Archiving>, ApiError> {
    state.control.archiving().map(Json).ok_or_else(|| {
        ApiError::not_found(
            "no WAL archive is configured: set [backup] wal_archive (and run meridian backup \
             setup-archiving) to have the primary's archiving watched",
        )
    })
}

/// `GET /api/database/backups`: the backup catalog.
#[utoipa::path(get, path = "/api/database/backups", tag = "reads",
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "every stored backup, incomplete ones, and the age of the newest of each kind", body = Backups),
        (status = 404, description = "no backup location is configured ([backup] location)", body = ErrorBody),
        (status = 401, description = "reads are protected and the token is missing or wrong", body = ErrorBody),
    ))]
async fn backups(State(state): State<AppState>) -> Result<Json<Backups>, ApiError> {
    state.control.backups().map(Json).ok_or_else(|| {
        ApiError::not_found(
            "no backup location is configured: set [backup] location to have the catalog \
             served here",
        )
    })
}

/// `GET /api/database/export`: the full report.
#[utoipa::path(get, path = "/api/database/export", tag = "reads",
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "redacted configuration, topology, alerts, history, probes, performance, pools", body = Report),
        (status = 401, description = "reads are protected and the token is missing or wrong", body = ErrorBody),
    ))]
async fn export(State(state): State<AppState>) -> Result<Json<Report>, ApiError> {
    let control = &*state.control;
    let generated_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Ok(Json(Report {
        generated_at_ms,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        config: control.config(),
        topology: topology(control),
        health: system_health_of(control)?,
        alerts: control.alerts(AlertFilter {
            limit: Some(1000),
            ..AlertFilter::default()
        })?,
        failover_history: control.failover_history(100)?,
        probes: control.probe_history(None, 2000)?,
        performance: control.performance(),
        connections: connections_of(control),
    }))
}

/// `POST /api/database/analyze-query` with `{"query": "…"}`.
#[utoipa::path(post, path = "/api/database/analyze-query", tag = "reads",
    request_body = AnalyzeRequest,
    security((), ("admin_token" = [])),
    responses(
        (status = 200, description = "class, route, reason, complexity and a recommendation", body = QueryAnalysis),
        (status = 400, description = "the body is not {\"query\": \"…\"}", body = ErrorBody),
        (status = 401, description = "reads are protected and the token is missing or wrong", body = ErrorBody),
    ))]
async fn analyze_query(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<QueryAnalysis>, ApiError> {
    let request: AnalyzeRequest = json_body(&body, None, "{\"query\": \"<SQL>\"}")?;
    Ok(Json(state.control.analyze(&request.query)?))
}

/// `POST /api/database/switchover` with an optional body `{"to": "node"}`.
#[utoipa::path(post, path = "/api/database/switchover", tag = "commands",
    request_body(content = Option<SwitchoverRequest>, description = "the replica to promote; the best one when empty"),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "the run, once finished (or after 120 s, in progress)", body = FailoverRun),
        (status = 400, description = "a bad body", body = ErrorBody),
        (status = 401, description = "no token or a wrong one", body = ErrorBody),
        (status = 403, description = "no admin_token configured", body = ErrorBody),
        (status = 404, description = "no such node", body = ErrorBody),
        (status = 409, description = "refused (e.g. a run is under way)", body = ErrorBody),
        (status = 502, description = "the servers did not carry it out", body = ErrorBody),
    ))]
async fn switchover(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let to = match json_body::<SwitchoverRequest>(
        &body,
        Some(SwitchoverRequest::default()),
        "{\"to\": \"<node>\"} or empty",
    ) {
        Ok(request) => request.to,
        Err(e) => return e.into_response(),
    };
    run_command(&state, &headers, Mutation::Switchover { to }).await
}

/// `POST /api/database/failover/{region}`.
#[utoipa::path(post, path = "/api/database/failover/{region}", tag = "commands",
    params(("region" = String, Path, description = "the region whose best replica becomes primary")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "the run, once finished (or after 120 s, in progress)", body = FailoverRun),
        (status = 401, description = "no token or a wrong one", body = ErrorBody),
        (status = 403, description = "no admin_token configured", body = ErrorBody),
        (status = 404, description = "no such region", body = ErrorBody),
        (status = 409, description = "refused", body = ErrorBody),
        (status = 502, description = "the servers did not carry it out", body = ErrorBody),
    ))]
async fn failover(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(region): Path<String>,
) -> Response {
    run_command(&state, &headers, Mutation::Failover { region }).await
}

/// `POST /api/database/rejoin/{node}`.
#[utoipa::path(post, path = "/api/database/rejoin/{node}", tag = "commands",
    params(("node" = String, Path, description = "the old primary to turn into a replica")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "the run, once finished", body = FailoverRun),
        (status = 401, description = "no token or a wrong one", body = ErrorBody),
        (status = 403, description = "no admin_token configured", body = ErrorBody),
        (status = 404, description = "no such node", body = ErrorBody),
        (status = 409, description = "refused", body = ErrorBody),
        (status = 502, description = "the servers did not carry it out", body = ErrorBody),
    ))]
async fn rejoin(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(node): Path<String>,
) -> Response {
    run_command(&state, &headers, Mutation::Rejoin { node }).await
}

/// `POST /api/database/reconnect/{region}`: rebuild that region's pools and probe
/// connections.
#[utoipa::path(post, path = "/api/database/reconnect/{region}", tag = "commands",
    params(("region" = String, Path, description = "the region to reconnect to")),
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "pools recycled, nodes probed on fresh connections", body = Reconnected),
        (status = 401, description = "no token or a wrong one", body = ErrorBody),
        (status = 403, description = "no admin_token configured", body = ErrorBody),
        (status = 404, description = "no such region", body = ErrorBody),
    ))]
async fn reconnect(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(region): Path<String>,
) -> Response {
    let what = format!("reconnect to region {region}");
    audited(&state, &headers, what, || async {
        let control = &*state.control;
        let recycled = control.recycle(Some(&region))?;
        let status = control.reconnect(&region).await?;
        let pools = control.pools();
        Ok(Reconnected {
            nodes: status
                .nodes
                .iter()
                .filter(|node| *node.region == *region)
                .map(|node| health::node_status(&status, node, &pools))
                .collect(),
            region,
            recycled,
        })
    })
    .await
}

/// `POST /api/database/health-check`: probe every node now.
#[utoipa::path(post, path = "/api/database/health-check", tag = "commands",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "the topology after probing every node", body = Topology),
        (status = 401, description = "no token or a wrong one", body = ErrorBody),
        (status = 403, description = "no admin_token configured", body = ErrorBody),
    ))]
async fn health_check(State(state): State<AppState>, headers: HeaderMap) -> Response {
    audited(&state, &headers, "health check".to_owned(), || async {
        let status = state.control.probe_all().await;
        Ok::<_, ApiError>(health::topology(&status, &state.control.pools()))
    })
    .await
}

/// `POST /api/database/connections/refresh`: recycle every pool's connections gracefully.
#[utoipa::path(post, path = "/api/database/connections/refresh", tag = "commands",
    security(("admin_token" = [])),
    responses(
        (status = 200, description = "idle connections closed now, busy ones when their transaction ends", body = Recycled),
        (status = 401, description = "no token or a wrong one", body = ErrorBody),
        (status = 403, description = "no admin_token configured", body = ErrorBody),
    ))]
async fn refresh_connections(State(state): State<AppState>, headers: HeaderMap) -> Response {
    audited(
        &state,
        &headers,
        "connections refresh".to_owned(),
        || async { state.control.recycle(None) },
    )
    .await
}

async fn run_command(state: &AppState, headers: &HeaderMap, mutation: Mutation) -> Response {
    audited(state, headers, mutation.describe(), || {
        state.control.mutate(mutation)
    })
    .await
}

/// Checks the token, then runs `command` and leaves the audit line.
async fn audited<T: Serialize, F: Future<Output = Result<T, ApiError>>>(
    state: &AppState,
    headers: &HeaderMap,
    what: String,
    command: impl FnOnce() -> F,
) -> Response {
    if let Err(refused) = state.auth.check(headers) {
        tracing::warn!(target: "meridian::audit", command = %what, outcome = "refused", reason = %refused.message(), "operator command");
        return refused.into_response();
    }
    match command().await {
        Ok(result) => {
            tracing::info!(target: "meridian::audit", command = %what, outcome = "done", "operator command");
            Json(result).into_response()
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
