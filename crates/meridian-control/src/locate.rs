//! Finding the node in a role, for one-shot commands (backups, restores, migrations) that run
//! without a Meridian instance: every configured node is asked `pg_is_in_recovery()` at once,
//! with the control plane's credentials and TLS settings.
//!
//! The primary is the one node not in recovery; two such nodes (a split brain not yet fenced)
//! is an error rather than a guess, since writing a migration or backing up the wrong one
//! loses data. A replica is the streaming one that has replayed the most.

use std::path::PathBuf;
use std::time::Duration;

use futures::future::join_all;
use meridian_config::{Config, ServerTlsMode};
use meridian_tls::{ServerTls, ServerTlsSet};
use tokio_postgres::Client;
use tokio_postgres::config::SslMode;

use crate::credentials::Credentials;
use crate::executor::conninfo_value;

/// How long each node may take to answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Which node a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    /// The one node accepting writes.
    Primary,
    /// The replica that has replayed the most.
    Replica,
}

/// Why no node could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum LocateError {
    /// The configuration gives no way to log in.
    #[error(
        "no credentials to reach the nodes: set monitor.user (MERIDIAN_MONITOR_USER) or a [[users]] entry"
    )]
    NoCredentials,
    /// A TLS setting could not be loaded.
    #[error("{0}")]
    Tls(String),
    /// No node in the role answered; what each said.
    #[error("no {wanted} among the configured nodes ({})", .seen.join("; "))]
    NotFound {
        /// "primary" or "replica".
        wanted: &'static str,
        /// One line per node.
        seen: Vec<String>,
    },
    /// More than one node accepts writes.
    #[error(
        "nodes {0} all accept writes: refusing to pick one (fence the old primary, or let Meridian's failover settle, first)"
    )]
    SplitBrain(String),
}

/// A configured node and how to log in to it.
#[derive(Debug, Clone)]
pub struct NodeAddress {
    /// Its name in the configuration.
    pub name: String,
    /// Its region.
    pub region: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Its data directory, when Meridian manages it.
    pub data_dir: Option<PathBuf>,
    /// TLS toward it.
    pub tls: ServerTls,
    /// libpq's `sslmode` for the same setting, for the PostgreSQL programs Meridian runs.
    sslmode: &'static str,
    /// libpq's `sslrootcert`, with `verify-full`.
    root_cert: Option<PathBuf>,
}

impl NodeAddress {
    /// A libpq connection string for PostgreSQL's own programs (`pg_basebackup`, `pg_dump`,
    /// `psql`). The password is not in it: pass it as `PGPASSWORD` (see
    /// [`Credentials::password`]), so it shows in no process list.
    pub fn conninfo(&self, credentials: &Credentials, database: &str) -> String {
        let mut text = format!(
            "host={} port={} user={} dbname={} sslmode={} application_name=meridian",
            conninfo_value(&self.host),
            self.port,
            conninfo_value(&credentials.user),
            conninfo_value(database),
            self.sslmode,
        );
        if let Some(root) = &self.root_cert {
            text.push_str(&format!(
                " sslrootcert={}",
                conninfo_value(&root.display().to_string())
            ));
        }
        text
    }

    /// Connects with `credentials` to `database` (the monitor's database by default).
    pub async fn connect(
        &self,
        credentials: &Credentials,
        database: Option<&str>,
        application_name: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        connect(
            &self.host,
            self.port,
            &self.tls,
            credentials,
            database,
            application_name,
            CONNECT_TIMEOUT,
        )
        .await
    }
}

/// Connects to `host:port` as the control plane does, driving the connection on a task.
pub async fn connect(
    host: &str,
    port: u16,
    tls: &ServerTls,
    credentials: &Credentials,
    database: Option<&str>,
    application_name: &str,
    timeout: Duration,
) -> Result<Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(port)
        .user(&credentials.user)
        .dbname(database.unwrap_or(&credentials.database))
        .application_name(application_name)
        .connect_timeout(timeout);
    if let Some(password) = &credentials.password {
        config.password(password);
    }
    Ok(match tls.client_config() {
        None => {
            config.ssl_mode(SslMode::Disable);
            let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            client
        }
        Some(rustls) => {
            config.ssl_mode(if tls.is_required() {
                SslMode::Require
            } else {
                SslMode::Prefer
            });
            let connector = tokio_postgres_rustls::MakeRustlsConnect::new((**rustls).clone());
            let (client, connection) = config.connect(connector).await?;
            tokio::spawn(connection);
            client
        }
    })
}

