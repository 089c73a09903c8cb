//! TLS for `rediss://` URLs, on every Redis path: the redis-rs clients (shards, cluster, the
//! commands) and the lean `MGET` reader. One set of files per process (`[redis.tls]`, or
//! `CASCADE_REDIS_TLS_CA` / `_CERT` / `_KEY`, or the commands' `--redis-tls-*` flags), read and
//! checked once at start, so a bad file stops the process with its name instead of failing each
//! connection later.
//!
//! Without a CA file the servers are checked against the system's roots (a managed Redis with a
//! public certificate); with one, against that CA only (a private CA, as in the tests). A client
//! certificate and key are sent when both are given (Redis's `tls-auth-clients yes`).
//! Credentials travel in the URL (`rediss://user:password@host:port`, percent-escaped) and are
//! sent as `AUTH user password` on every new connection, lean ones included.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use redis::{ClientTlsConfig, TlsCertificates};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// The files of `[redis.tls]` (all optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, clap::Args)]
#[serde(default, deny_unknown_fields)]
pub struct TlsFiles {
    /// PEM file of the CA that signed the Redis servers' certificates (default: the system's roots).
    #[arg(long = "redis-tls-ca", env = "CASCADE_REDIS_TLS_CA")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for servers that check clients (`tls-auth-clients yes`).
    #[arg(long = "redis-tls-cert", env = "CASCADE_REDIS_TLS_CERT", requires = "key_file")]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[arg(long = "redis-tls-key", env = "CASCADE_REDIS_TLS_KEY", requires = "cert_file")]
    pub key_file: Option<PathBuf>,
}

/// A TLS file that cannot be used; the message names it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// The TLS material of a process, shared by all its Redis connections.
#[derive(Clone, Default)]
pub struct RedisTls {
    certificates: Option<Arc<TlsCertificates>>,
    /// Built on the first `rediss://` lean connection (the system roots are read only if needed).
    connector: Arc<OnceLock<Result<TlsConnector, TlsError>>>,
}

impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls").field("files", &self.certificates.is_some()).finish()
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError(format!("redis TLS {what} {}: {e}", path.display())))
}

impl RedisTls {
    /// Reads and checks `files` (each PEM must hold what its name says).
    pub fn load(files: &TlsFiles) -> Result<Self, TlsError> {
        if files == &TlsFiles::default() {
            return Ok(RedisTls::default());
        }
        let root_cert = files.ca_file.as_deref().map(|path| read(path, "CA file")).transpose()?;
        if let (Some(pem), Some(path)) = (&root_cert, &files.ca_file) {
            let certificates = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>();
            if !certificates.is_ok_and(|c| !c.is_empty()) {
                return Err(TlsError(format!("redis TLS CA file {}: no PEM certificate in it", path.display())));
            }
        }
        let client_tls = match (&files.cert_file, &files.key_file) {
            (Some(cert), Some(key)) => {
                let (client_cert, client_key) = (read(cert, "certificate")?, read(key, "key")?);
                PrivateKeyDer::from_pem_slice(&client_key)
                    .map_err(|e| TlsError(format!("redis TLS key {}: {e}", key.display())))?;
                Some(ClientTlsConfig { client_cert, client_key })
            }
            (None, None) => None,
            _ => {
                return Err(TlsError(
                    "redis TLS: a client certificate needs its key, and a key its certificate".into(),
                ));
            }
        };
        let tls = RedisTls {
            certificates: Some(Arc::new(TlsCertificates { client_tls, root_cert })),
            connector: Arc::default(),
        };
        tls.connector()?;
        Ok(tls)
    }

    /// A redis-rs client for `url`, with this TLS material when it is a `rediss://` URL.
    pub fn client(&self, url: &str) -> redis::RedisResult<redis::Client> {
        match &self.certificates {
            Some(certificates) if url.starts_with("rediss://") => {
                redis::Client::build_with_tls(url, TlsCertificates::clone(certificates))
            }
            _ => redis::Client::open(url),
        }
    }

    /// The certificates for a redis-rs cluster client, when files were given.
    pub fn certificates(&self) -> Option<TlsCertificates> {
        self.certificates.as_deref().cloned()
    }

    fn connector(&self) -> Result<TlsConnector, TlsError> {
        self.connector.get_or_init(|| build_connector(self.certificates.as_deref())).clone()
    }

    /// The TLS handshake over `stream` with the server `host` (a name or an address, checked
    /// against its certificate).
    pub async fn wrap(&self, host: &str, stream: TcpStream) -> std::io::Result<TlsStream<TcpStream>> {
        let connector = self.connector().map_err(std::io::Error::other)?;
        let name = ServerName::try_from(host.to_string()).map_err(std::io::Error::other)?;
        connector.connect(name, stream).await
    }
}

fn build_connector(certificates: Option<&TlsCertificates>) -> Result<TlsConnector, TlsError> {
    let mut roots = RootCertStore::empty();
    match certificates.and_then(|c| c.root_cert.as_deref()) {
        Some(pem) => {
            for certificate in CertificateDer::pem_slice_iter(pem) {
                let certificate = certificate.map_err(|e| TlsError(format!("redis TLS CA: {e}")))?;
                roots.add(certificate).map_err(|e| TlsError(format!("redis TLS CA: {e}")))?;
            }
        }
        None => {
            for certificate in rustls_native_certs::load_native_certs().certs {
                // A system root rustls cannot parse is skipped, as redis-rs skips it.
                let _ = roots.add(certificate);
            }
        }
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let config = match certificates.and_then(|c| c.client_tls.as_ref()) {
        Some(ClientTlsConfig { client_cert, client_key }) => {
            let chain = CertificateDer::pem_slice_iter(client_cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsError(format!("redis TLS certificate: {e}")))?;
            let key = PrivateKeyDer::from_pem_slice(client_key).map_err(|e| TlsError(format!("redis TLS key: {e}")))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| TlsError(format!("redis TLS certificate: {e}")))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_that_cannot_be_used_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = TlsFiles { ca_file: Some(dir.path().join("ca.pem")), ..TlsFiles::default() };
        assert!(RedisTls::load(&missing).unwrap_err().0.contains("ca.pem"));
        let not_pem = dir.path().join("junk.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let junk = TlsFiles { ca_file: Some(not_pem), ..TlsFiles::default() };
        assert!(RedisTls::load(&junk).unwrap_err().0.contains("no PEM certificate"));
        let half = TlsFiles { cert_file: Some(dir.path().join("c.pem")), ..TlsFiles::default() };
        assert!(RedisTls::load(&half).is_err());
    }

    #[test]
    fn without_files_plain_urls_get_plain_clients() {
        let tls = RedisTls::load(&TlsFiles::default()).unwrap();
        assert!(tls.certificates().is_none());
        assert!(tls.client("redis://127.0.0.1:6379").is_ok());
    }
}
