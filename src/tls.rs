//! The rustls server configurations: one shared by the STARTTLS and Direct TLS
//! listeners, one for HTTPS (`[http] tls_listen`), differing only in ALPN. Without a configured certificate the server makes a self-signed
//! one under `storage.path` on first start and reuses it after, so a fresh
//! checkout serves TLS with zero setup and test clients can pin that file.

use std::fmt;
use std::fs;
use std::io::{BufReader, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::ServerConfig;

use crate::config::Config;

/// XEP-0368: the ALPN protocol a Direct TLS client offers.
const ALPN_XMPP_CLIENT: &[u8] = b"xmpp-client";
/// What a browser offers for a WebSocket or BOSH request (RFC 7301); the HTTP side
/// speaks HTTP/1.1 only, so "h2" is not taken.
const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// The node's certificate, in one configuration per ALPN: a client offering only
/// protocols a listener does not speak is refused in the handshake.
#[derive(Clone, Debug)]
pub struct ServerTls {
    /// STARTTLS and Direct TLS: `xmpp-client`.
    pub xmpp: Arc<ServerConfig>,
    /// HTTPS: `http/1.1`.
    pub http: Arc<ServerConfig>,
}

#[derive(Debug)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    File { path: PathBuf, reason: String },
    /// The dev certificate could not be made.
    Generate(String),
    /// rustls refused the certificate and key (for instance, they do not match).
    Rustls(rustls::Error),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::File { path, reason } => write!(f, "{}: {reason}", path.display()),
            TlsError::Generate(reason) => write!(f, "making the dev certificate: {reason}"),
            TlsError::Rustls(e) => write!(f, "tls.cert/tls.key: {e}"),
        }
    }
}

impl std::error::Error for TlsError {}

fn file_error(path: &Path, reason: impl fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        reason: reason.to_string(),
    }
}

/// The node's certificate chain and key: `tls.cert`/`tls.key` when set, else the dev
/// certificate (made on first use).
fn node_identity(cfg: &Config) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let (cert_path, key_path) = if cfg.tls.cert.as_os_str().is_empty() {
        ensure_dev_cert(cfg)?
    } else {
        (cfg.tls.cert.clone(), cfg.tls.key.clone())
    };
    Ok((read_certs(&cert_path)?, read_key(&key_path)?))
}

/// TLS 1.2 and 1.3 with the ring provider, no client certificates, with the node's
/// certificate; ALPN `xmpp-client` for XMPP, `http/1.1` for HTTPS.
pub fn server_config(cfg: &Config) -> Result<ServerTls, TlsError> {
    let (certs, key) = node_identity(cfg)?;
    let config = ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS12, &rustls::version::TLS13])
        .map_err(TlsError::Rustls)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Rustls)?;
    let with_alpn = |alpn: &[u8]| {
        let mut c = config.clone();
        c.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(c)
    };
    Ok(ServerTls { xmpp: with_alpn(ALPN_XMPP_CLIENT), http: with_alpn(ALPN_HTTP_1_1) })
}

/// Mesh TLS with the node's certificate (`shards::cluster::transport`: the cluster
/// secret, bound to each TLS session, authenticates the nodes; the certificate only keys it).
pub fn mesh_tls(cfg: &Config) -> Result<shards::cluster::transport::MeshTls, TlsError> {
    let (certs, key) = node_identity(cfg)?;
    shards::cluster::transport::MeshTls::new(certs, key).map_err(TlsError::Rustls)
}

/// The certificate PEM a test client should trust: `tls.cert` when set
/// (useful only if it is self-signed), otherwise the generated dev certificate.
pub fn dev_ca_path(cfg: &Config) -> PathBuf {
    if cfg.tls.cert.as_os_str().is_empty() {
        dev_files(cfg).0
    } else {
        cfg.tls.cert.clone()
    }
}

/// (certificate, key) paths of the dev certificate.
fn dev_files(cfg: &Config) -> (PathBuf, PathBuf) {
    (
        cfg.storage.path.join("dev-cert.pem"),
        cfg.storage.path.join("dev-key.pem"),
    )
}

/// Makes the dev certificate unless a usable one is already there. One made
/// for another domain is replaced, so changing `domain` needs no manual step.
fn ensure_dev_cert(cfg: &Config) -> Result<(PathBuf, PathBuf), TlsError> {
    let (cert_path, key_path) = dev_files(cfg);
    if key_path.exists() && cert_names(&cert_path, &cfg.domain) {
        return Ok((cert_path, key_path));
    }
    let mut names = vec![cfg.domain.clone()];
    for extra in ["localhost", "127.0.0.1"] {
        if !names.iter().any(|n| n == extra) {
            names.push(extra.to_owned());
        }
    }
    let generate = |e: rcgen::Error| TlsError::Generate(e.to_string());
    let mut params = rcgen::CertificateParams::new(names).map_err(generate)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, cfg.domain.as_str());
    let key_pair = rcgen::KeyPair::generate().map_err(generate)?;
    let cert = params.self_signed(&key_pair).map_err(generate)?;
    fs::create_dir_all(&cfg.storage.path).map_err(|e| file_error(&cfg.storage.path, e))?;
    // Key first: a crash between the two writes leaves no certificate, which
    // the check above treats as "make a new pair".
    write_atomically(&key_path, key_pair.serialize_pem().as_bytes(), 0o600)?;
    write_atomically(&cert_path, cert.pem().as_bytes(), 0o644)?;
    log::info!(
        "made a self-signed dev certificate for {} in {}",
        cfg.domain,
        cert_path.display()
    );
    Ok((cert_path, key_path))
}

