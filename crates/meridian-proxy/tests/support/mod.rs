//! A proxy under test: a real cluster from the test kit, Meridian in front of it on a free
//! port, and helpers to connect through it.

#![allow(dead_code)]

pub mod raw;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use meridian_config::{Config, Environment};
use meridian_core::topology::{ClusterView, Health, NodeId, NodeView, ProxySignal, Role};
use meridian_proxy::{Proxy, ProxySettings};
use meridian_testkit::{Check, Node, TestCluster, wait_until};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

/// The password of the `app` user every test configures.
pub const PASSWORD: &str = "app-secret";

/// The longest any one step of a test may take (a login, a query, a client program) before the
/// test fails instead of hanging.
pub const STEP: Duration = Duration::from_secs(30);

/// A `[[users]]` entry for `name` with `auth = "trust"` (allowed because the test proxy's
/// configured listener is the loopback default), logging in to the servers as `postgres`.
pub fn trust_user(name: &str) -> String {
    format!("[[users]]\nname = \"{name}\"\nauth = \"trust\"\nserver_user = \"postgres\"\n")
}

/// What a client task's connection ended with; see [`ProxyUnderTest::connect_watched`].
pub type ConnectionEnd = JoinHandle<Result<(), tokio_postgres::Error>>;

/// Meridian running in this process in front of `cluster`.
pub struct ProxyUnderTest {
    pub addr: SocketAddr,
    pub proxy: Proxy,
    pub view: watch::Sender<Arc<ClusterView>>,
    /// The nodes the proxy reported as unusable (its fast signal to the monitor).
    pub fast_signal: mpsc::UnboundedReceiver<ProxySignal>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _config_dir: tempfile::TempDir,
}

impl ProxyUnderTest {
    /// Starts a proxy for `cluster` with the `app` user (SCRAM, password [`PASSWORD`], logging
    /// in to the servers as `postgres`) plus `extra` TOML (sections such as `[pool]`).
    pub async fn start(cluster: &TestCluster, extra: &str) -> ProxyUnderTest {
        Self::start_with_users(
            cluster,
            &format!(
                "[[users]]\nname = \"app\"\npassword = \"{PASSWORD}\"\nserver_user = \"postgres\"\n{extra}"
            ),
        )
        .await
    }

    /// Starts a proxy with the given users and other TOML, and the cluster's nodes.
    pub async fn start_with_users(cluster: &TestCluster, toml: &str) -> ProxyUnderTest {
        let dir = tempfile::tempdir().unwrap();
        let mut text = String::from(toml);
        text.push_str("\n[[regions]]\nname = \"main\"\n");
        for node in cluster.nodes() {
            text.push_str(&format!(
                "[[regions.nodes]]\nname = \"{}\"\nhost = \"127.0.0.1\"\nport = {}\n",
                node.name(),
                node.port()
            ));
        }
        let path = dir.path().join("meridian.toml");
        std::fs::write(&path, text).unwrap();
        let config = Config::load(
            Some(&path),
            &Environment::from_pairs(Vec::<(String, String)>::new()),
        )
        .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        let settings = ProxySettings::from_config(&config).unwrap();
        let (view, view_rx) = watch::channel(Arc::new(view_of(cluster, 0)));
        let (signal, fast_signal) = mpsc::unbounded_channel();
        let proxy = Proxy::new(settings, view_rx, Some(signal));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let running = proxy.clone();
        let task = tokio::spawn(async move {
            running
                .run(listener, async {
                    let _ = stopped.await;
                })
                .await
        });
        ProxyUnderTest {
            addr,
            proxy,
            view,
            fast_signal,
            stop: Some(stop),
            task: Some(task),
            _config_dir: dir,
        }
    }

    /// Publishes `view` as the control plane does.
    pub fn publish(&self, view: ClusterView) {
        self.view.send_replace(Arc::new(view));
    }

    /// Waits until the proxy reports `node` unusable on its fast signal, skipping other
    /// reports.
    pub async fn wait_for_report(&mut self, node: NodeId) {
        self.wait_for_signal(ProxySignal::Unusable(node)).await;
    }

    /// Waits until the proxy sends `signal`, skipping other signals.
    pub async fn wait_for_signal(&mut self, signal: ProxySignal) {
        let mut seen = Vec::new();
        let found = tokio::time::timeout(STEP, async {
            while let Some(reported) = self.fast_signal.recv().await {
                if reported == signal {
                    return true;
                }
                seen.push(reported);
            }
            false
        })
        .await;
        assert_eq!(
            found,
            Ok(true),
            "{signal:?} was not sent on the fast signal; sent: {seen:?}"
        );
    }

    /// The signals sent so far and not yet read.
    pub fn signals(&mut self) -> Vec<ProxySignal> {
        std::iter::from_fn(|| self.fast_signal.try_recv().ok()).collect()
    }

    /// Waits until `count` sessions wait for a primary.
    pub async fn wait_for_buffered(&self, count: usize) {
        wait_until(
            STEP,
            &format!("{count} session(s) waiting for a primary"),
            || async {
                let waiting = self.proxy.waiting_for_primary();
                Check::when(waiting == count, (), waiting)
            },
        )
        .await
        .unwrap();
    }

