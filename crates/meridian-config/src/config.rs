//! The validated configuration: what the proxy and the control plane read.
//!
//! Every value here has passed validation ([`crate::Config::load`] is the only way the crate
//! builds one), so consumers need no checks of their own: sizes are in range, names are unique and
//! well formed, paths are resolved (relative to the config file's directory when they came from
//! the file, as written when they came from the environment). "Never" for a timeout is `None`.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::secret::{PasswordSpec, Secret};

/// The whole configuration of one Meridian process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The proxy listener.
    pub listen: SocketAddr,
    /// The operator listener: metrics (and, later, the REST API and dashboard).
    pub admin_listen: SocketAddr,
    /// The directory of the embedded store.
    pub data_dir: PathBuf,
    /// Client-facing proxy settings.
    pub proxy: ProxyConfig,
    /// Server connection pools.
    pub pool: PoolConfig,
    /// Read/write splitting, replica choice and read-your-writes.
    pub routing: RoutingConfig,
    /// TLS for clients connecting to Meridian; `None` = plaintext only.
    pub tls: Option<TlsConfig>,
    /// TLS from Meridian to the PostgreSQL servers.
    pub server_tls: ServerTlsConfig,
    /// Who may connect through Meridian.
    pub users: Vec<UserConfig>,
    /// The cluster's regions and their nodes; never empty, and no region is empty.
    pub regions: Vec<RegionConfig>,
    /// How the control plane watches the nodes.
    pub monitor: MonitorConfig,
    /// When and how the control plane replaces the primary.
    pub failover: FailoverConfig,
    /// Bearer token the operator API's commands (switchover, failover, rejoin) require; `None`
    /// = every command is refused (403), whatever address `admin_listen` is.
    pub admin_token: Option<Secret>,
}

/// `[failover]`: detection, promotion and rejoin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailoverConfig {
    /// Fail over without an operator when the primary is confirmed dead.
    pub automatic: bool,
    /// Consecutive failed probes of the primary before it can be declared failed.
    pub failure_threshold: u32,
    /// Probe cadence of every node while the primary is suspect.
    pub confirm_interval: Duration,
    /// A replica that heard from the primary within this long proves it alive.
    pub receiver_timeout: Duration,
    /// Replicas further behind the primary than this many bytes are not promoted.
    pub max_lag_on_failover: u64,
    /// Least time between two automatic failovers.
    pub min_interval: Duration,
    /// Time allowed for one step (fence, promote, repoint, rejoin); a region's
    /// `failover_timeout` overrides it for that region's nodes.
    pub step_timeout: Duration,
    /// Directory of `pg_ctl` and `pg_rewind` for rejoining managed nodes; `None` = found on
    /// `PATH` or under `/usr/lib/postgresql`.
    pub pg_bin: Option<PathBuf>,
    /// Shell command that turns a node Meridian does not manage into a replica.
    pub rejoin_command: Option<String>,
}

/// `[monitor]`: probes, health judgement, alert thresholds and history.
#[derive(Debug, Clone, PartialEq)]
pub struct MonitorConfig {
    /// Role the probes log in as; `None` = the first user's `server_user`.
    pub user: Option<String>,
    /// Its password; `None` = the first user's server password when `user` is unset.
    pub password: Option<Secret>,
    /// Database the probes connect to.
    pub database: String,
    /// How often each node is probed (a region's `probe_interval` overrides it).
    pub probe_interval: Duration,
    /// How long one probe may take before it counts as failed.
    pub probe_timeout: Duration,
    /// First delay before reconnecting a lost probe connection; it doubles up to
    /// `reconnect_max` for `reconnect_attempts` attempts, then attempts return to the probe
    /// interval. Probes still report the node as failing in between.
    pub reconnect_initial: Duration,
    /// Longest delay between reconnection attempts.
    pub reconnect_max: Duration,
    /// Backed-off attempts before returning to the probe interval.
    pub reconnect_attempts: u32,
    /// Consecutive failed probes before a node is judged down.
    pub failures_to_down: u32,
    /// Probe latency that degrades a node (alert `endpoint_slow`, medium).
    pub slow_warning: Duration,
    /// Probe latency alerted as high.
    pub slow_critical: Duration,
    /// Replication lag alerted as medium.
    pub lag_warning: Duration,
    /// Replication lag alerted as high.
    pub lag_critical: Duration,
    /// Share of failed probes (over the last 20) alerted as medium.
    pub error_rate_warning: f64,
    /// Share of failed probes alerted as high.
    pub error_rate_critical: f64,
    /// How long probe samples are kept in the store.
    pub history_retention: Duration,
}

