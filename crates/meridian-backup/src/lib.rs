//! Disaster recovery: base backups (physical with `pg_basebackup`, logical with `pg_dump`),
//! their catalog and verification, restores to a point in time, retention, and the WAL
//! archive commands PostgreSQL runs (`archive_command` / `restore_command`).
//!
//! The decisions (which backup a restore starts from, what retention keeps, which WAL the kept
//! backups need) are `meridian_core::backups`'; this crate does the I/O around them. Backups
//! live in a [`Store`]: a directory or an S3-compatible bucket.

pub mod catalog;
pub mod logical;
pub mod pack;
pub mod physical;
pub mod programs;
pub mod prune;
pub mod restore;
pub mod store;
pub mod verify;
pub mod wal_archive;
pub mod watch;

pub use crate::store::Store;

/// A work directory for staging a backup in `scratch`, removed when dropped.
fn work_dir(scratch: &std::path::Path) -> anyhow::Result<tempfile::TempDir> {
    use anyhow::Context;
    tempfile::Builder::new()
        .prefix("meridian-backup-")
        .tempdir_in(scratch)
        .with_context(|| format!("cannot make a work directory in {}", scratch.display()))
}