    /// A libpq connection string to the proxy for `user` / `password`.
    pub fn conninfo(&self, user: &str, password: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname=postgres",
            self.addr.port()
        )
    }

    /// Connects as `app` with tokio-postgres.
    pub async fn connect(&self) -> Client {
        self.connect_as("app", PASSWORD).await.unwrap()
    }

    /// Connects as `user`.
    pub async fn connect_as(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) =
            tokio_postgres::connect(&self.conninfo(user, password), NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// A tokio-postgres configuration for the proxy as `user` / `password`.
    pub fn config(&self, user: &str, password: &str) -> tokio_postgres::Config {
        let mut config: tokio_postgres::Config = self.conninfo(user, password).parse().unwrap();
        config.connect_timeout(STEP);
        config
    }

    /// Connects with `config` and hands back the connection task too: it ends with the error
    /// the proxy sends while no query is running (a FATAL at shutdown, ...), or `Ok` at a
    /// clean close.
    pub async fn connect_watched(
        &self,
        config: &tokio_postgres::Config,
    ) -> Result<(Client, ConnectionEnd), tokio_postgres::Error> {
        let (client, connection) = config.connect(NoTls).await?;
        Ok((client, tokio::spawn(connection)))
    }

    /// The counters of the proxy's only pool (tests use one node, one user, one database),
    /// or all zero before the first login creates it.
    pub fn pool_stats(&self) -> meridian_proxy::PoolStats {
        let reports = self.proxy.pool_reports();
        assert!(reports.len() <= 1, "expected one pool, got {reports:?}");
        reports.first().map(|r| r.stats).unwrap_or_default()
    }

    /// Waits until `count` checkouts wait for a server connection.
    pub async fn wait_for_waiters(&self, count: usize) {
        wait_until(STEP, &format!("{count} checkout(s) waiting"), || async {
            let stats = self.pool_stats();
            Check::when(stats.waiting == count, (), stats)
        })
        .await
        .unwrap();
    }

    /// A libpq program (`psql`, `pgbench`) pointed at the proxy through the environment.
    pub fn libpq_command(
        &self,
        program: &str,
        user: &str,
        password: &str,
    ) -> tokio::process::Command {
        libpq_command(program, self.addr.port(), user, Some(password))
    }

    /// Triggers a graceful shutdown and waits for it, up to `timeout`.
    pub async fn shut_down(&mut self, timeout: Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(timeout, task)
                .await
                .expect("the proxy did not shut down")
                .unwrap();
        }
    }
}

impl Drop for ProxyUnderTest {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The view of a test cluster whose node `primary` (index) is the primary.
pub fn view_of(cluster: &TestCluster, primary: usize) -> ClusterView {
    ClusterView {
        generation: 1,
        primary: Some(NodeId(primary as u16)),
        paused: false,
        nodes: cluster
            .nodes()
            .iter()
            .enumerate()
            .map(|(i, node)| NodeView {
                id: NodeId(i as u16),
                name: Arc::from(node.name()),
                region: Arc::from(node.region()),
                host: Arc::from("127.0.0.1"),
                port: node.port(),
                role: if i == primary {
                    Role::Primary
                } else {
                    Role::Replica
                },
                health: Health::Healthy,
                lag: None,
                replayed: None,
                latency: None,
            })
            .collect(),
    }
}

/// The SQLSTATE of a tokio-postgres error, or a description of why it has none.
pub fn sqlstate(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => db.code().code().to_owned(),
        None => format!("no SQLSTATE: {error}"),
    }
}

/// A libpq program pointed at `127.0.0.1:port`, database `postgres`, through `PG*` variables
/// (any inherited ones are removed, so the test's own environment cannot redirect it).
pub fn libpq_command(
    program: &str,
    port: u16,
    user: &str,
    password: Option<&str>,
) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(program);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PG") {
            command.env_remove(name);
        }
    }
    command
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", port.to_string())
        .env("PGUSER", user)
        .env("PGDATABASE", "postgres")
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    command
}

/// Runs a client program to completion, within [`STEP`] (or twice that: pgbench runs a few
/// hundred transactions).
pub async fn run(command: &mut tokio::process::Command) -> Output {
    tokio::time::timeout(2 * STEP, command.output())
        .await
        .unwrap_or_else(|_| panic!("{command:?} did not finish within {:?}", 2 * STEP))
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

/// Exit status, stdout and stderr of a client program, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The PID of the server backend that runs `sql` (a query of `pg_backend_pid()`) for `client`.
pub async fn backend_pid_of(client: &Client, sql: &str) -> i32 {
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// The PID of the server backend that serves `client`'s next statement.
pub async fn backend_pid(client: &Client) -> i32 {
    backend_pid_of(client, "SELECT pg_backend_pid()").await
}

/// The PID of the backend of `node` that is running a statement containing `needle`, once
/// there is one (the query that looks for it excluded).
pub async fn active_backend(node: &Node, needle: &str) -> i32 {
    let sql = format!(
        "SELECT pid FROM pg_stat_activity WHERE state = 'active' \
         AND query LIKE '%{needle}%' AND pid <> pg_backend_pid()"
    );
    wait_until(STEP, &format!("a backend running {needle}"), || async {
        match node.query_one(&sql).await {
            Ok(Some(pid)) => Check::Ready(pid.parse().unwrap()),
            Ok(None) => Check::NotYet("no such backend".into()),
            Err(e) => Check::NotYet(format!("{e:#}")),
        }
    })
    .await
    .unwrap()
}

/// A self-signed certificate for `localhost` and `127.0.0.1`, with its key, in PEM files
/// that live as long as this value.
pub struct Certificate {
    pub cert: PathBuf,
    pub key: PathBuf,
    _dir: tempfile::TempDir,
}

impl Certificate {
    pub fn generate() -> Certificate {
        let dir = tempfile::tempdir().unwrap();
        let certified =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .unwrap();
        let cert = dir.path().join("proxy.crt");
        let key = dir.path().join("proxy.key");
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
        Certificate {
            cert,
            key,
            _dir: dir,
        }
    }

    /// The `[tls]` section presenting this certificate to clients.
    pub fn tls_section(&self) -> String {
        format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\n",
            self.cert.display(),
            self.key.display()
        )
    }
}
