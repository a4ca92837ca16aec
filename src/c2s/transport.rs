//! The byte stream under an XMPP stream: plain TCP, TLS over it after STARTTLS or on the
//! Direct TLS port (XEP-0368), RFC 7395 WebSocket framing (translated to the same bytes,
//! `super::websocket`), or XEP-0206 BOSH (the bodies of HTTP requests and responses,
//! `super::bosh`). One seam, several sides: an enum rather than a boxed trait object,
//! one branch per I/O call instead of a virtual call and an allocation per connection.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use super::tls_stream::TlsStream;

pub enum Transport {
    Plain(TcpStream),
    /// Boxed: rustls's connection state with the TCP stream is 1,304 B (heaptrack); the
    /// other sides stay small.
    Tls(Box<TlsStream>),
    WebSocket(Box<super::websocket::WsStream>),
    /// Not boxed: a handle on the BOSH session's state, which the HTTP requests share.
    Bosh(super::bosh::BoshStream),
    /// Only while the TCP stream is handed to the TLS handshake.
    Closed,
}

impl Transport {
    /// Encrypted: TLS here, or a WebSocket behind a proxy that terminates TLS.
    pub fn is_tls(&self) -> bool {
        match self {
            Transport::Tls(_) => true,
            Transport::WebSocket(ws) => ws.secure,
            Transport::Bosh(b) => b.secure,
            Transport::Plain(_) | Transport::Closed => false,
        }
    }

    /// XEP-0198 is offered where it works: not over BOSH, whose HTTP requests already
    /// carry their own acknowledgement (`rid`), and whose session ends with its last
    /// request rather than with a connection that resumption could replace.
    pub fn offers_sm(&self) -> bool {
        !matches!(self, Transport::Bosh(_))
    }

    /// STARTTLS exists on a plain TCP stream only (RFC 7395 §3.1: TLS is the WebSocket's).
    pub fn may_starttls(&self) -> bool {
        matches!(self, Transport::Plain(_))
    }

    /// Ready once a read would not block, so a connection waiting for its next bytes needs
    /// no buffer to wait with (`Conn::read_some`). WebSocket and BOSH frames are read into
    /// their own buffers first, so those sides are always ready and wait in the read itself.
    pub fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Transport::Plain(s) => s.poll_readable(cx),
            Transport::Tls(s) => s.poll_readable(cx),
            Transport::WebSocket(_) | Transport::Bosh(_) | Transport::Closed => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::WebSocket(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Transport::Bosh(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Closed => Poll::Ready(Ok(0)),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Transport::WebSocket(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Transport::Bosh(s) => Pin::new(s).poll_write(cx, buf),
            Transport::Closed => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::WebSocket(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Transport::Bosh(s) => Pin::new(s).poll_flush(cx),
            Transport::Closed => Poll::Ready(Ok(())),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_close(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_close(cx),
            Transport::WebSocket(s) => Pin::new(s.as_mut()).poll_close(cx),
            Transport::Bosh(s) => Pin::new(s).poll_close(cx),
            Transport::Closed => Poll::Ready(Ok(())),
        }
    }
}
