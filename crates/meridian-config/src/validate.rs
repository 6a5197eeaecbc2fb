//! From the settings as written (file, then environment) to a [`Config`]: defaults, ranges,
//! uniqueness, cross-field rules.
//!
//! Every rule is checked and every failure collected, so one run shows the user all there is to
//! fix. A failure names the field as the user wrote it (see `origin`), quotes the offending value
//! unless it is a secret, and says how to fix it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::config::{
    AuthMethod, BackupConfig, Config, CoordinationConfig, FailoverConfig, MonitorConfig,
    NodeConfig, PoolConfig, PoolMode, PrimaryReads, ProxyConfig, ReadYourWrites, RegionConfig,
    RoutingConfig, ServerTlsConfig, ServerTlsMode, TlsConfig, UserConfig,
};
use crate::defaults;
use crate::error::{ConfigError, ConfigErrors};
use crate::file::{
    RawBackup, RawConfig, RawCoordination, RawFailover, RawMonitor, RawNode, RawPool, RawProxy,
    RawRegion, RawRouting, RawUser,
};
use crate::origin::Origins;
use crate::secret::PasswordSpec;

const MIN_MESSAGE_SIZE: i64 = 1024;
const MAX_MESSAGE_SIZE: i64 = 1024 * 1024 * 1024;
const MAX_CAUSAL_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// PostgreSQL's longest identifier (NAMEDATALEN - 1), in bytes.
const MAX_IDENTIFIER_BYTES: usize = 63;

/// Validates `raw`. `errors` holds the problems found before (environment values); they are
/// returned together with the ones found here. `topology_reported` says that problems with the
/// environment's topology are among them, so that an empty `regions` is not reported again.
pub(crate) fn validate(
    raw: RawConfig,
    origins: &Origins,
    errors: Vec<ConfigError>,
    topology_reported: bool,
) -> Result<Config, ConfigErrors> {
    let mut check = Checker { origins, errors };
    let listen = check.listen(raw.listen.as_deref());
    let admin_listen = check.address(
        "admin_listen",
        raw.admin_listen
            .as_deref()
            .unwrap_or(defaults::ADMIN_LISTEN),
        "127.0.0.1:9930",
    );
    let monitor = check.monitor(raw.monitor);
    let failover = check.failover(raw.failover);
    let proxy = check.proxy(raw.proxy);
    let pool = check.pool(raw.pool);
    let tls = raw.tls.and_then(|tls| check.tls(tls.cert, tls.key));
    let server_tls = ServerTlsConfig {
        mode: raw.server_tls.mode.unwrap_or(ServerTlsMode::Prefer),
        root_cert: raw.server_tls.root_cert,
    };
    if server_tls.mode == ServerTlsMode::VerifyFull {
        check.root_cert_present(&server_tls, "server_tls.mode");
    }
    let users = check.users(raw.users, listen);
    let regions = check.regions(raw.regions, &server_tls, topology_reported);
    let routing = check.routing(raw.routing, &regions);
    let admin_token = raw.admin_token.filter(|token| !token.expose().is_empty());
    let admin_protect_reads = raw.admin_protect_reads.unwrap_or(false);
    if admin_protect_reads && admin_token.is_none() {
        check.fail(
            "admin_protect_reads",
            Some("true".to_owned()),
            "needs admin_token (or MERIDIAN_ADMIN_TOKEN): without a token every read \
             (/metrics, GET /api/database/*) would be refused; set a token, or leave \
             admin_protect_reads off",
        );
    }
    let coordination = raw.coordination.map(|raw| check.coordination(raw));
    let backup = raw.backup.map(|raw| check.backup(raw));
    if !check.errors.is_empty() {
        return Err(ConfigErrors(check.errors));
    }
    Ok(Config {
        coordination,
        backup,
        listen: listen.unwrap_or_else(|| defaults::LISTEN.parse().expect("valid default")),
        admin_listen: admin_listen
            .unwrap_or_else(|| defaults::ADMIN_LISTEN.parse().expect("valid default")),
        monitor,
        failover,
        admin_token,
        admin_protect_reads,
        data_dir: raw
            .data_dir
            .unwrap_or_else(|| PathBuf::from(defaults::DATA_DIR)),
        proxy,
        pool,
        routing,
        tls,
        server_tls,
        users,
        regions,
    })
}

struct Checker<'a> {
    origins: &'a Origins,
    errors: Vec<ConfigError>,
}