impl Eq for MonitorConfig {}

/// `[proxy]`: the client side of the proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    /// When a server connection returns to the pool.
    pub pool_mode: PoolMode,
    /// Client connections accepted at once; at least 1.
    pub max_client_connections: u32,
    /// Sent when a server connection returns to the pool; `None` when configured as "".
    pub server_reset_query: Option<String>,
    /// Time a client has to finish startup and authentication.
    pub client_login_timeout: Duration,
    /// How long open transactions may run on at a graceful shutdown.
    pub shutdown_timeout: Duration,
    /// Largest protocol message accepted from clients or servers, in bytes
    /// (1024 ..= 1 GiB).
    pub max_message_size: u32,
    /// How long a transaction that needs the primary waits for one during a failover (a
    /// paused view, or a primary that stopped answering) before it fails; more than 0.
    pub failover_buffer_timeout: Duration,
    /// Most sessions waiting that way at once; beyond it, SQLSTATE 53300. At least 1.
    pub failover_buffer_size: u32,
}

/// `[pool]`: server connection pools, one per (node, user, database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Idle server connections kept per pool.
    pub min_size: u32,
    /// Server connections per pool; at least 1 and at least `min_size`.
    pub max_size: u32,
    /// Time allowed to open a server connection.
    pub connect_timeout: Duration,
    /// How long a transaction waits for a server connection before SQLSTATE 53300.
    pub checkout_timeout: Duration,
    /// Idle server connections are closed after this; `None` = never.
    pub idle_timeout: Option<Duration>,
    /// Server connections are closed once this old; `None` = never.
    pub max_lifetime: Option<Duration>,
}

/// `[routing]`: read/write splitting, replica choice and read-your-writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutingConfig {
    /// Send autocommit reads and `READ ONLY` transactions to replicas.
    pub read_write_split: bool,
    /// This proxy's region: its replicas are preferred for reads. Names one of `regions`.
    pub local_region: Option<String>,
    /// Replicas further behind the primary than this many bytes get no reads.
    pub max_replica_lag_bytes: u64,
    /// Replicas further behind than this get no reads (`max_replica_lag_seconds` in the file);
    /// more than 0.
    pub max_replica_lag: Duration,
    /// Whether reads may use the primary.
    pub primary_reads: PrimaryReads,
    /// Whether a session's reads see its writes.
    pub read_your_writes: ReadYourWrites,
    /// How long a read waits for a replica to replay the session's last write before it goes
    /// to the primary; more than 0, at most 10 s.
    pub causal_read_timeout: Duration,
    /// A session-level `SET` pins the session to its server connection (otherwise the setting
    /// lasts for the transaction only).
    pub pin_session_settings: bool,
    /// Side-effecting function name patterns added to the built-in list: no schema, `*` as a
    /// wildcard; each is 1 to 63 bytes of letters, digits, `_`, `$` and `*`, not starting with a
    /// digit or `$`.
    pub write_functions: Vec<String>,
}

impl Default for RoutingConfig {
    /// The defaults `[routing]` takes when absent.
    fn default() -> RoutingConfig {
        RoutingConfig {
            read_write_split: true,
            local_region: None,
            max_replica_lag_bytes: crate::defaults::MAX_REPLICA_LAG_BYTES as u64,
            max_replica_lag: crate::defaults::MAX_REPLICA_LAG,
            primary_reads: PrimaryReads::Fallback,
            read_your_writes: ReadYourWrites::Session,
            causal_read_timeout: crate::defaults::CAUSAL_READ_TIMEOUT,
            pin_session_settings: false,
            write_functions: Vec::new(),
        }
    }
}

/// `[tls]`: the certificate Meridian presents to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[server_tls]`: TLS toward the PostgreSQL servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsConfig {
    /// The default mode; a region's `ssl` overrides it for that region's nodes.
    pub mode: ServerTlsMode,
    /// PEM roots used to verify servers; present whenever any node uses `verify-full`.
    pub root_cert: Option<PathBuf>,
}

/// One `[[users]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserConfig {
    /// The user name clients log in with.
    pub name: String,
    /// How the client's password is checked; `None` only with [`AuthMethod::Trust`].
    pub password: Option<PasswordSpec>,
    /// The client authentication method.
    pub auth: AuthMethod,
    /// The role used on the PostgreSQL servers.
    pub server_user: String,
    /// The password toward the servers: `server_password`, else the plaintext `password`;
    /// `None` when neither exists (the servers must then accept the role without a password).
    pub server_password: Option<Secret>,
}

