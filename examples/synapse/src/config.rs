//! The service's own settings, from the environment. The database's (`DATABASE_URL`,
//! `DATABASE_REPLICA_URL`, `DATABASE_REPLICA_URLS`) are read by
//! [`PoolManager::from_env`](meridian_client::PoolManager::from_env).

use std::net::SocketAddr;

/// Where the API listens when `SYNAPSE_LISTEN` is not set.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";

/// Settings of the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// `SYNAPSE_LISTEN`: the API's address.
    pub listen: SocketAddr,
}

/// A setting that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {variable}: {message}")]
pub struct ConfigError {
    /// The environment variable.
    pub variable: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl Config {
    /// From the process environment.
    pub fn from_env() -> Result<Config, ConfigError> {
        Config::from_lookup(|name| std::env::var(name).ok())
    }

    /// From `lookup` (the environment, or a test's table).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let listen = lookup("SYNAPSE_LISTEN")
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen = listen.trim().parse().map_err(|_| ConfigError {
            variable: "SYNAPSE_LISTEN",
            message: format!(
                "{listen:?} is not an address; use host:port, such as {DEFAULT_LISTEN}"
            ),
        })?;
        Ok(Config { listen })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_defaults_and_is_checked() {
        assert_eq!(
            Config::from_lookup(|_| None).unwrap().listen,
            DEFAULT_LISTEN.parse().unwrap()
        );
        assert_eq!(
            Config::from_lookup(|_| Some("0.0.0.0:8080".into()))
                .unwrap()
                .listen
                .port(),
            8080
        );
        let e = Config::from_lookup(|_| Some("localhost".into())).unwrap_err();
        assert_eq!(e.variable, "SYNAPSE_LISTEN");
    }
}
