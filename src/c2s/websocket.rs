//! RFC 7395 XMPP over WebSocket: the HTTP/1.1 upgrade at `/xmpp-websocket` (httparse for the
//! request, tungstenite for the accept key and frame headers), then a transport whose bytes
//! are those of an ordinary XMPP stream ([`super::ws_framing`] translates), so negotiation
//! and the session run unchanged on it. The same listener answers XEP-0156 discovery
//! (`/.well-known/host-meta` and `host-meta.json`), naming this endpoint and BOSH's, XEP-0206
//! BOSH at `/http-bind` (`super::bosh`), and XEP-0363 uploads and downloads under
//! `/upload/` (`crate::modules::upload`).
//!
//! Bounds: the request head (`REQUEST_HEAD_BYTES_MAX`) and its time (the handshake
//! deadline), one message (`stanza_bytes_max` and some room for framing), frames queued
//! for a client that does not read (`OUTBOUND_BYTES_MAX`: the writer then waits, as on TCP).

use std::io::{self, Cursor};
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use super::transport::Transport;
use super::ws_framing::{self, Outbound};

/// The path clients connect to (XEP-0156 lists it).
pub const PATH: &str = "/xmpp-websocket";
/// Largest HTTP request head read before the upgrade, in bytes.
const REQUEST_HEAD_BYTES_MAX: usize = 8192;
/// Headers parsed at most in that head.
const REQUEST_HEADERS_MAX: usize = 32;
/// Frames written and not yet taken by the socket, in bytes; past it writes wait.
const OUTBOUND_BYTES_MAX: usize = 256 * 1024;
/// Room for the framing around the largest stanza in one message, in bytes.
const MESSAGE_SLACK_BYTES: usize = 1024;
/// How long a kept-alive HTTP connection may sit between a BOSH answer and the next
/// request's head; a browser reuses it well within this, and then closes it itself.
const KEEP_ALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// Reads the client's upgrade request and answers it: `Ok` with the stream once the
/// handshake is done, `Err` (after an HTTP error answer where one is due) otherwise.
/// `tcp` is the connection, plain or already under TLS (`[http] tls_listen`).
/// The request head must arrive by `deadline` (the handshake's); an upload's body then has
/// its own bound (`crate::modules::upload`), a large file on a slow link taking longer.
/// Also returns the client's address: `peer`'s, or for a peer in `[http] trusted_proxies`,
/// the one its `X-Forwarded-For` names ([`forwarded_client`]).
pub async fn upgrade(
    mut tcp: Transport,
    core: &std::rc::Rc<crate::router::CoreState>,
    deadline: std::time::Instant,
    peer: IpAddr,
) -> io::Result<(WsStream, IpAddr)> {
    let (message_bytes_max, secure) = (core.cfg.limits.stanza_bytes_max, core.cfg.http.behind_tls_proxy || tcp.is_tls());
    let trusted = &core.cfg.http.trusted_proxies;
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    // The next request head must be whole by `deadline`: the handshake's for the first,
    // `KEEP_ALIVE_IDLE` after the last answer for one on a kept connection (BOSH).
    let (mut deadline, mut kept) = (deadline, false);
    let mut read_more = true;
    let (key, client) = loop {
        if read_more {
            let n = match super::conn::until(deadline, async { tcp.read(&mut chunk).await.map_err(super::conn::ConnEnd::Io) }).await {
                Ok(n) => n,
                Err(_) => return Err(io::ErrorKind::TimedOut.into()),
            };
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            head.extend_from_slice(&chunk[..n]);
        }
        read_more = true;
        let mut headers = [httparse::EMPTY_HEADER; REQUEST_HEADERS_MAX];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&head) {
            Ok(httparse::Status::Complete(len)) => {
                let path = req.path.unwrap_or("");
                if core.cfg.upload_domain().is_some() && crate::modules::upload::handles(path) {
                    let header = |name: &str| header_of(&req, name);
                    let upload = crate::modules::upload::Request {
                        method: req.method.unwrap_or(""),
                        path,
                        content_type: header("content-type"),
                        content_length: header("content-length").and_then(|v| v.trim().parse().ok()),
                    };
                    let body_start = head[len..].to_vec();
                    crate::modules::upload::serve(core, &mut tcp, upload, body_start).await;
                    return Err(io::Error::other("XEP-0363 request answered"));
                }
                if super::bosh::handles(path) {
                    let client = SocketAddr::new(forwarded_client(peer, header_of(&req, "x-forwarded-for"), trusted), 0);
                    let handshake = std::time::Duration::from_secs(core.cfg.limits.handshake_timeout_secs);
                    let body_deadline = if kept { std::time::Instant::now() + handshake } else { deadline };
                    let next = super::bosh::serve(core, &mut tcp, &req, head[len..].to_vec(), body_deadline, client, secure).await;
                    let Some(next) = next else { return Err(io::Error::other("XEP-0206 request answered")) };
                    // Kept alive: what came after this request starts the next one.
                    read_more = next.is_empty();
                    (head, kept) = (next, true);
                    deadline = std::time::Instant::now() + KEEP_ALIVE_IDLE;
                    continue;
                }
                if len != head.len() {
                    // A client sends nothing before our 101.
                    return refuse(&mut tcp, "400 Bad Request", "data after the upgrade request").await;
                }
                if let Some(answer) = host_meta(&req, secure) {
                    let _ = tcp.write_all(answer.as_bytes()).await;
                    return Err(io::Error::other("XEP-0156 discovery answered"));
                }
                match check(&req) {
                    Ok(key) => break (key, forwarded_client(peer, header_of(&req, "x-forwarded-for"), trusted)),
                    Err((status, why)) => return refuse(&mut tcp, status, why).await,
                }
            }
            Ok(httparse::Status::Partial) if head.len() < REQUEST_HEAD_BYTES_MAX => continue,
            Ok(httparse::Status::Partial) => return refuse(&mut tcp, "431 Request Header Fields Too Large", "head too large").await,
            Err(_) => return refuse(&mut tcp, "400 Bad Request", "not an HTTP request").await,
        }
    };
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n",
        tungstenite::handshake::derive_accept_key(key.as_bytes())
    );
    tcp.write_all(answer.as_bytes()).await?;
    let see_other_uri = &core.cfg.http.see_other_uri;
    let ws = WsStream {
        tcp,
        secure,
        see_other_uri: (!see_other_uri.is_empty()).then(|| Box::from(see_other_uri.as_str())),
        message_bytes_max: message_bytes_max + MESSAGE_SLACK_BYTES,
        raw: Vec::new(),
        message: Vec::new(),
        readable: Vec::new(),
        outbound: Outbound::default(),
        frames: Vec::new(),
        closed: false,
    };
    Ok((ws, client))
}

