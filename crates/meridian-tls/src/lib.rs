//! TLS on both sides: accepted from clients with the configured certificate, and initiated to
//! servers with libpq's `sslmode` semantics. Shared by the proxy's pools and the control
//! plane's probes, so that both reach a node the same way.
//!
//! `prefer` and `require` encrypt without checking the server's certificate, exactly as libpq
//! does when no root certificate is given (PostgreSQL docs, 34.19.1 "Client Verification of
//! Server Certificates"): they protect against eavesdropping, not impersonation. `verify-full`
//! checks the chain against the configured root and the host name. The handshake signatures
//! are verified in every mode, so the peer must hold the key of the certificate it shows.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use meridian_config::{Config, ServerTlsMode};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A TLS setup error: which file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
pub struct TlsSetupError {
    what: String,
    message: String,
}

impl TlsSetupError {
    /// An error about `what` (a setting or file).
    pub fn new(what: impl Into<String>, message: impl std::fmt::Display) -> TlsSetupError {
        TlsSetupError {
            what: what.into(),
            message: message.to_string(),
        }
    }
}

fn setup_error(what: impl Into<String>, message: impl std::fmt::Display) -> TlsSetupError {
    TlsSetupError::new(what, message)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS for client connections: the acceptor built from the configured certificate.
#[derive(Clone)]
pub struct ClientTls(pub TlsAcceptor);

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientTls")
    }
}

/// Loads a certificate chain and key (PEM) for accepting client connections.
pub fn acceptor(cert: &Path, key: &Path) -> Result<ClientTls, TlsSetupError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| setup_error(format!("tls.cert {}", cert.display()), e))?
        .collect::<Result<_, _>>()
        .map_err(|e| setup_error(format!("tls.cert {}", cert.display()), e))?;
    if chain.is_empty() {
        return Err(setup_error(
            format!("tls.cert {}", cert.display()),
            "no certificate in the file",
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| setup_error(format!("tls.key {}", key.display()), e))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| setup_error("tls", e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| setup_error("tls.cert and tls.key", e))?;
    Ok(ClientTls(TlsAcceptor::from(Arc::new(config))))
}

/// How to secure connections to servers.
#[derive(Clone)]
pub enum ServerTls {
    /// Never ask for TLS.
    Disable,
    /// Ask; use plain TCP if the server declines.
    Prefer(Arc<rustls::ClientConfig>),
    /// Ask; refuse a server that declines.
    Require(Arc<rustls::ClientConfig>),
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ServerTls::Disable => "Disable",
            ServerTls::Prefer(_) => "Prefer",
            ServerTls::Require(_) => "Require",
        })
    }
}

impl ServerTls {
    /// The setup for `mode`; `root_cert` is needed (and only used) for `verify-full`.
    pub fn new(mode: ServerTlsMode, root_cert: Option<&Path>) -> Result<ServerTls, TlsSetupError> {
        Ok(match mode {
            ServerTlsMode::Disable => ServerTls::Disable,
            ServerTlsMode::Prefer => ServerTls::Prefer(unverified_config()?),
            ServerTlsMode::Require => ServerTls::Require(unverified_config()?),
            ServerTlsMode::VerifyFull => {
                let root = root_cert.ok_or_else(|| {
                    TlsSetupError::new(
                        "server_tls.root_cert",
                        "verify-full needs a root certificate",
                    )
                })?;
                ServerTls::Require(verifying_config(root)?)
            }
        })
    }

    /// The rustls configuration, unless TLS is disabled.
    pub fn client_config(&self) -> Option<&Arc<rustls::ClientConfig>> {
        match self {
            ServerTls::Disable => None,
            ServerTls::Prefer(config) | ServerTls::Require(config) => Some(config),
        }
    }

    /// A connector for tokio, unless TLS is disabled.
    pub fn connector(&self) -> Option<TlsConnector> {
        self.client_config()
            .map(|config| TlsConnector::from(config.clone()))
    }

    /// Whether a server that declines TLS must be refused.
    pub fn is_required(&self) -> bool {
        matches!(self, ServerTls::Require(_))
    }

    /// The server name to present and check for `host`.
    pub fn server_name(host: &str) -> Result<ServerName<'static>, TlsSetupError> {
        ServerName::try_from(host.to_owned()).map_err(|e| setup_error(format!("host {host}"), e))
    }
}

/// The TLS setup of every region: `server_tls.mode`, overridden by a region's `ssl`.
#[derive(Debug, Clone)]
pub struct ServerTlsSet {
    default: ServerTls,
    by_region: HashMap<String, ServerTls>,
}

impl ServerTlsSet {
    /// Builds every setup the configuration names.
    pub fn from_config(config: &Config) -> Result<ServerTlsSet, TlsSetupError> {
        let root = config.server_tls.root_cert.as_deref();
        let default = ServerTls::new(config.server_tls.mode, root)?;
        let mut by_region = HashMap::new();
        for region in &config.regions {
            if let Some(mode) = region.ssl {
                by_region.insert(region.name.clone(), ServerTls::new(mode, root)?);
            }
        }
        Ok(ServerTlsSet { default, by_region })
    }

    /// One setup for every node.
    pub fn uniform(tls: ServerTls) -> ServerTlsSet {
        ServerTlsSet {
            default: tls,
            by_region: HashMap::new(),
        }
    }

    /// The setup for the nodes of `region`.
    pub fn for_region(&self, region: &str) -> &ServerTls {
        self.by_region.get(region).unwrap_or(&self.default)
    }
}

fn verifying_config(root_cert: &Path) -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    let what = || format!("server_tls.root_cert {}", root_cert.display());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(root_cert).map_err(|e| setup_error(what(), e))? {
        roots
            .add(cert.map_err(|e| setup_error(what(), e))?)
            .map_err(|e| setup_error(what(), e))?;
    }
    if roots.is_empty() {
        return Err(setup_error(what(), "no certificate in the file"));
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| setup_error("server_tls", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

fn unverified_config() -> Result<Arc<rustls::ClientConfig>, TlsSetupError> {
    let provider = provider();
    let verifier = Arc::new(AnyCertificate {
        algorithms: provider.signature_verification_algorithms,
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| setup_error("server_tls", e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// Accepts any certificate (libpq's `sslmode=require` without a root certificate) but still
/// checks that the handshake was signed by the certificate's key.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}
