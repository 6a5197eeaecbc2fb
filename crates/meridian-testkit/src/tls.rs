//! Certificates for the kit's servers, all for the loopback only (`localhost`, `127.0.0.1`).
//!
//! For servers started with [`crate::ClusterBuilder::tls`] ([`install`]): one self-signed certificate per cluster, valid for `localhost` and `127.0.0.1` (the kit's
//! servers listen on loopback only), so that it is at once the server certificate and the
//! root a client verifies it against (`sslmode=verify-full`, Meridian's `[server_tls]
//! root_cert`). PostgreSQL reads `server.crt` and `server.key` from the data directory by
//! default and refuses a key that others can read, or that is not owned by the server user
//! (PostgreSQL docs, 19.9.3 "Creating Certificates" and 19.9.1).
//!
//! For etcd started with [`crate::EtcdCluster::start_tls`] ([`Authority`]): a CA that signs
//! the server certificate and a client certificate, since etcd's `--client-cert-auth` asks
//! clients for a certificate signed by its `--trusted-ca-file`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

use crate::run_as::RunAs;

/// The names every server certificate is valid for: the kit's servers listen on loopback only.
fn loopback_names() -> Vec<String> {
    vec!["localhost".to_owned(), "127.0.0.1".to_owned()]
}

/// Writes a new certificate and key into `data_dir` (as `server.crt` and `server.key`, owned
/// by the server user) and the certificate again as `root.crt` in `public_dir` for clients;
/// returns the path of the latter.
pub(crate) fn install(
    data_dir: &Path,
    public_dir: &Path,
    run_as: &RunAs,
) -> anyhow::Result<PathBuf> {
    let certified = rcgen::generate_simple_self_signed(loopback_names())
        .context("cannot generate a TLS certificate")?;
    let cert = certified.cert.pem();
    let key = certified.signing_key.serialize_pem();

    let cert_path = data_dir.join("server.crt");
    fs::write(&cert_path, &cert)
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    run_as.give(&cert_path)?;
    let key_path = data_dir.join("server.key");
    write_key(&key_path, &key)?;
    run_as.give(&key_path)?;

    let root = public_dir.join("root.crt");
    fs::write(&root, &cert).with_context(|| format!("cannot write {}", root.display()))?;
    Ok(root)
}

/// Writes a private key, created 0600 rather than narrowed afterwards: it is never readable
/// by others.
fn write_key(path: &Path, pem: &str) -> anyhow::Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(pem.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The PEM files of a CA, a server certificate signed by it (for [`loopback_names`]) and a
/// client certificate signed by it, from [`Authority::install`].
#[derive(Debug, Clone)]
pub(crate) struct Authority {
    /// The CA certificate: servers trust clients signed by it, clients verify servers with it.
    pub(crate) root_cert: PathBuf,
    pub(crate) server_cert: PathBuf,
    pub(crate) server_key: PathBuf,
    pub(crate) client_cert: PathBuf,
    pub(crate) client_key: PathBuf,
}

impl Authority {
    /// Generates a new CA, server and client certificate and writes them into `dir` as
    /// `ca.crt`, `server.crt`/`server.key` and `client.crt`/`client.key`.
    pub(crate) fn install(dir: &Path) -> anyhow::Result<Authority> {
        let generate = || -> Result<_, rcgen::Error> {
            let mut ca = CertificateParams::new(Vec::<String>::new())?;
            ca.distinguished_name
                .push(DnType::CommonName, "meridian-testkit CA");
            ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let ca_key = KeyPair::generate()?;
            let ca_cert = ca.self_signed(&ca_key)?;
            let issuer = Issuer::new(ca, ca_key);

            let mut server = CertificateParams::new(loopback_names())?;
            server
                .distinguished_name
                .push(DnType::CommonName, "localhost");
            server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let server_key = KeyPair::generate()?;
            let server_cert = server.signed_by(&server_key, &issuer)?;

            // etcd checks the chain only; it would take the common name as the user name if
            // its authentication were on.
            let mut client = CertificateParams::new(Vec::<String>::new())?;
            client
                .distinguished_name
                .push(DnType::CommonName, "meridian-testkit client");
            client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            let client_key = KeyPair::generate()?;
            let client_cert = client.signed_by(&client_key, &issuer)?;
            Ok([
                ca_cert.pem(),
                server_cert.pem(),
                server_key.serialize_pem(),
                client_cert.pem(),
                client_key.serialize_pem(),
            ])
        };
        let [ca, server_cert, server_key, client_cert, client_key] =
            generate().context("cannot generate TLS certificates")?;
        let authority = Authority {
            root_cert: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
        };
        for (path, pem) in [
            (&authority.root_cert, &ca),
            (&authority.server_cert, &server_cert),
            (&authority.client_cert, &client_cert),
        ] {
            fs::write(path, pem).with_context(|| format!("cannot write {}", path.display()))?;
        }
        write_key(&authority.server_key, &server_key)?;
        write_key(&authority.client_key, &client_key)?;
        Ok(authority)
    }
}