/// The client behind `peer`: `peer` itself unless it is a trusted proxy; then the last
/// address in its `X-Forwarded-For` that is not a trusted proxy too (each proxy appends
/// the address it was reached from, so addresses left of the first untrusted one are the
/// client's to invent). A header that cannot be read leaves `peer`.
pub fn forwarded_client(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let mut client = peer;
    for hop in forwarded_for.unwrap_or("").rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) if trusted.contains(&ip) => client = ip,
            Ok(ip) => return ip,
            Err(_) => return client,
        }
    }
    client
}

/// XEP-0156: where web clients connect, for a GET of `/.well-known/host-meta` (XRD) or
/// `host-meta.json` (JRD), as the client reached us (its `Host`).
fn host_meta(req: &httparse::Request, secure: bool) -> Option<String> {
    let path = req.path?.split('?').next()?;
    if req.method != Some("GET") || !matches!(path, "/.well-known/host-meta" | "/.well-known/host-meta.json") {
        return None;
    }
    let host = req.headers.iter().find(|h| h.name.eq_ignore_ascii_case("host")).and_then(|h| std::str::from_utf8(h.value).ok())?;
    // A Host header is a host and port: anything else is not echoed into a document.
    if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']')) {
        return None;
    }
    let ws = format!("{}://{host}{PATH}", if secure { "wss" } else { "ws" });
    let bosh = format!("{}://{host}{}", if secure { "https" } else { "http" }, super::bosh::PATH);
    let links = [("urn:xmpp:alt-connections:websocket", ws), ("urn:xmpp:alt-connections:xbosh", bosh)];
    let (content_type, body) = if path.ends_with(".json") {
        let links: Vec<_> = links.iter().map(|(rel, href)| format!("{{\"rel\":\"{rel}\",\"href\":\"{href}\"}}")).collect();
        ("application/json", format!("{{\"links\":[{}]}}", links.join(",")))
    } else {
        let links: String = links.iter().map(|(rel, href)| format!("<Link rel='{rel}' href='{href}'/>")).collect();
        ("application/xrd+xml", format!("<?xml version='1.0' encoding='utf-8'?><XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>{links}</XRD>"))
    };
    Some(http_response("200 OK", content_type, "", &body))
}

/// An HTTP/1.1 response that closes the connection, readable by pages of any origin (CORS:
/// web clients are served from elsewhere; nothing here reads cookies). `headers` are
/// further header lines, each ending in CRLF.
pub fn http_response(status: &str, content_type: &str, headers: &str, body: &str) -> String {
    http_response_kept(status, content_type, headers, body, false)
}

