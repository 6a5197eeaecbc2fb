//! Helpers shared by the binary's integration tests: free ports, the configuration of a test-kit
//! cluster, clients through the proxy, plain HTTP to the admin listener, and what archiving tests
//! share (a copy of the binary the servers can execute, a segment switched and archived).

#![allow(dead_code)]

use meridian_testkit::TestCluster;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::NoTls;

/// The password of the `app` user that [`cluster_toml`] configures.
pub const PASSWORD: &str = "pw";

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether Meridian may restart and rewind the nodes itself (their `data_dir` is on this host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDirs {
    /// No `data_dir`: Meridian only probes, promotes and repoints.
    Unmanaged,
    /// Each node's `data_dir` is configured: a switchover or rejoin turns an old primary into
    /// a replica with `pg_rewind` and `pg_ctl`.
    Managed,
}

/// `[[users]]` and `[[regions]]` of a configuration for `cluster`: an `app` user logging in to
/// the servers as `postgres`, every node in region `main`, named as in the kit.
pub fn cluster_toml(cluster: &TestCluster, data_dirs: DataDirs) -> String {
    let mut text = format!(
        "[[users]]\nname = \"app\"\npassword = \"{PASSWORD}\"\nserver_user = \"postgres\"\n\
         [[regions]]\nname = \"main\"\n"
    );
    for node in cluster.nodes() {
        text.push_str(&format!(
            "[[regions.nodes]]\nname = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\n",
            node.name(),
            node.port()
        ));
        if data_dirs == DataDirs::Managed {
            text.push_str(&format!("data_dir = \"{}\"\n", node.data_dir().display()));
        }
    }
    text
}

/// A session through the proxy on `port` as `app`; its connection task runs on the current
/// runtime.
pub async fn connect(port: u16) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={port} user=app password={PASSWORD} dbname=postgres connect_timeout=10"
        ),
        NoTls,
    )
    .await?;
    tokio::spawn(connection);
    Ok(client)
}

/// `GET path` on the admin listener at `port`: the whole response, status line included.
pub async fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    http_exchange(
        port,
        &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    )
    .await
}

/// Sends `request` to the admin listener at `port` and reads the whole response.
async fn http_exchange(port: u16, request: &str) -> std::io::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

/// `method path` on the admin listener at `port`, with a bearer `token` and a JSON `body` when
/// given: the status code and the body parsed as JSON (`Value::Null` when it is not JSON).
pub async fn http_json(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, serde_json::Value)> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let body = body.unwrap_or("");
    let response = http_exchange(
        port,
        &format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ),
    )
    .await?;
    let code = response
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line: {response}")))?;
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((code, serde_json::from_str(body).unwrap_or_default()))
}

