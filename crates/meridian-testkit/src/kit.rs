//! What every cluster of one process shares: binaries, the server user, the template.
//!
//! Resolved once per process on first use and immutable afterwards (a cache, not state that
//! changes): locating the binaries, creating the server user and building the template are
//! slow or have side effects, and their answers never change while the process runs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::Context;

use crate::pg_bin::PgBin;
use crate::process;
use crate::run_as::RunAs;
use crate::template;

/// The environment variable naming the kit's base directory (default: `$TMPDIR/meridian-testkit`).
pub const BASE_DIR_ENV: &str = "MERIDIAN_TESTKIT_DIR";

/// Binaries, server user and template, shared by every cluster of the process.
#[derive(Debug)]
pub struct Kit {
    bin: PgBin,
    run_as: RunAs,
    base: PathBuf,
    template: PathBuf,
}

impl Kit {
    /// The process's kit, set up on first call, based in `$MERIDIAN_TESTKIT_DIR` (default
    /// `$TMPDIR/meridian-testkit`).
    pub fn get() -> anyhow::Result<Arc<Kit>> {
        static KIT: OnceLock<Result<Arc<Kit>, String>> = OnceLock::new();
        KIT.get_or_init(|| {
            PgBin::locate()
                .and_then(|bin| Kit::at(base_dir(), bin, RunAs::resolve()?))
                .map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow::anyhow!("cannot set up the PostgreSQL test kit: {e}"))
    }

    /// A kit based in `base` (its template is kept there) with binaries and a server user
    /// already found, for a program that chooses where its clusters live (`meridian demo`).
    /// Slow the first time: it runs `initdb`.
    pub fn at(base: impl Into<PathBuf>, bin: PgBin, run_as: RunAs) -> anyhow::Result<Arc<Kit>> {
        let base = base.into();
        process::adopt_orphans();
        std::fs::create_dir_all(&base)
            .with_context(|| format!("cannot create {}", base.display()))?;
        let template = template::ensure(&bin, &run_as, &base)?;
        Ok(Arc::new(Kit {
            bin,
            run_as,
            base,
            template,
        }))
    }

    /// The PostgreSQL binaries.
    pub fn bin(&self) -> &PgBin {
        &self.bin
    }

    /// The user that runs the servers.
    pub fn run_as(&self) -> &RunAs {
        &self.run_as
    }

    /// Where clusters get their directories unless told otherwise, and the template lives.
    pub fn base(&self) -> &Path {
        &self.base
    }

    /// The template data directory.
    pub(crate) fn template(&self) -> &Path {
        &self.template
    }
}

/// Where clusters (PostgreSQL and etcd) get their directories unless told otherwise:
/// `$MERIDIAN_TESTKIT_DIR`, else `$TMPDIR/meridian-testkit`. (A tmpfs there spares etcd's
/// fsyncs; measured here, it made no difference to start times.)
pub(crate) fn base_dir() -> PathBuf {
    std::env::var_os(BASE_DIR_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("meridian-testkit"))
}