/// The same, keeping the connection for the next request when `keep_alive`.
pub fn http_response_kept(status: &str, content_type: &str, headers: &str, body: &str, keep_alive: bool) -> String {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nAccess-Control-Allow-Origin: *\r\n{headers}Content-Length: {}\r\nConnection: {connection}\r\n\r\n{body}",
        body.len()
    )
}

/// A request header's value, if it is text.
pub(super) fn header_of<'a>(req: &httparse::Request<'_, 'a>, name: &str) -> Option<&'a str> {
    req.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).and_then(|h| std::str::from_utf8(h.value).ok())
}

/// The upgrade request's key, or the status and reason to refuse it with (RFC 6455 §4.2.1,
/// RFC 7395 §3.2: the `xmpp` subprotocol).
fn check(req: &httparse::Request) -> Result<String, (&'static str, &'static str)> {
    let header = |name: &str| header_of(req, name);
    let has_token = |name: &str, token: &str| header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)));
    if req.method != Some("GET") {
        return Err(("405 Method Not Allowed", "GET only"));
    }
    if req.path.map(|p| p.split('?').next().unwrap_or(p)) != Some(PATH) {
        return Err(("404 Not Found", "not the WebSocket endpoint"));
    }
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") || header("sec-websocket-version") != Some("13") {
        return Err(("400 Bad Request", "not a WebSocket 13 upgrade"));
    }
    if !has_token("sec-websocket-protocol", "xmpp") {
        return Err(("400 Bad Request", "the xmpp subprotocol is required (RFC 7395)"));
    }
    header("sec-websocket-key").map(str::to_owned).ok_or(("400 Bad Request", "no Sec-WebSocket-Key"))
}

async fn refuse(tcp: &mut Transport, status: &str, why: &str) -> io::Result<(WsStream, IpAddr)> {
    let answer = http_response(status, "text/plain", "", &format!("{why}\n"));
    let _ = tcp.write_all(answer.as_bytes()).await;
    Err(io::Error::new(io::ErrorKind::InvalidData, why.to_owned()))
}

pub struct WsStream {
    /// The connection under the frames: plain TCP, or TLS on `[http] tls_listen`.
    tcp: Transport,
    /// Over TLS, here or at a reverse proxy that terminates it (`[http] behind_tls_proxy`):
    /// the stream counts as encrypted, and STARTTLS is not offered.
    pub secure: bool,
    /// `[http] see_other_uri`: where the client is sent when the server stops.
    see_other_uri: Option<Box<str>>,
    message_bytes_max: usize,
    /// Bytes read from the socket, not yet whole frames.
    raw: Vec<u8>,
    /// The data of the message being received (its frames so far), unmasked.
    message: Vec<u8>,
    /// Received messages, translated, for the reader.
    readable: Vec<u8>,
    outbound: Outbound,
    /// Frames to write (answers to pings among them).
    frames: Vec<u8>,
    /// The client sent a close frame.
    closed: bool,
}

/// An emptied buffer is given back rather than kept at its largest: an idle WebSocket
/// session then holds none (issue 13: memory per idle session), at the price of an
/// allocation per busy read or write, as `tls_stream` pays.
fn release_if_empty(buf: &mut Vec<u8>) {
    if buf.is_empty() {
        *buf = Vec::new();
    }
}

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.to_owned())
}

impl WsStream {
    /// Takes whole frames out of `raw`; true once something became readable or closed.
    fn take_frames(&mut self) -> io::Result<bool> {
        loop {
            let mut cursor = Cursor::new(&self.raw[..]);
            let Some((header, len)) = FrameHeader::parse(&mut cursor).map_err(|e| invalid(&e.to_string()))? else { return Ok(false) };
            let start = cursor.position() as usize;
            if len as usize > self.message_bytes_max || self.message.len() + len as usize > self.message_bytes_max {
                return Err(invalid("a WebSocket message larger than the stanza limit"));
            }
            let end = start + len as usize;
            if self.raw.len() < end {
                return Ok(false);
            }
            let mut payload = self.raw[start..end].to_vec();
            self.raw.drain(..end);
            release_if_empty(&mut self.raw);
            let Some(mask) = header.mask else { return Err(invalid("client frames are masked (RFC 6455 §5.1)")) };
            payload.iter_mut().enumerate().for_each(|(i, b)| *b ^= mask[i % 4]);
            match header.opcode {
                OpCode::Data(Data::Text) | OpCode::Data(Data::Continue) => {
                    self.message.extend_from_slice(&payload);
                    if header.is_final {
                        let text = std::str::from_utf8(&self.message).map_err(|_| invalid("a text message that is not UTF-8"))?;
                        let translated = ws_framing::inbound(text).map_err(invalid)?;
                        self.readable.extend_from_slice(translated.as_bytes());
                        self.message = Vec::new();
                        return Ok(true);
                    }
                }
                OpCode::Control(Control::Ping) => self.frame(OpCode::Control(Control::Pong), &payload),
                OpCode::Control(Control::Pong) => {}
                OpCode::Control(Control::Close) => {
                    self.closed = true;
                    return Ok(true);
                }
                _ => return Err(invalid("binary and reserved frames have no place in RFC 7395")),
            }
        }
    }

