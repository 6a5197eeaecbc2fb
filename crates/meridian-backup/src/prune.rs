//! `meridian backup prune`: applies the retention policy (`meridian_core::backups::plan`) to
//! the catalog and to the WAL archive.
//!
//! A backup is deleted catalog entry first, so an interrupted prune leaves an incomplete
//! backup (listed as such, never restored) rather than a catalog entry without its files.
//! Archived WAL goes only below the horizon of the oldest kept physical backup, with its
//! checksum file; history files and anything not named like WAL are never touched.

use std::path::Path;

use anyhow::Context;
use meridian_core::backups::{Retention, plan, wal_deletable};
use meridian_core::observation::Timestamp;

use crate::catalog::{self, ENTRY};
use crate::store::Store;

/// What a prune did (or, dry, would do).
#[derive(Debug, Clone, Default)]
pub struct Pruned {
    /// Backups kept, newest first.
    pub kept: Vec<String>,
    /// Backups deleted, newest first.
    pub deleted: Vec<String>,
    /// Archived WAL files deleted (checksum files not counted).
    pub wal_deleted: Vec<String>,
    /// The first WAL position kept, as `log/segment` in hexadecimal.
    pub wal_horizon: Option<String>,
}

/// Applies `retention` at `now`; with `dry_run`, deletes nothing.
pub async fn prune(
    store: &Store,
    wal_archive: Option<&Path>,
    retention: Retention,
    now: Timestamp,
    dry_run: bool,
) -> anyhow::Result<Pruned> {
    let listing = catalog::list(store).await?;
    let mut stored = Vec::new();
    for backup in &listing.backups {
        stored.push(backup.stored()?);
    }
    let decided = plan(&stored, retention, now);
    if !dry_run {
        for id in &decided.delete {
            store
                .delete(&format!("{id}/{ENTRY}"))
                .await
                .with_context(|| format!("cannot delete backup {id}'s catalog entry"))?;
            store.delete_all(id).await?;
        }
    }
    let mut wal_deleted = Vec::new();
    if let Some(dir) = wal_archive {
        let entries =
            std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !wal_deletable(&name, decided.wal_horizon) {
                continue;
            }
            if !dry_run {
                let sums = dir.join(format!("{name}.sha256"));
                for path in [entry.path(), sums] {
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => {
                            return Err(e)
                                .with_context(|| format!("cannot delete {}", path.display()));
                        }
                    }
                }
            }
            wal_deleted.push(name);
        }
        wal_deleted.sort();
    }
    Ok(Pruned {
        kept: decided.keep,
        deleted: decided.delete,
        wal_deleted,
        wal_horizon: decided
            .wal_horizon
            .map(|(log, segment)| format!("{log:08X}/{segment:08X}")),
    })
}
