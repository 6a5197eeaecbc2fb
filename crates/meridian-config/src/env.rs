//! The environment: a snapshot of variables, and the `MERIDIAN_*` overrides of single settings.
//!
//! The library never reads the process environment itself (tests run in parallel with different
//! environments); the binary takes one snapshot with [`Environment::from_process`] and passes it
//! down. An empty variable counts as unset, as container tooling often writes `NAME=` for "none".
//! The overrides are one table, [`ENV_OVERRIDES`], from which the docs can be generated. The
//! topology variables (`DATABASE_URL`, `DB_<REGION>_*`) are handled in `topology`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::ConfigError;
use crate::file::RawConfig;
use crate::origin::Origins;

/// A snapshot of environment variables.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Environment {
    variables: BTreeMap<String, String>,
}

impl Environment {
    /// The current process's environment. Names and values that are not UTF-8 are converted
    /// lossily, so that a broken value is reported rather than silently missing.
    pub fn from_process() -> Self {
        Self::from_pairs(std::env::vars_os().map(|(name, value)| {
            (
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        }))
    }

    /// An environment holding exactly `pairs`.
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Environment {
            variables: pairs
                .into_iter()
                .map(|(name, value)| (name.into(), value.into()))
                .collect(),
        }
    }

    /// The value of `name`; `None` when unset or empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.variables
            .get(name)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    }

    /// The set (non-empty) variables, by name.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.variables
            .iter()
            .filter(|(_, value)| !value.is_empty())
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }
}

/// Prints the variable names only: any value may be a secret.
impl fmt::Debug for Environment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.variables.keys()).finish()
    }
}

/// One environment variable that overrides one setting.
#[derive(Debug, Clone, Copy)]
pub struct EnvOverride {
    /// The variable, e.g. `MERIDIAN_POOL_MAX_SIZE`.
    pub variable: &'static str,
    /// The setting's field path in the TOML file, e.g. `pool.max_size`.
    pub field: &'static str,
    /// What the value is, for generated docs.
    pub description: &'static str,
    /// Stores the value in the file's settings; `Err` describes what is wrong with it.
    apply: fn(&mut RawConfig, &str) -> Result<(), String>,
}

