//! The router over a fixed control: routes, token checks, error bodies, every endpoint's
//! document, and the OpenAPI document against the routes and the bodies actually served.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::model::{
    Alert, Archiving, BackupEntry, Backups, FailoverRun, Performance, PoolState, ProbeSample,
    QueryAnalysis, QueryRoute, Recycled, RunPhase,
};

/// A control answering from fixed data, recording what it was asked.
#[derive(Default)]
struct Fixed {
    mutations: Mutex<Vec<Mutation>>,
    alert_filters: Mutex<Vec<AlertFilter>>,
    limits: Mutex<Vec<usize>>,
    probe_queries: Mutex<Vec<(Option<String>, usize)>>,
    probes_now: Mutex<Vec<(Option<String>, bool)>>,
    recycled: Mutex<Vec<Option<String>>>,
    /// Answer from a three-node cluster instead of an empty one.
    populated: bool,
}

impl Fixed {
    fn populated() -> Arc<Fixed> {
        Arc::new(Fixed {
            populated: true,
            ..Fixed::default()
        })
    }
}

fn run() -> FailoverRun {
    FailoverRun {
        id: 1,
        kind: "switchover".into(),
        reason: "operator".into(),
        old_primary: Some("pg1".into()),
        new_primary: Some("pg2".into()),
        generation: 2,
        started_at_ms: 1_000,
        finished_at_ms: Some(1_400),
        duration_ms: Some(400),
        outcome: "completed".into(),
        phases: vec![RunPhase {
            name: "promote".into(),
            started_at_ms: 1_100,
            finished_at_ms: 1_300,
            duration_ms: 200,
            outcome: "ok".into(),
        }],
        ranking: "pg2: caught up".into(),
    }
}

fn alert() -> Alert {
    Alert {
        id: 7,
        kind: "endpoint_down".into(),
        node: Some("pg3".into()),
        region: Some("eu".into()),
        severity: "critical".into(),
        value: 3.0,
        threshold: 3.0,
        message: "pg3 does not answer".into(),
        raised_at_ms: 2_000,
        updated_at_ms: 2_000,
        resolved_at_ms: None,
        active: true,
    }
}

fn pool() -> PoolState {
    PoolState {
        node: "pg2".into(),
        user: "app".into(),
        database: "db".into(),
        open: 4,
        idle: 1,
        in_use: 3,
        waiting: 0,
        checkouts: 50,
        checkout_timeouts: 0,
        connects: 4,
        connect_failures: 0,
    }
}

impl Control for Fixed {
    fn metrics(&self) -> String {
        "meridian_up 1\n".to_owned()
    }

    fn status(&self) -> Arc<ClusterStatus> {
        Arc::new(if self.populated {
            crate::health::tests::cluster()
        } else {
            ClusterStatus::default()
        })
    }

    fn pools(&self) -> Vec<PoolState> {
        if self.populated {
            vec![pool()]
        } else {
            Vec::new()
        }
    }

    fn waiting_for_primary(&self) -> usize {
        2
    }

