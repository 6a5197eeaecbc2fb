//! The web dashboard: one HTML page, its stylesheet and its script, compiled into the binary
//! with `include_str!` so that it works with no network, no CDN and no build step.
//!
//! The page is static; everything it shows comes from the JSON API on the same listener,
//! which its script polls every two seconds (`/health`, `/api/database/status`, `alerts`,
//! `failover-history`, `metrics`). Operator commands go through the same API and need the
//! admin token, which the page keeps in `sessionStorage` and sends as
//! `Authorization: Bearer`, never in a URL.
//!
//! Every response carries `Cache-Control: no-cache` (an upgraded binary serves its own
//! script, not a cached one) and a Content-Security-Policy that allows only this origin's
//! script and style files: no inline script, no inline style, no other host. The script
//! puts API data in the page with `textContent` only, so data never becomes markup.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// Only this origin: no inline script or style, no plugin, no framing, no form posts
/// elsewhere. `data:` images only for the empty favicon (which spares a request).
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `GET /`, `GET /dashboard/app.js` and `GET /dashboard/style.css`.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| asset("text/html; charset=utf-8", INDEX_HTML)))
        .route(
            "/dashboard/app.js",
            get(|| asset("text/javascript; charset=utf-8", APP_JS)),
        )
        .route(
            "/dashboard/style.css",
            get(|| asset("text/css; charset=utf-8", STYLE_CSS)),
        )
}

async fn asset(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        body,
    )
}