/// Every `MERIDIAN_*` override, applied over the config file (or the defaults when there is no
/// file). A relative path given here is relative to the current directory, not to the file.
pub const ENV_OVERRIDES: &[EnvOverride] = &[
    EnvOverride {
        variable: "MERIDIAN_LISTEN",
        field: "listen",
        description: "proxy listener, IP:port (default 127.0.0.1:6432)",
        apply: |raw, value| {
            raw.listen = Some(value.to_owned());
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_ADMIN_LISTEN",
        field: "admin_listen",
        description: "operator listener (metrics), IP:port (default 127.0.0.1:9930)",
        apply: |raw, value| {
            raw.admin_listen = Some(value.to_owned());
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_PROBE_INTERVAL",
        field: "monitor.probe_interval",
        description: "how often each node is probed (default 1s)",
        apply: |raw, value| {
            raw.monitor.probe_interval = Some(duration(value)?);
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_MONITOR_USER",
        field: "monitor.user",
        description: "role the probes log in as (default: the first user's server_user)",
        apply: |raw, value| {
            raw.monitor.user = Some(value.to_owned());
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_MONITOR_PASSWORD",
        field: "monitor.password",
        description: "password of monitor.user",
        apply: |raw, value| {
            raw.monitor.password = Some(crate::secret::Secret::new(value));
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_FAILOVER_AUTOMATIC",
        field: "failover.automatic",
        description: "fail over without an operator: true or false (default true)",
        apply: |raw, value| {
            raw.failover.automatic = Some(boolean(value)?);
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_ADMIN_TOKEN",
        field: "admin_token",
        description: "bearer token the operator API's commands require",
        apply: |raw, value| {
            raw.admin_token = Some(crate::secret::Secret::new(value));
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_ADMIN_PROTECT_READS",
        field: "admin_protect_reads",
        description: "/metrics and GET /api/database/* need admin_token too: true or false \
                      (default false)",
        apply: |raw, value| {
            raw.admin_protect_reads = Some(boolean(value)?);
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_DATA_DIR",
        field: "data_dir",
        description: "directory of the embedded store (default meridian-data)",
        apply: |raw, value| {
            raw.data_dir = Some(PathBuf::from(value));
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_POOL_MODE",
        field: "proxy.pool_mode",
        description: "transaction (default) or session",
        apply: |raw, value| {
            raw.proxy.pool_mode = Some(value.parse().map_err(|e| format!("{e}"))?);
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_MAX_CLIENT_CONNECTIONS",
        field: "proxy.max_client_connections",
        description: "client connections accepted at once (default 10000)",
        apply: |raw, value| {
            raw.proxy.max_client_connections = Some(integer(value)?);
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_FAILOVER_BUFFER_TIMEOUT",
        field: "proxy.failover_buffer_timeout",
        description: "how long a transaction waits for a primary during a failover (default 15s)",
        apply: |raw, value| {
            raw.proxy.failover_buffer_timeout = Some(duration(value)?);
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_FAILOVER_BUFFER_SIZE",
        field: "proxy.failover_buffer_size",
        description: "transactions waiting for a primary at once, beyond it 53300 (default 10000)",
        apply: |raw, value| {
            raw.proxy.failover_buffer_size = Some(integer(value)?);
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_READ_WRITE_SPLIT",
        field: "routing.read_write_split",
        description: "send reads to replicas: true or false (default true)",
        apply: |raw, value| {
            raw.routing.read_write_split = Some(boolean(value)?);
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_LOCAL_REGION",
        field: "routing.local_region",
        description: "this proxy's region, whose replicas are preferred for reads",
        apply: |raw, value| {
            raw.routing.local_region = Some(value.to_owned());
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_PRIMARY_READS",
        field: "routing.primary_reads",
        description: "reads on the primary: never, fallback (default) or always",
        apply: |raw, value| {
            raw.routing.primary_reads = Some(value.parse().map_err(|e| format!("{e}"))?);
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_READ_YOUR_WRITES",
        field: "routing.read_your_writes",
        description: "writes a replica read must see: off, session (default) or global",
        apply: |raw, value| {
            raw.routing.read_your_writes = Some(value.parse().map_err(|e| format!("{e}"))?);
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_CAUSAL_READ_TIMEOUT",
        field: "routing.causal_read_timeout",
        description: "wait for a replica to replay the session's write, then the primary (default 50ms)",
        apply: |raw, value| {
            raw.routing.causal_read_timeout = Some(duration(value)?);
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_MAX_REPLICA_LAG_BYTES",
        field: "routing.max_replica_lag_bytes",
        description: "replicas further behind get no reads, in bytes (default 16777216)",
        apply: |raw, value| {
            raw.routing.max_replica_lag_bytes = Some(integer(value)?);
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_MAX_REPLICA_LAG_SECONDS",
        field: "routing.max_replica_lag_seconds",
        description: "replicas further behind get no reads, as a duration (default 10s)",
        apply: |raw, value| {
            raw.routing.max_replica_lag_seconds = Some(duration(value)?);
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_POOL_MIN_SIZE",
        field: "pool.min_size",
        description: "idle server connections kept per node, user and database (default 0)",
        apply: |raw, value| {
            raw.pool.min_size = Some(integer(value)?);
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_POOL_MAX_SIZE",
        field: "pool.max_size",
        description: "server connections per node, user and database (default 20)",
        apply: |raw, value| {
            raw.pool.max_size = Some(integer(value)?);
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_POOL_CONNECT_TIMEOUT",
        field: "pool.connect_timeout",
        description: "time allowed to open a server connection (default 5s)",
        apply: |raw, value| {
            raw.pool.connect_timeout = Some(duration(value)?);
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_POOL_CHECKOUT_TIMEOUT",
        field: "pool.checkout_timeout",
        description: "wait for a server connection before SQLSTATE 53300 (default 5s)",
        apply: |raw, value| {
            raw.pool.checkout_timeout = Some(duration(value)?);
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_POOL_IDLE_TIMEOUT",
        field: "pool.idle_timeout",
        description: "close idle server connections after this; 0s = never (default 10m)",
        apply: |raw, value| {
            raw.pool.idle_timeout = Some(duration(value)?);
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_POOL_MAX_LIFETIME",
        field: "pool.max_lifetime",
        description: "close server connections once this old; 0s = never (default 1h)",
        apply: |raw, value| {
            raw.pool.max_lifetime = Some(duration(value)?);
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_SERVER_TLS_MODE",
        field: "server_tls.mode",
        description: "TLS toward servers: disable, prefer (default), require or verify-full",
        apply: |raw, value| {
            raw.server_tls.mode = Some(value.parse().map_err(|e| format!("{e}"))?);
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_TLS_CERT",
        field: "tls.cert",
        description: "PEM certificate presented to clients (with MERIDIAN_TLS_KEY)",
        apply: |raw, value| {
            raw.tls.get_or_insert_default().cert = Some(PathBuf::from(value));
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_TLS_KEY",
        field: "tls.key",
        description: "PEM private key of MERIDIAN_TLS_CERT",
        apply: |raw, value| {
            raw.tls.get_or_insert_default().key = Some(PathBuf::from(value));
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_ETCD",
        field: "coordination.etcd",
        description: "etcd endpoints, comma-separated (turns coordination of several instances on)",
        apply: |raw, value| {
            raw.coordination.get_or_insert_default().etcd = value
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
                .map(str::to_owned)
                .collect();
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_ETCD_PREFIX",
        field: "coordination.prefix",
        description: "this cluster's key prefix in etcd (default /meridian/default)",
        apply: |raw, value| {
            raw.coordination.get_or_insert_default().prefix = Some(value.to_owned());
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_INSTANCE",
        field: "coordination.instance",
        description: "this instance's id among the cluster's (default <host name>:<listen port>)",
        apply: |raw, value| {
            raw.coordination.get_or_insert_default().instance = Some(value.to_owned());
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_ETCD_USER",
        field: "coordination.user",
        description: "etcd user, when etcd has authentication on",
        apply: |raw, value| {
            raw.coordination.get_or_insert_default().user = Some(value.to_owned());
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_ETCD_PASSWORD",
        field: "coordination.password",
        description: "password of coordination.user",
        apply: |raw, value| {
            raw.coordination.get_or_insert_default().password =
                Some(crate::secret::Secret::new(value));
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_BACKUP_LOCATION",
        field: "backup.location",
        description: "where backups go: a directory, file:///dir or s3://bucket/prefix",
        apply: |raw, value| {
            raw.backup.get_or_insert_default().location = Some(value.to_owned());
            Ok(())
        },
    },
    EnvOverride {
        variable: "MERIDIAN_WAL_ARCHIVE_DIR",
        field: "backup.wal_archive",
        description: "the WAL archive directory (the nodes' archive_command writes there)",
        apply: |raw, value| {
            raw.backup.get_or_insert_default().wal_archive = Some(PathBuf::from(value));
            Ok(())
        },
    },
];

/// Applies every set override to `raw`, recording in `origins` which fields they set.
pub(crate) fn apply_overrides(
    raw: &mut RawConfig,
    env: &Environment,
    origins: &mut Origins,
) -> Vec<ConfigError> {
    let mut errors = Vec::new();
    for entry in ENV_OVERRIDES {
        let Some(value) = env.get(entry.variable) else {
            continue;
        };
        match (entry.apply)(raw, value) {
            Ok(()) => origins.set(entry.field, entry.variable),
            Err(problem) => errors.push(ConfigError::invalid(
                entry.variable,
                Some(format!("{value:?}")),
                problem,
            )),
        }
    }
    errors
}

fn boolean(value: &str) -> Result<bool, String> {
    match value.trim() {
        "true" | "on" | "1" => Ok(true),
        "false" | "off" | "0" => Ok(false),
        _ => Err("must be true or false".to_owned()),
    }
}

fn integer(value: &str) -> Result<i64, String> {
    value
        .trim()
        .parse()
        .map_err(|_| "must be a whole number, e.g. 20".to_owned())
}

/// A humantime duration ("5s", "250ms", "10m").
pub(crate) fn duration(value: &str) -> Result<Duration, String> {
    humantime::parse_duration(value.trim()).map_err(|error| {
        format!("not a duration ({error}): write e.g. \"5s\", \"250ms\" or \"10m\"")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_values_count_as_unset_and_debug_hides_values() {
        let env = Environment::from_pairs([("A", ""), ("B", "hunter2")]);
        assert_eq!(env.get("A"), None);
        assert_eq!(env.get("B"), Some("hunter2"));
        assert_eq!(env.get("C"), None);
        let debug = format!("{env:?}");
        assert!(debug.contains('B') && !debug.contains("hunter2"), "{debug}");
    }

    #[test]
    fn every_override_sets_its_field() {
        let mut seen = std::collections::BTreeSet::new();
        for entry in ENV_OVERRIDES {
            assert!(seen.insert(entry.variable), "{} twice", entry.variable);
            let value = match entry.field {
                "listen" | "admin_listen" => "0.0.0.0:1",
                "monitor.probe_interval" => "7s",
                "failover.automatic" => "false",
                "admin_protect_reads" => "true",
                "proxy.pool_mode" => "session",
                "server_tls.mode" => "require",
                "routing.read_write_split" => "false",
                "routing.primary_reads" => "always",
                "routing.read_your_writes" => "global",
                "routing.local_region" => "eu-west",
                "routing.max_replica_lag_seconds" => "7s",
                "routing.max_replica_lag_bytes" => "7",
                "coordination.etcd" => "http://10.0.0.1:2379, http://10.0.0.2:2379",
                "coordination.prefix" => "/meridian/orders",
                f if f.ends_with("timeout") || f.ends_with("lifetime") => "7s",
                f if f.ends_with("size") || f.ends_with("connections") => "7",
                _ => "some/path",
            };
            let mut raw = RawConfig::default();
            let mut origins = Origins::default();
            let env = Environment::from_pairs([(entry.variable, value)]);
            assert!(apply_overrides(&mut raw, &env, &mut origins).is_empty());
            assert_eq!(origins.label(entry.field), entry.variable);
            let set = match entry.field {
                "listen" => raw.listen.is_some(),
                "admin_listen" => raw.admin_listen.is_some(),
                "monitor.probe_interval" => raw.monitor.probe_interval.is_some(),
                "monitor.user" => raw.monitor.user.is_some(),
                "monitor.password" => raw.monitor.password.is_some(),
                "data_dir" => raw.data_dir.is_some(),
                "failover.automatic" => raw.failover.automatic == Some(false),
                "admin_token" => raw.admin_token.is_some(),
                "admin_protect_reads" => raw.admin_protect_reads == Some(true),
                "proxy.pool_mode" => raw.proxy.pool_mode.is_some(),
                "proxy.max_client_connections" => raw.proxy.max_client_connections == Some(7),
                "proxy.failover_buffer_timeout" => raw.proxy.failover_buffer_timeout.is_some(),
                "proxy.failover_buffer_size" => raw.proxy.failover_buffer_size == Some(7),
                "pool.min_size" => raw.pool.min_size == Some(7),
                "pool.max_size" => raw.pool.max_size == Some(7),
                "pool.connect_timeout" => raw.pool.connect_timeout.is_some(),
                "pool.checkout_timeout" => raw.pool.checkout_timeout.is_some(),
                "pool.idle_timeout" => raw.pool.idle_timeout.is_some(),
                "pool.max_lifetime" => raw.pool.max_lifetime.is_some(),
                "server_tls.mode" => raw.server_tls.mode.is_some(),
                "routing.read_write_split" => raw.routing.read_write_split == Some(false),
                "routing.local_region" => raw.routing.local_region.as_deref() == Some("eu-west"),
                "routing.primary_reads" => {
                    raw.routing.primary_reads == Some(crate::PrimaryReads::Always)
                }
                "routing.read_your_writes" => {
                    raw.routing.read_your_writes == Some(crate::ReadYourWrites::Global)
                }
                "routing.causal_read_timeout" => {
                    raw.routing.causal_read_timeout == Some(Duration::from_secs(7))
                }
                "routing.max_replica_lag_bytes" => raw.routing.max_replica_lag_bytes == Some(7),
                "routing.max_replica_lag_seconds" => {
                    raw.routing.max_replica_lag_seconds == Some(Duration::from_secs(7))
                }
                "tls.cert" => raw.tls.is_some_and(|tls| tls.cert.is_some()),
                "tls.key" => raw.tls.is_some_and(|tls| tls.key.is_some()),
                "coordination.etcd" => raw.coordination.is_some_and(|c| c.etcd.len() == 2),
                "coordination.prefix" => raw
                    .coordination
                    .is_some_and(|c| c.prefix.as_deref() == Some("/meridian/orders")),
                "coordination.instance" => raw.coordination.is_some_and(|c| c.instance.is_some()),
                "coordination.user" => raw.coordination.is_some_and(|c| c.user.is_some()),
                "coordination.password" => raw.coordination.is_some_and(|c| c.password.is_some()),
                "backup.location" => raw
                    .backup
                    .as_ref()
                    .is_some_and(|b| b.location.as_deref() == Some("some/path")),
                "backup.wal_archive" => raw.backup.is_some_and(|b| b.wal_archive.is_some()),
                other => panic!("untested override field {other}"),
            };
            assert!(set, "{} did not set {}", entry.variable, entry.field);
        }
    }

    #[test]
    fn invalid_values_name_the_variable() {
        let env = Environment::from_pairs([
            ("MERIDIAN_POOL_MAX_SIZE", "lots"),
            ("MERIDIAN_POOL_IDLE_TIMEOUT", "10 parsecs"),
            ("MERIDIAN_POOL_MODE", "statement"),
        ]);
        let errors = apply_overrides(&mut RawConfig::default(), &env, &mut Origins::default());
        let rendered: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(rendered.len(), 3, "{rendered:?}");
        assert_eq!(
            rendered[0],
            "MERIDIAN_POOL_MODE = \"statement\": must be one of \"transaction\", \"session\""
        );
        assert_eq!(
            rendered[1],
            "MERIDIAN_POOL_MAX_SIZE = \"lots\": must be a whole number, e.g. 20"
        );
        assert!(
            rendered[2].starts_with("MERIDIAN_POOL_IDLE_TIMEOUT = \"10 parsecs\": not a duration")
        );
    }

    #[test]
    fn invalid_routing_values_name_the_variable() {
        let env = Environment::from_pairs([
            ("MERIDIAN_READ_WRITE_SPLIT", "maybe"),
            ("MERIDIAN_PRIMARY_READS", "sometimes"),
            ("MERIDIAN_READ_YOUR_WRITES", "strict"),
            ("MERIDIAN_CAUSAL_READ_TIMEOUT", "soon"),
            ("MERIDIAN_MAX_REPLICA_LAG_BYTES", "16MiB"),
            ("MERIDIAN_MAX_REPLICA_LAG_SECONDS", "10"),
        ]);
        let errors = apply_overrides(&mut RawConfig::default(), &env, &mut Origins::default());
        let rendered: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            rendered[..3],
            [
                "MERIDIAN_READ_WRITE_SPLIT = \"maybe\": must be true or false",
                "MERIDIAN_PRIMARY_READS = \"sometimes\": must be one of \"never\", \"fallback\", \
                 \"always\"",
                "MERIDIAN_READ_YOUR_WRITES = \"strict\": must be one of \"off\", \"session\", \
                 \"global\"",
            ]
        );
        assert!(
            rendered[3].starts_with("MERIDIAN_CAUSAL_READ_TIMEOUT = \"soon\": not a duration"),
            "{rendered:?}"
        );
        assert_eq!(
            rendered[4],
            "MERIDIAN_MAX_REPLICA_LAG_BYTES = \"16MiB\": must be a whole number, e.g. 20"
        );
        assert!(
            rendered[5].starts_with("MERIDIAN_MAX_REPLICA_LAG_SECONDS = \"10\": not a duration"),
            "{rendered:?}"
        );
        assert_eq!(rendered.len(), 6, "{rendered:?}");
    }
}
