//! A certificate for servers started with [`crate::ClusterBuilder::tls`].
//!
//! One self-signed certificate per cluster, valid for `localhost` and `127.0.0.1` (the kit's
//! servers listen on loopback only), so that it is at once the server certificate and the
//! root a client verifies it against (`sslmode=verify-full`, Meridian's `[server_tls]
//! root_cert`). PostgreSQL reads `server.crt` and `server.key` from the data directory by
//! default and refuses a key that others can read, or that is not owned by the server user
//! (PostgreSQL docs, 19.9.3 "Creating Certificates" and 19.9.1).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::run_as::RunAs;

/// Writes a new certificate and key into `data_dir` (as `server.crt` and `server.key`, owned
/// by the server user) and the certificate again as `root.crt` in `public_dir` for clients;
/// returns the path of the latter.
pub(crate) fn install(
    data_dir: &Path,
    public_dir: &Path,
    run_as: &RunAs,
) -> anyhow::Result<PathBuf> {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .context("cannot generate a TLS certificate")?;
    let cert = certified.cert.pem();
    let key = certified.signing_key.serialize_pem();

    let cert_path = data_dir.join("server.crt");
    fs::write(&cert_path, &cert)
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    run_as.give(&cert_path)?;
    let key_path = data_dir.join("server.key");
    // Created 0600 rather than narrowed afterwards: the key is never readable by others.
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&key_path)
        .and_then(|mut file| file.write_all(key.as_bytes()))
        .with_context(|| format!("cannot write {}", key_path.display()))?;
    run_as.give(&key_path)?;

    let root = public_dir.join("root.crt");
    fs::write(&root, &cert).with_context(|| format!("cannot write {}", root.display()))?;
    Ok(root)
}
