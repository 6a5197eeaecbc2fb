//! The one error shape of the API, `{"error": "...", "field": "..."}` (`field` only when one
//! part of the request is at fault), and the one place where failures become HTTP statuses.
//!
//! Database failures are classified by [`meridian_client::Error::is_retryable`], never by
//! message text: a transient one (no primary yet, a lost connection, a node shutting down) is
//! a 503 the client may retry; anything else is a 500. Their details go to the log, not to the
//! client; the library's errors never carry URLs or passwords, so the log is safe too.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::model::Invalid;

/// An API error: a status, a message for people, and the field at fault if there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    field: Option<String>,
}

/// The body of every error response.
#[derive(Debug, Serialize)]
struct ErrorBody {
    error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

impl ApiError {
    /// 422: the body is JSON but one of its fields breaks a rule.
    pub fn invalid_field(invalid: Invalid) -> ApiError {
        ApiError::about(StatusCode::UNPROCESSABLE_ENTITY, invalid)
    }

    /// 400: a query parameter, path segment or header is malformed, or the body is not JSON.
    pub fn bad_request(invalid: Invalid) -> ApiError {
        ApiError::about(StatusCode::BAD_REQUEST, invalid)
    }

    /// An error about one part of the request.
    pub fn about(status: StatusCode, invalid: Invalid) -> ApiError {
        ApiError {
            status,
            message: format!("{} {}", invalid.field, invalid.message),
            field: Some(invalid.field),
        }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
            field: None,
        }
    }

    /// 503 when `error` is transient, 500 otherwise; logged here.
    pub fn database(error: &meridian_client::Error) -> ApiError {
        if error.is_retryable() {
            tracing::warn!(%error, sqlstate = error.sqlstate(), "database unavailable");
            ApiError {
                status: StatusCode::SERVICE_UNAVAILABLE,
                message: "the database is unavailable; try again".into(),
                field: None,
            }
        } else {
            tracing::error!(%error, sqlstate = error.sqlstate(), "database error");
            ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: "the database failed the request".into(),
                field: None,
            }
        }
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The field at fault, if any.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

impl From<meridian_client::Error> for ApiError {
    fn from(error: meridian_client::Error) -> ApiError {
        ApiError::database(&error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let retry = self.status == StatusCode::SERVICE_UNAVAILABLE;
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: self.message,
                field: self.field,
            }),
        )
            .into_response();
        if retry {
            // The library retried already; a failover usually completes within seconds.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_database_failures_are_503_and_others_500() {
        let lost = meridian_client::Error::Sqlx(sqlx::Error::PoolTimedOut);
        let response = ApiError::from(lost).into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        let decode = meridian_client::Error::Sqlx(sqlx::Error::ColumnNotFound("x".into()));
        assert_eq!(
            ApiError::from(decode).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    #[test]
    fn field_errors_name_the_field() {
        let e = ApiError::invalid_field(Invalid {
            field: "currency".into(),
            message: "must be three letters".into(),
        });
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(e.field(), Some("currency"));
    }
}
