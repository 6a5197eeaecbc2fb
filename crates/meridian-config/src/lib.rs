//! Meridian's configuration: types read from TOML and the environment, and their validation.
//!
//! [`Config::load`] is the one entry point. With a file it reads the TOML, applies the
//! `MERIDIAN_*` overrides of [`ENV_OVERRIDES`], and validates; without one it builds the topology
//! from `DATABASE_URL` or `DB_<REGION>_URL` (see the `topology` module) over the defaults. The
//! environment is always a parameter ([`Environment`]), never read here, so tests run in
//! parallel. Every problem found is reported at once ([`ConfigErrors`]), each naming the field or
//! variable as the user wrote it; secrets are never printed ([`Secret`], [`redact_url`]).
//!
//! Paths (`data_dir`, `tls.cert`, `tls.key`, `server_tls.root_cert`) written in the file are
//! relative to the file's directory (`data_dir` defaults to `meridian-data` beside the file);
//! paths from the environment, or with no file, are kept as written, relative to the current
//! directory.

mod config;
mod defaults;
mod env;
mod error;
mod file;
mod origin;
mod postgres_url;
mod secret;
mod topology;
mod validate;

use std::path::{Path, PathBuf};

pub use crate::config::{
    AuthMethod, BackupConfig, Config, CoordinationConfig, FailoverConfig, MonitorConfig,
    NodeConfig, PoolConfig, PoolMode, PrimaryReads, ProxyConfig, ReadYourWrites, RegionConfig,
    RoutingConfig, ServerTlsConfig, ServerTlsMode, TlsConfig, UnknownKeyword, UserConfig,
};
pub use crate::env::{ENV_OVERRIDES, EnvOverride, Environment};
pub use crate::error::{ConfigError, ConfigErrors};
pub use crate::postgres_url::redact_url;
pub use crate::secret::{PasswordSpec, Secret};

use crate::file::RawConfig;
use crate::origin::Origins;

impl Config {
    /// Loads the configuration from the TOML file at `path` (when given) and `env`, and
    /// validates it. Reads nothing but that file.
    pub fn load(path: Option<&Path>, env: &Environment) -> Result<Config, ConfigErrors> {
        let raw = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                Some((path, text))
            }
            None => None,
        };
        load_text(raw.as_ref().map(|(path, text)| (*path, text.as_str())), env)
    }
}

/// [`Config::load`] once the file, if any, has been read.
fn load_text(file: Option<(&Path, &str)>, env: &Environment) -> Result<Config, ConfigErrors> {
    let mut origins = Origins::default();
    let mut raw = match file {
        Some((path, text)) => {
            let mut raw = file::parse(text, path)?;
            raw.data_dir
                .get_or_insert_with(|| PathBuf::from(defaults::DATA_DIR));
            raw.resolve_paths(path.parent().unwrap_or(Path::new("")));
            raw
        }
        None => RawConfig::default(),
    };
    let mut errors = env::apply_overrides(&mut raw, env, &mut origins);
    let topology_variables = topology::variables(env);
    let mut topology_reported = false;
    match file {
        Some((path, _)) if !topology_variables.is_empty() => {
            errors.push(ConfigError::invalid(
                topology_variables.join(", "),
                None,
                format!(
                    "set together with the config file {}: two sources of topology would be \
                     ambiguous; unset them, or run without the file",
                    path.display()
                ),
            ));
        }
        Some(_) => {}
        None if topology_variables.is_empty() => {
            errors.push(ConfigError::NoDatabase);
            return Err(ConfigErrors(errors));
        }
        None => {
            let topology_errors = topology::apply(&mut raw, env, &mut origins);
            topology_reported = !topology_errors.is_empty();
            errors.extend(topology_errors);
        }
    }
    validate::validate(raw, &origins, errors, topology_reported)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_paths_are_relative_to_the_file_directory_as_named() {
        let file = "[[regions]]\nname = \"r\"\n[[regions.nodes]]\nname = \"n\"\nhost = \"h\"\n";
        let env = Environment::default();
        for (path, data_dir) in [
            ("meridian.toml", "meridian-data"),
            ("conf/meridian.toml", "conf/meridian-data"),
            ("/etc/meridian/meridian.toml", "/etc/meridian/meridian-data"),
        ] {
            let config = load_text(Some((Path::new(path), file)), &env).unwrap();
            assert_eq!(config.data_dir, Path::new(data_dir));
        }
    }
}