    fn alerts(&self, filter: AlertFilter) -> Result<Vec<Alert>, ApiError> {
        self.alert_filters.lock().unwrap().push(filter.clone());
        match filter.severity.as_deref() {
            Some("dire") => Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "unknown severity",
            )),
            _ => Ok(vec![alert()]),
        }
    }

    fn failover_history(&self, limit: usize) -> Result<Vec<FailoverRun>, ApiError> {
        self.limits.lock().unwrap().push(limit);
        Ok(vec![run()])
    }

    fn probe_history(
        &self,
        node: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ProbeSample>, ApiError> {
        self.probe_queries
            .lock()
            .unwrap()
            .push((node.map(str::to_owned), limit));
        if node == Some("nope") {
            return Err(ApiError::not_found("no node named \"nope\""));
        }
        Ok(vec![ProbeSample {
            node: node.unwrap_or("pg1").to_owned(),
            region: "us".into(),
            at_ms: 3_000,
            ok: true,
            latency_ms: Some(1.5),
            connect_ms: Some(4.0),
            role: Some("primary".into()),
            health: "healthy".into(),
            lag_bytes: None,
            lag_seconds: None,
            error: None,
        }])
    }

    fn performance(&self) -> Performance {
        Performance {
            window_seconds: 10.0,
            transactions_per_second: 0.0,
            nodes: Vec::new(),
            pins: BTreeMap::from([("temporary_table".to_owned(), 1)]),
            read_only_retries: 0,
            causal_waits: 0,
            causal_timeouts: 0,
            no_replica_failures: 0,
            waiting_for_primary: 2,
        }
    }

    fn config(&self) -> Value {
        json!({ "admin_token": "<redacted>", "listen": "127.0.0.1:6432" })
    }

    fn analyze(&self, query: &str) -> Result<QueryAnalysis, ApiError> {
        Ok(QueryAnalysis {
            query: query.to_owned(),
            class: "read: query that only reads".into(),
            is_read: true,
            is_write: false,
            route: QueryRoute {
                target: "replica".into(),
                node: Some("pg2".into()),
                reason: "an autocommit read".into(),
            },
            pin: None,
            statements: Vec::new(),
            complexity: "simple".into(),
            findings: Vec::new(),
            recommendation: "fine".into(),
        })
    }

    fn mutate(&self, mutation: Mutation) -> ControlFuture<'_, Result<FailoverRun, ApiError>> {
        self.mutations.lock().unwrap().push(mutation.clone());
        Box::pin(async move {
            match mutation {
                Mutation::Rejoin { node } if node == "nope" => {
                    Err(ApiError::not_found("no node named nope"))
                }
                Mutation::Failover { .. } => Err(ApiError::refused("a switchover is under way")),
                _ => Ok(run()),
            }
        })
    }

    fn probe_all(&self) -> ControlFuture<'_, Arc<ClusterStatus>> {
        self.probes_now.lock().unwrap().push((None, false));
        let status = self.status();
        Box::pin(async move { status })
    }

    fn reconnect(&self, region: &str) -> ControlFuture<'_, Result<Arc<ClusterStatus>, ApiError>> {
        self.probes_now
            .lock()
            .unwrap()
            .push((Some(region.to_owned()), true));
        let status = self.status();
        Box::pin(async move { Ok(status) })
    }

    fn archiving(&self) -> Option<Archiving> {
        self.populated.then(|| Archiving {
            state: "failing".into(),
            node: Some("pg1".into()),
            rpo_seconds: Some(42.5),
            max_rpo_seconds: 300.0,
            unarchived_segments: Some(1),
            archived_count: Some(12),
            last_archived_wal: Some("00000001000000000000000B".into()),
            last_archived_at_ms: Some(2_000),
            failed_count: Some(3),
            last_failed_wal: Some("00000001000000000000000C".into()),
            last_failed_at_ms: Some(2_500),
            current_wal: Some("00000001000000000000000D".into()),
            archive_dir: "/srv/wal".into(),
            detail: Some("archive_command fails".into()),
            error: None,
            checked_at_ms: Some(3_000),
        })
    }

    fn backups(&self) -> Option<Backups> {
        self.populated.then(|| Backups {
            location: "s3://bucket/orders".into(),
            backups: vec![BackupEntry {
                id: "20261207T153012345Z".into(),
                kind: "physical".into(),
                node: "pg2".into(),
                from_replica: true,
                stopped_at: "2026-12-07T15:30:14.000Z".into(),
                finished_at: "2026-12-07T15:30:20.000Z".into(),
                timeline: 2,
                start_lsn: "0/6000028".into(),
                stop_lsn: "0/6000100".into(),
                data_bytes: 1000,
                stored_bytes: 100,
            }],
            incomplete: vec!["20261207T160000000Z".into()],
            last_physical_age_seconds: Some(60.0),
            last_logical_age_seconds: None,
            checked_at_ms: Some(3_000),
            error: None,
        })
    }

    fn recycle(&self, region: Option<&str>) -> Result<Recycled, ApiError> {
        self.recycled
            .lock()
            .unwrap()
            .push(region.map(str::to_owned));
        if region == Some("mars") {
            return Err(ApiError::not_found("no region named \"mars\""));
        }
        Ok(Recycled {
            pools: 1,
            idle: 1,
            in_use: 3,
        })
    }
}

