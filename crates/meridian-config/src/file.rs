//! The config file as written: TOML deserialized with every field optional, before defaults,
//! environment overrides and validation.
//!
//! Unknown fields are rejected (`deny_unknown_fields`) so that a misspelt option is an error
//! rather than a silently ignored setting. Parse errors keep the TOML parser's position but not
//! its quotation of the source line, which could show a password.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::config::{AuthMethod, PoolMode, PrimaryReads, ReadYourWrites, ServerTlsMode};
use crate::error::ConfigError;
use crate::secret::Secret;

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub(crate) listen: Option<String>,
    pub(crate) admin_listen: Option<String>,
    pub(crate) data_dir: Option<PathBuf>,
    #[serde(default)]
    pub(crate) proxy: RawProxy,
    #[serde(default)]
    pub(crate) pool: RawPool,
    #[serde(default)]
    pub(crate) routing: RawRouting,
    pub(crate) tls: Option<RawTls>,
    #[serde(default)]
    pub(crate) server_tls: RawServerTls,
    #[serde(default)]
    pub(crate) users: Vec<RawUser>,
    #[serde(default)]
    pub(crate) regions: Vec<RawRegion>,
    #[serde(default)]
    pub(crate) monitor: RawMonitor,
    #[serde(default)]
    pub(crate) failover: RawFailover,
    #[serde(default, deserialize_with = "secret")]
    pub(crate) admin_token: Option<Secret>,
    pub(crate) admin_protect_reads: Option<bool>,
    pub(crate) coordination: Option<RawCoordination>,
    pub(crate) backup: Option<RawBackup>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBackup {
    pub(crate) location: Option<String>,
    pub(crate) wal_archive: Option<PathBuf>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) archive_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) max_rpo: Option<Duration>,
    pub(crate) keep: Option<i64>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) keep_for: Option<Duration>,
    pub(crate) meridian_bin: Option<PathBuf>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCoordination {
    #[serde(default)]
    pub(crate) etcd: Vec<String>,
    pub(crate) prefix: Option<String>,
    pub(crate) instance: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) lease_ttl: Option<Duration>,
    pub(crate) user: Option<String>,
    #[serde(default, deserialize_with = "secret")]
    pub(crate) password: Option<Secret>,
    pub(crate) ca_cert: Option<PathBuf>,
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
    pub(crate) roles: Option<Vec<String>>,
    pub(crate) reads_when_fenced: Option<bool>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFailover {
    pub(crate) automatic: Option<bool>,
    pub(crate) failure_threshold: Option<i64>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) confirm_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) receiver_timeout: Option<Duration>,
    pub(crate) max_lag_on_failover: Option<i64>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) min_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) step_timeout: Option<Duration>,
    pub(crate) pg_bin: Option<PathBuf>,
    pub(crate) rejoin_command: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawMonitor {
    pub(crate) user: Option<String>,
    #[serde(default, deserialize_with = "secret")]
    pub(crate) password: Option<Secret>,
    pub(crate) database: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) probe_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) probe_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) reconnect_initial: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) reconnect_max: Option<Duration>,
    pub(crate) reconnect_attempts: Option<i64>,
    pub(crate) failures_to_down: Option<i64>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) slow_warning: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) slow_critical: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) lag_warning: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) lag_critical: Option<Duration>,
    pub(crate) error_rate_warning: Option<f64>,
    pub(crate) error_rate_critical: Option<f64>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) history_retention: Option<Duration>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProxy {
    pub(crate) pool_mode: Option<PoolMode>,
    pub(crate) max_client_connections: Option<i64>,
    pub(crate) server_reset_query: Option<String>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) client_login_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) shutdown_timeout: Option<Duration>,
    pub(crate) max_message_size: Option<i64>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) failover_buffer_timeout: Option<Duration>,
    pub(crate) failover_buffer_size: Option<i64>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPool {
    pub(crate) min_size: Option<i64>,
    pub(crate) max_size: Option<i64>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) connect_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) checkout_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) max_lifetime: Option<Duration>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouting {
    pub(crate) read_write_split: Option<bool>,
    pub(crate) local_region: Option<String>,
    pub(crate) max_replica_lag_bytes: Option<i64>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) max_replica_lag_seconds: Option<Duration>,
    pub(crate) primary_reads: Option<PrimaryReads>,
    pub(crate) read_your_writes: Option<ReadYourWrites>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) causal_read_timeout: Option<Duration>,
    pub(crate) pin_session_settings: Option<bool>,
    pub(crate) write_functions: Option<Vec<String>>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTls {
    pub(crate) cert: Option<PathBuf>,
    pub(crate) key: Option<PathBuf>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServerTls {
    pub(crate) mode: Option<ServerTlsMode>,
    pub(crate) root_cert: Option<PathBuf>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUser {
    pub(crate) name: Option<String>,
    #[serde(default, deserialize_with = "secret")]
    pub(crate) password: Option<Secret>,
    pub(crate) auth: Option<AuthMethod>,
    pub(crate) server_user: Option<String>,
    #[serde(default, deserialize_with = "secret")]
    pub(crate) server_password: Option<Secret>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRegion {
    pub(crate) name: Option<String>,
    pub(crate) priority: Option<i64>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) probe_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    pub(crate) failover_timeout: Option<Duration>,
    pub(crate) ssl: Option<ServerTlsMode>,
    #[serde(default)]
    pub(crate) nodes: Vec<RawNode>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNode {
    pub(crate) name: Option<String>,
    pub(crate) host: Option<String>,
    pub(crate) port: Option<i64>,
    pub(crate) no_failover: Option<bool>,
    pub(crate) priority: Option<i64>,
    pub(crate) data_dir: Option<PathBuf>,
}

/// Parses the text of the file at `path` (named in errors).
pub(crate) fn parse(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    toml::from_str(text).map_err(|mut error| {
        let (line, column) = error
            .span()
            .map_or((1, 1), |span| position(text, span.start));
        // Without the input, the error renders as its message plus the table it was in,
        // leaving out the quoted source line.
        error.set_input(None);
        let rendered = error.to_string();
        let mut parts = rendered.trim_end().lines();
        let mut message = parts
            .next()
            .unwrap_or_default()
            .replace("expected i64", "expected a whole number");
        for context in parts {
            message.push_str(" (");
            message.push_str(context);
            message.push(')');
        }
        ConfigError::Parse {
            path: path.to_owned(),
            line,
            column,
            message,
        }
    })
}

impl RawConfig {
    /// Makes the file's relative paths relative to `base`, the file's directory.
    pub(crate) fn resolve_paths(&mut self, base: &Path) {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        self.data_dir.iter_mut().for_each(resolve);
        if let Some(tls) = &mut self.tls {
            tls.cert.iter_mut().for_each(resolve);
            tls.key.iter_mut().for_each(resolve);
        }
        self.server_tls.root_cert.iter_mut().for_each(resolve);
        self.failover.pg_bin.iter_mut().for_each(resolve);
        if let Some(coordination) = &mut self.coordination {
            coordination.ca_cert.iter_mut().for_each(resolve);
            coordination.cert.iter_mut().for_each(resolve);
            coordination.key.iter_mut().for_each(resolve);
        }
        if let Some(backup) = &mut self.backup {
            backup.wal_archive.iter_mut().for_each(resolve);
            backup.meridian_bin.iter_mut().for_each(resolve);
            // A location without a scheme is a directory, relative to the file like the rest.
            if let Some(location) = &mut backup.location
                && !location.contains("://")
            {
                let mut path = PathBuf::from(&*location);
                resolve(&mut path);
                *location = path.display().to_string();
            }
        }
        for region in &mut self.regions {
            for node in &mut region.nodes {
                node.data_dir.iter_mut().for_each(resolve);
            }
        }
    }
}

/// 1-based line and character column of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Deserializes a secret string; a value of another type is refused without quoting it (serde's
/// usual message would, and an unquoted number can be a password).
fn secret<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Secret>, D::Error> {
    struct SecretVisitor;

    impl serde::de::Visitor<'_> for SecretVisitor {
        type Value = Secret;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }

        fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Secret, E> {
            Ok(Secret::new(value))
        }

        fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
            Err(E::custom(NOT_A_STRING))
        }

        fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
            Err(E::custom(NOT_A_STRING))
        }

        fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
            Err(E::custom(NOT_A_STRING))
        }

        fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
            Err(E::custom(NOT_A_STRING))
        }
    }

    const NOT_A_STRING: &str = "a password must be a quoted string, e.g. password = \"...\"";
    deserializer.deserialize_str(SecretVisitor).map(Some)
}
