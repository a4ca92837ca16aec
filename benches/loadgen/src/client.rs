//! The lean XMPP client: TCP, optionally TLS (STARTTLS or Direct TLS, XEP-0368), or
//! WebSocket (RFC 7395, client/websocket.rs), SASL PLAIN or SCRAM, bind, initial presence —
//! just enough to be a real session on any server, with one small buffer per connection.
//! Peers are compared on equal terms by giving each the same transport and mechanism
//! (`--transport`, `--tls`, `--sasl`). With `--protocol raw` a session is a plain line
//! protocol to benches/relay instead (client/raw.rs).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;

use crate::sasl::{self, Mechanism};
use crate::tls::{Tls, TlsMode};

mod control;
mod raw;
mod stream;
mod websocket;
mod ws_framing;
mod ws_stream;
pub use control::spawn_receiver;
pub use raw::join as raw_join;
pub use stream::{bytes_so_far, Reader, Writer};
pub use websocket::WsUrl;

/// Bytes read per call while logging in.
const LOGIN_READ_BYTES: usize = 2048;
/// Longest server answer accepted during login, in bytes.
const LOGIN_REPLY_BYTES_MAX: usize = 64 * 1024;

/// What the sessions speak: XMPP to a server, or the line protocol of benches/relay.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Xmpp,
    Raw,
}

/// What carries the XMPP stream: TCP (with or without TLS, `--tls`), or WebSocket.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    #[value(name = "websocket")]
    WebSocket,
}

pub struct Account<'a> {
    pub server: SocketAddr,
    pub domain: &'a str,
    pub user: String,
    pub password: &'a str,
    pub resource: String,
    /// The initial presence sent once bound (`<presence/>`, or one carrying a mark).
    pub presence: String,
    pub sasl: Mechanism,
    pub tls: &'a Tls,
    /// Enable XEP-0198 stream management (with resumption) once bound.
    pub sm: bool,
    pub protocol: Protocol,
    /// The local address to connect from (`--source-addresses`); `None`: the kernel's choice.
    pub source: Option<IpAddr>,
    /// Upgrade the connection to WebSocket at this URL (`server` is its address).
    pub websocket: Option<&'a WsUrl>,
}

pub struct Session {
    pub reader: Reader,
    pub writer: Writer,
}

pub async fn login(acct: &Account<'_>, timeout: Duration) -> io::Result<Session> {
    tokio::time::timeout(timeout, login_inner(acct))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "login timed out"))?
}

/// A connection to the server, from `acct.source` when set (bound with port 0: the kernel
/// picks a port free for that address).
pub async fn connect(acct: &Account<'_>) -> io::Result<TcpStream> {
    let Some(ip) = acct.source else { return TcpStream::connect(acct.server).await };
    let socket = if ip.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.bind(SocketAddr::new(ip, 0))?;
    socket.connect(acct.server).await
}

fn header(domain: &str) -> String {
    format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{domain}' version='1.0'>"
    )
}

async fn login_inner(acct: &Account<'_>) -> io::Result<Session> {
    if acct.protocol == Protocol::Raw {
        return raw::hello(acct).await;
    }
    let mut tcp = connect(acct).await?;
    tcp.set_nodelay(true)?;
    let (reader, writer) = match (acct.websocket, acct.tls.mode) {
        // Boxed like the TLS handshake below.
        (Some(url), _) => {
            let first_bytes = Box::pin(websocket::upgrade(&mut tcp, url)).await?;
            stream::split_ws(tcp, first_bytes)
        }
        (None, TlsMode::None) => stream::split_tcp(tcp),
        // Boxed: the handshake's state inline would grow every login future, plain ones too,
        // and all of a run's login tasks are spawned at once.
        (None, TlsMode::StartTls | TlsMode::Direct) => stream::split_tls(Box::pin(secure(acct, tcp)).await?),
    };
    negotiate(acct, Session { reader, writer }).await
}