impl Checker<'_> {
    fn fail(&mut self, path: &str, value: Option<String>, problem: impl Into<String>) {
        self.errors.push(ConfigError::invalid(
            self.origins.label(path),
            value,
            problem,
        ));
    }

    /// `value` if it lies in `min..=max`, else an error whose problem is `why` (the default is
    /// returned so that checking can go on).
    fn integer<T: TryFrom<i64> + Default>(
        &mut self,
        path: &str,
        value: i64,
        min: i64,
        max: i64,
        why: impl FnOnce() -> String,
    ) -> T {
        if (min..=max).contains(&value)
            && let Ok(value) = T::try_from(value)
        {
            return value;
        }
        self.fail(path, Some(value.to_string()), why());
        T::default()
    }

    fn positive(&mut self, path: &str, value: Duration, what: &str) -> Duration {
        if value.is_zero() {
            self.fail(
                path,
                Some("\"0s\"".to_owned()),
                format!("must be longer than 0s ({what})"),
            );
        }
        value
    }

    fn listen(&mut self, listen: Option<&str>) -> Option<SocketAddr> {
        self.address(
            "listen",
            listen.unwrap_or(defaults::LISTEN),
            "127.0.0.1:6432",
        )
    }

    fn address(&mut self, path: &str, text: &str, example: &str) -> Option<SocketAddr> {
        let parsed = text.trim().parse().ok();
        if parsed.is_none() {
            let port = example.rsplit(':').next().unwrap_or_default();
            self.fail(
                path,
                Some(format!("{text:?}")),
                format!(
                    "must be an IP address and a port, e.g. \"{example}\", \"0.0.0.0:{port}\" or \
                     \"[::1]:{port}\" (host names are not resolved)"
                ),
            );
        }
        parsed
    }

    fn monitor(&mut self, raw: RawMonitor) -> MonitorConfig {
        let duration = |value: Option<Duration>, default: Duration| value.unwrap_or(default);
        let probe_interval = self.positive(
            "monitor.probe_interval",
            duration(raw.probe_interval, defaults::PROBE_INTERVAL),
            "how often nodes are probed",
        );
        let probe_timeout = self.positive(
            "monitor.probe_timeout",
            duration(raw.probe_timeout, defaults::PROBE_TIMEOUT),
            "how long a probe may take",
        );
        let reconnect_initial = self.positive(
            "monitor.reconnect_initial",
            duration(raw.reconnect_initial, defaults::RECONNECT_INITIAL),
            "first delay before reconnecting a probe",
        );
        let reconnect_max = duration(raw.reconnect_max, defaults::RECONNECT_MAX);
        if reconnect_max < reconnect_initial {
            self.fail(
                "monitor.reconnect_max",
                Some(format!(
                    "{:?}",
                    humantime::format_duration(reconnect_max).to_string()
                )),
                "must be at least monitor.reconnect_initial",
            );
        }
        let reconnect_attempts = self.integer(
            "monitor.reconnect_attempts",
            raw.reconnect_attempts
                .unwrap_or(defaults::RECONNECT_ATTEMPTS),
            0,
            100,
            || "must be between 0 and 100".to_owned(),
        );
        let failures_to_down = self.integer(
            "monitor.failures_to_down",
            raw.failures_to_down.unwrap_or(defaults::FAILURES_TO_DOWN),
            1,
            100,
            || {
                "must be between 1 and 100 (consecutive failed probes before a node is down)"
                    .to_owned()
            },
        );
        let slow_warning = self.positive(
            "monitor.slow_warning",
            duration(raw.slow_warning, defaults::SLOW_WARNING),
            "probe latency that degrades a node",
        );
        let slow_critical = duration(raw.slow_critical, defaults::SLOW_CRITICAL);
        if slow_critical < slow_warning {
            self.fail(
                "monitor.slow_critical",
                None,
                "must be at least monitor.slow_warning",
            );
        }
        let lag_warning = self.positive(
            "monitor.lag_warning",
            duration(raw.lag_warning, defaults::LAG_WARNING),
            "replication lag alerted as medium",
        );
        let lag_critical = duration(raw.lag_critical, defaults::LAG_CRITICAL);
        if lag_critical < lag_warning {
            self.fail(
                "monitor.lag_critical",
                None,
                "must be at least monitor.lag_warning",
            );
        }
        let mut rate = |path: &str, value: f64| {
            if !(0.0..=1.0).contains(&value) || value.is_nan() {
                self.fail(
                    path,
                    Some(value.to_string()),
                    "must be a fraction between 0 and 1, e.g. 0.05 for 5 %",
                );
            }
            value
        };
        let error_rate_warning = rate(
            "monitor.error_rate_warning",
            raw.error_rate_warning
                .unwrap_or(defaults::ERROR_RATE_WARNING),
        );
        let error_rate_critical = rate(
            "monitor.error_rate_critical",
            raw.error_rate_critical
                .unwrap_or(defaults::ERROR_RATE_CRITICAL),
        );
        if error_rate_critical < error_rate_warning {
            self.fail(
                "monitor.error_rate_critical",
                None,
                "must be at least monitor.error_rate_warning",
            );
        }
        let history_retention = self.positive(
            "monitor.history_retention",
            duration(raw.history_retention, defaults::HISTORY_RETENTION),
            "how long probe samples are kept",
        );
        if raw.password.is_some() && raw.user.is_none() {
            self.fail(
                "monitor.password",
                None,
                "set monitor.user too: the password is for that role",
            );
        }
        MonitorConfig {
            user: raw.user.filter(|u| !u.is_empty()),
            password: raw.password,
            database: raw
                .database
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| defaults::MONITOR_DATABASE.to_owned()),
            probe_interval,
            probe_timeout,
            reconnect_initial,
            reconnect_max,
            reconnect_attempts,
            failures_to_down,
            slow_warning,
            slow_critical,
            lag_warning,
            lag_critical,
            error_rate_warning,
            error_rate_critical,
            history_retention,
        }
    }

    fn backup(&mut self, raw: RawBackup) -> BackupConfig {
        let location = raw.location.unwrap_or_default();
        if location.trim().is_empty() {
            self.fail(
                "backup.location",
                None,
                "is required in [backup]: a directory, file:///dir or s3://bucket/prefix",
            );
        } else if let Some((scheme, rest)) = location.split_once("://")
            && (!matches!(scheme, "file" | "s3") || rest.is_empty() || rest.contains('@'))
        {
            self.fail(
                "backup.location",
                Some(format!("{:?}", crate::redact_url(&location))),
                "must be a directory, file:///dir or s3://bucket/prefix, with no credentials in \
                 it (S3 credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
            );
        }
        if let Some(dir) = &raw.wal_archive
            && dir.as_os_str().is_empty()
        {
            self.fail(
                "backup.wal_archive",
                Some("\"\"".to_owned()),
                "must be the archive directory's path (or be left out: no WAL archiving)",
            );
        }
        let keep = match raw.keep {
            None => None,
            Some(n) if (1..=i64::from(u32::MAX)).contains(&n) => Some(n as u32),
            Some(n) => {
                self.fail(
                    "backup.keep",
                    Some(n.to_string()),
                    "must be at least 1 (the newest backup is always kept); leave it out for \
                     no count limit",
                );
                None
            }
        };
        let archive_timeout = raw.archive_timeout.unwrap_or(defaults::ARCHIVE_TIMEOUT);
        if archive_timeout < Duration::from_secs(1) {
            self.fail(
                "backup.archive_timeout",
                Some(format!(
                    "{:?}",
                    humantime::format_duration(archive_timeout).to_string()
                )),
                "must be at least 1s (PostgreSQL's archive_timeout is whole seconds; 0 would \
                 turn it off)",
            );
        }
        let max_rpo = raw.max_rpo.unwrap_or(defaults::MAX_RPO);
        if max_rpo <= archive_timeout {
            self.fail(
                "backup.max_rpo",
                Some(format!(
                    "{:?}",
                    humantime::format_duration(max_rpo).to_string()
                )),
                "must be longer than backup.archive_timeout, which delays every segment's \
                 archiving by up to that much even when all is well",
            );
        }
        BackupConfig {
            location,
            wal_archive: raw.wal_archive,
            archive_timeout,
            max_rpo,
            keep,
            keep_for: raw.keep_for,
            meridian_bin: raw.meridian_bin,
        }
    }

    fn coordination(&mut self, raw: RawCoordination) -> CoordinationConfig {
        if raw.etcd.is_empty() {
            self.fail(
                "coordination.etcd",
                Some("[]".to_owned()),
                "needs at least one etcd endpoint, e.g. [\"http://10.0.0.5:2379\"]; remove \
                 [coordination] to run a single instance on its embedded store",
            );
        }
        for endpoint in &raw.etcd {
            let scheme_ok = endpoint.starts_with("http://") || endpoint.starts_with("https://");
            let host = endpoint
                .split_once("://")
                .map(|(_, rest)| rest)
                .unwrap_or("");
            if !scheme_ok || host.is_empty() || host.contains('/') || host.contains('@') {
                self.fail(
                    "coordination.etcd",
                    // An endpoint written with credentials must not echo them.
                    Some(if endpoint.contains('@') {
                        format!("{:?}", crate::redact_url(endpoint))
                    } else {
                        format!("{endpoint:?}")
                    }),
                    "each endpoint must be http://host:port or https://host:port, with no path \
                     and no credentials (set coordination.user and coordination.password)",
                );
            }
        }
        let prefix = raw
            .prefix
            .unwrap_or_else(|| defaults::ETCD_PREFIX.to_owned());
        let prefix = prefix.trim_end_matches('/').to_owned();
        if !prefix.starts_with('/') || prefix.len() < 2 {
            self.fail(
                "coordination.prefix",
                Some(format!("{prefix:?}")),
                "must be a key path such as \"/meridian/orders\" (one per cluster)",
            );
        }
        let instance = raw.instance.filter(|i| !i.trim().is_empty());
        if let Some(instance) = &instance
            && !instance
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.:".contains(c))
        {
            self.fail(
                "coordination.instance",
                Some(format!("{instance:?}")),
                "may hold letters, digits and - _ . : only (it becomes part of etcd keys)",
            );
        }
        let lease_ttl = raw.lease_ttl.unwrap_or(defaults::LEASE_TTL);
        if lease_ttl < std::time::Duration::from_secs(2) {
            self.fail(
                "coordination.lease_ttl",
                Some(format!(
                    "{:?}",
                    humantime::format_duration(lease_ttl).to_string()
                )),
                "must be at least 2s (etcd grants whole seconds, and a proxy stops writes a \
                 margin before its lease can expire)",
            );
        }
        let https = raw.etcd.iter().any(|e| e.starts_with("https://"));
        if https && raw.ca_cert.is_none() {
            self.fail(
                "coordination.ca_cert",
                None,
                "https:// etcd endpoints need the CA certificate that signed etcd's: set \
                 coordination.ca_cert to its PEM file",
            );
        }
        if raw.cert.is_some() != raw.key.is_some() {
            let (field, missing) = if raw.cert.is_some() {
                ("coordination.key", "coordination.cert")
            } else {
                ("coordination.cert", "coordination.key")
            };
            self.fail(
                field,
                None,
                format!(
                    "{missing} is set: a client certificate needs both cert and key (PEM files)"
                ),
            );
        }
        if (raw.cert.is_some() || raw.ca_cert.is_some()) && !https {
            self.fail(
                "coordination.etcd",
                None,
                "ca_cert, cert and key apply to https:// endpoints; write the endpoints as \
                 https://host:port",
            );
        }
        let roles = raw
            .roles
            .unwrap_or_else(|| vec!["proxy".to_owned(), "control".to_owned()]);
        if roles.is_empty() || roles.iter().any(|r| r != "proxy" && r != "control") {
            self.fail(
                "coordination.roles",
                Some(format!("{roles:?}")),
                "must list \"proxy\" (serves clients), \"control\" (may lead and fail over), or \
                 both",
            );
        }
        if raw.password.is_some() && raw.user.is_none() {
            self.fail(
                "coordination.password",
                None,
                "needs coordination.user (the etcd user the password belongs to)",
            );
        }
        CoordinationConfig {
            etcd: raw.etcd,
            prefix,
            instance,
            lease_ttl,
            user: raw.user,
            password: raw.password,
            ca_cert: raw.ca_cert,
            cert: raw.cert,
            key: raw.key,
            proxy: roles.iter().any(|r| r == "proxy"),
            control: roles.iter().any(|r| r == "control"),
            reads_when_fenced: raw.reads_when_fenced.unwrap_or(true),
        }
    }

    fn failover(&mut self, raw: RawFailover) -> FailoverConfig {
        let duration = |value: Option<Duration>, default: Duration| value.unwrap_or(default);
        let failure_threshold = self.integer(
            "failover.failure_threshold",
            raw.failure_threshold.unwrap_or(defaults::FAILURE_THRESHOLD),
            1,
            100,
            || {
                "must be between 1 and 100 (consecutive failed probes before the primary can \
                 be declared failed)"
                    .to_owned()
            },
        );
        let confirm_interval = self.positive(
            "failover.confirm_interval",
            duration(raw.confirm_interval, defaults::CONFIRM_INTERVAL),
            "probe cadence while the primary is suspect",
        );
        let receiver_timeout = self.positive(
            "failover.receiver_timeout",
            duration(raw.receiver_timeout, defaults::RECEIVER_TIMEOUT),
            "how recently a replica must have heard from the primary",
        );
        let max_lag_on_failover = self.integer(
            "failover.max_lag_on_failover",
            raw.max_lag_on_failover
                .unwrap_or(defaults::MAX_LAG_ON_FAILOVER),
            0,
            i64::MAX,
            || "must be a number of bytes, 0 or more (e.g. 16777216 for 16 MiB)".to_owned(),
        );
        let step_timeout = self.positive(
            "failover.step_timeout",
            duration(raw.step_timeout, defaults::STEP_TIMEOUT),
            "time allowed for one failover step",
        );
        let rejoin_command = raw.rejoin_command.filter(|c| !c.trim().is_empty());
        if let Some(command) = &rejoin_command {
            let known = [
                "{node}",
                "{host}",
                "{port}",
                "{primary_host}",
                "{primary_port}",
            ];
            let mut rest = command.as_str();
            while let Some(open) = rest.find('{') {
                let tail = &rest[open..];
                let end = tail.find('}').map_or(tail.len(), |close| close + 1);
                let placeholder = &tail[..end];
                if !known.contains(&placeholder) {
                    self.fail(
                        "failover.rejoin_command",
                        Some(format!("{command:?}")),
                        format!(
                            "unknown placeholder {placeholder}: use {}",
                            known.join(", ")
                        ),
                    );
                    break;
                }
                rest = &tail[end..];
            }
        }
        FailoverConfig {
            automatic: raw.automatic.unwrap_or(true),
            failure_threshold,
            confirm_interval,
            receiver_timeout,
            max_lag_on_failover,
            min_interval: duration(raw.min_interval, defaults::MIN_FAILOVER_INTERVAL),
            step_timeout,
            pg_bin: raw.pg_bin,
            rejoin_command,
        }
    }

    fn proxy(&mut self, raw: RawProxy) -> ProxyConfig {
        let max_client_connections = self.integer(
            "proxy.max_client_connections",
            raw.max_client_connections
                .unwrap_or(defaults::MAX_CLIENT_CONNECTIONS),
            1,
            i64::from(u32::MAX),
            || {
                format!(
                    "must be between 1 and {} (client connections accepted at once)",
                    u32::MAX
                )
            },
        );
        let max_message_size = self.integer(
            "proxy.max_message_size",
            raw.max_message_size.unwrap_or(defaults::MAX_MESSAGE_SIZE),
            MIN_MESSAGE_SIZE,
            MAX_MESSAGE_SIZE,
            || {
                format!(
                    "must be between {MIN_MESSAGE_SIZE} and {MAX_MESSAGE_SIZE} bytes (1 GiB): the \
                     largest protocol message accepted from clients or servers"
                )
            },
        );
        let client_login_timeout = self.positive(
            "proxy.client_login_timeout",
            raw.client_login_timeout
                .unwrap_or(defaults::CLIENT_LOGIN_TIMEOUT),
            "the time a client has to finish startup and authentication",
        );
        let failover_buffer_timeout = self.positive(
            "proxy.failover_buffer_timeout",
            raw.failover_buffer_timeout
                .unwrap_or(defaults::FAILOVER_BUFFER_TIMEOUT),
            "how long a transaction waits for a primary during a failover",
        );
        let failover_buffer_size = self.integer(
            "proxy.failover_buffer_size",
            raw.failover_buffer_size
                .unwrap_or(defaults::FAILOVER_BUFFER_SIZE),
            1,
            i64::from(u32::MAX),
            || {
                format!(
                    "must be between 1 and {} (sessions that may wait for a primary at once)",
                    u32::MAX
                )
            },
        );
        let server_reset_query = raw
            .server_reset_query
            .unwrap_or_else(|| defaults::SERVER_RESET_QUERY.to_owned());
        ProxyConfig {
            pool_mode: raw.pool_mode.unwrap_or(PoolMode::Transaction),
            max_client_connections,
            server_reset_query: (!server_reset_query.trim().is_empty())
                .then_some(server_reset_query),
            client_login_timeout,
            shutdown_timeout: raw.shutdown_timeout.unwrap_or(defaults::SHUTDOWN_TIMEOUT),
            max_message_size,
            failover_buffer_timeout,
            failover_buffer_size,
        }
    }

    fn pool(&mut self, raw: RawPool) -> PoolConfig {
        let min_size: u32 = self.integer(
            "pool.min_size",
            raw.min_size.unwrap_or(defaults::POOL_MIN_SIZE),
            0,
            i64::from(u32::MAX),
            || "must be between 0 and 4294967295 (idle server connections kept)".to_owned(),
        );
        let max_size: u32 = self.integer(
            "pool.max_size",
            raw.max_size.unwrap_or(defaults::POOL_MAX_SIZE),
            1,
            i64::from(u32::MAX),
            || "must be at least 1 (server connections per node, user and database)".to_owned(),
        );
        if max_size != 0 && max_size < min_size {
            let min_label = self.origins.label("pool.min_size");
            self.fail(
                "pool.max_size",
                Some(max_size.to_string()),
                format!(
                    "must be at least {min_label} ({min_size}): raise the maximum or lower the \
                     minimum"
                ),
            );
        }
        let connect_timeout = self.positive(
            "pool.connect_timeout",
            raw.connect_timeout.unwrap_or(defaults::CONNECT_TIMEOUT),
            "the time allowed to open a server connection",
        );
        let never = |timeout: Duration| (!timeout.is_zero()).then_some(timeout);
        PoolConfig {
            min_size,
            max_size,
            connect_timeout,
            checkout_timeout: raw.checkout_timeout.unwrap_or(defaults::CHECKOUT_TIMEOUT),
            idle_timeout: never(raw.idle_timeout.unwrap_or(defaults::IDLE_TIMEOUT)),
            max_lifetime: never(raw.max_lifetime.unwrap_or(defaults::MAX_LIFETIME)),
        }
    }

    fn routing(&mut self, raw: RawRouting, regions: &[RegionConfig]) -> RoutingConfig {
        let local_region = raw.local_region.filter(|region| !region.is_empty());
        let names: Vec<String> = regions
            .iter()
            .filter(|region| !region.name.is_empty())
            .map(|region| format!("{:?}", region.name))
            .collect();
        // With no valid region at all, the regions' own errors say what to fix.
        if let Some(region) = &local_region
            && !names.is_empty()
            && !regions.iter().any(|r| &r.name == region)
        {
            self.fail(
                "routing.local_region",
                Some(format!("{region:?}")),
                format!(
                    "names no configured region: use one of {} (the region this proxy runs in), \
                     or leave it out",
                    names.join(", ")
                ),
            );
        }
        let max_replica_lag_bytes = self.integer(
            "routing.max_replica_lag_bytes",
            raw.max_replica_lag_bytes
                .unwrap_or(defaults::MAX_REPLICA_LAG_BYTES),
            0,
            i64::MAX,
            || "must be a number of bytes, 0 or more (e.g. 16777216 for 16 MiB)".to_owned(),
        );
        let max_replica_lag = self.positive(
            "routing.max_replica_lag_seconds",
            raw.max_replica_lag_seconds
                .unwrap_or(defaults::MAX_REPLICA_LAG),
            "replicas further behind than this get no reads",
        );
        let causal_read_timeout = self.positive(
            "routing.causal_read_timeout",
            raw.causal_read_timeout
                .unwrap_or(defaults::CAUSAL_READ_TIMEOUT),
            "how long a read waits for a replica to replay the session's last write",
        );
        if causal_read_timeout > MAX_CAUSAL_READ_TIMEOUT {
            self.fail(
                "routing.causal_read_timeout",
                Some(format!(
                    "{:?}",
                    humantime::format_duration(causal_read_timeout).to_string()
                )),
                "must be at most 10s: reads that must see a write and cannot wait for a \
                 replica belong on the primary; route them there with /* meridian:primary */ \
                 or SET meridian.route = primary",
            );
        }
        let write_functions = raw.write_functions.unwrap_or_default();
        for (i, pattern) in write_functions.iter().enumerate() {
            self.write_function(&format!("routing.write_functions[{i}]"), pattern);
        }
        RoutingConfig {
            read_write_split: raw.read_write_split.unwrap_or(true),
            local_region,
            max_replica_lag_bytes,
            max_replica_lag,
            primary_reads: raw.primary_reads.unwrap_or(PrimaryReads::Fallback),
            read_your_writes: raw.read_your_writes.unwrap_or(ReadYourWrites::Session),
            causal_read_timeout,
            pin_session_settings: raw.pin_session_settings.unwrap_or(false),
            write_functions,
        }
    }

    /// One `routing.write_functions` entry: a function name pattern without a schema.
    fn write_function(&mut self, path: &str, pattern: &str) {
        let value = Some(format!("{pattern:?}"));
        if pattern.is_empty() {
            self.fail(
                path,
                value,
                "must not be empty: give a function name such as \"nextval\" or a pattern \
                 such as \"audit_*\"",
            );
        } else if let Some((_, name)) = pattern.rsplit_once('.') {
            let fix = if name.is_empty() {
                "write the function name alone".to_owned()
            } else {
                format!("write {name:?}")
            };
            self.fail(
                path,
                value,
                format!(
                    "the schema is not part of the pattern (search_path decides which function \
                     a name calls): {fix}"
                ),
            );
        } else if pattern.len() > MAX_IDENTIFIER_BYTES {
            self.fail(
                path,
                value,
                format!(
                    "is {} bytes long: a function name has at most {MAX_IDENTIFIER_BYTES} \
                     bytes in PostgreSQL",
                    pattern.len()
                ),
            );
        } else if let Some(bad) = pattern.chars().find(|&c| {
            !(c.is_ascii_alphanumeric() || !c.is_ascii() || matches!(c, '_' | '$' | '*'))
        }) {
            self.fail(
                path,
                value,
                format!(
                    "{bad:?} is not allowed: a pattern is letters, digits, '_' and '$', with \
                     '*' matching any run of them"
                ),
            );
        } else if pattern.starts_with(|c: char| c.is_ascii_digit() || c == '$') {
            self.fail(
                path,
                value,
                "must not start with a digit or '$', as no function name does: start with a \
                 letter, '_' or '*'",
            );
        }
    }

    fn tls(&mut self, cert: Option<PathBuf>, key: Option<PathBuf>) -> Option<TlsConfig> {
        let fix = "TLS for clients needs both a PEM certificate (tls.cert or MERIDIAN_TLS_CERT) \
                   and its private key (tls.key or MERIDIAN_TLS_KEY)";
        match (cert, key) {
            (Some(cert), Some(key)) => return Some(TlsConfig { cert, key }),
            (None, Some(_)) => {
                let label = self.missing_label("tls.cert", "tls.key", "MERIDIAN_TLS_CERT");
                self.fail(&label, None, format!("missing: {fix}"));
            }
            (Some(_), None) => {
                let label = self.missing_label("tls.key", "tls.cert", "MERIDIAN_TLS_KEY");
                self.fail(&label, None, format!("missing: {fix}"));
            }
            (None, None) => self.fail("tls", None, format!("empty section: {fix}")),
        }
        None
    }

    /// How to name the missing field `path`: by its variable when its sibling came from one.
    fn missing_label(&self, path: &str, sibling: &str, variable: &str) -> String {
        if self.origins.label(sibling) == sibling {
            path.to_owned()
        } else {
            variable.to_owned()
        }
    }

    fn root_cert_present(&mut self, server_tls: &ServerTlsConfig, mode_path: &str) {
        if server_tls.root_cert.is_none() {
            let mode_label = self.origins.label(mode_path);
            self.fail(
                "server_tls.root_cert",
                None,
                format!(
                    "missing, but {mode_label} selects \"verify-full\", which needs it to verify \
                     the servers' certificates: set root_cert = \"root.crt\" (PEM file of \
                     trusted roots) under [server_tls] in the config file, or use \"require\" \
                     (encrypted, not verified)"
                ),
            );
        }
    }

    fn users(&mut self, raw: Vec<RawUser>, listen: Option<SocketAddr>) -> Vec<UserConfig> {
        let mut first_index: BTreeMap<String, usize> = BTreeMap::new();
        let mut users = Vec::new();
        for (i, user) in raw.into_iter().enumerate() {
            let path = format!("users[{i}]");
            let name = match user.name {
                Some(name) if !name.is_empty() => name,
                _ => {
                    self.fail(
                        &format!("{path}.name"),
                        None,
                        "missing: every user needs a name",
                    );
                    continue;
                }
            };
            if let Some(first) = first_index.get(&name) {
                let first = self.origins.label(&format!("users[{first}]"));
                self.fail(
                    &format!("{path}.name"),
                    Some(format!("{name:?}")),
                    format!("already used by {first}: user names must be unique"),
                );
            } else {
                first_index.insert(name.clone(), i);
            }
            let auth = user.auth.unwrap_or(AuthMethod::ScramSha256);
            let password = user.password.map(PasswordSpec::classify);
            self.password(&path, auth, password.as_ref());
            if let Some(listen) = listen.filter(|listen| !listen.ip().is_loopback())
                && auth == AuthMethod::Trust
            {
                let listen_label = self.origins.label("listen");
                self.fail(
                    &format!("{path}.auth"),
                    Some("\"trust\"".to_owned()),
                    format!(
                        "refused because {listen_label} = {listen} is not a loopback address: \
                         anyone who can reach the port could log in as {name:?} without a \
                         password; use \
                         auth = \"scram-sha-256\" with a password, or listen on 127.0.0.1"
                    ),
                );
            }
            let server_user = match user.server_user {
                Some(server_user) if server_user.is_empty() => {
                    self.fail(
                        &format!("{path}.server_user"),
                        Some("\"\"".to_owned()),
                        "must not be empty: leave it out to use the user's name",
                    );
                    server_user
                }
                Some(server_user) => server_user,
                None => name.clone(),
            };
            let server_password = user
                .server_password
                .or_else(|| password.as_ref().and_then(PasswordSpec::plaintext).cloned());
            users.push(UserConfig {
                name,
                password,
                auth,
                server_user,
                server_password,
            });
        }
        users
    }

    fn password(&mut self, path: &str, auth: AuthMethod, password: Option<&PasswordSpec>) {
        let field = format!("{path}.password");
        match (auth, password) {
            (AuthMethod::Trust, _)
            | (
                AuthMethod::ScramSha256,
                Some(PasswordSpec::Plain(_) | PasswordSpec::ScramVerifier(_)),
            )
            | (AuthMethod::Md5, Some(PasswordSpec::Plain(_) | PasswordSpec::Md5Hash(_))) => {}
            (_, None) => self.fail(
                &field,
                None,
                format!(
                    "missing: auth = \"{auth}\" needs a password (the plaintext, or a SCRAM \
                     verifier for scram-sha-256, or an md5 hash for md5); only auth = \"trust\" \
                     goes without"
                ),
            ),
            (AuthMethod::Md5, Some(PasswordSpec::ScramVerifier(_))) => self.fail(
                &field,
                None,
                "is a SCRAM verifier, which cannot answer md5 authentication: give the \
                 plaintext password or its md5 hash, or use auth = \"scram-sha-256\"",
            ),
            (AuthMethod::ScramSha256, Some(PasswordSpec::Md5Hash(_))) => self.fail(
                &field,
                None,
                "is an md5 hash, which cannot do SCRAM-SHA-256: give the plaintext password or a \
                 SCRAM verifier, or use auth = \"md5\"",
            ),
        }
    }

    fn regions(
        &mut self,
        raw: Vec<RawRegion>,
        server_tls: &ServerTlsConfig,
        topology_reported: bool,
    ) -> Vec<RegionConfig> {
        if raw.is_empty() && !topology_reported {
            self.fail(
                "regions",
                None,
                "no regions: add a [[regions]] table with a [[regions.nodes]] under it, or run \
                 without a config file and set DATABASE_URL",
            );
        }
        let mut region_names: BTreeMap<String, String> = BTreeMap::new();
        let mut node_names: BTreeMap<String, String> = BTreeMap::new();
        let mut regions = Vec::new();
        for (r, region) in raw.into_iter().enumerate() {
            let path = format!("regions[{r}]");
            let name = self.name(&format!("{path}.name"), region.name, "region", "us-east");
            if let Some(name) = &name {
                self.unique(
                    &mut region_names,
                    name,
                    &path,
                    "region names must be unique",
                );
            }
            let priority = self.integer(
                &format!("{path}.priority"),
                region.priority.unwrap_or(defaults::PRIORITY),
                i64::from(i32::MIN),
                i64::from(i32::MAX),
                || format!("must be between {} and {}", i32::MIN, i32::MAX),
            );
            if let Some(interval) = region.probe_interval {
                self.positive(
                    &format!("{path}.probe_interval"),
                    interval,
                    "how often nodes are probed",
                );
            }
            if let Some(timeout) = region.failover_timeout {
                self.positive(
                    &format!("{path}.failover_timeout"),
                    timeout,
                    "time allowed for a failover",
                );
            }
            if region.ssl == Some(ServerTlsMode::VerifyFull)
                && server_tls.mode != ServerTlsMode::VerifyFull
            {
                self.root_cert_present(server_tls, &format!("{path}.ssl"));
            }
            if region.nodes.is_empty() {
                self.fail(
                    &format!("{path}.nodes"),
                    None,
                    "the region has no nodes: add a [[regions.nodes]] with a name and host under \
                     its [[regions]]",
                );
            }
            let mut nodes = Vec::new();
            for (n, node) in region.nodes.into_iter().enumerate() {
                let path = format!("{path}.nodes[{n}]");
                if let Some(node) = self.node(&path, node, &mut node_names) {
                    nodes.push(node);
                }
            }
            regions.push(RegionConfig {
                name: name.unwrap_or_default(),
                priority,
                probe_interval: region.probe_interval,
                failover_timeout: region.failover_timeout,
                ssl: region.ssl,
                nodes,
            });
        }
        regions
    }

    fn node(
        &mut self,
        path: &str,
        node: RawNode,
        seen: &mut BTreeMap<String, String>,
    ) -> Option<NodeConfig> {
        let name = self.name(&format!("{path}.name"), node.name, "node", "pg1");
        if let Some(name) = &name {
            self.unique(
                seen,
                name,
                path,
                "node names must be unique across the whole cluster",
            );
        }
        let host = match node.host {
            Some(host) if !host.trim().is_empty() => Some(host),
            _ => {
                self.fail(
                    &format!("{path}.host"),
                    None,
                    "missing: every node needs a host (host name or IP address)",
                );
                None
            }
        };
        let port = self.integer(
            &format!("{path}.port"),
            node.port.unwrap_or(defaults::PORT),
            1,
            65535,
            || "must be between 1 and 65535".to_owned(),
        );
        let priority = self.integer(
            &format!("{path}.priority"),
            node.priority.unwrap_or(defaults::PRIORITY),
            i64::from(i32::MIN),
            i64::from(i32::MAX),
            || format!("must be between {} and {}", i32::MIN, i32::MAX),
        );
        Some(NodeConfig {
            name: name?,
            host: host?,
            port,
            no_failover: node.no_failover.unwrap_or(false),
            priority,
            data_dir: node.data_dir,
        })
    }

    /// A region or node name: present and `[a-z0-9_-]+`.
    fn name(
        &mut self,
        path: &str,
        name: Option<String>,
        what: &str,
        example: &str,
    ) -> Option<String> {
        let Some(name) = name else {
            self.fail(
                path,
                None,
                format!("missing: every {what} needs a name, e.g. name = \"{example}\""),
            );
            return None;
        };
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if !valid {
            self.fail(
                path,
                Some(format!("{name:?}")),
                format!(
                    "a {what} name must be lower-case letters, digits, '_' and '-' only, e.g. \
                     \"{example}\""
                ),
            );
            return None;
        }
        Some(name)
    }

    /// Records `name` as used at `path`, or reports that it was already used.
    fn unique(&mut self, seen: &mut BTreeMap<String, String>, name: &str, path: &str, rule: &str) {
        match seen.get(name) {
            Some(first) => {
                let first = self.origins.label(first);
                self.fail(
                    &format!("{path}.name"),
                    Some(format!("{name:?}")),
                    format!("already used by {first}: {rule}"),
                );
            }
            None => {
                seen.insert(name.to_owned(), path.to_owned());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::Environment;
    use crate::secret::Secret;

    /// One region with one node: the least a valid file holds.
    const NODE: &str =
        "[[regions]]\nname = \"us-east\"\n[[regions.nodes]]\nname = \"pg1\"\nhost = \"10.0.0.1\"\n";

    /// [`NODE`] with `fields` set on its region.
    fn region_with(fields: &str) -> String {
        NODE.replacen(
            "\n[[regions.nodes]]",
            &format!("\n{fields}\n[[regions.nodes]]"),
            1,
        )
    }

    fn load_with(toml: &str, env: &[(&str, &str)]) -> Result<Config, Vec<String>> {
        let path = Path::new("/etc/meridian/meridian.toml");
        crate::load_text(
            Some((path, toml)),
            &Environment::from_pairs(env.iter().copied()),
        )
        .map_err(|errors| errors.0.iter().map(ToString::to_string).collect())
    }

    fn load(toml: &str) -> Config {
        load_with(toml, &[]).unwrap_or_else(|errors| panic!("{errors:#?}"))
    }

    fn errors_of(toml: &str) -> Vec<String> {
        errors_with(toml, &[])
    }

    fn errors_with(toml: &str, env: &[(&str, &str)]) -> Vec<String> {
        match load_with(toml, env) {
            Ok(config) => panic!("accepted: {config:#?}"),
            Err(errors) => errors,
        }
    }

    /// Asserts that exactly one error starts with `start`, and returns it.
    fn find<'a>(errors: &'a [String], start: &str) -> &'a str {
        let found: Vec<&String> = errors.iter().filter(|e| e.starts_with(start)).collect();
        assert_eq!(found.len(), 1, "{start:?} in {errors:#?}");
        found[0]
    }

    #[test]
    fn listen_must_be_an_ip_address_and_port() {
        let errors = errors_of(&format!("listen = \"localhost:6432\"\n{NODE}"));
        assert_eq!(errors.len(), 1, "{errors:#?}");
        find(
            &errors,
            "listen = \"localhost:6432\": must be an IP address and a port",
        );
        let errors = errors_with(NODE, &[("MERIDIAN_LISTEN", "6432")]);
        find(
            &errors,
            "MERIDIAN_LISTEN = \"6432\": must be an IP address and a port",
        );
        let config = load(&format!("listen = \"[::]:7000\"\n{NODE}"));
        assert_eq!(config.listen, "[::]:7000".parse().unwrap());
    }

    #[test]
    fn at_least_one_region_with_at_least_one_node() {
        let errors = errors_of("");
        assert_eq!(
            errors,
            [
                "regions: no regions: add a [[regions]] table with a [[regions.nodes]] under it, or \
              run without a config file and set DATABASE_URL"
            ]
        );
        let errors = errors_of("[[regions]]\nname = \"us-east\"\n");
        find(
            &errors,
            "regions[0].nodes: the region has no nodes: add a [[regions.nodes]]",
        );
    }

    #[test]
    fn region_and_node_names_are_unique() {
        let errors = errors_of(&format!(
            "{NODE}[[regions]]\nname = \"us-east\"\n[[regions.nodes]]\nname = \"pg1\"\nhost = \"h\"\n\
             [[regions.nodes]]\nname = \"pg2\"\nhost = \"h\"\n[[regions.nodes]]\nname = \"pg2\"\nhost = \"h\"\n"
        ));
        assert_eq!(
            errors,
            [
                "regions[1].name = \"us-east\": already used by regions[0]: region names must be unique",
                "regions[1].nodes[0].name = \"pg1\": already used by regions[0].nodes[0]: node names \
                 must be unique across the whole cluster",
                "regions[1].nodes[2].name = \"pg2\": already used by regions[1].nodes[1]: node names \
                 must be unique across the whole cluster",
            ]
        );
    }

    #[test]
    fn names_are_lower_case_letters_digits_underscore_and_dash() {
        let errors = errors_of(
            "[[regions]]\nname = \"US-East\"\n[[regions.nodes]]\nname = \"pg 1\"\nhost = \"h\"\n\
             [[regions.nodes]]\nhost = \"h\"\n",
        );
        assert_eq!(errors.len(), 3, "{errors:#?}");
        find(
            &errors,
            "regions[0].name = \"US-East\": a region name must be lower-case letters",
        );
        find(
            &errors,
            "regions[0].nodes[0].name = \"pg 1\": a node name must be lower-case",
        );
        find(
            &errors,
            "regions[0].nodes[1].name: missing: every node needs a name",
        );
        let config = load(
            "[[regions]]\nname = \"eu_west-2\"\n[[regions.nodes]]\nname = \"a_b-9\"\nhost = \"h\"\n",
        );
        assert_eq!(config.regions[0].nodes[0].name, "a_b-9");
    }

    #[test]
    fn nodes_need_a_host_and_a_port_in_range() {
        let errors = errors_of(
            "[[regions]]\nname = \"r\"\n[[regions.nodes]]\nname = \"a\"\nhost = \"h\"\nport = 0\n\
             [[regions.nodes]]\nname = \"b\"\nhost = \"h\"\nport = 65536\n\
             [[regions.nodes]]\nname = \"c\"\nport = 5433\n",
        );
        assert_eq!(
            errors,
            [
                "regions[0].nodes[0].port = 0: must be between 1 and 65535",
                "regions[0].nodes[1].port = 65536: must be between 1 and 65535",
                "regions[0].nodes[2].host: missing: every node needs a host (host name or IP address)",
            ]
        );
        let config = load(&format!("{NODE}port = 65535\n"));
        assert_eq!(config.regions[0].nodes[0].port, 65535);
    }

    #[test]
    fn pool_max_size_is_at_least_one_and_at_least_min_size() {
        let errors = errors_of(&format!("[pool]\nmax_size = 0\n{NODE}"));
        assert_eq!(
            errors,
            [
                "pool.max_size = 0: must be at least 1 (server connections per node, user and database)"
            ]
        );
        let errors = errors_of(&format!("[pool]\nmin_size = 5\nmax_size = 2\n{NODE}"));
        assert_eq!(
            errors,
            [
                "pool.max_size = 2: must be at least pool.min_size (5): raise the maximum or lower \
              the minimum"
            ]
        );
        let errors = errors_with(
            &format!("[pool]\nmin_size = 5\n{NODE}"),
            &[("MERIDIAN_POOL_MAX_SIZE", "2")],
        );
        find(
            &errors,
            "MERIDIAN_POOL_MAX_SIZE = 2: must be at least pool.min_size (5)",
        );
        let errors = errors_with(NODE, &[("MERIDIAN_POOL_MAX_SIZE", "0")]);
        find(&errors, "MERIDIAN_POOL_MAX_SIZE = 0: must be at least 1");
        let errors = errors_of(&format!("[pool]\nmin_size = -1\n{NODE}"));
        find(
            &errors,
            "pool.min_size = -1: must be between 0 and 4294967295",
        );
        let config = load(&format!("[pool]\nmin_size = 3\nmax_size = 3\n{NODE}"));
        assert_eq!((config.pool.min_size, config.pool.max_size), (3, 3));
    }

    #[test]
    fn max_client_connections_is_at_least_one() {
        let errors = errors_of(&format!("[proxy]\nmax_client_connections = 0\n{NODE}"));
        find(
            &errors,
            "proxy.max_client_connections = 0: must be between 1 and 4294967295",
        );
        let errors = errors_with(NODE, &[("MERIDIAN_MAX_CLIENT_CONNECTIONS", "-3")]);
        find(
            &errors,
            "MERIDIAN_MAX_CLIENT_CONNECTIONS = -3: must be between 1",
        );
    }

    #[test]
    fn max_message_size_is_between_1_kib_and_1_gib() {
        for bad in [1023_i64, 1_073_741_825] {
            let errors = errors_of(&format!("[proxy]\nmax_message_size = {bad}\n{NODE}"));
            find(
                &errors,
                &format!(
                    "proxy.max_message_size = {bad}: must be between 1024 and 1073741824 bytes"
                ),
            );
        }
        for good in [1024_u32, 1_073_741_824] {
            let config = load(&format!("[proxy]\nmax_message_size = {good}\n{NODE}"));
            assert_eq!(config.proxy.max_message_size, good);
        }
    }

    #[test]
    fn the_failover_buffer_needs_a_positive_timeout_and_room_for_one_session() {
        let errors = errors_of(&format!(
            "[proxy]\nfailover_buffer_timeout = \"0s\"\nfailover_buffer_size = 0\n{NODE}"
        ));
        assert_eq!(errors.len(), 2, "{errors:#?}");
        find(
            &errors,
            "proxy.failover_buffer_timeout = \"0s\": must be longer than 0s",
        );
        find(
            &errors,
            "proxy.failover_buffer_size = 0: must be between 1 and 4294967295",
        );
        let errors = errors_with(
            NODE,
            &[
                ("MERIDIAN_FAILOVER_BUFFER_TIMEOUT", "0ms"),
                ("MERIDIAN_FAILOVER_BUFFER_SIZE", "-1"),
            ],
        );
        find(
            &errors,
            "MERIDIAN_FAILOVER_BUFFER_TIMEOUT = \"0s\": must be longer than 0s",
        );
        find(
            &errors,
            "MERIDIAN_FAILOVER_BUFFER_SIZE = -1: must be between 1",
        );
        let config = load(&format!(
            "[proxy]\nfailover_buffer_timeout = \"500ms\"\nfailover_buffer_size = 1\n{NODE}"
        ));
        assert_eq!(
            config.proxy.failover_buffer_timeout,
            Duration::from_millis(500)
        );
        assert_eq!(config.proxy.failover_buffer_size, 1);
    }

    #[test]
    fn durations_zero_means_never_where_documented_and_is_refused_elsewhere() {
        let config = load(&format!(
            "[pool]\nidle_timeout = \"0s\"\nmax_lifetime = \"0s\"\n{NODE}"
        ));
        assert_eq!(
            (config.pool.idle_timeout, config.pool.max_lifetime),
            (None, None)
        );
        let errors = errors_of(&format!(
            "[proxy]\nclient_login_timeout = \"0s\"\n[pool]\nconnect_timeout = \"0ms\"\n{}",
            region_with("probe_interval = \"0s\"\nfailover_timeout = \"0s\"")
        ));
        assert_eq!(errors.len(), 4, "{errors:#?}");
        find(
            &errors,
            "proxy.client_login_timeout = \"0s\": must be longer than 0s",
        );
        find(
            &errors,
            "pool.connect_timeout = \"0s\": must be longer than 0s",
        );
        find(
            &errors,
            "regions[0].probe_interval = \"0s\": must be longer than 0s",
        );
        find(
            &errors,
            "regions[0].failover_timeout = \"0s\": must be longer than 0s",
        );
        let config = load(&format!(
            "[pool]\ncheckout_timeout = \"250ms\"\n{}",
            region_with("probe_interval = \"1s\"\nfailover_timeout = \"30s\"\nssl = \"require\"")
        ));
        assert_eq!(config.pool.checkout_timeout, Duration::from_millis(250));
        let region = &config.regions[0];
        assert_eq!(region.probe_interval, Some(Duration::from_secs(1)));
        assert_eq!(region.failover_timeout, Some(Duration::from_secs(30)));
        assert_eq!(region.ssl, Some(ServerTlsMode::Require));
    }

    #[test]
    fn server_reset_query_empty_means_none() {
        let config = load(&format!("[proxy]\nserver_reset_query = \"\"\n{NODE}"));
        assert_eq!(config.proxy.server_reset_query, None);
        let config = load(&format!(
            "[proxy]\nserver_reset_query = \"RESET ALL\"\n{NODE}"
        ));
        assert_eq!(
            config.proxy.server_reset_query.as_deref(),
            Some("RESET ALL")
        );
    }

    #[test]
    fn tls_needs_both_cert_and_key() {
        let errors = errors_of(&format!("[tls]\ncert = \"server.crt\"\n{NODE}"));
        find(
            &errors,
            "tls.key: missing: TLS for clients needs both a PEM certificate",
        );
        let errors = errors_of(&format!("[tls]\nkey = \"server.key\"\n{NODE}"));
        find(&errors, "tls.cert: missing: TLS for clients needs both");
        let errors = errors_of(&format!("[tls]\n{NODE}"));
        find(&errors, "tls: empty section: TLS for clients needs both");
        let errors = errors_with(NODE, &[("MERIDIAN_TLS_CERT", "/tls/server.crt")]);
        find(
            &errors,
            "MERIDIAN_TLS_KEY: missing: TLS for clients needs both",
        );
        let config = load_with(
            NODE,
            &[
                ("MERIDIAN_TLS_CERT", "server.crt"),
                ("MERIDIAN_TLS_KEY", "server.key"),
            ],
        )
        .unwrap();
        assert_eq!(
            config.tls,
            Some(TlsConfig {
                cert: "server.crt".into(),
                key: "server.key".into()
            })
        );
    }

    #[test]
    fn verify_full_needs_root_cert() {
        let errors = errors_of(&format!("[server_tls]\nmode = \"verify-full\"\n{NODE}"));
        assert_eq!(errors.len(), 1, "{errors:#?}");
        find(
            &errors,
            "server_tls.root_cert: missing, but server_tls.mode selects \"verify-full\", which \
             needs it to verify the servers' certificates: set root_cert = \"root.crt\"",
        );
        let errors = errors_with(NODE, &[("MERIDIAN_SERVER_TLS_MODE", "verify-full")]);
        find(
            &errors,
            "server_tls.root_cert: missing, but MERIDIAN_SERVER_TLS_MODE selects \"verify-full\"",
        );
        let errors = errors_of(&region_with("ssl = \"verify-full\""));
        find(
            &errors,
            "server_tls.root_cert: missing, but regions[0].ssl selects \"verify-full\"",
        );
        let config = load(&format!(
            "[server_tls]\nmode = \"verify-full\"\nroot_cert = \"/etc/ssl/root.crt\"\n{NODE}"
        ));
        assert_eq!(config.server_tls.mode, ServerTlsMode::VerifyFull);
        assert_eq!(
            config.server_tls.root_cert,
            Some("/etc/ssl/root.crt".into())
        );
    }

    const SCRAM: &str = "SCRAM-SHA-256$4096:c2FsdA==$c3RvcmVk:c2VydmVy";
    const MD5: &str = "md50123456789abcdef0123456789abcdef";

    fn user(fields: &str) -> String {
        format!("[[users]]\nname = \"app\"\n{fields}\n")
    }

    #[test]
    fn user_names_are_unique() {
        let errors = errors_of(&format!(
            "{}{}{NODE}",
            user("password = \"a\""),
            user("password = \"b\"")
        ));
        assert_eq!(
            errors,
            ["users[1].name = \"app\": already used by users[0]: user names must be unique"]
        );
        let errors = errors_of(&format!("[[users]]\npassword = \"a\"\n{NODE}"));
        find(&errors, "users[0].name: missing");
    }

    #[test]
    fn md5_auth_needs_plaintext_or_md5_hash() {
        let errors = errors_of(&format!(
            "{}{NODE}",
            user(&format!("auth = \"md5\"\npassword = \"{SCRAM}\""))
        ));
        assert_eq!(
            errors,
            [
                "users[0].password: is a SCRAM verifier, which cannot answer md5 authentication: give \
              the plaintext password or its md5 hash, or use auth = \"scram-sha-256\""
            ]
        );
        for good in ["secret", MD5] {
            let config = load(&format!(
                "{}{NODE}",
                user(&format!("auth = \"md5\"\npassword = \"{good}\""))
            ));
            assert_eq!(config.users[0].auth, AuthMethod::Md5);
        }
        let errors = errors_of(&format!("{}{NODE}", user("auth = \"md5\"")));
        find(
            &errors,
            "users[0].password: missing: auth = \"md5\" needs a password",
        );
    }

    #[test]
    fn scram_auth_needs_plaintext_or_scram_verifier() {
        let errors = errors_of(&format!("{}{NODE}", user(&format!("password = \"{MD5}\""))));
        assert_eq!(
            errors,
            [
                "users[0].password: is an md5 hash, which cannot do SCRAM-SHA-256: give the plaintext \
              password or a SCRAM verifier, or use auth = \"md5\""
            ]
        );
        let config = load(&format!(
            "{}{NODE}",
            user(&format!("password = \"{SCRAM}\""))
        ));
        assert_eq!(config.users[0].auth, AuthMethod::ScramSha256);
        assert_eq!(
            config.users[0].password,
            Some(PasswordSpec::ScramVerifier(Secret::new(SCRAM)))
        );
        let errors = errors_of(&format!("{}{NODE}", user("")));
        find(
            &errors,
            "users[0].password: missing: auth = \"scram-sha-256\" needs a password",
        );
    }

    #[test]
    fn trust_is_refused_on_a_non_loopback_listener() {
        let config = load(&format!("{}{NODE}", user("auth = \"trust\"")));
        assert_eq!(config.users[0].password, None);
        let errors = errors_of(&format!(
            "listen = \"0.0.0.0:6432\"\n{}{NODE}",
            user("auth = \"trust\"")
        ));
        assert_eq!(
            errors,
            [
                "users[0].auth = \"trust\": refused because listen = 0.0.0.0:6432 is not a loopback \
              address: anyone who can reach the port could log in as \"app\" without a password; \
              use auth = \"scram-sha-256\" with a password, or listen on 127.0.0.1"
            ]
        );
        let errors = errors_with(
            &format!("{}{NODE}", user("auth = \"trust\"")),
            &[("MERIDIAN_LISTEN", "10.1.2.3:6432")],
        );
        find(
            &errors,
            "users[0].auth = \"trust\": refused because MERIDIAN_LISTEN = 10.1.2.3:6432",
        );
    }

    #[test]
    fn server_credentials_default_to_the_client_ones() {
        let config = load(&format!(
            "{}[[users]]\nname = \"ro\"\npassword = \"{SCRAM}\"\n\
             [[users]]\nname = \"old\"\nauth = \"md5\"\npassword = \"{MD5}\"\nserver_user = \"legacy\"\nserver_password = \"pw\"\n{NODE}",
            user("password = \"plain\"")
        ));
        let users = &config.users;
        assert_eq!(users[0].server_user, "app");
        assert_eq!(users[0].server_password, Some(Secret::new("plain")));
        assert_eq!(
            users[0].password,
            Some(PasswordSpec::Plain(Secret::new("plain")))
        );
        assert_eq!(
            (
                users[1].server_user.as_str(),
                users[1].server_password.as_ref()
            ),
            ("ro", None)
        );
        assert_eq!(users[2].server_user, "legacy");
        assert_eq!(users[2].server_password, Some(Secret::new("pw")));
        let errors = errors_of(&format!(
            "{}{NODE}",
            user("password = \"x\"\nserver_user = \"\"")
        ));
        find(&errors, "users[0].server_user = \"\": must not be empty");
    }

    #[test]
    fn priority_fits_in_32_bits() {
        let errors = errors_of(&region_with("priority = 3000000000"));
        find(
            &errors,
            "regions[0].priority = 3000000000: must be between -2147483648 and 2147483647",
        );
        assert_eq!(load(&region_with("priority = -5")).regions[0].priority, -5);
    }

    #[test]
    fn monitor_defaults_are_the_original_services() {
        let config = load(&region_with(""));
        let monitor = &config.monitor;
        assert_eq!(monitor.probe_interval, Duration::from_secs(1));
        assert_eq!(monitor.probe_timeout, Duration::from_secs(1));
        assert_eq!(monitor.reconnect_initial, Duration::from_secs(2));
        assert_eq!(monitor.reconnect_max, Duration::from_secs(32));
        assert_eq!(monitor.reconnect_attempts, 5);
        assert_eq!(monitor.failures_to_down, 3);
        assert_eq!(monitor.slow_warning, Duration::from_secs(1));
        assert_eq!(monitor.slow_critical, Duration::from_secs(5));
        assert_eq!(monitor.lag_warning, Duration::from_secs(30));
        assert_eq!(monitor.lag_critical, Duration::from_secs(300));
        assert_eq!(monitor.error_rate_warning, 0.05);
        assert_eq!(monitor.error_rate_critical, 0.20);
        assert_eq!(monitor.database, "postgres");
        assert_eq!(monitor.user, None);
        assert_eq!(config.admin_listen, "127.0.0.1:9930".parse().unwrap());
    }

    #[test]
    fn monitor_thresholds_must_be_ordered_and_in_range() {
        let errors = errors_of(&format!(
            "[monitor]\nslow_warning = \"5s\"\nslow_critical = \"1s\"\nerror_rate_warning = 1.5\n\
             probe_interval = \"0s\"\nfailures_to_down = 0\npassword = \"hunter2\"\n{}",
            region_with("")
        ));
        assert!(find(&errors, "monitor.slow_critical").contains("at least monitor.slow_warning"));
        assert!(find(&errors, "monitor.error_rate_warning").contains("fraction between 0 and 1"));
        assert!(find(&errors, "monitor.probe_interval").contains("longer than 0s"));
        assert!(find(&errors, "monitor.failures_to_down").contains("between 1 and 100"));
        assert!(find(&errors, "monitor.password").contains("set monitor.user"));
        assert!(errors.iter().all(|e| !e.contains("hunter2")), "{errors:?}");
    }

    #[test]
    fn failover_defaults_and_rules() {
        let config = load(&region_with(""));
        let failover = &config.failover;
        assert!(failover.automatic);
        assert_eq!(failover.failure_threshold, 3);
        assert_eq!(failover.confirm_interval, Duration::from_millis(200));
        assert_eq!(failover.max_lag_on_failover, 16 * 1024 * 1024);
        assert_eq!(failover.min_interval, Duration::from_secs(60));
        assert_eq!(failover.step_timeout, Duration::from_secs(15));
        assert_eq!(failover.rejoin_command, None);
        assert_eq!(config.admin_token, None);

        let errors = errors_of(&format!(
            "admin_token = \"s3cret-token\"\n[failover]\nfailure_threshold = 0\nconfirm_interval = \"0s\"\n\
             max_lag_on_failover = -1\nrejoin_command = \"rejoin {{node}} {{datadir}}\"\n{}",
            region_with("")
        ));
        assert!(find(&errors, "failover.failure_threshold").contains("between 1 and 100"));
        assert!(find(&errors, "failover.confirm_interval").contains("longer than 0s"));
        assert!(find(&errors, "failover.max_lag_on_failover").contains("number of bytes"));
        assert!(
            find(&errors, "failover.rejoin_command").contains("unknown placeholder {datadir}"),
            "{errors:?}"
        );
        assert!(errors.iter().all(|e| !e.contains("s3cret")), "{errors:?}");
    }

    #[test]
    fn coordination_is_off_by_default_and_checked_when_on() {
        assert_eq!(load(NODE).coordination, None);
        let config = load(&format!(
            "[coordination]\netcd = [\"http://10.0.0.1:2379\", \"http://etcd.internal:2379\"]\n{NODE}"
        ));
        let c = config.coordination.expect("on");
        assert_eq!(c.prefix, "/meridian/default");
        assert_eq!(c.lease_ttl, Duration::from_secs(5));
        assert_eq!(c.instance, None);
        assert!(c.reads_when_fenced);
        let c = load_with(
            NODE,
            &[
                ("MERIDIAN_ETCD", "http://a:2379"),
                ("MERIDIAN_INSTANCE", "edge-1"),
            ],
        )
        .unwrap()
        .coordination
        .expect("on from the environment");
        assert_eq!(
            (c.etcd, c.instance.as_deref()),
            (vec!["http://a:2379".to_owned()], Some("edge-1"))
        );

        let errors = errors_of(&format!(
            "[coordination]\netcd = [\"http://u:hunter2@h:1\"]\n{NODE}"
        ));
        assert!(
            find(&errors, "coordination.etcd").contains("no credentials"),
            "{errors:?}"
        );
        assert!(errors.iter().all(|e| !e.contains("hunter2")), "{errors:?}");
        let errors = errors_of(&format!(
            "[coordination]\netcd = [\"10.0.0.1:2379\"]\n{NODE}"
        ));
        assert!(
            find(&errors, "coordination.etcd").contains("\"10.0.0.1:2379\""),
            "{errors:?}"
        );
        let errors = errors_of(&format!(
            "[coordination]\netcd = [\"http://h:1\"]\nprefix = \"meridian\"\n\
             instance = \"a b\"\nlease_ttl = \"1s\"\npassword = \"s3cret\"\n{NODE}"
        ));
        assert!(find(&errors, "coordination.prefix").contains("key path"));
        assert!(find(&errors, "coordination.instance").contains("letters, digits"));
        assert!(find(&errors, "coordination.lease_ttl").contains("at least 2s"));
        assert!(find(&errors, "coordination.password").contains("needs coordination.user"));
        assert!(errors.iter().all(|e| !e.contains("s3cret")), "{errors:?}");
        let errors = errors_of(&format!("[coordination]\n{NODE}"));
        assert!(find(&errors, "coordination.etcd").contains("at least one etcd endpoint"));
        let errors = errors_of(&format!(
            "[coordination]\netcd = [\"https://h:1\"]\ncert = \"c.pem\"\n{NODE}"
        ));
        assert!(find(&errors, "coordination.ca_cert").contains("CA certificate"));
        assert!(find(&errors, "coordination.key").contains("needs both cert and key"));
        let c = load(&format!(
            "[coordination]\netcd = [\"https://h:1\"]\nca_cert = \"ca.pem\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n{NODE}"
        ))
        .coordination
        .unwrap();
        assert!(c.cert.is_some() && c.key.is_some() && c.ca_cert.is_some());
        assert!(c.proxy && c.control, "both roles by default");
        let c = load(&format!(
            "[coordination]\netcd = [\"http://h:1\"]\nroles = [\"proxy\"]\n{NODE}"
        ))
        .coordination
        .unwrap();
        assert!(c.proxy && !c.control);
        let errors = errors_of(&format!(
            "[coordination]\netcd = [\"http://h:1\"]\nroles = [\"router\"]\n{NODE}"
        ));
        assert!(find(&errors, "coordination.roles").contains("\"proxy\""));
    }

    #[test]
    fn backup_is_off_by_default_and_checked_when_on() {
        assert_eq!(load(NODE).backup, None);
        let b = load(&format!(
            "[backup]\nlocation = \"s3://bucket/orders\"\nwal_archive = \"/wal\"\nkeep = 7\n{NODE}"
        ))
        .backup
        .expect("on");
        assert_eq!(b.location, "s3://bucket/orders");
        assert_eq!(b.wal_archive.as_deref(), Some(Path::new("/wal")));
        assert_eq!(b.archive_timeout, Duration::from_secs(60));
        assert_eq!(b.max_rpo, Duration::from_secs(300));
        assert_eq!((b.keep, b.keep_for), (Some(7), None));
        let b = load_with(NODE, &[("MERIDIAN_BACKUP_LOCATION", "/srv/backups")])
            .unwrap()
            .backup
            .expect("on from the environment");
        assert_eq!((b.location.as_str(), b.wal_archive), ("/srv/backups", None));

        let errors = errors_of(&format!("[backup]\nkeep = 0\n{NODE}"));
        assert!(find(&errors, "backup.location").contains("is required"));
        assert!(find(&errors, "backup.keep").contains("at least 1"));
        let errors = errors_of(&format!(
            "[backup]\nlocation = \"s3://key:hunter2@bucket\"\narchive_timeout = \"10m\"\n{NODE}"
        ));
        assert!(find(&errors, "backup.location").contains("no credentials"));
        assert!(find(&errors, "backup.max_rpo").contains("longer than backup.archive_timeout"));
        assert!(errors.iter().all(|e| !e.contains("hunter2")), "{errors:?}");
        let errors = errors_of(&format!("[backup]\nlocation = \"ftp://h/x\"\n{NODE}"));
        assert!(find(&errors, "backup.location").contains("s3://bucket/prefix"));
    }

    #[test]
    fn admin_protect_reads_is_off_by_default_and_needs_a_token() {
        assert!(!load(NODE).admin_protect_reads);

        let config = load(&format!(
            "admin_token = \"s3cret-token\"\nadmin_protect_reads = true\n{NODE}"
        ));
        assert!(config.admin_protect_reads);
        let config = load_with(
            &format!("admin_protect_reads = true\n{NODE}"),
            &[("MERIDIAN_ADMIN_TOKEN", "s3cret-token")],
        )
        .unwrap();
        assert!(config.admin_protect_reads);
        let config = load_with(
            &format!("admin_token = \"s3cret-token\"\n{NODE}"),
            &[("MERIDIAN_ADMIN_PROTECT_READS", "on")],
        )
        .unwrap();
        assert!(config.admin_protect_reads);
        let config = load_with(
            &format!("admin_protect_reads = true\n{NODE}"),
            &[("MERIDIAN_ADMIN_PROTECT_READS", "false")],
        )
        .unwrap();
        assert!(!config.admin_protect_reads);

        let errors = errors_of(&format!("admin_protect_reads = true\n{NODE}"));
        assert_eq!(
            errors,
            [
                "admin_protect_reads = true: needs admin_token (or MERIDIAN_ADMIN_TOKEN): without \
                 a token every read (/metrics, GET /api/database/*) would be refused; set a \
                 token, or leave admin_protect_reads off"
            ]
        );
        // An empty token is no token; an error from the environment names the variable.
        let errors = errors_with(
            &format!("admin_token = \"\"\n{NODE}"),
            &[("MERIDIAN_ADMIN_PROTECT_READS", "true")],
        );
        assert_eq!(errors.len(), 1, "{errors:#?}");
        find(
            &errors,
            "MERIDIAN_ADMIN_PROTECT_READS = true: needs admin_token",
        );
        let errors = errors_with(NODE, &[("MERIDIAN_ADMIN_PROTECT_READS", "yes")]);
        assert_eq!(
            errors,
            ["MERIDIAN_ADMIN_PROTECT_READS = \"yes\": must be true or false"]
        );
    }

    /// Two regions, `us-east` and `eu-west`, one node each.
    const TWO_REGIONS: &str = "[[regions]]\nname = \"us-east\"\n[[regions.nodes]]\nname = \"pg1\"\n\
         host = \"10.0.0.1\"\n[[regions]]\nname = \"eu-west\"\n[[regions.nodes]]\nname = \"pg2\"\n\
         host = \"10.0.1.1\"\n";

    #[test]
    fn routing_defaults_are_the_absent_sections() {
        assert_eq!(RoutingConfig::default(), default_routing());
    }

    fn default_routing() -> RoutingConfig {
        RoutingConfig {
            read_write_split: true,
            local_region: None,
            max_replica_lag_bytes: 16 * 1024 * 1024,
            max_replica_lag: Duration::from_secs(10),
            primary_reads: PrimaryReads::Fallback,
            read_your_writes: ReadYourWrites::Session,
            causal_read_timeout: Duration::from_millis(50),
            pin_session_settings: false,
            write_functions: Vec::new(),
        }
    }

    #[test]
    fn routing_defaults() {
        assert_eq!(load(NODE).routing, default_routing());
        assert_eq!(
            load(&format!("[routing]\n{NODE}")).routing,
            default_routing()
        );
        // Without a file, the topology from DATABASE_URL gets the same defaults.
        let env = Environment::from_pairs([("DATABASE_URL", "postgres://app:pw@10.0.0.1/shop")]);
        let config = crate::load_text(None, &env).unwrap();
        assert_eq!(config.routing, default_routing());
    }

    #[test]
    fn a_full_routing_section() {
        let config = load(&format!(
            "[routing]\nread_write_split = false\nlocal_region = \"eu-west\"\n\
             max_replica_lag_bytes = 0\nmax_replica_lag_seconds = \"2s 500ms\"\n\
             primary_reads = \"never\"\nread_your_writes = \"global\"\n\
             causal_read_timeout = \"10s\"\npin_session_settings = true\n\
             write_functions = [\"audit_*\", \"bump$counter\", \"*\", \"n\u{e4}chste_nummer\"]\n\
             {TWO_REGIONS}"
        ));
        assert_eq!(
            config.routing,
            RoutingConfig {
                read_write_split: false,
                local_region: Some("eu-west".to_owned()),
                max_replica_lag_bytes: 0,
                max_replica_lag: Duration::from_millis(2500),
                primary_reads: PrimaryReads::Never,
                read_your_writes: ReadYourWrites::Global,
                causal_read_timeout: Duration::from_secs(10),
                pin_session_settings: true,
                write_functions: vec![
                    "audit_*".to_owned(),
                    "bump$counter".to_owned(),
                    "*".to_owned(),
                    "n\u{e4}chste_nummer".to_owned(),
                ],
            }
        );
        // "" means no local region, as elsewhere.
        let config = load(&format!("[routing]\nlocal_region = \"\"\n{NODE}"));
        assert_eq!(config.routing.local_region, None);
    }

    #[test]
    fn routing_values_out_of_range_are_refused() {
        let long = "f".repeat(64);
        let errors = errors_of(&format!(
            "[routing]\nlocal_region = \"mars\"\nmax_replica_lag_bytes = -1\n\
             max_replica_lag_seconds = \"0s\"\ncausal_read_timeout = \"0s\"\n\
             write_functions = [\"public.bump\", \"\", \"{long}\", \"bump-it\", \"ok_$*\", \"pg_catalog.\", \
             \"1st\", \"$x\", \"*$x\"]\n\
             {TWO_REGIONS}"
        ));
        assert_eq!(
            errors,
            [
                "routing.local_region = \"mars\": names no configured region: use one of \
                 \"us-east\", \"eu-west\" (the region this proxy runs in), or leave it out",
                "routing.max_replica_lag_bytes = -1: must be a number of bytes, 0 or more (e.g. \
                 16777216 for 16 MiB)",
                "routing.max_replica_lag_seconds = \"0s\": must be longer than 0s (replicas \
                 further behind than this get no reads)",
                "routing.causal_read_timeout = \"0s\": must be longer than 0s (how long a read \
                 waits for a replica to replay the session's last write)",
                "routing.write_functions[0] = \"public.bump\": the schema is not part of the \
                 pattern (search_path decides which function a name calls): write \"bump\"",
                "routing.write_functions[1] = \"\": must not be empty: give a function name such \
                 as \"nextval\" or a pattern such as \"audit_*\"",
                &format!(
                    "routing.write_functions[2] = \"{long}\": is 64 bytes long: a function name \
                     has at most 63 bytes in PostgreSQL"
                ),
                "routing.write_functions[3] = \"bump-it\": '-' is not allowed: a pattern is \
                 letters, digits, '_' and '$', with '*' matching any run of them",
                "routing.write_functions[5] = \"pg_catalog.\": the schema is not part of the \
                 pattern (search_path decides which function a name calls): write the function \
                 name alone",
                "routing.write_functions[6] = \"1st\": must not start with a digit or '$', as no \
                 function name does: start with a letter, '_' or '*'",
                "routing.write_functions[7] = \"$x\": must not start with a digit or '$', as no \
                 function name does: start with a letter, '_' or '*'",
            ]
        );
        let errors = errors_of(&format!(
            "[routing]\ncausal_read_timeout = \"10s 1ms\"\n{NODE}"
        ));
        assert_eq!(
            errors,
            [
                "routing.causal_read_timeout = \"10s 1ms\": must be at most 10s: reads that must \
                 see a write and cannot wait for a replica belong on the primary; route them \
                 there with /* meridian:primary */ or SET meridian.route = primary"
            ]
        );
    }

    #[test]
    fn routing_keywords_and_keys_are_checked_by_the_parser() {
        for (line, expected) in [
            (
                "primary_reads = \"sometimes\"",
                "unknown variant `sometimes`, expected one of `never`, `fallback`, `always` \
                 (in `routing.primary_reads`)",
            ),
            (
                "read_your_writes = \"strict\"",
                "unknown variant `strict`, expected one of `off`, `session`, `global` (in \
                 `routing.read_your_writes`)",
            ),
            (
                "max_replica_lag = \"10s\"",
                "unknown field `max_replica_lag`, expected one of",
            ),
            (
                "max_replica_lag_seconds = 10",
                "invalid type: integer `10`, expected a duration (in \
                 `routing.max_replica_lag_seconds`)",
            ),
        ] {
            let errors = errors_of(&format!("[routing]\n{line}\n{NODE}"));
            assert_eq!(errors.len(), 1, "{errors:#?}");
            assert!(
                errors[0].starts_with("/etc/meridian/meridian.toml:2:")
                    && errors[0].contains(expected),
                "{line}: {errors:#?}"
            );
        }
    }

    #[test]
    fn routing_environment_overrides() {
        let config = load_with(
            &format!(
                "[routing]\nprimary_reads = \"never\"\nlocal_region = \"us-east\"\n{TWO_REGIONS}"
            ),
            &[
                ("MERIDIAN_READ_WRITE_SPLIT", "false"),
                ("MERIDIAN_LOCAL_REGION", "eu-west"),
                ("MERIDIAN_PRIMARY_READS", "always"),
                ("MERIDIAN_READ_YOUR_WRITES", "off"),
                ("MERIDIAN_CAUSAL_READ_TIMEOUT", "200ms"),
                ("MERIDIAN_MAX_REPLICA_LAG_BYTES", "1048576"),
                ("MERIDIAN_MAX_REPLICA_LAG_SECONDS", "30s"),
            ],
        )
        .unwrap();
        assert_eq!(
            config.routing,
            RoutingConfig {
                read_write_split: false,
                local_region: Some("eu-west".to_owned()),
                max_replica_lag_bytes: 1024 * 1024,
                max_replica_lag: Duration::from_secs(30),
                primary_reads: PrimaryReads::Always,
                read_your_writes: ReadYourWrites::Off,
                causal_read_timeout: Duration::from_millis(200),
                ..default_routing()
            }
        );
        let errors = errors_with(
            NODE,
            &[
                ("MERIDIAN_LOCAL_REGION", "mars"),
                ("MERIDIAN_PRIMARY_READS", "sometimes"),
                ("MERIDIAN_CAUSAL_READ_TIMEOUT", "0s"),
                ("MERIDIAN_MAX_REPLICA_LAG_BYTES", "-1"),
                ("MERIDIAN_MAX_REPLICA_LAG_SECONDS", "1m"),
            ],
        );
        assert_eq!(errors.len(), 4, "{errors:#?}");
        find(
            &errors,
            "MERIDIAN_PRIMARY_READS = \"sometimes\": must be one of \"never\", \"fallback\", \
             \"always\"",
        );
        find(
            &errors,
            "MERIDIAN_LOCAL_REGION = \"mars\": names no configured region: use one of \"us-east\"",
        );
        find(
            &errors,
            "MERIDIAN_CAUSAL_READ_TIMEOUT = \"0s\": must be longer than 0s",
        );
        find(
            &errors,
            "MERIDIAN_MAX_REPLICA_LAG_BYTES = -1: must be a number of bytes",
        );
        // The environment's own topology: its region is "default".
        let env = Environment::from_pairs([
            ("DATABASE_URL", "postgres://app:pw@10.0.0.1/shop"),
            ("MERIDIAN_LOCAL_REGION", "default"),
        ]);
        let config = crate::load_text(None, &env).unwrap();
        assert_eq!(config.routing.local_region.as_deref(), Some("default"));
    }

    #[test]
    fn node_data_dirs_are_relative_to_the_file() {
        let config = load(
            "[failover]\npg_bin = \"/usr/lib/postgresql/17/bin\"\nrejoin_command = \"ssh {host} rejoin {primary_host}:{primary_port}\"\n\
             [[regions]]\nname = \"r\"\n[[regions.nodes]]\nname = \"a\"\nhost = \"h\"\ndata_dir = \"pg/a\"\n",
        );
        assert_eq!(
            config.regions[0].nodes[0].data_dir.as_deref(),
            Some(Path::new("/etc/meridian/pg/a"))
        );
        assert_eq!(
            config.failover.pg_bin.as_deref(),
            Some(Path::new("/usr/lib/postgresql/17/bin"))
        );
        assert!(config.failover.rejoin_command.is_some());
    }

    #[test]
    fn nodes_may_refuse_failover_and_carry_a_priority() {
        let config = load(
            "[[regions]]\nname = \"r\"\n[[regions.nodes]]\nname = \"a\"\nhost = \"h\"\nno_failover = true\npriority = 5\n\
             [[regions.nodes]]\nname = \"b\"\nhost = \"h\"\n",
        );
        let nodes = &config.regions[0].nodes;
        assert!(nodes[0].no_failover);
        assert_eq!(nodes[0].priority, 5);
        assert!(!nodes[1].no_failover);
        assert_eq!(nodes[1].priority, 0);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let errors = errors_with(
            "listen = \"nowhere\"\n[pool]\nmax_size = 0\n[proxy]\nmax_message_size = 1\n\
             [[regions]]\nname = \"A\"\n",
            &[("MERIDIAN_POOL_MODE", "statement")],
        );
        assert_eq!(errors.len(), 6, "{errors:#?}");
        assert!(errors[0].starts_with("MERIDIAN_POOL_MODE"), "{errors:#?}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let config = load_with(
            &format!(
                "listen = \"127.0.0.1:1\"\n[pool]\nmax_size = 3\nidle_timeout = \"1m\"\n{NODE}"
            ),
            &[
                ("MERIDIAN_LISTEN", "127.0.0.2:2"),
                ("MERIDIAN_POOL_MAX_SIZE", "40"),
                ("MERIDIAN_POOL_IDLE_TIMEOUT", "0s"),
                ("MERIDIAN_POOL_MODE", "session"),
                ("MERIDIAN_DATA_DIR", "state"),
            ],
        )
        .unwrap();
        assert_eq!(config.listen, "127.0.0.2:2".parse().unwrap());
        assert_eq!(config.pool.max_size, 40);
        assert_eq!(config.pool.idle_timeout, None);
        assert_eq!(config.proxy.pool_mode, PoolMode::Session);
        assert_eq!(config.data_dir, PathBuf::from("state"));
    }
}
