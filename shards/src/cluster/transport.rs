//! A mesh connection's bytes: plain TCP, or TLS (rustls) over it. The reader and the writer
//! of a connection run on threads of their own, and a TLS session is one state machine, so
//! both halves share it behind a mutex, each holding it only to encrypt or decrypt; the
//! socket itself is read by the reader and written by the writer alone, so records go out
//! in the order they were made.
//!
//! # Who is on the other end
//! Certificates are not checked against any authority (a cluster's nodes often have
//! self-signed ones). Instead the HMAC handshake that follows (`handshake`) is bound to this
//! TLS session through its exporter (RFC 5705/8446 §7.5): a node in the middle holding two
//! TLS sessions has two different exporter values and cannot produce either side's proof
//! without the cluster secret. So TLS hides the traffic and the secret authenticates it.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};

use flume::Sender;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, Connection, DigitallySignedStruct, ServerConfig, ServerConnection, SignatureScheme};

/// Label of the exporter value the handshake proofs cover.
const EXPORTER_LABEL: &[u8] = b"EXPORTER-martlet-mesh-binding";
const EXPORTER_BYTES: usize = 32;
/// Ciphertext read from the socket at a time, in bytes.
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// Both ends of mesh TLS, from the node's certificate and key.
#[derive(Clone)]
pub struct MeshTls {
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl std::fmt::Debug for MeshTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MeshTls")
    }
}

impl MeshTls {
    pub fn new(certs: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Result<MeshTls, rustls::Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        let mut client = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth();
        client.enable_sni = false;
        Ok(MeshTls { server: Arc::new(server), client: Arc::new(client) })
    }
}

/// Accepts the server's certificate whatever signed it, but checks that the server holds
/// its key (the handshake signature). On the mesh, who the server is, the channel-bound
/// handshake proves (see the module text); the load generator uses it for dev servers.
#[derive(Debug)]
pub struct AnyCertificate(pub Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
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
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A connection's stream, during the handshake (one thread) and before it is split.
pub enum Link {
    Plain(TcpStream),
    Tls { sock: TcpStream, tls: Connection },
}

impl Link {
    /// The dialling side: TLS when configured, handshake completed.
    pub fn dial(sock: TcpStream, tls: Option<&MeshTls>) -> io::Result<Link> {
        let Some(t) = tls else { return Ok(Link::Plain(sock)) };
        let name = ServerName::try_from("martlet-mesh").expect("a valid DNS name");
        let conn = ClientConnection::new(t.client.clone(), name).map_err(io::Error::other)?;
        Link::handshake(sock, conn.into())
    }

    /// The accepting side.
    pub fn accept(sock: TcpStream, tls: Option<&MeshTls>) -> io::Result<Link> {
        let Some(t) = tls else { return Ok(Link::Plain(sock)) };
        let conn = ServerConnection::new(t.server.clone()).map_err(io::Error::other)?;
        Link::handshake(sock, conn.into())
    }

    fn handshake(mut sock: TcpStream, mut tls: Connection) -> io::Result<Link> {
        while tls.is_handshaking() {
            tls.complete_io(&mut sock)?;
        }
        // Our writes are bounded by the mesh queues and batches, not by rustls.
        tls.set_buffer_limit(None);
        Ok(Link::Tls { sock, tls })
    }

    /// What the handshake proofs are bound to: the TLS session's exporter, or nothing.
    pub fn binding(&self) -> io::Result<Vec<u8>> {
        match self {
            Link::Plain(_) => Ok(Vec::new()),
            Link::Tls { tls, .. } => {
                let mut out = vec![0u8; EXPORTER_BYTES];
                tls.export_keying_material(&mut out, EXPORTER_LABEL, None).map_err(io::Error::other)?;
                Ok(out)
            }
        }
    }

    pub fn socket(&self) -> &TcpStream {
        match self {
            Link::Plain(s) | Link::Tls { sock: s, .. } => s,
        }
    }

    /// The reader's and the writer's halves. `nudge` reaches the writer: the reader uses it
    /// when decrypting produced records to send back (a TLS 1.3 key update's answer).
    pub fn split(self, nudge: Sender<Vec<u8>>) -> io::Result<(ReadHalf, WriteHalf)> {
        match self {
            Link::Plain(s) => Ok((ReadHalf::Plain(s.try_clone()?), WriteHalf::Plain(s))),
            Link::Tls { sock, tls } => {
                let tls = Arc::new(Mutex::new(tls));
                let read = TlsReader { sock: sock.try_clone()?, tls: tls.clone(), nudge, raw: vec![0; READ_CHUNK_BYTES], start: 0, end: 0 };
                Ok((ReadHalf::Tls(read), WriteHalf::Tls { sock, tls, out: Vec::new() }))
            }
        }
    }
}

/// For the handshake only, on one thread: blocking reads and writes through the session.
impl Read for Link {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Link::Plain(s) => s.read(buf),
            Link::Tls { sock, tls } => read_through(tls, sock, buf),
        }
    }
}