    /// RFC 7395 §3.6.1: at shutdown, a `<close/>` naming `[http] see_other_uri` (which
    /// stands in for RFC 6120's `<see-other-host/>` on this transport) instead of the
    /// stream error; false when none is configured. The caller closes the connection.
    pub fn send_see_other(&mut self) -> bool {
        let Some(uri) = self.see_other_uri.take() else { return false };
        let close = format!("<close xmlns='{}' see-other-uri='{}'/>", ws_framing::FRAMING, super::stream_error::escape(&uri));
        self.frame(OpCode::Data(Data::Text), close.as_bytes());
        true
    }

    fn frame(&mut self, opcode: OpCode, payload: &[u8]) {
        let header = FrameHeader { opcode, ..FrameHeader::default() };
        header.format(payload.len() as u64, &mut self.frames).expect("writing to a Vec");
        self.frames.extend_from_slice(payload);
    }

    /// Writes queued frames; `Ready` once all went.
    fn poll_frames(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.frames.is_empty() {
            match Pin::new(&mut self.tcp).poll_write(cx, &self.frames) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.frames.drain(..n);
                    release_if_empty(&mut self.frames);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for WsStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        loop {
            if !this.readable.is_empty() {
                let n = buf.len().min(this.readable.len());
                buf[..n].copy_from_slice(&this.readable[..n]);
                this.readable.drain(..n);
                release_if_empty(&mut this.readable);
                return Poll::Ready(Ok(n));
            }
            if this.closed {
                return Poll::Ready(Ok(0));
            }
            if this.take_frames()? {
                continue;
            }
            // A pong to send rides on the next read or write; a failure shows on the write.
            let _ = this.poll_frames(cx);
            let mut chunk = [0u8; 4096];
            match Pin::new(&mut this.tcp).poll_read(cx, &mut chunk) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(0)),
                Poll::Ready(Ok(n)) => this.raw.extend_from_slice(&chunk[..n]),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl AsyncWrite for WsStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.frames.len() > OUTBOUND_BYTES_MAX {
            match this.poll_frames(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        for message in this.outbound.push(buf) {
            this.frame(OpCode::Data(Data::Text), message.as_bytes());
        }
        match this.poll_frames(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(buf.len())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_frames(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.tcp).poll_flush(cx),
            other => other,
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_frames(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut this.tcp).poll_close(cx),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::forwarded_client;

    #[test]
    fn x_forwarded_for_is_believed_from_trusted_proxies_only() {
        let ip = |s: &str| s.parse().unwrap();
        let trusted = [ip("127.0.0.1"), ip("10.0.0.2")];
        // Not a proxy: its header is the client's to invent.
        assert_eq!(forwarded_client(ip("192.0.2.7"), Some("203.0.113.9"), &trusted), ip("192.0.2.7"));
        // One proxy: the address it appended.
        assert_eq!(forwarded_client(ip("127.0.0.1"), Some("203.0.113.9"), &trusted), ip("203.0.113.9"));
        // Two proxies; what the client put left of them is not believed.
        assert_eq!(forwarded_client(ip("127.0.0.1"), Some("1.1.1.1, 203.0.113.9, 10.0.0.2"), &trusted), ip("203.0.113.9"));
        assert_eq!(forwarded_client(ip("127.0.0.1"), Some("2001:db8::1"), &trusted), ip("2001:db8::1"));
        // No header, or garbage: the proxy itself.
        assert_eq!(forwarded_client(ip("127.0.0.1"), None, &trusted), ip("127.0.0.1"));
        assert_eq!(forwarded_client(ip("127.0.0.1"), Some("unknown"), &trusted), ip("127.0.0.1"));
        assert_eq!(forwarded_client(ip("127.0.0.1"), Some("nonsense, 10.0.0.2"), &trusted), ip("10.0.0.2"));
    }
}
