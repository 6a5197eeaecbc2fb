//! The credentials the control plane logs in to the nodes with.

use meridian_config::Config;

/// Credentials the control plane logs in with.
#[derive(Clone)]
pub struct Credentials {
    /// Role name.
    pub user: String,
    /// Its password, if the servers ask for one.
    pub password: Option<String>,
    /// Database to connect to.
    pub database: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .finish()
    }
}

impl Credentials {
    /// `monitor.user` and its password, else the server role and password of the first
    /// configured user; on `monitor.database`.
    pub fn from_config(config: &Config) -> Option<Credentials> {
        let monitor = &config.monitor;
        let (user, password) = match &monitor.user {
            Some(user) => (
                user.clone(),
                monitor.password.as_ref().map(|p| p.expose().to_owned()),
            ),
            None => {
                let first = config.users.first()?;
                (
                    first.server_user.clone(),
                    first
                        .server_password
                        .as_ref()
                        .map(|p| p.expose().to_owned()),
                )
            }
        };
        Some(Credentials {
            user,
            password,
            database: monitor.database.clone(),
        })
    }
}
