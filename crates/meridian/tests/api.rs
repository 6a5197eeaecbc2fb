//! The operator API through the binary, on a real cluster, with reads protected by the token:
//! probe history, performance, connections, export (secrets redacted), query analysis
//! against the live cluster, and the commands that rebuild connections (refresh, reconnect,
//! health check) — checked on the servers themselves, by their backend pids.

mod support;

use std::time::Duration;

use meridian_testkit::{Check, TestCluster, wait_until};
use serde_json::Value;

use support::{DataDirs, PASSWORD, RunningMeridian, cluster_toml, connect, http_json};

const TIMEOUT: Duration = Duration::from_secs(60);
const TOKEN: &str = "api-test-token-7f3a";

/// `GET path` with the token; panics unless 200.
async fn read(admin: u16, path: &str) -> Value {
    let (code, body) = http_json(admin, "GET", path, Some(TOKEN), None)
        .await
        .unwrap();
    assert_eq!(code, 200, "GET {path}: {body}");
    body
}

/// `POST path` with the token: (status, body).
async fn command(admin: u16, path: &str, body: Option<&str>) -> (u16, Value) {
    http_json(admin, "POST", path, Some(TOKEN), body)
        .await
        .unwrap()
}

/// The server backend serving a fresh transaction through the proxy, forced to the primary.
async fn primary_backend(client: &tokio_postgres::Client) -> i32 {
    client
        .query_one("/* meridian:primary */ SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// `meridian ARGS --url URL` with a clean environment: (exit code, stdout, stderr).
fn cli(args: &[&str], url: &str) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(args)
        .args(["--url", url, "--token", TOKEN])
        .env_clear()
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[tokio::test]
async fn reads_commands_and_the_report_on_a_real_cluster() {
    let cluster = TestCluster::builder().replicas(2).start().await.unwrap();
    let meridian = RunningMeridian::start(
        &format!(
            "admin_token = \"{TOKEN}\"\nadmin_protect_reads = true\n\
             [monitor]\nprobe_interval = \"300ms\"\n{}",
            cluster_toml(&cluster, DataDirs::Unmanaged)
        ),
        TIMEOUT,
    )
    .await;
    let admin = meridian.admin;
    let log = || meridian.log();
    let primary = cluster.primary().name().to_owned();
    let replica = cluster.replicas()[0].name().to_owned();

    // Reads are protected; load-balancer checks are not.
    let (code, body) = http_json(admin, "GET", "/api/database/status", None, None)
        .await
        .unwrap();
    assert_eq!(code, 401, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");
    let (code, _) = http_json(admin, "GET", "/liveness", None, None)
        .await
        .unwrap();
    assert_eq!(code, 200);

    // Probe history: the replica's own samples, newest first.
    let samples = wait_until(TIMEOUT, "three probe samples of the replica", || async {
        let samples = read(
            admin,
            &format!("/api/database/metrics?endpoint={replica}&limit=3"),
        )
        .await;
        match samples.as_array() {
            Some(list) if list.len() == 3 => Check::Ready(samples),
            _ => Check::NotYet(samples.to_string()),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", log()));
    let list = samples.as_array().unwrap();
    assert!(
        list.iter().all(|s| s["node"] == replica.as_str()),
        "{samples:#}"
    );
    assert!(
        list.iter()
            .all(|s| s["ok"] == true && s["role"] == "replica"),
        "{samples:#}"
    );
    let times: Vec<u64> = list.iter().map(|s| s["at_ms"].as_u64().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );
    let (code, body) = http_json(
        admin,
        "GET",
        "/api/database/metrics?endpoint=nobody",
        Some(TOKEN),
        None,
    )
    .await
    .unwrap();
    assert_eq!(code, 404, "{body}");

    // Traffic: reads on replicas, writes on the primary, visible in performance and pools.
    let client = connect(meridian.port).await.unwrap();
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS api_t (id int)")
        .await
        .unwrap();
    for i in 0..20 {
        client
            .execute("INSERT INTO api_t VALUES ($1)", &[&i])
            .await
            .unwrap();
        client
            .query("SELECT count(*) FROM api_t", &[])
            .await
            .unwrap();
    }
    let performance = read(admin, "/api/database/performance").await;
    let node = |name: &str| {
        performance["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["node"] == name)
            .unwrap_or_else(|| panic!("{name}: {performance:#}"))
            .clone()
    };
    assert!(
        node(&primary)["transactions"].as_u64().unwrap() >= 20,
        "{performance:#}"
    );
    let replica_reads: u64 = cluster
        .replicas()
        .iter()
        .map(|r| node(r.name())["transactions"].as_u64().unwrap())
        .sum();
    assert!(
        replica_reads >= 1,
        "reads reached replicas: {performance:#}"
    );
    assert_eq!(node(&primary)["role"], "primary");
    let connections = read(admin, "/api/database/connections").await;
    let pools = connections["pools"].as_array().unwrap();
    assert!(
        pools
            .iter()
            .any(|p| p["node"] == primary.as_str() && p["open"].as_u64() >= Some(1)),
        "{connections:#}"
    );
    let status = read(admin, "/api/database/status").await;
    let primary_status = status["regions"][0]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == primary.as_str())
        .unwrap()
        .clone();
    assert!(
        !primary_status["pools"].as_array().unwrap().is_empty(),
        "{status:#}"
    );

    // Analysis against the live cluster names real nodes.
    let (code, analysis) = http_json(
        admin,
        "POST",
        "/api/database/analyze-query",
        Some(TOKEN),
        Some(r#"{"query":"SELECT * FROM api_t WHERE id = $1"}"#),
    )
    .await
    .unwrap();
    assert_eq!(code, 200, "{analysis}");
    assert_eq!(analysis["isRead"], true);
    assert_eq!(analysis["route"]["target"], "replica");
    let chosen = analysis["route"]["node"].as_str().unwrap();
    assert!(
        cluster.replicas().iter().any(|r| r.name() == chosen),
        "{analysis:#}"
    );
    let (_, analysis) = http_json(
        admin,
        "POST",
        "/api/database/analyze-query",
        Some(TOKEN),
        Some(r#"{"query":"UPDATE api_t SET id = 0"}"#),
    )
    .await
    .unwrap();
    assert_eq!(analysis["isWrite"], true);
    assert_eq!(analysis["route"]["node"], primary.as_str());
    assert!(
        analysis["findings"].to_string().contains("WHERE"),
        "an UPDATE without WHERE is called out: {analysis:#}"
    );

    // Refresh: the next transaction runs on a new backend and the old one goes away.
    let before = primary_backend(&client).await;
    let (code, recycled) = command(admin, "/api/database/connections/refresh", None).await;
    assert_eq!(code, 200, "{recycled}");
    assert!(recycled["pools"].as_u64() >= Some(1), "{recycled}");
    let after = primary_backend(&client).await;
    assert_ne!(before, after, "a refreshed pool hands out new connections");
    wait_until(TIMEOUT, "the old backend to exit", || async {
        let gone = cluster
            .primary()
            .query_one(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = {before}"
            ))
            .await;
        match gone {
            Ok(Some(n)) if n == "0" => Check::Ready(()),
            other => Check::NotYet(format!("{other:?}")),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", log()));

    // Reconnect: the region's nodes are probed again on fresh connections.
    let probed_before = primary_status["last_probe_at_ms"].as_u64().unwrap();
    let (code, reconnected) = command(admin, "/api/database/reconnect/main", None).await;
    assert_eq!(code, 200, "{reconnected}");
    assert_eq!(reconnected["region"], "main");
    assert_eq!(reconnected["nodes"].as_array().unwrap().len(), 3);
    for node in reconnected["nodes"].as_array().unwrap() {
        assert!(
            node["last_probe_at_ms"].as_u64().unwrap() > probed_before,
            "{reconnected:#}"
        );
        assert_eq!(node["health"], "healthy", "{reconnected:#}");
    }
    let (code, body) = command(admin, "/api/database/reconnect/atlantis", None).await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("main"),
        "{body}"
    );

    // Health check: every node probed now.
    let (code, checked) = command(admin, "/api/database/health-check", None).await;
    assert_eq!(code, 200, "{checked}");
    assert_eq!(checked["primary"], primary.as_str());

    // Export: the whole report, with no secret in it.
    let (code, report) = http_json(admin, "GET", "/api/database/export", Some(TOKEN), None)
        .await
        .unwrap();
    assert_eq!(code, 200);
    let text = report.to_string();
    assert!(
        !text.contains(TOKEN),
        "the admin token leaked into the export"
    );
    assert!(
        !text.contains(&format!("\"{PASSWORD}\"")),
        "a password leaked into the export"
    );
    assert_eq!(report["config"]["admin_token"], "<redacted>");
    assert_eq!(report["topology"]["primary"], primary.as_str());
    assert!(report["probes"].as_array().unwrap().len() >= 3);
    assert!(report["performance"]["nodes"].is_array());

    // The CLI over the same API.
    let url = format!("http://127.0.0.1:{admin}");
    let (code, out, err) = cli(&["export"], &url);
    assert_eq!(code, Some(0), "{err}");
    let exported: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(exported["topology"]["primary"], primary.as_str());
    let (code, out, err) = cli(&["analyze-query", "--live", "SELECT 1"], &url);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("route:      replica ("), "{out}");
    let (code, out, err) = cli(&["refresh-connections"], &url);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("pools recycled"), "{out}");
    let (code, out, err) = cli(&["reconnect", "main"], &url);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("region main:"), "{out}");
    let (code, out, err) = cli(&["health-check"], &url);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with(&format!("primary {primary}")), "{out}");
    let (code, _, err) = cli(&["reconnect", "atlantis"], &url);
    assert_eq!(code, Some(1), "a refused command exits 1: {err}");
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["export", "--url", &url])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(
        refused.status.code(),
        Some(1),
        "protected reads without the token"
    );
}
