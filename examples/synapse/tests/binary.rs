//! The `synapse` binary as an operator runs it: one clear line and exit code 2 for a bad
//! setting, 1 when the database cannot be migrated (never showing a password); on a real
//! cluster, it migrates, serves, and exits 0 on SIGTERM.

mod support;

use std::process::Stdio;
use std::time::Duration;

use meridian_testkit::{TestCluster, wait_until};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::Command;

use support::{TIMEOUT, free_port, request};

/// The binary with only `vars` (and `PATH`) in its environment.
fn synapse(vars: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_synapse"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(vars.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs the binary to its end: exit code and standard error.
async fn run(vars: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = tokio::time::timeout(TIMEOUT, synapse(vars).output())
        .await
        .expect("synapse exits")
        .unwrap();
    (out.status.code(), String::from_utf8(out.stderr).unwrap())
}

#[tokio::test]
async fn bad_settings_exit_2_and_an_unreachable_database_exits_1_without_the_password() {
    let (code, stderr) = run(&[]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");

    let url = format!("postgres://app:hunter2@127.0.0.1:{}/app", free_port());
    let (code, stderr) = run(&[("DATABASE_URL", &url), ("SYNAPSE_LISTEN", "nowhere")]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("SYNAPSE_LISTEN"), "{stderr}");

    let (code, stderr) = run(&[("DATABASE_URL", "mysql://app:hunter2@db/app")]).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");

    // Nothing listens there: no primary to migrate.
    let (code, stderr) = run(&[("DATABASE_URL", &url), ("SYNAPSE_LOG", "off")]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("cannot migrate"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[tokio::test]
async fn the_binary_migrates_serves_and_stops_cleanly_on_sigterm() {
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let mut child = synapse(&[
        ("DATABASE_URL", &cluster.primary().url()),
        ("DATABASE_REPLICA_URL", &cluster.replicas()[0].url()),
        ("SYNAPSE_LISTEN", &listen),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();

    let health = wait_until(TIMEOUT, "synapse to answer /health", || async {
        request(port, "GET", "/health", &[], None).await.into()
    })
    .await
    .unwrap();
    assert_eq!(health.status, 200, "{health:?}");
    assert_eq!(health.json()["db_replica"], "connected");
    let created = request(
        port,
        "POST",
        "/transactions",
        &[("Content-Type", "application/json")],
        Some(r#"{"account": "acc-1", "amount_cents": 1250, "currency": "EUR"}"#),
    )
    .await
    .unwrap();
    assert_eq!(created.status, 201, "{created:?}");

    let pid = Pid::from_raw(i32::try_from(child.id().expect("running")).unwrap());
    kill(pid, Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("synapse exits after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        cluster
            .primary()
            .query_one("SELECT count(*) FROM transactions")
            .await
            .unwrap()
            .as_deref(),
        Some("1")
    );
}