fn read_through(tls: &mut Connection, sock: &mut TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match tls.reader().read(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            done => return done,
        }
        if tls.read_tls(sock)? == 0 {
            return Ok(0);
        }
        tls.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    }
}

impl Write for Link {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Link::Plain(s) => s.write(buf),
            Link::Tls { tls, .. } => tls.writer().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Link::Plain(s) => s.flush(),
            Link::Tls { sock, tls } => {
                while tls.wants_write() {
                    tls.write_tls(sock)?;
                }
                Ok(())
            }
        }
    }
}

pub enum ReadHalf {
    Plain(TcpStream),
    Tls(TlsReader),
}

pub struct TlsReader {
    sock: TcpStream,
    tls: Arc<Mutex<Connection>>,
    nudge: Sender<Vec<u8>>,
    /// Ciphertext read and not yet taken by rustls: `raw[start..end]`.
    raw: Vec<u8>,
    start: usize,
    end: usize,
}

impl Read for ReadHalf {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            ReadHalf::Plain(s) => s.read(buf),
            ReadHalf::Tls(r) => r.read(buf),
        }
    }
}

impl Read for TlsReader {
    /// Plaintext rustls has, else the ciphertext already read, else more from the socket;
    /// `Ok(0)` at the end of the stream.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            {
                let mut tls = self.tls.lock().expect("TLS session");
                match tls.reader().read(buf) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    done => return done,
                }
                if self.start < self.end {
                    let mut pending = &self.raw[self.start..self.end];
                    self.start += tls.read_tls(&mut pending)?;
                    tls.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                    if tls.wants_write() {
                        let _ = self.nudge.try_send(Vec::new());
                    }
                    continue;
                }
            }
            let n = self.sock.read(&mut self.raw)?;
            if n == 0 {
                return Ok(0);
            }
            (self.start, self.end) = (0, n);
        }
    }
}

pub enum WriteHalf {
    Plain(TcpStream),
    Tls { sock: TcpStream, tls: Arc<Mutex<Connection>>, out: Vec<u8> },
}

impl WriteHalf {
    /// Ends the connection both ways; the reader sees it and reports.
    pub fn shut_down(&self) {
        let (WriteHalf::Plain(s) | WriteHalf::Tls { sock: s, .. }) = self;
        let _ = s.shutdown(std::net::Shutdown::Both);
    }

    /// Writes `buf` (encrypted when TLS) and whatever records the session has waiting; an
    /// empty `buf` sends only those.
    pub fn send(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            WriteHalf::Plain(s) => s.write_all(buf),
            WriteHalf::Tls { sock, tls, out } => {
                out.clear();
                {
                    let mut tls = tls.lock().expect("TLS session");
                    tls.writer().write_all(buf)?;
                    while tls.wants_write() {
                        tls.write_tls(out)?;
                    }
                }
                sock.write_all(out)
            }
        }
    }
}
