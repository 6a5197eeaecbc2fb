//! The catalog: one `backup.json` per backup, beside its files and a `SHA256SUMS` in the
//! format `sha256sum -c` reads.
//!
//! A backup's files are stored first and its `backup.json` last, so a backup interrupted
//! half-way has no catalog entry: it is listed as incomplete and never restored from.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use meridian_core::Lsn;
use meridian_core::backups::{Restorable, StoredBackup};
use meridian_core::observation::Timestamp;
use serde::{Deserialize, Serialize};

use crate::store::Store;

/// The catalog entry's name inside a backup.
pub const ENTRY: &str = "backup.json";
/// The checksum list's name inside a backup.
pub const SUMS: &str = "SHA256SUMS";

/// Physical (a copy of the data directory) or logical (`pg_dump` per database).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// `pg_basebackup`.
    Physical,
    /// `pg_dump -Fc` of each database, and `pg_dumpall --globals-only`.
    Logical,
}

/// One stored file of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredFile {
    /// Its name inside the backup.
    pub name: String,
    /// Bytes stored.
    pub size: u64,
    /// SHA-256 of those bytes, hexadecimal.
    pub sha256: String,
    /// For a logical dump: the database it holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database: Option<String>,
}

/// A catalog entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Backup {
    /// Unique, sortable by time: `20261207T153012345Z`.
    pub id: String,
    /// What it is.
    pub kind: Kind,
    /// The node it was taken from.
    pub node: String,
    /// That node's region.
    pub region: String,
    /// Taken from a replica rather than the primary.
    pub from_replica: bool,
    /// The server's version.
    pub server_version: String,
    /// When it started (RFC 3339).
    pub started_at: String,
    /// When the copy ended: the backup is consistent from a moment before this (RFC 3339).
    pub stopped_at: String,
    /// When it was stored and verified (RFC 3339).
    pub finished_at: String,
    /// The timeline it was taken on.
    pub timeline: u32,
    /// WAL position at the start.
    pub start_lsn: String,
    /// WAL position from which it is consistent (physical), or the position when the dumps
    /// ended (logical).
    pub stop_lsn: String,
    /// The WAL file a restore starts from (physical only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_wal: Option<String>,
    /// Size of the data copied, before compression.
    pub data_bytes: u64,
    /// The stored files.
    pub files: Vec<StoredFile>,
}

impl Backup {
    /// Bytes stored.
    pub fn stored_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// `SHA256SUMS`'s text.
    pub fn sums(&self) -> String {
        self.files
            .iter()
            .map(|f| format!("{}  {}\n", f.sha256, f.name))
            .collect()
    }

    /// As retention sees it.
    pub fn stored(&self) -> anyhow::Result<StoredBackup> {
        Ok(StoredBackup {
            id: self.id.clone(),
            finished_at: parse_time(&self.finished_at)?,
            start_wal: self.start_wal.clone(),
        })
    }

    /// As a restore sees it; `None` for a logical backup.
    pub fn restorable(&self) -> anyhow::Result<Option<Restorable>> {
        if self.kind != Kind::Physical {
            return Ok(None);
        }
        Ok(Some(Restorable {
            id: self.id.clone(),
            stopped_at: parse_time(&self.stopped_at)?,
            stop_lsn: parse_lsn(&self.stop_lsn)?,
        }))
    }
}

/// What the location holds.
#[derive(Debug, Default)]
pub struct Listing {
    /// Complete backups, oldest first.
    pub backups: Vec<Backup>,
    /// Names with files but no catalog entry (interrupted, or being written now).
    pub incomplete: Vec<String>,
}

/// Reads every catalog entry in `store`.
pub async fn list(store: &Store) -> anyhow::Result<Listing> {
    list_after(store, &[]).await
}

/// Reads the catalog, taking the entries of `known` (an earlier listing) as they are: an
/// entry never changes once written, so only new backups cost a read (a request each on S3).
pub async fn list_after(store: &Store, known: &[Backup]) -> anyhow::Result<Listing> {
    let mut listing = Listing::default();
    for name in store.top_level().await? {
        if let Some(backup) = known.iter().find(|b| b.id == name) {
            listing.backups.push(backup.clone());
            continue;
        }
        match store.get_bytes(&format!("{name}/{ENTRY}")).await? {
            None => listing.incomplete.push(name),
            Some(bytes) => {
                let backup: Backup = serde_json::from_slice(&bytes)
                    .with_context(|| format!("{name}/{ENTRY} in {store} is not a catalog entry"))?;
                listing.backups.push(backup);
            }
        }
    }
    listing.backups.sort_by(|a, b| a.id.cmp(&b.id));
    listing.incomplete.sort();
    Ok(listing)
}

