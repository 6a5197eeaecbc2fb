//! The proxy's settings in working form: what `meridian-config` validated, with passwords
//! turned into verifiers and TLS files loaded, so that nothing is parsed per connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use meridian_config::{
    AuthMethod, Config, PasswordSpec, PoolMode, ReadYourWrites, RoutingConfig, Secret,
};
use meridian_core::classify::Classifier;
use meridian_core::routing::{PrimaryReads, RoutePolicy};
use meridian_tls::{ClientTls, ServerTlsSet, TlsSetupError};
use meridian_wire::auth::{DEFAULT_ITERATIONS, ScramVerifier, md5_hash, random_salt};

use crate::pool::PoolSettings;

/// How a user proves who it is to the proxy.
#[derive(Debug, Clone)]
pub enum ClientAuth {
    /// SCRAM-SHA-256 against this verifier.
    Scram(ScramVerifier),
    /// md5 against this stored hash (`md5` + hex).
    Md5(Secret),
    /// No password (only allowed on a loopback listener).
    Trust,
}

/// A user allowed through the proxy.
#[derive(Debug, Clone)]
pub struct User {
    /// The name clients log in with.
    pub name: String,
    /// How the client authenticates.
    pub auth: ClientAuth,
    /// The role used on the servers.
    pub server_user: Arc<str>,
    /// Its password on the servers, when they ask for one.
    pub server_password: Option<Secret>,
}

/// Everything the proxy needs to run.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Transaction or session pooling.
    pub pool_mode: PoolMode,
    /// Client connections accepted at once.
    pub max_client_connections: usize,
    /// Run on a server connection before another client gets it, when needed.
    pub server_reset_query: Option<String>,
    /// Time a client has to complete startup and authentication.
    pub client_login_timeout: Duration,
    /// Graceful shutdown: how long transactions may run on.
    pub shutdown_timeout: Duration,
    /// Largest message accepted from either side.
    pub max_message_size: usize,
    /// Connecting and logging in to a server.
    pub connect_timeout: Duration,
    /// How long a transaction that needs the primary waits for one during a failover.
    pub failover_buffer_timeout: Duration,
    /// Most sessions waiting for a primary at once.
    pub failover_buffer_size: usize,
    /// Pool sizes and timeouts.
    pub pool: PoolSettings,
    /// Users by name.
    pub users: HashMap<String, User>,
    /// TLS for clients, when a certificate is configured.
    pub client_tls: Option<ClientTls>,
    /// TLS towards servers, per region.
    pub server_tls: ServerTlsSet,
    /// Where transactions run.
    pub routing: RoutePolicy,
    /// Whose writes a session's reads must see.
    pub read_your_writes: ReadYourWrites,
    /// How long a read waits for a replica to replay the write it must see.
    pub causal_read_timeout: Duration,
    /// Decides what statements do (with the configured extra side-effecting functions).
    pub classifier: Arc<Classifier>,
}

/// Why the settings could not be built.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// A TLS file could not be loaded.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// A `routing.write_functions` pattern is not usable.
    #[error("routing.write_functions: {0}")]
    WriteFunction(String),
    /// A user's stored password cannot be used.
    #[error("users[{index}].password: {message}")]
    Password {
        /// Index in the user list.
        index: usize,
        /// What is wrong.
        message: String,
    },
}

impl ProxySettings {
    /// Builds the working settings from a validated configuration.
    pub fn from_config(config: &Config) -> Result<ProxySettings, SettingsError> {
        let mut users = HashMap::new();
        for (index, user) in config.users.iter().enumerate() {
            let password = user.password.as_ref();
            let auth = match (user.auth, password) {
                (AuthMethod::Trust, _) => ClientAuth::Trust,
                (AuthMethod::ScramSha256, Some(PasswordSpec::Plain(plain))) => ClientAuth::Scram(
                    ScramVerifier::derive(plain.expose(), &random_salt(), DEFAULT_ITERATIONS),
                ),
                (AuthMethod::ScramSha256, Some(PasswordSpec::ScramVerifier(text))) => {
                    ClientAuth::Scram(ScramVerifier::parse(text.expose()).map_err(|e| {
                        SettingsError::Password {
                            index,
                            message: format!("not a valid SCRAM verifier: {e}"),
                        }
                    })?)
                }
                (AuthMethod::Md5, Some(PasswordSpec::Plain(plain))) => {
                    ClientAuth::Md5(Secret::new(md5_hash(&user.name, plain.expose())))
                }
                (AuthMethod::Md5, Some(PasswordSpec::Md5Hash(hash))) => {
                    ClientAuth::Md5(hash.clone())
                }
                (method, _) => {
                    // meridian-config refuses these combinations; this guards the invariant.
                    return Err(SettingsError::Password {
                        index,
                        message: format!("cannot check {method:?} logins with this password"),
                    });
                }
            };
            users.insert(
                user.name.clone(),
                User {
                    name: user.name.clone(),
                    auth,
                    server_user: Arc::from(user.server_user.as_str()),
                    server_password: user.server_password.clone(),
                },
            );
        }
        let client_tls = match &config.tls {
            Some(tls) => Some(meridian_tls::acceptor(&tls.cert, &tls.key)?),
            None => None,
        };
        let server_tls = ServerTlsSet::from_config(config)?;
        let routing = &config.routing;
        let classifier = classifier(routing)?;
        Ok(ProxySettings {
            pool_mode: config.proxy.pool_mode,
            max_client_connections: config.proxy.max_client_connections as usize,
            server_reset_query: config.proxy.server_reset_query.clone(),
            client_login_timeout: config.proxy.client_login_timeout,
            shutdown_timeout: config.proxy.shutdown_timeout,
            max_message_size: config.proxy.max_message_size as usize,
            connect_timeout: config.pool.connect_timeout,
            failover_buffer_timeout: config.proxy.failover_buffer_timeout,
            failover_buffer_size: config.proxy.failover_buffer_size as usize,
            pool: PoolSettings {
                min_size: config.pool.min_size as usize,
                max_size: config.pool.max_size as usize,
                checkout_timeout: config.pool.checkout_timeout,
                idle_timeout: config.pool.idle_timeout,
                max_lifetime: config.pool.max_lifetime,
            },
            users,
            client_tls,
            server_tls,
            routing: route_policy(routing),
            read_your_writes: routing.read_your_writes,
            causal_read_timeout: routing.causal_read_timeout,
            classifier: Arc::new(classifier),
        })
    }
}

/// The routing policy `[routing]` configures.
pub fn route_policy(routing: &RoutingConfig) -> RoutePolicy {
    RoutePolicy {
        split: routing.read_write_split,
        local_region: routing.local_region.as_deref().map(Arc::from),
        max_lag_bytes: routing.max_replica_lag_bytes,
        max_lag: routing.max_replica_lag,
        primary_reads: match routing.primary_reads {
            meridian_config::PrimaryReads::Never => PrimaryReads::Never,
            meridian_config::PrimaryReads::Fallback => PrimaryReads::Fallback,
            meridian_config::PrimaryReads::Always => PrimaryReads::Always,
        },
        pin_session_settings: routing.pin_session_settings,
    }
}

/// The classifier `[routing]` configures: the built-in side-effecting functions plus
/// `write_functions`.
pub fn classifier(routing: &RoutingConfig) -> Result<Classifier, SettingsError> {
    Classifier::new(&routing.write_functions)
        .map_err(|e| SettingsError::WriteFunction(e.to_string()))
}
