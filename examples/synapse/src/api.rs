//! The HTTP API: routes and handlers. Handlers only translate: the request into a validated
//! document and an intent (`model`), the intent into a query (`store`), the outcome into a
//! response (`error` for failures).
//!
//! | Route                    | Intent                                     |
//! |--------------------------|--------------------------------------------|
//! | `POST /transactions`     | write (primary); answers an `x-wal-token`  |
//! | `GET /transactions/{id}` | read, or read after the given `x-wal-token` |
//! | `GET /transactions`      | the same                                   |
//! | `GET /health`, `/metrics`| none: the pool manager's last observations |

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use meridian_client::{Health, PoolManager, QueryIntent};
use serde::Serialize;
use serde_json::Value;

use crate::error::ApiError;
use crate::model::{self, Invalid, NewTransaction, Page, Transaction, WAL_TOKEN_HEADER};
use crate::store;

/// The service's routes over `db`.
pub fn router(db: PoolManager) -> Router {
    Router::new()
        .route("/transactions", get(list).post(create))
        .route("/transactions/{id}", get(show))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(no_route)
        .with_state(db)
}

/// The intent of a read: [`QueryIntent::ReadAfter`] the request's `x-wal-token`, or
/// [`QueryIntent::Read`] without one; a malformed token is a 400.
#[derive(Debug, Clone, Copy)]
struct ReadIntent(QueryIntent);

impl<S: Send + Sync> FromRequestParts<S> for ReadIntent {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let tokens = parts
            .headers
            .get_all(WAL_TOKEN_HEADER)
            .iter()
            .map(HeaderValue::as_bytes);
        model::read_intent(tokens)
            .map(ReadIntent)
            .map_err(ApiError::bad_request)
    }
}

/// `POST /transactions`: 201 with the stored row, its `Location` and the `x-wal-token` that
/// reads it back.
async fn create(
    State(db): State<PoolManager>,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(body) = body.map_err(|rejection| {
        ApiError::about(
            rejection.status(),
            Invalid {
                field: "body".into(),
                message: rejection.body_text(),
            },
        )
    })?;
    let new = NewTransaction::from_json(&body).map_err(ApiError::invalid_field)?;
    let written = store::insert(&db, new).await?;
    let location = format!("/transactions/{}", written.value.id);
    Ok((
        StatusCode::CREATED,
        [
            (header::LOCATION, location),
            (
                HeaderName::from_static(WAL_TOKEN_HEADER),
                written.token.to_string(),
            ),
        ],
        Json(written.value),
    )
        .into_response())
}

/// `GET /transactions/{id}`: 200 with the row, or 404.
async fn show(
    State(db): State<PoolManager>,
    ReadIntent(intent): ReadIntent,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<Transaction>, ApiError> {
    let Path(id) = id.map_err(|rejection| {
        ApiError::bad_request(Invalid {
            field: "id".into(),
            message: rejection.body_text(),
        })
    })?;
    let id = model::parse_id(&id).map_err(ApiError::bad_request)?;
    store::get(&db, intent, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no transaction {id}")))
}

/// `GET /transactions?limit&offset`: 200 with a page of rows, newest first.
async fn list(
    State(db): State<PoolManager>,
    ReadIntent(intent): ReadIntent,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Vec<Transaction>>, ApiError> {
    let Query(pairs) = query.map_err(|rejection| {
        ApiError::bad_request(Invalid {
            field: "query".into(),
            message: rejection.body_text(),
        })
    })?;
    let page = Page::from_query(&pairs).map_err(ApiError::bad_request)?;
    Ok(Json(store::list(&db, intent, page).await?))
}

/// The health document of the original design: the library's, with the service's version.
#[derive(Debug, Serialize)]
struct HealthBody {
    #[serde(flatten)]
    health: Health,
    version: &'static str,
}

/// `GET /health`: 200 while the primary takes writes and a replica (if any is configured)
/// serves reads, 503 otherwise.
async fn health(State(db): State<PoolManager>) -> Response {
    let health = db.health();
    let status =
        StatusCode::from_u16(health.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = HealthBody {
        health,
        version: env!("CARGO_PKG_VERSION"),
    };
    (status, Json(body)).into_response()
}

/// `GET /metrics`: the pool manager's figures in the Prometheus text format.
async fn metrics(State(db): State<PoolManager>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        db.stats().prometheus(),
    )
        .into_response()
}

async fn no_route() -> ApiError {
    ApiError::not_found("no such endpoint")
}
