//! TLS for load runs: none, STARTTLS (RFC 6120 §5) or Direct TLS (XEP-0368). With `--ca`,
//! the server's certificate must chain to that file (a self-signed certificate is its own
//! CA); without it, any certificate is accepted, said once on stderr, for quick runs against
//! a dev server. Either way the handshake signature is checked, so the client's work, and
//! what it asks of the server, is the same.

use std::io;
use std::path::Path;
use std::sync::Arc;

use clap::ValueEnum;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::client::Resumption;
use shards::cluster::transport::AnyCertificate;
use tokio_rustls::rustls::crypto;
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
    pub fn new(mode: TlsMode, ca: Option<&Path>) -> Result<Tls, String> {
        if mode == TlsMode::None {
            return Ok(Tls { mode, connector: None });
        }
        let provider = Arc::new(crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?;
        let mut config = match ca {
            Some(ca) => builder.with_root_certificates(roots(ca)?).with_no_client_auth(),
            None => {
                eprintln!("loadgen: no --ca given: accepting any server certificate");
                builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate(provider))).with_no_client_auth()
            }
        };
        // Every connection stands for a different client, so each makes a full handshake:
        // resuming one user's session for the next would spare the server the signature
        // that N real clients cost it.
        config.resumption = Resumption::disabled();
        Ok(Tls { mode, connector: Some(TlsConnector::from(Arc::new(config))) })
    }

    pub async fn connect(&self, domain: &str, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let connector = self.connector.as_ref().expect("a connector whenever TLS is on");
        let name = ServerName::try_from(domain.to_owned()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        connector.connect(name, tcp).await
    }
}

fn roots(ca: &Path) -> Result<RootCertStore, String> {
    let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    let mut roots = RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut &pem[..]) {
        let cert = cert.map_err(|e| format!("{}: {e}", ca.display()))?;
        roots.add(cert).map_err(|e| format!("{}: {e}", ca.display()))?;
    }
    Ok(roots)
}