/// The entry `id`, or the newest physical one for `latest`.
pub async fn find(store: &Store, id: &str) -> anyhow::Result<Backup> {
    let listing = list(store).await?;
    let found = if id == "latest" {
        listing
            .backups
            .into_iter()
            .rev()
            .find(|b| b.kind == Kind::Physical)
    } else {
        listing.backups.into_iter().find(|b| b.id == id)
    };
    match found {
        Some(backup) => Ok(backup),
        None if id == "latest" => bail!("{store} holds no complete physical backup"),
        None => bail!("no backup {id} in {store} (meridian backup list shows them)"),
    }
}

/// Writes `backup`'s checksum list, then its entry: from then on it exists.
pub async fn commit(store: &Store, backup: &Backup) -> anyhow::Result<()> {
    store
        .put_bytes(&format!("{}/{SUMS}", backup.id), backup.sums().into_bytes())
        .await?;
    let entry = serde_json::to_vec_pretty(backup).context("cannot encode the catalog entry")?;
    store
        .put_bytes(&format!("{}/{ENTRY}", backup.id), entry)
        .await
}

/// Now, in RFC 3339 with milliseconds.
pub fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

/// An id for a backup started at `started_at` (RFC 3339): its digits, sortable.
pub fn id_for(started_at: &str) -> String {
    started_at.replace(['-', ':', '.'], "")
}

/// A catalog time as a [`Timestamp`] (milliseconds since the epoch).
pub fn parse_time(text: &str) -> anyhow::Result<Timestamp> {
    let time = humantime::parse_rfc3339(text)
        .with_context(|| format!("{text:?} is not an RFC 3339 time"))?;
    Ok(Timestamp(millis(time)))
}

/// Milliseconds since the epoch.
pub fn millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as u64
}

/// An LSN as PostgreSQL prints it.
pub fn parse_lsn(text: &str) -> anyhow::Result<Lsn> {
    text.parse()
        .map_err(|_| anyhow::anyhow!("{text:?} is not a WAL position (like 0/3000060)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str) -> Backup {
        Backup {
            id: id.into(),
            kind: Kind::Physical,
            node: "n".into(),
            region: "r".into(),
            from_replica: false,
            server_version: "15".into(),
            started_at: "2026-12-07T15:30:12.345Z".into(),
            stopped_at: "2026-12-07T15:30:13.000Z".into(),
            finished_at: "2026-12-07T15:30:14.000Z".into(),
            timeline: 1,
            start_lsn: "0/2000028".into(),
            stop_lsn: "0/2000100".into(),
            start_wal: Some("000000010000000000000002".into()),
            data_bytes: 10,
            files: vec![StoredFile {
                name: "base.tar.gz".into(),
                size: 3,
                sha256: "ab".into(),
                database: None,
            }],
        }
    }

    #[tokio::test]
    async fn a_relisting_reads_only_the_entries_it_does_not_know() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).unwrap();
        commit(&store, &sample("b1")).await.unwrap();
        commit(&store, &sample("b2")).await.unwrap();
        store.put_bytes("b3/base.tar.gz", vec![1]).await.unwrap();
        let first = list(&store).await.unwrap();
        assert_eq!(first.backups.len(), 2);
        assert_eq!(first.incomplete, ["b3"]);
        // What is known is taken as it is (an entry never changes); the rest is read.
        let mut known = first.backups.clone();
        known[0].node = "as known".into();
        store.delete("b2/backup.json").await.unwrap();
        let again = list_after(&store, &known[..1]).await.unwrap();
        assert_eq!(again.backups.len(), 1);
        assert_eq!(again.backups[0].node, "as known");
        assert_eq!(again.incomplete, ["b2", "b3"]);
    }

    #[test]
    fn ids_sort_by_time_and_sums_read_like_sha256sum() {
        assert_eq!(
            id_for("2026-12-07T15:30:12.345Z"),
            "20261207T153012345Z".to_owned()
        );
        assert!(id_for("2026-12-07T15:30:12.345Z") < id_for("2026-12-07T15:30:13.001Z"));
        let backup = sample("x");
        assert_eq!(backup.sums(), "ab  base.tar.gz\n");
        let restorable = backup.restorable().unwrap().unwrap();
        assert_eq!(restorable.stop_lsn, Lsn(0x2000100));
        assert_eq!(restorable.stopped_at, Timestamp(1_796_657_413_000));
        let json = serde_json::to_string(&backup).unwrap();
        assert_eq!(serde_json::from_str::<Backup>(&json).unwrap(), backup);
    }
}
