//! Configuration errors.
//!
//! Every error names where the problem is as the user wrote it: a file position, a field path
//! (`pool.max_size`, `users[1].password`, `regions[0].nodes[2].port`) or an environment variable
//! (`MERIDIAN_POOL_MAX_SIZE`, `DB_EU_WEST_REPLICA1_URL`), then what is wrong and how to fix it.
//! Invariant: no error carries a secret (passwords, verifiers, URLs with credentials); values of
//! secret fields are never quoted.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// One configuration problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The config file is not valid TOML, has a value of the wrong type, or has an unknown field.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column (in characters) of the problem.
        column: usize,
        /// The TOML parser's description, without the quoted source line.
        message: String,
    },
    /// A value is out of range, missing, inconsistent with another, or cannot be parsed.
    #[error("{}", render_invalid(.field, .value.as_deref(), .problem))]
    Invalid {
        /// Field path or environment variable name(s).
        field: String,
        /// The offending value, quoted in the message; `None` for secrets and absent values.
        value: Option<String>,
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// Neither a config file nor a database in the environment.
    #[error(
        "no database configured: pass -c meridian.toml, or set DATABASE_URL \
         (single region) or DB_<REGION>_URL (one per region)"
    )]
    NoDatabase,
}

impl ConfigError {
    /// The field path or environment variable the error is about, when it is about one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { field, .. } => Some(field),
            ConfigError::Read { .. } | ConfigError::Parse { .. } | ConfigError::NoDatabase => None,
        }
    }

    pub(crate) fn invalid(
        field: impl Into<String>,
        value: Option<String>,
        problem: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            value,
            problem: problem.into(),
        }
    }
}

fn render_invalid(field: &str, value: Option<&str>, problem: &str) -> String {
    match value {
        Some(value) => format!("{field} = {value}: {problem}"),
        None => format!("{field}: {problem}"),
    }
}

/// All the problems found in one load, in the order found; never empty.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The problems.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(error: ConfigError) -> Self {
        ConfigErrors(vec![error])
    }
}
