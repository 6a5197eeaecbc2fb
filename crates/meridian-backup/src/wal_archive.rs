//! `meridian wal-archive %p %f` and `meridian wal-restore %f %p`: PostgreSQL's
//! `archive_command` and `restore_command`, into and out of an archive directory.
//!
//! - **Atomic**: a file is written under a temporary name, synced, renamed into place and its
//!   directory synced, so a crash never leaves a partial segment under its real name.
//! - **Idempotent**: PostgreSQL may archive the same segment again (after a crash between
//!   archiving and recording it). An archived file with the same content is success; a
//!   different one is an error that keeps the original, as PostgreSQL's docs require of an
//!   archive command.
//! - **Checksummed**: each file has a `<name>.sha256` beside it; a restore verifies it before
//!   handing the file to PostgreSQL, and refuses a corrupted one.
//!
//! Names are checked: a WAL segment (24 hexadecimal digits), a timeline history file
//! (`<8 hex>.history`), a backup label (`<24 hex>.<8 hex>.backup`) or a partial segment
//! (`<24 hex>.partial`); anything else (a path, `..`) is refused.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// What went wrong, for the one line PostgreSQL logs.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Not a file name PostgreSQL archives.
    #[error("{0:?} is not a WAL file name (a segment, .history, .backup or .partial)")]
    BadName(String),
    /// Archived before with other content: kept, not overwritten.
    #[error(
        "{name} is already archived with different content (sha256 {archived}, new {new}); kept the archived one"
    )]
    Conflict {
        /// The file.
        name: String,
        /// Checksum of the archived copy.
        archived: String,
        /// Checksum of the one offered now.
        new: String,
    },
    /// Not in the archive (a restore command's normal "no such file").
    #[error("{0} is not in the archive")]
    Missing(String),
    /// The archived file does not match its checksum.
    #[error("{name} in the archive is corrupted: sha256 {actual}, expected {expected}")]
    Corrupted {
        /// The file.
        name: String,
        /// What it hashes to.
        actual: String,
        /// What its `.sha256` says.
        expected: String,
    },
    /// A file system error, with what was being done.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> ArchiveError {
    let what = what.into();
    move |source| ArchiveError::Io { what, source }
}

/// Whether `name` is a file PostgreSQL archives.
pub fn is_wal_name(name: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    match name.split_once('.') {
        None => hex(name, 24),
        Some((stem, "history")) => hex(stem, 8),
        Some((stem, "partial")) => hex(stem, 24),
        Some((stem, rest)) => match rest.split_once('.') {
            Some((offset, "backup")) => hex(stem, 24) && hex(offset, 8),
            _ => false,
        },
    }
}

