//! The router over a fixed control: routes, token checks, error bodies.

use std::sync::Mutex;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

#[derive(Default)]
struct Fixed {
    mutations: Mutex<Vec<Mutation>>,
    alert_filters: Mutex<Vec<AlertFilter>>,
}

impl Control for Fixed {
    fn metrics(&self) -> String {
        "meridian_up 1\n".to_owned()
    }

    fn status(&self) -> Arc<ClusterStatus> {
        Arc::new(ClusterStatus::default())
    }

    fn alerts(&self, filter: AlertFilter) -> Result<Value, ApiError> {
        self.alert_filters.lock().unwrap().push(filter.clone());
        match filter.severity.as_deref() {
            Some("dire") => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "unknown severity",
            )),
            _ => Ok(serde_json::json!([{ "id": 7, "kind": "endpoint_down" }])),
        }
    }

    fn failover_history(&self, limit: usize) -> Result<Value, ApiError> {
        Ok(serde_json::json!([{ "id": 1, "limit": limit }]))
    }

    fn mutate(&self, mutation: Mutation) -> MutationFuture<'_> {
        self.mutations.lock().unwrap().push(mutation.clone());
        Box::pin(async move {
            match mutation {
                Mutation::Rejoin { node } if node == "nope" => {
                    Err(ApiError::not_found("no node named nope"))
                }
                Mutation::Failover { .. } => Err(ApiError::refused("a switchover is under way")),
                _ => Ok(serde_json::json!({ "outcome": "completed" })),
            }
        })
    }
}

/// Serves `router` once per call and returns (status, body).
async fn request(control: Arc<Fixed>, token: Option<&str>, raw: &str) -> (u16, String) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = router(control, AdminAuth::new(token.map(str::to_owned)));
    let server = tokio::spawn(serve(listener, app, async {
        let _ = stopped.await;
    }));
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn post(path: &str, auth: Option<&str>, body: &str) -> String {
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn error_code(body: &str) -> String {
    let value: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    value["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn metrics_are_served_as_prometheus_text() {
    let (status, body) = request(
        Arc::default(),
        None,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, "meridian_up 1\n");
}

#[tokio::test]
async fn commands_need_a_configured_token_and_the_right_one() {
    let control = Arc::new(Fixed::default());
    let (status, body) = request(
        control.clone(),
        None,
        &post("/api/database/switchover", Some("Bearer x"), ""),
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(error_code(&body), "no_token_configured");
    assert!(body.contains("MERIDIAN_ADMIN_TOKEN"), "{body}");

    let (status, body) = request(
        control.clone(),
        Some("s3cret"),
        &post("/api/database/switchover", None, ""),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(error_code(&body), "unauthorized");

    let (status, body) = request(
        control.clone(),
        Some("s3cret"),
        &post("/api/database/switchover", Some("Bearer wrong"), ""),
    )
    .await;
    assert_eq!(status, 401);
    assert!(!body.contains("s3cret"), "{body}");
    assert!(
        control.mutations.lock().unwrap().is_empty(),
        "nothing ran without the token"
    );

    let (status, body) = request(
        control.clone(),
        Some("s3cret"),
        &post(
            "/api/database/switchover",
            Some("Bearer s3cret"),
            r#"{"to":"eu-1"}"#,
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, r#"{"outcome":"completed"}"#);
    assert_eq!(
        control.mutations.lock().unwrap().as_slice(),
        [Mutation::Switchover {
            to: Some("eu-1".into())
        }]
    );
}

#[tokio::test]
async fn commands_reach_the_control_with_their_target() {
    let control = Arc::new(Fixed::default());
    let bearer = Some("Bearer t");
    let (status, _) = request(
        control.clone(),
        Some("t"),
        &post("/api/database/switchover", bearer, ""),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = request(
        control.clone(),
        Some("t"),
        &post("/api/database/failover/eu-west", bearer, ""),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(error_code(&body), "refused");
    let (status, _) = request(
        control.clone(),
        Some("t"),
        &post("/api/database/rejoin/us-1", bearer, ""),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = request(
        control.clone(),
        Some("t"),
        &post("/api/database/rejoin/nope", bearer, ""),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(error_code(&body), "not_found");
    assert_eq!(
        control.mutations.lock().unwrap().as_slice(),
        [
            Mutation::Switchover { to: None },
            Mutation::Failover {
                region: "eu-west".into()
            },
            Mutation::Rejoin {
                node: "us-1".into()
            },
            Mutation::Rejoin {
                node: "nope".into()
            },
        ]
    );
}

#[tokio::test]
async fn a_malformed_body_and_an_unknown_path_get_the_error_shape() {
    let control = Arc::new(Fixed::default());
    let (status, body) = request(
        control.clone(),
        Some("t"),
        &post(
            "/api/database/switchover",
            Some("Bearer t"),
            r#"{"too":"x"}"#,
        ),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(error_code(&body), "bad_request");
    assert!(control.mutations.lock().unwrap().is_empty());
    let (status, body) = request(
        control,
        None,
        "GET /api/nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(error_code(&body), "not_found");
}

#[tokio::test]
async fn the_history_is_open_and_its_limit_bounded() {
    let (status, body) = request(
        Arc::default(),
        None,
        "GET /api/database/failover-history?limit=5000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, r#"[{"id":1,"limit":1000}]"#);
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
}

#[tokio::test]
async fn health_checks_answer_200_or_503_and_bad_queries_400() {
    let control = Arc::new(Fixed::default());
    // No node observed yet: nothing is healthy, but the process is alive.
    let (code, body) = request(control.clone(), None, &get("/health")).await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("\"db_primary\":\"disconnected\""), "{body}");
    let (code, _) = request(control.clone(), None, &get("/primary")).await;
    assert_eq!(code, 503);
    let (code, _) = request(control.clone(), None, &get("/readiness")).await;
    assert_eq!(code, 503);
    let (code, body) = request(control.clone(), None, &get("/liveness")).await;
    assert_eq!((code, body.as_str()), (200, "{\"alive\":true}"));
    let (code, _) = request(control.clone(), None, &get("/replica?max_lag=100")).await;
    assert_eq!(code, 503);
    let (code, body) = request(control.clone(), None, &get("/replica?max_lag=lots")).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"code\":\"bad_request\""), "{body}");
    let (code, body) = request(control, None, &get("/api/database/status")).await;
    assert_eq!(code, 200);
    assert!(body.contains("\"regions\":[]"), "{body}");
}

#[tokio::test]
async fn alerts_pass_their_filter_and_refuse_bad_queries() {
    let control = Arc::new(Fixed::default());
    let (code, body) = request(
        control.clone(),
        None,
        &get("/api/database/alerts?active=true&severity=high&node=pg2"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("endpoint_down"), "{body}");
    let (code, _) = request(
        control.clone(),
        None,
        &get("/api/database/alerts?limit=5000"),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(
        *control.alert_filters.lock().unwrap(),
        [
            AlertFilter {
                limit: Some(100),
                severity: Some("high".into()),
                active: Some(true),
                node: Some("pg2".into()),
            },
            AlertFilter {
                limit: Some(1000),
                ..AlertFilter::default()
            },
        ]
    );
    let (code, body) = request(
        control.clone(),
        None,
        &get("/api/database/alerts?active=maybe"),
    )
    .await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("\"code\":\"bad_request\""), "{body}");
    let (code, _) = request(control, None, &get("/api/database/alerts?severity=dire")).await;
    assert_eq!(code, 400);
}