/// Whether the PEM at `path` is a certificate valid for `domain`.
fn cert_names(path: &Path, domain: &str) -> bool {
    let Ok(certs) = read_certs(path) else {
        return false;
    };
    let Ok(name) = ServerName::try_from(domain) else {
        return false;
    };
    webpki::EndEntityCert::try_from(&certs[0])
        .is_ok_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
}

/// Writes a temporary file and renames it over `path`, so readers never see
/// a half-written PEM.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    let tmp = path.with_extension("pem.tmp");
    let write = || -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // `mode` applies only on creation; a stale temp file keeps its own.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| file_error(path, e))
}

fn open_pem(path: &Path) -> Result<BufReader<fs::File>, TlsError> {
    fs::File::open(path)
        .map(BufReader::new)
        .map_err(|e| file_error(path, e))
}

/// The certificate chain in `path`, never empty.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut open_pem(path)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no PEM certificate in file"));
    }
    Ok(certs)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut open_pem(path)?)
        .map_err(|e| file_error(path, e))?
        .ok_or_else(|| file_error(path, "no PEM private key in file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_in(dir: &Path, domain: &str) -> Config {
        let mut cfg = Config {
            domain: domain.into(),
            ..Config::default()
        };
        cfg.storage.path = dir.join("data");
        cfg
    }

    #[test]
    fn dev_cert_is_made_once_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config_in(dir.path(), "localhost");
        server_config(&cfg).unwrap();
        let first = fs::read(dev_ca_path(&cfg)).unwrap();
        server_config(&cfg).unwrap();
        assert_eq!(fs::read(dev_ca_path(&cfg)).unwrap(), first);
        let key_mode = fs::metadata(dev_files(&cfg).1)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(key_mode & 0o777, 0o600);
    }

    #[test]
    fn dev_cert_is_replaced_when_domain_changes() {
        let dir = tempfile::tempdir().unwrap();
        server_config(&config_in(dir.path(), "localhost")).unwrap();
        let cfg = config_in(dir.path(), "example.org");
        let before = fs::read(dev_ca_path(&cfg)).unwrap();
        server_config(&cfg).unwrap();
        assert_ne!(fs::read(dev_ca_path(&cfg)).unwrap(), before);
        assert!(cert_names(&dev_ca_path(&cfg), "example.org"));
        assert!(cert_names(&dev_ca_path(&cfg), "localhost"));
    }

    #[test]
    fn configured_files_are_used_and_named_in_errors() {
        let dir = tempfile::tempdir().unwrap();
        let dev = config_in(dir.path(), "localhost");
        server_config(&dev).unwrap();
        let mut cfg = config_in(dir.path(), "localhost");
        (cfg.tls.cert, cfg.tls.key) = dev_files(&dev);
        server_config(&cfg).unwrap();
        assert_eq!(dev_ca_path(&cfg), cfg.tls.cert);

        cfg.tls.key = dir.path().join("missing.pem");
        let e = server_config(&cfg).unwrap_err().to_string();
        assert!(e.contains("missing.pem"), "{e}");
        // A certificate file given as the key holds no private key.
        cfg.tls.key = cfg.tls.cert.clone();
        let e = server_config(&cfg).unwrap_err().to_string();
        assert!(e.contains("no PEM private key"), "{e}");
    }

    /// A rustls client that trusts only `dev_ca_path` completes a handshake for the
    /// domain and negotiates `xmpp-client` with the XMPP configuration and `http/1.1`
    /// with the HTTPS one; offering the other's protocol, it is refused.
    #[test]
    fn client_trusting_dev_ca_connects() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config_in(dir.path(), "localhost");
        let tls = server_config(&cfg).unwrap();
        assert_eq!(handshake(&cfg, tls.xmpp.clone(), ALPN_XMPP_CLIENT), Ok(ALPN_XMPP_CLIENT.to_vec()));
        assert_eq!(handshake(&cfg, tls.http.clone(), ALPN_HTTP_1_1), Ok(ALPN_HTTP_1_1.to_vec()));
        assert!(handshake(&cfg, tls.http, ALPN_XMPP_CLIENT).is_err());
        assert!(handshake(&cfg, tls.xmpp, ALPN_HTTP_1_1).is_err());
    }

    /// The ALPN protocol agreed, or the server's error.
    fn handshake(cfg: &Config, server_cfg: Arc<ServerConfig>, alpn: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in read_certs(&dev_ca_path(&cfg)).unwrap() {
            roots.add(cert).unwrap();
        }
        let mut client_cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        client_cfg.alpn_protocols = vec![alpn.to_vec()];
        let name = ServerName::try_from("localhost").unwrap();
        let mut client = rustls::ClientConnection::new(Arc::new(client_cfg), name).unwrap();
        let mut server = rustls::ServerConnection::new(server_cfg).unwrap();
        while client.is_handshaking() || server.is_handshaking() {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets()?;
            wire.clear();
            server.write_tls(&mut wire).unwrap();
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets().unwrap();
        }
        Ok(client.alpn_protocol().unwrap_or_default().to_vec())
    }
}
