//! How a [`PoolManager`](crate::PoolManager) is set up: the nodes (from the environment, a
//! URL list or a builder) and the knobs, each with the original design's default.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use meridian_core::backoff::Backoff;
use meridian_core::balance::Strategy;
use meridian_core::breaker::BreakerPolicy;
use sqlx::postgres::PgConnectOptions;

use crate::error::{Error, Result};

/// Settings shared by every node. `Default` gives the original design's values.
///
/// ```
/// use std::time::Duration;
/// use meridian_client::{Options, Strategy};
/// let mut options = Options::default();
/// assert_eq!(options.max_connections, 10);
/// assert_eq!(options.reconnect.initial, Duration::from_secs(2));
/// options.strategy = Strategy::LowestLatency;
/// options.acquire_timeout = Duration::from_secs(2);
/// let builder = meridian_client::PoolManager::builder().options(options);
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct Options {
    /// How replicas share reads. Default: round-robin.
    pub strategy: Strategy,
    /// Replicas further behind the primary than this many bytes of WAL get no reads. Default:
    /// 16 MiB; `None` for no ceiling.
    pub max_lag_bytes: Option<u64>,
    /// Connections per node. Default: 10.
    pub max_connections: u32,
    /// Connections kept open per node even when idle. Default: 0.
    pub min_connections: u32,
    /// How long a query waits for a connection (and its opening). Default: 5 s.
    pub acquire_timeout: Duration,
    /// How often the monitor checks each node's role and position. Default: 1 s.
    pub check_interval: Duration,
    /// How long a check may take before the node counts as unreachable. Default: 3 s.
    pub check_timeout: Duration,
    /// Delays between reconnection attempts to a node that went away. Default: 2 s doubling to
    /// 32 s for 5 attempts, then every 32 s, ±20 % jitter.
    pub reconnect: Backoff,
    /// Each node's circuit breaker. Default: open after 5 consecutive failures, 30 s open, 2
    /// trial requests.
    pub breaker: BreakerPolicy,
    /// Delays between attempts of [`PoolManager::retry`](crate::PoolManager::retry) and of
    /// retried transactions. Default: 50 ms doubling to 2 s, 5 retries, ±50 % jitter.
    pub retry: Backoff,
    /// A Meridian control plane whose view to follow (its admin URL, e.g.
    /// `http://meridian:9090`): roles and health come from `/api/database/status` instead of
    /// the client's own checks. Default: none.
    pub control_plane: Option<String>,
    /// Bearer token for the control plane's API, if it requires one.
    pub control_plane_token: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            strategy: Strategy::RoundRobin,
            max_lag_bytes: Some(16 * 1024 * 1024),
            max_connections: 10,
            min_connections: 0,
            acquire_timeout: Duration::from_secs(5),
            check_interval: Duration::from_secs(1),
            check_timeout: Duration::from_secs(3),
            reconnect: Backoff {
                initial: Duration::from_secs(2),
                max: Duration::from_secs(32),
                attempts: 5,
                then: Duration::from_secs(32),
                jitter: 0.2,
            },
            breaker: BreakerPolicy::default(),
            retry: Backoff {
                initial: Duration::from_millis(50),
                max: Duration::from_secs(2),
                attempts: 5,
                then: Duration::from_secs(2),
                jitter: 0.5,
            },
            control_plane: None,
            control_plane_token: None,
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("strategy", &self.strategy)
            .field("max_lag_bytes", &self.max_lag_bytes)
            .field("max_connections", &self.max_connections)
            .field("min_connections", &self.min_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("check_interval", &self.check_interval)
            .field("check_timeout", &self.check_timeout)
            .field("reconnect", &self.reconnect)
            .field("breaker", &self.breaker)
            .field("retry", &self.retry)
            .field("control_plane", &self.control_plane)
            .field(
                "control_plane_token",
                &self.control_plane_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// One node to connect to. Its name is `host:port/database`: no user, no password.
#[derive(Clone)]
pub(crate) struct NodeSpec {
    pub(crate) name: String,
    pub(crate) connect: PgConnectOptions,
}

impl NodeSpec {
    pub(crate) fn parse(field: &'static str, url: &str) -> Result<NodeSpec> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(Error::Config {
                field,
                message:
                    "not a PostgreSQL URL; expected postgres://user:password@host:port/database"
                        .into(),
            });
        }
        let connect = PgConnectOptions::from_str(url).map_err(|e| Error::Config {
            field,
            // sqlx's message quotes the part it could not read, never the whole URL.
            message: format!(
                "not a PostgreSQL URL ({e}); expected postgres://user:password@host:port/database"
            ),
        })?;
        let name = format!(
            "{}:{}/{}",
            connect.get_host(),
            connect.get_port(),
            connect.get_database().unwrap_or(connect.get_username())
        );
        Ok(NodeSpec { name, connect })
    }
}

