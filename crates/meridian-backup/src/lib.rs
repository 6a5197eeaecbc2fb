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
pub mod watch;
pub mod wal_archive;

pub use crate::store::Store;