/// Serves `router` once per call and returns (status, body).
async fn request(control: Arc<Fixed>, token: Option<&str>, raw: &str) -> (u16, String) {
    serve_once(control, AdminAuth::new(token.map(str::to_owned)), raw).await
}

/// Serves one request with `auth` and returns (status, body).
async fn serve_once(control: Arc<Fixed>, auth: AdminAuth, raw: &str) -> (u16, String) {
    let response = exchange(control, auth, raw).await;
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Serves one request with `auth` and returns the whole response (status line, headers,
/// body).
async fn exchange(control: Arc<Fixed>, auth: AdminAuth, raw: &str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let app = router(control, auth);
    let server = tokio::spawn(serve(listener, app, async {
        let _ = stopped.await;
    }));
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let _ = stop.send(());
    server.await.unwrap().unwrap();
    response
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
    let answered: FailoverRun = serde_json::from_str(&body).unwrap();
    assert_eq!(answered, run());
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
    let control = Arc::new(Fixed::default());
    let (status, body) = request(
        control.clone(),
        None,
        "GET /api/database/failover-history?limit=5000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    let runs: Vec<FailoverRun> = serde_json::from_str(&body).unwrap();
    assert_eq!(runs, [run()]);
    let (status, _) = request(
        control.clone(),
        None,
        "GET /api/database/failover-history HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(*control.limits.lock().unwrap(), [1000, 20]);
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

/// `(status, JSON body)` of `GET path` on a populated control.
async fn get_json(control: &Arc<Fixed>, path: &str) -> (u16, Value) {
    let (code, body) = request(control.clone(), None, &get(path)).await;
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (code, json)
}

#[tokio::test]
async fn the_read_endpoints_answer_from_the_control() {
    let control = Fixed::populated();

    let (code, status) = get_json(&control, "/api/database/status").await;
    assert_eq!(code, 200);
    assert_eq!(status["primary"], "pg1");
    assert_eq!(status["regions"][0]["nodes"][1]["pools"][0]["in_use"], 3);

    let (code, health) = get_json(&control, "/api/database/health").await;
    assert_eq!(code, 200);
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["primary_healthy"], true);
    assert_eq!(health["nodes"]["healthy"], 3);
    assert_eq!(health["active_alerts"][0]["kind"], "endpoint_down");

    let (code, probes) = get_json(&control, "/api/database/metrics?endpoint=pg2&limit=9999").await;
    assert_eq!(code, 200);
    assert_eq!(probes[0]["node"], "pg2");
    let (code, probes) = get_json(&control, "/api/database/metrics").await;
    assert_eq!((code, &probes[0]["node"]), (200, &json!("pg1")));
    let (code, error) = get_json(&control, "/api/database/metrics?endpoint=nope").await;
    assert_eq!((code, &error["error"]["code"]), (404, &json!("not_found")));
    let (code, error) = get_json(&control, "/api/database/metrics?limit=many").await;
    assert_eq!(
        (code, &error["error"]["code"]),
        (400, &json!("bad_request"))
    );
    assert_eq!(
        *control.probe_queries.lock().unwrap(),
        [
            (Some("pg2".to_owned()), 5000),
            (None, 100),
            (Some("nope".to_owned()), 100)
        ]
    );

    let (code, performance) = get_json(&control, "/api/database/performance").await;
    assert_eq!(code, 200);
    assert_eq!(performance["pins"]["temporary_table"], 1);

    let (code, connections) = get_json(&control, "/api/database/connections").await;
    assert_eq!(code, 200);
    assert_eq!(connections["pools"][0]["open"], 4);
    assert_eq!(connections["nodes"][1]["node"], "pg2");
    assert_eq!(connections["nodes"][1]["pooled"], 4);
    assert_eq!(connections["nodes"][0]["pooled"], 0);
    assert_eq!(connections["waiting_for_primary"], 2);

    let (code, report) = get_json(&control, "/api/database/export").await;
    assert_eq!(code, 200);
    assert_eq!(report["config"]["admin_token"], "<redacted>");
    assert_eq!(report["topology"]["primary"], "pg1");
    assert_eq!(report["alerts"][0]["id"], 7);
    assert_eq!(
        report["failover_history"][0]["phases"][0]["name"],
        "promote"
    );
    assert_eq!(report["probes"][0]["at_ms"], 3000);
    assert_eq!(report["connections"]["pools"][0]["node"], "pg2");
    assert!(report["generated_at_ms"].as_u64().unwrap() > 1_700_000_000_000);

    let (code, archiving) = get_json(&control, "/api/database/archiving").await;
    assert_eq!(code, 200);
    assert_eq!(
        (&archiving["state"], &archiving["last_failed_wal"]),
        (&json!("failing"), &json!("00000001000000000000000C"))
    );
    assert_eq!(status["archiving"]["rpo_seconds"], 42.5);
    // Without a WAL archive configured: a 404 that says how to configure one.
    let (code, error) = get_json(&Arc::new(Fixed::default()), "/api/database/archiving").await;
    assert_eq!((code, &error["error"]["code"]), (404, &json!("not_found")));
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[backup] wal_archive"),
        "{error}"
    );
    let (_, status) = get_json(&Arc::new(Fixed::default()), "/api/database/status").await;
    assert_eq!(status["archiving"], Value::Null);

    let (code, backups) = get_json(&control, "/api/database/backups").await;
    assert_eq!(code, 200);
    assert_eq!(
        (
            &backups["backups"][0]["id"],
            &backups["backups"][0]["from_replica"]
        ),
        (&json!("20261207T153012345Z"), &json!(true))
    );
    assert_eq!(backups["incomplete"][0], "20261207T160000000Z");
    let (code, error) = get_json(&Arc::new(Fixed::default()), "/api/database/backups").await;
    assert_eq!(code, 404);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("[backup] location"),
        "{error}"
    );
}

#[tokio::test]
async fn analyze_query_takes_a_json_query_and_refuses_anything_else() {
    let control = Fixed::populated();
    let (code, body) = request(
        control.clone(),
        None,
        &post(
            "/api/database/analyze-query",
            None,
            r#"{"query":"SELECT * FROM users WHERE id = $1"}"#,
        ),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let analysis: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(analysis["query"], "SELECT * FROM users WHERE id = $1");
    assert_eq!(analysis["isRead"], true);
    assert_eq!(analysis["isWrite"], false);
    assert_eq!(analysis["estimatedComplexity"], "simple");
    assert_eq!(analysis["route"]["target"], "replica");
    for bad in ["", "{}", r#"{"sql":"SELECT 1"}"#, "SELECT 1"] {
        let (code, body) = request(
            control.clone(),
            None,
            &post("/api/database/analyze-query", None, bad),
        )
        .await;
        assert_eq!(code, 400, "{bad}: {body}");
        assert_eq!(error_code(&body), "bad_request");
        assert!(body.contains("{\\\"query\\\""), "{body}");
    }
}

#[tokio::test]
async fn reconnect_health_check_and_refresh_are_commands() {
    let control = Fixed::populated();
    for path in [
        "/api/database/reconnect/eu",
        "/api/database/health-check",
        "/api/database/connections/refresh",
    ] {
        let (code, body) = request(control.clone(), Some("t"), &post(path, None, "")).await;
        assert_eq!(
            (code, error_code(&body)),
            (401, "unauthorized".into()),
            "{path}"
        );
        let (code, body) = request(control.clone(), None, &post(path, Some("Bearer t"), "")).await;
        assert_eq!(code, 403, "{path}: {body}");
    }
    assert!(control.probes_now.lock().unwrap().is_empty());
    assert!(control.recycled.lock().unwrap().is_empty());

    let bearer = Some("Bearer t");
    let (code, body) = request(
        control.clone(),
        Some("t"),
        &post("/api/database/reconnect/eu", bearer, ""),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let reconnected: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reconnected["region"], "eu");
    assert_eq!(reconnected["recycled"]["in_use"], 3);
    assert_eq!(
        reconnected["nodes"],
        json!([serde_json::to_value(crate::health::node_status(
            &control.status(),
            &control.status().nodes[2],
            &[]
        ))
        .unwrap()])
    );

    let (code, body) = request(
        control.clone(),
        Some("t"),
        &post("/api/database/reconnect/mars", bearer, ""),
    )
    .await;
    assert_eq!((code, error_code(&body)), (404, "not_found".into()));

    let (code, body) = request(
        control.clone(),
        Some("t"),
        &post("/api/database/health-check", bearer, ""),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"regions\":[{\"name\":\"us\""), "{body}");

    let (code, body) = request(
        control.clone(),
        Some("t"),
        &post("/api/database/connections/refresh", bearer, ""),
    )
    .await;
    assert_eq!(
        (code, body.as_str()),
        (200, r#"{"pools":1,"idle":1,"in_use":3}"#)
    );

    assert_eq!(
        *control.probes_now.lock().unwrap(),
        [(Some("eu".to_owned()), true), (None, false)],
        "reconnect probes its region on fresh connections; the health check probes all"
    );
    assert_eq!(
        *control.recycled.lock().unwrap(),
        [Some("eu".to_owned()), Some("mars".to_owned()), None]
    );
}

#[tokio::test]
async fn protected_reads_need_the_token_but_load_balancer_checks_stay_open() {
    let control = Fixed::populated();
    let auth = || AdminAuth::new(Some("t".into())).protect_reads(true);
    let with = |path: &str, token: Option<&str>| {
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\r\n")
    };
    for path in [
        "/metrics",
        "/api/database/status",
        "/api/database/health",
        "/api/database/alerts",
        "/api/database/metrics",
        "/api/database/failover-history",
        "/api/database/performance",
        "/api/database/connections",
        "/api/database/export",
    ] {
        let (code, body) = serve_once(control.clone(), auth(), &with(path, None)).await;
        assert_eq!(
            (code, error_code(&body)),
            (401, "unauthorized".into()),
            "{path}"
        );
        let (code, _) = serve_once(control.clone(), auth(), &with(path, Some("wrong"))).await;
        assert_eq!(code, 401, "{path}");
        let (code, body) = serve_once(control.clone(), auth(), &with(path, Some("t"))).await;
        assert_eq!(code, 200, "{path}: {body}");
        let (code, _) = serve_once(
            control.clone(),
            AdminAuth::new(Some("t".into())),
            &with(path, None),
        )
        .await;
        assert_eq!(code, 200, "{path}: open by default");
    }
    let (code, _) = serve_once(
        control.clone(),
        auth(),
        &post(
            "/api/database/analyze-query",
            None,
            r#"{"query":"SELECT 1"}"#,
        ),
    )
    .await;
    assert_eq!(code, 401);
    for path in [
        "/health",
        "/primary",
        "/replica",
        "/liveness",
        "/readiness",
        "/api/openapi.json",
    ] {
        let (code, body) = serve_once(control.clone(), auth(), &with(path, None)).await;
        assert_eq!(code, 200, "{path} stays open: {body}");
    }
}

/// Every API route, as `(method, path)` with the path as the document names it.
const ROUTES: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/primary"),
    ("get", "/replica"),
    ("get", "/liveness"),
    ("get", "/readiness"),
    ("get", "/api/openapi.json"),
    ("get", "/metrics"),
    ("get", "/api/database/status"),
    ("get", "/api/database/health"),
    ("get", "/api/database/alerts"),
    ("get", "/api/database/metrics"),
    ("get", "/api/database/failover-history"),
    ("get", "/api/database/performance"),
    ("get", "/api/database/connections"),
    ("get", "/api/database/export"),
    ("get", "/api/database/archiving"),
    ("get", "/api/database/backups"),
    ("post", "/api/database/analyze-query"),
    ("post", "/api/database/switchover"),
    ("post", "/api/database/failover/{region}"),
    ("post", "/api/database/rejoin/{node}"),
    ("post", "/api/database/reconnect/{region}"),
    ("post", "/api/database/health-check"),
    ("post", "/api/database/connections/refresh"),
];

async fn openapi_document() -> Value {
    let (code, body) = request(Arc::default(), None, &get("/api/openapi.json")).await;
    assert_eq!(code, 200);
    serde_json::from_str(&body).unwrap()
}

#[tokio::test]
async fn the_openapi_document_is_valid_and_covers_every_route() {
    let document = openapi_document().await;
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        document["openapi"]
    );
    // It reads back as an OpenAPI document.
    let _: utoipa::openapi::OpenApi = serde_json::from_value(document.clone()).unwrap();
    assert_eq!(
        document["components"]["securitySchemes"]["admin_token"]["scheme"],
        "bearer"
    );

    let documented: Vec<(String, String)> = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.clone(), path.clone()))
        })
        .collect();
    let mut expected: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let mut documented_sorted = documented.clone();
    documented_sorted.sort();
    expected.sort();
    assert_eq!(
        documented_sorted, expected,
        "documented routes = served routes"
    );

    // Every documented route is served (a route the document invents would be a 404
    // "no such endpoint"), and every command names the bearer scheme.
    for (method, path) in ROUTES {
        let concrete = path.replace("{region}", "eu").replace("{node}", "pg2");
        let raw = if *method == "get" {
            get(&concrete)
        } else {
            post(&concrete, None, "")
        };
        let (code, body) = request(Fixed::populated(), Some("t"), &raw).await;
        assert!(
            !body.contains("no such endpoint"),
            "{method} {path} is documented but not served: {code} {body}"
        );
        let operation = &document["paths"][path][method];
        assert!(
            operation["responses"]["200"].is_object(),
            "{method} {path}: no 200 documented"
        );
        if *method == "post" && *path != "/api/database/analyze-query" {
            assert_eq!(
                operation["security"],
                json!([{ "admin_token": [] }]),
                "{method} {path}"
            );
        }
    }
}

