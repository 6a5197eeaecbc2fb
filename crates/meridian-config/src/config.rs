//! The validated configuration: what the proxy and the control plane read.
//!
//! Every value here has passed validation ([`crate::Config::load`] is the only way the crate
//! builds one), so consumers need no checks of their own: sizes are in range, names are unique and
//! well formed, paths are resolved (relative to the config file's directory when they came from
//! the file, as written when they came from the environment). "Never" for a timeout is `None`.
//!
//! Every type serializes (for the operator API's export) under the config file's key names and
//! in its spellings: durations as humantime text (`"300ms"`, `"2s"`), enums as their keywords,
//! addresses and paths as strings, "never" and "none" as the file writes them (`"0s"`, `""`),
//! settings that are merely unset (a region's `ssl`) as `null`. Secrets serialize as
//! `"<redacted>"` (see [`Secret`]), and so does `failover.rejoin_command`, a shell command that
//! may carry credentials. An export reads back through the file's parser, and holds no password.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::secret::{PasswordSpec, REDACTED, Secret};

/// The whole configuration of one Meridian process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Config {
    /// The proxy listener.
    pub listen: SocketAddr,
    /// The operator listener: metrics (and, later, the REST API and dashboard).
    pub admin_listen: SocketAddr,
    /// The directory of the embedded store.
    #[serde(serialize_with = "path")]
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
    /// The operator API's read endpoints (`/metrics`, `GET /api/database/*`) require
    /// `admin_token` too; the load-balancer checks (`/health`, `/primary`, `/replica`,
    /// `/liveness`, `/readiness`) stay open. Only `true` with an `admin_token`.
    pub admin_protect_reads: bool,
    /// Coordination of several Meridian instances through etcd; `None` = one instance on its
    /// embedded store.
    pub coordination: Option<CoordinationConfig>,
    /// Backups, the WAL archive and their retention; `None` = no `[backup]` section (the
    /// backup commands then need `--location`, and nothing watches archiving).
    pub backup: Option<BackupConfig>,
}

/// `[backup]`: where backups and archived WAL go, how long they are kept, what RPO is alarming.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackupConfig {
    /// Where base backups and their catalog live: a directory, `file:///dir` or
    /// `s3://bucket/prefix` (credentials and endpoint from the `AWS_*` environment).
    pub location: String,
    /// The WAL archive directory the nodes' `archive_command` writes into; `None` = no
    /// continuous archiving (backups restore to their own end only).
    #[serde(serialize_with = "optional_path")]
    pub wal_archive: Option<PathBuf>,
    /// `archive_timeout` set on the nodes: the longest a written but unarchived segment waits.
    #[serde(with = "humantime_serde")]
    pub archive_timeout: Duration,
    /// Alert when the oldest unarchived write is older than this, or archiving fails.
    #[serde(with = "humantime_serde")]
    pub max_rpo: Duration,
    /// Retention: keep at least this many backups (`None` = no count limit).
    pub keep: Option<u32>,
    /// Retention: keep backups younger than this (`None` = no age limit).
    #[serde(with = "humantime_serde")]
    pub keep_for: Option<Duration>,
    /// The `meridian` executable PostgreSQL runs as `archive_command`/`restore_command`
    /// (it must be executable by the server's OS user); `None` = the running one.
    #[serde(serialize_with = "optional_path")]
    pub meridian_bin: Option<PathBuf>,
}

/// `[coordination]`: several Meridian instances, one etcd.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CoordinationConfig {
    /// etcd client endpoints, `http://host:port` or `https://host:port`; never empty.
    pub etcd: Vec<String>,
    /// Key prefix of this cluster in etcd (one per cluster), without a trailing `/`.
    pub prefix: String,
    /// This instance's id among the cluster's instances; `None` = `<host name>:<listen port>`,
    /// resolved at start.
    pub instance: Option<String>,
    /// TTL of this instance's etcd lease: how long a dead leader goes unnoticed, and how long
    /// a proxy cut off from etcd keeps routing writes.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// etcd user, when etcd has authentication on.
    pub user: Option<String>,
    /// Its password.
    pub password: Option<Secret>,
    /// CA certificate to verify `https://` endpoints with (required for them).
    #[serde(serialize_with = "optional_path")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate, for an etcd that requires one (`--client-cert-auth`).
    #[serde(serialize_with = "optional_path")]
    pub cert: Option<PathBuf>,
    /// Its private key.
    #[serde(serialize_with = "optional_path")]
    pub key: Option<PathBuf>,
    /// A proxy fenced off from etcd keeps routing reads (to replicas); `false` = it routes
    /// nothing until its session is back.
    pub reads_when_fenced: bool,
    /// It serves clients (`proxy`): it binds `listen`.
    pub proxy: bool,
    /// It may lead (`control`): it campaigns, and fails over when elected.
    pub control: bool,
}

