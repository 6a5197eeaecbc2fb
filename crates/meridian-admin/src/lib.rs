//! The operator interface: an HTTP router over a small control trait, so that it can be tested
//! without a cluster. Today it serves the Prometheus exposition (`/metrics`); the REST API and
//! the dashboard build on the same listener.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;

/// What the operator interface needs from the running Meridian.
pub trait Control: Send + Sync + 'static {
    /// Everything Meridian measures, in the Prometheus text exposition format.
    fn metrics(&self) -> String;
}

/// The operator interface's routes.
pub fn router(control: Arc<dyn Control>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(control)
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
async fn metrics(State(control): State<Arc<dyn Control>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        control.metrics(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    impl Control for Fixed {
        fn metrics(&self) -> String {
            "meridian_up 1\n".to_owned()
        }
    }

    #[tokio::test]
    async fn metrics_are_served_as_prometheus_text() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, router(Arc::new(Fixed)), async {
            let _ = stopped.await;
        }));
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.contains("text/plain; version=0.0.4"), "{response}");
        assert!(response.ends_with("meridian_up 1\n"), "{response}");
        let _ = stop.send(());
        server.await.unwrap().unwrap();
    }
}