/// Starts `meridian run -c <dir>/meridian.toml` with `toml` as its configuration, a clean
/// environment and its output in `<dir>/meridian.log`; killed when dropped.
fn spawn_meridian(dir: &std::path::Path, toml: &str) -> tokio::process::Child {
    let config = dir.join("meridian.toml");
    std::fs::write(&config, toml).unwrap();
    let log = std::fs::File::create(dir.join("meridian.log")).unwrap();
    tokio::process::Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("run")
        .arg("-c")
        .arg(&config)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("MERIDIAN_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Waits until Meridian on `port` runs a query.
async fn wait_ready(port: u16, timeout: std::time::Duration) -> anyhow::Result<()> {
    meridian_testkit::wait_until(timeout, "Meridian to run a query", || async {
        match connect(port).await {
            Ok(client) => client.simple_query("SELECT 1").await.map(|_| ()).into(),
            Err(e) => meridian_testkit::Check::NotYet(e.to_string()),
        }
    })
    .await
}

/// The end of the log [`spawn_meridian`] writes in `dir`, for failure messages.
fn meridian_log(dir: &std::path::Path) -> String {
    let text = std::fs::read_to_string(dir.join("meridian.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    format!(
        "--- meridian log (last 150 lines) ---\n{}",
        lines[lines.len().saturating_sub(150)..].join("\n")
    )
}

/// The ports of Meridian's "accepting clients listen=… admin=…" or "control only … admin=…"
/// log line: the client port (none for a control-only instance) and the admin port.
fn bound_addresses(line: &str) -> Option<(Option<u16>, u16)> {
    if !line.contains("accepting clients") && !line.contains("control only") {
        return None;
    }
    // The log may be coloured (`ESC [ ... m` around field names): drop those sequences.
    let mut plain = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            plain.push(c);
        }
    }
    let port = |key: &str| {
        plain
            .split_whitespace()
            .find_map(|field| field.strip_prefix(key))
            .and_then(|addr| addr.parse::<std::net::SocketAddr>().ok())
            .map(|addr| addr.port())
    };
    Some((port("listen="), port("admin=")?))
}

/// A `meridian run` of its own, on ports it picked and a data directory of its own; killed
/// when dropped.
pub struct RunningMeridian {
    _child: tokio::process::Child,
    /// The proxy listener.
    pub port: u16,
    /// The admin listener.
    pub admin: u16,
    dir: tempfile::TempDir,
}

impl RunningMeridian {
    /// Starts Meridian with `settings` (TOML after `listen`, `admin_listen` and `data_dir`)
    /// and waits until it runs a query; panics with its log if it does not within `timeout`.
    pub async fn start(settings: &str, timeout: std::time::Duration) -> RunningMeridian {
        let meridian = RunningMeridian::spawn(settings, 0, timeout).await;
        let ready = wait_ready(meridian.port, timeout).await;
        meridian.or_log(ready);
        meridian
    }

    /// Starts a Meridian that serves no clients (a control-only instance) and waits until its
    /// admin listener answers.
    pub async fn start_control_only(
        settings: &str,
        timeout: std::time::Duration,
    ) -> RunningMeridian {
        // It binds no client port: a concrete one, so that a test can check nothing answers
        // there.
        let meridian = RunningMeridian::spawn(settings, free_port(), timeout).await;
        let admin = meridian.admin;
        let ready = meridian_testkit::wait_until(timeout, "the admin listener", || async {
            match http_json(admin, "GET", "/liveness", None, None).await {
                Ok((200, _)) => meridian_testkit::Check::Ready(()),
                other => meridian_testkit::Check::NotYet(format!("{other:?}")),
            }
        })
        .await;
        meridian.or_log(ready);
        meridian
    }

    /// Starts Meridian on ports it picks itself (port 0: no other process can take them
    /// between choosing and binding) and reads them from its "accepting clients" (or "control
    /// only") log line; panics with its log if it exits or says nothing within `timeout`.
    async fn spawn(settings: &str, listen: u16, timeout: std::time::Duration) -> RunningMeridian {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "listen = \"127.0.0.1:{listen}\"\nadmin_listen = \"127.0.0.1:0\"\n\
             data_dir = \"{}\"\n{settings}",
            dir.path().join("state").display(),
        );
        let mut child = spawn_meridian(dir.path(), &toml);
        let deadline = tokio::time::Instant::now() + timeout;
        let (port, admin) = loop {
            let log = std::fs::read_to_string(dir.path().join("meridian.log")).unwrap_or_default();
            if let Some((bound, admin)) = log.lines().find_map(bound_addresses) {
                break (bound.unwrap_or(listen), admin);
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "Meridian exited ({status}) before listening\n{}",
                    meridian_log(dir.path())
                );
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "Meridian did not listen within {timeout:?}\n{}",
                    meridian_log(dir.path())
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        RunningMeridian {
            _child: child,
            port,
            admin,
            dir,
        }
    }

    /// The end of its log, for failure messages.
    pub fn log(&self) -> String {
        meridian_log(self.dir.path())
    }

    /// The value of `result`, or a panic with the error and Meridian's log.
    pub fn or_log<T>(&self, result: anyhow::Result<T>) -> T {
        result.unwrap_or_else(|e| panic!("{e:#}\n{}", self.log()))
    }
}

/// A directory with `mode` (e.g. 0o777 for one the servers' user writes).
pub fn dir_with_mode(mode: u32) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(mode)).unwrap();
    dir
}

/// A copy of the binary the servers can execute as `archive_command`: they run as an
/// unprivileged user when the tests run as root, who may not reach the build directory (CI
/// builds under root's home). The directory must outlive its use.
pub fn executable_meridian() -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = dir_with_mode(0o755);
    let bin = dir.path().join("meridian");
    std::fs::copy(env!("CARGO_BIN_EXE_meridian"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, bin)
}

/// Switches `primary`'s WAL; the name of the segment the switch closed.
pub async fn switch_wal(primary: &meridian_testkit::Node) -> String {
    let segment = primary
        .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())")
        .await
        .unwrap()
        .unwrap();
    primary.execute("SELECT pg_switch_wal()").await.unwrap();
    segment
}

/// Waits until `name` is in `archive`, reporting `primary`'s last archiving failure meanwhile
/// and its log on timeout.
pub async fn wait_archived(
    primary: &meridian_testkit::Node,
    archive: &std::path::Path,
    name: &str,
) {
    let path = archive.join(name);
    let archived = meridian_testkit::wait_until(
        std::time::Duration::from_secs(90),
        &format!("{name} archived"),
        || async {
            let failed = primary
                .query_one("SELECT last_failed_wal FROM pg_stat_archiver")
                .await
                .ok()
                .flatten();
            meridian_testkit::Check::when(path.exists(), (), format!("last failed: {failed:?}"))
        },
    )
    .await;
    archived.unwrap_or_else(|e| panic!("{e:#}\n{}", primary.log_tail(30)));
}

/// Switches `primary`'s WAL and waits until the segment it closed is in `archive`; its name.
pub async fn switch_and_wait_archived(
    primary: &meridian_testkit::Node,
    archive: &std::path::Path,
) -> String {
    let segment = switch_wal(primary).await;
    wait_archived(primary, archive, &segment).await;
    segment
}