/// Checks `value` against `schema` (the subset of JSON Schema utoipa emits): object keys
/// must be declared properties, required properties present, types as declared.
fn conforms(value: &Value, schema: &Value, document: &Value, at: &str) -> Result<(), String> {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.trim_start_matches("#/components/schemas/");
        return conforms(
            value,
            &document["components"]["schemas"][name],
            document,
            at,
        );
    }
    for combinator in ["oneOf", "anyOf"] {
        if let Some(options) = schema[combinator].as_array() {
            return if options
                .iter()
                .any(|o| conforms(value, o, document, at).is_ok())
            {
                Ok(())
            } else {
                Err(format!(
                    "{at}: {value} matches none of {combinator} {schema}"
                ))
            };
        }
    }
    if let Some(all) = schema["allOf"].as_array() {
        for part in all {
            conforms(value, part, document, at)?;
        }
        return Ok(());
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => return Ok(()), // any value
    };
    let matches = |t: &str| match t {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        _ => false,
    };
    if !types.iter().any(|t| matches(t)) {
        return Err(format!("{at}: {value} is not {types:?}"));
    }
    if let Some(items) = value.as_array() {
        for (i, item) in items.iter().enumerate() {
            conforms(item, &schema["items"], document, &format!("{at}[{i}]"))?;
        }
    }
    if let Some(object) = value.as_object() {
        let properties = schema["properties"].as_object();
        for (key, field) in object {
            match properties.and_then(|p| p.get(key)) {
                Some(property) => conforms(field, property, document, &format!("{at}.{key}"))?,
                None if schema["additionalProperties"].is_object() => conforms(
                    field,
                    &schema["additionalProperties"],
                    document,
                    &format!("{at}.{key}"),
                )?,
                None if properties.is_some() => {
                    return Err(format!("{at}: {key:?} is not in the schema"));
                }
                None => {}
            }
        }
        for required in schema["required"].as_array().into_iter().flatten() {
            let required = required.as_str().unwrap();
            if !object.contains_key(required) {
                return Err(format!("{at}: required {required:?} is missing"));
            }
        }
    }
    Ok(())
}