impl fmt::Debug for NodeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The connect options hold the password: never print them.
        f.debug_struct("NodeSpec")
            .field("name", &self.name)
            .field("user", &self.connect.get_username())
            .finish_non_exhaustive()
    }
}

/// Builds a [`PoolManager`](crate::PoolManager) node by node.
///
/// ```no_run
/// # async fn f() -> meridian_client::Result<()> {
/// use meridian_client::{PoolManager, Strategy};
/// let db = PoolManager::builder()
///     .primary("postgres://app:secret@db-1:5432/app")
///     .replica("postgres://app:secret@db-2:5432/app")
///     .replica("postgres://app:secret@db-3:5432/app")
///     .strategy(Strategy::LeastInFlight)
///     .max_lag_bytes(Some(1 << 20))
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct Builder {
    nodes: Vec<(&'static str, String, bool)>,
    options: Options,
}

impl Builder {
    /// The node expected to be the primary (roles are checked anyway: after a failover the
    /// client follows the promoted node).
    pub fn primary(mut self, url: impl Into<String>) -> Self {
        self.nodes.push(("primary", url.into(), true));
        self
    }

    /// A replica.
    pub fn replica(mut self, url: impl Into<String>) -> Self {
        self.nodes.push(("replica", url.into(), false));
        self
    }

    /// A node whose role is not known in advance (learned from its first check).
    pub fn node(mut self, url: impl Into<String>) -> Self {
        self.nodes.push(("node", url.into(), false));
        self
    }

    /// Every setting at once.
    pub fn options(mut self, options: Options) -> Self {
        self.options = options;
        self
    }

    /// How replicas share reads.
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.options.strategy = strategy;
        self
    }

    /// The replica lag ceiling in bytes (`None`: none).
    pub fn max_lag_bytes(mut self, bytes: Option<u64>) -> Self {
        self.options.max_lag_bytes = bytes;
        self
    }

    /// Connections per node.
    pub fn max_connections(mut self, n: u32) -> Self {
        self.options.max_connections = n;
        self
    }

    /// How often each node is checked.
    pub fn check_interval(mut self, every: Duration) -> Self {
        self.options.check_interval = every;
        self
    }

    /// Reconnection delays.
    pub fn reconnect(mut self, backoff: Backoff) -> Self {
        self.options.reconnect = backoff;
        self
    }

    /// The circuit breakers' policy.
    pub fn breaker(mut self, policy: BreakerPolicy) -> Self {
        self.options.breaker = policy;
        self
    }

    /// Delays between retries.
    pub fn retry(mut self, backoff: Backoff) -> Self {
        self.options.retry = backoff;
        self
    }

    /// Follow a Meridian control plane's view (its admin URL) instead of checking roles here.
    pub fn control_plane(mut self, url: impl Into<String>, token: Option<String>) -> Self {
        self.options.control_plane = Some(url.into());
        self.options.control_plane_token = token;
        self
    }

    /// Connects (lazily: an unreachable node is not an error, the monitor keeps trying) and
    /// checks every node once, so that roles are known when this returns.
    pub async fn build(self) -> Result<crate::PoolManager> {
        let (nodes, options) = self.validate()?;
        Ok(crate::PoolManager::start(nodes, options).await)
    }

    fn validate(self) -> Result<(Vec<NodeSpec>, Options)> {
        if self.nodes.is_empty() {
            return Err(Error::Config {
                field: "nodes",
                message: "no node given; name at least the primary (DATABASE_URL)".into(),
            });
        }
        let o = &self.options;
        if o.max_connections == 0 || o.min_connections > o.max_connections {
            return Err(Error::Config {
                field: "max_connections",
                message: format!(
                    "must be at least 1 and at least min_connections ({}), got {}",
                    o.min_connections, o.max_connections
                ),
            });
        }
        for (field, value) in [
            ("check_interval", o.check_interval),
            ("check_timeout", o.check_timeout),
            ("acquire_timeout", o.acquire_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::Config {
                    field,
                    message: "must be longer than zero".into(),
                });
            }
        }
        // The given primary first: when two nodes both answer as primary from the start (an
        // old primary left running), the one named primary wins the tie.
        let mut given = self.nodes;
        given.sort_by_key(|(_, _, primary)| !primary);
        let mut nodes = Vec::new();
        for (field, url, _) in &given {
            let spec = NodeSpec::parse(field, url)?;
            if nodes.iter().any(|n: &NodeSpec| n.name == spec.name) {
                return Err(Error::Config {
                    field,
                    message: format!("{} is given twice; name each node once", spec.name),
                });
            }
            nodes.push(spec);
        }
        Ok((nodes, self.options))
    }
}