/// `[failover]`: detection, promotion and rejoin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailoverConfig {
    /// Fail over without an operator when the primary is confirmed dead.
    pub automatic: bool,
    /// Consecutive failed probes of the primary before it can be declared failed.
    pub failure_threshold: u32,
    /// Probe cadence of every node while the primary is suspect.
    #[serde(with = "humantime_serde")]
    pub confirm_interval: Duration,
    /// A replica that heard from the primary within this long proves it alive.
    #[serde(with = "humantime_serde")]
    pub receiver_timeout: Duration,
    /// Replicas further behind the primary than this many bytes are not promoted.
    pub max_lag_on_failover: u64,
    /// Least time between two automatic failovers.
    #[serde(with = "humantime_serde")]
    pub min_interval: Duration,
    /// Time allowed for one step (fence, promote, repoint, rejoin); a region's
    /// `failover_timeout` overrides it for that region's nodes.
    #[serde(with = "humantime_serde")]
    pub step_timeout: Duration,
    /// Directory of `pg_ctl` and `pg_rewind` for rejoining managed nodes; `None` = found on
    /// `PATH` or under `/usr/lib/postgresql`.
    #[serde(serialize_with = "optional_path")]
    pub pg_bin: Option<PathBuf>,
    /// Shell command that turns a node Meridian does not manage into a replica. Serialized as
    /// `"<redacted>"`: it may carry credentials (`PGPASSWORD=...`).
    #[serde(serialize_with = "redacted")]
    pub rejoin_command: Option<String>,
}

/// `[monitor]`: probes, health judgement, alert thresholds and history.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonitorConfig {
    /// Role the probes log in as; `None` = the first user's `server_user`.
    pub user: Option<String>,
    /// Its password; `None` = the first user's server password when `user` is unset.
    pub password: Option<Secret>,
    /// Database the probes connect to.
    pub database: String,
    /// How often each node is probed (a region's `probe_interval` overrides it).
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// How long one probe may take before it counts as failed.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
    /// First delay before reconnecting a lost probe connection; it doubles up to
    /// `reconnect_max` for `reconnect_attempts` attempts, then attempts return to the probe
    /// interval. Probes still report the node as failing in between.
    #[serde(with = "humantime_serde")]
    pub reconnect_initial: Duration,
    /// Longest delay between reconnection attempts.
    #[serde(with = "humantime_serde")]
    pub reconnect_max: Duration,
    /// Backed-off attempts before returning to the probe interval.
    pub reconnect_attempts: u32,
    /// Consecutive failed probes before a node is judged down.
    pub failures_to_down: u32,
    /// Probe latency that degrades a node (alert `endpoint_slow`, medium).
    #[serde(with = "humantime_serde")]
    pub slow_warning: Duration,
    /// Probe latency alerted as high.
    #[serde(with = "humantime_serde")]
    pub slow_critical: Duration,
    /// Replication lag alerted as medium.
    #[serde(with = "humantime_serde")]
    pub lag_warning: Duration,
    /// Replication lag alerted as high.
    #[serde(with = "humantime_serde")]
    pub lag_critical: Duration,
    /// Share of failed probes (over the last 20) alerted as medium.
    pub error_rate_warning: f64,
    /// Share of failed probes alerted as high.
    pub error_rate_critical: f64,
    /// How long probe samples are kept in the store.
    #[serde(with = "humantime_serde")]
    pub history_retention: Duration,
}

impl Eq for MonitorConfig {}

