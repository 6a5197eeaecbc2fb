//! A proxy under test: a real cluster from the test kit, Meridian in front of it on a free
//! port, and helpers to connect through it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meridian_config::{Config, Environment};
use meridian_core::topology::{ClusterView, Health, NodeId, NodeView, Role};
use meridian_proxy::{Proxy, ProxySettings};
use meridian_testkit::TestCluster;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio_postgres::{Client, NoTls};

/// The password of the `app` user every test configures.
pub const PASSWORD: &str = "app-secret";

/// Meridian running in this process in front of `cluster`.
pub struct ProxyUnderTest {
    pub addr: SocketAddr,
    pub proxy: Proxy,
    pub view: watch::Sender<Arc<ClusterView>>,
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
        let proxy = Proxy::new(settings, view_rx);
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
            stop: Some(stop),
            task: Some(task),
            _config_dir: dir,
        }
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
