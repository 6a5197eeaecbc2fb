//! Where backups are kept: a directory or an S3-compatible bucket, behind `object_store`'s one
//! interface, so the same code (and the same tests, on the local backend) serves both.
//!
//! A location is a path, `file:///dir` or `s3://bucket/prefix`. S3 credentials, region and
//! endpoint come from the usual `AWS_*` variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT` for MinIO and the like,
//! `AWS_ALLOW_HTTP=true` for a plain-HTTP endpoint), never from the location, so they stay out
//! of configuration files and messages. Local writes are synced (file and directory) before
//! they count, matching what an object store promises once a put returns.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Upload parts of this size (S3 wants at least 5 MiB per part but the last).
const PART: usize = 8 * 1024 * 1024;

/// A backup location.
#[derive(Clone)]
pub struct Store {
    inner: Arc<dyn ObjectStore>,
    location: String,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("location", &self.location)
            .finish()
    }
}

impl Store {
    /// Opens `location`, creating a local directory if it is missing.
    pub fn open(location: &str) -> anyhow::Result<Store> {
        // Credentials belong in the environment; a location carrying them would be echoed in
        // every message and listing, so it is refused without repeating it.
        if let Some((_, rest)) = location.split_once("://")
            && rest
                .split('/')
                .next()
                .is_some_and(|host| host.contains('@'))
        {
            bail!(
                "the backup location must not carry credentials: write s3://bucket/prefix and \
                 set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            );
        }
        let inner: Arc<dyn ObjectStore> = match location.split_once("://") {
            Some(("s3", rest)) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    bail!("{location}: no bucket; write s3://bucket/prefix");
                }
                let s3 = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .with_context(|| format!("cannot set up the S3 client for {location}"))?;
                let prefix = prefix.trim_matches('/');
                if prefix.is_empty() {
                    Arc::new(s3)
                } else {
                    Arc::new(PrefixStore::new(s3, prefix))
                }
            }
            Some(("file", path)) => Arc::new(local(Path::new(path))?),
            Some((scheme, _)) => {
                bail!("{scheme}:// locations are not supported: use a directory or s3://")
            }
            None => Arc::new(local(Path::new(location))?),
        };
        Ok(Store {
            inner,
            location: location.to_owned(),
        })
    }

    /// The location, as given.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Stores the file at `path` under `key`, streaming it in parts.
    pub async fn put_file(&self, key: &str, path: &Path) -> anyhow::Result<()> {
        let what = || format!("cannot store {} as {key} in {}", path.display(), self);
        let mut file = tokio::fs::File::open(path).await.with_context(what)?;
        let upload = self
            .inner
            .put_multipart(&Key::from(key))
            .await
            .with_context(what)?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
        let mut buffer = vec![0u8; PART];
        loop {
            let read = file.read(&mut buffer).await.with_context(what)?;
            if read == 0 {
                break;
            }
            writer.wait_for_capacity(4).await.with_context(what)?;
            writer.write(&buffer[..read]);
        }
        writer.finish().await.with_context(what)?;
        Ok(())
    }

    /// Stores `bytes` under `key`.
    pub async fn put_bytes(&self, key: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.inner
            .put(&Key::from(key), PutPayload::from(bytes))
            .await
            .with_context(|| format!("cannot store {key} in {self}"))?;
        Ok(())
    }

    /// Copies `key` into a new file at `path`; its size.
    pub async fn get_file(&self, key: &str, path: &Path) -> anyhow::Result<u64> {
        let what = || format!("cannot fetch {key} from {self} into {}", path.display());
        let result = self.inner.get(&Key::from(key)).await.with_context(what)?;
        let mut stream = result.into_stream();
        let mut file = tokio::fs::File::create(path).await.with_context(what)?;
        let mut size = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.with_context(what)?;
            size += chunk.len() as u64;
            file.write_all(&chunk).await.with_context(what)?;
        }
        file.sync_all().await.with_context(what)?;
        Ok(size)
    }

    /// The bytes under `key`; `None` when there is no such object.
    pub async fn get_bytes(&self, key: &str) -> anyhow::Result<Option<bytes::Bytes>> {
        match self.inner.get(&Key::from(key)).await {
            Ok(result) => {
                Ok(Some(result.bytes().await.with_context(|| {
                    format!("cannot read {key} from {self}")
                })?))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {key} from {self}")),
        }
    }

    /// The names directly under the root that hold objects (one per backup).
    pub async fn top_level(&self) -> anyhow::Result<Vec<String>> {
        let listing = self
            .inner
            .list_with_delimiter(None)
            .await
            .with_context(|| format!("cannot list {self}"))?;
        Ok(listing
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_owned))
            .collect())
    }

    /// Every object under `prefix/`, with its size.
    pub async fn list(&self, prefix: &str) -> anyhow::Result<Vec<(String, u64)>> {
        let mut stream = self.inner.list(Some(&Key::from(prefix)));
        let mut objects = Vec::new();
        while let Some(meta) = stream.next().await {
            let meta = meta.with_context(|| format!("cannot list {prefix} in {self}"))?;
            objects.push((meta.location.to_string(), meta.size));
        }
        Ok(objects)
    }

    /// Deletes the object `key` (done if there is none).
    pub async fn delete(&self, key: &str) -> anyhow::Result<()> {
        match self.inner.delete(&Key::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot delete {key} from {self}")),
        }
    }

    /// Deletes every object under `prefix/`.
    pub async fn delete_all(&self, prefix: &str) -> anyhow::Result<()> {
        for (key, _) in self.list(prefix).await? {
            self.inner
                .delete(&Key::from(key.as_str()))
                .await
                .with_context(|| format!("cannot delete {key} from {self}"))?;
        }
        Ok(())
    }
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.location)
    }
}