fn sha256_of(path: &Path) -> Result<String, ArchiveError> {
    let mut file = File::open(path).map_err(io_error(format!("cannot open {}", path.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(io_error(format!("cannot read {}", path.display())))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Writes `bytes` (or a copy of `source`) to `target` atomically: a temporary name in the
/// same directory, synced, renamed, the directory synced.
fn write_atomically(target: &Path, content: Content<'_>) -> Result<(), ArchiveError> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let temporary = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let written = (|| {
        let mut file = File::create(&temporary)?;
        match content {
            Content::Bytes(bytes) => file.write_all(bytes)?,
            Content::CopyOf(source) => {
                io::copy(&mut File::open(source)?, &mut file)?;
            }
        }
        file.sync_all()?;
        fs::rename(&temporary, target)?;
        File::open(dir)?.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&temporary);
        return Err(ArchiveError::Io {
            what: format!("cannot write {}", target.display()),
            source: e,
        });
    }
    Ok(())
}

enum Content<'a> {
    Bytes(&'a [u8]),
    CopyOf(&'a Path),
}

fn checksum_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.sha256"))
}

/// Archives `source` (PostgreSQL's `%p`) as `name` (`%f`) into `dir`.
pub fn archive(source: &Path, name: &str, dir: &Path) -> Result<(), ArchiveError> {
    if !is_wal_name(name) {
        return Err(ArchiveError::BadName(name.to_owned()));
    }
    fs::create_dir_all(dir).map_err(io_error(format!("cannot create {}", dir.display())))?;
    let target = dir.join(name);
    let new = sha256_of(source)?;
    if target.exists() {
        let archived = sha256_of(&target)?;
        if archived == new {
            // Archived already (PostgreSQL retried): make sure the checksum is there too.
            return write_atomically(&checksum_path(dir, name), Content::Bytes(new.as_bytes()));
        }
        return Err(ArchiveError::Conflict {
            name: name.to_owned(),
            archived,
            new,
        });
    }
    // The checksum first: a segment under its real name always has one.
    write_atomically(&checksum_path(dir, name), Content::Bytes(new.as_bytes()))?;
    write_atomically(&target, Content::CopyOf(source))?;
    // The source could have changed between hashing and copying: check what landed.
    let landed = sha256_of(&target)?;
    if landed != new {
        write_atomically(&checksum_path(dir, name), Content::Bytes(landed.as_bytes()))?;
    }
    Ok(())
}

/// Restores `name` (`%f`) from `dir` to `target` (`%p`), after checking its checksum.
pub fn restore(name: &str, target: &Path, dir: &Path) -> Result<(), ArchiveError> {
    if !is_wal_name(name) {
        return Err(ArchiveError::BadName(name.to_owned()));
    }
    let source = dir.join(name);
    if !source.exists() {
        return Err(ArchiveError::Missing(name.to_owned()));
    }
    verify(name, dir)?;
    write_atomically(target, Content::CopyOf(&source))
}

/// Checks an archived file against its checksum.
pub fn verify(name: &str, dir: &Path) -> Result<(), ArchiveError> {
    let expected = fs::read_to_string(checksum_path(dir, name))
        .map_err(io_error(format!("cannot read the checksum of {name}")))?;
    let actual = sha256_of(&dir.join(name))?;
    if actual != expected.trim() {
        return Err(ArchiveError::Corrupted {
            name: name.to_owned(),
            actual,
            expected: expected.trim().to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEGMENT: &str = "000000010000000000000003";

    fn file(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, content).unwrap();
        path
    }

    #[test]
    fn names_are_wal_files_only() {
        for good in [
            SEGMENT,
            "00000002.history",
            "000000010000000000000003.00000028.backup",
            "000000010000000000000003.partial",
        ] {
            assert!(is_wal_name(good), "{good}");
        }
        for bad in [
            "",
            "../000000010000000000000003",
            "00000001000000000000000G",
            "0000000100000000000000031",
            "00000002.history.old",
            "postgresql.conf",
            "000000010000000000000003.backup",
        ] {
            assert!(!is_wal_name(bad), "{bad}");
        }
    }

    #[test]
    fn archiving_twice_is_success_and_different_content_keeps_the_original() {
        let pg = tempfile::tempdir().unwrap();
        let archive_dir = pg.path().join("archive");
        let segment = file(pg.path(), "seg", b"wal bytes");
        archive(&segment, SEGMENT, &archive_dir).unwrap();
        archive(&segment, SEGMENT, &archive_dir).unwrap();
        assert_eq!(fs::read(archive_dir.join(SEGMENT)).unwrap(), b"wal bytes");

        let other = file(pg.path(), "other", b"other bytes");
        let e = archive(&other, SEGMENT, &archive_dir).unwrap_err();
        assert!(matches!(e, ArchiveError::Conflict { .. }), "{e}");
        assert_eq!(fs::read(archive_dir.join(SEGMENT)).unwrap(), b"wal bytes");
        verify(SEGMENT, &archive_dir).unwrap();
        // No temporary file is left behind.
        let names: Vec<String> = fs::read_dir(&archive_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    }

    #[test]
    fn a_restore_verifies_the_checksum_and_refuses_a_corrupted_file() {
        let pg = tempfile::tempdir().unwrap();
        let archive_dir = pg.path().join("archive");
        let segment = file(pg.path(), "seg", b"wal bytes");
        archive(&segment, SEGMENT, &archive_dir).unwrap();
        let restored = pg.path().join("RECOVERYXLOG");
        restore(SEGMENT, &restored, &archive_dir).unwrap();
        assert_eq!(fs::read(&restored).unwrap(), b"wal bytes");

        fs::write(archive_dir.join(SEGMENT), b"wal bytez").unwrap();
        let target = pg.path().join("again");
        let e = restore(SEGMENT, &target, &archive_dir).unwrap_err();
        assert!(matches!(e, ArchiveError::Corrupted { .. }), "{e}");
        assert!(!target.exists(), "nothing handed to PostgreSQL");

        let e = restore("000000010000000000000009", &target, &archive_dir).unwrap_err();
        assert!(matches!(e, ArchiveError::Missing(_)), "{e}");
        let e = archive(&segment, "../escape", &archive_dir).unwrap_err();
        assert!(matches!(e, ArchiveError::BadName(_)), "{e}");
    }
}
