//! Packing a verified plain-format base backup into one compressed file, checksummed as it is
//! written, and unpacking it again.
//!
//! gzip at its fastest level: PostgreSQL's data files compress several-fold even so, and a
//! restore's time goes into unpacking, which is the same speed at every level.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use anyhow::Context;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

/// A writer that hashes and counts what goes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    size: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.hasher.update(&buf[..written]);
        self.size += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Size and SHA-256 (hexadecimal) of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digested {
    /// Bytes.
    pub size: u64,
    /// SHA-256, hexadecimal.
    pub sha256: String,
}

fn hex(digest: impl AsRef<[u8]>) -> String {
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Packs the contents of `dir` into `archive` (a gzip-compressed tar); its size and checksum.
pub fn pack(dir: &Path, archive: &Path) -> anyhow::Result<Digested> {
    let what = || format!("cannot pack {} into {}", dir.display(), archive.display());
    let file = File::create(archive).with_context(what)?;
    let hashing = Hashing {
        inner: BufWriter::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
        size: 0,
    };
    let mut tar = tar::Builder::new(GzEncoder::new(hashing, Compression::fast()));
    tar.follow_symlinks(false);
    tar.append_dir_all(".", dir).with_context(what)?;
    let mut hashing = tar
        .into_inner()
        .with_context(what)?
        .finish()
        .with_context(what)?;
    hashing.flush().with_context(what)?;
    let file = hashing
        .inner
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(what)?;
    file.sync_all().with_context(what)?;
    Ok(Digested {
        size: hashing.size,
        sha256: hex(hashing.hasher.finalize()),
    })
}

/// Unpacks `archive` into `dir` (which must exist), keeping permissions.
pub fn unpack(archive: &Path, dir: &Path) -> anyhow::Result<()> {
    let what = || format!("cannot unpack {} into {}", archive.display(), dir.display());
    let file = File::open(archive).with_context(what)?;
    let mut tar = tar::Archive::new(GzDecoder::new(BufReader::with_capacity(1 << 20, file)));
    tar.set_preserve_permissions(true);
    tar.set_overwrite(false);
    tar.unpack(dir).with_context(what)
}

/// Size and SHA-256 of the file at `path`.
pub fn digest(path: &Path) -> anyhow::Result<Digested> {
    let what = || format!("cannot read {}", path.display());
    let mut file = File::open(path).with_context(what)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let read = file.read(&mut buffer).with_context(what)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
        size += read as u64;
    }
    Ok(Digested {
        size,
        sha256: hex(hasher.finalize()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_packed_tree_unpacks_the_same_with_the_checksum_of_its_bytes() {
        let from = tempfile::tempdir().unwrap();
        std::fs::create_dir(from.path().join("base")).unwrap();
        std::fs::write(from.path().join("base/1"), vec![7u8; 100_000]).unwrap();
        std::fs::write(from.path().join("PG_VERSION"), "15\n").unwrap();
        let out = tempfile::tempdir().unwrap();
        let archive = out.path().join("base.tar.gz");
        let packed = pack(from.path(), &archive).unwrap();
        assert_eq!(packed, digest(&archive).unwrap());
        assert!(packed.size < 100_000, "compressed: {}", packed.size);
        let to = tempfile::tempdir().unwrap();
        unpack(&archive, to.path()).unwrap();
        assert_eq!(
            std::fs::read(to.path().join("base/1")).unwrap(),
            vec![7u8; 100_000]
        );
        assert_eq!(
            std::fs::read(to.path().join("PG_VERSION")).unwrap(),
            b"15\n"
        );
    }
}