/// `[proxy]`: the client side of the proxy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProxyConfig {
    /// When a server connection returns to the pool.
    pub pool_mode: PoolMode,
    /// Client connections accepted at once; at least 1.
    pub max_client_connections: u32,
    /// Sent when a server connection returns to the pool; `None` when configured as "".
    #[serde(serialize_with = "none_as_empty")]
    pub server_reset_query: Option<String>,
    /// Time a client has to finish startup and authentication.
    #[serde(with = "humantime_serde")]
    pub client_login_timeout: Duration,
    /// How long open transactions may run on at a graceful shutdown.
    #[serde(with = "humantime_serde")]
    pub shutdown_timeout: Duration,
    /// Largest protocol message accepted from clients or servers, in bytes
    /// (1024 ..= 1 GiB).
    pub max_message_size: u32,
    /// How long a transaction that needs the primary waits for one during a failover (a
    /// paused view, or a primary that stopped answering) before it fails; more than 0.
    #[serde(with = "humantime_serde")]
    pub failover_buffer_timeout: Duration,
    /// Most sessions waiting that way at once; beyond it, SQLSTATE 53300. At least 1.
    pub failover_buffer_size: u32,
}

/// `[pool]`: server connection pools, one per (node, user, database).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolConfig {
    /// Idle server connections kept per pool.
    pub min_size: u32,
    /// Server connections per pool; at least 1 and at least `min_size`.
    pub max_size: u32,
    /// Time allowed to open a server connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a transaction waits for a server connection before SQLSTATE 53300.
    #[serde(with = "humantime_serde")]
    pub checkout_timeout: Duration,
    /// Idle server connections are closed after this; `None` = never.
    #[serde(serialize_with = "never_as_zero")]
    pub idle_timeout: Option<Duration>,
    /// Server connections are closed once this old; `None` = never.
    #[serde(serialize_with = "never_as_zero")]
    pub max_lifetime: Option<Duration>,
}

/// `[routing]`: read/write splitting, replica choice and read-your-writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoutingConfig {
    /// Send autocommit reads and `READ ONLY` transactions to replicas.
    pub read_write_split: bool,
    /// This proxy's region: its replicas are preferred for reads. Names one of `regions`.
    pub local_region: Option<String>,
    /// Replicas further behind the primary than this many bytes get no reads.
    pub max_replica_lag_bytes: u64,
    /// Replicas further behind than this get no reads (`max_replica_lag_seconds` in the file);
    /// more than 0.
    #[serde(rename = "max_replica_lag_seconds", with = "humantime_serde")]
    pub max_replica_lag: Duration,
    /// Whether reads may use the primary.
    pub primary_reads: PrimaryReads,
    /// Whether a session's reads see its writes.
    pub read_your_writes: ReadYourWrites,
    /// How long a read waits for a replica to replay the session's last write before it goes
    /// to the primary; more than 0, at most 10 s.
    #[serde(with = "humantime_serde")]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsConfig {
    /// PEM certificate chain.
    #[serde(serialize_with = "path")]
    pub cert: PathBuf,
    /// PEM private key.
    #[serde(serialize_with = "path")]
    pub key: PathBuf,
}

/// `[server_tls]`: TLS toward the PostgreSQL servers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerTlsConfig {
    /// The default mode; a region's `ssl` overrides it for that region's nodes.
    pub mode: ServerTlsMode,
    /// PEM roots used to verify servers; present whenever any node uses `verify-full`.
    #[serde(serialize_with = "optional_path")]
    pub root_cert: Option<PathBuf>,
}

/// One `[[users]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegionConfig {
    /// Unique, `[a-z0-9_-]+`.
    pub name: String,
    /// Higher is preferred for promotion and routing.
    pub priority: i32,
    /// How often the monitor probes this region's nodes; `None` = the monitor's default.
    #[serde(with = "humantime_serde")]
    pub probe_interval: Option<Duration>,
    /// Time allowed for each failover step on this region's nodes; `None` =
    /// `failover.step_timeout`.
    #[serde(with = "humantime_serde")]
    pub failover_timeout: Option<Duration>,
    /// TLS mode toward this region's nodes; `None` = `server_tls.mode`.
    pub ssl: Option<ServerTlsMode>,
    /// Never empty.
    pub nodes: Vec<NodeConfig>,
}

/// One `[[regions.nodes]]` entry: a PostgreSQL server. Its role is observed, never configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    #[serde(serialize_with = "optional_path")]
    pub data_dir: Option<PathBuf>,
}

/// A path as text; a name that is not UTF-8 shows U+FFFD rather than failing the export.
fn path<S: Serializer>(path: &Path, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&path.to_string_lossy())
}

