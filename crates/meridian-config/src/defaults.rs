//! The defaults of every optional setting, in one place (documented in the schema).

use std::time::Duration;

pub(crate) const LISTEN: &str = "127.0.0.1:6432";
pub(crate) const DATA_DIR: &str = "meridian-data";

pub(crate) const MAX_CLIENT_CONNECTIONS: i64 = 10_000;
pub(crate) const SERVER_RESET_QUERY: &str = "DISCARD ALL";
pub(crate) const CLIENT_LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
pub(crate) const MAX_MESSAGE_SIZE: i64 = 64 * 1024 * 1024;
pub(crate) const FAILOVER_BUFFER_TIMEOUT: Duration = Duration::from_secs(15);
pub(crate) const FAILOVER_BUFFER_SIZE: i64 = 10_000;

pub(crate) const POOL_MIN_SIZE: i64 = 0;
pub(crate) const POOL_MAX_SIZE: i64 = 20;
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const CHECKOUT_TIMEOUT: Duration = Duration::from_secs(5);
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(10 * 60);
pub(crate) const MAX_LIFETIME: Duration = Duration::from_secs(60 * 60);

pub(crate) const MAX_REPLICA_LAG_BYTES: i64 = 16 * 1024 * 1024;
pub(crate) const MAX_REPLICA_LAG: Duration = Duration::from_secs(10);
pub(crate) const CAUSAL_READ_TIMEOUT: Duration = Duration::from_millis(50);

pub(crate) const PORT: i64 = 5432;
pub(crate) const PRIORITY: i64 = 0;

pub(crate) const ADMIN_LISTEN: &str = "127.0.0.1:9930";

pub(crate) const MONITOR_DATABASE: &str = "postgres";
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(1);
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
pub(crate) const RECONNECT_INITIAL: Duration = Duration::from_secs(2);
pub(crate) const RECONNECT_MAX: Duration = Duration::from_secs(32);
pub(crate) const RECONNECT_ATTEMPTS: i64 = 5;
pub(crate) const FAILURES_TO_DOWN: i64 = 3;
pub(crate) const SLOW_WARNING: Duration = Duration::from_secs(1);
pub(crate) const SLOW_CRITICAL: Duration = Duration::from_secs(5);
pub(crate) const LAG_WARNING: Duration = Duration::from_secs(30);
pub(crate) const LAG_CRITICAL: Duration = Duration::from_secs(5 * 60);
pub(crate) const ERROR_RATE_WARNING: f64 = 0.05;
pub(crate) const ERROR_RATE_CRITICAL: f64 = 0.20;
pub(crate) const HISTORY_RETENTION: Duration = Duration::from_secs(24 * 60 * 60);

pub(crate) const FAILURE_THRESHOLD: i64 = 3;
pub(crate) const CONFIRM_INTERVAL: Duration = Duration::from_millis(200);
pub(crate) const RECEIVER_TIMEOUT: Duration = Duration::from_secs(3);
pub(crate) const MAX_LAG_ON_FAILOVER: i64 = 16 * 1024 * 1024;
pub(crate) const MIN_FAILOVER_INTERVAL: Duration = Duration::from_secs(60);
pub(crate) const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// `coordination.prefix`.
pub(crate) const ETCD_PREFIX: &str = "/meridian/default";
/// `coordination.lease_ttl`.
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(5);

/// `backup.archive_timeout`.
pub(crate) const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// `backup.max_rpo`: the original design's RPO target was 15 minutes; alert well before it.
pub(crate) const MAX_RPO: Duration = Duration::from_secs(5 * 60);
