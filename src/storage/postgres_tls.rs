//! TLS to PostgreSQL (`[storage] postgres_tls`), with rustls through tokio-postgres-rustls:
//! the same TLS library as the client listeners, no OpenSSL. One connector type for both
//! modes, so the pool has one type: with `disable` the connection never asks for TLS.

use std::sync::Arc;

use postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::config::{PostgresTls, StorageConfig};

/// The connector for the pool, and the `sslmode` that goes with it: `verify-full` is
/// `require` (TLS or no connection) with rustls verifying the chain to the configured CA
/// and the URL's host name, which is what libpq's `verify-full` checks.
pub fn connector(cfg: &StorageConfig) -> Result<(MakeRustlsConnect, SslMode), String> {
    let mut roots = rustls::RootCertStore::empty();
    let mode = match cfg.postgres_tls {
        PostgresTls::Disable => SslMode::Disable,
        PostgresTls::VerifyFull => {
            let path = &cfg.postgres_ca_file;
            let pem = std::fs::read(path).map_err(|e| format!("postgres_ca_file {}: {e}", path.display()))?;
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| format!("postgres_ca_file {}: {e}", path.display()))?;
                roots.add(cert).map_err(|e| format!("postgres_ca_file {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("postgres_ca_file {}: no certificate in it", path.display()));
            }
            SslMode::Require
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((MakeRustlsConnect::new(tls), mode))
}
