//! Checking a stored backup: every file's size and SHA-256 against the catalog (and the
//! stored `SHA256SUMS` against both), then the contents themselves: a physical backup is
//! unpacked and checked by `pg_verifybackup` against its manifest (every file's own SHA-256,
//! and the WAL it needs parsed); a logical dump is read back by `pg_restore --list`.
//!
//! A restore runs the same checks on the copy it is about to use, before it touches the
//! target directory.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::catalog::{Backup, Kind, SUMS};
use crate::pack;
use crate::physical::BASE;
use crate::programs::{Programs, run};
use crate::store::Store;

/// A backup fetched and checked.
#[derive(Debug)]
pub struct Fetched {
    /// For a physical backup, the unpacked and verified data directory.
    pub data: Option<PathBuf>,
    /// One line per check passed.
    pub checks: Vec<String>,
}

/// Fetches `backup` into `work` (an empty directory) and checks it; an error names the first
/// check that failed.
pub async fn fetch(
    store: &Store,
    backup: &Backup,
    programs: &Programs,
    work: &Path,
) -> anyhow::Result<Fetched> {
    let mut checks = Vec::new();
    let id = &backup.id;
    let sums = store
        .get_bytes(&format!("{id}/{SUMS}"))
        .await?
        .with_context(|| format!("backup {id} has lost its {SUMS}"))?;
    if sums != backup.sums().as_bytes() {
        bail!("backup {id}: {SUMS} does not match the catalog entry");
    }
    for file in &backup.files {
        let path = work.join(&file.name);
        store
            .get_file(&format!("{id}/{}", file.name), &path)
            .await?;
        let digested = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || pack::digest(&path))
                .await
                .context("the checksum task failed")??
        };
        if digested.size != file.size || digested.sha256 != file.sha256 {
            bail!(
                "backup {id}: {} is corrupted (sha256 {}, {} bytes; the catalog says {}, {} bytes)",
                file.name,
                digested.sha256,
                digested.size,
                file.sha256,
                file.size
            );
        }
        checks.push(format!("{}: sha256 {} ok", file.name, file.sha256));
    }
    let data = match backup.kind {
        Kind::Physical => {
            let data = work.join("data");
            std::fs::create_dir(&data)
                .with_context(|| format!("cannot create {}", data.display()))?;
            let archive = work.join(BASE);
            {
                let (archive, data) = (archive.clone(), data.clone());
                tokio::task::spawn_blocking(move || pack::unpack(&archive, &data))
                    .await
                    .context("the unpacking task failed")??;
            }
            std::fs::remove_file(&archive)
                .with_context(|| format!("cannot remove {}", archive.display()))?;
            let mut verify = programs.command("pg_verifybackup");
            verify.arg("--quiet").arg(&data);
            run(verify, &format!("backup {id} does not verify")).await?;
            checks.push("pg_verifybackup: every file and the WAL it needs ok".to_owned());
            Some(data)
        }
        Kind::Logical => {
            for file in backup.files.iter().filter(|f| f.database.is_some()) {
                let mut list = programs.command("pg_restore");
                list.arg("--list").arg(work.join(&file.name));
                run(
                    list,
                    &format!("backup {id}: {} does not read back", file.name),
                )
                .await?;
                checks.push(format!("{}: pg_restore --list ok", file.name));
            }
            None
        }
    };
    Ok(Fetched { data, checks })
}

/// Fetches the backup `id` (or `latest`) into a temporary directory and checks it.
pub async fn verify(
    store: &Store,
    id: &str,
    programs: &Programs,
) -> anyhow::Result<(Backup, Fetched)> {
    let backup = crate::catalog::find(store, id).await?;
    let work = tempfile::tempdir().context("cannot make a work directory")?;
    let fetched = fetch(store, &backup, programs, work.path()).await?;
    Ok((backup, fetched))
}