/// [`path`], or `null`.
fn optional_path<S: Serializer>(path: &Option<PathBuf>, serializer: S) -> Result<S::Ok, S::Error> {
    match path {
        Some(path) => serializer.serialize_some(&*path.to_string_lossy()),
        None => serializer.serialize_none(),
    }
}

/// A timeout whose `None` means never, spelt as the file spells never: `"0s"`.
fn never_as_zero<S: Serializer>(
    timeout: &Option<Duration>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    humantime_serde::serialize(&timeout.unwrap_or(Duration::ZERO), serializer)
}

/// Text whose `None` was configured as `""`, spelt that way.
fn none_as_empty<S: Serializer>(value: &Option<String>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(value.as_deref().unwrap_or_default())
}

/// `"<redacted>"` when set, else `null`: for text that may hold credentials.
fn redacted<S: Serializer>(value: &Option<String>, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(_) => serializer.serialize_some(REDACTED),
        None => serializer.serialize_none(),
    }
}

/// Declares a config enum with its spellings, used alike by TOML, the environment and `Display`.
macro_rules! keyword_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal,)+ }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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
    use serde_json::{Value, json};

    const PATH: &str = "/etc/meridian/meridian.toml";

    /// Every secret of [`EVERYTHING`], none of which may appear in its serialization.
    const SECRETS: &[&str] = &[
        "app-password-1",
        "server-password-2",
        "monitor-password-3",
        "admin-token-4",
        "c3RvcmVkLWtleS01",
        "0123456789abcdef0123456789abcdef",
        "rejoin-password-6",
    ];

    /// A file that sets every kind of value, every secret among them.
    const EVERYTHING: &str = r#"
listen = "127.0.0.1:7432"
admin_listen = "[::1]:9931"
admin_token = "admin-token-4"
admin_protect_reads = true

[proxy]
pool_mode = "session"
server_reset_query = ""
failover_buffer_timeout = "2s"

[pool]
idle_timeout = "0s"
max_lifetime = "90m"

[routing]
max_replica_lag_seconds = "2s 500ms"
primary_reads = "never"
write_functions = ["audit_*"]

[tls]
cert = "server.crt"
key = "server.key"

[server_tls]
mode = "verify-full"
root_cert = "root.crt"

[monitor]
user = "meridian"
password = "monitor-password-3"
probe_interval = "300ms"

[failover]
rejoin_command = "PGPASSWORD=rejoin-password-6 make-replica {node}"

[[users]]
name = "app"
password = "app-password-1"
server_password = "server-password-2"

[[users]]
name = "verified"
password = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVkLWtleS01:c2VydmVyLWtleQ=="

[[users]]
name = "legacy"
auth = "md5"
password = "md50123456789abcdef0123456789abcdef"