/// Every configured node, with its TLS settings.
pub fn nodes(config: &Config) -> Result<Vec<NodeAddress>, LocateError> {
    let tls = ServerTlsSet::from_config(config).map_err(|e| LocateError::Tls(e.to_string()))?;
    let mut nodes = Vec::new();
    for region in &config.regions {
        let mode = region.ssl.unwrap_or(config.server_tls.mode);
        let sslmode = match mode {
            ServerTlsMode::Disable => "disable",
            ServerTlsMode::Prefer => "prefer",
            ServerTlsMode::Require => "require",
            ServerTlsMode::VerifyFull => "verify-full",
        };
        let root_cert = (mode == ServerTlsMode::VerifyFull)
            .then(|| config.server_tls.root_cert.clone())
            .flatten();
        for node in &region.nodes {
            nodes.push(NodeAddress {
                name: node.name.clone(),
                region: region.name.clone(),
                host: node.host.clone(),
                port: node.port,
                data_dir: node.data_dir.clone(),
                tls: tls.for_region(&region.name).clone(),
                sslmode,
                root_cert: root_cert.clone(),
            });
        }
    }
    Ok(nodes)
}

/// The node in the role wanted, connected.
#[derive(Debug)]
pub struct Located {
    /// The node.
    pub node: NodeAddress,
    /// A connection to it, on the monitor's database.
    pub client: Client,
    /// The credentials used.
    pub credentials: Credentials,
}

/// Asks every node its role at once and returns the one `want`s.
pub async fn locate(config: &Config, want: Want) -> Result<Located, LocateError> {
    let credentials = Credentials::from_config(config).ok_or(LocateError::NoCredentials)?;
    let nodes = nodes(config)?;
    let answers = join_all(nodes.into_iter().map(|node| {
        let credentials = credentials.clone();
        async move {
            let answer = match node.connect(&credentials, None, "meridian").await {
                Err(e) => Err(e.to_string()),
                Ok(client) => client
                    .query_one(
                        "SELECT pg_is_in_recovery(), \
                                (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::text, \
                                EXISTS (SELECT 1 FROM pg_stat_wal_receiver \
                                         WHERE status = 'streaming')",
                        &[],
                    )
                    .await
                    .map(|row| {
                        (
                            row.get::<_, bool>(0),
                            row.get::<_, Option<String>>(1),
                            row.get::<_, bool>(2),
                            client,
                        )
                    })
                    .map_err(|e| e.to_string()),
            };
            (node, answer)
        }
    }))
    .await;
    let mut seen = Vec::new();
    let mut primaries = Vec::new();
    let mut replicas = Vec::new();
    for (node, answer) in answers {
        match answer {
            Err(e) => seen.push(format!("{}: {e}", node.name)),
            Ok((false, _, _, client)) => {
                seen.push(format!("{}: primary", node.name));
                primaries.push((node, client));
            }
            Ok((true, replayed, streaming, client)) => {
                seen.push(format!(
                    "{}: replica{}",
                    node.name,
                    if streaming { "" } else { " (not streaming)" }
                ));
                if streaming {
                    let replayed: u128 = replayed.and_then(|r| r.parse().ok()).unwrap_or(0);
                    replicas.push((replayed, node, client));
                }
            }
        }
    }
    let found = match want {
        Want::Primary => {
            if primaries.len() > 1 {
                let names: Vec<&str> = primaries.iter().map(|(n, _)| n.name.as_str()).collect();
                return Err(LocateError::SplitBrain(names.join(", ")));
            }
            primaries.pop()
        }
        Want::Replica => {
            replicas.sort_by_key(|(replayed, ..)| std::cmp::Reverse(*replayed));
            replicas
                .into_iter()
                .next()
                .map(|(_, node, client)| (node, client))
        }
    };
    match found {
        Some((node, client)) => Ok(Located {
            node,
            client,
            credentials,
        }),
        None => Err(LocateError::NotFound {
            wanted: match want {
                Want::Primary => "primary",
                Want::Replica => "streaming replica",
            },
            seen,
        }),
    }
}