/// The TLS handshake, after STARTTLS on the client port or right away on a Direct TLS port.
async fn secure(acct: &Account<'_>, mut tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
    if acct.tls.mode == TlsMode::StartTls {
        let mut buf = Vec::with_capacity(LOGIN_READ_BYTES);
        tcp.write_all(header(acct.domain).as_bytes()).await?;
        read_until(&mut tcp, &mut buf, &["</stream:features>", "</features>"]).await?;
        tcp.write_all(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>").await?;
        let reply = read_until(&mut tcp, &mut buf, &["<proceed", "<failure"]).await?;
        if !reply.contains("<proceed") {
            return Err(io::Error::new(io::ErrorKind::ConnectionRefused, "STARTTLS refused"));
        }
    }
    acct.tls.connect(acct.domain, tcp).await
}

/// From the (first, or post-TLS) stream header to initial presence.
async fn negotiate(acct: &Account<'_>, mut s: Session) -> io::Result<Session> {
    let mut buf = Vec::with_capacity(LOGIN_READ_BYTES);
    let header = header(acct.domain);
    s.writer.write_all(header.as_bytes()).await?;
    read_until(&mut s.reader, &mut buf, &["</stream:features>", "</features>"]).await?;
    sasl::authenticate(&mut s.reader, &mut s.writer, &mut buf, acct.sasl, &acct.user, acct.password).await?;
    s.writer.write_all(header.as_bytes()).await?;
    let features = read_until(&mut s.reader, &mut buf, &["</stream:features>", "</features>"]).await?;
    let bind = format!(
        "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{}</resource></bind></iq>",
        acct.resource
    );
    s.writer.write_all(bind.as_bytes()).await?;
    read_until(&mut s.reader, &mut buf, &["</iq>"]).await?;
    // Tsung and old servers want the legacy session IQ; servers that mark it optional
    // (or do not list it) do not need it.
    if features.contains("urn:ietf:params:xml:ns:xmpp-session") && !features.contains("<optional") {
        s.writer.write_all(b"<iq type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>").await?;
        read_until(&mut s.reader, &mut buf, &["id='sess'", "id=\"sess\""]).await?;
    }
    if acct.sm {
        // Before initial presence, so that h counts every stanza the session receives.
        s.writer.write_all(b"<enable xmlns='urn:xmpp:sm:3' resume='true'/>").await?;
        let reply = read_until(&mut s.reader, &mut buf, &["<enabled", "<failed"]).await?;
        if !reply.contains("<enabled") {
            return Err(io::Error::new(io::ErrorKind::Unsupported, format!("stream management refused: {reply}")));
        }
    }
    s.writer.write_all(acct.presence.as_bytes()).await?;
    Ok(s)
}

/// Reads until one of `markers` has arrived; returns what was read and clears the buffer.
pub async fn read_until(stream: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>, markers: &[&str]) -> io::Result<String> {
    buf.clear();
    loop {
        let text = String::from_utf8_lossy(buf);
        if markers.iter().any(|m| text.contains(m)) {
            return Ok(text.into_owned());
        }
        if text.contains("</stream:stream>") || buf.len() > LOGIN_REPLY_BYTES_MAX {
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, text.into_owned()));
        }
        // Straight into `buf`, which lives only while logging in: a chunk array here would sit
        // in every login task's future, and a run spawns all of its login tasks at once.
        buf.reserve(LOGIN_READ_BYTES);
        if stream.read_buf(buf).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the stream"));
        }
    }
}

/// The body every load message carries: sender, sequence and send time (`scan::fields`).
fn mark_body(sender: u32, seq: u32, sent_unix_nanos: u128) -> String {
    format!("<body>lg {sender} {seq} {sent_unix_nanos}</body>")
}

/// A chat message whose body carries the sender, sequence and send time; with the raw
/// protocol, framed for the relay.
pub fn message(protocol: Protocol, to: &str, sender: u32, seq: u32, sent_unix_nanos: u128) -> String {
    marked_message(protocol, to, "chat", sender, seq, sent_unix_nanos)
}

/// A groupchat message to `room` (XEP-0045 §7.4), marked like a chat message; with the raw
/// protocol, a line to the relay's group of that name.
pub fn groupchat(protocol: Protocol, room: &str, sender: u32, seq: u32, sent_unix_nanos: u128) -> String {
    marked_message(protocol, room, "groupchat", sender, seq, sent_unix_nanos)
}

fn marked_message(protocol: Protocol, to: &str, kind: &str, sender: u32, seq: u32, sent_unix_nanos: u128) -> String {
    let stanza = format!("<message to='{to}' type='{kind}'>{}</message>", mark_body(sender, seq, sent_unix_nanos));
    match protocol {
        Protocol::Xmpp => stanza,
        Protocol::Raw => raw::frame(to, &stanza),
    }
}

/// An available presence whose status carries the sender and send time.
pub fn marked_presence(sender: u32, sent_unix_nanos: u128) -> String {
    format!("<presence><status>lg {sender} {sent_unix_nanos}</status></presence>")
}
