//! The health endpoints through the binary, on a real cluster: `/health`, `/primary`,
//! `/replica` and `/api/database/status` follow a replica's death.

mod support;

use std::time::Duration;

use meridian_testkit::{Check, TestCluster, wait_until};
use serde_json::Value;

use support::{DataDirs, RunningMeridian, cluster_toml, free_port, http_json};

const TIMEOUT: Duration = Duration::from_secs(60);

/// Status code and JSON body of `GET path` on the admin listener.
async fn get(admin: u16, path: &str) -> Result<(u16, Value), String> {
    http_json(admin, "GET", path, None, None)
        .await
        .map_err(|e| e.to_string())
}

/// Polls `GET path` until it answers `code`; its body, or a panic with Meridian's log.
async fn wait_for(meridian: &RunningMeridian, path: &str, code: u16) -> Value {
    let admin = meridian.admin;
    let ready = wait_until(TIMEOUT, &format!("{path} to answer {code}"), || async {
        match get(admin, path).await {
            Ok((answered, body)) if answered == code => Check::Ready(body),
            Ok((answered, body)) => Check::NotYet(format!("{answered} {body}")),
            Err(e) => Check::NotYet(e),
        }
    })
    .await;
    meridian.or_log(ready)
}

#[tokio::test]
async fn health_turns_503_when_a_replica_dies_and_200_when_it_is_back_while_primary_and_replica_checks_stay_200()
 {
    let cluster = TestCluster::builder().replicas(2).start().await.unwrap();
    let meridian = RunningMeridian::start(
        &format!(
            "[monitor]\nprobe_interval = \"300ms\"\n{}",
            cluster_toml(&cluster, DataDirs::Unmanaged)
        ),
        TIMEOUT,
    )
    .await;
    let admin = meridian.admin;

    let healthy = wait_for(&meridian, "/health", 200).await;
    assert_eq!(healthy["status"], "healthy");
    assert_eq!(healthy["db_primary"], "connected");
    assert_eq!(healthy["db_replica"], "connected");
    assert_eq!(healthy["replicas"].as_array().unwrap().len(), 2);
    assert_eq!(get(admin, "/primary").await.unwrap().0, 200);
    assert_eq!(get(admin, "/readiness").await.unwrap().0, 200);
    // A replica's lag is known once the primary and it have both been probed.
    wait_for(&meridian, "/replica?max_lag=16777216", 200).await;

    let dead = &cluster.replicas()[0];
    dead.kill();
    let unhealthy = wait_for(&meridian, "/health", 503).await;
    assert_eq!(unhealthy["status"], "unhealthy");
    assert_eq!(unhealthy["db_replica"], "disconnected");
    assert_eq!(unhealthy["db_primary"], "connected");
    let states: Vec<(&str, &str)> = unhealthy["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["name"].as_str().unwrap(), r["state"].as_str().unwrap()))
        .collect();
    assert!(states.contains(&(dead.name(), "down")), "{states:?}");

    // The primary still takes writes and the other replica still qualifies.
    assert_eq!(get(admin, "/primary").await.unwrap().0, 200);
    let (code, replica) = get(admin, "/replica").await.unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        replica["replicas"],
        serde_json::json!([cluster.replicas()[1].name()])
    );

    let (code, status) = get(admin, "/api/database/status").await.unwrap();
    assert_eq!(code, 200);
    let nodes = status["regions"][0]["nodes"].as_array().unwrap();
    let dead_node = nodes.iter().find(|n| n["name"] == dead.name()).unwrap();
    assert_eq!(dead_node["health"], "down");
    assert_eq!(status["primary"], cluster.primary().name());

    // The same through the CLI: a table, exit 0; the JSON with --json.
    let url = format!("http://127.0.0.1:{admin}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["status", "--url", &url])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.starts_with(&format!("primary {}", cluster.primary().name())),
        "{table}"
    );
    let dead_line = table
        .lines()
        .find(|line| line.trim_start().starts_with(dead.name()))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(dead_line.contains("down"), "{table}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["status", "--json", "--url", &url])
        .env_clear()
        .output()
        .unwrap();
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["primary"], cluster.primary().name());

    // The dead replica's alert, by the API and by the CLI.
    let (code, alerts) = get(admin, "/api/database/alerts?active=true&severity=high")
        .await
        .unwrap();
    assert_eq!(code, 200);
    let down = alerts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["node"] == dead.name() && a["kind"] == "endpoint_down")
        .unwrap_or_else(|| panic!("{alerts:#}"));
    assert_eq!(down["active"], true);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["alerts", "--active", "--url", &url])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let listed = String::from_utf8(out.stdout).unwrap();
    assert!(
        listed.lines().any(|l| l.contains("endpoint_down")
            && l.contains(dead.name())
            && l.contains("active")),
        "{listed}"
    );
    let (code, _) = get(admin, "/api/database/alerts?severity=dire")
        .await
        .unwrap();
    assert_eq!(code, 400);

    // The replica comes back: /health is 200 again once it is judged up.
    dead.start().await.unwrap();
    let recovered = wait_for(&meridian, "/health", 200).await;
    assert_eq!(recovered["db_replica"], "connected");
}

/// `meridian status` with nothing listening: exit code 3 and a message naming the URL.
#[test]
fn status_without_a_running_meridian_exits_3() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["status", "--url", &url])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&url));
}
