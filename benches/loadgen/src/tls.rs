//! TLS for load runs: none, STARTTLS (RFC 6120 §5) or Direct TLS (XEP-0368), with the
//! server's certificate checked against the CA file given (a dev server's self-signed
//! certificate is its own CA). No "accept anything" mode: a benchmark that skipped the
//! verification a real client does would flatter the server.

use std::io;
use std::path::Path;
use std::sync::Arc;

use clap::ValueEnum;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TlsMode {
    None,
    #[value(name = "starttls")]
    StartTls,
    Direct,
}

/// Set once by `main` from the command line, read by every login.
static TLS: std::sync::OnceLock<Tls> = std::sync::OnceLock::new();

pub fn set(tls: Tls) {
    assert!(TLS.set(tls).is_ok(), "TLS settings are set once");
}

pub fn get() -> &'static Tls {
    TLS.get().expect("main sets the TLS settings first")
}

pub struct Tls {
    pub mode: TlsMode,
    connector: Option<TlsConnector>,
}

impl Tls {
    /// `ca` is required unless `mode` is `None`.
    pub fn new(mode: TlsMode, ca: Option<&Path>) -> Result<Tls, String> {
        if mode == TlsMode::None {
            return Ok(Tls { mode, connector: None });
        }
        let ca = ca.ok_or("--tls needs --ca FILE (the server's CA or self-signed certificate, PEM)")?;
        let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
        let mut roots = RootCertStore::empty();
        for cert in rustls_pemfile::certs(&mut &pem[..]) {
            let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
            roots.add(cert).map_err(|e| format!("{}: {e}", ca.display()))?;
        }
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Tls { mode, connector: Some(TlsConnector::from(Arc::new(config))) })
    }

    pub async fn connect(&self, domain: &str, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let connector = self.connector.as_ref().expect("a connector whenever TLS is on");
        let name = ServerName::try_from(domain.to_owned()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        connector.connect(name, tcp).await
    }
}