#[tokio::test]
async fn every_json_body_served_matches_its_documented_schema() {
    let document = openapi_document().await;
    let bearer = Some("Bearer t");
    let requests = [
        ("get", "/health", "200", get("/health")),
        ("get", "/primary", "200", get("/primary")),
        ("get", "/replica", "200", get("/replica?max_lag=100")),
        ("get", "/liveness", "200", get("/liveness")),
        ("get", "/readiness", "200", get("/readiness")),
        (
            "get",
            "/api/database/status",
            "200",
            get("/api/database/status"),
        ),
        (
            "get",
            "/api/database/health",
            "200",
            get("/api/database/health"),
        ),
        (
            "get",
            "/api/database/alerts",
            "200",
            get("/api/database/alerts"),
        ),
        (
            "get",
            "/api/database/alerts",
            "400",
            get("/api/database/alerts?active=maybe"),
        ),
        (
            "get",
            "/api/database/metrics",
            "200",
            get("/api/database/metrics"),
        ),
        (
            "get",
            "/api/database/failover-history",
            "200",
            get("/api/database/failover-history"),
        ),
        (
            "get",
            "/api/database/performance",
            "200",
            get("/api/database/performance"),
        ),
        (
            "get",
            "/api/database/connections",
            "200",
            get("/api/database/connections"),
        ),
        (
            "get",
            "/api/database/export",
            "200",
            get("/api/database/export"),
        ),
        (
            "get",
            "/api/database/archiving",
            "200",
            get("/api/database/archiving"),
        ),
        (
            "get",
            "/api/database/backups",
            "200",
            get("/api/database/backups"),
        ),
        (
            "post",
            "/api/database/analyze-query",
            "200",
            post(
                "/api/database/analyze-query",
                None,
                r#"{"query":"SELECT 1"}"#,
            ),
        ),
        (
            "post",
            "/api/database/switchover",
            "200",
            post("/api/database/switchover", bearer, ""),
        ),
        (
            "post",
            "/api/database/switchover",
            "401",
            post("/api/database/switchover", None, ""),
        ),
        (
            "post",
            "/api/database/failover/{region}",
            "409",
            post("/api/database/failover/eu", bearer, ""),
        ),
        (
            "post",
            "/api/database/rejoin/{node}",
            "200",
            post("/api/database/rejoin/pg2", bearer, ""),
        ),
        (
            "post",
            "/api/database/rejoin/{node}",
            "404",
            post("/api/database/rejoin/nope", bearer, ""),
        ),
        (
            "post",
            "/api/database/reconnect/{region}",
            "200",
            post("/api/database/reconnect/eu", bearer, ""),
        ),
        (
            "post",
            "/api/database/health-check",
            "200",
            post("/api/database/health-check", bearer, ""),
        ),
        (
            "post",
            "/api/database/connections/refresh",
            "200",
            post("/api/database/connections/refresh", bearer, ""),
        ),
    ];
    for (method, path, code, raw) in requests {
        let (served, body) = request(Fixed::populated(), Some("t"), &raw).await;
        assert_eq!(served.to_string(), code, "{method} {path}: {body}");
        let value: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}"));
        let response = &document["paths"][path][method]["responses"][code];
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {path} {code}: no schema documented: {response}"
        );
        conforms(&value, schema, &document, path)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{body}"));
    }
}