/// The builder that [`PoolManager::from_env`](crate::PoolManager::from_env) fills in from
/// `lookup` (the process environment there): `DATABASE_URL` (required), then
/// `DATABASE_REPLICA_URL` and `DATABASE_REPLICA_URLS` (comma-separated), and
/// `MERIDIAN_ADMIN_URL` / `MERIDIAN_ADMIN_TOKEN` to follow a control plane.
pub(crate) fn builder_from(lookup: impl Fn(&str) -> Option<String>) -> Result<Builder> {
    let present = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    let primary = present("DATABASE_URL").ok_or(Error::Config {
        field: "DATABASE_URL",
        message:
            "not set; set it to the primary's URL, postgres://user:password@host:port/database"
                .into(),
    })?;
    let mut builder = Builder::default().primary(primary);
    if let Some(url) = present("DATABASE_REPLICA_URL") {
        builder = builder.replica(url);
    }
    if let Some(urls) = present("DATABASE_REPLICA_URLS") {
        for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            builder = builder.replica(url);
        }
    }
    if let Some(url) = present("MERIDIAN_ADMIN_URL") {
        builder = builder.control_plane(url, present("MERIDIAN_ADMIN_TOKEN"));
    }
    Ok(builder)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn the_environment_names_the_primary_and_replicas() {
        let builder = builder_from(env(&[
            ("DATABASE_URL", "postgres://app:pw@db1:5432/app"),
            ("DATABASE_REPLICA_URL", "postgres://app:pw@db2:5432/app"),
            (
                "DATABASE_REPLICA_URLS",
                "postgres://app:pw@db3:5432/app, postgres://app:pw@db4:5433/app",
            ),
        ]))
        .unwrap();
        let (nodes, _) = builder.validate().unwrap();
        let names: Vec<&str> = nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "db1:5432/app",
                "db2:5432/app",
                "db3:5432/app",
                "db4:5433/app"
            ]
        );
        let (nodes, _) = Builder::default()
            .replica("postgres://app:pw@db2/app")
            .primary("postgres://app:pw@db1/app")
            .validate()
            .unwrap();
        assert_eq!(nodes[0].name, "db1:5432/app", "the primary comes first");
    }

    #[test]
    fn a_missing_primary_names_the_variable() {
        let Err(e) = builder_from(env(&[])) else {
            panic!("accepted")
        };
        assert!(e.to_string().contains("DATABASE_URL"), "{e}");
    }

    #[test]
    fn bad_settings_name_the_field_and_never_the_password() {
        let e = Builder::default()
            .primary("mysql://app:hunter2@db1/app")
            .build_sync_check()
            .unwrap_err();
        assert!(e.to_string().contains("primary"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = Builder::default()
            .primary("postgres://app:pw@db1/app")
            .replica("postgres://app:pw@db1/app")
            .build_sync_check()
            .unwrap_err();
        assert!(e.to_string().contains("given twice"), "{e}");
        let e = Builder::default()
            .primary("postgres://app:pw@db1/app")
            .max_connections(0)
            .build_sync_check()
            .unwrap_err();
        assert!(e.to_string().contains("max_connections"), "{e}");
        assert!(Builder::default().build_sync_check().is_err());
    }

    #[test]
    fn debug_output_redacts_credentials() {
        let (nodes, _) = Builder::default()
            .primary("postgres://app:hunter2@db1/app")
            .control_plane("http://m:9090", Some("s3cret".into()))
            .validate()
            .unwrap();
        let shown = format!("{nodes:?}");
        assert!(
            shown.contains("db1:5432/app") && !shown.contains("hunter2"),
            "{shown}"
        );
        let options = Options {
            control_plane_token: Some("s3cret".into()),
            ..Options::default()
        };
        let shown = format!("{options:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    impl Builder {
        fn build_sync_check(self) -> Result<()> {
            self.validate().map(|_| ())
        }
    }
}
