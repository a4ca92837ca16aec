//! The lean XMPP client: plain TCP, SASL PLAIN, bind, initial presence — just enough to be
//! a real session on any server, with one small buffer per connection.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Bytes read per call while logging in.
const LOGIN_READ_BYTES: usize = 2048;
/// Longest server answer accepted during login, in bytes.
const LOGIN_REPLY_BYTES_MAX: usize = 64 * 1024;

pub struct Account<'a> {
    pub server: SocketAddr,
    pub domain: &'a str,
    pub user: String,
    pub password: &'a str,
    pub resource: String,
    /// The initial presence sent once bound (`<presence/>`, or one carrying a mark).
    pub presence: String,
}

pub struct Session {
    pub reader: OwnedReadHalf,
    pub writer: OwnedWriteHalf,
}

pub async fn login(acct: &Account<'_>, timeout: Duration) -> io::Result<Session> {
    tokio::time::timeout(timeout, login_inner(acct))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "login timed out"))?
}

async fn login_inner(acct: &Account<'_>) -> io::Result<Session> {
    let mut stream = TcpStream::connect(acct.server).await?;
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(LOGIN_READ_BYTES);
    let header = format!(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='{}' version='1.0'>",
        acct.domain
    );
    stream.write_all(header.as_bytes()).await?;
    read_until(&mut stream, &mut buf, &["</stream:features>", "</features>"]).await?;
    let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{}\0{}", acct.user, acct.password));
    stream
        .write_all(format!("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>").as_bytes())
        .await?;
    let reply = read_until(&mut stream, &mut buf, &["<success", "</failure>"]).await?;
    if !reply.contains("<success") {
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, format!("{}: authentication failed", acct.user)));
    }
    stream.write_all(header.as_bytes()).await?;
    let features = read_until(&mut stream, &mut buf, &["</stream:features>", "</features>"]).await?;
    let bind = format!(
        "<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{}</resource></bind></iq>",
        acct.resource
    );
    stream.write_all(bind.as_bytes()).await?;
    read_until(&mut stream, &mut buf, &["</iq>"]).await?;
    // Tsung and old servers want the legacy session IQ; servers that mark it optional
    // (or do not list it) do not need it.
    if features.contains("urn:ietf:params:xml:ns:xmpp-session") && !features.contains("<optional") {
        stream.write_all(b"<iq type='set' id='sess'><session xmlns='urn:ietf:params:xml:ns:xmpp-session'/></iq>").await?;
        read_until(&mut stream, &mut buf, &["id='sess'", "id=\"sess\""]).await?;
    }
    stream.write_all(acct.presence.as_bytes()).await?;
    let (reader, writer) = stream.into_split();
    Ok(Session { reader, writer })
}

/// Reads until one of `markers` has arrived; returns what was read and clears the buffer.
async fn read_until(stream: &mut TcpStream, buf: &mut Vec<u8>, markers: &[&str]) -> io::Result<String> {
    buf.clear();
    let mut chunk = [0u8; LOGIN_READ_BYTES];
    loop {
        let text = String::from_utf8_lossy(buf);
        if markers.iter().any(|m| text.contains(m)) {
            return Ok(text.into_owned());
        }
        if text.contains("</stream:stream>") || buf.len() > LOGIN_REPLY_BYTES_MAX {
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, text.into_owned()));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "server closed the stream"));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A chat message whose body carries the sender, sequence and send time.
pub fn message(to: &str, sender: u32, seq: u32, sent_unix_nanos: u128) -> String {
    format!("<message to='{to}' type='chat'><body>lg {sender} {seq} {sent_unix_nanos}</body></message>")
}

/// An available presence whose status carries the sender and send time.
pub fn marked_presence(sender: u32, sent_unix_nanos: u128) -> String {
    format!("<presence><status>lg {sender} {sent_unix_nanos}</status></presence>")
}