fn local(dir: &Path) -> anyhow::Result<LocalFileSystem> {
    let dir: PathBuf = if dir.is_absolute() {
        dir.to_owned()
    } else {
        std::env::current_dir()
            .context("cannot read the current directory")?
            .join(dir)
    };
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the backup directory {}", dir.display()))?;
    Ok(LocalFileSystem::new_with_prefix(&dir)
        .with_context(|| format!("cannot use {} for backups", dir.display()))?
        .with_fsync(true)
        .with_automatic_cleanup(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_directory_location_stores_lists_fetches_and_deletes_by_prefix() {
        let dir = tempfile::tempdir().unwrap();
        // A path and a file:// URL name the same place.
        let by_path = Store::open(dir.path().join("backups").to_str().unwrap()).unwrap();
        let by_url =
            Store::open(&format!("file://{}", dir.path().join("backups").display())).unwrap();
        let source = dir.path().join("source");
        std::fs::write(&source, vec![5u8; PART + 10]).unwrap();
        by_path.put_file("b1/base.tar.gz", &source).await.unwrap();
        by_path
            .put_bytes("b1/backup.json", b"{}".to_vec())
            .await
            .unwrap();
        by_path
            .put_bytes("b2/SHA256SUMS", b"x".to_vec())
            .await
            .unwrap();

        let mut top = by_url.top_level().await.unwrap();
        top.sort();
        assert_eq!(top, ["b1", "b2"]);
        let mut listed = by_url.list("b1").await.unwrap();
        listed.sort();
        assert_eq!(
            listed,
            [
                ("b1/backup.json".to_owned(), 2),
                ("b1/base.tar.gz".to_owned(), (PART + 10) as u64)
            ]
        );
        let fetched = dir.path().join("fetched");
        assert_eq!(
            by_url.get_file("b1/base.tar.gz", &fetched).await.unwrap(),
            (PART + 10) as u64
        );
        assert_eq!(std::fs::read(&fetched).unwrap(), vec![5u8; PART + 10]);
        assert_eq!(by_url.get_bytes("b1/missing").await.unwrap(), None);

        by_url.delete("b1/backup.json").await.unwrap();
        by_url.delete("b1/backup.json").await.unwrap();
        by_url.delete_all("b1").await.unwrap();
        assert_eq!(by_path.top_level().await.unwrap(), ["b2"]);
    }

    #[test]
    fn unsupported_locations_are_refused_by_name() {
        let error = Store::open("ftp://host/dir").unwrap_err().to_string();
        assert!(
            error.contains("ftp:// locations are not supported"),
            "{error}"
        );
        let error = Store::open("s3:///prefix").unwrap_err().to_string();
        assert!(error.contains("no bucket"), "{error}");
        let error = Store::open("s3://AKIA:hunter2@bucket/x")
            .unwrap_err()
            .to_string();
        assert!(error.contains("must not carry credentials"), "{error}");
        assert!(!error.contains("hunter2"), "{error}");
    }
}
