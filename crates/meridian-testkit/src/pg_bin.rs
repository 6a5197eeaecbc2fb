//! Where the PostgreSQL server programs are.
//!
//! `MERIDIAN_PG_BIN` names the directory explicitly; otherwise `pg_config --bindir` tells
//! (Debian's `pg_config` points at the newest installed server, e.g.
//! `/usr/lib/postgresql/15/bin`). The version is read from `postgres --version` so that the
//! template cache is never shared between two server versions.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// The environment variable that overrides the binary directory.
pub const PG_BIN_ENV: &str = "MERIDIAN_PG_BIN";

/// The PostgreSQL server binaries of one installation.
#[derive(Debug, Clone)]
pub struct PgBin {
    dir: PathBuf,
    version: String,
}

impl PgBin {
    /// Finds the binaries through `MERIDIAN_PG_BIN` or `pg_config --bindir`.
    pub fn locate() -> anyhow::Result<PgBin> {
        let dir = match std::env::var_os(PG_BIN_ENV) {
            Some(dir) => PathBuf::from(dir),
            None => {
                let output = Command::new("pg_config").arg("--bindir").output().context(
                    "cannot run pg_config to find the PostgreSQL binaries: install the server \
                     (apt-get install -y postgresql) or set MERIDIAN_PG_BIN to its bin directory",
                )?;
                if !output.status.success() {
                    bail!(
                        "pg_config --bindir failed ({}): set MERIDIAN_PG_BIN to the PostgreSQL bin directory",
                        String::from_utf8_lossy(&output.stderr).trim()
                    );
                }
                PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
            }
        };
        Self::at(dir)
    }

    /// Uses the binaries in `dir`, checking that the server programs are there.
    pub fn at(dir: impl Into<PathBuf>) -> anyhow::Result<PgBin> {
        let dir = dir.into();
        for program in ["postgres", "initdb", "pg_basebackup"] {
            if !dir.join(program).is_file() {
                bail!(
                    "{} has no {program}: install the PostgreSQL server (apt-get install -y postgresql) \
                     or point {PG_BIN_ENV} at its bin directory",
                    dir.display()
                );
            }
        }
        let output = Command::new(dir.join("postgres"))
            .arg("--version")
            .output()
            .with_context(|| format!("cannot run {}/postgres --version", dir.display()))?;
        let version = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if !output.status.success() || version.is_empty() {
            bail!("{}/postgres --version printed nothing", dir.display());
        }
        Ok(PgBin { dir, version })
    }

    /// The full path of one program, e.g. `program("pg_rewind")`.
    pub fn program(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The directory holding the binaries.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What `postgres --version` printed, e.g. `postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)`.
    pub fn version(&self) -> &str {
        &self.version
    }
}
