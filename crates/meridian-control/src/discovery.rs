//! The first look at the cluster: which configured node is the primary.
//!
//! Roles are observed, never configured: at start-up every node is asked
//! `pg_is_in_recovery()` once, concurrently, and the answers make the first cluster view.
//! A node that does not answer is `Unknown`; more than one writable node is refused, because
//! routing writes to either could split the data.

use std::sync::Arc;
use std::time::Duration;

use meridian_config::Config;
use meridian_core::topology::{ClusterView, Health, NodeId, NodeView, Role};
use tokio_postgres::NoTls;

/// Credentials the control plane logs in with.
#[derive(Clone)]
pub struct Credentials {
    /// Role name.
    pub user: String,
    /// Its password, if the servers ask for one.
    pub password: Option<String>,
    /// Database to connect to.
    pub database: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .finish()
    }
}

impl Credentials {
    /// `monitor.user` and its password, else the server role and password of the first
    /// configured user; on `monitor.database`.
    pub fn from_config(config: &Config) -> Option<Credentials> {
        let monitor = &config.monitor;
        let (user, password) = match &monitor.user {
            Some(user) => (
                user.clone(),
                monitor.password.as_ref().map(|p| p.expose().to_owned()),
            ),
            None => {
                let first = config.users.first()?;
                (
                    first.server_user.clone(),
                    first
                        .server_password
                        .as_ref()
                        .map(|p| p.expose().to_owned()),
                )
            }
        };
        Some(Credentials {
            user,
            password,
            database: monitor.database.clone(),
        })
    }
}

/// Why no usable view could be made.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// More than one node accepts writes.
    #[error("more than one node accepts writes ({0}); refusing to choose between them")]
    SeveralPrimaries(String),
}

/// Asks every node whether it is in recovery and builds the first view (generation 1).
pub async fn observe_roles(
    config: &Config,
    credentials: &Credentials,
    timeout: Duration,
) -> Result<ClusterView, DiscoveryError> {
    let nodes: Vec<(NodeId, &str, &str, &str, u16)> = config
        .regions
        .iter()
        .flat_map(|region| region.nodes.iter().map(move |node| (region, node)))
        .enumerate()
        .map(|(i, (region, node))| {
            (
                NodeId(i as u16),
                node.name.as_str(),
                region.name.as_str(),
                node.host.as_str(),
                node.port,
            )
        })
        .collect();
    let roles = futures::future::join_all(
        nodes
            .iter()
            .map(|&(_, _, _, host, port)| observe_role(host, port, credentials, timeout)),
    )
    .await;
    let views: Vec<NodeView> = nodes
        .iter()
        .zip(roles)
        .map(|(&(id, name, region, host, port), role)| NodeView {
            id,
            name: Arc::from(name),
            region: Arc::from(region),
            host: Arc::from(host),
            port,
            role,
            health: if role == Role::Unknown {
                Health::Down
            } else {
                Health::Healthy
            },
        })
        .collect();
    let primaries: Vec<&NodeView> = views.iter().filter(|n| n.role == Role::Primary).collect();
    if primaries.len() > 1 {
        let names: Vec<&str> = primaries.iter().map(|n| &*n.name).collect();
        return Err(DiscoveryError::SeveralPrimaries(names.join(", ")));
    }
    Ok(ClusterView {
        generation: 1,
        primary: primaries.first().map(|n| n.id),
        nodes: views,
    })
}

/// One node's role, or `Unknown` if it cannot be asked within `timeout`.
pub async fn observe_role(
    host: &str,
    port: u16,
    credentials: &Credentials,
    timeout: Duration,
) -> Role {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(port)
        .user(&credentials.user)
        .dbname(&credentials.database)
        .application_name("meridian-control")
        .connect_timeout(timeout);
    if let Some(password) = &credentials.password {
        config.password(password);
    }
    let ask = async {
        let (client, connection) = config.connect(NoTls).await.ok()?;
        let task = tokio::spawn(connection);
        let row = client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await
            .ok();
        drop(client);
        let _ = task.await;
        row.map(|row| {
            if row.get::<_, bool>(0) {
                Role::Replica
            } else {
                Role::Primary
            }
        })
    };
    tokio::time::timeout(timeout, ask)
        .await
        .ok()
        .flatten()
        .unwrap_or(Role::Unknown)
}
