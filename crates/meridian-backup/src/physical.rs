//! A physical backup: `pg_basebackup` of the primary (or the most caught-up replica) in plain
//! format with its WAL streamed alongside and a SHA-256 manifest, checked with
//! `pg_verifybackup` before anything is stored, then packed, checksummed and stored, its
//! catalog entry last.
//!
//! Plain format because PostgreSQL 15's `pg_verifybackup` checks only plain backups; the
//! manifest travels inside the pack (and beside it, for inspection), so a restore verifies the
//! unpacked files against it again.

use std::path::Path;

use anyhow::Context;
use meridian_config::Config;
use meridian_control::locate::{Want, locate};

use crate::catalog::{self, Backup, Kind, StoredFile};
use crate::pack;
use crate::programs::{Programs, run, with_password};
use crate::store::Store;

/// The packed data directory's name in a backup.
pub const BASE: &str = "base.tar.gz";
/// The manifest's copy beside it.
pub const MANIFEST: &str = "backup_manifest";

/// What `backup_label` and `backup_manifest` say about a plain backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// START WAL LOCATION.
    pub start_lsn: String,
    /// The file holding it.
    pub start_wal: String,
    /// START TIMELINE.
    pub timeline: u32,
    /// The end of the manifest's last WAL range: consistent from here.
    pub stop_lsn: String,
    /// Sum of the manifest's file sizes.
    pub data_bytes: u64,
}

/// Reads the label and manifest of the plain backup in `dir`.
pub fn read_label(dir: &Path) -> anyhow::Result<Label> {
    let label_path = dir.join("backup_label");
    let label = std::fs::read_to_string(&label_path)
        .with_context(|| format!("cannot read {}", label_path.display()))?;
    let field = |name: &str| {
        label
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::trim)
            .with_context(|| format!("{} has no {name}", label_path.display()))
    };
    // "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)"
    let start = field("START WAL LOCATION:")?;
    let (start_lsn, file) = start
        .split_once(" (file ")
        .with_context(|| format!("unexpected START WAL LOCATION {start:?}"))?;
    let start_wal = file.trim_end_matches(')').to_owned();
    let timeline: u32 = field("START TIMELINE:")?
        .parse()
        .context("START TIMELINE is not a number")?;
    let manifest_path = dir.join(MANIFEST);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&manifest_path)
            .with_context(|| format!("cannot read {}", manifest_path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", manifest_path.display()))?;
    let stop_lsn = manifest["WAL-Ranges"]
        .as_array()
        .and_then(|ranges| ranges.last())
        .and_then(|range| range["End-LSN"].as_str())
        .with_context(|| format!("{} has no WAL range", manifest_path.display()))?
        .to_owned();
    let data_bytes = manifest["Files"]
        .as_array()
        .map(|files| files.iter().filter_map(|f| f["Size"].as_u64()).sum())
        .unwrap_or(0);
    Ok(Label {
        start_lsn: start_lsn.to_owned(),
        start_wal,
        timeline,
        stop_lsn,
        data_bytes,
    })
}

/// Takes, verifies and stores a physical backup; its catalog entry.
pub async fn take(
    config: &Config,
    store: &Store,
    programs: &Programs,
    from: Want,
    scratch: &Path,
    progress: &(dyn Fn(&str) + Sync),
) -> anyhow::Result<Backup> {
    let located = locate(config, from).await?;
    let node = &located.node;
    let server_version: String = located
        .client
        .query_one("SHOW server_version", &[])
        .await
        .context("cannot read the server's version")?
        .get(0);
    let started_at = catalog::now();
    let id = catalog::id_for(&started_at);
    progress(&format!(
        "backup {id}: pg_basebackup from {} ({}:{})",
        node.name, node.host, node.port
    ));
    let work = crate::work_dir(scratch)?;
    let data = work.path().join("data");
    let mut basebackup = programs.command("pg_basebackup");
    basebackup
        .arg("--pgdata")
        .arg(&data)
        .args([
            "--format=plain",
            "--wal-method=stream",
            "--checkpoint=fast",
            "--manifest-checksums=SHA256",
            "--no-password",
        ])
        .arg(format!("--label=meridian {id}"))
        .arg("--dbname")
        .arg(node.conninfo(&located.credentials, &located.credentials.database));
    with_password(&mut basebackup, &located.credentials);
    run(basebackup, &format!("backup of {}", node.name)).await?;
    let stopped_at = catalog::now();
    progress(&format!("backup {id}: pg_verifybackup"));
    let mut verify = programs.command("pg_verifybackup");
    verify.arg("--quiet").arg(&data);
    run(verify, "the new backup does not verify").await?;
    let label = read_label(&data)?;

    progress(&format!("backup {id}: packing {} bytes", label.data_bytes));
    let archive = work.path().join(BASE);
    let packed = {
        let (data, archive) = (data.clone(), archive.clone());
        tokio::task::spawn_blocking(move || pack::pack(&data, &archive))
            .await
            .context("the packing task failed")??
    };
    let manifest = pack::digest(&data.join(MANIFEST))?;
    progress(&format!(
        "backup {id}: storing {} bytes in {store}",
        packed.size
    ));
    store.put_file(&format!("{id}/{BASE}"), &archive).await?;
    store
        .put_file(&format!("{id}/{MANIFEST}"), &data.join(MANIFEST))
        .await?;
    let backup = Backup {
        id: id.clone(),
        kind: Kind::Physical,
        node: node.name.clone(),
        region: node.region.clone(),
        from_replica: from == Want::Replica,
        server_version,
        started_at,
        stopped_at,
        finished_at: catalog::now(),
        timeline: label.timeline,
        start_lsn: label.start_lsn,
        stop_lsn: label.stop_lsn,
        start_wal: Some(label.start_wal),
        data_bytes: label.data_bytes,
        files: vec![
            StoredFile {
                name: BASE.into(),
                size: packed.size,
                sha256: packed.sha256,
                database: None,
            },
            StoredFile {
                name: MANIFEST.into(),
                size: manifest.size,
                sha256: manifest.sha256,
                database: None,
            },
        ],
    };
    catalog::commit(store, &backup).await?;
    Ok(backup)
}