/// One `[[regions]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionConfig {
    /// Unique, `[a-z0-9_-]+`.
    pub name: String,
    /// Higher is preferred for promotion and routing.
    pub priority: i32,
    /// How often the monitor probes this region's nodes; `None` = the monitor's default.
    pub probe_interval: Option<Duration>,
    /// Time allowed for each failover step on this region's nodes; `None` =
    /// `failover.step_timeout`.
    pub failover_timeout: Option<Duration>,
    /// TLS mode toward this region's nodes; `None` = `server_tls.mode`.
    pub ssl: Option<ServerTlsMode>,
    /// Never empty.
    pub nodes: Vec<NodeConfig>,
}

/// One `[[regions.nodes]]` entry: a PostgreSQL server. Its role is observed, never configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Unique across the whole cluster, `[a-z0-9_-]+`.
    pub name: String,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// 1..=65535.
    pub port: u16,
    /// Never promote this node (e.g. a reporting replica).
    pub no_failover: bool,
    /// Preference among nodes of equal data and region priority; higher is preferred.
    pub priority: i32,
    /// Its data directory, when it lives on Meridian's host: lets Meridian rejoin it as a
    /// replica (`pg_rewind`, `pg_ctl`) after a failover or switchover.
    pub data_dir: Option<PathBuf>,
}

/// Declares a config enum with its spellings, used alike by TOML, the environment and `Display`.
macro_rules! keyword_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize)]
        pub enum $name {
            $($(#[$vmeta])* #[serde(rename = $text)] $variant,)+
        }

        impl $name {
            /// The accepted spellings, in declaration order.
            pub const KEYWORDS: &[&str] = &[$($text),+];

            /// The spelling of this value.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = UnknownKeyword;

            fn from_str(text: &str) -> Result<Self, UnknownKeyword> {
                match text {
                    $($text => Ok($name::$variant),)+
                    _ => Err(UnknownKeyword { expected: Self::KEYWORDS }),
                }
            }
        }
    };
}

keyword_enum! {
    /// `proxy.pool_mode`: when a server connection returns to the pool.
    PoolMode {
        /// At the end of each transaction (the default).
        Transaction = "transaction",
        /// When the client disconnects.
        Session = "session",
    }
}

keyword_enum! {
    /// TLS toward a server, with libpq's `sslmode` meanings.
    ServerTlsMode {
        /// Never TLS.
        Disable = "disable",
        /// TLS when the server offers it (the default).
        Prefer = "prefer",
        /// TLS always, certificate not verified.
        Require = "require",
        /// TLS always, certificate chain and host name verified against `server_tls.root_cert`.
        VerifyFull = "verify-full",
    }
}

keyword_enum! {
    /// `users[].auth`: how Meridian checks a client's password.
    AuthMethod {
        /// SCRAM-SHA-256 (the default).
        ScramSha256 = "scram-sha-256",
        /// md5 (weaker; for old drivers).
        Md5 = "md5",
        /// No password: loopback listeners only.
        Trust = "trust",
    }
}

keyword_enum! {
    /// `routing.primary_reads`: whether reads may use the primary.
    PrimaryReads {
        /// Never: a read no replica can serve fails.
        Never = "never",
        /// Only when no replica qualifies (the default).
        Fallback = "fallback",
        /// Always: the primary competes with the replicas for every read.
        Always = "always",
    }
}

keyword_enum! {
    /// `routing.read_your_writes`: which writes a read must see when it goes to a replica.
    ReadYourWrites {
        /// None: any replica under the lag ceilings may serve a read.
        Off = "off",
        /// The session's own last write (the default).
        Session = "session",
        /// The last write through this proxy, from any session.
        Global = "global",
    }
}

/// The text matched none of an enum's spellings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKeyword {
    /// The accepted spellings.
    pub expected: &'static [&'static str],
}

impl fmt::Display for UnknownKeyword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("must be one of ")?;
        for (i, keyword) in self.expected.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "\"{keyword}\"")?;
        }
        Ok(())
    }
}

impl std::error::Error for UnknownKeyword {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keywords_round_trip() {
        for text in ServerTlsMode::KEYWORDS {
            assert_eq!(text.parse::<ServerTlsMode>().unwrap().as_str(), *text);
        }
        assert_eq!("session".parse(), Ok(PoolMode::Session));
        assert_eq!("md5".parse(), Ok(AuthMethod::Md5));
        assert_eq!("always".parse(), Ok(PrimaryReads::Always));
        assert_eq!(ReadYourWrites::Global.as_str(), "global");
        let err = "scram".parse::<AuthMethod>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"must be one of "scram-sha-256", "md5", "trust""#
        );
    }
}