#[tokio::test]
async fn the_schema_check_rejects_what_the_document_does_not_declare() {
    let document = openapi_document().await;
    let schema = json!({ "$ref": "#/components/schemas/PoolState" });
    let mut pool = serde_json::to_value(pool()).unwrap();
    conforms(&pool, &schema, &document, "pool").unwrap();
    pool["surprise"] = json!(1);
    assert!(conforms(&pool, &schema, &document, "pool").is_err());
    pool.as_object_mut().unwrap().remove("surprise");
    pool.as_object_mut().unwrap().remove("open");
    assert!(conforms(&pool, &schema, &document, "pool").is_err());
    let mut pool = serde_json::to_value(self::pool()).unwrap();
    pool["idle"] = json!("one");
    assert!(conforms(&pool, &schema, &document, "pool").is_err());
}

/// The whole response (status line, headers, body) to `GET path`.
async fn get_whole(path: &str) -> String {
    exchange(Arc::default(), AdminAuth::default(), &get(path)).await
}

/// The value of header `name` (lower case) in `response`.
fn header_of<'r>(response: &'r str, name: &str) -> Option<&'r str> {
    let (head, _) = response.split_once("\r\n\r\n")?;
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

#[tokio::test]
async fn the_dashboard_page_loads_its_script_and_style_from_this_origin_only() {
    let response = get_whole("/").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(
        header_of(&response, "content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(header_of(&response, "cache-control"), Some("no-cache"));
    let policy = header_of(&response, "content-security-policy").unwrap();
    for directive in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
    ] {
        assert!(policy.contains(directive), "{policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");

    let html = response.split_once("\r\n\r\n").unwrap().1;
    assert!(
        html.contains(r#"<script src="/dashboard/app.js" defer></script>"#),
        "{html}"
    );
    assert!(
        html.contains(r#"<link rel="stylesheet" href="/dashboard/style.css">"#),
        "{html}"
    );
    // The policy forbids inline script and style: the page must not need them.
    assert_eq!(html.matches("<script").count(), 1, "one script, by src");
    assert!(!html.contains("<style") && !html.contains(" style="));
    let inline_handler = html.match_indices(" on").any(|(at, _)| {
        let rest = &html[at + 3..];
        let name_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        name_len > 0 && rest[name_len..].starts_with('=')
    });
    assert!(!inline_handler, "inline event handlers are inline script");
    // No CDN, no other host.
    assert!(!html.contains("http://") && !html.contains("https://"));
}

#[tokio::test]
async fn the_dashboard_assets_have_their_content_types() {
    for (path, content_type, marker) in [
        (
            "/dashboard/app.js",
            "text/javascript; charset=utf-8",
            "\"use strict\"",
        ),
        ("/dashboard/style.css", "text/css; charset=utf-8", ":root"),
    ] {
        let response = get_whole(path).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response}");
        assert_eq!(header_of(&response, "content-type"), Some(content_type));
        assert_eq!(header_of(&response, "cache-control"), Some("no-cache"));
        assert_eq!(
            header_of(&response, "x-content-type-options"),
            Some("nosniff")
        );
        assert!(header_of(&response, "content-security-policy").is_some());
        let body = response.split_once("\r\n\r\n").unwrap().1;
        assert!(body.contains(marker), "{path}");
    }
    // Anything else under /dashboard/ is the API's 404.
    let response = get_whole("/dashboard/nothing.js").await;
    assert!(response.starts_with("HTTP/1.1 404"), "{response}");
    assert!(response.contains("\"not_found\""), "{response}");
}

#[test]
fn the_dashboard_script_never_turns_data_into_markup() {
    let script = include_str!("dashboard/app.js");
    for forbidden in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
    ] {
        assert!(!script.contains(forbidden), "app.js uses {forbidden}");
    }
    // The token never goes into a URL.
    assert!(!script.contains("token=") && !script.contains("?token"));
}
