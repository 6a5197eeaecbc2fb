//! `meridian run` as a user starts it: configured by `DATABASE_URL` alone or by a file,
//! refusing bad configuration with a message naming the field, and stopping on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use meridian_testkit::{Check, TestCluster, wait_until};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};
use tokio_postgres::NoTls;

use support::free_port;

mod support;

const TIMEOUT: Duration = Duration::from_secs(30);

/// The binary with a clean environment, its own admin port and data directory in `data`
/// (tests run in parallel: the defaults would collide).
fn meridian(data: &tempfile::TempDir) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meridian"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env(
            "MERIDIAN_ADMIN_LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("MERIDIAN_DATA_DIR", data.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn connect(conninfo: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conninfo, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn stop(mut child: Child) -> (Option<i32>, String) {
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("meridian did not stop")
        .unwrap();
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .await
        .unwrap();
    (status.code(), stderr)
}

#[tokio::test]
async fn database_url_alone_runs_a_proxy_for_the_urls_user() {
    let data = tempfile::tempdir().unwrap();
    let cluster = TestCluster::builder().start().await.unwrap();
    cluster
        .primary()
        .execute("ALTER ROLE postgres PASSWORD 's3cret'")
        .await
        .unwrap();
    let port = free_port();
    let child = meridian(&data)
        .arg("run")
        .env(
            "DATABASE_URL",
            format!(
                "postgres://postgres:s3cret@127.0.0.1:{}/postgres",
                cluster.primary().port()
            ),
        )
        .env("MERIDIAN_LISTEN", format!("127.0.0.1:{port}"))
        .spawn()
        .unwrap();
    let conninfo =
        format!("host=127.0.0.1 port={port} user=postgres password=s3cret dbname=postgres");
    let client = wait_until(TIMEOUT, "meridian to accept the URL's user", || async {
        connect(&conninfo).await.into()
    })
    .await
    .unwrap();
    let port_seen: i32 = client
        .query_one("SELECT inet_server_port()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        port_seen as u16,
        cluster.primary().port(),
        "the query ran on the primary"
    );

    let wrong = format!("host=127.0.0.1 port={port} user=postgres password=nope dbname=postgres");
    let error = connect(&wrong).await.unwrap_err();
    assert_eq!(error.as_db_error().map(|e| e.code().code()), Some("28P01"));

    drop(client);
    let (code, stderr) = stop(child).await;
    assert_eq!(code, Some(0), "SIGTERM is a clean stop; stderr:\n{stderr}");
    assert!(
        !stderr.contains("s3cret"),
        "the password was logged:\n{stderr}"
    );
}

#[tokio::test]
async fn a_config_file_runs_the_proxy_and_sigterm_stops_it() {
    let data = tempfile::tempdir().unwrap();
    let cluster = TestCluster::builder().replicas(1).start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut toml = format!(
        "listen = \"127.0.0.1:{port}\"\n[[users]]\nname = \"app\"\npassword = \"app-pw\"\nserver_user = \"postgres\"\n\
         [[regions]]\nname = \"main\"\n"
    );
    // The replica first: roles are observed, not taken from the order of the file.
    for node in cluster.nodes().iter().rev() {
        toml.push_str(&format!(
            "[[regions.nodes]]\nname = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\n",
            node.name(),
            node.port()
        ));
    }
    let path = dir.path().join("meridian.toml");
    std::fs::write(&path, toml).unwrap();
    let child = meridian(&data)
        .arg("run")
        .arg("-c")
        .arg(&path)
        .spawn()
        .unwrap();
    let conninfo = format!("host=127.0.0.1 port={port} user=app password=app-pw dbname=postgres");
    let client = wait_until(TIMEOUT, "meridian to accept clients", || async {
        connect(&conninfo).await.into()
    })
    .await
    .unwrap();
    let in_recovery: bool = client
        .query_one(
            "SELECT pg_is_in_recovery() FROM (SELECT txid_current()) AS write",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        !in_recovery,
        "writes must go to the node observed as primary"
    );
    drop(client);
    let (code, _) = stop(child).await;
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn a_bad_configuration_is_refused_naming_the_field() {
    let data = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meridian.toml");
    std::fs::write(
        &path,
        "[pool]\nmax_size = 0\n[[regions]]\nname = \"main\"\n[[regions.nodes]]\nname = \"pg1\"\nhost = \"127.0.0.1\"\n",
    )
    .unwrap();
    let output = meridian(&data)
        .arg("run")
        .arg("-c")
        .arg(&path)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("pool.max_size"), "{stderr}");
}

#[tokio::test]
async fn no_configuration_at_all_says_how_to_give_one() {
    let data = tempfile::tempdir().unwrap();
    let output = meridian(&data).arg("run").output().await.unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("DATABASE_URL"), "{stderr}");
}

#[tokio::test]
async fn the_proxy_keeps_waiting_for_a_primary_that_is_down_at_start() {
    let data = tempfile::tempdir().unwrap();
    // Nothing listens on this port: the node is down. Meridian still starts and says so.
    let dead = free_port();
    let port = free_port();
    let child = meridian(&data)
        .arg("run")
        .env(
            "DATABASE_URL",
            format!("postgres://app:pw@127.0.0.1:{dead}/postgres"),
        )
        .env("MERIDIAN_LISTEN", format!("127.0.0.1:{port}"))
        .spawn()
        .unwrap();
    let conninfo = format!("host=127.0.0.1 port={port} user=app password=pw dbname=postgres");
    let error = wait_until(TIMEOUT, "meridian to answer", || async {
        match connect(&conninfo).await {
            Err(e) if e.as_db_error().is_some() => Check::Ready(e),
            other => Check::NotYet(format!("{:?}", other.map(|_| "connected"))),
        }
    })
    .await
    .unwrap();
    assert_eq!(error.as_db_error().unwrap().code().code(), "08006");
    let (code, _) = stop(child).await;
    assert_eq!(code, Some(0));
}