[[regions]]
name = "us-east"
priority = 10
probe_interval = "2s"
ssl = "require"
[[regions.nodes]]
name = "pg1"
host = "10.0.0.5"
port = 5433
data_dir = "/var/lib/postgresql/17/main"
"#;

    fn load(toml: &str) -> Config {
        let env = crate::Environment::default();
        crate::load_text(Some((Path::new(PATH), toml)), &env)
            .unwrap_or_else(|errors| panic!("{errors}"))
    }

    /// `value` without its nulls (TOML has none: an unset key is absent).
    fn without_nulls(value: Value) -> Value {
        match value {
            Value::Object(map) => Value::Object(
                map.into_iter()
                    .filter(|(_, value)| !value.is_null())
                    .map(|(key, value)| (key, without_nulls(value)))
                    .collect(),
            ),
            Value::Array(items) => Value::Array(items.into_iter().map(without_nulls).collect()),
            other => other,
        }
    }

    /// Reads an export back through the file's own parser (`deny_unknown_fields`) and
    /// validation: it accepts only the file's key names and spellings.
    fn reread(json: Value) -> Config {
        let raw: crate::file::RawConfig =
            serde_json::from_value(without_nulls(json)).unwrap_or_else(|e| panic!("{e}"));
        crate::validate::validate(raw, &crate::origin::Origins::default(), Vec::new(), false)
            .unwrap_or_else(|errors| panic!("{errors}"))
    }

    #[test]
    fn serialization_redacts_every_secret() {
        let config = load(EVERYTHING);
        let text = serde_json::to_string(&config).unwrap();
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["admin_token"], "<redacted>");
        assert_eq!(json["monitor"]["password"], "<redacted>");
        assert_eq!(json["failover"]["rejoin_command"], "<redacted>");
        for user in 0..3 {
            assert_eq!(json["users"][user]["password"], "<redacted>", "user {user}");
        }
        assert_eq!(json["users"][0]["server_password"], "<redacted>");
        // Only a plaintext password doubles as the server password.
        assert_eq!(json["users"][1]["server_password"], Value::Null);
        // A key's path is not its contents.
        assert_eq!(json["tls"]["key"], "/etc/meridian/server.key");

        let minimal = serde_json::to_value(load(
            "[[regions]]\nname = \"r\"\n[[regions.nodes]]\nname = \"n\"\nhost = \"h\"\n",
        ))
        .unwrap();
        assert_eq!(minimal["admin_token"], Value::Null);
        assert_eq!(minimal["admin_protect_reads"], false);
        assert_eq!(minimal["monitor"]["password"], Value::Null);
        assert_eq!(minimal["failover"]["rejoin_command"], Value::Null);
        assert_eq!(minimal["tls"], Value::Null);
    }

    #[test]
    fn serialization_uses_the_file_keys_and_spellings() {
        let json = serde_json::to_value(load(EVERYTHING)).unwrap();
        assert_eq!(json["listen"], "127.0.0.1:7432");
        assert_eq!(json["admin_listen"], "[::1]:9931");
        assert_eq!(json["admin_protect_reads"], true);
        assert_eq!(json["data_dir"], "/etc/meridian/meridian-data");
        assert_eq!(json["monitor"]["probe_interval"], "300ms");
        assert_eq!(json["monitor"]["user"], "meridian");
        assert_eq!(json["monitor"]["error_rate_warning"], 0.05);
        assert_eq!(json["proxy"]["pool_mode"], "session");
        assert_eq!(json["proxy"]["failover_buffer_timeout"], "2s");
        assert_eq!(json["proxy"]["server_reset_query"], "");
        assert_eq!(json["pool"]["idle_timeout"], "0s");
        assert_eq!(json["pool"]["max_lifetime"], "1h 30m");
        assert_eq!(json["routing"]["max_replica_lag_seconds"], "2s 500ms");
        assert_eq!(json["routing"]["primary_reads"], "never");
        assert_eq!(json["routing"]["read_your_writes"], "session");
        assert_eq!(json["routing"]["causal_read_timeout"], "50ms");
        assert_eq!(json["routing"]["local_region"], Value::Null);
        assert_eq!(json["server_tls"]["mode"], "verify-full");
        assert_eq!(json["users"][0]["auth"], "scram-sha-256");
        assert_eq!(json["users"][2]["auth"], "md5");
        assert_eq!(json["failover"]["automatic"], true);
        assert_eq!(json["failover"]["min_interval"], "1m");
        assert_eq!(json["failover"]["pg_bin"], Value::Null);
        assert_eq!(
            json["regions"][0],
            json!({
                "name": "us-east",
                "priority": 10,
                "probe_interval": "2s",
                "failover_timeout": null,
                "ssl": "require",
                "nodes": [{
                    "name": "pg1",
                    "host": "10.0.0.5",
                    "port": 5433,
                    "no_failover": false,
                    "priority": 0,
                    "data_dir": "/var/lib/postgresql/17/main",
                }],
            })
        );
    }

    #[test]
    fn an_export_reads_back_as_the_same_config() {
        // Secrets come back as "<redacted>", so compare the settings that are not secret.
        let original = load(EVERYTHING);
        let mut back = reread(serde_json::to_value(&original).unwrap());
        assert_eq!(
            back.admin_token,
            original.admin_token.as_ref().map(|_| Secret::new(REDACTED))
        );
        assert_eq!(back.users.len(), original.users.len());
        back.admin_token = original.admin_token.clone();
        back.monitor.password = original.monitor.password.clone();
        back.failover.rejoin_command = original.failover.rejoin_command.clone();
        back.users = original.users.clone();
        assert_eq!(back, original);

        // With nothing secret in it, the whole configuration comes back.
        let plain = load(
            "[proxy]\nserver_reset_query = \"\"\n[pool]\nidle_timeout = \"0s\"\n\
             [[users]]\nname = \"local\"\nauth = \"trust\"\n\
             [[regions]]\nname = \"r\"\n[[regions.nodes]]\nname = \"n\"\nhost = \"h\"\n",
        );
        assert_eq!(reread(serde_json::to_value(&plain).unwrap()), plain);
    }

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
